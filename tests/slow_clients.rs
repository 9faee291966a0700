//! Slow and silent clients: each runs out of time on its own connection (408 or a close after
//! `server.header_timeout`, `body_timeout`, `send_timeout`) while everyone else is answered.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{noise, raw_request, tree, FakeRegistry, Sluice};

#[test]
fn slow_clients_run_out_of_time_on_their_own_connection() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    // A full document far larger than loopback's socket buffers, for a client that reads nothing.
    let blob = noise(24_000_000);
    upstream.publish_with("huge", "1.0.0", serde_json::json!({ "blob": blob }), None);
    drop(blob);
    let sluice = Sluice::start(
        &upstream,
        "left\nhuge\n",
        "[server]\nheader_timeout = \"2s\"\nbody_timeout = \"2s\"\nsend_timeout = \"2s\"\n",
    );
    let addr = sluice.server.as_ref().unwrap().addr;
    let ping = "GET /-/ping HTTP/1.1\r\nHost: x\r\n\r\n";
    let connect = || {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    };
    let read_to_end = |stream: &mut TcpStream| {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                // A reset after the close still means the server let go.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
                Err(_) => return (out, false),
            }
        }
    };

    // One byte a second (here a byte every 400 ms) never completes a header: 408, then close,
    // while everyone else is answered.
    let mut slow = connect();
    let request = b"GET /left HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n";
    let mut sent = 0;
    while sent < 12 {
        if slow.write_all(&request[sent..sent + 1]).is_err() {
            break;
        }
        sent += 1;
        assert!(raw_request(addr, ping).starts_with("HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(400));
    }
    let (answer, closed) = read_to_end(&mut slow);
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(closed, "the trickling client was never cut off");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let error: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("did not arrive"));

    // A connection that sends nothing is closed without an answer.
    let mut silent = connect();
    let (answer, closed) = read_to_end(&mut silent);
    assert!(
        closed && answer.is_empty(),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // A body that stops halfway: 408 with a JSON body.
    let mut stalled = connect();
    stalled
        .write_all(
            b"POST /-/npm/v1/security/advisories/bulk HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"left\":",
        )
        .unwrap();
    let (answer, closed) = read_to_end(&mut stalled);
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(closed);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");

    // A client that asks for 24 MB and reads none of it is let go. Its receive buffer is kept
    // small, so the answer cannot all sit in socket buffers however the host tunes them.
    let mut sleeper = connect();
    {
        use std::os::fd::AsRawFd;
        let size: libc::c_int = 64 * 1024;
        // SAFETY: a valid socket and an option value that lives across the call.
        let set = unsafe {
            libc::setsockopt(
                sleeper.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0);
    }
    sleeper
        .write_all(b"GET /huge HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n")
        .unwrap();
    // Wait for the answer to begin (rendering 24 MB takes a while in a debug build), then read
    // nothing for longer than send_timeout.
    let mut first = vec![0u8; 4096];
    let n = sleeper.read(&mut first).unwrap();
    first.truncate(n);
    std::thread::sleep(Duration::from_secs(6));
    let (rest, closed) = read_to_end(&mut sleeper);
    assert!(closed, "a client that read nothing for 6 s was not let go");
    let got = [first, rest].concat();
    assert!(got.len() < 24_000_000, "{} bytes", got.len());
    let got = String::from_utf8_lossy(&got[..got.len().min(4096)]).to_string();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let length: usize = got
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    assert!(length > 24_000_000);
    let (_, _, whole) = sluice.get("/huge", &[("accept", "application/json")]);
    assert_eq!(
        whole.len(),
        length,
        "a reading client still gets the whole document"
    );

    // An idle keep-alive connection is not a slow header: it is answered after the timeout.
    let mut idle = connect();
    idle.write_all(ping.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(3));
    idle.write_all(ping.as_bytes()).unwrap();
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let (_, _, metrics) = sluice.get("/-/metrics", &[]);
    let metrics = String::from_utf8(metrics).unwrap();
    let expired: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_client_timeouts_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(expired, 4, "{metrics}");
}
