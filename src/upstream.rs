//! The upstream registry client: timeouts, size limits, conditional requests, same-origin
//! tarballs only, and a circuit breaker that stops hammering a failing upstream.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};

use crate::config::UpstreamConfig;
use crate::store::now_ms;

/// Why an upstream request failed; the proxy turns it into 502 or 504.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused, reset, DNS…
    #[error("upstream registry unreachable: {0}")]
    Connect(String),
    /// No answer (or no progress) within the timeout.
    #[error("upstream registry timed out: {0}")]
    Timeout(String),
    /// Upstream answered with an error status.
    #[error("upstream registry answered {0}")]
    Status(u16),
    /// The body was larger than the configured limit.
    #[error("upstream sent more than {limit} bytes for {what}; raise upstream.{key} if this is expected")]
    TooLarge {
        /// What was fetched.
        what: String,
        /// The limit in bytes.
        limit: u64,
        /// The config key of the limit.
        key: &'static str,
    },
    /// The body does not match the published integrity.
    #[error("tarball {0} does not match its published integrity: not stored")]
    Integrity(String),
    /// The body is not what was asked for.
    #[error("upstream sent an invalid answer: {0}")]
    Invalid(String),
    /// Too many recent failures: upstream is not asked for a while.
    #[error("upstream registry is failing; retrying in {0}s")]
    CircuitOpen(u64),
}

impl UpstreamError {
    /// Whether this is a timeout (answered 504 rather than 502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout(_))
    }

    fn from_reqwest(e: &reqwest::Error) -> Self {
        let text = error_chain(e);
        if e.is_timeout() {
            UpstreamError::Timeout(text)
        } else if e.is_connect() {
            UpstreamError::Connect(text)
        } else if e.is_redirect() {
            UpstreamError::Invalid(format!("redirect refused: {text}"))
        } else {
            UpstreamError::Connect(text)
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A packument answer.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// A (new) document with its validators.
    Document {
        /// The body, decompressed.
        bytes: Bytes,
        /// `ETag`.
        etag: Option<String>,
        /// `Last-Modified`.
        last_modified: Option<String>,
    },
    /// 304: what we hold is current.
    NotModified,
    /// 404: upstream has no such package (any more).
    NotFound,
}

/// A body streaming from upstream.
pub struct UpstreamBody {
    /// Its length, when upstream said.
    pub len: Option<u64>,
    /// Its bytes.
    pub stream: futures::stream::BoxStream<'static, Result<Bytes, UpstreamError>>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Counts of upstream traffic, for metrics.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that failed.
    pub failures: AtomicU64,
}

/// The upstream client.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
    registry: Url,
    max_packument: u64,
    max_tarball: u64,
    /// The most one request may take, body included: a trickling upstream is cut off.
    deadline: Duration,
    breaker: Arc<Breaker>,
    /// Traffic counters.
    pub stats: Arc<UpstreamStats>,
}

#[derive(Debug, Default)]
struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicU64,
}

impl Breaker {
    fn check(&self) -> Result<(), UpstreamError> {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        if until > now {
            return Err(UpstreamError::CircuitOpen((until - now).div_ceil(1000)));
        }
        Ok(())
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Count a failure; after 5 in a row, stop asking for a while (doubling, up to 30 s), or
    /// for as long as upstream's `Retry-After` says.
    fn failure(&self, retry_after: Option<Duration>) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let pause = match retry_after {
            Some(pause) => Some(pause.min(Duration::from_secs(300))),
            None if failures >= 5 => Some(Duration::from_millis(
                (500u64 << (failures - 5).min(6)).min(30_000),
            )),
            None => None,
        };
        if let Some(pause) = pause {
            self.open_until_ms
                .store(now_ms() + pause.as_millis() as u64, Ordering::Relaxed);
        }
    }
}

/// The path segment of a package name in registry URLs (`@scope%2fname`).
pub fn encode_name(name: &str) -> String {
    name.replacen('/', "%2f", 1)
}

impl Upstream {
    /// A client for the configured upstream.
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let registry = Url::parse(&config.registry)
            .map_err(|e| UpstreamError::Invalid(format!("upstream.registry: {e}")))?;
        let origin = registry.origin();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .read_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                // Follow redirects only within the upstream's own origin.
                if attempt.previous().len() < 5 && attempt.url().origin() == origin {
                    attempt.follow()
                } else {
                    attempt.error("redirect to another origin")
                }
            }))
            .build()
            .map_err(|e| UpstreamError::Invalid(error_chain(&e)))?;
        Ok(Self {
            client,
            registry,
            max_packument: config.max_packument,
            max_tarball: config.max_tarball,
            deadline: config.timeout * 10,
            breaker: Arc::default(),
            stats: Arc::default(),
        })
    }

    /// Whether the circuit breaker is open (upstream failing, not asked for a while).
    pub fn is_open(&self) -> bool {
        self.breaker.check().is_err()
    }

    /// The upstream registry's base URL.
    pub fn registry(&self) -> &Url {
        &self.registry
    }

    /// Fetch the full packument of `name`, conditionally when validators are given.
    pub async fn packument(
        &self,
        name: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        let url = self
            .registry
            .join(&encode_name(name))
            .map_err(|e| UpstreamError::Invalid(e.to_string()))?;
        let mut request = self
            .client
            .get(url)
            .header(header::ACCEPT, "application/json");
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(last_modified) = last_modified {
            request = request.header(header::IF_MODIFIED_SINCE, last_modified);
        }
        let response = self.send(request).await?;
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified),
            StatusCode::NOT_FOUND | StatusCode::GONE => return Ok(Fetched::NotFound),
            _ => {}
        }
        let header_text = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header_text(header::ETAG);
        let last_modified = header_text(header::LAST_MODIFIED);
        let content_type = header_text(header::CONTENT_TYPE).unwrap_or_default();
        if content_type.contains("html") {
            self.breaker.failure(None);
            return Err(UpstreamError::Invalid(format!(
                "the document for {name} is {content_type}, not JSON"
            )));
        }
        let bytes = self
            .body(response, self.max_packument, name, "max_packument")
            .await?;
        Ok(Fetched::Document {
            bytes,
            etag,
            last_modified,
        })
    }

    /// The URL to fetch tarball `file` of `name` from: the published `dist.tarball` when it is
    /// on the upstream's origin, else the registry's standard path. Other hosts (and schemes
    /// like `file://`) are never followed.
    pub fn tarball_url(&self, name: &str, file: &str, published: Option<&str>) -> Option<Url> {
        if let Some(mut url) = published.and_then(|p| Url::parse(p).ok()) {
            if url.origin() == self.registry.origin() {
                // A published URL never carries the credentials that `upstream.registry` does:
                // without them a registry that needs them refuses the tarball.
                url.set_username(self.registry.username()).ok()?;
                url.set_password(self.registry.password()).ok()?;
                return Some(url);
            }
        }
        self.registry.join(&format!("{name}/-/{file}")).ok()
    }

    /// Start fetching tarball `file` of `name`: its length when upstream says, and its body
    /// as a stream (cut off with an error past `upstream.max_tarball`). The caller verifies it.
    ///
    /// Returns `Ok(None)` on 404.
    pub async fn tarball(
        &self,
        name: &str,
        file: &str,
        published: Option<&str>,
    ) -> Result<Option<UpstreamBody>, UpstreamError> {
        let url = self
            .tarball_url(name, file, published)
            .ok_or_else(|| UpstreamError::Invalid(format!("no URL for {name}/-/{file}")))?;
        let response = self.send(self.client.get(url)).await?;
        if matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::GONE) {
            return Ok(None);
        }
        let limit = self.max_tarball;
        let what = format!("{name}/-/{file}");
        let too_large = move |what: &str| UpstreamError::TooLarge {
            what: what.to_string(),
            limit,
            key: "max_tarball",
        };
        let len = response.content_length();
        if len.is_some_and(|len| len > limit) {
            return Err(too_large(&what));
        }
        let breaker = self.breaker.clone();
        let stats = self.stats.clone();
        let body = response.bytes_stream().boxed();
        let stream = futures::stream::unfold(Some((body, 0u64)), move |state| {
            let breaker = breaker.clone();
            let stats = stats.clone();
            let what = what.clone();
            async move {
                let (mut body, seen) = state?;
                match body.next().await {
                    None => {
                        breaker.success();
                        None
                    }
                    Some(Ok(chunk)) => {
                        let seen = seen + chunk.len() as u64;
                        if seen > limit {
                            return Some((Err(too_large(&what)), None));
                        }
                        Some((Ok(chunk), Some((body, seen))))
                    }
                    Some(Err(e)) => {
                        stats.failures.fetch_add(1, Ordering::Relaxed);
                        breaker.failure(None);
                        Some((Err(UpstreamError::from_reqwest(&e)), None))
                    }
                }
            }
        })
        .boxed();
        Ok(Some(UpstreamBody { len, stream }))
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.breaker.check()?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = match request.timeout(self.deadline).send().await {
            Ok(response) => response,
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.failure(None);
                return Err(UpstreamError::from_reqwest(&e));
            }
        };
        let status = response.status();
        if status.is_success()
            || status == StatusCode::NOT_MODIFIED
            || status == StatusCode::NOT_FOUND
            || status == StatusCode::GONE
        {
            return Ok(response);
        }
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            self.breaker.failure(retry_after);
        }
        Err(UpstreamError::Status(status.as_u16()))
    }

    /// Relay a request to upstream as it is (audit, keys, attestations): `body` for POST.
    ///
    /// Returns upstream's status, content type and (decompressed) body, whatever the status.
    pub async fn relay(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(u16, String, Bytes), UpstreamError> {
        let url = self
            .registry
            .join(path.trim_start_matches('/'))
            .map_err(|e| UpstreamError::Invalid(e.to_string()))?;
        let mut request = self
            .client
            .request(method, url)
            .header(header::ACCEPT, "application/json");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(content_encoding) = content_encoding {
            request = request.header(header::CONTENT_ENCODING, content_encoding);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        self.breaker.check()?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = request.timeout(self.deadline).send().await.map_err(|e| {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            self.breaker.failure(None);
            UpstreamError::from_reqwest(&e)
        })?;
        let status = response.status().as_u16();
        if status >= 500 {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let body = self
            .body(response, self.max_packument, path, "max_packument")
            .await?;
        Ok((status, content_type, body))
    }

    /// GET a JSON document (the replication feed), at most `max_packument` bytes.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, UpstreamError> {
        // What errors quote: the URL without the credentials it may carry.
        let shown = crate::config::redact_url(url);
        let url = Url::parse(url).map_err(|e| UpstreamError::Invalid(format!("{shown}: {e}")))?;
        let response = self
            .send(
                self.client
                    .get(url.clone())
                    .header(header::ACCEPT, "application/json"),
            )
            .await?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status().as_u16()));
        }
        let bytes = self
            .body(response, self.max_packument, &shown, "max_packument")
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| UpstreamError::Invalid(format!("{shown} is not JSON: {e}")))
    }

    /// Read a whole body, at most `limit` bytes after decompression.
    async fn body(
        &self,
        response: reqwest::Response,
        limit: u64,
        what: &str,
        key: &'static str,
    ) -> Result<Bytes, UpstreamError> {
        let too_large = || UpstreamError::TooLarge {
            what: what.to_string(),
            limit,
            key,
        };
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let expected = response.content_length();
        let mut body = BytesMut::with_capacity(expected.unwrap_or(0).min(limit) as usize);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    self.breaker.failure(None);
                    return Err(UpstreamError::from_reqwest(&e));
                }
            };
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        self.breaker.success();
        Ok(body.freeze())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn upstream() -> Upstream {
        crate::crypto::install_crypto_provider();
        Upstream::new(&UpstreamConfig {
            registry: "http://127.0.0.1:9/r/".into(),
            timeout: Duration::from_secs(1),
            max_packument: 1000,
            max_tarball: 1000,
            concurrency: 1,
            changes: None,
        })
        .unwrap()
    }

    #[test]
    fn tarballs_come_from_the_upstream_origin_only() {
        let up = upstream();
        let same = up.tarball_url("a", "a-1.tgz", Some("http://127.0.0.1:9/r/a/-/a-1.tgz"));
        assert_eq!(same.unwrap().as_str(), "http://127.0.0.1:9/r/a/-/a-1.tgz");
        for published in [
            "http://169.254.169.254/latest/meta-data",
            "file:///etc/passwd",
            "https://127.0.0.1:9/r/a/-/a-1.tgz",
            "http://other.invalid/a/-/a-1.tgz",
        ] {
            let url = up.tarball_url("a", "a-1.tgz", Some(published)).unwrap();
            assert_eq!(
                url.as_str(),
                "http://127.0.0.1:9/r/a/-/a-1.tgz",
                "{published}"
            );
        }
        let scoped = up.tarball_url("@s/a", "a-1.tgz", None).unwrap();
        assert_eq!(scoped.as_str(), "http://127.0.0.1:9/r/@s/a/-/a-1.tgz");
    }

    #[test]
    fn the_breaker_opens_after_repeated_failures_and_honours_retry_after() {
        let breaker = Breaker::default();
        for _ in 0..4 {
            breaker.failure(None);
            assert!(breaker.check().is_ok());
        }
        breaker.failure(None);
        assert!(matches!(
            breaker.check(),
            Err(UpstreamError::CircuitOpen(_))
        ));
        let breaker = Breaker::default();
        breaker.failure(Some(Duration::from_secs(7)));
        assert!(matches!(breaker.check(), Err(UpstreamError::CircuitOpen(s)) if s >= 6));
    }
}
