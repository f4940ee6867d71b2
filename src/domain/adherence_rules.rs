//! Adherence rules (`[[compliance.rules]]`, #39): how an analyst says which states meet
//! which scheduled activity, beyond the three built-in deviation kinds.
//!
//! A rule pairs an activity (a schedule activity's title, or one of the built-in
//! activities `shift`, `break`, `mandatory_break`, `off_shift`) with states (`STATE` or
//! `STATE:REASON`) and a verdict: in, out or neutral (neutral time counts neither way).
//! The first rule that matches decides; when none does, the built-in kinds decide as
//! they always have ([`deviation_kind`]), so no rules judge exactly as before.
//!
//! [`Judging`] is what the compliance sweep and every adherence figure judge with: the
//! rules, the version that names them, and the default grace
//! (`compliance.exception_threshold`).

use std::str::FromStr;
use std::time::Duration;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use super::deviation::{DeviationKind, Expected, deviation_kind};
use super::state::AgentState;

/// The scheduled activity a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// A schedule activity by its title, as the schedule names it (any case).
    Titled(String),
    /// In a shift, outside its breaks.
    Shift,
    /// In any break of a shift, mandatory or optional.
    Break,
    /// In a mandatory break.
    MandatoryBreak,
    /// Outside every shift.
    OffShift,
}

impl Activity {
    /// Whether the schedule, saying `scheduled`, is in this activity.
    fn covers(&self, scheduled: &Scheduled<'_>) -> bool {
        match self {
            Activity::Titled(title) => scheduled
                .title
                .is_some_and(|named| named.trim().eq_ignore_ascii_case(title)),
            Activity::Shift => scheduled.expected == Expected::Work,
            Activity::Break => matches!(
                scheduled.expected,
                Expected::MandatoryBreak | Expected::OptionalBreak
            ),
            Activity::MandatoryBreak => scheduled.expected == Expected::MandatoryBreak,
            Activity::OffShift => scheduled.expected == Expected::OffShift,
        }
    }
}

impl FromStr for Activity {
    type Err = String;

    /// The built-in names, or any other title; an empty one is refused.
    fn from_str(text: &str) -> Result<Activity, String> {
        let text = text.trim();
        Ok(match text {
            "" => {
                return Err("an activity needs a name: a schedule activity's title, or \
                              shift, break, mandatory_break or off_shift"
                    .to_owned());
            }
            "shift" => Activity::Shift,
            "break" => Activity::Break,
            "mandatory_break" => Activity::MandatoryBreak,
            "off_shift" => Activity::OffShift,
            title => Activity::Titled(title.to_owned()),
        })
    }
}

/// A state a rule names: `STATE`, any reason, or `STATE:REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePattern {
    pub state: AgentState,
    /// The reason it must have (any case); `None`: any reason.
    pub reason: Option<String>,
}

impl StatePattern {
    fn matches(&self, state: AgentState, reason: Option<&str>) -> bool {
        self.state == state
            && self
                .reason
                .as_deref()
                .is_none_or(|wanted| reason.is_some_and(|given| given.eq_ignore_ascii_case(wanted)))
    }
}

impl StatePattern {
    /// Whether this names every state and reason `other` names.
    pub fn covers(&self, other: &StatePattern) -> bool {
        match other.reason.as_deref() {
            None => self.state == other.state && self.reason.is_none(),
            Some(reason) => self.matches(other.state, Some(reason)),
        }
    }
}

impl FromStr for StatePattern {
    type Err = String;

    fn from_str(text: &str) -> Result<StatePattern, String> {
        let (state, reason) = match text.split_once(':') {
            Some((state, reason)) => (state, Some(reason.trim())),
            None => (text, None),
        };
        let state = state
            .trim()
            .parse::<AgentState>()
            .map_err(|e| e.to_string())?;
        match reason {
            Some("") => Err(format!(
                "`{text}` has an empty reason; write `{state}` for any reason"
            )),
            reason => Ok(StatePattern {
                state,
                reason: reason.map(str::to_owned),
            }),
        }
    }
}

/// What a rule says of the time it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdherenceVerdict {
    In,
    Out,
    /// Counts neither way.
    Neutral,
}

/// One `[[compliance.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdherenceRule {
    pub activity: Activity,
    pub states: Vec<StatePattern>,
    pub verdict: AdherenceVerdict,
    /// Out of adherence only after this long; `None`: `compliance.exception_threshold`.
    pub grace: Option<Duration>,
    /// An exception open this long turns severe; `None`: never.
    pub severe_after: Option<Duration>,
}

/// What the schedule says at an instant: the built-in activity, the schedule's own
/// title for it when it names one, and whether a supervisor authorised the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled<'a> {
    pub expected: Expected,
    pub title: Option<&'a str>,
    pub authorised: bool,
}

/// How a state meets the schedule at an instant, and what judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// In adherence; `rule`: the index of the rule that said so, `None` the built-in kinds.
    In { rule: Option<usize> },
    /// Counted neither way, by the rule at `rule`.
    Neutral { rule: usize },
    /// Out of adherence: by a rule, or as a built-in `kind`. A rule may put out of
    /// adherence a state the built-in kinds accept (then `kind` is `None`).
    Out {
        rule: Option<usize>,
        kind: Option<DeviationKind>,
    },
    /// A supervisor authorised the time: neither in nor out, whatever the rules say.
    Authorised,
}

impl Judgement {
    /// The kind of exception this judgement is, when out of adherence: the built-in
    /// kind, or [`DeviationKind::OutOfRule`] where only a rule puts it out.
    pub fn deviation(self) -> Option<DeviationKind> {
        match self {
            Judgement::Out { kind, .. } => Some(kind.unwrap_or(DeviationKind::OutOfRule)),
            _ => None,
        }
    }

    /// The rule that decided, `None` for the built-in kinds.
    pub fn rule(self) -> Option<usize> {
        match self {
            Judgement::In { rule } | Judgement::Out { rule, .. } => rule,
            Judgement::Neutral { rule } => Some(rule),
            Judgement::Authorised => None,
        }
    }
}

/// The adherence rules in force and what they need besides: what every exception and
/// adherence figure is judged with. Cheap to share (`Arc`) and replaced whole on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judging {
    pub rules: Vec<AdherenceRule>,
    /// Names this rule set (a short hash of its definition), so each exception records
    /// what judged it; `None` without rules (the built-in kinds).
    pub version: Option<String>,
    /// The grace of the built-in kinds and of rules without their own
    /// (`compliance.exception_threshold`).
    pub threshold: TimeDelta,
}

impl Judging {
    /// The built-in kinds alone, opening exceptions after `threshold`.
    pub fn builtin(threshold: TimeDelta) -> Judging {
        Judging {
            rules: Vec::new(),
            version: None,
            threshold,
        }
    }

    /// [`judge`] with these rules; authorised time is [`Judgement::Authorised`] first.
    pub fn judge(
        &self,
        scheduled: Scheduled<'_>,
        state: AgentState,
        reason: Option<&str>,
    ) -> Judgement {
        if scheduled.authorised {
            return Judgement::Authorised;
        }
        judge(&self.rules, scheduled, state, reason)
    }

    /// How long a deviation judged by `rule` lasts before it is an exception.
    pub fn grace(&self, rule: Option<usize>) -> TimeDelta {
        rule.and_then(|at| self.rules.get(at)?.grace)
            .and_then(|grace| TimeDelta::from_std(grace).ok())
            .unwrap_or(self.threshold)
    }

    /// How long an exception judged by `rule` stays open before it turns severe.
    pub fn severe_after(&self, rule: Option<usize>) -> Option<TimeDelta> {
        let after = self.rules.get(rule?)?.severe_after?;
        TimeDelta::from_std(after).ok()
    }
}

/// Judges `state` (with `reason`) against `scheduled`: the first of `rules` that covers
/// the activity and names the state decides, else the built-in kinds.
pub fn judge(
    rules: &[AdherenceRule],
    scheduled: Scheduled<'_>,
    state: AgentState,
    reason: Option<&str>,
) -> Judgement {
    let builtin = deviation_kind(state, scheduled.expected);
    let decided = rules.iter().position(|rule| {
        rule.activity.covers(&scheduled) && rule.states.iter().any(|p| p.matches(state, reason))
    });
    match decided.map(|at| (at, rules[at].verdict)) {
        Some((at, AdherenceVerdict::In)) => Judgement::In { rule: Some(at) },
        Some((at, AdherenceVerdict::Neutral)) => Judgement::Neutral { rule: at },
        Some((at, AdherenceVerdict::Out)) => Judgement::Out {
            rule: Some(at),
            kind: builtin,
        },
        None => match builtin {
            Some(kind) => Judgement::Out {
                rule: None,
                kind: Some(kind),
            },
            None => Judgement::In { rule: None },
        },
    }
}

/// Random rules for property tests: the built-in activities and a "Lunch" title, any
/// state with or without a LUNCH or MEETING reason, any verdict, and a grace of a few
/// milliseconds or none.
#[cfg(test)]
pub(crate) fn arb_rule() -> impl proptest::strategy::Strategy<Value = AdherenceRule> {
    use proptest::prelude::*;
    let activity = prop::sample::select(vec![
        "shift",
        "break",
        "mandatory_break",
        "off_shift",
        "Lunch",
        // Titles of work activities too (adherence.rs's `arb_shifts` draws them).
        "Team meeting",
        "coaching",
    ]);
    let state = (
        prop::sample::select(AgentState::ALL.to_vec()),
        prop::option::of(prop::sample::select(vec!["LUNCH", "MEETING"])),
    );
    let verdict = prop::sample::select(vec![
        AdherenceVerdict::In,
        AdherenceVerdict::Out,
        AdherenceVerdict::Neutral,
    ]);
    let grace = prop::option::of(0u64..60);
    (activity, prop::collection::vec(state, 1..3), verdict, grace).prop_map(
        |(activity, states, verdict, grace)| AdherenceRule {
            activity: activity.parse().unwrap(),
            states: states
                .into_iter()
                .map(|(state, reason)| StatePattern {
                    state,
                    reason: reason.map(str::to_owned),
                })
                .collect(),
            verdict,
            grace: grace.map(Duration::from_millis),
            severe_after: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXPECTED: [Expected; 4] = [
        Expected::Work,
        Expected::MandatoryBreak,
        Expected::OptionalBreak,
        Expected::OffShift,
    ];

    fn rule(activity: &str, states: &[&str], verdict: AdherenceVerdict) -> AdherenceRule {
        AdherenceRule {
            activity: activity.parse().unwrap(),
            states: states.iter().map(|s| s.parse().unwrap()).collect(),
            verdict,
            grace: None,
            severe_after: None,
        }
    }

    fn at(expected: Expected, title: Option<&str>) -> Scheduled<'_> {
        Scheduled {
            expected,
            title,
            authorised: false,
        }
    }

    #[test]
    fn a_lunch_rule_accepts_not_ready_lunch_in_the_lunch_break_and_nothing_else() {
        let rules = [rule("Lunch", &["NOT_READY:LUNCH"], AdherenceVerdict::In)];
        let lunch = at(Expected::OptionalBreak, Some(" lunch "));
        let judged = |state, reason| judge(&rules, lunch, state, reason);
        assert_eq!(
            judged(AgentState::NotReady, Some("Lunch")),
            Judgement::In { rule: Some(0) }
        );
        // Another reason, or none: not this rule; the optional break accepts it anyway.
        assert_eq!(
            judged(AgentState::NotReady, Some("TRAINING")),
            Judgement::In { rule: None }
        );
        assert_eq!(
            judged(AgentState::NotReady, None),
            Judgement::In { rule: None }
        );
        // The title must be the schedule's: a break without one is not "Lunch".
        let untitled = at(Expected::MandatoryBreak, None);
        assert_eq!(
            judge(&rules, untitled, AgentState::Ready, None),
            Judgement::Out {
                rule: None,
                kind: Some(DeviationKind::WorkingInMandatoryBreak)
            }
        );
    }

    #[test]
    fn the_first_matching_rule_decides_and_may_be_stricter_than_the_built_in_kinds() {
        let rules = [
            rule("break", &["READY"], AdherenceVerdict::Out),
            rule("shift", &["NOT_READY:MEETING"], AdherenceVerdict::Neutral),
            rule("break", &["READY", "IDLE"], AdherenceVerdict::In),
        ];
        let optional = at(Expected::OptionalBreak, None);
        assert_eq!(
            judge(&rules, optional, AgentState::Ready, None),
            Judgement::Out {
                rule: Some(0),
                kind: None
            },
            "the built-in kinds accept READY in an optional break; the rule does not"
        );
        assert_eq!(
            judge(&rules, optional, AgentState::Idle, None),
            Judgement::In { rule: Some(2) }
        );
        let shift = at(Expected::Work, Some("Phones"));
        assert_eq!(
            judge(&rules, shift, AgentState::NotReady, Some("MEETING")),
            Judgement::Neutral { rule: 1 }
        );
        assert_eq!(
            judge(&rules, shift, AgentState::NotReady, Some("BREAK")),
            Judgement::Out {
                rule: None,
                kind: Some(DeviationKind::NotWorkingInShift)
            }
        );
    }

    #[test]
    fn activities_and_states_parse_and_bad_ones_say_why() {
        assert_eq!("off_shift".parse(), Ok(Activity::OffShift));
        assert_eq!(
            "Team meeting".parse(),
            Ok(Activity::Titled("Team meeting".into()))
        );
        assert!(
            " ".parse::<Activity>()
                .unwrap_err()
                .contains("needs a name")
        );
        assert_eq!(
            "NOT_READY:LUNCH".parse(),
            Ok(StatePattern {
                state: AgentState::NotReady,
                reason: Some("LUNCH".into())
            })
        );
        let unknown = "BUSY".parse::<StatePattern>().unwrap_err();
        assert!(
            unknown.contains("BUSY") && unknown.contains("NOT_READY"),
            "{unknown}"
        );
        let empty = "PAUSED:".parse::<StatePattern>().unwrap_err();
        assert!(empty.contains("empty reason"), "{empty}");
    }

    fn any_state() -> impl Strategy<Value = AgentState> {
        prop::sample::select(AgentState::ALL.to_vec())
    }

    fn any_expected() -> impl Strategy<Value = Expected> {
        prop::sample::select(EXPECTED.to_vec())
    }

    proptest! {
        #[test]
        fn without_rules_the_built_in_kinds_judge_as_before(
            expected in any_expected(),
            state in any_state(),
            titled in any::<bool>(),
        ) {
            let scheduled = at(expected, titled.then_some("Lunch"));
            let judged = judge(&[], scheduled, state, Some("LUNCH"));
            let before = match deviation_kind(state, expected) {
                Some(kind) => Judgement::Out { rule: None, kind: Some(kind) },
                None => Judgement::In { rule: None },
            };
            prop_assert_eq!(judged, before);
        }

        #[test]
        fn a_judgement_names_the_first_rule_that_covers_the_moment_or_none(
            rules in prop::collection::vec(arb_rule(), 0..6),
            expected in any_expected(),
            state in any_state(),
            reason in prop::option::of(prop::sample::select(vec!["LUNCH", "MEETING", "BREAK"])),
            titled in any::<bool>(),
        ) {
            let scheduled = at(expected, titled.then_some("Lunch"));
            let judged = judge(&rules, scheduled, state, reason);
            let first = rules.iter().position(|r| {
                r.activity.covers(&scheduled) && r.states.iter().any(|p| p.matches(state, reason))
            });
            let (rule, verdict) = match judged {
                Judgement::In { rule } => (rule, AdherenceVerdict::In),
                Judgement::Neutral { rule } => (Some(rule), AdherenceVerdict::Neutral),
                Judgement::Out { rule, .. } => (rule, AdherenceVerdict::Out),
                Judgement::Authorised => unreachable!("nothing is authorised here"),
            };
            prop_assert_eq!(rule, first);
            if let Some(at) = first {
                prop_assert_eq!(verdict, rules[at].verdict);
            }
            // A rule never hides the built-in kind of what is out of adherence.
            if let Judgement::Out { kind, .. } = judged {
                prop_assert_eq!(kind, deviation_kind(state, expected));
            }
        }
    }
}
