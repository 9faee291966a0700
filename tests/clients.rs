//! Every client: npm, pnpm, yarn 1, yarn 4 and bun install the same project through sluice.
//!
//! The clients other than npm are installed by `.ci/run` into `target/tools` (or the folder
//! named by `$SLUICE_TOOLS`); a client that is not there is reported and skipped (a failure under CI).
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
