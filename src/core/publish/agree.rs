//! The manifest a publish lists must say what the tarball's own `package.json` does about
//! installing it: npm installs by the manifest but unpacks (and runs) the tarball. Both are
//! compared as npm normalizes them when it publishes (`@npmcli/package-json`), so an honest
//! client's publish agrees with itself.

use std::collections::BTreeMap;

use serde_json::Value;

use super::bad;
use super::tarball::Inside;
use crate::core::Error;

/// The install-relevant fields, in the order a difference is named.
const FIELDS: [&str; 7] = [
    "dependencies",
    "optionalDependencies",
    "peerDependencies",
    "bin",
    "os",
    "cpu",
    "libc",
];

/// The `manifest` of `name@version` agrees with the tarball's `inside`; else the first
/// difference, as a client error.
pub(super) fn check(manifest: &Value, inside: &Inside) -> Result<(), Error> {
    for field in FIELDS {
        let listed = normalized(manifest, field, &inside.files);
        let packed = normalized(&inside.json, field, &inside.files);
        if listed != packed {
            return Err(bad(format!(
                "the manifest's {field} ({}) is not the tarball's package.json's ({}): publish \
                 the manifest of what is packed",
                shown(&listed),
                shown(&packed)
            )));
        }
    }
    let listed = declares_install(manifest);
    let packed = declares_install(&inside.json) || builds_with_gyp(&inside.json, &inside.files);
    if listed != packed {
        return Err(bad(format!(
            "the tarball's package.json {} install scripts (preinstall, install, postinstall, \
             or a binding.gyp that npm builds with node-gyp) and the manifest {}",
            if packed { "has" } else { "has no" },
            if listed { "has" } else { "has none" }
        )));
    }
    Ok(())
}

fn object(map: BTreeMap<String, String>) -> Value {
    Value::Object(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
}

fn shown(value: &Option<Value>) -> String {
    value.as_ref().map_or("none".into(), Value::to_string)
}

/// `field` of `pkg` as npm publishes it; `None` when absent or empty.
fn normalized(pkg: &Value, field: &str, files: &[String]) -> Option<Value> {
    match field {
        "bin" => bin(pkg, files).map(object),
        "os" | "cpu" | "libc" => {
            let mut list: Vec<String> = match pkg.get(field) {
                Some(Value::String(one)) => vec![one.clone()],
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            };
            list.sort();
            list.dedup();
            (!list.is_empty()).then(|| Value::from(list))
        }
        _ => {
            let deps = dependencies(pkg.get(field));
            (!deps.is_empty()).then(|| object(deps))
        }
    }
}

/// A dependency field as an object of name → spec: npm turns a string or a list
/// (`"a@1 b"`) into one and drops specs that are no strings; a spec of a hosted repository
/// is compared by repository, whatever form names it.
fn dependencies(value: Option<&Value>) -> BTreeMap<String, String> {
    let listed = |items: Vec<&str>| -> BTreeMap<String, String> {
        items
            .into_iter()
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                // npm splits at the first `@`, space or comparator after the name.
                let at = item
                    .char_indices()
                    .skip(1)
                    .find(|(_, c)| matches!(c, '@' | ' ' | '<' | '>' | '='))
                    .map_or(item.len(), |(i, _)| i);
                let (name, spec) = item.split_at(at);
                (
                    name.to_string(),
                    spec.trim_start_matches('@').trim().to_string(),
                )
            })
            .collect()
    };
    let deps = match value {
        Some(Value::Object(map)) => map
            .iter()
            .filter_map(|(name, spec)| Some((name.clone(), spec.as_str()?.to_string())))
            .collect(),
        Some(Value::String(text)) => listed(
            text.split(|c: char| c.is_whitespace() || c == ',')
                .collect(),
        ),
        Some(Value::Array(list)) => listed(list.iter().filter_map(Value::as_str).collect()),
        _ => BTreeMap::new(),
    };
    deps.into_iter()
        .map(|(name, spec)| {
            let spec = hosted(spec.trim()).unwrap_or_else(|| spec.trim().to_string());
            (name, spec)
        })
        .collect()
}

/// `github:user/repo#ref` for a spec naming a repository on GitHub, GitLab or Bitbucket in
/// any of the forms npm rewrites into one another (`user/repo`, `github:user/repo`,
/// `git+ssh://git@github.com/user/repo.git`, `git+https://…`, `git@github.com:user/repo`).
fn hosted(spec: &str) -> Option<String> {
    let (body, committish) = match spec.split_once('#') {
        Some((body, committish)) => (body, Some(committish)),
        None => (spec, None),
    };
    let shortcut = |host: &str| match host {
        "github" | "github.com" => Some("github"),
        "gitlab" | "gitlab.com" => Some("gitlab"),
        "bitbucket" | "bitbucket.org" => Some("bitbucket"),
        _ => None,
    };
    let (host, path) = match body.split_once(':') {
        None if !body.starts_with(['@', '.', '/', '~']) => ("github", body),
        Some((prefix, path)) if !path.starts_with("//") => match prefix.strip_prefix("git@") {
            Some(host) => (shortcut(host)?, path),
            None => (shortcut(prefix)?, path),
        },
        Some((scheme, rest)) => {
            if !matches!(
                scheme,
                "git+ssh" | "git+https" | "https" | "git" | "ssh" | "http"
            ) {
                return None;
            }
            let rest = rest.trim_start_matches('/');
            let rest = rest.strip_prefix("git@").unwrap_or(rest);
            let (host, path) = rest.split_once(['/', ':'])?;
            (shortcut(host)?, path)
        }
        None => return None,
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let (user, repo) = path.split_once('/')?;
    if user.is_empty() || repo.is_empty() || repo.contains('/') {
        return None;
    }
    let committish = committish.map_or(String::new(), |c| format!("#{c}"));
    Some(format!("{host}:{user}/{repo}{committish}"))
}

/// `bin` as npm publishes it: an object of command → path under the package (a string is
/// the package's own command, a list names each by its file, `directories.bin` lists its
/// folder); `None` when there is none.
fn bin(pkg: &Value, files: &[String]) -> Option<BTreeMap<String, String>> {
    let name = pkg.get("name").and_then(Value::as_str).unwrap_or("");
    let raw: Vec<(String, Value)> = match pkg.get("bin") {
        Some(Value::String(target)) if !target.is_empty() => {
            vec![(name.to_string(), Value::from(target.as_str()))]
        }
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|path| (basename(path).to_string(), Value::from(path)))
            .collect(),
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Value::Null | Value::Bool(false)) | None => bin_folder(pkg, files),
        Some(_) => Vec::new(),
    };
    let mut bins = BTreeMap::new();
    for (command, target) in raw {
        let (Some(target), command) = (target.as_str(), secure_path(&command)) else {
            continue;
        };
        let (command, target) = (basename(&command), secure_path(target));
        if !command.is_empty() && !target.is_empty() {
            bins.insert(command.to_string(), target);
        }
    }
    (!bins.is_empty()).then_some(bins)
}

/// The commands of `directories.bin`: each file in that folder (none hidden) by its name.
fn bin_folder(pkg: &Value, files: &[String]) -> Vec<(String, Value)> {
    let Some(folder) = pkg.pointer("/directories/bin").and_then(Value::as_str) else {
        return Vec::new();
    };
    let folder = secure_path(folder);
    let mut found = Vec::new();
    for file in files {
        let Some(under) = file
            .strip_prefix(folder.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            continue;
        };
        if under.split('/').any(|part| part.starts_with('.')) {
            continue;
        }
        found.push((
            basename(under).to_string(),
            Value::from(format!("{folder}/{under}")),
        ));
    }
    found
}

/// `path` as npm keeps it: `\` and `:` as `/`, resolved inside the package (no `..` out of
/// it, no leading `./`); empty when nothing is left.
fn secure_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let unix = path.replace(['\\', ':'], "/");
    for part in unix.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

fn basename(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// Whether `pkg` names a script npm runs at install.
fn declares_install(pkg: &Value) -> bool {
    ["preinstall", "install", "postinstall"]
        .iter()
        .any(|script| {
            pkg.get("scripts")
                .and_then(|s| s.get(script))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        })
        || pkg.get("gypfile") == Some(&Value::Bool(true))
}

/// Whether npm builds the package with node-gyp at install: a `*.gyp` at its top, no
/// install or preinstall script of its own, and no `"gypfile": false`.
fn builds_with_gyp(pkg: &Value, files: &[String]) -> bool {
    let script = |name: &str| pkg.pointer(&format!("/scripts/{name}")).is_some();
    pkg.get("gypfile") != Some(&Value::Bool(false))
        && !script("install")
        && !script("preinstall")
        && files
            .iter()
            .any(|f| !f.contains('/') && f.ends_with(".gyp"))
}
