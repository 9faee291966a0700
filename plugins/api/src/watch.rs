//! Hot reload of a file an admin edits (the whitelist, a deny list): watch its folder and
//! re-read the file after edits.
//!
//! Editors replace the file's inode on save (rename-over, delete + recreate, a Kubernetes
//! ConfigMap's symlink swap), so the folder is watched, not the file. Events are debounced,
//! then the plugin re-reads the whole file; our own reads cause only access events, which are
//! ignored. A safety re-read every `poll` catches changes that produced no event.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

/// What a re-read did, as far as the watcher cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reread {
    /// Done: applied, unchanged, or refused with the last good content kept.
    Done,
    /// The file became empty: re-read it once more after the debounce, confirming the empty
    /// file (a truncate-then-write save shows an empty file for a moment).
    EmptyPending,
    /// The file could not be read (briefly missing, unreadable): the last good content stays.
    Failed(String),
}

/// A running watcher; dropping it stops the watch and its thread.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    stop: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchHandle")
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(Msg::Stop);
    }
}

enum Msg {
    Changed,
    Stop,
}

/// Watch `path`; `reread(confirm_empty)` runs `debounce` after the last change event (and once
/// at the start, for edits made before the watch began).
pub fn watch_file<F>(
    path: &Path,
    debounce: Duration,
    poll: Duration,
    mut reread: F,
) -> notify::Result<WatchHandle>
where
    F: FnMut(bool) -> Reread + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Msg>();
    let file_name = path.file_name().map(|n| n.to_os_string());
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reads cause access events; of those only a closed write counts.
        if matches!(event.kind, EventKind::Access(_))
            && !matches!(
                event.kind,
                EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write
                ))
            )
        {
            return;
        }
        // The file itself, or the entries a symlinked file resolves through (a Kubernetes
        // ConfigMap swaps a `..data` link).
        let relevant = event.paths.is_empty()
            || event.paths.iter().any(|p| {
                let name = p.file_name().map(|n| n.to_os_string());
                name == file_name
                    || name
                        .as_ref()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".."))
            });
        if relevant {
            let _ = events.send(Msg::Changed);
        }
    })?;
    let dir: PathBuf = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    // A symlinked file: watch where it points too, so swaps of the target are seen.
    if let Ok(target) = std::fs::canonicalize(path) {
        if let Some(target_dir) = target.parent() {
            if std::fs::canonicalize(&dir).ok().as_deref() != Some(target_dir) {
                let _ = watcher.watch(target_dir, RecursiveMode::NonRecursive);
            }
        }
    }
    let shown = path.display().to_string();
    thread::Builder::new()
        .name("sluice-file-watch".into())
        .spawn(move || run(&shown, &rx, debounce, poll, &mut reread))
        .map_err(notify::Error::io)?;
    Ok(WatchHandle {
        _watcher: watcher,
        stop: tx,
    })
}

fn run<F: FnMut(bool) -> Reread>(
    path: &str,
    rx: &mpsc::Receiver<Msg>,
    debounce: Duration,
    poll: Duration,
    reread: &mut F,
) {
    let mut due: Option<Instant> = Some(Instant::now());
    let mut empty_since: Option<Instant> = None;
    let mut next_poll = Instant::now() + poll;
    loop {
        let wake = due.map_or(next_poll, |d| d.min(next_poll));
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(Msg::Changed) => {
                due = Some(Instant::now() + debounce);
                continue;
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if due.is_some_and(|d| d > now) || (due.is_none() && next_poll > now) {
            continue;
        }
        due = None;
        next_poll = now + poll;
        let confirm_empty = empty_since.is_some_and(|since| now.duration_since(since) >= debounce);
        match reread(confirm_empty) {
            Reread::EmptyPending => {
                empty_since.get_or_insert(now);
                due = Some(now + debounce);
            }
            Reread::Done => empty_since = None,
            Reread::Failed(error) => {
                tracing::warn!(path, %error, "not re-read: the last good content stays live");
                empty_since = None;
            }
        }
    }
}
