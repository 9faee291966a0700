//! Background and command-line synchronisation with upstream: the refresher, and the
//! dependency closure of `add-package`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::registry::Registry;

/// Revalidate every whitelisted packument every `policy.refresh`, with bounded concurrency
/// and jitter. Runs forever.
pub async fn refresh_loop(registry: Arc<Registry>) {
    let period = registry.config.policy.refresh;
    loop {
        // Jitter: up to a tenth of the period, so many edges don't hit upstream at once.
        let jitter = period.mul_f64(fastrand::f64() * 0.1);
        tokio::time::sleep(period + jitter).await;
        refresh_once(&registry).await;
    }
}

/// Revalidate every listed package whose stored copy is due, once.
pub async fn refresh_once(registry: &Arc<Registry>) {
    let names: Vec<String> = match &registry.whitelist {
        Some(list) => list.snapshot().names().map(str::to_string).collect(),
        None => {
            let store = registry.store.clone();
            tokio::task::spawn_blocking(move || store.packument_names())
                .await
                .unwrap_or_default()
        }
    };
    let concurrency = registry.config.upstream.concurrency;
    let refresh = registry.config.policy.refresh;
    futures::stream::iter(names)
        .for_each_concurrent(concurrency, |name| {
            let registry = registry.clone();
            async move {
                if !registry.allows(&name) {
                    return;
                }
                let due = match registry.store.packument_meta(&name).await {
                    Ok(Some(meta)) => {
                        crate::store::now_ms().saturating_sub(meta.fetched_at)
                            >= (refresh.saturating_sub(Duration::from_millis(500))).as_millis() as u64
                    }
                    Ok(None) => true,
                    Err(_) => false,
                };
                if !due {
                    return;
                }
                let (result, _) = registry.fetch_packument(&name).await;
                if let Err(error) = result {
                    tracing::warn!(package = %name, %error, "refresh failed; the stored copy stays");
                }
            }
        })
        .await;
}
