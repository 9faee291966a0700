//! Private packages: a company's own scope published to sluice and installed from the same
//! URL as mirrored packages, never looked up upstream.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::{FakeRegistry, Project, Sluice};

const PRIVATE: &str = "[policy]\nwhitelist = \"whitelist\"\n\n[auth]\nusers = \"users\"\n\n\
                       [publish]\nscopes = [\"@acme\"]\n";

fn add_user(sluice: &Sluice, name: &str, password: &str) {
    add_user_with(sluice, name, password, &[]);
}

/// `sluice user add NAME --password-stdin` with `extra` arguments (e.g. `--email`).
fn add_user_with(sluice: &Sluice, name: &str, password: &str, extra: &[&str]) {
    support::publishing::user_cli(&sluice.config_path, "add", name, password, extra);
}

/// What npm sends for `npm login --auth-type=legacy`: the token, or the error answer.
fn login(sluice: &Sluice, name: &str, password: &str) -> Result<String, (u16, Value)> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .put(format!("{}-/user/org.couchdb.user:{name}", sluice.url()))
            .json(&json!({
                "_id": format!("org.couchdb.user:{name}"),
                "name": name,
                "password": password,
                "type": "user",
                "roles": [],
                "date": "2026-12-01T00:00:00.000Z",
            }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        match (status, body["token"].as_str()) {
            (201, Some(token)) => Ok(token.to_string()),
            _ => Err((status, body)),
        }
    })
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

#[test]
fn a_private_package_is_published_with_npm_and_installed_beside_mirrored_ones() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    // The same name upstream: dependency confusion must not reach it.
    upstream.publish("@acme/widget", "9.9.9", &[]);
    let sluice = Sluice::start(&upstream, "left\n", PRIVATE);
    add_user_with(
        &sluice,
        "alice",
        "correct horse",
        &["--email", "alice@acme.example"],
    );

    // Logging in: a wrong password and an unknown user are refused; the right one gets a token.
    assert_eq!(login(&sluice, "alice", "wrong").unwrap_err().0, 401);
    // An unknown name gets the very answer a wrong password gets: names cannot be probed.
    let (status, body) = login(&sluice, "mallory", "x").unwrap_err();
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        (status, body),
        login(&sluice, "alice", "wrong").unwrap_err(),
        "an unknown user and a wrong password are told apart"
    );
    let token = login(&sluice, "alice", "correct horse").unwrap();

    let author = logged_in(&sluice, &token);
    assert_eq!(npm_ok(&author, &sluice, &["whoami"]).trim(), "alice");
    // Status lists no private package yet. The listing runs in the background (a scrape
    // never waits for it), and again after a publish on this node (checked below).
    let (_, status) = sluice.get_json("/-/sluice/status");
    assert_eq!(status["private"]["packages"], 0, "{status}");
    package(&author, "1.0.0");
    npm_ok(&author, &sluice, &["publish"]);
    // The same version again: refused.
    let again = author.npm(&sluice.url(), &["publish"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(
        stderr.contains("409") || stderr.contains("cannot publish over"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    package(&author, "1.1.0");
    npm_ok(&author, &sluice, &["publish"]);

    // Installed from the same registry as a mirrored package, by anyone (read = anonymous).
    let user = Project::new();
    user.install(&sluice.url(), &["@acme/widget@1.0.0", "left"]);
    assert_eq!(user.require("@acme/widget"), "@acme/widget@1.0.0");
    assert_eq!(user.require("left"), "left@1.0.0");
    let (status, doc) = sluice.get_json("/@acme%2fwidget");
    assert_eq!(status, 200);
    assert_eq!(doc["dist-tags"]["latest"], "1.1.0");
    assert!(
        doc["versions"].get("9.9.9").is_none(),
        "upstream's version leaked in"
    );
    for link in doc["versions"].as_object().unwrap().values() {
        assert!(link["dist"]["tarball"]
            .as_str()
            .unwrap()
            .starts_with(&sluice.url()));
    }
    assert_eq!(
        upstream.count_prefix("/@acme"),
        0,
        "the private scope was looked up upstream"
    );

    // Listed in status, metrics and search (status once the background listing ended).
    assert!(
        support::eventually(30, || {
            sluice.get_json("/-/sluice/status").1["private"]["packages"] == 1
        }),
        "the publish was never listed"
    );
    let (_, status) = sluice.get_json("/-/sluice/status");
    assert_eq!(status["private"]["packages"], 1, "{status}");
    assert_eq!(status["private"]["names"][0], "@acme/widget", "{status}");
    let (_, _, metrics) = sluice.get("/-/metrics", &[]);
    assert!(
        String::from_utf8_lossy(&metrics).contains("\nsluice_private_packages 1\n"),
        "{}",
        String::from_utf8_lossy(&metrics)
    );
    let (_, found) = sluice.get_json("/-/v1/search?text=widget");
    assert_eq!(
        found["objects"][0]["package"]["name"], "@acme/widget",
        "{found}"
    );

    // dist-tags and deprecation.
    npm_ok(
        &author,
        &sluice,
        &["dist-tag", "add", "@acme/widget@1.0.0", "stable"],
    );
    let tags = npm_ok(&author, &sluice, &["dist-tag", "ls", "@acme/widget"]);
    assert!(tags.contains("stable: 1.0.0"), "{tags}");
    npm_ok(
        &author,
        &sluice,
        &["deprecate", "@acme/widget@1.0.0", "use 1.1"],
    );
    let (_, doc) = sluice.get_json("/@acme%2fwidget");
    assert_eq!(doc["versions"]["1.0.0"]["deprecated"], "use 1.1");
    assert_eq!(doc["dist-tags"]["stable"], "1.0.0");

    // Unpublishing a version inside the window.
    npm_ok(&author, &sluice, &["unpublish", "@acme/widget@1.1.0"]);
    let (_, doc) = sluice.get_json("/@acme%2fwidget");
    assert!(doc["versions"].get("1.1.0").is_none(), "{doc}");
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");

    // Owners: the publisher owns the package; npm owner add|rm change who may write it.
    add_user(&sluice, "bob", "battery staple");
    let owners = npm_ok(&author, &sluice, &["owner", "ls", "@acme/widget"]);
    assert!(
        owners.contains("alice <alice@acme.example>") && !owners.contains("bob"),
        "{owners}"
    );
    let (_, doc) = sluice.get_json("/@acme%2fwidget");
    assert_eq!(
        doc["versions"]["1.0.0"]["_npmUser"],
        json!({ "name": "alice", "email": "alice@acme.example" })
    );
    npm_ok(&author, &sluice, &["owner", "add", "bob", "@acme/widget"]);
    let owners = npm_ok(&author, &sluice, &["owner", "ls", "@acme/widget"]);
    assert!(
        owners.contains("alice <alice@acme.example>") && owners.contains("bob <>"),
        "{owners}"
    );
    let out = author.npm(&sluice.url(), &["owner", "add", "nobody", "@acme/widget"]);
    assert!(!out.status.success(), "an unknown user became an owner");
    npm_ok(&author, &sluice, &["owner", "rm", "bob", "@acme/widget"]);
    let owners = npm_ok(&author, &sluice, &["owner", "ls", "@acme/widget"]);
    assert!(!owners.contains("bob"), "{owners}");
    // bob may publish to @acme ([publish] owners is unset) but is no maintainer of this one.
    let bob = logged_in(&sluice, &login(&sluice, "bob", "battery staple").unwrap());
    package(&bob, "4.0.0");
    let out = bob.npm(&sluice.url(), &["publish"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && stderr.contains("not a maintainer"),
        "{stderr}"
    );
    // Revisions: `?write=true` gives the document with its `_rev`; a stale one is a conflict.
    let (_, doc) = sluice.get_json("/@acme%2fwidget?write=true");
    let rev = doc["_rev"].as_str().unwrap().to_string();
    let change = |rev: &str| json!({ "_id": "@acme/widget", "_rev": rev, "maintainers": [{"name": "alice", "email": ""}] });
    let (status, error) = put(
        &sluice,
        "/@acme%2fwidget/-rev/1-0000000000000000",
        Some(&token),
        &change("1-0000000000000000"),
    );
    assert_eq!(status, 409, "{error}");
    assert!(error.contains("revision"), "{error}");
    let (status, error) = put(
        &sluice,
        &format!("/@acme%2fwidget/-rev/{rev}"),
        Some(&token),
        &change(&rev),
    );
    assert_eq!(status, 200, "{error}");
    let (_, doc) = sluice.get_json("/@acme%2fwidget?write=true");
    assert_ne!(doc["_rev"].as_str().unwrap(), rev, "a write keeps its _rev");
    assert_eq!(
        doc["versions"]["1.0.0"]["version"], "1.0.0",
        "an owner change lost versions"
    );

    // Anonymous publishes and publishes of mirrored names are refused.
    let anonymous = Project::new();
    package(&anonymous, "2.0.0");
    let out = anonymous.npm(&sluice.url(), &["publish"]);
    assert!(!out.status.success());
    // npm itself asks for a login before sending; the registry answers 401 if it is sent.
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("ENEEDAUTH") || stderr.contains("401"),
        "{stderr}"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .put(format!("{}@acme%2fwidget", sluice.url()))
            .json(&json!({"name": "@acme/widget", "versions": {}}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 401);

    // Tokens: listed, a read-only one cannot publish, a revoked one stops working.
    let listed = npm_ok(&author, &sluice, &["token", "list", "--json"]);
    assert!(listed.contains("sluice_"), "{listed}");
    let readonly: Value = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{}-/npm/v1/tokens", sluice.url()))
            .bearer_auth(&token)
            .json(&json!({"password": "correct horse", "readonly": true, "cidr_whitelist": []}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let readonly_token = readonly["token"].as_str().unwrap().to_string();
    let reader = logged_in(&sluice, &readonly_token);
    package(&reader, "3.0.0");
    let out = reader.npm(&sluice.url(), &["publish"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = readonly["key"].as_str().unwrap().to_string();
    npm_ok(&author, &sluice, &["token", "revoke", &key]);
    let out = reader.npm(&sluice.url(), &["whoami"]);
    assert!(!out.status.success());

    // Unpublishing the whole package (inside the window): gone for installs; its versions
    // are never published again, new ones may be.
    npm_ok(&author, &sluice, &["unpublish", "@acme/widget", "--force"]);
    let (status, doc) = sluice.get_json("/@acme%2fwidget");
    assert_eq!(status, 404, "{doc}");
    let out = Project::new().npm(&sluice.url(), &["view", "@acme/widget", "version"]);
    assert!(
        !out.status.success(),
        "an unpublished package still resolves"
    );
    package(&author, "1.0.0");
    let out = author.npm(&sluice.url(), &["publish"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("cannot publish over"), "{stderr}");
    package(&author, "5.0.0");
    npm_ok(&author, &sluice, &["publish"]);
    assert_eq!(
        sluice.get_json("/@acme%2fwidget").1["dist-tags"]["latest"],
        "5.0.0"
    );

    // Logging out revokes the token.
    npm_ok(&author, &sluice, &["logout"]);
    let (status, _, _) = support::http_get(
        &format!("{}-/whoami", sluice.url()),
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(status, 401);
}

#[test]
fn with_read_authenticated_every_request_but_ping_and_login_needs_a_token() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let sluice = Sluice::start(
        &upstream,
        "left\n",
        &PRIVATE.replace(
            "users = \"users\"\n",
            "users = \"users\"\nread = \"authenticated\"\n",
        ),
    );
    add_user(&sluice, "bob", "hunter22");
    let (status, headers, _) = sluice.get("/left", &[]);
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(sluice.get("/-/ping", &[]).0, 200);
    let token = login(&sluice, "bob", "hunter22").unwrap();
    let project = logged_in(&sluice, &token);
    project.install(&sluice.url(), &["left"]);
    assert_eq!(project.require("left"), "left@1.0.0");
    // Basic credentials work too; wrong ones do not.
    let basic = format!("Basic {}", base64_encode("bob:hunter22"));
    assert_eq!(sluice.get("/left", &[("authorization", &basic)]).0, 200);
    let wrong = format!("Basic {}", base64_encode("bob:nope"));
    assert_eq!(sluice.get("/left", &[("authorization", &wrong)]).0, 401);
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn outside_the_unpublish_window_a_version_stays() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(
        &upstream,
        "",
        &PRIVATE.replace(
            "scopes = [\"@acme\"]\n",
            "scopes = [\"@acme\"]\nunpublish = \"0s\"\n",
        ),
    );
    add_user(&sluice, "alice", "correct horse");
    let token = login(&sluice, "alice", "correct horse").unwrap();
    let author = logged_in(&sluice, &token);
    package(&author, "1.0.0");
    npm_ok(&author, &sluice, &["publish"]);
    let out = author.npm(
        &sluice.url(),
        &["unpublish", "@acme/widget@1.0.0", "--force"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("403"), "{stderr}");
    let (_, doc) = sluice.get_json("/@acme%2fwidget");
    assert!(doc["versions"]["1.0.0"].is_object());
}

#[test]
fn pnpm_and_yarn_4_publish_and_tag_private_packages_too() {
    let (Some(pnpm), Some(yarn)) = (
        support::tool("pnpm/bin/pnpm.cjs"),
        support::tool("@yarnpkg/cli-dist/bin/yarn.js"),
    ) else {
        return;
    };
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    add_user(&sluice, "alice", "correct horse");
    let token = login(&sluice, "alice", "correct horse").unwrap();

    // pnpm publish, with the token in the user config.
    let author = logged_in(&sluice, &token);
    package(&author, "1.0.0");
    let out = Command::new("node")
        .arg(&pnpm)
        .args(["publish", "--no-git-checks", "--registry", &sluice.url()])
        .env("npm_config_userconfig", author.path().join(".npmrc-empty"))
        .env("CI", "1")
        .current_dir(author.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pnpm publish:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // yarn 4: npm login (credentials from the environment, as yarn takes them when not at a
    // terminal), then npm publish and npm tag add with the token it saved.
    let berry = Project::new();
    package(&berry, "1.1.0");
    std::fs::write(
        berry.path().join(".yarnrc.yml"),
        format!(
            "npmRegistryServer: \"{}\"\nunsafeHttpWhitelist:\n  - \"127.0.0.1\"\n\
             nodeLinker: node-modules\nenableGlobalCache: false\nenableTelemetry: false\n",
            sluice.url().trim_end_matches('/')
        ),
    )
    .unwrap();
    std::fs::write(berry.path().join("yarn.lock"), "").unwrap();
    let home = berry.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let yarn_with = |args: &[&str], env: &[(&str, &str)]| {
        Command::new("node")
            .arg(&yarn)
            .args(args)
            .env("YARN_IGNORE_PATH", "1")
            .env("YARN_ENABLE_IMMUTABLE_INSTALLS", "false")
            .env("HOME", &home)
            .envs(env.iter().copied())
            .current_dir(berry.path())
            .output()
            .unwrap()
    };
    let yarn_login = |password: &str| {
        yarn_with(
            &["npm", "login"],
            &[
                ("YARN_IS_TEST_ENV", "1"),
                ("YARN_INJECT_NPM_USER", "alice"),
                ("YARN_INJECT_NPM_PASSWORD", password),
            ],
        )
    };
    let out = yarn_login("wrong");
    assert!(
        !out.status.success(),
        "yarn npm login with a wrong password"
    );
    let out = yarn_login("correct horse");
    assert!(
        out.status.success(),
        "yarn npm login:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let saved = std::fs::read_to_string(home.join(".yarnrc.yml")).unwrap();
    assert!(saved.contains("npmAuthToken: sluice_"), "{saved}");
    let yarn_run = |args: &[&str]| yarn_with(args, &[]);
    let out = yarn_run(&["install"]);
    assert!(
        out.status.success(),
        "yarn install:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = yarn_run(&["npm", "publish"]);
    assert!(
        out.status.success(),
        "yarn npm publish:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = yarn_run(&["npm", "tag", "add", "@acme/widget@1.0.0", "stable"]);
    assert!(
        out.status.success(),
        "yarn npm tag add:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (_, doc) = sluice.get_json("/@acme%2fwidget");
    assert!(
        doc["versions"]["1.0.0"].is_object() && doc["versions"]["1.1.0"].is_object(),
        "{doc}"
    );
    assert_eq!(doc["dist-tags"]["latest"], "1.1.0");
    assert_eq!(doc["dist-tags"]["stable"], "1.0.0");
    let user = Project::new();
    user.install(&sluice.url(), &["@acme/widget"]);
    assert_eq!(user.require("@acme/widget"), "@acme/widget@1.1.0");
}

#[test]
fn npm_login_prompts_work_through_the_legacy_flow_and_adduser_and_owners_apply() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(
        &upstream,
        "",
        &PRIVATE
            .replace("users = \"users\"\n", "users = \"users\"\nadduser = true\n")
            .replace(
                "scopes = [\"@acme\"]\n",
                "scopes = [\"@acme\"]\nowners = { \"@acme\" = [\"alice\"] }\n",
            ),
    );
    // npm login at a terminal (a pty), answering its prompts as they come: the legacy flow
    // creates the user (adduser = true) and writes a token.
    let project = Project::new();
    let out = Command::new("python3")
        .arg("-c")
        .arg(NPM_LOGIN)
        .arg(sluice.url())
        .args(["bob", "secret-pass"])
        .arg(project.path().join(".npmrc-empty"))
        .current_dir(project.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "npm login:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(npm_ok(&project, &sluice, &["whoami"]).trim(), "bob");
    // bob logs in again elsewhere: with sign-ups open, the password alone is a sign-up for a
    // taken name (409), and npm retries with it as Basic credentials, as with CouchDB.
    let again = Project::new();
    let out = Command::new("python3")
        .arg("-c")
        .arg(NPM_LOGIN)
        .arg(sluice.url())
        .args(["bob", "secret-pass"])
        .arg(again.path().join(".npmrc-empty"))
        .current_dir(again.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "npm login again:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(npm_ok(&again, &sluice, &["whoami"]).trim(), "bob");
    let users = std::fs::read_to_string(sluice.dir.path().join("users")).unwrap();
    assert!(users.starts_with("bob:$argon2id$"), "{users}");
    // What `npm adduser` sends carries the e-mail address it asked for: it is kept, shown in
    // the user document, and one the users file cannot hold is refused.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let adduser = |name: &str, email: &str| {
        runtime.block_on(async {
            let response = reqwest::Client::new()
                .put(format!("{}-/user/org.couchdb.user:{name}", sluice.url()))
                .json(
                    &json!({ "_id": format!("org.couchdb.user:{name}"), "name": name,
                    "password": "pass-word", "email": email, "type": "user", "roles": [] }),
                )
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    let (status, body) = adduser("carol", "carol@acme.example");
    assert_eq!(status, 201, "{body}");
    let users = std::fs::read_to_string(sluice.dir.path().join("users")).unwrap();
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("carol:$argon2id$") && l.ends_with(":carol@acme.example")),
        "{users}"
    );
    // The user document shows the address to carol herself (anonymous clients see nothing).
    let token = body["token"].as_str().unwrap().to_string();
    let (status, _, doc) = support::http_get(
        &format!("{}-/user/org.couchdb.user:carol", sluice.url()),
        &[("authorization", &format!("Bearer {token}"))],
    );
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(
        (status, doc["email"].as_str()),
        (200, Some("carol@acme.example")),
        "{doc}"
    );
    let (status, body) = adduser("dave", "dave:x@acme.example");
    assert_eq!(status, 400, "{body}");
    assert!(!std::fs::read_to_string(sluice.dir.path().join("users"))
        .unwrap()
        .contains("dave"));
    // bob is not an owner of @acme.
    package(&project, "1.0.0");
    let out = project.npm(&sluice.url(), &["publish"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && stderr.contains("403"), "{stderr}");
}

/// `npm login` in a pty, answering Username/Password (and Email) when asked.
const NPM_LOGIN: &str = r#"
import os, pty, sys, time
registry, user, password, userconfig = sys.argv[1:5]
pid, fd = pty.fork()
if pid == 0:
    os.environ["npm_config_userconfig"] = userconfig
    # npm's legacy login, asked for by name (its default web login opens the console's login
    # page: tests/console.rs).
    os.execvp("npm", ["npm", "login", "--auth-type=legacy", "--registry", registry])
answers = [(b"Username:", user), (b"Password:", password), (b"Email:", "bob@example.invalid")]
seen = b""
deadline = time.time() + 300
while time.time() < deadline:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    seen += data
    for prompt, answer in list(answers):
        if prompt in seen:
            os.write(fd, (answer + "\r").encode())
            answers.remove((prompt, answer))
            seen = seen.split(prompt, 1)[1]
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// A real npm tarball of `name@version` (as `package/package.json` names it).
fn tarball(name: &str, version: &str) -> Vec<u8> {
    let json = json!({"name": name, "version": version}).to_string();
    let mut raw = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    raw.append_data(&mut header, "package/package.json", json.as_bytes())
        .unwrap();
    let raw = raw.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap()
}

fn publish_body(name: &str, version: &str, tgz: &[u8]) -> Value {
    use base64::Engine as _;
    let integrity = ssri::IntegrityOpts::new()
        .algorithm(ssri::Algorithm::Sha512)
        .chain(tgz)
        .result()
        .to_string();
    let base = name.rsplit('/').next().unwrap();
    json!({
        "_id": name,
        "name": name,
        "dist-tags": {"latest": version},
        "versions": {version: {
            "name": name, "version": version,
            "dist": {"integrity": integrity, "tarball": format!("http://x/{name}/-/{base}-{version}.tgz")},
        }},
        "_attachments": {format!("{base}-{version}.tgz"): {
            "content_type": "application/octet-stream",
            "data": base64::engine::general_purpose::STANDARD.encode(tgz),
            "length": tgz.len(),
        }},
    })
}

fn put(sluice: &Sluice, path: &str, token: Option<&str>, body: &Value) -> (u16, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .put(format!("{}{}", sluice.url(), path.trim_start_matches('/')))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, body["error"].as_str().unwrap_or("").to_string())
    })
}

#[test]
fn bad_publishes_get_their_status_and_a_clear_message_and_store_nothing() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(
        &upstream,
        "",
        &PRIVATE.replace(
            "scopes = [\"@acme\"]\n",
            "scopes = [\"@acme\"]\nmax_size = \"64KiB\"\n",
        ),
    );
    add_user(&sluice, "alice", "correct horse");
    let token = login(&sluice, "alice", "correct horse").unwrap();
    let good = tarball("@acme/a", "1.0.0");
    let path = "/@acme%2fa";
    // No token; a token that does not exist.
    assert_eq!(
        put(
            &sluice,
            path,
            None,
            &publish_body("@acme/a", "1.0.0", &good)
        )
        .0,
        401
    );
    assert_eq!(
        put(
            &sluice,
            path,
            Some("sluice_nope"),
            &publish_body("@acme/a", "1.0.0", &good)
        )
        .0,
        401
    );
    // A scope not published here (and not on the whitelist either).
    let (status, error) = put(
        &sluice,
        "/@other%2fa",
        Some(&token),
        &publish_body("@other/a", "1.0.0", &good),
    );
    assert!(matches!(status, 403 | 405), "{status} {error}");
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "bad base64",
            {
                let mut b = publish_body("@acme/a", "1.0.0", &good);
                b["_attachments"]["a-1.0.0.tgz"]["data"] = json!("%%%not base64%%%");
                b
            },
            400,
            "base64",
        ),
        (
            "integrity mismatch",
            {
                let mut b = publish_body("@acme/a", "1.0.0", &good);
                b["versions"]["1.0.0"]["dist"]["integrity"] =
                    publish_body("@acme/a", "1.0.0", b"other")["versions"]["1.0.0"]["dist"]
                        ["integrity"]
                        .clone();
                b
            },
            400,
            "integrity",
        ),
        (
            "shasum mismatch",
            {
                let mut b = publish_body("@acme/a", "1.0.0", &good);
                b["versions"]["1.0.0"]["dist"]["shasum"] =
                    json!("0000000000000000000000000000000000000000");
                b
            },
            400,
            "shasum",
        ),
        (
            "URL and body disagree",
            publish_body("@acme/b", "1.0.0", &good),
            400,
            "not the package in the URL",
        ),
        (
            "tarball names another package",
            publish_body("@acme/a", "1.0.0", &tarball("@acme/z", "1.0.0")),
            400,
            "package.json",
        ),
        (
            "two versions",
            {
                let mut b = publish_body("@acme/a", "1.0.0", &good);
                b["versions"]["1.0.1"] = b["versions"]["1.0.0"].clone();
                b
            },
            400,
            "exactly one new version",
        ),
        (
            "attachment name with ..",
            {
                let mut b = publish_body("@acme/a", "1.0.0", &good);
                let attachment = b["_attachments"]["a-1.0.0.tgz"].clone();
                b["_attachments"] = json!({"../a-1.0.0.tgz": attachment});
                b
            },
            400,
            "not a file name",
        ),
        (
            "over max_size",
            {
                let mut b = publish_body("@acme/a", "1.0.0", &good);
                b["readme"] = json!("x".repeat(100_000));
                b
            },
            413,
            "larger",
        ),
    ];
    for (what, body, status, message) in cases {
        let (got, error) = put(&sluice, path, Some(&token), &body);
        assert_eq!(got, status, "{what}: {error}");
        assert!(error.contains(message), "{what}: {error}");
    }
    let app = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(
        runtime
            .block_on(app.store.packument("@acme/a"))
            .unwrap()
            .is_none(),
        "a bad publish stored something"
    );
    // The good one, then the same version again.
    assert_eq!(
        put(
            &sluice,
            path,
            Some(&token),
            &publish_body("@acme/a", "1.0.0", &good)
        )
        .0,
        200
    );
    let (status, error) = put(
        &sluice,
        path,
        Some(&token),
        &publish_body("@acme/a", "1.0.0", &good),
    );
    assert_eq!(status, 403, "{error}");
    assert!(error.contains("cannot publish over"), "{error}");

    // Tokens survive a restart.
    let dir = sluice.stop();
    let sluice = Sluice::start_in(
        dir,
        &upstream,
        &PRIVATE.replace(
            "scopes = [\"@acme\"]\n",
            "scopes = [\"@acme\"]\nmax_size = \"64KiB\"\n",
        ),
    );
    let (status, _, _) = support::http_get(
        &format!("{}-/whoami", sluice.url()),
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(status, 200);
    // Guessing is bounded: after ten wrong passwords the user is locked out for a while.
    for _ in 0..10 {
        assert_eq!(login(&sluice, "alice", "guess").unwrap_err().0, 401);
    }
    assert_eq!(login(&sluice, "alice", "correct horse").unwrap_err().0, 429);
}

#[test]
fn a_users_file_with_a_bad_line_names_it_and_keeps_the_good_ones() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", PRIVATE);
    add_user(&sluice, "alice", "correct horse");
    assert!(login(&sluice, "alice", "correct horse").is_ok());
    let users = sluice.dir.path().join("users");
    let text = std::fs::read_to_string(&users).unwrap();
    std::fs::write(&users, format!("{text}not a user line\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["user", "add", "bob", "--password-stdin", "--config"])
        .arg(&sluice.config_path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("users:2") || stderr.contains("no password"),
        "{stderr}"
    );
    // The server keeps the last good file: alice still logs in.
    assert!(login(&sluice, "alice", "correct horse").is_ok());
}

/// A Sigstore bundle as `npm publish --provenance` attaches it, for `name@version` with
/// `tgz`'s sha512 (unsigned: sluice keeps and serves it, clients verify it).
fn sigstore_bundle(name: &str, version: &str, tgz: &[u8]) -> String {
    use base64::Engine as _;
    let sha512 = ssri::IntegrityOpts::new()
        .algorithm(ssri::Algorithm::Sha512)
        .chain(tgz)
        .result()
        .to_hex()
        .1;
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "name": format!("pkg:npm/{}@{version}", name.replacen('@', "%40", 1)), "digest": { "sha512": sha512 } }],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": { "buildDefinition": { "buildType": "https://example.invalid/ci" } },
    });
    json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": { "tlogEntries": [] },
        "dsseEnvelope": {
            "payload": base64::engine::general_purpose::STANDARD.encode(statement.to_string()),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{ "sig": "AAAA", "keyid": "" }],
        },
    })
    .to_string()
}

#[test]
fn provenance_is_kept_and_served_tokens_keep_to_their_networks_and_guessing_is_slowed() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let sluice = Sluice::start(&upstream, "left\n", PRIVATE);
    add_user(&sluice, "alice", "correct horse");
    let token = login(&sluice, "alice", "correct horse").unwrap();

    // A publish with provenance: the bundle is checked against the tarball, kept, linked
    // from the version and served where npm looks for it.
    let tgz = tarball("@acme/signed", "1.0.0");
    let with = |bundle: String| {
        let mut body = publish_body("@acme/signed", "1.0.0", &tgz);
        body["_attachments"]["@acme/signed-1.0.0.sigstore"] = json!({
            "content_type": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "length": bundle.len(),
            "data": bundle,
        });
        body
    };
    let other = tarball("@acme/signed", "0.0.1");
    let (status, error) = put(
        &sluice,
        "/@acme%2fsigned",
        Some(&token),
        &with(sigstore_bundle("@acme/signed", "1.0.0", &other)),
    );
    assert_eq!(status, 400, "{error}");
    assert!(error.contains("provenance"), "{error}");
    let (status, error) = put(&sluice, "/@acme%2fsigned", Some(&token), &with("{".into()));
    assert_eq!(status, 400, "{error}");
    assert_eq!(
        sluice.get_json("/@acme%2fsigned").0,
        404,
        "a bad publish stored something"
    );
    let bundle = sigstore_bundle("@acme/signed", "1.0.0", &tgz);
    let (status, error) = put(
        &sluice,
        "/@acme%2fsigned",
        Some(&token),
        &with(bundle.clone()),
    );
    assert_eq!(status, 200, "{error}");
    let (_, doc) = sluice.get_json("/@acme%2fsigned");
    let attestations = &doc["versions"]["1.0.0"]["dist"]["attestations"];
    assert_eq!(
        attestations["provenance"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    let url = attestations["url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("{}-/npm/v1/attestations/@acme/signed@1.0.0", sluice.url())
    );
    let (status, _, body) = support::http_get(url, &[]);
    assert_eq!(status, 200);
    let served: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        served["attestations"][0]["bundle"],
        serde_json::from_str::<Value>(&bundle).unwrap()
    );
    assert_eq!(
        served["attestations"][0]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    assert_eq!(upstream.count_prefix("/-/npm/v1/attestations"), 0);
    let (status, _) = sluice.get_json("/-/package/@acme%2fsigned/visibility");
    assert_eq!(status, 200);

    // A token limited to networks works only from them.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let create = |cidr: Value| {
        runtime.block_on(async {
            let response = reqwest::Client::new()
                .post(format!("{}-/npm/v1/tokens", sluice.url()))
                .bearer_auth(&token)
                .json(&json!({"password": "correct horse", "readonly": false, "cidr_whitelist": cidr}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    let whoami = |token: &str| {
        let (status, _, body) = support::http_get(
            &format!("{}-/whoami", sluice.url()),
            &[("authorization", &format!("Bearer {token}"))],
        );
        (status, String::from_utf8_lossy(&body).to_string())
    };
    let (status, elsewhere) = create(json!(["10.0.0.0/8"]));
    assert_eq!(status, 200, "{elsewhere}");
    let (status, body) = whoami(elsewhere["token"].as_str().unwrap());
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("10.0.0.0/8"), "{body}");
    let (status, here) = create(json!(["127.0.0.0/8", "::1"]));
    assert_eq!(status, 200, "{here}");
    assert_eq!(whoami(here["token"].as_str().unwrap()).0, 200);
    let (status, bad) = create(json!(["not a network"]));
    assert_eq!(status, 400, "{bad}");

    // Basic credentials are checked as logins are: wrong ones are slowed, then locked out.
    use base64::Engine as _;
    let basic = |password: &str| {
        let credential =
            base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"));
        support::http_get(
            &format!("{}-/whoami", sluice.url()),
            &[("authorization", &format!("Basic {credential}"))],
        )
        .0
    };
    assert_eq!(basic("correct horse"), 200);
    for _ in 0..10 {
        assert_eq!(basic("guess"), 401);
    }
    assert_eq!(basic("correct horse"), 429, "guessing is not bounded");

    // npm audit's bulk request leaves without the private names.
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{}-/npm/v1/security/advisories/bulk", sluice.url()))
            .header("content-type", "application/json")
            .body(r#"{"@acme/signed":["1.0.0"],"left":["1.0.0"]}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    let (_, _, sent) = upstream.posts().pop().unwrap();
    let sent = String::from_utf8_lossy(&sent).to_string();
    assert!(
        !sent.contains("@acme"),
        "a private name went upstream: {sent}"
    );

    // sluice verify checks the private tarballs with the rest.
    let dir = sluice.stop();
    let out = support::sluice_cli(&dir.path().join("sluice.toml"), &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("0 entries"), "{stdout}");
}
