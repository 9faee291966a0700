//! The whitelist file format: one package name per line, `#` comments, blank lines,
//! `@scope/*` for a whole scope. CRLF line ends and a UTF-8 BOM are accepted.

use std::collections::HashSet;
use std::fmt;

use sluice_plugin_api::name::check_name;

/// One meaningful line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A package name, matched exactly (case-sensitively).
    Name(String),
    /// `@scope/*`: every package of the scope; holds `@scope`.
    Scope(String),
}

impl Entry {
    /// Parse one line's text (comment and blanks already removed).
    pub fn parse(text: &str) -> Result<Entry, String> {
        if let Some(scope) = text.strip_suffix("/*") {
            check_name(&format!("{scope}/x"))?;
            if !scope.starts_with('@') {
                return Err(format!(
                    "`{text}`: only a scope can end in `/*`, as in `@scope/*`"
                ));
            }
            return Ok(Entry::Scope(scope.to_string()));
        }
        check_name(text)?;
        Ok(Entry::Name(text.to_string()))
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Name(name) => f.write_str(name),
            Entry::Scope(scope) => write!(f, "{scope}/*"),
        }
    }
}

/// A line that could not be read, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// The result of reading a whole file: the entries found and the lines refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Entries in file order, without duplicates.
    pub entries: Vec<Entry>,
    /// Lines that are not a valid entry.
    pub errors: Vec<LineError>,
}

/// The meaningful text of a line: without BOM, line end, comment and surrounding blanks.
fn line_text(line: &str) -> &str {
    let line = line.trim_start_matches('\u{feff}');
    let line = line.split('#').next().unwrap_or("");
    line.trim()
}

/// Read a whole whitelist file's text.
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut seen = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let text = line_text(line);
        if text.is_empty() {
            continue;
        }
        match Entry::parse(text) {
            Ok(entry) => {
                if seen.insert(entry.clone()) {
                    parsed.entries.push(entry);
                }
            }
            Err(message) => parsed.errors.push(LineError {
                line: index + 1,
                message,
            }),
        }
    }
    parsed
}

/// The set of allowed packages, for fast lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    names: HashSet<String>,
    scopes: HashSet<String>,
}

impl Matcher {
    /// Build a matcher from parsed entries.
    pub fn new(entries: &[Entry]) -> Self {
        let mut matcher = Matcher::default();
        for entry in entries {
            match entry {
                Entry::Name(name) => matcher.names.insert(name.clone()),
                Entry::Scope(scope) => matcher.scopes.insert(scope.clone()),
            };
        }
        matcher
    }

    /// List `name` too.
    pub fn insert_name(&mut self, name: &str) {
        self.names.insert(name.to_string());
    }

    /// Whether `entry` itself is in the list.
    pub fn has(&self, entry: &Entry) -> bool {
        match entry {
            Entry::Name(name) => self.names.contains(name),
            Entry::Scope(scope) => self.scopes.contains(scope),
        }
    }

    /// Whether this list has an entry `previous` lacks.
    pub fn adds_to(&self, previous: &Matcher) -> bool {
        self.names.iter().any(|n| !previous.names.contains(n))
            || self.scopes.iter().any(|s| !previous.scopes.contains(s))
    }

    /// Whether `name` is listed, by name or by scope.
    pub fn allows(&self, name: &str) -> bool {
        if self.names.contains(name) {
            return true;
        }
        match name.split_once('/') {
            Some((scope, _)) if scope.starts_with('@') => self.scopes.contains(scope),
            _ => false,
        }
    }

    /// How many entries (names and scopes) the list has.
    pub fn len(&self) -> usize {
        self.names.len() + self.scopes.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The listed scopes (`@acme`), in no particular order.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(String::as_str)
    }

    /// The listed package names (scopes excluded), in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_scopes_comments_crlf_and_bom() {
        let text =
            "\u{feff}# approved\r\nexpress\r\n\r\n@types/*  # all types\nJSONStream\nexpress\n";
        let parsed = parse(text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(
            parsed.entries,
            vec![
                Entry::Name("express".into()),
                Entry::Scope("@types".into()),
                Entry::Name("JSONStream".into())
            ]
        );
        let matcher = Matcher::new(&parsed.entries);
        assert!(matcher.allows("express"));
        assert!(matcher.allows("@types/node"));
        assert!(matcher.allows("JSONStream"));
        assert!(
            !matcher.allows("jsonstream"),
            "names match case-sensitively"
        );
        assert!(!matcher.allows("@typesx/node"));
        assert!(!matcher.allows("lodash"));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let parsed = parse("express\n../etc\nfoo/*\n@ok/*\n");
        let lines: Vec<usize> = parsed.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3]);
        assert_eq!(parsed.entries.len(), 2);
    }
}
