//! Credentials → identity: the `Authorization` header (a bearer token or Basic user:password)
//! read into who a request comes from.

use base64::Engine as _;

use super::tokens::address_allowed;
use super::{sha256_hex, Auth};
use crate::store::StoreError;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// Whether the credential may only read (a read-only token).
    pub readonly: bool,
    /// The sha256 (hex) of the bearer token used, `None` for a password.
    pub token_hash: Option<String>,
    /// Whether the user administers the registry (the users file's role, or one granted in
    /// the store).
    pub admin: bool,
}

impl Identity {
    /// Whether this credential may list, create or revoke tokens: a read-only token may not
    /// (as on npm's registry), or reading would be enough to take over the account's tokens.
    pub fn may_manage_tokens(&self) -> Result<(), AuthError> {
        if self.readonly {
            return Err(AuthError::Forbidden(
                "this token is read-only: read-only tokens cannot list, create or revoke \
                 tokens; use a read-write token or log in again (npm login)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether this credential may log out (revoke) `token`, the token or its sha256: a
    /// read-only token may log out itself only, so that `npm logout` works with it.
    pub fn may_log_out(&self, token: &str) -> Result<(), AuthError> {
        let own = self.token_hash.as_deref();
        if !self.readonly || own == Some(token) || own == Some(sha256_hex(token).as_str()) {
            return Ok(());
        }
        Err(AuthError::Forbidden(
            "this token is read-only: it can log out itself, but no other token".into(),
        ))
    }
}

/// Why credentials were not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed, unknown or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Known, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins lately from the address (for the user, or for anyone).
    #[error("too many failed logins from this address: wait a few minutes")]
    Locked,
    /// The store failed.
    #[error("{0}")]
    Store(String),
    /// What was asked is malformed (a user name, an e-mail address, a code).
    #[error("{0}")]
    Invalid(String),
    /// It conflicts with what is kept (a user that exists, a second enrollment).
    #[error("{0}")]
    Conflict(String),
    /// No such user (or token).
    #[error("{0}")]
    NotFound(String),
    /// The user enrolled a second factor and this write needs its one-time code.
    #[error("{0}")]
    OtpRequired(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Store(e.to_string())
    }
}

impl Auth {
    /// Who `authorization` (the header's value) is, if it names anyone.
    ///
    /// `address` is the client's: a token limited to networks is refused from elsewhere, and
    /// Basic credentials that fail count against it and the user as a failed login does.
    pub async fn identify(
        &self,
        authorization: Option<&str>,
        address: Option<std::net::IpAddr>,
    ) -> Result<Option<Identity>, AuthError> {
        let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        self.users_ready().await;
        let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
        let credential = credential.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.bearer(credential, address).await.map(Some);
        }
        if scheme.eq_ignore_ascii_case("basic") {
            return self.basic(credential, address).await.map(Some);
        }
        Err(AuthError::Unauthorized(format!(
            "unsupported Authorization scheme `{scheme}`: use a token (npm login)"
        )))
    }

    /// The owner of a bearer `token`, used from `address`.
    async fn bearer(
        &self,
        token: &str,
        address: Option<std::net::IpAddr>,
    ) -> Result<Identity, AuthError> {
        let Some(info) = self.token(token).await? else {
            return Err(AuthError::Unauthorized(
                "this token is unknown or was revoked: log in again (npm login)".into(),
            ));
        };
        if !self.has_user(&info.user) {
            return Err(AuthError::Unauthorized(format!(
                "{} is no longer a user of this registry",
                info.user
            )));
        }
        if !info.cidr_whitelist.is_empty() && !address_allowed(&info.cidr_whitelist, address) {
            return Err(AuthError::Forbidden(format!(
                "this token may only be used from {}, not from {}",
                info.cidr_whitelist.join(", "),
                address.map_or("an unknown address".to_string(), |a| a.to_string())
            )));
        }
        Ok(Identity {
            admin: self.is_admin(&info.user),
            user: info.user,
            readonly: info.readonly,
            token_hash: Some(info.hash),
        })
    }

    /// The user of Basic `credential` (base64 of `user:password`), sent from `address`.
    async fn basic(
        &self,
        credential: &str,
        address: Option<std::net::IpAddr>,
    ) -> Result<Identity, AuthError> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credential)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| AuthError::Unauthorized("malformed Basic credentials".into()))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| AuthError::Unauthorized("malformed Basic credentials".into()))?;
        let at = address.map(|a| a.to_string());
        if self.locked_out(user, at.as_deref()) {
            return Err(AuthError::Locked);
        }
        if !self.check_password(user, password) {
            self.failed(user, at.as_deref(), "wrong password (Basic credentials)")
                .await;
            return Err(AuthError::Unauthorized(
                "wrong user name or password".into(),
            ));
        }
        Ok(Identity {
            user: user.to_string(),
            readonly: false,
            token_hash: None,
            admin: self.is_admin(user),
        })
    }
}
