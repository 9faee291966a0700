//! sluice's own documents: the status JSON and the local search index's answers.

use std::sync::Arc;

use serde_json::{json, Value};
use sluice_plugin_api::SearchQuery;

use crate::config::Mode;
use crate::registry::Registry;

/// `GET /-/sluice/status`.
pub fn status(registry: &Registry) -> Value {
    let stats = &registry.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (hits, answers) = registry.metrics.hit_ratio();
    json!({
        "name": "sluice",
        "version": env!("CARGO_PKG_VERSION"),
        "mode": match registry.config.policy.mode { Mode::Whitelist => "whitelist", Mode::Mirror => "mirror" },
        "read_through": registry.config.policy.read_through,
        "upstream": registry.config.upstream.registry,
        "whitelist": registry.whitelist.as_ref().map(|w| w.snapshot().len()),
        "hot_cache_bytes": registry.hot.weighted_size(),
        // Packument and tarball answers: those served without asking upstream, of all.
        "hits": hits,
        "answers": answers,
        "stale": load(&stats.stale),
        "revalidations": load(&stats.revalidations),
        "upstream_requests": load(&registry.upstream.stats.requests),
        "upstream_failures": load(&registry.upstream.stats.failures),
        "mirror": (registry.config.policy.mode == Mode::Mirror).then(|| {
            let status = registry.mirror.lock().unwrap_or_else(|p| p.into_inner()).clone();
            serde_json::to_value(status).unwrap_or(Value::Null)
        }),
    })
}

/// `GET /-/v1/search`: packages sluice holds whose name, description or keywords match.
pub async fn search(registry: &Arc<Registry>, query: &SearchQuery) -> Value {
    let words: Vec<String> = query
        .text
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let store = registry.store.clone();
    let names = tokio::task::spawn_blocking(move || store.packument_names())
        .await
        .unwrap_or_default();
    let mut objects = Vec::new();
    let mut skipped = 0;
    let mut total = 0;
    for name in names {
        if !registry.allows(&name) {
            continue;
        }
        let Ok(Some(stored)) = registry.store.packument(&name).await else {
            continue;
        };
        let Ok(doc) = registry.filtered(&name, &stored) else {
            continue;
        };
        let latest = doc
            .dist_tags()
            .and_then(|t| t.get("latest"))
            .and_then(Value::as_str)
            .and_then(|v| doc.versions().and_then(|vs| vs.get(v)))
            .cloned()
            .unwrap_or(Value::Null);
        let description = latest
            .get("description")
            .or_else(|| doc.doc.get("description"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let keywords = latest.get("keywords").cloned().unwrap_or(json!([]));
        let haystack = format!("{name} {description} {keywords}").to_lowercase();
        if !words.iter().all(|w| haystack.contains(w)) {
            continue;
        }
        total += 1;
        if skipped < query.from {
            skipped += 1;
            continue;
        }
        if objects.len() >= query.size {
            continue;
        }
        let version = latest.get("version").cloned().unwrap_or(Value::Null);
        let date = version
            .as_str()
            .and_then(|v| doc.published(v))
            .map(str::to_string);
        objects.push(json!({
            "package": {
                "name": name,
                "version": version,
                "description": description,
                "keywords": keywords,
                "date": date,
                "links": {},
                "publisher": latest.get("_npmUser").cloned().unwrap_or(Value::Null),
                "maintainers": doc.doc.get("maintainers").cloned().unwrap_or(json!([])),
            },
            "score": {"final": 1.0, "detail": {"quality": 1.0, "popularity": 1.0, "maintenance": 1.0}},
            "searchScore": 1.0,
        }));
    }
    json!({ "objects": objects, "total": total, "time": chrono_now() })
}

fn chrono_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
