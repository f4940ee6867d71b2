//! The v2 routes (docs/platform-api.md): users, agent state, schedules, break status (the
//! real-time subscription lives in `subscriptions`).
//!
//! Every JSON body here is written out field by field from the contract (not from wfmd's
//! serde types), and every time field is computed from the simulator clock at request
//! time, after the agents' own activity has been brought up to it. Errors are JSON
//! `{"error","message"}` bodies.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Simulator;
use super::subscriptions::subscription_router;
use super::tenant::{OBSERVED_STATES, SimAgent, default_reason, is_known_state};
use super::wire::{ApiError, ts};

/// The API routes, relative to the tenant's base (the cluster path, or the root).
pub(crate) fn api_router() -> Router<Simulator> {
    Router::new()
        .route("/api/v2/users", get(list_users))
        .route(
            "/api/v2/users/{userId}/state",
            get(get_state).post(set_state),
        )
        .route(
            "/api/v2/schedules/users/{userId}",
            schedules_scope(schedule),
        )
        .route(
            "/api/v2/breaks/users/{userId}/status",
            schedules_scope(break_status),
        )
        .merge(subscription_router())
        .merge(super::aggregation::aggregation_router())
        .merge(super::metrics::metrics_router())
        // Authenticated like the rest, so a client cannot probe paths without a token.
        .route("/api/{*rest}", any(unknown_api_path))
}

#[derive(Deserialize)]
struct UserFilter {
    #[serde(rename = "teamId")]
    team_id: Option<String>,
    #[serde(rename = "skillId")]
    skill_id: Option<String>,
}

async fn list_users(
    State(sim): State<Simulator>,
    filter: Result<Query<UserFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (st, _) = sim.sync();
    let users: Vec<Value> = st
        .tenant
        .agents
        .values()
        .filter(|a| filter.team_id.as_ref().is_none_or(|t| &a.team_id == t))
        .filter(|a| {
            filter
                .skill_id
                .as_ref()
                .is_none_or(|s| a.skills.contains(s))
        })
        .map(|a| {
            json!({
                "userId": a.id,
                "userName": a.name,
                "teamId": a.team_id,
                "teamName": a.team_name,
                "skills": a.skills,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "users": users })).into_response())
}

fn state_body(agent: &SimAgent) -> Value {
    json!({
        "userId": agent.id,
        "agentState": agent.state,
        "reasonCode": agent.reason,
        "statusChangedTimestamp": ts(agent.changed_at),
    })
}

async fn get_state(
    State(sim): State<Simulator>,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let (st, _) = sim.sync();
    let agent = known_agent(&st, &user_id)?;
    Ok(axum::Json(state_body(agent)).into_response())
}

#[derive(Deserialize)]
struct StateChange {
    state: String,
    #[serde(rename = "reasonCode")]
    reason_code: Option<String>,
}

async fn set_state(
    State(sim): State<Simulator>,
    Path(user_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let change: StateChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid state change body: {e}")))?;
    if OBSERVED_STATES.contains(&change.state.as_str()) {
        return Err(ApiError::bad_request(format!(
            "state {} is observed only and cannot be set",
            change.state
        )));
    }
    if !is_known_state(&change.state) {
        return Err(ApiError::bad_request(format!(
            "unknown state {}",
            change.state
        )));
    }
    let reason = match change.reason_code.as_deref() {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => default_reason(&change.state).to_owned(),
    };

    let (mut st, now) = sim.sync();
    let agent = known_agent(&st, &user_id)?;
    if agent.state == "ON_CONTACT" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("agent {user_id} is ON_CONTACT; a state change would drop the customer"),
        ));
    }
    let agent = st
        .change_state(&user_id, &change.state, &reason, now)
        .ok_or_else(|| ApiError::unknown_user(&user_id))?;
    Ok(axum::Json(state_body(agent)).into_response())
}

/// `GET` of the schedules scope about the agent `{userId}`: what `body` makes of the
/// agent at the simulator's instant, once the scope is granted and the user is known.
fn schedules_scope(body: fn(&SimAgent, DateTime<Utc>) -> Value) -> MethodRouter<Simulator> {
    get(
        move |State(sim): State<Simulator>, Path(user_id): Path<String>| async move {
            let (st, now) = sim.sync();
            st.lines.denied(super::SCHEDULES_SCOPE)?;
            let agent = known_agent(&st, &user_id)?;
            Ok::<_, ApiError>(axum::Json(body(agent, now)))
        },
    )
}

/// `GET /api/v2/schedules/users/{userId}`: the agent's shift, with its breaks when the
/// schedule lists them.
fn schedule(agent: &SimAgent, now: DateTime<Utc>) -> Value {
    let mut body = json!({
        "userId": agent.id,
        "status": if agent.on_shift_at(now) { "ACTIVE" } else { "INACTIVE" },
        "timezone": agent.timezone,
        "shiftStart": ts(agent.shift_start),
        "shiftEnd": ts(agent.shift_end),
    });
    if agent.breaks_in_schedule {
        let breaks: Vec<Value> = agent
            .breaks
            .iter()
            .map(|b| {
                json!({
                    "start": ts(b.start),
                    "end": ts(b.end),
                    "type": b.kind,
                    "mandatory": b.mandatory,
                })
            })
            .collect();
        body["breaks"] = Value::Array(breaks);
    }
    body
}

/// `GET /api/v2/breaks/users/{userId}/status`: whether a mandatory break is due now, and
/// the current or next one.
fn break_status(agent: &SimAgent, now: DateTime<Utc>) -> Value {
    let mut body = json!({
        "userId": agent.id,
        "mandatoryBreakRequired": agent.in_mandatory_break_at(now),
    });
    if let Some(b) = agent.current_or_next_mandatory_break(now) {
        body["breakStart"] = json!(ts(b.start));
        body["breakEnd"] = json!(ts(b.end));
    }
    body
}

async fn unknown_api_path() -> ApiError {
    ApiError::not_found("no such API endpoint")
}

/// The tenant's agent `user_id`, or the platform's answer for an unknown user.
fn known_agent<'a>(st: &'a super::SimState, user_id: &str) -> Result<&'a SimAgent, ApiError> {
    st.tenant
        .agents
        .get(user_id)
        .ok_or_else(|| ApiError::unknown_user(user_id))
}
