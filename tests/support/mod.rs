//! Test support: the fake registry, an in-process sluice, and the real npm client.
#![allow(unused_imports)]
#![allow(dead_code)]

pub mod browser;
pub mod fake;
pub mod faults;
pub mod process;
pub mod publishing;
pub mod seaweed;
pub mod terminal;
pub mod tls;
pub mod upstream_faults;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use fake::{FakeRegistry, Faults};
use sluice::config::Config;
use sluice::server::{free_port, spawn_on, Running};
use sluice::store::Faulty;

/// A sluice started in this process against a fake registry, with its own folder.
pub struct Sluice {
    pub dir: tempfile::TempDir,
    pub server: Option<Running>,
    pub config_path: PathBuf,
    /// The store the server runs on, wrapped so a test can inject faults.
    pub store: std::sync::Arc<Faulty>,
}

impl Sluice {
    /// Start sluice with the configuration `extra` (TOML sections) added to the defaults:
    /// upstream = the fake registry, a free port, the store and whitelist in a temp folder.
    pub fn start(upstream: &FakeRegistry, whitelist: &str, extra: &str) -> Sluice {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("whitelist"), whitelist).unwrap();
        Self::start_in(dir, upstream, extra)
    }

    /// Start with an existing folder (keeps its store and whitelist).
    pub fn start_in(dir: tempfile::TempDir, upstream: &FakeRegistry, extra: &str) -> Sluice {
        Self::start_with_registry(dir, &upstream.url(), extra)
    }

    pub fn start_with_registry(dir: tempfile::TempDir, registry: &str, extra: &str) -> Sluice {
        let config_path = dir.path().join("sluice.toml");
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port().unwrap();
            let text = config_text(port, registry, extra);
            std::fs::write(&config_path, &text).unwrap();
            let config = Config::load_file(&config_path).unwrap();
            let store = std::sync::Arc::new(Faulty::new(sluice::store::open(&config).unwrap()));
            match spawn_on(config, store.clone()) {
                Ok(server) => {
                    return Sluice {
                        dir,
                        server: Some(server),
                        config_path,
                        store,
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        panic!("sluice did not start: {last_error:?}");
    }

    pub fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }

    pub fn whitelist_path(&self) -> PathBuf {
        self.dir.path().join("whitelist")
    }

    pub fn whitelist(&self) -> String {
        std::fs::read_to_string(self.whitelist_path()).unwrap()
    }

    /// Stop the server, keeping its folder.
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        self.dir
    }

    /// GET a path with headers; returns status, headers and body.
    pub fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        http_get(
            &format!("{}{}", self.url(), path.trim_start_matches('/')),
            headers,
        )
    }

    /// GET a path and parse the body as JSON.
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = self.get(path, &[]);
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }
}

fn config_text(port: u16, registry: &str, extra: &str) -> String {
    // Sections in `extra` replace the defaults of the same name.
    let mut sections = vec![
        ("[server]", format!("listen = \"127.0.0.1:{port}\"\n")),
        (
            "[upstream]",
            format!("registry = \"{registry}\"\ntimeout = \"5s\"\n"),
        ),
        (
            "[storage]",
            "dir = \"data\"\nmemory = \"64MiB\"\n".to_string(),
        ),
        ("[policy]", "whitelist = \"whitelist\"\n".to_string()),
    ];
    let mut rest = String::new();
    let mut current: Option<usize> = None;
    for line in extra.lines() {
        let trimmed = line.trim();
        if let Some(i) = sections.iter().position(|(h, _)| *h == trimmed) {
            current = Some(i);
            continue;
        }
        if trimmed.starts_with('[') {
            current = None;
        }
        match current {
            Some(i) => {
                // A key given again replaces the default.
                if let Some((key, _)) = trimmed.split_once('=') {
                    let key = key.trim();
                    sections[i].1 = sections[i]
                        .1
                        .lines()
                        .filter(|l| l.split_once('=').map(|(k, _)| k.trim()) != Some(key))
                        .map(|l| format!("{l}\n"))
                        .collect();
                }
                sections[i].1.push_str(line);
                sections[i].1.push('\n');
            }
            None => {
                rest.push_str(line);
                rest.push('\n');
            }
        }
    }
    let mut text = String::new();
    for (header, body) in sections {
        text.push_str(&format!("{header}\n{body}\n"));
    }
    text.push_str(&rest);
    text
}

/// A blocking GET.
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    sluice::crypto::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder().no_gzip().build().unwrap();
        let mut request = client.get(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap().to_vec();
        (status, headers, body)
    })
}

/// A fresh npm project folder with an empty npm cache and user config.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// A project whose npm user config carries `token` for the registry at `url`.
    pub fn logged_in(url: &str, token: &str) -> Project {
        let project = Project::new();
        let host = url.trim_start_matches("http:").to_string();
        std::fs::write(
            project.path().join(".npmrc-empty"),
            format!("{host}:_authToken={token}\n"),
        )
        .unwrap();
        project
    }

    /// Make this folder the package `@acme/widget@version` (a main file saying its version).
    pub fn acme_widget(&self, version: &str) {
        let manifest = serde_json::json!({
            "name": "@acme/widget", "version": version, "main": "index.js", "license": "MIT",
            "files": ["index.js"],
        });
        std::fs::write(self.path().join("package.json"), manifest.to_string()).unwrap();
        std::fs::write(
            self.path().join("index.js"),
            format!("module.exports = \"@acme/widget@{version}\";\n"),
        )
        .unwrap();
    }

    /// Run npm against `registry`; its stdout, or a panic with all it said.
    pub fn npm_ok(&self, registry: &str, args: &[&str]) -> String {
        let out = self.npm(registry, args);
        assert!(
            out.status.success(),
            "npm {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name":"app","version":"1.0.0","private":true}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join(".npmrc-empty"), "").unwrap();
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run npm with `args` against `registry`, with this project's own cache.
    pub fn npm(&self, registry: &str, args: &[&str]) -> Output {
        self.npm_command(registry, args)
            .output()
            .expect("npm runs (install Node.js and npm)")
    }

    /// The command running npm with `args` against `registry`, with this project's own cache
    /// and user config.
    pub fn npm_command(&self, registry: &str, args: &[&str]) -> Command {
        let cache = self.dir.path().join(".npm-cache");
        let mut command = Command::new("npm");
        command
            .args(args)
            .arg("--registry")
            .arg(registry)
            .arg("--cache")
            .arg(&cache)
            .args([
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
                "--fetch-retries=0",
            ])
            .env(
                "npm_config_userconfig",
                self.dir.path().join(".npmrc-empty"),
            )
            .env_remove("npm_config_registry")
            .current_dir(self.dir.path());
        command
    }

    /// `npm install <packages>`; panics with npm's output when it fails.
    pub fn install(&self, registry: &str, packages: &[&str]) {
        let mut args = vec!["install"];
        args.extend_from_slice(packages);
        let out = self.npm(registry, &args);
        assert!(
            out.status.success(),
            "npm install {packages:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What `require(name)` gives in this project (our fake packages export "name@version").
    pub fn require(&self, name: &str) -> String {
        let out = Command::new("node")
            .arg("-e")
            .arg(format!(
                "process.stdout.write(String(require({})))",
                serde_json::json!(name)
            ))
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "require({name}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Wait until `check` holds, up to `secs` seconds.
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    check()
}

/// Send raw bytes on a new connection and read one answer (head and content-length body).
pub fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).to_string(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Everything a new connection sends back for raw bytes, until it closes or is quiet for 1.5 s
/// (for requests that may get any number of answers).
pub fn read_all(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(1500)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// How many HTTP/1.1 answers `text` holds.
pub fn answers(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

/// Publish `left` 1.0.0 and 1.1.0, and `right` 2.0.0 depending on `left@^1.0.0`.
pub fn tree(upstream: &FakeRegistry) {
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("left", "1.1.0", &[]);
    upstream.publish("right", "2.0.0", &[("left", "^1.0.0")]);
}

/// `len` letters that gzip cannot shrink much (xorshift).
pub fn noise(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// Run the `sluice` binary with `args` and `--config config`; logs at warn.
pub fn sluice_cli(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// `dir` and every folder and file below it.
pub fn paths_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(paths_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A child process killed and reaped when dropped, so a failing test leaves no server behind
/// (one holding the test's output pipe open would hang the run).
pub struct Reaped(pub std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test that cannot run here (a tool is missing): says so, and fails under CI (`CI` set), where
/// every test must run.
pub fn cannot_run(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("this test cannot run, and CI is set: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// A client the tests drive, under target/tools/node_modules (`scripts/setup --tests`), or
/// `None` after saying it cannot run (a failure under CI).
pub fn tool(relative: &str) -> Option<PathBuf> {
    tool_in(&format!("node_modules/{relative}"))
}

/// A file under target/tools (`scripts/setup --tests` installs the clients there: Node 20's in
/// `node_modules`, Node 24 with npm 12 and pnpm 11 in `node24`, pnpm 12 in `pnpm12`, deno and
/// the conformance battery in `e2e`), or `None` after saying it cannot run (a failure under CI).
pub fn tool_in(relative: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools")
        .join(relative);
    if path.exists() {
        Some(path)
    } else {
        cannot_run(&format!(
            "{} is not installed (scripts/setup --tests installs it)",
            path.display()
        ));
        None
    }
}

/// `$PATH` with Node 24 (the registry's `node` package) and its npm 12 and pnpm 11 first, for
/// the clients that need Node ≥ 22; `None` after saying it cannot run when they are missing.
pub fn node24_path() -> Option<std::ffi::OsString> {
    let node = tool_in("node24/node_modules/node/bin/node")?;
    let bins = tool_in("node24/node_modules/.bin")?;
    let mut dirs = vec![node.parent()?.to_path_buf(), bins];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).ok()
}
