//! The provenance `npm publish --provenance` attaches: checked against the version and its
//! tarball, kept beside the version.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use ssri::Integrity;

use super::{bad, Publisher};
use crate::core::{usable_integrity, Error};
use crate::store::Expect;

/// The state object keeping the attestations of `name@version` published with the tarball
/// of sha512 `sha512` (hex): a bundle that came with a refused publish, or with another
/// tarball, is never the one a listed version is shown with.
fn attestations_key(name: &str, version: &str, sha512: &str) -> String {
    format!("attestations/{name}@{version}/{sha512}")
}

/// Where bundles were kept before they were keyed by tarball: read only when the bundle names
/// the listed tarball.
fn legacy_key(name: &str, version: &str) -> String {
    format!("attestations/{name}@{version}")
}

/// The sha512 of `tarball`, in hex.
fn sha512_hex(tarball: &[u8]) -> String {
    ssri::IntegrityOpts::new()
        .algorithm(ssri::Algorithm::Sha512)
        .chain(tarball)
        .result()
        .to_hex()
        .1
}

/// Whether the DSSE statement of `bundle` names `purl` with the sha512 `sha512` (hex).
fn names(bundle: &Value, purl: &str, sha512: &str) -> bool {
    statement(bundle)
        .and_then(|payload| payload.get("subject").and_then(Value::as_array).cloned())
        .is_some_and(|subjects| {
            subjects.iter().any(|s| {
                s.get("name").and_then(Value::as_str) == Some(purl)
                    && s.pointer("/digest/sha512").and_then(Value::as_str) == Some(sha512)
            })
        })
}

/// The DSSE statement of a Sigstore bundle.
fn statement(bundle: &Value) -> Option<Value> {
    bundle
        .pointer("/dsseEnvelope/payload")
        .and_then(Value::as_str)
        .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
}

/// The package URL of `name@version`, as provenance statements name it.
fn purl(name: &str, version: &str) -> String {
    format!("pkg:npm/{}@{version}", name.replacen('@', "%40", 1))
}

impl Publisher {
    /// Keep the provenance of a checked upload, under its tarball's sha512; one kept already
    /// stays (it was checked against the same name, version and tarball).
    pub(super) async fn store_provenance(
        &self,
        name: &str,
        version: &str,
        tarball: &[u8],
        (predicate, bundle): &(String, Value),
    ) -> Result<(), Error> {
        let kept = json!({ "attestations": [{ "predicateType": predicate, "bundle": bundle }] });
        let bytes = Bytes::from(serde_json::to_vec(&kept).unwrap_or_default());
        let key = attestations_key(name, version, &sha512_hex(tarball));
        self.store
            .put_state(&key, bytes, Expect::Absent)
            .await
            .map_err(Error::from)?;
        Ok(())
    }

    /// The attestations of `name@version` (`GET /-/npm/v1/attestations/{name}@{version}`):
    /// only for a listed version that was published with provenance, the bundle kept for its
    /// tarball.
    pub async fn attestations(&self, name: &str, version: &str) -> Result<Value, Error> {
        let without =
            || Error::NotFound(format!("{name}@{version} was published without provenance"));
        let doc = self
            .held(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{name} is not published here")))?;
        let manifest = doc
            .versions()
            .and_then(|versions| versions.get(version))
            .ok_or_else(|| Error::NotFound(format!("{name} has no version {version}")))?;
        if manifest.pointer("/dist/attestations").is_none() {
            return Err(without());
        }
        let sha512 = manifest
            .pointer("/dist/integrity")
            .and_then(Value::as_str)
            .and_then(usable_integrity)
            .and_then(|i| {
                i.hashes
                    .into_iter()
                    .find(|h| h.algorithm == ssri::Algorithm::Sha512)
            })
            .map(|hash| Integrity { hashes: vec![hash] }.to_hex().1)
            .ok_or_else(without)?;
        for key in [
            attestations_key(name, version, &sha512),
            legacy_key(name, version),
        ] {
            let Some((bytes, _)) = self.store.state(&key).await.map_err(Error::from)? else {
                continue;
            };
            let kept: Value =
                serde_json::from_slice(&bytes).map_err(|e| Error::store(e.to_string()))?;
            let about_it = kept
                .pointer("/attestations/0/bundle")
                .is_some_and(|bundle| names(bundle, &purl(name, version), &sha512));
            if about_it {
                return Ok(kept);
            }
        }
        Err(without())
    }
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
    let payload = statement(&bundle).ok_or_else(|| bad_bundle("has no DSSE statement"))?;
    let predicate = payload
        .get("predicateType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_bundle("names no predicateType"))?
        .to_string();
    let purl = purl(name, version);
    let names_it = names(&bundle, &purl, &sha512_hex(tarball));
    if !names_it {
        return Err(bad_bundle(&format!(
            "is not about {purl} with this tarball's sha512"
        )));
    }
    Ok((predicate, bundle))
}
