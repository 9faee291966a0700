//! The store's contract as checks, each on a fresh store of the backend under test: what
//! `src/store/mod.rs` promises, whatever the backend.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sluice::store::{all_names, Expect, PackumentMeta, Store, Written};
use ssri::Integrity;

use crate::{Backend, Subject};

/// Run every check on `backend`, each on a store of its own.
pub async fn all(backend: &Backend<'_>) {
    let name = backend.name();
    eprintln!("{name}: packument puts are conditional");
    packument_puts_are_conditional(name, &backend.open()).await;
    eprintln!("{name}: concurrent merges keep every addition");
    concurrent_merges_keep_every_addition(name, &backend.open()).await;
    eprintln!("{name}: tarballs are visible only once complete and verified");
    tarballs_are_visible_only_once_complete_and_verified(name, &backend.open()).await;
    eprintln!("{name}: state objects have conditional puts, claims are exclusive");
    state_objects_have_conditional_puts_and_claims_are_exclusive(name, &backend.open()).await;
    eprintln!("{name}: a corrupt tarball ends its stream with an error and is dropped");
    a_corrupt_tarball_ends_its_stream_with_an_error_and_is_dropped(name, &backend.open()).await;
    eprintln!("{name}: tarballs are kept by content and verify drops corrupt content");
    tarballs_are_kept_by_content_and_verify_drops_every_name_of_corrupt_content(
        name,
        &backend.open(),
    )
    .await;
    eprintln!("{name}: a deleted tarball is gone, its content too unless another name keeps it");
    a_deleted_tarball_is_gone_and_its_content_too_unless_another_name_keeps_it(
        name,
        &backend.open(),
    )
    .await;
}

fn meta(at: u64) -> PackumentMeta {
    PackumentMeta {
        etag: Some(format!("\"{at}\"")),
        last_modified: None,
        fetched_at: at,
        origin: None,
    }
}

/// `content` stored as tarball `file` of `name`, in chunks.
async fn put_tarball(store: &dyn Store, name: &str, file: &str, content: &[u8]) {
    let integrity = Integrity::from(content);
    let mut sink = store
        .tarball_sink(name, file, &integrity, Some(content.len() as u64))
        .await
        .unwrap();
    for chunk in content.chunks(64 << 10) {
        sink.write(chunk).await.unwrap();
    }
    sink.commit().await.unwrap();
}

/// What reading tarball `file` of `name` gave: `None` when absent, the bytes served before
/// the stream ended and whether it ended with an error.
async fn read_tarball(store: &dyn Store, name: &str, file: &str) -> Option<(Vec<u8>, bool)> {
    let found = store.tarball(name, file).await.unwrap()?;
    let mut out = Vec::new();
    let mut stream = found.stream;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(_) => return Some((out, true)),
        }
    }
    assert_eq!(out.len() as u64, found.size, "{name}/{file}: size");
    Some((out, false))
}

/// Whether `check` holds within a generous while (some backends drop or release in the
/// background).
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn packument_puts_are_conditional(backend: &str, subject: &Subject) {
    let store = subject.store.as_ref();
    let name = "@s/a";
    assert!(store.packument(name).await.unwrap().is_none(), "{backend}");
    let Written::Stored(first) = store
        .put_packument(name, Bytes::from_static(b"{}"), &meta(1), Expect::Absent)
        .await
        .unwrap()
    else {
        panic!("{backend}: a create over nothing conflicted");
    };
    let again = store
        .put_packument(
            name,
            Bytes::from_static(b"{\"x\":1}"),
            &meta(2),
            Expect::Absent,
        )
        .await
        .unwrap();
    assert_eq!(again, Written::Conflict, "{backend}: create over something");
    let Written::Stored(second) = store
        .put_packument(
            name,
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
            name,
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
    let stored = store.packument(name).await.unwrap().unwrap();
    assert_eq!(
        (&stored.bytes[..], &stored.token, &stored.meta),
        (&b"{\"v\":2}"[..], &second, &meta(2)),
        "{backend}"
    );
    // Another handle on the store reads what this one wrote.
    let read = subject.twin.packument(name).await.unwrap().unwrap();
    assert_eq!(
        (&read.bytes, &read.token),
        (&stored.bytes, &second),
        "{backend}"
    );
    // A touch keeps the bytes and makes a new version.
    let Written::Stored(touched) = store
        .touch_packument(name, &meta(9), &second)
        .await
        .unwrap()
    else {
        panic!("{backend}: touch of the current version conflicted");
    };
    assert_ne!(touched, second, "{backend}");
    assert_eq!(
        store
            .touch_packument(name, &meta(10), &second)
            .await
            .unwrap(),
        Written::Conflict,
        "{backend}: touch of a stale version"
    );
    let (read_meta, token) = store.packument_meta(name).await.unwrap().unwrap();
    assert_eq!((read_meta, token), (meta(9), touched), "{backend}");
    assert_eq!(
        &store.packument(name).await.unwrap().unwrap().bytes[..],
        b"{\"v\":2}",
        "{backend}"
    );
    assert_eq!(
        all_names(store).await.unwrap(),
        vec![name.to_string()],
        "{backend}"
    );
}

/// Many writers merging one document by read → merge → conditional put → retry lose nothing.
async fn concurrent_merges_keep_every_addition(backend: &str, subject: &Subject) {
    let mut tasks = Vec::new();
    for i in 0..12u32 {
        // Half the writers on another handle, as another process would be.
        let store = if i % 2 == 0 {
            subject.store.clone()
        } else {
            subject.twin.clone()
        };
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
    // What the twin wrote last is news to a local tier (the fleet's journal would say so).
    subject.store.forget("m");
    let stored = subject.store.packument("m").await.unwrap().unwrap();
    let mut list: Vec<u32> = serde_json::from_slice(&stored.bytes).unwrap();
    list.sort_unstable();
    assert_eq!(list, (0..12).collect::<Vec<_>>(), "{backend}");
}

async fn tarballs_are_visible_only_once_complete_and_verified(backend: &str, subject: &Subject) {
    let store = subject.store.as_ref();
    // Small enough for one PUT, and large enough for a multipart upload.
    for size in [300_000usize, 19 << 20] {
        let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let integrity = Integrity::from(&content);
        let sha1 = ssri::IntegrityOpts::new()
            .algorithm(ssri::Algorithm::Sha1)
            .chain(&content)
            .result();
        let file = format!("t-{size}.tgz");
        // Dropped before commit: nothing.
        let mut sink = store
            .tarball_sink("t", &file, &integrity, Some(size as u64))
            .await
            .unwrap();
        sink.write(&content[..1000]).await.unwrap();
        drop(sink);
        assert!(
            !store.has_tarball("t", &file).await.unwrap(),
            "{backend} {size}: a dropped sink left something"
        );
        // Wrong bytes: refused at commit, nothing stored.
        let mut sink = store
            .tarball_sink("t", &file, &integrity, Some(size as u64))
            .await
            .unwrap();
        for chunk in content[1..].chunks(64 << 10) {
            sink.write(chunk).await.unwrap();
        }
        assert!(sink.commit().await.is_err(), "{backend} {size}");
        assert!(
            !store.has_tarball("t", &file).await.unwrap(),
            "{backend} {size}: a bad tarball is visible"
        );
        // In chunks, against a sha1 shasum too: stored, streamed back whole.
        for sri in [&integrity, &sha1] {
            let mut sink = store
                .tarball_sink("t", &file, sri, Some(size as u64))
                .await
                .unwrap();
            for chunk in content.chunks(7000) {
                sink.write(chunk).await.unwrap();
            }
            sink.commit().await.unwrap();
        }
        assert!(store.has_tarball("t", &file).await.unwrap(), "{backend}");
        let (read, failed) = read_tarball(store, "t", &file).await.unwrap();
        assert!(
            !failed && read == content,
            "{backend} {size}: the body differs"
        );
        let (read, failed) = read_tarball(subject.twin.as_ref(), "t", &file)
            .await
            .unwrap();
        assert!(
            !failed && read == content,
            "{backend} {size}: another handle"
        );
    }
    assert!(
        store.tarball("t", "t-2.tgz").await.unwrap().is_none(),
        "{backend}"
    );
}

async fn state_objects_have_conditional_puts_and_claims_are_exclusive(
    backend: &str,
    subject: &Subject,
) {
    let store = subject.store.as_ref();
    assert!(store.state("k").await.unwrap().is_none(), "{backend}");
    let Written::Stored(v1) = store
        .put_state("k", Bytes::from_static(b"one"), Expect::Absent)
        .await
        .unwrap()
    else {
        panic!("{backend}: a create over nothing conflicted");
    };
    assert_eq!(
        store
            .put_state("k", Bytes::from_static(b"two"), Expect::Absent)
            .await
            .unwrap(),
        Written::Conflict,
        "{backend}"
    );
    assert!(
        matches!(
            store
                .put_state("k", Bytes::from_static(b"two"), Expect::Version(v1.clone()))
                .await
                .unwrap(),
            Written::Stored(_)
        ),
        "{backend}"
    );
    assert_eq!(
        store
            .put_state("k", Bytes::from_static(b"three"), Expect::Version(v1))
            .await
            .unwrap(),
        Written::Conflict,
        "{backend}"
    );
    assert_eq!(
        &store.state("k").await.unwrap().unwrap().0[..],
        b"two",
        "{backend}"
    );
    // A claim is exclusive, on this handle and any other, until dropped.
    let claim = store.claim("mirror follower").await.unwrap();
    assert!(claim.is_some(), "{backend}");
    assert!(
        store.claim("mirror follower").await.unwrap().is_none(),
        "{backend}"
    );
    let twin = subject.twin.clone();
    assert!(
        twin.claim("mirror follower").await.unwrap().is_none(),
        "{backend}: another handle took a held claim"
    );
    drop(claim);
    assert!(
        eventually(|| {
            let twin = twin.clone();
            async move { twin.claim("mirror follower").await.unwrap().is_some() }
        })
        .await,
        "{backend}: a dropped claim was not released"
    );
    assert!(store.usage().await.unwrap() > 0, "{backend}");
}

async fn a_corrupt_tarball_ends_its_stream_with_an_error_and_is_dropped(
    backend: &str,
    subject: &Subject,
) {
    let store = subject.store.as_ref();
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 13) as u8).collect();
    put_tarball(store, "a", "a-1.0.0.tgz", &content).await;
    assert!(subject.corrupt(&content).await > 0, "{backend}");
    let (served, failed) = read_tarball(store, "a", "a-1.0.0.tgz").await.unwrap();
    assert!(failed, "{backend}: a corrupt tarball's stream ended well");
    assert!(
        served.len() < content.len(),
        "{backend}: a corrupt tarball looked complete"
    );
    // Dropped (so it is fetched again): every read until then fails too, and never whole.
    assert!(
        eventually(|| async {
            match read_tarball(store, "a", "a-1.0.0.tgz").await {
                None => true,
                Some((served, failed)) => {
                    assert!(failed && served.len() < content.len(), "{backend}");
                    false
                }
            }
        })
        .await,
        "{backend}: a corrupt tarball was not dropped"
    );
    assert!(
        !store.has_tarball("a", "a-1.0.0.tgz").await.unwrap(),
        "{backend}"
    );
}

async fn tarballs_are_kept_by_content_and_verify_drops_every_name_of_corrupt_content(
    backend: &str,
    subject: &Subject,
) {
    let store = subject.store.as_ref();
    let shared: Vec<u8> = (0..200_000usize).map(|i| (i * 31 % 251) as u8).collect();
    let other = b"hello tarball".to_vec();
    put_tarball(store, "u", "u-1.tgz", &shared).await;
    put_tarball(store, "w", "w-1.tgz", &other).await;
    let once = subject.copies(&shared).await;
    assert!(once > 0, "{backend}");
    // The same bytes under a second name take no second copy.
    put_tarball(store, "v", "v-1.tgz", &shared).await;
    assert_eq!(
        subject.copies(&shared).await,
        once,
        "{backend}: one copy per content"
    );
    let report = store.verify(&|_, _| {}).await.unwrap();
    assert!(
        report.ok >= 3 && report.corrupt.is_empty() && report.missing.is_empty(),
        "{backend}: {report:?}"
    );
    // Corrupt content is dropped with every name that points at it, and nothing else is.
    subject.corrupt(&shared).await;
    let report = store.verify(&|_, _| {}).await.unwrap();
    let dropped: Vec<&String> = report.corrupt.iter().chain(&report.missing).collect();
    assert!(
        report.ok >= 1 && dropped.len() >= 2,
        "{backend}: {report:?}"
    );
    assert!(
        dropped
            .iter()
            .all(|key| key.contains("u-1.tgz") || key.contains("v-1.tgz")),
        "{backend}: {report:?}"
    );
    for (name, file) in [("u", "u-1.tgz"), ("v", "v-1.tgz")] {
        assert!(
            !store.has_tarball(name, file).await.unwrap(),
            "{backend}: {file} outlived its content"
        );
        assert!(
            store.tarball(name, file).await.unwrap().is_none(),
            "{backend}"
        );
    }
    assert_eq!(
        subject.content_objects().await,
        subject.copies(&other).await,
        "{backend}: the corrupt content is still kept"
    );
    let (read, failed) = read_tarball(store, "w", "w-1.tgz").await.unwrap();
    assert!(!failed && read == other, "{backend}");
}

async fn a_deleted_tarball_is_gone_and_its_content_too_unless_another_name_keeps_it(
    backend: &str,
    subject: &Subject,
) {
    let (store, twin) = (subject.store.as_ref(), subject.twin.as_ref());
    let shared: Vec<u8> = (0..100_000usize).map(|i| (i * 7 % 253) as u8).collect();
    let alone = b"only one name holds these bytes".to_vec();
    put_tarball(store, "d", "d-1.0.0.tgz", &shared).await;
    put_tarball(store, "d", ".stage-x.tgz", &shared).await;
    put_tarball(store, "e", "e-1.0.0.tgz", &alone).await;
    let kept = subject.copies(&shared).await;
    assert!(kept > 0 && subject.copies(&alone).await > 0, "{backend}");

    // Another name keeps the same bytes: only the deleted name goes.
    assert!(
        store.delete_tarball("d", ".stage-x.tgz").await.unwrap(),
        "{backend}"
    );
    for handle in [store, twin] {
        assert!(
            !handle.has_tarball("d", ".stage-x.tgz").await.unwrap(),
            "{backend}: the deleted name is still there"
        );
        assert!(
            handle.tarball("d", ".stage-x.tgz").await.unwrap().is_none(),
            "{backend}"
        );
    }
    let (read, failed) = read_tarball(store, "d", "d-1.0.0.tgz").await.unwrap();
    assert!(
        !failed && read == shared,
        "{backend}: the other name lost its bytes"
    );
    assert_eq!(subject.copies(&shared).await, kept, "{backend}");
    assert!(
        !store.delete_tarball("d", ".stage-x.tgz").await.unwrap(),
        "{backend}: deleted twice"
    );

    // The last name of its content: the bytes go too, from every place.
    assert!(
        store.delete_tarball("e", "e-1.0.0.tgz").await.unwrap(),
        "{backend}"
    );
    assert!(
        store.tarball("e", "e-1.0.0.tgz").await.unwrap().is_none(),
        "{backend}"
    );
    assert_eq!(subject.copies(&alone).await, 0, "{backend}: content kept");
    assert!(
        store.delete_tarball("d", "d-1.0.0.tgz").await.unwrap(),
        "{backend}"
    );
    assert_eq!(subject.copies(&shared).await, 0, "{backend}: content kept");
    assert!(
        !twin.has_tarball("d", "d-1.0.0.tgz").await.unwrap(),
        "{backend}"
    );
}
