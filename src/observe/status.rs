//! sluice's own status document, `GET /-/sluice/status`.

use serde_json::{json, Value};

use super::{Metrics, Snapshot};

/// How many private package names the status document lists (the count is always whole).
const PRIVATE_NAMES_SHOWN: usize = 1000;

/// `GET /-/sluice/status`.
pub fn status(metrics: &Metrics, snapshot: &Snapshot) -> Value {
    let (hits, answers) = metrics.hit_ratio();
    json!({
        "name": "sluice",
        "version": env!("CARGO_PKG_VERSION"),
        "node": snapshot.node,
        "store": snapshot.store,
        "leader": snapshot.leader,
        "mode": if snapshot.mirror_mode { "mirror" } else { "whitelist" },
        "read_through": snapshot.read_through,
        "upstream": snapshot.upstream,
        "whitelist": snapshot.whitelist,
        "hot_cache_bytes": snapshot.hot_bytes,
        // Packument and tarball answers: those served without asking upstream, of all.
        "hits": hits,
        "answers": answers,
        "stale": snapshot.stale,
        "revalidations": snapshot.revalidations,
        "upstream_requests": snapshot.upstream_requests,
        "upstream_failures": snapshot.upstream_failures,
        "private": {
            "packages": snapshot.private.len(),
            "names": snapshot.private.iter().take(PRIVATE_NAMES_SHOWN).collect::<Vec<_>>(),
        },
        // Tarballs kept for versions upstream serves but no longer lists.
        "unlisted_tarballs": snapshot.unlisted_tarballs,
        "search": {"state": snapshot.search_state, "documents": snapshot.search_documents},
        "mirror": snapshot.mirror.as_ref().map(|status| serde_json::to_value(status).unwrap_or(Value::Null)),
    })
}
