//! Answers turned into HTTP in one place: content-length on every answer (keep-alive),
//! conditional requests (`If-None-Match`, `If-Modified-Since`) and byte ranges.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::Result;

use crate::api::answer::{Answer, Body, ContentType};
use crate::core::Error;

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
    /// Whether the answer depends on who asked (an authenticated registry, a user's own
    /// data): then no shared cache may keep it.
    pub personal: bool,
}

/// The `Cache-Control` of an answer with `cache_control` that depends on who asked.
fn personal(cache_control: Option<&'static str>) -> &'static str {
    match cache_control {
        Some("public, max-age=300") => "private, max-age=300",
        Some("public, max-age=31536000, immutable") => "private, max-age=31536000, immutable",
        Some("no-cache") => "private, no-cache",
        Some("no-store") => "no-store",
        _ => "private",
    }
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

/// Whether `answer` is unchanged for a client holding `conditions`: a matching
/// `If-None-Match` or, without one, an `If-Modified-Since` not older than `Last-Modified`.
fn not_modified(answer: &Answer, conditions: &Conditions) -> bool {
    if answer.status != 200 {
        return false;
    }
    match (
        &answer.etag,
        conditions.if_none_match.as_deref(),
        &answer.last_modified,
        conditions.if_modified_since.as_deref(),
    ) {
        (Some(etag), Some(header), _, _) => header
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || same_document(t, etag)),
        (_, None, Some(modified), Some(since)) => match (
            httpdate::parse_http_date(modified),
            httpdate::parse_http_date(since),
        ) {
            (Ok(modified), Ok(since)) => modified <= since,
            _ => false,
        },
        _ => false,
    }
}

/// Whether two entity tags name one document: its identity and gzip renderings carry `"X"` and
/// `"X-gz"`, and a client that fetched one (Node's fetch decodes gzip and keeps the tag) may
/// revalidate without asking for gzip.
fn same_document(held: &str, served: &str) -> bool {
    let bare = |tag: &str| {
        tag.trim_end_matches('"')
            .trim_end_matches("-gz")
            .to_string()
    };
    held == served || bare(held) == bare(served)
}

/// The response header and body; an unchanged answer ([`not_modified`]) is 304 without a
/// body, a satisfiable single range of a tarball 206, an unsatisfiable one 416.
pub fn into_response(answer: Answer, conditions: &Conditions) -> Result<(ResponseHeader, Body)> {
    let unchanged = not_modified(&answer, conditions);
    let status = if unchanged { 304 } else { answer.status };
    // No case map: every name here is lowercase already, and HTTP/2 has no case at all.
    let mut response = ResponseHeader::build_no_case(status, Some(12))?;
    if let Some(etag) = &answer.etag {
        response.insert_header("etag", &**etag)?;
    }
    if let Some(modified) = &answer.last_modified {
        response.insert_header("last-modified", &**modified)?;
    }
    let cache_control = if conditions.personal {
        Some(personal(answer.cache_control))
    } else {
        answer.cache_control
    };
    if let Some(cache_control) = cache_control {
        response.insert_header("cache-control", HeaderValue::from_static(cache_control))?;
    }
    let vary = match (answer.vary, conditions.personal) {
        (true, true) => Some("Accept, Accept-Encoding, Authorization"),
        (true, false) => Some("Accept, Accept-Encoding"),
        (false, true) => Some("Authorization"),
        (false, false) => None,
    };
    if let Some(vary) = vary {
        response.insert_header("vary", HeaderValue::from_static(vary))?;
    }
    for (name, value) in &answer.headers {
        response.append_header(name.clone(), value.as_str())?;
    }
    if unchanged {
        response.insert_header("content-length", HeaderValue::from_static("0"))?;
        return Ok((response, Body::Full(Bytes::new())));
    }
    match &answer.content_type {
        ContentType::Static(t) => {
            response.insert_header("content-type", HeaderValue::from_static(t))?
        }
        ContentType::Owned(t) => response.insert_header("content-type", t.as_str())?,
    }
    if answer.gzip {
        response.insert_header("content-encoding", HeaderValue::from_static("gzip"))?;
    }
    let body = if answer.ranges && answer.status == 200 {
        match ranged_body(
            &mut response,
            answer.body,
            conditions,
            answer.etag.as_deref(),
        )? {
            Ranged::Whole(body) => body,
            Ranged::Part(body) => return Ok((response, body)),
        }
    } else {
        answer.body
    };
    match body.len() {
        Some(len) => response.insert_header("content-length", HeaderValue::from(len))?,
        None => response.insert_header("transfer-encoding", HeaderValue::from_static("chunked"))?,
    }
    Ok((response, body))
}

/// A body that takes ranges, after the `Range` header was read.
enum Ranged {
    /// Served whole (no range, an `If-Range` that does not match, a form not taken).
    Whole(Body),
    /// A part (206) or nothing (416), its header complete.
    Part(Body),
}

/// The part of `body` that `conditions` ask for, with the headers that say so.
fn ranged_body(
    response: &mut ResponseHeader,
    body: Body,
    conditions: &Conditions,
    etag: Option<&str>,
) -> Result<Ranged> {
    response.insert_header("accept-ranges", HeaderValue::from_static("bytes"))?;
    let fresh = match (&conditions.if_range, etag) {
        (Some(if_range), Some(etag)) => if_range.trim() == etag,
        (Some(_), None) => false,
        (None, _) => true,
    };
    let (Some(range), Some(len)) = (conditions.range.as_deref().filter(|_| fresh), body.len())
    else {
        return Ok(Ranged::Whole(body));
    };
    match byte_range(range, len) {
        Ok(Some((start, end))) => {
            response.set_status(206)?;
            response.insert_header("content-range", format!("bytes {start}-{end}/{len}"))?;
            response.insert_header("content-length", (end - start + 1).to_string())?;
            Ok(Ranged::Part(match body {
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
            }))
        }
        Err(()) => {
            response.set_status(416)?;
            response.insert_header("content-range", format!("bytes */{len}"))?;
            response.remove_header("content-type");
            response.insert_header("content-length", "0")?;
            Ok(Ranged::Part(Body::Full(Bytes::new())))
        }
        Ok(None) => Ok(Ranged::Whole(body)),
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

    #[test]
    fn a_gzip_tag_revalidates_the_identity_rendering() {
        assert!(same_document("\"abc-gz\"", "\"abc\""));
        assert!(same_document("\"abc\"", "\"abc-gz\""));
        assert!(same_document("\"abc\"", "\"abc\""));
        assert!(!same_document("\"abd-gz\"", "\"abc\""));
    }
}
