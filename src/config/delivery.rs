//! `[delivery]`: how webhooks are delivered (timeouts, concurrency, retries, probes).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How webhooks are delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Timeout of one webhook POST.
    pub timeout_ms: u64,
    /// How long a claimed delivery is reserved; longer than the timeout, so a delivery
    /// is only claimed again when its claimer died.
    pub lease_ms: u64,
    /// Deliveries in flight at once, over all endpoints.
    pub concurrency: usize,
    /// Waits after failed attempts 1, 2, …; after the last one the delivery is dead.
    pub retry_schedule: Vec<humantime_serde::Serde<Duration>>,
    /// The longest `Retry-After` of a 429/503 that is honoured as given.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// While an endpoint fails, one queued delivery is tried ahead of schedule after
    /// half the time it has been failing, at least this long …
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// … and at most this long.
    #[serde(with = "humantime_serde")]
    pub probe_interval_max: Duration,
}

impl DeliveryConfig {
    pub fn retry_schedule(&self) -> Vec<Duration> {
        self.retry_schedule.iter().map(|d| **d).collect()
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            lease_ms: 60_000,
            concurrency: 32,
            retry_schedule: [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
                .map(|s| Duration::from_secs(s).into())
                .to_vec(),
            max_retry_after: Duration::from_secs(3_600),
            probe_interval: Duration::from_secs(5),
            probe_interval_max: Duration::from_secs(60),
        }
    }
}
