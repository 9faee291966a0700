//! Administration: roles, users kept in the store, the audit log, live settings and two-factor
//! authentication, through the command line, npm's protocol and the functions the console
//! calls (`sluice::api::admin`).
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use sluice::api::admin::{self, Actor};
use sluice::auth::Identity;
use support::publishing::{doc_path, publish_body, tarball_with};
use support::{sluice_cli, FakeRegistry, Project, Sluice};

const PRIVATE: &str = "[policy]\nwhitelist = \"whitelist\"\n\n[auth]\nusers = \"users\"\n\n\
                       [publish]\nscopes = [\"@acme\"]\n";

/// `sluice user add NAME --password-stdin` with `extra` arguments.
fn add_user(sluice: &Sluice, name: &str, password: &str, extra: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["user", "add", name, "--password-stdin"])
        .args(extra)
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
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn cli_ok(sluice: &Sluice, args: &[&str]) -> String {
    let out: Output = sluice_cli(&sluice.config_path, args);
    assert!(
        out.status.success(),
        "sluice {args:?}:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Send `method path` with optional bearer `token`, extra `headers` and JSON `body`: the
/// status, the headers and the JSON answer (`Null` if none).
fn request(
    sluice: &Sluice,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
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
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    })
}

/// npm's legacy login: the token, or the status and answer.
fn login(sluice: &Sluice, name: &str, password: &str) -> Result<String, (u16, Value)> {
    let body = json!({ "_id": format!("org.couchdb.user:{name}"), "name": name,
                       "password": password, "type": "user", "roles": [] });
    let path = format!("/-/user/org.couchdb.user:{name}");
    let (status, _, answer) = request(sluice, "PUT", &path, None, &[], Some(&body));
    match (status, answer["token"].as_str()) {
        (201, Some(token)) => Ok(token.to_string()),
        _ => Err((status, answer)),
    }
}

/// Run `work` on a runtime of its own.
fn block<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(work)
}

/// Who `token` is, as the running registry sees it.
fn identity(sluice: &Sluice, token: &str) -> Identity {
    let app = &sluice.server.as_ref().unwrap().app;
    block(app.auth.identify(Some(&format!("Bearer {token}")), None))
        .unwrap()
        .unwrap()
}

/// Publish `@acme/widget@version` as `token` with optional one-time code `otp`.
fn publish(sluice: &Sluice, token: &str, version: &str, otp: Option<&str>) -> (u16, Value) {
    let manifest = json!({ "name": "@acme/widget", "version": version });
    let tgz = tarball_with(&manifest);
    let headers: Vec<(&str, &str)> = otp.iter().map(|c| ("npm-otp", *c)).collect();
    let path = doc_path("@acme/widget");
    let body = publish_body(&manifest, &tgz);
    let (status, _, answer) = request(sluice, "PUT", &path, Some(token), &headers, Some(&body));
    (status, answer)
}

#[test]
fn roles_come_from_the_cli_and_users_made_in_the_store_log_in() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    add_user(
        &sluice,
        "root",
        "rootpass",
        &["--admin", "--email", "root@corp"],
    );
    add_user(&sluice, "dev", "devpass", &[]);
    let users = std::fs::read_to_string(sluice.dir.path().join("users")).unwrap();
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("root:") && l.ends_with(":root@corp:admin")),
        "{users}"
    );
    let root = identity(&sluice, &login(&sluice, "root", "rootpass").unwrap());
    let dev = identity(&sluice, &login(&sluice, "dev", "devpass").unwrap());
    assert!(root.admin && !dev.admin);

    let app = &sluice.server.as_ref().unwrap().app;
    let as_root = Actor {
        app,
        who: &root,
        address: None,
    };
    let as_dev = Actor {
        app,
        who: &dev,
        address: None,
    };
    // Only an admin makes users; the new one is kept in the store and logs in with npm.
    let refused = block(admin::create_user(as_dev, "eve", "evepass", "", false)).unwrap_err();
    assert_eq!(refused.fault(), sluice::core::Fault::Forbidden, "{refused}");
    block(admin::create_user(
        as_root,
        "carol",
        "carolpass",
        "carol@corp",
        false,
    ))
    .unwrap();
    assert!(!std::fs::read_to_string(sluice.dir.path().join("users"))
        .unwrap()
        .contains("carol"));
    let carol = login(&sluice, "carol", "carolpass").unwrap();
    let (status, _, me) = request(&sluice, "GET", "/-/whoami", Some(&carol), &[], None);
    assert_eq!((status, me["username"].as_str()), (200, Some("carol")));
    assert!(login(&sluice, "carol", "wrong").is_err());

    // A reset password is the one in force; a role granted in the store counts at once.
    block(admin::reset_password(as_root, "carol", "newpass")).unwrap();
    assert!(login(&sluice, "carol", "carolpass").is_err());
    let carol = login(&sluice, "carol", "newpass").unwrap();
    block(admin::set_admin(as_root, "carol", true)).unwrap();
    assert!(identity(&sluice, &carol).admin);
    // No admin locks themself out: another admin (or the command line) does it.
    let own = block(admin::set_admin(as_root, "root", false)).unwrap_err();
    assert_eq!(own.fault(), sluice::core::Fault::Forbidden, "{own}");
    assert!(block(admin::remove_user(as_root, "root")).is_err());
    assert!(app.auth.is_admin("root"));

    // The command line sees the store's users and grants roles there too.
    let list = cli_ok(&sluice, &["user", "list"]);
    assert!(
        list.lines().any(|l| l.starts_with("carol\tadmin\tstore")),
        "{list}"
    );
    assert!(
        list.lines().any(|l| l.starts_with("root\tadmin\tfile")),
        "{list}"
    );
    assert!(
        list.lines().any(|l| l.starts_with("dev\tuser\tfile")),
        "{list}"
    );
    cli_ok(&sluice, &["user", "admin", "dev"]);
    block(app.auth.sync_users()).unwrap();
    assert!(app.auth.is_admin("dev"));

    // An admin lists and revokes anyone's tokens; others may not.
    let tokens = block(admin::tokens(as_root, "carol")).unwrap();
    assert_eq!(tokens.len(), 2, "one per login");
    assert!(block(admin::tokens(as_dev, "carol")).is_err());
    let current = identity(&sluice, &carol).token_hash.unwrap();
    let id = &tokens.iter().find(|t| t.hash == current).unwrap().id;
    assert!(block(admin::revoke_token(as_root, "carol", id)).unwrap());
    let (status, _, _) = request(&sluice, "GET", "/-/whoami", Some(&carol), &[], None);
    assert_eq!(status, 401);
}

#[test]
fn the_audit_log_records_writes_failures_and_settings_and_prints_them() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    add_user(&sluice, "root", "rootpass", &["--admin"]);
    let token = login(&sluice, "root", "rootpass").unwrap();
    assert_eq!(publish(&sluice, &token, "1.0.0", None).0, 200);
    let tag = "/-/package/@acme%2fwidget/dist-tags/stable";
    let version = json!("1.0.0");
    let (status, _, _) = request(&sluice, "PUT", tag, Some(&token), &[], Some(&version));
    assert_eq!(status, 200);
    let body = json!({ "password": "rootpass", "readonly": true });
    let (status, _, made) = request(
        &sluice,
        "POST",
        "/-/npm/v1/tokens",
        Some(&token),
        &[],
        Some(&body),
    );
    assert_eq!(status, 200, "{made}");
    assert_eq!(login(&sluice, "root", "guess").unwrap_err().0, 401);
    let app = &sluice.server.as_ref().unwrap().app;
    let root = identity(&sluice, &token);
    let actor = Actor {
        app,
        who: &root,
        address: "10.1.2.3".parse().ok(),
    };
    block(admin::set_setting(actor, "refresh", "5m")).unwrap();

    let printed = cli_ok(&sluice, &["audit-log", "--json"]);
    let entries: Vec<Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {printed}"))
            .clone()
    };
    let published = find("publish");
    assert_eq!(published["actor"], "root");
    assert_eq!(published["subject"], "@acme/widget@1.0.0");
    assert_eq!(published["address"], "127.0.0.1");
    assert_eq!(find("dist-tag")["detail"], "stable -> 1.0.0");
    assert!(entries
        .iter()
        .any(|e| e["action"] == "token-create" && e["detail"] != "login"));
    let failed = find("login-failure");
    assert_eq!(failed["subject"], "root");
    assert_eq!(failed["address"], "127.0.0.1");
    assert!(failed["actor"].is_null());
    let setting = find("settings");
    assert_eq!(setting["subject"], "refresh");
    assert_eq!(setting["address"], "10.1.2.3");
    assert!(
        setting["detail"].as_str().unwrap().ends_with("-> 5m"),
        "{setting}"
    );
    // Oldest first, ids in order; --since in the future prints nothing; the plain form too.
    let ids: Vec<u64> = entries.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let later = cli_ok(&sluice, &["audit-log", "--since", "2999-01-01T00:00:00Z"]);
    assert!(later.trim().is_empty(), "{later}");
    let plain = cli_ok(&sluice, &["audit-log", "--since", "1h"]);
    assert!(
        plain.contains("publish") && plain.contains("@acme/widget@1.0.0"),
        "{plain}"
    );

    // The console's pages: newest first, paged by id.
    let first = block(admin::audit_log(actor, None, 2)).unwrap();
    assert_eq!(first.entries.len(), 2);
    assert_eq!(first.entries[0].action.to_string(), "settings");
    let rest = block(admin::audit_log(actor, first.next, 100)).unwrap();
    assert_eq!(rest.entries.len() + 2, entries.len());
    assert!(rest.next.is_none());
}

/// The value of the first hidden `csrf` field of `page`.
fn csrf_of(page: &str) -> String {
    let start = page.find(r#"name="csrf" value=""#).unwrap() + r#"name="csrf" value=""#.len();
    page[start..].split('"').next().unwrap().to_string()
}

/// The value `response` sets for cookie `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {name} cookie set"))
}

/// A console form `fields` posted to `path` with `cookie`: the status and `Location`.
async fn post_form(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| {
            let v = percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC);
            format!("{k}={v}")
        })
        .collect();
    let response = client
        .post(format!("{url}{path}"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (response.status().as_u16(), location)
}

/// Log `name` into the console over plain HTTP: the session cookie and its forms' CSRF token.
async fn console_session(url: &str, name: &str, password: &str) -> (String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = client.get(format!("{url}-/ui/login")).send().await.unwrap();
    let login_cookie = format!("sluice_login={}", set_cookie(&form, "sluice_login"));
    let csrf = csrf_of(&form.text().await.unwrap());
    let fields = [
        ("csrf", csrf.as_str()),
        ("name", name),
        ("password", password),
    ];
    let response = client
        .post(format!("{url}-/ui/login"))
        .header("cookie", &login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303, "the console login failed");
    let session = format!("sluice_session={}", set_cookie(&response, "sluice_session"));
    let admin = client
        .get(format!("{url}-/ui/admin"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status().as_u16(), 200);
    let csrf = csrf_of(&admin.text().await.unwrap());
    (session, csrf)
}

#[test]
fn a_whitelist_change_made_in_the_console_is_in_the_audit_log_with_who_and_where() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("right", "1.0.0", &[]);
    let sluice = Sluice::start(&upstream, "left\n", PRIVATE);
    add_user(&sluice, "root", "rootpass", &["--admin"]);
    let url = sluice.url();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (session, csrf) = block(console_session(&url, "root", "rootpass"));
    let (removed, added, forged) = block(async {
        let removed = post_form(
            &client,
            &url,
            "-/ui/admin/whitelist/remove",
            &session,
            &[("csrf", &csrf), ("name", "left")],
        )
        .await;
        let added = post_form(
            &client,
            &url,
            "-/ui/admin/whitelist/add",
            &session,
            &[("csrf", &csrf), ("spec", "right@^1")],
        )
        .await;
        // Without the session's CSRF token nothing changes, and nothing is logged.
        let forged = post_form(
            &client,
            &url,
            "-/ui/admin/whitelist/remove",
            &session,
            &[("csrf", "0".repeat(64).as_str()), ("name", "right")],
        )
        .await;
        (removed, added, forged)
    });
    assert_eq!(removed, (303, "/-/ui/admin".to_string()));
    assert_eq!(added.0, 303);
    assert!(added.1.starts_with("/-/ui/admin/jobs/"), "{added:?}");
    assert_eq!(forged.0, 403);
    assert!(!sluice.whitelist().lines().any(|l| l.trim() == "left"));

    // Written off the answer's path: it is in the log soon after.
    let entries = || -> Vec<Value> {
        cli_ok(&sluice, &["audit-log", "--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &Value| e["action"].as_str().unwrap_or("").starts_with("whitelist"))
            .collect()
    };
    assert!(
        support::eventually(20, || entries().len() == 2),
        "{:?}",
        entries()
    );
    let entries = entries();
    let removal = entries
        .iter()
        .find(|e| e["action"] == "whitelist-remove")
        .unwrap();
    assert_eq!(
        (
            &removal["actor"],
            &removal["address"],
            &removal["subject"],
            &removal["detail"]
        ),
        (
            &json!("root"),
            &json!("127.0.0.1"),
            &json!("left"),
            &json!("console")
        ),
        "{removal}"
    );
    let addition = entries
        .iter()
        .find(|e| e["action"] == "whitelist-add")
        .unwrap();
    assert_eq!(
        (
            &addition["actor"],
            &addition["address"],
            &addition["subject"]
        ),
        (&json!("root"), &json!("127.0.0.1"), &json!("right@^1")),
        "{addition}"
    );
}

#[test]
fn the_consoles_whitelist_forms_refuse_hostile_fields_and_change_nothing() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let whitelist = "# mirrored for the build\nleft\n\n# the docs\nright\n";
    let sluice = Sluice::start(&upstream, whitelist, PRIVATE);
    add_user(&sluice, "root", "rootpass", &["--admin"]);
    let url = sluice.url();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (session, csrf) = block(console_session(&url, "root", "rootpass"));
    let post = |path: &str, field: &str, value: &str| {
        block(post_form(
            &client,
            &url,
            path,
            &session,
            &[("csrf", &csrf), (field, value)],
        ))
        .0
    };
    let remove = "-/ui/admin/whitelist/remove";
    let add = "-/ui/admin/whitelist/add";
    // An empty name matches no entry (not every blank and comment line of the file).
    for name in ["", "   ", "../whitelist", "l\u{435}ft", "left\u{0}", "*"] {
        assert_eq!(post(remove, "name", name), 404, "remove {name:?}");
        assert_eq!(sluice.whitelist(), whitelist, "remove {name:?}");
    }
    let long = "a".repeat(10_000);
    for spec in [
        "",
        "../../etc/passwd",
        "l\u{435}ft",
        "left\u{0}",
        "left\r\nright",
        "@acme/../x",
        long.as_str(),
    ] {
        assert_eq!(post(add, "spec", spec), 400, "add {spec:?}");
    }
    // A form larger than any the console sends is refused before it is read.
    assert_eq!(post(add, "spec", &"a".repeat(100 << 10)), 413);
    assert_eq!(sluice.whitelist(), whitelist);
    let logged = cli_ok(&sluice, &["audit-log", "--json"]);
    assert!(!logged.contains("whitelist-"), "{logged}");
}

#[test]
fn settings_changed_live_take_effect_at_once_and_check_shows_their_source() {
    let upstream = FakeRegistry::start();
    support::tree(&upstream);
    let extra = "[policy]\nwhitelist = \"whitelist\"\nread_through = true\n\n\
                 [cluster]\nsync = \"1s\"\n\n[auth]\nusers = \"users\"\n";
    let sluice = Sluice::start(&upstream, "", extra);
    assert_eq!(sluice.get("/left", &[]).0, 200);
    let app = &sluice.server.as_ref().unwrap().app;
    let operator = Identity::local_operator();
    let actor = Actor {
        app,
        who: &operator,
        address: None,
    };

    block(admin::set_setting(actor, "read_through", "off")).unwrap();
    let (status, _, body) = sluice.get("/right", &[]);
    assert_eq!(status, 403, "{}", text(&body));
    assert!(text(&body).contains("whitelist"), "{}", text(&body));

    let check = cli_ok(&sluice, &["check"]);
    assert!(
        check.contains("# read_through = \"off\"  # store (set by (local operator)"),
        "{check}"
    );
    assert!(
        check.contains("# mode = \"whitelist\"  # default"),
        "{check}"
    );
    assert!(check.contains("# refresh = \"10m\"  # default"), "{check}");
    let shown = cli_ok(&sluice, &["settings"]);
    assert!(shown.contains("read_through = \"off\""), "{shown}");

    // Mirror mode, set from the command line: the running node follows within cluster.sync.
    cli_ok(&sluice, &["settings", "set", "mode", "mirror"]);
    assert!(support::eventually(20, || sluice.get("/right", &[]).0 == 200));
    cli_ok(&sluice, &["settings", "unset", "mode"]);
    assert!(support::eventually(20, || {
        app.settings.mode() == sluice::config::Mode::Whitelist
    }));
    // A value that is none is refused, and nothing changes.
    let out = sluice_cli(
        &sluice.config_path,
        &["settings", "set", "read_through", "maybe"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("on or off"),
        "{}",
        text(&out.stderr)
    );
    assert!(!app.settings.read_through());
    // Several at once (the console's form): one bad value writes none of them.
    let both = [("read_through", "on"), ("refresh", "soon")];
    let refused = block(admin::set_settings(actor, &both)).unwrap_err();
    assert_eq!(refused.fault(), sluice::core::Fault::Client, "{refused}");
    assert!(!app.settings.read_through());
    // A refresh interval near `Duration`'s limit (the refresh loop adds jitter to it and
    // overflowed) is refused too, and writes nothing.
    let before = app.settings.refresh();
    let forever = [("refresh", "584000000000years")];
    let refused = block(admin::set_settings(actor, &forever)).unwrap_err();
    assert_eq!(refused.fault(), sluice::core::Fault::Client, "{refused}");
    assert_eq!(app.settings.refresh(), before);
    // Values already in force are left alone; only the others are set (and audited).
    let same_and_new = [("read_through", "on"), ("mode", "whitelist")];
    let changed = block(admin::set_settings(actor, &same_and_new)).unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(
        (changed[0].key, changed[0].value.as_str()),
        ("read_through", "on")
    );
    assert!(app.settings.read_through());
    let mode = app
        .settings
        .effective()
        .into_iter()
        .find(|e| e.key == "mode")
        .unwrap();
    assert_eq!(mode.source, sluice::core::settings::Source::Default);
}

/// The code `uri`'s authenticator shows now.
fn code_now(uri: &str) -> String {
    totp_rs::TOTP::from_url(uri)
        .unwrap()
        .generate_current()
        .unwrap()
}

#[test]
fn with_two_factor_writes_need_a_code_and_recovery_codes_work_once() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    add_user(&sluice, "alice", "alicepass", &[]);
    let token = login(&sluice, "alice", "alicepass").unwrap();
    let out = cli_ok(&sluice, &["user", "2fa", "alice"]);
    let uri = out.lines().next().unwrap().to_string();
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains("secret="),
        "{out}"
    );
    let recovery: Vec<String> = out
        .lines()
        .skip_while(|l| !l.starts_with("recovery codes"))
        .skip(1)
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(recovery.len(), 8, "{out}");

    // Without a code: 401 asking for one; with a wrong one: 401; npm's header is what counts.
    let (status, headers, body) = {
        let manifest = json!({ "name": "@acme/widget", "version": "1.0.0" });
        let tgz = tarball_with(&manifest);
        let path = doc_path("@acme/widget");
        let body = publish_body(&manifest, &tgz);
        request(&sluice, "PUT", &path, Some(&token), &[], Some(&body))
    };
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "OTP");
    assert_eq!(publish(&sluice, &token, "1.0.0", Some("000000")).0, 401);

    // A recovery code works once, then no more.
    let tag = "/-/package/@acme%2fwidget/dist-tags/beta";
    assert_eq!(publish(&sluice, &token, "1.0.0", Some(&recovery[0])).0, 200);
    let version = json!("1.0.0");
    let with = |code: &str| {
        request(
            &sluice,
            "PUT",
            tag,
            Some(&token),
            &[("npm-otp", code)],
            Some(&version),
        )
        .0
    };
    assert_eq!(with(&recovery[0]), 401);
    assert_eq!(with(&recovery[1]), 200);
    // A new token needs a code too.
    let body = json!({ "password": "alicepass" });
    let (status, headers, _) = request(
        &sluice,
        "POST",
        "/-/npm/v1/tokens",
        Some(&token),
        &[],
        Some(&body),
    );
    assert_eq!(
        (status, headers["www-authenticate"].to_str().unwrap()),
        (401, "OTP")
    );
    // Reads need nothing.
    assert_eq!(sluice.get("/@acme%2fwidget", &[]).0, 200);

    // npm itself: refused without a code (it asks for one), published with --otp.
    let project = Project::new();
    let host = sluice.url().trim_start_matches("http:").to_string();
    std::fs::write(
        project.path().join(".npmrc-empty"),
        format!("{host}:_authToken={token}\n"),
    )
    .unwrap();
    std::fs::write(
        project.path().join("package.json"),
        json!({ "name": "@acme/widget", "version": "2.0.0", "license": "MIT" }).to_string(),
    )
    .unwrap();
    let refused = project.npm(&sluice.url(), &["publish"]);
    assert!(!refused.status.success());
    let said = format!("{}{}", text(&refused.stdout), text(&refused.stderr));
    assert!(said.contains("EOTP") || said.contains("one-time"), "{said}");
    let code = code_now(&uri);
    let published = project.npm(&sluice.url(), &["publish", "--otp", &code]);
    assert!(
        published.status.success(),
        "{}{}",
        text(&published.stdout),
        text(&published.stderr)
    );
    let doc = sluice.get_json("/@acme%2fwidget").1;
    assert_eq!(doc["dist-tags"]["latest"], "2.0.0");
    // The same code again (a replay) is refused.
    assert_eq!(with(&code), 401);
    // The console's check of a code: a recovery code once, then no more.
    let app = &sluice.server.as_ref().unwrap().app;
    assert!(block(admin::verify_second_factor(
        app,
        "alice",
        &recovery[2],
        None
    ))
    .unwrap());
    assert!(!block(admin::verify_second_factor(
        app,
        "alice",
        &recovery[2],
        None
    ))
    .unwrap());
    assert!(block(admin::login_needs_second_factor(app, "alice")).unwrap());
}
