//! Skill and queue figures for the wallboard: what the platform reports per skill and
//! per queue, and the board of the newest figures the live feed hands out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A skill's real-time figures, as the platform last reported them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SkillTile {
    pub skill_id: String,
    pub skill_name: String,
    pub contacts_queued: u32,
    pub contacts_active: u32,
    /// Seconds the oldest queued contact has waited.
    pub longest_wait_secs: u32,
    /// 0.0–1.0; `None` when the platform gave none.
    pub service_level: Option<f64>,
    /// The skill's service-level threshold: the share of contacts answered within this
    /// many seconds is the service level. `None` when the platform's skill data does not
    /// carry it (the v2 dialect's does not). Default for tiles stored before it was read.
    #[serde(default)]
    pub service_level_threshold_secs: Option<u32>,
    /// The service level the skill aims at, 0.0–1.0, as the platform's skill data gives
    /// it; `None` when it does not.
    #[serde(default)]
    pub service_level_goal: Option<f64>,
    pub agents_available: u32,
    pub agents_staffed: u32,
    pub agents_on_contact: u32,
    pub agents_acw: u32,
    pub estimated_wait_secs: Option<u32>,
    /// When the platform produced these figures (the poll's time when it says nothing).
    pub sampled_at: DateTime<Utc>,
}

/// A queue's real-time figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueTile {
    pub queue_id: String,
    pub name: String,
    pub agents_logged_on: u32,
    pub agents_available: u32,
    pub agents_busy: u32,
    pub contacts_waiting: u32,
    /// Average wait of the contacts waiting; `None` when the platform gives none (the
    /// `incontact` dialect, whose queues are its skills).
    pub average_wait_ms: Option<u64>,
    pub service_level: Option<f64>,
    pub sampled_at: DateTime<Utc>,
}

/// The two metric families a poller keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricFamily {
    Skills,
    Queues,
}

impl MetricFamily {
    pub const ALL: [MetricFamily; 2] = [MetricFamily::Skills, MetricFamily::Queues];

    pub fn as_str(self) -> &'static str {
        match self {
            MetricFamily::Skills => "skills",
            MetricFamily::Queues => "queues",
        }
    }
}

/// Whether a family's figures are coming in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FamilyHealth {
    /// Not polled yet (or not configured).
    Pending,
    Ok,
    /// The platform refused the family for good (403 missing scope, 404, not offered):
    /// it is no longer polled, the rest keeps working.
    Unavailable {
        reason: String,
    },
    /// The last poll failed for a reason that may pass (429, 5xx, timeout).
    Failing {
        reason: String,
    },
}

/// The newest figures of every family, as one value the live feed can hand out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricBoard {
    pub skills: BTreeMap<String, SkillTile>,
    pub queues: BTreeMap<String, QueueTile>,
    pub skills_health: FamilyHealth,
    pub queues_health: FamilyHealth,
    /// When each family last answered; the page greys tiles older than twice the
    /// family's interval.
    pub skills_polled_at: Option<DateTime<Utc>>,
    pub queues_polled_at: Option<DateTime<Utc>>,
}

impl Default for MetricBoard {
    fn default() -> MetricBoard {
        MetricBoard {
            skills: BTreeMap::new(),
            queues: BTreeMap::new(),
            skills_health: FamilyHealth::Pending,
            queues_health: FamilyHealth::Pending,
            skills_polled_at: None,
            queues_polled_at: None,
        }
    }
}
