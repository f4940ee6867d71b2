//! The wallboard endpoints (docs/platform-api.md): skill and queue listings, skill data and
//! queue stats, with figures that follow the simulated agents.
//!
//! Agent counts are read from the tenant when asked: a skill's available agents are its
//! READY agents, its staffed agents the logged-in agents with the skill, and so on; a
//! queue is served by one skill and counts that skill's agents. Contacts waiting come
//! from a line per skill and per queue that advances in fixed steps of simulated time,
//! interleaved with the agents' own activity (see `SimState::run_until`), so each step
//! sees the READY agents of its instant: contacts arrive at a rate that swells and ebbs
//! over a two-hour cycle, READY agents take them first come first served, and the
//! service level is the share answered within 30 s over the last hour. Every line draws
//! from its own random stream, seeded from the tenant seed and the line's index, so the
//! figures are a function of seed, tenant and simulated time, never of who looked when.
//!
//! As on the platform, skill data leaves out a skill with no activity (nobody staffed,
//! nothing queued or active), and queue stats refuse more than 100 ids (400). Answers
//! carry the platform's time in their `Date` header. A family whose scope is denied
//! ([`super::Simulator::deny_scope`]) answers 403 naming the missing scope.

use std::collections::{BTreeSet, HashMap, VecDeque};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Simulator;
use super::activity::QUEUES;
use super::tenant::Tenant;
use super::wire::ApiError;

/// The scope the skill listing and skill data need.
pub const SKILLS_SCOPE: &str = "reporting:skill:view";
/// The scope the queue listing and queue stats need.
pub const QUEUES_SCOPE: &str = "reporting:queue:view";
/// The scope schedule and break-status lookups need (on `incontact`, the WFM schedule
/// export): a tenant whose API user has no WFM permission.
pub const SCHEDULES_SCOPE: &str = "wfm:schedule:view";

/// The most queue ids one queue-stats call takes.
const MAX_QUEUE_IDS: usize = 100;
/// How far the lines move at each step (the platform refreshes every 15–30 s).
const STEP: TimeDelta = TimeDelta::seconds(15);
/// A contact answered within this long counts for the service level.
const SL_THRESHOLD: TimeDelta = TimeDelta::seconds(30);
/// Steps the service level looks back over: one hour.
const WINDOW_STEPS: usize = 240;
/// Contacts a line holds at most; later arrivals are turned away.
const MAX_WAITING: usize = 999;
/// Arrival trials per step; each succeeds with the line's current probability.
const ARRIVAL_TRIALS: usize = 4;
/// Contacts a READY agent takes per step, on average.
const SERVE_SHARE: f64 = 0.2;
/// Length of the arrival swell, in seconds.
const CYCLE_SECS: f64 = 2.0 * 3600.0;
/// Keeps the lines' streams apart from the tenant's, the activity's and the faults'.
const LINES_SALT: u64 = 0x11ae_5eed_11ae_5eed;

const SKILL_NAMES: [(&str, &str); 8] = [
    ("Tier 1 Voice", "voice"),
    ("Tier 2 Voice", "voice"),
    ("Billing Voice", "voice"),
    ("Sales Chat", "chat"),
    ("Support Email", "email"),
    ("Retention Voice", "voice"),
    ("Tech Chat", "chat"),
    ("Claims Email", "email"),
];

/// A skill of the simulated tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimSkill {
    pub id: String,
    pub name: String,
    pub media_type: String,
}

/// A queue of the simulated tenant, served by the agents of one skill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimQueue {
    pub id: String,
    pub name: String,
    pub skill: String,
}

/// A skill's agents by what they are doing now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Staffing {
    /// READY.
    pub ready: u32,
    /// Logged in (any state but LOGGED_OUT).
    pub staffed: u32,
    pub on_contact: u32,
    pub acw: u32,
}

/// Every skill's staffing, from the agents' current states.
pub(crate) fn staffing(tenant: &Tenant) -> HashMap<&str, Staffing> {
    let mut by_skill: HashMap<&str, Staffing> = HashMap::new();
    for agent in tenant.agents.values() {
        if agent.state == "LOGGED_OUT" {
            continue;
        }
        for skill in &agent.skills {
            let s = by_skill.entry(skill.as_str()).or_default();
            s.staffed += 1;
            match agent.state.as_str() {
                "READY" => s.ready += 1,
                "ON_CONTACT" => s.on_contact += 1,
                "ACW" => s.acw += 1,
                _ => {}
            }
        }
    }
    by_skill
}

/// Contacts waiting for one skill or queue, and who was answered how fast.
#[derive(Debug)]
struct Line {
    rng: StdRng,
    /// Arrival probability per trial at the top of the swell.
    peak: f64,
    /// Where in the swell this line starts, in radians.
    phase: f64,
    /// Arrival instants of the contacts waiting, oldest first.
    waiting: VecDeque<DateTime<Utc>>,
    /// (answered, answered within the threshold) per step, newest last.
    window: VecDeque<(u32, u32)>,
    answered: u32,
    within: u32,
}

impl Line {
    fn new(seed: u64, index: u64) -> Line {
        let mixed = seed ^ LINES_SALT ^ (index + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = StdRng::seed_from_u64(mixed);
        let peak = rng.random_range(0.15..0.5);
        let phase = rng.random_range(0.0..std::f64::consts::TAU);
        Line {
            rng,
            peak,
            phase,
            waiting: VecDeque::new(),
            window: VecDeque::with_capacity(WINDOW_STEPS + 1),
            answered: 0,
            within: 0,
        }
    }

    /// One step at `at` with `ready` agents to take contacts.
    fn step(&mut self, at: DateTime<Utc>, ready: u32) {
        let angle = std::f64::consts::TAU * (at.timestamp() as f64 / CYCLE_SECS) + self.phase;
        let swell = 0.5 + 0.5 * angle.sin();
        let p = self.peak * (0.2 + 0.8 * swell);
        for _ in 0..ARRIVAL_TRIALS {
            if self.rng.random::<f64>() < p && self.waiting.len() < MAX_WAITING {
                self.waiting.push_back(at);
            }
        }
        let capacity = (f64::from(ready) * SERVE_SHARE + self.rng.random::<f64>()).floor() as usize;
        let mut answered = 0;
        let mut within = 0;
        for _ in 0..capacity.min(self.waiting.len()) {
            let arrived = self.waiting.pop_front().expect("counted above");
            answered += 1;
            if at - arrived <= SL_THRESHOLD {
                within += 1;
            }
        }
        self.window.push_back((answered, within));
        self.answered += answered;
        self.within += within;
        if self.window.len() > WINDOW_STEPS
            && let Some((a, w)) = self.window.pop_front()
        {
            self.answered -= a;
            self.within -= w;
        }
    }

    /// Share of the last hour's answered contacts answered within the threshold; with
    /// none answered, 1.0 while nobody waits and 0.0 while someone does.
    fn service_level(&self) -> f64 {
        if self.answered == 0 {
            if self.waiting.is_empty() { 1.0 } else { 0.0 }
        } else {
            f64::from(self.within) / f64::from(self.answered)
        }
    }

    fn longest_wait_secs(&self, now: DateTime<Utc>) -> i64 {
        self.waiting
            .front()
            .map_or(0, |&arrived| (now - arrived).num_seconds().max(0))
    }

    fn average_wait_ms(&self, now: DateTime<Utc>) -> i64 {
        if self.waiting.is_empty() {
            return 0;
        }
        let total: i64 = self
            .waiting
            .iter()
            .map(|&arrived| (now - arrived).num_milliseconds().max(0))
            .sum();
        total / self.waiting.len() as i64
    }
}

/// The tenant's skills and queues with their lines.
#[derive(Debug)]
pub(crate) struct Lines {
    pub skills: Vec<SimSkill>,
    pub queues: Vec<SimQueue>,
    skill_lines: Vec<Line>,
    queue_lines: Vec<Line>,
    skill_index: HashMap<String, usize>,
    queue_index: HashMap<String, usize>,
    /// When the next step is due.
    next_step: DateTime<Utc>,
    /// Scopes the client is denied (403), e.g. [`QUEUES_SCOPE`].
    pub denied_scopes: BTreeSet<String>,
}

impl Lines {
    /// The skills `skill_ids` (the tenant's pool) and `queue_count` queues, all empty at
    /// `t0`.
    pub fn new(seed: u64, skill_ids: Vec<String>, queue_count: usize, t0: DateTime<Utc>) -> Lines {
        let skills: Vec<SimSkill> = skill_ids
            .into_iter()
            .enumerate()
            .map(|(n, id)| {
                let (name, media) = SKILL_NAMES[n % SKILL_NAMES.len()];
                SimSkill {
                    id,
                    name: numbered(name, n / SKILL_NAMES.len()),
                    media_type: media.to_owned(),
                }
            })
            .collect();
        let queues: Vec<SimQueue> = (0..queue_count)
            .map(|n| SimQueue {
                id: format!("q_{}", n + 1),
                name: numbered(QUEUES[n % QUEUES.len()], n / QUEUES.len()),
                skill: skills[n % skills.len()].id.clone(),
            })
            .collect();
        let skill_lines = (0..skills.len())
            .map(|n| Line::new(seed, n as u64))
            .collect();
        // Queue streams start far from the skills' so adding skills never shifts them.
        let queue_lines = (0..queues.len())
            .map(|n| Line::new(seed, (1 << 32) + n as u64))
            .collect();
        Lines {
            skill_index: index_of(skills.iter().map(|s| &s.id)),
            queue_index: index_of(queues.iter().map(|q| &q.id)),
            skills,
            queues,
            skill_lines,
            queue_lines,
            next_step: t0 + STEP,
            denied_scopes: BTreeSet::new(),
        }
    }

    /// The next step's instant, when it is due by `t`.
    pub fn due(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (self.next_step <= t).then_some(self.next_step)
    }

    /// Moves every line one step, at `at`, with the tenant's agents as they are now.
    pub fn step(&mut self, at: DateTime<Utc>, tenant: &Tenant) {
        let staffing = staffing(tenant);
        let ready = |skill: &str| staffing.get(skill).map_or(0, |s| s.ready);
        for (skill, line) in self.skills.iter().zip(&mut self.skill_lines) {
            line.step(at, ready(&skill.id));
        }
        for (queue, line) in self.queues.iter().zip(&mut self.queue_lines) {
            line.step(at, ready(&queue.skill));
        }
        self.next_step = at + STEP;
    }

    pub(crate) fn denied(&self, scope: &str) -> Result<(), ApiError> {
        if self.denied_scopes.contains(scope) {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("missing scope {scope}"),
            ))
        } else {
            Ok(())
        }
    }

    /// The skill-data entry of `id` at `now`; `None` for an unknown or idle skill.
    fn skill_data(
        &self,
        id: &str,
        staffing: &HashMap<&str, Staffing>,
        now: DateTime<Utc>,
    ) -> Option<Value> {
        let &n = self.skill_index.get(id)?;
        let skill = &self.skills[n];
        let line = &self.skill_lines[n];
        let s = staffing.get(id).copied().unwrap_or_default();
        let queued = line.waiting.len() as u32;
        if s.staffed == 0 && queued == 0 && s.on_contact == 0 {
            return None;
        }
        let estimated_wait = if queued == 0 {
            0
        } else {
            // Each READY agent takes SERVE_SHARE contacts a step.
            let per_second = (f64::from(s.ready.max(1)) * SERVE_SHARE) / STEP.as_seconds_f64();
            (f64::from(queued) / per_second).round() as i64
        };
        Some(json!({
            "skillId": skill.id,
            "skillName": skill.name,
            "contactsQueued": queued,
            "contactsActive": s.on_contact,
            "longestQueueDuration": line.longest_wait_secs(now),
            "serviceLevel": two_places(line.service_level()),
            "agentsAvailable": s.ready,
            "agentsStaffed": s.staffed,
            "agentsOnContact": s.on_contact,
            "agentsInACW": s.acw,
            "currentEstimatedWaitTime": estimated_wait,
        }))
    }

    /// The queue-stats entry of `id` at `now`; `None` for an unknown queue.
    fn queue_stats(
        &self,
        id: &str,
        staffing: &HashMap<&str, Staffing>,
        now: DateTime<Utc>,
    ) -> Option<Value> {
        let &n = self.queue_index.get(id)?;
        let queue = &self.queues[n];
        let line = &self.queue_lines[n];
        let s = staffing
            .get(queue.skill.as_str())
            .copied()
            .unwrap_or_default();
        Some(json!({
            "queueId": queue.id,
            "name": queue.name,
            "agentsLoggedOn": s.staffed,
            "agentsAvailable": s.ready,
            "agentsBusy": s.on_contact + s.acw,
            "callsWaiting": line.waiting.len(),
            "averageWaitTime": line.average_wait_ms(now),
            "serviceLevel": two_places(line.service_level()),
        }))
    }
}

fn index_of<'a>(ids: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
    ids.enumerate().map(|(n, id)| (id.clone(), n)).collect()
}

/// `name`, then `name 2`, `name 3`… for later rounds through a list of names.
fn numbered(name: &str, round: usize) -> String {
    match round {
        0 => name.to_owned(),
        r => format!("{name} {}", r + 1),
    }
}

fn two_places(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The wallboard routes, relative to the tenant's base.
pub(crate) fn metrics_router() -> Router<Simulator> {
    Router::new()
        .route("/api/v2/skills", get(list_skills))
        .route("/api/v2/queues", get(list_queues))
        .route(
            "/inContactAPI/services/v18.0/real-time-data/skill-data",
            get(skill_data),
        )
        .route("/api/v2/reporting/queues/realtime", post(queue_stats))
}

/// A JSON answer with the platform's time as its `Date`.
fn dated(body: Value, now: DateTime<Utc>) -> Response {
    let mut response = axum::Json(body).into_response();
    let date = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = HeaderValue::from_str(&date) {
        response.headers_mut().insert(header::DATE, value);
    }
    response
}

async fn list_skills(State(sim): State<Simulator>) -> Result<Response, ApiError> {
    let (st, now) = sim.sync();
    st.lines.denied(SKILLS_SCOPE)?;
    let skills: Vec<Value> = st
        .lines
        .skills
        .iter()
        .map(|s| json!({"skillId": s.id, "skillName": s.name, "mediaType": s.media_type}))
        .collect();
    Ok(dated(json!({ "skills": skills }), now))
}

async fn list_queues(State(sim): State<Simulator>) -> Result<Response, ApiError> {
    let (st, now) = sim.sync();
    st.lines.denied(QUEUES_SCOPE)?;
    let queues: Vec<Value> = st
        .lines
        .queues
        .iter()
        .map(|q| json!({"queueId": q.id, "name": q.name}))
        .collect();
    Ok(dated(json!({ "queues": queues }), now))
}

#[derive(Deserialize)]
struct SkillFilter {
    #[serde(rename = "skillId")]
    skill_id: Option<String>,
}

async fn skill_data(
    State(sim): State<Simulator>,
    filter: Result<Query<SkillFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (st, now) = sim.sync();
    st.lines.denied(SKILLS_SCOPE)?;
    // Without `skillId`, every skill of the tenant.
    let ids: Vec<&str> = match &filter.skill_id {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .collect(),
        None => st.lines.skills.iter().map(|s| s.id.as_str()).collect(),
    };
    let staffing = staffing(&st.tenant);
    let data: Vec<Value> = ids
        .into_iter()
        .filter_map(|id| st.lines.skill_data(id, &staffing, now))
        .collect();
    Ok(dated(json!({ "skillData": data }), now))
}

#[derive(Deserialize)]
struct QueueStatsBody {
    #[serde(rename = "queueIds")]
    queue_ids: Vec<String>,
}

async fn queue_stats(State(sim): State<Simulator>, body: Bytes) -> Result<Response, ApiError> {
    let body: QueueStatsBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid queue stats body: {e}")))?;
    if body.queue_ids.len() > MAX_QUEUE_IDS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_QUEUE_IDS} queueIds per request, got {}",
            body.queue_ids.len()
        )));
    }
    let (st, now) = sim.sync();
    st.lines.denied(QUEUES_SCOPE)?;
    let unknown: Vec<&str> = body
        .queue_ids
        .iter()
        .map(String::as_str)
        .filter(|id| !st.lines.queue_index.contains_key(*id))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::not_found(format!(
            "unknown queue {}",
            unknown.join(", ")
        )));
    }
    let staffing = staffing(&st.tenant);
    let queues: Vec<Value> = body
        .queue_ids
        .iter()
        .filter_map(|id| st.lines.queue_stats(id, &staffing, now))
        .collect();
    Ok(dated(json!({ "queues": queues }), now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_fills_without_ready_agents_and_drains_with_them() {
        let t0: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
        let mut line = Line::new(7, 0);
        let mut at = t0;
        for _ in 0..120 {
            at += STEP;
            line.step(at, 0);
        }
        let filled = line.waiting.len();
        assert!(
            filled > 10,
            "30 minutes without agents queue contacts: {filled}"
        );
        assert_eq!(line.service_level(), 0.0, "nobody was answered");
        let longest = line.longest_wait_secs(at);
        assert!(
            longest > 0 && longest <= (at - t0).num_seconds(),
            "{longest}"
        );
        for _ in 0..120 {
            at += STEP;
            line.step(at, 20);
        }
        assert!(line.waiting.len() < 3, "20 READY agents drain it");
        let sl = line.service_level();
        assert!(sl > 0.0 && sl < 1.0, "the backlog was answered late: {sl}");
    }

    #[test]
    fn the_service_level_forgets_what_is_older_than_an_hour() {
        let mut line = Line::new(3, 0);
        let mut at: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
        for _ in 0..60 {
            at += STEP;
            line.step(at, 0);
        }
        for _ in 0..(2 * WINDOW_STEPS) {
            at += STEP;
            line.step(at, 30);
        }
        assert_eq!(line.window.len(), WINDOW_STEPS);
        assert_eq!(
            line.service_level(),
            1.0,
            "the late backlog is out of the window"
        );
    }
}
