//! What the schedule expects of an agent ([`Expected`]) and the built-in kinds of
//! deviation from it ([`DeviationKind`], [`deviation_kind`]): the vocabulary both the
//! adherence timeline ([`super::adherence`]) and the adherence rules
//! ([`super::adherence_rules`]) judge in. Re-exported by `adherence`, where readers look
//! for it.

use serde::{Deserialize, Serialize};

use super::state::{AgentState, string_names};

/// What the schedule expects of the agent during a stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Expected {
    /// In a shift, outside its breaks: taking contacts.
    Work,
    /// In a mandatory break: not taking contacts.
    MandatoryBreak,
    /// In an optional break: the agent's choice.
    OptionalBreak,
    /// Outside every shift: logged out.
    OffShift,
}

impl Expected {
    pub fn as_str(self) -> &'static str {
        match self {
            Expected::Work => "WORK",
            Expected::MandatoryBreak => "MANDATORY_BREAK",
            Expected::OptionalBreak => "OPTIONAL_BREAK",
            Expected::OffShift => "OFF_SHIFT",
        }
    }

    /// Whether this is scheduled time (inside a shift), which adherence is measured over.
    pub fn is_scheduled(self) -> bool {
        self != Expected::OffShift
    }
}

string_names!(Expected);

/// How a state fails to meet the schedule. The names are part of the configuration
/// (`compliance.auto_correct`), the store and the `adherence.exception` webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviationKind {
    /// READY, ON_CONTACT or ACW inside a mandatory break.
    WorkingInMandatoryBreak,
    /// Logged in (any state but LOGGED_OUT) outside every shift.
    LoggedInOutsideShift,
    /// NOT_READY, PAUSED, IDLE or LOGGED_OUT inside a shift, outside its breaks.
    NotWorkingInShift,
    /// A state an adherence rule puts out of adherence where the built-in kinds accept
    /// it (READY in an optional break titled "Training", say).
    OutOfRule,
}

impl DeviationKind {
    pub const ALL: [DeviationKind; 4] = [
        DeviationKind::WorkingInMandatoryBreak,
        DeviationKind::LoggedInOutsideShift,
        DeviationKind::NotWorkingInShift,
        DeviationKind::OutOfRule,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviationKind::WorkingInMandatoryBreak => "working_in_mandatory_break",
            DeviationKind::LoggedInOutsideShift => "logged_in_outside_shift",
            DeviationKind::NotWorkingInShift => "not_working_in_shift",
            DeviationKind::OutOfRule => "out_of_rule",
        }
    }
}

string_names!(DeviationKind, "adherence exception kind");

/// How `state` fails to meet `expected`, or `None` when it adheres.
pub fn deviation_kind(state: AgentState, expected: Expected) -> Option<DeviationKind> {
    use AgentState::*;
    match (expected, state) {
        (Expected::MandatoryBreak, Ready | OnContact | Acw) => {
            Some(DeviationKind::WorkingInMandatoryBreak)
        }
        (Expected::OffShift, LoggedOut) => None,
        (Expected::OffShift, _) => Some(DeviationKind::LoggedInOutsideShift),
        (Expected::Work, NotReady | Paused | Idle | LoggedOut) => {
            Some(DeviationKind::NotWorkingInShift)
        }
        _ => None,
    }
}
