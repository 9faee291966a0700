//! The local search index: `GET /-/v1/search` answered from the packuments sluice holds.

use serde_json::{json, Value};
use sluice_plugin_api::SearchQuery;

use super::renders::{Filtered, Renders};
use super::PrivateNames;
use crate::plugins::Host;
use crate::store::{all_names, Store};

/// `GET /-/v1/search`: packages sluice holds whose name, description or keywords match.
pub async fn search(
    store: &dyn Store,
    host: &Host,
    renders: &Renders,
    private: &PrivateNames,
    query: &SearchQuery,
) -> Value {
    let words: Vec<String> = query
        .text
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let names = all_names(store).await.unwrap_or_default();
    let mut objects = Vec::new();
    let mut skipped = 0;
    let mut total = 0;
    for name in names {
        if !host.admits(&name) && !private.contains(&name) {
            continue;
        }
        let Ok(Some(stored)) = store.packument(&name).await else {
            continue;
        };
        let Ok(Filtered { doc, .. }) = renders.filtered(&name, &stored.into()) else {
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
