//! `POST /v1/agents/{id}/transitions`, `GET /v1/agents/{id}/history`, and the agent's
//! deferred change: `GET` and `DELETE /v1/agents/{id}/deferred`.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::{Caller, CallerKey};
use super::error::{Problem, problem_answers};
use super::extract::{PathParams, QueryParams, WindowQuery, window_from_query};
use super::json::JsonBody;
use super::roles::{SUPERVISOR, VIEWER};
use super::tenancy::TenantState;
use super::validate::{
    IdempotencyKeyHeader, asked_wait, check_agent_id, check_reason, idempotency_key,
};
use super::{Routes, to_the_end};
use crate::cxone::{Lane, in_lane};
use crate::domain::idle;
use crate::domain::{AgentState, Origin};
use crate::engine::deferred::{Deferral, WhenBusy};
use crate::engine::{
    Change, Changed, EngineError, FailureKind, Outcome, Transition, TransitionRequest,
};
use crate::store::history;
use crate::time::rfc3339;

pub fn routes() -> Routes {
    vec![
        utoipa_axum::routes!(create_transition),
        utoipa_axum::routes!(history),
        utoipa_axum::routes!(deferred_change, cancel_deferred_change),
    ]
}

/// A state change request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    /// The state to set; `ON_CONTACT` and `ACW` are observed only and refused.
    state: AgentState,
    /// Reason code: 1-64 letters, digits, `_` or `-`; the state's default when absent
    /// (READY: WORKING, NOT_READY: BREAK, PAUSED: ADHOC, IDLE: SYSTEM_IDLE, else GENERAL).
    #[serde(default)]
    reason: Option<String>,
    /// Performs the change at most once for this key (1-255 characters); the
    /// `Idempotency-Key` header works too. A key used before for another change is
    /// refused (422 `idempotency-key-reused`).
    #[serde(default)]
    idempotency_key: Option<String>,
    /// What happens when the agent is on a contact or in after-contact work: `reject`
    /// (the default: refused 409 `STATE_CONFLICT`) or `defer` (answered 202: the change
    /// waits and is carried out once the agent is free, compliance checked again then).
    #[serde(default)]
    when_busy: WhenBusy,
    /// With `when_busy = "defer"`: how long the change waits at most, e.g. `90s`, `10m`,
    /// `2h` (1s to 24h); `[deferred] defer_for` (15m by default) when absent. Without
    /// `defer` nothing waits, and it is only checked.
    #[serde(default)]
    #[schema(example = "10m")]
    defer_for: Option<String>,
}

/// The `{agent_id}` of an agent's routes: their `params(...)` and their `PathParams`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct AgentPath {
    /// The platform user id, e.g. u_001
    pub(super) agent_id: String,
}

/// Changes one agent's state now.
///
/// Compliance is checked first: an agent who is not scheduled may only be logged out,
/// and one owing a mandatory break may not be made READY. A refused change is recorded
/// and answered 409 with its `violation`, and never sent to the platform. The token's
/// name is the actor of the audit entry.
#[utoipa::path(
    post,
    path = "/v1/agents/{agent_id}/transitions",
    tag = "agents",
    security(("bearer" = [SUPERVISOR])),
    params(AgentPath, IdempotencyKeyHeader),
    request_body = TransitionBody,
    responses(
        (status = 200, description = "The change was made (or replayed for a known idempotency key)", body = Transition),
        (status = 202, description = "With `when_busy = \"defer\"`: the agent is busy and the change waits (replacing the agent's earlier deferred change, if any); `transition.deferred` is sent, then `agent.state_changed`, `transition.rejected`, `transition.expired` or `transition.cancelled`", body = Deferral),
        (status = 404, description = "The platform does not know the agent"),
        (status = 409, description = "Refused: `violation` is AGENT_NOT_SCHEDULED, MANDATORY_BREAK_VIOLATION or STATE_CONFLICT"),
        (status = 429, description = "With `when_busy = \"defer\"`: the caller has `deferred.max_waiting_per_caller` deferred changes counted (each counts while it waits, and for a minute after it was asked); `Retry-After` says when one stops counting"),
        (status = 502, description = "The platform refused the request; `schedule-lookup-refused`: it refuses this API user schedule lookups, so compliance cannot be checked (import schedules, or `[compliance] without_schedule = \"allow\"`)"),
        (status = 503, description = "The platform could not be reached or kept failing"),
    )
)]
pub async fn create_transition(
    TenantState(state): TenantState,
    caller: Caller,
    caller_key: CallerKey,
    PathParams(AgentPath { agent_id }): PathParams<AgentPath>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<TransitionBody>,
) -> Result<Response, Problem> {
    check_agent_id(&agent_id)?;
    if let Some(reason) = &body.reason {
        check_reason(reason)?;
    }
    let idempotency_key = idempotency_key(body.idempotency_key, &headers, &caller)?;
    let defer = asked_wait(body.when_busy, body.defer_for.as_deref())?
        .and_then(|wait| state.deferred.defer(WhenBusy::Defer, wait));
    // Taken before the change is asked, so a burst of requests cannot all pass at once.
    let place = match defer {
        Some(_) => {
            let now = state.engine.now();
            match state.deferrals.admit(&caller_key, &state.store, now).await {
                Ok(place) => Some(place),
                Err(too_many) => return Ok(too_many),
            }
        }
        None => None,
    };
    let request = TransitionRequest {
        agent_id,
        target: body.state,
        reason: body.reason,
        origin: Origin::Api,
        actor: caller.name.to_string(),
        idempotency_key,
    };
    // A person waits for this answer: it goes before every queued rule or refresh.
    let engine = state.engine.clone();
    let answer = to_the_end(async move {
        let answer = in_lane(
            Lane::Interactive,
            None,
            engine.change(Change::from(request).deferring(defer)),
        )
        .await;
        // Here, not after the answer: a client that leaves does not take the count off.
        if let (Ok(Changed::Deferred(deferral)), Some(place)) = (&answer, place) {
            place.deferred(deferral);
        }
        answer
    })
    .await?
    .map_err(engine_problem)?;
    Ok(match answer {
        Changed::Made(transition) => transition_response(transition),
        Changed::Deferred(deferral) => (StatusCode::ACCEPTED, Json(deferral)).into_response(),
        Changed::Unchanged(_) => unreachable!("a person's change is never settled unchanged"),
    })
}

/// The agent's change waiting for it to be free (`when_busy = "defer"`), if any.
#[utoipa::path(
    get,
    path = "/v1/agents/{agent_id}/deferred",
    tag = "agents",
    security(("bearer" = [VIEWER])),
    params(AgentPath),
    responses(
        (status = 200, description = "The change waiting for the agent", body = Deferral),
        NoDeferredChange,
    )
)]
pub async fn deferred_change(
    TenantState(state): TenantState,
    PathParams(AgentPath { agent_id }): PathParams<AgentPath>,
) -> Result<Response, Problem> {
    check_agent_id(&agent_id)?;
    match state.deferred.get(&agent_id).await? {
        Some(deferral) => Ok(Json(deferral).into_response()),
        None => Err(no_deferred_change(&agent_id)),
    }
}

/// Cancels the agent's change waiting for it to be free: it is never carried out. The
/// cancellation is audited (`transition.cancelled`, the token's name as actor) and
/// announced by `transition.cancelled`; a bulk item waiting on it is settled `cancelled`.
#[utoipa::path(
    delete,
    path = "/v1/agents/{agent_id}/deferred",
    tag = "agents",
    security(("bearer" = [SUPERVISOR])),
    params(AgentPath),
    responses(
        (status = 204, description = "Cancelled"),
        NoDeferredChange,
    )
)]
pub async fn cancel_deferred_change(
    TenantState(state): TenantState,
    caller: Caller,
    PathParams(AgentPath { agent_id }): PathParams<AgentPath>,
) -> Result<Response, Problem> {
    check_agent_id(&agent_id)?;
    let deferred = state.deferred.clone();
    let by = caller.name.to_string();
    let agent = agent_id.clone();
    let cancelled = to_the_end(async move { deferred.cancel(&agent, &by).await }).await??;
    match cancelled {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(no_deferred_change(&agent_id)),
    }
}

fn no_deferred_change(agent_id: &str) -> Problem {
    Problem::not_found(format!("no change waits for agent `{agent_id}`"))
}

/// The 404 of [`no_deferred_change`], for the deferred change's `responses(...)`.
struct NoDeferredChange;

impl utoipa::IntoResponses for NoDeferredChange {
    fn responses() -> BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        problem_answers(&[(404, "No change waits for the agent")])
    }
}

fn engine_problem(error: EngineError) -> Problem {
    match error {
        EngineError::NotSettable(_) => Problem::invalid_field("state", error.to_string()),
        EngineError::IdempotencyKeyReused { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "The idempotency key belongs to a different request",
            error.to_string(),
        )
        .with("field", "idempotency_key"),
        EngineError::Store(e) if !crate::store::is_unavailable(&e) => Problem::internal(&e),
        EngineError::Unrecorded { .. } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database-unavailable",
            "The database does not take writes",
            error.to_string(),
        ),
        EngineError::Store(e) => {
            tracing::error!(error = %e, "a change could not be recorded");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "The database does not take writes",
                "wfmd cannot record changes right now, so it sends none to the platform; a \
                 change already sent is recorded once the database takes writes again",
            )
        }
    }
}

fn transition_response(transition: Transition) -> Response {
    let problem = match &transition.outcome {
        Outcome::Succeeded => return (StatusCode::OK, Json(transition)).into_response(),
        Outcome::Rejected { violation } => Problem::violation(*violation),
        Outcome::Failed { kind, error } => match kind {
            FailureKind::UnknownAgent => Problem::not_found(format!(
                "the platform does not know agent `{}`",
                transition.agent_id
            )),
            FailureKind::PlatformRefused => Problem::new(
                StatusCode::BAD_GATEWAY,
                "platform-refused",
                "The platform refused the change",
                error.clone(),
            ),
            FailureKind::ScheduleRefused => Problem::new(
                StatusCode::BAD_GATEWAY,
                "schedule-lookup-refused",
                "The platform refuses schedule lookups, so compliance cannot be checked",
                error.clone(),
            ),
            FailureKind::PlatformUnavailable => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "platform-unavailable",
                "The platform could not carry out the change",
                error.clone(),
            ),
        },
    };
    problem
        .with("attempt_id", &transition.attempt_id)
        .with("transition", &transition)
        .into_response()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct IntervalView {
    state: String,
    reason: Option<String>,
    origin: String,
    started_at: String,
    /// Absent while the interval is open.
    ended_at: Option<String>,
}

/// What an agent did in a window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct HistoryView {
    agent_id: String,
    from: String,
    to: String,
    /// Recorded intervals overlapping the window, oldest first (not clipped).
    intervals: Vec<IntervalView>,
    /// Time in each state within the window, in milliseconds.
    time_in_state_ms: BTreeMap<AgentState, i64>,
    /// Time in IDLE, PAUSED and NOT_READY within the window, in milliseconds.
    idle_ms: i64,
}

/// The agent's recorded intervals in a window, with time per state and idle time.
#[utoipa::path(
    get,
    path = "/v1/agents/{agent_id}/history",
    tag = "agents",
    security(("bearer" = [VIEWER])),
    params(AgentPath, WindowQuery),
    responses((status = 200, description = "The intervals, time per state and idle time", body = HistoryView))
)]
pub async fn history(
    TenantState(state): TenantState,
    PathParams(AgentPath { agent_id }): PathParams<AgentPath>,
    QueryParams(query): QueryParams<WindowQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    check_agent_id(&agent_id)?;
    let now = state.engine.now();
    let window = window_from_query(query.from.as_deref(), query.to.as_deref(), now)?;
    super::extract::check_kept(
        &state.store,
        &[crate::store::retention::Kind::Intervals],
        window.from,
    )
    .await?;
    let rows =
        history::overlapping(state.store.reader(), &agent_id, window.from, window.to).await?;
    let intervals: Vec<_> = rows.iter().filter_map(|row| row.to_interval()).collect();
    let totals = idle::time_in_state(&intervals, window, now);
    let view = HistoryView {
        agent_id,
        from: rfc3339(window.from),
        to: rfc3339(window.to),
        intervals: rows
            .into_iter()
            .map(|row| IntervalView {
                started_at: rfc3339(row.started()),
                ended_at: row.ended().map(rfc3339),
                state: row.state,
                reason: row.reason,
                origin: row.origin,
            })
            .collect(),
        time_in_state_ms: totals.per_state_ms,
        idle_ms: totals.idle_ms,
    };
    Ok(Json(
        serde_json::to_value(view).map_err(|e| Problem::internal(&e))?,
    ))
}
