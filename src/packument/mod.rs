//! Package documents: parse, merge (keep every version we held), repair invariants, rewrite
//! tarball links, abbreviate.

use nodejs_semver::Version;
use serde_json::{Map, Value};
pub use sluice_plugin_api::Packument;

/// A package document upstream sent that cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PackumentError {
    /// Not JSON, or not a JSON object.
    #[error("the package document is not a JSON object: {0}")]
    NotJson(String),
    /// The document names another package.
    #[error("the package document is for `{found}`, not `{expected}`")]
    WrongName {
        /// The name asked for.
        expected: String,
        /// The name in the document.
        found: String,
    },
}

/// Parse a package document and check it is the one for `name`.
pub fn parse(bytes: &[u8], name: &str) -> Result<Packument, PackumentError> {
    let doc: Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| PackumentError::NotJson(e.to_string()))?;
    let packument = Packument::new(doc);
    match packument.name() {
        Some(found) if found == name => {}
        found => {
            return Err(PackumentError::WrongName {
                expected: name.to_string(),
                found: found.unwrap_or("<none>").to_string(),
            })
        }
    }
    if packument
        .doc
        .get("versions")
        .is_some_and(|versions| !versions.is_object())
    {
        return Err(PackumentError::NotJson(
            "`versions` is not an object".into(),
        ));
    }
    Ok(packument)
}

/// Merge what we held into a fresh upstream document: every version (and its `time` entry)
/// that upstream no longer lists is kept. Returns the versions restored.
pub fn merge(fresh: &mut Packument, held: &Packument) -> Vec<String> {
    let mut restored = Vec::new();
    let Some(held_versions) = held.versions() else {
        return restored;
    };
    let missing: Vec<(String, Value)> = {
        let fresh_versions = fresh.versions();
        held_versions
            .iter()
            .filter(|(v, _)| !fresh_versions.is_some_and(|f| f.contains_key(v.as_str())))
            .map(|(v, m)| (v.clone(), m.clone()))
            .collect()
    };
    if missing.is_empty() {
        return restored;
    }
    let versions = fresh.versions_mut();
    for (version, manifest) in missing {
        versions.insert(version.clone(), manifest);
        restored.push(version);
    }
    if let Some(held_time) = held.time().cloned() {
        let time = fresh.time_mut();
        for (key, value) in held_time {
            time.entry(key).or_insert(value);
        }
    }
    repair(fresh);
    restored
}

/// Repair a document's invariants after versions were removed or restored: every dist-tag
/// points at a version the document has (the newest remaining version the tag would have
/// chosen, or the tag is dropped), and `time.modified` is not older than any version's time.
pub fn repair(packument: &mut Packument) {
    let versions: Vec<(Version, String)> = packument
        .versions()
        .map(|versions| {
            versions
                .keys()
                .filter_map(|v| Version::parse(v).ok().map(|parsed| (parsed, v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let has = |v: &str| packument.versions().is_some_and(|vs| vs.contains_key(v));
    let tags: Vec<(String, String)> = packument
        .dist_tags()
        .map(|tags| {
            tags.iter()
                .filter_map(|(tag, v)| v.as_str().map(|v| (tag.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let mut changes: Vec<(String, Option<String>)> = Vec::new();
    for (tag, target) in tags {
        if has(&target) {
            continue;
        }
        changes.push((tag.clone(), replacement(&tag, &target, &versions)));
    }
    if !changes.is_empty() {
        let dist_tags = packument.dist_tags_mut();
        for (tag, replacement) in changes {
            match replacement {
                Some(v) => {
                    dist_tags.insert(tag, Value::String(v));
                }
                None => {
                    dist_tags.shift_remove(&tag);
                }
            }
        }
    }
    // time.modified is at least the newest version's publish time.
    let newest = packument.time().and_then(|time| {
        time.iter()
            .filter(|(k, _)| k.as_str() != "modified" && k.as_str() != "created")
            .filter_map(|(_, v)| v.as_str())
            .max()
            .map(str::to_string)
    });
    if let Some(newest) = newest {
        let time = packument.time_mut();
        let stale = time
            .get("modified")
            .and_then(Value::as_str)
            .is_none_or(|m| m < newest.as_str());
        if stale {
            time.insert("modified".into(), Value::String(newest));
        }
    }
}

/// The version a tag pointing at missing `target` should point at instead: the newest remaining
/// version not newer than the target, with the same prerelease kind (a stable version for
/// `latest`, e.g. a `beta` for a tag that pointed at a beta).
fn replacement(tag: &str, target: &str, versions: &[(Version, String)]) -> Option<String> {
    let target = Version::parse(target).ok();
    let kind = |v: &Version| -> Option<String> { v.pre_release.first().map(|p| p.to_string()) };
    let wanted_kind = match (&target, tag) {
        (_, "latest") => None,
        (Some(t), _) => kind(t),
        (None, _) => None,
    };
    versions
        .iter()
        .filter(|(v, _)| target.as_ref().is_none_or(|t| v <= t))
        .filter(|(v, _)| kind(v) == wanted_kind)
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, raw)| raw.clone())
}

/// The tarball link sluice serves for `file` of package `name`.
pub fn tarball_url(public_url: &str, name: &str, file: &str) -> String {
    format!("{public_url}{name}/-/{file}")
}

/// Point every version's `dist.tarball` at sluice (`public_url`), keeping the file name.
pub fn rewrite(packument: &mut Packument, public_url: &str) {
    let Some(name) = packument.name().map(str::to_string) else {
        return;
    };
    for manifest in packument.versions_mut().values_mut() {
        rewrite_manifest(manifest, &name, public_url);
    }
}

/// Point one version manifest's `dist.tarball` at sluice.
pub fn rewrite_manifest(manifest: &mut Value, name: &str, public_url: &str) {
    let Some(file) = Packument::tarball_file(manifest).map(str::to_string) else {
        return;
    };
    if let Some(dist) = manifest.get_mut("dist").and_then(Value::as_object_mut) {
        dist.insert(
            "tarball".into(),
            Value::String(tarball_url(public_url, name, &file)),
        );
    }
}

/// Give a document without a top-level `readme` the `latest` version's, as the npm registry
/// shows it: npm ≥ 7 publishes the readme inside the version only.
pub fn lift_readme(packument: &mut Packument) {
    if packument.doc.contains_key("readme") {
        return;
    }
    let readme = packument
        .dist_tags()
        .and_then(|tags| tags.get("latest"))
        .and_then(Value::as_str)
        .and_then(|latest| packument.versions()?.get(latest))
        .and_then(|manifest| manifest.get("readme"))
        .cloned();
    if let Some(readme) = readme {
        packument.doc.insert("readme".into(), readme);
    }
}

/// The version fields the abbreviated ("corgi") document keeps, as npm's registry does.
const CORGI_VERSION_FIELDS: &[&str] = &[
    "name",
    "version",
    "deprecated",
    "dependencies",
    "optionalDependencies",
    "devDependencies",
    "bundleDependencies",
    "bundledDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "acceptDependencies",
    "bin",
    "directories",
    "dist",
    "engines",
    "_hasShrinkwrap",
    "hasInstallScript",
    "cpu",
    "os",
    "libc",
    "funding",
];

/// The abbreviated document npm asks for with `Accept: application/vnd.npm.install-v1+json`.
/// With `id`, it carries `_id` (the name) as upstream's abbreviated documents do; without, it
/// has none, the shape Verdaccio's conformance battery asks of packages published here.
pub fn abbreviate(packument: &Packument, id: bool) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(name) = packument.doc.get("name") {
        if id {
            out.insert("_id".into(), name.clone());
        }
        out.insert("name".into(), name.clone());
    }
    let modified = packument
        .time()
        .and_then(|t| t.get("modified"))
        .cloned()
        .or_else(|| packument.doc.get("modified").cloned());
    if let Some(modified) = modified {
        out.insert("modified".into(), modified);
    }
    if let Some(tags) = packument.doc.get("dist-tags") {
        out.insert("dist-tags".into(), tags.clone());
    }
    // As upstream's abbreviated documents do: pnpm's minimumReleaseAge (on by default since
    // pnpm 11) reads each version's publish time, and would fetch the full document without it.
    if let Some(time) = packument.time() {
        out.insert("time".into(), Value::Object(time.clone()));
    }
    let mut versions = Map::new();
    if let Some(full) = packument.versions() {
        for (version, manifest) in full {
            let Some(manifest) = manifest.as_object() else {
                continue;
            };
            let mut small = Map::new();
            for field in CORGI_VERSION_FIELDS {
                if let Some(value) = manifest.get(*field) {
                    small.insert((*field).to_string(), value.clone());
                }
            }
            if !small.contains_key("hasInstallScript") && has_install_script(manifest) {
                small.insert("hasInstallScript".into(), Value::Bool(true));
            }
            versions.insert(version.clone(), Value::Object(small));
        }
    }
    out.insert("versions".into(), Value::Object(versions));
    out
}

fn has_install_script(manifest: &Map<String, Value>) -> bool {
    manifest
        .get("scripts")
        .and_then(Value::as_object)
        .is_some_and(|scripts| {
            ["preinstall", "install", "postinstall"]
                .iter()
                .any(|s| scripts.contains_key(*s))
        })
}

/// The manifest of `spec` (a version or a dist-tag), if the document has it.
pub fn manifest<'a>(packument: &'a Packument, spec: &str) -> Option<&'a Value> {
    let versions = packument.versions()?;
    if let Some(manifest) = versions.get(spec) {
        return Some(manifest);
    }
    let target = packument.dist_tags()?.get(spec)?.as_str()?;
    versions.get(target)
}

/// Find the version whose tarball file is `file`; returns the manifest.
pub fn find_tarball<'a>(packument: &'a Packument, file: &str) -> Option<&'a Value> {
    packument
        .versions()?
        .values()
        .find(|manifest| Packument::tarball_file(manifest) == Some(file))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn doc(value: Value) -> Packument {
        Packument::new(value.as_object().unwrap().clone())
    }

    fn sample() -> Packument {
        doc(json!({
            "name": "@a/b",
            "dist-tags": {"latest": "1.1.0", "beta": "2.0.0-beta.1"},
            "versions": {
                "1.0.0": {"name": "@a/b", "version": "1.0.0", "readme": "long",
                          "scripts": {"postinstall": "x"},
                          "dist": {"tarball": "https://up.invalid/@a/b/-/b-1.0.0.tgz", "integrity": "sha512-x"}},
                "1.1.0": {"name": "@a/b", "version": "1.1.0", "dependencies": {"c": "^1"},
                          "dist": {"tarball": "https://up.invalid/@a/b/-/b-1.1.0.tgz", "shasum": "ab"}},
                "2.0.0-beta.1": {"name": "@a/b", "version": "2.0.0-beta.1",
                          "dist": {"tarball": "https://up.invalid/@a/b/-/b-2.0.0-beta.1.tgz"}}
            },
            "time": {"created": "2020-01-01T00:00:00.000Z", "modified": "2021-01-01T00:00:00.000Z",
                     "1.0.0": "2020-01-01T00:00:00.000Z", "1.1.0": "2020-06-01T00:00:00.000Z",
                     "2.0.0-beta.1": "2021-01-01T00:00:00.000Z"}
        }))
    }

    #[test]
    fn parse_refuses_other_packages_and_non_json() {
        let bytes = serde_json::to_vec(&sample().doc).unwrap();
        assert!(parse(&bytes, "@a/b").is_ok());
        assert!(matches!(
            parse(&bytes, "@a/c"),
            Err(PackumentError::WrongName { .. })
        ));
        assert!(matches!(
            parse(b"<html>", "@a/b"),
            Err(PackumentError::NotJson(_))
        ));
    }

    #[test]
    fn merge_keeps_versions_unpublished_upstream() {
        let held = sample();
        let mut fresh = sample();
        fresh.remove_version("1.1.0");
        fresh.time_mut().shift_remove("1.1.0");
        fresh
            .dist_tags_mut()
            .insert("latest".into(), json!("1.0.0"));
        let restored = merge(&mut fresh, &held);
        assert_eq!(restored, vec!["1.1.0".to_string()]);
        assert!(fresh.versions().unwrap().contains_key("1.1.0"));
        assert_eq!(fresh.published("1.1.0"), Some("2020-06-01T00:00:00.000Z"));
        assert_eq!(
            fresh.dist_tags().unwrap()["latest"],
            json!("1.0.0"),
            "tags follow upstream"
        );
    }

    #[test]
    fn repair_points_tags_at_remaining_versions() {
        let mut p = sample();
        p.remove_version("1.1.0");
        p.remove_version("2.0.0-beta.1");
        repair(&mut p);
        assert_eq!(p.dist_tags().unwrap()["latest"], json!("1.0.0"));
        assert!(!p.dist_tags().unwrap().contains_key("beta"));
    }

    #[test]
    fn rewrite_points_tarballs_at_public_url() {
        let mut p = sample();
        rewrite(&mut p, "http://sluice.corp:4870/");
        let url = p.versions().unwrap()["1.0.0"]["dist"]["tarball"].clone();
        assert_eq!(url, json!("http://sluice.corp:4870/@a/b/-/b-1.0.0.tgz"));
        assert_eq!(
            p.versions().unwrap()["1.0.0"]["dist"]["integrity"],
            json!("sha512-x")
        );
    }

    #[test]
    fn the_latest_readme_is_lifted_to_the_top() {
        let mut p = sample();
        p.versions_mut()["1.1.0"]["readme"] = json!("# b");
        lift_readme(&mut p);
        assert_eq!(p.doc["readme"], json!("# b"));
        p.doc.insert("readme".into(), json!("own"));
        lift_readme(&mut p);
        assert_eq!(p.doc["readme"], json!("own"));
    }

    #[test]
    fn abbreviate_keeps_install_fields_only() {
        let small = abbreviate(&sample(), false);
        assert_eq!(small["modified"], json!("2021-01-01T00:00:00.000Z"));
        let v = &small["versions"]["1.0.0"];
        assert!(v.get("readme").is_none());
        assert!(v.get("scripts").is_none());
        assert_eq!(v["hasInstallScript"], json!(true));
        assert_eq!(
            small["versions"]["1.1.0"]["dependencies"],
            json!({"c": "^1"})
        );
        assert_eq!(small["time"]["1.0.0"], sample().time().unwrap()["1.0.0"]);
        assert_eq!(small["time"]["modified"], small["modified"]);
        assert!(small.get("_id").is_none() && small.get("readme").is_none());
        let mirrored = abbreviate(&sample(), true);
        assert_eq!(mirrored["_id"], mirrored["name"]);
        assert_eq!(mirrored.keys().next().map(String::as_str), Some("_id"));
    }

    #[test]
    fn manifests_by_version_tag_and_tarball() {
        let p = sample();
        assert_eq!(manifest(&p, "latest").unwrap()["version"], json!("1.1.0"));
        assert_eq!(manifest(&p, "1.0.0").unwrap()["version"], json!("1.0.0"));
        assert!(manifest(&p, "9.9.9").is_none());
        assert_eq!(
            find_tarball(&p, "b-1.1.0.tgz").unwrap()["version"],
            json!("1.1.0")
        );
    }
}
