//! `[deferred]`: how long a change asked with `when_busy = "defer"` waits for a busy
//! agent (see `engine::deferred`) when its request (or rule) does not say, and how many
//! one API caller may have counted at once.

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
    /// The deferred changes one API caller (a token, or without tokens a client
    /// address) may have counted at once (1-100000): each counts while it waits, and
    /// for at least a minute after it was asked, replaced or settled sooner or not; one
    /// more is answered 429 with `Retry-After`. Bulk jobs and rules are not counted.
    pub max_waiting_per_caller: usize,
}

/// [`DeferredConfig::max_waiting_per_caller`] by default: more than a person deferring
/// changes by hand asks in a minute, few enough that one caller's events stay a trickle.
pub const DEFAULT_MAX_WAITING_PER_CALLER: usize = 100;

impl Default for DeferredConfig {
    fn default() -> Self {
        Self {
            defer_for: DEFAULT_DEFER_FOR,
            max_waiting_per_caller: DEFAULT_MAX_WAITING_PER_CALLER,
        }
    }
}

impl DeferredConfig {
    /// Adds a line naming the key for every value out of range.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Some(problem) = defer_for_problem("deferred.defer_for", self.defer_for) {
            problems.push(problem);
        }
        super::in_range(
            problems,
            "deferred.max_waiting_per_caller",
            self.max_waiting_per_caller as u64,
            1,
            100_000,
        );
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
            DeferredConfig {
                defer_for: wait,
                ..DeferredConfig::default()
            }
            .validate(&mut problems);
        }
        DeferredConfig {
            max_waiting_per_caller: 0,
            ..DeferredConfig::default()
        }
        .validate(&mut problems);
        assert_eq!(
            problems,
            [
                "deferred.defer_for must be between 1s and 24h, got 500ms",
                "deferred.defer_for must be between 1s and 24h, got 1day 1h",
                "deferred.max_waiting_per_caller must be between 1 and 100000, got 0",
            ]
        );
    }
}
