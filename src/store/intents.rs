//! Transition intents: a change wfmd is about to send to the platform, written and
//! committed before the call and deleted by the transaction that records the outcome.
//!
//! The platform call cannot share a transaction with its record, so without an intent a
//! change the platform made could vanish when the record fails (a full disk) or the
//! process dies between the two. An intent that outlives its call names such a change;
//! the engine settles it against what the platform shows
//! (`TransitionEngine::settle_intents`). And when the intent itself cannot be written,
//! nothing is sent at all.
//!
//! `owner` is the process that wrote the row: another process's intent (a `wfmd
//! transition` beside the daemon) may still have its call in flight, so it is settled
//! only once it is older than any call can take.

use sqlx::{FromRow, SqliteConnection, SqlitePool};

/// One intent, as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct IntentRow {
    pub attempt_id: String,
    pub agent_id: String,
    pub target_state: String,
    pub reason: String,
    pub origin: String,
    pub actor: String,
    pub idempotency_key: Option<String>,
    pub requested_at: i64,
    pub owner: String,
}

const COLUMNS: &str = "attempt_id, agent_id, target_state, reason, origin, actor, \
     idempotency_key, requested_at, owner";

pub async fn insert(conn: &mut SqliteConnection, row: &IntentRow) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO transition_intents ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )))
    .bind(&row.attempt_id)
    .bind(&row.agent_id)
    .bind(&row.target_state)
    .bind(&row.reason)
    .bind(&row.origin)
    .bind(&row.actor)
    .bind(&row.idempotency_key)
    .bind(row.requested_at)
    .bind(&row.owner)
    .execute(conn)
    .await
    .map(drop)
}

/// Removes the intent of `attempt_id`, in the transaction that records its outcome.
pub async fn delete(conn: &mut SqliteConnection, attempt_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM transition_intents WHERE attempt_id = ?")
        .bind(attempt_id)
        .execute(conn)
        .await
        .map(drop)
}

/// The intents left over: every one written by `owner`, and other processes' written
/// before `others_before` (Unix ms), oldest first.
pub async fn unsettled(
    pool: &SqlitePool,
    owner: &str,
    others_before: i64,
) -> Result<Vec<IntentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM transition_intents
         WHERE owner = ? OR requested_at < ?
         ORDER BY requested_at"
    )))
    .bind(owner)
    .bind(others_before)
    .fetch_all(pool)
    .await
}

/// The intent of `attempt_id`, if it is still there.
pub async fn get(
    conn: &mut SqliteConnection,
    attempt_id: &str,
) -> Result<Option<IntentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM transition_intents WHERE attempt_id = ?"
    )))
    .bind(attempt_id)
    .fetch_optional(conn)
    .await
}

/// The intent carrying idempotency key `key`, if one is left over.
pub async fn by_idempotency_key(
    pool: &SqlitePool,
    key: &str,
) -> Result<Option<IntentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM transition_intents WHERE idempotency_key = ?"
    )))
    .bind(key)
    .fetch_optional(pool)
    .await
}
