//! Attacks on accounts and tokens (issue 23): a read-only token managing tokens, an old
//! password outliving `sluice user passwd`, lockouts an attacker can aim at a user, and a users
//! file other accounts on the machine can read.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;

use base64::Engine as _;
use serde_json::{json, Value};
use support::{sluice_cli, FakeRegistry, Sluice};

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
