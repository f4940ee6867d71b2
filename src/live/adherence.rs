//! Real-time adherence on the feed: one row per agent (who, the state, the schedule's
//! activity now, the verdict, how long out of adherence, the open exception, today's
//! adherence), read whole by `GET /v1/adherence/now` and kept live by
//! `adherence.changed` messages that each carry one row.
//!
//! A row is worked out from the feed's own view of the agent (its recorded state and
//! open exceptions, kept current from the outbox) and the store (the stored shifts,
//! the authorisations, today's recorded states), judged by [`adherence_now::judge`]:
//! never from the platform. While a client watches, the feed's adherence loop
//! ([`Live::keep_adherence`]) works a row out again when an event about the agent comes
//! (a state change, an exception), when the schedule of any agent changes what it
//! expects, and at least every [`FULL_EVERY`]; while none does it reads nothing (see
//! `rest`), and works every row out when the first comes. It sends a row only when it
//! changed (today's percentage counting only in whole points, so the drift of every
//! agent's figure does not flood the feed). The messages have no id: after a (re)connection, or a `snapshot` message, a
//! page reads `GET /v1/adherence/now` again.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::Live;
use super::view::AgentView;
use crate::domain::AgentState;
use crate::domain::adherence_rules::Judging;
use crate::domain::idle::Window;
use crate::engine::Clock;
use crate::engine::adherence_now::{self, NowVerdict, Schedules};
use crate::engine::compliance::JudgingHandle;
use crate::time::rfc3339;

/// The message kind of a changed row.
pub const ADHERENCE_CHANGED: &str = "adherence.changed";

/// The most time (of the engine's clock) between two full reckonings, which catch
/// what no event announces (a new authorisation's edges are caught at once, see
/// [`Live::recheck_adherence`]).
const FULL_EVERY: Duration = Duration::from_secs(60);

/// How often (real time) everyone's percentage of today is read again: a whole day of
/// every agent's states, so not at every full reckoning.
const FIGURES_EVERY: Duration = Duration::from_secs(300);

/// Past this many agents touched at once, every row is worked out together (a few
/// statements) rather than each on its own (a few statements each).
const PER_AGENT_AT_MOST: usize = 64;

/// One agent on a real-time adherence screen.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AdherenceRow {
    /// The agent's id.
    pub id: String,
    /// As the platform last listed it; `null` until the roster was read.
    pub name: Option<String>,
    pub team_id: Option<String>,
    pub team: Option<String>,
    /// The recorded state (`null`: nothing recorded yet).
    pub state: Option<String>,
    pub reason: Option<String>,
    /// When the state began (RFC 3339).
    pub since: Option<String>,
    /// The schedule's activity now: its title (`LUNCH`, `Team meeting`), or `WORK`,
    /// `MANDATORY_BREAK`, `OPTIONAL_BREAK` where it has none; `null` off shift.
    pub scheduled: Option<String>,
    /// `in`, `out`, `neutral` (a rule counts it neither way, or nothing is recorded
    /// yet), `authorised` (a supervisor authorised the time or excused the exception)
    /// or `unscheduled` (off shift and logged out, or no shift stored around now).
    pub verdict: NowVerdict,
    /// Out of adherence: since when the deviation runs (RFC 3339).
    pub out_since: Option<String>,
    /// The open exception of this deviation has turned severe.
    pub severe: bool,
    /// The open exception of this deviation (it opens once the deviation lasted its
    /// grace).
    pub exception_id: Option<String>,
    /// In-adherence time per judged scheduled time since midnight UTC, in percent, as
    /// the compliance report counts it; `null` without any.
    pub adherence_pct_today: Option<f64>,
}

impl AdherenceRow {
    /// The row as far as a change of it is worth a message.
    fn key(&self) -> (AdherenceRow, Option<i64>) {
        let pct = self.adherence_pct_today.map(|pct| pct.round() as i64);
        let row = AdherenceRow {
            adherence_pct_today: None,
            ..self.clone()
        };
        (row, pct)
    }
}

/// The window of "today": from midnight UTC to `now` (`None` at midnight exactly).
pub fn today(now: DateTime<Utc>) -> Option<Window> {
    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    Window::checked(midnight, now).ok()
}

/// The row of `view`, judged against `schedules` at `now`, with today's percentage.
fn row(
    view: &AgentView,
    schedules: &Schedules,
    judging: &Judging,
    now: DateTime<Utc>,
    adherence_pct_today: Option<f64>,
) -> AdherenceRow {
    let state = view
        .state
        .as_deref()
        .and_then(|s| s.parse::<AgentState>().ok());
    let since = view
        .since
        .as_deref()
        .and_then(|s| crate::time::parse_instant(s).ok());
    let observed = state.map(|state| (state, view.reason.as_deref(), since.unwrap_or(now)));
    let judged = adherence_now::judge(schedules.timelines.get(&view.id), observed, judging, now);
    let exception = judged
        .out
        .and_then(|(_, kind)| view.exceptions.iter().find(|e| e.kind == kind.as_str()));
    AdherenceRow {
        id: view.id.clone(),
        name: view.name.clone(),
        team_id: view.team_id.clone(),
        team: view.team.clone(),
        state: view.state.clone(),
        reason: view.reason.clone(),
        since: view.since.clone(),
        scheduled: judged.scheduled,
        verdict: judged.verdict,
        out_since: judged.out.map(|(since, _)| rfc3339(since)),
        severe: exception.is_some_and(|e| e.severe),
        exception_id: exception.map(|e| e.exception_id.clone()),
        adherence_pct_today,
    }
}

/// Out of adherence first, longest out first; then the rest by name (then id).
fn ordered(rows: &mut [AdherenceRow]) {
    rows.sort_by(|a, b| {
        let out = |r: &AdherenceRow| r.verdict != NowVerdict::Out;
        (out(a), &a.out_since, &a.name, &a.id).cmp(&(out(b), &b.out_since, &b.name, &b.id))
    });
}

/// What the feed's adherence loop judges with: the tenant's rules (replaced on
/// reload) and the engine's clock.
#[derive(Debug, Clone)]
pub struct AdherenceJudge {
    pub judging: JudgingHandle,
    pub clock: Clock,
}

impl Live {
    /// The rows of the agents on the board that `wanted` keeps, at `now`, judged by
    /// `judging`: out of adherence first (longest first), then the rest by name. From
    /// the feed's views as they are: a reader without a stream has the feed catch up
    /// first ([`Live::catch_up`]).
    pub async fn adherence_rows(
        &self,
        wanted: impl Fn(&AgentView) -> bool,
        judging: &Judging,
        now: DateTime<Utc>,
    ) -> Result<Vec<AdherenceRow>, sqlx::Error> {
        let views: Vec<AgentView> = {
            let state = self.lock();
            state
                .agents
                .values()
                .filter(|v| wanted(v))
                .cloned()
                .collect()
        };
        let schedules = Schedules::read(self.pool(), None, now).await?;
        let figures = self.figures_today(judging, now).await?;
        let mut rows: Vec<AdherenceRow> = views
            .iter()
            .map(|view| {
                let pct = figures.get(&view.id).copied().flatten();
                row(view, &schedules, judging, now, pct)
            })
            .collect();
        ordered(&mut rows);
        Ok(rows)
    }

    /// Every agent's percentage of today, as the compliance report of today counts it.
    async fn figures_today(
        &self,
        judging: &Judging,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Option<f64>>, sqlx::Error> {
        let Some(window) = today(now) else {
            return Ok(HashMap::new());
        };
        let agents = crate::report::summarize(self.pool(), window, now, judging).await?;
        Ok(agents
            .into_iter()
            .map(|agent| (agent.agent_id, agent.adherence_pct))
            .collect())
    }

    /// One agent's row now, when it is on the board.
    async fn adherence_row(
        &self,
        agent_id: &str,
        judging: &Judging,
        now: DateTime<Utc>,
    ) -> Result<Option<AdherenceRow>, sqlx::Error> {
        let Some(view) = self.lock().agents.get(agent_id).cloned() else {
            return Ok(None);
        };
        let schedules = Schedules::read(self.pool(), Some(agent_id), now).await?;
        let pct = match today(now) {
            Some(window) => crate::report::agent_day(self.pool(), agent_id, window, now, judging)
                .await?
                .and_then(|day| day.figures.adherence_pct()),
            None => None,
        };
        Ok(Some(row(&view, &schedules, judging, now, pct)))
    }

    /// Has the adherence loop work every row out again now: something no event
    /// announces changed what they say (an authorisation made or withdrawn).
    pub fn recheck_adherence(&self) {
        self.inner.adherence_recheck.notify_one();
    }

    /// Publishes `row` as an `adherence.changed` message.
    fn publish_row(&self, row: &AdherenceRow) {
        let mut state = self.lock();
        state.version += 1;
        let message =
            super::encode::Message::transient(state.version, self.tenant(), ADHERENCE_CHANGED, row);
        self.publish(message);
    }

    /// The feed's adherence loop (see the module's doc), until `stop`.
    pub(super) async fn keep_adherence(self, stop: CancellationToken, judge: AdherenceJudge) {
        let mut messages = self.inner.sender.subscribe();
        let mut loop_state = Reckoning::default();
        let mut full = true;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        loop {
            let judging = judge.judging.current();
            let now = judge.clock.now();
            // Many agents at once (a bulk job, a burst of observed changes): cheaper
            // all together, with today's figures as last read.
            full |= touched.len() > PER_AGENT_AT_MOST;
            let outcome = if full {
                self.reckon_all(&mut loop_state, &judging, now).await
            } else {
                self.reckon(&mut loop_state, &touched, &judging, now).await
            };
            match outcome {
                Ok(()) => {
                    full = false;
                    touched.clear();
                }
                Err(error) => {
                    tracing::warn!(%error, "real-time adherence cannot read the store");
                    full = true;
                }
            }
            if !self.watched() {
                // Rows go to clients only (`GET /v1/adherence/now` works its own out): with
                // none, nothing is read until one comes; then every row at once, against
                // those last sent, so no change made meanwhile is missed. Its receiver
                // goes meanwhile: a receiver nobody reads keeps every message published
                // since in the ring, until the ring's slots are full (1,024 metric boards
                // and heartbeats, about 2 MB a tenant at rest).
                drop(messages);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.watchers_come() => {}
                }
                messages = self.inner.sender.subscribe();
                touched.clear();
                full = true;
                continue;
            }
            // Until the next full reckoning: the next change of any schedule, at most
            // FULL_EVERY away (both on the engine's clock).
            let until = loop_state
                .next_change
                .map_or(TimeDelta::MAX, |at| at - now + TimeDelta::milliseconds(1));
            let wait = judge
                .clock
                .real(until.min(TimeDelta::from_std(FULL_EVERY).unwrap_or(TimeDelta::MAX)))
                .min(judge.clock.period(FULL_EVERY));
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            tokio::select! {
                () = stop.cancelled() => return,
                () = &mut sleep => full = true,
                () = self.inner.adherence_recheck.notified() => full = true,
                received = messages.recv() => {
                    let mut next = Some(received);
                    // Everything already waiting, worked out together.
                    while let Some(received) = next.take() {
                        match received {
                            Ok(message) => match about_agent(&message) {
                                Some(Some(agent)) => {
                                    touched.insert(agent);
                                }
                                Some(None) => full = true,
                                None => {}
                            },
                            Err(RecvError::Lagged(_)) => full = true,
                            Err(RecvError::Closed) => return,
                        }
                        next = match messages.try_recv() {
                            Ok(message) => Some(Ok(message)),
                            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                                Some(Err(RecvError::Lagged(n)))
                            }
                            Err(_) => None,
                        };
                    }
                }
            }
        }
    }

    /// Works every row out again, and sends those that changed (none the first time:
    /// a page reads the rows whole first).
    async fn reckon_all(
        &self,
        reckoning: &mut Reckoning,
        judging: &Judging,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let views: Vec<AgentView> = self.lock().agents.values().cloned().collect();
        let schedules = Schedules::read(self.pool(), None, now).await?;
        let due = reckoning
            .figures_at
            .is_none_or(|at| at.elapsed() >= FIGURES_EVERY);
        if due {
            reckoning.figures = self.figures_today(judging, now).await?;
            reckoning.figures_at = Some(tokio::time::Instant::now());
        }
        for view in &views {
            let pct = reckoning.figures.get(&view.id).copied().flatten();
            let row = row(view, &schedules, judging, now, pct);
            if reckoning.started {
                reckoning.send_if_changed(self, row);
            } else {
                reckoning.sent.insert(row.id.clone(), row.key());
            }
        }
        reckoning.started = true;
        reckoning.next_change = schedules.next_change;
        Ok(())
    }

    /// Works the rows of `agents` out again, and sends those that changed.
    async fn reckon(
        &self,
        reckoning: &mut Reckoning,
        agents: &BTreeSet<String>,
        judging: &Judging,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        for agent in agents {
            if let Some(row) = self.adherence_row(agent, judging, now).await? {
                reckoning
                    .figures
                    .insert(row.id.clone(), row.adherence_pct_today);
                reckoning.send_if_changed(self, row);
            }
        }
        Ok(())
    }
}

/// What the adherence loop remembers between its rounds.
#[derive(Default)]
struct Reckoning {
    /// Whether the first full reckoning was made (it sends nothing).
    started: bool,
    /// Each agent's row as last sent (or first seen), as far as a change counts.
    sent: HashMap<String, (AdherenceRow, Option<i64>)>,
    /// Each agent's percentage of today, and when everyone's was read.
    figures: HashMap<String, Option<f64>>,
    figures_at: Option<tokio::time::Instant>,
    /// The next change of any agent's schedule.
    next_change: Option<DateTime<Utc>>,
}

impl Reckoning {
    fn send_if_changed(&mut self, live: &Live, row: AdherenceRow) {
        let key = row.key();
        if self.sent.get(&row.id) != Some(&key) {
            live.publish_row(&row);
            self.sent.insert(row.id.clone(), key);
        }
    }
}

/// Whether a message of the feed changes adherence rows: `Some(Some(agent))` one
/// agent's, `Some(None)` maybe everyone's (a new snapshot: a reload, a new roster);
/// `None` no row.
fn about_agent(message: &super::encode::Message) -> Option<Option<String>> {
    match &*message.kind {
        "snapshot" => Some(None),
        "agent.state_changed" | "adherence.exception" | "adherence.exception_reviewed" => {
            let body: serde_json::Value = serde_json::from_str(&message.json).ok()?;
            Some(Some(body["data"]["agentId"].as_str()?.to_owned()))
        }
        _ => None,
    }
}
