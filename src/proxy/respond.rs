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
    ranges: bool,
}

/// The request headers that make an answer conditional or partial.
#[derive(Debug, Default)]
pub struct Conditions {
    /// `If-None-Match`.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<String>,
    /// `Range`.
    pub range: Option<String>,
    /// `If-Range`.
    pub if_range: Option<String>,
}

/// A single byte range of a body of `len` bytes: `Ok(None)` means "serve it whole" (no range,
/// several ranges, or a form we do not take), `Err(())` means unsatisfiable.
fn byte_range(header: &str, len: usize) -> Result<Option<(usize, usize)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (start, end) = (start.trim(), end.trim());
    let range = match (start.parse::<usize>(), end.parse::<usize>()) {
        (Ok(start), Ok(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        (Ok(start), Err(_)) if end.is_empty() => (start, len.saturating_sub(1)),
        (Err(_), Ok(suffix)) if start.is_empty() && suffix > 0 => {
            (len.saturating_sub(suffix), len.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if range.0 >= len {
        return Err(());
    }
    Ok(Some(range))
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
            ranges: false,
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
            ranges: false,
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
            ranges: false,
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
            ranges: false,
        }
    }

    /// A tarball body; tarballs never change, so their ETag is stable.
    pub fn tarball(rendered: Arc<Rendered>) -> Self {
        Self {
            status: 200,
            content_type: ContentType::Static("application/octet-stream"),
            body: rendered.body.clone(),
            etag: Some(rendered.etag.clone()),
            last_modified: None,
            gzip: false,
            vary: false,
            cache_control: Some("public, max-age=31536000, immutable"),
            ranges: true,
        }
    }

    /// Mark the answer as varying with `Accept` and `Accept-Encoding`.
    pub fn with_vary(mut self) -> Self {
        self.vary = true;
        self
    }

    /// The response header and body; a matching `If-None-Match` (or, without one, an
    /// `If-Modified-Since` not older than `Last-Modified`) gives 304 without a body.
    pub fn into_response(self, conditions: &Conditions) -> Result<(ResponseHeader, Bytes)> {
        let if_none_match = conditions.if_none_match.as_deref();
        let if_modified_since = conditions.if_modified_since.as_deref();
        let not_modified = self.status == 200
            && match (
                &self.etag,
                if_none_match,
                &self.last_modified,
                if_modified_since,
            ) {
                (Some(etag), Some(header), _, _) => header
                    .split(',')
                    .map(|t| t.trim().trim_start_matches("W/"))
                    .any(|t| t == "*" || t == &**etag),
                (_, None, Some(modified), Some(since)) => {
                    match (
                        httpdate::parse_http_date(modified),
                        httpdate::parse_http_date(since),
                    ) {
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
        if self.ranges && self.status == 200 {
            response.insert_header("accept-ranges", "bytes")?;
            let fresh = match (&conditions.if_range, &self.etag) {
                (Some(if_range), Some(etag)) => if_range.trim() == &**etag,
                (Some(_), None) => false,
                (None, _) => true,
            };
            let len = self.body.len();
            match conditions
                .range
                .as_deref()
                .filter(|_| fresh)
                .map(|r| byte_range(r, len))
            {
                Some(Ok(Some((start, end)))) => {
                    response.set_status(206)?;
                    response
                        .insert_header("content-range", format!("bytes {start}-{end}/{len}"))?;
                    response.insert_header("content-length", (end - start + 1).to_string())?;
                    return Ok((response, self.body.slice(start..=end)));
                }
                Some(Err(())) => {
                    response.set_status(416)?;
                    response.insert_header("content-range", format!("bytes */{len}"))?;
                    response.remove_header("content-type");
                    response.insert_header("content-length", "0")?;
                    return Ok((response, Bytes::new()));
                }
                _ => {}
            }
        }
        response.insert_header("content-length", self.body.len().to_string())?;
        Ok((response, self.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(byte_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(byte_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(byte_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(byte_range("bytes=100-", 100), Err(()));
        assert_eq!(byte_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(byte_range("items=0-1", 100), Ok(None));
        assert_eq!(byte_range("bytes=9-1", 100), Ok(None));
    }
}
