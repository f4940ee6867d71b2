//! State intervals: what state each agent was in, from when to when.
//!
//! An agent has at most one open interval (a partial unique index enforces it). A
//! change closes the open interval at the change's instant and opens the next one, in
//! the caller's transaction.

use crate::store::{AsConn, Backend, Db, Pool, audit, execute, fetch};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{FromRow, Row};
use sqlx_postgres::PgRow;

use super::{from_ms, to_ms};
use crate::domain::idle::Interval;
use crate::domain::{AgentState, Origin};

/// A stored interval.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct IntervalRow {
    pub id: i64,
    pub agent_id: String,
    pub state: String,
    pub reason: Option<String>,
    pub origin: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub attempt_id: Option<String>,
}

impl IntervalRow {
    pub fn state(&self) -> Option<AgentState> {
        self.state.parse().ok()
    }

    pub fn started(&self) -> DateTime<Utc> {
        from_ms(self.started_at)
    }

    pub fn ended(&self) -> Option<DateTime<Utc>> {
        self.ended_at.map(from_ms)
    }

    /// How long the agent was idle in this interval: its length (up to its end, so zero
    /// while open) when its state counts as idle, else zero.
    pub fn idle_ms(&self) -> i64 {
        if self.state().is_some_and(AgentState::is_idle) {
            self.ended_at.unwrap_or(self.started_at) - self.started_at
        } else {
            0
        }
    }

    /// Where an interval that follows this one at `at_ms` starts: never before this one
    /// started, so a platform clock slightly behind ours cannot go back in time.
    pub fn next_start(&self, at_ms: i64) -> i64 {
        at_ms.max(self.started_at)
    }

    /// The interval in the domain's terms; `None` for a state this build does not know.
    pub fn to_interval(&self) -> Option<Interval> {
        Some(Interval {
            state: self.state()?,
            reason: self.reason.clone(),
            start: self.started(),
            end: self.ended(),
        })
    }
}

/// The state an agent is entering.
#[derive(Debug, Clone)]
pub struct NewInterval<'a> {
    pub agent_id: &'a str,
    pub state: AgentState,
    pub reason: Option<&'a str>,
    pub origin: Origin,
    pub at: DateTime<Utc>,
    pub attempt_id: Option<&'a str>,
}

const COLUMNS: &str = "id, agent_id, state, reason, origin, started_at, ended_at, attempt_id";

/// The agent's open interval, if any.
pub async fn open_interval(
    conn: &mut impl AsConn,
    agent_id: &str,
) -> Result<Option<IntervalRow>, sqlx::Error> {
    fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM state_intervals WHERE agent_id = $1 AND ended_at IS NULL"
        )),
        agent_id
    )
}

/// Names `attempt_id` as the change that began interval `id` (recorded by state sync
/// before the attempt's own record could be written).
pub async fn link_attempt(
    conn: &mut impl AsConn,
    id: i64,
    attempt_id: &str,
) -> Result<(), sqlx::Error> {
    execute!(
        conn,
        "UPDATE state_intervals SET attempt_id = $1 WHERE id = $2",
        attempt_id,
        id
    )
    .map(drop)
}

/// Closes the agent's open interval at `next.at` (never before it started) and opens
/// `next`. Returns the interval that was closed.
pub async fn switch_state(
    conn: &mut impl AsConn,
    next: &NewInterval<'_>,
) -> Result<Option<IntervalRow>, sqlx::Error> {
    let mut closed = switch_states(conn, std::slice::from_ref(next)).await?;
    Ok(closed.remove(next.agent_id))
}

/// [`switch_state`] for many agents (each at most once) in a few statements, whatever
/// their number: a poll that saw 2,000 agents change must not cost 4,000 round trips.
/// Returns the closed intervals by agent.
pub async fn switch_states(
    conn: &mut impl AsConn,
    changes: &[NewInterval<'_>],
) -> Result<HashMap<String, IntervalRow>, sqlx::Error> {
    if changes.is_empty() {
        return Ok(HashMap::new());
    }
    if let Db::Postgres(_) = conn.db() {
        return switch_states_at_once(conn, changes).await;
    }
    let closes: Vec<_> = changes
        .iter()
        .map(|c| json!([c.agent_id, to_ms(c.at)]))
        .collect();
    let closed: Vec<IntervalRow> = fetch!(
        conn,
        all,
        sqlx::AssertSqlSafe(format!(
            "UPDATE state_intervals
         SET ended_at = CASE WHEN j.at > started_at THEN j.at ELSE started_at END
         FROM (SELECT json_extract(value, '$[0]') AS agent,
                      CAST(json_extract(value, '$[1]') AS BIGINT) AS at
               FROM json_each($1)) AS j
         WHERE agent_id = j.agent AND ended_at IS NULL
         RETURNING {COLUMNS}"
        )),
        serde_json::Value::Array(closes).to_string()
    )?;
    let closed: HashMap<String, IntervalRow> = closed
        .into_iter()
        .map(|row| (row.agent_id.clone(), row))
        .collect();
    let opens: Vec<_> = changes
        .iter()
        .map(|c| {
            let at = to_ms(c.at);
            let started_at = closed.get(c.agent_id).map_or(at, |old| old.next_start(at));
            json!([
                c.agent_id,
                c.state.as_str(),
                c.reason,
                c.origin.as_str(),
                started_at,
                c.attempt_id
            ])
        })
        .collect();
    execute!(
        conn,
        "INSERT INTO state_intervals (agent_id, state, reason, origin, started_at, attempt_id)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                CAST(json_extract(value, '$[4]') AS BIGINT), json_extract(value, '$[5]')
         FROM json_each($1)",
        serde_json::Value::Array(opens).to_string()
    )?;
    Ok(closed)
}

/// [`switch_states`], then the audit log's [`Tip`](audit::Tip), for a record that appends
/// to the log next in the same transaction (the change path's group commit). On
/// PostgreSQL both go in one statement: a round trip fewer under the tenant's write
/// lock, which every change's record waits behind.
pub async fn switch_states_then_tip(
    conn: &mut impl AsConn,
    changes: &[NewInterval<'_>],
) -> Result<(HashMap<String, IntervalRow>, audit::Tip), sqlx::Error> {
    if changes.is_empty() || conn.backend() == Backend::Sqlite {
        let closed = switch_states(conn, changes).await?;
        return Ok((closed, audit::read_tip(conn).await?));
    }
    let (sql, rows) = switching_at_once(conn, changes, true);
    let Db::Postgres(c) = conn.db() else {
        unreachable!("SQLite switched above")
    };
    // One row per closed interval, each beside the tip; the tip alone when none closed.
    let read: Vec<PgRow> = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(rows)
        .fetch_all(c)
        .await?;
    let tip = audit::Tip::from_row(read.first().ok_or(sqlx::Error::RowNotFound)?)?;
    let mut closed = HashMap::with_capacity(read.len());
    for row in &read {
        if row.try_get::<Option<i64>, _>("id")?.is_some() {
            let row = IntervalRow::from_row(row)?;
            closed.insert(row.agent_id.clone(), row);
        }
    }
    Ok((closed, tip))
}

/// [`switch_states`] on PostgreSQL: one statement, so one round trip under the
/// tenant's write lock.
async fn switch_states_at_once(
    conn: &mut impl AsConn,
    changes: &[NewInterval<'_>],
) -> Result<HashMap<String, IntervalRow>, sqlx::Error> {
    let (sql, rows) = switching_at_once(conn, changes, false);
    let closed: Vec<IntervalRow> = fetch!(conn, all, sqlx::AssertSqlSafe(sql), rows)?;
    Ok(closed
        .into_iter()
        .map(|row| (row.agent_id.clone(), row))
        .collect())
}

/// The statement of [`switch_states_at_once`] and its one parameter. Each agent's new
/// interval starts where its closed one now ends (or at the change, with none open), as
/// [`IntervalRow::next_start`] says. The insert reads the closed rows the update
/// returns, so an agent's old interval is closed before its new one goes in, which the
/// one-open-interval index needs. It gives back the closed rows; `with_tip`, beside
/// the audit log's tip (see [`switch_states_then_tip`]).
fn switching_at_once(
    conn: &mut impl AsConn,
    changes: &[NewInterval<'_>],
    with_tip: bool,
) -> (String, String) {
    let rows: Vec<_> = changes
        .iter()
        .map(|c| {
            json!([
                c.agent_id,
                to_ms(c.at),
                c.state.as_str(),
                c.reason,
                c.origin.as_str(),
                c.attempt_id
            ])
        })
        .collect();
    // The tip reads no table the statement writes, so it reads what a statement of its
    // own after this one would.
    let read = match with_tip {
        false => format!("\n             SELECT {COLUMNS} FROM closed"),
        true => format!(
            ",
             tip AS ({})
             SELECT tip.*, closed.* FROM tip LEFT JOIN closed ON true",
            audit::POSTGRES_TIP
        ),
    };
    // The agents are also given as an array, which the planner looks up in the open
    // intervals' index: joined with the list alone (a hundred rows to its planner) it
    // reads every agent's open interval, under the tenant's write lock.
    let sql = crate::store::batched::for_backend(
        conn,
        format!(
            "WITH j AS (
                 SELECT json_extract(value, '$[0]') AS agent,
                        CAST(json_extract(value, '$[1]') AS BIGINT) AS at,
                        json_extract(value, '$[2]') AS next_state,
                        json_extract(value, '$[3]') AS next_reason,
                        json_extract(value, '$[4]') AS next_origin,
                        json_extract(value, '$[5]') AS next_attempt
                 FROM json_each($1)),
             closed AS (
                 UPDATE state_intervals
                 SET ended_at = CASE WHEN j.at > started_at THEN j.at ELSE started_at END
                 FROM j
                 WHERE agent_id = j.agent AND ended_at IS NULL
                   AND agent_id = ANY (ARRAY(SELECT agent FROM j))
                 RETURNING {COLUMNS}),
             opened AS (
                 INSERT INTO state_intervals
                     (agent_id, state, reason, origin, started_at, attempt_id)
                 SELECT j.agent, j.next_state, j.next_reason, j.next_origin,
                        COALESCE(closed.ended_at, j.at), j.next_attempt
                 FROM j LEFT JOIN closed ON closed.agent_id = j.agent){read}"
        ),
    );
    (sql, serde_json::Value::Array(rows).to_string())
}

/// The open intervals of `agent_ids`, by agent.
pub async fn open_intervals(
    conn: &mut impl AsConn,
    agent_ids: &[&str],
) -> Result<HashMap<String, IntervalRow>, sqlx::Error> {
    let rows: Vec<IntervalRow> = fetch!(
        conn,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM state_intervals
         WHERE ended_at IS NULL AND agent_id IN (SELECT value FROM json_each($1))"
        )),
        json!(agent_ids).to_string()
    )?;
    Ok(rows.into_iter().map(|r| (r.agent_id.clone(), r)).collect())
}

/// Every agent's open interval.
pub async fn all_open(pool: &Pool) -> Result<Vec<IntervalRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM state_intervals WHERE ended_at IS NULL"
        ))
    )
}

/// The agent's intervals that overlap `[from, to)`, oldest first.
pub async fn overlapping(
    pool: &Pool,
    agent_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<IntervalRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM state_intervals
         WHERE agent_id = $1 AND started_at < $2 AND (ended_at IS NULL OR ended_at > $3)
         ORDER BY started_at, id"
        )),
        agent_id,
        to_ms(to),
        to_ms(from)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::backends;
    use crate::store::testing::temp_store_on;
    use crate::store::{Done, on};
    use chrono::Duration;
    use rstest_reuse::apply;

    fn at(seconds: i64) -> DateTime<Utc> {
        from_ms(1_790_000_000_000 + seconds * 1000)
    }

    fn enter<'a>(agent_id: &'a str, state: AgentState, at: DateTime<Utc>) -> NewInterval<'a> {
        NewInterval {
            agent_id,
            state,
            reason: Some(state.default_reason()),
            origin: Origin::Api,
            at,
            attempt_id: None,
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn switching_closes_the_open_interval_and_opens_the_next(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        let first = switch_state(&mut tx, &enter("u_001", AgentState::Ready, at(0)))
            .await
            .unwrap();
        assert_eq!(first, None);
        let closed = switch_state(&mut tx, &enter("u_001", AgentState::NotReady, at(60)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(closed.state(), Some(AgentState::Ready));
        assert_eq!(closed.ended(), Some(at(60)));
        let open = open_interval(&mut tx, "u_001").await.unwrap().unwrap();
        assert_eq!(open.state(), Some(AgentState::NotReady));
        assert_eq!(open.started(), at(60));
        tx.commit().await.unwrap();
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_change_stamped_before_the_open_interval_never_goes_back_in_time(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        switch_state(&mut tx, &enter("u_001", AgentState::Ready, at(100)))
            .await
            .unwrap();
        let closed = switch_state(&mut tx, &enter("u_001", AgentState::Idle, at(90)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(closed.ended(), Some(at(100)));
        let open = open_interval(&mut tx, "u_001").await.unwrap().unwrap();
        assert_eq!(open.started(), at(100));
        tx.commit().await.unwrap();
    }

    /// The tip read with a switch (on PostgreSQL within the switch's statement) is the
    /// one a read of its own after the switch gives, whether any interval closed or
    /// none; the switch is the one [`switch_states`] makes.
    #[apply(backends)]
    #[tokio::test]
    async fn the_tip_read_with_a_switch_is_the_one_a_read_of_its_own_gives(backend: Backend) {
        use crate::store::audit::{self, NewEntry};
        let (store, _dir) = temp_store_on(backend).await;
        let entry = |action| NewEntry {
            at: at(0),
            actor: "test",
            action,
            agent_id: None,
            subject_id: None,
            detail: json!({}),
        };
        let mut tx = store.begin_write().await.unwrap();
        switch_state(&mut tx, &enter("u_001", AgentState::Ready, at(0)))
            .await
            .unwrap();
        audit::append_all(&mut tx, &[entry("first"), entry("second")])
            .await
            .unwrap();
        // u_001 had an open interval, u_002 none: both kinds of row come back.
        let changes = [
            enter("u_001", AgentState::NotReady, at(60)),
            enter("u_002", AgentState::Ready, at(60)),
        ];
        let (closed, tip) = switch_states_then_tip(&mut tx, &changes).await.unwrap();
        assert_eq!(closed.keys().collect::<Vec<_>>(), ["u_001"]);
        assert_eq!(closed["u_001"].state(), Some(AgentState::Ready));
        assert_eq!(closed["u_001"].ended(), Some(at(60)));
        // The tip is the second entry, and chains the next: the log verifies with it.
        let (append, seq) = audit::appending_after(&mut tx, tip, &[entry("third")])
            .await
            .unwrap();
        assert_eq!(seq, 3);
        append.unwrap().run(&mut tx).await.unwrap();
        // None closes (u_003 has no interval): the tip comes all the same.
        let (closed, tip) =
            switch_states_then_tip(&mut tx, &[enter("u_003", AgentState::Ready, at(60))])
                .await
                .unwrap();
        assert!(closed.is_empty(), "{closed:?}");
        let (append, seq) = audit::appending_after(&mut tx, tip, &[entry("fourth")])
            .await
            .unwrap();
        assert_eq!(seq, 4);
        append.unwrap().run(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        let open = all_open(store.reader()).await.unwrap();
        assert_eq!(open.len(), 3, "{open:?}");
        let verified = audit::verify(store.reader()).await.unwrap();
        assert!(verified.is_intact(), "{verified:?}");
        assert_eq!(verified.entries, 4);
    }

    /// Many agents at once (PostgreSQL's one statement): each closed where it should be,
    /// each next interval with every field of its change, whether the agent had an open
    /// interval or not.
    #[apply(backends)]
    #[tokio::test]
    async fn switching_many_agents_at_once_closes_and_opens_each(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        for (agent, seconds) in [("u_001", 0), ("u_003", 100)] {
            switch_state(&mut tx, &enter(agent, AgentState::Ready, at(seconds)))
                .await
                .unwrap();
        }
        let changes = [
            NewInterval {
                attempt_id: Some("att_1"),
                ..enter("u_001", AgentState::NotReady, at(60))
            },
            NewInterval {
                origin: Origin::Rule,
                reason: None,
                ..enter("u_002", AgentState::Idle, at(60))
            },
            enter("u_003", AgentState::Paused, at(60)),
        ];
        let closed = switch_states(&mut tx, &changes).await.unwrap();
        let mut ends: Vec<_> = closed
            .values()
            .map(|row| (row.agent_id.as_str(), row.ended()))
            .collect();
        ends.sort();
        assert_eq!(
            ends,
            [("u_001", Some(at(60))), ("u_003", Some(at(100)))],
            "none was open for u_002; u_003's never goes back in time"
        );
        let opened = open_intervals(&mut tx, &["u_001", "u_002", "u_003"])
            .await
            .unwrap();
        let open = |agent: &str| {
            let row = &opened[agent];
            (
                row.state(),
                row.reason.clone(),
                row.origin.clone(),
                row.started(),
                row.attempt_id.clone(),
            )
        };
        assert_eq!(
            open("u_001"),
            (
                Some(AgentState::NotReady),
                Some(AgentState::NotReady.default_reason().to_owned()),
                "api".to_owned(),
                at(60),
                Some("att_1".to_owned())
            )
        );
        assert_eq!(
            open("u_002"),
            (
                Some(AgentState::Idle),
                None,
                "rule".to_owned(),
                at(60),
                None
            )
        );
        assert_eq!(open("u_003").0, Some(AgentState::Paused));
        assert_eq!(open("u_003").3, at(100));
        tx.commit().await.unwrap();
    }

    #[apply(backends)]
    #[tokio::test]
    async fn the_database_refuses_a_second_open_interval(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        switch_state(&mut tx, &enter("u_001", AgentState::Ready, at(0)))
            .await
            .unwrap();
        let second = on!(tx, |c| sqlx::query(
            "INSERT INTO state_intervals (agent_id, state, origin, started_at) \
             VALUES ('u_001', 'IDLE', 'api', 5)",
        )
        .execute(c)
        .await
        .map(Done::from));
        assert!(second.is_err());
    }

    #[apply(backends)]
    #[tokio::test]
    async fn overlapping_finds_intervals_that_touch_the_window_only(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        for (seconds, state) in [
            (0, AgentState::Ready),
            (100, AgentState::NotReady),
            (200, AgentState::Ready),
            (300, AgentState::Idle),
        ] {
            switch_state(&mut tx, &enter("u_001", state, at(seconds)))
                .await
                .unwrap();
        }
        switch_state(&mut tx, &enter("u_002", AgentState::Idle, at(150)))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows = overlapping(store.reader(), "u_001", at(150), at(250))
            .await
            .unwrap();
        let states: Vec<_> = rows.iter().filter_map(IntervalRow::state).collect();
        assert_eq!(states, [AgentState::NotReady, AgentState::Ready]);
        let open = overlapping(
            store.reader(),
            "u_001",
            at(400),
            at(400) + Duration::hours(1),
        )
        .await
        .unwrap();
        assert_eq!(open.len(), 1, "the open interval overlaps any later window");
    }
}
