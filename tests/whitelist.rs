//! The whitelist, operated: hot reload, add-package with the dependency closure, refresh,
//! offline installs and unpublish retention; and under stress: a server and add-package
//! writing one store at once, 100,000 lines, a file that cannot be read.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::process::listen_addr;
use support::{eventually, raw_request, tree, FakeRegistry, Project, Reaped, Sluice};

fn status(sluice: &Sluice, path: &str) -> u16 {
    sluice.get(path, &[]).0
}

fn small_tree(upstream: &FakeRegistry) {
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("left", "1.1.0", &[]);
    upstream.publish("right", "2.0.0", &[("left", "^1.0.0")]);
    upstream.publish("extra", "1.0.0", &[]);
}

#[test]
fn whitelist_edits_are_live_without_restart_whatever_the_editor_does() {
    let upstream = FakeRegistry::start();
    small_tree(&upstream);
    let sluice = Sluice::start(&upstream, "left\n", "");
    let path = sluice.whitelist_path();
    let dir = sluice.dir.path().to_path_buf();
    assert_eq!(status(&sluice, "/right"), 403);

    // 1. In place: truncate, then write (as `echo > file` or many editors do).
    fs::write(&path, "left\nright\n").unwrap();
    assert!(
        eventually(3, || status(&sluice, "/right") == 200),
        "in-place write"
    );

    // 2. Rename over (vim, `sed -i`).
    let temp = dir.join("whitelist.swp");
    fs::write(&temp, "left\nextra\n").unwrap();
    fs::rename(&temp, &path).unwrap();
    assert!(
        eventually(3, || status(&sluice, "/extra") == 200),
        "rename-over"
    );
    assert!(eventually(3, || status(&sluice, "/right") == 403));

    // 3. Delete, then recreate.
    fs::remove_file(&path).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        status(&sluice, "/left"),
        200,
        "a missing file keeps the last good list"
    );
    fs::write(&path, "right\n").unwrap();
    assert!(
        eventually(3, || status(&sluice, "/right") == 200),
        "recreate"
    );
    assert!(eventually(3, || status(&sluice, "/left") == 403));

    // 4. Symlink swap (a Kubernetes ConfigMap swaps a link to a new folder).
    let v1 = dir.join("..v1");
    fs::create_dir(&v1).unwrap();
    fs::write(v1.join("whitelist"), "left\nright\nextra\n").unwrap();
    let link = dir.join("whitelist.new");
    std::os::unix::fs::symlink(v1.join("whitelist"), &link).unwrap();
    fs::rename(&link, &path).unwrap();
    assert!(
        eventually(3, || status(&sluice, "/extra") == 200),
        "symlink swap"
    );
    let v2 = dir.join("..v2");
    fs::create_dir(&v2).unwrap();
    fs::write(v2.join("whitelist"), "left\n").unwrap();
    std::os::unix::fs::symlink(v2.join("whitelist"), &link).unwrap();
    fs::rename(&link, &path).unwrap();
    assert!(
        eventually(3, || status(&sluice, "/extra") == 403),
        "second symlink swap"
    );

    // A broken file keeps the last good list.
    fs::write(dir.join("whitelist.tmp"), "left\nright\n../broken\n").unwrap();
    fs::rename(dir.join("whitelist.tmp"), &path).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        status(&sluice, "/right"),
        403,
        "a file with bad lines is not applied"
    );
    assert_eq!(status(&sluice, "/left"), 200);

    // CRLF and a BOM are fine.
    fs::write(dir.join("whitelist.tmp"), "\u{feff}left\r\nright\r\n").unwrap();
    fs::rename(dir.join("whitelist.tmp"), &path).unwrap();
    assert!(
        eventually(3, || status(&sluice, "/right") == 200),
        "CRLF + BOM"
    );
}

#[test]
fn an_empty_file_after_a_truncate_is_not_applied_unless_it_stays_empty() {
    let upstream = FakeRegistry::start();
    small_tree(&upstream);
    let sluice = Sluice::start(&upstream, "left\n", "");
    let path = sluice.whitelist_path();
    // Truncate, then write shortly after: the list never becomes empty.
    let file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    drop(file);
    std::thread::sleep(Duration::from_millis(60));
    fs::write(&path, "left\nright\n").unwrap();
    for _ in 0..20 {
        assert_eq!(status(&sluice, "/left"), 200);
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(eventually(3, || status(&sluice, "/right") == 200));
    // An empty file that stays empty is applied.
    fs::write(&path, "").unwrap();
    assert!(eventually(3, || status(&sluice, "/left") == 403));
}

/// A deep tree with a cycle, a peer dependency, an optional dependency, a prerelease, an
/// alias and a git dependency (skipped).
fn deep_tree(upstream: &FakeRegistry) {
    use serde_json::json;
    upstream.publish_with(
        "app",
        "1.0.0",
        json!({"dependencies": {"lib-a": "^1.0.0", "lib-b": "~2.1.0", "aliased": "npm:lib-f@^2.0.0-beta.0"}}),
        None,
    );
    upstream.publish("lib-a", "1.0.0", &[("lib-c", "1.x")]);
    upstream.publish_with(
        "lib-a",
        "1.2.0",
        json!({"dependencies": {"lib-c": "1.x"}, "peerDependencies": {"lib-d": ">=3"}}),
        None,
    );
    upstream.publish("lib-a", "2.0.0", &[("never-needed", "1")]);
    upstream.publish_with(
        "lib-b",
        "2.1.5",
        json!({"optionalDependencies": {"lib-e": "*"}}),
        None,
    );
    upstream.publish("lib-c", "1.4.0", &[("lib-a", "^1.0.0")]); // a cycle back to lib-a
    upstream.publish("lib-d", "3.1.0", &[]);
    upstream.publish("lib-e", "0.0.1", &[]);
    upstream.publish("lib-f", "2.0.0-beta.2", &[]);
    upstream.publish("never-needed", "1.0.0", &[]);
}

fn sluice_cli(sluice: &Sluice, args: &[&str]) -> std::process::Output {
    support::sluice_cli(&sluice.config_path, args)
}

#[test]
fn add_package_mirrors_the_closure_and_npm_installs_it_with_upstream_down() {
    let upstream = FakeRegistry::start();
    deep_tree(&upstream);
    let sluice = Sluice::start(&upstream, "# approved\nleft-alone\n", "");
    let out = sluice_cli(&sluice, &["add-package", "app"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("7 packages in the closure"), "{stdout}");
    let list = sluice.whitelist();
    assert!(list.starts_with("# approved\nleft-alone\n"), "{list}");
    for name in ["app", "lib-a", "lib-b", "lib-c", "lib-d", "lib-e", "lib-f"] {
        assert_eq!(
            list.lines().filter(|l| *l == name).count(),
            1,
            "{name}: {list}"
        );
    }
    assert!(!list.contains("never-needed"), "{list}");
    assert!(!list.contains("someone"), "{list}");

    // Idempotent: a second run adds nothing.
    let out = sluice_cli(&sluice, &["add-package", "app"]);
    assert!(out.status.success());
    assert_eq!(sluice.whitelist(), list);

    // The running server picked the edit up; upstream goes away; npm still installs.
    assert!(eventually(3, || status(&sluice, "/app") == 200));
    upstream.set_down(true);
    let project = Project::new();
    project.install(&sluice.url(), &["app"]);
    assert_eq!(project.require("app"), "app@1.0.0");
    assert_eq!(project.require("lib-a"), "lib-a@1.2.0");
    assert_eq!(project.require("aliased"), "lib-f@2.0.0-beta.2");

    // remove-package takes the name off and keeps comments.
    let out = sluice_cli(&sluice, &["remove-package", "lib-e"]);
    assert!(out.status.success());
    assert!(!sluice.whitelist().lines().any(|l| l == "lib-e"));
    assert!(sluice.whitelist().starts_with("# approved\n"));
}

#[test]
fn read_through_appends_never_lose_a_concurrent_manual_edit() {
    let upstream = FakeRegistry::start();
    for i in 0..20 {
        upstream.publish(&format!("rt-{i}"), "1.0.0", &[]);
    }
    let sluice = Sluice::start(
        &upstream,
        "# admins' list\nleft\n",
        "[policy]\nread_through = true\n",
    );
    let path = sluice.whitelist_path();
    let url = sluice.url();
    let fetcher = std::thread::spawn(move || {
        for i in 0..20 {
            let (status, _, _) = support::http_get(&format!("{url}rt-{i}"), &[]);
            assert_eq!(status, 200);
        }
    });
    // Meanwhile an admin appends lines by hand, each in one write (as `echo name >> file`
    // does; `writeln!` on a File writes each formatted piece separately, and sluice's own
    // append could land between two pieces of one line).
    for i in 0..20 {
        use std::io::Write;
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(format!("manual-{i}\n").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    fetcher.join().unwrap();
    let list = fs::read_to_string(&path).unwrap();
    assert!(list.starts_with("# admins' list\nleft\n"), "{list}");
    for i in 0..20 {
        for name in [format!("rt-{i}"), format!("manual-{i}")] {
            assert_eq!(
                list.lines().filter(|l| **l == *name).count(),
                1,
                "{name}:\n{list}"
            );
        }
    }
}

#[test]
fn unpublished_versions_and_packages_stay_installable() {
    let upstream = FakeRegistry::start();
    small_tree(&upstream);
    let sluice = Sluice::start(&upstream, "left\nright\n", "[policy]\nrefresh = \"1s\"\n");
    let project = Project::new();
    project.install(&sluice.url(), &["left@1.1.0", "right"]);

    upstream.unpublish_version("left", "1.1.0");
    upstream.unpublish("right");
    std::thread::sleep(Duration::from_millis(1200));
    // A request after the refresh period revalidates in the background; wait until the
    // upstream view has been merged in.
    let before = upstream.count("/left");
    sluice.get("/left", &[]);
    assert!(eventually(5, || upstream.count("/left") > before));
    std::thread::sleep(Duration::from_millis(300));
    let (_, doc) = sluice.get_json("/left");
    assert!(doc["versions"]["1.1.0"].is_object(), "{doc}");
    assert_eq!(doc["time"]["1.1.0"], "2020-01-01T00:00:00.000Z");
    let (status, doc) = sluice.get_json("/right");
    assert_eq!(status, 200);
    assert!(doc["versions"]["2.0.0"].is_object());

    let fresh = Project::new();
    fresh.install(&sluice.url(), &["left@1.1.0", "right@2.0.0"]);
    assert_eq!(fresh.require("left"), "left@1.1.0");
    assert_eq!(fresh.require("right"), "right@2.0.0");
}

#[test]
fn refresh_picks_up_new_versions_and_upstream_failure_serves_stale() {
    let upstream = FakeRegistry::start();
    small_tree(&upstream);
    let sluice = Sluice::start(
        &upstream,
        "left\nright\n",
        "[policy]\nrefresh = \"1s\"\ntarballs = \"latest\"\n",
    );
    let (status, _) = sluice.get_json("/left");
    assert_eq!(status, 200);
    upstream.publish("left", "1.2.0", &[]);
    let registry = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // No client asks; the refresher stores the new version and its tarball (tarballs = latest).
    assert!(eventually(10, || {
        runtime
            .block_on(registry.store.has_tarball("left", "left-1.2.0.tgz"))
            .unwrap()
    }));
    let stored = runtime
        .block_on(registry.store.packument("left"))
        .unwrap()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&stored.bytes).unwrap();
    assert!(doc["versions"]["1.2.0"].is_object());
    assert!(runtime
        .block_on(registry.store.has_tarball("right", "right-2.0.0.tgz"))
        .unwrap());

    // Upstream down: everything mirrored still installs, answers say STALE when due.
    upstream.set_down(true);
    std::thread::sleep(Duration::from_millis(1200));
    let (status, headers, _) = sluice.get("/left", &[]);
    assert_eq!(status, 200);
    assert_eq!(headers["x-cache-status"], "STALE");
    let project = Project::new();
    project.install(&sluice.url(), &["right"]);
    assert_eq!(project.require("left"), "left@1.2.0");
}

#[test]
fn a_first_run_with_the_shipped_configuration_writes_only_under_data() {
    // A copy of the checkout's conf/ in a folder of its own, pointed at the fake registry.
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let checkout = tempfile::tempdir().unwrap();
    let conf = checkout.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let shipped = include_str!("../conf/sluice.toml");
    let port = sluice::server::free_port().unwrap();
    let text = shipped
        .replace(
            "# registry = \"https://registry.example.com/\"",
            &format!("registry = \"{}\"", upstream.url()),
        )
        .replace("127.0.0.1:4870", &format!("127.0.0.1:{port}"));
    assert_ne!(text, shipped);
    std::fs::write(conf.join("sluice.toml"), &text).unwrap();
    let example = include_str!("../conf/whitelist");
    std::fs::write(conf.join("whitelist"), example).unwrap();
    let config = sluice::config::Config::load_file(&conf.join("sluice.toml")).unwrap();
    let server = sluice::server::spawn(config).unwrap();
    let (status, _, _) = support::http_get(&format!("{}left", server.url()), &[]);
    assert_eq!(status, 200, "read-through");
    server.stop();
    assert_eq!(
        std::fs::read_to_string(conf.join("whitelist")).unwrap(),
        example
    );
    assert_eq!(
        std::fs::read_to_string(conf.join("sluice.toml")).unwrap(),
        text
    );
    let list = std::fs::read_to_string(checkout.path().join("data/whitelist")).unwrap();
    assert!(list.contains("left"), "{list}");
}

#[test]
fn a_server_and_add_package_writing_one_store_at_once_lose_nothing() {
    let upstream = FakeRegistry::start();
    let names: Vec<String> = (0..8).map(|i| format!("shared-{i}")).collect();
    for name in &names {
        upstream.publish(name, "1.0.0", &[]);
    }
    let wants: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "*")).collect();
    upstream.publish("app", "1.0.0", &wants);
    // The server revalidates each document every second while add-package merges the same ones.
    let sluice = Sluice::start(
        &upstream,
        "",
        "[policy]\nwhitelist = \"whitelist\"\nread_through = true\nrefresh = \"1s\"\n",
    );
    for round in 1..=3 {
        for name in &names {
            upstream.publish(name, &format!("1.{round}.0"), &[]);
        }
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                for _ in 0..6 {
                    for name in &names {
                        let (status, doc) = sluice.get_json(name);
                        assert_eq!(status, 200, "{name}");
                        // The document may be a second behind upstream; ask for what it lists.
                        let version = format!("1.{round}.0");
                        if doc["versions"].get(&version).is_some() {
                            let file = format!("/{name}/-/{name}-{version}.tgz");
                            let (status, _, _) = sluice.get(&file, &[]);
                            assert_eq!(status, 200, "{file}");
                        }
                    }
                    std::thread::sleep(Duration::from_millis(150));
                }
            });
            let out = support::sluice_cli(&sluice.config_path, &["add-package", "app"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            reader.join().unwrap();
        });
    }
    let config = sluice.config_path.clone();
    let dir = sluice.stop();
    let out = support::sluice_cli(&config, &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("0 corrupt, 0 missing"), "{report}");

    // Every version either process stored is there, whole, with upstream gone.
    upstream.set_down(true);
    let sluice = Sluice::start_in(dir, &upstream, "");
    for name in &names {
        let (status, doc) = sluice.get_json(name);
        assert_eq!(status, 200, "{name}");
        for round in 0..=3 {
            let version = format!("1.{round}.0");
            assert!(
                doc["versions"].get(&version).is_some(),
                "{name}@{version}: {doc}"
            );
            if round == 0 {
                continue; // no one asked for its tarball
            }
            let (status, _, bytes) = sluice.get(&format!("/{name}/-/{name}-{version}.tgz"), &[]);
            assert_eq!(status, 200, "{name}@{version}");
            assert_eq!(bytes, upstream.tarball(name, &version), "{name}@{version}");
        }
    }
}
#[test]
fn a_100000_line_whitelist_loads_and_reloads() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let mut text = String::from("# generated\n");
    for i in 0..100_000 {
        text.push_str(&format!("package-{i}\n"));
    }
    text.push_str("left\n");
    let sluice = Sluice::start(&upstream, &text, "");
    assert_eq!(sluice.get_json("/left").0, 200);
    assert_eq!(sluice.get_json("/right").0, 403);
    text.push_str("right\n");
    std::fs::write(sluice.whitelist_path(), &text).unwrap();
    assert!(eventually(5, || sluice.get_json("/right").0 == 200));
}
#[test]
fn an_unreadable_whitelist_keeps_the_last_good_list() {
    // Root reads any file whatever its mode: run sluice as `nobody` when the tests run as root.
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if root && Command::new("setpriv").arg("--version").output().is_err() {
        support::cannot_run("running as root without setpriv (util-linux)");
        return;
    }
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let dir = Sluice::start(&upstream, "left\n", "").stop();
    let config = dir.path().join("sluice.toml");
    let addr = listen_addr(&config);
    let mut command = if root {
        for entry in support::paths_under(dir.path()) {
            std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).unwrap();
        }
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_sluice"),
        ]);
        command
    } else {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Reaped(
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap(),
    );
    assert!(eventually(10, || TcpStream::connect(addr).is_ok()));
    let status = |path: &str| {
        raw_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(status("/left"), "200");
    let whitelist = dir.path().join("whitelist");
    std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status("/left"), "200", "chmod 000 keeps the last good list");
    std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&whitelist, "left\nright\n").unwrap();
    assert!(eventually(5, || status("/right") == "200"));
    child.kill().unwrap();
    child.wait().unwrap();
}
