//! Serde types of v2 (docs/platform-api.md), and their conversion into the types
//! the rest of wfmd uses.
//!
//! Field names are the platform's, exactly. Unknown fields are ignored, and every field
//! the contract does not guarantee is an `Option`, so a sparse answer parses. These types
//! stay inside `cxone`: callers see [`Agent`], [`AgentSnapshot`], [`Schedule`] and
//! [`BreakStatus`] only.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::cxone::core::classify::{ErrorDetails, scope_in_challenge};
use crate::cxone::{Agent, AgentSnapshot, CxoneError, Queue, Skill};
use crate::domain::metrics::{QueueTile, SkillTile};
use crate::domain::{AgentState, BreakStatus, BreakWindow, Schedule, ScheduleStatus};

/// Longest server message carried into an error; platform error pages can be large.
const MESSAGE_LIMIT: usize = 200;

/// The token endpoint's answer (OAuth names, hence snake_case).
#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    pub access_token: SecretString,
    /// Seconds; OAuth only recommends it, so its absence is tolerated (see `auth`).
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub resource_server_base_uri: Option<String>,
}

impl TokenAnswer {
    /// Parses the answer without ever echoing its content: a malformed answer may still
    /// carry the token, and serde's messages quote the values they reject.
    pub fn parse(body: &[u8]) -> Result<TokenAnswer, CxoneError> {
        serde_json::from_slice(body).map_err(|e| {
            CxoneError::Decode(format!(
                "token answer is not the expected JSON ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

/// `GET /api/v2/users`.
#[derive(Deserialize)]
pub(crate) struct UsersAnswer {
    pub users: Vec<UserJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserJson {
    pub user_id: String,
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub team_name: Option<String>,
    #[serde(default)]
    pub skills: Option<Vec<String>>,
}

impl From<UserJson> for Agent {
    fn from(user: UserJson) -> Agent {
        Agent {
            id: user.user_id,
            name: user.user_name.unwrap_or_default(),
            team_id: user.team_id,
            team_name: user.team_name,
            skills: user.skills.unwrap_or_default(),
        }
    }
}

/// `GET`/`POST /api/v2/users/{userId}/state`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StateAnswer {
    #[serde(default)]
    pub user_id: Option<String>,
    pub agent_state: String,
    #[serde(default)]
    pub reason_code: Option<String>,
    #[serde(default)]
    pub status_changed_timestamp: Option<DateTime<Utc>>,
}

impl StateAnswer {
    /// `requested_id` stands in when the answer leaves `userId` out.
    pub fn into_snapshot(self, requested_id: &str) -> Result<AgentSnapshot, CxoneError> {
        let state = self
            .agent_state
            .parse::<AgentState>()
            .map_err(|e| CxoneError::Decode(format!("agentState: {e}")))?;
        Ok(AgentSnapshot {
            agent_id: self.user_id.unwrap_or_else(|| requested_id.to_owned()),
            state,
            reason: self.reason_code,
            changed_at: self.status_changed_timestamp,
        })
    }
}

/// Body of `POST /api/v2/users/{userId}/state`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetStateBody<'a> {
    pub state: &'a str,
    pub reason_code: &'a str,
}

/// `GET /api/v2/schedules/users/{userId}`. Only `status` is guaranteed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScheduleAnswer {
    pub status: String,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub shift_start: Option<DateTime<Utc>>,
    #[serde(default)]
    pub shift_end: Option<DateTime<Utc>>,
    #[serde(default)]
    pub breaks: Option<Vec<BreakJson>>,
}

#[derive(Deserialize)]
pub(crate) struct BreakJson {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub mandatory: Option<bool>,
}

impl TryFrom<ScheduleAnswer> for Schedule {
    type Error = CxoneError;

    fn try_from(answer: ScheduleAnswer) -> Result<Schedule, CxoneError> {
        let status = match answer.status.as_str() {
            "ACTIVE" => ScheduleStatus::Active,
            "INACTIVE" => ScheduleStatus::Inactive,
            other => {
                return Err(CxoneError::Decode(format!(
                    "unknown schedule status `{other}`; expected ACTIVE or INACTIVE"
                )));
            }
        };
        // A break whose `mandatory` flag is missing cannot be judged from the schedule.
        // Dropping the whole list (rather than guessing `false`) makes the engine ask the
        // breaks endpoint, which is authoritative, instead of allowing READY by mistake.
        let breaks = answer.breaks.and_then(|breaks| {
            breaks
                .into_iter()
                .map(|b| {
                    Some(BreakWindow {
                        start: b.start,
                        end: b.end,
                        kind: b.kind.unwrap_or_default(),
                        mandatory: b.mandatory?,
                    })
                })
                .collect::<Option<Vec<_>>>()
        });
        Ok(Schedule {
            status,
            timezone: answer.timezone,
            shift_start: answer.shift_start,
            shift_end: answer.shift_end,
            breaks,
            // The v2 schedule names no work activities (docs/platform-api.md): its only
            // titles are the breaks' `type`.
            activities: Vec::new(),
        })
    }
}

/// `GET /api/v2/breaks/users/{userId}/status`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BreakStatusAnswer {
    pub mandatory_break_required: bool,
    #[serde(default)]
    pub break_start: Option<DateTime<Utc>>,
    #[serde(default)]
    pub break_end: Option<DateTime<Utc>>,
}

impl From<BreakStatusAnswer> for BreakStatus {
    fn from(answer: BreakStatusAnswer) -> BreakStatus {
        BreakStatus {
            mandatory_break_required: answer.mandatory_break_required,
            break_start: answer.break_start,
            break_end: answer.break_end,
        }
    }
}

/// The metrics wfmd asks a subscription for.
pub(crate) const SUBSCRIPTION_METRICS: [&str; 7] = [
    "userId",
    "userName",
    "agentState",
    "queueName",
    "wrapUpCode",
    "statusChangedTimestamp",
    "teamName",
];

#[derive(Debug, Serialize)]
pub(crate) struct SubscriptionBody<'a> {
    pub name: &'a str,
    pub interval: u64,
    pub view: ViewBody<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ViewBody<'a> {
    pub id: &'static str,
    pub metrics: &'static [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterBody<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct FilterBody<'a> {
    #[serde(rename = "userId")]
    pub user_id: &'a [String],
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionAnswer {
    pub subscription_id: String,
    #[serde(default)]
    pub interval: Option<u64>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SnapshotAnswer {
    #[serde(default)]
    pub data: Vec<ObservedJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObservedJson {
    pub user_id: String,
    pub agent_state: String,
    #[serde(default)]
    pub queue_name: Option<String>,
    #[serde(default)]
    pub wrap_up_code: Option<String>,
    #[serde(default)]
    pub status_changed_timestamp: Option<DateTime<Utc>>,
}

impl ObservedJson {
    /// `None` (with a warning) for a state this build does not know, so one odd agent
    /// does not spoil the whole poll.
    pub fn into_observed(self) -> Option<crate::cxone::ObservedAgent> {
        match self.agent_state.parse::<AgentState>() {
            Ok(state) => Some(crate::cxone::ObservedAgent {
                agent_id: self.user_id,
                state,
                queue: self.queue_name,
                wrap_up_code: self.wrap_up_code,
                changed_at: self.status_changed_timestamp,
            }),
            Err(e) => {
                tracing::warn!(agent = %self.user_id, error = %e, "skipping an agent in the poll");
                None
            }
        }
    }
}

/// An id the platform may send as a JSON number (`1234`) or string (`"s_100"`); kept
/// as a string either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireId(pub String);

impl<'de> Deserialize<'de> for WireId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<WireId, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Whole(u64),
            Signed(i64),
        }
        Ok(WireId(
            match Raw::deserialize(deserializer).map_err(|_| {
                serde::de::Error::custom("expected an id (a string or a whole number)")
            })? {
                Raw::Text(text) => text,
                Raw::Whole(n) => n.to_string(),
                Raw::Signed(n) => n.to_string(),
            },
        ))
    }
}

/// `GET /api/v2/skills`.
#[derive(Deserialize)]
pub(crate) struct SkillsAnswer {
    #[serde(default)]
    pub skills: Vec<SkillJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SkillJson {
    pub skill_id: WireId,
    #[serde(default)]
    pub skill_name: Option<String>,
}

impl From<SkillJson> for Skill {
    fn from(skill: SkillJson) -> Skill {
        Skill {
            id: skill.skill_id.0,
            name: skill.skill_name.unwrap_or_default(),
        }
    }
}

/// `GET /api/v2/queues`.
#[derive(Deserialize)]
pub(crate) struct QueuesAnswer {
    #[serde(default)]
    pub queues: Vec<QueueJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueJson {
    pub queue_id: WireId,
    #[serde(default)]
    pub name: Option<String>,
}

impl From<QueueJson> for Queue {
    fn from(queue: QueueJson) -> Queue {
        Queue {
            id: queue.queue_id.0,
            name: queue.name.unwrap_or_default(),
        }
    }
}

/// `GET …/real-time-data/skill-data`. Durations are in seconds.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SkillDataAnswer {
    #[serde(default)]
    pub skill_data: Vec<SkillDataJson>,
}

/// Counts are read as numbers of any kind (`12`, `12.0`), since only their meaning is
/// fixed by the contract; a missing or null figure is 0.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SkillDataJson {
    pub skill_id: WireId,
    #[serde(default)]
    pub skill_name: Option<String>,
    #[serde(default)]
    pub contacts_queued: Option<f64>,
    #[serde(default)]
    pub contacts_active: Option<f64>,
    #[serde(default)]
    pub longest_queue_duration: Option<f64>,
    #[serde(default)]
    pub service_level: Option<f64>,
    #[serde(default)]
    pub agents_available: Option<f64>,
    #[serde(default)]
    pub agents_staffed: Option<f64>,
    #[serde(default)]
    pub agents_on_contact: Option<f64>,
    #[serde(default, rename = "agentsInACW")]
    pub agents_in_acw: Option<f64>,
    #[serde(default)]
    pub current_estimated_wait_time: Option<f64>,
}

impl SkillDataJson {
    /// The tile, stamped with the platform's time of the answer.
    pub fn into_tile(self, sampled_at: DateTime<Utc>) -> SkillTile {
        SkillTile {
            skill_id: self.skill_id.0,
            skill_name: self.skill_name.unwrap_or_default(),
            contacts_queued: count(self.contacts_queued),
            contacts_active: count(self.contacts_active),
            longest_wait_secs: count(self.longest_queue_duration),
            service_level: service_level(self.service_level),
            // The skill-data contract carries neither: the threshold is a setting of the
            // skill that this call does not report.
            service_level_threshold_secs: None,
            service_level_goal: None,
            agents_available: count(self.agents_available),
            agents_staffed: count(self.agents_staffed),
            agents_on_contact: count(self.agents_on_contact),
            agents_acw: count(self.agents_in_acw),
            estimated_wait_secs: self.current_estimated_wait_time.map(|s| count(Some(s))),
            sampled_at,
        }
    }
}

/// Body of `POST /api/v2/reporting/queues/realtime`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueStatsBody<'a> {
    pub queue_ids: &'a [String],
}

/// `POST /api/v2/reporting/queues/realtime`. `averageWaitTime` is in milliseconds.
#[derive(Deserialize)]
pub(crate) struct QueueStatsAnswer {
    #[serde(default)]
    pub queues: Vec<QueueStatsJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueStatsJson {
    pub queue_id: WireId,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub agents_logged_on: Option<f64>,
    #[serde(default)]
    pub agents_available: Option<f64>,
    #[serde(default)]
    pub agents_busy: Option<f64>,
    #[serde(default)]
    pub calls_waiting: Option<f64>,
    #[serde(default)]
    pub average_wait_time: Option<f64>,
    #[serde(default)]
    pub service_level: Option<f64>,
}

impl QueueStatsJson {
    pub fn into_tile(self, sampled_at: DateTime<Utc>) -> QueueTile {
        QueueTile {
            queue_id: self.queue_id.0,
            name: self.name.unwrap_or_default(),
            agents_logged_on: count(self.agents_logged_on),
            agents_available: count(self.agents_available),
            agents_busy: count(self.agents_busy),
            contacts_waiting: count(self.calls_waiting),
            average_wait_ms: Some(
                self.average_wait_time
                    .filter(|ms| ms.is_finite() && *ms > 0.0)
                    .map_or(0, |ms| ms.round() as u64),
            ),
            service_level: service_level(self.service_level),
            sampled_at,
        }
    }
}

/// A count or a duration in whole units: negative, NaN and missing figures are 0.
fn count(value: Option<f64>) -> u32 {
    match value {
        Some(v) if v.is_finite() && v > 0.0 => v.round().min(f64::from(u32::MAX)) as u32,
        _ => 0,
    }
}

/// A service level as a share (0.0–1.0). The contract gives a share; a value above 1
/// and up to 100 can only be a percentage, so it is read as one rather than shown as
/// 8,200 %. Anything else is no figure.
fn service_level(value: Option<f64>) -> Option<f64> {
    match value? {
        v if (0.0..=1.0).contains(&v) => Some(v),
        v if v > 1.0 && v <= 100.0 => Some(v / 100.0),
        _ => None,
    }
}

/// Parses a 2xx answer; the error names what was being read, never the whole body.
pub(crate) fn parse<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T, CxoneError> {
    serde_json::from_slice(body).map_err(|e| CxoneError::Decode(format!("{what}: {e}")))
}

/// What a v2 error answer says: its body's `message` (else `error`) and missing scope,
/// else the scope of the `WWW-Authenticate` challenge.
pub(crate) fn error_details(headers: &HeaderMap, body: &[u8]) -> ErrorDetails {
    let details = ErrorDetails::from_body(body);
    ErrorDetails {
        scope: details.scope.or_else(|| scope_in_challenge(headers)),
        message: details.message,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, alias = "missingScope", alias = "requiredScope")]
    scope: Option<String>,
}

impl ErrorDetails {
    /// Reads `message` (else `error`) from a JSON body; a non-JSON body is used as text.
    pub fn from_body(body: &[u8]) -> ErrorDetails {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => {
                let message = parsed
                    .message
                    .filter(|m| !m.trim().is_empty())
                    .or(parsed.error)
                    .unwrap_or_default();
                let scope = parsed
                    .scope
                    .filter(|s| !s.trim().is_empty())
                    .or_else(|| scope_in_text(&message));
                ErrorDetails {
                    message: truncate(message.trim()),
                    scope,
                }
            }
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                ErrorDetails {
                    message: truncate(text.trim()),
                    scope: scope_in_text(&text),
                }
            }
        }
    }
}

/// Finds a scope named in prose such as "missing scope users:state:write" or
/// "requires scope `AdminApi`": the word after "scope", if it looks like a scope name
/// (quoted, or containing a colon) rather than ordinary prose.
pub(crate) fn scope_in_text(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("scope") {
        let mut rest = &text[from + found + "scope".len()..];
        rest = rest.strip_prefix('s').unwrap_or(rest);
        let rest = rest.trim_start_matches([' ', ':', '=']);
        let quoted = rest.starts_with(['`', '\'', '"']);
        let candidate: String = rest
            .trim_start_matches(['`', '\'', '"'])
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '`' | '\'' | '"' | ','))
            .collect();
        let candidate = candidate.trim_end_matches(['.', ')', ';']);
        if !candidate.is_empty() && (quoted || candidate.contains(':')) {
            return Some(candidate.to_owned());
        }
        from += found + "scope".len();
    }
    None
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MESSAGE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn full_token_answer_parses_with_base_uri() {
        let answer = TokenAnswer::parse(
            br#"{"access_token":"tok","token_type":"bearer","expires_in":3600,
                 "resource_server_base_uri":"https://api-c9.example.com/","scope":"x"}"#,
        )
        .unwrap();
        assert_eq!(answer.access_token.expose_secret(), "tok");
        assert_eq!(answer.expires_in, Some(3600));
        assert_eq!(
            answer.resource_server_base_uri.as_deref(),
            Some("https://api-c9.example.com/")
        );
    }

    #[test]
    fn token_answer_without_optional_fields_parses() {
        let answer = TokenAnswer::parse(br#"{"access_token":"tok"}"#).unwrap();
        assert_eq!(answer.expires_in, None);
        assert_eq!(answer.resource_server_base_uri, None);
    }

    #[test]
    fn malformed_token_answer_does_not_quote_the_token() {
        let err = TokenAnswer::parse(br#"{"access_token":"s3cr3t-token","expires_in":"soon"}"#)
            .err()
            .unwrap();
        let message = err.to_string();
        assert!(matches!(err, CxoneError::Decode(_)), "{err:?}");
        assert!(!message.contains("s3cr3t-token"), "{message}");
        assert!(!message.contains("soon"), "{message}");
    }

    #[test]
    fn user_with_only_an_id_parses() {
        let answer: UsersAnswer =
            parse("users", br#"{"users":[{"userId":"u_001","extra":1}]}"#).unwrap();
        let agents: Vec<Agent> = answer.users.into_iter().map(Agent::from).collect();
        assert_eq!(
            agents,
            [Agent {
                id: "u_001".into(),
                name: String::new(),
                team_id: None,
                team_name: None,
                skills: vec![],
            }]
        );
    }

    #[test]
    fn full_user_converts_to_agent() {
        let answer: UsersAnswer = parse(
            "users",
            br#"{"users":[{"userId":"u_001","userName":"Ada Park","teamId":"t_1",
                 "teamName":"Care","skills":["s_100","s_101"]}]}"#,
        )
        .unwrap();
        let agent = Agent::from(answer.users.into_iter().next().unwrap());
        assert_eq!(agent.name, "Ada Park");
        assert_eq!(agent.team_id.as_deref(), Some("t_1"));
        assert_eq!(agent.team_name.as_deref(), Some("Care"));
        assert_eq!(agent.skills, ["s_100", "s_101"]);
    }

    #[test]
    fn state_answer_converts_with_and_without_optional_fields() {
        let full: StateAnswer = parse(
            "state",
            br#"{"userId":"u_001","agentState":"NOT_READY","reasonCode":"BREAK",
                 "statusChangedTimestamp":"2026-11-20T14:31:55Z"}"#,
        )
        .unwrap();
        let snapshot = full.into_snapshot("u_001").unwrap();
        assert_eq!(snapshot.state, AgentState::NotReady);
        assert_eq!(snapshot.reason.as_deref(), Some("BREAK"));
        assert_eq!(
            snapshot.changed_at,
            Some("2026-11-20T14:31:55Z".parse().unwrap())
        );

        let sparse: StateAnswer = parse(
            "state",
            br#"{"agentState":"ON_CONTACT","reasonCode":null,"statusChangedTimestamp":null}"#,
        )
        .unwrap();
        let snapshot = sparse.into_snapshot("u_007").unwrap();
        assert_eq!(snapshot.agent_id, "u_007");
        assert_eq!(snapshot.state, AgentState::OnContact);
        assert_eq!(snapshot.reason, None);
        assert_eq!(snapshot.changed_at, None);
    }

    #[test]
    fn unknown_agent_state_is_a_decode_error_naming_the_value() {
        let answer: StateAnswer = parse("state", br#"{"agentState":"ON_HOLIDAY"}"#).unwrap();
        match answer.into_snapshot("u_001") {
            Err(CxoneError::Decode(message)) => {
                assert!(message.contains("ON_HOLIDAY"), "{message}")
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn timestamps_with_offsets_are_converted_to_utc() {
        let answer: StateAnswer = parse(
            "state",
            br#"{"agentState":"READY","statusChangedTimestamp":"2026-11-20T16:31:55+02:00"}"#,
        )
        .unwrap();
        assert_eq!(
            answer.status_changed_timestamp,
            Some("2026-11-20T14:31:55Z".parse().unwrap())
        );
    }

    #[test]
    fn set_state_body_uses_the_contract_field_names() {
        let body = serde_json::to_value(SetStateBody {
            state: "NOT_READY",
            reason_code: "BREAK",
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"state": "NOT_READY", "reasonCode": "BREAK"})
        );
    }

    fn schedule_from(json: &[u8]) -> Result<Schedule, CxoneError> {
        Schedule::try_from(parse::<ScheduleAnswer>("schedule", json)?)
    }

    #[test]
    fn full_schedule_converts_with_its_breaks() {
        let schedule = schedule_from(
            br#"{"userId":"u_001","status":"ACTIVE","timezone":"America/New_York",
                 "shiftStart":"2026-11-20T13:00:00Z","shiftEnd":"2026-11-20T21:30:00Z",
                 "breaks":[{"start":"2026-11-20T17:00:00Z","end":"2026-11-20T17:30:00Z",
                            "type":"LUNCH","mandatory":true}]}"#,
        )
        .unwrap();
        assert!(schedule.is_active());
        assert_eq!(schedule.timezone.as_deref(), Some("America/New_York"));
        assert_eq!(
            schedule.shift_end,
            Some("2026-11-20T21:30:00Z".parse().unwrap())
        );
        assert_eq!(
            schedule.breaks,
            Some(vec![BreakWindow {
                start: "2026-11-20T17:00:00Z".parse().unwrap(),
                end: "2026-11-20T17:30:00Z".parse().unwrap(),
                kind: "LUNCH".into(),
                mandatory: true,
            }])
        );
        // The v2 contract names no work activities: the break's `type` is its only title.
        assert!(schedule.activities.is_empty());
    }

    #[test]
    fn schedule_without_breaks_field_has_no_break_list() {
        let schedule = schedule_from(br#"{"userId":"u_001","status":"INACTIVE"}"#).unwrap();
        assert_eq!(schedule.status, ScheduleStatus::Inactive);
        assert_eq!(schedule.breaks, None);
        assert_eq!(schedule.timezone, None);
        assert_eq!(schedule.shift_start, None);
        assert_eq!(schedule.shift_end, None);
    }

    #[test]
    fn schedule_with_empty_breaks_has_an_empty_break_list() {
        let schedule = schedule_from(br#"{"status":"ACTIVE","breaks":[]}"#).unwrap();
        assert_eq!(schedule.breaks, Some(vec![]));
    }

    #[test]
    fn break_without_mandatory_flag_defers_to_the_breaks_endpoint() {
        let schedule = schedule_from(
            br#"{"status":"ACTIVE","breaks":[
                 {"start":"2026-11-20T17:00:00Z","end":"2026-11-20T17:30:00Z","type":"LUNCH"}]}"#,
        )
        .unwrap();
        assert_eq!(schedule.breaks, None);
    }

    #[test]
    fn unknown_schedule_status_is_a_decode_error_naming_the_value() {
        match schedule_from(br#"{"status":"PENDING"}"#) {
            Err(CxoneError::Decode(message)) => assert!(message.contains("PENDING"), "{message}"),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn break_status_parses_with_and_without_window() {
        let full: BreakStatusAnswer = parse(
            "break status",
            br#"{"userId":"u_001","mandatoryBreakRequired":true,
                 "breakStart":"2026-11-20T17:00:00Z","breakEnd":"2026-11-20T17:30:00Z"}"#,
        )
        .unwrap();
        let status = BreakStatus::from(full);
        assert!(status.mandatory_break_required);
        assert_eq!(
            status.break_start,
            Some("2026-11-20T17:00:00Z".parse().unwrap())
        );

        let sparse: BreakStatusAnswer = parse(
            "break status",
            br#"{"mandatoryBreakRequired":false,"breakStart":null}"#,
        )
        .unwrap();
        let status = BreakStatus::from(sparse);
        assert!(!status.mandatory_break_required);
        assert_eq!(status.break_start, None);
        assert_eq!(status.break_end, None);
    }

    #[test]
    fn skill_and_queue_ids_may_be_numbers_or_strings() {
        let skills: SkillsAnswer = parse(
            "skills",
            br#"{"skills":[{"skillId":1234,"skillName":"Tier 1 Voice","mediaType":"voice"},
                           {"skillId":"s_100"},{"skillId":-7}]}"#,
        )
        .unwrap();
        let skills: Vec<Skill> = skills.skills.into_iter().map(Skill::from).collect();
        assert_eq!(
            skills,
            [
                Skill {
                    id: "1234".into(),
                    name: "Tier 1 Voice".into()
                },
                Skill {
                    id: "s_100".into(),
                    name: String::new()
                },
                Skill {
                    id: "-7".into(),
                    name: String::new()
                },
            ]
        );
        let queues: QueuesAnswer =
            parse("queues", br#"{"queues":[{"queueId":42,"name":"Billing"}]}"#).unwrap();
        assert_eq!(
            Queue::from(queues.queues.into_iter().next().unwrap()).id,
            "42"
        );
        assert!(parse::<SkillsAnswer>("skills", br#"{"skills":[{"skillId":1.5}]}"#).is_err());
        assert!(parse::<SkillsAnswer>("skills", br#"{"skills":[{"skillId":null}]}"#).is_err());
    }

    #[test]
    fn skill_data_converts_with_durations_in_seconds() {
        let at: DateTime<Utc> = "2026-11-20T14:31:30Z".parse().unwrap();
        let answer: SkillDataAnswer = parse(
            "skill data",
            br#"{"skillData":[{"skillId":1234,"skillName":"Tier 1 Voice","contactsQueued":12,
                 "contactsActive":8,"longestQueueDuration":245,"serviceLevel":0.82,
                 "agentsAvailable":15,"agentsStaffed":20,"agentsOnContact":8,"agentsInACW":2,
                 "currentEstimatedWaitTime":120,"extra":true},
                 {"skillId":"s_1","contactsQueued":null,"serviceLevel":82,"agentsStaffed":3.0}]}"#,
        )
        .unwrap();
        let mut tiles = answer.skill_data.into_iter().map(|s| s.into_tile(at));
        assert_eq!(
            tiles.next().unwrap(),
            SkillTile {
                skill_id: "1234".into(),
                skill_name: "Tier 1 Voice".into(),
                contacts_queued: 12,
                contacts_active: 8,
                longest_wait_secs: 245,
                service_level: Some(0.82),
                service_level_threshold_secs: None,
                service_level_goal: None,
                agents_available: 15,
                agents_staffed: 20,
                agents_on_contact: 8,
                agents_acw: 2,
                estimated_wait_secs: Some(120),
                sampled_at: at,
            }
        );
        let sparse = tiles.next().unwrap();
        assert_eq!(sparse.contacts_queued, 0);
        assert_eq!(
            sparse.service_level,
            Some(0.82),
            "a percentage is read as one"
        );
        assert_eq!(sparse.agents_staffed, 3);
        assert_eq!(sparse.estimated_wait_secs, None);
        assert_eq!(sparse.skill_name, "");
    }

    #[test]
    fn queue_stats_convert_with_the_average_wait_in_milliseconds() {
        let at: DateTime<Utc> = "2026-11-20T14:31:30Z".parse().unwrap();
        let answer: QueueStatsAnswer = parse(
            "queue stats",
            br#"{"queues":[{"queueId":"q_1","name":"Billing","agentsLoggedOn":12,
                 "agentsAvailable":3,"agentsBusy":9,"callsWaiting":4,"averageWaitTime":42000,
                 "serviceLevel":0.91},{"queueId":7,"serviceLevel":-1,"callsWaiting":-2}]}"#,
        )
        .unwrap();
        let tiles: Vec<QueueTile> = answer.queues.into_iter().map(|q| q.into_tile(at)).collect();
        assert_eq!(
            tiles[0],
            QueueTile {
                queue_id: "q_1".into(),
                name: "Billing".into(),
                agents_logged_on: 12,
                agents_available: 3,
                agents_busy: 9,
                contacts_waiting: 4,
                average_wait_ms: Some(42_000),
                service_level: Some(0.91),
                sampled_at: at,
            }
        );
        assert_eq!(tiles[1].queue_id, "7");
        assert_eq!(tiles[1].service_level, None);
        assert_eq!(tiles[1].contacts_waiting, 0);
        let body = serde_json::to_value(QueueStatsBody {
            queue_ids: &["q_1".to_owned(), "q_2".to_owned()],
        })
        .unwrap();
        assert_eq!(body, serde_json::json!({"queueIds": ["q_1", "q_2"]}));
    }

    #[test]
    fn error_body_prefers_message_then_error_then_text() {
        assert_eq!(
            ErrorDetails::from_body(br#"{"error":"not_found","message":"unknown user u_999"}"#)
                .message,
            "unknown user u_999"
        );
        assert_eq!(
            ErrorDetails::from_body(br#"{"error":"invalid_state"}"#).message,
            "invalid_state"
        );
        assert_eq!(
            ErrorDetails::from_body(b"Service Unavailable").message,
            "Service Unavailable"
        );
        assert_eq!(ErrorDetails::from_body(b"").message, "");
    }

    #[test]
    fn long_error_messages_are_truncated() {
        let body = format!(r#"{{"message":"{}"}}"#, "é".repeat(1000));
        let details = ErrorDetails::from_body(body.as_bytes());
        assert_eq!(details.message.chars().count(), MESSAGE_LIMIT + 1);
        assert!(details.message.ends_with('…'));
    }

    #[test]
    fn missing_scope_is_found_in_fields_or_prose() {
        assert_eq!(
            ErrorDetails::from_body(br#"{"error":"forbidden","scope":"users:state:write"}"#).scope,
            Some("users:state:write".into())
        );
        assert_eq!(
            ErrorDetails::from_body(br#"{"missingScope":"schedules:view"}"#).scope,
            Some("schedules:view".into())
        );
        assert_eq!(
            ErrorDetails::from_body(
                br#"{"error":"insufficient_scope","message":"missing scope: breaks:view."}"#
            )
            .scope,
            Some("breaks:view".into())
        );
        assert_eq!(
            scope_in_text("requires scope `AdminApi` for this call"),
            Some("AdminApi".into())
        );
        assert_eq!(scope_in_text("the scope of this token is too narrow"), None);
        assert_eq!(
            ErrorDetails::from_body(br#"{"message":"forbidden"}"#).scope,
            None
        );
    }
}
