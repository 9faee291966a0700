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
        check_part(scope).map_err(|why| format!("`{name}`: the scope {why}"))?;
    }
    check_part(base).map_err(|why| format!("`{name}`: the name {why}"))?;
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

fn check_part(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("is empty");
    }
    if part.starts_with('.') || part.starts_with('_') {
        return Err("starts with `.` or `_`");
    }
    if !part.chars().all(is_name_char) {
        return Err("has characters that are not URL-safe");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_pass() {
        for name in [
            "express",
            "JSONStream",
            "@types/node",
            "lodash.merge",
            "a-b_c~d",
        ] {
            assert!(is_valid_name(name), "{name}");
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
