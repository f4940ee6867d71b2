//! Recording what an attempt did: its attempt row, its audit entry, the agent's
//! interval and its outbox event, committed together in one transaction (all of it is
//! stored, or none of it). Also the writes around it: the intent committed before a
//! change is sent, and the audit entry of a change settled without a call.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::deferral as deferred;
use super::{Outcome, ScheduleCheck, Transition, TransitionEngine, TransitionRequest, Unchanged};
use crate::domain::AgentState;
use crate::domain::events::{Event, StateChanged, TransitionRejected};
use crate::store::attempts::{self, AttemptRow};
use crate::store::audit::{self, NewEntry};
use crate::store::deferred::DeferredRow;
use crate::store::history::{self, NewInterval};
use crate::store::intents::{self, IntentRow};
use crate::store::outbox;
use crate::store::to_ms;

impl TransitionEngine {
    /// The audit entry of a change settled without a call.
    pub(super) async fn record_unchanged(
        &self,
        request: &TransitionRequest,
        unchanged: &Unchanged,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.store.begin_write().await?;
        audit::append(
            &mut tx,
            &NewEntry {
                at: self.now(),
                actor: &request.actor,
                action: "transition.unchanged",
                agent_id: Some(&request.agent_id),
                subject_id: None,
                detail: json!({
                    "to": request.target,
                    "reasonCode": unchanged.reason,
                    "origin": request.origin,
                    "idempotencyKey": request.idempotency_key,
                    "since": crate::time::rfc3339(unchanged.since),
                    "polledAt": crate::time::rfc3339(unchanged.polled_at),
                }),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!("already in the target state at state sync's last poll; no call");
        Ok(())
    }

    /// Records what an attempt did, all in one transaction: the attempt row and its
    /// audit entry, and by its `outcome`: a success closes the agent's open interval and
    /// opens the new one at `changed_at` and is announced as `agent.state_changed`; a
    /// rejection is announced as `transition.rejected`; a failure is recorded and audited
    /// only (no event type exists for it). The deferred change the attempt carries out,
    /// if any, is settled with it.
    pub(super) async fn record(
        &self,
        record: &Record,
        outcome: Outcome,
        changed_at: Option<DateTime<Utc>>,
    ) -> Result<Transition, sqlx::Error> {
        let request = &record.request;
        // The platform's own timestamp of the change is the interval boundary, so
        // commanded and observed changes share one clock.
        let at = changed_at.unwrap_or(record.completed_at);
        let mut tx = self.store.begin_write().await?;
        let (from, idle_ms) = match &outcome {
            Outcome::Succeeded => {
                let closed = history::switch_state(
                    &mut tx,
                    &NewInterval {
                        agent_id: &request.agent_id,
                        state: request.target,
                        reason: Some(&record.reason),
                        origin: request.origin,
                        at,
                        attempt_id: Some(&record.attempt_id),
                    },
                )
                .await?;
                let from = closed.as_ref().and_then(|c| c.state());
                (from, closed.as_ref().map_or(0, |c| c.idle_ms()))
            }
            // Nothing changed: the agent is still where its open interval says.
            _ => {
                let open = history::open_interval(&mut tx, &request.agent_id).await?;
                (open.and_then(|open| open.state()), 0)
            }
        };
        self.write_attempt(&mut tx, record, from, &outcome).await?;
        let deferred_id = record.deferred.as_ref().map(|row| row.id.clone());
        match &outcome {
            Outcome::Succeeded => {
                outbox::enqueue(
                    &mut tx,
                    Some(&request.agent_id),
                    record.completed_at,
                    Event::AgentStateChanged(StateChanged {
                        agent_id: request.agent_id.clone(),
                        from,
                        to: request.target,
                        reason_code: Some(record.reason.clone()),
                        origin: request.origin,
                        idle_ms,
                        latency_ms: Some(record.latency_ms),
                        attempt_id: Some(record.attempt_id.clone()),
                        queue: None,
                        changed_at: Some(crate::time::rfc3339(at)),
                        deferred_id,
                    }),
                )
                .await?;
            }
            Outcome::Rejected { violation } => {
                outbox::enqueue(
                    &mut tx,
                    Some(&request.agent_id),
                    record.completed_at,
                    Event::TransitionRejected(TransitionRejected {
                        agent_id: request.agent_id.clone(),
                        from,
                        to: request.target,
                        reason_code: record.reason.clone(),
                        origin: request.origin,
                        violation: *violation,
                        attempt_id: record.attempt_id.clone(),
                        deferred_id,
                    }),
                )
                .await?;
                tracing::info!(%violation, "transition rejected");
            }
            Outcome::Failed { error, .. } => tracing::warn!(%error, "transition failed"),
        }
        if let Some(row) = &record.deferred {
            deferred::settle_made(
                &mut tx,
                row,
                &outcome,
                &record.attempt_id,
                record.completed_at,
            )
            .await?;
        }
        tx.commit().await?;
        self.store.notify_outbox();
        Ok(record.transition(from, outcome))
    }

    /// Commits the intent of a change about to be sent (see [`crate::store::intents`]).
    pub(super) async fn write_intent(
        &self,
        request: &TransitionRequest,
        reason: &str,
        attempt_id: &str,
        requested_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        // Unflushed: a crash keeps it, and the record's commit flushes it.
        let mut tx = self.store.begin_write_unflushed().await?;
        // A left-over intent of this attempt (a retry with its key) is replaced.
        intents::delete(&mut tx, attempt_id).await?;
        intents::insert(
            &mut tx,
            &IntentRow {
                attempt_id: attempt_id.to_owned(),
                agent_id: request.agent_id.clone(),
                target_state: request.target.as_str().to_owned(),
                reason: reason.to_owned(),
                origin: request.origin.as_str().to_owned(),
                actor: request.actor.clone(),
                idempotency_key: request.idempotency_key.clone(),
                requested_at: to_ms(requested_at),
                owner: self.owner.clone(),
                term: self.store.term().or(self.alone.term()),
            },
        )
        .await?;
        tx.commit().await
    }

    /// The attempt row and its audit entry; removes the attempt's intent.
    pub(super) async fn write_attempt(
        &self,
        conn: &mut impl crate::store::AsConn,
        record: &Record,
        from: Option<AgentState>,
        outcome: &Outcome,
    ) -> Result<(), sqlx::Error> {
        let request = &record.request;
        let (violation, error) = match outcome {
            Outcome::Succeeded => (None, None),
            Outcome::Rejected { violation } => (Some(violation.as_str().to_owned()), None),
            Outcome::Failed { error, .. } => (None, Some(error.clone())),
        };
        // A failed attempt did not change anything, so it leaves the key free for a retry.
        let idempotency_key = match outcome {
            Outcome::Failed { .. } => None,
            _ => request.idempotency_key.clone(),
        };
        let schedule_source = record.source;
        let source = schedule_source.and_then(ScheduleCheck::source);
        let unchecked = schedule_source.and_then(ScheduleCheck::unchecked);
        intents::delete(conn, &record.attempt_id).await?;
        attempts::insert_with(
            conn,
            &AttemptRow {
                id: record.attempt_id.clone(),
                idempotency_key,
                agent_id: request.agent_id.clone(),
                from_state: from.map(|s| s.as_str().to_owned()),
                target_state: request.target.as_str().to_owned(),
                reason: record.reason.clone(),
                origin: request.origin.as_str().to_owned(),
                actor: request.actor.clone(),
                outcome: outcome.name().to_owned(),
                violation,
                error,
                latency_ms: i64::try_from(record.latency_ms).unwrap_or(i64::MAX),
                requested_at: to_ms(record.requested_at),
                completed_at: to_ms(record.completed_at),
            },
            attempts::Grounds {
                schedule_source: source.map(|source| {
                    let age_ms = i64::try_from(source.age.as_millis()).unwrap_or(i64::MAX);
                    (source.as_str(), age_ms)
                }),
                unchecked,
            },
        )
        .await?;
        let mut detail = json!({
            "attemptId": record.attempt_id,
            "from": from,
            "to": request.target,
            "reasonCode": record.reason,
            "origin": request.origin,
            "latencyMs": record.latency_ms,
            "idempotencyKey": request.idempotency_key,
        });
        if let serde_json::Value::Object(fields) = serde_json::to_value(outcome).unwrap_or_default()
        {
            detail
                .as_object_mut()
                .expect("detail is an object")
                .extend(fields);
        }
        if record.late {
            detail["recordedLate"] = true.into();
        }
        if let Some(row) = &record.deferred {
            detail["deferredId"] = row.id.clone().into();
        }
        if let Some(source) = source {
            let fields = detail.as_object_mut().expect("detail is an object");
            fields.insert("scheduleSource".into(), source.as_str().into());
            fields.insert(
                "scheduleAgeMs".into(),
                (source.age.as_millis() as u64).into(),
            );
        }
        if let Some(unchecked) = unchecked {
            // Said in so many words: an auditor must not take this change for a checked one.
            detail["unchecked"] = unchecked.into();
            detail["uncheckedBecause"] =
                "the platform refuses schedule lookups; compliance.without_schedule = allow".into();
        }
        audit::append(
            conn,
            &NewEntry {
                at: record.completed_at,
                actor: &request.actor,
                action: match outcome {
                    Outcome::Succeeded => "transition.succeeded",
                    Outcome::Rejected { .. } => "transition.rejected",
                    Outcome::Failed { .. } => "transition.failed",
                },
                agent_id: Some(&request.agent_id),
                subject_id: Some(&record.attempt_id),
                detail,
            },
        )
        .await?;
        Ok(())
    }
}

/// What is known about an attempt once the platform has answered.
pub(super) struct Record {
    pub(super) attempt_id: String,
    pub(super) request: TransitionRequest,
    pub(super) reason: String,
    pub(super) latency_ms: u64,
    pub(super) requested_at: DateTime<Utc>,
    pub(super) completed_at: DateTime<Utc>,
    /// What the compliance decision was checked against, when a schedule was needed.
    pub(super) source: Option<ScheduleCheck>,
    /// Recorded by [`TransitionEngine::settle_intents`], after its own record failed.
    pub(super) late: bool,
    /// The deferred change this attempt carries out, settled with its record.
    pub(super) deferred: Option<DeferredRow>,
}

impl Record {
    pub(super) fn transition(&self, from: Option<AgentState>, outcome: Outcome) -> Transition {
        Transition {
            attempt_id: self.attempt_id.clone(),
            agent_id: self.request.agent_id.clone(),
            from,
            to: self.request.target,
            reason: self.reason.clone(),
            origin: self.request.origin,
            actor: self.request.actor.clone(),
            outcome,
            latency_ms: self.latency_ms,
            requested_at: self.requested_at,
            completed_at: self.completed_at,
            replayed: false,
        }
    }
}
