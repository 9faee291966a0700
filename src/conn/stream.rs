//! pingora's stream traits for [`Guarded`]: each passes through to the stream it guards, except
//! that bytes read ahead while waiting for a request are peeked first and a close is bounded.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};

use super::deadline::{Guarded, Phase, FAREWELL_GRACE};

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        // A client that reads nothing cannot hold the close up longer than a stalled write, and
        // one that already ran out of time gets a moment only.
        let grace = if self.phase == Phase::Expired {
            FAREWELL_GRACE
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
