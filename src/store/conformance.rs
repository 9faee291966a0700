//! The store's contract as tests, run against every backend (and the fault wrapper).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use ssri::Integrity;

use super::*;

fn backends(dir: &Path) -> Vec<(&'static str, SharedStore)> {
    vec![
        ("disk", Arc::new(DiskStore::new(dir.join("disk")))),
        (
            "faulty(disk)",
            Arc::new(Faulty::new(Arc::new(DiskStore::new(dir.join("faulty"))))),
        ),
    ]
}

fn meta(at: u64) -> PackumentMeta {
    PackumentMeta {
        etag: Some(format!("\"{at}\"")),
        last_modified: None,
        fetched_at: at,
        origin: None,
    }
}

async fn body(store: &dyn Store, name: &str, file: &str) -> Option<Result<Vec<u8>, StoreError>> {
    let found = store.tarball(name, file).await.unwrap()?;
    let mut out = Vec::new();
    let mut stream = found.stream;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(e) => return Some(Err(e)),
        }
    }
    assert_eq!(out.len() as u64, found.size);
    Some(Ok(out))
}

#[tokio::test]
async fn packument_puts_are_conditional() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, store) in backends(dir.path()) {
        assert!(store.packument("a").await.unwrap().is_none(), "{backend}");
        let Written::Stored(first) = store
            .put_packument("a", Bytes::from_static(b"{}"), &meta(1), Expect::Absent)
            .await
            .unwrap()
        else {
            panic!("{backend}: a create over nothing conflicted");
        };
        let again = store
            .put_packument(
                "a",
                Bytes::from_static(b"{\"x\":1}"),
                &meta(2),
                Expect::Absent,
            )
            .await
            .unwrap();
        assert_eq!(again, Written::Conflict, "{backend}: create over something");
        let Written::Stored(second) = store
            .put_packument(
                "a",
                Bytes::from_static(b"{\"v\":2}"),
                &meta(2),
                Expect::Version(first.clone()),
            )
            .await
            .unwrap()
        else {
            panic!("{backend}: an update of the version read conflicted");
        };
        assert_ne!(first, second, "{backend}");
        let stale = store
            .put_packument(
                "a",
                Bytes::from_static(b"{}"),
                &meta(3),
                Expect::Version(first),
            )
            .await
            .unwrap();
        assert_eq!(
            stale,
            Written::Conflict,
            "{backend}: update of a stale version"
        );
        let stored = store.packument("a").await.unwrap().unwrap();
        assert_eq!(&stored.bytes[..], b"{\"v\":2}", "{backend}");
        assert_eq!(stored.token, second, "{backend}");
        // A touch keeps the bytes and makes a new version.
        let Written::Stored(touched) = store.touch_packument("a", &meta(9), &second).await.unwrap()
        else {
            panic!("{backend}: touch of the current version conflicted");
        };
        assert_ne!(touched, second, "{backend}");
        assert_eq!(
            store
                .touch_packument("a", &meta(10), &second)
                .await
                .unwrap(),
            Written::Conflict,
            "{backend}: touch of a stale version"
        );
        let (read_meta, token) = store.packument_meta("a").await.unwrap().unwrap();
        assert_eq!((read_meta, token), (meta(9), touched), "{backend}");
        assert_eq!(
            &store.packument("a").await.unwrap().unwrap().bytes[..],
            b"{\"v\":2}"
        );
        assert_eq!(
            all_names(store.as_ref()).await.unwrap(),
            vec!["a".to_string()]
        );
    }
}

/// Many writers merging one document by read → merge → conditional put → retry lose nothing.
#[tokio::test]
async fn concurrent_merges_keep_every_addition() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, store) in backends(dir.path()) {
        let mut tasks = Vec::new();
        for i in 0..12 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let held = store.packument("m").await.unwrap();
                    let mut list: Vec<u32> = held
                        .as_ref()
                        .map(|h| serde_json::from_slice(&h.bytes).unwrap())
                        .unwrap_or_default();
                    list.push(i);
                    let bytes = Bytes::from(serde_json::to_vec(&list).unwrap());
                    let expect = Expect::from_read(held.as_ref().map(|h| &h.token));
                    match store
                        .put_packument("m", bytes, &meta(1), expect)
                        .await
                        .unwrap()
                    {
                        Written::Stored(_) => return,
                        Written::Conflict => tokio::task::yield_now().await,
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let stored = store.packument("m").await.unwrap().unwrap();
        let mut list: Vec<u32> = serde_json::from_slice(&stored.bytes).unwrap();
        list.sort_unstable();
        assert_eq!(list, (0..12).collect::<Vec<_>>(), "{backend}");
    }
}

#[tokio::test]
async fn tarballs_are_visible_only_once_complete_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let integrity = Integrity::from(&content);
    let sha1 = ssri::IntegrityOpts::new()
        .algorithm(ssri::Algorithm::Sha1)
        .chain(&content)
        .result();
    for (backend, store) in backends(dir.path()) {
        // Dropped before commit: nothing.
        let mut sink = store
            .tarball_sink("t", "t-1.tgz", &integrity, Some(content.len() as u64))
            .await
            .unwrap();
        sink.write(&content[..1000]).await.unwrap();
        drop(sink);
        assert!(
            !store.has_tarball("t", "t-1.tgz").await.unwrap(),
            "{backend}"
        );
        // Wrong bytes: refused at commit, nothing stored.
        let mut sink = store
            .tarball_sink("t", "t-1.tgz", &integrity, None)
            .await
            .unwrap();
        sink.write(&content[1..]).await.unwrap();
        assert!(sink.commit().await.is_err(), "{backend}");
        assert!(
            !store.has_tarball("t", "t-1.tgz").await.unwrap(),
            "{backend}"
        );
        // In chunks, against a sha1 shasum too: stored, streamed back whole.
        for sri in [&integrity, &sha1] {
            let mut sink = store
                .tarball_sink("t", "t-1.tgz", sri, Some(content.len() as u64))
                .await
                .unwrap();
            for chunk in content.chunks(7000) {
                sink.write(chunk).await.unwrap();
            }
            sink.commit().await.unwrap();
        }
        assert!(
            store.has_tarball("t", "t-1.tgz").await.unwrap(),
            "{backend}"
        );
        let read = body(store.as_ref(), "t", "t-1.tgz").await.unwrap().unwrap();
        assert!(read == content, "{backend}: body differs");
        assert!(store.tarball("t", "t-2.tgz").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn state_objects_have_conditional_puts() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, store) in backends(dir.path()) {
        assert!(store.state("k").await.unwrap().is_none(), "{backend}");
        let Written::Stored(v1) = store
            .put_state("k", Bytes::from_static(b"one"), Expect::Absent)
            .await
            .unwrap()
        else {
            panic!("{backend}");
        };
        assert_eq!(
            store
                .put_state("k", Bytes::from_static(b"two"), Expect::Absent)
                .await
                .unwrap(),
            Written::Conflict
        );
        assert!(matches!(
            store
                .put_state("k", Bytes::from_static(b"two"), Expect::Version(v1.clone()))
                .await
                .unwrap(),
            Written::Stored(_)
        ));
        assert_eq!(
            store
                .put_state("k", Bytes::from_static(b"three"), Expect::Version(v1))
                .await
                .unwrap(),
            Written::Conflict
        );
        assert_eq!(&store.state("k").await.unwrap().unwrap().0[..], b"two");
        // A claim is exclusive until dropped.
        let claim = store.claim("mirror").await.unwrap();
        assert!(claim.is_some(), "{backend}");
        assert!(store.claim("mirror").await.unwrap().is_none(), "{backend}");
        drop(claim);
        assert!(store.claim("mirror").await.unwrap().is_some(), "{backend}");
        assert!(store.usage().await.unwrap() > 0, "{backend}");
    }
}

#[tokio::test]
async fn a_flipped_byte_ends_the_stream_with_an_error_and_drops_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::new(dir.path());
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 13) as u8).collect();
    let integrity = Integrity::from(&content);
    let mut sink = store
        .tarball_sink("a", "a-1.0.0.tgz", &integrity, None)
        .await
        .unwrap();
    sink.write(&content).await.unwrap();
    sink.commit().await.unwrap();
    for entry in walk(&dir.path().join("content-v2")) {
        let mut bytes = std::fs::read(&entry).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&entry, bytes).unwrap();
    }
    let found = store.tarball("a", "a-1.0.0.tgz").await.unwrap().unwrap();
    let chunks: Vec<Result<Bytes, StoreError>> = found.stream.collect().await;
    let served: usize = chunks
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .map(Bytes::len)
        .sum();
    assert!(chunks.last().unwrap().is_err());
    assert!(served < content.len(), "a corrupt tarball looked complete");
    assert!(!store.has_tarball("a", "a-1.0.0.tgz").await.unwrap());
}

#[tokio::test]
async fn verify_drops_corrupt_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::new(dir.path());
    let content = b"hello tarball".to_vec();
    let mut sink = store
        .tarball_sink("a", "a-1.0.0.tgz", &Integrity::from(&content), None)
        .await
        .unwrap();
    sink.write(&content).await.unwrap();
    sink.commit().await.unwrap();
    for entry in walk(&dir.path().join("content-v2")) {
        let mut bytes = std::fs::read(&entry).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&entry, bytes).unwrap();
    }
    let report = store.verify(&|_, _| {}).await.unwrap();
    assert_eq!(report.corrupt, vec!["tarball:a/a-1.0.0.tgz".to_string()]);
    assert!(!store.has_tarball("a", "a-1.0.0.tgz").await.unwrap());
}

#[tokio::test]
async fn the_fault_wrapper_fails_writes_and_loses_races_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new(Arc::new(DiskStore::new(dir.path())));
    faulty.set(Fault::DiskFull, true);
    assert!(faulty
        .put_packument("a", Bytes::from_static(b"{}"), &meta(1), Expect::Absent)
        .await
        .is_err());
    faulty.set(Fault::DiskFull, false);
    faulty.conflict_next(1);
    assert_eq!(
        faulty
            .put_packument("a", Bytes::from_static(b"{}"), &meta(1), Expect::Absent)
            .await
            .unwrap(),
        Written::Conflict
    );
    assert!(faulty.packument("a").await.unwrap().is_none());
    assert!(matches!(
        faulty
            .put_packument("a", Bytes::from_static(b"{}"), &meta(1), Expect::Absent)
            .await
            .unwrap(),
        Written::Stored(_)
    ));
    faulty.set(Fault::ReadsFail, true);
    assert!(faulty.packument("a").await.is_err());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
