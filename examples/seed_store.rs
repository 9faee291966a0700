//! Fill a store with many small packuments, for the start-up measurement in benches/load.sh
//! and the scale benchmark (benches/scale.sh).
//!
//! `cargo run --release --example seed_store -- DIR COUNT` writes `seed-pkg-000000`… through
//! the store's conditional put, marked as fetched now (fresh for `policy.refresh`). Each one has
//! a description of six words, two keywords and a maintainer drawn from [`WORDS`] by its number,
//! so searches for a word match about one package in ten, as a common word does on a full
//! mirror.

use futures::StreamExt;
use sluice::store::{now_ms, DiskStore, Expect, PackumentMeta, Store, Written};

/// The words descriptions and keywords are made of (benches/scale.sh searches for some).
pub const WORDS: [&str; 64] = [
    "hammer", "cloud", "river", "parser", "stream", "router", "widget", "canvas", "socket",
    "buffer", "crypto", "logger", "matrix", "vector", "kernel", "plugin", "schema", "render",
    "cursor", "bridge", "packet", "shadow", "signal", "thread", "worker", "beacon", "cipher",
    "daemon", "engine", "filter", "gadget", "harbor", "index", "jigsaw", "ladder", "magnet",
    "needle", "orbit", "pillar", "quartz", "rocket", "saddle", "tunnel", "unicorn", "valve",
    "wallet", "yarn", "zephyr", "anchor", "bottle", "castle", "dragon", "falcon", "garden",
    "helmet", "island", "jungle", "kettle", "lantern", "meadow", "nectar", "oyster", "pepper",
    "quiver",
];

/// The `k`th word of package `i`'s text (a cheap mix, the same on every run).
fn word(i: usize, k: usize) -> &'static str {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (k as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 29;
    WORDS[(x % WORDS.len() as u64) as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(count)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: seed_store DIR COUNT");
    };
    let count: usize = count.parse()?;
    let store = DiskStore::new(dir);
    let meta = PackumentMeta {
        etag: None,
        last_modified: None,
        fetched_at: now_ms(),
        origin: None,
    };
    let started = std::time::Instant::now();
    let mut writes = futures::stream::iter(0..count)
        .map(|i| {
            let (store, meta) = (store.clone(), meta.clone());
            async move {
                let name = format!("seed-pkg-{i:06}");
                let description: Vec<&str> = (0..6).map(|k| word(i, k)).collect();
                let description = description.join(" ");
                let keywords = [word(i, 6), word(i, 7)];
                let maintainers = serde_json::json!([{"name": format!("maintainer-{}", i % 1000)}]);
                let doc = serde_json::json!({
                    "_id": name, "name": name,
                    "description": description,
                    "maintainers": maintainers,
                    "dist-tags": {"latest": "1.0.0"},
                    "versions": {"1.0.0": {
                        "name": name, "version": "1.0.0",
                        "description": description,
                        "keywords": keywords,
                        "dist": {
                            "tarball": format!("https://upstream.invalid/{name}/-/{name}-1.0.0.tgz"),
                            "shasum": "0000000000000000000000000000000000000000"
                        }
                    }},
                    "time": {"created": "2024-01-01T00:00:00.000Z", "modified": "2024-01-01T00:00:00.000Z"}
                });
                match store.packument_meta(&name).await? {
                    Some(_) => Ok(()),
                    None => match store
                        .put_packument(&name, doc.to_string().into(), &meta, Expect::Absent)
                        .await?
                    {
                        Written::Stored(_) | Written::Conflict => Ok(()),
                    },
                }
            }
        })
        .buffer_unordered(64);
    let mut done = 0usize;
    while let Some(result) = writes.next().await {
        let () = result.map_err(|e: sluice::store::StoreError| anyhow::anyhow!(e))?;
        done += 1;
    }
    eprintln!(
        "seed_store: {done} packuments in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
