//! The packages whose stored document changed lately on this node (mirrored, refreshed or
//! published), newest first, for the console's home page.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::store::now_ms;

/// How many names are kept.
const KEPT: usize = 50;

/// The latest changes, newest first.
#[derive(Debug, Default)]
pub struct Recent {
    names: Mutex<VecDeque<(String, u64)>>,
}

impl Recent {
    /// `name`'s stored document changed now.
    pub fn note(&self, name: &str) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.retain(|(n, _)| n != name);
        names.push_front((name.to_string(), now_ms()));
        names.truncate(KEPT);
    }

    /// The latest `n` changes: (name, unix ms).
    pub fn latest(&self, n: usize) -> Vec<(String, u64)> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.iter().take(n).cloned().collect()
    }
}
