//! Adherence exceptions to review, over HTTP:
//! `GET /v1/adherence/exceptions?from&to&state&team&review` lists them, newest first,
//! with their review; `POST /v1/adherence/exceptions/{id}/review` excuses or upholds one
//! with a note (see [`crate::engine::exception_reviews`]): audited, announced by the
//! `adherence.exception_reviewed` event, and, excused, its span counts as authorised in
//! every report from then on.

use axum::Json;
use axum::http::StatusCode;
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::Problem;
use super::extract::{PathParams, QueryParams};
use super::json::JsonBody;
use super::roles::{SUPERVISOR, VIEWER};
use super::tenancy::TenantState;
use super::{Routes, to_the_end};
use crate::domain::events::ReviewDecision;
use crate::engine::exception_reviews::{self, MAX_NOTE_CHARS, ReviewError, ReviewRequest};
use crate::store::exceptions::{self, Listing, ReviewedRow};
use crate::store::{from_ms, roster, to_ms};
use crate::time::{parse_instant, rfc3339};

/// The most exceptions one listing returns.
const LIST_LIMIT: i64 = 1_000;

/// The window a listing covers when `from` is not given: the week before `to`.
const DEFAULT_WINDOW: TimeDelta = TimeDelta::days(7);

pub fn routes() -> Routes {
    vec![
        utoipa_axum::routes!(list_exceptions),
        utoipa_axum::routes!(review_exception),
    ]
}

/// `value` of query parameter `name` when it is one of `allowed`.
fn choice<'a>(
    name: &str,
    value: Option<&'a str>,
    allowed: &[&str],
) -> Result<Option<&'a str>, Problem> {
    match value {
        Some(value) if !allowed.contains(&value) => Err(Problem::invalid_parameter(
            name,
            format!(
                "{name} must be one of {}, got `{value}`",
                allowed.join(", ")
            ),
        )),
        other => Ok(other),
    }
}

/// Which exceptions.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExceptionsQuery {
    /// Those whose span (from when the deviation began to when the exception closed, or
    /// on while it is open) reaches past this: a date (midnight UTC) or an RFC 3339
    /// instant; default 7 days before `to`.
    from: Option<String>,
    /// And begins before this; after `from`; default now.
    to: Option<String>,
    /// `open`, `severe` (turned severe, open or closed), `closed` or `all` (default).
    #[param(pattern = "^(open|severe|closed|all)$")]
    state: Option<String>,
    /// Only this team's agents: its id, or its name in any letter case, as the agent
    /// roster has it.
    #[param(min_length = 1, max_length = 128)]
    team: Option<String>,
    /// `pending` (not reviewed yet), `excused` or `upheld`; default any.
    #[param(pattern = "^(pending|excused|upheld)$")]
    review: Option<String>,
}

/// A review of an exception.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewView {
    /// `excused` or `upheld`.
    decision: ReviewDecision,
    note: Option<String>,
    /// Who reviewed (the token's name).
    by: String,
    /// When (RFC 3339).
    at: String,
}

/// An adherence exception with its review.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExceptionView {
    id: String,
    agent_id: String,
    /// `working_in_mandatory_break`, `logged_in_outside_shift`, `not_working_in_shift`
    /// or `out_of_rule`.
    kind: String,
    /// When the deviation began: the span an excuse covers starts here.
    started_at: String,
    /// When the sweep opened it (the deviation had lasted its grace).
    opened_at: String,
    /// When it closed; `null` while open.
    closed_at: Option<String>,
    /// When it turned severe; `null` if it did not.
    severe_at: Option<String>,
    /// The latest review; `null` while none.
    review: Option<ReviewView>,
}

impl From<ReviewedRow> for ExceptionView {
    fn from(row: ReviewedRow) -> ExceptionView {
        let at = |ms: i64| rfc3339(from_ms(ms));
        let review = match (
            row.review_decision
                .as_deref()
                .map(str::parse::<ReviewDecision>),
            row.reviewed_by,
            row.reviewed_at,
        ) {
            (Some(Ok(decision)), Some(by), Some(when)) => Some(ReviewView {
                decision,
                note: row.review_note,
                by,
                at: at(when),
            }),
            _ => None,
        };
        let exception = row.exception;
        ExceptionView {
            id: exception.id,
            agent_id: exception.agent_id,
            kind: exception.kind,
            started_at: at(exception.started_at),
            opened_at: at(exception.opened_at),
            closed_at: exception.closed_at.map(at),
            severe_at: exception.severe_at.map(at),
            review,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExceptionList {
    /// Newest first (by when they opened), at most 1,000.
    exceptions: Vec<ExceptionView>,
}

/// The adherence exceptions of a window, newest first, with their reviews.
#[utoipa::path(
    get,
    path = "/v1/adherence/exceptions",
    tag = "adherence",
    security(("bearer" = [VIEWER])),
    params(ExceptionsQuery),
    responses((status = 200, description = "The exceptions", body = ExceptionList))
)]
pub async fn list_exceptions(
    TenantState(state): TenantState,
    QueryParams(query): QueryParams<ExceptionsQuery>,
) -> Result<Json<ExceptionList>, Problem> {
    let instant = |name: &str, text: Option<&str>| {
        text.map(|text| {
            parse_instant(text)
                .map_err(|e| Problem::invalid_parameter(name, format!("{name}: {e}")))
        })
        .transpose()
    };
    let to = instant("to", query.to.as_deref())?.unwrap_or_else(|| state.engine.now());
    let from = instant("from", query.from.as_deref())?.unwrap_or(to - DEFAULT_WINDOW);
    if from >= to {
        return Err(Problem::invalid_parameter("to", "to: must be after from"));
    }
    let wanted_state = choice(
        "state",
        query.state.as_deref(),
        &["open", "severe", "closed", "all"],
    )?
    .unwrap_or("all");
    let review = choice(
        "review",
        query.review.as_deref(),
        &["pending", "excused", "upheld"],
    )?;
    let agents = match super::rta::filter("team", query.team.as_deref())? {
        Some(team) => {
            let members = roster::team_members(state.store.reader(), team).await?;
            Some(serde_json::to_string(&members).expect("ids serialize"))
        }
        None => None,
    };
    let listing = Listing {
        from: to_ms(from),
        to: to_ms(to),
        state: wanted_state,
        review,
        agents: agents.as_deref(),
        limit: LIST_LIMIT,
    };
    let rows = exceptions::list(state.store.reader(), &listing).await?;
    Ok(Json(ExceptionList {
        exceptions: rows.into_iter().map(ExceptionView::from).collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ExceptionPath {
    /// The exception's id (as listed, and as its `adherence.exception` events name it).
    id: String,
}

/// A supervisor's decision on an exception.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// `excused`: its span counts as authorised in every report from now on; `upheld`:
    /// it counts as out of adherence, as before.
    decision: ReviewDecision,
    /// Why, up to 1,000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    note: Option<String>,
    /// An exception reviewed already is reviewed again only with `true` (the new
    /// review replaces the old); default `false`.
    #[serde(default)]
    replace: bool,
}

/// Excuses or upholds an adherence exception, with a note. Audited
/// (`adherence.exception_reviewed`, the token's name as actor) and announced by the
/// `adherence.exception_reviewed` event. Excused, the exception's span (from when the
/// deviation began to when the exception closed, or will close) counts as authorised in
/// every report from then on: the compliance report, the adherence summary, an agent's
/// day, analytics.
#[utoipa::path(
    post,
    path = "/v1/adherence/exceptions/{id}/review",
    tag = "adherence",
    security(("bearer" = [SUPERVISOR])),
    params(ExceptionPath),
    request_body = ReviewBody,
    responses(
        (status = 200, description = "Reviewed", body = ExceptionView),
        (status = 404, description = "No such exception"),
        (status = 409, description = "Reviewed already (send `\"replace\": true` to replace the review)"),
    )
)]
pub async fn review_exception(
    TenantState(state): TenantState,
    caller: Caller,
    PathParams(ExceptionPath { id }): PathParams<ExceptionPath>,
    body: Result<JsonBody<ReviewBody>, Problem>,
) -> Result<Json<ExceptionView>, Problem> {
    let JsonBody(body) = body?;
    let request = ReviewRequest {
        exception_id: id,
        decision: body.decision,
        note: body.note,
        by: caller.name.to_string(),
        replace: body.replace,
    };
    let (store, now) = (state.store.clone(), state.engine.now());
    let reviewed =
        to_the_end(async move { exception_reviews::review(&store, request, now).await }).await?;
    match reviewed {
        Ok(row) => Ok(Json(ExceptionView::from(row))),
        Err(error @ ReviewError::NoteTooLong(_)) => {
            Err(Problem::invalid_field("note", error.to_string()))
        }
        Err(error @ ReviewError::NotFound(_)) => Err(Problem::not_found(error.to_string())),
        Err(ReviewError::Reviewed(current)) => {
            let detail = format!(
                "adherence exception `{}` was {} already; send \"replace\": true to replace \
                 the review",
                current.exception.id,
                current.review_decision.as_deref().unwrap_or("reviewed")
            );
            let view = ExceptionView::from(*current);
            Err(Problem::new(
                StatusCode::CONFLICT,
                "reviewed-already",
                "The exception was reviewed already",
                detail,
            )
            .with("exception", view))
        }
        Err(ReviewError::Store(e)) => Err(e.into()),
    }
}

// The document's `maxLength` of a note (a literal there) is the engine's limit.
const _: () = assert!(MAX_NOTE_CHARS == 1000);
