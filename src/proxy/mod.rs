//! The HTTP front: pingora's HTTP session (HTTP/1 and HTTP/2) serves the request, and sluice
//! answers it from the core; sluice never proxies a client's request as is. The front is a
//! pingora `HttpServerApp` of its own, not pingora-proxy's `ProxyHttp`: with nothing to proxy,
//! the proxy's per-request state (its session wrapper, cache state, module contexts, a
//! shutdown waiter) was work on every request for nothing.

mod respond;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession as Session;
use pingora::server::ShutdownWatch;
use serde_json::json;
use sluice_plugin_api::{CacheStatus, Ctx, NpmRequest};

use crate::app::App;
use crate::conn::Guarded;
use crate::core::accounts;
use crate::core::Error as CoreError;
use crate::route::{self, RouteError, CORGI};
use crate::upstream::UpstreamError;
use respond::{Answer, Body};

/// Zeros written in place of a body that the connection sends from a file (never sent, never
/// touched past its first bytes: calloc's untouched pages take no memory). 8 MiB: a tarball
/// goes out in as few `sendfile(2)` calls as the socket takes, not one per MiB.
static PLACEHOLDER: std::sync::LazyLock<Bytes> =
    std::sync::LazyLock::new(|| Bytes::from(vec![0u8; 8 << 20]));

/// The connection wrapper under `session`, for an HTTP/1 connection.
fn guarded(session: &Session) -> Option<&Guarded> {
    session.stream()?.as_any().downcast_ref::<Guarded>()
}

/// The per-request state.
pub struct RequestCtx {
    started: Instant,
    package: Option<String>,
    plugin: Ctx,
    route: &'static str,
    status: u16,
    bytes: usize,
    /// Whether this request counts in the metrics' `in_flight`.
    counted: bool,
}

/// The HTTP front of sluice.
pub struct SluiceProxy {
    app: Arc<App>,
    next_id: AtomicU64,
}

impl SluiceProxy {
    /// A proxy answering from `app`.
    pub fn new(app: Arc<App>) -> Self {
        Self {
            app,
            next_id: AtomicU64::new(1),
        }
    }

    async fn answer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Answer {
        let (request, gzip) = match self.admit(session.req_header(), ctx) {
            Ok(admitted) => admitted,
            Err(refused) => {
                let (answer, close) = *refused;
                if close {
                    session.set_keepalive(None);
                }
                return answer;
            }
        };
        if let NpmRequest::Audit { path } = &request {
            return self.audit(session, path).await;
        }
        // Who asks: reads of an anonymous registry go on whatever the credentials say.
        let authorization = header_text(session.req_header(), http::header::AUTHORIZATION);
        let exempt = matches!(
            request,
            NpmRequest::Ping | NpmRequest::Login { .. } | NpmRequest::WebLogin
        );
        let reading = !matches!(
            request,
            NpmRequest::Publish { .. }
                | NpmRequest::DistTag { .. }
                | NpmRequest::Unpublish { .. }
                | NpmRequest::UnpublishTarball { .. }
                | NpmRequest::Whoami
                | NpmRequest::Logout { .. }
                | NpmRequest::Tokens
                | NpmRequest::CreateToken
                | NpmRequest::RevokeToken { .. }
        );
        let open = self.app.config.auth.read == crate::config::Read::Anonymous;
        let address = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // Reads of an anonymous registry need no identity: credentials are not even checked
        // (a stale password in a client's config neither slows its install nor locks it out).
        let identified = if reading && open && !exempt {
            Ok(None)
        } else {
            self.app
                .auth
                .identify(authorization.as_deref(), address)
                .await
        };
        let who = match identified {
            Ok(who) => who,
            Err(_) if exempt || (reading && open) => None,
            Err(error) => return reply(accounts::refused(error)),
        };
        if who.is_none() && !open && !exempt {
            return reply(accounts::login_first());
        }
        if let Some(answer) = self.account(session, &request, who.as_ref()).await {
            return answer;
        }
        // Tarballs go out of their files by sendfile(2) on plain HTTP/1 connections.
        let files = guarded(session).is_some_and(Guarded::can_send_files);
        self.dispatch(&request, gzip, files, ctx).await
    }

    /// The account and publish routes, which read a body and need to know who asks.
    async fn account(
        &self,
        session: &mut Session,
        request: &NpmRequest,
        who: Option<&crate::auth::Identity>,
    ) -> Option<Answer> {
        let auth = &self.app.auth;
        let limit = self.app.config.publish.max_size as usize;
        if let NpmRequest::Publish { name }
        | NpmRequest::DistTag { name, .. }
        | NpmRequest::Unpublish { name, .. }
        | NpmRequest::UnpublishTarball { name, .. } = request
        {
            if !self.app.publisher.is_private(name) {
                return Some(Answer::error(
                    405,
                    format!(
                        "{name} is not published here (only the scopes in [publish] scopes and \
                         the names in [publish] packages are): for it sluice is a read-only mirror"
                    ),
                ));
            }
        }
        let answer = match request {
            NpmRequest::WebLogin => reply((
                404,
                json!({ "error": "web login is not offered here: npm falls back to the legacy login (npm login --auth-type=legacy)" }),
            )),
            NpmRequest::Login { name } => {
                let address = session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip().to_string());
                match read_body(session, 64 << 10, "login").await {
                    Ok(body) => reply(accounts::login(auth, name, &body, address.as_deref()).await),
                    Err(answer) => answer,
                }
            }
            NpmRequest::Whoami => reply(accounts::whoami(who)),
            NpmRequest::Logout { token } => reply(accounts::logout(auth, who, token).await),
            NpmRequest::Tokens => reply(accounts::tokens(auth, who).await),
            NpmRequest::CreateToken => match read_body(session, 64 << 10, "token").await {
                Ok(body) => reply(accounts::create_token(auth, who, &body).await),
                Err(answer) => answer,
            },
            NpmRequest::RevokeToken { id } => reply(accounts::revoke_token(auth, who, id).await),
            NpmRequest::Publish { name } => {
                let Some(who) = who else {
                    return Some(reply(accounts::login_first()));
                };
                match read_body(session, limit, "publish").await {
                    Ok(body) => match self
                        .app
                        .publisher
                        .publish(name, &body, who, &auth.email(&who.user).unwrap_or_default())
                        .await
                    {
                        Ok(value) => Answer::json(200, &value),
                        Err(e) => Answer::error(e.status(), e.to_string()),
                    },
                    Err(answer) => answer,
                }
            }
            NpmRequest::Unpublish { name, all, rev } => {
                let Some(who) = who else {
                    return Some(reply(accounts::login_first()));
                };
                let body = if *all {
                    None
                } else {
                    match read_body(session, limit, "unpublish").await {
                        Ok(body) => Some(body),
                        Err(answer) => return Some(answer),
                    }
                };
                let email_of = |user: &str| auth.email(user);
                match self
                    .app
                    .publisher
                    .replace(name, rev, body.as_deref(), who, &email_of)
                    .await
                {
                    Ok(value) => Answer::json(200, &value),
                    Err(e) => Answer::error(e.status(), e.to_string()),
                }
            }
            NpmRequest::UnpublishTarball { name, file, rev } => {
                let Some(who) = who else {
                    return Some(reply(accounts::login_first()));
                };
                match self
                    .app
                    .publisher
                    .unpublish_tarball(name, file, rev, who)
                    .await
                {
                    Ok(value) => Answer::json(200, &value),
                    Err(e) => Answer::error(e.status(), e.to_string()),
                }
            }
            NpmRequest::User { name } => match auth.email(name) {
                Some(email) => Answer::json(
                    200,
                    &json!({ "_id": format!("org.couchdb.user:{name}"), "_rev": "1-0", "name": name, "email": email, "type": "user", "roles": [] }),
                ),
                None => Answer::error(404, format!("{name} is not a user of this registry")),
            },
            NpmRequest::Visibility { name } => {
                if !self.app.publisher.is_private(name) {
                    return None;
                }
                let public = self.app.config.auth.read == crate::config::Read::Anonymous;
                Answer::json(200, &json!({ "public": public }))
            }
            NpmRequest::Passthrough {
                package: Some(name),
                path,
            } if self.app.publisher.is_private(name) => {
                // Never asked of upstream; the attestations are kept here.
                let spec = path
                    .strip_prefix("-/npm/v1/attestations/")
                    .map(|spec| spec.replacen("%2f", "/", 1));
                match spec.as_deref().and_then(|s| s.rsplit_once('@')) {
                    Some((name, version)) => {
                        match self.app.publisher.attestations(name, version).await {
                            Ok(value) => Answer::json(200, &value),
                            Err(e) => Answer::error(e.status(), e.to_string()),
                        }
                    }
                    None => Answer::error(404, format!("{name} is published here: no such route")),
                }
            }
            NpmRequest::DistTag { name, tag, remove } => {
                let Some(who) = who else {
                    return Some(reply(accounts::login_first()));
                };
                let version = if *remove {
                    None
                } else {
                    match read_body(session, 64 << 10, "dist-tag").await {
                        Ok(body) => match serde_json::from_slice::<serde_json::Value>(&body) {
                            Ok(serde_json::Value::String(v)) => Some(v),
                            _ => {
                                return Some(Answer::error(
                                    400,
                                    "the body of a dist-tag is the version, as a JSON string",
                                ))
                            }
                        },
                        Err(answer) => return Some(answer),
                    }
                };
                match self
                    .app
                    .publisher
                    .dist_tag(name, tag, version.as_deref(), who)
                    .await
                {
                    Ok(value) => Answer::json(200, &value),
                    Err(e) => Answer::error(e.status(), e.to_string()),
                }
            }
            _ => return None,
        };
        Some(answer)
    }

    /// Check the request's shape, route it and run the plugins: `on_request`, then the
    /// admission rule for the package it is about.
    ///
    /// Returns the request and whether the client takes gzip, or the answer to send at once
    /// (and whether to close the connection after it).
    fn admit(
        &self,
        header: &pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(NpmRequest, bool), Box<(Answer, bool)>> {
        if header.method == http::Method::CONNECT {
            return Err(refuse(
                Answer::error(
                    405,
                    "CONNECT is not supported: sluice is not a forward proxy",
                ),
                false,
            ));
        }
        let raw_path = header.raw_path();
        // HTTP/2 carries the scheme and authority as pseudo-headers of every request; over
        // HTTP/1 they mean an absolute-form target (a forward-proxy request).
        let absolute = header.version < http::Version::HTTP_2
            && (header.uri.authority().is_some() || header.uri.scheme().is_some());
        if absolute || !raw_path.starts_with(b"/") {
            return Err(refuse(
                Answer::error(
                    400,
                    "absolute-form request targets are refused: sluice is not a forward proxy",
                ),
                false,
            ));
        }
        if raw_path.len() > MAX_TARGET {
            return Err(refuse(
                Answer::error(414, "the request target is longer than 8 KiB"),
                true,
            ));
        }
        let header_bytes: usize = header
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if header_bytes > MAX_HEADERS {
            return Err(refuse(
                Answer::error(431, "the request headers are larger than 32 KiB"),
                true,
            ));
        }
        let accept = header
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let request = route::route(
            header.method.as_str(),
            header.uri.path(),
            header.uri.query(),
            accept,
        )
        .map_err(|RouteError { status, message }| refuse(Answer::error(status, message), false))?;
        ctx.route = request.route();
        ctx.package = request.package().map(str::to_string);
        ctx.plugin.package = ctx.package.clone();
        let host = &self.app.host;
        let private = request
            .package()
            .is_some_and(|name| self.app.publisher.is_private(name));
        let refusal = host
            .on_request(&request, &header.headers, &mut ctx.plugin)
            .and_then(|refusal| match (refusal, request.package()) {
                // Packages published here are the company's own: no whitelist, rule or pin
                // applies to them.
                (None, Some(_)) if private => Ok(None),
                (None, Some(name)) => host.admit(name, &mut ctx.plugin),
                (refusal, _) => Ok(refusal),
            });
        match refusal {
            Ok(None) => {}
            Ok(Some(response)) => return Err(refuse(Answer::plugin(response), false)),
            Err(error) => {
                tracing::error!(%error, "plugin failed");
                return Err(refuse(Answer::error(500, error.to_string()), false));
            }
        }
        let gzip = accepts_gzip(header.headers.get(http::header::ACCEPT_ENCODING));
        Ok((request, gzip))
    }

    /// Relay `npm audit`'s POST to upstream with its (possibly gzip-encoded) body.
    async fn audit(&self, session: &mut Session, path: &str) -> Answer {
        let header = session.req_header();
        let text = |name| header_text(header, name);
        let content_type = text(http::header::CONTENT_TYPE);
        let content_encoding = text(http::header::CONTENT_ENCODING);
        let body = match read_body(session, MAX_AUDIT_BODY, "audit").await {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        let (body, content_encoding) = if path.ends_with("/advisories/bulk") {
            match self.bulk_for_upstream(&body, content_encoding.as_deref()) {
                Ok(body) => (body, None),
                Err(message) => return Answer::error(400, message),
            }
        } else {
            (body.freeze(), content_encoding)
        };
        match self
            .app
            .upstream
            .relay(
                reqwest::Method::POST,
                path,
                content_type.as_deref(),
                content_encoding.as_deref(),
                Some(body),
            )
            .await
        {
            Ok((status, content_type, body)) => Answer::relayed(status, content_type, body),
            Err(e) => Answer::error(
                503,
                format!("npm audit needs the upstream registry, which cannot be reached: {e}"),
            ),
        }
    }

    /// The bulk advisory request as sent upstream: only packages the policy serves, so names
    /// of private scopes (scope-pin) or denied packages never leave.
    fn bulk_for_upstream(
        &self,
        body: &[u8],
        encoding: Option<&str>,
    ) -> Result<bytes::Bytes, String> {
        use std::io::Read as _;
        let mut plain = Vec::new();
        match encoding.map(str::trim) {
            None | Some("identity") => plain.extend_from_slice(body),
            Some(e) if e.eq_ignore_ascii_case("gzip") => {
                flate2::read::GzDecoder::new(body)
                    .take(MAX_AUDIT_BODY as u64 * 8)
                    .read_to_end(&mut plain)
                    .map_err(|e| format!("the audit body is not valid gzip: {e}"))?;
            }
            Some(other) => return Err(format!("unsupported content-encoding `{other}`")),
        }
        let mut doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&plain)
            .map_err(|e| format!("the audit body is not a JSON object: {e}"))?;
        // Private names never leave (they would tell upstream the company's internal names).
        doc.retain(|name, _| !self.app.publisher.is_private(name) && self.app.host.admits(name));
        Ok(bytes::Bytes::from(
            serde_json::Value::Object(doc).to_string(),
        ))
    }

    /// Relay a GET (signing keys, attestations), cached for a while when it succeeds.
    async fn relay(&self, path: &str) -> Answer {
        if let Some((status, content_type, body)) = self.app.relayed.get(path).await {
            return Answer::relayed(status, content_type, body);
        }
        match self
            .app
            .upstream
            .relay(reqwest::Method::GET, path, None, None, None)
            .await
        {
            Ok((status, content_type, body)) => {
                if status == 200 {
                    self.app
                        .relayed
                        .insert(
                            path.to_string(),
                            (status, content_type.clone(), body.clone()),
                        )
                        .await;
                }
                Answer::relayed(status, content_type, body)
            }
            Err(e) => Answer::error(503, format!("the upstream registry cannot be reached: {e}")),
        }
    }

    async fn dispatch(
        &self,
        request: &NpmRequest,
        gzip: bool,
        files: bool,
        ctx: &mut RequestCtx,
    ) -> Answer {
        let app = &self.app;
        let result = match request {
            NpmRequest::Packument { name, abbreviated } => app
                .renders
                .packument(name, *abbreviated, gzip)
                .await
                .map(|(rendered, status)| {
                    ctx.plugin.cache_status = Some(status);
                    let content_type = if *abbreviated {
                        CORGI
                    } else {
                        "application/json"
                    };
                    Answer::rendered(rendered, content_type, gzip).with_vary()
                }),
            NpmRequest::Version { name, spec } => {
                app.renders.version(name, spec).await.map(|(v, status)| {
                    ctx.plugin.cache_status = Some(status);
                    Answer::json(200, &v)
                })
            }
            NpmRequest::DistTags { name } => {
                app.renders.dist_tags(name).await.map(|(v, status)| {
                    ctx.plugin.cache_status = Some(status);
                    Answer::json(200, &v)
                })
            }
            NpmRequest::Tarball { name, file } => {
                app.tarballs
                    .serve(name, file, files)
                    .await
                    .map(|(served, status)| {
                        ctx.plugin.cache_status = Some(status);
                        Answer::tarball(served)
                    })
            }
            NpmRequest::Ping => Ok(Answer::json(200, &json!({}))),
            NpmRequest::Metrics => Ok(Answer::text(
                "text/plain; version=0.0.4",
                crate::observe::metrics::render(&app.metrics, &app.snapshot().await),
            )),
            NpmRequest::StatusPage => Ok(Answer::text(
                "text/html; charset=utf-8",
                crate::observe::metrics::page(&app.metrics, &app.snapshot().await),
            )),
            NpmRequest::Passthrough { path, .. } => Ok(self.relay(path).await),
            NpmRequest::Audit { .. } => Ok(Answer::error(405, "audit requests are POSTs")),
            NpmRequest::Visibility { name } => Ok(Answer::error(
                404,
                format!("{name} is not published here: its visibility is upstream's"),
            )),
            NpmRequest::Login { .. }
            | NpmRequest::WebLogin
            | NpmRequest::Whoami
            | NpmRequest::Logout { .. }
            | NpmRequest::Tokens
            | NpmRequest::CreateToken
            | NpmRequest::RevokeToken { .. }
            | NpmRequest::Publish { .. }
            | NpmRequest::Unpublish { .. }
            | NpmRequest::UnpublishTarball { .. }
            | NpmRequest::User { .. }
            | NpmRequest::DistTag { .. } => Err(CoreError::Internal(
                "an account route reached the package dispatch".into(),
            )),
            NpmRequest::Status => Ok(Answer::json(
                200,
                &crate::observe::status::status(&app.metrics, &app.snapshot().await),
            )),
            NpmRequest::Search(query) => Ok(Answer::json(
                200,
                &crate::core::search::search(app.store.as_ref(), &app.host, &app.renders, query)
                    .await,
            )),
        };
        result.unwrap_or_else(|error| error_answer(request, &error))
    }
}

/// An answer to send at once, and whether to close the connection after it.
fn refuse(answer: Answer, close: bool) -> Box<(Answer, bool)> {
    Box::new((answer, close))
}

/// A [`accounts::Reply`] as an answer; a 401 says how to authenticate.
fn reply((status, value): accounts::Reply) -> Answer {
    if status == 401 {
        let message = value["error"]
            .as_str()
            .unwrap_or("log in first")
            .to_string();
        return Answer::plugin(
            sluice_plugin_api::Response::error(401, message).with_header(
                "www-authenticate",
                "Bearer realm=\"sluice\", Basic realm=\"sluice\"",
            ),
        );
    }
    Answer::json(status, &value)
}

/// Read a request body of at most `limit` bytes; a larger one is 413 (the connection closes
/// without reading the rest), a slow one 408.
async fn read_body(
    session: &mut Session,
    limit: usize,
    what: &str,
) -> Result<bytes::BytesMut, Answer> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        session.set_keepalive(None);
        return Err(Answer::error(
            413,
            format!("the {what} request is larger than {limit} bytes"),
        ));
    }
    let mut body = bytes::BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    session.set_keepalive(None);
                    return Err(Answer::error(
                        413,
                        format!("the {what} request is larger than {limit} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if timed_out(&e) => {
                session.set_keepalive(None);
                return Err(Answer::error(
                    408,
                    "the request body did not arrive in time (server.body_timeout)",
                ));
            }
            Err(e) => {
                return Err(Answer::error(
                    400,
                    format!("cannot read the request body: {e}"),
                ))
            }
        }
    }
}

/// A request header's value as text, if present and printable.
fn header_text(
    header: &pingora::http::RequestHeader,
    name: http::header::HeaderName,
) -> Option<String> {
    header
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The longest request target accepted.
const MAX_TARGET: usize = 8 << 10;

/// The most request header bytes accepted.
const MAX_HEADERS: usize = 32 << 10;

/// Whether `error` is a client running out of time (see `deadline`).
fn timed_out(error: &pingora::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        if let Some(inner) = e.downcast_ref::<pingora::Error>() {
            if let Some(root) = inner.cause.as_deref() {
                cause = Some(root);
                continue;
            }
        }
        cause = e.source();
    }
    false
}

/// The largest `npm audit` body relayed.
const MAX_AUDIT_BODY: usize = 16 << 20;

/// Whether an `Accept-Encoding` header allows gzip.
fn accepts_gzip(value: Option<&http::HeaderValue>) -> bool {
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

fn error_answer(request: &NpmRequest, error: &CoreError) -> Answer {
    let what = request.package().unwrap_or("the request");
    match error {
        CoreError::NotFound(message) => Answer::error(404, message.clone()),
        CoreError::Refused(response) => Answer::plugin(response.clone()),
        CoreError::Upstream(UpstreamError::Integrity(_)) => Answer::error(502, error.to_string()),
        CoreError::Upstream(e) if e.is_timeout() => Answer::error(
            504,
            format!("{e}; {what} is not in sluice's store yet, try again later"),
        ),
        CoreError::Upstream(e) => Answer::error(
            502,
            format!("{e}; {what} is not in sluice's store yet, try again later"),
        ),
        CoreError::Packument { .. } => Answer::error(502, error.to_string()),
        CoreError::Store(e) => {
            tracing::error!(error = %e, "store failure");
            Answer::error(503, format!("sluice's store failed ({e}); try again later"))
        }
        CoreError::Plugin(e) => Answer::error(500, e.to_string()),
        CoreError::Internal(e) => {
            tracing::error!(error = %e, "internal error");
            Answer::error(500, error.to_string())
        }
    }
}

#[async_trait]
impl HttpServerApp for SluiceProxy {
    /// One request: read its header, answer it, log it, and hand the connection back for the
    /// next one when it can be reused.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: Session,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            // The client closed before a request.
            Ok(false) => return None,
            Err(error) => {
                if matches!(error.etype, ErrorType::InvalidHTTPHeader) {
                    tracing::debug!(%error, "bad request header");
                    let _ = session.respond_error(400).await;
                }
                session.shutdown().await;
                return None;
            }
        }
        if session.req_header().method == http::Method::CONNECT {
            let _ = session.respond_error(405).await;
            session.shutdown().await;
            return None;
        }
        if *shutdown.borrow() {
            // Shutting down: this request is answered, and the connection closed after.
            session.set_keepalive(None);
        }
        let mut ctx = self.new_ctx();
        match self.respond(&mut session, &mut ctx).await {
            Ok(()) => {
                self.logging(&session, None, &mut ctx);
                let settings = HttpPersistentSettings::for_session(&session);
                session
                    .finish()
                    .await
                    .ok()
                    .flatten()
                    .map(|reusable| ReusedHttpStream::from_reusable_stream(reusable, settings))
            }
            Err(error) => {
                // pingora-proxy's answer to a failed request: its status when it names one, 400
                // for a bad request, 502 for an upstream's failure, 500 for sluice's own, none
                // on a dead connection.
                let code = match (error.etype(), error.esource()) {
                    (ErrorType::HTTPStatus(code), _) => *code,
                    (
                        ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                        _,
                    ) => 0,
                    (_, ErrorSource::Downstream) => 400,
                    (_, ErrorSource::Upstream) => 502,
                    _ => 500,
                };
                if code > 0 {
                    // Nothing is written when the response's header already went out.
                    let _ = session.respond_error(code).await;
                }
                let header = session.req_header();
                if !timed_out(&error) && code != 0 {
                    tracing::error!(
                        status = code,
                        method = %header.method,
                        path = %header.uri.path(),
                        "request failed: {error}"
                    );
                } else {
                    tracing::debug!(method = %header.method, path = %header.uri.path(), "request cut off: {error}");
                }
                self.logging(&session, Some(&error), &mut ctx);
                // Not reused: the response may be incomplete.
                None
            }
        }
    }
}

impl SluiceProxy {
    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            package: None,
            plugin: Ctx::new(self.next_id.fetch_add(1, Ordering::Relaxed)),
            route: "-",
            status: 0,
            bytes: 0,
            counted: false,
        }
    }

    /// Answer the request in `session` (its header read).
    async fn respond(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        self.app.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        ctx.counted = true;
        let answer = self.answer(session, ctx).await;
        let header = session.req_header();
        let head = header.method == http::Method::HEAD;
        let text = |name| header_text(header, name);
        let conditions = respond::Conditions {
            if_none_match: text(http::header::IF_NONE_MATCH),
            if_modified_since: text(http::header::IF_MODIFIED_SINCE),
            range: text(http::header::RANGE),
            if_range: text(http::header::IF_RANGE),
        };
        let (mut response, body) = answer.into_response(&conditions)?;
        if let Some(status) = ctx.plugin.cache_status {
            response.insert_header(
                "x-cache-status",
                http::HeaderValue::from_static(status.as_str()),
            )?;
        }
        let mut extra = http::HeaderMap::new();
        self.app
            .host
            .on_response(response.status.as_u16(), &mut extra, &ctx.plugin);
        for (name, value) in &extra {
            response.insert_header(name.clone(), value.clone())?;
        }
        // Read a small request body we did not use, so the connection stays usable; a large
        // one closes the connection instead.
        if !session.is_body_empty() {
            let small = session
                .req_header()
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|len| len <= 1 << 20);
            if !small || session.drain_request_body().await.is_err() {
                session.set_keepalive(None);
            }
        }
        ctx.status = response.status.as_u16();
        let send_body = !head && !body.is_empty();
        session.write_response_header(Box::new(response)).await?;
        if !send_body {
            return session.finish_body().await;
        }
        match body {
            Body::Full(bytes) => {
                ctx.bytes = bytes.len();
                session.write_response_body(bytes, true).await?;
            }
            Body::File { file, offset, len } => {
                ctx.bytes = len as usize;
                // A file body is made only for a connection that can take one (`files`).
                let sent = guarded(session).map(|c| c.send_file(file, offset, len));
                if !matches!(sent, Some(Ok(()))) {
                    session.set_keepalive(None);
                    return pingora::Error::e_explain(
                        ErrorType::InternalError,
                        "a file body for a connection that cannot send files",
                    );
                }
                // The connection sends the file in place of these bytes.
                let mut left = len;
                while left > 0 {
                    let n = left.min(PLACEHOLDER.len() as u64) as usize;
                    left -= n as u64;
                    session
                        .write_response_body(PLACEHOLDER.slice(..n), left == 0)
                        .await?;
                }
            }
            Body::Stream { mut stream, .. } => {
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(chunk) => {
                            ctx.bytes += chunk.len();
                            session.write_response_body(chunk, false).await?;
                        }
                        Err(error) => {
                            // The body is not whole: abort the response (the connection
                            // closes), never end it as if it were complete.
                            tracing::warn!(package = ctx.package.as_deref(), %error, "response aborted");
                            session.set_keepalive(None);
                            return pingora::Error::e_explain(
                                ErrorType::HTTPStatus(502),
                                "body aborted: not whole",
                            );
                        }
                    }
                }
                session.finish_body().await?;
            }
        }
        Ok(())
    }

    /// The request's metrics and access log line.
    fn logging(&self, session: &Session, error: Option<&pingora::Error>, ctx: &mut RequestCtx) {
        let header = session.req_header();
        let cache = ctx.plugin.cache_status.map_or("-", CacheStatus::as_str);
        self.app.metrics.record(
            ctx.route,
            ctx.status,
            cache,
            ctx.bytes,
            ctx.package.as_deref(),
        );
        tracing::info!(
            target: "sluice::access",
            id = ctx.plugin.request_id,
            method = %header.method,
            path = %header.uri.path(),
            route = ctx.route,
            status = ctx.status,
            cache,
            bytes = ctx.bytes,
            ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            error = error.map(|e| e.to_string()),
            "request"
        );
        // Counted out after its log line: a shutdown waiting for it loses neither.
        if std::mem::take(&mut ctx.counted) {
            self.app.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
