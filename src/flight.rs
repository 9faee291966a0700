//! Single-flight: concurrent callers asking for the same key share one run of the work.
//!
//! The work runs in its own task, so it completes (and stores its result) even when every
//! caller that asked for it has gone away.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

type Flight<V> = Shared<BoxFuture<'static, V>>;

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
    V: Clone + Send + Sync + 'static,
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
        let table = self.flights.clone();
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            let value = work.await;
            table
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&task_key);
            value
        });
        let flight: Flight<V> = async move {
            match task.await {
                Ok(value) => value,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
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

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights: Arc<SingleFlight<&'static str, usize>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..50 {
            let flights = flights.clone();
            let runs = runs.clone();
            handles.push(tokio::spawn(async move {
                flights
                    .run("k", async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 41
                    })
                    .await
                    .0
            }));
        }
        for handle in handles {
            assert_eq!(handle.await.unwrap(), 41);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
