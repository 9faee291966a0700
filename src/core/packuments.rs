//! Packuments: hot in the store, revalidated with upstream after `policy.refresh`, merged so
//! that no version we ever held is lost, and written with a conditional put (read → merge →
//! put expecting what was read → on conflict read and merge again).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_plugin_api::CacheStatus;

use super::{parse_document, Error, PrivateNames, Shared, TRIM_AFTER};
use crate::flight::SingleFlight;
use crate::packument;
use crate::store::{
    now_ms, Expect, NameCache, PackumentMeta, SharedStore, StoreError, StoredPackument, Token,
    Written,
};
use crate::upstream::{Fetched, Upstream};

/// A packument as the core serves it: the merged document as upstream sent it.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The document's bytes (never with our links).
    pub bytes: Bytes,
    /// Validators and freshness.
    pub meta: PackumentMeta,
    /// Its version in the store; `None` when it could not be stored.
    pub token: Option<Token>,
    /// When this process just stored it as a change: the change's sequence number (see
    /// [`Packuments::change_seq`]), so what is derived from it may be cached until the next.
    pub stored_as: Option<u64>,
}

impl From<StoredPackument> for Doc {
    fn from(stored: StoredPackument) -> Self {
        Self {
            bytes: stored.bytes,
            meta: stored.meta,
            token: Some(stored.token),
            stored_as: None,
        }
    }
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Answers served stale.
    pub stale: AtomicU64,
    /// Revalidations done (background or not).
    pub revalidations: AtomicU64,
}

/// Called with a package's name whenever its stored document changed.
pub type OnChange = Box<dyn Fn(&str) + Send + Sync>;

/// How many times a merge is redone after losing a race before it gives up.
const MERGE_ATTEMPTS: usize = 16;

/// The packuments part of the core.
pub struct Packuments {
    store: SharedStore,
    upstream: Upstream,
    /// `policy.refresh` in milliseconds, as the live settings say now.
    refresh: Arc<AtomicU64>,
    flights: SingleFlight<Arc<str>, Shared<Doc>>,
    /// When upstream last confirmed each packument we served (unix ms), in memory.
    confirmed: NameCache<u64>,
    on_change: Vec<OnChange>,
    /// The names published here: never asked of upstream.
    private: Arc<PrivateNames>,
    /// The sequence number of each package's last change (see [`Packuments::change_seq`]).
    changes: NameCache<u64>,
    next_change: AtomicU64,
    /// Counters.
    pub stats: Stats,
}

impl std::fmt::Debug for Packuments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packuments")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Packuments {
    /// Packuments kept in `store`, fetched from `upstream`, fresh for `refresh` (milliseconds,
    /// read on each use: the setting changes live); `on_change`
    /// hears of every stored document that changed (derived caches drop what they hold).
    pub fn new(
        store: SharedStore,
        upstream: Upstream,
        refresh: Arc<AtomicU64>,
        on_change: Vec<OnChange>,
        private: Arc<PrivateNames>,
    ) -> Self {
        Self {
            store,
            upstream,
            refresh,
            flights: SingleFlight::default(),
            confirmed: NameCache::new(1_000_000),
            on_change,
            private,
            changes: NameCache::new(1_000_000),
            next_change: AtomicU64::new(1),
            stats: Stats::default(),
        }
    }

    /// How long a stored packument is served before it is revalidated, now.
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh.load(Ordering::Relaxed))
    }

    /// Whether a document upstream confirmed at `fetched_at` is still fresh.
    pub fn is_fresh(&self, fetched_at: u64) -> bool {
        now_ms().saturating_sub(fetched_at) < self.refresh().as_millis() as u64
    }

    /// Whether upstream confirmed `name` recently, as far as this process knows.
    pub fn confirmed_fresh(&self, name: &str) -> bool {
        self.confirmed.get(name).is_some_and(|at| self.is_fresh(at))
    }

    /// The packument of `name`: stored, else fetched from upstream; a stale copy is served at
    /// once and revalidated in the background.
    pub async fn get(self: &Arc<Self>, name: &str) -> Result<(Doc, CacheStatus), Error> {
        if self.private.contains(name) {
            // Published here: what the store holds is the truth, upstream is never asked.
            return match self.store.packument(name).await? {
                Some(stored) if !has_versions(&stored.bytes) => Err(Error::NotFound(format!(
                    "{name} was unpublished: every version was taken off this registry"
                ))),
                Some(stored) => {
                    self.confirmed.insert(name.into(), now_ms());
                    Ok((stored.into(), CacheStatus::Hit))
                }
                None => Err(Error::NotFound(format!(
                    "{name} is not published here yet (it is in a scope published to this \
                     registry, never looked up upstream)"
                ))),
            };
        }
        if let Some(stored) = self.store.packument(name).await? {
            if stored.stale {
                // A local copy: the shared store is out of reach.
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                return Ok((stored.into(), CacheStatus::Stale));
            }
            self.confirmed.insert(name.into(), stored.meta.fetched_at);
            if self.is_fresh(stored.meta.fetched_at) {
                return Ok((stored.into(), CacheStatus::Hit));
            }
            self.revalidate_in_background(name);
            return Ok((stored.into(), CacheStatus::Stale));
        }
        let (result, _) = self.fetch(name).await;
        Ok((result?, CacheStatus::Miss))
    }

    /// The stored packument of `name`, without asking upstream.
    pub async fn stored(&self, name: &str) -> Result<Option<Doc>, Error> {
        Ok(self.store.packument(name).await?.map(Doc::from))
    }

    /// Revalidate `name` with upstream now (one request however many callers ask at once).
    ///
    /// Returns the stored document and whether this caller's request did the fetch.
    pub async fn fetch(self: &Arc<Self>, name: &str) -> (Shared<Doc>, bool) {
        let key: Arc<str> = name.into();
        let this = self.clone();
        let task_name = key.clone();
        self.flights
            .run(key, async move { this.revalidate(&task_name).await })
            .await
    }

    /// Revalidate `name` in the background; the caller goes on with what it has.
    pub fn revalidate_in_background(self: &Arc<Self>, name: &str) {
        let this = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let (result, _) = this.fetch(&name).await;
            if let Err(error) = result {
                tracing::warn!(package = %name, %error, "revalidation failed: serving the stored copy");
            }
        });
    }

    /// The version of the stored packument of `name`, without reading it.
    pub async fn stored_version(&self, name: &str) -> Result<Option<Token>, StoreError> {
        Ok(self
            .store
            .packument_meta(name)
            .await?
            .map(|(_, token)| token))
    }

    /// Whether the stored packument of `name` is due for revalidation (no copy: due).
    pub async fn is_due(&self, name: &str, slack: Duration) -> Result<bool, Error> {
        Ok(match self.store.packument_meta(name).await? {
            Some((meta, _)) => {
                now_ms().saturating_sub(meta.fetched_at)
                    >= self.refresh().saturating_sub(slack).as_millis() as u64
            }
            None => true,
        })
    }

    /// Ask upstream for `name` (conditionally when we hold it) and store the merged result.
    async fn revalidate(&self, name: &str) -> Shared<Doc> {
        let held = self.store.packument(name).await?;
        if self.private.contains(name) {
            return held
                .map(Doc::from)
                .ok_or_else(|| Error::NotFound(format!("{name} is not published here yet")));
        }
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
                let meta = PackumentMeta {
                    etag,
                    last_modified,
                    fetched_at: now,
                    origin: None,
                };
                self.merge_and_store(name, bytes, meta, held).await
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
                Ok(held.into())
            }
            (Err(error), None) => Err(error.into()),
        }
    }

    /// Merge the fresh document `bytes` with what is stored and put the result, expecting what
    /// was read; another writer (add-package, a second server) winning the race means reading
    /// and merging again.
    async fn merge_and_store(
        &self,
        name: &str,
        bytes: Bytes,
        meta: PackumentMeta,
        mut held: Option<StoredPackument>,
    ) -> Shared<Doc> {
        let fresh = parse_document(&bytes, name)?;
        let first_held = held.as_ref().map(|h| h.bytes.clone());
        for _ in 0..MERGE_ATTEMPTS {
            let to_store = merged(name, &fresh, &bytes, held.as_ref())?;
            let expect = Expect::from_read(held.as_ref().map(|h| &h.token));
            match self
                .store
                .put_packument(name, to_store.clone(), &meta, expect)
                .await
            {
                Ok(Written::Stored(token)) => {
                    return Ok(self.stored_now(name, first_held, to_store, meta, Some(token)));
                }
                Ok(Written::Conflict) => {
                    tracing::debug!(
                        package = name,
                        "another writer stored this packument first: merging again"
                    );
                    held = self.store.packument(name).await?;
                }
                Err(error) => {
                    // Serve what upstream sent even when it cannot be kept.
                    tracing::error!(package = name, %error, "packument not stored");
                    return Ok(self.stored_now(name, first_held, to_store, meta, None));
                }
            }
        }
        Err(Error::Internal(format!(
            "{name}: {MERGE_ATTEMPTS} merges in a row lost their race to other writers"
        )))
    }

    /// Record that `name` now reads `bytes`: confirmed now, derived caches told when it changed.
    fn stored_now(
        &self,
        name: &str,
        before: Option<Bytes>,
        bytes: Bytes,
        meta: PackumentMeta,
        token: Option<Token>,
    ) -> Doc {
        let stored_as = (before.as_ref() != Some(&bytes)).then(|| self.changed(name));
        self.confirmed.insert(name.into(), meta.fetched_at);
        if bytes.len() > TRIM_AFTER {
            tokio::task::spawn_blocking(crate::memory::release_freed_memory);
        }
        Doc {
            bytes,
            meta,
            token,
            stored_as,
        }
    }

    /// The names published here, which these packuments never ask upstream for.
    pub fn private(&self) -> &PrivateNames {
        &self.private
    }

    /// A number that changes whenever the stored packument of `name` changes in this process:
    /// what was derived from it before a change must not be cached after it.
    pub fn change_seq(&self, name: &str) -> u64 {
        self.changes.get(name).unwrap_or(0)
    }

    /// Note that the stored packument of `name` changed elsewhere (another node): what is
    /// being derived from the old one now is not cached.
    pub fn changed_elsewhere(&self, name: &str) {
        let seq = self.next_change.fetch_add(1, Ordering::Relaxed);
        self.changes.insert(name.into(), seq);
        self.confirmed.invalidate(name);
    }

    /// Tell the derived caches (and the fleet) that the stored packument of `name` changed.
    ///
    /// Returns the change's sequence number.
    pub fn changed(&self, name: &str) -> u64 {
        let seq = self.next_change.fetch_add(1, Ordering::Relaxed);
        self.changes.insert(name.into(), seq);
        self.confirmed.insert(name.into(), now_ms());
        for listener in &self.on_change {
            listener(name);
        }
        seq
    }

    async fn touch(&self, name: &str, held: StoredPackument, now: u64) -> Shared<Doc> {
        let meta = PackumentMeta {
            fetched_at: now,
            ..held.meta.clone()
        };
        // A lost race means another writer stored a newer copy: theirs stands, and it is
        // at least as fresh as ours.
        let token = match self.store.touch_packument(name, &meta, &held.token).await? {
            Written::Stored(token) => Some(token),
            Written::Conflict => None,
        };
        self.confirmed.insert(name.into(), now);
        Ok(Doc {
            bytes: held.bytes,
            meta,
            token,
            stored_as: None,
        })
    }

    /// Treat the stored packument of `name` as due for revalidation (admin and test hook).
    pub async fn mark_stale(&self, name: &str) -> Result<(), Error> {
        self.confirmed.insert(name.into(), 0);
        if let Some((meta, token)) = self.store.packument_meta(name).await? {
            let meta = PackumentMeta {
                fetched_at: 0,
                ..meta
            };
            self.store.touch_packument(name, &meta, &token).await?;
        }
        Ok(())
    }
}

/// The bytes to store for `name`: the fresh document, with every version `held` had and it
/// lacks.
fn merged(
    name: &str,
    fresh: &sluice_plugin_api::Packument,
    bytes: &Bytes,
    held: Option<&StoredPackument>,
) -> Result<Bytes, Error> {
    let Some(held) = held else {
        return Ok(bytes.clone());
    };
    let Ok(held_doc) = packument::parse(&held.bytes, name) else {
        return Ok(bytes.clone());
    };
    let fresh_versions = fresh.versions();
    let lacks_one = held_doc.versions().is_some_and(|held_versions| {
        held_versions
            .keys()
            .any(|v| !fresh_versions.is_some_and(|f| f.contains_key(v)))
    });
    if !lacks_one {
        return Ok(bytes.clone());
    }
    let mut doc = fresh.clone();
    let restored = packument::merge(&mut doc, &held_doc);
    if restored.is_empty() {
        return Ok(bytes.clone());
    }
    tracing::info!(package = name, versions = ?restored, "keeping versions upstream no longer lists");
    serde_json::to_vec(&doc.doc)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(format!("cannot serialize {name}: {e}")))
}

/// Whether a stored document lists any version (a private package unpublished whole lists none).
fn has_versions(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Versions {
        #[serde(default)]
        versions: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Versions>(bytes).map_or(true, |doc| !doc.versions.is_empty())
}
