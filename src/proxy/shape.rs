//! The read phase's checks of a request's shape, before it is routed: no forward-proxy forms,
//! a bounded target and bounded headers.

use crate::api::Answer;

/// The longest request target accepted.
const MAX_TARGET: usize = 8 << 10;

/// The most request header bytes accepted.
const MAX_HEADERS: usize = 32 << 10;

/// An answer to send at once instead of handling the request, and whether to close the
/// connection after it.
pub struct Refusal {
    /// The answer (boxed: a refusal travels in a `Result`).
    pub answer: Box<Answer>,
    /// Whether the connection closes after it.
    pub close: bool,
}

impl Refusal {
    /// `answer`, keeping the connection.
    pub fn keep(answer: Answer) -> Self {
        Self {
            answer: Box::new(answer),
            close: false,
        }
    }

    /// `answer`, closing the connection after it.
    pub fn close(answer: Answer) -> Self {
        Self {
            answer: Box::new(answer),
            close: true,
        }
    }
}

/// Whether `header` is a request sluice takes (CONNECT was refused as it was read): not an
/// absolute-form target (sluice
/// is not a forward proxy), a target of at most 8 KiB and at most 32 KiB of headers.
pub fn check(header: &pingora::http::RequestHeader) -> Result<(), Refusal> {
    let raw_path = header.raw_path();
    // HTTP/2 carries the scheme and authority as pseudo-headers of every request; over
    // HTTP/1 they mean an absolute-form target (a forward-proxy request).
    let absolute = header.version < http::Version::HTTP_2
        && (header.uri.authority().is_some() || header.uri.scheme().is_some());
    if absolute || !raw_path.starts_with(b"/") {
        return Err(Refusal::keep(Answer::error(
            400,
            "absolute-form request targets are refused: sluice is not a forward proxy",
        )));
    }
    if raw_path.len() > MAX_TARGET {
        return Err(Refusal::close(Answer::error(
            414,
            "the request target is longer than 8 KiB",
        )));
    }
    let header_bytes: usize = header
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADERS {
        return Err(Refusal::close(Answer::error(
            431,
            "the request headers are larger than 32 KiB",
        )));
    }
    Ok(())
}

/// Whether an `Accept-Encoding` header allows gzip.
pub fn accepts_gzip(value: Option<&http::HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|part| {
        let mut pieces = part.split(';');
        let coding = pieces.next().unwrap_or("").trim();
        let refused = pieces.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// A request header's value as text, if present and printable.
pub fn header_text(
    header: &pingora::http::RequestHeader,
    name: http::header::HeaderName,
) -> Option<String> {
    header
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Every value of the header `name`, joined by `separator` (HTTP/2 sends each cookie apart).
pub fn header_joined(
    header: &pingora::http::RequestHeader,
    name: http::header::HeaderName,
    separator: &str,
) -> Option<String> {
    let values: Vec<&str> = header
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(separator))
}
