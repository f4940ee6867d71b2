//! One agent state change: validate → execute → record.
//!
//! [`TransitionEngine::change`] is the one way in: a [`Change`] (the request, and
//! whether it may wait for a busy agent, be settled unchanged on state sync's word, or
//! resume a change a crash cut short) goes in, one [`Changed`] comes out (made, with its
//! recorded attempt; unchanged; or waiting). The deferred changes' worker carries a
//! waiting change out through [`TransitionEngine::carry_out_deferred`].
//!
//! 1. **Validate**: the agent's schedule comes from the schedule book (the stored shifts)
//!    while its entry is fresher than `schedules.max_age`, so a change costs one platform
//!    call; otherwise from the platform through a short-TTL cache (and, for `READY`
//!    without stored break windows, break status), and `domain::policy` decides. Where
//!    the schedule came from, and its age, is recorded with the attempt.
//! 2. **Execute**: allowed changes go to the platform, whose client waits for the shared
//!    request budget and retries 429/5xx with jitter.
//! 3. **Record**: one `BEGIN IMMEDIATE` transaction writes the attempt, the audit entry
//!    and the outbox event, and for an accepted change closes the agent's open interval
//!    and opens the new one. All of it is stored, or none of it.
//!
//! Between validating and executing, an allowed change's intent is committed (see
//! [`crate::store::intents`]): a change the database cannot record is never sent. One
//! whose record the database refuses after the call (a full disk) is answered as the
//! platform answered it and recorded as soon as the database takes writes, before
//! anything else is sent for its agent; one a crash cut short is settled against what
//! the platform shows ([`TransitionEngine::settle_intents`]) instead of vanishing.
//!
//! A rejected change is never sent to the platform; it is recorded with its violation
//! and emits `transition.rejected`. Changes for one agent run one at a time, so `from`
//! is always the state the change really left.
//!
//! Idempotency: a request with a key that already succeeded or was rejected returns the
//! stored result without doing anything. A failed attempt (the platform was down) does
//! not consume its key, so the caller may retry with the same key.
//!
//! Rules and bulk items ([`Change::witnessed_by`]) skip the
//! platform for an agent state sync saw in the target state and reason at its last poll
//! with nothing commanded since: the change is settled `unchanged`, audited, and costs
//! no call. Single changes from the API and CLI always go to the platform.
//!
//! Submodules: `check` (the compliance check), `record` (committing what an attempt
//! did), `group_commit` (the intents and records of concurrent changes committed
//! together), `deferring` (changes that wait for a busy agent), `settle` (intents whose
//! record failed), `types` (requests, outcomes, errors).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tracing::instrument;

use super::clock::Clock;
use super::keyed_lock::{KeyGuard, KeyedLock};
use super::lookups::Lookups;
use super::sync::SyncStatus;
use crate::store::is_unavailable;
use crate::store::keys::{self, KeyUse};
use deferral::{Defer, Deferral};

mod check;
pub mod deferral;
mod deferring;
mod group_commit;
mod record;
#[cfg(test)]
mod refused_schedules;
mod settle;
mod types;

use super::imported_schedules::{self, ImportError, ImportFile, ImportJob, Imports, InForce};
use super::schedules::{NewestShifts, WantedAgents};
use crate::cxone::budget::current_context;
use crate::cxone::{ContactCenter, CxoneError, Lane, StateChange};
use crate::domain::policy::WithoutSchedule;
use crate::domain::{AgentState, BreakStatus, Origin, Schedule, ScheduleStatus, Violation, policy};
use crate::store::attempts::{self, AttemptRow};
use crate::store::history;
use crate::store::intents;
use crate::store::schedules::{self as stored_schedules, BreakSource, StoredShift};
use crate::store::{Store, from_ms};
use crate::telemetry::names::{TRANSITION_LATENCY_SECONDS, TRANSITIONS_TOTAL};
use deferring::Busy;
// The deferred worker's tests count the reads at this path.
#[cfg(test)]
pub(crate) use deferring::CONFIRM_READS;
use record::Record;
pub use types::*;

/// How far the platform's clock may lag ours when a resumed change ([`Change::resuming`]) decides
/// whether a change it sees was made by the interrupted attempt.
pub const ADOPT_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Validates, executes and records agent state changes. Cheap to share behind an `Arc`.
pub struct TransitionEngine {
    store: Store,
    /// The queue the intents and records of changes in flight are committed from,
    /// several to a transaction (see `group_commit`).
    writes: group_commit::GroupCommit,
    platform: Arc<dyn ContactCenter>,
    /// Schedule and break-status lookups, shared with the schedule book.
    lookups: Arc<Lookups>,
    agents: Arc<KeyedLock>,
    keys: Arc<KeyedLock>,
    /// Changes the platform answered whose record the database refused, by agent,
    /// each holding its agent's lock until recorded (see `settle`).
    unrecorded: std::sync::Mutex<std::collections::HashMap<String, settle::Unrecorded>>,
    /// Counts the changes kept in `unrecorded`, so the settling loop and changes waiting
    /// for an agent's lock wake when one is.
    unrecorded_kept: tokio::sync::watch::Sender<u64>,
    /// Counts the changes this engine stored to wait for a busy agent, so the deferred
    /// worker looks at the waiting ones only when some may wait.
    deferrals_stored: tokio::sync::watch::Sender<u64>,
    /// How long a stored schedule decides compliance; zero: always ask the platform.
    book_max_age: Duration,
    /// Where "now" is read for compliance checks and the stamps of attempts.
    clock: Clock,
    /// Names this engine's intents (see [`crate::store::intents`]).
    owner: String,
    /// Whether this engine is its database's sole daemon, and the agents an earlier
    /// one left changes of unrecorded (see `settle`).
    alone: settle::Alone,
    /// `[compliance] without_schedule`: what a change does when the platform refuses
    /// schedule lookups.
    without_schedule: WithoutSchedule,
    /// The agents with imported schedules, and the way new imports come in.
    imports: Option<Imports>,
    /// Agents a person acted on that the book could not decide for: the book fetches
    /// them first.
    wanted: Arc<WantedAgents>,
    /// The book's newest fetches, while a book runs here (the database otherwise).
    newest: Arc<NewestShifts>,
    /// Whether a schedule of this tenant has come without its breaks, so break status
    /// must be asked for too.
    schedules_omit_breaks: AtomicBool,
}

impl TransitionEngine {
    /// `schedule_ttl` is how long a schedule or break status is reused; zero disables
    /// the cache.
    pub fn new(store: Store, platform: Arc<dyn ContactCenter>, schedule_ttl: Duration) -> Self {
        TransitionEngine {
            lookups: Arc::new(Lookups::new(platform.clone(), schedule_ttl)),
            writes: group_commit::GroupCommit::new(store.clone()),
            store,
            platform,
            agents: Arc::default(),
            keys: Arc::default(),
            unrecorded: std::sync::Mutex::default(),
            unrecorded_kept: tokio::sync::watch::Sender::new(0),
            deferrals_stored: tokio::sync::watch::Sender::new(0),
            book_max_age: Duration::ZERO,
            clock: Clock::Wall,
            owner: uuid::Uuid::new_v4().to_string(),
            alone: settle::Alone::default(),
            without_schedule: WithoutSchedule::Refuse,
            imports: None,
            wanted: Arc::default(),
            newest: Arc::default(),
            schedules_omit_breaks: AtomicBool::new(false),
        }
    }

    /// What a change does when the platform refuses this API user schedule lookups
    /// (`[compliance] without_schedule`; `refuse` by default).
    pub fn with_without_schedule(mut self, policy: WithoutSchedule) -> Self {
        self.without_schedule = policy;
        self
    }

    /// The imported schedules the platform client answers from (see
    /// [`crate::engine::imported_schedules`]): the schedule book never decides for an
    /// agent they cover, and [`TransitionEngine::import_schedules`] takes new imports.
    pub fn with_imports(mut self, imports: Imports) -> Self {
        self.imports = Some(imports);
        self
    }

    /// Checks a schedules CSV (see [`crate::engine::imported_schedules`]) and starts
    /// storing it as a job, returned once recorded; once the job puts it in force, the
    /// next change of an imported agent is checked against it, not against a schedule
    /// cached or booked before.
    pub async fn import_schedules(
        &self,
        csv: impl Into<ImportFile>,
        actor: &str,
    ) -> Result<ImportJob, ImportError> {
        let imports = self.imports.as_ref().ok_or(ImportError::NotRead)?;
        let file = imported_schedules::check(csv).await?;
        let lookups = Arc::clone(&self.lookups);
        let forget: InForce = Box::new(move |agents| {
            Box::pin(async move {
                for agent in &agents {
                    lookups.forget(agent).await;
                }
            })
        });
        imports.start(file, actor, self.clock, forget).await
    }

    /// Reads "now" from `clock` (the wall clock by default). The rule scheduler, the
    /// schedule book, the automations, the compliance sweep and state sync's stamps read
    /// the engine's clock too, so they agree with its verdicts.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Now, by the engine's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Decides compliance from the stored schedule of an agent while it is younger than
    /// `max_age` (`schedules.max_age`), asking the platform only for older or missing
    /// entries and for break status the stored shift lacks.
    pub fn with_book_max_age(mut self, max_age: Duration) -> Self {
        self.book_max_age = max_age;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The agents people acted on that the schedule book lacked, for the book to fetch
    /// first ([`super::schedules::ScheduleBook::with_wanted`]).
    pub fn wanted_agents(&self) -> Arc<WantedAgents> {
        self.wanted.clone()
    }

    /// Where a running schedule book keeps its newest fetches for this engine's checks
    /// ([`super::schedules::ScheduleBook::with_newest`]).
    pub fn newest_shifts(&self) -> Arc<NewestShifts> {
        self.newest.clone()
    }

    /// Notes that a person acts on `agent_id`, whose schedule the book lacks or holds
    /// too old (see `book_schedule`).
    fn wanted(&self, agent_id: &str) {
        if current_context().lane == Lane::Interactive {
            self.wanted.add(agent_id);
        }
    }

    pub fn platform(&self) -> &Arc<dyn ContactCenter> {
        &self.platform
    }

    /// The schedule and break-status lookups the compliance check makes, for the
    /// schedule book to share ([`super::schedules::ScheduleBook::with_lookups`]).
    pub fn lookups(&self) -> Arc<Lookups> {
        Arc::clone(&self.lookups)
    }

    /// Changes when this engine stores a change to wait for a busy agent (see
    /// [`super::deferred::DeferredChanges::run`]).
    pub fn deferrals_stored(&self) -> tokio::sync::watch::Receiver<u64> {
        self.deferrals_stored.subscribe()
    }

    /// Tells [`TransitionEngine::deferrals_stored`]'s watchers that a change was stored
    /// to wait (once its transaction committed).
    pub(crate) fn note_deferral_stored(&self) {
        self.deferrals_stored.send_modify(|stored| *stored += 1);
    }

    /// The per-agent locks changes hold from validation to the recorded result. State
    /// sync checks them so it never records, as the agent's own doing, a change the
    /// engine made on the platform but has not recorded yet.
    pub fn agents_in_flight(&self) -> Arc<KeyedLock> {
        Arc::clone(&self.agents)
    }

    /// Carries out one change and says how it ended: the one way into the engine.
    ///
    /// Compliance refusals and platform failures are results (recorded attempts); only a
    /// request that is not attempted at all, or a database failure, is an `Err`. What
    /// [`Change`] asks besides the request:
    /// - `defer`: the change waits for a busy agent instead of being refused (see
    ///   [`super::deferred`]): the agent recorded on a contact or in after-contact work,
    ///   or the platform's conflict, stores it as the agent's deferred change; a request
    ///   whose idempotency key names a change that waits is answered with it;
    /// - `witness` (rules and bulk items): when state sync (if it runs and is current)
    ///   saw the agent in the requested state and reason at its last poll, after the
    ///   agent entered it, and no attempt for the agent has failed since (a failed call
    ///   may still have reached the platform), the change is settled
    ///   [`Changed::Unchanged`] without a platform call, audited as
    ///   `transition.unchanged`;
    /// - `resuming_since`: a change a crash may have cut short after its platform call
    ///   and before its record; when the platform already shows the agent in the
    ///   requested state and reason, changed no earlier than that (less
    ///   [`ADOPT_CLOCK_SKEW`]), the change is recorded as succeeded without calling the
    ///   platform again, so the agent is not changed twice. It costs one call more.
    #[instrument(skip_all, fields(agent = %change.request.agent_id, target = %change.request.target, origin = %change.request.origin))]
    pub async fn change(&self, change: Change) -> Result<Changed, EngineError> {
        let Change {
            request,
            defer,
            witness,
            resuming_since,
        } = change;
        let locks = match self.lock(&request).await? {
            Locked::Replayed(earlier) => return Ok(Changed::Made(earlier)),
            Locked::Held(locks) => locks,
        };
        if resuming_since.is_none()
            && let Some(defer) = &defer
            && let Some(deferral) = self.defer_if_busy(&request, defer, &locks).await?
        {
            return Ok(Changed::Deferred(deferral));
        }
        if let Some(last_poll) = witness.and_then(|w| w.last_poll(Utc::now(), &request.agent_id))
            && let Some(unchanged) = self
                .seen_unchanged(&request, &reason_of(&request), last_poll)
                .await?
        {
            self.record_unchanged(&request, &unchanged).await?;
            metrics::counter!(TRANSITIONS_TOTAL, "outcome" => "unchanged").increment(1);
            return Ok(Changed::Unchanged(unchanged));
        }
        let busy = Busy::of(defer.as_ref());
        Ok(
            match self
                .change_with(&request, resuming_since, busy, locks)
                .await?
            {
                Attempted::Made(transition) => Changed::Made(transition),
                Attempted::Deferred(deferral) => Changed::Deferred(deferral),
                Attempted::StillBusy => unreachable!("only a deferred change waits on"),
            },
        )
    }

    /// Takes the request's idempotency key and then its agent, or returns the stored
    /// result of an earlier attempt with the same key. Refuses the change while the
    /// agent's last change waits for its record ([`EngineError::Unrecorded`]).
    async fn lock(&self, request: &TransitionRequest) -> Result<Locked, EngineError> {
        if !request.target.is_settable() {
            return Err(EngineError::NotSettable(request.target));
        }
        let key = match &request.idempotency_key {
            Some(key) => Some(self.keys.lock(key).await),
            None => None,
        };
        // A change an earlier daemon made and left unrecorded goes on record first, so
        // this one leaves the state it entered.
        self.settle_left_by_ended_of(&request.agent_id, request.idempotency_key.as_deref())
            .await?;
        let agent = self.lock_agent(&request.agent_id).await?;
        // After the agent's lock: a change with this key may have been recorded (late)
        // while this one waited for it. Under both locks nothing else writes or removes
        // a row with this key (a deferred change is carried out, and an intent settled,
        // under its agent's lock), so what the key names now holds for the whole change.
        let key_use = match &request.idempotency_key {
            Some(key) => keys::uses(self.store.reader(), key).await?,
            None => KeyUse::default(),
        };
        if key_use.attempt
            && let Some(key) = &request.idempotency_key
            && let Some(earlier) = self.replay(request, key).await?
        {
            return Ok(Locked::Replayed(earlier));
        }
        Ok(Locked::Held(Locks {
            _key: key,
            agent,
            key_use,
        }))
    }

    /// The agent's lock, once its last change is recorded: a record kept in memory (see
    /// `settle`) holds the lock, so it is written first, and while the database refuses
    /// it the change is refused rather than left waiting.
    async fn lock_agent(&self, agent: &str) -> Result<KeyGuard, EngineError> {
        let mut kept = self.unrecorded_kept.subscribe();
        loop {
            self.record_unrecorded_of(agent).await?;
            tokio::select! {
                guard = self.agents.lock(agent) => return Ok(guard),
                // A change in flight had its record kept: perhaps this agent's.
                _ = kept.changed() => {}
            }
        }
    }

    /// The change itself, under the request's `locks`; `busy` says what the platform's
    /// conflict (a busy agent) does to it.
    ///
    /// Once the platform has answered, the change is the platform's doing whether or not
    /// the database takes its record: a record the database refuses (a full disk) is
    /// kept, with `locks`, until it can be written (see `settle`), and the change is
    /// answered as the platform answered it.
    async fn change_with(
        &self,
        request: &TransitionRequest,
        resuming_since: Option<DateTime<Utc>>,
        busy: Busy<'_>,
        locks: Locks,
    ) -> Result<Attempted, EngineError> {
        let started = Instant::now();
        let requested_at = self.now();
        let reason = reason_of(request);
        // A change with this key that was sent before and never recorded (its record
        // failed, or a crash cut it short) is finished under the same attempt, not sent
        // again blindly.
        let left_over = match &request.idempotency_key {
            Some(key) if locks.key_use.intent => {
                intents::by_idempotency_key(self.store.reader(), key).await?
            }
            _ => None,
        };
        let resuming_since = match &left_over {
            Some(intent) => Some(from_ms(intent.requested_at)),
            None => resuming_since,
        };
        let attempt_id = left_over.map_or_else(
            || uuid::Uuid::now_v7().to_string(),
            |intent| intent.attempt_id,
        );

        let already_made = match resuming_since {
            Some(since) => self.already_made(request, &reason, since).await,
            None => None,
        };
        // Whether the change went to the platform (its intent is stored).
        let mut called = false;
        // The instant the platform gives the change, when it was made.
        let mut source = None;
        let answer = match already_made {
            Some(at) => Answer::Made(Some(at)),
            None => match self.check(&request.agent_id, request.target).await {
                Err(error) => Answer::Failed(error),
                Ok((Err(violation), from)) => {
                    source = from;
                    Answer::Refused(violation)
                }
                Ok((Ok(()), from)) => {
                    source = from;
                    // Nothing is sent that could not be recorded.
                    self.write_intent(request, &reason, &attempt_id, requested_at)
                        .await?;
                    called = true;
                    let change = StateChange::new(&request.agent_id, request.target, &reason);
                    match self.platform.set_agent_state(change).await {
                        Ok(snapshot) => Answer::Made(snapshot.changed_at),
                        Err(error) => Answer::Failed(error.into()),
                    }
                }
            },
        };
        // A deferred change carried out is confirmed by reading the state back.
        let answer = match (answer, busy) {
            (Answer::Made(at), Busy::CarryOut(_)) if called => match self.confirm(request).await {
                Ok(shown) => Answer::Made(shown.or(at)),
                Err(error) => Answer::Failed(error),
            },
            (answer, _) => answer,
        };
        if let Answer::Failed(CheckError::Platform(CxoneError::Conflict { .. })) = &answer {
            match busy {
                Busy::Defer(defer) => {
                    let deferral = self
                        .record_deferral(request, defer, Some(&attempt_id))
                        .await?;
                    return Ok(Attempted::Deferred(deferral));
                }
                Busy::CarryOut(row) => {
                    self.note_still_busy(row, &attempt_id).await?;
                    return Ok(Attempted::StillBusy);
                }
                Busy::Reject => {}
            }
        }
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = Record {
            attempt_id,
            request: request.clone(),
            reason,
            latency_ms,
            requested_at,
            completed_at: self.now(),
            source,
            late: false,
            deferred: match busy {
                Busy::CarryOut(row) => Some(row.clone()),
                _ => None,
            },
        };
        // Whether the platform answered this change (or showed it made): from here on
        // its record must not be lost, whatever the database says.
        let answered = called || already_made.is_some();
        let (outcome, changed_at) = answer.recorded_as();
        let transition = match self.record(&record, outcome.clone(), changed_at).await {
            Ok(transition) => transition,
            Err(error) if answered && is_unavailable(&error) => {
                let transition = record.transition(None, outcome.clone());
                self.keep_unrecorded(record, outcome, changed_at, locks, &error);
                transition
            }
            Err(error) => return Err(error.into()),
        };
        metrics::counter!(TRANSITIONS_TOTAL, "outcome" => transition.outcome.name()).increment(1);
        metrics::histogram!(TRANSITION_LATENCY_SECONDS)
            .record(Duration::from_millis(latency_ms).as_secs_f64());
        Ok(Attempted::Made(transition))
    }

    /// The agent's recorded state when it makes `request` needless: the open interval
    /// is the requested state and reason, state sync polled since it began (by more than
    /// the platform's clock may lag ours, so the poll saw it), and no attempt for the
    /// agent failed since it began. Runs under the agent's lock, so no change of the
    /// agent is in flight.
    async fn seen_unchanged(
        &self,
        request: &TransitionRequest,
        reason: &str,
        last_poll: DateTime<Utc>,
    ) -> Result<Option<Unchanged>, sqlx::Error> {
        let mut conn = self.store.reader().acquire().await?;
        let Some(open) = history::open_interval(&mut conn, &request.agent_id).await? else {
            return Ok(None);
        };
        drop(conn);
        if open.state() != Some(request.target)
            || open.reason.as_deref() != Some(reason)
            || last_poll <= open.started() + ADOPT_CLOCK_SKEW
        {
            return Ok(None);
        }
        let since = attempts::for_agent(
            self.store.reader(),
            &request.agent_id,
            open.started_at,
            i64::MAX,
        )
        .await?;
        if since.iter().any(|a| a.outcome == "failed") {
            return Ok(None);
        }
        Ok(Some(Unchanged {
            agent_id: request.agent_id.clone(),
            state: request.target,
            reason: reason.to_owned(),
            since: open.started(),
            polled_at: last_poll,
        }))
    }

    /// When the platform shows `request` already made (its state and reason, changed no
    /// earlier than `since` less [`ADOPT_CLOCK_SKEW`]), the instant it was made. `None`
    /// when it shows anything else or cannot say: the change is then made as usual.
    async fn already_made(
        &self,
        request: &TransitionRequest,
        reason: &str,
        since: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let snapshot = self.platform.agent_state(&request.agent_id).await.ok()?;
        let made = snapshot.state == request.target && snapshot.reason.as_deref() == Some(reason);
        let at = snapshot
            .changed_at
            .filter(|at| made && *at >= since - ADOPT_CLOCK_SKEW)?;
        tracing::info!("the platform already shows the change; recording it without a call");
        Some(at)
    }

    /// The stored result of an earlier attempt with this key, if there is one.
    async fn replay(
        &self,
        request: &TransitionRequest,
        key: &str,
    ) -> Result<Option<Transition>, EngineError> {
        let Some(row) = attempts::by_idempotency_key(self.store.reader(), key).await? else {
            return Ok(None);
        };
        let reason_differs = request.reason.as_ref().is_some_and(|r| *r != row.reason);
        if row.agent_id != request.agent_id
            || row.target_state != request.target.as_str()
            || reason_differs
        {
            return Err(EngineError::IdempotencyKeyReused {
                key: key.to_owned(),
                agent_id: row.agent_id,
                target: row.target_state,
            });
        }
        Ok(Some(Transition::from_row(row, true)))
    }
}

/// The request's locks, held until dropped, or the earlier attempt its key names.
enum Locked {
    Replayed(Transition),
    Held(Locks),
}

/// A change's locks: its idempotency key's, if it has one, and its agent's; and what
/// the key named when they were taken, which holds while they are held.
pub(super) struct Locks {
    _key: Option<KeyGuard>,
    agent: KeyGuard,
    key_use: KeyUse,
}

/// The reason code a request sends: its own, or its target state's default.
fn reason_of(request: &TransitionRequest) -> String {
    request
        .reason
        .clone()
        .unwrap_or_else(|| request.target.default_reason().to_owned())
}

/// What a change came to before its record.
enum Answer {
    /// Made, at the platform's instant for it when it gives one.
    Made(Option<DateTime<Utc>>),
    /// Refused by compliance; nothing was sent.
    Refused(Violation),
    /// Not carried out: the check or the platform failed, or refused the change.
    Failed(CheckError),
}

impl Answer {
    /// The attempt's outcome as recorded, and the instant the change was made.
    fn recorded_as(self) -> (Outcome, Option<DateTime<Utc>>) {
        let violation = |violation| (Outcome::Rejected { violation }, None);
        match self {
            Answer::Made(at) => (Outcome::Succeeded, at),
            Answer::Refused(v) => violation(v),
            Answer::Failed(CheckError::Platform(e)) if e.is_agent_logged_out() => {
                violation(Violation::AgentLoggedOut)
            }
            Answer::Failed(CheckError::Platform(CxoneError::Conflict { .. })) => {
                violation(Violation::StateConflict)
            }
            Answer::Failed(error) => {
                let outcome = Outcome::Failed {
                    kind: error.kind(),
                    error: error.to_string(),
                };
                (outcome, None)
            }
        }
    }
}

/// How [`TransitionEngine::change_with`] ended.
enum Attempted {
    Made(Transition),
    Deferred(Deferral),
    StillBusy,
}

#[cfg(test)]
mod tests {
    use chrono::Duration as ChronoDuration;

    use super::*;
    use crate::domain::{BreakWindow, ScheduleStatus};
    use crate::store::audit;
    use crate::store::history::NewInterval;
    use crate::store::on;
    use crate::store::testing::temp_store;

    use crate::cxone::fake::FakePlatform;
    use crate::cxone::in_lane;

    fn on_shift(breaks: Option<Vec<BreakWindow>>) -> Schedule {
        let now = Utc::now();
        Schedule {
            status: ScheduleStatus::Active,
            timezone: None,
            shift_start: Some(now - ChronoDuration::hours(2)),
            shift_end: Some(now + ChronoDuration::hours(6)),
            breaks,
            activities: Vec::new(),
        }
    }

    fn off_shift() -> Schedule {
        Schedule {
            status: ScheduleStatus::Inactive,
            ..on_shift(Some(vec![]))
        }
    }

    fn lunch_now() -> BreakWindow {
        let now = Utc::now();
        BreakWindow {
            start: now - ChronoDuration::minutes(5),
            end: now + ChronoDuration::minutes(55),
            kind: "LUNCH".into(),
            mandatory: true,
        }
    }

    pub(super) fn request(agent_id: &str, target: AgentState) -> TransitionRequest {
        TransitionRequest {
            agent_id: agent_id.into(),
            target,
            reason: None,
            origin: Origin::Api,
            actor: "test".into(),
            idempotency_key: None,
        }
    }

    async fn engine(platform: Arc<FakePlatform>) -> (TransitionEngine, tempfile::TempDir) {
        let (store, dir) = temp_store().await;
        let engine = TransitionEngine::new(store, platform, Duration::from_secs(30));
        (engine, dir)
    }

    async fn count(store: &Store, sql: &'static str) -> i64 {
        on!(store.reader(), |c| sqlx::query_scalar(sql)
            .fetch_one(c)
            .await)
        .unwrap()
    }

    const MAX_AGE: Duration = Duration::from_secs(15 * 60);

    /// Stores a shift from two hours ago to six hours ahead, its breaks as the schedule
    /// lists them (none), fetched `fetched_ago` ago.
    pub(super) async fn book(store: &Store, agent_id: &str, fetched_ago: ChronoDuration) {
        let now = Utc::now();
        let shift = stored_schedules::StoredShift {
            agent_id: agent_id.into(),
            shift: crate::domain::adherence::Shift {
                start: now - ChronoDuration::hours(2),
                end: now + ChronoDuration::hours(6),
                breaks: vec![],
                activities: vec![],
            },
            timezone: None,
            breaks_from: BreakSource::Schedule,
            fetched_at: now - fetched_ago,
        };
        crate::store::testing::save_shifts(store, &[shift]).await;
    }

    async fn book_engine(platform: Arc<FakePlatform>) -> (TransitionEngine, tempfile::TempDir) {
        let (store, dir) = temp_store().await;
        let engine =
            TransitionEngine::new(store, platform, Duration::ZERO).with_book_max_age(MAX_AGE);
        (engine, dir)
    }

    async fn schedule_source(store: &Store, attempt_id: &str) -> (String, i64) {
        on!(store.reader(), |c| sqlx::query_as(
            "SELECT schedule_source, schedule_age_ms FROM transition_attempts WHERE id = $1",
        )
        .bind(attempt_id)
        .fetch_one(c)
        .await)
        .unwrap()
    }

    #[tokio::test]
    async fn a_warm_book_change_costs_exactly_one_platform_call() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(None));
        let (engine, _dir) = book_engine(platform.clone()).await;
        book(engine.store(), "u_001", ChronoDuration::minutes(5)).await;

        let made = engine
            .change(Change::from(request("u_001", AgentState::Ready)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(made.outcome, Outcome::Succeeded);
        assert_eq!(
            platform.calls.lock().unwrap().clone(),
            ["set u_001 READY WORKING"]
        );
        let (source, age_ms) = schedule_source(engine.store(), &made.attempt_id).await;
        assert_eq!(source, "book");
        assert!((299_000..=301_000).contains(&age_ms), "age {age_ms} ms");
        let audited: String = on!(engine.store().reader(), |c| sqlx::query_scalar(
            "SELECT json_extract(detail, '$.scheduleSource') FROM audit_log ORDER BY seq DESC",
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(audited, "book");
    }

    #[tokio::test]
    async fn the_book_decides_only_for_agents_fetched_within_max_age() {
        let (engine, _dir) = book_engine(Arc::new(FakePlatform::default())).await;
        book(engine.store(), "u_001", ChronoDuration::minutes(5)).await;
        book(engine.store(), "u_002", ChronoDuration::minutes(16)).await;
        let agents = ["u_001", "u_002", "u_003"].map(String::from);
        assert_eq!(engine.decided_by_book(&agents).await, 1);
    }

    #[tokio::test]
    async fn a_stale_or_absent_book_entry_costs_the_lookups() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(None));
        platform.add_agent("u_002", on_shift(None));
        let (engine, _dir) = book_engine(platform.clone()).await;
        book(engine.store(), "u_001", ChronoDuration::minutes(16)).await;

        for agent in ["u_001", "u_002"] {
            let made = engine
                .change(Change::from(request(agent, AgentState::Ready)))
                .await
                .map(Changed::made)
                .unwrap();
            assert_eq!(made.outcome, Outcome::Succeeded);
            assert_eq!(platform.calls(&format!("schedule {agent}")), 1);
            assert_eq!(platform.calls(&format!("breaks {agent}")), 1);
            let (source, age_ms) = schedule_source(engine.store(), &made.attempt_id).await;
            assert_eq!((source.as_str(), age_ms), ("platform", 0));
        }
    }

    #[tokio::test]
    async fn a_person_waits_for_the_schedule_and_break_status_lookups_together() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(None));
        platform.add_agent("u_002", on_shift(None));
        let (engine, _dir) = book_engine(platform.clone()).await;
        let ready = |agent| {
            let change = engine.change(Change::from(request(agent, AgentState::Ready)));
            in_lane(Lane::Interactive, None, change)
        };
        // The first lookups learn that this tenant's schedules omit the breaks.
        ready("u_002").await.unwrap();
        platform
            .schedule_awaits_breaks
            .store(true, Ordering::Relaxed);
        let made = tokio::time::timeout(Duration::from_secs(10), ready("u_001"))
            .await
            .expect("the schedule lookup waited for a break lookup that never came")
            .unwrap()
            .made();
        assert_eq!(made.outcome, Outcome::Succeeded);
        assert_eq!(platform.calls("breaks u_001"), 1, "asked once, not again");
    }

    #[tokio::test]
    async fn where_schedules_list_the_breaks_a_person_s_change_asks_no_break_status() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(Some(vec![])));
        platform.add_agent("u_002", on_shift(Some(vec![])));
        let (engine, _dir) = book_engine(platform.clone()).await;
        for agent in ["u_001", "u_002"] {
            let change = engine.change(Change::from(request(agent, AgentState::Ready)));
            let made = in_lane(Lane::Interactive, None, change)
                .await
                .unwrap()
                .made();
            assert_eq!(made.outcome, Outcome::Succeeded);
        }
        assert_eq!(platform.calls("breaks"), 0);
    }

    #[tokio::test]
    async fn automation_asks_for_break_status_only_when_the_schedule_leaves_it_open() {
        let platform = Arc::new(FakePlatform::default());
        let now = Utc::now();
        let coffee = BreakWindow {
            start: now + ChronoDuration::hours(1),
            end: now + ChronoDuration::minutes(75),
            kind: "BREAK".into(),
            mandatory: true,
        };
        platform.add_agent("u_001", on_shift(Some(vec![coffee])));
        let (engine, _dir) = book_engine(platform.clone()).await;
        let made = engine
            .change(Change::from(request("u_001", AgentState::Ready)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(made.outcome, Outcome::Succeeded);
        assert_eq!(
            platform.calls("breaks u_001"),
            0,
            "the schedule listed them"
        );
        assert!(
            engine.wanted_agents().snapshot().is_empty(),
            "nobody waits on an automation's change"
        );
    }

    #[tokio::test]
    async fn an_agent_a_person_acts_on_that_the_book_lacks_is_wanted_by_the_book() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(None));
        platform.add_agent("u_002", on_shift(None));
        let (engine, _dir) = book_engine(platform.clone()).await;
        book(engine.store(), "u_002", ChronoDuration::minutes(5)).await;
        for agent in ["u_001", "u_002"] {
            let change = engine.change(Change::from(request(agent, AgentState::NotReady)));
            in_lane(Lane::Interactive, None, change).await.unwrap();
        }
        let wanted = engine.wanted_agents().snapshot();
        assert_eq!(wanted, ["u_001".to_owned()].into(), "u_002 was in the book");
    }

    #[tokio::test]
    async fn an_agent_the_platform_turned_inactive_is_refused_within_max_age_of_the_book_fetch() {
        let platform = Arc::new(FakePlatform::default());
        // The book saw a shift for both; since then both were given the day off.
        platform.add_agent("u_001", off_shift());
        platform.add_agent("u_002", off_shift());
        let (engine, _dir) = book_engine(platform.clone()).await;
        // u_001's entry is just inside max_age, u_002's just past it.
        book(
            engine.store(),
            "u_001",
            ChronoDuration::seconds(15 * 60 - 5),
        )
        .await;
        book(engine.store(), "u_002", ChronoDuration::seconds(15 * 60)).await;

        // Inside max_age the book is trusted: the window docs/operations.md states.
        let trusted = engine
            .change(Change::from(request("u_001", AgentState::NotReady)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(trusted.outcome, Outcome::Succeeded);
        assert_eq!(platform.calls("schedule u_001"), 0);

        // From max_age on the platform is asked, and its INACTIVE refuses the change.
        let refused = engine
            .change(Change::from(request("u_002", AgentState::Ready)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(
            refused.outcome,
            Outcome::Rejected {
                violation: Violation::AgentNotScheduled
            }
        );
        assert_eq!(platform.calls("schedule u_002"), 1);
        assert_eq!(platform.calls("set u_002"), 0);
        let (source, _) = schedule_source(engine.store(), &refused.attempt_id).await;
        assert_eq!(source, "platform");
    }

    /// Records `agent` in `state`/`reason` since `ago`, as a rule's change would have.
    async fn recorded(store: &Store, agent: &str, state: AgentState, reason: &str, ago: i64) {
        let mut tx = store.begin_write().await.unwrap();
        history::switch_state(
            &mut tx,
            &NewInterval {
                agent_id: agent,
                state,
                reason: Some(reason),
                origin: Origin::Rule,
                at: Utc::now() - ChronoDuration::seconds(ago),
                attempt_id: None,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// A state sync whose last poll was `ago` seconds back, polling every 10 s.
    fn polled(ago: i64, error: Option<&str>) -> SyncWitness {
        let at = Utc::now() - ChronoDuration::seconds(ago);
        let error = error.map(str::to_owned);
        SyncWitness::from_fn(move || (Some(at), error.clone()), Duration::from_secs(10))
    }

    fn meeting(agent: &str) -> TransitionRequest {
        TransitionRequest {
            reason: Some("MEETING".into()),
            origin: Origin::Bulk,
            idempotency_key: Some(format!("bulk:job_1:{agent}")),
            ..request(agent, AgentState::NotReady)
        }
    }

    #[tokio::test]
    async fn an_agent_state_sync_saw_in_the_target_state_is_settled_unchanged_without_a_call() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(Some(vec![])));
        let (engine, _dir) = engine(platform.clone()).await;
        let store = engine.store();
        recorded(store, "u_001", AgentState::NotReady, "MEETING", 60).await;

        let settled = engine
            .change(Change::from(meeting("u_001")).witnessed_by(Some(&polled(10, None)).cloned()))
            .await
            .unwrap();
        let Changed::Unchanged(unchanged) = settled else {
            panic!("{settled:?}")
        };
        assert_eq!(
            (unchanged.state, unchanged.reason.as_str()),
            (AgentState::NotReady, "MEETING")
        );
        assert!(
            platform.calls.lock().unwrap().is_empty(),
            "no platform call"
        );
        assert_eq!(
            count(store, "SELECT COUNT(*) FROM transition_attempts").await,
            0
        );
        let (actor, agent, detail): (String, String, String) = on!(store.reader(), |c| {
            sqlx::query_as(
            "SELECT actor, agent_id, detail FROM audit_log WHERE action = 'transition.unchanged'",
        )
        .fetch_one(c)
        .await
        })
        .unwrap();
        assert_eq!((actor.as_str(), agent.as_str()), ("test", "u_001"));
        let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(detail["reasonCode"], "MEETING");
        assert_eq!(detail["origin"], "bulk");
        assert_eq!(detail["idempotencyKey"], "bulk:job_1:u_001");
        assert!(audit::verify(store.reader()).await.unwrap().is_intact());

        // A single change of the same agent is always sent.
        let single = TransitionRequest {
            reason: Some("MEETING".into()),
            ..request("u_001", AgentState::NotReady)
        };
        let made = engine
            .change(Change::from(single))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(made.outcome, Outcome::Succeeded);
        assert_eq!(platform.calls("set u_001 NOT_READY MEETING"), 1);
    }

    #[tokio::test]
    async fn a_change_is_made_unless_state_sync_vouches_for_the_target_state_since_nothing_was_commanded()
     {
        struct Case {
            name: &'static str,
            recorded_reason: &'static str,
            recorded_ago: i64,
            witness: Option<SyncWitness>,
            failed_since: bool,
        }
        let case = |name| Case {
            name,
            recorded_reason: "MEETING",
            recorded_ago: 60,
            witness: Some(polled(10, None)),
            failed_since: false,
        };
        let cases = [
            Case {
                recorded_reason: "LUNCH",
                ..case("another reason")
            },
            Case {
                recorded_ago: 12,
                ..case("the last poll came before the state was entered")
            },
            Case {
                witness: Some(polled(300, None)),
                ..case("state sync is behind")
            },
            Case {
                witness: Some(polled(10, Some("503"))),
                ..case("state sync is failing")
            },
            Case {
                witness: None,
                ..case("state sync does not run")
            },
            Case {
                failed_since: true,
                ..case("a change failed since")
            },
        ];
        for case in cases {
            let platform = Arc::new(FakePlatform::default());
            platform.add_agent("u_001", on_shift(Some(vec![])));
            let (engine, _dir) = engine(platform.clone()).await;
            recorded(
                engine.store(),
                "u_001",
                AgentState::NotReady,
                case.recorded_reason,
                case.recorded_ago,
            )
            .await;
            if case.failed_since {
                *platform.fail_set_with.lock().unwrap() = Some(CxoneError::Server {
                    status: 503,
                    message: String::new(),
                    retry_after: None,
                });
                engine
                    .change(Change::from(request("u_001", AgentState::Ready)))
                    .await
                    .unwrap();
                *platform.fail_set_with.lock().unwrap() = None;
            }
            let settled = engine
                .change(Change::from(meeting("u_001")).witnessed_by(case.witness.as_ref().cloned()))
                .await
                .unwrap();
            assert!(
                matches!(&settled, Changed::Made(t) if t.outcome == Outcome::Succeeded),
                "{}: {settled:?}",
                case.name
            );
            assert_eq!(
                platform.calls("set u_001 NOT_READY MEETING"),
                1,
                "{}",
                case.name
            );
        }
    }

    #[tokio::test]
    async fn allowed_change_is_sent_and_recorded_with_interval_audit_and_event() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(Some(vec![])));
        let (engine, _dir) = engine(platform.clone()).await;

        let first = engine
            .change(Change::from(request("u_001", AgentState::NotReady)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(first.outcome, Outcome::Succeeded);
        assert_eq!(first.reason, "BREAK");
        assert_eq!(first.from, None);
        let second = engine
            .change(Change::from(request("u_001", AgentState::Ready)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(second.from, Some(AgentState::NotReady));

        assert_eq!(platform.calls("set u_001 NOT_READY BREAK"), 1);
        let store = engine.store();
        assert_eq!(
            count(
                store,
                "SELECT COUNT(*) FROM state_intervals WHERE ended_at IS NULL"
            )
            .await,
            1
        );
        assert_eq!(
            count(store, "SELECT COUNT(*) FROM state_intervals").await,
            2
        );
        assert_eq!(
            count(
                store,
                "SELECT COUNT(*) FROM transition_attempts WHERE outcome = 'succeeded'"
            )
            .await,
            2
        );
        assert_eq!(
            count(
                store,
                "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.succeeded'"
            )
            .await,
            2
        );
        assert_eq!(
            count(
                store,
                "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'agent.state_changed'"
            )
            .await,
            2
        );
        let payload: String = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT payload FROM outbox_events ORDER BY seq DESC LIMIT 1"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(payload["data"]["from"], "NOT_READY");
        assert_eq!(payload["data"]["to"], "READY");
        assert_eq!(payload["data"]["origin"], "api");
        assert!(payload["data"]["idleMs"].as_i64().unwrap() >= 0);
        assert!(audit::verify(store.reader()).await.unwrap().is_intact());
    }

    #[tokio::test]
    async fn unscheduled_agent_is_rejected_without_touching_the_platform() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_003", off_shift());
        let (engine, _dir) = engine(platform.clone()).await;

        let result = engine
            .change(Change::from(request("u_003", AgentState::Ready)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(
            result.outcome,
            Outcome::Rejected {
                violation: Violation::AgentNotScheduled
            }
        );
        assert_eq!(platform.calls("set"), 0);
        let store = engine.store();
        assert_eq!(
            count(store, "SELECT COUNT(*) FROM state_intervals").await,
            0
        );
        assert_eq!(
            count(
                store,
                "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.rejected'"
            )
            .await,
            1
        );
        let payload: String = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT payload FROM outbox_events"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(payload["type"], "transition.rejected");
        assert_eq!(payload["data"]["violation"], "AGENT_NOT_SCHEDULED");
    }

    #[tokio::test]
    async fn preflight_gives_the_verdict_of_a_change_without_making_or_recording_it() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_003", off_shift());
        platform.add_agent("u_005", on_shift(Some(vec![lunch_now()])));
        let (engine, _dir) = engine(platform.clone()).await;
        assert_eq!(
            engine.preflight("u_003", AgentState::NotReady).await,
            Ok(Err(Violation::AgentNotScheduled))
        );
        assert_eq!(
            engine.preflight("u_005", AgentState::Ready).await,
            Ok(Err(Violation::MandatoryBreakViolation))
        );
        assert_eq!(
            engine.preflight("u_005", AgentState::NotReady).await,
            Ok(Ok(()))
        );
        assert!(engine.preflight("u_999", AgentState::Ready).await.is_err());
        assert_eq!(platform.calls("set"), 0);
        let store = engine.store();
        assert_eq!(
            count(store, "SELECT COUNT(*) FROM transition_attempts").await,
            0
        );
        assert_eq!(count(store, "SELECT COUNT(*) FROM audit_log").await, 0);

        // The transition that follows uses the schedule the preflight fetched.
        let change = engine
            .change(Change::from(request("u_005", AgentState::NotReady)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(change.outcome, Outcome::Succeeded);
        assert_eq!(platform.calls("schedule u_005"), 1);
    }

    #[tokio::test]
    async fn logging_out_an_unscheduled_agent_needs_no_schedule_and_is_allowed() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_003", off_shift());
        let (engine, _dir) = engine(platform.clone()).await;
        let result = engine
            .change(Change::from(request("u_003", AgentState::LoggedOut)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(result.outcome, Outcome::Succeeded);
        assert_eq!(platform.calls("schedule"), 0);
    }

    #[tokio::test]
    async fn mandatory_break_from_schedule_windows_rejects_ready_without_a_break_call() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_005", on_shift(Some(vec![lunch_now()])));
        let (engine, _dir) = engine(platform.clone()).await;
        let result = engine
            .change(Change::from(request("u_005", AgentState::Ready)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(
            result.outcome,
            Outcome::Rejected {
                violation: Violation::MandatoryBreakViolation
            }
        );
        assert_eq!(platform.calls("breaks"), 0);
        assert_eq!(platform.calls("set"), 0);
        let other = engine
            .change(Change::from(request("u_005", AgentState::Paused)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(other.outcome, Outcome::Succeeded, "only READY is blocked");
    }

    #[tokio::test]
    async fn schedule_without_break_windows_asks_the_break_endpoint() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_009", on_shift(None));
        let window = lunch_now();
        platform.breaks.lock().unwrap().insert(
            "u_009".into(),
            BreakStatus {
                mandatory_break_required: true,
                break_start: Some(window.start),
                break_end: Some(window.end),
            },
        );
        let (engine, _dir) = engine(platform.clone()).await;
        let result = engine
            .change(Change::from(request("u_009", AgentState::Ready)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(
            result.outcome,
            Outcome::Rejected {
                violation: Violation::MandatoryBreakViolation
            }
        );
        assert_eq!(platform.calls("breaks u_009"), 1);
    }

    #[tokio::test]
    async fn warm_cache_costs_one_platform_call_per_change() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_009", on_shift(None));
        let (engine, _dir) = engine(platform.clone()).await;
        for i in 0..10 {
            let target = if i % 2 == 0 {
                AgentState::Ready
            } else {
                AgentState::NotReady
            };
            engine
                .change(Change::from(request("u_009", target)))
                .await
                .map(Changed::made)
                .unwrap();
        }
        assert_eq!(platform.calls("schedule"), 1);
        assert_eq!(platform.calls("breaks"), 1);
        assert_eq!(platform.calls("set"), 10);
    }

    #[tokio::test]
    async fn same_idempotency_key_performs_the_change_once() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(Some(vec![])));
        let (engine, _dir) = engine(platform.clone()).await;
        let keyed = TransitionRequest {
            idempotency_key: Some("k-1".into()),
            ..request("u_001", AgentState::Paused)
        };
        let (a, b) = tokio::join!(
            engine.change(Change::from(keyed.clone())),
            engine.change(Change::from(keyed.clone()))
        );
        let (a, b) = (a.unwrap().made(), b.unwrap().made());
        assert_eq!(a.attempt_id, b.attempt_id);
        assert!(
            a.replayed != b.replayed,
            "exactly one of them is the replay"
        );
        assert_eq!(platform.calls("set"), 1);

        let reused = engine
            .change(Change::from(TransitionRequest {
                target: AgentState::Idle,
                ..keyed
            }))
            .await
            .map(Changed::made);
        assert!(matches!(
            reused,
            Err(EngineError::IdempotencyKeyReused { .. })
        ));
    }

    #[tokio::test]
    async fn resuming_records_a_change_the_platform_already_made_without_calling_it_again() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(Some(vec![])));
        let (engine, _dir) = engine(platform.clone()).await;
        let since = Utc::now();
        // The call went through, then the process died before recording it.
        platform
            .set_agent_state(StateChange::new("u_001", AgentState::NotReady, "MEETING"))
            .await
            .unwrap();
        let keyed = TransitionRequest {
            reason: Some("MEETING".into()),
            idempotency_key: Some("bulk:job_1:u_001".into()),
            ..request("u_001", AgentState::NotReady)
        };

        let resumed = engine
            .change(Change::from(keyed.clone()).resuming(since))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(resumed.outcome, Outcome::Succeeded);
        assert!(!resumed.replayed);
        assert_eq!(platform.calls("set"), 1, "no second call");
        assert_eq!(
            platform.calls("schedule"),
            0,
            "nothing to check: it happened"
        );
        let store = engine.store();
        assert_eq!(
            count(
                store,
                "SELECT COUNT(*) FROM state_intervals WHERE state = 'NOT_READY' \
                 AND reason = 'MEETING' AND ended_at IS NULL"
            )
            .await,
            1
        );
        let again = engine
            .change(Change::from(keyed.clone()).resuming(since))
            .await
            .map(Changed::made)
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.attempt_id, resumed.attempt_id);
        let through_transition = engine
            .change(Change::from(keyed))
            .await
            .map(Changed::made)
            .unwrap();
        assert!(through_transition.replayed);
        assert_eq!(platform.calls("set"), 1);
    }

    #[tokio::test]
    async fn resuming_makes_the_change_when_the_platform_shows_otherwise() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(Some(vec![])));
        let (engine, _dir) = engine(platform.clone()).await;
        let keyed = |target, reason: &str| TransitionRequest {
            reason: Some(reason.into()),
            idempotency_key: Some(format!("k-{target}-{reason}")),
            ..request("u_001", target)
        };
        platform
            .set_agent_state(StateChange::new("u_001", AgentState::NotReady, "MEETING"))
            .await
            .unwrap();
        let now = Utc::now();
        for (request, since) in [
            (keyed(AgentState::Paused, "MEETING"), now),
            (keyed(AgentState::NotReady, "LUNCH"), now),
            // Changed well before the interrupted attempt began: not its doing.
            (
                keyed(AgentState::NotReady, "MEETING"),
                now + ADOPT_CLOCK_SKEW + ChronoDuration::seconds(60),
            ),
        ] {
            let calls = platform.calls("set");
            let made = engine
                .change(Change::from(request).resuming(since))
                .await
                .map(Changed::made)
                .unwrap();
            assert_eq!(made.outcome, Outcome::Succeeded);
            assert_eq!(platform.calls("set"), calls + 1, "{made:?}");
        }
    }

    #[tokio::test]
    async fn platform_failure_is_recorded_leaves_history_alone_and_frees_the_key() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(Some(vec![])));
        *platform.fail_set_with.lock().unwrap() = Some(CxoneError::Server {
            status: 503,
            message: String::new(),
            retry_after: None,
        });
        let (engine, _dir) = engine(platform.clone()).await;
        let keyed = TransitionRequest {
            idempotency_key: Some("k-2".into()),
            ..request("u_001", AgentState::Paused)
        };
        let failed = engine
            .change(Change::from(keyed.clone()))
            .await
            .map(Changed::made)
            .unwrap();
        assert!(matches!(
            failed.outcome,
            Outcome::Failed {
                kind: FailureKind::PlatformUnavailable,
                ..
            }
        ));
        let store = engine.store();
        assert_eq!(
            count(store, "SELECT COUNT(*) FROM state_intervals").await,
            0
        );
        assert_eq!(count(store, "SELECT COUNT(*) FROM outbox_events").await, 0);
        assert_eq!(
            count(
                store,
                "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.failed'"
            )
            .await,
            1
        );

        *platform.fail_set_with.lock().unwrap() = None;
        let retried = engine
            .change(Change::from(keyed))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(retried.outcome, Outcome::Succeeded);
        assert!(!retried.replayed);
    }

    #[tokio::test]
    async fn platform_conflict_is_a_rejection_and_unknown_agent_a_failure() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_007", on_shift(Some(vec![])));
        *platform.fail_set_with.lock().unwrap() = Some(CxoneError::Conflict {
            message: "agent is on a contact".into(),
        });
        let (engine, _dir) = engine(platform.clone()).await;
        let conflict = engine
            .change(Change::from(request("u_007", AgentState::NotReady)))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(
            conflict.outcome,
            Outcome::Rejected {
                violation: Violation::StateConflict
            }
        );
        let unknown = engine
            .change(Change::from(request("u_999", AgentState::NotReady)))
            .await
            .map(Changed::made)
            .unwrap();
        assert!(matches!(
            unknown.outcome,
            Outcome::Failed {
                kind: FailureKind::UnknownAgent,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn observed_only_states_are_refused_before_anything_happens() {
        let platform = Arc::new(FakePlatform::default());
        let (engine, _dir) = engine(platform.clone()).await;
        let result = engine
            .change(Change::from(request("u_001", AgentState::OnContact)))
            .await
            .map(Changed::made);
        assert!(matches!(
            result,
            Err(EngineError::NotSettable(AgentState::OnContact))
        ));
        assert!(platform.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_changes_of_one_agent_chain_their_intervals() {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent("u_001", on_shift(Some(vec![])));
        let (engine, _dir) = engine(platform.clone()).await;
        let engine = Arc::new(engine);
        let targets = [
            AgentState::Ready,
            AgentState::NotReady,
            AgentState::Paused,
            AgentState::Idle,
        ];
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    engine
                        .change(Change::from(request("u_001", targets[i % targets.len()])))
                        .await
                        .unwrap()
                        .made()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().outcome, Outcome::Succeeded);
        }
        let rows = history::overlapping(
            engine.store().reader(),
            "u_001",
            from_ms(0),
            Utc::now() + ChronoDuration::hours(1),
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 24);
        for pair in rows.windows(2) {
            assert_eq!(pair[0].ended_at, Some(pair[1].started_at), "{pair:?}");
        }
        let from_states: Vec<Option<String>> =
            on!(engine.store().reader(), |c| sqlx::query_scalar(
                "SELECT from_state FROM transition_attempts ORDER BY completed_at, id",
            )
            .fetch_all(c)
            .await)
            .unwrap();
        assert_eq!(from_states.iter().filter(|s| s.is_none()).count(), 1);
    }
}
