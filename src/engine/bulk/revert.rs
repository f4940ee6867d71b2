//! Reverting a finished job: a new job putting each agent it moved back.

use super::*;

impl BulkJobs {
    /// A new job putting every agent that finished job `job_id` moved back to the state
    /// and reason it had before. The job must be finished; repeating the call (or giving
    /// the same `idempotency_key`) returns the same revert job.
    #[instrument(skip_all, fields(job = %job_id))]
    pub async fn revert(
        &self,
        job_id: &str,
        actor: &str,
        idempotency_key: Option<String>,
    ) -> Result<Accepted, BulkError> {
        let original = jobs::get(self.store().reader(), job_id)
            .await?
            .ok_or_else(|| BulkError::NotFound(job_id.to_owned()))?;
        if !original.is_finished() {
            return Err(BulkError::Conflict {
                id: job_id.to_owned(),
                status: format!("{}; cancel it or let it finish first", original.status),
            });
        }
        let key = idempotency_key.unwrap_or_else(|| format!("revert:{job_id}"));
        let hash = request_hash(&json!({ "revert": job_id }));
        if let Some(earlier) = self.earlier(&key, &hash).await? {
            return Ok(earlier);
        }
        let moved = jobs::moved(self.store().reader(), job_id).await?;
        if moved.is_empty() {
            return Err(BulkError::NothingToRevert(job_id.to_owned()));
        }
        let items: Vec<NewItem> = moved
            .into_iter()
            .map(|m| {
                let earlier = m.from_state.as_deref().map(str::parse::<AgentState>);
                match earlier {
                    Some(Ok(state)) if state.is_settable() => NewItem {
                        agent_id: m.agent_id,
                        target_state: state.as_str().to_owned(),
                        reason: Some(
                            m.from_reason
                                .unwrap_or_else(|| state.default_reason().to_owned()),
                        ),
                        not_possible: None,
                    },
                    Some(Ok(state)) => NewItem {
                        agent_id: m.agent_id,
                        target_state: state.as_str().to_owned(),
                        reason: m.from_reason,
                        not_possible: Some(format!(
                            "cannot revert: the agent was {state} before the job, which is \
                             observed only and cannot be set"
                        )),
                    },
                    _ => NewItem {
                        agent_id: m.agent_id,
                        target_state: UNKNOWN_STATE.to_owned(),
                        reason: None,
                        not_possible: Some(
                            "cannot revert: wfmd has no record of the agent's state before the \
                             job"
                            .to_owned(),
                        ),
                    },
                }
            })
            .collect();
        let new_id = new_job_id();
        let job = NewJob {
            id: &new_id,
            idempotency_key: Some(&key),
            request_hash: &hash,
            target_state: None,
            reason: None,
            team: None,
            reverts_job_id: Some(job_id),
            actor,
            created_at: to_ms(self.now()),
            defer_for_ms: None,
        };
        self.store_job(&job, &items).await
    }
}
