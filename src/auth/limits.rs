//! Failed-login limits. Failures are counted per (user, address) pair, per address and per
//! user, over the last [`FAILURE_WINDOW`]:
//! - a pair that failed [`MAX_FAILURES`] times is locked out: whoever guesses from there stops,
//!   while the user's own logins from anywhere else still work (an attacker cannot lock a user
//!   out by failing on purpose);
//! - an address that failed [`MAX_ADDRESS_FAILURES`] times, across users, is locked out too
//!   (one address trying a few passwords on many names);
//! - a user is never locked, but every failed answer waits longer the more the user's logins
//!   failed lately from all addresses together, so rotating addresses still guesses slowly.

use std::time::Duration;

use super::Auth;

/// Told of each failed login: the user tried, the address, why it failed.
pub type FailureHook = Box<
    dyn Fn(String, Option<String>, String) -> futures::future::BoxFuture<'static, ()> + Send + Sync,
>;

/// Failed logins allowed per (user, address) within [`FAILURE_WINDOW`].
const MAX_FAILURES: u32 = 10;
/// Failed logins allowed per address, across users, within [`FAILURE_WINDOW`]; above
/// [`MAX_FAILURES`] so that one person mistyping behind a shared address does not lock out the
/// others there.
const MAX_ADDRESS_FAILURES: u32 = 30;
/// How long failed logins are remembered.
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// The address counted for a login whose client address is unknown.
const NO_ADDRESS: &str = "-";

/// How long the answer to the `n`th failed login in a row waits.
pub fn failure_delay(n: u32) -> Duration {
    Duration::from_millis(100 * u64::from(n)).min(Duration::from_secs(3))
}

/// Failed password checks in the last minutes, by `pair:`, `addr:` and `user:` keys.
pub(super) fn failures() -> moka::sync::Cache<String, u32> {
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(FAILURE_WINDOW)
        .build()
}

fn pair_key(user: &str, address: Option<&str>) -> String {
    // `\n` is in neither a user name nor an address, so no two pairs share a key.
    format!("pair:{user}\n{}", address.unwrap_or(NO_ADDRESS))
}

impl Auth {
    /// Whether too many logins of `user` failed lately from `address`, or too many of any user
    /// from `address`: then none is tried from there until the window passes.
    pub fn locked_out(&self, user: &str, address: Option<&str>) -> bool {
        let count = |key: String| self.failures.get(&key).unwrap_or(0);
        count(pair_key(user, address)) >= MAX_FAILURES
            || address.is_some_and(|a| count(format!("addr:{a}")) >= MAX_ADDRESS_FAILURES)
    }

    /// Count a failed login of `user` from `address` (`why` it failed, for the audit log),
    /// tell the failure hook, and wait before its answer.
    pub async fn failed(&self, user: &str, address: Option<&str>, why: &str) {
        let delay = self.count_failure(user, address);
        if let Some(hook) = self.on_failure.get() {
            hook(
                user.to_string(),
                address.map(str::to_string),
                why.to_string(),
            )
            .await;
        }
        tokio::time::sleep(delay).await;
    }

    /// Have `hook` told of every failed login (user, address, why): the audit log.
    pub fn on_failure(&self, hook: FailureHook) {
        let _ = self.on_failure.set(hook);
    }

    /// Count a failed login of `user` from `address`; returns how long its answer waits: 100 ms
    /// for each recent failure of the pair, of the address or of the user from anywhere
    /// (whichever is most), up to 3 s, so guessing is slow long before any lockout.
    pub(super) fn count_failure(&self, user: &str, address: Option<&str>) -> Duration {
        let mut most = 0;
        for key in [
            Some(pair_key(user, address)),
            Some(format!("user:{user}")),
            address.map(|a| format!("addr:{a}")),
        ]
        .into_iter()
        .flatten()
        {
            let n = self.failures.get(&key).unwrap_or(0) + 1;
            self.failures.insert(key, n);
            most = most.max(n);
        }
        failure_delay(most)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn auth() -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(crate::store::DiskStore::new(dir.path().join("data")));
        let auth = Auth::new(&dir.path().join("users"), store, false, FAILURE_WINDOW).unwrap();
        (dir, auth)
    }

    #[test]
    fn guesses_from_many_addresses_slow_down_but_never_lock_the_user() {
        let (_dir, auth) = auth();
        let mut delays = Vec::new();
        for i in 0..40 {
            let address = format!("10.0.0.{i}");
            delays.push(auth.count_failure("alice", Some(&address)));
            assert!(!auth.locked_out("alice", Some(&address)), "after {i}");
        }
        assert!(!auth.locked_out("alice", Some("10.0.1.1")));
        // Each answer waited longer than the one before, up to the cap.
        assert!(delays
            .windows(2)
            .all(|w| w[0] < w[1] || w[1] == failure_delay(u32::MAX)));
        assert_eq!(delays.last(), Some(&failure_delay(u32::MAX)));
    }

    #[test]
    fn guesses_from_one_address_lock_that_pair_and_then_that_address() {
        let (_dir, auth) = auth();
        for _ in 0..MAX_FAILURES {
            assert!(!auth.locked_out("alice", Some("10.0.0.1")));
            auth.count_failure("alice", Some("10.0.0.1"));
        }
        assert!(auth.locked_out("alice", Some("10.0.0.1")));
        assert!(!auth.locked_out("alice", Some("10.0.0.2")));
        assert!(!auth.locked_out("bob", Some("10.0.0.1")));
        // A few guesses at each of many names from one address lock that address.
        for n in 0..MAX_ADDRESS_FAILURES - MAX_FAILURES {
            auth.count_failure(&format!("user{n}"), Some("10.0.0.1"));
        }
        assert!(auth.locked_out("bob", Some("10.0.0.1")));
        assert!(!auth.locked_out("bob", Some("10.0.0.2")));
    }
}
