//! Users, tokens and credentials → identity.
//!
//! Users live in a file an admin edits (`auth.users`: one `name:<argon2id PHC string>` a line,
//! optionally followed by `:<email>` and `:admin`; hot-reloaded; `sluice user add|passwd|remove`
//! edit it): [`users`]; and in the store, made from the console so a fleet shares them, with
//! password resets and roles granted there: [`directory`]. A user may enroll a second factor
//! (TOTP and recovery codes): [`two_factor`]. Tokens are 256 random bits, shown once and stored only as their sha256 through
//! the store's state objects, so a fleet shares them: [`tokens`]. Requests carry
//! `Authorization: Bearer <token>` or `Basic base64(user:password)`: [`identity`]. Failed
//! logins are slowed and then locked out: [`limits`].

mod directory;
mod identity;
mod limits;
mod tokens;
mod two_factor;
mod users;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest as _;
use sluice_plugin_api::live::LiveFile;

pub use directory::{StoredUser, StoredUsers, UserSource, UserSummary};
pub use identity::{AuthError, Identity};
pub use limits::{failure_delay, FailureHook};
pub use tokens::{address_allowed, parse_cidr, TokenInfo};
pub use two_factor::{Begun, Enrolled};
pub use users::{
    edit_users, hash_password, load_users, users_file_exposed, valid_email, valid_user_name, User,
    Users,
};

use crate::store::SharedStore;

/// The users file and the tokens.
pub struct Auth {
    users: Arc<LiveFile<Users>>,
    /// The store's users as last read ([`Auth::sync_users`]).
    stored: arc_swap::ArcSwap<StoredUsers>,
    /// Whether the store's users were read once (the first credential checked reads them).
    synced: std::sync::atomic::AtomicBool,
    store: SharedStore,
    /// Tokens seen recently (hash → info), so a request does not read the store each time; a
    /// revocation elsewhere in a fleet takes effect within this cache's lifetime.
    seen: moka::sync::Cache<String, Option<TokenInfo>>,
    /// Passwords verified recently (sha256 of user, stored hash and password): argon2 is slow
    /// on purpose.
    verified: moka::sync::Cache<String, ()>,
    /// Failed password checks per user, address and pair in the last minutes.
    failures: moka::sync::Cache<String, u32>,
    /// Told of every failed login (the audit log).
    on_failure: std::sync::OnceLock<FailureHook>,
    /// Whether a login for an unknown name creates the user.
    pub adduser: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.path())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The users in `users`, tokens in `store`; `sync` bounds how long a revoked token still
    /// works on another node.
    pub fn new(
        users: &Path,
        store: SharedStore,
        adduser: bool,
        sync: Duration,
    ) -> Result<Self, String> {
        if let Some(warning) = users_file_exposed(users) {
            tracing::warn!("{warning}");
        }
        Ok(Self {
            users: Arc::new(load_users(users)?),
            stored: arc_swap::ArcSwap::from_pointee(StoredUsers::new()),
            synced: std::sync::atomic::AtomicBool::new(false),
            store,
            seen: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(sync)
                .build(),
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            failures: limits::failures(),
            on_failure: std::sync::OnceLock::new(),
            adduser,
        })
    }
}

fn sha256_hex(text: &str) -> String {
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
