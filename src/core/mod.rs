//! The registry core, split by noun: [`packuments`] (get, revalidate, conditional merge),
//! [`renders`] (what a client is sent for a packument: filtered, rewritten, abbreviated,
//! gzipped, with an ETag) and [`tarballs`] (refusal, the unlisted re-read, streams). Each part
//! owns its cache and its single-flight; [`crate::app`] builds them.

pub mod accounts;
pub mod fleet;
pub mod packuments;
pub mod publish;
pub mod renders;
pub mod search;
pub mod tarballs;

use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use sluice_plugin_api::{Packument, PluginError, Response};
use ssri::Integrity;

use crate::packument::{self, PackumentError};
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// Why a package or tarball cannot be served, and whose fault it is; the proxy maps it to an
/// HTTP answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Upstream failed and nothing is stored.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Upstream has no such package, version or tarball.
    #[error("{0}")]
    NotFound(String),
    /// A plugin refuses it (a hidden version's tarball): the answer to send.
    #[error("{}", .0.message)]
    Refused(Response),
    /// The store failed (disk full, permissions…).
    #[error("{0}")]
    Store(Arc<StoreError>),
    /// Upstream sent a package document that cannot be used.
    #[error("upstream sent a bad document for {name}: {error}")]
    Packument {
        /// The package.
        name: String,
        /// What was wrong.
        error: PackumentError,
    },
    /// A plugin failed.
    #[error("{0}")]
    Plugin(Arc<PluginError>),
    /// sluice itself failed (a bug or a panicked task); answered 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(Arc::new(e))
    }
}

impl From<PluginError> for Error {
    fn from(e: PluginError) -> Self {
        Error::Plugin(Arc::new(e))
    }
}

/// The result every core operation shares between single-flight callers.
pub type Shared<T> = Result<T, Error>;

/// Parse a stored or fetched packument of `name`; a document that cannot be used is upstream's
/// fault.
pub fn parse_document(bytes: &[u8], name: &str) -> Result<Packument, Error> {
    packument::parse(bytes, name).map_err(|error| Error::Packument {
        name: name.to_string(),
        error,
    })
}

/// The integrity a version publishes: `dist.integrity`, else its sha1 `dist.shasum`.
pub fn published_integrity(manifest: &Value) -> Option<Integrity> {
    let dist = manifest.get("dist")?;
    if let Some(sri) = dist.get("integrity").and_then(Value::as_str) {
        if let Ok(integrity) = sri.parse::<Integrity>() {
            return Some(integrity);
        }
    }
    let shasum = dist.get("shasum").and_then(Value::as_str)?;
    Integrity::from_hex(shasum, ssri::Algorithm::Sha1).ok()
}

/// Gzip `body` once, at a level that pays off for bodies served many times.
pub fn gzip_bytes(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 6),
        flate2::Compression::new(6),
    );
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// Documents larger than this hand their freed memory back to the system after they were
/// parsed or rendered.
pub const TRIM_AFTER: usize = 2 << 20;
