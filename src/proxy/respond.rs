//! Answers as values, turned into a response header and body in one place: content-length
//! on every answer (keep-alive), conditional requests, and npm-style error bodies.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::Result;
use serde_json::json;

use crate::store::Rendered;

enum ContentType {
    Static(&'static str),
    Owned(String),
}

/// A response about to be sent.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    content_type: ContentType,
    body: Bytes,
    etag: Option<Arc<str>>,
    last_modified: Option<Arc<str>>,
    gzip: bool,
    vary: bool,
    cache_control: Option<&'static str>,
}

impl Answer {
    /// An npm-style error: `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        let message: String = message.into();
        Self::json(status, &json!({ "error": message }))
    }

    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: ContentType::Static("application/json"),
            body: Bytes::from(value.to_string()),
            etag: None,
            last_modified: None,
            gzip: false,
            vary: false,
            cache_control: None,
        }
    }

    /// A text body (metrics, the status page).
    pub fn text(content_type: &'static str, body: String) -> Self {
        Self {
            status: 200,
            content_type: ContentType::Static(content_type),
            body: Bytes::from(body),
            etag: None,
            last_modified: None,
            gzip: false,
            vary: false,
            cache_control: Some("no-cache"),
        }
    }

    /// An upstream answer relayed as it is.
    pub fn relayed(status: u16, content_type: String, body: Bytes) -> Self {
        Self {
            status,
            content_type: ContentType::Owned(content_type),
            body,
            etag: None,
            last_modified: None,
            gzip: false,
            vary: false,
            cache_control: None,
        }
    }

    /// A rendered packument body.
    pub fn rendered(rendered: Arc<Rendered>, content_type: &'static str, gzip: bool) -> Self {
        Self {
            status: 200,
            content_type: ContentType::Static(content_type),
            body: rendered.body.clone(),
            etag: Some(rendered.etag.clone()),
            last_modified: rendered.last_modified.clone(),
            gzip,
            vary: false,
            cache_control: Some("public, max-age=300"),
        }
    }

    /// A tarball body; tarballs never change, so their ETag is stable.
    pub fn tarball(bytes: Bytes) -> Self {
        let hash = xxhash_rust::xxh3::xxh3_128(&bytes);
        Self {
            status: 200,
            content_type: ContentType::Static("application/octet-stream"),
            body: bytes,
            etag: Some(format!("\"{hash:032x}\"").into()),
            last_modified: None,
            gzip: false,
            vary: false,
            cache_control: Some("public, max-age=31536000, immutable"),
        }
    }

    /// Mark the answer as varying with `Accept` and `Accept-Encoding`.
    pub fn with_vary(mut self) -> Self {
        self.vary = true;
        self
    }

    /// The response header and body; a matching `If-None-Match` (or, without one, an
    /// `If-Modified-Since` not older than `Last-Modified`) gives 304 without a body.
    pub fn into_response(
        self,
        if_none_match: Option<&str>,
        if_modified_since: Option<&str>,
    ) -> Result<(ResponseHeader, Bytes)> {
        let not_modified = self.status == 200
            && match (&self.etag, if_none_match, &self.last_modified, if_modified_since) {
                (Some(etag), Some(header), _, _) => header
                    .split(',')
                    .map(|t| t.trim().trim_start_matches("W/"))
                    .any(|t| t == "*" || t == &**etag),
                (_, None, Some(modified), Some(since)) => {
                    match (httpdate::parse_http_date(modified), httpdate::parse_http_date(since)) {
                        (Ok(modified), Ok(since)) => modified <= since,
                        _ => false,
                    }
                }
                _ => false,
            };
        let status = if not_modified { 304 } else { self.status };
        let mut response = ResponseHeader::build(status, Some(8))?;
        if let Some(etag) = &self.etag {
            response.insert_header("etag", &**etag)?;
        }
        if let Some(modified) = &self.last_modified {
            response.insert_header("last-modified", &**modified)?;
        }
        if let Some(cache_control) = self.cache_control {
            response.insert_header("cache-control", cache_control)?;
        }
        if self.vary {
            response.insert_header("vary", "Accept, Accept-Encoding")?;
        }
        if not_modified {
            response.insert_header("content-length", "0")?;
            return Ok((response, Bytes::new()));
        }
        match &self.content_type {
            ContentType::Static(t) => response.insert_header("content-type", *t)?,
            ContentType::Owned(t) => response.insert_header("content-type", t.as_str())?,
        }
        if self.gzip {
            response.insert_header("content-encoding", "gzip")?;
        }
        response.insert_header("content-length", self.body.len().to_string())?;
        Ok((response, self.body))
    }
}
