//! The configuration: the TOML file model (serde, unknown keys rejected) and the validated
//! [`Config`] the rest of the program sees.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// The shipped default configuration, used when no file is found at the default path.
pub const EMBEDDED: &str = include_str!("../conf/sluice.toml");

/// The default configuration path, relative to the working folder.
pub const DEFAULT_PATH: &str = "conf/sluice.toml";

/// A configuration that cannot be used; the message names the file, the key and the line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub file: String,
    /// What is wrong, with the key and line when known.
    pub message: String,
}

/// The validated configuration; `sluice check` prints it by serializing it.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Where this configuration was read from (`<embedded>` for the built-in one).
    #[serde(skip)]
    pub source: String,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[upstream]`.
    pub upstream: UpstreamConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// `[mirror]`.
    pub mirror: MirrorConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[publish]`.
    pub publish: PublishConfig,
    /// `[[plugins]]`, in run order.
    pub plugins: Vec<PluginConfig>,
}

/// `[cluster]`: this node's place in a fleet sharing one bucket.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    /// This node's name (default: the host name); in status, metrics and logs.
    pub node: String,
    /// Background-work leadership lapses this long after its holder's last renewal.
    #[serde(serialize_with = "human_duration")]
    pub lease: Duration,
    /// A change made by any node is served by every node within this.
    #[serde(serialize_with = "human_duration")]
    pub sync: Duration,
}

/// `[auth]`: who may read and publish.
#[derive(Debug, Clone, Serialize)]
pub struct AuthConfig {
    /// The users file: one `name:<argon2id PHC string>` a line; hot-reloaded.
    pub users: PathBuf,
    /// Who may read.
    pub read: Read,
    /// Whether `npm adduser` may create users.
    pub adduser: bool,
}

/// `auth.read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Read {
    /// Anyone may read.
    Anonymous,
    /// Every request but `/-/ping` and login needs a valid token.
    Authenticated,
}

/// `[publish]`: the company's own packages.
#[derive(Debug, Clone, Serialize)]
pub struct PublishConfig {
    /// Scopes published here (`@acme`), never looked up upstream.
    pub scopes: Vec<String>,
    /// Unscoped names that may be published here.
    pub packages: Vec<String>,
    /// How long after its publish a version may be unpublished.
    #[serde(serialize_with = "human_duration")]
    pub unpublish: Duration,
    /// The largest publish body, in bytes.
    pub max_size: u64,
    /// Who may publish to a scope (default: any user).
    pub owners: std::collections::BTreeMap<String, Vec<String>>,
}

impl PublishConfig {
    /// Whether `name` is published here (and so never looked up upstream).
    pub fn is_private(&self, name: &str) -> bool {
        if self.packages.iter().any(|p| p == name) {
            return true;
        }
        match name.split_once('/') {
            Some((scope, _)) => self.scopes.iter().any(|s| s.eq_ignore_ascii_case(scope)),
            None => false,
        }
    }

    /// Whether `user` may publish `name`.
    pub fn may_publish(&self, user: &str, name: &str) -> bool {
        // A scope is one whatever its case (`@Acme` in the file is `@acme`); an unscoped
        // legacy name (`JSONStream`) is its own, case and all.
        let (key, any_case) = match name.split_once('/') {
            Some((scope, _)) => (scope, true),
            None => (name, false),
        };
        let mut listed = self
            .owners
            .iter()
            .filter(|(k, _)| *k == key || (any_case && k.eq_ignore_ascii_case(key)))
            .peekable();
        if listed.peek().is_none() {
            return true;
        }
        listed.any(|(_, owners)| owners.iter().any(|o| o == user))
    }
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// cacache in `storage.dir` (the default).
    Disk,
    /// An S3-compatible bucket (`[storage.s3]`).
    S3,
}

/// `[storage.s3]`.
#[derive(Debug, Clone, Serialize)]
pub struct S3Config {
    /// The endpoint URL; `None` for AWS (then `region` picks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// The region.
    pub region: String,
    /// The key prefix inside the bucket (empty, or ending in `/`).
    pub prefix: String,
    /// Whether a plain-http endpoint is allowed.
    pub allow_http: bool,
    /// The access key id, when not from the environment.
    #[serde(skip)]
    pub access_key_id: Option<String>,
    /// The secret access key, when not from the environment.
    #[serde(skip)]
    pub secret_access_key: Option<String>,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The base of every tarball link served, ending in `/`.
    pub public_url: String,
    /// How long SIGTERM waits for in-flight requests.
    #[serde(serialize_with = "human_duration")]
    pub grace_period: Duration,
    /// Worker threads of the HTTP server.
    pub threads: usize,
    /// How long a client has to send a whole request header.
    #[serde(serialize_with = "human_duration")]
    pub header_timeout: Duration,
    /// How long a client has to send a whole request body.
    #[serde(serialize_with = "human_duration")]
    pub body_timeout: Duration,
    /// How long a response write may wait for a client that reads nothing.
    #[serde(serialize_with = "human_duration")]
    pub send_timeout: Duration,
    /// The PEM certificate chain to serve HTTPS with (with `tls_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

/// `[upstream]`.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    /// The upstream registry's base URL, ending in `/`.
    pub registry: String,
    /// Connect and read timeout of upstream requests.
    #[serde(serialize_with = "human_duration")]
    pub timeout: Duration,
    /// The largest packument accepted from upstream, in bytes (after decompression).
    pub max_packument: u64,
    /// The largest tarball accepted from upstream, in bytes.
    pub max_tarball: u64,
    /// How many upstream requests background work (refresh, add-package) makes at once.
    pub concurrency: usize,
    /// The replication feed's base URL (mirror mode), ending in `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<String>,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    /// The level filter (`info`, `debug`, `sluice=debug,warn`…); `RUST_LOG` wins.
    pub level: String,
    /// JSON lines rather than text.
    #[serde(rename = "format", serialize_with = "log_format")]
    pub json: bool,
}

/// `[mirror]`: the replication follower of mirror mode.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorConfig {
    /// Where to start when the store has no checkpoint.
    pub since: Since,
    /// How long to wait between polls once caught up.
    #[serde(serialize_with = "human_duration")]
    pub interval: Duration,
    /// Changes asked for per page (at most 10000).
    pub batch: usize,
    /// How many recent pages are re-read each cycle, for entries the feed inserts late.
    pub window: usize,
}

/// `mirror.since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Since {
    /// Follow from the feed's head.
    Now,
    /// From this sequence (`"0"` backfills everything the feed lists).
    Seq(String),
}

/// `[storage]`.
#[derive(Debug, Clone, Serialize)]
pub struct StorageConfig {
    /// The store's folder.
    pub dir: PathBuf,
    /// The bound of the in-memory hot cache, in bytes.
    pub memory: u64,
    /// The largest tarball held whole in the hot cache, in bytes; larger ones stream.
    pub hot_tarball_max: u64,
    /// Where the store is.
    pub backend: Backend,
    /// With `backend = "s3"`: the bound of this node's local disk tier in `dir`, in bytes.
    pub local_max: u64,
    /// `[storage.s3]`, with `backend = "s3"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
}

/// `[policy]`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyConfig {
    /// Which packages are served.
    pub mode: Mode,
    /// Whitelist mode: fetch and add unknown packages on request.
    pub read_through: bool,
    /// The whitelist file.
    pub whitelist: PathBuf,
    /// How long a stored packument is served before it is revalidated with upstream.
    #[serde(serialize_with = "human_duration")]
    pub refresh: Duration,
    /// Which tarballs background refresh copies eagerly.
    pub tarballs: Tarballs,
}

/// `policy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only packages on the whitelist (plus read-through additions).
    Whitelist,
    /// Every package.
    Mirror,
}

/// `policy.tarballs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tarballs {
    /// Tarballs are fetched when a client asks for them.
    OnDemand,
    /// The `latest` version's tarball is copied eagerly.
    Latest,
    /// Every version's tarball is copied eagerly.
    All,
}

/// One `[[plugins]]` table.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// `kind = "…"`.
    pub kind: String,
    /// The table's other keys, for the plugin's own config.
    pub table: toml::Table,
    /// The line the table starts on.
    pub line: usize,
    /// The configuration file's folder, to resolve the plugin's relative paths from.
    pub base: PathBuf,
}

/// The file model of the configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    upstream: UpstreamFile,
    #[serde(default)]
    storage: StorageFile,
    #[serde(default)]
    policy: PolicyFile,
    #[serde(default)]
    mirror: MirrorFile,
    #[serde(default)]
    log: LogFile,
    #[serde(default)]
    cluster: ClusterFile,
    #[serde(default)]
    auth: AuthFile,
    #[serde(default)]
    publish: PublishFile,
    #[serde(default)]
    plugins: Vec<toml::Spanned<toml::Table>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    users: Option<String>,
    read: Option<Read>,
    adduser: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishFile {
    scopes: Option<toml::Spanned<Vec<String>>>,
    packages: Option<Vec<String>>,
    unpublish: Option<HumanDuration>,
    max_size: Option<ByteSize>,
    owners: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    node: Option<String>,
    lease: Option<toml::Spanned<HumanDuration>>,
    sync: Option<toml::Spanned<HumanDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3File {
    endpoint: Option<toml::Spanned<String>>,
    bucket: Option<String>,
    region: Option<String>,
    prefix: Option<String>,
    allow_http: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    listen: Option<toml::Spanned<String>>,
    public_url: Option<toml::Spanned<String>>,
    grace_period: Option<HumanDuration>,
    threads: Option<usize>,
    header_timeout: Option<toml::Spanned<HumanDuration>>,
    body_timeout: Option<toml::Spanned<HumanDuration>>,
    send_timeout: Option<toml::Spanned<HumanDuration>>,
    tls_cert: Option<toml::Spanned<String>>,
    tls_key: Option<toml::Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    registry: Option<toml::Spanned<String>>,
    timeout: Option<HumanDuration>,
    max_packument: Option<ByteSize>,
    max_tarball: Option<ByteSize>,
    concurrency: Option<usize>,
    changes: Option<toml::Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    level: Option<String>,
    format: Option<LogFormatFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogFormatFile {
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorFile {
    since: Option<toml::Spanned<toml::Value>>,
    interval: Option<HumanDuration>,
    batch: Option<toml::Spanned<usize>>,
    window: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageFile {
    dir: Option<String>,
    memory: Option<ByteSize>,
    hot_tarball_max: Option<ByteSize>,
    backend: Option<toml::Spanned<Backend>>,
    local_max: Option<ByteSize>,
    s3: Option<toml::Spanned<S3File>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    mode: Option<Mode>,
    read_through: Option<bool>,
    whitelist: Option<String>,
    refresh: Option<HumanDuration>,
    tarballs: Option<Tarballs>,
}

/// A duration written like `5s`, `10m`, `1h 30m`.
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration ({e}); write e.g. \"30s\", \"10m\", \"1h\""
                ))
            })
    }
}

/// A size written like `256MiB`, `1GB`, `512KiB` or a number of bytes.
#[derive(Debug, Clone, Copy)]
struct ByteSize(u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => parse_size(&text).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a size; write e.g. \"256MiB\", \"1GiB\", \"500MB\""
                ))
            }),
        }
    }
}

/// Parse `256MiB`, `1 GB`, `4096`, `100k` into bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = number * factor as f64;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Config {
    /// Load the configuration from `path`, or the embedded default when `path` is `None` and
    /// no file exists at [`DEFAULT_PATH`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Self::load_file(path),
            None if Path::new(DEFAULT_PATH).exists() => Self::load_file(Path::new(DEFAULT_PATH)),
            None => {
                // Paths in the embedded file resolve as if it were at ./conf/sluice.toml.
                let base = std::env::current_dir()
                    .unwrap_or_else(|_| PathBuf::from("."))
                    .join("conf");
                Self::parse(EMBEDDED, "<embedded conf/sluice.toml>", &base)
            }
        }
    }

    /// Load the configuration file at `path`.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            message: format!("cannot read the configuration: {e}"),
        })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = absolute
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, &path.display().to_string(), &base)
    }

    /// Parse configuration `text` read from `source`; relative paths are resolved from `base`.
    pub fn parse(text: &str, source: &str, base: &Path) -> Result<Config, ConfigError> {
        let fail = |message: String| ConfigError {
            file: source.to_string(),
            message,
        };
        let file: FileConfig = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
        let at = |span: std::ops::Range<usize>| line_of(text, span.start);

        let listen = match &file.server.listen {
            Some(listen) => listen.get_ref().parse::<SocketAddr>().map_err(|e| {
                fail(format!(
                    "line {}: server.listen = \"{}\" is not an address like \"127.0.0.1:4870\": {e}",
                    at(listen.span()),
                    listen.get_ref()
                ))
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 4870)),
        };
        let public_url = match &file.server.public_url {
            Some(url) => {
                let value = url.get_ref();
                check_http_url(value).map_err(|why| {
                    fail(format!("line {}: server.public_url {why}", at(url.span())))
                })?;
                with_slash(value)
            }
            None if file.server.tls_cert.is_some() => {
                let host = if listen.ip().is_unspecified() {
                    SocketAddr::new([127, 0, 0, 1].into(), listen.port())
                } else {
                    listen
                };
                format!("https://{host}/")
            }
            None => {
                let host = if listen.ip().is_unspecified() {
                    tracing::warn!(
                        "server.listen is an unspecified address: tarball links use 127.0.0.1; set server.public_url to the address clients use"
                    );
                    SocketAddr::new([127, 0, 0, 1].into(), listen.port())
                } else {
                    listen
                };
                format!("http://{host}/")
            }
        };
        let registry = match &file.upstream.registry {
            Some(url) => {
                check_http_url(url.get_ref()).map_err(|why| {
                    fail(format!("line {}: upstream.registry {why}", at(url.span())))
                })?;
                with_slash(url.get_ref())
            }
            None => npm_registry().map_err(fail)?,
        };
        let threads = file.server.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        let concurrency = file.upstream.concurrency.unwrap_or(16);
        if threads == 0 || concurrency == 0 {
            return Err(fail(
                "server.threads and upstream.concurrency must be at least 1".into(),
            ));
        }
        let timeout =
            |value: &Option<toml::Spanned<HumanDuration>>, default: u64, key: &str| match value {
                Some(d) if d.get_ref().0.is_zero() => Err(fail(format!(
                    "line {}: server.{key} must be longer than zero; it is how long a client gets",
                    at(d.span())
                ))),
                Some(d) => Ok(d.get_ref().0),
                None => Ok(Duration::from_secs(default)),
            };
        let (tls_cert, tls_key) = match (&file.server.tls_cert, &file.server.tls_key) {
            (Some(cert), Some(key)) => (
                Some(cert.get_ref().clone()),
                Some(key.get_ref().clone()),
            ),
            (None, None) => (None, None),
            (Some(one), None) | (None, Some(one)) => {
                return Err(fail(format!(
                    "line {}: server.tls_cert and server.tls_key go together: set both (PEM files) or neither",
                    at(one.span())
                )))
            }
        };
        let header_timeout = timeout(&file.server.header_timeout, 10, "header_timeout")?;
        let body_timeout = timeout(&file.server.body_timeout, 60, "body_timeout")?;
        let send_timeout = timeout(&file.server.send_timeout, 60, "send_timeout")?;
        let changes = match &file.upstream.changes {
            Some(url) => {
                check_http_url(url.get_ref()).map_err(|why| {
                    fail(format!("line {}: upstream.changes {why}", at(url.span())))
                })?;
                Some(with_slash(url.get_ref()))
            }
            None => None,
        };
        let since = match &file.mirror.since {
            None => Since::Now,
            Some(value) => match value.get_ref() {
                toml::Value::String(s) if s == "now" => Since::Now,
                toml::Value::String(s) if !s.trim().is_empty() => Since::Seq(s.trim().to_string()),
                toml::Value::Integer(n) if *n >= 0 => Since::Seq(n.to_string()),
                _ => {
                    return Err(fail(format!(
                        "line {}: mirror.since must be \"now\", \"0\" or a sequence from the feed",
                        at(value.span())
                    )))
                }
            },
        };
        let batch = match &file.mirror.batch {
            Some(batch) if *batch.get_ref() == 0 || *batch.get_ref() > 10_000 => {
                return Err(fail(format!(
                    "line {}: mirror.batch must be between 1 and 10000",
                    at(batch.span())
                )))
            }
            Some(batch) => *batch.get_ref(),
            None => 1000,
        };
        let backend = file
            .storage
            .backend
            .as_ref()
            .map_or(Backend::Disk, |b| *b.get_ref());
        let s3 = match (&file.storage.s3, backend) {
            (Some(s3), Backend::S3) => {
                let line = at(s3.span());
                let s3 = s3.get_ref();
                let bucket = s3
                    .bucket
                    .clone()
                    .filter(|b| !b.trim().is_empty())
                    .ok_or_else(|| {
                        fail(format!("line {line}: [storage.s3] needs `bucket = \"…\"`"))
                    })?;
                let endpoint = match &s3.endpoint {
                    Some(url) => {
                        check_http_url(url.get_ref()).map_err(|why| {
                            fail(format!(
                                "line {}: storage.s3.endpoint {why}",
                                at(url.span())
                            ))
                        })?;
                        Some(url.get_ref().trim_end_matches('/').to_string())
                    }
                    None => None,
                };
                let prefix = s3.prefix.clone().unwrap_or_default();
                let prefix = match prefix.trim_matches('/') {
                    "" => String::new(),
                    p => format!("{p}/"),
                };
                Some(S3Config {
                    endpoint,
                    bucket,
                    region: s3.region.clone().unwrap_or_else(|| "us-east-1".into()),
                    prefix,
                    allow_http: s3.allow_http.unwrap_or(false),
                    access_key_id: s3.access_key_id.clone(),
                    secret_access_key: s3.secret_access_key.clone(),
                })
            }
            (None, Backend::S3) => {
                let line = file.storage.backend.as_ref().map_or(0, |b| at(b.span()));
                return Err(fail(format!(
                    "line {line}: storage.backend = \"s3\" needs a [storage.s3] table with at least `bucket`"
                )));
            }
            (_, Backend::Disk) => None,
        };
        let positive =
            |value: &Option<toml::Spanned<HumanDuration>>, default: u64, key: &str| match value {
                Some(d) if d.get_ref().0.is_zero() => Err(fail(format!(
                    "line {}: cluster.{key} must be longer than zero",
                    at(d.span())
                ))),
                Some(d) => Ok(d.get_ref().0),
                None => Ok(Duration::from_secs(default)),
            };
        let cluster = ClusterConfig {
            node: file
                .cluster
                .node
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(host_name),
            lease: positive(&file.cluster.lease, 30, "lease")?,
            sync: positive(&file.cluster.sync, 5, "sync")?,
        };
        let scopes = match &file.publish.scopes {
            Some(scopes) => {
                for scope in scopes.get_ref() {
                    let bare = scope.strip_suffix("/*").unwrap_or(scope);
                    if !bare.starts_with('@') || bare.contains('/') || bare.len() < 2 {
                        return Err(fail(format!(
                            "line {}: publish.scopes: `{scope}` is not a scope; write it as \"@acme\"",
                            at(scopes.span())
                        )));
                    }
                }
                scopes
                    .get_ref()
                    .iter()
                    .map(|s| s.strip_suffix("/*").unwrap_or(s).to_ascii_lowercase())
                    .collect()
            }
            None => Vec::new(),
        };
        let mut plugins = Vec::new();
        for spanned in &file.plugins {
            let line = at(spanned.span());
            let mut table = spanned.get_ref().clone();
            let kind = match table.remove("kind") {
                Some(toml::Value::String(kind)) => kind,
                Some(_) => {
                    return Err(fail(format!(
                        "line {line}: [[plugins]] kind must be a string"
                    )))
                }
                None => {
                    return Err(fail(format!(
                        "line {line}: a [[plugins]] table needs `kind = \"…\"`"
                    )))
                }
            };
            plugins.push(PluginConfig {
                kind,
                table,
                line,
                base: base.to_path_buf(),
            });
        }
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        Ok(Config {
            source: source.to_string(),
            server: ServerConfig {
                listen,
                public_url,
                grace_period: file
                    .server
                    .grace_period
                    .map_or(Duration::from_secs(5), |d| d.0),
                threads,
                header_timeout,
                body_timeout,
                send_timeout,
                tls_cert: tls_cert.as_deref().map(resolve),
                tls_key: tls_key.as_deref().map(resolve),
            },
            upstream: UpstreamConfig {
                registry,
                timeout: file
                    .upstream
                    .timeout
                    .map_or(Duration::from_secs(30), |d| d.0),
                max_packument: file.upstream.max_packument.map_or(200 << 20, |s| s.0),
                max_tarball: file.upstream.max_tarball.map_or(1 << 30, |s| s.0),
                concurrency,
                changes,
            },
            storage: StorageConfig {
                dir: resolve(file.storage.dir.as_deref().unwrap_or("data")),
                memory: file.storage.memory.map_or(256 << 20, |s| s.0),
                hot_tarball_max: file.storage.hot_tarball_max.map_or(1 << 20, |s| s.0),
                backend,
                local_max: file.storage.local_max.map_or(10 << 30, |s| s.0),
                s3,
            },
            policy: PolicyConfig {
                mode: file.policy.mode.unwrap_or(Mode::Whitelist),
                read_through: file.policy.read_through.unwrap_or(false),
                whitelist: resolve(file.policy.whitelist.as_deref().unwrap_or("whitelist")),
                refresh: file
                    .policy
                    .refresh
                    .map_or(Duration::from_secs(600), |d| d.0),
                tarballs: file.policy.tarballs.unwrap_or(Tarballs::OnDemand),
            },
            log: LogConfig {
                level: file.log.level.clone().unwrap_or_else(|| "info".into()),
                json: file.log.format == Some(LogFormatFile::Json),
            },
            mirror: MirrorConfig {
                since,
                interval: file
                    .mirror
                    .interval
                    .map_or(Duration::from_secs(30), |d| d.0),
                batch,
                window: file.mirror.window.unwrap_or(2),
            },
            cluster,
            auth: AuthConfig {
                users: resolve(file.auth.users.as_deref().unwrap_or("users")),
                read: file.auth.read.unwrap_or(Read::Anonymous),
                adduser: file.auth.adduser.unwrap_or(false),
            },
            publish: PublishConfig {
                scopes,
                packages: file.publish.packages.clone().unwrap_or_default(),
                unpublish: file
                    .publish
                    .unpublish
                    .map_or(Duration::from_secs(72 * 3600), |d| d.0),
                max_size: file.publish.max_size.map_or(100 << 20, |s| s.0),
                owners: file.publish.owners.clone().unwrap_or_default(),
            },
            plugins,
        })
    }
}

/// This machine's host name (`node` when none is configured).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sluice".to_string())
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    }
}

fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("= \"{url}\" is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("= \"{url}\" must be an http:// or https:// URL"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("= \"{url}\" must not have a query or fragment"));
    }
    Ok(())
}

/// The registry the local npm client is configured with.
fn npm_registry() -> Result<String, String> {
    let output = std::process::Command::new("npm")
        .args(["config", "get", "registry"])
        .output()
        .map_err(|e| {
            format!("upstream.registry is not set and `npm config get registry` could not run ({e}); set upstream.registry")
        })?;
    let url = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || url.is_empty() || url == "undefined" {
        return Err(
            "upstream.registry is not set and `npm config get registry` printed nothing; set upstream.registry".into(),
        );
    }
    check_http_url(&url).map_err(|why| format!("`npm config get registry` {why}"))?;
    Ok(with_slash(&url))
}

impl From<Since> for String {
    fn from(since: Since) -> String {
        match since {
            Since::Now => "now".to_string(),
            Since::Seq(seq) => seq,
        }
    }
}

fn human_duration<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*value).to_string())
}

fn log_format<S: Serializer>(json: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *json { "json" } else { "text" })
}

impl Serialize for PluginConfig {
    /// `kind` first, then the table's own keys, as written.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.table.len() + 1))?;
        map.serialize_entry("kind", &self.kind)?;
        for (key, value) in &self.table {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl fmt::Display for Config {
    /// The effective configuration, as TOML.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = toml::to_string(self).map_err(|_| fmt::Error)?;
        writeln!(f, "# effective configuration of {}", self.source)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/etc/sluice"))
    }

    const UPSTREAM: &str = "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n";

    #[test]
    fn defaults_and_relative_paths() {
        let config = parse(UPSTREAM).unwrap();
        assert_eq!(config.server.public_url, "http://127.0.0.1:4870/");
        assert_eq!(config.storage.dir, PathBuf::from("/etc/sluice/data"));
        assert_eq!(
            config.policy.whitelist,
            PathBuf::from("/etc/sluice/whitelist")
        );
        assert!(!config.policy.read_through);
        assert_eq!(config.policy.mode, Mode::Whitelist);
        assert_eq!(config.storage.memory, 256 << 20);
        assert_eq!(config.server.grace_period, Duration::from_secs(5));
    }

    #[test]
    fn unknown_keys_are_rejected_with_file_key_and_line() {
        let err = parse(&format!("{UPSTREAM}\n[storage]\nmemroy = \"1GiB\"\n")).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("test.toml: "), "{message}");
        assert!(message.contains("line 5"), "{message}");
        assert!(message.contains("memroy"), "{message}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let err = parse(&format!(
            "{UPSTREAM}[server]\ngrace_period = \"5 parsecs\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("line 4"), "{err}");
        let err = parse("[upstream]\nregistry = \"ftp://x/\"\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse(&format!("{UPSTREAM}[[plugins]]\ndays = 3\n")).unwrap_err();
        assert!(err.to_string().contains("kind"), "{err}");
        let err = parse(&format!("{UPSTREAM}[server]\nheader_timeout = \"0s\"\n")).unwrap_err();
        assert!(err.to_string().contains("server.header_timeout"), "{err}");
        assert!(err.to_string().contains("line 4"), "{err}");
    }

    #[test]
    fn check_prints_every_key_and_the_printout_reads_back_the_same() {
        let config = parse(&format!(
            "{UPSTREAM}[storage]\nhot_tarball_max = \"4MiB\"\n[[plugins]]\nkind = \"min-age\"\ndays = 3\n"
        ))
        .unwrap();
        let printed = config.to_string();
        for key in [
            "listen",
            "public_url",
            "grace_period",
            "header_timeout",
            "registry",
            "timeout",
            "max_tarball",
            "dir",
            "memory",
            "hot_tarball_max = 4194304",
            "mode = \"whitelist\"",
            "refresh = \"10m\"",
            "tarballs = \"on-demand\"",
            "format = \"text\"",
            "since = \"now\"",
            "kind = \"min-age\"",
            "days = 3",
        ] {
            assert!(printed.contains(key), "{key} missing from:\n{printed}");
        }
        let again = parse(&printed).unwrap();
        assert_eq!(again.to_string(), printed);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("1 GB"), Some(1_000_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn the_shipped_config_parses_with_read_through_on() {
        let config = Config::parse(EMBEDDED, "conf/sluice.toml", Path::new("/x/conf")).unwrap();
        assert!(config.policy.read_through);
        assert_eq!(config.storage.dir, PathBuf::from("/x/conf/../data"));
        // What a first run writes goes to ./data (ignored by git), not to the tracked conf/.
        assert_eq!(
            config.policy.whitelist,
            PathBuf::from("/x/conf/../data/whitelist")
        );
    }
}
