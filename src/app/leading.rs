//! A tenant served by several instances (`[ha]`): its leader's work runs on this
//! instance only while it leads the tenant. [`leading`] is the one worker that follows
//! the tenant's standing, as this instance's keeper of leases says it
//! ([`crate::cluster::leadership`]), and starts the leader's work, built afresh, at each
//! term this instance begins (once the other terms it is starting meanwhile began, two
//! seconds at most), and stops it when the term ends.
//!
//! When the tenant stops (the daemon stops, or a reload removes it), the leader's work
//! stops first and then the tenant's lease is given up, so another instance takes the
//! tenant at its next look (within a quarter of a second) instead of after the lease
//! runs out.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::tenant::Tenant;
use super::worker::{Running, Worker};
use crate::cluster::leadership::{HELD_BACK_AT_MOST, LeaseKeeper, Standing};

/// The worker that follows `tenant`'s standing and runs its leader's work while this
/// instance leads (see the module's doc); in the tenant's scope.
pub(super) fn leading(tenant: Arc<Tenant>, keeper: LeaseKeeper, grace: Duration) -> Worker {
    let id = tenant.id.clone();
    Worker::new("leadership", move |stop| lead(tenant, keeper, grace, stop)).in_tenant(&id)
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

async fn lead(tenant: Arc<Tenant>, keeper: LeaseKeeper, grace: Duration, stop: CancellationToken) {
    let membership = keeper.join(&tenant.id, tenant.services.store.clone());
    let mut standing = membership.standing();
    // Most of the grace for the work; the rest to give the lease up.
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
                // After the terms this instance is starting meanwhile: see
                // `LeaseKeeper::terms_started`. A lease lost while it waits ends the
                // work at the loop's next turn.
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = keeper.terms_started(HELD_BACK_AT_MOST) => {}
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
                    // A hand-over waits for this to give the lease up.
                    membership.work_ended(term);
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
    if membership.leave().await {
        tracing::info!("the tenant's lease is released for another instance");
    }
}
