//! The schedule book: the shifts and breaks of the managed agents, for the automations
//! and the compliance sweep.
//!
//! The platform has no bulk schedule endpoint, so the book fetches one agent at a time
//! through the platform client, under the shared request budget: at 100 requests per
//! minute, 2,000 agents take 20 minutes. Every fetched shift is stored (one row per
//! agent and shift), so a restart has the book at once and reports can compute
//! adherence for past windows; the current shifts are kept in memory, with their
//! timelines, for the sweep.
//!
//! The agents are the ones state sync keeps in step ([`super::sync::managed_agents`]),
//! listed again every refresh interval. An agent is fetched again after
//! `schedules.refresh_interval`, and sooner when something is known to be due: just
//! after its shift ends (to learn the next one), and, when its schedule omits the
//! breaks, just after the mandatory break the break-status endpoint named (it names one
//! at a time). Break windows come from the schedule when it lists them; otherwise from
//! the break-status endpoint, collected over the fetches of one shift.
//!
//! **Cost** ([`ScheduleBook::run`]): all of it runs in the background lane of the
//! budget. Agents the book has nothing for (first start) are fetched as fast as that lane
//! allows; after that the refresh is paced, at most one request per managed agent per
//! refresh interval spread evenly over it (a restart after downtime brings no burst). Due agents go in order of shift start, the shift under
//! way first. With `schedules.max_age` set ([`ScheduleBook::with_max_age`]), an agent
//! whose stored schedule stays valid for the coming `max_age` (its known shift starts
//! later than that) is skipped until `max_age` before that shift (at most
//! [`SKIP_AT_MOST`] later), so its entry is fresh for compliance when the shift starts;
//! and the break-status endpoint is asked only for a shift under way or starting within
//! `max_age`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::lookups::Lookups;
use super::sync::{SyncSettings, error_kind, managed_agents};
use crate::cxone::{ContactCenter, CxoneError, Lane, in_lane};
use crate::domain::adherence::{Shift, Timeline};
use crate::domain::{BreakStatus, BreakWindow, Schedule};
use crate::store::Store;
use crate::store::schedules::{self, BreakSource, StoredShift};
use crate::telemetry::names::{
    SCHEDULE_BOOK_AGENTS, SCHEDULE_REFRESH_ERRORS_TOTAL, SCHEDULE_REFRESHES_TOTAL,
};

/// Agents fetched, and stored in one transaction, per step, where the platform exports
/// schedules in bulk (one request per chunk).
const CHUNK: usize = 50;

/// Schedule requests in flight at once. The budget, not this, sets the pace; a few in
/// flight keep a platform's latency from setting it instead.
const CONCURRENCY: usize = 4;

/// How long after a shift or break ends the agent is fetched again.
const AFTER_BOUNDARY: TimeDelta = TimeDelta::minutes(1);

/// How long a failed fetch waits before it is tried again.
const RETRY_AFTER_ERROR: TimeDelta = TimeDelta::minutes(1);

/// The longest an agent whose shift lies ahead is skipped: shifts added or moved on the
/// platform before it are learnt within this.
pub const SKIP_AT_MOST: TimeDelta = TimeDelta::hours(8);

/// The break type recorded for a window the break-status endpoint gave (it has none).
const UNTYPED_BREAK: &str = "BREAK";

/// The most agents [`WantedAgents`] remembers; past it the oldest is forgotten.
const WANTED_AT_MOST: usize = 256;

/// The agents people acted on while the book could not decide for them (missing or too
/// old): the book fetches these first, so the next change for them is decided from the
/// book. The engine adds, the book takes; shared as `Arc<WantedAgents>`.
#[derive(Debug, Default)]
pub struct WantedAgents(std::sync::Mutex<std::collections::VecDeque<String>>);

impl WantedAgents {
    pub fn add(&self, agent_id: &str) {
        let mut wanted = self.lock();
        if wanted.iter().any(|id| id == agent_id) {
            return;
        }
        if wanted.len() == WANTED_AT_MOST {
            wanted.pop_front();
        }
        wanted.push_back(agent_id.to_owned());
    }

    pub(crate) fn snapshot(&self) -> std::collections::HashSet<String> {
        self.lock().iter().cloned().collect()
    }

    fn remove(&self, fetched: &[String]) {
        self.lock().retain(|id| !fetched.contains(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The shifts of each agent's newest fetch, as stored, kept in memory while a book runs
/// in this process, so a change's compliance check reads the book without a database
/// read ([`NewestShifts::of`]). The engine reads, the book fills it when it loads and
/// keeps it in step after each chunk it stores; shared as `Arc<NewestShifts>`.
///
/// It answers only while a book runs here: the book is the one writer of the stored
/// shifts, and runs only where the tenant is led, so while it runs nothing else changes
/// them. Before its load and after it stops (another instance may lead now), and for an
/// agent it holds nothing for, the caller reads the database.
#[derive(Debug, Default)]
pub struct NewestShifts(RwLock<Option<Held>>);

/// What [`NewestShifts`] holds while it answers.
#[derive(Debug, Default)]
struct Held {
    newest: HashMap<String, Arc<[StoredShift]>>,
    /// Agents whose newest stored fetch it cannot know: an older fetch came after it.
    to_database: HashSet<String>,
}

impl NewestShifts {
    /// The shifts of the agent's newest fetch, by start; `None` when the database must
    /// say (no book runs, or it holds nothing for the agent).
    pub fn of(&self, agent_id: &str) -> Option<Arc<[StoredShift]>> {
        self.read().as_ref()?.newest.get(agent_id).cloned()
    }

    /// Starts answering with `stored`, every agent's newest fetch, by agent and start
    /// (as [`schedules::freshest_of_all`] reads them).
    fn fill(&self, stored: Vec<StoredShift>) {
        let mut by_agent: HashMap<String, Vec<StoredShift>> = HashMap::new();
        for shift in stored {
            by_agent
                .entry(shift.agent_id.clone())
                .or_default()
                .push(shift);
        }
        let newest = by_agent
            .into_iter()
            .map(|(agent, shifts)| (agent, shifts.into()))
            .collect();
        *self.write() = Some(Held {
            newest,
            to_database: HashSet::new(),
        });
    }

    /// Takes in shifts just stored, in the order [`schedules::save`] stored them, as
    /// it stored them: a shift replaces the agent's shift of the same start and the
    /// ones it overlaps, and the newest fetch is the agent's rows fetched last. A shift
    /// fetched before the ones held (a clock set back) leaves the agent to the database.
    fn stored(&self, shifts: &[StoredShift]) {
        let mut held = self.write();
        let Some(held) = held.as_mut() else { return };
        for shift in shifts {
            let agent = &shift.agent_id;
            if held.to_database.contains(agent) {
                continue;
            }
            // The agent's rows of the same fetch that this shift leaves in place.
            let mut rows: Vec<StoredShift> = match held.newest.get(agent) {
                Some(rows) if rows.iter().any(|r| r.fetched_at > shift.fetched_at) => {
                    held.newest.remove(agent);
                    held.to_database.insert(agent.clone());
                    continue;
                }
                Some(rows) => rows
                    .iter()
                    .filter(|r| {
                        r.fetched_at == shift.fetched_at
                            && r.shift.start != shift.shift.start
                            && !(r.shift.start < shift.shift.end && r.shift.end > shift.shift.start)
                    })
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            rows.push(shift.clone());
            rows.sort_by_key(|r| r.shift.start);
            held.newest.insert(agent.clone(), rows.into());
        }
    }

    /// Stops answering: the book stopped.
    fn close(&self) {
        *self.write() = None;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Held>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<Held>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the book's [`NewestShifts`] when its run ends, however it ends.
struct Closes(Arc<NewestShifts>);

impl Drop for Closes {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What the book needs to know.
#[derive(Debug, Clone)]
pub struct BookSettings {
    pub refresh_interval: Duration,
    /// Whose schedules: the agents state sync keeps in step.
    pub agents: SyncSettings,
}

/// An agent's current shift, with its timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPlan {
    pub agent_id: String,
    pub shift: Shift,
    pub timezone: Option<String>,
    pub breaks_from: BreakSource,
    pub fetched_at: DateTime<Utc>,
    pub timeline: Timeline,
}

impl AgentPlan {
    fn new(stored: StoredShift) -> AgentPlan {
        AgentPlan {
            timeline: Timeline::new(std::slice::from_ref(&stored.shift)),
            agent_id: stored.agent_id,
            shift: stored.shift,
            timezone: stored.timezone,
            breaks_from: stored.breaks_from,
            fetched_at: stored.fetched_at,
        }
    }

    /// When this agent should be fetched again, given it was fetched at `at`: after
    /// `interval`, just after the shift or a break-status break ends, and, when the
    /// shift starts later than `max_age` (non-zero) from `at`, `max_age` before it starts
    /// (at most [`SKIP_AT_MOST`] on): the stored schedule stays valid until then.
    fn next_fetch(
        &self,
        at: DateTime<Utc>,
        interval: TimeDelta,
        max_age: TimeDelta,
    ) -> DateTime<Utc> {
        if max_age > TimeDelta::zero() && self.shift.start > at + max_age {
            return (self.shift.start - max_age).min(at + SKIP_AT_MOST.max(interval));
        }
        let mut next = at + interval;
        let mut soon = |boundary: DateTime<Utc>| {
            if boundary > at {
                next = next.min(boundary + AFTER_BOUNDARY);
            }
        };
        soon(self.shift.end);
        if self.breaks_from == BreakSource::BreakStatus {
            for b in &self.shift.breaks {
                soon(b.end);
            }
        }
        next
    }
}

#[derive(Debug)]
struct Entry {
    /// `None` while the platform gives no shift for the agent.
    plan: Option<Arc<AgentPlan>>,
    next_fetch: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Book {
    /// The managed agents and when they were listed; `None` until the first listing.
    managed: Option<(Vec<String>, DateTime<Utc>)>,
    entries: HashMap<String, Entry>,
}

/// What a refresh did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefreshReport {
    /// Managed agents.
    pub agents: usize,
    /// Agents whose schedule was fetched and stored.
    pub fetched: usize,
    /// Agents whose fetch failed (their last known shift stays).
    pub failed: usize,
}

/// Why a refresh could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("cannot list the managed agents: {0}")]
    Platform(#[from] CxoneError),
    #[error("the database failed: {0}")]
    Store(#[from] sqlx::Error),
}

/// The managed agents' schedules. Share it as `Arc<ScheduleBook>`; run it with
/// [`ScheduleBook::run`], or step it with [`ScheduleBook::refresh_step`] (paced) or
/// [`ScheduleBook::refresh_due`] (everything due at once) in tests and benchmarks.
pub struct ScheduleBook {
    store: Store,
    platform: Arc<dyn ContactCenter>,
    settings: BookSettings,
    /// `schedules.max_age`: zero skips nothing.
    max_age: TimeDelta,
    /// Whether the platform's last answer to the bulk export was schedules: the paced
    /// refresh then takes a chunk per step, else one agent.
    exports: AtomicBool,
    /// Never held across an await.
    book: RwLock<Book>,
    /// The engine's clock: schedules are fetched and fall due by it.
    clock: Clock,
    /// The agents people are acting on: fetched before the rest.
    wanted: Arc<WantedAgents>,
    /// The engine's lookups, when shared: one request per agent serves the book and a
    /// change checked meanwhile.
    lookups: Option<Arc<Lookups>>,
    /// The engine's copy of the newest fetches, kept in step while this book runs.
    newest: Option<Arc<NewestShifts>>,
}

/// What one paced step did, and how long the refresh should wait before the next.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefreshStep {
    pub report: RefreshReport,
    /// Platform requests the step made.
    pub requests: usize,
    /// The wait before the next step, counted from this step's start: the step's share
    /// of the refresh interval, or until the next agent is due.
    pub wait: Duration,
}

impl ScheduleBook {
    pub fn new(store: Store, platform: Arc<dyn ContactCenter>, settings: BookSettings) -> Self {
        ScheduleBook {
            store,
            platform,
            settings,
            max_age: TimeDelta::zero(),
            exports: AtomicBool::new(false),
            book: RwLock::default(),
            clock: Clock::Wall,
            wanted: Arc::default(),
            lookups: None,
            newest: None,
        }
    }

    /// Asks for schedules and break status through `lookups` (the engine's, see
    /// [`super::TransitionEngine::lookups`]): a change checked while the book fetches
    /// the same agent shares its request, and an answer the engine just had is reused.
    pub fn with_lookups(mut self, lookups: Arc<Lookups>) -> Self {
        self.lookups = Some(lookups);
        self
    }

    /// Fetches the agents `wanted` names (the engine's, see
    /// [`super::TransitionEngine::wanted_agents`]) before the other due ones.
    pub fn with_wanted(mut self, wanted: Arc<WantedAgents>) -> Self {
        self.wanted = wanted;
        self
    }

    /// Keeps `newest` (the engine's, see [`super::TransitionEngine::newest_shifts`])
    /// in step with what this book stores, from its load until its run ends.
    pub fn with_newest(mut self, newest: Arc<NewestShifts>) -> Self {
        self.newest = Some(newest);
        self
    }

    /// Reads "now" from `clock` (the engine's) instead of the wall clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Skips agents whose stored schedule stays valid for the coming `max_age`
    /// (`schedules.max_age`), fetching them `max_age` before their shift, and asks for
    /// break status only for shifts under way or starting within it.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = TimeDelta::from_std(max_age).unwrap_or(TimeDelta::MAX);
        self
    }

    fn interval(&self) -> TimeDelta {
        TimeDelta::from_std(self.settings.refresh_interval).unwrap_or(TimeDelta::MAX)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        self.book.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Book> {
        self.book.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills the book with each agent's latest stored shift, and the engine's
    /// [`NewestShifts`] with each agent's newest fetch; returns how many agents. Agents
    /// whose stored data is due are fetched by the next refresh.
    pub async fn load(&self) -> Result<usize, sqlx::Error> {
        if let Some(newest) = &self.newest {
            newest.fill(schedules::freshest_of_all(self.store.reader()).await?);
        }
        let stored = schedules::latest(self.store.reader()).await?;
        let interval = self.interval();
        let mut book = self.write();
        for shift in stored {
            let plan = AgentPlan::new(shift);
            let next_fetch = plan.next_fetch(plan.fetched_at, interval, self.max_age);
            book.entries.insert(
                plan.agent_id.clone(),
                Entry {
                    plan: Some(Arc::new(plan)),
                    next_fetch,
                },
            );
        }
        let count = book.entries.len();
        drop(book);
        self.update_gauge();
        Ok(count)
    }

    /// The agent's current plan, if its schedule has a shift.
    pub fn plan(&self, agent_id: &str) -> Option<Arc<AgentPlan>> {
        self.read().entries.get(agent_id)?.plan.clone()
    }

    /// The plans of every managed agent whose schedule has a shift, by agent id.
    pub fn plans(&self) -> Vec<Arc<AgentPlan>> {
        let mut plans: Vec<_> = self
            .read()
            .entries
            .values()
            .filter_map(|e| e.plan.clone())
            .collect();
        plans.sort_unstable_by(|a, b| a.agent_id.cmp(&b.agent_id));
        plans
    }

    /// Lists the managed agents when due and fetches every agent whose schedule is due
    /// at `now`, storing what it gets.
    ///
    /// Cancel-safe: fetching only reads, and each chunk is stored in one transaction.
    pub async fn refresh_due(&self, now: DateTime<Utc>) -> Result<RefreshReport, BookError> {
        let managed = self.managed(now).await?;
        let due: Vec<String> = self
            .due(&managed, now)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut report = RefreshReport {
            agents: managed.len(),
            ..RefreshReport::default()
        };
        for chunk in due.chunks(CHUNK) {
            let (fetched, failed, _) = self.fetch_chunk(chunk, now).await?;
            report.fetched += fetched;
            report.failed += failed;
        }
        self.update_gauge();
        Ok(report)
    }

    /// One paced step of the refresh at `now`: fetches the most urgent due agent (a
    /// chunk of them once the platform has exported in bulk) and says how long to wait
    /// before the next step, so the refresh makes at most one request per managed agent
    /// per refresh interval, evenly spread.
    pub async fn refresh_step(&self, now: DateTime<Utc>) -> Result<RefreshStep, BookError> {
        let listed = self.read().managed.as_ref().map(|(_, at)| *at);
        let managed = self.managed(now).await?;
        let mut requests = usize::from(self.read().managed.as_ref().map(|(_, at)| *at) != listed);
        let due = self.due(&managed, now);
        // Agents the book has nothing for yet are fetched as fast as the background lane
        // allows (its share keeps them from starving anyone); the refresh of known ones
        // is spread.
        let first_fill = due.first().is_some_and(|(_, known)| !known);
        // A step fetching one by one takes only as many as go out at once, so an agent
        // someone acts on meanwhile is next, not behind a long chunk.
        let take = if self.exports.load(Ordering::Relaxed) {
            CHUNK
        } else if first_fill {
            CONCURRENCY
        } else {
            1
        };
        let due: Vec<String> = due
            .into_iter()
            .take_while(|(_, known)| *known != first_fill)
            .take(take)
            .map(|(id, _)| id)
            .collect();
        let mut report = RefreshReport {
            agents: managed.len(),
            ..RefreshReport::default()
        };
        if !due.is_empty() {
            let (fetched, failed, made) = self.fetch_chunk(&due, now).await?;
            report.fetched = fetched;
            report.failed = failed;
            requests += made;
            self.update_gauge();
        }
        // One request per managed agent per interval, the agents' listing included.
        let share = self.settings.refresh_interval
            / u32::try_from(managed.len().max(1)).unwrap_or(u32::MAX);
        let wait = if first_fill {
            Duration::ZERO
        } else if report.fetched + report.failed > 0 {
            share * u32::try_from(requests.max(1)).unwrap_or(u32::MAX)
        } else {
            let until_due = self
                .next_due()
                .map(|at| (at - now).to_std().unwrap_or_default())
                .unwrap_or(MAX_WAIT);
            until_due.max(share * u32::try_from(requests).unwrap_or(u32::MAX))
        };
        Ok(RefreshStep {
            report,
            requests,
            wait: wait.clamp(Duration::from_millis(1), MAX_WAIT.max(share)),
        })
    }

    /// The managed agents due at `now`, each with whether the book has fetched it
    /// before: those it has not first, then by the start of their known shift (the one
    /// under way first), agents with no shift ahead counting as starting now; within
    /// each of the two, the agents people are acting on ([`WantedAgents`]) first.
    fn due(&self, managed: &[String], now: DateTime<Utc>) -> Vec<(String, bool)> {
        let wanted = self.wanted.snapshot();
        let book = self.read();
        let mut due: Vec<(bool, bool, DateTime<Utc>, &String)> = managed
            .iter()
            .filter_map(|id| {
                let entry = book.entries.get(id);
                if entry.is_some_and(|e| e.next_fetch > now) {
                    return None;
                }
                let starts = entry
                    .and_then(|e| e.plan.as_ref())
                    .filter(|p| p.shift.end > now)
                    .map_or(now, |p| p.shift.start);
                Some((entry.is_some(), !wanted.contains(id), starts, id))
            })
            .collect();
        due.sort();
        due.into_iter()
            .map(|(known, _, _, id)| (id.clone(), known))
            .collect()
    }

    /// The managed agents, listed again when the last listing is older than the
    /// refresh interval. A failed listing keeps the last one, if there is one.
    async fn managed(&self, now: DateTime<Utc>) -> Result<Vec<String>, BookError> {
        let last = self.read().managed.clone();
        if let Some((ids, listed_at)) = &last
            && now < *listed_at + self.interval()
        {
            return Ok(ids.clone());
        }
        match managed_agents(self.platform.as_ref(), &self.settings.agents).await {
            Ok(ids) => {
                let mut book = self.write();
                book.entries.retain(|id, _| ids.binary_search(id).is_ok());
                book.managed = Some((ids.clone(), now));
                Ok(ids)
            }
            Err(e) => {
                metrics::counter!(SCHEDULE_REFRESH_ERRORS_TOTAL, "kind" => error_kind(&e))
                    .increment(1);
                match last {
                    Some((ids, _)) => {
                        tracing::warn!(error = %e, "cannot list the managed agents; keeping the last list");
                        Ok(ids)
                    }
                    None => Err(e.into()),
                }
            }
        }
    }

    /// Fetches `ids`, stores the shifts in one transaction and updates the book;
    /// returns (fetched, failed, platform requests made).
    async fn fetch_chunk(
        &self,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(usize, usize, usize), sqlx::Error> {
        let requests = AtomicUsize::new(0);
        // One request for the chunk where the platform exports schedules in bulk.
        let mut exported: HashMap<String, Schedule> = match self.platform.schedules(ids).await {
            Ok(schedules) => {
                requests.fetch_add(1, Ordering::Relaxed);
                self.exports.store(true, Ordering::Relaxed);
                schedules.into_iter().collect()
            }
            Err(CxoneError::NotOffered { .. }) => {
                self.exports.store(false, Ordering::Relaxed);
                HashMap::new()
            }
            Err(e) => {
                requests.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "the bulk schedule export failed; fetching one by one");
                HashMap::new()
            }
        };
        let work: Vec<(String, Option<Schedule>)> = ids
            .iter()
            .map(|id| (id.clone(), exported.remove(id)))
            .collect();
        let results: Vec<(String, Result<Option<StoredShift>, CxoneError>)> =
            futures::stream::iter(work)
                .map(|(id, exported)| {
                    let requests = &requests;
                    async move {
                        let result = self.fetch(&id, now, exported, requests).await;
                        (id, result)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        let mut failed = 0;
        let mut fetched: Vec<(String, Option<StoredShift>)> = Vec::new();
        for (id, result) in results {
            match result {
                Ok(shift) => fetched.push((id, shift)),
                Err(e) => {
                    failed += 1;
                    metrics::counter!(SCHEDULE_REFRESH_ERRORS_TOTAL, "kind" => error_kind(&e))
                        .increment(1);
                    tracing::warn!(agent = %id, error = %e, "cannot fetch the agent's schedule; keeping the last one");
                    let mut book = self.write();
                    let entry = book.entries.entry(id).or_insert(Entry {
                        plan: None,
                        next_fetch: now,
                    });
                    entry.next_fetch = now + RETRY_AFTER_ERROR;
                }
            }
        }
        let shifts: Vec<StoredShift> = fetched
            .iter()
            .filter_map(|(_, shift)| shift.clone())
            .collect();
        if !shifts.is_empty() {
            let mut tx = self.store.begin_write().await?;
            schedules::save(&mut tx, &shifts).await?;
            tx.commit().await?;
            if let Some(newest) = &self.newest {
                newest.stored(&shifts);
            }
        }
        metrics::counter!(SCHEDULE_REFRESHES_TOTAL).increment(fetched.len() as u64);
        let interval = self.interval();
        let mut book = self.write();
        for (id, shift) in fetched {
            let plan = shift.map(|s| Arc::new(AgentPlan::new(s)));
            let next_fetch = plan.as_ref().map_or(now + interval, |p| {
                p.next_fetch(now, interval, self.max_age)
            });
            book.entries.insert(id, Entry { plan, next_fetch });
        }
        self.wanted.remove(ids);
        Ok((ids.len() - failed, failed, requests.into_inner()))
    }

    /// One agent's shift as the platform gives it now, with break windows from the
    /// schedule or the break-status endpoint; `None` when the schedule has no shift.
    /// Counts its platform requests in `requests`.
    async fn fetch(
        &self,
        agent_id: &str,
        now: DateTime<Utc>,
        exported: Option<Schedule>,
        requests: &AtomicUsize,
    ) -> Result<Option<StoredShift>, CxoneError> {
        let schedule = match exported {
            Some(schedule) => schedule,
            None => {
                requests.fetch_add(1, Ordering::Relaxed);
                match &self.lookups {
                    Some(lookups) => Schedule::clone(&*lookups.schedule(agent_id).await?),
                    None => self.platform.schedule(agent_id).await?,
                }
            }
        };
        let (Some(start), Some(end)) = (schedule.shift_start, schedule.shift_end) else {
            return Ok(None);
        };
        if end <= start {
            return Ok(None);
        }
        let (breaks, breaks_from) = match schedule.breaks {
            Some(breaks) => (breaks, BreakSource::Schedule),
            None => {
                // Break windows matter only within the shift: a shift that neither is
                // under way nor starts within max_age is asked about when it nears.
                let soon = self.max_age.is_zero() || (start <= now + self.max_age && end > now);
                let named = if soon {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let status = match &self.lookups {
                        Some(lookups) => {
                            BreakStatus::clone(&*lookups.break_status(agent_id).await?)
                        }
                        None => self.platform.break_status(agent_id).await?,
                    };
                    match (status.break_start, status.break_end) {
                        (Some(start), Some(end)) if start < end => vec![BreakWindow {
                            start,
                            end,
                            kind: UNTYPED_BREAK.to_owned(),
                            mandatory: true,
                        }],
                        _ => Vec::new(),
                    }
                } else {
                    Vec::new()
                };
                // The endpoint names one break at a time: keep the ones it named before
                // for the same shift.
                let mut breaks = match self.plan(agent_id) {
                    Some(p)
                        if p.shift.start == start && p.breaks_from == BreakSource::BreakStatus =>
                    {
                        p.shift.breaks.clone()
                    }
                    _ => Vec::new(),
                };
                for b in named {
                    if !breaks.iter().any(|k| k.start == b.start && k.end == b.end) {
                        breaks.push(b);
                    }
                }
                breaks.sort_by_key(|b| b.start);
                (breaks, BreakSource::BreakStatus)
            }
        };
        // The schedule may name activities of other shifts (incontact exports several):
        // this shift keeps its own.
        let activities = schedule
            .activities
            .into_iter()
            .filter(|a| a.start < end && a.end > start)
            .collect();
        Ok(Some(StoredShift {
            agent_id: agent_id.to_owned(),
            shift: Shift {
                start,
                end,
                breaks,
                activities,
            },
            timezone: schedule.timezone,
            breaks_from,
            fetched_at: now,
        }))
    }

    /// When the next agent is due (or the agents are to be listed again).
    fn next_due(&self) -> Option<DateTime<Utc>> {
        let book = self.read();
        let listing = book.managed.as_ref().map(|(_, at)| *at + self.interval());
        book.entries
            .values()
            .map(|e| e.next_fetch)
            .chain(listing)
            .min()
    }

    fn update_gauge(&self) {
        let with_plan = self
            .read()
            .entries
            .values()
            .filter(|e| e.plan.is_some())
            .count();
        metrics::gauge!(SCHEDULE_BOOK_AGENTS).set(with_plan as f64);
    }

    /// Loads the stored shifts, then keeps the book up to date until `stop` is
    /// cancelled, one paced [`ScheduleBook::refresh_step`] at a time.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        // Whatever ends the run (stopped, or dropped at a term's end), the engine reads
        // the database again: another instance may store shifts from now on.
        let _closes = self.newest.clone().map(Closes);
        match self.load().await {
            Ok(count) => tracing::info!(agents = count, "schedule book loaded from the database"),
            Err(e) => tracing::warn!(error = %e, "cannot load the stored schedules; fetching them"),
        }
        // Counted over each refresh interval, for one log line per interval.
        let (mut fetched, mut failed, mut requests) = (0, 0, 0);
        let mut since = std::time::Instant::now();
        loop {
            let started = tokio::time::Instant::now();
            // Under a small budget a step waits for its permit: shutdown does not.
            let stepped = tokio::select! {
                // Refreshing can wait: it yields to people and automations (its share
                // of the budget while they wait is `cxone.background_share`).
                stepped = in_lane(Lane::Background, None, self.refresh_step(self.clock.now())) => stepped,
                () = stop.cancelled() => break,
            };
            let wait = match stepped {
                Ok(step) => {
                    fetched += step.report.fetched;
                    failed += step.report.failed;
                    requests += step.requests;
                    if since.elapsed() >= self.settings.refresh_interval {
                        tracing::info!(
                            fetched,
                            failed,
                            requests,
                            agents = step.report.agents,
                            over = %humantime::format_duration(self.settings.refresh_interval),
                            "schedule book refreshed"
                        );
                        (fetched, failed, requests) = (0, 0, 0);
                        since = std::time::Instant::now();
                    }
                    // The pace is in the engine's time; a fast clock steps faster.
                    self.clock
                        .period(step.wait)
                        .saturating_sub(started.elapsed())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "schedule book refresh failed; trying again");
                    ERROR_WAIT
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => break,
            }
        }
        tracing::info!("schedule book stopped");
    }
}

/// The run loop's waits between steps when nothing is due: at most a minute (so a
/// listing or a due agent is never missed by long); half a minute after a failure.
const MAX_WAIT: Duration = Duration::from_secs(60);
const ERROR_WAIT: Duration = Duration::from_secs(30);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{BreakStatus, Schedule, ScheduleStatus};
    use crate::store::from_ms;
    use crate::store::testing::temp_store;

    pub fn at(minutes: i64) -> DateTime<Utc> {
        from_ms(1_790_000_000_000 + minutes * 60_000)
    }

    /// Scripted schedules and break statuses; counts its calls.
    pub use crate::cxone::fake::FakePlatform as SchedulePlatform;

    pub fn lunch(start: i64, end: i64) -> BreakWindow {
        BreakWindow {
            start: at(start),
            end: at(end),
            kind: "LUNCH".into(),
            mandatory: true,
        }
    }

    /// A shift from minute `start` to `end` with these breaks (`None`: omitted).
    pub fn schedule(start: i64, end: i64, breaks: Option<Vec<BreakWindow>>) -> Schedule {
        Schedule {
            status: ScheduleStatus::Active,
            timezone: Some("America/Chicago".into()),
            shift_start: Some(at(start)),
            shift_end: Some(at(end)),
            breaks,
            activities: Vec::new(),
        }
    }

    pub fn settings(interval_minutes: u64) -> BookSettings {
        BookSettings {
            refresh_interval: Duration::from_secs(60 * interval_minutes),
            agents: SyncSettings {
                interval: Duration::from_secs(10),
                renew_after: Duration::from_secs(3_600),
                teams: Vec::new(),
                agents: Vec::new(),
                unfiltered: false,
            },
        }
    }

    #[tokio::test]
    async fn a_platform_with_a_bulk_export_fills_the_book_in_one_request() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        platform
            .exports
            .store(true, std::sync::atomic::Ordering::Relaxed);
        platform.set("u_1", schedule(0, 480, Some(vec![lunch(180, 210)])));
        platform.set("u_2", schedule(60, 540, Some(vec![])));
        let book = ScheduleBook::new(store.clone(), platform.clone(), settings(60));

        let report = book.refresh_due(at(-30)).await.unwrap();
        assert_eq!((report.fetched, report.failed), (2, 0));
        assert_eq!(platform.calls("export"), 1);
        assert_eq!(platform.calls("schedule"), 0);
        assert_eq!(book.plan("u_1").unwrap().shift.breaks, [lunch(180, 210)]);
    }

    #[tokio::test]
    async fn every_agent_is_fetched_once_stored_and_loaded_after_a_restart_without_calls() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        platform.set("u_1", schedule(0, 480, Some(vec![lunch(180, 210)])));
        platform.set("u_2", schedule(60, 540, Some(vec![])));
        let book = ScheduleBook::new(store.clone(), platform.clone(), settings(60));

        let report = book.refresh_due(at(-30)).await.unwrap();
        assert_eq!(
            report,
            RefreshReport {
                agents: 2,
                fetched: 2,
                failed: 0
            }
        );
        let again = book.refresh_due(at(-20)).await.unwrap();
        assert_eq!(again.fetched, 0, "nothing due ten minutes later");
        assert_eq!(platform.calls("schedule"), 2);
        assert_eq!(
            platform.calls("breaks"),
            0,
            "both schedules list their breaks"
        );
        let plan = book.plan("u_1").unwrap();
        assert_eq!(plan.shift.breaks, [lunch(180, 210)]);
        assert_eq!(plan.timeline.segments().len(), 3);

        let restarted = ScheduleBook::new(store.clone(), platform.clone(), settings(60));
        assert_eq!(restarted.load().await.unwrap(), 2);
        assert_eq!(restarted.plan("u_1"), book.plan("u_1"));
        assert_eq!(
            restarted
                .plans()
                .iter()
                .map(|p| &p.agent_id)
                .collect::<Vec<_>>(),
            ["u_1", "u_2"]
        );
        assert_eq!(platform.calls("schedule"), 2, "loading costs no call");
    }

    #[tokio::test]
    async fn omitted_breaks_come_from_the_break_endpoint_one_at_a_time_and_add_up() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        platform.set("u_1", schedule(0, 480, None));
        let status = |start, end| BreakStatus {
            mandatory_break_required: false,
            break_start: Some(at(start)),
            break_end: Some(at(end)),
        };
        platform
            .breaks
            .lock()
            .unwrap()
            .insert("u_1".into(), status(120, 135));
        let book = ScheduleBook::new(store.clone(), platform.clone(), settings(600));
        book.refresh_due(at(10)).await.unwrap();
        let first = book.plan("u_1").unwrap();
        assert_eq!(first.breaks_from, BreakSource::BreakStatus);
        assert_eq!(first.shift.breaks.len(), 1);

        // Due again a minute after that break, not before; then the next one is named.
        assert_eq!(book.refresh_due(at(135)).await.unwrap().fetched, 0);
        platform
            .breaks
            .lock()
            .unwrap()
            .insert("u_1".into(), status(240, 270));
        assert_eq!(book.refresh_due(at(136)).await.unwrap().fetched, 1);
        let breaks: Vec<_> = book
            .plan("u_1")
            .unwrap()
            .shift
            .breaks
            .iter()
            .map(|b| (b.start, b.end, b.mandatory))
            .collect();
        assert_eq!(
            breaks,
            [(at(120), at(135), true), (at(240), at(270), true)],
            "the first break is remembered for the report"
        );
        let stored = schedules::latest(store.reader()).await.unwrap();
        assert_eq!(stored[0].shift.breaks.len(), 2);
        assert_eq!(platform.calls("breaks"), 2);
    }

    #[tokio::test]
    async fn an_agent_is_fetched_again_after_the_interval_and_just_after_the_shift() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        platform.set("u_1", schedule(0, 480, Some(vec![])));
        let book = ScheduleBook::new(store, platform.clone(), settings(60));
        book.refresh_due(at(400)).await.unwrap();
        assert_eq!(book.refresh_due(at(459)).await.unwrap().fetched, 0);
        assert_eq!(
            book.refresh_due(at(460)).await.unwrap().fetched,
            1,
            "hourly"
        );
        // The shift ends at 480: fetched again at 481 for the next one.
        assert_eq!(book.refresh_due(at(480)).await.unwrap().fetched, 0);
        platform.set("u_1", schedule(1_440, 1_920, Some(vec![])));
        assert_eq!(book.refresh_due(at(481)).await.unwrap().fetched, 1);
        assert_eq!(book.plan("u_1").unwrap().shift.start, at(1_440));
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_the_last_shift_and_is_retried_a_minute_later() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        platform.set("u_1", schedule(0, 480, Some(vec![])));
        platform.set("u_2", schedule(0, 480, Some(vec![])));
        let book = ScheduleBook::new(store, platform.clone(), settings(60));
        book.refresh_due(at(0)).await.unwrap();
        platform.schedules.lock().unwrap().insert(
            "u_1".into(),
            Err(CxoneError::Server {
                status: 503,
                message: String::new(),
                retry_after: None,
            }),
        );
        let report = book.refresh_due(at(61)).await.unwrap();
        assert_eq!((report.fetched, report.failed), (1, 1));
        assert_eq!(book.plan("u_1").unwrap().fetched_at, at(0), "kept");
        assert_eq!(
            book.refresh_due(at(61)).await.unwrap().failed,
            0,
            "not at once"
        );
        assert_eq!(book.refresh_due(at(62)).await.unwrap().failed, 1);
    }

    #[tokio::test]
    async fn agents_no_longer_managed_leave_the_book_and_shiftless_ones_have_no_plan() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        platform.set("u_1", schedule(0, 480, Some(vec![])));
        platform.set(
            "u_2",
            Schedule {
                status: ScheduleStatus::Inactive,
                timezone: None,
                shift_start: None,
                shift_end: None,
                breaks: None,
                activities: Vec::new(),
            },
        );
        let book = ScheduleBook::new(store, platform.clone(), settings(60));
        assert_eq!(book.refresh_due(at(0)).await.unwrap().agents, 2);
        assert!(book.plan("u_2").is_none());
        assert_eq!(platform.calls("breaks"), 0, "no shift, no break question");
        platform.schedules.lock().unwrap().remove("u_1");
        // Listed again only once the interval has passed.
        assert!(book.refresh_due(at(30)).await.is_ok());
        assert!(book.plan("u_1").is_some());
        book.refresh_due(at(60)).await.unwrap();
        assert!(book.plan("u_1").is_none());
        assert_eq!(platform.calls("list"), 2);
    }

    /// Steps the paced refresh from minute `from` to `to`, time passing only as each
    /// step says; returns the minute (as seconds from `at(0)`) each fetch was made at.
    async fn step_through(book: &ScheduleBook, from: i64, to: i64) -> Vec<(String, i64)> {
        let mut now = at(from);
        let mut fetched_at = Vec::new();
        while now < at(to) {
            let before: HashMap<String, DateTime<Utc>> = book
                .plans()
                .iter()
                .map(|p| (p.agent_id.clone(), p.fetched_at))
                .collect();
            let step = book.refresh_step(now).await.unwrap();
            for plan in book.plans() {
                if before.get(&plan.agent_id) != Some(&plan.fetched_at) {
                    fetched_at.push((plan.agent_id.clone(), (now - at(0)).num_seconds()));
                }
            }
            now += TimeDelta::from_std(step.wait).unwrap();
        }
        fetched_at
    }

    #[tokio::test]
    async fn after_the_first_fill_the_refresh_is_spread_over_the_interval_one_request_per_agent() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        for i in 0..30 {
            platform.set(&format!("u_{i:02}"), schedule(-60, 420, Some(vec![])));
        }
        let book = ScheduleBook::new(store, platform.clone(), settings(60))
            .with_max_age(Duration::from_secs(15 * 60));

        let fetched = step_through(&book, 0, 180).await;
        let (first, later): (Vec<_>, Vec<_>) = fetched.iter().partition(|(_, s)| *s == 0);
        assert_eq!(first.len(), 30, "an empty book is filled at once");
        // An hour later all thirty are due together: they are spread over the next hour,
        // 3,600 s / 30 agents = one every two minutes, and so in every hour after.
        let refetched: Vec<i64> = later.iter().map(|(_, s)| *s).collect();
        assert_eq!(refetched.len(), 60, "{fetched:?}");
        assert!(refetched.iter().all(|s| *s >= 3_600), "{refetched:?}");
        for pair in refetched.windows(2) {
            assert!(pair[1] - pair[0] >= 120, "no burst: {refetched:?}");
        }
        // One request per agent per interval at most (listings included).
        let requests = platform.calls.lock().unwrap().len();
        assert!(requests <= 3 * 30 + 3, "{requests} requests");
        assert_eq!(platform.calls("breaks"), 0);
    }

    #[tokio::test]
    async fn due_agents_are_fetched_shift_under_way_first_then_soonest_start() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        platform.set("u_a", schedule(200, 680, Some(vec![])));
        platform.set("u_b", schedule(-120, 360, Some(vec![])));
        platform.set("u_c", schedule(100, 580, Some(vec![])));
        let book = ScheduleBook::new(store, platform.clone(), settings(60));
        book.refresh_due(at(0)).await.unwrap();
        platform.calls.lock().unwrap().clear();

        // An hour on all three are due together; the paced steps take them in order.
        let fetched = step_through(&book, 60, 130).await;
        let order: Vec<&str> = fetched.iter().take(3).map(|(a, _)| a.as_str()).collect();
        assert_eq!(order, ["u_b", "u_c", "u_a"], "{fetched:?}");
    }

    #[tokio::test]
    async fn the_first_fill_fetches_the_agents_people_act_on_first_a_few_at_a_time() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        for n in 0..20 {
            platform.set(&format!("u_{n:02}"), schedule(0, 480, Some(vec![])));
        }
        let wanted = Arc::new(WantedAgents::default());
        let book =
            ScheduleBook::new(store, platform.clone(), settings(60)).with_wanted(wanted.clone());
        let first = book.refresh_step(at(0)).await.unwrap();
        assert_eq!(
            first.report.fetched, CONCURRENCY,
            "a step is as many as go out at once"
        );
        wanted.add("u_17");
        wanted.add("u_12");
        book.refresh_step(at(0)).await.unwrap();
        let calls = platform.calls.lock().unwrap().clone();
        let second: Vec<&str> = calls[CONCURRENCY + 1..]
            .iter()
            .map(String::as_str)
            .collect();
        assert!(
            second.contains(&"schedule u_12") && second.contains(&"schedule u_17"),
            "the next step fetched the wanted agents: {second:?}"
        );
        assert!(wanted.snapshot().is_empty(), "fetched, no longer wanted");
    }

    #[tokio::test]
    async fn an_agent_whose_shift_starts_beyond_max_age_is_skipped_until_max_age_before_it() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        // Breaks omitted: the break endpoint would be asked for at every fetch.
        platform.set("u_1", schedule(300, 780, None));
        platform.breaks.lock().unwrap().insert(
            "u_1".into(),
            BreakStatus {
                mandatory_break_required: false,
                break_start: Some(at(420)),
                break_end: Some(at(450)),
            },
        );
        let book = ScheduleBook::new(store, platform.clone(), settings(60))
            .with_max_age(Duration::from_secs(15 * 60));
        assert_eq!(book.refresh_due(at(0)).await.unwrap().fetched, 1);
        assert_eq!(platform.calls("breaks"), 0, "the shift is five hours away");

        // Its stored schedule stays valid: not fetched hourly, but 15 minutes before
        // the shift, with its break status then.
        for minute in [60, 120, 240, 284] {
            assert_eq!(
                book.refresh_due(at(minute)).await.unwrap().fetched,
                0,
                "{minute}"
            );
        }
        assert_eq!(book.refresh_due(at(285)).await.unwrap().fetched, 1);
        assert_eq!(platform.calls("schedule"), 2);
        assert_eq!(platform.calls("breaks"), 1);
        assert_eq!(book.plan("u_1").unwrap().shift.breaks.len(), 1);
    }

    #[tokio::test]
    async fn without_max_age_a_future_shift_is_fetched_hourly_as_before() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(SchedulePlatform::default());
        platform.set("u_1", schedule(300, 780, Some(vec![])));
        let book = ScheduleBook::new(store, platform.clone(), settings(60));
        book.refresh_due(at(0)).await.unwrap();
        assert_eq!(book.refresh_due(at(60)).await.unwrap().fetched, 1);
    }

    /// A shift of `agent` from minute `start` to `end` after `from`, fetched at minute
    /// `fetched`.
    fn shift_at(
        from: DateTime<Utc>,
        agent: &str,
        start: i64,
        end: i64,
        fetched: i64,
    ) -> StoredShift {
        let minute = |m: i64| from + TimeDelta::minutes(m);
        StoredShift {
            agent_id: agent.into(),
            shift: Shift {
                start: minute(start),
                end: minute(end),
                breaks: vec![BreakWindow {
                    start: minute(start + 180),
                    end: minute(start + 210),
                    kind: "LUNCH".into(),
                    mandatory: true,
                }],
                activities: Vec::new(),
            },
            timezone: Some("America/Chicago".into()),
            breaks_from: BreakSource::Schedule,
            fetched_at: minute(fetched),
        }
    }

    async fn save(store: &Store, shift: &StoredShift) {
        crate::store::testing::save_shifts(store, std::slice::from_ref(shift)).await;
    }

    #[tokio::test]
    async fn the_newest_shifts_are_the_agents_newest_fetch_as_stored_or_left_to_the_database() {
        let (store, _dir) = temp_store().await;
        let newest = NewestShifts::default();
        newest.fill(Vec::new());
        let shift = |start, end, fetched| shift_at(at(0), "u_1", start, end, fetched);
        // Each step stored as the book stores it; then what is held must be what the
        // database reads as the newest fetch.
        let steps = [
            ("the first fetch", shift(0, 480, 0)),
            ("a second shift of the same fetch", shift(1_440, 1_920, 0)),
            (
                "one of the same fetch overlapping it",
                shift(1_380, 1_860, 0),
            ),
            ("the same start again, longer", shift(0, 500, 0)),
            ("a newer fetch: today's shift alone", shift(0, 510, 10)),
        ];
        for (step, shift) in steps {
            save(&store, &shift).await;
            newest.stored(std::slice::from_ref(&shift));
            let stored = schedules::freshest(store.reader(), "u_1").await.unwrap();
            assert_eq!(newest.of("u_1").as_deref(), Some(&stored[..]), "{step}");
        }
        assert_eq!(newest.of("u_1").unwrap().len(), 1);
        assert_eq!(
            schedules::freshest(store.reader(), "u_1")
                .await
                .unwrap()
                .len(),
            1
        );

        // A fetch stamped before the one held (the clock was set back): the agent's
        // newest stored fetch is the database's to say, from then on.
        for fetched in [5, 20] {
            save(&store, &shift(0, 520, fetched)).await;
            newest.stored(&[shift(0, 520, fetched)]);
            assert_eq!(newest.of("u_1"), None, "fetched at {fetched}");
        }
        assert!(
            newest.of("u_2").is_none(),
            "never fetched: the database says"
        );
    }

    #[tokio::test]
    async fn a_running_book_s_load_fills_the_engine_s_newest_shifts_and_its_end_empties_them() {
        let (store, _dir) = temp_store().await;
        // Whole milliseconds, as stored.
        let now = from_ms(Utc::now().timestamp_millis());
        // An earlier leader stored a shift under way, fetched twice; the last is newest.
        for fetched in [-20, -5] {
            save(&store, &shift_at(now, "u_1", -60, 420, fetched)).await;
        }
        let engine = crate::engine::TransitionEngine::new(
            store.clone(),
            Arc::new(SchedulePlatform::default()),
            Duration::ZERO,
        )
        .with_book_max_age(Duration::from_secs(15 * 60));
        let newest = engine.newest_shifts();
        let book = Arc::new(
            ScheduleBook::new(
                store.clone(),
                Arc::new(SchedulePlatform::default()),
                settings(60),
            )
            .with_newest(newest.clone()),
        );
        assert_eq!(newest.of("u_1"), None, "nothing before the book loads");
        book.load().await.unwrap();
        let held = newest.of("u_1").expect("loaded");
        assert_eq!(
            &*held,
            &schedules::freshest(store.reader(), "u_1").await.unwrap()[..]
        );
        assert_eq!(held[0].fetched_at, now + TimeDelta::minutes(-5));

        // While the book runs here the check reads it from memory: a shift stored
        // behind its back (as only another instance could) is not read.
        save(&store, &shift_at(now, "u_1", 600, 1_080, -1)).await;
        let ready = || engine.preflight("u_1", crate::domain::AgentState::Ready);
        assert_eq!(
            ready().await.unwrap(),
            Ok(()),
            "the book's shift is under way"
        );

        // Once the run ends (here at once), the database says again: off shift now.
        let stop = CancellationToken::new();
        stop.cancel();
        book.run(stop).await;
        assert_eq!(newest.of("u_1"), None);
        assert_eq!(
            ready().await.unwrap(),
            Err(crate::domain::Violation::AgentNotScheduled)
        );
    }
}
