//! Authorised exceptions over HTTP: `POST /v1/adherence/authorisations` (a supervisor
//! excuses agents, or a team's members, from adherence for a time range, with a reason),
//! `GET` (those overlapping a window, withdrawn ones included) and
//! `DELETE /v1/adherence/authorisations/{id}` (withdraws one: it counts no more). Each
//! creation and withdrawal is audited with the caller's token name.
//!
//! `GET /v1/agents/{id}/adherence?from&to&format=json|svg&tz` is one agent's schedule
//! against its recorded states over a day (up to 31), judged as the compliance report
//! judges: the spans as JSON, or the report's drawing of them, which the wallboard shows
//! when a card is clicked.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::agents::AgentPath;
use super::auth::Caller;
use super::bulk::{agents_or_team, bulk_problem};
use super::error::Problem;
use super::extract::{PathParams, QueryParams, window_from_query, zone_from_query};
use super::json::{JsonBody, not_null};
use super::roles::{SUPERVISOR, VIEWER};
use super::tenancy::TenantState;
use super::validate::check_agent_id;
use super::{Routes, to_the_end, with_body_limit};
use crate::domain::AgentState;
use crate::domain::adherence::{AdherenceFigures, DaySpan};
use crate::engine::authorisations::{self, Authorise, AuthoriseError};
use crate::engine::bulk::BulkSelector;
use crate::report::day_view;
use crate::store::authorisations::{self as stored, AuthorisationRow};
use crate::store::{from_ms, to_ms};
use crate::time::{parse_instant, rfc3339};

/// The most authorisations one listing returns.
const LIST_LIMIT: i64 = 1_000;

/// The longest window of one agent's schedule against actual: a month of spans is
/// still small, though the view is made for a day.
const MAX_AGENT_WINDOW: TimeDelta = TimeDelta::days(31);

pub fn routes() -> Routes {
    vec![
        // Takes as many agents as a bulk job, so it takes the same bodies.
        with_body_limit(
            utoipa_axum::routes!(authorise),
            super::bulk::BODY_LIMIT_BYTES,
        ),
        utoipa_axum::routes!(list_authorisations),
        utoipa_axum::routes!(withdraw_authorisation),
        utoipa_axum::routes!(agent_day),
    ]
}

/// An authorisation asked for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthoriseBody {
    /// The agents to excuse (platform user ids; one listed twice counts once); or `team`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(min_items = 1, max_items = 10000)]
    agents: Option<Vec<String>>,
    /// Every agent of this team (team id, or its name in any letter case), as the
    /// platform lists them now; or `agents`. A team the platform does not have, or has
    /// without agents, is refused (422).
    #[serde(default, deserialize_with = "not_null")]
    team: Option<String>,
    /// Start of the excused time (RFC 3339).
    #[schema(format = DateTime)]
    from: String,
    /// End (exclusive), after `from` and at most 31 days later.
    #[schema(format = DateTime)]
    to: String,
    /// Why: 1 to 500 characters.
    #[schema(min_length = 1, max_length = 500, pattern = "[^\\s\\u0085]")]
    reason: String,
}

/// One authorisation as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthorisationView {
    id: String,
    agents: Vec<String>,
    /// The team asked for, when one was (`agents` are its members then).
    #[serde(skip_serializing_if = "Option::is_none")]
    team: Option<String>,
    from: String,
    to: String,
    reason: String,
    created_by: String,
    created_at: String,
    /// When it was withdrawn (it counts no more), and by whom.
    #[serde(skip_serializing_if = "Option::is_none")]
    withdrawn_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    withdrawn_by: Option<String>,
}

impl From<AuthorisationRow> for AuthorisationView {
    fn from(row: AuthorisationRow) -> AuthorisationView {
        AuthorisationView {
            agents: row.agent_ids(),
            id: row.id,
            team: row.team,
            from: rfc3339(from_ms(row.from_at)),
            to: rfc3339(from_ms(row.to_at)),
            reason: row.reason,
            created_by: row.created_by,
            created_at: rfc3339(from_ms(row.created_at)),
            withdrawn_at: row.withdrawn_at.map(|at| rfc3339(from_ms(at))),
            withdrawn_by: row.withdrawn_by,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AuthorisationList {
    /// Newest first, at most 1,000.
    authorisations: Vec<AuthorisationView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Start of the window: a date (midnight UTC) or an RFC 3339 instant; default 38
    /// days before `to` (so 7 days ago when `to` is absent too).
    from: Option<String>,
    /// End of the window, after `from`; default 31 days from now.
    to: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AuthorisationPath {
    /// The id the authorisation was created with.
    id: String,
}

/// Excuses agents from adherence for a time range: that time is neither in nor out of
/// adherence (reports show it as `authorised_seconds`), and an exception it covers
/// closes at the next sweep. Audited (`adherence.authorised`).
#[utoipa::path(
    post,
    path = "/v1/adherence/authorisations",
    tag = "adherence",
    security(("bearer" = [SUPERVISOR])),
    request_body = AuthoriseBody,
    responses(
        (status = 201, description = "Stored; in force at once", body = AuthorisationView),
        (status = 503, description = "The platform could not be asked for the team's agents"),
    )
)]
pub async fn authorise(
    TenantState(state): TenantState,
    caller: Caller,
    body: Result<JsonBody<AuthoriseBody>, Problem>,
) -> Result<Response, Problem> {
    let JsonBody(body) = body?;
    let (agents, team) = match agents_or_team(body.agents, body.team)? {
        BulkSelector::Agents(agents) => (at_most_allowed(agents)?, None),
        BulkSelector::Team(team) => (
            state.bulk.team(&team).await.map_err(bulk_problem)?,
            Some(team),
        ),
    };
    let instant = |field: &str, text: &str| {
        parse_instant(text).map_err(|e| Problem::invalid_field(field, format!("{field}: {e}")))
    };
    let request = Authorise {
        agents,
        team,
        from: instant("from", &body.from)?,
        to: instant("to", &body.to)?,
        reason: body.reason,
        actor: caller.name.to_string(),
    };
    let store = state.store.clone();
    let now = state.engine.now();
    let stored =
        to_the_end(async move { authorisations::authorise(&store, request, now).await }).await?;
    match stored {
        Ok(row) => {
            state.live.recheck_adherence();
            Ok((StatusCode::CREATED, Json(AuthorisationView::from(row))).into_response())
        }
        Err(AuthoriseError::Invalid { field, message }) => {
            Err(Problem::invalid_field(field, format!("{field}: {message}")))
        }
        Err(AuthoriseError::Store(e)) => Err(e.into()),
    }
}

/// `agents` when the document allows the list: at most [`authorisations::MAX_AGENTS`]
/// as sent, as `maxItems` counts them (the authorisation keeps each agent once, so a
/// list it calls too long is not taken for its repeats).
fn at_most_allowed(agents: Vec<String>) -> Result<Vec<String>, Problem> {
    let most = authorisations::MAX_AGENTS;
    if agents.len() > most {
        return Err(Problem::invalid_field(
            "agents",
            format!(
                "agents lists {} agents; an authorisation covers at most {most}",
                agents.len()
            ),
        ));
    }
    Ok(agents)
}

/// The authorisations overlapping a window, withdrawn ones included, newest first.
#[utoipa::path(
    get,
    path = "/v1/adherence/authorisations",
    tag = "adherence",
    security(("bearer" = [VIEWER])),
    params(ListQuery),
    responses((status = 200, description = "The authorisations", body = AuthorisationList))
)]
pub async fn list_authorisations(
    TenantState(state): TenantState,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Response, Problem> {
    let instant = |name: &str, text: Option<&str>| {
        text.map(|text| {
            parse_instant(text)
                .map_err(|e| Problem::invalid_parameter(name, format!("{name}: {e}")))
        })
        .transpose()
    };
    let to = instant("to", query.to.as_deref())?
        .unwrap_or_else(|| state.engine.now() + TimeDelta::days(31));
    let from = instant("from", query.from.as_deref())?.unwrap_or(to - TimeDelta::days(38));
    if from >= to {
        return Err(Problem::invalid_parameter("to", "to: must be after from"));
    }
    let rows =
        stored::overlapping(state.store.reader(), to_ms(from), to_ms(to), LIST_LIMIT).await?;
    Ok(Json(AuthorisationList {
        authorisations: rows.into_iter().map(AuthorisationView::from).collect(),
    })
    .into_response())
}

/// Withdraws an authorisation: it counts no more, for the past too (reports judge its
/// time again). Audited (`adherence.authorisation_withdrawn`).
#[utoipa::path(
    delete,
    path = "/v1/adherence/authorisations/{id}",
    tag = "adherence",
    security(("bearer" = [SUPERVISOR])),
    params(AuthorisationPath),
    responses(
        (status = 200, description = "Withdrawn", body = AuthorisationView),
        (status = 404, description = "No such authorisation"),
        (status = 409, description = "Withdrawn already"),
    )
)]
pub async fn withdraw_authorisation(
    TenantState(state): TenantState,
    caller: Caller,
    PathParams(AuthorisationPath { id }): PathParams<AuthorisationPath>,
) -> Result<Response, Problem> {
    let store = state.store.clone();
    let (asked, by, now) = (id.clone(), caller.name.to_string(), Utc::now());
    let withdrawn =
        to_the_end(async move { authorisations::withdraw(&store, &asked, &by, now).await })
            .await??;
    if let Some(row) = withdrawn {
        state.live.recheck_adherence();
        return Ok(Json(AuthorisationView::from(row)).into_response());
    }
    match stored::get(state.store.reader(), &id).await? {
        Some(_) => Err(Problem::new(
            StatusCode::CONFLICT,
            "withdrawn-already",
            "The authorisation was withdrawn already",
            format!("authorisation `{id}` was withdrawn already"),
        )),
        None => Err(Problem::not_found(format!("no authorisation `{id}`"))),
    }
}

/// The window, format and time zone of an agent's day.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DayQuery {
    /// Start: a date (2026-11-20, midnight UTC) or an RFC 3339 instant; default `to`
    /// minus 24 hours.
    from: Option<String>,
    /// End (exclusive), after `from` and at most 31 days later; default now.
    to: Option<String>,
    /// `json` (default: the spans and the figures they add up to) or `svg` (the
    /// compliance report's drawing: schedule, state and judgement lanes).
    #[param(pattern = "^(json|svg)$")]
    format: Option<String>,
    /// IANA time zone of the drawing's times (e.g. Europe/Paris); default UTC.
    tz: Option<String>,
}

/// One stretch of the day: a single schedule activity, a single recorded state and a
/// single judgement.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SpanView {
    start: String,
    /// Exclusive.
    end: String,
    /// What the schedule expected: WORK, MANDATORY_BREAK, OPTIONAL_BREAK or OFF_SHIFT.
    expected: &'static str,
    /// The schedule's title of the activity, when it names one.
    title: Option<String>,
    /// Whether a supervisor authorised the time.
    authorised: bool,
    /// The recorded state; absent where none is known.
    state: Option<AgentState>,
    reason: Option<String>,
    /// in, out, neutral, authorised, unobserved (scheduled, no state recorded),
    /// off_shift, or out_off_shift (logged in outside every shift).
    #[schema(pattern = "^(in|out|neutral|authorised|unobserved|off_shift|out_off_shift)$")]
    judged: &'static str,
}

impl From<&DaySpan> for SpanView {
    fn from(span: &DaySpan) -> SpanView {
        SpanView {
            start: rfc3339(span.start),
            end: rfc3339(span.end),
            expected: span.expected.as_str(),
            title: span.title.clone(),
            authorised: span.authorised,
            state: span.state,
            reason: span.reason.clone(),
            judged: span.judged.as_str(),
        }
    }
}

/// What the scheduled spans add up to: the agent's figures in the compliance report of
/// the same window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DayFigures {
    scheduled_seconds: f64,
    in_adherence_seconds: f64,
    out_of_adherence_seconds: f64,
    neutral_seconds: f64,
    authorised_seconds: f64,
    unobserved_seconds: f64,
    /// In-adherence time per judged time, in percent; absent without any.
    adherence_pct: Option<f64>,
    /// Adherence exceptions that opened in the window.
    exceptions: u32,
}

impl From<&AdherenceFigures> for DayFigures {
    fn from(f: &AdherenceFigures) -> DayFigures {
        let seconds = |ms: i64| ms as f64 / 1000.0;
        DayFigures {
            scheduled_seconds: seconds(f.scheduled_ms),
            in_adherence_seconds: seconds(f.in_adherence_ms),
            out_of_adherence_seconds: seconds(f.out_of_adherence_ms()),
            neutral_seconds: seconds(f.neutral_ms),
            authorised_seconds: seconds(f.authorised_ms),
            unobserved_seconds: seconds(f.unobserved_ms()),
            adherence_pct: f.adherence_pct(),
            exceptions: f.exceptions,
        }
    }
}

/// One agent's schedule against its recorded states.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DayView {
    agent_id: String,
    from: String,
    to: String,
    /// The version of the adherence rules that judged it; absent under the built-in
    /// kinds alone.
    rules_version: Option<String>,
    figures: DayFigures,
    /// Back to back, covering `[from, to)` exactly.
    spans: Vec<SpanView>,
}

/// One agent's schedule against its recorded states over a day (or up to 31): the scheduled
/// activities, the states and how each stretch was judged, on one time axis. The same
/// judging as the compliance report (the rules in force, authorisations, grace), so the
/// scheduled spans add up to the agent's figures there.
#[utoipa::path(
    get,
    path = "/v1/agents/{agent_id}/adherence",
    tag = "adherence",
    security(("bearer" = [VIEWER])),
    params(AgentPath, DayQuery),
    responses(
        (status = 200, description = "The spans (JSON) or their drawing (SVG)", content(
            (DayView = "application/json"),
            (String = "image/svg+xml"),
        )),
        (status = 404, description = "No shift of the agent is stored around the window"),
    )
)]
pub async fn agent_day(
    TenantState(state): TenantState,
    PathParams(AgentPath { agent_id }): PathParams<AgentPath>,
    QueryParams(query): QueryParams<DayQuery>,
) -> Result<Response, Problem> {
    check_agent_id(&agent_id)?;
    let svg = match query.format.as_deref() {
        None | Some("json") => false,
        Some("svg") => true,
        Some(other) => {
            return Err(Problem::invalid_parameter(
                "format",
                format!("format: unknown format `{other}`; expected json or svg"),
            ));
        }
    };
    let zone = zone_from_query(query.tz.as_deref())?;
    let now = state.engine.now();
    let window = window_from_query(query.from.as_deref(), query.to.as_deref(), now)?;
    if window.to - window.from > MAX_AGENT_WINDOW {
        return Err(Problem::invalid_parameter(
            "to",
            "to: at most 31 days after from",
        ));
    }
    super::extract::check_kept(
        &state.store,
        &[crate::store::retention::Kind::Intervals],
        window.from,
    )
    .await?;
    let judging = state.judging.current();
    let day = crate::report::agent_day(state.store.reader(), &agent_id, window, now, &judging)
        .await?
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no shift of agent {agent_id} is stored between {} and {}",
                rfc3339(window.from),
                rfc3339(window.to)
            ))
        })?;
    if svg {
        let drawing = day_view::svg(&agent_id, &day.spans, window, zone, true);
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "image/svg+xml")],
            drawing,
        )
            .into_response());
    }
    Ok(Json(DayView {
        agent_id,
        from: rfc3339(window.from),
        to: rfc3339(window.to),
        rules_version: judging.version.clone(),
        figures: DayFigures::from(&day.figures),
        spans: day.spans.iter().map(SpanView::from).collect(),
    })
    .into_response())
}
