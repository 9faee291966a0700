//! Publishing by hand: users, logins, tarballs and raw publish bodies, for tests that send
//! what no honest client sends.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Value};

use super::Sluice;

/// `sluice user add NAME --password-stdin`.
pub fn add_user(sluice: &Sluice, name: &str, password: &str) {
    user_cli(&sluice.config_path, "add", name, password, &[]);
}

/// `sluice user ACTION NAME --password-stdin` with `extra` arguments (`--email …`) against the
/// configuration at `config`, `password` on its standard input; the command must succeed.
pub fn user_cli(
    config: &std::path::Path,
    action: &str,
    name: &str,
    password: &str,
    extra: &[&str],
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["user", action, name, "--password-stdin"])
        .args(extra)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A token for `name` (npm's legacy login).
pub fn login(sluice: &Sluice, name: &str, password: &str) -> String {
    let (status, body) = send(
        sluice,
        "PUT",
        &format!("/-/user/org.couchdb.user:{name}"),
        None,
        Some(
            &json!({ "_id": format!("org.couchdb.user:{name}"), "name": name,
                      "password": password, "type": "user", "roles": [] }),
        ),
    );
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// Send `method path` with a JSON `body`; the status and the JSON answer (`Null` if none).
pub fn send(
    sluice: &Sluice,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = reqwest::Client::new().request(
            method,
            format!("{}{}", sluice.url(), path.trim_start_matches('/')),
        );
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

/// A gzipped tar of `entries` (path, content), in order.
pub fn tarball_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut raw = tar::Builder::new(Vec::new());
    for (path, body) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        raw.append_data(&mut header, path, *body).unwrap();
    }
    let raw = raw.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap()
}

/// A tarball whose `package/package.json` is `package_json`, with an `index.js`.
pub fn tarball_with(package_json: &Value) -> Vec<u8> {
    let json = package_json.to_string();
    tarball_of(&[
        ("package/package.json", json.as_bytes()),
        ("package/index.js", b"module.exports = 1;\n"),
    ])
}

/// The sha512 integrity of `bytes`.
pub fn sha512(bytes: &[u8]) -> String {
    ssri::IntegrityOpts::new()
        .algorithm(ssri::Algorithm::Sha512)
        .chain(bytes)
        .result()
        .to_string()
}

/// What `npm publish` sends for `manifest` (which names the package and version) with `tgz`.
pub fn publish_body(manifest: &Value, tgz: &[u8]) -> Value {
    let name = manifest["name"].as_str().unwrap();
    let version = manifest["version"].as_str().unwrap();
    let mut manifest = manifest.clone();
    manifest["dist"] = json!({ "integrity": sha512(tgz), "tarball": "http://x/" });
    json!({
        "_id": name,
        "name": name,
        "dist-tags": { "latest": version },
        "versions": { version: manifest },
        "_attachments": { format!("{name}-{version}.tgz"): {
            "content_type": "application/octet-stream",
            "data": base64::engine::general_purpose::STANDARD.encode(tgz),
            "length": tgz.len(),
        }},
    })
}

/// The path of `name`'s document (`@scope%2fname`).
pub fn doc_path(name: &str) -> String {
    format!("/{}", name.replacen('/', "%2f", 1))
}

/// A Sigstore bundle as `npm publish --provenance` attaches it, for `name@version` with
/// `tgz`'s sha512 (unsigned: sluice keeps and serves it, clients verify it).
pub fn sigstore_bundle(name: &str, version: &str, tgz: &[u8], build: &str) -> String {
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
        "predicate": { "buildDefinition": { "buildType": build } },
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
