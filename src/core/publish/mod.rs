//! Private packages: `npm publish`, `npm dist-tag`, `npm deprecate` for the names
//! `[publish]` says are published here. Such names are never looked up upstream.
//!
//! A publish is checked before anything is stored: the name in the URL, the body and the
//! tarball's own `package/package.json` agree; there is exactly one new version; the tarball
//! matches the `dist.integrity` (sha512) and `dist.shasum` the body gives. The tarball goes in
//! first (verified, invisible until listed), then the packument lists the version, by a
//! conditional put (a concurrent publish of another version is merged, never lost).
//!
//! A staged publish ([`stage`], `npm stage publish`) runs the same checks and stops before
//! the list step, which a maintainer's approval runs; `[publish] staged = "required"` refuses
//! a direct publish of a new version.

mod agree;
mod provenance;
mod replace;
pub mod stage;
mod tarball;
mod upload;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use sluice_plugin_api::Packument;

use self::upload::Upload;
use super::packuments::Packuments;
use super::{parse_document, Error};
use crate::auth::Identity;
use crate::config::{PublishConfig, Staged};
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

/// The publish body of `name`: a JSON object whose `name` and `_id`, when given, are `name`.
fn publish_body(name: &str, body: &[u8]) -> Result<Map<String, Value>, Error> {
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
    Ok(body)
}

/// The body's versions never published in `held`: a version ever published (its time entry
/// stays after an unpublish) is never again.
fn new_versions(held: Option<&Packument>, versions: &Map<String, Value>) -> Vec<String> {
    let held_versions = held.and_then(Packument::versions);
    let ever = |v: &str| {
        held_versions.is_some_and(|h| h.contains_key(v))
            || held.and_then(|d| d.published(v)).is_some()
    };
    versions.keys().filter(|v| !ever(v)).cloned().collect()
}

/// The one new version a publish carries.
fn one_new_version(
    name: &str,
    new: &[String],
    versions: &Map<String, Value>,
) -> Result<String, Error> {
    match new {
        [version] => {
            // Strict: what the parse gives back is what was given (no `v`, `=`, spaces or
            // leading zeros).
            match nodejs_semver::Version::parse(version) {
                Ok(parsed) if parsed.to_string() == *version => Ok(version.clone()),
                _ => Err(bad(format!(
                    "{version:?} is not a version: a version is semver, such as 1.0.0"
                ))),
            }
        }
        [] => Err(Error::Forbidden(format!(
            "cannot publish over the previously published version {name}@{} (published \
             or unpublished, a version is never published twice): bump the version",
            versions.keys().next().map_or("?", String::as_str)
        ))),
        _ => Err(bad("a publish carries exactly one new version")),
    }
}

/// The file name of `name@version`'s tarball.
fn tarball_file(name: &str, version: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    format!("{base}-{version}.tgz")
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

/// What a write does to a name with no document.
#[derive(Debug, Clone, Copy)]
enum Missing {
    /// Creates it (a publish).
    Create,
    /// Answers that it is not found.
    NotFound,
}

/// `who` is one of the maintainers of `doc`, when it has any.
fn check_maintainer(name: &str, doc: &Packument, who: &Identity) -> Result<(), Error> {
    let owners = maintainers(doc);
    if !owners.is_empty() && !owners.contains(&who.user) {
        return Err(Error::Forbidden(format!(
            "{} is not a maintainer of {name} (npm owner ls {name}; an owner adds others \
             with npm owner add)",
            who.user
        )));
    }
    Ok(())
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

    fn check_writer(&self, name: &str, who: &Identity) -> Result<(), Error> {
        if !self.packuments.private().contains(name) {
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
        if let Some((scope, _)) = name.split_once('/') {
            if scope.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(bad(format!(
                    "{name}: a scope has no capital letters (npm's naming rules): publish it \
                     as {}",
                    name.replacen(scope, &scope.to_ascii_lowercase(), 1)
                )));
            }
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
        let body = publish_body(name, body)?;
        let versions = body
            .get("versions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let held = self.held(name).await?;
        // Every check before anything is written: a refused publish leaves nothing behind.
        match &held {
            Some(held) => check_maintainer(name, held, who)?,
            None => check_new_name(name)?,
        }
        let new = new_versions(held.as_ref(), &versions);
        let attachments = body
            .get("_attachments")
            .and_then(Value::as_object)
            .filter(|a| !a.is_empty());
        let Some(attachments) = attachments else {
            // Without a tarball this is a change of what is published: none is yet.
            if held.is_none() {
                return Err(Error::NotFound(format!(
                    "{name} was never published here: a first publish carries its tarball \
                     (_attachments)"
                )));
            }
            if let Some(version) = new.first() {
                return Err(bad(format!(
                    "{name}@{version} comes without its tarball (_attachments)"
                )));
            }
            let rev = body.get("_rev").and_then(Value::as_str);
            return self
                .update(name, who, rev, &versions, body.get("dist-tags"))
                .await;
        };
        if self.config.staged == Staged::Required {
            return Err(Error::Forbidden(format!(
                "{name}: this registry publishes staged versions only ([publish] staged = \
                 \"required\"): stage it with `npm stage publish` (or `pnpm stage publish`), \
                 then a maintainer publishes it with `npm stage approve <stage-id>`"
            )));
        }
        let version = one_new_version(name, &new, &versions)?;
        let manifest = versions.get(&version).cloned().unwrap_or_default();
        let upload = upload::check(name, version, manifest, attachments)?;
        self.store_upload(name, &upload).await?;
        let manifest = self.listed_manifest(name, &upload, who, email);
        self.list(name, who, email, &upload.version, manifest, &body)
            .await?;
        tracing::info!(
            package = name,
            version = upload.version,
            user = who.user,
            "published"
        );
        Ok(json!({ "ok": true, "id": name, "success": true }))
    }

    /// The stored document of `name`, if any.
    async fn held(&self, name: &str) -> Result<Option<Packument>, Error> {
        let held = self.store.packument(name).await.map_err(Error::from)?;
        held.map(|held| parse_document(&held.bytes, name).map_err(|e| Error::store(e.to_string())))
            .transpose()
    }

    /// Store a checked upload's tarball (verified by the store, invisible until the packument
    /// lists it), then its provenance, which the version will point at.
    async fn store_upload(&self, name: &str, upload: &Upload) -> Result<(), Error> {
        let file = tarball_file(name, &upload.version);
        let mut sink = self
            .store
            .tarball_sink(
                name,
                &file,
                &upload.integrity,
                Some(upload.tarball.len() as u64),
            )
            .await
            .map_err(Error::from)?;
        sink.write(&upload.tarball).await.map_err(Error::from)?;
        sink.commit().await.map_err(Error::from)?;
        if let Some(provenance) = &upload.provenance {
            self.store_provenance(name, &upload.version, &upload.tarball, provenance)
                .await?;
        }
        Ok(())
    }

    /// The manifest as listed: its tarball link here, its attestations', its publisher.
    fn listed_manifest(&self, name: &str, upload: &Upload, who: &Identity, email: &str) -> Value {
        let version = &upload.version;
        let mut manifest = upload.manifest.clone();
        if let Some(dist) = manifest.get_mut("dist").and_then(Value::as_object_mut) {
            dist.insert(
                "tarball".into(),
                Value::String(format!(
                    "{}{name}/-/{}",
                    self.public_url,
                    tarball_file(name, version)
                )),
            );
            match &upload.provenance {
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
        manifest
    }

    /// List `version` with its `manifest` in the document of `name`, with the dist-tags,
    /// description and readme the publish `body` gives.
    async fn list(
        &self,
        name: &str,
        who: &Identity,
        email: &str,
        version: &str,
        manifest: Value,
        body: &Map<String, Value>,
    ) -> Result<(), Error> {
        let tags = body.get("dist-tags").and_then(Value::as_object);
        self.write(name, who, None, Missing::Create, |doc| {
            if maintainers(doc).is_empty() {
                doc.doc.insert(
                    "maintainers".into(),
                    json!([{ "name": who.user, "email": email }]),
                );
            }
            if doc.versions().is_some_and(|v| v.contains_key(version))
                || doc.published(version).is_some()
            {
                return Err(Error::Forbidden(format!(
                    "cannot publish over the previously published version {name}@{version}"
                )));
            }
            let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            doc.versions_mut()
                .insert(version.to_string(), manifest.clone());
            let time = doc.time_mut();
            time.entry("created".to_string())
                .or_insert_with(|| Value::String(now.clone()));
            time.insert("modified".into(), Value::String(now.clone()));
            time.insert(version.to_string(), Value::String(now));
            let dist_tags = doc.dist_tags_mut();
            match tags {
                Some(tags) if !tags.is_empty() => {
                    for (tag, v) in tags {
                        dist_tags.insert(tag.clone(), v.clone());
                    }
                }
                _ => {
                    dist_tags.insert("latest".into(), Value::String(version.to_string()));
                }
            }
            for field in ["description", "readme"] {
                if let Some(value) = body.get(field) {
                    doc.doc.insert(field.into(), value.clone());
                }
            }
            Ok(())
        })
        .await
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
        self.write(name, who, rev, Missing::NotFound, |doc| {
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
        let doc = self
            .held(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{name} is not published here")))?;
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

    /// `PUT /-/package/{name}/dist-tags/{tag}` (`version` given) or `DELETE` (none).
    pub async fn dist_tag(
        &self,
        name: &str,
        tag: &str,
        version: Option<&str>,
        who: &Identity,
    ) -> Result<Value, Error> {
        self.check_writer(name, who)?;
        self.write(name, who, None, Missing::NotFound, |doc| {
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
    /// conflict again); `missing` says whether a name with none gets one (a publish) or is
    /// not found (every other write).
    ///
    /// `who` must be one of the package's maintainers when it has any; `rev`, when given, must
    /// be the document's current `_rev` (a client that read an older one gets 409 and reads
    /// again). Every write gives the document a new `_rev`.
    async fn write(
        &self,
        name: &str,
        who: &Identity,
        rev: Option<&str>,
        missing: Missing,
        mut edit: impl FnMut(&mut Packument) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let store_error = Error::from;
        for _ in 0..32 {
            let held = self.store.packument(name).await.map_err(store_error)?;
            let mut doc = match (&held, missing) {
                (Some(held), _) => parse_document(&held.bytes, name)
                    .map_err(|e| Error::store(e.to_string()))?,
                (None, Missing::Create) => Packument::new(
                    json!({ "_id": name, "name": name, "dist-tags": {}, "versions": {}, "time": {} })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
                (None, Missing::NotFound) => {
                    return Err(Error::NotFound(format!(
                        "{name} was never published here: publish it first"
                    )))
                }
            };
            check_maintainer(name, &doc, who)?;
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

/// npm's rule for a new scoped package's name: no capital letters (names that differ by case
/// only, `@acme/Widget` beside `@acme/widget`, would be two packages here and one to many
/// tools). Unscoped names in capitals stay publishable: npm's legacy names (`JSONStream`)
/// predate the rule, and a company may keep its own copy of one. A package already published
/// under such a name keeps taking versions.
pub(crate) fn check_new_name(name: &str) -> Result<(), Error> {
    if name.starts_with('@') && name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad(format!(
            "{name}: a new scoped package's name has no capital letters (npm's naming rules): \
             publish it as {}",
            name.to_ascii_lowercase()
        )));
    }
    Ok(())
}
