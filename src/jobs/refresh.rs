//! The scheduled refresh: every listed packument revalidated every `policy.refresh`, and the
//! tarballs `policy.tarballs` asks for copied eagerly.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::app::App;
use crate::config::Tarballs;
use crate::store::all_names;
use sluice_plugin_api::Packument;

/// Revalidate every whitelisted packument every `policy.refresh` (the live setting, read each
/// cycle), with bounded concurrency and jitter, while this node leads background work. Runs
/// forever.
pub async fn refresh_loop(app: Arc<App>) {
    loop {
        let period = app.settings.refresh();
        // Jitter: up to a tenth of the period, so many edges don't hit upstream at once.
        let jitter = period.mul_f64(fastrand::f64() * 0.1);
        // Saturating: the file's value is not bounded as a live one is.
        tokio::time::sleep(period.saturating_add(jitter)).await;
        if !app.is_leader() {
            continue;
        }
        refresh_once(&app).await;
        app.last_refresh_ms
            .store(crate::store::now_ms(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Revalidate every listed package whose stored copy is due, once.
pub async fn refresh_once(app: &Arc<App>) {
    let names: Vec<String> = match app.whitelist() {
        Some(list) => list.snapshot().names().map(str::to_string).collect(),
        None => match all_names(app.store.as_ref()).await {
            Ok(names) => names,
            Err(error) => {
                tracing::warn!(%error, "refresh: cannot list the stored packuments");
                return;
            }
        },
    };
    let concurrency = app.config.upstream.concurrency;
    futures::stream::iter(names)
        .for_each_concurrent(concurrency, |name| {
            let app = app.clone();
            async move {
                // Leadership can lapse during a long cycle: stop where it did.
                if !app.is_leader()
                    || !app.host.admits(&name)
                    || app.private.contains(&name)
                {
                    return;
                }
                let due = app
                    .packuments
                    .is_due(&name, Duration::from_millis(500))
                    .await
                    .unwrap_or(false);
                if !due {
                    return;
                }
                let (result, _) = app.packuments.fetch(&name).await;
                if let Err(error) = result {
                    tracing::warn!(package = %name, %error, "refresh failed; the stored copy stays");
                    return;
                }
                prefetch_tarballs(&app, &name).await;
            }
        })
        .await;
}

/// Copy the tarballs `policy.tarballs` asks for (`latest` or `all`) of `name` into the store.
pub async fn prefetch_tarballs(app: &Arc<App>, name: &str) {
    let which = app.config.policy.tarballs;
    if which == Tarballs::OnDemand {
        return;
    }
    let Ok(Some(stored)) = app.packuments.stored(name).await else {
        return;
    };
    let Ok(crate::core::renders::Filtered { doc, .. }) = app.renders.filtered(name, &stored) else {
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
        .for_each_concurrent(app.config.upstream.concurrency, |file| {
            let app = app.clone();
            let name = name.to_string();
            async move {
                if app.store.has_tarball(&name, &file).await.unwrap_or(false) {
                    return;
                }
                if let Err(error) = app.tarballs.ensure_stored(&name, &file).await {
                    tracing::warn!(package = %name, %file, %error, "tarball prefetch failed");
                }
            }
        })
        .await;
}
