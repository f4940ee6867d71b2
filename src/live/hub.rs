//! The in-memory state of the feed and what publishes to it: the snapshot, the outbox
//! events applied to it, metric boards, job progress and heartbeats.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use super::Live;
use super::encode::Message;
use super::view::{AgentView, DeferredBadge, ExceptionBadge, Periods, Snapshot, Thresholds, Tiles};
use crate::domain::events::{Event, ExceptionStatus, Severity};
use crate::engine::jobs::BulkJobView;
use crate::engine::metrics::MetricBoard;
use crate::store::deferred::{self as deferred_changes, DeferredRow};
use crate::store::{exceptions, from_ms, history, outbox};
use crate::telemetry::names::LIVE_EVENTS_TOTAL;
use crate::time::rfc3339;

/// Events read from the outbox per query.
const OUTBOX_BATCH: i64 = 1000;

/// The in-memory state the snapshot is made of.
pub(super) struct State {
    pub(super) agents: BTreeMap<String, AgentView>,
    /// Whether the roster was read; until then every agent with a recorded state shows.
    pub(super) roster_loaded: bool,
    pub(super) board: Arc<MetricBoard>,
    pub(super) head_seq: i64,
    pub(super) last_event_id: Option<String>,
    pub(super) version: u64,
    /// The serialized snapshot message and the snapshot's own JSON text, until what
    /// the snapshot shows changes (heartbeats and job progress leave it valid).
    pub(super) cached: Option<(Message, Bytes)>,
}

impl Live {
    /// Reads the outbox head, the recorded states and the open exceptions from the
    /// store. Events committed meanwhile are applied again by the tailer, which is
    /// harmless: applying an event sets what it says, so doing it twice changes nothing.
    pub async fn load(&self) -> Result<(), sqlx::Error> {
        let head = outbox::head(self.pool()).await?;
        let intervals = history::all_open(self.pool()).await?;
        let open = exceptions::open(self.pool()).await?;
        let waiting = deferred_changes::all(self.pool()).await?;
        let mut state = self.lock();
        if let Some((seq, id)) = head {
            state.head_seq = seq;
            state.last_event_id = Some(id);
        }
        let roster_loaded = state.roster_loaded;
        for row in intervals {
            let agent = match state.agents.get_mut(&row.agent_id) {
                Some(agent) => agent,
                None if roster_loaded => continue,
                None => state
                    .agents
                    .entry(row.agent_id.clone())
                    .or_insert_with(|| AgentView::unnamed(&row.agent_id)),
            };
            agent.state = Some(row.state.clone());
            agent.reason = row.reason.clone();
            agent.since = Some(rfc3339(from_ms(row.started_at)));
            agent.origin = Some(row.origin.clone());
        }
        for agent in state.agents.values_mut() {
            agent.exceptions.clear();
        }
        for row in open {
            if let Some(agent) = state.agents.get_mut(&row.agent_id) {
                agent.exceptions.push(ExceptionBadge::of(&row));
            }
        }
        for agent in state.agents.values_mut() {
            agent.deferred = waiting
                .iter()
                .find(|row| row.agent_id == agent.id)
                .map(badge);
        }
        state.version += 1;
        state.cached = None;
        self.republish(&mut state);
        drop(state);
        self.inner.rest.loaded();
        Ok(())
    }

    /// Sends the current snapshot to every client: after a (re)load or a new roster the
    /// board changed in ways no single event describes, and a page that connected
    /// before (an empty board, agents without names) must not keep it until it
    /// reconnects.
    fn republish(&self, state: &mut State) {
        let (message, _) = self.snapshot_message(state);
        self.publish(message);
    }

    /// Replaces the roster (from the platform's agent list): managed agents keep their
    /// recorded state; agents no longer managed leave the board.
    pub async fn set_roster(&self, agents: &[crate::cxone::Agent]) -> Result<(), sqlx::Error> {
        let s = &self.inner.settings;
        let managed: Vec<&crate::cxone::Agent> = agents
            .iter()
            .filter(|a| {
                (s.teams.is_empty() && s.agents.is_empty())
                    || s.agents.contains(&a.id)
                    || a.team_id.as_ref().is_some_and(|t| s.teams.contains(t))
            })
            .collect();
        let ids: Vec<&str> = managed.iter().map(|a| a.id.as_str()).collect();
        let mut conn = self.pool().acquire().await?;
        let intervals = history::open_intervals(&mut conn, &ids).await?;
        drop(conn);
        let open = exceptions::open(self.pool()).await?;
        let waiting = deferred_changes::all(self.pool()).await?;
        let mut state = self.lock();
        let mut next = BTreeMap::new();
        for agent in managed {
            let mut view = state
                .agents
                .remove(&agent.id)
                .unwrap_or_else(|| AgentView::unnamed(&agent.id));
            view.name = Some(agent.name.clone());
            view.team_id = agent.team_id.clone();
            view.team = agent.team_name.clone();
            view.skills = agent.skills.clone();
            if view.state.is_none()
                && let Some(row) = intervals.get(&agent.id)
            {
                view.state = Some(row.state.clone());
                view.reason = row.reason.clone();
                view.since = Some(rfc3339(from_ms(row.started_at)));
                view.origin = Some(row.origin.clone());
                view.exceptions = open
                    .iter()
                    .filter(|e| e.agent_id == agent.id)
                    .map(ExceptionBadge::of)
                    .collect();
            }
            if view.deferred.is_none() {
                view.deferred = waiting
                    .iter()
                    .find(|row| row.agent_id == agent.id)
                    .map(badge);
            }
            next.insert(agent.id.clone(), view);
        }
        state.agents = next;
        state.roster_loaded = true;
        state.version += 1;
        state.cached = None;
        self.republish(&mut state);
        Ok(())
    }

    /// Reads and publishes every outbox event after the last one published; returns how
    /// many. The tailer's step, callable from tests.
    pub async fn poll_outbox(&self) -> Result<usize, sqlx::Error> {
        let mut published = 0;
        loop {
            let after = self.lock().head_seq;
            let rows = outbox::after(self.pool(), after, OUTBOX_BATCH).await?;
            let count = rows.len();
            if count == 0 {
                return Ok(published);
            }
            let mut state = self.lock();
            for row in rows {
                // Another caller of `poll_outbox` may have published it meanwhile.
                if row.seq <= state.head_seq {
                    continue;
                }
                apply(&mut state, &row);
                state.head_seq = row.seq;
                state.last_event_id = Some(row.id.clone());
                state.version += 1;
                state.cached = None;
                let message = Message::durable(state.version, self.tenant(), &row);
                self.publish(message);
                published += 1;
            }
            drop(state);
            metrics::counter!(LIVE_EVENTS_TOTAL).increment(published as u64);
            if count < OUTBOX_BATCH as usize {
                return Ok(published);
            }
        }
    }

    /// Publishes a new metric board.
    pub fn publish_board(&self, board: Arc<MetricBoard>) {
        let mut state = self.lock();
        state.version += 1;
        state.cached = None;
        let message =
            Message::transient(state.version, self.tenant(), "metrics", Tiles::of(&board));
        state.board = board;
        self.publish(message);
    }

    /// Publishes a bulk job's progress (not durable: `bulk.completed` is).
    pub fn publish_progress(&self, job: &BulkJobView) {
        let mut state = self.lock();
        state.version += 1;
        let message = Message::transient(state.version, self.tenant(), "bulk.progress", job);
        self.publish(message);
    }

    /// The snapshot as the feed has it now (not caught up: see [`Live::catch_up`]).
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        self.build_snapshot(&state)
    }

    fn build_snapshot(&self, state: &State) -> Snapshot {
        let s = &self.inner.settings;
        let mut counts = BTreeMap::new();
        for agent in state.agents.values() {
            let key = agent.state.clone().unwrap_or_else(|| "UNKNOWN".to_owned());
            *counts.entry(key).or_insert(0) += 1;
        }
        Snapshot {
            generated_at: rfc3339(Utc::now()),
            last_event_id: state.last_event_id.clone(),
            agents: state.agents.values().cloned().collect(),
            counts,
            tiles: Tiles::of(&state.board),
            service_level: Thresholds {
                good: s.service_level_good,
                warning: s.service_level_warning,
            },
            periods: Periods {
                heartbeat_secs: s.heartbeat.as_secs(),
                skill_interval_secs: s.skill_interval.as_secs(),
                queue_interval_secs: s.queue_interval.as_secs(),
            },
            queues_are_skills: s.queues_are_skills,
            served_by: s.served_by.clone(),
        }
    }

    /// The snapshot as a feed message and as its own JSON text, serialized once per
    /// change of state however many clients ask.
    pub(super) fn snapshot_message(&self, state: &mut State) -> (Message, Bytes) {
        if let Some(cached) = &state.cached {
            return cached.clone();
        }
        let snapshot = self.build_snapshot(state);
        let data = serde_json::to_string(&snapshot).expect("a snapshot serializes");
        // A frame like every other, so a client reads the tenant of each the same way.
        let json = format!(
            r#"{{"type":"snapshot","tenant":{},"id":{},"timestamp":"{}","data":{data}}}"#,
            serde_json::to_string(self.tenant().as_str()).expect("an id serializes"),
            serde_json::to_string(&snapshot.last_event_id).expect("an id serializes"),
            snapshot.generated_at,
        );
        let message = Message::new(
            state.version,
            None,
            "snapshot",
            state.last_event_id.as_deref(),
            json,
        );
        let cached = (message, Bytes::from(data));
        state.cached = Some(cached.clone());
        cached
    }

    /// The snapshot, serialized (`GET /v1/live`), caught up first ([`Live::catch_up`]).
    pub async fn snapshot_json(&self) -> Bytes {
        self.catch_up().await;
        let mut state = self.lock();
        self.snapshot_message(&mut state).1
    }

    /// Publishes a heartbeat now.
    pub fn publish_heartbeat(&self) {
        let mut state = self.lock();
        state.version += 1;
        self.publish(Message::heartbeat(state.version, self.tenant()));
    }

    /// Sends `message` to every client. No receiver is not an error: nobody watches
    /// right now.
    pub(super) fn publish(&self, message: Message) {
        let _ = self.inner.sender.send(Arc::new(message));
    }
}

/// Applies a durable event to the state: a state change moves the agent's card, an
/// adherence exception puts or takes its badge. Others change nothing on the board.
fn apply(state: &mut State, row: &outbox::EventRow) {
    let Ok(body) = serde_json::from_str::<Value>(&row.payload) else {
        return;
    };
    let Ok(event) = Event::deserialize(&body) else {
        return;
    };
    let agent_id = match &event {
        Event::AgentStateChanged(change) => &change.agent_id,
        Event::AdherenceException(exception) => &exception.agent_id,
        // Nothing changes on its card (unless it settles a deferred change), but it is
        // on the board until the roster is read.
        Event::TransitionRejected(rejected) => &rejected.agent_id,
        Event::TransitionDeferred(deferred) => &deferred.agent_id,
        Event::TransitionExpired(expired) => &expired.agent_id,
        Event::TransitionCancelled(cancelled) => &cancelled.agent_id,
        _ => return,
    };
    let roster_loaded = state.roster_loaded;
    let agent = match state.agents.get_mut(agent_id) {
        Some(agent) => agent,
        // Not a managed agent (a one-off change through the API): not on the board.
        None if roster_loaded => return,
        None => state
            .agents
            .entry(agent_id.to_owned())
            .or_insert_with(|| AgentView::unnamed(agent_id)),
    };
    // The badge goes when the event settling its deferred change comes.
    let settles = match &event {
        Event::AgentStateChanged(change) => change.deferred_id.as_deref(),
        Event::TransitionRejected(rejected) => rejected.deferred_id.as_deref(),
        Event::TransitionExpired(expired) => Some(expired.deferred_id.as_str()),
        Event::TransitionCancelled(cancelled) => Some(cancelled.deferred_id.as_str()),
        _ => None,
    };
    if settles.is_some() && agent.deferred.as_ref().map(|d| d.deferred_id.as_str()) == settles {
        agent.deferred = None;
    }
    match event {
        Event::TransitionDeferred(deferred) => {
            agent.deferred = Some(DeferredBadge {
                deferred_id: deferred.deferred_id,
                to: deferred.to.as_str().to_owned(),
                reason: deferred.reason_code,
                expires_at: deferred.expires_at,
            });
        }
        Event::AgentStateChanged(change) => {
            agent.state = Some(change.to.as_str().to_owned());
            agent.reason = change.reason_code;
            agent.origin = Some(change.origin.as_str().to_owned());
            agent.since = change
                .changed_at
                .or_else(|| body["timestamp"].as_str().map(str::to_owned));
        }
        Event::AdherenceException(exception) => {
            let id = exception.exception_id;
            agent.exceptions.retain(|e| e.exception_id != id);
            if exception.status == ExceptionStatus::Open {
                agent.exceptions.push(ExceptionBadge {
                    exception_id: id,
                    kind: exception.kind.as_str().to_owned(),
                    since: exception.started_at,
                    severe: exception.severity == Severity::Severe,
                });
            }
        }
        _ => {}
    }
}

/// The card's badge of a waiting change.
fn badge(row: &DeferredRow) -> DeferredBadge {
    let deferral = crate::engine::deferred::Deferral::of(row);
    DeferredBadge {
        deferred_id: deferral.deferred_id,
        to: deferral.to.as_str().to_owned(),
        reason: deferral.reason,
        expires_at: deferral.expires_at,
    }
}
