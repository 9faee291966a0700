//! Logging in and out of the console, and the browser's half of npm's web login.
//!
//! The login form is posted before any session exists: its CSRF token is a random value in a
//! cookie of its own that the form repeats (double submit). Failed logins count against the
//! same limits as npm's logins (`Auth::locked_out`, `Auth::failed`).

use askama::Template;

use super::forms::same;
use super::pages::{Layout, Message};
use super::{cookie, html, redirect, Visit, SESSION_COOKIE};
use crate::api::Answer;
use crate::auth::AuthError;
use crate::core::sessions::{random_hex, SESSION_LIFETIME};
use crate::core::Error;

/// The login form's CSRF cookie.
const LOGIN_COOKIE: &str = "sluice_login";

/// The login page.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    npm: bool,
    session: String,
    next: String,
    csrf: String,
    error: Option<String>,
    /// Who is logged in already (they only confirm an npm login).
    current: Option<String>,
}

/// `/-/ui/login` (GET shows the form, POST logs in) and `/-/ui/logout` (POST).
pub async fn handle(visit: &Visit<'_>) -> Result<Answer, Error> {
    match (visit.path, visit.post) {
        ("login", false) => form(visit, None, 200).await,
        ("login", true) => log_in(visit).await,
        ("logout", true) => log_out(visit).await,
        _ => Err(Error::NotFound("log out with the page's button".into())),
    }
}

/// Where to go after logging in: a console page, never another site.
fn next_page(visit: &Visit<'_>) -> String {
    let next = visit
        .form
        .get("next")
        .or_else(|| visit.query.get("next"))
        .unwrap_or("");
    // No control character either: a line break in a `Location` header fails the answer.
    if next.starts_with("/-/ui/")
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.contains(char::is_control)
    {
        next.to_string()
    } else {
        "/-/ui/".to_string()
    }
}

/// The npm web login a page or form is for.
fn npm_session<'v>(visit: &'v Visit<'_>) -> &'v str {
    visit
        .form
        .get("session")
        .or_else(|| visit.query.get("session"))
        .unwrap_or("")
}

/// The login form, with a fresh CSRF cookie when there is no session.
async fn form(visit: &Visit<'_>, error: Option<String>, status: u16) -> Result<Answer, Error> {
    let session = npm_session(visit).to_string();
    if !session.is_empty() && !visit.call.app.sessions.web_login_waits(&session).await? {
        return Err(Error::NotFound(
            "this npm login has expired or was used already: run npm login again".into(),
        ));
    }
    let (csrf, set_cookie) = match &visit.session {
        Some((_, s)) => (s.csrf.clone(), None),
        None => {
            let token = random_hex();
            let set = cookie(LOGIN_COOKIE, &token, "/-/ui/login", 3600, visit.secure());
            (token, Some(set))
        }
    };
    let page = LoginPage {
        layout: visit.layout("Log in"),
        npm: !session.is_empty(),
        current: visit
            .user()
            .filter(|_| !session.is_empty())
            .map(str::to_string),
        session,
        next: next_page(visit),
        csrf,
        error,
    };
    let mut answer = html(status, &page)?;
    if let Some(set) = set_cookie {
        answer.headers.push(("set-cookie".into(), set));
    }
    Ok(answer)
}

/// The form's CSRF token matches its session's, or the login cookie's.
fn csrf_ok(visit: &Visit<'_>) -> bool {
    let sent = visit.form.get("csrf").unwrap_or("");
    let expected = match &visit.session {
        Some((_, s)) => Some(s.csrf.as_str()),
        None => visit.cookies.get(LOGIN_COOKIE),
    };
    !sent.is_empty() && expected.is_some_and(|e| same(sent, e))
}

async fn log_in(visit: &Visit<'_>) -> Result<Answer, Error> {
    if !csrf_ok(visit) {
        return Err(Error::Forbidden(
            "this form's CSRF token is missing or stale: reload the page and try again".into(),
        ));
    }
    let npm = npm_session(visit).to_string();
    // A user logged in already only confirms an npm login.
    if let (Some(user), "1") = (visit.user(), visit.form.text("confirm")) {
        if npm.is_empty() {
            return Ok(redirect(&next_page(visit)));
        }
        visit
            .call
            .app
            .sessions
            .approve_web_login(&npm, user)
            .await?;
        return npm_done(visit, user, None);
    }
    let name = visit.form.text("name").to_string();
    let password = visit.form.get("password").unwrap_or("");
    let auth = &visit.call.app.auth;
    let address = visit.call.address.map(|a| a.to_string());
    if auth.locked_out(&name, address.as_deref()) {
        return form(visit, Some(AuthError::Locked.to_string()), 429).await;
    }
    if name.is_empty() || password.is_empty() || !auth.check_password(&name, password) {
        auth.failed(&name, address.as_deref(), "console login")
            .await;
        return form(visit, Some("wrong user name or password".into()), 401).await;
    }
    let app = visit.call.app;
    if crate::api::admin::login_needs_second_factor(app, &name).await? {
        let code = visit.form.text("otp").trim().to_string();
        if code.is_empty() {
            return form(
                visit,
                Some("this account has two-factor authentication: give its one-time code".into()),
                401,
            )
            .await;
        }
        if !crate::api::admin::verify_second_factor(app, &name, &code, visit.call.address).await? {
            return form(visit, Some("wrong one-time code".into()), 401).await;
        }
    }
    let credential = visit.call.app.auth.credential(&name).unwrap_or_default();
    let (id, _) = visit.call.app.sessions.open(&name, &credential).await?;
    let set = cookie(
        SESSION_COOKIE,
        &id,
        "/-/ui",
        SESSION_LIFETIME.as_secs(),
        visit.secure(),
    );
    if !npm.is_empty() {
        visit
            .call
            .app
            .sessions
            .approve_web_login(&npm, &name)
            .await?;
        return npm_done(visit, &name, Some(set));
    }
    let mut answer = redirect(&next_page(visit));
    answer.headers.push(("set-cookie".into(), set));
    Ok(answer)
}

/// The page after the browser's half of an npm login.
fn npm_done(visit: &Visit<'_>, user: &str, set: Option<String>) -> Result<Answer, Error> {
    let mut layout = visit.layout("npm is logged in");
    layout.user = Some(user.to_string());
    let page = Message {
        layout,
        heading: "npm is logged in".into(),
        message: format!(
            "npm receives a token for {user} in a moment: you can close this page and go back \
             to your terminal."
        ),
        alert: false,
    };
    let mut answer = html(200, &page)?;
    if let Some(set) = set {
        answer.headers.push(("set-cookie".into(), set));
    }
    Ok(answer)
}

async fn log_out(visit: &Visit<'_>) -> Result<Answer, Error> {
    if let Some((id, _)) = &visit.session {
        if !csrf_ok(visit) {
            return Err(Error::Forbidden(
                "this form's CSRF token is missing or stale: reload the page and try again".into(),
            ));
        }
        visit.call.app.sessions.close(id).await?;
    }
    let mut answer = redirect("/-/ui/");
    answer.headers.push((
        "set-cookie".into(),
        cookie(SESSION_COOKIE, "", "/-/ui", 0, visit.secure()),
    ));
    Ok(answer)
}
