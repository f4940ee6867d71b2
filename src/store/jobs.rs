//! Bulk jobs and their items: one row per job, one per agent of the job.
//!
//! A job and all its items are inserted together when the job is accepted; the runner
//! then takes items (`started_at`: from then on they cannot be cancelled) and settles
//! each with its outcome. Writes take a connection (`AsConn`) so the engine composes
//! them with the audit entry and the `bulk.completed` event in one transaction.

use crate::store::{AsConn, Pool, execute, fetch, fetch_scalar};
use serde_json::json;
use sqlx::FromRow;

/// A stored job. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct BulkJobRow {
    pub id: String,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub target_state: Option<String>,
    pub reason: Option<String>,
    pub team: Option<String>,
    pub reverts_job_id: Option<String>,
    pub actor: String,
    /// `queued`, `running`, `completed` or `cancelled`.
    pub status: String,
    pub cancel_requested_at: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// `when_busy = "defer"`: how long an item's change waits for a busy agent (ms);
    /// `None`: `reject`.
    pub defer_for_ms: Option<i64>,
}

impl BulkJobRow {
    /// Whether the job has its final status.
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "cancelled")
    }
}

/// A stored item.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ItemRow {
    pub job_id: String,
    pub seq: i64,
    pub agent_id: String,
    pub target_state: String,
    pub reason: Option<String>,
    /// `pending`, `succeeded`, `unchanged`, `rejected`, `failed` or `cancelled`.
    pub outcome: String,
    pub violation: Option<String>,
    pub error: Option<String>,
    pub attempt_id: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: &'a str,
    pub target_state: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub team: Option<&'a str>,
    pub reverts_job_id: Option<&'a str>,
    pub actor: &'a str,
    pub created_at: i64,
    pub defer_for_ms: Option<i64>,
}

/// An item to insert: pending, or (`failed` with `error`) settled from the start, for
/// an agent a revert cannot put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub agent_id: String,
    pub target_state: String,
    pub reason: Option<String>,
    pub not_possible: Option<String>,
}

/// Counts of a job's items by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: i64,
    pub succeeded: i64,
    /// Settled without a platform call: the agent was seen in the target state already.
    pub unchanged: i64,
    pub rejected: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Waiting for a busy agent (`when_busy = "defer"`): not settled yet.
    pub deferred: i64,
}

impl Counts {
    pub fn total(&self) -> i64 {
        self.pending
            + self.deferred
            + self.succeeded
            + self.unchanged
            + self.rejected
            + self.failed
            + self.cancelled
    }
}

/// How an item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement<'a> {
    /// `succeeded`, `unchanged`, `rejected` or `failed`.
    pub outcome: &'a str,
    pub violation: Option<&'a str>,
    pub error: Option<&'a str>,
    pub attempt_id: Option<&'a str>,
}

const JOB_COLUMNS: &str = "id, idempotency_key, request_hash, target_state, reason, team, \
     reverts_job_id, actor, status, cancel_requested_at, created_at, started_at, finished_at, \
     defer_for_ms";

const ITEM_COLUMNS: &str = "job_id, seq, agent_id, target_state, reason, outcome, violation, \
     error, attempt_id, started_at, finished_at";

/// Inserts the job and its items (in request order) in the caller's transaction.
pub async fn insert(
    conn: &mut impl AsConn,
    job: &NewJob<'_>,
    items: &[NewItem],
) -> Result<(), sqlx::Error> {
    execute!(
        conn,
        "INSERT INTO bulk_jobs (id, idempotency_key, request_hash, target_state, reason, team,
                                reverts_job_id, actor, created_at, defer_for_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        job.id,
        job.idempotency_key,
        job.request_hash,
        job.target_state,
        job.reason,
        job.team,
        job.reverts_job_id,
        job.actor,
        job.created_at,
        job.defer_for_ms
    )?;
    // One statement whatever the number: a 10,000-agent job must not cost 10,000 round
    // trips inside the write lock.
    let rows: Vec<_> = items
        .iter()
        .enumerate()
        .map(|(seq, item)| {
            json!([
                seq,
                item.agent_id,
                item.target_state,
                item.reason,
                item.not_possible.as_ref().map(|_| "failed"),
                item.not_possible
            ])
        })
        .collect();
    let sql = crate::store::batched::for_backend(
        conn,
        "INSERT INTO bulk_items (job_id, seq, agent_id, target_state, reason, outcome, error,
                                 finished_at)
         SELECT $1, CAST(json_extract(value, '$[0]') AS BIGINT), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                COALESCE(json_extract(value, '$[4]'), 'pending'), json_extract(value, '$[5]'),
                CAST(CASE WHEN json_extract(value, '$[5]') IS NULL THEN NULL ELSE $2 END AS BIGINT)
         FROM json_each($3)"
            .to_owned(),
    );
    execute!(
        conn,
        sqlx::AssertSqlSafe(sql),
        job.id,
        job.created_at,
        serde_json::Value::Array(rows).to_string()
    )?;
    Ok(())
}

/// The job with this idempotency key, if any (read inside the accepting transaction).
pub async fn by_idempotency_key(
    conn: &mut impl AsConn,
    key: &str,
) -> Result<Option<BulkJobRow>, sqlx::Error> {
    fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM bulk_jobs WHERE idempotency_key = $1"
        )),
        key
    )
}

pub async fn get(pool: &Pool, id: &str) -> Result<Option<BulkJobRow>, sqlx::Error> {
    get_on(&mut pool.acquire().await?, id).await
}

/// [`get`] on a given connection (a transaction).
pub async fn get_on(conn: &mut impl AsConn, id: &str) -> Result<Option<BulkJobRow>, sqlx::Error> {
    fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM bulk_jobs WHERE id = $1")),
        id
    )
}

/// Every item of the job, in request order.
pub async fn items(conn: &mut impl AsConn, job_id: &str) -> Result<Vec<ItemRow>, sqlx::Error> {
    fetch!(
        conn,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {ITEM_COLUMNS} FROM bulk_items WHERE job_id = $1 ORDER BY seq"
        )),
        job_id
    )
}

/// The items still pending, in request order: those never taken, and those taken by a
/// run that did not settle them (a crash), which carry their `started_at`.
pub async fn pending(pool: &Pool, job_id: &str) -> Result<Vec<ItemRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {ITEM_COLUMNS} FROM bulk_items WHERE job_id = $1 AND outcome = 'pending'
         ORDER BY seq"
        )),
        job_id
    )
}

/// The job's item counts by outcome.
pub async fn counts(conn: &mut impl AsConn, job_id: &str) -> Result<Counts, sqlx::Error> {
    let rows: Vec<(String, i64)> = fetch!(
        conn,
        all,
        "SELECT outcome, COUNT(*) FROM bulk_items WHERE job_id = $1 GROUP BY outcome",
        job_id
    )?;
    let mut counts = Counts::default();
    for (outcome, n) in rows {
        counts.add(&outcome, n);
    }
    Ok(counts)
}

impl Counts {
    /// Counts `n` more items of `outcome`.
    fn add(&mut self, outcome: &str, n: i64) {
        match outcome {
            "pending" => self.pending += n,
            "succeeded" => self.succeeded += n,
            "unchanged" => self.unchanged += n,
            "rejected" => self.rejected += n,
            "failed" => self.failed += n,
            "cancelled" => self.cancelled += n,
            "deferred" => self.deferred += n,
            _ => {}
        }
    }
}

/// Jobs, newest first: those of `status` when given, created before the job `before`
/// when given (ids sort by creation time, so any job id is a cursor), at most `limit`.
pub async fn recent(
    conn: &mut impl AsConn,
    status: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<BulkJobRow>, sqlx::Error> {
    fetch!(
        conn,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM bulk_jobs
             WHERE (CAST($1 AS TEXT) IS NULL OR status = CAST($1 AS TEXT))
               AND (CAST($2 AS TEXT) IS NULL OR id < CAST($2 AS TEXT))
             ORDER BY id DESC LIMIT $3"
        )),
        status,
        before,
        limit
    )
}

/// The item counts by outcome of each of `jobs`, in one statement.
pub async fn counts_of(
    conn: &mut impl AsConn,
    jobs: &[String],
) -> Result<std::collections::HashMap<String, Counts>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = fetch!(
        conn,
        all,
        "SELECT job_id, outcome, COUNT(*) FROM bulk_items
         WHERE job_id IN (SELECT value FROM json_each($1))
         GROUP BY job_id, outcome",
        json!(jobs).to_string()
    )?;
    let mut counts: std::collections::HashMap<String, Counts> = std::collections::HashMap::new();
    for (job, outcome, n) in rows {
        counts.entry(job).or_default().add(&outcome, n);
    }
    Ok(counts)
}

/// Ids of the jobs not finished yet, oldest first.
pub async fn unfinished(pool: &Pool) -> Result<Vec<String>, sqlx::Error> {
    fetch_scalar!(
        pool,
        all,
        "SELECT id FROM bulk_jobs WHERE status IN ('queued', 'running') ORDER BY created_at, id"
    )
}

/// Moves a queued job to `running`.
pub async fn mark_running(
    conn: &mut impl AsConn,
    job_id: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    execute!(
        conn,
        "UPDATE bulk_jobs SET status = 'running', started_at = COALESCE(started_at, $1)
         WHERE id = $2 AND status = 'queued'",
        at,
        job_id
    )
    .map(drop)
}

/// Takes a pending, untaken item; false when it was cancelled (or taken) meanwhile.
pub async fn take(
    conn: &mut impl AsConn,
    job_id: &str,
    seq: i64,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let taken = execute!(
        conn,
        "UPDATE bulk_items SET started_at = $1
         WHERE job_id = $2 AND seq = $3 AND outcome = 'pending' AND started_at IS NULL",
        at,
        job_id,
        seq
    )?;
    Ok(taken.rows_affected() == 1)
}

/// Settles an item whose outcome is still `from`: `pending` (its change was made now) or
/// `deferred` (once its deferred change is); false when it was not (settled otherwise
/// meanwhile).
pub async fn settle(
    conn: &mut impl AsConn,
    from: &str,
    job_id: &str,
    seq: i64,
    settlement: &Settlement<'_>,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let settled = execute!(
        conn,
        "UPDATE bulk_items SET outcome = $1, violation = $2, error = $3, attempt_id = $4,
                               finished_at = $5
         WHERE job_id = $6 AND seq = $7 AND outcome = $8",
        settlement.outcome,
        settlement.violation,
        settlement.error,
        settlement.attempt_id,
        at,
        job_id,
        seq,
        from
    )?;
    Ok(settled.rows_affected() == 1)
}

/// Marks a taken, pending item `deferred`: its change waits for the agent (see
/// [`crate::store::deferred`]); false when it was not pending.
pub async fn defer_item(
    conn: &mut impl AsConn,
    job_id: &str,
    seq: i64,
) -> Result<bool, sqlx::Error> {
    let deferred = execute!(
        conn,
        "UPDATE bulk_items SET outcome = 'deferred'
         WHERE job_id = $1 AND seq = $2 AND outcome = 'pending'",
        job_id,
        seq
    )?;
    Ok(deferred.rows_affected() == 1)
}

/// The agents of the job's items waiting as `deferred`, in request order.
pub async fn deferred_agents(
    conn: &mut impl AsConn,
    job_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    fetch_scalar!(
        conn,
        all,
        "SELECT agent_id FROM bulk_items WHERE job_id = $1 AND outcome = 'deferred' ORDER BY seq",
        job_id
    )
}

/// Notes a cancellation request and cancels the items not taken yet; returns how many.
pub async fn cancel_untaken(
    conn: &mut impl AsConn,
    job_id: &str,
    at: i64,
) -> Result<u64, sqlx::Error> {
    execute!(
        conn,
        "UPDATE bulk_jobs SET cancel_requested_at = COALESCE(cancel_requested_at, $1)
         WHERE id = $2",
        at,
        job_id
    )?;
    let cancelled = execute!(
        conn,
        "UPDATE bulk_items SET outcome = 'cancelled', finished_at = $1
         WHERE job_id = $2 AND outcome = 'pending' AND started_at IS NULL",
        at,
        job_id
    )?;
    Ok(cancelled.rows_affected())
}

/// Gives the job its final status (`cancelled` when a cancellation was asked for, else
/// `completed`) if it has none yet; returns the finished job, or `None` when it already
/// had one.
pub async fn finish(
    conn: &mut impl AsConn,
    job_id: &str,
    at: i64,
) -> Result<Option<BulkJobRow>, sqlx::Error> {
    fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!(
            "UPDATE bulk_jobs
         SET status = CASE WHEN cancel_requested_at IS NULL THEN 'completed' ELSE 'cancelled' END,
             started_at = COALESCE(started_at, $1), finished_at = $1
         WHERE id = $2 AND status IN ('queued', 'running')
         RETURNING {JOB_COLUMNS}"
        )),
        at,
        job_id
    )
}

/// What a revert needs about one agent the job moved: the state the change left (from
/// the attempt) and the reason of the interval it closed.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Moved {
    pub agent_id: String,
    pub from_state: Option<String>,
    pub from_reason: Option<String>,
}

/// The agents the job moved (its succeeded items), in request order, with what they
/// were before.
pub async fn moved(pool: &Pool, job_id: &str) -> Result<Vec<Moved>, sqlx::Error> {
    // The interval a change closed is the agent's interval just before the one the
    // change opened (intervals of one agent are inserted in order, each closing the
    // last). Filtering on agent_id first keeps both lookups on the agent's index.
    fetch!(
        pool,
        all,
        "SELECT i.agent_id, a.from_state,
                (SELECT p.reason FROM state_intervals p
                 WHERE p.agent_id = i.agent_id AND p.id < o.id
                 ORDER BY p.id DESC LIMIT 1) AS from_reason
         FROM bulk_items i
         JOIN transition_attempts a ON a.id = i.attempt_id
         LEFT JOIN state_intervals o ON o.agent_id = i.agent_id AND o.attempt_id = a.id
         WHERE i.job_id = $1 AND i.outcome = 'succeeded'
         ORDER BY i.seq",
        job_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::backends;
    use crate::store::testing::temp_store_on;
    use rstest_reuse::apply;

    fn item(agent: &str) -> NewItem {
        NewItem {
            agent_id: agent.into(),
            target_state: "NOT_READY".into(),
            reason: Some("MEETING".into()),
            not_possible: None,
        }
    }

    fn job(id: &str) -> NewJob<'_> {
        NewJob {
            id,
            idempotency_key: Some("k1"),
            request_hash: "h",
            target_state: Some("NOT_READY"),
            reason: Some("MEETING"),
            team: None,
            reverts_job_id: None,
            actor: "api",
            created_at: 1_000,
            defer_for_ms: None,
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_job_and_its_items_go_in_together_and_settle_one_by_one(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        let impossible = NewItem {
            not_possible: Some("cannot".into()),
            ..item("u_003")
        };
        insert(
            &mut tx,
            &job("job_1"),
            &[item("u_002"), item("u_001"), impossible],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();

        let pending_items = pending(store.reader(), "job_1").await.unwrap();
        let agents: Vec<_> = pending_items.iter().map(|i| i.agent_id.as_str()).collect();
        assert_eq!(
            agents,
            ["u_002", "u_001"],
            "request order, settled one left out"
        );

        let mut tx = store.begin_write().await.unwrap();
        assert!(take(&mut tx, "job_1", 0, 2_000).await.unwrap());
        assert!(
            !take(&mut tx, "job_1", 0, 2_000).await.unwrap(),
            "taken once"
        );
        assert_eq!(cancel_untaken(&mut tx, "job_1", 2_500).await.unwrap(), 1);
        assert!(
            !take(&mut tx, "job_1", 1, 3_000).await.unwrap(),
            "cancelled"
        );
        let ok = Settlement {
            outcome: "succeeded",
            violation: None,
            error: None,
            attempt_id: Some("a1"),
        };
        assert!(
            settle(&mut tx, "pending", "job_1", 0, &ok, 3_000)
                .await
                .unwrap()
        );
        assert!(
            !settle(&mut tx, "pending", "job_1", 0, &ok, 3_000)
                .await
                .unwrap()
        );
        let counts = counts(&mut tx, "job_1").await.unwrap();
        assert_eq!(
            counts,
            Counts {
                pending: 0,
                succeeded: 1,
                unchanged: 0,
                rejected: 0,
                failed: 1,
                cancelled: 1,
                deferred: 0
            }
        );
        let finished = finish(&mut tx, "job_1", 4_000).await.unwrap().unwrap();
        assert_eq!(finished.status, "cancelled");
        assert!(finish(&mut tx, "job_1", 5_000).await.unwrap().is_none());
        tx.commit().await.unwrap();
        assert_eq!(
            unfinished(store.reader()).await.unwrap(),
            Vec::<String>::new()
        );
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_agent_appears_once_per_job_and_a_key_once_overall(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        assert!(
            insert(&mut tx, &job("job_1"), &[item("u_001"), item("u_001")])
                .await
                .is_err()
        );
        tx.rollback().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        insert(&mut tx, &job("job_1"), &[item("u_001")])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        assert!(insert(&mut tx, &job("job_2"), &[]).await.is_err(), "key k1");
        tx.rollback().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let found = by_idempotency_key(&mut tx, "k1").await.unwrap().unwrap();
        assert_eq!(found.id, "job_1");
        assert_eq!(found.status, "queued");
    }
}
