//! Hostile input at the open endpoints (issue "Hostile input"): audit bodies that inflate
//! without bound, audit requests without credentials, private names in audit bodies, tokens in
//! log lines, answers a shared cache could keep, and user names told apart by their answers.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write as _;
use std::net::TcpStream;
use std::process::Command;

use serde_json::{json, Value};
use support::{eventually, FakeRegistry, Reaped, Sluice};

const PRIVATE: &str = "[auth]\nusers = \"users\"\n\n[publish]\nscopes = [\"@acme\"]\n";

const AUTHENTICATED: &str =
    "[auth]\nusers = \"users\"\nread = \"authenticated\"\n\n[publish]\nscopes = [\"@acme\"]\n";

/// `sluice user add NAME` with `password` on stdin and an address at acme.example.
fn add_user(config: &std::path::Path, name: &str, password: &str) {
    let email = format!("{name}@acme.example");
    support::publishing::user_cli(config, "add", name, password, &["--email", &email]);
}

/// One request; its status, headers and body.
fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut request = reqwest::Client::new().request(method.parse().unwrap(), url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.bytes().await.unwrap().to_vec())
    })
}

/// The legacy login's token for `name`, or its status and error body.
fn login(url: &str, name: &str, password: &str) -> Result<String, (u16, Value)> {
    let body = json!({ "name": name, "password": password }).to_string();
    let (status, _, body) = request(
        "PUT",
        &format!("{url}-/user/org.couchdb.user:{name}"),
        &[("content-type", "application/json")],
        body.into_bytes(),
    );
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (status, body["token"].as_str()) {
        (201, Some(token)) => Ok(token.to_string()),
        _ => Err((status, body)),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

const BULK: &str = "/-/npm/v1/security/advisories/bulk";
const QUICK: &str = "/-/npm/v1/security/audits/quick";

#[test]
fn an_audit_body_that_inflates_past_16_mib_is_refused_with_413_and_never_relayed() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let sluice = Sluice::start(&upstream, "left\n", "");
    // 129 KB of gzip that inflates to 127 MiB: JSON with a long run of spaces inside.
    let mut plain = br#"{"left":["1.0.0"],"pad":""#.to_vec();
    plain.resize(plain.len() + (127 << 20), b' ');
    plain.extend_from_slice(br#""}"#);
    let bomb = gzip(&plain);
    drop(plain);
    assert!(bomb.len() < 200 << 10, "{} bytes of gzip", bomb.len());
    let url = format!("{}{}", sluice.url(), &BULK[1..]);
    let headers = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let (status, _, body) = request("POST", &url, &headers, bomb);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("larger than"),
        "{error}"
    );
    assert!(upstream.posts().is_empty(), "nothing is relayed");
    // Just under the cap is relayed, inflated.
    let mut plain = br#"{"left":["1.0.0"],"pad":[""#.to_vec();
    plain.resize(plain.len() + (15 << 20), b' ');
    plain.extend_from_slice(br#""]}"#);
    let (status, _, body) = request("POST", &url, &headers, gzip(&plain));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let posts = upstream.posts();
    assert_eq!(posts.len(), 1);
    let sent: Value = serde_json::from_slice(&posts[0].2).unwrap();
    assert_eq!(sent["left"], json!(["1.0.0"]), "{}", posts[0].0);
    assert_eq!(sluice.get_json("/-/ping").0, 200);
}

#[test]
fn audit_requests_need_a_user_when_reads_do() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let sluice = Sluice::start(&upstream, "left\n", AUTHENTICATED);
    add_user(&sluice.config_path, "alice", "correct horse");
    let json = [("content-type", "application/json")];
    for path in [BULK, QUICK] {
        let url = format!("{}{}", sluice.url(), &path[1..]);
        let body = br#"{"left":["1.0.0"]}"#.to_vec();
        let (status, headers, _) = request("POST", &url, &json, body.clone());
        assert_eq!(status, 401, "{path} without credentials");
        assert!(headers.contains_key("www-authenticate"), "{path}");
        let (status, _, _) = request(
            "POST",
            &url,
            &[json[0], ("authorization", "Bearer not-a-token")],
            body,
        );
        assert_eq!(status, 401, "{path} with a bad token");
    }
    assert!(upstream.posts().is_empty(), "no audit was relayed");
    let token = login(&sluice.url(), "alice", "correct horse").unwrap();
    let bearer = format!("Bearer {token}");
    let (status, _, _) = request(
        "POST",
        &format!("{}{}", sluice.url(), &BULK[1..]),
        &[json[0], ("authorization", &bearer)],
        br#"{"left":["1.0.0"]}"#.to_vec(),
    );
    assert_eq!(status, 200, "a user's audit is relayed");
    assert_eq!(upstream.posts().len(), 1);
}

#[test]
fn no_name_published_here_reaches_upstream_through_either_audit() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let sluice = Sluice::start(&upstream, "left\n", PRIVATE);
    let json = [("content-type", "application/json")];
    // npm's quick audit: the project and its lockfile's tree.
    let quick = json!({
        "name": "@acme/app",
        "version": "1.0.0",
        "requires": { "left": "^1.0.0", "@acme/widget": "^1.0.0", "@ACME/loud": "1.0.0" },
        "dependencies": {
            "left": {
                "version": "1.0.0",
                "requires": { "@acme/inner": "1.0.0" },
                "dependencies": { "@acme/deep": { "version": "1.0.0" } }
            },
            "@acme/widget": { "version": "1.0.0", "requires": { "left": "1.0.0" } }
        }
    });
    for (encoding, body) in [
        (None, quick.to_string().into_bytes()),
        (Some("gzip"), gzip(quick.to_string().as_bytes())),
    ] {
        let mut headers = json.to_vec();
        if let Some(encoding) = encoding {
            headers.push(("content-encoding", encoding));
        }
        let url = format!("{}{}", sluice.url(), &QUICK[1..]);
        let (status, _, _) = request("POST", &url, &headers, body);
        assert_ne!(status, 400, "{encoding:?}");
    }
    let bulk = json!({ "left": ["1.0.0"], "@acme/widget": ["1.0.0"], "@Acme/x": ["1.0.0"] });
    let url = format!("{}{}", sluice.url(), &BULK[1..]);
    let (status, _, _) = request("POST", &url, &json, bulk.to_string().into_bytes());
    assert_eq!(status, 200);
    let posts = upstream.posts();
    assert_eq!(
        posts.len(),
        3,
        "both quick audits and the bulk one reached upstream"
    );
    for (path, _, body) in &posts {
        let text = String::from_utf8_lossy(body).to_lowercase();
        assert!(
            !text.contains("@acme"),
            "{path} named a private package: {text}"
        );
        assert!(
            text.contains("left"),
            "{path} lost the mirrored names: {text}"
        );
    }
    let quick: Value = serde_json::from_slice(&posts[0].2).unwrap();
    assert_eq!(quick["dependencies"]["left"]["version"], "1.0.0", "{quick}");
}

#[test]
fn aliases_and_urls_pointing_at_a_private_package_never_reach_upstream() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("right", "1.0.0", &[]);
    let sluice = Sluice::start(&upstream, "left\nright\nfoo\n", PRIVATE);
    let base = sluice.url();
    let json = [("content-type", "application/json")];
    // Public keys whose values name private packages: npm aliases, and lockfile `version` and
    // `resolved` fields carrying them, at the top and deeper in the tree.
    let quick = json!({
        "name": "app",
        "version": "1.0.0",
        "install": ["left@1.0.0", "@acme/widget@1.0.0", "foo@npm:@acme/secret@1.0.0"],
        "remove": ["@ACME/gone@2.0.0"],
        "requires": {
            "left": "^1.0.0",
            "foo": "npm:@acme/secret@^1",
            "loud": "NPM:@Acme/Loud@1",
        },
        "dependencies": {
            "left": {
                "version": "1.0.0",
                "resolved": format!("{base}left/-/left-1.0.0.tgz"),
                "requires": { "inner": "npm:@acme/inner@1.0.0", "right": "1.0.0" },
                "dependencies": {
                    "inner": { "version": "npm:@acme/inner@1.0.0" },
                    "right": { "version": "1.0.0" }
                }
            },
            "foo": {
                "version": "npm:@acme/secret@1.0.0",
                "integrity": "sha512-AAAA",
            },
            "bar": {
                "version": "1.0.0",
                "resolved": format!("{base}@acme/hidden/-/hidden-1.0.0.tgz"),
            },
            "baz": {
                "version": "1.0.0",
                "resolved": format!("{base}@acme%2fencoded/-/encoded-1.0.0.tgz"),
            },
            "qux": { "version": "1.0.0", "from": "npm:@acme/from@^1" }
        }
    });
    let url = format!("{base}{}", &QUICK[1..]);
    let (status, _, body) = request("POST", &url, &json, quick.to_string().into_bytes());
    // Relayed: the fake upstream answers the quick audit as the public one does now (410).
    assert_eq!(status, 410, "{}", String::from_utf8_lossy(&body));
    // The bulk request: a public name with a version that aliases a private package.
    let bulk = json!({
        "left": ["1.0.0", "npm:@acme/secret@1.0.0"],
        "right": ["1.0.0"],
        "foo": [format!("{base}@acme/secret/-/secret-1.0.0.tgz")],
    });
    let url = format!("{base}{}", &BULK[1..]);
    let (status, _, body) = request("POST", &url, &json, bulk.to_string().into_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let posts = upstream.posts();
    assert_eq!(posts.len(), 2, "both audits reached upstream");
    for (path, _, body) in &posts {
        let text = String::from_utf8_lossy(body).to_lowercase();
        for private in ["acme", "secret", "hidden", "encoded"] {
            assert!(!text.contains(private), "{path} named {private}: {text}");
        }
    }
    let quick: Value = serde_json::from_slice(&posts[0].2).unwrap();
    assert_eq!(quick["install"], json!(["left@1.0.0"]), "{quick}");
    assert_eq!(quick["remove"], json!([]), "{quick}");
    assert_eq!(quick["requires"], json!({ "left": "^1.0.0" }), "{quick}");
    let kept: Vec<&String> = quick["dependencies"].as_object().unwrap().keys().collect();
    assert_eq!(kept, ["left"], "{quick}");
    let left = &quick["dependencies"]["left"];
    assert_eq!(left["version"], "1.0.0", "{quick}");
    assert_eq!(left["resolved"], format!("{base}left/-/left-1.0.0.tgz"));
    assert_eq!(left["requires"], json!({ "right": "1.0.0" }), "{quick}");
    assert_eq!(
        left["dependencies"],
        json!({ "right": { "version": "1.0.0" } })
    );
    let bulk: Value = serde_json::from_slice(&posts[1].2).unwrap();
    assert_eq!(
        bulk,
        json!({ "left": ["1.0.0"], "right": ["1.0.0"], "foo": [] }),
        "the public versions are still audited"
    );
}

#[test]
fn tokens_never_appear_in_a_log_line() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let dir = Sluice::start(&upstream, "left\n", PRIVATE).stop();
    let config = dir.path().join("sluice.toml");
    add_user(&config, "alice", "correct horse");
    let addr: std::net::SocketAddr = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("listen"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let log = dir.path().join("log");
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("log.err")).unwrap())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    assert!(eventually(10, || TcpStream::connect(addr).is_ok()));
    let url = format!("http://{addr}/");
    let token = login(&url, "alice", "correct horse").unwrap();
    let bearer = format!("Bearer {token}");
    // `npm token revoke` and `npm logout` put the token (or its key) in the path.
    let (status, _, _) = request(
        "DELETE",
        &format!("{url}-/npm/v1/tokens/token/{token}"),
        &[("authorization", &bearer)],
        Vec::new(),
    );
    assert!(status == 200 || status == 404, "{status}");
    let second = login(&url, "alice", "correct horse").unwrap();
    let (status, _, _) = request(
        "DELETE",
        &format!("{url}-/user/token/{second}"),
        &[("authorization", &format!("Bearer {second}"))],
        Vec::new(),
    );
    assert_eq!(status, 200);
    // The access log lines of both requests are written.
    let logged = || {
        std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("log.err")).unwrap_or_default()
    };
    assert!(
        eventually(10, || logged().contains("/-/user/token/[redacted]")),
        "{}",
        logged()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let text = logged();
    for secret in [&token, &second, &"correct horse".to_string()] {
        assert!(
            !text.contains(secret.as_str()),
            "a credential was logged:\n{text}"
        );
    }
}

#[test]
fn answers_to_authenticated_reads_are_private_to_shared_caches() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let open = Sluice::start(&upstream, "left\n", PRIVATE);
    let (_, headers, _) = request("GET", &format!("{}left", open.url()), &[], Vec::new());
    let cache_control = headers["cache-control"].to_str().unwrap();
    assert!(cache_control.starts_with("public"), "{cache_control}");

    let sluice = Sluice::start(&upstream, "left\n", AUTHENTICATED);
    add_user(&sluice.config_path, "alice", "correct horse");
    let token = login(&sluice.url(), "alice", "correct horse").unwrap();
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    for path in ["left", "left/-/left-1.0.0.tgz", "left/1.0.0", "-/whoami"] {
        let (status, headers, _) =
            request("GET", &format!("{}{path}", sluice.url()), &auth, Vec::new());
        assert_eq!(status, 200, "{path}");
        let cache_control = headers["cache-control"].to_str().unwrap();
        assert!(
            cache_control.starts_with("private"),
            "{path}: {cache_control}"
        );
        let vary = headers["vary"].to_str().unwrap().to_lowercase();
        assert!(vary.contains("authorization"), "{path}: {vary}");
    }
}

#[test]
fn user_names_and_addresses_cannot_be_enumerated() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    add_user(&sluice.config_path, "alice", "correct horse");
    add_user(&sluice.config_path, "bob", "battery staple");
    let document = |name: &str, token: Option<&str>| {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("authorization", b)])
            .unwrap_or_default();
        let url = format!("{}-/user/org.couchdb.user:{name}", sluice.url());
        let (status, _, body) = request("GET", &url, &headers, Vec::new());
        (status, serde_json::from_slice::<Value>(&body).unwrap())
    };
    // Anonymous: the same answer for a user and for a name nobody has.
    let (known, known_body) = document("alice", None);
    let (unknown, unknown_body) = document("nobody-at-all", None);
    assert_eq!(known, 401);
    assert_eq!((known, &known_body), (unknown, &unknown_body));
    assert!(!known_body.to_string().contains("acme.example"));
    // A user sees their own address; another user sees the name only.
    let token = login(&sluice.url(), "bob", "battery staple").unwrap();
    let (status, own) = document("bob", Some(&token));
    assert_eq!(status, 200);
    assert_eq!(own["email"], "bob@acme.example");
    let (status, other) = document("alice", Some(&token));
    assert_eq!(status, 200, "npm owner add checks that the name exists");
    assert!(other.get("email").is_none(), "{other}");
    // The legacy login answers a wrong password and an unknown name alike, and counts both.
    let wrong = login(&sluice.url(), "alice", "guess").unwrap_err();
    let unknown = login(&sluice.url(), "nobody-at-all", "guess").unwrap_err();
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, 401);
    let mut last = unknown;
    for _ in 0..20 {
        match login(&sluice.url(), "nobody-at-all", "guess") {
            Err(answer) => last = answer,
            Ok(_) => panic!("an unknown name logged in"),
        }
        if last.0 == 429 {
            break;
        }
    }
    assert_eq!(last.0, 429, "failures for an unknown name count: {last:?}");
}

#[test]
fn web_logins_begun_from_one_address_are_bounded() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    let url = format!("{}-/v1/login", sluice.url());
    for n in 1..=20 {
        let (status, _, body) = request("POST", &url, &[], b"{}".to_vec());
        assert_eq!(
            status,
            200,
            "web login {n}: {}",
            String::from_utf8_lossy(&body)
        );
        let begun: Value = serde_json::from_slice(&body).unwrap();
        assert!(begun["loginUrl"]
            .as_str()
            .unwrap()
            .contains("/-/ui/login?session="));
    }
    // Each pending login is kept in the store: an anonymous client may not add them forever.
    let (status, _, body) = request("POST", &url, &[], b"{}".to_vec());
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
}
