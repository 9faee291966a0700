//! npm's write protocol for the names published here: publish, unpublish (a version, a
//! tarball, the whole package), dist-tags, and the attestations kept with a version.

use serde_json::{json, Value};
use sluice_plugin_api::NpmRequest;

use super::{user, Answer, Call};
use crate::config::Read;
use crate::core::Error;

/// Answer a write to a package.
pub async fn handle(call: &Call<'_>) -> Result<Answer, Error> {
    let app = call.app;
    let publisher = &app.publisher;
    super::precheck(call)?;
    let who = user(call)?;
    let value = match call.request {
        NpmRequest::Publish { name } => {
            let email = app.auth.email(&who.user).unwrap_or_default();
            publisher.publish(name, &call.body, who, &email).await?
        }
        NpmRequest::Unpublish { name, all, rev } => {
            let body = (!*all).then_some(&call.body[..]);
            let email_of = |user: &str| app.auth.email(user);
            publisher.replace(name, rev, body, who, &email_of).await?
        }
        NpmRequest::UnpublishTarball { name, file, rev } => {
            publisher.unpublish_tarball(name, file, rev, who).await?
        }
        NpmRequest::DistTag { name, tag, remove } => {
            let version = if *remove {
                None
            } else {
                Some(dist_tag_version(&call.body)?)
            };
            publisher
                .dist_tag(name, tag, version.as_deref(), who)
                .await?
        }
        _ => return Err(Error::Internal("not a write to a package".into())),
    };
    Ok(Answer::json(200, &value))
}

/// The version a dist-tag body names: a JSON string.
fn dist_tag_version(body: &[u8]) -> Result<String, Error> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::String(version)) => Ok(version),
        _ => Err(Error::Client(
            "the body of a dist-tag is the version, as a JSON string".into(),
        )),
    }
}

/// `GET /-/package/{name}/visibility` for a name published here.
pub fn visibility(call: &Call<'_>) -> Result<Answer, Error> {
    let public = call.app.config.auth.read == Read::Anonymous;
    Ok(Answer::json(200, &json!({ "public": public })))
}

/// `GET /-/npm/v1/attestations/{name}@{version}` for a name published here: the attestations
/// kept with the version, never asked of upstream.
pub async fn attestations(call: &Call<'_>, path: &str) -> Result<Answer, Error> {
    let spec = path
        .strip_prefix("-/npm/v1/attestations/")
        .map(|spec| spec.replacen("%2f", "/", 1));
    let Some((name, version)) = spec.as_deref().and_then(|s| s.rsplit_once('@')) else {
        let name = call.request.package().unwrap_or("this package");
        return Err(Error::NotFound(format!(
            "{name} is published here: no such route"
        )));
    };
    let value = call.app.publisher.attestations(name, version).await?;
    Ok(Answer::json(200, &value))
}
