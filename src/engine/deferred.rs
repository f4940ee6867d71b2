//! Deferred changes: a change asked for with `when_busy = "defer"` while its agent is on
//! a contact or in after-contact work waits, instead of being refused `STATE_CONFLICT`,
//! and is carried out once the agent is free.
//!
//! - **Deferring.** The engine defers a change when the agent's recorded state (what
//!   state sync last saw) is `ON_CONTACT` or `ACW`, without calling the platform, or when
//!   the platform answers the change with its conflict (409). One transaction stores the
//!   change as the agent's deferred change ([`crate::store::deferred`]), its audit entry
//!   (`transition.deferred`) and its `transition.deferred` event, and marks its bulk item
//!   `deferred`. An agent has at most one: a newer one replaces the older, which is
//!   settled `cancelled` in the same transaction (audited `transition.replaced`, event
//!   `transition.cancelled` with `replacedBy`, its bulk item `cancelled`).
//! - **Carrying out.** [`DeferredChanges::run`], the tenant leader's worker,
//!   looks at the waiting changes whenever an outbox commit is announced while one
//!   waits (state sync's recorded changes are such commits), whenever the engine
//!   stores one, at the next expiry, and besides every [`BACKSTOP`] while changes
//!   wait, every [`IDLE_BACKSTOP`] while none does. A change whose agent is
//!   recorded in a state that is not busy, in an interval later than the one it was
//!   last found busy in, goes through the engine again
//!   ([`crate::engine::TransitionEngine::carry_out_deferred`]): compliance is checked
//!   again (a refusal is recorded and announced as any), the platform is asked, and the
//!   change is confirmed by reading the agent's state back before it is recorded with
//!   its `agent.state_changed`. A platform conflict again leaves it waiting for the next
//!   interval state sync records. Nothing here polls the platform.
//! - **Expiring.** A change still waiting at its `expires_at` is removed, audited
//!   (`transition.expired`) with its `transition.expired` event, and its bulk item
//!   settled `failed`. One found expired at start (after a restart or `kill -9`) expires
//!   then: a change is never carried out late.
//! - **Cancelling.** `DELETE /v1/agents/{id}/deferred`
//!   ([`DeferredChanges::cancel`]), or cancelling its bulk job, removes it with
//!   an audit entry (`transition.cancelled`) and a `transition.cancelled` event; its bulk
//!   item is settled `cancelled`.
//!
//! The waiting changes live in the database only, so they survive restarts; only the
//! leader's worker carries them out or expires them.
//!
//! This module is the tenant leader's worker that carries the changes out or expires
//! them, and cancelling one; it drives the transition engine. The changes' types and
//! the records each step writes are in [`crate::engine::transition::deferral`], below
//! the engine, which writes some of them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub(crate) use super::transition::deferral::cancel_in;
pub use super::transition::deferral::{
    BulkItem, CarriedOut, DEFAULT_DEFER_FOR, Defer, Deferral, MAX_DEFER_FOR, MIN_DEFER_FOR,
    OUTCOMES, WhenBusy, is_busy,
};
use crate::engine::{EngineError, TransitionEngine};
use crate::store::deferred::{self as stored, DeferredRow};
use crate::store::{history, to_ms};
use crate::telemetry::names::DEFERRED_CHANGES;

/// How often the worker looks at the waiting changes, while some wait, when nothing
/// else wakes it (a lost wake-up is caught within this).
pub const BACKSTOP: Duration = Duration::from_secs(5);

/// How often the worker looks while none waits. Only this process stores a change for
/// the tenant while it leads (a follower hands its changes to the leader; a former
/// leader's writes are refused once this one's term began, and the worker's first look
/// comes after that), and it wakes the worker when it does: this look is a safeguard
/// only. At [`BACKSTOP`] it was a statement every five seconds for every tenant the
/// instance leads, 200 a second for a fleet of 1,000.
pub const IDLE_BACKSTOP: Duration = Duration::from_secs(60);

/// How long the worker waits after a database failure.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// The tenant's deferred changes: the leader's worker that carries them out or expires
/// them, and cancelling. Cheap to clone.
#[derive(Clone)]
pub struct DeferredChanges {
    pub(super) engine: Arc<TransitionEngine>,
    /// `[deferred] defer_for`: how long a change waits unless its request says.
    defer_for: Duration,
}

impl DeferredChanges {
    pub fn new(engine: Arc<TransitionEngine>, defer_for: Duration) -> DeferredChanges {
        DeferredChanges { engine, defer_for }
    }

    /// How a change asked with `when_busy` (and its own `defer_for`, if it gave one)
    /// waits for a busy agent; `None` for `reject`.
    pub fn defer(&self, when_busy: WhenBusy, defer_for: Option<Duration>) -> Option<Defer> {
        (when_busy == WhenBusy::Defer).then(|| Defer {
            defer_for: defer_for.unwrap_or(self.defer_for),
            bulk: None,
        })
    }

    /// The configured wait (`[deferred] defer_for`).
    pub fn defer_for(&self) -> Duration {
        self.defer_for
    }

    /// The agent's waiting change, if any.
    pub async fn get(&self, agent_id: &str) -> Result<Option<Deferral>, sqlx::Error> {
        let mut conn = self.engine.store().reader().acquire().await?;
        Ok(stored::for_agent(&mut conn, agent_id)
            .await?
            .as_ref()
            .map(Deferral::of))
    }

    /// Cancels the agent's waiting change for `by` (`DELETE /v1/agents/{id}/deferred`);
    /// the cancelled one, `None` when none waited. Waits for a change of the agent in
    /// flight, so a change being carried out is either made or cancelled, never both.
    pub async fn cancel(&self, agent_id: &str, by: &str) -> Result<Option<Deferral>, sqlx::Error> {
        let locks = self.engine.agents_in_flight();
        let _agent = locks.lock(agent_id).await;
        let store = self.engine.store();
        let now = self.engine.now();
        let mut tx = store.begin_write().await?;
        let cancelled = cancel_in(&mut tx, agent_id, None, by, now).await?;
        tx.commit().await?;
        if cancelled.is_some() {
            store.notify_outbox();
        }
        Ok(cancelled.as_ref().map(Deferral::of))
    }

    /// Carries out or expires the waiting changes until `stop` (the leader's worker):
    /// at start (every change left from before, expired ones first), at each announced
    /// outbox commit (state sync recording an agent's new state) while a change waits,
    /// when this engine stores one, at the next expiry, and every [`BACKSTOP`] while
    /// changes wait ([`IDLE_BACKSTOP`] while none does). With none waiting, a commit
    /// frees nothing, and reading the waiting ones at each was a statement a change
    /// under load.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(defer_for = ?self.defer_for, "deferred changes worker started");
        let mut commits = self.engine.store().outbox_commits();
        let mut stored = self.engine.deferrals_stored();
        loop {
            commits.borrow_and_update();
            stored.borrow_and_update();
            let (wait, waiting) = match self.look().await {
                Ok(looked) => looked,
                Err(error) => {
                    tracing::warn!(%error, "cannot look at the deferred changes yet");
                    (ERROR_BACKOFF, 0)
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                changed = commits.changed(), if waiting > 0 => if changed.is_err() { break },
                changed = stored.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("deferred changes worker stopped");
    }

    /// One look at every waiting change, as a step for tests: expires those whose time
    /// is up and carries out those whose agent is recorded free in a newer interval.
    /// Returns how long until the worker looks again unless woken: the next expiry, at
    /// most [`BACKSTOP`] while changes wait, [`IDLE_BACKSTOP`] when none does.
    pub async fn step(&self) -> Result<Duration, EngineError> {
        Ok(self.look().await?.0)
    }

    /// [`DeferredChanges::step`], and how many changes wait after it.
    async fn look(&self) -> Result<(Duration, usize), EngineError> {
        let store = self.engine.store();
        let rows = stored::all(store.reader()).await?;
        let looked_at = rows.len();
        let mut next = None;
        for row in rows {
            let now = self.engine.now();
            let due = to_ms(now) >= row.expires_at;
            if !due && !self.agent_free(&row).await? {
                next = Some(next.map_or(row.expires_at, |n: i64| n.min(row.expires_at)));
                continue;
            }
            match self.engine.carry_out_deferred(row.clone()).await? {
                CarriedOut::StillBusy => {
                    next = Some(next.map_or(row.expires_at, |n: i64| n.min(row.expires_at)));
                }
                CarriedOut::Made(_) | CarriedOut::Expired | CarriedOut::Gone => {}
            }
        }
        // None waited: none can have been carried out or expired, so none is read
        // again (the step runs every few seconds on every tenant the instance leads).
        let waiting = match looked_at {
            0 => 0,
            _ => stored::all(store.reader()).await?.len(),
        };
        metrics::gauge!(DEFERRED_CHANGES).set(waiting as f64);
        let now = to_ms(self.engine.now());
        let next = match (next, waiting) {
            (_, 0) => IDLE_BACKSTOP,
            (None, _) => BACKSTOP,
            (Some(at), _) => {
                Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(BACKSTOP)
            }
        };
        Ok((next, waiting))
    }

    /// Whether `row`'s agent is recorded in a state that is not busy, in an interval
    /// later than the one it was last found busy in.
    async fn agent_free(&self, row: &DeferredRow) -> Result<bool, sqlx::Error> {
        let mut conn = self.engine.store().reader().acquire().await?;
        let open = history::open_interval(&mut conn, &row.agent_id).await?;
        Ok(open
            .is_some_and(|open| !is_busy(open.state()) && Some(open.started_at) != row.busy_since))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, Utc};

    use super::*;
    use crate::cxone::CxoneError;
    use crate::cxone::fake::FakePlatform;
    use crate::domain::{AgentState, Origin};
    use crate::domain::{BreakWindow, Schedule, ScheduleStatus, Violation};
    use crate::engine::TransitionEngine;
    use crate::engine::{Change, Changed, TransitionRequest};
    use crate::store::history::NewInterval;
    use crate::store::testing::{advance, reads_failing_in_paused_time, temp_store};
    use crate::store::{Store, intents, on};

    const AGENT: &str = "u_1";

    /// On shift from two hours ago to six ahead, in a mandatory lunch now.
    fn at_lunch() -> Schedule {
        let now = Utc::now();
        Schedule {
            status: ScheduleStatus::Active,
            timezone: None,
            shift_start: Some(now - TimeDelta::hours(2)),
            shift_end: Some(now + TimeDelta::hours(6)),
            breaks: Some(vec![BreakWindow {
                start: now - TimeDelta::minutes(5),
                end: now + TimeDelta::minutes(55),
                kind: "LUNCH".into(),
                mandatory: true,
            }]),
            activities: Vec::new(),
        }
    }

    async fn rig() -> (Arc<FakePlatform>, DeferredChanges, tempfile::TempDir) {
        let platform = Arc::new(FakePlatform::default());
        platform.add_agent(AGENT, at_lunch());
        let (store, dir) = temp_store().await;
        let engine = TransitionEngine::new(store, platform.clone(), Duration::ZERO);
        let deferred = DeferredChanges::new(Arc::new(engine), DEFAULT_DEFER_FOR);
        (platform, deferred, dir)
    }

    /// Records the agent in `state` from `ago` before now, as state sync would.
    async fn observe(store: &Store, state: AgentState, ago: TimeDelta) {
        let mut tx = store.begin_write().await.unwrap();
        history::switch_state(
            &mut tx,
            &NewInterval {
                agent_id: AGENT,
                state,
                reason: None,
                origin: Origin::Observed,
                at: Utc::now() - ago,
                attempt_id: None,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    fn request(target: AgentState) -> TransitionRequest {
        TransitionRequest {
            agent_id: AGENT.into(),
            target,
            reason: None,
            origin: Origin::Api,
            actor: "desk".into(),
            idempotency_key: None,
        }
    }

    async fn defer(deferred: &DeferredChanges, target: AgentState) -> Deferral {
        let wait = deferred.defer(WhenBusy::Defer, None);
        match deferred
            .engine
            .change(Change::from(request(target)).deferring(wait))
            .await
            .unwrap()
        {
            Changed::Deferred(deferral) => deferral,
            other => panic!("not deferred: {other:?}"),
        }
    }

    /// The payloads of the outbox's events of `event_type`.
    async fn events(store: &Store, event_type: &str) -> Vec<serde_json::Value> {
        let rows: Vec<String> = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT payload FROM outbox_events WHERE event_type = $1 ORDER BY seq"
        )
        .bind(event_type)
        .fetch_all(c)
        .await)
        .unwrap();
        rows.iter()
            .map(|row| serde_json::from_str(row).unwrap())
            .collect()
    }

    /// With nothing waiting, a commit (state sync's, at every change under load) can
    /// free nothing: the worker does not look then. A change the engine stores has it
    /// look at once.
    #[tokio::test]
    async fn with_nothing_waiting_a_commit_is_no_look_but_a_stored_change_is() {
        let (_platform, deferred, _dir) = rig().await;
        let engine = deferred.engine.clone();
        let store = engine.store().clone();
        let (looks, _logging) =
            reads_failing_in_paused_time(&store, "wfmd::engine::deferred").await;
        let stop = CancellationToken::new();
        let running = tokio::spawn(deferred.run(stop.clone()));
        advance(Duration::ZERO).await;
        assert_eq!(
            looks.count(),
            1,
            "the look at its start (failed: backs off 1 s)"
        );
        store.notify_outbox();
        advance(Duration::from_millis(500)).await;
        assert_eq!(
            looks.count(),
            1,
            "a commit was looked at with nothing waiting"
        );
        engine.note_deferral_stored();
        advance(Duration::ZERO).await;
        assert_eq!(looks.count(), 2, "a stored change was not looked at");
        stop.cancel();
        running.await.unwrap();
    }

    /// With none waiting, the worker's next look unless woken is the idle safeguard's,
    /// a minute on, not every five seconds; while one waits, at most five seconds.
    #[tokio::test]
    async fn with_nothing_waiting_the_next_look_is_a_minute_away_and_with_one_waiting_seconds() {
        let (_platform, deferred, _dir) = rig().await;
        let store = deferred.engine.store().clone();
        assert_eq!(deferred.step().await.unwrap(), IDLE_BACKSTOP);
        observe(&store, AgentState::OnContact, TimeDelta::minutes(3)).await;
        defer(&deferred, AgentState::Ready).await;
        assert_eq!(deferred.step().await.unwrap(), BACKSTOP, "busy still");
        // Free: carried out (compliance refuses it during the lunch), so none waits.
        observe(&store, AgentState::NotReady, TimeDelta::minutes(1)).await;
        assert_eq!(deferred.step().await.unwrap(), IDLE_BACKSTOP);
        assert_eq!(deferred.get(AGENT).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_waiting_change_compliance_refuses_when_its_turn_comes_is_recorded_rejected_never_sent()
     {
        let (platform, deferred, _dir) = rig().await;
        let store = deferred.engine.store().clone();
        observe(&store, AgentState::OnContact, TimeDelta::minutes(3)).await;
        // Deferred without a look at the schedule or a call: the agent is recorded busy.
        let deferral = defer(&deferred, AgentState::Ready).await;
        assert!(platform.calls.lock().unwrap().is_empty());

        deferred.step().await.unwrap();
        assert_eq!(
            deferred.get(AGENT).await.unwrap(),
            Some(deferral.clone()),
            "busy still"
        );
        observe(&store, AgentState::NotReady, TimeDelta::minutes(1)).await;
        deferred.step().await.unwrap();

        assert_eq!(deferred.get(AGENT).await.unwrap(), None);
        assert_eq!(platform.calls("set "), 0, "a refused change is never sent");
        let rejected = events(&store, "transition.rejected").await;
        assert_eq!(rejected.len(), 1);
        assert_eq!(
            rejected[0]["data"]["deferredId"],
            deferral.deferred_id.as_str()
        );
        assert_eq!(
            rejected[0]["data"]["violation"],
            Violation::MandatoryBreakViolation.as_str()
        );
    }

    #[tokio::test]
    async fn a_platform_still_finding_the_agent_busy_leaves_the_change_for_the_next_interval() {
        let (platform, deferred, _dir) = rig().await;
        let store = deferred.engine.store().clone();
        // Recorded free but on a contact on the platform: its conflict defers the change.
        observe(&store, AgentState::Ready, TimeDelta::minutes(3)).await;
        let conflict = CxoneError::Conflict {
            message: "on a contact".into(),
        };
        *platform.fail_set_with.lock().unwrap() = Some(conflict);
        let deferral = defer(&deferred, AgentState::NotReady).await;
        assert_eq!(platform.calls("set "), 1);
        assert!(events(&store, "transition.rejected").await.is_empty());
        let left = intents::unsettled(store.reader(), "", i64::MAX, None)
            .await
            .unwrap();
        assert!(left.is_empty(), "the call's intent went with its deferral");

        // The interval the platform refused it in: not tried again.
        deferred.step().await.unwrap();
        assert_eq!(platform.calls("set "), 1);
        // A later one is; still busy there, it waits on.
        observe(&store, AgentState::Ready, TimeDelta::minutes(2)).await;
        deferred.step().await.unwrap();
        assert_eq!(platform.calls("set "), 2);
        assert_eq!(deferred.get(AGENT).await.unwrap(), Some(deferral.clone()));
        deferred.step().await.unwrap();
        assert_eq!(platform.calls("set "), 2, "once per interval");

        // Free in the next: made, read back, announced with its id.
        *platform.fail_set_with.lock().unwrap() = None;
        observe(&store, AgentState::Ready, TimeDelta::minutes(1)).await;
        deferred.step().await.unwrap();
        assert_eq!(platform.calls("set "), 3);
        assert!(
            platform.calls("state ") >= 1,
            "confirmed by reading it back"
        );
        assert_eq!(deferred.get(AGENT).await.unwrap(), None);
        let changed = events(&store, "agent.state_changed").await;
        let made = changed.last().unwrap();
        assert_eq!(made["data"]["deferredId"], deferral.deferred_id.as_str());
        assert_eq!(made["data"]["to"], "NOT_READY");
    }

    #[tokio::test]
    async fn a_change_the_platform_does_not_show_when_read_back_is_recorded_failed() {
        let (platform, deferred, _dir) = rig().await;
        let store = deferred.engine.store().clone();
        observe(&store, AgentState::Acw, TimeDelta::minutes(2)).await;
        let deferral = defer(&deferred, AgentState::NotReady).await;
        *platform.shows.lock().unwrap() = Some(AgentState::Ready);
        observe(&store, AgentState::Ready, TimeDelta::minutes(1)).await;
        deferred.step().await.unwrap();

        assert_eq!(platform.calls("set "), 1);
        assert_eq!(
            platform.calls("state "),
            crate::engine::transition::CONFIRM_READS as usize
        );
        assert_eq!(deferred.get(AGENT).await.unwrap(), None);
        let failed: Vec<(String, Option<String>)> = on!(store.reader(), |c| sqlx::query_as(
            "SELECT outcome, error FROM transition_attempts WHERE agent_id = $1"
        )
        .bind(AGENT)
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "failed");
        assert!(
            failed[0]
                .1
                .as_deref()
                .unwrap()
                .contains("read back shows READY"),
            "{failed:?}"
        );
        let audited: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.failed' AND detail LIKE '%' || $1 || '%'"
        )
        .bind(&deferral.deferred_id)
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(audited, 1, "audited with its deferredId");
    }

    #[tokio::test]
    async fn one_whose_time_is_up_expires_without_a_call_even_when_the_agent_is_free() {
        let (platform, deferred, _dir) = rig().await;
        let store = deferred.engine.store().clone();
        observe(&store, AgentState::OnContact, TimeDelta::minutes(2)).await;
        let now = Defer {
            defer_for: Duration::ZERO,
            bulk: None,
        };
        let Changed::Deferred(deferral) = deferred
            .engine
            .change(Change::from(request(AgentState::NotReady)).deferring(Some(now)))
            .await
            .unwrap()
        else {
            panic!("deferred");
        };
        observe(&store, AgentState::Ready, TimeDelta::minutes(1)).await;
        deferred.step().await.unwrap();
        assert_eq!(platform.calls("set "), 0);
        assert_eq!(deferred.get(AGENT).await.unwrap(), None);
        let expired = events(&store, "transition.expired").await;
        assert_eq!(expired.len(), 1);
        assert_eq!(
            expired[0]["data"]["deferredId"],
            deferral.deferred_id.as_str()
        );
    }
}
