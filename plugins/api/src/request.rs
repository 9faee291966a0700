//! What a client asked for, in npm's words.

/// A request, as routed: the host parses paths into this before any plugin runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpmRequest {
    /// `GET /{name}`: the package document, abbreviated when the client asked for it.
    Packument {
        /// The package name, validated (`@scope/name` for scoped packages).
        name: String,
        /// Whether the client asked for the abbreviated ("corgi") document.
        abbreviated: bool,
    },
    /// `GET /{name}/{version-or-dist-tag}`: one version's manifest.
    Version {
        /// The package name.
        name: String,
        /// A version or a dist-tag.
        spec: String,
    },
    /// `GET /{name}/-/{file}.tgz`: a tarball.
    Tarball {
        /// The package name.
        name: String,
        /// The tarball's file name, e.g. `express-4.21.2.tgz`.
        file: String,
    },
    /// `GET /-/package/{name}/dist-tags`.
    DistTags {
        /// The package name.
        name: String,
    },
    /// `GET /-/ping`.
    Ping,
    /// `GET /-/v1/search`.
    Search(SearchQuery),
    /// `GET /-/sluice/status`: sluice's own status document.
    Status,
    /// `GET /-/sluice/`: the status page (HTML).
    StatusPage,
    /// `GET /-/metrics`: Prometheus metrics.
    Metrics,
    /// `POST /-/npm/v1/security/…`: `npm audit`, relayed to upstream.
    Audit {
        /// The path relayed, e.g. `/-/npm/v1/security/advisories/bulk`.
        path: String,
    },
    /// `PUT /-/user/org.couchdb.user:{name}`: log in (or add a user), answered with a token.
    Login {
        /// The user name in the path.
        name: String,
    },
    /// `POST /-/v1/login`: npm's web login flow begins (answered with a login URL for the
    /// browser and a URL npm polls until the user logged in there).
    WebLogin,
    /// `GET /-/v1/done/{session}`: npm polls a web login.
    WebLoginDone {
        /// The pending login, as its done URL names it.
        session: String,
    },
    /// `GET|POST /-/ui/…` (and `GET /` from a browser): the web console.
    Console(ConsoleRequest),
    /// `GET /-/whoami`.
    Whoami,
    /// `DELETE /-/user/token/{token}`: log out.
    Logout {
        /// The token to revoke.
        token: String,
    },
    /// `GET /-/npm/v1/tokens`: the caller's tokens, redacted.
    Tokens,
    /// `POST /-/npm/v1/tokens`: a new token.
    CreateToken,
    /// `DELETE /-/npm/v1/tokens/token/{id}`.
    RevokeToken {
        /// The token's id (or key) as `npm token list` shows it.
        id: String,
    },
    /// `PUT /{name}`: publish a version, or change a private package's metadata (deprecate).
    Publish {
        /// The package name.
        name: String,
    },
    /// `npm unpublish`: `PUT /{name}/-rev/{rev}` with the document less the versions taken
    /// off, or `DELETE /{name}/-rev/{rev}` for the whole package (`all`).
    ///
    /// A `PUT` is any change of the document the client read (`npm owner add|rm` too).
    Unpublish {
        /// The package name.
        name: String,
        /// Every version.
        all: bool,
        /// The document revision the client read (`_rev`).
        rev: String,
    },
    /// `DELETE /{name}/-/{file}/-rev/{rev}`: the tarball of an unpublished version.
    UnpublishTarball {
        /// The package name.
        name: String,
        /// The tarball's file name.
        file: String,
        /// The document revision the client read (`_rev`).
        rev: String,
    },
    /// `GET /-/user/org.couchdb.user:{name}`: a user's public profile (`npm owner add`).
    User {
        /// The user name.
        name: String,
    },
    /// `GET /-/package/{name}/visibility` (`npm publish --provenance` asks).
    Visibility {
        /// The package name.
        name: String,
    },
    /// `PUT /-/package/{name}/dist-tags/{tag}` (with the version as a JSON string body), or
    /// `DELETE` of the same path (`remove`).
    DistTag {
        /// The package name.
        name: String,
        /// The tag.
        tag: String,
        /// Whether the tag is removed.
        remove: bool,
    },
    /// `POST /-/stage/package/{name}`: stage a version (a publish body) for a maintainer's
    /// approval (`npm stage publish`).
    StagePublish {
        /// The package name.
        name: String,
    },
    /// `GET /-/stage?package=&page=&perPage=`: the staged versions the caller may see.
    StageList {
        /// Only this package's, when given.
        package: Option<String>,
        /// The page, from 0.
        page: u32,
        /// Items a page, 1 to 100.
        per_page: u32,
    },
    /// `GET /-/stage/{id}`: one staged version.
    StageView {
        /// The stage id (a UUID).
        id: String,
    },
    /// `GET /-/stage/{id}/tarball`: a staged version's tarball, for inspection.
    StageTarball {
        /// The stage id.
        id: String,
    },
    /// `POST /-/stage/{id}/approve`: publish a staged version.
    StageApprove {
        /// The stage id.
        id: String,
    },
    /// `DELETE /-/stage/{id}`: reject a staged version.
    StageReject {
        /// The stage id.
        id: String,
    },
    /// `GET /-/npm/v1/keys`, `GET /-/npm/v1/attestations/{name}@{version}`: relayed to upstream
    /// and cached for a while.
    Passthrough {
        /// The path relayed.
        path: String,
        /// The package the request is about, if any (attestations).
        package: Option<String>,
    },
}

/// A request for the web console: the rest of its path and its query, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsoleRequest {
    /// Whether it is a form post.
    pub post: bool,
    /// The path under `/-/ui/`, percent-decoded (`""` for the home page, `package/express`);
    /// `None` for `/` asked by a browser.
    pub path: Option<String>,
    /// The raw query string.
    pub query: String,
}

/// The parameters of `GET /-/v1/search`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchQuery {
    /// The words searched for.
    pub text: String,
    /// How many results, at most 250.
    pub size: usize,
    /// Offset of the first result.
    pub from: usize,
}

impl NpmRequest {
    /// The package this request is about, if any.
    pub fn package(&self) -> Option<&str> {
        match self {
            NpmRequest::Packument { name, .. }
            | NpmRequest::Version { name, .. }
            | NpmRequest::Tarball { name, .. }
            | NpmRequest::DistTags { name }
            | NpmRequest::Visibility { name }
            | NpmRequest::Publish { name }
            | NpmRequest::StagePublish { name }
            | NpmRequest::Unpublish { name, .. }
            | NpmRequest::UnpublishTarball { name, .. }
            | NpmRequest::DistTag { name, .. } => Some(name),
            NpmRequest::Passthrough { package, .. } => package.as_deref(),
            NpmRequest::Ping
            | NpmRequest::Search(_)
            | NpmRequest::Status
            | NpmRequest::StatusPage
            | NpmRequest::Metrics
            | NpmRequest::Audit { .. }
            | NpmRequest::Login { .. }
            | NpmRequest::WebLogin
            | NpmRequest::WebLoginDone { .. }
            | NpmRequest::Console(_)
            | NpmRequest::Whoami
            | NpmRequest::User { .. }
            | NpmRequest::Logout { .. }
            | NpmRequest::Tokens
            | NpmRequest::CreateToken
            | NpmRequest::RevokeToken { .. }
            | NpmRequest::StageList { .. }
            | NpmRequest::StageView { .. }
            | NpmRequest::StageTarball { .. }
            | NpmRequest::StageApprove { .. }
            | NpmRequest::StageReject { .. } => None,
        }
    }

    /// A short name of the route, for logs and metrics.
    pub fn route(&self) -> &'static str {
        match self {
            NpmRequest::Packument { .. } => "packument",
            NpmRequest::Version { .. } => "version",
            NpmRequest::Tarball { .. } => "tarball",
            NpmRequest::DistTags { .. } => "dist-tags",
            NpmRequest::Ping => "ping",
            NpmRequest::Search(_) => "search",
            NpmRequest::Status => "status",
            NpmRequest::StatusPage => "status-page",
            NpmRequest::Metrics => "metrics",
            NpmRequest::Audit { .. } => "audit",
            NpmRequest::Passthrough { .. } => "passthrough",
            NpmRequest::Login { .. } | NpmRequest::WebLogin | NpmRequest::WebLoginDone { .. } => {
                "login"
            }
            NpmRequest::Console(_) => "console",
            NpmRequest::Whoami => "whoami",
            NpmRequest::User { .. } => "user",
            NpmRequest::Visibility { .. } => "visibility",
            NpmRequest::Logout { .. } => "logout",
            NpmRequest::Tokens | NpmRequest::CreateToken | NpmRequest::RevokeToken { .. } => {
                "tokens"
            }
            NpmRequest::Publish { .. } => "publish",
            NpmRequest::Unpublish { .. } | NpmRequest::UnpublishTarball { .. } => "unpublish",
            NpmRequest::DistTag { .. } => "dist-tag",
            NpmRequest::StagePublish { .. }
            | NpmRequest::StageList { .. }
            | NpmRequest::StageView { .. }
            | NpmRequest::StageTarball { .. }
            | NpmRequest::StageApprove { .. }
            | NpmRequest::StageReject { .. } => "stage",
        }
    }
}
