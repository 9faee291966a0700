//! The read-through plugin: a package that is not on the whitelist is fetched from upstream,
//! served, and appended to the whitelist file, so the first install of a new dependency just
//! works and the list records what is in use.
//!
//! It lifts only the whitelist's "not listed" refusal; a refusal by a rule (deny, min-age…)
//! stands.

use std::sync::Arc;

use sluice_plugin_api::{
    Ctx, Decision, NpmRequest, Plugin, PluginError, RefusalKind, Result as PluginResult,
};
use sluice_plugin_whitelist::Whitelist;

/// The `read-through` plugin.
#[derive(Debug, Clone)]
pub struct ReadThroughPlugin {
    list: Arc<Whitelist>,
}

impl ReadThroughPlugin {
    /// A plugin that adds the packages it lets through to `list`.
    pub fn new(list: Arc<Whitelist>) -> Self {
        Self { list }
    }
}

impl Plugin for ReadThroughPlugin {
    fn kind(&self) -> &'static str {
        "read-through"
    }

    fn on_request(
        &self,
        _request: &NpmRequest,
        _headers: &http::HeaderMap,
        ctx: &mut Ctx,
    ) -> PluginResult<Decision> {
        if ctx
            .refusal
            .as_ref()
            .is_some_and(|r| r.kind == RefusalKind::NotListed)
        {
            ctx.refusal = None;
            ctx.read_through = true;
        }
        Ok(Decision::Continue)
    }

    fn on_fetched(&self, name: &str, _ctx: &Ctx) -> PluginResult<()> {
        let added = self
            .list
            .add(&[name.to_string()])
            .map_err(|e| PluginError::new("read-through", e.to_string()))?;
        if !added.is_empty() {
            tracing::info!(package = name, "read-through: added to the whitelist");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sluice_plugin_api::{Refusal, Response};
    use sluice_plugin_whitelist::WhitelistPlugin;

    #[test]
    fn lifts_not_listed_and_adds_the_package_but_not_a_denial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whitelist");
        std::fs::write(&path, "express\n").unwrap();
        let list = Arc::new(Whitelist::load(&path).unwrap());
        let whitelist = WhitelistPlugin::new(list.clone());
        let read_through = ReadThroughPlugin::new(list.clone());
        let request = NpmRequest::Packument {
            name: "lodash".into(),
            abbreviated: true,
        };
        let headers = http::HeaderMap::new();
        let mut ctx = Ctx::new(1);
        whitelist.on_request(&request, &headers, &mut ctx).unwrap();
        assert!(ctx.refusal.is_some());
        read_through
            .on_request(&request, &headers, &mut ctx)
            .unwrap();
        assert!(ctx.refusal.is_none() && ctx.read_through);
        read_through.on_fetched("lodash", &ctx).unwrap();
        assert!(list.allows("lodash"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "express\nlodash\n");

        let mut denied = Ctx::new(2);
        denied.refusal = Some(Refusal {
            kind: RefusalKind::Denied,
            response: Response::error(403, "denied"),
        });
        read_through
            .on_request(&request, &headers, &mut denied)
            .unwrap();
        assert!(denied.refusal.is_some() && !denied.read_through);
    }
}
