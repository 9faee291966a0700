//! What sluice tells about itself: request counters, `/-/metrics`, the status page and the
//! status document. They read a [`Snapshot`] the composition root gathers; nothing here
//! imports the core back.

pub mod metrics;
pub mod status;

use serde::Serialize;

pub use metrics::Metrics;

/// What the replication follower reports.
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

/// sluice's state at one moment, as metrics and status show it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// This node's name (`cluster.node`).
    pub node: String,
    /// `disk` or `s3`.
    pub store: &'static str,
    /// Whether this node leads background work.
    pub leader: bool,
    /// `whitelist`, `whitelist + read-through` or `mirror`.
    pub mode: &'static str,
    /// Whether policy.mode is mirror.
    pub mirror_mode: bool,
    /// policy.read_through.
    pub read_through: bool,
    /// The upstream registry's URL.
    pub upstream: String,
    /// Whether the upstream circuit breaker is open.
    pub upstream_failing: bool,
    /// Upstream requests sent.
    pub upstream_requests: u64,
    /// Upstream requests failed.
    pub upstream_failures: u64,
    /// Entries on the live whitelist (whitelist mode).
    pub whitelist: Option<usize>,
    /// Bytes the hot cache holds.
    pub hot_bytes: u64,
    /// storage.memory.
    pub hot_limit: u64,
    /// Bytes the store takes.
    pub store_bytes: u64,
    /// Answers served stale.
    pub stale: u64,
    /// Packument revalidations.
    pub revalidations: u64,
    /// When the last scheduled refresh finished (unix ms; 0: none yet).
    pub last_refresh_ms: u64,
    /// The follower's progress (mirror mode).
    pub mirror: Option<MirrorStatus>,
    /// Private packages the store holds (names under `[publish]`), sorted.
    pub private: Vec<String>,
    /// Tarballs the store keeps for versions upstream serves but does not list, as last
    /// counted.
    pub unlisted_tarballs: u64,
    /// Store operations: ((operation, outcome), counts).
    pub store_ops: Vec<((&'static str, &'static str), crate::store::OpStats)>,
    /// The search index's state: `building` or `ready`.
    pub search_state: &'static str,
    /// Documents the search index holds.
    pub search_documents: u64,
}
