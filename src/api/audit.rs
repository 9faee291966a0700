//! `npm audit`'s two endpoints, relayed to upstream with every name published here removed:
//! the bulk advisory request (`/-/npm/v1/security/advisories/bulk`, `{name: [versions]}`) and
//! the quick audit (`/-/npm/v1/security/audits/quick`, a lockfile-shaped tree of `requires` and
//! `dependencies`).
//!
//! A body is inflated with a count (past `server.max_audit_body`, 16 MiB by default, it is
//! refused) and filtered without a
//! tree of the document: names are read, values are kept as the raw text they were sent as,
//! once their strings were read for what points at a name published here (an npm alias
//! `npm:@acme/secret@1`, a URL of a private tarball): such a value is never relayed.
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
/// request, names the policy refuses), nor any value that points at one (an npm alias
/// `npm:@acme/secret@1`, a URL of a private tarball). Written entry by entry as the body is
/// read: nothing but the body and what is kept of it is held.
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
    .and_then(|_| reader.end())
    .map_err(|e| Error::Client(format!("the audit body is not a JSON object: {e}")))?;
    Ok(Bytes::from(out))
}

/// What an object in an audit body is.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// The bulk request: `{name: [versions]}`; names published here or refused are dropped,
    /// and versions that point at a name published here.
    Bulk,
    /// A quick-audit node (the project, or a dependency): every member kept but `requires`
    /// and `dependencies` filtered, and at the top a private `name` replaced and the package
    /// ids of `install` and `remove` filtered. A dependency with a value that points at a
    /// name published here (`"version": "npm:@acme/secret@1.0.0"`, a private `resolved`) is
    /// dropped whole.
    Node {
        /// Whether it is the project itself.
        top: bool,
    },
    /// `requires`: `{name: range}` without the names published here, nor ranges that alias
    /// one.
    Requires,
    /// `dependencies`: `{name: node}` without the names published here, each node filtered.
    Dependencies,
}

impl Shape {
    /// The shape of the object member `key` of this shape holds, when it is filtered too.
    fn nested(self, key: &str) -> Option<Shape> {
        match (self, key) {
            (Shape::Node { .. }, "requires") => Some(Shape::Requires),
            (Shape::Node { .. }, "dependencies") => Some(Shape::Dependencies),
            (Shape::Dependencies, _) => Some(Shape::Node { top: false }),
            _ => None,
        }
    }

    /// Whether the member `key` of this shape is dropped by its name alone.
    fn drops_key(self, key: &str, private: &PrivateNames, host: &Host) -> bool {
        match self {
            Shape::Bulk => private.contains(key) || !host.admits(key),
            Shape::Requires | Shape::Dependencies => private.contains(key),
            Shape::Node { .. } => false,
        }
    }
}

/// What becomes of a member whose value is not filtered as an object of its own.
enum Leaf {
    /// Sent as it came.
    Keep,
    /// Sent as this JSON text instead.
    Write(String),
    /// Left out.
    Drop,
    /// Left out, and the dependency holding it too.
    Taint,
}

/// What becomes of the member `key` = `value` of an object of `shape`.
fn leaf(
    shape: Shape,
    key: &str,
    value: &RawValue,
    private: &PrivateNames,
) -> Result<Leaf, serde_json::Error> {
    let points = || points_private(value, private);
    Ok(match shape {
        Shape::Node { top: true } if key == "name" => {
            match serde_json::from_str::<String>(value.get()) {
                Ok(name) if private.contains(&name) => Leaf::Write("\"project\"".into()),
                _ => Leaf::Keep,
            }
        }
        Shape::Node { top: true } if key == "install" || key == "remove" => {
            // Package ids, `name@version`.
            let ids = kept_elements(value, |id| {
                let named = serde_json::from_str::<String>(id.get())
                    .is_ok_and(|id| private.contains(spec_name(&id)));
                named || points_private(id, private)
            })?;
            ids.map_or_else(
                || if points() { Leaf::Drop } else { Leaf::Keep },
                Leaf::Write,
            )
        }
        Shape::Bulk => match kept_elements(value, |v| points_private(v, private))? {
            Some(versions) => Leaf::Write(versions),
            None if points() => Leaf::Drop,
            None => Leaf::Keep,
        },
        Shape::Node { top: false } if points() => Leaf::Taint,
        _ if points() => Leaf::Drop,
        _ => Leaf::Keep,
    })
}

/// `value` without the elements `leaks` says point at a name published here, when it is an
/// array; `None` when it is not one.
fn kept_elements(
    value: &RawValue,
    leaks: impl Fn(&RawValue) -> bool,
) -> Result<Option<String>, serde_json::Error> {
    if !value.get().trim_start().starts_with('[') {
        return Ok(None);
    }
    let elements: Vec<&RawValue> = serde_json::from_str(value.get())?;
    let kept: Vec<&str> = elements
        .into_iter()
        .filter(|e| !leaks(e))
        .map(RawValue::get)
        .collect();
    Ok(Some(format!("[{}]", kept.join(","))))
}

/// The name of the package spec or id `spec` (`name@range`, `@scope/name@range`).
fn spec_name(spec: &str) -> &str {
    let at = match spec.strip_prefix('@') {
        Some(rest) => rest.find('@').map(|i| i + 1),
        None => spec.find('@'),
    };
    at.map_or(spec, |i| &spec[..i])
}

/// Whether any string in the JSON `value` points at a name published here (read without
/// building a tree of it).
fn points_private(value: &RawValue, private: &PrivateNames) -> bool {
    use serde::de::DeserializeSeed as _;
    let mut reader = serde_json::Deserializer::from_str(value.get());
    // What cannot be read is not sent: treated as pointing.
    Strings { private }.deserialize(&mut reader).unwrap_or(true)
}

/// Whether the string `text` points at a name published here: an npm alias of one
/// (`npm:@acme/secret@^1`, also in a package id `foo@npm:@acme/secret@1.0.0`), or a URL whose
/// path names one (a tarball, `…/@acme/secret/-/secret-1.0.0.tgz`, or a document).
fn names_private(text: &str, private: &PrivateNames) -> bool {
    let text = text.trim();
    // `npm:` is ASCII: where it starts in the lowercased text, it starts in `text`.
    let alias = text
        .to_ascii_lowercase()
        .find("npm:")
        .and_then(|at| text.get(at + 4..));
    if alias.is_some_and(|alias| private.contains(spec_name(alias.trim()))) {
        return true;
    }
    let Some((_, rest)) = text.split_once("://") else {
        return false;
    };
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let path = path.split_once('/').map_or("", |(_, p)| p);
    let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let named = match path.find("/-/") {
        Some(at) => &path[..at],
        None => path.trim_end_matches('/'),
    };
    let segments: Vec<&str> = named.split('/').collect();
    let last = segments.last().copied().unwrap_or("");
    let scoped = match segments.len() {
        n if n >= 2 && segments[n - 2].starts_with('@') => {
            Some(format!("{}/{last}", segments[n - 2]))
        }
        _ => None,
    };
    (!last.is_empty() && private.contains(last)) || scoped.is_some_and(|s| private.contains(&s))
}

/// Reads any JSON value: whether a string in it (a key or a value) points at a name
/// published here.
struct Strings<'a> {
    private: &'a PrivateNames,
}

impl<'de> serde::de::DeserializeSeed<'de> for Strings<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strings<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, text: &str) -> Result<bool, E> {
        Ok(names_private(text, self.private))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(named) = seq.next_element_seed(Strings {
            private: self.private,
        })? {
            found |= named;
        }
        Ok(found)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let private = self.private;
        let mut found = false;
        while let Some(named) = map.next_key_seed(Strings { private })? {
            found |= named | map.next_value_seed(Strings { private })?;
        }
        Ok(found)
    }
}

/// Copies one JSON object of `shape` into `out`, filtered.
struct Filter<'a> {
    out: &'a mut String,
    private: &'a PrivateNames,
    host: &'a Host,
    shape: Shape,
}

impl<'de> serde::de::DeserializeSeed<'de> for Filter<'_> {
    /// Whether the object points at a name published here (its dependency is then dropped).
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Filter<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        use serde::de::Error as _;
        let Filter {
            out,
            private,
            host,
            shape,
        } = self;
        out.push('{');
        let (mut first, mut tainted) = (true, false);
        while let Some(key) = map.next_key::<String>()? {
            if tainted || shape.drops_key(&key, private, host) {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            // Where this member starts: a member left out after all is cut off there.
            let (mark, was_first) = (out.len(), first);
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(&key).map_err(A::Error::custom)?);
            out.push(':');
            let kept = match shape.nested(&key) {
                Some(shape) => !map.next_value_seed(Filter {
                    out: &mut *out,
                    private,
                    host,
                    shape,
                })?,
                None => {
                    let value = map.next_value::<&RawValue>()?;
                    let outcome = leaf(shape, &key, value, private).map_err(A::Error::custom)?;
                    let text = match &outcome {
                        Leaf::Keep => Some(value.get()),
                        Leaf::Write(text) => Some(text.as_str()),
                        Leaf::Drop | Leaf::Taint => None,
                    };
                    if let Some(text) = text {
                        out.push_str(text);
                    }
                    tainted |= matches!(outcome, Leaf::Taint);
                    text.is_some()
                }
            };
            if !kept {
                out.truncate(mark);
                first = was_first;
            }
        }
        out.push('}');
        Ok(tainted)
    }
}
