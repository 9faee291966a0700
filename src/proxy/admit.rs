//! The admit phase: the plugins' `on_request`, then their admission rule for the package the
//! request is about. Packages published here are the company's own: no whitelist, rule or pin
//! applies to them.

use sluice_plugin_api::{Ctx, NpmRequest};

use crate::api::Answer;
use crate::app::App;

/// Run the plugins on `request`: `None` admits it, `Some` is the answer to send instead.
pub fn admit(
    app: &App,
    request: &NpmRequest,
    headers: &http::HeaderMap,
    ctx: &mut Ctx,
) -> Option<Answer> {
    let host = &app.host;
    let private = request
        .package()
        .is_some_and(|name| app.private.contains(name));
    let refusal = host.on_request(request, headers, ctx).and_then(|refusal| {
        match (refusal, request.package()) {
            (None, Some(_)) if private => Ok(None),
            (None, Some(name)) => host.admit(name, ctx),
            (refusal, _) => Ok(refusal),
        }
    });
    match refusal {
        Ok(None) => None,
        Ok(Some(response)) => Some(Answer::plugin(response)),
        Err(error) => {
            tracing::error!(%error, "plugin failed");
            Some(Answer::error(500, error.to_string()))
        }
    }
}
