//! Settling intents: changes that were sent to the platform and never recorded, because
//! their record failed (a full disk) or the process died between call and record.
//!
//! Each is settled against what the platform shows now: in the requested state and
//! reason since the intent was written, the change was made and is recorded as
//! succeeded, marked `recordedLate` in its audit entry (linked to the interval state sync
//! may have recorded meanwhile as the agent's own change, else with its own interval and
//! `agent.state_changed`); otherwise it is recorded as failed. Nothing the platform did
//! goes unrecorded, and nothing is sent again.

use std::time::Duration;

use chrono::Utc;

use super::{ADOPT_CLOCK_SKEW, FailureKind, Outcome, Record, TransitionEngine, TransitionRequest};
use crate::domain::{AgentState, Origin};
use crate::store::history;
use crate::store::intents::{self, IntentRow};
use crate::store::{from_ms, to_ms};

/// How long another process's change may still be in flight: its intent is settled only
/// once older (every retry of a platform call, with its waits, is over well before).
const OTHERS_IN_FLIGHT_AT_MOST: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// How often the daemon settles intents (see [`TransitionEngine::settle_intents`]).
pub const SETTLE_INTERVAL: Duration = Duration::from_secs(15);

impl TransitionEngine {
    /// Settles every intent this engine left and other processes' older than any call
    /// takes. An intent whose agent the platform cannot show now is left for the next
    /// call; so is everything while the database takes no writes. Returns how many were
    /// settled.
    pub async fn settle_intents(&self) -> Result<usize, sqlx::Error> {
        let others_before = to_ms(Utc::now() - OTHERS_IN_FLIGHT_AT_MOST);
        let left = intents::unsettled(self.store.reader(), &self.owner, others_before).await?;
        let mut settled = 0;
        for intent in left {
            if self.settle(intent).await? {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Runs [`TransitionEngine::settle_intents`] every [`SETTLE_INTERVAL`] until `stop`.
    pub async fn settle_intents_until(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            match self.settle_intents().await {
                Ok(0) => {}
                Ok(settled) => tracing::info!(settled, "settled changes recorded late"),
                Err(error) => tracing::warn!(%error, "cannot settle left-over changes yet"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(SETTLE_INTERVAL) => {}
            }
        }
    }

    async fn settle(&self, intent: IntentRow) -> Result<bool, sqlx::Error> {
        let (Ok(target), Ok(origin)) = (
            intent.target_state.parse::<AgentState>(),
            intent.origin.parse::<Origin>(),
        ) else {
            tracing::error!(attempt = %intent.attempt_id, "an intent names an unknown state or origin");
            return Ok(false);
        };
        let request = TransitionRequest {
            agent_id: intent.agent_id.clone(),
            target,
            reason: Some(intent.reason.clone()),
            origin,
            actor: intent.actor.clone(),
            idempotency_key: intent.idempotency_key.clone(),
        };
        // The change's own locks, in its order: while they are held, no change of this
        // attempt is in flight in this process.
        let _key = match &request.idempotency_key {
            Some(key) => Some(self.keys.lock(key).await),
            None => None,
        };
        let _agent = self.agents.lock(&request.agent_id).await;
        let mut conn = self.store.reader().acquire().await?;
        if !intents::is_left(&mut conn, &intent.attempt_id).await? {
            // Recorded meanwhile: a retry with its key finished it.
            return Ok(false);
        }
        drop(conn);
        let snapshot = match self.platform.agent_state(&request.agent_id).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!(agent = %request.agent_id, %error, "cannot settle a change recorded late yet");
                return Ok(false);
            }
        };
        let requested_at = from_ms(intent.requested_at);
        let made = snapshot.state == target
            && snapshot.reason.as_deref() == Some(intent.reason.as_str())
            && snapshot
                .changed_at
                .is_none_or(|at| at >= requested_at - ADOPT_CLOCK_SKEW);
        let completed_at = self.now();
        let record = Record {
            attempt_id: intent.attempt_id.clone(),
            request: &request,
            reason: intent.reason.clone(),
            latency_ms: u64::try_from((completed_at - requested_at).num_milliseconds())
                .unwrap_or(0),
            requested_at,
            completed_at,
            source: None,
            late: true,
            deferred: None,
        };
        if !made {
            let outcome = Outcome::Failed {
                kind: FailureKind::PlatformUnavailable,
                error: "its record failed after the platform call, and the platform does not \
                        show the change made"
                    .to_owned(),
            };
            self.record(&record, outcome, None).await?;
        } else if !self.link_observed(&record, requested_at).await? {
            self.record(&record, Outcome::Succeeded, snapshot.changed_at)
                .await?;
        }
        tracing::warn!(attempt = %intent.attempt_id, agent = %request.agent_id, made, "recorded a change whose record had failed");
        Ok(true)
    }

    /// When state sync recorded the change meanwhile (the agent's open interval is the
    /// target state and reason, begun since the intent), records the attempt as
    /// succeeded and links it to that interval. False when there is no such interval.
    async fn link_observed(
        &self,
        record: &Record<'_>,
        requested_at: chrono::DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        let request = record.request;
        let mut tx = self.store.begin_write().await?;
        let Some(open) = history::open_interval(&mut tx, &request.agent_id).await? else {
            return Ok(false);
        };
        if open.state() != Some(request.target)
            || open.reason.as_deref() != Some(record.reason.as_str())
            || open.started() < requested_at - ADOPT_CLOCK_SKEW
            || open.attempt_id.is_some()
        {
            return Ok(false);
        }
        self.write_attempt(&mut tx, record, None, &Outcome::Succeeded)
            .await?;
        history::link_attempt(&mut tx, open.id, &record.attempt_id).await?;
        tx.commit().await?;
        Ok(true)
    }
}
