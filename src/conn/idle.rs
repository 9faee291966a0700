//! Idle parking: an HTTP/1 connection is served one request at a time, and between requests it
//! waits for its next request's first byte in a small future that holds only its stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};

use super::deadline::{Guarded, Limits, Phase};
use super::h2::H2App;

/// A [`ServerApp`] that runs `app` on [`Guarded`] streams.
pub struct Deadlines<A> {
    app: Arc<A>,
    /// `app` as pingora's HTTP/2 server runs it.
    h2: Arc<H2App<A>>,
    limits: Limits,
    expired: Arc<AtomicU64>,
    farewell: &'static [u8],
}

impl<A: HttpServerApp> Deadlines<A> {
    /// Guard every connection `app` serves with `limits`; `expired` counts connections closed
    /// for running out of time, and `farewell` is written to a client whose request header ran
    /// out of time (the owner's HTTP answer: this layer writes none of its own).
    pub fn new(
        app: Arc<A>,
        limits: Limits,
        expired: Arc<AtomicU64>,
        farewell: &'static [u8],
    ) -> Self {
        Self {
            h2: Arc::new(H2App::new(app.clone())),
            app,
            limits,
            expired,
            farewell,
        }
    }
}

/// How long an idle keep-alive connection is kept (pingora's own default).
pub(super) const KEEPALIVE: Duration = Duration::from_secs(60);

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Deadlines<A> {
    /// HTTP/1 connections are served here, one request at a time: between requests a
    /// connection waits for its next request's first byte in this small future, holding only
    /// its stream, and pingora's session (buffers and state, tens of KiB) exists only while a
    /// request is being served. HTTP/2 (negotiated over TLS) goes to pingora's HTTP/2 server,
    /// on a stream that follows its frames for the same deadlines ([`super::h2`]).
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            let guarded = Guarded::new_h2(stream, self.limits, self.expired.clone());
            return ServerApp::process_new(&self.h2, Box::new(guarded), shutdown).await;
        }
        // The connection moves to a task of its own: the one pingora spawned at accept is
        // sized for its TLS handshake and would be held for the connection's whole life.
        let this = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { this.serve_http1(stream, shutdown).await });
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.app).await;
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Deadlines<A> {
    /// Serve an HTTP/1 connection, request after request.
    async fn serve_http1(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) {
        let mut guarded = Box::new(Guarded::new(
            stream,
            self.limits,
            self.expired.clone(),
            self.farewell,
        ));
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut stopping = shutdown.clone();
        let stop = stopping.changed();
        tokio::pin!(stop);
        loop {
            if !guarded
                .next_request(KEEPALIVE, &shutdown, stop.as_mut())
                .await
            {
                return;
            }
            let mut session = ServerSession::new_http1(guarded);
            match settings.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    // Reuse on, with no timer of pingora's: `next_request` above already
                    // waited out the keep-alive time and the guard bounds the header's
                    // arrival. A timed keep-alive (any `Some(n > 0)`) would only add a second
                    // timer to every request read.
                    session.set_keepalive(Some(0));
                    session.set_keepalive_reuses_remaining(
                        self.app
                            .server_options()
                            .and_then(|options| options.keepalive_request_limit),
                    );
                }
            }
            if *shutdown.borrow() {
                // Shutting down: this request is answered, and the connection closed after.
                session.set_keepalive(None);
            }
            let Some(reused) = self.app.process_new_http(session, &shutdown).await else {
                return;
            };
            let (stream, next) = reused.consume();
            let Ok(next_guarded) = stream.into_any().downcast::<Guarded>() else {
                return;
            };
            guarded = next_guarded;
            settings = next;
        }
    }
}

impl Guarded {
    /// Wait for the next request's first bytes (holding them back for the reader): `false`
    /// when the client closed, ran out of its header time (a first request), stayed idle for
    /// `keepalive` (a later one), or the server is shutting down (`stop` is the connection's
    /// one wait for that, registered once for its whole life rather than once per request).
    pub(super) async fn next_request<S: Future + ?Sized>(
        &mut self,
        keepalive: Duration,
        shutdown: &ShutdownWatch,
        mut stop: Pin<&mut S>,
    ) -> bool {
        if *shutdown.borrow() {
            return false;
        }
        let idle = self.phase == Phase::Idle;
        let until = tokio::time::Instant::now() + keepalive;
        let bytes = std::future::poll_fn(|cx| {
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            // On the stack only while polled: the waiting future holds no buffer. A whole
            // request header of the usual size comes in one read.
            let mut bytes = [0u8; 2048];
            let mut buf = ReadBuf::new(&mut bytes);
            match Pin::new(&mut *self).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    return Poll::Ready(Some(Box::<[u8]>::from(buf.filled())));
                }
                Poll::Ready(_) => return Poll::Ready(None),
                Poll::Pending => {}
            }
            if !idle {
                // A first request: its header deadline (in `poll_read`) applies instead.
                return Poll::Pending;
            }
            // The timer's deadline is at most `until`: it was set for an earlier wait. When it
            // goes off before `until`, it moves to `until` and the wait goes on.
            while self.idle_timer.as_mut().poll(cx).is_ready() {
                if self.idle_timer.deadline() >= until {
                    return Poll::Ready(None);
                }
                self.idle_timer.as_mut().reset(until);
            }
            Poll::Pending
        })
        .await;
        match bytes {
            Some(bytes) => {
                self.pushback = Some(bytes);
                self.pushed = 0;
                true
            }
            None => false,
        }
    }
}
