//! The write path against hostile publishes (issue 23): each test sends what an attacker
//! would, and checks what is refused and that nothing of a refused write is stored or shown.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::publishing::{
    add_user, doc_path, login, publish_body, send, sha512, sigstore_bundle, tarball_of,
    tarball_with,
};
use support::{FakeRegistry, Project, Sluice};

const PRIVATE: &str = "[policy]\nwhitelist = \"whitelist\"\n\n[auth]\nusers = \"users\"\n\n\
                       [publish]\nscopes = [\"@acme\"]\n";

/// A sluice publishing `@acme` with users alice and bob; their tokens.
fn started(upstream: &FakeRegistry, extra: &str) -> (Sluice, String, String) {
    let sluice = Sluice::start(upstream, "", &format!("{PRIVATE}{extra}"));
    add_user(&sluice, "alice", "correct horse");
    add_user(&sluice, "bob", "battery staple");
    let alice = login(&sluice, "alice", "correct horse");
    let bob = login(&sluice, "bob", "battery staple");
    (sluice, alice, bob)
}

/// Publish `manifest` with a tarball whose package.json is that manifest.
fn publish(sluice: &Sluice, token: &str, manifest: &Value) -> (u16, Value) {
    let tgz = tarball_with(manifest);
    let name = manifest["name"].as_str().unwrap();
    send(
        sluice,
        "PUT",
        &doc_path(name),
        Some(token),
        Some(&publish_body(manifest, &tgz)),
    )
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("")
}

/// Whether the store holds a document for `name`.
fn stored(sluice: &Sluice, name: &str) -> bool {
    let app = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(app.store.packument(name))
        .unwrap()
        .is_some()
}

/// Case 10: scopes and `[publish] owners` compare without case; a scope in capitals is no
/// npm name; unscoped legacy names stay publishable.
#[test]
fn scopes_and_owners_ignore_case_and_a_scope_in_capitals_is_refused() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, bob) = started(
        &upstream,
        "packages = [\"JSONStream\"]\n\n[publish.owners]\n\"@Acme\" = [\"alice\"]\n",
    );
    // bob is no owner of @acme however the scope is written.
    let (status, body) = publish(
        &sluice,
        &bob,
        &json!({"name": "@acme/thing", "version": "1.0.0"}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(error(&body).contains("owners"), "{body}");
    let (status, body) = publish(
        &sluice,
        &bob,
        &json!({"name": "@ACME/widget", "version": "1.0.0"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("@ACME"), "{body}");
    assert!(!stored(&sluice, "@ACME/widget") && !stored(&sluice, "@acme/thing"));
    // Not even an owner publishes a scope in capitals.
    let (status, body) = publish(
        &sluice,
        &alice,
        &json!({"name": "@ACME/widget", "version": "1.0.0"}),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = publish(
        &sluice,
        &alice,
        &json!({"name": "@acme/widget", "version": "1.0.0"}),
    );
    assert_eq!(status, 200, "{body}");
    // A new scoped name in capitals is refused too: @acme/Widget beside @acme/widget would be
    // two packages here and one to case-blind tools. Staging it is refused the same way.
    let staging = "/-/stage/package/@acme%2fWidget".to_string();
    for (method, path) in [("PUT", doc_path("@acme/Widget")), ("POST", staging)] {
        let manifest = json!({"name": "@acme/Widget", "version": "1.0.0"});
        let tgz = tarball_with(&manifest);
        let (status, body) = send(
            &sluice,
            method,
            &path,
            Some(&alice),
            Some(&publish_body(&manifest, &tgz)),
        );
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            error(&body).contains("publish it as @acme/widget"),
            "{body}"
        );
    }
    assert!(!stored(&sluice, "@acme/Widget"));
    let (status, body) = publish(
        &sluice,
        &bob,
        &json!({"name": "JSONStream", "version": "1.0.0"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(sluice.get_json("/JSONStream").0, 200);
}

/// Case 11: the tarball has one package.json, and the install-relevant fields of the
/// manifest are those of that package.json.
#[test]
fn a_manifest_must_say_what_its_tarball_says() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    let honest = json!({"name": "@acme/w", "version": "1.0.0"});
    let evil = json!({"name": "@acme/w", "version": "1.0.0",
                      "scripts": {"postinstall": "node steal.js"}});
    let put = |manifest: &Value, tgz: &[u8]| {
        send(
            &sluice,
            "PUT",
            "/@acme%2fw",
            Some(&alice),
            Some(&publish_body(manifest, tgz)),
        )
    };
    // Two package.json: sluice read the first, npm unpacks the last.
    let twice = tarball_of(&[
        ("package/package.json", honest.to_string().as_bytes()),
        ("package/package.json", evil.to_string().as_bytes()),
    ]);
    let (status, body) = put(&honest, &twice);
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("package.json"), "{body}");
    // The same in another top folder lands in the same place.
    let elsewhere = tarball_of(&[
        ("package/package.json", honest.to_string().as_bytes()),
        ("other/package.json", evil.to_string().as_bytes()),
    ]);
    assert_eq!(put(&honest, &elsewhere).0, 400);
    // A manifest that hides what the tarball does.
    let hidden: Vec<(&str, Value, &str)> = vec![
        ("install scripts", evil.clone(), "install"),
        (
            "dependencies",
            json!({"name": "@acme/w", "version": "1.0.0", "dependencies": {"evil": "1.0.0"}}),
            "dependencies",
        ),
        (
            "optionalDependencies",
            json!({"name": "@acme/w", "version": "1.0.0", "optionalDependencies": {"evil": "*"}}),
            "optionalDependencies",
        ),
        (
            "peerDependencies",
            json!({"name": "@acme/w", "version": "1.0.0", "peerDependencies": {"evil": "*"}}),
            "peerDependencies",
        ),
        (
            "bin",
            json!({"name": "@acme/w", "version": "1.0.0", "bin": {"node": "evil.js"}}),
            "bin",
        ),
        (
            "os",
            json!({"name": "@acme/w", "version": "1.0.0", "os": ["linux"]}),
            "os",
        ),
        (
            "cpu",
            json!({"name": "@acme/w", "version": "1.0.0", "cpu": ["x64"]}),
            "cpu",
        ),
        (
            "libc",
            json!({"name": "@acme/w", "version": "1.0.0", "libc": ["glibc"]}),
            "libc",
        ),
    ];
    for (what, inside, named) in hidden {
        let (status, body) = put(&honest, &tarball_with(&inside));
        assert_eq!(status, 400, "{what}: {body}");
        assert!(error(&body).contains(named), "{what}: {body}");
    }
    // A binding.gyp makes npm run node-gyp at install: an install script too.
    let gyp = tarball_of(&[
        ("package/package.json", honest.to_string().as_bytes()),
        ("package/binding.gyp", b"{}"),
    ]);
    let (status, body) = put(&honest, &gyp);
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("install"), "{body}");
    // A dependency with another range is a difference too.
    let (status, body) = put(
        &json!({"name": "@acme/w", "version": "1.0.0", "dependencies": {"left": "^1.0.0"}}),
        &tarball_with(
            &json!({"name": "@acme/w", "version": "1.0.0", "dependencies": {"left": "git+https://evil.example/left.git"}}),
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        !stored(&sluice, "@acme/w"),
        "a refused publish stored a document"
    );
    // What npm itself normalizes is no difference: a bin as a string, scripts as npm adds
    // them for a binding.gyp.
    let (status, body) = put(
        &json!({"name": "@acme/w", "version": "1.0.0", "bin": {"w": "cli.js"},
                "gypfile": true, "scripts": {"install": "node-gyp rebuild"}}),
        &tarball_of(&[
            (
                "package/package.json",
                json!({"name": "@acme/w", "version": "1.0.0", "bin": "./cli.js"})
                    .to_string()
                    .as_bytes(),
            ),
            ("package/cli.js", b"#!/usr/bin/env node\n"),
            ("package/binding.gyp", b"{}"),
        ]),
    );
    assert_eq!(status, 200, "{body}");
}

/// Case 11 with the real client: npm's own publish of a package with a bin as a string, a
/// `directories.bin`, dependencies, install scripts and a binding.gyp is taken as it is.
#[test]
fn npm_publishes_what_its_tarball_says() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    let author = Project::new();
    let host = sluice.url().trim_start_matches("http:").to_string();
    std::fs::write(
        author.path().join(".npmrc-empty"),
        format!("{host}:_authToken={alice}\n"),
    )
    .unwrap();
    let files: Vec<(&str, Value)> = vec![
        (
            "@acme/cli",
            json!({"name": "@acme/cli", "version": "1.0.0", "bin": "./cli.js",
                   "dependencies": {"left": "^1.0.0", "right": "github:acme/right"},
                   "optionalDependencies": {"fsevents": "^2"},
                   "peerDependencies": {"react": ">=18"},
                   "os": ["linux", "darwin"], "cpu": ["x64"],
                   "scripts": {"postinstall": "node cli.js"}}),
        ),
        (
            "@acme/tools",
            json!({"name": "@acme/tools", "version": "1.0.0",
                   "directories": {"bin": "bin"}}),
        ),
        (
            "@acme/native",
            json!({"name": "@acme/native", "version": "1.0.0"}),
        ),
    ];
    for (name, package) in files {
        let dir = author.path().join(name.replace('/', "_"));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("package.json"), package.to_string()).unwrap();
        std::fs::write(dir.join("cli.js"), "#!/usr/bin/env node\n").unwrap();
        std::fs::write(dir.join("bin/tool-a"), "#!/usr/bin/env node\n").unwrap();
        std::fs::write(dir.join("bin/tool-b.js"), "#!/usr/bin/env node\n").unwrap();
        if name == "@acme/native" {
            std::fs::write(dir.join("binding.gyp"), "{\"targets\": []}\n").unwrap();
        }
        let out = author.npm(&sluice.url(), &["publish", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "npm publish {name}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (status, doc) = sluice.get_json(&doc_path(name));
        assert_eq!(status, 200, "{doc}");
    }
    let (_, doc) = sluice.get_json("/@acme%2fnative");
    assert_eq!(
        doc["versions"]["1.0.0"]["scripts"]["install"],
        "node-gyp rebuild"
    );
}

/// Case 12: a refused publish stores nothing (no tarball, no provenance), and a version's
/// provenance is shown only with the version it was published with.
#[test]
fn a_refused_publish_writes_nothing_and_provenance_shows_only_with_its_version() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, bob) = started(&upstream, "");
    let (status, body) = publish(
        &sluice,
        &alice,
        &json!({"name": "@acme/p", "version": "1.0.0"}),
    );
    assert_eq!(status, 200, "{body}");
    // bob is a user but no maintainer of @acme/p: his 2.0.0, with a bundle, is refused.
    let manifest = json!({"name": "@acme/p", "version": "2.0.0", "description": "bob's"});
    let tgz = tarball_with(&manifest);
    let mut body = publish_body(&manifest, &tgz);
    let bundle = sigstore_bundle("@acme/p", "2.0.0", &tgz, "https://bob.example/ci");
    body["_attachments"]["@acme/p-2.0.0.sigstore"] = json!({
        "content_type": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "length": bundle.len(),
        "data": bundle,
    });
    let (status, answer) = send(&sluice, "PUT", "/@acme%2fp", Some(&bob), Some(&body));
    assert_eq!(status, 403, "{answer}");
    assert!(error(&answer).contains("maintainer"), "{answer}");
    let app = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(
        !runtime
            .block_on(app.store.has_tarball("@acme/p", "p-2.0.0.tgz"))
            .unwrap(),
        "a refused publish stored its tarball"
    );
    let attestations = "/-/npm/v1/attestations/@acme/p@2.0.0";
    assert_eq!(sluice.get_json(attestations).0, 404);
    // alice's own 2.0.0, without provenance: bob's bundle is not shown for it.
    let (status, body) = publish(
        &sluice,
        &alice,
        &json!({"name": "@acme/p", "version": "2.0.0"}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, shown) = sluice.get_json(attestations);
    assert_eq!(
        status, 404,
        "bob's bundle is shown for alice's 2.0.0: {shown}"
    );
    // A bundle published with its version is shown.
    let manifest = json!({"name": "@acme/p", "version": "3.0.0"});
    let tgz = tarball_with(&manifest);
    let mut body = publish_body(&manifest, &tgz);
    let bundle = sigstore_bundle("@acme/p", "3.0.0", &tgz, "https://acme.example/ci");
    body["_attachments"]["@acme/p-3.0.0.sigstore"] =
        json!({"length": bundle.len(), "data": bundle});
    let (status, answer) = send(&sluice, "PUT", "/@acme%2fp", Some(&alice), Some(&body));
    assert_eq!(status, 200, "{answer}");
    let (status, shown) = sluice.get_json("/-/npm/v1/attestations/@acme/p@3.0.0");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        shown["attestations"][0]["bundle"],
        serde_json::from_str::<Value>(&bundle).unwrap()
    );
}

/// Case 13: a version is strict semver.
#[test]
fn versions_are_strict_semver() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    for version in [
        "latest",
        "__proto__",
        "not a version",
        "1.0.0\nX",
        "v1.0.0",
        "01.0.0",
    ] {
        let (status, body) = publish(
            &sluice,
            &alice,
            &json!({"name": "@acme/v", "version": version}),
        );
        assert_eq!(status, 400, "{version:?}: {body}");
        assert!(
            error(&body).contains(&format!("{version:?}")),
            "{version:?}: {body}"
        );
    }
    assert!(!stored(&sluice, "@acme/v"));
    for version in ["1.0.0", "1.0.1-beta.1", "1.0.2+build.5"] {
        let (status, body) = publish(
            &sluice,
            &alice,
            &json!({"name": "@acme/v", "version": version}),
        );
        assert_eq!(status, 200, "{version}: {body}");
    }
}

/// Case 14: a publish carries a sha512 integrity, which its tarball matches.
#[test]
fn a_publish_carries_sha512_and_its_tarball_matches_it() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    let manifest = json!({"name": "@acme/i", "version": "1.0.0"});
    let tgz = tarball_with(&manifest);
    let with = |integrity: &str| {
        let mut body = publish_body(&manifest, &tgz);
        body["versions"]["1.0.0"]["dist"]["integrity"] = json!(integrity);
        send(&sluice, "PUT", "/@acme%2fi", Some(&alice), Some(&body))
    };
    let of = |algorithm| {
        ssri::IntegrityOpts::new()
            .algorithm(algorithm)
            .chain(&tgz)
            .result()
            .to_string()
    };
    let other = sha512(b"another tarball");
    for (what, integrity) in [
        ("sha1 only", of(ssri::Algorithm::Sha1)),
        ("sha256 only", of(ssri::Algorithm::Sha256)),
        ("empty", String::new()),
        ("no digest", "sha512-".to_string()),
        ("not base64", "sha512-%%%".to_string()),
        (
            "sha512 of something else",
            format!("{} {other}", of(ssri::Algorithm::Sha1)),
        ),
    ] {
        let (status, body) = with(&integrity);
        assert_eq!(status, 400, "{what}: {body}");
        assert!(error(&body).contains("integrity"), "{what}: {body}");
    }
    assert!(!stored(&sluice, "@acme/i"));
    let (status, body) = with(&of(ssri::Algorithm::Sha512));
    assert_eq!(status, 200, "{body}");
}

/// Case 15: only a publish creates a document; every other write to a name never published
/// is 404 and creates nothing.
#[test]
fn writes_to_a_name_never_published_are_404() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    let writes: Vec<(&str, &str, Option<Value>)> = vec![
        (
            "PUT",
            "/@acme%2fnever/-rev/1-0",
            Some(json!({"_id": "@acme/never", "name": "@acme/never",
                        "maintainers": [{"name": "alice", "email": ""}, {"name": "bob", "email": ""}]})),
        ),
        ("DELETE", "/-/package/@acme%2fnever/dist-tags/beta", None),
        (
            "PUT",
            "/-/package/@acme%2fnever/dist-tags/beta",
            Some(json!("1.0.0")),
        ),
        (
            "PUT",
            "/@acme%2fnever",
            Some(json!({"_id": "@acme/never", "name": "@acme/never",
                        "versions": {"1.0.0": {"deprecated": "no"}}, "dist-tags": {"beta": "1.0.0"}})),
        ),
        ("DELETE", "/@acme%2fnever/-rev/1-0", None),
    ];
    for (method, path, body) in writes {
        let (status, answer) = send(&sluice, method, path, Some(&alice), body.as_ref());
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert!(
            !stored(&sluice, "@acme/never"),
            "{method} {path} made a document"
        );
    }
    assert_eq!(sluice.get_json("/@acme%2fnever").0, 404);
}

/// Case 3: an upstream document whose integrity has no usable hash is upstream's fault (502),
/// answered every time, and leaves nothing in flight.
#[test]
fn an_upstream_integrity_with_no_hash_is_502_and_the_next_request_answers() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("right", "1.0.0", &[]);
    upstream.set_dist("left", "1.0.0", "integrity", json!(""));
    upstream.set_dist("left", "1.0.0", "shasum", Value::Null);
    upstream.set_dist("right", "1.0.0", "integrity", json!("sha512-%%% sha1-"));
    upstream.set_dist("right", "1.0.0", "shasum", json!(""));
    let sluice = Sluice::start(&upstream, "left\nright\n", "");
    for name in ["left", "right"] {
        for _ in 0..2 {
            let (status, _, body) =
                support::http_get(&format!("{}{name}/-/{name}-1.0.0.tgz", sluice.url()), &[]);
            let body = String::from_utf8_lossy(&body).to_string();
            assert_eq!(status, 502, "{name}: {body}");
            assert!(body.contains("integrity"), "{name}: {body}");
        }
        assert_eq!(sluice.get_json(&format!("/{name}")).0, 200);
    }
    let app = sluice.server.as_ref().unwrap().app.clone();
    assert!(
        support::eventually(10, || app
            .metrics
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0),
        "a request stayed in flight"
    );
}
