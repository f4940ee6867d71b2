//! The feed's background work: the outbox tailer, the heartbeat, the metric board,
//! bulk job progress, the roster and real-time adherence rows; among several instances, the leader shares its
//! board and roster through the database and the followers show them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Live;
use super::rest::{FALLBACK_TICK, ReadOf};
use crate::cxone::Agent;
use crate::engine::bulk::BulkJobs;
use crate::engine::jobs::BulkJobView;
use crate::engine::metrics::{BoardReceiver, BoardSender};
use crate::store::live_shared::{self, View};
use crate::store::{InstanceRole, jobs};

/// The outbox is read at most this often while commits keep coming, so that each
/// client wakes for a batch of events rather than for each (at fifty changes a second
/// and a thousand clients, the wakes were what starved the engine). It bounds the
/// delay a batch adds.
const MIN_READ_GAP: Duration = Duration::from_millis(50);

/// How often running bulk jobs are looked at for progress while a client watches.
const PROGRESS_TICK: Duration = Duration::from_secs(1);

impl Live {
    /// Runs the feed until `stop`: loads the state, tails the outbox, follows the
    /// metric board, publishes bulk job progress, refreshes the roster and, with
    /// `adherence`, keeps real-time adherence rows live (see `adherence`).
    pub async fn run(
        self,
        stop: CancellationToken,
        board: BoardSender,
        bulk: Option<BulkJobs>,
        adherence: Option<super::AdherenceJudge>,
    ) {
        // Feeds end with the daemon, so open streams do not hold the shutdown up.
        let feeds_stop = self.inner.stop.clone();
        // The store is read before the roster is asked for, so the roster's snapshot is
        // the last one a client sees at startup.
        if let Err(error) = self.load().await {
            tracing::warn!(%error, "the live feed cannot read the store");
        }
        self.set_board(board.clone()).await;
        let mut tasks = tokio::task::JoinSet::new();
        crate::tasks::spawn_in(&mut tasks, self.clone().tail(stop.clone()));
        crate::tasks::spawn_in(&mut tasks, self.clone().beat(stop.clone()));
        let follow = self.clone().follow_board(stop.clone(), board.subscribe());
        crate::tasks::spawn_in(&mut tasks, follow);
        if let Some(me) = self.inner.settings.served_by.clone() {
            // Among several instances, a follower shows the leader's board and roster,
            // and its feed wakes at the leader's commits.
            crate::tasks::spawn_in(&mut tasks, self.clone().follow_leader(stop.clone()));
            let (store, stop) = (self.inner.store.clone(), stop.clone());
            let relay = async move { store.relay_outbox_commits(&me, stop).await };
            crate::tasks::spawn_in(&mut tasks, relay);
        }
        if let Some(judge) = adherence {
            let rows = self.clone().keep_adherence(stop.clone(), judge);
            crate::tasks::spawn_in(&mut tasks, rows);
        }
        if let Some(bulk) = bulk {
            let follow = self.clone().follow_jobs(stop.clone(), bulk.clone());
            crate::tasks::spawn_in(&mut tasks, follow);
            if self.inner.settings.roster {
                crate::tasks::spawn_in(&mut tasks, self.clone().keep_roster(stop.clone(), bulk));
            }
        }
        stop.cancelled().await;
        feeds_stop.cancel();
        while tasks.join_next().await.is_some() {}
    }

    /// Publishes the heartbeat to every client at once: one timer for the feed rather
    /// than one per client, which under a thousand clients and fifty events a second
    /// was a timer reset per event per client.
    pub(super) fn beat(self, stop: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        // The period counts from the call, not from the task's first turn.
        let period = self.inner.settings.heartbeat;
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => self.publish_heartbeat(),
                }
            }
        }
    }

    /// Reads the outbox at each announced commit while a client watches and, for
    /// commits nothing announces, every [`FALLBACK_TICK`]; while none watches, every
    /// [`super::rest::IDLE_TICK`] only: a reader of the snapshot has the feed read the
    /// commits announced meanwhile first (see `rest`), and the first client's
    /// commits are read at once.
    async fn tail(self, stop: CancellationToken) {
        let mut commits = self.inner.store.outbox_commits();
        loop {
            let read_at = Instant::now();
            self.read_outbox(false, true).await;
            // Commits made meanwhile are read together next time: every client is woken
            // once for all of them instead of once per event. The first commit after a
            // quiet spell goes out at once.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(read_at + MIN_READ_GAP) => {}
            }
            // A commit announced while nobody watched stays unseen, so a first client's
            // coming reads it.
            let announced = async {
                self.watchers_come().await;
                commits.changed().await
            };
            tokio::select! {
                () = stop.cancelled() => return,
                changed = announced => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = self.tick_due(ReadOf::Outbox, FALLBACK_TICK, read_at) => {}
            }
        }
    }

    pub(super) async fn follow_board(self, stop: CancellationToken, mut board: BoardReceiver) {
        let current = board.borrow_and_update().clone();
        self.publish_board(current.clone());
        // The pollers may have filled the board while the feed was still loading the
        // store: shared now, or the followers would wait a whole polling interval.
        if current.skills_polled_at.is_some() || current.queues_polled_at.is_some() {
            self.share(View::Board, &*current).await;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = board.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let current = board.borrow_and_update().clone();
                    // This instance's clients first; the other instances' after a write.
                    // A follower's reader that caught up published it already.
                    if !Arc::ptr_eq(&self.lock().board, &current) {
                        self.publish_board(current.clone());
                    }
                    self.share(View::Board, &*current).await;
                }
            }
        }
    }

    /// Whether another instance leads the tenant: its roster and board are read from
    /// what the leader shares ([`Live::follow_leader`]), never from the platform.
    pub(super) fn follows(&self) -> bool {
        self.inner.store.role() == InstanceRole::Follower
    }

    /// Shares `value` as `view` with the other instances' wallboards, when this
    /// instance leads the tenant among several (a sole instance has nobody to tell).
    async fn share(&self, view: View, value: &impl serde::Serialize) {
        if !matches!(self.inner.store.role(), InstanceRole::Leader { .. }) {
            return;
        }
        let now = chrono::Utc::now().timestamp_millis();
        if let Err(error) = live_shared::publish(&self.inner.store, view, value, now).await {
            tracing::warn!(%error, "the wallboard's figures cannot be shared with the other instances");
        }
    }

    /// On a follower, shows the roster the leader shares and puts the board it shares
    /// on the feed's board (for the feed, as the leader's pollers do, and `/readyz`),
    /// as they change: every [`FALLBACK_TICK`] while a client watches, every
    /// [`super::rest::IDLE_TICK`] while none does (a reader catches up itself).
    async fn follow_leader(self, stop: CancellationToken) {
        loop {
            let read_at = Instant::now();
            self.read_leader(false).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.tick_due(ReadOf::Leader, FALLBACK_TICK, read_at) => {}
            }
        }
    }

    pub(super) async fn read_shared(
        &self,
        board: &BoardSender,
        board_at: &mut i64,
        roster_at: &mut i64,
    ) -> Result<(), sqlx::Error> {
        if let Some((shared, at)) =
            live_shared::changed(self.pool(), View::Board, *board_at).await?
        {
            let shared: Arc<crate::engine::metrics::MetricBoard> = Arc::new(shared);
            board.send_replace(shared.clone());
            // Now, not when `follow_board` gets to it: a reader catching up reads it next.
            self.publish_board(shared);
            *board_at = at;
        }
        if !self.inner.settings.roster {
            return Ok(());
        }
        let roster: Option<(Vec<Agent>, i64)> =
            live_shared::changed(self.pool(), View::Roster, *roster_at).await?;
        if let Some((agents, at)) = roster {
            self.set_roster(&agents).await?;
            *roster_at = at;
        }
        Ok(())
    }

    /// Publishes bulk job progress every [`PROGRESS_TICK`] while a client watches. Progress
    /// is for clients only, so while none does nothing is read; the first to come is sent
    /// the progress of every running job at once (`bulk.completed` is durable, in the
    /// outbox, for a job that ended meanwhile).
    async fn follow_jobs(self, stop: CancellationToken, bulk: BulkJobs) {
        let mut last: HashMap<String, BulkJobView> = HashMap::new();
        let mut firsts = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.watchers_come() => {}
            }
            if self.first_clients() != firsts {
                // What they were not sent: every running job's progress as it is.
                firsts = self.first_clients();
                last.clear();
            }
            if let Err(error) = self.progress_step(&bulk, &mut last).await {
                tracing::debug!(%error, "the live feed cannot read bulk jobs");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PROGRESS_TICK) => {}
            }
        }
    }

    /// Publishes the progress of every running job that moved, and the final state of
    /// those that finished since the last step.
    async fn progress_step(
        &self,
        bulk: &BulkJobs,
        last: &mut HashMap<String, BulkJobView>,
    ) -> Result<(), sqlx::Error> {
        let mut ids = jobs::unfinished(self.pool()).await?;
        ids.extend(last.keys().cloned());
        ids.sort();
        ids.dedup();
        for id in ids {
            let Some(view) = bulk.job(&id, false).await? else {
                last.remove(&id);
                continue;
            };
            if last.get(&id) != Some(&view) {
                self.publish_progress(&view);
            }
            if view.is_finished() {
                last.remove(&id);
            } else {
                last.insert(id, view);
            }
        }
        Ok(())
    }

    async fn keep_roster(self, stop: CancellationToken, bulk: BulkJobs) {
        let mut delay = Duration::from_secs(1);
        loop {
            if self.follows() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(FALLBACK_TICK) => continue,
                }
            }
            let fetched =
                crate::cxone::in_lane(crate::cxone::Lane::Background, None, bulk.agents()).await;
            let wait = match fetched {
                Ok(agents) => match self.set_roster(&agents).await {
                    Ok(()) => {
                        self.share(View::Roster, &agents).await;
                        delay = Duration::from_secs(1);
                        self.inner.settings.roster_refresh
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the live feed cannot read the store");
                        delay
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "the live feed cannot list the agents; names and teams wait");
                    delay = (delay * 2).min(Duration::from_secs(60));
                    delay
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
