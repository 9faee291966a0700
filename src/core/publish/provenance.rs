//! The provenance `npm publish --provenance` attaches: checked against the version and its
//! tarball, kept beside the version.

use base64::Engine as _;
use serde_json::Value;

use super::bad;
use crate::core::Error;

/// The state object keeping the attestations of `name@version`.
pub(super) fn attestations_key(name: &str, version: &str) -> String {
    format!("attestations/{name}@{version}")
}

/// Check the `.sigstore` attachment `npm publish --provenance` adds (its `data` is the Sigstore
/// bundle as raw JSON): a bundle whose DSSE statement names this package version and this
/// tarball's sha512. Returns its predicate type and the bundle.
///
/// The bundle's signature is not checked against Sigstore's roots here (that needs their
/// transparency log); clients that verify provenance (`npm audit signatures`) do.
pub(super) fn provenance(
    name: &str,
    version: &str,
    tarball: &[u8],
    attachment: &Value,
) -> Result<(String, Value), Error> {
    let bad_bundle = |why: &str| bad(format!("the provenance bundle of {name}@{version} {why}"));
    let data = attachment
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_bundle("has no data"))?;
    let bundle: Value =
        serde_json::from_str(data).map_err(|_| bad_bundle("is not JSON (a Sigstore bundle)"))?;
    if !bundle
        .get("mediaType")
        .and_then(Value::as_str)
        .is_some_and(|m| m.starts_with("application/vnd.dev.sigstore.bundle"))
    {
        return Err(bad_bundle("is not a Sigstore bundle (mediaType)"));
    }
    let payload = bundle
        .pointer("/dsseEnvelope/payload")
        .and_then(Value::as_str)
        .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
        .ok_or_else(|| bad_bundle("has no DSSE statement"))?;
    let predicate = payload
        .get("predicateType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_bundle("names no predicateType"))?
        .to_string();
    let sha512 = ssri::IntegrityOpts::new()
        .algorithm(ssri::Algorithm::Sha512)
        .chain(tarball)
        .result()
        .to_hex()
        .1;
    let purl = format!("pkg:npm/{}@{version}", name.replacen('@', "%40", 1));
    let names_it = payload
        .get("subject")
        .and_then(Value::as_array)
        .is_some_and(|subjects| {
            subjects.iter().any(|s| {
                s.get("name").and_then(Value::as_str) == Some(purl.as_str())
                    && s.pointer("/digest/sha512").and_then(Value::as_str) == Some(sha512.as_str())
            })
        });
    if !names_it {
        return Err(bad_bundle(&format!(
            "is not about {purl} with this tarball's sha512"
        )));
    }
    Ok((predicate, bundle))
}
