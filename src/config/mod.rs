//! The configuration: the TOML file model ([`file`]: serde, unknown keys rejected) and the
//! validated [`Config`] the rest of the program sees ([`internal`]: one struct per section, each
//! built and checked by its own function). A new key is a field in each plus its check.

mod file;
mod internal;
mod kinds;

use std::fmt;
use std::path::{Path, PathBuf};

pub use file::parse_size;
pub use internal::redact_url;
pub use internal::{
    AuthConfig, Backend, ClusterConfig, LogConfig, MirrorConfig, Mode, PluginConfig, PolicyConfig,
    PublishConfig, Read, S3Config, ServerConfig, Since, StorageConfig, Tarballs, UpstreamConfig,
};

use file::FileConfig;
use internal::Cx;

/// The shipped default configuration, used when no file is found at the default path.
pub const EMBEDDED: &str = include_str!("../../conf/sluice.toml");

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
#[derive(Debug, Clone, serde::Serialize)]
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
        let cx = Cx { text, source, base };
        let file: FileConfig = toml::from_str(text).map_err(|e| cx.fail(e.to_string()))?;
        // Section by section, in the order their errors have always been reported.
        let server = ServerConfig::parse(&file.server, &cx)?;
        let upstream = UpstreamConfig::parse(&file.upstream, &cx)?;
        let mirror = MirrorConfig::parse(&file.mirror, &cx)?;
        let storage = StorageConfig::parse(&file.storage, &cx)?;
        let cluster = ClusterConfig::parse(&file.cluster, &cx)?;
        let publish = PublishConfig::parse(&file.publish, &cx)?;
        let plugins = PluginConfig::parse_all(&file.plugins, &cx)?;
        Ok(Config {
            source: source.to_string(),
            server,
            upstream,
            storage,
            policy: PolicyConfig::parse(&file.policy, &cx),
            mirror,
            log: LogConfig::parse(&file.log),
            cluster,
            auth: AuthConfig::parse(&file.auth, &cx),
            publish,
            plugins,
        })
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
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/etc/sluice"))
    }

    const UPSTREAM: &str = "[upstream]\nregistry = \"http://127.0.0.1:9/\"\n";

    #[test]
    fn urls_are_shown_without_their_credentials() {
        for (url, shown) in [
            ("https://user:pass@host/npm/", "https://***@host/npm/"),
            ("https://token@host:8443/", "https://***@host:8443/"),
            ("http://a:b@c@host/?q=1", "http://***@host/?q=1"),
            ("https://host/a@b", "https://host/a@b"),
            ("https://host/", "https://host/"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let config = parse(
            "[upstream]\nregistry = \"https://u:hunter2@host/\"\nchanges = \"https://u:hunter2@feed/\"\n",
        )
        .unwrap();
        assert_eq!(config.upstream.registry, "https://u:hunter2@host/");
        let printed = config.to_string();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("https://***@host/"), "{printed}");
        let error = parse("[upstream]\nregistry = \"https://u:hunter2@host/?x=1\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            !error.contains("hunter2") && error.contains("query"),
            "{error}"
        );
    }

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

    /// Every message a bad configuration gets, word for word: the file, the key and the line.
    #[test]
    fn every_config_error_names_file_key_and_line() {
        let cases: &[(&str, &str)] = &[
            ("[server]\nlisten = \"nowhere\"\n", "test.toml: line 2: server.listen = \"nowhere\" is not an address like \"127.0.0.1:4870\": invalid socket address syntax"),
            ("[server]\npublic_url = \"ftp://x/\"\n", "test.toml: line 2: server.public_url = \"ftp://x/\" must be an http:// or https:// URL"),
            ("[server]\npublic_url = \"http://x/?a=1\"\n", "test.toml: line 2: server.public_url = \"http://x/?a=1\" must not have a query or fragment"),
            ("[upstream]\nregistry = \"not a url\"\n", "test.toml: line 2: upstream.registry = \"not a url\" is not a URL: relative URL without a base"),
            ("[server]\nthreads = 0\n", "test.toml: server.threads and upstream.concurrency must be at least 1"),
            ("[upstream]\nconcurrency = 0\n", "test.toml: server.threads and upstream.concurrency must be at least 1"),
            ("[server]\n\ntls_key = \"k.pem\"\n", "test.toml: line 3: server.tls_cert and server.tls_key go together: set both (PEM files) or neither"),
            ("[server]\nbody_timeout = \"0s\"\n", "test.toml: line 2: server.body_timeout must be longer than zero; it is how long a client gets"),
            ("[server]\nsend_timeout = \"0s\"\n", "test.toml: line 2: server.send_timeout must be longer than zero; it is how long a client gets"),
            ("[server]\nmax_audit_body = \"1GiB\"\n", "test.toml: line 2: server.max_audit_body = 1073741824 bytes: give a size from \"1KiB\" to \"256MiB\""),
            ("[upstream]\nchanges = \"gopher://x/\"\n", "test.toml: line 2: upstream.changes = \"gopher://x/\" must be an http:// or https:// URL"),
            ("[mirror]\nsince = -4\n", "test.toml: line 2: mirror.since must be \"now\", \"0\" or a sequence from the feed"),
            ("[mirror]\nbatch = 10001\n", "test.toml: line 2: mirror.batch must be between 1 and 10000"),
            ("[storage]\nbackend = \"s3\"\n", "test.toml: line 2: storage.backend = \"s3\" needs a [storage.s3] table with at least `bucket`"),
            ("[storage]\nbackend = \"s3\"\n[storage.s3]\nregion = \"x\"\n", "test.toml: line 3: [storage.s3] needs `bucket = \"…\"`"),
            ("[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\nendpoint = \"x\"\n", "test.toml: line 5: storage.s3.endpoint = \"x\" is not a URL: relative URL without a base"),
            ("[cluster]\nlease = \"0s\"\n", "test.toml: line 2: cluster.lease must be longer than zero"),
            ("[cluster]\nsync = \"0s\"\n", "test.toml: line 2: cluster.sync must be longer than zero"),
            ("[publish]\nscopes = [\"@ok\", \"acme\"]\n", "test.toml: line 2: publish.scopes: `acme` is not a scope; write it as \"@acme\""),
            ("[[plugins]]\nkind = 3\n", "test.toml: line 1: [[plugins]] kind must be a string"),
            ("\n[[plugins]]\ndays = 3\n", "test.toml: line 2: a [[plugins]] table needs `kind = \"…\"`"),
        ];
        for (text, expected) in cases {
            let text = if text.contains("registry") {
                text.to_string()
            } else if text.starts_with("[upstream]") {
                format!("{text}registry = \"http://127.0.0.1:9/\"\n")
            } else {
                format!("{text}{UPSTREAM}")
            };
            let err = parse(&text).unwrap_err();
            assert_eq!(err.to_string(), *expected, "for:\n{text}");
        }
    }
}
