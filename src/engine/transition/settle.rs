//! Settling changes that were sent to the platform and never recorded, because their
//! record failed (a full disk) or the process died between call and record.
//!
//! A record the database refuses after the platform answered is kept in memory
//! ([`Unrecorded`]) with what the platform said, and with its agent's and key's locks:
//! nothing else is sent for that agent (a change asked meanwhile is refused, saying
//! why), state sync leaves the agent alone, and the record is written, marked
//! `recordedLate`, as soon as the database takes writes (the settling loop retries it
//! every [`UNRECORDED_RETRY`]). So the platform's answer is recorded as it was, in its
//! order among the agent's changes, and the next change's `from` is the state it left.
//!
//! An intent with no such record in memory (the process died between call and record)
//! is settled against what the platform shows now: in the requested state and reason
//! since the intent was written, the change was made and is recorded as succeeded,
//! marked `recordedLate` in its audit entry (linked to the interval state sync may have
//! recorded meanwhile as the agent's own change, else with its own interval and
//! `agent.state_changed`); otherwise it is recorded as failed. Nothing the platform did
//! goes unrecorded, and nothing is sent again.
//!
//! A database's sole daemon (it holds the database's lock, without `[ha]`:
//! [`TransitionEngine::serve_alone`]) writes its intents in [`SOLE_DAEMON_TERM`], so the
//! next daemon on the database knows they ended with the process that wrote them (a
//! stop while the disk was full, a crash): it settles them as an `[ha]` leader settles
//! an earlier term's, once a call of theirs can no longer land, and before the agent's
//! next change, which then leaves the state the platform was put in. A `wfmd transition`
//! beside the daemon writes no term: its call may still be in flight.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    ADOPT_CLOCK_SKEW, EngineError, FailureKind, Locks, Outcome, Record, TransitionEngine,
    TransitionRequest,
};
use crate::domain::{AgentState, Origin};
use crate::engine::keyed_lock::KeyGuard;
use crate::store::history;
use crate::store::intents::{self, IntentRow};
use crate::store::{from_ms, to_ms};
use crate::telemetry::names::TRANSITIONS_UNRECORDED;

/// How long another process's change may still be in flight: its intent is settled only
/// once older (every retry of a platform call, with its waits, is over well before).
const OTHERS_IN_FLIGHT_AT_MOST: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// How long a call sent in a leader's term may still be answered once another instance
/// leads in a later term: the writer's work stopped when its term ended (or it died), so
/// only a call already on the wire may still land, within the platform client's request
/// timeout (10 s by default).
const ENDED_TERMS_CALLS_AT_MOST: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// The term a database's sole daemon writes its intents in; `[ha]`'s terms begin at 1.
/// Such an intent not this engine's was written by a daemon that has ended: the
/// database's lock lets one daemon at a time serve it.
const SOLE_DAEMON_TERM: i64 = 0;

/// Whether an engine is its database's sole daemon, and the agents an earlier one left
/// intents of when it started.
#[derive(Default)]
pub(super) struct Alone {
    alone: AtomicBool,
    left_by_ended: std::sync::Mutex<HashSet<String>>,
}

impl Alone {
    /// The term this engine's intents are written in, outside `[ha]`.
    pub(super) fn term(&self) -> Option<i64> {
        self.alone
            .load(Ordering::Acquire)
            .then_some(SOLE_DAEMON_TERM)
    }

    fn left_by_ended(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.left_by_ended.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How often the daemon settles intents (see [`TransitionEngine::settle_intents`]).
pub const SETTLE_INTERVAL: Duration = Duration::from_secs(15);

/// How often a record kept in memory is tried again while the database refuses it.
pub const UNRECORDED_RETRY: Duration = Duration::from_secs(1);

/// A change the platform answered whose record the database refused: what the record
/// says, kept until it can be written, holding its agent's lock meanwhile.
pub(in crate::engine) struct Unrecorded {
    record: Record,
    outcome: Outcome,
    changed_at: Option<DateTime<Utc>>,
    _agent: KeyGuard,
}

/// Whether settling an intent waits for its change's locks.
#[derive(Clone, Copy)]
enum Wait {
    /// Before a change of the agent, which must not start before the intent is settled.
    Yes,
    /// In a pass over the left-over intents, which must not wait for a change in flight:
    /// when that change's record is refused, the record is kept in memory holding the
    /// locks until a pass writes it, so a pass waiting for them would wait for itself.
    /// The intent is left to a later pass.
    No,
}

impl TransitionEngine {
    /// Settles every intent this engine left, other processes' older than any call
    /// takes, and (leading in a term) those of earlier terms older than a call's answer
    /// takes. An intent whose agent the platform cannot show now is left for the next
    /// call; so is one whose change holds its locks (in flight, or its record kept in
    /// memory: see `Wait::No`), and everything while the database takes no writes.
    /// Returns how many were settled.
    pub async fn settle_intents(&self) -> Result<usize, sqlx::Error> {
        let mut settled = self.record_unrecorded().await?;
        let now = Utc::now();
        let others_before = to_ms(now - OTHERS_IN_FLIGHT_AT_MOST);
        let ended = self
            .store
            .term()
            .or(self.alone.term().map(|sole| sole + 1))
            .map(|term| (term, to_ms(now - ENDED_TERMS_CALLS_AT_MOST)));
        let left =
            intents::unsettled(self.store.reader(), &self.owner, others_before, ended).await?;
        for intent in left {
            // Its record is in memory, waiting for the database (and holds its locks).
            if self.is_unrecorded(&intent.agent_id, &intent.attempt_id) {
                continue;
            }
            if self.settle(intent, Wait::No).await? {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Makes this engine its database's sole daemon: the caller holds the database's
    /// lock and runs without `[ha]`, so no other daemon's call can be under way. Its
    /// intents are written in `SOLE_DAEMON_TERM` from now on, and those an earlier
    /// daemon left are settled within seconds (see the module's doc).
    pub async fn serve_alone(&self) -> Result<(), sqlx::Error> {
        self.alone.alone.store(true, Ordering::Release);
        let left = self.left_by_ended(None).await?;
        if !left.is_empty() {
            tracing::warn!(
                changes = left.len(),
                "an earlier daemon left changes unrecorded; each is settled against what the \
                 platform shows before its agent's next change"
            );
        }
        self.alone
            .left_by_ended()
            .extend(left.into_iter().map(|intent| intent.agent_id));
        Ok(())
    }

    /// The intents an earlier sole daemon left (of `agent`, or all).
    async fn left_by_ended(&self, agent: Option<&str>) -> Result<Vec<IntentRow>, sqlx::Error> {
        let ended = Some((SOLE_DAEMON_TERM + 1, i64::MAX));
        let left = intents::unsettled(self.store.reader(), "", i64::MIN, ended).await?;
        Ok(left
            .into_iter()
            .filter(|intent| intent.owner != self.owner)
            .filter(|intent| agent.is_none_or(|agent| intent.agent_id == agent))
            .collect())
    }

    /// Before a change of `agent` (with idempotency key `key`): settles the changes an
    /// earlier daemon left of it, waiting until a call of theirs can no longer land. One
    /// with `key` is left to the change, which finishes it under the same attempt.
    pub(super) async fn settle_left_by_ended_of(
        &self,
        agent: &str,
        key: Option<&str>,
    ) -> Result<(), EngineError> {
        if !self.alone.left_by_ended().contains(agent) {
            return Ok(());
        }
        for intent in self.left_by_ended(Some(agent)).await? {
            if intent.idempotency_key.is_some() && intent.idempotency_key.as_deref() == key {
                continue;
            }
            let landed_by = from_ms(intent.requested_at) + ENDED_TERMS_CALLS_AT_MOST;
            if let Ok(wait) = (landed_by - self.now()).to_std() {
                tokio::time::sleep(wait).await;
            }
            self.settle(intent, Wait::Yes).await?;
        }
        self.alone.left_by_ended().remove(agent);
        Ok(())
    }

    /// Keeps the record of a change the platform answered, which the database refused
    /// with `error`, until it can be written (see the module's doc).
    pub(super) fn keep_unrecorded(
        &self,
        record: Record,
        outcome: Outcome,
        changed_at: Option<DateTime<Utc>>,
        locks: Locks,
        error: &sqlx::Error,
    ) {
        tracing::error!(
            attempt = %record.attempt_id,
            outcome = outcome.name(),
            %error,
            "the platform answered a change whose record the database refused; it is \
             recorded once the database takes writes, and nothing else is sent for the \
             agent until then"
        );
        let agent = record.request.agent_id.clone();
        // The key's lock goes: a retry with the key waits for the agent's, and then
        // finds the change recorded.
        let unrecorded = Unrecorded {
            record,
            outcome,
            changed_at,
            _agent: locks.agent,
        };
        let mut kept = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
        kept.insert(agent, unrecorded);
        metrics::gauge!(TRANSITIONS_UNRECORDED).set(kept.len() as f64);
        drop(kept);
        self.unrecorded_kept.send_modify(|kept| *kept += 1);
    }

    fn is_unrecorded(&self, agent: &str, attempt_id: &str) -> bool {
        self.unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent)
            .is_some_and(|kept| kept.record.attempt_id == attempt_id)
    }

    fn take_unrecorded(&self, agent: Option<&str>) -> Vec<Unrecorded> {
        let mut kept = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken: Vec<Unrecorded> = match agent {
            Some(agent) => kept.remove(agent).into_iter().collect(),
            None => kept.drain().map(|(_, unrecorded)| unrecorded).collect(),
        };
        taken.sort_by_key(|unrecorded| unrecorded.record.completed_at);
        taken
    }

    /// Writes the records kept in memory (of `agent`, or all), oldest first; those the
    /// database still refuses are kept. How many were written, or the first refusal.
    async fn write_unrecorded(&self, agent: Option<&str>) -> Result<usize, sqlx::Error> {
        let taken = self.take_unrecorded(agent);
        if taken.is_empty() {
            return Ok(0);
        }
        let mut written = 0;
        let mut refused = None;
        for unrecorded in taken {
            if refused.is_some() {
                self.keep_again(unrecorded);
                continue;
            }
            let Unrecorded {
                mut record,
                outcome,
                changed_at,
                _agent,
            } = unrecorded;
            record.late = true;
            match self.record(&record, outcome.clone(), changed_at).await {
                Ok(_) => {
                    written += 1;
                    tracing::warn!(attempt = %record.attempt_id, agent = %record.request.agent_id, "recorded a change late, as the platform answered it");
                }
                Err(error) if crate::store::is_not_leader(&error) => {
                    // Another instance leads the tenant now: it settles the intent.
                    tracing::warn!(attempt = %record.attempt_id, "this instance no longer leads the tenant; its new leader settles a change left unrecorded");
                }
                Err(error) => {
                    self.keep_again(Unrecorded {
                        record,
                        outcome,
                        changed_at,
                        _agent,
                    });
                    refused = Some(error);
                }
            }
        }
        let left = self
            .unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        metrics::gauge!(TRANSITIONS_UNRECORDED).set(left as f64);
        match refused {
            Some(error) => Err(error),
            None => Ok(written),
        }
    }

    fn keep_again(&self, unrecorded: Unrecorded) {
        self.unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(unrecorded.record.request.agent_id.clone(), unrecorded);
        // A change that waited for the agent's lock meanwhile is refused now.
        self.unrecorded_kept.send_modify(|kept| *kept += 1);
    }

    /// Writes every record kept in memory; how many.
    async fn record_unrecorded(&self) -> Result<usize, sqlx::Error> {
        self.write_unrecorded(None).await
    }

    /// Before a change of `agent`: writes its record kept in memory, if any, or refuses
    /// the change while the database still refuses that record.
    pub(super) async fn record_unrecorded_of(&self, agent: &str) -> Result<(), EngineError> {
        match self.write_unrecorded(Some(agent)).await {
            Ok(_) => Ok(()),
            Err(error) => Err(EngineError::Unrecorded {
                agent_id: agent.to_owned(),
                error,
            }),
        }
    }

    /// Runs [`TransitionEngine::settle_intents`] every `SETTLE_INTERVAL` until `stop`.
    /// Records kept in memory are tried every `UNRECORDED_RETRY` instead, from the
    /// moment one is kept, and once more when `stop` comes.
    pub async fn settle_intents_until(&self, stop: tokio_util::sync::CancellationToken) {
        let mut kept = self.unrecorded_kept.subscribe();
        loop {
            match self.settle_intents().await {
                Ok(0) => {}
                Ok(settled) => tracing::info!(settled, "settled changes recorded late"),
                Err(error) => tracing::warn!(%error, "cannot settle left-over changes yet"),
            }
            // What this pass kept again itself is no news.
            kept.borrow_and_update();
            let waiting = !self
                .unrecorded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            let pause = if waiting {
                UNRECORDED_RETRY
            } else {
                SETTLE_INTERVAL
            };
            tokio::select! {
                () = stop.cancelled() => {
                    if let Err(error) = self.record_unrecorded().await {
                        tracing::error!(%error, "stopping with changes unrecorded; their intents are settled at the next start");
                    }
                    return;
                }
                () = tokio::time::sleep(pause) => {}
                _ = kept.changed() => {}
            }
        }
    }

    /// Settles `intent` against what the platform shows; true when it recorded it. With
    /// [`Wait::No`] it settles only an intent whose change's locks are free now, and
    /// leaves the others to a later pass.
    async fn settle(&self, intent: IntentRow, wait: Wait) -> Result<bool, sqlx::Error> {
        let (Ok(target), Ok(origin)) = (
            intent.target_state.parse::<AgentState>(),
            intent.origin.parse::<Origin>(),
        ) else {
            tracing::error!(attempt = %intent.attempt_id, "an intent names an unknown state or origin");
            return Ok(false);
        };
        let request = TransitionRequest {
            agent_id: intent.agent_id.clone(),
            target,
            reason: Some(intent.reason.clone()),
            origin,
            actor: intent.actor.clone(),
            idempotency_key: intent.idempotency_key.clone(),
        };
        // The change's own locks, in its order: while they are held, no change of this
        // attempt is in flight in this process.
        let key = request.idempotency_key.as_deref();
        let (_key, _agent) = match wait {
            Wait::Yes => {
                let key = match key {
                    Some(key) => Some(self.keys.lock(key).await),
                    None => None,
                };
                (key, self.agents.lock(&request.agent_id).await)
            }
            Wait::No => {
                let key = match key.map(|key| self.keys.try_lock(key)) {
                    Some(None) => return Ok(false),
                    Some(key) => key,
                    None => None,
                };
                let Some(agent) = self.agents.try_lock(&request.agent_id) else {
                    return Ok(false);
                };
                (key, agent)
            }
        };
        let mut conn = self.store.reader().acquire().await?;
        if !intents::is_left(&mut conn, &intent.attempt_id).await? {
            // Recorded meanwhile: a retry with its key finished it.
            return Ok(false);
        }
        drop(conn);
        let snapshot = match self.platform.agent_state(&request.agent_id).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!(agent = %request.agent_id, %error, "cannot settle a change recorded late yet");
                return Ok(false);
            }
        };
        let requested_at = from_ms(intent.requested_at);
        let made = snapshot.state == target
            && snapshot.reason.as_deref() == Some(intent.reason.as_str())
            && snapshot
                .changed_at
                .is_none_or(|at| at >= requested_at - ADOPT_CLOCK_SKEW);
        let completed_at = self.now();
        let record = Record {
            attempt_id: intent.attempt_id.clone(),
            request: request.clone(),
            reason: intent.reason.clone(),
            latency_ms: u64::try_from((completed_at - requested_at).num_milliseconds())
                .unwrap_or(0),
            requested_at,
            completed_at,
            source: None,
            late: true,
            deferred: None,
        };
        if !made {
            let outcome = Outcome::Failed {
                kind: FailureKind::PlatformUnavailable,
                error: "its record failed after the platform call, and the platform does not \
                        show the change made"
                    .to_owned(),
            };
            self.record(&record, outcome, None).await?;
        } else if !self.link_observed(&record, requested_at).await? {
            self.record(&record, Outcome::Succeeded, snapshot.changed_at)
                .await?;
        }
        tracing::warn!(attempt = %intent.attempt_id, agent = %request.agent_id, made, "recorded a change whose record had failed");
        Ok(true)
    }

    /// When state sync recorded the change meanwhile (the agent's open interval is the
    /// target state and reason, begun since the intent), records the attempt as
    /// succeeded and links it to that interval. False when there is no such interval.
    async fn link_observed(
        &self,
        record: &Record,
        requested_at: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        let request = &record.request;
        let mut tx = self.store.begin_write().await?;
        let Some(open) = history::open_interval(&mut tx, &request.agent_id).await? else {
            return Ok(false);
        };
        if open.state() != Some(request.target)
            || open.reason.as_deref() != Some(record.reason.as_str())
            || open.started() < requested_at - ADOPT_CLOCK_SKEW
            || open.attempt_id.is_some()
        {
            return Ok(false);
        }
        self.write_attempt(&mut tx, record, None, &Outcome::Succeeded)
            .await?;
        history::link_attempt(&mut tx, open.id, &record.attempt_id).await?;
        tx.commit().await?;
        Ok(true)
    }
}
