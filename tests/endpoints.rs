//! The endpoints npm commands use every day, and operating sluice: audit, signing keys,
//! search, conditional requests, metrics, the status page, verify, credentials in the
//! upstream URL.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpStream;
use std::process::Command;

use support::process::listen_addr;
use support::{eventually, FakeRegistry, Project, Reaped, Sluice};

fn tree(upstream: &FakeRegistry) {
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("left", "1.1.0", &[]);
    upstream.publish("right", "2.0.0", &[("left", "^1.0.0")]);
    upstream.publish_with(
        "top",
        "3.0.0",
        serde_json::json!({"dependencies": {"left": "~1.1.0", "right": "^2"}, "description": "the top of the tree", "keywords": ["summit"]}),
        None,
    );
}

fn post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
    sluice::crypto::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut request = reqwest::Client::new().post(url).body(body.to_vec());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    })
}

#[test]
fn npm_audit_is_relayed_and_a_down_upstream_answers_503() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "top\nright\nleft\n", "");
    let project = Project::new();
    project.install(&sluice.url(), &["top"]);
    let out = project.npm(&sluice.url(), &["audit"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("found 0 vulnerabilities"), "{stdout}");
    let posts = upstream.posts();
    let bulk = posts
        .iter()
        .find(|(path, _, _)| path == "/-/npm/v1/security/advisories/bulk")
        .expect("the bulk advisory request reached upstream");
    // npm sends it gzip-encoded; sluice relays it decoded, filtered by the policy.
    let sent: serde_json::Value = serde_json::from_slice(&bulk.2).unwrap();
    assert!(sent["left"].is_array(), "{sent}");

    // Names the policy does not serve are not sent upstream.
    let (status, _) = post(
        &format!("{}-/npm/v1/security/advisories/bulk", sluice.url()),
        br#"{"left":["1.1.0"],"@private/secret":["1.0.0"]}"#,
        &[("content-type", "application/json")],
    );
    assert_eq!(status, 200);
    let last = upstream.posts().pop().unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&last.2).unwrap();
    assert!(sent.get("@private/secret").is_none(), "{sent}");

    let (status, _) = post(
        &format!("{}-/npm/v1/security/audits/quick", sluice.url()),
        b"{}",
        &[],
    );
    assert_eq!(status, 410, "upstream's 410 is relayed");

    upstream.set_down(true);
    let (status, body) = post(
        &format!("{}-/npm/v1/security/advisories/bulk", sluice.url()),
        b"{}",
        &[("content-type", "application/json")],
    );
    assert_eq!(status, 503);
    assert!(body.contains("\"error\""), "{body}");
}

#[test]
fn signing_keys_are_relayed_and_cached_and_credentials_never_go_upstream() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "top\nright\nleft\n", "");
    for _ in 0..3 {
        let (status, keys) = sluice.get_json("/-/npm/v1/keys");
        assert_eq!(status, 200);
        assert_eq!(keys["keys"][0]["keyid"], "SHA256:fake");
    }
    assert_eq!(upstream.count("/-/npm/v1/keys"), 1);
    let (status, _, _) = sluice.get("/top", &[("authorization", "Bearer secret-token")]);
    assert_eq!(status, 200);
    assert_eq!(upstream.authorized(), 0);
    // dist.integrity is never altered.
    let (_, doc) = sluice.get_json("/left");
    let upstream_doc = upstream.packument("left").unwrap();
    assert_eq!(
        doc["versions"]["1.1.0"]["dist"]["integrity"],
        upstream_doc["versions"]["1.1.0"]["dist"]["integrity"]
    );
}

#[test]
fn search_view_and_conditional_requests() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "top\nright\nleft\n", "");
    let project = Project::new();
    project.install(&sluice.url(), &["top"]);
    let (status, found) = sluice.get_json("/-/v1/search?text=summit&size=5");
    assert_eq!(status, 200);
    assert_eq!(found["objects"][0]["package"]["name"], "top");
    assert_eq!(
        found["objects"][0]["package"]["description"],
        "the top of the tree"
    );
    assert_eq!(found["total"], 1);
    let out = project.npm(&sluice.url(), &["search", "summit"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("top"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // X-Cache-Status on packuments and tarballs.
    let (_, headers, _) = sluice.get("/top/-/top-3.0.0.tgz", &[]);
    assert_eq!(headers["x-cache-status"], "HIT");
    let (_, headers, _) = sluice.get("/top", &[]);
    assert_eq!(headers["x-cache-status"], "HIT");
    // If-Modified-Since → 304.
    let modified = headers["last-modified"].to_str().unwrap().to_string();
    let (status, _, body) = sluice.get("/top", &[("if-modified-since", &modified)]);
    assert_eq!(status, 304);
    assert!(body.is_empty());
    let (status, _, _) = sluice.get(
        "/top",
        &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")],
    );
    assert_eq!(status, 200);
    // HEAD: headers with the length, no body.
    let addr = sluice.server.as_ref().unwrap().addr;
    let answer = support::raw_request(
        addr,
        "HEAD /top/-/top-3.0.0.tgz HTTP/1.1\r\nhost: x\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let tarball_len = upstream.tarball("top", "3.0.0").len();
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("content-length: {tarball_len}")),
        "{answer}"
    );
}

#[test]
fn metrics_and_the_status_page_show_what_happened() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "top\nright\nleft\n", "");
    let project = Project::new();
    project.install(&sluice.url(), &["top"]);
    let (status, _, body) = sluice.get("/-/metrics", &[]);
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    for needle in [
        "sluice_requests_total{route=\"packument\",status=\"200\",cache=\"MISS\"}",
        "sluice_requests_total{route=\"tarball\",status=\"200\",cache=\"MISS\"}",
        "sluice_upstream_requests_total ",
        "sluice_hot_cache_bytes ",
        "sluice_store_bytes ",
        "sluice_whitelist_entries 3",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let hot: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sluice_hot_cache_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(hot > 0 && hot <= 64 << 20, "hot cache holds {hot} bytes");
    let (status, _, page) = sluice.get("/-/sluice/", &[]);
    assert_eq!(status, 200);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("<td id=\"mode\">whitelist</td>"), "{page}");
    assert!(page.contains("<td>top</td>"), "{page}");

    // The page as a browser shows it (Debian's chromium, headless), when installed.
    if Command::new("chromium").arg("--version").output().is_err() {
        support::cannot_run("chromium is not installed (scripts/setup --tests installs it)");
        return;
    }
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{}-/sluice/", sluice.url()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<h1>sluice</h1>"),
        "{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dom.contains("whitelist entries"), "{dom}");
    assert!(
        dom.contains("<td>3</td>") || dom.contains(">3</td>"),
        "{dom}"
    );
    assert!(dom.contains("<td>top</td>"), "{dom}");
}

#[test]
fn verify_finds_and_drops_a_corrupt_tarball_which_is_then_refetched() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "top\nright\nleft\n", "");
    let (status, _, _) = sluice.get("/left/-/left-1.0.0.tgz", &[]);
    assert_eq!(status, 200);
    let dir = sluice.stop();
    // Flip a byte of every stored tarball-sized content file.
    let tarball = upstream.tarball("left", "1.0.0");
    let mut flipped = 0;
    let files = support::paths_under(&dir.path().join("data/content-v2"));
    for path in files.into_iter().filter(|p| p.is_file()) {
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes == tarball {
            bytes[10] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
            flipped += 1;
        }
    }
    assert_eq!(flipped, 1);
    let out = support::sluice_cli(&dir.path().join("sluice.toml"), &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("corrupt, removed: tarball:left/left-1.0.0.tgz"),
        "{stdout}"
    );
    let again = support::sluice_cli(&dir.path().join("sluice.toml"), &["verify"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let sluice = Sluice::start_in(dir, &upstream, "");
    let (status, _, bytes) = sluice.get("/left/-/left-1.0.0.tgz", &[]);
    assert_eq!(status, 200);
    assert_eq!(bytes, tarball);
}

#[test]
fn credentials_in_the_upstream_url_never_show_in_status_logs_or_check() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let password = "s3cret-Pa55";
    let registry = upstream
        .url()
        .replacen("http://", &format!("http://deploy:{password}@"), 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("whitelist"), "left\n").unwrap();
    let dir = Sluice::start_with_registry(dir, &registry, "").stop();
    let config = dir.path().join("sluice.toml");
    assert!(std::fs::read_to_string(&config).unwrap().contains(password));

    // The server, logging at info (the start-up line names the upstream) to a file.
    let log_path = dir.path().join("serve.log");
    let addr = listen_addr(&config);
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(dir.path().join("serve.out")).unwrap())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(eventually(10, || TcpStream::connect(addr).is_ok()));
    let url = format!("http://{addr}/");
    let get = |path: &str| {
        let (status, _, body) = support::http_get(&format!("{url}{path}"), &[]);
        (status, String::from_utf8_lossy(&body).to_string())
    };
    // Upstream is asked with the credentials, for the document and for its tarball.
    let (status, _) = get("left");
    assert_eq!(status, 200);
    let (status, _) = get("left/-/left-1.0.0.tgz");
    assert_eq!(status, 200);
    assert!(upstream.total_requests() >= 2);
    assert_eq!(
        upstream.authorized(),
        upstream.total_requests(),
        "every upstream request carries the URL's credentials"
    );

    let (status, json) = get("-/sluice/status");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let shown = json["upstream"].as_str().unwrap().to_string();
    assert!(
        !shown.contains(password) && !shown.contains("deploy"),
        "{shown}"
    );
    assert!(
        shown.contains(&upstream.url()[7..]),
        "the host is still shown: {shown}"
    );
    let (status, page) = get("-/sluice/");
    assert_eq!(status, 200);
    assert!(!page.contains(password), "{page}");
    assert!(page.contains(&upstream.url()[7..]), "{page}");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(eventually(30, || child.try_wait().unwrap().is_some()));
    let log = std::fs::read_to_string(&log_path).unwrap()
        + &std::fs::read_to_string(dir.path().join("serve.out")).unwrap();
    assert!(log.contains("sluice serving"), "{log}");
    assert!(!log.contains(password), "{log}");

    // `sluice check` prints the effective configuration.
    let out = support::sluice_cli(&config, &["check"]);
    assert!(out.status.success());
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(printed.contains("registry = "), "{printed}");
    assert!(!printed.contains(password), "{printed}");

    // A configuration error that quotes the URL does not quote the password.
    let text = std::fs::read_to_string(&config).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replace(&registry, &format!("{registry}?token=1")),
    )
    .unwrap();
    let out = support::sluice_cli(&bad, &["check"]);
    assert!(!out.status.success());
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(printed.contains("query"), "{printed}");
    assert!(!printed.contains(password), "{printed}");
}
