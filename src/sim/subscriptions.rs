//! Real-time subscriptions to agent states (docs/platform-api.md, change feed): create,
//! poll, delete, with the platform's rules on interval, poll spacing and 24 h expiry.
//!
//! Every time rule reads the simulated clock, so tests move the clock instead of waiting a
//! day. Deleted and expired subscriptions are kept (answering 404) so that the Rust handle
//! can still show what a client did with them.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Simulator;
use super::tenant::{OBSERVED_STATES, SimAgent};
use super::wire::{ApiError, ts};

/// The shortest interval the platform accepts, in milliseconds.
pub const MIN_INTERVAL_MS: u64 = 10_000;
/// How long a subscription lives after creation.
pub const LIFETIME: TimeDelta = TimeDelta::hours(24);

/// The metrics a `users` view may ask for.
const METRICS: [&str; 7] = [
    "userId",
    "userName",
    "agentState",
    "queueName",
    "wrapUpCode",
    "statusChangedTimestamp",
    "teamName",
];

/// One subscription, as the simulated platform holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimSubscription {
    /// `sub_…`.
    pub id: String,
    pub name: String,
    /// The poll spacing the client asked for (and is held to).
    pub interval: Duration,
    /// The requested metrics, in request order, without duplicates.
    pub metrics: Vec<String>,
    /// The agents in the view, sorted, unknown ids dropped; `None` means every agent.
    pub user_filter: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The simulated instant of the last successful poll.
    pub last_polled_at: Option<DateTime<Utc>>,
    /// Successful polls (answered 200).
    pub polls: u64,
    pub deleted: bool,
}

impl SimSubscription {
    fn is_live(&self, now: DateTime<Utc>) -> bool {
        !self.deleted && now < self.expires_at
    }
}

/// Every subscription ever created, in creation order.
#[derive(Default)]
pub(crate) struct Subscriptions {
    all: Vec<SimSubscription>,
    index: HashMap<String, usize>,
}

impl Subscriptions {
    pub fn list(&self) -> Vec<SimSubscription> {
        self.all.clone()
    }

    /// Makes every live subscription expire at `now`.
    pub fn expire_all(&mut self, now: DateTime<Utc>) {
        for sub in self.all.iter_mut().filter(|s| s.is_live(now)) {
            sub.expires_at = now;
        }
    }

    fn insert(&mut self, sub: SimSubscription) {
        self.index.insert(sub.id.clone(), self.all.len());
        self.all.push(sub);
    }

    fn live_mut(&mut self, id: &str, now: DateTime<Utc>) -> Option<&mut SimSubscription> {
        let &i = self.index.get(id)?;
        Some(&mut self.all[i]).filter(|s| s.is_live(now))
    }
}

pub(crate) fn subscription_router() -> Router<Simulator> {
    Router::new()
        .route("/api/v2/analytics/realtime/subscription", post(create))
        .route(
            "/api/v2/analytics/realtime/subscription/{subscriptionId}",
            get(poll).delete(delete),
        )
}

#[derive(Deserialize)]
struct CreateBody {
    name: Option<String>,
    interval: Option<Value>,
    view: Option<ViewBody>,
}

#[derive(Deserialize)]
struct ViewBody {
    id: Option<String>,
    metrics: Option<Vec<String>>,
    filter: Option<FilterBody>,
}

#[derive(Deserialize)]
struct FilterBody {
    #[serde(rename = "userId")]
    user_id: Option<Vec<String>>,
}

/// A validated creation request.
struct Spec {
    name: String,
    interval_ms: u64,
    metrics: Vec<String>,
    user_filter: Option<Vec<String>>,
}

fn parse_spec(body: &[u8]) -> Result<Spec, ApiError> {
    let body: CreateBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid subscription body: {e}")))?;
    let interval_ms = match &body.interval {
        None => return Err(ApiError::bad_request("interval is required (milliseconds)")),
        Some(v) => v.as_u64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "interval must be a whole number of milliseconds, got {v}"
            ))
        })?,
    };
    if interval_ms < MIN_INTERVAL_MS {
        return Err(ApiError::bad_request(format!(
            "interval must be at least {MIN_INTERVAL_MS} ms, got {interval_ms}"
        )));
    }
    let view = body
        .view
        .ok_or_else(|| ApiError::bad_request("view is required"))?;
    if view.id.as_deref() != Some("users") {
        return Err(ApiError::bad_request(r#"view.id must be "users""#));
    }
    let requested = view
        .metrics
        .ok_or_else(|| ApiError::bad_request("view.metrics is required"))?;
    let mut metrics: Vec<String> = Vec::with_capacity(requested.len());
    for metric in requested {
        if !METRICS.contains(&metric.as_str()) {
            return Err(ApiError::bad_request(format!(
                "view.metrics: unknown metric {metric}"
            )));
        }
        if !metrics.contains(&metric) {
            metrics.push(metric);
        }
    }
    let user_filter = view.filter.and_then(|f| f.user_id);
    Ok(Spec {
        name: body.name.unwrap_or_default(),
        interval_ms,
        metrics,
        user_filter,
    })
}

/// `POST /api/v2/analytics/realtime/subscription`.
async fn create(State(sim): State<Simulator>, body: Bytes) -> Result<Response, ApiError> {
    let spec = parse_spec(&body)?;
    let (mut st, now) = sim.sync();
    // Unknown ids are dropped rather than refused, as the platform does for users it
    // cannot see; the sorted set also fixes the answer's order.
    let user_filter = spec.user_filter.map(|ids| {
        ids.into_iter()
            .filter(|id| st.tenant.agents.contains_key(id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    });
    let sub = SimSubscription {
        id: format!("sub_{}", uuid::Uuid::new_v4()),
        name: spec.name,
        interval: Duration::from_millis(spec.interval_ms),
        metrics: spec.metrics,
        user_filter,
        created_at: now,
        expires_at: now + LIFETIME,
        last_polled_at: None,
        polls: 0,
        deleted: false,
    };
    let body = json!({
        "subscriptionId": sub.id,
        "status": "active",
        "interval": spec.interval_ms,
        "expiresAt": ts(sub.expires_at),
    });
    st.subscriptions.insert(sub);
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

fn unknown_subscription(id: &str) -> ApiError {
    ApiError::not_found(format!("unknown or expired subscription {id}"))
}

/// `GET /api/v2/analytics/realtime/subscription/{subscriptionId}`.
async fn poll(State(sim): State<Simulator>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (mut guard, now) = sim.sync();
    let st = &mut *guard;
    let sub = st
        .subscriptions
        .live_mut(&id, now)
        .ok_or_else(|| unknown_subscription(&id))?;
    if let Some(last) = sub.last_polled_at {
        let interval = TimeDelta::from_std(sub.interval).unwrap_or(TimeDelta::MAX);
        let wait = last + interval - now;
        if wait > TimeDelta::zero() {
            st.stats.polls_too_early += 1;
            let secs = sim.clock().wall_secs_ceil(wait);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "subscription {id} polled sooner than its interval of {} ms",
                    sub.interval.as_millis()
                ),
            )
            .retry_after(secs));
        }
    }
    sub.last_polled_at = Some(now);
    sub.polls += 1;

    let fields = Fields::of(&sub.metrics);
    let data: Vec<Value> = match &sub.user_filter {
        Some(ids) => ids
            .iter()
            .filter_map(|id| st.tenant.agents.get(id))
            .map(|a| fields.row(a))
            .collect(),
        None => st.tenant.agents.values().map(|a| fields.row(a)).collect(),
    };
    let body = json!({
        "subscriptionId": sub.id,
        "status": "active",
        "lastUpdatedTimestamp": ts(now),
        "data": data,
    });
    drop(guard);
    Ok(axum::Json(body).into_response())
}

/// `DELETE /api/v2/analytics/realtime/subscription/{subscriptionId}`.
async fn delete(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (mut st, now) = sim.sync();
    let sub = st
        .subscriptions
        .live_mut(&id, now)
        .ok_or_else(|| unknown_subscription(&id))?;
    sub.deleted = true;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Which optional fields a view shows; `userId` is always there.
struct Fields {
    user_name: bool,
    agent_state: bool,
    queue_name: bool,
    wrap_up_code: bool,
    status_changed: bool,
    team_name: bool,
}

impl Fields {
    fn of(metrics: &[String]) -> Self {
        let has = |m: &str| metrics.iter().any(|x| x == m);
        Fields {
            user_name: has("userName"),
            agent_state: has("agentState"),
            queue_name: has("queueName"),
            wrap_up_code: has("wrapUpCode"),
            status_changed: has("statusChangedTimestamp"),
            team_name: has("teamName"),
        }
    }

    fn row(&self, agent: &SimAgent) -> Value {
        let mut row = Map::new();
        row.insert("userId".into(), json!(agent.id));
        if self.user_name {
            row.insert("userName".into(), json!(agent.name));
        }
        if self.agent_state {
            row.insert("agentState".into(), json!(agent.state));
        }
        if self.queue_name {
            let on_contact = OBSERVED_STATES.contains(&agent.state.as_str());
            row.insert(
                "queueName".into(),
                json!(agent.queue.as_ref().filter(|_| on_contact)),
            );
        }
        if self.wrap_up_code {
            let in_acw = agent.state == "ACW";
            row.insert(
                "wrapUpCode".into(),
                json!(agent.wrap_up_code.as_ref().filter(|_| in_acw)),
            );
        }
        if self.status_changed {
            row.insert("statusChangedTimestamp".into(), json!(ts(agent.changed_at)));
        }
        if self.team_name {
            row.insert("teamName".into(), json!(agent.team_name));
        }
        Value::Object(row)
    }
}
