//! Routing: method + path + headers → [`NpmRequest`], or the error answer for a bad request.
//!
//! Paths are percent-decoded exactly once; whatever still looks encoded afterwards (`%252e`
//! becomes `%2e`) is refused as an invalid name. Names are validated with npm's rules, so no
//! path traversal shape survives routing, and no path on disk is ever built from a name.

use percent_encoding::percent_decode_str;
use sluice_plugin_api::name::{check_name, is_name_char};
use sluice_plugin_api::{ConsoleRequest, NpmRequest, SearchQuery};

/// The abbreviated ("corgi") document's media type.
pub const CORGI: &str = "application/vnd.npm.install-v1+json";

/// A request that cannot be routed, with the status and message to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// HTTP status.
    pub status: u16,
    /// The `error` message.
    pub message: String,
}

fn bad(message: impl Into<String>) -> RouteError {
    RouteError {
        status: 400,
        message: message.into(),
    }
}

fn read_only() -> RouteError {
    RouteError {
        status: 405,
        message: "sluice is a read-only mirror".into(),
    }
}

fn not_found(message: impl Into<String>) -> RouteError {
    RouteError {
        status: 404,
        message: message.into(),
    }
}

/// Route a request. `path` is the raw (still encoded) path, `query` the raw query string.
pub fn route(
    method: &str,
    path: &str,
    query: Option<&str>,
    accept: Option<&str>,
) -> Result<NpmRequest, RouteError> {
    if method == "POST" {
        // npm audit's, relayed to upstream as they are; the login and token APIs.
        return match path {
            "/-/npm/v1/security/advisories/bulk" | "/-/npm/v1/security/audits/quick" => {
                Ok(NpmRequest::Audit {
                    path: path.to_string(),
                })
            }
            "/-/v1/login" => Ok(NpmRequest::WebLogin),
            "/-/npm/v1/tokens" => Ok(NpmRequest::CreateToken),
            _ if path.starts_with("/-/stage/") => {
                let decoded = decode(path)?;
                let segments: Vec<&str> = decoded[1..].split('/').collect();
                stage_post(&segments[2..])
            }
            _ if path == "/-/ui" || path.starts_with("/-/ui/") => console(path, query, true),
            _ => Err(read_only()),
        };
    }
    let writing = matches!(method, "PUT" | "DELETE");
    if !writing && !matches!(method, "GET" | "HEAD") {
        return Err(read_only());
    }
    let decoded = decode(path)?;
    let rest = &decoded[1..];
    let segments: Vec<&str> = rest.split('/').collect();
    if writing {
        return write(method == "DELETE", &segments);
    }
    if segments.starts_with(&["-", "ui"]) {
        return console(path, query, false);
    }
    if segments.first() == Some(&"-") {
        return special(&segments[1..], query);
    }
    if rest.is_empty() && accept.is_some_and(wants_html) {
        return Ok(NpmRequest::Console(ConsoleRequest {
            post: false,
            path: None,
            query: String::new(),
        }));
    }
    if rest.is_empty() {
        return Err(not_found(
            "this is an npm registry: ask for a package, e.g. GET /express",
        ));
    }
    let (name, rest) = split_name(&segments)?;
    match rest {
        [] => Ok(NpmRequest::Packument {
            name,
            abbreviated: accept.is_some_and(wants_corgi),
        }),
        [spec] => {
            check_spec(spec)?;
            Ok(NpmRequest::Version {
                name,
                spec: (*spec).to_string(),
            })
        }
        ["-", file] => {
            check_tarball_file(file)?;
            Ok(NpmRequest::Tarball {
                name,
                file: (*file).to_string(),
            })
        }
        _ => Err(not_found(format!("no such route for package {name}"))),
    }
}

/// `path` percent-decoded once, checked for what no package path has; it starts with `/`.
fn decode(path: &str) -> Result<String, RouteError> {
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| bad("the path is not valid UTF-8 once decoded"))?;
    if decoded.contains(['\0', '\\', '%', ';', '\r', '\n']) {
        return Err(bad(format!(
            "`{}` is not a valid package path",
            decoded.escape_default()
        )));
    }
    if !decoded.starts_with('/') {
        return Err(bad("the path must start with `/`"));
    }
    Ok(decoded.into_owned())
}

/// Split `@scope`, `name` (or `name`) off the segments, validating the name.
fn split_name<'a, 'b>(segments: &'b [&'a str]) -> Result<(String, &'b [&'a str]), RouteError> {
    let (name, rest) = match segments {
        [scope, base, rest @ ..] if scope.starts_with('@') => (format!("{scope}/{base}"), rest),
        [base, rest @ ..] => ((*base).to_string(), rest),
        [] => return Err(bad("no package name")),
    };
    check_name(&name).map_err(|why| bad(format!("invalid package name: {why}")))?;
    Ok((name, rest))
}

/// Whether an `Accept` header names HTML: a browser's (npm asks for JSON).
fn wants_html(accept: &str) -> bool {
    accept
        .split(',')
        .any(|part| part.trim().split(';').next().map(str::trim) == Some("text/html"))
}

/// A console request for `path` (under `/-/ui`, still encoded).
fn console(path: &str, query: Option<&str>, post: bool) -> Result<NpmRequest, RouteError> {
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| bad("the path is not valid UTF-8 once decoded"))?;
    let rest = decoded
        .strip_prefix("/-/ui")
        .map(|rest| rest.trim_start_matches('/'))
        .ok_or_else(|| not_found("no such route"))?;
    if rest.contains(['\0', '\\', '%', '\r', '\n']) || rest.split('/').any(|s| s == "..") {
        return Err(bad("not a console path"));
    }
    Ok(NpmRequest::Console(ConsoleRequest {
        post,
        path: Some(rest.to_string()),
        query: query.unwrap_or("").to_string(),
    }))
}

/// Whether an `Accept` header prefers the abbreviated document.
fn wants_corgi(accept: &str) -> bool {
    accept
        .split(',')
        .any(|part| part.trim().split(';').next().map(str::trim) == Some(CORGI))
}

fn check_spec(spec: &str) -> Result<(), RouteError> {
    let ok = !spec.is_empty()
        && spec.len() <= 256
        && !spec.starts_with('.')
        && spec
            .chars()
            .all(|c| is_name_char(c) || matches!(c, '+' | '^' | '<' | '>' | '=' | ' ' | '|'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!("`{spec}` is not a version or dist-tag")))
    }
}

fn check_tarball_file(file: &str) -> Result<(), RouteError> {
    let ok = file.len() > 4
        && file.len() <= 300
        && file.ends_with(".tgz")
        // `@scope/_x` is a valid name, so its file `_x-1.0.0.tgz` is a tarball file too.
        && !file.starts_with('.')
        && file.chars().all(|c| is_name_char(c) || c == '+');
    if ok {
        Ok(())
    } else {
        Err(bad(format!("`{file}` is not a tarball file name")))
    }
}

/// A document revision as a path segment (`3-0f1e…`).
fn check_rev(rev: &str) -> Result<String, RouteError> {
    if !rev.is_empty()
        && rev.len() <= 100
        && rev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(rev.to_string())
    } else {
        Err(bad(format!(
            "`{}` is not a document revision",
            rev.escape_default()
        )))
    }
}

/// A user name as a path segment.
fn user_name(segment: &str) -> Result<String, RouteError> {
    let name = segment
        .strip_prefix("org.couchdb.user:")
        .filter(|n| !n.is_empty() && n.len() <= 214)
        .ok_or_else(|| not_found("no such route"))?;
    if !name.chars().all(|c| is_name_char(c) || c == '@') {
        return Err(bad(format!("`{name}` is not a user name")));
    }
    Ok(name.to_string())
}

/// The write routes: login, logout, tokens, publish, dist-tags.
fn write(delete: bool, segments: &[&str]) -> Result<NpmRequest, RouteError> {
    match (delete, segments) {
        // The second form is how yarn 4 logs in after a 409 (the user exists).
        (false, ["-", "user", user] | ["-", "user", user, "-rev", _]) => Ok(NpmRequest::Login {
            name: user_name(user)?,
        }),
        (true, ["-", "user", "token", token]) => Ok(NpmRequest::Logout {
            token: (*token).to_string(),
        }),
        (true, ["-", "npm", "v1", "tokens", "token", id]) => Ok(NpmRequest::RevokeToken {
            id: (*id).to_string(),
        }),
        (_, ["-", "package", rest @ ..]) => {
            let (name, rest) = split_name(rest)?;
            match rest {
                ["dist-tags", tag] => {
                    check_spec(tag)?;
                    Ok(NpmRequest::DistTag {
                        name,
                        tag: (*tag).to_string(),
                        remove: delete,
                    })
                }
                _ => Err(not_found("no such route")),
            }
        }
        (true, ["-", "stage", id]) => Ok(NpmRequest::StageReject { id: stage_id(id)? }),
        (_, ["-", ..]) => Err(read_only()),
        (delete, _) => {
            let (name, rest) = split_name(segments)?;
            match (delete, rest) {
                (false, []) => Ok(NpmRequest::Publish { name }),
                (all, ["-rev", rev]) => Ok(NpmRequest::Unpublish {
                    name,
                    all,
                    rev: check_rev(rev)?,
                }),
                (true, ["-", file, "-rev", rev]) => {
                    check_tarball_file(file)?;
                    Ok(NpmRequest::UnpublishTarball {
                        name,
                        file: (*file).to_string(),
                        rev: check_rev(rev)?,
                    })
                }
                _ => Err(read_only()),
            }
        }
    }
}

/// Routes under `/-/`.
fn special(segments: &[&str], query: Option<&str>) -> Result<NpmRequest, RouteError> {
    match segments {
        ["ping"] => Ok(NpmRequest::Ping),
        ["v1", "done", session] if !session.is_empty() && session.len() <= 200 => {
            Ok(NpmRequest::WebLoginDone {
                session: (*session).to_string(),
            })
        }
        ["whoami"] => Ok(NpmRequest::Whoami),
        ["user", user] => Ok(NpmRequest::User {
            name: user_name(user)?,
        }),
        ["npm", "v1", "tokens"] => Ok(NpmRequest::Tokens),
        ["sluice", "status"] => Ok(NpmRequest::Status),
        ["sluice", ""] | ["sluice"] => Ok(NpmRequest::StatusPage),
        ["metrics"] => Ok(NpmRequest::Metrics),
        ["npm", "v1", "keys"] => Ok(NpmRequest::Passthrough {
            path: "-/npm/v1/keys".into(),
            package: None,
        }),
        ["npm", "v1", "attestations", rest @ ..] => {
            // `{name}@{version}`, the name possibly scoped (`@scope/name@1.0.0`).
            let spec = rest.join("/");
            let (name, version) = spec
                .rsplit_once('@')
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| bad("attestations are asked for as {name}@{version}"))?;
            check_name(name).map_err(|why| bad(format!("invalid package name: {why}")))?;
            check_spec(version)?;
            Ok(NpmRequest::Passthrough {
                path: format!(
                    "-/npm/v1/attestations/{}@{version}",
                    name.replacen('/', "%2f", 1)
                ),
                package: Some(name.to_string()),
            })
        }
        ["v1", "search"] => Ok(NpmRequest::Search(search_query(query.unwrap_or("")))),
        ["stage"] => stage_list(query.unwrap_or("")),
        ["stage", id] => Ok(NpmRequest::StageView { id: stage_id(id)? }),
        ["stage", id, "tarball"] => Ok(NpmRequest::StageTarball { id: stage_id(id)? }),
        ["package", rest @ ..] => {
            let (name, rest) = split_name(rest)?;
            match rest {
                ["dist-tags"] => Ok(NpmRequest::DistTags { name }),
                ["visibility"] => Ok(NpmRequest::Visibility { name }),
                _ => Err(not_found("no such route")),
            }
        }
        _ => Err(not_found("no such route")),
    }
}

/// The `POST` routes under `/-/stage/`: staging a version, approving one.
fn stage_post(segments: &[&str]) -> Result<NpmRequest, RouteError> {
    match segments {
        ["package", rest @ ..] => match split_name(rest)? {
            (name, []) => Ok(NpmRequest::StagePublish { name }),
            _ => Err(not_found("no such route")),
        },
        [id, "approve"] => Ok(NpmRequest::StageApprove { id: stage_id(id)? }),
        _ => Err(not_found("no such route")),
    }
}

/// A stage id as a path segment: a UUID (what npm checks before it sends one), lower-cased.
fn stage_id(segment: &str) -> Result<String, RouteError> {
    let groups: Vec<&str> = segment.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    if shape
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
    {
        Ok(segment.to_ascii_lowercase())
    } else {
        Err(bad(format!(
            "`{}` is not a stage id (a UUID)",
            segment.escape_default()
        )))
    }
}

/// `GET /-/stage`'s query: `package` (a name), `page` (from 0) and `perPage` (1 to 100,
/// 10 when not given); a value out of bounds or not a number is refused.
fn stage_list(query: &str) -> Result<NpmRequest, RouteError> {
    let (mut package, mut page, mut per_page) = (None, 0, 10);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value).decode_utf8_lossy();
        let number = |what: &str, low: u32, high: u32| {
            value
                .parse::<u32>()
                .ok()
                .filter(|n| (low..=high).contains(n))
                .ok_or_else(|| {
                    bad(format!(
                        "{what} is a number from {low} to {high}, not `{}`",
                        value.escape_default()
                    ))
                })
        };
        match key {
            "page" => page = number("page", 0, u32::MAX)?,
            "perPage" => per_page = number("perPage", 1, 100)?,
            "package" => {
                check_name(&value).map_err(|why| bad(format!("invalid package name: {why}")))?;
                package = Some(value.into_owned());
            }
            _ => {}
        }
    }
    Ok(NpmRequest::StageList {
        package,
        page,
        per_page,
    })
}

fn search_query(query: &str) -> SearchQuery {
    let mut search = SearchQuery {
        size: 20,
        ..SearchQuery::default()
    };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(&value.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match key {
            "text" => search.text = value,
            "size" => search.size = value.parse().unwrap_or(20).clamp(1, 250),
            "from" => search.from = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    search
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn get(path: &str) -> Result<NpmRequest, RouteError> {
        route("GET", path, None, None)
    }

    fn packument(name: &str) -> NpmRequest {
        NpmRequest::Packument {
            name: name.into(),
            abbreviated: false,
        }
    }

    #[test]
    fn every_scoped_name_encoding_routes_to_the_same_package() {
        for path in [
            "/@types%2fnode",
            "/@types%2Fnode",
            "/%40types%2fnode",
            "/%40types%2Fnode",
            "/@types/node",
        ] {
            assert_eq!(get(path).unwrap(), packument("@types/node"), "{path}");
        }
        assert_eq!(get("/JSONStream").unwrap(), packument("JSONStream"));
    }

    #[test]
    fn versions_and_tarballs() {
        assert_eq!(
            get("/express/4.21.2").unwrap(),
            NpmRequest::Version {
                name: "express".into(),
                spec: "4.21.2".into()
            }
        );
        assert_eq!(
            get("/@types/node/-/node-20.1.0.tgz").unwrap(),
            NpmRequest::Tarball {
                name: "@types/node".into(),
                file: "node-20.1.0.tgz".into()
            }
        );
        assert_eq!(
            get("/@scope/_x/-/_x-1.0.0.tgz").unwrap(),
            NpmRequest::Tarball {
                name: "@scope/_x".into(),
                file: "_x-1.0.0.tgz".into()
            }
        );
        assert_eq!(
            get("/@types%2fnode/-/node-20.1.0.tgz").unwrap(),
            NpmRequest::Tarball {
                name: "@types/node".into(),
                file: "node-20.1.0.tgz".into()
            }
        );
    }

    #[test]
    fn corgi_accept_asks_for_the_abbreviated_document() {
        let accept = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
        assert_eq!(
            route("GET", "/express", None, Some(accept)).unwrap(),
            NpmRequest::Packument {
                name: "express".into(),
                abbreviated: true
            }
        );
        assert_eq!(
            route("GET", "/express", None, Some("application/json")).unwrap(),
            packument("express")
        );
    }

    #[test]
    fn traversal_and_odd_names_are_refused_with_400() {
        for path in [
            "/%2e%2e",
            "/..",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/%252e%252e",
            "/a%00b",
            "/%2F%2F..%2F",
            "/a\\b",
            "/a%5cb",
            "/express;x=1",
            "/%ff",
            "/@..%2fx",
            "/@.%2fx",
            "/.hidden",
            "/_private",
            "/node_modules",
            "/express/-/..%2fx.tgz",
            "/express/-/__proto__",
            "/express/-/.x.tgz",
        ] {
            let err = get(path).unwrap_err();
            assert!(err.status == 400 || err.status == 404, "{path}: {err:?}");
        }
        let long = format!("/{}", "a".repeat(215));
        assert_eq!(get(&long).unwrap_err().status, 400);
    }

    #[test]
    fn writes_are_refused_and_special_routes_route() {
        // A publish routes; the proxy refuses it (405) unless the name is published here.
        assert_eq!(
            route("PUT", "/express", None, None).unwrap(),
            NpmRequest::Publish {
                name: "express".into()
            }
        );
        assert_eq!(
            route("DELETE", "/express/-rev/3-abc", None, None).unwrap(),
            NpmRequest::Unpublish {
                name: "express".into(),
                all: true,
                rev: "3-abc".into()
            }
        );
        assert_eq!(
            route("DELETE", "/express", None, None).unwrap_err().status,
            405
        );
        assert_eq!(get("/-/ping").unwrap(), NpmRequest::Ping);
        assert_eq!(
            get("/-/package/@a%2fb/dist-tags").unwrap(),
            NpmRequest::DistTags {
                name: "@a/b".into()
            }
        );
        match route("GET", "/-/v1/search", Some("text=foo+bar&size=900"), None).unwrap() {
            NpmRequest::Search(q) => {
                assert_eq!(q.text, "foo bar");
                assert_eq!(q.size, 250);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stage_routes_take_npm_stage_requests_and_refuse_bad_ids_and_pages() {
        let id = "1de6f3db-2ed9-4d72-b3dd-8f0e2b474a2f";
        assert_eq!(
            route("POST", "/-/stage/package/@acme%2fw", None, None).unwrap(),
            NpmRequest::StagePublish {
                name: "@acme/w".into()
            }
        );
        assert_eq!(
            route("POST", &format!("/-/stage/{id}/approve"), None, None).unwrap(),
            NpmRequest::StageApprove { id: id.into() }
        );
        assert_eq!(
            route(
                "DELETE",
                &format!("/-/stage/{}", id.to_uppercase()),
                None,
                None
            )
            .unwrap(),
            NpmRequest::StageReject { id: id.into() }
        );
        assert_eq!(
            get(&format!("/-/stage/{id}/tarball")).unwrap(),
            NpmRequest::StageTarball { id: id.into() }
        );
        assert_eq!(
            route(
                "GET",
                "/-/stage",
                Some("page=2&perPage=100&package=%40acme%2Fw"),
                None
            )
            .unwrap(),
            NpmRequest::StageList {
                package: Some("@acme/w".into()),
                page: 2,
                per_page: 100
            }
        );
        assert_eq!(
            get("/-/stage").unwrap(),
            NpmRequest::StageList {
                package: None,
                page: 0,
                per_page: 10
            }
        );
        for query in [
            "perPage=0",
            "perPage=101",
            "perPage=-5",
            "perPage=x",
            "page=-1",
        ] {
            assert_eq!(
                route("GET", "/-/stage", Some(query), None)
                    .unwrap_err()
                    .status,
                400,
                "{query}"
            );
        }
        for path in ["/-/stage/abc", "/-/stage/1de6f3db2ed94d72b3dd8f0e2b474a2f"] {
            assert_eq!(get(path).unwrap_err().status, 400, "{path}");
        }
        assert_eq!(
            route("POST", "/-/stage/package/..", None, None)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            route("POST", "/-/stage/package/a/b", None, None)
                .unwrap_err()
                .status,
            404
        );
    }

    #[test]
    fn the_console_and_the_web_login_route() {
        let console = |post: bool, path: Option<&str>, query: &str| {
            NpmRequest::Console(ConsoleRequest {
                post,
                path: path.map(str::to_string),
                query: query.into(),
            })
        };
        let html = Some("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");
        assert_eq!(
            route("GET", "/", None, html).unwrap(),
            console(false, None, "")
        );
        assert_eq!(
            route("GET", "/", None, Some("application/json"))
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(get("/-/ui/").unwrap(), console(false, Some(""), ""));
        assert_eq!(
            route("GET", "/-/ui/search", Some("q=a+b"), None).unwrap(),
            console(false, Some("search"), "q=a+b")
        );
        assert_eq!(
            get("/-/ui/package/@types%2fnode").unwrap(),
            console(false, Some("package/@types/node"), "")
        );
        assert_eq!(
            route("POST", "/-/ui/login", None, None).unwrap(),
            console(true, Some("login"), "")
        );
        assert_eq!(get("/-/ui/package/%2e%2e").unwrap_err().status, 400);
        assert_eq!(
            route("POST", "/-/v1/login", None, None).unwrap(),
            NpmRequest::WebLogin
        );
        assert_eq!(
            get("/-/v1/done/abc.def").unwrap(),
            NpmRequest::WebLoginDone {
                session: "abc.def".into()
            }
        );
    }
}
