//! Single-flight: concurrent callers asking for the same key share one run of the work.
//!
//! The work runs in its own task, so it completes (and stores its result) even when every
//! caller that asked for it has gone away. Work that panics is answered as an internal error
//! and leaves no entry behind: the next caller starts afresh.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

type Flight<V> = Shared<BoxFuture<'static, V>>;

/// A result that can tell that its work failed (panicked, or was cancelled) instead.
pub trait Failed {
    /// The result of work that failed for `why`.
    fn failed(why: String) -> Self;
}

/// Takes a flight off its table when the work ends, however it ends (a panic unwinding
/// through the task included).
struct Landing<K: Eq + Hash, V> {
    table: Arc<Mutex<HashMap<K, Flight<V>>>>,
    key: Option<K>,
}

impl<K: Eq + Hash, V> Drop for Landing<K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.table
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&key);
        }
    }
}

/// A table of in-flight work by key.
pub struct SingleFlight<K, V: Clone> {
    flights: Arc<Mutex<HashMap<K, Flight<V>>>>,
}

impl<K, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + Failed + 'static,
{
    /// Run `work` for `key`, or join the run already in flight for it.
    ///
    /// Returns the shared result and whether this caller started the work.
    pub async fn run<F>(&self, key: K, work: F) -> (V, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (flight, leader) = self.start(key, work);
        (flight.await, leader)
    }

    /// Start `work` for `key` (it runs in its own task), or join the run in flight for it;
    /// `work` is dropped unstarted when another run is in flight.
    ///
    /// Returns the run's result to await and whether this caller started it.
    pub fn start<F>(&self, key: K, work: F) -> (Shared<BoxFuture<'static, V>>, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(flight) = flights.get(&key) {
            return (flight.clone(), false);
        }
        let landing = Landing {
            table: self.flights.clone(),
            key: Some(key.clone()),
        };
        let task = tokio::spawn(async move {
            let _landing = landing;
            work.await
        });
        let flight: Flight<V> = async move {
            match task.await {
                Ok(value) => value,
                Err(e) => {
                    let why = match e.try_into_panic() {
                        Ok(panic) => panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".to_string()),
                        Err(e) => e.to_string(),
                    };
                    tracing::error!(error = %why, "shared work failed");
                    V::failed(format!("the work for this request failed: {why}"))
                }
            }
        }
        .boxed()
        .shared();
        flights.insert(key, flight.clone());
        (flight, true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A work's own error, as the core's is.
    #[derive(Debug, Clone, PartialEq)]
    enum Broke {
        Internal(String),
    }

    impl<T> Failed for Result<T, Broke> {
        fn failed(why: String) -> Self {
            Err(Broke::Internal(why))
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights: Arc<SingleFlight<&'static str, Result<usize, Broke>>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..50 {
            let flights = flights.clone();
            let runs = runs.clone();
            handles.push(tokio::spawn(async move {
                flights
                    .run("k", async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(runs.fetch_add(1, Ordering::SeqCst) + 41)
                    })
                    .await
                    .0
            }));
        }
        for handle in handles {
            assert_eq!(handle.await.unwrap().unwrap(), 41);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panicking_flight_answers_internal_and_leaves_no_entry() {
        let flights: SingleFlight<&'static str, Result<usize, Broke>> = SingleFlight::default();
        let (first, second) = tokio::join!(
            flights.run("k", async {
                tokio::task::yield_now().await;
                let broken: Result<usize, Broke> = Err(Broke::Internal("never answered".into()));
                if broken.is_err() {
                    panic!("the work broke");
                }
                broken
            }),
            flights.run("k", async { Ok(1) }),
        );
        for (value, _) in [first, second] {
            match value {
                Err(Broke::Internal(why)) => assert!(why.contains("the work broke")),
                other => panic!("not an internal error: {other:?}"),
            }
        }
        assert!(
            flights.flights.lock().unwrap().is_empty(),
            "an entry stayed"
        );
        // The next caller runs its own work.
        let (value, leader) = flights.run("k", async { Ok(2) }).await;
        assert!(leader && matches!(value, Ok(2)));
    }
}
