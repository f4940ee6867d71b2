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
    /// Adds a line naming the key for every bad value.
    pub fn validate(&self, problems: &mut Vec<String>) {
        super::in_range(
            problems,
            "delivery.timeout_ms",
            self.timeout_ms,
            100,
            300_000,
        );
        super::in_range(
            problems,
            "delivery.concurrency",
            self.concurrency as u64,
            1,
            1_024,
        );
        if self.lease_ms <= self.timeout_ms {
            problems.push(format!(
                "delivery.lease_ms must be longer than delivery.timeout_ms ({}), got {}",
                self.timeout_ms, self.lease_ms
            ));
        }
        if self.retry_schedule.is_empty() {
            problems.push("delivery.retry_schedule must have at least one wait".into());
        }
        if self.probe_interval < Duration::from_millis(100) {
            problems.push(format!(
                "delivery.probe_interval must be at least 100ms, got {}",
                humantime::format_duration(self.probe_interval)
            ));
        }
        if self.probe_interval_max < self.probe_interval {
            problems.push(format!(
                "delivery.probe_interval_max must be at least delivery.probe_interval ({}), got {}",
                humantime::format_duration(self.probe_interval),
                humantime::format_duration(self.probe_interval_max)
            ));
        }
    }

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
