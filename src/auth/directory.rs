//! Users kept in the store, beside the users file: created, reset and made admins from the
//! console (or any caller with an admin [`Identity`]), so every node of a fleet shares them.
//! One state object holds them all, changed by conditional puts; each node keeps a snapshot,
//! taken again on its own changes and every `cluster.sync` ([`Auth::sync_users`]).
//!
//! A stored entry for a name of the users file overrides only what it sets (a password reset,
//! a role granted): the file keeps working as it did.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{hash_password, valid_email, valid_user_name, Auth, AuthError, Identity, TokenInfo};
use crate::store::{now_ms, Expect, Written};

/// The state object holding the stored users.
const USERS_KEY: &str = "auth/users";

/// A user as the store keeps it; each `None` leaves the users file's value in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    /// The password's argon2id PHC string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// The e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The admin role, granted or taken back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<bool>,
    /// When the entry was made (unix ms).
    #[serde(default)]
    pub created: u64,
}

/// The stored users, by name.
pub type StoredUsers = BTreeMap<String, StoredUser>;

/// Where a user's account comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserSource {
    /// The users file (`auth.users`), possibly with a stored override.
    File,
    /// The store (made from the console).
    Store,
}

/// One user as an admin page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    /// The name.
    pub name: String,
    /// The e-mail address ("" when none).
    pub email: String,
    /// Whether the user is an admin.
    pub admin: bool,
    /// Where the account comes from.
    pub source: UserSource,
    /// Whether the user enrolled a second factor.
    pub two_factor: bool,
}

impl Identity {
    /// Whether this credential may administer the registry: an admin's, not read-only.
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if !self.admin {
            return Err(AuthError::Forbidden(format!(
                "{} is not an admin of this registry",
                self.user
            )));
        }
        if self.readonly {
            return Err(AuthError::Forbidden(
                "this token is read-only: administration needs a read-write credential".into(),
            ));
        }
        Ok(())
    }

    /// The operator at the machine (`sluice user …`, `sluice settings …`): an admin.
    pub fn local_operator() -> Identity {
        Identity {
            user: "(local operator)".into(),
            readonly: false,
            token_hash: None,
            admin: true,
        }
    }
}

/// Refuse an admin's `act` on their own account: it would lock them out, with no other
/// admin to notice; another admin (or `sluice user` at the machine) can do it.
fn not_oneself(by: &Identity, name: &str, act: &str) -> Result<(), AuthError> {
    if by.user == name {
        return Err(AuthError::Forbidden(format!(
            "{name} cannot {act}: another admin can, or sluice user on the server"
        )));
    }
    Ok(())
}

impl Auth {
    /// The stored users as last read.
    pub(super) fn stored(&self) -> Arc<StoredUsers> {
        self.stored.load_full()
    }

    /// Read the stored users again (every `cluster.sync`, so other nodes' changes show).
    pub async fn sync_users(&self) -> Result<(), AuthError> {
        let users = match self.store.state(USERS_KEY).await? {
            Some((bytes, _)) => serde_json::from_slice(&bytes)
                .map_err(|e| AuthError::Store(format!("{USERS_KEY}: {e}")))?,
            None => StoredUsers::new(),
        };
        self.stored.store(Arc::new(users));
        self.synced.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Read the store's users if they never were (before the first credential is checked).
    pub async fn users_ready(&self) {
        if !self.synced.load(Ordering::Relaxed) {
            if let Err(error) = self.sync_users().await {
                tracing::warn!(%error, "cannot read the users kept in the store");
            }
        }
    }

    /// Change the stored users with `edit` (retried when another node changed them first).
    async fn edit_stored(
        &self,
        mut edit: impl FnMut(&mut StoredUsers) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        for _ in 0..32 {
            let held = self.store.state(USERS_KEY).await?;
            let mut users: StoredUsers = match &held {
                Some((bytes, _)) => serde_json::from_slice(bytes)
                    .map_err(|e| AuthError::Store(format!("{USERS_KEY}: {e}")))?,
                None => StoredUsers::new(),
            };
            edit(&mut users)?;
            let bytes = Bytes::from(serde_json::to_vec(&users).unwrap_or_default());
            let expect = Expect::from_read(held.as_ref().map(|(_, t)| t));
            if let Written::Stored(_) = self.store.put_state(USERS_KEY, bytes, expect).await? {
                self.stored.store(Arc::new(users));
                return Ok(());
            }
        }
        Err(AuthError::Store(
            "the stored users kept changing: try again".into(),
        ))
    }

    /// Create the user `name` in the store (shared by a fleet), by admin `by`.
    pub async fn create_user(
        &self,
        by: &Identity,
        name: &str,
        password: &str,
        email: &str,
        admin: bool,
    ) -> Result<(), AuthError> {
        by.require_admin()?;
        if !valid_user_name(name) {
            return Err(AuthError::Invalid(format!("`{name}` is not a user name")));
        }
        if !valid_email(email) {
            return Err(AuthError::Invalid(format!(
                "`{email}` is not an e-mail address sluice can keep"
            )));
        }
        if password.is_empty() {
            return Err(AuthError::Invalid(
                "an empty password is not a password".into(),
            ));
        }
        if self.has_user(name) {
            return Err(AuthError::Conflict(format!("{name} is a user already")));
        }
        self.new_name_ok(name)?;
        let hash = hash_password(password).map_err(AuthError::Store)?;
        let entry = StoredUser {
            hash: Some(hash),
            email: Some(email.to_string()),
            admin: Some(admin),
            created: now_ms(),
        };
        self.edit_stored(|users| {
            if users.get(name).is_some_and(|u| u.hash.is_some()) {
                return Err(AuthError::Conflict(format!("{name} is a user already")));
            }
            users.insert(name.to_string(), entry.clone());
            Ok(())
        })
        .await
    }

    /// Give `name` the password `password`, by `by`: an admin, or the user themself. The new
    /// password is kept in the store, over the users file's, so every node takes it.
    pub async fn reset_password(
        &self,
        by: &Identity,
        name: &str,
        password: &str,
    ) -> Result<(), AuthError> {
        if by.user != name || by.readonly {
            by.require_admin()?;
        }
        if password.is_empty() {
            return Err(AuthError::Invalid(
                "an empty password is not a password".into(),
            ));
        }
        self.known(name)?;
        let hash = hash_password(password).map_err(AuthError::Store)?;
        self.edit_stored(|users| {
            let entry = users.entry(name.to_string()).or_default();
            entry.hash = Some(hash.clone());
            Ok(())
        })
        .await
    }

    /// Grant `name` the admin role (or take it back), by admin `by`.
    pub async fn set_admin(&self, by: &Identity, name: &str, admin: bool) -> Result<(), AuthError> {
        by.require_admin()?;
        if !admin {
            not_oneself(by, name, "take back their own admin role")?;
        }
        self.known(name)?;
        self.edit_stored(|users| {
            users.entry(name.to_string()).or_default().admin = Some(admin);
            Ok(())
        })
        .await
    }

    /// Remove the store's user `name` (a user of the users file stays one), by admin `by`.
    pub async fn remove_stored_user(&self, by: &Identity, name: &str) -> Result<bool, AuthError> {
        by.require_admin()?;
        not_oneself(by, name, "remove their own account")?;
        let mut found = false;
        self.edit_stored(|users| {
            found = users.remove(name).is_some();
            Ok(())
        })
        .await?;
        Ok(found)
    }

    /// Every user, of the users file and of the store, by name, for admin `by`.
    pub async fn list_users(&self, by: &Identity) -> Result<Vec<UserSummary>, AuthError> {
        by.require_admin()?;
        let file = self.file_users();
        let stored = self.stored();
        let mut names: Vec<&String> = file.keys().collect();
        names.extend(
            stored
                .iter()
                .filter(|(_, u)| u.hash.is_some())
                .map(|(n, _)| n),
        );
        names.sort();
        names.dedup();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(account) = self.account(name) else {
                continue;
            };
            out.push(UserSummary {
                name: name.clone(),
                email: account.email,
                admin: account.admin,
                source: if file.contains_key(name) {
                    UserSource::File
                } else {
                    UserSource::Store
                },
                two_factor: self.two_factor_enrolled(name).await?,
            });
        }
        Ok(out)
    }

    /// `name`'s tokens, for admin `by`.
    pub async fn user_tokens(
        &self,
        by: &Identity,
        name: &str,
    ) -> Result<Vec<TokenInfo>, AuthError> {
        by.require_admin()?;
        self.tokens(name).await
    }

    /// Revoke `name`'s token `id`, by admin `by`; whether there was one.
    pub async fn revoke_user_token(
        &self,
        by: &Identity,
        name: &str,
        id: &str,
    ) -> Result<bool, AuthError> {
        by.require_admin()?;
        self.revoke(name, id).await
    }

    /// Whether the store keeps a password for `name` (then it is the one in force).
    pub async fn stored_password(&self, name: &str) -> bool {
        self.users_ready().await;
        self.stored().get(name).is_some_and(|u| u.hash.is_some())
    }

    /// `Ok` when `name` is a user.
    /// Refuse a new user's `name` that would pass for another user's (the same but for
    /// case), that hides characters (controls, anything not ASCII: look-alikes, direction
    /// overrides), or that the console cannot address (`%`, `\\`, `.`, `..`). Users already
    /// in the users file keep their names.
    pub fn new_name_ok(&self, name: &str) -> Result<(), AuthError> {
        if !name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '%' && c != '\\')
            || name == "."
            || name == ".."
        {
            return Err(AuthError::Invalid(format!(
                "`{}` is not a name for a new user: printable ASCII only, without % or \\",
                name.escape_default()
            )));
        }
        let file = self.file_users();
        let stored = self.stored();
        let taken = file.keys().chain(
            stored
                .iter()
                .filter(|(_, u)| u.hash.is_some())
                .map(|(n, _)| n),
        );
        for other in taken {
            if other.eq_ignore_ascii_case(name) {
                return Err(AuthError::Conflict(format!(
                    "{other} is a user already: a name differing only in case would pass for it"
                )));
            }
        }
        Ok(())
    }

    fn known(&self, name: &str) -> Result<(), AuthError> {
        if self.has_user(name) {
            Ok(())
        } else {
            Err(AuthError::NotFound(format!(
                "{name} is not a user of this registry"
            )))
        }
    }
}
