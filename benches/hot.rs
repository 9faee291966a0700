//! Benches of the functions on sluice's render path, on real package documents: gzipped
//! packuments (`express.json.gz`, `types__node.json.gz`) in the folder `SLUICE_FIXTURES` names
//! (read at run time; skipped with a message when absent).
//!
//! `SLUICE_FIXTURES=/path/to/packuments cargo bench --bench hot` (add `-- express` to run a
//! subset).

#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice::core::gzip_bytes;
use sluice::packument::{abbreviate, merge, parse, rewrite};

const PUBLIC_URL: &str = "http://127.0.0.1:4870/";

/// (fixture file, package name): a large (~0.5 MB) and a very large (~9 MB) document.
const DOCUMENTS: &[(&str, &str)] = &[
    ("express.json.gz", "express"),
    ("types__node.json.gz", "@types/node"),
];

/// The fixtures folder, with a trailing slash (empty when `SLUICE_FIXTURES` is not set).
fn fixtures() -> String {
    std::env::var("SLUICE_FIXTURES")
        .map(|dir| format!("{}/", dir.trim_end_matches('/')))
        .unwrap_or_default()
}

fn load(file: &str) -> Option<Vec<u8>> {
    let compressed = std::fs::read(format!("{}{file}", fixtures())).ok()?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

fn benches(c: &mut Criterion) {
    for (file, name) in DOCUMENTS {
        let Some(bytes) = load(file) else {
            eprintln!(
                "hot: {}{file} is absent (set SLUICE_FIXTURES): skipping the {name} benches",
                fixtures()
            );
            continue;
        };
        let doc = parse(&bytes, name).expect("fixture parses");
        let mut rewritten = doc.clone();
        rewrite(&mut rewritten, PUBLIC_URL);
        let full_body = serde_json::to_vec(&rewritten.doc).unwrap();
        // Upstream dropped the ten newest versions: merge restores them from the held copy.
        let mut fresh = doc.clone();
        let dropped: Vec<String> = fresh
            .versions()
            .unwrap()
            .keys()
            .rev()
            .take(10)
            .cloned()
            .collect();
        for version in &dropped {
            fresh.versions_mut().shift_remove(version);
        }

        let mut group = c.benchmark_group(format!("hot/{name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("parse", |b| b.iter(|| parse(&bytes, name).unwrap()));
        group.bench_function("merge (10 versions restored)", |b| {
            b.iter_batched(
                || fresh.clone(),
                |mut fresh| {
                    merge(&mut fresh, &doc);
                    fresh // dropped outside the timing
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function("rewrite", |b| {
            b.iter_batched(
                || doc.clone(),
                |mut doc| {
                    rewrite(&mut doc, PUBLIC_URL);
                    doc
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function("abbreviate", |b| b.iter(|| abbreviate(&rewritten, true)));
        group.bench_function("serialize full", |b| {
            b.iter(|| serde_json::to_vec(&rewritten.doc).unwrap())
        });
        group.bench_function("gzip full body", |b| b.iter(|| gzip_bytes(&full_body)));
        group.bench_function("render full (parse+rewrite+serialize)", |b| {
            b.iter(|| {
                let mut doc = parse(&bytes, name).unwrap();
                rewrite(&mut doc, PUBLIC_URL);
                serde_json::to_vec(&doc.doc).unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(hot, benches);
criterion_main!(hot);
