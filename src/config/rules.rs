//! `[[rules]]` and `[scheduler]`: WFM rules as written, and their validation.
//!
//! Rules come from the main configuration and, when `scheduler.rules_file` names one,
//! from a file of further `[[rules]]` tables (the same format `wfmd rules check FILE`
//! reads). Every problem names the rule and the field: `rules[care-lunch].cron: …`, or
//! `rules[2].timezone: …` for a rule without a usable name; problems of a rules file
//! start with the file's path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};
use crate::domain::AgentState;
use crate::domain::busy::WhenBusy;
use crate::domain::cron::{Slots, parse_pattern, parse_zone};
use crate::domain::rule::{Action, Conditions, Rule, RuleSelector, RuleWhenBusy};

/// How firings run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// A file of further `[[rules]]` tables, read at start and on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_file: Option<PathBuf>,
    /// Agent changes one firing has in flight at once. The request budget paces them;
    /// this only bounds how many wait for it.
    pub concurrency: usize,
    /// The rules read from `rules_file` (not part of the file format of the main
    /// configuration).
    #[serde(skip)]
    pub file_rules: Vec<RuleConfig>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            rules_file: None,
            concurrency: 8,
            file_rules: Vec::new(),
        }
    }
}

/// One `[[rules]]` table as written. [`Config::rules`] turns these into [`Rule`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// 6 fields (with seconds) or 5.
    pub cron: String,
    /// IANA name, e.g. `America/New_York`.
    pub timezone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub logout: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only_if_state: Option<Vec<String>>,
    pub skip_on_contact: bool,
    /// How late a slot missed while wfmd was down may still fire; 0 skips it.
    #[serde(with = "humantime_serde")]
    pub catch_up: Duration,
    /// `reject` (default) or `defer`: what an agent's change does while the agent is on a
    /// contact or in after-contact work.
    #[serde(skip_serializing_if = "is_reject")]
    pub when_busy: WhenBusy,
    /// With `when_busy = "defer"`: how long the change waits at most; `[deferred]
    /// defer_for` when absent.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub defer_for: Option<Duration>,
}

fn is_reject(when_busy: &WhenBusy) -> bool {
    *when_busy == WhenBusy::Reject
}

/// A rules file: `[[rules]]` tables and nothing else.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesFile {
    pub rules: Vec<RuleConfig>,
}

impl RulesFile {
    /// Reads `path`; a problem names the file (and the key, when it is one).
    pub fn load(path: &Path) -> Result<RulesFile, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::one(format!(
                "rules file {} does not exist",
                path.display()
            )));
        }
        Figment::new()
            .merge(Toml::file_exact(path))
            .extract()
            .map_err(super::describe_figment_error)
    }

    /// The file's rules, validated as a set of their own.
    pub fn validate(&self, path: &Path) -> Result<Vec<Rule>, ConfigError> {
        let label = path.display().to_string();
        let sources: Vec<_> = self
            .rules
            .iter()
            .map(|r| (Some(label.as_str()), r))
            .collect();
        build(&sources).map_err(|problems| ConfigError { problems })
    }
}

impl Config {
    /// Reads `scheduler.rules_file`, if one is configured, into `scheduler.file_rules`.
    pub(super) fn read_rules_file(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.scheduler.rules_file {
            self.scheduler.file_rules = RulesFile::load(path)?.rules;
        }
        Ok(())
    }

    /// Every configured rule, validated: those of `[[rules]]`, then those of the rules
    /// file. Names are unique across both.
    pub fn rules(&self) -> Result<Vec<Rule>, Vec<String>> {
        let file = self
            .scheduler
            .rules_file
            .as_ref()
            .map(|p| p.display().to_string());
        let sources: Vec<(Option<&str>, &RuleConfig)> = self
            .rules
            .iter()
            .map(|rule| (None, rule))
            .chain(
                self.scheduler
                    .file_rules
                    .iter()
                    .map(|rule| (file.as_deref(), rule)),
            )
            .collect();
        build(&sources)
    }

    /// Problems of `[scheduler]` and of the rules.
    pub(super) fn rule_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=256).contains(&self.scheduler.concurrency) {
            problems.push(format!(
                "scheduler.concurrency must be between 1 and 256, got {}",
                self.scheduler.concurrency
            ));
        }
        if let Err(more) = self.rules() {
            problems.extend(more);
        }
        problems
    }
}

/// Validates rules as one set; `file` is where each came from (`None`: the main config).
fn build(sources: &[(Option<&str>, &RuleConfig)]) -> Result<Vec<Rule>, Vec<String>> {
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for (_, rule) in sources {
        *uses.entry(rule.name.trim()).or_default() += 1;
    }
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    for (index, (file, rule)) in sources.iter().enumerate() {
        let key = match rule.name.trim() {
            "" => format!("rules[{index}]"),
            name => format!("rules[{name}]"),
        };
        let key = match file {
            Some(file) => format!("{file}: {key}"),
            None => key,
        };
        let mut failures: Vec<String> = Vec::new();
        let mut fail = |field: &str, text: String| {
            let dot = if field.is_empty() { "" } else { "." };
            failures.push(format!("{key}{dot}{field}: {text}"));
        };

        let name = rule.name.trim();
        if name.is_empty() {
            fail("name", "must be set".into());
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            fail(
                "name",
                format!("`{name}` may only hold letters, digits, `-`, `_` and `.`"),
            );
        } else if uses[name] > 1 {
            fail(
                "name",
                format!(
                    "`{name}` is used by {} rules; names must be unique",
                    uses[name]
                ),
            );
        }

        let zone = match rule.timezone.trim() {
            "" => {
                fail("timezone", "must be set, e.g. \"America/New_York\"".into());
                None
            }
            zone => parse_zone(zone).map_err(|e| fail("timezone", e)).ok(),
        };
        let cron = match rule.cron.trim() {
            "" => {
                fail("cron", "must be set, e.g. \"0 0 12 * * Mon-Fri\"".into());
                None
            }
            pattern => parse_pattern(pattern).map_err(|e| fail("cron", e)).ok(),
        };
        let slots = match (cron, zone) {
            (Some(cron), Some(zone)) => {
                let slots = Slots::new(cron, rule.cron.trim(), zone);
                if slots.next_after(Utc::now()).is_none() {
                    fail("cron", format!("`{}` never fires", rule.cron.trim()));
                }
                Some(slots)
            }
            _ => None,
        };

        let mut selectors = Vec::new();
        if let Some(team) = &rule.team {
            selectors.push("team");
            if team.trim().is_empty() {
                fail("team", "must not be empty".into());
            }
        }
        if let Some(skill) = &rule.skill {
            selectors.push("skill");
            if skill.trim().is_empty() {
                fail("skill", "must not be empty".into());
            }
        }
        if let Some(agents) = &rule.agents {
            selectors.push("agents");
            if agents.is_empty() {
                fail("agents", "is empty; list at least one agent".into());
            }
            for (i, agent) in agents.iter().enumerate() {
                if agent.trim().is_empty() {
                    fail("agents", format!("entry {i} is empty"));
                } else if agents[..i].contains(agent) {
                    fail("agents", format!("lists {agent} twice"));
                }
            }
        }
        if rule.all {
            selectors.push("all");
        }
        let selector = match selectors.as_slice() {
            [] => {
                fail(
                    "",
                    "no selector; give one of team, skill, agents = [..] or all = true".into(),
                );
                None
            }
            [_] => Some(if let Some(team) = &rule.team {
                RuleSelector::Team(team.trim().to_owned())
            } else if let Some(skill) = &rule.skill {
                RuleSelector::Skill(skill.trim().to_owned())
            } else if let Some(agents) = &rule.agents {
                RuleSelector::Agents(agents.clone())
            } else {
                RuleSelector::All
            }),
            many => {
                fail(
                    "",
                    format!(
                        "{} are all given; a rule has exactly one selector",
                        many.join(" and ")
                    ),
                );
                None
            }
        };

        if let Some(reason) = &rule.reason
            && reason.trim().is_empty()
        {
            fail(
                "reason",
                "must not be empty; omit it for the state's default".into(),
            );
        }
        let action = match (&rule.set, rule.logout) {
            (Some(_), true) => {
                fail(
                    "",
                    "set and logout are both given; a rule has exactly one action".into(),
                );
                None
            }
            (None, false) => {
                fail(
                    "",
                    "no action; give set = \"STATE\" or logout = true".into(),
                );
                None
            }
            (None, true) => {
                if rule.reason.is_some() {
                    fail(
                        "reason",
                        "is not allowed with logout = true (a logout has no reason code)".into(),
                    );
                }
                Some(Action::Logout)
            }
            (Some(state), false) => match state.trim().parse::<AgentState>() {
                Err(e) => {
                    fail("set", e.to_string());
                    None
                }
                Ok(state) if !state.is_settable() => {
                    fail("set", format!("{state} is observed only and cannot be set"));
                    None
                }
                Ok(state) => Some(Action::Set {
                    state,
                    reason: rule.reason.as_ref().map(|r| r.trim().to_owned()),
                }),
            },
        };

        let only_if_state = match &rule.only_if_state {
            None => None,
            Some(states) if states.is_empty() => {
                fail(
                    "only_if_state",
                    "is empty; omit it to move agents in any state".into(),
                );
                None
            }
            Some(states) => {
                let mut parsed = Vec::new();
                for state in states {
                    match state.trim().parse::<AgentState>() {
                        Ok(state) => parsed.push(state),
                        Err(e) => fail("only_if_state", e.to_string()),
                    }
                }
                if rule.skip_on_contact
                    && let Some(contact) = parsed
                        .iter()
                        .find(|s| matches!(s, AgentState::OnContact | AgentState::Acw))
                {
                    fail(
                        "only_if_state",
                        format!("{contact} contradicts skip_on_contact = true"),
                    );
                }
                Some(parsed)
            }
        };

        let when_busy = match (rule.when_busy, rule.defer_for) {
            (WhenBusy::Reject, Some(_)) => {
                fail("defer_for", "needs when_busy = \"defer\"".into());
                RuleWhenBusy::Reject
            }
            (WhenBusy::Reject, None) => RuleWhenBusy::Reject,
            (WhenBusy::Defer, defer_for) => {
                if let Some(problem) = defer_for
                    .and_then(|wait| crate::config::deferred::defer_for_problem("defer_for", wait))
                {
                    fail(
                        "defer_for",
                        problem.trim_start_matches("defer_for ").to_owned(),
                    );
                }
                if rule.skip_on_contact {
                    fail(
                        "when_busy",
                        "\"defer\" contradicts skip_on_contact = true: an agent on a contact \
                         or in after-contact work is skipped, so no change would ever wait for it"
                            .into(),
                    );
                }
                RuleWhenBusy::Defer { defer_for }
            }
        };

        if !failures.is_empty() {
            problems.append(&mut failures);
        } else if let (Some(slots), Some(selector), Some(action)) = (slots, selector, action) {
            rules.push(Rule {
                name: name.to_owned(),
                slots,
                selector,
                action,
                conditions: Conditions {
                    only_if_state,
                    skip_on_contact: rule.skip_on_contact,
                },
                catch_up: rule.catch_up,
                when_busy,
            });
        }
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::config::ConfigSource;

    fn load(main: &str) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(main.as_bytes()).unwrap();
        let source = ConfigSource {
            file: Some(file.path().to_owned()),
            simulate: true,
        };
        Config::load_with_env(&source, [])
    }

    const LUNCH: &str = r#"
[[rules]]
name = "care-lunch"
cron = "0 0 12 * * Mon-Fri"
timezone = "America/New_York"
team = "t_1"
set = "not_ready"
reason = "LUNCH"
only_if_state = ["READY"]
skip_on_contact = true
"#;

    #[test]
    fn a_valid_rule_becomes_a_typed_rule() {
        let config = load(LUNCH).unwrap();
        let rules = config.rules().unwrap();
        let lunch = &rules[0];
        assert_eq!(lunch.name, "care-lunch");
        assert_eq!(lunch.selector, RuleSelector::Team("t_1".into()));
        assert_eq!(
            lunch.action,
            Action::Set {
                state: AgentState::NotReady,
                reason: Some("LUNCH".into())
            }
        );
        assert_eq!(
            lunch.conditions.only_if_state,
            Some(vec![AgentState::Ready])
        );
        assert!(lunch.conditions.skip_on_contact);
        assert_eq!(lunch.catch_up, Duration::ZERO, "catch_up defaults to 0");
        assert_eq!(lunch.slots.zone().name(), "America/New_York");
    }

    #[test]
    fn every_rule_mistake_is_named_with_the_rule_and_the_field() {
        let err = load(
            r#"
[[rules]]
name = "bad-cron"
cron = "0 0 25 * * *"
timezone = "UTC"
all = true
logout = true

[[rules]]
name = "bad-zone"
cron = "0 0 12 * * *"
timezone = "America/NewYork"
team = "t_1"
set = "ON_CONTACT"

[[rules]]
cron = "0 12 * * *"
timezone = "UTC"
team = "t_1"
skill = "s_1"
set = "LUNCH"

[[rules]]
name = "no-selector"
cron = "0 12 * * *"
timezone = "UTC"
logout = true
reason = "BYE"
only_if_state = ["READY", "SLEEPING"]

[[rules]]
name = "empty"
cron = "0 12 * * *"
timezone = "UTC"
agents = []
only_if_state = []

[[rules]]
name = "both-actions"
cron = "0 0 30 2 *"
timezone = "UTC"
all = true
set = "READY"
logout = true

[[rules]]
name = "bad-cron"
cron = "0 12 * * *"
timezone = "UTC"
all = true

[[rules]]
name = "contradiction"
cron = "0 12 * * *"
timezone = "UTC"
all = true
set = "READY"
only_if_state = ["ON_CONTACT"]
skip_on_contact = true
"#,
        )
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "rules[bad-cron].cron: `0 0 25 * * *` is not a valid cron pattern",
            "rules[bad-cron].name: `bad-cron` is used by 2 rules",
            r#"rules[bad-zone].timezone: unknown time zone "America/NewYork""#,
            "rules[bad-zone].set: ON_CONTACT is observed only and cannot be set",
            "rules[2].name: must be set",
            "rules[2]: team and skill are all given; a rule has exactly one selector",
            "rules[2].set: unknown agent state `LUNCH`",
            "rules[no-selector]: no selector; give one of team, skill, agents = [..] or all = true",
            "rules[no-selector].reason: is not allowed with logout = true",
            "rules[no-selector].only_if_state: unknown agent state `SLEEPING`",
            "rules[empty].agents: is empty",
            "rules[empty].only_if_state: is empty",
            "rules[empty]: no action",
            "rules[both-actions]: set and logout are both given",
            "rules[both-actions].cron: `0 0 30 2 *` never fires",
            "rules[contradiction].only_if_state: ON_CONTACT contradicts skip_on_contact = true",
        ] {
            assert!(text.contains(expected), "{expected}\nmissing from:\n{text}");
        }
    }

    #[test]
    fn when_busy_defer_waits_for_the_rule_s_own_defer_for_and_contradicts_skip_on_contact() {
        let base = "cron = \"0 12 * * *\"\ntimezone = \"UTC\"\nall = true\nset = \"NOT_READY\"\n";
        let config = load(&format!(
            "[[rules]]\nname = \"waits\"\n{base}when_busy = \"defer\"\ndefer_for = \"10m\"\n\n\
             [[rules]]\nname = \"default-wait\"\n{base}when_busy = \"defer\"\n\n\
             [[rules]]\nname = \"refuses\"\n{base}"
        ))
        .unwrap();
        let rules = config.rules().unwrap();
        let when_busy: Vec<_> = rules.iter().map(|r| r.when_busy).collect();
        assert_eq!(
            when_busy,
            [
                RuleWhenBusy::Defer {
                    defer_for: Some(Duration::from_secs(600))
                },
                RuleWhenBusy::Defer { defer_for: None },
                RuleWhenBusy::Reject,
            ]
        );
        // A rule that defers is a different rule from one that refuses: an interrupted
        // firing is not resumed by the other.
        assert_ne!(rules[1].definition(), rules[2].definition());
        assert!(rules[2].definition().get("when_busy").is_none());

        let err = load(&format!(
            "[[rules]]\nname = \"skips\"\n{base}when_busy = \"defer\"\nskip_on_contact = true\n\n\
             [[rules]]\nname = \"lonely\"\n{base}defer_for = \"5m\"\n\n\
             [[rules]]\nname = \"too-long\"\n{base}when_busy = \"defer\"\ndefer_for = \"2days\"\n"
        ))
        .unwrap_err()
        .to_string();
        for expected in [
            "rules[skips].when_busy: \"defer\" contradicts skip_on_contact = true",
            "rules[lonely].defer_for: needs when_busy = \"defer\"",
            "rules[too-long].defer_for: must be between 1s and 24h, got 2days",
        ] {
            assert!(err.contains(expected), "{expected}\nmissing from:\n{err}");
        }
        let err = load(&format!(
            "[[rules]]\nname = \"typo\"\n{base}when_busy = \"wait\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("when_busy"), "{err}");
    }

    #[test]
    fn rules_file_rules_are_added_and_named_with_the_file() {
        let mut rules = tempfile::NamedTempFile::new().unwrap();
        write!(
            rules,
            "[[rules]]\nname = \"end-of-day\"\ncron = \"0 19 * * *\"\ntimezone = \"America/Chicago\"\nall = true\nlogout = true\ncatch_up = \"2h\"\n"
        )
        .unwrap();
        let path = rules.path().display().to_string();
        let config = load(&format!(
            "[scheduler]\nrules_file = \"{path}\"\nconcurrency = 4\n{LUNCH}"
        ))
        .unwrap();
        let names: Vec<_> = config
            .rules()
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["care-lunch", "end-of-day"]);
        assert_eq!(config.scheduler.concurrency, 4);
        let shown = config.to_masked_toml();
        assert!(shown.contains("name = \"care-lunch\""), "{shown}");
        assert!(
            !shown.contains("end-of-day"),
            "file rules stay in their file: {shown}"
        );

        // The same name in both places is a duplicate; the file's copy names the file.
        write!(
            rules,
            "[[rules]]\nname = \"care-lunch\"\ncron = \"0 13 * * *\"\ntimezone = \"Mars/Olympus\"\nall = true\nlogout = true\n"
        )
        .unwrap();
        let err = load(&format!("[scheduler]\nrules_file = \"{path}\"\n{LUNCH}")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("rules[care-lunch].name: `care-lunch` is used by 2 rules"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{path}: rules[care-lunch].timezone: unknown time zone"
            )),
            "{text}"
        );

        let missing = load("[scheduler]\nrules_file = \"/nonexistent/rules.toml\"\n").unwrap_err();
        assert_eq!(
            missing.problems,
            ["rules file /nonexistent/rules.toml does not exist"]
        );
    }

    #[test]
    fn the_rules_example_is_valid_and_sets_every_rule_key() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/rules.example.toml"
        ));
        let file = RulesFile::load(path).unwrap();
        let rules = file.validate(path).unwrap();
        assert!(rules.len() >= 3, "lunch, meeting and end-of-day examples");
        let text = std::fs::read_to_string(path).unwrap();
        let tables: toml::Table = toml::from_str(&text).unwrap();
        let written: std::collections::BTreeSet<&str> = tables["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| rule.as_table().unwrap().keys().map(String::as_str))
            .collect();
        let every_key = [
            "name",
            "cron",
            "timezone",
            "team",
            "skill",
            "agents",
            "all",
            "set",
            "reason",
            "logout",
            "only_if_state",
            "skip_on_contact",
            "catch_up",
        ];
        for key in every_key {
            assert!(written.contains(key), "no example sets {key}");
            let explained = text.lines().any(|line| {
                line.strip_prefix('#')
                    .and_then(|rest| rest.split_whitespace().next())
                    == Some(key)
            });
            assert!(explained, "{key} is not explained");
        }
        assert_eq!(written.len(), every_key.len(), "{written:?}");
    }

    #[test]
    fn unknown_rule_keys_and_a_bad_concurrency_are_refused() {
        let err = load(&format!("{LUNCH}tema = \"t_2\"\n")).unwrap_err();
        assert!(err.to_string().contains("tema"), "{err}");
        let err = load("[scheduler]\nconcurrency = 0\n").unwrap_err();
        assert_eq!(
            err.problems,
            ["scheduler.concurrency must be between 1 and 256, got 0"]
        );
    }
}
