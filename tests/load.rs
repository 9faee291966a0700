//! Load: ten thousand concurrent misses, a refresh due under load, a short soak; one upstream
//! fetch per document and memory that stays bounded.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::process::{rss_kb, serve_binary, status_kb};
use support::{eventually, noise, tree, FakeRegistry, Faults, Sluice};

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
    sluice::crypto::install_crypto_provider();
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
