//! HTTPS on the edge itself: `[server] tls_cert` and `tls_key`, ALPN h2 and http/1.1, renewals
//! picked up without a restart, a bad certificate refused at start and a bad renewal ignored.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::{FakeRegistry, Project};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate for 127.0.0.1 signed by a CA of its own, in `dir`: (`name`.pem, `name`-key.pem,
/// `name`-ca.pem), the paths returned as (cert, key) with the CA beside them.
fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = format!("{name}-ca.pem");
    let ca_key = format!("{name}-ca-key.pem");
    let mut args = vec!["req", "-x509", "-days", "2", "-subj"];
    let subject = format!("/CN=sluice test CA {name}");
    args.push(&subject);
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca]);
    openssl(dir, &args);
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let leaf_subject = format!("/CN=127.0.0.1 {name}");
    let mut args = vec!["req", "-new", "-subj", &leaf_subject];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr]);
    openssl(dir, &args);
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let cert = format!("{name}.pem");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    (dir.join(cert), dir.join(key))
}

/// The CA that signed `cert` (see [`certificate`]).
fn ca_of(cert: &Path) -> std::path::PathBuf {
    cert.with_file_name(format!(
        "{}-ca.pem",
        cert.file_stem().unwrap().to_str().unwrap()
    ))
}

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
    sluice::crypto::install_crypto_provider();
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
    sluice::crypto::install_crypto_provider();
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

/// A raw HTTP/2 client over TLS, for clients that misbehave frame by frame.
mod raw_h2 {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use pingora::tls::{ClientConfig, ClientTlsStream, RootCertStore, ServerName, TlsConnector};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub type Conn = ClientTlsStream<TcpStream>;

    /// A TLS connection to `port` that negotiated h2, trusting the CA in `ca`.
    pub async fn connect(port: u16, ca: &Path) -> Conn {
        let mut roots = RootCertStore::empty();
        pingora::tls::load_ca_file_into_store(ca, &mut roots).unwrap();
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        tls
    }

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    /// An HPACK integer with a 7-bit prefix (RFC 7541 §5.1).
    fn int7(mut value: usize, out: &mut Vec<u8>) {
        if value < 127 {
            out.push(value as u8);
            return;
        }
        out.push(127);
        value -= 127;
        while value >= 128 {
            out.push((value % 128 + 128) as u8);
            value /= 128;
        }
        out.push(value as u8);
    }

    /// A request's header block: every field a literal without indexing, no Huffman.
    pub fn block(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        let fields = [
            (":method", method),
            (":scheme", "https"),
            (":path", path),
            (":authority", "127.0.0.1"),
        ];
        for (name, value) in fields.iter().chain(extra) {
            out.push(0);
            int7(name.len(), &mut out);
            out.extend(name.as_bytes());
            int7(value.len(), &mut out);
            out.extend(value.as_bytes());
        }
        out
    }

    /// The preface and an empty SETTINGS frame (or the one given).
    pub async fn hello(conn: &mut Conn, settings: &[u8]) {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, settings));
        conn.write_all(&bytes).await.unwrap();
    }

    /// The next frame (kind, flags, stream, payload), or `None` once the server closed.
    pub async fn next(conn: &mut Conn) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        conn.read_exact(&mut head).await.ok()?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; len];
        conn.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some((head[3], head[4], stream, payload))
    }

    /// Read frames until the server closes the connection (true) or `patience` passes
    /// (false); the frames read are returned too.
    pub async fn closed_within(
        conn: &mut Conn,
        patience: Duration,
    ) -> (bool, Vec<(u8, u8, u32, Vec<u8>)>) {
        let mut frames = Vec::new();
        let closed = tokio::time::timeout(patience, async {
            while let Some(frame) = next(conn).await {
                frames.push(frame);
            }
        })
        .await
        .is_ok();
        (closed, frames)
    }

    /// The server's SETTINGS parameters, from its first frame.
    pub async fn server_settings(conn: &mut Conn) -> Vec<(u16, u32)> {
        let (kind, _, _, payload) = next(conn).await.unwrap();
        assert_eq!(kind, SETTINGS);
        payload
            .chunks_exact(6)
            .map(|s| {
                (
                    u16::from_be_bytes([s[0], s[1]]),
                    u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                )
            })
            .collect()
    }
}

/// A sluice serving HTTPS with `server` settings added; (server, port, the CA to trust, its
/// directory).
fn https_sluice(
    upstream: &FakeRegistry,
    server: &str,
) -> (
    sluice::server::Running,
    u16,
    std::path::PathBuf,
    tempfile::TempDir,
) {
    sluice::crypto::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = certificate(dir.path(), "edge");
    std::fs::write(dir.path().join("whitelist"), "left\nhuge\n").unwrap();
    let port = sluice::server::free_port().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"edge.pem\"\ntls_key = \"edge-key.pem\"\n{server}\n\
         [upstream]\nregistry = \"{}\"\n[storage]\ndir = \"data\"\n[policy]\nwhitelist = \"whitelist\"\n",
        upstream.url()
    );
    std::fs::write(dir.path().join("sluice.toml"), &text).unwrap();
    let config = sluice::config::Config::load_file(&dir.path().join("sluice.toml")).unwrap();
    let running = sluice::server::spawn(config).unwrap();
    (running, port, ca_of(&cert), dir)
}

const QUICK: &str = "header_timeout = \"2s\"\nbody_timeout = \"2s\"\nsend_timeout = \"2s\"";

/// Far longer than any of `QUICK`'s timeouts: a connection still open after it was never cut.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

fn timeouts_counted(running: &sluice::server::Running) -> u64 {
    running
        .app
        .metrics
        .client_timeouts
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn an_h2_client_that_sends_no_request_is_cut_off_after_the_header_timeout() {
    let upstream = FakeRegistry::start();
    let (running, port, ca, _dir) = https_sluice(&upstream, QUICK);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Silent after the TLS handshake.
        let mut silent = raw_h2::connect(port, &ca).await;
        let (closed, _) = raw_h2::closed_within(&mut silent, PATIENCE).await;
        assert!(closed, "a silent h2 connection was never cut off");
        // The preface and settings, then no request.
        let mut idle = raw_h2::connect(port, &ca).await;
        raw_h2::hello(&mut idle, &[]).await;
        let (closed, _) = raw_h2::closed_within(&mut idle, PATIENCE).await;
        assert!(
            closed,
            "an h2 connection that never asked was never cut off"
        );
    });
    assert_eq!(timeouts_counted(&running), 2);
}

#[test]
fn an_h2_request_header_trickled_a_byte_at_a_time_is_cut_off() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let (running, port, ca, _dir) = https_sluice(&upstream, QUICK);
    let url = format!("https://127.0.0.1:{port}/-/ping");
    let others = client(&ca);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut slow = raw_h2::connect(port, &ca).await;
        raw_h2::hello(&mut slow, &[]).await;
        let block = raw_h2::block("GET", "/left", &[("accept", "application/json")]);
        let flags = raw_h2::END_HEADERS | raw_h2::END_STREAM;
        let frame = raw_h2::frame(raw_h2::HEADERS, flags, 1, &block);
        // The frame's header, then its header block a byte every 400 ms: 12 bytes take longer
        // than the header timeout. (A block cut into many CONTINUATION frames is refused by h2
        // itself after a few.)
        let (head, rest) = frame.split_at(9);
        let mut sent = slow.write_all(head).await.is_ok() && slow.flush().await.is_ok();
        for byte in rest.iter().take(12) {
            if !sent {
                break;
            }
            sent = slow.write_all(&[*byte]).await.is_ok() && slow.flush().await.is_ok();
            // Everyone else is answered meanwhile.
            let answer = others.get(&url).send().await.unwrap();
            assert_eq!(
                (answer.status().as_u16(), answer.version()),
                (200, reqwest::Version::HTTP_2)
            );
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        }
        let (closed, frames) = raw_h2::closed_within(&mut slow, PATIENCE).await;
        assert!(closed, "the trickling h2 client was never cut off");
        assert!(
            !frames.iter().any(|f| f.0 == raw_h2::HEADERS),
            "it was answered: {frames:?}"
        );
    });
    assert_eq!(timeouts_counted(&running), 1);
}

#[test]
fn an_h2_request_body_that_stops_halfway_is_cut_off() {
    let upstream = FakeRegistry::start();
    let (running, port, ca, _dir) = https_sluice(&upstream, QUICK);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut stalled = raw_h2::connect(port, &ca).await;
        raw_h2::hello(&mut stalled, &[]).await;
        let block = raw_h2::block(
            "POST",
            "/-/npm/v1/security/advisories/bulk",
            &[
                ("content-type", "application/json"),
                ("content-length", "100"),
            ],
        );
        let mut bytes = raw_h2::frame(raw_h2::HEADERS, raw_h2::END_HEADERS, 1, &block);
        bytes.extend(raw_h2::frame(raw_h2::DATA, 0, 1, b"{\"left\":"));
        stalled.write_all(&bytes).await.unwrap();
        let (closed, _) = raw_h2::closed_within(&mut stalled, PATIENCE).await;
        assert!(closed, "an h2 body that stopped halfway was never cut off");
    });
    assert_eq!(timeouts_counted(&running), 1);
}

#[test]
fn an_h2_client_that_grants_no_window_for_its_answer_is_let_go() {
    let upstream = FakeRegistry::start();
    // A document several times the 64 KiB a client grants before its first WINDOW_UPDATE.
    let blob: String = (0..400_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    upstream.publish_with("huge", "1.0.0", serde_json::json!({ "blob": blob }), None);
    let (running, port, ca, _dir) = https_sluice(&upstream, QUICK);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut sleeper = raw_h2::connect(port, &ca).await;
        raw_h2::hello(&mut sleeper, &[]).await;
        let block = raw_h2::block("GET", "/huge", &[("accept", "application/json")]);
        sleeper
            .write_all(&raw_h2::frame(
                raw_h2::HEADERS,
                raw_h2::END_HEADERS | raw_h2::END_STREAM,
                1,
                &block,
            ))
            .await
            .unwrap();
        // It reads every frame (its socket never fills) but sends no WINDOW_UPDATE.
        let (closed, frames) = raw_h2::closed_within(&mut sleeper, PATIENCE).await;
        assert!(
            closed,
            "an h2 client that granted no window was never let go"
        );
        let data: usize = frames
            .iter()
            .filter(|f| f.0 == raw_h2::DATA && f.2 == 1)
            .map(|f| f.3.len())
            .sum();
        assert!(
            frames.iter().any(|f| f.0 == raw_h2::HEADERS && f.2 == 1),
            "{frames:?}"
        );
        assert!(data <= 65_535, "{data} bytes sent past the window");
    });
    assert_eq!(timeouts_counted(&running), 1);
    // A client that reads gets the whole document over h2.
    let whole = get(&client(&ca), &format!("https://127.0.0.1:{port}/huge")).unwrap();
    assert_eq!(whole, (200, reqwest::Version::HTTP_2));
}

#[test]
fn an_idle_h2_connection_is_closed_after_the_keepalive_time() {
    let upstream = FakeRegistry::start();
    upstream.publish("left", "1.0.0", &[]);
    let (_running, port, ca, _dir) = https_sluice(&upstream, "");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut idle = raw_h2::connect(port, &ca).await;
        raw_h2::hello(&mut idle, &[]).await;
        let block = raw_h2::block("GET", "/-/ping", &[]);
        idle.write_all(&raw_h2::frame(
            raw_h2::HEADERS,
            raw_h2::END_HEADERS | raw_h2::END_STREAM,
            1,
            &block,
        ))
        .await
        .unwrap();
        // Answered, then idle: closed after the keep-alive time (60 s), as an HTTP/1 one.
        let (closed, frames) =
            raw_h2::closed_within(&mut idle, std::time::Duration::from_secs(120)).await;
        assert!(closed, "an idle h2 connection was kept for 2 minutes");
        assert!(
            frames.iter().any(|f| f.0 == raw_h2::HEADERS && f.2 == 1),
            "{frames:?}"
        );
    });
}

#[test]
fn h2_bounds_concurrent_streams_and_header_lists() {
    let upstream = FakeRegistry::start();
    let (_running, port, ca, _dir) = https_sluice(&upstream, "");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        // The bounds are announced.
        let mut conn = raw_h2::connect(port, &ca).await;
        raw_h2::hello(&mut conn, &[]).await;
        let settings = raw_h2::server_settings(&mut conn).await;
        assert!(settings.contains(&(0x3, 100)), "{settings:?}");
        assert!(settings.contains(&(0x6, 64 << 10)), "{settings:?}");
        // And kept: 100 requests waiting for their bodies, and the 101st is refused.
        let block = raw_h2::block(
            "POST",
            "/-/npm/v1/security/advisories/bulk",
            &[
                ("content-type", "application/json"),
                ("content-length", "2"),
            ],
        );
        let mut bytes = Vec::new();
        for n in 0..101u32 {
            bytes.extend(raw_h2::frame(
                raw_h2::HEADERS,
                raw_h2::END_HEADERS,
                1 + 2 * n,
                &block,
            ));
        }
        conn.write_all(&bytes).await.unwrap();
        let refused = tokio::time::timeout(PATIENCE, async {
            while let Some((kind, _, stream, payload)) = raw_h2::next(&mut conn).await {
                if kind == raw_h2::RST_STREAM {
                    return Some((stream, payload));
                }
            }
            None
        })
        .await
        .unwrap();
        // REFUSED_STREAM (7) for the stream past the bound.
        assert_eq!(refused, Some((201, vec![0, 0, 0, 7])));

        // A header list over 64 KiB is refused: 431, a stream reset or the connection ended.
        let mut big = raw_h2::connect(port, &ca).await;
        raw_h2::hello(&mut big, &[]).await;
        let filler = "x".repeat(70_000);
        let block = raw_h2::block("GET", "/-/ping", &[("x-filler", &filler)]);
        let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
        let mut bytes = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = if i + 1 == chunks.len() {
                raw_h2::END_HEADERS
            } else {
                0
            };
            let kind = if i == 0 {
                raw_h2::HEADERS
            } else {
                raw_h2::CONTINUATION
            };
            let flags = last | if i == 0 { raw_h2::END_STREAM } else { 0 };
            bytes.extend(raw_h2::frame(kind, flags, 1, chunk));
        }
        let _ = big.write_all(&bytes).await;
        let refused = tokio::time::timeout(PATIENCE, async {
            while let Some((kind, _, stream, block)) = raw_h2::next(&mut big).await {
                match (kind, stream) {
                    (raw_h2::GOAWAY, _) | (raw_h2::RST_STREAM, 1) => return true,
                    // 431, its digits Huffman-coded or plain.
                    (raw_h2::HEADERS, 1) => {
                        return block.ends_with(&[0x83, 0x69, 0x90, 0xff])
                            || block.ends_with(b"\x03431")
                    }
                    _ => {}
                }
            }
            true
        })
        .await
        .unwrap();
        assert!(refused, "a header list over 64 KiB was served");
    });
}
