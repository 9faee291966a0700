//! npm's write protocol for the names published here: publish, unpublish (a version, a
//! tarball, the whole package), dist-tags, and the attestations kept with a version.

use serde_json::{json, Value};
use sluice_plugin_api::NpmRequest;

use super::{user, Answer, Call};
use crate::config::Read;
use crate::core::audit_log::Action;
use crate::core::Error;

/// Answer a write to a package, and record it in the audit log.
pub async fn handle(call: &Call<'_>) -> Result<Answer, Error> {
    let app = call.app;
    let publisher = &app.publisher;
    super::write_target(call)?;
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
    let (action, subject, detail) = described(call.request, &call.body);
    super::audit(call, action, &subject, &detail).await;
    Ok(Answer::json(200, &value))
}

/// What a write that succeeded did, for the audit log: the action, its subject and details.
fn described(request: &NpmRequest, body: &[u8]) -> (Action, String, String) {
    let doc = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let keys = |doc: &Value, field: &str| -> Vec<String> {
        doc.get(field)
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    match request {
        NpmRequest::Publish { name } => {
            let doc = doc();
            let attached = doc
                .get("_attachments")
                .and_then(Value::as_object)
                .is_some_and(|a| !a.is_empty());
            let versions = keys(&doc, "versions").join(", ");
            if attached {
                (Action::Publish, format!("{name}@{versions}"), String::new())
            } else {
                (Action::Deprecate, name.clone(), versions)
            }
        }
        NpmRequest::Unpublish {
            name, all: true, ..
        } => (Action::Unpublish, name.clone(), "every version".into()),
        NpmRequest::Unpublish { name, .. } => {
            let doc = doc();
            if doc.get("versions").is_some() {
                (Action::Unpublish, name.clone(), "versions taken off".into())
            } else {
                let owners = doc
                    .get("maintainers")
                    .and_then(Value::as_array)
                    .map(|m| {
                        m.iter()
                            .filter_map(|o| o.get("name").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                (
                    Action::Owners,
                    name.clone(),
                    format!("maintainers: {owners}"),
                )
            }
        }
        NpmRequest::UnpublishTarball { name, file, .. } => {
            (Action::Unpublish, name.clone(), format!("tarball {file}"))
        }
        NpmRequest::DistTag { name, tag, remove } => {
            let detail = if *remove {
                format!("{tag} removed")
            } else {
                let version = dist_tag_version(body).unwrap_or_default();
                format!("{tag} -> {version}")
            };
            (Action::DistTag, name.clone(), detail)
        }
        other => (Action::Publish, format!("{other:?}"), String::new()),
    }
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
