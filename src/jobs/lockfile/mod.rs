//! Lockfiles, two jobs: [`read`] what a lockfile locks (for `add-package --lockfile`), and
//! [`rewrite`] its tarball URLs to this registry (`sluice lockfile rewrite`).

pub mod read;
pub mod rewrite;

pub use rewrite::rewrite_file;
