//! Keeping this instance's leases: one [`LeaseKeeper`] per instance, for all its
//! tenants, looks at the leases four times a second in one statement ([`super::tick`])
//! on its liveness session ([`super::liveness`]): it renews the leases it holds, takes
//! free ones up to its share, hands its surplus over ([`super::spread`]), and tells each
//! tenant's worker, through the tenant's [`Membership`], when this instance leads the
//! tenant (in which term) and when it no longer does.
//!
//! A lease it takes becomes a term only once the term is started in the tenant's schema
//! ([`lease::start_term`], under the tenant's write lock, a few tenants at a time); then
//! the tenant's store writes as its leader, and the tenant's worker starts the leader's
//! work.
//!
//! Timing, for a lease of `ttl` (`ha.lease_ttl`):
//! - the leases are renewed every third of it, so two renewals may fail before it
//!   matters;
//! - a lease not renewed for four fifths of it is let go (the tenant's store refuses its
//!   writes from then on), a fifth of `ttl` before it can run out: counted from before
//!   the renewal was sent, so the database's expiry is never earlier;
//! - free leases are looked for at every look, so a released lease, or one whose holder's
//!   liveness session ended, moves within a quarter of a second and the time to start
//!   its term; one whose holder vanished without its session ending, within `ttl` and a
//!   look;
//! - when the liveness session itself is lost, or a look hangs until a lease would have
//!   to be let go (its session is then dropped), every lease is let go at once: the
//!   others may take them from that moment.
//!
//! Metrics, labelled with the tenant: `wfmd_tenant_leader` is 1 while this instance leads
//! the tenant and 0 otherwise, `wfmd_leadership_changes_total` counts each time it starts
//! or stops leading, and `wfmd_failover_seconds` is how long the tenant was without a
//! leader before this instance began its term (see [`super::tick::LeaseTaken::freed_at`]).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx_postgres::PgConnectOptions;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::{self, KnownLeader, LeaseMoves, TermStart};
use super::liveness::{self, Liveness};
use super::spread;
use super::tick::{self, Tick, Ticked};
use crate::domain::tenant::TenantId;
use crate::store::{InstanceRole, Store};
use crate::telemetry::names::{FAILOVER_SECONDS, LEADERSHIP_CHANGES_TOTAL, TENANT_LEADER};

/// How often the leases are looked at.
pub const LOOK_EVERY: Duration = Duration::from_millis(250);

/// How many terms are started at once (each in its tenant's schema, on its pool).
const STARTING_AT_ONCE: usize = 16;

/// A term's start that takes longer is logged: it is time the tenant has no leader.
const SLOW_TERM_START: Duration = Duration::from_secs(1);

/// How long a tenant's leader work waits, at most, for the terms this instance is
/// still starting (see [`LeaseKeeper::terms_started`]).
pub const HELD_BACK_AT_MOST: Duration = Duration::from_secs(2);

/// How often the instances long gone are forgotten ([`lease::forget_silent`]).
const FORGET_EVERY: Duration = Duration::from_secs(3600);

/// How long a lease handed over is left to the others before this instance may take it
/// again (when it is still free then, and within this instance's share): the others
/// take it at their next look, so this is only a guard against taking it straight back.
const LEFT_FOR: Duration = Duration::from_secs(1);

/// What the leadership needs to know of this instance.
#[derive(Debug, Clone)]
pub struct LeadershipSettings {
    pub instance: Arc<str>,
    pub advertise_url: Option<String>,
    pub lease_ttl: Duration,
    /// The database of the tenants (`database.url`), where the liveness session goes.
    pub database_url: String,
}

impl LeadershipSettings {
    fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }

    fn step_down_after(&self) -> Duration {
        self.lease_ttl - self.lease_ttl / 5
    }
}

/// What this instance is to a tenant, as the keeper last found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Follower,
    Leader { term: i64 },
}

/// The handle of this instance's keeper of leases; cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaseKeeper {
    inbox: mpsc::UnboundedSender<Request>,
    /// How many leases taken wait for their term to start, or are starting it.
    terms_to_start: watch::Receiver<usize>,
    moves: LeaseMoves,
}

impl LeaseKeeper {
    /// Starts keeping the leases of the tenants that [`join`](LeaseKeeper::join). Once
    /// `leaving` is cancelled (the daemon stops), the instance stops counting itself
    /// among those serving (so the others take what it gives up) and takes nothing;
    /// the keeper ends once every tenant left, its last leases given up.
    pub fn start(
        settings: LeadershipSettings,
        leaving: CancellationToken,
    ) -> (LeaseKeeper, tokio::task::JoinHandle<()>) {
        let (inbox, requests) = mpsc::unbounded_channel();
        let (terms, terms_to_start) = watch::channel(0);
        let moves = LeaseMoves::default();
        let keeper = Keeper::new(settings, terms, moves.clone());
        let running = crate::tasks::spawn(keeper.run(requests, leaving));
        let keeper = LeaseKeeper {
            inbox,
            terms_to_start,
            moves,
        };
        (keeper, running)
    }

    /// Returns once no lease this instance took waits for its term to start, or after
    /// `at_most`. A tenant's leader work waits for this before it begins: when this
    /// instance takes many tenants at once (another one died), the work of those whose
    /// terms began first would otherwise fill the pool ahead of the other terms' starts,
    /// and keep those tenants without a leader the longer.
    pub async fn terms_started(&self, at_most: Duration) {
        let mut terms = self.terms_to_start.clone();
        let _ = tokio::time::timeout(at_most, terms.wait_for(|&n| n == 0)).await;
    }

    /// A tenant's leader as this instance last read it, kept until this keeper sees
    /// the leases move (see [`KnownLeader`]).
    pub fn known_leader(&self) -> KnownLeader {
        KnownLeader::new(self.moves.clone())
    }

    /// Adds `tenant`, whose store is `store`, to the tenants whose lease this instance
    /// keeps: a follower until it leads. In the tenant's scope, so its metrics carry
    /// the tenant.
    pub fn join(&self, tenant: &TenantId, store: Store) -> Membership {
        let key = lease::tenant_key(&store).unwrap_or("public").to_owned();
        let (standing, watching) = watch::channel(Standing::Follower);
        store.set_role(InstanceRole::Follower);
        metrics::gauge!(TENANT_LEADER).set(0.0);
        metrics::counter!(LEADERSHIP_CHANGES_TOTAL).increment(0);
        let _ = metrics::histogram!(FAILOVER_SECONDS);
        let member = Member {
            tenant: tenant.clone(),
            store,
            standing,
            lease: Lease::Free,
        };
        let _ = self
            .inbox
            .send(Request::Join(key.clone(), Box::new(member)));
        Membership {
            key,
            standing: watching,
            inbox: self.inbox.clone(),
            left: false,
        }
    }
}

/// A tenant among those whose lease the keeper keeps, as its worker holds it. Dropped
/// without [`Membership::leave`], the tenant leaves all the same.
#[derive(Debug)]
pub struct Membership {
    key: String,
    standing: watch::Receiver<Standing>,
    inbox: mpsc::UnboundedSender<Request>,
    left: bool,
}

impl Membership {
    /// How to watch this instance's standing with the tenant.
    pub fn standing(&self) -> watch::Receiver<Standing> {
        self.standing.clone()
    }

    /// Says that the leader's work of `term` has stopped, after the standing turned
    /// from leading: a hand-over gives the lease up after it.
    pub fn work_ended(&self, term: i64) {
        let _ = self.inbox.send(Request::WorkEnded(self.key.clone(), term));
    }

    /// Leaves, once the tenant's leader work has stopped: the lease it held is given up
    /// for another instance to take at its next look. Returns whether one was.
    pub async fn leave(mut self) -> bool {
        self.left = true;
        let (done, given_up) = oneshot::channel();
        let _ = self
            .inbox
            .send(Request::Leave(self.key.clone(), Some(done)));
        given_up.await.unwrap_or(false)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if !self.left {
            let _ = self.inbox.send(Request::Leave(self.key.clone(), None));
        }
    }
}

#[derive(Debug)]
enum Request {
    Join(String, Box<Member>),
    /// The tenant leaves; told whether its lease was given up, once it was.
    Leave(String, Option<oneshot::Sender<bool>>),
    WorkEnded(String, i64),
}

#[derive(Debug)]
struct Member {
    tenant: TenantId,
    store: Store,
    standing: watch::Sender<Standing>,
    lease: Lease,
}

/// A tenant's lease, as this instance has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    Free,
    /// Handed over: not taken again by this instance before then.
    LeftUntil(Instant),
    /// Taken; its term being started in the tenant's schema. `renewed`: when the
    /// statement that last set its expiry was sent.
    Starting {
        term: i64,
        renewed: Instant,
        freed_at: Option<i64>,
    },
    Leading {
        term: i64,
        renewed: Instant,
    },
    /// Handed over: the standing says follower, the work is stopping (for `until` at
    /// most), the lease still held.
    HandingOver {
        term: i64,
        renewed: Instant,
        until: Instant,
    },
    /// To give up at the next look (the term raised to `raise`), then `then`.
    Releasing {
        term: i64,
        raise: i64,
        then: After,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Free,
    LeftUntil(Instant),
}

impl Lease {
    /// The term held and when it was last renewed, while the lease is held.
    fn held(&self) -> Option<(i64, Instant)> {
        match *self {
            Lease::Starting { term, renewed, .. }
            | Lease::Leading { term, renewed }
            | Lease::HandingOver { term, renewed, .. } => Some((term, renewed)),
            _ => None,
        }
    }

    fn renew(&mut self, at: Instant) {
        match self {
            Lease::Starting { renewed, .. }
            | Lease::Leading { renewed, .. }
            | Lease::HandingOver { renewed, .. } => *renewed = at,
            _ => {}
        }
    }
}

/// A term started, refused or failed, for the tenant of the key.
type StartResult = (String, i64, Result<TermStart, sqlx::Error>);

struct Keeper {
    settings: LeadershipSettings,
    members: BTreeMap<String, Member>,
    /// Leases of tenants that left, to give up at the next look.
    releases: Vec<(String, i64, i64)>,
    /// Tenants that left, waiting for their lease to be given up.
    waiting: Vec<(String, oneshot::Sender<bool>)>,
    /// Tenants whose lease may not exist yet.
    enrol: Vec<String>,
    starting: JoinSet<StartResult>,
    to_start: Vec<(String, i64)>,
    /// `starting` and `to_start` together, told to [`LeaseKeeper::terms_started`].
    terms_to_start: watch::Sender<usize>,
    /// Counted whenever a look finds the leases' holders changed, or none is known.
    moves: LeaseMoves,
    /// The holders' fingerprint the last look found ([`Ticked::holders`]); `None`
    /// after a look failed.
    holders: Option<i64>,
    last_renewal: Option<Instant>,
    handed_over_at: Option<Instant>,
    forgot_at: Option<Instant>,
    leaving: bool,
}

impl Keeper {
    fn new(
        settings: LeadershipSettings,
        terms_to_start: watch::Sender<usize>,
        moves: LeaseMoves,
    ) -> Keeper {
        Keeper {
            settings,
            moves,
            holders: None,
            members: BTreeMap::new(),
            releases: Vec::new(),
            waiting: Vec::new(),
            enrol: Vec::new(),
            starting: JoinSet::new(),
            to_start: Vec::new(),
            terms_to_start,
            last_renewal: None,
            handed_over_at: None,
            forgot_at: None,
            leaving: false,
        }
    }

    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        leaving: CancellationToken,
    ) {
        let options = match PgConnectOptions::from_str(&self.settings.database_url) {
            Ok(options) => options.options([("client_min_messages", "warning")]),
            Err(error) => {
                tracing::error!(%error, "the leadership cannot connect: database.url is not PostgreSQL's");
                return;
            }
        };
        let mut liveness: Option<Liveness> = None;
        let mut next = Instant::now();
        let mut inbox_open = true;
        loop {
            let wake = self.earliest_deadline().map_or(next, |d| d.min(next));
            tokio::select! {
                () = leaving.cancelled(), if !self.leaving => {
                    // Told at once, so the others count it out before its leases go.
                    self.leaving = true;
                    next = Instant::now();
                }
                request = requests.recv(), if inbox_open => match request {
                    Some(request) => if self.take(request) { next = Instant::now() },
                    None => {
                        inbox_open = false;
                        self.leaving = true;
                    }
                },
                Some(started) = self.starting.join_next(), if !self.starting.is_empty() => {
                    if let Ok(started) = started && self.started(started) {
                        next = Instant::now();
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            self.step_down_overdue();
            if Instant::now() < next {
                continue;
            }
            let last = self.leaving && self.members.is_empty();
            self.look(&options, &mut liveness).await;
            if last {
                break;
            }
            next = Instant::now() + LOOK_EVERY;
        }
        if let Some(liveness) = liveness {
            liveness.close().await;
        }
        for (_, waiting) in self.waiting.drain(..) {
            let _ = waiting.send(false);
        }
    }

    /// Takes a request in; returns whether a look is wanted at once.
    fn take(&mut self, request: Request) -> bool {
        match request {
            Request::Join(key, member) => {
                self.enrol.push(key.clone());
                self.members.insert(key, *member);
                false
            }
            Request::Leave(key, done) => {
                let Some(member) = self.members.remove(&key) else {
                    if let Some(done) = done {
                        let _ = done.send(false);
                    }
                    return false;
                };
                let release = match member.lease {
                    Lease::Starting { term, .. } => Some((term, 0)),
                    Lease::Leading { term, .. } | Lease::HandingOver { term, .. } => {
                        // Its work has stopped: the worker leaves after it.
                        member.store.set_role(InstanceRole::Follower);
                        count_stop(&member);
                        Some((term, 0))
                    }
                    Lease::Releasing { term, raise, .. } => Some((term, raise)),
                    Lease::Free | Lease::LeftUntil(_) => None,
                };
                match (release, done) {
                    (Some((term, raise)), done) => {
                        self.releases.push((key.clone(), term, raise));
                        if let Some(done) = done {
                            self.waiting.push((key, done));
                        }
                        true
                    }
                    (None, Some(done)) => {
                        let _ = done.send(false);
                        false
                    }
                    (None, None) => false,
                }
            }
            Request::WorkEnded(key, ended) => match self.members.get_mut(&key) {
                Some(member) => match member.lease {
                    Lease::HandingOver { term, .. } if term == ended => {
                        handed_over(member, term);
                        true
                    }
                    _ => false,
                },
                None => false,
            },
        }
    }

    /// A term's start came to `result`; returns whether a look is wanted at once.
    fn started(&mut self, done: StartResult) -> bool {
        let again = self.note_started(done);
        // Only now, with the member's standing told: who waits for every term taken
        // to start (`terms_started`) finds this one leading once told none is left.
        self.start_next();
        again
    }

    /// What a term's start came to, told to its member and to its store.
    fn note_started(&mut self, (key, term, result): StartResult) -> bool {
        let Some(member) = self.members.get_mut(&key) else {
            return false;
        };
        let (renewed, freed_at) = match member.lease {
            Lease::Starting {
                term: starting,
                renewed,
                freed_at,
            } if starting == term => (renewed, freed_at),
            // Let go meanwhile: whoever takes the lease next starts a later term.
            _ => return false,
        };
        match result {
            Ok(TermStart::Started { acquired_at }) => {
                lead(member, &self.settings.instance, term, freed_at, acquired_at);
                member.lease = Lease::Leading { term, renewed };
                false
            }
            Ok(TermStart::Refused { current }) => {
                tracing::info!(
                    tenant = %member.tenant,
                    term,
                    current,
                    "the tenant's term is ahead of its lease: the lease is given up with its \
                     term raised, and taken again past it"
                );
                member.lease = Lease::Releasing {
                    term,
                    raise: current,
                    then: After::Free,
                };
                true
            }
            Err(error) => {
                tracing::warn!(tenant = %member.tenant, %error, "cannot start a term of the tenant's; its lease is given up");
                member.lease = Lease::Releasing {
                    term,
                    raise: 0,
                    then: After::Free,
                };
                true
            }
        }
    }

    /// Starts the next terms waiting, up to [`STARTING_AT_ONCE`] at a time.
    fn start_next(&mut self) {
        while self.starting.len() < STARTING_AT_ONCE
            && let Some((key, term)) = self.to_start.pop()
        {
            let Some(member) = self.members.get(&key) else {
                continue;
            };
            // Let go since it was taken: no term to start.
            if !matches!(member.lease, Lease::Starting { term: t, .. } if t == term) {
                continue;
            }
            let (store, instance, tenant) = (
                member.store.clone(),
                self.settings.instance.clone(),
                member.tenant.clone(),
            );
            let start = async move {
                let asked = Instant::now();
                let started = lease::start_term(&store, &instance, term);
                let started = crate::tasks::in_tenant(&tenant, started).await;
                let took = asked.elapsed();
                if took > SLOW_TERM_START {
                    tracing::warn!(tenant = %tenant, term, ?took, "a term's start was slow: the tenant had no leader meanwhile");
                }
                (key, term, started)
            };
            crate::tasks::spawn_in(&mut self.starting, start);
        }
        let pending = self.starting.len() + self.to_start.len();
        self.terms_to_start
            .send_if_modified(|n| std::mem::replace(n, pending) != pending);
    }

    /// When the first held lease must be let go unless renewed: how long a look may
    /// take.
    fn renewal_deadline(&self) -> Option<Instant> {
        let after = self.settings.step_down_after();
        let renewals = self.members.values().filter_map(|m| m.lease.held());
        renewals.map(|(_, renewed)| renewed + after).min()
    }

    /// When the keeper must act next, look or not: a lease to let go unless renewed,
    /// or a hand-over whose work did not stop in time.
    fn earliest_deadline(&self) -> Option<Instant> {
        let hand_overs = self.members.values().filter_map(|m| match m.lease {
            Lease::HandingOver { until, .. } => Some(until),
            _ => None,
        });
        self.renewal_deadline().into_iter().chain(hand_overs).min()
    }

    /// Lets go every lease not renewed in time, and ends the hand-overs whose work did
    /// not stop in time.
    fn step_down_overdue(&mut self) {
        let (now, after) = (Instant::now(), self.settings.step_down_after());
        for member in self.members.values_mut() {
            if let Lease::HandingOver { term, until, .. } = member.lease
                && now >= until
            {
                tracing::warn!(tenant = %member.tenant, term, "the leader's work did not stop in time for the hand-over; its writes are refused from now on");
                handed_over(member, term);
            }
            if member
                .lease
                .held()
                .is_some_and(|(_, renewed)| now >= renewed + after)
            {
                step_down(member, "its lease could not be renewed in time");
            }
        }
    }

    /// Lets go every lease held.
    fn step_down_all(&mut self, why: &str) {
        for member in self.members.values_mut() {
            if member.lease.held().is_some() {
                step_down(member, why);
            }
        }
    }

    /// One look at the leases (see the module's doc).
    async fn look(&mut self, options: &PgConnectOptions, liveness: &mut Option<Liveness>) {
        let instance = self.settings.instance.clone();
        if liveness.is_none() {
            match Liveness::open(options, &instance).await {
                Ok(opened) => *liveness = Some(opened),
                Err(error) => {
                    tracing::warn!(%error, "cannot open the liveness session; no lease is taken meanwhile");
                    self.saw_holders(None);
                    self.answer_waiting(None);
                    return;
                }
            }
        }
        let live = liveness.as_mut().expect("opened above");
        if let Err(error) = self.housekeeping(live).await {
            self.failed(&error, liveness);
            return;
        }
        let sent = Instant::now();
        let renewing = self
            .last_renewal
            .is_none_or(|at| sent >= at + self.settings.renew_every());
        let tick = self.tick(live.key(), renewing);
        // A look that hangs (the network cut) is given up on before a lease must be let
        // go, and after a lease's length when none is held. Not at a hand-over's end:
        // a hand-over running late is ended after the look (`step_down_overdue`), where
        // giving up on the look would let every lease go at once.
        let deadline = self
            .renewal_deadline()
            .unwrap_or(sent + self.settings.lease_ttl);
        let looked = tokio::select! {
            // A look that came back is used even when the deadline passed too by the
            // time this task ran again (a starved runtime): its renewals count from
            // when it was sent, so a late one renews nothing past its time.
            biased;
            looked = tick::look(live.conn(), &tick) => Some(looked),
            () = tokio::time::sleep_until(deadline) => None,
        };
        let renewed: Vec<(String, i64)> = tick.renew;
        match looked {
            Some(Ok(ticked)) => {
                self.apply(ticked, sent, renewing.then_some(renewed));
            }
            Some(Err(error)) => self.failed(&error, liveness),
            None => {
                // Once the server ends the session dropped, the others may take every
                // lease: they are let go now, as when the session is lost.
                // How late this task woke past the deadline tells a starved runtime
                // (seconds) from a look the server did not answer (none to speak of).
                let woke_late_by = Instant::now().saturating_duration_since(deadline);
                tracing::warn!(
                    sent_ago = ?sent.elapsed(),
                    ?woke_late_by,
                    "a look at the leases is taking too long: its session is dropped"
                );
                self.saw_holders(None);
                self.step_down_all("its look at the leases took too long");
                *liveness = None;
                self.answer_waiting(None);
            }
        }
    }

    /// What the look before the statement needs: leases for the tenants that joined,
    /// and the instances long gone forgotten now and then. Statements of their own,
    /// each only now and then.
    async fn housekeeping(&mut self, live: &mut Liveness) -> Result<(), sqlx::Error> {
        if !self.enrol.is_empty() {
            self.enrol.sort();
            self.enrol.dedup();
            lease::enrol(live.conn(), &self.enrol).await?;
            self.enrol.clear();
        }
        if self.forgot_at.is_none_or(|at| at.elapsed() >= FORGET_EVERY) {
            self.forgot_at = Some(Instant::now());
            lease::forget_silent_on(live.conn(), lease::FORGOTTEN_AFTER).await?;
        }
        Ok(())
    }

    /// The look to send.
    fn tick(&self, liveness_key: i32, renewing: bool) -> Tick<'_> {
        let now = Instant::now();
        let mut tick = Tick {
            instance: &self.settings.instance,
            advertise_url: self.settings.advertise_url.as_deref(),
            liveness_key,
            ttl: self.settings.lease_ttl,
            serving: if self.leaving { 0 } else { self.members.len() },
            release: self.releases.clone(),
            ..Tick::default()
        };
        for (key, member) in &self.members {
            match member.lease {
                Lease::Releasing { term, raise, .. } => {
                    tick.release.push((key.clone(), term, raise))
                }
                Lease::LeftUntil(until) if now < until => {}
                Lease::Free | Lease::LeftUntil(_) if !self.leaving => {
                    tick.claimable.push(key.clone())
                }
                _ => {}
            }
            if let Some((term, _)) = member.lease.held() {
                tick.leading += 1;
                if renewing {
                    tick.renew.push((key.clone(), term));
                }
            }
        }
        tick
    }

    fn apply(&mut self, ticked: Ticked, sent: Instant, renewed: Option<Vec<(String, i64)>>) {
        self.saw_holders(Some(ticked.holders));
        if let Some(renewed) = renewed {
            self.last_renewal = Some(sent);
            for (key, term) in renewed {
                let Some(member) = self.members.get_mut(&key) else {
                    continue;
                };
                if member.lease.held().map(|(t, _)| t) != Some(term) {
                    continue;
                }
                if ticked.renewed.contains(&key) {
                    member.lease.renew(sent);
                } else {
                    step_down(member, "another instance holds the tenant's lease");
                }
            }
        }
        // Given up: those of the tenants still here, and of those that left.
        for member in self.members.values_mut() {
            if let Lease::Releasing { then, .. } = member.lease {
                member.lease = match then {
                    After::Free => Lease::Free,
                    After::LeftUntil(until) => Lease::LeftUntil(until),
                };
            }
        }
        self.releases.clear();
        self.answer_waiting(Some(&ticked));
        for claimed in ticked.claimed {
            match self.members.get_mut(&claimed.tenant) {
                Some(member) => {
                    member.lease = Lease::Starting {
                        term: claimed.term,
                        renewed: sent,
                        freed_at: claimed.freed_at,
                    };
                    self.to_start.push((claimed.tenant, claimed.term));
                }
                // Left while the look was under way.
                None => self.releases.push((claimed.tenant, claimed.term, 0)),
            }
        }
        self.start_next();
        self.hand_over_surplus(&ticked.loads);
    }

    /// Hands over what this instance leads beyond its share, as far as the others have
    /// room for it (see [`spread`]).
    fn hand_over_surplus(&mut self, loads: &[(String, usize)]) {
        let ttl = self.settings.lease_ttl;
        if self.leaving || self.handed_over_at.is_some_and(|at| at.elapsed() < ttl) {
            return;
        }
        let me = &*self.settings.instance;
        let share = spread::share(self.members.len(), loads.len());
        let mine = self
            .members
            .values()
            .filter(|m| m.lease.held().is_some())
            .count();
        let others = loads
            .iter()
            .filter(|(id, _)| id != me)
            .map(|(_, leads)| *leads);
        let count = spread::to_hand_over(mine, share, others);
        if count == 0 {
            return;
        }
        tracing::info!(
            instance = me,
            leads = mine,
            share,
            count,
            "this instance leads more tenants than its share: it hands some over"
        );
        self.handed_over_at = Some(Instant::now());
        let until = Instant::now() + self.settings.step_down_after();
        let leading = self
            .members
            .values_mut()
            .rev()
            .filter_map(|m| match m.lease {
                Lease::Leading { term, renewed } => Some((m, term, renewed)),
                _ => None,
            });
        for (member, term, renewed) in leading.take(count) {
            member.lease = Lease::HandingOver {
                term,
                renewed,
                until,
            };
            member.standing.send_replace(Standing::Follower);
        }
    }

    /// A look or what goes before it failed with `error`.
    fn failed(&mut self, error: &sqlx::Error, liveness: &mut Option<Liveness>) {
        self.saw_holders(None);
        if liveness::lost(error) {
            tracing::warn!(%error, "the liveness session is lost: the other instances may take this instance's tenants from now on");
            self.step_down_all("this instance's liveness session is lost");
            *liveness = None;
        } else {
            tracing::warn!(%error, "cannot look at the leases");
        }
        self.answer_waiting(None);
    }

    /// Notes the leases' holders a look found (`None`: it failed, so nothing is known
    /// of them), counting a move when they are not those the look before found.
    fn saw_holders(&mut self, holders: Option<i64>) {
        if holders.is_none() || holders != self.holders {
            self.moves.moved();
        }
        self.holders = holders;
    }

    /// Tells the tenants that left whether their lease was given up (`None`: the look
    /// failed, and it runs out by itself).
    fn answer_waiting(&mut self, ticked: Option<&Ticked>) {
        for (key, done) in self.waiting.drain(..) {
            let given_up = ticked.is_some_and(|t| t.released.contains(&key));
            let _ = done.send(given_up);
        }
    }
}

/// The term began: the tenant's store writes as its leader, and its worker is told.
fn lead(member: &mut Member, instance: &Arc<str>, term: i64, freed_at: Option<i64>, began: i64) {
    member.store.set_role(InstanceRole::Leader {
        instance: instance.clone(),
        term,
    });
    tracing::info!(tenant = %member.tenant, instance = &**instance, term, "this instance leads the tenant");
    crate::tasks::sync_in_tenant(&member.tenant, || {
        // Before the standing: whoever sees this instance lead finds the metrics say so.
        metrics::gauge!(TENANT_LEADER).set(1.0);
        metrics::counter!(LEADERSHIP_CHANGES_TOTAL).increment(1);
        if let Some(freed_at) = freed_at {
            let without = (began - freed_at).max(0);
            metrics::histogram!(FAILOVER_SECONDS).record(without as f64 / 1000.0);
        }
    });
    member.standing.send_replace(Standing::Leader { term });
}

/// The hand-over's work has stopped (or was given up on): the lease is given up, and
/// left to the others for a moment ([`LEFT_FOR`]).
fn handed_over(member: &mut Member, term: i64) {
    member.store.set_role(InstanceRole::Follower);
    count_stop(member);
    member.lease = Lease::Releasing {
        term,
        raise: 0,
        then: After::LeftUntil(Instant::now() + LEFT_FOR),
    };
}

/// Lets the tenant's lease go: its writes are refused at once, its worker told.
fn step_down(member: &mut Member, why: &str) {
    let led = matches!(
        member.lease,
        Lease::Leading { .. } | Lease::HandingOver { .. }
    );
    member.lease = Lease::Free;
    member.store.set_role(InstanceRole::Follower);
    if led {
        count_stop(member);
        member.standing.send_replace(Standing::Follower);
        tracing::warn!(tenant = %member.tenant, "this instance no longer leads the tenant: {why}");
    }
}

/// Counts this instance no longer leading the tenant.
fn count_stop(member: &Member) {
    crate::tasks::sync_in_tenant(&member.tenant, || {
        metrics::gauge!(TENANT_LEADER).set(0.0);
        metrics::counter!(LEADERSHIP_CHANGES_TOTAL).increment(1);
    });
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::store::Backend;
    use crate::store::testing::temp_url_on;

    fn settings(instance: &str, url: &str, lease_ttl: Duration) -> LeadershipSettings {
        LeadershipSettings {
            instance: Arc::from(instance),
            advertise_url: None,
            lease_ttl,
            database_url: url.to_owned(),
        }
    }

    /// A fresh database and tenant `id`'s store on it, as an instance opens it.
    async fn tenant_store(url: &str, id: &str) -> (TenantId, Store) {
        let id: TenantId = id.parse().unwrap();
        let store = Store::open(&crate::config::tenants::tenant_database_url(url, &id))
            .await
            .unwrap();
        (id, store)
    }

    /// A fresh database with tenant `alpha` on it, and two instances' stores of it:
    /// the database's directory (kept while it lives), its URL, the tenant, the stores.
    async fn one_tenant_twice() -> (tempfile::TempDir, String, TenantId, Store, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(Backend::Postgres, &dir);
        let (id, a_store) = tenant_store(&url, "alpha").await;
        let b_store = Store::open(&crate::config::tenants::tenant_database_url(&url, &id))
            .await
            .unwrap();
        (dir, url, id, a_store, b_store)
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

    /// Runs `sql` on a connection of its own to `url`.
    async fn psql(url: &str, sql: &str) -> u64 {
        let mut conn = sqlx_postgres::PgConnection::connect(url).await.unwrap();
        let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        done.rows_affected()
    }

    /// Ends `instance`'s liveness session, as the server does when its process dies.
    async fn end_liveness_session(url: &str, instance: &str) {
        let ended = psql(
            url,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'wfmd {instance} liveness'
                   AND datname = current_database()"
            ),
        )
        .await;
        assert_eq!(ended, 1, "no liveness session of {instance}");
    }

    #[tokio::test]
    async fn one_of_two_instances_leads_and_the_other_takes_over_when_it_leaves() {
        let (_dir, url, id, a_store, b_store) = one_tenant_twice().await;
        let ttl = Duration::from_secs(3);
        let leaving = CancellationToken::new();
        let (a, a_keeping) = LeaseKeeper::start(settings("a", &url, ttl), leaving.clone());
        let a_member = a.join(&id, a_store.clone());
        let mut a_standing = a_member.standing();
        assert_eq!(
            until(&mut a_standing, ttl, leads).await,
            Standing::Leader { term: 1 }
        );
        assert!(matches!(
            a_store.role(),
            InstanceRole::Leader { term: 1, .. }
        ));

        let (b, b_keeping) = LeaseKeeper::start(settings("b", &url, ttl), leaving.clone());
        let b_member = b.join(&id, b_store.clone());
        let mut b_standing = b_member.standing();
        // b looks four times a second and a renews every second: however many times b
        // has looked (its note among the instances says when), a leads and b follows.
        looked_until(&b_store, "b", None, 2_000).await;
        assert_eq!(*a_standing.borrow(), Standing::Leader { term: 1 });
        assert_eq!(*b_standing.borrow(), Standing::Follower);
        assert_eq!(b_store.role(), InstanceRole::Follower);

        // a's tenant leaves (its work stopped) and gives the lease up: b leads within a
        // look or two, long before the lease would have run out.
        let left_at = Instant::now();
        assert!(a_member.leave().await, "a held the lease to give up");
        assert_eq!(a_store.role(), InstanceRole::Follower);
        assert_eq!(
            until(&mut b_standing, ttl, leads).await,
            Standing::Leader { term: 2 }
        );
        assert!(left_at.elapsed() < ttl, "{:?}", left_at.elapsed());
        drop((a, b));
        assert!(b_member.leave().await);
        leaving.cancel();
        a_keeping.await.unwrap();
        b_keeping.await.unwrap();
    }

    /// A hand-over whose work has not stopped by its end is ended after the look under
    /// way, not by cutting the look short: a look given up on drops the liveness
    /// session and lets every lease go at once (an instance that handed half its
    /// tenants to one joining let all of them go, while it started).
    #[tokio::test]
    async fn a_look_waits_for_the_leases_renewals_not_for_a_hand_over_running_late() {
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(Backend::Postgres, &dir);
        let (_, store) = tenant_store(&url, "alpha").await;
        let ttl = Duration::from_secs(10);
        let (terms, _) = watch::channel(0);
        let mut keeper = Keeper::new(settings("a", &url, ttl), terms, LeaseMoves::default());
        let now = Instant::now();
        let member = |lease| Member {
            tenant: "alpha".parse().unwrap(),
            store: store.clone(),
            standing: watch::channel(Standing::Follower).0,
            lease,
        };
        // Its hand-over's time is up already; its renewals are not due for seconds.
        let handing_over = Lease::HandingOver {
            term: 1,
            renewed: now,
            until: now,
        };
        keeper.members.insert("handed".into(), member(handing_over));
        let led = Lease::Leading {
            term: 1,
            renewed: now,
        };
        keeper.members.insert("led".into(), member(led));
        keeper.last_renewal = Some(now);

        let options = PgConnectOptions::from_str(&url).unwrap();
        let mut liveness = None;
        keeper.look(&options, &mut liveness).await;
        assert!(liveness.is_some(), "the look was given up on");
        assert_eq!(keeper.members["led"].lease, led, "a lease was let go");
        // The hand-over's end comes after the look: its lease is given up at the next.
        keeper.step_down_overdue();
        let handed = keeper.members["handed"].lease;
        assert!(
            matches!(handed, Lease::Releasing { term: 1, .. }),
            "{handed:?}"
        );
        liveness.unwrap().close().await;
    }

    /// Waits until `instance` noted itself `for_ms` after `since` (the database's
    /// clock; its start when `None`): it looked at the leases until then.
    async fn looked_until(store: &Store, instance: &str, since: Option<i64>, for_ms: i64) -> i64 {
        let mut seen = 0;
        crate::store::testing::eventually(
            &format!("{instance} never looked for {for_ms} ms"),
            async || {
                let listed = lease::instances(store).await.unwrap();
                let noted = listed.iter().find(|i| i.instance_id == instance);
                seen = noted.map_or(0, |i| i.last_seen);
                noted.is_some_and(|i| i.last_seen - since.unwrap_or(i.started_at) >= for_ms)
            },
        )
        .await;
        seen
    }

    #[tokio::test]
    async fn a_follower_remembers_the_leader_until_a_look_sees_the_lease_move() {
        let (_dir, url, id, a_store, b_store) = one_tenant_twice().await;
        let ttl = Duration::from_secs(3);
        let leaving = CancellationToken::new();
        let (a, a_keeping) = LeaseKeeper::start(settings("a", &url, ttl), leaving.clone());
        let a_member = a.join(&id, a_store.clone());
        until(&mut a_member.standing(), ttl, leads).await;
        let (b, b_keeping) = LeaseKeeper::start(settings("b", &url, ttl), leaving.clone());
        let b_member = b.join(&id, b_store.clone());
        let known = b.known_leader();
        let seen = looked_until(&b_store, "b", None, 500).await;
        let holder = known.leader(&b_store).await.unwrap().unwrap().holder;
        assert_eq!(holder, "a");

        // a renews every second; renewals move no lease, and b's looks count no move.
        let moves = b.moves.seen();
        looked_until(&b_store, "b", Some(seen), 1_500).await;
        assert_eq!(b.moves.seen(), moves, "a renewal counted as a move");

        // a's tenant leaves and b takes its lease: a's keeper, still looking, counts the
        // move, and what a remembered is read again.
        let a_known = a.known_leader();
        assert_eq!(a_known.leader(&a_store).await.unwrap().unwrap().holder, "a");
        assert!(a_member.leave().await);
        until(&mut b_member.standing(), ttl, leads).await;
        crate::store::testing::eventually("a still takes a for the leader", async || {
            a_known.leader(&a_store).await.unwrap().unwrap().holder == "b"
        })
        .await;
        assert!(b.moves.seen() > moves, "b's take counted as a move");
        drop((a, b));
        assert!(b_member.leave().await);
        leaving.cancel();
        a_keeping.await.unwrap();
        b_keeping.await.unwrap();
    }

    /// More leases taken at one look than terms start at once (another instance
    /// died): a tenant's leader work held back by `terms_started` begins only once
    /// every one of them has started.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leader_work_held_back_waits_for_every_term_taken_with_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(Backend::Postgres, &dir);
        let leaving = CancellationToken::new();
        let ttl = Duration::from_secs(10);
        let (a, a_keeping) = LeaseKeeper::start(settings("a", &url, ttl), leaving.clone());
        let (b, b_keeping) = LeaseKeeper::start(settings("b", &url, ttl), leaving.clone());
        let (mut a_members, mut b_members) = (Vec::new(), Vec::new());
        let tenants = 2 * (STARTING_AT_ONCE + 2);
        for n in 0..tenants {
            let (id, store) = tenant_store(&url, &format!("t{n:02}")).await;
            let url = crate::config::tenants::tenant_database_url(&url, &id);
            a_members.push(a.join(&id, store));
            b_members.push(b.join(&id, Store::open(&url).await.unwrap()));
        }
        let led_by = |members: &[Membership]| -> Vec<usize> {
            (0..members.len())
                .filter(|&n| leads(*members[n].standing().borrow()))
                .collect()
        };
        // Spread, half each.
        let (mut a_led, mut b_led) = (Vec::new(), Vec::new());
        let spread = crate::store::testing::holds_within(Duration::from_secs(60), async || {
            (a_led, b_led) = (led_by(&a_members), led_by(&b_members));
            a_led.len() == tenants / 2 && b_led.len() == tenants / 2
        })
        .await;
        assert!(spread, "never spread: {a_led:?} {b_led:?}");
        // The spread holds, and the leases moved to spread it are no longer kept from
        // the instance that handed them over.
        let settled = Instant::now() + LEFT_FOR;
        while Instant::now() < settled {
            assert_eq!(led_by(&a_members), a_led, "the spread moved again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // a dies: its liveness session closes with its keeper, which opens no other.
        a_keeping.abort();
        let mut first = b_members[a_led[0]].standing();
        until(&mut first, ttl, leads).await;
        b.terms_started(Duration::from_secs(30)).await;
        let led = led_by(&b_members);
        let not_yet: Vec<&usize> = a_led.iter().filter(|n| !led.contains(n)).collect();
        assert!(
            not_yet.is_empty(),
            "held back until every term taken started, yet not led: {not_yet:?}"
        );
        drop((a_members, b_members));
        leaving.cancel();
        drop((a, b));
        b_keeping.await.unwrap();
    }

    /// A tenant whose own term is ahead of its shared lease (a database copied with its
    /// terms, a shared schema made afresh): the first term taken is refused, the lease
    /// given up with its term raised, and the next take goes past the tenant's term at
    /// once, rather than one term a look until it catches up.
    #[tokio::test]
    async fn a_tenant_whose_own_term_is_ahead_is_led_in_the_term_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(Backend::Postgres, &dir);
        let (id, store) = tenant_store(&url, "alpha").await;
        psql(
            &url,
            "INSERT INTO alpha.cluster_lease (id, holder, term, acquired_at, expires_at)
             VALUES (1, 'wfmd-old', 40, 1764028800000, 1764028810000)",
        )
        .await;
        let leaving = CancellationToken::new();
        let ttl = Duration::from_secs(10);
        let (keeper, keeping) = LeaseKeeper::start(settings("a", &url, ttl), leaving.clone());
        let member = keeper.join(&id, store.clone());
        let mut standing = member.standing();
        // Two looks and a term refused: well within two seconds.
        assert_eq!(
            until(&mut standing, Duration::from_secs(2), leads).await,
            Standing::Leader { term: 41 }
        );
        assert!(matches!(
            store.role(),
            InstanceRole::Leader { term: 41, .. }
        ));
        let refused = sqlx::query("SELECT wfmd_prove_term('wfmd-old', 40)")
            .execute(lease::pg(store.reader()).unwrap())
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("term 40 is over"), "{refused}");
        drop(member);
        leaving.cancel();
        drop(keeper);
        keeping.await.unwrap();
    }

    /// `wfmd_tenant_leader` and `wfmd_leadership_changes_total` of `tenant` in what
    /// `handle` renders (None: no such series), and the count of `wfmd_failover_seconds`.
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
        (
            value("wfmd_tenant_leader"),
            value("wfmd_leadership_changes_total"),
        )
    }

    // A current-thread runtime (the default): the recorder set for the test's thread
    // sees everything the keeper records, as it is driven on that thread.
    #[rstest::rstest]
    #[case::when_its_liveness_session_ends(true)]
    #[case::when_its_tenant_leaves(false)]
    #[tokio::test]
    async fn the_tenants_leader_gauge_and_its_changes_follow_the_leadership(
        #[case] session_ends: bool,
    ) {
        let (recorder, handle) = crate::telemetry::test_recorder();
        let _recording = metrics::set_default_local_recorder(&recorder);
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(Backend::Postgres, &dir);
        let (id, store) = tenant_store(&url, "alpha").await;
        let ttl = Duration::from_secs(60);
        let leaving = CancellationToken::new();
        let (keeper, keeping) = LeaseKeeper::start(settings("a", &url, ttl), leaving.clone());

        let member = crate::tasks::sync_in_tenant(&id, || keeper.join(&id, store.clone()));
        assert_eq!(
            leader_metrics(&handle, "alpha"),
            (Some(0.0), Some(0.0)),
            "a follower until it takes the lease"
        );
        let mut standing = member.standing();
        until(&mut standing, Duration::from_secs(10), leads).await;
        assert_eq!(leader_metrics(&handle, "alpha"), (Some(1.0), Some(1.0)));
        assert!(
            handle
                .render()
                .contains("wfmd_failover_seconds_count{tenant=\"alpha\"} 0"),
            "a tenant nobody led before had no failover"
        );

        if session_ends {
            // It steps down at once, though its lease would last another minute: the
            // others may take the tenant from the moment its session is gone.
            end_liveness_session(&url, "a").await;
            until(&mut standing, Duration::from_secs(5), |s| {
                s == Standing::Follower
            })
            .await;
            assert_eq!(
                store.role(),
                InstanceRole::Follower,
                "its writes are refused at once"
            );
            assert_eq!(leader_metrics(&handle, "alpha"), (Some(0.0), Some(2.0)));
            // A new session, and it leads again: a term after a failover of its own.
            assert_eq!(
                until(&mut standing, Duration::from_secs(10), leads).await,
                Standing::Leader { term: 2 }
            );
            assert_eq!(leader_metrics(&handle, "alpha"), (Some(1.0), Some(3.0)));
            assert!(
                handle
                    .render()
                    .contains("wfmd_failover_seconds_count{tenant=\"alpha\"} 1"),
                "{}",
                handle.render()
            );
            assert!(member.leave().await);
            assert_eq!(leader_metrics(&handle, "alpha"), (Some(0.0), Some(4.0)));
        } else {
            // Its tenant leaves while leading: it no longer says it leads, a second
            // change too, and the lease is free at once.
            assert!(member.leave().await, "the lease, given up");
            assert_eq!(leader_metrics(&handle, "alpha"), (Some(0.0), Some(2.0)));
            let lease = lease::leadership(&store).await.unwrap().unwrap();
            assert!(!lease.current(), "{lease:?}");
        }
        leaving.cancel();
        drop(keeper);
        keeping.await.unwrap();
        let text = handle.render();
        let unlabelled = text.lines().filter(|line| {
            [
                "wfmd_tenant_leader",
                "wfmd_leadership_changes_total",
                "wfmd_failover_seconds",
            ]
            .iter()
            .any(|name| line.starts_with(name) && !line.contains("tenant=\"alpha\""))
        });
        assert_eq!(
            unlabelled.count(),
            0,
            "every series carries its tenant: {text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_renewal_hangs_steps_down_before_its_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(Backend::Postgres, &dir);
        let (id, store) = tenant_store(&url, "alpha").await;
        let ttl = Duration::from_secs(2);
        let leaving = CancellationToken::new();
        let (keeper, keeping) = LeaseKeeper::start(settings("a", &url, ttl), leaving.clone());
        let member = keeper.join(&id, store.clone());
        let mut standing = member.standing();
        until(&mut standing, Duration::from_secs(10), leads).await;

        // Another session holds the lease's row: a's renewals wait behind it.
        let mut holding = sqlx_postgres::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("BEGIN; SELECT * FROM wfmd_cluster.leases FOR UPDATE")
            .execute(&mut holding)
            .await
            .unwrap();
        until(&mut standing, ttl, |s| s == Standing::Follower).await;
        assert_eq!(
            store.role(),
            InstanceRole::Follower,
            "its writes are refused at once"
        );
        let lease = lease::leadership(&store).await.unwrap().unwrap();
        assert!(
            lease.current(),
            "stepped down while the lease was still a's: {lease:?}"
        );
        holding.close().await.unwrap();
        drop(member);
        leaving.cancel();
        drop(keeper);
        keeping.await.unwrap();
    }

    /// The liveness session of the leader ends (its process died): the follower takes
    /// the tenant within a look or two, not when the lease of a minute runs out, and the
    /// former leader's term is refused from then on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_session_ends_loses_its_tenant_at_once() {
        let (_dir, url, id, a_store, b_store) = one_tenant_twice().await;
        let ttl = Duration::from_secs(60);
        let leaving = CancellationToken::new();
        let (a, a_keeping) = LeaseKeeper::start(settings("a", &url, ttl), leaving.clone());
        let a_member = a.join(&id, a_store.clone());
        let mut a_standing = a_member.standing();
        until(&mut a_standing, Duration::from_secs(10), leads).await;
        let (b, b_keeping) = LeaseKeeper::start(settings("b", &url, ttl), leaving.clone());
        let b_member = b.join(&id, b_store.clone());
        let mut b_standing = b_member.standing();

        let ended_at = Instant::now();
        end_liveness_session(&url, "a").await;
        assert_eq!(
            until(&mut b_standing, Duration::from_secs(5), leads).await,
            Standing::Leader { term: 2 }
        );
        assert!(
            ended_at.elapsed() < Duration::from_secs(2),
            "{:?}",
            ended_at.elapsed()
        );
        // a, which lost its own session, let go of the tenant too.
        until(&mut a_standing, Duration::from_secs(5), |s| {
            s == Standing::Follower
        })
        .await;
        let refused = a_store
            .begin_write()
            .await
            .err()
            .expect("a follows: its writes are refused");
        assert!(crate::store::is_not_leader(&refused), "{refused}");
        let refused = sqlx::query("SELECT wfmd_prove_term('a', 1)")
            .execute(lease::pg(b_store.reader()).unwrap())
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("term 1 is over"), "{refused}");
        drop((a_member, b_member, a, b));
        leaving.cancel();
        a_keeping.await.unwrap();
        b_keeping.await.unwrap();
    }
}
