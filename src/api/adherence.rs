//! Authorised exceptions over HTTP: `POST /v1/adherence/authorisations` (a supervisor
//! excuses agents, or a team's members, from adherence for a time range, with a reason),
//! `GET` (those overlapping a window, withdrawn ones included) and
//! `DELETE /v1/adherence/authorisations/{id}` (withdraws one: it counts no more). Each
//! creation and withdrawal is audited with the caller's token name.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::auth::Caller;
use super::bulk::{agents_or_team, bulk_problem};
use super::error::Problem;
use super::extract::{PathParams, QueryParams};
use super::json::JsonBody;
use super::roles::{SUPERVISOR, VIEWER};
use super::{ApiState, Routes};
use crate::engine::authorisations::{self, Authorise, AuthoriseError};
use crate::engine::bulk::Selector;
use crate::store::authorisations::{self as stored, AuthorisationRow};
use crate::store::{from_ms, to_ms};
use crate::time::{parse_instant, rfc3339};

/// The most authorisations one listing returns.
const LIST_LIMIT: i64 = 1_000;

pub fn routes() -> Routes {
    vec![
        utoipa_axum::routes!(authorise, list_authorisations),
        utoipa_axum::routes!(withdraw_authorisation),
    ]
}

/// An authorisation asked for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthoriseBody {
    /// The agents to excuse (platform user ids); or `team`.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 10000)]
    agents: Option<Vec<String>>,
    /// Every agent of this team (team id, or its name in any letter case), as the
    /// platform lists them now; or `agents`.
    #[serde(default)]
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
    /// Start of the window (RFC 3339); default 7 days before `to`.
    from: Option<String>,
    /// End of the window; default 31 days from now.
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
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<JsonBody<AuthoriseBody>, Problem>,
) -> Result<Response, Problem> {
    let JsonBody(body) = body?;
    let (agents, team) = match agents_or_team(body.agents, body.team)? {
        Selector::Agents(agents) => (agents, None),
        Selector::Team(team) => (
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
    // On its own task, as a change: a caller that leaves does not cut the record short.
    let stored = crate::tasks::spawn(
        async move { authorisations::authorise(&store, request, now).await }.in_current_span(),
    )
    .await
    .map_err(|e| Problem::internal(&e))?;
    match stored {
        Ok(row) => Ok((StatusCode::CREATED, Json(AuthorisationView::from(row))).into_response()),
        Err(AuthoriseError::Invalid { field, message }) => {
            Err(Problem::invalid_field(field, format!("{field}: {message}")))
        }
        Err(AuthoriseError::Store(e)) => Err(e.into()),
    }
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
    State(state): State<ApiState>,
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
    State(state): State<ApiState>,
    caller: Caller,
    PathParams(AuthorisationPath { id }): PathParams<AuthorisationPath>,
) -> Result<Response, Problem> {
    let store = state.store.clone();
    let (asked, by, now) = (id.clone(), caller.name.to_string(), Utc::now());
    let withdrawn = crate::tasks::spawn(
        async move { authorisations::withdraw(&store, &asked, &by, now).await }.in_current_span(),
    )
    .await
    .map_err(|e| Problem::internal(&e))??;
    if let Some(row) = withdrawn {
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
