//! The console's sessions and npm's pending web logins, kept as state objects in the store so
//! that every node of a fleet accepts them. A session's key is the sha256 of the secret the
//! browser holds, and a web login keeps only the sha256 of npm's: the store never holds a value
//! that opens a session or takes a login's token. Pending web logins wait in a fixed set of
//! slots ([`WEB_LOGIN_SLOTS`] state objects): a new one takes a slot whose login expired or was
//! used, which sweeps it, so anonymous clients cannot make the store keep more of them.

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

/// How many npm web logins may wait at once. Each waits in one of this many state objects
/// (a new one takes a slot that is free, expired or used), so the store keeps no more of them
/// however many are begun, and an expired one is gone once its slot is taken again.
const WEB_LOGIN_SLOTS: u32 = 1 << 16;

/// How many slots a new web login looks at (one after another from a random one) for one it
/// may take: the work of beginning one is bounded.
const SLOTS_PROBED: u32 = 8;

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
    /// The sha256 of its id (its slot is named by the id's first four hex digits, and holds
    /// later logins once this one is over).
    #[serde(default)]
    login: String,
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
    /// How many web logins may wait at once ([`WEB_LOGIN_SLOTS`]; fewer in tests).
    slots: u32,
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

/// The state object of web login slot `slot`.
fn slot_key(slot: u32) -> String {
    format!("console/web-login-slots/{slot:04x}")
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
        Self::with_login_slots(store, WEB_LOGIN_SLOTS)
    }

    /// Sessions kept in `store`, with at most `slots` web logins waiting at once.
    fn with_login_slots(store: SharedStore, slots: u32) -> Self {
        Self {
            store,
            seen: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(SEEN_FOR)
                .build(),
            slots: slots.clamp(1, WEB_LOGIN_SLOTS),
        }
    }

    /// The state object of the slot web login `login` (well formed) waits in.
    fn login_key(&self, login: &str) -> String {
        let named = login
            .get(..4)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok());
        slot_key(named.unwrap_or(0) % self.slots)
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

    /// Begin a web login for npm, in a slot no login waits in (it replaces an expired or used
    /// one there: that is how they are swept); refused while every slot it looks at is busy.
    pub async fn begin_web_login(&self) -> Result<WebLogin, Error> {
        self.begin_web_login_at(now_ms()).await
    }

    /// [`Self::begin_web_login`] at `now` (unix ms).
    async fn begin_web_login_at(&self, now: u64) -> Result<WebLogin, Error> {
        let start = OsRng.next_u32() % self.slots;
        for probe in 0..SLOTS_PROBED.min(self.slots) {
            let slot = (start + probe) % self.slots;
            let key = slot_key(slot);
            let found = self.store.state(&key).await?;
            let busy = found.as_ref().is_some_and(|(bytes, _)| {
                serde_json::from_slice::<Pending>(bytes).is_ok_and(|p| p.expires > now && !p.taken)
            });
            if busy {
                continue;
            }
            // The slot's number leads the id: its poll finds it without a search.
            let login = WebLogin {
                login: format!("{slot:04x}{}", &random_hex()[4..]),
                done: random_hex(),
            };
            let pending = Pending {
                login: sha256_hex(&login.login),
                done: sha256_hex(&login.done),
                expires: now + WEB_LOGIN_LIFETIME.as_millis() as u64,
                ..Pending::default()
            };
            let expect = Expect::from_read(found.as_ref().map(|(_, version)| version));
            if let Written::Stored(_) = self
                .store
                .put_state(&key, to_bytes(&pending), expect)
                .await?
            {
                return Ok(login);
            }
            // Another login took it meanwhile: look at the next one.
        }
        Err(Error::Throttled(
            "too many npm web logins are waiting: try again in a few minutes (or npm login \
             --auth-type=legacy)"
                .into(),
        ))
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

    /// The web login `login` (well formed), if its slot still holds it.
    async fn read_pending(
        &self,
        login: &str,
    ) -> Result<Option<(Pending, crate::store::Token)>, Error> {
        let hash = sha256_hex(login);
        Ok(self
            .store
            .state(&self.login_key(login))
            .await?
            .and_then(|(bytes, version)| {
                serde_json::from_slice::<Pending>(&bytes)
                    .ok()
                    .filter(|p| p.login == hash)
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
                &self.login_key(login),
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
                    &self.login_key(login),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The web logins (the sha256 of their ids) the slots hold.
    async fn held(sessions: &Sessions) -> Vec<String> {
        let mut held = Vec::new();
        for slot in 0..sessions.slots {
            if let Some((bytes, _)) = sessions.store.state(&slot_key(slot)).await.unwrap() {
                held.push(serde_json::from_slice::<Pending>(&bytes).unwrap().login);
            }
        }
        held.sort();
        held
    }

    #[tokio::test]
    async fn an_expired_web_login_is_swept_by_a_new_one_and_a_waiting_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(crate::store::DiskStore::new(dir.path().join("data")));
        let sessions = Sessions::with_login_slots(store, 3);
        let lifetime = WEB_LOGIN_LIFETIME.as_millis() as u64;
        let begun = now_ms() - lifetime - 1;
        let expired = sessions.begin_web_login_at(begun).await.unwrap();
        let waiting = sessions
            .begin_web_login_at(now_ms() - lifetime / 2)
            .await
            .unwrap();
        let first = sessions.begin_web_login_at(now_ms()).await.unwrap();
        let second = sessions.begin_web_login_at(now_ms()).await.unwrap();

        let held_now = held(&sessions).await;
        assert_eq!(held_now.len(), 3, "never more state objects than slots");
        assert!(
            !held_now.contains(&sha256_hex(&expired.login)),
            "the expired login is gone from the store"
        );
        for kept in [&waiting, &first, &second] {
            assert!(held_now.contains(&sha256_hex(&kept.login)));
            let done = format!("{}.{}", kept.login, kept.done);
            assert_eq!(sessions.poll_web_login(&done).await.unwrap(), Poll::Waiting);
        }
        let done = format!("{}.{}", expired.login, expired.done);
        let gone = sessions.poll_web_login(&done).await.unwrap_err();
        assert_eq!(gone.fault(), super::super::Fault::NotFound);

        // Every slot waits: another login is refused, and none waiting is replaced.
        let refused = sessions.begin_web_login().await.unwrap_err();
        assert_eq!(refused.fault(), super::super::Fault::Throttled, "{refused}");
        assert_eq!(held(&sessions).await, held_now);

        // A login whose token was taken frees its slot.
        sessions
            .approve_web_login(&first.login, "alice")
            .await
            .unwrap();
        let done = format!("{}.{}", first.login, first.done);
        assert_eq!(
            sessions.poll_web_login(&done).await.unwrap(),
            Poll::Ready("alice".into())
        );
        let third = sessions.begin_web_login().await.unwrap();
        let held_then = held(&sessions).await;
        assert!(held_then.contains(&sha256_hex(&third.login)));
        assert!(!held_then.contains(&sha256_hex(&first.login)));
        assert!(held_then.contains(&sha256_hex(&waiting.login)));
    }
}
