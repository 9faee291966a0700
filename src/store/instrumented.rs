//! A store wrapper that counts every operation of the store it wraps, by operation and
//! outcome, with the time they took: what `/-/metrics` shows as `sluice_store_*`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use ssri::Integrity;

use super::forward::Forward;
use super::{
    Expect, PackumentMeta, SharedStore, Store, StoreError, StoredPackument, TarballBody,
    TarballFile, TarballSink, Token, Written,
};

/// Counts of one (operation, outcome).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct OpStats {
    /// Operations done.
    pub count: u64,
    /// Their total time, in seconds.
    pub seconds: f64,
}

/// A store that counts what it is asked.
#[derive(Debug)]
pub struct Instrumented {
    inner: SharedStore,
    stats: Mutex<BTreeMap<(&'static str, &'static str), OpStats>>,
}

impl Instrumented {
    /// Count the operations of `inner`.
    pub fn new(inner: SharedStore) -> Self {
        Self {
            inner,
            stats: Mutex::default(),
        }
    }

    /// Every (operation, outcome) seen so far, with its counts.
    pub fn stats(&self) -> Vec<((&'static str, &'static str), OpStats)> {
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    fn record<T>(
        &self,
        op: &'static str,
        started: Instant,
        result: &Result<T, StoreError>,
        outcome: impl Fn(&T) -> &'static str,
    ) {
        let outcome = match result {
            Ok(value) => outcome(value),
            Err(_) => "error",
        };
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let entry = stats.entry((op, outcome)).or_default();
        entry.count += 1;
        entry.seconds += started.elapsed().as_secs_f64();
    }
}

fn found<T>(value: &Option<T>) -> &'static str {
    if value.is_some() {
        "found"
    } else {
        "absent"
    }
}

fn written(value: &Written) -> &'static str {
    match value {
        Written::Stored(_) => "stored",
        Written::Conflict => "conflict",
    }
}

#[async_trait]
impl Forward for Instrumented {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }

    async fn packument(&self, name: &str) -> Result<Option<StoredPackument>, StoreError> {
        let started = Instant::now();
        let result = self.inner.packument(name).await;
        self.record("packument_get", started, &result, found);
        result
    }

    async fn packument_meta(
        &self,
        name: &str,
    ) -> Result<Option<(PackumentMeta, Token)>, StoreError> {
        let started = Instant::now();
        let result = self.inner.packument_meta(name).await;
        self.record("packument_head", started, &result, found);
        result
    }

    async fn put_packument(
        &self,
        name: &str,
        bytes: Bytes,
        meta: &PackumentMeta,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        let started = Instant::now();
        let result = self.inner.put_packument(name, bytes, meta, expect).await;
        self.record("packument_put", started, &result, written);
        result
    }

    async fn touch_packument(
        &self,
        name: &str,
        meta: &PackumentMeta,
        expect: &Token,
    ) -> Result<Written, StoreError> {
        let started = Instant::now();
        let result = self.inner.touch_packument(name, meta, expect).await;
        self.record("packument_touch", started, &result, written);
        result
    }

    async fn tarball(&self, name: &str, file: &str) -> Result<Option<TarballBody>, StoreError> {
        let started = Instant::now();
        let result = self.inner.tarball(name, file).await;
        self.record("tarball_get", started, &result, found);
        result
    }

    async fn tarball_file(
        &self,
        name: &str,
        file: &str,
    ) -> Result<Option<TarballFile>, StoreError> {
        let started = Instant::now();
        let result = self.inner.tarball_file(name, file).await;
        self.record("tarball_file", started, &result, found);
        result
    }

    async fn has_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        let result = self.inner.has_tarball(name, file).await;
        self.record("tarball_head", started, &result, |has| {
            if *has {
                "found"
            } else {
                "absent"
            }
        });
        result
    }

    async fn tarball_sink(
        &self,
        name: &str,
        file: &str,
        integrity: &Integrity,
        size: Option<u64>,
    ) -> Result<Box<dyn TarballSink>, StoreError> {
        let started = Instant::now();
        let result = self.inner.tarball_sink(name, file, integrity, size).await;
        self.record("tarball_put", started, &result, |_| "opened");
        result
    }

    async fn delete_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        let result = self.inner.delete_tarball(name, file).await;
        self.record("tarball_delete", started, &result, |deleted| {
            if *deleted {
                "deleted"
            } else {
                "absent"
            }
        });
        result
    }

    async fn state(&self, key: &str) -> Result<Option<(Bytes, Token)>, StoreError> {
        let started = Instant::now();
        let result = self.inner.state(key).await;
        self.record("state_get", started, &result, found);
        result
    }

    async fn put_state(
        &self,
        key: &str,
        bytes: Bytes,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        let started = Instant::now();
        let result = self.inner.put_state(key, bytes, expect).await;
        self.record("state_put", started, &result, written);
        result
    }

    fn packument_names(&self) -> BoxStream<'static, Result<String, StoreError>> {
        // Counted when the listing starts: it walks the whole store.
        let started = Instant::now();
        let names = self.inner.packument_names();
        self.record("list", started, &Ok::<_, StoreError>(()), |_| "opened");
        names
    }

    async fn usage(&self) -> Result<u64, StoreError> {
        let started = Instant::now();
        let result = self.inner.usage().await;
        self.record("usage", started, &result, |_| "measured");
        result
    }
}
