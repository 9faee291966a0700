//! Disk faults: a full disk, and `kill -9` in the middle of writes.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sluice::store::Fault;
use support::process::listen_addr;
use support::{eventually, tree, FakeRegistry, Reaped, Sluice};

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
