//! Leases: leadership of one holder at a time, kept in a state object with conditional puts
//! (no home-made consensus).
//!
//! A holder renews its lease every third of its duration by rewriting the object over the
//! version it wrote last. It counts itself the holder only until two thirds of the duration
//! after its last successful renewal, by its own monotonic clock. Another node takes a lease
//! over only once it has seen the object unchanged for a whole duration, by *its* monotonic
//! clock. Wall clocks are never compared, so a node whose clock is off cannot make two holders.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{now_ms, Expect, SharedStore, StoreError, Token, Written};

/// What the lease object says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseDoc {
    /// Who holds it ("" once released).
    holder: String,
    /// The holder's node name, for people.
    node: String,
    /// Renewals so far (every write changes the object).
    renewals: u64,
    /// When it was last renewed, by the holder's clock (unix ms, for people only).
    renewed_ms: u64,
}

/// One lease, as seen by one would-be holder.
pub struct Lease {
    store: SharedStore,
    key: String,
    holder: String,
    node: String,
    duration: Duration,
    /// The version we last wrote, and when (monotonic).
    held: Option<(Token, Instant)>,
    /// The version someone else last wrote, and since when we have seen it unchanged.
    observed: Option<(Token, Instant)>,
    renewals: u64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .field("held", &self.is_held())
            .finish()
    }
}

impl Lease {
    /// The lease in state object `key` of `store`, wanted by `node`, lasting `duration`
    /// without renewal.
    pub fn new(store: SharedStore, key: &str, node: &str, duration: Duration) -> Self {
        Self {
            store,
            key: key.to_string(),
            holder: format!("{node}/{}/{:016x}", std::process::id(), fastrand::u64(..)),
            node: node.to_string(),
            duration,
            held: None,
            observed: None,
            renewals: 0,
        }
    }

    /// How often a holder renews.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// Whether this holder may act as the holder now.
    pub fn is_held(&self) -> bool {
        self.held_until()
            .is_some_and(|until| Instant::now() < until)
    }

    /// Until when this holder may act as the holder (two thirds of the lease after the start
    /// of its last successful write), if it holds it.
    pub fn held_until(&self) -> Option<Instant> {
        self.held
            .as_ref()
            .map(|(_, at)| *at + self.duration * 2 / 3)
    }

    fn doc(&self, holder: &str) -> Bytes {
        let doc = LeaseDoc {
            holder: holder.to_string(),
            node: self.node.clone(),
            renewals: self.renewals,
            renewed_ms: now_ms(),
        };
        Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
    }

    async fn write(&mut self, expect: Expect) -> Result<bool, StoreError> {
        self.renewals += 1;
        let started = Instant::now();
        match self
            .store
            .put_state(&self.key, self.doc(&self.holder.clone()), expect)
            .await?
        {
            Written::Stored(token) => {
                // Counted from before the write: the object may have changed as soon as it
                // was sent.
                self.held = Some((token, started));
                self.observed = None;
                Ok(true)
            }
            Written::Conflict => {
                self.held = None;
                Ok(false)
            }
        }
    }

    /// Take or renew the lease if it can be had now. Returns whether this holder holds it.
    pub async fn acquire(&mut self) -> Result<bool, StoreError> {
        let Some((bytes, token)) = self.store.state(&self.key).await? else {
            return self.write(Expect::Absent).await;
        };
        if self.held.as_ref().is_some_and(|(ours, _)| *ours == token) {
            return self.write(Expect::Version(token)).await;
        }
        self.held = None;
        let doc: Option<LeaseDoc> = serde_json::from_slice(&bytes).ok();
        if doc.as_ref().is_none_or(|d| d.holder.is_empty()) {
            // Released (or unreadable): free to take.
            return self.write(Expect::Version(token)).await;
        }
        match &self.observed {
            Some((seen, since)) if *seen == token => {
                if since.elapsed() >= self.duration {
                    // Unchanged for a whole lease: its holder is gone.
                    return self.write(Expect::Version(token)).await;
                }
            }
            _ => self.observed = Some((token, Instant::now())),
        }
        Ok(false)
    }

    /// Give the lease up (another holder may take it at once).
    pub async fn release(&mut self) {
        if let Some((token, _)) = self.held.take() {
            let _ = self
                .store
                .put_state(&self.key, self.doc(""), Expect::Version(token))
                .await;
        }
    }
}

/// A lease held by a background task that renews it; dropping it stops the renewals and
/// releases the lease.
pub struct LeaseHolder {
    task: tokio::task::JoinHandle<()>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LeaseHolder {
    /// Keep renewing `lease`, which [`Lease::acquire`] just took.
    pub fn hold(mut lease: Lease) -> Self {
        let (release, mut released) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(lease.renew_every()) => {}
                    _ = &mut released => {
                        lease.release().await;
                        return;
                    }
                }
                match lease.acquire().await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(key = lease.key, "lost a lease while holding it");
                        return;
                    }
                    Err(error) => tracing::warn!(key = lease.key, %error, "cannot renew a lease"),
                }
            }
        });
        Self {
            task,
            release: Some(release),
        }
    }
}

impl Drop for LeaseHolder {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            // The task releases the lease and ends; if it cannot run any more, it is stopped.
            if release.send(()).is_err() {
                self.task.abort();
            }
        }
    }
}

/// Shared handle to a lease a background service keeps.
pub type SharedLease = Arc<tokio::sync::Mutex<Lease>>;
