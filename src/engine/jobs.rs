//! Bulk jobs as recorded, below the bulk runner and the deferred changes that both settle
//! their items: a job as clients see it ([`BulkJobView`]), and the record of its end (its
//! final status, audit entry and `bulk.completed` event), written by whoever settles its
//! last item: the runner, a cancellation, or a deferred change carried out or ended.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::AgentState;
use crate::domain::events::{BulkCompleted, Event};
use crate::store::audit::{self, NewEntry};
use crate::store::jobs::{self, BulkJobRow, Counts, ItemRow};
use crate::store::{AsConn, from_ms, outbox, to_ms};
use crate::time::rfc3339;

/// A job as clients see it: progress, counts and (when asked for) every item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Published as `BulkJob`, the schema name that clients generated from the document
// already use.
#[schema(as = BulkJob)]
pub struct BulkJobView {
    pub job_id: String,
    /// `queued`, `running`, `completed` or `cancelled`.
    pub status: String,
    pub total: i64,
    pub succeeded: i64,
    /// Settled without a platform call: state sync saw the agent in the target state and
    /// reason already, with nothing commanded since.
    #[serde(default)]
    pub unchanged: i64,
    pub rejected: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub pending: i64,
    /// Items waiting for a busy agent (`when_busy = "defer"`); the job completes only
    /// once none is left.
    #[serde(default)]
    pub deferred: i64,
    /// The target state; absent for a revert, whose items each have their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts_job_id: Option<String>,
    pub actor: String,
    pub cancel_requested: bool,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ItemView>>,
}

impl BulkJobView {
    /// Whether the job has its final status.
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "cancelled")
    }

    /// The `bulk.completed` event of the job this shows, finished at `finished_at`: the
    /// webhook says what `GET /v1/bulk-transitions/{id}` shows then, items aside.
    pub(crate) fn completed(self, finished_at: DateTime<Utc>) -> BulkCompleted {
        BulkCompleted {
            job_id: self.job_id,
            status: self.status,
            total: self.total,
            succeeded: self.succeeded,
            unchanged: self.unchanged,
            rejected: self.rejected,
            failed: self.failed,
            cancelled: self.cancelled,
            state: self.state,
            reason_code: self.reason,
            team: self.team,
            reverts_job_id: self.reverts_job_id,
            actor: self.actor,
            created_at: self.created_at,
            finished_at: rfc3339(finished_at),
        }
    }
}

/// One agent of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemView {
    pub agent: String,
    /// `pending`, `deferred` (waiting for a busy agent), `succeeded`, `unchanged`,
    /// `rejected`, `failed` or `cancelled`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The state and reason code this item sets (absent for an agent a revert cannot
    /// put back because its earlier state is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
}

impl ItemView {
    pub(crate) fn of(row: ItemRow) -> ItemView {
        let state = row.target_state.parse::<AgentState>().ok();
        let reason = row
            .reason
            .or_else(|| state.map(|s| s.default_reason().to_owned()));
        ItemView {
            agent: row.agent_id,
            outcome: row.outcome,
            violation: row.violation,
            error: row.error,
            state: state.map(|s| s.as_str().to_owned()),
            reason,
            attempt_id: row.attempt_id,
        }
    }
}

/// A job as clients see it, from its row, counts and (when asked for) items.
pub(crate) fn view(row: BulkJobRow, counts: Counts, items: Option<Vec<ItemRow>>) -> BulkJobView {
    BulkJobView {
        job_id: row.id,
        status: row.status,
        total: counts.total(),
        succeeded: counts.succeeded,
        unchanged: counts.unchanged,
        rejected: counts.rejected,
        failed: counts.failed,
        cancelled: counts.cancelled,
        pending: counts.pending,
        deferred: counts.deferred,
        state: row.target_state,
        reason: row.reason,
        team: row.team,
        reverts_job_id: row.reverts_job_id,
        actor: row.actor,
        cancel_requested: row.cancel_requested_at.is_some(),
        created_at: rfc3339(from_ms(row.created_at)),
        started_at: row.started_at.map(|ms| rfc3339(from_ms(ms))),
        finished_at: row.finished_at.map(|ms| rfc3339(from_ms(ms))),
        items: items.map(|rows| rows.into_iter().map(ItemView::of).collect()),
    }
}

/// Gives the job its final status, audit entry and `bulk.completed` event when no item
/// is pending any more; true when it did so now.
pub(crate) async fn finish_if_done(
    conn: &mut impl AsConn,
    job_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let counts = jobs::counts(conn, job_id).await?;
    // A deferred item is not settled yet: it waits for its agent.
    if counts.pending > 0 || counts.deferred > 0 {
        return Ok(false);
    }
    let Some(job) = jobs::finish(conn, job_id, to_ms(now)).await? else {
        return Ok(false);
    };
    let completed = view(job.clone(), counts, None).completed(now);
    audit::append(
        conn,
        &NewEntry {
            at: now,
            actor: &job.actor,
            action: if job.status == "cancelled" {
                "bulk.cancelled"
            } else {
                "bulk.completed"
            },
            agent_id: None,
            subject_id: Some(&job.id),
            detail: serde_json::to_value(&completed).expect("a bulk job serializes"),
        },
    )
    .await?;
    outbox::enqueue(conn, None, now, Event::BulkCompleted(completed)).await?;
    tracing::info!(
        job = %job.id,
        status = %job.status,
        succeeded = counts.succeeded,
        unchanged = counts.unchanged,
        rejected = counts.rejected,
        failed = counts.failed,
        cancelled = counts.cancelled,
        "bulk job finished"
    );
    Ok(true)
}
