//! The one rule for "is this name published here?": a value built once from `[publish]`
//! (kept in the validated `PublishConfig` as `names`, shared by the app as `App::private`)
//! (`scopes` and `packages`, each an exact name or a glob with `*`) that every path which could
//! reach upstream asks — requests, refresh, the mirror, tarball fetches, `add-package`, both
//! audit endpoints and search. A name it answers `true` for is served from the store only and
//! never named to upstream.

/// A `*` glob, compared without regard to ASCII case (npm names are lowercase; a scope typed
/// `@ACME` in a request is the same scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    /// The pattern, lowercased.
    pattern: String,
}

impl Glob {
    /// The glob `pattern` (`*` for any run of characters).
    pub(crate) fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_ascii_lowercase(),
        }
    }

    /// Whether `text` matches: `*` stands for any run of characters (none included).
    pub(crate) fn matches(&self, text: &str) -> bool {
        let text = text.to_ascii_lowercase();
        let mut parts = self.pattern.split('*');
        let first = parts.next().unwrap_or("");
        let Some(mut rest) = text.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            // No `*` at all: the whole text must be the pattern.
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// The names published here: `[publish] scopes` (whole scopes) and `[publish] packages`
/// (unscoped names), each exact or a `*` glob.
#[derive(Debug, Clone, Default)]
pub struct PrivateNames {
    scopes: Vec<Glob>,
    packages: Vec<Glob>,
}

impl PrivateNames {
    /// The rule `[publish]` gives: `scopes` like `@acme` or `@team-*`, `packages` like
    /// `acme-tool`, `acme-*` or `*` (every unscoped name).
    pub fn new(scopes: &[String], packages: &[String]) -> Self {
        Self {
            scopes: scopes.iter().map(|s| Glob::new(s)).collect(),
            packages: packages.iter().map(|p| Glob::new(p)).collect(),
        }
    }

    /// Whether `name` (a package name, scoped or not) is published here, and so never looked
    /// up upstream.
    pub fn contains(&self, name: &str) -> bool {
        match name.split_once('/') {
            Some((scope, _)) if scope.starts_with('@') => {
                self.scopes.iter().any(|glob| glob.matches(scope))
            }
            _ => self.packages.iter().any(|glob| glob.matches(name)),
        }
    }

    /// Whether no name at all is published here (a pure mirror).
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty() && self.packages.is_empty()
    }

    /// Whether every unscoped name is published here (`packages = ["*"]`): then only scoped
    /// names are mirrored.
    pub fn every_unscoped(&self) -> bool {
        self.packages.iter().any(|glob| glob.pattern == "*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(scopes: &[&str], packages: &[&str]) -> PrivateNames {
        let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PrivateNames::new(&own(scopes), &own(packages))
    }

    #[test]
    fn exact_scopes_and_names() {
        let private = names(&["@acme"], &["acme-tool"]);
        assert!(private.contains("@acme/widget"));
        assert!(
            private.contains("@ACME/widget"),
            "a scope is the same in any case"
        );
        assert!(private.contains("acme-tool"));
        assert!(!private.contains("acme-tool2"));
        assert!(!private.contains("@acmecorp/widget"));
        assert!(!private.contains("express"));
        assert!(!private.contains("@types/node"));
    }

    #[test]
    fn globs() {
        let private = names(&["@team-*"], &["acme-*", "*-internal"]);
        assert!(private.contains("@team-a/x"));
        assert!(private.contains("@team-/x"), "`*` matches nothing too");
        assert!(!private.contains("@teams/x"));
        assert!(private.contains("acme-cli"));
        assert!(private.contains("billing-internal"));
        assert!(!private.contains("acme"));
        assert!(
            !private.contains("@acme-x/y"),
            "a package glob never matches a scoped name"
        );
        let every = names(&[], &["*"]);
        assert!(every.every_unscoped());
        assert!(every.contains("express"));
        assert!(!every.contains("@types/node"));
        let middle = names(&[], &["a*b*c"]);
        assert!(middle.contains("abc") && middle.contains("a-b-c") && !middle.contains("acb"));
        assert!(
            !names(&[], &["ab*ba"]).contains("aba"),
            "prefix and suffix never overlap"
        );
    }

    #[test]
    fn empty() {
        assert!(names(&[], &[]).is_empty());
        assert!(!names(&[], &[]).contains("x"));
    }
}
