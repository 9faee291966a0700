//! [`Forward`]: how a wrapper store ([`super::Faulty`], [`super::Instrumented`],
//! [`super::Measured`], [`super::Tiered`]) says which operations it changes. Every [`Store`]
//! operation it does not write goes to the store it wraps, unchanged, so a new operation on
//! the contract needs no edit in the wrappers that leave it alone.
//!
//! Not re-exported from [`super`]: where `Forward` is in scope, a wrapper's operations have
//! two names (its own and [`Store`]'s), so only the wrappers' own modules import it.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use ssri::Integrity;

use super::{
    Claim, Expect, PackumentMeta, Store, StoreError, StoredPackument, TarballBody, TarballFile,
    TarballSink, Token, VerifyReport, Written,
};

/// A store that wraps another: each method defaults to the wrapped store's, and every
/// `Forward` is a [`Store`]. The methods mirror [`Store`]'s; their documentation is there.
#[async_trait]
pub trait Forward: Send + Sync + std::fmt::Debug {
    /// The store this one wraps.
    fn inner(&self) -> &dyn Store;

    /// [`Store::location`].
    fn location(&self) -> String {
        self.inner().location()
    }

    /// [`Store::packument`].
    async fn packument(&self, name: &str) -> Result<Option<StoredPackument>, StoreError> {
        self.inner().packument(name).await
    }

    /// [`Store::packument_meta`].
    async fn packument_meta(
        &self,
        name: &str,
    ) -> Result<Option<(PackumentMeta, Token)>, StoreError> {
        self.inner().packument_meta(name).await
    }

    /// [`Store::put_packument`].
    async fn put_packument(
        &self,
        name: &str,
        bytes: Bytes,
        meta: &PackumentMeta,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        self.inner().put_packument(name, bytes, meta, expect).await
    }

    /// [`Store::touch_packument`].
    async fn touch_packument(
        &self,
        name: &str,
        meta: &PackumentMeta,
        expect: &Token,
    ) -> Result<Written, StoreError> {
        self.inner().touch_packument(name, meta, expect).await
    }

    /// [`Store::tarball`].
    async fn tarball(&self, name: &str, file: &str) -> Result<Option<TarballBody>, StoreError> {
        self.inner().tarball(name, file).await
    }

    /// [`Store::tarball_file`].
    async fn tarball_file(
        &self,
        name: &str,
        file: &str,
    ) -> Result<Option<TarballFile>, StoreError> {
        self.inner().tarball_file(name, file).await
    }

    /// [`Store::has_tarball`].
    async fn has_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        self.inner().has_tarball(name, file).await
    }

    /// [`Store::tarball_sink`].
    async fn tarball_sink(
        &self,
        name: &str,
        file: &str,
        integrity: &Integrity,
        size: Option<u64>,
    ) -> Result<Box<dyn TarballSink>, StoreError> {
        self.inner().tarball_sink(name, file, integrity, size).await
    }

    /// [`Store::delete_tarball`].
    async fn delete_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        self.inner().delete_tarball(name, file).await
    }

    /// [`Store::state`].
    async fn state(&self, key: &str) -> Result<Option<(Bytes, Token)>, StoreError> {
        self.inner().state(key).await
    }

    /// [`Store::put_state`].
    async fn put_state(
        &self,
        key: &str,
        bytes: Bytes,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        self.inner().put_state(key, bytes, expect).await
    }

    /// [`Store::claim`].
    async fn claim(&self, what: &str) -> Result<Option<Claim>, StoreError> {
        self.inner().claim(what).await
    }

    /// [`Store::packument_names`].
    fn packument_names(&self) -> BoxStream<'static, Result<String, StoreError>> {
        self.inner().packument_names()
    }

    /// [`Store::usage`].
    async fn usage(&self) -> Result<u64, StoreError> {
        self.inner().usage().await
    }

    /// [`Store::forget`].
    fn forget(&self, name: &str) {
        self.inner().forget(name);
    }

    /// [`Store::forget_all`].
    fn forget_all(&self) {
        self.inner().forget_all();
    }

    /// [`Store::verify`].
    async fn verify(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<VerifyReport, StoreError> {
        self.inner().verify(progress).await
    }
}

// Each operation goes to the wrapper's own method, which is the wrapped store's unless the
// wrapper wrote it.
#[async_trait]
impl<T: Forward> Store for T {
    fn location(&self) -> String {
        Forward::location(self)
    }

    async fn packument(&self, name: &str) -> Result<Option<StoredPackument>, StoreError> {
        Forward::packument(self, name).await
    }

    async fn packument_meta(
        &self,
        name: &str,
    ) -> Result<Option<(PackumentMeta, Token)>, StoreError> {
        Forward::packument_meta(self, name).await
    }

    async fn put_packument(
        &self,
        name: &str,
        bytes: Bytes,
        meta: &PackumentMeta,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        Forward::put_packument(self, name, bytes, meta, expect).await
    }

    async fn touch_packument(
        &self,
        name: &str,
        meta: &PackumentMeta,
        expect: &Token,
    ) -> Result<Written, StoreError> {
        Forward::touch_packument(self, name, meta, expect).await
    }

    async fn tarball(&self, name: &str, file: &str) -> Result<Option<TarballBody>, StoreError> {
        Forward::tarball(self, name, file).await
    }

    async fn tarball_file(
        &self,
        name: &str,
        file: &str,
    ) -> Result<Option<TarballFile>, StoreError> {
        Forward::tarball_file(self, name, file).await
    }

    async fn has_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        Forward::has_tarball(self, name, file).await
    }

    async fn tarball_sink(
        &self,
        name: &str,
        file: &str,
        integrity: &Integrity,
        size: Option<u64>,
    ) -> Result<Box<dyn TarballSink>, StoreError> {
        Forward::tarball_sink(self, name, file, integrity, size).await
    }

    async fn delete_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        Forward::delete_tarball(self, name, file).await
    }

    async fn state(&self, key: &str) -> Result<Option<(Bytes, Token)>, StoreError> {
        Forward::state(self, key).await
    }

    async fn put_state(
        &self,
        key: &str,
        bytes: Bytes,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        Forward::put_state(self, key, bytes, expect).await
    }

    async fn claim(&self, what: &str) -> Result<Option<Claim>, StoreError> {
        Forward::claim(self, what).await
    }

    fn packument_names(&self) -> BoxStream<'static, Result<String, StoreError>> {
        Forward::packument_names(self)
    }

    async fn usage(&self) -> Result<u64, StoreError> {
        Forward::usage(self).await
    }

    fn forget(&self, name: &str) {
        Forward::forget(self, name);
    }

    fn forget_all(&self) {
        Forward::forget_all(self);
    }

    async fn verify(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<VerifyReport, StoreError> {
        Forward::verify(self, progress).await
    }
}
