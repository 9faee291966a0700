//! A store that wraps another and injects faults, for tests: a full disk, failing reads, lost
//! races. It implements [`Store`] like any backend, so the production types carry no test hooks.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use ssri::Integrity;

use super::forward::Forward;
use super::{
    Expect, PackumentMeta, SharedStore, Store, StoreError, StoredPackument, TarballBody,
    TarballFile, TarballSink, Token, Written,
};

/// A fault [`Faulty`] can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every write fails as a full disk does (reads still work).
    DiskFull,
    /// Every read fails (an unreadable folder, an unreachable bucket).
    ReadsFail,
    /// Walks of the whole store (measuring its usage, listing its names) wait until this
    /// fault is turned off, as on a huge store.
    WalksStall,
}

/// A store wrapper that injects faults.
#[derive(Debug)]
pub struct Faulty {
    inner: SharedStore,
    disk_full: AtomicBool,
    reads_fail: AtomicBool,
    walks_stall: tokio::sync::watch::Sender<bool>,
    conflicts: AtomicU32,
}

impl Faulty {
    /// Wrap `inner`; no fault is on.
    pub fn new(inner: SharedStore) -> Self {
        Self {
            inner,
            disk_full: AtomicBool::new(false),
            reads_fail: AtomicBool::new(false),
            walks_stall: tokio::sync::watch::Sender::new(false),
            conflicts: AtomicU32::new(0),
        }
    }

    /// Turn `fault` on or off.
    pub fn set(&self, fault: Fault, on: bool) {
        match fault {
            Fault::DiskFull => self.disk_full.store(on, Ordering::SeqCst),
            Fault::ReadsFail => self.reads_fail.store(on, Ordering::SeqCst),
            Fault::WalksStall => {
                self.walks_stall.send_replace(on);
            }
        }
    }

    /// Make the next `n` conditional puts lose their race (as if another writer won), after
    /// they have checked nothing: they answer [`Written::Conflict`] and write nothing.
    pub fn conflict_next(&self, n: u32) {
        self.conflicts.store(n, Ordering::SeqCst);
    }

    /// Conditional puts that were made to lose so far are counted down; how many remain.
    pub fn conflicts_left(&self) -> u32 {
        self.conflicts.load(Ordering::SeqCst)
    }

    fn error(&self, message: &str) -> StoreError {
        StoreError {
            location: self.inner.location(),
            message: message.to_string(),
        }
    }

    fn check_write(&self) -> Result<(), StoreError> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(self.error("No space left on device (os error 28)"));
        }
        Ok(())
    }

    fn check_read(&self) -> Result<(), StoreError> {
        if self.reads_fail.load(Ordering::SeqCst) {
            return Err(self.error("Input/output error (os error 5)"));
        }
        Ok(())
    }

    /// Wait while walks stall.
    fn walk(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stall = self.walks_stall.subscribe();
        async move {
            let _ = stall.wait_for(|on| !*on).await;
        }
    }

    fn lose_race(&self) -> bool {
        self.conflicts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[async_trait]
impl Forward for Faulty {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }

    async fn packument(&self, name: &str) -> Result<Option<StoredPackument>, StoreError> {
        self.check_read()?;
        self.inner.packument(name).await
    }

    async fn packument_meta(
        &self,
        name: &str,
    ) -> Result<Option<(PackumentMeta, Token)>, StoreError> {
        self.check_read()?;
        self.inner.packument_meta(name).await
    }

    async fn put_packument(
        &self,
        name: &str,
        bytes: Bytes,
        meta: &PackumentMeta,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        self.check_write()?;
        if self.lose_race() {
            return Ok(Written::Conflict);
        }
        self.inner.put_packument(name, bytes, meta, expect).await
    }

    async fn touch_packument(
        &self,
        name: &str,
        meta: &PackumentMeta,
        expect: &Token,
    ) -> Result<Written, StoreError> {
        self.check_write()?;
        self.inner.touch_packument(name, meta, expect).await
    }

    async fn tarball(&self, name: &str, file: &str) -> Result<Option<TarballBody>, StoreError> {
        self.check_read()?;
        self.inner.tarball(name, file).await
    }

    async fn tarball_file(
        &self,
        name: &str,
        file: &str,
    ) -> Result<Option<TarballFile>, StoreError> {
        self.check_read()?;
        self.inner.tarball_file(name, file).await
    }

    async fn has_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        self.check_read()?;
        self.inner.has_tarball(name, file).await
    }

    async fn tarball_sink(
        &self,
        name: &str,
        file: &str,
        integrity: &Integrity,
        size: Option<u64>,
    ) -> Result<Box<dyn TarballSink>, StoreError> {
        self.check_write()?;
        self.inner.tarball_sink(name, file, integrity, size).await
    }

    async fn delete_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        self.check_write()?;
        self.inner.delete_tarball(name, file).await
    }

    async fn state(&self, key: &str) -> Result<Option<(Bytes, Token)>, StoreError> {
        self.check_read()?;
        self.inner.state(key).await
    }

    async fn put_state(
        &self,
        key: &str,
        bytes: Bytes,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        self.check_write()?;
        if self.lose_race() {
            return Ok(Written::Conflict);
        }
        self.inner.put_state(key, bytes, expect).await
    }

    fn packument_names(&self) -> BoxStream<'static, Result<String, StoreError>> {
        let (walk, inner) = (self.walk(), self.inner.clone());
        futures::stream::once(async move {
            walk.await;
            inner.packument_names()
        })
        .flatten()
        .boxed()
    }

    async fn usage(&self) -> Result<u64, StoreError> {
        self.walk().await;
        self.inner.usage().await
    }
}
