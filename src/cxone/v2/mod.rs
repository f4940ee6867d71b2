//! [`V2Client`]: the [`ContactCenter`] of the v2 dialect (docs/platform-api.md).
//!
//! Paths, wire types (`wire`) and mappings only: every call goes through the shared
//! [`HttpCore`] (retries, budget, tokens, the 401 refresh and circuit, classification).
//! Subscription polls are paced by their caller: one attempt, no budget permit.

mod auth;
pub(super) mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;

use self::auth::ClientCredentials;
use super::aggregation::{self, AggregationPage, AggregationQuery};
use super::core::http::{Answer, Call, HttpCore, path_segment};
use super::core::token::TokenCache;
use super::{
    Agent, AgentFilter, AgentSnapshot, Budget, ClientSettings, ContactCenter, CxoneError,
    MAX_QUEUES_PER_CALL, ObservedAgent, Queue, Skill, StateChange, Subscription,
    SubscriptionRequest,
};
use crate::domain::metrics::{QueueTile, SkillTile};
use crate::domain::{BreakStatus, Schedule};

/// The v2 platform client of one tenant.
pub struct V2Client {
    core: HttpCore,
}

impl V2Client {
    /// `http` is the process's one `reqwest::Client`; `budget` is shared by every client
    /// of the tenant.
    pub fn new(http: reqwest::Client, settings: ClientSettings, budget: Arc<Budget>) -> V2Client {
        let ClientSettings {
            base_url,
            token_url,
            client_id,
            client_secret,
            request_timeout,
            retry,
        } = settings;
        let tokens = TokenCache::new(ClientCredentials {
            http: http.clone(),
            token_url,
            client_id,
            client_secret,
            timeout: request_timeout,
        });
        let core = HttpCore::new(
            http,
            base_url,
            request_timeout,
            retry,
            budget,
            tokens,
            wire::error_details,
        );
        V2Client { core }
    }

    /// Changes how long calls pause after three 401s in a row (30 s by default); for
    /// tests that need to see the pause end.
    pub fn with_circuit_pause(self, pause: Duration) -> V2Client {
        V2Client {
            core: self.core.with_circuit_pause(pause),
        }
    }

    async fn execute(&self, call: &Call<'_>) -> Result<Vec<u8>, CxoneError> {
        self.core.execute(call).await.map(|answer| answer.body)
    }

    /// [`V2Client::execute`], keeping the answer's `Date` and `Retry-After` as well.
    async fn execute_dated(&self, call: &Call<'_>) -> Result<Answer, CxoneError> {
        self.core.execute(call).await
    }
}

impl fmt::Debug for V2Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V2Client")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ContactCenter for V2Client {
    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, CxoneError> {
        let mut call = Call::get("/api/v2/users", "api/v2/users".to_owned());
        if let Some(team) = &filter.team_id {
            call.query.push(("teamId", team.clone()));
        }
        if let Some(skill) = &filter.skill_id {
            call.query.push(("skillId", skill.clone()));
        }
        let body = self.execute(&call).await?;
        let answer: wire::UsersAnswer = wire::parse("users", &body)?;
        Ok(answer.users.into_iter().map(Agent::from).collect())
    }

    async fn agent_state(&self, agent_id: &str) -> Result<AgentSnapshot, CxoneError> {
        let path = format!("api/v2/users/{}/state", path_segment(agent_id)?);
        let call = Call::get("/api/v2/users/{userId}/state", path).for_agent(agent_id);
        let body = self.execute(&call).await?;
        let answer: wire::StateAnswer = wire::parse("agent state", &body)?;
        answer.into_snapshot(agent_id)
    }

    async fn set_agent_state(&self, change: StateChange<'_>) -> Result<AgentSnapshot, CxoneError> {
        let body = serde_json::to_vec(&wire::SetStateBody {
            state: change.state.as_str(),
            reason_code: change.reason_to_send()?,
        })
        .map_err(|e| CxoneError::Decode(format!("cannot encode the state change: {e}")))?;
        let path = format!("api/v2/users/{}/state", path_segment(change.agent_id)?);
        let mut call = Call::get("/api/v2/users/{userId}/state", path).for_agent(change.agent_id);
        call.method = Method::POST;
        call.body = Some(body);
        let body = self.execute(&call).await?;
        let answer: wire::StateAnswer = wire::parse("agent state", &body)?;
        answer.into_snapshot(change.agent_id)
    }

    async fn schedule(&self, agent_id: &str) -> Result<Schedule, CxoneError> {
        let path = format!("api/v2/schedules/users/{}", path_segment(agent_id)?);
        let call = Call::get("/api/v2/schedules/users/{userId}", path).for_agent(agent_id);
        let body = self.execute(&call).await?;
        let answer: wire::ScheduleAnswer = wire::parse("schedule", &body)?;
        Schedule::try_from(answer)
    }

    async fn break_status(&self, agent_id: &str) -> Result<BreakStatus, CxoneError> {
        let path = format!("api/v2/breaks/users/{}/status", path_segment(agent_id)?);
        let call = Call::get("/api/v2/breaks/users/{userId}/status", path).for_agent(agent_id);
        let body = self.execute(&call).await?;
        let answer: wire::BreakStatusAnswer = wire::parse("break status", &body)?;
        Ok(BreakStatus::from(answer))
    }

    async fn create_subscription(
        &self,
        request: &SubscriptionRequest,
    ) -> Result<Subscription, CxoneError> {
        self.create_subscription_call(request).await
    }

    async fn poll_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<Vec<ObservedAgent>, CxoneError> {
        let mut call = self.subscription_call(Method::GET, subscription_id)?;
        call.paced_by_caller = true;
        let body = self.execute(&call).await?;
        let answer: wire::SnapshotAnswer = wire::parse("subscription poll", &body)?;
        Ok(answer
            .data
            .into_iter()
            .filter_map(wire::ObservedJson::into_observed)
            .collect())
    }

    async fn delete_subscription(&self, subscription_id: &str) -> Result<(), CxoneError> {
        let call = self.subscription_call(Method::DELETE, subscription_id)?;
        self.execute(&call).await.map(drop)
    }

    async fn list_skills(&self) -> Result<Vec<Skill>, CxoneError> {
        let call = Call::get("/api/v2/skills", "api/v2/skills".to_owned());
        let body = self.execute(&call).await?;
        let answer: wire::SkillsAnswer = wire::parse("skills", &body)?;
        Ok(answer.skills.into_iter().map(Skill::from).collect())
    }

    async fn list_queues(&self) -> Result<Vec<Queue>, CxoneError> {
        let call = Call::get("/api/v2/queues", "api/v2/queues".to_owned());
        let body = self.execute(&call).await?;
        let answer: wire::QueuesAnswer = wire::parse("queues", &body)?;
        Ok(answer.queues.into_iter().map(Queue::from).collect())
    }

    async fn skill_activity(&self, skill_ids: &[String]) -> Result<Vec<SkillTile>, CxoneError> {
        if skill_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = skill_ids.join(",");
        let mut call = Call::get(SKILL_DATA, SKILL_DATA[1..].to_owned());
        call.query.push(("skillId", ids));
        let answer = self.execute_dated(&call).await?;
        let at = answer.time();
        let parsed: wire::SkillDataAnswer = wire::parse("skill data", &answer.body)?;
        Ok(parsed
            .skill_data
            .into_iter()
            .map(|skill| skill.into_tile(at))
            .collect())
    }

    async fn queue_stats(&self, queue_ids: &[String]) -> Result<Vec<QueueTile>, CxoneError> {
        if queue_ids.is_empty() {
            return Ok(Vec::new());
        }
        if queue_ids.len() > MAX_QUEUES_PER_CALL {
            // The platform would answer 400; saying so here spares a budget permit.
            return Err(CxoneError::BadRequest {
                message: format!(
                    "at most {MAX_QUEUES_PER_CALL} queue ids a call, got {}",
                    queue_ids.len()
                ),
            });
        }
        let body = serde_json::to_vec(&wire::QueueStatsBody { queue_ids })
            .map_err(|e| CxoneError::Decode(format!("cannot encode the queue ids: {e}")))?;
        let mut call = Call::get(QUEUE_STATS, QUEUE_STATS[1..].to_owned());
        call.method = Method::POST;
        call.body = Some(body);
        let answer = self.execute_dated(&call).await?;
        let at = answer.time();
        let parsed: wire::QueueStatsAnswer = wire::parse("queue stats", &answer.body)?;
        Ok(parsed
            .queues
            .into_iter()
            .map(|queue| queue.into_tile(at))
            .collect())
    }

    fn aggregation_offered(&self) -> Result<(), CxoneError> {
        Ok(())
    }

    async fn submit_aggregation(&self, query: &AggregationQuery) -> Result<String, CxoneError> {
        // The caller checked it; checking again costs nothing and spares a 400.
        query.validate().map_err(|e| CxoneError::BadRequest {
            message: e.to_string(),
        })?;
        let body = serde_json::to_vec(&query.body())
            .map_err(|e| CxoneError::Decode(format!("cannot encode the query: {e}")))?;
        let mut call = Call::get(AGGREGATION_QUERY, AGGREGATION_QUERY[1..].to_owned());
        call.method = Method::POST;
        call.body = Some(body);
        let body = self.execute(&call).await?;
        let answer: aggregation::SubmitAnswer = wire::parse("aggregation query", &body)?;
        Ok(answer.id)
    }

    async fn aggregation_page(
        &self,
        query_id: &str,
        limit: u32,
        offset: u64,
    ) -> Result<AggregationPage, CxoneError> {
        let path = format!("api/v2/analytics/query/{}", path_segment(query_id)?);
        let mut call = Call::get("/api/v2/analytics/query/{id}", path);
        call.query.push(("limit", limit.to_string()));
        call.query.push(("offset", offset.to_string()));
        let answer = self.execute_dated(&call).await?;
        let parsed: aggregation::QueryAnswer = wire::parse("aggregation query", &answer.body)?;
        parsed.into_page(answer.retry_after)
    }

    fn paused(&self) -> Result<(), CxoneError> {
        self.core.paused()
    }

    #[tracing::instrument(name = "cxone.check_access", skip_all)]
    async fn check_access(&self) -> Result<(), CxoneError> {
        self.core.check_access().await
    }
}

const SUBSCRIPTIONS: &str = "/api/v2/analytics/realtime/subscription";
const AGGREGATION_QUERY: &str = "/api/v2/analytics/query";
const SKILL_DATA: &str = "/inContactAPI/services/v18.0/real-time-data/skill-data";
const QUEUE_STATS: &str = "/api/v2/reporting/queues/realtime";
const SUBSCRIPTION: &str = "/api/v2/analytics/realtime/subscription/{subscriptionId}";

impl V2Client {
    fn subscription_call<'a>(
        &self,
        method: Method,
        subscription_id: &str,
    ) -> Result<Call<'a>, CxoneError> {
        let path = format!(
            "api/v2/analytics/realtime/subscription/{}",
            path_segment(subscription_id)?
        );
        let mut call = Call::get(SUBSCRIPTION, path);
        call.method = method;
        Ok(call)
    }

    pub(crate) async fn create_subscription_call(
        &self,
        request: &SubscriptionRequest,
    ) -> Result<Subscription, CxoneError> {
        let interval_ms = u64::try_from(request.interval.as_millis()).unwrap_or(u64::MAX);
        let body = serde_json::to_vec(&wire::SubscriptionBody {
            name: &request.name,
            interval: interval_ms,
            view: wire::ViewBody {
                id: "users",
                metrics: &wire::SUBSCRIPTION_METRICS,
                filter: request
                    .agent_ids
                    .as_deref()
                    .map(|ids| wire::FilterBody { user_id: ids }),
            },
        })
        .map_err(|e| CxoneError::Decode(format!("cannot encode the subscription: {e}")))?;
        let mut call = Call::get(SUBSCRIPTIONS, SUBSCRIPTIONS[1..].to_owned());
        call.method = Method::POST;
        call.body = Some(body);
        let body = self.execute(&call).await?;
        let answer: wire::SubscriptionAnswer = wire::parse("subscription", &body)?;
        Ok(Subscription {
            id: answer.subscription_id,
            interval: answer
                .interval
                .map_or(request.interval, Duration::from_millis),
            expires_at: answer.expires_at,
        })
    }
}

#[cfg(test)]
mod tests;
