//! The deny plugin: packages, scopes and version ranges an admin refuses.
//!
//! A denied package or scope answers 403 for every request about it, before the cache or
//! upstream are asked ([`Plugin::admit`] refuses it, whatever the whitelist or read-through
//! say), and background work skips it. A denied range hides those versions
//! ([`Plugin::hide_versions`]): the host takes them off the package document, repairs its
//! dist-tags and refuses their tarballs. Rules come from the config's `packages` and from an
//! optional file an admin edits while sluice runs (the host watches it).

pub mod file;
pub mod rules;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;
use sluice_plugin_api::live::Watched;
use sluice_plugin_api::{Ctx, Decision, Hidden, Packument, Plugin, PluginError, Response, Result};

pub use file::DenyFile;
pub use rules::{Origin, Placed, Rule, Rules};

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

/// The `deny` plugin.
#[derive(Debug)]
pub struct DenyPlugin {
    inline: Rules,
    file: Option<Arc<DenyFile>>,
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
                file::load(&base.join(path)).map_err(|e| PluginError::new(KIND, e))?,
            )),
            None => None,
        };
        if inline.is_empty() && file.is_none() {
            return Err(PluginError::new(
                KIND,
                "nothing to deny: set `packages = [...]` or `file = \"...\"`",
            ));
        }
        Ok(Self { inline, file })
    }

    /// The rule refusing package `name` as a whole, described for a person.
    pub fn package_rule(&self, name: &str) -> Option<String> {
        if let Some(placed) = self.inline.package(name) {
            return Some(placed.describe());
        }
        self.file
            .as_ref()?
            .current()
            .package(name)
            .map(Placed::describe)
    }

    /// The rule refusing `version` of `name`, described for a person.
    pub fn version_rule(&self, name: &str, version: &str) -> Option<String> {
        if let Some(placed) = self.inline.version(name, version) {
            return Some(placed.describe());
        }
        self.file
            .as_ref()?
            .current()
            .version(name, version)
            .map(Placed::describe)
    }
}

impl Plugin for DenyPlugin {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn generation(&self) -> u64 {
        self.file.as_ref().map_or(0, |file| file.generation())
    }

    fn admit(&self, name: &str, _ctx: &mut Ctx) -> Result<Decision> {
        Ok(match self.package_rule(name) {
            Some(rule) => Decision::Respond(Response::error(
                403,
                format!("{name} is denied by this registry: {rule}"),
            )),
            None => Decision::Continue,
        })
    }

    fn hide_versions(&self, packument: &Packument, _now: SystemTime) -> Result<Hidden> {
        let mut hidden = Hidden::default();
        let Some(name) = packument.name() else {
            return Ok(hidden);
        };
        let file_rules = self.file.as_ref().map(|file| file.current());
        let concerned = self.inline.concerns(name)
            || file_rules
                .as_ref()
                .is_some_and(|rules| rules.concerns(name));
        if !concerned {
            return Ok(hidden);
        }
        for version in packument.versions().into_iter().flat_map(|v| v.keys()) {
            if let Some(rule) = self.version_rule(name, version) {
                hidden.hide(
                    version.as_str(),
                    format!("{name}@{version} is denied by this registry: {rule}"),
                );
            }
        }
        Ok(hidden)
    }

    fn watched(&self) -> Vec<Arc<dyn Watched>> {
        self.file
            .iter()
            .map(|file| file.clone() as Arc<dyn Watched>)
            .collect()
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

    fn admits(plugin: &DenyPlugin, name: &str) -> bool {
        plugin.admit(name, &mut Ctx::new(1)).unwrap() == Decision::Continue
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

    fn hidden(plugin: &DenyPlugin, doc: &Packument) -> Vec<(String, String)> {
        plugin
            .hide_versions(doc, SystemTime::now())
            .unwrap()
            .versions
    }

    #[test]
    fn a_denied_name_or_scope_answers_403_naming_the_rule() {
        let plugin = plugin(
            "packages = [\"left-pad\", \"@evil/*\", \"lodash@<4.17.21\"]\n",
            Path::new("/"),
        )
        .unwrap();
        for name in ["left-pad", "@evil/thing"] {
            for mut ctx in [Ctx::new(1), Ctx::background()] {
                let Decision::Respond(response) = plugin.admit(name, &mut ctx).unwrap() else {
                    panic!("{name} went on");
                };
                assert_eq!(response.status, 403);
                assert!(response.message.contains("rule `"), "{}", response.message);
            }
        }
        assert!(admits(&plugin, "lodash"));
    }

    #[test]
    fn a_denied_range_is_hidden_with_the_rule_as_its_reason() {
        let plugin = plugin("packages = [\"lodash@<4.17.21\"]\n", Path::new("/")).unwrap();
        let doc = packument("lodash", &["4.17.20", "4.17.21", "4.17.21-rc.1", "5.0.0"]);
        let found = hidden(&plugin, &doc);
        let versions: Vec<&str> = found.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(versions, vec!["4.17.20", "4.17.21-rc.1"]);
        assert!(found[0].1.contains("lodash@<4.17.21"), "{}", found[0].1);
        assert!(hidden(&plugin, &packument("express", &["1.0.0"])).is_empty());
    }

    #[test]
    fn file_rules_are_relative_to_the_config_and_reloaded_when_the_host_says() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deny"), "# bad\nleft-pad\n").unwrap();
        let plugin = plugin("file = \"deny\"\n", dir.path()).unwrap();
        let watched = plugin.watched();
        assert_eq!(watched.len(), 1);
        assert!(!admits(&plugin, "left-pad"));
        assert!(admits(&plugin, "right-pad"));
        let before = plugin.generation();
        std::fs::write(dir.path().join("deny"), "left-pad\nright-pad # too\n").unwrap();
        watched[0].reread(false);
        assert!(!admits(&plugin, "right-pad"));
        assert!(plugin.generation() > before);
        let message = plugin.package_rule("right-pad").unwrap();
        assert!(message.contains("deny line 2"), "{message}");
        // A broken edit keeps the last good rules.
        std::fs::write(dir.path().join("deny"), "lodash@\n").unwrap();
        watched[0].reread(false);
        assert!(!admits(&plugin, "right-pad"));
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
