//! `GET /v1/reports/compliance?from&to&format=csv|json|html&tz=ZONE&team=TEAM`: the
//! compliance report, streamed; and
//! `GET /v1/reports/definitions?report&format=json|csv&tz=ZONE`: what the numbers of a
//! report, of analytics results or of the wallboard mean.
//!
//! The JSON report and the HTML page carry their definitions themselves; the CSV stays
//! plain RFC 4180 for strict readers and spreadsheets, and points to its definitions
//! with a `Link: <definitions?report=compliance&format=csv…>; rel="describedby"` header
//! (RFC 8288, a reference relative to the report's own URL, so it holds under a
//! tenant's `/v1/tenants/{tenant}/` too).
//!
//! The aggregates are computed before the response starts, so a bad database answers a
//! problem+json 500 instead of a truncated 200; rendering (and the JSON attempt log)
//! then streams through the download's spool (see [`super::exports`]): the database is
//! read at its own pace on the download connections, whatever the client's.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Routes;
use super::auth::Caller;
use super::error::Problem;
use super::exports::{self, TooManyDownloads};
use super::extract::QueryParams;
use super::extract::{window_from_query, zone_from_query};
use super::roles::VIEWER;
use super::tenancy::TenantState;
use crate::report::{Definitions, Report, ReportFormat, Subject};

pub fn routes() -> Routes {
    vec![
        utoipa_axum::routes!(compliance),
        utoipa_axum::routes!(definitions),
    ]
}

/// The `Link` header of a CSV answer: its definitions, `definitions_path` relative to
/// the answer's own URL (`definitions` beside `…/reports/compliance`).
pub(super) fn describedby(
    definitions_path: &str,
    subject: Subject,
    tz: Option<&str>,
) -> HeaderValue {
    let mut target = format!("{definitions_path}?report={}&format=csv", subject.as_str());
    if let Some(zone) = tz {
        // An IANA name is letters, digits, `/`, `_`, `-` and `+`; only `+` needs escaping.
        target.push_str("&tz=");
        target.push_str(&zone.replace('+', "%2B"));
    }
    HeaderValue::from_str(&format!("<{target}>; rel=\"describedby\""))
        .expect("a zone name checked by chrono-tz is header-safe")
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
    /// Only this team's agents: its id, or its name in any letter case, as the agent
    /// roster has it (a team it does not have: a report without agents).
    #[param(min_length = 1, max_length = 128)]
    team: Option<String>,
}

/// The compliance report of a window (or of one team's agents in it): per agent (with
/// name and team as the platform last listed them), transitions, rejections by
/// violation, latency (mean, p95), idle time, time in each state and adherence;
/// streamed.
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
    TenantState(state): TenantState,
    caller: Caller,
    QueryParams(query): QueryParams<ReportQuery>,
) -> Result<Response, Problem> {
    let now = state.engine.now();
    let window = window_from_query(query.from.as_deref(), query.to.as_deref(), now)?;
    let format = match query.format.as_deref() {
        None => ReportFormat::Csv,
        Some(text) => text
            .parse::<ReportFormat>()
            .map_err(|e| Problem::invalid_parameter("format", format!("format: {e}")))?,
    };
    let zone = zone_from_query(query.tz.as_deref())?;
    let team = super::rta::filter("team", query.team.as_deref())?;
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
    let mut report = Report::build(&pool, window, now, zone, &state.judging.current())
        .await
        .map_err(|e| Problem::internal(&e))?;
    if let Some(team) = team {
        let members = crate::store::roster::team_members(&pool, team).await?;
        report.keep_only(team, members);
    }
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
    let name = (format != ReportFormat::Html)
        .then(|| exports::file_name("compliance", window, format.extension()));
    let mut response = exports::answer(body, format.content_type(), name.as_deref());
    if format == ReportFormat::Csv {
        response.headers_mut().insert(
            header::LINK,
            describedby("definitions", Subject::Compliance, zone.map(|z| z.name())),
        );
    }
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DefinitionsQuery {
    /// Whose numbers: `compliance` (default; the compliance report), `analytics`
    /// (analytics results) or `wallboard` (its tiles, cards and badges, with each
    /// skill's service-level threshold).
    #[param(pattern = "^(compliance|analytics|wallboard)$")]
    report: Option<String>,
    /// `json` (default) or `csv` (`term,label,definition,unit,time_zone`).
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
    /// IANA time zone the report's times are in (as its `tz`); default UTC.
    tz: Option<String>,
}

/// What each number of an export means: how it is computed, its unit, the time zone,
/// and the adherence rules (count, version, grace) that judge adherence; for the
/// wallboard, each skill's service-level threshold and colours. The compliance report's
/// and analytics' CSV answers link here (`Link: …; rel="describedby"`).
#[utoipa::path(
    get,
    path = "/v1/reports/definitions",
    tag = "reports",
    security(("bearer" = [VIEWER])),
    params(DefinitionsQuery),
    responses(
        (status = 200, description = "The definitions", content(
            (Definitions = "application/json"),
            (String = "text/csv; charset=utf-8"),
        )),
    )
)]
pub async fn definitions(
    TenantState(state): TenantState,
    QueryParams(query): QueryParams<DefinitionsQuery>,
) -> Result<Response, Problem> {
    let subject = match query.report.as_deref() {
        None => Subject::Compliance,
        Some(text) => text
            .parse::<Subject>()
            .map_err(|e| Problem::invalid_parameter("report", format!("report: {e}")))?,
    };
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(Problem::invalid_parameter(
                "format",
                format!("format: unknown definitions format `{other}`; expected json or csv"),
            ));
        }
    };
    let zone = zone_from_query(query.tz.as_deref())?;
    let judging = state.judging.current();
    let definitions = match subject {
        Subject::Compliance => Definitions::compliance(&judging, zone),
        Subject::Analytics => Definitions::analytics(&judging, zone),
        Subject::Wallboard => {
            let skills: Vec<_> = state.board.borrow().skills.values().cloned().collect();
            let settings = state.live.settings();
            Definitions::wallboard(
                &judging,
                &skills,
                settings.service_level_good,
                settings.service_level_warning,
            )
        }
    };
    Ok(if csv {
        (
            [(header::CONTENT_TYPE, ReportFormat::Csv.content_type())],
            definitions.to_csv(),
        )
            .into_response()
    } else {
        axum::Json(definitions).into_response()
    })
}
