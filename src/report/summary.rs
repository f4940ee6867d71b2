//! Per-agent aggregates of a window: counted by SQLite, never by loading attempts.
//!
//! Counts, the mean latency and the nearest-rank p95 come out of two grouped queries
//! (one row per agent each). Intervals are read with a cursor ordered by agent, and each
//! agent's run of intervals goes through [`idle::time_in_state`], so only one agent's
//! intervals are in memory at a time. The stored shifts are read alongside with a second
//! cursor in the same order, and an agent with shifts also gets its adherence figures
//! ([`adherence::figures`]). Those read the intervals of a day before the window too, so
//! that an exception that opened before the window is not counted in it again.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::FromRow;

use crate::domain::AgentState;
use crate::domain::adherence::{self, AdherenceFigures, Timeline};
use crate::domain::adherence_rules::Judging;
use crate::domain::idle::{self, Interval, TimeInState, Window};
use crate::store::roster::RosterEntry;
use crate::store::schedules::{self, ShiftRow};
use crate::store::{Pool, from_ms, on, to_ms};
use crate::store::{authorisations, history};

/// How far before the window intervals and shifts are read for the adherence figures.
const ADHERENCE_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The longest window whose schedule-against-actual view a report carries per agent:
/// a local day, the 25 hours of one that ends summer time included.
pub const MAX_DAY_VIEW: chrono::TimeDelta = chrono::TimeDelta::hours(25);

/// One agent's line of the report. Field names are the CSV columns.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentSummary {
    pub agent_id: String,
    /// The agent's name as the platform last listed it (the store's agent roster);
    /// unknown for an agent wfmd never saw listed.
    pub name: Option<String>,
    /// The agent's team, from the same listing.
    pub team_id: Option<String>,
    /// The team's name.
    pub team: Option<String>,
    /// Attempts requested in the window.
    pub transitions: i64,
    pub succeeded: i64,
    pub rejections: i64,
    pub failed: i64,
    pub rejections_agent_not_scheduled: i64,
    pub rejections_mandatory_break_violation: i64,
    pub rejections_state_conflict: i64,
    /// Rejections per attempt; unknown without attempts.
    pub violation_frequency: Option<f64>,
    pub latency_mean_ms: Option<f64>,
    /// Nearest-rank 95th percentile.
    pub latency_p95_ms: Option<i64>,
    /// Time in IDLE, PAUSED and NOT_READY.
    pub idle_seconds: f64,
    pub seconds_ready: f64,
    pub seconds_not_ready: f64,
    pub seconds_paused: f64,
    pub seconds_idle: f64,
    pub seconds_logged_out: f64,
    pub seconds_on_contact: f64,
    pub seconds_acw: f64,
    /// Time in adherence per observed scheduled time, in percent; unknown without any.
    /// Scheduled time with no recorded state (before wfmd first saw the agent, or still
    /// to come) is left out, and reported as `unobserved_seconds`.
    pub adherence_pct: Option<f64>,
    /// Time inside the agent's shifts; unknown when no shift of the agent is stored.
    pub scheduled_seconds: Option<f64>,
    /// Scheduled time whose recorded state met the schedule.
    pub in_adherence_seconds: Option<f64>,
    /// Scheduled time with no recorded state, which the percentage leaves out.
    pub unobserved_seconds: Option<f64>,
    /// Observed scheduled time an adherence rule counts neither way, which the
    /// percentage leaves out.
    pub neutral_seconds: Option<f64>,
    /// Observed scheduled time a supervisor authorised (or excused the exception of),
    /// which the percentage leaves out.
    pub authorised_seconds: Option<f64>,
    /// The schedule against the recorded states, judged, over a window of at most a
    /// local day ([`MAX_DAY_VIEW`]); empty for longer windows or without a stored shift. The
    /// HTML page draws it.
    #[serde(skip)]
    pub day: Vec<adherence::DaySpan>,
    /// Adherence exceptions that opened in the window (deviations longer than
    /// `compliance.exception_threshold`).
    pub adherence_exceptions: Option<u32>,
}

impl AgentSummary {
    fn new(agent_id: String) -> Self {
        AgentSummary {
            agent_id,
            ..AgentSummary::default()
        }
    }

    fn set_time(&mut self, time: &TimeInState) {
        let seconds = |ms: i64| ms as f64 / 1000.0;
        self.idle_seconds = seconds(time.idle_ms);
        self.seconds_ready = seconds(time.ms_in(AgentState::Ready));
        self.seconds_not_ready = seconds(time.ms_in(AgentState::NotReady));
        self.seconds_paused = seconds(time.ms_in(AgentState::Paused));
        self.seconds_idle = seconds(time.ms_in(AgentState::Idle));
        self.seconds_logged_out = seconds(time.ms_in(AgentState::LoggedOut));
        self.seconds_on_contact = seconds(time.ms_in(AgentState::OnContact));
        self.seconds_acw = seconds(time.ms_in(AgentState::Acw));
    }

    /// Seconds in each state, in the order of the reports' columns: READY, NOT_READY,
    /// PAUSED, IDLE, LOGGED_OUT, ON_CONTACT, ACW.
    pub fn seconds_by_state(&self) -> [f64; 7] {
        [
            self.seconds_ready,
            self.seconds_not_ready,
            self.seconds_paused,
            self.seconds_idle,
            self.seconds_logged_out,
            self.seconds_on_contact,
            self.seconds_acw,
        ]
    }

    /// An agent with 1 s in READY, 2 s in NOT_READY, … 7 s in ACW: each state's time
    /// told apart, in [`AgentSummary::seconds_by_state`]'s order.
    #[cfg(test)]
    pub(super) fn timed_apart() -> Self {
        AgentSummary {
            seconds_ready: 1.0,
            seconds_not_ready: 2.0,
            seconds_paused: 3.0,
            seconds_idle: 4.0,
            seconds_logged_out: 5.0,
            seconds_on_contact: 6.0,
            seconds_acw: 7.0,
            ..AgentSummary::default()
        }
    }

    /// Takes the agent's name and team from `roster`; leaves them unknown when the
    /// roster does not hold the agent.
    pub fn set_names(&mut self, roster: &HashMap<String, RosterEntry>) {
        if let Some(entry) = roster.get(&self.agent_id) {
            self.name = entry.name.clone();
            self.team_id = entry.team_id.clone();
            self.team = entry.team_name.clone();
        }
    }

    fn set_adherence(&mut self, figures: &AdherenceFigures) {
        self.adherence_pct = figures.adherence_pct();
        self.scheduled_seconds = Some(figures.scheduled_ms as f64 / 1000.0);
        self.in_adherence_seconds = Some(figures.in_adherence_ms as f64 / 1000.0);
        self.unobserved_seconds = Some(figures.unobserved_ms() as f64 / 1000.0);
        self.neutral_seconds = Some(figures.neutral_ms as f64 / 1000.0);
        self.authorised_seconds = Some(figures.authorised_ms as f64 / 1000.0);
        self.adherence_exceptions = Some(figures.exceptions);
    }
}

/// One agent's schedule against its recorded states over a window, judged.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentDay {
    /// Back-to-back spans covering the window ([`adherence::day_spans`]).
    pub spans: Vec<adherence::DaySpan>,
    /// What the spans' scheduled part adds up to: the figures the report gives the agent.
    pub figures: AdherenceFigures,
}

/// The schedule against the recorded states of `agent_id` over `window`, judged by
/// `judging` exactly as [`summarize`] judges the agent (the same day of lookback, the
/// same authorisations); `None` when no shift of the agent is stored around the window.
/// The spans are all in memory: the caller keeps the window to days.
pub async fn agent_day(
    pool: &Pool,
    agent_id: &str,
    window: Window,
    now: DateTime<Utc>,
    judging: &Judging,
) -> Result<Option<AgentDay>, sqlx::Error> {
    let lookback = window.from - ADHERENCE_LOOKBACK;
    let shifts: Vec<_> = schedules::of_agent(pool, agent_id, lookback, window.to)
        .await?
        .into_iter()
        .map(|s| s.shift)
        .collect();
    if shifts.is_empty() {
        return Ok(None);
    }
    let run: Vec<Interval> = history::overlapping(pool, agent_id, lookback, window.to)
        .await?
        .iter()
        .filter_map(|row| row.to_interval())
        .collect();
    let authorised = {
        let mut conn = pool.acquire().await?;
        authorisations::counted(&mut conn, to_ms(lookback), to_ms(window.to)).await?
    };
    let timeline = timeline(&shifts, authorised.get(agent_id).map(Vec::as_slice));
    Ok(Some(AgentDay {
        spans: adherence::day_spans(&run, &timeline, window, now, judging),
        figures: adherence::figures(&run, &timeline, window, now, judging),
    }))
}

/// The agent's shifts, with the spans a supervisor authorised (or excused the exception
/// of) laid over them.
fn timeline(
    shifts: &[adherence::Shift],
    authorised: Option<&[(DateTime<Utc>, DateTime<Utc>)]>,
) -> Timeline {
    match authorised {
        Some(spans) => Timeline::new(shifts).authorised(spans),
        None => Timeline::new(shifts),
    }
}

#[derive(FromRow)]
struct Counts {
    agent_id: String,
    transitions: i64,
    succeeded: i64,
    rejections: i64,
    failed: i64,
    not_scheduled: i64,
    mandatory_break: i64,
    state_conflict: i64,
    latency_mean: f64,
}

const COUNTS: &str = "SELECT agent_id,
        COUNT(*) AS transitions,
        COUNT(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
        COUNT(*) FILTER (WHERE outcome = 'rejected') AS rejections,
        COUNT(*) FILTER (WHERE outcome = 'failed') AS failed,
        COUNT(*) FILTER (WHERE outcome = 'rejected' AND violation = 'AGENT_NOT_SCHEDULED') AS not_scheduled,
        COUNT(*) FILTER (WHERE outcome = 'rejected' AND violation = 'MANDATORY_BREAK_VIOLATION') AS mandatory_break,
        COUNT(*) FILTER (WHERE outcome = 'rejected' AND violation = 'STATE_CONFLICT') AS state_conflict,
        CAST(AVG(latency_ms) AS DOUBLE PRECISION) AS latency_mean
    FROM transition_attempts
    WHERE requested_at >= $1 AND requested_at < $2
    GROUP BY agent_id";

/// Nearest rank: the ⌈0.95·n⌉-th smallest latency, i.e. `(95n + 99) / 100` in integers.
const P95: &str = "SELECT agent_id, latency_ms FROM (
        SELECT agent_id, latency_ms,
            ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY latency_ms) AS position,
            COUNT(*) OVER (PARTITION BY agent_id) AS n
        FROM transition_attempts
        WHERE requested_at >= $1 AND requested_at < $2) AS ranked
    WHERE position = (n * 95 + 99) / 100";

const INTERVALS: &str = "SELECT agent_id, state, reason, started_at, ended_at FROM state_intervals
    WHERE started_at < $2 AND (ended_at IS NULL OR ended_at > $1)
    ORDER BY agent_id, started_at, id";

#[derive(FromRow)]
struct IntervalRow {
    agent_id: String,
    state: String,
    reason: Option<String>,
    started_at: i64,
    ended_at: Option<i64>,
}

/// One summary per agent with an attempt requested in, or an interval overlapping, the
/// window; ordered by agent id. Open intervals count up to `min(now, window.to)`;
/// adherence is judged by `judging` (the rules and their grace).
pub async fn summarize(
    pool: &Pool,
    window: Window,
    now: DateTime<Utc>,
    judging: &Judging,
) -> Result<Vec<AgentSummary>, sqlx::Error> {
    let (from, to) = (to_ms(window.from), to_ms(window.to));
    let mut agents: BTreeMap<String, AgentSummary> = BTreeMap::new();
    // The intervals and the shifts are read together, on two connections.
    let pool = &pool.grouped(2);

    let mut counts = on!(pool, |c| sqlx::query_as::<_, Counts>(COUNTS)
        .bind(from)
        .bind(to)
        .fetch(c));
    while let Some(row) = counts.try_next().await? {
        let summary = agents
            .entry(row.agent_id.clone())
            .or_insert_with(|| AgentSummary::new(row.agent_id));
        summary.transitions = row.transitions;
        summary.succeeded = row.succeeded;
        summary.rejections = row.rejections;
        summary.failed = row.failed;
        summary.rejections_agent_not_scheduled = row.not_scheduled;
        summary.rejections_mandatory_break_violation = row.mandatory_break;
        summary.rejections_state_conflict = row.state_conflict;
        summary.latency_mean_ms = Some(row.latency_mean);
        summary.violation_frequency = Some(row.rejections as f64 / row.transitions as f64);
    }
    drop(counts);

    let mut p95 = on!(pool, |c| sqlx::query_as::<_, (String, i64)>(P95)
        .bind(from)
        .bind(to)
        .fetch(c));
    while let Some((agent_id, latency)) = p95.try_next().await? {
        if let Some(summary) = agents.get_mut(&agent_id) {
            summary.latency_p95_ms = Some(latency);
        }
    }
    drop(p95);

    let lookback = to_ms(window.from - ADHERENCE_LOOKBACK);
    let authorised = {
        let mut conn = pool.acquire().await?;
        authorisations::counted(&mut conn, lookback, to).await?
    };
    let mut rows = on!(pool, |c| sqlx::query_as::<_, IntervalRow>(INTERVALS)
        .bind(lookback)
        .bind(to)
        .fetch(c));
    let mut shift_rows = on!(pool, |c| sqlx::query_as::<_, ShiftRow>(
        schedules::OVERLAPPING
    )
    .bind(lookback)
    .bind(to)
    .fetch(c));
    let mut next_shift = shift_rows.try_next().await?;
    // `in_window`: whether any of the agent's intervals overlaps the window; those that
    // end before it were read for the exceptions only.
    let mut finish = |agent_id: String, run: &[Interval], in_window: bool, shifts: &[ShiftRow]| {
        if !in_window {
            return;
        }
        let summary = agents
            .entry(agent_id.clone())
            .or_insert_with(|| AgentSummary::new(agent_id));
        summary.set_time(&idle::time_in_state(run.iter(), window, now));
        let shifts: Vec<_> = shifts
            .iter()
            .filter_map(ShiftRow::to_stored)
            .map(|s| s.shift)
            .collect();
        if !shifts.is_empty() {
            let timeline = timeline(
                &shifts,
                authorised.get(&summary.agent_id).map(Vec::as_slice),
            );
            summary.set_adherence(&adherence::figures(run, &timeline, window, now, judging));
            if window.to - window.from <= MAX_DAY_VIEW {
                summary.day = adherence::day_spans(run, &timeline, window, now, judging);
            }
        }
    };
    let mut current: Option<String> = None;
    let mut run: Vec<Interval> = Vec::new();
    let mut in_window = false;
    let mut shifts: Vec<ShiftRow> = Vec::new();
    loop {
        let row = rows.try_next().await?;
        if current.as_deref() != row.as_ref().map(|r| r.agent_id.as_str())
            && let Some(done) = current.take()
        {
            // The shifts cursor is in agent order too: skip those of agents without
            // intervals, take this agent's.
            while let Some(shift) = next_shift.take_if(|s| s.agent_id <= done) {
                if shift.agent_id == done {
                    shifts.push(shift);
                }
                next_shift = shift_rows.try_next().await?;
            }
            finish(done, &run, in_window, &shifts);
            run.clear();
            shifts.clear();
            in_window = false;
        }
        let Some(row) = row else { break };
        if current.is_none() {
            current = Some(row.agent_id.clone());
        }
        in_window |= row.ended_at.is_none_or(|end| end > from);
        // A state this build does not know still makes the agent appear, with no time.
        if let Ok(state) = row.state.parse::<AgentState>() {
            run.push(Interval {
                state,
                reason: row.reason,
                start: from_ms(row.started_at),
                end: row.ended_at.map(from_ms),
            });
        }
    }
    drop(rows);
    drop(shift_rows);

    Ok(agents.into_values().collect())
}
