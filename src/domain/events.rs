//! The events wfmd announces through webhooks and the live feed: their names, which
//! are part of the webhook contract.

use serde::{Deserialize, Serialize};

use super::adherence::DeviationKind;
use super::tenant::TenantId;
use super::{AgentState, Origin, Violation};

/// The event types wfmd emits; the names are part of the webhook contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    #[serde(rename = "agent.state_changed")]
    AgentStateChanged,
    #[serde(rename = "transition.rejected")]
    TransitionRejected,
    #[serde(rename = "bulk.completed")]
    BulkCompleted,
    #[serde(rename = "adherence.exception")]
    AdherenceException,
    #[serde(rename = "audit.checkpoint")]
    AuditCheckpoint,
    #[serde(rename = "report.ready")]
    ReportReady,
    #[serde(rename = "transition.deferred")]
    TransitionDeferred,
    #[serde(rename = "transition.expired")]
    TransitionExpired,
    #[serde(rename = "transition.cancelled")]
    TransitionCancelled,
    #[serde(rename = "adherence.exception_reviewed")]
    AdherenceExceptionReviewed,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::AgentStateChanged,
        EventType::TransitionRejected,
        EventType::BulkCompleted,
        EventType::AdherenceException,
        EventType::AuditCheckpoint,
        EventType::ReportReady,
        EventType::TransitionDeferred,
        EventType::TransitionExpired,
        EventType::TransitionCancelled,
        EventType::AdherenceExceptionReviewed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::AgentStateChanged => "agent.state_changed",
            EventType::TransitionRejected => "transition.rejected",
            EventType::BulkCompleted => "bulk.completed",
            EventType::AdherenceException => "adherence.exception",
            EventType::AuditCheckpoint => "audit.checkpoint",
            EventType::ReportReady => "report.ready",
            EventType::TransitionDeferred => "transition.deferred",
            EventType::TransitionExpired => "transition.expired",
            EventType::TransitionCancelled => "transition.cancelled",
            EventType::AdherenceExceptionReviewed => "adherence.exception_reviewed",
        }
    }
}

/// One event with its typed payload: what every producer builds, what the outbox
/// stores (serialized once, as the webhook body's `data`), and what the live feed reads
/// back. The JSON of each is part of the webhook contract (docs/http-api.md,
/// "Webhooks").
///
/// Payload fields some producers leave out are `Option`s skipped when `None`, so a
/// payload serializes to exactly the keys its producer always wrote; a field that is
/// written as `null` is a plain `Option`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "agent.state_changed")]
    AgentStateChanged(StateChanged),
    #[serde(rename = "transition.rejected")]
    TransitionRejected(TransitionRejected),
    #[serde(rename = "bulk.completed")]
    BulkCompleted(BulkCompleted),
    #[serde(rename = "adherence.exception")]
    AdherenceException(AdherenceException),
    #[serde(rename = "audit.checkpoint")]
    AuditCheckpoint(AuditCheckpoint),
    #[serde(rename = "report.ready")]
    ReportReady(ReportReady),
    #[serde(rename = "transition.deferred")]
    TransitionDeferred(TransitionDeferred),
    #[serde(rename = "transition.expired")]
    TransitionExpired(TransitionExpired),
    #[serde(rename = "transition.cancelled")]
    TransitionCancelled(TransitionCancelled),
    #[serde(rename = "adherence.exception_reviewed")]
    AdherenceExceptionReviewed(ExceptionReviewed),
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match self {
            Event::AgentStateChanged(_) => EventType::AgentStateChanged,
            Event::TransitionRejected(_) => EventType::TransitionRejected,
            Event::BulkCompleted(_) => EventType::BulkCompleted,
            Event::AdherenceException(_) => EventType::AdherenceException,
            Event::AuditCheckpoint(_) => EventType::AuditCheckpoint,
            Event::ReportReady(_) => EventType::ReportReady,
            Event::TransitionDeferred(_) => EventType::TransitionDeferred,
            Event::TransitionExpired(_) => EventType::TransitionExpired,
            Event::TransitionCancelled(_) => EventType::TransitionCancelled,
            Event::AdherenceExceptionReviewed(_) => EventType::AdherenceExceptionReviewed,
        }
    }

    /// The payload as the webhook body's `data`.
    pub fn data(&self) -> serde_json::Value {
        let mut tagged = serde_json::to_value(self).expect("an event serializes");
        tagged["data"].take()
    }
}

/// `body`, a stored event (`{"type","id","timestamp","data"}`, as the outbox keeps it),
/// with `"tenant": tenant` first at its top level: the webhook body and the feed frame
/// wfmd sends of it. The outbox of a tenant is its own database, so the stored body does
/// not repeat the tenant; it is added where the event leaves. Spliced rather than
/// parsed and written again, so the rest of the body stays byte for byte as stored.
/// Anything but a JSON object is returned as it is.
pub fn with_tenant(body: &str, tenant: &TenantId) -> String {
    let Some(members) = body.strip_prefix('{') else {
        return body.to_owned();
    };
    let tenant = serde_json::to_string(tenant.as_str()).expect("a string serializes");
    let separator = if members.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    format!(r#"{{"tenant":{tenant}{separator}{members}"#)
}

/// `agent.state_changed`: a change wfmd made, or one it observed (`origin: observed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateChanged {
    pub agent_id: String,
    pub from: Option<AgentState>,
    pub to: AgentState,
    pub reason_code: Option<String>,
    pub origin: Origin,
    pub idle_ms: i64,
    /// Only for changes wfmd made: how long the platform took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Only for changes wfmd made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
    /// Only for observed changes, where it is always written (`null`: no contact).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schema(value_type = Option<String>)]
    pub queue: Option<Option<String>>,
    /// When the state began (RFC 3339); events of older versions lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
    /// Only for a deferred change carried out: its `deferredId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_id: Option<String>,
}

/// `transition.rejected`: a change refused by policy; nothing was sent to the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitionRejected {
    pub agent_id: String,
    pub from: Option<AgentState>,
    pub to: AgentState,
    pub reason_code: String,
    pub origin: Origin,
    pub violation: Violation,
    pub attempt_id: String,
    /// Only for a deferred change refused when its turn came: its `deferredId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_id: Option<String>,
}

/// `transition.deferred`: a change asked for with `when_busy = "defer"` while the agent
/// was busy (on a contact or in after-contact work) waits to be carried out once the
/// agent is free; `agent.state_changed` (or `transition.rejected`, re-checked then),
/// `transition.expired` or `transition.cancelled` follows with the same `deferredId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitionDeferred {
    pub deferred_id: String,
    pub agent_id: String,
    /// The state the agent was recorded in (`ON_CONTACT`, `ACW`), when known.
    pub from: Option<AgentState>,
    pub to: AgentState,
    pub reason_code: String,
    pub origin: Origin,
    pub actor: String,
    /// When it expires unless carried out (RFC 3339).
    pub expires_at: String,
    /// The agent's earlier deferred change this one replaced, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// The bulk job whose item waits on it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_job_id: Option<String>,
}

/// `transition.expired`: a deferred change whose agent stayed busy until `expiresAt`;
/// nothing was sent to the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitionExpired {
    pub deferred_id: String,
    pub agent_id: String,
    pub to: AgentState,
    pub reason_code: String,
    pub origin: Origin,
    /// When it was deferred (RFC 3339).
    pub deferred_at: String,
    pub expires_at: String,
}

/// `transition.cancelled`: a deferred change that will not be carried out: cancelled
/// (`DELETE /v1/agents/{id}/deferred`, or its bulk job cancelled) by `by`, or replaced
/// by the agent's newer deferred change (`replacedBy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitionCancelled {
    pub deferred_id: String,
    pub agent_id: String,
    pub to: AgentState,
    pub reason_code: String,
    pub origin: Origin,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
}

/// `bulk.completed`: a bulk job finished (completed or cancelled), with its counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkCompleted {
    pub job_id: String,
    pub status: String,
    pub total: i64,
    pub succeeded: i64,
    pub unchanged: i64,
    pub rejected: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub state: Option<String>,
    pub reason_code: Option<String>,
    pub team: Option<String>,
    pub reverts_job_id: Option<String>,
    pub actor: String,
    pub created_at: String,
    pub finished_at: String,
}

/// Whether an adherence exception opened or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExceptionStatus {
    Open,
    Closed,
}

/// How serious an open exception is: it turns severe once its deviation has lasted the
/// `severe_after` of the rule judging it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Normal,
    Severe,
}

/// `adherence.exception`: an exception opened, turned severe (status still `open`), or
/// closed with its duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdherenceException {
    pub exception_id: String,
    pub agent_id: String,
    pub status: ExceptionStatus,
    pub kind: DeviationKind,
    pub state: String,
    pub expected: String,
    pub started_at: String,
    pub opened_at: String,
    /// Only when closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    /// Only when closed: from `startedAt` to `closedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// The adherence rule that opened it, by its index in `[[compliance.rules]]`;
    /// absent when the built-in kinds did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// The version of the rule set that opened it; absent without rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_version: Option<String>,
    #[serde(default)]
    pub severity: Severity,
    /// When it turned severe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severe_at: Option<String>,
}

/// A supervisor's decision on an adherence exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewDecision {
    /// The deviation is excused: its span counts as authorised in every report.
    Excused,
    /// The deviation stands: it counts as out of adherence, as before.
    Upheld,
}

impl ReviewDecision {
    pub const ALL: [ReviewDecision; 2] = [ReviewDecision::Excused, ReviewDecision::Upheld];

    pub fn as_str(self) -> &'static str {
        match self {
            ReviewDecision::Excused => "excused",
            ReviewDecision::Upheld => "upheld",
        }
    }
}

super::state::string_names!(ReviewDecision, "review decision");

/// `adherence.exception_reviewed`: a supervisor excused or upheld an adherence
/// exception. Excused, its span (`startedAt` to `closedAt`, or to its close while it is
/// open) counts as authorised in every report from then on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionReviewed {
    pub exception_id: String,
    pub agent_id: String,
    pub kind: DeviationKind,
    pub decision: ReviewDecision,
    /// The reviewer's note, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who reviewed (the token's name).
    pub by: String,
    pub reviewed_at: String,
    /// When the deviation began.
    pub started_at: String,
    /// When the exception closed; absent while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    /// The decision this review replaced (`"replace": true`); absent for a first review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<ReviewDecision>,
}

/// `audit.checkpoint`: the audit chain's head, published (snake_case, as documented).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditCheckpoint {
    pub entry_id: i64,
    pub hash: String,
    pub count: i64,
}

/// `report.ready`: an analytics job finished (snake_case, as documented).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportReady {
    pub job_id: String,
    pub rows: u64,
    pub sha256: String,
}

/// Reads a field that is there, `null` included, as `Some`: a missing one is `None` by
/// `default`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[cfg(test)]
pub(crate) mod examples {
    //! One example of each event type, as its JSON and as its typed value.

    use serde_json::{Value, json};

    use super::*;

    /// The `data` of every event type, beside the typed event that must produce it.
    pub(crate) fn all() -> Vec<(Value, Event)> {
        vec![
            // The webhook body docs/http-api.md ("Webhooks") shows, as it is written there.
            (
                json!({"agentId":"u_001","from":"READY","to":"NOT_READY","reasonCode":"BREAK",
                       "origin":"rule","idleMs":0,"latencyMs":183}),
                Event::AgentStateChanged(StateChanged {
                    agent_id: "u_001".into(),
                    from: Some(AgentState::Ready),
                    to: AgentState::NotReady,
                    reason_code: Some("BREAK".into()),
                    origin: Origin::Rule,
                    idle_ms: 0,
                    latency_ms: Some(183),
                    attempt_id: None,
                    queue: None,
                    changed_at: None,
                    deferred_id: None,
                }),
            ),
            // A change wfmd made, as the engine writes it.
            (
                json!({"agentId":"u_001","from":null,"to":"READY","reasonCode":"",
                       "origin":"api","idleMs":0,"latencyMs":12,"attemptId":"att_1",
                       "changedAt":"2026-11-23T09:00:00.000Z"}),
                Event::AgentStateChanged(StateChanged {
                    agent_id: "u_001".into(),
                    from: None,
                    to: AgentState::Ready,
                    reason_code: Some(String::new()),
                    origin: Origin::Api,
                    idle_ms: 0,
                    latency_ms: Some(12),
                    attempt_id: Some("att_1".into()),
                    queue: None,
                    changed_at: Some("2026-11-23T09:00:00.000Z".into()),
                    deferred_id: None,
                }),
            ),
            // A change observed by the state sync: `queue` and `reasonCode` may be null.
            (
                json!({"agentId":"u_002","from":"READY","to":"ACW","reasonCode":null,
                       "queue":null,"origin":"observed","idleMs":4000,
                       "changedAt":"2026-11-23T09:00:00.000Z"}),
                Event::AgentStateChanged(StateChanged {
                    agent_id: "u_002".into(),
                    from: Some(AgentState::Ready),
                    to: AgentState::Acw,
                    reason_code: None,
                    origin: Origin::Observed,
                    idle_ms: 4000,
                    latency_ms: None,
                    attempt_id: None,
                    queue: Some(None),
                    changed_at: Some("2026-11-23T09:00:00.000Z".into()),
                    deferred_id: None,
                }),
            ),
            (
                json!({"agentId":"u_001","from":"NOT_READY","to":"READY","reasonCode":"",
                       "origin":"rule","violation":"MANDATORY_BREAK_VIOLATION",
                       "attemptId":"att_2"}),
                Event::TransitionRejected(TransitionRejected {
                    agent_id: "u_001".into(),
                    from: Some(AgentState::NotReady),
                    to: AgentState::Ready,
                    reason_code: String::new(),
                    origin: Origin::Rule,
                    violation: Violation::MandatoryBreakViolation,
                    attempt_id: "att_2".into(),
                    deferred_id: None,
                }),
            ),
            (
                json!({"jobId":"job_1","status":"completed","total":3,"succeeded":1,
                       "unchanged":1,"rejected":1,"failed":0,"cancelled":0,
                       "state":"NOT_READY","reasonCode":"MEETING","team":"t_1",
                       "revertsJobId":null,"actor":"desk",
                       "createdAt":"2026-11-23T09:00:00.000Z",
                       "finishedAt":"2026-11-23T09:00:02.000Z"}),
                Event::BulkCompleted(BulkCompleted {
                    job_id: "job_1".into(),
                    status: "completed".into(),
                    total: 3,
                    succeeded: 1,
                    unchanged: 1,
                    rejected: 1,
                    failed: 0,
                    cancelled: 0,
                    state: Some("NOT_READY".into()),
                    reason_code: Some("MEETING".into()),
                    team: Some("t_1".into()),
                    reverts_job_id: None,
                    actor: "desk".into(),
                    created_at: "2026-11-23T09:00:00.000Z".into(),
                    finished_at: "2026-11-23T09:00:02.000Z".into(),
                }),
            ),
            (
                json!({"exceptionId":"exc_1","agentId":"u_001","status":"open",
                       "kind":"working_in_mandatory_break","state":"READY",
                       "expected":"NOT_READY","startedAt":"2026-11-23T09:00:00.000Z",
                       "openedAt":"2026-11-23T09:05:00.000Z","severity":"normal"}),
                Event::AdherenceException(AdherenceException {
                    exception_id: "exc_1".into(),
                    agent_id: "u_001".into(),
                    status: ExceptionStatus::Open,
                    kind: DeviationKind::WorkingInMandatoryBreak,
                    state: "READY".into(),
                    expected: "NOT_READY".into(),
                    started_at: "2026-11-23T09:00:00.000Z".into(),
                    opened_at: "2026-11-23T09:05:00.000Z".into(),
                    closed_at: None,
                    duration_ms: None,
                    rule: None,
                    rules_version: None,
                    severity: Severity::Normal,
                    severe_at: None,
                }),
            ),
            (
                json!({"exceptionId":"exc_1","agentId":"u_001","status":"closed",
                       "kind":"working_in_mandatory_break","state":"READY",
                       "expected":"NOT_READY","startedAt":"2026-11-23T09:00:00.000Z",
                       "openedAt":"2026-11-23T09:05:00.000Z",
                       "closedAt":"2026-11-23T09:10:00.000Z","durationMs":600000,
                       "rule":0,"rulesVersion":"0a1b2c3d4e5f","severity":"severe",
                       "severeAt":"2026-11-23T09:08:00.000Z"}),
                Event::AdherenceException(AdherenceException {
                    exception_id: "exc_1".into(),
                    agent_id: "u_001".into(),
                    status: ExceptionStatus::Closed,
                    kind: DeviationKind::WorkingInMandatoryBreak,
                    state: "READY".into(),
                    expected: "NOT_READY".into(),
                    started_at: "2026-11-23T09:00:00.000Z".into(),
                    opened_at: "2026-11-23T09:05:00.000Z".into(),
                    closed_at: Some("2026-11-23T09:10:00.000Z".into()),
                    duration_ms: Some(600_000),
                    rule: Some(0),
                    rules_version: Some("0a1b2c3d4e5f".into()),
                    severity: Severity::Severe,
                    severe_at: Some("2026-11-23T09:08:00.000Z".into()),
                }),
            ),
            // docs/http-api.md, "Webhooks": `audit.checkpoint` (`entry_id`, `hash`, `count`).
            (
                json!({"entry_id":42,"hash":"ab12","count":42}),
                Event::AuditCheckpoint(AuditCheckpoint {
                    entry_id: 42,
                    hash: "ab12".into(),
                    count: 42,
                }),
            ),
            (
                json!({"deferredId":"dfr_1","agentId":"u_001","from":"ON_CONTACT",
                       "to":"NOT_READY","reasonCode":"LUNCH","origin":"api","actor":"desk",
                       "expiresAt":"2026-11-23T09:15:00.000Z","replaces":"dfr_0"}),
                Event::TransitionDeferred(TransitionDeferred {
                    deferred_id: "dfr_1".into(),
                    agent_id: "u_001".into(),
                    from: Some(AgentState::OnContact),
                    to: AgentState::NotReady,
                    reason_code: "LUNCH".into(),
                    origin: Origin::Api,
                    actor: "desk".into(),
                    expires_at: "2026-11-23T09:15:00.000Z".into(),
                    replaces: Some("dfr_0".into()),
                    bulk_job_id: None,
                }),
            ),
            (
                json!({"deferredId":"dfr_1","agentId":"u_001","to":"NOT_READY",
                       "reasonCode":"LUNCH","origin":"bulk",
                       "deferredAt":"2026-11-23T09:00:00.000Z",
                       "expiresAt":"2026-11-23T09:15:00.000Z"}),
                Event::TransitionExpired(TransitionExpired {
                    deferred_id: "dfr_1".into(),
                    agent_id: "u_001".into(),
                    to: AgentState::NotReady,
                    reason_code: "LUNCH".into(),
                    origin: Origin::Bulk,
                    deferred_at: "2026-11-23T09:00:00.000Z".into(),
                    expires_at: "2026-11-23T09:15:00.000Z".into(),
                }),
            ),
            (
                json!({"deferredId":"dfr_0","agentId":"u_001","to":"PAUSED",
                       "reasonCode":"ADHOC","origin":"rule","by":"desk",
                       "replacedBy":"dfr_1"}),
                Event::TransitionCancelled(TransitionCancelled {
                    deferred_id: "dfr_0".into(),
                    agent_id: "u_001".into(),
                    to: AgentState::Paused,
                    reason_code: "ADHOC".into(),
                    origin: Origin::Rule,
                    by: "desk".into(),
                    replaced_by: Some("dfr_1".into()),
                }),
            ),
            (
                json!({"exceptionId":"0190c1a4-7b7e-7c3d-9f00-000000000001","agentId":"u_001",
                       "kind":"working_in_mandatory_break","decision":"excused",
                       "note":"covering the queue","by":"desk",
                       "reviewedAt":"2026-11-23T10:00:00.000Z",
                       "startedAt":"2026-11-23T09:00:00.000Z",
                       "closedAt":"2026-11-23T09:20:00.000Z","replaced":"upheld"}),
                Event::AdherenceExceptionReviewed(ExceptionReviewed {
                    exception_id: "0190c1a4-7b7e-7c3d-9f00-000000000001".into(),
                    agent_id: "u_001".into(),
                    kind: DeviationKind::WorkingInMandatoryBreak,
                    decision: ReviewDecision::Excused,
                    note: Some("covering the queue".into()),
                    by: "desk".into(),
                    reviewed_at: "2026-11-23T10:00:00.000Z".into(),
                    started_at: "2026-11-23T09:00:00.000Z".into(),
                    closed_at: Some("2026-11-23T09:20:00.000Z".into()),
                    replaced: Some(ReviewDecision::Upheld),
                }),
            ),
            // docs/analytics.md: `report.ready` (`job_id`, `rows`, `sha256`).
            (
                json!({"job_id":"anj_1","rows":120,"sha256":"e3b0"}),
                Event::ReportReady(ReportReady {
                    job_id: "anj_1".into(),
                    rows: 120,
                    sha256: "e3b0".into(),
                }),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_event_type_writes_the_json_of_the_webhook_contract() {
        let examples = examples::all();
        for (json, event) in &examples {
            assert_eq!(&event.data(), json, "{:?}", event.event_type());
        }
        for event_type in EventType::ALL {
            assert!(
                examples.iter().any(|(_, e)| e.event_type() == event_type),
                "no example of {}",
                event_type.as_str()
            );
        }
    }

    #[test]
    fn a_stored_body_of_each_type_reads_back_as_the_event_that_wrote_it() {
        for (data, event) in examples::all() {
            let body = json!({
                "type": event.event_type().as_str(),
                "id": "evt_1",
                "timestamp": "2026-11-23T09:00:00.000Z",
                "data": data,
            });
            let read: Event = serde_json::from_value(body).unwrap();
            assert_eq!(read, event);
        }
    }

    #[test]
    fn the_tenant_goes_first_into_a_stored_body_and_the_rest_stays_as_stored() {
        let tenant: TenantId = "bpo-alpha".parse().unwrap();
        let stored = r#"{"data":{"agentId":"u_1","x":1.10},"id":"evt_1","type":"t"}"#;
        let sent = with_tenant(stored, &tenant);
        assert_eq!(
            sent,
            r#"{"tenant":"bpo-alpha","data":{"agentId":"u_1","x":1.10},"id":"evt_1","type":"t"}"#
        );
        let read: serde_json::Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(read["tenant"], "bpo-alpha");
        assert_eq!(with_tenant("{}", &tenant), r#"{"tenant":"bpo-alpha"}"#);
        assert_eq!(
            with_tenant("[1]", &tenant),
            "[1]",
            "not an object: left alone"
        );
    }

    #[test]
    fn a_state_change_stored_by_an_older_version_without_changed_at_still_reads() {
        let body = json!({"type": "agent.state_changed", "id": "evt_1",
                          "timestamp": "2026-11-23T09:00:00.000Z",
                          "data": {"agentId": "u_1", "from": null, "to": "READY",
                                   "reasonCode": null, "origin": "api", "idleMs": 0}});
        let Event::AgentStateChanged(change) = serde_json::from_value::<Event>(body).unwrap()
        else {
            panic!("a state change");
        };
        assert_eq!(change.changed_at, None);
        assert_eq!(change.to, AgentState::Ready);
    }
}
