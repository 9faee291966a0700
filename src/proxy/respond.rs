//! Answers as values, turned into a response header and body in one place: content-length
//! on every answer (keep-alive), conditional requests, and npm-style error bodies.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::Result;
use serde_json::json;

use crate::core::tarballs::{Served, TarballStream};
use crate::core::Error;
use crate::store::Rendered;

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

/// Bytes `start..=end` of `stream`. The stream is read to its end whatever the range, and the
/// range's last bytes go out only once it ended well: a stream that fails its check at the end
/// never gives a range that looks whole.
fn ranged(
    stream: BoxStream<'static, Result<Bytes, Error>>,
    start: u64,
    end: u64,
) -> BoxStream<'static, Result<Bytes, Error>> {
    struct State {
        inner: Option<BoxStream<'static, Result<Bytes, Error>>>,
        at: u64,
        held: Option<Bytes>,
    }
    let state = State {
        inner: Some(stream),
        at: 0,
        held: None,
    };
    futures::stream::unfold(state, move |mut state| async move {
        loop {
            let inner = state.inner.as_mut()?;
            match inner.next().await {
                None => {
                    state.inner = None;
                    let last = state.held.take()?;
                    return Some((Ok(last), state));
                }
                Some(Err(error)) => {
                    state.inner = None;
                    state.held = None;
                    return Some((Err(error), state));
                }
                Some(Ok(chunk)) => {
                    let (from, to) = (state.at, state.at + chunk.len() as u64);
                    state.at = to;
                    let lo = start.max(from);
                    let hi = (end + 1).min(to);
                    if lo >= hi {
                        continue;
                    }
                    let piece = chunk.slice((lo - from) as usize..(hi - from) as usize);
                    if let Some(previous) = state.held.replace(piece) {
                        return Some((Ok(previous), state));
                    }
                }
            }
        }
    })
    .boxed()
}

enum ContentType {
    Static(&'static str),
    Owned(String),
}

/// A response about to be sent.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    content_type: ContentType,
    body: Body,
    headers: Vec<(String, String)>,
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
fn byte_range(header: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
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
    let range = match (start.parse::<u64>(), end.parse::<u64>()) {
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
        }
    }

    /// Mark the answer as varying with `Accept` and `Accept-Encoding`.
    pub fn with_vary(mut self) -> Self {
        self.vary = true;
        self
    }

    /// The response header and body; a matching `If-None-Match` (or, without one, an
    /// `If-Modified-Since` not older than `Last-Modified`) gives 304 without a body.
    pub fn into_response(self, conditions: &Conditions) -> Result<(ResponseHeader, Body)> {
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
        // No case map: every name here is lowercase already, and HTTP/2 has no case at all.
        let mut response = ResponseHeader::build_no_case(status, Some(12))?;
        if let Some(etag) = &self.etag {
            response.insert_header("etag", &**etag)?;
        }
        if let Some(modified) = &self.last_modified {
            response.insert_header("last-modified", &**modified)?;
        }
        if let Some(cache_control) = self.cache_control {
            response.insert_header("cache-control", HeaderValue::from_static(cache_control))?;
        }
        if self.vary {
            response.insert_header("vary", HeaderValue::from_static("Accept, Accept-Encoding"))?;
        }
        for (name, value) in &self.headers {
            response.append_header(name.clone(), value.as_str())?;
        }
        if not_modified {
            response.insert_header("content-length", HeaderValue::from_static("0"))?;
            return Ok((response, Body::Full(Bytes::new())));
        }
        match &self.content_type {
            ContentType::Static(t) => {
                response.insert_header("content-type", HeaderValue::from_static(t))?
            }
            ContentType::Owned(t) => response.insert_header("content-type", t.as_str())?,
        }
        if self.gzip {
            response.insert_header("content-encoding", HeaderValue::from_static("gzip"))?;
        }
        if self.ranges && self.status == 200 {
            response.insert_header("accept-ranges", HeaderValue::from_static("bytes"))?;
            let fresh = match (&conditions.if_range, &self.etag) {
                (Some(if_range), Some(etag)) => if_range.trim() == &**etag,
                (Some(_), None) => false,
                (None, _) => true,
            };
            let range = match (
                conditions.range.as_deref().filter(|_| fresh),
                self.body.len(),
            ) {
                (Some(range), Some(len)) => Some((byte_range(range, len), len)),
                _ => None,
            };
            match range {
                Some((Ok(Some((start, end))), len)) => {
                    response.set_status(206)?;
                    response
                        .insert_header("content-range", format!("bytes {start}-{end}/{len}"))?;
                    response.insert_header("content-length", (end - start + 1).to_string())?;
                    let body = match self.body {
                        Body::Full(bytes) => Body::Full(bytes.slice(start as usize..=end as usize)),
                        Body::Stream { stream, .. } => Body::Stream {
                            size: Some(end - start + 1),
                            stream: ranged(stream, start, end),
                        },
                        Body::File { file, offset, .. } => Body::File {
                            file,
                            offset: offset + start,
                            len: end - start + 1,
                        },
                    };
                    return Ok((response, body));
                }
                Some((Err(()), len)) => {
                    response.set_status(416)?;
                    response.insert_header("content-range", format!("bytes */{len}"))?;
                    response.remove_header("content-type");
                    response.insert_header("content-length", "0")?;
                    return Ok((response, Body::Full(Bytes::new())));
                }
                _ => {}
            }
        }
        match self.body.len() {
            Some(len) => response.insert_header("content-length", HeaderValue::from(len))?,
            None => {
                response.insert_header("transfer-encoding", HeaderValue::from_static("chunked"))?
            }
        }
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
