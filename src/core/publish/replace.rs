//! `npm unpublish` and `npm owner add|rm`: the document as the client changed it.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use sluice_plugin_api::Packument;

use super::{bad, Missing, Publisher};
use crate::auth::Identity;
use crate::core::Error;

/// A user's e-mail address, `None` for a name that is no user.
pub type EmailOf<'a> = dyn Fn(&str) -> Option<String> + Send + Sync + 'a;

impl Publisher {
    /// `PUT /{name}/-rev/{rev}` with the document as the client changed it, or `DELETE
    /// /{name}/-rev/{rev}` (no body: the whole package).
    ///
    /// - `npm unpublish`: the versions the body's `versions` lacks are taken off (every one
    ///   without a body), each only within `publish.unpublish` of its publish. Their tarballs
    ///   stay in the store, no longer listed; their numbers are never published again.
    /// - `npm owner add|rm`: the body's `maintainers` (names in the users file, at least one)
    ///   become the package's.
    ///
    /// `rev` must be the document's current `_rev`; `email_of` gives a user's e-mail address,
    /// or `None` for a name that is no user.
    pub async fn replace(
        &self,
        name: &str,
        rev: &str,
        body: Option<&[u8]>,
        who: &Identity,
        email_of: &EmailOf<'_>,
    ) -> Result<Value, Error> {
        self.check_writer(name, who)?;
        let body: Option<Value> = match body {
            Some(body) => Some(
                serde_json::from_slice(body)
                    .map_err(|e| bad(format!("the document is not JSON: {e}")))?,
            ),
            None => None,
        };
        // Versions kept: `None` when the body says nothing of versions (an owner change).
        let kept: Option<Vec<String>> = match &body {
            Some(doc) => doc
                .get("versions")
                .and_then(Value::as_object)
                .map(|v| v.keys().cloned().collect()),
            None => Some(Vec::new()),
        };
        let owners = new_owners(name, body.as_ref(), email_of)?;
        let window = self.config.unpublish;
        let now = SystemTime::now();
        let mut removed = Vec::new();
        self.write(name, who, Some(rev), Missing::NotFound, |doc| {
            if let Some(owners) = &owners {
                let list: Vec<Value> = owners
                    .iter()
                    .map(|o| json!({ "name": o, "email": email_of(o).unwrap_or_default() }))
                    .collect();
                doc.doc.insert("maintainers".into(), Value::Array(list));
            }
            if let Some(kept) = &kept {
                removed = unpublish(name, doc, kept, window, now)?;
            }
            Ok(())
        })
        .await?;
        match &owners {
            Some(owners) => {
                tracing::info!(package = name, maintainers = ?owners, user = who.user, "owners changed");
            }
            None => {
                tracing::info!(package = name, versions = ?removed, user = who.user, "unpublished");
            }
        }
        Ok(json!({ "ok": true, "id": name }))
    }
}

/// The body's `maintainers` (`None` when it names none): at least one, each a user.
fn new_owners(
    name: &str,
    body: Option<&Value>,
    email_of: &EmailOf<'_>,
) -> Result<Option<Vec<String>>, Error> {
    let owners: Vec<String> = match body.and_then(|d| d.get("maintainers")) {
        None => return Ok(None),
        Some(Value::Array(list)) => list
            .iter()
            .map(|m| {
                m.get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad("each of maintainers is {name, email}"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("maintainers is a list of {name, email}")),
    };
    if owners.is_empty() {
        return Err(Error::Forbidden(format!(
            "{name} needs at least one maintainer: add someone else first"
        )));
    }
    if let Some(unknown) = owners.iter().find(|o| email_of(o).is_none()) {
        return Err(Error::NotFound(format!(
            "{unknown} is not a user of this registry (sluice user add {unknown})"
        )));
    }
    Ok(Some(owners))
}

/// Take the versions not `kept` off `doc`, each only within `window` of its publish; returns
/// those taken off.
fn unpublish(
    name: &str,
    doc: &mut Packument,
    kept: &[String],
    window: Duration,
    now: SystemTime,
) -> Result<Vec<String>, Error> {
    let versions: Vec<String> = doc
        .versions()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default();
    if versions.is_empty() {
        return Err(Error::NotFound(format!(
            "{name} has no version to unpublish"
        )));
    }
    let mut removed = Vec::new();
    for version in versions {
        if kept.contains(&version) {
            continue;
        }
        let published = doc
            .published(&version)
            .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok());
        let young = published
            .and_then(|at| now.duration_since(at).ok())
            .is_some_and(|age| age < window);
        if !young {
            return Err(Error::Forbidden(format!(
                "{name}@{version} was published more than {} ago: this registry keeps \
                 it (publish.unpublish); deprecate it instead",
                humantime::format_duration(window)
            )));
        }
        removed.push(version);
    }
    for version in &removed {
        doc.remove_version(version);
    }
    let stamp = humantime::format_rfc3339_millis(now).to_string();
    doc.time_mut()
        .insert("modified".into(), Value::String(stamp));
    Ok(removed)
}
