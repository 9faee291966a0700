//! The plugin host: `[policy]` and `[[plugins]]` → plugin instances, built by a plain `match` on
//! `kind` (a plugin that fails to build stops the start: fail closed), and the one place the
//! phases are run from.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use sluice_plugin_api::live::Watched;
use sluice_plugin_api::{Ctx, Decision, NpmRequest, Packument, Plugin, PluginError, Response};
use sluice_plugin_deny::DenyPlugin;
use sluice_plugin_min_age::MinAgePlugin;
use sluice_plugin_scope_pin::ScopePinPlugin;
use sluice_plugin_whitelist::{Whitelist, WhitelistPlugin};

use crate::config::{Config, Mode};

/// A plugin that cannot be built; names the config file and the table's line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct BuildError {
    /// The configuration file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// The versions the plugins hide in one document, with the first reason given for each.
#[derive(Debug, Clone, Default)]
pub struct HiddenVersions {
    /// version → why it is hidden.
    pub reasons: HashMap<String, String>,
    /// When the answer changes by itself, if it does.
    pub until: Option<SystemTime>,
}

/// The plugins of a configuration, in run order.
pub struct Host {
    list: Vec<Arc<dyn Plugin>>,
    whitelist: Option<Arc<Whitelist>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = self.list.iter().map(|p| p.kind()).collect();
        f.debug_struct("Host").field("plugins", &kinds).finish()
    }
}

impl Host {
    /// Build the plugins of `config`: the `[[plugins]]` tables in order, then the whitelist
    /// policy (in whitelist mode), so a rule's answer (deny, scope-pin) comes before "not on
    /// the whitelist".
    pub fn build(config: &Config) -> Result<Self, BuildError> {
        let read_through = Arc::new(AtomicBool::new(config.policy.read_through));
        let off = Arc::new(AtomicBool::new(config.policy.mode == Mode::Mirror));
        Self::build_live(config, read_through, off)
    }

    /// [`Host::build`] with the whitelist's switches given, to be turned live (read-through,
    /// and `mirror`: the whitelist not enforced). The whitelist is loaded in either mode, so
    /// the mode can change while sluice runs.
    pub fn build_live(
        config: &Config,
        read_through: Arc<AtomicBool>,
        mirror: Arc<AtomicBool>,
    ) -> Result<Self, BuildError> {
        let fail = |message: String| BuildError {
            file: config.source.clone(),
            message,
        };
        let mut list: Vec<Arc<dyn Plugin>> = Vec::new();
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
        let live = Arc::new(
            Whitelist::load(&config.policy.whitelist)
                .map_err(|e| fail(format!("policy.whitelist: {e}")))?,
        );
        list.push(Arc::new(WhitelistPlugin::live(
            live.clone(),
            read_through,
            mirror,
        )));
        Ok(Self {
            list,
            whitelist: Some(live),
        })
    }

    /// The live whitelist (loaded in either mode: [`crate::app::App::whitelist`] says whether
    /// it is in force).
    pub fn whitelist(&self) -> Option<&Arc<Whitelist>> {
        self.whitelist.as_ref()
    }

    /// Run every plugin's [`Plugin::on_request`]; `Some` is the answer to send now.
    pub fn on_request(
        &self,
        request: &NpmRequest,
        headers: &http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<Option<Response>, PluginError> {
        for plugin in &self.list {
            if let Decision::Respond(response) = plugin.on_request(request, headers, ctx)? {
                return Ok(Some(response));
            }
        }
        Ok(None)
    }

    /// Run every plugin's admission rule for `name`; `Some` is the refusal.
    pub fn admit(&self, name: &str, ctx: &mut Ctx) -> Result<Option<Response>, PluginError> {
        for plugin in &self.list {
            if let Decision::Respond(response) = plugin.admit(name, ctx)? {
                return Ok(Some(response));
            }
        }
        Ok(None)
    }

    /// Whether background work may touch `name` (a failing plugin refuses: fail closed).
    pub fn admits(&self, name: &str) -> bool {
        match self.admit(name, &mut Ctx::background()) {
            Ok(refusal) => refusal.is_none(),
            Err(error) => {
                tracing::error!(package = name, %error, "plugin failed: skipped");
                false
            }
        }
    }

    /// What every plugin hides of `packument` (as upstream published it) at `now`.
    pub fn hidden(
        &self,
        packument: &Packument,
        now: SystemTime,
    ) -> Result<HiddenVersions, PluginError> {
        let mut all = HiddenVersions::default();
        for plugin in &self.list {
            let hidden = plugin.hide_versions(packument, now)?;
            for (version, reason) in hidden.versions {
                all.reasons.entry(version).or_insert(reason);
            }
            if let Some(until) = hidden.until {
                all.until = Some(all.until.map_or(until, |u| u.min(until)));
            }
        }
        Ok(all)
    }

    /// The plugins' combined generation: when it changes, cached renders are stale.
    pub fn generation(&self) -> u64 {
        self.list
            .iter()
            .fold(0u64, |sum, p| sum.wrapping_add(p.generation()))
    }

    /// Run every plugin's [`Plugin::on_response`].
    pub fn on_response(&self, status: u16, headers: &mut http::HeaderMap, ctx: &Ctx) {
        for plugin in &self.list {
            plugin.on_response(status, headers, ctx);
        }
    }

    /// Every file the plugins want watched.
    pub fn watched(&self) -> Vec<Arc<dyn Watched>> {
        self.list.iter().flat_map(|p| p.watched()).collect()
    }
}
