//! The whitelist plugin: only packages listed in a file are served.
//!
//! The file is the admin's: edits made with any editor while sluice runs are picked up by
//! [`watch`], and sluice's own additions ([`Whitelist::add`]) append lines without touching the
//! admin's comments or order.

pub mod format;
mod watch;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sluice_plugin_api::{
    Ctx, Decision, NpmRequest, Plugin, Refusal, RefusalKind, Response, Result as PluginResult,
};

pub use format::{parse, Entry, LineError, Matcher, Parsed};
pub use sluice_plugin_api::watch::WatchHandle;
pub use watch::watch;

/// A whitelist file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("whitelist {}: {source}", path.display())]
pub struct WhitelistError {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be read or written.
    #[source]
    pub source: io::Error,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The file's text did not change since the last read.
    Unchanged,
    /// The new list is live.
    Applied {
        /// Entries in the new list.
        entries: usize,
    },
    /// The file has bad lines: the last good list stays live.
    Rejected(Vec<LineError>),
    /// The file became empty: it is accepted only if it is still empty at the next reload.
    EmptyPending,
}

/// The live whitelist: a file and the matcher built from its last good parse.
#[derive(Debug)]
pub struct Whitelist {
    path: PathBuf,
    live: RwLock<Arc<Matcher>>,
    /// The last text read (applied or not), to skip reloads that change nothing.
    last_text: Mutex<Option<String>>,
    /// Names this process appended recently, to restore them if a concurrent edit made
    /// from an older copy of the file drops them.
    appended: Mutex<Vec<(String, Instant)>>,
}

/// How long after appending a name sluice watches for an edit that loses it.
const RESTORE_WINDOW: Duration = Duration::from_secs(600);

impl Whitelist {
    /// Load the list from `path`, creating an empty file when there is none.
    ///
    /// Bad lines are logged with their numbers and ignored.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, WhitelistError> {
        let path = path.into();
        let err = |source| WhitelistError {
            path: path.clone(),
            source,
        };
        if !path.exists() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(err)?;
            }
            tracing::warn!(path = %path.display(), "whitelist file missing: created an empty one");
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(err)?;
        }
        let text = read_text(&path).map_err(err)?;
        let parsed = parse(&text);
        log_errors(&path, &parsed.errors);
        Ok(Self {
            live: RwLock::new(Arc::new(Matcher::new(&parsed.entries))),
            last_text: Mutex::new(Some(text)),
            appended: Mutex::new(Vec::new()),
            path,
        })
    }

    /// The file this list is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The live matcher.
    pub fn snapshot(&self) -> Arc<Matcher> {
        match self.live.read() {
            Ok(live) => live.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether `name` is on the live list.
    pub fn allows(&self, name: &str) -> bool {
        self.snapshot().allows(name)
    }

    fn set_live(&self, matcher: Matcher) {
        let matcher = Arc::new(matcher);
        match self.live.write() {
            Ok(mut live) => *live = matcher,
            Err(poisoned) => *poisoned.into_inner() = matcher,
        }
    }

    fn last_text(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_text
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Re-read the whole file and make it live when it is good.
    ///
    /// A file with bad lines keeps the last good list; an empty file that follows a non-empty
    /// list is only applied when a second reload still finds it empty (`confirm_empty`).
    pub fn reload(&self, confirm_empty: bool) -> Result<Reload, WhitelistError> {
        let text = read_text(&self.path).map_err(|source| WhitelistError {
            path: self.path.clone(),
            source,
        })?;
        let mut last = self.last_text();
        if last.as_deref() == Some(text.as_str()) && !confirm_empty {
            return Ok(Reload::Unchanged);
        }
        *last = Some(text.clone());
        drop(last);
        let parsed = parse(&text);
        if !parsed.errors.is_empty() {
            log_errors(&self.path, &parsed.errors);
            tracing::warn!(path = %self.path.display(), "whitelist has bad lines: the last good list stays live");
            return Ok(Reload::Rejected(parsed.errors));
        }
        if parsed.entries.is_empty() && !self.snapshot().is_empty() && !confirm_empty {
            return Ok(Reload::EmptyPending);
        }
        let entries = parsed.entries.len();
        let previous = self.snapshot();
        let next = Matcher::new(&parsed.entries);
        let lost = self.lost_appends(&previous, &next, &parsed.entries);
        self.set_live(next);
        tracing::info!(path = %self.path.display(), entries, "whitelist reloaded");
        if !lost.is_empty() {
            tracing::warn!(
                names = ?lost,
                "an edit made from an older copy of the whitelist dropped names sluice had just added: appending them again"
            );
            self.add(&lost)?;
        }
        Ok(Reload::Applied { entries })
    }

    /// Names we appended recently that `next` drops while it also adds entries of its own:
    /// the mark of an editor saving over our append. A pure removal is the admin's choice.
    fn lost_appends(&self, previous: &Matcher, next: &Matcher, entries: &[Entry]) -> Vec<String> {
        let mut appended = self
            .appended
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        appended.retain(|(_, at)| at.elapsed() < RESTORE_WINDOW);
        let edited_too = entries.iter().any(|e| !previous.has(e));
        if !edited_too {
            return Vec::new();
        }
        appended
            .iter()
            .filter(|(name, _)| previous.allows(name) && !next.allows(name))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Append the names not yet listed to the file, keeping every other line as it is.
    ///
    /// Returns the names it appended. Safe against other sluice processes appending at the
    /// same time (the folder is locked while the file is read and written).
    pub fn add(&self, names: &[String]) -> Result<Vec<String>, WhitelistError> {
        let err = |source| WhitelistError {
            path: self.path.clone(),
            source,
        };
        let _lock = self.lock_folder().map_err(err)?;
        let text = read_text(&self.path).map_err(err)?;
        let current = Matcher::new(&parse(&text).entries);
        let mut added: Vec<String> = Vec::new();
        for name in names {
            if !current.allows(name) && !added.contains(name) {
                added.push(name.clone());
            }
        }
        if added.is_empty() {
            return Ok(added);
        }
        let mut chunk = String::new();
        if !text.is_empty() && !text.ends_with('\n') {
            chunk.push('\n');
        }
        for name in &added {
            chunk.push_str(name);
            chunk.push('\n');
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        file.write_all(chunk.as_bytes()).map_err(err)?;
        file.sync_data().map_err(err)?;
        // What we wrote is known: the watcher's re-read of it changes nothing.
        *self.last_text() = Some(format!("{text}{chunk}"));
        let mut updated = (*self.snapshot()).clone();
        for name in &added {
            updated.insert_name(name);
        }
        self.set_live(updated);
        let now = Instant::now();
        self.appended
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(added.iter().map(|n| (n.clone(), now)));
        Ok(added)
    }

    /// Take every line naming `name` off the file (comments and other lines stay).
    ///
    /// Returns whether a line was removed.
    pub fn remove(&self, name: &str) -> Result<bool, WhitelistError> {
        let err = |source| WhitelistError {
            path: self.path.clone(),
            source,
        };
        let _lock = self.lock_folder().map_err(err)?;
        let text = read_text(&self.path).map_err(err)?;
        let mut removed = false;
        let mut kept = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let entry = line
                .trim_start_matches('\u{feff}')
                .split('#')
                .next()
                .unwrap_or("")
                .trim();
            if entry == name {
                removed = true;
            } else {
                kept.push_str(line);
            }
        }
        if removed {
            write_replacing(&self.path, kept.as_bytes()).map_err(err)?;
            self.reload(true)?;
        }
        Ok(removed)
    }

    /// An exclusive lock on the file's folder, shared by every sluice process.
    fn lock_folder(&self) -> io::Result<File> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let folder = File::open(dir)?;
        folder.lock()?;
        Ok(folder)
    }
}

/// Write `bytes` to `path` through a temporary file and a rename, following a symlink so the
/// link itself stays.
fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let target = fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.sluice-tmp"));
    {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    if let Ok(meta) = fs::metadata(&target) {
        fs::set_permissions(&temp, meta.permissions())?;
    }
    fs::rename(&temp, &target)
}

fn read_text(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    String::from_utf8(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")))
}

fn log_errors(path: &Path, errors: &[LineError]) {
    for error in errors {
        tracing::warn!(
            "{}:{}: {} (line ignored)",
            path.display(),
            error.line,
            error.message
        );
    }
}

/// The `whitelist` plugin: refuses every package not on the list, naming how to add it.
#[derive(Debug, Clone)]
pub struct WhitelistPlugin {
    list: Arc<Whitelist>,
}

impl WhitelistPlugin {
    /// A plugin enforcing `list`.
    pub fn new(list: Arc<Whitelist>) -> Self {
        Self { list }
    }

    /// The live list this plugin enforces.
    pub fn list(&self) -> &Arc<Whitelist> {
        &self.list
    }
}

impl Plugin for WhitelistPlugin {
    fn kind(&self) -> &'static str {
        "whitelist"
    }

    fn on_request(
        &self,
        request: &NpmRequest,
        _headers: &http::HeaderMap,
        ctx: &mut Ctx,
    ) -> PluginResult<Decision> {
        let Some(name) = request.package() else {
            return Ok(Decision::Continue);
        };
        if !self.list.allows(name) {
            ctx.refusal = Some(Refusal {
                kind: RefusalKind::NotListed,
                response: Response::error(
                    403,
                    format!(
                        "{name} is not on this registry's whitelist. Ask an admin to add it: \
                         `sluice add-package {name}`, or a line `{name}` in {}",
                        self.list.path().display()
                    ),
                ),
            });
        }
        Ok(Decision::Continue)
    }

    fn allows(&self, name: &str) -> bool {
        self.list.allows(name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn add_appends_without_touching_other_lines_and_skips_listed_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whitelist");
        fs::write(&path, "# ours\r\nexpress\n@types/*").unwrap();
        let list = Whitelist::load(&path).unwrap();
        let added = list
            .add(&[
                "lodash".into(),
                "express".into(),
                "@types/node".into(),
                "lodash".into(),
            ])
            .unwrap();
        assert_eq!(added, vec!["lodash".to_string()]);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# ours\r\nexpress\n@types/*\nlodash\n"
        );
        assert!(list.allows("lodash"));
    }

    #[test]
    fn remove_keeps_comments_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whitelist");
        fs::write(&path, "# ours\nexpress\nlodash # utils\n").unwrap();
        let list = Whitelist::load(&path).unwrap();
        assert!(list.remove("lodash").unwrap());
        assert!(!list.remove("lodash").unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "# ours\nexpress\n");
        assert!(!list.allows("lodash"));
        assert!(list.allows("express"));
    }

    #[test]
    fn an_edit_from_an_older_copy_does_not_lose_an_appended_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whitelist");
        fs::write(&path, "express\n").unwrap();
        let list = Whitelist::load(&path).unwrap();
        list.add(&["lodash".into()]).unwrap();
        // An editor that loaded the file before the append saves its own addition.
        fs::write(&path, "express\nreact\n").unwrap();
        list.reload(false).unwrap();
        assert!(list.allows("lodash") && list.allows("react"));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "express\nreact\nlodash\n"
        );
        // A pure removal is the admin's decision.
        fs::write(&path, "express\nreact\n").unwrap();
        list.reload(false).unwrap();
        assert!(!list.allows("lodash"));
    }

    #[test]
    fn a_broken_file_keeps_the_last_good_list_and_empty_needs_confirming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whitelist");
        fs::write(&path, "express\n").unwrap();
        let list = Whitelist::load(&path).unwrap();
        fs::write(&path, "express\nlodash\n../bad\n").unwrap();
        assert!(matches!(list.reload(false).unwrap(), Reload::Rejected(_)));
        assert!(!list.allows("lodash"));
        fs::write(&path, "").unwrap();
        assert_eq!(list.reload(false).unwrap(), Reload::EmptyPending);
        assert!(list.allows("express"));
        assert_eq!(list.reload(true).unwrap(), Reload::Applied { entries: 0 });
        assert!(!list.allows("express"));
    }
}
