//! The disk backend: cacache in a folder (the embedded default).
//!
//! Keys are built from names, but cacache hashes keys into its own paths: no path on disk is
//! ever built from a package name. Every read is verified: an entry whose bytes do not match
//! their integrity is dropped and reported as a miss (packuments, state) or ends its stream
//! with an error (tarballs). Conditional puts are emulated under an exclusive lock per key,
//! shared by every process using the folder (256 lock files, chosen by hash).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use ssri::{Algorithm, Integrity, IntegrityChecker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    now_ms, Claim, Expect, PackumentMeta, Store, StoreError, StoredPackument, TarballBody,
    TarballFile, TarballSink, Token, VerifyReport, Written,
};

/// How much of a stored tarball is read at a time.
const READ_CHUNK: usize = 64 << 10;

/// The cacache store in one folder.
#[derive(Debug, Clone)]
pub struct DiskStore {
    dir: PathBuf,
    /// Tarball content files checked whole in this process, by key, with what their file
    /// looked like then: one that changed since is checked again before it is handed out.
    checked: moka::sync::Cache<String, Arc<CheckedFile>>,
}

/// A content file whose bytes matched their integrity.
#[derive(Debug)]
struct CheckedFile {
    path: PathBuf,
    integrity: Integrity,
    size: u64,
    seen: FileSeen,
}

/// What identifies a file's state: device, inode, length, modification and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSeen(u64, u64, u64, i64, i64, i64, i64);

impl FileSeen {
    fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self(
            metadata.dev(),
            metadata.ino(),
            metadata.len(),
            metadata.mtime(),
            metadata.mtime_nsec(),
            metadata.ctime(),
            metadata.ctime_nsec(),
        )
    }
}

/// Where cacache keeps the content `sri` names in `dir` (its `content-v2` layout).
fn content_path(dir: &Path, sri: &Integrity) -> PathBuf {
    let (algorithm, hex) = sri.to_hex();
    dir.join("content-v2")
        .join(algorithm.to_string())
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex[4..])
}

/// Open `path` and check its whole content against `integrity`.
fn open_checked(
    path: &Path,
    integrity: &Integrity,
) -> std::io::Result<Option<(std::fs::File, FileSeen)>> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let seen = FileSeen::of(&file.metadata()?);
    let mut checker = IntegrityChecker::new(integrity.clone());
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => checker.input(&buf[..n]),
        }
    }
    Ok(checker.result().is_ok().then_some((file, seen)))
}

fn packument_key(name: &str) -> String {
    format!("packument:{name}")
}

fn tarball_key(name: &str, file: &str) -> String {
    format!("tarball:{name}/{file}")
}

fn state_key(key: &str) -> String {
    format!("state:{key}")
}

impl DiskStore {
    /// Store `bytes` as the packument of `name` whatever is there (a node's local copy of a
    /// shared store's object).
    pub async fn replace_packument(
        &self,
        name: &str,
        bytes: &[u8],
        meta: &PackumentMeta,
    ) -> Result<(), StoreError> {
        let key = packument_key(name);
        let metadata = serde_json::to_value(meta).map_err(|e| self.fail(e))?;
        let _lock = self.lock(&key).await?;
        let found = self.find(&key).await?;
        let mut writer = cacache::WriteOpts::new()
            .algorithm(Algorithm::Sha256)
            .size(bytes.len())
            .time(next_time(found.as_ref()))
            .metadata(metadata)
            .open(&self.dir, &key)
            .await
            .map_err(|e| self.fail(e))?;
        writer.write_all(bytes).await.map_err(|e| self.fail(e))?;
        writer.commit().await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Drop the oldest tarballs until the tarballs kept take at most `max` bytes.
    ///
    /// Returns the bytes dropped.
    pub async fn evict_tarballs_to(&self, max: u64) -> Result<u64, StoreError> {
        let dir = self.dir.clone();
        let mut entries: Vec<cacache::Metadata> = tokio::task::spawn_blocking(move || {
            cacache::index::ls(&dir)
                .filter_map(Result::ok)
                .filter(|e| e.key.starts_with("tarball:"))
                .collect()
        })
        .await
        .map_err(|e| self.fail(e))?;
        let mut total: u64 = entries.iter().map(|e| e.size as u64).sum();
        if total <= max {
            return Ok(0);
        }
        entries.sort_by_key(|e| e.time);
        let mut dropped = 0;
        for entry in entries {
            if total <= max {
                break;
            }
            self.drop_entry(&entry.key, Some(&entry.integrity)).await;
            total = total.saturating_sub(entry.size as u64);
            dropped += entry.size as u64;
        }
        Ok(dropped)
    }
}

/// The time to write a new version of an entry at: now, but always after the version it
/// replaces, so every write makes a new token.
fn next_time(replaced: Option<&cacache::Metadata>) -> u128 {
    let now = u128::from(now_ms());
    replaced.map_or(now, |entry| now.max(entry.time + 1))
}

fn token_of(entry: &cacache::Metadata) -> Token {
    Token::new(format!("{}@{}", entry.integrity, entry.time))
}

impl DiskStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            checked: moka::sync::Cache::builder().max_capacity(100_000).build(),
        }
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn fail(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError {
            location: self.dir.display().to_string(),
            message: message.to_string(),
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

    /// Read the content of `key` with integrity `sri`, verified; `None` (and the entry dropped)
    /// when it is missing or corrupt.
    async fn read_verified(
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
                self.drop_entry(key, Some(sri)).await;
                Ok(None)
            }
            Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {
                self.drop_entry(key, None).await;
                Ok(None)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn drop_entry(&self, key: &str, content: Option<&Integrity>) {
        if let Some(sri) = content {
            let _ = cacache::remove_hash(&self.dir, sri).await;
        }
        let _ = cacache::remove(&self.dir, key).await;
    }

    /// An exclusive lock on `key`, shared by every process using this folder; released when
    /// the returned file is dropped.
    async fn lock(&self, key: &str) -> Result<std::fs::File, StoreError> {
        let dir = self.dir.join("locks");
        let path = dir.join(format!(
            "{:02x}.lock",
            xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % 256
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

    /// Whether the entry at `key` is what `expect` says.
    fn matches(found: Option<&cacache::Metadata>, expect: &Expect) -> bool {
        match (found, expect) {
            (None, Expect::Absent) => true,
            (Some(entry), Expect::Version(token)) => token_of(entry) == *token,
            _ => false,
        }
    }

    /// Write `bytes` under `key` if the entry is what `expect` says, under the key's lock.
    async fn put_checked(
        &self,
        key: &str,
        bytes: &[u8],
        metadata: serde_json::Value,
        expect: &Expect,
    ) -> Result<Written, StoreError> {
        let _lock = self.lock(key).await?;
        let found = self.find(key).await?;
        if !Self::matches(found.as_ref(), expect) {
            return Ok(Written::Conflict);
        }
        let time = next_time(found.as_ref());
        let mut writer = cacache::WriteOpts::new()
            .algorithm(Algorithm::Sha256)
            .size(bytes.len())
            .time(time)
            .metadata(metadata)
            .open(&self.dir, key)
            .await
            .map_err(|e| self.fail(e))?;
        writer.write_all(bytes).await.map_err(|e| self.fail(e))?;
        let integrity = writer.commit().await.map_err(|e| self.fail(e))?;
        Ok(Written::Stored(Token::new(format!("{integrity}@{time}"))))
    }
}

fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => folder_size(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[async_trait]
impl Store for DiskStore {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    async fn packument(&self, name: &str) -> Result<Option<StoredPackument>, StoreError> {
        let key = packument_key(name);
        let Some(entry) = self.find(&key).await? else {
            return Ok(None);
        };
        let Some(bytes) = self.read_verified(&key, &entry.integrity).await? else {
            return Ok(None);
        };
        let token = token_of(&entry);
        let meta = serde_json::from_value(entry.metadata).unwrap_or_default();
        Ok(Some(StoredPackument {
            bytes: Bytes::from(bytes),
            meta,
            token,
            stale: false,
        }))
    }

    async fn packument_meta(
        &self,
        name: &str,
    ) -> Result<Option<(PackumentMeta, Token)>, StoreError> {
        Ok(self.find(&packument_key(name)).await?.map(|entry| {
            let token = token_of(&entry);
            (
                serde_json::from_value(entry.metadata).unwrap_or_default(),
                token,
            )
        }))
    }

    async fn put_packument(
        &self,
        name: &str,
        bytes: Bytes,
        meta: &PackumentMeta,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        let metadata = serde_json::to_value(meta).map_err(|e| self.fail(e))?;
        self.put_checked(&packument_key(name), &bytes, metadata, &expect)
            .await
    }

    async fn touch_packument(
        &self,
        name: &str,
        meta: &PackumentMeta,
        expect: &Token,
    ) -> Result<Written, StoreError> {
        let key = packument_key(name);
        let _lock = self.lock(&key).await?;
        let Some(entry) = self.find(&key).await? else {
            return Ok(Written::Conflict);
        };
        if token_of(&entry) != *expect {
            return Ok(Written::Conflict);
        }
        let metadata = serde_json::to_value(meta).map_err(|e| self.fail(e))?;
        let time = next_time(Some(&entry));
        let opts = cacache::WriteOpts::new()
            .integrity(entry.integrity.clone())
            .size(entry.size)
            .time(time)
            .metadata(metadata);
        cacache::index::insert_async(&self.dir, &key, opts)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(Written::Stored(Token::new(format!(
            "{}@{time}",
            entry.integrity
        ))))
    }

    async fn tarball(&self, name: &str, file: &str) -> Result<Option<TarballBody>, StoreError> {
        let key = tarball_key(name, file);
        let Some(entry) = self.find(&key).await? else {
            return Ok(None);
        };
        let reader = match cacache::Reader::open_hash(&self.dir, entry.integrity.clone()).await {
            Ok(reader) => reader,
            Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {
                self.drop_entry(&key, None).await;
                return Ok(None);
            }
            Err(e) => return Err(self.fail(e)),
        };
        let size = entry.size as u64;
        let integrity = entry.integrity.clone();
        let state = ReadState {
            store: self.clone(),
            key,
            integrity: entry.integrity,
            reader: Some(reader),
            held: None,
        };
        let stream = futures::stream::unfold(state, ReadState::next).boxed();
        Ok(Some(TarballBody {
            size,
            integrity,
            stream,
        }))
    }

    async fn tarball_file(
        &self,
        name: &str,
        file: &str,
    ) -> Result<Option<TarballFile>, StoreError> {
        let key = tarball_key(name, file);
        if let Some(checked) = self.checked.get(&key) {
            // Checked before: handed out as long as the file is the one that was checked
            // (an open and an fstat of a file the page cache holds: no thread hop for that).
            if let Ok(file) = std::fs::File::open(&checked.path) {
                if file
                    .metadata()
                    .is_ok_and(|m| FileSeen::of(&m) == checked.seen)
                {
                    return Ok(Some(TarballFile {
                        file,
                        size: checked.size,
                        integrity: checked.integrity.clone(),
                    }));
                }
            }
            self.checked.invalidate(&key);
        }
        let Some(entry) = self.find(&key).await? else {
            return Ok(None);
        };
        let path = content_path(&self.dir, &entry.integrity);
        let integrity = entry.integrity.clone();
        let opened = {
            let (path, integrity) = (path.clone(), integrity.clone());
            tokio::task::spawn_blocking(move || open_checked(&path, &integrity))
                .await
                .map_err(|e| self.fail(e))?
        };
        match opened {
            Ok(Some((file, seen))) if seen.2 == entry.size as u64 => {
                let size = seen.2;
                self.checked.insert(
                    key,
                    Arc::new(CheckedFile {
                        path,
                        integrity: integrity.clone(),
                        size,
                        seen,
                    }),
                );
                Ok(Some(TarballFile {
                    file,
                    size,
                    integrity,
                }))
            }
            Ok(_) => {
                tracing::warn!(
                    tarball = %format!("{name}/-/{file}"),
                    "stored tarball is corrupt: dropped, it will be fetched again"
                );
                self.drop_entry(&key, Some(&integrity)).await;
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.drop_entry(&key, None).await;
                Ok(None)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn has_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        Ok(self.find(&tarball_key(name, file)).await?.is_some())
    }

    async fn tarball_sink(
        &self,
        name: &str,
        file: &str,
        integrity: &Integrity,
        size: Option<u64>,
    ) -> Result<Box<dyn TarballSink>, StoreError> {
        let mut opts = cacache::WriteOpts::new().algorithm(Algorithm::Sha512);
        if let Some(size) = size.and_then(|s| usize::try_from(s).ok()) {
            opts = opts.size(size);
        }
        let writer = opts
            .open(&self.dir, tarball_key(name, file))
            .await
            .map_err(|e| self.fail(e))?;
        Ok(Box::new(DiskSink {
            store: self.clone(),
            what: format!("{name}/-/{file}"),
            writer,
            checker: IntegrityChecker::new(integrity.clone()),
        }))
    }

    async fn delete_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        let key = tarball_key(name, file);
        let _lock = self.lock(&key).await?;
        let Some(entry) = self.find(&key).await? else {
            return Ok(false);
        };
        cacache::remove(&self.dir, &key)
            .await
            .map_err(|e| self.fail(e))?;
        self.checked.invalidate(&key);
        // cacache keeps each content once, whatever names point at it: freed only when no
        // other entry does (a walk of the index; deletes are rare).
        let (dir, integrity) = (self.dir.clone(), entry.integrity.clone());
        let kept = tokio::task::spawn_blocking(move || {
            cacache::index::ls(&dir)
                .filter_map(Result::ok)
                .any(|other| other.integrity == integrity)
        })
        .await
        .map_err(|e| self.fail(e))?;
        if !kept {
            if let Err(error) = cacache::remove_hash(&self.dir, &entry.integrity).await {
                tracing::warn!(key, %error, "the deleted tarball's content was not removed");
            }
        }
        Ok(true)
    }

    async fn state(&self, key: &str) -> Result<Option<(Bytes, Token)>, StoreError> {
        let key = state_key(key);
        let Some(entry) = self.find(&key).await? else {
            return Ok(None);
        };
        let token = token_of(&entry);
        Ok(self
            .read_verified(&key, &entry.integrity)
            .await?
            .map(|bytes| (Bytes::from(bytes), token)))
    }

    async fn put_state(
        &self,
        key: &str,
        bytes: Bytes,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        self.put_checked(&state_key(key), &bytes, serde_json::Value::Null, &expect)
            .await
    }

    async fn claim(&self, what: &str) -> Result<Option<Claim>, StoreError> {
        let dir = self.dir.join("locks");
        let path = dir.join(format!(
            "claim-{:016x}.lock",
            xxhash_rust::xxh3::xxh3_64(what.as_bytes())
        ));
        let claimed =
            tokio::task::spawn_blocking(move || -> std::io::Result<Option<std::fs::File>> {
                std::fs::create_dir_all(&dir)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?;
                match file.try_lock() {
                    Ok(()) => Ok(Some(file)),
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => Err(e),
                }
            })
            .await
            .map_err(|e| self.fail(e))?
            .map_err(|e| self.fail(e))?;
        Ok(claimed.map(|file| Box::new(file) as Claim))
    }

    fn packument_names(&self) -> BoxStream<'static, Result<String, StoreError>> {
        let store = self.clone();
        futures::stream::once(async move {
            let dir = store.dir.clone();
            let names = tokio::task::spawn_blocking(move || {
                cacache::index::ls(&dir)
                    .filter_map(Result::ok)
                    .filter_map(|entry| entry.key.strip_prefix("packument:").map(str::to_string))
                    .collect::<std::collections::BTreeSet<_>>()
            })
            .await
            .map_err(|e| store.fail(e));
            futures::stream::iter(match names {
                Ok(names) => names.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        })
        .flatten()
        .boxed()
    }

    async fn usage(&self) -> Result<u64, StoreError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || folder_size(&dir))
            .await
            .map_err(|e| self.fail(e))
    }

    async fn verify(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<VerifyReport, StoreError> {
        let dir = self.dir.clone();
        let entries: Vec<(String, Integrity)> = tokio::task::spawn_blocking(move || {
            cacache::index::ls(&dir)
                .filter_map(Result::ok)
                .map(|entry| (entry.key, entry.integrity))
                .collect()
        })
        .await
        .map_err(|e| self.fail(e))?;
        let total = entries.len() as u64;
        let mut report = VerifyReport::default();
        for (done, (key, sri)) in entries.into_iter().enumerate() {
            match cacache::read_hash(&self.dir, &sri).await {
                Ok(_) => report.ok += 1,
                Err(cacache::Error::IntegrityError(_)) => {
                    self.drop_entry(&key, Some(&sri)).await;
                    report.corrupt.push(key);
                }
                Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.drop_entry(&key, None).await;
                    report.missing.push(key);
                }
                Err(e) => return Err(self.fail(e)),
            }
            progress(done as u64 + 1, total);
        }
        Ok(report)
    }
}

/// A stored tarball streaming out. Each chunk is handed on only once the next one is read,
/// and the last only once the whole content matched: a corrupt file never looks complete.
struct ReadState {
    store: DiskStore,
    key: String,
    integrity: Integrity,
    reader: Option<cacache::Reader>,
    held: Option<Bytes>,
}

impl ReadState {
    async fn next(mut self) -> Option<(Result<Bytes, StoreError>, Self)> {
        loop {
            let reader = self.reader.as_mut()?;
            let mut buf = BytesMut::zeroed(READ_CHUNK);
            match reader.read(&mut buf).await {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.reader = None;
                    return Some((Err(self.store.fail(e)), self));
                }
                Ok(0) => {
                    let reader = self.reader.take()?;
                    if reader.check().is_ok() {
                        let last = self.held.take()?;
                        return Some((Ok(last), self));
                    }
                    tracing::warn!(
                        key = self.key,
                        "stored tarball is corrupt: dropped, it will be fetched again"
                    );
                    self.held = None;
                    self.store
                        .drop_entry(&self.key, Some(&self.integrity))
                        .await;
                    let error = self
                        .store
                        .fail(format!("{} does not match its integrity", self.key));
                    return Some((Err(error), self));
                }
                Ok(n) => {
                    buf.truncate(n);
                    if let Some(previous) = self.held.replace(buf.freeze()) {
                        return Some((Ok(previous), self));
                    }
                }
            }
        }
    }
}

/// A tarball streaming into cacache: hashed against the published integrity as it flows, and
/// committed (made visible) only when it matches.
struct DiskSink {
    store: DiskStore,
    what: String,
    writer: cacache::Writer,
    checker: IntegrityChecker,
}

#[async_trait]
impl TarballSink for DiskSink {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.checker.input(chunk);
        self.writer
            .write_all(chunk)
            .await
            .map_err(|e| self.store.fail(e))
    }

    async fn commit(self: Box<Self>) -> Result<Integrity, StoreError> {
        let DiskSink {
            store,
            what,
            writer,
            checker,
        } = *self;
        if checker.result().is_err() {
            // The writer's temporary file goes with it: nothing is stored.
            drop(writer);
            return Err(store.fail(format!(
                "{what} does not match its published integrity: not stored"
            )));
        }
        writer.commit().await.map_err(|e| store.fail(e))
    }
}
