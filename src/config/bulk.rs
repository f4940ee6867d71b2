//! `[bulk]`: how supervisors' bulk jobs run.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkConfig {
    /// Items in flight at once, over every running job. The request budget paces the
    /// platform calls; this only needs to cover the platform's latency.
    pub concurrency: usize,
    /// How long the platform's agent list (used to check a job's agents and resolve its
    /// team) is reused before it is fetched again.
    pub agent_list_ttl_ms: u64,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            agent_list_ttl_ms: 60_000,
        }
    }
}

impl BulkConfig {
    /// Adds a line naming the key for every out-of-range value.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !(1..=256).contains(&self.concurrency) {
            problems.push(format!(
                "bulk.concurrency must be between 1 and 256, got {}",
                self.concurrency
            ));
        }
        if self.agent_list_ttl_ms > 3_600_000 {
            problems.push(format!(
                "bulk.agent_list_ttl_ms must be between 0 and 3600000, got {}",
                self.agent_list_ttl_ms
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        let mut problems = Vec::new();
        BulkConfig::default().validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        BulkConfig {
            concurrency: 0,
            agent_list_ttl_ms: 7_200_000,
        }
        .validate(&mut problems);
        assert_eq!(
            problems,
            [
                "bulk.concurrency must be between 1 and 256, got 0",
                "bulk.agent_list_ttl_ms must be between 0 and 3600000, got 7200000"
            ]
        );
    }
}
