//! The web console at `/-/ui/`: pages rendered on the server, on the registry's own listener.
//!
//! As on docs.rs, a request goes handler → typed page → template: each handler gathers what
//! its page shows from the core (and `observe`) into a page struct ([`pages`]), and askama
//! renders that struct with its template (`src/web/templates/`, checked and compiled into the
//! binary; every value escaped unless a template says `|safe`, which only the README's
//! sanitized HTML does). The styles and the one small script are compiled in too
//! (`include_str!`); no page needs the script, and the `Content-Security-Policy` forbids any
//! inline one.
//!
//! A visit's session is a cookie naming a session kept in the store ([`crate::core::sessions`]),
//! so every node of a fleet accepts it; every form carries the session's CSRF token (the login
//! form a cookie's), and a post without it is refused.

mod account;
mod admin;
mod forms;
mod login;
mod package;
mod pages;
mod readme;

use askama::Template;
use sluice_plugin_api::{ConsoleRequest, NpmRequest};

use crate::api::answer::{status, ContentType};
use crate::api::{Answer, Call};
use crate::core::sessions::Session;
use crate::core::Error;
pub use forms::Form;
use pages::{Layout, Message};

/// The console's stylesheet.
const STYLE: &str = include_str!("assets/style.css");

/// The console's script: live progress on job pages.
const SCRIPT: &str = include_str!("assets/console.js");

/// The policy every console answer carries: scripts and styles from this origin only (no
/// inline script, no `eval`), images from here or any HTTPS origin (READMEs' badges), forms
/// posted here only, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' https: data:; connect-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The cookie naming a console session.
const SESSION_COOKIE: &str = "sluice_session";

/// A console request being answered: who is visiting, and what they asked.
pub struct Visit<'a> {
    /// The npm call it arrived as.
    pub call: &'a Call<'a>,
    /// Its path under `/-/ui/` (no trailing `/`).
    pub path: &'a str,
    /// Its query.
    pub query: Form,
    /// Its form, when it is a post.
    pub form: Form,
    /// Whether it is a post.
    pub post: bool,
    /// The session's id (the cookie's value) and the session, when logged in.
    pub session: Option<(String, Session)>,
    /// The request's cookies.
    pub cookies: Form,
}

impl Visit<'_> {
    /// The user logged in, if any.
    pub fn user(&self) -> Option<&str> {
        self.session.as_ref().map(|(_, s)| s.user.as_str())
    }

    /// Whether the user logged in administers the registry.
    pub fn admin(&self) -> bool {
        self.user()
            .is_some_and(|u| admin::is_admin(self.call.app, u))
    }

    /// The layout every page shares.
    pub fn layout(&self, title: impl Into<String>) -> Layout {
        Layout {
            title: title.into(),
            user: self.user().map(str::to_string),
            admin: self.admin(),
            csrf: self
                .session
                .as_ref()
                .map(|(_, s)| s.csrf.clone())
                .unwrap_or_default(),
            query: String::new(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Whether cookies must be `Secure` (the registry is served over TLS).
    pub fn secure(&self) -> bool {
        let server = &self.call.app.config.server;
        server.tls_cert.is_some() || server.public_url.starts_with("https:")
    }
}

/// Answer a console request.
pub async fn handle(call: &Call<'_>) -> Result<Answer, Error> {
    let NpmRequest::Console(request) = call.request else {
        return Err(Error::Internal("not a console request".into()));
    };
    let ConsoleRequest { post, path, query } = request;
    let Some(path) = path.as_deref() else {
        // A browser asking for `/`.
        return Ok(secured(redirect("/-/ui/")));
    };
    let cookies = Form::cookies(call.cookie.as_deref().unwrap_or(""));
    let session = match cookies.get(SESSION_COOKIE) {
        Some(id) => call
            .app
            .sessions
            .get(id)
            .await?
            // Good only while the user exists with the password it was opened with.
            .filter(|s| call.app.auth.credential(&s.user).as_deref() == Some(&s.credential))
            .map(|s| (id.to_string(), s)),
        None => None,
    };
    let visit = Visit {
        call,
        path: path.trim_end_matches('/'),
        query: Form::parse(query),
        form: if *post {
            Form::parse(&String::from_utf8_lossy(&call.body))
        } else {
            Form::default()
        },
        post: *post,
        session,
        cookies,
    };
    let answer = match route(&visit).await {
        Ok(answer) => answer,
        Err(error) => error_page(&visit, &error),
    };
    Ok(secured(answer))
}

/// The page for `visit`, by its path.
async fn route(visit: &Visit<'_>) -> Result<Answer, Error> {
    let path = visit.path;
    if let Some(asset) = path.strip_prefix("assets/") {
        return asset_answer(asset);
    }
    if path == "login" || path == "logout" {
        return login::handle(visit).await;
    }
    if visit.session.is_none()
        && visit.call.app.config.auth.read == crate::config::Read::Authenticated
    {
        // Only the login page (and its styles) is open to anyone on an authenticated registry.
        return Ok(to_login(path));
    }
    if visit.post {
        check_csrf(visit)?;
    }
    match path {
        "" if !visit.post => pages::home(visit).await,
        "search" if !visit.post => pages::search(visit).await,
        _ if path.starts_with("admin") => admin::handle(visit).await,
        _ if path == "account" || path.starts_with("account/") => account::handle(visit).await,
        _ => match path.strip_prefix("package/") {
            Some(name) if !visit.post => package::page(visit, name).await,
            _ => Err(Error::NotFound(format!("no console page at /-/ui/{path}"))),
        },
    }
}

/// Refuse a post whose CSRF token is not the session's.
fn check_csrf(visit: &Visit<'_>) -> Result<(), Error> {
    let sent = visit.form.get("csrf").unwrap_or("");
    match &visit.session {
        Some((_, session)) if !sent.is_empty() && forms::same(sent, &session.csrf) => Ok(()),
        Some(_) => Err(Error::Forbidden(
            "this form's CSRF token is missing or stale: reload the page and try again".into(),
        )),
        None => Err(Error::Unauthenticated("log in first".into())),
    }
}

/// The redirect to the login page, coming back to `path` after.
fn to_login(path: &str) -> Answer {
    let next = forms::encode(&format!("/-/ui/{path}"));
    redirect(&format!("/-/ui/login?next={next}"))
}

/// A `303 See Other` to `location` (a path on this registry).
pub fn redirect(location: &str) -> Answer {
    let mut answer = Answer::text("text/plain; charset=utf-8", format!("See {location}\n"));
    answer.status = 303;
    answer
        .headers
        .push(("location".into(), location.to_string()));
    answer
}

/// A rendered page with `status`.
pub fn html(status: u16, page: &impl Template) -> Result<Answer, Error> {
    let body = page
        .render()
        .map_err(|e| Error::Internal(format!("the page cannot be rendered: {e}")))?;
    let mut answer = Answer::text("text/html; charset=utf-8", body);
    answer.status = status;
    Ok(answer)
}

/// The page telling a failure, with the status its fault maps to.
fn error_page(visit: &Visit<'_>, error: &Error) -> Answer {
    let code = status(error.fault());
    if code >= 500 {
        tracing::error!(%error, path = visit.path, "console page failed");
    }
    let heading = match code {
        400 => "Bad request",
        401 => "Log in first",
        403 => "Not allowed",
        404 => "Not found",
        409 => "Conflict",
        429 => "Too many attempts",
        _ => "Something went wrong",
    };
    let page = Message {
        layout: visit.layout(heading),
        heading: heading.to_string(),
        message: error.to_string(),
        alert: true,
    };
    html(code, &page).unwrap_or_else(|_| Answer::error(code, error.to_string()))
}

/// A compiled-in asset.
fn asset_answer(name: &str) -> Result<Answer, Error> {
    let (content_type, body) = match name {
        "style.css" => ("text/css; charset=utf-8", STYLE),
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return Err(Error::NotFound(format!("no asset {name}"))),
    };
    let mut answer = Answer::text(content_type, body.to_string());
    answer.cache_control = Some("public, max-age=300");
    Ok(answer)
}

/// `answer` with the headers every console answer carries.
fn secured(mut answer: Answer) -> Answer {
    let headers = [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        // A login URL carries a web login's id: no page leaks it to a README's images.
        ("referrer-policy", "no-referrer"),
    ];
    for (name, value) in headers {
        answer.headers.push((name.into(), value.into()));
    }
    if matches!(answer.content_type, ContentType::Static(t) if t.starts_with("text/html")) {
        answer.cache_control = Some("no-store");
    }
    answer
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, `Secure` under TLS.
pub fn cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}
