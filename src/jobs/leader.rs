//! Leadership of background work: the refresher, the tarball prefetch and the mirror follower
//! run only on the node holding the fleet's lease (a state object in the store; see
//! `store::lease`). With one node it leads at once; when the leader dies, another takes over
//! within `cluster.lease` plus one renewal.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::app::App;
use crate::store::lease::Lease;

/// The state object of the fleet's lease.
pub const LEASE: &str = "leases/background";

/// Keep trying to take (or renew) the lease until `stop` resolves; `app.is_leader()` says
/// whether this node holds it (until two thirds of a lease after its last renewal, by the
/// monotonic clock). The lease is released on the way out.
pub async fn lead(app: Arc<App>, stop: impl std::future::Future<Output = ()>) {
    let mut lease = Lease::new(
        app.store.clone(),
        LEASE,
        &app.config.cluster.node,
        app.config.cluster.lease,
    );
    tokio::pin!(stop);
    loop {
        let was = app.is_leader();
        // Bounded: a slow store must not keep this node counted as leader past its lease.
        match tokio::time::timeout(lease.renew_every(), lease.acquire()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot reach the lease: not leading background work")
            }
            Err(_) => {
                tracing::warn!("the lease did not answer in time: not leading background work")
            }
        }
        let until = lease.held_until().map_or(0, crate::memory::monotonic_ms_at);
        app.leader_until.store(until, Ordering::Relaxed);
        let now = app.is_leader();
        if now != was {
            tracing::info!(
                node = %app.config.cluster.node,
                leader = now,
                "background work: {}",
                if now { "this node leads" } else { "another node leads" }
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(lease.renew_every()) => {}
            _ = &mut stop => break,
        }
    }
    app.leader_until.store(0, Ordering::Relaxed);
    lease.release().await;
}
