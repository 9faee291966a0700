//! Users, tokens and credentials → identity.
//!
//! Users live in a file an admin edits (`auth.users`: one `name:<argon2id PHC string>` a line,
//! optionally followed by `:<email>`; hot-reloaded; `sluice user add|passwd|remove` edit it).
//! Tokens are 256 random bits, shown once and stored only as their sha256 through the store's
//! state objects, so a fleet shares them.
//! Requests carry `Authorization: Bearer <token>` or `Basic base64(user:password)`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use sluice_plugin_api::live::{self, LiveFile, Watched};

use crate::store::{now_ms, Expect, SharedStore, StoreError, Written};

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// Whether the credential may only read (a read-only token).
    pub readonly: bool,
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
    /// Too many failed logins lately for the user or the address.
    #[error("too many failed logins for this user or address: wait a few minutes")]
    Locked,
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Store(e.to_string())
    }
}

/// A stored token: everything but the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The short id `npm token list` shows and `npm token revoke` takes.
    pub id: String,
    /// The sha256 of the token (hex).
    pub hash: String,
    /// Whose it is.
    pub user: String,
    /// When it was made (unix ms).
    pub created: u64,
    /// Whether it may only read.
    pub readonly: bool,
    /// The networks it may be used from (empty: any).
    #[serde(default)]
    pub cidr_whitelist: Vec<String>,
}

/// A user of the users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The password's argon2id PHC string.
    pub hash: String,
    /// The e-mail address shown beside the name in a package's maintainers (may be empty).
    pub email: String,
}

/// The users file's users, by name.
pub type Users = BTreeMap<String, User>;

/// Whether `email` can be kept in the users file (one line, no `:`).
pub fn valid_email(email: &str) -> bool {
    email.len() <= 254 && !email.contains([':', '\n', '\r']) && email.trim() == email
}

fn parse_users(text: &str) -> live::Parsed<Users> {
    let mut value = Users::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // A PHC string has no `:`, so what follows a second one is the e-mail address.
        let parsed = line.split_once(':').and_then(|(name, rest)| {
            let (hash, email) = rest.split_once(':').unwrap_or((rest, ""));
            let ok = !name.is_empty() && PasswordHash::new(hash).is_ok();
            ok.then(|| {
                let user = User {
                    hash: hash.to_string(),
                    email: email.trim().to_string(),
                };
                (name.to_string(), user)
            })
        });
        match parsed {
            Some((name, user)) => {
                value.insert(name, user);
            }
            None => errors.push(live::LineError {
                line: i + 1,
                message: "not `name:<argon2id PHC string>[:<email>]` (edit it with `sluice user`)"
                    .into(),
            }),
        }
    }
    live::Parsed { value, errors }
}

/// Hash `password` for the users file.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

fn sha256_hex(text: &str) -> String {
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (256 bits).
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sluice_{hex}")
}

fn token_key(hash: &str) -> String {
    format!("tokens/by-hash/{hash}")
}

fn user_key(user: &str) -> String {
    format!("tokens/by-user/{}", sha256_hex(user))
}

/// The users file and the tokens.
pub struct Auth {
    users: Arc<LiveFile<Users>>,
    store: SharedStore,
    /// Tokens seen recently (hash → info), so a request does not read the store each time; a
    /// revocation elsewhere in a fleet takes effect within this cache's lifetime.
    seen: moka::sync::Cache<String, Option<TokenInfo>>,
    /// Basic credentials verified recently (sha256 of `user:password`): argon2 is slow on
    /// purpose.
    verified: moka::sync::Cache<String, String>,
    /// Failed password checks per user name (and per client address) in the last minutes.
    failures: moka::sync::Cache<String, u32>,
    /// Whether a login for an unknown name creates the user.
    pub adduser: bool,
}

/// Failed logins allowed per user name or address within [`FAILURE_WINDOW`].
const MAX_FAILURES: u32 = 10;
/// How long failed logins are remembered.
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// How long the answer to the `n`th failed login in a row waits.
pub fn failure_delay(n: u32) -> Duration {
    Duration::from_millis(100 * u64::from(n)).min(Duration::from_secs(3))
}

/// Whether `address` is in one of the networks `cidrs` names (`10.0.0.0/8`, `::1/128`, or a
/// bare address); unparsable entries match nothing.
pub fn address_allowed(cidrs: &[String], address: Option<std::net::IpAddr>) -> bool {
    let Some(address) = address else {
        return false;
    };
    cidrs.iter().any(|cidr| match parse_cidr(cidr) {
        Ok(net) => net.contains(&address),
        Err(_) => false,
    })
}

/// A network as `npm token create --cidr` gives it.
pub fn parse_cidr(cidr: &str) -> Result<ipnet::IpNet, String> {
    let cidr = cidr.trim();
    cidr.parse::<ipnet::IpNet>()
        .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{cidr}` is not a network (10.0.0.0/8, fd00::/8, or an address)"))
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.path())
            .finish_non_exhaustive()
    }
}

/// Load the users file at `path`; a missing one means no users yet (it is read once it
/// appears, e.g. after `sluice user add`).
pub fn load_users(path: &Path) -> Result<LiveFile<Users>, String> {
    if !path.exists() {
        return Ok(LiveFile::from_text(
            path,
            "users file",
            "",
            parse_users,
            BTreeMap::is_empty,
        ));
    }
    LiveFile::load(path, "users file", false, parse_users, BTreeMap::is_empty)
}

impl Auth {
    /// The users in `users`, tokens in `store`; `sync` bounds how long a revoked token still
    /// works on another node.
    pub fn new(
        users: &Path,
        store: SharedStore,
        adduser: bool,
        sync: Duration,
    ) -> Result<Self, String> {
        Ok(Self {
            users: Arc::new(load_users(users)?),
            store,
            seen: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(sync)
                .build(),
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(FAILURE_WINDOW)
                .build(),
            adduser,
        })
    }

    /// The users file, for the host to watch (a file that does not exist yet is no news).
    pub fn watched(&self) -> Arc<dyn Watched> {
        Arc::new(UsersFile(self.users.clone()))
    }

    /// Whether too many logins failed lately for `user` or from `address`: then none is tried
    /// until the window passes (no unbounded guessing).
    pub fn locked_out(&self, user: &str, address: Option<&str>) -> bool {
        let over = |key: String| self.failures.get(&key).is_some_and(|n| n >= MAX_FAILURES);
        over(format!("user:{user}")) || address.is_some_and(|a| over(format!("addr:{a}")))
    }

    /// Count a failed login of `user` from `address`, and wait before its answer: the more
    /// failures lately for that user or address, the longer (100 ms each, up to 3 s), so
    /// guessing is slowed long before the lockout.
    pub async fn failed(&self, user: &str, address: Option<&str>) {
        let mut most = 0;
        for key in [
            Some(format!("user:{user}")),
            address.map(|a| format!("addr:{a}")),
        ]
        .into_iter()
        .flatten()
        {
            let n = self.failures.get(&key).unwrap_or(0) + 1;
            self.failures.insert(key, n);
            most = most.max(n);
        }
        tokio::time::sleep(failure_delay(most)).await;
    }

    /// Whether `password` is `user`'s.
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        let key = sha256_hex(&format!("{user}:{password}"));
        if self.verified.get(&key).is_some_and(|u| u == user) {
            return self.users.current().contains_key(user);
        }
        if !self.has_user(user) {
            // As slow as a wrong password: a probe does not learn which names exist.
            let _ = hash_password(password);
            return false;
        }
        let users = self.users.current();
        let Some(hash) = users.get(user).map(|u| &u.hash) else {
            // As slow as a wrong password: a probe does not learn which names exist.
            let _ = hash_password(password);
            return false;
        };
        let ok = PasswordHash::new(hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        if ok {
            self.verified.insert(key, user.to_string());
        }
        ok
    }

    /// Whether `user` is in the users file. An unknown name makes the file be read again
    /// first, so a `sluice user add` counts at once, before the watcher notices.
    pub fn has_user(&self, user: &str) -> bool {
        if self.users.current().contains_key(user) {
            return true;
        }
        let _ = self.users.reload(false);
        self.users.current().contains_key(user)
    }

    /// `user`'s e-mail address ("" when the users file has none), or `None` for no such user.
    pub fn email(&self, user: &str) -> Option<String> {
        if !self.has_user(user) {
            return None;
        }
        self.users.current().get(user).map(|u| u.email.clone())
    }

    /// Add `user` with `password` (and `email`, possibly empty) to the users file (adduser).
    pub fn add_user(&self, user: &str, password: &str, email: &str) -> Result<(), String> {
        edit_users(self.users.path(), |users| {
            if users.contains_key(user) {
                return Err(format!("{user} exists already"));
            }
            let user_entry = User {
                hash: hash_password(password)?,
                email: email.to_string(),
            };
            users.insert(user.to_string(), user_entry);
            Ok(())
        })?;
        self.users.reload(true).map_err(|e| e.to_string())?;
        Ok(())
    }

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
        let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
        let credential = credential.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let Some(info) = self.token(credential).await? else {
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
            return Ok(Some(Identity {
                user: info.user,
                readonly: info.readonly,
            }));
        }
        if scheme.eq_ignore_ascii_case("basic") {
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
                self.failed(user, at.as_deref()).await;
                return Err(AuthError::Unauthorized(
                    "wrong user name or password".into(),
                ));
            }
            return Ok(Some(Identity {
                user: user.to_string(),
                readonly: false,
            }));
        }
        Err(AuthError::Unauthorized(format!(
            "unsupported Authorization scheme `{scheme}`: use a token (npm login)"
        )))
    }

    async fn token(&self, token: &str) -> Result<Option<TokenInfo>, AuthError> {
        let hash = sha256_hex(token);
        if let Some(seen) = self.seen.get(&hash) {
            return Ok(seen);
        }
        let info = self
            .store
            .state(&token_key(&hash))
            .await?
            .and_then(|(bytes, _)| serde_json::from_slice::<TokenInfo>(&bytes).ok())
            .filter(|info| info.hash == hash);
        self.seen.insert(hash, info.clone());
        Ok(info)
    }

    /// A new token for `user`, shown once; only its hash is kept.
    pub async fn create_token(
        &self,
        user: &str,
        readonly: bool,
        cidr_whitelist: Vec<String>,
    ) -> Result<(String, TokenInfo), AuthError> {
        let token = new_token();
        let hash = sha256_hex(&token);
        let info = TokenInfo {
            id: hash[..8].to_string(),
            hash: hash.clone(),
            user: user.to_string(),
            created: now_ms(),
            readonly,
            cidr_whitelist,
        };
        let bytes = Bytes::from(serde_json::to_vec(&info).unwrap_or_default());
        match self
            .store
            .put_state(&token_key(&hash), bytes, Expect::Absent)
            .await?
        {
            Written::Stored(_) => {}
            Written::Conflict => return Err(AuthError::Store("token collision: try again".into())),
        }
        self.edit_list(user, |list| list.push(info.clone())).await?;
        Ok((token, info))
    }

    /// `user`'s tokens.
    pub async fn tokens(&self, user: &str) -> Result<Vec<TokenInfo>, AuthError> {
        Ok(self
            .store
            .state(&user_key(user))
            .await?
            .and_then(|(bytes, _)| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default())
    }

    async fn edit_list(
        &self,
        user: &str,
        mut edit: impl FnMut(&mut Vec<TokenInfo>),
    ) -> Result<(), AuthError> {
        for _ in 0..32 {
            let held = self.store.state(&user_key(user)).await?;
            let mut list: Vec<TokenInfo> = held
                .as_ref()
                .and_then(|(b, _)| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            edit(&mut list);
            let bytes = Bytes::from(serde_json::to_vec(&list).unwrap_or_default());
            let expect = Expect::from_read(held.as_ref().map(|(_, t)| t));
            if let Written::Stored(_) = self.store.put_state(&user_key(user), bytes, expect).await?
            {
                return Ok(());
            }
        }
        Err(AuthError::Store(
            "the token list kept changing: try again".into(),
        ))
    }

    /// Revoke `user`'s token with id (or hash, or the token itself) `id`; returns whether there
    /// was one.
    pub async fn revoke(&self, user: &str, id: &str) -> Result<bool, AuthError> {
        let by_token = sha256_hex(id);
        let found = self
            .tokens(user)
            .await?
            .into_iter()
            .find(|t| t.id == id || t.hash == id || t.hash == by_token);
        let Some(found) = found else {
            return Ok(false);
        };
        // A revoked token is a tombstone: unknown from now on.
        let tombstone = Bytes::from_static(b"{}");
        let key = token_key(&found.hash);
        if let Some((_, token)) = self.store.state(&key).await? {
            self.store
                .put_state(&key, tombstone, Expect::Version(token))
                .await?;
        }
        self.seen.insert(found.hash.clone(), None);
        self.edit_list(user, |list| list.retain(|t| t.hash != found.hash))
            .await?;
        Ok(true)
    }
}

/// The users file as the host watches it: missing is no users yet, not a failure to report.
struct UsersFile(Arc<LiveFile<Users>>);

impl Watched for UsersFile {
    fn path(&self) -> &Path {
        self.0.path()
    }

    fn reread(&self, confirm_empty: bool) -> sluice_plugin_api::watch::Reread {
        if !self.0.path().exists() {
            return sluice_plugin_api::watch::Reread::Done;
        }
        self.0.reread(confirm_empty)
    }
}

/// `user`'s line in the users file.
fn user_line(name: &str, user: &User) -> String {
    if user.email.is_empty() {
        format!("{name}:{}\n", user.hash)
    } else {
        format!("{name}:{}:{}\n", user.hash, user.email)
    }
}

/// Change the users file at `path` with `edit`, keeping comments and other lines.
pub fn edit_users(
    path: &Path,
    edit: impl FnOnce(&mut Users) -> Result<(), String>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let parsed = parse_users(&text);
    if let Some(error) = parsed.errors.first() {
        return Err(format!(
            "{}:{}: {}",
            path.display(),
            error.line,
            error.message
        ));
    }
    let before = parsed.value.clone();
    let mut users = parsed.value;
    edit(&mut users)?;
    let mut out = String::new();
    for line in text.lines() {
        let name = line.split_once(':').map(|(n, _)| n.trim());
        match name {
            Some(name) if !line.trim_start().starts_with('#') && before.contains_key(name) => {
                if let Some(user) = users.remove(name) {
                    out.push_str(&user_line(name, &user));
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    // What is left was not in the file: new users.
    for (name, user) in users {
        out.push_str(&user_line(&name, &user));
    }
    let temp = path.with_extension("sluice-tmp");
    std::fs::write(&temp, out).map_err(|e| format!("{}: {e}", temp.display()))?;
    std::fs::rename(&temp, path).map_err(|e| format!("{}: {e}", path.display()))
}
