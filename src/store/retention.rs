//! Retention in the store: removing records older than a cutoff in small batches, the
//! horizons that say how far back each kind is complete, and giving freed pages back to
//! the file system.
//!
//! Each [`prune_batch`] is one short `BEGIN IMMEDIATE` transaction of at most `limit`
//! rows, so writers of the engine wait for one batch at most, never for a whole pass. It
//! runs on the housekeeping connection ([`Store::housekeeping`]), in the write
//! connection's turn and without a flush of its own.
//! A batch that removed rows moves its kind's horizon to the cutoff in the same
//! transaction: reports asked about an earlier window can then say "not kept before"
//! instead of counting what is left.

use crate::store::{AsConn, Backend, Pool, execute, fetch, fetch_scalar};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::audit::checkpoints::{self, CheckpointError};
use super::{Housekeeping, Store, WriteBack, from_ms, is_interrupt, to_ms};
use crate::domain::state::string_names;

/// A kind of record with its own age in `[retention]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    OutboxDelivered,
    OutboxDead,
    WebhookAttempts,
    Attempts,
    Intervals,
    Samples,
    BulkJobs,
    RuleFirings,
    AnalyticsJobs,
    Audit,
}

impl Kind {
    /// Every kind, in the order a pass prunes them (outbox events before the attempts
    /// of their deliveries, the audit log last).
    pub const ALL: [Kind; 10] = [
        Kind::OutboxDelivered,
        Kind::OutboxDead,
        Kind::WebhookAttempts,
        Kind::Attempts,
        Kind::Intervals,
        Kind::Samples,
        Kind::BulkJobs,
        Kind::RuleFirings,
        Kind::AnalyticsJobs,
        Kind::Audit,
    ];

    /// The `[retention]` key, also the name in `retention_horizons` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OutboxDelivered => "outbox_delivered",
            Kind::OutboxDead => "outbox_dead",
            Kind::WebhookAttempts => "webhook_attempts",
            Kind::Attempts => "attempts",
            Kind::Intervals => "intervals",
            Kind::Samples => "samples",
            Kind::BulkJobs => "bulk_jobs",
            Kind::RuleFirings => "rule_firings",
            Kind::AnalyticsJobs => "analytics_jobs",
            Kind::Audit => "audit",
        }
    }
}

string_names!(Kind);

/// Why a batch could not be pruned.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    /// The audit entries to prune do not verify: they are kept as evidence.
    #[error("audit entries are not pruned: {0}")]
    Audit(CheckpointError),
}

impl From<CheckpointError> for PruneError {
    fn from(error: CheckpointError) -> Self {
        match error {
            CheckpointError::Store(e) => PruneError::Store(e),
            other => PruneError::Audit(other),
        }
    }
}

/// Removes up to `limit` rows of `kind` older than `cutoff` in one write transaction;
/// returns how many rows it removed (0: nothing of this kind is older).
pub async fn prune_batch(
    store: &Store,
    kind: Kind,
    cutoff: DateTime<Utc>,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<RetentionStep, PruneError> {
    let cutoff_ms = to_ms(cutoff);
    let limit = i64::from(limit.max(1));
    let mut housekeeping = store.housekeeping().await?;
    let locked = Instant::now();
    let mut tx = housekeeping.begin().await?;
    let (removed, kept_from) = match kind {
        Kind::OutboxDelivered | Kind::OutboxDead => (
            prune_outbox(&mut tx, kind == Kind::OutboxDead, cutoff_ms, limit).await?,
            cutoff_ms,
        ),
        Kind::WebhookAttempts | Kind::Attempts | Kind::Intervals => (
            delete_rows(&mut tx, kind, cutoff_ms, limit).await?,
            cutoff_ms,
        ),
        Kind::BulkJobs | Kind::RuleFirings => (
            prune_parents(&mut tx, kind, cutoff_ms, limit).await?,
            cutoff_ms,
        ),
        Kind::AnalyticsJobs => (
            prune_analytics_jobs(&mut tx, cutoff_ms, limit).await?,
            cutoff_ms,
        ),
        Kind::Samples => (prune_samples(&mut tx, cutoff_ms, limit).await?, cutoff_ms),
        Kind::Audit => prune_audit(&mut tx, cutoff_ms, limit, now).await?,
    };
    if removed > 0 {
        execute!(
            tx,
            "INSERT INTO retention_horizons (kind, kept_from, pruned_rows, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind) DO UPDATE SET
                 kept_from = CASE WHEN excluded.kept_from > retention_horizons.kept_from
                     THEN excluded.kept_from ELSE retention_horizons.kept_from END,
                 pruned_rows = retention_horizons.pruned_rows + excluded.pruned_rows,
                 updated_at = excluded.updated_at",
            kind.as_str(),
            kept_from,
            i64::try_from(removed).unwrap_or(i64::MAX),
            to_ms(now)
        )?;
    }
    tx.commit().await?;
    let held = locked.elapsed();
    let wrote_back = housekeeping.finish().await?;
    Ok(RetentionStep {
        done: removed,
        held,
        gave_way: false,
        wrote_back,
    })
}

/// What one write step of retention did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionStep {
    /// Rows removed (by a batch) or free pages left (after a vacuum step).
    pub done: u64,
    /// How long it held the write lock (from `BEGIN IMMEDIATE` to after the commit).
    pub held: Duration,
    /// It was interrupted for an engine write and undone (a preemptible vacuum step);
    /// `done` is then 0 and says nothing.
    pub gave_way: bool,
    /// Its checkpoint after giving the lock back (none when it gave way).
    pub wrote_back: WriteBack,
}

/// Up to `limit` rows of a kind kept one row per record, nothing hanging from it:
/// webhook attempts, transition attempts and state intervals.
async fn delete_rows(
    conn: &mut impl AsConn,
    kind: Kind,
    cutoff_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let (table, older) = match kind {
        Kind::WebhookAttempts => ("webhook_attempts", "attempted_at < $1"),
        Kind::Attempts => ("transition_attempts", "requested_at < $1"),
        // The open interval (ended_at NULL) is never old, however long ago it began.
        Kind::Intervals => ("state_intervals", "ended_at IS NOT NULL AND ended_at < $1"),
        other => unreachable!("{other} is not kept one row per record"),
    };
    let sql =
        format!("DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {older} LIMIT $2)");
    Ok(execute!(conn, sqlx::AssertSqlSafe(sql), cutoff_ms, limit)?.rows_affected())
}

/// The time of the oldest state interval or transition attempt (Unix ms), `None` when
/// there is neither.
pub async fn oldest_raw_record(store: &Store) -> Result<Option<i64>, sqlx::Error> {
    fetch_scalar!(
        store.reader(),
        one,
        "SELECT MIN(at) FROM (SELECT MIN(started_at) AS at FROM state_intervals
                             UNION ALL SELECT MIN(requested_at) FROM transition_attempts) AS oldest"
    )
}

/// Outbox events past the cutoff that every endpoint has settled (none pending), with
/// their deliveries and attempts; `dead` picks those with a dead delivery, otherwise
/// those without. Events not yet fanned out are never touched.
async fn prune_outbox(
    conn: &mut impl AsConn,
    dead: bool,
    cutoff_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let seqs: Vec<i64> = fetch_scalar!(
        conn,
        all,
        "SELECT e.seq FROM outbox_events e
         WHERE e.created_at < $1
           AND e.seq <= (SELECT last_event_seq FROM webhook_cursor WHERE id = 1)
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                           WHERE d.event_seq = e.seq AND d.status = 'pending')
           AND $2 = EXISTS (SELECT 1 FROM webhook_deliveries d
                            WHERE d.event_seq = e.seq AND d.status = 'dead')
         ORDER BY e.seq LIMIT $3",
        cutoff_ms,
        dead,
        limit
    )?;
    if seqs.is_empty() {
        return Ok(0);
    }
    delete_listed(
        conn,
        &json!(seqs).to_string(),
        &[
            "DELETE FROM webhook_attempts WHERE delivery_id IN
                 (SELECT id FROM webhook_deliveries
                  WHERE event_seq IN (SELECT CAST(value AS BIGINT) FROM json_each($1)))",
            "DELETE FROM webhook_deliveries WHERE event_seq IN (SELECT CAST(value AS BIGINT) FROM json_each($1))",
            "DELETE FROM outbox_events WHERE seq IN (SELECT CAST(value AS BIGINT) FROM json_each($1))",
        ],
    )
    .await
}

/// Runs each statement with `ids` (a JSON array) bound to its one parameter, children
/// first, and answers the rows the last statement (the parents') removed.
async fn delete_listed(
    conn: &mut impl AsConn,
    ids: &str,
    statements: &[&'static str],
) -> Result<u64, sqlx::Error> {
    let mut removed = 0;
    for sql in statements {
        removed = execute!(conn, *sql, ids)?.rows_affected();
    }
    Ok(removed)
}

/// Rows of a job or firing's children that count as one "row" of the batch budget: a
/// 2,000-agent job is removed with its items in one transaction, a few jobs at a time.
const CHILDREN_PER_PARENT: i64 = 50;

/// Finished bulk jobs (with their items) or rule firings (with their per-agent rows)
/// past the cutoff: at most `limit / CHILDREN_PER_PARENT` of them, so a batch stays
/// about `limit` rows.
async fn prune_parents(
    conn: &mut impl AsConn,
    kind: Kind,
    cutoff_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    // `select` binds the cutoff and how many, and answers the parents' ids as one JSON
    // array; `deletes` remove them, children first.
    let (select, deletes): (&'static str, &[&'static str]) = match kind {
        // A job that a kept job reverts stays until that one goes.
        Kind::BulkJobs => (
            "SELECT json_group_array(id) FROM (SELECT id FROM bulk_jobs j
             WHERE j.finished_at IS NOT NULL AND j.finished_at < $1
               AND j.status IN ('completed', 'cancelled')
               AND NOT EXISTS (SELECT 1 FROM bulk_jobs r WHERE r.reverts_job_id = j.id)
             LIMIT $2) AS listed",
            &[
                "DELETE FROM bulk_items WHERE job_id IN (SELECT value FROM json_each($1))",
                "DELETE FROM bulk_jobs WHERE id IN (SELECT value FROM json_each($1))",
            ],
        ),
        // Each rule's latest firing stays: the scheduler reads it to know which slot
        // comes next.
        Kind::RuleFirings => (
            "SELECT json_group_array(id) FROM (SELECT id FROM rule_firings f
             WHERE f.started_at < $1 AND f.outcome <> 'running'
               AND f.slot_at < (SELECT MAX(g.slot_at) FROM rule_firings g WHERE g.rule = f.rule)
             LIMIT $2) AS listed",
            &[
                "DELETE FROM rule_firing_agents WHERE firing_id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))",
                "DELETE FROM rule_firings WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))",
            ],
        ),
        other => unreachable!("{other} has no children"),
    };
    let ids: String = fetch_scalar!(
        conn,
        one,
        select,
        cutoff_ms,
        (limit / CHILDREN_PER_PARENT).max(1)
    )?;
    if ids == "[]" {
        return Ok(0);
    }
    delete_listed(conn, &ids, deletes).await
}

/// Analytics jobs finished (completed or failed) before the cutoff, with their result
/// rows: up to `limit` result rows, then, budget left, the jobs they emptied. A job
/// with many rows thus goes over several batches, its rows first. Their audit entries
/// (`analytics.completed`, with the results' SHA-256) and `report.ready` events are not
/// touched: a downloaded file still verifies against the audit log.
async fn prune_analytics_jobs(
    conn: &mut impl AsConn,
    cutoff_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let results = execute!(
        conn,
        "DELETE FROM analytics_results WHERE (job_id, series, bucket) IN
             (SELECT r.job_id, r.series, r.bucket FROM analytics_jobs j
              JOIN analytics_results r ON r.job_id = j.id
              WHERE j.status IN ('completed', 'failed') AND j.finished_at < $1
              LIMIT $2)",
        cutoff_ms,
        limit
    )?
    .rows_affected();
    let left = limit - i64::try_from(results).unwrap_or(limit);
    if left <= 0 {
        return Ok(results);
    }
    let jobs = execute!(
        conn,
        "DELETE FROM analytics_jobs WHERE id IN
             (SELECT j.id FROM analytics_jobs j
              WHERE j.status IN ('completed', 'failed') AND j.finished_at < $1
                AND NOT EXISTS (SELECT 1 FROM analytics_results r WHERE r.job_id = j.id)
              LIMIT $2)",
        cutoff_ms,
        left
    )?
    .rows_affected();
    Ok(results + jobs)
}

/// Metric samples past the cutoff.
/// The batch ends at the time of its `limit`-th oldest sample, as the table has no
/// rowids to pick rows by.
async fn prune_samples(
    conn: &mut impl AsConn,
    cutoff_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let bound: Option<i64> = fetch_scalar!(
        conn,
        optional,
        "SELECT sampled_at FROM metric_samples WHERE sampled_at < $1 ORDER BY sampled_at
         LIMIT 1 OFFSET $2",
        cutoff_ms,
        limit
    )?;
    // Past the `limit`-th sample, stop just after its time (so equal times go together).
    let upto = bound.map_or(cutoff_ms, |at| (at + 1).min(cutoff_ms));
    Ok(execute!(
        conn,
        "DELETE FROM metric_samples WHERE sampled_at < $1",
        upto
    )?
    .rows_affected())
}

/// The oldest audit entries up to the newest checkpoint older than the cutoff, at most
/// `limit` of them: their last one is checkpointed first (after verifying them), so
/// verification starts there. Returns how many and the new horizon (just after the
/// last removed entry's time).
async fn prune_audit(
    conn: &mut impl AsConn,
    cutoff_ms: i64,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<(u64, i64), PruneError> {
    let boundary: Option<i64> = fetch_scalar!(
        conn,
        one,
        "SELECT MAX(seq) FROM audit_checkpoints WHERE published = 1 AND entry_at < $1",
        cutoff_ms
    )?;
    let first: Option<i64> = fetch_scalar!(conn, one, "SELECT MIN(seq) FROM audit_log")?;
    let (Some(boundary), Some(first)) = (boundary, first) else {
        return Ok((0, cutoff_ms));
    };
    if boundary < first {
        return Ok((0, cutoff_ms));
    }
    let last = boundary.min(first + limit - 1);
    checkpoints::record(conn, last, now, false).await?;
    let entry_at: i64 = fetch_scalar!(
        conn,
        one,
        "SELECT entry_at FROM audit_checkpoints WHERE seq = $1",
        last
    )?;
    let removed = execute!(conn, "DELETE FROM audit_log WHERE seq <= $1", last)?.rows_affected();
    // Retention's own checkpoints below the new start are replaced by this one.
    execute!(
        conn,
        "DELETE FROM audit_checkpoints WHERE seq < $1 AND published = 0",
        last
    )?;
    Ok((removed, entry_at + 1))
}

/// How far back each kind is complete: `kind -> kept_from`, for kinds pruned so far.
pub async fn horizons(pool: &Pool) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    let rows: Vec<(String, i64)> = fetch!(
        pool,
        all,
        "SELECT kind, kept_from FROM retention_horizons ORDER BY kind"
    )?;
    Ok(rows.into_iter().map(|(k, at)| (k, from_ms(at))).collect())
}

/// A window reaching back before what is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} are not kept before {}: retention (retention.{kind}) removed older ones; ask \
     for a window from then on",
    crate::time::rfc3339(*kept_from)
)]
pub struct NotKept {
    pub kind: &'static str,
    pub what: &'static str,
    pub kept_from: DateTime<Utc>,
}

/// `Err` naming the latest horizon among `kinds` when the window starting at `from`
/// reaches before it: some records of the window were removed.
pub async fn check_window(
    pool: &Pool,
    kinds: &[Kind],
    from: DateTime<Utc>,
) -> Result<Result<(), NotKept>, sqlx::Error> {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let latest: Option<(String, i64)> = fetch!(
        pool,
        optional,
        "SELECT kind, kept_from FROM retention_horizons
         WHERE kind IN (SELECT value FROM json_each($1)) AND kept_from > $2
         ORDER BY kept_from DESC LIMIT 1",
        json!(names).to_string(),
        to_ms(from)
    )?;
    Ok(match latest {
        None => Ok(()),
        Some((name, kept_from)) => {
            let kind = kinds
                .iter()
                .copied()
                .find(|k| k.as_str() == name)
                .unwrap_or(Kind::Intervals);
            Err(NotKept {
                kind: kind.as_str(),
                what: describe(kind),
                kept_from: from_ms(kept_from),
            })
        }
    })
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::OutboxDelivered | Kind::OutboxDead => "webhook events",
        Kind::WebhookAttempts => "webhook attempts",
        Kind::Attempts => "transition attempts",
        Kind::Intervals => "state intervals",
        Kind::Samples => "metric samples",
        Kind::BulkJobs => "bulk jobs",
        Kind::RuleFirings => "rule firings",
        Kind::AnalyticsJobs => "analytics jobs",
        Kind::Audit => "audit entries",
    }
}

/// `PRAGMA auto_vacuum`: 0 none, 1 full, 2 incremental. PostgreSQL's answer is 2: its
/// own autovacuum makes the room of pruned rows reusable, step by step, and there is
/// nothing to convert.
pub async fn auto_vacuum(store: &Store) -> Result<i64, sqlx::Error> {
    if store.backend() == Backend::Postgres {
        return Ok(2);
    }
    fetch_scalar!(store.reader(), one, "PRAGMA auto_vacuum")
}

/// The database's size in bytes (pages in use and free), and its free pages' bytes.
/// On PostgreSQL, its tables' size ([`Store::size_bytes`]) and nothing free: the room
/// of pruned rows is PostgreSQL's to reuse, not wfmd's to give back.
pub async fn size(store: &Store) -> Result<(u64, u64), sqlx::Error> {
    if store.backend() == Backend::Postgres {
        return Ok((u64::try_from(store.size_bytes().await?).unwrap_or(0), 0));
    }
    let pages: i64 = fetch_scalar!(store.reader(), one, "PRAGMA page_count")?;
    let free: i64 = fetch_scalar!(store.reader(), one, "PRAGMA freelist_count")?;
    let page_size: i64 = fetch_scalar!(store.reader(), one, "PRAGMA page_size")?;
    let bytes = |n: i64| u64::try_from(n * page_size).unwrap_or(0);
    Ok((bytes(pages), bytes(free)))
}

/// Gives up to `pages` free pages back to the file system (one short write); returns
/// how many free pages remain. A `preemptible` step gives way to an engine write that
/// waits for the turn: it is undone and reports [`RetentionStep::gave_way`].
pub async fn incremental_vacuum(
    store: &Store,
    pages: u32,
    preemptible: bool,
) -> Result<RetentionStep, sqlx::Error> {
    let mut housekeeping = store.housekeeping().await?;
    let mut step = vacuum_step(&mut housekeeping, pages, preemptible).await?;
    if !step.gave_way {
        step.wrote_back = housekeeping.finish().await?;
    }
    // Else dropped at once: the engine waits, and there is nothing to checkpoint.
    Ok(step)
}

async fn vacuum_step(
    housekeeping: &mut Housekeeping,
    pages: u32,
    preemptible: bool,
) -> Result<RetentionStep, sqlx::Error> {
    let locked = Instant::now();
    let armed = preemptible.then(|| housekeeping.preemptible());
    // One statement in autocommit: interrupted, SQLite rolls it back whole.
    let vacuumed = execute!(
        housekeeping,
        sqlx::AssertSqlSafe(format!("PRAGMA incremental_vacuum({pages})"))
    );
    drop(armed);
    match vacuumed {
        Err(error) if is_interrupt(&error) => {
            return Ok(RetentionStep {
                done: 0,
                held: locked.elapsed(),
                gave_way: true,
                wrote_back: WriteBack::default(),
            });
        }
        vacuumed => vacuumed?,
    };
    let free: i64 = fetch_scalar!(housekeeping, one, "PRAGMA freelist_count")?;
    Ok(RetentionStep {
        done: u64::try_from(free).unwrap_or(0),
        held: locked.elapsed(),
        gave_way: false,
        wrote_back: WriteBack::default(),
    })
}

/// Makes a database created without incremental vacuum able to shrink: sets the mode
/// and rebuilds the file once (`VACUUM`, which holds the write lock throughout).
pub async fn convert_to_incremental(store: &Store) -> Result<(), sqlx::Error> {
    let mut conn = store.writer().acquire().await?;
    execute!(conn, "PRAGMA auto_vacuum = INCREMENTAL")?;
    execute!(conn, "VACUUM")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::backends;
    use crate::store::testing::{fill_pages, temp_store, temp_store_on};
    use crate::store::{Done, on};
    use rstest_reuse::apply;

    #[tokio::test]
    async fn new_databases_vacuum_incrementally() {
        let (store, _dir) = temp_store().await;
        assert_eq!(auto_vacuum(&store).await.unwrap(), 2);
    }

    async fn freelist(conn: &mut impl AsConn) -> i64 {
        on!(conn, |c| sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(c)
            .await)
        .unwrap()
    }

    #[tokio::test]
    async fn a_preemptible_vacuum_step_gives_way_to_a_waiting_engine_write_and_undoes_itself() {
        use futures::FutureExt;

        let (store, _dir) = temp_store().await;
        let mut tx = store.begin_write().await.unwrap();
        fill_pages(&mut tx, 300).await;
        on!(tx, |c| sqlx::query("DELETE FROM filler")
            .execute(c)
            .await
            .map(Done::from))
        .unwrap();
        tx.commit().await.unwrap();
        let step = incremental_vacuum(&store, 16, true).await.unwrap();
        assert!(!step.gave_way, "nobody waits: it runs through");
        let free = i64::try_from(step.done).unwrap();
        assert!(free >= 200, "{free} pages free");

        let mut housekeeping = store.housekeeping().await.unwrap();
        assert!(
            store.begin_write().now_or_never().is_none(),
            "the turn is housekeeping's"
        );
        assert_eq!(
            store.writes_waiting(),
            0,
            "a write that stopped waiting is no longer counted"
        );
        let write = tokio::spawn({
            let store = store.clone();
            async move { store.begin_write().await.unwrap().commit().await.unwrap() }
        });
        crate::store::testing::eventually("the write never waited", async || {
            store.writes_waiting() > 0
        })
        .await;
        let step = vacuum_step(&mut housekeeping, 64, true).await.unwrap();
        assert!(step.gave_way, "{step:?}");
        assert_eq!(freelist(&mut housekeeping).await, free, "undone whole");
        let step = vacuum_step(&mut housekeeping, 64, false).await.unwrap();
        assert!(
            !step.gave_way,
            "not preemptible: it runs though a write waits"
        );
        assert_eq!(
            step.done,
            u64::try_from(free - 64).unwrap(),
            "the connection works on after an interrupt"
        );
        drop(housekeeping);
        tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .expect("the write goes ahead once the turn is given back")
            .unwrap();
        assert_eq!(store.writes_waiting(), 0);
    }

    #[apply(backends)]
    #[tokio::test]
    async fn analytics_jobs_go_only_once_finished_and_older_than_the_cutoff(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let old = 1_790_000_000_000_i64;
        let mut tx = store.begin_write().await.unwrap();
        for (id, status, finished) in [
            ("aq_done", "completed", Some(old)),
            ("aq_failed", "failed", Some(old)),
            ("aq_recent", "completed", Some(old + 10_000)),
            ("aq_running", "running", None),
        ] {
            on!(tx, |c| sqlx::query(
                "INSERT INTO analytics_jobs (id, source, spec, actor, status, created_at,
                     finished_at)
                 VALUES ($1, 'history', '{}', 'desk', $2, $3, $4)",
            )
            .bind(id)
            .bind(status)
            .bind(old - 1_000)
            .bind(finished)
            .execute(c)
            .await
            .map(Done::from))
            .unwrap();
            on!(tx, |c| sqlx::query(
                "INSERT INTO analytics_results (job_id, series, bucket, vals)
                 VALUES ($1, '{}', 1, '[1]'), ($1, '{}', 2, '[2]')",
            )
            .bind(id)
            .execute(c)
            .await
            .map(Done::from))
            .unwrap();
        }
        tx.commit().await.unwrap();
        let cutoff = from_ms(old + 5_000);
        let mut removed = 0;
        loop {
            let step = prune_batch(&store, Kind::AnalyticsJobs, cutoff, 3, cutoff)
                .await
                .unwrap();
            if step.done == 0 {
                break;
            }
            assert!(step.done <= 3, "at most a batch: {step:?}");
            removed += step.done;
        }
        assert_eq!(removed, 6, "two jobs and their four result rows");
        let left: Vec<(String, i64)> = on!(store.reader(), |c| sqlx::query_as(
            "SELECT j.id, (SELECT COUNT(*) FROM analytics_results r WHERE r.job_id = j.id)
             FROM analytics_jobs j ORDER BY j.id",
        )
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(
            left,
            [("aq_recent".to_owned(), 2), ("aq_running".to_owned(), 2)]
        );
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_horizon_refuses_earlier_windows_only(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let at = from_ms(1_790_000_000_000);
        let mut tx = store.begin_write().await.unwrap();
        for i in 0..3 {
            on!(tx, |c| sqlx::query(
                "INSERT INTO state_intervals (agent_id, state, origin, started_at, ended_at)
                 VALUES ('u_001', 'READY', 'api', $1, $2)",
            )
            .bind(to_ms(at) + i * 1000)
            .bind(to_ms(at) + i * 1000 + 500)
            .execute(c)
            .await
            .map(Done::from))
            .unwrap();
        }
        tx.commit().await.unwrap();
        let cutoff = at + chrono::Duration::milliseconds(1_600);
        assert_eq!(
            prune_batch(&store, Kind::Intervals, cutoff, 1, at)
                .await
                .unwrap()
                .done,
            1
        );
        assert_eq!(
            prune_batch(&store, Kind::Intervals, cutoff, 10, at)
                .await
                .unwrap()
                .done,
            1
        );
        assert_eq!(
            prune_batch(&store, Kind::Intervals, cutoff, 10, at)
                .await
                .unwrap()
                .done,
            0
        );
        let refused = check_window(store.reader(), &[Kind::Attempts, Kind::Intervals], at)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.kept_from, cutoff);
        assert!(
            refused
                .to_string()
                .starts_with("state intervals are not kept before "),
            "{refused}"
        );
        check_window(store.reader(), &[Kind::Intervals], cutoff)
            .await
            .unwrap()
            .unwrap();
        check_window(store.reader(), &[Kind::Attempts], at)
            .await
            .unwrap()
            .unwrap();
    }
}
