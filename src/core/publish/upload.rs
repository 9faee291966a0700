//! The checks of a new version's upload, all made before anything is stored: its
//! attachments, its tarball against the integrity the manifest gives, the tarball's own
//! `package.json`, its provenance.

use base64::Engine as _;
use serde_json::{Map, Value};
use ssri::{Algorithm, Integrity};

use super::agree;
use super::bad;
use super::provenance::provenance;
use super::tarball;
use crate::core::{usable_integrity, Error};

/// A new version whose upload passed every check.
pub(super) struct Upload {
    /// The version.
    pub version: String,
    /// Its manifest, as the body gave it.
    pub manifest: Value,
    /// The tarball.
    pub tarball: Vec<u8>,
    /// The integrity the tarball matched.
    pub integrity: Integrity,
    /// The provenance's predicate type and Sigstore bundle, when one came.
    pub provenance: Option<(String, Value)>,
}

/// Check `name@version`'s `manifest` and the `attachments` carrying its tarball.
pub(super) fn check(
    name: &str,
    version: String,
    manifest: Value,
    attachments: &Map<String, Value>,
) -> Result<Upload, Error> {
    if manifest.get("version").and_then(Value::as_str) != Some(version.as_str())
        || manifest.get("name").and_then(Value::as_str) != Some(name)
    {
        return Err(bad(format!(
            "versions[{version}] does not say it is {name}@{version}"
        )));
    }
    let (tarball_name, bundle_name) = attachment_names(name, &version, attachments)?;
    let tarball = decode(attachments, &tarball_name)?;
    let integrity = check_integrity(&manifest, &tarball)?;
    let inside = tarball::read(&tarball)?;
    check_inside(name, &version, &inside.json)?;
    agree::check(&manifest, &inside)?;
    let provenance = match attachments.get(&bundle_name) {
        Some(attachment) => Some(provenance(name, &version, &tarball, attachment)?),
        None => None,
    };
    Ok(Upload {
        version,
        manifest,
        tarball,
        integrity,
        provenance,
    })
}

/// The names of the tarball's attachment and of its provenance's; any other attachment, or
/// one whose name is no file name, is refused.
fn attachment_names(
    name: &str,
    version: &str,
    attachments: &Map<String, Value>,
) -> Result<(String, String), Error> {
    let base = name.rsplit('/').next().unwrap_or(name);
    // npm names the attachment `@scope/name-1.0.0.tgz`: a slash only after the scope.
    let scope = name.split_once('/').map(|(scope, _)| format!("{scope}/"));
    let bad_name = |k: &str| {
        let rest = scope
            .as_deref()
            .and_then(|s| k.strip_prefix(s))
            .unwrap_or(k);
        rest.contains(['/', '\\', '\0']) || k.contains("..")
    };
    if let Some(key) = attachments.keys().find(|k| bad_name(k)) {
        return Err(bad(format!(
            "the attachment name `{}` is not a file name",
            key.escape_default()
        )));
    }
    // npm names them `@scope/name-1.0.0.tgz` and `….sigstore`; some tools leave the scope
    // off.
    let named = |ext: &str| {
        [
            format!("{name}-{version}.{ext}"),
            format!("{base}-{version}.{ext}"),
        ]
        .into_iter()
        .find(|k| attachments.contains_key(k))
        .unwrap_or_else(|| format!("{name}-{version}.{ext}"))
    };
    let (tarball_name, bundle_name) = (named("tgz"), named("sigstore"));
    if let Some(other) = attachments
        .keys()
        .find(|k| **k != tarball_name && **k != bundle_name)
    {
        return Err(bad(format!(
            "the attachment `{}` is neither {tarball_name} nor its provenance \
             ({bundle_name}): a publish carries exactly one tarball",
            other.escape_default()
        )));
    }
    Ok((tarball_name, bundle_name))
}

/// The bytes of attachment `tarball_name`, checked against the length it gives.
fn decode(attachments: &Map<String, Value>, tarball_name: &str) -> Result<Vec<u8>, Error> {
    let attachment = attachments
        .get(tarball_name)
        .ok_or_else(|| bad(format!("the tarball attachment {tarball_name} is missing")))?;
    let data = attachment
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the attachment has no data"))?;
    let tarball = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| bad(format!("the attachment is not base64: {e}")))?;
    if let Some(length) = attachment.get("length").and_then(Value::as_u64) {
        if length != tarball.len() as u64 {
            return Err(bad(format!(
                "the attachment is {} bytes, not the {length} it says",
                tarball.len()
            )));
        }
    }
    Ok(tarball)
}

/// The manifest's `dist.integrity`, which has a sha512 and which the tarball matches, hash by
/// hash, as it does `dist.shasum`.
fn check_integrity(manifest: &Value, tarball: &[u8]) -> Result<Integrity, Error> {
    let dist = manifest
        .get("dist")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let given = dist.get("integrity").and_then(Value::as_str).unwrap_or("");
    let integrity = usable_integrity(given)
        .filter(|i| i.hashes.iter().any(|h| h.algorithm == Algorithm::Sha512))
        .ok_or_else(|| {
            bad(format!(
                "dist.integrity `{}` has no sha512: a publish carries its tarball's sha512",
                given.escape_default()
            ))
        })?;
    // ssri checks only the strongest algorithm given; every hash given must hold.
    for hash in &integrity.hashes {
        let one = Integrity {
            hashes: vec![hash.clone()],
        };
        if one.check(tarball).is_err() {
            return Err(bad(format!(
                "the tarball does not match dist.integrity ({})",
                hash.algorithm
            )));
        }
    }
    if let Some(shasum) = dist.get("shasum").and_then(Value::as_str) {
        let sha1 = Integrity::from_hex(shasum, Algorithm::Sha1)
            .ok()
            .and_then(|sha1| usable_integrity(&sha1.to_string()))
            .ok_or_else(|| bad("dist.shasum is not a sha1"))?;
        if sha1.check(tarball).is_err() {
            return Err(bad("the tarball does not match dist.shasum"));
        }
    }
    Ok(integrity)
}

/// The tarball's own `package.json` names `name@version`.
fn check_inside(name: &str, version: &str, inside: &Value) -> Result<(), Error> {
    if inside.get("name").and_then(Value::as_str) != Some(name)
        || inside.get("version").and_then(Value::as_str) != Some(version)
    {
        return Err(bad(format!(
            "the tarball's package.json is {}@{}, not {name}@{version}",
            inside.get("name").and_then(Value::as_str).unwrap_or("?"),
            inside.get("version").and_then(Value::as_str).unwrap_or("?")
        )));
    }
    Ok(())
}
