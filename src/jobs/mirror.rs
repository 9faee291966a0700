//! Mirror mode: follow the upstream's replication feed and copy every package it lists.
//!
//! `GET {changes}` gives the head (`update_seq`); `GET {changes}_changes?since=S&limit=N` pages
//! through changes. Sequences are opaque. The checkpoint (a state object in the store) is written
//! only after every change before it is stored, so a kill at any moment resumes without losing a
//! change. The feed inserts entries behind a `last_seq` already read, so each cycle re-reads the
//! last few pages; changes already applied in this run cost nothing, after a restart one
//! conditional request each.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::App;
use crate::config::Since;
use crate::core::Error;
use crate::observe::MirrorStatus;
use crate::store::{Expect, Store, StoreError, Token, Written};
use crate::upstream::UpstreamError;

/// The checkpoint file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every change up to here is stored.
    pub since: String,
    /// Where the last few pages started, oldest first: re-read each cycle.
    #[serde(default)]
    pub recent: Vec<String>,
}

/// The state object the checkpoint is kept in.
const CHECKPOINT: &str = "mirror-checkpoint";

/// Why a catch-up stopped.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The feed failed for good.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another follower holds the store.
    #[error("another sluice is following the feed into {0} (a `serve` in mirror mode?)")]
    Busy(String),
    /// The checkpoint was written by someone else meanwhile.
    #[error("the mirror checkpoint in {0} was changed by another writer: stopping")]
    Conflict(String),
}

/// Read the stored checkpoint and its version, if any.
pub async fn load_checkpoint(store: &dyn Store) -> Result<Option<(Checkpoint, Token)>, StoreError> {
    let Some((bytes, token)) = store.state(CHECKPOINT).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok().map(|c| (c, token)))
}

/// Write the checkpoint over the version `expect` says; returns its new version.
pub async fn save_checkpoint(
    store: &dyn Store,
    checkpoint: &Checkpoint,
    expect: Expect,
) -> Result<Token, MirrorError> {
    let bytes = serde_json::to_vec(checkpoint).map_err(|e| StoreError {
        location: store.location(),
        message: format!("cannot encode the checkpoint: {e}"),
    })?;
    match store
        .put_state(CHECKPOINT, bytes::Bytes::from(bytes), expect)
        .await?
    {
        Written::Stored(token) => Ok(token),
        Written::Conflict => Err(MirrorError::Conflict(store.location())),
    }
}

fn seq_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What one catch-up did.
#[derive(Debug, Default, Clone)]
pub struct CatchUp {
    /// Changes read.
    pub changes: u64,
    /// Packages fetched.
    pub packages: u64,
    /// Packages that failed for good (bad documents).
    pub failed: u64,
    /// The checkpoint reached.
    pub checkpoint: String,
    /// The head seen at the start.
    pub head: String,
}

/// The replication follower.
pub struct Follower {
    app: Arc<App>,
    changes: String,
    /// (id, rev) pairs applied in this run: re-reads of them cost nothing.
    applied: std::sync::Mutex<LruSet>,
}

/// A bounded set remembering the most recent insertions.
struct LruSet {
    order: VecDeque<(String, String)>,
    set: HashSet<(String, String)>,
    capacity: usize,
}

impl LruSet {
    fn insert(&mut self, item: (String, String)) {
        if self.set.insert(item.clone()) {
            self.order.push_back(item);
            if self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

impl Follower {
    /// A follower for `registry`'s `upstream.changes` feed.
    pub fn new(app: Arc<App>) -> Result<Self, String> {
        let changes =
            app.config.upstream.changes.clone().ok_or(
                "upstream.changes is not set: mirror mode needs the replication feed's URL",
            )?;
        Ok(Self {
            app,
            changes,
            applied: std::sync::Mutex::new(LruSet {
                order: VecDeque::new(),
                set: HashSet::new(),
                capacity: 100_000,
            }),
        })
    }

    fn status(&self) -> std::sync::MutexGuard<'_, MirrorStatus> {
        self.app
            .mirror
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn head(&self) -> Result<String, UpstreamError> {
        let doc = self.app.upstream.get_json(&self.changes).await?;
        doc.get("update_seq").and_then(seq_text).ok_or_else(|| {
            UpstreamError::Invalid(format!(
                "{} has no update_seq",
                crate::config::redact_url(&self.changes)
            ))
        })
    }

    /// Read the feed from the checkpoint (less the re-read window) to its end, storing every
    /// package it lists.
    pub async fn catch_up(&self, bar: &ProgressBar) -> Result<CatchUp, MirrorError> {
        let store = self.app.store.as_ref();
        let config = &self.app.config.mirror;
        let Some(_claim) = store.claim("mirror follower").await? else {
            return Err(MirrorError::Busy(store.location()));
        };
        let head = with_retries(|| self.head()).await?;
        let (mut checkpoint, mut version) = match load_checkpoint(store).await? {
            Some(found) => found,
            None => {
                let since = match &config.since {
                    Since::Now => head.clone(),
                    Since::Seq(seq) => seq.clone(),
                };
                let checkpoint = Checkpoint {
                    since,
                    recent: Vec::new(),
                };
                let version = save_checkpoint(store, &checkpoint, Expect::Absent).await?;
                (checkpoint, version)
            }
        };
        {
            let mut status = self.status();
            status.head = Some(head.clone());
            status.checkpoint = Some(checkpoint.since.clone());
            status.lag = lag(&head, &checkpoint.since);
        }
        let mut summary = CatchUp {
            head: head.clone(),
            ..CatchUp::default()
        };
        let started = Instant::now();
        let mut since = checkpoint
            .recent
            .first()
            .cloned()
            .unwrap_or_else(|| checkpoint.since.clone());
        loop {
            let url = format!(
                "{}_changes?since={since}&limit={}",
                self.changes, config.batch
            );
            let page = with_retries(|| self.app.upstream.get_json(&url)).await?;
            let results = page
                .get("results")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let last_seq = page
                .get("last_seq")
                .and_then(seq_text)
                .or_else(|| results.last().and_then(|r| r.get("seq")).and_then(seq_text))
                .unwrap_or_else(|| since.clone());
            summary.changes += results.len() as u64;
            let names = self.to_apply(&results);
            let (fetched, failed) = self.apply(&names).await;
            summary.packages += fetched;
            summary.failed += failed;
            for result in &results {
                if let (Some(id), Some(rev)) =
                    (result.get("id").and_then(Value::as_str), rev(result))
                {
                    self.applied
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((id.to_string(), rev));
                }
            }
            // Every change of this page is stored: the checkpoint may move past it.
            if !results.is_empty() {
                checkpoint.recent.retain(|s| s != &since);
                checkpoint.recent.push(since.clone());
                let keep = config.window.max(1);
                let excess = checkpoint.recent.len().saturating_sub(keep);
                checkpoint.recent.drain(..excess);
            }
            if ahead(&last_seq, &checkpoint.since) {
                checkpoint.since = last_seq.clone();
            }
            version = save_checkpoint(store, &checkpoint, Expect::Version(version)).await?;
            let rate = summary.packages as f64 / started.elapsed().as_secs_f64().max(0.001);
            {
                let mut status = self.status();
                status.checkpoint = Some(checkpoint.since.clone());
                status.lag = lag(&head, &checkpoint.since);
                status.changes += results.len() as u64;
                status.packages += fetched;
                status.failed += failed;
                status.rate = rate;
            }
            // Without a progress bar (serve, or no terminal), progress goes to the log.
            if !results.is_empty() && bar.is_hidden() {
                tracing::info!(
                    seq = %checkpoint.since,
                    head = %head,
                    lag = ?lag(&head, &checkpoint.since),
                    packages_per_s = format!("{rate:.0}"),
                    "mirror: page stored"
                );
            }
            bar.set_message(format!(
                "seq {} / head {head}, lag {}, {rate:.0} packages/s",
                checkpoint.since,
                lag(&head, &checkpoint.since).map_or("?".into(), |l| l.to_string())
            ));
            if results.len() < config.batch || last_seq == since {
                break;
            }
            since = last_seq;
        }
        summary.checkpoint = checkpoint.since;
        Ok(summary)
    }

    /// The package names of a page to fetch: deduplicated, valid, not deleted, not already
    /// applied at this revision in this run.
    fn to_apply(&self, results: &[Value]) -> Vec<String> {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        for result in results {
            let Some(id) = result.get("id").and_then(Value::as_str) else {
                continue;
            };
            if result.get("deleted").and_then(Value::as_bool) == Some(true) {
                // Deletions and unpublishes keep our copy.
                continue;
            }
            if !sluice_plugin_api::name::is_valid_name(id) {
                continue;
            }
            if let Some(rev) = rev(result) {
                if applied.set.contains(&(id.to_string(), rev)) {
                    continue;
                }
            }
            if seen.insert(id.to_string()) {
                names.push(id.to_string());
            }
        }
        names
    }

    /// Fetch (and store) every package in `names`, retrying upstream faults until they pass:
    /// a change is never dropped. Returns (fetched, failed for good).
    async fn apply(&self, names: &[String]) -> (u64, u64) {
        let concurrency = self.app.config.upstream.concurrency;
        let results: Vec<bool> = futures::stream::iter(names.iter().cloned())
            .map(|name| async move {
                // Names published here are never fetched from upstream's feed.
                if !self.app.host.admits(&name) || self.app.private.contains(&name) {
                    return true;
                }
                let result = with_retries(|| async {
                    match self.app.packuments.fetch(&name).await.0 {
                        Ok(_) => Ok(true),
                        Err(Error::Upstream(e)) if transient(&e) => Err(e),
                        // Gone upstream before we ever held it: nothing to keep.
                        Err(Error::NotFound(_)) => Ok(true),
                        Err(error) => {
                            tracing::warn!(package = %name, %error, "mirror: package not stored");
                            Ok(false)
                        }
                    }
                })
                .await;
                match result {
                    Ok(true) => {
                        crate::jobs::refresh::prefetch_tarballs(&self.app, &name).await;
                        true
                    }
                    _ => false,
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let ok = results.iter().filter(|ok| **ok).count() as u64;
        (ok, results.len() as u64 - ok)
    }
}

fn rev(result: &Value) -> Option<String> {
    result
        .get("changes")?
        .as_array()?
        .first()?
        .get("rev")?
        .as_str()
        .map(str::to_string)
}

/// Whether `a` is past `b` (numerically when both are numbers; otherwise any new value is).
fn ahead(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a > b,
        _ => a != b,
    }
}

fn lag(head: &str, checkpoint: &str) -> Option<u64> {
    Some(
        head.parse::<u64>()
            .ok()?
            .saturating_sub(checkpoint.parse::<u64>().ok()?),
    )
}

fn transient(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Connect(_) | UpstreamError::Timeout(_) | UpstreamError::CircuitOpen(_) => {
            true
        }
        UpstreamError::Status(status) => *status == 429 || *status >= 500,
        _ => false,
    }
}

/// Run `op` until it succeeds or fails for good, backing off (0.5 s doubling to 30 s) on
/// upstream faults.
async fn with_retries<T, F, Fut>(mut op: F) -> Result<T, UpstreamError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, UpstreamError>>,
{
    let mut pause = Duration::from_millis(500);
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) if transient(&error) => {
                tracing::warn!(%error, retry_in = ?pause, "mirror: upstream fault, retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Follow the feed forever (the `serve` background service in mirror mode).
pub async fn follow(app: Arc<App>) {
    let follower = match Follower::new(app.clone()) {
        Ok(follower) => follower,
        Err(message) => {
            tracing::warn!("{message}; packages are mirrored on request only");
            return;
        }
    };
    let interval = app.config.mirror.interval;
    loop {
        if !app.is_leader() {
            tokio::time::sleep(interval.min(Duration::from_secs(1))).await;
            continue;
        }
        match follower.catch_up(&ProgressBar::hidden()).await {
            Ok(summary) => tracing::info!(
                checkpoint = %summary.checkpoint,
                head = %summary.head,
                packages = summary.packages,
                changes = summary.changes,
                "mirror: caught up"
            ),
            Err(error) => tracing::warn!(%error, "mirror: cycle failed; retrying"),
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn checkpoints_round_trip_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::DiskStore::new(dir.path());
        assert!(load_checkpoint(&store).await.unwrap().is_none());
        let checkpoint = Checkpoint {
            since: "42".into(),
            recent: vec!["10".into(), "30".into()],
        };
        let version = save_checkpoint(&store, &checkpoint, Expect::Absent)
            .await
            .unwrap();
        let (read, token) = load_checkpoint(&store).await.unwrap().unwrap();
        assert_eq!((read, &token), (checkpoint.clone(), &version));
        // A second writer that did not read the latest version is refused.
        assert!(matches!(
            save_checkpoint(&store, &checkpoint, Expect::Absent).await,
            Err(MirrorError::Conflict(_))
        ));
    }

    #[test]
    fn sequences_compare_numerically_when_they_can() {
        assert!(ahead("10", "9"));
        assert!(!ahead("9", "10"));
        assert!(ahead("b-2", "a-1"));
        assert_eq!(lag("100", "40"), Some(60));
        assert_eq!(lag("x", "40"), None);
    }
}
