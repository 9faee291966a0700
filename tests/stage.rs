//! Staged publishing (`npm stage …` and `pnpm stage …` with pnpm 11 and 12, issue 25 item 6):
//! a version staged is checked as a publish is, invisible and uninstallable until a maintainer
//! approves it, and the stage API refuses what a hostile or confused caller sends.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::publishing::{add_user, doc_path, login, publish_body, send, tarball_with};
use support::{FakeRegistry, Project, Sluice};

const PRIVATE: &str = "[policy]\nwhitelist = \"whitelist\"\n\n[auth]\nusers = \"users\"\n\n\
                       [publish]\nscopes = [\"@acme\"]\n";

/// A sluice publishing `@acme` (`extra` goes under `[publish]`) with users alice and bob;
/// their tokens.
fn started(upstream: &FakeRegistry, extra: &str) -> (Sluice, String, String) {
    let sluice = Sluice::start(upstream, "", &format!("{PRIVATE}{extra}"));
    add_user(&sluice, "alice", "correct horse");
    add_user(&sluice, "bob", "battery staple");
    let alice = login(&sluice, "alice", "correct horse");
    let bob = login(&sluice, "bob", "battery staple");
    (sluice, alice, bob)
}

/// `method path` with an optional token and JSON body: the status and the raw answer.
fn call(
    sluice: &Sluice,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Vec<u8>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("{}{}", sluice.url(), path.trim_start_matches('/'));
        let mut request = reqwest::Client::new().request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    })
}

/// `method path` with no credentials: the status and headers.
fn anonymous(sluice: &Sluice, method: &str, path: &str) -> (u16, reqwest::header::HeaderMap) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("{}{}", sluice.url(), path.trim_start_matches('/'));
        let response = reqwest::Client::new()
            .request(method, url)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.headers().clone())
    })
}

/// `call`, its answer read as JSON (`Null` when it is none).
fn json_call(sluice: &Sluice, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = call(sluice, method, path, token, None);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The manifest of `name@version` and its tarball.
fn version_of(name: &str, version: &str) -> (Value, Vec<u8>) {
    let manifest = json!({ "name": name, "version": version });
    let tgz = tarball_with(&manifest);
    (manifest, tgz)
}

/// Stage `name@version` as `token` (raw, what `npm stage publish` sends): status and answer.
fn stage(sluice: &Sluice, token: Option<&str>, name: &str, version: &str) -> (u16, Value) {
    let (manifest, tgz) = version_of(name, version);
    let path = format!("/-/stage/package/{}", name.replacen('/', "%2f", 1));
    send(
        sluice,
        "POST",
        &path,
        token,
        Some(&publish_body(&manifest, &tgz)),
    )
}

/// Stage `name@version` as `token`, which must succeed: the stage id.
fn staged(sluice: &Sluice, token: &str, name: &str, version: &str) -> String {
    let (status, body) = stage(sluice, Some(token), name, version);
    assert_eq!(status, 201, "{body}");
    assert!(body["message"].is_string(), "{body}");
    let id = body["stageId"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "{id}");
    id
}

/// Publish `name@version` directly as `token`: the status and answer.
fn publish(sluice: &Sluice, token: &str, name: &str, version: &str) -> (u16, Value) {
    let (manifest, tgz) = version_of(name, version);
    let body = publish_body(&manifest, &tgz);
    send(sluice, "PUT", &doc_path(name), Some(token), Some(&body))
}

/// `POST /-/stage/{id}/approve` by `token`'s user: the status and the JSON answer.
fn approve(sluice: &Sluice, token: &str, id: &str) -> (u16, Value) {
    json_call(
        sluice,
        "POST",
        &format!("/-/stage/{id}/approve"),
        Some(token),
    )
}

/// The versions the document of `name` lists.
fn listed(sluice: &Sluice, name: &str) -> Vec<String> {
    let (_, doc) = sluice.get_json(&doc_path(name));
    doc["versions"]
        .as_object()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every file under the store's folder.
fn store_files(sluice: &Sluice) -> Vec<std::path::PathBuf> {
    // The search index beside the store changes on its own (segments merge): it is not the
    // store, and a refused staging must leave the store alone.
    let index = sluice.dir.path().join("data").join("search-index");
    let mut files: Vec<_> = support::paths_under(&sluice.dir.path().join("data"))
        .into_iter()
        .filter(|path| !path.starts_with(&index))
        .collect();
    files.sort();
    files
}

/// Whether a file of the store holds exactly `bytes`.
fn holds(sluice: &Sluice, bytes: &[u8]) -> bool {
    store_files(sluice)
        .iter()
        .any(|path| std::fs::read(path).is_ok_and(|held| held == bytes))
}

#[test]
fn anonymous_callers_get_401_from_every_stage_route() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    let id = staged(&sluice, &alice, "@acme/w", "1.0.0");
    let (status, body) = stage(&sluice, None, "@acme/w", "1.1.0");
    assert_eq!(status, 401, "{body}");
    for (method, path) in [
        ("GET", "/-/stage".to_string()),
        ("GET", format!("/-/stage/{id}")),
        ("GET", format!("/-/stage/{id}/tarball")),
        ("POST", format!("/-/stage/{id}/approve")),
        ("DELETE", format!("/-/stage/{id}")),
    ] {
        let (status, headers) = anonymous(&sluice, method, &path);
        assert_eq!(status, 401, "{method} {path}");
        assert!(headers.contains_key("www-authenticate"), "{method} {path}");
    }
    // A bad token is no user either.
    let (status, _) = json_call(&sluice, "GET", "/-/stage", Some("not-a-token"));
    assert_eq!(status, 401);
    // Nothing anonymous changed what alice staged.
    let (status, item) = json_call(&sluice, "GET", &format!("/-/stage/{id}"), Some(&alice));
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["version"], "1.0.0");
}

#[test]
fn a_staged_version_is_checked_like_a_publish_and_hidden_until_approved() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, bob) = started(&upstream, "");
    let (status, body) = publish(&sluice, &alice, "@acme/w", "1.0.0");
    assert_eq!(status, 200, "{body}");

    // bob is a user but no maintainer of @acme/w: refused, and nothing is written.
    let before = store_files(&sluice);
    let (status, body) = stage(&sluice, Some(&bob), "@acme/w", "1.1.0");
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("maintainer"),
        "{body}"
    );
    assert_eq!(
        store_files(&sluice),
        before,
        "a refused staging wrote to the store"
    );
    // A body whose tarball does not match its integrity: 400, nothing written.
    let (manifest, tgz) = version_of("@acme/w", "1.1.0");
    let mut body = publish_body(&manifest, &tgz);
    body["versions"]["1.1.0"]["dist"]["integrity"] = json!(support::publishing::sha512(b"x"));
    let (status, answer) = send(
        &sluice,
        "POST",
        "/-/stage/package/@acme%2fw",
        Some(&alice),
        Some(&body),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        store_files(&sluice),
        before,
        "a refused staging wrote to the store"
    );
    // A name not published here: refused before the body is read (405, or the whitelist's
    // 403 when it does not list the name either).
    let (status, body) = stage(&sluice, Some(&alice), "left-pad", "1.0.0");
    assert!(matches!(status, 403 | 405), "{status} {body}");
    // The URL's name and the body's disagree: 400.
    let (manifest, tgz) = version_of("@acme/other", "1.0.0");
    let body = publish_body(&manifest, &tgz);
    let (status, _) = send(
        &sluice,
        "POST",
        "/-/stage/package/@acme%2fw",
        Some(&alice),
        Some(&body),
    );
    assert_eq!(status, 400);

    // alice stages 1.1.0; again, or the published 1.0.0: 409.
    let id = staged(&sluice, &alice, "@acme/w", "1.1.0");
    let (status, body) = stage(&sluice, Some(&alice), "@acme/w", "1.1.0");
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&id), "{body}");
    let (status, body) = stage(&sluice, Some(&alice), "@acme/w", "1.0.0");
    assert_eq!(status, 409, "{body}");

    // Not installable: not listed, its manifest and tarball 404, the staged file unreachable.
    assert_eq!(listed(&sluice, "@acme/w"), ["1.0.0"]);
    assert_eq!(sluice.get("/@acme%2fw/1.1.0", &[]).0, 404);
    assert_eq!(sluice.get("/@acme%2fw/-/w-1.1.0.tgz", &[]).0, 404);
    let staged_file = format!("/@acme%2fw/-/.stage-{id}.tgz");
    assert!(matches!(sluice.get(&staged_file, &[]).0, 400 | 404));
    let user = Project::new();
    let out = user.npm(&sluice.url(), &["install", "@acme/w@1.1.0"]);
    assert!(!out.status.success(), "a staged version installed");
    // The console's package page says why 1.1.0 is not served.
    let (status, _, page) = sluice.get("/-/ui/package/@acme%2fw", &[("accept", "text/html")]);
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("1.1.0") && page.contains("staged by alice and not approved yet"),
        "{page}"
    );

    // bob sees none of it: not listed for him, 404 for its id (not even 403).
    let (_, list) = json_call(&sluice, "GET", "/-/stage", Some(&bob));
    assert_eq!(list["total"], 0, "{list}");
    for (method, path) in [
        ("GET", format!("/-/stage/{id}")),
        ("GET", format!("/-/stage/{id}/tarball")),
        ("POST", format!("/-/stage/{id}/approve")),
        ("DELETE", format!("/-/stage/{id}")),
    ] {
        let (status, body) = json_call(&sluice, method, &path, Some(&bob));
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    assert_eq!(listed(&sluice, "@acme/w"), ["1.0.0"]);

    // alice downloads what she staged, byte for byte.
    let (status, tarball) = call(
        &sluice,
        "GET",
        &format!("/-/stage/{id}/tarball"),
        Some(&alice),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(tarball, version_of("@acme/w", "1.1.0").1);

    // A read-only token of alice's may look, not approve or reject.
    let (status, created) = send(
        &sluice,
        "POST",
        "/-/npm/v1/tokens",
        Some(&alice),
        Some(&json!({"password": "correct horse", "readonly": true, "cidr_whitelist": []})),
    );
    assert_eq!(status, 200, "{created}");
    let reader = created["token"].as_str().unwrap();
    assert_eq!(
        json_call(&sluice, "GET", &format!("/-/stage/{id}"), Some(reader)).0,
        200
    );
    for (method, path) in [
        ("POST", format!("/-/stage/{id}/approve")),
        ("DELETE", format!("/-/stage/{id}")),
    ] {
        let (status, body) = json_call(&sluice, method, &path, Some(reader));
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    assert_eq!(listed(&sluice, "@acme/w"), ["1.0.0"]);

    // Approved by a maintainer: listed, installable, its tarball the staged one.
    let (status, body) = approve(&sluice, &alice, &id);
    assert_eq!(status, 201, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(listed(&sluice, "@acme/w"), ["1.0.0", "1.1.0"]);
    let (_, doc) = sluice.get_json("/@acme%2fw");
    assert_eq!(doc["dist-tags"]["latest"], "1.1.0", "{doc}");
    assert_eq!(
        doc["versions"]["1.1.0"]["_npmUser"]["name"], "alice",
        "{doc}"
    );
    let (status, _, served) = sluice.get("/@acme%2fw/-/w-1.1.0.tgz", &[]);
    assert_eq!(status, 200);
    assert_eq!(served, tarball);
    // (A new project: npm keeps the document it read above for its max-age.)
    Project::new().install(&sluice.url(), &["@acme/w@1.1.0"]);
    // Gone from staging: a second approval finds nothing, and it stays published once.
    let (status, _) = approve(&sluice, &alice, &id);
    assert_eq!(status, 404);
    let (status, _) = stage(&sluice, Some(&alice), "@acme/w", "1.1.0");
    assert_eq!(status, 409);

    // Approved: the staged copy's name is gone; the version's own file serves the bytes.
    use sluice::store::Store as _;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stored = |file: String| {
        runtime
            .block_on(sluice.store.has_tarball("@acme/w", &file))
            .unwrap()
    };
    assert!(!stored(format!(".stage-{id}.tgz")), "the staged copy stays");
    assert!(stored("w-1.1.0.tgz".into()));

    // Rejected: gone, never listed, and the version may be staged again.
    let rejected = version_of("@acme/w", "1.2.0").1;
    let id = staged(&sluice, &alice, "@acme/w", "1.2.0");
    assert!(stored(format!(".stage-{id}.tgz")));
    assert!(
        holds(&sluice, &rejected),
        "the staged bytes are not in the store"
    );
    let (status, body) = call(
        &sluice,
        "DELETE",
        &format!("/-/stage/{id}"),
        Some(&alice),
        None,
    );
    assert_eq!(status, 204);
    assert!(body.is_empty());
    assert_eq!(
        json_call(&sluice, "GET", &format!("/-/stage/{id}"), Some(&alice)).0,
        404
    );
    assert_eq!(
        json_call(&sluice, "DELETE", &format!("/-/stage/{id}"), Some(&alice)).0,
        404
    );
    assert_eq!(listed(&sluice, "@acme/w"), ["1.0.0", "1.1.0"]);
    // No tarball left behind: neither its name nor its bytes.
    assert!(
        !stored(format!(".stage-{id}.tgz")),
        "the rejected tarball stays"
    );
    assert!(
        !holds(&sluice, &rejected),
        "the rejected bytes stay in the store"
    );
    let again = staged(&sluice, &alice, "@acme/w", "1.2.0");
    assert_ne!(again, id);
}

#[test]
fn a_first_version_can_be_staged_and_its_approver_maintains_the_package() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, bob) = started(&upstream, "");
    let id = staged(&sluice, &alice, "@acme/fresh", "0.1.0");
    assert!(listed(&sluice, "@acme/fresh").is_empty());
    // Only staged: the console's page lists it as waiting rather than 404.
    let (status, _, page) = sluice.get("/-/ui/package/@acme%2ffresh", &[]);
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("0.1.0") && page.contains("not approved yet"),
        "{page}"
    );
    assert_eq!(sluice.get("/@acme%2ffresh/-/fresh-0.1.0.tgz", &[]).0, 404);
    // With no maintainers yet, any user who may publish the name may review it.
    let (_, list) = json_call(&sluice, "GET", "/-/stage", Some(&bob));
    assert_eq!(list["total"], 1, "{list}");
    let (status, body) = approve(&sluice, &bob, &id);
    assert_eq!(status, 201, "{body}");
    let (_, doc) = sluice.get_json("/@acme%2ffresh");
    assert_eq!(doc["maintainers"][0]["name"], "bob", "{doc}");
    assert_eq!(
        doc["versions"]["0.1.0"]["_npmUser"]["name"], "alice",
        "{doc}"
    );
    // Now alice is no maintainer: she may not stage the next version.
    let (status, _) = stage(&sluice, Some(&alice), "@acme/fresh", "0.2.0");
    assert_eq!(status, 403);
}

/// The console's home page lists what was published or approved lately, newest first, each
/// once, from the audit log; a package unpublished whole is left out.
#[test]
fn the_home_page_lists_recent_publishes_and_approvals_newest_first() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    for (name, version) in [
        ("@acme/a", "1.0.0"),
        ("@acme/b", "1.0.0"),
        ("@acme/gone", "1.0.0"),
    ] {
        assert_eq!(publish(&sluice, &alice, name, version).0, 200);
    }
    let id = staged(&sluice, &alice, "@acme/c", "1.0.0");
    let (status, body) = approve(&sluice, &alice, &id);
    assert_eq!(status, 201, "{body}");
    assert_eq!(publish(&sluice, &alice, "@acme/a", "1.1.0").0, 200);
    let (_, doc) = sluice.get_json("/@acme%2fgone?write=true");
    let rev = doc["_rev"].as_str().unwrap();
    let (status, body) = call(
        &sluice,
        "DELETE",
        &format!("/@acme%2fgone/-rev/{rev}"),
        Some(&alice),
        None,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(sluice.get("/@acme%2fgone", &[]).0, 404);
    let (status, _, page) = sluice.get("/-/ui/", &[]);
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&page);
    let section = page
        .split("id=\"published\"")
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .unwrap_or_else(|| panic!("{page}"));
    let shown: Vec<&str> = section
        .split("/-/ui/package/")
        .skip(1)
        .map(|link| link.split('"').next().unwrap())
        .collect();
    assert_eq!(shown, ["@acme/a", "@acme/c", "@acme/b"], "{section}");
    assert!(section.contains("1.1.0"), "{section}");

    // Attacks on the list: 600 other entries since (failed logins an outsider can cause) do
    // not push the publishes out, and a publish entry naming a package not published here
    // (a scope since taken off `[publish]`) is neither listed nor asked of upstream.
    let app = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use sluice::core::audit_log::{Action, AuditEntry};
        let entry = |action, subject: &str| AuditEntry::new(None, None, action, subject, "");
        app.audit
            .note(entry(Action::Publish, "upstream-only@1.0.0"))
            .await;
        for _ in 0..600 {
            app.audit.note(entry(Action::LoginFailure, "mallory")).await;
        }
    });
    let asked = upstream.total_requests();
    let (_, _, page) = sluice.get("/-/ui/", &[]);
    let page = String::from_utf8_lossy(&page);
    let section = page.split("id=\"published\"").nth(1).unwrap();
    let section = section.split("</section>").next().unwrap();
    assert!(section.contains("/-/ui/package/@acme/a"), "{section}");
    assert!(!section.contains("upstream-only"), "{section}");
    assert_eq!(
        upstream.total_requests(),
        asked,
        "the home page asked upstream"
    );
}

#[test]
fn listing_pages_within_bounds_and_filters_by_package() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    let ids: Vec<String> = ["1.0.0", "1.1.0", "1.2.0"]
        .iter()
        .map(|v| staged(&sluice, &alice, "@acme/w", v))
        .collect();
    let other = staged(&sluice, &alice, "@acme/x", "1.0.0");
    let list = |query: &str| json_call(&sluice, "GET", &format!("/-/stage{query}"), Some(&alice));

    let (status, all) = list("");
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        (
            all["total"].clone(),
            all["page"].clone(),
            all["perPage"].clone()
        ),
        (json!(4), json!(0), json!(10))
    );
    // Newest first.
    let order: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [other.as_str(), &ids[2], &ids[1], &ids[0]]);
    let item = &all["items"][1];
    for field in [
        "packageName",
        "version",
        "tag",
        "createdAt",
        "actor",
        "shasum",
        "status",
    ] {
        assert!(item[field].is_string(), "{field}: {item}");
    }
    assert_eq!(
        (item["packageName"].as_str(), item["version"].as_str()),
        (Some("@acme/w"), Some("1.2.0"))
    );
    assert_eq!(item["actor"], "alice");

    let (_, page) = list("?package=%40acme%2Fw&page=0&perPage=2");
    assert_eq!(page["total"], 3, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let (_, page) = list("?package=%40acme%2Fw&page=1&perPage=2");
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["id"], ids[0].as_str());
    let (_, page) = list("?page=99&perPage=100");
    assert_eq!(
        (page["total"].clone(), page["items"].clone()),
        (json!(4), json!([]))
    );
    let (_, none) = list("?package=left-pad");
    assert_eq!(none["total"], 0);

    for bad in [
        "?perPage=0",
        "?perPage=101",
        "?perPage=-1",
        "?perPage=ten",
        "?perPage=",
        "?page=-1",
        "?page=x",
        "?page=1.5",
        "?package=..%2Fetc",
        "?package=",
    ] {
        let (status, body) = list(bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // Ids that are no UUID are refused before anything is looked up (no route takes the
    // traversal shape at all).
    for path in [
        "/-/stage/123",
        "/-/stage/..%2f..%2fx",
        "/-/stage/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    ] {
        let (status, _) = json_call(&sluice, "GET", path, Some(&alice));
        assert!(matches!(status, 400 | 404), "{path}: {status}");
    }
}

/// `DELETE /-/stage/{id}` as `token` with an optional one-time code: the status and the
/// `WWW-Authenticate` header.
fn reject(sluice: &Sluice, id: &str, token: &str, otp: Option<&str>) -> (u16, Option<String>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = format!("{}-/stage/{id}", sluice.url());
        let mut request = reqwest::Client::new().delete(url).bearer_auth(token);
        if let Some(otp) = otp {
            request = request.header("npm-otp", otp);
        }
        let response = request.send().await.unwrap();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (response.status().as_u16(), challenge)
    })
}

#[test]
fn rejecting_a_stage_needs_the_one_time_code_of_a_user_with_two_factor() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    let id = staged(&sluice, &alice, "@acme/w", "1.0.0");
    let out = support::sluice_cli(&sluice.config_path, &["user", "2fa", "alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let uri = stdout.lines().next().unwrap().to_string();
    assert!(uri.starts_with("otpauth://totp/"), "{stdout}");
    let view = format!("/-/stage/{id}");

    // Without a code: 401 asking npm for one; with a wrong one: 401. Still staged either way.
    let (status, challenge) = reject(&sluice, &id, &alice, None);
    assert_eq!((status, challenge.as_deref()), (401, Some("OTP")));
    let (status, _) = reject(&sluice, &id, &alice, Some("000000"));
    assert_eq!(status, 401);
    assert_eq!(json_call(&sluice, "GET", &view, Some(&alice)).0, 200);

    // With the code the authenticator shows: rejected.
    let code = totp_rs::TOTP::from_url(&uri)
        .unwrap()
        .generate_current()
        .unwrap();
    let (status, _) = reject(&sluice, &id, &alice, Some(&code));
    assert_eq!(status, 204);
    assert_eq!(json_call(&sluice, "GET", &view, Some(&alice)).0, 404);
}

#[test]
fn hostile_stage_requests_are_refused_and_leave_the_store_alone() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    let id = staged(&sluice, &alice, "@acme/w", "1.0.0");
    let list = |query: &str| json_call(&sluice, "GET", &format!("/-/stage{query}"), Some(&alice));
    // The last page a u32 names is empty; past it, or negative, or huge, the query is refused.
    let (status, page) = list("?page=4294967295&perPage=100");
    assert_eq!((status, page["items"].clone()), (200, json!([])), "{page}");
    for bad in [
        "?page=4294967296",
        "?page=99999999999999999999999999",
        "?perPage=-100",
        "?perPage=18446744073709551617",
        "?package=%00",
        "?package=l%D0%B5ft",
        "?package=%40acme%2F..%2Fw",
        "?package=a%0d%0aSet-Cookie:x",
    ] {
        let (status, body) = list(bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let long = format!("?package={}", "a".repeat(5_000));
    assert!(
        matches!(list(&long).0, 400 | 414 | 431),
        "a 5 000-byte name"
    );

    let before = store_files(&sluice);
    // Names a publish would refuse: homoglyphs, control characters, dot segments, too long.
    let long_name = format!("@acme/{}", "w".repeat(300));
    for name in [
        "@acme/w\u{456}dget",
        "@acme/w\u{0}",
        "@acme/..",
        long_name.as_str(),
    ] {
        let (status, body) = stage(&sluice, Some(&alice), name, "1.0.1");
        assert!(matches!(status, 400 | 404), "{name:?}: {status} {body}");
    }
    // Versions a publish would refuse.
    for version in [
        "1.0.1\u{0}",
        "../1.0.1",
        "1.0.1\r\nx",
        "v1.0.1",
        &"9".repeat(300),
    ] {
        let (status, body) = stage(&sluice, Some(&alice), "@acme/w", version);
        assert_eq!(status, 400, "{version:?}: {body}");
    }
    // Ids that are no stage id, and one nobody staged.
    for path in [
        "/-/stage/%2e%2e%2f%2e%2e%2fusers",
        "/-/stage/00000000-0000-0000-0000-000000000000",
        &format!("/-/stage/{}", id.to_uppercase().replace('-', "\u{2010}")),
    ] {
        let (status, _) = json_call(&sluice, "GET", path, Some(&alice));
        assert!(matches!(status, 400 | 404), "{path}: {status}");
        let (status, _) = json_call(&sluice, "POST", &format!("{path}/approve"), Some(&alice));
        assert!(matches!(status, 400 | 404), "{path}/approve: {status}");
    }
    assert_eq!(
        store_files(&sluice),
        before,
        "a refused request wrote to the store"
    );
    assert_eq!(
        json_call(&sluice, "GET", "/-/stage", Some(&alice)).1["total"],
        1
    );
}

#[test]
fn staged_required_refuses_a_direct_publish_with_the_way_to_stage() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "staged = \"required\"\n");
    let (status, body) = publish(&sluice, &alice, "@acme/w", "1.0.0");
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("npm stage publish"),
        "{body}"
    );
    assert!(listed(&sluice, "@acme/w").is_empty());
    let id = staged(&sluice, &alice, "@acme/w", "1.0.0");
    let (status, body) = approve(&sluice, &alice, &id);
    assert_eq!(status, 201, "{body}");
    assert_eq!(listed(&sluice, "@acme/w"), ["1.0.0"]);
    // A change of what is published (no new version) is no publish: still allowed.
    let (_, doc) = sluice.get_json("/@acme%2fw");
    let mut change = doc.clone();
    change["versions"]["1.0.0"]["deprecated"] = json!("use 2");
    let (status, body) = send(&sluice, "PUT", "/@acme%2fw", Some(&alice), Some(&change));
    assert_eq!(status, 200, "{body}");
}

/// A project folder whose npm user config carries `token` for `sluice`.
fn logged_in(sluice: &Sluice, token: &str) -> Project {
    Project::logged_in(&sluice.url(), token)
}

/// The package folder of `@acme/widget@version` in `project`.
fn package(project: &Project, version: &str) {
    project.acme_widget(version);
}

/// Run npm; its stdout, or a panic with all it said.
fn npm_ok(project: &Project, sluice: &Sluice, args: &[&str]) -> String {
    project.npm_ok(&sluice.url(), args)
}

/// The stage id `npm stage publish` printed (`+ name@version (staged with id <id>)`).
fn printed_id(stdout: &str) -> String {
    let (_, rest) = stdout
        .split_once("staged with id ")
        .unwrap_or_else(|| panic!("{stdout}"));
    rest.chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect()
}

#[test]
fn npm_stages_lists_views_downloads_approves_and_rejects() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "staged = \"required\"\n");
    let author = logged_in(&sluice, &alice);
    package(&author, "1.0.0");
    // A direct publish is refused, and npm shows how to stage instead.
    let out = author.npm(&sluice.url(), &["publish"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("npm stage publish"), "{said}");

    let id = printed_id(&npm_ok(&author, &sluice, &["stage", "publish"]));
    assert_eq!(id.len(), 36, "{id}");
    // Staging it again: npm fails with the 409.
    let again = author.npm(&sluice.url(), &["stage", "publish"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let user = Project::new();
    let out = user.npm(&sluice.url(), &["install", "@acme/widget@1.0.0"]);
    assert!(!out.status.success(), "a staged version installed");

    let list: Value =
        serde_json::from_str(&npm_ok(&author, &sluice, &["stage", "list", "--json"])).unwrap();
    assert_eq!(list[0]["id"], id.as_str(), "{list}");
    assert_eq!(list[0]["packageName"], "@acme/widget", "{list}");
    let list: Value = serde_json::from_str(&npm_ok(
        &author,
        &sluice,
        &["stage", "list", "@acme/widget", "--json"],
    ))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let view: Value =
        serde_json::from_str(&npm_ok(&author, &sluice, &["stage", "view", &id, "--json"])).unwrap();
    assert_eq!(view["version"], "1.0.0", "{view}");
    npm_ok(&author, &sluice, &["stage", "download", &id]);
    let downloaded = author.path().join(format!("acme-widget-1.0.0-{id}.tgz"));
    assert!(std::fs::metadata(&downloaded).unwrap().len() > 0);

    npm_ok(&author, &sluice, &["stage", "approve", &id]);
    user.install(&sluice.url(), &["@acme/widget@1.0.0"]);
    assert_eq!(user.require("@acme/widget"), "@acme/widget@1.0.0");
    let (_, _, served) = sluice.get("/@acme%2fwidget/-/widget-1.0.0.tgz", &[]);
    assert_eq!(served, std::fs::read(&downloaded).unwrap());

    package(&author, "1.1.0");
    let id = printed_id(&npm_ok(&author, &sluice, &["stage", "publish"]));
    npm_ok(&author, &sluice, &["stage", "reject", &id]);
    let out = npm_ok(&author, &sluice, &["stage", "list"]);
    assert!(out.contains("No staged packages"), "{out}");
    assert_eq!(listed(&sluice, "@acme/widget"), ["1.0.0"]);

    // The audit log has each step: who, the version, and the stage id in its detail.
    let out = support::sluice_cli(&sluice.config_path, &["audit-log", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    let steps: Vec<(String, String, String)> = printed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| ["stage", "approve", "reject"].contains(&e["action"].as_str().unwrap()))
        .map(|e| {
            assert_eq!(e["actor"], "alice", "{e}");
            let field = |k: &str| e[k].as_str().unwrap().to_string();
            (
                field("action"),
                field("subject"),
                field("detail").len().to_string(),
            )
        })
        .collect();
    let step = |a: &str, s: &str| (a.to_string(), s.to_string(), "36".to_string());
    assert_eq!(
        steps,
        [
            step("stage", "@acme/widget@1.0.0"),
            step("approve", "@acme/widget@1.0.0"),
            step("stage", "@acme/widget@1.1.0"),
            step("reject", "@acme/widget@1.1.0"),
        ],
        "{printed}"
    );
}

#[test]
fn a_fleet_shares_what_is_staged_one_node_stages_another_approves() {
    let Some(seaweed) = support::seaweed::Seaweed::start() else {
        return;
    };
    let upstream = FakeRegistry::start();
    let node = |name: &str| {
        format!(
            "{}\n{PRIVATE}\n[cluster]\nnode = \"{name}\"\n",
            seaweed.storage("data", "stage/")
        )
    };
    let a = Sluice::start(&upstream, "", &node("a"));
    let b = Sluice::start(&upstream, "", &node("b"));
    for node in [&a, &b] {
        add_user(node, "alice", "correct horse");
    }
    let alice = login(&a, "alice", "correct horse");
    let (status, body) = publish(&a, &alice, "@acme/w", "1.0.0");
    assert_eq!(status, 200, "{body}");
    let id = staged(&a, &alice, "@acme/w", "1.1.0");
    // b sees it, serves its tarball, and does not list it.
    let (status, list) = json_call(&b, "GET", "/-/stage", Some(&alice));
    assert_eq!((status, list["total"].clone()), (200, json!(1)), "{list}");
    let path = format!("/-/stage/{id}/tarball");
    let (status, tarball) = call(&b, "GET", &path, Some(&alice), None);
    assert_eq!(status, 200);
    assert_eq!(tarball, version_of("@acme/w", "1.1.0").1);
    assert_eq!(b.get("/@acme%2fw/-/w-1.1.0.tgz", &[]).0, 404);
    // b approves; a serves the version (its copy of the document is told of the change).
    let (status, body) = approve(&b, &alice, &id);
    assert_eq!(status, 201, "{body}");
    assert!(
        support::eventually(30, || listed(&a, "@acme/w").len() == 2),
        "node a never listed the approved version"
    );
    let (status, _, served) = a.get("/@acme%2fw/-/w-1.1.0.tgz", &[]);
    assert_eq!((status, served), (200, tarball));
    let (_, list) = json_call(&a, "GET", "/-/stage", Some(&alice));
    assert_eq!(list["total"], 0, "{list}");
}

/// A pnpm (11 on Node 24, or 12, its own runtime) with a home of its own whose user config
/// carries a token for one sluice.
struct Pnpm {
    name: &'static str,
    program: std::path::PathBuf,
    path: Option<std::ffi::OsString>,
    home: tempfile::TempDir,
    registry: String,
}

impl Pnpm {
    /// pnpm 11 (`node24`) or 12 (`pnpm12`) logged in to `sluice` with `token`; `None` after
    /// saying it cannot run (a failure under CI).
    fn logged_in(major: u8, sluice: &Sluice, token: &str) -> Option<Pnpm> {
        let (name, program, path) = match major {
            11 => (
                "pnpm 11",
                support::tool_in("node24/node_modules/.bin/pnpm")?,
                Some(support::node24_path()?),
            ),
            _ => (
                "pnpm 12",
                support::tool_in("pnpm12/node_modules/.bin/pnpm")?,
                None,
            ),
        };
        let home = tempfile::tempdir().unwrap();
        let registry = sluice.url();
        let host = registry.trim_start_matches("http:");
        let rc = format!("registry={registry}\n{host}:_authToken={token}\n");
        std::fs::write(home.path().join(".npmrc"), &rc).unwrap();
        // pnpm 11 reads its user settings from here, and no longer from ~/.npmrc.
        let config = home.path().join(".config/pnpm");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("auth.ini"), &rc).unwrap();
        let pnpm = Pnpm {
            name,
            program,
            path,
            home,
            registry,
        };
        let version = pnpm.run(pnpm.home.path(), &["--version"]);
        let said = String::from_utf8_lossy(&version.stdout).to_string();
        assert!(said.starts_with(&format!("{major}.")), "{name}: {said}");
        Some(pnpm)
    }

    /// Run it in `dir` against its registry.
    fn run(&self, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new(&self.program);
        command.args(args).current_dir(dir);
        if !args.contains(&"--version") {
            command.args(["--registry", &self.registry]);
        }
        if let Some(path) = &self.path {
            command.env("PATH", path);
        }
        let home = self.home.path();
        command
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("npm_config_userconfig", home.join(".npmrc"))
            .env_remove("npm_config_registry")
            .env_remove("CI")
            .output()
            .unwrap()
    }

    /// Run it; its stdout, or a panic with all it said.
    fn ok(&self, dir: &std::path::Path, args: &[&str]) -> String {
        let out = self.run(dir, args);
        assert!(
            out.status.success(),
            "{} {args:?}:\n{}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Run it, which must fail; all it said.
    fn fails(&self, dir: &std::path::Path, args: &[&str]) -> String {
        let out = self.run(dir, args);
        let said = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{} {args:?} succeeded:\n{said}",
            self.name
        );
        said
    }
}

/// `pnpm stage` end to end: a direct publish refused with the way to stage, stage (twice:
/// 409), list, view, download, approve (then installable), stage and reject.
fn pnpm_stages_lists_views_downloads_approves_and_rejects(major: u8) {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "staged = \"required\"\n");
    let Some(pnpm) = Pnpm::logged_in(major, &sluice, &alice) else {
        return;
    };
    let author = Project::new();
    let dir = author.path();
    package(&author, "1.0.0");
    let said = pnpm.fails(dir, &["publish", "--no-git-checks"]);
    assert!(said.contains("stage publish"), "{said}");
    assert!(listed(&sluice, "@acme/widget").is_empty());

    let id = printed_id(&pnpm.ok(dir, &["stage", "publish", "--no-git-checks"]));
    assert_eq!(id.len(), 36, "{id}");
    let said = pnpm.fails(dir, &["stage", "publish", "--no-git-checks"]);
    assert!(said.contains("409"), "{said}");

    // Not installable while staged.
    let user = Project::new();
    let out = user.npm(&sluice.url(), &["install", "@acme/widget@1.0.0"]);
    assert!(!out.status.success(), "a staged version installed");
    assert!(listed(&sluice, "@acme/widget").is_empty());

    let list: Value = serde_json::from_str(&pnpm.ok(dir, &["stage", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], id.as_str(), "{list}");
    assert_eq!(list[0]["packageName"], "@acme/widget", "{list}");
    assert_eq!(list[0]["version"], "1.0.0", "{list}");
    let list: Value =
        serde_json::from_str(&pnpm.ok(dir, &["stage", "list", "@acme/widget", "--json"])).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let none = pnpm.ok(dir, &["stage", "list", "@acme/other"]);
    assert!(none.contains("No staged versions"), "{none}");
    let view: Value =
        serde_json::from_str(&pnpm.ok(dir, &["stage", "view", &id, "--json"])).unwrap();
    assert_eq!(view["version"], "1.0.0", "{view}");
    assert_eq!(view["actor"], "alice", "{view}");
    let fetched = tempfile::tempdir().unwrap();
    pnpm.ok(fetched.path(), &["stage", "download", &id]);
    let downloaded: Vec<_> = support::paths_under(fetched.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tgz"))
        .collect();
    assert_eq!(downloaded.len(), 1, "{downloaded:?}");
    let staged_bytes = std::fs::read(&downloaded[0]).unwrap();

    let said = pnpm.ok(dir, &["stage", "approve", &id]);
    assert!(said.contains("approved"), "{said}");
    assert_eq!(listed(&sluice, "@acme/widget"), ["1.0.0"]);
    user.install(&sluice.url(), &["@acme/widget@1.0.0"]);
    assert_eq!(user.require("@acme/widget"), "@acme/widget@1.0.0");
    let (_, _, served) = sluice.get("/@acme%2fwidget/-/widget-1.0.0.tgz", &[]);
    assert_eq!(served, staged_bytes);
    let (_, doc) = sluice.get_json("/@acme%2fwidget");
    assert_eq!(
        doc["versions"]["1.0.0"]["_npmUser"]["name"], "alice",
        "{doc}"
    );

    package(&author, "1.1.0");
    let id = printed_id(&pnpm.ok(dir, &["stage", "publish", "--no-git-checks"]));
    let said = pnpm.ok(dir, &["stage", "reject", &id]);
    assert!(said.contains("rejected"), "{said}");
    let out = pnpm.ok(dir, &["stage", "list"]);
    assert!(out.contains("No staged packages"), "{out}");
    assert_eq!(listed(&sluice, "@acme/widget"), ["1.0.0"]);
}

#[test]
fn pnpm_11_stages_lists_views_downloads_approves_and_rejects() {
    pnpm_stages_lists_views_downloads_approves_and_rejects(11);
}

#[test]
fn pnpm_12_stages_lists_views_downloads_approves_and_rejects() {
    pnpm_stages_lists_views_downloads_approves_and_rejects(12);
}

#[test]
fn migrate_copies_staged_versions_with_their_tarballs() {
    let upstream = FakeRegistry::start();
    let (sluice, alice, _) = started(&upstream, "");
    let (status, body) = publish(&sluice, &alice, "@acme/w", "1.0.0");
    assert_eq!(status, 200, "{body}");
    let next = staged(&sluice, &alice, "@acme/w", "1.1.0");
    // A first version staged: its package has no document yet.
    let first = staged(&sluice, &alice, "@acme/first", "1.0.0");
    let dir = sluice.stop();
    let from = dir.path().join("sluice.toml");
    let back = dir.path().join("back.toml");
    std::fs::write(
        &back,
        format!(
            "[upstream]\nregistry = \"{}\"\n[storage]\ndir = \"back\"\n",
            upstream.url()
        ),
    )
    .unwrap();
    let migrate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["migrate", "--to"])
            .arg(&back)
            .arg("--config")
            .arg(&from)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = migrate();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.contains("2 staged versions listed"), "{summary}");
    // Again: nothing new to list.
    let summary = String::from_utf8_lossy(&migrate().stdout).to_string();
    assert!(summary.contains("0 staged versions listed"), "{summary}");

    // A server on the copy lists both, serves their tarballs and approves them.
    let sluice = Sluice::start_in(
        dir,
        &upstream,
        &format!("{PRIVATE}[storage]\ndir = \"back\"\n"),
    );
    let alice = login(&sluice, "alice", "correct horse");
    let (status, list) = json_call(&sluice, "GET", "/-/stage", Some(&alice));
    assert_eq!((status, list["total"].clone()), (200, json!(2)), "{list}");
    for (id, name, version) in [
        (&next, "@acme/w", "1.1.0"),
        (&first, "@acme/first", "1.0.0"),
    ] {
        let path = format!("/-/stage/{id}/tarball");
        let (status, tarball) = call(&sluice, "GET", &path, Some(&alice), None);
        assert_eq!(status, 200, "{name}");
        assert_eq!(tarball, version_of(name, version).1, "{name}");
        let (status, body) = approve(&sluice, &alice, id);
        assert_eq!(status, 201, "{name}: {body}");
    }
    assert_eq!(listed(&sluice, "@acme/w"), ["1.0.0", "1.1.0"]);
    assert_eq!(listed(&sluice, "@acme/first"), ["1.0.0"]);
}
