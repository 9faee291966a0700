//! npm's protocol, one file per surface: [`reads`] (packuments, versions, dist-tags, tarballs,
//! search, the relayed GETs, status and metrics), [`audit`] (both audit endpoints),
//! [`accounts`] (login, whoami, logout, tokens, user documents), [`publish`] (publish,
//! unpublish, dist-tags, attestations) and [`stage`] (staged publishes); and [`admin`], what the
//! console and the command line administer (users, roles, tokens, second factors, live
//! settings, the audit log), each action recorded in the audit log, and [`profile`], what a
//! user changes of their own account (password, second factor). Each handler takes a
//! [`Call`] — a request the front
//! already read, routed, identified and admitted — asks the core, and gives an [`Answer`] or
//! the core's [`Error`]; the front (`crate::proxy`) turns either into HTTP.

pub mod accounts;
pub mod admin;
pub mod answer;
pub mod audit;
pub mod profile;
pub mod publish;
pub mod reads;
pub mod stage;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use sluice_plugin_api::NpmRequest;

pub use answer::{Answer, Body};

use crate::app::App;
use crate::auth::Identity;
use crate::core::Error;

/// A request ready to be handled: routed, its caller identified, its body read.
pub struct Call<'a> {
    /// The registry.
    pub app: &'a Arc<App>,
    /// What is asked.
    pub request: &'a NpmRequest,
    /// Who asks, when known.
    pub who: Option<&'a Identity>,
    /// The client's address, when known.
    pub address: Option<IpAddr>,
    /// The request body ([`body_limit`] says which requests have one, and how large).
    pub body: Bytes,
    /// The request's `Content-Type`.
    pub content_type: Option<String>,
    /// The request's `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// Whether the client takes gzip.
    pub gzip: bool,
    /// Whether the connection can send a tarball from its file (`sendfile(2)`).
    pub files: bool,
    /// The one-time code npm sends for a user with two-factor authentication (`npm-otp`).
    pub otp: Option<String>,
    /// The request's `Cookie` header (the console's session).
    pub cookie: Option<String>,
}

/// Who a request needs, by what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, whatever the registry's `auth.read` (ping, logging in, a user document): the
    /// credentials, when they are good, say who asks, and the handler decides.
    Anyone,
    /// A reader: anyone on an anonymous registry, a user on an authenticated one.
    Read,
    /// A user, always (writes, tokens, whoami).
    User,
}

/// What `request` needs of its caller.
pub fn access(request: &NpmRequest) -> Access {
    match request {
        NpmRequest::Ping
        | NpmRequest::Login { .. }
        | NpmRequest::WebLogin
        | NpmRequest::WebLoginDone { .. }
        | NpmRequest::User { .. } => Access::Anyone,
        // The console asks for its own session (a cookie), not npm's credentials.
        NpmRequest::Console(_) => Access::Anyone,
        NpmRequest::Publish { .. }
        | NpmRequest::DistTag { .. }
        | NpmRequest::Unpublish { .. }
        | NpmRequest::UnpublishTarball { .. }
        | NpmRequest::Whoami
        | NpmRequest::Logout { .. }
        | NpmRequest::Tokens
        | NpmRequest::CreateToken
        | NpmRequest::RevokeToken { .. } => Access::User,
        request if is_stage(request) => Access::User,
        _ => Access::Read,
    }
}

/// The largest body `request` is read with, and what to call it in a 413; `None` when it
/// takes no body (one sent is drained or the connection closed).
pub fn body_limit(app: &App, request: &NpmRequest) -> Option<(usize, &'static str)> {
    const SMALL: usize = 64 << 10;
    let publish = app.config.publish.max_size as usize;
    match request {
        NpmRequest::Login { .. } => Some((SMALL, "login")),
        NpmRequest::WebLogin => Some((SMALL, "login")),
        NpmRequest::Console(console) if console.post => Some((SMALL, "form")),
        NpmRequest::CreateToken => Some((SMALL, "token")),
        NpmRequest::DistTag { remove: false, .. } => Some((SMALL, "dist-tag")),
        NpmRequest::Publish { .. } => Some((publish, "publish")),
        NpmRequest::StagePublish { .. } => Some((publish, "stage")),
        NpmRequest::Unpublish { all: false, .. } => Some((publish, "unpublish")),
        NpmRequest::Audit { .. } => Some((app.config.server.max_audit_body as usize, "audit")),
        _ => None,
    }
}

/// Answer `call` (its caller allowed by [`access`]).
pub async fn dispatch(call: &Call<'_>) -> Result<Answer, Error> {
    match call.request {
        NpmRequest::Audit { path } => audit::relay(call, path).await,
        // The front hands these to `crate::web`, which builds on this module.
        NpmRequest::Console(_) => Err(Error::Internal(
            "a console request reached npm's dispatch".into(),
        )),
        NpmRequest::Login { .. }
        | NpmRequest::WebLogin
        | NpmRequest::WebLoginDone { .. }
        | NpmRequest::Whoami
        | NpmRequest::Logout { .. }
        | NpmRequest::Tokens
        | NpmRequest::CreateToken
        | NpmRequest::RevokeToken { .. }
        | NpmRequest::User { .. } => accounts::handle(call).await,
        NpmRequest::Publish { .. }
        | NpmRequest::Unpublish { .. }
        | NpmRequest::UnpublishTarball { .. }
        | NpmRequest::DistTag { .. } => publish::handle(call).await,
        request if is_stage(request) => stage::handle(call).await,
        NpmRequest::Visibility { name } if call.app.private.contains(name) => {
            publish::visibility(call)
        }
        NpmRequest::Passthrough {
            package: Some(name),
            path,
        } if call.app.private.contains(name) => publish::attestations(call, path).await,
        _ => reads::handle(call).await,
    }
}

/// Whether `request` is one of the stage API's (`npm stage …`).
pub fn is_stage(request: &NpmRequest) -> bool {
    matches!(
        request,
        NpmRequest::StagePublish { .. }
            | NpmRequest::StageList { .. }
            | NpmRequest::StageView { .. }
            | NpmRequest::StageTarball { .. }
            | NpmRequest::StageApprove { .. }
            | NpmRequest::StageReject { .. }
    )
}

/// The identity a write needs: the caller, or an error telling them to log in.
pub fn user<'a>(call: &Call<'a>) -> Result<&'a Identity, Error> {
    call.who.ok_or_else(login_first)
}

/// The error for a request that needs a user and has none.
pub fn login_first() -> Error {
    Error::Unauthenticated(
        "log in first: npm login --registry <this registry> (or an _authToken in .npmrc)".into(),
    )
}

/// The checks a request must pass before its body is read: a write to a package (a staged
/// one too) names one published here, by a user; every stage request is a user's; and a write
/// (or a new token, or an approval) by a user who enrolled a second factor carries a good
/// one-time code. A refused write never makes the front read its body.
pub async fn precheck(call: &Call<'_>) -> Result<(), Error> {
    write_target(call)?;
    if !needs_second_factor(call.request) {
        return Ok(());
    }
    let Some(who) = call.who else {
        return Ok(());
    };
    let address = call.address.map(|a| a.to_string());
    call.app
        .auth
        .require_second_factor(who, call.otp.as_deref(), address.as_deref())
        .await
        .map_err(Error::from)
}

/// Whether `request` is a write that a user with a second factor must confirm with a code:
/// publish, unpublish, dist-tags, owners, deprecate, a new token, a stage approval.
pub fn needs_second_factor(request: &NpmRequest) -> bool {
    matches!(
        request,
        NpmRequest::Publish { .. }
            | NpmRequest::DistTag { .. }
            | NpmRequest::Unpublish { .. }
            | NpmRequest::UnpublishTarball { .. }
            | NpmRequest::CreateToken
            | NpmRequest::StageApprove { .. }
            | NpmRequest::StageReject { .. }
    )
}

/// A write to a package must name one published here, and come from a user; every stage
/// request is a user's.
pub(crate) fn write_target(call: &Call<'_>) -> Result<(), Error> {
    if is_stage(call.request) && !matches!(call.request, NpmRequest::StagePublish { .. }) {
        return user(call).map(|_| ());
    }
    if !matches!(
        call.request,
        NpmRequest::Publish { .. }
            | NpmRequest::StagePublish { .. }
            | NpmRequest::DistTag { .. }
            | NpmRequest::Unpublish { .. }
            | NpmRequest::UnpublishTarball { .. }
    ) {
        return Ok(());
    }
    if let Some(name) = call.request.package() {
        if !call.app.private.contains(name) {
            return Err(Error::NotOffered(format!(
                "{name} is not published here (only the scopes in [publish] scopes and the \
                 names in [publish] packages are): for it sluice is a read-only mirror"
            )));
        }
    }
    user(call).map(|_| ())
}

/// Record `action` on `subject` (with `detail`) by the caller of `call` in the audit log.
pub async fn audit(
    call: &Call<'_>,
    action: crate::core::audit_log::Action,
    subject: &str,
    detail: &str,
) {
    let entry = crate::core::audit_log::AuditEntry::new(
        call.who.map(|w| w.user.as_str()),
        call.address,
        action,
        subject,
        detail,
    );
    call.app.audit.note(entry).await;
}
