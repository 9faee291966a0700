//! The threads queries run on: a few of their own, at a lower scheduling priority (nice 10),
//! so that on a busy machine the scheduler runs a packument or tarball answer before a search
//! (a query on tokio's blocking pool competed with answers as an equal, and a hit's p99 rose
//! while four clients searched).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// How much lower than the server's own threads a query thread runs (nice values: 0 to 19).
const NICENESS: libc::c_int = 10;

/// A fixed set of query threads, started at the first query; they end when this is dropped.
pub(crate) struct QueryThreads {
    count: usize,
    jobs: OnceLock<mpsc::Sender<Job>>,
}

impl QueryThreads {
    /// `count` threads (at least one).
    pub(crate) fn new(count: usize) -> Self {
        Self {
            count: count.max(1),
            jobs: OnceLock::new(),
        }
    }

    /// Run `work` on a query thread; `None` if it panicked.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        self.jobs().send(job).ok()?;
        answered.await.ok()
    }

    fn jobs(&self) -> &mpsc::Sender<Job> {
        self.jobs.get_or_init(|| {
            let (jobs, queue) = mpsc::channel::<Job>();
            let queue = Arc::new(Mutex::new(queue));
            for _ in 0..self.count {
                let queue = queue.clone();
                let spawned = std::thread::Builder::new()
                    .name("sluice-search".into())
                    .spawn(move || serve(&queue));
                if let Err(error) = spawned {
                    tracing::error!(%error, "search: cannot start a query thread");
                }
            }
            jobs
        })
    }
}

fn serve(queue: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(job) = job else { return };
        // A panicking query drops its answer (the caller hears `None`); the thread goes on.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Lower this thread's priority (Linux keeps a nice value per thread).
fn lower_priority() {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let outcome = unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, NICENESS)
    };
    if outcome != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "search: query thread keeps its priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_query_runs_at_a_lower_priority_and_a_panic_spares_the_thread() {
        let threads = QueryThreads::new(1);
        let nice = threads
            .run(|| {
                // SAFETY: as above.
                unsafe {
                    let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::getpriority(libc::PRIO_PROCESS, thread)
                }
            })
            .await;
        assert!(nice.is_some_and(|n| n >= NICENESS), "nice {nice:?}");
        let panicked: Option<()> = threads.run(|| panic!("a query panics")).await;
        assert_eq!(panicked, None);
        assert_eq!(threads.run(|| 2 + 2).await, Some(4));
    }
}
