//! The package document ("packument") as plugins see it.

use serde_json::{Map, Value};

/// A package document: the JSON object upstream serves for `GET /{name}`, field order kept.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Packument {
    /// The whole document.
    pub doc: Map<String, Value>,
}

impl Packument {
    /// Wrap a parsed JSON object.
    pub fn new(doc: Map<String, Value>) -> Self {
        Self { doc }
    }

    /// The `name` field, if it is a string.
    pub fn name(&self) -> Option<&str> {
        self.doc.get("name").and_then(Value::as_str)
    }

    /// The `versions` object, if present.
    pub fn versions(&self) -> Option<&Map<String, Value>> {
        self.doc.get("versions").and_then(Value::as_object)
    }

    /// The `versions` object, created when missing.
    pub fn versions_mut(&mut self) -> &mut Map<String, Value> {
        object_field(&mut self.doc, "versions")
    }

    /// The `dist-tags` object, if present.
    pub fn dist_tags(&self) -> Option<&Map<String, Value>> {
        self.doc.get("dist-tags").and_then(Value::as_object)
    }

    /// The `dist-tags` object, created when missing.
    pub fn dist_tags_mut(&mut self) -> &mut Map<String, Value> {
        object_field(&mut self.doc, "dist-tags")
    }

    /// The `time` object, if present.
    pub fn time(&self) -> Option<&Map<String, Value>> {
        self.doc.get("time").and_then(Value::as_object)
    }

    /// The `time` object, created when missing.
    pub fn time_mut(&mut self) -> &mut Map<String, Value> {
        object_field(&mut self.doc, "time")
    }

    /// When `version` was published, as upstream's `time` says (RFC 3339), if it says.
    pub fn published(&self, version: &str) -> Option<&str> {
        self.time()?.get(version)?.as_str()
    }

    /// Remove `version` from `versions` (its `time` entry stays, as the registry keeps it).
    pub fn remove_version(&mut self, version: &str) -> Option<Value> {
        self.doc
            .get_mut("versions")
            .and_then(Value::as_object_mut)
            .and_then(|versions| versions.shift_remove(version))
    }

    /// The file name of `version`'s tarball (the last segment of `dist.tarball`), if any.
    pub fn tarball_file(manifest: &Value) -> Option<&str> {
        let url = manifest.get("dist")?.get("tarball")?.as_str()?;
        let path = url.split(['?', '#']).next().unwrap_or(url);
        path.rsplit('/').next().filter(|file| !file.is_empty())
    }
}

fn object_field<'a>(doc: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = doc
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(map) => map,
        _ => unreachable!("the field was just made an object"),
    }
}
