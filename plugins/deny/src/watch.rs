//! Hot reload of the deny file: watch its folder and re-read the file after edits.
//!
//! As for the whitelist, editors replace the file's inode on save, so the folder is watched,
//! events are debounced, and the whole file is re-read; a read that finds the same text changes
//! nothing. A safety re-read every `poll` catches changes that produced no event.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::file::{DenyFile, Reload};

/// A running watcher; dropping it stops the watch and its thread.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    stop: mpsc::Sender<Msg>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(Msg::Stop);
    }
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchHandle")
    }
}

enum Msg {
    Changed,
    Stop,
}

/// Start watching `file`; edits are live `debounce` after the last event.
///
/// The file is re-read once at once, for edits made before the watch started.
pub fn watch(
    file: Arc<DenyFile>,
    debounce: Duration,
    poll: Duration,
) -> notify::Result<WatchHandle> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let file_name = file.path().file_name().map(|n| n.to_os_string());
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Our own reads cause access events; only a closed write counts.
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
    let dir: PathBuf = match file.path().parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    if let Ok(target) = std::fs::canonicalize(file.path()) {
        if let Some(target_dir) = target.parent() {
            if std::fs::canonicalize(&dir).ok().as_deref() != Some(target_dir) {
                let _ = watcher.watch(target_dir, RecursiveMode::NonRecursive);
            }
        }
    }
    thread::Builder::new()
        .name("sluice-deny-watch".into())
        .spawn(move || run(&file, &rx, debounce, poll))
        .map_err(notify::Error::io)?;
    Ok(WatchHandle {
        _watcher: watcher,
        stop: tx,
    })
}

fn run(file: &DenyFile, rx: &mpsc::Receiver<Msg>, debounce: Duration, poll: Duration) {
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
        match file.reload(confirm_empty) {
            Ok(Reload::EmptyPending) => {
                empty_since.get_or_insert(now);
                due = Some(now + debounce);
            }
            Ok(_) => empty_since = None,
            Err(error) => {
                // A file briefly missing (delete + recreate) keeps the last good rules.
                tracing::warn!(path = %file.path().display(), %error, "deny file not re-read: the last good rules stay live");
                empty_since = None;
            }
        }
    }
}
