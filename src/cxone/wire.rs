//! Serde types of the v2 dialect of `cxone-api.md`, and their conversion into the types
//! the rest of wfmd uses.
//!
//! Field names are the platform's, exactly. Unknown fields are ignored, and every field
//! the contract does not guarantee is an `Option`, so a sparse answer parses. These types
//! stay inside `cxone`: callers see [`Agent`], [`AgentSnapshot`], [`Schedule`] and
//! [`BreakStatus`] only.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{Agent, AgentSnapshot, CxoneError};
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

/// Parses a 2xx answer; the error names what was being read, never the whole body.
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

pub(crate) fn parse<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T, CxoneError> {
    serde_json::from_slice(body).map_err(|e| CxoneError::Decode(format!("{what}: {e}")))
}

/// What an error answer's body says, as far as it is JSON of a known shape.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorDetails {
    /// The server's explanation, truncated; empty when there is none.
    pub message: String,
    /// The OAuth scope the server says is missing (403 answers).
    pub scope: Option<String>,
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
