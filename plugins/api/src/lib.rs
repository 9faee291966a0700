//! The plugin API of sluice.
//!
//! A plugin implements [`Plugin`], whose phases are named like pingora's filters and each do
//! nothing by default. The host runs the plugins of the configuration in list order:
//! - [`Plugin::on_request`] decides about a request as a whole (its method, its headers);
//! - [`Plugin::admit`] is the admission rule for a package name, asked for every request about
//!   a package and by background work (refresh, add-package, search, audit) alike;
//! - [`Plugin::hide_versions`] says which versions of a document a plugin hides and why; the
//!   host takes them off documents, repairs the document's invariants (dist-tags), and refuses
//!   the tarballs of hidden versions with the reason (403);
//! - [`Plugin::on_response`] sees the response status and headers once the request is answered.
//!
//! When a plugin's output changes (its contract with the host's caches):
//! - a rule reload bumps [`Plugin::generation`]: the host drops what it rendered before;
//! - time: [`Hidden::until`] names the moment a hidden version stops being hidden (min-age), and
//!   the host renders again at that moment.
//!
//! Plugins that read files an admin edits hand them to the host with [`Plugin::watched`]; the
//! host watches them as a background service ([`live`] has the shared "live file" helper).
//! Plugins see only this crate, never the proxy's internals.

pub mod config;
pub mod live;
pub mod name;
mod packument;
mod request;
pub mod watch;

pub use packument::Packument;
pub use request::{ConsoleRequest, NpmRequest, SearchQuery};

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// An error a plugin reports; the host turns it into a 500 answer and a log line.
#[derive(Debug, thiserror::Error)]
#[error("plugin {plugin}: {message}")]
pub struct PluginError {
    /// The plugin's kind.
    pub plugin: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl PluginError {
    /// An error of plugin `plugin` with a message for a person.
    pub fn new(plugin: &'static str, message: impl Into<String>) -> Self {
        Self {
            plugin,
            message: message.into(),
        }
    }
}

/// The result type of every phase.
pub type Result<T> = std::result::Result<T, PluginError>;

/// A response a plugin asks the host to send: a status, an npm-style `{"error": …}` body, and
/// headers (`WWW-Authenticate`, `Retry-After`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The message put in the body's `error` field.
    pub message: String,
    /// Extra response headers, as (name, value).
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// A response with `status` and an npm-style error `message`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// The same response with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What [`Plugin::on_request`] or [`Plugin::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on to the next plugin, then to the cache and upstream.
    Continue,
    /// Refuse with this response now; no later plugin runs.
    Respond(Response),
}

/// Why a package name is being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purpose {
    /// A client's request.
    #[default]
    Request,
    /// Background work (refresh, prefetch, add-package, search, audit filtering): nothing is
    /// fetched for a name only a request could bring in (read-through).
    Background,
}

/// The versions of a document a plugin hides, each with its reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hidden {
    /// (version, why it is hidden — said to the client refused its tarball).
    pub versions: Vec<(String, String)>,
    /// When the plugin's answer for this document changes by itself (the next hidden version
    /// comes of age), if it does.
    pub until: Option<SystemTime>,
}

impl Hidden {
    /// Hide `version`, saying why.
    pub fn hide(&mut self, version: impl Into<String>, reason: impl Into<String>) {
        self.versions.push((version.into(), reason.into()));
    }

    /// Note that the answer changes at `at` (the earliest such moment is kept).
    pub fn change_at(&mut self, at: SystemTime) {
        self.until = Some(self.until.map_or(at, |until| until.min(at)));
    }

    /// Whether nothing is hidden.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

/// Where an answer came from, reported in `X-Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from memory or the store, fresh.
    Hit,
    /// Fetched from upstream for this request.
    Miss,
    /// Served from the store because upstream failed, or while a revalidation runs.
    Stale,
    /// Revalidated with upstream for this request.
    Revalidated,
}

impl CacheStatus {
    /// The header value: HIT, MISS, STALE or REVALIDATED.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
        }
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The per-request context shared by all plugins, created by the host for each request (or
/// background job).
#[derive(Debug, Default)]
pub struct Ctx {
    /// The request's id, as logged (0 for background work).
    pub request_id: u64,
    /// Why names are admitted.
    pub purpose: Purpose,
    /// The package the request is about, once routed.
    pub package: Option<String>,
    /// Set by a plugin that admits a package it does not list, to be fetched from upstream
    /// for this request (read-through); it hears of the answer in [`Plugin::on_response`].
    pub read_through: bool,
    /// How the answer was served, once known.
    pub cache_status: Option<CacheStatus>,
}

impl Ctx {
    /// A context for request `request_id`.
    pub fn new(request_id: u64) -> Self {
        Self {
            request_id,
            ..Self::default()
        }
    }

    /// A context for background work.
    pub fn background() -> Self {
        Self {
            purpose: Purpose::Background,
            ..Self::default()
        }
    }
}

/// A sluice plugin: each phase has a default that does nothing.
pub trait Plugin: Send + Sync {
    /// The plugin's kind, as written in the configuration (`kind = "…"`).
    fn kind(&self) -> &'static str;

    /// Decide about a request as a whole, before any package rule.
    ///
    /// Returns [`Decision::Respond`] to answer now, or [`Decision::Continue`].
    /// By default this returns [`Decision::Continue`].
    fn on_request(
        &self,
        _request: &NpmRequest,
        _headers: &http::HeaderMap,
        _ctx: &mut Ctx,
    ) -> Result<Decision> {
        Ok(Decision::Continue)
    }

    /// The admission rule for package `name`: may it be served (or fetched, or refreshed)?
    ///
    /// Returns [`Decision::Respond`] with the refusal, or [`Decision::Continue`]. Asked for
    /// requests and background work alike; `ctx.purpose` tells which.
    /// By default every package is admitted.
    fn admit(&self, _name: &str, _ctx: &mut Ctx) -> Result<Decision> {
        Ok(Decision::Continue)
    }

    /// The versions of `packument` (as upstream published it) this plugin hides at `now`, and
    /// why; the host filters documents with them and refuses their tarballs.
    ///
    /// By default nothing is hidden.
    fn hide_versions(&self, _packument: &Packument, _now: SystemTime) -> Result<Hidden> {
        Ok(Hidden::default())
    }

    /// A number that changes whenever [`Plugin::hide_versions`] or [`Plugin::admit`] would
    /// answer differently for the same input (a rule file was reloaded); the host drops cached
    /// renders when it changes.
    ///
    /// By default 0 (the answers only change with the document and with time).
    fn generation(&self) -> u64 {
        0
    }

    /// See the answer: its status and headers (which may be adjusted).
    ///
    /// By default this does nothing.
    fn on_response(&self, _status: u16, _headers: &mut http::HeaderMap, _ctx: &Ctx) {}

    /// The files this plugin reads that an admin edits while sluice runs; the host watches
    /// them as a background service and re-reads them after edits.
    ///
    /// By default none.
    fn watched(&self) -> Vec<Arc<dyn live::Watched>> {
        Vec::new()
    }
}
