//! Blocking work, off the async threads, on a fixed set of threads of its own.
//!
//! tokio's blocking pool starts a thread for each blocking call that finds none idle (up to
//! 512) and keeps it for ten seconds. Under a burst that means a thread per request: a few
//! thousand reconnects left ~190 threads behind, each read with a SQLite connection of its
//! own (three file descriptors, from the same per-process limit as the clients' sockets),
//! and a hundred logins kept argon2's 19 MiB on each of dozens of threads. [`Workers`] has
//! exactly the threads it was started with, each with its own state (a read connection, or
//! nothing), and a short queue; callers past that wait their turn without blocking.

use std::panic::AssertUnwindSafe;

/// A job and the state of the thread that runs it.
type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// The worker threads have all ended (the server is shutting down), or a job panicked.
#[derive(Debug, thiserror::Error)]
#[error("the {0} threads are not running the job")]
pub struct Stopped(&'static str);

/// A fixed set of threads, each owning an `S`, that run jobs in the order they were queued.
pub struct Workers<S> {
    jobs: flume::Sender<Job<S>>,
    name: &'static str,
}

impl<S> Clone for Workers<S> {
    fn clone(&self) -> Self {
        Workers {
            jobs: self.jobs.clone(),
            name: self.name,
        }
    }
}

impl<S: Send + 'static> Workers<S> {
    /// Starts one thread per state in `states` (at least one state is needed), named
    /// `name-0`, `name-1`, …; they end when the last clone of the returned value is dropped.
    pub fn new(name: &'static str, states: Vec<S>) -> std::io::Result<Self> {
        if states.is_empty() {
            return Err(std::io::Error::other(format!(
                "no {name} threads asked for"
            )));
        }
        // A few jobs per thread wait in the queue, so a thread finds its next job at once;
        // further callers wait (asynchronously) for room.
        let (jobs, queue) = flume::bounded::<Job<S>>(states.len() * 4);
        for (i, mut state) in states.into_iter().enumerate() {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while let Ok(job) = queue.recv() {
                        // A panicking job loses its answer (the caller sees `Stopped`), not
                        // the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut state)));
                    }
                })?;
        }
        Ok(Workers { jobs, name })
    }

    /// Runs `f` on one of the threads and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Result<T, Stopped> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job<S> = Box::new(move |state| {
            let _ = tx.send(f(state));
        });
        let stopped = Stopped(self.name);
        if self.jobs.send_async(job).await.is_err() {
            return Err(stopped);
        }
        rx.await.map_err(|_| stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_thread_keeps_its_state_and_a_panic_costs_only_its_job() {
        let workers = Workers::new("test", vec![0u32]).unwrap();
        for expected in 1..=3 {
            let seen = workers.run(|n| {
                *n += 1;
                *n
            });
            assert_eq!(seen.await.unwrap(), expected);
        }
        let panicked = workers.run(|_| panic!("a job that fails"));
        assert!(panicked.await.is_err());
        // The one thread survived, with its state.
        assert_eq!(workers.run(|n| *n).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn no_threads_is_an_error() {
        assert!(Workers::<()>::new("test", Vec::new()).is_err());
    }
}
