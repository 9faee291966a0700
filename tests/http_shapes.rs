//! Requests sluice refuses or answers by HTTP's rules: absolute-form and `CONNECT` (never an
//! open proxy), smuggling shapes, oversize targets and headers, ranges, hostile package names;
//! and pingora held at a release with the 2026 advisories fixed.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{answers, raw_request, read_all, tree, FakeRegistry, Sluice};

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
