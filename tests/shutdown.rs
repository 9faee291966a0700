//! Graceful shutdown: SIGTERM finishes the requests in flight within `server.grace_period`,
//! and an idle server exits at once.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::process::listen_addr;
use support::{eventually, raw_request, tree, FakeRegistry, Faults, Reaped, Sluice};

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
