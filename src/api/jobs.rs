//! What the routes of background jobs (bulk transitions, analytics queries) take and
//! answer alike: the `{job_id}` path parameter, the 202 that names a new job, and the 404
//! of an id that names none.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;

use super::error::{Problem, problem_answers};

/// 202 with `view`, and `Location` naming the job where it can be followed.
pub(super) fn accepted(location: &str, view: impl Serialize) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The answer naming a job just started, where the route answers no fuller view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobStarted {
    /// The job's id: `Location` names the route that follows it.
    pub job_id: String,
}

/// The job a lookup found, or the 404 naming the `kind` of job and the id asked for.
pub(super) fn found<T>(job: Option<T>, kind: &str, job_id: &str) -> Result<T, Problem> {
    job.ok_or_else(|| Problem::not_found(format!("no {kind} job `{job_id}`")))
}

/// The `{job_id}` of a job's routes: their `params(...)` and their `PathParams`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct JobPath {
    /// The job id from the 202 answer
    pub job_id: String,
}

/// The 404 of [`found`], for a job route's `responses(...)`.
pub(super) struct NoSuchJob;

impl utoipa::IntoResponses for NoSuchJob {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        problem_answers(&[(404, "No such job")])
    }
}
