//! What the wallboard is sent: the snapshot and the parts it is made of.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::metrics::{FamilyHealth, MetricBoard, QueueTile, SkillTile};

/// An open adherence exception on an agent's card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ExceptionBadge {
    pub exception_id: String,
    /// `working_in_mandatory_break`, `logged_in_outside_shift`, `not_working_in_shift`,
    /// `out_of_rule`.
    pub kind: String,
    /// When the deviation began.
    pub since: String,
    /// Open longer than its rule's `severe_after`: the badge turns red.
    pub severe: bool,
}

impl ExceptionBadge {
    pub(super) fn of(row: &crate::store::exceptions::ExceptionRow) -> ExceptionBadge {
        ExceptionBadge {
            exception_id: row.id.clone(),
            kind: row.kind.clone(),
            since: crate::time::rfc3339(crate::store::from_ms(row.started_at)),
            severe: row.severe_at.is_some(),
        }
    }
}

/// A change waiting for the agent to be free (`when_busy = "defer"`), on its card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeferredBadge {
    pub deferred_id: String,
    /// The state it will set.
    pub to: String,
    pub reason: String,
    /// When it expires unless carried out (RFC 3339).
    pub expires_at: String,
}

/// One managed agent as the wallboard shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    pub id: String,
    /// `None` until the roster has been read from the platform.
    pub name: Option<String>,
    pub team_id: Option<String>,
    pub team: Option<String>,
    pub skills: Vec<String>,
    /// The recorded state (`None`: nothing recorded yet).
    pub state: Option<String>,
    pub reason: Option<String>,
    /// When the state began (RFC 3339).
    pub since: Option<String>,
    /// Who made the change: `rule`, `api`, `cli`, `bulk`, `observed`.
    pub origin: Option<String>,
    pub exceptions: Vec<ExceptionBadge>,
    /// The change waiting for the agent, if one does.
    pub deferred: Option<DeferredBadge>,
}

impl AgentView {
    pub(super) fn unnamed(id: &str) -> AgentView {
        AgentView {
            id: id.to_owned(),
            name: None,
            team_id: None,
            team: None,
            skills: Vec::new(),
            state: None,
            reason: None,
            since: None,
            origin: None,
            exceptions: Vec::new(),
            deferred: None,
        }
    }
}

/// The skill and queue tiles with their families' health.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Tiles {
    pub skills: Vec<SkillTile>,
    pub queues: Vec<QueueTile>,
    pub skills_health: FamilyHealth,
    pub queues_health: FamilyHealth,
    pub skills_polled_at: Option<DateTime<Utc>>,
    pub queues_polled_at: Option<DateTime<Utc>>,
}

impl Tiles {
    pub(super) fn of(board: &MetricBoard) -> Tiles {
        Tiles {
            skills: board.skills.values().cloned().collect(),
            queues: board.queues.values().cloned().collect(),
            skills_health: board.skills_health.clone(),
            queues_health: board.queues_health.clone(),
            skills_polled_at: board.skills_polled_at,
            queues_polled_at: board.queues_polled_at,
        }
    }
}

/// The service-level colour thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Thresholds {
    pub good: f64,
    pub warning: f64,
}

/// Periods the page needs to tell fresh from stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Periods {
    pub heartbeat_secs: u64,
    pub skill_interval_secs: u64,
    pub queue_interval_secs: u64,
}

/// Everything a wallboard needs to draw itself; `GET /v1/live` and the first message
/// of every feed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub generated_at: String,
    /// The newest outbox event the snapshot includes; resume the feed from it.
    pub last_event_id: Option<String>,
    pub agents: Vec<AgentView>,
    /// Managed agents by recorded state (`UNKNOWN`: nothing recorded yet).
    pub counts: BTreeMap<String, usize>,
    #[serde(flatten)]
    pub tiles: Tiles,
    pub service_level: Thresholds,
    pub periods: Periods,
    /// The platform has no queue objects: its queue tiles are its skills' activity
    /// (the `incontact` dialect), which the page says.
    pub queues_are_skills: bool,
    /// The instance serving this snapshot, when several serve the tenant
    /// (`ha.instance_id`); null for a sole instance.
    pub served_by: Option<String>,
}
