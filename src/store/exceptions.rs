//! Adherence exceptions: deviations from the schedule longer than the threshold, and
//! supervisors' reviews of them.
//!
//! A partial unique index keeps at most one open exception per agent and kind, so a
//! second sweep (or a restarted daemon) can never open a duplicate. An exception keeps
//! its latest review (excused or upheld, with a note, by whom, when); an excused one's
//! span counts as authorised in the reports ([`excused`]).

use crate::store::{AsConn, Pool, execute, fetch};
use sqlx::FromRow;

/// One exception, as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ExceptionRow {
    pub id: String,
    pub agent_id: String,
    /// A `domain::adherence::DeviationKind` name.
    pub kind: String,
    pub state: String,
    pub expected: String,
    pub started_at: i64,
    pub opened_at: i64,
    pub closed_at: Option<i64>,
    /// The index of the adherence rule that opened it; `None`: the built-in kinds.
    pub rule: Option<i64>,
    /// The version of the rule set then; `None`: no rules were configured.
    pub rules_version: Option<String>,
    /// When it turned severe.
    pub severe_at: Option<i64>,
}

const COLUMNS: &str = "id, agent_id, kind, state, expected, started_at, opened_at, closed_at, \
                       rule, rules_version, severe_at";

/// An exception with its latest review, as supervisors list and review them.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ReviewedRow {
    #[sqlx(flatten)]
    pub exception: ExceptionRow,
    /// `excused` or `upheld`; `None` while no one reviewed it.
    pub review_decision: Option<String>,
    pub review_note: Option<String>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<i64>,
}

const REVIEWED_COLUMNS: &str = "id, agent_id, kind, state, expected, started_at, opened_at, \
     closed_at, rule, rules_version, severe_at, review_decision, review_note, reviewed_by, \
     reviewed_at";

/// Which exceptions a listing wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing<'a> {
    /// Those whose span (from its start to its close, or on while open) overlaps
    /// `[from, to)`, Unix ms.
    pub from: i64,
    pub to: i64,
    /// `open`, `severe` (turned severe, open or closed), `closed` or `all`.
    pub state: &'a str,
    /// `pending` (not reviewed), `excused` or `upheld`; `None`: any.
    pub review: Option<&'a str>,
    /// Only these agents' (a JSON array of ids); `None`: every agent's.
    pub agents: Option<&'a str>,
    pub limit: i64,
}

/// The exceptions `listing` wants, newest first.
pub async fn list(pool: &Pool, listing: &Listing<'_>) -> Result<Vec<ReviewedRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {REVIEWED_COLUMNS} FROM adherence_exceptions
             WHERE started_at < $2 AND (closed_at IS NULL OR closed_at > $1)
               AND (CAST($3 AS TEXT) = 'all'
                    OR (CAST($3 AS TEXT) = 'open' AND closed_at IS NULL)
                    OR (CAST($3 AS TEXT) = 'closed' AND closed_at IS NOT NULL)
                    OR (CAST($3 AS TEXT) = 'severe' AND severe_at IS NOT NULL))
               AND (CAST($4 AS TEXT) IS NULL
                    OR (CAST($4 AS TEXT) = 'pending' AND review_decision IS NULL)
                    OR review_decision = CAST($4 AS TEXT))
               AND (CAST($5 AS TEXT) IS NULL
                    OR agent_id IN (SELECT value FROM json_each(CAST($5 AS TEXT))))
             ORDER BY opened_at DESC, id DESC LIMIT $6"
        )),
        listing.from,
        listing.to,
        listing.state,
        listing.review,
        listing.agents,
        listing.limit
    )
}

/// The exception `id` with its latest review.
pub async fn get(pool: &Pool, id: &str) -> Result<Option<ReviewedRow>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {REVIEWED_COLUMNS} FROM adherence_exceptions WHERE id = $1"
        )),
        id
    )
}

/// A review to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Review<'a> {
    /// `excused` or `upheld`.
    pub decision: &'a str,
    pub note: Option<&'a str>,
    pub by: &'a str,
    /// Unix ms.
    pub at: i64,
}

/// Stores `review` as the exception `id`'s, in place of one it has only when
/// `replace`: the exception as reviewed, or `None` when there is none, or it was
/// reviewed already and `replace` is false.
pub async fn review(
    conn: &mut impl AsConn,
    id: &str,
    review: &Review<'_>,
    replace: bool,
) -> Result<Option<ReviewedRow>, sqlx::Error> {
    fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!(
            "UPDATE adherence_exceptions
             SET review_decision = $2, review_note = $3, reviewed_by = $4, reviewed_at = $5
             WHERE id = $1 AND (review_decision IS NULL OR $6)
             RETURNING {REVIEWED_COLUMNS}"
        )),
        id,
        review.decision,
        review.note,
        review.by,
        review.at,
        replace
    )
}

/// The spans of excused exceptions overlapping `[from, to)` (Unix ms), by agent: from
/// when each deviation began to when it closed, or to `to` while it is open.
pub async fn excused(
    conn: &mut impl AsConn,
    from: i64,
    to: i64,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    let rows: Vec<(String, i64, Option<i64>)> = fetch!(
        conn,
        all,
        "SELECT agent_id, started_at, closed_at FROM adherence_exceptions
         WHERE review_decision = 'excused' AND started_at < $2
           AND (closed_at IS NULL OR closed_at > $1)",
        from,
        to
    )?;
    Ok(rows
        .into_iter()
        .map(|(agent, start, end)| (agent, start, end.unwrap_or(to)))
        .collect())
}

/// Every open exception.
pub async fn open(pool: &Pool) -> Result<Vec<ExceptionRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM adherence_exceptions WHERE closed_at IS NULL ORDER BY agent_id, kind"
        ))
    )
}

/// Inserts exceptions in one statement, whatever their number.
pub async fn insert_all(conn: &mut impl AsConn, rows: &[ExceptionRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!([
                r.id,
                r.agent_id,
                r.kind,
                r.state,
                r.expected,
                r.started_at,
                r.opened_at,
                r.closed_at,
                r.rule,
                r.rules_version,
                r.severe_at
            ])
        })
        .collect();
    let sql = crate::store::batched::for_backend(
        conn,
        format!(
            "INSERT INTO adherence_exceptions ({COLUMNS})
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                json_extract(value, '$[4]'), CAST(json_extract(value, '$[5]') AS BIGINT),
                CAST(json_extract(value, '$[6]') AS BIGINT),
                CAST(json_extract(value, '$[7]') AS BIGINT),
                CAST(json_extract(value, '$[8]') AS BIGINT), json_extract(value, '$[9]'),
                CAST(json_extract(value, '$[10]') AS BIGINT)
         FROM json_each($1)"
        ),
    );
    execute!(
        conn,
        sqlx::AssertSqlSafe(sql),
        serde_json::Value::Array(values).to_string()
    )
    .map(drop)
}

/// Closes each open exception of `closes` (id, Unix ms) at its instant (never before it
/// opened), in one statement; returns how many it closed.
pub async fn close_all(conn: &mut impl AsConn, closes: &[(&str, i64)]) -> Result<u64, sqlx::Error> {
    stamp_all(conn, "closed_at", closes).await
}

/// Marks each open exception of `severe` (id, Unix ms) severe at its instant, in one
/// statement; returns how many it marked (each only once).
pub async fn mark_severe_all(
    conn: &mut impl AsConn,
    severe: &[(&str, i64)],
) -> Result<u64, sqlx::Error> {
    stamp_all(conn, "severe_at", severe).await
}

/// Sets instant column `column` (`closed_at` or `severe_at`) of each open exception of
/// `stamps` (id, Unix ms) where it is not set yet, to its instant but never before the
/// exception opened, in one statement; returns how many it set.
async fn stamp_all(
    conn: &mut impl AsConn,
    column: &'static str,
    stamps: &[(&str, i64)],
) -> Result<u64, sqlx::Error> {
    if stamps.is_empty() {
        return Ok(0);
    }
    let sql = crate::store::batched::for_backend(
        conn,
        format!(
            "UPDATE adherence_exceptions
             SET {column} = CASE WHEN j.at > opened_at THEN j.at ELSE opened_at END
             FROM (SELECT json_extract(value, '$[0]') AS id,
                          CAST(json_extract(value, '$[1]') AS BIGINT) AS at
                   FROM json_each($1)) AS j
             WHERE adherence_exceptions.id = j.id AND closed_at IS NULL AND {column} IS NULL"
        ),
    );
    let done = execute!(
        conn,
        sqlx::AssertSqlSafe(sql),
        serde_json::json!(stamps).to_string()
    )?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::backends;
    use crate::store::testing::temp_store_on;
    use rstest_reuse::apply;

    fn row(id: &str, agent: &str, kind: &str) -> ExceptionRow {
        ExceptionRow {
            id: id.into(),
            agent_id: agent.into(),
            kind: kind.into(),
            state: "READY".into(),
            expected: "MANDATORY_BREAK".into(),
            started_at: 1_000,
            opened_at: 121_000,
            closed_at: None,
            rule: None,
            rules_version: None,
            severe_at: None,
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn one_open_exception_per_agent_and_kind(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        insert_all(
            &mut tx,
            &[
                row("e1", "u_1", "working_in_mandatory_break"),
                row("e2", "u_1", "not_working_in_shift"),
                row("e3", "u_2", "working_in_mandatory_break"),
            ],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        // A refused statement ends a PostgreSQL transaction: the next writes take another.
        let mut tx = store.begin_write().await.unwrap();
        let duplicate =
            insert_all(&mut tx, &[row("e4", "u_1", "working_in_mandatory_break")]).await;
        assert!(duplicate.is_err(), "a second open one of the same kind");
        tx.rollback().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(
            close_all(&mut tx, &[("e1", 200_000), ("e9", 200_000)])
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            close_all(&mut tx, &[("e1", 300_000)]).await.unwrap(),
            0,
            "closed once"
        );
        // Closed, the kind may open again.
        insert_all(&mut tx, &[row("e5", "u_1", "working_in_mandatory_break")])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let open: Vec<String> = open(store.reader())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(open, ["e2", "e5", "e3"]);
        let unknown_kind = {
            let mut tx = store.begin_write().await.unwrap();
            insert_all(&mut tx, &[row("e6", "u_3", "late_for_lunch")]).await
        };
        assert!(unknown_kind.is_err());
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_rule_made_exception_keeps_its_rule_and_turns_severe_once(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        let ruled = ExceptionRow {
            rule: Some(2),
            rules_version: Some("0a1b2c3d4e5f".into()),
            ..row("e1", "u_1", "out_of_rule")
        };
        insert_all(&mut tx, std::slice::from_ref(&ruled))
            .await
            .unwrap();
        assert_eq!(
            mark_severe_all(&mut tx, &[("e1", 900_000), ("e9", 900_000)])
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            mark_severe_all(&mut tx, &[("e1", 950_000)]).await.unwrap(),
            0,
            "severe once"
        );
        tx.commit().await.unwrap();
        let stored = open(store.reader()).await.unwrap();
        assert_eq!(
            stored,
            [ExceptionRow {
                severe_at: Some(900_000),
                ..ruled
            }]
        );
    }
}
