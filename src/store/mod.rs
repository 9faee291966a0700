//! The store: the only door to persistent data. [`Store`] is the contract; [`DiskStore`]
//! (cacache in a folder) is the embedded default backend; [`Faulty`] wraps any store to inject
//! faults in tests. A wrapper store implements [`forward::Forward`] and writes only the
//! operations it changes. The hot cache of rendered bodies ([`HotCache`]) lives here too, in memory.
//!
//! What the contract guarantees, whatever the backend:
//! - a packument put names what it expects to replace (nothing, or a version token it read);
//!   a put that lost a race answers [`Written::Conflict`] and changes nothing, so a merge is
//!   read → merge → conditional put → on conflict read and merge again, and no version is lost
//!   when several processes (or machines) merge one package at once;
//! - a tarball is verified against its published integrity while it streams in and becomes
//!   visible only once it is complete and verified; a stored tarball that fails its check
//!   while it streams out ends its stream with an error, before its last bytes;
//! - small state objects (the mirror checkpoint…) have the same conditional put;
//! - a tarball name can be deleted: it is then absent, and its bytes are freed unless another
//!   name keeps the same content (backends keep each content once).

mod disk;
mod faulty;
pub mod forward;
mod hot;
mod instrumented;
pub mod lease;
mod measured;
mod s3;
mod tiered;

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use ssri::Integrity;

pub use disk::DiskStore;
pub use faulty::{Fault, Faulty};
pub use hot::{tarball_etag, HotCache, HotKey, HotKeyRef, NameCache, Rendered};
pub use instrumented::{Instrumented, OpStats};
pub use measured::Measured;
pub use s3::S3Store;
pub use tiered::Tiered;

/// A store operation that failed (disk full, permissions, an unreachable bucket…).
#[derive(Debug, Clone, thiserror::Error)]
#[error("store {location}: {message}")]
pub struct StoreError {
    /// Where the store is (its folder or bucket).
    pub location: String,
    /// What failed.
    pub message: String,
}

/// An opaque version of a stored object: it changes whenever the object changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Token(Arc<str>);

impl Token {
    /// A token from a backend's own version text.
    pub fn new(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }

    /// The backend's version text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a conditional put expects to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Nothing: the put creates the object.
    Absent,
    /// The object at exactly this version.
    Version(Token),
}

impl Expect {
    /// `Version` of what was read, `Absent` when nothing was.
    pub fn from_read(token: Option<&Token>) -> Self {
        token.map_or(Expect::Absent, |t| Expect::Version(t.clone()))
    }
}

/// The outcome of a conditional put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Stored; the object's new version.
    Stored(Token),
    /// The object is not what the put expected: nothing was written.
    Conflict,
}

/// What we know about a stored packument besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackumentMeta {
    /// Upstream's `ETag`, for conditional requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Upstream's `Last-Modified`, for conditional requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// When upstream last confirmed this document (unix milliseconds).
    pub fetched_at: u64,
    /// In a node's local copy: the version of the shared store's object it copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// A packument read from the store.
#[derive(Debug, Clone)]
pub struct StoredPackument {
    /// The merged document as upstream sent it (never with our links).
    pub bytes: Bytes,
    /// Validators and freshness.
    pub meta: PackumentMeta,
    /// Its version in the store, for a conditional put.
    pub token: Token,
    /// Served from a node's local copy because the shared store could not be reached.
    pub stale: bool,
}

/// A stored tarball as a local file, for `sendfile(2)`: its content was checked against its
/// integrity (in this process, since the file last changed), so its bytes may go out without
/// passing through sluice.
#[derive(Debug)]
pub struct TarballFile {
    /// The open content file.
    pub file: std::fs::File,
    /// Its length in bytes.
    pub size: u64,
    /// The integrity of its content.
    pub integrity: Integrity,
}

/// A stored tarball, streaming out.
pub struct TarballBody {
    /// Its length in bytes.
    pub size: u64,
    /// The integrity of the stored content (what its ETag derives from).
    pub integrity: Integrity,
    /// Its bytes, checked against the stored integrity as they flow: a mismatch ends the stream
    /// with an error before its last chunk (and drops the entry, so it is fetched again).
    pub stream: BoxStream<'static, Result<Bytes, StoreError>>,
}

impl fmt::Debug for TarballBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarballBody")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A tarball streaming into the store. Dropping it without [`TarballSink::commit`] leaves
/// nothing behind.
#[async_trait]
pub trait TarballSink: Send {
    /// Append a chunk.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError>;

    /// Check the whole against the integrity given when the sink was opened and make it
    /// visible; a mismatch stores nothing and answers an error.
    ///
    /// Returns the integrity the store keeps the content under.
    async fn commit(self: Box<Self>) -> Result<Integrity, StoreError>;
}

/// An exclusive claim (one mirror follower per store); released when dropped or when its
/// process dies.
pub type Claim = Box<dyn std::any::Any + Send + Sync>;

/// What `verify` found.
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    /// Entries whose content matched.
    pub ok: u64,
    /// Keys whose content did not match (dropped).
    pub corrupt: Vec<String>,
    /// Keys whose content was gone (dropped).
    pub missing: Vec<String>,
}

/// The persistent store: packuments, tarballs and small state objects.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Where the store is, for messages and logs (a folder, a bucket).
    fn location(&self) -> String;

    /// The stored packument of `name`; `None` when absent (or corrupt, then dropped).
    async fn packument(&self, name: &str) -> Result<Option<StoredPackument>, StoreError>;

    /// The stored packument's metadata and version only, without reading its bytes.
    async fn packument_meta(
        &self,
        name: &str,
    ) -> Result<Option<(PackumentMeta, Token)>, StoreError>;

    /// Store `bytes` as the packument of `name` if what is stored is what `expect` says.
    async fn put_packument(
        &self,
        name: &str,
        bytes: Bytes,
        meta: &PackumentMeta,
        expect: Expect,
    ) -> Result<Written, StoreError>;

    /// Record new metadata (a revalidation that found no change) for the packument of `name`
    /// stored at version `expect`, keeping its bytes.
    async fn touch_packument(
        &self,
        name: &str,
        meta: &PackumentMeta,
        expect: &Token,
    ) -> Result<Written, StoreError>;

    /// The stored tarball `file` of `name`, streaming; `None` when absent.
    async fn tarball(&self, name: &str, file: &str) -> Result<Option<TarballBody>, StoreError>;

    /// Tarball `file` of `name` as a verified local file, when the store keeps it in one (the
    /// disk store and a node's local tier); `None` otherwise, or when it is not stored (read
    /// it with [`Store::tarball`] then).
    async fn tarball_file(
        &self,
        _name: &str,
        _file: &str,
    ) -> Result<Option<TarballFile>, StoreError> {
        Ok(None)
    }

    /// Whether tarball `file` of `name` is stored (its content is checked when read).
    async fn has_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError>;

    /// Open a sink for tarball `file` of `name`, to be verified against `integrity`; `size` is
    /// its length when known. Storing a tarball that is already stored is harmless.
    async fn tarball_sink(
        &self,
        name: &str,
        file: &str,
        integrity: &Integrity,
        size: Option<u64>,
    ) -> Result<Box<dyn TarballSink>, StoreError>;

    /// Delete tarball `file` of `name`: afterwards it is absent. Its content is freed too
    /// unless another name keeps the same bytes (the disk store looks through every name, the
    /// bucket through the names of the same package: identical bytes under two packages are
    /// only ever upstream's, which are fetched again). Answers whether there was one.
    async fn delete_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError>;

    /// The state object `key` and its version.
    async fn state(&self, key: &str) -> Result<Option<(Bytes, Token)>, StoreError>;

    /// Store the state object `key` if what is stored is what `expect` says.
    async fn put_state(
        &self,
        key: &str,
        bytes: Bytes,
        expect: Expect,
    ) -> Result<Written, StoreError>;

    /// Claim `what` exclusively; `None` when another holder has it.
    async fn claim(&self, what: &str) -> Result<Option<Claim>, StoreError>;

    /// The name of every stored packument.
    fn packument_names(&self) -> BoxStream<'static, Result<String, StoreError>>;

    /// The bytes the store takes. A backend measures them (walks its folder, lists its
    /// bucket) on every call: [`Measured`] keeps them for requests.
    async fn usage(&self) -> Result<u64, StoreError>;

    /// Forget any local copy of the packument of `name` (another node changed it).
    ///
    /// By default there is none to forget.
    fn forget(&self, _name: &str) {}

    /// Forget every local copy of a packument.
    ///
    /// By default there is none to forget.
    fn forget_all(&self) {}

    /// Check every entry against its integrity; drop the corrupt or missing ones (they are
    /// fetched again on demand). `progress` gets (done, total) after each entry.
    async fn verify(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<VerifyReport, StoreError>;
}

/// The store every part shares.
pub type SharedStore = Arc<dyn Store>;

/// The store `[storage]` configures: the disk folder, or the bucket (checked now: reachable,
/// credentials accepted, conditional writes enforced) behind this node's local tier.
pub fn open(config: &crate::config::Config) -> Result<SharedStore, StoreError> {
    let canonical = open_canonical(config)?;
    match config.storage.backend {
        crate::config::Backend::S3 => Ok(Arc::new(Tiered::new(
            DiskStore::new(&config.storage.dir),
            canonical,
            config.storage.local_max,
        ))),
        crate::config::Backend::Disk => Ok(canonical),
    }
}

/// The canonical store `[storage]` configures, without a node's local tier (what `migrate`
/// copies from and into).
pub fn open_canonical(config: &crate::config::Config) -> Result<SharedStore, StoreError> {
    let storage = &config.storage;
    match (&storage.backend, &storage.s3) {
        (crate::config::Backend::S3, Some(s3)) => {
            let (node, lease, timeout) = (
                config.cluster.node.clone(),
                config.cluster.lease,
                config.upstream.timeout,
            );
            let store = S3Store::connect(s3, &node, lease, timeout)?;
            // The checks run on a runtime of their own (the caller may have none, or be on
            // one), with a client of their own.
            let probe = S3Store::connect(s3, &node, lease, timeout)?;
            std::thread::scope(|scope| {
                scope
                    .spawn(move || {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| StoreError {
                                location: probe.location(),
                                message: e.to_string(),
                            })?
                            .block_on(probe.prove_conditional_writes())
                    })
                    .join()
                    .unwrap_or_else(|_| {
                        Err(StoreError {
                            location: s3.bucket.clone(),
                            message: "the start-up check panicked".into(),
                        })
                    })
            })?;
            Ok(Arc::new(store))
        }
        _ => Ok(Arc::new(DiskStore::new(&storage.dir))),
    }
}

/// `stream` checked against `integrity` as it flows: each chunk is handed on only once the next
/// one arrived, and the last only once the whole matched; a mismatch ends the stream with
/// `mismatch()` instead of the last chunk.
pub fn verified_stream(
    stream: BoxStream<'static, Result<Bytes, StoreError>>,
    integrity: Integrity,
    mismatch: impl Fn() -> StoreError + Send + 'static,
) -> BoxStream<'static, Result<Bytes, StoreError>> {
    use futures::StreamExt;
    struct State<F> {
        inner: Option<BoxStream<'static, Result<Bytes, StoreError>>>,
        checker: Option<ssri::IntegrityChecker>,
        held: Option<Bytes>,
        mismatch: F,
    }
    let state = State {
        inner: Some(stream),
        checker: Some(ssri::IntegrityChecker::new(integrity)),
        held: None,
        mismatch,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            let inner = state.inner.as_mut()?;
            match inner.next().await {
                Some(Ok(chunk)) => {
                    if let Some(checker) = state.checker.as_mut() {
                        checker.input(&chunk);
                    }
                    if let Some(previous) = state.held.replace(chunk) {
                        return Some((Ok(previous), state));
                    }
                }
                Some(Err(error)) => {
                    state.inner = None;
                    return Some((Err(error), state));
                }
                None => {
                    state.inner = None;
                    let matched = state.checker.take().is_some_and(|c| c.result().is_ok());
                    if !matched {
                        state.held = None;
                        let error = (state.mismatch)();
                        return Some((Err(error), state));
                    }
                    let last = state.held.take()?;
                    return Some((Ok(last), state));
                }
            }
        }
    })
    .boxed()
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Collect a names stream into a sorted list (background work and search).
pub async fn all_names(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    use futures::TryStreamExt;
    let mut names: Vec<String> = store.packument_names().try_collect().await?;
    names.sort();
    names.dedup();
    Ok(names)
}
