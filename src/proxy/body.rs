//! Reading a request body, bounded: a larger one is refused before or while it arrives.

use pingora::protocols::http::ServerSession as Session;

use crate::api::Answer;

/// Read a request body of at most `limit` bytes; a larger one is 413 (the connection closes
/// without reading the rest), a slow one 408.
pub async fn read(session: &mut Session, limit: usize, what: &str) -> Result<bytes::Bytes, Answer> {
    let too_large = || {
        Answer::error(
            413,
            format!("the {what} request is larger than {limit} bytes"),
        )
    };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        session.set_keepalive(None);
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    session.set_keepalive(None);
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
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

/// Drain a small request body nobody used, so the connection stays usable; a large one (or
/// one that fails) closes the connection instead.
pub async fn drain(session: &mut Session) {
    if session.is_body_empty() {
        return;
    }
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

/// Whether `error` is a client running out of time (the connection's deadlines).
pub fn timed_out(error: &pingora::Error) -> bool {
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
