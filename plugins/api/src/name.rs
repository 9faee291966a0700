//! npm package names: what is a valid one.

/// The longest package name the npm registry accepts.
pub const MAX_NAME_LEN: usize = 214;

/// Why a package name is invalid, for a person.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the package name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the package name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    let (scope, base) = match name.strip_prefix('@') {
        Some(rest) => match rest.split_once('/') {
            Some((scope, base)) => (Some(scope), base),
            None => return Err(format!("`{name}`: a scoped name is `@scope/name`")),
        },
        None => (None, name),
    };
    if let Some(scope) = scope {
        check_part(scope, false).map_err(|why| format!("`{name}`: the scope {why}"))?;
    }
    // As npm's own rule (validate-npm-package-name): a leading `_` is refused only for an
    // unscoped name, where the whole name starts with it; `@scope/_x` is a valid name.
    check_part(base, scope.is_some()).map_err(|why| format!("`{name}`: the name {why}"))?;
    if scope.is_none() && matches!(base, "node_modules" | "favicon.ico") {
        return Err(format!("`{name}` is a reserved name"));
    }
    Ok(())
}

/// Whether `name` is a valid npm package name.
pub fn is_valid_name(name: &str) -> bool {
    check_name(name).is_ok()
}

/// Whether `c` may appear in a name part: what `encodeURIComponent` leaves alone.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '!' | '*' | '\'' | '(' | ')')
}

/// The scope of a scoped name (`@scope` of `@scope/name`), if it has one.
pub fn scope_of(name: &str) -> Option<&str> {
    match name.split_once('/') {
        Some((scope, _)) if scope.starts_with('@') => Some(scope),
        _ => None,
    }
}

/// A package name or a whole scope, as plugin lists write them: `left-pad`, `@types/node`,
/// `@acme/*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamePattern {
    /// A package name, matched exactly (case-sensitively).
    Name(String),
    /// `@scope/*`: every package of the scope; holds `@scope`.
    Scope(String),
}

impl NamePattern {
    /// Parse `name` or `@scope/*`; the error says what is wrong, for a person.
    pub fn parse(text: &str) -> Result<NamePattern, String> {
        if let Some(scope) = text.strip_suffix("/*") {
            if !scope.starts_with('@') {
                return Err(format!(
                    "`{text}`: only a scope can end in `/*`, as in `@scope/*`"
                ));
            }
            check_name(&format!("{scope}/x"))?;
            return Ok(NamePattern::Scope(scope.to_string()));
        }
        check_name(text)?;
        Ok(NamePattern::Name(text.to_string()))
    }

    /// Whether `name` is this name, or a package of this scope.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Name(own) => own == name,
            NamePattern::Scope(scope) => scope_of(name) == Some(scope.as_str()),
        }
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamePattern::Name(name) => f.write_str(name),
            NamePattern::Scope(scope) => write!(f, "{scope}/*"),
        }
    }
}

fn check_part(part: &str, underscore_first: bool) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("is empty");
    }
    if part.starts_with('.') || (part.starts_with('_') && !underscore_first) {
        return Err("starts with `.` or `_`");
    }
    if !part.chars().all(is_name_char) {
        return Err("has characters that are not URL-safe");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn valid_names_pass() {
        for name in [
            "express",
            "JSONStream",
            "@types/node",
            "lodash.merge",
            "a-b_c~d",
            "@scope/_private",
        ] {
            assert!(is_valid_name(name), "{name}");
        }
    }

    #[test]
    fn patterns_match_names_and_scopes() {
        let scope = NamePattern::parse("@acme/*").unwrap();
        assert!(scope.matches("@acme/tool"));
        assert!(!scope.matches("@acmex/tool") && !scope.matches("acme"));
        let name = NamePattern::parse("left-pad").unwrap();
        assert!(name.matches("left-pad") && !name.matches("left-pad2"));
        assert_eq!(scope.to_string(), "@acme/*");
        for bad in ["acme/*", "@a b/*", "../x", "@acme"] {
            assert!(NamePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_names_fail() {
        let long = "a".repeat(215);
        for name in [
            "",
            "..",
            ".hidden",
            "_private",
            "node_modules",
            "@../x",
            "@./x",
            "@s/.x",
            "@scope",
            "@s/",
            "a/b",
            "a b",
            "a\\b",
            "a;b",
            "a\0b",
            "a%2e",
            &long,
        ] {
            assert!(!is_valid_name(name), "{name:?}");
        }
    }
}
