//! Changes that wait for a busy agent (see [`crate::engine::deferred`]): storing a
//! change to wait instead of refusing it, noting an agent the platform still finds busy,
//! and carrying a waiting change out once its agent is recorded free, confirmed by
//! reading the agent's state back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::instrument;

use super::deferral::{self as deferred, CarriedOut, Defer, Deferral};
use super::{
    Attempted, CheckError, EngineError, Locked, Locks, TransitionEngine, TransitionRequest,
};
use crate::store::deferred::{self as stored_deferred, DeferredRow};
use crate::store::{history, intents, to_ms};

/// How often a deferred change's state is read back before it counts as unconfirmed,
/// and the pause between reads: the platform may show a change a moment late.
pub(crate) const CONFIRM_READS: u32 = 4;
const CONFIRM_PAUSE: Duration = Duration::from_millis(750);

impl TransitionEngine {
    /// Carries out the deferred change `row` now that its agent is recorded free (the
    /// deferred worker's step, see [`crate::engine::deferred`]), under the agent's lock: one
    /// that no longer waits is left alone, one whose time is up expires, one whose agent
    /// is busy again waits on; otherwise it goes through compliance and the platform
    /// again, is confirmed by reading the agent's state back, and is recorded as any
    /// change, settling the deferred change (and its bulk item) in the same transaction.
    #[instrument(skip_all, fields(agent = %row.agent_id, deferred = %row.id))]
    pub async fn carry_out_deferred(&self, row: DeferredRow) -> Result<CarriedOut, EngineError> {
        let request = deferred::request_of(&row);
        let locks = match self.lock(&request).await? {
            Locked::Replayed(earlier) => {
                // Its key's change was made meanwhile: the waiting one is settled with it.
                let mut tx = self.store.begin_write().await?;
                deferred::settle_made(
                    &mut tx,
                    &row,
                    &earlier.outcome,
                    &earlier.attempt_id,
                    self.now(),
                )
                .await?;
                tx.commit().await?;
                self.store.notify_outbox();
                return Ok(CarriedOut::Made(earlier));
            }
            Locked::Held(locks) => locks,
        };
        let mut conn = self.store.reader().acquire().await?;
        let current = stored_deferred::for_agent(&mut conn, &row.agent_id).await?;
        let open = history::open_interval(&mut conn, &row.agent_id).await?;
        drop(conn);
        let Some(current) = current.filter(|c| c.id == row.id) else {
            return Ok(CarriedOut::Gone);
        };
        let now = self.now();
        if to_ms(now) >= current.expires_at {
            let mut tx = self.store.begin_write().await?;
            let expired = deferred::expire(&mut tx, &current, now).await?;
            tx.commit().await?;
            if !expired {
                return Ok(CarriedOut::Gone);
            }
            self.store.notify_outbox();
            tracing::info!("the agent stayed busy; the deferred change expired");
            return Ok(CarriedOut::Expired);
        }
        let free = open.as_ref().is_some_and(|open| {
            !deferred::is_busy(open.state()) && Some(open.started_at) != current.busy_since
        });
        if !free {
            let busy_since = open.map(|open| open.started_at);
            if busy_since != current.busy_since {
                let mut tx = self.store.begin_write().await?;
                stored_deferred::still_busy(&mut tx, &current.id, busy_since).await?;
                tx.commit().await?;
            }
            return Ok(CarriedOut::StillBusy);
        }
        Ok(
            match self
                .change_with(&request, None, Busy::CarryOut(&current), locks)
                .await?
            {
                Attempted::Made(transition) => CarriedOut::Made(transition),
                Attempted::StillBusy => CarriedOut::StillBusy,
                Attempted::Deferred(_) => {
                    unreachable!("a change carried out is not deferred again")
                }
            },
        )
    }

    /// With the agent's lock held: the waiting change this request's idempotency key
    /// names, or else, when the agent is recorded busy, the request stored to wait.
    pub(super) async fn defer_if_busy(
        &self,
        request: &TransitionRequest,
        defer: &Defer,
        locks: &Locks,
    ) -> Result<Option<Deferral>, EngineError> {
        if locks.key_use.deferred
            && let Some(key) = &request.idempotency_key
            && let Some(waiting) =
                stored_deferred::by_idempotency_key(self.store.reader(), key).await?
            && waiting.agent_id == request.agent_id
        {
            return Ok(Some(Deferral::of(&waiting)));
        }
        let mut conn = self.store.reader().acquire().await?;
        let open = history::open_interval(&mut conn, &request.agent_id).await?;
        drop(conn);
        if !open.is_some_and(|open| deferred::is_busy(open.state())) {
            return Ok(None);
        }
        Ok(Some(self.record_deferral(request, defer, None).await?))
    }

    /// Stores `request` as its agent's deferred change (see [`deferred::store`]); the
    /// intent of `attempt_id`, when the platform was asked and answered its conflict, is
    /// removed in the same transaction.
    pub(super) async fn record_deferral(
        &self,
        request: &TransitionRequest,
        defer: &Defer,
        attempt_id: Option<&str>,
    ) -> Result<Deferral, sqlx::Error> {
        let mut tx = self.store.begin_write().await?;
        if let Some(attempt_id) = attempt_id {
            intents::delete(&mut tx, attempt_id).await?;
        }
        let open = history::open_interval(&mut tx, &request.agent_id).await?;
        let from = open.as_ref().and_then(|open| open.state());
        let busy_since = open.map(|open| open.started_at);
        let deferral =
            deferred::store(&mut tx, request, defer, self.now(), from, busy_since).await?;
        tx.commit().await?;
        self.note_deferral_stored();
        self.store.notify_outbox();
        tracing::info!(deferred = %deferral.deferred_id, expires_at = %deferral.expires_at, "the agent is busy; the change waits");
        Ok(deferral)
    }

    /// The platform refused deferred change `row` as a conflict again: it waits for the
    /// agent's next recorded interval. Removes the attempt's intent.
    pub(super) async fn note_still_busy(
        &self,
        row: &DeferredRow,
        attempt_id: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.store.begin_write().await?;
        intents::delete(&mut tx, attempt_id).await?;
        let open = history::open_interval(&mut tx, &row.agent_id).await?;
        stored_deferred::still_busy(&mut tx, &row.id, open.map(|open| open.started_at)).await?;
        tx.commit().await?;
        tracing::info!("the platform still finds the agent busy; the deferred change waits on");
        Ok(())
    }

    /// Reads the agent's state back from the platform after a deferred change was
    /// answered, a few times over [`CONFIRM_READS`] (the platform may show a change a
    /// moment late): the instant it shows the change made, or why it could not.
    pub(super) async fn confirm(
        &self,
        request: &TransitionRequest,
    ) -> Result<Option<DateTime<Utc>>, CheckError> {
        let mut shows = None;
        for read in 0..CONFIRM_READS {
            if read > 0 {
                tokio::time::sleep(CONFIRM_PAUSE).await;
            }
            match self.platform.agent_state(&request.agent_id).await {
                Ok(snapshot) if snapshot.state == request.target => {
                    return Ok(snapshot.changed_at);
                }
                Ok(snapshot) => shows = Some(snapshot.state),
                Err(error) if read + 1 == CONFIRM_READS => return Err(error.into()),
                Err(_) => {}
            }
        }
        Err(CheckError::Unconfirmed { shows })
    }
}

/// What the platform's conflict (a busy agent) does to a change.
#[derive(Clone, Copy)]
pub(super) enum Busy<'a> {
    /// Refused `STATE_CONFLICT`.
    Reject,
    /// Stored to wait.
    Defer(&'a Defer),
    /// The deferred change being carried out waits on.
    CarryOut(&'a DeferredRow),
}

impl<'a> Busy<'a> {
    pub(super) fn of(defer: Option<&'a Defer>) -> Busy<'a> {
        defer.map_or(Busy::Reject, Busy::Defer)
    }
}
