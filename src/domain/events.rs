//! The events wfmd announces through webhooks and the live feed: their names, which
//! are part of the webhook contract.

use serde::Serialize;

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
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::AgentStateChanged => "agent.state_changed",
            EventType::TransitionRejected => "transition.rejected",
            EventType::BulkCompleted => "bulk.completed",
            EventType::AdherenceException => "adherence.exception",
            EventType::AuditCheckpoint => "audit.checkpoint",
            EventType::ReportReady => "report.ready",
        }
    }
}
