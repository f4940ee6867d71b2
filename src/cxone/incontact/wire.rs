//! The JSON of the `incontact` dialect, read leniently: ids and numbers may come as JSON
//! numbers or strings, booleans as `true` or `"True"`, unavailable codes spelt
//! `outstateId` (v34) or `outStateId` (older versions and NICE's SDK), and any field may
//! be missing. Lenient fields are kept as [`Value`] and read through the helpers here,
//! so one odd field costs that field, not the whole answer.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::cxone::CxoneError;
use crate::domain::metrics::SkillTile;

/// A string id or name: a JSON string, or a number written as one.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A number: a JSON number, or a string holding one.
pub(crate) fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A count: a non-negative number, rounded down.
pub(crate) fn count(value: &Value) -> u32 {
    number(value).map_or(0, |n| n.max(0.0).min(f64::from(u32::MAX)) as u32)
}

/// A whole number of seconds, rounded down; `None` when missing or not a non-negative
/// number (unlike [`count`], a missing threshold is not zero seconds).
pub(crate) fn seconds(value: &Value) -> Option<u32> {
    number(value)
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| n.min(f64::from(u32::MAX)) as u32)
}

/// A share, 0.0–1.0: the platform's services give service levels and goals as a
/// percentage (`82`) or as a ratio (`0.82`), so anything above 1 is read as a
/// percentage. `None` when missing or not a non-negative number.
pub(crate) fn share(value: &Value) -> Option<f64> {
    number(value)
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| if n > 1.0 { n / 100.0 } else { n })
}

/// A boolean: `true`, `"true"`, `"True"`, `1` or `"1"` (and the false ones).
pub(crate) fn flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// An instant: RFC 3339, or the platform's zone-less form taken as UTC.
pub(crate) fn instant(value: &Value) -> Option<DateTime<Utc>> {
    let s = value.as_str()?.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// Parses a body, naming what it was in the error.
pub(crate) fn parse<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T, CxoneError> {
    serde_json::from_slice(body)
        .map_err(|e| CxoneError::Decode(format!("cannot read the {what} answer: {e}")))
}

#[derive(Debug, Deserialize)]
pub(crate) struct OpenIdConfiguration {
    pub token_endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Value,
    #[serde(default)]
    pub id_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CxoneConfiguration {
    pub api_endpoint: Option<String>,
}

/// `{error, error_description}` or `{errorCode, errorMessage}` (or neither).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ErrorBody {
    pub error: Option<String>,
    pub error_description: Option<String>,
    #[serde(rename = "errorCode")]
    pub error_code: Value,
    #[serde(rename = "errorMessage")]
    pub error_message: Option<String>,
    pub message: Option<String>,
}

impl ErrorBody {
    pub fn from_body(body: &[u8]) -> ErrorBody {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The most telling text of the body.
    pub fn message(&self) -> Option<String> {
        [
            self.error_description.clone(),
            self.error_message.clone(),
            self.message.clone(),
            self.error.clone(),
            text(&self.error_code),
        ]
        .into_iter()
        .flatten()
        .find(|m| !m.trim().is_empty())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Links {
    pub next: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AgentsAnswer {
    pub agents: Vec<AgentJson>,
    #[serde(rename = "_links")]
    pub links: Links,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AgentJson {
    pub agent_id: Value,
    pub user_name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[serde(rename = "userID", alias = "userId")]
    pub user_id: Value,
    pub team_id: Value,
    pub team_name: Option<String>,
    pub time_zone: Option<String>,
}

impl AgentJson {
    pub fn name(&self) -> String {
        let full = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if full.is_empty() {
            self.user_name.clone().unwrap_or_default()
        } else {
            full
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TeamAgentsAnswer {
    pub teams: Vec<TeamAgentsJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct TeamAgentsJson {
    pub team_id: Value,
    pub team_name: Option<String>,
    pub agents: Vec<AgentJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TeamsAnswer {
    pub teams: Vec<TeamJson>,
    #[serde(rename = "_links")]
    pub links: Links,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct TeamJson {
    pub team_id: Value,
    pub team_name: Option<String>,
    pub is_active: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct TeamCodesAnswer {
    pub team_name: Option<String>,
    pub unavailable_codes: Vec<TeamCodeJson>,
}

/// One of a team's unavailable codes, in either casing.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TeamCodeJson {
    #[serde(rename = "outstateId", alias = "outStateId", alias = "OutStateId")]
    pub id: Value,
    #[serde(
        rename = "outstateName",
        alias = "outStateName",
        alias = "OutStateName"
    )]
    pub name: Option<String>,
    #[serde(rename = "isActive")]
    pub is_active: Value,
    #[serde(rename = "isAcw", alias = "isACW")]
    pub is_acw: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct StatesAnswer {
    pub last_poll_time: Value,
    pub agent_states: Vec<StateJson>,
    #[serde(rename = "_links")]
    pub links: Links,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct StateJson {
    pub agent_id: Value,
    pub agent_state_id: Value,
    pub agent_state_name: Option<String>,
    #[serde(alias = "outstateId")]
    pub out_state_id: Value,
    #[serde(alias = "outstateDescription")]
    pub out_state_description: Option<String>,
    #[serde(rename = "isACW", alias = "isAcw")]
    pub is_acw: Value,
    pub start_date: Value,
    pub skill_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SkillsAnswer {
    pub skills: Vec<SkillJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SkillJson {
    pub skill_id: Value,
    pub skill_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SkillActivityAnswer {
    pub last_poll_time: Value,
    pub skill_activity: Vec<SkillActivityJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SkillActivityJson {
    pub skill_id: Value,
    pub skill_name: Option<String>,
    pub agents_available: Value,
    pub agents_logged_in: Value,
    pub agents_working: Value,
    #[serde(rename = "agentsACW", alias = "agentsAcw")]
    pub agents_acw: Value,
    pub queue_count: Value,
    pub contacts_active: Value,
    pub earliest_queue_time: Value,
    pub service_level: Value,
    /// Seconds within which a contact must be answered to count in the service level.
    pub service_level_threshold: Value,
    /// The service level the skill aims at, as a percentage or a share.
    pub service_level_goal: Value,
}

impl SkillActivityJson {
    /// The skill's tile at `sampled_at` (the answer's `lastPollTime`); `None` without a
    /// skill id.
    pub fn tile(&self, sampled_at: DateTime<Utc>) -> Option<SkillTile> {
        // Longest wait = the answer's time − the oldest queued contact's arrival.
        let longest = instant(&self.earliest_queue_time)
            .map_or(0, |t| (sampled_at - t).num_seconds().max(0) as u32);
        Some(SkillTile {
            skill_id: text(&self.skill_id)?,
            skill_name: self.skill_name.clone().unwrap_or_default(),
            contacts_queued: count(&self.queue_count),
            contacts_active: count(&self.contacts_active),
            longest_wait_secs: longest,
            service_level: share(&self.service_level),
            service_level_threshold_secs: seconds(&self.service_level_threshold),
            service_level_goal: share(&self.service_level_goal),
            agents_available: count(&self.agents_available),
            agents_staffed: count(&self.agents_logged_in),
            agents_on_contact: count(&self.agents_working),
            agents_acw: count(&self.agents_acw),
            estimated_wait_secs: None,
            sampled_at,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ExportAnswer {
    pub agent_schedules: Vec<AgentScheduleJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AgentScheduleJson {
    pub shifts: Vec<ShiftJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ShiftJson {
    pub start: Value,
    pub end: Value,
    pub activity_intervals: Vec<IntervalJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct IntervalJson {
    pub start: Value,
    pub end: Value,
    pub activity_code: ActivityCodeJson,
    pub work: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ActivityCodeJson {
    pub title: Option<String>,
}

/// The claims of the `id_token` wfmd routes by (no signature check: the token came
/// straight from the token endpoint over TLS, and only the tenant id is read).
pub(crate) fn id_token_tenant(id_token: &str) -> Option<String> {
    use base64::Engine;
    let payload = id_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    text(&claims["tenantId"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_booleans_are_read_from_strings_too() {
        assert_eq!(text(&json!(1234)), Some("1234".into()));
        assert_eq!(text(&json!(" t_1 ")), Some("t_1".into()));
        assert_eq!(text(&json!(null)), None);
        assert_eq!(count(&json!("12")), 12);
        assert_eq!(count(&json!(-3)), 0);
        assert_eq!(flag(&json!("True")), Some(true));
        assert_eq!(flag(&json!("false")), Some(false));
        assert_eq!(flag(&json!(true)), Some(true));
        assert_eq!(flag(&json!("maybe")), None);
    }

    #[test]
    fn unavailable_codes_read_in_both_casings() {
        let v34: TeamCodesAnswer = serde_json::from_value(json!({"unavailableCodes": [
            {"outstateId": 3, "outstateName": "Lunch", "isActive": true, "isAcw": false}]}))
        .unwrap();
        let old: TeamCodesAnswer = serde_json::from_value(json!({"unavailableCodes": [
            {"outStateId": "3", "outStateName": "Lunch", "isActive": "True", "isAcw": "False"}]}))
        .unwrap();
        for answer in [v34, old] {
            let code = &answer.unavailable_codes[0];
            assert_eq!(text(&code.id).as_deref(), Some("3"));
            assert_eq!(code.name.as_deref(), Some("Lunch"));
            assert_eq!(flag(&code.is_active), Some(true));
            assert_eq!(flag(&code.is_acw), Some(false));
        }
    }

    #[test]
    fn a_skills_threshold_and_goal_are_read_from_numbers_strings_and_percentages() {
        let at: DateTime<Utc> = "2026-11-20T14:31:30Z".parse().unwrap();
        let answer: SkillActivityAnswer = parse(
            "skill activity",
            br#"{"skillActivity":[
                 {"skillId":1,"serviceLevel":82,"serviceLevelThreshold":30,"serviceLevelGoal":80},
                 {"skillId":"2","serviceLevel":"0.9","serviceLevelThreshold":"45",
                  "serviceLevelGoal":"0.85"},
                 {"skillId":3,"serviceLevel":0.5},
                 {"skillId":4,"serviceLevelThreshold":"soon","serviceLevelGoal":-5,
                  "earliestQueueTime":"2026-11-20T14:30:00Z"},
                 {"skillName":"no id"}]}"#,
        )
        .unwrap();
        let tiles: Vec<SkillTile> = answer
            .skill_activity
            .iter()
            .filter_map(|s| s.tile(at))
            .collect();
        let read = |tile: &SkillTile| {
            (
                tile.skill_id.clone(),
                tile.service_level,
                tile.service_level_threshold_secs,
                tile.service_level_goal,
            )
        };
        assert_eq!(
            tiles.iter().map(read).collect::<Vec<_>>(),
            [
                ("1".to_owned(), Some(0.82), Some(30), Some(0.8)),
                ("2".to_owned(), Some(0.9), Some(45), Some(0.85)),
                ("3".to_owned(), Some(0.5), None, None),
                ("4".to_owned(), None, None, None),
            ],
            "a percentage is read as a share, a number as a string too, and a missing or \
             unreadable threshold or goal is none rather than zero"
        );
        assert_eq!(tiles[3].longest_wait_secs, 90);
    }

    #[test]
    fn both_error_shapes_give_their_message() {
        let acd = ErrorBody::from_body(
            br#"{"error":"x","error_description":"Agent session not started"}"#,
        );
        assert_eq!(acd.message().as_deref(), Some("Agent session not started"));
        let newer = ErrorBody::from_body(br#"{"errorCode":403,"errorMessage":"no WFM"}"#);
        assert_eq!(newer.message().as_deref(), Some("no WFM"));
        assert_eq!(ErrorBody::from_body(b"").message(), None);
    }

    #[test]
    fn the_tenant_id_comes_from_the_id_token_claims() {
        use base64::Engine;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.sig",
            enc("{}"),
            enc(r#"{"tenantId":"ten-1","icBUId":5}"#)
        );
        assert_eq!(id_token_tenant(&token).as_deref(), Some("ten-1"));
        assert_eq!(id_token_tenant("garbage"), None);
    }
}
