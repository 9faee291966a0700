//! The identify phase: who asks, from the request's credentials, as much as the request needs
//! ([`crate::api::access`]).

use std::net::IpAddr;

use sluice_plugin_api::NpmRequest;

use crate::api::{self, Access};
use crate::app::App;
use crate::auth::Identity;
use crate::config::Read;
use crate::core::Error;

/// The caller of `request`, from its `Authorization` header: `Ok(None)` for an anonymous
/// caller the request allows, an error for credentials that fail or a caller it refuses.
pub async fn identify(
    app: &App,
    request: &NpmRequest,
    authorization: Option<&str>,
    address: Option<IpAddr>,
) -> Result<Option<Identity>, Error> {
    let access = api::access(request);
    let open = app.config.auth.read == Read::Anonymous;
    // Reads of an anonymous registry need no identity: credentials are not even checked (a
    // stale password in a client's config neither slows its install nor locks it out).
    if access == Access::Read && open {
        return Ok(None);
    }
    let who = match app.auth.identify(authorization, address).await {
        Ok(who) => who,
        Err(_) if access == Access::Anyone => None,
        Err(error) => return Err(error.into()),
    };
    if who.is_none() && !open && access != Access::Anyone {
        return Err(api::login_first());
    }
    Ok(who)
}
