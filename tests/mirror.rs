//! Mirror mode: follow the replication feed.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{eventually, FakeRegistry, Faults, Project, Sluice};

const MIRROR: &str =
    "[policy]\nmode = \"mirror\"\ntarballs = \"all\"\n[mirror]\nsince = \"0\"\nbatch = 40\n";

fn feed(upstream: &FakeRegistry, count: usize) {
    for i in 0..count {
        upstream.publish(&format!("pkg-{i}"), "1.0.0", &[]);
    }
    upstream.publish("twice", "1.0.0", &[]);
    upstream.publish("twice", "1.1.0", &[]);
    upstream.publish("app", "1.0.0", &[("pkg-1", "^1"), ("twice", "^1")]);
}

fn mirror_once(sluice_config: &std::path::Path) -> std::process::Output {
    support::sluice_cli(sluice_config, &["mirror", "--once"])
}

fn config_with_changes(upstream: &FakeRegistry) -> String {
    format!("[upstream]\nchanges = \"{}\"\n{MIRROR}", upstream.url())
}

/// A configured folder with no server running (the CLI is the only follower).
fn stopped(upstream: &FakeRegistry) -> tempfile::TempDir {
    Sluice::start(upstream, "", &config_with_changes(upstream)).stop()
}

#[test]
fn mirror_once_copies_the_feed_keeps_deletions_and_picks_up_late_entries() {
    let upstream = FakeRegistry::start();
    feed(&upstream, 200);
    upstream.publish("doomed", "1.0.0", &[]);
    let dir = stopped(&upstream);
    let config = dir.path().join("sluice.toml");

    let out = mirror_once(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("caught up to"), "{stdout}");

    // A deletion keeps our copy; a late entry behind the checkpoint is picked up.
    upstream.unpublish("doomed");
    upstream.publish_late("late-comer", "1.0.0", 5);
    upstream.publish("twice", "1.2.0", &[]);
    let out = mirror_once(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sluice = Sluice::start_in(dir, &upstream, &config_with_changes(&upstream));
    let registry = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for name in ["late-comer", "doomed", "pkg-0", "pkg-199"] {
        assert!(
            runtime
                .block_on(registry.store.packument(name))
                .unwrap()
                .is_some(),
            "{name} is stored"
        );
    }
    // Upstream cut off: every package of the feed is servable and installable.
    upstream.set_down(true);
    for i in (0..200).step_by(7) {
        let (status, _, _) = sluice.get(&format!("/pkg-{i}/-/pkg-{i}-1.0.0.tgz"), &[]);
        assert_eq!(status, 200, "pkg-{i}");
    }
    let (status, doc) = sluice.get_json("/twice");
    assert_eq!(status, 200);
    assert_eq!(doc["dist-tags"]["latest"], "1.2.0");
    let (status, _) = sluice.get_json("/doomed");
    assert_eq!(status, 200);
    let project = Project::new();
    project.install(&sluice.url(), &["app", "late-comer"]);
    assert_eq!(project.require("twice"), "twice@1.2.0");

    let (_, status) = sluice.get_json("/-/sluice/status");
    assert_eq!(status["mode"], "mirror");
}

#[test]
fn a_killed_mirror_run_resumes_to_the_same_final_state() {
    let upstream = FakeRegistry::start();
    feed(&upstream, 150);
    let dir = stopped(&upstream);
    let config = dir.path().join("sluice.toml");
    let store = dir.path().join("data");
    upstream.set_faults(Faults {
        delay: Some(Duration::from_millis(15)),
        ..Faults::default()
    });
    let mut child = support::Reaped(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["mirror", "--once", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    // Kill -9 once it has made some progress.
    assert!(eventually(60, || {
        checkpoint_of(&store).is_some_and(|c| c.since != "0")
    }));
    child.kill().unwrap();
    child.wait().unwrap();
    upstream.set_faults(Faults::default());
    let out = mirror_once(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checkpoint = format!("{:?}", checkpoint_of(&store).unwrap());
    let sluice = Sluice::start_in(dir, &upstream, &config_with_changes(&upstream));
    let registry = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for i in 0..150 {
        let name = format!("pkg-{i}");
        assert!(
            runtime
                .block_on(registry.store.packument(&name))
                .unwrap()
                .is_some(),
            "{name} after resume; checkpoint {checkpoint}"
        );
        assert!(runtime
            .block_on(
                registry
                    .store
                    .has_tarball(&name, &format!("{name}-1.0.0.tgz"))
            )
            .unwrap());
    }
}

#[test]
fn serve_in_mirror_mode_follows_the_feed_in_the_background() {
    let upstream = FakeRegistry::start();
    feed(&upstream, 20);
    let sluice = Sluice::start(
        &upstream,
        "",
        &format!("{}interval = \"200ms\"\n", config_with_changes(&upstream)),
    );
    let registry = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(eventually(20, || runtime
        .block_on(registry.store.packument("pkg-19"))
        .unwrap()
        .is_some()));
    upstream.publish("brand-new", "1.0.0", &[]);
    assert!(eventually(20, || runtime
        .block_on(registry.store.packument("brand-new"))
        .unwrap()
        .is_some()));
    let (_, status) = sluice.get_json("/-/sluice/status");
    assert!(status["mirror"]["checkpoint"].is_string(), "{status}");
}

/// The mirror checkpoint stored in the store folder `store`, read through the store.
fn checkpoint_of(store: &std::path::Path) -> Option<sluice::jobs::mirror::Checkpoint> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = sluice::store::DiskStore::new(store);
    runtime
        .block_on(sluice::jobs::mirror::load_checkpoint(&store))
        .ok()
        .flatten()
        .map(|(checkpoint, _)| checkpoint)
}
