//! A third party's conformance battery: Verdaccio's `@verdaccio/e2e-cli` (pinned in
//! `scripts/setup --tests`, installed into target/tools/e2e) runs against an in-test sluice with
//! npm 12 and pnpm 11 (on Node 24), pnpm 12, yarn 4, bun and deno, and every scenario it runs
//! passes.
//!
//! sluice is set up as the battery's `--print-config` asks of a registry: users may sign up
//! (`[auth] adduser`), the names it publishes at run time are published here (`[publish]`
//! scopes and `*` patterns), a 30 MB publish fits, and its mock uplink is the upstream (its
//! `e2e-uplink-*` and `nul.*` names are mirrored through it; the battery starts and stops it on
//! `--uplink-port`, so for most of the run upstream is down). `[policy] mode = "mirror"` as in
//! Verdaccio's config, where any name may be proxied.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use sluice::server::free_port;
use support::{publishing, Sluice};

/// The unscoped names the battery publishes at run time (`e2e-<word>-<id>`, `verdaccio-<id>`…),
/// as `[publish] packages` patterns: every `e2e-*` but the proxied `e2e-uplink-*`.
const PACKAGES: &[&str] = &[
    "verdaccio-*",
    "e2e-a*",
    "e2e-c*",
    "e2e-i*",
    "e2e-m*",
    "e2e-n*",
    "e2e-r*",
    "e2e-s*",
    "e2e-t*",
    "login-*",
    "ci-test-*",
    "install-test-*",
    "info-client-*",
    "search-*",
    "jsonstream-*",
    "-x-*",
    "aux.*",
    // Its "unknown package is 404" checks: a name no registry has, local in its own config.
    "does-not-exist-*",
];

/// The scopes it publishes to (`@e2e-uplink` stays mirrored).
const SCOPES: &[&str] = &["@verdaccio", "@e2e-names", "@con", "@foo"];

fn quoted(list: &[&str]) -> String {
    list.iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// sluice on `port`, with the battery's mock uplink on `uplink` as upstream.
fn start(port: u16, uplink: u16) -> Sluice {
    let extra = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://localhost:{port}/\"\n\n\
         [upstream]\ntimeout = \"3s\"\n\n\
         [policy]\nmode = \"mirror\"\n\n\
         [auth]\nusers = \"users\"\nadduser = true\nweb_login = false\n\n\
         [publish]\nscopes = [{}]\npackages = [{}]\nmax_size = \"100MiB\"\n",
        quoted(SCOPES),
        quoted(PACKAGES)
    );
    let dir = tempfile::tempdir().unwrap();
    Sluice::start_with_registry(dir, &format!("http://localhost:{uplink}/"), &extra)
}

/// One adapter's line of the battery's summary: `npm@12.2.3: 17 passed, 0 failed, 2 skipped`.
struct Summary {
    adapter: String,
    passed: usize,
    failed: usize,
}

fn summaries(output: &str) -> Vec<Summary> {
    let plain = strip_colors(output);
    let Some((_, tail)) = plain.rsplit_once("Summary") else {
        return Vec::new();
    };
    tail.lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches(['v', 'x']).trim();
            let (adapter, counts) = line.split_once(": ")?;
            let count = |what: &str| -> Option<usize> {
                counts
                    .split(", ")
                    .find_map(|part| part.strip_suffix(what))
                    .and_then(|n| n.trim().parse().ok())
                    .or_else(|| {
                        let at = counts.find(what)?;
                        counts[..at].trim().rsplit([' ', ',']).next()?.parse().ok()
                    })
            };
            Some(Summary {
                adapter: adapter.to_string(),
                passed: count(" passed")?,
                failed: count(" failed")?,
            })
        })
        .filter(|s| s.adapter != "Total")
        .collect()
}

fn strip_colors(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC [ … m.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Run the battery against `registry` with `adapters` (`name=binary`) and `extra` arguments;
/// the combined output, and whether it exited 0.
fn battery(
    registry: &str,
    uplink: u16,
    adapters: &[String],
    extra: &[&str],
    home: &Path,
    env: &[(&str, &str)],
) -> (bool, String) {
    let node = support::tool_in("node24/node_modules/node/bin/node").unwrap();
    let cli = support::tool_in("e2e/node_modules/@verdaccio/e2e-cli/bin/e2e-cli.js").unwrap();
    let tmp = home.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut command = Command::new(node);
    command
        .arg(cli)
        .args(["-r", registry.trim_end_matches('/')])
        .args(["--uplink-port", &uplink.to_string()])
        // Per test; generous, as the 30 MB publish and the installs run on a debug build.
        .args(["--timeout", "240000"]);
    for adapter in adapters {
        command.args(["--pm", adapter]);
    }
    let out = command
        .args(extra)
        .env("PATH", support::node24_path().unwrap())
        // Its own home and temp folders: no user's .npmrc, and its 30 MB projects go with it.
        .env("HOME", home)
        .env("TMPDIR", &tmp)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("BUN_INSTALL_CACHE_DIR", home.join(".bun-cache"))
        .env("DENO_DIR", home.join(".deno"))
        .env_remove("npm_config_registry")
        .env_remove("NPM_CONFIG_REGISTRY")
        .env_remove("E2E_PENDING_CONTRACT_CHECKS")
        .envs(env.iter().copied())
        .output()
        .expect("node runs the battery");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The battery's summary says every adapter ran and passed at least `least` tests, none failed.
fn assert_passed(ok: bool, output: &str, expected: &[(&str, usize)]) {
    let found = summaries(output);
    for (adapter, least) in expected {
        let summary = found
            .iter()
            .find(|s| s.adapter.starts_with(adapter))
            .unwrap_or_else(|| panic!("no summary for {adapter}:\n{output}"));
        assert_eq!(summary.failed, 0, "{adapter} failed tests:\n{output}");
        assert!(
            summary.passed >= *least,
            "{adapter} passed {} tests, expected at least {least} (did some stop running?):\n{output}",
            summary.passed
        );
    }
    assert!(ok, "the battery exited with an error:\n{output}");
}

/// The Yarn plugins the battery imports for yarn 4 (tests/yarn-plugins), as the packages it
/// packs: `@verdaccio/yarn-plugin-<name>`, holding `bundles/@yarnpkg/plugin-<name>.js`.
const YARN_PLUGINS: &[(&str, &str)] = &[
    (
        "npm-deprecate",
        include_str!("yarn-plugins/plugin-npm-deprecate.js"),
    ),
    (
        "npm-login",
        include_str!("yarn-plugins/plugin-npm-login.js"),
    ),
    ("npm-ping", include_str!("yarn-plugins/plugin-npm-ping.js")),
];

/// Publish [`YARN_PLUGINS`] to `sluice` (`@verdaccio` is published here), as a user signed up
/// for it.
fn publish_yarn_plugins(sluice: &Sluice) {
    let token = publishing::login(sluice, "yarn-plugins", "correct horse");
    for (name, bundle) in YARN_PLUGINS {
        let package = format!("@verdaccio/yarn-plugin-{name}");
        let manifest = serde_json::json!({
            "name": package, "version": "1.0.0", "license": "MIT",
            "main": format!("bundles/@yarnpkg/plugin-{name}.js"),
        });
        let tgz = publishing::tarball_of(&[
            ("package/package.json", manifest.to_string().as_bytes()),
            (
                &format!("package/bundles/@yarnpkg/plugin-{name}.js"),
                bundle.as_bytes(),
            ),
        ]);
        let body = publishing::publish_body(&manifest, &tgz);
        let path = publishing::doc_path(&package);
        let (status, answer) = publishing::send(sluice, "PUT", &path, Some(&token), Some(&body));
        assert_eq!(status, 200, "publishing {package}: {answer}");
    }
}

#[test]
fn verdaccio_s_e2e_battery_passes() {
    let tools = [
        "node24/node_modules/node/bin/node",
        "node24/node_modules/.bin/npm",
        "node24/node_modules/.bin/pnpm",
        "pnpm12/node_modules/.bin/pnpm",
        "node_modules/@yarnpkg/cli-dist/bin/yarn.js",
        "node_modules/bun/bin/bun.exe",
        "e2e/node_modules/.bin/deno",
        "e2e/node_modules/@verdaccio/e2e-cli/bin/e2e-cli.js",
    ];
    let Some(paths) = tools
        .iter()
        .map(|t| support::tool_in(t))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let pm = |name: &str, path: &Path| format!("{name}={}", path.display());
    let (port, uplink) = (free_port().unwrap(), free_port().unwrap());
    let sluice = start(port, uplink);
    let registry = format!("http://localhost:{port}/");
    let home = tempfile::tempdir().unwrap();

    let adapters = vec![
        pm("npm", &paths[1]),
        pm("pnpm", &paths[2]),
        pm("pnpm", &paths[3]),
        pm("bun", &paths[5]),
        pm("deno", &paths[6]),
    ];
    let (ok, output) = battery(&registry, uplink, &adapters, &[], home.path(), &[]);
    // The counts this battery version runs for each (the rest it skips as not applying).
    assert_passed(
        ok,
        &output,
        &[
            ("npm@12.", 17),
            ("pnpm@11.", 10),
            ("pnpm@12.", 10),
            ("bun@", 7),
            ("deno@", 4),
        ],
    );
    for scenario in [
        "scenario:uplink-failure",
        "scenario:reserved-names",
        "scenario:tarballs",
        "scenario:metadata",
        "scenario:search",
        "scenario:minimum-release-age",
    ] {
        assert!(
            strip_colors(&output).contains(&format!("PASS {scenario}")),
            "{scenario} did not run and pass:\n{output}"
        );
    }

    // yarn 4 on its own run. Its deprecate, login and ping tests first `npm pack`
    // `@verdaccio/yarn-plugin-npm-{deprecate,login,ping}` and import the Yarn plugin each holds;
    // those packages are not on the registry the project reaches, so tests/yarn-plugins' own
    // plugins are published here under those names and the battery's npm asks this sluice.
    publish_yarn_plugins(&sluice);
    let adapters = vec![pm("yarn-modern", &paths[4])];
    let npm_registry = [("npm_config_registry", registry.as_str())];
    let (ok, output) = battery(
        &registry,
        uplink,
        &adapters,
        &[],
        home.path(),
        &npm_registry,
    );
    assert_passed(ok, &output, &[("yarn-modern@4.", 9)]);
    // A test with sub-tests ends in `PASS name`, one without in `✓ name`.
    let plain = strip_colors(&output);
    for test in ["deprecate", "login", "ping"] {
        let passed = plain.lines().map(str::trim).any(|line| {
            [format!("PASS {test} "), format!("✓ {test} ")]
                .iter()
                .any(|mark| line.starts_with(mark.as_str()))
        });
        assert!(passed, "yarn 4's {test} did not run and pass:\n{output}");
    }
    drop(sluice);
}
