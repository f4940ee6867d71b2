//! Settling an item: its outcome recorded and, after the job's last, the job's end.

use super::*;
use crate::store::AsConn;

impl BulkJobs {
    /// Records an item's outcome and, when it was the job's last, the job's end.
    pub(super) async fn settle(
        &self,
        job_id: &str,
        seq: i64,
        settled: &Settled,
    ) -> Result<(), sqlx::Error> {
        let now = self.now();
        let mut tx = self.store().begin_write().await?;
        jobs::settle(
            &mut tx,
            "pending",
            job_id,
            seq,
            &Settlement {
                outcome: settled.outcome,
                violation: settled.violation.as_deref(),
                error: settled.error.as_deref(),
                attempt_id: settled.attempt_id.as_deref(),
            },
            to_ms(now),
        )
        .await?;
        let finished = finish_if_done(&mut tx, job_id, now).await?;
        tx.commit().await?;
        metrics::counter!("wfmd_bulk_items_total", "outcome" => settled.outcome).increment(1);
        if finished {
            self.store().notify_outbox();
        }
        Ok(())
    }
}

/// An item's outcome, owned.
pub(super) struct Settled {
    outcome: &'static str,
    violation: Option<String>,
    error: Option<String>,
    attempt_id: Option<String>,
}

impl Settled {
    pub(super) fn new(
        outcome: &'static str,
        violation: Option<String>,
        error: Option<String>,
        attempt_id: Option<String>,
    ) -> Settled {
        Settled {
            outcome,
            violation,
            error,
            attempt_id,
        }
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
