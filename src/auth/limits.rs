//! Failed-login limits: each failure slows its answer, and too many lock further tries out for
//! a while, so passwords cannot be guessed at speed.

use std::time::Duration;

use super::Auth;

/// Failed logins allowed per user name or address within [`FAILURE_WINDOW`].
const MAX_FAILURES: u32 = 10;
/// How long failed logins are remembered.
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// How long the answer to the `n`th failed login in a row waits.
pub fn failure_delay(n: u32) -> Duration {
    Duration::from_millis(100 * u64::from(n)).min(Duration::from_secs(3))
}

/// Failed password checks per user name (and per client address) in the last minutes.
pub(super) fn failures() -> moka::sync::Cache<String, u32> {
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(FAILURE_WINDOW)
        .build()
}

impl Auth {
    /// Whether too many logins failed lately for `user` or from `address`: then none is tried
    /// until the window passes (no unbounded guessing).
    pub fn locked_out(&self, user: &str, address: Option<&str>) -> bool {
        let over = |key: String| self.failures.get(&key).is_some_and(|n| n >= MAX_FAILURES);
        over(format!("user:{user}")) || address.is_some_and(|a| over(format!("addr:{a}")))
    }

    /// Count a failed login of `user` from `address`, and wait before its answer: the more
    /// failures lately for that user or address, the longer (100 ms each, up to 3 s), so
    /// guessing is slowed long before the lockout.
    pub async fn failed(&self, user: &str, address: Option<&str>) {
        let mut most = 0;
        for key in [
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
        tokio::time::sleep(failure_delay(most)).await;
    }
}
