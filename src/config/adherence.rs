//! `[schedules]`, `[automation]` and `[compliance]`: the schedule book, the automations
//! at each agent's own break and shift boundaries, and the compliance sweep.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Config;
use crate::domain::adherence::DeviationKind;
use crate::domain::policy::WithoutSchedule;

/// The schedule book: the managed agents' shifts and breaks, fetched from the platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulesConfig {
    /// How long a fetched schedule is used before it is fetched again (one call per
    /// agent, more for agents whose schedule omits its breaks).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// How long a stored schedule decides a change's compliance without asking the
    /// platform; older entries are asked for again (so a day off or sick leave entered
    /// on the platform is obeyed within this long).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for SchedulesConfig {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(3_600),
            max_age: Duration::from_secs(15 * 60),
        }
    }
}

/// State changes at each agent's own break and shift boundaries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutomationConfig {
    pub enabled: bool,
    /// NOT_READY/BREAK when a break starts.
    pub break_start: bool,
    /// READY when a break ends, for agents still on it.
    pub break_end: bool,
    /// Also optional breaks (only mandatory ones otherwise).
    pub optional_breaks: bool,
    /// LOGGED_OUT this long after the shift ends, if still logged in; `off` disables it.
    #[serde(with = "off_or_duration")]
    pub logout_after_shift_end: Option<Duration>,
    /// How late a due automation may still be carried out (after a restart, or while
    /// the agent finishes a contact); a break start also only until the break ends.
    #[serde(with = "humantime_serde")]
    pub catch_up: Duration,
}

impl Default for AutomationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            break_start: true,
            break_end: true,
            optional_breaks: false,
            logout_after_shift_end: Some(Duration::from_secs(600)),
            catch_up: Duration::from_secs(300),
        }
    }
}

/// The compliance sweep: agents' recorded states against their schedules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComplianceConfig {
    /// Whether the sweep runs (it needs `sync.enabled`: it reads the recorded states).
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Deviations up to this long are ignored; longer ones open an exception.
    #[serde(with = "humantime_serde")]
    pub exception_threshold: Duration,
    /// Which kinds of exception wfmd corrects by moving the agent.
    pub auto_correct: AutoCorrect,
    /// What a change does when the platform refuses this API user schedule lookups and
    /// no imported schedule covers the agent: `refuse` (fail, naming the fix) or `allow`
    /// (go ahead unchecked, recorded so).
    pub without_schedule: WithoutSchedule,
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sweep_interval: Duration::from_secs(30),
            exception_threshold: Duration::from_secs(120),
            auto_correct: AutoCorrect::default(),
            without_schedule: WithoutSchedule::Refuse,
        }
    }
}

/// One switch per kind of adherence exception; the field names are the kinds' names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoCorrect {
    /// READY in a mandatory break → NOT_READY/BREAK.
    pub working_in_mandatory_break: bool,
    /// Logged in outside the shift → LOGGED_OUT.
    pub logged_in_outside_shift: bool,
    /// NOT_READY, PAUSED or IDLE in the shift → READY (a logged-out agent is never
    /// logged in by wfmd).
    pub not_working_in_shift: bool,
}

impl AutoCorrect {
    pub fn applies_to(&self, kind: DeviationKind) -> bool {
        match kind {
            DeviationKind::WorkingInMandatoryBreak => self.working_in_mandatory_break,
            DeviationKind::LoggedInOutsideShift => self.logged_in_outside_shift,
            DeviationKind::NotWorkingInShift => self.not_working_in_shift,
        }
    }
}

/// Adds the problems of these sections to `problems`, each naming its key.
pub(super) fn validate(config: &Config, problems: &mut Vec<String>) {
    let mut range = |key: &str, value: Duration, min: Duration, max: Duration| {
        if !(min..=max).contains(&value) {
            problems.push(format!(
                "{key} must be between {} and {}, got {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(value)
            ));
        }
    };
    let minutes = |m: u64| Duration::from_secs(60 * m);
    range(
        "schedules.refresh_interval",
        config.schedules.refresh_interval,
        minutes(1),
        minutes(7 * 24 * 60),
    );
    range(
        "schedules.max_age",
        config.schedules.max_age,
        Duration::ZERO,
        minutes(24 * 60),
    );
    let a = &config.automation;
    range(
        "automation.catch_up",
        a.catch_up,
        Duration::ZERO,
        minutes(12 * 60),
    );
    if let Some(delay) = a.logout_after_shift_end {
        range(
            "automation.logout_after_shift_end",
            delay,
            Duration::ZERO,
            minutes(24 * 60),
        );
    }
    let c = &config.compliance;
    range(
        "compliance.sweep_interval",
        c.sweep_interval,
        Duration::from_secs(1),
        minutes(60),
    );
    range(
        "compliance.exception_threshold",
        c.exception_threshold,
        Duration::ZERO,
        minutes(24 * 60),
    );
}

/// `"off"`, or a duration such as `"10m"`.
mod off_or_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_str("off"),
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        humantime::parse_duration(text.trim())
            .map(Some)
            .map_err(|e| {
                serde::de::Error::custom(format!("`{text}` is not `off` or a duration: {e}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;
    use super::*;

    #[test]
    fn defaults_run_the_sweep_and_leave_automations_off() {
        let config = load("", &[]).unwrap();
        assert!(config.compliance.enabled);
        assert_eq!(config.compliance.sweep_interval, Duration::from_secs(30));
        assert_eq!(
            config.compliance.exception_threshold,
            Duration::from_secs(120)
        );
        assert_eq!(config.compliance.auto_correct, AutoCorrect::default());
        assert_eq!(config.compliance.without_schedule, WithoutSchedule::Refuse);
        assert!(!config.automation.enabled);
        assert_eq!(
            config.automation.logout_after_shift_end,
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn auto_correct_is_a_table_of_kinds_and_logout_can_be_off() {
        let config = load(
            "[automation]\nenabled = true\nlogout_after_shift_end = \"off\"\n\
             [compliance.auto_correct]\nlogged_in_outside_shift = true\n",
            &[(
                "WFMD_COMPLIANCE__AUTO_CORRECT__NOT_WORKING_IN_SHIFT",
                "true",
            )],
        )
        .unwrap();
        assert_eq!(config.automation.logout_after_shift_end, None);
        let ac = config.compliance.auto_correct;
        assert!(ac.applies_to(DeviationKind::LoggedInOutsideShift));
        assert!(ac.applies_to(DeviationKind::NotWorkingInShift));
        assert!(!ac.applies_to(DeviationKind::WorkingInMandatoryBreak));
        assert!(
            config
                .to_masked_toml()
                .contains("logout_after_shift_end = \"off\"")
        );
    }

    #[test]
    fn without_schedule_is_refuse_or_allow_and_anything_else_is_named() {
        let config = load("[compliance]\nwithout_schedule = \"allow\"\n", &[]).unwrap();
        assert_eq!(config.compliance.without_schedule, WithoutSchedule::Allow);
        assert!(
            config
                .to_masked_toml()
                .contains("without_schedule = \"allow\"")
        );
        let config = load("", &[("WFMD_COMPLIANCE__WITHOUT_SCHEDULE", "refuse")]).unwrap();
        assert_eq!(config.compliance.without_schedule, WithoutSchedule::Refuse);
        let text = load("[compliance]\nwithout_schedule = \"maybe\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(text.contains("compliance.without_schedule"), "{text}");
        assert!(text.contains("maybe"), "{text}");
    }

    #[test]
    fn bad_values_are_named_with_their_keys() {
        let err = load(
            "[compliance]\nsweep_interval = \"0s\"\n[schedules]\nrefresh_interval = \"10s\"\nmax_age = \"2d\"\n\
             [automation]\nlogout_after_shift_end = \"2d\"\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "compliance.sweep_interval must be between 1s and 1h, got 0s",
            "schedules.refresh_interval must be between 1m and 7days, got 10s",
            "schedules.max_age must be between 0s and 1day, got 2days",
            "automation.logout_after_shift_end must be between 0s and 1day, got 2days",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        let err = load("[compliance.auto_correct]\nlate_for_lunch = true\n", &[]).unwrap_err();
        assert!(err.to_string().contains("late_for_lunch"), "{err}");
        let err = load("[automation]\nlogout_after_shift_end = \"soon\"\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("automation.logout_after_shift_end"), "{text}");
        assert!(text.contains("`soon`"), "{text}");
    }
}
