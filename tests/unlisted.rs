//! Tarballs upstream serves but no longer lists (issue 25, item 5): a lockfile that pins such a
//! version installs through sluice as it does directly, and again with upstream down; the
//! plugins judge it; private names and file names of another shape never reach upstream;
//! `add-package --lockfile` mirrors it, verified against the lockfile's integrity.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::publishing::{add_user, doc_path, login, publish_body, send, sha512, tarball_with};
use support::{FakeRegistry, Sluice};

fn cli(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    support::sluice_cli(config, args)
}

/// Whether sluice's store holds tarball `file` of `name`.
fn stored(sluice: &Sluice, name: &str, file: &str) -> bool {
    let app = sluice.server.as_ref().unwrap().app.clone();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(app.store.has_tarball(name, file))
        .unwrap()
}

/// The unlisted tarballs the status document counts, once it shows `want` (the count is
/// read in the background).
fn status_counts(sluice: &Sluice, want: u64) -> bool {
    support::eventually(20, || {
        sluice.get_json("/-/sluice/status").1["unlisted_tarballs"] == json!(want)
    })
}

#[test]
fn a_yarn_1_lockfile_pinning_an_unlisted_version_installs_through_sluice_and_with_upstream_down() {
    let Some(yarn) = support::tool("yarn/bin/yarn.js") else {
        return;
    };
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("left", "1.1.0", &[]);
    upstream.publish("right", "2.0.0", &[("left", "1.0.0")]);
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("package.json"),
        r#"{"name":"app","version":"1.0.0","private":true,"dependencies":{"right":"^2.0.0"}}"#,
    )
    .unwrap();
    let yarn_install = |registry: &str, extra: &[&str], cache: &str| {
        Command::new("node")
            .arg(&yarn)
            .args(["install", "--non-interactive", "--registry", registry])
            .args(extra)
            .arg("--cache-folder")
            .arg(project.path().join(cache))
            .env("YARN_IGNORE_PATH", "1")
            .current_dir(project.path())
            .output()
            .unwrap()
    };
    // The lockfile as a project wrote it while left 1.0.0 was listed.
    let out = yarn_install(&upstream.url(), &[], ".cache-0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Then upstream takes it out of the packument and still serves its tarball: a direct
    // frozen install works.
    upstream.unlist("left", "1.0.0");
    let doc = upstream.packument("left").unwrap();
    assert!(doc["versions"].get("1.0.0").is_none());
    std::fs::remove_dir_all(project.path().join("node_modules")).unwrap();
    let out = yarn_install(&upstream.url(), &["--frozen-lockfile"], ".cache-1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Through sluice, which never saw left 1.0.0 listed.
    let sluice = Sluice::start(&upstream, "left\nright\n", "");
    let lockfile = project.path().join("yarn.lock");
    let out = cli(
        &sluice.config_path,
        &["lockfile", "rewrite", lockfile.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(project.path().join("node_modules")).unwrap();
    let out = yarn_install(&sluice.url(), &["--frozen-lockfile"], ".cache-2");
    assert!(
        out.status.success(),
        "through sluice: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed =
        std::fs::read_to_string(project.path().join("node_modules/left/index.js")).unwrap();
    assert!(installed.contains("left@1.0.0"), "{installed}");
    assert!(stored(&sluice, "left", "left-1.0.0.tgz"));
    let fetched = upstream.count("/left/-/left-1.0.0.tgz");

    // Status and metrics count it.
    assert!(status_counts(&sluice, 1));
    let (_, _, metrics) = sluice.get("/-/metrics", &[]);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("\nsluice_unlisted_tarballs 1\n"),
        "{metrics}"
    );

    // Again, with upstream down: served from the store.
    upstream.set_down(true);
    std::fs::remove_dir_all(project.path().join("node_modules")).unwrap();
    let out = yarn_install(&sluice.url(), &["--frozen-lockfile"], ".cache-3");
    assert!(
        out.status.success(),
        "with upstream down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(project.path().join("node_modules/left/index.js").exists());
    assert_eq!(upstream.count("/left/-/left-1.0.0.tgz"), fetched);
}

#[test]
fn an_unlisted_version_a_plugin_hides_is_refused_with_the_reason_and_never_fetched() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "2.0.0", &[]);
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("left", "1.5.0", &[]);
    let young = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    upstream.publish_with("left", "1.6.0", json!({}), Some(&young));
    upstream.publish("left", "1.7.0", &[]);
    upstream.drop_time("left", "1.7.0");
    for version in ["1.0.0", "1.5.0", "1.6.0", "1.7.0"] {
        upstream.unlist("left", version);
    }
    let sluice = Sluice::start(
        &upstream,
        "left\n",
        "[[plugins]]\nkind = \"deny\"\npackages = [\"left@<1.1.0\"]\n\n\
         [[plugins]]\nkind = \"min-age\"\ndays = 7\n",
    );
    let refused = |file: &str, because: &str| {
        let (status, _, body) = sluice.get(&format!("/left/-/{file}"), &[]);
        let body = String::from_utf8_lossy(&body).to_string();
        assert_eq!(status, 403, "{file}: {body}");
        assert!(body.contains(because), "{file}: {body}");
        assert_eq!(upstream.count(&format!("/left/-/{file}")), 0, "{file}");
    };
    refused("left-1.0.0.tgz", "denied");
    // min-age reads the `time` entry upstream kept for the version it no longer lists.
    refused("left-1.6.0.tgz", "less than 7 days ago");
    refused("left-1.7.0.tgz", "no publish time");
    // An old one passes the same plugins.
    let (status, _, body) = sluice.get("/left/-/left-1.5.0.tgz", &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, upstream.tarball("left", "1.5.0"));
}

#[test]
fn a_private_names_unlisted_tarball_is_never_asked_upstream() {
    let upstream = FakeRegistry::start();
    // Upstream has a package of the same name, listed and unlisted versions.
    upstream.publish("@acme/kit", "1.0.0", &[]);
    upstream.publish("@acme/kit", "2.0.0", &[]);
    upstream.unlist("@acme/kit", "2.0.0");
    let sluice = Sluice::start(
        &upstream,
        "",
        "[auth]\nusers = \"users\"\n\n[publish]\nscopes = [\"@acme\"]\n",
    );
    add_user(&sluice, "alice", "correct horse");
    let token = login(&sluice, "alice", "correct horse");
    let manifest = json!({"name": "@acme/kit", "version": "1.0.0"});
    let tgz = tarball_with(&manifest);
    let (status, body) = send(
        &sluice,
        "PUT",
        &doc_path("@acme/kit"),
        Some(&token),
        Some(&publish_body(&manifest, &tgz)),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = sluice.get("/@acme/kit/-/kit-1.0.0.tgz", &[]);
    assert_eq!(status, 200);
    assert_eq!(sha512(&body), sha512(&tgz));
    for file in ["kit-2.0.0.tgz", "kit-1.0.1.tgz"] {
        let (status, _, _) = sluice.get(&format!("/@acme/kit/-/{file}"), &[]);
        assert_eq!(status, 404, "{file}");
    }
    assert_eq!(upstream.count_prefix("/@acme"), 0);
    assert!(status_counts(&sluice, 0));
}

#[test]
fn a_file_name_not_of_the_registry_shape_or_of_another_package_is_never_fetched() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("right", "2.0.0", &[]);
    upstream.unlist("right", "2.0.0");
    let sluice = Sluice::start(&upstream, "left\nright\n", "");
    for file in [
        "right-2.0.0.tgz",
        "left-v1.0.1.tgz",
        "left-1.0.tgz",
        "left-1.0.1.tar.gz",
        "left-01.0.1.tgz",
        "left-pad-1.0.1.tgz",
        "left-1.0.1.tgz.tgz",
    ] {
        let (status, _, _) = sluice.get(&format!("/left/-/{file}"), &[]);
        // 400: not even a tarball file name.
        assert!(matches!(status, 400 | 404), "{file}: {status}");
    }
    assert_eq!(upstream.count_prefix("/left/-/"), 0);
    // One of the registry's shape that upstream does not have either: asked once; asked again
    // right after, answered from what sluice remembers of that file. Another file is its own
    // question (a made-up version never hides a real unlisted tarball of the package).
    let (status, _, _) = sluice.get("/left/-/left-9.9.9.tgz", &[]);
    assert_eq!(status, 404);
    let (status, _, _) = sluice.get("/left/-/left-9.9.9.tgz", &[]);
    assert_eq!(status, 404);
    assert_eq!(upstream.count_prefix("/left/-/"), 1);
    let (status, _, _) = sluice.get("/left/-/left-9.9.8.tgz", &[]);
    assert_eq!(status, 404);
    assert_eq!(upstream.count_prefix("/left/-/"), 2);
    assert!(!stored(&sluice, "left", "left-9.9.9.tgz"));
}

#[test]
fn add_package_lockfile_mirrors_an_unlisted_version_and_refuses_an_integrity_mismatch() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("left", "1.1.0", &[]);
    upstream.publish("right", "2.0.0", &[]);
    upstream.publish("right", "2.1.0", &[]);
    upstream.unlist("left", "1.0.0");
    upstream.unlist("right", "2.0.0");
    let left = upstream.tarball("left", "1.0.0");
    let sluice = Sluice::start(&upstream, "", "");
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("package-lock.json");
    let wrong = sha512(b"something else");
    let text: Value = json!({"name": "app", "lockfileVersion": 3, "packages": {"": {},
        "node_modules/left": {"version": "1.0.0", "integrity": sha512(&left)},
        "node_modules/right": {"version": "2.0.0", "integrity": wrong}}});
    std::fs::write(&lock, text.to_string()).unwrap();
    let out = cli(
        &sluice.config_path,
        &["add-package", "--lockfile", lock.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("right@2.0.0") && stderr.contains("integrity"),
        "{stderr}"
    );
    assert!(!stderr.contains("left@1.0.0"), "{stderr}");
    assert!(stored(&sluice, "left", "left-1.0.0.tgz"));
    assert!(!stored(&sluice, "right", "right-2.0.0.tgz"));
    // Served from the store with upstream down, as recorded (once the server read the
    // whitelist add-package wrote).
    upstream.set_down(true);
    assert!(support::eventually(20, || {
        sluice.get("/left/-/left-1.0.0.tgz", &[]).0 != 403
    }));
    let (status, _, body) = sluice.get("/left/-/left-1.0.0.tgz", &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, left);
    assert!(status_counts(&sluice, 1));
}

#[test]
fn unlisted_records_are_kept_per_package_and_made_up_names_add_none() {
    let upstream = FakeRegistry::start();
    for version in ["1.0.0", "1.1.0", "1.2.0", "2.0.0"] {
        upstream.publish("left", version, &[]);
    }
    upstream.publish("right", "1.0.0", &[]);
    upstream.publish("right", "2.0.0", &[]);
    for (name, version) in [
        ("left", "1.0.0"),
        ("left", "1.1.0"),
        ("left", "1.2.0"),
        ("right", "1.0.0"),
    ] {
        upstream.unlist(name, version);
    }
    let sluice = Sluice::start(&upstream, "left\nright\n", "");
    for file in ["left-1.0.0.tgz", "left-1.1.0.tgz", "left-1.2.0.tgz"] {
        let (status, _, _) = sluice.get(&format!("/left/-/{file}"), &[]);
        assert_eq!(status, 200, "{file}");
    }
    assert_eq!(sluice.get("/right/-/right-1.0.0.tgz", &[]).0, 200);
    // Made-up versions upstream has no tarball of: remembered in memory, never recorded.
    for patch in 0..40 {
        let (status, _, _) = sluice.get(&format!("/left/-/left-9.0.{patch}.tgz"), &[]);
        assert_eq!(status, 404, "9.0.{patch}");
    }
    let app = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let state = |key: &str| -> Option<Value> {
        runtime
            .block_on(app.store.state(key))
            .unwrap()
            .map(|(bytes, _)| serde_json::from_slice(&bytes).unwrap())
    };
    // Each package's records in an object of its own, holding its own only.
    let files = |name: &str| -> Vec<String> {
        let records = state(&format!("unlisted/{name}")).unwrap_or(Value::Null);
        let tarballs = records["tarballs"].as_object().cloned().unwrap_or_default();
        assert!(
            tarballs.values().all(|r| r["name"] == name),
            "{name}: {records}"
        );
        tarballs
            .values()
            .map(|r| r["file"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        files("left"),
        ["left-1.0.0.tgz", "left-1.1.0.tgz", "left-1.2.0.tgz"]
    );
    assert_eq!(files("right"), ["right-1.0.0.tgz"]);
    assert!(
        state("unlisted-tarballs").is_none(),
        "no object holds every package's records"
    );
    assert!(status_counts(&sluice, 4));
    // Served from the records with upstream down.
    upstream.set_down(true);
    let (status, _, body) = sluice.get("/left/-/left-1.1.0.tgz", &[]);
    assert_eq!(status, 200);
    assert_eq!(body, upstream.tarball("left", "1.1.0"));
}
