//! `POST /v1/schedules/imports`: a schedules CSV into the running daemon, in force for the
//! next change once stored (what `wfmd schedules import FILE` sends while a daemon runs,
//! and what a third-party WFM's export job can send itself); `GET
//! /v1/schedules/imports/{job_id}` follows it. The format is
//! [`crate::engine::imported_schedules`]'s; imported schedules decide compliance for the
//! agents they cover, so importing takes an admin.
//!
//! The file is checked whole before the answer: a bad one is refused at once (422, each
//! problem with its line and quoting no more than a short excerpt of its field, at most
//! [`MAX_LISTED_PROBLEMS`](imported_schedules::MAX_LISTED_PROBLEMS) of them listed and
//! all counted). A valid one is always answered 202 with the import as a job: the
//! largest takes longer to store than a request may last, and an answer that came back
//! 200 or 202 by how busy the machine was would make every client handle both anyway.
//!
//! A week of shifts for a few thousand agents is far more than the router-wide body limit,
//! so the route has its own.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::auth::Caller;
use super::error::Problem;
use super::extract::PathParams;
use super::jobs::{JobPath, NoSuchJob, accepted, found};
use super::roles::{ADMIN, VIEWER};
use super::tenancy::TenantState;
use super::{Routes, with_body_limit};
use crate::engine::imported_schedules::{self, ImportError, ImportErrors, ImportJobView};

/// The largest schedules file taken over HTTP (about 150,000 rows); larger ones are
/// split, or imported with `wfmd serve` stopped.
pub const IMPORT_LIMIT_BYTES: usize = 16 * 1024 * 1024;

pub fn routes() -> Routes {
    vec![
        with_body_limit(utoipa_axum::routes!(import_schedules), IMPORT_LIMIT_BYTES),
        utoipa_axum::routes!(show_import),
    ]
}

/// Imports schedules from a CSV, as a job: in force for the next change once stored.
///
/// Header `agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone`,
/// one row per break (a shift without breaks is one row with the break columns empty);
/// optionally `activity,activity_start,activity_end` after them (all three or none), a
/// titled work activity such as `Team meeting` that adherence rules may name; times RFC
/// 3339, or local (`2026-11-23 09:00`) in the row's IANA `timezone`; an agent id 1 to 128
/// printable ASCII characters, a `break_type` at most 64 characters, an activity title
/// at most 128. The file is checked whole before the answer: nothing is stored unless
/// every line is valid, and the 422 lists the first 100 problems, each with its line,
/// and counts them all. A valid file is answered 202 with the import, stored in the
/// background (`Location` follows it): all of it or none, and changes on the tenant go
/// on meanwhile. From `applying` on, the agents named take their schedule and break
/// status from the imported shifts, whatever was fetched or cached for them before. The
/// token's name is the actor of the audit entry.
#[utoipa::path(
    post,
    path = "/v1/schedules/imports",
    tag = "schedules",
    security(("bearer" = [ADMIN])),
    request_body(content = String, content_type = "text/csv", description = "The schedules file (UTF-8), at most 16 MiB"),
    responses(
        (status = 202, description = "Valid; stored in the background, in force once `state` is `applying` (`Location` follows it)", body = ImportJobView),
        (status = 409, description = "Another import is being stored or put in place (`job_id` names it); nothing was imported"),
        (status = 422, description = "The file is not a valid schedules file: `problems` lists the first 100, each with its line, `problem_count` counts them all; nothing was imported"),
        (status = 503, description = "The database takes no writes"),
    )
)]
pub async fn import_schedules(
    TenantState(state): TenantState,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let is_csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/csv")
        });
    if !is_csv {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "The request body must be CSV",
            "send the schedules file with content-type: text/csv",
        ));
    }
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "The request body is too large",
                format!(
                    "a schedules file may be at most {IMPORT_LIMIT_BYTES} bytes over HTTP; \
                     split it (each import replaces only the shifts it overlaps)"
                ),
            )
            .with("limit_bytes", IMPORT_LIMIT_BYTES)
        } else {
            Problem::unreadable_body(&e)
        }
    })?;
    match state.engine.import_schedules(bytes, &caller.name).await {
        Ok(job) => {
            let view = job.view();
            Ok(accepted(
                &format!("/v1/schedules/imports/{}", view.job_id),
                view,
            ))
        }
        Err(ImportError::Invalid(errors)) => Err(invalid(errors)),
        Err(ImportError::Busy(running)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "import-in-progress",
            "Another schedules import is being stored",
            format!(
                "import {running} is being stored or put in place; send this file once it has \
                 finished (GET /v1/schedules/imports/{running}); nothing was imported"
            ),
        )
        .with("job_id", running)),
        Err(ImportError::Store(e)) if crate::store::is_unavailable(&e) => {
            tracing::error!(error = %e, "an import could not be stored");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "The database does not take writes",
                "wfmd cannot store the schedules right now; nothing was imported",
            ))
        }
        Err(other) => Err(Problem::internal(&other)),
    }
}

/// One schedules import as it stands: `storing` (`stored` of `shifts` written aside),
/// `applying` (in force; `applied` of them moved into place), `completed`, or `failed`
/// (`error`; nothing of it is in force).
#[utoipa::path(
    get,
    path = "/v1/schedules/imports/{job_id}",
    tag = "schedules",
    security(("bearer" = [VIEWER])),
    params(JobPath),
    responses(
        (status = 200, description = "The import as it stands", body = ImportJobView),
        NoSuchJob,
    )
)]
pub async fn show_import(
    TenantState(state): TenantState,
    PathParams(JobPath { job_id }): PathParams<JobPath>,
) -> Result<Json<ImportJobView>, Problem> {
    let job = imported_schedules::job(&state.store, &job_id)
        .await
        .map_err(|e| Problem::internal(&e))?;
    found(job, "schedules import", &job_id).map(Json)
}

/// The 422 of a file with `errors`: the problems listed (at most
/// [`MAX_LISTED_PROBLEMS`](imported_schedules::MAX_LISTED_PROBLEMS), each quoting at
/// most an excerpt of its field) and counted; `detail` gives the first, so the answer
/// stays small whatever the file.
fn invalid(errors: ImportErrors) -> Problem {
    let first = errors.problems.first().cloned().unwrap_or_default();
    let detail = match errors.total {
        0 | 1 => first,
        n => format!("{first} (and {} more: see `problems`)", n - 1),
    };
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-schedules",
        "The schedules file is not valid; nothing was imported",
        detail,
    )
    .with("problem_count", errors.total)
    .with("problems", errors.problems)
}
