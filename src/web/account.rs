//! The user's own page, `/-/ui/account`: two-factor enrollment (a QR code drawn on the server
//! as SVG, confirmed with a code before it is in force, recovery codes shown once), turning it
//! off with a current code, and a new password given the current one. The rules and the audit
//! are [`crate::api::profile`]'s; this only shows and reads forms.

use askama::Template;

use super::pages::Layout;
use super::{cookie, html, redirect, Visit, SESSION_COOKIE};
use crate::api::admin::Actor;
use crate::api::{profile, Answer};
use crate::auth::{Begun, Identity};
use crate::core::sessions::SESSION_LIFETIME;
use crate::core::Error;

/// An enrollment waiting for its code, as the page shows it.
struct Setup {
    /// The QR code of `uri`, an inline SVG drawn here.
    qr: String,
    uri: String,
    secret: String,
}

/// The account page.
#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    user: String,
    enrolled: bool,
    pending: Option<Setup>,
    /// The recovery codes of an enrollment just confirmed (shown this once).
    recovery: Vec<String>,
    notice: Option<String>,
    error: Option<String>,
}

/// `/-/ui/account` and its forms (`account/2fa/begin|confirm|disable`, `account/password`).
pub async fn handle(visit: &Visit<'_>) -> Result<Answer, Error> {
    let Some(user) = visit.user() else {
        return Ok(super::to_login(visit.path));
    };
    let who = Identity {
        user: user.to_string(),
        readonly: false,
        token_hash: None,
        admin: visit.admin(),
    };
    let actor = Actor {
        app: visit.call.app,
        who: &who,
        address: visit.call.address,
    };
    let code = visit.form.text("otp");
    match (visit.path, visit.post) {
        ("account", false) => {
            let notice = match visit.query.get("done") {
                Some("password") => Some("Your password is changed.".to_string()),
                Some("2fa-off") => Some("Two-factor authentication is off.".to_string()),
                _ => None,
            };
            page(visit, actor, 200, notice, None).await
        }
        ("account/2fa/begin", true) => {
            let current = visit.form.get("current").unwrap_or("");
            if profile::begin_two_factor(actor, current).await?.is_none() {
                let wrong = "the password is wrong: nothing changed";
                return page(visit, actor, 400, None, Some(wrong.into())).await;
            }
            Ok(redirect("/-/ui/account"))
        }
        ("account/2fa/confirm", true) => match profile::confirm_two_factor(actor, code).await? {
            Some(enrolled) => {
                let mut shown = view(visit, actor, None, None).await?;
                shown.recovery = enrolled.recovery_codes;
                html(200, &shown)
            }
            None => {
                let wrong = "that code is not the one your app shows now: nothing changed, \
                             try the current one";
                page(visit, actor, 400, None, Some(wrong.into())).await
            }
        },
        ("account/2fa/disable", true) => {
            if profile::disable_two_factor(actor, code).await? {
                return Ok(redirect("/-/ui/account?done=2fa-off"));
            }
            let wrong = "wrong or used one-time code: two-factor authentication is still on";
            page(visit, actor, 400, None, Some(wrong.into())).await
        }
        ("account/password", true) => password(visit, actor).await,
        _ => Err(Error::NotFound(format!(
            "no console page at /-/ui/{}",
            visit.path
        ))),
    }
}

/// The account page as it stands, with `notice` or `error`.
async fn page(
    visit: &Visit<'_>,
    actor: Actor<'_>,
    status: u16,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Answer, Error> {
    html(status, &view(visit, actor, notice, error).await?)
}

async fn view(
    visit: &Visit<'_>,
    actor: Actor<'_>,
    notice: Option<String>,
    error: Option<String>,
) -> Result<AccountPage, Error> {
    let (enrolled, pending) = profile::two_factor(actor).await?;
    let pending = match pending {
        Some(Begun { uri, secret }) => Some(Setup {
            qr: qr_svg(&uri)?,
            uri,
            secret,
        }),
        None => None,
    };
    Ok(AccountPage {
        layout: visit.layout("Your account"),
        user: actor.who.user.clone(),
        enrolled,
        pending,
        recovery: Vec::new(),
        notice,
        error,
    })
}

/// A new password: the current one must be right, the new one given twice. The session goes
/// on under the new password (sessions opened with the old one end).
async fn password(visit: &Visit<'_>, actor: Actor<'_>) -> Result<Answer, Error> {
    let current = visit.form.get("current").unwrap_or("");
    let new = visit.form.get("new").unwrap_or("");
    if new.is_empty() || new != visit.form.get("again").unwrap_or("") {
        let differ = "the new password and its repetition differ: nothing changed";
        return page(visit, actor, 400, None, Some(differ.into())).await;
    }
    if !profile::change_password(actor, current, new).await? {
        let wrong = "the current password is wrong: nothing changed";
        return page(visit, actor, 400, None, Some(wrong.into())).await;
    }
    let app = visit.call.app;
    let user = &actor.who.user;
    let credential = app.auth.credential(user).unwrap_or_default();
    let (id, _) = app.sessions.open(user, &credential).await?;
    if let Some((old, _)) = &visit.session {
        app.sessions.close(old).await?;
    }
    let mut answer = redirect("/-/ui/account?done=password");
    let set = cookie(
        SESSION_COOKIE,
        &id,
        "/-/ui",
        SESSION_LIFETIME.as_secs(),
        visit.secure(),
    );
    answer.headers.push(("set-cookie".into(), set));
    Ok(answer)
}

/// `uri` as a QR code, an SVG to put inline: drawn from the code's modules by the `qrcode`
/// crate (no text of the URI is in the markup, so nothing in it needs escaping), labelled for
/// screen readers.
fn qr_svg(uri: &str) -> Result<String, Error> {
    let code = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| Error::Internal(format!("no QR code for the enrollment: {e}")))?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    // The XML declaration means nothing inside HTML.
    let svg = match svg.find("<svg") {
        Some(start) => &svg[start..],
        None => svg.as_str(),
    };
    Ok(svg.replacen(
        "<svg ",
        "<svg role=\"img\" aria-label=\"QR code of the link below\" ",
        1,
    ))
}
