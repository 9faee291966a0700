//! Hot reload of the whitelist file, through the shared file watcher.

use std::sync::Arc;
use std::time::Duration;

use sluice_plugin_api::watch::{watch_file, Reread, WatchHandle};

use crate::{Reload, Whitelist};

/// Start watching `list`'s file; edits are live `debounce` after the last event.
///
/// An empty file replacing a non-empty one is only applied if it is still empty `debounce`
/// later. A safety re-read every `poll` catches changes that produced no event.
pub fn watch(
    list: Arc<Whitelist>,
    debounce: Duration,
    poll: Duration,
) -> notify::Result<WatchHandle> {
    let path = list.path().to_path_buf();
    watch_file(&path, debounce, poll, move |confirm_empty| {
        match list.reload(confirm_empty) {
            Ok(Reload::EmptyPending) => Reread::EmptyPending,
            Ok(_) => Reread::Done,
            Err(error) => Reread::Failed(error.to_string()),
        }
    })
}
