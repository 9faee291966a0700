//! Mirror mode: follow the upstream's replication feed and copy every package it lists.
//!
//! `GET {changes}` gives the head (`update_seq`); `GET {changes}_changes?since=S&limit=N` pages
//! through changes. Sequences are opaque. The checkpoint (in the store) is written, with fsync,
//! only after every change before it is stored, so a kill at any moment resumes without losing a
//! change. The feed inserts entries behind a `last_seq` already read, so each cycle re-reads the
//! last few pages; changes already applied in this run cost nothing, after a restart one
//! conditional request each.

use std::collections::{HashSet, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Since;
use crate::registry::{Error, Registry};
use crate::upstream::UpstreamError;

/// What the follower reports in `/-/sluice/status`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct MirrorStatus {
    /// The stored checkpoint.
    pub checkpoint: Option<String>,
    /// The feed's head when last asked.
    pub head: Option<String>,
    /// Head minus checkpoint, when both are numbers.
    pub lag: Option<u64>,
    /// Packages fetched since start.
    pub packages: u64,
    /// Changes read since start (re-reads included).
    pub changes: u64,
    /// Packages that could not be mirrored (bad documents…); they are retried next time
    /// they change.
    pub failed: u64,
    /// Packages per second over the last cycle.
    pub rate: f64,
}

/// The checkpoint file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every change up to here is stored.
    pub since: String,
    /// Where the last few pages started, oldest first: re-read each cycle.
    #[serde(default)]
    pub recent: Vec<String>,
}

fn checkpoint_path(store: &Path) -> PathBuf {
    store.join("mirror-checkpoint.json")
}

/// Read the stored checkpoint, if any.
pub fn load_checkpoint(store: &Path) -> Option<Checkpoint> {
    let bytes = std::fs::read(checkpoint_path(store)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Write the checkpoint durably: temporary file, fsync, rename, fsync of the folder.
pub fn save_checkpoint(store: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    std::fs::create_dir_all(store)?;
    let path = checkpoint_path(store);
    let temp = store.join(format!("mirror-checkpoint.json.{}.tmp", std::process::id()));
    {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&serde_json::to_vec(checkpoint).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, &path)?;
    std::fs::File::open(store)?.sync_all()
}

/// One follower per store: an exclusive lock on `mirror.lock`, held while catching up.
fn lock_follower(store: &Path) -> Result<std::fs::File, UpstreamError> {
    let fail = |e: std::io::Error| UpstreamError::Invalid(format!("cannot lock the store: {e}"));
    std::fs::create_dir_all(store).map_err(fail)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.join("mirror.lock"))
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(UpstreamError::Invalid(format!(
            "another sluice is following the feed into {} (a `serve` in mirror mode?)",
            store.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(fail(e)),
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
    registry: Arc<Registry>,
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
    pub fn new(registry: Arc<Registry>) -> Result<Self, String> {
        let changes =
            registry.config.upstream.changes.clone().ok_or(
                "upstream.changes is not set: mirror mode needs the replication feed's URL",
            )?;
        Ok(Self {
            registry,
            changes,
            applied: std::sync::Mutex::new(LruSet {
                order: VecDeque::new(),
                set: HashSet::new(),
                capacity: 100_000,
            }),
        })
    }

    fn status(&self) -> std::sync::MutexGuard<'_, MirrorStatus> {
        self.registry
            .mirror
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn head(&self) -> Result<String, UpstreamError> {
        let doc = self.registry.upstream.get_json(&self.changes).await?;
        doc.get("update_seq")
            .and_then(seq_text)
            .ok_or_else(|| UpstreamError::Invalid(format!("{} has no update_seq", self.changes)))
    }

    /// Read the feed from the checkpoint (less the re-read window) to its end, storing every
    /// package it lists.
    pub async fn catch_up(&self, bar: &ProgressBar) -> Result<CatchUp, UpstreamError> {
        let store = self.registry.store.dir().to_path_buf();
        let config = &self.registry.config.mirror;
        let _lock = lock_follower(&store)?;
        let head = with_retries(|| self.head()).await?;
        let mut checkpoint = match load_checkpoint(&store) {
            Some(checkpoint) => checkpoint,
            None => {
                let since = match &config.since {
                    Since::Now => head.clone(),
                    Since::Seq(seq) => seq.clone(),
                };
                let checkpoint = Checkpoint {
                    since,
                    recent: Vec::new(),
                };
                save_checkpoint(&store, &checkpoint).map_err(|e| {
                    UpstreamError::Invalid(format!("cannot write the checkpoint: {e}"))
                })?;
                checkpoint
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
            let page = with_retries(|| self.registry.upstream.get_json(&url)).await?;
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
            save_checkpoint(&store, &checkpoint)
                .map_err(|e| UpstreamError::Invalid(format!("cannot write the checkpoint: {e}")))?;
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
        let concurrency = self.registry.config.upstream.concurrency;
        let results: Vec<bool> = futures::stream::iter(names.iter().cloned())
            .map(|name| async move {
                if !self.registry.allows(&name) {
                    return true;
                }
                let result = with_retries(|| async {
                    match self.registry.fetch_packument(&name).await.0 {
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
                        crate::sync::prefetch_tarballs(&self.registry, &name).await;
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
pub async fn follow(registry: Arc<Registry>) {
    let follower = match Follower::new(registry.clone()) {
        Ok(follower) => follower,
        Err(message) => {
            tracing::warn!("{message}; packages are mirrored on request only");
            return;
        }
    };
    let interval = registry.config.mirror.interval;
    loop {
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

    #[test]
    fn checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_checkpoint(dir.path()).is_none());
        let checkpoint = Checkpoint {
            since: "42".into(),
            recent: vec!["10".into(), "30".into()],
        };
        save_checkpoint(dir.path(), &checkpoint).unwrap();
        assert_eq!(load_checkpoint(dir.path()), Some(checkpoint));
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
