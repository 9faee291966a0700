//! HTTPS on the edge itself: `[server] tls_cert` and `tls_key`, ALPN h2 and http/1.1, renewals
//! picked up without a restart, a bad certificate refused at start and a bad renewal ignored.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::tls::{ca_of, certificate};
use support::{FakeRegistry, Project};

fn client(trusting: &Path) -> reqwest::Client {
    let pem = std::fs::read(trusting).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

fn get(client: &reqwest::Client, url: &str) -> Result<(u16, reqwest::Version), String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
        Ok((response.status().as_u16(), response.version()))
    })
}

#[test]
fn npm_installs_over_https_with_h2_and_a_renewed_certificate_is_picked_up() {
    sluice::tls::install_crypto_provider();
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "first");
    std::fs::write(dir.path().join("whitelist"), "left\n").unwrap();
    let port = sluice::server::free_port().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"first.pem\"\ntls_key = \"first-key.pem\"\n\
         [upstream]\nregistry = \"{}\"\n[storage]\ndir = \"data\"\n[policy]\nwhitelist = \"whitelist\"\n",
        upstream.url()
    );
    std::fs::write(dir.path().join("sluice.toml"), &text).unwrap();
    let config = sluice::config::Config::load_file(&dir.path().join("sluice.toml")).unwrap();
    assert_eq!(
        config.server.public_url,
        format!("https://127.0.0.1:{port}/")
    );
    let server = sluice::server::spawn(config).unwrap();
    let url = format!("https://127.0.0.1:{port}/");

    // HTTP/2 by ALPN for a client that offers it; the links point at https.
    let first_ca = ca_of(&cert);
    let trusting_first = client(&first_ca);
    let (status, version) = get(&trusting_first, &format!("{url}-/ping")).unwrap();
    assert_eq!((status, version), (200, reqwest::Version::HTTP_2));

    // npm with the certificate as its cafile.
    let project = Project::new();
    let out = project.npm(
        &url,
        &["install", "left", "--cafile", first_ca.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(project.require("left"), "left@1.0.0");

    // pnpm (cafile) and yarn 4 (httpsCaFilePath; no unsafeHttpWhitelist over https).
    if let (Some(pnpm), Some(yarn)) = (
        support::tool("pnpm/bin/pnpm.cjs"),
        support::tool("@yarnpkg/cli-dist/bin/yarn.js"),
    ) {
        let project = Project::new();
        std::fs::write(
            project.path().join(".npmrc-empty"),
            format!("cafile={}\n", first_ca.display()),
        )
        .unwrap();
        let out = Command::new("node")
            .arg(&pnpm)
            .args(["add", "left", "--registry", &url])
            .arg("--store-dir")
            .arg(project.path().join(".pnpm-store"))
            .env("npm_config_userconfig", project.path().join(".npmrc-empty"))
            .env("CI", "1")
            .current_dir(project.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pnpm over https: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(project.require("left"), "left@1.0.0");
        let berry = Project::new();
        std::fs::write(
            berry.path().join("package.json"),
            r#"{"name":"app","version":"1.0.0","private":true,"dependencies":{"left":"^1.0.0"}}"#,
        )
        .unwrap();
        std::fs::write(
            berry.path().join(".yarnrc.yml"),
            format!(
                "npmRegistryServer: \"{}\"\nhttpsCaFilePath: \"{}\"\nnodeLinker: node-modules\nenableGlobalCache: false\nenableTelemetry: false\n",
                url.trim_end_matches('/'),
                first_ca.display()
            ),
        )
        .unwrap();
        std::fs::write(berry.path().join("yarn.lock"), "").unwrap();
        let out = Command::new("node")
            .arg(&yarn)
            .arg("install")
            .env("YARN_IGNORE_PATH", "1")
            .env("YARN_ENABLE_IMMUTABLE_INSTALLS", "false")
            .env("HOME", berry.path())
            .current_dir(berry.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "yarn 4 over https: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(berry.require("left"), "left@1.0.0");
    }
    if let Some(bun) = support::tool("bun/bin/bun.exe") {
        let project = Project::new();
        std::fs::write(
            project.path().join("package.json"),
            r#"{"name":"app","version":"1.0.0","private":true,"dependencies":{"left":"^1.0.0"}}"#,
        )
        .unwrap();
        std::fs::write(
            project.path().join("bunfig.toml"),
            format!(
                "[install]\nregistry = \"{url}\"\ncafile = \"{}\"\n",
                first_ca.display()
            ),
        )
        .unwrap();
        let out = Command::new(bun)
            .arg("install")
            .env("BUN_INSTALL_CACHE_DIR", project.path().join(".bun-cache"))
            .env("HOME", project.path())
            .current_dir(project.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bun over https: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(project.require("left"), "left@1.0.0");
    }

    // A bad renewal (garbage in the certificate file) keeps the certificate in use.
    let good = std::fs::read(&cert).unwrap();
    std::fs::write(&cert, "not a certificate\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        get(&trusting_first, &format!("{url}-/ping")).unwrap().0,
        200
    );
    std::fs::write(&cert, &good).unwrap();

    // A renewal: new files in place (as certbot does); new connections get the new one.
    let (second, second_key) = certificate(dir.path(), "second");
    std::fs::copy(&second_key, &key).unwrap();
    std::fs::copy(&second, &cert).unwrap();
    let trusting_second = client(&ca_of(&second));
    assert!(support::eventually(30, || get(
        &trusting_second,
        &format!("{url}-/ping")
    )
    .is_ok()));
    server.stop();
}

#[test]
fn a_certificate_that_cannot_be_used_stops_the_start_with_a_clear_message() {
    sluice::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = certificate(dir.path(), "mine");
    let (_, other_key) = certificate(dir.path(), "other");
    std::fs::write(dir.path().join("garbage.pem"), "nothing here\n").unwrap();
    for (cert_file, key_file, wanted) in [
        (cert.to_str().unwrap(), "missing.pem", "missing.pem"),
        (
            "garbage.pem",
            other_key.to_str().unwrap(),
            "no PEM certificate",
        ),
        (
            cert.to_str().unwrap(),
            other_key.to_str().unwrap(),
            "does not belong",
        ),
    ] {
        let port = sluice::server::free_port().unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{cert_file}\"\ntls_key = \"{key_file}\"\n\
             [upstream]\nregistry = \"http://127.0.0.1:9/\"\n[storage]\ndir = \"data\"\n"
        );
        let config = sluice::config::Config::parse(&text, "tls.toml", dir.path()).unwrap();
        let error = sluice::server::spawn(config).err().unwrap().to_string();
        assert!(
            error.contains("server.tls_cert") && error.contains(wanted),
            "{error}"
        );
    }
    let half = "[server]\ntls_cert = \"a.pem\"\n[upstream]\nregistry = \"http://127.0.0.1:9/\"\n";
    let error = sluice::config::Config::parse(half, "tls.toml", dir.path())
        .unwrap_err()
        .to_string();
    assert!(error.contains("go together"), "{error}");
}
