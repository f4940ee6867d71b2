//! A tenant served by several instances (`[ha]`): its leader's work runs on this
//! instance only while it leads the tenant. [`leading`] is the one worker that keeps
//! the tenant's lease ([`crate::cluster::leadership`]) and starts the leader's work,
//! built afresh, at each term this instance begins, and stops it when the term ends.
//!
//! When the daemon stops, the leader's work stops first and then the lease is released,
//! so another instance takes the tenant at its next try (within a second) instead of
//! after the lease runs out.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::tenant::Tenant;
use super::worker::{Running, Worker};
use crate::cluster::leadership::{Leadership, LeadershipSettings, Standing};
use crate::cluster::lease;

/// The worker that keeps `tenant`'s lease and runs its leader's work while this
/// instance leads (see the module's doc); in the tenant's scope.
pub(super) fn leading(
    tenant: Arc<Tenant>,
    settings: LeadershipSettings,
    grace: Duration,
) -> Worker {
    let id = tenant.id.clone();
    Worker::new("leadership", move |stop| {
        lead(tenant, settings, grace, stop)
    })
    .in_tenant(&id)
}

/// The leader's work of one term, running.
struct Term {
    term: i64,
    stop: CancellationToken,
    running: Running,
}

impl Term {
    /// Stops the term's work, each worker within `grace`.
    async fn end(self, grace: Duration) {
        self.stop.cancel();
        self.running.join(grace).await;
        tracing::info!(
            term = self.term,
            "the leader's work of this term has stopped"
        );
    }
}

async fn lead(
    tenant: Arc<Tenant>,
    settings: LeadershipSettings,
    grace: Duration,
    stop: CancellationToken,
) {
    let store = tenant.services.store.clone();
    let instance = settings.instance.clone();
    let (leadership, mut standing) = Leadership::new(store.clone(), settings);
    let work_ended = leadership.work_ended();
    // Stopped only once the leader's work has, so the lease outlives the work.
    let keep_lease = CancellationToken::new();
    let keeping = crate::tasks::spawn(leadership.run(keep_lease.clone()));
    // Most of the grace for the work; the rest to hand the lease over.
    let work_grace = grace.mul_f64(0.9);
    let mut current: Option<Term> = None;
    loop {
        let now = *standing.borrow_and_update();
        match (now, current.as_ref().map(|t| t.term)) {
            (Standing::Leader { term }, Some(running)) if running == term => {}
            (Standing::Leader { term }, _) => {
                if let Some(ended) = current.take() {
                    ended.end(work_grace).await;
                }
                let term_stop = stop.child_token();
                let running = Running::start(tenant.leader_work(grace), &term_stop);
                tracing::info!(term, "the leader's work of this term has started");
                current = Some(Term {
                    term,
                    stop: term_stop,
                    running,
                });
            }
            (Standing::Follower, Some(_)) => {
                if let Some(ended) = current.take() {
                    let term = ended.term;
                    ended.end(work_grace).await;
                    // A hand-over waits for this to release the lease.
                    work_ended.send_replace(Some(term));
                }
            }
            (Standing::Follower, None) => {}
        }
        tokio::select! {
            () = stop.cancelled() => break,
            changed = standing.changed() => if changed.is_err() { break },
        }
    }
    if let Some(ended) = current.take() {
        ended.end(work_grace).await;
    }
    keep_lease.cancel();
    let held = keeping.await.ok().flatten();
    if let Some(term) = held {
        match lease::release(&store, &instance, term).await {
            Ok(_) => tracing::info!(term, "the tenant's lease is released for another instance"),
            Err(error) => tracing::warn!(
                %error,
                "cannot release the tenant's lease; another instance takes it when it runs out"
            ),
        }
    }
}
