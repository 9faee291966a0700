//! Administration, for the web console and the command line: users, roles, tokens, second
//! factors, live settings and the audit log. Each action is checked (an admin, or the user
//! themself where that is enough) and recorded in the audit log with who did it and from where;
//! each returns the core's [`Error`], which the caller turns into its answer.

use std::net::IpAddr;

use crate::app::App;
use crate::auth::{Enrolled, Identity, TokenInfo, UserSummary};
use crate::core::audit_log::{Action, AuditEntry, AuditPage};
use crate::core::settings::Effective;
use crate::core::Error;

/// Who acts, on which registry, from where.
#[derive(Clone, Copy)]
pub struct Actor<'a> {
    /// The registry.
    pub app: &'a App,
    /// Who acts (an admin for most actions).
    pub who: &'a Identity,
    /// From which address, when known.
    pub address: Option<IpAddr>,
}

impl Actor<'_> {
    async fn audit(&self, action: Action, subject: &str, detail: &str) {
        let entry = AuditEntry::new(Some(&self.who.user), self.address, action, subject, detail);
        self.app.audit.note(entry).await;
    }

    fn require_admin(&self) -> Result<(), Error> {
        self.who.require_admin().map_err(Error::from)
    }
}

/// Check `password` for `name` from `address` (the console's login form), under the same
/// failed-login limits as npm's logins: the user's identity, without a second factor yet
/// ([`login_needs_second_factor`], then [`verify_second_factor`]).
pub async fn check_login(
    app: &App,
    name: &str,
    password: &str,
    address: Option<IpAddr>,
) -> Result<Identity, Error> {
    let auth = &app.auth;
    auth.users_ready().await;
    let at = address.map(|a| a.to_string());
    if auth.locked_out(name, at.as_deref()) {
        return Err(crate::auth::AuthError::Locked.into());
    }
    if !auth.check_password(name, password) {
        auth.failed(name, at.as_deref(), "wrong password (console)")
            .await;
        return Err(Error::Unauthenticated("wrong user name or password".into()));
    }
    Ok(Identity {
        user: name.to_string(),
        readonly: false,
        token_hash: None,
        admin: auth.is_admin(name),
    })
}

/// Whether `name`'s logins need a one-time code after the password.
pub async fn login_needs_second_factor(app: &App, name: &str) -> Result<bool, Error> {
    Ok(app.auth.two_factor_enrolled(name).await?)
}

/// Whether `code` is `name`'s one-time code (or an unused recovery code), spending it; a wrong
/// one counts as a failed login from `address`.
pub async fn verify_second_factor(
    app: &App,
    name: &str,
    code: &str,
    address: Option<IpAddr>,
) -> Result<bool, Error> {
    let at = address.map(|a| a.to_string());
    if app.auth.locked_out(name, at.as_deref()) {
        return Err(crate::auth::AuthError::Locked.into());
    }
    if app.auth.verify_second_factor(name, code).await? {
        return Ok(true);
    }
    app.auth
        .failed(name, at.as_deref(), "wrong or used one-time code (console)")
        .await;
    Ok(false)
}

/// Every user (of the users file and the store).
pub async fn users(actor: Actor<'_>) -> Result<Vec<UserSummary>, Error> {
    Ok(actor.app.auth.list_users(actor.who).await?)
}

/// Create the user `name` in the store (shared by a fleet).
pub async fn create_user(
    actor: Actor<'_>,
    name: &str,
    password: &str,
    email: &str,
    admin: bool,
) -> Result<(), Error> {
    let auth = &actor.app.auth;
    auth.create_user(actor.who, name, password, email, admin)
        .await?;
    let detail = if admin { "admin" } else { "" };
    actor.audit(Action::UserCreate, name, detail).await;
    Ok(())
}

/// Give `name` a new password (an admin, or the user themself).
pub async fn reset_password(actor: Actor<'_>, name: &str, password: &str) -> Result<(), Error> {
    actor
        .app
        .auth
        .reset_password(actor.who, name, password)
        .await?;
    actor.audit(Action::PasswordReset, name, "").await;
    Ok(())
}

/// Grant `name` the admin role, or take it back.
pub async fn set_admin(actor: Actor<'_>, name: &str, admin: bool) -> Result<(), Error> {
    actor.app.auth.set_admin(actor.who, name, admin).await?;
    let detail = if admin {
        "granted admin"
    } else {
        "admin taken back"
    };
    actor.audit(Action::RoleChange, name, detail).await;
    Ok(())
}

/// Remove the store's user `name`; whether there was one.
pub async fn remove_user(actor: Actor<'_>, name: &str) -> Result<bool, Error> {
    let removed = actor.app.auth.remove_stored_user(actor.who, name).await?;
    if removed {
        actor.audit(Action::UserRemove, name, "").await;
    }
    Ok(removed)
}

/// `name`'s tokens (redacted: ids and hashes only).
pub async fn tokens(actor: Actor<'_>, name: &str) -> Result<Vec<TokenInfo>, Error> {
    Ok(actor.app.auth.user_tokens(actor.who, name).await?)
}

/// Revoke `name`'s token `id`; whether there was one.
pub async fn revoke_token(actor: Actor<'_>, name: &str, id: &str) -> Result<bool, Error> {
    let auth = &actor.app.auth;
    let revoked = auth.revoke_user_token(actor.who, name, id).await?;
    if revoked {
        actor
            .audit(Action::TokenRevoke, name, &format!("token {id}"))
            .await;
    }
    Ok(revoked)
}

/// Enroll `name` in two-factor authentication (the user themself or an admin): the URI and
/// recovery codes, to be shown once.
pub async fn enroll_two_factor(actor: Actor<'_>, name: &str) -> Result<Enrolled, Error> {
    let enrolled = actor
        .app
        .auth
        .enroll_two_factor(actor.who, name, "sluice")
        .await?;
    actor.audit(Action::TwoFactor, name, "enrolled").await;
    Ok(enrolled)
}

/// Take `name`'s second factor away (the user themself or an admin).
pub async fn remove_two_factor(actor: Actor<'_>, name: &str) -> Result<bool, Error> {
    let removed = actor.app.auth.remove_two_factor(actor.who, name).await?;
    if removed {
        actor.audit(Action::TwoFactor, name, "removed").await;
    }
    Ok(removed)
}

/// The live settings in force, each with where its value comes from.
pub fn settings(app: &App) -> Vec<Effective> {
    app.settings.effective()
}

/// Set the live setting `key` to `value` (an admin): in force at once on this node, and on
/// the others within `cluster.sync`.
pub async fn set_setting(actor: Actor<'_>, key: &str, value: &str) -> Result<Effective, Error> {
    actor.require_admin()?;
    let (before, after) = actor.app.settings.set(key, value, &actor.who.user).await?;
    actor
        .audit(Action::Settings, after.key, &set_detail(&before, &after))
        .await;
    Ok(after)
}

/// Set several live settings at once (an admin; the console's settings form): all checked
/// before any is written, written together, each change audited; values equal to those in
/// force are left alone. The settings that changed, as in force now.
pub async fn set_settings(
    actor: Actor<'_>,
    changes: &[(&str, &str)],
) -> Result<Vec<Effective>, Error> {
    actor.require_admin()?;
    let changed = actor.app.settings.set_all(changes, &actor.who.user).await?;
    let mut after_all = Vec::with_capacity(changed.len());
    for (before, after) in changed {
        actor
            .audit(Action::Settings, after.key, &set_detail(&before, &after))
            .await;
        after_all.push(after);
    }
    Ok(after_all)
}

/// What the audit log says of a setting set live.
fn set_detail(before: &Effective, after: &Effective) -> String {
    format!("{} ({}) -> {}", before.value, before.source, after.value)
}

/// Drop the live value of `key` (an admin): the file's value is in force again.
pub async fn unset_setting(actor: Actor<'_>, key: &str) -> Result<Effective, Error> {
    actor.require_admin()?;
    let (before, after) = actor.app.settings.unset(key).await?;
    let detail = format!("{} -> {} ({})", before.value, after.value, after.source);
    actor.audit(Action::Settings, after.key, &detail).await;
    Ok(after)
}

/// A page of the audit log (an admin): up to `limit` entries before id `before`, newest
/// first.
pub async fn audit_log(
    actor: Actor<'_>,
    before: Option<u64>,
    limit: usize,
) -> Result<AuditPage, Error> {
    actor.require_admin()?;
    actor.app.audit.page(before, limit).await
}

/// Record a whitelist change made from the console (`added` or removed `names`).
pub async fn note_whitelist(actor: Actor<'_>, added: bool, names: &[String]) {
    let action = if added {
        Action::WhitelistAdd
    } else {
        Action::WhitelistRemove
    };
    actor.audit(action, &names.join(", "), "").await;
}
