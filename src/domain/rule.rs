//! A WFM rule, validated: when it fires, whom it moves, to what, and whom it leaves alone.
//!
//! `config::rules` builds these from `[[rules]]` tables; the rule scheduler fires them.
//! The conditions are decided here, from the agent's recorded state alone, so a firing
//! over 500 agents does not cost 500 platform calls before it starts.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use super::cron::Slots;
use super::state::AgentState;

/// A rule as the scheduler runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique among the rules; firings are recorded under it.
    pub name: String,
    pub slots: Slots,
    pub selector: RuleSelector,
    pub action: Action,
    pub conditions: Conditions,
    /// How late a slot missed while wfmd was down may still fire at start.
    pub catch_up: Duration,
    /// What a change does for an agent on a contact or in after-contact work.
    pub when_busy: RuleWhenBusy,
}

/// A rule's `when_busy`: refuse the change for a busy agent (as the platform does), or
/// let it wait for the agent to be free, for its own `defer_for` or the configured one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RuleWhenBusy {
    #[default]
    Reject,
    Defer {
        defer_for: Option<Duration>,
    },
}

impl Rule {
    /// Everything that defines the rule, as JSON: stored with each firing, and compared to
    /// decide whether an interrupted firing may be resumed by the rule now configured.
    pub fn definition(&self) -> Value {
        let mut definition = json!({
            "name": self.name,
            "cron": self.slots.pattern(),
            "timezone": self.slots.zone().name(),
            "selector": match &self.selector {
                RuleSelector::Team(team) => json!({ "team": team }),
                RuleSelector::Skill(skill) => json!({ "skill": skill }),
                RuleSelector::Agents(agents) => json!({ "agents": agents }),
                RuleSelector::All => json!({ "all": true }),
            },
            "action": match &self.action {
                Action::Set { state, reason } => json!({ "set": state, "reason": reason }),
                Action::Logout => json!({ "logout": true }),
            },
            "only_if_state": self.conditions.only_if_state,
            "skip_on_contact": self.conditions.skip_on_contact,
            "catch_up_ms": u64::try_from(self.catch_up.as_millis()).unwrap_or(u64::MAX),
        });
        // Only when deferring, so a firing interrupted before `when_busy` existed still
        // matches the rule it was made by.
        if let RuleWhenBusy::Defer { defer_for } = self.when_busy {
            definition["when_busy"] = json!({
                "defer_for_ms": defer_for.map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            });
        }
        definition
    }
}

/// Which agents a rule targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSelector {
    Team(String),
    Skill(String),
    /// Exactly these agents (platform user ids); never empty.
    Agents(Vec<String>),
    /// Every agent of the tenant.
    All,
}

impl fmt::Display for RuleSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleSelector::Team(team) => write!(f, "team {team}"),
            RuleSelector::Skill(skill) => write!(f, "skill {skill}"),
            RuleSelector::Agents(agents) => write!(f, "agents {}", agents.join(",")),
            RuleSelector::All => f.write_str("all agents"),
        }
    }
}

/// What a rule does to each agent it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set a settable state, with a reason code (the state's default when `None`).
    Set {
        state: AgentState,
        reason: Option<String>,
    },
    /// Log the agent out (allowed whatever the schedule says).
    Logout,
}

impl Action {
    pub fn target(&self) -> AgentState {
        match self {
            Action::Set { state, .. } => *state,
            Action::Logout => AgentState::LoggedOut,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Action::Set { reason, .. } => reason.as_deref(),
            Action::Logout => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Set {
                state,
                reason: Some(reason),
            } => write!(f, "set {state} ({reason})"),
            Action::Set {
                state,
                reason: None,
            } => write!(f, "set {state}"),
            Action::Logout => f.write_str("log out"),
        }
    }
}

/// Which targeted agents a firing leaves alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Move only agents in one of these states.
    pub only_if_state: Option<Vec<AgentState>>,
    /// Leave agents on a contact or wrapping one up (`ON_CONTACT`, `ACW`) alone.
    pub skip_on_contact: bool,
}

/// Why a targeted agent is not moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The agent's state is not one of `only_if_state`.
    NotInState(AgentState),
    /// `only_if_state` is set and no state is recorded for the agent.
    StateUnknown,
    /// `skip_on_contact` and the agent is on a contact or in after-contact work.
    OnContact(AgentState),
}

impl Skip {
    /// The reason's stable name, used in the store and in counts.
    pub fn kind(self) -> &'static str {
        match self {
            Skip::NotInState(_) | Skip::StateUnknown => "condition",
            Skip::OnContact(_) => "on_contact",
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NotInState(state) => write!(f, "condition not met: the agent is {state}"),
            Skip::StateUnknown => f.write_str("condition not met: no state recorded for the agent"),
            Skip::OnContact(state) => write!(f, "on a contact ({state})"),
        }
    }
}

impl Conditions {
    /// Whether an agent whose recorded state is `current` is moved, or why not.
    pub fn check(&self, current: Option<AgentState>) -> Result<(), Skip> {
        if self.skip_on_contact
            && let Some(state @ (AgentState::OnContact | AgentState::Acw)) = current
        {
            return Err(Skip::OnContact(state));
        }
        match (&self.only_if_state, current) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(Skip::StateUnknown),
            (Some(states), Some(state)) if states.contains(&state) => Ok(()),
            (Some(_), Some(state)) => Err(Skip::NotInState(state)),
        }
    }
}

impl fmt::Display for Conditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(states) = &self.only_if_state {
            let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
            parts.push(format!("only if {}", names.join(" or ")));
        }
        if self.skip_on_contact {
            parts.push("not on a contact".to_owned());
        }
        if parts.is_empty() {
            f.write_str("always")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(only: Option<&[AgentState]>, skip_on_contact: bool) -> Conditions {
        Conditions {
            only_if_state: only.map(<[AgentState]>::to_vec),
            skip_on_contact,
        }
    }

    #[test]
    fn without_conditions_every_agent_is_moved_even_of_unknown_state() {
        let none = Conditions::default();
        for state in AgentState::ALL.map(Some).into_iter().chain([None]) {
            assert_eq!(none.check(state), Ok(()), "{state:?}");
        }
    }

    #[test]
    fn only_if_state_moves_agents_in_the_listed_states_only() {
        let ready_or_idle = conditions(Some(&[AgentState::Ready, AgentState::Idle]), false);
        assert_eq!(ready_or_idle.check(Some(AgentState::Ready)), Ok(()));
        assert_eq!(ready_or_idle.check(Some(AgentState::Idle)), Ok(()));
        assert_eq!(
            ready_or_idle.check(Some(AgentState::Paused)),
            Err(Skip::NotInState(AgentState::Paused))
        );
        assert_eq!(ready_or_idle.check(None), Err(Skip::StateUnknown));
        assert_eq!(Skip::StateUnknown.kind(), "condition");
    }

    #[test]
    fn skip_on_contact_leaves_contacts_and_wrap_up_alone_and_wins_over_the_state_list() {
        let skip = conditions(Some(&[AgentState::Ready]), true);
        assert_eq!(
            skip.check(Some(AgentState::OnContact)),
            Err(Skip::OnContact(AgentState::OnContact))
        );
        assert_eq!(
            skip.check(Some(AgentState::Acw)),
            Err(Skip::OnContact(AgentState::Acw))
        );
        assert_eq!(skip.check(Some(AgentState::Ready)), Ok(()));
        assert_eq!(Skip::OnContact(AgentState::Acw).kind(), "on_contact");
        let contact_ok = conditions(None, false);
        assert_eq!(contact_ok.check(Some(AgentState::OnContact)), Ok(()));
    }

    #[test]
    fn descriptions_read_as_sentences() {
        assert_eq!(RuleSelector::Team("t_1".into()).to_string(), "team t_1");
        assert_eq!(
            RuleSelector::Agents(vec!["u_001".into(), "u_002".into()]).to_string(),
            "agents u_001,u_002"
        );
        let lunch = Action::Set {
            state: AgentState::NotReady,
            reason: Some("LUNCH".into()),
        };
        assert_eq!(lunch.to_string(), "set NOT_READY (LUNCH)");
        assert_eq!(Action::Logout.target(), AgentState::LoggedOut);
        assert_eq!(
            conditions(Some(&[AgentState::Ready]), true).to_string(),
            "only if READY, not on a contact"
        );
        assert_eq!(
            Skip::NotInState(AgentState::Paused).to_string(),
            "condition not met: the agent is PAUSED"
        );
    }
}
