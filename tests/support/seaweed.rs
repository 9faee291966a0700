//! A real S3 server for the fleet tests: SeaweedFS (`weed mini`) on 127.0.0.1, every port
//! chosen here, its data in a temporary folder, stopped when dropped.
//!
//! `weed` is looked up in `$SLUICE_WEED`, then `target/tools/seaweedfs/bin/weed` (where
//! `scripts/setup --tests` puts it), then `PATH`. When it cannot be found the test says so
//! and passes — except under CI (`CI` set), where a test that cannot run fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The credentials the server accepts.
pub const ACCESS_KEY: &str = "sluice-test";
/// The secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "sluice-test-secret";

/// A running SeaweedFS with one bucket.
pub struct Seaweed {
    child: Child,
    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
    dir: tempfile::TempDir,
    ports: Ports,
    weed: PathBuf,
}

#[derive(Clone, Copy)]
struct Ports {
    base: u16,
}

fn weed_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("SLUICE_WEED") {
        return Some(PathBuf::from(path));
    }
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/seaweedfs/bin/weed");
    if tools.exists() {
        return Some(tools);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("weed"))
            .find(|candidate| candidate.is_file())
    })
}

/// Seven free consecutive ports below 45000 (SeaweedFS also opens each port + 10000 for gRPC).
fn free_ports() -> Ports {
    loop {
        let base = 20_000 + fastrand::u16(..24_000);
        let free = (0..7).all(|i| {
            TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + i + 10_000)).is_ok()
        });
        if free {
            return Ports { base };
        }
    }
}

impl Seaweed {
    /// Start SeaweedFS with bucket `sluice`, or `None` (after saying why) when `weed` is not
    /// installed here. Panics under CI instead: there, every test must run.
    pub fn start() -> Option<Seaweed> {
        let Some(weed) = weed_binary() else {
            super::cannot_run(
                "SeaweedFS (`weed`) is not installed: the s3 tests cannot run here \
                 (scripts/setup --tests installs it into target/tools)",
            );
            return None;
        };
        for _ in 0..3 {
            if let Some(seaweed) = Self::try_start(&weed) {
                return Some(seaweed);
            }
        }
        panic!("SeaweedFS did not start (three tries)");
    }

    fn try_start(weed: &std::path::Path) -> Option<Seaweed> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("identities.json"),
            format!(
                r#"{{"identities":[{{"name":"sluice","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let ports = free_ports();
        let child = Self::spawn(weed, dir.path(), ports);
        let mut seaweed = Seaweed {
            child,
            endpoint: format!("http://127.0.0.1:{}", ports.base + 3),
            bucket: "sluice".into(),
            dir,
            ports,
            weed: weed.to_path_buf(),
        };
        if seaweed.wait_ready(Duration::from_secs(60)) {
            Some(seaweed)
        } else {
            let _ = seaweed.child.kill();
            None
        }
    }

    fn spawn(weed: &std::path::Path, dir: &std::path::Path, ports: Ports) -> Child {
        let p = |i: u16| (ports.base + i).to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("weed.log"))
            .unwrap();
        Command::new(weed)
            .arg("mini")
            .arg(format!("-dir={}", dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={}", p(0)))
            .arg(format!("-volume.port={}", p(1)))
            .arg(format!("-filer.port={}", p(2)))
            .arg(format!("-s3.port={}", p(3)))
            .arg(format!("-admin.port={}", p(4)))
            .arg(format!("-s3.port.iceberg={}", p(5)))
            .arg(format!("-s3.port.lance={}", p(6)))
            .args(["-webdav=false", "-admin.ui=false", "-bucket=sluice"])
            // No statistics sent out: everything stays on 127.0.0.1.
            .arg("-master.telemetry=false")
            .arg(format!(
                "-s3.config={}",
                dir.join("identities.json").display()
            ))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    /// Start the server again on the same ports and data, after [`Seaweed::stop`].
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.weed, self.dir.path(), self.ports);
        assert!(
            self.wait_ready(Duration::from_secs(60)),
            "SeaweedFS did not come back"
        );
    }

    /// Whether the S3 gateway answers signed requests and the bucket is there (SeaweedFS
    /// creates it shortly after the port opens).
    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let text = format!(
            "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n{}",
            self.storage("data", "ready/")
        );
        let config =
            sluice::config::Config::parse(&text, "seaweed.toml", std::path::Path::new("/tmp"))
                .unwrap();
        let s3 = config.storage.s3.unwrap();
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let ready = runtime.block_on(async {
                let store = sluice::store::S3Store::connect(
                    &s3,
                    "ready",
                    Duration::from_secs(3),
                    Duration::from_secs(2),
                )
                .ok()?;
                store.prove_conditional_writes().await.ok()
            });
            if ready.is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The `[storage]` tables for a sluice on this bucket, its local tier in `dir`.
    pub fn storage(&self, dir: &str, prefix: &str) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\ndir = \"{dir}\"\nmemory = \"64MiB\"\n\n\
             [storage.s3]\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"us-east-1\"\n\
             prefix = \"{prefix}\"\nallow_http = true\naccess_key_id = \"{ACCESS_KEY}\"\n\
             secret_access_key = \"{SECRET_KEY}\"\n",
            self.endpoint, self.bucket
        )
    }

    /// Stop the server (to test a bucket that went away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.stop();
    }
}
