//! The plugin host's registry: `[policy]` and `[[plugins]]` → plugin instances, by a plain
//! `match` on `kind`. A plugin that fails to build stops the start (fail closed).

use std::sync::Arc;

use sluice_plugin_api::{Plugin, PluginError};
use sluice_plugin_deny::DenyPlugin;
use sluice_plugin_min_age::MinAgePlugin;
use sluice_plugin_read_through::ReadThroughPlugin;
use sluice_plugin_scope_pin::ScopePinPlugin;
use sluice_plugin_whitelist::{Whitelist, WhitelistPlugin};

use crate::config::{Config, Mode};

/// The plugins of a configuration, in run order.
pub struct Plugins {
    /// Every plugin, built-in policies first.
    pub list: Vec<Arc<dyn Plugin>>,
    /// The live whitelist, in whitelist mode.
    pub whitelist: Option<Arc<Whitelist>>,
}

/// A plugin that cannot be built; names the config file and the table's line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct BuildError {
    /// The configuration file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// Build the plugins of `config`.
pub fn build(config: &Config) -> Result<Plugins, BuildError> {
    let fail = |message: String| BuildError {
        file: config.source.clone(),
        message,
    };
    let mut list: Vec<Arc<dyn Plugin>> = Vec::new();
    let mut whitelist = None;
    if config.policy.mode == Mode::Whitelist {
        let live = Arc::new(
            Whitelist::load(&config.policy.whitelist)
                .map_err(|e| fail(format!("policy.whitelist: {e}")))?,
        );
        list.push(Arc::new(WhitelistPlugin::new(live.clone())));
        if config.policy.read_through {
            list.push(Arc::new(ReadThroughPlugin::new(live.clone())));
        }
        whitelist = Some(live);
    }
    for plugin in &config.plugins {
        let line = plugin.line;
        let at_line = |error: PluginError| fail(format!("line {line}: {error}"));
        let table = &plugin.table;
        let built: Arc<dyn Plugin> = match plugin.kind.as_str() {
            "min-age" => Arc::new(MinAgePlugin::from_table(table).map_err(at_line)?),
            "deny" => Arc::new(DenyPlugin::from_table(table, &plugin.base).map_err(at_line)?),
            "scope-pin" => Arc::new(ScopePinPlugin::from_table(table).map_err(at_line)?),
            "whitelist" | "read-through" => {
                return Err(fail(format!(
                    "line {line}: the `{}` plugin is configured by [policy] (mode, read_through, whitelist), not [[plugins]]",
                    plugin.kind
                )))
            }
            other => {
                return Err(fail(format!(
                    "line {line}: unknown plugin kind `{other}` (known: min-age, deny, scope-pin)"
                )))
            }
        };
        list.push(built);
    }
    Ok(Plugins { list, whitelist })
}
