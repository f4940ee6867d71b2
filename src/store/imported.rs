//! Shifts imported from a file (`wfmd schedules import`): one row per agent and shift.
//! An import replaces the agent's imported shifts that overlap the imported ones.

use crate::store::{AsConn, Pool, execute, fetch, fetch_scalar};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{from_ms, to_ms};
use crate::domain::{BreakWindow, TitledSpan};

/// One imported shift with its breaks and titled work activities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedShift {
    pub agent_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub timezone: Option<String>,
    pub breaks: Vec<BreakWindow>,
    pub activities: Vec<TitledSpan>,
}

#[derive(Serialize, Deserialize)]
struct BreakJson {
    start: i64,
    end: i64,
    kind: String,
    mandatory: bool,
}

#[derive(Serialize, Deserialize)]
struct ActivityJson {
    start: i64,
    end: i64,
    title: String,
}

/// Stores `shifts`, replacing each agent's imported shifts they overlap.
pub async fn replace(
    conn: &mut impl AsConn,
    shifts: &[ImportedShift],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    for shift in shifts {
        execute!(
            conn,
            "DELETE FROM imported_shifts WHERE agent_id = $1 AND shift_start < $2 AND shift_end > $3",
            &shift.agent_id,
            to_ms(shift.end),
            to_ms(shift.start)
        )?;
    }
    for shift in shifts {
        let breaks: Vec<BreakJson> = shift
            .breaks
            .iter()
            .map(|b| BreakJson {
                start: to_ms(b.start),
                end: to_ms(b.end),
                kind: b.kind.clone(),
                mandatory: b.mandatory,
            })
            .collect();
        let activities: Vec<ActivityJson> = shift
            .activities
            .iter()
            .map(|a| ActivityJson {
                start: to_ms(a.start),
                end: to_ms(a.end),
                title: a.title.clone(),
            })
            .collect();
        execute!(
            conn,
            "INSERT INTO imported_shifts \
             (agent_id, shift_start, shift_end, timezone, breaks, imported_at, activities) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (agent_id, shift_start) DO UPDATE SET shift_end = excluded.shift_end, \
             timezone = excluded.timezone, breaks = excluded.breaks, \
             imported_at = excluded.imported_at, activities = excluded.activities",
            &shift.agent_id,
            to_ms(shift.start),
            to_ms(shift.end),
            &shift.timezone,
            serde_json::to_string(&breaks).expect("breaks serialize"),
            to_ms(now),
            serde_json::to_string(&activities).expect("activities serialize")
        )?;
    }
    Ok(())
}

/// The agent's imported shifts ending after `after`, oldest first; `None` when the agent
/// has no imported shift at all (then the platform answers for it).
pub async fn for_agent(
    pool: &Pool,
    agent_id: &str,
    after: DateTime<Utc>,
) -> Result<Option<Vec<ImportedShift>>, sqlx::Error> {
    // A BIGINT column, not a literal `1` (an INT4 on PostgreSQL, which i64 refuses).
    let any: Option<i64> = fetch_scalar!(
        pool,
        optional,
        "SELECT shift_start FROM imported_shifts WHERE agent_id = $1 LIMIT 1",
        agent_id
    )?;
    if any.is_none() {
        return Ok(None);
    }
    let rows: Vec<(i64, i64, Option<String>, String, String)> = fetch!(
        pool,
        all,
        "SELECT shift_start, shift_end, timezone, breaks, activities FROM imported_shifts \
         WHERE agent_id = $1 AND shift_end > $2 ORDER BY shift_start",
        agent_id,
        to_ms(after)
    )?;
    Ok(Some(
        rows.into_iter()
            .map(|(start, end, timezone, breaks, activities)| {
                let breaks: Vec<BreakJson> = serde_json::from_str(&breaks).unwrap_or_default();
                let activities: Vec<ActivityJson> =
                    serde_json::from_str(&activities).unwrap_or_default();
                ImportedShift {
                    agent_id: agent_id.to_owned(),
                    start: from_ms(start),
                    end: from_ms(end),
                    timezone,
                    breaks: breaks
                        .into_iter()
                        .map(|b| BreakWindow {
                            start: from_ms(b.start),
                            end: from_ms(b.end),
                            kind: b.kind,
                            mandatory: b.mandatory,
                        })
                        .collect(),
                    activities: activities
                        .into_iter()
                        .map(|a| TitledSpan {
                            start: from_ms(a.start),
                            end: from_ms(a.end),
                            title: a.title,
                        })
                        .collect(),
                }
            })
            .collect(),
    ))
}

/// Every agent with an imported shift.
pub async fn agents(pool: &Pool) -> Result<Vec<String>, sqlx::Error> {
    fetch_scalar!(
        pool,
        all,
        "SELECT DISTINCT agent_id FROM imported_shifts ORDER BY agent_id"
    )
}
