//! The console's sessions and npm's pending web logins, kept as state objects in the store so
//! that every node of a fleet accepts them. A key is the sha256 of the secret the browser (or
//! npm) holds: the store never holds a value that opens a session or takes a login's token.

use std::time::Duration;

use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::Error;
use crate::store::{now_ms, Expect, SharedStore, Written};

/// How long a console session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// How long npm's web login waits for the user.
pub const WEB_LOGIN_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// How long a node trusts a session it read (a logout on another node of a fleet takes effect
/// within this time; on this node at once).
const SEEN_FOR: Duration = Duration::from_secs(30);

/// A console session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// Who logged in.
    pub user: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// When it ends (unix ms).
    pub expires: u64,
    /// The user's password fingerprint when it was opened (`Auth::credential`): a session
    /// outlives no password reset.
    #[serde(default)]
    pub credential: String,
}

/// A web login npm waits for.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Pending {
    /// The sha256 of the secret in npm's done URL.
    done: String,
    /// When it ends (unix ms).
    expires: u64,
    /// Who logged in for it, once someone did.
    user: Option<String>,
    /// Whether npm took its token.
    taken: bool,
}

/// What npm's poll of a web login finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Nobody logged in yet.
    Waiting,
    /// `user` logged in: npm gets a token for them, this once.
    Ready(String),
}

/// The URLs of a web login that began: the login page's id and npm's done secret.
#[derive(Debug, Clone)]
pub struct WebLogin {
    /// Named by the login page's URL.
    pub login: String,
    /// Named by the done URL only (with the login id: `{login}.{secret}`).
    pub done: String,
}

/// Sessions and web logins over the store.
pub struct Sessions {
    store: SharedStore,
    seen: moka::sync::Cache<String, Option<Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// 256 random bits from the OS, in hex.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn session_key(id: &str) -> String {
    format!("console/sessions/{}", sha256_hex(id))
}

fn login_key(id: &str) -> String {
    format!("console/web-logins/{}", sha256_hex(id))
}

/// Whether `id` has the shape of an id this module made (so no odd text reaches a key).
fn well_formed(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

impl Sessions {
    /// Sessions kept in `store`.
    pub fn new(store: SharedStore) -> Self {
        Self {
            store,
            seen: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(SEEN_FOR)
                .build(),
        }
    }

    /// A new session for `user`: its id (the cookie's value) and the session.
    pub async fn open(&self, user: &str, credential: &str) -> Result<(String, Session), Error> {
        let id = random_hex();
        let session = Session {
            user: user.to_string(),
            csrf: random_hex(),
            expires: now_ms() + SESSION_LIFETIME.as_millis() as u64,
            credential: credential.to_string(),
        };
        match self
            .store
            .put_state(&session_key(&id), to_bytes(&session), Expect::Absent)
            .await?
        {
            Written::Stored(_) => Ok((id, session)),
            Written::Conflict => Err(Error::Internal("session id collision".into())),
        }
    }

    /// The live session `id`, if it is one.
    pub async fn get(&self, id: &str) -> Result<Option<Session>, Error> {
        if !well_formed(id) {
            return Ok(None);
        }
        let session = match self.seen.get(id) {
            Some(seen) => seen,
            None => {
                let read = self
                    .store
                    .state(&session_key(id))
                    .await?
                    .and_then(|(bytes, _)| serde_json::from_slice::<Session>(&bytes).ok());
                self.seen.insert(id.to_string(), read.clone());
                read
            }
        };
        Ok(session.filter(|s| s.expires > now_ms()))
    }

    /// End session `id` (logout): it is a tombstone from now on.
    pub async fn close(&self, id: &str) -> Result<(), Error> {
        if !well_formed(id) {
            return Ok(());
        }
        let key = session_key(id);
        if let Some((_, version)) = self.store.state(&key).await? {
            self.store
                .put_state(&key, Bytes::from_static(b"{}"), Expect::Version(version))
                .await?;
        }
        self.seen.insert(id.to_string(), None);
        Ok(())
    }

    /// Begin a web login for npm.
    pub async fn begin_web_login(&self) -> Result<WebLogin, Error> {
        let login = WebLogin {
            login: random_hex(),
            done: random_hex(),
        };
        let pending = Pending {
            done: sha256_hex(&login.done),
            expires: now_ms() + WEB_LOGIN_LIFETIME.as_millis() as u64,
            ..Pending::default()
        };
        match self
            .store
            .put_state(&login_key(&login.login), to_bytes(&pending), Expect::Absent)
            .await?
        {
            Written::Stored(_) => Ok(login),
            Written::Conflict => Err(Error::Internal("web login id collision".into())),
        }
    }

    /// The web login `login` as a login page may show it: `true` while it waits for a user.
    pub async fn web_login_waits(&self, login: &str) -> Result<bool, Error> {
        if !well_formed(login) {
            return Ok(false);
        }
        Ok(self
            .read_pending(login)
            .await?
            .is_some_and(|(p, _)| p.user.is_none() && p.expires > now_ms()))
    }

    async fn read_pending(
        &self,
        login: &str,
    ) -> Result<Option<(Pending, crate::store::Token)>, Error> {
        Ok(self
            .store
            .state(&login_key(login))
            .await?
            .and_then(|(bytes, version)| {
                serde_json::from_slice::<Pending>(&bytes)
                    .ok()
                    .map(|p| (p, version))
            }))
    }

    /// `user` logged in for the web login `login`.
    pub async fn approve_web_login(&self, login: &str, user: &str) -> Result<(), Error> {
        let gone = || Error::NotFound("this npm login has expired: run npm login again".into());
        if !well_formed(login) {
            return Err(gone());
        }
        let (mut pending, version) = self.read_pending(login).await?.ok_or_else(gone)?;
        if pending.expires <= now_ms() {
            return Err(gone());
        }
        if pending.user.is_some() {
            return Err(Error::Conflict(
                "someone logged in for this npm login already".into(),
            ));
        }
        pending.user = Some(user.to_string());
        match self
            .store
            .put_state(
                &login_key(login),
                to_bytes(&pending),
                Expect::Version(version),
            )
            .await?
        {
            Written::Stored(_) => Ok(()),
            Written::Conflict => Err(Error::Conflict(
                "someone logged in for this npm login already".into(),
            )),
        }
    }

    /// npm polls the web login its done URL names (`{login}.{secret}`).
    pub async fn poll_web_login(&self, done: &str) -> Result<Poll, Error> {
        let gone =
            || Error::NotFound("no such npm login, or it expired: run npm login again".into());
        let (login, secret) = done.split_once('.').ok_or_else(gone)?;
        if !well_formed(login) || !well_formed(secret) {
            return Err(gone());
        }
        for _ in 0..8 {
            let (mut pending, version) = self.read_pending(login).await?.ok_or_else(gone)?;
            if pending.done != sha256_hex(secret) || pending.taken || pending.expires <= now_ms() {
                return Err(gone());
            }
            let Some(user) = pending.user.clone() else {
                return Ok(Poll::Waiting);
            };
            pending.taken = true;
            // Taken before the token exists: two polls never both get one.
            if let Written::Stored(_) = self
                .store
                .put_state(
                    &login_key(login),
                    to_bytes(&pending),
                    Expect::Version(version),
                )
                .await?
            {
                return Ok(Poll::Ready(user));
            }
        }
        Err(gone())
    }
}
