//! Fuzz entry points, shared by the cargo-fuzz targets (`tests/fuzz/`) and a short
//! randomized run in `cargo test`. Each checks invariants and panics when one breaks.

use serde_json::Value;

use crate::packument;
use crate::route::route;

/// Route arbitrary bytes as a path: never panics, and whatever routes names a valid package
/// with no traversal shape left in it.
pub fn route_bytes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    };
    for method in ["GET", "HEAD", "POST", "PUT"] {
        if let Ok(request) = route(method, path, query, Some(crate::route::CORGI)) {
            if let Some(name) = request.package() {
                assert!(
                    sluice_plugin_api::name::is_valid_name(name),
                    "routed an invalid name {name:?} from {path:?}"
                );
                assert!(
                    name.split('/').all(|part| part != "." && part != ".."),
                    "{name:?}"
                );
            }
            if let sluice_plugin_api::NpmRequest::Tarball { file, .. } = &request {
                assert!(!file.contains('/') && !file.starts_with('.'), "{file:?}");
            }
        }
    }
}

/// Merge two arbitrary documents (the input split in two JSON values): never panics, and
/// every version the held document had is in the result.
pub fn merge_bytes(data: &[u8]) {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (fresh, held) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let (Ok(mut fresh), Ok(held)) = (packument::parse(fresh, "p"), packument::parse(held, "p"))
    else {
        return;
    };
    let held_versions: Vec<String> = held
        .versions()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default();
    packument::merge(&mut fresh, &held);
    for version in held_versions {
        assert!(
            fresh.versions().is_some_and(|v| v.contains_key(&version)),
            "merge lost {version}"
        );
    }
    if let Some(tags) = fresh.dist_tags() {
        for target in tags.values().filter_map(Value::as_str) {
            let has = fresh.versions().is_some_and(|v| v.contains_key(target));
            let parsed = nodejs_semver::Version::parse(target).is_ok();
            assert!(
                has || !parsed || held.versions().is_none(),
                "tag points at {target}"
            );
        }
    }
    let _ = packument::abbreviate(&fresh, true);
    packument::rewrite(&mut fresh, "http://127.0.0.1:4870/");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short randomized run (the long one is `cargo fuzz`; see README).
    #[test]
    fn random_inputs_keep_the_invariants() {
        let seeds: &[&[u8]] = &[
            b"/@scope%2fname/-/name-1.0.0.tgz",
            b"/express/4.0.0?x=1",
            b"/-/v1/search?text=a&size=999",
            b"/%2e%2e/%2E%2e%2fx",
            b"/@a/b/-/../../x.tgz",
        ];
        let alphabet = b"/%@.-_~2eEfF5c0aA\\;:?&=+ *'()!\x00\xff";
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(0..=input.len());
                match rng.u8(0..3) {
                    0 => input.insert(at, alphabet[rng.usize(0..alphabet.len())]),
                    1 if !input.is_empty() => {
                        input.remove(at.min(input.len() - 1));
                    }
                    _ => input.insert(at, b'/'),
                }
            }
            route_bytes(&input);
        }
        let fresh = br#"{"name":"p","dist-tags":{"latest":"2.0.0"},"versions":{"2.0.0":{"dist":{"tarball":"https://u.invalid/p/-/p-2.0.0.tgz"}}}}"#;
        let held = br#"{"name":"p","dist-tags":{"latest":"1.0.0"},"versions":{"1.0.0":{},"2.0.0":{}},"time":{"1.0.0":"2020-01-01T00:00:00.000Z"}}"#;
        for round in 0..5_000 {
            let mut input = fresh.to_vec();
            input.push(0);
            input.extend_from_slice(held);
            if round > 0 {
                let at = rng.usize(0..input.len());
                input[at] = b"{}[]\":,0123.-pv"[rng.usize(0..15)];
            }
            merge_bytes(&input);
        }
    }
}
