//! A store wrapper that answers [`Store::usage`] in constant time: the bytes as last measured.
//! A measure (a walk of the folder, a listing of the bucket: the wrapped store's own `usage`)
//! runs in the background, never on the request that asks: first when the wrapper is made
//! (or first asked, outside a runtime), then when asked after the store changed through it,
//! at most once per [`AGAIN_AFTER`]; and for a store other processes write too (a fleet's
//! bucket) at least every `every`, changed or not.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use ssri::Integrity;

use super::forward::Forward;
use super::{
    Expect, PackumentMeta, SharedStore, Store, StoreError, TarballSink, Token, VerifyReport,
    Written,
};

/// How long after a measure the next one may start, however much was written since.
pub const AGAIN_AFTER: Duration = Duration::from_secs(30);

/// A store whose usage is measured in the background.
#[derive(Debug)]
pub struct Measured {
    inner: SharedStore,
    every: Option<Duration>,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The bytes as last measured (0 until the first measure ends).
    bytes: AtomicU64,
    /// Writes made through the wrapper (counted when they start).
    writes: AtomicU64,
    /// When the last measure started, and `writes` then.
    started: Mutex<Option<(Instant, u64)>>,
    /// A measure is running.
    running: AtomicBool,
}

impl Measured {
    /// Measure `inner` in the background; `every`: re-measure at least this often (when
    /// others write it too). Starts the first measure now when called on a runtime.
    pub fn new(inner: SharedStore, every: Option<Duration>) -> Self {
        let measured = Self {
            inner,
            every,
            state: Arc::default(),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            measured.measure_if_due();
        }
        measured
    }

    /// Start a measure in the background if one is due and none runs.
    fn measure_if_due(&self) {
        let state = &self.state;
        let writes = state.writes.load(Ordering::Acquire);
        {
            let mut started = state.started.lock().unwrap_or_else(|p| p.into_inner());
            let due = match *started {
                None => true,
                Some((at, seen)) => {
                    let age = at.elapsed();
                    (seen != writes && age >= AGAIN_AFTER)
                        || self.every.is_some_and(|every| age >= every)
                }
            };
            if !due || state.running.swap(true, Ordering::AcqRel) {
                return;
            }
            *started = Some((Instant::now(), writes));
        }
        let (inner, state) = (self.inner.clone(), self.state.clone());
        tokio::spawn(async move {
            match inner.usage().await {
                Ok(bytes) => state.bytes.store(bytes, Ordering::Release),
                Err(error) => tracing::warn!(%error, "cannot measure the store"),
            }
            state.running.store(false, Ordering::Release);
        });
    }

    fn wrote(&self) {
        self.state.writes.fetch_add(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl Forward for Measured {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }

    async fn put_packument(
        &self,
        name: &str,
        bytes: Bytes,
        meta: &PackumentMeta,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        self.wrote();
        self.inner.put_packument(name, bytes, meta, expect).await
    }

    async fn touch_packument(
        &self,
        name: &str,
        meta: &PackumentMeta,
        expect: &Token,
    ) -> Result<Written, StoreError> {
        self.wrote();
        self.inner.touch_packument(name, meta, expect).await
    }

    async fn tarball_sink(
        &self,
        name: &str,
        file: &str,
        integrity: &Integrity,
        size: Option<u64>,
    ) -> Result<Box<dyn TarballSink>, StoreError> {
        self.wrote();
        self.inner.tarball_sink(name, file, integrity, size).await
    }

    async fn delete_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        // Bytes freed: measured again.
        self.wrote();
        self.inner.delete_tarball(name, file).await
    }

    async fn put_state(
        &self,
        key: &str,
        bytes: Bytes,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        self.wrote();
        self.inner.put_state(key, bytes, expect).await
    }

    /// The bytes as last measured; starts a measure in the background when one is due.
    async fn usage(&self) -> Result<u64, StoreError> {
        self.measure_if_due();
        Ok(self.state.bytes.load(Ordering::Acquire))
    }

    async fn verify(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<VerifyReport, StoreError> {
        // A verify drops what is corrupt: the store changed.
        self.wrote();
        self.inner.verify(progress).await
    }
}
