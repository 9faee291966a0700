//! The typed pages: each struct is what one template shows, filled by its handler.

use std::time::{Duration, UNIX_EPOCH};

use askama::Template;
use serde_json::Value;
use sluice_plugin_api::SearchQuery;

use super::forms::{encode, package_href};
use super::{html, Visit};
use crate::api::Answer;
use crate::core::audit_log::Action;
use crate::core::{parse_document, Error};

/// What every page shows around its content.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The page's title.
    pub title: String,
    /// Who is logged in.
    pub user: Option<String>,
    /// Whether they administer the registry.
    pub admin: bool,
    /// The session's CSRF token (for the logout form).
    pub csrf: String,
    /// The search box's text.
    pub query: String,
    /// sluice's version.
    pub version: &'static str,
}

/// A page that only says something (an error, a login that went through).
#[derive(Template)]
#[template(path = "message.html")]
pub struct Message {
    /// The layout.
    pub layout: Layout,
    /// The page's heading.
    pub heading: String,
    /// What it says.
    pub message: String,
    /// Whether it reports a failure.
    pub alert: bool,
}

/// A package in a list.
pub struct Listed {
    /// Its name.
    pub name: String,
    /// Its console page.
    pub href: String,
    /// A version, when it matters.
    pub version: String,
    /// When (RFC 3339), when it matters.
    pub when: String,
}

/// The home page.
#[derive(Template)]
#[template(path = "home.html")]
pub struct Home {
    layout: Layout,
    packages: u64,
    private: usize,
    whitelist: Option<usize>,
    published: Vec<Listed>,
    mirrored: Vec<Listed>,
}

/// One search hit.
pub struct Hit {
    name: String,
    href: String,
    version: String,
    description: String,
}

/// A page of search results.
#[derive(Template)]
#[template(path = "search.html")]
pub struct Search {
    layout: Layout,
    query: String,
    total: usize,
    first: usize,
    last: usize,
    hits: Vec<Hit>,
    previous: Option<String>,
    next: Option<String>,
}

/// Results on one page.
const PAGE: usize = 20;

/// How many of the audit log's newest entries the home page looks through for publishes (eight
/// chunks at most: other entries, failed logins among them, cannot push every publish out of
/// reach cheaply).
const AUDIT_READ: usize = 2048;

/// How many recently published packages the home page shows.
const PUBLISHED_SHOWN: usize = 10;

/// Unix milliseconds as RFC 3339 (to the second).
pub fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The search the API answers `GET /-/v1/search` with.
async fn run_search(visit: &Visit<'_>, query: &SearchQuery) -> Value {
    crate::api::reads::search(visit.call, query).await
}

/// `/-/ui/`: the search box, counts, what was published and mirrored lately.
pub async fn home(visit: &Visit<'_>) -> Result<Answer, Error> {
    let app = visit.call.app;
    let snapshot = app.snapshot().await;
    // The index keeps its count: constant time at any size (a search with no words finds
    // nothing, and counting the store would walk it).
    let packages = app.search.status().documents;
    let published = recently_published(visit).await;
    let mirrored = app
        .recent
        .latest(30)
        .into_iter()
        .filter(|(name, _)| !app.private.contains(name))
        .take(10)
        .map(|(name, ms)| Listed {
            href: package_href(&name),
            name,
            version: String::new(),
            when: when(ms),
        })
        .collect();
    let page = Home {
        layout: visit.layout("Home"),
        packages,
        private: snapshot.private.len(),
        whitelist: snapshot.whitelist,
        published,
        mirrored,
    };
    html(200, &page)
}

/// The packages published (or approved) here lately, newest first: from the audit log's newest
/// entries (a few chunk reads, whatever the store holds), each still published here (its stored
/// document read, never upstream's: at most 3 × [`PUBLISHED_SHOWN`] reads).
async fn recently_published(visit: &Visit<'_>) -> Vec<Listed> {
    let app = visit.call.app;
    let entries = match app.audit.page(None, AUDIT_READ).await {
        Ok(page) => page.entries,
        Err(error) => {
            tracing::warn!(%error, "the home page cannot read the audit log");
            Vec::new()
        }
    };
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        if !matches!(entry.action, Action::Publish | Action::Approve) {
            continue;
        }
        // `name@version`; a scoped name has its own `@` first.
        let Some((name, _)) = entry
            .subject
            .rsplit_once('@')
            .filter(|(n, _)| !n.is_empty())
        else {
            continue;
        };
        // A name no longer published here (its scope taken off `[publish]`) would be read
        // from upstream: not listed.
        if names.iter().any(|n| n == name) || !app.private.contains(name) {
            continue;
        }
        names.push(name.to_string());
        // Room for some that were unpublished since.
        if names.len() == 3 * PUBLISHED_SHOWN {
            break;
        }
    }
    let mut published = Vec::new();
    for name in &names {
        if let Some(listed) = latest_published(visit, name).await {
            published.push(listed);
            if published.len() == PUBLISHED_SHOWN {
                break;
            }
        }
    }
    published
}

/// A private package's latest version and when it changed.
async fn latest_published(visit: &Visit<'_>, name: &str) -> Option<Listed> {
    let (doc, _) = visit.call.app.packuments.get(name).await.ok()?;
    let parsed = parse_document(&doc.bytes, name).ok()?;
    let version = parsed
        .dist_tags()
        .and_then(|t| t.get("latest"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let when = parsed
        .time()
        .and_then(|t| t.get("modified"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Some(Listed {
        href: package_href(name),
        name: name.to_string(),
        version,
        when,
    })
}

/// `/-/ui/search?q=…&page=…`: the API's search, paged.
pub async fn search(visit: &Visit<'_>) -> Result<Answer, Error> {
    let text = visit.query.text("q").to_string();
    let page: usize = visit
        .query
        .text("page")
        .parse()
        .unwrap_or(1)
        .clamp(1, 10_000);
    let query = SearchQuery {
        text: text.clone(),
        size: PAGE,
        from: (page - 1) * PAGE,
    };
    let found = run_search(visit, &query).await;
    let total = found["total"].as_u64().unwrap_or(0) as usize;
    let hits: Vec<Hit> = found["objects"]
        .as_array()
        .map(|objects| {
            objects
                .iter()
                .map(|o| {
                    let p = &o["package"];
                    let name = p["name"].as_str().unwrap_or("").to_string();
                    Hit {
                        href: package_href(&name),
                        name,
                        version: p["version"].as_str().unwrap_or("").to_string(),
                        description: p["description"].as_str().unwrap_or("").to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let link = |n: usize| format!("/-/ui/search?q={}&page={n}", encode(&text));
    let first = query.from + 1;
    let last = query.from + hits.len();
    let previous = (page > 1).then(|| link(page - 1));
    let next = (last < total).then(|| link(page + 1));
    let mut layout = visit.layout(format!("Search: {text}"));
    layout.query = text.clone();
    let page = Search {
        layout,
        query: text,
        total,
        first,
        last,
        previous,
        next,
        hits,
    };
    html(200, &page)
}
