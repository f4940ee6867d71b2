//! `[analytics]`: how platform aggregation queries run (history queries need nothing).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most queries the platform runs at once per tenant (docs/platform-api.md); more are
/// answered 429, so wfmd never keeps more in flight.
pub const PLATFORM_MAX_CONCURRENT: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Platform queries in flight per tenant, from submit to the last page; the rest
    /// wait queued (1-5).
    pub max_concurrent: usize,
    /// Result rows asked for per page (1-1000).
    pub page_size: u32,
    /// The first wait between polls of a working query; it doubles up to
    /// `poll_max_interval`. A `Retry-After` from the platform is waited out in any case.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_max_interval: Duration,
    /// Jobs one caller (token name) may have queued or running; one more is answered
    /// 429 (1-1000).
    pub max_jobs_per_caller: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            max_concurrent: PLATFORM_MAX_CONCURRENT,
            page_size: 500,
            poll_interval: Duration::from_secs(1),
            poll_max_interval: Duration::from_secs(30),
            max_jobs_per_caller: 10,
        }
    }
}

impl AnalyticsConfig {
    /// Adds a line naming the key for every out-of-range value.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !(1..=PLATFORM_MAX_CONCURRENT).contains(&self.max_concurrent) {
            problems.push(format!(
                "analytics.max_concurrent must be between 1 and {PLATFORM_MAX_CONCURRENT} \
                 (the platform runs at most {PLATFORM_MAX_CONCURRENT} queries per tenant), got {}",
                self.max_concurrent
            ));
        }
        if !(1..=1_000).contains(&self.page_size) {
            problems.push(format!(
                "analytics.page_size must be between 1 and 1000, got {}",
                self.page_size
            ));
        }
        if !(1..=1_000).contains(&self.max_jobs_per_caller) {
            problems.push(format!(
                "analytics.max_jobs_per_caller must be between 1 and 1000, got {}",
                self.max_jobs_per_caller
            ));
        }
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.poll_interval) {
            problems.push(format!(
                "analytics.poll_interval must be between 10ms and 1m, got {}",
                fmt(self.poll_interval)
            ));
        }
        if self.poll_max_interval < self.poll_interval
            || self.poll_max_interval > Duration::from_secs(600)
        {
            problems.push(format!(
                "analytics.poll_max_interval must be at least analytics.poll_interval ({}) \
                 and at most 10m, got {}",
                fmt(self.poll_interval),
                fmt(self.poll_max_interval)
            ));
        }
    }

    /// The extraction settings of the platform client.
    pub fn extraction(&self) -> crate::cxone::ExtractionSettings {
        crate::cxone::ExtractionSettings {
            max_concurrent: self.max_concurrent,
            page_size: self.page_size,
            poll_interval: self.poll_interval,
            poll_max_interval: self.poll_max_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        let mut problems = Vec::new();
        AnalyticsConfig::default().validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        AnalyticsConfig {
            max_concurrent: 6,
            page_size: 0,
            poll_interval: Duration::from_secs(2),
            poll_max_interval: Duration::from_secs(1),
            max_jobs_per_caller: 0,
        }
        .validate(&mut problems);
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "analytics.max_concurrent",
                "analytics.page_size",
                "analytics.max_jobs_per_caller",
                "analytics.poll_max_interval"
            ],
            "{problems:?}"
        );
        assert!(problems[0].ends_with("got 6"));
    }
}
