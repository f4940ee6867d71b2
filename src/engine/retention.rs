//! The retention service: prunes old records in small batches and publishes audit
//! checkpoints, in the background of the daemon.
//!
//! A pass removes, kind by kind, the records older than their `[retention]` age, one
//! short write transaction at a time, so the engine's commits queue behind one step at
//! most. Steps are sized to hold the lock about `HOLD_TARGET` (at most
//! `retention.batch_size` rows), since that hold is what a commit of the engine may
//! wait, and for their checkpoint to write their pages back within as long, since the
//! engine's commits sync beside it. Then freed pages go back to the file system the
//! same way (incremental vacuum), a fixed `VACUUM_PAGES` a step. Between two steps
//! the pass rests (`Pace`): while the engine writes, `BUSY_REST` times as long as
//! the last step took, so that few of its commits meet a step at all; when it does not,
//! as long as the step took. A vacuum step also gives way when an engine write comes
//! while it runs: it is interrupted and undone, and tried again after the rest (see
//! `MOST_GIVEN_WAY`).
//!
//! Every `audit.checkpoint_interval` the audit chain's head is checkpointed and
//! published as an `audit.checkpoint` webhook, which is also what lets audit entries be
//! pruned at all.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::retention::{AuditConfig, RetentionConfig};
use crate::engine::analytics::history;
use crate::engine::compliance::JudgingHandle;
use crate::store::Store;
use crate::store::audit::checkpoints::{self, CheckpointError, CheckpointRow};
use crate::store::retention::{self as pruning, Kind, PruneError};
use crate::telemetry::names::{
    AUDIT_CHECKPOINT_ENTRY, AUDIT_CHECKPOINT_FAILURES_TOTAL, DATABASE_SIZE_BYTES,
    RETENTION_REMOVED_ROWS_TOTAL,
};

/// The shortest rest between two batches.
const MIN_PAUSE: Duration = Duration::from_millis(5);

/// How many times as long as a step took the pass rests after it while the engine
/// writes. A commit that arrives during a step waits for the rest of it, and for the
/// commits queued behind it, so the writers' p99 moves as soon as more than about one
/// commit in a hundred meets a step: how often that happens is the share of time the
/// pass holds the lock, more than the size of its steps. Measured with the retention
/// benchmark's 32 writers (100 commits/s), a minute of each part against the minute
/// before: resting as long as each step, the writers' p99 went from 8.9 to 19.7 ms
/// during the deletes (with 50-row steps, from 4.9 to 8.9 ms) and from 5.5 to 11.4 ms
/// during the vacuum; resting four times as long, from 6.2 to 8.7 ms and from 5.7 to
/// 11.1 ms; nineteen times as long (the lock held 2 to 3 % of the time), the vacuum
/// from 6.5 to 7.8 ms.
const BUSY_REST: u32 = 19;

/// Free pages handed back per incremental-vacuum step (64 KiB at 4 KiB pages). Not
/// sized by the hold like the deletes: a vacuum step's hold is mostly not its size.
/// Measured with the retention benchmark's 32 writers (100 commits/s) over the vacuum
/// of its pruned 1.1 GB file: steps sized to hold about [`HOLD_TARGET`] swung between
/// tens and hundreds of pages and held p90 7 ms, the writers' p99 commit 36 to 40 ms;
/// 16-page steps held p90 2 ms (p50 0.6 ms), the writers' p99 14 to 17 ms; 8-page
/// steps held no shorter (p90 3 ms), each step's own commit and checkpoint then
/// weighing more than its pages.
const VACUUM_PAGES: u32 = 16;

/// How many vacuum steps in a row may give way to engine writes before one runs to its
/// end whoever waits. An interrupted step is undone, and with commits arriving every few
/// milliseconds a pass could otherwise be interrupted for as long as they do, the file
/// never shrinking. A step that gives way costs the waiting commit a page or two where
/// it would have waited for the whole step, which on a busy disk can be tens of
/// milliseconds. The deletes do not give way: their steps are transactions, which an
/// interrupt would end under the connection's feet (see `Housekeeping::preemptible`).
const MOST_GIVEN_WAY: u32 = 8;

/// How long one step should hold the write lock, and its checkpoint take to write its
/// pages back (see [`StepSize`]). Measured with 32 writers committing
/// (`cargo bench --bench retention`): batches of 500 delivered events held it about
/// 50 ms, and the writers' p99 commit went from 12 ms to 105 ms.
const HOLD_TARGET: Duration = Duration::from_millis(4);

/// The fewest rows a delete step is shrunk to. A step's hold has a part no size
/// takes away (the commit; on a busy disk, tens of milliseconds): shrinking further only
/// makes the pass crawl, one row per step, without shortening any hold.
const LEAST_STEP: u32 = 16;

/// The size of the next write step: shrunk in proportion when a step held the lock, or
/// its checkpoint wrote back, longer than [`HOLD_TARGET`] (to [`LEAST_STEP`] at the
/// least), doubled after a full step whose hold and writeback both took under half of
/// it, never above the configured most.
///
/// The writeback counts because the deletes of attempts and intervals each touch an
/// index by agent in ~one scattered page a row: measured with the retention benchmark's
/// 32 writers, steps sized by their hold alone (about 410 rows, p90 3.7 ms) wrote back
/// about 830 log frames each in p90 10 ms, and while they did, the writers' own part of
/// a commit (its sync queued behind the checkpoint's) rose from p99 about 2 to 7 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StepSize {
    size: u32,
    most: u32,
}

impl StepSize {
    /// Starts small: the first step of a kind is not allowed a long hold to learn from.
    fn new(most: u32) -> StepSize {
        let most = most.max(1);
        StepSize {
            size: most.min(32),
            most,
        }
    }

    fn after(&mut self, step: pruning::RetentionStep) {
        // What the engine's commits meet: the hold, which they wait for, then the
        // checkpoint writing the step's pages back, which their own syncs queue behind.
        let cost = step.held.max(step.wrote_back.took);
        if cost > HOLD_TARGET {
            let scaled = u128::from(self.size) * HOLD_TARGET.as_micros() / cost.as_micros().max(1);
            self.size = u32::try_from(scaled)
                .unwrap_or(u32::MAX)
                .max(LEAST_STEP.min(self.most));
        } else if cost < HOLD_TARGET / 2 && step.done >= u64::from(self.size) {
            self.size = self.size.saturating_mul(2).min(self.most);
        }
    }
}

/// How long the pass rests between two steps: long while the engine writes (see
/// [`BUSY_REST`]), as long as the step took while it does not, so a pass over an idle
/// database (at night, or a backlog after an upgrade) is not slowed when nobody waits.
struct Pace {
    /// [`Store::writes_begun`] when the last rest began.
    seen: u64,
}

impl Pace {
    fn new(store: &Store) -> Pace {
        Pace {
            seen: store.writes_begun(),
        }
    }

    /// Rests after a step that took `took` (from its start to now).
    async fn rest(&mut self, store: &Store, took: Duration) {
        tokio::time::sleep(self.next(store.writes_begun(), took)).await;
    }

    /// The rest after a step that took `took`, `writes` being [`Store::writes_begun`]
    /// now: [`BUSY_REST`] times as long when the engine began a write since the last rest
    /// began, as long otherwise; [`MIN_PAUSE`] at the least.
    fn next(&mut self, writes: u64, took: Duration) -> Duration {
        let factor = if writes == self.seen { 1 } else { BUSY_REST };
        self.seen = writes;
        (took * factor).max(MIN_PAUSE)
    }
}

/// Databases up to this size are converted to incremental vacuum at start; larger ones
/// are left to `wfmd migrate`, as the one-time rebuild holds the write lock throughout.
const CONVERT_AT_START_BYTES: u64 = 64 * 1024 * 1024;

/// What one pass removed, by kind (kinds with nothing to remove are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub removed: Vec<(Kind, u64)>,
    /// Bytes the file shrank by.
    pub shrunk_bytes: u64,
    /// What the pass spent its time on, in order: each kind with an age, then the
    /// vacuum when the file had free pages.
    pub parts: Vec<PassPart>,
}

/// One part of a pass: a kind's batches (with its rollups), or the vacuum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassPart {
    /// The kind's `[retention]` key, or `vacuum`.
    pub name: &'static str,
    pub started: Instant,
    pub took: Duration,
    /// Its write steps, and how long they held the write lock: the 90th percentile
    /// and the longest (what the engine's commits may have waited for).
    pub steps: usize,
    pub hold_p90: Duration,
    pub longest_hold: Duration,
    /// Of its steps, those interrupted and undone for an engine write (vacuum steps).
    pub gave_way: usize,
    /// What its checkpoints wrote back beside the engine's commits: the log frames a
    /// step's checkpoint copied (median) and how long it took (90th percentile).
    pub frames_p50: u64,
    pub writeback_p90: Duration,
}

impl PassPart {
    fn new(name: &'static str, started: Instant, steps: &[pruning::RetentionStep]) -> PassPart {
        fn nth<T: Ord + Copy + Default>(mut values: Vec<T>, per_ten: usize) -> T {
            values.sort_unstable();
            values
                .get(values.len() * per_ten / 10)
                .copied()
                .unwrap_or_default()
        }
        let holds = || steps.iter().map(|s| s.held);
        let wrote_back = steps.iter().filter(|s| !s.gave_way).map(|s| s.wrote_back);
        PassPart {
            name,
            started,
            took: started.elapsed(),
            steps: steps.len(),
            hold_p90: nth(holds().collect(), 9),
            longest_hold: holds().max().unwrap_or_default(),
            gave_way: steps.iter().filter(|s| s.gave_way).count(),
            frames_p50: nth(wrote_back.clone().map(|w| w.frames).collect(), 5),
            writeback_p90: nth(wrote_back.map(|w| w.took).collect(), 9),
        }
    }
}

impl PassReport {
    pub fn removed(&self, kind: Kind) -> u64 {
        self.removed
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

/// The background pruner and checkpoint publisher.
#[derive(Clone, Debug)]
pub struct Retention {
    store: Store,
    config: RetentionConfig,
    checkpoint_interval: Duration,
    /// Set: completed days are rolled up before their raw records go (see
    /// [`Retention::with_rollups`]), judging adherence with the tenant's rules.
    rollups: Option<JudgingHandle>,
}

impl Retention {
    pub fn new(store: Store, retention: &RetentionConfig, audit: &AuditConfig) -> Retention {
        Retention {
            store,
            config: retention.clone(),
            checkpoint_interval: audit.checkpoint_interval,
            rollups: None,
        }
    }

    /// Before a pass removes state intervals or attempts, it stores the daily analytics
    /// rollup of every completed day they belong to, so day and week history queries
    /// still answer in full after the raw records are gone.
    pub fn with_rollups(self, judging: JudgingHandle) -> Retention {
        Retention {
            rollups: Some(judging),
            ..self
        }
    }

    /// Rolls up the completed days before `cutoff` that have raw records and no rollup.
    async fn roll_up_before(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let Some(judging) = &self.rollups else {
            return Ok(());
        };
        let Some(oldest) = pruning::oldest_raw_record(&self.store).await? else {
            return Ok(());
        };
        const DAY_MS: i64 = 86_400_000;
        let from_day = oldest.div_euclid(DAY_MS) * DAY_MS;
        let to_day = (crate::store::to_ms(cutoff).div_euclid(DAY_MS) + 1) * DAY_MS;
        let computed =
            history::ensure_rollups(&self.store, from_day, to_day, now, &judging.current()).await?;
        if computed > 0 {
            tracing::info!(days = computed, "analytics days rolled up before retention");
        }
        Ok(())
    }

    /// The age configured for `kind`, `None` when it is kept forever.
    fn age(&self, kind: Kind) -> Option<Duration> {
        let c = &self.config;
        match kind {
            Kind::OutboxDelivered => c.outbox_delivered,
            Kind::OutboxDead => c.outbox_dead,
            Kind::WebhookAttempts => c.webhook_attempts,
            Kind::Attempts => c.attempts,
            Kind::Intervals => c.intervals,
            Kind::Samples => c.samples,
            Kind::BulkJobs => c.bulk_jobs,
            Kind::RuleFirings => c.rule_firings,
            Kind::AnalyticsJobs => c.analytics_jobs,
            Kind::Audit => c.audit,
        }
    }

    /// Runs a pass every `retention.interval` (the first one an interval after start)
    /// and checkpoints every `audit.checkpoint_interval` after the last published
    /// checkpoint (so restarts do not delay it), until `cancel`; a batch in progress
    /// finishes first.
    pub async fn run(self, cancel: CancellationToken) {
        self.convert_if_small().await;
        let mut next_prune = tokio::time::Instant::now() + self.config.interval;
        let mut next_checkpoint = self.first_checkpoint_due().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(next_checkpoint) => {
                    match self.checkpoint(Utc::now()).await {
                        Ok(Some(row)) => tracing::info!(
                            entry = row.seq, hash = %row.hash, "audit checkpoint published"
                        ),
                        Ok(None) => {}
                        Err(error) => tracing::error!(%error, "audit checkpoint failed"),
                    }
                    next_checkpoint = tokio::time::Instant::now() + self.checkpoint_interval;
                }
                () = tokio::time::sleep_until(next_prune) => {
                    match self.prune(Utc::now(), &cancel).await {
                        Ok(report) if !report.removed.is_empty() => tracing::info!(
                            removed = ?report.removed, shrunk_bytes = report.shrunk_bytes,
                            parts = ?report.parts.iter()
                                .map(|p| (
                                    p.name, p.took, p.steps, p.hold_p90, p.longest_hold,
                                    p.writeback_p90,
                                ))
                                .collect::<Vec<_>>(),
                            "retention pass done"
                        ),
                        Ok(_) => {}
                        Err(error) => tracing::error!(%error, "retention pass failed"),
                    }
                    next_prune = tokio::time::Instant::now() + self.config.interval;
                }
            }
        }
    }

    /// When the next checkpoint is due: an interval after the last published one (now,
    /// if that is past), or an interval from now when there is none.
    async fn first_checkpoint_due(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let last = checkpoints::latest_published(self.store.reader()).await;
        match last {
            Ok(Some(row)) => {
                let since = Utc::now() - crate::store::from_ms(row.at);
                let since = since.to_std().unwrap_or_default();
                now + self.checkpoint_interval.saturating_sub(since)
            }
            _ => now + self.checkpoint_interval,
        }
    }

    /// Records and publishes a checkpoint of the audit chain's head, when entries were
    /// added since the last one.
    pub async fn checkpoint(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<CheckpointRow>, CheckpointError> {
        let row = checkpoints::publish(&self.store, now).await;
        match &row {
            Ok(Some(row)) => {
                metrics::gauge!(AUDIT_CHECKPOINT_ENTRY).set(row.seq as f64);
            }
            Ok(None) => {}
            Err(_) => metrics::counter!(AUDIT_CHECKPOINT_FAILURES_TOTAL).increment(1),
        }
        row
    }

    /// One pass as of `now`: every kind with an age, batch by batch, then the vacuum.
    /// Stops early (after the batch in progress) when `cancel` fires. A kind that fails
    /// (audit entries that do not verify) does not stop the others.
    pub async fn prune(
        &self,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<PassReport, PruneError> {
        let mut report = PassReport::default();
        let mut failure = None;
        let (size_before, _) = pruning::size(&self.store).await?;
        for kind in Kind::ALL {
            let Some(age) = self.age(kind) else { continue };
            let Ok(age) = chrono::Duration::from_std(age) else {
                continue;
            };
            let part_started = Instant::now();
            let mut cutoff = now - age;
            let rolled_up = matches!(kind, Kind::Attempts | Kind::Intervals);
            if rolled_up && self.rollups.is_some() {
                // With an age under a day, records of a day not over yet would go, and
                // its rollup would later be made from what was left of it.
                cutoff = cutoff.min(history::first_unfinished_day(now));
            }
            if rolled_up && let Err(error) = self.roll_up_before(cutoff, now).await {
                // Without the rollups, day figures of these days would be lost with them.
                tracing::error!(kind = %kind, %error, "retention skips this kind: rollups failed");
                failure = Some(error.into());
                continue;
            }
            let mut removed = 0;
            let mut steps = Vec::new();
            let mut size = StepSize::new(self.config.batch_size);
            let mut pace = Pace::new(&self.store);
            while !cancel.is_cancelled() {
                let started = Instant::now();
                let step = match pruning::prune_batch(&self.store, kind, cutoff, size.size, now)
                    .await
                {
                    Ok(step) => step,
                    Err(error) => {
                        tracing::error!(kind = %kind, %error, "retention stopped for this kind");
                        failure = Some(error);
                        break;
                    }
                };
                steps.push(step);
                if step.done == 0 {
                    break;
                }
                size.after(step);
                removed += step.done;
                metrics::counter!(RETENTION_REMOVED_ROWS_TOTAL, "kind" => kind.as_str())
                    .increment(step.done);
                pace.rest(&self.store, started.elapsed()).await;
            }
            if removed > 0 {
                report.removed.push((kind, removed));
            }
            report
                .parts
                .push(PassPart::new(kind.as_str(), part_started, &steps));
        }
        // Also what an earlier pass freed and did not give back (it was stopped).
        let (_, free) = pruning::size(&self.store).await?;
        if free > 0 && !cancel.is_cancelled() {
            let started = Instant::now();
            let steps = self.vacuum(cancel).await?;
            report.parts.push(PassPart::new("vacuum", started, &steps));
        }
        let (size_after, _) = pruning::size(&self.store).await?;
        metrics::gauge!(DATABASE_SIZE_BYTES).set(size_after as f64);
        report.shrunk_bytes = size_before.saturating_sub(size_after);
        match failure {
            Some(error) if report.removed.is_empty() => Err(error),
            _ => Ok(report),
        }
    }

    /// Hands free pages back to the file system in small steps; returns the steps.
    async fn vacuum(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Vec<pruning::RetentionStep>, sqlx::Error> {
        let mut steps = Vec::new();
        if pruning::auto_vacuum(&self.store).await? != 2 {
            // Freed pages are reused by new rows; the file itself does not shrink.
            return Ok(steps);
        }
        let mut pace = Pace::new(&self.store);
        let mut in_a_row = 0;
        while !cancel.is_cancelled() {
            let started = Instant::now();
            let preemptible = in_a_row < MOST_GIVEN_WAY;
            let step = pruning::incremental_vacuum(&self.store, VACUUM_PAGES, preemptible).await?;
            steps.push(step);
            if step.gave_way {
                in_a_row += 1;
            } else if step.done == 0 {
                break;
            } else {
                in_a_row = 0;
            }
            pace.rest(&self.store, started.elapsed()).await;
        }
        Ok(steps)
    }

    /// Converts a small database made without incremental vacuum; warns about a large
    /// one, whose conversion would hold the write lock for long.
    async fn convert_if_small(&self) {
        let result = async {
            if pruning::auto_vacuum(&self.store).await? == 2 {
                return Ok(());
            }
            let (bytes, _) = pruning::size(&self.store).await?;
            if bytes <= CONVERT_AT_START_BYTES {
                pruning::convert_to_incremental(&self.store).await?;
                tracing::info!(bytes, "database converted to incremental vacuum");
            } else {
                tracing::warn!(
                    bytes,
                    "the database was created without incremental vacuum: pruned space is \
                     reused but the file does not shrink; stop wfmd and run `wfmd migrate` \
                     once to convert it"
                );
            }
            Ok::<(), sqlx::Error>(())
        };
        if let Err(error) = result.await {
            tracing::warn!(%error, "could not check the database's vacuum mode");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Done, on};

    #[test]
    fn the_pass_rests_long_while_the_engine_writes_and_as_long_as_a_step_while_it_does_not() {
        let mut pace = Pace { seen: 7 };
        let step = Duration::from_millis(20);
        assert_eq!(
            pace.next(7, step),
            step,
            "no engine write: as long as the step"
        );
        assert_eq!(pace.next(9, step), step * BUSY_REST, "the engine wrote");
        assert_eq!(
            pace.next(9, step),
            step,
            "writes counted once: nothing new since the last rest"
        );
        assert_eq!(pace.next(10, Duration::ZERO), MIN_PAUSE);
    }

    #[test]
    fn steps_shrink_to_hold_the_lock_about_the_target_and_grow_back_within_the_most() {
        let step = |done: u64, millis: u64| pruning::RetentionStep {
            done,
            held: Duration::from_millis(millis),
            gave_way: false,
            wrote_back: Default::default(),
        };
        let mut size = StepSize::new(500);
        assert_eq!(size.size, 32, "starts small");
        size.after(step(32, 1));
        size.after(step(64, 1));
        size.after(step(128, 1));
        assert_eq!(size.size, 256, "fast full steps double");
        size.after(step(100, 1));
        assert_eq!(
            size.size, 256,
            "a step that found fewer rows is no reason to grow"
        );
        size.after(step(256, 1));
        size.after(step(500, 1));
        assert_eq!(size.size, 500, "never above the most");
        size.after(step(500, 50));
        assert_eq!(size.size, 40, "a 50 ms hold shrinks it to 4/50");
        size.after(step(40, 3));
        assert_eq!(size.size, 40, "near the target it stays");
        size.after(step(40, 10_000));
        assert_eq!(size.size, LEAST_STEP, "a slow commit shrinks it no further");
        let mut size = StepSize::new(500);
        size.after(step(32, 1));
        let slow_writeback = pruning::RetentionStep {
            wrote_back: crate::store::WriteBack {
                frames: 800,
                took: Duration::from_millis(8),
            },
            ..step(64, 1)
        };
        size.after(slow_writeback);
        assert_eq!(
            size.size, 32,
            "a short hold whose checkpoint wrote back for 8 ms shrinks it to 4/8"
        );
        size.after(pruning::RetentionStep {
            wrote_back: crate::store::WriteBack {
                frames: 200,
                took: Duration::from_millis(3),
            },
            ..step(32, 1)
        });
        assert_eq!(
            size.size, 32,
            "nor grows while the writeback is near the target"
        );
        let mut tiny = StepSize::new(4);
        tiny.after(step(4, 10_000));
        assert_eq!(tiny.size, 4, "nor above a smaller configured most");
        assert_eq!(StepSize::new(0).size, 1);
    }
    use crate::store::audit::{self, NewEntry};
    use crate::store::outbox;
    use crate::store::testing::temp_store;

    async fn append(store: &Store, n: i64) {
        let mut tx = store.begin_write().await.unwrap();
        audit::append(
            &mut tx,
            &NewEntry {
                at: crate::store::from_ms(1_790_000_000_000 + n),
                actor: "api",
                action: "transition.succeeded",
                agent_id: Some("u_001"),
                subject_id: None,
                detail: serde_json::json!({ "n": n }),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// The `audit.checkpoint` events' data, oldest first, once there are `n` of them.
    async fn checkpoint_events(store: &Store, n: usize) -> Vec<serde_json::Value> {
        let mut events: Vec<serde_json::Value> = Vec::new();
        let came = crate::store::testing::holds_within(Duration::from_secs(10), async || {
            events = outbox::after(store.reader(), 0, 100)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.event_type == "audit.checkpoint")
                .map(|e| {
                    serde_json::from_str::<serde_json::Value>(&e.payload).unwrap()["data"].clone()
                })
                .collect();
            events.len() >= n
        })
        .await;
        assert!(came, "{n} checkpoints expected, got {events:?}");
        events
    }

    /// Leaves the pages of `rows` kilobyte-sized intervals free, as a pass stopped after
    /// its batches and before its vacuum does; returns the file's size and free bytes.
    async fn leave_free_pages(store: &Store, now: DateTime<Utc>, rows: i64) -> (u64, u64) {
        let old = crate::store::to_ms(now - chrono::Duration::days(500));
        let mut tx = store.begin_write().await.unwrap();
        on!(tx, |c| sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
             INSERT INTO state_intervals (agent_id, state, reason, origin, started_at, ended_at)
             SELECT 'u_' || i, 'NOT_READY', hex(zeroblob(500)), 'api', $1, $1 + 1000 FROM n",
        )
        .bind(old)
        .bind(rows)
        .execute(c)
        .await
        .map(Done::from))
        .unwrap();
        tx.commit().await.unwrap();
        let cutoff = now - chrono::Duration::days(400);
        let step = pruning::prune_batch(store, Kind::Intervals, cutoff, 10_000, now)
            .await
            .unwrap();
        assert_eq!(step.done, u64::try_from(rows).unwrap());
        pruning::size(store).await.unwrap()
    }

    #[tokio::test]
    async fn a_pass_with_nothing_to_remove_gives_back_what_a_stopped_pass_freed() {
        let (store, _dir) = temp_store().await;
        let now = crate::store::from_ms(1_790_000_000_000);
        let (size_before, free_before) = leave_free_pages(&store, now, 2000).await;
        assert!(free_before > 100 * 4096, "{free_before} bytes free");

        let config = crate::config::Config::default();
        let retention = Retention::new(store.clone(), &config.retention, &config.audit);
        let report = retention
            .prune(now, &CancellationToken::new())
            .await
            .unwrap();
        assert!(
            report.removed.is_empty(),
            "nothing left to remove: {report:?}"
        );
        let vacuum = report.parts.iter().find(|part| part.name == "vacuum");
        let vacuum = vacuum.unwrap_or_else(|| panic!("{report:?}"));
        // Each step hands back `VACUUM_PAGES` (16), and over 100 were free.
        assert!(vacuum.steps >= 2, "{vacuum:?}");
        assert!(
            Duration::ZERO < vacuum.hold_p90 && vacuum.hold_p90 <= vacuum.longest_hold,
            "{vacuum:?}"
        );
        let (size_after, free_after) = pruning::size(&store).await.unwrap();
        assert_eq!(free_after, 0);
        assert_eq!(report.shrunk_bytes, size_before - size_after);
        assert!(report.shrunk_bytes >= free_before, "{report:?}");
    }

    #[tokio::test]
    async fn the_vacuum_gives_way_to_engine_writes_and_still_finishes_when_they_never_stop() {
        let (store, _dir) = temp_store().await;
        let now = crate::store::from_ms(1_790_000_000_000);
        let (_, free_before) = leave_free_pages(&store, now, 300).await;
        assert!(free_before > 3 * 16 * 4096, "{free_before} bytes free");
        // One engine write after another: whenever the pass holds the turn, the next
        // one waits for it.
        let stop = CancellationToken::new();
        let writer = tokio::spawn({
            let (store, stop) = (store.clone(), stop.clone());
            async move {
                while !stop.is_cancelled() {
                    store.begin_write().await.unwrap().commit().await.unwrap();
                }
            }
        });

        let config = crate::config::Config::default();
        let retention = Retention::new(store.clone(), &config.retention, &config.audit);
        let cancel = CancellationToken::new();
        let report = tokio::time::timeout(Duration::from_secs(60), retention.prune(now, &cancel))
            .await
            .expect("steps that run whoever waits let the pass end")
            .unwrap();
        stop.cancel();
        writer.await.unwrap();

        let vacuum = report.parts.iter().find(|part| part.name == "vacuum");
        let vacuum = vacuum.unwrap_or_else(|| panic!("{report:?}"));
        assert!(
            vacuum.gave_way >= MOST_GIVEN_WAY as usize,
            "steps gave way to the waiting writes: {vacuum:?}"
        );
        assert!(vacuum.gave_way < vacuum.steps, "{vacuum:?}");
        assert_eq!(pruning::size(&store).await.unwrap().1, 0, "all given back");
    }

    #[tokio::test]
    async fn the_daemon_publishes_a_checkpoint_each_interval_when_entries_were_added() {
        let (store, _dir) = temp_store().await;
        append(&store, 1).await;
        append(&store, 2).await;
        let retention = Retention {
            store: store.clone(),
            config: RetentionConfig::default(),
            checkpoint_interval: Duration::from_millis(20),
            rollups: None,
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(retention.run(cancel.clone()));
        let first = checkpoint_events(&store, 1).await;
        assert_eq!(first[0]["entry_id"], 2);
        assert_eq!(first[0]["count"], 2);
        let head = audit::head(store.reader()).await.unwrap().unwrap().0;
        assert_eq!(first[0]["hash"], head.hash);
        append(&store, 3).await;
        let both = checkpoint_events(&store, 2).await;
        assert_eq!(both[1]["entry_id"], 3);
        cancel.cancel();
        task.await.unwrap();
        // Intervals without new entries published nothing: one event per new head.
        let events = checkpoint_events(&store, 2).await;
        assert_eq!(events.len(), 2, "{events:?}");
    }
}
