//! `sluice migrate --to NEW.toml`: copy a store (packuments, tarballs, the mirror checkpoint,
//! a fleet's shared state) into the store another configuration names — disk to s3 and back.
//!
//! Tarballs kept for versions upstream no longer lists are copied with their records (merged
//! into the destination's, verified against the recorded sha512). Staged versions are copied
//! with their records and tarballs (verified against the record), and listed in the
//! destination's index of staged versions only once both are there.
//!
//! Every tarball goes through the destination's verifying sink, so nothing unverified lands
//! there. A packument the destination already has is merged, never overwritten (no version is
//! lost), and what is already there is skipped: an interrupted run is resumed by running it
//! again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use sluice_plugin_api::Packument;

use crate::core::publish::stage::{self, StagedItem};
use crate::core::published_integrity;
use crate::core::tarballs::Ledger;
use crate::packument;
use crate::store::{Expect, SharedStore, Store, StoreError, Written};

/// The state objects a migration copies (leases are not: each store elects its own).
const STATE: &[&str] = &["mirror-checkpoint", "fleet/whitelist", "fleet/journal"];

/// What a migration did.
#[derive(Debug, Default)]
pub struct Migrated {
    /// Packuments written to the destination (new or merged).
    pub packuments: u64,
    /// Packuments the destination already had as they are.
    pub packuments_kept: u64,
    /// Tarballs copied (and verified).
    pub tarballs: u64,
    /// Tarballs the destination already had.
    pub tarballs_kept: u64,
    /// Their bytes.
    pub bytes: u64,
    /// State objects copied.
    pub state: u64,
    /// Staged versions newly listed in the destination.
    pub staged: u64,
    /// What could not be copied.
    pub failures: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Copy everything in `from` into `to`, `concurrency` packages at a time.
pub async fn migrate(
    from: &SharedStore,
    to: &SharedStore,
    concurrency: usize,
    progress: bool,
) -> Result<Migrated, StoreError> {
    let started = Instant::now();
    let names: Vec<String> = from.packument_names().try_collect().await?;
    let bar = if progress {
        let bar = ProgressBar::new(names.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} packages {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let counts: [AtomicU64; 5] = Default::default();
    let failures = std::sync::Mutex::new(Vec::new());
    let done = AtomicU64::new(0);
    let total = names.len() as u64;
    futures::stream::iter(names)
        .for_each_concurrent(concurrency.max(1), |name| {
            let (counts, failures, bar, done) = (&counts, &failures, &bar, &done);
            async move {
                if let Err(error) = copy_package(from, to, &name, counts).await {
                    failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("{name}: {error}"));
                }
                let done = done.fetch_add(1, Ordering::Relaxed) + 1;
                bar.inc(1);
                bar.set_message(format!(
                    "{} tarballs, {:.1} MB",
                    counts[2].load(Ordering::Relaxed) + counts[3].load(Ordering::Relaxed),
                    counts[4].load(Ordering::Relaxed) as f64 / 1e6
                ));
                if bar.is_hidden() && (done % 500 == 0 || done == total) {
                    tracing::info!(done, total, "migrate: packages copied");
                }
            }
        })
        .await;
    bar.finish_and_clear();
    copy_unlisted(from, to, &counts, &failures).await?;
    let staged = copy_staged(from, to, &counts, &failures).await?;
    let mut state = 0;
    for key in STATE {
        if let Some((bytes, _)) = from.state(key).await? {
            let current = to.state(key).await?;
            let expect = Expect::from_read(current.as_ref().map(|(_, t)| t));
            if current.as_ref().is_none_or(|(b, _)| *b != bytes) {
                if let Written::Stored(_) = to.put_state(key, bytes, expect).await? {
                    state += 1;
                }
            }
        }
    }
    let load = |i: usize| counts[i].load(Ordering::Relaxed);
    Ok(Migrated {
        packuments: load(0),
        packuments_kept: load(1),
        tarballs: load(2),
        tarballs_kept: load(3),
        bytes: load(4),
        state,
        staged,
        failures: failures.into_inner().unwrap_or_else(|p| p.into_inner()),
        elapsed: started.elapsed(),
    })
}

/// Copy the packument of `name` (merged with what `to` holds) and every tarball of it `from`
/// holds.
async fn copy_package(
    from: &SharedStore,
    to: &SharedStore,
    name: &str,
    counts: &[AtomicU64; 5],
) -> Result<(), String> {
    let Some(source) = from.packument(name).await.map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let doc = packument::parse(&source.bytes, name).map_err(|e| e.to_string())?;
    // The packument: created, merged with what is there, or kept.
    loop {
        let held = to.packument(name).await.map_err(|e| e.to_string())?;
        let bytes = match &held {
            Some(held) if held.bytes == source.bytes => {
                counts[1].fetch_add(1, Ordering::Relaxed);
                break;
            }
            Some(held) => {
                let mut merged = doc.clone();
                if let Ok(there) = packument::parse(&held.bytes, name) {
                    packument::merge(&mut merged, &there);
                }
                bytes::Bytes::from(serde_json::to_vec(&merged.doc).map_err(|e| e.to_string())?)
            }
            None => source.bytes.clone(),
        };
        let expect = Expect::from_read(held.as_ref().map(|h| &h.token));
        match to
            .put_packument(name, bytes, &source.meta, expect)
            .await
            .map_err(|e| e.to_string())?
        {
            Written::Stored(_) => {
                counts[0].fetch_add(1, Ordering::Relaxed);
                break;
            }
            Written::Conflict => continue,
        }
    }
    for (_, manifest) in doc.versions().into_iter().flatten() {
        let Some(file) = Packument::tarball_file(manifest) else {
            continue;
        };
        copy_tarball(from, to, name, file, manifest, counts).await?;
    }
    Ok(())
}

async fn copy_tarball(
    from: &SharedStore,
    to: &SharedStore,
    name: &str,
    file: &str,
    manifest: &Value,
    counts: &[AtomicU64; 5],
) -> Result<(), String> {
    copy_verified(from, to, name, file, published_integrity(manifest), counts).await
}

/// Copy every unlisted tarball `from` records, and merge its records into `to`'s.
async fn copy_unlisted(
    from: &SharedStore,
    to: &SharedStore,
    counts: &[AtomicU64; 5],
    failures: &std::sync::Mutex<Vec<String>>,
) -> Result<(), StoreError> {
    let records = Ledger::new(from.clone()).all().await?;
    let ledger = Ledger::new(to.clone());
    for record in records.tarballs.values() {
        let (name, file) = (&record.name, &record.file);
        let integrity = crate::core::usable_integrity(&record.integrity);
        let copied = match copy_verified(from, to, name, file, integrity, counts).await {
            Ok(()) => ledger.put(record).await.map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        if let Err(error) = copied {
            failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{name}/-/{file} (unlisted): {error}"));
        }
    }
    Ok(())
}

/// Copy every staged version `from` lists (record and tarball) and list those copied in
/// `to`'s index of staged versions; answers how many were newly listed there.
async fn copy_staged(
    from: &SharedStore,
    to: &SharedStore,
    counts: &[AtomicU64; 5],
    failures: &std::sync::Mutex<Vec<String>>,
) -> Result<u64, StoreError> {
    let mut copied = Vec::new();
    for item in stage::staged_items(from).await? {
        match copy_staged_item(from, to, &item, counts).await {
            Ok(()) => copied.push(item),
            Err(error) => failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(
                    "{}@{} (staged {}): {error}",
                    item.package_name, item.version, item.id
                )),
        }
    }
    stage::list_staged(to, &copied).await
}

/// Copy the record and the tarball of one staged version (the tarball verified against the
/// record's integrity).
async fn copy_staged_item(
    from: &SharedStore,
    to: &SharedStore,
    item: &StagedItem,
    counts: &[AtomicU64; 5],
) -> Result<(), String> {
    let key = stage::record_key(&item.id);
    let (record, _) = from
        .state(&key)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("its record is gone")?;
    let integrity = stage::recorded_integrity(&record).ok_or("its record has no integrity")?;
    let (name, file) = (&item.package_name, stage::staged_file(&item.id));
    copy_verified(from, to, name, &file, Some(integrity), counts).await?;
    if !to
        .has_tarball(name, &file)
        .await
        .map_err(|e| e.to_string())?
    {
        return Err("its tarball is missing".into());
    }
    if to.state(&key).await.map_err(|e| e.to_string())?.is_none() {
        to.put_state(&key, record, Expect::Absent)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Copy tarball `file` of `name`, verified against `integrity` (else what `from` recorded).
async fn copy_verified(
    from: &SharedStore,
    to: &SharedStore,
    name: &str,
    file: &str,
    integrity: Option<ssri::Integrity>,
    counts: &[AtomicU64; 5],
) -> Result<(), String> {
    if to
        .has_tarball(name, file)
        .await
        .map_err(|e| e.to_string())?
    {
        counts[3].fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let Some(body) = from.tarball(name, file).await.map_err(|e| e.to_string())? else {
        return Ok(());
    };
    // Verified against what the version publishes (else what the source recorded).
    let integrity = integrity.unwrap_or_else(|| body.integrity.clone());
    let mut sink = to
        .tarball_sink(name, file, &integrity, Some(body.size))
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = body.stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("{file}: {e}"))?;
        sink.write(&chunk).await.map_err(|e| e.to_string())?;
    }
    sink.commit().await.map_err(|e| format!("{file}: {e}"))?;
    counts[2].fetch_add(1, Ordering::Relaxed);
    counts[4].fetch_add(body.size, Ordering::Relaxed);
    Ok(())
}

/// Whether two stores are the same (migrating a store into itself is refused).
pub fn same_store(a: &dyn Store, b: &dyn Store) -> bool {
    a.location() == b.location()
}
