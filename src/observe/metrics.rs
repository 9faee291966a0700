//! Request counters, `/-/metrics` (Prometheus text) and the status page.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::Snapshot;
use crate::store::now_ms;

/// How many distinct package names the "most requested" table tracks.
const TRACKED_PACKAGES: usize = 10_000;

/// Request counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(&'static str, u16, &'static str), u64>>,
    bytes: AtomicU64,
    packages: Mutex<HashMap<String, u64>>,
    /// Client connections closed for running out of time (`server.*_timeout`).
    pub client_timeouts: std::sync::Arc<AtomicU64>,
    /// Requests being answered now (shutdown waits for them, not for idle connections).
    pub in_flight: std::sync::Arc<AtomicU64>,
    /// Package documents served whole (`application/json`).
    pub full_packuments: AtomicU64,
    /// Package documents served abbreviated (npm's install-v1 "corgi").
    pub abbreviated_packuments: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Count one answered request.
    pub fn record(
        &self,
        route: &'static str,
        status: u16,
        cache: &'static str,
        bytes: usize,
        package: Option<&str>,
    ) {
        *lock(&self.requests)
            .entry((route, status, cache))
            .or_default() += 1;
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if let Some(package) = package {
            let mut packages = lock(&self.packages);
            if let Some(count) = packages.get_mut(package) {
                *count += 1;
            } else if packages.len() < TRACKED_PACKAGES {
                packages.insert(package.to_string(), 1);
            }
        }
    }

    /// The `n` most requested packages.
    pub fn top_packages(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = lock(&self.packages)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// (hits, all) among packument and tarball answers.
    pub fn hit_ratio(&self) -> (u64, u64) {
        let requests = lock(&self.requests);
        let mut hits = 0;
        let mut all = 0;
        for ((route, _, cache), count) in requests.iter() {
            if matches!(*route, "packument" | "tarball" | "version") && *cache != "-" {
                all += count;
                if *cache == "HIT" {
                    hits += count;
                }
            }
        }
        (hits, all)
    }
}

/// The Prometheus text of `GET /-/metrics`.
pub fn render(metrics: &Metrics, snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP sluice_requests_total Requests answered, by route, status and cache status."
    );
    let _ = writeln!(out, "# TYPE sluice_requests_total counter");
    let mut requests: Vec<_> = lock(&metrics.requests)
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    requests.sort();
    for ((route, status, cache), count) in requests {
        let _ = writeln!(
            out,
            "sluice_requests_total{{route=\"{route}\",status=\"{status}\",cache=\"{cache}\"}} {count}"
        );
    }
    for (name, kind, help, value) in gauges(metrics, snapshot) {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    // Which form clients ask for: a client that only installs needs the abbreviated one.
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP sluice_packuments_served_total Package documents answered, by form.\n\
         # TYPE sluice_packuments_served_total counter\n\
         sluice_packuments_served_total{{form=\"full\"}} {}\n\
         sluice_packuments_served_total{{form=\"abbreviated\"}} {}",
        load(&metrics.full_packuments),
        load(&metrics.abbreviated_packuments)
    );
    store_and_background(&mut out, snapshot);
    out
}

/// The single-value series: name, type, help and value.
fn gauges<'a>(metrics: &Metrics, snapshot: &'a Snapshot) -> Vec<(&'a str, &'a str, &'a str, u64)> {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    vec![
        (
            "sluice_bytes_served_total",
            "counter",
            "Body bytes sent to clients.",
            load(&metrics.bytes),
        ),
        (
            "sluice_client_timeouts_total",
            "counter",
            "Client connections closed for sending or reading too slowly.",
            load(&metrics.client_timeouts),
        ),
        (
            "sluice_upstream_requests_total",
            "counter",
            "Requests sent to the upstream registry.",
            snapshot.upstream_requests,
        ),
        (
            "sluice_upstream_failures_total",
            "counter",
            "Upstream requests that failed.",
            snapshot.upstream_failures,
        ),
        (
            "sluice_revalidations_total",
            "counter",
            "Packument revalidations with upstream.",
            snapshot.revalidations,
        ),
        (
            "sluice_stale_served_total",
            "counter",
            "Answers served stale because upstream failed.",
            snapshot.stale,
        ),
        (
            "sluice_hot_cache_bytes",
            "gauge",
            "Bytes held by the in-memory hot cache.",
            snapshot.hot_bytes,
        ),
        (
            "sluice_hot_cache_limit_bytes",
            "gauge",
            "The hot cache's bound (storage.memory).",
            snapshot.hot_limit,
        ),
        (
            "sluice_store_bytes",
            "gauge",
            "Bytes the store takes.",
            snapshot.store_bytes,
        ),
        (
            "sluice_leader",
            "gauge",
            "1 when this node leads background work (refresh, prefetch, mirror).",
            u64::from(snapshot.leader),
        ),
        (
            "sluice_whitelist_entries",
            "gauge",
            "Entries on the live whitelist.",
            snapshot.whitelist.unwrap_or(0) as u64,
        ),
        (
            "sluice_private_packages",
            "gauge",
            "Private packages (published here) the store holds.",
            snapshot.private.len() as u64,
        ),
        (
            "sluice_unlisted_tarballs",
            "gauge",
            "Tarballs the store keeps for versions upstream serves but no longer lists.",
            snapshot.unlisted_tarballs,
        ),
        (
            "sluice_search_documents",
            "gauge",
            "Packages the search index holds.",
            snapshot.search_documents,
        ),
        (
            "sluice_search_ready",
            "gauge",
            "1 when the search index is complete, 0 while it is being built.",
            u64::from(snapshot.search_state == "ready"),
        ),
    ]
}

/// The store's operations and the background work's lags.
fn store_and_background(out: &mut String, snapshot: &Snapshot) {
    let _ = writeln!(
        *out,
        "# HELP sluice_store_requests_total Store operations, by operation and outcome.\n# TYPE sluice_store_requests_total counter"
    );
    for ((op, outcome), stats) in &snapshot.store_ops {
        let _ = writeln!(
            *out,
            "sluice_store_requests_total{{store=\"{}\",op=\"{op}\",outcome=\"{outcome}\"}} {}",
            snapshot.store, stats.count
        );
    }
    let _ = writeln!(
        *out,
        "# HELP sluice_store_seconds_total Time spent in store operations, by operation and outcome.\n# TYPE sluice_store_seconds_total counter"
    );
    for ((op, outcome), stats) in &snapshot.store_ops {
        let _ = writeln!(
            *out,
            "sluice_store_seconds_total{{store=\"{}\",op=\"{op}\",outcome=\"{outcome}\"}} {:.6}",
            snapshot.store, stats.seconds
        );
    }
    let last_refresh = snapshot.last_refresh_ms;
    if last_refresh > 0 {
        let lag = now_ms().saturating_sub(last_refresh) / 1000;
        let _ = writeln!(*out, "# HELP sluice_refresh_lag_seconds Seconds since the last scheduled refresh of the whitelisted packuments finished.\n# TYPE sluice_refresh_lag_seconds gauge\nsluice_refresh_lag_seconds {lag}");
    }
    if let Some(status) = &snapshot.mirror {
        if let Some(lag) = status.lag {
            let _ = writeln!(*out, "# HELP sluice_mirror_lag Changes between the feed's head and the checkpoint.\n# TYPE sluice_mirror_lag gauge\nsluice_mirror_lag {lag}");
        }
        let _ = writeln!(*out, "# HELP sluice_mirror_packages_total Packages stored by the follower.\n# TYPE sluice_mirror_packages_total counter\nsluice_mirror_packages_total {}", status.packages);
    }
}

/// The HTML of `GET /-/sluice/`: a small read-only status page, no JavaScript.
pub fn page(metrics: &Metrics, snapshot: &Snapshot) -> String {
    let (hits, all) = metrics.hit_ratio();
    let ratio = if all == 0 {
        "—".to_string()
    } else {
        format!("{:.1}% ({hits} of {all})", hits as f64 * 100.0 / all as f64)
    };
    let requests = snapshot.upstream_requests;
    let failures = snapshot.upstream_failures;
    let health = if snapshot.upstream_failing {
        "failing: not asked for a while (serving stored copies)"
    } else {
        "ok"
    };
    let mode = snapshot.mode;
    let whitelist = snapshot
        .whitelist
        .map_or("—".to_string(), |w| w.to_string());
    let store = snapshot.store_bytes;
    let mut rows = String::new();
    for (name, count) in metrics.top_packages(15) {
        let _ = write!(rows, "<tr><td>{}</td><td>{count}</td></tr>", escape(&name));
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"2\">no requests yet</td></tr>");
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sluice status</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:48em}}td,th{{padding:.2em .8em;text-align:left}}th{{background:#eee}}</style>
</head><body>
<h1>sluice</h1>
<table id="summary">
<tr><th>mode</th><td id="mode">{mode}</td></tr>
<tr><th>upstream</th><td id="upstream">{upstream}</td></tr>
<tr><th>upstream health</th><td id="health">{health} ({requests} requests, {failures} failed)</td></tr>
<tr><th>whitelist entries</th><td id="whitelist">{whitelist}</td></tr>
<tr><th>private packages</th><td id="private">{private}</td></tr>
<tr><th>store size</th><td id="store">{store_mb:.1} MB</td></tr>
<tr><th>hot cache</th><td id="hot">{hot_mb:.1} MB of {limit_mb:.0} MB</td></tr>
<tr><th>hit ratio</th><td id="ratio">{ratio}</td></tr>
</table>
<h2>Most requested packages</h2>
<table id="top"><tr><th>package</th><th>requests</th></tr>{rows}</table>
<p><a href="/-/sluice/status">status JSON</a> · <a href="/-/metrics">metrics</a></p>
</body></html>
"#,
        upstream = escape(&snapshot.upstream),
        private = snapshot.private.len(),
        store_mb = store as f64 / 1e6,
        hot_mb = snapshot.hot_bytes as f64 / 1e6,
        limit_mb = snapshot.hot_limit as f64 / 1e6,
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
