//! `npm audit`'s two endpoints, relayed to upstream with every name published here removed:
//! the bulk advisory request (`/-/npm/v1/security/advisories/bulk`, `{name: [versions]}`) and
//! the quick audit (`/-/npm/v1/security/audits/quick`, a lockfile-shaped tree of `requires` and
//! `dependencies`).
//!
//! A body is inflated with a count (past `server.max_audit_body`, 16 MiB by default, it is
//! refused) and filtered without a
//! tree of the document: names are read, values are kept as the raw text they were sent as.
//! The work runs on a blocking thread, at most [`AT_ONCE`] at a time, so a large audit never
//! holds an async worker nor takes memory without bound.

use std::io::Read as _;
use std::sync::LazyLock;

use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use tokio::sync::Semaphore;

use super::{Answer, Call};
use crate::core::{Error, PrivateNames};
use crate::plugins::Host;

/// How many audit bodies are inflated and filtered at once.
const AT_ONCE: usize = 2;

static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(AT_ONCE));

/// Which audit endpoint a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `{name: [versions]}`.
    Bulk,
    /// A lockfile-shaped tree.
    Quick,
}

/// Relay the audit request in `call` to upstream, without the names published here.
pub async fn relay(call: &Call<'_>, path: &str) -> Result<Answer, Error> {
    let kind = if path.ends_with("/advisories/bulk") {
        Kind::Bulk
    } else {
        Kind::Quick
    };
    let limit = call.app.config.server.max_audit_body as usize;
    let body = call.body.clone();
    let encoding = call.content_encoding.clone();
    let private = call.app.private.clone();
    let host = call.app.host.clone();
    let permit = PERMITS
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let filtered = tokio::task::spawn_blocking(move || {
        let plain = inflate(&body, encoding.as_deref(), limit)?;
        filter(&plain, kind, &private, &host)
    })
    .await
    .map_err(|e| Error::Internal(format!("the audit filter failed: {e}")))??;
    drop(permit);
    let (status, content_type, body) = call
        .app
        .upstream
        .relay(
            reqwest::Method::POST,
            path,
            call.content_type.as_deref(),
            None,
            Some(filtered),
        )
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "npm audit needs the upstream registry, which cannot be reached: {e}"
            ))
        })?;
    Ok(Answer::relayed(status, content_type, body))
}

/// The body as sent, inflated when gzipped; counted while it inflates, refused past `limit`.
fn inflate(body: &[u8], encoding: Option<&str>, limit: usize) -> Result<Vec<u8>, Error> {
    let too_large = || {
        Error::TooLarge(format!(
            "the audit request is larger than {limit} bytes once inflated (server.max_audit_body)"
        ))
    };
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => {
            if body.len() > limit {
                return Err(too_large());
            }
            Ok(body.to_vec())
        }
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut plain)
                .map_err(|e| Error::Client(format!("the audit body is not valid gzip: {e}")))?;
            if plain.len() > limit {
                return Err(too_large());
            }
            Ok(plain)
        }
        Some(other) => Err(Error::Client(format!(
            "unsupported content-encoding `{other}` (send gzip or nothing)"
        ))),
    }
}

/// The body to send upstream: `plain` without the names published here (nor, in a bulk
/// request, names the policy refuses).
fn filter(plain: &[u8], kind: Kind, private: &PrivateNames, host: &Host) -> Result<Bytes, Error> {
    let bad =
        |e: serde_json::Error| Error::Client(format!("the audit body is not a JSON object: {e}"));
    let text = match kind {
        Kind::Bulk => {
            let mut doc: BTreeMap<String, Box<RawValue>> = BTreeMap::new();
            for (name, versions) in entries(plain).map_err(bad)? {
                if !private.contains(&name) && host.admits(&name) {
                    doc.insert(name, versions);
                }
            }
            serde_json::to_string(&doc).map_err(bad)?
        }
        Kind::Quick => {
            let raw: Box<RawValue> = serde_json::from_slice(plain).map_err(bad)?;
            quick(&raw, private, true).map_err(bad)?.get().to_string()
        }
    };
    Ok(Bytes::from(text))
}

/// The members of a JSON object, each value as its raw text.
fn entries(text: &[u8]) -> Result<Vec<(String, Box<RawValue>)>, serde_json::Error> {
    let map: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(text)?;
    Ok(map.into_iter().collect())
}

/// A quick-audit tree (the project, or one dependency in it) without the names published here:
/// from its `requires` and `dependencies` (each dependency filtered the same way), and its own
/// `name` at the top when it is one.
fn quick(
    node: &RawValue,
    private: &PrivateNames,
    top: bool,
) -> Result<Box<RawValue>, serde_json::Error> {
    let mut out: BTreeMap<String, Box<RawValue>> = BTreeMap::new();
    for (key, value) in entries(node.get().as_bytes())? {
        let value = match key.as_str() {
            "requires" => without_private(&value, private, None)?,
            "dependencies" => without_private(&value, private, Some(()))?,
            "name" if top => {
                let name: Option<String> = serde_json::from_str(value.get()).ok();
                if name.is_some_and(|n| private.contains(&n)) {
                    RawValue::from_string("\"project\"".into())?
                } else {
                    value
                }
            }
            _ => value,
        };
        out.insert(key, value);
    }
    serde_json::value::to_raw_value(&out)
}

/// An object keyed by package name without the names published here; with `nested`, each
/// value is a dependency filtered by [`quick`].
fn without_private(
    object: &RawValue,
    private: &PrivateNames,
    nested: Option<()>,
) -> Result<Box<RawValue>, serde_json::Error> {
    let mut out: BTreeMap<String, Box<RawValue>> = BTreeMap::new();
    for (name, value) in entries(object.get().as_bytes())? {
        if private.contains(&name) {
            continue;
        }
        let value = match nested {
            Some(()) => quick(&value, private, false)?,
            None => value,
        };
        out.insert(name, value);
    }
    serde_json::value::to_raw_value(&out)
}
