//! Every client: npm, pnpm, yarn 1, yarn 4 and bun install the same project through sluice; the
//! current ones (npm 12 and pnpm 11 on Node 24, pnpm 12, yarn 4, bun, deno) also log in,
//! publish a private package, install and install frozen from their lockfile, over plain HTTP
//! and over HTTPS.
//!
//! The clients other than the machine's npm are installed by `scripts/setup --tests` into
//! `target/tools` (or the folder named by `$SLUICE_TOOLS`); a client that is not there is
//! reported and skipped (a failure under CI).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{FakeRegistry, Project, Sluice};

fn tools() -> PathBuf {
    std::env::var_os("SLUICE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools"))
        .join("node_modules")
}

/// The client's entry script, or `None` (skip) when it is not installed.
fn client(relative: &str) -> Option<PathBuf> {
    let path = tools().join(relative);
    if path.exists() {
        Some(path)
    } else {
        support::cannot_run(&format!(
            "{} is not installed (scripts/setup --tests installs it)",
            path.display()
        ));
        None
    }
}

fn project_tree(upstream: &FakeRegistry) {
    upstream.publish("left", "1.0.0", &[]);
    upstream.publish("left", "1.1.0", &[]);
    upstream.publish("right", "2.0.0", &[("left", "^1.0.0")]);
    upstream.publish("top", "3.0.0", &[("left", "~1.1.0"), ("right", "^2")]);
    upstream.publish("@corp/util", "0.1.0", &[("left", "1")]);
}

/// A project depending on `top` and `@corp/util`, ready for any client.
fn project(registry: &str) -> Project {
    let project = Project::new();
    std::fs::write(
        project.path().join("package.json"),
        r#"{"name":"app","version":"1.0.0","private":true,"dependencies":{"top":"^3.0.0","@corp/util":"^0.1.0"}}"#,
    )
    .unwrap();
    std::fs::write(
        project.path().join(".npmrc"),
        format!("registry={registry}\n"),
    )
    .unwrap();
    project
}

fn check(project: &Project, output: std::process::Output, client: &str) {
    assert!(
        output.status.success(),
        "{client} install failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(project.require("top"), "top@3.0.0", "{client}");
    assert_eq!(
        project.require("@corp/util"),
        "@corp/util@0.1.0",
        "{client}"
    );
}

fn start() -> (FakeRegistry, Sluice) {
    let upstream = FakeRegistry::start();
    project_tree(&upstream);
    let sluice = Sluice::start(&upstream, "top\nright\nleft\n@corp/*\n", "");
    (upstream, sluice)
}

#[test]
fn npm_installs_the_project() {
    let (_upstream, sluice) = start();
    let project = project(&sluice.url());
    let out = project.npm(&sluice.url(), &["install"]);
    check(&project, out, "npm");
    // npm view, dist-tag ls and ping work too.
    let out = project.npm(&sluice.url(), &["view", "top", "version"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3.0.0");
    let out = project.npm(&sluice.url(), &["dist-tag", "ls", "left"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("latest: 1.1.0"));
    let out = project.npm(&sluice.url(), &["ping"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = project.npm(&sluice.url(), &["outdated"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pnpm_installs_the_project() {
    let Some(pnpm) = client("pnpm/bin/pnpm.cjs") else {
        return;
    };
    let (_upstream, sluice) = start();
    let project = project(&sluice.url());
    let out = Command::new("node")
        .arg(pnpm)
        .args(["install", "--registry", &sluice.url()])
        .arg("--store-dir")
        .arg(project.path().join(".pnpm-store"))
        .arg("--cache-dir")
        .arg(project.path().join(".pnpm-cache"))
        .env("npm_config_userconfig", project.path().join(".npmrc-empty"))
        .env("CI", "1")
        .current_dir(project.path())
        .output()
        .unwrap();
    check(&project, out, "pnpm");
}

#[test]
fn yarn_classic_installs_the_project() {
    let Some(yarn) = client("yarn/bin/yarn.js") else {
        return;
    };
    let (_upstream, sluice) = start();
    let project = project(&sluice.url());
    let out = Command::new("node")
        .arg(yarn)
        .args([
            "install",
            "--non-interactive",
            "--no-lockfile",
            "--registry",
            &sluice.url(),
        ])
        .arg("--cache-folder")
        .arg(project.path().join(".yarn-cache"))
        .env("YARN_IGNORE_PATH", "1")
        .current_dir(project.path())
        .output()
        .unwrap();
    check(&project, out, "yarn 1");
}

#[test]
fn yarn_berry_installs_the_project() {
    let Some(yarn) = client("@yarnpkg/cli-dist/bin/yarn.js") else {
        return;
    };
    let (_upstream, sluice) = start();
    let project = project(&sluice.url());
    std::fs::write(
        project.path().join(".yarnrc.yml"),
        format!(
            "npmRegistryServer: \"{}\"\nunsafeHttpWhitelist:\n  - \"127.0.0.1\"\nnodeLinker: node-modules\nenableGlobalCache: false\nenableTelemetry: false\nenableImmutableInstalls: false\n",
            sluice.url().trim_end_matches('/')
        ),
    )
    .unwrap();
    std::fs::write(project.path().join("yarn.lock"), "").unwrap();
    let out = Command::new("node")
        .arg(yarn)
        .arg("install")
        .env("YARN_IGNORE_PATH", "1")
        .env("YARN_ENABLE_IMMUTABLE_INSTALLS", "false")
        .env("HOME", project.path())
        .current_dir(project.path())
        .output()
        .unwrap();
    check(&project, out, "yarn 4");
}

#[test]
fn bun_installs_the_project() {
    let Some(bun) = client("bun/bin/bun.exe") else {
        return;
    };
    let (_upstream, sluice) = start();
    let project = project(&sluice.url());
    std::fs::write(
        project.path().join("bunfig.toml"),
        format!("[install]\nregistry = \"{}\"\n", sluice.url()),
    )
    .unwrap();
    let out = Command::new(bun)
        .args(["install", "--no-save"])
        .env("BUN_INSTALL_CACHE_DIR", project.path().join(".bun-cache"))
        .env("HOME", project.path())
        .current_dir(project.path())
        .output()
        .unwrap();
    check(&project, out, "bun");
}

// ---- The current clients: login, publish, install and frozen install, HTTP and HTTPS ----

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

/// A sluice for one client's run: users may sign up, `@acme` is published here, the project
/// tree is mirrored; plain HTTP, or HTTPS with a CA of its own.
struct Registry {
    _upstream: FakeRegistry,
    sluice: Sluice,
    url: String,
    ca: Option<PathBuf>,
    _certs: tempfile::TempDir,
}

impl Registry {
    fn start(tls: bool) -> Registry {
        let upstream = FakeRegistry::start();
        project_tree(&upstream);
        let certs = tempfile::tempdir().unwrap();
        // The clients' login prompts are what these tests drive (npm and pnpm try the web
        // login first and fall back to them when it is not offered; the web login is
        // tests/console.rs's).
        let mut extra = "[auth]\nusers = \"users\"\nadduser = true\nweb_login = false\n\n\
                         [publish]\nscopes = [\"@acme\"]\n"
            .to_string();
        let mut ca = None;
        if tls {
            let (cert, key) = support::tls::certificate(certs.path(), "clients");
            extra.push_str(&format!(
                "\n[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                key.display()
            ));
            ca = Some(support::tls::ca_of(&cert));
        }
        let sluice = Sluice::start(&upstream, "top\nright\nleft\n@corp/*\n", &extra);
        let url = if tls {
            sluice.url().replacen("http://", "https://", 1)
        } else {
            sluice.url()
        };
        Registry {
            _upstream: upstream,
            sluice,
            url,
            ca,
            _certs: certs,
        }
    }

    /// `//127.0.0.1:PORT/`, the key npm-style configs hold a token under.
    fn nerf(&self) -> String {
        self.url
            .trim_start_matches("https:")
            .trim_start_matches("http:")
            .to_string()
    }

    /// An HTTP client trusting this registry's CA.
    fn http(&self) -> reqwest::Client {
        sluice::crypto::install_crypto_provider();
        let mut client = reqwest::Client::builder();
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).unwrap();
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        client.build().unwrap()
    }

    /// GET `path` as JSON.
    fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let response = self
                .http()
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or_default())
        })
    }

    /// A user's token, signed up as `npm adduser` does (for clients with no login of their own).
    fn sign_up(&self, name: &str) -> String {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = self.http();
        let body: serde_json::Value = runtime.block_on(async {
            client
                .put(format!("{}-/user/org.couchdb.user:{name}", self.url))
                .json(&serde_json::json!({
                    "_id": format!("org.couchdb.user:{name}"), "name": name,
                    "password": "correct horse", "type": "user", "roles": [],
                }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        body["token"].as_str().unwrap().to_string()
    }
}

/// One client: how to start it, and the environment it runs in (its own home).
struct Client {
    name: &'static str,
    program: PathBuf,
    prefix: Vec<PathBuf>,
    path: Option<OsString>,
    home: tempfile::TempDir,
    /// `NODE_EXTRA_CA_CERTS` for the runs that need it.
    extra_ca: Mutex<Option<PathBuf>>,
}

impl Client {
    fn new(
        name: &'static str,
        program: PathBuf,
        prefix: Vec<PathBuf>,
        node24: bool,
    ) -> Option<Client> {
        let path = if node24 {
            Some(support::node24_path()?)
        } else {
            None
        };
        Some(Client {
            name,
            program,
            prefix,
            path,
            home: tempfile::tempdir().unwrap(),
            extra_ca: Mutex::new(None),
        })
    }

    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.prefix).args(args).current_dir(dir);
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
            .env("npm_config_cache", home.join(".npm"))
            .env("BUN_INSTALL_CACHE_DIR", home.join(".bun-cache"))
            .env("DENO_DIR", home.join(".deno"))
            .env("YARN_IGNORE_PATH", "1")
            .env("YARN_ENABLE_TELEMETRY", "0")
            .env_remove("npm_config_registry")
            .env_remove("CI");
        match &*self.extra_ca.lock().unwrap() {
            Some(ca) => command.env("NODE_EXTRA_CA_CERTS", ca),
            None => command.env_remove("NODE_EXTRA_CA_CERTS"),
        };
        command
    }

    /// Run it; panics with its output unless it succeeds.
    fn ok(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self
            .command(dir, args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run it on a terminal (`script` from util-linux gives it one: npm's and pnpm's logins
    /// prompt only there), answering each prompt once it has appeared.
    fn on_terminal(&self, dir: &Path, args: &[&str], answers: &[(&str, &str)]) -> String {
        let mut line = shell_quote(&self.program);
        for arg in self.prefix.iter().map(|p| p.to_string_lossy().to_string()) {
            line.push(' ');
            line.push_str(&shell_quote(Path::new(&arg)));
        }
        for arg in args {
            line.push(' ');
            line.push_str(&shell_quote(Path::new(arg)));
        }
        let template = self.command(dir, &[]);
        let mut command = Command::new("script");
        command.args(["-qefc", &line, "/dev/null"]).current_dir(dir);
        for (key, value) in template.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stdout.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        let text =
            |seen: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
        let mut stdin = child.stdin.take().unwrap();
        let mut from = 0;
        for (prompt, answer) in answers {
            let appeared = support::eventually(120, || text(&seen)[from..].contains(prompt));
            assert!(
                appeared,
                "{}: no prompt {prompt:?}:\n{}",
                self.name,
                text(&seen)
            );
            let now = text(&seen);
            from = from + now[from..].find(prompt).unwrap() + prompt.len();
            stdin.write_all(format!("{answer}\r").as_bytes()).unwrap();
            stdin.flush().unwrap();
        }
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let output = text(&seen);
        assert!(status.success(), "{} {args:?} failed:\n{output}", self.name);
        output
    }
}

fn shell_quote(arg: &Path) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

/// A package folder for `@acme/<slug>@1.0.0`, to publish.
fn acme_package(slug: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("@acme/{slug}");
    std::fs::write(
        dir.path().join("package.json"),
        serde_json::json!({"name": name, "version": "1.0.0", "main": "index.js", "license": "MIT"})
            .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("index.js"),
        format!(
            "module.exports = {};\n",
            serde_json::json!(format!("{name}@1.0.0"))
        ),
    )
    .unwrap();
    (dir, name)
}

/// The project of [`project`], depending on the freshly published `own` package too.
fn project_with(registry: &Registry, own: &str) -> Project {
    let project = project(&registry.url);
    std::fs::write(
        project.path().join("package.json"),
        serde_json::json!({"name": "app", "version": "1.0.0", "private": true, "dependencies": {
            "top": "^3.0.0", "@corp/util": "^0.1.0", own: "^1.0.0"}})
        .to_string(),
    )
    .unwrap();
    project
}

fn check_tree(project: &Project, own: &str, what: &str) {
    assert_eq!(project.require("top"), "top@3.0.0", "{what}");
    assert_eq!(project.require("@corp/util"), "@corp/util@0.1.0", "{what}");
    assert_eq!(project.require(own), format!("{own}@1.0.0"), "{what}");
}

/// Install, then remove node_modules and install frozen from the lockfile the first wrote.
fn install_twice(
    client: &Client,
    project: &Project,
    own: &str,
    install: &[&str],
    frozen: &[&str],
    env: &[(&str, &str)],
) {
    client.ok(project.path(), install, env);
    check_tree(project, own, &format!("{} install", client.name));
    std::fs::remove_dir_all(project.path().join("node_modules")).unwrap();
    client.ok(project.path(), frozen, env);
    check_tree(project, own, &format!("{} frozen install", client.name));
}

/// The user config npm, pnpm and deno read: the registry, its CA, and a token if given.
fn npmrc(registry: &Registry, token: Option<&str>) -> String {
    let mut text = format!("registry={}\n", registry.url);
    if let Some(ca) = &registry.ca {
        text.push_str(&format!("cafile={}\n", ca.display()));
    }
    if let Some(token) = token {
        text.push_str(&format!("{}:_authToken={token}\n", registry.nerf()));
    }
    text
}

/// npm 12 (Node 24) or pnpm 11/12: log in on a terminal, publish, install, `frozen` install.
fn npm_style(client: &Client, tls: bool, login: &[&str], install: &[&str], frozen: &[&str]) {
    let registry = Registry::start(tls);
    std::fs::write(client.home.path().join(".npmrc"), npmrc(&registry, None)).unwrap();
    if client.name == "pnpm 11" {
        // pnpm 11 takes `cafile` from neither ~/.npmrc nor its own auth.ini for its login and
        // publish requests ("unable to verify the first certificate"); Node's own setting for
        // an extra CA is what works for it.
        *client.extra_ca.lock().unwrap() = registry.ca.clone();
    }
    if client.name.starts_with("pnpm") {
        // pnpm 11 reads its user settings (cafile too) from here, where `pnpm config set`
        // writes them, and no longer from ~/.npmrc.
        let config = client.home.path().join(".config/pnpm");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("auth.ini"), npmrc(&registry, None)).unwrap();
    }
    let user = format!("{}-user", client.name.replace([' ', '.'], "-"));
    let mut args = login.to_vec();
    args.extend(["--registry", &registry.url]);
    let mut answers = vec![("Username", user.as_str()), ("Password", "correct horse")];
    if client.name.starts_with("pnpm") {
        answers.push(("Email", "dev@acme.example"));
    }
    let said = client.on_terminal(client.home.path(), &args, &answers);
    assert!(said.contains("Logged in"), "{said}");
    let slug = format!("{}-lib", client.name.replace([' ', '.'], "-"));
    let (package, own) = acme_package(&slug);
    client.ok(
        package.path(),
        &["publish", "--registry", &registry.url],
        &[],
    );
    let (status, doc) = registry.get_json(&own.replace('/', "%2f"));
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["versions"]["1.0.0"]["_npmUser"]["name"], user.as_str());
    let project = project_with(&registry, &own);
    install_twice(client, &project, &own, install, frozen, &[]);
}

fn node24_client(name: &'static str, bin: &str) -> Option<Client> {
    let program = support::tool_in(bin)?;
    Client::new(name, program, Vec::new(), true)
}

#[test]
fn npm_12_on_node_24_logs_in_publishes_and_installs_over_http_and_https() {
    let Some(npm) = node24_client("npm 12", "node24/node_modules/.bin/npm") else {
        return;
    };
    let version = npm.ok(npm.home.path(), &["--version"], &[]);
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("12."));
    let quiet = ["--no-audit", "--no-fund"];
    for tls in [false, true] {
        npm_style(
            &npm,
            tls,
            &["login", "--auth-type=legacy"],
            &[&["install"], &quiet[..]].concat(),
            &[&["ci"], &quiet[..]].concat(),
        );
    }
}

fn pnpm_runs(pnpm: &Client) {
    let store = pnpm.home.path().join(".pnpm-store");
    let store = store.to_str().unwrap();
    for tls in [false, true] {
        npm_style(
            pnpm,
            tls,
            &["login"],
            // The package published a moment ago is younger than pnpm's default
            // minimumReleaseAge (a day); the project allows it.
            &[
                "install",
                "--no-frozen-lockfile",
                "--store-dir",
                store,
                "--config.minimum-release-age=0",
            ],
            &[
                "install",
                "--frozen-lockfile",
                "--store-dir",
                store,
                "--config.minimum-release-age=0",
            ],
        );
    }
}

#[test]
fn pnpm_11_on_node_24_logs_in_publishes_and_installs_over_http_and_https() {
    if let Some(pnpm) = node24_client("pnpm 11", "node24/node_modules/.bin/pnpm") {
        pnpm_runs(&pnpm);
    }
}

#[test]
fn pnpm_12_self_contained_logs_in_publishes_and_installs_over_http_and_https() {
    let Some(program) = support::tool_in("pnpm12/node_modules/.bin/pnpm") else {
        return;
    };
    // Its own runtime: nothing but the machine's PATH.
    let pnpm = Client::new("pnpm 12", program, Vec::new(), false).unwrap();
    pnpm_runs(&pnpm);
}

/// `sluice_packuments_served_total{form="…"}` from /-/metrics.
fn packuments_served(registry: &Registry, form: &str) -> u64 {
    let (_, _, body) = registry.sluice.get("/-/metrics", &[]);
    let text = String::from_utf8(body).unwrap();
    let key = format!("sluice_packuments_served_total{{form=\"{form}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

#[test]
fn pnpm_11_with_its_defaults_asks_for_abbreviated_documents_only() {
    let Some(pnpm) = node24_client("pnpm 11", "node24/node_modules/.bin/pnpm") else {
        return;
    };
    let registry = Registry::start(false);
    let project = project(&registry.url);
    let store = pnpm.home.path().join(".pnpm-store");
    // Its defaults: minimumReleaseAge on (a day), read from each version's `time` in the
    // abbreviated document; the mirrored versions are years old.
    pnpm.ok(
        project.path(),
        &["install", "--store-dir", store.to_str().unwrap()],
        &[],
    );
    check(&project, dummy_output(), "pnpm 11");
    assert!(packuments_served(&registry, "abbreviated") >= 4);
    assert_eq!(
        packuments_served(&registry, "full"),
        0,
        "pnpm 11 asked for a whole document"
    );
}

/// A successful output, for [`check`] after a run [`Client::ok`] already checked.
fn dummy_output() -> std::process::Output {
    Command::new("true").output().unwrap()
}

#[test]
fn yarn_4_logs_in_publishes_and_installs_over_http_and_https() {
    let Some(yarn) = support::tool("@yarnpkg/cli-dist/bin/yarn.js") else {
        return;
    };
    let Some(node) = support::tool_in("node24/node_modules/node/bin/node") else {
        return;
    };
    let yarn = Client::new("yarn 4", node, vec![yarn], true).unwrap();
    for tls in [false, true] {
        let registry = Registry::start(tls);
        let server = registry.url.trim_end_matches('/');
        let trust = match &registry.ca {
            Some(ca) => format!("httpsCaFilePath: \"{}\"\n", ca.display()),
            None => "unsafeHttpWhitelist:\n  - \"127.0.0.1\"\n".to_string(),
        };
        let rc = format!(
            "npmRegistryServer: \"{server}\"\n{trust}nodeLinker: node-modules\n\
             enableGlobalCache: false\nenableTelemetry: false\nnpmMinimalAgeGate: 0\n"
        );
        // The login (credentials from the environment, as yarn takes them off a terminal)
        // saves the token in the home's .yarnrc.yml.
        std::fs::write(yarn.home.path().join(".yarnrc.yml"), &rc).unwrap();
        let user = "yarn-4-user";
        yarn.ok(
            yarn.home.path(),
            &["npm", "login"],
            &[
                ("YARN_IS_TEST_ENV", "1"),
                ("YARN_INJECT_NPM_USER", user),
                ("YARN_INJECT_NPM_PASSWORD", "correct horse"),
            ],
        );
        let saved = std::fs::read_to_string(yarn.home.path().join(".yarnrc.yml")).unwrap();
        assert!(saved.contains("npmAuthToken: sluice_"), "{saved}");
        let (package, own) = acme_package("yarn-4-lib");
        std::fs::write(package.path().join(".yarnrc.yml"), &rc).unwrap();
        std::fs::write(package.path().join("yarn.lock"), "").unwrap();
        yarn.ok(package.path(), &["install"], &[]);
        yarn.ok(package.path(), &["npm", "publish"], &[]);
        let (status, doc) = registry.get_json(&own.replace('/', "%2f"));
        assert_eq!(status, 200, "{doc}");
        assert_eq!(doc["versions"]["1.0.0"]["_npmUser"]["name"], user);
        let project = project_with(&registry, &own);
        std::fs::write(project.path().join(".yarnrc.yml"), &rc).unwrap();
        std::fs::write(project.path().join("yarn.lock"), "").unwrap();
        install_twice(
            &yarn,
            &project,
            &own,
            &["install"],
            &["install", "--immutable"],
            &[],
        );
    }
}

#[test]
fn bun_publishes_and_installs_over_http_and_https() {
    let Some(program) = support::tool("bun/bin/bun.exe") else {
        return;
    };
    let bun = Client::new("bun", program, Vec::new(), false).unwrap();
    for tls in [false, true] {
        let registry = Registry::start(tls);
        // bun has no login: a token made as `npm adduser` makes it, in bunfig.toml.
        let token = registry.sign_up("bun-user");
        let mut bunfig = format!(
            "[install]\nregistry = {{ url = \"{}\", token = \"{token}\" }}\n",
            registry.url
        );
        if let Some(ca) = &registry.ca {
            bunfig.push_str(&format!("cafile = \"{}\"\n", ca.display()));
        }
        let (package, own) = acme_package("bun-lib");
        std::fs::write(package.path().join("bunfig.toml"), &bunfig).unwrap();
        bun.ok(package.path(), &["publish"], &[]);
        let (status, doc) = registry.get_json(&own.replace('/', "%2f"));
        assert_eq!(status, 200, "{doc}");
        assert_eq!(doc["versions"]["1.0.0"]["_npmUser"]["name"], "bun-user");
        let project = project_with(&registry, &own);
        std::fs::write(project.path().join("bunfig.toml"), &bunfig).unwrap();
        install_twice(
            &bun,
            &project,
            &own,
            &["install"],
            &["install", "--frozen-lockfile"],
            &[],
        );
    }
}

#[test]
fn deno_installs_and_installs_frozen_over_http_and_https() {
    let Some(program) = support::tool_in("e2e/node_modules/.bin/deno") else {
        return;
    };
    let deno = Client::new("deno", program, Vec::new(), false).unwrap();
    for tls in [false, true] {
        let registry = Registry::start(tls);
        // deno publishes to JSR only; the private package comes from another user's publish.
        let token = registry.sign_up("deno-user");
        let (package, own) = acme_package("deno-lib");
        let publisher = Project::new();
        std::fs::write(
            publisher.path().join(".npmrc-empty"),
            npmrc(&registry, Some(&token)),
        )
        .unwrap();
        let out = publisher.npm(
            &registry.url,
            &["publish", package.path().to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let project = project_with(&registry, &own);
        std::fs::write(
            project.path().join(".npmrc"),
            npmrc(&registry, Some(&token)),
        )
        .unwrap();
        let ca = registry
            .ca
            .as_ref()
            .map(|c| c.to_str().unwrap().to_string());
        let env: Vec<(&str, &str)> = ca.iter().map(|c| ("DENO_CERT", c.as_str())).collect();
        install_twice(
            &deno,
            &project,
            &own,
            // The private package is minutes old; deno's default minimum age is a day.
            &["install", "--minimum-dependency-age=0"],
            &["install", "--frozen", "--minimum-dependency-age=0"],
            &env,
        );
    }
}
