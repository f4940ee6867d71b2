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
