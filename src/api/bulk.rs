//! Bulk jobs over HTTP: `POST /v1/bulk-transitions` (202 with the job id),
//! `GET /v1/bulk-transitions` (the jobs, newest first, a page at a time),
//! `GET`/`DELETE /v1/bulk-transitions/{id}` (progress and per-agent results; cancel the
//! rest) and `POST /v1/bulk-transitions/{id}/revert` (a new job undoing a finished one).
//!
//! The job body may list up to 10,000 agents, which the router-wide body limit is far
//! too small for, so the submit route has its own limit sized for that list; a larger
//! body is a 413 problem. Viewers may follow a job; starting, cancelling and reverting
//! one takes a supervisor, whose token name is the job's actor.

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::Problem;
use super::extract::{PathParams, QueryParams};
use super::jobs::{JobPath, NoSuchJob, accepted, found};
use super::json::{JsonBody, not_null, parse};
use super::roles::{SUPERVISOR, VIEWER};
use super::tenancy::TenantState;
use super::validate::{
    IdempotencyKeyHeader, MAX_ID_LEN, check_reason, idempotency_key, valid_agent_id,
};
use super::{Routes, with_body_limit};
use crate::domain::AgentState;
use crate::engine::bulk::{Accepted, BulkError, BulkSelector, JobRequest, MAX_AGENTS};
use crate::engine::deferred::WhenBusy;
use crate::engine::jobs::BulkJobView;

/// The largest job body: every one of `MAX_AGENTS` ids at the longest accepted length
/// with its quotes and comma, plus room for the other fields and whitespace.
pub const BODY_LIMIT_BYTES: usize = MAX_AGENTS * (MAX_ID_LEN + 4) + 64 * 1024;

pub fn routes() -> Routes {
    vec![
        with_body_limit(utoipa_axum::routes!(create_bulk_job), BODY_LIMIT_BYTES),
        utoipa_axum::routes!(list_bulk_jobs),
        utoipa_axum::routes!(show_bulk_job, cancel_bulk_job),
        utoipa_axum::routes!(revert_bulk_job),
    ]
}

/// A bulk job: one state change for many agents.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// The agents to change (1 to 10,000 distinct platform user ids); or `team`. Each
    /// must be one the platform knows: a job naming others is refused whole (422, with
    /// them in `unknown_agents`).
    #[serde(default, deserialize_with = "not_null")]
    #[schema(min_items = 1, max_items = 10000)]
    agents: Option<Vec<String>>,
    /// Every agent of this team (team id, or its name in any letter case); or `agents`.
    /// A team the platform does not have, or has without agents, is refused (422).
    #[serde(default, deserialize_with = "not_null")]
    team: Option<String>,
    /// The state to set; `ON_CONTACT` and `ACW` are observed only and refused.
    state: AgentState,
    /// Reason code: 1-64 letters, digits, `_` or `-`; the state's default when absent.
    #[serde(default)]
    reason: Option<String>,
    /// Submits the job at most once for this key (1-255 characters); the
    /// `Idempotency-Key` header works too. A key used before for another job is
    /// refused (422 `idempotency-key-reused`).
    #[serde(default)]
    idempotency_key: Option<String>,
    /// What an item does when its agent is on a contact or in after-contact work:
    /// `reject` (the default: the item is `rejected` with `STATE_CONFLICT`) or `defer`
    /// (the item is `deferred` until the agent is free, then settled with the change's
    /// outcome; `failed` when it expires, `cancelled` when cancelled or replaced).
    #[serde(default)]
    when_busy: WhenBusy,
    /// With `when_busy = "defer"`: how long an item's change waits at most, e.g. `90s`,
    /// `10m`, `2h` (1s to 24h); `[deferred] defer_for` when absent.
    #[serde(default)]
    #[schema(example = "10m")]
    defer_for: Option<String>,
}

/// States in `schemas` what [`selector`] checks of a job body and its Rust type does not
/// say: `agents` (each an `AgentId`, each once) or `team` (not blank), exactly one of
/// them and neither `null`.
pub(super) fn describe(schemas: &mut serde_json::Map<String, serde_json::Value>) {
    describe_agents_or_team(schemas, "BulkBody", true);
}

/// [`describe`] for the body schema `name`, which takes `agents` or `team` as a job's;
/// `unique`: whether an agent listed twice is refused (a job's) rather than counted
/// once (an authorisation's).
pub(super) fn describe_agents_or_team(
    schemas: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    unique: bool,
) {
    use serde_json::json;
    let body = schemas
        .get_mut(name)
        .and_then(|body| body.as_object_mut())
        .unwrap_or_else(|| panic!("{name} is in the document"));
    body.insert(
        "oneOf".to_owned(),
        json!([{"required": ["agents"]}, {"required": ["team"]}]),
    );
    let properties = body
        .get_mut("properties")
        .and_then(|p| p.as_object_mut())
        .expect("BulkBody has properties");
    if let Some(agents) = properties.get_mut("agents").and_then(|a| a.as_object_mut()) {
        agents.insert("type".to_owned(), json!("array"));
        if unique {
            agents.insert("uniqueItems".to_owned(), json!(true));
        }
        agents.insert(
            "items".to_owned(),
            super::schemas::reference(super::schemas::AGENT_ID),
        );
    }
    if let Some(team) = properties.get_mut("team").and_then(|t| t.as_object_mut()) {
        team.insert("type".to_owned(), json!("string"));
        team.insert("minLength".to_owned(), json!(1));
        team.insert("maxLength".to_owned(), json!(MAX_ID_LEN));
        // Something besides white space (Rust's `trim` also takes U+0085, which the
        // ECMA-262 `\s` of JSON Schema patterns does not).
        team.insert("pattern".to_owned(), json!("[^\\s\\u0085]"));
    }
}

/// Options of a revert; the body may be empty or `null`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevertBody {
    /// Starts the revert at most once for this key; by default repeating a revert of
    /// the same job returns the first revert job. A key used before for another job is
    /// refused (422 `idempotency-key-reused`).
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// `false` leaves the items out (cheap progress polling); default `true`.
    #[param(pattern = "^(true|false)$")]
    items: Option<String>,
}

/// Which jobs, a page at a time.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BulkListQuery {
    /// Only jobs with this status: `queued`, `running`, `completed` or `cancelled`.
    #[param(pattern = "^(queued|running|completed|cancelled)$")]
    status: Option<String>,
    /// How many jobs at most: 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The next page: only jobs created before this job (give the last `job_id` of the
    /// page before).
    #[param(pattern = "^job_[0-9a-f]{32}$")]
    before: Option<String>,
}

/// The most jobs one page lists, and how many when not asked.
const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 50;

/// A page of jobs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobList {
    /// Newest first, without their items (`GET /v1/bulk-transitions/{job_id}` has them).
    jobs: Vec<BulkJobView>,
}

/// The answer to an accepted job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AcceptedView {
    job_id: String,
    /// How many agents (items) the job has.
    total: usize,
    /// True when an earlier job with the same idempotency key is returned.
    replayed: bool,
}

fn selector(body: &mut BulkBody) -> Result<BulkSelector, Problem> {
    agents_or_team(body.agents.take(), body.team.take())
}

/// The agents a body lists, or the team it names: exactly one, each well formed.
pub(super) fn agents_or_team(
    agents: Option<Vec<String>>,
    team: Option<String>,
) -> Result<BulkSelector, Problem> {
    match (agents, team) {
        (Some(_), Some(_)) => Err(Problem::invalid_field(
            "team",
            "give either agents or team, not both",
        )),
        (None, None) => Err(Problem::invalid_field(
            "agents",
            "give the agents (a list of agent ids) or a team",
        )),
        (Some(agents), None) => {
            if let Some(i) = agents.iter().position(|id| !valid_agent_id(id)) {
                return Err(Problem::invalid_field(
                    &format!("agents[{i}]"),
                    format!(
                        "agents[{i}]: an agent id is 1 to {MAX_ID_LEN} printable ASCII \
                         characters, not `.` or `..`"
                    ),
                ));
            }
            Ok(BulkSelector::Agents(agents))
        }
        (None, Some(team)) => {
            // Characters, as the document's `maxLength` counts them.
            if team.trim().is_empty() || team.chars().count() > MAX_ID_LEN {
                return Err(Problem::invalid_field(
                    "team",
                    format!("team must be a team id or name of 1 to {MAX_ID_LEN} characters"),
                ));
            }
            Ok(BulkSelector::Team(team))
        }
    }
}

/// Starts a bulk job: 202 with its id once the job and its items are stored.
///
/// Each agent's change goes through the same compliance checks and request budget as a
/// single change: a refused agent is a rejected item, not a failed job. The job
/// survives a restart and no agent is changed twice.
#[utoipa::path(
    post,
    path = "/v1/bulk-transitions",
    tag = "bulk",
    security(("bearer" = [SUPERVISOR])),
    params(IdempotencyKeyHeader),
    request_body = BulkBody,
    responses(
        (status = 202, description = "The job is stored and starts at once; `Location` names it", body = AcceptedView),
        (status = 503, description = "The platform could not be asked for its agents"),
    )
)]
pub async fn create_bulk_job(
    TenantState(state): TenantState,
    caller: Caller,
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
    let idempotency_key = idempotency_key(body.idempotency_key.take(), &headers, &caller)?;
    let defer_for = super::validate::asked_wait(body.when_busy, body.defer_for.as_deref())?
        .map(|wait| wait.unwrap_or(state.deferred.defer_for()));
    let accepted = state
        .bulk
        .submit(JobRequest {
            selector,
            target: body.state,
            reason: body.reason,
            actor: caller.name.to_string(),
            idempotency_key,
            defer_for,
        })
        .await
        .map_err(bulk_problem)?;
    Ok(accepted_response(&accepted))
}

fn accepted_response(job: &Accepted) -> Response {
    let location = format!("/v1/bulk-transitions/{}", job.job_id);
    let view = AcceptedView {
        job_id: job.job_id.clone(),
        total: job.total,
        replayed: !job.created,
    };
    accepted(&location, view)
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

/// A job's progress, counts and every agent's outcome.
#[utoipa::path(
    get,
    path = "/v1/bulk-transitions/{job_id}",
    tag = "bulk",
    security(("bearer" = [VIEWER])),
    params(JobPath, ShowQuery),
    responses(
        (status = 200, description = "The job as it stands", body = BulkJobView),
        NoSuchJob,
    )
)]
pub async fn show_bulk_job(
    TenantState(state): TenantState,
    PathParams(JobPath { job_id }): PathParams<JobPath>,
    QueryParams(query): QueryParams<ShowQuery>,
) -> Result<Json<BulkJobView>, Problem> {
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
    found(state.bulk.job(&job_id, with_items).await?, "bulk", &job_id).map(Json)
}

/// The bulk jobs, newest first, without their items: their status, counts, who started
/// them and when. A page at a time: `before` the last `job_id` of a page gives the next.
#[utoipa::path(
    get,
    path = "/v1/bulk-transitions",
    tag = "bulk",
    security(("bearer" = [VIEWER])),
    params(BulkListQuery),
    responses((status = 200, description = "The jobs", body = JobList))
)]
pub async fn list_bulk_jobs(
    TenantState(state): TenantState,
    QueryParams(query): QueryParams<BulkListQuery>,
) -> Result<Json<JobList>, Problem> {
    let status = query.status.as_deref();
    if let Some(status) = status
        && !["queued", "running", "completed", "cancelled"].contains(&status)
    {
        return Err(Problem::invalid_parameter(
            "status",
            format!("status must be queued, running, completed or cancelled, got `{status}`"),
        ));
    }
    let limit = i64::from(query.limit.unwrap_or(DEFAULT_PAGE));
    if !(1..=i64::from(MAX_PAGE)).contains(&limit) {
        return Err(Problem::invalid_parameter(
            "limit",
            format!("limit must be from 1 to {MAX_PAGE}, got {limit}"),
        ));
    }
    let before = query.before.as_deref();
    if let Some(before) = before
        && !is_job_id(before)
    {
        return Err(Problem::invalid_parameter(
            "before",
            format!("before must be a job id (job_ and 32 hex digits), got `{before}`"),
        ));
    }
    let jobs = state.bulk.jobs(status, before, limit).await?;
    Ok(Json(JobList { jobs }))
}

/// Whether `id` has the shape of a bulk job's id.
fn is_job_id(id: &str) -> bool {
    id.strip_prefix("job_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Cancels the items not started yet (those in flight finish; then the job is
/// `cancelled`); answers the job as it now stands.
#[utoipa::path(
    delete,
    path = "/v1/bulk-transitions/{job_id}",
    tag = "bulk",
    security(("bearer" = [SUPERVISOR])),
    params(JobPath),
    responses(
        (status = 200, description = "Cancellation asked for; the job as it stands", body = BulkJobView),
        NoSuchJob,
        (status = 409, description = "The job completed already"),
    )
)]
pub async fn cancel_bulk_job(
    TenantState(state): TenantState,
    caller: Caller,
    PathParams(JobPath { job_id }): PathParams<JobPath>,
) -> Result<Json<BulkJobView>, Problem> {
    state
        .bulk
        .cancel(&job_id, &caller.name)
        .await
        .map(Json)
        .map_err(bulk_problem)
}

/// Starts a job that puts every agent the finished job moved back to the state and
/// reason it had before, through the compliance checks. Agents whose earlier state is
/// unknown or observed only are failed items saying why.
#[utoipa::path(
    post,
    path = "/v1/bulk-transitions/{job_id}/revert",
    tag = "bulk",
    security(("bearer" = [SUPERVISOR])),
    params(JobPath, IdempotencyKeyHeader),
    request_body(content = Option<RevertBody>, description = "Optional; may be empty or `null`"),
    responses(
        (status = 202, description = "The revert job is stored and starts at once", body = AcceptedView),
        NoSuchJob,
        (status = 409, description = "The job is still running, or moved no agent"),
    )
)]
pub async fn revert_bulk_job(
    TenantState(state): TenantState,
    caller: Caller,
    PathParams(JobPath { job_id }): PathParams<JobPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    // No body and a JSON `null` both mean "no options": the document offers
    // `RevertBody` or `null`, and clients generated from it send either.
    let text = body.trim_ascii();
    let body: RevertBody = if text.is_empty() || text == b"null" {
        RevertBody::default()
    } else {
        parse(&body)?
    };
    let idempotency_key = idempotency_key(body.idempotency_key, &headers, &caller)?;
    let accepted = state
        .bulk
        .revert(&job_id, &caller.name, idempotency_key)
        .await
        .map_err(bulk_problem)?;
    Ok(accepted_response(&accepted))
}

pub(super) fn bulk_problem(error: BulkError) -> Problem {
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
