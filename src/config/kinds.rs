//! The closed sets of values some keys take (`storage.backend`, `mode`, `policy.tarballs`,
//! `auth.read`): read as they are by the file model and kept as they are by the validated
//! configuration.

use serde::{Deserialize, Serialize};

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// cacache in `storage.dir` (the default).
    Disk,
    /// An S3-compatible bucket (`[storage.s3]`).
    S3,
}

/// `policy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only packages on the whitelist (plus read-through additions).
    Whitelist,
    /// Every package.
    Mirror,
}

/// `policy.tarballs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tarballs {
    /// Tarballs are fetched when a client asks for them.
    OnDemand,
    /// The `latest` version's tarball is copied eagerly.
    Latest,
    /// Every version's tarball is copied eagerly.
    All,
}

/// `auth.read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Read {
    /// Anyone may read.
    Anonymous,
    /// Every request but `/-/ping` and login needs a valid token.
    Authenticated,
}
