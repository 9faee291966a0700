//! sluice: a private npm registry mirror in front of an upstream registry.
//!
//! A request travels [`route`] → [`proxy`] (dispatch only) → [`plugins`] (admit) → the
//! [`core`]: [`core::packuments`] (hot in the [`store`], revalidated with [`upstream`]),
//! [`core::renders`] (what a client is sent) and [`core::tarballs`] (streamed, verified as they
//! flow). [`app`] builds it all; [`server`] runs it with the background [`jobs`]; [`observe`]
//! reports on it. ARCHITECTURE.md is the map.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod conn;
pub mod core;
pub mod crypto;
pub mod flight;
#[doc(hidden)]
pub mod fuzzing;
pub mod jobs;
pub mod memory;
pub mod observe;
pub mod packument;
pub mod plugins;
pub mod proxy;
pub mod route;
pub mod search;
pub mod server;
pub mod store;
pub mod upstream;
pub mod web;
