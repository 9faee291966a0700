//! Tarballs: refused when a plugin hides their version, looked up in the packument (a version
//! published since the last refresh makes sluice re-read it once), and streamed: from memory
//! (up to `storage.hot_tarball_max`), from the store, or from upstream into the client and the
//! store at once, verified against the published integrity as the bytes flow.
//!
//! A tarball of the registry's shape whose version even the re-read packument does not list is
//! one upstream serves but no longer lists: see [`unlisted`].
//!
//! A body is never completed unless it is whole and verified: the last chunk is held back
//! until the check passed, and a failed check ends the stream with an error (the proxy then
//! aborts the response). Concurrent requests for one uncached tarball make one upstream fetch:
//! the first request streams it; the others wait until it is committed and read the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use sluice_plugin_api::{CacheStatus, Packument};
use ssri::{Integrity, IntegrityChecker};
use tokio::sync::{mpsc, oneshot};

use super::packuments::Packuments;
use super::{parse_document, published_integrity, Error, Shared};
use crate::flight::SingleFlight;
use crate::plugins::Host;
use crate::store::{
    now_ms, tarball_etag, HotCache, HotKey, HotKeyRef, NameCache, Rendered, SharedStore,
    TarballFile, TarballSink, Token,
};
use crate::upstream::{Upstream, UpstreamBody, UpstreamError};

mod unlisted;

use unlisted::Unlisted;
pub use unlisted::{file_version, records_key, Ledger, Record, Records, LEGACY_RECORDS};

/// How often, at most, a request for a tarball the stored packument does not list makes sluice
/// ask upstream for that packument again (per package, whatever the outcome).
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// Chunks a slow first client may leave unread before the download waits for it.
const CLIENT_BUFFER: usize = 64;

/// How long the download waits for a first client that takes nothing: then the client is cut
/// off (its response is aborted; it retries from the store) and the download goes on at full
/// speed for everyone else.
const SLOW_CLIENT: Duration = Duration::from_secs(10);

/// Above this size a tarball goes to a plain HTTP/1 connection out of its file by sendfile(2)
/// even when memory holds it: a 300 KB tarball written from memory cost 101 µs of CPU a
/// response, from its file 56 µs; a file costs about 11 µs more than memory whatever its size,
/// a copy about 0.15 µs a KB, so they break even near 70 KB (release build, 2 cores, wrk).
const FILE_MIN: u64 = 64 << 10;

/// A tarball as served.
pub enum Served {
    /// Held whole in memory (small tarballs).
    Whole(Arc<Rendered>),
    /// Streaming (from the store or upstream).
    Stream(TarballStream),
    /// A verified local file, for a connection that can be sent it with `sendfile(2)`.
    File {
        /// The file, its length and integrity.
        file: TarballFile,
        /// Its ETag.
        etag: Option<Arc<str>>,
    },
}

/// A tarball body streaming to a client.
pub struct TarballStream {
    /// Its length, when known.
    pub size: Option<u64>,
    /// Its ETag, when known before the body is.
    pub etag: Option<Arc<str>>,
    /// Its bytes; an error means the body is not whole and the response must be aborted.
    pub stream: BoxStream<'static, Result<Bytes, Error>>,
}

/// One version's tarball, as the packument publishes it.
#[derive(Debug, Clone)]
struct Listed {
    version: String,
    integrity: Option<Integrity>,
    published: Option<String>,
}

/// What tarball requests need to know of a packument, kept per package until it changes.
#[derive(Debug)]
pub struct Index {
    /// The stored version it was built from.
    token: Option<Token>,
    files: HashMap<String, Listed>,
    /// Hidden version → the reason a plugin gave.
    hidden: HashMap<String, String>,
    /// Version → upstream's `time` entry, for the versions the document does not list.
    unlisted_times: HashMap<String, String>,
    generation: u64,
    expires_at: Option<u64>,
}

impl Index {
    /// The listing of `file` (an index from [`Tarballs::indexed`] has it).
    fn listed(&self, file: &str) -> Result<&Listed, Error> {
        self.files
            .get(file)
            .ok_or_else(|| Error::Internal(format!("the index lost its listing of {file}")))
    }
}

/// Where a requested tarball file stands.
enum Found {
    /// The packument lists it (the index has its listing).
    Listed(Arc<Index>),
    /// Upstream's packument does not list it, though the file is of the registry's shape.
    Unlisted(Unlisted),
}

/// What a download flight ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Downloaded {
    /// Verified and committed to the store.
    Stored,
    /// Verified, but the store could not keep it.
    NotStored,
}

type DownloadKey = (Arc<str>, Arc<str>);

/// A re-read of a packument for an unlisted tarball, shared by the requests that need it.
type Recheck = futures::future::Shared<futures::future::BoxFuture<'static, Result<(), Error>>>;

/// A download in flight, to await, and whether this caller started it.
type Flight = (
    futures::future::Shared<futures::future::BoxFuture<'static, Shared<Downloaded>>>,
    bool,
);

/// The tarball indexes of recently asked-for packages: built from a packument once, dropped
/// when it changes ([`TarballIndexes::invalidate`]).
#[derive(Clone)]
pub struct TarballIndexes(Arc<NameCache<Arc<Index>>>);

impl Default for TarballIndexes {
    fn default() -> Self {
        Self(Arc::new(NameCache::new(4096)))
    }
}

impl TarballIndexes {
    /// Forget the index of `name` (its packument changed).
    pub fn invalidate(&self, name: &str) {
        self.0.invalidate(name);
    }

    /// Forget every index.
    pub fn invalidate_all(&self) {
        self.0.invalidate_all();
    }
}

/// The tarballs part of the core.
pub struct Tarballs {
    packuments: Arc<Packuments>,
    host: Arc<Host>,
    store: SharedStore,
    upstream: Upstream,
    hot: HotCache,
    hot_max: u64,
    indexes: TarballIndexes,
    downloads: SingleFlight<DownloadKey, Shared<Downloaded>>,
    /// Index builds in flight: concurrent first requests for a package parse its document once.
    builds: SingleFlight<Arc<str>, Shared<Arc<Index>>>,
    /// Packages re-read for an unlisted tarball recently, with the re-read (requests that come
    /// while it runs wait for it).
    rechecked: moka::sync::Cache<Arc<str>, Recheck>,
    /// The records of the unlisted tarballs the store keeps.
    ledger: Arc<Ledger>,
    /// Packages upstream recently answered 404 for an unlisted tarball of.
    missing: moka::sync::Cache<(Arc<str>, Arc<str>), ()>,
    /// Unlisted tarballs being fetched and recorded.
    unlisted_flights: SingleFlight<DownloadKey, Shared<Record>>,
}

impl std::fmt::Debug for Tarballs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tarballs")
            .field("hot_max", &self.hot_max)
            .finish_non_exhaustive()
    }
}

impl Tarballs {
    /// Tarballs of `packuments`' packages, kept in `store`, fetched from `upstream`; those up
    /// to `hot_max` bytes are held whole in `hot`; `indexes` hears of packument changes.
    pub fn new(
        packuments: Arc<Packuments>,
        host: Arc<Host>,
        store: SharedStore,
        upstream: Upstream,
        hot: (HotCache, u64),
        indexes: TarballIndexes,
    ) -> Self {
        let (hot, hot_max) = hot;
        let ledger = Arc::new(Ledger::new(store.clone()));
        Self {
            packuments,
            host,
            store,
            upstream,
            hot,
            hot_max,
            indexes,
            downloads: SingleFlight::default(),
            builds: SingleFlight::default(),
            rechecked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(RECHECK_EVERY)
                .build(),
            ledger,
            missing: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(RECHECK_EVERY)
                .build(),
            unlisted_flights: SingleFlight::default(),
        }
    }

    /// How many unlisted tarballs the store keeps, as last counted (status and metrics).
    pub fn unlisted_count(&self) -> u64 {
        self.ledger.count()
    }

    /// The records of the unlisted tarballs the store keeps.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Tarball `file` of `name` for a client: refused (403 with the plugin's reason) when its
    /// version is hidden; from memory, the store, or upstream. A file of the registry's shape
    /// that upstream no longer lists is fetched, stored and recorded as unlisted.
    ///
    /// With `files`, a tarball larger than `storage.hot_tarball_max` that the store keeps in a
    /// verified local file is served as that file (the connection sends it with `sendfile(2)`).
    pub async fn serve(
        self: &Arc<Self>,
        name: &str,
        file: &str,
        files: bool,
    ) -> Result<(Served, CacheStatus), Error> {
        // The index is looked up once; the listing is copied out only for a download.
        let index = match self.locate(name, file).await? {
            Found::Listed(index) => index,
            Found::Unlisted(found) => return self.serve_unlisted(name, file, &found, files).await,
        };
        if let Some(reason) = index.hidden.get(&index.listed(file)?.version) {
            return Err(Error::Forbidden(reason.clone()));
        }
        if let Some(served) = self.kept(name, file, files).await? {
            return Ok((served, CacheStatus::Hit));
        }
        let listed = index.listed(file)?.clone();
        Ok((self.download(name, file, &listed).await?, CacheStatus::Miss))
    }

    /// An unlisted tarball for a client: judged by the plugins on its name, version and
    /// publish time, then served from the store, where it is put first when it is not there.
    async fn serve_unlisted(
        self: &Arc<Self>,
        name: &str,
        file: &str,
        found: &Unlisted,
        files: bool,
    ) -> Result<(Served, CacheStatus), Error> {
        self.judge_unlisted(name, found)?;
        if found.record.is_some() {
            if let Some(served) = self.kept(name, file, files).await? {
                return Ok((served, CacheStatus::Hit));
            }
        }
        self.ensure_unlisted(name, file, found, None).await?;
        match self.kept(name, file, files).await? {
            Some(served) => Ok((served, CacheStatus::Miss)),
            None => Err(Error::Store(Arc::new(crate::store::StoreError {
                location: self.store.location(),
                message: format!(
                    "{name}/-/{file} was fetched but the store could not keep it; try again"
                ),
            }))),
        }
    }

    /// Tarball `file` of `name` from memory, as a local file (with `files`, when large) or from
    /// the store; `None` when it is not stored.
    async fn kept(&self, name: &str, file: &str, files: bool) -> Result<Option<Served>, Error> {
        let hot = self.hot.get(&HotKeyRef::Tarball { name, file });
        match &hot {
            Some(hit) if !files || hit.body.len() as u64 <= FILE_MIN => {
                return Ok(Some(Served::Whole(hit.clone())))
            }
            _ => {}
        }
        if files {
            // Tiny ones are served from memory: a copy of a few KB costs less than handing a
            // file to the connection. Above FILE_MIN sendfile(2) wins, and large ones never
            // pass through sluice.
            if let Ok(Some(found)) = self.store.tarball_file(name, file).await {
                if found.size > FILE_MIN {
                    let etag = tarball_etag(&found.integrity);
                    return Ok(Some(Served::File { file: found, etag }));
                }
            }
        }
        if let Some(hit) = hot {
            return Ok(Some(Served::Whole(hit)));
        }
        let key = HotKey::Tarball {
            name: name.into(),
            file: file.into(),
        };
        self.read_stored(name, file, key).await
    }

    /// Make sure tarball `file` of `name` is stored (background work, add-package): fetched
    /// from upstream and verified when it is not. Plugins are not asked.
    ///
    /// Returns its size in bytes.
    pub async fn ensure_stored(self: &Arc<Self>, name: &str, file: &str) -> Shared<u64> {
        if let Some(found) = self.store.tarball(name, file).await? {
            return Ok(found.size);
        }
        let listed = match self.locate(name, file).await? {
            Found::Listed(index) => index.listed(file)?.clone(),
            Found::Unlisted(found) => {
                self.ensure_unlisted(name, file, &found, None).await?;
                return self.stored_size(name, file).await;
            }
        };
        // Nobody reads the body as it flows: the download goes straight into the store.
        let (head, _) = oneshot::channel();
        let (body, _) = mpsc::channel(1);
        let (flight, _) = self.start_download(name, file, &listed, head, body)?;
        match flight.await? {
            Downloaded::Stored => self.stored_size(name, file).await,
            Downloaded::NotStored => Err(Error::Internal(format!(
                "{name}/-/{file} was fetched and verified, but the store could not keep it"
            ))),
        }
    }

    /// Make sure the tarball of `version` of `name`, a version upstream's packument does not
    /// list (`add-package --lockfile`), is stored and recorded as unlisted; with `expected`
    /// (the lockfile's integrity) its content must match it, or nothing is stored. Plugins are
    /// not asked.
    ///
    /// Returns its size in bytes.
    pub async fn ensure_unlisted_version(
        self: &Arc<Self>,
        name: &str,
        version: &str,
        expected: Option<&Integrity>,
    ) -> Shared<u64> {
        let base = name.rsplit('/').next().unwrap_or(name);
        let file = format!("{base}-{version}.tgz");
        if file_version(name, &file).is_none() || self.packuments.private().contains(name) {
            return Err(Error::NotFound(format!(
                "{name}@{version}: the registry has no such version"
            )));
        }
        let found = match self.ledger.get(name, &file).await? {
            Some(record) => Unlisted {
                version: record.version.clone(),
                time: record.time.clone(),
                record: Some(record),
            },
            None => Unlisted {
                version: version.to_string(),
                time: self.index(name).await?.unlisted_times.get(version).cloned(),
                record: None,
            },
        };
        self.ensure_unlisted(name, &file, &found, expected).await?;
        self.stored_size(name, &file).await
    }

    async fn stored_size(&self, name: &str, file: &str) -> Shared<u64> {
        match self.store.tarball(name, file).await? {
            Some(found) => Ok(found.size),
            None => Err(Error::Internal(format!(
                "{name}/-/{file} was stored but cannot be read back"
            ))),
        }
    }

    /// Where tarball `file` of `name` stands: listed by an index of `name`, or unlisted. A
    /// file of the package's own form that the index does not list makes sluice re-read the
    /// packument once (a lockfile written elsewhere can name a version published since the
    /// last refresh); one it still does not list is unlisted, unless the name is private.
    async fn locate(self: &Arc<Self>, name: &str, file: &str) -> Result<Found, Error> {
        let index = self.index(name).await?;
        if index.files.contains_key(file) {
            return Ok(Found::Listed(index));
        }
        // Another process (add-package, a second server) may have stored a newer document.
        let stored = self.packuments.stored_version(name).await?;
        if stored.is_some() && stored != index.token {
            self.indexes.invalidate(name);
            let index = self.index(name).await?;
            if index.files.contains_key(file) {
                return Ok(Found::Listed(index));
            }
        }
        let not_listed = || Error::NotFound(format!("no version of {name} has the tarball {file}"));
        let Some(version) = file_version(name, file) else {
            return Err(not_listed());
        };
        if self.packuments.private().contains(name) {
            // Published here: what the document does not list does not exist.
            return Err(not_listed());
        }
        if let Some(record) = self.ledger.get(name, file).await? {
            return Ok(Found::Unlisted(Unlisted {
                version: record.version.clone(),
                time: record.time.clone(),
                record: Some(record),
            }));
        }
        self.recheck(name).await?;
        let index = self.index(name).await?;
        if index.files.contains_key(file) {
            return Ok(Found::Listed(index));
        }
        Ok(Found::Unlisted(Unlisted {
            time: index.unlisted_times.get(&version).cloned(),
            version,
            record: None,
        }))
    }

    /// Re-read the packument of `name` from upstream, for a tarball file it does not list.
    ///
    /// At most once per [`RECHECK_EVERY`] per package, failures included: requests for
    /// made-up names cannot turn into a stream of upstream requests.
    async fn recheck(self: &Arc<Self>, name: &str) -> Result<(), Error> {
        let key: Arc<str> = name.into();
        let recheck = self.rechecked.get_with(key, || {
            use futures::FutureExt;
            let this = self.clone();
            let name = name.to_string();
            async move {
                let (fresh, _) = this.packuments.fetch(&name).await;
                this.indexes.invalidate(&name);
                fresh.map(|_| ())
            }
            .boxed()
            .shared()
        });
        recheck.await
    }

    /// The tarball index of `name`, built from its packument once per change (one build
    /// however many requests ask at once).
    async fn index(self: &Arc<Self>, name: &str) -> Result<Arc<Index>, Error> {
        let generation = self.host.generation();
        let now = now_ms();
        if let Some(index) = self.indexes.0.get(name) {
            if index.generation == generation && index.expires_at.is_none_or(|at| now < at) {
                return Ok(index);
            }
        }
        let this = self.clone();
        let key: Arc<str> = name.into();
        let task_name = key.clone();
        let (built, _) = self
            .builds
            .run(key, async move {
                this.build_index(&task_name, generation).await
            })
            .await;
        built
    }

    async fn build_index(&self, name: &str, generation: u64) -> Shared<Arc<Index>> {
        let (doc, _) = self.packuments.get(name).await?;
        let host = self.host.clone();
        let task_name = name.to_string();
        let index = tokio::task::spawn_blocking(move || -> Shared<Index> {
            let parsed = parse_document(&doc.bytes, &task_name)?;
            let hidden = host.hidden(&parsed, SystemTime::now())?;
            Ok(Index {
                token: doc.token.clone(),
                files: listing(&parsed),
                hidden: hidden.reasons,
                unlisted_times: unlisted_times(&parsed),
                generation,
                expires_at: hidden.until.map(|t| {
                    t.duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64)
                }),
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("tarball index of {name}: {e}")))??;
        let index = Arc::new(index);
        self.indexes.0.insert(name.into(), index.clone());
        Ok(index)
    }

    /// Tarball `file` of `name` from the store: whole (and kept in memory) when small,
    /// streaming otherwise.
    async fn read_stored(
        &self,
        name: &str,
        file: &str,
        key: HotKey,
    ) -> Result<Option<Served>, Error> {
        let Some(found) = self.store.tarball(name, file).await? else {
            return Ok(None);
        };
        let etag = tarball_etag(&found.integrity);
        if found.size <= self.hot_max {
            let mut body = BytesMut::with_capacity(found.size as usize);
            let mut stream = found.stream;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    // Corrupt (now dropped): fetch it again.
                    Err(error) => {
                        tracing::warn!(package = name, file, %error, "stored tarball unreadable: fetching it again");
                        return Ok(None);
                    }
                }
            }
            let rendered = Arc::new(match etag {
                Some(etag) => Rendered::tarball(body.freeze(), etag),
                None => Rendered::new(body.freeze(), None),
            });
            self.hot.insert(key, rendered.clone());
            return Ok(Some(Served::Whole(rendered)));
        }
        Ok(Some(Served::Stream(TarballStream {
            size: Some(found.size),
            etag,
            stream: found.stream.map(|chunk| chunk.map_err(Error::from)).boxed(),
        })))
    }

    /// Fetch tarball `file` of `name` from upstream: the first caller streams it as it
    /// arrives; callers that come while it is in flight wait for it to be stored and read it
    /// from the store.
    async fn download(
        self: &Arc<Self>,
        name: &str,
        file: &str,
        listed: &Listed,
    ) -> Result<Served, Error> {
        let (head_tx, head_rx) = oneshot::channel();
        let (body_tx, body_rx) = mpsc::channel(CLIENT_BUFFER);
        let (flight, leader) = self.start_download(name, file, listed, head_tx, body_tx)?;
        if leader {
            if let Ok(head) = head_rx.await {
                let size = head?;
                // An empty chunk ends the body; a channel closed without it means the client
                // was cut off, and the body is not whole.
                let mut stream = futures::stream::unfold(Some(body_rx), |rx| async move {
                    let mut rx = rx?;
                    match rx.recv().await {
                        Some(Ok(chunk)) if chunk.is_empty() => None,
                        Some(chunk) => Some((chunk, Some(rx))),
                        None => Some((
                            Err(Error::Internal(
                                "the client fell behind the download and was cut off".into(),
                            )),
                            None,
                        )),
                    }
                })
                .boxed();
                if size.is_some_and(|size| size <= self.hot_max) {
                    // Small: verified whole before the answer starts, so a bad one is a clear
                    // 502 rather than an aborted body.
                    let mut body = BytesMut::with_capacity(size.unwrap_or(0) as usize);
                    while let Some(chunk) = stream.next().await {
                        body.extend_from_slice(&chunk?);
                    }
                    let rendered = match self.hot.get(&HotKeyRef::Tarball { name, file }) {
                        Some(stored) => stored,
                        None => Arc::new(Rendered::new(body.freeze(), None)),
                    };
                    return Ok(Served::Whole(rendered));
                }
                let etag = listed.integrity.as_ref().and_then(tarball_etag);
                return Ok(Served::Stream(TarballStream { size, etag, stream }));
            }
            // The flight found it stored already: read it like a follower.
        }
        let downloaded = flight.await?;
        let key = HotKey::Tarball {
            name: name.into(),
            file: file.into(),
        };
        if let Some(hit) = self.hot.get(&key) {
            return Ok(Served::Whole(hit));
        }
        match (downloaded, self.read_stored(name, file, key).await?) {
            (Downloaded::Stored, Some(served)) => Ok(served),
            _ => Err(Error::Store(Arc::new(crate::store::StoreError {
                location: self.store.location(),
                message: format!(
                    "{name}/-/{file} was fetched but the store could not keep it; try again"
                ),
            }))),
        }
    }

    fn start_download(
        self: &Arc<Self>,
        name: &str,
        file: &str,
        listed: &Listed,
        head: oneshot::Sender<Result<Option<u64>, Error>>,
        body: mpsc::Sender<Result<Bytes, Error>>,
    ) -> Result<Flight, Error> {
        let integrity = listed.integrity.clone().ok_or_else(|| {
            Error::Upstream(UpstreamError::Invalid(format!(
                "{name}/-/{file} has no integrity or shasum to verify it against"
            )))
        })?;
        let this = self.clone();
        let (task_name, task_file) = (name.to_string(), file.to_string());
        let published = listed.published.clone();
        Ok(self
            .downloads
            .start((name.into(), file.into()), async move {
                this.pump(
                    &task_name,
                    &task_file,
                    published.as_deref(),
                    integrity,
                    head,
                    body,
                )
                .await
            }))
    }

    /// Stream the tarball from upstream to the first client and into the store at once,
    /// verifying it as it flows; the last chunk goes to the client only once the whole body
    /// matched its integrity and was committed.
    async fn pump(
        &self,
        name: &str,
        file: &str,
        published: Option<&str>,
        integrity: Integrity,
        head: oneshot::Sender<Result<Option<u64>, Error>>,
        body: mpsc::Sender<Result<Bytes, Error>>,
    ) -> Shared<Downloaded> {
        // A caller that checked the store just before the last flight finished.
        if self.store.has_tarball(name, file).await.unwrap_or(false) {
            return Ok(Downloaded::Stored);
        }
        let upstream = match self.open_upstream(name, file, published).await {
            Ok(upstream) => upstream,
            Err(error) => {
                let _ = head.send(Err(error.clone()));
                return Err(error);
            }
        };
        let _ = head.send(Ok(upstream.len));
        let sink = match self
            .store
            .tarball_sink(name, file, &integrity, upstream.len)
            .await
        {
            Ok(sink) => Some(sink),
            Err(error) => {
                tracing::error!(package = name, file, %error, "tarball not stored");
                None
            }
        };
        let flow = Flow {
            checker: IntegrityChecker::new(integrity),
            sink,
            client: Some(body),
            held: None,
            whole: upstream
                .len
                .filter(|len| *len <= self.hot_max)
                .map(|len| BytesMut::with_capacity(len as usize)),
        };
        let flow = self.flow(name, file, upstream, flow).await?;
        self.finish(name, file, flow).await
    }

    /// The upstream body of tarball `file` of `name` (never for a private name).
    async fn open_upstream(
        &self,
        name: &str,
        file: &str,
        published: Option<&str>,
    ) -> Result<UpstreamBody, Error> {
        if self.packuments.private().contains(name) {
            // Published here: upstream is never asked, whatever the store lacks.
            return Err(Error::NotFound(format!(
                "{name}/-/{file} is not in this registry's store"
            )));
        }
        match self.upstream.tarball(name, file, published).await {
            Ok(Some(upstream)) => Ok(upstream),
            Ok(None) => Err(Error::NotFound(format!(
                "the upstream registry has no tarball {name}/-/{file}"
            ))),
            Err(error) => Err(Error::Upstream(error)),
        }
    }

    /// Take every chunk of `upstream` into the check, the store and the first client (each
    /// chunk goes to the client once the next one arrived).
    async fn flow(
        &self,
        name: &str,
        file: &str,
        upstream: UpstreamBody,
        mut flow: Flow,
    ) -> Shared<Flow> {
        let mut stream = upstream.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    let error = Error::Upstream(error);
                    send(&mut flow.client, Err(error.clone())).await;
                    return Err(error);
                }
            };
            flow.checker.input(&chunk);
            if let Some(writing) = flow.sink.as_mut() {
                if let Err(error) = writing.write(&chunk).await {
                    tracing::error!(package = name, file, %error, "tarball not stored");
                    flow.sink = None;
                }
            }
            if let Some(buffer) = flow.whole.as_mut() {
                if (buffer.len() + chunk.len()) as u64 <= self.hot_max {
                    buffer.extend_from_slice(&chunk);
                } else {
                    flow.whole = None;
                }
            }
            if let Some(previous) = flow.held.replace(chunk) {
                send(&mut flow.client, Ok(previous)).await;
            }
        }
        Ok(flow)
    }

    /// End a download whose every chunk arrived: check the whole, commit it, keep a small one
    /// in memory, then hand the client its last chunk and the end of the body.
    async fn finish(&self, name: &str, file: &str, mut flow: Flow) -> Shared<Downloaded> {
        if flow.checker.result().is_err() {
            // The sink goes unstored with it.
            let error = Error::Upstream(UpstreamError::Integrity(format!("{name}/-/{file}")));
            send(&mut flow.client, Err(error.clone())).await;
            return Err(error);
        }
        let stored = match flow.sink {
            Some(sink) => match sink.commit().await {
                Ok(sri) => Some(sri),
                Err(error) => {
                    tracing::error!(package = name, file, %error, "tarball not stored");
                    None
                }
            },
            None => None,
        };
        if let (Some(sri), Some(buffer)) = (&stored, flow.whole) {
            if let Some(etag) = tarball_etag(sri) {
                let key = HotKey::Tarball {
                    name: name.into(),
                    file: file.into(),
                };
                self.hot
                    .insert(key, Arc::new(Rendered::tarball(buffer.freeze(), etag)));
            }
        }
        if let Some(last) = flow.held {
            send(&mut flow.client, Ok(last)).await;
        }
        // The end of the body.
        send(&mut flow.client, Ok(Bytes::new())).await;
        Ok(if stored.is_some() {
            Downloaded::Stored
        } else {
            Downloaded::NotStored
        })
    }
}

/// A download as it flows: its check, its way into the store, its first client.
struct Flow {
    checker: IntegrityChecker,
    /// `None` once the store failed (the download goes on for the client).
    sink: Option<Box<dyn TarballSink>>,
    /// `None` once the client went away or fell behind.
    client: Option<mpsc::Sender<Result<Bytes, Error>>>,
    /// The last chunk, held back until the whole is verified.
    held: Option<Bytes>,
    /// The whole body, while it fits the hot cache.
    whole: Option<BytesMut>,
}

/// Hand `chunk` to the first client, if it is still there; a client that went away, or takes
/// nothing for [`SLOW_CLIENT`], stops getting chunks, and the download goes on into the store.
async fn send(
    client: &mut Option<mpsc::Sender<Result<Bytes, Error>>>,
    chunk: Result<Bytes, Error>,
) {
    if let Some(sender) = client {
        if sender.send_timeout(chunk, SLOW_CLIENT).await.is_err() {
            *client = None;
        }
    }
}

/// Upstream's `time` entries for the versions `doc` does not list (upstream keeps them when a
/// version is taken out).
fn unlisted_times(doc: &Packument) -> HashMap<String, String> {
    let versions = doc.versions();
    doc.time()
        .into_iter()
        .flatten()
        .filter(|(key, _)| !matches!(key.as_str(), "created" | "modified"))
        .filter(|(key, _)| !versions.is_some_and(|v| v.contains_key(key.as_str())))
        .filter_map(|(key, time)| Some((key.clone(), time.as_str()?.to_string())))
        .collect()
}

/// Every version's tarball file in `doc`.
fn listing(doc: &Packument) -> HashMap<String, Listed> {
    let mut files = HashMap::new();
    for (version, manifest) in doc.versions().into_iter().flatten() {
        let Some(file) = Packument::tarball_file(manifest) else {
            continue;
        };
        let published = manifest
            .get("dist")
            .and_then(|d| d.get("tarball"))
            .and_then(Value::as_str)
            .map(str::to_string);
        files.insert(
            file.to_string(),
            Listed {
                version: version.clone(),
                integrity: published_integrity(manifest),
                published,
            },
        );
    }
    files
}
