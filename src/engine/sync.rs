//! Real-time state sync: records the state changes agents make themselves.
//!
//! A change feed of the managed agents' states is polled every `sync.interval_ms`. The
//! dialect decides what the feed is (`ContactCenter::open_feed`): a real-time
//! subscription answering every agent of its view (v2), or a delta cursor answering the
//! agents changed since the last poll and a full snapshot on the first poll and after
//! any error (`incontact`); the sync treats both alike. Each poll's answer is compared
//! with the last state seen per agent; only real changes
//! (state, queue, wrap-up code, or a newer `statusChangedTimestamp`) are looked at,
//! and each of those is checked against the agent's open interval in the store, so a
//! state wfmd set itself (already recorded by the transition engine) is not recorded a
//! second time, and the first poll after a start records exactly the agents whose
//! stored state is out of date. All changes of one poll are written in one transaction:
//! intervals (bounded by the platform's own timestamps), audit entries and
//! `agent.state_changed` events, with origin `observed`.
//!
//! The schedule is drift-free: the next poll is due one interval and `ARRIVAL_MARGIN`
//! after the current poll was sent, so polls never come faster than the interval and
//! do not slide later cycle by cycle. Polls are sent when due, not queued behind other calls for the
//! request budget (which sets their share aside), and one the platform still refuses
//! as too early (429) is sent again after its `Retry-After`: the next poll then counts
//! from the one the platform accepted, so a single late poll does not make every later
//! one early. The feed is replaced when it reaches `sync.renew_after` (the platform
//! expires a subscription at 24 h; a delta cursor starts again from a full snapshot),
//! within the same cycle, and the old one is closed. An expired or deleted feed (404)
//! is reopened at once. Other failures leave the sync stale (the last successful poll
//! time is exposed) until a later cycle succeeds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::KeyedLock;
use crate::cxone::{
    AgentFilter, ChangeFeed, ContactCenter, CxoneError, FeedPoll, ObservedAgent,
    SubscriptionRequest,
};
use crate::domain::events::{Event, StateChanged};
use crate::domain::{AgentState, Origin};
use crate::store::audit::{self, NewEntry};
use crate::store::history::{self, NewInterval};
use crate::store::outbox::{self, NewEvent};
use crate::store::{Store, from_ms, to_ms};
use crate::telemetry::names::{
    SYNC_DELTAS_TOTAL, SYNC_ERRORS_TOTAL, SYNC_LAST_SUCCESS_AGE_SECONDS, SYNC_POLLS_TOTAL,
    SYNC_RENEWALS_TOTAL,
};

/// How long a stop waits for the platform to delete the feed: an undeleted one expires
/// by itself, and a hand-over waits for this work to stop.
const CLOSE_AT_STOP: Duration = Duration::from_secs(2);

/// A `statusChangedTimestamp` moving by no more than this is jitter, not a change.
const TIMESTAMP_JITTER: TimeDelta = TimeDelta::seconds(2);

/// The audit actor of observed changes.
const ACTOR: &str = "sync";

/// How often a poll the platform refuses as too early is sent again within its cycle.
const TOO_EARLY_RETRIES: u32 = 3;

/// The wait before sending a refused poll again when the platform names none.
const TOO_EARLY_WAIT: Duration = Duration::from_secs(1);

/// What the sync needs to know.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub interval: Duration,
    pub renew_after: Duration,
    pub teams: Vec<String>,
    pub agents: Vec<String>,
    pub unfiltered: bool,
}

/// What the rest of the daemon may know about the sync (for `/readyz`).
#[derive(Debug, Default)]
pub struct SyncStatus {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default, Clone)]
struct StatusInner {
    last_success: Option<DateTime<Utc>>,
    /// When the last successful poll was sent: what it saw was current then.
    last_sent: Option<DateTime<Utc>>,
    /// The agents in that poll's snapshot.
    last_seen: Arc<HashSet<String>>,
    last_error: Option<String>,
}

impl SyncStatus {
    /// When a poll last succeeded, and the error since, if the sync is stale.
    pub fn snapshot(&self) -> (Option<DateTime<Utc>>, Option<String>) {
        let inner = self.inner.lock().expect("sync status poisoned").clone();
        (inner.last_success, inner.last_error)
    }

    /// When the last successful poll was sent (its snapshot is no older), and the error
    /// since, if the sync is stale.
    pub fn sent_snapshot(&self) -> (Option<DateTime<Utc>>, Option<String>) {
        let inner = self.inner.lock().expect("sync status poisoned").clone();
        (inner.last_sent, inner.last_error)
    }

    /// Whether `agent` was in the last successful poll's snapshot.
    pub fn saw(&self, agent: &str) -> bool {
        let seen = Arc::clone(&self.inner.lock().expect("sync status poisoned").last_seen);
        seen.contains(agent)
    }

    fn succeeded(&self, at: DateTime<Utc>, sent: DateTime<Utc>, seen: HashSet<String>) {
        let mut inner = self.inner.lock().expect("sync status poisoned");
        inner.last_success = Some(at);
        inner.last_sent = Some(sent);
        inner.last_seen = Arc::new(seen);
        inner.last_error = None;
    }

    fn failed(&self, error: &CxoneError) {
        self.inner.lock().expect("sync status poisoned").last_error = Some(error.to_string());
    }
}

/// What one poll found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncPollReport {
    /// Agents in the snapshot.
    pub agents: usize,
    /// Observed changes recorded.
    pub recorded: usize,
    /// Whether the feed (subscription) was opened, renewed or reopened in this cycle.
    pub subscribed: bool,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the platform failed: {0}")]
    Platform(#[from] CxoneError),
    #[error("the database failed: {0}")]
    Store(#[from] sqlx::Error),
}

/// The last state seen of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    state: AgentState,
    queue: Option<String>,
    wrap_up_code: Option<String>,
    changed_at: Option<DateTime<Utc>>,
}

impl Seen {
    fn of(agent: &ObservedAgent) -> Seen {
        Seen {
            state: agent.state,
            queue: agent.queue.clone(),
            wrap_up_code: agent.wrap_up_code.clone(),
            changed_at: agent.changed_at,
        }
    }

    /// Whether `now` is a real change from `self`: timestamp jitter is not.
    fn changed_to(&self, now: &Seen) -> bool {
        let newer = match (self.changed_at, now.changed_at) {
            (Some(before), Some(after)) => after > before + TIMESTAMP_JITTER,
            (None, Some(_)) => true,
            _ => false,
        };
        self.state != now.state
            || self.queue != now.queue
            || self.wrap_up_code != now.wrap_up_code
            || newer
    }
}

struct Active {
    feed: ChangeFeed,
    created: Instant,
}

/// Where the sync reads the time for a subscription's age: tokio's clock, or a clock a
/// test steps by hand.
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Keeps recorded states in step with the platform. Use [`StateSync::run`] in the
/// daemon, or [`StateSync::poll_once`] as a step in tests.
pub struct StateSync {
    store: Store,
    platform: Arc<dyn ContactCenter>,
    settings: SyncSettings,
    seen: HashMap<String, Seen>,
    active: Option<Active>,
    status: Arc<SyncStatus>,
    clock: Clock,
    /// Stamps what is recorded when the platform gives no time; see
    /// [`StateSync::with_engine_clock`].
    stamps: super::clock::Clock,
    /// Agents the transition engine is changing right now; see [`StateSync::with_in_flight`].
    in_flight: Option<Arc<KeyedLock>>,
    /// Observations left for the next poll because the engine was changing the agent.
    /// A subscription answers them again anyway; a delta feed would not (nothing
    /// changed since), so they are looked at again unless the next answer has news.
    carried: HashMap<String, ObservedAgent>,
}

impl StateSync {
    pub fn new(store: Store, platform: Arc<dyn ContactCenter>, settings: SyncSettings) -> Self {
        StateSync {
            store,
            platform,
            settings,
            seen: HashMap::new(),
            active: None,
            status: Arc::default(),
            clock: Arc::new(Instant::now),
            stamps: super::clock::Clock::Wall,
            in_flight: None,
            carried: HashMap::new(),
        }
    }

    /// Leaves agents the engine is changing (`locks` held) for the next poll. The engine
    /// changes the platform first and records afterwards; a poll in between would see the
    /// new state before the engine's record exists and count it as the agent's own change.
    /// At the next poll the engine's record is there, and the state matches it.
    pub fn with_in_flight(mut self, locks: Arc<KeyedLock>) -> Self {
        self.in_flight = Some(locks);
        self
    }

    /// Stamps observed changes without a platform timestamp, and their audit entries, by
    /// the engine's clock, the one the platform's own stamps agree with. Pacing and
    /// staleness (`SyncStatus`) stay on real time.
    pub fn with_engine_clock(mut self, clock: super::clock::Clock) -> Self {
        self.stamps = clock;
        self
    }

    /// Reads subscription ages from `clock` instead of tokio's clock.
    pub fn with_clock(mut self, clock: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Reports into `status` instead of a status of its own: one a tenant keeps while
    /// the sync that reports into it is rebuilt (each time its instance starts to lead).
    pub fn with_status(mut self, status: Arc<SyncStatus>) -> Self {
        self.status = status;
        self
    }

    pub fn status(&self) -> Arc<SyncStatus> {
        Arc::clone(&self.status)
    }

    /// The id of the feed (subscription) in use, if any.
    pub fn subscription_id(&self) -> Option<&str> {
        self.active.as_ref().map(|a| a.feed.id.as_str())
    }

    /// Polls until `stop` is cancelled, then closes the feed (deletes the subscription)
    /// when the platform answers within two seconds.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(interval = ?self.settings.interval, "state sync started");
        let mut cadence = Cadence::new(self.settings.interval);
        while cadence.wait(&stop).await {
            // A stop abandons the cycle under way rather than wait for it (a hand-over
            // waits for this work to stop): its poll only reads, and its record is one
            // transaction, rolled back unless committed; the next leader polls afresh.
            let polled_at = tokio::select! {
                polled_at = self.cycle() => polled_at,
                () = stop.cancelled() => break,
            };
            cadence.polled(polled_at);
        }
        if let Some(active) = self.active.take() {
            let closed =
                tokio::time::timeout(CLOSE_AT_STOP, self.platform.close_feed(&active.feed)).await;
            if !matches!(closed, Ok(Ok(()))) {
                tracing::info!("could not close the feed at shutdown; it expires by itself");
            }
        }
        tracing::info!("state sync stopped");
    }

    /// One cycle of [`StateSync::run`], logging its outcome; returns when its poll went out.
    async fn cycle(&mut self) -> Instant {
        let started = match self.poll_cycle().await {
            Ok((started, report)) => {
                tracing::debug!(?report, "sync poll");
                started
            }
            Err((started, e)) => {
                let kind = match &e {
                    SyncError::Platform(p) => error_kind(p),
                    SyncError::Store(_) => "database",
                };
                metrics::counter!(SYNC_ERRORS_TOTAL, "kind" => kind).increment(1);
                tracing::warn!(error = %e, "state sync poll failed; the recorded states may be stale");
                started
            }
        };
        if let (Some(at), _) = self.status.snapshot() {
            let age = (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!(SYNC_LAST_SUCCESS_AGE_SECONDS).set(age);
        }
        started
    }

    /// One cycle, returning when its accepted poll was sent along with the outcome.
    async fn poll_cycle(&mut self) -> Result<(Instant, SyncPollReport), (Instant, SyncError)> {
        let mut sent = Instant::now();
        match self.subscribe_and_poll(&mut sent).await {
            Ok(report) => Ok((sent, report)),
            Err(e) => {
                if let SyncError::Platform(p) = &e {
                    self.status.failed(p);
                }
                Err((sent, e))
            }
        }
    }

    async fn subscribe_and_poll(
        &mut self,
        sent: &mut Instant,
    ) -> Result<SyncPollReport, SyncError> {
        let subscribed = self.ensure_feed().await?;
        let mut report = self.poll_current(sent).await?;
        report.subscribed |= subscribed;
        Ok(report)
    }

    /// One poll, as a step for tests: opens (or renews) the feed if needed, polls,
    /// records.
    pub async fn poll_once(&mut self) -> Result<SyncPollReport, SyncError> {
        self.poll_cycle().await.map(|(_, r)| r).map_err(|(_, e)| e)
    }

    /// Makes sure a feed younger than `renew_after` is open; true when one was opened.
    /// A renewal closes the old feed once the new one is open.
    async fn ensure_feed(&mut self) -> Result<bool, SyncError> {
        let due = self
            .active
            .as_ref()
            .is_none_or(|a| (self.clock)() - a.created >= self.settings.renew_after);
        if !due {
            return Ok(false);
        }
        let request = SubscriptionRequest {
            name: "wfmd".to_owned(),
            interval: self.settings.interval,
            agent_ids: self.agent_filter().await?,
        };
        let feed = self.platform.open_feed(&request).await?;
        tracing::info!(id = %feed.id, expires_at = ?feed.expires_at, "opened the feed of agent states");
        let old = self.active.replace(Active {
            feed,
            created: (self.clock)(),
        });
        if let Some(old) = old {
            metrics::counter!(SYNC_RENEWALS_TOTAL).increment(1);
            if let Err(e) = self.platform.close_feed(&old.feed).await {
                tracing::info!(error = %e, id = %old.feed.id, "could not close the replaced feed; it expires by itself");
            }
        }
        Ok(true)
    }

    /// The agents to watch: [`managed_agents`], or `None` (unfiltered) when the
    /// configuration asks for that.
    async fn agent_filter(&self) -> Result<Option<Vec<String>>, CxoneError> {
        let s = &self.settings;
        if s.unfiltered && s.teams.is_empty() && s.agents.is_empty() {
            return Ok(None);
        }
        managed_agents(self.platform.as_ref(), s).await.map(Some)
    }

    async fn poll_current(&mut self, sent: &mut Instant) -> Result<SyncPollReport, SyncError> {
        let answer = match self.poll_paced(sent).await {
            Err(CxoneError::NotFound { .. }) => {
                let id = self.subscription_id().unwrap_or_default().to_owned();
                tracing::warn!(%id, "the feed expired or was deleted; opening it again");
                self.active = None;
                self.ensure_feed().await?;
                let answer = self.poll_paced(sent).await?;
                metrics::counter!(SYNC_POLLS_TOTAL).increment(1);
                let agents = self.with_carried(answer.agents);
                let mut report = self.record(agents, *sent).await?;
                report.subscribed = true;
                return Ok(report);
            }
            other => other?,
        };
        metrics::counter!(SYNC_POLLS_TOTAL).increment(1);
        let agents = self.with_carried(answer.agents);
        self.record(agents, *sent).await
    }

    /// `agents` plus the observations carried from the last poll of agents it lacks.
    fn with_carried(&mut self, mut agents: Vec<ObservedAgent>) -> Vec<ObservedAgent> {
        if self.carried.is_empty() {
            return agents;
        }
        let answered: HashSet<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
        agents.extend(
            self.carried
                .drain()
                .filter(|(id, _)| !answered.contains(id))
                .map(|(_, agent)| agent),
        );
        agents
    }

    /// Polls the open feed, and when the platform refuses the poll as too early (429)
    /// sends it again after its `Retry-After`, up to [`TOO_EARLY_RETRIES`] times.
    /// `sent` ends as the instant the last poll went out: the one the platform
    /// accepted, which it measures the interval to the next poll from.
    async fn poll_paced(&mut self, sent: &mut Instant) -> Result<FeedPoll, CxoneError> {
        let feed = &mut self
            .active
            .as_mut()
            .expect("a feed is open after ensure_feed")
            .feed;
        let mut refused = 0;
        loop {
            *sent = Instant::now();
            match self.platform.poll_feed(feed).await {
                Err(CxoneError::RateLimited { retry_after }) if refused < TOO_EARLY_RETRIES => {
                    refused += 1;
                    metrics::counter!(SYNC_ERRORS_TOTAL, "kind" => "rate_limited").increment(1);
                    let wait = retry_after.unwrap_or(TOO_EARLY_WAIT);
                    tracing::info!(
                        ?wait,
                        "the platform found the poll too early; sending it again after its Retry-After"
                    );
                    tokio::time::sleep(wait).await;
                }
                answer => return answer,
            }
        }
    }

    /// Records the snapshot's real changes in one transaction; `sent` is when its poll
    /// went out.
    async fn record(
        &mut self,
        snapshot: Vec<ObservedAgent>,
        sent: Instant,
    ) -> Result<SyncPollReport, SyncError> {
        let polled_at = Utc::now();
        let stamp = self.stamps.now();
        let sent_at = TimeDelta::from_std(sent.elapsed())
            .ok()
            .and_then(|ago| polled_at.checked_sub_signed(ago))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // The agents recorded are locked until the commit, as the engine locks an agent
        // from its compliance check to its commit: a change in flight is left for the
        // next poll, and no change starts between this poll's look and its record.
        let locks = self.in_flight.clone();
        let mut guards = Vec::new();
        let mut in_flight = |agent: &ObservedAgent| match &locks {
            None => false,
            Some(l) => match l.try_lock(&agent.agent_id) {
                Some(guard) => {
                    guards.push(guard);
                    false
                }
                None => true,
            },
        };
        let (changed, deferred): (Vec<&ObservedAgent>, Vec<&ObservedAgent>) = snapshot
            .iter()
            .filter(|agent| {
                self.seen
                    .get(&agent.agent_id)
                    .is_none_or(|before| before.changed_to(&Seen::of(agent)))
            })
            .partition(|agent| !in_flight(agent));
        let recorded = if changed.is_empty() {
            0
        } else {
            let mut tx = self.store.begin_write().await?;
            let recorded = record_observed(&mut tx, &changed, stamp).await?;
            tx.commit().await?;
            if recorded > 0 {
                self.store.notify_outbox();
            }
            recorded
        };
        drop(guards);
        for agent in &snapshot {
            self.seen.insert(agent.agent_id.clone(), Seen::of(agent));
        }
        // Unseen, so the next poll looks at them again.
        for agent in deferred {
            self.carried
                .insert(agent.agent_id.clone(), (*agent).clone());
            self.seen.remove(&agent.agent_id);
        }
        let seen = snapshot.iter().map(|a| a.agent_id.clone()).collect();
        self.status.succeeded(polled_at, sent_at, seen);
        metrics::counter!(SYNC_DELTAS_TOTAL).increment(recorded as u64);
        Ok(SyncPollReport {
            agents: snapshot.len(),
            recorded,
            subscribed: false,
        })
    }
}

/// The agents wfmd keeps in step (and whose schedules it follows): the configured
/// teams' agents and the configured agents, or every agent of the tenant when both
/// lists are empty; sorted, without duplicates.
pub async fn managed_agents(
    platform: &dyn ContactCenter,
    settings: &SyncSettings,
) -> Result<Vec<String>, CxoneError> {
    let mut ids = settings.agents.clone();
    if settings.teams.is_empty() && settings.agents.is_empty() {
        let everyone = platform.list_agents(&AgentFilter::default()).await?;
        ids.extend(everyone.into_iter().map(|a| a.id));
    }
    for team in &settings.teams {
        let filter = AgentFilter {
            team_id: Some(team.clone()),
            skill_id: None,
        };
        ids.extend(
            platform
                .list_agents(&filter)
                .await?
                .into_iter()
                .map(|a| a.id),
        );
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// What the poll schedule leaves beyond the interval. The platform measures the
/// interval between the polls' arrivals, and wfmd knows only when it sent them: a poll
/// sent exactly one interval after the last arrives too early whenever it travels
/// quicker than the one before (a busy process sending it a little later, a network
/// path's jitter), and is refused and sent again a second later. Seen with a hundred
/// open feed clients whose heartbeats fell due with a poll: a refusal a minute. A
/// quarter second covers such jitter and costs 2.5 % of the polls at the fastest
/// interval the platform allows (10 s).
const ARRIVAL_MARGIN: Duration = Duration::from_millis(250);

/// The drift-free poll schedule: the next poll is due one `interval` and
/// [`ARRIVAL_MARGIN`] after the last one went out (at once when that cycle itself took
/// longer). So polls never come faster than the interval, and a slow cycle does not
/// push all later ones back.
struct Cadence {
    interval: Duration,
    next: Instant,
}

impl Cadence {
    fn new(interval: Duration) -> Cadence {
        Cadence {
            interval,
            next: Instant::now(),
        }
    }

    /// Waits until the next poll is due; false when `stop` came first.
    async fn wait(&self, stop: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep_until(self.next) => true,
            () = stop.cancelled() => false,
        }
    }

    /// Notes when a poll went out.
    fn polled(&mut self, at: Instant) {
        self.next = at + self.interval + ARRIVAL_MARGIN;
    }
}

/// Records the observed states of `agents` whose open interval does not already say
/// so (the transition engine recorded it, or an earlier poll did): intervals, audit
/// entries and events, a few statements for any number of agents. Returns how many.
async fn record_observed(
    conn: &mut impl crate::store::AsConn,
    agents: &[&ObservedAgent],
    polled_at: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let ids: Vec<&str> = agents.iter().map(|a| a.agent_id.as_str()).collect();
    let open = history::open_intervals(conn, &ids).await?;
    let stale: Vec<(&ObservedAgent, DateTime<Utc>)> = agents
        .iter()
        .map(|agent| (*agent, agent.changed_at.unwrap_or(polled_at)))
        .filter(|(agent, at)| {
            !open.get(&agent.agent_id).is_some_and(|open| {
                open.state() == Some(agent.state) && *at <= open.started() + TIMESTAMP_JITTER
            })
        })
        .collect();
    if stale.is_empty() {
        return Ok(0);
    }
    let changes: Vec<NewInterval<'_>> = stale
        .iter()
        .map(|(agent, at)| NewInterval {
            agent_id: &agent.agent_id,
            state: agent.state,
            reason: agent.wrap_up_code.as_deref(),
            origin: Origin::Observed,
            at: *at,
            attempt_id: None,
        })
        .collect();
    let closed = history::switch_states(conn, &changes).await?;
    let mut entries = Vec::with_capacity(stale.len());
    let mut events = Vec::with_capacity(stale.len());
    for (agent, at) in &stale {
        let before = closed.get(&agent.agent_id);
        let from = before.and_then(|c| c.state());
        let idle_ms = before.map_or(0, |c| c.idle_ms());
        let started = before.map_or(*at, |c| from_ms(c.next_start(to_ms(*at))));
        let changed_at = crate::time::rfc3339(started);
        entries.push(NewEntry {
            at: polled_at,
            actor: ACTOR,
            action: "state.observed",
            agent_id: Some(&agent.agent_id),
            subject_id: None,
            detail: json!({
                "from": from,
                "to": agent.state,
                "queue": agent.queue,
                "wrapUpCode": agent.wrap_up_code,
                "origin": Origin::Observed,
                "changedAt": changed_at,
            }),
        });
        events.push(NewEvent {
            agent_id: Some(&agent.agent_id),
            at: polled_at,
            event: Event::AgentStateChanged(StateChanged {
                agent_id: agent.agent_id.clone(),
                from,
                to: agent.state,
                reason_code: agent.wrap_up_code.clone(),
                origin: Origin::Observed,
                idle_ms,
                latency_ms: None,
                attempt_id: None,
                queue: Some(agent.queue.clone()),
                changed_at: Some(changed_at),
                deferred_id: None,
            }),
        });
    }
    audit::append_all(conn, &entries).await?;
    outbox::enqueue_all(conn, &events).await?;
    Ok(stale.len())
}

pub(super) fn error_kind(error: &CxoneError) -> &'static str {
    match error {
        CxoneError::RateLimited { .. } => "rate_limited",
        CxoneError::Server { .. } => "server",
        CxoneError::Timeout => "timeout",
        CxoneError::Connect(_) => "connect",
        CxoneError::Unauthorized | CxoneError::BadCredentials { .. } => "unauthorized",
        CxoneError::CircuitOpen { .. } => "circuit_open",
        CxoneError::NotFound { .. } => "not_found",
        CxoneError::Decode(_) => "decode",
        CxoneError::NotOffered { .. } => "not_offered",
        CxoneError::BadRequest { .. }
        | CxoneError::Forbidden { .. }
        | CxoneError::Conflict { .. }
        | CxoneError::Redirected { .. } => "refused",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::store::on;
    use crate::store::testing::temp_store;

    /// Polls answer the scripted snapshots; every poll is recorded with its instant.
    use crate::cxone::fake::FakePlatform as ScriptedPlatform;

    fn t(seconds: i64) -> DateTime<Utc> {
        from_ms(1_790_000_000_000 + seconds * 1000)
    }

    fn seen(agent: &str, state: AgentState, at: i64) -> ObservedAgent {
        ObservedAgent {
            agent_id: agent.into(),
            state,
            queue: (state == AgentState::OnContact).then(|| "Billing".to_owned()),
            wrap_up_code: (state == AgentState::Acw).then(|| "RESOLVED".to_owned()),
            changed_at: Some(t(at)),
        }
    }

    fn settings(interval_s: u64, renew_s: u64) -> SyncSettings {
        SyncSettings {
            interval: Duration::from_secs(interval_s),
            renew_after: Duration::from_secs(renew_s),
            teams: Vec::new(),
            agents: vec!["u_001".into(), "u_002".into()],
            unfiltered: false,
        }
    }

    /// (state, start, end) of every interval of `agent`, oldest first.
    async fn intervals(store: &Store, agent: &str) -> Vec<(String, i64, Option<i64>)> {
        let rows = history::overlapping(store.reader(), agent, from_ms(0), t(1_000_000))
            .await
            .unwrap();
        rows.into_iter()
            .map(|r| {
                let seconds = |ms: i64| (ms - 1_790_000_000_000) / 1000;
                (r.state, seconds(r.started_at), r.ended_at.map(seconds))
            })
            .collect()
    }

    #[tokio::test]
    async fn scripted_snapshots_record_exactly_the_real_changes() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(ScriptedPlatform::default());
        use AgentState::*;
        let jittered = ObservedAgent {
            changed_at: Some(t(0) + TimeDelta::milliseconds(900)),
            ..seen("u_002", Ready, 0)
        };
        *platform.snapshots.lock().unwrap() = VecDeque::from([
            vec![seen("u_001", Ready, 0), seen("u_002", Ready, 0)],
            // Identical: nothing.
            vec![seen("u_001", Ready, 0), seen("u_002", Ready, 0)],
            // A contact for u_001; timestamp jitter only for u_002.
            vec![seen("u_001", OnContact, 30), jittered.clone()],
            vec![seen("u_001", Acw, 200), jittered],
            // Back to READY; u_002 went away and came back between polls.
            vec![seen("u_001", Ready, 260), seen("u_002", Ready, 250)],
        ]);
        let mut sync = StateSync::new(store.clone(), platform.clone(), settings(10, 3600));

        let mut recorded = Vec::new();
        for _ in 0..5 {
            recorded.push(sync.poll_once().await.unwrap().recorded);
        }

        assert_eq!(recorded, [2, 0, 1, 1, 2]);
        assert_eq!(
            intervals(&store, "u_001").await,
            [
                ("READY".into(), 0, Some(30)),
                ("ON_CONTACT".into(), 30, Some(200)),
                ("ACW".into(), 200, Some(260)),
                ("READY".into(), 260, None),
            ]
        );
        assert_eq!(
            intervals(&store, "u_002").await,
            [("READY".into(), 0, Some(250)), ("READY".into(), 250, None)]
        );
        let events: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox_events WHERE json_extract(payload, '$.data.origin') = 'observed'",
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(events, 6);
        let audited: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'state.observed'"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(audited, 6);
        assert!(audit::verify(store.reader()).await.unwrap().is_intact());
    }

    #[tokio::test]
    async fn a_state_wfmd_set_itself_is_not_recorded_again() {
        let (store, _dir) = temp_store().await;
        // The transition engine already recorded NOT_READY at the platform's timestamp.
        let mut tx = store.begin_write().await.unwrap();
        history::switch_state(
            &mut tx,
            &NewInterval {
                agent_id: "u_001",
                state: AgentState::NotReady,
                reason: Some("BREAK"),
                origin: Origin::Api,
                at: t(100),
                attempt_id: Some("attempt-1"),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let platform = Arc::new(ScriptedPlatform::default());
        *platform.steady.lock().unwrap() = vec![seen("u_001", AgentState::NotReady, 100)];
        let mut sync = StateSync::new(store.clone(), platform, settings(10, 3600));

        let report = sync.poll_once().await.unwrap();

        assert_eq!(report.recorded, 0);
        assert_eq!(
            intervals(&store, "u_001").await,
            [("NOT_READY".into(), 100, None)]
        );
    }

    #[tokio::test]
    async fn an_agent_the_engine_is_changing_waits_for_the_next_poll() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(ScriptedPlatform::default());
        *platform.steady.lock().unwrap() = vec![
            seen("u_001", AgentState::NotReady, 100),
            seen("u_002", AgentState::Ready, 100),
        ];
        let locks = Arc::new(KeyedLock::default());
        let mut sync = StateSync::new(store.clone(), platform, settings(10, 3600))
            .with_in_flight(locks.clone());

        // The engine has changed u_001 on the platform and not recorded it yet.
        let engine_working = locks.lock("u_001").await;
        assert_eq!(sync.poll_once().await.unwrap().recorded, 1);
        assert_eq!(intervals(&store, "u_001").await, []);

        // Had the engine recorded it, the next poll would find it there; here it did
        // not (say its record failed), so the poll records what the platform shows.
        drop(engine_working);
        assert_eq!(sync.poll_once().await.unwrap().recorded, 1);
        assert_eq!(
            intervals(&store, "u_001").await,
            [("NOT_READY".into(), 100, None)]
        );
    }

    #[tokio::test]
    async fn a_poll_holds_the_agents_it_records_until_its_commit_so_no_change_starts_between() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(ScriptedPlatform::default());
        *platform.steady.lock().unwrap() = vec![seen("u_001", AgentState::NotReady, 100)];
        let locks = Arc::new(KeyedLock::default());
        let mut sync = StateSync::new(store.clone(), platform, settings(10, 3600))
            .with_in_flight(locks.clone());

        // The only write connection is busy, so the poll's record waits for its commit.
        let writer = store.begin_write().await.unwrap();
        let poll = tokio::spawn(async move { sync.poll_once().await.map(|r| r.recorded) });
        crate::store::testing::eventually_within(
            "the poll never took u_001",
            Duration::from_secs(30),
            async || locks.is_held("u_001"),
        )
        .await;
        assert!(
            locks.try_lock("u_001").is_none(),
            "the engine cannot start a change of u_001 while the poll records it"
        );
        assert!(!poll.is_finished());
        drop(writer);
        assert_eq!(poll.await.unwrap().unwrap(), 1);
        assert!(
            locks.try_lock("u_001").is_some(),
            "released after the commit"
        );
        assert_eq!(
            intervals(&store, "u_001").await,
            [("NOT_READY".into(), 100, None)]
        );
    }

    #[tokio::test]
    async fn an_agent_left_for_the_next_poll_is_looked_at_even_if_a_delta_omits_it() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(ScriptedPlatform::default());
        // A delta feed: the change is answered once, then nothing.
        *platform.snapshots.lock().unwrap() =
            VecDeque::from([vec![seen("u_001", AgentState::NotReady, 100)], Vec::new()]);
        let locks = Arc::new(KeyedLock::default());
        let mut sync = StateSync::new(store.clone(), platform, settings(10, 3600))
            .with_in_flight(locks.clone());
        let engine_working = locks.lock("u_001").await;
        assert_eq!(sync.poll_once().await.unwrap().recorded, 0);
        // The engine's record failed (nothing stored): the next poll, empty as it is,
        // still records what the platform showed.
        drop(engine_working);
        assert_eq!(sync.poll_once().await.unwrap().recorded, 1);
        assert_eq!(
            intervals(&store, "u_001").await,
            [("NOT_READY".into(), 100, None)]
        );
        assert_eq!(sync.poll_once().await.unwrap().recorded, 0, "once only");
    }

    #[tokio::test]
    async fn the_first_poll_after_a_restart_records_only_out_of_date_agents() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(ScriptedPlatform::default());
        *platform.steady.lock().unwrap() = vec![
            seen("u_001", AgentState::Ready, 0),
            seen("u_002", AgentState::Idle, 0),
        ];
        let mut before = StateSync::new(store.clone(), platform.clone(), settings(10, 3600));
        assert_eq!(before.poll_once().await.unwrap().recorded, 2);
        drop(before);

        // While wfmd was down, u_002 changed; u_001 did not.
        *platform.steady.lock().unwrap() = vec![
            seen("u_001", AgentState::Ready, 0),
            seen("u_002", AgentState::Paused, 50),
        ];
        let mut after = StateSync::new(store.clone(), platform, settings(10, 3600));
        let report = after.poll_once().await.unwrap();

        assert_eq!(report.recorded, 1);
        assert_eq!(intervals(&store, "u_001").await.len(), 1);
        assert_eq!(
            intervals(&store, "u_002").await,
            [("IDLE".into(), 0, Some(50)), ("PAUSED".into(), 50, None)]
        );
    }

    #[tokio::test]
    async fn an_expired_subscription_is_recreated_within_the_same_cycle() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(ScriptedPlatform::default());
        *platform.steady.lock().unwrap() = vec![seen("u_001", AgentState::Ready, 0)];
        let mut sync = StateSync::new(store.clone(), platform.clone(), settings(10, 3600));
        sync.poll_once().await.unwrap();
        platform.expired.lock().unwrap().push("sub_1".into());
        *platform.steady.lock().unwrap() = vec![seen("u_001", AgentState::Idle, 40)];

        let report = sync.poll_once().await.unwrap();

        assert!(report.subscribed);
        assert_eq!(report.recorded, 1, "the change is not lost");
        assert_eq!(sync.subscription_id(), Some("sub_2"));
    }

    #[tokio::test]
    async fn a_stop_abandons_the_poll_under_way() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(ScriptedPlatform::default());
        // The first poll answers after an hour: a platform that stopped answering.
        platform
            .latencies
            .lock()
            .unwrap()
            .push_back(Duration::from_secs(3600));
        let sync = StateSync::new(store.clone(), platform.clone(), settings(10, 3600));
        let stop = CancellationToken::new();
        let running = tokio::spawn(sync.run(stop.clone()));
        crate::store::testing::eventually("no poll went out", async || {
            !platform.polls.lock().unwrap().is_empty()
        })
        .await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the stop waited for the poll under way")
            .unwrap();
        assert_eq!(
            *platform.deleted.lock().unwrap(),
            ["sub_1"],
            "the feed is closed still"
        );
    }

    #[tokio::test]
    async fn an_outage_makes_the_sync_stale_until_a_poll_succeeds_again() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(ScriptedPlatform::default());
        *platform.steady.lock().unwrap() = vec![seen("u_001", AgentState::Ready, 0)];
        let mut sync = StateSync::new(store, platform.clone(), settings(10, 3600));
        let status = sync.status();
        assert_eq!(
            status.snapshot(),
            (None, None),
            "stale before the first poll"
        );
        sync.poll_once().await.unwrap();
        let (last_success, error) = status.snapshot();
        assert!(last_success.is_some() && error.is_none());

        *platform.failing_polls.lock().unwrap() = 2;
        for _ in 0..2 {
            assert!(sync.poll_once().await.is_err());
            let (still, error) = status.snapshot();
            assert_eq!(still, last_success, "the last good poll stays visible");
            assert!(error.unwrap().contains("503"));
        }
        *platform.steady.lock().unwrap() = vec![seen("u_001", AgentState::Idle, 40)];
        let report = sync.poll_once().await.unwrap();
        assert_eq!(
            report.recorded, 1,
            "the change made during the outage is caught up"
        );
        let (recovered, error) = status.snapshot();
        assert!(recovered > last_success && error.is_none());
    }

    #[tokio::test]
    async fn renewal_at_the_threshold_misses_no_cycle_and_deletes_the_old_one() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(ScriptedPlatform::default());
        *platform.steady.lock().unwrap() = vec![seen("u_001", AgentState::Ready, 0)];
        // A clock stepped by hand, one interval per cycle; renew after three intervals.
        let base = Instant::now();
        let elapsed = Arc::new(Mutex::new(Duration::ZERO));
        let clock = {
            let elapsed = elapsed.clone();
            move || base + *elapsed.lock().unwrap()
        };
        let mut sync = StateSync::new(store, platform.clone(), settings(10, 30)).with_clock(clock);

        for cycle in 0..10 {
            *elapsed.lock().unwrap() = Duration::from_secs(10 * cycle);
            sync.poll_once().await.unwrap();
        }

        let ids: Vec<String> = platform
            .polls
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(
            ids,
            [
                "sub_1", "sub_1", "sub_1", "sub_2", "sub_2", "sub_2", "sub_3", "sub_3", "sub_3",
                "sub_4"
            ],
            "one poll per cycle, on the new subscription from the cycle it is due"
        );
        assert_eq!(
            *platform.deleted.lock().unwrap(),
            ["sub_1", "sub_2", "sub_3"]
        );
    }

    /// When each poll was sent, in ms after `started`, to the quarter second below: the
    /// database's own timers move paused time on by a millisecond or so each cycle.
    fn sent_ms(platform: &ScriptedPlatform, started: Instant) -> Vec<u128> {
        let polls = platform.polls.lock().unwrap();
        polls
            .iter()
            .map(|(_, at)| (*at - started).as_millis() / 250 * 250)
            .collect()
    }

    #[tokio::test]
    async fn a_poll_refused_as_too_early_goes_again_after_retry_after_and_paces_the_next() {
        let (store, _dir) = temp_store().await;
        // Paused once the database is open (its pool's timeouts would fire at once); the
        // polls' empty snapshots write nothing, so the loop never waits on it.
        tokio::time::pause();
        let platform = Arc::new(ScriptedPlatform::default());
        let sync = StateSync::new(store, platform.clone(), settings(10, 23 * 3_600));
        let stop = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(sync.run(stop.clone()));
        // Time is paused: each sleep lets the sync run exactly to that instant.
        tokio::time::sleep(Duration::from_secs(5)).await;
        // The poll at 10 s is refused (a budget wait or a retry made the one before
        // late, as the platform saw it).
        *platform.too_early_polls.lock().unwrap() = 1;
        tokio::time::sleep(Duration::from_secs(40)).await;
        stop.cancel();
        task.await.unwrap();

        let sent = sent_ms(&platform, started);
        // 10.25 s refused, sent again 3 s later and accepted; the next counts from there.
        assert_eq!(sent, [0, 10_250, 13_250, 23_500, 33_750, 44_000]);
    }

    #[tokio::test]
    async fn a_poll_reaching_the_platform_quicker_than_the_one_before_is_not_refused() {
        let (store, _dir) = temp_store().await;
        tokio::time::pause();
        let platform = Arc::new(ScriptedPlatform::default());
        // The platform spaces polls by their arrival; the first takes 200 ms to reach
        // it (sent late by a busy process, or over a slow path), the others none.
        *platform.spacing_by_arrival.lock().unwrap() = Some(Duration::from_secs(10));
        platform
            .latencies
            .lock()
            .unwrap()
            .push_back(Duration::from_millis(200));
        let sync = StateSync::new(store, platform.clone(), settings(10, 23 * 3_600));
        let stop = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(sync.run(stop.clone()));
        tokio::time::sleep(Duration::from_secs(35)).await;
        stop.cancel();
        task.await.unwrap();

        let sent = sent_ms(&platform, started);
        // Sent at the interval exactly, the second poll would arrive 9.8 s after the
        // first, be refused, and go again a second later: [0, 10000, 11000, …].
        assert_eq!(sent, [0, 10_250, 20_500, 30_750], "no poll refused");
    }

    #[tokio::test(start_paused = true)]
    async fn polls_never_come_faster_than_the_interval_nor_drift_over_a_thousand_cycles() {
        use rand::{Rng, SeedableRng};
        let interval = Duration::from_secs(10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Mostly quick cycles, sometimes slower than the interval itself.
        let latencies: Vec<Duration> = (0..1_000)
            .map(|_| {
                let ms = if rng.random_bool(0.05) {
                    rng.random_range(10_000..15_000)
                } else {
                    rng.random_range(0..3_000)
                };
                Duration::from_millis(ms)
            })
            .collect();
        let stop = CancellationToken::new();
        let mut cadence = Cadence::new(interval);
        let mut polls = Vec::new();
        for latency in &latencies {
            assert!(cadence.wait(&stop).await);
            let polled_at = Instant::now();
            polls.push(polled_at);
            // The cycle: the poll's answer, recording, logging.
            tokio::time::sleep(*latency).await;
            cadence.polled(polled_at);
        }

        assert_eq!(polls.len(), 1_000);
        for (k, pair) in polls.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= interval + ARRIVAL_MARGIN,
                "poll {} came {gap:?} after the one before",
                k + 1
            );
            // Never later than needed: one interval and the margin, or at once after a
            // slow cycle.
            assert!(
                gap <= (interval + ARRIVAL_MARGIN).max(latencies[k]),
                "poll {} drifted: {gap:?}",
                k + 1
            );
        }
    }
}
