//! Fill a store with many small packuments, for the start-up measurement in benches/load.sh.
//!
//! `cargo run --release --example seed_store -- DIR COUNT` writes `seed-pkg-000000`… through
//! the store's conditional put, marked as fetched now (fresh for `policy.refresh`).

use futures::StreamExt;
use sluice::store::{now_ms, DiskStore, Expect, PackumentMeta, Store, Written};

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
                let doc = serde_json::json!({
                    "_id": name, "name": name,
                    "dist-tags": {"latest": "1.0.0"},
                    "versions": {"1.0.0": {
                        "name": name, "version": "1.0.0",
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
