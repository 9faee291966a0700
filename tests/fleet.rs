//! A fleet: several sluice nodes on one S3-compatible bucket (a real SeaweedFS on 127.0.0.1).
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sluice::store::{S3Store, SharedStore};
use support::faults::{Fault, FaultProxy};
use support::seaweed::{Seaweed, ACCESS_KEY, SECRET_KEY};
use support::{eventually, FakeRegistry, Project, Reaped, Sluice};

fn s3_config(seaweed: &Seaweed, prefix: &str) -> sluice::config::S3Config {
    let text = format!(
        "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n{}",
        seaweed.storage("data", prefix)
    );
    let config =
        sluice::config::Config::parse(&text, "fleet.toml", std::path::Path::new("/tmp")).unwrap();
    config.storage.s3.unwrap()
}

fn bucket(seaweed: &Seaweed, prefix: &str) -> SharedStore {
    let config = s3_config(seaweed, prefix);
    Arc::new(
        S3Store::connect(
            &config,
            "test",
            Duration::from_secs(3),
            Duration::from_secs(10),
        )
        .unwrap(),
    )
}

#[test]
fn two_nodes_on_one_bucket_serve_each_others_packages_with_upstream_down() {
    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("right", "2.0.0", &[("left", "^1.0.0")]);
    let node = |name: &str| {
        format!(
            "{}\n[policy]\nwhitelist = \"whitelist\"\nread_through = true\n\n[cluster]\nnode = \"{name}\"\n",
            seaweed.storage("data", "two/")
        )
    };
    let a = Sluice::start(&upstream, "", &node("a"));
    let b = Sluice::start(&upstream, "", &node("b"));
    // Read-through on a.
    let project = Project::new();
    project.install(&a.url(), &["right"]);
    assert_eq!(project.require("left"), "left@1.0.0");
    // Upstream gone: b serves what a brought in, from the bucket.
    upstream.set_down(true);
    let (status, doc) = b.get_json("/right");
    assert_eq!(status, 200, "{doc}");
    let (status, _, body) = b.get("/left/-/left-1.0.0.tgz", &[]);
    assert_eq!((status, body), (200, upstream.tarball("left", "1.0.0")));
    let again = Project::new();
    again.install(&b.url(), &["right"]);
    assert_eq!(again.require("right"), "right@2.0.0");
    let (_, status) = b.get_json("/-/sluice/status");
    assert_eq!(
        (status["node"].as_str(), status["store"].as_str()),
        (Some("b"), Some("s3"))
    );
}

#[test]
fn two_nodes_merging_one_packument_while_upstream_publishes_lose_no_version() {
    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    let upstream = FakeRegistry::start();
    upstream.publish("p", "1.0.0", &[]);
    let node = |name: &str| {
        format!(
            "{}\n[policy]\nwhitelist = \"whitelist\"\nrefresh = \"1s\"\n\n[cluster]\nnode = \"{name}\"\n",
            seaweed.storage("data", "merge/")
        )
    };
    let a = Sluice::start(&upstream, "p\n", &node("a"));
    let b = Sluice::start(&upstream, "p\n", &node("b"));
    for minor in 1..=6 {
        upstream.publish("p", &format!("1.{minor}.0"), &[]);
        // Both nodes revalidate (and merge into the bucket) at once.
        for sluice in [&a, &b] {
            let app = sluice.server.as_ref().unwrap().app.clone();
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(app.packuments.mark_stale("p")).unwrap();
        }
        std::thread::scope(|s| {
            for sluice in [&a, &b] {
                s.spawn(move || {
                    let app = sluice.server.as_ref().unwrap().app.clone();
                    let runtime = tokio::runtime::Runtime::new().unwrap();
                    let (result, _) = runtime.block_on(app.packuments.fetch("p"));
                    result.unwrap();
                });
            }
        });
        // Upstream forgets the previous version: only the bucket remembers it.
        upstream.unpublish_version("p", &format!("1.{}.0", minor - 1));
    }
    upstream.set_down(true);
    let store = bucket(&seaweed, "merge/");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stored = runtime.block_on(store.packument("p")).unwrap().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&stored.bytes).unwrap();
    for minor in 0..=6 {
        let version = format!("1.{minor}.0");
        assert!(
            doc["versions"].get(&version).is_some(),
            "{version} was lost"
        );
    }
}

/// A sluice in its own process (so it can be killed with SIGKILL), on `port`.
fn spawn_node(
    dir: &std::path::Path,
    upstream: &FakeRegistry,
    seaweed: &Seaweed,
    name: &str,
) -> (Reaped, String) {
    let port = sluice::server::free_port().unwrap();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(dir.join(format!("{name}.whitelist")), "").unwrap();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[upstream]\nregistry = \"{0}\"\nchanges = \"{0}\"\n\n{1}\n\
             [policy]\nmode = \"mirror\"\n\n[mirror]\nsince = \"0\"\nbatch = 10\ninterval = \"1s\"\n\n\
             [cluster]\nnode = \"{name}\"\nlease = \"3s\"\n",
            upstream.url(),
            seaweed.storage(&format!("{name}-data"), "lead/")
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Reaped(child), format!("127.0.0.1:{port}"))
}

fn leader_of(addr: &str) -> Option<bool> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /-/sluice/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    let status: serde_json::Value = serde_json::from_str(body).ok()?;
    status["leader"].as_bool()
}

#[test]
fn exactly_one_node_leads_and_another_takes_over_when_it_is_killed() {
    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    // Mirror mode: the leader follows the replication feed, slowly enough to be killed midway.
    let upstream = FakeRegistry::start();
    for i in 0..120 {
        upstream.publish(&format!("pkg-{i}"), "1.0.0", &[]);
    }
    upstream.set_faults(support::Faults {
        delay: Some(Duration::from_millis(200)),
        ..support::Faults::default()
    });
    let bucket = bucket(&seaweed, "lead/");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stored = |name: &str| {
        runtime
            .block_on(bucket.packument(name))
            .ok()
            .flatten()
            .is_some()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<(Reaped, String)> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| spawn_node(dir.path(), &upstream, &seaweed, name))
        .collect();
    let leaders = |nodes: &[(Reaped, String)]| -> Option<Vec<usize>> {
        let states: Option<Vec<bool>> = nodes.iter().map(|(_, addr)| leader_of(addr)).collect();
        Some(
            states?
                .iter()
                .enumerate()
                .filter(|(_, l)| **l)
                .map(|(i, _)| i)
                .collect(),
        )
    };
    assert!(eventually(60, || leaders(&nodes).is_some_and(|l| l.len() == 1)));
    // Stays one while they all renew.
    for _ in 0..20 {
        let now = leaders(&nodes).unwrap();
        assert!(now.len() <= 1, "two leaders at once: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Killed once the mirror has made some progress, before it is done (a page of ten
    // packages takes a fifth of a second upstream).
    assert!(eventually(60, || stored("pkg-5")));
    assert!(!stored("pkg-119"), "the mirror finished before the kill");
    let leader = leaders(&nodes).unwrap()[0];
    let (mut killed, _) = nodes.remove(leader);
    killed.0.kill().unwrap();
    killed.0.wait().unwrap();
    // Another takes over within the lease plus a renewal; never two.
    assert!(eventually(60, || {
        let now = leaders(&nodes).unwrap_or_default();
        assert!(now.len() <= 1, "two leaders at once: {now:?}");
        now.len() == 1
    }));
    // It resumes from the checkpoint in the bucket: no change is lost.
    upstream.set_faults(support::Faults::default());
    assert!(eventually(120, || (0..120).all(|i| stored(&format!("pkg-{i}")))));
}

/// An "S3" that accepts every write whatever its conditions say.
fn careless_s3() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let mut got = Vec::new();
                loop {
                    let Ok(n) = stream.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if got.len() < end + 4 + length {
                        continue;
                    }
                    const LIST: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult \
                        xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name><Prefix></Prefix>\
                        <KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>\
                        </ListBucketResult>";
                    let answer = if text.starts_with("PUT") {
                        "HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Length: 0\r\n\r\n".to_string()
                    } else if text.starts_with("GET") {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{LIST}",
                            LIST.len()
                        )
                    } else {
                        "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".to_string()
                    };
                    let _ = stream.write_all(answer.as_bytes());
                    got.drain(..end + 4 + length);
                }
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_bucket_that_ignores_conditional_writes_or_is_missing_stops_the_start() {
    let careless = careless_s3();
    let text = format!(
        "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n[storage]\nbackend = \"s3\"\n\
         [storage.s3]\nendpoint = \"{careless}\"\nbucket = \"b\"\nallow_http = true\n\
         access_key_id = \"k\"\nsecret_access_key = \"s\"\n"
    );
    let config =
        sluice::config::Config::parse(&text, "careless.toml", std::path::Path::new("/tmp"))
            .unwrap();
    let error = sluice::store::open(&config).unwrap_err().to_string();
    assert!(error.contains("does not enforce"), "{error}");
    assert!(
        error.contains(&careless) && error.contains("s3://b/"),
        "{error}"
    );

    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    let missing = seaweed
        .storage("data", "")
        .replace("bucket = \"sluice\"", "bucket = \"no-such-bucket\"");
    let text = format!("[upstream]\nregistry = \"http://127.0.0.1:9/\"\n{missing}");
    let config =
        sluice::config::Config::parse(&text, "missing.toml", std::path::Path::new("/tmp")).unwrap();
    let error = sluice::store::open(&config).unwrap_err().to_string();
    assert!(
        error.contains("no-such-bucket") && error.contains(&seaweed.endpoint),
        "{error}"
    );
    let wrong = seaweed
        .storage("data", "")
        .replace(SECRET_KEY, "not-the-secret");
    let text = format!("[upstream]\nregistry = \"http://127.0.0.1:9/\"\n{wrong}");
    let config =
        sluice::config::Config::parse(&text, "wrong.toml", std::path::Path::new("/tmp")).unwrap();
    let error = sluice::store::open(&config).unwrap_err().to_string();
    assert!(error.contains("credentials"), "{error}");
}

#[test]
fn what_one_node_adds_or_refreshes_every_node_serves_within_cluster_sync() {
    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("right", "1.0.0", &[]);
    let node = |name: &str, read_through: bool| {
        format!(
            "{}\n[policy]\nwhitelist = \"whitelist\"\nread_through = {read_through}\nrefresh = \"1h\"\n\n\
             [cluster]\nnode = \"{name}\"\nsync = \"1s\"\n",
            seaweed.storage("data", "sync/")
        )
    };
    let a = Sluice::start(&upstream, "", &node("a", true));
    let b = Sluice::start(&upstream, "", &node("b", false));
    // b refuses what nobody listed.
    assert_eq!(b.get_json("/left").0, 403);
    // Read-through on a puts left on the fleet's shared whitelist, not in a's file.
    assert_eq!(a.get_json("/left").0, 200);
    assert!(!a.whitelist().contains("left"), "{}", a.whitelist());
    assert!(eventually(30, || b.get_json("/left").0 == 200));
    // add-package on a (a CLI run) too.
    let out = support::sluice_cli(&a.config_path, &["add-package", "right"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(eventually(30, || b.get_json("/right").0 == 200));
    // A new version a fetches is served by b without b asking upstream.
    assert_eq!(b.get_json("/left").1["dist-tags"]["latest"], "1.0.0");
    upstream.publish("left", "1.1.0", &[]);
    let app = a.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(app.packuments.mark_stale("left")).unwrap();
    runtime.block_on(app.packuments.fetch("left")).0.unwrap();
    let before = upstream.count("/left");
    assert!(eventually(30, || b.get_json("/left").1["dist-tags"]
        ["latest"]
        == "1.1.0"));
    assert_eq!(upstream.count("/left"), before, "b asked upstream");
    // remove-package takes it off the shared list for every node.
    let out = support::sluice_cli(&b.config_path, &["remove-package", "right"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(eventually(30, || b.get_json("/right").0 == 403));
}

fn migrate(from: &std::path::Path, to: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["migrate", "-j", "2", "--to"])
        .arg(to)
        .arg("--config")
        .arg(from)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn migrate_copies_disk_to_s3_and_back_byte_identical_and_resumes_after_a_kill() {
    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    let upstream = FakeRegistry::start();
    let names: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    for name in &names {
        upstream.publish(name, "1.0.0", &[]);
        upstream.publish(name, "1.1.0", &[]);
    }
    let wants: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "*")).collect();
    upstream.publish("all", "1.0.0", &wants);
    let sluice = Sluice::start(&upstream, "", "");
    let out = support::sluice_cli(
        &sluice.config_path,
        &["add-package", "all", "--all-versions"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disk = sluice.config_path.clone();
    let dir = sluice.stop();
    let s3 = dir.path().join("s3.toml");
    std::fs::write(
        &s3,
        format!(
            "[upstream]\nregistry = \"{}\"\n{}",
            upstream.url(),
            seaweed.storage("unused", "migrated/")
        ),
    )
    .unwrap();
    let back = dir.path().join("back.toml");
    std::fs::write(
        &back,
        format!(
            "[upstream]\nregistry = \"{}\"\n[storage]\ndir = \"back\"\n",
            upstream.url()
        ),
    )
    .unwrap();
    // Killed while it copies, then run again to the end.
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["migrate", "-j", "1", "--to"])
            .arg(&s3)
            .arg("--config")
            .arg(&disk)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let bucket = bucket(&seaweed, "migrated/");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    eventually(60, || {
        runtime
            .block_on(bucket.packument("m3"))
            .ok()
            .flatten()
            .is_some()
    });
    let _ = child.0.kill();
    let _ = child.0.wait();
    let out = migrate(&disk, &s3);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = migrate(&s3, &back);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        summary.contains("tarballs copied and verified"),
        "{summary}"
    );
    // Every packument and tarball is byte-identical after the round trip.
    let original = sluice::store::DiskStore::new(dir.path().join("data"));
    let returned = sluice::store::DiskStore::new(dir.path().join("back"));
    runtime.block_on(async {
        use sluice::store::Store;
        for name in names.iter().map(String::as_str).chain(["all"]) {
            let a = original.packument(name).await.unwrap().unwrap();
            let b = returned.packument(name).await.unwrap().unwrap();
            assert!(a.bytes == b.bytes, "{name}: the packument differs");
            assert_eq!(a.meta, b.meta, "{name}");
            for version in ["1.0.0", "1.1.0"] {
                if name == "all" && version == "1.1.0" {
                    continue;
                }
                let file = format!("{name}-{version}.tgz");
                let read = |store: &sluice::store::DiskStore| {
                    let file = file.clone();
                    let store = store.clone();
                    async move {
                        let body = store.tarball(name, &file).await.unwrap().unwrap();
                        body.stream.map(|c| c.unwrap().to_vec()).concat().await
                    }
                };
                assert!(read(&original).await == read(&returned).await, "{file}");
                assert!(
                    read(&returned).await == upstream.tarball(name, version),
                    "{file}"
                );
            }
        }
    });
    // Again: nothing left to copy.
    let out = migrate(&s3, &back);
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(summary.contains(": 0 packuments written"), "{summary}");
    // `sluice verify` checks the bucket's tarballs.
    let out = support::sluice_cli(&s3, &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{report}");
    assert!(report.contains("0 corrupt"), "{report}");
    // `sluice mirror --once` follows the feed into the bucket.
    upstream.publish("late", "1.0.0", &[]);
    std::fs::write(
        &s3,
        format!(
            "[upstream]\nregistry = \"{0}\"\nchanges = \"{0}\"\n{1}\n[policy]\nmode = \"mirror\"\n[mirror]\nsince = \"0\"\n",
            upstream.url(),
            seaweed.storage("unused", "migrated/")
        ),
    )
    .unwrap();
    let out = support::sluice_cli(&s3, &["mirror", "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(runtime
        .block_on(bucket.packument("late"))
        .unwrap()
        .is_some());
}

#[test]
fn a_node_serves_what_its_local_tier_holds_while_the_bucket_is_down() {
    let Some(mut seaweed) = Seaweed::start() else {
        return;
    };
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("right", "1.0.0", &[]);
    // Tarballs are never held in memory here: they come from the store each time.
    let storage = seaweed.storage("data", "down/").replace(
        "memory = \"64MiB\"\n",
        "memory = \"64MiB\"\nhot_tarball_max = \"0\"\n",
    );
    let sluice = Sluice::start(
        &upstream,
        "left\nright\n",
        &format!(
            "{storage}\n[upstream]\nregistry = \"{}\"\ntimeout = \"2s\"\n",
            upstream.url()
        ),
    );
    let tarball = upstream.tarball("left", "1.0.0");
    assert_eq!(sluice.get_json("/left").0, 200);
    let (status, headers, body) = sluice.get("/left/-/left-1.0.0.tgz", &[]);
    assert_eq!((status, &body), (200, &tarball));
    assert_eq!(headers["x-cache-status"], "MISS");
    // The bucket and upstream go away.
    seaweed.stop();
    upstream.set_down(true);
    let (status, headers, body) = sluice.get("/left/-/left-1.0.0.tgz", &[]);
    assert_eq!((status, &body), (200, &tarball), "from the local tier");
    assert_eq!(headers["x-cache-status"], "HIT");
    let (status, _) = sluice.get_json("/left/1.0.0");
    assert_eq!(status, 200);
    // A copy no longer known to be current (as after another node's change) is served stale.
    let app = sluice.server.as_ref().unwrap().app.clone();
    app.store.forget_all();
    let (status, headers, _) = sluice.get("/left/1.0.0", &[]);
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache-status"], "STALE");
    // What the tier never held: a clear JSON error.
    let (status, body) = sluice.get_json("/right");
    assert!(matches!(status, 502..=504), "{status} {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

#[test]
fn bucket_faults_are_retried_and_a_bucket_that_keeps_failing_gets_clear_errors() {
    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("right", "1.0.0", &[]);
    let proxy = FaultProxy::start(seaweed.endpoint.trim_start_matches("http://"));
    let node = |name: &str, endpoint: &str| {
        format!(
            "{}\n[policy]\nwhitelist = \"whitelist\"\nread_through = true\n\n[cluster]\nnode = \"{name}\"\n\n[upstream]\nregistry = \"{}\"\ntimeout = \"2s\"\n",
            seaweed
                .storage("data", "faults/")
                .replace(&seaweed.endpoint, endpoint)
                .replace("memory = \"64MiB\"\n", "memory = \"64MiB\"\nhot_tarball_max = \"0\"\n"),
            upstream.url()
        )
    };
    // a reaches the bucket directly; b through the faults.
    let a = Sluice::start(&upstream, "", &node("a", &seaweed.endpoint));
    let b = Sluice::start(&upstream, "", &node("b", &proxy.endpoint));
    let tarball = upstream.tarball("left", "1.0.0");
    assert_eq!(a.get_json("/left").0, 200);
    assert_eq!(a.get("/left/-/left-1.0.0.tgz", &[]).0, 200);
    upstream.set_down(true);

    // Throttled and failing requests are retried: b's read (only the bucket has it) waits
    // through them and succeeds once the bucket answers again.
    for fault in [Fault::SlowDown, Fault::Internal] {
        b.server.as_ref().unwrap().app.store.forget_all();
        let before = proxy.faulted();
        proxy.inject(fault, None);
        let url = b.url();
        let reader = std::thread::spawn(move || {
            let (status, headers, body) = support::http_get(&format!("{url}left"), &[]);
            let doc: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let cache = headers
                .get("x-cache-status")
                .map(|v| v.to_str().unwrap().to_string());
            (status, doc, cache)
        });
        assert!(
            eventually(60, || proxy.faulted() >= before + 3),
            "{fault:?}: no retries seen"
        );
        proxy.heal();
        let (status, doc, cache) = reader.join().unwrap();
        assert_eq!(status, 200, "{fault:?}: {doc}");
        assert_eq!(doc["name"], "left");
        assert_ne!(
            cache.as_deref(),
            Some("STALE"),
            "{fault:?}: not from the bucket"
        );
    }
    let (status, _, body) = b.get("/left/-/left-1.0.0.tgz", &[]);
    assert_eq!((status, &body), (200, &tarball), "read from the bucket");

    // A bucket that keeps failing or never answers: what b's tier holds is served, the rest
    // gets a clear JSON error once the bounded retries are spent.
    for fault in [Fault::Internal, Fault::SlowDown, Fault::Stall] {
        proxy.inject(fault, None);
        let (status, _, body) = b.get("/left/-/left-1.0.0.tgz", &[]);
        assert_eq!(
            (status, &body),
            (200, &tarball),
            "{fault:?}: from the local tier"
        );
        let (status, body) = b.get_json("/right");
        assert!(matches!(status, 502..=504), "{fault:?}: {status} {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{fault:?}: {body}"
        );
        proxy.heal();
    }

    // A read-through while the bucket fails stores nothing half-written; after it heals,
    // it works and every name in the bucket points at verified content.
    upstream.set_down(false);
    proxy.inject(Fault::Internal, None);
    let _ = b.get("/right", &[]);
    let _ = b.get("/right/-/right-1.0.0.tgz", &[]);
    proxy.heal();
    let (status, doc) = b.get_json("/right");
    assert_eq!(status, 200, "{doc}");
    let (status, _, body) = b.get("/right/-/right-1.0.0.tgz", &[]);
    assert_eq!((status, body), (200, upstream.tarball("right", "1.0.0")));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(bucket(&seaweed, "faults/").verify(&|_, _| {}))
        .unwrap();
    assert!(
        report.corrupt.is_empty() && report.missing.is_empty() && report.ok >= 2,
        "{report:?}"
    );
}
