//! Submitting a job: checking the request, resolving a team, the idempotency key, and
//! storing the job with all its items in one transaction.

use super::*;

impl BulkJobs {
    /// Checks `request` and stores the job with all its items (or returns the job its
    /// idempotency key already created). The job starts running at once.
    #[instrument(skip_all, fields(target = %request.target))]
    pub async fn submit(&self, request: JobRequest) -> Result<Accepted, BulkError> {
        if !request.target.is_settable() {
            return Err(BulkError::invalid(
                "state",
                format!("{} is observed only and cannot be set", request.target),
            ));
        }
        if let BulkSelector::Agents(agents) = &request.selector {
            check_list(agents)?;
        }
        let mut asked = json!({
            "selector": request.selector,
            "state": request.target,
            "reason": request.reason,
        });
        // Only when given, so the keys of jobs asked before `when_busy` existed still match.
        if let Some(wait) = request.defer_for {
            asked["defer_for_ms"] = json!(wait.as_millis() as u64);
        }
        let hash = request_hash(&asked);
        if let Some(key) = &request.idempotency_key
            && let Some(earlier) = self.earlier(key, &hash).await?
        {
            return Ok(earlier);
        }
        let (agents, team) = match &request.selector {
            BulkSelector::Agents(agents) => {
                let known = self.agents().await?;
                let known: HashSet<&str> = known.iter().map(|a| a.id.as_str()).collect();
                let unknown: Vec<String> = agents
                    .iter()
                    .filter(|a| !known.contains(a.as_str()))
                    .cloned()
                    .collect();
                if !unknown.is_empty() {
                    return Err(BulkError::Invalid {
                        field: "agents",
                        detail: format!(
                            "the platform does not know {} of the agents: {}",
                            unknown.len(),
                            preview(&unknown)
                        ),
                        values: Some(("unknown_agents", unknown)),
                    });
                }
                (agents.clone(), None)
            }
            BulkSelector::Team(team) => (self.team(team).await?, Some(team.as_str())),
        };
        let target = request.target.as_str();
        let items: Vec<NewItem> = agents
            .into_iter()
            .map(|agent_id| NewItem {
                agent_id,
                target_state: target.to_owned(),
                reason: request.reason.clone(),
                not_possible: None,
            })
            .collect();
        let job_id = new_job_id();
        let job = NewJob {
            id: &job_id,
            idempotency_key: request.idempotency_key.as_deref(),
            request_hash: &hash,
            target_state: Some(target),
            reason: request.reason.as_deref(),
            team,
            reverts_job_id: None,
            actor: &request.actor,
            created_at: to_ms(self.now()),
            defer_for_ms: request
                .defer_for
                .map(|wait| i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
        };
        self.store_job(&job, &items).await
    }

    /// The agents of team `team`, by id or else by name (any letter case), as the
    /// platform's agent list (cached `agent_list_ttl`) has them; also what an adherence
    /// authorisation for a team covers.
    pub async fn team(&self, team: &str) -> Result<Vec<String>, BulkError> {
        let directory = self.agents().await?;
        let by_id: Vec<String> = directory
            .iter()
            .filter(|a| a.team_id.as_deref() == Some(team))
            .map(|a| a.id.clone())
            .collect();
        let members = if by_id.is_empty() {
            directory
                .iter()
                .filter(|a| {
                    a.team_name
                        .as_deref()
                        .is_some_and(|name| name.eq_ignore_ascii_case(team))
                })
                .map(|a| a.id.clone())
                .collect()
        } else {
            by_id
        };
        if members.is_empty() {
            return Err(BulkError::invalid(
                "team",
                format!("the platform has no team `{team}` with agents (give a team id or name)"),
            ));
        }
        if members.len() > MAX_AGENTS {
            return Err(BulkError::invalid(
                "team",
                format!(
                    "team `{team}` has {} agents; a job takes at most {MAX_AGENTS}",
                    members.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        Ok(members
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect())
    }

    /// The job an idempotency key already created, if the request is the same one.
    pub(super) async fn earlier(
        &self,
        key: &str,
        hash: &str,
    ) -> Result<Option<Accepted>, BulkError> {
        let mut conn = self.store().reader().acquire().await?;
        let Some(job) = jobs::by_idempotency_key(&mut conn, key).await? else {
            return Ok(None);
        };
        if job.request_hash != hash {
            return Err(BulkError::IdempotencyKeyReused(key.to_owned()));
        }
        let total = jobs::counts(&mut conn, &job.id).await?.total();
        Ok(Some(Accepted {
            job_id: job.id,
            created: false,
            total: usize::try_from(total).unwrap_or(0),
        }))
    }

    /// Writes the job, its items and the audit entry in one transaction, unless a job
    /// with the same key got there first.
    pub(super) async fn store_job(
        &self,
        job: &NewJob<'_>,
        items: &[NewItem],
    ) -> Result<Accepted, BulkError> {
        let mut tx = self.store().begin_write().await?;
        if let Some(key) = job.idempotency_key
            && let Some(earlier) = jobs::by_idempotency_key(&mut tx, key).await?
        {
            tx.rollback().await?;
            if earlier.request_hash != job.request_hash {
                return Err(BulkError::IdempotencyKeyReused(key.to_owned()));
            }
            let mut conn = self.store().reader().acquire().await?;
            let total = jobs::counts(&mut conn, &earlier.id).await?.total();
            return Ok(Accepted {
                job_id: earlier.id,
                created: false,
                total: usize::try_from(total).unwrap_or(0),
            });
        }
        jobs::insert(&mut tx, job, items).await?;
        let not_possible = items.iter().filter(|i| i.not_possible.is_some()).count();
        audit::append(
            &mut tx,
            &NewEntry {
                at: from_ms(job.created_at),
                actor: job.actor,
                action: "bulk.accepted",
                agent_id: None,
                subject_id: Some(job.id),
                detail: json!({
                    "jobId": job.id,
                    "state": job.target_state,
                    "reasonCode": job.reason,
                    "team": job.team,
                    "agents": items.len(),
                    "notPossible": not_possible,
                    "revertsJobId": job.reverts_job_id,
                    "idempotencyKey": job.idempotency_key,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(job = job.id, agents = items.len(), "bulk job accepted");
        self.inner.wake.notify_one();
        Ok(Accepted {
            job_id: job.id.to_owned(),
            created: true,
            total: items.len(),
        })
    }
}

/// Checks a list of agents: 1 to [`MAX_AGENTS`] of them, each once.
fn check_list(agents: &[String]) -> Result<(), BulkError> {
    if agents.is_empty() {
        return Err(BulkError::invalid(
            "agents",
            "agents must list at least one agent",
        ));
    }
    if agents.len() > MAX_AGENTS {
        return Err(BulkError::invalid(
            "agents",
            format!(
                "agents lists {} agents; a job takes at most {MAX_AGENTS}",
                agents.len()
            ),
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut duplicates = Vec::new();
    for agent in agents {
        let n = seen.entry(agent).or_default();
        *n += 1;
        if *n == 2 {
            duplicates.push(agent.clone());
        }
    }
    if !duplicates.is_empty() {
        return Err(BulkError::Invalid {
            field: "agents",
            detail: format!(
                "agents lists {} agents more than once: {}",
                duplicates.len(),
                preview(&duplicates)
            ),
            values: Some(("duplicate_agents", duplicates)),
        });
    }
    Ok(())
}

/// The first few of `values`, for a message.
fn preview(values: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = values
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if values.len() > SHOWN {
        text.push_str(&format!(" and {} more", values.len() - SHOWN));
    }
    text
}

pub(super) fn request_hash(request: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(request.to_string().as_bytes()))
}

/// `job_` + UUID v7, so ids sort by creation time.
pub(super) fn new_job_id() -> String {
    format!("job_{}", uuid::Uuid::now_v7().simple())
}
