//! `GET /-/v1/search`: the index ([`crate::search`]) finds the packages, the policy decides
//! which of them this caller sees, and each one shown is described from its packument as
//! served (the versions plugins hide taken off), so no hidden version is ever named `latest`.

use std::sync::Arc;

use serde_json::{json, Value};
use sluice_plugin_api::SearchQuery;

use super::packuments::Packuments;
use super::renders::{Filtered, Renders};
use super::PrivateNames;
use crate::plugins::Host;
use crate::search::{Admit, Hit, SearchIndex};

/// What a search is answered from.
pub struct Sources<'a> {
    /// The index.
    pub index: &'a SearchIndex,
    /// The stored packuments.
    pub packuments: &'a Packuments,
    /// The served view of a packument.
    pub renders: &'a Renders,
    /// The plugins (a package they refuse is never shown).
    pub host: &'a Arc<Host>,
    /// The names published here.
    pub private: &'a Arc<PrivateNames>,
}

/// The policy for one caller: a package published here is shown when the caller may read
/// private packages; any other when the plugins admit it.
pub fn admit(host: &Arc<Host>, private: &Arc<PrivateNames>, may_read_private: bool) -> Admit {
    let (host, private) = (host.clone(), private.clone());
    Arc::new(move |name: &str| {
        if private.contains(name) {
            may_read_private
        } else {
            host.admits(name)
        }
    })
}

/// `GET /-/v1/search` in npm's shape: `objects` (`package`, `score`, `searchScore`), `total`,
/// `time`.
pub async fn search(sources: &Sources<'_>, query: &SearchQuery, may_read_private: bool) -> Value {
    let admit = admit(sources.host, sources.private, may_read_private);
    // What was written before this search is found by it (read your own publish).
    sources.index.catch_up().await;
    // Searches wait for their turn here, not on the cores packument and tarball answers need.
    let _turn = sources.index.turn().await;
    let found = sources
        .index
        .search(&query.text, query.from.saturating_add(query.size), admit)
        .await;
    let best = found
        .hits
        .first()
        .map_or(1.0, |hit| hit.score.max(f32::MIN_POSITIVE));
    let page: Vec<Hit> = found
        .hits
        .into_iter()
        .skip(query.from)
        .take(query.size)
        .collect();
    let objects: Vec<Value> = futures::future::join_all(
        page.iter()
            .map(|hit| object(sources, hit, f64::from(hit.score / best))),
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    json!({ "objects": objects, "total": found.total, "time": now() })
}

/// One result, described from the packument as served; `None` when it cannot be read or
/// every version is hidden.
async fn object(sources: &Sources<'_>, hit: &Hit, relative: f64) -> Option<Value> {
    let name = hit.name.as_str();
    let doc = match sources.packuments.stored(name).await {
        Ok(Some(doc)) => doc,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(package = name, %error, "search: packument not read, left out");
            return None;
        }
    };
    let Ok(Filtered { doc, .. }) = sources.renders.filtered(name, &doc) else {
        return None;
    };
    let version = doc
        .dist_tags()
        .and_then(|t| t.get("latest"))
        .and_then(Value::as_str)?
        .to_string();
    let latest = doc.versions().and_then(|vs| vs.get(&version))?;
    let description = latest
        .get("description")
        .or_else(|| doc.doc.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let keywords = latest
        .get("keywords")
        .or_else(|| doc.doc.get("keywords"))
        .cloned()
        .unwrap_or(json!([]));
    let links = links(latest);
    Some(json!({
        "package": {
            "name": name,
            "version": version,
            "description": description,
            "keywords": keywords,
            "date": doc.published(&version),
            "links": links,
            "publisher": latest.get("_npmUser").cloned().unwrap_or(Value::Null),
            "maintainers": doc.doc.get("maintainers").cloned().unwrap_or(json!([])),
        },
        "score": {
            "final": relative,
            "detail": {"quality": 1.0, "popularity": 1.0, "maintenance": 1.0},
        },
        "searchScore": hit.score,
    }))
}

/// The version's homepage, repository and bugs addresses, when it gives them.
fn links(version: &Value) -> Value {
    let mut links = serde_json::Map::new();
    let url = |v: &Value| {
        v.as_str()
            .or_else(|| v.get("url").and_then(Value::as_str))
            .map(str::to_string)
    };
    for (key, field) in [
        ("homepage", "homepage"),
        ("repository", "repository"),
        ("bugs", "bugs"),
    ] {
        if let Some(address) = version.get(field).and_then(url) {
            links.insert(key.into(), Value::String(address));
        }
    }
    Value::Object(links)
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
