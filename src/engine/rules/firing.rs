//! One firing of a rule: claim the slot, select the agents, apply the conditions, move
//! the rest through the transition engine, record every agent's result.
//!
//! The slot is claimed (a `rule_firings` row) before any agent is touched. Each agent's
//! change carries the idempotency key `rule:NAME:SLOT:AGENT`, so a firing interrupted by
//! a crash or a shutdown is resumed without changing anyone twice: agents with a stored
//! result are left out, an agent whose change was recorded but whose result was not yet
//! stored gets the engine's stored answer back, and the others go through
//! the engine resuming them ([`Change::resuming`]), which records a change the platform
//! already shows (made just before the crash, never recorded) instead of making it again.
//!
//! An agent state sync saw in the rule's state and reason at its last poll, with nothing
//! commanded since, needs no call: it is recorded `skipped` with reason `unchanged` and
//! audited as `transition.unchanged` (see [`Change::witnessed_by`]).
//!
//! Conditions read each agent's recorded state (`store::history`, kept current by state
//! sync) rather than asking the platform agent by agent. The changes fan out with
//! bounded concurrency (`scheduler.concurrency`) through the engine, whose platform
//! client waits for the shared request budget: a rule over 500 agents under a budget of
//! 100 requests a minute takes minutes, says so in its log, and causes no 429s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Firer, Firing, Unfinished};
use crate::cxone::{AgentFilter, CxoneError, Lane, in_lane};
use crate::domain::rule::{Rule, RuleSelector, RuleWhenBusy, Skip};
use crate::domain::{AgentState, Origin, Violation, policy};
use crate::engine::deferred::Defer;
use crate::engine::{
    Change, Changed, EngineError, Outcome, SyncWitness, TransitionEngine, TransitionRequest,
};
use crate::store::firings::{self, AgentResult, FiringRow};
use crate::store::{Store, attempts, from_ms, history};
use crate::telemetry::names::RULE_FIRINGS_TOTAL;
use crate::time::rfc3339;

/// The idempotency key of `agent`'s change in the firing of `rule` at `slot`.
pub fn idempotency_key(rule: &str, slot: DateTime<Utc>, agent: &str) -> String {
    format!("rule:{rule}:{}:{agent}", rfc3339(slot))
}

/// How long `agents` changes of `requests_each` requests take at `per_minute`.
pub fn estimate(agents: usize, requests_each: u32, per_minute: u32) -> Duration {
    let requests = agents as u64 * u64::from(requests_each);
    Duration::from_secs((requests * 60).div_ceil(u64::from(per_minute.max(1))))
}

/// What a firing now would do to one agent (`wfmd rules dry-run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FiringVerdict {
    /// The agent would be moved.
    Move,
    /// The agent would be left alone.
    Skip(Skip),
    /// Compliance would refuse the change.
    Reject(Violation),
    /// The platform could not say (the change would be tried).
    Unknown(String),
}

/// An agent a firing would target, its recorded state and what would happen to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentVerdict {
    pub agent_id: String,
    pub state: Option<AgentState>,
    pub verdict: FiringVerdict,
}

/// The daemon's [`Firer`]: fires rules through the transition engine and records them.
pub struct RuleFirer {
    store: Store,
    engine: Arc<TransitionEngine>,
    concurrency: usize,
    requests_per_minute: Option<u32>,
    /// State sync, when it runs: agents it saw in the rule's state already need no call.
    witness: Option<SyncWitness>,
    /// `[deferred] defer_for`: how long a rule's change with `when_busy = "defer"` waits
    /// unless the rule says.
    defer_for: Duration,
}

/// Why a firing could not start its fan-out.
#[derive(Debug, thiserror::Error)]
pub enum FiringError {
    #[error("cannot list the agents of {selector}: {error}")]
    Selector { selector: String, error: CxoneError },
    #[error("the database failed: {0}")]
    Store(#[from] sqlx::Error),
}

impl RuleFirer {
    /// `requests_per_minute` is the request budget's rate, for the duration estimate.
    pub fn new(
        store: Store,
        engine: Arc<TransitionEngine>,
        concurrency: usize,
        requests_per_minute: Option<u32>,
    ) -> RuleFirer {
        RuleFirer {
            store,
            engine,
            concurrency: concurrency.max(1),
            requests_per_minute,
            witness: None,
            defer_for: crate::engine::deferred::DEFAULT_DEFER_FOR,
        }
    }

    /// How long a change of a rule with `when_busy = "defer"` and no `defer_for` of its
    /// own waits for a busy agent (`[deferred] defer_for`).
    pub fn with_defer_for(mut self, defer_for: Duration) -> RuleFirer {
        self.defer_for = defer_for;
        self
    }

    /// Leaves agents state sync (`witness`) saw in the rule's state and reason at its
    /// last poll alone, without a call (recorded `skipped`/`unchanged`).
    pub fn with_sync(mut self, witness: SyncWitness) -> RuleFirer {
        self.witness = Some(witness);
        self
    }

    /// The agents `selector` names now, sorted.
    async fn targets(&self, selector: &RuleSelector) -> Result<Vec<String>, FiringError> {
        if let RuleSelector::Agents(agents) = selector {
            let mut agents = agents.clone();
            agents.sort();
            return Ok(agents);
        }
        let filter = agent_filter(selector).unwrap_or_default();
        let listed = self
            .engine
            .platform()
            .list_agents(&filter)
            .await
            .map_err(|error| FiringError::Selector {
                selector: selector.to_string(),
                error,
            })?;
        let mut ids: Vec<String> = listed.into_iter().map(|a| a.id).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The recorded state of each of `agents` that has one.
    async fn recorded_states(
        &self,
        agents: &[String],
    ) -> Result<HashMap<String, AgentState>, sqlx::Error> {
        let ids: Vec<&str> = agents.iter().map(String::as_str).collect();
        let mut conn = self.store.reader().acquire().await?;
        let open = history::open_intervals(&mut conn, &ids).await?;
        Ok(open
            .into_iter()
            .filter_map(|(agent, row)| Some((agent, row.state()?)))
            .collect())
    }

    /// What a firing of `rule` now would do to each agent it targets: the conditions as
    /// a firing applies them, then the compliance check of the transition engine for the
    /// agents that would be moved. Changes nothing and records nothing.
    pub async fn dry_run(&self, rule: &Rule) -> Result<Vec<AgentVerdict>, FiringError> {
        let targets = self.targets(&rule.selector).await?;
        let states = self.recorded_states(&targets).await?;
        let target = rule.action.target();
        let engine = &self.engine;
        let verdicts = futures::stream::iter(targets)
            .map(|agent_id| {
                let state = states.get(&agent_id).copied();
                async move {
                    let verdict = match rule.conditions.check(state) {
                        Err(skip) => FiringVerdict::Skip(skip),
                        Ok(()) => match engine.preflight(&agent_id, target).await {
                            Ok(Ok(())) => FiringVerdict::Move,
                            Ok(Err(violation)) => FiringVerdict::Reject(violation),
                            Err(e) => FiringVerdict::Unknown(e.to_string()),
                        },
                    };
                    AgentVerdict {
                        agent_id,
                        state,
                        verdict,
                    }
                }
            })
            .buffered(self.concurrency)
            .collect()
            .await;
        Ok(verdicts)
    }

    /// Fires `slot` of `rule` (claiming it first), or resumes the unfinished firing
    /// `resume`. Returns the finished firing; `None` when the slot was claimed already or
    /// `stop` interrupted the fan-out (the firing stays running, to be resumed).
    pub async fn fire_slot(
        &self,
        rule: &Rule,
        slot: DateTime<Utc>,
        resume: Option<i64>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<FiringRow>> {
        let started = Instant::now();
        // A resumed firing's agents may have been changed on the platform just before
        // the interruption, unrecorded: the engine checks for that from the firing's start.
        let mut resuming_since = None;
        let id = match resume {
            Some(id) => {
                resuming_since = firings::get(self.store.reader(), id)
                    .await?
                    .map(|row| from_ms(row.started_at));
                id
            }
            None => {
                let claimed = firings::claim(
                    &self.store,
                    &rule.name,
                    slot,
                    &rule.definition(),
                    self.engine.now(),
                )
                .await?;
                let Some(id) = claimed else {
                    tracing::debug!(rule = %rule.name, slot = %rfc3339(slot), "slot already claimed");
                    return Ok(None);
                };
                id
            }
        };
        let targets = match self.targets(&rule.selector).await {
            Ok(targets) => targets,
            Err(e) => {
                tracing::warn!(rule = %rule.name, slot = %rfc3339(slot), error = %e, "rule firing failed");
                let row = firings::finish(
                    &self.store,
                    id,
                    "failed",
                    Some(0),
                    Some(&e.to_string()),
                    self.engine.now(),
                )
                .await?;
                count_firing(&rule.name, &row.outcome);
                return Ok(Some(row));
            }
        };

        let handled = firings::handled(self.store.reader(), id).await?;
        let pending: Vec<String> = targets
            .iter()
            .filter(|agent| !handled.contains(*agent))
            .cloned()
            .collect();
        let keys: Vec<String> = pending
            .iter()
            .map(|agent| idempotency_key(&rule.name, slot, agent))
            .collect();
        // Agents changed before an interruption (the result not stored yet) get the
        // engine's stored answer: their state now would no longer meet the conditions.
        let decided = attempts::used_keys(self.store.reader(), &keys).await?;
        let states = self.recorded_states(&pending).await?;
        let mut moves = Vec::new();
        let mut skipped = Vec::new();
        for (agent, key) in pending.into_iter().zip(keys) {
            if decided.contains(&key) {
                moves.push((agent, key));
                continue;
            }
            match rule.conditions.check(states.get(&agent).copied()) {
                Ok(()) => moves.push((agent, key)),
                Err(skip) => skipped.push(AgentResult {
                    agent_id: agent,
                    outcome: "skipped",
                    reason: Some(skip.kind().to_owned()),
                    detail: Some(skip.to_string()),
                    attempt_id: None,
                }),
            }
        }
        firings::record_agents(&self.store, id, &skipped).await?;

        let target = rule.action.target();
        // One request per change, plus a schedule lookup for each agent the schedule
        // book cannot decide for (missing or older than schedules.max_age).
        let lookups = if policy::needs_schedule(target) {
            let agents: Vec<String> = moves.iter().map(|(agent, _)| agent.clone()).collect();
            moves.len() - self.engine.decided_by_book(&agents).await
        } else {
            0
        };
        let requests = moves.len() + lookups;
        match self.requests_per_minute {
            Some(per_minute) => tracing::info!(
                rule = %rule.name,
                slot = %rfc3339(slot),
                "rule {}: {} agents, about {} at {per_minute} requests/min ({requests} requests, {lookups} of them schedule lookups; {} skipped{})",
                rule.name,
                moves.len(),
                humantime::format_duration(estimate(requests, 1, per_minute)),
                skipped.len(),
                if handled.is_empty() { String::new() } else { format!(", {} done before", handled.len()) },
            ),
            None => tracing::info!(
                rule = %rule.name,
                slot = %rfc3339(slot),
                "rule {}: {} agents ({} skipped), no request budget",
                rule.name,
                moves.len(),
                skipped.len(),
            ),
        }

        let to_move = moves.len();
        let mut done = 0;
        let party = format!("firing:{id}");
        let party = &party;
        // Each change stores its own result: awaiting the store in the loop below would
        // stop polling the changes in flight, one of which may hold the write connection.
        let changes = futures::stream::iter(moves)
            .take_until(stop.cancelled())
            .map(|(agent, key)| async move {
                // Firings take turns at the budget with each other and with bulk jobs.
                let change = self.change(rule, agent, key, resuming_since);
                let result = in_lane(Lane::Automation, Some(party), change).await;
                firings::record_agents(&self.store, id, std::slice::from_ref(&result)).await
            })
            .buffer_unordered(self.concurrency);
        let mut changes = std::pin::pin!(changes);
        while let Some(recorded) = changes.next().await {
            recorded?;
            done += 1;
        }
        if done < to_move {
            tracing::info!(
                rule = %rule.name,
                slot = %rfc3339(slot),
                left = to_move - done,
                "rule firing interrupted by shutdown; it resumes at the next start"
            );
            return Ok(None);
        }

        let results = firings::agents(self.store.reader(), id).await?;
        let failed = results.iter().filter(|a| a.outcome == "failed").count();
        let unchanged = results
            .iter()
            .filter(|a| a.outcome == "skipped" && a.reason.as_deref() == Some("unchanged"))
            .count();
        let outcome = match failed {
            0 => "completed",
            n if n == targets.len() => "failed",
            _ => "partial",
        };
        let row = firings::finish(
            &self.store,
            id,
            outcome,
            Some(targets.len()),
            None,
            self.engine.now(),
        )
        .await?;
        count_firing(&rule.name, &row.outcome);
        tracing::info!(
            rule = %rule.name,
            slot = %rfc3339(slot),
            outcome = %row.outcome,
            targets = row.targets,
            changed = row.changed,
            rejected = row.rejected,
            failed = row.failed,
            skipped_condition = row.skipped_condition,
            skipped_on_contact = row.skipped_on_contact,
            unchanged,
            took = %humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())),
            "rule fired"
        );
        Ok(Some(row))
    }

    /// One agent's change, as the agent result to store; `resuming_since` when the
    /// firing is resumed after an interruption that began then.
    async fn change(
        &self,
        rule: &Rule,
        agent: String,
        key: String,
        resuming_since: Option<DateTime<Utc>>,
    ) -> AgentResult {
        let request = TransitionRequest {
            agent_id: agent.clone(),
            target: rule.action.target(),
            reason: rule.action.reason().map(str::to_owned),
            origin: Origin::Rule,
            actor: format!("rule:{}", rule.name),
            idempotency_key: Some(key),
        };
        let failed = |reason: &str, detail: String| AgentResult {
            agent_id: agent.clone(),
            outcome: "failed",
            reason: Some(reason.to_owned()),
            detail: Some(detail),
            attempt_id: None,
        };
        let defer = match rule.when_busy {
            RuleWhenBusy::Reject => None,
            RuleWhenBusy::Defer { defer_for } => Some(Defer {
                defer_for: defer_for.unwrap_or(self.defer_for),
                bulk: None,
            }),
        };
        let change = Change::from(request).deferring(defer);
        // A resumed firing is checked against the platform, not the witness.
        let change = match resuming_since {
            Some(since) => change.resuming(since),
            None => change.witnessed_by(self.witness.clone()),
        };
        match self.engine.change(change).await {
            // Recorded `skipped`/`deferred`: the change waits and is carried out (or
            // expires) on its own, audited and announced as a deferred change.
            Ok(Changed::Deferred(deferral)) => AgentResult {
                agent_id: agent,
                outcome: "skipped",
                reason: Some("deferred".to_owned()),
                detail: Some(format!(
                    "busy: waits as deferred change {} until {}",
                    deferral.deferred_id, deferral.expires_at
                )),
                attempt_id: None,
            },
            Ok(Changed::Unchanged(seen)) => AgentResult {
                agent_id: agent,
                outcome: "skipped",
                reason: Some("unchanged".to_owned()),
                detail: Some(format!(
                    "already {}/{} at state sync's poll of {}; nothing commanded since",
                    seen.state,
                    seen.reason,
                    rfc3339(seen.polled_at)
                )),
                attempt_id: None,
            },
            Ok(Changed::Made(t)) => {
                let (outcome, reason, detail) = match &t.outcome {
                    Outcome::Succeeded => ("changed", None, None),
                    Outcome::Rejected { violation } => (
                        "rejected",
                        Some(violation.as_str().to_owned()),
                        Some(violation.describe().to_owned()),
                    ),
                    Outcome::Failed { kind, error } => (
                        "failed",
                        serde_json::to_value(kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned)),
                        Some(error.clone()),
                    ),
                };
                AgentResult {
                    agent_id: agent,
                    outcome,
                    reason,
                    detail,
                    attempt_id: Some(t.attempt_id),
                }
            }
            Err(EngineError::Store(e) | EngineError::Unrecorded { error: e, .. }) => {
                failed("database", e.to_string())
            }
            Err(e) => failed("refused", e.to_string()),
        }
    }
}

/// The platform listing a selector stands for; `None` for an explicit list of agents,
/// which needs no call.
fn agent_filter(selector: &RuleSelector) -> Option<AgentFilter> {
    match selector {
        RuleSelector::Agents(_) => None,
        RuleSelector::Team(team) => Some(AgentFilter {
            team_id: Some(team.clone()),
            skill_id: None,
        }),
        RuleSelector::Skill(skill) => Some(AgentFilter {
            team_id: None,
            skill_id: Some(skill.clone()),
        }),
        RuleSelector::All => Some(AgentFilter::default()),
    }
}

fn count_firing(rule: &str, outcome: &str) {
    metrics::counter!(
        RULE_FIRINGS_TOTAL,
        "rule" => rule.to_owned(),
        "outcome" => outcome.to_owned()
    )
    .increment(1);
}

#[async_trait]
impl Firer for RuleFirer {
    async fn last_slot(&self, rule: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        Ok(firings::last_slot(self.store.reader(), rule).await?)
    }

    async fn unfinished(&self) -> anyhow::Result<Vec<Unfinished>> {
        let running = firings::running(self.store.reader()).await?;
        Ok(running
            .into_iter()
            .map(|row| Unfinished {
                id: row.id,
                slot: row.slot(),
                definition: serde_json::from_str(&row.definition).unwrap_or_default(),
                rule: row.rule,
            })
            .collect())
    }

    async fn fire(&self, firing: Firing, stop: CancellationToken) {
        let Firing { rule, slot, resume } = firing;
        if let Err(e) = self.fire_slot(&rule, slot, resume, &stop).await {
            tracing::error!(rule = %rule.name, slot = %rfc3339(slot), error = %e, "rule firing stopped by an error; it resumes at the next start");
        }
    }

    async fn skip(&self, rule: &Rule, slot: DateTime<Utc>, late: Duration) -> anyhow::Result<()> {
        let late = humantime::format_duration(Duration::from_secs(late.as_secs()));
        let note = format!(
            "missed: reached {late} late, past catch_up ({})",
            humantime::format_duration(rule.catch_up)
        );
        let recorded = firings::record_skip(
            &self.store,
            &rule.name,
            slot,
            &rule.definition(),
            self.engine.now(),
            &note,
        )
        .await?;
        if recorded {
            count_firing(&rule.name, "skipped");
            tracing::warn!(rule = %rule.name, slot = %rfc3339(slot), %late, catch_up = %humantime::format_duration(rule.catch_up), "rule slot skipped: it passed while wfmd was not running");
        }
        Ok(())
    }

    async fn abandon(&self, firing: &Unfinished, why: &str) -> anyhow::Result<()> {
        firings::finish(
            &self.store,
            firing.id,
            "abandoned",
            None,
            Some(why),
            self.engine.now(),
        )
        .await?;
        count_firing(&firing.rule, "abandoned");
        tracing::warn!(rule = %firing.rule, slot = %rfc3339(firing.slot), "{why}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_hundred_agents_at_one_request_each_under_100_a_minute_take_five_minutes() {
        assert_eq!(estimate(500, 1, 100), Duration::from_secs(300));
        assert_eq!(estimate(500, 2, 100), Duration::from_secs(600));
        assert_eq!(estimate(1, 1, 6_000), Duration::from_secs(1), "rounded up");
        assert_eq!(estimate(0, 2, 100), Duration::ZERO);
    }

    #[test]
    fn selectors_list_by_team_by_skill_everyone_or_not_at_all() {
        assert_eq!(
            agent_filter(&RuleSelector::Team("t_1".into())),
            Some(AgentFilter {
                team_id: Some("t_1".into()),
                skill_id: None
            })
        );
        assert_eq!(
            agent_filter(&RuleSelector::Skill("s_100".into())),
            Some(AgentFilter {
                team_id: None,
                skill_id: Some("s_100".into())
            })
        );
        assert_eq!(
            agent_filter(&RuleSelector::All),
            Some(AgentFilter::default())
        );
        assert_eq!(
            agent_filter(&RuleSelector::Agents(vec!["u_001".into()])),
            None
        );
    }

    #[test]
    fn the_idempotency_key_names_rule_slot_and_agent() {
        let slot = DateTime::parse_from_rfc3339("2026-03-09T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            idempotency_key("care-lunch", slot, "u_001"),
            "rule:care-lunch:2026-03-09T16:00:00.000Z:u_001"
        );
    }
}
