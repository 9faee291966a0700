//! The scope-pin plugin: packages of a private scope are never looked up on the public upstream.
//!
//! A dependency confusion attack publishes `@acme/tool` upstream hoping a build that expects the
//! private package fetches the public one. With `@acme` pinned, every request for the scope is
//! answered here (404) before the cache or upstream are asked, and background work skips it.

use serde::Deserialize;
use sluice_plugin_api::name::{check_name, scope_of};
use sluice_plugin_api::{Ctx, Decision, Plugin, PluginError, Response, Result};

/// The plugin's kind, as written in `kind = "scope-pin"`.
pub const KIND: &str = "scope-pin";

/// The `[[plugins]]` table of kind `scope-pin`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopePinConfig {
    /// The private scopes, as `@scope`.
    pub scopes: Vec<String>,
}

/// The `scope-pin` plugin.
#[derive(Debug, Clone)]
pub struct ScopePinPlugin {
    /// The pinned scopes, lowercased (`@acme`).
    scopes: Vec<String>,
}

impl ScopePinPlugin {
    /// Build the plugin from its `[[plugins]]` table (without `kind`).
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        let config: ScopePinConfig = sluice_plugin_api::config::from_table(KIND, table)?;
        Self::new(config)
    }

    /// Build the plugin from a parsed config, checking every scope.
    pub fn new(config: ScopePinConfig) -> Result<Self> {
        if config.scopes.is_empty() {
            return Err(PluginError::new(
                KIND,
                "scopes is empty: list the private scopes, e.g. scopes = [\"@acme\"]",
            ));
        }
        let mut scopes = Vec::with_capacity(config.scopes.len());
        for scope in &config.scopes {
            let bare = scope.strip_suffix("/*").unwrap_or(scope);
            if !bare.starts_with('@') || bare.contains('/') {
                return Err(PluginError::new(
                    KIND,
                    format!("scopes: `{scope}` is not a scope; write it as \"@scope\""),
                ));
            }
            check_name(&format!("{bare}/x"))
                .map_err(|why| PluginError::new(KIND, format!("scopes: `{scope}`: {why}")))?;
            scopes.push(bare.to_ascii_lowercase());
        }
        Ok(Self { scopes })
    }

    /// The pinned scope `name` belongs to, if any.
    ///
    /// Scopes compare without case: upstream would refuse an upper-case scope anyway, and even
    /// asking for one would tell it the private package's name.
    pub fn pinned_scope(&self, name: &str) -> Option<&str> {
        let scope = scope_of(name)?;
        self.scopes
            .iter()
            .find(|pinned| pinned.eq_ignore_ascii_case(scope))
            .map(String::as_str)
    }
}

impl Plugin for ScopePinPlugin {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn admit(&self, name: &str, _ctx: &mut Ctx) -> Result<Decision> {
        let Some(scope) = self.pinned_scope(name) else {
            return Ok(Decision::Continue);
        };
        Ok(Decision::Respond(Response::error(
            404,
            format!(
                "{name} is in the private scope {scope}, which this registry never looks up on \
                 the public upstream registry (publishing private packages to sluice is not \
                 supported yet)"
            ),
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plugin(toml_text: &str) -> Result<ScopePinPlugin> {
        ScopePinPlugin::from_table(&toml_text.parse::<toml::Table>().unwrap())
    }

    fn decide(plugin: &ScopePinPlugin, name: &str) -> Decision {
        plugin.admit(name, &mut Ctx::new(1)).unwrap()
    }

    #[test]
    fn every_name_of_a_pinned_scope_is_answered_404() {
        let plugin = plugin("scopes = [\"@acme\", \"@Corp\"]\n").unwrap();
        for name in ["@acme/tool", "@ACME/tool", "@corp/x"] {
            let Decision::Respond(response) = decide(&plugin, name) else {
                panic!("{name} went on");
            };
            assert_eq!(response.status, 404);
            assert!(response.message.contains("private scope"), "{response:?}");
            assert!(matches!(
                plugin.admit(name, &mut Ctx::background()).unwrap(),
                Decision::Respond(_)
            ));
        }
        for name in ["acme", "@acmex/tool", "tool"] {
            assert_eq!(decide(&plugin, name), Decision::Continue, "{name}");
        }
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        for (text, wanted) in [
            ("scopes = [\"acme\"]\n", "not a scope"),
            ("scopes = [\"@acme/tool\"]\n", "not a scope"),
            ("scopes = [\"@a b\"]\n", "URL-safe"),
            ("scopes = []\n", "empty"),
            ("scope = [\"@acme\"]\n", "scope"),
        ] {
            let error = plugin(text).unwrap_err().to_string();
            assert!(error.contains(wanted), "{text}: {error}");
        }
        assert!(plugin("scopes = [\"@acme/*\"]\n").is_ok());
    }
}
