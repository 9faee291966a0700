//! Hot reload of the deny file, through the shared file watcher.

use std::sync::Arc;
use std::time::Duration;

use sluice_plugin_api::watch::{watch_file, Reread, WatchHandle};

use crate::file::{DenyFile, Reload};

/// Start watching `file`; edits are live `debounce` after the last event.
///
/// The file is re-read once at once, for edits made before the watch started.
pub fn watch(
    file: Arc<DenyFile>,
    debounce: Duration,
    poll: Duration,
) -> notify::Result<WatchHandle> {
    let path = file.path().to_path_buf();
    watch_file(&path, debounce, poll, move |confirm_empty| {
        match file.reload(confirm_empty) {
            Ok(Reload::EmptyPending) => Reread::EmptyPending,
            Ok(_) => Reread::Done,
            Err(error) => Reread::Failed(error.to_string()),
        }
    })
}
