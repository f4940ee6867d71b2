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
//! only once it is older than any call can take. `term` is the leader's term it was
//! written in (`[ha]`): once another instance leads in a later term, the writer has
//! stopped, so its intents are settled as soon as a call it sent has had its answer. A
//! database's sole daemon (without `[ha]`, holding the database's lock) writes term 0,
//! so the next daemon knows them ended with their writer in the same way; a `wfmd
//! transition` beside the daemon writes none.

use crate::store::batched::TableWrite;
use crate::store::{AsConn, Pool, fetch, fetch_scalar};
use serde_json::json;
use sqlx::FromRow;

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
    /// The leader's term it was written in; 0 by a sole daemon, `None` by a `wfmd
    /// transition`.
    pub term: Option<i64>,
}

const COLUMNS: &str = "attempt_id, agent_id, target_state, reason, origin, actor, \
     idempotency_key, requested_at, owner, term";

pub async fn insert(conn: &mut impl AsConn, row: &IntentRow) -> Result<(), sqlx::Error> {
    insert_all(conn, &[row]).await
}

/// Writes `rows`, each replacing a left-over intent of its attempt (a retry with its
/// key), in one statement whatever their number: the intents of many changes share one
/// transaction (the engine's group commit).
pub async fn insert_all(conn: &mut impl AsConn, rows: &[&IntentRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    inserting_all(rows).run(conn).await
}

/// [`insert_all`] as a write to run elsewhere (the engine's intents go as a statement of
/// their own on PostgreSQL: see [`crate::store::Store::write_unflushed`]).
pub fn inserting_all(rows: &[&IntentRow]) -> TableWrite {
    let rows: Vec<_> = rows
        .iter()
        .map(|row| {
            json!([
                row.attempt_id,
                row.agent_id,
                row.target_state,
                row.reason,
                row.origin,
                row.actor,
                row.idempotency_key,
                row.requested_at,
                row.owner,
                row.term
            ])
        })
        .collect();
    // `WHERE true`: SQLite would read `ON` as the start of a join without it.
    TableWrite::new(
        format!(
            "INSERT INTO transition_intents ({COLUMNS})
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                    json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                    json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                    json_extract(value, '$[6]'), CAST(json_extract(value, '$[7]') AS BIGINT),
                    json_extract(value, '$[8]'), CAST(json_extract(value, '$[9]') AS BIGINT)
             FROM json_each($1) WHERE true
             ON CONFLICT (attempt_id) DO UPDATE SET
                 agent_id = excluded.agent_id, target_state = excluded.target_state,
                 reason = excluded.reason, origin = excluded.origin, actor = excluded.actor,
                 idempotency_key = excluded.idempotency_key,
                 requested_at = excluded.requested_at, owner = excluded.owner,
                 term = excluded.term"
        ),
        serde_json::Value::Array(rows).to_string(),
    )
}

/// Removes the intent of `attempt_id`, in the transaction that records its outcome.
pub async fn delete(conn: &mut impl AsConn, attempt_id: &str) -> Result<(), sqlx::Error> {
    delete_all(conn, &[attempt_id]).await
}

/// Removes the intents of `attempt_ids`, in one statement.
pub async fn delete_all(conn: &mut impl AsConn, attempt_ids: &[&str]) -> Result<(), sqlx::Error> {
    if attempt_ids.is_empty() {
        return Ok(());
    }
    deleting_all(attempt_ids).run(conn).await
}

/// [`delete_all`] as a write to send with others (see [`crate::store::batched`]).
pub fn deleting_all(attempt_ids: &[&str]) -> TableWrite {
    TableWrite::new(
        "DELETE FROM transition_intents WHERE attempt_id IN (SELECT value FROM json_each($1))"
            .to_owned(),
        json!(attempt_ids).to_string(),
    )
}

/// The intents left over: every one written by `owner`, other processes' written
/// before `others_before` (Unix ms), and, with `ended` (a term now leading and an
/// instant), those of earlier terms written before that instant; oldest first.
pub async fn unsettled(
    pool: &Pool,
    owner: &str,
    others_before: i64,
    ended: Option<(i64, i64)>,
) -> Result<Vec<IntentRow>, sqlx::Error> {
    let (term, ended_before) = ended.unzip();
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM transition_intents
         WHERE owner = $1 OR requested_at < $2 OR (term < $3 AND requested_at < $4)
         ORDER BY requested_at"
        )),
        owner,
        others_before,
        term,
        ended_before
    )
}

/// Whether the intent of `attempt_id` is still there: its outcome is not recorded yet.
pub async fn is_left(conn: &mut impl AsConn, attempt_id: &str) -> Result<bool, sqlx::Error> {
    fetch_scalar!(
        conn,
        one,
        "SELECT EXISTS (SELECT 1 FROM transition_intents WHERE attempt_id = $1)",
        attempt_id
    )
}

/// The intent carrying idempotency key `key`, if one is left over.
pub async fn by_idempotency_key(pool: &Pool, key: &str) -> Result<Option<IntentRow>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM transition_intents WHERE idempotency_key = $1"
        )),
        key
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::{backends, temp_store_on};
    use rstest_reuse::apply;

    /// Agent u_001's intent to go READY, asked at `at` by `owner`, without a key.
    pub(in crate::store) fn intent(id: &str, owner: &str, at: i64, term: Option<i64>) -> IntentRow {
        IntentRow {
            attempt_id: id.into(),
            agent_id: "u_001".into(),
            target_state: "READY".into(),
            reason: "WORKING".into(),
            origin: "api".into(),
            actor: "desk".into(),
            idempotency_key: None,
            requested_at: at,
            owner: owner.into(),
            term,
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_intent_is_left_until_its_outcome_deletes_it(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        let row = intent("att_1", "p1", 1_000, None);
        insert(&mut tx, &row).await.unwrap();
        assert!(is_left(&mut tx, "att_1").await.unwrap());
        assert!(!is_left(&mut tx, "att_2").await.unwrap(), "never written");
        delete(&mut tx, "att_1").await.unwrap();
        assert!(!is_left(&mut tx, "att_1").await.unwrap(), "recorded");
        tx.commit().await.unwrap();
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_intent_written_again_for_its_attempt_replaces_the_one_left(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let row = |requested_at, owner: &str| IntentRow {
            idempotency_key: Some("k-1".into()),
            ..intent("att_1", owner, requested_at, Some(0))
        };
        let mut tx = store.begin_write().await.unwrap();
        insert_all(&mut tx, &[&row(1_000, "p1")]).await.unwrap();
        // A retry with its key, by the next process, after the first was cut short.
        insert_all(&mut tx, &[&row(5_000, "p2")]).await.unwrap();
        tx.commit().await.unwrap();
        let left = by_idempotency_key(store.reader(), "k-1").await.unwrap();
        assert_eq!(left, Some(row(5_000, "p2")));
    }

    /// The engine's intents go as an unflushed write of their own: stored, replacing a
    /// left-over one of the same attempt, and, as they take no write lock, while another
    /// write holds it.
    #[apply(backends)]
    #[tokio::test]
    async fn intents_written_on_their_own_are_stored_beside_a_write_holding_the_lock(
        backend: Backend,
    ) {
        let (store, _dir) = temp_store_on(backend).await;
        store
            .write_unflushed(inserting_all(&[&intent("att_1", "p1", 1_000, None)]))
            .await
            .unwrap();
        let replaced = intent("att_1", "p2", 2_000, Some(0));
        let written = [replaced.clone(), intent("att_2", "p2", 3_000, Some(0))];
        let rows: Vec<&IntentRow> = written.iter().collect();
        if backend == Backend::Postgres {
            // SQLite has one write connection: there a held write would keep this one out.
            let held = store.begin_write().await.unwrap();
            let writing = store.write_unflushed(inserting_all(&rows));
            tokio::time::timeout(std::time::Duration::from_secs(10), writing)
                .await
                .expect("an intent waited for the write lock")
                .unwrap();
            held.rollback().await.unwrap();
        } else {
            store.write_unflushed(inserting_all(&rows)).await.unwrap();
        }
        let left = unsettled(store.reader(), "p2", 0, None).await.unwrap();
        assert_eq!(left, written, "both stored, the first replaced");
    }

    /// The engine's writer of intents keeps the connection of one batch for the next
    /// on PostgreSQL, still searching the tenant's schema, so the next statement needs
    /// no step of its own before it; but not while other work waits for its turn.
    #[apply(backends)]
    #[tokio::test]
    async fn a_writer_of_intents_keeps_its_connection_for_the_next_unless_others_wait(
        backend: Backend,
    ) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut held = crate::store::Unflushed::default();
        let first = intent("att_1", "p1", 1_000, None);
        store
            .write_unflushed_on(&mut held, inserting_all(&[&first]))
            .await
            .unwrap();
        let kept = held.0.as_deref_mut();
        match (backend, kept) {
            (Backend::Sqlite, kept) => assert!(kept.is_none(), "SQLite keeps none"),
            (Backend::Postgres, kept) => {
                // A connection given back would search no tenant's schema.
                let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transition_intents")
                    .fetch_one(kept.expect("kept for the next write"))
                    .await
                    .unwrap();
                assert_eq!(found, 1, "the kept connection searches the tenant's schema");
            }
        }
        let second = intent("att_2", "p1", 2_000, None);
        store
            .write_unflushed_on(&mut held, inserting_all(&[&second]))
            .await
            .unwrap();
        let left = unsettled(store.reader(), "p1", 0, None).await.unwrap();
        assert_eq!(
            left,
            [first, second],
            "both stored, through the kept connection"
        );
        if backend == Backend::Sqlite {
            // One write connection: an intent would wait for the held write there.
            return;
        }

        // Another write waits for the tenant's write turn meanwhile.
        let holding = store.begin_write().await.unwrap();
        let other = store.clone();
        let waiting = tokio::spawn(async move { other.begin_write().await.map(drop) });
        crate::store::testing::eventually("the other write never queued", async || {
            store.writes_waiting() > 0
        })
        .await;
        let third = intent("att_3", "p1", 3_000, None);
        store
            .write_unflushed_on(&mut held, inserting_all(&[&third]))
            .await
            .unwrap();
        assert!(held.0.is_none(), "given back while another checkout waits");
        holding.rollback().await.unwrap();
        waiting.await.unwrap().unwrap();
    }

    #[apply(backends)]
    #[tokio::test]
    async fn left_over_intents_are_our_own_others_old_ones_and_earlier_terms_settled_ones(
        backend: Backend,
    ) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        for row in [
            intent("ours", "me", 9_000, Some(3)),
            intent("old", "other", 1_000, None),
            intent("young", "other", 9_000, None),
            intent("ended_term", "dead", 5_000, Some(2)),
            intent("ended_term_just_now", "dead", 9_000, Some(2)),
            intent("this_term", "beside", 5_000, Some(3)),
        ] {
            insert(&mut tx, &row).await.unwrap();
        }
        tx.commit().await.unwrap();
        let store = &store;
        let left = |ended| async move {
            unsettled(store.reader(), "me", 2_000, ended)
                .await
                .unwrap()
                .into_iter()
                .map(|row| row.attempt_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(left(None).await, ["old", "ours"], "no term: as before");
        assert_eq!(
            left(Some((3, 8_000))).await,
            ["old", "ended_term", "ours"],
            "leading in term 3: term 2's intents once a call's answer is due"
        );
    }
}
