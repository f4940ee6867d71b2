//! The compliance sweep: every managed agent's recorded state against its schedule.
//!
//! Every `compliance.sweep_interval` the sweep reads the managed agents' open intervals
//! (kept current by state sync) and compares each with the agent's timeline from the
//! schedule book ([`Timeline::deviation_at`]). A deviation that has lasted
//! its grace (the judging rule's `grace`, else `compliance.exception_threshold`) opens
//! an adherence exception; an open exception
//! closes when the agent no longer deviates that way, at the instant it stopped
//! ([`Timeline::deviation_ended`]). Opening and closing are stored with their audit
//! entries and `adherence.exception` webhooks in one transaction per sweep; a quiet
//! sweep writes nothing, so over 5,000 agents it is one read and in-memory work.
//!
//! What judges is the tenant's [`JudgingHandle`]: the adherence rules
//! (`[[compliance.rules]]`) with their version, replaced whole on reload and read afresh
//! by each sweep, so a SIGHUP applies new rules at the next sweep. Each exception
//! records the rule and the rule set's version that opened it.
//!
//! The open exceptions are loaded from the store at the first sweep, so a restart never
//! opens a second one for a deviation still going on (the store's unique index would
//! refuse it anyway).
//!
//! With `compliance.auto_correct` on for a kind, the sweep moves the agent of an open
//! exception through the transition engine (origin `rule`, actor
//! `compliance:auto_correct`, key `compliance:auto_correct:{exception id}`, so once per
//! exception, also across restarts): READY in a mandatory break to NOT_READY/BREAK,
//! logged in outside the shift to LOGGED_OUT, NOT_READY/PAUSED/IDLE in the shift to
//! READY. Never an agent on a contact or in ACW (looked at again next sweep), and
//! never a logged-out agent into READY.
//!
//! [`Timeline::deviation_at`]: crate::domain::adherence::Timeline::deviation_at
//! [`Timeline::deviation_ended`]: crate::domain::adherence::Timeline::deviation_ended

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::automation::wait_for_sync;
use super::schedules::ScheduleBook;
use super::sync::SyncStatus;
use super::{Changed, EngineError, Outcome, TransitionEngine, TransitionRequest};
use crate::config::AutoCorrect;
use crate::cxone::{Lane, in_lane};
use crate::domain::adherence::DeviationKind;
use crate::domain::adherence_rules::Judging;
use crate::domain::events::{AdherenceException, Event, ExceptionStatus, Severity};
use crate::domain::{AgentState, Origin};
use crate::store::audit::{self, NewEntry};
use crate::store::authorisations;
use crate::store::exceptions::{self, ExceptionRow};
use crate::store::outbox::{self, NewEvent};
use crate::store::{Store, from_ms, history, to_ms};
use crate::telemetry::names::{
    ADHERENCE_CORRECTIONS_TOTAL, ADHERENCE_EXCEPTIONS_OPEN, ADHERENCE_EXCEPTIONS_SEVERE,
    ADHERENCE_EXCEPTIONS_TOTAL, ADHERENCE_SEVERE_TOTAL, ADHERENCE_SWEEP_DURATION_SECONDS,
};

/// The audit actor of exceptions.
const ACTOR: &str = "compliance";

/// The audit actor (and transition actor) of corrections.
const CORRECTION_ACTOR: &str = "compliance:auto_correct";

/// How far back the sweep reads authorisations: the start of a deviation going on now
/// is found by walking back through the schedule, and an authorisation breaks it.
const AUTHORISED_LOOKBACK: TimeDelta = TimeDelta::days(2);

/// Corrections in flight at once; the request budget sets the pace.
const CONCURRENCY: usize = 16;

/// What the sweep needs to know.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    pub interval: Duration,
    pub judging: JudgingHandle,
    pub auto_correct: AutoCorrect,
}

/// The adherence rules in force ([`Judging`]), shared by everything that judges
/// adherence (sweep, reports, analytics, rollups) and replaced whole on reload. Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct JudgingHandle {
    sender: Arc<tokio::sync::watch::Sender<Arc<Judging>>>,
}

impl JudgingHandle {
    pub fn new(judging: Judging) -> JudgingHandle {
        JudgingHandle {
            sender: Arc::new(tokio::sync::watch::channel(Arc::new(judging)).0),
        }
    }

    /// Replaces the rules; every judgement from now on uses the new ones.
    pub fn replace(&self, judging: Judging) {
        self.sender.send_replace(Arc::new(judging));
    }

    pub fn current(&self) -> Arc<Judging> {
        self.sender.borrow().clone()
    }
}

/// An open exception, as the sweep keeps it.
#[derive(Debug, Clone)]
struct Open {
    id: String,
    kind: DeviationKind,
    state: String,
    expected: String,
    started_at: DateTime<Utc>,
    opened_at: DateTime<Utc>,
    /// The rule that opened it and its rule set's version.
    rule: Option<usize>,
    rules_version: Option<String>,
    severe_at: Option<DateTime<Utc>>,
    /// A correction was made or refused (not to be tried again).
    corrected: bool,
}

impl Open {
    fn from_row(row: ExceptionRow) -> Option<Open> {
        Some(Open {
            kind: row.kind.parse().ok()?,
            id: row.id,
            state: row.state,
            expected: row.expected,
            started_at: from_ms(row.started_at),
            opened_at: from_ms(row.opened_at),
            rule: row.rule.and_then(|at| usize::try_from(at).ok()),
            rules_version: row.rules_version,
            severe_at: row.severe_at.map(from_ms),
            corrected: false,
        })
    }

    fn row(&self, agent_id: &str) -> ExceptionRow {
        ExceptionRow {
            id: self.id.clone(),
            agent_id: agent_id.to_owned(),
            kind: self.kind.as_str().to_owned(),
            state: self.state.clone(),
            expected: self.expected.clone(),
            started_at: to_ms(self.started_at),
            opened_at: to_ms(self.opened_at),
            closed_at: None,
            rule: self.rule.and_then(|at| i64::try_from(at).ok()),
            rules_version: self.rules_version.clone(),
            severe_at: self.severe_at.map(to_ms),
        }
    }

    /// The `adherence.exception` event of this exception for `agent_id`, closed at
    /// `closed_at` when given.
    fn event(&self, agent_id: &str, closed_at: Option<DateTime<Utc>>) -> AdherenceException {
        AdherenceException {
            exception_id: self.id.clone(),
            agent_id: agent_id.to_owned(),
            status: match closed_at {
                Some(_) => ExceptionStatus::Closed,
                None => ExceptionStatus::Open,
            },
            kind: self.kind,
            state: self.state.clone(),
            expected: self.expected.clone(),
            started_at: crate::time::rfc3339(self.started_at),
            opened_at: crate::time::rfc3339(self.opened_at),
            closed_at: closed_at.map(crate::time::rfc3339),
            duration_ms: closed_at.map(|at| (at - self.started_at).num_milliseconds()),
            rule: self.rule,
            rules_version: self.rules_version.clone(),
            severity: match self.severe_at {
                Some(_) => Severity::Severe,
                None => Severity::Normal,
            },
            severe_at: self.severe_at.map(crate::time::rfc3339),
        }
    }
}

/// What one sweep found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Managed agents with a schedule and a recorded state.
    pub agents: usize,
    /// Agents deviating now, however briefly.
    pub deviating: usize,
    pub opened: usize,
    pub closed: usize,
    /// Open exceptions that turned severe.
    pub severe: usize,
    /// Agents moved by auto_correct.
    pub corrected: usize,
    /// Open exceptions after the sweep.
    pub open: usize,
}

/// A correction to make after the sweep's transaction.
struct Correction {
    agent_id: String,
    exception_id: String,
    target: AgentState,
}

/// The compliance sweep. Run it with [`ComplianceSweep::run`], or step it with
/// [`ComplianceSweep::sweep_at`] in tests.
pub struct ComplianceSweep {
    book: Arc<ScheduleBook>,
    engine: Arc<TransitionEngine>,
    store: Store,
    settings: SweepSettings,
    /// Open exceptions by agent; `None` until loaded. Held for a whole sweep, so sweeps
    /// never overlap.
    open: tokio::sync::Mutex<Option<HashMap<String, Vec<Open>>>>,
}

impl ComplianceSweep {
    pub fn new(
        book: Arc<ScheduleBook>,
        engine: Arc<TransitionEngine>,
        settings: SweepSettings,
    ) -> Self {
        ComplianceSweep {
            store: engine.store().clone(),
            book,
            engine,
            settings,
            open: tokio::sync::Mutex::default(),
        }
    }

    /// One sweep at `now`: opens and closes exceptions, then makes the corrections
    /// asked for.
    pub async fn sweep_at(&self, now: DateTime<Utc>) -> Result<SweepReport, EngineError> {
        self.sweep_until(now, &CancellationToken::new()).await
    }

    /// [`ComplianceSweep::sweep_at`], starting no correction once `stop` is cancelled
    /// (those in flight finish; the rest are made by a later sweep).
    async fn sweep_until(
        &self,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> Result<SweepReport, EngineError> {
        let started = Instant::now();
        let mut guard = self.open.lock().await;
        if guard.is_none() {
            let mut loaded: HashMap<String, Vec<Open>> = HashMap::new();
            for row in exceptions::open(self.store.reader()).await? {
                let agent = row.agent_id.clone();
                if let Some(open) = Open::from_row(row) {
                    loaded.entry(agent).or_default().push(open);
                }
            }
            *guard = Some(loaded);
        }
        let open = guard.as_mut().expect("loaded above");

        let plans = self.book.plans();
        let ids: Vec<&str> = plans.iter().map(|p| p.agent_id.as_str()).collect();
        let (states, authorised) = {
            let mut conn = self.store.reader().acquire().await?;
            let states = history::open_intervals(&mut conn, &ids).await?;
            // Far enough back for where a deviation going on now began.
            let from = to_ms(now - AUTHORISED_LOOKBACK);
            let authorised = authorisations::in_force(&mut conn, from, to_ms(now) + 1).await?;
            (states, authorised)
        };
        let judging = self.settings.judging.current();
        let mut report = SweepReport::default();
        let mut opening: Vec<(String, Open)> = Vec::new();
        let mut closing: Vec<(String, Open, DateTime<Utc>)> = Vec::new();
        let mut severing: Vec<(String, Open)> = Vec::new();
        let mut corrections = Vec::new();
        for plan in &plans {
            let agent = plan.agent_id.as_str();
            let Some((row, state)) = states.get(agent).and_then(|row| Some((row, row.state()?)))
            else {
                continue;
            };
            report.agents += 1;
            let since = row.started();
            let observed = (state, row.reason.as_deref());
            let timeline = match authorised.get(agent) {
                Some(spans) => Cow::Owned(plan.timeline.authorised(spans)),
                None => Cow::Borrowed(&plan.timeline),
            };
            let deviation = timeline.deviation_at(&judging, observed, since, now);
            let current = open.get(agent).map(Vec::as_slice).unwrap_or_default();
            for o in current {
                if let Some(ended) =
                    timeline.deviation_ended(&judging, observed, since, now, o.kind)
                {
                    closing.push((agent.to_owned(), o.clone(), ended.max(o.opened_at)));
                }
            }
            let Some(d) = deviation else { continue };
            report.deviating += 1;
            // Severe once the deviation has lasted the severe_after of the rule judging
            // it now (so a reload applies to exceptions already open too).
            let severe = judging
                .severe_after(d.rule)
                .is_some_and(|after| now - d.since >= after);
            let exception = match current.iter().find(|o| o.kind == d.kind) {
                Some(o) if severe && o.severe_at.is_none() => {
                    let turned = Open {
                        severe_at: Some(now),
                        ..o.clone()
                    };
                    severing.push((agent.to_owned(), turned.clone()));
                    turned
                }
                Some(o) => o.clone(),
                None if now - d.since >= judging.grace(d.rule) => {
                    let new = Open {
                        id: uuid::Uuid::now_v7().to_string(),
                        kind: d.kind,
                        state: state.as_str().to_owned(),
                        expected: d.expected.as_str().to_owned(),
                        started_at: d.since,
                        opened_at: now,
                        rule: d.rule,
                        rules_version: judging.version.clone(),
                        severe_at: severe.then_some(now),
                        corrected: false,
                    };
                    opening.push((agent.to_owned(), new.clone()));
                    new
                }
                None => continue,
            };
            if !exception.corrected
                && self.settings.auto_correct.applies_to(d.kind)
                && let Some(target) = correction(d.kind, state)
            {
                corrections.push(Correction {
                    agent_id: agent.to_owned(),
                    exception_id: exception.id,
                    target,
                });
            }
        }

        if !opening.is_empty() || !closing.is_empty() || !severing.is_empty() {
            let written = self.record(&opening, &closing, &severing, now).await;
            if let Err(e) = written {
                // What is open is no longer known for sure: read it again next sweep.
                *guard = None;
                return Err(e.into());
            }
            report.closed = closing.len();
            report.opened = opening.len();
            report.severe = severing.len()
                + opening
                    .iter()
                    .filter(|(_, o)| o.severe_at.is_some())
                    .count();
            for (agent, turned) in severing {
                metrics::counter!(ADHERENCE_SEVERE_TOTAL, "kind" => turned.kind.as_str())
                    .increment(1);
                if let Some(o) = open
                    .get_mut(&agent)
                    .and_then(|list| list.iter_mut().find(|o| o.id == turned.id))
                {
                    o.severe_at = turned.severe_at;
                }
            }
            for (agent, closed, _) in closing {
                if let Some(list) = open.get_mut(&agent) {
                    list.retain(|o| o.id != closed.id);
                    if list.is_empty() {
                        open.remove(&agent);
                    }
                }
            }
            for (agent, o) in opening {
                metrics::counter!(ADHERENCE_EXCEPTIONS_TOTAL, "kind" => o.kind.as_str())
                    .increment(1);
                if o.severe_at.is_some() {
                    metrics::counter!(ADHERENCE_SEVERE_TOTAL, "kind" => o.kind.as_str())
                        .increment(1);
                }
                open.entry(agent).or_default().push(o);
            }
        }
        report.open = open.values().map(Vec::len).sum();
        metrics::gauge!(ADHERENCE_EXCEPTIONS_OPEN).set(report.open as f64);
        let severe_open = open
            .values()
            .flatten()
            .filter(|o| o.severe_at.is_some())
            .count();
        metrics::gauge!(ADHERENCE_EXCEPTIONS_SEVERE).set(severe_open as f64);

        report.corrected = self.correct(corrections, open, stop).await?;
        drop(guard);
        metrics::histogram!(ADHERENCE_SWEEP_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(report)
    }

    /// Stores the exceptions opened, closed and turned severe, with their audit entries
    /// and events, in one transaction.
    async fn record(
        &self,
        opening: &[(String, Open)],
        closing: &[(String, Open, DateTime<Utc>)],
        severing: &[(String, Open)],
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let rows: Vec<ExceptionRow> = opening.iter().map(|(agent, o)| o.row(agent)).collect();
        let mut details = Vec::with_capacity(opening.len() + closing.len() + severing.len());
        for (agent, o) in opening {
            let event = o.event(agent, None);
            details.push((
                agent.as_str(),
                o.id.as_str(),
                "adherence.exception_opened",
                event,
            ));
        }
        for (agent, o) in severing {
            let event = o.event(agent, None);
            details.push((
                agent.as_str(),
                o.id.as_str(),
                "adherence.exception_severe",
                event,
            ));
        }
        for (agent, o, closed_at) in closing {
            let event = o.event(agent, Some(*closed_at));
            details.push((
                agent.as_str(),
                o.id.as_str(),
                "adherence.exception_closed",
                event,
            ));
        }
        let entries: Vec<NewEntry<'_>> = details
            .iter()
            .map(|(agent, id, action, detail)| NewEntry {
                at: now,
                actor: ACTOR,
                action,
                agent_id: Some(agent),
                subject_id: Some(id),
                detail: serde_json::to_value(detail).expect("an exception serializes"),
            })
            .collect();
        let events: Vec<NewEvent<'_>> = details
            .iter()
            .map(|(agent, _, _, detail)| NewEvent {
                agent_id: Some(agent),
                at: now,
                event: Event::AdherenceException(detail.clone()),
            })
            .collect();
        let mut tx = self.store.begin_write().await?;
        exceptions::insert_all(&mut tx, &rows).await?;
        let closes: Vec<(&str, i64)> = closing
            .iter()
            .map(|(_, o, closed_at)| (o.id.as_str(), to_ms(*closed_at)))
            .collect();
        exceptions::close_all(&mut tx, &closes).await?;
        let severe: Vec<(&str, i64)> = severing
            .iter()
            .filter_map(|(_, o)| Some((o.id.as_str(), to_ms(o.severe_at?))))
            .collect();
        exceptions::mark_severe_all(&mut tx, &severe).await?;
        audit::append_all(&mut tx, &entries).await?;
        outbox::enqueue_all(&mut tx, &events).await?;
        tx.commit().await?;
        self.store.notify_outbox();
        Ok(())
    }

    /// Makes the corrections; returns how many moved an agent.
    async fn correct(
        &self,
        corrections: Vec<Correction>,
        open: &mut HashMap<String, Vec<Open>>,
        stop: &CancellationToken,
    ) -> Result<usize, EngineError> {
        let results: Vec<(Correction, Option<Result<super::Transition, EngineError>>)> =
            futures::stream::iter(corrections)
                .map(|c| async move {
                    if stop.is_cancelled() {
                        return (c, None);
                    }
                    let request = TransitionRequest {
                        agent_id: c.agent_id.clone(),
                        target: c.target,
                        reason: (c.target == AgentState::NotReady).then(|| "BREAK".to_owned()),
                        origin: Origin::Rule,
                        actor: CORRECTION_ACTOR.to_owned(),
                        idempotency_key: Some(format!("{CORRECTION_ACTOR}:{}", c.exception_id)),
                    };
                    let change = self.engine.change(request.into());
                    let result = in_lane(Lane::Automation, Some(CORRECTION_ACTOR), change)
                        .await
                        .map(Changed::made);
                    (c, Some(result))
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        let mut moved = 0;
        for (c, result) in results {
            let Some(result) = result else { continue };
            let settled = match result {
                Ok(t) => {
                    let name = match &t.outcome {
                        Outcome::Succeeded if !t.replayed => {
                            moved += 1;
                            "succeeded"
                        }
                        Outcome::Succeeded => "replayed",
                        Outcome::Rejected { .. } => "rejected",
                        Outcome::Failed { .. } => "failed",
                    };
                    metrics::counter!(ADHERENCE_CORRECTIONS_TOTAL, "outcome" => name).increment(1);
                    if let Outcome::Failed { error, .. } = &t.outcome {
                        tracing::warn!(agent = %c.agent_id, %error, "correction failed; trying again next sweep");
                    }
                    !matches!(t.outcome, Outcome::Failed { .. })
                }
                Err(e @ (EngineError::Store(_) | EngineError::Unrecorded { .. })) => return Err(e),
                Err(e) => {
                    tracing::error!(agent = %c.agent_id, error = %e, "correction not attempted");
                    true
                }
            };
            if settled
                && let Some(o) = open
                    .get_mut(&c.agent_id)
                    .and_then(|list| list.iter_mut().find(|o| o.id == c.exception_id))
            {
                o.corrected = true;
            }
        }
        Ok(moved)
    }

    /// Sweeps every `compliance.sweep_interval` until `stop` is cancelled. With `sync`,
    /// only once it has polled, and not while it is stale (older than three of its
    /// intervals): a stale recorded state would raise exceptions that are not real.
    pub async fn run(
        self: Arc<Self>,
        stop: CancellationToken,
        sync: Option<(Arc<SyncStatus>, Duration)>,
    ) {
        if !wait_for_sync(sync.as_ref().map(|(s, _)| s.as_ref()), &stop).await {
            return;
        }
        tracing::info!(interval = ?self.settings.interval, "compliance sweep started");
        // Every interval of the engine's clock (faster under a simulator's --time-scale).
        let mut tick = tokio::time::interval(self.engine.clock().period(self.settings.interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stale = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            if let Some((status, interval)) = &sync {
                let limit = TimeDelta::from_std(*interval * 3).unwrap_or(TimeDelta::MAX);
                let now_stale = status.snapshot().0.is_none_or(|at| Utc::now() - at > limit);
                if now_stale != stale {
                    stale = now_stale;
                    if stale {
                        tracing::warn!("state sync is stale; the compliance sweep waits for it");
                    } else {
                        tracing::info!("state sync is current again; the compliance sweep resumes");
                    }
                }
                if stale {
                    continue;
                }
            }
            match self.sweep_until(self.engine.now(), &stop).await {
                Ok(report) if report.opened + report.closed + report.corrected > 0 => {
                    tracing::info!(?report, "compliance sweep");
                }
                Ok(report) => tracing::debug!(?report, "compliance sweep"),
                Err(e) => tracing::warn!(error = %e, "compliance sweep failed"),
            }
        }
        tracing::info!("compliance sweep stopped");
    }
}

/// Where auto_correct moves an agent in `state` with an exception of `kind`, if it may.
fn correction(kind: DeviationKind, state: AgentState) -> Option<AgentState> {
    use AgentState::*;
    match (kind, state) {
        (_, OnContact | Acw) => None,
        (DeviationKind::WorkingInMandatoryBreak, Ready) => Some(NotReady),
        (DeviationKind::LoggedInOutsideShift, s) if s != LoggedOut => Some(LoggedOut),
        (DeviationKind::NotWorkingInShift, NotReady | Paused | Idle) => Some(Ready),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Clock;
    use crate::engine::schedules::tests::{SchedulePlatform, at, lunch, schedule, settings};
    use crate::store::history::NewInterval;
    use crate::store::on;
    use crate::store::testing::temp_store;
    use serde_json::json;

    async fn enter(store: &Store, agent: &str, state: AgentState, minute: i64) {
        enter_with(store, agent, (state, None), minute).await;
    }

    async fn enter_with(
        store: &Store,
        agent: &str,
        (state, reason): (AgentState, Option<&str>),
        minute: i64,
    ) {
        let mut tx = store.begin_write().await.unwrap();
        history::switch_state(
            &mut tx,
            &NewInterval {
                agent_id: agent,
                state,
                reason,
                origin: Origin::Observed,
                at: at(minute),
                attempt_id: None,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// u_1 and u_2 work 0–480; u_1 has a mandatory lunch 180–210. Threshold 2 min.
    async fn sweep(store: &Store) -> (Arc<ScheduleBook>, Arc<TransitionEngine>) {
        let platform = Arc::new(SchedulePlatform::default());
        platform.set("u_1", schedule(0, 480, Some(vec![lunch(180, 210)])));
        platform.set("u_2", schedule(0, 480, Some(vec![])));
        let book = Arc::new(ScheduleBook::new(
            store.clone(),
            platform.clone(),
            settings(600),
        ));
        book.refresh_due(at(-10)).await.unwrap();
        let engine = Arc::new(TransitionEngine::new(
            store.clone(),
            platform,
            Duration::ZERO,
        ));
        (book, engine)
    }

    fn settings_2min() -> SweepSettings {
        SweepSettings {
            interval: Duration::from_secs(30),
            judging: JudgingHandle::new(Judging::builtin(TimeDelta::minutes(2))),
            auto_correct: AutoCorrect::default(),
        }
    }

    #[tokio::test]
    async fn under_a_time_scale_the_running_sweep_opens_exceptions_by_the_scaled_clock() {
        let (store, _dir) = temp_store().await;
        let (book, wall) = sweep(&store).await;
        // u_1 is READY from minute 100, into its mandatory lunch at 180. wfmd's clock
        // reads minute 178 now and runs 120 times as fast as real time (a simulator's
        // --time-scale 120): the two-minute threshold is passed at 182, two real
        // seconds from now, though the wall clock is weeks past that day.
        enter(&store, "u_1", AgentState::Ready, 100).await;
        let clock = Clock::scaled(at(178), 120.0);
        let engine = Arc::new(
            TransitionEngine::new(store.clone(), wall.platform().clone(), Duration::ZERO)
                .with_clock(clock),
        );
        let sweep = Arc::new(ComplianceSweep::new(book, engine, settings_2min()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(sweep.run(stop.clone(), None));

        let mut opened = None;
        crate::store::testing::eventually_within(
            "no exception opened",
            Duration::from_secs(30),
            async || {
                let rows: Vec<(i64, i64)> = on!(store.reader(), |c| sqlx::query_as(
                    "SELECT started_at, opened_at FROM adherence_exceptions"
                )
                .fetch_all(c)
                .await)
                .unwrap();
                opened = rows.first().copied();
                opened.is_some()
            },
        )
        .await;
        let opened = opened.unwrap();
        stop.cancel();
        task.await.unwrap();
        assert_eq!(opened.0, to_ms(at(180)), "deviating since the lunch began");
        // Sweeps come every 30 s of the clock (a quarter of a real second): the first
        // one past 182 opens it, whatever the machine's load adds.
        assert!(
            (to_ms(at(182))..to_ms(at(190))).contains(&opened.1),
            "opened at minute {}",
            (opened.1 - to_ms(at(0))) as f64 / 60_000.0
        );
    }

    #[tokio::test]
    async fn an_exception_opens_at_the_threshold_closes_when_the_agent_is_back_and_survives_a_restart()
     {
        let (store, _dir) = temp_store().await;
        let (book, engine) = sweep(&store).await;
        enter(&store, "u_1", AgentState::Ready, 100).await;
        enter(&store, "u_2", AgentState::Ready, 0).await;
        let first = ComplianceSweep::new(book.clone(), engine.clone(), settings_2min());

        let report = first.sweep_at(at(181)).await.unwrap();
        assert_eq!((report.agents, report.deviating, report.opened), (2, 1, 0));
        assert_eq!(
            first.sweep_at(at(182)).await.unwrap().opened,
            1,
            "at two minutes"
        );
        assert_eq!(first.sweep_at(at(183)).await.unwrap().opened, 0);

        let restarted = ComplianceSweep::new(book, engine, settings_2min());
        let report = restarted.sweep_at(at(184)).await.unwrap();
        assert_eq!(
            (report.opened, report.open),
            (0, 1),
            "loaded, not opened again"
        );

        enter(&store, "u_1", AgentState::NotReady, 185).await;
        let report = restarted.sweep_at(at(186)).await.unwrap();
        assert_eq!((report.closed, report.open), (1, 0));

        let rows: Vec<(String, String, i64, i64, Option<i64>)> =
            on!(store.reader(), |c| sqlx::query_as(
                "SELECT agent_id, kind, started_at, opened_at, closed_at FROM adherence_exceptions",
            )
            .fetch_all(c)
            .await)
            .unwrap();
        let ms = |m| to_ms(at(m));
        assert_eq!(
            rows,
            [(
                "u_1".into(),
                "working_in_mandatory_break".into(),
                ms(180),
                ms(182),
                Some(ms(185))
            )]
        );
        let events: Vec<String> = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT payload FROM outbox_events WHERE event_type = 'adherence.exception' ORDER BY seq",
        )
        .fetch_all(c)
        .await)
        .unwrap();
        let events: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["data"]["status"], "open");
        assert_eq!(events[0]["data"]["kind"], "working_in_mandatory_break");
        assert_eq!(events[0]["data"]["state"], "READY");
        assert_eq!(events[0]["data"]["expected"], "MANDATORY_BREAK");
        assert_eq!(events[1]["data"]["status"], "closed");
        assert_eq!(events[1]["data"]["durationMs"], 5 * 60_000);
        let audited: Vec<String> = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT action FROM audit_log ORDER BY seq"
        )
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(
            audited,
            ["adherence.exception_opened", "adherence.exception_closed"]
        );
        assert!(audit::verify(store.reader()).await.unwrap().is_intact());
    }

    #[tokio::test]
    async fn a_deviation_that_changes_kind_closes_one_exception_and_may_open_another() {
        let (store, _dir) = temp_store().await;
        let (book, engine) = sweep(&store).await;
        // u_2 IDLE in the shift from 470, still IDLE after it ends at 480.
        enter(&store, "u_2", AgentState::Idle, 470).await;
        let sweep = ComplianceSweep::new(book, engine, settings_2min());
        assert_eq!(sweep.sweep_at(at(475)).await.unwrap().opened, 1);
        let report = sweep.sweep_at(at(481)).await.unwrap();
        assert_eq!(
            (report.closed, report.opened),
            (1, 0),
            "off shift for a minute only"
        );
        let report = sweep.sweep_at(at(482)).await.unwrap();
        assert_eq!((report.closed, report.opened, report.open), (0, 1, 1));
        let kinds: Vec<(String, Option<i64>)> = on!(store.reader(), |c| sqlx::query_as(
            "SELECT kind, closed_at FROM adherence_exceptions ORDER BY opened_at"
        )
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(
            kinds,
            [
                ("not_working_in_shift".into(), Some(to_ms(at(480)))),
                ("logged_in_outside_shift".into(), None)
            ]
        );
    }

    #[test]
    fn corrections_never_touch_a_contact_nor_log_anyone_in() {
        use AgentState::*;
        use DeviationKind::*;
        for kind in DeviationKind::ALL {
            assert_eq!(correction(kind, OnContact), None);
            assert_eq!(correction(kind, Acw), None);
        }
        assert_eq!(correction(WorkingInMandatoryBreak, Ready), Some(NotReady));
        assert_eq!(correction(LoggedInOutsideShift, Paused), Some(LoggedOut));
        assert_eq!(correction(NotWorkingInShift, Idle), Some(Ready));
        assert_eq!(correction(NotWorkingInShift, LoggedOut), None);
    }

    /// The compliance rules of a `[compliance]` table, compiled.
    fn rules(toml: &str) -> Judging {
        let config: crate::config::ComplianceConfig = toml::from_str(toml).unwrap();
        config.judging().unwrap()
    }

    #[tokio::test]
    async fn a_rule_opens_its_exception_after_its_grace_turns_it_severe_and_a_reload_applies_at_once()
     {
        let (store, _dir) = temp_store().await;
        let (book, engine) = sweep(&store).await;
        let judging = rules(
            r#"
            [[rules]]
            activity = "Lunch"
            states = ["READY"]
            verdict = "out"
            grace = "5m"
            severe_after = "10m"

            [[rules]]
            activity = "shift"
            states = ["NOT_READY:MEETING"]
            verdict = "neutral"
            "#,
        );
        let version = judging.version.clone().expect("rules have a version");
        let handle = JudgingHandle::new(judging);
        let settings = SweepSettings {
            judging: handle.clone(),
            ..settings_2min()
        };
        let sweep = ComplianceSweep::new(book, engine, settings);
        // u_1 READY into its LUNCH break at 180; u_2 in a meeting all along.
        enter(&store, "u_1", AgentState::Ready, 100).await;
        enter_with(&store, "u_2", (AgentState::NotReady, Some("MEETING")), 100).await;

        let report = sweep.sweep_at(at(184)).await.unwrap();
        assert_eq!(
            (report.deviating, report.opened),
            (1, 0),
            "the built-in threshold (2 min) has passed, the rule's grace (5 min) has not; \
             the meeting is neutral"
        );
        let report = sweep.sweep_at(at(185)).await.unwrap();
        assert_eq!((report.opened, report.severe), (1, 0));
        assert_eq!(sweep.sweep_at(at(189)).await.unwrap().severe, 0);
        let report = sweep.sweep_at(at(190)).await.unwrap();
        assert_eq!(
            (report.opened, report.severe, report.open),
            (0, 1, 1),
            "severe ten minutes into the deviation"
        );
        assert_eq!(sweep.sweep_at(at(191)).await.unwrap().severe, 0, "once");

        let stored = exceptions::open(store.reader()).await.unwrap();
        assert_eq!(stored.len(), 1);
        let row = &stored[0];
        assert_eq!(row.kind, "working_in_mandatory_break");
        assert_eq!(row.rule, Some(0));
        assert_eq!(row.rules_version.as_deref(), Some(version.as_str()));
        assert_eq!(row.severe_at, Some(to_ms(at(190))));
        let events: Vec<(String,)> = on!(store.reader(), |c| sqlx::query_as(
            "SELECT payload FROM outbox_events WHERE event_type = 'adherence.exception' ORDER BY seq",
        )
        .fetch_all(c)
        .await)
        .unwrap();
        let data: Vec<serde_json::Value> = events
            .iter()
            .map(|(p,)| serde_json::from_str::<serde_json::Value>(p).unwrap()["data"].clone())
            .collect();
        assert_eq!(data.len(), 2, "{data:#?}");
        assert_eq!(
            (&data[0]["status"], &data[0]["severity"], &data[0]["rule"]),
            (&json!("open"), &json!("normal"), &json!(0))
        );
        assert_eq!(data[0]["rulesVersion"], json!(version));
        assert_eq!(
            (&data[1]["status"], &data[1]["severity"]),
            (&json!("open"), &json!("severe"))
        );
        assert_eq!(data[1]["severeAt"], json!(crate::time::rfc3339(at(190))));

        // Without rules (a reload), the meeting is time not worked in the shift, since
        // minute 100: it opens at the next sweep.
        handle.replace(Judging::builtin(TimeDelta::minutes(2)));
        let report = sweep.sweep_at(at(192)).await.unwrap();
        assert_eq!(report.opened, 1);
        let u_2 = exceptions::open(store.reader())
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.agent_id == "u_2")
            .expect("u_2's exception");
        assert_eq!(
            (u_2.kind.as_str(), u_2.rule, u_2.rules_version),
            ("not_working_in_shift", None, None)
        );
    }

    #[tokio::test]
    async fn a_state_only_a_rule_refuses_is_an_out_of_rule_exception_never_corrected() {
        let (store, _dir) = temp_store().await;
        let (book, engine) = sweep(&store).await;
        let settings = SweepSettings {
            judging: JudgingHandle::new(rules(
                r#"
                [[rules]]
                activity = "shift"
                states = ["READY"]
                verdict = "out"
                "#,
            )),
            auto_correct: AutoCorrect {
                working_in_mandatory_break: true,
                logged_in_outside_shift: true,
                not_working_in_shift: true,
            },
            ..settings_2min()
        };
        let sweep = ComplianceSweep::new(book, engine, settings);
        // READY in the shift: the built-in kinds accept it, the rule does not, and no
        // state is the right correction for every rule.
        enter(&store, "u_2", AgentState::Ready, 100).await;
        let report = sweep.sweep_at(at(103)).await.unwrap();
        assert_eq!((report.opened, report.corrected), (1, 0));
        let stored = exceptions::open(store.reader()).await.unwrap();
        assert_eq!(
            (stored[0].kind.as_str(), stored[0].rule),
            ("out_of_rule", Some(0))
        );
    }

    #[tokio::test]
    async fn an_authorisation_closes_the_exception_it_covers_and_opens_none() {
        use crate::store::authorisations::{self, AuthorisationRow};
        let (store, _dir) = temp_store().await;
        let (book, engine) = sweep(&store).await;
        let sweep = ComplianceSweep::new(book, engine, settings_2min());
        // u_2 NOT_READY in the shift from minute 100: an exception at 102.
        enter(&store, "u_2", AgentState::NotReady, 100).await;
        assert_eq!(sweep.sweep_at(at(102)).await.unwrap().opened, 1);
        // A supervisor authorises 101-130 (a coaching session, entered late).
        let mut tx = store.begin_write().await.unwrap();
        authorisations::insert(
            &mut tx,
            &AuthorisationRow {
                id: "auth-1".into(),
                agents: r#"["u_2"]"#.into(),
                team: None,
                from_at: to_ms(at(101)),
                to_at: to_ms(at(130)),
                reason: "coaching".into(),
                created_by: "desk".into(),
                created_at: to_ms(at(105)),
                withdrawn_at: None,
                withdrawn_by: None,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let report = sweep.sweep_at(at(106)).await.unwrap();
        assert_eq!((report.closed, report.open), (1, 0));
        let closed: Vec<(Option<i64>,)> = on!(store.reader(), |c| sqlx::query_as(
            "SELECT closed_at FROM adherence_exceptions"
        )
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(
            closed,
            [(Some(to_ms(at(102))),)],
            "at its opening, not before"
        );
        assert_eq!(sweep.sweep_at(at(129)).await.unwrap().opened, 0);
        // Once the authorisation ends, the deviation runs from its end.
        assert_eq!(sweep.sweep_at(at(131)).await.unwrap().opened, 0);
        assert_eq!(sweep.sweep_at(at(132)).await.unwrap().opened, 1);
        let started: Vec<(i64,)> = on!(store.reader(), |c| sqlx::query_as(
            "SELECT started_at FROM adherence_exceptions WHERE closed_at IS NULL"
        )
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(started, [(to_ms(at(130)),)]);
    }
}
