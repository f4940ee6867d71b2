//! Authorised exceptions (`adherence_authorisations`): time a supervisor excused from
//! adherence for some agents, with a reason. The sweep, reports and analytics read the
//! authorisations in force ([`in_force`]) and judge that time as neither in nor out
//! ([`crate::domain::adherence::Timeline::authorised`]). A withdrawn authorisation
//! counts no more; the row stays, with who withdrew it and when.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::store::{AsConn, Pool, execute, fetch, from_ms};

/// One authorisation as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuthorisationRow {
    pub id: String,
    /// A JSON array of agent ids (a team's members when it was authorised).
    pub agents: String,
    pub team: Option<String>,
    pub from_at: i64,
    pub to_at: i64,
    pub reason: String,
    pub created_by: String,
    pub created_at: i64,
    pub withdrawn_at: Option<i64>,
    pub withdrawn_by: Option<String>,
}

impl AuthorisationRow {
    /// The agents it covers.
    pub fn agent_ids(&self) -> Vec<String> {
        serde_json::from_str(&self.agents).unwrap_or_default()
    }
}

const COLUMNS: &str = "id, agents, team, from_at, to_at, reason, created_by, created_at, \
                       withdrawn_at, withdrawn_by";

pub async fn insert(conn: &mut impl AsConn, row: &AuthorisationRow) -> Result<(), sqlx::Error> {
    execute!(
        conn,
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO adherence_authorisations ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )),
        &row.id,
        &row.agents,
        &row.team,
        row.from_at,
        row.to_at,
        &row.reason,
        &row.created_by,
        row.created_at,
        row.withdrawn_at,
        &row.withdrawn_by
    )
    .map(drop)
}

/// Withdraws the authorisation `id` at `at` by `by`: the row as withdrawn, or `None`
/// when there is none or it was withdrawn already.
pub async fn withdraw(
    conn: &mut impl AsConn,
    id: &str,
    at: i64,
    by: &str,
) -> Result<Option<AuthorisationRow>, sqlx::Error> {
    fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!(
            "UPDATE adherence_authorisations SET withdrawn_at = $2, withdrawn_by = $3
         WHERE id = $1 AND withdrawn_at IS NULL RETURNING {COLUMNS}"
        )),
        id,
        at,
        by
    )
}

pub async fn get(pool: &Pool, id: &str) -> Result<Option<AuthorisationRow>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM adherence_authorisations WHERE id = $1"
        )),
        id
    )
}

/// Every authorisation overlapping `[from, to)` (Unix ms), withdrawn ones too, newest
/// first, at most `limit`.
pub async fn overlapping(
    pool: &Pool,
    from: i64,
    to: i64,
    limit: i64,
) -> Result<Vec<AuthorisationRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM adherence_authorisations
         WHERE to_at > $1 AND from_at < $2 ORDER BY id DESC LIMIT $3"
        )),
        from,
        to,
        limit
    )
}

/// The spans the reports count as authorised overlapping `[from, to)` (Unix ms), by
/// agent: the authorisations in force ([`in_force`]) and the spans of the exceptions a
/// supervisor excused ([`super::exceptions::excused`]). The compliance sweep reads
/// [`in_force`] alone: an excuse decides how a deviation is counted, not whether the
/// agent deviates, so the excused exception closes when the deviation ends.
pub async fn counted(
    conn: &mut impl AsConn,
    from: i64,
    to: i64,
) -> Result<HashMap<String, Vec<(DateTime<Utc>, DateTime<Utc>)>>, sqlx::Error> {
    let mut spans = in_force(&mut *conn, from, to).await?;
    for (agent, start, end) in super::exceptions::excused(conn, from, to).await? {
        spans
            .entry(agent)
            .or_default()
            .push((from_ms(start), from_ms(end)));
    }
    Ok(spans)
}

/// The authorised spans in force (not withdrawn) overlapping `[from, to)` (Unix ms),
/// by agent.
pub async fn in_force(
    conn: &mut impl AsConn,
    from: i64,
    to: i64,
) -> Result<HashMap<String, Vec<(DateTime<Utc>, DateTime<Utc>)>>, sqlx::Error> {
    let rows: Vec<AuthorisationRow> = fetch!(
        conn,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM adherence_authorisations
             WHERE to_at > $1 AND from_at < $2 AND withdrawn_at IS NULL"
        )),
        from,
        to
    )?;
    let mut spans: HashMap<String, Vec<_>> = HashMap::new();
    for row in rows {
        let span = (from_ms(row.from_at), from_ms(row.to_at));
        for agent in row.agent_ids() {
            spans.entry(agent).or_default().push(span);
        }
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::{backends, temp_store_on};
    use rstest_reuse::apply;

    fn row(id: &str, agents: &[&str], from_at: i64, to_at: i64) -> AuthorisationRow {
        AuthorisationRow {
            id: id.into(),
            agents: serde_json::json!(agents).to_string(),
            team: None,
            from_at,
            to_at,
            reason: "team meeting".into(),
            created_by: "desk".into(),
            created_at: 0,
            withdrawn_at: None,
            withdrawn_by: None,
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn the_spans_in_force_are_by_agent_and_a_withdrawn_one_counts_no_more(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        insert(&mut tx, &row("a1", &["u_1", "u_2"], 1_000, 2_000))
            .await
            .unwrap();
        insert(&mut tx, &row("a2", &["u_1"], 5_000, 6_000))
            .await
            .unwrap();
        insert(&mut tx, &row("a3", &["u_3"], 1_500, 1_800))
            .await
            .unwrap();
        let withdrawn = withdraw(&mut tx, "a3", 900, "lead").await.unwrap().unwrap();
        assert_eq!(
            (withdrawn.withdrawn_at, withdrawn.withdrawn_by.as_deref()),
            (Some(900), Some("lead"))
        );
        assert_eq!(
            withdraw(&mut tx, "a3", 950, "lead").await.unwrap(),
            None,
            "once"
        );
        assert_eq!(withdraw(&mut tx, "nope", 950, "lead").await.unwrap(), None);
        tx.commit().await.unwrap();

        let mut conn = store.reader().acquire().await.unwrap();
        let spans = in_force(&mut conn, 0, 3_000).await.unwrap();
        drop(conn);
        let span = (from_ms(1_000), from_ms(2_000));
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert_eq!(spans["u_1"], [span]);
        assert_eq!(spans["u_2"], [span]);
        let listed: Vec<String> = overlapping(store.reader(), 0, 10_000, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, ["a3", "a2", "a1"], "withdrawn ones listed too");
        assert_eq!(
            get(store.reader(), "a1")
                .await
                .unwrap()
                .unwrap()
                .agent_ids(),
            ["u_1", "u_2"]
        );
        let backwards = {
            let mut tx = store.begin_write().await.unwrap();
            insert(&mut tx, &row("a4", &["u_1"], 2_000, 2_000)).await
        };
        assert!(backwards.is_err(), "an empty span is refused");
    }
}
