//! `POST /v1/schedules/imports`: a schedules CSV into the running daemon, in force for the
//! next change (what `wfmd schedules import FILE` sends while a daemon runs, and what a
//! third-party WFM's export job can send itself). The format is
//! [`crate::engine::imported_schedules`]'s; imported schedules decide compliance for the
//! agents they cover, so importing takes an admin.
//!
//! A week of shifts for a few thousand agents is far more than the router-wide body limit,
//! so the route has its own.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};

use super::auth::Caller;
use super::error::Problem;
use super::roles::ADMIN;
use super::{ApiState, Routes, with_body_limit};
use crate::engine::imported_schedules::{ImportError, ImportErrors, ImportSummary};

/// The largest schedules file taken over HTTP (about 140,000 rows); larger ones are
/// split, or imported with `wfmd serve` stopped.
pub const IMPORT_LIMIT_BYTES: usize = 16 * 1024 * 1024;

pub fn routes() -> Routes {
    vec![with_body_limit(
        utoipa_axum::routes!(import_schedules),
        IMPORT_LIMIT_BYTES,
    )]
}

/// Imports schedules from a CSV, in force for the next change.
///
/// Header `agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone`,
/// one row per break (a shift without breaks is one row with the break columns empty);
/// optionally `activity,activity_start,activity_end` after them (all three or none), a
/// titled work activity such as `Team meeting` that adherence rules may name; times RFC
/// 3339, or local (`2026-11-23 09:00`) in the row's IANA `timezone`; an agent id 1 to 128
/// printable ASCII characters, a `break_type` at most 64 characters, an activity title
/// at most 128. Nothing is stored unless every line is valid; the 422 lists the first
/// 100 problems, each with its line, and counts them all. The
/// agents named take their schedule and break status from the imported shifts from the
/// next change on, whatever was fetched or cached for them before. The token's name is
/// the actor of the audit entry.
#[utoipa::path(
    post,
    path = "/v1/schedules/imports",
    tag = "schedules",
    security(("bearer" = [ADMIN])),
    request_body(content = String, content_type = "text/csv", description = "The schedules file (UTF-8), at most 16 MiB"),
    responses(
        (status = 200, description = "Stored, and in force for the next change", body = ImportSummary),
        (status = 422, description = "The file is not a valid schedules file: `problems` lists the first 100, each with its line, `problem_count` counts them all; nothing was imported"),
        (status = 503, description = "The database takes no writes"),
    )
)]
pub async fn import_schedules(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportSummary>, Problem> {
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
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
        invalid(ImportErrors {
            problems: vec!["the file is not UTF-8 text".to_owned()],
            total: 1,
        })
    })?;
    match state.engine.import_schedules(&text, &caller.name).await {
        Ok(summary) => Ok(Json(summary)),
        Err(ImportError::Invalid(errors)) => Err(invalid(errors)),
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

/// The 422 of a file with `errors`: the problems listed (at most
/// [`MAX_LISTED_PROBLEMS`](crate::engine::imported_schedules::MAX_LISTED_PROBLEMS), each
/// quoting at most an excerpt of its field) and counted; `detail` gives the first, so the
/// answer stays small whatever the file.
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
