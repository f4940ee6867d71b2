//! Cancelling a running job's items not taken yet.

use super::*;
use crate::telemetry::names::BULK_ITEMS_TOTAL;

impl BulkJobs {
    /// Cancels the items of a running job not taken yet (those in flight finish);
    /// the job is `cancelled` once nothing is in flight. Cancelling a cancelled job
    /// again changes nothing; a completed one is a conflict.
    #[instrument(skip_all, fields(job = %job_id))]
    pub async fn cancel(&self, job_id: &str, actor: &str) -> Result<BulkJobView, BulkError> {
        let now = self.now();
        let mut tx = self.store().begin_write().await?;
        let job = jobs::get_on(&mut tx, job_id)
            .await?
            .ok_or_else(|| BulkError::NotFound(job_id.to_owned()))?;
        match job.status.as_str() {
            "completed" => {
                tx.rollback().await?;
                return Err(BulkError::Conflict {
                    id: job_id.to_owned(),
                    status: "completed already; nothing is left to cancel".to_owned(),
                });
            }
            "cancelled" => tx.rollback().await?,
            _ => {
                let mut cancelled = jobs::cancel_untaken(&mut tx, job_id, to_ms(now)).await?;
                // Its changes waiting for busy agents will not be carried out either.
                for agent in jobs::deferred_agents(&mut tx, job_id).await? {
                    if crate::engine::deferred::cancel_in(&mut tx, &agent, Some(job_id), actor, now)
                        .await?
                        .is_some()
                    {
                        cancelled += 1;
                    }
                }
                audit::append(
                    &mut tx,
                    &NewEntry {
                        at: now,
                        actor,
                        action: "bulk.cancel_requested",
                        agent_id: None,
                        subject_id: Some(job_id),
                        detail: json!({ "jobId": job_id, "cancelled": cancelled }),
                    },
                )
                .await?;
                let finished = finish_if_done(&mut tx, job_id, now).await?;
                tx.commit().await?;
                metrics::counter!(BULK_ITEMS_TOTAL, "outcome" => "cancelled").increment(cancelled);
                if finished {
                    self.store().notify_outbox();
                }
                tracing::info!(cancelled, "bulk job cancellation asked for");
            }
        }
        self.job(job_id, true)
            .await?
            .ok_or_else(|| BulkError::NotFound(job_id.to_owned()))
    }
}
