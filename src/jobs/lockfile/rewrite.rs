//! `sluice lockfile rewrite FILE... [--check]`: point every registry tarball URL a lockfile
//! names at `server.public_url`, so clients that fetch from the URL written in the lockfile
//! (yarn 1 does, whatever `--registry` says) come through sluice.
//!
//! The decision is made by the URL's shape alone, never by a list of registry hosts: a URL
//! whose path ends in a registry tarball's `/<name>/-/<file>.tgz` (`/@scope/name/-/…` for
//! scoped packages) and whose origin is not `public_url`'s is rewritten to the same
//! `<name>/-/<file>.tgz` under `public_url`, its `#fragment` (yarn's sha1) kept. Everything else
//! stays byte for byte: the file is edited in place, URL by URL, whatever its format
//! (package-lock.json, npm-shrinkwrap.json, yarn.lock v1 and berry, pnpm-lock.yaml, bun.lock).

use std::path::Path;

use reqwest::Url;

/// One URL that bypasses sluice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bypass {
    /// 1-based line number.
    pub line: usize,
    /// The URL as written.
    pub url: String,
    /// What it becomes.
    pub rewritten: String,
}

/// The characters that end a URL in a lockfile (quotes, blanks, separators of JSON and YAML).
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ']' | ')' | '>' | '<')
}

/// The registry-tarball tail of `path` (`name/-/file.tgz`, or `@scope/name/-/file.tgz`), if
/// the path has that shape.
fn tarball_tail(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let n = segments.len();
    if n < 3 || segments[n - 2] != "-" || !segments[n - 1].ends_with(".tgz") {
        return None;
    }
    let file = segments[n - 1];
    let base = segments[n - 3];
    let decoded = percent_encoding::percent_decode_str(base)
        .decode_utf8()
        .ok()?;
    // `@scope%2fname` in one segment, as some registries write it.
    if let Some((scope, name)) = decoded.split_once('/') {
        return Some(format!("{scope}/{name}/-/{file}"));
    }
    if !file.starts_with(&format!("{decoded}-")) {
        return None;
    }
    match segments.get(n.wrapping_sub(4)) {
        Some(scope) if n >= 4 && scope.starts_with('@') => {
            Some(format!("{scope}/{decoded}/-/{file}"))
        }
        _ => Some(format!("{decoded}/-/{file}")),
    }
}

/// What `url` becomes under `public_url`, when it is a registry tarball URL elsewhere.
pub fn rewritten(url: &str, public_url: &Url) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let tail = tarball_tail(parsed.path())?;
    let ours =
        parsed.origin() == public_url.origin() && parsed.path().starts_with(public_url.path());
    if ours {
        return None;
    }
    let mut out = format!("{}{tail}", public_url.as_str());
    if let Some(fragment) = parsed.fragment() {
        out.push('#');
        out.push_str(fragment);
    }
    Some(out)
}

/// `text` with every registry tarball URL pointed at `public_url`, and what changed.
pub fn rewrite(text: &str, public_url: &Url) -> (String, Vec<Bypass>) {
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::new();
    let mut line = 1;
    let mut rest = text;
    while let Some(at) = rest.find("http") {
        let (before, from) = rest.split_at(at);
        line += before.matches('\n').count();
        out.push_str(before);
        let is_url = from.starts_with("http://") || from.starts_with("https://");
        if !is_url {
            out.push_str("http");
            rest = &from[4..];
            continue;
        }
        let end = from.find(ends_url).unwrap_or(from.len());
        let url = &from[..end];
        match rewritten(url, public_url) {
            Some(new) => {
                found.push(Bypass {
                    line,
                    url: url.to_string(),
                    rewritten: new.clone(),
                });
                out.push_str(&new);
            }
            None => out.push_str(url),
        }
        rest = &from[end..];
    }
    out.push_str(rest);
    (out, found)
}

/// Rewrite the lockfile at `path` in place (through a temporary file and a rename); with
/// `check`, change nothing. Returns what bypasses (or bypassed) sluice.
pub fn rewrite_file(path: &Path, public_url: &Url, check: bool) -> Result<Vec<Bypass>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (new, found) = rewrite(&text, public_url);
    if !check && !found.is_empty() {
        let temp = path.with_extension("sluice-rewrite");
        std::fs::write(&temp, new).map_err(|e| format!("{}: {e}", temp.display()))?;
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = std::fs::set_permissions(&temp, meta.permissions());
        }
        std::fs::rename(&temp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_registry_tarball_urls_elsewhere_change() {
        let ours = Url::parse("http://sluice.corp:4870/").unwrap();
        let cases = [
            (
                "https://registry.invalid/left/-/left-1.0.0.tgz",
                Some("http://sluice.corp:4870/left/-/left-1.0.0.tgz"),
            ),
            (
                "https://registry.invalid/@s/a/-/a-1.0.0.tgz#abc",
                Some("http://sluice.corp:4870/@s/a/-/a-1.0.0.tgz#abc"),
            ),
            (
                "https://mirror.invalid/npm/repo/@s%2fa/-/a-2.0.0.tgz",
                Some("http://sluice.corp:4870/@s/a/-/a-2.0.0.tgz"),
            ),
            ("http://sluice.corp:4870/left/-/left-1.0.0.tgz", None),
            ("https://github.invalid/user/repo/archive/v1.tar.gz", None),
            ("https://codeload.invalid/user/repo/tar.gz/abc", None),
            ("https://example.invalid/some/other/file.tgz", None),
            ("git+https://github.invalid/a/b.git", None),
        ];
        for (url, expected) in cases {
            assert_eq!(rewritten(url, &ours).as_deref(), expected, "{url}");
        }
    }

    #[test]
    fn everything_else_stays_byte_for_byte() {
        let ours = Url::parse("http://127.0.0.1:4870/").unwrap();
        let text = "# comment with http in it\r\n\"a@^1\":\r\n  resolved \"https://r.invalid/a/-/a-1.0.0.tgz#deadbeef\"\r\n  b \"git+https://github.invalid/x/y.git#v1\"\r\n";
        let (out, found) = rewrite(text, &ours);
        assert_eq!(
            out,
            "# comment with http in it\r\n\"a@^1\":\r\n  resolved \"http://127.0.0.1:4870/a/-/a-1.0.0.tgz#deadbeef\"\r\n  b \"git+https://github.invalid/x/y.git#v1\"\r\n"
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, 3);
    }
}
