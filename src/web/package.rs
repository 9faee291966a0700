//! A package's page: README, versions with dates, dist-tags, dependencies, maintainers, the
//! install lines, and for every version the policy hides, why.

use std::time::SystemTime;

use askama::Template;
use serde_json::Value;
use sluice_plugin_api::name::check_name;
use sluice_plugin_api::{Ctx, Packument};

use super::forms::package_href;
use super::pages::Layout;
use super::{html, readme, Visit};
use crate::api::Answer;
use crate::core::{parse_document, Error};

/// An install command.
pub struct Install {
    client: &'static str,
    command: String,
}

/// A dependency of the latest version.
pub struct Dependency {
    name: String,
    href: String,
    spec: String,
}

/// A version's row.
pub struct Row {
    version: String,
    date: String,
    size: String,
    integrity: String,
    deprecated: Option<String>,
    /// Why the policy does not serve it.
    hidden: Option<String>,
}

/// The package page.
#[derive(Template)]
#[template(path = "package.html")]
pub struct PackagePage {
    layout: Layout,
    name: String,
    private: bool,
    refusal: Option<String>,
    latest: Option<String>,
    description: String,
    deprecated: Option<String>,
    installs: Vec<Install>,
    readme: String,
    tags: Vec<(String, String)>,
    dependencies: Vec<Dependency>,
    maintainers: Vec<String>,
    versions: Vec<Row>,
}

fn text(value: Option<&Value>) -> String {
    value.and_then(Value::as_str).unwrap_or("").to_string()
}

/// `1234567` as `1.2 MB`.
fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => "—".to_string(),
        Some(b) if b < 1_000 => format!("{b} B"),
        Some(b) if b < 1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        Some(b) => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// `/-/ui/package/<name>`.
pub async fn page(visit: &Visit<'_>, name: &str) -> Result<Answer, Error> {
    check_name(name).map_err(|why| Error::Client(format!("invalid package name: {why}")))?;
    let app = visit.call.app;
    let private = app.private.contains(name);
    let mut page = PackagePage {
        layout: visit.layout(name),
        name: name.to_string(),
        private,
        refusal: None,
        latest: None,
        description: String::new(),
        deprecated: None,
        installs: Vec::new(),
        readme: String::new(),
        tags: Vec::new(),
        dependencies: Vec::new(),
        maintainers: Vec::new(),
        versions: Vec::new(),
    };
    // The same admission npm's requests pass: a refused package is not fetched for a page.
    if !private {
        if let Some(refused) = app.host.admit(name, &mut Ctx::new(0))? {
            page.refusal = Some(refused.message);
            return html(403, &page);
        }
    }
    let staged = if private {
        app.publisher.staged_versions(name).await?
    } else {
        Vec::new()
    };
    let (doc, _) = match app.packuments.get(name).await {
        Ok(found) => found,
        // Only staged so far: the page says so rather than 404.
        Err(Error::NotFound(_)) if !staged.is_empty() => {
            page.versions = staged_rows(staged);
            return html(200, &page);
        }
        Err(error) => return Err(error),
    };
    let parsed = parse_document(&doc.bytes, name)?;
    let hidden = app.host.hidden(&parsed, SystemTime::now())?;
    fill(&mut page, &parsed, |version| {
        hidden.reasons.get(version).cloned()
    });
    let mut waiting = staged_rows(staged);
    waiting.append(&mut page.versions);
    page.versions = waiting;
    html(200, &page)
}

/// Rows for staged versions: not served until a maintainer approves them.
fn staged_rows(staged: Vec<(String, String, String)>) -> Vec<Row> {
    staged
        .into_iter()
        .rev()
        .map(|(version, at, by)| Row {
            version,
            date: at,
            size: "—".to_string(),
            integrity: "—".to_string(),
            deprecated: None,
            hidden: Some(format!(
                "staged by {by} and not approved yet (a maintainer approves it with \
                 `npm stage approve`)"
            )),
        })
        .collect()
}

/// Fill `page` from the document as upstream (or the publisher) wrote it; `why_hidden` says
/// why the policy does not serve a version.
fn fill(page: &mut PackagePage, doc: &Packument, why_hidden: impl Fn(&str) -> Option<String>) {
    let name = page.name.clone();
    let versions = doc.versions().cloned().unwrap_or_default();
    let mut tags: Vec<(String, String)> = doc
        .dist_tags()
        .map(|t| {
            t.iter()
                .map(|(tag, v)| (tag.clone(), text(Some(v))))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    // The latest version the policy serves: what `npm install` gets.
    let latest = tags
        .iter()
        .find(|(tag, _)| tag == "latest")
        .map(|(_, v)| v.clone())
        .filter(|v| why_hidden(v).is_none())
        .or_else(|| {
            // As served, `latest` moves to the highest release the policy serves.
            versions
                .keys()
                .filter(|v| why_hidden(v).is_none())
                .filter_map(|v| nodejs_semver::Version::parse(v).ok())
                .filter(|v| v.pre_release.is_empty())
                .max()
                .map(|v| v.to_string())
        });
    let manifest = latest.as_ref().and_then(|v| versions.get(v));
    if let Some(manifest) = manifest {
        page.description = text(manifest.get("description"));
        page.deprecated = manifest
            .get("deprecated")
            .and_then(Value::as_str)
            .map(str::to_string);
        page.dependencies = dependencies(manifest);
    }
    if page.description.is_empty() {
        page.description = text(doc.doc.get("description"));
    }
    let readme = doc
        .doc
        .get("readme")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .or_else(|| {
            manifest
                .and_then(|m| m.get("readme"))
                .and_then(Value::as_str)
        })
        .unwrap_or("");
    page.readme = readme::render(readme);
    page.installs = vec![
        Install {
            client: "npm",
            command: format!("npm install {name}"),
        },
        Install {
            client: "pnpm",
            command: format!("pnpm add {name}"),
        },
        Install {
            client: "yarn",
            command: format!("yarn add {name}"),
        },
        Install {
            client: "bun",
            command: format!("bun add {name}"),
        },
    ];
    page.maintainers = doc
        .doc
        .get("maintainers")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(person).collect())
        .unwrap_or_default();
    page.versions = rows(doc, &versions, why_hidden);
    page.tags = tags;
    page.latest = latest;
}

/// A maintainer as `name <email>`.
fn person(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => {
            let name = o.get("name").and_then(Value::as_str)?;
            Some(match o.get("email").and_then(Value::as_str) {
                Some(email) => format!("{name} <{email}>"),
                None => name.to_string(),
            })
        }
        _ => None,
    }
}

fn dependencies(manifest: &Value) -> Vec<Dependency> {
    let mut list: Vec<Dependency> = manifest
        .get("dependencies")
        .and_then(Value::as_object)
        .map(|deps| {
            deps.iter()
                .map(|(dep, spec)| Dependency {
                    href: package_href(dep),
                    name: dep.clone(),
                    spec: text(Some(spec)),
                })
                .collect()
        })
        .unwrap_or_default();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

/// Every version, newest first.
fn rows(
    doc: &Packument,
    versions: &serde_json::Map<String, Value>,
    why_hidden: impl Fn(&str) -> Option<String>,
) -> Vec<Row> {
    let mut rows: Vec<(Option<nodejs_semver::Version>, Row)> = versions
        .iter()
        .map(|(version, manifest)| {
            let dist = manifest.get("dist");
            let row = Row {
                version: version.clone(),
                date: doc.published(version).unwrap_or("—").to_string(),
                size: size(
                    dist.and_then(|d| d.get("unpackedSize"))
                        .and_then(Value::as_u64),
                ),
                integrity: dist
                    .and_then(|d| d.get("integrity").or_else(|| d.get("shasum")))
                    .and_then(Value::as_str)
                    .unwrap_or("—")
                    .to_string(),
                deprecated: manifest
                    .get("deprecated")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                hidden: why_hidden(version),
            };
            (nodejs_semver::Version::parse(version).ok(), row)
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0));
    rows.into_iter().map(|(_, row)| row).collect()
}
