//! The connection layer, below HTTP: what a client's connection gets whatever it asks. pingora
//! times out each read of a request separately (60 s), so a client sending one byte a second
//! would hold its connection, its buffer and its task forever; here every accepted connection
//! is a [`Guarded`] stream with the client deadlines of [`Limits`] ([`deadline`]), bodies can
//! leave by `sendfile(2)` from a file ([`span`]), and an HTTP/1 connection waits between
//! requests in a small future that holds no session ([`idle`]).
//!
//! Both the server (which wraps its front in [`Deadlines`]) and the front (which hands file
//! spans to [`Guarded`]) import this module; it imports neither, nor anything else of the
//! crate. It writes no HTTP of its own: the answer to a client whose header ran out of time is
//! bytes its owner gives it ([`Deadlines::new`]). It follows HTTP/1 framing only as far as its
//! clocks need: where a request header ends and whether a write is an interim (1xx) answer.

pub mod deadline;
pub mod h2;
pub mod idle;
pub mod span;
mod stream;

pub use deadline::{Guarded, Limits};
pub use idle::Deadlines;
