//! The deferred changes' types and the records each step writes in its caller's
//! transaction: storing a change to wait, settling it once carried out, expiring and
//! cancelling it, each with its bulk item, audit entry and event. They sit with the
//! transition engine, which writes some of them; [`crate::engine::deferred`] tells the
//! whole story and holds the worker that drives the engine.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::{Outcome, Transition, TransitionRequest};
use crate::domain::events::{Event, TransitionCancelled, TransitionDeferred, TransitionExpired};
use crate::domain::{AgentState, Origin};
use crate::store::audit::{self, NewEntry};
use crate::store::deferred::{self as stored, DeferredRow};
use crate::store::jobs::{self, Settlement};
use crate::store::{AsConn, from_ms, outbox, to_ms};
use crate::time::rfc3339;

pub use crate::domain::busy::{DEFAULT_DEFER_FOR, MAX_DEFER_FOR, MIN_DEFER_FOR, WhenBusy};
use crate::telemetry::names::{BULK_ITEMS_TOTAL, DEFERRED_TOTAL};

/// The `outcome` labels of `wfmd_deferred_total`.
pub const OUTCOMES: [&str; 7] = [
    "deferred",
    "succeeded",
    "rejected",
    "failed",
    "expired",
    "cancelled",
    "replaced",
];

/// How a deferrable change waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defer {
    pub defer_for: Duration,
    /// The bulk item whose change it is, settled with it.
    pub bulk: Option<BulkItem>,
}

/// A bulk job's item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkItem {
    pub job_id: String,
    pub seq: i64,
}

/// A change stored to wait for its agent, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Deferral {
    /// Always `deferred`.
    pub outcome: String,
    pub deferred_id: String,
    pub agent_id: String,
    pub to: AgentState,
    /// The reason code it will send.
    pub reason: String,
    pub origin: Origin,
    pub actor: String,
    pub requested_at: String,
    /// When it expires unless carried out (RFC 3339).
    pub expires_at: String,
    /// The bulk job whose item waits on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk_job_id: Option<String>,
}

impl Deferral {
    pub fn of(row: &DeferredRow) -> Deferral {
        Deferral {
            outcome: "deferred".to_owned(),
            deferred_id: row.id.clone(),
            agent_id: row.agent_id.clone(),
            to: target_of(row),
            reason: reason_of(row),
            origin: row.origin.parse().unwrap_or(Origin::Api),
            actor: row.actor.clone(),
            requested_at: rfc3339(from_ms(row.requested_at)),
            expires_at: rfc3339(from_ms(row.expires_at)),
            bulk_job_id: row.bulk_job_id.clone(),
        }
    }
}

/// What became of a waiting change when its turn came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarriedOut {
    /// Carried out, refused or failed: recorded as any change.
    Made(Transition),
    /// The agent is busy again (recorded so, or the platform's conflict): it waits on.
    StillBusy,
    /// Its time was up: expired.
    Expired,
    /// It no longer waits (cancelled or replaced meanwhile).
    Gone,
}

/// Whether an agent in `state` is busy: on a contact or in after-contact work.
pub fn is_busy(state: Option<AgentState>) -> bool {
    matches!(state, Some(AgentState::OnContact | AgentState::Acw))
}

fn target_of(row: &DeferredRow) -> AgentState {
    row.target_state.parse().unwrap_or(AgentState::NotReady)
}

fn reason_of(row: &DeferredRow) -> String {
    row.reason
        .clone()
        .unwrap_or_else(|| target_of(row).default_reason().to_owned())
}

fn origin_of(row: &DeferredRow) -> Origin {
    row.origin.parse().unwrap_or(Origin::Api)
}

/// The request a waiting change makes when its turn comes.
pub(super) fn request_of(row: &DeferredRow) -> TransitionRequest {
    TransitionRequest {
        agent_id: row.agent_id.clone(),
        target: target_of(row),
        reason: row.reason.clone(),
        origin: origin_of(row),
        actor: row.actor.clone(),
        idempotency_key: row.idempotency_key.clone(),
    }
}

fn count(outcome: &'static str) {
    metrics::counter!(DEFERRED_TOTAL, "outcome" => outcome).increment(1);
}

/// Stores `request` as its agent's deferred change (see the module's doc): the row,
/// the older one's settlement, the bulk item, the audit entry and the event, in the
/// caller's transaction. `from` is the agent's recorded state and `busy_since` the
/// start of its recorded interval.
pub(super) async fn store(
    conn: &mut impl AsConn,
    request: &TransitionRequest,
    defer: &Defer,
    now: DateTime<Utc>,
    from: Option<AgentState>,
    busy_since: Option<i64>,
) -> Result<Deferral, sqlx::Error> {
    let wait = chrono::TimeDelta::from_std(defer.defer_for).unwrap_or(chrono::TimeDelta::MAX);
    let row = DeferredRow {
        id: format!("dfr_{}", uuid::Uuid::now_v7().simple()),
        agent_id: request.agent_id.clone(),
        target_state: request.target.as_str().to_owned(),
        reason: request.reason.clone(),
        origin: request.origin.as_str().to_owned(),
        actor: request.actor.clone(),
        idempotency_key: request.idempotency_key.clone(),
        bulk_job_id: defer.bulk.as_ref().map(|b| b.job_id.clone()),
        bulk_seq: defer.bulk.as_ref().map(|b| b.seq),
        busy_since,
        requested_at: to_ms(now),
        expires_at: to_ms(
            now.checked_add_signed(wait)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        ),
    };
    let older = stored::replace(conn, &row).await?;
    if let Some(older) = &older {
        let detail = json!({ "deferredId": older.id, "replacedBy": row.id });
        settle_unmade(
            conn,
            older,
            &request.actor,
            "transition.replaced",
            detail,
            Some(&row.id),
            now,
        )
        .await?;
        count("replaced");
    }
    if let Some(item) = &defer.bulk {
        jobs::defer_item(conn, &item.job_id, item.seq).await?;
    }
    let deferral = Deferral::of(&row);
    audit::append(
        conn,
        &NewEntry {
            at: now,
            actor: &request.actor,
            action: "transition.deferred",
            agent_id: Some(&request.agent_id),
            subject_id: Some(&row.id),
            detail: json!({
                "deferredId": row.id,
                "from": from,
                "to": request.target,
                "reasonCode": deferral.reason,
                "origin": request.origin,
                "idempotencyKey": request.idempotency_key,
                "expiresAt": deferral.expires_at,
                "replaces": older.as_ref().map(|o| &o.id),
                "bulkJobId": row.bulk_job_id,
            }),
        },
    )
    .await?;
    outbox::enqueue(
        conn,
        Some(&request.agent_id),
        now,
        Event::TransitionDeferred(TransitionDeferred {
            deferred_id: row.id.clone(),
            agent_id: request.agent_id.clone(),
            from,
            to: request.target,
            reason_code: deferral.reason.clone(),
            origin: request.origin,
            actor: request.actor.clone(),
            expires_at: deferral.expires_at.clone(),
            replaces: older.map(|o| o.id),
            bulk_job_id: row.bulk_job_id.clone(),
        }),
    )
    .await?;
    count("deferred");
    Ok(deferral)
}

/// Settles `row`, already removed, as never carried out: cancelled (`replaced_by`: by
/// a newer one) with its audit entry, `transition.cancelled` and its bulk item.
async fn settle_unmade(
    conn: &mut impl AsConn,
    row: &DeferredRow,
    by: &str,
    action: &str,
    detail: serde_json::Value,
    replaced_by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    audit::append(
        conn,
        &NewEntry {
            at: now,
            actor: by,
            action,
            agent_id: Some(&row.agent_id),
            subject_id: Some(&row.id),
            detail,
        },
    )
    .await?;
    outbox::enqueue(
        conn,
        Some(&row.agent_id),
        now,
        Event::TransitionCancelled(TransitionCancelled {
            deferred_id: row.id.clone(),
            agent_id: row.agent_id.clone(),
            to: target_of(row),
            reason_code: reason_of(row),
            origin: origin_of(row),
            by: by.to_owned(),
            replaced_by: replaced_by.map(str::to_owned),
        }),
    )
    .await?;
    let error = match replaced_by {
        Some(newer) => format!("replaced by the agent's newer deferred change {newer}"),
        None => format!("the deferred change was cancelled by {by}"),
    };
    settle_item(conn, row, "cancelled", None, Some(&error), None, now).await
}

/// Settles the bulk item waiting on `row`, if any, and the job when it was its last.
async fn settle_item(
    conn: &mut impl AsConn,
    row: &DeferredRow,
    outcome: &'static str,
    violation: Option<&str>,
    error: Option<&str>,
    attempt_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (Some(job_id), Some(seq)) = (&row.bulk_job_id, row.bulk_seq) else {
        return Ok(());
    };
    let settlement = Settlement {
        outcome,
        violation,
        error,
        attempt_id,
    };
    if jobs::settle(conn, "deferred", job_id, seq, &settlement, to_ms(now)).await? {
        metrics::counter!(BULK_ITEMS_TOTAL, "outcome" => outcome).increment(1);
        crate::engine::jobs::finish_if_done(conn, job_id, now).await?;
    }
    Ok(())
}

/// Settles change `row` as carried out (its record is being written in the same
/// transaction): removes it and settles its bulk item with the change's outcome.
pub(super) async fn settle_made(
    conn: &mut impl AsConn,
    row: &DeferredRow,
    outcome: &Outcome,
    attempt_id: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if stored::take(conn, &row.id).await?.is_none() {
        // Cancelled while it was being carried out: the change is recorded all the same.
        return Ok(());
    }
    let (name, violation, error) = match outcome {
        Outcome::Succeeded => ("succeeded", None, None),
        Outcome::Rejected { violation } => ("rejected", Some(violation.as_str()), None),
        Outcome::Failed { error, .. } => ("failed", None, Some(error.as_str())),
    };
    count(name);
    settle_item(conn, row, name, violation, error, Some(attempt_id), now).await
}

/// Expires change `row` if it still waits: removed, audited, `transition.expired`, its
/// bulk item `failed`. False when it no longer waited.
pub(super) async fn expire(
    conn: &mut impl AsConn,
    row: &DeferredRow,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    if stored::take(conn, &row.id).await?.is_none() {
        return Ok(false);
    }
    let deferred_at = rfc3339(from_ms(row.requested_at));
    let expires_at = rfc3339(from_ms(row.expires_at));
    audit::append(
        conn,
        &NewEntry {
            at: now,
            actor: "deferred",
            action: "transition.expired",
            agent_id: Some(&row.agent_id),
            subject_id: Some(&row.id),
            detail: json!({
                "deferredId": row.id,
                "to": row.target_state,
                "reasonCode": reason_of(row),
                "origin": row.origin,
                "requestedBy": row.actor,
                "deferredAt": deferred_at,
                "expiresAt": expires_at,
            }),
        },
    )
    .await?;
    outbox::enqueue(
        conn,
        Some(&row.agent_id),
        now,
        Event::TransitionExpired(TransitionExpired {
            deferred_id: row.id.clone(),
            agent_id: row.agent_id.clone(),
            to: target_of(row),
            reason_code: reason_of(row),
            origin: origin_of(row),
            deferred_at,
            expires_at: expires_at.clone(),
        }),
    )
    .await?;
    let error = format!("the agent stayed busy until the deferred change expired at {expires_at}");
    settle_item(conn, row, "failed", None, Some(&error), None, now).await?;
    count("expired");
    Ok(true)
}

/// Cancels the deferred change of `agent_id` (only `only_of_job`'s, when given) in the
/// caller's transaction: removed, audited, `transition.cancelled`, its bulk item
/// `cancelled`. The cancelled change, if one waited.
pub(crate) async fn cancel_in(
    conn: &mut impl AsConn,
    agent_id: &str,
    only_of_job: Option<&str>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Option<DeferredRow>, sqlx::Error> {
    let Some(row) = stored::for_agent(conn, agent_id).await? else {
        return Ok(None);
    };
    if only_of_job.is_some_and(|job| row.bulk_job_id.as_deref() != Some(job)) {
        return Ok(None);
    }
    stored::take(conn, &row.id).await?;
    let detail = json!({
        "deferredId": row.id,
        "to": row.target_state,
        "reasonCode": reason_of(&row),
        "origin": row.origin,
        "requestedBy": row.actor,
    });
    settle_unmade(conn, &row, by, "transition.cancelled", detail, None, now).await?;
    count("cancelled");
    Ok(Some(row))
}
