//! What the routes of background jobs (bulk transitions, analytics queries) answer
//! alike: the 202 that names a new job, and the 404 of an id that names none.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::Problem;

/// 202 with `view`, and `Location` naming the job where it can be followed.
pub(super) fn accepted(location: &str, view: impl Serialize) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The job a lookup found, or the 404 naming the `kind` of job and the id asked for.
pub(super) fn found<T>(job: Option<T>, kind: &str, job_id: &str) -> Result<T, Problem> {
    job.ok_or_else(|| Problem::not_found(format!("no {kind} job `{job_id}`")))
}
