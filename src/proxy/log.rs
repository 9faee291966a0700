//! The log phase: the request's metrics and its access log line.

use std::sync::atomic::Ordering;

use pingora::protocols::http::ServerSession as Session;
use sluice_plugin_api::CacheStatus;

use super::RequestCtx;
use crate::app::App;

/// The paths that carry a credential in their last segment: `npm logout`'s token, and the
/// token (or its key) of `npm token revoke`.
const CREDENTIAL_PATHS: [&str; 2] = ["/-/user/token/", "/-/npm/v1/tokens/token/"];

/// `path` as it may be logged: a credential in it is replaced by `[redacted]`.
pub fn loggable(path: &str) -> std::borrow::Cow<'_, str> {
    for prefix in CREDENTIAL_PATHS {
        if let Some(at) = path.find(prefix) {
            let end = at + prefix.len();
            if end < path.len() {
                return format!("{}[redacted]", &path[..end]).into();
            }
        }
    }
    path.into()
}

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
        path = %loggable(header.uri.path()),
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
