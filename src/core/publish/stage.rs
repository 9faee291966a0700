//! Staged publishing (`npm stage …`): a version is checked exactly as a publish is, stored,
//! and listed only when a maintainer approves it.
//!
//! Everything lives in the store, so a fleet shares it: the state object `stage/index` holds
//! every staged version's summary (newest first, changed by conditional puts), `stage/item/<id>`
//! what the approval lists (manifest, tags, readme, provenance), and the tarball is stored
//! verified as `<name>/-/.stage-<id>.tgz`. No packument lists that file and routing refuses a
//! tarball name that starts with a dot, so only `GET /-/stage/<id>/tarball` serves it. Approving
//! stores it under the version's own file name and lists the version: the publish's last steps.
//! Once its item is off the index (approved or rejected), the staged file is deleted from the
//! store (the store keeps each content once, so an approved version's bytes stay).

use std::collections::HashMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use ssri::Integrity;

use super::upload::{self, Upload};
use super::{
    bad, check_maintainer, new_versions, one_new_version, publish_body, tarball_file, Publisher,
};
use crate::auth::Identity;
use crate::core::tarballs::{Served, TarballStream};
use crate::core::Error;
use crate::store::{Expect, SharedStore, StoreError, Token, Written};

/// The state object listing every staged version.
const INDEX: &str = "stage/index";

/// Staged versions of one package, at most: more is a runaway job, not a review queue.
const PER_PACKAGE: usize = 100;

/// Staged versions in all, at most (the index is rewritten whole on every change).
const IN_ALL: usize = 5000;

/// The state object keeping what approving `id` lists.
pub fn record_key(id: &str) -> String {
    format!("stage/item/{id}")
}

/// The tarball file a staged version is stored under: no tarball route reaches it.
pub fn staged_file(id: &str) -> String {
    format!(".stage-{id}.tgz")
}

/// The integrity a staged version's tarball is checked against, from its stored record.
pub fn recorded_integrity(record: &[u8]) -> Option<Integrity> {
    serde_json::from_slice::<StagedRecord>(record)
        .ok()?
        .integrity
        .parse()
        .ok()
}

/// Every staged version `store` lists, newest first.
pub async fn staged_items(store: &SharedStore) -> Result<Vec<StagedItem>, StoreError> {
    Ok(read_index(store).await?.0.items)
}

/// List `items` in the index of `store` too (those it does not list yet), keeping it newest
/// first; answers how many were added. `sluice migrate` lists what it copied.
pub async fn list_staged(store: &SharedStore, items: &[StagedItem]) -> Result<u64, StoreError> {
    for _ in 0..32 {
        let (mut index, token) = read_index(store).await?;
        let before = index.items.len();
        for item in items {
            if !index.items.iter().any(|i| i.id == item.id) {
                index.items.push(item.clone());
            }
        }
        let added = (index.items.len() - before) as u64;
        if added == 0 {
            return Ok(0);
        }
        index.items.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        let bytes = serde_json::to_vec(&index).map_err(|e| index_error(store, e))?;
        let expect = Expect::from_read(token.as_ref());
        if let Written::Stored(_) = store.put_state(INDEX, Bytes::from(bytes), expect).await? {
            return Ok(added);
        }
    }
    Err(index_error(store, "it kept changing: try again"))
}

fn index_error(store: &SharedStore, error: impl std::fmt::Display) -> StoreError {
    StoreError {
        location: store.location(),
        message: format!("the index of staged versions: {error}"),
    }
}

/// The index of staged versions in `store` and its stored version.
async fn read_index(store: &SharedStore) -> Result<(Index, Option<Token>), StoreError> {
    match store.state(INDEX).await? {
        Some((bytes, token)) => serde_json::from_slice(&bytes)
            .map(|index| (index, Some(token)))
            .map_err(|e| index_error(store, e)),
        None => Ok((Index::default(), None)),
    }
}

/// A staged version as npm's stage API shows it (`npm stage list`, `npm stage view`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedItem {
    /// The stage id (a UUID).
    pub id: String,
    /// The package.
    pub package_name: String,
    /// The version staged.
    pub version: String,
    /// The dist-tag it gets when approved.
    pub tag: String,
    /// When it was staged (RFC 3339).
    pub created_at: String,
    /// Who staged it.
    pub actor: String,
    /// What staged it (`user`).
    pub actor_type: String,
    /// `public` or `private`, as the publish body asked.
    pub access: String,
    /// The tarball's sha1, in hex.
    pub shasum: String,
    /// `staged`: checked, waiting for a maintainer.
    pub status: String,
}

/// What approving a staged version lists, kept apart from the index (a readme can be large).
#[derive(Debug, Serialize, Deserialize)]
struct StagedRecord {
    /// The version's manifest, as the publish body gave it.
    manifest: Value,
    /// The tarball's integrity (sha512), which every copy of it is checked against.
    integrity: String,
    /// The provenance's predicate type and bundle, when one came.
    provenance: Option<(String, Value)>,
    /// The stager's email, for `_npmUser`.
    email: String,
    /// The body's `dist-tags`, `description` and `readme`.
    extras: Map<String, Value>,
}

/// The index of staged versions, newest first.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    items: Vec<StagedItem>,
}

/// A new stage id: a random (version 4) UUID, the form npm checks before it sends one.
fn new_id() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The summary of a checked upload staged by `who`.
fn new_item(name: &str, upload: &Upload, body: &Map<String, Value>, who: &Identity) -> StagedItem {
    let version = &upload.version;
    let tag = body
        .get("dist-tags")
        .and_then(Value::as_object)
        .and_then(|tags| tags.iter().find(|(_, v)| v.as_str() == Some(version)))
        .map_or("latest", |(tag, _)| tag.as_str());
    let access = match body.get("access").and_then(Value::as_str) {
        Some("restricted" | "private") => "private",
        _ => "public",
    };
    let shasum = ssri::IntegrityOpts::new()
        .algorithm(ssri::Algorithm::Sha1)
        .chain(&upload.tarball)
        .result()
        .to_hex()
        .1;
    StagedItem {
        id: new_id(),
        package_name: name.to_string(),
        version: version.clone(),
        tag: tag.to_string(),
        created_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        actor: who.user.clone(),
        actor_type: "user".into(),
        access: access.into(),
        shasum,
        status: "staged".into(),
    }
}

/// Refuse to stage `name@version` when it is staged already, or too much of it is.
fn check_unstaged(index: &Index, name: &str, version: &str) -> Result<(), Error> {
    if let Some(item) = index
        .items
        .iter()
        .find(|i| i.package_name == name && i.version == version)
    {
        return Err(Error::Conflict(format!(
            "{name}@{version} is staged already (stage id {}): approve it or reject it \
             (npm stage approve|reject <stage-id>)",
            item.id
        )));
    }
    let of_package = index
        .items
        .iter()
        .filter(|i| i.package_name == name)
        .count();
    if of_package >= PER_PACKAGE || index.items.len() >= IN_ALL {
        return Err(Error::Conflict(format!(
            "too many versions are staged ({of_package} of {name}, {} in all; at most \
             {PER_PACKAGE} of a package, {IN_ALL} in all): approve or reject some first",
            index.items.len()
        )));
    }
    Ok(())
}

/// A publish's refusal of a version listed meanwhile, told as the conflict it is.
fn listed_meanwhile(name: &str, version: &str) -> Error {
    Error::Conflict(format!(
        "{name}@{version} is published already (published or unpublished, a version is never \
         published twice): reject this staged version and stage a new one"
    ))
}

impl Publisher {
    /// `POST /-/stage/package/{name}`: check the publish `body` as a publish is checked, then
    /// keep it staged. `email` is the stager's. Answers npm's `{"message", "stageId"}` and
    /// `name@version` (for the audit log).
    pub async fn stage(
        &self,
        name: &str,
        body: &[u8],
        who: &Identity,
        email: &str,
    ) -> Result<(Value, String), Error> {
        let (body, upload) = self.check_staged(name, body, who).await?;
        let (index, _) = self.stage_index().await?;
        check_unstaged(&index, name, &upload.version)?;
        // Every check passed: now the writes, each invisible until the index lists the item.
        let item = new_item(name, &upload, &body, who);
        self.keep_staged(name, &item.id, &upload, &body, email)
            .await?;
        let version = upload.version.clone();
        let listed = item.clone();
        self.edit_index(|index| {
            check_unstaged(index, name, &version)?;
            index.items.insert(0, listed.clone());
            Ok(())
        })
        .await?;
        tracing::info!(
            package = name,
            version,
            id = item.id,
            user = who.user,
            "staged"
        );
        let answer = json!({
            "message": format!("{name}@{version} staged: a maintainer approves it with npm stage approve {}", item.id),
            "stageId": item.id,
        });
        Ok((answer, format!("{name}@{version}")))
    }

    /// The checks of a publish, in its order and before anything is written: writer, body,
    /// maintainer, one new strict-semver version (one ever published is a conflict), upload.
    async fn check_staged(
        &self,
        name: &str,
        body: &[u8],
        who: &Identity,
    ) -> Result<(Map<String, Value>, Upload), Error> {
        self.check_writer(name, who)?;
        let body = publish_body(name, body)?;
        let versions = body
            .get("versions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let held = self.held(name).await?;
        match &held {
            Some(held) => check_maintainer(name, held, who)?,
            None => super::check_new_name(name)?,
        }
        let new = new_versions(held.as_ref(), &versions);
        match (new.is_empty(), versions.keys().next()) {
            (true, Some(version)) => return Err(listed_meanwhile(name, version)),
            (true, None) => return Err(bad("a staged publish carries one version (versions)")),
            _ => {}
        }
        let attachments = body
            .get("_attachments")
            .and_then(Value::as_object)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad(format!("{name}: a staged version comes with its tarball")))?;
        let version = one_new_version(name, &new, &versions)?;
        let manifest = versions.get(&version).cloned().unwrap_or_default();
        let upload = upload::check(name, version, manifest, attachments)?;
        Ok((body, upload))
    }

    /// Store a checked upload's tarball under its staged file and what approving it lists.
    async fn keep_staged(
        &self,
        name: &str,
        id: &str,
        upload: &Upload,
        body: &Map<String, Value>,
        email: &str,
    ) -> Result<(), Error> {
        let size = Some(upload.tarball.len() as u64);
        let file = staged_file(id);
        let mut sink = self
            .store
            .tarball_sink(name, &file, &upload.integrity, size)
            .await?;
        sink.write(&upload.tarball).await?;
        sink.commit().await?;
        let extras = ["dist-tags", "description", "readme"]
            .iter()
            .filter_map(|k| body.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        let record = StagedRecord {
            manifest: upload.manifest.clone(),
            integrity: upload.integrity.to_string(),
            provenance: upload.provenance.clone(),
            email: email.to_string(),
            extras,
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?;
        match self
            .store
            .put_state(&record_key(id), Bytes::from(bytes), Expect::Absent)
            .await?
        {
            Written::Stored(_) => Ok(()),
            Written::Conflict => Err(Error::store("a stage id was drawn twice: try again")),
        }
    }

    /// `GET /-/stage`: the staged versions `who` may review (of `package` only, when given),
    /// newest first, page `page` (from 0) of `per_page`.
    pub async fn staged(
        &self,
        who: &Identity,
        package: Option<&str>,
        page: u32,
        per_page: u32,
    ) -> Result<Value, Error> {
        let (index, _) = self.stage_index().await?;
        let mut reviews: HashMap<String, bool> = HashMap::new();
        let mut visible = Vec::new();
        for item in index.items {
            if package.is_some_and(|p| p != item.package_name) {
                continue;
            }
            let may = match reviews.get(&item.package_name) {
                Some(may) => *may,
                None => {
                    let may = self.may_review(&item.package_name, who).await?;
                    reviews.insert(item.package_name.clone(), may);
                    may
                }
            };
            if may {
                visible.push(item);
            }
        }
        let total = visible.len();
        let skip = (page as usize).saturating_mul(per_page as usize);
        let items: Vec<StagedItem> = visible
            .into_iter()
            .skip(skip)
            .take(per_page as usize)
            .collect();
        Ok(json!({ "items": items, "page": page, "perPage": per_page, "total": total }))
    }

    /// The versions of `package` staged and waiting for a maintainer, as (version, staged at,
    /// by whom), oldest first: what the console's package page says is not served yet.
    pub async fn staged_versions(
        &self,
        package: &str,
    ) -> Result<Vec<(String, String, String)>, Error> {
        let (index, _) = self.stage_index().await?;
        Ok(index
            .items
            .into_iter()
            .filter(|item| item.package_name == package)
            .map(|item| (item.version, item.created_at, item.actor))
            .collect())
    }

    /// `GET /-/stage/{id}`.
    pub async fn staged_item(&self, id: &str, who: &Identity) -> Result<Value, Error> {
        let item = self.find_staged(id, who).await?;
        serde_json::to_value(item).map_err(|e| Error::Internal(e.to_string()))
    }

    /// `GET /-/stage/{id}/tarball`: the staged tarball, checked against its integrity as it
    /// flows out.
    pub async fn staged_tarball(&self, id: &str, who: &Identity) -> Result<Served, Error> {
        let item = self.find_staged(id, who).await?;
        let found = self
            .store
            .tarball(&item.package_name, &staged_file(id))
            .await?
            .ok_or_else(|| missing_tarball(&item))?;
        Ok(Served::Stream(TarballStream {
            size: Some(found.size),
            etag: None,
            stream: found.stream.map_err(Error::from).boxed(),
        }))
    }

    /// `POST /-/stage/{id}/approve` by a maintainer (`email` is theirs): the tarball stored
    /// under the version's file, the version listed, the item off the index. Answers the
    /// answer's body and `name@version` (for the audit log).
    pub async fn approve(
        &self,
        id: &str,
        who: &Identity,
        email: &str,
    ) -> Result<(Value, String), Error> {
        let item = self.find_staged(id, who).await?;
        let (name, version) = (&item.package_name, &item.version);
        self.check_writer(name, who)?;
        let record = self.staged_record(id).await?;
        if let Some(held) = self.held(name).await? {
            if new_versions(
                Some(&held),
                &Map::from_iter([(version.clone(), Value::Null)]),
            )
            .is_empty()
            {
                return Err(listed_meanwhile(name, version));
            }
        }
        let integrity: Integrity = record
            .integrity
            .parse()
            .map_err(|_| Error::store(format!("the staged record {id} has a bad integrity")))?;
        let found = self
            .store
            .tarball(name, &staged_file(id))
            .await?
            .ok_or_else(|| missing_tarball(&item))?;
        let chunks: Vec<Bytes> = found.stream.try_collect().await?;
        let upload = Upload {
            version: version.clone(),
            manifest: record.manifest,
            tarball: chunks.concat(),
            integrity,
            provenance: record.provenance,
        };
        self.store_upload(name, &upload).await?;
        let stager = Identity {
            user: item.actor.clone(),
            readonly: false,
            token_hash: None,
            admin: false,
        };
        let manifest = self.listed_manifest(name, &upload, &stager, &record.email);
        self.list(name, who, email, version, manifest, &record.extras)
            .await?;
        self.unstage(id).await?;
        self.drop_staged_tarball(name, id, &tarball_file(name, version))
            .await;
        tracing::info!(
            package = name,
            version,
            id,
            user = who.user,
            "staged version approved"
        );
        let subject = format!("{name}@{version}");
        let answer = json!({ "message": format!("{subject} approved and published") });
        Ok((answer, subject))
    }

    /// `DELETE /-/stage/{id}` by a maintainer: the item off the index, its record dropped,
    /// its tarball deleted. Answers `name@version` (for the audit log).
    pub async fn reject(&self, id: &str, who: &Identity) -> Result<String, Error> {
        let item = self.find_staged(id, who).await?;
        self.check_writer(&item.package_name, who)?;
        self.unstage(id).await?;
        self.drop_staged_tarball(&item.package_name, id, "").await;
        tracing::info!(
            package = item.package_name,
            version = item.version,
            id,
            user = who.user,
            "staged version rejected"
        );
        Ok(format!("{}@{}", item.package_name, item.version))
    }

    /// Take `id` off the index (a concurrent approval or rejection took it: not found), then
    /// drop its record.
    async fn unstage(&self, id: &str) -> Result<(), Error> {
        self.edit_index(|index| {
            let before = index.items.len();
            index.items.retain(|i| i.id != id);
            if index.items.len() == before {
                return Err(not_staged(id));
            }
            Ok(())
        })
        .await?;
        // A tombstone: the record's bytes (a readme, a manifest) need not stay.
        let key = record_key(id);
        if let Some((_, token)) = self.store.state(&key).await? {
            let tombstone = Bytes::from_static(b"{}");
            let _ = self
                .store
                .put_state(&key, tombstone, Expect::Version(token))
                .await?;
        }
        Ok(())
    }

    /// Delete the staged tarball of `id` (off the index now: nothing reaches it), unless it is
    /// the file `keep` (what approval stored the version under). A failure leaves a file no
    /// route serves, not a wrong answer: logged, not returned.
    async fn drop_staged_tarball(&self, name: &str, id: &str, keep: &str) {
        let file = staged_file(id);
        if file == keep {
            return;
        }
        if let Err(error) = self.store.delete_tarball(name, &file).await {
            tracing::warn!(package = name, id, %error, "the staged tarball was not deleted");
        }
    }

    /// Whether `who` may review `name`'s staged versions: they may publish it (`[publish]
    /// owners`) and maintain it (anyone who may publish it, while it has no document).
    async fn may_review(&self, name: &str, who: &Identity) -> Result<bool, Error> {
        if !self.packuments.private().contains(name) || !self.config.may_publish(&who.user, name) {
            return Ok(false);
        }
        Ok(match self.held(name).await? {
            Some(doc) => check_maintainer(name, &doc, who).is_ok(),
            None => true,
        })
    }

    /// The staged item `id`, when `who` may review it; not found otherwise, so ids of
    /// packages a user has no part in are not even confirmed.
    async fn find_staged(&self, id: &str, who: &Identity) -> Result<StagedItem, Error> {
        let (index, _) = self.stage_index().await?;
        let item = index
            .items
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| not_staged(id))?;
        if !self.may_review(&item.package_name, who).await? {
            return Err(not_staged(id));
        }
        Ok(item)
    }

    /// What approving `id` lists.
    async fn staged_record(&self, id: &str) -> Result<StagedRecord, Error> {
        let (bytes, _) =
            self.store.state(&record_key(id)).await?.ok_or_else(|| {
                Error::store(format!("the record of staged version {id} is gone"))
            })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::store(format!("the record of staged version {id}: {e}")))
    }

    /// The index of staged versions and its stored version.
    async fn stage_index(&self) -> Result<(Index, Option<Token>), Error> {
        Ok(read_index(&self.store).await?)
    }

    /// Change the index with `edit` (read → edit → conditional put → on conflict again).
    async fn edit_index(
        &self,
        mut edit: impl FnMut(&mut Index) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for _ in 0..32 {
            let (mut index, token) = self.stage_index().await?;
            edit(&mut index)?;
            let bytes = serde_json::to_vec(&index).map_err(|e| Error::Internal(e.to_string()))?;
            let expect = Expect::from_read(token.as_ref());
            if let Written::Stored(_) = self
                .store
                .put_state(INDEX, Bytes::from(bytes), expect)
                .await?
            {
                return Ok(());
            }
        }
        Err(Error::store(
            "the index of staged versions kept changing: try again",
        ))
    }
}

/// No staged version `id` (or none the caller may see).
fn not_staged(id: &str) -> Error {
    Error::NotFound(format!("no staged version has the id {id}"))
}

/// The staged tarball of `item` is not in the store.
fn missing_tarball(item: &StagedItem) -> Error {
    Error::store(format!(
        "the tarball of staged {}@{} ({}) is missing from the store",
        item.package_name, item.version, item.id
    ))
}
