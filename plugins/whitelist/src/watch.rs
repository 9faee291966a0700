//! Hot reload: watch the whitelist file's folder and re-read the file after edits.
//!
//! Editors replace the file's inode on save (rename-over, delete + recreate, symlink swaps), so
//! the folder is watched, not the file. Events are debounced, then the whole file is re-read;
//! reads that find the same text change nothing, so sluice's own reads and appends cause no
//! reload storm.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::{Reload, Whitelist};

/// A running watcher; dropping it stops the watch.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    stop: mpsc::Sender<Msg>,
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

/// Start watching `list`'s file; edits are live `debounce` after the last event.
///
/// An empty file replacing a non-empty one is only applied if it is still empty `debounce`
/// later (a truncate-then-write save shows an empty file for a moment). A safety re-read every
/// `poll` catches changes that produced no event (some network file systems).
pub fn watch(
    list: Arc<Whitelist>,
    debounce: Duration,
    poll: Duration,
) -> notify::Result<WatchHandle> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let file_name = list.path().file_name().map(|n| n.to_os_string());
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(
            event.kind,
            EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write
            ))
        ) || matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
        ) {
            // Changes to the file itself, or to the entries a symlinked file resolves through
            // (a Kubernetes ConfigMap swaps a `..data` link), both count.
            let relevant = event.paths.iter().any(|p| {
                let name = p.file_name().map(|n| n.to_os_string());
                name == file_name
                    || name
                        .as_ref()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".."))
            }) || event.paths.is_empty();
            if relevant {
                let _ = events.send(Msg::Changed);
            }
        }
    })?;
    let dir: PathBuf = match list.path().parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    // A symlinked file: watch where it points too, so swaps of the target are seen.
    if let Ok(target) = std::fs::canonicalize(list.path()) {
        if let Some(target_dir) = target.parent() {
            if target_dir != dir && std::fs::canonicalize(&dir).ok().as_deref() != Some(target_dir)
            {
                let _ = watcher.watch(target_dir, RecursiveMode::NonRecursive);
            }
        }
    }
    thread::Builder::new()
        .name("sluice-whitelist-watch".into())
        .spawn(move || run(&list, &rx, debounce, poll))
        .map_err(notify::Error::io)?;
    Ok(WatchHandle {
        _watcher: watcher,
        stop: tx,
    })
}

fn run(list: &Whitelist, rx: &mpsc::Receiver<Msg>, debounce: Duration, poll: Duration) {
    let mut due: Option<Instant> = None;
    let mut empty_since: Option<Instant> = None;
    let mut next_poll = Instant::now() + poll;
    loop {
        let now = Instant::now();
        let wake = due.map_or(next_poll, |d| d.min(next_poll));
        match rx.recv_timeout(wake.saturating_duration_since(now)) {
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
        match list.reload(confirm_empty) {
            Ok(Reload::EmptyPending) => {
                empty_since.get_or_insert(now);
                due = Some(now + debounce);
            }
            Ok(_) => empty_since = None,
            Err(error) => {
                // A file that is briefly missing (delete + recreate) or unreadable
                // (`chmod 000`) keeps the last good list.
                tracing::warn!(%error, "whitelist not re-read: the last good list stays live");
                empty_since = None;
            }
        }
    }
}
