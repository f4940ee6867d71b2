//! `[live]`: the wallboard's skill and queue metrics: which skills and queues are polled,
//! how often, and where the service-level colours change.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The platform refreshes skill data every 15–30 s: polling faster only spends budget.
pub const MIN_INTERVAL: Duration = Duration::from_secs(15);

/// Feed tickets outstanding at most over every caller: the backstop behind
/// `max_tickets_per_caller`.
pub const MAX_TICKETS: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// Whether the skill and queue pollers run, and the wallboard reads the agents'
    /// names, teams and skills from the platform (off: no platform call for the
    /// wallboard; it shows the agents wfmd recorded a state for, by id).
    pub enabled: bool,
    /// Skill ids to poll; empty = every skill of the tenant (listed from the platform).
    pub skills: Vec<String>,
    /// Queue ids to poll; empty = every queue of the tenant.
    pub queues: Vec<String>,
    /// How often skill data is polled; at least 15 s.
    #[serde(with = "humantime_serde")]
    pub skill_interval: Duration,
    /// How often queue stats are polled (at most 100 queues a call); at least 15 s.
    #[serde(with = "humantime_serde")]
    pub queue_interval: Duration,
    /// Service level at or above which a tile is good (0.0–1.0).
    pub service_level_good: f64,
    /// Service level at or above which a tile is a warning rather than bad; at most
    /// `service_level_good`.
    pub service_level_warning: f64,
    /// Live-feed streams (`/v1/events`, `/v1/ws`) one caller may hold open at once: a
    /// token's name, or without tokens a client address.
    pub max_streams_per_caller: usize,
    /// Feed tickets one caller may hold unused at once (each is good for 60 s).
    pub max_tickets_per_caller: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            skills: Vec::new(),
            queues: Vec::new(),
            skill_interval: Duration::from_secs(30),
            queue_interval: Duration::from_secs(30),
            service_level_good: 0.80,
            service_level_warning: 0.70,
            max_streams_per_caller: 2000,
            max_tickets_per_caller: 2000,
        }
    }
}

impl LiveConfig {
    /// Adds a line naming the key for every bad value.
    pub fn validate(&self, problems: &mut Vec<String>) {
        for (key, interval) in [
            ("live.skill_interval", self.skill_interval),
            ("live.queue_interval", self.queue_interval),
        ] {
            if interval < MIN_INTERVAL {
                problems.push(format!(
                    "{key} must be at least {} (the platform refreshes its figures every \
                     15-30s), got {}",
                    humantime::format_duration(MIN_INTERVAL),
                    humantime::format_duration(interval)
                ));
            }
        }
        let (good, warning) = (self.service_level_good, self.service_level_warning);
        for (key, value) in [
            ("live.service_level_good", good),
            ("live.service_level_warning", warning),
        ] {
            if !(0.0..=1.0).contains(&value) {
                problems.push(format!("{key} must be between 0 and 1, got {value}"));
            }
        }
        if warning > good {
            problems.push(format!(
                "live.service_level_warning must not be above live.service_level_good \
                 ({good}), got {warning}"
            ));
        }
        for (key, value, most) in [
            (
                "live.max_streams_per_caller",
                self.max_streams_per_caller,
                1_000_000,
            ),
            (
                "live.max_tickets_per_caller",
                self.max_tickets_per_caller,
                MAX_TICKETS,
            ),
        ] {
            if !(1..=most).contains(&value) {
                problems.push(format!("{key} must be between 1 and {most}, got {value}"));
            }
        }
        for (key, ids) in [("live.skills", &self.skills), ("live.queues", &self.queues)] {
            if let Some(bad) = ids.iter().find(|id| id.trim().is_empty()) {
                problems.push(format!("{key} has an empty id: `{bad}`"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;

    #[test]
    fn defaults_poll_everything_every_30s() {
        let live = load("", &[]).unwrap().live;
        assert!(live.enabled && live.skills.is_empty() && live.queues.is_empty());
        assert_eq!(live.skill_interval.as_secs(), 30);
        assert_eq!(live.queue_interval.as_secs(), 30);
        assert_eq!(
            (live.service_level_good, live.service_level_warning),
            (0.80, 0.70)
        );
    }

    #[test]
    fn intervals_below_15s_are_refused_naming_the_key() {
        let live = load(
            "[live]\nskill_interval = \"15s\"\nqueue_interval = \"1m\"\nskills = [\"s_1\", \"1234\"]\n",
            &[],
        )
        .unwrap()
        .live;
        assert_eq!(live.skill_interval.as_secs(), 15);
        assert_eq!(live.skills, ["s_1", "1234"]);

        let err = load("[live]\nskill_interval = \"14s\"\n", &[]).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(
            err.problems[0].starts_with("live.skill_interval must be at least 15s"),
            "{err}"
        );
        assert!(err.problems[0].ends_with("got 14s"), "{err}");
        let err = load("", &[("WFMD_LIVE__QUEUE_INTERVAL", "500ms")]).unwrap_err();
        assert!(
            err.problems[0].starts_with("live.queue_interval must be at least 15s"),
            "{err}"
        );
    }

    #[test]
    fn service_levels_lie_in_0_to_1_with_warning_not_above_good() {
        load(
            "[live]\nservice_level_good = 0.9\nservice_level_warning = 0.9\n",
            &[],
        )
        .unwrap();
        let err = load(
            "[live]\nservice_level_good = 0.7\nservice_level_warning = 0.8\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            ["live.service_level_warning must not be above live.service_level_good (0.7), got 0.8"]
        );
        let err = load("[live]\nservice_level_good = 80.0\n", &[]).unwrap_err();
        assert_eq!(
            err.problems,
            ["live.service_level_good must be between 0 and 1, got 80"]
        );
        let err = load("[live]\nservice_level_warning = -0.1\n", &[]).unwrap_err();
        assert_eq!(
            err.problems,
            ["live.service_level_warning must be between 0 and 1, got -0.1"]
        );
    }

    #[test]
    fn per_caller_limits_fit_a_wall_of_screens_under_one_token_and_are_bounded() {
        let live = load("", &[]).unwrap().live;
        assert_eq!(
            (live.max_streams_per_caller, live.max_tickets_per_caller),
            (2000, 2000)
        );
        let err = load(
            "[live]\nmax_streams_per_caller = 0\nmax_tickets_per_caller = 10001\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            [
                "live.max_streams_per_caller must be between 1 and 1000000, got 0",
                "live.max_tickets_per_caller must be between 1 and 10000, got 10001",
            ]
        );
    }

    #[test]
    fn empty_ids_are_refused() {
        let err = load("[live]\nqueues = [\"q_1\", \" \"]\n", &[]).unwrap_err();
        assert_eq!(err.problems, ["live.queues has an empty id: ` `"]);
    }
}
