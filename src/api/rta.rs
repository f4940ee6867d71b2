//! Real-time adherence over HTTP: `GET /v1/adherence/now?team&skill`, one row per
//! managed agent in scope with its verdict now (see [`crate::live::AdherenceRow`]),
//! which the feed's `adherence.changed` messages keep live; and
//! `GET /v1/adherence/summary?team&tz`, the figures of today, yesterday, the week and
//! the month to date (see [`crate::engine::adherence_summary`]).
//!
//! Served from the live feed's view of the agents and the store: asking costs no
//! platform call however often it is asked.

use axum::Json;
use serde::{Deserialize, Serialize};

use super::Routes;
use super::error::Problem;
use super::extract::{QueryParams, zone_from_query};
use super::roles::VIEWER;
use super::tenancy::TenantState;
use super::validate::MAX_ID_LEN;
use crate::engine::adherence_summary::{self, SummaryWindows, Totals};
use crate::live::{AdherenceRow, AgentView};
use crate::time::rfc3339;

pub fn routes() -> Routes {
    vec![
        utoipa_axum::routes!(adherence_now),
        utoipa_axum::routes!(adherence_summary),
    ]
}

/// Whose rows.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NowQuery {
    /// Only this team's agents: its id, or its name in any letter case.
    #[param(min_length = 1, max_length = 128)]
    team: Option<String>,
    /// Only the agents with this skill: its id, or its name in any letter case (as the
    /// skill tiles name it).
    #[param(min_length = 1, max_length = 128)]
    skill: Option<String>,
}

/// The rows of real-time adherence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdherenceNow {
    /// The instant the verdicts are for (RFC 3339).
    generated_at: String,
    /// Out of adherence first (longest out first), then the rest by name.
    agents: Vec<AdherenceRow>,
}

/// `value` of query parameter `name`, when given: not blank, at most [`MAX_ID_LEN`]
/// characters.
pub(super) fn filter<'a>(name: &str, value: Option<&'a str>) -> Result<Option<&'a str>, Problem> {
    match value.map(str::trim) {
        Some(text) if text.is_empty() || text.chars().count() > MAX_ID_LEN => {
            Err(Problem::invalid_parameter(
                name,
                format!("{name} must be an id or name of 1 to {MAX_ID_LEN} characters"),
            ))
        }
        other => Ok(other),
    }
}

/// Every managed agent in scope with its adherence now: its state, the schedule's
/// activity, the verdict (`in`, `out`, `neutral`, `authorised`, `unscheduled`), since
/// when it is out, its open exception (and whether severe) and its adherence today,
/// judged by the tenant's adherence rules as the compliance sweep and reports judge.
/// The feed's `adherence.changed` messages carry each row that changes.
#[utoipa::path(
    get,
    path = "/v1/adherence/now",
    tag = "adherence",
    security(("bearer" = [VIEWER])),
    params(NowQuery),
    responses((status = 200, description = "The rows", body = AdherenceNow))
)]
pub async fn adherence_now(
    TenantState(state): TenantState,
    QueryParams(query): QueryParams<NowQuery>,
) -> Result<Json<AdherenceNow>, Problem> {
    let team = filter("team", query.team.as_deref())?;
    let skill = filter("skill", query.skill.as_deref())?;
    // The board and the agents' views, as current as while a client watches.
    state.live.catch_up().await;
    // A skill may be named as its tile names it; the agents list skill ids.
    let skill_ids: Option<Vec<String>> = skill.map(|skill| {
        let board = state.board.borrow();
        let mut ids: Vec<String> = board
            .skills
            .values()
            .filter(|tile| tile.skill_name.eq_ignore_ascii_case(skill))
            .map(|tile| tile.skill_id.clone())
            .collect();
        ids.push(skill.to_owned());
        ids
    });
    let wanted = |agent: &AgentView| {
        let in_team = team.is_none_or(|team| {
            agent.team_id.as_deref() == Some(team)
                || agent
                    .team
                    .as_deref()
                    .is_some_and(|name| name.eq_ignore_ascii_case(team))
        });
        let has_skill = skill_ids
            .as_ref()
            .is_none_or(|ids| agent.skills.iter().any(|s| ids.contains(s)));
        in_team && has_skill
    };
    let now = state.engine.now();
    let judging = state.judging.current();
    let agents = state.live.adherence_rows(wanted, &judging, now).await?;
    Ok(Json(AdherenceNow {
        generated_at: rfc3339(now),
        agents,
    }))
}

/// Whose figures, and the zone of their days.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// Only this team's agents: its id, or its name in any letter case.
    #[param(min_length = 1, max_length = 128)]
    team: Option<String>,
    /// IANA time zone whose midnights start the days (e.g. Europe/Paris); default UTC,
    /// as the reports'.
    tz: Option<String>,
}

/// One period's adherence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeriodFigures {
    /// In-adherence time per judged time (in and out), in percent; `null` without any.
    adherence_pct: Option<f64>,
    /// Time inside shifts (breaks included).
    scheduled_seconds: f64,
    /// Scheduled time whose recorded state met the schedule.
    in_seconds: f64,
    /// Scheduled time whose recorded state did not.
    out_seconds: f64,
    /// Scheduled time a supervisor authorised, or whose exception was excused.
    authorised_seconds: f64,
    /// Scheduled time an adherence rule counts neither way.
    neutral_seconds: f64,
}

impl From<&Totals> for PeriodFigures {
    fn from(totals: &Totals) -> PeriodFigures {
        let seconds = |ms: i64| ms as f64 / 1000.0;
        PeriodFigures {
            adherence_pct: totals.adherence_pct(),
            scheduled_seconds: seconds(totals.scheduled_ms),
            in_seconds: seconds(totals.in_ms),
            out_seconds: seconds(totals.out_ms),
            authorised_seconds: seconds(totals.authorised_ms),
            neutral_seconds: seconds(totals.neutral_ms),
        }
    }
}

/// The periods of the summary.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SummaryPeriods {
    /// From midnight to now.
    today: PeriodFigures,
    /// Yesterday, midnight to midnight.
    yesterday: PeriodFigures,
    /// From Monday's midnight to now.
    week_to_date: PeriodFigures,
    /// From the 1st's midnight to now.
    month_to_date: PeriodFigures,
}

/// The adherence summary.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdherenceSummary {
    periods: SummaryPeriods,
}

/// Adherence of every agent (or one team) today, yesterday, this week and this month
/// to date, days starting at midnight in `tz`: the sums of the compliance report's
/// per-agent figures over the same windows (unobserved time counts nowhere).
#[utoipa::path(
    get,
    path = "/v1/adherence/summary",
    tag = "adherence",
    security(("bearer" = [VIEWER])),
    params(SummaryQuery),
    responses((status = 200, description = "The periods' figures", body = AdherenceSummary))
)]
pub async fn adherence_summary(
    TenantState(state): TenantState,
    QueryParams(query): QueryParams<SummaryQuery>,
) -> Result<Json<AdherenceSummary>, Problem> {
    let team = filter("team", query.team.as_deref())?;
    let zone = zone_from_query(query.tz.as_deref())?.unwrap_or(chrono_tz::UTC);
    let now = state.engine.now();
    let periods = SummaryWindows::of(now, zone);
    let judging = state.judging.current();
    let summary =
        adherence_summary::summary(state.store.reader(), &periods, team, now, &judging).await?;
    Ok(Json(AdherenceSummary {
        periods: SummaryPeriods {
            today: (&summary.today).into(),
            yesterday: (&summary.yesterday).into(),
            week_to_date: (&summary.week_to_date).into(),
            month_to_date: (&summary.month_to_date).into(),
        },
    }))
}
