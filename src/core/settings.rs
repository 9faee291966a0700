//! Live settings: the policy an admin changes while sluice runs (read-through on or off, the
//! replication policy, the refresh interval), kept in the store so every node of a fleet
//! follows them (each reads them again every `cluster.sync`), and over the configuration
//! file's values while set. Readers take the current value from an atomic on each use: the
//! whitelist plugin's switches, the packuments' freshness, the refresher's period.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Error;
use crate::config::{Mode, PolicyConfig};
use crate::store::{now_ms, Expect, SharedStore, Written};

/// The state object holding the settings set live.
const STATE_KEY: &str = "settings/live";

/// The settings that can be changed live, by the name `sluice settings set` takes (that of
/// their `[policy]` key).
pub const KEYS: [&str; 3] = ["read_through", "mode", "refresh"];

/// Where a setting's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The built-in default: neither the file nor the store sets it.
    Default,
    /// The configuration file.
    File,
    /// Set live, kept in the store.
    Store,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Store => "store",
        })
    }
}

/// A setting's value in force, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// The setting (one of [`KEYS`]).
    pub key: &'static str,
    /// Its value, as `sluice settings set` takes it.
    pub value: String,
    /// Where the value comes from.
    pub source: Source,
    /// Who set it live, and when (unix ms), for [`Source::Store`].
    pub set_by: Option<(String, u64)>,
}

/// A value set live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    value: String,
    by: String,
    at: u64,
}

/// The settings in force.
pub struct Settings {
    store: SharedStore,
    file: PolicyConfig,
    read_through: Arc<AtomicBool>,
    mirror: Arc<AtomicBool>,
    refresh_ms: Arc<AtomicU64>,
    stored: arc_swap::ArcSwap<BTreeMap<String, Stored>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("effective", &self.effective())
            .finish_non_exhaustive()
    }
}

/// The canonical name of setting `key` (`policy.read_through`, `read-through` → `read_through`).
fn canonical(key: &str) -> Result<&'static str, Error> {
    let key = key.trim().trim_start_matches("policy.").replace('-', "_");
    KEYS.into_iter().find(|k| *k == key).ok_or_else(|| {
        Error::Client(format!(
            "`{key}` is not a live setting (these are: {})",
            KEYS.join(", ")
        ))
    })
}

/// The longest refresh interval: beyond it is "never" anyway, and a value near `Duration`'s
/// limit overflowed where the refresh loop adds its jitter (the loop died).
const MAX_REFRESH: Duration = Duration::from_secs(366 * 24 * 3600);

/// `value` checked and written the one way for `key`.
fn normalize(key: &str, value: &str) -> Result<String, Error> {
    let value = value.trim();
    match key {
        "read_through" => match value.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok("on".into()),
            "off" | "false" | "no" | "0" => Ok("off".into()),
            _ => Err(Error::Client(format!(
                "read_through is on or off, not `{value}`"
            ))),
        },
        "mode" => match value.to_ascii_lowercase().as_str() {
            "whitelist" => Ok("whitelist".into()),
            "mirror" => Ok("mirror".into()),
            _ => Err(Error::Client(format!(
                "mode is whitelist or mirror, not `{value}`"
            ))),
        },
        _ => match humantime::parse_duration(value) {
            Ok(d) if d >= Duration::from_secs(1) && d <= MAX_REFRESH => {
                Ok(humantime::format_duration(d).to_string())
            }
            _ => Err(Error::Client(format!(
                "refresh is a duration from a second to a year (30s, 10m, 1h), not `{value}`"
            ))),
        },
    }
}

/// The entry keeping `value` for `key`, set by `by` now (the value checked and normalized).
fn stored(key: &str, value: &str, by: &str) -> Result<Stored, Error> {
    Ok(Stored {
        value: normalize(key, value)?,
        by: by.to_string(),
        at: now_ms(),
    })
}

impl Settings {
    /// The settings of `policy` (the file's), followed in `store`.
    pub fn new(store: SharedStore, policy: &PolicyConfig) -> Self {
        Settings {
            store,
            read_through: Arc::new(AtomicBool::new(policy.read_through)),
            mirror: Arc::new(AtomicBool::new(policy.mode == Mode::Mirror)),
            refresh_ms: Arc::new(AtomicU64::new(policy.refresh.as_millis() as u64)),
            file: policy.clone(),
            stored: arc_swap::ArcSwap::from_pointee(BTreeMap::new()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Whether requests for unlisted packages bring them in (whitelist mode).
    pub fn read_through(&self) -> bool {
        self.read_through.load(Ordering::Relaxed)
    }

    /// The replication policy in force.
    pub fn mode(&self) -> Mode {
        if self.mirror.load(Ordering::Relaxed) {
            Mode::Mirror
        } else {
            Mode::Whitelist
        }
    }

    /// How long a stored packument is served before it is revalidated.
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms.load(Ordering::Relaxed))
    }

    /// The read-through switch, for the whitelist plugin to read on each request.
    pub fn read_through_switch(&self) -> Arc<AtomicBool> {
        self.read_through.clone()
    }

    /// The mirror-mode switch (on: the whitelist is not enforced).
    pub fn mirror_switch(&self) -> Arc<AtomicBool> {
        self.mirror.clone()
    }

    /// The refresh interval in milliseconds, for the packuments to read on each use.
    pub fn refresh_cell(&self) -> Arc<AtomicU64> {
        self.refresh_ms.clone()
    }

    /// A receiver told of every change (the refresher restarts its wait or switches work).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Read the settings kept in the store again and apply them (every `cluster.sync`).
    pub async fn sync(&self) -> Result<(), Error> {
        let stored = self.read().await?.0;
        self.apply(stored);
        Ok(())
    }

    async fn read(&self) -> Result<(BTreeMap<String, Stored>, Expect), Error> {
        let held = self.store.state(STATE_KEY).await?;
        let expect = Expect::from_read(held.as_ref().map(|(_, t)| t));
        let map = match held {
            Some((bytes, _)) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::store(format!("{STATE_KEY} is unreadable: {e}")))?,
            None => BTreeMap::new(),
        };
        Ok((map, expect))
    }

    /// Set `key` to `value` live, by `by`; returns the setting before and after.
    pub async fn set(
        &self,
        key: &str,
        value: &str,
        by: &str,
    ) -> Result<(Effective, Effective), Error> {
        let key = canonical(key)?;
        let entry = stored(key, value, by)?;
        let mut changed = self.edit(vec![(key, Some(entry))], false).await?;
        changed
            .pop()
            .ok_or_else(|| Error::Internal("a live setting was set without a trace".into()))
    }

    /// Set several settings live at once, by `by` (a form that shows them all): every value
    /// is checked before anything is written, so one bad value writes none, and the changes
    /// go in one write. A value equal to the one in force is left as it is (its source too).
    /// Returns each setting changed, before and after.
    pub async fn set_all(
        &self,
        changes: &[(&str, &str)],
        by: &str,
    ) -> Result<Vec<(Effective, Effective)>, Error> {
        let mut entries = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            let key = canonical(key)?;
            entries.push((key, Some(stored(key, value, by)?)));
        }
        self.edit(entries, true).await
    }

    /// Drop the live value of `key`: the file's (or the default) is in force again.
    pub async fn unset(&self, key: &str) -> Result<(Effective, Effective), Error> {
        let key = canonical(key)?;
        let mut changed = self.edit(vec![(key, None)], false).await?;
        changed
            .pop()
            .ok_or_else(|| Error::Internal("a live setting was unset without a trace".into()))
    }

    /// Write `changes` (a value, or `None` to drop it) in one conditional put; with
    /// `skip_same`, values equal to those in force are left out (and nothing is written when
    /// none is left).
    async fn edit(
        &self,
        changes: Vec<(&'static str, Option<Stored>)>,
        skip_same: bool,
    ) -> Result<Vec<(Effective, Effective)>, Error> {
        for _ in 0..32 {
            let (mut map, expect) = self.read().await?;
            self.apply(map.clone());
            let mut before = Vec::new();
            for (key, entry) in &changes {
                let now = self.one(key);
                if skip_same && entry.as_ref().is_some_and(|e| e.value == now.value) {
                    continue;
                }
                match entry {
                    Some(entry) => map.insert(key.to_string(), entry.clone()),
                    None => map.remove(*key),
                };
                before.push(now);
            }
            if before.is_empty() {
                return Ok(Vec::new());
            }
            let bytes = Bytes::from(serde_json::to_vec(&map).unwrap_or_default());
            if let Written::Stored(_) = self.store.put_state(STATE_KEY, bytes, expect).await? {
                self.apply(map);
                return Ok(before
                    .into_iter()
                    .map(|b| {
                        let after = self.one(b.key);
                        (b, after)
                    })
                    .collect());
            }
        }
        Err(Error::store("the live settings kept changing: try again"))
    }

    /// Make `stored` (over the file's values) the settings in force; tells the listeners
    /// when something changed.
    fn apply(&self, stored: BTreeMap<String, Stored>) {
        let value = |key: &str| stored.get(key).map(|s| s.value.as_str());
        let read_through = value("read_through").map_or(self.file.read_through, |v| v == "on");
        let mirror = value("mode").map_or(self.file.mode == Mode::Mirror, |v| v == "mirror");
        let refresh = value("refresh")
            .and_then(|v| humantime::parse_duration(v).ok())
            .unwrap_or(self.file.refresh)
            .as_millis() as u64;
        let changed = self.read_through.swap(read_through, Ordering::Relaxed)
            != read_through
                | (self.mirror.swap(mirror, Ordering::Relaxed) != mirror)
                | (self.refresh_ms.swap(refresh, Ordering::Relaxed) != refresh);
        self.stored.store(Arc::new(stored));
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Setting `key` as in force now.
    fn one(&self, key: &'static str) -> Effective {
        let stored = self.stored.load();
        let set = &self.file.set_in_file;
        let (value, in_file) = match key {
            "read_through" => (
                if self.read_through() { "on" } else { "off" }.to_string(),
                set.read_through,
            ),
            "mode" => (
                match self.mode() {
                    Mode::Whitelist => "whitelist",
                    Mode::Mirror => "mirror",
                }
                .to_string(),
                set.mode,
            ),
            _ => (
                humantime::format_duration(self.refresh()).to_string(),
                set.refresh,
            ),
        };
        let (source, set_by) = match stored.get(key) {
            Some(s) => (Source::Store, Some((s.by.clone(), s.at))),
            None if in_file => (Source::File, None),
            None => (Source::Default, None),
        };
        Effective {
            key,
            value,
            source,
            set_by,
        }
    }

    /// Every live setting as in force now.
    pub fn effective(&self) -> Vec<Effective> {
        KEYS.into_iter().map(|k| self.one(k)).collect()
    }
}
