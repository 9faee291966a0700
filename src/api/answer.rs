//! Answers as values: what npm is sent (status, content type, body, caching headers), built by
//! the handlers and turned into HTTP by the front (`crate::proxy::respond`) in one place.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use serde_json::json;
use sluice_plugin_api::CacheStatus;

use crate::core::tarballs::{Served, TarballStream};
use crate::core::{Error, Fault};
use crate::store::Rendered;

/// The HTTP status for a failure that is `fault`'s: the one mapping, for npm's answers and
/// the console's pages alike.
pub fn status(fault: Fault) -> u16 {
    match fault {
        Fault::Client => 400,
        Fault::Unauthenticated => 401,
        Fault::Forbidden => 403,
        Fault::NotFound => 404,
        Fault::NotOffered => 405,
        Fault::Conflict => 409,
        Fault::TooLarge => 413,
        Fault::Throttled => 429,
        Fault::Upstream => 502,
        Fault::Unavailable => 503,
        Fault::Store => 503,
        Fault::UpstreamTimeout => 504,
        Fault::Internal => 500,
    }
}

/// A body about to be sent: whole, or streaming (an error in the stream aborts the response).
pub enum Body {
    /// All of it.
    Full(Bytes),
    /// A stream of `size` bytes (chunked when unknown).
    Stream {
        /// Its length, when known.
        size: Option<u64>,
        /// Its bytes.
        stream: BoxStream<'static, Result<Bytes, Error>>,
    },
    /// `len` bytes of a verified file from `offset`, sent with `sendfile(2)`.
    File {
        /// The file.
        file: std::fs::File,
        /// Where the body starts in it.
        offset: u64,
        /// The body's length.
        len: u64,
    },
}

impl Body {
    /// Its length, when known.
    pub fn len(&self) -> Option<u64> {
        match self {
            Body::Full(bytes) => Some(bytes.len() as u64),
            Body::Stream { size, .. } => *size,
            Body::File { len, .. } => Some(*len),
        }
    }

    /// Whether it is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

/// An answer's content type.
pub enum ContentType {
    /// A fixed one.
    Static(&'static str),
    /// One relayed from upstream.
    Owned(String),
}

/// A response about to be sent.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Its content type.
    pub content_type: ContentType,
    /// Its body.
    pub body: Body,
    /// More headers (a plugin's, `WWW-Authenticate`).
    pub headers: Vec<(String, String)>,
    /// Its ETag, when it has one.
    pub etag: Option<Arc<str>>,
    /// Its `Last-Modified`, when it has one.
    pub last_modified: Option<Arc<str>>,
    /// Whether the body is gzipped.
    pub gzip: bool,
    /// Whether it varies with `Accept` and `Accept-Encoding`.
    pub vary: bool,
    /// Its `Cache-Control`.
    pub cache_control: Option<&'static str>,
    /// Whether byte ranges of it may be asked for.
    pub ranges: bool,
    /// Where it came from (the store, upstream, a stale copy), for `X-Cache-Status`.
    pub cache: Option<CacheStatus>,
}

impl Answer {
    /// An npm-style error: `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        let message: String = message.into();
        Self::json(status, &json!({ "error": message }))
    }

    /// A plugin's answer: its status, message and headers.
    pub fn plugin(response: sluice_plugin_api::Response) -> Self {
        let mut answer = Self::error(response.status, response.message);
        answer.headers = response.headers;
        answer
    }

    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: ContentType::Static("application/json"),
            body: Body::Full(Bytes::from(value.to_string())),
            headers: Vec::new(),
            etag: None,
            last_modified: None,
            gzip: false,
            vary: false,
            cache_control: None,
            ranges: false,
            cache: None,
        }
    }

    /// A text body (metrics, the status page).
    pub fn text(content_type: &'static str, body: String) -> Self {
        Self {
            status: 200,
            content_type: ContentType::Static(content_type),
            body: Body::Full(Bytes::from(body)),
            headers: Vec::new(),
            etag: None,
            last_modified: None,
            gzip: false,
            vary: false,
            cache_control: Some("no-cache"),
            ranges: false,
            cache: None,
        }
    }

    /// An upstream answer relayed as it is.
    pub fn relayed(status: u16, content_type: String, body: Bytes) -> Self {
        Self {
            status,
            content_type: ContentType::Owned(content_type),
            body: Body::Full(body),
            headers: Vec::new(),
            etag: None,
            last_modified: None,
            gzip: false,
            vary: false,
            cache_control: None,
            ranges: false,
            cache: None,
        }
    }

    /// A rendered packument body.
    pub fn rendered(rendered: Arc<Rendered>, content_type: &'static str, gzip: bool) -> Self {
        Self {
            status: 200,
            content_type: ContentType::Static(content_type),
            body: Body::Full(rendered.body.clone()),
            headers: Vec::new(),
            etag: Some(rendered.etag.clone()),
            last_modified: rendered.last_modified.clone(),
            gzip,
            vary: false,
            cache_control: Some("public, max-age=300"),
            ranges: false,
            cache: None,
        }
    }

    /// A tarball; tarballs never change, so their ETag is stable.
    pub fn tarball(served: Served) -> Self {
        let (body, etag) = match served {
            Served::Whole(rendered) => (
                Body::Full(rendered.body.clone()),
                Some(rendered.etag.clone()),
            ),
            Served::Stream(TarballStream { size, etag, stream }) => {
                (Body::Stream { size, stream }, etag)
            }
            Served::File { file, etag } => (
                Body::File {
                    file: file.file,
                    offset: 0,
                    len: file.size,
                },
                etag,
            ),
        };
        Self {
            status: 200,
            content_type: ContentType::Static("application/octet-stream"),
            body,
            headers: Vec::new(),
            etag,
            last_modified: None,
            gzip: false,
            vary: false,
            cache_control: Some("public, max-age=31536000, immutable"),
            ranges: true,
            cache: None,
        }
    }

    /// The answer, told as coming from `cache` (the store, upstream, a stale copy).
    pub fn from_cache(mut self, cache: CacheStatus) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Mark the answer as varying with `Accept` and `Accept-Encoding`.
    pub fn with_vary(mut self) -> Self {
        self.vary = true;
        self
    }
}
