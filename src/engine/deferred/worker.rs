//! The tenant leader's worker that carries out or expires the deferred changes (see
//! the parent module), and cancelling one. It drives the transition engine, which
//! records through the parent: the records sit below the engine, the worker above it.

use super::*;
use crate::engine::{EngineError, TransitionEngine};

/// How often the worker looks at the waiting changes when nothing wakes it: commits of
/// another process (a follower's forwarded change is the leader's own commit) and
/// a lost wake-up are caught within this.
pub const BACKSTOP: Duration = Duration::from_secs(5);

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
    /// outbox commit (state sync recording an agent's new state), at the next expiry,
    /// and every [`BACKSTOP`].
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(defer_for = ?self.defer_for, "deferred changes worker started");
        let mut commits = self.engine.store().outbox_commits();
        loop {
            commits.borrow_and_update();
            let wait = match self.step().await {
                Ok(next) => next.min(BACKSTOP),
                Err(error) => {
                    tracing::warn!(%error, "cannot look at the deferred changes yet");
                    ERROR_BACKOFF
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                changed = commits.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("deferred changes worker stopped");
    }

    /// One look at every waiting change, as a step for tests: expires those whose time
    /// is up and carries out those whose agent is recorded free in a newer interval.
    /// Returns how long until the next expiry ([`BACKSTOP`] when none waits).
    pub async fn step(&self) -> Result<Duration, EngineError> {
        let store = self.engine.store();
        let rows = stored::all(store.reader()).await?;
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
        let waiting = stored::all(store.reader()).await?.len();
        metrics::gauge!("wfmd_deferred_changes").set(waiting as f64);
        let now = to_ms(self.engine.now());
        Ok(next.map_or(BACKSTOP, |at| {
            Duration::from_millis(u64::try_from(at - now).unwrap_or(0))
        }))
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
