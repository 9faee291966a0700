//! The composition root: builds the store, the upstream client, the plugin host and the core's
//! parts from a configuration, and wires them together. The server, the proxy and the command
//! line all start here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_plugin_whitelist::Whitelist;

use crate::auth::Auth;
use crate::config::{Config, Mode};
use crate::core::audit_log::{Action, AuditEntry, AuditLog};
use crate::core::fleet::{Fleet, News, SharedAdditions};
use crate::core::packuments::{OnChange, Packuments};
use crate::core::publish::Publisher;
use crate::core::recent::Recent;
use crate::core::renders::Renders;
use crate::core::sessions::Sessions;
use crate::core::settings::Settings;
use crate::core::tarballs::{TarballIndexes, Tarballs};
use crate::core::PrivateNames;
use crate::observe::{Metrics, MirrorStatus, Snapshot};
use crate::plugins::Host;
use crate::search::SearchIndex;
use crate::store::{HotCache, Instrumented, Measured, SharedStore};
use crate::upstream::Upstream;

/// Everything a running sluice is made of.
pub struct App {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// The persistent store (counted: see `store_ops`; its usage measured in the background).
    pub store: SharedStore,
    /// Counts of the store's operations.
    pub store_ops: Arc<Instrumented>,
    /// The upstream client.
    pub upstream: Upstream,
    /// The plugins.
    pub host: Arc<Host>,
    /// Packuments: get, revalidate, conditional merge.
    pub packuments: Arc<Packuments>,
    /// What clients are sent for packuments.
    pub renders: Arc<Renders>,
    /// Tarballs: refusal, the unlisted re-read, streams.
    pub tarballs: Arc<Tarballs>,
    /// The in-memory cache of renders and small tarballs.
    pub hot: HotCache,
    /// Request counters.
    pub metrics: Arc<Metrics>,
    /// The replication follower's progress (mirror mode).
    pub mirror: Arc<Mutex<MirrorStatus>>,
    /// When the last scheduled refresh cycle finished (unix ms; 0: none yet).
    pub last_refresh_ms: AtomicU64,
    /// Relayed answers (signing keys, attestations), kept for a while.
    pub relayed: moka::future::Cache<String, (u16, String, Bytes)>,
    /// Until when this node holds the lease for background work (see `jobs::leader`), in
    /// milliseconds of [`crate::memory::monotonic_ms`]; 0: it does not.
    pub leader_until: AtomicU64,
    /// The fleet's shared state (with `storage.backend = "s3"`).
    pub fleet: Option<Arc<Fleet>>,
    indexes: TarballIndexes,
    /// Private packages: publish, dist-tags, deprecate.
    pub publisher: Arc<Publisher>,
    /// The one rule for "is this name published here?" (`[publish]`): every path that could
    /// reach upstream asks it.
    pub private: Arc<PrivateNames>,
    /// Users and tokens.
    pub auth: Arc<Auth>,
    /// The audit log of writes and admin actions.
    pub audit: Arc<AuditLog>,
    /// The settings changed live (read-through, mode, refresh) over the file's.
    pub settings: Arc<Settings>,
    /// The console's sessions and npm's pending web logins.
    pub sessions: Arc<Sessions>,
    /// The packages stored lately on this node, for the console.
    pub recent: Arc<Recent>,
    /// The search index beside the store (kept by the server's background task).
    pub search: Arc<SearchIndex>,
    /// The store's private package names as last listed (a listing walks the store's whole
    /// index: it runs in the background, never on a scrape of the metrics or status).
    private_listed: Arc<Mutex<PrivateListing>>,
}

/// The store's private package names as last listed.
#[derive(Default)]
struct PrivateListing {
    /// When the last listing started, and [`Publisher::writes`] then; `None`: none yet.
    started: Option<(Instant, u64)>,
    /// A listing is under way.
    running: bool,
    /// What the last listing that ended found.
    names: Vec<String>,
}

/// In a fleet, how old a listing of private names may get (another node's publish shows
/// within this time); this node's publishes are listed again at once.
const PRIVATE_LISTING_EVERY: Duration = Duration::from_secs(30);

/// In a fleet, how old the measure of the store's usage may get (other nodes write to it).
const USAGE_EVERY_IN_A_FLEET: Duration = Duration::from_secs(60);

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("store", &self.store)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// The longest user name there is (`auth::valid_user_name`), in bytes.
const MAX_USER_NAME: usize = 214;

/// `text` cut to at most `max` bytes, at a character's boundary.
fn at_most(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Have every failed login (npm's, Basic credentials, the console's, one-time codes) recorded
/// in `audit` with the name tried and the address.
fn audit_failed_logins(auth: &Auth, audit: &Arc<AuditLog>) {
    let audit = audit.clone();
    auth.on_failure(Box::new(move |user, address, why| {
        let audit = audit.clone();
        // The name is whatever an outsider typed (a form field up to 64 KiB): only what a user
        // name can be is kept, as every entry rewrites its chunk of the log.
        let user = at_most(user, MAX_USER_NAME);
        Box::pin(async move {
            let mut entry = AuditEntry::new(None, None, Action::LoginFailure, user, why);
            entry.address = address;
            audit.note(entry).await;
        })
    }));
}

impl App {
    /// Build sluice for `config` on its configured store (`storage.dir`).
    pub fn build(config: Config) -> anyhow::Result<Arc<App>> {
        let store = crate::store::open(&config)?;
        Self::with_store(config, store)
    }

    /// Build sluice for `config` on `store` (tests wrap the configured one to inject faults).
    pub fn with_store(config: Config, store: SharedStore) -> anyhow::Result<Arc<App>> {
        crate::crypto::install_crypto_provider();
        let store_ops = Arc::new(Instrumented::new(store));
        // Status and metrics read the usage as last measured, in the background.
        let in_a_fleet = config.storage.backend == crate::config::Backend::S3;
        let store: SharedStore = Arc::new(Measured::new(
            store_ops.clone(),
            in_a_fleet.then_some(USAGE_EVERY_IN_A_FLEET),
        ));
        let settings = Arc::new(Settings::new(store.clone(), &config.policy));
        let host = Arc::new(Host::build_live(
            &config,
            settings.read_through_switch(),
            settings.mirror_switch(),
        )?);
        let config = Arc::new(config);
        let upstream = Upstream::new(&config.upstream)?;
        // Entries live at most the refresh interval, as the live setting says now.
        let hot = HotCache::with_live_ttl(
            config.storage.memory,
            settings.refresh_cell(),
            Duration::from_secs(1),
        );
        let fleet = (config.storage.backend == crate::config::Backend::S3)
            .then(|| Arc::new(Fleet::new(store.clone(), &config.cluster.node)));
        if let (Some(fleet), Some(list)) = (&fleet, host.whitelist()) {
            list.share_additions(Arc::new(SharedAdditions {
                fleet: fleet.clone(),
            }));
        }
        // Derived caches hear of every stored document that changed; so do the fleet and
        // the search index.
        let indexes = TarballIndexes::default();
        let recent = Arc::new(Recent::default());
        let search = Arc::new(SearchIndex::new(&config.storage.dir));
        let on_change: Vec<OnChange> = {
            let hot = hot.clone();
            let indexes = indexes.clone();
            let fleet = fleet.clone();
            let recent = recent.clone();
            let search = search.clone();
            vec![Box::new(move |name: &str| {
                recent.note(name);
                hot.invalidate_packument(name);
                indexes.invalidate(name);
                if let Some(fleet) = &fleet {
                    fleet.changed(name);
                }
                search.changed(name);
            })]
        };
        let private = Arc::new(config.publish.names.clone());
        let packuments = Arc::new(Packuments::new(
            store.clone(),
            upstream.clone(),
            settings.refresh_cell(),
            on_change,
            private.clone(),
        ));
        let publisher = Arc::new(Publisher::new(
            packuments.clone(),
            store.clone(),
            config.publish.clone(),
            config.server.public_url.clone(),
        ));
        let auth = Arc::new(
            Auth::new(
                &config.auth.users,
                store.clone(),
                config.auth.adduser,
                config.cluster.sync,
            )
            .map_err(|e| anyhow::anyhow!("{}: auth.users: {e}", config.source))?,
        );
        let audit = Arc::new(AuditLog::new(store.clone()));
        audit_failed_logins(&auth, &audit);
        let renders = Arc::new(Renders::new(
            packuments.clone(),
            host.clone(),
            hot.clone(),
            config.server.public_url.clone(),
        ));
        let tarballs = Arc::new(Tarballs::new(
            packuments.clone(),
            host.clone(),
            store.clone(),
            upstream.clone(),
            (hot.clone(), config.storage.hot_tarball_max),
            indexes.clone(),
        ));
        let sessions = Arc::new(Sessions::new(store.clone()));
        Ok(Arc::new(App {
            store,
            store_ops,
            upstream,
            host,
            packuments,
            renders,
            tarballs,
            hot,
            metrics: Arc::default(),
            mirror: Arc::default(),
            last_refresh_ms: AtomicU64::new(0),
            leader_until: AtomicU64::new(0),
            fleet,
            indexes,
            publisher,
            private,
            auth,
            audit,
            settings,
            sessions,
            recent,
            search,
            private_listed: Arc::default(),
            relayed: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            config,
        }))
    }

    /// Whether this node leads background work now.
    pub fn is_leader(&self) -> bool {
        crate::memory::monotonic_ms() < self.leader_until.load(Ordering::Relaxed)
    }

    /// The live whitelist, in whitelist mode (as the live setting says now).
    pub fn whitelist(&self) -> Option<&Arc<Whitelist>> {
        match self.settings.mode() {
            Mode::Whitelist => self.host.whitelist(),
            Mode::Mirror => None,
        }
    }

    /// Read what other nodes (or `sluice settings`, `sluice user`) changed in the store: the
    /// live settings and the stored users. Every `cluster.sync`, in a fleet or not.
    pub async fn sync_live(&self) {
        if let Err(error) = self.settings.sync().await {
            tracing::warn!(%error, "cannot read the live settings");
        }
        if let Err(error) = self.auth.sync_users().await {
            tracing::warn!(%error, "cannot read the users kept in the store");
        }
    }

    /// One round of fleet sync: publish what this node changed, drop what other nodes changed
    /// from the caches, and read the shared whitelist. Does nothing outside a fleet.
    pub async fn sync_fleet(&self) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        match fleet.publish().await {
            // The search index follows the journal from its own position: it reads it again.
            Ok(true) => self.search.journal_moved(),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "fleet: cannot publish this node's changes"),
        }
        match fleet.news().await {
            Ok(News::Names(names)) => {
                for name in &names {
                    self.store.forget(name);
                    self.packuments.changed_elsewhere(name);
                    self.hot.invalidate_packument(name);
                    self.indexes.invalidate(name);
                }
                if !names.is_empty() {
                    tracing::debug!(?names, "fleet: changed by other nodes");
                    self.search.journal_moved();
                }
            }
            Ok(News::Everything) => {
                self.store.forget_all();
                self.hot.invalidate_all();
                self.indexes.invalidate_all();
                self.search.journal_moved();
            }
            Err(error) => tracing::warn!(%error, "fleet: cannot read the change journal"),
        }
        if let Some(list) = self.host.whitelist() {
            match fleet.shared_whitelist().await {
                Ok(names) => list.set_shared(&names),
                Err(error) => tracing::warn!(%error, "fleet: cannot read the shared whitelist"),
            }
        }
    }

    /// The private packages the store holds, as last listed. Lists the store (in the
    /// background) only when `[publish]` names something, at first, after this node
    /// published, and in a fleet when the listing got old: a request never waits for it.
    fn private_names(&self) -> Vec<String> {
        if self.private.is_empty() {
            return Vec::new();
        }
        let writes = self.publisher.writes();
        let mut listed = self
            .private_listed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = !listed.running
            && match listed.started {
                None => true,
                Some((at, seen)) => {
                    seen != writes
                        || (self.fleet.is_some() && at.elapsed() >= PRIVATE_LISTING_EVERY)
                }
            };
        if due {
            listed.running = true;
            listed.started = Some((Instant::now(), writes));
            let (store, private) = (self.store.clone(), self.private.clone());
            let listing = self.private_listed.clone();
            tokio::spawn(async move {
                let names = crate::store::all_names(store.as_ref()).await;
                let mut listed = listing.lock().unwrap_or_else(|p| p.into_inner());
                listed.running = false;
                match names {
                    Ok(names) => {
                        listed.names = names
                            .into_iter()
                            .filter(|name| private.contains(name))
                            .collect();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot list the store's private packages");
                    }
                }
            });
        }
        listed.names.clone()
    }

    /// sluice's state now, for metrics and status.
    pub async fn snapshot(&self) -> Snapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let read_through = self.settings.read_through();
        let mirror_mode = self.settings.mode() == Mode::Mirror;
        let search = self.search.status();
        Snapshot {
            node: self.config.cluster.node.clone(),
            store: match self.config.storage.backend {
                crate::config::Backend::Disk => "disk",
                crate::config::Backend::S3 => "s3",
            },
            leader: self.is_leader(),
            mode: match self.settings.mode() {
                Mode::Whitelist if read_through => "whitelist + read-through",
                Mode::Whitelist => "whitelist",
                Mode::Mirror => "mirror",
            },
            mirror_mode,
            read_through,
            upstream: crate::config::redact_url(&self.config.upstream.registry),
            upstream_failing: self.upstream.is_open(),
            upstream_requests: load(&self.upstream.stats.requests),
            upstream_failures: load(&self.upstream.stats.failures),
            whitelist: self.whitelist().map(|w| w.snapshot().len()),
            hot_bytes: self.hot.weighted_size(),
            hot_limit: self.config.storage.memory,
            store_bytes: match self.store.usage().await {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(%error, "cannot measure the store");
                    0
                }
            },
            stale: load(&self.packuments.stats.stale),
            revalidations: load(&self.packuments.stats.revalidations),
            last_refresh_ms: load(&self.last_refresh_ms),
            store_ops: self.store_ops.stats(),
            private: self.private_names(),
            unlisted_tarballs: self.tarballs.unlisted_count(),
            search_state: search.state,
            search_documents: search.documents,
            mirror: mirror_mode.then(|| {
                self.mirror
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            }),
        }
    }
}
