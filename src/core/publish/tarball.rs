//! What a publish's tarball says of itself: its `package/package.json`.

use std::io::Read as _;

use serde_json::Value;

use super::bad;
use crate::core::Error;

/// The `package/package.json` inside a gzipped npm tarball.
pub(super) fn package_json(tarball: &[u8]) -> Result<Value, Error> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("the tarball is not a gzipped tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("the tarball is not a gzipped tar: {e}")))?;
        let path = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // npm packs under `package/`; some tools use another top folder.
        let mut parts = path.splitn(2, '/');
        let (_, rest) = (parts.next(), parts.next());
        if rest == Some("package.json") {
            let mut text = String::new();
            entry
                .by_ref()
                .take(10 << 20)
                .read_to_string(&mut text)
                .map_err(|e| bad(format!("package.json in the tarball: {e}")))?;
            return serde_json::from_str(&text)
                .map_err(|e| bad(format!("package.json in the tarball is not JSON: {e}")));
        }
    }
    Err(bad("the tarball has no package/package.json"))
}
