//! Writes to several tables that go to PostgreSQL as one statement.
//!
//! A change's record inserts into four tables and deletes from a fifth, each write one
//! statement whatever the number of rows (its rows as one JSON list). Under the
//! tenant's write lock each statement is a round trip, and sqlx sends one statement per
//! round trip, so on PostgreSQL the writes that need nothing of each other are sent
//! together: each becomes a data-modifying `WITH` of one statement, which PostgreSQL
//! runs whole or not at all, as the separate statements were within their transaction.
//! SQLite has no such `WITH` and no round trips to save: there each write runs as its
//! own statement, in order.
//!
//! The writes of one statement see the table as it was before that statement: none may
//! read what another writes (the record's do not: a delete of intents, inserts of
//! attempts, audit entries and events).

use crate::store::{AsConn, Db, execute};

/// The parameter every write's text names once: its rows, as a JSON list.
const ROWS: &str = "json_each($1)";

/// One write of many rows: a statement whose one parameter, `$1`, is its rows as a JSON
/// list read with `json_each($1)`.
#[derive(Debug)]
pub struct TableWrite {
    sql: String,
    rows: String,
}

impl TableWrite {
    /// The write `sql` of `rows`. `sql` names its parameter once, as `json_each($1)`,
    /// and takes no other.
    pub(crate) fn new(sql: String, rows: String) -> TableWrite {
        debug_assert_eq!(sql.matches(ROWS).count(), 1, "{sql}");
        debug_assert_eq!(sql.matches('$').count(), sql.matches("'$").count() + 1);
        TableWrite { sql, rows }
    }

    /// Runs the write alone.
    pub async fn run(self, conn: &mut impl AsConn) -> Result<(), sqlx::Error> {
        execute!(conn, sqlx::AssertSqlSafe(self.sql), self.rows).map(drop)
    }
}

/// Runs `writes`: on PostgreSQL in one statement, on SQLite one after the other.
pub async fn run_all(conn: &mut impl AsConn, writes: Vec<TableWrite>) -> Result<(), sqlx::Error> {
    if writes.len() < 2 {
        for write in writes {
            write.run(conn).await?;
        }
        return Ok(());
    }
    match conn.db() {
        Db::Sqlite(_) => {
            for write in writes {
                write.run(conn).await?;
            }
            Ok(())
        }
        Db::Postgres(c) => {
            let parts: Vec<String> = writes
                .iter()
                .enumerate()
                .map(|(i, write)| {
                    let rows = format!("json_each(${})", i + 1);
                    format!("w{i} AS ({})", write.sql.replace(ROWS, &rows))
                })
                .collect();
            let sql = format!("WITH {} SELECT 1", parts.join(",\n"));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for write in writes {
                query = query.bind(write.rows);
            }
            query.execute(c).await.map(drop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{backends, temp_store_on};
    use crate::store::{Backend, fetch_scalar};
    use rstest_reuse::apply;

    /// Intents of attempts `ids` (their primary key), the rest of each row alike.
    fn intents(ids: &[&str]) -> TableWrite {
        TableWrite::new(
            "INSERT INTO transition_intents
                 (attempt_id, agent_id, target_state, reason, origin, actor, requested_at, owner)
             SELECT value, 'u_001', 'READY', 'WORKING', 'api', 'desk', 1, 'p1'
             FROM json_each($1)"
                .to_owned(),
            serde_json::json!(ids).to_string(),
        )
    }

    /// Every write of a batch takes effect, and one that fails fails them all.
    #[apply(backends)]
    #[tokio::test]
    async fn writes_run_together_take_effect_whole_or_not_at_all(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        run_all(&mut tx, vec![intents(&["a", "b"]), intents(&["c"])])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let count = || async {
            let n: i64 = fetch_scalar!(
                store.reader(),
                one,
                "SELECT COUNT(*) FROM transition_intents"
            )
            .unwrap();
            n
        };
        assert_eq!(count().await, 3);

        let mut tx = store.begin_write().await.unwrap();
        // The second write's row is there already.
        let failed = run_all(&mut tx, vec![intents(&["d"]), intents(&["a"])]).await;
        assert!(failed.is_err());
        drop(tx);
        assert_eq!(count().await, 3, "nothing of the failed batch");
    }
}
