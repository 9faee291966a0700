//! Search from the index (`crate::search`): it follows every kind of write, the policy applies
//! at query time, it is rebuilt when deleted or corrupt, `sluice reindex` rebuilds it while the
//! server runs, and a fleet node finds another node's publish.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use support::seaweed::Seaweed;
use support::{eventually, sluice_cli, FakeRegistry, Project, Sluice};

/// How long an index change may take to show in a test (about a second; generous for a
/// loaded machine).
const WAIT: u64 = 60;

fn search(sluice: &Sluice, text: &str) -> Value {
    search_as(sluice, text, None)
}

fn search_as(sluice: &Sluice, text: &str, token: Option<&str>) -> Value {
    let path = format!("/-/v1/search?text={}&size=250", text.replace(' ', "+"));
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    let (status, _, body) = sluice.get(&path, &headers);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{body}");
    body
}

fn names(found: &Value) -> Vec<String> {
    found["objects"]
        .as_array()
        .map(|objects| {
            objects
                .iter()
                .filter_map(|o| o["package"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The search result of `name` for `text`, once it shows.
fn eventually_found(sluice: &Sluice, text: &str, name: &str) -> Value {
    let mut last = Value::Null;
    let shown = eventually(WAIT, || {
        last = search(sluice, text);
        names(&last).iter().any(|n| n == name)
    });
    assert!(shown, "{name} not found for {text:?}: {last}");
    object_of(&last, name)
}

fn object_of(found: &Value, name: &str) -> Value {
    found["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["package"]["name"] == name)
        .cloned()
        .unwrap()
}

fn eventually_gone(sluice: &Sluice, text: &str, name: &str) {
    let mut last = Value::Null;
    let gone = eventually(WAIT, || {
        last = search(sluice, text);
        !names(&last).iter().any(|n| n == name)
    });
    assert!(gone, "{name} still found for {text:?}: {last}");
}

fn days_ago(days: f64) -> String {
    let at = SystemTime::now() - Duration::from_secs_f64(days * 86_400.0);
    humantime::format_rfc3339_millis(at).to_string()
}

fn described(upstream: &FakeRegistry, name: &str, version: &str, description: &str) {
    upstream.publish_with(
        name,
        version,
        json!({"description": description}),
        Some(&days_ago(30.0)),
    );
}

fn status(sluice: &Sluice) -> Value {
    sluice.get_json("/-/sluice/status").1
}

fn wait_ready(sluice: &Sluice, documents: u64) {
    let mut last = Value::Null;
    let ready = eventually(WAIT, || {
        last = status(sluice);
        last["search"]["state"] == "ready" && last["search"]["documents"] == documents
    });
    assert!(ready, "{last}");
}

const USERS: &str = "[auth]\nusers = \"users\"\n\n[publish]\nscopes = [\"@acme\"]\n";

fn add_user(sluice: &Sluice, name: &str, password: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["user", "add", name, "--password-stdin"])
        .arg("--config")
        .arg(&sluice.config_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn login(sluice: &Sluice, name: &str, password: &str) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .put(format!("{}-/user/org.couchdb.user:{name}", sluice.url()))
            .json(
                &json!({"_id": format!("org.couchdb.user:{name}"), "name": name,
                          "password": password, "type": "user", "roles": []}),
            )
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    })
}

/// A project folder whose npm user config carries `token` for `sluice`.
fn logged_in(sluice: &Sluice, token: &str) -> Project {
    Project::logged_in(&sluice.url(), token)
}

fn npm_ok(project: &Project, sluice: &Sluice, args: &[&str]) {
    project.npm_ok(&sluice.url(), args);
}

/// `npm publish` of `name@version` described as `description` from `project`'s folder.
fn npm_publish(project: &Project, sluice: &Sluice, name: &str, version: &str, description: &str) {
    std::fs::write(
        project.path().join("package.json"),
        json!({"name": name, "version": version, "description": description,
               "main": "index.js", "license": "MIT", "files": ["index.js"]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(project.path().join("index.js"), "module.exports = 1;\n").unwrap();
    npm_ok(project, sluice, &["publish"]);
}

#[test]
fn the_index_follows_every_kind_of_write() {
    let upstream = FakeRegistry::start();
    described(&upstream, "alpha-tool", "1.0.0", "a sturdy hammer");
    described(&upstream, "beta-lib", "1.0.0", "quiet gears");
    let sluice = Sluice::start(
        &upstream,
        "alpha-tool\n",
        &format!("[policy]\nwhitelist = \"whitelist\"\nrefresh = \"1h\"\n\n{USERS}"),
    );
    // A read-through fetch.
    assert_eq!(sluice.get_json("/alpha-tool").0, 200);
    let hit = eventually_found(&sluice, "hammer", "alpha-tool");
    assert_eq!(hit["package"]["version"], "1.0.0");
    assert_eq!(hit["package"]["description"], "a sturdy hammer");
    // A refresh that brings a new latest version.
    described(&upstream, "alpha-tool", "2.0.0", "a shiny saw");
    let app = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(app.packuments.mark_stale("alpha-tool"))
        .unwrap();
    runtime
        .block_on(app.packuments.fetch("alpha-tool"))
        .0
        .unwrap();
    let hit = eventually_found(&sluice, "saw", "alpha-tool");
    assert_eq!(hit["package"]["version"], "2.0.0");
    eventually_gone(&sluice, "hammer", "alpha-tool");
    // add-package, a process of its own beside the server.
    let out = sluice_cli(&sluice.config_path, &["add-package", "beta-lib"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually_found(&sluice, "gears", "beta-lib");

    // Publish, dist-tags, deprecate, unpublish.
    add_user(&sluice, "alice", "correct horse");
    let author = logged_in(&sluice, &login(&sluice, "alice", "correct horse"));
    npm_publish(&author, &sluice, "@acme/widget", "1.0.0", "first widget");
    let hit = eventually_found(&sluice, "widget", "@acme/widget");
    assert_eq!(hit["package"]["version"], "1.0.0");
    npm_publish(&author, &sluice, "@acme/widget", "1.1.0", "second widget");
    eventually_found(&sluice, "second", "@acme/widget");
    eventually_gone(&sluice, "first", "@acme/widget");
    npm_ok(
        &author,
        &sluice,
        &["dist-tag", "add", "@acme/widget@1.0.0", "latest"],
    );
    let hit = eventually_found(&sluice, "first", "@acme/widget");
    assert_eq!(hit["package"]["version"], "1.0.0");
    eventually_gone(&sluice, "second", "@acme/widget");
    npm_ok(
        &author,
        &sluice,
        &["deprecate", "@acme/widget@1.0.0", "use 1.1"],
    );
    let hit = eventually_found(&sluice, "widget", "@acme/widget");
    assert_eq!(hit["package"]["version"], "1.0.0");
    npm_ok(&author, &sluice, &["unpublish", "@acme/widget", "--force"]);
    eventually_gone(&sluice, "widget", "@acme/widget");
    // What was found before is still found.
    eventually_found(&sluice, "gears", "beta-lib");
}

#[test]
fn the_mirror_follower_feeds_the_index() {
    let upstream = FakeRegistry::start();
    described(&upstream, "mirrored-thing", "1.0.0", "copied from the feed");
    let sluice = Sluice::start(
        &upstream,
        "",
        &format!(
            "[upstream]\nchanges = \"{}\"\n[policy]\nmode = \"mirror\"\n[mirror]\nsince = \"0\"\n",
            upstream.url()
        ),
    );
    eventually_found(&sluice, "feed", "mirrored-thing");
    described(
        &upstream,
        "mirrored-later",
        "1.0.0",
        "copied from the feed later",
    );
    eventually_found(&sluice, "later", "mirrored-later");
}

#[test]
fn ranking_puts_the_exact_name_first_then_prefixes_then_words() {
    let upstream = FakeRegistry::start();
    described(&upstream, "react-dom", "1.0.0", "the dom for react");
    described(&upstream, "react", "1.0.0", "a library");
    described(&upstream, "preact", "1.0.0", "smaller react alternative");
    described(&upstream, "react-router-dom", "1.0.0", "routes");
    let list = "react-dom\nreact\npreact\nreact-router-dom\n";
    let sluice = Sluice::start(&upstream, list, "");
    for name in list.lines() {
        assert_eq!(sluice.get_json(&format!("/{name}")).0, 200);
    }
    eventually_found(&sluice, "react", "preact");
    let found = search(&sluice, "react");
    assert_eq!(
        names(&found),
        ["react", "react-dom", "react-router-dom", "preact"],
        "{found}"
    );
    assert_eq!(found["total"], 4);
    let first = &found["objects"][0];
    assert_eq!(first["score"]["final"], 1.0);
    assert!(first["searchScore"].as_f64().unwrap() > 0.0);
    // from and size page through the same order.
    let (_, page) = sluice.get_json("/-/v1/search?text=react&from=1&size=2");
    assert_eq!(names(&page), ["react-dom", "react-router-dom"], "{page}");
    assert_eq!(page["total"], 4);
    // A prefix of a name; words anywhere; nothing.
    assert_eq!(names(&search(&sluice, "react-ro")), ["react-router-dom"]);
    assert_eq!(names(&search(&sluice, "smaller alternative")), ["preact"]);
    let none = search(&sluice, "zebra");
    assert_eq!(none["total"], 0);
    assert!(names(&none).is_empty());
}

#[test]
fn a_search_never_shows_a_refused_package_or_a_hidden_version() {
    let upstream = FakeRegistry::start();
    described(&upstream, "gadget-ok", "1.0.0", "a gadget");
    described(&upstream, "gadget-bad", "1.0.0", "a gadget");
    described(&upstream, "gadget-young", "1.0.0", "a gadget");
    upstream.publish_with(
        "gadget-young",
        "2.0.0",
        json!({"description": "the newest gadget"}),
        Some(&days_ago(0.1)),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("whitelist"),
        "gadget-ok\ngadget-bad\ngadget-young\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("deny"), "# nothing yet\n").unwrap();
    let sluice = Sluice::start_in(
        dir,
        &upstream,
        "[[plugins]]\nkind = \"deny\"\nfile = \"deny\"\n\n[[plugins]]\nkind = \"min-age\"\ndays = 7\n",
    );
    for name in ["gadget-ok", "gadget-bad", "gadget-young"] {
        assert_eq!(sluice.get_json(&format!("/{name}")).0, 200);
    }
    eventually_found(&sluice, "gadget", "gadget-young");
    let found = search(&sluice, "gadget");
    assert_eq!(found["total"], 3, "{found}");
    // The index knows 2.0.0 as latest; min-age hides it, so 1.0.0 is shown.
    let young = object_of(&found, "gadget-young");
    assert_eq!(young["package"]["version"], "1.0.0", "{young}");
    assert_eq!(young["package"]["description"], "a gadget");
    for object in found["objects"].as_array().unwrap() {
        assert_ne!(object["package"]["version"], "2.0.0", "{found}");
    }
    // Words of the hidden version may find the package, but it is shown as served.
    for object in search(&sluice, "newest")["objects"].as_array().unwrap() {
        assert_eq!(object["package"]["version"], "1.0.0", "{object}");
        assert_eq!(object["package"]["description"], "a gadget", "{object}");
    }
    // A package the policy refuses now is never shown, by words or by its exact name.
    std::fs::write(sluice.dir.path().join("deny"), "gadget-bad\n").unwrap();
    eventually_gone(&sluice, "gadget", "gadget-bad");
    let found = search(&sluice, "gadget");
    assert_eq!(found["total"], 2, "{found}");
    let exact = search(&sluice, "gadget-bad");
    assert!(
        !names(&exact).contains(&"gadget-bad".to_string()),
        "{exact}"
    );
    // Taken off the whitelist: refused too.
    let out = sluice_cli(&sluice.config_path, &["remove-package", "gadget-ok"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually_gone(&sluice, "gadget", "gadget-ok");
    assert_eq!(names(&search(&sluice, "gadget")), ["gadget-young"]);
}

#[test]
fn a_private_package_is_found_only_by_clients_who_may_read_it() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(
        &upstream,
        "",
        "[auth]\nusers = \"users\"\nread = \"authenticated\"\n\n[publish]\nscopes = [\"@acme\"]\n",
    );
    add_user(&sluice, "alice", "correct horse");
    let token = login(&sluice, "alice", "correct horse");
    let author = logged_in(&sluice, &token);
    npm_publish(
        &author,
        &sluice,
        "@acme/secret",
        "1.0.0",
        "the secret sauce",
    );
    let mut last = Value::Null;
    assert!(
        eventually(WAIT, || {
            last = search_as(&sluice, "sauce", Some(&token));
            names(&last) == ["@acme/secret"]
        }),
        "{last}"
    );
    // Anonymous: no answer at all, not even a count.
    let (status, _, body) = sluice.get("/-/v1/search?text=sauce", &[]);
    assert_eq!(status, 401);
    assert!(!String::from_utf8_lossy(&body).contains("secret"));
    let (status, _, _) = sluice.get(
        "/-/v1/search?text=sauce",
        &[("authorization", "Bearer not-a-token")],
    );
    assert_eq!(status, 401);
}

#[test]
fn a_deleted_or_corrupt_index_is_rebuilt_at_start() {
    let upstream = FakeRegistry::start();
    described(&upstream, "left", "1.0.0", "the left side");
    described(&upstream, "right", "1.0.0", "the right side");
    let sluice = Sluice::start(&upstream, "left\nright\n", "");
    assert_eq!(sluice.get_json("/left").0, 200);
    assert_eq!(sluice.get_json("/right").0, 200);
    eventually_found(&sluice, "side", "left");
    eventually_found(&sluice, "side", "right");
    wait_ready(&sluice, 2);
    let dir = sluice.stop();
    let index = dir.path().join("data/search-index");
    assert!(index.join("CURRENT").exists());

    // Deleted: built again from the store.
    std::fs::remove_dir_all(&index).unwrap();
    let sluice = Sluice::start_in(dir, &upstream, "");
    wait_ready(&sluice, 2);
    assert_eq!(search(&sluice, "side")["total"], 2);
    let dir = sluice.stop();

    // Corrupt: every file of the current generation overwritten.
    let current: Value =
        serde_json::from_slice(&std::fs::read(index.join("CURRENT")).unwrap()).unwrap();
    let generation = index.join(current["generation"].as_str().unwrap());
    for entry in std::fs::read_dir(&generation).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, b"garbage").unwrap();
        }
    }
    let sluice = Sluice::start_in(dir, &upstream, "");
    wait_ready(&sluice, 2);
    assert_eq!(names(&search(&sluice, "left")), ["left"]);
    assert!(!generation.exists(), "the unreadable generation is removed");
}

#[test]
fn reindex_rebuilds_while_the_server_runs_and_without_it() {
    let upstream = FakeRegistry::start();
    described(&upstream, "left", "1.0.0", "the left side");
    let sluice = Sluice::start(&upstream, "left\nhidden-gem\n", "");
    assert_eq!(sluice.get_json("/left").0, 200);
    eventually_found(&sluice, "side", "left");
    // A packument written behind the server's back: the index never heard of it.
    let doc = json!({
        "_id": "hidden-gem", "name": "hidden-gem", "description": "behind the back",
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {"name": "hidden-gem", "version": "1.0.0",
                     "description": "behind the back",
                     "dist": {"tarball": "http://x/hidden-gem/-/hidden-gem-1.0.0.tgz"}}},
        "time": {"1.0.0": "2024-01-01T00:00:00.000Z"}
    });
    let store =
        sluice::store::open(&sluice::config::Config::load_file(&sluice.config_path).unwrap())
            .unwrap();
    let meta = sluice::store::PackumentMeta {
        fetched_at: sluice::store::now_ms(),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(store.put_packument(
            "hidden-gem",
            doc.to_string().into(),
            &meta,
            sluice::store::Expect::Absent,
        ))
        .unwrap();
    assert!(names(&search(&sluice, "behind")).is_empty());

    // The server owns the index: reindex asks it, and it swaps the new index in.
    let out = sluice_cli(&sluice.config_path, &["reindex"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("by the running server"), "{stdout}");
    assert!(stdout.contains("2 packages indexed"), "{stdout}");
    assert_eq!(names(&search(&sluice, "behind")), ["hidden-gem"]);
    assert_eq!(names(&search(&sluice, "left")), ["left"]);
    assert_eq!(status(&sluice)["search"]["state"], "ready");
    assert_eq!(status(&sluice)["search"]["documents"], 2);

    // Without a server, reindex builds it itself; the next server opens it as is.
    let dir = sluice.stop();
    let out = sluice_cli(&dir.path().join("sluice.toml"), &["reindex"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("by the running server"), "{stdout}");
    assert!(stdout.contains("2 packages indexed"), "{stdout}");
    let sluice = Sluice::start_in(dir, &upstream, "");
    wait_ready(&sluice, 2);
    assert_eq!(names(&search(&sluice, "behind")), ["hidden-gem"]);
}

#[test]
fn a_fleet_node_finds_another_nodes_publish_within_cluster_sync() {
    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    let upstream = FakeRegistry::start();
    let node = |name: &str| {
        format!(
            "{}\n[policy]\nwhitelist = \"whitelist\"\n\n[cluster]\nnode = \"{name}\"\nsync = \"1s\"\n\n{USERS}",
            seaweed.storage("data", "search/")
        )
    };
    let a = Sluice::start(&upstream, "", &node("a"));
    let b = Sluice::start(&upstream, "", &node("b"));
    add_user(&a, "alice", "correct horse");
    let author = logged_in(&a, &login(&a, "alice", "correct horse"));
    npm_publish(&author, &a, "@acme/fleet-widget", "1.0.0", "made on node a");
    eventually_found(&a, "made", "@acme/fleet-widget");
    // b never read it: its index hears of it from the fleet's journal.
    let hit = eventually_found(&b, "made", "@acme/fleet-widget");
    assert_eq!(hit["package"]["version"], "1.0.0");
    npm_publish(
        &author,
        &a,
        "@acme/fleet-widget",
        "1.1.0",
        "remade on node a",
    );
    let hit = eventually_found(&b, "remade", "@acme/fleet-widget");
    assert_eq!(hit["package"]["version"], "1.1.0");
}

/// The bucket under `prefix`, as a store.
fn bucket_of(seaweed: &Seaweed, prefix: &str) -> sluice::store::SharedStore {
    let text = format!(
        "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n{}",
        seaweed.storage("data", prefix)
    );
    let config =
        sluice::config::Config::parse(&text, "bucket.toml", std::path::Path::new("/tmp")).unwrap();
    std::sync::Arc::new(
        sluice::store::S3Store::connect(
            &config.storage.s3.unwrap(),
            "test",
            Duration::from_secs(3),
            Duration::from_secs(10),
        )
        .unwrap(),
    )
}

/// The fleet's journal as the bucket under `prefix` holds it, as text.
fn journal_text(seaweed: &Seaweed, prefix: &str) -> String {
    let store = bucket_of(seaweed, prefix);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(store.state("fleet/journal"))
        .unwrap()
        .map(|(bytes, _)| String::from_utf8_lossy(&bytes).to_string())
        .unwrap_or_default()
}

#[test]
fn a_fleet_node_that_was_down_catches_up_its_index_from_the_journal() {
    let Some(seaweed) = Seaweed::start() else {
        return;
    };
    let upstream = FakeRegistry::start();
    described(&upstream, "left", "1.0.0", "an old description");
    let node = |name: &str| {
        format!(
            "{}\n[policy]\nwhitelist = \"whitelist\"\nrefresh = \"1h\"\n\n[cluster]\nnode = \"{name}\"\nsync = \"1s\"\n\n{USERS}",
            seaweed.storage("data", "catch-up/")
        )
    };
    let a = Sluice::start(&upstream, "left\n", &node("a"));
    let b = Sluice::start(&upstream, "left\n", &node("b"));
    assert_eq!(a.get_json("/left").0, 200);
    // b's index hears of it from the journal and records how far it followed it.
    eventually_found(&b, "old", "left");
    let dir = b.stop();

    // While b is down: a publishes a private package and refreshes a packument.
    add_user(&a, "alice", "correct horse");
    let author = logged_in(&a, &login(&a, "alice", "correct horse"));
    npm_publish(
        &author,
        &a,
        "@acme/late-widget",
        "1.0.0",
        "published meanwhile",
    );
    described(&upstream, "left", "1.1.0", "a fresh description");
    let app = a.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(app.packuments.mark_stale("left")).unwrap();
    runtime.block_on(app.packuments.fetch("left")).0.unwrap();
    eventually_found(&a, "fresh", "left");
    // Both changes are in the journal before b starts again.
    let mut journal = String::new();
    let journaled = eventually(WAIT, || {
        journal = journal_text(&seaweed, "catch-up/");
        journal.contains("\"@acme/late-widget\"") && journal.matches("\"left\"").count() >= 2
    });
    assert!(journaled, "{journal}");

    // b, started again on its index (no reindex), replays the journal from its position.
    let b = Sluice::start_in(dir, &upstream, &node("b"));
    let hit = eventually_found(&b, "meanwhile", "@acme/late-widget");
    assert_eq!(hit["package"]["version"], "1.0.0");
    let hit = eventually_found(&b, "fresh", "left");
    assert_eq!(hit["package"]["version"], "1.1.0");
    assert!(names(&search(&b, "old")).is_empty());

    // b down again; meanwhile the journal no longer reaches back to b's position (entries
    // dropped), and a package was stored that it does not list: b rebuilds from the store.
    let dir = b.stop();
    let bucket = bucket_of(&seaweed, "catch-up/");
    let doc = json!({
        "_id": "@acme/trimmed-gem", "name": "@acme/trimmed-gem",
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {"name": "@acme/trimmed-gem", "version": "1.0.0",
                     "description": "stored while entries were dropped",
                     "dist": {"tarball": "http://x/t/-/trimmed-gem-1.0.0.tgz"}}},
        "time": {"1.0.0": "2024-01-01T00:00:00.000Z"}
    });
    let meta = sluice::store::PackumentMeta {
        fetched_at: sluice::store::now_ms(),
        ..Default::default()
    };
    runtime
        .block_on(bucket.put_packument(
            "@acme/trimmed-gem",
            doc.to_string().into(),
            &meta,
            sluice::store::Expect::Absent,
        ))
        .unwrap();
    let trimmed = json!({"next": 5000, "entries": [{"seq": 4999, "name": "left", "node": "a"}]});
    let held = runtime.block_on(bucket.state("fleet/journal")).unwrap();
    let expect = sluice::store::Expect::from_read(held.as_ref().map(|(_, t)| t));
    let written = runtime
        .block_on(bucket.put_state("fleet/journal", trimmed.to_string().into(), expect))
        .unwrap();
    assert!(matches!(written, sluice::store::Written::Stored(_)));
    let b = Sluice::start_in(dir, &upstream, &node("b"));
    eventually_found(&b, "dropped", "@acme/trimmed-gem");
    eventually_found(&b, "meanwhile", "@acme/late-widget");
}
