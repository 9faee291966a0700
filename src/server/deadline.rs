//! Client deadlines below HTTP. pingora times out each read of a request separately (60 s), so a
//! client sending one byte a second would hold its connection, its buffer and its task forever.
//! [`Deadlines`] wraps the proxy service: every accepted connection's stream is a [`Guarded`]
//! stream that gives a whole request header `server.header_timeout`, a whole request body
//! `server.body_timeout`, and a stalled response write `server.send_timeout`.
//!
//! It sees only bytes, not HTTP: a header ends at the first empty line, and a response write ends
//! the request (the next bytes read start the next header). The header clock starts at accept for
//! a connection's first request and at the first byte of every later one; an idle keep-alive
//! connection waits in `Guarded::next_request`, which closes it after `KEEPALIVE` (60 s).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a client gets for each part of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For a whole request header.
    pub header: Duration,
    /// For a whole request body, from the end of its header.
    pub body: Duration,
    /// For a response write that makes no progress (the client stopped reading).
    pub send: Duration,
}

/// How long the 408 answer to a client that ran out of time may take to write.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// A [`ServerApp`] that runs `app` on [`Guarded`] streams.
pub struct Deadlines<A> {
    app: Arc<A>,
    limits: Limits,
    expired: Arc<AtomicU64>,
}

impl<A> Deadlines<A> {
    /// Guard every connection `app` serves with `limits`; `expired` counts connections closed
    /// for running out of time.
    pub fn new(app: Arc<A>, limits: Limits, expired: Arc<AtomicU64>) -> Self {
        Self {
            app,
            limits,
            expired,
        }
    }
}

/// How long an idle keep-alive connection is kept (pingora's own default).
const KEEPALIVE: Duration = Duration::from_secs(60);

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Deadlines<A> {
    /// HTTP/1 connections are served here, one request at a time: between requests a
    /// connection waits for its next request's first byte in this small future, holding only
    /// its stream, and pingora's session (buffers and state, tens of KiB) exists only while a
    /// request is being served. HTTP/2 (negotiated over TLS) goes to pingora as is: it frames
    /// its own requests, which a byte-level header deadline cannot follow.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            return ServerApp::process_new(&self.app, stream, shutdown).await;
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
        let mut guarded = Box::new(Guarded::new(stream, self.limits, self.expired.clone()));
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

/// Where a connection is in its current exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request header, due by `deadline`; `seen` bytes of it arrived so far and
    /// `tail` holds the last two of them.
    Header {
        deadline: Instant,
        seen: usize,
        tail: [u8; 2],
    },
    /// Reading a request body, due by `deadline`.
    Body { deadline: Instant },
    /// A response went out; no clock runs until the next request's first byte.
    Idle,
    /// Out of time in a header: writing `answer[written..]`, giving up at `until`.
    Answering { written: usize, until: Instant },
    /// Out of time: every further read fails.
    Expired,
}

/// The answer to a client that did not send its request header in time.
static TIMEOUT_ANSWER: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = "{\"error\":\"the request header did not arrive in time\"}\n";
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// A client's stream with the deadlines of [`Limits`].
pub struct Guarded {
    inner: Stream,
    limits: Limits,
    phase: Phase,
    read_timer: Pin<Box<Sleep>>,
    /// The keep-alive clock between requests. It is armed once and moved only when it goes
    /// off early (the connection was busy since), so a request costs it no timer update.
    idle_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    write_stalled: bool,
    expired: Arc<AtomicU64>,
    /// The first bytes of the next request, read while waiting for it and not yet passed on
    /// (allocated only once they arrived: an idle connection holds no buffer).
    pushback: Option<Box<[u8]>>,
    /// How much of `pushback` was passed on.
    pushed: usize,
    /// A file whose bytes go out, by `sendfile(2)`, in place of the next body bytes written.
    span: std::sync::Mutex<Option<Span>>,
}

/// The part of a file still to send in place of body bytes.
struct Span {
    file: std::fs::File,
    offset: u64,
    remaining: u64,
    /// Where the span is with `TCP_CORK`.
    cork: Cork,
    /// The socket (a duplicate of its descriptor), to wait until it takes more.
    writable: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

/// A file span's use of `TCP_CORK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cork {
    /// Nothing of the file sent yet.
    Before,
    /// Corked until the first `sendfile` returns, so the response header leaves with the
    /// file's first bytes.
    Corked,
    /// Uncorked for the rest of the file.
    After,
}

/// How much of a file the first, corked `sendfile` sends. The cork is held for one small
/// call only: a corked `sendfile` of a whole multi-megabyte tarball (it sends as much as the
/// socket buffer takes, megabytes on loopback) cost twice nginx's CPU per 5 MB response and
/// held throughput at nginx's, while corking only the header and the first 64 KiB served
/// ~1.3× nginx's req/s at less CPU than nginx (`wrk -t2 -c64`, BENCHMARKS.md).
const CORKED_BYTES: usize = 64 << 10;

/// Set or clear `TCP_CORK` on `socket` (best effort).
fn set_cork(socket: std::os::fd::RawFd, on: bool) {
    let value: libc::c_int = on.into();
    // SAFETY: `socket` is open; the option value is a c_int that outlives the call.
    unsafe {
        libc::setsockopt(
            socket,
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The socket under a plain TCP connection (none under TLS).
fn raw_socket(inner: &Stream) -> Option<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd as _;
    inner
        .as_any()
        .downcast_ref::<pingora::protocols::l4::stream::Stream>()
        .map(|tcp| tcp.as_raw_fd())
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

impl Guarded {
    /// Guard a just-accepted `inner`: its first request header is due `limits.header` from now.
    pub fn new(inner: Stream, limits: Limits, expired: Arc<AtomicU64>) -> Self {
        let deadline = Instant::now() + limits.header;
        Self {
            inner,
            limits,
            phase: Phase::Header {
                deadline,
                seen: 0,
                tail: [0; 2],
            },
            read_timer: Box::pin(tokio::time::sleep_until(deadline)),
            // Already due: the first idle wait moves it to its own end (a deadline beyond
            // that, such as a header timeout longer than the keep-alive, would outlast it).
            idle_timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            write_timer: Box::pin(tokio::time::sleep_until(deadline)),
            write_stalled: false,
            expired,
            pushback: None,
            pushed: 0,
            span: std::sync::Mutex::new(None),
        }
    }

    /// Whether body bytes written now are a file's placeholders.
    fn spanning(&mut self) -> bool {
        self.span
            .get_mut()
            .map_or_else(|p| p.into_inner().is_some(), |span| span.is_some())
    }

    /// Whether bodies can be sent from files on this connection (plain TCP, not TLS).
    pub fn can_send_files(&self) -> bool {
        raw_socket(&self.inner).is_some()
    }

    /// Send `len` bytes of `file` from `offset` in place of the next `len` body bytes written
    /// (the writer writes that many placeholder bytes, which never go out): the kernel copies
    /// them from the page cache to the socket. The file is handed back when this connection
    /// cannot do that.
    pub fn send_file(
        &self,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> Result<(), std::fs::File> {
        if !self.can_send_files() {
            return Err(file);
        }
        let mut span = self.span.lock().unwrap_or_else(|p| p.into_inner());
        *span = (len > 0).then_some(Span {
            file,
            offset,
            remaining: len,
            cork: Cork::Before,
            writable: None,
        });
        Ok(())
    }

    /// Write up to `want` bytes of the current span's file with `sendfile(2)`.
    fn poll_send_span(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        use std::os::fd::AsRawFd as _;
        let Some(socket) = raw_socket(&self.inner) else {
            return Poll::Ready(Err(io::Error::other("no socket to send a file to")));
        };
        let slot = self.span.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(span) = slot.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        if span.cork == Cork::Before {
            // The header leaves with the first bytes of the file (nginx's tcp_nopush), in
            // full segments; see `CORKED_BYTES` for why only those are corked.
            span.cork = Cork::Corked;
            set_cork(socket, true);
        }
        // What the HTTP layer wrote before (the response header) goes out first: no byte of
        // the file may pass it.
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        loop {
            let mut count = (want as u64).min(span.remaining).min(1 << 30) as usize;
            if span.cork == Cork::Corked {
                count = count.min(CORKED_BYTES);
            }
            let mut offset = span.offset as libc::off_t;
            // SAFETY: both descriptors are open for the call (the socket is owned by `inner`,
            // the file by `span`); `offset` is a valid pointer for its duration.
            let sent = unsafe { libc::sendfile(socket, span.file.as_raw_fd(), &mut offset, count) };
            // Read before any other call can change errno.
            let error = (sent < 0).then(io::Error::last_os_error);
            let again = error.as_ref().is_some_and(|e| {
                matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                )
            });
            if span.cork == Cork::Corked && !again {
                // The header is out with the file's first bytes (or the span ends here): the
                // rest goes uncorked.
                span.cork = Cork::After;
                set_cork(socket, false);
            }
            if sent > 0 {
                let sent = sent as u64;
                span.offset += sent;
                span.remaining -= sent;
                if span.remaining == 0 {
                    *slot = None;
                }
                return Poll::Ready(Ok(sent as usize));
            }
            if sent == 0 {
                *slot = None;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the tarball file is shorter than its length",
                )));
            }
            // Here `sent` is negative: `error` is its errno.
            if let Some(error) = error {
                match error.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {}
                    _ => return Poll::Ready(Err(error)),
                }
            }
            if span.writable.is_none() {
                // SAFETY: `socket` is open; the duplicate is owned by the OwnedFd.
                let dup = unsafe { libc::dup(socket) };
                if dup < 0 {
                    return Poll::Ready(Err(io::Error::last_os_error()));
                }
                // SAFETY: `dup` was just returned by dup(2) and is owned by nothing else.
                let owned =
                    unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) };
                // SAFETY: the OwnedFd keeps its descriptor open and unchanged for as long as
                // the AsyncFd holds it.
                let registered = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        owned,
                        tokio::io::Interest::WRITABLE,
                    )
                };
                span.writable = Some(registered.map_err(io::Error::from)?);
            }
            let Some(writable) = span.writable.as_ref() else {
                continue;
            };
            match writable.poll_write_ready(cx) {
                Poll::Ready(Ok(mut ready)) => ready.clear_ready(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Wait for the next request's first bytes (holding them back for the reader): `false`
    /// when the client closed, ran out of its header time (a first request), stayed idle for
    /// `keepalive` (a later one), or the server is shutting down (`stop` is the connection's
    /// one wait for that, registered once for its whole life rather than once per request).
    async fn next_request<S: Future + ?Sized>(
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

    fn peer(&self) -> Option<SocketAddr> {
        self.inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied()))
    }

    /// Follow the request framing through `bytes` just read.
    fn read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // A write given up on earlier must not leave its stall clock running.
        self.write_stalled = false;
        if self.phase == Phase::Idle {
            self.phase = Phase::Header {
                deadline: Instant::now() + self.limits.header,
                seen: 0,
                tail: [0; 2],
            };
        }
        if let Phase::Header { seen, tail, .. } = &mut self.phase {
            *seen += bytes.len();
            if ends_header(tail, bytes) {
                self.phase = Phase::Body {
                    deadline: Instant::now() + self.limits.body,
                };
            }
        }
    }

    /// Note a response write of `bytes`: the request it answers is over (an interim 1xx answer
    /// is not a response).
    fn wrote(&mut self, bytes: &[u8]) {
        let interim = bytes.starts_with(b"HTTP/1.1 1") || bytes.starts_with(b"HTTP/1.0 1");
        if !bytes.is_empty()
            && !interim
            && matches!(self.phase, Phase::Header { .. } | Phase::Body { .. })
        {
            self.phase = Phase::Idle;
        }
    }

    fn expire(&mut self, what: &str) -> io::Error {
        self.phase = Phase::Expired;
        self.expired.fetch_add(1, Ordering::Relaxed);
        let peer = self.peer().map(|p| p.to_string()).unwrap_or_default();
        // Counted in sluice_client_timeouts_total; pingora logs the failed request too.
        tracing::debug!(%peer, "closing a client connection: {what}");
        io::Error::new(io::ErrorKind::TimedOut, what.to_string())
    }

    /// Write the 408 answer, then fail the read that ran out of time.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Phase::Answering { written, until } = self.phase {
            if self.read_timer.deadline() != until {
                self.read_timer.as_mut().reset(until);
            }
            let step = if written < TIMEOUT_ANSWER.len() {
                Pin::new(&mut self.inner)
                    .poll_write(cx, &TIMEOUT_ANSWER[written..])
                    .map_ok(Some)
            } else {
                Pin::new(&mut self.inner).poll_flush(cx).map_ok(|()| None)
            };
            match step {
                Poll::Ready(Ok(Some(n))) if n > 0 => {
                    self.phase = Phase::Answering {
                        written: written + n,
                        until,
                    }
                }
                Poll::Ready(Ok(_)) | Poll::Ready(Err(_)) => break,
                Poll::Pending => {
                    if self.read_timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    break;
                }
            }
        }
        let header = self.limits.header;
        Poll::Ready(Err(self.expire(&format!(
            "its request header did not arrive within {} (server.header_timeout)",
            humantime::format_duration(header)
        ))))
    }

    /// Poll the write-stall clock after a write that could not make progress.
    fn poll_stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.write_stalled {
            self.write_stalled = true;
            let deadline = Instant::now() + self.limits.send;
            self.write_timer.as_mut().reset(deadline);
        }
        if self.write_timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let send = self.limits.send;
        Poll::Ready(Err(self.expire(&format!(
            "it read nothing of its answer for {} (server.send_timeout)",
            humantime::format_duration(send)
        ))))
    }

    fn progressed<T>(
        &mut self,
        poll: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.write_stalled = false;
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_stall(cx),
        }
    }
}

/// Whether `bytes`, read after bytes ending in `tail`, hold the empty line that ends a request
/// header ("\n\n" or "\n\r\n"); `tail` becomes the last two bytes seen. Empty lines before the
/// request line (which HTTP parsers skip) are not an end: `tail` stays `[0, 0]` until the first
/// other byte.
fn ends_header(tail: &mut [u8; 2], bytes: &[u8]) -> bool {
    let mut rest = bytes;
    if *tail == [0, 0] {
        let start = rest
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(rest.len());
        rest = &rest[start..];
    }
    // The byte `back` places before `rest[i]`, looking into `tail` before `rest`.
    let before = |i: usize, back: usize| match i.checked_sub(back) {
        Some(j) => rest[j],
        None => tail[2 + i - back],
    };
    // Only line feeds can end it: jump from one to the next.
    let end = memchr::memchr_iter(b'\n', rest)
        .find(|&i| before(i, 1) == b'\n' || (before(i, 1) == b'\r' && before(i, 2) == b'\n'));
    let upto = end.map_or(rest.len(), |i| i + 1);
    match upto {
        0 => {}
        1 => *tail = [tail[1], rest[0]],
        n => *tail = [rest[n - 2], rest[n - 1]],
    }
    end.is_some()
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(held) = this.pushback.as_deref() {
            // The bytes read while waiting for this request (already followed by `read`).
            let n = buf.remaining().min(held.len() - this.pushed);
            buf.put_slice(&held[this.pushed..this.pushed + n]);
            this.pushed += n;
            if this.pushed == held.len() {
                this.pushback = None;
            }
            return Poll::Ready(Ok(()));
        }
        let deadline = match this.phase {
            Phase::Answering { .. } => return this.poll_answer(cx),
            Phase::Expired => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client ran out of time",
                )))
            }
            Phase::Header { deadline, .. } | Phase::Body { deadline } => Some(deadline),
            Phase::Idle => None,
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.read(&buf.filled()[before..]);
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        if this.read_timer.deadline() != deadline {
            this.read_timer.as_mut().reset(deadline);
        }
        if this.read_timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match this.phase {
            // Nothing arrived at all: close without an answer, as to a port scan.
            Phase::Header { seen: 0, .. } => {
                let header = this.limits.header;
                Poll::Ready(Err(this.expire(&format!(
                    "it sent nothing within {} (server.header_timeout)",
                    humantime::format_duration(header)
                ))))
            }
            Phase::Header { .. } => {
                this.phase = Phase::Answering {
                    written: 0,
                    until: Instant::now() + ANSWER_GRACE,
                };
                this.poll_answer(cx)
            }
            // The proxy answers a late body with 408 itself.
            _ => {
                let body = this.limits.body;
                Poll::Ready(Err(this.expire(&format!(
                    "its request body did not arrive within {} (server.body_timeout)",
                    humantime::format_duration(body)
                ))))
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = if this.spanning() {
            this.poll_send_span(cx, buf.len())
        } else {
            Pin::new(&mut this.inner).poll_write(cx, buf)
        };
        if let Poll::Ready(Ok(n)) = poll {
            this.wrote(&buf[..n]);
        }
        this.progressed(poll, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = if this.spanning() {
            let want = bufs.iter().map(|b| b.len()).sum();
            this.poll_send_span(cx, want)
        } else {
            Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
        };
        if let Poll::Ready(Ok(n)) = poll {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            this.wrote(&first[..n.min(first.len())]);
        }
        this.progressed(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(poll, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progressed(poll, cx)
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        // A client that reads nothing cannot hold the close up longer than a stalled write, and
        // one that already ran out of time gets a moment only.
        let grace = if self.phase == Phase::Expired {
            ANSWER_GRACE
        } else {
            self.limits.send
        };
        let _ = tokio::time::timeout(grace, self.inner.shutdown()).await;
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if let Some(held) = self.pushback.as_deref() {
            // What was read while waiting comes first; it is all there is to peek at now.
            let rest = &held[self.pushed..];
            if rest.len() >= buf.len() {
                buf.copy_from_slice(&rest[..buf.len()]);
                return Ok(true);
            }
            return Ok(false);
        }
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::ends_header;

    fn ends_in_chunks(chunks: &[&str]) -> Option<usize> {
        let mut tail = [0; 2];
        chunks
            .iter()
            .position(|chunk| ends_header(&mut tail, chunk.as_bytes()))
    }

    #[test]
    fn a_header_ends_at_its_empty_line_however_it_is_split() {
        assert_eq!(
            ends_in_chunks(&["GET / HTTP/1.1\r\nHost: x\r\n\r\n"]),
            Some(0)
        );
        assert_eq!(
            ends_in_chunks(&["GET / HTTP/1.1\r\nHost: x\r\n", "\r\n"]),
            Some(1)
        );
        assert_eq!(
            ends_in_chunks(&["GET / HTTP/1.1\r\nHost: x\r", "\n", "\r", "\n"]),
            Some(3)
        );
        assert_eq!(
            ends_in_chunks(&["GET / HTTP/1.1\nHost: x\n", "\n"]),
            Some(1)
        );
        assert_eq!(
            ends_in_chunks(&["GET / HTTP/1.1\r\n", "Host: x\r\n", "X: \r"]),
            None
        );
        // Leading empty lines are skipped by the parser, so they do not end the header.
        assert_eq!(
            ends_in_chunks(&["\r\n\r\n", "\n\n", "GET / HTTP/1.1\r\n"]),
            None
        );
        assert_eq!(ends_in_chunks(&["\r\n\r\nGET / HTTP/1.1\r\n\r\n"]), Some(0));
        let trickle: Vec<String> = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            .chars()
            .map(String::from)
            .collect();
        let trickle: Vec<&str> = trickle.iter().map(String::as_str).collect();
        assert_eq!(ends_in_chunks(&trickle), Some(trickle.len() - 1));
    }
}
