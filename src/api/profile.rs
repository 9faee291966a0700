//! A user's own account, as npm's `npm profile` keeps it (the console's account page): the
//! password, changed with the current one, and the second factor, enrolled by confirming a
//! code of its new secret and removed with a current code. Each change is recorded in the audit
//! log as the command line's equivalent (`sluice user passwd|2fa`) is; a wrong password or
//! code counts as a failed login.

use crate::auth::{Begun, Enrolled};
use crate::core::audit_log::{Action, AuditEntry};
use crate::core::Error;

use super::admin::{self, Actor};

/// The name authenticator apps show for this registry (as `sluice user 2fa` names it).
const ISSUER: &str = "sluice";

/// The actor's second factor: whether it is on, and the enrollment waiting for its code.
pub async fn two_factor(actor: Actor<'_>) -> Result<(bool, Option<Begun>), Error> {
    let auth = &actor.app.auth;
    let user = &actor.who.user;
    if auth.two_factor_enrolled(user).await? {
        return Ok((true, None));
    }
    Ok((false, auth.pending_two_factor(user, ISSUER).await?))
}

/// Begin the actor's enrollment, given their `current` password (checked under the failed
/// login limits, as npm's profile asks for it): a new secret, not in force until confirmed;
/// `None` when the password is wrong (and nothing changed). A session alone must not turn on
/// a second factor only whoever holds the session has: the user would be locked out of
/// logins and of writes with their tokens.
pub async fn begin_two_factor(actor: Actor<'_>, current: &str) -> Result<Option<Begun>, Error> {
    let user = &actor.who.user;
    if actor.app.auth.two_factor_enrolled(user).await? {
        // Refused before the password is looked at (as the core refuses it).
        return Err(Error::Conflict(format!(
            "{user} has two-factor authentication already: disable it first"
        )));
    }
    match admin::check_login(actor.app, user, current, actor.address).await {
        Ok(_) => {}
        Err(Error::Unauthenticated(_)) => return Ok(None),
        Err(other) => return Err(other),
    }
    Ok(Some(
        actor
            .app
            .auth
            .begin_two_factor(actor.who, user, ISSUER)
            .await?,
    ))
}

/// Confirm the actor's enrollment with `code`: the recovery codes, to be shown once, or
/// `None` when the code is wrong (and nothing changed).
pub async fn confirm_two_factor(actor: Actor<'_>, code: &str) -> Result<Option<Enrolled>, Error> {
    let user = &actor.who.user;
    let auth = &actor.app.auth;
    let enrolled = auth
        .confirm_two_factor(actor.who, user, code, ISSUER)
        .await?;
    if enrolled.is_some() {
        let entry = AuditEntry::new(
            Some(user),
            actor.address,
            Action::TwoFactor,
            user,
            "enrolled",
        );
        actor.app.audit.note(entry).await;
    }
    Ok(enrolled)
}

/// Remove the actor's second factor, given a current code (or an unused recovery code):
/// whether the code was good (a wrong one counts as a failed login and removes nothing).
pub async fn disable_two_factor(actor: Actor<'_>, code: &str) -> Result<bool, Error> {
    let user = &actor.who.user;
    if !admin::verify_second_factor(actor.app, user, code, actor.address).await? {
        return Ok(false);
    }
    admin::remove_two_factor(actor, user).await?;
    Ok(true)
}

/// Change the actor's password to `new`, given the `current` one (checked under the failed
/// login limits): whether `current` was right.
pub async fn change_password(actor: Actor<'_>, current: &str, new: &str) -> Result<bool, Error> {
    let user = &actor.who.user;
    match admin::check_login(actor.app, user, current, actor.address).await {
        Ok(_) => {}
        Err(Error::Unauthenticated(_)) => return Ok(false),
        Err(other) => return Err(other),
    }
    admin::reset_password(actor, user, new).await?;
    Ok(true)
}
