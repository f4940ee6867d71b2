//! Real-time state sync: records the state changes agents make themselves.
//!
//! A real-time subscription of the managed agents is polled every `sync.interval_ms`.
//! Each poll's snapshot is compared with the last one per agent; only real changes
//! (state, queue, wrap-up code, or a newer `statusChangedTimestamp`) are looked at,
//! and each of those is checked against the agent's open interval in the store, so a
//! state wfmd set itself (already recorded by the transition engine) is not recorded a
//! second time, and the first poll after a start records exactly the agents whose
//! stored state is out of date. All changes of one poll are written in one transaction:
//! intervals (bounded by the platform's own timestamps), audit entries and
//! `agent.state_changed` events, with origin `observed`.
//!
//! The schedule is drift-free: the next poll is due one interval after the current
//! poll was sent, so polls never come faster than the interval and do not slide later
//! cycle by cycle. The subscription is replaced when it reaches `sync.renew_after` (the
//! platform expires it at 24 h), within the same cycle, and the old one is deleted. An
//! expired or deleted subscription (404) is recreated at once. Other failures leave the
//! sync stale (the last successful poll time is exposed) until a later cycle succeeds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::SyncConfig;
use crate::cxone::{
    AgentFilter, ContactCenter, CxoneError, ObservedAgent, Subscription, SubscriptionRequest,
};
use crate::domain::{AgentState, Origin};
use crate::store::audit::{self, NewEntry};
use crate::store::history::{self, NewInterval};
use crate::store::outbox::{self, EventType};
use crate::store::{Store, from_ms};

/// A `statusChangedTimestamp` moving by no more than this is jitter, not a change.
const TIMESTAMP_JITTER: TimeDelta = TimeDelta::seconds(2);

/// The audit actor of observed changes.
const ACTOR: &str = "sync";

/// What the sync needs to know.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub interval: Duration,
    pub renew_after: Duration,
    pub teams: Vec<String>,
    pub agents: Vec<String>,
    pub unfiltered: bool,
}

impl From<&SyncConfig> for SyncSettings {
    fn from(config: &SyncConfig) -> Self {
        SyncSettings {
            interval: Duration::from_millis(config.interval_ms),
            renew_after: config.renew_after,
            teams: config.teams.clone(),
            agents: config.agents.clone(),
            unfiltered: config.unfiltered,
        }
    }
}

/// What the rest of the daemon may know about the sync (for `/readyz`).
#[derive(Debug, Default)]
pub struct SyncStatus {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default, Clone)]
struct StatusInner {
    last_success: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl SyncStatus {
    /// When a poll last succeeded, and the error since, if the sync is stale.
    pub fn snapshot(&self) -> (Option<DateTime<Utc>>, Option<String>) {
        let inner = self.inner.lock().expect("sync status poisoned").clone();
        (inner.last_success, inner.last_error)
    }

    fn succeeded(&self, at: DateTime<Utc>) {
        let mut inner = self.inner.lock().expect("sync status poisoned");
        inner.last_success = Some(at);
        inner.last_error = None;
    }

    fn failed(&self, error: &CxoneError) {
        self.inner.lock().expect("sync status poisoned").last_error = Some(error.to_string());
    }
}

/// What one poll found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    /// Agents in the snapshot.
    pub agents: usize,
    /// Observed changes recorded.
    pub recorded: usize,
    /// Whether the subscription was created, renewed or recreated in this cycle.
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
    subscription: Subscription,
    created: Instant,
}

/// Keeps recorded states in step with the platform. Use [`StateSync::run`] in the
/// daemon, or [`StateSync::poll_once`] as a step in tests.
pub struct StateSync {
    store: Store,
    platform: Arc<dyn ContactCenter>,
    settings: SyncSettings,
    seen: HashMap<String, Seen>,
    active: Option<Active>,
    status: Arc<SyncStatus>,
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
        }
    }

    pub fn status(&self) -> Arc<SyncStatus> {
        Arc::clone(&self.status)
    }

    /// The id of the subscription in use, if any.
    pub fn subscription_id(&self) -> Option<&str> {
        self.active.as_ref().map(|a| a.subscription.id.as_str())
    }

    /// Polls until `stop` is cancelled, then deletes the subscription.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(interval = ?self.settings.interval, "state sync started");
        let mut next = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = stop.cancelled() => break,
            }
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
                    metrics::counter!("wfmd_sync_errors_total", "kind" => kind).increment(1);
                    tracing::warn!(error = %e, "state sync poll failed; the recorded states may be stale");
                    started
                }
            };
            if let (Some(at), _) = self.status.snapshot() {
                let age = (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::gauge!("wfmd_sync_last_success_age_seconds").set(age);
            }
            // Drift-free: one interval after this cycle's poll went out, never sooner.
            next = started + self.settings.interval;
        }
        if let Some(active) = self.active.take() {
            let deleted = tokio::time::timeout(
                Duration::from_secs(5),
                self.platform.delete_subscription(&active.subscription.id),
            )
            .await;
            if !matches!(deleted, Ok(Ok(()))) {
                tracing::info!(
                    "could not delete the subscription at shutdown; it expires by itself"
                );
            }
        }
        tracing::info!("state sync stopped");
    }

    /// One cycle, returning when its poll was sent along with the outcome.
    async fn poll_cycle(&mut self) -> Result<(Instant, PollReport), (Instant, SyncError)> {
        let mut started = Instant::now();
        let result = async {
            let subscribed = self.ensure_subscription().await?;
            started = Instant::now();
            let mut report = self.poll_current().await?;
            report.subscribed |= subscribed;
            Ok::<_, SyncError>(report)
        }
        .await;
        match result {
            Ok(report) => Ok((started, report)),
            Err(e) => {
                if let SyncError::Platform(p) = &e {
                    self.status.failed(p);
                }
                Err((started, e))
            }
        }
    }

    /// One poll, as a step for tests: subscribes (or renews) if needed, polls, records.
    pub async fn poll_once(&mut self) -> Result<PollReport, SyncError> {
        self.poll_cycle().await.map(|(_, r)| r).map_err(|(_, e)| e)
    }

    /// Makes sure a subscription younger than `renew_after` exists; true when one was
    /// created. A renewal deletes the old subscription once the new one exists.
    async fn ensure_subscription(&mut self) -> Result<bool, SyncError> {
        let due = self
            .active
            .as_ref()
            .is_none_or(|a| a.created.elapsed() >= self.settings.renew_after);
        if !due {
            return Ok(false);
        }
        let request = SubscriptionRequest {
            name: "wfmd".to_owned(),
            interval: self.settings.interval,
            agent_ids: self.agent_filter().await?,
        };
        let subscription = self.platform.create_subscription(&request).await?;
        tracing::info!(id = %subscription.id, expires_at = ?subscription.expires_at, "subscribed to agent states");
        let old = self.active.replace(Active {
            subscription,
            created: Instant::now(),
        });
        if let Some(old) = old {
            metrics::counter!("wfmd_sync_renewals_total").increment(1);
            if let Err(e) = self
                .platform
                .delete_subscription(&old.subscription.id)
                .await
            {
                tracing::info!(error = %e, id = %old.subscription.id, "could not delete the replaced subscription; it expires by itself");
            }
        }
        Ok(true)
    }

    /// The agents to watch: the configured teams and agents, every agent when both are
    /// empty, or `None` (unfiltered) when the configuration asks for that.
    async fn agent_filter(&self) -> Result<Option<Vec<String>>, CxoneError> {
        let s = &self.settings;
        if s.teams.is_empty() && s.agents.is_empty() {
            if s.unfiltered {
                return Ok(None);
            }
            let everyone = self.platform.list_agents(&AgentFilter::default()).await?;
            return Ok(Some(everyone.into_iter().map(|a| a.id).collect()));
        }
        let mut ids = s.agents.clone();
        for team in &s.teams {
            let filter = AgentFilter {
                team_id: Some(team.clone()),
                skill_id: None,
            };
            ids.extend(
                self.platform
                    .list_agents(&filter)
                    .await?
                    .into_iter()
                    .map(|a| a.id),
            );
        }
        ids.sort();
        ids.dedup();
        Ok(Some(ids))
    }

    async fn poll_current(&mut self) -> Result<PollReport, SyncError> {
        let id = self
            .subscription_id()
            .expect("a subscription exists after ensure_subscription")
            .to_owned();
        let snapshot = match self.platform.poll_subscription(&id).await {
            Err(CxoneError::NotFound { .. }) => {
                tracing::warn!(%id, "the subscription expired or was deleted; subscribing again");
                self.active = None;
                self.ensure_subscription().await?;
                let id = self.subscription_id().expect("just subscribed").to_owned();
                let snapshot = self.platform.poll_subscription(&id).await?;
                metrics::counter!("wfmd_sync_polls_total").increment(1);
                let mut report = self.record(snapshot).await?;
                report.subscribed = true;
                return Ok(report);
            }
            other => other?,
        };
        metrics::counter!("wfmd_sync_polls_total").increment(1);
        self.record(snapshot).await
    }

    /// Records the snapshot's real changes in one transaction.
    async fn record(&mut self, snapshot: Vec<ObservedAgent>) -> Result<PollReport, SyncError> {
        let polled_at = Utc::now();
        let changed: Vec<&ObservedAgent> = snapshot
            .iter()
            .filter(|agent| {
                self.seen
                    .get(&agent.agent_id)
                    .is_none_or(|before| before.changed_to(&Seen::of(agent)))
            })
            .collect();
        let mut recorded = 0;
        if !changed.is_empty() {
            let mut tx = self.store.begin_write().await?;
            for agent in &changed {
                if record_observed(&mut tx, agent, polled_at).await? {
                    recorded += 1;
                }
            }
            tx.commit().await?;
            if recorded > 0 {
                self.store.notify_outbox();
            }
        }
        for agent in &snapshot {
            self.seen.insert(agent.agent_id.clone(), Seen::of(agent));
        }
        self.status.succeeded(polled_at);
        metrics::counter!("wfmd_sync_deltas_total").increment(recorded as u64);
        Ok(PollReport {
            agents: snapshot.len(),
            recorded,
            subscribed: false,
        })
    }
}

/// Records `agent`'s observed state unless its open interval already says so (the
/// transition engine recorded it, or an earlier poll did). True when recorded.
async fn record_observed(
    conn: &mut sqlx::SqliteConnection,
    agent: &ObservedAgent,
    polled_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let at = agent.changed_at.unwrap_or(polled_at);
    let open = history::open_interval(conn, &agent.agent_id).await?;
    let up_to_date = open.as_ref().is_some_and(|open| {
        open.state() == Some(agent.state) && at <= open.started() + TIMESTAMP_JITTER
    });
    if up_to_date {
        return Ok(false);
    }
    let reason = agent.wrap_up_code.as_deref();
    let closed = history::switch_state(
        conn,
        &NewInterval {
            agent_id: &agent.agent_id,
            state: agent.state,
            reason,
            origin: Origin::Observed,
            at,
            attempt_id: None,
        },
    )
    .await?;
    let from = closed.as_ref().and_then(|c| c.state());
    let idle_ms = closed
        .as_ref()
        .filter(|c| c.state().is_some_and(AgentState::is_idle))
        .map_or(0, |c| c.ended_at.unwrap_or(c.started_at) - c.started_at);
    // The interval may have been clamped to start no earlier than the one it follows.
    let started = history::open_interval(conn, &agent.agent_id)
        .await?
        .map_or(at, |open| from_ms(open.started_at));
    let detail = json!({
        "from": from,
        "to": agent.state,
        "queue": agent.queue,
        "wrapUpCode": agent.wrap_up_code,
        "origin": Origin::Observed,
        "changedAt": crate::time::rfc3339(started),
    });
    audit::append(
        conn,
        &NewEntry {
            at: polled_at,
            actor: ACTOR,
            action: "state.observed",
            agent_id: Some(&agent.agent_id),
            subject_id: None,
            detail,
        },
    )
    .await?;
    outbox::enqueue(
        conn,
        EventType::AgentStateChanged,
        Some(&agent.agent_id),
        polled_at,
        json!({
            "agentId": agent.agent_id,
            "from": from,
            "to": agent.state,
            "reasonCode": reason,
            "queue": agent.queue,
            "origin": Origin::Observed,
            "idleMs": idle_ms,
            "changedAt": crate::time::rfc3339(started),
        }),
    )
    .await?;
    Ok(true)
}

fn error_kind(error: &CxoneError) -> &'static str {
    match error {
        CxoneError::RateLimited { .. } => "rate_limited",
        CxoneError::Server { .. } => "server",
        CxoneError::Timeout => "timeout",
        CxoneError::Connect(_) => "connect",
        CxoneError::Unauthorized | CxoneError::BadCredentials { .. } => "unauthorized",
        CxoneError::CircuitOpen { .. } => "circuit_open",
        CxoneError::NotFound { .. } => "not_found",
        CxoneError::Decode(_) => "decode",
        CxoneError::BadRequest { .. }
        | CxoneError::Forbidden { .. }
        | CxoneError::Conflict { .. } => "refused",
    }
}
