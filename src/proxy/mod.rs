//! The HTTP front, by phases: read → route → identify → admit → dispatch → respond → log. Each
//! phase is a small named step; no domain rule lives here. The handlers of npm's protocol are
//! in [`crate::api`]; the core's errors become HTTP once, in [`fault`].
//!
//! The front is a pingora `HttpServerApp` of its own on pingora's HTTP/1 and HTTP/2 sessions,
//! not pingora-proxy's `ProxyHttp`: sluice never proxies a client's request as is.

mod admit;
mod body;
mod fault;
mod identify;
mod log;
mod respond;
mod send;
mod shape;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession as Session;
use pingora::server::ShutdownWatch;
use sluice_plugin_api::{Ctx, NpmRequest};

use crate::api::{self, Answer, Call};
use crate::app::App;
use crate::route::{self, RouteError};
use shape::{header_text, Refusal};

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
    /// Whether its answer depends on who asked (see `respond::Conditions::personal`).
    personal: bool,
}

/// The HTTP front of sluice.
pub struct SluiceProxy {
    app: Arc<App>,
    next_id: AtomicU64,
}

impl SluiceProxy {
    /// A front answering from `app`.
    pub fn new(app: Arc<App>) -> Self {
        Self {
            app,
            next_id: AtomicU64::new(1),
        }
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            package: None,
            plugin: Ctx::new(self.next_id.fetch_add(1, Ordering::Relaxed)),
            route: "-",
            status: 0,
            bytes: 0,
            counted: false,
            personal: self.app.config.auth.read == crate::config::Read::Authenticated,
        }
    }

    /// The phases from route to dispatch: the answer to the request in `session`.
    async fn answer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Answer {
        let request = match self.route(session.req_header(), ctx) {
            Ok(request) => request,
            Err(refusal) => {
                if refusal.close {
                    session.set_keepalive(None);
                }
                return *refusal.answer;
            }
        };
        ctx.personal |= api::access(&request) != api::Access::Read;
        let header = session.req_header();
        let authorization = header_text(header, http::header::AUTHORIZATION);
        let address = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let identified =
            identify::identify(&self.app, &request, authorization.as_deref(), address).await;
        let who = match identified {
            Ok(who) => who,
            Err(error) => return fault::answer(Some(&request), &error),
        };
        let header = session.req_header();
        if let Some(refused) = admit::admit(&self.app, &request, &header.headers, &mut ctx.plugin) {
            return refused;
        }
        let mut call = Call {
            app: &self.app,
            request: &request,
            who: who.as_ref(),
            address,
            body: bytes::Bytes::new(),
            content_type: header_text(header, http::header::CONTENT_TYPE),
            content_encoding: header_text(header, http::header::CONTENT_ENCODING),
            gzip: shape::accepts_gzip(header.headers.get(http::header::ACCEPT_ENCODING)),
            // Tarballs go out of their files by sendfile(2) on plain HTTP/1 connections.
            files: send::can_send_files(session),
            otp: header
                .headers
                .get("npm-otp")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            cookie: shape::header_joined(header, http::header::COOKIE, "; "),
        };
        if let Err(error) = api::precheck(&call).await {
            return fault::answer(Some(&request), &error);
        }
        if let Some((limit, what)) = api::body_limit(&self.app, &request) {
            match body::read(session, limit, what).await {
                Ok(body) => call.body = body,
                Err(answer) => return answer,
            }
        }
        let answer = match &request {
            NpmRequest::Console(_) => crate::web::handle(&call).await,
            _ => api::dispatch(&call).await,
        };
        answer.unwrap_or_else(|error| fault::answer(Some(&request), &error))
    }

    /// The route phase: check the request's shape and route it.
    fn route(
        &self,
        header: &pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<NpmRequest, Refusal> {
        shape::check(header)?;
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
        .map_err(|RouteError { status, message }| Refusal::keep(Answer::error(status, message)))?;
        ctx.route = request.route();
        ctx.package = request.package().map(str::to_string);
        ctx.plugin.package = ctx.package.clone();
        Ok(request)
    }

    /// Answer the request in `session` (its header read), then respond.
    async fn respond(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        self.app.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        ctx.counted = true;
        let answer = self.answer(session, ctx).await;
        if let Some(cache) = answer.cache {
            ctx.plugin.cache_status = Some(cache);
        }
        send::send(&self.app, session, answer, ctx).await
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
        if !send::read_request(&mut session).await {
            return None;
        }
        if *shutdown.borrow() {
            // Shutting down: this request is answered, and the connection closed after.
            session.set_keepalive(None);
        }
        let mut ctx = self.new_ctx();
        match self.respond(&mut session, &mut ctx).await {
            Ok(()) => {
                log::log(&self.app, &session, None, &mut ctx);
                let settings = HttpPersistentSettings::for_session(&session);
                session
                    .finish()
                    .await
                    .ok()
                    .flatten()
                    .map(|reusable| ReusedHttpStream::from_reusable_stream(reusable, settings))
            }
            Err(error) => {
                send::failed(&mut session, &error).await;
                log::log(&self.app, &session, Some(&error), &mut ctx);
                // Not reused: the response may be incomplete.
                None
            }
        }
    }
}
