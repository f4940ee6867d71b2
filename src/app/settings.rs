//! Where the configuration becomes the services' settings: each `[section]` mapped to
//! what the part that uses it needs, in one place, so the engine's parts take plain
//! settings and never read the configuration themselves.

use std::time::Duration;

use crate::config::bulk::BulkConfig;
use crate::config::live::LiveConfig;
use crate::config::{self, AutomationConfig, ComplianceConfig, Config, SyncConfig};
use crate::engine::automation::AutomationSettings;
use crate::engine::bulk::BulkSettings;
use crate::engine::compliance::{JudgingHandle, SweepSettings};
use crate::engine::metrics::{self, PollerSettings};
use crate::engine::sync::SyncSettings;
use crate::live;

impl From<&AutomationConfig> for AutomationSettings {
    fn from(config: &AutomationConfig) -> Self {
        AutomationSettings {
            break_start: config.break_start,
            break_end: config.break_end,
            optional_breaks: config.optional_breaks,
            logout_after_shift_end: config.logout_after_shift_end,
            catch_up: config.catch_up,
        }
    }
}

/// The sweep's settings: `[compliance]`, judging with the tenant's adherence rules
/// (`judging`, which a SIGHUP replaces).
pub(super) fn sweep_settings(config: &ComplianceConfig, judging: &JudgingHandle) -> SweepSettings {
    SweepSettings {
        interval: config.sweep_interval,
        judging: judging.clone(),
        auto_correct: config.auto_correct,
    }
}

impl From<&SyncConfig> for SyncSettings {
    fn from(config: &SyncConfig) -> Self {
        SyncSettings {
            interval: Duration::from_millis(config.interval_ms),
            renew_after: config.renew_after,
            teams: config.teams.clone(),
            agents: config.agents.clone(),
            unfiltered: config.unfiltered,
        }
    }
}

impl From<&BulkConfig> for BulkSettings {
    fn from(config: &BulkConfig) -> Self {
        BulkSettings {
            concurrency: config.concurrency,
            agent_list_ttl: Duration::from_millis(config.agent_list_ttl_ms),
        }
    }
}

impl From<&LiveConfig> for PollerSettings {
    fn from(live: &LiveConfig) -> PollerSettings {
        PollerSettings {
            skills: live.skills.clone(),
            queues: live.queues.clone(),
            skill_interval: live.skill_interval,
            queue_interval: live.queue_interval,
            listing_refresh: metrics::LISTING_REFRESH,
        }
    }
}

/// The live feed's settings: `[live]`, and the managed agents as state sync keeps them.
/// With `live.enabled` off the feed makes no platform call (no roster either).
pub(super) fn live_settings(config: &Config) -> live::LiveSettings {
    live::LiveSettings {
        service_level_good: config.live.service_level_good,
        service_level_warning: config.live.service_level_warning,
        skill_interval: config.live.skill_interval,
        queue_interval: config.live.queue_interval,
        teams: config.sync.teams.clone(),
        agents: config.sync.agents.clone(),
        roster: config.live.enabled,
        queues_are_skills: config.cxone.dialect == config::Dialect::Incontact,
        max_streams_per_caller: config.live.max_streams_per_caller,
        max_tickets_per_caller: config.live.max_tickets_per_caller,
        served_by: config.ha.as_ref().map(config::ha::HaConfig::instance_id),
        ..live::LiveSettings::default()
    }
}
