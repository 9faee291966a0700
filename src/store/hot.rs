//! The hot cache: rendered packument bodies and small tarballs (up to
//! `storage.hot_tarball_max`) in memory, bounded by bytes.

use std::sync::Arc;

use bytes::Bytes;
use moka::sync::Cache;

/// What the hot cache holds an entry for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HotKey {
    /// A rendered packument: full or abbreviated, identity or gzip.
    Packument {
        /// Package name.
        name: Arc<str>,
        /// Abbreviated ("corgi") rather than full.
        abbreviated: bool,
        /// Gzip-compressed rather than identity.
        gzip: bool,
    },
    /// A verified tarball.
    Tarball {
        /// Package name.
        name: Arc<str>,
        /// Tarball file name.
        file: Arc<str>,
    },
}

/// A body ready to send: bytes and their strong ETag.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The body.
    pub body: Bytes,
    /// A strong ETag (quoted), the same for the same bytes.
    pub etag: Arc<str>,
    /// Upstream's `time.modified`, as an HTTP date, for `Last-Modified` (packuments only).
    pub last_modified: Option<Arc<str>>,
    /// The plugins' generation it was rendered under (packuments only).
    pub generation: u64,
    /// When a plugin's answer for it changes by itself (unix ms; packuments only).
    pub expires_at: Option<u64>,
}

impl Rendered {
    /// A rendered body with an ETag derived from its bytes.
    pub fn new(body: Bytes, last_modified: Option<Arc<str>>) -> Self {
        let hash = xxhash_rust::xxh3::xxh3_128(&body);
        Self {
            etag: format!("\"{hash:032x}\"").into(),
            body,
            last_modified,
            generation: 0,
            expires_at: None,
        }
    }

    /// A tarball's body, with an ETag derived from its stored integrity.
    pub fn tarball(body: Bytes, etag: Arc<str>) -> Self {
        Self {
            body,
            etag,
            last_modified: None,
            generation: 0,
            expires_at: None,
        }
    }

    /// Whether it was rendered under plugin generation `generation` and has not expired at
    /// `now` (unix ms).
    pub fn is_current(&self, generation: u64, now: u64) -> bool {
        self.generation == generation && self.expires_at.is_none_or(|at| now < at)
    }
}

/// The ETag of a tarball whose stored content has integrity `sri`: strong and stable, whether
/// the body is served from memory or streamed from the store.
///
/// Returns `None` when `sri` has no sha512 hash (the store keeps every tarball under one, so a
/// sha1-only published integrity gives no ETag until the tarball is stored).
pub fn tarball_etag(sri: &ssri::Integrity) -> Option<Arc<str>> {
    let hash = sri
        .hashes
        .iter()
        .find(|h| h.algorithm == ssri::Algorithm::Sha512)?;
    let digest = hash.digest.get(..32).unwrap_or(&hash.digest);
    Some(format!("\"{digest}\"").into())
}

/// The in-memory cache, bounded by the bytes it holds.
#[derive(Clone)]
pub struct HotCache {
    cache: Cache<HotKey, Arc<Rendered>>,
    max_entry: u64,
}

impl std::fmt::Debug for HotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotCache")
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl HotCache {
    /// A cache holding at most `max_bytes` of bodies, each for at most `ttl` (plugins such as
    /// min-age change what a document renders to as time passes).
    pub fn new(max_bytes: u64, ttl: std::time::Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .time_to_live(ttl)
            .weigher(|key: &HotKey, value: &Arc<Rendered>| {
                let key_len = match key {
                    HotKey::Packument { name, .. } => name.len(),
                    HotKey::Tarball { name, file } => name.len() + file.len(),
                };
                let weight = value.body.len() + value.etag.len() + key_len + 64;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            cache,
            // One body may take at most an eighth of the cache, so a few huge documents
            // cannot evict everything else.
            max_entry: (max_bytes / 8).max(1),
        }
    }

    /// The entry for `key`, if held.
    pub fn get(&self, key: &HotKey) -> Option<Arc<Rendered>> {
        self.cache.get(key)
    }

    /// Hold `value` under `key`, unless it is too large to be worth it.
    pub fn insert(&self, key: HotKey, value: Arc<Rendered>) {
        if (value.body.len() as u64) <= self.max_entry {
            self.cache.insert(key, value);
        }
    }

    /// Forget every rendered body of packument `name`.
    pub fn invalidate_packument(&self, name: &str) {
        let name: Arc<str> = name.into();
        for abbreviated in [false, true] {
            for gzip in [false, true] {
                let key = HotKey::Packument {
                    name: name.clone(),
                    abbreviated,
                    gzip,
                };
                self.cache.invalidate(&key);
            }
        }
    }

    /// Forget everything.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Bytes held now (approximate until pending maintenance runs).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Run pending maintenance (evictions) now.
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }
}
