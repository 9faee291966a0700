//! Mirror follower throughput: `changes/s` of a catch-up against the fake registry's
//! replication feed (which answers at once), so sluice itself is what is measured.
//!
//! `cargo bench --bench mirror` (set `MIRROR_PACKAGES` for another feed size). Prints the
//! numbers; BENCHMARKS.md records them. Nothing is asserted.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../tests/support/fake.rs"]
mod fake;

use std::time::Instant;

fn main() {
    let packages: usize = std::env::var("MIRROR_PACKAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let upstream = fake::FakeRegistry::start();
    for i in 0..packages {
        upstream.publish(&format!("feed-{i}"), "1.0.0", &[]);
    }
    // MIRROR_STORE_IN=/dev/shm puts the store on tmpfs, to see sluice without the disk.
    let dir = match std::env::var("MIRROR_STORE_IN") {
        Ok(base) => tempfile::tempdir_in(base).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let text = format!(
        "[upstream]\nregistry = \"{0}\"\nchanges = \"{0}\"\nconcurrency = {1}\n[storage]\ndir = \"data\"\n\
         [policy]\nmode = \"mirror\"\n[mirror]\nsince = \"0\"\nbatch = 1000\n[log]\nlevel = \"error\"\n",
        upstream.url(),
        std::env::var("MIRROR_CONCURRENCY").unwrap_or_else(|_| "32".into())
    );
    let config = sluice::config::Config::parse(&text, "bench.toml", dir.path()).unwrap();
    let app = sluice::app::App::build(config).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let follower = sluice::jobs::mirror::Follower::new(app.clone()).unwrap();
    let bar = indicatif::ProgressBar::hidden();

    let started = Instant::now();
    let first = runtime.block_on(follower.catch_up(&bar)).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "first catch-up: {} changes, {} packages stored in {secs:.2}s: {:.0} changes/s",
        first.changes,
        first.packages,
        first.changes as f64 / secs
    );

    // A restart with the store kept but the checkpoint back at 0: every change is re-delivered
    // and costs one conditional request (304).
    drop(follower);
    runtime.block_on(async {
        use sluice::jobs::mirror::{load_checkpoint, save_checkpoint, Checkpoint};
        let (_, version) = load_checkpoint(app.store.as_ref()).await.unwrap().unwrap();
        let start = Checkpoint {
            since: "0".into(),
            recent: Vec::new(),
        };
        save_checkpoint(
            app.store.as_ref(),
            &start,
            sluice::store::Expect::Version(version),
        )
        .await
        .unwrap();
    });
    let follower = sluice::jobs::mirror::Follower::new(app).unwrap();
    let started = Instant::now();
    let again = runtime.block_on(follower.catch_up(&bar)).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "re-delivered catch-up (conditional requests): {} changes in {secs:.2}s: {:.0} changes/s",
        again.changes,
        again.changes as f64 / secs
    );
}
