//! Agents' shifts as the platform gave them: one row per agent and shift, upserted.
//!
//! A shift whose start moved (the schedule was changed) replaces the agent's rows it
//! overlaps, so an agent never has two overlapping shifts.

use crate::store::{AsConn, Pool, execute, fetch, fetch_scalar};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::{from_ms, to_ms};
use crate::domain::adherence::Shift;
use crate::domain::state::string_names;
use crate::domain::{BreakWindow, TitledSpan};

/// Where a shift's break windows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakSource {
    /// The schedule listed them.
    Schedule,
    /// The schedule omitted them; the break-status endpoint gave the mandatory ones,
    /// one at a time, so they are collected over several fetches.
    BreakStatus,
}

impl BreakSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakSource::Schedule => "schedule",
            BreakSource::BreakStatus => "break_status",
        }
    }
}

string_names!(BreakSource);

impl FromStr for BreakSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "schedule" => Ok(BreakSource::Schedule),
            "break_status" => Ok(BreakSource::BreakStatus),
            _ => Err(format!("unknown break source `{s}`")),
        }
    }
}

/// One agent's shift, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredShift {
    pub agent_id: String,
    pub shift: Shift,
    pub timezone: Option<String>,
    pub breaks_from: BreakSource,
    pub fetched_at: DateTime<Utc>,
}

/// A stored row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ShiftRow {
    pub agent_id: String,
    pub shift_start: i64,
    pub shift_end: i64,
    pub timezone: Option<String>,
    pub breaks: String,
    pub breaks_from: String,
    pub fetched_at: i64,
    /// JSON of the shift's titled work activities (`[]` for rows stored before them).
    pub activities: String,
}

impl ShiftRow {
    /// The shift in the domain's terms; `None` for a row this build cannot read.
    pub fn to_stored(&self) -> Option<StoredShift> {
        let breaks: Vec<BreakWindow> = serde_json::from_str(&self.breaks).ok()?;
        let activities: Vec<TitledSpan> = serde_json::from_str(&self.activities).ok()?;
        Some(StoredShift {
            agent_id: self.agent_id.clone(),
            shift: Shift {
                start: from_ms(self.shift_start),
                end: from_ms(self.shift_end),
                breaks,
                activities,
            },
            timezone: self.timezone.clone(),
            breaks_from: self.breaks_from.parse().ok()?,
            fetched_at: from_ms(self.fetched_at),
        })
    }
}

pub const COLUMNS: &str =
    "agent_id, shift_start, shift_end, timezone, breaks, breaks_from, fetched_at, activities";

/// Stores each shift (inserted, or updated when the agent has a shift with the same
/// start), removing the agent's other shifts it overlaps.
pub async fn save(conn: &mut impl AsConn, shifts: &[StoredShift]) -> Result<(), sqlx::Error> {
    for stored in shifts {
        let (start, end) = (to_ms(stored.shift.start), to_ms(stored.shift.end));
        execute!(
            conn,
            "DELETE FROM agent_shifts
             WHERE agent_id = $1 AND shift_start <> $2 AND shift_start < $3 AND shift_end > $4",
            &stored.agent_id,
            start,
            end,
            start
        )?;
        let breaks =
            serde_json::to_string(&stored.shift.breaks).expect("break windows always serialize");
        let activities =
            serde_json::to_string(&stored.shift.activities).expect("activities always serialize");
        execute!(
            conn,
            sqlx::AssertSqlSafe(format!(
                "INSERT INTO agent_shifts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (agent_id, shift_start) DO UPDATE SET
                 shift_end = excluded.shift_end, timezone = excluded.timezone,
                 breaks = excluded.breaks, breaks_from = excluded.breaks_from,
                 fetched_at = excluded.fetched_at, activities = excluded.activities"
            )),
            &stored.agent_id,
            start,
            end,
            &stored.timezone,
            breaks,
            stored.breaks_from.as_str(),
            to_ms(stored.fetched_at),
            activities
        )?;
    }
    Ok(())
}

/// Each agent's latest shift (the one that starts last).
pub async fn latest(pool: &Pool) -> Result<Vec<StoredShift>, sqlx::Error> {
    let rows: Vec<ShiftRow> = fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM agent_shifts AS s
         WHERE shift_start = (SELECT MAX(shift_start) FROM agent_shifts
                              WHERE agent_id = s.agent_id)
         ORDER BY agent_id"
        ))
    )?;
    Ok(rows.iter().filter_map(ShiftRow::to_stored).collect())
}

/// What the book knows of one agent: the shifts of its newest fetch, by start, or
/// nothing when the agent was never fetched.
pub async fn freshest(pool: &Pool, agent_id: &str) -> Result<Vec<StoredShift>, sqlx::Error> {
    let rows: Vec<ShiftRow> = fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM agent_shifts
         WHERE agent_id = $1
           AND fetched_at = (SELECT MAX(fetched_at) FROM agent_shifts WHERE agent_id = $1)
         ORDER BY shift_start"
        )),
        agent_id
    )?;
    Ok(rows.iter().filter_map(ShiftRow::to_stored).collect())
}

/// [`freshest`] for every agent the book holds, by agent and start.
pub async fn freshest_of_all(pool: &Pool) -> Result<Vec<StoredShift>, sqlx::Error> {
    let rows: Vec<ShiftRow> = fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM agent_shifts AS s
         WHERE fetched_at = (SELECT MAX(fetched_at) FROM agent_shifts
                             WHERE agent_id = s.agent_id)
         ORDER BY agent_id, shift_start"
        ))
    )?;
    Ok(rows.iter().filter_map(ShiftRow::to_stored).collect())
}

/// The agent's stored shifts overlapping `[from, to)`, oldest first.
pub async fn of_agent(
    pool: &Pool,
    agent_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<StoredShift>, sqlx::Error> {
    let rows: Vec<ShiftRow> = fetch!(
        pool,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM agent_shifts
         WHERE agent_id = $1 AND shift_start < $2 AND shift_end > $3
         ORDER BY shift_start"
        )),
        agent_id,
        to_ms(to),
        to_ms(from)
    )?;
    Ok(rows.iter().filter_map(ShiftRow::to_stored).collect())
}

/// How many of `agents` were fetched after `since`.
pub async fn fetched_since(
    pool: &Pool,
    agents: &[String],
    since: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let fresh: i64 = fetch_scalar!(
        pool,
        one,
        "SELECT COUNT(DISTINCT agent_id) FROM agent_shifts
         WHERE fetched_at > $1 AND agent_id IN (SELECT value FROM json_each($2))",
        to_ms(since),
        serde_json::json!(agents).to_string()
    )?;
    Ok(usize::try_from(fresh).unwrap_or(0))
}

/// The query of shifts overlapping `[?1, ?2)`, ordered by agent and start, for callers
/// that stream them (the compliance report).
pub const OVERLAPPING: &str = "SELECT agent_id, shift_start, shift_end, timezone, breaks,
        breaks_from, fetched_at, activities
    FROM agent_shifts WHERE shift_start < $2 AND shift_end > $1
    ORDER BY agent_id, shift_start";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::on;
    use crate::store::testing::backends;
    use crate::store::testing::{save_shifts, temp_store_on};
    use rstest_reuse::apply;

    fn at(minutes: i64) -> DateTime<Utc> {
        from_ms(1_790_000_000_000 + minutes * 60_000)
    }

    fn stored(agent: &str, start: i64, end: i64, fetched: i64) -> StoredShift {
        StoredShift {
            agent_id: agent.into(),
            shift: Shift {
                start: at(start),
                end: at(end),
                breaks: vec![BreakWindow {
                    start: at(start + 60),
                    end: at(start + 90),
                    kind: "LUNCH".into(),
                    mandatory: true,
                }],
                activities: vec![TitledSpan {
                    start: at(start + 120),
                    end: at(start + 150),
                    title: "Team meeting".into(),
                }],
            },
            timezone: Some("Europe/London".into()),
            breaks_from: BreakSource::Schedule,
            fetched_at: at(fetched),
        }
    }

    async fn rows(store: &crate::store::Store) -> Vec<(String, i64, i64)> {
        on!(store.reader(), |c| sqlx::query_as(
            "SELECT agent_id, shift_start, shift_end FROM agent_shifts ORDER BY 1, 2"
        )
        .fetch_all(c)
        .await)
        .unwrap()
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_refetched_shift_is_updated_in_place_and_a_moved_one_replaces_it(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        save_shifts(&store, &[stored("u_1", 0, 480, 0)]).await;
        save_shifts(&store, &[stored("u_1", 1_440, 1_920, 0)]).await;
        save_shifts(&store, &[stored("u_2", 0, 480, 0)]).await;
        // The same shift again, longer now.
        save_shifts(&store, &[stored("u_1", 0, 500, 10)]).await;
        assert_eq!(rows(&store).await.len(), 3);
        // Tomorrow's shift moved an hour earlier: it replaces the old one.
        save_shifts(&store, &[stored("u_1", 1_380, 1_860, 20)]).await;
        let ms = |m: i64| to_ms(at(m));
        assert_eq!(
            rows(&store).await,
            [
                ("u_1".into(), ms(0), ms(500)),
                ("u_1".into(), ms(1_380), ms(1_860)),
                ("u_2".into(), ms(0), ms(480)),
            ]
        );
        let latest = latest(store.reader()).await.unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0], stored("u_1", 1_380, 1_860, 20));
        assert_eq!(latest[1].agent_id, "u_2");
    }

    #[apply(backends)]
    #[tokio::test]
    async fn freshest_reads_the_shifts_of_each_agents_newest_fetch_by_start(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        save_shifts(&store, &[stored("u_1", 0, 480, 0)]).await;
        save_shifts(&store, &[stored("u_1", 1_440, 1_920, 0)]).await;
        // Refetched later: today's shift only.
        save_shifts(&store, &[stored("u_1", 0, 500, 10)]).await;
        // One fetch, two shifts, stored latest first.
        save_shifts(&store, &[stored("u_2", 1_440, 1_920, 5)]).await;
        save_shifts(&store, &[stored("u_2", 0, 480, 5)]).await;

        let u_1 = [stored("u_1", 0, 500, 10)];
        let u_2 = [stored("u_2", 0, 480, 5), stored("u_2", 1_440, 1_920, 5)];
        assert_eq!(freshest(store.reader(), "u_1").await.unwrap(), u_1);
        assert_eq!(freshest(store.reader(), "u_2").await.unwrap(), u_2);
        assert!(freshest(store.reader(), "u_3").await.unwrap().is_empty());
        let all = freshest_of_all(store.reader()).await.unwrap();
        assert_eq!(all, [&u_1[..], &u_2[..]].concat());
    }

    #[apply(backends)]
    #[tokio::test]
    async fn of_agent_reads_only_that_agents_shifts_overlapping_the_window(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        save_shifts(&store, &[stored("u_1", 0, 480, 0)]).await;
        save_shifts(&store, &[stored("u_1", 1_440, 1_920, 0)]).await;
        save_shifts(&store, &[stored("u_2", 0, 480, 0)]).await;
        let starts = |shifts: Vec<StoredShift>| -> Vec<DateTime<Utc>> {
            shifts.iter().map(|s| s.shift.start).collect()
        };
        let read = |from: i64, to: i64| of_agent(store.reader(), "u_1", at(from), at(to));
        assert_eq!(starts(read(-60, 2_000).await.unwrap()), [at(0), at(1_440)]);
        // A window touching a shift's end or start only does not overlap it.
        assert!(starts(read(480, 1_440).await.unwrap()).is_empty());
        assert_eq!(starts(read(479, 1_441).await.unwrap()), [at(0), at(1_440)]);
        assert_eq!(read(0, 480).await.unwrap(), [stored("u_1", 0, 480, 0)]);
    }
}
