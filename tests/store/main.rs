//! The store contract (`contract.rs`) run on every backend: the disk store, the s3 store on a
//! real SeaweedFS, a node's local tier over that bucket, and the fault wrapper over the disk
//! store. A backend passes the same checks, with no backend-specific assertion in them.
#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

mod contract;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice::store::{
    DiskStore, Expect, Fault, Faulty, PackumentMeta, S3Store, SharedStore, Store, Tiered, Written,
};
use support::seaweed::{Seaweed, ACCESS_KEY, SECRET_KEY};

/// A kind of store the contract is checked on.
pub enum Backend<'a> {
    /// [`DiskStore`] in a temporary folder.
    Disk,
    /// [`Faulty`] (no fault on) over a [`DiskStore`].
    Faulty,
    /// [`S3Store`] on a prefix of a real bucket.
    S3(&'a Seaweed),
    /// [`Tiered`]: a local [`DiskStore`] in front of an [`S3Store`].
    Tiered(&'a Seaweed),
}

/// A fresh, empty store of one backend, and what the checks need to reach behind it.
pub struct Subject {
    /// The store under test.
    pub store: SharedStore,
    /// A second handle on the same store, as another process (or node) opens it.
    pub twin: SharedStore,
    /// Every place the store keeps tarball content in (a node's local tier and its bucket are
    /// two).
    pub places: Vec<Place>,
    _dir: tempfile::TempDir,
}

/// Where a store keeps tarball content, reached without the store.
pub enum Place {
    /// A disk store's folder (cacache's `content-v2` under it).
    Folder(PathBuf),
    /// A bucket's content objects, under this prefix.
    Bucket(Arc<object_store::aws::AmazonS3>, object_store::path::Path),
}

impl Place {
    /// The bytes of every content object kept here, with how to reach it again.
    async fn contents(&self) -> Vec<(String, Vec<u8>)> {
        match self {
            Place::Folder(dir) => walk(&dir.join("content-v2"))
                .into_iter()
                .map(|path| {
                    let bytes = std::fs::read(&path).unwrap();
                    (path.display().to_string(), bytes)
                })
                .collect(),
            Place::Bucket(bucket, prefix) => {
                let mut out = Vec::new();
                let listed: Vec<_> = bucket.list(Some(prefix)).collect().await;
                for entry in listed {
                    let location = entry.unwrap().location;
                    let bytes = bucket.get(&location).await.unwrap().bytes().await.unwrap();
                    out.push((location.to_string(), bytes.to_vec()));
                }
                out
            }
        }
    }

    async fn replace(&self, at: &str, bytes: Vec<u8>) {
        match self {
            Place::Folder(_) => std::fs::write(at, bytes).unwrap(),
            Place::Bucket(bucket, _) => {
                let path = object_store::path::Path::from(at);
                bucket.put(&path, bytes.into()).await.unwrap();
            }
        }
    }
}

impl Subject {
    /// How many copies of `content` the store keeps, in all its places.
    pub async fn copies(&self, content: &[u8]) -> usize {
        let mut copies = 0;
        for place in &self.places {
            copies += place
                .contents()
                .await
                .iter()
                .filter(|(_, bytes)| bytes == content)
                .count();
        }
        copies
    }

    /// How many content objects the store keeps, in all its places.
    pub async fn content_objects(&self) -> usize {
        let mut count = 0;
        for place in &self.places {
            count += place.contents().await.len();
        }
        count
    }

    /// Flip the last byte of every stored copy of `content`, as a failing disk would; how
    /// many copies were damaged.
    pub async fn corrupt(&self, content: &[u8]) -> usize {
        let mut damaged = 0;
        for place in &self.places {
            for (at, mut bytes) in place.contents().await {
                if bytes == content {
                    let last = bytes.len() - 1;
                    bytes[last] ^= 1;
                    place.replace(&at, bytes).await;
                    damaged += 1;
                }
            }
        }
        damaged
    }
}

static PREFIXES: AtomicU32 = AtomicU32::new(0);

impl Backend<'_> {
    /// Its name, in assertion messages.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Disk => "disk",
            Backend::Faulty => "faulty(disk)",
            Backend::S3(_) => "s3",
            Backend::Tiered(_) => "tiered(s3)",
        }
    }

    /// A fresh, empty store of this backend (a new folder, a new prefix of the bucket).
    pub fn open(&self) -> Subject {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let prefix = format!("contract-{}/", PREFIXES.fetch_add(1, Ordering::SeqCst));
        let (store, twin, places): (SharedStore, SharedStore, Vec<Place>) = match self {
            Backend::Disk => (
                Arc::new(DiskStore::new(&store_dir)),
                Arc::new(DiskStore::new(&store_dir)),
                vec![Place::Folder(store_dir)],
            ),
            Backend::Faulty => (
                Arc::new(Faulty::new(Arc::new(DiskStore::new(&store_dir)))),
                Arc::new(Faulty::new(Arc::new(DiskStore::new(&store_dir)))),
                vec![Place::Folder(store_dir)],
            ),
            Backend::S3(seaweed) => (
                bucket(seaweed, &prefix),
                bucket(seaweed, &prefix),
                vec![content_objects(seaweed, &prefix)],
            ),
            Backend::Tiered(seaweed) => (
                Arc::new(Tiered::new(
                    DiskStore::new(&store_dir),
                    bucket(seaweed, &prefix),
                    1 << 30,
                )),
                Arc::new(Tiered::new(
                    DiskStore::new(dir.path().join("twin")),
                    bucket(seaweed, &prefix),
                    1 << 30,
                )),
                vec![Place::Folder(store_dir), content_objects(seaweed, &prefix)],
            ),
        };
        Subject {
            store,
            twin,
            places,
            _dir: dir,
        }
    }
}

/// An s3 store on `prefix` of the SeaweedFS bucket.
fn bucket(seaweed: &Seaweed, prefix: &str) -> SharedStore {
    let text = format!(
        "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n{}",
        seaweed.storage("data", prefix)
    );
    let config =
        sluice::config::Config::parse(&text, "store.toml", std::path::Path::new("/tmp")).unwrap();
    Arc::new(
        S3Store::connect(
            &config.storage.s3.unwrap(),
            "test",
            Duration::from_secs(3),
            Duration::from_secs(10),
        )
        .unwrap(),
    )
}

/// The content objects under `prefix` of the bucket, reached without sluice.
fn content_objects(seaweed: &Seaweed, prefix: &str) -> Place {
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&seaweed.endpoint)
        .with_bucket_name(&seaweed.bucket)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .unwrap();
    Place::Bucket(
        Arc::new(raw),
        object_store::path::Path::from(format!("{prefix}content")),
    )
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn check(backend: Backend<'_>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(contract::all(&backend));
}

#[test]
fn the_contract_holds_on_disk() {
    check(Backend::Disk);
}

#[test]
fn the_contract_holds_through_the_fault_wrapper() {
    check(Backend::Faulty);
}

#[test]
fn the_contract_holds_on_a_real_bucket() {
    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    check(Backend::S3(&seaweed));
}

#[test]
fn the_contract_holds_on_a_local_tier_over_a_real_bucket() {
    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    check(Backend::Tiered(&seaweed));
}

#[tokio::test]
async fn the_fault_wrapper_fails_writes_and_loses_races_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new(Arc::new(DiskStore::new(dir.path())));
    let meta = PackumentMeta::default();
    faulty.set(Fault::DiskFull, true);
    assert!(faulty
        .put_packument("a", Bytes::from_static(b"{}"), &meta, Expect::Absent)
        .await
        .is_err());
    faulty.set(Fault::DiskFull, false);
    faulty.conflict_next(1);
    assert_eq!(
        faulty
            .put_packument("a", Bytes::from_static(b"{}"), &meta, Expect::Absent)
            .await
            .unwrap(),
        Written::Conflict
    );
    assert!(faulty.packument("a").await.unwrap().is_none());
    assert!(matches!(
        faulty
            .put_packument("a", Bytes::from_static(b"{}"), &meta, Expect::Absent)
            .await
            .unwrap(),
        Written::Stored(_)
    ));
    faulty.set(Fault::ReadsFail, true);
    assert!(faulty.packument("a").await.is_err());
}

/// How many times the store was walked (usage measured, names listed), as its counts of
/// operations say.
fn walks(sluice: &support::Sluice) -> (u64, u64) {
    let app = &sluice.server.as_ref().unwrap().app;
    let count = |op: &str| {
        app.store_ops
            .stats()
            .iter()
            .filter(|((name, _), _)| *name == op)
            .map(|(_, stats)| stats.count)
            .sum::<u64>()
    };
    (count("usage"), count("list"))
}

#[test]
fn status_and_metrics_do_not_walk_the_store() {
    let upstream = support::FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let sluice = support::Sluice::start(&upstream, "left\n", "[publish]\nscopes = [\"@acme\"]\n");
    let (status, _, _) = sluice.get("/left", &[]);
    assert_eq!(status, 200);
    // The search index of a new store is built from a listing of it, once, at start: counted
    // apart (it is no request's).
    let app = sluice.server.as_ref().unwrap().app.clone();
    assert!(
        support::eventually(60, || app.search.status().state == "ready"),
        "the search index was never built"
    );
    let (_, by_index) = walks(&sluice);
    // While a walk of the store does not end, status and metrics still answer: they do not
    // wait for one. The first request starts one measure and one listing, in the background.
    sluice.store.set(Fault::WalksStall, true);
    assert_eq!(sluice.get_json("/-/sluice/status").0, 200);
    assert_eq!(sluice.get("/-/metrics", &[]).0, 200);
    sluice.store.set(Fault::WalksStall, false);
    assert!(
        support::eventually(30, || walks(&sluice) == (1, by_index + 1)),
        "the store was not measured and listed once: {:?}",
        walks(&sluice)
    );
    assert!(
        support::eventually(30, || metrics_store_bytes(&sluice) > 0),
        "the measure never showed"
    );
    for _ in 0..20 {
        assert_eq!(sluice.get_json("/-/sluice/status").0, 200);
        assert_eq!(sluice.get("/-/metrics", &[]).0, 200);
    }
    assert_eq!(
        walks(&sluice),
        (1, by_index + 1),
        "a request walked the store"
    );
}

fn metrics_store_bytes(sluice: &support::Sluice) -> u64 {
    let (_, _, body) = sluice.get("/-/metrics", &[]);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix("sluice_store_bytes "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}
