//! Bulk jobs over HTTP: `POST /v1/bulk-transitions` (202 with the job id),
//! `GET`/`DELETE /v1/bulk-transitions/{id}` (progress and per-agent results; cancel the
//! rest) and `POST /v1/bulk-transitions/{id}/revert` (a new job undoing a finished one).
//!
//! The job body may list up to 10,000 agents, which the router-wide body limit is far
//! too small for, so the submit route has its own limit sized for that list; a larger
//! body is a 413 problem.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::agents::{MAX_ID_LEN, MAX_KEY_LEN, check_reason};
use super::error::Problem;
use super::json::{JsonBody, parse};
use crate::domain::AgentState;
use crate::engine::bulk::{Accepted, BulkError, JobRequest, MAX_AGENTS, Selector};

/// The largest job body: every one of `MAX_AGENTS` ids at the longest accepted length
/// with its quotes and comma, plus room for the other fields and whitespace.
pub const BODY_LIMIT_BYTES: usize = MAX_AGENTS * (MAX_ID_LEN + 4) + 64 * 1024;

/// The bulk routes, merged into [`super::router`].
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/bulk-transitions",
            post(create).layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES)),
        )
        .route("/v1/bulk-transitions/{job_id}", get(show).delete(cancel))
        .route("/v1/bulk-transitions/{job_id}/revert", post(revert))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    #[serde(default)]
    agents: Option<Vec<String>>,
    #[serde(default)]
    team: Option<String>,
    state: AgentState,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevertBody {
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    items: Option<String>,
}

/// The body's key, else the conventional header's; checked for length.
fn idempotency_key(body: Option<String>, headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let key = body.or_else(|| {
        headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    match key {
        Some(key) if key.is_empty() || key.len() > MAX_KEY_LEN => Err(Problem::invalid_field(
            "idempotency_key",
            format!("idempotency_key must be 1 to {MAX_KEY_LEN} characters"),
        )),
        key => Ok(key),
    }
}

fn selector(body: &mut BulkBody) -> Result<Selector, Problem> {
    match (body.agents.take(), body.team.take()) {
        (Some(_), Some(_)) => Err(Problem::invalid_field(
            "team",
            "give either agents or team, not both",
        )),
        (None, None) => Err(Problem::invalid_field(
            "agents",
            "give the agents to change (a list of agent ids) or a team",
        )),
        (Some(agents), None) => {
            if let Some((i, _)) = agents.iter().enumerate().find(|(_, id)| {
                id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(|c| c.is_ascii_graphic())
            }) {
                return Err(Problem::invalid_field(
                    &format!("agents[{i}]"),
                    format!(
                        "agents[{i}]: an agent id is 1 to {MAX_ID_LEN} printable ASCII characters"
                    ),
                ));
            }
            Ok(Selector::Agents(agents))
        }
        (None, Some(team)) => {
            if team.trim().is_empty() || team.len() > MAX_ID_LEN {
                return Err(Problem::invalid_field(
                    "team",
                    format!("team must be a team id or name of 1 to {MAX_ID_LEN} characters"),
                ));
            }
            Ok(Selector::Team(team))
        }
    }
}

/// Accepts a job: 202 with its id once it and its items are stored.
pub async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<JsonBody<BulkBody>, Problem>,
) -> Result<Response, Problem> {
    let JsonBody(mut body) = body.map_err(too_large)?;
    let selector = selector(&mut body)?;
    if !body.state.is_settable() {
        return Err(Problem::invalid_field(
            "state",
            format!("{} is observed only and cannot be set", body.state),
        ));
    }
    if let Some(reason) = &body.reason {
        check_reason(reason)?;
    }
    let idempotency_key = idempotency_key(body.idempotency_key.take(), &headers)?;
    let accepted = state
        .bulk
        .submit(JobRequest {
            selector,
            target: body.state,
            reason: body.reason,
            actor: "api".to_owned(),
            idempotency_key,
        })
        .await
        .map_err(bulk_problem)?;
    Ok(accepted_response(&accepted))
}

fn accepted_response(accepted: &Accepted) -> Response {
    let location = format!("/v1/bulk-transitions/{}", accepted.job_id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({
            "job_id": accepted.job_id,
            "total": accepted.total,
            "replayed": !accepted.created,
        })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A body over the route's limit says what the limit is.
fn too_large(problem: Problem) -> Problem {
    if problem.status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "The request body is too large",
            format!(
                "a bulk job body may be at most {BODY_LIMIT_BYTES} bytes, enough for \
                 {MAX_AGENTS} agent ids; split the job"
            ),
        )
        .with("limit_bytes", BODY_LIMIT_BYTES)
    } else {
        problem
    }
}

/// Progress, counts and every item (`?items=false` leaves the items out).
pub async fn show(
    State(state): State<ApiState>,
    Path(job_id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Result<Response, Problem> {
    let with_items = match query.items.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(Problem::invalid_parameter(
                "items",
                format!("items must be true or false, got `{other}`"),
            ));
        }
    };
    let job = state.bulk.job(&job_id, with_items).await?;
    match job {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(Problem::not_found(format!("no bulk job `{job_id}`"))),
    }
}

/// Cancels the items not started yet; answers the job as it now stands.
pub async fn cancel(
    State(state): State<ApiState>,
    Path(job_id): Path<String>,
) -> Result<Response, Problem> {
    let job = state
        .bulk
        .cancel(&job_id, "api")
        .await
        .map_err(bulk_problem)?;
    Ok(Json(job).into_response())
}

/// Starts a job putting back what the finished job `job_id` changed.
pub async fn revert(
    State(state): State<ApiState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let body: RevertBody = if body.iter().all(u8::is_ascii_whitespace) {
        RevertBody::default()
    } else {
        parse(&body)?
    };
    let idempotency_key = idempotency_key(body.idempotency_key, &headers)?;
    let accepted = state
        .bulk
        .revert(&job_id, "api", idempotency_key)
        .await
        .map_err(bulk_problem)?;
    Ok(accepted_response(&accepted))
}

fn bulk_problem(error: BulkError) -> Problem {
    match error {
        BulkError::Invalid {
            field,
            detail,
            values,
        } => {
            let problem = Problem::invalid_field(field, detail);
            match values {
                Some((name, values)) => problem.with(name, values),
                None => problem,
            }
        }
        BulkError::NotFound(_) => Problem::not_found(error.to_string()),
        BulkError::Conflict { .. } => Problem::new(
            StatusCode::CONFLICT,
            "job-conflict",
            "The bulk job is not in a state that allows this",
            error.to_string(),
        ),
        BulkError::NothingToRevert(_) => Problem::new(
            StatusCode::CONFLICT,
            "nothing-to-revert",
            "The bulk job changed no agent",
            error.to_string(),
        ),
        BulkError::IdempotencyKeyReused(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "The idempotency key belongs to a different request",
            error.to_string(),
        )
        .with("field", "idempotency_key"),
        BulkError::Platform(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "platform-unavailable",
            "The platform could not be asked for its agents",
            error.to_string(),
        ),
        BulkError::Store(e) => Problem::internal(&e),
    }
}
