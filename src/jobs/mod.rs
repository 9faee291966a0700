//! Work done beside the server or from the command line, never inside a request: the
//! scheduled refresh and tarball prefetch ([`refresh`]), `add-package`'s dependency closure
//! ([`closure`]) and the replication follower of mirror mode ([`mirror`]).

pub mod closure;
pub mod mirror;
pub mod refresh;
