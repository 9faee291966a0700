//! The validated configuration the rest of the program sees, one struct per section, each with
//! the function that builds it from its [`super::file`] section: defaults filled in, values
//! checked, paths resolved. A bad value fails with the key and its line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Serialize, Serializer};
use toml::Spanned;

use super::file::{
    AuthFile, ClusterFile, HumanDuration, LogFile, LogFormatFile, MirrorFile, PolicyFile,
    PublishFile, S3File, ServerFile, StorageFile, UpstreamFile,
};
pub use super::kinds::{Backend, Mode, Read, Staged, Tarballs};
use super::private::{Glob, PrivateNames};
use super::ConfigError;

/// What every section's parser needs: the text (for line numbers), the file's name (for the
/// error) and its folder (for relative paths).
pub(super) struct Cx<'a> {
    /// The configuration text.
    pub text: &'a str,
    /// Where it was read from.
    pub source: &'a str,
    /// The folder relative paths are resolved from.
    pub base: &'a Path,
}

impl Cx<'_> {
    /// An error about this file.
    pub fn fail(&self, message: String) -> ConfigError {
        ConfigError {
            file: self.source.to_string(),
            message,
        }
    }

    /// The line a value's span starts on.
    pub fn line(&self, span: Range<usize>) -> usize {
        let offset = span.start.min(self.text.len());
        self.text[..offset].matches('\n').count() + 1
    }

    /// `path`, relative to the configuration's folder unless absolute.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }
}

/// The one message for a zero worker or fetch count (both keys named, as it always was).
const AT_LEAST_ONE: &str = "server.threads and upstream.concurrency must be at least 1";

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
    /// The largest `npm audit` body taken, once inflated, in bytes.
    pub max_audit_body: u64,
}

impl ServerConfig {
    /// `[server]` from the file.
    pub(super) fn parse(file: &ServerFile, cx: &Cx) -> Result<Self, ConfigError> {
        let listen = match &file.listen {
            Some(listen) => listen.get_ref().parse::<SocketAddr>().map_err(|e| {
                cx.fail(format!(
                    "line {}: server.listen = \"{}\" is not an address like \"127.0.0.1:4870\": {e}",
                    cx.line(listen.span()),
                    listen.get_ref()
                ))
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 4870)),
        };
        let public_url = Self::public_url(file, listen, cx)?;
        let threads = file.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        if threads == 0 {
            return Err(cx.fail(AT_LEAST_ONE.into()));
        }
        let (tls_cert, tls_key) = match (&file.tls_cert, &file.tls_key) {
            (Some(cert), Some(key)) => (Some(cx.resolve(cert.get_ref())), Some(cx.resolve(key.get_ref()))),
            (None, None) => (None, None),
            (Some(one), None) | (None, Some(one)) => {
                return Err(cx.fail(format!(
                    "line {}: server.tls_cert and server.tls_key go together: set both (PEM files) or neither",
                    cx.line(one.span())
                )))
            }
        };
        Ok(ServerConfig {
            listen,
            public_url,
            grace_period: file.grace_period.map_or(Duration::from_secs(5), |d| d.0),
            threads,
            header_timeout: client_time(&file.header_timeout, 10, "header_timeout", cx)?,
            body_timeout: client_time(&file.body_timeout, 60, "body_timeout", cx)?,
            send_timeout: client_time(&file.send_timeout, 60, "send_timeout", cx)?,
            tls_cert,
            tls_key,
            max_audit_body: Self::max_audit_body(file, cx)?,
        })
    }

    /// `server.max_audit_body`: 16 MiB unless set, between 1 KiB and 256 MiB (an audit body
    /// is held whole while it is filtered).
    fn max_audit_body(file: &ServerFile, cx: &Cx) -> Result<u64, ConfigError> {
        let Some(size) = &file.max_audit_body else {
            return Ok(16 << 20);
        };
        let bytes = size.get_ref().0;
        if !(1 << 10..=256 << 20).contains(&bytes) {
            return Err(cx.fail(format!(
                "line {}: server.max_audit_body = {bytes} bytes: give a size from \"1KiB\" to \"256MiB\"",
                cx.line(size.span())
            )));
        }
        Ok(bytes)
    }

    /// `server.public_url`, or the listening address's URL (with a warning when that is an
    /// unspecified address, which no client can reach).
    fn public_url(file: &ServerFile, listen: SocketAddr, cx: &Cx) -> Result<String, ConfigError> {
        if let Some(url) = &file.public_url {
            let value = url.get_ref();
            check_http_url(value).map_err(|why| {
                cx.fail(format!(
                    "line {}: server.public_url {why}",
                    cx.line(url.span())
                ))
            })?;
            return Ok(with_slash(value));
        }
        let tls = file.tls_cert.is_some();
        let host = if listen.ip().is_unspecified() {
            if !tls {
                tracing::warn!(
                    "server.listen is an unspecified address: tarball links use 127.0.0.1; set server.public_url to the address clients use"
                );
            }
            SocketAddr::new([127, 0, 0, 1].into(), listen.port())
        } else {
            listen
        };
        Ok(format!("{}://{host}/", if tls { "https" } else { "http" }))
    }
}

/// A client timeout of `[server]` (`key`), `default` seconds when not set; zero is refused.
fn client_time(
    value: &Option<Spanned<HumanDuration>>,
    default: u64,
    key: &str,
    cx: &Cx,
) -> Result<Duration, ConfigError> {
    match value {
        Some(d) if d.get_ref().0.is_zero() => Err(cx.fail(format!(
            "line {}: server.{key} must be longer than zero; it is how long a client gets",
            cx.line(d.span())
        ))),
        Some(d) => Ok(d.get_ref().0),
        None => Ok(Duration::from_secs(default)),
    }
}

/// `[upstream]`.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    /// The upstream registry's base URL, ending in `/`; may carry credentials (printed
    /// without them, see [`redact_url`]).
    #[serde(serialize_with = "redacted")]
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
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted_option"
    )]
    pub changes: Option<String>,
}

impl UpstreamConfig {
    /// `[upstream]` from the file; without `registry`, the local npm client's registry.
    pub(super) fn parse(file: &UpstreamFile, cx: &Cx) -> Result<Self, ConfigError> {
        let url = |url: &Spanned<String>, key: &str| {
            check_http_url(url.get_ref())
                .map(|()| with_slash(url.get_ref()))
                .map_err(|why| {
                    cx.fail(format!(
                        "line {}: upstream.{key} {why}",
                        cx.line(url.span())
                    ))
                })
        };
        let registry = match &file.registry {
            Some(registry) => url(registry, "registry")?,
            None => npm_registry().map_err(|e| cx.fail(e))?,
        };
        let concurrency = file.concurrency.unwrap_or(16);
        if concurrency == 0 {
            return Err(cx.fail(AT_LEAST_ONE.into()));
        }
        Ok(UpstreamConfig {
            registry,
            timeout: file.timeout.map_or(Duration::from_secs(30), |d| d.0),
            max_packument: file.max_packument.map_or(200 << 20, |s| s.0),
            max_tarball: file.max_tarball.map_or(1 << 30, |s| s.0),
            concurrency,
            changes: file
                .changes
                .as_ref()
                .map(|changes| url(changes, "changes"))
                .transpose()?,
        })
    }
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

impl StorageConfig {
    /// `[storage]` from the file; `[storage.s3]` is read only with `backend = "s3"`.
    pub(super) fn parse(file: &StorageFile, cx: &Cx) -> Result<Self, ConfigError> {
        let backend = file
            .backend
            .as_ref()
            .map_or(Backend::Disk, |b| *b.get_ref());
        let s3 = match (&file.s3, backend) {
            (Some(s3), Backend::S3) => Some(S3Config::parse(s3, cx)?),
            (None, Backend::S3) => {
                let line = file.backend.as_ref().map_or(0, |b| cx.line(b.span()));
                return Err(cx.fail(format!(
                    "line {line}: storage.backend = \"s3\" needs a [storage.s3] table with at least `bucket`"
                )));
            }
            (_, Backend::Disk) => None,
        };
        Ok(StorageConfig {
            dir: cx.resolve(file.dir.as_deref().unwrap_or("data")),
            memory: file.memory.map_or(256 << 20, |s| s.0),
            hot_tarball_max: file.hot_tarball_max.map_or(1 << 20, |s| s.0),
            backend,
            local_max: file.local_max.map_or(10 << 30, |s| s.0),
            s3,
        })
    }
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

impl S3Config {
    /// `[storage.s3]` from the file.
    fn parse(spanned: &Spanned<S3File>, cx: &Cx) -> Result<Self, ConfigError> {
        let line = cx.line(spanned.span());
        let s3 = spanned.get_ref();
        let bucket = s3
            .bucket
            .clone()
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| cx.fail(format!("line {line}: [storage.s3] needs `bucket = \"…\"`")))?;
        let endpoint = match &s3.endpoint {
            Some(url) => {
                check_http_url(url.get_ref()).map_err(|why| {
                    cx.fail(format!(
                        "line {}: storage.s3.endpoint {why}",
                        cx.line(url.span())
                    ))
                })?;
                Some(url.get_ref().trim_end_matches('/').to_string())
            }
            None => None,
        };
        let prefix = match s3.prefix.as_deref().unwrap_or_default().trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(S3Config {
            endpoint,
            bucket,
            region: s3.region.clone().unwrap_or_else(|| "us-east-1".into()),
            prefix,
            allow_http: s3.allow_http.unwrap_or(false),
            access_key_id: s3.access_key_id.clone(),
            secret_access_key: s3.secret_access_key.clone(),
        })
    }
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
    /// Which of the live settings the file set (the others are defaults), for `sluice check`.
    #[serde(skip)]
    pub set_in_file: PolicySet,
}

/// Which of `[policy]`'s live settings (mode, read_through, refresh) the file set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicySet {
    /// `policy.mode`.
    pub mode: bool,
    /// `policy.read_through`.
    pub read_through: bool,
    /// `policy.refresh`.
    pub refresh: bool,
}

impl PolicyConfig {
    /// `[policy]` from the file.
    pub(super) fn parse(file: &PolicyFile, cx: &Cx) -> Self {
        PolicyConfig {
            mode: file.mode.unwrap_or(Mode::Whitelist),
            read_through: file.read_through.unwrap_or(false),
            whitelist: cx.resolve(file.whitelist.as_deref().unwrap_or("whitelist")),
            refresh: file.refresh.map_or(Duration::from_secs(600), |d| d.0),
            tarballs: file.tarballs.unwrap_or(Tarballs::OnDemand),
            set_in_file: PolicySet {
                mode: file.mode.is_some(),
                read_through: file.read_through.is_some(),
                refresh: file.refresh.is_some(),
            },
        }
    }
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

impl MirrorConfig {
    /// `[mirror]` from the file.
    pub(super) fn parse(file: &MirrorFile, cx: &Cx) -> Result<Self, ConfigError> {
        let since = match &file.since {
            None => Since::Now,
            Some(value) => match value.get_ref() {
                toml::Value::String(s) if s == "now" => Since::Now,
                toml::Value::String(s) if !s.trim().is_empty() => Since::Seq(s.trim().to_string()),
                toml::Value::Integer(n) if *n >= 0 => Since::Seq(n.to_string()),
                _ => {
                    return Err(cx.fail(format!(
                        "line {}: mirror.since must be \"now\", \"0\" or a sequence from the feed",
                        cx.line(value.span())
                    )))
                }
            },
        };
        let batch = match &file.batch {
            Some(batch) if *batch.get_ref() == 0 || *batch.get_ref() > 10_000 => {
                return Err(cx.fail(format!(
                    "line {}: mirror.batch must be between 1 and 10000",
                    cx.line(batch.span())
                )))
            }
            Some(batch) => *batch.get_ref(),
            None => 1000,
        };
        Ok(MirrorConfig {
            since,
            interval: file.interval.map_or(Duration::from_secs(30), |d| d.0),
            batch,
            window: file.window.unwrap_or(2),
        })
    }
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

impl From<Since> for String {
    fn from(since: Since) -> String {
        match since {
            Since::Now => "now".to_string(),
            Since::Seq(seq) => seq,
        }
    }
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

impl LogConfig {
    /// `[log]` from the file.
    pub(super) fn parse(file: &LogFile) -> Self {
        LogConfig {
            level: file.level.clone().unwrap_or_else(|| "info".into()),
            json: file.format == Some(LogFormatFile::Json),
        }
    }
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

impl ClusterConfig {
    /// `[cluster]` from the file.
    pub(super) fn parse(file: &ClusterFile, cx: &Cx) -> Result<Self, ConfigError> {
        let positive = |value: &Option<Spanned<HumanDuration>>, default: u64, key: &str| match value
        {
            Some(d) if d.get_ref().0.is_zero() => Err(cx.fail(format!(
                "line {}: cluster.{key} must be longer than zero",
                cx.line(d.span())
            ))),
            Some(d) => Ok(d.get_ref().0),
            None => Ok(Duration::from_secs(default)),
        };
        Ok(ClusterConfig {
            node: file
                .node
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(host_name),
            lease: positive(&file.lease, 30, "lease")?,
            sync: positive(&file.sync, 5, "sync")?,
        })
    }
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
    /// Whether npm's web login (`npm login`'s default) is offered: it opens the console's login
    /// page. Off, `POST /-/v1/login` is 404 and npm and pnpm fall back to their prompts.
    pub web_login: bool,
}

impl AuthConfig {
    /// `[auth]` from the file.
    pub(super) fn parse(file: &AuthFile, cx: &Cx) -> Self {
        AuthConfig {
            users: cx.resolve(file.users.as_deref().unwrap_or("users")),
            read: file.read.unwrap_or(Read::Anonymous),
            adduser: file.adduser.unwrap_or(false),
            web_login: file.web_login.unwrap_or(true),
        }
    }
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
    /// Who may publish to a scope or name (default: any user); keys exact or `*` globs.
    pub owners: BTreeMap<String, Vec<String>>,
    /// Whether a new version must be staged and approved (`npm stage`).
    pub staged: Staged,
    /// `scopes` and `packages` as the one rule every path asks (exact names and `*` globs).
    #[serde(skip)]
    pub names: PrivateNames,
}

impl PublishConfig {
    /// `[publish]` from the file; scopes are kept lower-case, without a trailing `/*`.
    pub(super) fn parse(file: &PublishFile, cx: &Cx) -> Result<Self, ConfigError> {
        let mut scopes = Vec::new();
        if let Some(spanned) = &file.scopes {
            for scope in spanned.get_ref() {
                let bare = scope.strip_suffix("/*").unwrap_or(scope);
                if !bare.starts_with('@') || bare.contains('/') || bare.len() < 2 {
                    return Err(cx.fail(format!(
                        "line {}: publish.scopes: `{scope}` is not a scope; write it as \"@acme\"",
                        cx.line(spanned.span())
                    )));
                }
                scopes.push(bare.to_ascii_lowercase());
            }
        }
        let packages = file.packages.clone().unwrap_or_default();
        Ok(PublishConfig {
            names: PrivateNames::new(&scopes, &packages),
            scopes,
            packages,
            unpublish: file
                .unpublish
                .map_or(Duration::from_secs(72 * 3600), |d| d.0),
            max_size: file.max_size.map_or(100 << 20, |s| s.0),
            owners: file.owners.clone().unwrap_or_default(),
            staged: file.staged.unwrap_or_default(),
        })
    }

    /// Whether `user` may publish `name`. `owners` is keyed like `scopes` and `packages`: a
    /// scoped name by its scope (in any case), an unscoped name by itself (case and all: npm's
    /// legacy `JSONStream`), each key exact or a `*` glob. A key naming exactly the scope (or
    /// name) decides alone, so one scope can be narrowed below a broad glob; otherwise every
    /// glob that matches grants its users; with no key matching, any user may publish.
    pub fn may_publish(&self, user: &str, name: &str) -> bool {
        let (key, scoped) = match name.split_once('/') {
            Some((scope, _)) if scope.starts_with('@') => (scope, true),
            _ => (name, false),
        };
        let exact = |k: &str| {
            !k.contains('*')
                && if scoped {
                    k.eq_ignore_ascii_case(key)
                } else {
                    k == key
                }
        };
        if let Some((_, owners)) = self.owners.iter().find(|(k, _)| exact(k)) {
            return owners.iter().any(|o| o == user);
        }
        let mut matching = self
            .owners
            .iter()
            .filter(|(k, _)| k.contains('*') && k.starts_with('@') == scoped)
            .filter(|(k, _)| Glob::new(k).matches(key))
            .peekable();
        if matching.peek().is_none() {
            return true;
        }
        matching.any(|(_, owners)| owners.iter().any(|o| o == user))
    }

    /// What `sluice check` adds about which names are mirrored, when the patterns make that
    /// less than obvious.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.names.every_unscoped() {
            notes.push(
                "[publish] packages has \"*\": every unscoped name is published here and never \
                 looked up upstream; only scoped names outside [publish] scopes are mirrored"
                    .to_string(),
            );
        }
        notes
    }
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

impl PluginConfig {
    /// Every `[[plugins]]` table, in order; each needs a string `kind`.
    pub(super) fn parse_all(
        tables: &[Spanned<toml::Table>],
        cx: &Cx,
    ) -> Result<Vec<Self>, ConfigError> {
        let mut plugins = Vec::new();
        for spanned in tables {
            let line = cx.line(spanned.span());
            let mut table = spanned.get_ref().clone();
            let kind = match table.remove("kind") {
                Some(toml::Value::String(kind)) => kind,
                Some(_) => {
                    return Err(cx.fail(format!("line {line}: [[plugins]] kind must be a string")))
                }
                None => {
                    return Err(cx.fail(format!(
                        "line {line}: a [[plugins]] table needs `kind = \"…\"`"
                    )))
                }
            };
            plugins.push(PluginConfig {
                kind,
                table,
                line,
                base: cx.base.to_path_buf(),
            });
        }
        Ok(plugins)
    }
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
    let parsed = reqwest::Url::parse(url);
    let url = redact_url(url);
    let parsed = parsed.map_err(|e| format!("= \"{url}\" is not a URL: {e}"))?;
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

fn human_duration<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*value).to_string())
}

fn redacted<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

fn redacted_option<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => redacted(url, s),
        None => s.serialize_none(),
    }
}

/// `url` with the user name and password of its authority, if any, replaced by `***`
/// (`https://***@host/`): the form every log, status answer, printout and error shows.
///
/// Works on text that does not parse as a URL too, since error messages quote such text.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let start = scheme_end + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

fn log_format<S: Serializer>(json: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *json { "json" } else { "text" })
}
