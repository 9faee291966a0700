//! Tarballs: refused when a plugin hides their version, looked up in the packument (a version
//! published since the last refresh makes sluice re-read it once), and streamed: from memory
//! (up to `storage.hot_tarball_max`), from the store, or from upstream into the client and the
//! store at once, verified against the published integrity as the bytes flow.
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
    TarballFile, Token,
};
use crate::upstream::{Upstream, UpstreamError};

/// How often, at most, a request for a tarball the stored packument does not list makes sluice
/// ask upstream for that packument again (per package, whatever the outcome).
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// Chunks a slow first client may leave unread before the download waits for it.
const CLIENT_BUFFER: usize = 64;

/// How long the download waits for a first client that takes nothing: then the client is cut
/// off (its response is aborted; it retries from the store) and the download goes on at full
/// speed for everyone else.
const SLOW_CLIENT: Duration = Duration::from_secs(10);

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
        }
    }

    /// Tarball `file` of `name` for a client: refused (403 with the plugin's reason) when its
    /// version is hidden; from memory, the store, or upstream.
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
        let index = self.listing(name, file).await?;
        if let Some(hit) = self.hot.get(&HotKeyRef::Tarball { name, file }) {
            return Ok((Served::Whole(hit), CacheStatus::Hit));
        }
        if files {
            // Small ones are read into memory once (below) and served from there: a copy of a
            // few hundred KB costs less than opening a file each time. Large ones never pass
            // through sluice.
            if let Ok(Some(found)) = self.store.tarball_file(name, file).await {
                if found.size > self.hot_max {
                    let etag = tarball_etag(&found.integrity);
                    return Ok((Served::File { file: found, etag }, CacheStatus::Hit));
                }
            }
        }
        let key = HotKey::Tarball {
            name: name.into(),
            file: file.into(),
        };
        if let Some(served) = self.read_stored(name, file, key).await? {
            return Ok((served, CacheStatus::Hit));
        }
        let listed = index.listed(file)?.clone();
        Ok((self.download(name, file, &listed).await?, CacheStatus::Miss))
    }

    /// Make sure tarball `file` of `name` is stored (background work, add-package): fetched
    /// from upstream and verified when it is not. Plugins are not asked.
    ///
    /// Returns its size in bytes.
    pub async fn ensure_stored(self: &Arc<Self>, name: &str, file: &str) -> Shared<u64> {
        if let Some(found) = self.store.tarball(name, file).await? {
            return Ok(found.size);
        }
        let listed = self.find(name, file).await?;
        // Nobody reads the body as it flows: the download goes straight into the store.
        let (head, _) = oneshot::channel();
        let (body, _) = mpsc::channel(1);
        let (flight, _) = self.start_download(name, file, &listed, head, body)?;
        match flight.await? {
            Downloaded::Stored => match self.store.tarball(name, file).await? {
                Some(found) => Ok(found.size),
                None => Err(Error::Internal(format!(
                    "{name}/-/{file} was stored but cannot be read back"
                ))),
            },
            Downloaded::NotStored => Err(Error::Internal(format!(
                "{name}/-/{file} was fetched and verified, but the store could not keep it"
            ))),
        }
    }

    /// An index of `name` that lists `file`, refused when a plugin hides its version.
    async fn listing(self: &Arc<Self>, name: &str, file: &str) -> Result<Arc<Index>, Error> {
        let index = self.indexed(name, file).await?;
        if let Some(reason) = index.hidden.get(&index.listed(file)?.version) {
            return Err(Error::Forbidden(reason.clone()));
        }
        Ok(index)
    }

    /// The listing of `file` in the packument of `name`.
    async fn find(self: &Arc<Self>, name: &str, file: &str) -> Result<Listed, Error> {
        let index = self.indexed(name, file).await?;
        index.listed(file).cloned()
    }

    /// An index of `name` that lists `file`; a file of the package's own form that it does
    /// not list makes sluice re-read the packument once (a lockfile written elsewhere can name
    /// a version published since the last refresh).
    async fn indexed(self: &Arc<Self>, name: &str, file: &str) -> Result<Arc<Index>, Error> {
        let index = self.index(name).await?;
        if index.files.contains_key(file) {
            return Ok(index);
        }
        // Another process (add-package, a second server) may have stored a newer document.
        let stored = self.packuments.stored_version(name).await?;
        if stored.is_some() && stored != index.token {
            self.indexes.invalidate(name);
            let index = self.index(name).await?;
            if index.files.contains_key(file) {
                return Ok(index);
            }
        }
        if self.recheck(name, file).await? {
            let index = self.index(name).await?;
            if index.files.contains_key(file) {
                return Ok(index);
            }
        }
        Err(Error::NotFound(format!(
            "no version of {name} has the tarball {file}"
        )))
    }

    /// Re-read the packument of `name` from upstream for the tarball `file` it does not list.
    /// Returns whether it did.
    ///
    /// Only a file name of the package's own form (`<name>-<semver>.tgz`) is rechecked, at most
    /// once per [`RECHECK_EVERY`] per package, failures included: requests for made-up names
    /// cannot turn into a stream of upstream requests.
    async fn recheck(self: &Arc<Self>, name: &str, file: &str) -> Result<bool, Error> {
        let base = name.rsplit('/').next().unwrap_or(name);
        let names_a_version = file
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix(".tgz"))
            .is_some_and(|version| nodejs_semver::Version::parse(version).is_ok());
        if !names_a_version {
            return Ok(false);
        }
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
        recheck.await.map(|()| true)
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
        if self.packuments.private().contains(name) {
            // Published here: upstream is never asked, whatever the store lacks.
            let error = Error::NotFound(format!("{name}/-/{file} is not in this registry's store"));
            let _ = head.send(Err(error.clone()));
            return Err(error);
        }
        let what = format!("{name}/-/{file}");
        let upstream = match self.upstream.tarball(name, file, published).await {
            Ok(Some(upstream)) => upstream,
            Ok(None) => {
                let error = Error::NotFound(format!("the upstream registry has no tarball {what}"));
                let _ = head.send(Err(error.clone()));
                return Err(error);
            }
            Err(error) => {
                let error = Error::Upstream(error);
                let _ = head.send(Err(error.clone()));
                return Err(error);
            }
        };
        let _ = head.send(Ok(upstream.len));
        let mut sink = match self
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
        let mut checker = IntegrityChecker::new(integrity.clone());
        let mut client = Some(body);
        let mut held: Option<Bytes> = None;
        let mut whole = upstream
            .len
            .filter(|len| *len <= self.hot_max)
            .map(|len| BytesMut::with_capacity(len as usize));
        let mut stream = upstream.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    let error = Error::Upstream(error);
                    send(&mut client, Err(error.clone())).await;
                    return Err(error);
                }
            };
            checker.input(&chunk);
            if let Some(writing) = sink.as_mut() {
                if let Err(error) = writing.write(&chunk).await {
                    tracing::error!(package = name, file, %error, "tarball not stored");
                    sink = None;
                }
            }
            if let Some(buffer) = whole.as_mut() {
                if (buffer.len() + chunk.len()) as u64 <= self.hot_max {
                    buffer.extend_from_slice(&chunk);
                } else {
                    whole = None;
                }
            }
            if let Some(previous) = held.replace(chunk) {
                send(&mut client, Ok(previous)).await;
            }
        }
        if checker.result().is_err() {
            // The sink goes unstored with it.
            let error = Error::Upstream(UpstreamError::Integrity(what));
            send(&mut client, Err(error.clone())).await;
            return Err(error);
        }
        let stored = match sink {
            Some(sink) => match sink.commit().await {
                Ok(sri) => Some(sri),
                Err(error) => {
                    tracing::error!(package = name, file, %error, "tarball not stored");
                    None
                }
            },
            None => None,
        };
        if let (Some(sri), Some(buffer)) = (&stored, whole) {
            if let Some(etag) = tarball_etag(sri) {
                let key = HotKey::Tarball {
                    name: name.into(),
                    file: file.into(),
                };
                self.hot
                    .insert(key, Arc::new(Rendered::tarball(buffer.freeze(), etag)));
            }
        }
        if let Some(last) = held {
            send(&mut client, Ok(last)).await;
        }
        // The end of the body.
        send(&mut client, Ok(Bytes::new())).await;
        Ok(if stored.is_some() {
            Downloaded::Stored
        } else {
            Downloaded::NotStored
        })
    }
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
