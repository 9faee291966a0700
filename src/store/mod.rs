//! The store: packuments and tarballs on disk (cacache), and the hot cache of rendered bodies
//! in memory (moka).
//!
//! Keys are built from names, but cacache hashes keys into its own paths: no path on disk is
//! ever built from a package name. Every read goes through cacache's verifying reads: an entry
//! whose bytes do not match their integrity is dropped and reported as a miss.

mod hot;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use ssri::{Algorithm, Integrity};
use tokio::io::AsyncWriteExt;

pub use hot::{HotCache, HotKey, Rendered};

/// A store operation that failed (disk full, permissions…).
#[derive(Debug, thiserror::Error)]
#[error("store {}: {message}", dir.display())]
pub struct StoreError {
    /// The store's folder.
    pub dir: PathBuf,
    /// What failed.
    pub message: String,
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
}

/// A packument read from the store.
#[derive(Debug, Clone)]
pub struct StoredPackument {
    /// The merged document as upstream sent it (never with our links).
    pub bytes: Bytes,
    /// Validators and freshness.
    pub meta: PackumentMeta,
    /// The integrity of `bytes` in the store; changes whenever the document changes.
    pub integrity: Integrity,
}

/// What `verify` found.
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    /// Entries whose content matched.
    pub ok: u64,
    /// Keys whose content did not match (dropped).
    pub corrupt: Vec<String>,
    /// Keys whose content file was gone (dropped).
    pub missing: Vec<String>,
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The disk store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    fail_writes: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn packument_key(name: &str) -> String {
    format!("packument:{name}")
}

fn tarball_key(name: &str, file: &str) -> String {
    format!("tarball:{name}/{file}")
}

impl Store {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fail_writes: Default::default(),
        }
    }

    /// Fault hook for tests: make every write fail as a full disk does.
    #[doc(hidden)]
    pub fn set_fail_writes(&self, fail: bool) {
        self.fail_writes
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.fail_writes.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.fail("No space left on device (os error 28)"));
        }
        Ok(())
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn fail(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError {
            dir: self.dir.clone(),
            message: message.to_string(),
        }
    }

    /// The stored packument of `name`, verified; `None` when absent or corrupt (then dropped).
    pub async fn packument(&self, name: &str) -> Result<Option<StoredPackument>, StoreError> {
        let key = packument_key(name);
        let Some(entry) = self.find(&key).await? else {
            return Ok(None);
        };
        let Some(bytes) = self.read_verified(&key, &entry.integrity).await? else {
            return Ok(None);
        };
        let meta = serde_json::from_value(entry.metadata).unwrap_or_default();
        Ok(Some(StoredPackument {
            bytes: Bytes::from(bytes),
            meta,
            integrity: entry.integrity,
        }))
    }

    /// The stored packument's metadata only (no content read).
    pub async fn packument_meta(&self, name: &str) -> Result<Option<PackumentMeta>, StoreError> {
        Ok(self
            .find(&packument_key(name))
            .await?
            .map(|entry| serde_json::from_value(entry.metadata).unwrap_or_default()))
    }

    /// Store `bytes` as the packument of `name`; returns its integrity.
    pub async fn put_packument(
        &self,
        name: &str,
        bytes: &[u8],
        meta: &PackumentMeta,
    ) -> Result<Integrity, StoreError> {
        self.check_writable()?;
        let metadata = serde_json::to_value(meta).map_err(|e| self.fail(e))?;
        let mut writer = cacache::WriteOpts::new()
            .algorithm(Algorithm::Sha256)
            .size(bytes.len())
            .metadata(metadata)
            .open(&self.dir, packument_key(name))
            .await
            .map_err(|e| self.fail(e))?;
        writer.write_all(bytes).await.map_err(|e| self.fail(e))?;
        writer.commit().await.map_err(|e| self.fail(e))
    }

    /// Record new metadata (e.g. a revalidation that found no change) for the stored packument
    /// with `integrity`, without rewriting its bytes.
    pub async fn touch_packument(
        &self,
        name: &str,
        integrity: &Integrity,
        size: usize,
        meta: &PackumentMeta,
    ) -> Result<(), StoreError> {
        let metadata = serde_json::to_value(meta).map_err(|e| self.fail(e))?;
        let opts = cacache::WriteOpts::new()
            .integrity(integrity.clone())
            .size(size)
            .metadata(metadata);
        cacache::index::insert_async(&self.dir, &packument_key(name), opts)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// An exclusive lock, shared by every process using this store, for read-merge-write of
    /// the packument of `name`; released when the returned file is dropped.
    ///
    /// Names map onto 256 lock files by hash: no path is built from a name.
    pub async fn lock_packument(&self, name: &str) -> Result<std::fs::File, StoreError> {
        let dir = self.dir.join("locks");
        let path = dir.join(format!(
            "{:02x}.lock",
            xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % 256
        ));
        tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            std::fs::create_dir_all(&dir)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| self.fail(e))?
        .map_err(|e| self.fail(e))
    }

    /// The stored tarball `file` of `name`, verified; `None` when absent or corrupt (then
    /// dropped, so the next request refetches it).
    pub async fn tarball(&self, name: &str, file: &str) -> Result<Option<Bytes>, StoreError> {
        let key = tarball_key(name, file);
        let Some(entry) = self.find(&key).await? else {
            return Ok(None);
        };
        Ok(self
            .read_verified(&key, &entry.integrity)
            .await?
            .map(Bytes::from))
    }

    /// Whether tarball `file` of `name` is stored (index only; the content is checked on read).
    pub async fn has_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        Ok(self.find(&tarball_key(name, file)).await?.is_some())
    }

    /// Store tarball bytes that were already verified against their published integrity.
    pub async fn put_tarball(
        &self,
        name: &str,
        file: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut writer = cacache::WriteOpts::new()
            .algorithm(Algorithm::Sha512)
            .size(bytes.len())
            .open(&self.dir, tarball_key(name, file))
            .await
            .map_err(|e| self.fail(e))?;
        writer.write_all(bytes).await.map_err(|e| self.fail(e))?;
        writer.commit().await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// The names of every stored packument (walks the index; for background work only).
    pub fn packument_names(&self) -> Vec<String> {
        cacache::index::ls(&self.dir)
            .filter_map(Result::ok)
            .filter_map(|entry| entry.key.strip_prefix("packument:").map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Every stored entry's key and integrity (for `verify`).
    pub fn entries(&self) -> Vec<(String, Integrity)> {
        cacache::index::ls(&self.dir)
            .filter_map(Result::ok)
            .map(|entry| (entry.key, entry.integrity))
            .collect()
    }

    /// Check every entry's content against its integrity; drop the corrupt or missing ones
    /// (they are fetched again on demand). `progress` is called after each entry with
    /// (done, total).
    pub async fn verify(&self, progress: impl Fn(u64, u64)) -> Result<VerifyReport, StoreError> {
        let store = self.clone();
        let entries = tokio::task::spawn_blocking(move || store.entries())
            .await
            .map_err(|e| self.fail(e))?;
        let total = entries.len() as u64;
        let mut report = VerifyReport::default();
        for (done, (key, sri)) in entries.into_iter().enumerate() {
            match cacache::read_hash(&self.dir, &sri).await {
                Ok(_) => report.ok += 1,
                Err(cacache::Error::IntegrityError(_)) => {
                    let _ = cacache::remove_hash(&self.dir, &sri).await;
                    let _ = cacache::remove(&self.dir, &key).await;
                    report.corrupt.push(key);
                }
                Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = cacache::remove(&self.dir, &key).await;
                    report.missing.push(key);
                }
                Err(e) => return Err(self.fail(e)),
            }
            progress(done as u64 + 1, total);
        }
        Ok(report)
    }

    /// Drop the entry `key` (its content is left for cacache to reuse or collect).
    pub async fn remove_key(&self, key: &str) -> Result<(), StoreError> {
        cacache::remove(&self.dir, key)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Read the content of `key` with integrity `sri`, verified.
    ///
    /// Returns `None` (and drops the entry) when the content is missing or corrupt.
    pub async fn read_verified(
        &self,
        key: &str,
        sri: &Integrity,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match cacache::read_hash(&self.dir, sri).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(cacache::Error::IntegrityError(_)) => {
                tracing::warn!(
                    key,
                    "stored entry is corrupt: dropped, it will be fetched again"
                );
                let _ = cacache::remove_hash(&self.dir, sri).await;
                let _ = cacache::remove(&self.dir, key).await;
                Ok(None)
            }
            Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = cacache::remove(&self.dir, key).await;
                Ok(None)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn find(&self, key: &str) -> Result<Option<cacache::Metadata>, StoreError> {
        match cacache::index::find_async(&self.dir, key).await {
            Ok(found) => Ok(found),
            Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_flipped_byte_is_a_miss_and_the_entry_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store
            .put_tarball("a", "a-1.0.0.tgz", b"hello tarball")
            .await
            .unwrap();
        assert_eq!(
            store.tarball("a", "a-1.0.0.tgz").await.unwrap().as_deref(),
            Some(&b"hello tarball"[..])
        );
        // Flip a byte in the content file.
        for entry in walk(&dir.path().join("content-v2")) {
            let mut bytes = std::fs::read(&entry).unwrap();
            bytes[0] ^= 1;
            std::fs::write(&entry, bytes).unwrap();
        }
        let report = store.verify(|_, _| {}).await.unwrap();
        assert_eq!(report.corrupt, vec!["tarball:a/a-1.0.0.tgz".to_string()]);
        assert!(store.tarball("a", "a-1.0.0.tgz").await.unwrap().is_none());
        assert!(!store.has_tarball("a", "a-1.0.0.tgz").await.unwrap());
    }

    #[tokio::test]
    async fn packuments_keep_their_metadata_and_touch_updates_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(store.packument("a").await.unwrap().is_none());
        let meta = PackumentMeta {
            etag: Some("\"1\"".into()),
            last_modified: None,
            fetched_at: 5,
        };
        let sri = store.put_packument("a", b"{}", &meta).await.unwrap();
        let touched = PackumentMeta {
            fetched_at: 9,
            ..meta.clone()
        };
        store.touch_packument("a", &sri, 2, &touched).await.unwrap();
        let stored = store.packument("a").await.unwrap().unwrap();
        assert_eq!(stored.meta, touched);
        assert_eq!(&stored.bytes[..], b"{}");
        assert_eq!(store.packument_names(), vec!["a".to_string()]);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
