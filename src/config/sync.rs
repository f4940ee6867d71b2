//! `[sync]`: which agents' states wfmd keeps in step with the platform, and how often.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Real-time state sync: which agents wfmd keeps in step with the platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Whether to poll the platform for the agents' own state changes.
    pub enabled: bool,
    /// Poll interval of the real-time subscription; the platform refuses less than 10 s.
    pub interval_ms: u64,
    /// Teams whose agents are kept in step.
    pub teams: Vec<String>,
    /// Agents kept in step, besides those of `teams`.
    pub agents: Vec<String>,
    /// With `teams` and `agents` empty: subscribe to an unfiltered view (every agent,
    /// which large tenants answer slowly) instead of an explicit list of every agent.
    pub unfiltered: bool,
    /// Age at which a subscription is replaced (the platform expires them after 24 h).
    #[serde(with = "humantime_serde")]
    pub renew_after: Duration,
}

impl SyncConfig {
    /// Adds a line naming the key for every bad value; `min_interval_ms` is the
    /// configured dialect's shortest poll interval.
    pub fn validate(&self, min_interval_ms: u64, problems: &mut Vec<String>) {
        super::in_range(
            problems,
            "sync.interval_ms",
            self.interval_ms,
            min_interval_ms,
            3_600_000,
        );
        let renew = self.renew_after;
        if renew >= Duration::from_secs(24 * 3_600)
            || renew.as_millis() <= u128::from(self.interval_ms)
        {
            problems.push(format!(
                "sync.renew_after must be longer than sync.interval_ms and shorter than the \
                 platform's 24h subscription lifetime, got {}",
                humantime::format_duration(renew)
            ));
        }
    }

    /// Requests a minute the subscription polls take (one each `interval_ms`, rounded
    /// up); none when the sync is off.
    pub fn polls_per_minute(&self) -> u32 {
        if !self.enabled {
            return 0;
        }
        let polls = 60_000u64.div_ceil(self.interval_ms.max(1));
        u32::try_from(polls).unwrap_or(u32::MAX)
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 10_000,
            teams: Vec::new(),
            agents: Vec::new(),
            unfiltered: false,
            renew_after: Duration::from_secs(23 * 3_600),
        }
    }
}
