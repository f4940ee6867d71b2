//! The one contract every background worker of the daemon keeps: a name, and a run that
//! works until its cancellation token is cancelled. The daemon starts every worker the
//! same way and joins them all, so adding one is adding it to a list.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::tenant::TenantId;

/// A background worker, not started yet.
pub struct Worker {
    name: &'static str,
    run: Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>,
}

impl Worker {
    /// `run` is given the token that stops it, and must return once it is cancelled.
    pub fn new<F, Fut>(name: &'static str, run: F) -> Worker
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Worker {
            name,
            run: Box::new(move |stop| Box::pin(run(stop))),
        }
    }

    /// The same worker, working in `tenant`'s scope (see [`crate::tasks`]).
    pub fn in_tenant(self, tenant: &TenantId) -> Worker {
        let (tenant, run) = (tenant.clone(), self.run);
        Worker::new(self.name, move |stop| async move {
            crate::tasks::in_tenant(&tenant, run(stop)).await
        })
    }
}

/// Workers started by [`Running::start`].
pub struct Running(Vec<(&'static str, JoinHandle<()>)>);

impl Running {
    /// Spawns each worker with a clone of `stop`.
    pub fn start(workers: Vec<Worker>, stop: &CancellationToken) -> Running {
        Running(
            workers
                .into_iter()
                .map(|worker| (worker.name, crate::tasks::spawn((worker.run)(stop.clone()))))
                .collect(),
        )
    }

    /// Waits for every worker to end (after `stop` was cancelled), for `grace` at most;
    /// one that panicked is logged by name and does not keep the others from being
    /// waited for. A worker still busy after `grace` (a bulk item waiting its turn at a
    /// saturated budget, say) is abandoned: dropped where it waits, as a crash would
    /// drop it, and what it had under way resumes at the next start, as after a crash.
    pub async fn join(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for (name, mut task) in self.0 {
            let ended = match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(ended) => ended,
                Err(_) => {
                    tracing::warn!(
                        ?grace,
                        "{name} did not stop in time; abandoned, what it had under way \
                         resumes at the next start"
                    );
                    task.abort();
                    // Awaited, so it is dropped before the database closes under it.
                    task.await
                }
            };
            match ended {
                Err(e) if e.is_panic() => tracing::error!(error = %e, "{name} ended abnormally"),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn every_worker_runs_until_stopped_and_a_panicking_one_does_not_stop_the_join() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let worker = |name| {
            let stopped = stopped.clone();
            Worker::new(name, move |stop: CancellationToken| async move {
                stop.cancelled().await;
                stopped.fetch_add(1, Ordering::SeqCst);
            })
        };
        let panicking = Worker::new("panics", |_stop| async { panic!("a worker's bug") });
        let stop = CancellationToken::new();
        let running = Running::start(vec![worker("one"), panicking, worker("two")], &stop);
        tokio::task::yield_now().await;
        assert_eq!(stopped.load(Ordering::SeqCst), 0, "both work until stopped");
        stop.cancel();
        running.join(Duration::from_secs(5)).await;
        assert_eq!(stopped.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_still_busy_after_the_grace_is_abandoned_and_the_others_joined() {
        let dropped = Arc::new(AtomicUsize::new(0));
        struct CountsDrop(Arc<AtomicUsize>);
        impl Drop for CountsDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let guard = CountsDrop(dropped.clone());
        // Ignores its stop token: an item waiting minutes for its turn at the budget.
        let stubborn = Worker::new("stubborn", move |_stop| async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(3_600)).await;
        });
        let prompt = Worker::new("prompt", |stop: CancellationToken| async move {
            stop.cancelled().await;
        });
        let stop = CancellationToken::new();
        let running = Running::start(vec![stubborn, prompt], &stop);
        stop.cancel();
        let started = tokio::time::Instant::now();
        running.join(Duration::from_secs(5)).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "waited the grace, no more"
        );
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the stubborn one was dropped"
        );
    }
}
