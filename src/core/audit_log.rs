//! The audit log: every write and admin action (who, when, from which address, what), kept in
//! the store so a fleet has one log.
//!
//! Append-only by construction: entries go into numbered chunks (`audit/chunk/{n}`, up to
//! [`CHUNK`] entries each), and an append rewrites the last chunk with its entries and one
//! more, by a conditional put on the version it read (a lost race reads again); a full chunk
//! is followed by the next, made with a put that expects it absent. Nothing here removes or
//! edits an entry, and nothing outside this module writes these keys. Each entry's `id` is its
//! position (chunk × [`CHUNK`] + index): pages are asked for by the id they end before.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Error;
use crate::store::{now_ms, Expect, SharedStore, Written};

/// Entries per chunk.
pub const CHUNK: u64 = 256;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A version published.
    Publish,
    /// Versions (or a whole package) unpublished, or a tarball removed.
    Unpublish,
    /// A package's metadata changed through a publish of the document (deprecate).
    Deprecate,
    /// A package's maintainers changed (`npm owner add|rm`).
    Owners,
    /// A dist-tag set or removed.
    DistTag,
    /// A version staged for approval.
    Stage,
    /// A staged version approved.
    Approve,
    /// A staged version rejected (withdrawn).
    Reject,
    /// A token created (a login makes one too).
    TokenCreate,
    /// A token revoked (a logout too).
    TokenRevoke,
    /// A login (or a second factor) that failed.
    LoginFailure,
    /// A user created.
    UserCreate,
    /// A user removed.
    UserRemove,
    /// A password changed.
    PasswordReset,
    /// The admin role granted or taken back.
    RoleChange,
    /// A second factor enrolled or removed.
    TwoFactor,
    /// A live setting changed.
    Settings,
    /// Packages put on the whitelist.
    WhitelistAdd,
    /// Packages taken off the whitelist.
    WhitelistRemove,
    /// An action a newer version of sluice records (a fleet mid-upgrade): shown as "other";
    /// appends keep the entry's own bytes.
    #[serde(other)]
    Other,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its position in the log (set when it is appended).
    #[serde(default)]
    pub id: u64,
    /// When (unix ms).
    pub at: u64,
    /// Who: a user name; `None` for an anonymous caller (a login that failed names the user
    /// it tried in `subject`).
    pub actor: Option<String>,
    /// The client's address, when known.
    pub address: Option<String>,
    /// What was done.
    pub action: Action,
    /// What it was done to: a package, `name@version`, a user, a setting.
    pub subject: String,
    /// More: the tag and version, the new value, why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl AuditEntry {
    /// An entry for `action` on `subject` by `actor` from `address`, now.
    pub fn new(
        actor: Option<&str>,
        address: Option<std::net::IpAddr>,
        action: Action,
        subject: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        AuditEntry {
            id: 0,
            at: now_ms(),
            actor: actor.map(str::to_string),
            address: address.map(|a| a.to_string()),
            action,
            subject: subject.into(),
            detail: detail.into(),
        }
    }
}

/// A page of the log, newest first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditPage {
    /// The entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// The `before` that asks for the next (older) page; `None` at the log's start.
    pub next: Option<u64>,
}

/// The log.
#[derive(Debug)]
pub struct AuditLog {
    store: SharedStore,
    /// The last chunk as last seen (a hint: later ones are looked for from it).
    last: AtomicU64,
}

fn chunk_key(n: u64) -> String {
    format!("audit/chunk/{n:012}")
}

impl AuditLog {
    /// The log kept in `store`.
    pub fn new(store: SharedStore) -> Self {
        AuditLog {
            store,
            last: AtomicU64::new(0),
        }
    }

    /// Chunk `n`'s entries, as [`AuditEntry`] values to read them or as raw JSON to append
    /// (an append keeps each earlier entry's bytes, one a newer version wrote included).
    async fn chunk<T: DeserializeOwned>(
        &self,
        n: u64,
    ) -> Result<Option<(Vec<T>, crate::store::Token)>, Error> {
        match self.store.state(&chunk_key(n)).await? {
            Some((bytes, token)) => {
                let entries = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::store(format!("audit log chunk {n} is unreadable: {e}")))?;
                Ok(Some((entries, token)))
            }
            None => Ok(None),
        }
    }

    /// The last chunk that exists (0 when none does yet), from the hint onwards.
    async fn last_chunk(&self) -> Result<u64, Error> {
        let mut n = self.last.load(Ordering::Relaxed);
        while self.store.state(&chunk_key(n + 1)).await?.is_some() {
            n += 1;
        }
        self.last.fetch_max(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Append `entry`; returns it with its id.
    pub async fn record(&self, mut entry: AuditEntry) -> Result<AuditEntry, Error> {
        for _ in 0..64 {
            let n = self.last_chunk().await?;
            let held = self.chunk::<Box<RawValue>>(n).await?;
            let (mut entries, expect, at) = match held {
                Some((entries, _)) if entries.len() as u64 >= CHUNK => {
                    (Vec::new(), Expect::Absent, n + 1)
                }
                Some((entries, token)) => (entries, Expect::Version(token), n),
                None => (Vec::new(), Expect::Absent, n),
            };
            entry.id = at * CHUNK + entries.len() as u64;
            let raw = serde_json::to_string(&entry)
                .ok()
                .and_then(|text| RawValue::from_string(text).ok())
                .ok_or_else(|| Error::Internal("an audit entry did not serialize".into()))?;
            entries.push(raw);
            let bytes = Bytes::from(serde_json::to_vec(&entries).unwrap_or_default());
            if let Written::Stored(_) = self.store.put_state(&chunk_key(at), bytes, expect).await? {
                self.last.fetch_max(at, Ordering::Relaxed);
                return Ok(entry);
            }
        }
        Err(Error::store("the audit log kept changing: try again"))
    }

    /// Append `entry`, logging (not failing) when the store refuses: the action it records
    /// was done already.
    pub async fn note(&self, entry: AuditEntry) {
        let action = entry.action;
        if let Err(error) = self.record(entry).await {
            tracing::error!(%error, %action, "cannot append to the audit log");
        }
    }

    /// Up to `limit` entries before id `before` (all the newest when `None`), newest first.
    pub async fn page(&self, before: Option<u64>, limit: usize) -> Result<AuditPage, Error> {
        let last = self.last_chunk().await?;
        let end = before.unwrap_or(u64::MAX);
        let mut n = last.min(end / CHUNK);
        let mut page = AuditPage::default();
        loop {
            let entries: Vec<AuditEntry> = self.chunk(n).await?.map(|(e, _)| e).unwrap_or_default();
            for entry in entries.into_iter().rev().filter(|e| e.id < end) {
                if page.entries.len() == limit {
                    page.next = page.entries.last().map(|e| e.id);
                    return Ok(page);
                }
                page.entries.push(entry);
            }
            if n == 0 {
                return Ok(page);
            }
            n -= 1;
        }
    }

    /// Every entry at or after `since` (unix ms), oldest first.
    pub async fn since(&self, since: u64) -> Result<Vec<AuditEntry>, Error> {
        let mut n = self.last_chunk().await?;
        let mut out = Vec::new();
        loop {
            let entries: Vec<AuditEntry> = self.chunk(n).await?.map(|(e, _)| e).unwrap_or_default();
            let older = entries.first().is_some_and(|e| e.at < since);
            out.extend(entries.into_iter().rev().filter(|e| e.at >= since));
            if older || n == 0 {
                break;
            }
            n -= 1;
        }
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{Action, AuditEntry};

    /// A chunk with an entry a newer node wrote still reads (the console and `audit-log` show
    /// it as "other"), so appends and pages keep working during a fleet's rolling upgrade.
    #[test]
    fn an_action_from_a_newer_version_reads_as_other() {
        let chunk = r#"[{"id":0,"at":1,"actor":"a","address":null,"action":"reject","subject":"x@1.0.0"},
                        {"id":1,"at":2,"actor":"a","address":null,"action":"from-the-future","subject":"y"}]"#;
        let entries: Vec<AuditEntry> = serde_json::from_str(chunk).unwrap();
        assert_eq!(entries[0].action, Action::Reject);
        assert_eq!(entries[1].action, Action::Other);
        assert_eq!(Action::Other.to_string(), "other");
    }

    /// An append rewrites its chunk keeping every earlier entry's bytes, one this version
    /// cannot name included.
    #[tokio::test]
    async fn an_append_keeps_an_unknown_entry_as_written() {
        use std::sync::Arc;

        use super::{chunk_key, AuditLog};
        use crate::store::{DiskStore, Expect, SharedStore};

        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(DiskStore::new(dir.path()));
        let future = r#"{"id":0,"at":1,"actor":"a","address":null,"action":"from-the-future","subject":"y","extra":1}"#;
        store
            .put_state(
                &chunk_key(0),
                bytes::Bytes::from(format!("[{future}]")),
                Expect::Absent,
            )
            .await
            .unwrap();
        let log = AuditLog::new(store.clone());
        let entry = AuditEntry::new(Some("b"), None, Action::Reject, "x@1.0.0", "id");
        assert_eq!(log.record(entry).await.unwrap().id, 1);
        let (bytes, _) = store.state(&chunk_key(0)).await.unwrap().unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.starts_with(&format!("[{future},")), "{text}");
        let page = log.page(None, 10).await.unwrap();
        let actions: Vec<Action> = page.entries.iter().map(|e| e.action).collect();
        assert_eq!(actions, [Action::Reject, Action::Other]);
    }
}
