//! HTTP/2 connections under the client deadlines. pingora's HTTP/2 server times nothing a client
//! does: a request header sent in CONTINUATION frames a byte at a time, a body that stops, or a
//! client that stops granting flow-control window would each hold a stream, its task and its
//! buffers for good. An HTTP/2 connection's [`Guarded`](super::Guarded) stream therefore follows
//! the frames both ways (their 9-byte headers, and the few payloads that carry flow control) and
//! keeps the same three clocks as an HTTP/1 one:
//!
//! - header: the connection's first request header is due `server.header_timeout` after accept,
//!   every later one that long after its HEADERS frame began, until its END_HEADERS;
//! - body: a request body is due `server.body_timeout` after its header, until its END_STREAM
//!   (or the stream's reset, or the response's header: an answer ends the request, as in
//!   HTTP/1);
//! - send: a response that cannot go on for want of window (its stream's or the connection's)
//!   gets `server.send_timeout` for a WINDOW_UPDATE.
//!
//! Running out of time fails the connection's reads: h2 then closes it, with every stream on
//! it. An idle connection (no stream open) is closed after the keep-alive time by pingora
//! (`h2_idle_timeout`), and the number of concurrent streams and the size of a header list are
//! bounded ([`options`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

use super::deadline::{Guarded, Limits, Phase};
use super::idle::KEEPALIVE;

/// How many streams a client may have open at once (RFC 9113 advises no fewer than 100).
pub const MAX_STREAMS: u32 = 100;
/// The largest request header list a client may send, decoded. npm clients send about 1 KiB
/// (a token, a session id, a user agent).
pub const MAX_HEADER_LIST: u32 = 64 << 10;

/// The HTTP/2 settings every connection gets: `base` (the front's own, or pingora's defaults)
/// with the bounds above.
pub fn options(base: Option<H2Options>) -> H2Options {
    let mut options = base.unwrap_or_else(default_h2_options);
    options
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST);
    options
}

/// The front as pingora's HTTP/2 server runs it: its sessions, with the HTTP/2 settings of
/// [`options`] and an idle timeout.
pub(super) struct H2App<A> {
    app: Arc<A>,
    server_options: HttpServerOptions,
}

impl<A: HttpServerApp> H2App<A> {
    pub(super) fn new(app: Arc<A>) -> Self {
        let mut server_options = app.server_options().cloned().unwrap_or_default();
        server_options.h2_idle_timeout = Some(KEEPALIVE);
        Self {
            app,
            server_options,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for H2App<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.app.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        Some(options(self.app.h2_options()))
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.server_options)
    }
}

/// The client connection preface, before the first frame a client sends.
const PREFACE_LEN: usize = 24;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// The flow-control window every stream and the connection start with.
const DEFAULT_WINDOW: i64 = 65_535;

/// A frame's 9-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    kind: u8,
    flags: u8,
    stream: u32,
    len: usize,
}

/// What the splitter found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    /// A frame's header arrived (its payload is still to come, unless it is empty).
    Begun(Head),
    /// A whole frame arrived; `payload` is kept for the frames whose payload matters here
    /// (SETTINGS, WINDOW_UPDATE) and empty for the others.
    Ended(Head, &'a [u8]),
}

/// Splits one direction of a connection into frames, however the bytes are cut.
#[derive(Debug, Default)]
pub(super) struct Splitter {
    /// Preface bytes still to pass over.
    preface: usize,
    head: [u8; 9],
    have: usize,
    current: Option<Head>,
    left: usize,
    payload: Vec<u8>,
}

impl Splitter {
    /// A splitter for what a client sends (which starts with the preface) or what the server
    /// sends.
    pub(super) fn new(client: bool) -> Self {
        Self {
            preface: if client { PREFACE_LEN } else { 0 },
            ..Self::default()
        }
    }

    /// Follow `bytes`, telling `on` of every frame begun and ended in them.
    pub(super) fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Frame<'_>)) {
        let skip = self.preface.min(bytes.len());
        self.preface -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            let Some(head) = self.current else {
                let take = (9 - self.have).min(bytes.len());
                self.head[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have == 9 {
                    self.have = 0;
                    let h = self.head;
                    let head = Head {
                        len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
                        kind: h[3],
                        flags: h[4],
                        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                    };
                    on(Frame::Begun(head));
                    self.current = Some(head);
                    self.left = head.len;
                    self.payload.clear();
                    if head.len == 0 {
                        self.current = None;
                        on(Frame::Ended(head, &[]));
                    }
                }
                continue;
            };
            let take = self.left.min(bytes.len());
            if matches!(head.kind, SETTINGS | WINDOW_UPDATE) {
                self.payload.extend_from_slice(&bytes[..take]);
            }
            self.left -= take;
            bytes = &bytes[take..];
            if self.left == 0 {
                self.current = None;
                on(Frame::Ended(head, &self.payload));
            }
        }
    }
}

/// One stream, as far as the clocks care.
#[derive(Debug, Clone, Copy)]
struct StreamState {
    /// When its request body is due, while one is being received.
    body_due: Option<Instant>,
    /// Whether its request has no body (END_STREAM on its HEADERS), known before END_HEADERS.
    bodiless: bool,
    /// Whether its response began and has not ended.
    answering: bool,
    /// The window the client gave for it.
    window: i64,
}

/// Why a connection ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Late {
    Header,
    Body,
    Send,
}

/// The clocks of one HTTP/2 connection.
#[derive(Debug)]
pub(super) struct Clocks {
    limits: Limits,
    reads: Splitter,
    writes: Splitter,
    /// When the request header being received (or the first, awaited) is due.
    header_due: Option<Instant>,
    streams: HashMap<u32, StreamState>,
    initial_window: i64,
    connection_window: i64,
    /// Since when a response has been waiting for window.
    blocked_since: Option<Instant>,
}

impl Clocks {
    /// The clocks of a connection accepted at `accepted`.
    pub(super) fn new(limits: Limits, accepted: Instant) -> Self {
        Self {
            limits,
            reads: Splitter::new(true),
            writes: Splitter::new(false),
            header_due: Some(accepted + limits.header),
            streams: HashMap::new(),
            initial_window: DEFAULT_WINDOW,
            connection_window: DEFAULT_WINDOW,
            blocked_since: None,
        }
    }

    /// The earliest deadline running, and what it is for.
    pub(super) fn due(&self) -> Option<(Instant, Late)> {
        let header = self.header_due.map(|at| (at, Late::Header));
        let body = self
            .streams
            .values()
            .filter_map(|s| s.body_due)
            .min()
            .map(|at| (at, Late::Body));
        let send = self
            .blocked_since
            .map(|since| (since + self.limits.send, Late::Send));
        [header, body, send]
            .into_iter()
            .flatten()
            .min_by_key(|d| d.0)
    }

    /// Follow `bytes` the client sent.
    pub(super) fn read(&mut self, bytes: &[u8], now: Instant) {
        let mut reads = std::mem::take(&mut self.reads);
        reads.feed(bytes, |frame| self.client_frame(frame, now));
        self.reads = reads;
        self.update_blocked(now);
    }

    /// Follow `bytes` the server sent.
    pub(super) fn wrote(&mut self, bytes: &[u8], now: Instant) {
        let mut writes = std::mem::take(&mut self.writes);
        writes.feed(bytes, |frame| self.server_frame(frame));
        self.writes = writes;
        self.update_blocked(now);
    }

    fn client_frame(&mut self, frame: Frame<'_>, now: Instant) {
        match frame {
            Frame::Begun(head) if head.kind == HEADERS && self.header_due.is_none() => {
                self.header_due = Some(now + self.limits.header);
            }
            Frame::Begun(_) => {}
            Frame::Ended(head, payload) => match head.kind {
                HEADERS => {
                    let bodiless = head.flags & END_STREAM != 0;
                    if let Some(stream) = self.streams.get_mut(&head.stream) {
                        // Trailers: the body ends with them.
                        if bodiless {
                            stream.body_due = None;
                        }
                    } else {
                        self.streams.insert(
                            head.stream,
                            StreamState {
                                body_due: None,
                                bodiless,
                                answering: false,
                                window: self.initial_window,
                            },
                        );
                    }
                    if head.flags & END_HEADERS != 0 {
                        self.header_done(head.stream, now);
                    }
                }
                CONTINUATION if head.flags & END_HEADERS != 0 => self.header_done(head.stream, now),
                DATA if head.flags & END_STREAM != 0 => {
                    if let Some(stream) = self.streams.get_mut(&head.stream) {
                        stream.body_due = None;
                    }
                }
                RST_STREAM => {
                    self.streams.remove(&head.stream);
                }
                SETTINGS if head.flags & ACK == 0 => self.settings(payload),
                WINDOW_UPDATE if payload.len() == 4 => {
                    let increment =
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                            & 0x7fff_ffff;
                    if head.stream == 0 {
                        self.connection_window += i64::from(increment);
                    } else if let Some(stream) = self.streams.get_mut(&head.stream) {
                        stream.window += i64::from(increment);
                    }
                }
                _ => {}
            },
        }
    }

    /// A request header ended: its body's clock starts, unless it has none.
    fn header_done(&mut self, id: u32, now: Instant) {
        self.header_due = None;
        if let Some(stream) = self.streams.get_mut(&id) {
            if !stream.bodiless && !stream.answering {
                stream.body_due = Some(now + self.limits.body);
            }
        }
    }

    fn settings(&mut self, payload: &[u8]) {
        for setting in payload.chunks_exact(6) {
            if u16::from_be_bytes([setting[0], setting[1]]) == SETTINGS_INITIAL_WINDOW_SIZE {
                let size = i64::from(u32::from_be_bytes([
                    setting[2], setting[3], setting[4], setting[5],
                ]));
                let delta = size - self.initial_window;
                self.initial_window = size;
                for stream in self.streams.values_mut() {
                    stream.window += delta;
                }
            }
        }
    }

    fn server_frame(&mut self, frame: Frame<'_>) {
        let Frame::Ended(head, _) = frame else {
            return;
        };
        let ends = head.flags & END_STREAM != 0;
        match head.kind {
            HEADERS => {
                if ends {
                    self.streams.remove(&head.stream);
                } else if let Some(stream) = self.streams.get_mut(&head.stream) {
                    // An answer ends the request's clock, as in HTTP/1.
                    stream.body_due = None;
                    stream.answering = true;
                }
            }
            DATA => {
                let len = i64::try_from(head.len).unwrap_or(i64::MAX);
                self.connection_window -= len;
                if ends {
                    self.streams.remove(&head.stream);
                } else if let Some(stream) = self.streams.get_mut(&head.stream) {
                    stream.window -= len;
                }
            }
            RST_STREAM => {
                self.streams.remove(&head.stream);
            }
            _ => {}
        }
    }

    /// Start or stop the send clock: it runs while a response waits for window.
    fn update_blocked(&mut self, now: Instant) {
        let connection_shut = self.connection_window <= 0;
        let blocked = self
            .streams
            .values()
            .any(|s| s.answering && (connection_shut || s.window <= 0));
        match (blocked, self.blocked_since) {
            (true, None) => self.blocked_since = Some(now),
            (false, Some(_)) => self.blocked_since = None,
            _ => {}
        }
    }
}

impl Guarded {
    /// Guard a just-accepted HTTP/2 connection (ALPN h2): its first request header is due
    /// `limits.header` from now.
    pub fn new_h2(inner: Stream, limits: Limits, expired: Arc<AtomicU64>) -> Self {
        let mut guarded = Self::new(inner, limits, expired, &[]);
        // The frame clocks replace the HTTP/1 phases.
        guarded.phase = Phase::Idle;
        guarded.h2 = Some(Box::new(Clocks::new(limits, Instant::now())));
        guarded
    }

    /// Read what the client sent, following its frames; fail the read once a clock ran out.
    pub(super) fn poll_read_h2(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.phase == Phase::Expired {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client ran out of time",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(clocks) = self.h2.as_mut() {
                    clocks.read(&buf.filled()[before..], Instant::now());
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some((deadline, late)) = self.h2.as_ref().and_then(|clocks| clocks.due()) else {
            return Poll::Pending;
        };
        if self.read_timer.deadline() != deadline {
            self.read_timer.as_mut().reset(deadline);
        }
        if self.read_timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let limits = self.limits;
        let what = match late {
            Late::Header => format!(
                "its HTTP/2 request header did not arrive within {} (server.header_timeout)",
                humantime::format_duration(limits.header)
            ),
            Late::Body => format!(
                "its HTTP/2 request body did not arrive within {} (server.body_timeout)",
                humantime::format_duration(limits.body)
            ),
            Late::Send => format!(
                "it gave no HTTP/2 window for its answer for {} (server.send_timeout)",
                humantime::format_duration(limits.send)
            ),
        };
        Poll::Ready(Err(self.expire(&what)))
    }

    /// Follow the first `n` bytes of `bufs`, just written. A clock started or moved earlier by
    /// them wakes the connection's task, whose pending read then waits for it: h2 reads and
    /// writes from that one task, which a response blocked on window would not wake otherwise.
    pub(super) fn wrote_h2(&mut self, bufs: &[io::IoSlice<'_>], n: usize, cx: &mut Context<'_>) {
        let Some(clocks) = self.h2.as_mut() else {
            return;
        };
        let before = clocks.due();
        let now = Instant::now();
        let mut left = n;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(buf.len());
            clocks.wrote(&buf[..take], now);
            left -= take;
        }
        let after = clocks.due();
        if after.is_some_and(|(at, _)| before.is_none_or(|(was, _)| at < was)) {
            cx.waker().wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    fn limits() -> Limits {
        Limits {
            header: Duration::from_secs(10),
            body: Duration::from_secs(20),
            send: Duration::from_secs(30),
        }
    }

    /// Feed `bytes` one at a time, as a trickling client would.
    fn trickle(clocks: &mut Clocks, bytes: &[u8], now: Instant) {
        for byte in bytes {
            clocks.read(std::slice::from_ref(byte), now);
        }
    }

    #[test]
    fn the_clocks_follow_header_body_and_window_however_the_bytes_are_cut() {
        let start = Instant::now();
        let later = start + Duration::from_secs(1);
        let mut clocks = Clocks::new(limits(), start);
        assert_eq!(clocks.due(), Some((start + limits().header, Late::Header)));
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        hello.extend(frame(HEADERS, 0, 1, b"abc"));
        trickle(&mut clocks, &hello, start);
        assert_eq!(clocks.due(), Some((start + limits().header, Late::Header)));
        // END_HEADERS in a CONTINUATION: the body's clock starts.
        trickle(
            &mut clocks,
            &frame(CONTINUATION, END_HEADERS, 1, b"d"),
            later,
        );
        assert_eq!(clocks.due(), Some((later + limits().body, Late::Body)));
        clocks.read(&frame(DATA, END_STREAM, 1, b"{}"), later);
        assert_eq!(clocks.due(), None);
        // The next header's clock starts with its frame's header.
        clocks.read(
            &frame(HEADERS, END_STREAM | END_HEADERS, 3, b"xy")[..10],
            later,
        );
        assert_eq!(clocks.due(), Some((later + limits().header, Late::Header)));
        clocks.read(
            &frame(HEADERS, END_STREAM | END_HEADERS, 3, b"xy")[10..],
            later,
        );
        assert_eq!(clocks.due(), None);
        // Its response takes the whole window of a client that sent it none more.
        let data = vec![0; DEFAULT_WINDOW as usize];
        clocks.wrote(&frame(HEADERS, END_HEADERS, 3, b"h"), later);
        clocks.wrote(&frame(DATA, 0, 3, &data), later);
        assert_eq!(clocks.due(), Some((later + limits().send, Late::Send)));
        clocks.read(&frame(WINDOW_UPDATE, 0, 3, &1000u32.to_be_bytes()), later);
        clocks.read(&frame(WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes()), later);
        assert_eq!(clocks.due(), None);
        clocks.wrote(&frame(DATA, END_STREAM, 3, b"end"), later);
        assert!(
            !clocks.streams.contains_key(&3),
            "an answered stream is forgotten"
        );
    }

    #[test]
    fn a_zero_initial_window_blocks_a_response_and_a_reset_ends_its_clocks() {
        let start = Instant::now();
        let mut clocks = Clocks::new(limits(), start);
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut zero = SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes().to_vec();
        zero.extend(0u32.to_be_bytes());
        hello.extend(frame(SETTINGS, 0, 0, &zero));
        hello.extend(frame(HEADERS, END_HEADERS, 1, b"post"));
        clocks.read(&hello, start);
        assert_eq!(clocks.due(), Some((start + limits().body, Late::Body)));
        clocks.wrote(&frame(HEADERS, END_HEADERS, 1, b"413"), start);
        assert_eq!(clocks.due(), Some((start + limits().send, Late::Send)));
        clocks.read(&frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]), start);
        assert_eq!(clocks.due(), None);
    }
}
