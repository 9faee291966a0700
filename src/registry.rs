//! The registry core: packuments and tarballs through hot cache → store → upstream, with
//! single-flight misses, stale-while-revalidate and stale-if-error. Used by the proxy and by
//! the command line alike.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use sluice_plugin_api::{CacheStatus, Packument, Plugin, PluginError};
use ssri::Integrity;

use crate::config::Config;
use crate::flight::SingleFlight;
use crate::packument::{self, PackumentError};
use crate::plugins::Plugins;
use crate::store::{
    now_ms, HotCache, HotKey, PackumentMeta, Rendered, Store, StoreError, StoredPackument,
};
use crate::upstream::{Fetched, Upstream, UpstreamError};
use sluice_plugin_whitelist::Whitelist;

/// Why a package or tarball cannot be served; the proxy maps it to an HTTP answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Upstream failed and nothing is stored.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Upstream has no such package, version or tarball.
    #[error("{0}")]
    NotFound(String),
    /// No version in the stored packument has this tarball (see [`Registry::recheck_for_tarball`]).
    #[error("{0}")]
    Unlisted(String),
    /// The store failed (disk full, permissions…).
    #[error("{0}")]
    Store(Arc<StoreError>),
    /// Upstream sent a package document that cannot be used.
    #[error("upstream sent a bad document for {name}: {error}")]
    Packument {
        /// The package.
        name: String,
        /// What was wrong.
        error: PackumentError,
    },
    /// A plugin failed.
    #[error("{0}")]
    Plugin(Arc<PluginError>),
    /// sluice itself failed (a bug or a panicked task); answered 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(Arc::new(e))
    }
}

impl From<PluginError> for Error {
    fn from(e: PluginError) -> Self {
        Error::Plugin(Arc::new(e))
    }
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Answers served stale.
    pub stale: AtomicU64,
    /// Revalidations done (background or not).
    pub revalidations: AtomicU64,
    /// When the last scheduled refresh cycle finished (unix ms; 0: none yet).
    pub last_refresh_ms: AtomicU64,
}

type Shared<T> = Result<T, Error>;

/// A tarball as served, and where it came from.
type ServedTarball = (Arc<Rendered>, CacheStatus);

/// The registry core.
pub struct Registry {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// The disk store.
    pub store: Store,
    /// The in-memory cache of rendered bodies.
    pub hot: HotCache,
    /// The upstream client.
    pub upstream: Upstream,
    /// The plugins, in run order.
    pub plugins: Vec<Arc<dyn Plugin>>,
    /// The live whitelist, in whitelist mode.
    pub whitelist: Option<Arc<Whitelist>>,
    /// Counters.
    pub stats: Stats,
    /// Request counters for metrics and the status page.
    pub metrics: crate::metrics::Metrics,
    /// Relayed answers (signing keys, attestations), kept for a while.
    pub relayed: moka::future::Cache<String, (u16, String, Bytes)>,
    /// The replication follower's progress (mirror mode).
    pub mirror: std::sync::Mutex<crate::sync::mirror::MirrorStatus>,
    packument_flights: SingleFlight<Arc<str>, Shared<StoredPackument>>,
    render_flights: SingleFlight<HotKey, Shared<Arc<Rendered>>>,
    tarball_flights: SingleFlight<(Arc<str>, Arc<str>), Shared<ServedTarball>>,
    /// Packages rechecked for an unlisted tarball recently (see `recheck_for_tarball`).
    rechecked: moka::sync::Cache<Arc<str>, ()>,
    /// When upstream last confirmed each packument we served (unix ms), in memory.
    confirmed: moka::sync::Cache<Arc<str>, u64>,
    /// Recently parsed documents by the integrity they were parsed from, for tarball checks.
    parsed: moka::sync::Cache<Arc<str>, (Integrity, Arc<Packument>)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("store", &self.store)
            .field("hot", &self.hot)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Build the core from a configuration and its plugins.
    pub fn new(config: Arc<Config>, plugins: Plugins) -> Result<Self, UpstreamError> {
        crate::tls::install_crypto_provider();
        Ok(Self {
            store: Store::new(&config.storage.dir),
            hot: HotCache::new(
                config.storage.memory,
                config.policy.refresh.max(std::time::Duration::from_secs(1)),
            ),
            upstream: Upstream::new(&config.upstream)?,
            plugins: plugins.list,
            whitelist: plugins.whitelist,
            stats: Stats::default(),
            metrics: crate::metrics::Metrics::default(),
            relayed: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(600))
                .build(),
            mirror: std::sync::Mutex::default(),
            packument_flights: SingleFlight::default(),
            render_flights: SingleFlight::default(),
            tarball_flights: SingleFlight::default(),
            rechecked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(RECHECK_EVERY)
                .build(),
            confirmed: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            parsed: moka::sync::Cache::builder().max_capacity(32).build(),
            config,
        })
    }

    fn is_fresh(&self, fetched_at: u64) -> bool {
        now_ms().saturating_sub(fetched_at) < self.config.policy.refresh.as_millis() as u64
    }

    /// The stored packument of `name`, fetched from upstream when absent; a stale copy is
    /// served at once and revalidated in the background.
    pub async fn packument(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<(StoredPackument, CacheStatus), Error> {
        if let Some(stored) = self.store.packument(name).await? {
            self.confirmed.insert(name.into(), stored.meta.fetched_at);
            if self.is_fresh(stored.meta.fetched_at) {
                return Ok((stored, CacheStatus::Hit));
            }
            self.revalidate_in_background(name);
            return Ok((stored, CacheStatus::Stale));
        }
        let (result, _) = self.fetch_packument(name).await;
        Ok((result?, CacheStatus::Miss))
    }

    /// Revalidate `name` with upstream now (one request however many callers ask at once).
    ///
    /// Returns the stored document and whether this caller's request did the fetch.
    pub async fn fetch_packument(self: &Arc<Self>, name: &str) -> (Shared<StoredPackument>, bool) {
        let key: Arc<str> = name.into();
        let this = self.clone();
        let task_name = key.clone();
        self.packument_flights
            .run(key, async move { this.revalidate(&task_name).await })
            .await
    }

    fn revalidate_in_background(self: &Arc<Self>, name: &str) {
        let this = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let (result, _) = this.fetch_packument(&name).await;
            if let Err(error) = result {
                tracing::warn!(package = %name, %error, "revalidation failed: serving the stored copy");
            }
        });
    }

    /// Ask upstream for `name` (conditionally when we hold it) and store the merged result.
    async fn revalidate(&self, name: &str) -> Shared<StoredPackument> {
        let held = self.store.packument(name).await?;
        let (etag, last_modified) = held
            .as_ref()
            .map(|h| (h.meta.etag.as_deref(), h.meta.last_modified.as_deref()))
            .unwrap_or((None, None));
        self.stats.revalidations.fetch_add(1, Ordering::Relaxed);
        let fetched = self.upstream.packument(name, etag, last_modified).await;
        let now = now_ms();
        match (fetched, held) {
            (
                Ok(Fetched::Document {
                    bytes,
                    etag,
                    last_modified,
                }),
                held,
            ) => {
                let mut fresh = parse_document(&bytes, name)?;
                // Merge and write under the store's lock for this package, against what is
                // stored now: another process (add-package, a second server) may have written
                // since we read.
                let _lock = match self.store.lock_packument(name).await {
                    Ok(lock) => Some(lock),
                    Err(error) => {
                        tracing::warn!(package = name, %error, "merging without the store lock");
                        None
                    }
                };
                let held = match self.store.packument(name).await {
                    Ok(now_held) => now_held,
                    Err(_) => held,
                };
                let mut to_store = bytes;
                if let Some(held) = &held {
                    if let Ok(held_doc) = packument::parse(&held.bytes, name) {
                        let restored = packument::merge(&mut fresh, &held_doc);
                        if !restored.is_empty() {
                            tracing::info!(package = name, versions = ?restored, "keeping versions upstream no longer lists");
                            to_store =
                                Bytes::from(serde_json::to_vec(&fresh.doc).map_err(|e| {
                                    Error::Internal(format!("cannot serialize {name}: {e}"))
                                })?);
                        }
                    }
                }
                let meta = PackumentMeta {
                    etag,
                    last_modified,
                    fetched_at: now,
                };
                let integrity = match self.store.put_packument(name, &to_store, &meta).await {
                    Ok(integrity) => integrity,
                    Err(error) => {
                        // Serve what upstream sent even when it cannot be kept.
                        tracing::error!(package = name, %error, "packument not stored");
                        ssri::IntegrityOpts::new()
                            .algorithm(ssri::Algorithm::Sha256)
                            .chain(&to_store)
                            .result()
                    }
                };
                if held.as_ref().is_none_or(|h| h.integrity != integrity) {
                    self.hot.invalidate_packument(name).await;
                    self.parsed.invalidate(name);
                }
                self.confirmed.insert(name.into(), now);
                if to_store.len() > TRIM_AFTER {
                    drop(fresh);
                    tokio::task::spawn_blocking(release_freed_memory);
                }
                Ok(StoredPackument {
                    bytes: to_store,
                    meta,
                    integrity,
                })
            }
            (Ok(Fetched::NotModified), Some(held)) => self.touch(name, held, now).await,
            (Ok(Fetched::NotFound), Some(held)) => {
                tracing::warn!(
                    package = name,
                    "upstream no longer has this package: keeping our copy"
                );
                self.touch(name, held, now).await
            }
            (Ok(Fetched::NotModified | Fetched::NotFound), None) => Err(Error::NotFound(format!(
                "{name} is not in the upstream registry"
            ))),
            (Err(error), Some(held)) => {
                tracing::warn!(package = name, %error, "upstream failed: serving the stored copy");
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                Ok(held)
            }
            (Err(error), None) => Err(error.into()),
        }
    }

    async fn touch(&self, name: &str, held: StoredPackument, now: u64) -> Shared<StoredPackument> {
        let meta = PackumentMeta {
            fetched_at: now,
            ..held.meta.clone()
        };
        self.store
            .touch_packument(name, &held.integrity, held.bytes.len(), &meta)
            .await?;
        self.confirmed.insert(name.into(), now);
        Ok(StoredPackument { meta, ..held })
    }

    /// The packument as served: plugins applied, invariants repaired (links not yet rewritten).
    pub fn filtered(&self, name: &str, stored: &StoredPackument) -> Result<Packument, Error> {
        let mut doc = parse_document(&stored.bytes, name)?;
        for plugin in &self.plugins {
            plugin.on_packument(&mut doc)?;
        }
        packument::repair(&mut doc);
        Ok(doc)
    }

    /// The rendered packument body of `name` for a client, from the hot cache when possible.
    pub async fn rendered(
        self: &Arc<Self>,
        name: &str,
        abbreviated: bool,
        gzip: bool,
    ) -> Result<(Arc<Rendered>, CacheStatus), Error> {
        let key = HotKey::Packument {
            name: name.into(),
            abbreviated,
            gzip,
        };
        let generation = self.plugins_generation();
        if let Some(rendered) = self
            .hot
            .get(&key)
            .await
            .filter(|r| r.generation == generation)
        {
            match self.confirmed.get(name) {
                Some(at) if self.is_fresh(at) => return Ok((rendered, CacheStatus::Hit)),
                _ => {
                    self.revalidate_in_background(name);
                    return Ok((rendered, CacheStatus::Stale));
                }
            }
        }
        let (stored, status) = self.packument(name).await?;
        let this = self.clone();
        let task_key = key.clone();
        let (rendered, _) = self
            .render_flights
            .run(key, async move { this.render(task_key, stored).await })
            .await;
        Ok((rendered?, status))
    }

    async fn render(
        self: Arc<Self>,
        key: HotKey,
        stored: StoredPackument,
    ) -> Shared<Arc<Rendered>> {
        let HotKey::Packument {
            name,
            abbreviated,
            gzip,
        } = key.clone()
        else {
            return Err(Error::Internal("not a packument".into()));
        };
        if gzip {
            // Compress the identity body, rendering it first when needed.
            let identity_key = HotKey::Packument {
                name: name.clone(),
                abbreviated,
                gzip: false,
            };
            let generation = self.plugins_generation();
            let identity = match self
                .hot
                .get(&identity_key)
                .await
                .filter(|r| r.generation == generation)
            {
                Some(identity) => identity,
                None => Box::pin(self.clone().render(identity_key, stored)).await?,
            };
            let body = identity.body.clone();
            let compressed = tokio::task::spawn_blocking(move || {
                let compressed = gzip_bytes(&body);
                if body.len() > TRIM_AFTER {
                    release_freed_memory();
                }
                compressed
            })
            .await
            .map_err(|e| Error::Internal(format!("render failed: {e}")))?;
            let rendered = Arc::new(Rendered {
                body: compressed,
                etag: format!("{}-gz\"", identity.etag.trim_end_matches('"')).into(),
                last_modified: identity.last_modified.clone(),
                generation: identity.generation,
            });
            self.hot.insert(key, rendered.clone()).await;
            return Ok(rendered);
        }
        let this = self.clone();
        let render_name = name.clone();
        let rendered = tokio::task::spawn_blocking(move || -> Shared<Arc<Rendered>> {
            let generation = this.plugins_generation();
            let mut doc = this.filtered(&render_name, &stored)?;
            packument::rewrite(&mut doc, &this.config.server.public_url);
            let body = if abbreviated {
                serde_json::to_vec(&packument::abbreviate(&doc))
            } else {
                serde_json::to_vec(&doc.doc)
            }
            .map_err(|e| Error::Internal(format!("cannot render {render_name}: {e}")))?;
            let modified = doc
                .time()
                .and_then(|t| t.get("modified"))
                .and_then(Value::as_str)
                .and_then(|m| humantime::parse_rfc3339_weak(m.trim_end_matches('Z')).ok())
                .map(|t| Arc::from(httpdate::fmt_http_date(t)));
            // The parse tree is as large as the stored document, whatever was rendered.
            let large = stored.bytes.len() > TRIM_AFTER;
            let rendered = Arc::new(Rendered {
                generation,
                ..Rendered::new(Bytes::from(body), modified)
            });
            drop(doc);
            drop(stored);
            if large {
                release_freed_memory();
            }
            Ok(rendered)
        })
        .await
        .map_err(|e| Error::Internal(format!("render failed: {e}")))??;
        self.hot.insert(key, rendered.clone()).await;
        Ok(rendered)
    }

    /// One version's manifest (by version or dist-tag), links rewritten.
    pub async fn version(
        self: &Arc<Self>,
        name: &str,
        spec: &str,
    ) -> Result<(Value, CacheStatus), Error> {
        let (stored, status) = self.packument(name).await?;
        let doc = self.filtered(name, &stored)?;
        let mut manifest = packument::manifest(&doc, spec).cloned().ok_or_else(|| {
            Error::NotFound(format!("{name} has no version or dist-tag `{spec}`"))
        })?;
        packument::rewrite_manifest(&mut manifest, name, &self.config.server.public_url);
        Ok((manifest, status))
    }

    /// The dist-tags of `name`.
    pub async fn dist_tags(self: &Arc<Self>, name: &str) -> Result<(Value, CacheStatus), Error> {
        let (stored, status) = self.packument(name).await?;
        let doc = self.filtered(name, &stored)?;
        Ok((
            doc.doc
                .get("dist-tags")
                .cloned()
                .unwrap_or(Value::Object(Default::default())),
            status,
        ))
    }

    /// Tarball `file` of `name`: from memory, the store, or upstream (verified, then stored).
    pub async fn tarball(
        self: &Arc<Self>,
        name: &str,
        file: &str,
    ) -> Result<(Arc<Rendered>, CacheStatus), Error> {
        let key = HotKey::Tarball {
            name: name.into(),
            file: file.into(),
        };
        // The hot entry carries its ETag: a hit never hashes the body again.
        if let Some(hit) = self.hot.get(&key).await {
            return Ok((hit, CacheStatus::Hit));
        }
        // Concurrent requests share one read of the store (or one upstream fetch): a large
        // tarball is in memory once, however many clients ask for it at once.
        let this = self.clone();
        let (task_name, task_file) = (name.to_string(), file.to_string());
        let (result, _) = self
            .tarball_flights
            .run((name.into(), file.into()), async move {
                if let Some(bytes) = this.store.tarball(&task_name, &task_file).await? {
                    let rendered = Arc::new(Rendered::new(bytes, None));
                    this.hot.insert(key, rendered.clone()).await;
                    return Ok((rendered, CacheStatus::Hit));
                }
                let bytes = this.download_tarball(&task_name, &task_file).await?;
                Ok((Arc::new(Rendered::new(bytes, None)), CacheStatus::Miss))
            })
            .await;
        result
    }

    /// The stored tarball, else one fetched from upstream, verified against the integrity its
    /// packument publishes, and stored.
    pub async fn fetch_tarball(self: &Arc<Self>, name: &str, file: &str) -> Shared<Bytes> {
        if let Some(bytes) = self.store.tarball(name, file).await? {
            return Ok(bytes);
        }
        self.download_tarball(name, file).await
    }

    /// Fetch a tarball that is not stored from upstream, verify it, store it and return it.
    async fn download_tarball(self: &Arc<Self>, name: &str, file: &str) -> Shared<Bytes> {
        let (stored, _) = self.packument(name).await?;
        let doc = parse_document(&stored.bytes, name)?;
        let manifest = packument::find_tarball(&doc, file).ok_or_else(|| {
            Error::Unlisted(format!("no version of {name} has the tarball {file}"))
        })?;
        let integrity = published_integrity(manifest).ok_or_else(|| {
            Error::Upstream(UpstreamError::Invalid(format!(
                "{name}/-/{file} has no integrity or shasum to verify it against"
            )))
        })?;
        let published = manifest
            .get("dist")
            .and_then(|d| d.get("tarball"))
            .and_then(Value::as_str);
        let bytes = self
            .upstream
            .tarball(name, file, published, &integrity)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "the upstream registry has no tarball {name}/-/{file}"
                ))
            })?;
        if let Err(error) = self.store.put_tarball(name, file, &bytes).await {
            // The bytes are verified: the client gets them even when they cannot be kept.
            tracing::error!(package = name, file, %error, "tarball not stored");
            return Ok(bytes);
        }
        let key = HotKey::Tarball {
            name: name.into(),
            file: file.into(),
        };
        self.hot
            .insert(key, Arc::new(Rendered::new(bytes.clone(), None)))
            .await;
        Ok(bytes)
    }

    /// Re-read the packument of `name` from upstream for the tarball `file` it does not list: a
    /// lockfile written elsewhere (`npm ci`) can name a version published since the last
    /// refresh. Returns whether the re-read document lists it; the caller then asks again, so
    /// plugins judge the new version like any other.
    ///
    /// Only a file name of the package's own form (`<name>-<semver>.tgz`) is rechecked, at most
    /// once per [`RECHECK_EVERY`] per package, failures included: requests for made-up names
    /// cannot turn into a stream of upstream requests.
    pub async fn recheck_for_tarball(
        self: &Arc<Self>,
        name: &str,
        file: &str,
    ) -> Result<bool, Error> {
        let base = name.rsplit('/').next().unwrap_or(name);
        let names_a_version = file
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix(".tgz"))
            .is_some_and(|version| nodejs_semver::Version::parse(version).is_ok());
        let key: Arc<str> = name.into();
        if !names_a_version || self.rechecked.contains_key(&key) {
            return Ok(false);
        }
        self.rechecked.insert(key, ());
        let (fresh, _) = self.fetch_packument(name).await;
        let doc = parse_document(&fresh?.bytes, name)?;
        Ok(packument::find_tarball(&doc, file).is_some())
    }

    /// The answer plugins give for tarball `file` of `name` (min-age, deny ranges…), if one
    /// refuses it. Only plugins that check tarballs cost a packument lookup.
    pub async fn tarball_refusal(
        self: &Arc<Self>,
        name: &str,
        file: &str,
    ) -> Result<Option<sluice_plugin_api::Response>, Error> {
        if !self.plugins.iter().any(|p| p.checks_tarballs()) {
            return Ok(None);
        }
        // A document parsed recently and still fresh answers without touching the store.
        let fresh = self.confirmed.get(name).is_some_and(|at| self.is_fresh(at));
        let cached = self.parsed.get(name).filter(|_| fresh);
        let doc = match cached {
            Some((_, doc)) => doc,
            None => {
                let (stored, _) = self.packument(name).await?;
                let doc = Arc::new(parse_document(&stored.bytes, name)?);
                self.parsed
                    .insert(name.into(), (stored.integrity.clone(), doc.clone()));
                doc
            }
        };
        let Some(version) = packument::find_tarball(&doc, file)
            .and_then(|m| m.get("version"))
            .and_then(Value::as_str)
        else {
            return Ok(None);
        };
        for plugin in self.plugins.iter().filter(|p| p.checks_tarballs()) {
            if let sluice_plugin_api::Decision::Respond(response) =
                plugin.on_tarball(name, version, &doc)?
            {
                return Ok(Some(response));
            }
        }
        Ok(None)
    }

    /// Treat the stored packument of `name` as due for revalidation (admin and test hook).
    pub async fn mark_stale(&self, name: &str) -> Result<(), Error> {
        self.confirmed.insert(name.into(), 0);
        if let Some(stored) = self.store.packument(name).await? {
            let meta = PackumentMeta {
                fetched_at: 0,
                ..stored.meta.clone()
            };
            self.store
                .touch_packument(name, &stored.integrity, stored.bytes.len(), &meta)
                .await?;
        }
        Ok(())
    }

    /// The plugins' combined generation: when it changes, cached renders are stale.
    pub fn plugins_generation(&self) -> u64 {
        self.plugins
            .iter()
            .fold(0u64, |sum, p| sum.wrapping_add(p.generation()))
    }

    /// Whether every plugin allows `name` (background work has no request to ask with).
    pub fn allows(&self, name: &str) -> bool {
        self.plugins.iter().all(|p| p.allows(name))
    }
}

/// Renders larger than this hand their freed memory back to the system afterwards.
const TRIM_AFTER: usize = 2 << 20;

/// How often, at most, a request for a tarball the stored packument does not list makes sluice
/// ask upstream for that packument again (per package, whatever the outcome).
const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Parse a stored or fetched packument of `name`; a document that cannot be used is upstream's
/// fault.
fn parse_document(bytes: &[u8], name: &str) -> Result<Packument, Error> {
    packument::parse(bytes, name).map_err(|error| Error::Packument {
        name: name.to_string(),
        error,
    })
}

/// Give freed heap pages back to the system: the parse tree of a multi-megabyte document is
/// freed after rendering, but glibc keeps its pages in the (per-thread) arenas otherwise.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The integrity a version publishes: `dist.integrity`, else its sha1 `dist.shasum`.
pub fn published_integrity(manifest: &Value) -> Option<Integrity> {
    let dist = manifest.get("dist")?;
    if let Some(sri) = dist.get("integrity").and_then(Value::as_str) {
        if let Ok(integrity) = sri.parse::<Integrity>() {
            return Some(integrity);
        }
    }
    let shasum = dist.get("shasum").and_then(Value::as_str)?;
    Integrity::from_hex(shasum, ssri::Algorithm::Sha1).ok()
}

/// Gzip `body` once, at a level that pays off for bodies served many times.
pub fn gzip_bytes(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 6),
        flate2::Compression::new(6),
    );
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}
