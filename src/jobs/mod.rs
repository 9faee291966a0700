//! Work done beside the server or from the command line, never inside a request: the
//! scheduled refresh and tarball prefetch ([`refresh`]), `add-package`'s dependency closure
//! ([`closure`]) and the replication follower of mirror mode ([`mirror`]); in a fleet they
//! run on the node that holds the lease ([`leader`]).

pub mod closure;
pub mod leader;
pub mod lockfile;
pub mod migrate;
pub mod mirror;
pub mod refresh;
