//! The registry core, split by noun: [`packuments`] (get, revalidate, conditional merge),
//! [`renders`] (what a client is sent for a packument: filtered, rewritten, abbreviated,
//! gzipped, with an ETag) and [`tarballs`] (refusal, the unlisted re-read, streams). Each part
//! owns its cache and its single-flight; [`crate::app`] builds them.

pub mod fleet;
pub mod packuments;
pub mod private;
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

pub use private::PrivateNames;

use crate::packument::{self, PackumentError};
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// Whose fault a failure is: what a front (the npm protocol, the console) tells the user and
/// how it answers. The core decides the fault; the front alone turns it into a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request is malformed or asks for something impossible.
    Client,
    /// The request needs a user (or a valid credential) and has none.
    Unauthenticated,
    /// The user is known but may not do this.
    Forbidden,
    /// No such package, version, file, user or token.
    NotFound,
    /// The registry does not offer this here (a write to a mirrored name).
    NotOffered,
    /// The request conflicts with what is stored (a version published already, a stale `_rev`).
    Conflict,
    /// The request is larger than the registry takes.
    TooLarge,
    /// Too many failed attempts: the caller must wait.
    Throttled,
    /// Upstream failed (or sent something unusable) and nothing stored answers instead.
    Upstream,
    /// Upstream did not answer in time.
    UpstreamTimeout,
    /// Something only upstream can answer (audit, signing keys) and upstream is unreachable.
    Unavailable,
    /// sluice's store failed (disk full, permissions, the bucket).
    Store,
    /// sluice itself failed: a bug, a panicked task, a plugin that failed.
    Internal,
}

/// Why an operation of the core failed, whose fault it is ([`Error::fault`]) and a message
/// that tells the user what to do. The core never names a status code: the front maps the
/// fault once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed (a bad body, name, version or integrity).
    #[error("{0}")]
    Client(String),
    /// The request needs a user or a valid credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// Not allowed (not an owner, a read-only token, a refused version).
    #[error("{0}")]
    Forbidden(String),
    /// Upstream or the store has no such package, version or tarball.
    #[error("{0}")]
    NotFound(String),
    /// Not offered here (a write to a name that is not published here).
    #[error("{0}")]
    NotOffered(String),
    /// Conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// Larger than the registry takes.
    #[error("{0}")]
    TooLarge(String),
    /// Too many failed attempts.
    #[error("{0}")]
    Throttled(String),
    /// Upstream failed and nothing is stored.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Only upstream can answer and it cannot be reached; the message says what needs it.
    #[error("{0}")]
    Unavailable(String),
    /// A plugin refuses it: the plugin's own answer (status, message, headers), sent as is.
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
    /// sluice itself failed (a bug or a panicked task).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Client(_) => Fault::Client,
            Error::Unauthenticated(_) => Fault::Unauthenticated,
            Error::Forbidden(_) => Fault::Forbidden,
            Error::NotFound(_) => Fault::NotFound,
            Error::NotOffered(_) => Fault::NotOffered,
            Error::Conflict(_) => Fault::Conflict,
            Error::TooLarge(_) => Fault::TooLarge,
            Error::Throttled(_) => Fault::Throttled,
            Error::Upstream(e) if e.is_timeout() => Fault::UpstreamTimeout,
            Error::Upstream(_) | Error::Packument { .. } => Fault::Upstream,
            Error::Unavailable(_) => Fault::Unavailable,
            Error::Store(_) => Fault::Store,
            Error::Refused(_) | Error::Plugin(_) | Error::Internal(_) => Fault::Internal,
        }
    }

    /// A failure of the store that was told as text.
    pub fn store(message: impl Into<String>) -> Self {
        Error::Store(Arc::new(StoreError {
            location: "sluice's store".to_string(),
            message: message.into(),
        }))
    }
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

impl From<crate::auth::AuthError> for Error {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match e {
            AuthError::Unauthorized(m) => Error::Unauthenticated(m),
            AuthError::Forbidden(m) => Error::Forbidden(m),
            AuthError::Locked => Error::Throttled(AuthError::Locked.to_string()),
            AuthError::Store(m) => Error::store(m),
        }
    }
}

/// Work of the core that panicked in a single flight is sluice's own failure.
impl<T> crate::flight::Failed for Result<T, Error> {
    fn failed(why: String) -> Self {
        Err(Error::Internal(why))
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

/// The integrity a version publishes: `dist.integrity`, else its sha1 `dist.shasum`; `None`
/// when neither has a hash that can be checked.
pub fn published_integrity(manifest: &Value) -> Option<Integrity> {
    let dist = manifest.get("dist")?;
    if let Some(integrity) = dist
        .get("integrity")
        .and_then(Value::as_str)
        .and_then(usable_integrity)
    {
        return Some(integrity);
    }
    let shasum = dist.get("shasum").and_then(Value::as_str)?;
    let sha1 = Integrity::from_hex(shasum, ssri::Algorithm::Sha1).ok()?;
    usable_integrity(&sha1.to_string())
}

/// The hashes of `sri` that can be checked: each a digest of its algorithm's length. `None`
/// when none is left (`""`, `sha512-`, `sha512-%%%`): ssri parses those, then panics when
/// asked for their algorithm or digest.
pub fn usable_integrity(sri: &str) -> Option<Integrity> {
    use base64::Engine as _;
    let parsed: Integrity = sri.parse().ok()?;
    let hashes: Vec<ssri::Hash> = parsed
        .hashes
        .into_iter()
        .filter(|hash| {
            let length = match hash.algorithm {
                ssri::Algorithm::Sha512 => 64,
                ssri::Algorithm::Sha384 => 48,
                ssri::Algorithm::Sha256 => 32,
                ssri::Algorithm::Sha1 => 20,
                ssri::Algorithm::Xxh3 => 16,
                // An algorithm a later ssri knows: nothing here checks it.
                _ => return false,
            };
            base64::engine::general_purpose::STANDARD
                .decode(&hash.digest)
                .is_ok_and(|digest| digest.len() == length)
        })
        .collect();
    (!hashes.is_empty()).then_some(Integrity { hashes })
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
