//! `GET /v1/reports/compliance?from&to&format=csv|json|html&tz=ZONE`: the compliance
//! report, streamed.
//!
//! The aggregates are computed before the response starts, so a bad database answers a
//! problem+json 500 instead of a truncated 200; rendering (and the JSON attempt log)
//! then streams through the download's spool (see [`super::exports`]): the database is
//! read at its own pace on the download connections, whatever the client's.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::auth::Caller;
use super::error::Problem;
use super::exports::{self, TooManyDownloads};
use super::extract::QueryParams;
use super::extract::{window_from_query, zone_from_query};
use super::roles::VIEWER;
use super::{ApiState, Routes};
use crate::report::{Format, Report};

pub fn routes() -> Routes {
    vec![utoipa_axum::routes!(compliance)]
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Start: a date (2026-11-20, midnight UTC) or an RFC 3339 instant; default `to`
    /// minus 24 hours.
    from: Option<String>,
    /// End (exclusive), after `from` and at most 366 days later; default now.
    to: Option<String>,
    /// `csv` (default; one row per agent), `json` (agents and every attempt) or `html`
    /// (one self-contained page with a chart, agents grouped by team, worst adherence
    /// first).
    #[param(pattern = "^(csv|json|html)$")]
    format: Option<String>,
    /// IANA time zone for the times in the report (e.g. America/New_York); default UTC.
    tz: Option<String>,
}

/// The compliance report of a window: per agent (with name and team as the platform
/// last listed them), transitions, rejections by violation, latency (mean, p95), idle
/// time, time in each state and adherence; streamed.
#[utoipa::path(
    get,
    path = "/v1/reports/compliance",
    tag = "reports",
    security(("bearer" = [VIEWER])),
    params(ReportQuery),
    responses(
        (status = 200, description = "The report in the requested format", content(
            (String = "text/csv; charset=utf-8"),
            (Object = "application/json"),
            (String = "text/html; charset=utf-8"),
        )),
        TooManyDownloads,
    )
)]
pub async fn compliance(
    State(state): State<ApiState>,
    caller: Caller,
    QueryParams(query): QueryParams<ReportQuery>,
) -> Result<Response, Problem> {
    let now = state.engine.now();
    let window = window_from_query(query.from.as_deref(), query.to.as_deref(), now)?;
    let format = match query.format.as_deref() {
        None => Format::Csv,
        Some(text) => text
            .parse::<Format>()
            .map_err(|e| Problem::invalid_parameter("format", format!("format: {e}")))?,
    };
    let zone = zone_from_query(query.tz.as_deref())?;
    super::extract::check_kept(
        &state.store,
        &[
            crate::store::retention::Kind::Intervals,
            crate::store::retention::Kind::Attempts,
        ],
        window.from,
    )
    .await?;
    let permit = match state.exports.admit(&caller) {
        Ok(permit) => permit,
        Err(refused) => return Ok(refused),
    };
    let pool = state.store.for_exports().reader().clone();
    let report = Report::build(&pool, window, now, zone, &state.judging.current())
        .await
        .map_err(|e| Problem::internal(&e))?;
    let body = state
        .exports
        .stream(permit, |mut sink| async move {
            report
                .write(format, &pool, &mut sink)
                .await
                .map_err(|e| e.to_string())
        })
        .await?;
    // A page is for viewing in the browser, not saving.
    let name = (format != Format::Html)
        .then(|| exports::file_name("compliance", window, format.extension()));
    Ok(exports::answer(
        body,
        format.content_type(),
        name.as_deref(),
    ))
}
