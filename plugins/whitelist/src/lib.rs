//! The whitelist plugin: only packages listed in a file are served; with its `read_through`
//! option, a request for an unlisted package fetches it, serves it and appends it to the file.
//!
//! The file is the admin's: edits made with any editor while sluice runs are picked up (the
//! host watches it, see [`Plugin::watched`]), and sluice's own additions ([`Whitelist::add`])
//! append lines without touching the admin's comments or order.

pub mod format;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_plugin_api::live::{self, LiveFile, Reload, Watched};
use sluice_plugin_api::watch::Reread;
use sluice_plugin_api::{Ctx, Decision, Plugin, Purpose, Response, Result as PluginResult};

pub use format::{parse, Entry, LineError, Matcher, Parsed};

/// A whitelist file that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("whitelist {}: {source}", path.display())]
pub struct WhitelistError {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be read or written.
    #[source]
    pub source: io::Error,
}

/// Where a fleet keeps the names its nodes add (read-through, add-package): a shared list
/// every node reads, beside each node's own file.
pub trait SharedList: Send + Sync {
    /// Add `names` to the shared list (in the background: the caller goes on).
    fn add(&self, names: Vec<String>);
}

/// The live whitelist: a file and the matcher built from its last good parse, and in a fleet
/// the shared list of additions.
pub struct Whitelist {
    file: LiveFile<Matcher>,
    /// The fleet's shared additions, as last read.
    shared: std::sync::RwLock<Arc<Matcher>>,
    /// Where additions go in a fleet (instead of the file).
    shared_list: std::sync::OnceLock<Arc<dyn SharedList>>,
    shared_generation: std::sync::atomic::AtomicU64,
    /// Names this process appended recently, to restore them if a concurrent edit made
    /// from an older copy of the file drops them.
    appended: Mutex<Vec<(String, Instant)>>,
}

/// How long after appending a name sluice watches for an edit that loses it.
const RESTORE_WINDOW: Duration = Duration::from_secs(600);

fn parse_matcher(text: &str) -> live::Parsed<Matcher> {
    let parsed = parse(text);
    live::Parsed {
        value: Matcher::new(&parsed.entries),
        errors: parsed
            .errors
            .into_iter()
            .map(|e| live::LineError {
                line: e.line,
                message: e.message,
            })
            .collect(),
    }
}

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
        let file = LiveFile::load(&path, "whitelist", false, parse_matcher, Matcher::is_empty)
            .map_err(|message| err(io::Error::other(message)))?;
        Ok(Self {
            file,
            shared: Default::default(),
            shared_list: std::sync::OnceLock::new(),
            shared_generation: Default::default(),
            appended: Mutex::new(Vec::new()),
        })
    }

    /// Send additions to `list` (a fleet's shared list) instead of the file.
    pub fn share_additions(&self, list: Arc<dyn SharedList>) {
        let _ = self.shared_list.set(list);
    }

    /// Whether additions go to a fleet's shared list.
    pub fn is_shared(&self) -> bool {
        self.shared_list.get().is_some()
    }

    /// Make `names` the fleet's shared additions (as read from the shared list).
    pub fn set_shared(&self, names: &[String]) {
        let mut matcher = Matcher::default();
        for name in names {
            matcher.insert_name(name);
        }
        let changed = *self.shared_snapshot() != matcher;
        if changed {
            match self.shared.write() {
                Ok(mut shared) => *shared = Arc::new(matcher),
                Err(poisoned) => *poisoned.into_inner() = Arc::new(matcher),
            }
            self.shared_generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn shared_snapshot(&self) -> Arc<Matcher> {
        match self.shared.read() {
            Ok(shared) => shared.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The file this list is read from.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The live list: the file's entries and, in a fleet, the shared additions.
    pub fn snapshot(&self) -> Arc<Matcher> {
        let file = self.file.current();
        let shared = self.shared_snapshot();
        if shared.is_empty() {
            return file;
        }
        let mut all = (*file).clone();
        for name in shared.names() {
            all.insert_name(name);
        }
        Arc::new(all)
    }

    /// Whether `name` is on the live list.
    pub fn allows(&self, name: &str) -> bool {
        self.file.current().allows(name) || self.shared_snapshot().allows(name)
    }

    /// A number that changes each time a new list goes live.
    pub fn generation(&self) -> u64 {
        self.file.generation().wrapping_add(
            self.shared_generation
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Re-read the whole file and make it live when it is good.
    ///
    /// A file with bad lines keeps the last good list; an empty file that follows a non-empty
    /// list is only applied when a second reload still finds it empty (`confirm_empty`).
    pub fn reload(&self, confirm_empty: bool) -> Result<Reload, WhitelistError> {
        let (reload, previous) =
            self.file
                .reload_with_previous(confirm_empty)
                .map_err(|source| WhitelistError {
                    path: self.path().to_path_buf(),
                    source,
                })?;
        if let Some(previous) = previous {
            let lost = self.lost_appends(&previous, &self.snapshot());
            if !lost.is_empty() {
                tracing::warn!(
                    names = ?lost,
                    "an edit made from an older copy of the whitelist dropped names sluice had just added: appending them again"
                );
                self.add(&lost)?;
            }
        }
        Ok(reload)
    }

    /// Names we appended recently that `next` drops while it also adds entries of its own:
    /// the mark of an editor saving over our append. A pure removal is the admin's choice.
    fn lost_appends(&self, previous: &Matcher, next: &Matcher) -> Vec<String> {
        let mut appended = self
            .appended
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        appended.retain(|(_, at)| at.elapsed() < RESTORE_WINDOW);
        if !next.adds_to(previous) {
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
        if let Some(shared) = self.shared_list.get() {
            let mut added: Vec<String> = Vec::new();
            for name in names {
                if !self.allows(name) && !added.contains(name) {
                    added.push(name.clone());
                }
            }
            if !added.is_empty() {
                let mut now = (*self.shared_snapshot()).clone();
                for name in &added {
                    now.insert_name(name);
                }
                match self.shared.write() {
                    Ok(mut shared) => *shared = Arc::new(now),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(now),
                }
                shared.add(added.clone());
            }
            return Ok(added);
        }
        let err = |source| WhitelistError {
            path: self.path().to_path_buf(),
            source,
        };
        let _lock = self.lock_folder().map_err(err)?;
        let text = live::read_text(self.path()).map_err(err)?;
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
            .open(self.path())
            .map_err(err)?;
        file.write_all(chunk.as_bytes()).map_err(err)?;
        file.sync_data().map_err(err)?;
        // The file as it is now (an admin's edit the watcher has not applied yet included):
        // the watcher's re-read of it changes nothing.
        let now = format!("{text}{chunk}");
        let updated = Matcher::new(&parse(&now).entries);
        self.file.set(now, updated);
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
            path: self.path().to_path_buf(),
            source,
        };
        if name.trim().is_empty() {
            // It would match every blank and comment-only line of the file.
            return Ok(false);
        }
        let _lock = self.lock_folder().map_err(err)?;
        let text = live::read_text(self.path()).map_err(err)?;
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
            write_replacing(self.path(), kept.as_bytes()).map_err(err)?;
            self.reload(true)?;
        }
        Ok(removed)
    }

    /// An exclusive lock on the file's folder, shared by every sluice process.
    fn lock_folder(&self) -> io::Result<File> {
        let dir = match self.path().parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let folder = File::open(dir)?;
        folder.lock()?;
        Ok(folder)
    }
}

impl std::fmt::Debug for Whitelist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whitelist")
            .field("file", &self.file)
            .field("shared", &self.is_shared())
            .finish_non_exhaustive()
    }
}

impl Watched for Whitelist {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn reread(&self, confirm_empty: bool) -> Reread {
        match self.reload(confirm_empty) {
            Ok(Reload::EmptyPending) => Reread::EmptyPending,
            Ok(_) => Reread::Done,
            Err(error) => Reread::Failed(error.to_string()),
        }
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

/// The `whitelist` plugin: refuses every package not on the list, naming how to add it; with
/// `read_through`, a request for an unlisted package is let through, fetched, and the package
/// appended to the list once it was served.
///
/// Both of its switches are read on each use, so the host can turn them live: read-through,
/// and `off` (mirror mode: every package is served, nothing is added).
#[derive(Debug, Clone)]
pub struct WhitelistPlugin {
    list: Arc<Whitelist>,
    read_through: Arc<AtomicBool>,
    off: Arc<AtomicBool>,
}

impl WhitelistPlugin {
    /// A plugin enforcing `list`; `read_through` lets requests bring in unlisted packages.
    pub fn new(list: Arc<Whitelist>, read_through: bool) -> Self {
        Self::live(
            list,
            Arc::new(AtomicBool::new(read_through)),
            Arc::new(AtomicBool::new(false)),
        )
    }

    /// A plugin enforcing `list` while `off` is false, bringing in unlisted packages while
    /// `read_through` is true: both read on each request.
    pub fn live(list: Arc<Whitelist>, read_through: Arc<AtomicBool>, off: Arc<AtomicBool>) -> Self {
        Self {
            list,
            read_through,
            off,
        }
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

    fn admit(&self, name: &str, ctx: &mut Ctx) -> PluginResult<Decision> {
        if self.off.load(Ordering::Relaxed) || self.list.allows(name) {
            return Ok(Decision::Continue);
        }
        if self.read_through.load(Ordering::Relaxed) && ctx.purpose == Purpose::Request {
            ctx.read_through = true;
            return Ok(Decision::Continue);
        }
        Ok(Decision::Respond(Response::error(
            403,
            format!(
                "{name} is not on this registry's whitelist. Ask an admin to add it: \
                 `sluice add-package {name}`, or a line `{name}` in {}",
                self.list.path().display()
            ),
        )))
    }

    fn on_response(&self, status: u16, _headers: &mut http::HeaderMap, ctx: &Ctx) {
        if !ctx.read_through || status >= 400 {
            return;
        }
        let Some(name) = ctx.package.as_deref() else {
            return;
        };
        match self.list.add(&[name.to_string()]) {
            Ok(added) if !added.is_empty() => {
                tracing::info!(package = name, "read-through: added to the whitelist");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(package = name, %error, "read-through: cannot add to the whitelist")
            }
        }
    }

    fn watched(&self) -> Vec<Arc<dyn Watched>> {
        vec![self.list.clone()]
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
    fn read_through_admits_unlisted_names_for_requests_and_adds_them_once_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whitelist");
        fs::write(&path, "express\n").unwrap();
        let list = Arc::new(Whitelist::load(&path).unwrap());
        let strict = WhitelistPlugin::new(list.clone(), false);
        let open = WhitelistPlugin::new(list.clone(), true);
        let mut ctx = Ctx::new(1);
        assert!(matches!(
            strict.admit("lodash", &mut ctx).unwrap(),
            Decision::Respond(Response { status: 403, .. })
        ));
        assert!(!ctx.read_through);
        assert_eq!(open.admit("lodash", &mut ctx).unwrap(), Decision::Continue);
        assert!(ctx.read_through);
        // Background work never brings in an unlisted name.
        assert!(matches!(
            open.admit("lodash", &mut Ctx::background()).unwrap(),
            Decision::Respond(_)
        ));
        // A failed answer adds nothing; a served one appends the name.
        ctx.package = Some("lodash".into());
        open.on_response(502, &mut http::HeaderMap::new(), &ctx);
        assert!(!list.allows("lodash"));
        open.on_response(200, &mut http::HeaderMap::new(), &ctx);
        assert!(list.allows("lodash"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "express\nlodash\n");
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
        assert_eq!(list.reload(true).unwrap(), Reload::Applied);
        assert!(!list.allows("express"));
    }
}
