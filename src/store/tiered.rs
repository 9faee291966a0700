//! A node's local disk tier in front of the shared bucket (`storage.backend = "s3"`): tarballs
//! and packuments are kept in `storage.dir` as well, so a hit touches neither the bucket nor
//! upstream, and while the bucket is out of reach the node serves what its tier holds (as
//! stale). The bucket stays the canonical store: every write goes there first, with its
//! conditions, and a local copy is trusted only until the fleet's journal says another node
//! changed it ([`Store::forget`]) or this process restarts.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use ssri::Integrity;

use super::forward::Forward;
use super::{
    DiskStore, Expect, PackumentMeta, SharedStore, Store, StoreError, StoredPackument, TarballBody,
    TarballFile, TarballSink, Token, VerifyReport, Written,
};

/// How many tarball writes between two checks of the local tier's bound.
const TRIM_EVERY: u64 = 64;

/// The local tier and the shared store behind it.
#[derive(Debug)]
pub struct Tiered {
    local: DiskStore,
    remote: SharedStore,
    /// Packuments whose local copy is the shared store's current one.
    trusted: moka::sync::Cache<String, ()>,
    max_local: u64,
    writes: AtomicU64,
    /// Tarballs being copied into the local tier now.
    copying: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Tiered {
    /// `local` in front of `remote`; the local tier's tarballs take at most `max_local` bytes.
    pub fn new(local: DiskStore, remote: SharedStore, max_local: u64) -> Self {
        Self {
            local,
            remote,
            trusted: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            max_local,
            writes: AtomicU64::new(0),
            copying: Arc::default(),
        }
    }

    /// Keep `stored` (the shared store's current version) as the local copy of `name`.
    async fn keep(&self, name: &str, stored: &StoredPackument) {
        let meta = PackumentMeta {
            origin: Some(stored.token.as_str().to_string()),
            ..stored.meta.clone()
        };
        match self
            .local
            .replace_packument(name, &stored.bytes, &meta)
            .await
        {
            Ok(()) => self.trusted.insert(name.to_string(), ()),
            Err(error) => {
                self.trusted.invalidate(name);
                tracing::warn!(package = name, %error, "local tier: packument not kept");
            }
        }
    }

    /// The local copy of `name`, as the shared store's version it copies.
    async fn local_copy(&self, name: &str) -> Result<Option<StoredPackument>, StoreError> {
        let Some(copy) = self.local.packument(name).await? else {
            return Ok(None);
        };
        let Some(origin) = copy.meta.origin.clone() else {
            return Ok(None);
        };
        Ok(Some(StoredPackument {
            bytes: copy.bytes,
            meta: PackumentMeta {
                origin: None,
                ..copy.meta
            },
            token: Token::new(origin),
            stale: false,
        }))
    }

    fn wrote_tarball(&self) {
        if self.writes.fetch_add(1, Ordering::Relaxed) % TRIM_EVERY != TRIM_EVERY - 1 {
            return;
        }
        let (local, max) = (self.local.clone(), self.max_local);
        tokio::spawn(async move {
            match local.evict_tarballs_to(max).await {
                Ok(0) => {}
                Ok(bytes) => tracing::info!(bytes, "local tier: oldest tarballs dropped"),
                Err(error) => tracing::warn!(%error, "local tier: cannot trim"),
            }
        });
    }

    /// `body`, read from the shared store, also copied into the local tier as it flows to
    /// the reader (no second read of the bucket); one copy per tarball at a time, so readers
    /// that come while it is under way just read the bucket.
    fn copying_down(&self, name: &str, file: &str, body: TarballBody) -> TarballBody {
        let key = (name.to_string(), file.to_string());
        if !lock(&self.copying).insert(key.clone()) {
            return body;
        }
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Option<Bytes>>(COPY_CHUNKS);
        let (local, copying) = (self.local.clone(), self.copying.clone());
        let (integrity, size) = (body.integrity.clone(), body.size);
        tokio::spawn(async move {
            let _done = Release(copying, key.clone());
            let (name, file) = &key;
            let Ok(mut sink) = local.tarball_sink(name, file, &integrity, Some(size)).await else {
                return;
            };
            while let Some(message) = receiver.recv().await {
                match message {
                    Some(chunk) => {
                        if sink.write(&chunk).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        if let Err(error) = sink.commit().await {
                            tracing::warn!(package = name, file, %error, "local tier: tarball not kept");
                        }
                        return;
                    }
                }
            }
            // The reader went away before the end: nothing kept.
        });
        self.wrote_tarball();
        TarballBody {
            stream: Box::pin(Tee {
                inner: body.stream,
                copy: Some(sender),
            }),
            ..body
        }
    }
}

/// Chunks a copy into the local tier may lag behind its reader before it is given up.
const COPY_CHUNKS: usize = 256;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks a copy into the local tier as over when dropped.
struct Release(Arc<Mutex<HashSet<(String, String)>>>, (String, String));

impl Drop for Release {
    fn drop(&mut self) {
        lock(&self.0).remove(&self.1);
    }
}

/// A tarball's stream that hands each chunk to a copy as well; the copy is told of the end
/// only when the stream ended whole (its integrity checked), and is given up when it lags.
struct Tee {
    inner: BoxStream<'static, Result<Bytes, StoreError>>,
    copy: Option<tokio::sync::mpsc::Sender<Option<Bytes>>>,
}

impl futures::Stream for Tee {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let next = futures::ready!(self.inner.poll_next_unpin(cx));
        match &next {
            Some(Ok(chunk)) => {
                if let Some(copy) = &self.copy {
                    if copy.try_send(Some(chunk.clone())).is_err() {
                        self.copy = None;
                    }
                }
            }
            Some(Err(_)) => self.copy = None,
            None => {
                if let Some(copy) = self.copy.take() {
                    if let Err(tokio::sync::mpsc::error::TrySendError::Full(end)) =
                        copy.try_send(None)
                    {
                        tokio::spawn(async move { copy.send(end).await });
                    }
                }
            }
        }
        std::task::Poll::Ready(next)
    }
}

/// The shared store is what a tiered store wraps: what the local tier does not change
/// (state objects, claims, the list of names, usage) goes there.
#[async_trait]
impl Forward for Tiered {
    fn inner(&self) -> &dyn Store {
        self.remote.as_ref()
    }

    fn location(&self) -> String {
        format!(
            "{} (local tier {})",
            self.remote.location(),
            self.local.location()
        )
    }

    async fn packument(&self, name: &str) -> Result<Option<StoredPackument>, StoreError> {
        if self.trusted.contains_key(name) {
            if let Some(copy) = self.local_copy(name).await? {
                return Ok(Some(copy));
            }
        }
        match self.remote.packument(name).await {
            Ok(Some(stored)) => {
                self.keep(name, &stored).await;
                Ok(Some(stored))
            }
            Ok(None) => Ok(None),
            Err(error) => match self.local_copy(name).await? {
                Some(copy) => {
                    tracing::warn!(package = name, %error, "the shared store failed: serving the local copy");
                    Ok(Some(StoredPackument {
                        stale: true,
                        ..copy
                    }))
                }
                None => Err(error),
            },
        }
    }

    async fn packument_meta(
        &self,
        name: &str,
    ) -> Result<Option<(PackumentMeta, Token)>, StoreError> {
        if self.trusted.contains_key(name) {
            if let Some(copy) = self.local_copy(name).await? {
                return Ok(Some((copy.meta, copy.token)));
            }
        }
        self.remote.packument_meta(name).await
    }

    async fn put_packument(
        &self,
        name: &str,
        bytes: Bytes,
        meta: &PackumentMeta,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        let written = self
            .remote
            .put_packument(name, bytes.clone(), meta, expect)
            .await?;
        match &written {
            Written::Stored(token) => {
                let stored = StoredPackument {
                    bytes,
                    meta: meta.clone(),
                    token: token.clone(),
                    stale: false,
                };
                self.keep(name, &stored).await;
            }
            Written::Conflict => self.trusted.invalidate(name),
        }
        Ok(written)
    }

    async fn touch_packument(
        &self,
        name: &str,
        meta: &PackumentMeta,
        expect: &Token,
    ) -> Result<Written, StoreError> {
        let written = self.remote.touch_packument(name, meta, expect).await?;
        // The local copy is read again from the shared store next time.
        self.trusted.invalidate(name);
        Ok(written)
    }

    async fn tarball(&self, name: &str, file: &str) -> Result<Option<TarballBody>, StoreError> {
        if let Some(body) = self.local.tarball(name, file).await? {
            return Ok(Some(body));
        }
        let found = self.remote.tarball(name, file).await?;
        Ok(found.map(|body| self.copying_down(name, file, body)))
    }

    async fn tarball_file(
        &self,
        name: &str,
        file: &str,
    ) -> Result<Option<TarballFile>, StoreError> {
        // Only what the local tier holds is a local file; the rest comes from the bucket.
        self.local.tarball_file(name, file).await
    }

    async fn has_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        if self.local.has_tarball(name, file).await? {
            return Ok(true);
        }
        self.remote.has_tarball(name, file).await
    }

    async fn tarball_sink(
        &self,
        name: &str,
        file: &str,
        integrity: &Integrity,
        size: Option<u64>,
    ) -> Result<Box<dyn TarballSink>, StoreError> {
        let remote = self
            .remote
            .tarball_sink(name, file, integrity, size)
            .await?;
        let local = self
            .local
            .tarball_sink(name, file, integrity, size)
            .await
            .ok();
        self.wrote_tarball();
        Ok(Box::new(TeeSink { remote, local }))
    }

    async fn delete_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        // The bucket first: a local copy left by a failure there is still a true copy.
        let deleted = self.remote.delete_tarball(name, file).await?;
        let local = self.local.delete_tarball(name, file).await?;
        Ok(deleted || local)
    }

    fn forget(&self, name: &str) {
        self.trusted.invalidate(name);
    }

    fn forget_all(&self) {
        self.trusted.invalidate_all();
    }

    async fn verify(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<VerifyReport, StoreError> {
        let local = self.local.verify(&|_, _| {}).await?;
        let mut report = self.remote.verify(progress).await?;
        report.corrupt.extend(
            local
                .corrupt
                .into_iter()
                .map(|k| format!("local tier: {k}")),
        );
        Ok(report)
    }
}

/// A tarball going into the shared store and the local tier at once; the shared store's
/// commit decides, the local one is best effort.
struct TeeSink {
    remote: Box<dyn TarballSink>,
    local: Option<Box<dyn TarballSink>>,
}

#[async_trait]
impl TarballSink for TeeSink {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.remote.write(chunk).await?;
        if let Some(local) = self.local.as_mut() {
            if local.write(chunk).await.is_err() {
                self.local = None;
            }
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<Integrity, StoreError> {
        let TeeSink { remote, local } = *self;
        let integrity = remote.commit().await?;
        if let Some(local) = local {
            if let Err(error) = local.commit().await {
                tracing::warn!(%error, "local tier: tarball not kept");
            }
        }
        Ok(integrity)
    }
}
