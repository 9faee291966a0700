//! sluice as a child process (`sluice serve`), and what /proc says about its memory.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{eventually, Reaped};

/// The resident set of process `pid` in KiB.
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The address a test configuration listens on.
pub fn listen_addr(config: &Path) -> SocketAddr {
    let text = std::fs::read_to_string(config).unwrap();
    text.lines()
        .find(|l| l.starts_with("listen"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Run `sluice serve` on the folder's configuration; returns the child and its address.
pub fn serve_binary(dir: &Path) -> (Reaped, SocketAddr) {
    let config = dir.join("sluice.toml");
    let addr = listen_addr(&config);
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child = Reaped(child);
    assert!(eventually(10, || TcpStream::connect(addr).is_ok()));
    (child, addr)
}
