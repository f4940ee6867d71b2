//! Spreading tenants over the instances: the first instance to start takes every free
//! lease (a tenant without a leader is worse than a busy instance), so an instance that
//! leads more than its share hands tenants over, one at a time, to the others.
//!
//! An instance's share is its tenants divided by the instances serving them, rounded
//! up; the instances serving are those that noted themselves within a lease's length
//! (`cluster_instances`), so a dead one stops counting about when its leases run out.
//! A hand-over stops the tenant's leader work, then releases the lease, and the
//! instance leaves the tenant alone for a lease's length, so one of the others, each
//! under its share, takes it within a second. At most one tenant is handed over per
//! lease's length, so the instances settle without every tenant changing hands at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What an instance's leaderships (one per tenant) share to spread its tenants.
#[derive(Debug, Default)]
pub struct Spread {
    /// Tenants this instance serves (their leaderships running).
    serving: AtomicUsize,
    /// Of those, the ones it leads.
    leading: AtomicUsize,
    /// When it last handed a tenant over.
    handed_over: Mutex<Option<Instant>>,
}

impl Spread {
    pub(super) fn serves(&self) {
        self.serving.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn no_longer_serves(&self) {
        self.serving.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn leads(&self) {
        self.leading.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn no_longer_leads(&self) {
        self.leading.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether this instance leads more tenants than its share among `instances`.
    pub(super) fn over_share(&self, instances: usize) -> bool {
        let serving = self.serving.load(Ordering::Relaxed);
        self.leading.load(Ordering::Relaxed) > serving.div_ceil(instances.max(1))
    }

    /// Claims the one hand-over allowed per `every`: true when none was made within it.
    pub(super) fn may_hand_over(&self, every: Duration) -> bool {
        let mut last = self.handed_over.lock().expect("spread lock");
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leading(serving: usize, leading: usize) -> Spread {
        let spread = Spread::default();
        (0..serving).for_each(|_| spread.serves());
        (0..leading).for_each(|_| spread.leads());
        spread
    }

    #[test]
    fn an_instance_is_over_its_share_when_it_leads_more_than_its_tenants_over_instances() {
        // Four tenants, two instances: two each.
        assert!(leading(4, 3).over_share(2));
        assert!(!leading(4, 2).over_share(2));
        // Three tenants, two instances: two at most, rounded up.
        assert!(!leading(3, 2).over_share(2));
        assert!(leading(3, 3).over_share(2));
        // Alone, or counting no instance yet: everything is its share.
        assert!(!leading(4, 4).over_share(1));
        assert!(!leading(4, 4).over_share(0));
        // One tenant among many instances is nobody's surplus.
        assert!(!leading(1, 1).over_share(5));
    }

    #[tokio::test(start_paused = true)]
    async fn one_hand_over_is_allowed_per_period() {
        let spread = Spread::default();
        let every = Duration::from_secs(10);
        assert!(spread.may_hand_over(every));
        assert!(!spread.may_hand_over(every));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!spread.may_hand_over(every));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(spread.may_hand_over(every));
    }
}
