//! Tarballs upstream still serves for versions its packument no longer lists (a lockfile
//! written before the version was taken out pins one): fetched from upstream's own origin at
//! the registry's standard path, kept in the store and served like any other.
//!
//! Such a tarball has no published integrity to verify it against. sluice computes its sha512
//! as it arrives (spooled to an anonymous temporary file, not held in memory), stores the content under that (content-addressed, as every tarball) and
//! records the entry in its package's state object ([`records_key`], one small object per
//! package): name, file, version, sha512, upstream's `time` entry for the version when it kept
//! one. The record marks it unlisted; a later fetch
//! (after the store dropped a corrupt copy) must match the recorded sha512, and
//! `add-package --lockfile` must match the lockfile's integrity before anything is stored.
//!
//! Only a file of the registry's shape for the package (`<name>-<semver>.tgz`, the version
//! written canonically) is ever fetched; a private name never is. An upstream 404 for one is
//! remembered per package for [`super::RECHECK_EVERY`], so made-up file names cannot turn into
//! a stream of upstream requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_plugin_api::Packument;
use ssri::{Algorithm, Integrity, IntegrityChecker, IntegrityOpts};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{Error, Shared, Tarballs};
use crate::store::{now_ms, Expect, SharedStore, StoreError, Written};
use crate::upstream::UpstreamError;

/// The state object that recorded every unlisted tarball before records were kept per package
/// (one object growing with every record): read, never written, so a store an older sluice
/// wrote keeps its records.
pub const LEGACY_RECORDS: &str = "unlisted-tarballs";

/// The state object holding the count of records kept per package (status and metrics read
/// it instead of walking the packages).
const COUNT: &str = "unlisted-count";

/// The state object holding the records of the unlisted tarballs of `name`: one small object
/// per package, so no object grows with every package's records.
pub fn records_key(name: &str) -> String {
    format!("unlisted/{name}")
}

/// How many times a record's conditional put is retried after losing a race.
const ATTEMPTS: usize = 32;

/// The chunk a spooled tarball is read back into the store in.
const SPOOL_CHUNK: usize = 64 * 1024;

/// How old the count status and metrics show may get before it is read again (in the
/// background: a scrape never waits for the store).
const COUNT_EVERY: Duration = Duration::from_secs(30);

/// One unlisted tarball the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The package.
    pub name: String,
    /// The tarball's file name.
    pub file: String,
    /// The version its file name names.
    pub version: String,
    /// The sha512 of its content, computed when it was fetched.
    pub integrity: String,
    /// Upstream's `time` entry for the version, when it kept one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// When it was stored (unix milliseconds).
    pub stored_at: u64,
}

/// Unlisted tarballs the store keeps (of one package, or of all), by `<name>/-/<file>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Records {
    /// The records.
    #[serde(default)]
    pub tarballs: BTreeMap<String, Record>,
}

/// The key of tarball `file` of `name` in [`Records::tarballs`].
pub fn key(name: &str, file: &str) -> String {
    format!("{name}/-/{file}")
}

/// The version `file` names when it is a tarball file of `name` in the registry's shape,
/// `<name without scope>-<semver>.tgz` with the version written canonically; `None` otherwise.
pub fn file_version(name: &str, file: &str) -> Option<String> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let text = file
        .strip_prefix(base)?
        .strip_prefix('-')?
        .strip_suffix(".tgz")?;
    let version = nodejs_semver::Version::parse(text).ok()?;
    // `v1.0.0`, ` 1.0.0` or `=1.0.0` parse too: only the canonical text names the file.
    (version.to_string() == text).then(|| text.to_string())
}

/// What the plugins judge an unlisted version by: a document of `name` listing `version`
/// alone, with its publish time when upstream kept one.
pub fn policy_view(name: &str, version: &str, time: Option<&str>) -> Packument {
    let mut times = Map::new();
    if let Some(time) = time {
        times.insert(version.to_string(), json!(time));
    }
    let doc = json!({
        "name": name,
        "dist-tags": {},
        "versions": {version: {"name": name, "version": version}},
        "time": times,
    });
    match doc {
        Value::Object(doc) => Packument::new(doc),
        _ => Packument::new(Map::new()),
    }
}

/// The records of unlisted tarballs in the store, with their count as last read.
#[derive(Debug)]
pub struct Ledger {
    store: SharedStore,
    count: AtomicU64,
    /// When the count was last read.
    counted: Mutex<Option<Instant>>,
    /// A background read of the count is under way.
    counting: AtomicBool,
    /// The records of [`LEGACY_RECORDS`], read once (nothing writes them any more).
    legacy: tokio::sync::OnceCell<Arc<Records>>,
}

/// The count of records kept per package ([`COUNT`]).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Count {
    count: u64,
}

impl Ledger {
    /// The records kept in `store`.
    pub fn new(store: SharedStore) -> Self {
        Self {
            store,
            count: AtomicU64::new(0),
            counted: Mutex::new(None),
            counting: AtomicBool::new(false),
            legacy: tokio::sync::OnceCell::new(),
        }
    }

    fn unreadable(&self, key: &str, error: impl std::fmt::Display) -> StoreError {
        StoreError {
            location: self.store.location(),
            message: format!("the state object {key} cannot be read: {error}"),
        }
    }

    /// The state object `key` read as a `T` (its default when there is none), with its
    /// version.
    async fn read_state<T: Default + for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<(T, Option<crate::store::Token>), StoreError> {
        match self.store.state(key).await? {
            Some((bytes, token)) => serde_json::from_slice(&bytes)
                .map(|value| (value, Some(token)))
                .map_err(|e| self.unreadable(key, e)),
            None => Ok((T::default(), None)),
        }
    }

    /// The records an older sluice kept in one object.
    async fn legacy(&self) -> Result<Arc<Records>, StoreError> {
        self.legacy
            .get_or_try_init(|| async {
                Ok(Arc::new(
                    self.read_state::<Records>(LEGACY_RECORDS).await?.0,
                ))
            })
            .await
            .cloned()
    }

    /// Every record, of every package (`migrate`): the packages are those the store keeps a
    /// document of (an unlisted tarball is only ever fetched for one).
    pub async fn all(&self) -> Result<Records, StoreError> {
        let mut all = Records::clone(&*self.legacy().await?);
        for name in crate::store::all_names(self.store.as_ref()).await? {
            let (records, _) = self.read_state::<Records>(&records_key(&name)).await?;
            all.tarballs.extend(records.tarballs);
        }
        Ok(all)
    }

    /// The record of tarball `file` of `name`, if the store keeps it as unlisted.
    pub async fn get(&self, name: &str, file: &str) -> Result<Option<Record>, StoreError> {
        let key = key(name, file);
        let (mut records, _) = self.read_state::<Records>(&records_key(name)).await?;
        match records.tarballs.remove(&key) {
            Some(record) => Ok(Some(record)),
            None => Ok(self.legacy().await?.tarballs.get(&key).cloned()),
        }
    }

    /// Add `record` to its package's records (read → add → conditional put, again on a lost
    /// race), and count it when it is new.
    pub async fn put(&self, record: &Record) -> Result<(), StoreError> {
        let key = key(&record.name, &record.file);
        let object = records_key(&record.name);
        for _ in 0..ATTEMPTS {
            let (mut records, token) = self.read_state::<Records>(&object).await?;
            if records.tarballs.get(&key) == Some(record) {
                return Ok(());
            }
            let new = records
                .tarballs
                .insert(key.clone(), record.clone())
                .is_none()
                && !self.legacy().await?.tarballs.contains_key(&key);
            let bytes = serde_json::to_vec(&records).map_err(|e| self.unreadable(&object, e))?;
            let expect = Expect::from_read(token.as_ref());
            if let Written::Stored(_) = self.store.put_state(&object, bytes.into(), expect).await? {
                if new {
                    self.add_to_count().await?;
                }
                return Ok(());
            }
        }
        Err(self.kept_changing(&object))
    }

    fn kept_changing(&self, key: &str) -> StoreError {
        StoreError {
            location: self.store.location(),
            message: format!("{key} kept changing under this node: try again"),
        }
    }

    /// One more record in [`COUNT`].
    async fn add_to_count(&self) -> Result<(), StoreError> {
        for _ in 0..ATTEMPTS {
            let (mut count, token) = self.read_state::<Count>(COUNT).await?;
            count.count += 1;
            let bytes = serde_json::to_vec(&count).map_err(|e| self.unreadable(COUNT, e))?;
            let expect = Expect::from_read(token.as_ref());
            if let Written::Stored(_) = self.store.put_state(COUNT, bytes.into(), expect).await? {
                let legacy = self.legacy().await?.tarballs.len() as u64;
                self.counted(count.count + legacy);
                return Ok(());
            }
        }
        Err(self.kept_changing(COUNT))
    }

    /// How many records the store keeps, read now.
    async fn read_count(&self) -> Result<u64, StoreError> {
        let (count, _) = self.read_state::<Count>(COUNT).await?;
        let total = count.count + self.legacy().await?.tarballs.len() as u64;
        self.counted(total);
        Ok(total)
    }

    fn counted(&self, count: u64) {
        self.count.store(count, Ordering::Release);
        *self.counted.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// How many unlisted tarballs the store keeps, as last read; reads it again in the
    /// background when that was long ago (or never).
    pub fn count(self: &Arc<Self>) -> u64 {
        let due = self
            .counted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= COUNT_EVERY);
        if due
            && tokio::runtime::Handle::try_current().is_ok()
            && !self.counting.swap(true, Ordering::AcqRel)
        {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(error) = this.read_count().await {
                    tracing::warn!(%error, "cannot count the unlisted tarballs");
                }
                this.counting.store(false, Ordering::Release);
            });
        }
        self.count.load(Ordering::Acquire)
    }
}

/// An unlisted tarball a request found: its version, and what is known of it.
#[derive(Debug, Clone)]
pub struct Unlisted {
    /// The version its file name names.
    pub version: String,
    /// Upstream's `time` entry for it, when it kept one.
    pub time: Option<String>,
    /// Its record, when the store keeps it already.
    pub record: Option<Record>,
}

impl Tarballs {
    /// Refuse the unlisted `version` of `name` when a plugin hides it (judged on a document
    /// that lists it alone, with its `time` entry when upstream kept one).
    pub(super) fn judge_unlisted(&self, name: &str, found: &Unlisted) -> Result<(), Error> {
        let view = policy_view(name, &found.version, found.time.as_deref());
        let hidden = self.host.hidden(&view, SystemTime::now())?;
        match hidden.reasons.get(&found.version) {
            Some(reason) => Err(Error::Forbidden(reason.clone())),
            None => Ok(()),
        }
    }

    /// Make sure the unlisted tarball `file` of `name` is stored and recorded: fetched from
    /// upstream when it is not (one fetch however many ask at once). With `expected` (a
    /// lockfile's integrity), its content must match it.
    pub(super) async fn ensure_unlisted(
        self: &Arc<Self>,
        name: &str,
        file: &str,
        found: &Unlisted,
        expected: Option<&Integrity>,
    ) -> Shared<Record> {
        let this = self.clone();
        let (task_name, task_file) = (name.to_string(), file.to_string());
        let (task_found, task_expected) = (found.clone(), expected.cloned());
        let (record, _) = self
            .unlisted_flights
            .run((name.into(), file.into()), async move {
                this.store_unlisted(&task_name, &task_file, &task_found, task_expected.as_ref())
                    .await
            })
            .await;
        let record = record?;
        if let Some(expected) = expected {
            // A flight another request started did not check it.
            self.check_stored(name, file, expected).await?;
        }
        Ok(record)
    }

    /// Fetch, verify, store and record the unlisted tarball `file` of `name` (the work of one
    /// flight).
    async fn store_unlisted(
        &self,
        name: &str,
        file: &str,
        found: &Unlisted,
        expected: Option<&Integrity>,
    ) -> Shared<Record> {
        if self.packuments.private().contains(name) {
            // Published here: upstream is never asked.
            return Err(Error::NotFound(format!(
                "{name}/-/{file} is not in this registry's store"
            )));
        }
        let stored = self.store.tarball(name, file).await?;
        if let (Some(record), true) = (&found.record, stored.is_some()) {
            return Ok(record.clone());
        }
        let record = match stored {
            // Stored while the version was listed (or before a record could be written).
            Some(body) => self.record_of(name, file, found, &body.integrity),
            None => {
                let (mut spool, integrity, len) =
                    self.fetch_unlisted(name, file, found, expected).await?;
                let mut sink = self
                    .store
                    .tarball_sink(name, file, &integrity, Some(len))
                    .await?;
                spool
                    .rewind()
                    .await
                    .map_err(|e| spool_failed(name, file, &e))?;
                let mut chunk = vec![0u8; SPOOL_CHUNK];
                loop {
                    let n = spool
                        .read(&mut chunk)
                        .await
                        .map_err(|e| spool_failed(name, file, &e))?;
                    if n == 0 {
                        break;
                    }
                    sink.write(&chunk[..n]).await?;
                }
                sink.commit().await?;
                self.record_of(name, file, found, &integrity)
            }
        };
        self.ledger.put(&record).await?;
        tracing::info!(package = name, file, version = %record.version, integrity = %record.integrity, "stored a tarball upstream serves but does not list");
        Ok(record)
    }

    fn record_of(&self, name: &str, file: &str, found: &Unlisted, sri: &Integrity) -> Record {
        let sha512 = sri
            .hashes
            .iter()
            .find(|h| h.algorithm == Algorithm::Sha512)
            .map(|h| Integrity {
                hashes: vec![h.clone()],
            })
            .unwrap_or_else(|| sri.clone());
        Record {
            name: name.to_string(),
            file: file.to_string(),
            version: found.version.clone(),
            integrity: sha512.to_string(),
            time: found.time.clone(),
            stored_at: now_ms(),
        }
    }

    /// The unlisted tarball `file` of `name` from upstream's own origin at the registry's
    /// standard path (never a URL from elsewhere), spooled to an anonymous temporary file (so
    /// memory stays bounded whatever its size) and checked against the record's sha512 (if it
    /// had one) and `expected`.
    ///
    /// Returns the spool, the sha512 of its content and its length.
    async fn fetch_unlisted(
        &self,
        name: &str,
        file: &str,
        found: &Unlisted,
        expected: Option<&Integrity>,
    ) -> Shared<(tokio::fs::File, Integrity, u64)> {
        let what = format!("{name}/-/{file}");
        // Remembered by file, not by package: a request for a made-up version never hides a
        // real unlisted tarball of the same package.
        let key: (std::sync::Arc<str>, std::sync::Arc<str>) = (name.into(), file.into());
        if self.missing.contains_key(&key) {
            return Err(Error::NotFound(format!(
                "the upstream registry has no tarball {what} (asked recently)"
            )));
        }
        let upstream = match self.upstream.tarball(name, file, None).await? {
            Some(upstream) => upstream,
            None => {
                self.missing.insert(key, ());
                return Err(Error::NotFound(format!(
                    "no version of {name} has the tarball {file}, and the upstream registry has none"
                )));
            }
        };
        let spool = tempfile::tempfile().map_err(|e| spool_failed(name, file, &e))?;
        let mut spool = tokio::fs::File::from_std(spool);
        let mut sha512 = IntegrityOpts::new().algorithm(Algorithm::Sha512);
        let recorded = found
            .record
            .as_ref()
            .and_then(|r| crate::core::usable_integrity(&r.integrity));
        let mut checks: Vec<IntegrityChecker> = recorded
            .iter()
            .chain(expected)
            .map(|sri| IntegrityChecker::new(sri.clone()))
            .collect();
        let mut len = 0u64;
        let mut stream = upstream.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            sha512.input(&chunk);
            for check in &mut checks {
                check.input(&chunk);
            }
            len += chunk.len() as u64;
            spool
                .write_all(&chunk)
                .await
                .map_err(|e| spool_failed(name, file, &e))?;
        }
        let mut checks = checks.into_iter();
        if let Some(recorded) = recorded {
            if checks.next().is_some_and(|c| c.result().is_err()) {
                return Err(Error::Upstream(UpstreamError::Integrity(format!(
                    "{what} is not the content recorded when it was first stored ({recorded})"
                ))));
            }
        }
        if let Some(expected) = expected {
            if checks.next().is_some_and(|c| c.result().is_err()) {
                return Err(mismatch(&what, expected));
            }
        }
        Ok((spool, sha512.result(), len))
    }

    /// Check the stored tarball `file` of `name` against `expected`.
    async fn check_stored(&self, name: &str, file: &str, expected: &Integrity) -> Shared<()> {
        let what = format!("{name}/-/{file}");
        let Some(body) = self.store.tarball(name, file).await? else {
            return Err(Error::store(format!(
                "{what} was stored but cannot be read back"
            )));
        };
        let mut checker = IntegrityChecker::new(expected.clone());
        let mut stream = body.stream;
        while let Some(chunk) = stream.next().await {
            checker.input(&chunk?);
        }
        checker
            .result()
            .map(|_| ())
            .map_err(|_| mismatch(&what, expected))
    }
}

/// A temporary file that failed while a tarball passed through it.
fn spool_failed(name: &str, file: &str, error: &std::io::Error) -> Error {
    Error::Internal(format!(
        "{name}/-/{file}: the temporary file it passes through failed: {error}"
    ))
}

/// The refusal of a tarball whose content is not what a lockfile says.
fn mismatch(what: &str, expected: &Integrity) -> Error {
    Error::Conflict(format!(
        "{what}: what the upstream registry serves does not match the lockfile's integrity {expected}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_registry_shape_names_a_version() {
        assert_eq!(
            file_version("left", "left-1.2.3.tgz").as_deref(),
            Some("1.2.3")
        );
        assert_eq!(
            file_version("@s/x", "x-1.0.0-beta.1.tgz").as_deref(),
            Some("1.0.0-beta.1")
        );
        for (name, file) in [
            ("left", "right-1.2.3.tgz"),
            ("left", "left-v1.2.3.tgz"),
            ("left", "left-1.2.tgz"),
            ("left", "left-1.2.3.tar.gz"),
            ("left", "left-pad-1.2.3.tgz"),
            ("left", "left-=1.2.3.tgz"),
            ("left", "left-01.2.3.tgz"),
            ("@s/x", "@s/x-1.0.0.tgz"),
            ("left", "left-1.2.3.tgz?x"),
        ] {
            assert_eq!(file_version(name, file), None, "{name} {file}");
        }
    }

    #[test]
    fn the_policy_view_lists_the_version_alone_with_its_time() {
        let view = policy_view("left", "1.0.0", Some("2020-01-01T00:00:00.000Z"));
        assert_eq!(view.name(), Some("left"));
        assert_eq!(view.versions().unwrap().len(), 1);
        assert_eq!(view.published("1.0.0"), Some("2020-01-01T00:00:00.000Z"));
        assert_eq!(policy_view("left", "1.0.0", None).published("1.0.0"), None);
    }
}
