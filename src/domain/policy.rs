//! Shift and break compliance: may this agent be moved to that state now?
//!
//! The rule is the platform contract's (docs/platform-api.md, compliance):
//! an agent whose schedule is not `ACTIVE` may only be moved to `LOGGED_OUT`
//! (`AGENT_NOT_SCHEDULED`), and an agent who owes a mandatory break may not be moved to
//! `READY` (`MANDATORY_BREAK_VIOLATION`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::state::{AgentState, string_names};

/// Whether the agent is scheduled to work now, as the platform said when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScheduleStatus {
    Active,
    Inactive,
}

/// One break in an agent's schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The platform's break type, e.g. `LUNCH`.
    pub kind: String,
    pub mandatory: bool,
}

impl BreakWindow {
    /// Half-open: a break that ends at 17:30 is over at 17:30.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

/// A titled work activity inside a shift (`Team meeting`, `Training`, `Phones`): time
/// the agent works, which adherence rules may judge by its title
/// (`activity = "Team meeting"`). The incontact dialect's WFM intervals with
/// `work = true` and the schedules CSV's `activity` column carry them; the v2 schedule
/// has no work activities (only breaks, titled by their `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TitledSpan {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub title: String,
}

/// An agent's schedule. Only `status` is guaranteed by the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub status: ScheduleStatus,
    /// IANA name of the agent's own time zone, when the platform gives one.
    pub timezone: Option<String>,
    pub shift_start: Option<DateTime<Utc>>,
    pub shift_end: Option<DateTime<Utc>>,
    /// `None` when the platform sent no break list: break status must then be asked for
    /// separately. `Some(vec![])` means "no breaks today", which needs no second call.
    pub breaks: Option<Vec<BreakWindow>>,
    /// The titled work activities of the schedule's shifts (empty when it names none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<TitledSpan>,
}

impl Schedule {
    pub fn is_active(&self) -> bool {
        self.status == ScheduleStatus::Active
    }

    /// Whether a mandatory break covers `at`, derived from the schedule's own break
    /// windows; `None` when the schedule carries none and the platform must be asked.
    pub fn mandatory_break_at(&self, at: DateTime<Utc>) -> Option<bool> {
        self.breaks
            .as_ref()
            .map(|breaks| breaks.iter().any(|b| b.mandatory && b.contains(at)))
    }
}

/// The platform's answer to "does this agent owe a mandatory break?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakStatus {
    pub mandatory_break_required: bool,
    pub break_start: Option<DateTime<Utc>>,
    pub break_end: Option<DateTime<Utc>>,
}

impl BreakStatus {
    /// Whether the break applies at `at`, which may be a little after the answer was
    /// fetched (answers are cached briefly): a required break stops applying once its
    /// end has passed, and a break whose window has begun applies even if the answer
    /// predates it.
    pub fn required_at(&self, at: DateTime<Utc>) -> bool {
        let flagged = self.mandatory_break_required && self.break_end.is_none_or(|end| at < end);
        let in_window = match (self.break_start, self.break_end) {
            (Some(start), Some(end)) => start <= at && at < end,
            _ => false,
        };
        flagged || in_window
    }
}

/// Why a change was refused. The names are part of the API and webhook payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Violation {
    /// The agent's schedule is not `ACTIVE`; only `LOGGED_OUT` is allowed.
    AgentNotScheduled,
    /// The agent owes a mandatory break and may not be made `READY`.
    MandatoryBreakViolation,
    /// The platform itself refused the change with 409 (e.g. the agent is on a contact).
    StateConflict,
    /// The platform has no session for the agent (logged out): no state can be set.
    AgentLoggedOut,
}

impl Violation {
    pub fn as_str(self) -> &'static str {
        match self {
            Violation::AgentNotScheduled => "AGENT_NOT_SCHEDULED",
            Violation::MandatoryBreakViolation => "MANDATORY_BREAK_VIOLATION",
            Violation::StateConflict => "STATE_CONFLICT",
            Violation::AgentLoggedOut => "AGENT_LOGGED_OUT",
        }
    }

    /// A sentence for people: CLI output and problem+json `detail`.
    pub fn describe(self) -> &'static str {
        match self {
            Violation::AgentNotScheduled => {
                "the agent is not scheduled now; only LOGGED_OUT is allowed"
            }
            Violation::MandatoryBreakViolation => {
                "the agent is in a mandatory break and may not be made READY"
            }
            Violation::StateConflict => {
                "the platform refused the change in the agent's current state"
            }
            Violation::AgentLoggedOut => {
                "the agent is logged out on the platform; no state can be set until it logs in"
            }
        }
    }
}

string_names!(Violation);

/// What a change that needs the agent's schedule does when the platform refuses this API
/// user schedule lookups (no WFM permission, 403) and no imported schedule covers the
/// agent: `[compliance] without_schedule`. Only a refusal counts: a platform that is
/// down, or that says the agent is not scheduled, is never a reason to skip the check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WithoutSchedule {
    /// The change fails, naming the ways to give wfmd schedules.
    #[default]
    Refuse,
    /// The change goes ahead without the shift and mandatory-break checks, and its
    /// attempt and audit entry say it was not checked.
    Allow,
}

/// Whether checking `target` needs the agent's schedule at all. Logging out is always
/// allowed, so it costs no schedule lookup.
pub fn needs_schedule(target: AgentState) -> bool {
    target != AgentState::LoggedOut
}

/// Whether checking `target` needs to know about mandatory breaks (only `READY` does).
pub fn needs_break_status(target: AgentState) -> bool {
    target == AgentState::Ready
}

/// The compliance decision. `scheduled` is whether the schedule is `ACTIVE`;
/// `in_mandatory_break` whether a mandatory break applies now (ignored unless the target
/// is `READY`).
pub fn check(
    target: AgentState,
    scheduled: bool,
    in_mandatory_break: bool,
) -> Result<(), Violation> {
    if target == AgentState::LoggedOut {
        return Ok(());
    }
    if !scheduled {
        return Err(Violation::AgentNotScheduled);
    }
    if target == AgentState::Ready && in_mandatory_break {
        return Err(Violation::MandatoryBreakViolation);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, h, m, 0).unwrap()
    }

    fn lunch(mandatory: bool) -> BreakWindow {
        BreakWindow {
            start: at(17, 0),
            end: at(17, 30),
            kind: "LUNCH".into(),
            mandatory,
        }
    }

    fn schedule(status: ScheduleStatus, breaks: Option<Vec<BreakWindow>>) -> Schedule {
        Schedule {
            status,
            timezone: Some("America/New_York".into()),
            shift_start: Some(at(13, 0)),
            shift_end: Some(at(21, 30)),
            breaks,
            activities: Vec::new(),
        }
    }

    #[test]
    fn unscheduled_agent_may_only_be_logged_out() {
        for target in AgentState::ALL.into_iter().filter(|s| s.is_settable()) {
            let decision = check(target, false, false);
            if target == AgentState::LoggedOut {
                assert_eq!(decision, Ok(()));
            } else {
                assert_eq!(decision, Err(Violation::AgentNotScheduled), "{target}");
            }
        }
    }

    #[test]
    fn mandatory_break_blocks_ready_only() {
        assert_eq!(
            check(AgentState::Ready, true, true),
            Err(Violation::MandatoryBreakViolation)
        );
        for target in [
            AgentState::NotReady,
            AgentState::Paused,
            AgentState::Idle,
            AgentState::LoggedOut,
        ] {
            assert_eq!(check(target, true, true), Ok(()), "{target}");
        }
        assert_eq!(check(AgentState::Ready, true, false), Ok(()));
    }

    #[test]
    fn not_scheduled_is_reported_before_the_break() {
        assert_eq!(
            check(AgentState::Ready, false, true),
            Err(Violation::AgentNotScheduled)
        );
    }

    #[test]
    fn only_ready_needs_break_status_and_logout_needs_no_schedule() {
        assert!(needs_break_status(AgentState::Ready));
        assert!(!needs_break_status(AgentState::NotReady));
        assert!(!needs_schedule(AgentState::LoggedOut));
        assert!(needs_schedule(AgentState::Paused));
    }

    #[test]
    fn schedule_break_windows_answer_break_status_without_a_second_call() {
        let with_lunch = schedule(ScheduleStatus::Active, Some(vec![lunch(true)]));
        assert_eq!(with_lunch.mandatory_break_at(at(16, 59)), Some(false));
        assert_eq!(with_lunch.mandatory_break_at(at(17, 0)), Some(true));
        assert_eq!(with_lunch.mandatory_break_at(at(17, 29)), Some(true));
        assert_eq!(with_lunch.mandatory_break_at(at(17, 30)), Some(false));

        let optional = schedule(ScheduleStatus::Active, Some(vec![lunch(false)]));
        assert_eq!(optional.mandatory_break_at(at(17, 10)), Some(false));

        let no_breaks_today = schedule(ScheduleStatus::Active, Some(vec![]));
        assert_eq!(no_breaks_today.mandatory_break_at(at(17, 10)), Some(false));

        let unknown = schedule(ScheduleStatus::Active, None);
        assert_eq!(unknown.mandatory_break_at(at(17, 10)), None);
    }

    #[test]
    fn cached_break_status_follows_its_window() {
        let required = BreakStatus {
            mandatory_break_required: true,
            break_start: Some(at(17, 0)),
            break_end: Some(at(17, 30)),
        };
        assert!(required.required_at(at(17, 10)));
        assert!(
            !required.required_at(at(17, 30)),
            "over once the end passed"
        );

        let upcoming = BreakStatus {
            mandatory_break_required: false,
            ..required.clone()
        };
        assert!(!upcoming.required_at(at(16, 59)));
        assert!(
            upcoming.required_at(at(17, 0)),
            "begun since it was fetched"
        );

        let bare_flag = BreakStatus {
            mandatory_break_required: true,
            break_start: None,
            break_end: None,
        };
        assert!(bare_flag.required_at(at(3, 0)));
    }

    #[test]
    fn violation_names_match_the_contract() {
        assert_eq!(
            serde_json::to_string(&Violation::AgentNotScheduled).unwrap(),
            "\"AGENT_NOT_SCHEDULED\""
        );
        assert_eq!(
            Violation::MandatoryBreakViolation.as_str(),
            "MANDATORY_BREAK_VIOLATION"
        );
    }
}
