//! Deferred changes: a change asked for while its agent was on a contact or in
//! after-contact work, with `when_busy = "defer"`, waiting to be carried out once the
//! agent is free (see [`crate::engine::deferred`]). At most one per agent: the agent is
//! the key, so storing a newer one is taking the older one's place, which the caller
//! settles in the same transaction.

use crate::store::{AsConn, Pool, execute, fetch};
use sqlx::FromRow;

/// One deferred change, as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DeferredRow {
    pub id: String,
    pub agent_id: String,
    pub target_state: String,
    /// `None`: the target state's default reason.
    pub reason: Option<String>,
    pub origin: String,
    pub actor: String,
    pub idempotency_key: Option<String>,
    pub bulk_job_id: Option<String>,
    pub bulk_seq: Option<i64>,
    /// The start of the agent's recorded interval when it was last found busy: the
    /// change waits for a later one.
    pub busy_since: Option<i64>,
    pub requested_at: i64,
    pub expires_at: i64,
}

const COLUMNS: &str = "id, agent_id, target_state, reason, origin, actor, idempotency_key, \
     bulk_job_id, bulk_seq, busy_since, requested_at, expires_at";

/// Stores `row` as its agent's deferred change, returning the one it replaces (removed
/// here; the caller settles it in the same transaction).
pub async fn replace(
    conn: &mut impl AsConn,
    row: &DeferredRow,
) -> Result<Option<DeferredRow>, sqlx::Error> {
    let older: Option<DeferredRow> = fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!(
            "DELETE FROM deferred_changes WHERE agent_id = $1 RETURNING {COLUMNS}"
        )),
        &row.agent_id
    )?;
    execute!(
        conn,
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO deferred_changes ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        )),
        &row.id,
        &row.agent_id,
        &row.target_state,
        &row.reason,
        &row.origin,
        &row.actor,
        &row.idempotency_key,
        &row.bulk_job_id,
        row.bulk_seq,
        row.busy_since,
        row.requested_at,
        row.expires_at
    )?;
    Ok(older)
}

/// The agent's deferred change, if one waits.
pub async fn for_agent(
    conn: &mut impl AsConn,
    agent_id: &str,
) -> Result<Option<DeferredRow>, sqlx::Error> {
    fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM deferred_changes WHERE agent_id = $1"
        )),
        agent_id
    )
}

/// The deferred change carrying idempotency key `key`, if one waits.
pub async fn by_idempotency_key(
    pool: &Pool,
    key: &str,
) -> Result<Option<DeferredRow>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM deferred_changes WHERE idempotency_key = $1"
        )),
        key
    )
}

/// Every deferred change, soonest to expire first.
pub async fn all(pool: &Pool) -> Result<Vec<DeferredRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM deferred_changes ORDER BY expires_at, agent_id"
        ))
    )
}

/// Removes deferred change `id` if it still waits (not replaced or settled meanwhile);
/// the removed row.
pub async fn take(conn: &mut impl AsConn, id: &str) -> Result<Option<DeferredRow>, sqlx::Error> {
    fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!(
            "DELETE FROM deferred_changes WHERE id = $1 RETURNING {COLUMNS}"
        )),
        id
    )
}

/// Notes that change `id`'s agent was found busy again in the interval that began at
/// `busy_since`; false when the change no longer waits.
pub async fn still_busy(
    conn: &mut impl AsConn,
    id: &str,
    busy_since: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let done = execute!(
        conn,
        "UPDATE deferred_changes SET busy_since = $1 WHERE id = $2",
        busy_since,
        id
    )?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::{backends, temp_store_on};
    use rstest_reuse::apply;

    pub(in crate::store) fn row(id: &str, agent: &str, expires_at: i64) -> DeferredRow {
        DeferredRow {
            id: id.into(),
            agent_id: agent.into(),
            target_state: "NOT_READY".into(),
            reason: Some("LUNCH".into()),
            origin: "api".into(),
            actor: "desk".into(),
            idempotency_key: Some(format!("api:desk:{id}")),
            bulk_job_id: None,
            bulk_seq: None,
            busy_since: Some(1_000),
            requested_at: 1_000,
            expires_at,
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_agent_has_at_most_one_deferred_change_and_a_newer_one_takes_the_older_ones_place(
        backend: Backend,
    ) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(
            replace(&mut tx, &row("d1", "u_001", 9_000)).await.unwrap(),
            None
        );
        assert_eq!(
            replace(&mut tx, &row("d2", "u_002", 5_000)).await.unwrap(),
            None
        );
        let newer = DeferredRow {
            bulk_job_id: Some("job-1".into()),
            bulk_seq: Some(3),
            reason: None,
            idempotency_key: None,
            busy_since: None,
            ..row("d3", "u_001", 7_000)
        };
        let replaced = replace(&mut tx, &newer).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(replaced, Some(row("d1", "u_001", 9_000)));

        let all = all(store.reader()).await.unwrap();
        assert_eq!(all, [row("d2", "u_002", 5_000), newer.clone()], "by expiry");
        let mut conn = store.reader().acquire().await.unwrap();
        assert_eq!(for_agent(&mut conn, "u_001").await.unwrap(), Some(newer));
        drop(conn);
        let keyed = by_idempotency_key(store.reader(), "api:desk:d2")
            .await
            .unwrap();
        assert_eq!(keyed.map(|r| r.id), Some("d2".to_owned()));
        assert_eq!(
            by_idempotency_key(store.reader(), "api:desk:d1")
                .await
                .unwrap(),
            None,
            "the replaced one is gone"
        );
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_deferred_change_is_taken_once_and_noted_busy_only_while_it_waits(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        replace(&mut tx, &row("d1", "u_001", 9_000)).await.unwrap();
        assert!(still_busy(&mut tx, "d1", Some(4_000)).await.unwrap());
        let taken = take(&mut tx, "d1").await.unwrap();
        assert_eq!(
            taken,
            Some(DeferredRow {
                busy_since: Some(4_000),
                ..row("d1", "u_001", 9_000)
            })
        );
        assert_eq!(take(&mut tx, "d1").await.unwrap(), None, "once");
        assert!(!still_busy(&mut tx, "d1", Some(5_000)).await.unwrap());
        tx.commit().await.unwrap();
        assert!(all(store.reader()).await.unwrap().is_empty());
    }
}
