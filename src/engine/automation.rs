//! Schedule-driven automations: at each agent's own break start NOT_READY/BREAK, at its
//! end READY, and LOGGED_OUT a while after the shift ends.
//!
//! Every change goes through the transition engine (compliance checks, audit log,
//! webhooks) with origin `rule`, actor `automation:NAME` and the idempotency key
//! `auto:NAME:{agent}:{boundary}` (the boundary instant in UTC). A stored succeeded or
//! rejected attempt is replayed instead of repeated, so an automation changes an agent
//! at most once per boundary, also after a restart or `kill -9`; a failed attempt
//! leaves the key free and is tried again at the next tick.
//!
//! An automation is due from its boundary until `automation.catch_up` later (a break
//! start also only until the break ends, a break end only until the next boundary). It
//! looks at the agent's recorded state first:
//! - on a contact (ON_CONTACT) or wrapping one up (ACW), the agent is left alone and
//!   looked at again next tick: wrap-up is part of the contact (the customer's
//!   disposition is being written), though only ON_CONTACT is refused by the platform.
//!   What is still undone when the automation expires is the compliance sweep's to flag;
//! - already where the automation would put it (NOT_READY or logged out at a break
//!   start, no longer on a break at its end, logged out after the shift), it is done
//!   without a change;
//! - otherwise it is moved.
//!
//! Mandatory breaks only, unless `automation.optional_breaks`: an optional break is the
//! agent's choice, and forcing it would take capacity the schedule did not plan to lose.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::schedules::{AgentPlan, ScheduleBook};
use super::sync::SyncStatus;
use super::{Changed, EngineError, Outcome, TransitionEngine, TransitionRequest};
use crate::cxone::{Lane, in_lane};
use crate::domain::adherence::Expected;
use crate::domain::{AgentState, Origin};
use crate::store::{Store, history};
use crate::telemetry::names::AUTOMATION_TRANSITIONS_TOTAL;

/// How often the run loop looks for due automations.
const TICK: Duration = Duration::from_secs(5);

/// Changes in flight at once; the request budget sets the pace.
const CONCURRENCY: usize = 16;

/// What the automations do.
#[derive(Debug, Clone)]
pub struct AutomationSettings {
    pub break_start: bool,
    pub break_end: bool,
    pub optional_breaks: bool,
    pub logout_after_shift_end: Option<Duration>,
    pub catch_up: Duration,
}

/// The automations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Automation {
    BreakStart,
    BreakEnd,
    LogoutAfterShiftEnd,
}

impl Automation {
    /// The name in idempotency keys, audit actors and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Automation::BreakStart => "break_start",
            Automation::BreakEnd => "break_end",
            Automation::LogoutAfterShiftEnd => "logout",
        }
    }

    fn target(self) -> AgentState {
        match self {
            Automation::BreakStart => AgentState::NotReady,
            Automation::BreakEnd => AgentState::Ready,
            Automation::LogoutAfterShiftEnd => AgentState::LoggedOut,
        }
    }

    fn reason(self) -> Option<String> {
        (self == Automation::BreakStart).then(|| "BREAK".to_owned())
    }

    /// Whether an agent in `state` still needs this automation (`None`: no state is
    /// recorded for the agent).
    fn needed(self, state: Option<AgentState>) -> bool {
        use AgentState::*;
        match self {
            Automation::BreakStart => !matches!(state, Some(NotReady | LoggedOut)),
            // Never READY for an agent whose state is unknown or who logged out: that
            // would log them in.
            Automation::BreakEnd => matches!(state, Some(NotReady | Paused | Idle)),
            Automation::LogoutAfterShiftEnd => state != Some(LoggedOut),
        }
    }

    /// The idempotency key of this automation for `agent_id` at `boundary`.
    pub fn key(self, agent_id: &str, boundary: DateTime<Utc>) -> String {
        format!(
            "auto:{}:{agent_id}:{}",
            self.name(),
            crate::time::rfc3339(boundary)
        )
    }
}

/// One automation due for one agent.
#[derive(Debug, Clone)]
struct Due {
    agent_id: String,
    automation: Automation,
    key: String,
    /// When it stops being due.
    expires: DateTime<Utc>,
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Agents moved.
    pub moved: usize,
    /// Changes refused by compliance or the platform (recorded, not repeated).
    pub rejected: usize,
    /// Changes that failed (the platform was unavailable); tried again next run.
    pub failed: usize,
    /// Due automations with nothing to do: the agent was already there, or the change
    /// had been made before (a replayed key).
    pub settled: usize,
    /// Agents left alone because they are on a contact or in ACW.
    pub on_contact: usize,
}

impl RunReport {
    fn is_quiet(&self) -> bool {
        *self == RunReport::default()
    }
}

/// The automations over the schedule book. Run with [`Automations::run`], or step with
/// [`Automations::run_due`] in tests.
pub struct Automations {
    book: Arc<ScheduleBook>,
    engine: Arc<TransitionEngine>,
    store: Store,
    settings: AutomationSettings,
    /// Keys settled by this process, with when they stop being due (then forgotten).
    settled: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl Automations {
    pub fn new(
        book: Arc<ScheduleBook>,
        engine: Arc<TransitionEngine>,
        settings: AutomationSettings,
    ) -> Self {
        Automations {
            store: engine.store().clone(),
            book,
            engine,
            settings,
            settled: Mutex::default(),
        }
    }

    /// Carries out every automation due at `now` that this process has not settled.
    pub async fn run_due(&self, now: DateTime<Utc>) -> Result<RunReport, EngineError> {
        self.run_due_until(now, &CancellationToken::new()).await
    }

    /// [`Automations::run_due`], starting no change once `stop` is cancelled (those in
    /// flight finish, so every change made is recorded; the rest stay due).
    async fn run_due_until(
        &self,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> Result<RunReport, EngineError> {
        let due = self.due(now);
        let mut report = RunReport::default();
        if due.is_empty() {
            return Ok(report);
        }
        let ids: Vec<&str> = due.iter().map(|d| d.agent_id.as_str()).collect();
        let states = {
            let mut conn = self.store.reader().acquire().await?;
            history::open_intervals(&mut conn, &ids).await?
        };
        let mut moves = Vec::new();
        for d in due {
            let state = states.get(&d.agent_id).and_then(|row| row.state());
            if matches!(state, Some(AgentState::OnContact | AgentState::Acw)) {
                report.on_contact += 1;
            } else if !d.automation.needed(state) {
                report.settled += 1;
                self.settle(&d);
            } else {
                moves.push(d);
            }
        }
        let results: Vec<(Due, Option<Result<super::Transition, EngineError>>)> =
            futures::stream::iter(moves)
                .map(|d| async move {
                    if stop.is_cancelled() {
                        return (d, None);
                    }
                    let request = TransitionRequest {
                        agent_id: d.agent_id.clone(),
                        target: d.automation.target(),
                        reason: d.automation.reason(),
                        origin: Origin::Rule,
                        actor: format!("automation:{}", d.automation.name()),
                        idempotency_key: Some(d.key.clone()),
                    };
                    let change = self.engine.change(request.into());
                    let result = in_lane(Lane::Automation, Some(d.automation.name()), change)
                        .await
                        .map(Changed::made);
                    (d, Some(result))
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        for (d, result) in results {
            let Some(result) = result else { continue };
            let outcome = match result {
                Ok(t) if t.replayed => {
                    report.settled += 1;
                    self.settle(&d);
                    continue;
                }
                Ok(t) => t.outcome,
                Err(e @ (EngineError::Store(_) | EngineError::Unrecorded { .. })) => return Err(e),
                Err(e) => {
                    tracing::error!(agent = %d.agent_id, key = %d.key, error = %e, "automation not attempted");
                    self.settle(&d);
                    continue;
                }
            };
            let name = match &outcome {
                Outcome::Succeeded => {
                    report.moved += 1;
                    self.settle(&d);
                    "succeeded"
                }
                Outcome::Rejected { violation } => {
                    tracing::info!(agent = %d.agent_id, automation = d.automation.name(), %violation, "automation refused");
                    report.rejected += 1;
                    self.settle(&d);
                    "rejected"
                }
                Outcome::Failed { error, .. } => {
                    tracing::warn!(agent = %d.agent_id, automation = d.automation.name(), %error, "automation failed; trying again");
                    report.failed += 1;
                    "failed"
                }
            };
            metrics::counter!(
                AUTOMATION_TRANSITIONS_TOTAL,
                "automation" => d.automation.name(),
                "outcome" => name
            )
            .increment(1);
        }
        Ok(report)
    }

    fn settle(&self, due: &Due) {
        self.settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(due.key.clone(), due.expires);
    }

    /// The automations due at `now` and not settled, oldest boundary first.
    fn due(&self, now: DateTime<Utc>) -> Vec<Due> {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        settled.retain(|_, expires| *expires > now);
        let mut due: Vec<(DateTime<Utc>, Due)> = Vec::new();
        // Two breaks of one agent starting together make one boundary.
        let mut seen = std::collections::HashSet::new();
        for plan in self.book.plans() {
            for (at, d) in self.boundaries(&plan) {
                if at <= now
                    && now < d.expires
                    && !settled.contains_key(&d.key)
                    && seen.insert(d.key.clone())
                {
                    due.push((at, d));
                }
            }
        }
        due.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key)));
        due.into_iter().map(|(_, d)| d).collect()
    }

    /// The agent's automations with the instant each becomes due.
    fn boundaries(&self, plan: &AgentPlan) -> Vec<(DateTime<Utc>, Due)> {
        let s = &self.settings;
        let catch_up = TimeDelta::from_std(s.catch_up).unwrap_or(TimeDelta::MAX);
        let shift = &plan.shift;
        let mut out = Vec::new();
        let mut push = |automation: Automation, boundary, at, expires| {
            out.push((
                at,
                Due {
                    agent_id: plan.agent_id.clone(),
                    automation,
                    key: automation.key(&plan.agent_id, boundary),
                    expires,
                },
            ));
        };
        let covered = shift
            .breaks
            .iter()
            .filter(|b| b.mandatory || s.optional_breaks)
            .filter(|b| shift.start <= b.start && b.start < shift.end && b.start < b.end);
        for b in covered {
            if s.break_start {
                let expires = b.end.min(b.start + catch_up);
                push(Automation::BreakStart, b.start, b.start, expires);
            }
            // Back to work only if work is what follows (not the shift's end or another
            // break that starts where this one ends).
            if s.break_end && plan.timeline.expected_at(b.end) == Expected::Work {
                let work_ends = plan
                    .timeline
                    .segments()
                    .iter()
                    .find(|seg| seg.start <= b.end && b.end < seg.end)
                    .map_or(b.end, |seg| seg.end);
                let expires = work_ends.min(b.end + catch_up);
                push(Automation::BreakEnd, b.end, b.end, expires);
            }
        }
        if let Some(delay) = s.logout_after_shift_end {
            let at = shift.end + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
            push(
                Automation::LogoutAfterShiftEnd,
                shift.end,
                at,
                at + catch_up,
            );
        }
        out
    }

    /// Runs due automations every few seconds until `stop` is cancelled; with `sync`,
    /// only once state sync has polled, so the recorded states are current.
    pub async fn run(self: Arc<Self>, stop: CancellationToken, sync: Option<Arc<SyncStatus>>) {
        if !wait_for_sync(sync.as_deref(), &stop).await {
            return;
        }
        tracing::info!("schedule automations started");
        // Every TICK of the engine's clock, so a boundary's catch-up window is not missed
        // under a simulator's --time-scale.
        let mut tick = tokio::time::interval(self.engine.clock().period(TICK));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            match self.run_due_until(self.engine.now(), &stop).await {
                Ok(report) if !report.is_quiet() => tracing::info!(?report, "automations ran"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "automations could not run"),
            }
        }
        tracing::info!("schedule automations stopped");
    }
}

/// Waits until `sync` (if any) has polled successfully; false when `stop` came first.
pub(super) async fn wait_for_sync(sync: Option<&SyncStatus>, stop: &CancellationToken) -> bool {
    let Some(sync) = sync else {
        return !stop.is_cancelled();
    };
    while sync.snapshot().0.is_none() {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::BreakWindow;
    use crate::engine::schedules::tests::{SchedulePlatform, at, schedule, settings};
    use crate::store::on;
    use crate::store::testing::temp_store;
    use crate::store::to_ms;

    fn window(start: i64, end: i64, mandatory: bool) -> BreakWindow {
        BreakWindow {
            start: at(start),
            end: at(end),
            kind: "BREAK".into(),
            mandatory,
        }
    }

    /// Automations over one agent with a 0–480 shift: a mandatory lunch 180–210, an
    /// optional break 300–315, mandatory breaks 400–420 and 420–430 back to back, and a
    /// mandatory one 470–480 that ends with the shift.
    async fn one_agent(optional_breaks: bool) -> (Automations, tempfile::TempDir) {
        let (store, dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        let breaks = vec![
            window(180, 210, true),
            window(300, 315, false),
            window(400, 420, true),
            window(420, 430, true),
            window(470, 480, true),
        ];
        platform.set("u_1", schedule(0, 480, Some(breaks)));
        let book = Arc::new(ScheduleBook::new(
            store.clone(),
            platform.clone(),
            settings(600),
        ));
        book.refresh_due(at(-10)).await.unwrap();
        let engine = Arc::new(TransitionEngine::new(store, platform, Duration::ZERO));
        let settings = AutomationSettings {
            break_start: true,
            break_end: true,
            optional_breaks,
            logout_after_shift_end: Some(Duration::from_secs(600)),
            catch_up: Duration::from_secs(300),
        };
        (Automations::new(book, engine, settings), dir)
    }

    fn due_at(automations: &Automations, minute: i64) -> Vec<String> {
        automations
            .due(at(minute))
            .into_iter()
            .map(|d| {
                let minute = d
                    .key
                    .rsplit_once("u_1:")
                    .map(|(_, instant)| instant.parse::<DateTime<Utc>>().unwrap())
                    .map(|instant| (instant - at(0)).num_minutes())
                    .unwrap();
                format!("{}@{minute}", d.automation.name())
            })
            .collect()
    }

    #[tokio::test]
    async fn each_boundary_is_due_from_its_instant_until_catch_up_or_its_end() {
        let (automations, _dir) = one_agent(false).await;
        let expect = [
            (179, vec![]),
            (180, vec!["break_start@180"]),
            (184, vec!["break_start@180"]),
            (185, vec![]),
            (210, vec!["break_end@210"]),
            (300, vec![]),
            (315, vec![]),
            (400, vec!["break_start@400"]),
            (420, vec!["break_start@420"]),
            (430, vec!["break_end@430"]),
            (470, vec!["break_start@470"]),
            (480, vec![]),
            (489, vec![]),
            (490, vec!["logout@480"]),
            (494, vec!["logout@480"]),
            (495, vec![]),
        ];
        for (minute, want) in expect {
            assert_eq!(due_at(&automations, minute), want, "at minute {minute}");
        }
        let (with_optional, _dir) = one_agent(true).await;
        assert_eq!(due_at(&with_optional, 300), ["break_start@300"]);
        assert_eq!(due_at(&with_optional, 315), ["break_end@315"]);
    }

    #[tokio::test]
    async fn under_a_time_scale_the_running_automations_act_at_the_scaled_boundary() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        platform.set("u_1", schedule(0, 480, Some(vec![window(180, 210, true)])));
        let book = Arc::new(ScheduleBook::new(
            store.clone(),
            platform.clone(),
            settings(600),
        ));
        book.refresh_due(at(-10)).await.unwrap();
        // wfmd's clock reads minute 179 now and runs 120 times as fast as real time (a
        // simulator's --time-scale 120): the lunch starts half a real second from now,
        // though the wall clock is weeks past that day.
        let engine = Arc::new(
            TransitionEngine::new(store.clone(), platform, Duration::ZERO)
                .with_clock(crate::engine::Clock::scaled(at(179), 120.0)),
        );
        let automations = Arc::new(Automations::new(
            book,
            engine,
            AutomationSettings {
                break_start: true,
                break_end: false,
                optional_breaks: false,
                logout_after_shift_end: None,
                // Five minutes of the clock: two and a half real seconds.
                catch_up: Duration::from_secs(300),
            },
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn(automations.run(stop.clone(), None));

        let mut first: Option<(i64, String)> = None;
        crate::store::testing::eventually_within(
            "the break start was not acted on",
            Duration::from_secs(30),
            async || {
                // The platform refuses every change here: each attempt is recorded as
                // failed and tried again, so the first one shows when the boundary was met.
                first = on!(store.reader(), |c| sqlx::query_as(
                    "SELECT requested_at, target_state FROM transition_attempts
                     WHERE actor = 'automation:break_start' ORDER BY requested_at LIMIT 1",
                )
                .fetch_optional(c)
                .await)
                .unwrap();
                first.is_some()
            },
        )
        .await;
        let first = first.unwrap();
        stop.cancel();
        task.await.unwrap();
        assert_eq!(first.1, "NOT_READY");
        assert!(
            (to_ms(at(180))..to_ms(at(185))).contains(&first.0),
            "acted at minute {}, within the catch-up window by the scaled clock",
            (first.0 - to_ms(at(0))) as f64 / 60_000.0
        );
    }

    #[tokio::test]
    async fn a_break_that_starts_late_is_due_only_until_it_ends() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        platform.set("u_1", schedule(0, 480, Some(vec![window(100, 102, true)])));
        let book = Arc::new(ScheduleBook::new(
            store.clone(),
            platform.clone(),
            settings(600),
        ));
        book.refresh_due(at(-10)).await.unwrap();
        let engine = Arc::new(TransitionEngine::new(store, platform, Duration::ZERO));
        let automations = Automations::new(
            book,
            engine,
            AutomationSettings {
                break_start: true,
                break_end: false,
                optional_breaks: false,
                logout_after_shift_end: None,
                catch_up: Duration::from_secs(3_600),
            },
        );
        assert_eq!(due_at(&automations, 101), ["break_start@100"]);
        assert_eq!(due_at(&automations, 102), Vec::<String>::new());
        assert_eq!(due_at(&automations, 600), Vec::<String>::new(), "no logout");
    }

    #[test]
    fn keys_name_the_automation_the_agent_and_the_boundary_in_utc() {
        let at: DateTime<Utc> = "2026-11-20T17:00:00Z".parse().unwrap();
        assert_eq!(
            Automation::BreakStart.key("u_007", at),
            "auto:break_start:u_007:2026-11-20T17:00:00.000Z"
        );
        assert_eq!(
            Automation::LogoutAfterShiftEnd.key("u_007", at),
            "auto:logout:u_007:2026-11-20T17:00:00.000Z"
        );
    }

    #[test]
    fn who_needs_what() {
        use AgentState::*;
        let needs = |automation: Automation| {
            [None]
                .into_iter()
                .chain(AgentState::ALL.map(Some))
                .filter(|s| automation.needed(*s))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            needs(Automation::BreakStart),
            [
                None,
                Some(Ready),
                Some(Paused),
                Some(Idle),
                Some(OnContact),
                Some(Acw)
            ]
        );
        assert_eq!(
            needs(Automation::BreakEnd),
            [Some(NotReady), Some(Paused), Some(Idle)]
        );
        assert_eq!(
            needs(Automation::LogoutAfterShiftEnd).len(),
            7,
            "all but LOGGED_OUT"
        );
    }
}
