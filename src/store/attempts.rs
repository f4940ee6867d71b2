//! Transition attempts: every change that was asked for, and how it ended.

use crate::store::batched::TableWrite;
use crate::store::{AsConn, Pool, fetch, fetch_scalar};
use sqlx::FromRow;

/// One attempt, as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AttemptRow {
    pub id: String,
    pub idempotency_key: Option<String>,
    pub agent_id: String,
    pub from_state: Option<String>,
    pub target_state: String,
    pub reason: String,
    pub origin: String,
    pub actor: String,
    /// `succeeded`, `rejected` or `failed`.
    pub outcome: String,
    pub violation: Option<String>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub requested_at: i64,
    pub completed_at: i64,
}

const COLUMNS: &str = "id, idempotency_key, agent_id, from_state, target_state, reason, origin, \
     actor, outcome, violation, error, latency_ms, requested_at, completed_at";

pub async fn insert(conn: &mut impl AsConn, row: &AttemptRow) -> Result<(), sqlx::Error> {
    insert_with(conn, row, Grounds::default()).await
}

/// What an attempt's compliance decision rested on, recorded with its row.
#[derive(Debug, Default, Clone, Copy)]
pub struct Grounds<'a> {
    /// Where the agent's schedule came from (`book` or `platform`) and how old it was,
    /// in milliseconds.
    pub schedule_source: Option<(&'a str, i64)>,
    /// What the check could not look at (`schedule` or `mandatory_break`: the platform
    /// refuses schedule lookups and `[compliance] without_schedule = "allow"`).
    pub unchecked: Option<&'a str>,
}

/// [`insert`] with the grounds of its decision, in one statement.
pub async fn insert_with(
    conn: &mut impl AsConn,
    row: &AttemptRow,
    grounds: Grounds<'_>,
) -> Result<(), sqlx::Error> {
    insert_all_with(conn, &[(row, grounds)]).await
}

/// [`insert_with`] for many attempts, in one statement whatever their number (the
/// records of many changes share one transaction: the engine's group commit).
pub async fn insert_all_with(
    conn: &mut impl AsConn,
    rows: &[(&AttemptRow, Grounds<'_>)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    inserting_all_with(rows).run(conn).await
}

/// [`insert_all_with`] as a write to send with others (see [`crate::store::batched`]).
pub fn inserting_all_with(rows: &[(&AttemptRow, Grounds<'_>)]) -> TableWrite {
    let rows: Vec<_> = rows
        .iter()
        .map(|(row, grounds)| {
            let (source, age_ms) = grounds.schedule_source.unzip();
            serde_json::json!([
                row.id,
                row.idempotency_key,
                row.agent_id,
                row.from_state,
                row.target_state,
                row.reason,
                row.origin,
                row.actor,
                row.outcome,
                row.violation,
                row.error,
                row.latency_ms,
                row.requested_at,
                row.completed_at,
                source,
                age_ms,
                grounds.unchecked
            ])
        })
        .collect();
    TableWrite::new(
        format!(
            "INSERT INTO transition_attempts
             ({COLUMNS}, schedule_source, schedule_age_ms, compliance_unchecked)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                json_extract(value, '$[6]'), json_extract(value, '$[7]'),
                json_extract(value, '$[8]'), json_extract(value, '$[9]'),
                json_extract(value, '$[10]'), CAST(json_extract(value, '$[11]') AS BIGINT),
                CAST(json_extract(value, '$[12]') AS BIGINT),
                CAST(json_extract(value, '$[13]') AS BIGINT), json_extract(value, '$[14]'),
                CAST(json_extract(value, '$[15]') AS BIGINT), json_extract(value, '$[16]')
         FROM json_each($1)"
        ),
        serde_json::Value::Array(rows).to_string(),
    )
}

/// The attempt recorded under an idempotency key, if any.
pub async fn by_idempotency_key(pool: &Pool, key: &str) -> Result<Option<AttemptRow>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM transition_attempts WHERE idempotency_key = $1"
        )),
        key
    )
}

/// Which of `keys` already have a stored attempt (succeeded or rejected: a failed
/// attempt does not keep its key).
pub async fn used_keys(
    pool: &Pool,
    keys: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let used: Vec<String> = fetch_scalar!(
        pool,
        all,
        "SELECT idempotency_key FROM transition_attempts
         WHERE idempotency_key IN (SELECT value FROM json_each($1))",
        serde_json::json!(keys).to_string()
    )?;
    Ok(used.into_iter().collect())
}

/// The agent's attempts requested in `[from_ms, to_ms)`, oldest first.
pub async fn for_agent(
    pool: &Pool,
    agent_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM transition_attempts
         WHERE agent_id = $1 AND requested_at >= $2 AND requested_at < $3
         ORDER BY requested_at, id"
        )),
        agent_id,
        from_ms,
        to_ms
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::backends;
    use crate::store::testing::temp_store_on;
    use rstest_reuse::apply;

    pub(in crate::store) fn attempt(id: &str, key: Option<&str>) -> AttemptRow {
        AttemptRow {
            id: id.into(),
            idempotency_key: key.map(Into::into),
            agent_id: "u_001".into(),
            from_state: Some("READY".into()),
            target_state: "NOT_READY".into(),
            reason: "BREAK".into(),
            origin: "api".into(),
            actor: "api".into(),
            outcome: "succeeded".into(),
            violation: None,
            error: None,
            latency_ms: 12,
            requested_at: 1_000,
            completed_at: 1_012,
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_idempotency_key_is_stored_once(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        insert(&mut tx, &attempt("a1", Some("k1"))).await.unwrap();
        tx.commit().await.unwrap();
        // A refused statement ends a PostgreSQL transaction: the next writes take another.
        let mut tx = store.begin_write().await.unwrap();
        assert!(insert(&mut tx, &attempt("a2", Some("k1"))).await.is_err());
        tx.rollback().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        insert(&mut tx, &attempt("a3", None)).await.unwrap();
        insert(&mut tx, &attempt("a4", None)).await.unwrap();
        tx.commit().await.unwrap();
        let found = by_idempotency_key(store.reader(), "k1").await.unwrap();
        assert_eq!(found, Some(attempt("a1", Some("k1"))));
        let all = for_agent(store.reader(), "u_001", 0, 2_000).await.unwrap();
        assert_eq!(all.len(), 3);
    }
}
