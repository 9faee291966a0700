//! What the index holds of a packument: one document per package, its fields extracted from
//! the stored bytes without building the whole JSON tree (only the latest version is parsed).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING, TEXT,
};
use tantivy::tokenizer::{LowerCaser, NgramTokenizer, TextAnalyzer};
use tantivy::{Index, TantivyDocument};

/// The index's layout version: an index written with another one is rebuilt at start.
pub const SCHEMA_VERSION: u32 = 1;

/// The longest name prefix indexed as a term of its own; a longer prefix is matched by a range
/// of the lowercased names (it matches few).
pub const PREFIX_TERMS: usize = 12;

/// The tokenizer of [`Fields::prefixes`]: a name's first 1 to [`PREFIX_TERMS`] characters.
const EDGE: &str = "edge";

/// Register the tokenizers the schema names on `index` (tantivy does not keep them in the
/// index's files).
pub fn register_tokenizers(index: &Index) -> tantivy::Result<()> {
    let edge = TextAnalyzer::builder(NgramTokenizer::prefix_only(1, PREFIX_TERMS)?)
        .filter(LowerCaser)
        .build();
    index.tokenizers().register(EDGE, edge);
    Ok(())
}

/// The fields of the one schema.
#[derive(Debug, Clone)]
pub struct Fields {
    /// The schema.
    pub schema: Schema,
    /// The name as published: exact term (deletes), fast (the policy check), stored.
    pub name: Field,
    /// The name lowercased, one raw term: exact matches, and prefixes longer than
    /// [`PREFIX_TERMS`].
    pub name_lc: Field,
    /// The name's first characters, a term each (`rea` for `react`): a short prefix is one
    /// posting list, not a walk over every name starting with it.
    pub prefixes: Field,
    /// The name's words (`@babel/plugin-foo` → babel, plugin, foo).
    pub words: Field,
    /// The latest version's description (or the document's).
    pub description: Field,
    /// The keywords, one value each.
    pub keywords: Field,
    /// The author's and maintainers' names.
    pub people: Field,
    /// The latest version.
    pub version: Field,
    /// When the latest version was published (RFC 3339, as the document says).
    pub date: Field,
    /// The name's length: shorter names first among equal scores (`react` before `react-dom`).
    pub len: Field,
}

impl Fields {
    /// The schema every index of this version has.
    pub fn new() -> Self {
        let mut builder = Schema::builder();
        let name = builder.add_text_field("name", STRING | FAST | STORED);
        let name_lc = builder.add_text_field("name_lc", STRING);
        let edge = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(EDGE)
                .set_index_option(IndexRecordOption::Basic),
        );
        let prefixes = builder.add_text_field("prefixes", edge);
        let words = builder.add_text_field("words", TEXT);
        let description = builder.add_text_field("description", TEXT | STORED);
        let keywords = builder.add_text_field("keywords", TEXT | STORED);
        let people = builder.add_text_field("people", TEXT | STORED);
        let version = builder.add_text_field("version", STORED);
        let date = builder.add_text_field("date", STORED);
        let len = builder.add_u64_field("len", FAST);
        Self {
            schema: builder.build(),
            name,
            name_lc,
            prefixes,
            words,
            description,
            keywords,
            people,
            version,
            date,
            len,
        }
    }

    /// The tantivy document for `entry`.
    pub fn document(&self, entry: &Entry) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.name, &entry.name);
        doc.add_text(self.name_lc, entry.name.to_lowercase());
        doc.add_text(self.prefixes, &entry.name);
        doc.add_text(self.words, &entry.name);
        doc.add_text(self.description, &entry.description);
        for keyword in &entry.keywords {
            doc.add_text(self.keywords, keyword);
        }
        for person in &entry.people {
            doc.add_text(self.people, person);
        }
        doc.add_text(self.version, &entry.version);
        doc.add_text(self.date, &entry.date);
        doc.add_u64(self.len, entry.name.len() as u64);
        doc
    }
}

impl Default for Fields {
    fn default() -> Self {
        Self::new()
    }
}

/// What the index keeps of one package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The package's name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its keywords.
    pub keywords: Vec<String>,
    /// Its author's and maintainers' names.
    pub people: Vec<String>,
    /// The latest version (empty when it has none).
    pub version: String,
    /// When that version was published.
    pub date: String,
}

#[derive(Deserialize)]
struct Lean<'a> {
    #[serde(default)]
    description: Option<Value>,
    #[serde(default)]
    keywords: Option<Value>,
    #[serde(default)]
    author: Option<Value>,
    #[serde(default)]
    maintainers: Option<Value>,
    #[serde(default, rename = "dist-tags")]
    dist_tags: Option<HashMap<Cow<'a, str>, Value>>,
    #[serde(default, borrow)]
    versions: Option<HashMap<Cow<'a, str>, &'a RawValue>>,
    #[serde(default)]
    time: Option<HashMap<Cow<'a, str>, Value>>,
}

#[derive(Deserialize)]
struct LeanVersion {
    #[serde(default)]
    description: Option<Value>,
    #[serde(default)]
    keywords: Option<Value>,
    #[serde(default)]
    author: Option<Value>,
}

/// The entry for the stored packument `bytes` of `name`; `None` when it lists no version (a
/// private package unpublished whole) or is not a packument.
pub fn extract(name: &str, bytes: &[u8]) -> Option<Entry> {
    let doc: Lean<'_> = serde_json::from_slice(bytes).ok()?;
    let versions = doc.versions.unwrap_or_default();
    if versions.is_empty() {
        return None;
    }
    let latest = doc
        .dist_tags
        .as_ref()
        .and_then(|tags| tags.get("latest"))
        .and_then(Value::as_str)
        .filter(|v| versions.contains_key(*v))
        .map(str::to_string);
    let latest_doc: Option<LeanVersion> = latest
        .as_deref()
        .and_then(|v| versions.get(v))
        .and_then(|raw| serde_json::from_str(raw.get()).ok());
    let latest_doc = latest_doc.as_ref();
    let description = latest_doc
        .and_then(|v| v.description.as_ref())
        .or(doc.description.as_ref())
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let keywords = words_of(
        latest_doc
            .and_then(|v| v.keywords.as_ref())
            .or(doc.keywords.as_ref()),
    );
    let mut people = Vec::new();
    if let Some(author) = latest_doc
        .and_then(|v| v.author.as_ref())
        .or(doc.author.as_ref())
        .and_then(person_name)
    {
        people.push(author);
    }
    if let Some(Value::Array(maintainers)) = &doc.maintainers {
        people.extend(maintainers.iter().filter_map(person_name));
    }
    people.dedup();
    let time = doc.time.unwrap_or_default();
    let version = latest.unwrap_or_default();
    let date = time
        .get(version.as_str())
        .or_else(|| time.get("modified"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Some(Entry {
        name: name.to_string(),
        description,
        keywords,
        people,
        version,
        date,
    })
}

/// Keywords as published: an array of strings, or one string of words.
fn words_of(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(text)) => text
            .split([',', ' '])
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// A person's name: `{"name": …}` or `"Name <mail> (url)"`.
fn person_name(value: &Value) -> Option<String> {
    let name = match value {
        Value::Object(person) => person.get("name")?.as_str()?.trim(),
        Value::String(text) => text.split(['<', '(']).next()?.trim(),
        _ => return None,
    };
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_latest_version_speaks_for_the_package() {
        let bytes = serde_json::json!({
            "name": "left",
            "description": "old words",
            "dist-tags": {"latest": "1.1.0"},
            "maintainers": [{"name": "ann", "email": "a@x"}, {"name": "bob"}],
            "versions": {
                "1.0.0": {"description": "first"},
                "1.1.0": {"description": "the left side", "keywords": ["side", "left"],
                          "author": "Carol <c@x> (https://x)"}
            },
            "time": {"1.1.0": "2024-02-02T00:00:00.000Z", "modified": "2024-03-03T00:00:00.000Z"}
        })
        .to_string();
        let entry = extract("left", bytes.as_bytes()).unwrap();
        assert_eq!(entry.description, "the left side");
        assert_eq!(entry.keywords, vec!["side", "left"]);
        assert_eq!(entry.people, vec!["Carol", "ann", "bob"]);
        assert_eq!(entry.version, "1.1.0");
        assert_eq!(entry.date, "2024-02-02T00:00:00.000Z");
    }

    #[test]
    fn no_versions_no_entry() {
        assert_eq!(extract("gone", br#"{"name":"gone","versions":{}}"#), None);
        assert_eq!(extract("bad", b"not json"), None);
        let tagless = extract(
            "t",
            br#"{"name":"t","versions":{"1.0.0":{}},"keywords":"a, b"}"#,
        );
        let tagless = tagless.unwrap();
        assert_eq!(tagless.version, "");
        assert_eq!(tagless.keywords, vec!["a", "b"]);
    }
}
