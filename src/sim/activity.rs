//! What agents do on their own: they log in at shift start, take contacts while READY
//! (ON_CONTACT with a queue, then ACW with a wrap-up code, then READY again), go NOT_READY
//! for their breaks and back, and log off at shift end.
//!
//! Nothing runs in the background. Each agent has one pending "next activity at"; a
//! priority queue orders them, and [`Activity::run_until`] applies everything due up to an
//! instant, in time order. Whoever reads the world first brings it up to the clock, so the
//! sequence of changes is a pure function of (seed, tenant, simulated time, changes made
//! from outside) and never of who looked when. Each agent draws from its own random
//! stream, seeded from (tenant seed, agent index), so agents do not disturb each other.
//!
//! A change made from outside (a caller's POST, `force_state`) holds until the agent's
//! next scheduled activity: a contact only reaches a READY agent, a break start or end and
//! the shift end still apply. Break starts and the shift end wait for a contact in
//! progress to be wrapped up, as a real agent would finish the call first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::tenant::{ContactDetails, SimAgent, Tenant, default_reason};

/// Queues a contact can come from (the first queues of the queue listing).
pub(crate) const QUEUES: [&str; 5] = ["Support-T1", "Support-T2", "Billing", "Sales", "Retention"];
/// Wrap-up codes, `RESOLVED` weighted as the usual outcome.
const WRAP_UP_CODES: [&str; 6] = [
    "RESOLVED",
    "RESOLVED",
    "RESOLVED",
    "ESCALATED",
    "CALLBACK_SCHEDULED",
    "TRANSFERRED",
];

/// How long a contact lasts, in milliseconds (2–8 min).
const CONTACT_MS: (i64, i64) = (120_000, 480_000);
/// How long wrap-up lasts (30–90 s).
const ACW_MS: (i64, i64) = (30_000, 90_000);
/// How long a READY agent waits for the next contact (0.5–5 min).
const GAP_MS: (i64, i64) = (30_000, 300_000);

/// Keeps the activity streams apart from the tenant's and the faults' streams.
const ACTIVITY_SALT: u64 = 0xac71_7171_ac71_7171;

/// A point of an agent's schedule where something is due.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Boundary {
    ShiftEnd,
    BreakEnd,
    ShiftStart,
    /// Carries the break's type, which becomes the NOT_READY reason (`LUNCH`, `BREAK`).
    BreakStart(String),
}

impl Boundary {
    /// Order among boundaries at the same instant: ends before starts, so back-to-back
    /// windows hand over cleanly and a break ending with the shift logs the agent off.
    fn rank(&self) -> u8 {
        match self {
            Boundary::ShiftEnd => 0,
            Boundary::BreakEnd => 1,
            Boundary::ShiftStart => 2,
            Boundary::BreakStart(_) => 3,
        }
    }
}

/// One agent's private randomness and timers.
struct AgentActivity {
    id: String,
    rng: StdRng,
    /// Shift and break boundaries after creation, in time order.
    schedule: Vec<(DateTime<Utc>, Boundary)>,
    next_boundary: usize,
    /// When the next contact arrives; counts only while READY.
    contact_at: Option<DateTime<Utc>>,
    /// When the current contact or wrap-up ends; counts only while ON_CONTACT or ACW.
    phase_end: Option<DateTime<Utc>>,
    /// Bumped at every reschedule: queue entries with an older one are stale.
    generation: u64,
}

impl AgentActivity {
    fn new(seed: u64, index: usize, agent: &SimAgent, t0: DateTime<Utc>) -> Self {
        // An odd multiplier spreads neighbouring indices over the whole seed space.
        let mixed = seed ^ ACTIVITY_SALT ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut schedule = vec![
            (agent.shift_start, Boundary::ShiftStart),
            (agent.shift_end, Boundary::ShiftEnd),
        ];
        for b in &agent.breaks {
            schedule.push((b.start, Boundary::BreakStart(b.kind.clone())));
            schedule.push((b.end, Boundary::BreakEnd));
        }
        // What lies before creation is already reflected in the generated state.
        schedule.retain(|(at, _)| *at > t0);
        schedule.sort_by_key(|(at, b)| (*at, b.rank()));
        AgentActivity {
            id: agent.id.clone(),
            rng: StdRng::seed_from_u64(mixed),
            schedule,
            next_boundary: 0,
            contact_at: None,
            phase_end: None,
            generation: 0,
        }
    }

    fn queue(&mut self) -> String {
        (*QUEUES.choose(&mut self.rng).expect("queues")).to_owned()
    }

    fn wrap_up_code(&mut self) -> String {
        (*WRAP_UP_CODES.choose(&mut self.rng).expect("codes")).to_owned()
    }

    fn draw(&mut self, (lo, hi): (i64, i64)) -> TimeDelta {
        TimeDelta::milliseconds(self.rng.random_range(lo..=hi))
    }

    /// Puts `agent` in `state` at `at` with the contact details that state carries, and
    /// (when activity is on) starts the timer that state runs.
    fn enter(
        &mut self,
        agent: &mut SimAgent,
        state: &str,
        reason: &str,
        at: DateTime<Utc>,
        timers: bool,
    ) {
        let contact = match state {
            "ON_CONTACT" => ContactDetails {
                queue: Some(self.queue()),
                wrap_up_code: None,
            },
            // Wrap-up follows a contact: keep its queue when there was one.
            "ACW" => ContactDetails {
                queue: Some(agent.queue.clone().unwrap_or_else(|| self.queue())),
                wrap_up_code: Some(self.wrap_up_code()),
            },
            _ => ContactDetails::default(),
        };
        agent.set_state(state, reason, at, contact);
        if timers {
            match state {
                "READY" => self.contact_at = Some(at + self.draw(GAP_MS)),
                "ON_CONTACT" => self.phase_end = Some(at + self.draw(CONTACT_MS)),
                "ACW" => self.phase_end = Some(at + self.draw(ACW_MS)),
                _ => {}
            }
        }
    }

    /// The instant of this agent's next activity, given its current state.
    fn due(&self, agent: &SimAgent) -> Option<DateTime<Utc>> {
        let boundary = self.schedule.get(self.next_boundary).map(|(at, _)| *at);
        let timer = match agent.state.as_str() {
            "READY" => self.contact_at,
            "ON_CONTACT" | "ACW" => self.phase_end,
            _ => None,
        };
        match (boundary, timer) {
            (Some(b), Some(t)) => Some(b.min(t)),
            (b, t) => b.or(t),
        }
    }

    /// Applies the one activity due at `at` (the instant [`Self::due`] gave).
    fn step(&mut self, agent: &mut SimAgent, at: DateTime<Utc>) {
        let state = agent.state.clone();
        let busy = matches!(state.as_str(), "ON_CONTACT" | "ACW");
        if let Some((b_at, boundary)) = self.schedule.get(self.next_boundary).cloned()
            && b_at <= at
        {
            self.next_boundary += 1;
            match boundary {
                Boundary::ShiftStart if state == "LOGGED_OUT" => {
                    self.enter(agent, "READY", default_reason("READY"), at, true);
                }
                Boundary::BreakStart(kind)
                    if !busy
                        && state != "LOGGED_OUT"
                        && !(state == "NOT_READY" && agent.reason == kind) =>
                {
                    self.enter(agent, "NOT_READY", &kind, at, true);
                }
                Boundary::BreakEnd
                    if !busy && !matches!(state.as_str(), "LOGGED_OUT" | "READY") =>
                {
                    self.enter(agent, "READY", default_reason("READY"), at, true);
                }
                Boundary::ShiftEnd if !busy && state != "LOGGED_OUT" => {
                    self.enter(agent, "LOGGED_OUT", default_reason("LOGGED_OUT"), at, true);
                }
                // Busy agents pick deferred boundaries up when their wrap-up ends.
                _ => {}
            }
            return;
        }
        match state.as_str() {
            "ON_CONTACT" => {
                self.phase_end = None;
                self.enter(agent, "ACW", default_reason("ACW"), at, true);
            }
            "ACW" => {
                self.phase_end = None;
                if at >= agent.shift_end {
                    self.enter(agent, "LOGGED_OUT", default_reason("LOGGED_OUT"), at, true);
                } else if let Some(kind) = agent
                    .breaks
                    .iter()
                    .find(|b| b.start <= at && at < b.end)
                    .map(|b| b.kind.clone())
                {
                    self.enter(agent, "NOT_READY", &kind, at, true);
                } else {
                    self.enter(agent, "READY", default_reason("READY"), at, true);
                }
            }
            "READY" => {
                self.contact_at = None;
                self.enter(agent, "ON_CONTACT", default_reason("ON_CONTACT"), at, true);
            }
            _ => {}
        }
    }
}

/// The agents' own behaviour, kept beside the tenant in the simulator state.
pub(crate) struct Activity {
    /// Whether agents act on their own; when off, only contact details are kept.
    enabled: bool,
    agents: Vec<AgentActivity>,
    /// Agent id to index (generation order, which is also id order).
    index: HashMap<String, usize>,
    /// (due, agent index, generation), earliest first; ties go to the lower index.
    queue: BinaryHeap<Reverse<(DateTime<Utc>, usize, u64)>>,
    /// Activities applied so far (a measure of the work done).
    applied: u64,
    /// Ground-truth log entries kept per agent (`SimConfig::state_log_limit`).
    log_limit: Option<usize>,
}

impl Activity {
    /// Prepares every agent of `tenant` (generated at `t0`) and gives the contacts already
    /// in progress a queue (and, with activity on, an end).
    pub fn new(
        seed: u64,
        tenant: &mut Tenant,
        t0: DateTime<Utc>,
        enabled: bool,
        log_limit: Option<usize>,
    ) -> Self {
        let mut activity = Activity {
            enabled,
            agents: Vec::with_capacity(tenant.agents.len()),
            index: HashMap::with_capacity(tenant.agents.len()),
            queue: BinaryHeap::new(),
            applied: 0,
            log_limit,
        };
        for (i, (id, agent)) in tenant.agents.iter_mut().enumerate() {
            if let Some(limit) = log_limit {
                // Room for one entry beyond the limit, so trimming never reallocates and
                // a capped log costs the same memory on the first change as on the last.
                agent
                    .state_log
                    .reserve_exact((limit + 1).saturating_sub(agent.state_log.len()));
            }
            let mut a = AgentActivity::new(seed, i, agent, t0);
            if agent.state == "ON_CONTACT" {
                let queue = a.queue();
                agent.queue = Some(queue.clone());
                if let Some(first) = agent.state_log.first_mut() {
                    first.queue = Some(queue);
                }
            }
            if enabled {
                match agent.state.as_str() {
                    "READY" => a.contact_at = Some(t0 + a.draw(GAP_MS)),
                    "ON_CONTACT" => a.phase_end = Some(t0 + a.draw(CONTACT_MS)),
                    _ => {}
                }
            }
            activity.agents.push(a);
            activity.index.insert(id.clone(), i);
            activity.reschedule(i, agent);
        }
        activity
    }

    /// How many activities have been applied since creation.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies, in time order, every activity due at or before `t`.
    pub fn run_until(&mut self, t: DateTime<Utc>, tenant: &mut Tenant) {
        while let Some(&Reverse((at, i, generation))) = self.queue.peek() {
            if at > t {
                break;
            }
            self.queue.pop();
            let a = &mut self.agents[i];
            if a.generation != generation {
                continue;
            }
            let agent = tenant
                .agents
                .get_mut(&a.id)
                .expect("activity only tracks agents of the tenant");
            a.step(agent, at);
            self.applied += 1;
            self.trim_log(agent);
            self.reschedule(i, agent);
        }
    }

    /// Changes an agent's state from outside (a caller's POST, or `force_state`) at `at`.
    /// False for an unknown agent.
    pub fn change(
        &mut self,
        tenant: &mut Tenant,
        id: &str,
        state: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> bool {
        let (Some(&i), Some(agent)) = (self.index.get(id), tenant.agents.get_mut(id)) else {
            return false;
        };
        self.agents[i].enter(agent, state, reason, at, self.enabled);
        self.trim_log(agent);
        self.reschedule(i, agent);
        true
    }

    /// Drops the oldest ground-truth entries beyond the configured limit.
    fn trim_log(&self, agent: &mut SimAgent) {
        if let Some(limit) = self.log_limit
            && agent.state_log.len() > limit
        {
            let excess = agent.state_log.len() - limit;
            agent.state_log.drain(..excess);
        }
    }

    /// Queues agent `i`'s next activity, making any earlier entry stale.
    fn reschedule(&mut self, i: usize, agent: &SimAgent) {
        if !self.enabled {
            return;
        }
        let a = &mut self.agents[i];
        a.generation += 1;
        if let Some(due) = a.due(agent) {
            self.queue.push(Reverse((due, i, a.generation)));
        }
    }
}
