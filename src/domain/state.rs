//! Agent states, default reason codes and the origin of a change.

use serde::{Deserialize, Serialize};

/// A value that is not one of the allowed names; the message lists the allowed ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`; expected one of: {allowed}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub allowed: String,
}

impl UnknownValue {
    /// The one of `all` that `name` names (by `matches`), or the error listing them all;
    /// `kind` says what was looked for.
    pub fn find<T: Copy>(
        kind: &'static str,
        all: &[T],
        name: fn(T) -> &'static str,
        value: &str,
        matches: fn(&str, &str) -> bool,
    ) -> Result<T, UnknownValue> {
        all.iter()
            .copied()
            .find(|item| matches(name(*item), value))
            .ok_or_else(|| UnknownValue {
                kind,
                value: value.to_owned(),
                allowed: all
                    .iter()
                    .map(|item| name(*item))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// `Display` by `as_str` for an enum whose names are part of the API, the store or the
/// configuration; given what its values are (`"agent state"`), also `FromStr`, which
/// finds a name among `ALL` (exactly, or in `any case`) or answers an [`UnknownValue`]
/// listing them.
macro_rules! string_names {
    ($ty:ident) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
    ($ty:ident, $kind:literal) => {
        $crate::domain::state::string_names!(@parse $ty, $kind, |a, b| a == b);
    };
    ($ty:ident, $kind:literal, any case) => {
        $crate::domain::state::string_names!(@parse $ty, $kind, str::eq_ignore_ascii_case);
    };
    (@parse $ty:ident, $kind:literal, $matches:expr) => {
        $crate::domain::state::string_names!($ty);

        impl ::std::str::FromStr for $ty {
            type Err = $crate::domain::UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::domain::UnknownValue::find($kind, &$ty::ALL, $ty::as_str, s, $matches)
            }
        }
    };
}
pub(crate) use string_names;

/// An agent's state on the platform.
///
/// `ON_CONTACT` and `ACW` are observed only: the platform refuses to set them, so
/// [`AgentState::is_settable`] is false for them and callers reject them up front.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentState {
    Ready,
    NotReady,
    Paused,
    Idle,
    LoggedOut,
    OnContact,
    Acw,
}

impl AgentState {
    pub const ALL: [AgentState; 7] = [
        AgentState::Ready,
        AgentState::NotReady,
        AgentState::Paused,
        AgentState::Idle,
        AgentState::LoggedOut,
        AgentState::OnContact,
        AgentState::Acw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Ready => "READY",
            AgentState::NotReady => "NOT_READY",
            AgentState::Paused => "PAUSED",
            AgentState::Idle => "IDLE",
            AgentState::LoggedOut => "LOGGED_OUT",
            AgentState::OnContact => "ON_CONTACT",
            AgentState::Acw => "ACW",
        }
    }

    /// Whether a client may ask the platform for this state.
    pub fn is_settable(self) -> bool {
        !matches!(self, AgentState::OnContact | AgentState::Acw)
    }

    /// Whether time in this state counts as idle time (IDLE, PAUSED and NOT_READY).
    pub fn is_idle(self) -> bool {
        matches!(
            self,
            AgentState::Idle | AgentState::Paused | AgentState::NotReady
        )
    }

    /// The reason code sent when the caller gives none.
    pub fn default_reason(self) -> &'static str {
        match self {
            AgentState::Ready => "WORKING",
            AgentState::NotReady => "BREAK",
            AgentState::Paused => "ADHOC",
            AgentState::Idle => "SYSTEM_IDLE",
            _ => "GENERAL",
        }
    }
}

// The platform's names in any letter case: `not_ready` works on a command line.
string_names!(AgentState, "agent state", any case);

/// Who or what asked for a change. Stored with every interval, attempt and audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A WFM rule or schedule automation.
    Rule,
    /// The HTTP API.
    Api,
    /// The `wfmd transition` command.
    Cli,
    /// An item of a supervisor's bulk job.
    Bulk,
    /// The agent changed state themselves; seen through state sync.
    Observed,
}

impl Origin {
    pub const ALL: [Origin; 5] = [
        Origin::Rule,
        Origin::Api,
        Origin::Cli,
        Origin::Bulk,
        Origin::Observed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Rule => "rule",
            Origin::Api => "api",
            Origin::Cli => "cli",
            Origin::Bulk => "bulk",
            Origin::Observed => "observed",
        }
    }
}

string_names!(Origin, "origin");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip_through_display_serde_and_from_str() {
        for state in AgentState::ALL {
            assert_eq!(state.as_str().parse::<AgentState>().unwrap(), state);
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<AgentState>(&json).unwrap(), state);
        }
        assert_eq!("not_ready".parse::<AgentState>(), Ok(AgentState::NotReady));
    }

    #[test]
    fn unknown_state_error_names_the_value_and_the_allowed_ones() {
        let err = "LUNCH".parse::<AgentState>().unwrap_err();
        let message = err.to_string();
        assert!(message.contains("`LUNCH`"), "{message}");
        assert!(message.contains("NOT_READY"), "{message}");
    }

    #[test]
    fn default_reasons_follow_the_platform_contract() {
        assert_eq!(AgentState::Ready.default_reason(), "WORKING");
        assert_eq!(AgentState::NotReady.default_reason(), "BREAK");
        assert_eq!(AgentState::Paused.default_reason(), "ADHOC");
        assert_eq!(AgentState::Idle.default_reason(), "SYSTEM_IDLE");
        assert_eq!(AgentState::LoggedOut.default_reason(), "GENERAL");
    }

    #[test]
    fn only_observed_states_are_unsettable_and_only_three_are_idle() {
        let unsettable: Vec<_> = AgentState::ALL
            .into_iter()
            .filter(|s| !s.is_settable())
            .collect();
        assert_eq!(unsettable, [AgentState::OnContact, AgentState::Acw]);
        let idle: Vec<_> = AgentState::ALL
            .into_iter()
            .filter(|s| s.is_idle())
            .collect();
        assert_eq!(
            idle,
            [AgentState::NotReady, AgentState::Paused, AgentState::Idle]
        );
    }
}
