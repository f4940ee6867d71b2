//! `[schedules]`, `[automation]` and `[compliance]`: the schedule book, the automations
//! at each agent's own break and shift boundaries, and the compliance sweep with its
//! adherence rules (`[[compliance.rules]]`, compiled by [`ComplianceConfig::judging`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use super::Config;
use super::duration_or::{DurationOr, Off};
use crate::domain::adherence::DeviationKind;
use crate::domain::adherence_rules::{
    Activity, AdherenceRule, AdherenceVerdict, Judging, StatePattern,
};
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
    #[serde(with = "DurationOr::<Off>")]
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
    /// Adherence rules: the first that matches a scheduled activity and a state decides;
    /// none matching leaves the built-in kinds to judge.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AdherenceRuleConfig>,
}

/// One `[[compliance.rules]]` table, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdherenceRuleConfig {
    /// A schedule activity's title, or `shift`, `break`, `mandatory_break`, `off_shift`.
    pub activity: String,
    /// `STATE` or `STATE:REASON`.
    pub states: Vec<String>,
    pub verdict: AdherenceVerdict,
    /// Out of adherence only after this long (default: `exception_threshold`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub grace: Option<Duration>,
    /// An exception this rule opened turns severe once open this long.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub severe_after: Option<Duration>,
}

impl ComplianceConfig {
    /// The adherence rules compiled, with their version and the default grace: what the
    /// sweep and every adherence figure judge with. The problems name their keys.
    pub fn judging(&self) -> Result<Judging, Vec<String>> {
        let mut problems = Vec::new();
        // By index, `None` where a rule has problems, so each is named by its place.
        let mut compiled: Vec<Option<AdherenceRule>> = Vec::with_capacity(self.rules.len());
        for (n, written) in self.rules.iter().enumerate() {
            let rule = compile(n, written, &compiled, &mut problems);
            compiled.push(rule);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let rules = compiled.into_iter().flatten().collect();
        let version = (!self.rules.is_empty()).then(|| {
            let definition = serde_json::to_vec(&self.rules).expect("rules serialize");
            hex::encode(&Sha256::digest(&definition)[..6])
        });
        Ok(Judging {
            rules,
            version,
            threshold: chrono::TimeDelta::from_std(self.exception_threshold)
                .unwrap_or(chrono::TimeDelta::MAX),
        })
    }
}

/// `compliance.rules[n]` compiled, or `None` with its problems added. `earlier` are the
/// rules before it (which decide first), `None` where one has problems.
fn compile(
    n: usize,
    written: &AdherenceRuleConfig,
    earlier: &[Option<AdherenceRule>],
    problems: &mut Vec<String>,
) -> Option<AdherenceRule> {
    let key = format!("compliance.rules[{n}]");
    let before = problems.len();
    let activity = written
        .activity
        .parse::<Activity>()
        .map_err(|e| problems.push(format!("{key}.activity: {e}")))
        .ok();
    if written.states.is_empty() {
        problems.push(format!(
            "{key}.states: name at least one state (STATE or STATE:REASON)"
        ));
    }
    let states: Vec<StatePattern> = written
        .states
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            text.parse()
                .map_err(|e| problems.push(format!("{key}.states[{i}]: {e}")))
                .ok()
        })
        .collect();
    let day = Duration::from_secs(24 * 3_600);
    for (name, value) in [
        ("grace", written.grace),
        ("severe_after", written.severe_after),
    ] {
        let Some(value) = value else { continue };
        if written.verdict != AdherenceVerdict::Out {
            problems.push(format!(
                "{key}.{name}: only an `out` rule opens exceptions, so only it takes a {name}"
            ));
        } else if value > day || (name == "severe_after" && value.is_zero()) {
            problems.push(format!(
                "{key}.{name} must be between {} and 1day, got {}",
                if name == "grace" { "0s" } else { "1s" },
                humantime::format_duration(value)
            ));
        }
    }
    let rule = AdherenceRule {
        activity: activity?,
        states,
        verdict: written.verdict,
        grace: written.grace,
        severe_after: written.severe_after,
    };
    if problems.len() > before {
        return None;
    }
    // A rule every state of which an earlier rule for the same activity already decides
    // never decides anything: almost certainly a mistake in the order.
    let shadowing = earlier.iter().position(|e| {
        e.as_ref().is_some_and(|e| {
            e.activity == rule.activity
                && rule
                    .states
                    .iter()
                    .all(|p| e.states.iter().any(|q| q.covers(p)))
        })
    });
    if let Some(at) = shadowing {
        problems.push(format!(
            "{key} never decides: compliance.rules[{at}] before it matches the same activity \
             and states (the first rule that matches decides)"
        ));
        return None;
    }
    Some(rule)
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sweep_interval: Duration::from_secs(30),
            exception_threshold: Duration::from_secs(120),
            auto_correct: AutoCorrect::default(),
            without_schedule: WithoutSchedule::Refuse,
            rules: Vec::new(),
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
            // No state is right for every rule that may refuse one.
            DeviationKind::OutOfRule => false,
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
    if let Err(more) = c.judging() {
        problems.extend(more);
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

    const RULES: &str = r#"
[[compliance.rules]]
activity = "Lunch"
states = ["NOT_READY:LUNCH"]
verdict = "in"

[[compliance.rules]]
activity = "shift"
states = ["NOT_READY:MEETING", "PAUSED"]
verdict = "neutral"

[[compliance.rules]]
activity = "mandatory_break"
states = ["READY", "ON_CONTACT"]
verdict = "out"
grace = "3m"
severe_after = "15m"
"#;

    #[test]
    fn adherence_rules_compile_in_order_with_a_version_that_follows_their_text() {
        let config = load(RULES, &[]).unwrap();
        let judging = config.compliance.judging().unwrap();
        assert_eq!(judging.rules.len(), 3);
        assert_eq!(judging.rules[0].activity, Activity::Titled("Lunch".into()));
        assert_eq!(judging.rules[1].verdict, AdherenceVerdict::Neutral);
        assert_eq!(judging.rules[2].grace, Some(Duration::from_secs(180)));
        assert_eq!(judging.threshold, chrono::TimeDelta::seconds(120));
        let version = judging.version.clone().unwrap();
        assert_eq!(version.len(), 12);
        // The same rules, the same version; any change, another.
        let again = load(RULES, &[]).unwrap().compliance.judging().unwrap();
        assert_eq!(again.version.as_deref(), Some(version.as_str()));
        let edited = RULES.replace("\"3m\"", "\"4m\"");
        let other = load(&edited, &[]).unwrap().compliance.judging().unwrap();
        assert_ne!(other.version, judging.version);
        // None: the built-in kinds, no version.
        let none = load("", &[]).unwrap().compliance.judging().unwrap();
        assert_eq!((none.rules.len(), none.version), (0, None));
        // They survive the effective configuration's TOML.
        assert!(config.to_masked_toml().contains("[[compliance.rules]]"));
    }

    #[test]
    fn bad_adherence_rules_are_named_by_their_index_and_key() {
        let text = load(
            r#"
[[compliance.rules]]
activity = " "
states = ["BUSY", "PAUSED:"]
verdict = "in"
grace = "1m"

[[compliance.rules]]
activity = "break"
states = []
verdict = "out"
severe_after = "0s"

[[compliance.rules]]
activity = "shift"
states = ["IDLE"]
verdict = "out"

[[compliance.rules]]
activity = "shift"
states = ["idle"]
verdict = "in"
"#,
            &[],
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "compliance.rules[0].activity: an activity needs a name",
            "compliance.rules[0].states[0]:",
            "compliance.rules[0].states[1]: `PAUSED:` has an empty reason",
            "compliance.rules[0].grace: only an `out` rule opens exceptions",
            "compliance.rules[1].states: name at least one state",
            "compliance.rules[1].severe_after must be between 1s and 1day, got 0s",
            "compliance.rules[3] never decides: compliance.rules[2] before it",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        let text = load(
            "[[compliance.rules]]\nactivity = \"shift\"\nstates = [\"IDLE\"]\nverdict = \"maybe\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("maybe") && text.contains("neutral"), "{text}");
    }
}
