//! Background and command-line synchronisation with upstream: the refresher, and the
//! dependency closure of `add-package`.

pub mod closure;
pub mod mirror;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::config::Tarballs;
use crate::registry::Registry;
use sluice_plugin_api::Packument;

/// Revalidate every whitelisted packument every `policy.refresh`, with bounded concurrency
/// and jitter. Runs forever.
pub async fn refresh_loop(registry: Arc<Registry>) {
    let period = registry.config.policy.refresh;
    loop {
        // Jitter: up to a tenth of the period, so many edges don't hit upstream at once.
        let jitter = period.mul_f64(fastrand::f64() * 0.1);
        tokio::time::sleep(period + jitter).await;
        refresh_once(&registry).await;
        registry
            .stats
            .last_refresh_ms
            .store(crate::store::now_ms(), std::sync::atomic::Ordering::Relaxed);
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
                    return;
                }
                prefetch_tarballs(&registry, &name).await;
            }
        })
        .await;
}

/// Copy the tarballs `policy.tarballs` asks for (`latest` or `all`) of `name` into the store.
pub async fn prefetch_tarballs(registry: &Arc<Registry>, name: &str) {
    let which = registry.config.policy.tarballs;
    if which == Tarballs::OnDemand {
        return;
    }
    let Ok(Some(stored)) = registry.store.packument(name).await else {
        return;
    };
    let Ok(doc) = registry.filtered(name, &stored) else {
        return;
    };
    let manifests: Vec<serde_json::Value> = match which {
        Tarballs::All => doc
            .versions()
            .map(|v| v.values().cloned().collect())
            .unwrap_or_default(),
        _ => crate::packument::manifest(&doc, "latest")
            .cloned()
            .into_iter()
            .collect(),
    };
    let files: Vec<String> = manifests
        .iter()
        .filter_map(|m| Packument::tarball_file(m).map(str::to_string))
        .collect();
    futures::stream::iter(files)
        .for_each_concurrent(registry.config.upstream.concurrency, |file| {
            let registry = registry.clone();
            let name = name.to_string();
            async move {
                if registry
                    .store
                    .has_tarball(&name, &file)
                    .await
                    .unwrap_or(false)
                {
                    return;
                }
                if let Err(error) = registry.fetch_tarball(&name, &file).await {
                    tracing::warn!(package = %name, %file, %error, "tarball prefetch failed");
                }
            }
        })
        .await;
}
