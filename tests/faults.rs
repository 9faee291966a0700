//! The bad-input and fault catalogue: HTTP shapes, names, upstream misbehaviour, disk,
//! the whitelist file under stress, load, graceful shutdown.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::store::Fault;
use support::{eventually, raw_request, FakeRegistry, Faults, Project, Reaped, Sluice};

fn tree(upstream: &FakeRegistry) {
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("left", "1.1.0", &[]);
    upstream.publish("right", "2.0.0", &[("left", "^1.0.0")]);
}

/// `len` letters that gzip cannot shrink much (xorshift).
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

fn answers(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

// (a) HTTP and requests

#[test]
fn http_shapes_never_make_sluice_an_open_proxy_or_desync_a_connection() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "left\n", "");
    let addr = sluice.server.as_ref().unwrap().addr;
    let before = upstream.total_requests();

    let answer = raw_request(
        addr,
        "GET http://other.host/left HTTP/1.1\r\nHost: other.host\r\n\r\n",
    );
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "absolute-form: {answer}"
    );
    let answer = raw_request(
        addr,
        "CONNECT other.host:443 HTTP/1.1\r\nHost: other.host:443\r\n\r\n",
    );
    assert!(
        answer.starts_with("HTTP/1.1 405") || answer.starts_with("HTTP/1.1 400"),
        "CONNECT: {answer}"
    );
    assert_eq!(
        upstream.total_requests(),
        before,
        "nothing reached upstream"
    );

    // Smuggling shapes: at most one answer, never one for the smuggled request.
    for (what, request) in [
        ("CL+TE", "POST /left HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /right HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("two CL", "GET /left HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        ("GET body + pipelined", "GET /left/-/left-1.0.0.tgz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /right HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] {
        let answer = read_all(addr, request);
        assert!(answers(&answer) <= 1, "{what}: {answer}");
        assert!(!answer.contains("\"right\""), "{what} answered the smuggled request: {answer}");
    }
    let answer = raw_request(
        addr,
        "GET /-/ping HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    assert!(!answer.starts_with("HTTP/1.1 101"), "{answer}");

    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10_000));
    assert!(raw_request(addr, &long).starts_with("HTTP/1.1 414"));
    let big = format!(
        "GET /-/ping HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    assert!(raw_request(addr, &big).starts_with("HTTP/1.1 431"));

    // A client sending one byte at a time ties up only its own connection.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /le").unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        let answer = raw_request(addr, "GET /-/ping HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200"));
        slow.write_all(b"f").unwrap_or(());
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn pingora_is_at_a_release_with_the_2026_advisories_fixed() {
    // CVE-2026-2833 (premature Upgrade passthrough), CVE-2026-2835 (Transfer-Encoding parsing)
    // and CVE-2026-2836 (cache key) were fixed in pingora 0.8.0.
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let lock: toml::Table = lock.parse().unwrap();
    let mut seen = 0;
    for package in lock["package"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        if name == "pingora" || name.starts_with("pingora-") {
            let version = package["version"].as_str().unwrap();
            let version = nodejs_semver::Version::parse(version).unwrap();
            assert!(
                version >= nodejs_semver::Version::parse("0.8.0").unwrap(),
                "{name} {version}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 3, "pingora crates in Cargo.lock: {seen}");
}

fn read_all(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

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

#[test]
fn range_and_head_on_tarballs_follow_http() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "left\n", "");
    let full = upstream.tarball("left", "1.0.0");
    let (status, headers, body) = sluice.get("/left/-/left-1.0.0.tgz", &[("range", "bytes=0-9")]);
    assert_eq!(status, 206);
    assert_eq!(body, full[..10]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 0-9/{}", full.len())
    );
    let (status, _, body) = sluice.get("/left/-/left-1.0.0.tgz", &[("range", "bytes=-5")]);
    assert_eq!((status, body), (206, full[full.len() - 5..].to_vec()));
    let (status, _, _) = sluice.get("/left/-/left-1.0.0.tgz", &[("range", "bytes=99999-")]);
    assert_eq!(status, 416);
    let (status, _, body) = sluice.get(
        "/left/-/left-1.0.0.tgz",
        &[("range", "bytes=0-9"), ("if-range", "\"other\"")],
    );
    assert_eq!((status, body.len()), (200, full.len()));
}

// (b) Names and paths

#[test]
fn hostile_names_get_400_or_404_json_and_never_reach_upstream_or_the_disk() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "left\n", "[policy]\nread_through = true\n");
    let addr = sluice.server.as_ref().unwrap().addr;
    let long = "a".repeat(215);
    for path in [
        "/%2e%2e",
        "/%252e%252e",
        "/a%00b",
        "/%2F%2F..%2F",
        "/a\\b",
        "/..%5c..%5cetc",
        "/left;jsessionid=1",
        "/%ff%fe",
        "/@..%2fx",
        "/@.%2fx",
        "/.hidden",
        "/_private",
        "/node_modules",
        &format!("/{long}"),
        "/left/-/..%2fx.tgz",
        "/left/-/__proto__",
        "/left/-/%2e%2e%2fx.tgz",
    ] {
        let answer = raw_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 404"),
            "{path}: {answer}"
        );
        assert!(answer.contains("{\"error\":"), "{path}: {answer}");
    }
    assert_eq!(upstream.total_requests(), 0);
    assert_eq!(sluice.whitelist(), "left\n", "nothing was read through");
    // Names are case-sensitive: JSONStream is not jsonstream.
    upstream.publish("JSONStream", "1.0.0", &[]);
    let (status, doc) = sluice.get_json("/JSONStream");
    assert_eq!(status, 200);
    assert_eq!(doc["name"], "JSONStream");
    let (status, _) = sluice.get_json("/jsonstream");
    assert_eq!(status, 404);
}

// (c) Upstream misbehaviour

/// Start a sluice with a short timeout; `left` is stored (and stale after 1 s).
fn with_stored_left(extra: &str) -> (FakeRegistry, Sluice) {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    // `fresh` is not listed (read-through would fetch it), so no refresh fetches it first.
    upstream.publish("fresh", "1.0.0", &[]);
    let sluice = Sluice::start(
        &upstream,
        "left\n",
        &format!("[upstream]\ntimeout = \"1s\"\n[policy]\nrefresh = \"1s\"\nread_through = true\n{extra}"),
    );
    let (status, _) = sluice.get_json("/left");
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(1100));
    (upstream, sluice)
}

fn assert_fault(faults: Faults, expected: &[u16], message: &str, extra: &str) {
    let (upstream, sluice) = with_stored_left(extra);
    upstream.set_faults(faults);
    // Nothing stored: a JSON error, nothing kept.
    let (status, body) = sluice.get_json("/fresh");
    assert!(expected.contains(&status), "{message}: {status} {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{message}: {body}"
    );
    let registry = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(
        runtime
            .block_on(registry.store.packument("fresh"))
            .unwrap()
            .is_none(),
        "{message}: stored"
    );
    // A stored copy that is due for revalidation is served (stale) instead.
    runtime
        .block_on(registry.packuments.mark_stale("left"))
        .unwrap();
    let (status, headers, body) = sluice.get("/left", &[]);
    assert_eq!(status, 200, "{message}");
    assert_eq!(headers["x-cache-status"], "STALE", "{message}");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["name"], "left", "{message}");
}

#[test]
fn refused_connections_and_5xx_give_502_or_the_stale_copy() {
    assert_fault(
        Faults {
            down: true,
            ..Faults::default()
        },
        &[502],
        "refused",
        "",
    );
    assert_fault(
        Faults {
            status: Some(503),
            ..Faults::default()
        },
        &[502],
        "503",
        "",
    );
}

#[test]
fn timeouts_stalls_and_trickles_give_504_or_the_stale_copy() {
    assert_fault(
        Faults {
            delay: Some(Duration::from_secs(3)),
            ..Faults::default()
        },
        &[504],
        "timeout before headers",
        "",
    );
    assert_fault(
        Faults {
            stall_after: Some(10),
            ..Faults::default()
        },
        &[504, 502],
        "stall mid-body",
        "",
    );
    assert_fault(
        Faults {
            drip: Some(Duration::from_millis(400)),
            ..Faults::default()
        },
        &[504, 502],
        "1 byte every 0.4 s",
        "",
    );
}

#[test]
fn bad_bodies_are_refused_and_never_stored() {
    assert_fault(
        Faults {
            truncate: true,
            ..Faults::default()
        },
        &[502],
        "truncated",
        "",
    );
    assert_fault(
        Faults {
            html: true,
            ..Faults::default()
        },
        &[502],
        "HTML with 200",
        "",
    );
    assert_fault(
        Faults {
            body: Some(("application/json".into(), b"{not json".to_vec())),
            ..Faults::default()
        },
        &[502],
        "invalid JSON",
        "",
    );
    assert_fault(
        Faults {
            body: Some((
                "application/json".into(),
                br#"{"name":"evil","versions":{}}"#.to_vec(),
            )),
            ..Faults::default()
        },
        &[502],
        "another package's document",
        "",
    );
    assert_fault(
        Faults {
            gzip_bomb: Some(64 << 20),
            ..Faults::default()
        },
        &[502],
        "gzip bomb",
        "[upstream]\nmax_packument = \"1MiB\"\n",
    );
    assert_fault(
        Faults {
            body: Some(("application/json".into(), vec![b' '; 2 << 20])),
            ..Faults::default()
        },
        &[502],
        "a document over max_packument",
        "[upstream]\nmax_packument = \"1MiB\"\n",
    );
    assert_fault(
        Faults {
            redirect: Some("http://169.254.169.254/latest/meta-data/".into()),
            ..Faults::default()
        },
        &[502],
        "redirect to another host",
        "",
    );
}

#[test]
fn repeated_failures_open_the_circuit_and_retry_after_is_honoured() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "left\nright\n", "");
    upstream.set_faults(Faults {
        status: Some(429),
        retry_after: Some(30),
        ..Faults::default()
    });
    let (status, _) = sluice.get_json("/left");
    assert_eq!(status, 502);
    let after_first = upstream.total_requests();
    for _ in 0..10 {
        let (status, body) = sluice.get_json("/right");
        assert_eq!(status, 502);
        assert!(
            body["error"].as_str().unwrap().contains("retrying in"),
            "{body}"
        );
    }
    assert_eq!(
        upstream.total_requests(),
        after_first,
        "upstream is left alone while it asked to"
    );
}

// (d) Disk

#[test]
fn a_full_disk_still_serves_the_bytes_and_keeps_nothing_half_written() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "left\n", "");
    let registry = sluice.server.as_ref().unwrap().app.clone();
    sluice.store.set(Fault::DiskFull, true);
    let (status, _, bytes) = sluice.get("/left/-/left-1.0.0.tgz", &[]);
    assert_eq!(status, 200);
    assert_eq!(bytes, upstream.tarball("left", "1.0.0"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(!runtime
        .block_on(registry.store.has_tarball("left", "left-1.0.0.tgz"))
        .unwrap());
    sluice.store.set(Fault::DiskFull, false);
    let (status, _, bytes) = sluice.get("/left/-/left-1.1.0.tgz", &[]);
    assert_eq!(status, 200);
    assert_eq!(bytes, upstream.tarball("left", "1.1.0"));
    assert!(runtime
        .block_on(registry.store.has_tarball("left", "left-1.1.0.tgz"))
        .unwrap());
}

#[test]
fn kill_9_during_writes_leaves_a_store_that_serves_whole_verified_entries() {
    let upstream = FakeRegistry::start();
    for i in 0..60 {
        upstream.publish(&format!("k{i}"), "1.0.0", &[]);
    }
    let dir = Sluice::start(&upstream, "", "[policy]\nmode = \"mirror\"\n").stop();
    let config = dir.path().join("sluice.toml");
    let addr = listen_addr(&config);
    for round in 0..3 {
        let mut child = Reaped(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["serve", "--config"])
                .arg(&config)
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        assert!(eventually(10, || TcpStream::connect(addr).is_ok()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut i = w;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let name = format!("k{}", i % 60);
                        if let Ok(mut stream) = TcpStream::connect(addr) {
                            let request = format!("GET /{name}/-/{name}-1.0.0.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                            let _ = stream.write_all(request.as_bytes());
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                            let _ = stream.read_to_end(&mut Vec::new());
                        }
                        i += 4;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + 100 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for worker in workers {
            worker.join().unwrap();
        }
    }
    let out = support::sluice_cli(&config, &["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    upstream.set_down(true);
    let sluice = Sluice::start_in(dir, &upstream, "[policy]\nmode = \"mirror\"\n");
    let mut served = 0;
    for i in 0..60 {
        let name = format!("k{i}");
        let (status, _, bytes) = sluice.get(&format!("/{name}/-/{name}-1.0.0.tgz"), &[]);
        if status == 200 {
            assert_eq!(bytes, upstream.tarball(&name, "1.0.0"), "{name}");
            served += 1;
        } else {
            assert_eq!(status, 502, "{name}: not stored, and upstream is down");
        }
    }
    assert!(served > 0, "some tarballs were stored before the kills");
}

// (e) The whitelist file

#[test]
fn a_server_and_add_package_writing_one_store_at_once_lose_nothing() {
    let upstream = FakeRegistry::start();
    let names: Vec<String> = (0..8).map(|i| format!("shared-{i}")).collect();
    for name in &names {
        upstream.publish(name, "1.0.0", &[]);
    }
    let wants: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "*")).collect();
    upstream.publish("app", "1.0.0", &wants);
    // The server revalidates each document every second while add-package merges the same ones.
    let sluice = Sluice::start(
        &upstream,
        "",
        "[policy]\nwhitelist = \"whitelist\"\nread_through = true\nrefresh = \"1s\"\n",
    );
    for round in 1..=3 {
        for name in &names {
            upstream.publish(name, &format!("1.{round}.0"), &[]);
        }
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                for _ in 0..6 {
                    for name in &names {
                        let (status, doc) = sluice.get_json(name);
                        assert_eq!(status, 200, "{name}");
                        // The document may be a second behind upstream; ask for what it lists.
                        let version = format!("1.{round}.0");
                        if doc["versions"].get(&version).is_some() {
                            let file = format!("/{name}/-/{name}-{version}.tgz");
                            let (status, _, _) = sluice.get(&file, &[]);
                            assert_eq!(status, 200, "{file}");
                        }
                    }
                    std::thread::sleep(Duration::from_millis(150));
                }
            });
            let out = support::sluice_cli(&sluice.config_path, &["add-package", "app"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            reader.join().unwrap();
        });
    }
    let config = sluice.config_path.clone();
    let dir = sluice.stop();
    let out = support::sluice_cli(&config, &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("0 corrupt, 0 missing"), "{report}");

    // Every version either process stored is there, whole, with upstream gone.
    upstream.set_down(true);
    let sluice = Sluice::start_in(dir, &upstream, "");
    for name in &names {
        let (status, doc) = sluice.get_json(name);
        assert_eq!(status, 200, "{name}");
        for round in 0..=3 {
            let version = format!("1.{round}.0");
            assert!(
                doc["versions"].get(&version).is_some(),
                "{name}@{version}: {doc}"
            );
            if round == 0 {
                continue; // no one asked for its tarball
            }
            let (status, _, bytes) = sluice.get(&format!("/{name}/-/{name}-{version}.tgz"), &[]);
            assert_eq!(status, 200, "{name}@{version}");
            assert_eq!(bytes, upstream.tarball(name, &version), "{name}@{version}");
        }
    }
}

#[test]
fn a_100000_line_whitelist_loads_and_reloads() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let mut text = String::from("# generated\n");
    for i in 0..100_000 {
        text.push_str(&format!("package-{i}\n"));
    }
    text.push_str("left\n");
    let sluice = Sluice::start(&upstream, &text, "");
    assert_eq!(sluice.get_json("/left").0, 200);
    assert_eq!(sluice.get_json("/right").0, 403);
    text.push_str("right\n");
    std::fs::write(sluice.whitelist_path(), &text).unwrap();
    assert!(eventually(5, || sluice.get_json("/right").0 == 200));
}

#[test]
fn an_unreadable_whitelist_keeps_the_last_good_list() {
    // Root reads any file whatever its mode: run sluice as `nobody` when the tests run as root.
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if root && Command::new("setpriv").arg("--version").output().is_err() {
        support::cannot_run("running as root without setpriv (util-linux)");
        return;
    }
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let dir = Sluice::start(&upstream, "left\n", "").stop();
    let config = dir.path().join("sluice.toml");
    let addr = listen_addr(&config);
    let mut command = if root {
        for entry in support::paths_under(dir.path()) {
            std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).unwrap();
        }
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_sluice"),
        ]);
        command
    } else {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Reaped(
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap(),
    );
    assert!(eventually(10, || TcpStream::connect(addr).is_ok()));
    let status = |path: &str| {
        raw_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(status("/left"), "200");
    let whitelist = dir.path().join("whitelist");
    std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status("/left"), "200", "chmod 000 keeps the last good list");
    std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&whitelist, "left\nright\n").unwrap();
    assert!(eventually(5, || status("/right") == "200"));
    child.kill().unwrap();
    child.wait().unwrap();
}

// (f) Load

#[test]
fn ten_thousand_concurrent_misses_make_one_upstream_fetch_with_identical_bytes() {
    let upstream = FakeRegistry::start();
    // A tarball of about 180 KB: one copy per client would be 1.8 GB.
    let blob = noise(300_000);
    upstream.publish_with("wide", "1.0.0", serde_json::json!({ "blob": blob }), None);
    upstream.set_faults(Faults {
        delay: Some(Duration::from_millis(500)),
        ..Faults::default()
    });
    // sluice runs as its own process: 10,000 connections on each side fit the fd limits.
    let dir = Sluice::start(&upstream, "wide\n", "[log]\nlevel = \"error\"\n").stop();
    let (mut child, addr) = serve_binary(dir.path());
    let expected = Arc::new(upstream.tarball("wide", "1.0.0"));
    assert!(expected.len() > 150_000, "{}", expected.len());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let request = "GET /wide/-/wide-1.0.0.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // The first client gives up at once; the fetch it started completes anyway.
    runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let clients: usize = std::env::var("SLUICE_LOAD_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let answers: Vec<Result<(), String>> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let expected = expected.clone();
            tasks.spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = loop {
                    match tokio::net::TcpStream::connect(addr).await {
                        Ok(stream) => break stream,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await.unwrap();
                let split = answer
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap_or(0);
                let head = String::from_utf8_lossy(&answer[..split]).to_string();
                if !head.starts_with("HTTP/1.1 200") {
                    return Err(head);
                }
                if answer[split + 4..] != expected[..] {
                    return Err(format!(
                        "{head}\n{} bytes that differ",
                        answer.len() - split - 4
                    ));
                }
                Ok(())
            });
        }
        let mut out = Vec::new();
        while let Some(result) = tasks.join_next().await {
            out.push(result.unwrap());
        }
        out
    });
    let peak_kb = status_kb(child.id(), "VmHWM:");
    // Once the clients are gone, the memory their connections took goes back to the system
    // (the trimmer runs every 10 s).
    let pid = child.id();
    assert!(
        eventually(30, || rss_kb(pid) < peak_kb / 2),
        "RSS {} KiB after the clients left, peak {peak_kb} KiB",
        rss_kb(pid)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(answers.len(), clients);
    for answer in answers {
        answer.unwrap();
    }
    assert_eq!(upstream.count("/wide/-/wide-1.0.0.tgz"), 1);
    assert_eq!(upstream.count("/wide"), 1);
    // Bounded memory: well under one copy per client (measured: about 500 MiB with the debug
    // binary, mostly pingora's per-connection state).
    assert!(peak_kb < 1024 * 1024, "peak RSS {peak_kb} KiB");
}

#[test]
fn a_refresh_due_under_load_makes_exactly_one_revalidation() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "left\n", "");
    assert_eq!(sluice.get_json("/left").0, 200);
    assert_eq!(upstream.count("/left"), 1);
    let registry = sluice.server.as_ref().unwrap().app.clone();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(registry.packuments.mark_stale("left"))
        .unwrap();
    upstream.set_faults(Faults {
        delay: Some(Duration::from_millis(300)),
        ..Faults::default()
    });
    let url = sluice.url();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let (status, _, _) = support::http_get(&format!("{url}left"), &[]);
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(
        upstream.count("/left"),
        2,
        "one revalidation for 200 requests"
    );
}

#[test]
fn a_short_soak_of_mixed_requests_keeps_memory_flat_and_makes_no_error() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    for i in 0..30 {
        upstream.publish(&format!("soak-{i}"), "1.0.0", &[]);
    }
    let dir = Sluice::start(
        &upstream,
        "left\nright\n",
        "[policy]\nread_through = true\n",
    )
    .stop();
    let (mut child, addr) = serve_binary(dir.path());
    let url = format!("http://{addr}/");
    let seconds: u64 = std::env::var("SLUICE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    sluice::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let run = |secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..4usize {
                let client = client.clone();
                let url = url.clone();
                tasks.spawn(async move {
                    let mut i = worker;
                    while Instant::now() < deadline {
                        let path = match i % 5 {
                            0 => "left".to_string(),
                            1 => format!("soak-{}", i % 30),
                            2 => format!("soak-{0}/-/soak-{0}-1.0.0.tgz", i % 30),
                            3 => "right/2.0.0".to_string(),
                            _ => "-/ping".to_string(),
                        };
                        let response = client
                            .get(format!("{url}{path}"))
                            .header("accept-encoding", "gzip")
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(response.status().as_u16(), 200, "{path}");
                        response.bytes().await.unwrap();
                        i += 4;
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        })
    };
    run(2);
    let warm = rss_kb(child.id());
    run(seconds);
    let after = rss_kb(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        after < warm + 32 * 1024,
        "RSS grew from {warm} kB to {after} kB"
    );
}

fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The address a test configuration listens on.
fn listen_addr(config: &std::path::Path) -> std::net::SocketAddr {
    let text = std::fs::read_to_string(config).unwrap();
    text.lines()
        .find(|l| l.starts_with("listen"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Run `sluice serve` on the folder's configuration; returns the child and its address.
fn serve_binary(dir: &std::path::Path) -> (Reaped, std::net::SocketAddr) {
    let config = dir.join("sluice.toml");
    let addr = listen_addr(&config);
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child = Reaped(child);
    assert!(eventually(10, || TcpStream::connect(addr).is_ok()));
    (child, addr)
}

// Graceful shutdown

#[test]
fn sigterm_finishes_in_flight_responses_within_the_grace_period() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let dir = Sluice::start(&upstream, "left\n", "[server]\ngrace_period = \"5s\"\n").stop();
    let config = dir.path().join("sluice.toml");
    let addr = listen_addr(&config);
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(10, || TcpStream::connect(addr).is_ok()));
    upstream.set_faults(Faults {
        delay: Some(Duration::from_millis(1500)),
        ..Faults::default()
    });
    let in_flight =
        std::thread::spawn(move || raw_request(addr, "GET /left HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let answer = in_flight.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"name\":\"left\""), "{answer}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.code().is_some(), "{:?}", out.status);
    assert!(started.elapsed() < Duration::from_secs(15));
    // One JSON line per request: method, path, status, cache status, bytes, ms, request id.
    let logs = String::from_utf8_lossy(&out.stderr);
    let line = logs
        .lines()
        .find(|l| l.contains("\"route\":\"packument\""))
        .unwrap_or_else(|| panic!("no access log line:\n{logs}"));
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    let fields = &entry["fields"];
    assert_eq!(fields["status"], 200, "{line}");
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["path"], "/left");
    assert_eq!(fields["cache"], "MISS");
    assert!(
        fields["id"].is_u64() && fields["ms"].is_f64() && fields["bytes"].is_u64(),
        "{line}"
    );
    let _ = Project::new; // the npm helpers are not needed here
}

#[test]
fn an_idle_server_exits_on_sigterm_without_waiting_the_grace_period() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    // A grace period far longer than the test waits: only requests in flight are waited for.
    let dir = Sluice::start(&upstream, "left\n", "[server]\ngrace_period = \"120s\"\n").stop();
    let config = dir.path().join("sluice.toml");
    let addr = listen_addr(&config);
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    assert!(eventually(10, || TcpStream::connect(addr).is_ok()));
    // An idle keep-alive connection stays open; it is not a request in flight.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /-/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let _ = idle.read(&mut buf).unwrap();
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(
        eventually(60, || child.0.try_wait().unwrap().is_some()),
        "sluice was still running a minute after SIGTERM with nothing in flight"
    );
}
