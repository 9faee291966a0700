//! Client deadlines: a [`Guarded`] stream gives a whole request header `server.header_timeout`,
//! a whole request body `server.body_timeout`, and a stalled response write
//! `server.send_timeout`.
//!
//! It sees only bytes: a header ends at the first empty line, and a response write ends the
//! request (the next bytes read start the next header). The header clock starts at accept for a
//! connection's first request and at the first byte of every later one; an idle keep-alive
//! connection waits in [`idle`](super::idle), which closes it after its keep-alive time.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::h2::Clocks;
use super::span::Span;

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

/// How long the farewell to a client whose header ran out of time may take to write, and a
/// close after running out of time.
pub(super) const FAREWELL_GRACE: Duration = Duration::from_secs(1);

/// Where a connection is in its current exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
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
    /// Out of time in a header: writing `farewell[written..]`, giving up at `until`.
    Parting { written: usize, until: Instant },
    /// Out of time: every further read fails.
    Expired,
}

/// A client's stream with the deadlines of [`Limits`].
pub struct Guarded {
    pub(super) inner: Stream,
    pub(super) limits: Limits,
    pub(super) phase: Phase,
    /// What to write to a client whose request header ran out of time, before closing.
    farewell: &'static [u8],
    pub(super) read_timer: Pin<Box<Sleep>>,
    /// The keep-alive clock between requests. It is armed once and moved only when it goes
    /// off early (the connection was busy since), so a request costs it no timer update.
    pub(super) idle_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    write_stalled: bool,
    expired: Arc<AtomicU64>,
    /// The first bytes of the next request, read while waiting for it and not yet passed on
    /// (allocated only once they arrived: an idle connection holds no buffer).
    pub(super) pushback: Option<Box<[u8]>>,
    /// How much of `pushback` was passed on.
    pub(super) pushed: usize,
    /// A file whose bytes go out, by `sendfile(2)`, in place of the next body bytes written.
    pub(super) span: std::sync::Mutex<Option<Span>>,
    /// An HTTP/2 connection's clocks, which replace `phase`'s (none on HTTP/1).
    pub(super) h2: Option<Box<Clocks>>,
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
    /// Guard a just-accepted `inner`: its first request header is due `limits.header` from now;
    /// a client that sent part of a header in time is written `farewell` before the close.
    pub fn new(
        inner: Stream,
        limits: Limits,
        expired: Arc<AtomicU64>,
        farewell: &'static [u8],
    ) -> Self {
        let deadline = Instant::now() + limits.header;
        Self {
            inner,
            limits,
            farewell,
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
            h2: None,
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

    pub(super) fn expire(&mut self, what: &str) -> io::Error {
        self.phase = Phase::Expired;
        self.expired.fetch_add(1, Ordering::Relaxed);
        let peer = self.peer().map(|p| p.to_string()).unwrap_or_default();
        // Counted in sluice_client_timeouts_total; pingora logs the failed request too.
        tracing::debug!(%peer, "closing a client connection: {what}");
        io::Error::new(io::ErrorKind::TimedOut, what.to_string())
    }

    /// Write the farewell, then fail the read that ran out of time.
    fn poll_farewell(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Phase::Parting { written, until } = self.phase {
            if self.read_timer.deadline() != until {
                self.read_timer.as_mut().reset(until);
            }
            let step = if written < self.farewell.len() {
                Pin::new(&mut self.inner)
                    .poll_write(cx, &self.farewell[written..])
                    .map_ok(Some)
            } else {
                Pin::new(&mut self.inner).poll_flush(cx).map_ok(|()| None)
            };
            match step {
                Poll::Ready(Ok(Some(n))) if n > 0 => {
                    self.phase = Phase::Parting {
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
        if this.h2.is_some() {
            return this.poll_read_h2(cx, buf);
        }
        let deadline = match this.phase {
            Phase::Parting { .. } => return this.poll_farewell(cx),
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
                this.phase = Phase::Parting {
                    written: 0,
                    until: Instant::now() + FAREWELL_GRACE,
                };
                this.poll_farewell(cx)
            }
            // The front answers a late body itself.
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
            if this.h2.is_some() {
                this.wrote_h2(&[io::IoSlice::new(&buf[..n])], n, cx);
            } else {
                this.wrote(&buf[..n]);
            }
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
            if this.h2.is_some() {
                this.wrote_h2(bufs, n, cx);
                return this.progressed(poll, cx);
            }
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
