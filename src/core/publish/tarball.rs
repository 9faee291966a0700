//! What a publish's tarball says of itself: its one `package.json` and its files.

use std::io::Read as _;

use serde_json::Value;

use super::bad;
use crate::core::Error;

/// More entries than this in a tarball are refused rather than listed.
const MAX_ENTRIES: usize = 100_000;

/// More bytes than this, unpacked, are refused rather than read through.
const MAX_UNPACKED: u64 = 4 << 30;

/// What a tarball holds, as npm unpacks it (its top folder stripped).
pub(super) struct Inside {
    /// Its `package.json`.
    pub json: Value,
    /// Its regular files, by path under the package folder (`lib/index.js`).
    pub files: Vec<String>,
}

/// The `package.json` and files of a gzipped npm tarball, which has exactly one
/// `package.json` at its top.
pub(super) fn read(tarball: &[u8]) -> Result<Inside, Error> {
    let not_tar = |e: std::io::Error| bad(format!("the tarball is not a gzipped tar: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let (mut json, mut manifests, mut files, mut unpacked) = (None, 0, Vec::new(), 0u64);
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        unpacked = unpacked.saturating_add(entry.header().size().unwrap_or(0));
        if files.len() >= MAX_ENTRIES || unpacked > MAX_UNPACKED {
            return Err(bad(
                "the tarball unpacks to too many files or bytes for a package",
            ));
        }
        let raw = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // npm strips the top folder, whatever it is called (`package/` by npm's own pack),
        // and makes nothing of `.` or doubled slashes.
        let parts: Vec<&str> = raw
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let path = parts.get(1..).unwrap_or_default().join("/");
        let regular = entry.header().entry_type().is_file();
        // A second package.json (in any top folder, in any case) would be unpacked over the
        // one checked here.
        if path.eq_ignore_ascii_case("package.json") {
            manifests += 1;
            if manifests > 1 {
                return Err(bad(
                    "the tarball has more than one package/package.json: npm would install \
                     the last, not the one checked",
                ));
            }
            if path == "package.json" && regular {
                json = Some(parse(&mut entry)?);
            }
        } else if regular && !path.is_empty() {
            files.push(path);
        }
    }
    let json = json.ok_or_else(|| bad("the tarball has no package/package.json"))?;
    Ok(Inside { json, files })
}

/// The JSON of a `package.json` entry.
fn parse(entry: &mut impl std::io::Read) -> Result<Value, Error> {
    let mut text = String::new();
    entry
        .take(10 << 20)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("package.json in the tarball: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| bad(format!("package.json in the tarball is not JSON: {e}")))
}
