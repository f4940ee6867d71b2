//! Everything that speaks HTTP to the contact-center platform.
//!
//! The rest of wfmd sees only [`ContactCenter`] and [`CxoneError`]: the v2 client (`v2`,
//! its tokens in `v2::auth`, serde types of its wire format in `v2::wire`) implements it,
//! and so does the `incontact` client (the API NICE publishes, in `incontact`). Both sit
//! on one HTTP core (`core`: the call pipeline, the token cache, the 401 circuit breaker
//! and one classification of answers), with retries in `retry` and the request budget in
//! `budget`. Every call made through a client waits for the shared budget, retries what
//! is retryable, and refreshes a revoked token once; feed polls alone are left to their
//! caller to pace.

pub mod aggregation;
pub mod budget;
mod core;
#[cfg(test)]
pub(crate) mod fake;
pub mod incontact;
pub mod retry;
#[cfg(test)]
mod tests;
mod v2;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::domain::{AgentState, BreakStatus, Schedule};

pub use aggregation::{
    AggregationPage, AggregationQuery, AggregationRow, Aggregations, ExtractionSettings,
};
pub use budget::{Budget, Lane, SharedLane, in_lane, in_shared_lane};
pub use core::http::install_crypto_provider;
pub use incontact::{IncontactClient, IncontactSettings};
pub use retry::RetryPolicy;
pub use v2::V2Client;

/// An agent (a platform user) as listed by the platform.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub team_id: Option<String>,
    pub team_name: Option<String>,
    pub skills: Vec<String>,
}

/// An agent's state as the platform reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSnapshot {
    pub agent_id: String,
    pub state: AgentState,
    pub reason: Option<String>,
    /// When the platform says the state last changed.
    pub changed_at: Option<DateTime<Utc>>,
}

/// Which agents to list; both `None` lists every agent of the tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    pub team_id: Option<String>,
    pub skill_id: Option<String>,
}

/// A request for a real-time subscription of agent states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest {
    pub name: String,
    /// How often the platform refreshes the view; at least 10 s.
    pub interval: Duration,
    /// The agents to watch; `None` watches every agent of the tenant.
    pub agent_ids: Option<Vec<String>>,
}

/// A live subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub interval: Duration,
    pub expires_at: Option<DateTime<Utc>>,
}

/// An open change feed of agent states, held by the state sync between polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeFeed {
    /// The subscription id, or a name for a delta cursor (logs, tests).
    pub id: String,
    /// When the platform expires the feed, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// Where a delta feed resumes (the last answer's `lastPollTime`); `None` makes the
    /// next poll a full snapshot. Unused by a subscription.
    pub cursor: Option<String>,
    /// The agents to report, for a feed whose platform answers for every agent
    /// (sorted); `None` reports all.
    pub agent_ids: Option<Vec<String>>,
}

impl ChangeFeed {
    /// The feed of a real-time subscription.
    pub fn subscription(subscription: Subscription) -> ChangeFeed {
        ChangeFeed {
            id: subscription.id,
            expires_at: subscription.expires_at,
            cursor: None,
            agent_ids: None,
        }
    }

    /// A delta cursor over `agent_ids` (`None`: every agent), starting from a full
    /// snapshot.
    pub fn delta(id: impl Into<String>, agent_ids: Option<Vec<String>>) -> ChangeFeed {
        ChangeFeed {
            id: id.into(),
            expires_at: None,
            cursor: None,
            agent_ids: agent_ids.map(|mut ids| {
                ids.sort();
                ids.dedup();
                ids
            }),
        }
    }

    /// Whether the feed reports `agent_id`.
    pub fn watches(&self, agent_id: &str) -> bool {
        self.agent_ids
            .as_ref()
            .is_none_or(|ids| ids.binary_search_by(|id| id.as_str().cmp(agent_id)).is_ok())
    }
}

/// What one poll of a change feed answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPoll {
    pub agents: Vec<ObservedAgent>,
    /// True when `agents` is every watched agent (a subscription poll, a delta feed's
    /// first poll or a restart from the epoch), false for a delta.
    pub snapshot: bool,
}

/// One agent as a subscription poll reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedAgent {
    pub agent_id: String,
    pub state: AgentState,
    /// The queue of the contact the agent is on, if any.
    pub queue: Option<String>,
    /// The wrap-up code while in after-contact work.
    pub wrap_up_code: Option<String>,
    pub changed_at: Option<DateTime<Utc>>,
}

/// A skill as the platform lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    pub id: String,
    pub name: String,
}

/// A queue as the platform lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub id: String,
    pub name: String,
}

/// What went wrong talking to the platform, typed so callers can decide what to do.
///
/// Messages never contain a secret or a token; they name the client id at most.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CxoneError {
    #[error("the platform rate-limited the request (429){}", retry_after_text(*.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error("the platform failed with {status}{}", message_text(message))]
    Server {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("the platform did not answer within the request timeout")]
    Timeout,
    #[error("cannot reach the platform: {0}")]
    Connect(String),
    #[error(
        "the platform refused the request as malformed (400){}",
        message_text(message)
    )]
    BadRequest { message: String },
    #[error("the platform rejected the access token (401) even after a refresh")]
    Unauthorized,
    #[error("the platform denied access (403){}{}", scope.as_deref().map(|s| format!(": missing scope `{s}`")).unwrap_or_default(), message_text(message))]
    Forbidden {
        message: String,
        scope: Option<String>,
    },
    #[error("not found on the platform (404){}", message_text(message))]
    NotFound { message: String },
    #[error("the platform refused the change (409){}", message_text(message))]
    Conflict { message: String },
    #[error("the platform rejected the client credentials of client id `{client_id}` ({status})")]
    BadCredentials { client_id: String, status: u16 },
    #[error("platform calls are paused for {}s after repeated 401 answers", remaining.as_secs().max(1))]
    CircuitOpen { remaining: Duration },
    #[error("unexpected answer from the platform: {0}")]
    Decode(String),
    /// A 3xx: wfmd follows no redirect (see [`crate::http_client`]), so the configured
    /// URL is wrong or something between wfmd and the platform is not to be trusted.
    #[error(
        "the platform answered {status} (a redirect to {location}); wfmd does not follow \
         redirects: check the configured platform URLs"
    )]
    Redirected {
        status: u16,
        /// Where it pointed, without user part or query ([`crate::redact::location`]).
        location: String,
    },
    /// The dialect has no such operation (e.g. aggregation queries on `incontact`).
    #[error("{feature} is not offered by this platform ({dialect} dialect)")]
    NotOffered {
        feature: &'static str,
        dialect: &'static str,
    },
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; retry after {}s", d.as_secs_f64()))
        .unwrap_or_default()
}

fn message_text(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl CxoneError {
    /// The error of a 3xx answer, or `None` for any other status (and for 304 Not
    /// Modified, which answers a conditional request and points nowhere).
    pub(crate) fn redirected(
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
    ) -> Option<CxoneError> {
        if !status.is_redirection() || status == reqwest::StatusCode::NOT_MODIFIED {
            return None;
        }
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok());
        Some(CxoneError::Redirected {
            status: status.as_u16(),
            location: crate::redact::location(location),
        })
    }

    /// Whether trying again later may succeed: rate limits, platform faults, timeouts
    /// and connection failures. Everything else fails at once.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CxoneError::RateLimited { .. }
                | CxoneError::Server { .. }
                | CxoneError::Timeout
                | CxoneError::Connect(_)
        )
    }

    /// Whether the platform refused because the agent has no session (logged out):
    /// the `incontact` dialect's 404 "Agent session not started". Recorded as the
    /// rejection `AGENT_LOGGED_OUT`, not as a failure.
    pub fn is_agent_logged_out(&self) -> bool {
        matches!(self, CxoneError::NotFound { message }
            if message.to_ascii_lowercase().contains("session not started"))
    }

    /// The platform's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CxoneError::RateLimited { retry_after } | CxoneError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// A state change to make on the platform: whom, to what, and with which reason code
/// (empty: the state's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange<'a> {
    pub agent_id: &'a str,
    pub state: AgentState,
    pub reason: &'a str,
}

impl<'a> StateChange<'a> {
    pub fn new(agent_id: &'a str, state: AgentState, reason: &'a str) -> StateChange<'a> {
        StateChange {
            agent_id,
            state,
            reason,
        }
    }

    /// The reason to send: `reason`, else the state's default; a state that can only be
    /// observed is refused before any call (the platform would answer 400; saying so
    /// here spares a budget permit).
    pub(crate) fn reason_to_send(&self) -> Result<&'a str, CxoneError> {
        if !self.state.is_settable() {
            return Err(CxoneError::BadRequest {
                message: format!("{} is observed only and cannot be set", self.state),
            });
        }
        Ok(if self.reason.is_empty() {
            self.state.default_reason()
        } else {
            self.reason
        })
    }
}

/// The platform operations wfmd needs, whatever the dialect.
#[async_trait]
pub trait ContactCenter: Send + Sync + 'static {
    /// Agents of the tenant, optionally filtered by team and skill.
    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, CxoneError>;

    /// The agent's current state.
    async fn agent_state(&self, agent_id: &str) -> Result<AgentSnapshot, CxoneError>;

    /// Sets the agent's state; returns the state the platform now reports.
    async fn set_agent_state(&self, change: StateChange<'_>) -> Result<AgentSnapshot, CxoneError>;

    /// The agent's schedule (status, shift, and break windows when the platform has them).
    async fn schedule(&self, agent_id: &str) -> Result<Schedule, CxoneError>;

    /// The schedules of many agents in one request, where the platform offers a bulk
    /// schedule export; the schedule book uses it when offered and falls back on one
    /// [`ContactCenter::schedule`] call per agent on `NotOffered`. Agents the export
    /// does not know are left out of the answer.
    async fn schedules(
        &self,
        _agent_ids: &[String],
    ) -> Result<Vec<(String, Schedule)>, CxoneError> {
        Err(self.not_offered("bulk schedule export"))
    }

    /// Whether the agent owes a mandatory break now.
    async fn break_status(&self, agent_id: &str) -> Result<BreakStatus, CxoneError>;

    /// Proves the platform is reachable with our credentials (`wfmd doctor`): may call
    /// it for a token.
    async fn check_access(&self) -> Result<(), CxoneError>;

    /// Whether calls are held back now (the 401 circuit is open), without a call: how
    /// `/readyz` sees the platform between state sync's polls.
    fn paused(&self) -> Result<(), CxoneError> {
        Ok(())
    }

    // ---- The change feed of agent states: how the state sync hears of changes. ----
    //
    // A dialect decides how: v2 through a real-time subscription (the defaults below,
    // in terms of the subscription calls), `incontact` through a delta cursor
    // (`lastPollTime` -> `updatedSince`). The sync only opens, polls and closes a feed.

    /// Opens a change feed of the requested agents' states. For a subscription this
    /// creates it on the platform; for a delta cursor it costs nothing, and the first
    /// poll is a full snapshot.
    async fn open_feed(&self, request: &SubscriptionRequest) -> Result<ChangeFeed, CxoneError> {
        let subscription = self.create_subscription(request).await?;
        Ok(ChangeFeed::subscription(subscription))
    }

    /// One poll of the feed: the agents whose state the platform reports now (every
    /// agent of the view for a subscription or a full snapshot; the changed ones for a
    /// delta). A feed the platform no longer knows (an expired subscription) is
    /// `NotFound`: the caller opens a new one. A delta feed starts again from a full
    /// snapshot after any error, by itself.
    ///
    /// One attempt, outside the request budget, like [`ContactCenter::poll_subscription`]:
    /// the caller paces polls and decides about retries.
    async fn poll_feed(&self, feed: &mut ChangeFeed) -> Result<FeedPoll, CxoneError> {
        let agents = self.poll_subscription(&feed.id).await?;
        Ok(FeedPoll {
            agents,
            snapshot: true,
        })
    }

    /// Releases what the feed holds on the platform (deletes a subscription).
    async fn close_feed(&self, feed: &ChangeFeed) -> Result<(), CxoneError> {
        self.delete_subscription(&feed.id).await
    }

    /// Creates a real-time subscription of agent states (v2 dialect).
    async fn create_subscription(
        &self,
        _request: &SubscriptionRequest,
    ) -> Result<Subscription, CxoneError> {
        Err(self.not_offered("real-time subscriptions"))
    }

    /// The current state of every agent in the subscription's view. An expired or
    /// deleted subscription is `NotFound`.
    ///
    /// One attempt, outside the request budget: the platform refuses (429) a poll that
    /// comes sooner than the subscription's interval after the last one it accepted, so
    /// the caller paces polls and decides about retries.
    async fn poll_subscription(
        &self,
        _subscription_id: &str,
    ) -> Result<Vec<ObservedAgent>, CxoneError> {
        Err(self.not_offered("real-time subscriptions"))
    }

    /// Deletes a subscription that is no longer needed.
    async fn delete_subscription(&self, _subscription_id: &str) -> Result<(), CxoneError> {
        Err(self.not_offered("real-time subscriptions"))
    }

    // ---- End of the change feed. ----

    /// Every skill of the tenant.
    async fn list_skills(&self) -> Result<Vec<Skill>, CxoneError> {
        Err(self.not_offered("listing skills"))
    }

    /// Every queue of the tenant.
    async fn list_queues(&self) -> Result<Vec<Queue>, CxoneError> {
        Err(self.not_offered("listing queues"))
    }

    /// Real-time figures of the given skills. A skill the platform leaves out (no
    /// activity) is absent from the answer; the caller shows it as zeros.
    async fn skill_activity(
        &self,
        skill_ids: &[String],
    ) -> Result<Vec<crate::domain::metrics::SkillTile>, CxoneError> {
        let _ = skill_ids;
        Err(self.not_offered("skill activity"))
    }

    /// Real-time figures of the given queues; at most [`MAX_QUEUES_PER_CALL`] ids (the
    /// caller splits longer lists).
    async fn queue_stats(
        &self,
        queue_ids: &[String],
    ) -> Result<Vec<crate::domain::metrics::QueueTile>, CxoneError> {
        let _ = queue_ids;
        Err(self.not_offered("queue statistics"))
    }

    // ---- Aggregation queries (v2 `analytics/query`; see `aggregation`). ----

    /// `Ok` when the platform offers aggregation queries; [`CxoneError::NotOffered`]
    /// otherwise, so a job can be refused before it is stored.
    fn aggregation_offered(&self) -> Result<(), CxoneError> {
        Err(self.not_offered(aggregation::FEATURE))
    }

    /// Submits an aggregation query (checked by the caller); returns the platform's
    /// query id.
    async fn submit_aggregation(&self, query: &AggregationQuery) -> Result<String, CxoneError> {
        let _ = query;
        Err(self.not_offered(aggregation::FEATURE))
    }

    /// The query's status and, once COMPLETED, `limit` result rows from `offset`. A
    /// query the platform does not know (or no longer) is `NotFound`.
    async fn aggregation_page(
        &self,
        query_id: &str,
        limit: u32,
        offset: u64,
    ) -> Result<AggregationPage, CxoneError> {
        let _ = (query_id, limit, offset);
        Err(self.not_offered(aggregation::FEATURE))
    }

    /// The dialect's name, for errors and `wfmd doctor`.
    fn dialect(&self) -> &'static str {
        "v2"
    }

    /// The error for an operation this dialect lacks.
    fn not_offered(&self, feature: &'static str) -> CxoneError {
        CxoneError::NotOffered {
            feature,
            dialect: self.dialect(),
        }
    }
}

/// The most queue ids the platform takes in one queue-stats call.
pub const MAX_QUEUES_PER_CALL: usize = 100;

/// What a client needs to reach one tenant.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Base URL of the API; replaced by the token answer's `resource_server_base_uri`.
    pub base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Timeout of one HTTP request, token calls included.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}
