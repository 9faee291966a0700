//! The hot cache: rendered packument bodies and small tarballs (up to
//! `storage.hot_tarball_max`) in memory, bounded by bytes.
//!
//! It is a `quick_cache` (CLOCK-Pro, evicting as it inserts), not a moka cache: every cached
//! request looks here, and a moka read also queues an access record for its housekeeping,
//! which was a tenth of a cached request's CPU. Lookups take a borrowed key ([`HotKeyRef`]), so
//! a hit allocates nothing.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Equivalent, OptionsBuilder, UnitWeighter, Weighter};

/// What the hot cache holds an entry for.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A [`HotKey`] borrowed, to look one up without building it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HotKeyRef<'a> {
    /// A rendered packument: full or abbreviated, identity or gzip.
    Packument {
        /// Package name.
        name: &'a str,
        /// Abbreviated ("corgi") rather than full.
        abbreviated: bool,
        /// Gzip-compressed rather than identity.
        gzip: bool,
    },
    /// A verified tarball.
    Tarball {
        /// Package name.
        name: &'a str,
        /// Tarball file name.
        file: &'a str,
    },
}

impl HotKey {
    /// The key, borrowed.
    pub fn as_ref(&self) -> HotKeyRef<'_> {
        match self {
            HotKey::Packument {
                name,
                abbreviated,
                gzip,
            } => HotKeyRef::Packument {
                name,
                abbreviated: *abbreviated,
                gzip: *gzip,
            },
            HotKey::Tarball { name, file } => HotKeyRef::Tarball { name, file },
        }
    }
}

// A key hashes as its borrowed form, so either finds the entry.
impl Hash for HotKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl Equivalent<HotKey> for HotKeyRef<'_> {
    fn equivalent(&self, key: &HotKey) -> bool {
        *self == key.as_ref()
    }
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

/// An entry: the body and when it was stored (entries live at most the cache's `ttl`).
#[derive(Clone)]
struct Entry {
    rendered: Arc<Rendered>,
    stored: Instant,
}

/// An entry weighs its bytes, its key's and a fixed overhead.
#[derive(Clone)]
struct Bytesize;

impl Weighter<HotKey, Entry> for Bytesize {
    fn weight(&self, key: &HotKey, entry: &Entry) -> u64 {
        let key_len = match key {
            HotKey::Packument { name, .. } => name.len(),
            HotKey::Tarball { name, file } => name.len() + file.len(),
        };
        (entry.rendered.body.len() + entry.rendered.etag.len() + key_len + 64) as u64
    }
}

/// The in-memory cache, bounded by the bytes it holds.
#[derive(Clone)]
pub struct HotCache {
    cache: Arc<Cache<HotKey, Entry, Bytesize>>,
    /// The longest an entry is served, in milliseconds: read on each use (the refresh
    /// interval it follows changes live).
    ttl_ms: Arc<std::sync::atomic::AtomicU64>,
    /// The shortest ttl, whatever `ttl_ms` says.
    ttl_floor: Duration,
    max_entry: u64,
}

impl std::fmt::Debug for HotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotCache")
            .field("bytes", &self.cache.weight())
            .finish()
    }
}

/// The cache's shards (each bounded by a quarter of its bytes, so one body of the largest size
/// held, an eighth, always fits its shard).
const SHARDS: usize = 4;

impl HotCache {
    /// A cache holding at most `max_bytes` of bodies, each for at most `ttl` (plugins such as
    /// min-age change what a document renders to as time passes).
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let ttl_ms = Arc::new(std::sync::atomic::AtomicU64::new(ttl.as_millis() as u64));
        Self::with_live_ttl(max_bytes, ttl_ms, Duration::ZERO)
    }

    /// [`HotCache::new`] with the ttl (milliseconds) read from `ttl_ms` on each use, and at
    /// least `floor`.
    pub fn with_live_ttl(
        max_bytes: u64,
        ttl_ms: Arc<std::sync::atomic::AtomicU64>,
        floor: Duration,
    ) -> Self {
        let options = OptionsBuilder::new()
            .shards(SHARDS)
            // Sized for bodies of 16 KiB on average; the tables grow past it as needed.
            .estimated_items_capacity((max_bytes / (16 << 10)).clamp(256, 1 << 16) as usize)
            .weight_capacity(max_bytes.max(1))
            .build()
            .unwrap_or_else(|_| unreachable!("the options are all set"));
        let cache = Cache::with_options(
            options,
            Bytesize,
            DefaultHashBuilder::default(),
            Default::default(),
        );
        Self {
            cache: Arc::new(cache),
            ttl_ms,
            ttl_floor: floor,
            // One body may take at most an eighth of the cache, so a few huge documents
            // cannot evict everything else.
            max_entry: (max_bytes / 8).max(1),
        }
    }

    /// The longest an entry is served now.
    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(std::sync::atomic::Ordering::Relaxed))
            .max(self.ttl_floor)
    }

    /// The entry for `key` (a [`HotKey`] or a [`HotKeyRef`]), if held.
    pub fn get<Q: Hash + Equivalent<HotKey> + ?Sized>(&self, key: &Q) -> Option<Arc<Rendered>> {
        let entry = self.cache.get(key)?;
        if entry.stored.elapsed() < self.ttl() {
            return Some(entry.rendered);
        }
        // Out of date: forget it, unless a newer one took its place meanwhile.
        self.cache
            .remove_if(key, |held| held.stored == entry.stored);
        None
    }

    /// Hold `value` under `key`, unless it is too large to be worth it.
    pub fn insert(&self, key: HotKey, value: Arc<Rendered>) {
        if (value.body.len() as u64) <= self.max_entry {
            let entry = Entry {
                rendered: value,
                stored: Instant::now(),
            };
            self.cache.insert(key, entry);
        }
    }

    /// Forget every rendered body of packument `name`.
    pub fn invalidate_packument(&self, name: &str) {
        for abbreviated in [false, true] {
            for gzip in [false, true] {
                let key = HotKeyRef::Packument {
                    name,
                    abbreviated,
                    gzip,
                };
                self.cache.remove(&key);
            }
        }
    }

    /// Forget everything.
    pub fn invalidate_all(&self) {
        self.cache.clear();
    }

    /// Bytes held now.
    pub fn weighted_size(&self) -> u64 {
        self.cache.weight()
    }
}

/// A bounded map from package names (looked up by `&str`) to `V`, for the per-package state
/// the core keeps beside the store: evicting as it inserts, with no housekeeping on reads.
pub struct NameCache<V: Clone>(Cache<Arc<str>, V, UnitWeighter>);

impl<V: Clone> NameCache<V> {
    /// A map of at most `capacity` names (its tables grow with use, not allocated up front).
    pub fn new(capacity: usize) -> Self {
        let options = OptionsBuilder::new()
            .estimated_items_capacity(capacity.clamp(1, 4096))
            .weight_capacity(capacity.max(1) as u64)
            .build()
            .unwrap_or_else(|_| unreachable!("the options are all set"));
        Self(Cache::with_options(
            options,
            UnitWeighter,
            DefaultHashBuilder::default(),
            Default::default(),
        ))
    }

    /// The value for `name`, if held.
    pub fn get(&self, name: &str) -> Option<V> {
        self.0.get(name)
    }

    /// Hold `value` for `name`.
    pub fn insert(&self, name: Arc<str>, value: V) {
        self.0.insert(name, value);
    }

    /// Forget `name`.
    pub fn invalidate(&self, name: &str) {
        self.0.remove(name);
    }

    /// Forget every name.
    pub fn invalidate_all(&self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> Arc<Rendered> {
        Arc::new(Rendered::new(Bytes::from(vec![b'x'; n]), None))
    }

    fn tarball(name: &str, file: &str) -> HotKey {
        HotKey::Tarball {
            name: name.into(),
            file: file.into(),
        }
    }

    #[test]
    fn a_borrowed_key_finds_what_an_owned_one_stored() {
        let hot = HotCache::new(1 << 20, Duration::from_secs(3600));
        hot.insert(tarball("a", "a-1.0.0.tgz"), body(10));
        let found = hot.get(&HotKeyRef::Tarball {
            name: "a",
            file: "a-1.0.0.tgz",
        });
        assert_eq!(found.map(|r| r.body.len()), Some(10));
        assert!(hot
            .get(&HotKeyRef::Tarball {
                name: "a",
                file: "a-1.0.1.tgz"
            })
            .is_none());
        assert!(hot.get(&tarball("a", "a-1.0.0.tgz")).is_some());
    }

    #[test]
    fn an_entry_older_than_the_ttl_is_not_served() {
        let hot = HotCache::new(1 << 20, Duration::ZERO);
        hot.insert(tarball("a", "a-1.0.0.tgz"), body(10));
        assert!(hot.get(&tarball("a", "a-1.0.0.tgz")).is_none());
        assert_eq!(hot.weighted_size(), 0, "the stale entry was dropped");
    }

    #[test]
    fn invalidating_a_packument_drops_all_four_renders() {
        let hot = HotCache::new(1 << 20, Duration::from_secs(3600));
        for abbreviated in [false, true] {
            for gzip in [false, true] {
                let key = HotKey::Packument {
                    name: "p".into(),
                    abbreviated,
                    gzip,
                };
                hot.insert(key, body(10));
            }
        }
        hot.insert(tarball("p", "p-1.0.0.tgz"), body(10));
        hot.invalidate_packument("p");
        for abbreviated in [false, true] {
            for gzip in [false, true] {
                let key = HotKeyRef::Packument {
                    name: "p",
                    abbreviated,
                    gzip,
                };
                assert!(hot.get(&key).is_none());
            }
        }
        assert!(hot.get(&tarball("p", "p-1.0.0.tgz")).is_some());
    }

    #[test]
    fn the_cache_holds_at_most_its_bytes() {
        let max = 64 << 10;
        let hot = HotCache::new(max, Duration::from_secs(3600));
        for i in 0..200 {
            hot.insert(tarball("a", &format!("a-{i}.tgz")), body(1000));
        }
        assert!(hot.weighted_size() <= max, "{}", hot.weighted_size());
        assert!(hot.weighted_size() > max / 2, "{}", hot.weighted_size());
        // Larger than an eighth of the cache: not held at all.
        hot.insert(tarball("big", "big.tgz"), body((max / 8) as usize + 1));
        assert!(hot.get(&tarball("big", "big.tgz")).is_none());
    }

    #[test]
    fn a_name_cache_is_read_by_str() {
        let names = NameCache::new(10);
        names.insert("a".into(), 1u64);
        assert_eq!(names.get("a"), Some(1));
        names.invalidate("a");
        assert_eq!(names.get("a"), None);
        for i in 0..100u64 {
            names.insert(format!("n{i}").into(), i);
        }
        let held = (0..100)
            .filter(|i| names.get(&format!("n{i}")).is_some())
            .count();
        assert!(held <= 10, "{held}");
    }
}
