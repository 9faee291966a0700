//! npm's read protocol: packuments (whole and abbreviated), one version, dist-tags, tarballs,
//! search, the GETs only upstream can answer (signing keys, attestations of mirrored
//! packages), and sluice's own status, status page and metrics.

use serde_json::json;
use sluice_plugin_api::NpmRequest;

use super::{Answer, Call};
use crate::config::Read;
use crate::core::Error;
use crate::route::CORGI;

/// Answer a read.
pub async fn handle(call: &Call<'_>) -> Result<Answer, Error> {
    let app = call.app;
    match call.request {
        NpmRequest::Packument { name, abbreviated } => {
            let (rendered, cache) = app.renders.packument(name, *abbreviated, call.gzip).await?;
            let (content_type, served) = if *abbreviated {
                (CORGI, &app.metrics.abbreviated_packuments)
            } else {
                ("application/json", &app.metrics.full_packuments)
            };
            served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Answer::rendered(rendered, content_type, call.gzip)
                .with_vary()
                .from_cache(cache))
        }
        NpmRequest::Version { name, spec } => {
            let (version, cache) = app.renders.version(name, spec).await?;
            Ok(Answer::json(200, &version).from_cache(cache))
        }
        NpmRequest::DistTags { name } => {
            let (tags, cache) = app.renders.dist_tags(name).await?;
            Ok(Answer::json(200, &tags).from_cache(cache))
        }
        NpmRequest::Tarball { name, file } => {
            let (served, cache) = app.tarballs.serve(name, file, call.files).await?;
            Ok(Answer::tarball(served).from_cache(cache))
        }
        NpmRequest::Search(query) => Ok(Answer::json(200, &search(call, query).await)),
        NpmRequest::Passthrough { path, .. } => relay(call, path).await,
        NpmRequest::Visibility { name } => Err(Error::NotFound(format!(
            "{name} is not published here: its visibility is upstream's"
        ))),
        _ => observe(call).await,
    }
}

/// sluice's own answers: ping, status, the status page and metrics.
async fn observe(call: &Call<'_>) -> Result<Answer, Error> {
    let app = call.app;
    match call.request {
        NpmRequest::Ping => Ok(Answer::json(200, &json!({}))),
        NpmRequest::Status => Ok(Answer::json(
            200,
            &crate::observe::status::status(&app.metrics, &app.snapshot().await),
        )),
        NpmRequest::StatusPage => Ok(Answer::text(
            "text/html; charset=utf-8",
            crate::observe::metrics::page(&app.metrics, &app.snapshot().await),
        )),
        NpmRequest::Metrics => Ok(Answer::text(
            "text/plain; version=0.0.4",
            crate::observe::metrics::render(&app.metrics, &app.snapshot().await),
        )),
        _ => Err(Error::Internal(
            "a request reached the read dispatch that is not a read".into(),
        )),
    }
}

/// Relay a GET only upstream can answer (signing keys, attestations of mirrored packages),
/// kept for a while when it succeeds.
async fn relay(call: &Call<'_>, path: &str) -> Result<Answer, Error> {
    let app = call.app;
    if let Some((status, content_type, body)) = app.relayed.get(path).await {
        return Ok(Answer::relayed(status, content_type, body));
    }
    let (status, content_type, body) = app
        .upstream
        .relay(reqwest::Method::GET, path, None, None, None)
        .await
        .map_err(|e| Error::Unavailable(format!("the upstream registry cannot be reached: {e}")))?;
    if status == 200 {
        app.relayed
            .insert(
                path.to_string(),
                (status, content_type.clone(), body.clone()),
            )
            .await;
    }
    Ok(Answer::relayed(status, content_type, body))
}

/// `GET /-/v1/search` (and the console's search): the index, with the policy applied to the
/// hits for this caller.
pub async fn search(call: &Call<'_>, query: &sluice_plugin_api::SearchQuery) -> serde_json::Value {
    let app = call.app;
    let sources = crate::core::search::Sources {
        index: &app.search,
        packuments: &app.packuments,
        renders: &app.renders,
        host: &app.host,
        private: &app.private,
    };
    // Private packages are listed to whoever may read them: every caller an anonymous
    // registry lets in, a user on an authenticated one.
    let may_read_private = call.who.is_some() || app.config.auth.read == Read::Anonymous;
    crate::core::search::search(&sources, query, may_read_private).await
}
