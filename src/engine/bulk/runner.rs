//! Running jobs: every unfinished one at start, each new one as it comes, their items
//! through the transition engine with the job's concurrency.

use super::*;
use crate::telemetry::names::BULK_ITEMS_TOTAL;

impl BulkJobs {
    /// Runs jobs until `stop` is cancelled: every unfinished job at start (resuming
    /// those a crash interrupted), and each new one as it is accepted. On `stop`, items
    /// not taken yet stay pending for the next start and those in flight finish.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(
            concurrency = self.inner.concurrency,
            "bulk job runner started"
        );
        let mut tasks: JoinSet<String> = JoinSet::new();
        let mut running: HashSet<String> = HashSet::new();
        loop {
            let wait = match jobs::unfinished(self.store().reader()).await {
                Ok(ids) => {
                    let unfinished = !ids.is_empty();
                    for id in ids {
                        if running.insert(id.clone()) {
                            let (jobs, stop) = (self.clone(), stop.clone());
                            crate::tasks::spawn_in(&mut tasks, async move {
                                if let Err(error) = jobs.run_job(&id, &stop).await {
                                    tracing::warn!(%error, job = %id, "bulk job interrupted; it resumes shortly");
                                    tokio::time::sleep(ERROR_BACKOFF).await;
                                }
                                id
                            });
                        }
                    }
                    if unfinished { IDLE_POLL } else { QUIET_POLL }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot look for bulk jobs");
                    ERROR_BACKOFF
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.inner.wake.notified() => {}
                Some(done) = tasks.join_next() => {
                    if let Ok(id) = done {
                        running.remove(&id);
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!("bulk job runner stopped");
    }

    /// Runs every unfinished job to its end, as a step for tests; returns how many.
    pub async fn run_pending(&self) -> Result<usize, sqlx::Error> {
        let ids = jobs::unfinished(self.store().reader()).await?;
        let never = CancellationToken::new();
        for id in &ids {
            self.run_job(id, &never).await?;
        }
        Ok(ids.len())
    }

    /// Runs one job's pending items; returns when none is left in flight (all settled,
    /// or `stop` came and the rest waits for the next run).
    #[instrument(name = "bulk.job", skip_all, fields(job = %job_id))]
    pub async fn run_job(&self, job_id: &str, stop: &CancellationToken) -> Result<(), sqlx::Error> {
        let Some(job) = jobs::get(self.store().reader(), job_id).await? else {
            return Ok(());
        };
        if job.is_finished() {
            return Ok(());
        }
        // A running job is looked at again every IDLE_POLL while items of it wait for
        // busy agents: no write for it then.
        if job.status == "queued" {
            let mut tx = self.store().begin_write().await?;
            jobs::mark_running(&mut tx, job_id, to_ms(self.now())).await?;
            tx.commit().await?;
        }
        let items = jobs::pending(self.store().reader(), job_id).await?;
        tracing::info!(pending = items.len(), "bulk job running");
        let results: Vec<Result<(), sqlx::Error>> = futures::stream::iter(items)
            .map(|item| self.run_item(&job, item, stop))
            .buffer_unordered(self.inner.concurrency)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        let waiting = || async {
            let mut conn = self.store().reader().acquire().await?;
            let counts = jobs::counts(&mut conn, job_id).await?;
            Ok::<_, sqlx::Error>(counts.pending + counts.deferred > 0)
        };
        if !stop.is_cancelled() && !waiting().await? {
            // Nothing may have been left to run (all items settled from the start, or
            // by a run that crashed before finishing the job).
            let now = self.now();
            let mut tx = self.store().begin_write().await?;
            let finished = finish_if_done(&mut tx, job_id, now).await?;
            tx.commit().await?;
            if finished {
                self.store().notify_outbox();
            }
        }
        Ok(())
    }

    async fn run_item(
        &self,
        job: &BulkJobRow,
        item: ItemRow,
        stop: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let Ok(_permit) = self.inner.permits.acquire().await else {
            return Ok(());
        };
        if stop.is_cancelled() {
            return Ok(());
        }
        let interrupted = item.started_at.map(from_ms);
        if interrupted.is_none() {
            let mut tx = self.store().begin_write().await?;
            let taken = jobs::take(&mut tx, &job.id, item.seq, to_ms(self.now())).await?;
            tx.commit().await?;
            if !taken {
                return Ok(());
            }
        }
        let settlement = match item.target_state.parse::<AgentState>() {
            Ok(target) => {
                let request = TransitionRequest {
                    agent_id: item.agent_id.clone(),
                    target,
                    reason: item.reason.clone(),
                    origin: Origin::Bulk,
                    actor: job.actor.clone(),
                    idempotency_key: Some(format!("bulk:{}:{}", job.id, item.agent_id)),
                };
                let engine = &self.inner.engine;
                let witness = self.inner.witness.as_ref();
                let defer = job.defer_for_ms.map(|ms| Defer {
                    defer_for: Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
                    bulk: Some(BulkItem {
                        job_id: job.id.clone(),
                        seq: item.seq,
                    }),
                });
                let change = Change::from(request).deferring(defer);
                // A resumed item is checked against the platform, not the witness.
                let change = match interrupted {
                    Some(since) => change.resuming(since),
                    None => change.witnessed_by(witness.cloned()),
                };
                let change = engine.change(change);
                // Jobs take turns at the budget, so a small job is not queued behind
                // every item of a big one.
                let result = in_lane(Lane::Automation, Some(&job.id), change).await;
                match result {
                    // Marked `deferred` with the deferral; settled when it is.
                    Ok(Changed::Deferred(_)) => {
                        metrics::counter!(BULK_ITEMS_TOTAL, "outcome" => "deferred").increment(1);
                        return Ok(());
                    }
                    Ok(Changed::Unchanged(_)) => Settled::new("unchanged", None, None, None),
                    Ok(Changed::Made(transition)) => {
                        let attempt = Some(transition.attempt_id);
                        match transition.outcome {
                            Outcome::Succeeded => Settled::new("succeeded", None, None, attempt),
                            Outcome::Rejected { violation } => Settled::new(
                                "rejected",
                                Some(violation.as_str().to_owned()),
                                None,
                                attempt,
                            ),
                            Outcome::Failed { error, .. } => {
                                Settled::new("failed", None, Some(error), attempt)
                            }
                        }
                    }
                    Err(EngineError::Store(e) | EngineError::Unrecorded { error: e, .. }) => {
                        return Err(e);
                    }
                    Err(other) => Settled::new("failed", None, Some(other.to_string()), None),
                }
            }
            Err(e) => Settled::new("failed", None, Some(e.to_string()), None),
        };
        self.settle(&job.id, item.seq, &settlement).await
    }
}
