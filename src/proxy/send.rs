//! The read and respond phases on the connection: the request header is read, the answer is
//! written (whole, streamed, or from a file by the connection wrapper), and a failed request
//! is answered the way pingora-proxy answers one.

use bytes::Bytes;
use futures::StreamExt;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession as Session;

use super::respond::{self, Conditions};
use super::shape::header_text;
use super::{body, RequestCtx};
use crate::api::{Answer, Body};
use crate::app::App;
use crate::conn::Guarded;

/// Zeros written in place of a body that the connection sends from a file (never sent, never
/// touched past its first bytes: calloc's untouched pages take no memory). 8 MiB: a tarball
/// goes out in as few `sendfile(2)` calls as the socket takes, not one per MiB.
static PLACEHOLDER: std::sync::LazyLock<Bytes> =
    std::sync::LazyLock::new(|| Bytes::from(vec![0u8; 8 << 20]));

/// The connection wrapper under `session`, for an HTTP/1 connection.
fn guarded(session: &Session) -> Option<&Guarded> {
    session.stream()?.as_any().downcast_ref::<Guarded>()
}

/// Whether the connection of `session` can send a body from a file.
pub fn can_send_files(session: &Session) -> bool {
    guarded(session).is_some_and(Guarded::can_send_files)
}

/// The read phase: the request header. `false` when there is no request to answer (the client
/// closed, sent a header that cannot be read, or asked to CONNECT: each answered and closed).
pub async fn read_request(session: &mut Session) -> bool {
    match session.read_request().await {
        Ok(true) => {}
        // The client closed before a request.
        Ok(false) => return false,
        Err(error) => {
            if matches!(error.etype, ErrorType::InvalidHTTPHeader) {
                tracing::debug!(%error, "bad request header");
                let _ = session.respond_error(400).await;
            }
            session.shutdown().await;
            return false;
        }
    }
    if session.req_header().method == http::Method::CONNECT {
        let _ = session.respond_error(405).await;
        session.shutdown().await;
        return false;
    }
    true
}

/// The respond phase: `answer` as HTTP, with the plugins' response headers.
pub async fn send(
    app: &App,
    session: &mut Session,
    answer: Answer,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let header = session.req_header();
    let head = header.method == http::Method::HEAD;
    let text = |name| header_text(header, name);
    let conditions = Conditions {
        if_none_match: text(http::header::IF_NONE_MATCH),
        if_modified_since: text(http::header::IF_MODIFIED_SINCE),
        range: text(http::header::RANGE),
        if_range: text(http::header::IF_RANGE),
        personal: ctx.personal,
    };
    let (mut response, body) = respond::into_response(answer, &conditions)?;
    if let Some(status) = ctx.plugin.cache_status {
        response.insert_header(
            "x-cache-status",
            http::HeaderValue::from_static(status.as_str()),
        )?;
    }
    let mut extra = http::HeaderMap::new();
    app.host
        .on_response(response.status.as_u16(), &mut extra, &ctx.plugin);
    for (name, value) in &extra {
        response.insert_header(name.clone(), value.clone())?;
    }
    body::drain(session).await;
    ctx.status = response.status.as_u16();
    let send_body = !head && !body.is_empty();
    session.write_response_header(Box::new(response)).await?;
    if !send_body {
        return session.finish_body().await;
    }
    write_body(session, body, ctx).await
}

/// Write `body` after its header.
async fn write_body(session: &mut Session, body: Body, ctx: &mut RequestCtx) -> Result<()> {
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
                        // The body is not whole: abort the response (the connection closes),
                        // never end it as if it were complete.
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

/// Answer a request that failed as pingora-proxy does: its status when it names one, 400 for
/// a bad request, 502 for an upstream's failure, 500 for sluice's own, none on a dead
/// connection (nothing is written when the response's header already went out).
pub async fn failed(session: &mut Session, error: &pingora::Error) {
    let code = match (error.etype(), error.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed, _) => 0,
        (_, ErrorSource::Downstream) => 400,
        (_, ErrorSource::Upstream) => 502,
        _ => 500,
    };
    if code > 0 {
        let _ = session.respond_error(code).await;
    }
    let header = session.req_header();
    if !body::timed_out(error) && code != 0 {
        tracing::error!(
            status = code,
            method = %header.method,
            path = %super::log::loggable(header.uri.path()),
            "request failed: {error}"
        );
    } else {
        tracing::debug!(method = %header.method, path = %super::log::loggable(header.uri.path()), "request cut off: {error}");
    }
}
