//! What the nodes of a fleet share besides the packuments and tarballs themselves: the
//! whitelist additions (read-through, `add-package`, `remove-package`) and a journal of the
//! packuments each node changed. Both are state objects in the bucket, changed with
//! conditional puts (no lost line); every node reads them every `cluster.sync`, so a change
//! made by any node is served by every node within that, without a request ever waiting on it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{Expect, SharedStore, StoreError, Written};

/// The state object of the shared whitelist additions: one name a line.
pub const WHITELIST: &str = "fleet/whitelist";
/// The state object of the change journal.
pub const JOURNAL: &str = "fleet/journal";
/// How many journal entries are kept.
const KEEP: usize = 2000;
/// How many times a conditional put is retried after losing a race.
const ATTEMPTS: usize = 32;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Journal {
    /// The sequence of the next entry.
    next: u64,
    /// The newest entries, oldest first.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    name: String,
    node: String,
}

/// What changed elsewhere since the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    /// These packuments changed.
    Names(Vec<String>),
    /// More changed than the journal keeps: forget everything derived.
    Everything,
}

/// A node's view of the fleet's shared state.
pub struct Fleet {
    store: SharedStore,
    node: String,
    /// Packuments this node changed, not yet in the journal.
    pending: Mutex<BTreeSet<String>>,
    /// The sequence of the first journal entry this node has not seen (`None`: not looked yet).
    next: Mutex<Option<u64>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("node", &self.node).finish()
    }
}

fn names_of(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

impl Fleet {
    /// The shared state in `store`, as node `node` sees it.
    pub fn new(store: SharedStore, node: &str) -> Self {
        Self {
            store,
            node: node.to_string(),
            pending: Mutex::default(),
            next: Mutex::default(),
        }
    }

    /// Note that this node changed the packument of `name` (published at the next sync).
    pub fn changed(&self, name: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
    }

    /// The shared whitelist additions.
    pub async fn shared_whitelist(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .state(WHITELIST)
            .await?
            .map(|(bytes, _)| names_of(&bytes))
            .unwrap_or_default())
    }

    /// Change the shared whitelist with `edit` (read → edit → conditional put → on conflict
    /// again); returns what `edit` returned for the version stored.
    async fn edit_whitelist<T>(
        &self,
        mut edit: impl FnMut(&mut Vec<String>) -> T,
    ) -> Result<T, StoreError> {
        for _ in 0..ATTEMPTS {
            let held = self.store.state(WHITELIST).await?;
            let mut names = held.as_ref().map(|(b, _)| names_of(b)).unwrap_or_default();
            let before = names.clone();
            let outcome = edit(&mut names);
            if names == before {
                return Ok(outcome);
            }
            let mut text = names.join("\n");
            text.push('\n');
            let expect = Expect::from_read(held.as_ref().map(|(_, t)| t));
            if let Written::Stored(_) = self
                .store
                .put_state(WHITELIST, Bytes::from(text), expect)
                .await?
            {
                return Ok(outcome);
            }
        }
        Err(StoreError {
            location: self.store.location(),
            message: "the shared whitelist kept changing under this node: try again".into(),
        })
    }

    /// Add `names` to the shared whitelist; returns those that were not on it.
    pub async fn add_to_whitelist(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        self.edit_whitelist(|list| {
            let mut added = Vec::new();
            for name in names {
                if !list.contains(name) {
                    list.push(name.clone());
                    added.push(name.clone());
                }
            }
            added
        })
        .await
    }

    /// Take `name` off the shared whitelist; returns whether it was on it.
    pub async fn remove_from_whitelist(&self, name: &str) -> Result<bool, StoreError> {
        self.edit_whitelist(|list| {
            let before = list.len();
            list.retain(|n| n != name);
            list.len() != before
        })
        .await
    }

    /// Put the packuments this node changed since the last call into the journal; answers
    /// whether it wrote any.
    pub async fn publish(&self) -> Result<bool, StoreError> {
        let names: Vec<String> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if names.is_empty() {
            return Ok(false);
        }
        let restore = |names: Vec<String>| {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(names);
        };
        for _ in 0..ATTEMPTS {
            let held = match self.store.state(JOURNAL).await {
                Ok(held) => held,
                Err(error) => {
                    restore(names);
                    return Err(error);
                }
            };
            let mut journal: Journal = held
                .as_ref()
                .and_then(|(b, _)| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            for name in &names {
                journal.entries.push(Entry {
                    seq: journal.next,
                    name: name.clone(),
                    node: self.node.clone(),
                });
                journal.next += 1;
            }
            let excess = journal.entries.len().saturating_sub(KEEP);
            journal.entries.drain(..excess);
            let bytes = Bytes::from(serde_json::to_vec(&journal).unwrap_or_default());
            let expect = Expect::from_read(held.as_ref().map(|(_, t)| t));
            match self.store.put_state(JOURNAL, bytes, expect).await {
                Ok(Written::Stored(_)) => return Ok(true),
                Ok(Written::Conflict) => {}
                Err(error) => {
                    restore(names);
                    return Err(error);
                }
            }
        }
        // Lost too many races: try again next time.
        restore(names);
        Ok(false)
    }

    /// The packuments other nodes changed since the last call.
    pub async fn news(&self) -> Result<News, StoreError> {
        let journal: Journal = self
            .store
            .state(JOURNAL)
            .await?
            .and_then(|(b, _)| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let Some(expected) = next.replace(journal.next) else {
            // The first look: what came before is already what this node reads.
            return Ok(News::Names(Vec::new()));
        };
        let oldest = journal.entries.first().map_or(journal.next, |e| e.seq);
        // Entries dropped before this node read them, or a journal replaced by a new one.
        if oldest > expected || journal.next < expected {
            return Ok(News::Everything);
        }
        let names: BTreeSet<String> = journal
            .entries
            .into_iter()
            .filter(|e| e.seq >= expected && e.node != self.node)
            .map(|e| e.name)
            .collect();
        Ok(News::Names(names.into_iter().collect()))
    }
}

/// The search index follows the journal itself, from the position its own commits record.
#[async_trait::async_trait]
impl crate::search::Journal for Fleet {
    async fn read(&self) -> Result<crate::search::JournalView, StoreError> {
        let journal: Journal = self
            .store
            .state(JOURNAL)
            .await?
            .and_then(|(b, _)| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(crate::search::JournalView {
            next: journal.next,
            entries: journal
                .entries
                .into_iter()
                .map(|e| (e.seq, e.name))
                .collect(),
        })
    }
}

/// The whitelist plugin's additions, sent to the shared list in the background.
pub struct SharedAdditions {
    /// The fleet's shared state.
    pub fleet: Arc<Fleet>,
}

impl sluice_plugin_whitelist::SharedList for SharedAdditions {
    fn add(&self, names: Vec<String>) {
        let fleet = self.fleet.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = fleet.add_to_whitelist(&names).await {
                        tracing::error!(?names, %error, "cannot add to the shared whitelist");
                    }
                });
            }
            Err(_) => tracing::error!(?names, "no runtime to add to the shared whitelist"),
        }
    }
}
