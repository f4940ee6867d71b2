//! The one contract every background worker of the daemon keeps: a name, and a run that
//! works until its cancellation token is cancelled. The daemon starts every worker the
//! same way and joins them all, so adding one is adding it to a list.

use std::future::Future;

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

    /// Waits for every worker to end (after `stop` was cancelled); one that panicked is
    /// logged by name and does not keep the others from being waited for.
    pub async fn join(self) {
        for (name, task) in self.0 {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "{name} ended abnormally");
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
        running.join().await;
        assert_eq!(stopped.load(Ordering::SeqCst), 2);
    }
}
