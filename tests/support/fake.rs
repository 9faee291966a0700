//! A fake npm registry on 127.0.0.1:0: packuments and real gzipped tarballs with correct
//! integrity, a replication feed, request counting and fault knobs.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One published version.
#[derive(Clone)]
pub struct Version {
    pub manifest: Value,
    pub tarball: Vec<u8>,
    pub time: String,
}

/// What can go wrong, on purpose.
#[derive(Clone, Default)]
pub struct Faults {
    /// Close every connection at once (as if the registry were unreachable).
    pub down: bool,
    /// Answer every request with this status.
    pub status: Option<u16>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Serve tarballs with one byte flipped.
    pub corrupt_tarballs: bool,
    /// Serve packuments as HTML.
    pub html: bool,
    /// Answer with this body (content type, bytes) instead of the real one.
    pub body: Option<(String, Vec<u8>)>,
    /// Promise the whole body in `content-length`, send half of it, close.
    pub truncate: bool,
    /// Send the headers and this many body bytes, then stall (hold the connection).
    pub stall_after: Option<usize>,
    /// Send the body one byte at a time with this pause between bytes.
    pub drip: Option<Duration>,
    /// Answer 302 to this location.
    pub redirect: Option<String>,
    /// Answer with a gzip-encoded body that inflates to this many zero bytes.
    pub gzip_bomb: Option<usize>,
    /// Send `retry-after` with this many seconds (with `status`).
    pub retry_after: Option<u64>,
}

#[derive(Default)]
struct State {
    packages: BTreeMap<String, BTreeMap<String, Version>>,
    tags: HashMap<String, BTreeMap<String, String>>,
    /// Packages unpublished entirely (404 while we still remember them).
    gone: std::collections::HashSet<String>,
    /// Versions served without a `time` entry, as (name, version).
    untimed: std::collections::HashSet<(String, String)>,
    counts: HashMap<String, usize>,
    faults: Faults,
    /// Requests that carried an `Authorization` header.
    authorized: usize,
    /// POST requests: (path, content-encoding, body).
    posts: Vec<(String, Option<String>, Vec<u8>)>,
    /// The replication feed: (seq, name, deleted).
    feed: Vec<(u64, String, bool)>,
    next_seq: u64,
}

/// A running fake registry; stops when dropped.
pub struct FakeRegistry {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeRegistry {
    pub fn start() -> FakeRegistry {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            next_seq: 10,
            ..State::default()
        }));
        let served = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = served.clone();
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = connection(stream, state, addr).await;
                });
            }
        });
        FakeRegistry {
            addr,
            state,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Publish `name@version` with `dependencies` (name, range) and a publish time.
    pub fn publish(&self, name: &str, version: &str, dependencies: &[(&str, &str)]) {
        self.publish_with(
            name,
            version,
            json!({"dependencies": deps(dependencies)}),
            None,
        );
    }

    /// Publish with extra manifest fields (`peerDependencies`, `optionalDependencies`…) and
    /// an optional publish time (default: a fixed old date).
    pub fn publish_with(&self, name: &str, version: &str, extra: Value, time: Option<&str>) {
        let mut package_json = json!({
            "name": name,
            "version": version,
            "main": "index.js",
        });
        if let (Some(target), Some(extra)) = (package_json.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                target.insert(k.clone(), v.clone());
            }
        }
        let index = format!("module.exports = {};\n", json!(format!("{name}@{version}")));
        let tarball = make_tarball(&package_json, &index);
        let integrity = ssri::IntegrityOpts::new()
            .algorithm(ssri::Algorithm::Sha512)
            .chain(&tarball)
            .result()
            .to_string();
        let shasum = ssri::IntegrityOpts::new()
            .algorithm(ssri::Algorithm::Sha1)
            .chain(&tarball)
            .result()
            .to_hex()
            .1;
        let base = name.rsplit('/').next().unwrap_or(name);
        let mut manifest = package_json.clone();
        let object = manifest.as_object_mut().unwrap();
        object.insert("_id".into(), json!(format!("{name}@{version}")));
        object.insert(
            "dist".into(),
            json!({
                "tarball": format!("{}{name}/-/{base}-{version}.tgz", self.url()),
                "integrity": integrity,
                "shasum": shasum,
            }),
        );
        let mut state = self.state.lock().unwrap();
        state.gone.remove(name);
        state.packages.entry(name.to_string()).or_default().insert(
            version.to_string(),
            Version {
                manifest,
                tarball,
                time: time.unwrap_or("2020-01-01T00:00:00.000Z").to_string(),
            },
        );
        // latest: the highest non-prerelease version.
        let latest = state.packages[name]
            .keys()
            .filter(|v| !v.contains('-'))
            .filter_map(|v| nodejs_semver::Version::parse(v).ok())
            .max()
            .map(|v| v.to_string());
        if let Some(latest) = latest {
            state
                .tags
                .entry(name.to_string())
                .or_default()
                .insert("latest".into(), latest);
        }
        let seq = state.next_seq;
        state.next_seq += 10;
        state.feed.push((seq, name.to_string(), false));
    }

    /// Publish `name@version` with a feed entry inserted behind the entries already listed
    /// (the replication feed is known to do this): its seq is `behind` less than the newest.
    pub fn publish_late(&self, name: &str, version: &str, behind: u64) {
        self.publish(name, version, &[]);
        let mut state = self.state.lock().unwrap();
        if let Some(entry) = state.feed.pop() {
            let newest = state.feed.iter().map(|e| e.0).max().unwrap_or(0);
            // Seqs are spaced by 10, so a late entry fits between two others.
            state
                .feed
                .push((newest.saturating_sub(behind * 10) + 5, entry.1, entry.2));
        }
    }

    /// Set a dist-tag.
    pub fn tag(&self, name: &str, tag: &str, version: &str) {
        let mut state = self.state.lock().unwrap();
        state
            .tags
            .entry(name.to_string())
            .or_default()
            .insert(tag.into(), version.into());
    }

    /// Remove one version (as an unpublish does).
    pub fn unpublish_version(&self, name: &str, version: &str) {
        let mut state = self.state.lock().unwrap();
        if let Some(versions) = state.packages.get_mut(name) {
            versions.remove(version);
        }
    }

    /// Remove a whole package: its packument answers 404.
    pub fn unpublish(&self, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.gone.insert(name.to_string());
        let seq = state.next_seq;
        state.next_seq += 10;
        state.feed.push((seq, name.to_string(), true));
    }

    /// Serve `name@version` without a `time` entry (its publish time unknown).
    pub fn drop_time(&self, name: &str, version: &str) {
        let mut state = self.state.lock().unwrap();
        state
            .untimed
            .insert((name.to_string(), version.to_string()));
    }

    /// Serve `name@version` with its `dist.<field>` set to `value` (`Null` removes it).
    pub fn set_dist(&self, name: &str, version: &str, field: &str, value: Value) {
        let mut state = self.state.lock().unwrap();
        let manifest = &mut state
            .packages
            .get_mut(name)
            .unwrap()
            .get_mut(version)
            .unwrap()
            .manifest;
        let dist = manifest["dist"].as_object_mut().unwrap();
        match value {
            Value::Null => dist.remove(field),
            value => dist.insert(field.to_string(), value),
        };
    }

    /// The tarball bytes of a version.
    pub fn tarball(&self, name: &str, version: &str) -> Vec<u8> {
        self.state.lock().unwrap().packages[name][version]
            .tarball
            .clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        // The bomb is built here, once, not while a request waits for it: a slow answer would
        // test the upstream timeout instead of the size limit.
        if let Some(size) = faults.gzip_bomb {
            gzip_bomb(size);
        }
        self.state.lock().unwrap().faults = faults;
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().faults.down = down;
    }

    /// How many requests a path received (path as sent, e.g. `/@s%2fa`).
    pub fn count(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .counts
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received in all.
    pub fn total_requests(&self) -> usize {
        self.state.lock().unwrap().counts.values().sum()
    }

    /// Requests received for paths starting with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .counts
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// How many requests carried an `Authorization` header.
    pub fn authorized(&self) -> usize {
        self.state.lock().unwrap().authorized
    }

    /// POST requests received: (path, content-encoding, body).
    pub fn posts(&self) -> Vec<(String, Option<String>, Vec<u8>)> {
        self.state.lock().unwrap().posts.clone()
    }

    /// The packument as served, for tests that compare.
    pub fn packument(&self, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        packument(&state, name, &self.url())
    }
}

pub fn deps(list: &[(&str, &str)]) -> Value {
    Value::Object(
        list.iter()
            .map(|(n, r)| ((*n).to_string(), json!(r)))
            .collect::<Map<_, _>>(),
    )
}

fn make_tarball(package_json: &Value, index: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, body) in [
        (
            "package/package.json",
            serde_json::to_vec_pretty(package_json).unwrap(),
        ),
        ("package/index.js", index.as_bytes().to_vec()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_500_000_000);
        header.set_cksum();
        builder.append_data(&mut header, path, &body[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn packument(state: &State, name: &str, _base: &str) -> Option<Value> {
    if state.gone.contains(name) {
        return None;
    }
    let versions = state.packages.get(name)?;
    let mut time = Map::new();
    time.insert("created".into(), json!("2019-01-01T00:00:00.000Z"));
    let timed = |v: &String| !state.untimed.contains(&(name.to_string(), v.clone()));
    let modified = versions
        .iter()
        .filter(|(v, _)| timed(v))
        .map(|(_, info)| info.time.clone())
        .max();
    time.insert(
        "modified".into(),
        json!(modified.unwrap_or_else(|| "2019-01-01T00:00:00.000Z".into())),
    );
    for (v, info) in versions {
        if timed(v) {
            time.insert(v.clone(), json!(info.time));
        }
    }
    let tags = state.tags.get(name).cloned().unwrap_or_default();
    let tags: BTreeMap<String, String> = tags
        .into_iter()
        .filter(|(_, v)| versions.contains_key(v))
        .collect();
    Some(json!({
        "_id": name,
        "name": name,
        "dist-tags": tags,
        "versions": versions.iter().map(|(v, info)| (v.clone(), info.manifest.clone())).collect::<Map<_, _>>(),
        "time": time,
    }))
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let mut first = lines.next()?.split(' ');
            let method = first.next()?.to_string();
            let path = first.next()?.to_string();
            let headers: HashMap<String, String> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let length: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < length {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf.drain(..length).collect();
            return Some(Request {
                method,
                path,
                headers,
                body,
            });
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connection(
    mut stream: TcpStream,
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf).await {
        let faults = {
            let mut s = state.lock().unwrap();
            *s.counts.entry(request.path.clone()).or_default() += 1;
            if request.headers.contains_key("authorization") {
                s.authorized += 1;
            }
            if request.method == "POST" {
                s.posts.push((
                    request.path.clone(),
                    request.headers.get("content-encoding").cloned(),
                    request.body.clone(),
                ));
            }
            s.faults.clone()
        };
        if faults.down {
            return Ok(());
        }
        if let Some(delay) = faults.delay {
            tokio::time::sleep(delay).await;
        }
        let (status, content_type, body, etag) = match (&faults.status, &faults.body) {
            (Some(status), _) => (
                *status,
                "application/json".to_string(),
                b"{}".to_vec(),
                None,
            ),
            (None, Some((content_type, body))) => (200, content_type.clone(), body.clone(), None),
            (None, None) => {
                let (status, content_type, body, etag) = answer(&state, &request, addr, &faults);
                (status, content_type.to_string(), body, etag)
            }
        };
        if let Some(location) = &faults.redirect {
            let head =
                format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            continue;
        }
        let if_none_match = request.headers.get("if-none-match");
        // A fault that spoils the body spoils a revalidation too: a 304 would carry none.
        let spoiled = faults.gzip_bomb.is_some()
            || faults.truncate
            || faults.stall_after.is_some()
            || faults.drip.is_some();
        let not_modified = !spoiled && etag.is_some() && etag.as_ref() == if_none_match;
        let mut head = format!(
            "HTTP/1.1 {} X\r\ncontent-type: {content_type}\r\n",
            if not_modified { 304 } else { status }
        );
        if let Some(etag) = &etag {
            head.push_str(&format!("etag: {etag}\r\n"));
        }
        if let Some(seconds) = faults.retry_after {
            head.push_str(&format!("retry-after: {seconds}\r\n"));
        }
        let mut body = if not_modified || request.method == "HEAD" {
            Vec::new()
        } else {
            body
        };
        if let Some(size) = faults.gzip_bomb {
            body = gzip_bomb(size).to_vec();
            head.push_str("content-encoding: gzip\r\n");
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        stream.write_all(head.as_bytes()).await?;
        if faults.truncate {
            stream.write_all(&body[..body.len() / 2]).await?;
            return Ok(());
        }
        if let Some(after) = faults.stall_after {
            stream.write_all(&body[..after.min(body.len())]).await?;
            tokio::time::sleep(Duration::from_secs(120)).await;
            return Ok(());
        }
        if let Some(pause) = faults.drip {
            for byte in &body {
                stream.write_all(&[*byte]).await?;
                tokio::time::sleep(pause).await;
            }
            continue;
        }
        stream.write_all(&body).await?;
        stream.flush().await?;
    }
    Ok(())
}

fn answer(
    state: &Mutex<State>,
    request: &Request,
    addr: SocketAddr,
    faults: &Faults,
) -> (u16, &'static str, Vec<u8>, Option<String>) {
    let base = format!("http://{addr}/");
    let path = request.path.split('?').next().unwrap_or("");
    let query = request.path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .to_string();
    let state = state.lock().unwrap();
    let not_found = (
        404,
        "application/json",
        br#"{"error":"Not found"}"#.to_vec(),
        None,
    );
    if decoded == "/" || decoded.is_empty() {
        let body = json!({"update_seq": state.next_seq - 10}).to_string();
        return (200, "application/json", body.into_bytes(), None);
    }
    if request.method == "POST" {
        return match path {
            "/-/npm/v1/security/advisories/bulk" => (200, "application/json", b"{}".to_vec(), None),
            "/-/npm/v1/security/audits/quick" => (
                410,
                "application/json",
                br#"{"error":"gone"}"#.to_vec(),
                None,
            ),
            _ => (405, "application/json", b"{}".to_vec(), None),
        };
    }
    if decoded == "/-/npm/v1/keys" {
        let body = br#"{"keys":[{"expires":null,"keyid":"SHA256:fake","keytype":"ecdsa-sha2-nistp256","scheme":"ecdsa-sha2-nistp256","key":"MFkw"}]}"#;
        return (200, "application/json", body.to_vec(), None);
    }
    if decoded == "/_changes" {
        return (
            200,
            "application/json",
            changes(&state, query).into_bytes(),
            None,
        );
    }
    let rest = decoded.trim_start_matches('/');
    let (name, tail) = if rest.starts_with('@') {
        let mut parts = rest.splitn(3, '/');
        let scope = parts.next().unwrap_or("");
        let base_name = parts.next().unwrap_or("");
        (format!("{scope}/{base_name}"), parts.next().unwrap_or(""))
    } else {
        let mut parts = rest.splitn(2, '/');
        (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or(""),
        )
    };
    if tail.is_empty() {
        let Some(doc) = packument(&state, &name, &base) else {
            return not_found;
        };
        if faults.html {
            return (
                200,
                "text/html",
                b"<html>captive portal</html>".to_vec(),
                None,
            );
        }
        let body = doc.to_string().into_bytes();
        let etag = format!("\"{:x}\"", xxhash_rust::xxh3::xxh3_64(&body));
        return (200, "application/json", body, Some(etag));
    }
    if let Some(file) = tail.strip_prefix("-/") {
        let Some(versions) = state.packages.get(&name) else {
            return not_found;
        };
        for version in versions.values() {
            let url = version.manifest["dist"]["tarball"].as_str().unwrap_or("");
            if url.ends_with(&format!("/-/{file}")) {
                let mut bytes = version.tarball.clone();
                if faults.corrupt_tarballs {
                    let last = bytes.len() - 1;
                    bytes[last] ^= 0xff;
                }
                return (200, "application/octet-stream", bytes, None);
            }
        }
        return not_found;
    }
    not_found
}

fn changes(state: &State, query: &str) -> String {
    let mut since = 0u64;
    let mut limit = 10_000usize;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("since", v)) => since = v.parse().unwrap_or(0),
            Some(("limit", v)) => limit = v.parse().unwrap_or(10_000),
            _ => {}
        }
    }
    let mut feed = state.feed.clone();
    feed.sort_by_key(|e| e.0);
    let results: Vec<Value> = feed
        .iter()
        .filter(|(seq, _, _)| *seq > since)
        .take(limit)
        .map(|(seq, name, deleted)| {
            let mut entry =
                json!({"seq": seq, "id": name, "changes": [{"rev": format!("{seq}-x")}]});
            if *deleted {
                entry["deleted"] = json!(true);
            }
            entry
        })
        .collect();
    let last_seq = results
        .last()
        .and_then(|r| r["seq"].as_u64())
        .unwrap_or(since);
    json!({"results": results, "last_seq": last_seq}).to_string()
}

/// A gzip body that inflates to `size` zero bytes, built once per size.
fn gzip_bomb(size: usize) -> std::sync::Arc<Vec<u8>> {
    static BOMBS: std::sync::OnceLock<Mutex<HashMap<usize, std::sync::Arc<Vec<u8>>>>> =
        std::sync::OnceLock::new();
    let bombs = BOMBS.get_or_init(Default::default);
    let mut bombs = bombs.lock().unwrap();
    bombs
        .entry(size)
        .or_insert_with(|| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..size.div_ceil(zeros.len()) {
                gz.write_all(&zeros).unwrap();
            }
            std::sync::Arc::new(gz.finish().unwrap())
        })
        .clone()
}
