//! The one in-memory [`ContactCenter`] the engine's unit tests share: agents with
//! states, scripted schedules and break statuses, an optional bulk schedule export, and a
//! scripted subscription feed, recording every call it answers.
//!
//! Behaviour a test does not script is that of a quiet tenant: an agent with no break
//! status owes none, a poll with nothing queued answers `steady`. Unknown agents are
//! `NotFound`, as on the platform.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::time::Instant;

use super::{
    Agent, AgentFilter, AgentSnapshot, ContactCenter, CxoneError, ObservedAgent, StateChange,
    Subscription, SubscriptionRequest,
};
use crate::domain::{AgentState, BreakStatus, Schedule};

#[derive(Default)]
pub struct FakePlatform {
    /// Each agent's schedule, or the error asking for it answers.
    pub schedules: Mutex<HashMap<String, Result<Schedule, CxoneError>>>,
    pub breaks: Mutex<HashMap<String, BreakStatus>>,
    pub states: Mutex<HashMap<String, AgentState>>,
    /// What the last change of each agent answered (reason and time included).
    pub changes: Mutex<HashMap<String, AgentSnapshot>>,
    /// Every call answered, as `list`, `export`, `state ID`, `set ID STATE REASON`,
    /// `schedule ID` or `breaks ID`.
    pub calls: Mutex<Vec<String>>,
    /// Every state change fails with this error while set.
    pub fail_set_with: Mutex<Option<CxoneError>>,
    /// Every break-status lookup fails with this error while set.
    pub fail_breaks_with: Mutex<Option<CxoneError>>,
    /// While set, reading an agent's state shows this state whatever was changed (a
    /// platform that answered a change it did not make, or shows it late).
    pub shows: Mutex<Option<AgentState>>,
    /// Offers the bulk schedule export (a dialect that has one).
    pub exports: AtomicBool,
    /// While set, a schedule lookup answers only once the agent's break status has been
    /// asked for: a caller that asks for the two one after the other never gets an
    /// answer.
    pub schedule_awaits_breaks: AtomicBool,
    breaks_asked: tokio::sync::Notify,

    // ---- The subscription feed. ----
    /// Poll answers, in order.
    pub snapshots: Mutex<VecDeque<Vec<ObservedAgent>>>,
    /// Answered when the script has run out.
    pub steady: Mutex<Vec<ObservedAgent>>,
    pub created: Mutex<Vec<String>>,
    pub deleted: Mutex<Vec<String>>,
    /// Every poll with its subscription id and (tokio) instant.
    pub polls: Mutex<Vec<(String, Instant)>>,
    /// Polls of these subscription ids answer 404.
    pub expired: Mutex<Vec<String>>,
    /// How long each poll takes, in order (then zero).
    pub latencies: Mutex<VecDeque<Duration>>,
    /// This many polls fail with 503 first.
    pub failing_polls: Mutex<u32>,
    /// This many polls are refused as too early (429, Retry-After 3 s) first.
    pub too_early_polls: Mutex<u32>,
    /// While set, a poll that reaches the platform (after its latency) sooner than this
    /// after the last one accepted is refused (429, Retry-After 1 s), as the platform
    /// measures a subscription's interval: between arrivals.
    pub spacing_by_arrival: Mutex<Option<Duration>>,
    last_accepted_arrival: Mutex<Option<Instant>>,
}

impl FakePlatform {
    /// An agent, READY, with this schedule.
    pub fn add_agent(&self, id: &str, schedule: Schedule) {
        self.set(id, schedule);
        self.states
            .lock()
            .unwrap()
            .insert(id.into(), AgentState::Ready);
    }

    /// Sets the agent's schedule.
    pub fn set(&self, agent: &str, schedule: Schedule) {
        self.schedules
            .lock()
            .unwrap()
            .insert(agent.into(), Ok(schedule));
    }

    /// How many calls were answered whose record starts with `prefix`.
    pub fn calls(&self, prefix: &str) -> usize {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.starts_with(prefix)).count()
    }

    fn note(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn not_found(agent_id: &str) -> CxoneError {
        CxoneError::NotFound {
            message: format!("unknown user {agent_id}"),
        }
    }

    /// Counts one down from `counter`, true while it was above zero.
    fn take(counter: &Mutex<u32>) -> bool {
        let mut left = counter.lock().unwrap();
        let some = *left > 0;
        *left = left.saturating_sub(1);
        some
    }
}

#[async_trait]
impl ContactCenter for FakePlatform {
    /// The agents with a schedule, in id order.
    async fn list_agents(&self, _: &AgentFilter) -> Result<Vec<Agent>, CxoneError> {
        self.note("list".into());
        let mut ids: Vec<String> = self.schedules.lock().unwrap().keys().cloned().collect();
        ids.sort();
        Ok(ids
            .into_iter()
            .map(|id| Agent {
                name: id.clone(),
                id,
                team_id: None,
                team_name: None,
                skills: Vec::new(),
            })
            .collect())
    }

    async fn agent_state(&self, agent_id: &str) -> Result<AgentSnapshot, CxoneError> {
        self.note(format!("state {agent_id}"));
        if let Some(state) = *self.shows.lock().unwrap() {
            return Ok(AgentSnapshot {
                agent_id: agent_id.into(),
                state,
                reason: None,
                changed_at: None,
            });
        }
        if let Some(changed) = self.changes.lock().unwrap().get(agent_id) {
            return Ok(changed.clone());
        }
        let state = self.states.lock().unwrap().get(agent_id).copied();
        let state = state.ok_or_else(|| Self::not_found(agent_id))?;
        Ok(AgentSnapshot {
            agent_id: agent_id.into(),
            state,
            reason: None,
            changed_at: None,
        })
    }

    async fn set_agent_state(&self, change: StateChange<'_>) -> Result<AgentSnapshot, CxoneError> {
        let StateChange {
            agent_id,
            state,
            reason,
        } = change;
        self.note(format!("set {agent_id} {state} {reason}"));
        if let Some(error) = self.fail_set_with.lock().unwrap().clone() {
            return Err(error);
        }
        let mut states = self.states.lock().unwrap();
        let current = states
            .get_mut(agent_id)
            .ok_or_else(|| Self::not_found(agent_id))?;
        *current = state;
        let snapshot = AgentSnapshot {
            agent_id: agent_id.into(),
            state,
            reason: Some(reason.into()),
            changed_at: Some(Utc::now()),
        };
        self.changes
            .lock()
            .unwrap()
            .insert(agent_id.into(), snapshot.clone());
        Ok(snapshot)
    }

    async fn schedules(&self, ids: &[String]) -> Result<Vec<(String, Schedule)>, CxoneError> {
        if !self.exports.load(Ordering::Relaxed) {
            return Err(self.not_offered("bulk schedule export"));
        }
        self.note("export".into());
        let known = self.schedules.lock().unwrap();
        Ok(ids
            .iter()
            .filter_map(|id| Some((id.clone(), known.get(id)?.clone().ok()?)))
            .collect())
    }

    async fn schedule(&self, agent_id: &str) -> Result<Schedule, CxoneError> {
        self.note(format!("schedule {agent_id}"));
        if self.schedule_awaits_breaks.load(Ordering::Relaxed) {
            let breaks = format!("breaks {agent_id}");
            loop {
                let asked = self.breaks_asked.notified();
                if self.calls(&breaks) > 0 {
                    break;
                }
                asked.await;
            }
        }
        let schedule = self.schedules.lock().unwrap().get(agent_id).cloned();
        schedule.unwrap_or_else(|| Err(Self::not_found(agent_id)))
    }

    async fn break_status(&self, agent_id: &str) -> Result<BreakStatus, CxoneError> {
        self.note(format!("breaks {agent_id}"));
        self.breaks_asked.notify_waiters();
        if let Some(error) = self.fail_breaks_with.lock().unwrap().clone() {
            return Err(error);
        }
        let status = self.breaks.lock().unwrap().get(agent_id).cloned();
        Ok(status.unwrap_or(BreakStatus {
            mandatory_break_required: false,
            break_start: None,
            break_end: None,
        }))
    }

    async fn check_access(&self) -> Result<(), CxoneError> {
        Ok(())
    }

    async fn create_subscription(
        &self,
        request: &SubscriptionRequest,
    ) -> Result<Subscription, CxoneError> {
        let mut created = self.created.lock().unwrap();
        let id = format!("sub_{}", created.len() + 1);
        created.push(id.clone());
        Ok(Subscription {
            id,
            interval: request.interval,
            expires_at: None,
        })
    }

    async fn poll_subscription(&self, id: &str) -> Result<Vec<ObservedAgent>, CxoneError> {
        self.polls
            .lock()
            .unwrap()
            .push((id.to_owned(), Instant::now()));
        let latency = self.latencies.lock().unwrap().pop_front();
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
        if Self::take(&self.too_early_polls) {
            return Err(CxoneError::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
            });
        }
        if let Some(spacing) = *self.spacing_by_arrival.lock().unwrap() {
            let arrived = Instant::now();
            let mut last = self.last_accepted_arrival.lock().unwrap();
            if last.is_some_and(|last| arrived < last + spacing) {
                return Err(CxoneError::RateLimited {
                    retry_after: Some(Duration::from_secs(1)),
                });
            }
            *last = Some(arrived);
        }
        if Self::take(&self.failing_polls) {
            return Err(CxoneError::Server {
                status: 503,
                message: "platform outage".into(),
                retry_after: None,
            });
        }
        if self.expired.lock().unwrap().iter().any(|e| e == id) {
            return Err(CxoneError::NotFound {
                message: "expired".into(),
            });
        }
        let next = self.snapshots.lock().unwrap().pop_front();
        Ok(next.unwrap_or_else(|| self.steady.lock().unwrap().clone()))
    }

    async fn delete_subscription(&self, id: &str) -> Result<(), CxoneError> {
        self.deleted.lock().unwrap().push(id.to_owned());
        Ok(())
    }
}
