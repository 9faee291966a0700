//! File spans: body bytes sent by `sendfile(2)` from a file, in place of placeholder bytes the
//! writer writes, with `TCP_CORK` so the response header leaves with the file's first bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pingora::protocols::Stream;
use tokio::io::AsyncWrite;

use super::deadline::Guarded;

/// The part of a file still to send in place of body bytes.
pub(super) struct Span {
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

impl Guarded {
    /// Whether body bytes written now are a file's placeholders.
    pub(super) fn spanning(&mut self) -> bool {
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
    pub(super) fn poll_send_span(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
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
}
