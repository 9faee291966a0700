//! `sluice add-package`: resolve specs with npm's semver rules, walk the dependency closure,
//! and mirror packuments and tarballs.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use nodejs_semver::{Range, Version};
use serde_json::Value;
use sluice_plugin_api::Packument;

use crate::app::App;
use crate::core::renders::Filtered;
use crate::core::Error;
use crate::packument;

/// What a spec on the command line or in a dependency asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Want {
    /// The package name.
    pub name: String,
    /// A range, a version or a dist-tag (`latest` when none was given).
    pub spec: String,
}

/// Parse `name`, `name@range`, `@scope/name@tag` (and `alias@npm:name@range`) into a [`Want`].
pub fn parse_spec(text: &str) -> Result<Want, String> {
    let (name, spec) = match text.strip_prefix('@') {
        Some(rest) => match rest.split_once('@') {
            Some((name, spec)) => (format!("@{name}"), spec.to_string()),
            None => (text.to_string(), String::new()),
        },
        None => match text.split_once('@') {
            Some((name, spec)) => (name.to_string(), spec.to_string()),
            None => (text.to_string(), String::new()),
        },
    };
    if let Some(target) = spec.strip_prefix("npm:") {
        return parse_spec(target);
    }
    sluice_plugin_api::name::check_name(&name)?;
    let spec = if spec.trim().is_empty() {
        "latest".to_string()
    } else {
        spec
    };
    Ok(Want { name, spec })
}

/// A dependency `name: spec` as the closure follows it: `None` for specs that are not on
/// a registry (git, URLs, files, workspaces), which are skipped.
pub fn dependency(name: &str, spec: &str) -> Option<Want> {
    let spec = spec.trim();
    if let Some(target) = spec.strip_prefix("npm:") {
        return parse_spec(target).ok();
    }
    let remote = spec.contains("://")
        || [
            "git+",
            "git:",
            "github:",
            "gitlab:",
            "bitbucket:",
            "gist:",
            "file:",
            "link:",
            "workspace:",
            "portal:",
            "patch:",
        ]
        .iter()
        .any(|p| spec.starts_with(p))
        || (spec.contains('/') && !spec.starts_with('@'))
        || spec.ends_with(".tgz")
        || spec.ends_with(".tar.gz");
    if remote {
        return None;
    }
    Some(Want {
        name: name.to_string(),
        spec: if spec.is_empty() {
            "*".into()
        } else {
            spec.to_string()
        },
    })
}

/// The versions of `doc` that `spec` selects, as npm picks them: a dist-tag's version; else
/// the `latest` tag's version when it satisfies the range; else the highest satisfying one.
pub fn select(doc: &Packument, spec: &str) -> Option<String> {
    let versions = doc.versions()?;
    let tags = doc.dist_tags();
    if let Some(tagged) = tags.and_then(|t| t.get(spec)).and_then(Value::as_str) {
        return versions.contains_key(tagged).then(|| tagged.to_string());
    }
    if versions.contains_key(spec) {
        return Some(spec.to_string());
    }
    let range = Range::parse(spec).ok()?;
    if let Some(latest) = tags.and_then(|t| t.get("latest")).and_then(Value::as_str) {
        if let Ok(parsed) = Version::parse(latest) {
            if range.satisfies(&parsed) && versions.contains_key(latest) {
                return Some(latest.to_string());
            }
        }
    }
    versions
        .keys()
        .filter_map(|v| Version::parse(v).ok().map(|p| (p, v)))
        .filter(|(p, _)| range.satisfies(p))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v.clone())
}

/// The dependencies a version brings into the closure: `dependencies`,
/// `optionalDependencies` (all platforms) and `peerDependencies`.
pub fn dependencies_of(manifest: &Value) -> Vec<Want> {
    let mut out = Vec::new();
    for field in ["dependencies", "optionalDependencies", "peerDependencies"] {
        let Some(deps) = manifest.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (name, spec) in deps {
            let spec = spec.as_str().unwrap_or("*");
            match dependency(name, spec) {
                Some(want) => out.push(want),
                None => tracing::warn!(
                    dependency = %name,
                    spec,
                    "not a registry dependency (git, URL, file or workspace): skipped"
                ),
            }
        }
    }
    out
}

/// The versions selected from one package: (version, manifest).
type Selected = Vec<(String, Value)>;

/// Options of `add-package`.
#[derive(Debug, Clone)]
pub struct AddOptions {
    /// Follow every version's dependencies, not only the selected version's.
    pub all_versions: bool,
    /// Upstream requests at once.
    pub concurrency: usize,
    /// Show progress bars (on a terminal).
    pub progress: bool,
}

/// What `add-package` did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Every package name in the closure.
    pub names: BTreeSet<String>,
    /// Names that were not on the whitelist before.
    pub added: Vec<String>,
    /// Versions selected (name@version).
    pub versions: usize,
    /// Tarballs now in the store for the selected versions.
    pub tarballs: usize,
    /// Bytes of those tarballs.
    pub bytes: u64,
    /// Failures (a package or tarball that could not be mirrored).
    pub failures: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Resolve `wants` and their dependency closure, mirror packuments and tarballs, and add
/// every name to the whitelist.
pub async fn add_packages(app: &Arc<App>, wants: Vec<Want>, options: &AddOptions) -> Summary {
    let started = Instant::now();
    let bar = if options.progress {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    let bytes = Arc::new(AtomicU64::new(0));
    let tarballs = Arc::new(AtomicU64::new(0));
    let mut summary = Summary::default();
    let mut seen: HashSet<Want> = HashSet::new();
    let mut frontier: Vec<Want> = wants
        .into_iter()
        .filter(|w| seen.insert(w.clone()))
        .collect();
    let mut mirrored: HashSet<(String, String)> = HashSet::new();
    let mut selected: HashSet<String> = HashSet::new();
    while !frontier.is_empty() {
        let results: Vec<(Want, Result<Selected, Error>)> =
            futures::stream::iter(frontier.drain(..))
                .map(|want| {
                    let app = app.clone();
                    let all = options.all_versions;
                    async move {
                        let result = resolve(&app, &want, all).await;
                        (want, result)
                    }
                })
                .buffer_unordered(options.concurrency)
                .collect()
                .await;
        let mut jobs = Vec::new();
        for (want, result) in results {
            match result {
                Ok(versions) => {
                    summary.names.insert(want.name.clone());
                    for (version, manifest) in versions {
                        if !selected.insert(format!("{}@{version}", want.name)) {
                            continue;
                        }
                        for dep in dependencies_of(&manifest) {
                            if seen.insert(dep.clone()) {
                                frontier.push(dep);
                            }
                        }
                        if let Some(file) = Packument::tarball_file(&manifest) {
                            if mirrored.insert((want.name.clone(), file.to_string())) {
                                jobs.push((want.name.clone(), file.to_string()));
                            }
                        }
                    }
                }
                Err(error) => summary
                    .failures
                    .push(format!("{}@{}: {error}", want.name, want.spec)),
            }
        }
        let failures: Vec<String> = futures::stream::iter(jobs)
            .map(|(name, file)| {
                let app = app.clone();
                let bytes = bytes.clone();
                let tarballs = tarballs.clone();
                async move {
                    match app.tarballs.ensure_stored(&name, &file).await {
                        Ok(size) => {
                            bytes.fetch_add(size, Ordering::Relaxed);
                            tarballs.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Err(error) => Some(format!("{name}/-/{file}: {error}")),
                    }
                }
            })
            .buffer_unordered(options.concurrency)
            .filter_map(|f| async move { f })
            .collect()
            .await;
        summary.failures.extend(failures);
        bar.set_message(format!(
            "{} packages resolved, {} tarballs, {:.1} MB",
            summary.names.len(),
            tarballs.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed) as f64 / 1e6
        ));
    }
    bar.finish_and_clear();
    summary.versions = selected.len();
    summary.tarballs = tarballs.load(Ordering::Relaxed) as usize;
    summary.bytes = bytes.load(Ordering::Relaxed);
    let names: Vec<String> = summary.names.iter().cloned().collect();
    list_names(app, names, &mut summary).await;
    // What this run stored reaches the other nodes of a fleet now, not at a sync it will not
    // live to see.
    app.sync_fleet().await;
    summary.elapsed = started.elapsed();
    summary
}

/// Put `names` on the whitelist (in a fleet, on its shared list), noting what was added.
async fn list_names(app: &Arc<App>, names: Vec<String>, summary: &mut Summary) {
    if let Some(list) = app.whitelist() {
        let added = match &app.fleet {
            // A fleet's additions go to the shared list every node reads.
            Some(fleet) => {
                let listed: Vec<String> =
                    names.iter().filter(|n| list.allows(n)).cloned().collect();
                let wanted: Vec<String> =
                    names.into_iter().filter(|n| !listed.contains(n)).collect();
                fleet
                    .add_to_whitelist(&wanted)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => list.add(&names).map_err(|e| e.to_string()),
        };
        match added {
            Ok(added) => summary.added = added,
            Err(error) => summary.failures.push(error),
        }
    }
}

/// `add-package --lockfile`: mirror exactly the versions `locked` names (packuments and
/// tarballs), each tarball verified against the integrity the registry publishes, and that
/// against the lockfile's own where it records one; put the names on the whitelist.
pub async fn add_locked(
    app: &Arc<App>,
    locked: Vec<crate::jobs::lockfile::read::Locked>,
    options: &AddOptions,
) -> Summary {
    use std::collections::BTreeMap;
    let started = Instant::now();
    let bar = if options.progress {
        let bar = ProgressBar::new(locked.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} locked versions {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut by_name: BTreeMap<String, Vec<crate::jobs::lockfile::read::Locked>> = BTreeMap::new();
    for entry in locked {
        by_name.entry(entry.name.clone()).or_default().push(entry);
    }
    let bytes = AtomicU64::new(0);
    let tarballs = AtomicU64::new(0);
    let results: Vec<(String, usize, Vec<String>)> = futures::stream::iter(by_name)
        .map(|(name, versions)| {
            let (app, bytes, tarballs, bar) = (app.clone(), &bytes, &tarballs, &bar);
            async move {
                let mut failures = Vec::new();
                let (doc, _) = app.packuments.fetch(&name).await;
                let doc = match doc.and_then(|d| crate::core::parse_document(&d.bytes, &name)) {
                    Ok(doc) => doc,
                    Err(error) => {
                        bar.inc(versions.len() as u64);
                        return (name, 0, vec![format!("{}: {error}", versions[0].name)]);
                    }
                };
                let mut done = 0;
                for entry in &versions {
                    bar.inc(1);
                    let what = format!("{}@{}", entry.name, entry.version);
                    let Some(manifest) = packument::manifest(&doc, &entry.version) else {
                        failures.push(format!("{what}: the registry has no such version"));
                        continue;
                    };
                    let published = crate::core::published_integrity(manifest);
                    if let (Some(published), Some(false)) = (
                        published.as_ref(),
                        published
                            .as_ref()
                            .and_then(|p| crate::jobs::lockfile::read::matches(entry, p)),
                    ) {
                        failures.push(format!(
                            "{what}: the lockfile's integrity {} is not the registry's {published}",
                            entry.integrity.as_deref().unwrap_or("")
                        ));
                        continue;
                    }
                    let Some(file) = Packument::tarball_file(manifest) else {
                        failures.push(format!("{what}: no tarball"));
                        continue;
                    };
                    match app.tarballs.ensure_stored(&name, file).await {
                        Ok(size) => {
                            bytes.fetch_add(size, Ordering::Relaxed);
                            tarballs.fetch_add(1, Ordering::Relaxed);
                            done += 1;
                        }
                        Err(error) => failures.push(format!("{name}/-/{file}: {error}")),
                    }
                }
                (name, done, failures)
            }
        })
        .buffer_unordered(options.concurrency)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut summary = Summary::default();
    for (name, done, failures) in results {
        summary.versions += done;
        summary.names.insert(name);
        summary.failures.extend(failures);
    }
    summary.tarballs = tarballs.load(Ordering::Relaxed) as usize;
    summary.bytes = bytes.load(Ordering::Relaxed);
    let names: Vec<String> = summary.names.iter().cloned().collect();
    list_names(app, names, &mut summary).await;
    app.sync_fleet().await;
    summary.elapsed = started.elapsed();
    summary
}

/// Fetch `want`'s packument from upstream (stored) and return the selected versions.
async fn resolve(app: &Arc<App>, want: &Want, all_versions: bool) -> Result<Selected, Error> {
    let (stored, _) = app.packuments.fetch(&want.name).await;
    let Filtered { doc, .. } = app.renders.filtered(&want.name, &stored?)?;
    if all_versions {
        return Ok(doc
            .versions()
            .map(|v| v.iter().map(|(k, m)| (k.clone(), m.clone())).collect())
            .unwrap_or_default());
    }
    let version = select(&doc, &want.spec).ok_or_else(|| {
        Error::NotFound(format!(
            "no version of {} matches `{}`",
            want.name, want.spec
        ))
    })?;
    let manifest = packument::manifest(&doc, &version)
        .cloned()
        .unwrap_or(Value::Null);
    Ok(vec![(version, manifest)])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn doc() -> Packument {
        let versions: serde_json::Map<String, Value> = [
            "1.0.0",
            "1.2.3",
            "1.3.0-beta.1",
            "2.0.0",
            "2.1.0",
            "3.0.0-rc.1",
        ]
        .iter()
        .map(|v| ((*v).to_string(), json!({"version": v})))
        .collect();
        Packument::new(
            json!({"name": "p", "dist-tags": {"latest": "2.0.0", "next": "3.0.0-rc.1"}, "versions": versions})
                .as_object()
                .unwrap()
                .clone(),
        )
    }

    #[test]
    fn selection_follows_npm() {
        let d = doc();
        let cases = [
            ("latest", Some("2.0.0")),
            ("next", Some("3.0.0-rc.1")),
            ("*", Some("2.0.0")), // latest wins when it satisfies
            ("^2", Some("2.0.0")),
            (">2.0.0", Some("2.1.0")),
            ("^1", Some("1.2.3")), // prereleases are not picked by plain ranges
            ("1.x", Some("1.2.3")),
            ("1.0.0 - 1.2.5", Some("1.2.3")),
            ("^1.3.0-beta.0", Some("1.3.0-beta.1")),
            ("<1.0.0 || >=2.1.0", Some("2.1.0")),
            ("1.2.3", Some("1.2.3")),
            ("^4", None),
        ];
        for (spec, expected) in cases {
            assert_eq!(select(&d, spec).as_deref(), expected, "{spec}");
        }
    }

    #[test]
    fn specs_and_dependencies_parse() {
        assert_eq!(
            parse_spec("react@^18").unwrap(),
            Want {
                name: "react".into(),
                spec: "^18".into()
            }
        );
        assert_eq!(
            parse_spec("@types/node@20").unwrap(),
            Want {
                name: "@types/node".into(),
                spec: "20".into()
            }
        );
        assert_eq!(parse_spec("@types/node").unwrap().spec, "latest");
        assert_eq!(
            parse_spec("x@npm:lodash@^4").unwrap(),
            Want {
                name: "lodash".into(),
                spec: "^4".into()
            }
        );
        assert!(parse_spec("../etc").is_err());
        assert_eq!(dependency("a", "npm:b@1").unwrap().name, "b");
        for skipped in [
            "git+https://x/y.git",
            "github:a/b",
            "a/b",
            "file:../x",
            "workspace:*",
            "https://x/y.tgz",
            "link:../a",
        ] {
            assert!(dependency("a", skipped).is_none(), "{skipped}");
        }
        assert_eq!(dependency("a", "").unwrap().spec, "*");
    }
}
