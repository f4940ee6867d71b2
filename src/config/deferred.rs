//! `[deferred]`: how long a change asked with `when_busy = "defer"` waits for a busy
//! agent (see `engine::deferred`) when its request (or rule) does not say.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::busy::{DEFAULT_DEFER_FOR, MAX_DEFER_FOR, MIN_DEFER_FOR};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeferredConfig {
    /// How long a deferred change waits for its agent at most before it expires
    /// (`transition.expired`); 1s to 24h.
    #[serde(with = "humantime_serde")]
    pub defer_for: Duration,
}

impl Default for DeferredConfig {
    fn default() -> Self {
        Self {
            defer_for: DEFAULT_DEFER_FOR,
        }
    }
}

impl DeferredConfig {
    /// Adds a line naming the key when `defer_for` is out of range.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Some(problem) = defer_for_problem("deferred.defer_for", self.defer_for) {
            problems.push(problem);
        }
    }
}

/// The problem of a `defer_for` at `key` out of its range, if it is.
pub fn defer_for_problem(key: &str, wait: Duration) -> Option<String> {
    (!(MIN_DEFER_FOR..=MAX_DEFER_FOR).contains(&wait)).then(|| {
        format!(
            "{key} must be between 1s and 24h, got {}",
            humantime::format_duration(wait)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_waits_fifteen_minutes_and_a_wait_out_of_range_names_its_key() {
        let mut problems = Vec::new();
        DeferredConfig::default().validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            DeferredConfig::default().defer_for,
            Duration::from_secs(900)
        );
        for wait in [Duration::from_millis(500), Duration::from_secs(25 * 3_600)] {
            DeferredConfig { defer_for: wait }.validate(&mut problems);
        }
        assert_eq!(
            problems,
            [
                "deferred.defer_for must be between 1s and 24h, got 500ms",
                "deferred.defer_for must be between 1s and 24h, got 1day 1h",
            ]
        );
    }
}
