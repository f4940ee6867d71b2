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
use crate::store::outbox::{self, NewEvent};
use crate::store::{AsConn, batched, to_ms};

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

    /// Records what an attempt did, all in one transaction, which the records and
    /// intents of other changes may share (see `group_commit`): the attempt row and its
    /// audit entry, and by its `outcome`: a success closes the agent's open interval and
    /// opens the new one at `changed_at` and is announced as `agent.state_changed`; a
    /// rejection is announced as `transition.rejected`; a failure is recorded and
    /// audited only (no event type exists for it). The deferred change the attempt
    /// carries out, if any, is settled with it.
    pub(super) async fn record(
        &self,
        record: &Record,
        outcome: Outcome,
        changed_at: Option<DateTime<Utc>>,
    ) -> Result<Transition, sqlx::Error> {
        let transition = self
            .writes
            .record(Recording {
                record: record.clone(),
                outcome,
                changed_at,
            })
            .await?;
        match &transition.outcome {
            Outcome::Succeeded => {}
            Outcome::Rejected { violation } => tracing::info!(%violation, "transition rejected"),
            Outcome::Failed { error, .. } => tracing::warn!(%error, "transition failed"),
        }
        Ok(transition)
    }

    /// Commits the intent of a change about to be sent (see [`crate::store::intents`]),
    /// in a transaction the intents and records of other changes may share.
    pub(super) async fn write_intent(
        &self,
        request: &TransitionRequest,
        reason: &str,
        attempt_id: &str,
        requested_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        self.writes
            .intent(IntentRow {
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
            })
            .await
    }

    /// The attempt row and its audit entry; removes the attempt's intent.
    pub(super) async fn write_attempt(
        &self,
        conn: &mut impl AsConn,
        record: &Record,
        from: Option<AgentState>,
        outcome: &Outcome,
    ) -> Result<(), sqlx::Error> {
        let tip = audit::read_tip(conn).await?;
        write_attempts(conn, tip, &[(record, from, outcome)], &[]).await
    }
}

/// An attempt to record: what is known of it, how it ended, and when the platform made
/// the change, when it says.
pub(super) struct Recording {
    pub(super) record: Record,
    pub(super) outcome: Outcome,
    pub(super) changed_at: Option<DateTime<Utc>>,
}

/// Writes `intents` and records `recordings` (of distinct agents) in the caller's
/// transaction, each kind in a few statements whatever their number; returns each
/// recording's transition, in order. See [`TransitionEngine::record`] for what a record
/// writes.
pub(super) async fn write_all(
    conn: &mut impl AsConn,
    intents: &[&IntentRow],
    recordings: &[&Recording],
) -> Result<Vec<Transition>, sqlx::Error> {
    intents::insert_all(conn, intents).await?;
    if recordings.is_empty() {
        return Ok(Vec::new());
    }
    // The platform's own timestamp of the change is the interval boundary, so commanded
    // and observed changes share one clock.
    let at = |r: &Recording| r.changed_at.unwrap_or(r.record.completed_at);
    let entering: Vec<NewInterval<'_>> = recordings
        .iter()
        .filter(|r| r.outcome == Outcome::Succeeded)
        .map(|r| NewInterval {
            agent_id: &r.record.request.agent_id,
            state: r.record.request.target,
            reason: Some(&r.record.reason),
            origin: r.record.request.origin,
            at: at(r),
            attempt_id: Some(&r.record.attempt_id),
        })
        .collect();
    let (closed, tip) = history::switch_states_then_tip(conn, &entering).await?;
    // Nothing changed for the others: each agent is still where its open interval says.
    let staying: Vec<&str> = recordings
        .iter()
        .filter(|r| r.outcome != Outcome::Succeeded)
        .map(|r| r.record.request.agent_id.as_str())
        .collect();
    let open = match staying.is_empty() {
        true => Default::default(),
        false => history::open_intervals(conn, &staying).await?,
    };
    let left: Vec<(Option<AgentState>, i64)> = recordings
        .iter()
        .map(|r| {
            let agent = r.record.request.agent_id.as_str();
            match r.outcome {
                Outcome::Succeeded => closed
                    .get(agent)
                    .map_or((None, 0), |c| (c.state(), c.idle_ms())),
                _ => (open.get(agent).and_then(|o| o.state()), 0),
            }
        })
        .collect();
    let attempts: Vec<_> = recordings
        .iter()
        .zip(&left)
        .map(|(r, (from, _))| (&r.record, *from, &r.outcome))
        .collect();
    let events: Vec<NewEvent<'_>> = recordings
        .iter()
        .zip(&left)
        .filter_map(|(r, &(from, idle_ms))| {
            let record = &r.record;
            let request = &record.request;
            let deferred_id = record.deferred.as_ref().map(|row| row.id.clone());
            let event = match &r.outcome {
                Outcome::Succeeded => Event::AgentStateChanged(StateChanged {
                    agent_id: request.agent_id.clone(),
                    from,
                    to: request.target,
                    reason_code: Some(record.reason.clone()),
                    origin: request.origin,
                    idle_ms,
                    latency_ms: Some(record.latency_ms),
                    attempt_id: Some(record.attempt_id.clone()),
                    queue: None,
                    changed_at: Some(crate::time::rfc3339(at(r))),
                    deferred_id,
                }),
                Outcome::Rejected { violation } => Event::TransitionRejected(TransitionRejected {
                    agent_id: request.agent_id.clone(),
                    from,
                    to: request.target,
                    reason_code: record.reason.clone(),
                    origin: request.origin,
                    violation: *violation,
                    attempt_id: record.attempt_id.clone(),
                    deferred_id,
                }),
                Outcome::Failed { .. } => return None,
            };
            Some(NewEvent {
                agent_id: Some(&request.agent_id),
                at: record.completed_at,
                event,
            })
        })
        .collect();
    write_attempts(conn, tip, &attempts, &events).await?;
    for r in recordings {
        if let Some(row) = &r.record.deferred {
            deferred::settle_made(
                conn,
                row,
                &r.outcome,
                &r.record.attempt_id,
                r.record.completed_at,
            )
            .await?;
        }
    }
    Ok(recordings
        .iter()
        .zip(left)
        .map(|(r, (from, _))| r.record.transition(from, r.outcome.clone()))
        .collect())
}

/// The attempt rows of `attempts`, their audit entries (chained from `tip`, read in
/// this transaction) and `events`; removes the attempts' intents. A statement for
/// each, whatever their number; on PostgreSQL all of them go as one statement (see
/// [`crate::store::batched`]), so one round trip in all.
async fn write_attempts(
    conn: &mut impl AsConn,
    tip: audit::Tip,
    attempts: &[(&Record, Option<AgentState>, &Outcome)],
    events: &[NewEvent<'_>],
) -> Result<(), sqlx::Error> {
    let entries: Vec<_> = attempts
        .iter()
        .map(|&(record, from, outcome)| audit_entry(record, from, outcome))
        .collect();
    let (append, _) = audit::appending_after(conn, tip, &entries).await?;
    let ids: Vec<&str> = attempts
        .iter()
        .map(|(record, ..)| record.attempt_id.as_str())
        .collect();
    let rows: Vec<_> = attempts
        .iter()
        .map(|&(record, from, outcome)| attempt_row(record, from, outcome))
        .collect();
    let rows: Vec<_> = rows.iter().map(|(row, grounds)| (row, *grounds)).collect();
    let mut writes = Vec::with_capacity(4);
    if !ids.is_empty() {
        writes.push(intents::deleting_all(&ids));
        writes.push(attempts::inserting_all_with(&rows));
    }
    writes.extend(append);
    if !events.is_empty() {
        writes.push(outbox::enqueuing_all(events).0);
    }
    batched::run_all(conn, writes).await
}

/// The attempt row of `record`, and what its compliance decision rested on.
fn attempt_row(
    record: &Record,
    from: Option<AgentState>,
    outcome: &Outcome,
) -> (AttemptRow, attempts::Grounds<'static>) {
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
    let source = record.source.and_then(ScheduleCheck::source);
    let row = AttemptRow {
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
    };
    let grounds = attempts::Grounds {
        schedule_source: source.map(|source| {
            let age_ms = i64::try_from(source.age.as_millis()).unwrap_or(i64::MAX);
            (source.as_str(), age_ms)
        }),
        unchecked: record.source.and_then(ScheduleCheck::unchecked),
    };
    (row, grounds)
}

/// The audit entry of `record`.
fn audit_entry<'a>(
    record: &'a Record,
    from: Option<AgentState>,
    outcome: &Outcome,
) -> NewEntry<'a> {
    let request = &record.request;
    let source = record.source.and_then(ScheduleCheck::source);
    let unchecked = record.source.and_then(ScheduleCheck::unchecked);
    let mut detail = json!({
        "attemptId": record.attempt_id,
        "from": from,
        "to": request.target,
        "reasonCode": record.reason,
        "origin": request.origin,
        "latencyMs": record.latency_ms,
        "idempotencyKey": request.idempotency_key,
    });
    if let serde_json::Value::Object(fields) = serde_json::to_value(outcome).unwrap_or_default() {
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
    NewEntry {
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
    }
}

/// What is known about an attempt once the platform has answered.
#[derive(Clone)]
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
