//! What a lockfile locks: the registry packages (name, version, integrity when the lockfile
//! has one) of package-lock.json / npm-shrinkwrap.json (v1, v2, v3), yarn.lock (v1 and berry),
//! pnpm-lock.yaml (v6 to v9) and bun.lock (text). git, file, link, workspace and patch entries
//! are reported as skipped. YAML (pnpm, berry) is read with yaml-rust2, a maintained, pure-Rust
//! YAML 1.2 parser.

use std::path::{Path, PathBuf};

use serde_json::Value;
use ssri::Integrity;
use yaml_rust2::{Yaml, YamlLoader};

/// One locked registry package.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locked {
    /// The package name (the real one, not an alias).
    pub name: String,
    /// The exact version.
    pub version: String,
    /// The integrity the lockfile records (npm, yarn 1, pnpm, bun), if any.
    pub integrity: Option<String>,
}

/// A lockfile read.
#[derive(Debug, Default)]
pub struct Lockfile {
    /// The registry packages it locks.
    pub packages: Vec<Locked>,
    /// What was skipped (git, file, link, workspace, patch…), said for a person.
    pub skipped: Vec<String>,
}

/// The lockfile in `path`, or the one found in `path` when it is a folder.
pub fn find(path: &Path) -> Result<PathBuf, String> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    for name in [
        "npm-shrinkwrap.json",
        "package-lock.json",
        "pnpm-lock.yaml",
        "yarn.lock",
        "bun.lock",
    ] {
        let candidate = path.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "{}: no lockfile here (package-lock.json, npm-shrinkwrap.json, yarn.lock, pnpm-lock.yaml, bun.lock)",
        path.display()
    ))
}

/// Read the lockfile at `path`.
pub fn read(path: &Path) -> Result<Lockfile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let fail = |e: String| format!("{}: {e}", path.display());
    match file {
        f if f.ends_with(".json") => npm(&text).map_err(fail),
        f if f.ends_with(".yaml") || f.ends_with(".yml") => pnpm(&text).map_err(fail),
        "bun.lock" => bun(&text).map_err(fail),
        _ if text.contains("__metadata:") => berry(&text).map_err(fail),
        _ => Ok(yarn1(&text)),
    }
}

/// Whether `version` is an exact semver version (not a URL, path, tag…).
fn exact(version: &str) -> bool {
    nodejs_semver::Version::parse(version).is_ok()
}

impl Lockfile {
    fn add(&mut self, name: &str, version: &str, integrity: Option<&str>) {
        self.packages.push(Locked {
            name: name.to_string(),
            version: version.to_string(),
            integrity: integrity.map(str::to_string),
        });
    }

    fn skip(&mut self, what: impl Into<String>) {
        self.skipped.push(what.into());
    }

    fn done(mut self) -> Self {
        self.packages.sort();
        self.packages.dedup();
        self
    }
}

/// Whether a `resolved` value is not a registry tarball.
fn not_registry(resolved: &str) -> bool {
    !(resolved.starts_with("http://") || resolved.starts_with("https://"))
        || !resolved
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .ends_with(".tgz")
}

/// package-lock.json and npm-shrinkwrap.json, v1 (a `dependencies` tree) and v2/v3
/// (a `packages` map).
fn npm(text: &str) -> Result<Lockfile, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = Lockfile::default();
    if let Some(packages) = doc.get("packages").and_then(Value::as_object) {
        for (path, entry) in packages {
            if path.is_empty() {
                continue;
            }
            let name = entry
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| path.rsplit("node_modules/").next().map(str::to_string))
                .unwrap_or_default();
            let version = entry.get("version").and_then(Value::as_str).unwrap_or("");
            let resolved = entry.get("resolved").and_then(Value::as_str).unwrap_or("");
            if entry.get("link").and_then(Value::as_bool) == Some(true)
                || !path.contains("node_modules/")
            {
                out.skip(format!("{path}: a link or workspace"));
                continue;
            }
            if !exact(version) || (!resolved.is_empty() && not_registry(resolved)) {
                out.skip(format!(
                    "{name}: {}",
                    if resolved.is_empty() {
                        version
                    } else {
                        resolved
                    }
                ));
                continue;
            }
            out.add(
                &name,
                version,
                entry.get("integrity").and_then(Value::as_str),
            );
        }
        return Ok(out.done());
    }
    fn walk(deps: &serde_json::Map<String, Value>, out: &mut Lockfile) {
        for (name, entry) in deps {
            let version = entry.get("version").and_then(Value::as_str).unwrap_or("");
            let (name, version) = match version.strip_prefix("npm:") {
                Some(aliased) => match aliased.rsplit_once('@') {
                    Some((real, v)) if !real.is_empty() => (real.to_string(), v.to_string()),
                    _ => (name.clone(), version.to_string()),
                },
                None => (name.clone(), version.to_string()),
            };
            if exact(&version) {
                out.add(
                    &name,
                    &version,
                    entry.get("integrity").and_then(Value::as_str),
                );
            } else {
                out.skip(format!("{name}: {version}"));
            }
            if let Some(inner) = entry.get("dependencies").and_then(Value::as_object) {
                walk(inner, out);
            }
        }
    }
    if let Some(deps) = doc.get("dependencies").and_then(Value::as_object) {
        walk(deps, &mut out);
    }
    Ok(out.done())
}

/// Split `name@range` at the `@` that ends the name (a scope's own `@` is part of it).
fn split_at_range(spec: &str) -> (String, String) {
    match spec.get(1..).and_then(|s| s.find('@')).map(|i| i + 1) {
        Some(i) => (spec[..i].to_string(), spec[i + 1..].to_string()),
        None => (spec.to_string(), String::new()),
    }
}

/// The package name and range of a spec: `left@^1`, `"@s/a@1"`, and for an alias
/// (`al@npm:real@^1`) the real package's.
fn spec_name(spec: &str) -> (String, String) {
    let (name, range) = split_at_range(spec.trim().trim_matches('"'));
    match range.strip_prefix("npm:") {
        Some(real) if real.get(1..).is_some_and(|r| r.contains('@')) => split_at_range(real),
        _ => (name, range),
    }
}

/// yarn.lock v1.
fn yarn1(text: &str) -> Lockfile {
    let mut out = Lockfile::default();
    let mut name: Option<(String, String)> = None;
    let (mut version, mut resolved, mut integrity) =
        (None::<String>, None::<String>, None::<String>);
    let flush = |name: &mut Option<(String, String)>,
                 version: &mut Option<String>,
                 resolved: &mut Option<String>,
                 integrity: &mut Option<String>,
                 out: &mut Lockfile| {
        if let Some((n, range)) = name.take() {
            let v = version.take().unwrap_or_default();
            let r = resolved.take().unwrap_or_default();
            let skipped = range.starts_with("file:")
                || range.starts_with("link:")
                || (!r.is_empty() && not_registry(&r))
                || (r.is_empty() && !range.is_empty() && !range.starts_with("npm:") && !exact(&v));
            if skipped || !exact(&v) {
                out.skip(format!("{n}@{range}"));
            } else {
                out.add(&n, &v, integrity.as_deref());
            }
        }
        *integrity = None;
    };
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            flush(
                &mut name,
                &mut version,
                &mut resolved,
                &mut integrity,
                &mut out,
            );
            let first = line.trim_end_matches(':').split(", ").next().unwrap_or("");
            name = Some(spec_name(first));
            continue;
        }
        let trimmed = line.trim();
        let value = |key: &str| {
            trimmed
                .strip_prefix(key)
                .map(|v| v.trim().trim_matches('"').to_string())
        };
        if line.starts_with("  ") && !line.starts_with("    ") {
            if let Some(v) = value("version ") {
                version = Some(v);
            } else if let Some(v) = value("resolved ") {
                resolved = Some(v);
            } else if let Some(v) = value("integrity ") {
                integrity = Some(v);
            }
        }
    }
    flush(
        &mut name,
        &mut version,
        &mut resolved,
        &mut integrity,
        &mut out,
    );
    out.done()
}

fn yaml(text: &str) -> Result<Yaml, String> {
    YamlLoader::load_from_str(text)
        .map_err(|e| format!("not YAML: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| "empty".to_string())
}

/// yarn berry's yarn.lock: `resolution: "name@npm:1.2.3"`.
fn berry(text: &str) -> Result<Lockfile, String> {
    let doc = yaml(text)?;
    let mut out = Lockfile::default();
    for (key, entry) in doc.as_hash().into_iter().flatten() {
        let key = key.as_str().unwrap_or("");
        if key == "__metadata" {
            continue;
        }
        let resolution = entry["resolution"].as_str().unwrap_or("");
        let (name, rest) = spec_name(resolution);
        match rest.strip_prefix("npm:") {
            Some(version) if exact(version) => out.add(&name, version, None),
            _ => out.skip(resolution.to_string()),
        }
    }
    Ok(out.done())
}

/// pnpm-lock.yaml v6 to v9: `packages` keyed `/name@1.2.3` (v6) or `name@1.2.3` (v9), with
/// peer suffixes in parentheses.
fn pnpm(text: &str) -> Result<Lockfile, String> {
    let doc = yaml(text)?;
    let mut out = Lockfile::default();
    for (key, entry) in doc["packages"].as_hash().into_iter().flatten() {
        let key = key.as_str().unwrap_or("");
        let bare = key.trim_start_matches('/');
        let bare = bare.split('(').next().unwrap_or(bare);
        let (name, version) = match bare[1..].rfind('@').map(|i| i + 1) {
            Some(i) => (&bare[..i], &bare[i + 1..]),
            None => (bare, ""),
        };
        let resolution = &entry["resolution"];
        let not_registry = resolution["type"].as_str().is_some()
            || resolution["directory"].as_str().is_some()
            || resolution["repo"].as_str().is_some();
        if not_registry || !exact(version) {
            out.skip(key.to_string());
            continue;
        }
        out.add(name, version, resolution["integrity"].as_str());
    }
    Ok(out.done())
}

/// bun.lock (text, JSON with trailing commas): `"packages": {"key": ["name@1.2.3", url, {...},
/// "sha512-…"]}`.
fn bun(text: &str) -> Result<Lockfile, String> {
    // Trailing commas out, outside strings.
    let mut clean = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if in_string {
            clean.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        if c == ',' {
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some('}') | Some(']')) {
                continue;
            }
        }
        clean.push(c);
    }
    let doc: Value = serde_json::from_str(&clean).map_err(|e| format!("not bun.lock JSON: {e}"))?;
    let mut out = Lockfile::default();
    for (key, entry) in doc
        .get("packages")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Some(id) = entry.get(0).and_then(Value::as_str) else {
            continue;
        };
        let (name, version) = match id[1..].rfind('@').map(|i| i + 1) {
            Some(i) => (&id[..i], &id[i + 1..]),
            None => (id, ""),
        };
        if !exact(version) {
            out.skip(format!("{key}: {id}"));
            continue;
        }
        out.add(name, version, entry.get(3).and_then(Value::as_str));
    }
    Ok(out.done())
}

/// Whether `locked`'s recorded integrity matches `published` (the integrity the registry
/// publishes for that version): `None` when the lockfile records none to compare.
pub fn matches(locked: &Locked, published: &Integrity) -> Option<bool> {
    let recorded: Integrity = locked.integrity.as_deref()?.parse().ok()?;
    Some(
        recorded
            .hashes
            .iter()
            .any(|h| published.hashes.iter().any(|p| p == h)),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(lock: &Lockfile) -> Vec<String> {
        lock.packages
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect()
    }

    #[test]
    fn every_format_gives_the_locked_registry_packages() {
        let v3 = r#"{"lockfileVersion":3,"packages":{"":{"name":"app"},
            "node_modules/left":{"version":"1.1.0","resolved":"https://r.invalid/left/-/left-1.1.0.tgz","integrity":"sha512-a"},
            "node_modules/alias":{"name":"right","version":"2.0.0","resolved":"https://r.invalid/right/-/right-2.0.0.tgz"},
            "node_modules/@s/x":{"version":"0.1.0","resolved":"https://r.invalid/@s/x/-/x-0.1.0.tgz"},
            "node_modules/g":{"version":"1.0.0","resolved":"git+ssh://git@github.invalid/a/b.git#0"},
            "packages/w":{"version":"1.0.0"},
            "node_modules/w":{"resolved":"packages/w","link":true}}}"#;
        let lock = npm(v3).unwrap();
        assert_eq!(names(&lock), ["@s/x@0.1.0", "left@1.1.0", "right@2.0.0"]);
        assert_eq!(lock.skipped.len(), 3, "{:?}", lock.skipped);
        let v1 = r#"{"lockfileVersion":1,"dependencies":{"left":{"version":"1.1.0","integrity":"sha512-a",
            "dependencies":{"inner":{"version":"3.0.0"}}},"al":{"version":"npm:right@2.0.0"},"g":{"version":"git+https://x/y.git"}}}"#;
        assert_eq!(
            names(&npm(v1).unwrap()),
            ["inner@3.0.0", "left@1.1.0", "right@2.0.0"]
        );
        let y1 = "# yarn lockfile v1\n\n\"@s/x@^0.1\", \"@s/x@0.1.0\":\n  version \"0.1.0\"\n  resolved \"https://r.invalid/@s/x/-/x-0.1.0.tgz#ab\"\n  integrity sha512-b\n\nal@npm:right@^2:\n  version \"2.0.0\"\n  resolved \"https://r.invalid/right/-/right-2.0.0.tgz\"\n\ng@git+https://x/y.git:\n  version \"1.0.0\"\n  resolved \"git+https://x/y.git#abc\"\n\nloc@file:./loc:\n  version \"1.0.0\"\n";
        let lock = yarn1(y1);
        assert_eq!(names(&lock), ["@s/x@0.1.0", "right@2.0.0"]);
        assert_eq!(lock.packages[0].integrity.as_deref(), Some("sha512-b"));
        assert_eq!(lock.skipped.len(), 2, "{:?}", lock.skipped);
        let berry_text = "__metadata:\n  version: 8\n\n\"left@npm:^1.0.0\":\n  version: 1.1.0\n  resolution: \"left@npm:1.1.0\"\n  checksum: 10c0/abc\n\n\"@s/x@npm:0.1.0\":\n  version: 0.1.0\n  resolution: \"@s/x@npm:0.1.0\"\n\n\"app@workspace:.\":\n  version: 0.0.0-use.local\n  resolution: \"app@workspace:.\"\n";
        let lock = berry(berry_text).unwrap();
        assert_eq!(names(&lock), ["@s/x@0.1.0", "left@1.1.0"]);
        let pnpm9 = "lockfileVersion: '9.0'\n\npackages:\n\n  left@1.1.0:\n    resolution: {integrity: sha512-a}\n\n  '@s/x@0.1.0':\n    resolution: {integrity: sha512-c}\n    peerDependencies:\n      left: ^1\n\n  g@https://codeload.invalid/a/b/tar.gz/abc:\n    resolution: {tarball: https://codeload.invalid/a/b/tar.gz/abc}\n\nsnapshots:\n\n  '@s/x@0.1.0(left@1.1.0)':\n    dependencies:\n      left: 1.1.0\n";
        let lock = pnpm(pnpm9).unwrap();
        assert_eq!(names(&lock), ["@s/x@0.1.0", "left@1.1.0"]);
        let pnpm6 = "lockfileVersion: '6.0'\n\npackages:\n\n  /left@1.1.0:\n    resolution: {integrity: sha512-a}\n\n  /@s/x@0.1.0(left@1.1.0):\n    resolution: {integrity: sha512-c}\n";
        assert_eq!(names(&pnpm(pnpm6).unwrap()), ["@s/x@0.1.0", "left@1.1.0"]);
        let bun_text = "{\n  \"lockfileVersion\": 1,\n  \"packages\": {\n    \"left\": [\"left@1.1.0\", \"\", {}, \"sha512-a\"],\n    \"@s/x\": [\"@s/x@0.1.0\", \"\", {},  \"sha512-c\",],\n    \"w\": [\"w@workspace:packages/w\"],\n  },\n}\n";
        let lock = bun(bun_text).unwrap();
        assert_eq!(names(&lock), ["@s/x@0.1.0", "left@1.1.0"]);
        assert_eq!(lock.skipped.len(), 1);
    }
}
