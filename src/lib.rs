//! sluice: a private npm registry mirror in front of an upstream registry.
//!
//! The flow of a request is: [`route`] → plugins (`on_request`) → [`registry`] (hot cache →
//! [`store`] → [`upstream`], single-flight) → plugins (`on_packument`) → render
//! ([`packument`]: rewrite, abbreviate, gzip) → [`proxy`] answers.

pub mod config;
pub mod flight;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod packument;
pub mod plugins;
pub mod proxy;
pub mod registry;
pub mod route;
pub mod server;
pub mod status;
pub mod store;
pub mod sync;
pub mod tls;
pub mod upstream;
