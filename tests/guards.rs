//! Supply-chain guards: min-age, deny and scope-pin, with the real npm client.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use support::{eventually, FakeRegistry, Project, Sluice};

/// An RFC 3339 time `days` before now, as npm writes them ("2026-11-24T10:00:00.000Z").
fn days_ago(days: f64) -> String {
    let at = SystemTime::now() - Duration::from_secs_f64(days * 86_400.0);
    humantime::format_rfc3339_millis(at).to_string()
}

fn publish_at(upstream: &FakeRegistry, name: &str, version: &str, days: f64) {
    upstream.publish_with(name, version, json!({}), Some(&days_ago(days)));
}

/// The answer the core's tarballs part gives for `file` of `name` when a plugin hides its
/// version.
fn tarball_refusal(sluice: &Sluice, name: &str, file: &str) -> Option<(u16, String)> {
    let app = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match runtime.block_on(app.tarballs.serve(name, file, false)) {
        // A hidden version's tarball is the client's to not ask for: forbidden, with the
        // plugin's reason.
        Err(sluice::core::Error::Forbidden(message)) => Some((403, message)),
        _ => None,
    }
}

/// GET a tarball whose version a plugin hides: the refusal, as served.
fn refused_tarball(sluice: &Sluice, name: &str, file: &str) -> (u16, String) {
    let refusal = tarball_refusal(sluice, name, file);
    assert!(refusal.is_some(), "no plugin refuses {name}/-/{file}");
    let served = error_of(sluice, &format!("/{name}/-/{file}"));
    assert_eq!(
        Some(&served),
        refusal.as_ref(),
        "the refusal is not what the proxy serves for {name}/-/{file} \
         (does it serve through the core's tarballs part?)"
    );
    served
}

fn error_of(sluice: &Sluice, path: &str) -> (u16, String) {
    let (status, body) = sluice.get_json(path);
    (status, body["error"].as_str().unwrap_or("").to_string())
}

fn versions(doc: &Value) -> Vec<String> {
    doc["versions"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

const MIN_AGE: &str = "[[plugins]]\nkind = \"min-age\"\ndays = 7\n";

#[test]
fn with_min_age_npm_installs_the_newest_version_old_enough_and_the_young_one_is_refused() {
    let upstream = FakeRegistry::start();
    publish_at(&upstream, "fresh", "1.0.0", 30.0);
    publish_at(&upstream, "fresh", "1.1.0", 10.0);
    publish_at(&upstream, "fresh", "1.2.0", 1.0);
    let sluice = Sluice::start(&upstream, "fresh\n", MIN_AGE);

    let project = Project::new();
    project.install(&sluice.url(), &["fresh"]);
    assert_eq!(project.require("fresh"), "fresh@1.1.0");

    for accept in ["application/json", "application/vnd.npm.install-v1+json"] {
        let (status, _, body) = sluice.get("/fresh", &[("accept", accept)]);
        assert_eq!(status, 200);
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["dist-tags"]["latest"], "1.1.0", "{accept}");
        assert_eq!(versions(&doc), vec!["1.0.0", "1.1.0"], "{accept}");
        // Both documents carry the publish times (pnpm's minimumReleaseAge reads them from
        // the abbreviated one), and neither tells of the hidden version.
        assert!(doc["time"]["1.1.0"].is_string(), "{accept}: {doc}");
        assert!(doc["time"].get("1.2.0").is_none(), "{accept}: {doc}");
    }
    let (status, tags) = sluice.get_json("/-/package/fresh/dist-tags");
    assert_eq!((status, &tags["latest"]), (200, &json!("1.1.0")));

    let (status, message) = refused_tarball(&sluice, "fresh", "fresh-1.2.0.tgz");
    assert_eq!(status, 403, "{message}");
    let published = &days_ago(1.0)[..10];
    let in_six_days = SystemTime::now() + Duration::from_secs(6 * 86_400);
    let available = &humantime::format_rfc3339(in_six_days).to_string()[..10];
    assert!(
        message.contains(published) && message.contains(available),
        "the refusal names the release date and when it becomes available: {message}"
    );
    // Asking for the young version by name fails: it is not in the served document.
    let out = project.npm(&sluice.url(), &["install", "fresh@1.2.0"]);
    assert!(!out.status.success());
}

#[test]
fn a_version_published_since_the_last_refresh_is_still_judged_by_min_age() {
    let upstream = FakeRegistry::start();
    publish_at(&upstream, "fresh", "1.0.0", 30.0);
    let sluice = Sluice::start(&upstream, "fresh\n", MIN_AGE);
    assert_eq!(sluice.get_json("/fresh").0, 200);
    // Published an hour ago, after sluice read the document; a lockfile written elsewhere names
    // it. sluice re-reads the document for the tarball, and min-age refuses the young version.
    publish_at(&upstream, "fresh", "1.1.0", 0.04);
    let before = upstream.count("/fresh");
    let (status, message) = error_of(&sluice, "/fresh/-/fresh-1.1.0.tgz");
    assert_eq!(status, 403, "{message}");
    assert_eq!(
        upstream.count("/fresh"),
        before + 1,
        "the document was re-read once"
    );
    assert_eq!(upstream.count("/fresh/-/fresh-1.1.0.tgz"), 0);
    // Made-up file names do not turn into upstream requests. One of the registry's shape is a
    // version upstream might serve unlisted: min-age judges it first, and with no publish time
    // for it, refuses it before anything is fetched.
    for (file, status) in [
        ("fresh-9.9.9.tgz", 403),
        ("fresh-not-a-version.tgz", 404),
        ("other-1.0.0.tgz", 404),
    ] {
        assert_eq!(
            error_of(&sluice, &format!("/fresh/-/{file}")).0,
            status,
            "{file}"
        );
    }
    assert_eq!(upstream.count("/fresh"), before + 1);
    assert_eq!(upstream.count_prefix("/fresh/-/"), 0);
}

#[test]
fn a_version_without_a_publish_time_is_hidden() {
    let upstream = FakeRegistry::start();
    publish_at(&upstream, "untimed", "1.0.0", 30.0);
    publish_at(&upstream, "untimed", "1.1.0", 20.0);
    upstream.drop_time("untimed", "1.1.0");
    let sluice = Sluice::start(&upstream, "untimed\n", MIN_AGE);

    let project = Project::new();
    project.install(&sluice.url(), &["untimed"]);
    assert_eq!(project.require("untimed"), "untimed@1.0.0");
    let (_, doc) = sluice.get_json("/untimed");
    assert_eq!(versions(&doc), vec!["1.0.0"]);
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");
    let (status, message) = refused_tarball(&sluice, "untimed", "untimed-1.1.0.tgz");
    assert_eq!(status, 403);
    assert!(message.contains("no publish time"), "{message}");
}

#[test]
fn min_age_exempts_the_names_and_scopes_listed() {
    let upstream = FakeRegistry::start();
    publish_at(&upstream, "@acme/tool", "1.0.0", 30.0);
    publish_at(&upstream, "@acme/tool", "2.0.0", 0.1);
    let sluice = Sluice::start(
        &upstream,
        "@acme/*\n",
        "[[plugins]]\nkind = \"min-age\"\ndays = 7\nexempt = [\"@acme/*\"]\n",
    );
    let project = Project::new();
    project.install(&sluice.url(), &["@acme/tool"]);
    assert_eq!(project.require("@acme/tool"), "@acme/tool@2.0.0");
}

fn deny_tree(upstream: &FakeRegistry) {
    publish_at(upstream, "left-pad", "1.3.0", 400.0);
    publish_at(upstream, "@evil/miner", "1.0.0", 400.0);
    publish_at(upstream, "lodash", "4.17.20", 400.0);
    publish_at(upstream, "lodash", "4.17.21", 300.0);
    upstream.publish("app-dep", "1.0.0", &[("left-pad", "^1.0.0")]);
}

const DENY: &str =
    "[[plugins]]\nkind = \"deny\"\npackages = [\"left-pad\", \"@evil/*\", \"lodash@<4.17.21\"]\n";

#[test]
fn deny_refuses_names_and_scopes_with_the_rule_and_never_asks_upstream() {
    let upstream = FakeRegistry::start();
    deny_tree(&upstream);
    let sluice = Sluice::start(&upstream, "left-pad\n@evil/*\nlodash\napp-dep\n", DENY);

    for path in [
        "/left-pad",
        "/left-pad/-/left-pad-1.3.0.tgz",
        "/left-pad/1.3.0",
        "/@evil%2fminer",
        "/@evil/miner/-/miner-1.0.0.tgz",
    ] {
        let (status, message) = error_of(&sluice, path);
        assert_eq!(status, 403, "{path}");
        assert!(
            message.contains("denied") && message.contains("rule `"),
            "{message}"
        );
    }
    assert_eq!(upstream.count_prefix("/left-pad"), 0);
    assert_eq!(upstream.count_prefix("/@evil"), 0);

    let project = Project::new();
    let out = project.npm(&sluice.url(), &["install", "left-pad"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("E403") && stderr.contains("rule `left-pad`"),
        "{stderr}"
    );
    // A dependency on a denied package fails the install too.
    let out = project.npm(&sluice.url(), &["install", "app-dep"]);
    assert!(!out.status.success());
}

#[test]
fn deny_hides_a_range_an_exact_denied_version_fails_and_an_open_range_resolves_to_an_allowed_one() {
    let upstream = FakeRegistry::start();
    deny_tree(&upstream);
    upstream.tag("lodash", "old", "4.17.20");
    let sluice = Sluice::start(&upstream, "lodash\n", DENY);

    let project = Project::new();
    let out = project.npm(&sluice.url(), &["install", "lodash@4.17.20"]);
    assert!(!out.status.success(), "a denied exact version installs");
    project.install(&sluice.url(), &["lodash@^4.17.0"]);
    assert_eq!(project.require("lodash"), "lodash@4.17.21");

    let (_, doc) = sluice.get_json("/lodash");
    assert_eq!(versions(&doc), vec!["4.17.21"]);
    assert!(
        doc["dist-tags"].get("old").is_none(),
        "a tag left with no allowed version is dropped: {doc}"
    );
    let (status, message) = refused_tarball(&sluice, "lodash", "lodash-4.17.20.tgz");
    assert_eq!(status, 403);
    assert!(message.contains("lodash@<4.17.21"), "{message}");
    let (status, _, _) = sluice.get("/lodash/-/lodash-4.17.21.tgz", &[]);
    assert_eq!(status, 200);
}

#[test]
fn the_deny_file_is_relative_to_the_config_and_its_edits_are_live() {
    let upstream = FakeRegistry::start();
    deny_tree(&upstream);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("whitelist"), "left-pad\nlodash\n").unwrap();
    std::fs::write(dir.path().join("deny"), "# refused\n@evil/*\n").unwrap();
    let sluice = Sluice::start_in(
        dir,
        &upstream,
        "[[plugins]]\nkind = \"deny\"\nfile = \"deny\"\n",
    );
    assert_eq!(sluice.get_json("/left-pad").0, 200);
    std::fs::write(
        sluice.dir.path().join("deny"),
        "# refused\n@evil/*\nleft-pad\n",
    )
    .unwrap();
    assert!(
        eventually(10, || sluice.get_json("/left-pad").0 == 403),
        "an edit of the deny file is live without a restart"
    );
    let (_, message) = error_of(&sluice, "/left-pad");
    assert!(message.contains("deny line 3"), "{message}");
    // A range added to the file hides versions of a document already rendered and cached, at
    // once (not after policy.refresh).
    let (_, doc) = sluice.get_json("/lodash");
    assert!(versions(&doc).contains(&"4.17.20".to_string()));
    std::fs::write(
        sluice.dir.path().join("deny"),
        "# refused\n@evil/*\nleft-pad\nlodash@<4.17.21\n",
    )
    .unwrap();
    assert!(
        eventually(10, || !versions(&sluice.get_json("/lodash").1)
            .contains(&"4.17.20".to_string())),
        "the cached render follows the edit"
    );
    // A broken edit keeps the last good rules.
    std::fs::write(sluice.dir.path().join("deny"), "left-pad@<<\n").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(sluice.get_json("/left-pad").0, 403);
}

#[test]
fn a_pinned_scope_never_reaches_upstream_even_with_read_through() {
    let upstream = FakeRegistry::start();
    // Someone published a package in our private scope on the public registry.
    publish_at(&upstream, "@acme/tool", "99.0.0", 30.0);
    publish_at(&upstream, "left", "1.0.0", 30.0);
    let sluice = Sluice::start(
        &upstream,
        "left\n",
        "[policy]\nread_through = true\n\n[[plugins]]\nkind = \"scope-pin\"\nscopes = [\"@acme\"]\n",
    );
    let project = Project::new();
    let out = project.npm(&sluice.url(), &["install", "@acme/tool"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("E404"), "{stderr}");
    for path in [
        "/@acme%2ftool",
        "/@acme/tool/-/tool-99.0.0.tgz",
        "/@acme/tool/latest",
    ] {
        let (status, message) = error_of(&sluice, path);
        assert_eq!(status, 404, "{path}");
        assert!(message.contains("private scope @acme"), "{message}");
    }
    assert_eq!(upstream.count_prefix("/@acme"), 0);
    assert!(!sluice.whitelist().contains("@acme"));
    project.install(&sluice.url(), &["left"]);
}

#[test]
fn plugins_compose_in_list_order_with_the_whitelist_and_read_through() {
    let upstream = FakeRegistry::start();
    deny_tree(&upstream);
    publish_at(&upstream, "fresh", "1.0.0", 30.0);
    publish_at(&upstream, "fresh", "1.1.0", 1.0);
    publish_at(&upstream, "@acme/tool", "1.0.0", 30.0);
    let guards = format!(
        "[policy]\nread_through = true\n\n{DENY}\n{MIN_AGE}\n\
         [[plugins]]\nkind = \"deny\"\npackages = [\"@acme/*\"]\n\n\
         [[plugins]]\nkind = \"scope-pin\"\nscopes = [\"@acme\"]\n"
    );
    let sluice = Sluice::start(&upstream, "# approved\n", &guards);

    // Read-through fetches what nobody refuses; the filters still apply to it.
    let project = Project::new();
    project.install(&sluice.url(), &["fresh", "lodash"]);
    assert_eq!(project.require("fresh"), "fresh@1.0.0");
    assert_eq!(project.require("lodash"), "lodash@4.17.21");
    let list = sluice.whitelist();
    assert!(
        list.contains("fresh\n") && list.contains("lodash\n"),
        "{list}"
    );

    // A denial answers at once: read-through neither fetches nor lists the package.
    let (status, _) = error_of(&sluice, "/left-pad");
    assert_eq!(status, 403);
    assert_eq!(upstream.count_prefix("/left-pad"), 0);
    assert!(!sluice.whitelist().contains("left-pad"));

    // Of two plugins that answer, the first listed wins: the deny before the scope-pin.
    let (status, message) = error_of(&sluice, "/@acme%2ftool");
    assert_eq!(status, 403, "{message}");
    assert_eq!(upstream.count_prefix("/@acme"), 0);

    // The other way round, the scope-pin answers.
    let sluice = Sluice::start(
        &upstream,
        "",
        "[[plugins]]\nkind = \"scope-pin\"\nscopes = [\"@acme\"]\n\n\
         [[plugins]]\nkind = \"deny\"\npackages = [\"@acme/*\"]\n",
    );
    assert_eq!(error_of(&sluice, "/@acme%2ftool").0, 404);
}

fn build_error(dir: &Path, plugin: &str) -> String {
    let text = format!(
        "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n\n[policy]\nmode = \"mirror\"\n\n{plugin}"
    );
    let config = sluice::config::Config::parse(&text, "guards.toml", dir).unwrap();
    match sluice::plugins::Host::build(&config) {
        Ok(_) => panic!("{plugin} was accepted"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn a_misconfigured_plugin_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[plugins]]\nkind = \"min-age\"\ndayz = 7\n", "dayz"),
        ("[[plugins]]\nkind = \"min-age\"\ndays = -2\n", "0 or more"),
        (
            "[[plugins]]\nkind = \"deny\"\npackages = [\"lodash@<<4\"]\n",
            "not a semver range",
        ),
        (
            "[[plugins]]\nkind = \"deny\"\nfile = \"no-such-file\"\n",
            "no-such-file",
        ),
        (
            "[[plugins]]\nkind = \"scope-pin\"\nscopes = [\"acme\"]\n",
            "not a scope",
        ),
        (
            "[[plugins]]\nkind = \"min-agee\"\ndays = 7\n",
            "unknown plugin kind",
        ),
    ];
    for (plugin, wanted) in cases {
        let error = build_error(dir.path(), plugin);
        assert!(
            error.starts_with("guards.toml: line 7: "),
            "names the file and the table's line: {error}"
        );
        assert!(error.contains(wanted), "{plugin}: {error}");
    }

    // The binary refuses it too, before serving anything.
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n\n[policy]\nmode = \"mirror\"\n\n\
         [[plugins]]\nkind = \"deny\"\npackages = [\"lodash@nope nope\"]\n",
    )
    .unwrap();
    let out = support::sluice_cli(&config, &["check"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 7") && stderr.contains("lodash@nope nope"),
        "{stderr}"
    );

    // A good one passes `check` and shows in the effective configuration.
    std::fs::write(
        &config,
        "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n\n[policy]\nmode = \"mirror\"\n\n\
         [[plugins]]\nkind = \"min-age\"\ndays = 7\n",
    )
    .unwrap();
    let out = support::sluice_cli(&config, &["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind = \"min-age\""));
}
