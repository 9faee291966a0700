//! Deny rules: what they look like (`left-pad`, `@evil/*`, `lodash@<4.17.21`), where they were
//! written, and the file format (one rule a line, `#` comments).

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use nodejs_semver::{Range, Version};
use sluice_plugin_api::name::{check_name, NamePattern};

/// One deny rule.
#[derive(Debug, Clone)]
pub enum Rule {
    /// A whole package or scope: every request for it is refused.
    Package(NamePattern),
    /// Versions of a package: they are hidden and their tarballs refused.
    Versions {
        /// The package name.
        name: String,
        /// The versions denied (pre-releases in the range included).
        range: Range,
        /// The rule as written, for messages.
        text: String,
    },
}

impl Rule {
    /// Parse `name`, `@scope/*` or `name@range`; the error says what is wrong, for a person.
    pub fn parse(text: &str) -> Result<Rule, String> {
        // The `@` of a range comes after the name; a leading `@` starts a scope.
        let Some(at) = text.char_indices().skip(1).find(|(_, c)| *c == '@') else {
            return NamePattern::parse(text).map(Rule::Package);
        };
        let (name, range_text) = (&text[..at.0], text[at.0 + 1..].trim());
        if name.ends_with("/*") {
            return Err(format!(
                "`{text}`: a whole scope takes no range; write `{name}` or name@range"
            ));
        }
        check_name(name).map_err(|why| format!("`{text}`: {why}"))?;
        if range_text.is_empty() {
            return Err(format!(
                "`{text}`: nothing after `@`; write name@range, e.g. lodash@<4.17.21"
            ));
        }
        let range = Range::parse(range_text).map_err(|e| {
            format!("`{text}`: `{range_text}` is not a semver range ({e}); write e.g. <4.17.21, 1.2.3 or >=2 <2.1")
        })?;
        Ok(Rule::Versions {
            name: name.to_string(),
            range,
            text: text.to_string(),
        })
    }

    /// Whether this rule refuses package `name` as a whole.
    pub fn denies_package(&self, name: &str) -> bool {
        match self {
            Rule::Package(pattern) => pattern.matches(name),
            Rule::Versions { .. } => false,
        }
    }

    /// Whether this rule refuses `version` of `name`.
    ///
    /// A version that is not semver cannot be shown to be outside the range, so it is refused.
    pub fn denies_version(&self, name: &str, version: &str) -> bool {
        match self {
            Rule::Package(pattern) => pattern.matches(name),
            Rule::Versions {
                name: own, range, ..
            } => {
                own == name
                    && Version::parse(version)
                        .map_or(true, |v| range.satisfies_with_prerelease(&v, true))
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Package(pattern) => write!(f, "{pattern}"),
            Rule::Versions { text, .. } => f.write_str(text),
        }
    }
}

/// Where a rule was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The plugin's `packages` list in the configuration.
    Config,
    /// A line of the deny file.
    File {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Config => f.write_str("the deny plugin's `packages`"),
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
        }
    }
}

/// A rule and where it was written.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The rule.
    pub rule: Rule,
    /// Where it was written.
    pub origin: Origin,
}

impl Placed {
    /// The sentence naming this rule in a refusal.
    pub fn describe(&self) -> String {
        format!("rule `{}` ({})", self.rule, self.origin)
    }
}

/// A list of rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Placed>,
}

impl Rules {
    /// Rules parsed from the config's `packages`; the first bad one is the error.
    pub fn from_config(packages: &[String]) -> Result<Rules, String> {
        let rules = packages
            .iter()
            .map(|text| {
                Rule::parse(text.trim()).map(|rule| Placed {
                    rule,
                    origin: Origin::Config,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| format!("packages: {why}"))?;
        Ok(Rules { rules })
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule refusing package `name` as a whole, if any.
    pub fn package(&self, name: &str) -> Option<&Placed> {
        self.rules.iter().find(|p| p.rule.denies_package(name))
    }

    /// The rule refusing `version` of `name`, if any.
    pub fn version(&self, name: &str, version: &str) -> Option<&Placed> {
        self.rules
            .iter()
            .find(|p| p.rule.denies_version(name, version))
    }

    /// Whether some rule refuses any version of `name`.
    pub fn concerns(&self, name: &str) -> bool {
        self.rules.iter().any(|p| match &p.rule {
            Rule::Package(pattern) => pattern.matches(name),
            Rule::Versions { name: own, .. } => own == name,
        })
    }
}

/// A line of the deny file that could not be read, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Read a whole deny file's text: the rules, or every bad line.
///
/// CRLF line ends, a UTF-8 BOM, blank lines and `#` comments are accepted.
pub fn parse_file(text: &str, path: &std::path::Path) -> Result<Rules, Vec<LineError>> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}');
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() || !seen.insert(entry.to_string()) {
            continue;
        }
        match Rule::parse(entry) {
            Ok(rule) => rules.push(Placed {
                rule,
                origin: Origin::File {
                    path: path.to_path_buf(),
                    line: index + 1,
                },
            }),
            Err(message) => errors.push(LineError {
                line: index + 1,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(Rules { rules })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    #[test]
    fn names_scopes_and_ranges() {
        let rules = Rules::from_config(&[
            "left-pad".into(),
            "@evil/*".into(),
            "lodash@<4.17.21".into(),
            "@types/node@>=20 <20.2".into(),
        ])
        .unwrap();
        assert!(rules.package("left-pad").is_some());
        assert!(rules.package("@evil/x").is_some());
        assert!(rules.package("lodash").is_none());
        assert!(rules.version("lodash", "4.17.20").is_some());
        assert!(rules.version("lodash", "4.17.21-beta.1").is_some());
        assert!(rules.version("lodash", "4.17.21").is_none());
        assert!(rules.version("lodash", "not-semver").is_some());
        assert!(rules.version("@types/node", "20.1.0").is_some());
        assert!(rules.version("@types/node", "20.2.0").is_none());
        assert!(rules.concerns("lodash") && !rules.concerns("express"));
        let placed = rules.version("lodash", "1.0.0").unwrap();
        assert_eq!(
            placed.describe(),
            "rule `lodash@<4.17.21` (the deny plugin's `packages`)"
        );
    }

    #[test]
    fn bad_rules_say_why() {
        for (text, wanted) in [
            ("lodash@", "nothing after"),
            ("lodash@<<nope", "not a semver range"),
            ("evil/*", "only a scope"),
            ("../x", "name"),
            ("@evil/*@1", "`@evil/*@1`"),
        ] {
            let error = Rule::parse(text).unwrap_err();
            assert!(error.contains(wanted), "{text}: {error}");
        }
    }

    #[test]
    fn the_file_format_reports_bad_lines_by_number() {
        let path = Path::new("/etc/sluice/deny");
        let rules = parse_file(
            "\u{feff}# bad ones\r\nleft-pad\r\n\n@evil/* # all\nleft-pad\n",
            path,
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules.package("@evil/x").unwrap().describe(),
            "rule `@evil/*` (/etc/sluice/deny line 4)"
        );
        let errors = parse_file("ok\nlodash@\nalso-ok\nx@<<\n", path).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 4]);
    }
}
