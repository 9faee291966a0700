//! Private packages: `npm publish`, `npm dist-tag`, `npm deprecate` for the names
//! `[publish]` says are published here. Such names are never looked up upstream.
//!
//! A publish is checked before anything is stored: the name in the URL, the body and the
//! tarball's own `package/package.json` agree; there is exactly one new version; the tarball
//! matches the `dist.integrity` (sha512) and `dist.shasum` the body gives. The tarball goes in
//! first (verified, invisible until listed), then the packument lists the version, by a
//! conditional put (a concurrent publish of another version is merged, never lost).

use std::io::Read as _;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sluice_plugin_api::Packument;
use ssri::Integrity;

use super::packuments::Packuments;
use super::{parse_document, Error};
use crate::auth::Identity;
use crate::config::PublishConfig;
use crate::store::{Expect, SharedStore, Written};

/// The publish part of the core.
pub struct Publisher {
    packuments: Arc<Packuments>,
    store: SharedStore,
    config: PublishConfig,
    public_url: String,
    /// How many packument writes this publisher made (see [`Publisher::writes`]).
    writes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("scopes", &self.config.scopes)
            .finish_non_exhaustive()
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::Client(message.into())
}

/// The `package/package.json` inside a gzipped npm tarball.
fn package_json(tarball: &[u8]) -> Result<Value, Error> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("the tarball is not a gzipped tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("the tarball is not a gzipped tar: {e}")))?;
        let path = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // npm packs under `package/`; some tools use another top folder.
        let mut parts = path.splitn(2, '/');
        let (_, rest) = (parts.next(), parts.next());
        if rest == Some("package.json") {
            let mut text = String::new();
            entry
                .by_ref()
                .take(10 << 20)
                .read_to_string(&mut text)
                .map_err(|e| bad(format!("package.json in the tarball: {e}")))?;
            return serde_json::from_str(&text)
                .map_err(|e| bad(format!("package.json in the tarball is not JSON: {e}")));
        }
    }
    Err(bad("the tarball has no package/package.json"))
}

/// The state object keeping the attestations of `name@version`.
fn attestations_key(name: &str, version: &str) -> String {
    format!("attestations/{name}@{version}")
}

/// Check the `.sigstore` attachment `npm publish --provenance` adds (its `data` is the Sigstore
/// bundle as raw JSON): a bundle whose DSSE statement names this package version and this
/// tarball's sha512. Returns its predicate type and the bundle.
///
/// The bundle's signature is not checked against Sigstore's roots here (that needs their
/// transparency log); clients that verify provenance (`npm audit signatures`) do.
fn provenance(
    name: &str,
    version: &str,
    tarball: &[u8],
    attachment: &Value,
) -> Result<(String, Value), Error> {
    let bad_bundle = |why: &str| bad(format!("the provenance bundle of {name}@{version} {why}"));
    let data = attachment
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_bundle("has no data"))?;
    let bundle: Value =
        serde_json::from_str(data).map_err(|_| bad_bundle("is not JSON (a Sigstore bundle)"))?;
    if !bundle
        .get("mediaType")
        .and_then(Value::as_str)
        .is_some_and(|m| m.starts_with("application/vnd.dev.sigstore.bundle"))
    {
        return Err(bad_bundle("is not a Sigstore bundle (mediaType)"));
    }
    let payload = bundle
        .pointer("/dsseEnvelope/payload")
        .and_then(Value::as_str)
        .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
        .ok_or_else(|| bad_bundle("has no DSSE statement"))?;
    let predicate = payload
        .get("predicateType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_bundle("names no predicateType"))?
        .to_string();
    let sha512 = ssri::IntegrityOpts::new()
        .algorithm(ssri::Algorithm::Sha512)
        .chain(tarball)
        .result()
        .to_hex()
        .1;
    let purl = format!("pkg:npm/{}@{version}", name.replacen('@', "%40", 1));
    let names_it = payload
        .get("subject")
        .and_then(Value::as_array)
        .is_some_and(|subjects| {
            subjects.iter().any(|s| {
                s.get("name").and_then(Value::as_str) == Some(purl.as_str())
                    && s.pointer("/digest/sha512").and_then(Value::as_str) == Some(sha512.as_str())
            })
        });
    if !names_it {
        return Err(bad_bundle(&format!(
            "is not about {purl} with this tarball's sha512"
        )));
    }
    Ok((predicate, bundle))
}

/// The current `_rev` of a private document.
fn current_rev(doc: &Packument) -> Option<&str> {
    doc.doc.get("_rev").and_then(Value::as_str)
}

/// A change sent with revision `want` (when it names one) applies only to the document at that
/// revision; a client that read an older one gets 409 and reads again.
fn check_rev(name: &str, doc: &Packument, want: Option<&str>) -> Result<(), Error> {
    match (want, current_rev(doc)) {
        (Some(want), Some(have)) if want != have => Err(Error::Conflict(format!(
            "document update conflict: {name} is at revision {have}, not {want}: read it again"
        ))),
        _ => Ok(()),
    }
}

/// The next `_rev` (CouchDB style: a count and a random tag).
fn next_rev(doc: &Packument) -> String {
    let n = current_rev(doc)
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    format!("{}-{:016x}", n + 1, fastrand::u64(..))
}

/// The names in a document's `maintainers`.
fn maintainers(doc: &Packument) -> Vec<String> {
    doc.doc
        .get("maintainers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|m| m.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Publisher {
    /// Publishes of `config`'s names into `store`; tarball links start with `public_url`.
    pub fn new(
        packuments: Arc<Packuments>,
        store: SharedStore,
        config: PublishConfig,
        public_url: String,
    ) -> Self {
        Self {
            packuments,
            store,
            config,
            public_url,
            writes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many packument writes (publishes, unpublishes, tag and owner changes) this node
    /// made: a listing of private names taken at another count may be out of date.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether `name` is published here.
    pub fn is_private(&self, name: &str) -> bool {
        self.config.is_private(name)
    }

    fn check_writer(&self, name: &str, who: &Identity) -> Result<(), Error> {
        if !self.is_private(name) {
            return Err(Error::Forbidden(format!(
                "{name} is not published here: only the scopes in [publish] scopes ({}) and the \
                 names in [publish] packages are",
                if self.config.scopes.is_empty() {
                    "none".to_string()
                } else {
                    self.config.scopes.join(", ")
                }
            )));
        }
        if who.readonly {
            return Err(Error::Forbidden(
                "this token is read-only: publish with a token made by npm login".into(),
            ));
        }
        if !self.config.may_publish(&who.user, name) {
            return Err(Error::Forbidden(format!(
                "{} may not publish {name} ([publish] owners)",
                who.user
            )));
        }
        Ok(())
    }

    /// `PUT /{name}`: a new version with its tarball, or (without one) a metadata change of
    /// versions already published (`npm deprecate`).
    /// `email` is the publisher's, shown in `_npmUser` and in the first `maintainers`.
    pub async fn publish(
        &self,
        name: &str,
        body: &[u8],
        who: &Identity,
        email: &str,
    ) -> Result<Value, Error> {
        self.check_writer(name, who)?;
        let body: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| bad(format!("the publish body is not a JSON object: {e}")))?;
        for field in ["name", "_id"] {
            if let Some(named) = body.get(field).and_then(Value::as_str) {
                if named != name {
                    return Err(bad(format!(
                        "the body's {field} `{named}` is not the package in the URL, {name}"
                    )));
                }
            }
        }
        let versions = body
            .get("versions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let attachments = body.get("_attachments").and_then(Value::as_object);
        let held = self.store.packument(name).await.map_err(Error::from)?;
        let held_doc = match &held {
            Some(held) => {
                Some(parse_document(&held.bytes, name).map_err(|e| Error::store(e.to_string()))?)
            }
            None => None,
        };
        let held_versions = held_doc.as_ref().and_then(Packument::versions);
        // A version ever published (its time entry stays after an unpublish) is never again.
        let ever = |v: &str| {
            held_versions.is_some_and(|h| h.contains_key(v))
                || held_doc.as_ref().and_then(|d| d.published(v)).is_some()
        };
        let new: Vec<&String> = versions.keys().filter(|v| !ever(v)).collect();
        let Some(attachments) = attachments.filter(|a| !a.is_empty()) else {
            if !new.is_empty() {
                return Err(bad(format!(
                    "{name}@{} comes without its tarball (_attachments)",
                    new[0]
                )));
            }
            let rev = body.get("_rev").and_then(Value::as_str);
            return self
                .update(name, who, rev, &versions, body.get("dist-tags"))
                .await;
        };
        let [version] = new.as_slice() else {
            return Err(match new.len() {
                0 => Error::Forbidden(format!(
                    "cannot publish over the previously published version {name}@{} (published \
                     or unpublished, a version is never published twice): bump the version",
                    versions.keys().next().map_or("?", String::as_str)
                )),
                _ => bad("a publish carries exactly one new version"),
            });
        };
        let version = (*version).clone();
        let mut manifest = versions[&version].clone();
        if manifest.get("version").and_then(Value::as_str) != Some(version.as_str())
            || manifest.get("name").and_then(Value::as_str) != Some(name)
        {
            return Err(bad(format!(
                "versions[{version}] does not say it is {name}@{version}"
            )));
        }
        let base = name.rsplit('/').next().unwrap_or(name);
        // npm names the attachment `@scope/name-1.0.0.tgz`: a slash only after the scope.
        let scope = name.split_once('/').map(|(scope, _)| format!("{scope}/"));
        let bad_name = |k: &str| {
            let rest = scope
                .as_deref()
                .and_then(|s| k.strip_prefix(s))
                .unwrap_or(k);
            rest.contains(['/', '\\', '\0']) || k.contains("..")
        };
        if let Some(key) = attachments.keys().find(|k| bad_name(k)) {
            return Err(bad(format!(
                "the attachment name `{}` is not a file name",
                key.escape_default()
            )));
        }
        // npm names them `@scope/name-1.0.0.tgz` and `….sigstore`; some tools leave the scope
        // off.
        let named = |ext: &str| {
            [
                format!("{name}-{version}.{ext}"),
                format!("{base}-{version}.{ext}"),
            ]
            .into_iter()
            .find(|k| attachments.contains_key(k))
            .unwrap_or_else(|| format!("{name}-{version}.{ext}"))
        };
        let (tarball_name, bundle_name) = (named("tgz"), named("sigstore"));
        if let Some(other) = attachments
            .keys()
            .find(|k| **k != tarball_name && **k != bundle_name)
        {
            return Err(bad(format!(
                "the attachment `{}` is neither {tarball_name} nor its provenance \
                 ({bundle_name}): a publish carries exactly one tarball",
                other.escape_default()
            )));
        }
        let attachment = attachments
            .get(&tarball_name)
            .ok_or_else(|| bad(format!("the tarball attachment {tarball_name} is missing")))?;
        let data = attachment
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("the attachment has no data"))?;
        let tarball = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| bad(format!("the attachment is not base64: {e}")))?;
        if let Some(length) = attachment.get("length").and_then(Value::as_u64) {
            if length != tarball.len() as u64 {
                return Err(bad(format!(
                    "the attachment is {} bytes, not the {length} it says",
                    tarball.len()
                )));
            }
        }
        let dist = manifest
            .get("dist")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let integrity: Integrity = dist
            .get("integrity")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("dist.integrity (sha512) is missing or malformed"))?;
        if integrity.check(&tarball).is_err() {
            return Err(bad("the tarball does not match dist.integrity"));
        }
        if let Some(shasum) = dist.get("shasum").and_then(Value::as_str) {
            let sha1 = Integrity::from_hex(shasum, ssri::Algorithm::Sha1)
                .map_err(|_| bad("dist.shasum is not a sha1"))?;
            if sha1.check(&tarball).is_err() {
                return Err(bad("the tarball does not match dist.shasum"));
            }
        }
        let inside = package_json(&tarball)?;
        if inside.get("name").and_then(Value::as_str) != Some(name)
            || inside.get("version").and_then(Value::as_str) != Some(version.as_str())
        {
            return Err(bad(format!(
                "the tarball's package.json is {}@{}, not {name}@{version}",
                inside.get("name").and_then(Value::as_str).unwrap_or("?"),
                inside.get("version").and_then(Value::as_str).unwrap_or("?")
            )));
        }
        let provenance = match attachments.get(&bundle_name) {
            Some(attachment) => Some(provenance(name, &version, &tarball, attachment)?),
            None => None,
        };
        // The tarball first: verified by the store, invisible until the packument lists it.
        let file = format!("{base}-{version}.tgz");
        let mut sink = self
            .store
            .tarball_sink(name, &file, &integrity, Some(tarball.len() as u64))
            .await
            .map_err(Error::from)?;
        sink.write(&tarball).await.map_err(Error::from)?;
        sink.commit().await.map_err(Error::from)?;
        // Then the provenance, which the version will point at.
        if let Some((predicate, bundle)) = &provenance {
            let kept =
                json!({ "attestations": [{ "predicateType": predicate, "bundle": bundle }] });
            let bytes = Bytes::from(serde_json::to_vec(&kept).unwrap_or_default());
            let key = attestations_key(name, &version);
            let expect = match self.store.state(&key).await {
                Ok(held) => Expect::from_read(held.as_ref().map(|(_, token)| token)),
                Err(e) => return Err(e.into()),
            };
            self.store
                .put_state(&key, bytes, expect)
                .await
                .map_err(Error::from)?;
        }
        if let Some(dist) = manifest.get_mut("dist").and_then(Value::as_object_mut) {
            dist.insert(
                "tarball".into(),
                Value::String(format!("{}{name}/-/{file}", self.public_url)),
            );
            match &provenance {
                Some((predicate, _)) => {
                    dist.insert(
                        "attestations".into(),
                        json!({
                            "url": format!("{}-/npm/v1/attestations/{name}@{version}", self.public_url),
                            "provenance": { "predicateType": predicate },
                        }),
                    );
                }
                None => {
                    dist.remove("attestations");
                }
            }
        }
        if let Some(object) = manifest.as_object_mut() {
            object.insert("_id".into(), Value::String(format!("{name}@{version}")));
            object.insert(
                "_npmUser".into(),
                json!({ "name": who.user, "email": email }),
            );
        }
        let tags = body.get("dist-tags").cloned();
        let description = body.get("description").cloned();
        let readme = body.get("readme").cloned();
        self.write(name, who, None, |doc| {
            if maintainers(doc).is_empty() {
                doc.doc.insert(
                    "maintainers".into(),
                    json!([{ "name": who.user, "email": email }]),
                );
            }
            if doc.versions().is_some_and(|v| v.contains_key(&version))
                || doc.published(&version).is_some()
            {
                return Err(Error::Forbidden(format!(
                    "cannot publish over the previously published version {name}@{version}"
                )));
            }
            let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            doc.versions_mut().insert(version.clone(), manifest.clone());
            let time = doc.time_mut();
            time.entry("created".to_string())
                .or_insert_with(|| Value::String(now.clone()));
            time.insert("modified".into(), Value::String(now.clone()));
            time.insert(version.clone(), Value::String(now));
            let dist_tags = doc.dist_tags_mut();
            match tags.as_ref().and_then(Value::as_object) {
                Some(tags) if !tags.is_empty() => {
                    for (tag, v) in tags {
                        dist_tags.insert(tag.clone(), v.clone());
                    }
                }
                _ => {
                    dist_tags.insert("latest".into(), Value::String(version.clone()));
                }
            }
            for (field, value) in [("description", &description), ("readme", &readme)] {
                if let Some(value) = value {
                    doc.doc.insert(field.into(), value.clone());
                }
            }
            Ok(())
        })
        .await?;
        tracing::info!(package = name, version, user = who.user, "published");
        Ok(json!({ "ok": true, "id": name, "success": true }))
    }

    /// A metadata change of published versions: `deprecated` fields, dist-tags.
    async fn update(
        &self,
        name: &str,
        who: &Identity,
        rev: Option<&str>,
        versions: &Map<String, Value>,
        tags: Option<&Value>,
    ) -> Result<Value, Error> {
        self.write(name, who, rev, |doc| {
            let held = doc.versions_mut();
            for (version, manifest) in versions {
                let Some(target) = held.get_mut(version).and_then(Value::as_object_mut) else {
                    continue;
                };
                match manifest.get("deprecated") {
                    Some(Value::String(message)) if !message.is_empty() => {
                        target.insert("deprecated".into(), Value::String(message.clone()));
                    }
                    _ => {
                        target.remove("deprecated");
                    }
                }
            }
            if let Some(tags) = tags.and_then(Value::as_object) {
                let known: Vec<String> = doc
                    .versions()
                    .map(|v| v.keys().cloned().collect())
                    .unwrap_or_default();
                for (tag, version) in tags {
                    if version
                        .as_str()
                        .is_some_and(|v| known.iter().any(|k| k == v))
                    {
                        doc.dist_tags_mut().insert(tag.clone(), version.clone());
                    }
                }
            }
            Ok(())
        })
        .await?;
        Ok(json!({ "ok": true, "id": name }))
    }

    /// `PUT /{name}/-rev/{rev}` with the document as the client changed it, or `DELETE
    /// /{name}/-rev/{rev}` (no body: the whole package).
    ///
    /// - `npm unpublish`: the versions the body's `versions` lacks are taken off (every one
    ///   without a body), each only within `publish.unpublish` of its publish. Their tarballs
    ///   stay in the store, no longer listed; their numbers are never published again.
    /// - `npm owner add|rm`: the body's `maintainers` (names in the users file, at least one)
    ///   become the package's.
    ///
    /// `rev` must be the document's current `_rev`; `email_of` gives a user's e-mail address,
    /// or `None` for a name that is no user.
    pub async fn replace(
        &self,
        name: &str,
        rev: &str,
        body: Option<&[u8]>,
        who: &Identity,
        email_of: &(dyn Fn(&str) -> Option<String> + Send + Sync),
    ) -> Result<Value, Error> {
        self.check_writer(name, who)?;
        let body: Option<Value> = match body {
            Some(body) => Some(
                serde_json::from_slice(body)
                    .map_err(|e| bad(format!("the document is not JSON: {e}")))?,
            ),
            None => None,
        };
        // Versions kept: `None` when the body says nothing of versions (an owner change).
        let kept: Option<Vec<String>> = match &body {
            Some(doc) => doc
                .get("versions")
                .and_then(Value::as_object)
                .map(|v| v.keys().cloned().collect()),
            None => Some(Vec::new()),
        };
        let owners: Option<Vec<String>> = match body.as_ref().and_then(|d| d.get("maintainers")) {
            None => None,
            Some(Value::Array(list)) => Some(
                list.iter()
                    .map(|m| {
                        m.get("name")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .ok_or_else(|| bad("each of maintainers is {name, email}"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err(bad("maintainers is a list of {name, email}")),
        };
        if let Some(owners) = &owners {
            if owners.is_empty() {
                return Err(Error::Forbidden(format!(
                    "{name} needs at least one maintainer: add someone else first"
                )));
            }
            if let Some(unknown) = owners.iter().find(|o| email_of(o).is_none()) {
                return Err(Error::NotFound(format!(
                    "{unknown} is not a user of this registry (sluice user add {unknown})"
                )));
            }
        }
        let window = self.config.unpublish;
        let now = std::time::SystemTime::now();
        let mut removed = Vec::new();
        self.write(name, who, Some(rev), |doc| {
            removed.clear();
            if let Some(owners) = &owners {
                let list: Vec<Value> = owners
                    .iter()
                    .map(|o| json!({ "name": o, "email": email_of(o).unwrap_or_default() }))
                    .collect();
                doc.doc.insert("maintainers".into(), Value::Array(list));
            }
            let Some(kept) = &kept else {
                return Ok(());
            };
            let versions: Vec<String> = doc
                .versions()
                .map(|v| v.keys().cloned().collect())
                .unwrap_or_default();
            if versions.is_empty() {
                return Err(Error::NotFound(format!(
                    "{name} has no version to unpublish"
                )));
            }
            for version in versions {
                if kept.contains(&version) {
                    continue;
                }
                let published = doc
                    .published(&version)
                    .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok());
                let young = published
                    .and_then(|at| now.duration_since(at).ok())
                    .is_some_and(|age| age < window);
                if !young {
                    return Err(Error::Forbidden(format!(
                        "{name}@{version} was published more than {} ago: this registry keeps \
                         it (publish.unpublish); deprecate it instead",
                        humantime::format_duration(window)
                    )));
                }
                removed.push(version);
            }
            for version in &removed {
                doc.remove_version(version);
            }
            let stamp = humantime::format_rfc3339_millis(now).to_string();
            doc.time_mut()
                .insert("modified".into(), Value::String(stamp));
            Ok(())
        })
        .await?;
        match &owners {
            Some(owners) => {
                tracing::info!(package = name, maintainers = ?owners, user = who.user, "owners changed");
            }
            None => {
                tracing::info!(package = name, versions = ?removed, user = who.user, "unpublished");
            }
        }
        Ok(json!({ "ok": true, "id": name }))
    }

    /// `DELETE /{name}/-/{file}/-rev/{rev}`, the last step of `npm unpublish`: the version is
    /// off the document already (its tarball stays in the store, unlisted); this checks that
    /// and the revision.
    pub async fn unpublish_tarball(
        &self,
        name: &str,
        file: &str,
        rev: &str,
        who: &Identity,
    ) -> Result<Value, Error> {
        self.check_writer(name, who)?;
        let held = self
            .store
            .packument(name)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::NotFound(format!("{name} is not published here")))?;
        let doc = parse_document(&held.bytes, name).map_err(|e| Error::store(e.to_string()))?;
        check_rev(name, &doc, Some(rev))?;
        let listed = doc.versions().is_some_and(|versions| {
            versions.values().any(|m| {
                m.pointer("/dist/tarball")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with(&format!("/-/{file}")))
            })
        });
        if listed {
            return Err(bad(format!(
                "{file} belongs to a version still published: unpublish the version first"
            )));
        }
        Ok(json!({ "ok": true }))
    }

    /// The attestations kept for `name@version` (`GET /-/npm/v1/attestations/{name}@{version}`).
    pub async fn attestations(&self, name: &str, version: &str) -> Result<Value, Error> {
        let held = self
            .store
            .state(&attestations_key(name, version))
            .await
            .map_err(Error::from)?;
        let Some((bytes, _)) = held else {
            return Err(Error::NotFound(format!(
                "{name}@{version} was published without provenance"
            )));
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::store(e.to_string()))
    }

    /// `PUT /-/package/{name}/dist-tags/{tag}` (`version` given) or `DELETE` (none).
    pub async fn dist_tag(
        &self,
        name: &str,
        tag: &str,
        version: Option<&str>,
        who: &Identity,
    ) -> Result<Value, Error> {
        self.check_writer(name, who)?;
        self.write(name, who, None, |doc| {
            match version {
                Some(version) => {
                    if !doc.versions().is_some_and(|v| v.contains_key(version)) {
                        return Err(Error::NotFound(format!("{name} has no version {version}")));
                    }
                    doc.dist_tags_mut()
                        .insert(tag.to_string(), Value::String(version.to_string()));
                }
                None if tag == "latest" => {
                    return Err(bad("the latest tag cannot be removed"));
                }
                None => {
                    doc.dist_tags_mut().shift_remove(tag);
                }
            }
            Ok(())
        })
        .await?;
        Ok(json!({ "ok": true }))
    }

    /// Change the stored packument of `name` with `edit` (read → edit → conditional put → on
    /// conflict again), creating it when there is none.
    ///
    /// `who` must be one of the package's maintainers when it has any; `rev`, when given, must
    /// be the document's current `_rev` (a client that read an older one gets 409 and reads
    /// again). Every write gives the document a new `_rev`.
    async fn write(
        &self,
        name: &str,
        who: &Identity,
        rev: Option<&str>,
        mut edit: impl FnMut(&mut Packument) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let store_error = Error::from;
        for _ in 0..32 {
            let held = self.store.packument(name).await.map_err(store_error)?;
            let mut doc = match &held {
                Some(held) => parse_document(&held.bytes, name)
                    .map_err(|e| Error::store(e.to_string()))?,
                None => Packument::new(
                    json!({ "_id": name, "name": name, "dist-tags": {}, "versions": {}, "time": {} })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
            };
            let owners = maintainers(&doc);
            if !owners.is_empty() && !owners.contains(&who.user) {
                return Err(Error::Forbidden(format!(
                    "{} is not a maintainer of {name} (npm owner ls {name}; an owner adds others \
                     with npm owner add)",
                    who.user
                )));
            }
            check_rev(name, &doc, rev)?;
            edit(&mut doc)?;
            crate::packument::repair(&mut doc);
            let rev = next_rev(&doc);
            doc.doc.insert("_rev".into(), Value::String(rev));
            let bytes = Bytes::from(
                serde_json::to_vec(&doc.doc).map_err(|e| Error::Internal(e.to_string()))?,
            );
            let meta = crate::store::PackumentMeta {
                etag: None,
                last_modified: None,
                fetched_at: crate::store::now_ms(),
                origin: None,
            };
            let expect = Expect::from_read(held.as_ref().map(|h| &h.token));
            match self
                .store
                .put_packument(name, bytes, &meta, expect)
                .await
                .map_err(store_error)?
            {
                Written::Stored(_) => {
                    self.packuments.changed(name);
                    self.writes
                        .fetch_add(1, std::sync::atomic::Ordering::Release);
                    return Ok(());
                }
                Written::Conflict => continue,
            }
        }
        Err(Error::store(format!(
            "{name} kept changing while it was published: try again"
        )))
    }
}
