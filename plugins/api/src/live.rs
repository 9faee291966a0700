//! A "live file": a file an admin edits while sluice runs (the whitelist, a deny list), parsed
//! into a value that stays live until a good edit replaces it.
//!
//! - A file with bad lines is not applied: the last good value stays live and each bad line is
//!   logged with its number.
//! - An empty file replacing a non-empty value is applied only when a second read, after the
//!   debounce, still finds it empty (a truncate-then-write save shows an empty file for a
//!   moment).
//! - Every applied value bumps [`LiveFile::generation`], which plugins report to the host.
//!
//! The host watches the file ([`crate::watch`]) as a background service and calls
//! [`Watched::reread`] after edits; plugins only hand their live files over
//! ([`crate::Plugin::watched`]).

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::watch::Reread;

/// A bad line of a live file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A file's text parsed: the value, and the lines that could not be read.
pub struct Parsed<T> {
    /// What the good lines say.
    pub value: T,
    /// The bad lines; a reload with any is refused.
    pub errors: Vec<LineError>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The file's text did not change since the last read.
    Unchanged,
    /// The new value is live.
    Applied,
    /// The file has bad lines: the last good value stays live.
    Rejected(Vec<LineError>),
    /// The file became empty: applied only if it is still empty at the next reload.
    EmptyPending,
}

type Parser<T> = Box<dyn Fn(&str) -> Parsed<T> + Send + Sync>;

/// A file and the value of its last good parse.
pub struct LiveFile<T> {
    path: PathBuf,
    what: &'static str,
    parse: Parser<T>,
    is_empty: fn(&T) -> bool,
    live: RwLock<Arc<T>>,
    /// The last text read (applied or not), to skip reloads that change nothing.
    last_text: Mutex<Option<String>>,
    generation: AtomicU64,
}

impl<T> std::fmt::Debug for LiveFile<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFile")
            .field("path", &self.path)
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Read `path` as UTF-8 text (a BOM is the parser's business).
pub fn read_text(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    String::from_utf8(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")))
}

impl<T: Send + Sync + 'static> LiveFile<T> {
    /// Read `path` (a `what`, e.g. "whitelist", for messages) with `parse`.
    ///
    /// With `strict`, a bad line makes the load fail (a deny list that is not what the admin
    /// wrote must not start); without it, bad lines are logged and skipped.
    pub fn load(
        path: impl Into<PathBuf>,
        what: &'static str,
        strict: bool,
        parse: impl Fn(&str) -> Parsed<T> + Send + Sync + 'static,
        is_empty: fn(&T) -> bool,
    ) -> Result<Self, String> {
        let path = path.into();
        let text = read_text(&path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
        let parsed = parse(&text);
        if !parsed.errors.is_empty() {
            if strict {
                let lines: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
                return Err(format!("{what} {}: {}", path.display(), lines.join("; ")));
            }
            log_errors(&path, &parsed.errors, "line ignored");
        }
        Ok(Self {
            path,
            what,
            parse: Box::new(parse),
            is_empty,
            live: RwLock::new(Arc::new(parsed.value)),
            last_text: Mutex::new(Some(text)),
            generation: AtomicU64::new(0),
        })
    }

    /// A live file for `path` whose content is `text` for now (the file is read on the first
    /// reload, e.g. once it exists).
    pub fn from_text(
        path: impl Into<PathBuf>,
        what: &'static str,
        text: &str,
        parse: impl Fn(&str) -> Parsed<T> + Send + Sync + 'static,
        is_empty: fn(&T) -> bool,
    ) -> Self {
        let parsed = parse(text);
        Self {
            path: path.into(),
            what,
            parse: Box::new(parse),
            is_empty,
            live: RwLock::new(Arc::new(parsed.value)),
            last_text: Mutex::new(Some(text.to_string())),
            generation: AtomicU64::new(0),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The live value.
    pub fn current(&self) -> Arc<T> {
        match self.live.read() {
            Ok(live) => live.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A number that changes each time a new value goes live.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Make `value` live, read from `text` that sluice itself just wrote to the file: the
    /// watcher's re-read of it then changes nothing.
    pub fn set(&self, text: String, value: T) {
        *self.last_text() = Some(text);
        self.publish(Arc::new(value));
    }

    fn publish(&self, value: Arc<T>) {
        match self.live.write() {
            Ok(mut live) => *live = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn last_text(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_text
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Re-read the whole file and make it live when it is good; `confirm_empty` applies an
    /// empty file that a previous reload left pending.
    ///
    /// Returns what happened and, when applied, the value that was live before.
    pub fn reload_with_previous(
        &self,
        confirm_empty: bool,
    ) -> io::Result<(Reload, Option<Arc<T>>)> {
        let text = read_text(&self.path)?;
        let mut last = self.last_text();
        if last.as_deref() == Some(text.as_str()) && !confirm_empty {
            return Ok((Reload::Unchanged, None));
        }
        *last = Some(text.clone());
        drop(last);
        let parsed = (self.parse)(&text);
        if !parsed.errors.is_empty() {
            log_errors(&self.path, &parsed.errors, "edit not applied");
            tracing::warn!(path = %self.path.display(), "{} has bad lines: the last good one stays live", self.what);
            return Ok((Reload::Rejected(parsed.errors), None));
        }
        let previous = self.current();
        if (self.is_empty)(&parsed.value) && !(self.is_empty)(&previous) && !confirm_empty {
            return Ok((Reload::EmptyPending, None));
        }
        self.publish(Arc::new(parsed.value));
        tracing::info!(path = %self.path.display(), "{} reloaded", self.what);
        Ok((Reload::Applied, Some(previous)))
    }

    /// [`LiveFile::reload_with_previous`] without the previous value.
    pub fn reload(&self, confirm_empty: bool) -> io::Result<Reload> {
        self.reload_with_previous(confirm_empty)
            .map(|(reload, _)| reload)
    }
}

fn log_errors(path: &Path, errors: &[LineError], outcome: &str) {
    for error in errors {
        tracing::warn!(
            "{}:{}: {} ({outcome})",
            path.display(),
            error.line,
            error.message
        );
    }
}

/// A file the host watches for a plugin.
pub trait Watched: Send + Sync {
    /// The file.
    fn path(&self) -> &Path;

    /// Re-read it after an edit (see [`LiveFile::reload`]).
    fn reread(&self, confirm_empty: bool) -> Reread;
}

impl<T: Send + Sync + 'static> Watched for LiveFile<T> {
    fn path(&self) -> &Path {
        &self.path
    }

    fn reread(&self, confirm_empty: bool) -> Reread {
        to_reread(self.reload(confirm_empty))
    }
}

/// What the watcher makes of a reload's outcome.
pub fn to_reread(result: io::Result<Reload>) -> Reread {
    match result {
        Ok(Reload::EmptyPending) => Reread::EmptyPending,
        Ok(_) => Reread::Done,
        Err(error) => Reread::Failed(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lines(text: &str) -> Parsed<Vec<String>> {
        let mut value = Vec::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with('!') {
                errors.push(LineError {
                    line: i + 1,
                    message: "bang".into(),
                });
            } else if !line.is_empty() {
                value.push(line.to_string());
            }
        }
        Parsed { value, errors }
    }

    #[test]
    fn bad_edits_keep_the_last_good_value_and_empty_needs_confirming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list");
        std::fs::write(&path, "a\n").unwrap();
        let file = LiveFile::load(&path, "list", true, lines, Vec::is_empty).unwrap();
        assert_eq!(file.reload(false).unwrap(), Reload::Unchanged);
        std::fs::write(&path, "a\n!b\n").unwrap();
        let Reload::Rejected(errors) = file.reload(false).unwrap() else {
            panic!("a bad line was applied");
        };
        assert_eq!(errors[0].line, 2);
        assert_eq!(*file.current(), vec!["a".to_string()]);
        let before = file.generation();
        std::fs::write(&path, "").unwrap();
        assert_eq!(file.reload(false).unwrap(), Reload::EmptyPending);
        assert_eq!(file.reload(true).unwrap(), Reload::Applied);
        assert!(file.current().is_empty());
        assert!(file.generation() > before);
        // Strict loads refuse bad lines; lenient ones skip them.
        std::fs::write(&path, "a\n!b\n").unwrap();
        let error = LiveFile::load(&path, "list", true, lines, Vec::is_empty).unwrap_err();
        assert!(error.contains("line 2"), "{error}");
        let lenient = LiveFile::load(&path, "list", false, lines, Vec::is_empty).unwrap();
        assert_eq!(*lenient.current(), vec!["a".to_string()]);
    }
}
