//! The log phase: the request's metrics and its access log line.

use std::sync::atomic::Ordering;

use pingora::protocols::http::ServerSession as Session;
use sluice_plugin_api::CacheStatus;

use super::RequestCtx;
use crate::app::App;

/// Count the request in the metrics and write its access log line.
pub fn log(app: &App, session: &Session, error: Option<&pingora::Error>, ctx: &mut RequestCtx) {
    let header = session.req_header();
    let cache = ctx.plugin.cache_status.map_or("-", CacheStatus::as_str);
    app.metrics.record(
        ctx.route,
        ctx.status,
        cache,
        ctx.bytes,
        ctx.package.as_deref(),
    );
    tracing::info!(
        target: "sluice::access",
        id = ctx.plugin.request_id,
        method = %header.method,
        path = %header.uri.path(),
        route = ctx.route,
        status = ctx.status,
        cache,
        bytes = ctx.bytes,
        ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
        error = error.map(|e| e.to_string()),
        "request"
    );
    // Counted out after its log line: a shutdown waiting for it loses neither.
    if std::mem::take(&mut ctx.counted) {
        app.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
