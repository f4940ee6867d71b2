//! The `incontact` dialect of the simulator (docs/platform-api.md): the API NICE
//! publishes, played over the same generated tenant, activity, clock and faults as
//! the v2 dialect, so one simulated contact center answers in both dialects at once.
//!
//! Like the rest of `sim`, it imports nothing of wfmd outside `sim`: every body is
//! written from the contract. What the contract leaves open is a switch in
//! [`IncontactKnobs`] (its "(knob)" items), so a client can be tested against each
//! alternative: how an unchanged delta poll answers, the token failure status, the field
//! casing of unavailable codes, the propagation lag, the logout delay and whether 429s
//! carry `Retry-After`.
//!
//! Layout: `auth` serves discovery and the password grant (with its `id_token`),
//! `routes` the API under `{api_endpoint}/inContactAPI/services/v{NN}.0/`, and this
//! file the knobs, the dialect's fault gate and the mapping of the tenant's states to
//! agent state ids and unavailable codes.

mod auth;
mod routes;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Simulator;
use super::faults::{self, Refusal};
use super::tenant::{SimAgent, default_reason};

/// The access key the simulated tenant accepts (the API user's key id and secret).
pub const ACCESS_KEY_ID: &str = "wfmd-sim-access-key";
pub const ACCESS_KEY_SECRET: &str = "wfmd-sim-access-key-secret";
/// The tenant id carried by the `id_token` and known to the discovery endpoint.
pub const TENANT_ID: &str = "11ee0000-5eed-4000-8000-0000000000c9";

/// How an unchanged delta poll of `/agents/states` answers (the contract allows all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnchangedAnswer {
    /// 200 with an empty `agentStates` and a new `lastPollTime`.
    #[default]
    EmptyList,
    /// 204, no body.
    NoContent,
    /// 304, no body.
    NotModified,
}

/// The switches for everything the contract leaves open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncontactKnobs {
    pub unchanged_answer: UnchangedAnswer,
    /// The status of a refused token request: 400 or 401.
    pub token_failure_status: u16,
    /// Unavailable codes spelt `outStateId`/`outStateName` (older versions, NICE's SDK),
    /// with numbers and booleans as strings, instead of v34's `outstateId`/`outstateName`.
    pub legacy_casing: bool,
    /// How long a change takes to show in `/agents/states`, in milliseconds (0–3000).
    pub lag_ms: u64,
    /// How long after a 202 logout the agent reaches LoggedOut, in milliseconds.
    pub logout_delay_ms: u64,
    /// Whether 429 answers carry `Retry-After` (it often is absent on the platform).
    pub retry_after: bool,
    /// Whether the tenant has WFM: without it `POST /schedules/export` answers 403 (as
    /// it does while [`crate::sim::SCHEDULES_SCOPE`] is denied).
    pub wfm: bool,
    /// The largest page `/agents` and `/teams` answer (`top` is capped to it).
    pub max_page: usize,
}

impl Default for IncontactKnobs {
    fn default() -> Self {
        IncontactKnobs {
            unchanged_answer: UnchangedAnswer::EmptyList,
            token_failure_status: 401,
            legacy_casing: false,
            lag_ms: 0,
            logout_delay_ms: 0,
            retry_after: true,
            wfm: true,
            max_page: 100,
        }
    }
}

/// The dialect's mutable state, kept inside the simulator's one lock.
#[derive(Debug, Default)]
pub(crate) struct IncontactState {
    pub knobs: IncontactKnobs,
    /// Agents logged out by the API, and when they reach LoggedOut.
    pending_logouts: Vec<(String, DateTime<Utc>)>,
    /// Refresh tokens issued with access tokens.
    refresh_tokens: Vec<String>,
}

impl Simulator {
    /// Replaces the `incontact` dialect's switches.
    pub fn set_incontact_knobs(&self, knobs: IncontactKnobs) {
        self.lock().incontact.knobs = knobs;
    }

    /// The `incontact` dialect's switches in force.
    pub fn incontact_knobs(&self) -> IncontactKnobs {
        self.lock().incontact.knobs.clone()
    }

    /// The platform's stable WFM user id (`userID`) of an agent.
    pub fn wfm_user_id(agent_id: &str) -> String {
        user_uuid(agent_id)
    }

    /// Like [`Simulator::sync`], and also carries out API logouts that are due.
    pub(crate) fn ic_sync(&self) -> (std::sync::MutexGuard<'_, super::SimState>, DateTime<Utc>) {
        let (mut st, now) = self.sync();
        let pending = std::mem::take(&mut st.incontact.pending_logouts);
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, at)| *at <= now);
        st.incontact.pending_logouts = later;
        for (id, at) in due {
            let Some(agent) = st.tenant.agents.get(&id) else {
                continue;
            };
            if agent.state == "LOGGED_OUT" {
                continue;
            }
            // Never before the agent's own latest change, so its log stays in order.
            let at = at.max(agent.changed_at);
            st.change_state(&id, "LOGGED_OUT", default_reason("LOGGED_OUT"), at);
        }
        (st, now)
    }
}

/// The dialect's API routes, behind its own gate; the caller serves them where the v2
/// API is (under the tenant's cluster path).
pub(crate) fn api_router(sim: &Simulator) -> Router<Simulator> {
    routes::api_router().layer(axum::middleware::from_fn_with_state(sim.clone(), gate))
}

/// Routes at the auth base (the root): discovery, the token endpoint, the knobs under
/// `/_sim`, and, when the tenant lives on a cluster path, the API paths at the root
/// answering 401 (a client that ignored discovery).
pub(crate) fn root_router(on_cluster: bool) -> Router<Simulator> {
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(auth::openid_configuration),
        )
        .route(
            "/.well-known/cxone-configuration",
            get(auth::cxone_configuration),
        )
        .route("/auth/token", post(auth::token))
        .route("/_sim/incontact", get(control_get).post(control_set));
    if on_cluster {
        app.route("/inContactAPI/{*rest}", any(wrong_host))
    } else {
        app
    }
}

async fn control_get(State(sim): State<Simulator>) -> Response {
    axum::Json(sim.incontact_knobs()).into_response()
}

/// `POST /_sim/incontact` with the whole set of knobs; absent fields take their
/// defaults (unlike `/_sim/faults`, which keeps them), so a body says everything in force.
async fn control_set(State(sim): State<Simulator>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<IncontactKnobs>(&body) {
        Ok(knobs) => {
            sim.set_incontact_knobs(knobs);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            IcError::acd(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()).into_response()
        }
    }
}

async fn wrong_host(State(sim): State<Simulator>) -> Response {
    {
        let mut st = sim.lock();
        st.stats.api_requests += 1;
        st.stats.unauthorized += 1;
    }
    IcError::acd(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "this tenant's API is on the host named by cxone-configuration's api_endpoint",
    )
    .into_response()
}

/// An error answer in one of the platform's shapes.
#[derive(Debug)]
pub(crate) struct IcError {
    status: StatusCode,
    shape: Shape,
    code: String,
    message: String,
    retry_after: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `{error, error_description}` (the ACD services).
    Acd,
    /// `{errorCode, errorMessage}` (the newer services).
    Newer,
    /// No body: only the `icStatusDescription` header.
    HeaderOnly,
}

impl IcError {
    pub fn acd(status: StatusCode, code: &str, message: impl Into<String>) -> IcError {
        IcError::with_shape(status, Shape::Acd, code, message)
    }

    pub fn newer(status: StatusCode, code: &str, message: impl Into<String>) -> IcError {
        IcError::with_shape(status, Shape::Newer, code, message)
    }

    pub fn header_only(status: StatusCode, message: impl Into<String>) -> IcError {
        IcError::with_shape(status, Shape::HeaderOnly, "", message)
    }

    fn with_shape(
        status: StatusCode,
        shape: Shape,
        code: &str,
        message: impl Into<String>,
    ) -> IcError {
        IcError {
            status,
            shape,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry_after(mut self, secs: Option<u64>) -> IcError {
        self.retry_after = secs;
        self
    }
}

impl IntoResponse for IcError {
    fn into_response(self) -> Response {
        let mut response = match self.shape {
            Shape::Acd => (
                self.status,
                axum::Json(json!({"error": self.code, "error_description": self.message})),
            )
                .into_response(),
            Shape::Newer => (
                self.status,
                axum::Json(json!({"errorCode": self.code, "errorMessage": self.message})),
            )
                .into_response(),
            Shape::HeaderOnly => self.status.into_response(),
        };
        // The platform repeats the message in this header on every error; some answers
        // carry nothing else.
        if let Ok(value) = HeaderValue::from_str(&self.message) {
            response.headers_mut().insert("icStatusDescription", value);
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The v2 gate's order (count, token, budget, scripted and random faults, latency) with
/// this dialect's error shapes and its `Retry-After` switch.
async fn gate(State(sim): State<Simulator>, req: Request, next: Next) -> Response {
    let with_header = sim.lock().incontact.knobs.retry_after;
    faults::gate_with(&sim, req, next, |refusal| match refusal {
        Refusal::Unauthorized => IcError::acd(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "missing, unknown, revoked or expired access token",
        )
        .into_response(),
        Refusal::RateLimited(secs) => IcError::newer(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "tenant request budget exceeded",
        )
        .retry_after(with_header.then_some(secs))
        .into_response(),
        Refusal::Injected {
            status,
            retry_after,
        } => {
            let retry_after = retry_after.filter(|_| with_header);
            let error = if status.is_server_error() {
                IcError::header_only(status, "Service Unavailable")
            } else {
                IcError::newer(status, "InjectedFault", "injected fault")
            };
            error.retry_after(retry_after).into_response()
        }
        Refusal::ShuttingDown => shutting_down(),
    })
    .await
}

fn shutting_down() -> Response {
    IcError::header_only(StatusCode::SERVICE_UNAVAILABLE, "simulator shutting down").into_response()
}

/// One unavailable code of the simulated tenant.
pub(crate) struct Code {
    pub id: u32,
    pub name: &'static str,
    pub active: bool,
    pub acw: bool,
    pub timeout_mins: u32,
}

/// The tenant's unavailable codes. Names match the tenant's reasons once upper-cased
/// with `_` for spaces (`System Idle` is `SYSTEM_IDLE`).
pub(crate) const CODES: [Code; 8] = [
    code(1, "Break", true, false, 15),
    code(2, "Lunch", true, false, 60),
    code(3, "Meeting", true, false, 0),
    code(4, "Training", true, false, 0),
    code(5, "Adhoc", true, false, 0),
    code(6, "System Idle", true, false, 0),
    code(7, "Wrap Up", true, true, 5),
    code(8, "Old Break", false, false, 0),
];

const fn code(id: u32, name: &'static str, active: bool, acw: bool, timeout_mins: u32) -> Code {
    Code {
        id,
        name,
        active,
        acw,
        timeout_mins,
    }
}

/// The codes assigned to a team: all but `Training` on even-numbered teams, so teams
/// differ as they do on a real tenant.
pub(crate) fn team_codes(team_id: &str) -> impl Iterator<Item = &'static Code> {
    let even = team_id
        .rsplit('_')
        .next()
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n % 2 == 0);
    CODES
        .iter()
        .filter(move |c| !(even && c.name == "Training"))
}

/// The tenant reason a code stands for (`System Idle` -> `SYSTEM_IDLE`).
pub(crate) fn reason_of(code: &Code) -> String {
    code.name.to_uppercase().replace(' ', "_")
}

fn code_for_reason(reason: &str) -> Option<&'static Code> {
    CODES
        .iter()
        .find(|c| c.active && !c.acw && reason_of(c).eq_ignore_ascii_case(reason))
}

/// The platform's view of one agent state (from the tenant's ground truth).
pub(crate) struct IcState {
    pub id: u8,
    pub name: &'static str,
    pub out_state: Option<(u32, String)>,
    pub acw: bool,
}

/// The tenant's state and reason as the platform reports them.
pub(crate) fn ic_state(state: &str, reason: &str, wrap_up: Option<&str>) -> IcState {
    let unavailable = |out_state| IcState {
        id: 2,
        name: "Unavailable",
        out_state,
        acw: false,
    };
    match state {
        "LOGGED_OUT" => IcState {
            id: 0,
            name: "LoggedOut",
            out_state: None,
            acw: false,
        },
        "READY" => IcState {
            id: 1,
            name: "Available",
            out_state: None,
            acw: false,
        },
        "ON_CONTACT" => IcState {
            id: 3,
            name: "InboundContact",
            out_state: None,
            acw: false,
        },
        "ACW" => IcState {
            acw: true,
            ..unavailable(Some((7, wrap_up.unwrap_or("Wrap Up").to_owned())))
        },
        _ => unavailable(Some(match code_for_reason(reason) {
            Some(c) => (c.id, c.name.to_owned()),
            None => (0, reason.to_owned()),
        })),
    }
}

/// The agent's state change visible at `now` with propagation lag `lag`: the newest
/// logged change at least `lag` old (the oldest kept one when all are newer).
pub(crate) fn visible_change(
    agent: &SimAgent,
    now: DateTime<Utc>,
    lag: TimeDelta,
) -> Option<&super::SimStateChange> {
    let cutoff = now - lag;
    agent
        .state_log
        .iter()
        .rev()
        .find(|c| c.at <= cutoff)
        .or_else(|| agent.state_log.first())
}

/// A skill's service-level settings, as the skill listing and the skill activity both
/// give them (`serviceLevelThreshold`, `serviceLevelGoal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceLevelTarget {
    /// Seconds within which a contact counts as answered in time.
    pub threshold_secs: u32,
    /// The share to reach, in percent, as the platform writes it.
    pub goal_percent: u32,
}

/// The service-level settings of skill `skill_id`. They differ from skill to skill (by
/// the skill's number), as on a real tenant, so a client that mixed skills up, or took
/// one skill's settings for all, shows it.
pub fn service_level_target(skill_id: &str) -> ServiceLevelTarget {
    const SETTINGS: [(u32, u32); 4] = [(20, 80), (30, 90), (45, 85), (60, 75)];
    let n: usize = skill_id.trim_start_matches("s_").parse().unwrap_or(0);
    let (threshold_secs, goal_percent) = SETTINGS[n % SETTINGS.len()];
    ServiceLevelTarget {
        threshold_secs,
        goal_percent,
    }
}

/// A stable UUID-shaped WFM user id for an agent id (FNV-1a of the id).
fn user_uuid(agent_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in agent_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let hi = (h >> 32) as u32;
    let mid = (h >> 16) as u16;
    let lo = h as u16;
    format!(
        "{hi:08x}-{mid:04x}-4{:03x}-8{:03x}-{:012x}",
        lo & 0x0fff,
        (h >> 4) & 0x0fff,
        h & 0xffff_ffff_ffff
    )
}

/// Schedules a logout of `id` after the configured delay; applied by [`Simulator::ic_sync`].
pub(crate) fn schedule_logout(st: &mut super::SimState, id: &str, now: DateTime<Utc>) {
    let delay = TimeDelta::milliseconds(st.incontact.knobs.logout_delay_ms as i64);
    st.incontact.pending_logouts.retain(|(a, _)| a != id);
    st.incontact
        .pending_logouts
        .push((id.to_owned(), now + delay));
}

/// Whether a logout of `id` is on its way.
pub(crate) fn logout_pending(st: &super::SimState, id: &str) -> bool {
    st.incontact.pending_logouts.iter().any(|(a, _)| a == id)
}

#[cfg(test)]
mod tests;
