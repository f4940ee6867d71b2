//! Settling an item: its outcome recorded and, after the job's last, the job's end.

use super::*;
use crate::telemetry::names::BULK_ITEMS_TOTAL;

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
        metrics::counter!(BULK_ITEMS_TOTAL, "outcome" => settled.outcome).increment(1);
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
