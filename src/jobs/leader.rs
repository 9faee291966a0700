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

/// Keep trying to take (or renew) the lease until `stop` resolves; `app.leader` says whether
/// this node holds it. The lease is released on the way out.
pub async fn lead(app: Arc<App>, stop: impl std::future::Future<Output = ()>) {
    let mut lease = Lease::new(
        app.store.clone(),
        LEASE,
        &app.config.cluster.node,
        app.config.cluster.lease,
    );
    tokio::pin!(stop);
    loop {
        let was = app.leader.load(Ordering::Relaxed);
        if let Err(error) = lease.acquire().await {
            tracing::warn!(%error, "cannot reach the lease: not leading background work");
        }
        let now = lease.is_held();
        app.leader.store(now, Ordering::Relaxed);
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
    app.leader.store(false, Ordering::Relaxed);
    lease.release().await;
}
