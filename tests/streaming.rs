//! Tarballs larger than `storage.hot_tarball_max` stream: from upstream to the client and into
//! the store at once, verified as they flow, and from the store afterwards. A body is never
//! completed unless it is whole and verified.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::json;
use support::{eventually, FakeRegistry, Faults, Sluice};

/// Every tarball streams (none is held whole in memory).
const STREAM_ALL: &str = "[storage]\ndir = \"data\"\nmemory = \"64MiB\"\nhot_tarball_max = \"0\"\n";

fn upstream() -> FakeRegistry {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("left", "1.1.0", &[]);
    upstream
}

/// GET `path`, reading the body to its end: the status, the announced length, and the body, or
/// the error that cut it off.
fn fetch(sluice: &Sluice, path: &str) -> (u16, Option<u64>, Result<Vec<u8>, String>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!("{}{}", sluice.url(), path.trim_start_matches('/'));
    runtime.block_on(async {
        let client = reqwest::Client::builder().no_gzip().build().unwrap();
        let response = client.get(url).send().await.unwrap();
        let status = response.status().as_u16();
        let length = response.content_length();
        let body = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("{e:?}"));
        (status, length, body)
    })
}

fn has_tarball(sluice: &Sluice, name: &str, file: &str) -> bool {
    let app = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(app.store.has_tarball(name, file)).unwrap()
}

#[test]
fn a_large_tarball_streams_from_upstream_then_from_the_store_with_range_and_head() {
    let upstream = upstream();
    let sluice = Sluice::start(&upstream, "left\n", STREAM_ALL);
    let expected = upstream.tarball("left", "1.1.0");
    let (status, headers, body) = sluice.get("/left/-/left-1.1.0.tgz", &[]);
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache-status"], "MISS");
    assert_eq!(body, expected);
    assert!(has_tarball(&sluice, "left", "left-1.1.0.tgz"));
    // From the store, streaming, with a stable ETag and the same bytes.
    let (status, headers, body) = sluice.get("/left/-/left-1.1.0.tgz", &[]);
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache-status"], "HIT");
    assert_eq!(
        headers["content-length"],
        expected.len().to_string().as_str()
    );
    assert_eq!(body, expected);
    let etag = headers["etag"].to_str().unwrap().to_string();
    let (status, _, body) = sluice.get("/left/-/left-1.1.0.tgz", &[("if-none-match", &etag)]);
    assert_eq!((status, body.len()), (304, 0));
    // A range of a streamed body.
    let (status, headers, body) = sluice.get("/left/-/left-1.1.0.tgz", &[("range", "bytes=10-99")]);
    assert_eq!(status, 206);
    assert_eq!(
        headers["content-range"],
        format!("bytes 10-99/{}", expected.len()).as_str()
    );
    assert_eq!(body, expected[10..100].to_vec());
    // HEAD: the length, no body.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, length, body) = runtime.block_on(async {
        let response = reqwest::Client::new()
            .head(format!("{}left/-/left-1.1.0.tgz", sluice.url()))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.headers()["content-length"]
                .to_str()
                .unwrap()
                .to_string(),
            response.bytes().await.unwrap().len(),
        )
    });
    assert_eq!((status, body), (200, 0));
    assert_eq!(length, expected.len().to_string());
    // One upstream fetch for all of it.
    assert_eq!(upstream.count("/left/-/left-1.1.0.tgz"), 1);
}

#[test]
fn a_streamed_tarball_that_fails_its_integrity_is_aborted_and_nothing_is_stored() {
    let upstream = upstream();
    let sluice = Sluice::start(&upstream, "left\n", STREAM_ALL);
    upstream.set_faults(Faults {
        corrupt_tarballs: true,
        ..Faults::default()
    });
    let expected = upstream.tarball("left", "1.1.0");
    let (status, length, body) = fetch(&sluice, "/left/-/left-1.1.0.tgz");
    assert_eq!(status, 200, "the answer started before the end was checked");
    assert_eq!(length, Some(expected.len() as u64));
    match body {
        Err(_) => {}
        Ok(body) => panic!(
            "a tarball that failed its check was completed: {} of {} bytes",
            body.len(),
            expected.len()
        ),
    }
    assert!(!has_tarball(&sluice, "left", "left-1.1.0.tgz"));
    // Once upstream sends the right bytes, they are served whole and kept.
    upstream.set_faults(Faults::default());
    let (status, _, body) = fetch(&sluice, "/left/-/left-1.1.0.tgz");
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), expected);
    assert!(has_tarball(&sluice, "left", "left-1.1.0.tgz"));
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Flip the last byte of the stored content whose bytes are `expected`.
fn corrupt_stored(sluice: &Sluice, expected: &[u8]) {
    let content = files_under(&sluice.dir.path().join("data/content-v2"))
        .into_iter()
        .find(|path| std::fs::read(path).unwrap() == expected)
        .unwrap();
    let mut bytes = std::fs::read(&content).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&content, bytes).unwrap();
}

#[test]
fn a_stored_tarball_corrupted_on_disk_is_never_served_as_good() {
    let upstream = upstream();
    let sluice = Sluice::start(&upstream, "left\n", STREAM_ALL);
    let expected = upstream.tarball("left", "1.0.0");
    let (status, _, body) = fetch(&sluice, "/left/-/left-1.0.0.tgz");
    assert_eq!((status, body.unwrap()), (200, expected.clone()));
    // Over plain HTTP/1 a stored tarball goes out of its file (sendfile), checked whole before
    // its first use: a corrupt one is found before the answer starts, dropped and fetched
    // again, so the client gets the right bytes.
    corrupt_stored(&sluice, &expected);
    let (status, _, body) = fetch(&sluice, "/left/-/left-1.0.0.tgz");
    assert_eq!((status, body.unwrap()), (200, expected.clone()));
    assert_eq!(upstream.count("/left/-/left-1.0.0.tgz"), 2);
    // Served from its file now (checked); a change of the file after that check is seen
    // (its size and times are compared each time) and checked again.
    let (status, _, body) = fetch(&sluice, "/left/-/left-1.0.0.tgz");
    assert_eq!((status, body.unwrap()), (200, expected.clone()));
    assert_eq!(upstream.count("/left/-/left-1.0.0.tgz"), 2);
    corrupt_stored(&sluice, &expected);
    let (status, _, body) = fetch(&sluice, "/left/-/left-1.0.0.tgz");
    assert_eq!((status, body.unwrap()), (200, expected.clone()));
    assert_eq!(upstream.count("/left/-/left-1.0.0.tgz"), 3);
    let (_, _, metrics) = sluice.get("/-/metrics", &[]);
    assert!(
        String::from_utf8_lossy(&metrics).contains("op=\"tarball_file\",outcome=\"found\""),
        "the file path was not taken"
    );
}

#[test]
fn a_stored_tarball_corrupted_on_disk_is_aborted_when_streamed_then_fetched_again() {
    // The streaming path (TLS and HTTP/2 connections, and any store without local files):
    // the corruption is found at the end of the body, which is aborted, never completed.
    let upstream = upstream();
    let sluice = Sluice::start(&upstream, "left\n", STREAM_ALL);
    let expected = upstream.tarball("left", "1.0.0");
    let (status, _, body) = fetch(&sluice, "/left/-/left-1.0.0.tgz");
    assert_eq!((status, body.unwrap()), (200, expected.clone()));
    corrupt_stored(&sluice, &expected);
    let app = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let body = runtime.block_on(async {
        let found = app
            .store
            .tarball("left", "left-1.0.0.tgz")
            .await
            .unwrap()
            .unwrap();
        let chunks: Vec<_> = futures::StreamExt::collect(found.stream).await;
        chunks.into_iter().collect::<Result<Vec<_>, _>>()
    });
    assert!(body.is_err(), "a corrupt stored tarball was completed");
    // The corrupt entry was dropped: the next request fetches it again, whole.
    let (status, _, body) = fetch(&sluice, "/left/-/left-1.0.0.tgz");
    assert_eq!((status, body.unwrap()), (200, expected));
    assert_eq!(upstream.count("/left/-/left-1.0.0.tgz"), 2);
}

#[test]
fn concurrent_requests_for_one_uncached_large_tarball_make_one_upstream_fetch() {
    let upstream = upstream();
    let sluice = Sluice::start(&upstream, "left\n", STREAM_ALL);
    // The packument first, so only the tarball is in question.
    assert_eq!(sluice.get_json("/left").0, 200);
    upstream.set_faults(Faults {
        delay: Some(Duration::from_millis(300)),
        ..Faults::default()
    });
    let expected = upstream.tarball("left", "1.1.0");
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..16)
            .map(|_| s.spawn(|| fetch(&sluice, "/left/-/left-1.1.0.tgz")))
            .collect();
        for client in clients {
            let (status, _, body) = client.join().unwrap();
            assert_eq!(status, 200);
            assert!(body.unwrap() == expected, "a body differs");
        }
    });
    assert_eq!(upstream.count("/left/-/left-1.1.0.tgz"), 1);
}

#[test]
fn a_merge_that_loses_its_race_reads_and_merges_again() {
    let upstream = upstream();
    let sluice = Sluice::start(&upstream, "left\n", "");
    sluice.store.conflict_next(3);
    let (status, doc) = sluice.get_json("/left");
    assert_eq!(status, 200);
    assert!(doc["versions"]["1.1.0"].is_object());
    assert_eq!(
        sluice.store.conflicts_left(),
        0,
        "the merges did not go through the store"
    );
    let app = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stored = runtime.block_on(app.store.packument("left")).unwrap();
    assert!(stored.is_some(), "the merge gave up");
}

#[test]
fn a_version_min_age_hides_shows_when_it_comes_of_age_not_a_refresh_later() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    // 1.1.0 comes of age a few seconds from now (min-age is one day).
    let published = SystemTime::now() - Duration::from_secs(86_400 - 4);
    let at = humantime::format_rfc3339_millis(published).to_string();
    upstream.publish_with("left", "1.1.0", json!({}), Some(&at));
    let sluice = Sluice::start(
        &upstream,
        "left\n",
        "[policy]\nwhitelist = \"whitelist\"\nrefresh = \"1h\"\n\n[[plugins]]\nkind = \"min-age\"\ndays = 1\n",
    );
    let (status, doc) = sluice.get_json("/left");
    assert_eq!(status, 200);
    assert!(doc["versions"].get("1.1.0").is_none(), "shown too early");
    let (status, _, _) = sluice.get("/left/-/left-1.1.0.tgz", &[]);
    assert_eq!(status, 403);
    // Without a refresh (an hour away), the render and the tarball refusal expire when the
    // version comes of age.
    assert!(eventually(30, || {
        sluice.get_json("/left").1["versions"]
            .get("1.1.0")
            .is_some()
    }));
    let (status, _, body) = sluice.get("/left/-/left-1.1.0.tgz", &[]);
    assert_eq!((status, body), (200, upstream.tarball("left", "1.1.0")));
    assert_eq!(upstream.count("/left"), 1, "the document was fetched again");
}
