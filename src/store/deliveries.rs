//! Webhook deliveries: one row per (outbox event, endpoint), claimed with a lease.
//!
//! - [`fan_out`] turns new outbox events into deliveries for the endpoints that want
//!   them, moving a cursor in the same transaction, so every event is fanned out once.
//! - [`claim`] reserves due deliveries with an `UPDATE … RETURNING` lease. A delivery is
//!   only claimable when no earlier delivery of the same agent to the same endpoint is
//!   still pending: per (endpoint, agent), events go out in commit order, while other
//!   agents and endpoints never wait.
//! - [`settle`] records a batch of attempts and their verdicts in one transaction.
//! - A crash leaves leases behind; they expire and the deliveries are claimed again
//!   (at-least-once, with the same event id).

use serde::Serialize;
use serde_json::json;
use sqlx::{FromRow, SqlitePool};

use super::Store;

/// An endpoint and the event types it wants (`None`: all).
#[derive(Debug, Clone)]
pub struct Subscriber<'a> {
    pub url: &'a str,
    pub events: Option<&'a [String]>,
}

/// How many outbox events one fan-out transaction takes at most.
const FAN_OUT_BATCH: i64 = 5_000;

/// Fans out outbox events after the cursor; returns how many events it took.
pub async fn fan_out(
    store: &Store,
    subscribers: &[Subscriber<'_>],
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let mut tx = store.begin_write().await?;
    let cursor: i64 = sqlx::query_scalar("SELECT last_event_seq FROM webhook_cursor WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(seq) FROM (SELECT seq FROM outbox_events WHERE seq > ? ORDER BY seq LIMIT ?)",
    )
    .bind(cursor)
    .bind(FAN_OUT_BATCH)
    .fetch_one(&mut *tx)
    .await?;
    let Some(last) = last else {
        return Ok(0);
    };
    for subscriber in subscribers {
        let wanted = subscriber.events.map(|events| json!(events).to_string());
        sqlx::query(
            "INSERT INTO webhook_deliveries
                 (event_seq, endpoint, event_type, agent_id, next_attempt_at, created_at)
             SELECT seq, ?1, event_type, agent_id, ?2, created_at FROM outbox_events
             WHERE seq > ?3 AND seq <= ?4
               AND (?5 IS NULL OR event_type IN (SELECT value FROM json_each(?5)))
               AND event_type NOT IN
                   (SELECT event_type FROM webhook_disabled WHERE endpoint = ?1)
             ON CONFLICT (event_seq, endpoint) DO NOTHING",
        )
        .bind(subscriber.url)
        .bind(now_ms)
        .bind(cursor)
        .bind(last)
        .bind(wanted)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE webhook_cursor SET last_event_seq = ? WHERE id = 1")
        .bind(last)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(u64::try_from(last - cursor).unwrap_or(0))
}

/// A claimed delivery with what is needed to send it.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: i64,
    pub endpoint: String,
    pub event_type: String,
    /// The event id: the `webhook-id`, the same on every attempt.
    pub event_id: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: i64,
}

/// Claims up to `limit` due deliveries to `endpoints` until `now_ms + lease_ms`.
pub async fn claim(
    store: &Store,
    endpoints: &[&str],
    now_ms: i64,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<Claimed>, sqlx::Error> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut tx = store.begin_write().await?;
    let claimed_ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET lease_until = ?1 + ?2
         WHERE id IN (
             SELECT d.id FROM webhook_deliveries d
             WHERE d.status = 'pending' AND d.next_attempt_at <= ?1
               AND (d.lease_until IS NULL OR d.lease_until <= ?1)
               AND d.endpoint IN (SELECT value FROM json_each(?3))
               AND NOT EXISTS (
                   SELECT 1 FROM webhook_deliveries e INDEXED BY webhook_deliveries_order
                   WHERE e.status = 'pending' AND e.endpoint = d.endpoint
                     AND e.agent_id = d.agent_id AND e.event_seq < d.event_seq)
             ORDER BY d.event_seq LIMIT ?4)
         RETURNING id",
    )
    .bind(now_ms)
    .bind(lease_ms)
    .bind(json!(endpoints).to_string())
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await?;
    let claimed = sqlx::query_as(
        "SELECT d.id, d.endpoint, d.event_type, e.id AS event_id, e.payload, d.attempts,
                d.created_at
         FROM webhook_deliveries d JOIN outbox_events e ON e.seq = d.event_seq
         WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.event_seq",
    )
    .bind(json!(claimed_ids).to_string())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    RetryAt(i64),
    Dead,
    /// 410 Gone: this endpoint wants no more events of this type.
    Gone,
}

/// One finished attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: i64,
    pub endpoint: String,
    pub event_type: String,
    pub attempted_at: i64,
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub verdict: Verdict,
}

/// Records attempts and applies their verdicts, all in one transaction.
pub async fn settle(store: &Store, attempts: &[Attempt]) -> Result<(), sqlx::Error> {
    if attempts.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin_write().await?;
    for a in attempts {
        sqlx::query(
            "INSERT INTO webhook_attempts
                 (delivery_id, attempted_at, status_code, duration_ms, error, response_body)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(a.delivery_id)
        .bind(a.attempted_at)
        .bind(a.status_code)
        .bind(a.duration_ms)
        .bind(&a.error)
        .bind(&a.response_body)
        .execute(&mut *tx)
        .await?;
        let (status, next_attempt_at, delivered_at) = match a.verdict {
            Verdict::Delivered => ("delivered", None, Some(a.attempted_at)),
            Verdict::RetryAt(at) => ("pending", Some(at), None),
            Verdict::Dead => ("dead", None, None),
            Verdict::Gone => ("disabled", None, None),
        };
        sqlx::query(
            "UPDATE webhook_deliveries
             SET status = ?, attempts = attempts + 1, lease_until = NULL,
                 next_attempt_at = COALESCE(?, next_attempt_at),
                 last_status = ?, last_error = ?, delivered_at = ?
             WHERE id = ?",
        )
        .bind(status)
        .bind(next_attempt_at)
        .bind(a.status_code)
        .bind(&a.error)
        .bind(delivered_at)
        .bind(a.delivery_id)
        .execute(&mut *tx)
        .await?;
        if a.verdict == Verdict::Gone {
            sqlx::query(
                "INSERT INTO webhook_disabled (endpoint, event_type, reason, disabled_at)
                 VALUES (?, ?, 'the receiver answered 410 Gone', ?)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&a.endpoint)
            .bind(&a.event_type)
            .bind(a.attempted_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'disabled', lease_until = NULL
                 WHERE status = 'pending' AND endpoint = ? AND event_type = ?",
            )
            .bind(&a.endpoint)
            .bind(&a.event_type)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await
}

/// Gives claimed deliveries back (shutdown): they may be claimed again at once.
pub async fn release(store: &Store, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin_write().await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET lease_until = NULL
         WHERE status = 'pending' AND id IN (SELECT value FROM json_each(?))",
    )
    .bind(json!(ids).to_string())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A delivery as listed by `wfmd outbox list`.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub agent_id: Option<String>,
    pub endpoint: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
}

/// Pending deliveries, or dead ones, oldest first.
pub async fn list(
    pool: &SqlitePool,
    dead: bool,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, e.id AS event_id, d.event_type, d.agent_id, d.endpoint, d.status,
                d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at
         FROM webhook_deliveries d JOIN outbox_events e ON e.seq = d.event_seq
         WHERE d.status = ? ORDER BY d.event_seq LIMIT ?",
    )
    .bind(if dead { "dead" } else { "pending" })
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Puts dead deliveries of events committed at or after `since_ms` back in the queue,
/// due now, with a fresh attempt count; returns how many.
pub async fn replay_dead(store: &Store, since_ms: i64, now_ms: i64) -> Result<u64, sqlx::Error> {
    let mut tx = store.begin_write().await?;
    let done = sqlx::query(
        "UPDATE webhook_deliveries
         SET status = 'pending', attempts = 0, next_attempt_at = ?, lease_until = NULL
         WHERE status = 'dead' AND created_at >= ?",
    )
    .bind(now_ms)
    .bind(since_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(done)
}

/// Pending deliveries and when the oldest of their events was committed.
pub async fn backlog(pool: &SqlitePool) -> Result<(i64, Option<i64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await
}

/// When the earliest pending delivery falls due, if any.
pub async fn next_due(pool: &SqlitePool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0)))
         FROM webhook_deliveries WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await
}
