//! Attacks on accounts and tokens (issue 23): a read-only token managing tokens, an old
//! password outliving `sluice user passwd`, lockouts an attacker can aim at a user, and a users
//! file other accounts on the machine can read.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;

use base64::Engine as _;
use serde_json::{json, Value};
use support::terminal::Authenticator;
use support::{sluice_cli, FakeRegistry, Project, Sluice};

const PRIVATE: &str = "[policy]\nwhitelist = \"whitelist\"\n\n[auth]\nusers = \"users\"\n\n\
                       [publish]\nscopes = [\"@acme\"]\n";

/// `sluice user <action> NAME --password-stdin` against `config`.
fn user_cli(config: &std::path::Path, action: &str, name: &str, password: &str) {
    support::publishing::user_cli(config, action, name, password, &[]);
}

/// A client of `sluice` whose connections come from `from` (any 127.0.0.0/8 address).
struct Client {
    base: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn new(sluice: &Sluice, from: &str) -> Client {
        let from: IpAddr = from.parse().unwrap();
        Client {
            base: sluice.url(),
            http: reqwest::Client::builder()
                .local_address(from)
                .build()
                .unwrap(),
            runtime: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    /// Send `method path` with `authorization` and a JSON `body`; the status and JSON answer.
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.runtime.block_on(async {
            let mut request = self.http.request(method, format!("{}{path}", self.base));
            if let Some(authorization) = authorization {
                request = request.header("authorization", authorization);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        })
    }

    /// npm's legacy login (`npm login --auth-type=legacy`): the status and answer.
    fn login(&self, name: &str, password: &str) -> (u16, Value) {
        let body = json!({
            "_id": format!("org.couchdb.user:{name}"), "name": name, "password": password,
            "type": "user", "roles": [], "date": "2026-12-01T00:00:00.000Z",
        });
        let path = format!("-/user/org.couchdb.user:{name}");
        self.send(reqwest::Method::PUT, &path, None, Some(body))
    }

    /// npm's legacy login with the one-time code `otp` (`npm-otp`): the status, the
    /// `WWW-Authenticate` header and the answer.
    fn login_otp(&self, name: &str, password: &str, otp: Option<&str>) -> (u16, String, Value) {
        let body = json!({ "name": name, "password": password, "type": "user", "roles": [] });
        let url = format!("{}-/user/org.couchdb.user:{name}", self.base);
        self.runtime.block_on(async {
            let mut request = self.http.put(url).json(&body);
            if let Some(otp) = otp {
                request = request.header("npm-otp", otp);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (
                status,
                challenge,
                response.json().await.unwrap_or(Value::Null),
            )
        })
    }

    /// `GET /-/whoami` with Basic credentials: the status.
    fn whoami_basic(&self, name: &str, password: &str) -> u16 {
        let credential =
            base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        let authorization = format!("Basic {credential}");
        self.send(reqwest::Method::GET, "-/whoami", Some(&authorization), None)
            .0
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn a_read_only_token_lists_creates_and_revokes_no_tokens_but_may_log_itself_out() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    user_cli(&sluice.config_path, "add", "alice", "correct horse");
    let client = Client::new(&sluice, "127.0.0.1");
    let (status, answer) = client.login("alice", "correct horse");
    assert_eq!(status, 201, "{answer}");
    let writer = answer["token"].as_str().unwrap().to_string();
    let (status, writer_info) = client.send(
        reqwest::Method::GET,
        "-/npm/v1/tokens",
        Some(&bearer(&writer)),
        None,
    );
    assert_eq!(status, 200, "{writer_info}");
    let writer_id = writer_info["objects"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, created) = client.send(
        reqwest::Method::POST,
        "-/npm/v1/tokens",
        Some(&bearer(&writer)),
        Some(json!({"password": "correct horse", "readonly": true, "cidr_whitelist": []})),
    );
    assert_eq!(status, 200, "{created}");
    let reader = bearer(created["token"].as_str().unwrap());

    // Each token-management route refuses the read-only token with npm's {"error": …}.
    let create = json!({"password": "correct horse", "readonly": false, "cidr_whitelist": []});
    let attempts = [
        (reqwest::Method::GET, "-/npm/v1/tokens".to_string(), None),
        (
            reqwest::Method::POST,
            "-/npm/v1/tokens".to_string(),
            Some(create),
        ),
        (
            reqwest::Method::DELETE,
            format!("-/npm/v1/tokens/token/{writer_id}"),
            None,
        ),
        (
            reqwest::Method::DELETE,
            format!("-/user/token/{writer}"),
            None,
        ),
    ];
    for (method, path, body) in attempts {
        let (status, answer) = client.send(method.clone(), &path, Some(&reader), body);
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("read-only"),
            "{method} {path}: {answer}"
        );
    }
    // The read-write token survived all of that.
    let (status, me) = client.send(
        reqwest::Method::GET,
        "-/whoami",
        Some(&bearer(&writer)),
        None,
    );
    assert_eq!((status, me["username"].as_str()), (200, Some("alice")));
    let (_, list) = client.send(
        reqwest::Method::GET,
        "-/npm/v1/tokens",
        Some(&bearer(&writer)),
        None,
    );
    assert_eq!(list["total"], 2, "{list}");

    // `npm logout` with the read-only token revokes that token, and only that one.
    let own = created["token"].as_str().unwrap();
    let (status, answer) = client.send(
        reqwest::Method::DELETE,
        &format!("-/user/token/{own}"),
        Some(&reader),
        None,
    );
    assert_eq!(status, 200, "{answer}");
    let (status, _) = client.send(reqwest::Method::GET, "-/whoami", Some(&reader), None);
    assert_eq!(status, 401);
}

#[test]
fn after_sluice_user_passwd_the_old_password_stops_working_once_the_file_is_reread() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    user_cli(&sluice.config_path, "add", "alice", "old secret");
    let client = Client::new(&sluice, "127.0.0.1");
    // Both ways of logging in verify the old password (and may remember having done so).
    assert_eq!(client.whoami_basic("alice", "old secret"), 200);
    assert_eq!(client.login("alice", "old secret").0, 201);

    user_cli(&sluice.config_path, "passwd", "alice", "new secret");
    // Asking about a name the server does not know makes it re-read the users file now, so
    // what follows does not wait for the file watcher (the anonymous answer is 401 for any
    // name: names cannot be probed).
    let (status, _) = client.send(
        reqwest::Method::GET,
        "-/user/org.couchdb.user:nobody",
        None,
        None,
    );
    assert_eq!(status, 401);

    assert_eq!(client.whoami_basic("alice", "old secret"), 401);
    assert_eq!(client.login("alice", "old secret").0, 401);
    assert_eq!(client.whoami_basic("alice", "new secret"), 200);
    assert_eq!(client.login("alice", "new secret").0, 201);
}

#[test]
fn failed_logins_lock_the_guessing_address_out_but_not_the_user_elsewhere() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    user_cli(&sluice.config_path, "add", "alice", "correct horse");
    let attacker = Client::new(&sluice, "127.0.0.2");
    for guess in 0..10 {
        let (status, answer) = attacker.login("alice", &format!("guess {guess}"));
        assert_eq!(status, 401, "guess {guess}: {answer}");
    }
    // From the guessing address even the right password is refused for now…
    let (status, answer) = attacker.login("alice", "correct horse");
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("wait"),
        "{answer}"
    );
    assert_eq!(attacker.whoami_basic("alice", "correct horse"), 429);
    // …while alice, from her own address, logs in both ways.
    let alice = Client::new(&sluice, "127.0.0.3");
    let (status, answer) = alice.login("alice", "correct horse");
    assert_eq!(status, 201, "{answer}");
    assert_eq!(alice.whoami_basic("alice", "correct horse"), 200);
}

/// A configuration in a fresh folder whose users file is `users` there.
fn users_config() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n\n[auth]\nusers = \"users\"\n",
    )
    .unwrap();
    (dir, config)
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_users_file_is_written_owner_only_and_check_warns_when_others_can_read_it() {
    let (dir, config) = users_config();
    let users = dir.path().join("users");
    user_cli(&config, "add", "alice", "correct horse");
    assert_eq!(mode(&users), 0o600, "after sluice user add");
    user_cli(&config, "passwd", "alice", "battery staple");
    assert_eq!(mode(&users), 0o600, "after sluice user passwd");

    let out = sluice_cli(&config, &["check"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("chmod"), "{stderr}");

    for loose in [0o644, 0o640] {
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(loose)).unwrap();
        let out = sluice_cli(&config, &["check"]);
        assert!(out.status.success(), "check only warns");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&users.display().to_string()) && stderr.contains("chmod 600"),
            "mode {loose:o}: {stderr}"
        );
    }
}

/// `sluice user 2fa NAME`: the enrollment's URI and its recovery codes.
fn enroll(sluice: &Sluice, name: &str) -> (String, Vec<String>) {
    let out = sluice_cli(&sluice.config_path, &["user", "2fa", name]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{said}");
    let uri = said.lines().next().unwrap().to_string();
    let recovery = said
        .lines()
        .skip_while(|l| !l.starts_with("recovery codes"))
        .skip(1)
        .map(|l| l.trim().to_string())
        .collect();
    (uri, recovery)
}

#[test]
fn with_two_factor_npm_login_and_publish_ask_for_the_code_at_the_terminal() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    user_cli(&sluice.config_path, "add", "alice", "correct horse");
    let (uri, recovery) = enroll(&sluice, "alice");
    let app = Authenticator::scan(&uri);
    let client = Client::new(&sluice, "127.0.0.1");

    // The legacy login: a wrong password is only that (it tells nothing of the second
    // factor); the right one without a code is asked for one as npm understands it.
    let (status, challenge, _) = client.login_otp("alice", "wrong horse", None);
    assert_eq!(status, 401);
    assert!(!challenge.contains("OTP"), "{challenge}");
    let (status, challenge, answer) = client.login_otp("alice", "correct horse", None);
    assert_eq!((status, challenge.as_str()), (401, "OTP"), "{answer}");
    assert!(answer.get("token").is_none(), "{answer}");
    let wrong = app.wrong_code();
    let (status, challenge, _) = client.login_otp("alice", "correct horse", Some(&wrong));
    assert_eq!((status, challenge.as_str()), (401, "OTP"));
    // A recovery code stands in for a code, once.
    let (status, _, answer) = client.login_otp("alice", "correct horse", Some(&recovery[0]));
    assert_eq!(status, 201, "{answer}");
    assert!(answer["token"].as_str().unwrap().starts_with("sluice_"));
    let (status, _, _) = client.login_otp("alice", "correct horse", Some(&recovery[0]));
    assert_eq!(status, 401);

    // npm 11 (Node 20's) as alice and npm 12 (Node 24's) as bob, each at a terminal with no
    // --otp: the login and the publish each ask for a code, and go through with the one the
    // user's app shows.
    user_cli(&sluice.config_path, "add", "bob", "battery staple");
    let apps = [app, Authenticator::scan(&enroll(&sluice, "bob").0)];
    let node24 = support::node24_path();
    let clients = [
        ("11.", None, "alice", "correct horse", "@acme/widget"),
        (
            "12.",
            node24.as_ref(),
            "bob",
            "battery staple",
            "@acme/gadget",
        ),
    ];
    for ((major, path, user, password, package), mut app) in clients.into_iter().zip(apps) {
        if major == "12." && path.is_none() {
            continue;
        }
        let project = Project::new();
        let url = sluice.url();
        let version = project
            .npm_in_terminal(&url, &["--version"], path)
            .succeeds();
        assert!(version.trim().starts_with(major), "npm {version}");
        let mut login = project.npm_in_terminal(&url, &["login", "--auth-type=legacy"], path);
        login.expect("Username:");
        login.type_line(user);
        login.expect("Password:");
        login.type_line(password);
        login.expect("Enter OTP:");
        login.type_line(&app.code());
        login.succeeds();
        let whoami = project.npm_in_terminal(&url, &["whoami"], path).succeeds();
        assert!(whoami.trim().ends_with(user), "{whoami}");

        let manifest = json!({ "name": package, "version": "1.0.0", "license": "MIT" });
        std::fs::write(project.path().join("package.json"), manifest.to_string()).unwrap();
        let mut publish = project.npm_in_terminal(&url, &["publish"], path);
        publish.expect("Enter OTP:");
        publish.type_line(&app.code());
        publish.succeeds();
        let (status, doc) = sluice.get_json(&format!("/{}", package.replace('/', "%2f")));
        assert_eq!(status, 200, "npm {major}");
        assert_eq!(doc["dist-tags"]["latest"], "1.0.0", "npm {major}");
    }
}
