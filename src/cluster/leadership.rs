//! Keeping a tenant's lease: each instance runs one [`Leadership`] per tenant, which
//! takes the lease when it is free, renews it while it leads, and says when this
//! instance leads (in which term) and when it no longer does.
//!
//! Timing, for a lease of `ttl` (`ha.lease_ttl`):
//! - a leader renews every third of it, so two renewals may fail before it matters;
//! - a leader that has not renewed for four fifths of it steps down (its store refuses
//!   its writes from then on), a fifth of `ttl` before the lease can run out: counted
//!   from before the renewal was sent, so the database's expiry is never earlier;
//! - a follower tries every second (every third of `ttl` when that is shorter), so a
//!   released lease moves within a second and an expired one within `ttl` and a second.
//!
//! Metrics, labelled with the tenant of the scope it runs in ([`crate::tasks::in_tenant`]):
//! `wfmd_tenant_leader` is 1 while this instance leads the tenant and 0 otherwise, and
//! `wfmd_leadership_changes_total` counts each time it starts or stops leading, so an
//! alert sees a tenant without a leader, and one whose leader keeps changing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease;
use super::spread::Spread;
use crate::store::{InstanceRole, Store};
use crate::telemetry::names::{LEADERSHIP_CHANGES_TOTAL, TENANT_LEADER};

/// How often a leader forgets the instances long gone ([`lease::forget_silent`]).
const FORGET_EVERY: Duration = Duration::from_secs(3600);

/// What the leadership of a tenant needs to know of this instance.
#[derive(Debug, Clone)]
pub struct LeadershipSettings {
    pub instance: Arc<str>,
    pub advertise_url: Option<String>,
    pub lease_ttl: Duration,
    /// What this instance's leaderships (every tenant's) share to spread the tenants.
    pub spread: Arc<Spread>,
}

impl LeadershipSettings {
    fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }

    fn try_every(&self) -> Duration {
        (self.lease_ttl / 3).min(Duration::from_secs(1))
    }

    fn step_down_after(&self) -> Duration {
        self.lease_ttl - self.lease_ttl / 5
    }
}

/// What this instance is to the tenant, as [`Leadership`] last found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Follower,
    Leader { term: i64 },
}

/// Keeps one tenant's lease for this instance (see the module's doc).
pub struct Leadership {
    store: Store,
    settings: LeadershipSettings,
    standing: watch::Sender<Standing>,
    /// The term whose leader work has stopped, as its runner says
    /// ([`Leadership::work_ended`]): a hand-over releases the lease after it.
    ended: watch::Sender<Option<i64>>,
}

impl Leadership {
    /// A leadership not running yet, and how to watch its standing (a follower's
    /// until it first takes the lease). The store's role follows the standing. Made in
    /// the tenant's scope, as it is run, so its metrics carry the tenant.
    pub fn new(
        store: Store,
        settings: LeadershipSettings,
    ) -> (Leadership, watch::Receiver<Standing>) {
        let (standing, watching) = watch::channel(Standing::Follower);
        store.set_role(InstanceRole::Follower);
        metrics::gauge!(TENANT_LEADER).set(0.0);
        metrics::counter!(LEADERSHIP_CHANGES_TOTAL).increment(0);
        (
            Leadership {
                store,
                settings,
                standing,
                ended: watch::Sender::new(None),
            },
            watching,
        )
    }

    /// Where whoever runs the leader's work says the work of a term has stopped, after
    /// the standing turned from leading (see [`spread`](super::spread)).
    pub fn work_ended(&self) -> watch::Sender<Option<i64>> {
        self.ended.clone()
    }

    /// Works until `stop` is cancelled; returns the term this instance still leads in,
    /// for the caller to [`lease::release`] once the tenant's leader work has stopped.
    pub async fn run(self, stop: CancellationToken) -> Option<i64> {
        let me = &*self.settings.instance;
        self.settings.spread.serves();
        // The term held, and when the renewal that last kept it was sent.
        let mut held: Option<(i64, Instant)> = None;
        let mut forgot: Option<Instant> = None;
        // After handing the tenant over, it is left to the others until then.
        let mut left_until: Option<Instant> = None;
        loop {
            let sent = Instant::now();
            let deadline = held.map(|(_, renewed)| renewed + self.settings.step_down_after());
            let leaves_it = left_until.is_some_and(|until| sent < until);
            let tried = async {
                let taken = match leaves_it {
                    true => Ok(None),
                    false => {
                        let held = held.map(|(term, _)| term);
                        lease::take(&self.store, me, held, self.settings.lease_ttl).await
                    }
                };
                if let Err(error) =
                    lease::heartbeat(&self.store, me, self.settings.advertise_url.as_deref()).await
                {
                    tracing::debug!(%error, "cannot note this instance among the tenant's");
                }
                taken
            };
            let tried = tokio::select! {
                () = stop.cancelled() => break,
                tried = tried => Some(tried),
                () = sleep_until(deadline) => None,
            };
            match tried {
                Some(Ok(Some(term))) => {
                    if held.map(|(t, _)| t) != Some(term) {
                        tracing::info!(instance = me, term, "this instance leads the tenant");
                        // A new term of a lease it let run out is not one more tenant.
                        if held.is_none() {
                            self.settings.spread.leads();
                        }
                        self.lead(term);
                    }
                    held = Some((term, sent));
                    // The leader forgets instances long gone, now and then.
                    if forgot.is_none_or(|at| at.elapsed() >= FORGET_EVERY) {
                        forgot = Some(Instant::now());
                        if let Err(error) =
                            lease::forget_silent(&self.store, lease::FORGOTTEN_AFTER).await
                        {
                            tracing::debug!(%error, "cannot forget instances long gone");
                        }
                    }
                    if self.leads_too_many().await {
                        let deadline = sent + self.settings.step_down_after();
                        self.hand_over(term, deadline).await;
                        held = None;
                        left_until = Some(Instant::now() + self.settings.lease_ttl);
                    }
                }
                Some(Ok(None)) if held.is_some() => {
                    held = None;
                    self.step_down("another instance holds the tenant's lease");
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "cannot take or renew the tenant's lease")
                }
                Some(Ok(None)) | None => {}
            }
            let next = sent
                + match held {
                    Some(_) => self.settings.renew_every(),
                    None => self.settings.try_every(),
                };
            let deadline = held.map(|(_, renewed)| renewed + self.settings.step_down_after());
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(next) => {}
                () = sleep_until(deadline) => {}
            }
            if let Some(deadline) = deadline
                && Instant::now() >= deadline
            {
                held = None;
                self.step_down("the tenant's lease could not be renewed in time");
            }
        }
        if held.is_some() {
            // Stopped while leading: its leader work has stopped (the caller stops it
            // first), and the caller releases the lease.
            self.count_stop();
        }
        self.settings.spread.no_longer_serves();
        held.map(|(term, _)| term)
    }

    /// Whether this instance leads more tenants than its share, and may hand this one
    /// over now (see [`spread`](super::spread)).
    async fn leads_too_many(&self) -> bool {
        let spread = &self.settings.spread;
        let ttl = self.settings.lease_ttl;
        // Leading one tenant is within any share: no need to count the instances.
        if !spread.over_share(usize::MAX) {
            return false;
        }
        match lease::live_instances(&self.store, ttl).await {
            Ok(instances) => spread.over_share(instances) && spread.may_hand_over(ttl),
            Err(error) => {
                tracing::debug!(%error, "cannot count the instances serving the tenant");
                false
            }
        }
    }

    /// Hands the tenant over: its leader work stops while the lease still holds (the
    /// changes under way finish and are recorded), then the lease is released for
    /// another instance. Work still running at `deadline`, when the lease may run out,
    /// is refused its writes from then on.
    async fn hand_over(&self, term: i64, deadline: Instant) {
        tracing::info!(
            instance = &*self.settings.instance,
            term,
            "this instance leads more tenants than its share: it hands this one over"
        );
        let mut ended = self.ended.subscribe();
        self.standing.send_replace(Standing::Follower);
        let work_stops = async { ended.wait_for(|t| *t == Some(term)).await.is_ok() };
        let stopped = tokio::time::timeout_at(deadline, work_stops)
            .await
            .unwrap_or(false);
        self.store.set_role(InstanceRole::Follower);
        self.count_stop();
        if stopped
            && let Err(error) = lease::release(&self.store, &self.settings.instance, term).await
        {
            tracing::warn!(%error, "cannot release the tenant's lease; it runs out by itself");
        }
    }

    fn lead(&self, term: i64) {
        self.store.set_role(InstanceRole::Leader {
            instance: self.settings.instance.clone(),
            term,
        });
        // Before the standing: whoever sees this instance lead finds the metrics say so.
        metrics::gauge!(TENANT_LEADER).set(1.0);
        metrics::counter!(LEADERSHIP_CHANGES_TOTAL).increment(1);
        self.standing.send_replace(Standing::Leader { term });
    }

    /// Counts this instance no longer leading the tenant: in the metrics, and out of
    /// its share of the tenants (the role and the standing are the caller's to change).
    fn count_stop(&self) {
        metrics::gauge!(TENANT_LEADER).set(0.0);
        metrics::counter!(LEADERSHIP_CHANGES_TOTAL).increment(1);
        self.settings.spread.no_longer_leads();
    }

    fn step_down(&self, why: &str) {
        self.store.set_role(InstanceRole::Follower);
        self.count_stop();
        self.standing.send_replace(Standing::Follower);
        tracing::warn!(
            instance = &*self.settings.instance,
            "this instance no longer leads the tenant: {why}"
        );
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::temp_url_on;

    fn settings(instance: &str, lease_ttl: Duration) -> LeadershipSettings {
        LeadershipSettings {
            instance: Arc::from(instance),
            advertise_url: None,
            lease_ttl,
            spread: Arc::default(),
        }
    }

    /// Waits until `watching` says `wanted`, for `within` at most.
    async fn until(
        watching: &mut watch::Receiver<Standing>,
        within: Duration,
        wanted: impl Fn(Standing) -> bool,
    ) -> Standing {
        let waited = tokio::time::timeout(within, watching.wait_for(|s| wanted(*s)))
            .await
            .map(|seen| *seen.unwrap());
        waited.unwrap_or_else(|_| panic!("still {:?} after {within:?}", *watching.borrow()))
    }

    fn leads(standing: Standing) -> bool {
        matches!(standing, Standing::Leader { .. })
    }

    #[tokio::test]
    async fn one_of_two_instances_leads_and_the_other_takes_over_when_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(Backend::Postgres, &dir);
        let (a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        let ttl = Duration::from_secs(3);
        let (first, mut a_standing) = Leadership::new(a.clone(), settings("a", ttl));
        let a_stop = CancellationToken::new();
        let a_run = crate::tasks::spawn(first.run(a_stop.clone()));
        assert_eq!(
            until(&mut a_standing, ttl, leads).await,
            Standing::Leader { term: 1 }
        );
        assert!(matches!(a.role(), InstanceRole::Leader { term: 1, .. }));

        let (second, mut b_standing) = Leadership::new(b.clone(), settings("b", ttl));
        let b_stop = CancellationToken::new();
        let b_run = crate::tasks::spawn(second.run(b_stop.clone()));
        // b tries every second and a renews every second: however many times b has
        // tried (its note among the instances says when), a leads and b follows.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listed = lease::instances(&b).await.unwrap();
            let b_seen = listed.iter().find(|i| i.instance_id == "b");
            if b_seen.is_some_and(|i| i.last_seen - i.started_at >= 2_000) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "b never tried three times: {listed:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(*a_standing.borrow(), Standing::Leader { term: 1 });
        assert_eq!(*b_standing.borrow(), Standing::Follower);
        assert_eq!(b.role(), InstanceRole::Follower);

        // a stops and releases: b leads within its next try or two.
        a_stop.cancel();
        let held = a_run.await.unwrap();
        assert_eq!(held, Some(1));
        assert!(lease::release(&a, "a", 1).await.unwrap());
        assert_eq!(
            until(&mut b_standing, Duration::from_secs(30), leads).await,
            Standing::Leader { term: 2 }
        );
        b_stop.cancel();
        b_run.await.unwrap();
    }

    /// `wfmd_tenant_leader` and `wfmd_leadership_changes_total` of `tenant` in what
    /// `handle` renders (None: no such series).
    fn leader_metrics(
        handle: &metrics_exporter_prometheus::PrometheusHandle,
        tenant: &str,
    ) -> (Option<f64>, Option<f64>) {
        let text = handle.render();
        let value = |name: &str| {
            let series = format!("{name}{{tenant=\"{tenant}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&series))
                .map(|value| value.parse::<f64>().unwrap())
        };
        (value(TENANT_LEADER), value(LEADERSHIP_CHANGES_TOTAL))
    }

    // A current-thread runtime (the default): the recorder set for the test's thread
    // sees everything the leadership records, as it is driven on that thread.
    #[rstest::rstest]
    #[case::when_its_database_goes_away(true)]
    #[case::when_it_is_stopped(false)]
    #[tokio::test]
    async fn the_tenants_leader_gauge_and_its_changes_follow_the_leadership(
        #[case] database_goes_away: bool,
    ) {
        let (recorder, handle) = crate::telemetry::test_recorder();
        let _recording = metrics::set_default_local_recorder(&recorder);
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(Backend::Postgres, &dir);
        let store = Store::open(&url).await.unwrap();
        let tenant: crate::domain::tenant::TenantId = "alpha".parse().unwrap();
        let ttl = Duration::from_secs(2);

        let (leadership, mut standing) = crate::tasks::sync_in_tenant(&tenant, || {
            Leadership::new(store.clone(), settings("a", ttl))
        });
        assert_eq!(
            leader_metrics(&handle, "alpha"),
            (Some(0.0), Some(0.0)),
            "a follower until it takes the lease"
        );
        let stop = CancellationToken::new();
        let mut run = std::pin::pin!(crate::tasks::in_tenant(
            &tenant,
            leadership.run(stop.clone())
        ));
        tokio::select! {
            _ = &mut run => panic!("the leadership ended before it was stopped"),
            _ = until(&mut standing, ttl, leads) => {}
        }
        assert_eq!(leader_metrics(&handle, "alpha"), (Some(1.0), Some(1.0)));

        if database_goes_away {
            // It steps down: a second change. Closed while the leadership runs, as
            // closing waits for the connection it may hold.
            let gone = async {
                store.close().await;
                until(&mut standing, ttl, |s| s == Standing::Follower).await
            };
            tokio::select! {
                _ = &mut run => panic!("the leadership ended before it was stopped"),
                _ = gone => {}
            }
            assert_eq!(leader_metrics(&handle, "alpha"), (Some(0.0), Some(2.0)));
            stop.cancel();
            assert_eq!(run.await, None);
        } else {
            // Stopped while leading, it no longer says it leads: a second change too.
            stop.cancel();
            assert_eq!(run.await, Some(1), "the term, for the caller to release");
            assert_eq!(leader_metrics(&handle, "alpha"), (Some(0.0), Some(2.0)));
        }
        let text = handle.render();
        let unlabelled = text.lines().filter(|line| {
            [TENANT_LEADER, LEADERSHIP_CHANGES_TOTAL]
                .iter()
                .any(|name| line.starts_with(name) && !line.contains("tenant=\"alpha\""))
        });
        assert_eq!(
            unlabelled.count(),
            0,
            "every series carries its tenant: {text}"
        );
    }

    #[tokio::test]
    async fn a_leader_that_cannot_renew_steps_down_before_its_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(Backend::Postgres, &dir);
        let (a, watcher) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        let ttl = Duration::from_secs(2);
        let (leadership, mut standing) = Leadership::new(a.clone(), settings("a", ttl));
        let stop = CancellationToken::new();
        let run = crate::tasks::spawn(leadership.run(stop.clone()));
        until(&mut standing, ttl, leads).await;

        // The database goes away under a (its pools closed): no renewal gets through.
        a.close().await;
        until(&mut standing, ttl, |s| s == Standing::Follower).await;
        assert_eq!(
            a.role(),
            InstanceRole::Follower,
            "its writes are refused at once"
        );
        let lease = lease::leadership(&watcher).await.unwrap().unwrap();
        assert!(
            lease.current(),
            "stepped down while the lease was still a's: {lease:?}"
        );
        stop.cancel();
        assert_eq!(run.await.unwrap(), None, "nothing left to release");
    }
}
