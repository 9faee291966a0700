//! The deny plugin: packages, scopes and version ranges an admin refuses.
//!
//! A denied package or scope answers 403 for every request about it, before the cache or
//! upstream are asked ([`Plugin::on_request`] responds at once, so no whitelist or read-through
//! can let it through). A denied range hides those versions from the package document (the host
//! repairs its dist-tags) and refuses their tarballs. Rules come from the config's `packages`
//! and from an optional file an admin edits while sluice runs (see [`watch`]).

pub mod file;
pub mod rules;
mod watch;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use sluice_plugin_api::{
    Ctx, Decision, NpmRequest, Packument, Plugin, PluginError, Response, Result,
};

pub use file::{DenyFile, Reload};
pub use rules::{Origin, Placed, Rule, Rules};
pub use sluice_plugin_api::watch::WatchHandle;
pub use watch::watch;

/// The plugin's kind, as written in `kind = "deny"`.
pub const KIND: &str = "deny";

/// The `[[plugins]]` table of kind `deny`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyConfig {
    /// Rules: `left-pad`, `@evil/*`, `lodash@<4.17.21`.
    #[serde(default)]
    pub packages: Vec<String>,
    /// A file of more rules, one a line, relative to the config file's folder; hot-reloaded.
    pub file: Option<String>,
}

/// How soon after the last event an edit of the deny file is applied.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// How often the deny file is re-read even without events.
const POLL: Duration = Duration::from_secs(5);

/// The `deny` plugin.
#[derive(Debug)]
pub struct DenyPlugin {
    inline: Rules,
    file: Option<Arc<DenyFile>>,
    /// The file's watcher, started by the first phase that runs (not while the config is only
    /// checked, nor before the server forks); dropped, and so stopped, with the plugin.
    watcher: OnceLock<Option<WatchHandle>>,
}

impl DenyPlugin {
    /// Build the plugin from its `[[plugins]]` table (without `kind`); a relative `file` is
    /// resolved from `base`, the config file's folder.
    pub fn from_table(table: &toml::Table, base: &Path) -> Result<Self> {
        let config: DenyConfig = sluice_plugin_api::config::from_table(KIND, table)?;
        Self::new(config, base)
    }

    /// Build the plugin from a parsed config: every rule must parse and the file must be
    /// readable with no bad line.
    pub fn new(config: DenyConfig, base: &Path) -> Result<Self> {
        let inline = Rules::from_config(&config.packages).map_err(|e| PluginError::new(KIND, e))?;
        let file = match &config.file {
            Some(path) => Some(Arc::new(
                DenyFile::load(base.join(path)).map_err(|e| PluginError::new(KIND, e))?,
            )),
            None => None,
        };
        if inline.is_empty() && file.is_none() {
            return Err(PluginError::new(
                KIND,
                "nothing to deny: set `packages = [...]` or `file = \"...\"`",
            ));
        }
        Ok(Self {
            inline,
            file,
            watcher: OnceLock::new(),
        })
    }

    /// The live file rules, starting the file's watcher on first use.
    fn file_rules(&self) -> Option<Arc<Rules>> {
        let file = self.file.as_ref()?;
        self.watcher.get_or_init(|| {
            watch(file.clone(), DEBOUNCE, POLL)
                .map_err(|error| {
                    tracing::error!(path = %file.path().display(), %error, "cannot watch the deny file: edits need a restart");
                })
                .ok()
        });
        Some(file.rules())
    }

    /// The rule refusing package `name` as a whole, described for a person.
    pub fn package_rule(&self, name: &str) -> Option<String> {
        if let Some(placed) = self.inline.package(name) {
            return Some(placed.describe());
        }
        self.file_rules()?.package(name).map(Placed::describe)
    }

    /// The rule refusing `version` of `name`, described for a person.
    pub fn version_rule(&self, name: &str, version: &str) -> Option<String> {
        if let Some(placed) = self.inline.version(name, version) {
            return Some(placed.describe());
        }
        self.file_rules()?
            .version(name, version)
            .map(Placed::describe)
    }

    fn concerns(&self, name: &str) -> bool {
        self.inline.concerns(name) || self.file_rules().is_some_and(|r| r.concerns(name))
    }
}

/// The version a tarball file name carries (`lodash-4.17.20.tgz` of `lodash`), if it has the
/// usual form.
fn tarball_version<'a>(name: &str, file: &'a str) -> Option<&'a str> {
    let base = name.rsplit('/').next().unwrap_or(name);
    file.strip_prefix(base)?
        .strip_prefix('-')?
        .strip_suffix(".tgz")
}

impl Plugin for DenyPlugin {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn generation(&self) -> u64 {
        // Starting the watcher here too: the first packument served starts it.
        let _ = self.file_rules();
        self.file.as_ref().map_or(0, |file| file.generation())
    }

    fn on_request(
        &self,
        request: &NpmRequest,
        _headers: &http::HeaderMap,
        _ctx: &mut Ctx,
    ) -> Result<Decision> {
        let Some(name) = request.package() else {
            return Ok(Decision::Continue);
        };
        if let Some(rule) = self.package_rule(name) {
            return Ok(Decision::Respond(Response::error(
                403,
                format!("{name} is denied by this registry: {rule}"),
            )));
        }
        // A tarball of a denied version is refused before anything is fetched; the host's
        // tarball check (on_tarball) covers file names of another form.
        if let NpmRequest::Tarball { file, .. } = request {
            if let Some(version) = tarball_version(name, file) {
                if let Some(rule) = self.version_rule(name, version) {
                    return Ok(Decision::Respond(Response::error(
                        403,
                        format!("{name}@{version} is denied by this registry: {rule}"),
                    )));
                }
            }
        }
        Ok(Decision::Continue)
    }

    fn on_packument(&self, packument: &mut Packument) -> Result<()> {
        let Some(name) = packument.name().map(str::to_string) else {
            return Ok(());
        };
        if !self.concerns(&name) {
            return Ok(());
        }
        let file_rules = self.file_rules();
        let denied: Vec<String> = packument
            .versions()
            .map(|versions| {
                versions
                    .keys()
                    .filter(|v| {
                        self.inline.version(&name, v).is_some()
                            || file_rules
                                .as_ref()
                                .is_some_and(|rules| rules.version(&name, v).is_some())
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for version in &denied {
            packument.remove_version(version);
        }
        if !denied.is_empty() {
            tracing::debug!(package = %name, versions = ?denied, "deny: hid denied versions");
        }
        Ok(())
    }

    fn checks_tarballs(&self) -> bool {
        true
    }

    fn on_tarball(&self, name: &str, version: &str, _packument: &Packument) -> Result<Decision> {
        Ok(match self.version_rule(name, version) {
            Some(rule) => Decision::Respond(Response::error(
                403,
                format!("{name}@{version} is denied by this registry: {rule}"),
            )),
            None => Decision::Continue,
        })
    }

    fn allows(&self, name: &str) -> bool {
        self.package_rule(name).is_none()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn plugin(toml_text: &str, base: &Path) -> Result<DenyPlugin> {
        DenyPlugin::from_table(&toml_text.parse::<toml::Table>().unwrap(), base)
    }

    fn decide(plugin: &DenyPlugin, request: NpmRequest) -> Decision {
        plugin
            .on_request(&request, &http::HeaderMap::new(), &mut Ctx::new(1))
            .unwrap()
    }

    fn packument(name: &str, versions: &[&str]) -> Packument {
        let versions: serde_json::Map<String, serde_json::Value> = versions
            .iter()
            .map(|v| ((*v).to_string(), json!({"version": v})))
            .collect();
        Packument::new(
            json!({"name": name, "versions": versions})
                .as_object()
                .unwrap()
                .clone(),
        )
    }

    #[test]
    fn a_denied_name_or_scope_answers_403_naming_the_rule() {
        let plugin = plugin(
            "packages = [\"left-pad\", \"@evil/*\", \"lodash@<4.17.21\"]\n",
            Path::new("/"),
        )
        .unwrap();
        for name in ["left-pad", "@evil/thing"] {
            let Decision::Respond(response) = decide(
                &plugin,
                NpmRequest::Packument {
                    name: name.into(),
                    abbreviated: true,
                },
            ) else {
                panic!("{name} went on");
            };
            assert_eq!(response.status, 403);
            assert!(response.message.contains("rule `"), "{}", response.message);
            assert!(!plugin.allows(name));
        }
        assert!(plugin.allows("lodash"));
        let packument_request = NpmRequest::Packument {
            name: "lodash".into(),
            abbreviated: false,
        };
        assert_eq!(decide(&plugin, packument_request), Decision::Continue);
        let Decision::Respond(response) = decide(
            &plugin,
            NpmRequest::Tarball {
                name: "lodash".into(),
                file: "lodash-4.17.20.tgz".into(),
            },
        ) else {
            panic!("a denied version's tarball went on");
        };
        assert!(response.message.contains("lodash@<4.17.21"));
        let allowed = NpmRequest::Tarball {
            name: "lodash".into(),
            file: "lodash-4.17.21.tgz".into(),
        };
        assert_eq!(decide(&plugin, allowed), Decision::Continue);
    }

    #[test]
    fn a_denied_range_is_hidden_and_its_tarballs_refused() {
        let plugin = plugin("packages = [\"lodash@<4.17.21\"]\n", Path::new("/")).unwrap();
        let mut doc = packument("lodash", &["4.17.20", "4.17.21", "4.17.21-rc.1", "5.0.0"]);
        let original = doc.clone();
        plugin.on_packument(&mut doc).unwrap();
        let kept: Vec<&String> = doc.versions().unwrap().keys().collect();
        assert_eq!(kept, vec!["4.17.21", "5.0.0"]);
        assert!(matches!(
            plugin.on_tarball("lodash", "4.17.20", &original).unwrap(),
            Decision::Respond(Response { status: 403, .. })
        ));
        assert_eq!(
            plugin.on_tarball("lodash", "5.0.0", &original).unwrap(),
            Decision::Continue
        );
        let mut other = packument("express", &["1.0.0"]);
        plugin.on_packument(&mut other).unwrap();
        assert_eq!(other.versions().unwrap().len(), 1);
    }

    #[test]
    fn file_rules_are_relative_to_the_config_and_hot_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deny"), "# bad\nleft-pad\n").unwrap();
        let plugin = plugin("file = \"deny\"\n", dir.path()).unwrap();
        assert!(!plugin.allows("left-pad"));
        assert!(plugin.allows("right-pad"));
        std::fs::write(dir.path().join("deny"), "left-pad\nright-pad # too\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while plugin.allows("right-pad") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!plugin.allows("right-pad"));
        let message = plugin.package_rule("right-pad").unwrap();
        assert!(message.contains("deny line 2"), "{message}");
        // A broken edit keeps the last good rules.
        std::fs::write(dir.path().join("deny"), "lodash@\n").unwrap();
        std::thread::sleep(Duration::from_millis(600));
        assert!(!plugin.allows("right-pad"));
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deny"), "ok\nlodash@<<\n").unwrap();
        for (text, wanted) in [
            ("packages = [\"lodash@<<nope\"]\n", "not a semver range"),
            ("pakages = [\"x\"]\n", "pakages"),
            ("file = \"missing\"\n", "missing"),
            ("file = \"deny\"\n", "line 2"),
            ("packages = []\n", "nothing to deny"),
        ] {
            let error = plugin(text, dir.path()).unwrap_err().to_string();
            assert!(error.contains(wanted), "{text}: {error}");
            assert!(error.starts_with("plugin deny: "), "{error}");
        }
    }
}
