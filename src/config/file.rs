//! The file model: the TOML as written, one struct per section, every key optional and unknown
//! keys rejected (serde reports them with their line). Nothing here is validated; see
//! [`super::internal`] for what the values must be.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::kinds::{Backend, Mode, Read, Staged, Tarballs};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub upstream: UpstreamFile,
    #[serde(default)]
    pub storage: StorageFile,
    #[serde(default)]
    pub policy: PolicyFile,
    #[serde(default)]
    pub mirror: MirrorFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub cluster: ClusterFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub publish: PublishFile,
    #[serde(default)]
    pub plugins: Vec<Spanned<toml::Table>>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerFile {
    pub listen: Option<Spanned<String>>,
    pub public_url: Option<Spanned<String>>,
    pub grace_period: Option<HumanDuration>,
    pub threads: Option<usize>,
    pub header_timeout: Option<Spanned<HumanDuration>>,
    pub body_timeout: Option<Spanned<HumanDuration>>,
    pub send_timeout: Option<Spanned<HumanDuration>>,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    pub max_audit_body: Option<Spanned<ByteSize>>,
}

/// `[upstream]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamFile {
    pub registry: Option<Spanned<String>>,
    pub timeout: Option<HumanDuration>,
    pub max_packument: Option<ByteSize>,
    pub max_tarball: Option<ByteSize>,
    pub concurrency: Option<usize>,
    pub changes: Option<Spanned<String>>,
}

/// `[storage]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StorageFile {
    pub dir: Option<String>,
    pub memory: Option<ByteSize>,
    pub hot_tarball_max: Option<ByteSize>,
    pub backend: Option<Spanned<Backend>>,
    pub local_max: Option<ByteSize>,
    pub s3: Option<Spanned<S3File>>,
}

/// `[storage.s3]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct S3File {
    pub endpoint: Option<Spanned<String>>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub prefix: Option<String>,
    pub allow_http: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// `[policy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    pub mode: Option<Mode>,
    pub read_through: Option<bool>,
    pub whitelist: Option<String>,
    pub refresh: Option<HumanDuration>,
    pub tarballs: Option<Tarballs>,
}

/// `[mirror]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MirrorFile {
    pub since: Option<Spanned<toml::Value>>,
    pub interval: Option<HumanDuration>,
    pub batch: Option<Spanned<usize>>,
    pub window: Option<usize>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    pub level: Option<String>,
    pub format: Option<LogFormatFile>,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum LogFormatFile {
    Text,
    Json,
}

/// `[cluster]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterFile {
    pub node: Option<String>,
    pub lease: Option<Spanned<HumanDuration>>,
    pub sync: Option<Spanned<HumanDuration>>,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthFile {
    pub users: Option<String>,
    pub read: Option<Read>,
    pub adduser: Option<bool>,
    pub web_login: Option<bool>,
}

/// `[publish]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishFile {
    pub scopes: Option<Spanned<Vec<String>>>,
    pub packages: Option<Vec<String>>,
    pub unpublish: Option<HumanDuration>,
    pub max_size: Option<ByteSize>,
    pub owners: Option<BTreeMap<String, Vec<String>>>,
    pub staged: Option<Staged>,
}

/// A duration written like `5s`, `10m`, `1h 30m`.
#[derive(Debug, Clone, Copy)]
pub(super) struct HumanDuration(pub Duration);

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
pub(super) struct ByteSize(pub u64);

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
