//! Analytics tables: daily rollups of the history, analytics jobs and their result rows
//! (the team roster they group by is the agent roster, [`super::roster`]).
//!
//! Rollups are written once per completed day and read by range; jobs are written at
//! each step (accepted, running, a page of results stored, finished) so a restart
//! resumes where the job stopped. Result rows are keyed by (job, series, bucket): the key
//! itself refuses a bucket the platform sends twice.

use crate::store::{AsConn, Pool, execute, fetch, fetch_scalar, on};
use std::collections::HashMap;

use futures::Stream;
use serde::Serialize;
use sqlx::FromRow;

/// One agent's figures of one UTC day (all durations in milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow, Serialize)]
pub struct DailyRow {
    pub day: i64,
    pub agent_id: String,
    pub idle_ms: i64,
    pub ready_ms: i64,
    pub not_ready_ms: i64,
    pub paused_ms: i64,
    pub idle_state_ms: i64,
    pub logged_out_ms: i64,
    pub on_contact_ms: i64,
    pub acw_ms: i64,
    pub scheduled_ms: Option<i64>,
    pub in_adherence_ms: Option<i64>,
    pub exceptions: Option<i64>,
    pub transitions: i64,
    pub violations: i64,
    pub latency_p95_ms: Option<i64>,
}

const DAILY_COLUMNS: &str = "day, agent_id, idle_ms, ready_ms, not_ready_ms, paused_ms, \
    idle_state_ms, logged_out_ms, on_contact_ms, acw_ms, scheduled_ms, in_adherence_ms, \
    exceptions, transitions, violations, latency_p95_ms";

/// The days in `[from_day, to_day)` whose rollup is stored.
pub async fn rolled_up_days(
    pool: &Pool,
    from_day: i64,
    to_day: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    fetch_scalar!(
        pool,
        all,
        "SELECT day FROM analytics_rollup_days WHERE day >= $1 AND day < $2",
        from_day,
        to_day
    )
}

/// Stores one day's rollup (replacing any earlier one) and marks the day complete.
pub async fn save_day(
    conn: &mut impl AsConn,
    day: i64,
    rows: &[DailyRow],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    execute!(conn, "DELETE FROM analytics_daily WHERE day = $1", day)?;
    // Set-based: one statement per day whatever the number of agents.
    for chunk in rows.chunks(5_000) {
        let json = serde_json::to_string(chunk).expect("rollup rows serialize");
        execute!(
            conn,
            sqlx::AssertSqlSafe(format!(
                "INSERT INTO analytics_daily ({DAILY_COLUMNS})
             SELECT {} FROM json_each($1)",
                DAILY_COLUMNS
                    .split(", ")
                    .map(|c| match c.trim() {
                        "agent_id" => "json_extract(value, '$.agent_id')".to_owned(),
                        // Every other column is a number.
                        c => format!("CAST(json_extract(value, '$.{c}') AS BIGINT)"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            json
        )?;
    }
    execute!(
        conn,
        "INSERT INTO analytics_rollup_days (day, agents, computed_at) VALUES ($1, $2, $3)
         ON CONFLICT (day) DO UPDATE SET agents = excluded.agents,
             computed_at = excluded.computed_at",
        day,
        rows.len() as i64,
        now_ms
    )?;
    Ok(())
}

/// The stored rollup rows of `[from_day, to_day)`, by day then agent.
pub fn daily_rows(
    pool: &Pool,
    from_day: i64,
    to_day: i64,
) -> impl Stream<Item = Result<DailyRow, sqlx::Error>> + '_ {
    on!(pool, |c| sqlx::query_as::<_, DailyRow>(
        "SELECT day, agent_id, idle_ms, ready_ms, not_ready_ms, paused_ms, idle_state_ms,
                logged_out_ms, on_contact_ms, acw_ms, scheduled_ms, in_adherence_ms,
                exceptions, transitions, violations, latency_p95_ms
         FROM analytics_daily WHERE day >= $1 AND day < $2 ORDER BY day, agent_id",
    )
    .bind(from_day)
    .bind(to_day)
    .fetch(c))
}

/// Nearest-rank 95th percentile of transition latency per agent over `[from, to)`, the
/// way the compliance report computes it.
pub async fn latency_p95(
    pool: &Pool,
    from: i64,
    to: i64,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = fetch!(
        pool,
        all,
        "SELECT agent_id, latency_ms FROM (
            SELECT agent_id, latency_ms,
                ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY latency_ms) AS position,
                COUNT(*) OVER (PARTITION BY agent_id) AS n
            FROM transition_attempts
            WHERE requested_at >= $1 AND requested_at < $2) AS ranked
        WHERE position = (n * 95 + 99) / 100",
        from,
        to
    )?;
    Ok(rows.into_iter().collect())
}

pub use super::roster::RosterEntry;

/// Every agent's stored team (the agent roster, see [`super::roster`]).
pub async fn roster(pool: &Pool) -> Result<Vec<RosterEntry>, sqlx::Error> {
    Ok(super::roster::all(pool).await?.into_values().collect())
}

/// A stored analytics job.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AnalyticsJobRow {
    pub id: String,
    pub source: String,
    pub spec: String,
    pub actor: String,
    pub status: String,
    pub platform_query_id: Option<String>,
    pub platform_status: Option<String>,
    pub total: Option<i64>,
    pub received: i64,
    pub rows: Option<i64>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The version of the CSV `sha256` was computed over (1 before issue #33).
    pub csv_format: i64,
}

impl AnalyticsJobRow {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed")
    }
}

const JOB_COLUMNS: &str = "id, source, spec, actor, status, platform_query_id, \
    platform_status, total, received, rows, sha256, error, created_at, started_at, finished_at, \
    csv_format";

/// Stores a new queued job.
pub async fn insert_job(
    conn: &mut impl AsConn,
    id: &str,
    source: &str,
    spec: &str,
    actor: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    execute!(
        conn,
        "INSERT INTO analytics_jobs (id, source, spec, actor, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        id,
        source,
        spec,
        actor,
        now_ms
    )?;
    Ok(())
}

pub async fn job(pool: &Pool, id: &str) -> Result<Option<AnalyticsJobRow>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM analytics_jobs WHERE id = $1"
        )),
        id
    )
}

pub async fn job_on(
    conn: &mut impl AsConn,
    id: &str,
) -> Result<Option<AnalyticsJobRow>, sqlx::Error> {
    fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM analytics_jobs WHERE id = $1"
        )),
        id
    )
}

/// The newest jobs first, at most `limit`.
pub async fn jobs(pool: &Pool, limit: i64) -> Result<Vec<AnalyticsJobRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM analytics_jobs ORDER BY created_at DESC, id DESC LIMIT $1"
        )),
        limit
    )
}

/// Jobs not finished, oldest first (to run or resume).
pub async fn unfinished(pool: &Pool) -> Result<Vec<String>, sqlx::Error> {
    fetch_scalar!(
        pool,
        all,
        "SELECT id FROM analytics_jobs WHERE status IN ('queued', 'running')
         ORDER BY created_at, id"
    )
}

/// How many of `actor`'s jobs are queued or running.
pub async fn unfinished_of(conn: &mut impl AsConn, actor: &str) -> Result<i64, sqlx::Error> {
    fetch_scalar!(
        conn,
        one,
        "SELECT COUNT(*) FROM analytics_jobs
         WHERE status IN ('queued', 'running') AND actor = $1",
        actor
    )
}

/// Marks a job running (keeping its first start).
pub async fn mark_running(
    conn: &mut impl AsConn,
    id: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    execute!(
        conn,
        "UPDATE analytics_jobs SET status = 'running', started_at = COALESCE(started_at, $2)
         WHERE id = $1 AND status IN ('queued', 'running')",
        id,
        now_ms
    )?;
    Ok(())
}

/// Remembers the platform's query id (and forgets rows of an earlier submission).
pub async fn set_platform_query(
    conn: &mut impl AsConn,
    id: &str,
    query_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    clear_results(&mut *conn, id).await?;
    execute!(
        conn,
        "UPDATE analytics_jobs SET platform_query_id = $2, platform_status = NULL,
             total = NULL WHERE id = $1",
        id,
        query_id
    )?;
    Ok(())
}

/// The platform status last seen, and the total it reported.
pub async fn set_platform_status(
    pool_conn: &mut impl AsConn,
    id: &str,
    status: &str,
    total: Option<i64>,
) -> Result<(), sqlx::Error> {
    execute!(
        pool_conn,
        "UPDATE analytics_jobs SET platform_status = $2, total = COALESCE($3, total)
         WHERE id = $1",
        id,
        status,
        total
    )?;
    Ok(())
}

/// Deletes a job's stored result rows (a restart of its work from the beginning).
pub async fn clear_results(conn: &mut impl AsConn, id: &str) -> Result<(), sqlx::Error> {
    execute!(conn, "DELETE FROM analytics_results WHERE job_id = $1", id)?;
    execute!(
        conn,
        "UPDATE analytics_jobs SET received = 0 WHERE id = $1",
        id
    )?;
    Ok(())
}

/// One result row to store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewResult {
    /// Canonical JSON of the dimension values.
    pub series: String,
    pub bucket: i64,
    /// JSON array of the metric values.
    pub vals: String,
}

/// A result row that was already stored: the key (series, bucket) came twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub series: String,
    pub bucket: i64,
}

/// Stores a page of result rows and advances `received` by their number, in the
/// caller's transaction. A (series, bucket) already stored is reported, not stored.
pub async fn store_page(
    conn: &mut impl AsConn,
    id: &str,
    rows: &[NewResult],
) -> Result<Option<Duplicate>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(None);
    }
    let json = serde_json::to_string(rows).expect("result rows serialize");
    // Duplicates within the page or against stored rows: look before writing.
    let duplicate: Option<(String, i64)> = fetch!(
        conn,
        optional,
        "SELECT series, bucket FROM (
            SELECT json_extract(value, '$.series') AS series,
                   CAST(json_extract(value, '$.bucket') AS BIGINT) AS bucket
            FROM json_each($2)) AS page
         WHERE EXISTS (SELECT 1 FROM analytics_results r
                       WHERE r.job_id = $1 AND r.series = page.series AND r.bucket = page.bucket)
         UNION ALL
         SELECT series, bucket FROM (
            SELECT json_extract(value, '$.series') AS series,
                   CAST(json_extract(value, '$.bucket') AS BIGINT) AS bucket
            FROM json_each($2)) AS page GROUP BY series, bucket HAVING COUNT(*) > 1
         LIMIT 1",
        id,
        &json
    )?;
    if let Some((series, bucket)) = duplicate {
        return Ok(Some(Duplicate { series, bucket }));
    }
    execute!(
        conn,
        "INSERT INTO analytics_results (job_id, series, bucket, vals)
         SELECT $1, json_extract(value, '$.series'), CAST(json_extract(value, '$.bucket') AS BIGINT),
                json_extract(value, '$.vals')
         FROM json_each($2)",
        id,
        &json
    )?;
    execute!(
        conn,
        "UPDATE analytics_jobs SET received = received + $2 WHERE id = $1",
        id,
        rows.len() as i64
    )?;
    Ok(None)
}

/// A stored result row.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct ResultRow {
    pub series: String,
    pub bucket: i64,
    pub vals: String,
}

/// A job's result rows by series, then bucket: one series at a time, so a reader holds
/// one series in memory, never the whole result.
pub fn results(pool: &Pool, id: &str) -> impl Stream<Item = Result<ResultRow, sqlx::Error>> + Send {
    on!(pool, |c| sqlx::query_as::<_, ResultRow>(
        "SELECT series, bucket, vals FROM analytics_results WHERE job_id = $1
         ORDER BY series, bucket",
    )
    .bind(id.to_owned())
    .fetch(c))
}

/// Per series: its number of buckets, first and last bucket.
pub async fn series_extents(
    conn: &mut impl AsConn,
    id: &str,
) -> Result<Vec<(String, i64, i64, i64)>, sqlx::Error> {
    fetch!(
        conn,
        all,
        "SELECT series, COUNT(*), MIN(bucket), MAX(bucket) FROM analytics_results
         WHERE job_id = $1 GROUP BY series ORDER BY series",
        id
    )
}

/// The distinct buckets of a job's results, in order.
pub async fn buckets(conn: &mut impl AsConn, id: &str) -> Result<Vec<i64>, sqlx::Error> {
    fetch_scalar!(
        conn,
        all,
        "SELECT DISTINCT bucket FROM analytics_results WHERE job_id = $1 ORDER BY bucket",
        id
    )
}

/// Marks a job completed with its row count and hash, and the version of the CSV
/// hashed; `false` when it already was finished (the caller then writes no audit entry
/// or event).
pub async fn complete(
    conn: &mut impl AsConn,
    id: &str,
    rows: i64,
    sha256: &str,
    csv_format: i64,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = execute!(
        conn,
        "UPDATE analytics_jobs SET status = 'completed', rows = $2, sha256 = $3,
             finished_at = $4, error = NULL, csv_format = $5
         WHERE id = $1 AND status IN ('queued', 'running')",
        id,
        rows,
        sha256,
        now_ms,
        csv_format
    )?;
    Ok(done.rows_affected() == 1)
}

/// Marks a job failed with `error`; `false` when it already was finished.
pub async fn fail(
    conn: &mut impl AsConn,
    id: &str,
    error: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = execute!(
        conn,
        "UPDATE analytics_jobs SET status = 'failed', error = $2, finished_at = $3
         WHERE id = $1 AND status IN ('queued', 'running')",
        id,
        error,
        now_ms
    )?;
    Ok(done.rows_affected() == 1)
}
