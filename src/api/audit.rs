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
            // Reserved, not touched: only what is written takes memory, and the buffer never
            // grows past the limit by doubling.
            let mut plain = Vec::with_capacity(limit + 1);
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
/// request, names the policy refuses). Written entry by entry as the body is read: nothing but
/// the body and what is kept of it is held.
fn filter(plain: &[u8], kind: Kind, private: &PrivateNames, host: &Host) -> Result<Bytes, Error> {
    use serde::de::DeserializeSeed as _;
    let mut out = String::with_capacity(plain.len());
    let shape = match kind {
        Kind::Bulk => Shape::Bulk,
        Kind::Quick => Shape::Node { top: true },
    };
    let mut reader = serde_json::Deserializer::from_slice(plain);
    Filter {
        out: &mut out,
        private,
        host,
        shape,
    }
    .deserialize(&mut reader)
    .and_then(|()| reader.end())
    .map_err(|e| Error::Client(format!("the audit body is not a JSON object: {e}")))?;
    Ok(Bytes::from(out))
}

/// What an object in an audit body is.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// The bulk request: `{name: [versions]}`; names published here or refused are dropped.
    Bulk,
    /// A quick-audit node (the project, or a dependency): every member kept but `requires`
    /// and `dependencies` filtered, and at the top a private `name` replaced.
    Node {
        /// Whether it is the project itself.
        top: bool,
    },
    /// `requires`: `{name: range}` without the names published here.
    Requires,
    /// `dependencies`: `{name: node}` without the names published here, each node filtered.
    Dependencies,
}

/// Copies one JSON object of `shape` into `out`, filtered.
struct Filter<'a> {
    out: &'a mut String,
    private: &'a PrivateNames,
    host: &'a Host,
    shape: Shape,
}

impl<'de> serde::de::DeserializeSeed<'de> for Filter<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Filter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        let Filter {
            out,
            private,
            host,
            shape,
        } = self;
        out.push('{');
        let mut first = true;
        while let Some(key) = map.next_key::<String>()? {
            let nested = match (shape, key.as_str()) {
                (Shape::Node { .. }, "requires") => Some(Shape::Requires),
                (Shape::Node { .. }, "dependencies") => Some(Shape::Dependencies),
                (Shape::Dependencies, _) => Some(Shape::Node { top: false }),
                _ => None,
            };
            let dropped = match shape {
                Shape::Bulk => private.contains(&key) || !host.admits(&key),
                Shape::Requires | Shape::Dependencies => private.contains(&key),
                Shape::Node { .. } => false,
            };
            if dropped {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(&key).map_err(A::Error::custom)?);
            out.push(':');
            match nested {
                Some(shape) => map.next_value_seed(Filter {
                    out: &mut *out,
                    private,
                    host,
                    shape,
                })?,
                None => {
                    let value = map.next_value::<&RawValue>()?;
                    let private_top = matches!(shape, Shape::Node { top: true }) && key == "name";
                    let named: Option<String> = private_top
                        .then(|| serde_json::from_str(value.get()).ok())
                        .flatten();
                    if named.is_some_and(|name| private.contains(&name)) {
                        out.push_str("\"project\"");
                    } else {
                        out.push_str(value.get());
                    }
                }
            }
        }
        out.push('}');
        Ok(())
    }
}
