//! The plugin API of sluice.
//!
//! A plugin implements [`Plugin`], whose phases are named like pingora's filters and each do
//! nothing by default. The host runs the plugins of the configuration in list order:
//! - [`Plugin::on_request`] decides whether a request may go on ([`Decision::Continue`]) or is
//!   answered at once ([`Decision::Respond`]); policies (whitelist, deny…) live here.
//! - [`Plugin::on_packument`] filters a package document before it is rendered; the host repairs
//!   the document's invariants (dist-tags, `time`) afterwards.
//! - [`Plugin::on_response`] sees the response headers.
//! - [`Plugin::on_fetched`] learns that a package was fetched from upstream for this request.
//!
//! Plugins see only this crate, never the proxy's internals.

pub mod config;
pub mod name;
mod packument;
mod request;
pub mod watch;

pub use packument::Packument;
pub use request::{NpmRequest, SearchQuery};

use std::fmt;

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

/// A response a plugin asks the host to send: a status and an npm-style `{"error": …}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The message put in the body's `error` field.
    pub message: String,
}

impl Response {
    /// A response with `status` and an npm-style error `message`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// What [`Plugin::on_request`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on to the next plugin, then to the cache and upstream.
    Continue,
    /// Answer with this response now; no later plugin runs.
    Respond(Response),
}

/// Why a package is refused, when a plugin refuses it without answering yet.
///
/// A later plugin may lift a refusal (read-through lifts [`RefusalKind::NotListed`]); the host
/// answers with the refusal that remains after all plugins ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal this is.
    pub kind: RefusalKind,
    /// The answer sent when nobody lifts it.
    pub response: Response,
}

/// The kinds of [`Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The package is not on the allow list; read-through may fetch it anyway.
    NotListed,
    /// A rule refuses it; nothing lifts this.
    Denied,
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

/// The per-request context shared by all plugins, created by the host for each request.
#[derive(Debug, Default)]
pub struct Ctx {
    /// The request's id, as logged.
    pub request_id: u64,
    /// The refusal standing after the plugins that ran so far, if any.
    pub refusal: Option<Refusal>,
    /// Set when a plugin allows fetching a package that is not listed (read-through).
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
}

/// A sluice plugin: each phase has a default that does nothing.
pub trait Plugin: Send + Sync {
    /// The plugin's kind, as written in the configuration (`kind = "…"`).
    fn kind(&self) -> &'static str;

    /// Decide whether the request goes on.
    ///
    /// Returns [`Decision::Respond`] to answer now, or [`Decision::Continue`]; a plugin may also
    /// set or lift [`Ctx::refusal`] and let later plugins decide.
    /// By default this does nothing and returns [`Decision::Continue`].
    fn on_request(
        &self,
        _request: &NpmRequest,
        _headers: &http::HeaderMap,
        _ctx: &mut Ctx,
    ) -> Result<Decision> {
        Ok(Decision::Continue)
    }

    /// Filter a package document before it is served (remove versions, hide fields…).
    ///
    /// The host repairs dist-tags and `time` afterwards.
    /// By default this does nothing.
    fn on_packument(&self, _packument: &mut Packument) -> Result<()> {
        Ok(())
    }

    /// A number that changes whenever [`Plugin::on_packument`] would filter differently
    /// (e.g. a rule file was reloaded); the host re-renders cached documents when it changes.
    ///
    /// By default 0 (the filter only changes with the document).
    fn generation(&self) -> u64 {
        0
    }

    /// Whether this plugin implements [`Plugin::on_tarball`]; the host only looks up a
    /// tarball's version for plugins that ask.
    ///
    /// By default `false`.
    fn checks_tarballs(&self) -> bool {
        false
    }

    /// Decide whether the tarball of `version` of `name` may be served, knowing the package
    /// document as upstream published it (before any plugin filtered it).
    ///
    /// Returns [`Decision::Respond`] to refuse it (e.g. a 403 naming the rule).
    /// By default this returns [`Decision::Continue`].
    fn on_tarball(&self, _name: &str, _version: &str, _packument: &Packument) -> Result<Decision> {
        Ok(Decision::Continue)
    }

    /// Adjust the response headers.
    ///
    /// By default this does nothing.
    fn on_response(&self, _headers: &mut http::HeaderMap, _ctx: &Ctx) {}

    /// Learn that package `name` was fetched from upstream and stored while serving a request
    /// this plugin let through with [`Ctx::read_through`].
    ///
    /// By default this does nothing.
    fn on_fetched(&self, _name: &str, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }

    /// Whether package `name` may be served at all; used by background work (refresh,
    /// add-package) that has no request.
    ///
    /// By default every package is allowed.
    fn allows(&self, _name: &str) -> bool {
        true
    }
}
