//! The simulated tenant: agents, teams, skills, schedules, breaks and agent states.
//!
//! The tenant is generated once from a seed and an agent count, with every time placed
//! relative to the simulated instant of creation (t0), so it makes sense whenever a test
//! runs. Agents come in kinds assigned by index (`i % 10`) so that even a 10-agent tenant
//! holds every situation the compliance rules care about: off shift, inside a mandatory
//! break, on a contact, and working with breaks still ahead. The state-change rules of
//! docs/platform-api.md (settable vs observed-only states, default reason codes) live here,
//! written from the contract rather than borrowed from wfmd's own domain types.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// States a caller may set through `POST /api/v2/users/{userId}/state`.
pub const SETTABLE_STATES: [&str; 5] = ["READY", "NOT_READY", "PAUSED", "IDLE", "LOGGED_OUT"];
/// States the platform reports but refuses to set (400).
pub const OBSERVED_STATES: [&str; 2] = ["ON_CONTACT", "ACW"];

/// The contract's reason code for a state change that names none.
pub fn default_reason(state: &str) -> &'static str {
    match state {
        "READY" => "WORKING",
        "NOT_READY" => "BREAK",
        "PAUSED" => "ADHOC",
        "IDLE" => "SYSTEM_IDLE",
        _ => "GENERAL",
    }
}

/// Whether `state` is one of the seven states of the contract.
pub fn is_known_state(state: &str) -> bool {
    SETTABLE_STATES.contains(&state) || OBSERVED_STATES.contains(&state)
}

/// One scheduled break of an agent's shift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimBreak {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The schedule's `type` field, e.g. `LUNCH` or `BREAK`.
    pub kind: String,
    pub mandatory: bool,
}

impl SimBreak {
    fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// A titled work activity inside an agent's shift (`Team meeting`, `Training`): work
/// time the schedule names. The incontact WFM export lists it as an interval with
/// `work = true` and its `activityCode.title`; the v2 schedule has no field for it
/// (docs/platform-api.md), so v2 clients never see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimActivity {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub title: String,
}

/// One entry of an agent's ground-truth state log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimStateChange {
    pub at: DateTime<Utc>,
    pub state: String,
    pub reason: String,
    /// The queue of the contact, for `ON_CONTACT` and `ACW` entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The wrap-up code, for `ACW` entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrap_up_code: Option<String>,
}

/// Ground truth about one agent, as the simulated platform holds it.
#[derive(Debug, Clone, Serialize)]
pub struct SimAgent {
    pub id: String,
    pub name: String,
    pub team_id: String,
    pub team_name: String,
    pub skills: Vec<String>,
    pub timezone: String,
    pub state: String,
    pub reason: String,
    pub changed_at: DateTime<Utc>,
    /// The queue of the agent's current contact; `None` unless `ON_CONTACT` or `ACW`.
    pub queue: Option<String>,
    /// The wrap-up code of the contact just handled; `None` unless `ACW`.
    pub wrap_up_code: Option<String>,
    pub shift_start: DateTime<Utc>,
    pub shift_end: DateTime<Utc>,
    pub breaks: Vec<SimBreak>,
    /// False when the schedule answer omits `breaks`, so a client must ask the breaks
    /// endpoint to learn about them.
    pub breaks_in_schedule: bool,
    /// Titled work activities inside the shift, clear of its breaks.
    pub activities: Vec<SimActivity>,
    /// Every change, initial state first.
    pub state_log: Vec<SimStateChange>,
}

impl SimAgent {
    /// Whether the shift window `[shift_start, shift_end)` contains `t`.
    pub fn on_shift_at(&self, t: DateTime<Utc>) -> bool {
        self.shift_start <= t && t < self.shift_end
    }

    /// Whether a mandatory break contains `t`.
    pub fn in_mandatory_break_at(&self, t: DateTime<Utc>) -> bool {
        self.breaks.iter().any(|b| b.mandatory && b.contains(t))
    }

    /// The mandatory break that `t` falls in, else the next one still ahead. The tenant
    /// models a single shift per agent, so "the next one today" is simply the next one.
    pub(crate) fn current_or_next_mandatory_break(&self, t: DateTime<Utc>) -> Option<&SimBreak> {
        let mut mandatory = self.breaks.iter().filter(|b| b.mandatory);
        mandatory
            .clone()
            .find(|b| b.contains(t))
            .or_else(|| mandatory.find(|b| b.start > t))
    }

    /// Applies a state change at `at`, recording it in the ground-truth log. The contact
    /// details are kept only for the states they belong to, whatever the caller passes.
    pub(crate) fn set_state(
        &mut self,
        state: &str,
        reason: &str,
        at: DateTime<Utc>,
        contact: ContactDetails,
    ) {
        let on_contact = OBSERVED_STATES.contains(&state);
        self.state = state.to_owned();
        self.reason = reason.to_owned();
        self.changed_at = at;
        self.queue = contact.queue.filter(|_| on_contact);
        self.wrap_up_code = contact.wrap_up_code.filter(|_| state == "ACW");
        self.state_log.push(SimStateChange {
            at,
            state: state.to_owned(),
            reason: reason.to_owned(),
            queue: self.queue.clone(),
            wrap_up_code: self.wrap_up_code.clone(),
        });
    }
}

/// What the platform knows about the contact an agent is handling.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContactDetails {
    pub queue: Option<String>,
    pub wrap_up_code: Option<String>,
}

/// The situation an agent is generated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentKind {
    /// Shift entirely later today; logged out now.
    OffShift,
    /// On shift, inside a mandatory break that started five minutes before t0.
    InMandatoryBreak,
    /// On shift and talking to a customer: state changes answer 409.
    OnContact,
    /// On shift, breaks still ahead, in an ordinary working state.
    Working,
}

impl AgentKind {
    pub(crate) fn for_index(i: usize) -> Self {
        match i % 10 {
            0 => AgentKind::OffShift,
            1 => AgentKind::InMandatoryBreak,
            2 => AgentKind::OnContact,
            _ => AgentKind::Working,
        }
    }
}

/// Whether agent `i`'s schedule omits `breaks`. The decade shift (`i / 10`) moves the
/// pattern across kinds from one block of ten to the next, so about a quarter of all
/// agents are affected, spread over every kind, and index 1 (in a mandatory break now) is
/// always among them.
fn omits_breaks(i: usize) -> bool {
    (i + i / 10) % 4 == 1
}

const FIRST_NAMES: [&str; 40] = [
    "Ada", "Ben", "Carmen", "Dmitri", "Elena", "Farah", "Gustavo", "Hana", "Ibrahim", "Julia",
    "Kofi", "Lena", "Marcus", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Samir", "Tamara",
    "Umar", "Vera", "Wei", "Ximena", "Yusuf", "Zoe", "Aiko", "Bruno", "Chloe", "Diego", "Esther",
    "Felix", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Luis", "Maya", "Noah",
];

const LAST_NAMES: [&str; 40] = [
    "Park",
    "Okafor",
    "Silva",
    "Novak",
    "Haddad",
    "Lindqvist",
    "Moreno",
    "Tanaka",
    "Kowalski",
    "Mensah",
    "Rossi",
    "Dubois",
    "Schmidt",
    "Reyes",
    "Nguyen",
    "Patel",
    "O'Brien",
    "Costa",
    "Fischer",
    "Kim",
    "Santos",
    "Johansson",
    "Ali",
    "Murphy",
    "Chen",
    "Garcia",
    "Ivanova",
    "Brennan",
    "Yamamoto",
    "Adeyemi",
    "Larsen",
    "Mendes",
    "Popescu",
    "Walsh",
    "Cruz",
    "Bauer",
    "Khan",
    "Dlamini",
    "Ortiz",
    "Laine",
];

const TEAM_NAMES: [&str; 12] = [
    "Care",
    "Billing",
    "Sales",
    "Tech Support",
    "Retention",
    "Onboarding",
    "Collections",
    "Claims",
    "Escalations",
    "Loyalty",
    "Premium",
    "Returns",
];

const TIMEZONES: [&str; 5] = [
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/London",
    "Asia/Manila",
];

/// The simulated tenant's agents, keyed (and so ordered) by id.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub agents: BTreeMap<String, SimAgent>,
}

impl Tenant {
    /// Generates `count` agents, numbered from `first`, from `seed`, with every time
    /// relative to `t0`.
    ///
    /// The random draws never depend on `t0`, so the same seed and count give the same
    /// ids, names, teams, skills, zones, kinds and initial states whenever it runs.
    pub fn generate(count: usize, first: usize, seed: u64, t0: DateTime<Utc>) -> Self {
        let t0 = t0.trunc_subsecs(0);
        let mut rng = StdRng::seed_from_u64(seed);
        let team_count = (count / 10).max(1);
        let team_names: Vec<String> = (0..team_count).map(team_name).collect();
        let skill_pool = skill_pool(count);

        // Every team gets agents and the sizes stay even, but which agents (and so which
        // kinds) land in which team depends on the seed.
        let mut team_of: Vec<usize> = (0..count).map(|i| i % team_count).collect();
        team_of.shuffle(&mut rng);

        let width = (first + count - 1).to_string().len().max(3);
        let mut used_names = std::collections::HashSet::new();
        let mut agents = BTreeMap::new();
        for (i, &team) in team_of.iter().enumerate() {
            let id = format!("u_{:0width$}", first + i);
            let name = pick_name(&mut rng, &mut used_names);
            let skill_count = rng.random_range(1..=3usize);
            let mut skills: Vec<String> = skill_pool
                .choose_multiple(&mut rng, skill_count)
                .cloned()
                .collect();
            skills.sort();
            let timezone = (*TIMEZONES.choose(&mut rng).expect("zones")).to_owned();
            let plan = plan_day(AgentKind::for_index(i), i, &mut rng, t0);
            let agent = SimAgent {
                id: id.clone(),
                name,
                team_id: format!("t_{}", team + 1),
                team_name: team_names[team].clone(),
                skills,
                timezone,
                state: plan.state.to_owned(),
                reason: plan.reason.clone(),
                changed_at: plan.changed_at,
                queue: None,
                wrap_up_code: None,
                shift_start: plan.shift_start,
                shift_end: plan.shift_end,
                breaks: plan.breaks,
                breaks_in_schedule: !omits_breaks(i),
                activities: plan.activities,
                state_log: vec![SimStateChange {
                    at: plan.changed_at,
                    state: plan.state.to_owned(),
                    reason: plan.reason,
                    queue: None,
                    wrap_up_code: None,
                }],
            };
            agents.insert(id, agent);
        }
        Tenant { agents }
    }
}

/// The tenant's skills (`s_100`, `s_101`, …): two more than there are teams, at least
/// three. Agents draw their skills from this pool; the skill listing serves all of it.
pub(crate) fn skill_pool(agent_count: usize) -> Vec<String> {
    let team_count = (agent_count / 10).max(1);
    (0..(team_count + 2).max(3))
        .map(|n| format!("s_{}", 100 + n))
        .collect()
}

fn team_name(n: usize) -> String {
    let base = TEAM_NAMES[n % TEAM_NAMES.len()];
    match n / TEAM_NAMES.len() {
        0 => base.to_owned(),
        round => format!("{base} {}", round + 1),
    }
}

/// A random full name, avoiding repeats while unused combinations are easy to find.
fn pick_name(rng: &mut StdRng, used: &mut std::collections::HashSet<String>) -> String {
    let mut name = String::new();
    for _ in 0..20 {
        let first = FIRST_NAMES.choose(rng).expect("first names");
        let last = LAST_NAMES.choose(rng).expect("last names");
        name = format!("{first} {last}");
        if used.insert(name.clone()) {
            break;
        }
    }
    name
}

struct DayPlan {
    shift_start: DateTime<Utc>,
    shift_end: DateTime<Utc>,
    breaks: Vec<SimBreak>,
    activities: Vec<SimActivity>,
    state: &'static str,
    reason: String,
    changed_at: DateTime<Utc>,
}

fn minutes(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

/// A random multiple of `step` minutes in `lo..=hi`.
fn stepped(rng: &mut StdRng, lo: i64, hi: i64, step: i64) -> TimeDelta {
    minutes(lo + rng.random_range(0..=(hi - lo) / step) * step)
}

fn brk(start: DateTime<Utc>, length: TimeDelta, kind: &str, mandatory: bool) -> SimBreak {
    SimBreak {
        start,
        end: start + length,
        kind: kind.to_owned(),
        mandatory,
    }
}

/// A titled work activity from half an hour before `t0` to half an hour after.
fn activity(t0: DateTime<Utc>, title: &str) -> SimActivity {
    SimActivity {
        start: t0 - minutes(30),
        end: t0 + minutes(30),
        title: title.to_owned(),
    }
}

/// The shift, breaks, activities and initial state of agent `i` of `kind`, relative to
/// `t0`.
fn plan_day(kind: AgentKind, i: usize, rng: &mut StdRng, t0: DateTime<Utc>) -> DayPlan {
    match kind {
        AgentKind::OffShift => {
            let shift_start = t0 + stepped(rng, 60, 240, 15);
            let logged_out_for = TimeDelta::seconds(rng.random_range(8 * 3600..=14 * 3600));
            DayPlan {
                shift_start,
                shift_end: shift_start + minutes(8 * 60 + 30),
                breaks: vec![
                    brk(shift_start + minutes(120), minutes(15), "BREAK", false),
                    brk(shift_start + minutes(240), minutes(30), "LUNCH", true),
                ],
                activities: Vec::new(),
                state: "LOGGED_OUT",
                reason: default_reason("LOGGED_OUT").to_owned(),
                changed_at: t0 - logged_out_for,
            }
        }
        AgentKind::InMandatoryBreak => {
            let kind = *["LUNCH", "BREAK"].choose(rng).expect("break kinds");
            let break_start = t0 - minutes(5);
            DayPlan {
                shift_start: t0 - stepped(rng, 120, 300, 15),
                shift_end: t0 + stepped(rng, 180, 300, 15),
                breaks: vec![
                    brk(break_start, minutes(60), kind, true),
                    brk(t0 + minutes(120), minutes(15), "BREAK", false),
                ],
                activities: Vec::new(),
                state: "NOT_READY",
                reason: kind.to_owned(),
                changed_at: break_start,
            }
        }
        AgentKind::OnContact | AgentKind::Working => {
            let shift_start = t0 - stepped(rng, 60, 240, 15);
            let shift_end = t0 + stepped(rng, 240, 420, 15);
            let breaks = vec![
                brk(t0 + stepped(rng, 45, 120, 5), minutes(30), "LUNCH", true),
                brk(t0 + stepped(rng, 165, 210, 5), minutes(15), "BREAK", false),
            ];
            let changed_at = t0 - TimeDelta::seconds(rng.random_range(60..=2400));
            let (state, reason) = if kind == AgentKind::OnContact {
                ("ON_CONTACT", default_reason("ON_CONTACT").to_owned())
            } else {
                let state = ["READY", "NOT_READY", "IDLE", "PAUSED"][(i % 10 - 3) % 4];
                let reason = if state == "NOT_READY" {
                    *["MEETING", "TRAINING"].choose(rng).expect("reasons")
                } else {
                    default_reason(state)
                };
                (state, reason.to_owned())
            };
            // An agent NOT_READY for a meeting or a training is in one the schedule names:
            // half an hour either side of t0, inside the shift (it started an hour ago at
            // the latest) and before the lunch (45 minutes ahead at the soonest). No
            // random draw, so every other agent is generated as before.
            let activities = match reason.as_str() {
                "MEETING" => vec![activity(t0, "Team meeting")],
                "TRAINING" => vec![activity(t0, "Training")],
                _ => Vec::new(),
            };
            DayPlan {
                shift_start,
                shift_end,
                breaks,
                activities,
                state,
                reason,
                changed_at,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-11-20T14:30:00Z".parse().unwrap()
    }

    /// Everything the seed decides, one line per agent.
    fn summary(t: &Tenant) -> Vec<String> {
        t.agents
            .values()
            .map(|a| {
                format!(
                    "{} {} {} {:?} {} {} {}",
                    a.id, a.name, a.team_id, a.skills, a.timezone, a.state, a.reason
                )
            })
            .collect()
    }

    #[test]
    fn same_seed_gives_the_same_tenant_at_any_time() {
        let a = Tenant::generate(50, 1, 7, t0());
        let b = Tenant::generate(50, 1, 7, t0() + TimeDelta::hours(9));
        assert_eq!(summary(&a), summary(&b));
        let kinds = |t: &Tenant, at: DateTime<Utc>| -> Vec<(bool, bool, bool)> {
            t.agents
                .values()
                .map(|a| {
                    (
                        a.on_shift_at(at),
                        a.in_mandatory_break_at(at),
                        a.breaks_in_schedule,
                    )
                })
                .collect()
        };
        assert_eq!(kinds(&a, t0()), kinds(&b, t0() + TimeDelta::hours(9)));
    }

    #[test]
    fn different_seed_gives_a_different_tenant() {
        let a = Tenant::generate(50, 1, 7, t0());
        let b = Tenant::generate(50, 1, 8, t0());
        let names = |t: &Tenant| {
            t.agents
                .values()
                .map(|a| a.name.clone())
                .collect::<Vec<_>>()
        };
        assert_ne!(names(&a), names(&b));
        assert_ne!(summary(&a), summary(&b));
    }

    #[test]
    fn ids_are_zero_padded_and_widen_for_large_tenants() {
        let small = Tenant::generate(12, 1, 1, t0());
        let ids: Vec<&str> = small.agents.keys().map(String::as_str).collect();
        assert_eq!(ids.first(), Some(&"u_001"));
        assert_eq!(ids.last(), Some(&"u_012"));

        let large = Tenant::generate(1200, 1, 1, t0());
        assert!(large.agents.contains_key("u_0001"));
        assert!(large.agents.contains_key("u_1200"));
        // Equal width keeps string order equal to numeric order.
        let keys: Vec<&String> = large.agents.keys().collect();
        assert_eq!(keys[999], "u_1000");
    }

    #[test]
    fn teams_skills_and_zones_are_realistic() {
        let t = Tenant::generate(50, 1, 3, t0());
        let teams: std::collections::BTreeSet<(&str, &str)> = t
            .agents
            .values()
            .map(|a| (a.team_id.as_str(), a.team_name.as_str()))
            .collect();
        assert_eq!(teams.len(), 5, "k = agents / 10 teams, each non-empty");
        assert!(teams.contains(&("t_1", "Care")));
        assert!(teams.contains(&("t_4", "Tech Support")));
        let zones: std::collections::BTreeSet<&str> =
            t.agents.values().map(|a| a.timezone.as_str()).collect();
        assert!(zones.len() >= 3, "zones spread: {zones:?}");
        for a in t.agents.values() {
            assert!((1..=3).contains(&a.skills.len()), "{}", a.id);
            assert!(a.skills.iter().all(|s| s.starts_with("s_1")));
            assert!(a.name.contains(' '));
        }
        assert_eq!(
            Tenant::generate(3, 1, 3, t0())
                .agents
                .values()
                .next()
                .unwrap()
                .team_id,
            "t_1"
        );
    }

    #[test]
    fn agents_numbered_from_another_first_are_the_same_agents_under_other_ids() {
        let first = Tenant::generate(50, 1, 7, t0());
        let second = Tenant::generate(50, 51, 7, t0());
        let ids: Vec<&String> = second.agents.keys().collect();
        assert_eq!(ids.first().map(|id| id.as_str()), Some("u_051"));
        assert_eq!(ids.last().map(|id| id.as_str()), Some("u_100"));
        for (a, b) in first.agents.values().zip(second.agents.values()) {
            assert_eq!(
                (&a.name, &a.team_id, &a.state),
                (&b.name, &b.team_id, &b.state)
            );
        }
        let wide = Tenant::generate(10, 995, 7, t0());
        assert!(wide.agents.contains_key("u_0995") && wide.agents.contains_key("u_1004"));
    }

    #[test]
    fn every_kind_is_present_in_a_ten_agent_tenant() {
        let t = Tenant::generate(10, 1, 42, t0());
        let now = t0();
        let agents: Vec<&SimAgent> = t.agents.values().collect();
        assert!(
            agents
                .iter()
                .any(|a| !a.on_shift_at(now) && a.shift_start > now && a.state == "LOGGED_OUT")
        );
        assert!(agents.iter().any(|a| a.on_shift_at(now)
            && a.in_mandatory_break_at(now)
            && a.state == "NOT_READY"
            && (a.reason == "LUNCH" || a.reason == "BREAK")));
        assert!(
            agents
                .iter()
                .any(|a| a.on_shift_at(now) && a.state == "ON_CONTACT")
        );
        let working: Vec<&&SimAgent> = agents
            .iter()
            .filter(|a| a.on_shift_at(now) && !a.in_mandatory_break_at(now))
            .filter(|a| ["READY", "NOT_READY", "IDLE", "PAUSED"].contains(&a.state.as_str()))
            .collect();
        for state in ["READY", "NOT_READY", "IDLE", "PAUSED"] {
            assert!(working.iter().any(|a| a.state == state), "{state} missing");
        }
        for a in working {
            assert!(
                a.breaks.iter().all(|b| b.start > now),
                "{} breaks ahead",
                a.id
            );
            assert!(a.breaks.iter().any(|b| b.mandatory) && a.breaks.iter().any(|b| !b.mandatory));
        }
    }

    #[test]
    fn mandatory_break_now_spans_five_minutes_before_to_fifty_five_after() {
        let t = Tenant::generate(10, 1, 42, t0());
        let a = &t.agents["u_002"];
        let b = a.current_or_next_mandatory_break(t0()).unwrap();
        assert_eq!(b.start, t0() - minutes(5));
        assert_eq!(b.end, t0() + minutes(55));
        assert_eq!(a.changed_at, b.start);
    }

    #[test]
    fn about_a_quarter_omit_breaks_across_kinds_including_one_in_a_break() {
        let t = Tenant::generate(40, 1, 9, t0());
        let omitted: Vec<&SimAgent> = t
            .agents
            .values()
            .filter(|a| !a.breaks_in_schedule)
            .collect();
        assert_eq!(omitted.len(), 10);
        assert!(omitted.iter().any(|a| a.in_mandatory_break_at(t0())));
        assert!(omitted.iter().any(|a| !a.on_shift_at(t0())));
        assert!(omitted.iter().any(|a| a.state == "ON_CONTACT"));
        let small = Tenant::generate(10, 1, 9, t0());
        assert!(
            small
                .agents
                .values()
                .any(|a| !a.breaks_in_schedule && a.in_mandatory_break_at(t0()))
        );
    }

    #[test]
    fn breaks_lie_inside_the_shift() {
        let t = Tenant::generate(100, 1, 5, t0());
        for a in t.agents.values() {
            assert!(a.shift_start < a.shift_end);
            for b in &a.breaks {
                assert!(
                    a.shift_start <= b.start && b.end <= a.shift_end,
                    "{}: {b:?}",
                    a.id
                );
            }
        }
    }

    #[test]
    fn next_mandatory_break_is_found_before_it_starts_and_gone_after() {
        let t = Tenant::generate(10, 1, 1, t0());
        let a = &t.agents["u_004"];
        let lunch = a.breaks.iter().find(|b| b.mandatory).unwrap().clone();
        assert_eq!(a.current_or_next_mandatory_break(t0()), Some(&lunch));
        assert!(!a.in_mandatory_break_at(t0()));
        assert!(a.in_mandatory_break_at(lunch.start));
        assert!(!a.in_mandatory_break_at(lunch.end));
        assert_eq!(a.current_or_next_mandatory_break(lunch.end), None);
    }

    #[test]
    fn default_reasons_follow_the_contract() {
        assert_eq!(default_reason("READY"), "WORKING");
        assert_eq!(default_reason("NOT_READY"), "BREAK");
        assert_eq!(default_reason("PAUSED"), "ADHOC");
        assert_eq!(default_reason("IDLE"), "SYSTEM_IDLE");
        assert_eq!(default_reason("LOGGED_OUT"), "GENERAL");
        assert!(is_known_state("ACW") && !is_known_state("LUNCH"));
    }
}
