//! The API of the `incontact` dialect under `/inContactAPI/services/v{NN}.0/`: agents,
//! teams, skills, unavailable codes, state changes and logout, the delta feed of agent
//! states, skill activity and the WFM schedule export. Every body is written from
//! docs/platform-api.md; the knobs in [`super::IncontactKnobs`] pick among the options it
//! leaves open.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    CODES, Code, IcError, UnchangedAnswer, ic_state, logout_pending, reason_of, schedule_logout,
    service_level_target, team_codes, user_uuid, visible_change,
};
use crate::sim::tenant::SimAgent;
use crate::sim::wire::ts;
use crate::sim::{SimState, Simulator};

const BASE: &str = "/inContactAPI/services/{version}";

pub(crate) fn api_router() -> Router<Simulator> {
    let r = |path: &str| format!("{BASE}{path}");
    Router::new()
        .route(&r("/agents"), get(list_agents))
        .route(&r("/agents/states"), get(agent_states))
        .route(&r("/agents/{agentId}/state"), post(set_state))
        .route(&r("/agents/{agentId}/logout"), post(logout))
        .route(&r("/teams"), get(list_teams))
        .route(&r("/teams/{teamId}/agents"), get(team_agents))
        .route(
            &r("/teams/{teamId}/unavailable-codes"),
            get(team_unavailable_codes),
        )
        .route(&r("/unavailable-codes"), get(unavailable_codes))
        .route(&r("/skills"), get(list_skills))
        .route(&r("/skills/activity"), get(skill_activity))
        .route(&r("/schedules/export"), post(export_schedules))
        .route_layer(axum::middleware::from_fn(known_version))
}

/// Answers the platform's 404 for a version segment it does not serve, before any
/// route's handler sees the request.
async fn known_version(
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Result<Response, IcError> {
    check_version(params.get("version").map_or("", String::as_str))?;
    Ok(next.run(request).await)
}

/// `v34.0`, `v2.0`…: what the platform accepts as a version segment.
fn check_version(version: &str) -> Result<(), IcError> {
    let ok = version
        .strip_prefix('v')
        .and_then(|v| v.strip_suffix(".0"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(IcError::acd(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no API version {version}"),
        ))
    }
}

fn first_last(name: &str) -> (&str, &str) {
    name.split_once(' ').unwrap_or((name, ""))
}

fn agent_json(a: &SimAgent) -> Value {
    let (first, last) = first_last(&a.name);
    json!({
        "agentId": a.id,
        "userName": format!("{}@wfmd-sim.example", a.id),
        "firstName": first,
        "lastName": last,
        "userID": user_uuid(&a.id),
        "teamId": a.team_id,
        "teamName": a.team_name,
        "isActive": true,
        "timeZone": a.timezone,
    })
}

#[derive(Deserialize)]
struct Paging {
    top: Option<usize>,
    skip: Option<usize>,
}

/// One page of `items` with `totalRecords` and `_links`; 204 when the page is empty.
fn page(
    sim: &Simulator,
    headers: &HeaderMap,
    version: &str,
    path: &str,
    key: &str,
    items: Vec<Value>,
    paging: &Paging,
) -> Response {
    let max = sim.lock().incontact.knobs.max_page.max(1);
    let top = paging.top.unwrap_or(max).clamp(1, max);
    let skip = paging.skip.unwrap_or(0);
    let total = items.len();
    let chunk: Vec<Value> = items.into_iter().skip(skip).take(top).collect();
    if chunk.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let origin = super::auth::origin(sim, headers);
    let cluster = sim.cluster().map(|c| format!("/{c}")).unwrap_or_default();
    let link = |skip: usize| {
        format!("{origin}{cluster}/inContactAPI/services/{version}{path}?top={top}&skip={skip}")
    };
    let mut links = json!({"self": link(skip), "next": null, "previous": null});
    if skip + top < total {
        links["next"] = json!(link(skip + top));
    }
    if skip > 0 {
        links["previous"] = json!(link(skip.saturating_sub(top)));
    }
    axum::Json(json!({"totalRecords": total, "_links": links, key: chunk})).into_response()
}

async fn list_agents(
    State(sim): State<Simulator>,
    Path(version): Path<String>,
    headers: HeaderMap,
    Query(paging): Query<Paging>,
) -> Result<Response, IcError> {
    let agents: Vec<Value> = {
        let (st, _) = sim.ic_sync();
        st.tenant.agents.values().map(agent_json).collect()
    };
    Ok(page(
        &sim, &headers, &version, "/agents", "agents", agents, &paging,
    ))
}

/// The tenant's teams, ordered by id number (`t_2` before `t_10`).
fn teams(agents: &BTreeMap<String, SimAgent>) -> Vec<(String, String)> {
    let mut teams: Vec<(String, String)> = agents
        .values()
        .map(|a| (a.team_id.clone(), a.team_name.clone()))
        .collect();
    let number = |id: &str| id.rsplit('_').next().and_then(|n| n.parse::<u64>().ok());
    teams.sort_by_key(|(id, _)| (number(id), id.clone()));
    teams.dedup();
    teams
}

async fn list_teams(
    State(sim): State<Simulator>,
    Path(version): Path<String>,
    headers: HeaderMap,
    Query(paging): Query<Paging>,
) -> Result<Response, IcError> {
    let teams: Vec<Value> = {
        let (st, _) = sim.ic_sync();
        teams(&st.tenant.agents)
            .into_iter()
            .map(|(id, name)| json!({"teamId": id, "teamName": name, "isActive": true}))
            .collect()
    };
    Ok(page(
        &sim, &headers, &version, "/teams", "teams", teams, &paging,
    ))
}

async fn team_agents(
    State(sim): State<Simulator>,
    Path((_, team_id)): Path<(String, String)>,
) -> Result<Response, IcError> {
    let (st, _) = sim.ic_sync();
    let members: Vec<&SimAgent> = st
        .tenant
        .agents
        .values()
        .filter(|a| a.team_id == team_id)
        .collect();
    let Some(first) = members.first() else {
        return Err(unknown_team(&team_id));
    };
    let agents: Vec<Value> = members.iter().map(|a| agent_json(a)).collect();
    Ok(axum::Json(json!({"teams": [{
        "teamId": team_id,
        "teamName": first.team_name,
        "agents": agents,
    }]}))
    .into_response())
}

fn unknown_team(team_id: &str) -> IcError {
    IcError::acd(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Team {team_id} not found"),
    )
}

/// A value as the legacy services sent it: a string.
fn legacy(value: Value, legacy: bool) -> Value {
    match value {
        Value::Number(n) if legacy => Value::String(n.to_string()),
        Value::Bool(b) if legacy => Value::String(if b { "True" } else { "False" }.to_owned()),
        other => other,
    }
}

#[derive(Deserialize)]
struct ActiveOnly {
    #[serde(rename = "activeOnly")]
    active_only: Option<String>,
}

async fn team_unavailable_codes(
    State(sim): State<Simulator>,
    Path((_, team_id)): Path<(String, String)>,
    Query(query): Query<ActiveOnly>,
) -> Result<Response, IcError> {
    let (st, _) = sim.ic_sync();
    let old = st.incontact.knobs.legacy_casing;
    let team_name = st
        .tenant
        .agents
        .values()
        .find(|a| a.team_id == team_id)
        .map(|a| a.team_name.clone())
        .ok_or_else(|| unknown_team(&team_id))?;
    let active_only = query
        .active_only
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let (id_key, name_key) = if old {
        ("outStateId", "outStateName")
    } else {
        ("outstateId", "outstateName")
    };
    let codes: Vec<Value> = team_codes(&team_id)
        .filter(|c| c.active || !active_only)
        .map(|c: &Code| {
            json!({
                id_key: legacy(json!(c.id), old),
                name_key: c.name,
                "isActive": legacy(json!(c.active), old),
                "isAcw": legacy(json!(c.acw), old),
                "agentTimeoutMins": legacy(json!(c.timeout_mins), old),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "teamId": team_id,
        "teamName": team_name,
        "unavailableCodes": codes,
    }))
    .into_response())
}

async fn unavailable_codes(State(sim): State<Simulator>) -> Result<Response, IcError> {
    let old = sim.lock().incontact.knobs.legacy_casing;
    let codes: Vec<Value> = CODES
        .iter()
        .map(|c| {
            json!({
                "id": legacy(json!(c.id), old),
                "name": c.name,
                "isActive": legacy(json!(c.active), old),
                "isACW": legacy(json!(c.acw), old),
                "agentTimeout": legacy(json!(c.timeout_mins), old),
            })
        })
        .collect();
    Ok(axum::Json(json!({"unavailableCodes": codes})).into_response())
}

/// The skills of the tenant, from every agent's skills, sorted.
fn skills(agents: &BTreeMap<String, SimAgent>) -> Vec<String> {
    let mut skills: Vec<String> = agents.values().flat_map(|a| a.skills.clone()).collect();
    skills.sort();
    skills.dedup();
    skills
}

fn skill_name(id: &str) -> String {
    format!("Skill {}", id.trim_start_matches("s_"))
}

async fn list_skills(State(sim): State<Simulator>) -> Result<Response, IcError> {
    let (st, _) = sim.ic_sync();
    let skills: Vec<Value> = skills(&st.tenant.agents)
        .into_iter()
        .map(|id| {
            let target = service_level_target(&id);
            json!({
                "skillId": id,
                "skillName": skill_name(&id),
                "mediaTypeId": 4,
                "mediaTypeName": "Phone Call",
                "isActive": true,
                "serviceLevelThreshold": target.threshold_secs,
                "serviceLevelGoal": target.goal_percent,
            })
        })
        .collect();
    if skills.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(axum::Json(json!({"totalRecords": skills.len(), "skills": skills})).into_response())
}

#[derive(Deserialize)]
struct StateQuery {
    state: Option<String>,
    #[serde(rename = "outStateId")]
    out_state_id: Option<String>,
}

/// The tenant's agent `id`, or the platform's answer for an unknown agent.
fn known_agent<'a>(st: &'a SimState, id: &str) -> Result<&'a SimAgent, IcError> {
    st.tenant.agents.get(id).ok_or_else(|| {
        IcError::acd(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Agent {id} not found"),
        )
    })
}

fn session_not_started() -> IcError {
    IcError::acd(
        StatusCode::NOT_FOUND,
        "AgentSessionNotStarted",
        "Agent session not started",
    )
}

/// `POST /agents/{agentId}/state?state=Available|Unavailable[&outStateId=N]` → 200, no body.
async fn set_state(
    State(sim): State<Simulator>,
    Path((_, agent_id)): Path<(String, String)>,
    Query(query): Query<StateQuery>,
) -> Result<Response, IcError> {
    let bad = |message: String| IcError::acd(StatusCode::BAD_REQUEST, "InvalidParameter", message);
    let (mut st, now) = sim.ic_sync();
    let agent = known_agent(&st, &agent_id)?;
    let team_id = agent.team_id.clone();
    let (state, reason) = match query.state.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("available") => ("READY", "WORKING".to_owned()),
        Some(s) if s.eq_ignore_ascii_case("unavailable") => {
            let id: u32 = match query.out_state_id.as_deref() {
                None | Some("") | Some("0") => {
                    return Err(bad("an outStateId is required for Unavailable".into()));
                }
                Some(raw) => raw
                    .parse()
                    .map_err(|_| bad(format!("invalid outStateId {raw}")))?,
            };
            let code = team_codes(&team_id)
                .find(|c| c.id == id && c.active)
                .ok_or_else(|| bad(format!("invalid outStateId {id} for team {team_id}")))?;
            if code.acw {
                return Err(IcError::acd(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "an ACW code needs a contact",
                ));
            }
            ("NOT_READY", reason_of(code))
        }
        other => {
            return Err(bad(format!(
                "invalid state {}; Available or Unavailable",
                other.unwrap_or("(none)")
            )));
        }
    };
    if agent.state == "LOGGED_OUT" || logout_pending(&st, &agent_id) {
        return Err(session_not_started());
    }
    if matches!(agent.state.as_str(), "ON_CONTACT" | "ACW") {
        return Err(IcError::acd(
            StatusCode::CONFLICT,
            "Conflict",
            format!("agent {agent_id} is handling a contact"),
        ));
    }
    st.change_state(&agent_id, state, &reason, now);
    Ok(StatusCode::OK.into_response())
}

/// `POST /agents/{agentId}/logout` → 202; the agent logs out after the logout delay.
async fn logout(
    State(sim): State<Simulator>,
    Path((_, agent_id)): Path<(String, String)>,
) -> Result<Response, IcError> {
    let (mut st, now) = sim.ic_sync();
    let agent = known_agent(&st, &agent_id)?;
    if agent.state == "LOGGED_OUT" {
        return Err(session_not_started());
    }
    if agent.state == "ON_CONTACT" {
        return Err(IcError::acd(
            StatusCode::CONFLICT,
            "Conflict",
            format!("agent {agent_id} is handling a contact"),
        ));
    }
    schedule_logout(&mut st, &agent_id, now);
    drop(st);
    // A zero delay still happens "later": at the next look at the tenant.
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Deserialize)]
struct Since {
    #[serde(rename = "updatedSince")]
    updated_since: Option<String>,
}

/// `GET /agents/states?updatedSince=` — every agent (first poll, epoch) or the agents
/// whose visible state changed at or after `updatedSince` (inclusive: a change stamped
/// exactly at the last poll time is answered again rather than lost).
async fn agent_states(
    State(sim): State<Simulator>,
    Query(since): Query<Since>,
) -> Result<Response, IcError> {
    let since = match since.updated_since.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(
            DateTime::parse_from_rfc3339(raw)
                .map_err(|_| {
                    IcError::acd(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter",
                        format!("invalid updatedSince {raw}"),
                    )
                })?
                .with_timezone(&Utc),
        )
        .filter(|t| t.timestamp() > 0),
    };
    let (st, now) = sim.ic_sync();
    let knobs = st.incontact.knobs.clone();
    let lag = TimeDelta::milliseconds(knobs.lag_ms as i64);
    let mut contact = 0u64;
    let states: Vec<Value> = st
        .tenant
        .agents
        .values()
        .filter_map(|a| {
            let change = visible_change(a, now, lag)?;
            let updated = change.at + lag;
            if since.is_some_and(|s| updated < s) {
                return None;
            }
            let ic = ic_state(
                &change.state,
                &change.reason,
                change.wrap_up_code.as_deref(),
            );
            contact += 1;
            let (out_id, out_name) = match &ic.out_state {
                Some((id, name)) => (json!(id), json!(name)),
                None => (json!(0), Value::Null),
            };
            let on_contact = ic.id == 3;
            Some(json!({
                "agentId": a.id,
                "agentStateId": ic.id,
                "agentStateName": ic.name,
                "outStateId": out_id,
                "outStateDescription": out_name,
                "isACW": ic.acw,
                "startDate": ts(change.at),
                "lastUpdateTime": ts(updated),
                "teamId": a.team_id,
                "teamName": a.team_name,
                "skillId": if on_contact { json!(a.skills.first()) } else { Value::Null },
                "skillName": if on_contact { json!(change.queue) } else { Value::Null },
                "contactId": if on_contact { json!(1_000_000 + contact) } else { Value::Null },
            }))
        })
        .collect();
    drop(st);
    if states.is_empty() && since.is_some() {
        match knobs.unchanged_answer {
            UnchangedAnswer::NoContent => return Ok(StatusCode::NO_CONTENT.into_response()),
            UnchangedAnswer::NotModified => return Ok(StatusCode::NOT_MODIFIED.into_response()),
            UnchangedAnswer::EmptyList => {}
        }
    }
    Ok(axum::Json(json!({
        "totalRecords": states.len(),
        "_links": {"self": null, "next": null, "previous": null},
        "lastPollTime": ts(now),
        "agentStates": states,
    }))
    .into_response())
}

/// `GET /skills/activity` — per skill, counts of its agents by state and a queue that
/// follows the clock (deterministic, so two looks at one instant agree).
async fn skill_activity(State(sim): State<Simulator>) -> Result<Response, IcError> {
    let (st, now) = sim.ic_sync();
    let mut counts: HashMap<&str, [u32; 5]> = HashMap::new();
    for a in st.tenant.agents.values() {
        for s in &a.skills {
            let c = counts.entry(s.as_str()).or_default();
            match a.state.as_str() {
                "LOGGED_OUT" => continue,
                "READY" => c[0] += 1,
                "ON_CONTACT" => c[2] += 1,
                "ACW" => c[3] += 1,
                _ => c[1] += 1,
            }
            c[4] += 1;
        }
    }
    let minute = now.timestamp() / 60;
    let activity: Vec<Value> = skills(&st.tenant.agents)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let c = counts.get(id.as_str()).copied().unwrap_or_default();
            let queued = ((minute + i as i64 * 7) % 5) as u32;
            let wait = (queued as i64) * 40;
            let target = service_level_target(&id);
            json!({
                "skillId": id,
                "skillName": skill_name(&id),
                "agentsAvailable": c[0],
                "agentsUnavailable": c[1],
                "agentsWorking": c[2],
                "agentsACW": c[3],
                "agentsLoggedIn": c[4],
                "queueCount": queued,
                "contactsActive": c[2],
                "earliestQueueTime": if queued > 0 { json!(ts(now - TimeDelta::seconds(wait))) } else { Value::Null },
                "serviceLevel": 100 - (queued * 4),
                "serviceLevelGoal": target.goal_percent,
                "serviceLevelThreshold": target.threshold_secs,
            })
        })
        .collect();
    Ok(axum::Json(json!({"lastPollTime": ts(now), "skillActivity": activity})).into_response())
}

#[derive(Deserialize)]
struct ExportRequest {
    #[serde(rename = "startDate")]
    start_date: String,
    #[serde(rename = "endDate")]
    end_date: String,
    #[serde(rename = "userID")]
    user_id: String,
}

/// The activity title of a break in the WFM schedule.
fn break_title(kind: &str, mandatory: bool) -> &'static str {
    match (kind, mandatory) {
        ("LUNCH", _) => "Lunch",
        (_, true) => "Break",
        _ => "Short Break",
    }
}

/// `POST /schedules/export` — one agent, at most 7 days.
async fn export_schedules(State(sim): State<Simulator>, body: Bytes) -> Result<Response, IcError> {
    let bad = |m: String| IcError::newer(StatusCode::BAD_REQUEST, "InvalidRequest", m);
    let request: ExportRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid export request: {e}")))?;
    let date = |s: &str| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad(format!("invalid date {s}")))
    };
    let (start, end) = (date(&request.start_date)?, date(&request.end_date)?);
    let days = (end - start).num_days() + 1;
    if !(1..=7).contains(&days) {
        return Err(bad(format!(
            "startDate..endDate must span 1 to 7 days, not {days}"
        )));
    }
    let (st, _) = sim.ic_sync();
    if !st.incontact.knobs.wfm || st.lines.denied_scopes.contains(crate::sim::SCHEDULES_SCOPE) {
        return Err(IcError::newer(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "the tenant has no WFM access",
        ));
    }
    let from = start.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let to = (end + TimeDelta::days(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let schedules: Vec<Value> = st
        .tenant
        .agents
        .values()
        .filter(|a| user_uuid(&a.id) == request.user_id)
        .map(|a| {
            let shifts: Vec<Value> = if a.shift_end > from && a.shift_start < to {
                vec![shift_json(a)]
            } else {
                Vec::new()
            };
            json!({"userId": request.user_id, "shifts": shifts})
        })
        .collect();
    Ok(axum::Json(json!({"agentSchedules": schedules})).into_response())
}

/// The shift as WFM intervals: open work between the breaks and the titled activities
/// (a `Team meeting`: work, not open for contacts), the breaks with `work = false`.
fn shift_json(a: &SimAgent) -> Value {
    let breaks = a.breaks.iter().map(|b| {
        let code = json!({"title": break_title(&b.kind, b.mandatory), "id": 200});
        (b.start, b.end, false, code)
    });
    let activities = a
        .activities
        .iter()
        .map(|t| (t.start, t.end, true, json!({"title": t.title, "id": 300})));
    let mut pieces: Vec<_> = breaks
        .chain(activities)
        .filter(|(start, end, ..)| *end > a.shift_start && *start < a.shift_end)
        .collect();
    pieces.sort_by_key(|(start, ..)| *start);
    let mut intervals = Vec::new();
    let mut at = a.shift_start;
    let open = |start: DateTime<Utc>, end: DateTime<Utc>| {
        json!({"start": ts(start), "end": ts(end), "open": true, "work": true,
               "activityCode": {"title": "Open", "id": 100}})
    };
    for (start, end, work, code) in pieces {
        if start > at {
            intervals.push(open(at, start));
        }
        intervals.push(json!({
            "start": ts(start),
            "end": ts(end),
            "open": false,
            "work": work,
            "activityCode": code,
        }));
        at = at.max(end);
    }
    if a.shift_end > at {
        intervals.push(open(at, a.shift_end));
    }
    json!({"start": ts(a.shift_start), "end": ts(a.shift_end), "activityIntervals": intervals})
}
