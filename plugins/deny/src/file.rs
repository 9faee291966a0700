//! The deny file: rules an admin edits while sluice runs; the last good list stays live.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::rules::{parse_file, LineError, Rules};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The file's text did not change since the last read.
    Unchanged,
    /// The new rules are live.
    Applied {
        /// Rules in the new list.
        rules: usize,
    },
    /// The file has bad lines: the last good rules stay live.
    Rejected(Vec<LineError>),
    /// The file became empty: it is applied only if it is still empty at the next reload (an
    /// editor that truncates then writes shows an empty file for a moment).
    EmptyPending,
}

/// The live deny file: its path and the rules of its last good read.
#[derive(Debug)]
pub struct DenyFile {
    path: PathBuf,
    live: RwLock<Arc<Rules>>,
    last_text: Mutex<Option<String>>,
    /// Bumped each time new rules go live.
    generation: std::sync::atomic::AtomicU64,
}

impl DenyFile {
    /// Read the file at `path`; a missing or unreadable file or any bad line is an error
    /// (a deny list that is not what the admin wrote must not start).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("deny file {}: {e}", path.display()))?;
        let rules = parse_file(&text, &path).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("deny file {}: {}", path.display(), lines.join("; "))
        })?;
        Ok(Self {
            live: RwLock::new(Arc::new(rules)),
            generation: Default::default(),
            last_text: Mutex::new(Some(text)),
            path,
        })
    }

    /// The file these rules are read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A number that changes each time new rules go live.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The live rules.
    pub fn rules(&self) -> Arc<Rules> {
        match self.live.read() {
            Ok(live) => live.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-read the whole file and make it live when every line is good.
    ///
    /// An empty file following a non-empty list is only applied when `confirm_empty` is set.
    pub fn reload(&self, confirm_empty: bool) -> io::Result<Reload> {
        let text = std::fs::read_to_string(&self.path)?;
        let mut last = self
            .last_text
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.as_deref() == Some(text.as_str()) && !confirm_empty {
            return Ok(Reload::Unchanged);
        }
        *last = Some(text.clone());
        drop(last);
        let rules = match parse_file(&text, &self.path) {
            Ok(rules) => rules,
            Err(errors) => {
                for error in &errors {
                    tracing::warn!("{}:{}: {}", self.path.display(), error.line, error.message);
                }
                tracing::warn!(path = %self.path.display(), "deny file has bad lines: the last good rules stay live");
                return Ok(Reload::Rejected(errors));
            }
        };
        if rules.is_empty() && !self.rules().is_empty() && !confirm_empty {
            return Ok(Reload::EmptyPending);
        }
        let count = rules.len();
        let rules = Arc::new(rules);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.live.write() {
            Ok(mut live) => *live = rules,
            Err(poisoned) => *poisoned.into_inner() = rules,
        }
        tracing::info!(path = %self.path.display(), rules = count, "deny file reloaded");
        Ok(Reload::Applied { rules: count })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_broken_edit_keeps_the_last_good_rules_and_empty_needs_confirming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny");
        std::fs::write(&path, "left-pad\n").unwrap();
        let file = DenyFile::load(&path).unwrap();
        assert_eq!(file.reload(false).unwrap(), Reload::Unchanged);
        std::fs::write(&path, "left-pad\nlodash@\n").unwrap();
        let Reload::Rejected(errors) = file.reload(false).unwrap() else {
            panic!("a bad line was applied");
        };
        assert_eq!(errors[0].line, 2);
        assert!(file.rules().package("left-pad").is_some());
        std::fs::write(&path, "").unwrap();
        assert_eq!(file.reload(false).unwrap(), Reload::EmptyPending);
        assert!(file.rules().package("left-pad").is_some());
        assert_eq!(file.reload(true).unwrap(), Reload::Applied { rules: 0 });
        assert!(file.rules().is_empty());
    }

    #[test]
    fn a_missing_or_bad_file_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny");
        assert!(DenyFile::load(&path).unwrap_err().contains("deny file"));
        std::fs::write(&path, "ok\n\nnot ok\n").unwrap();
        let error = DenyFile::load(&path).unwrap_err();
        assert!(error.contains("line 3"), "{error}");
    }
}
