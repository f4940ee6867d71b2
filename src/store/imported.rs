//! Shifts imported from a file (`wfmd schedules import`): one row per agent and shift, in
//! `imported_shifts`; an import replaces the agent's imported shifts that overlap the
//! imported ones.
//!
//! An import is a job (`schedule_imports`) whose shifts reach `imported_shifts` in three
//! steps, each a short transaction or many of them, so that no write of the tenant waits
//! for a whole import (see [`crate::engine::imported_schedules`] for why and how a crash
//! leaves the old schedules or the new ones):
//! 1. [`stage`]: batches of its shifts into `imported_shifts_staged`, in force for nobody;
//! 2. [`put_in_force`]: one row changes state (`storing` → `applying`), and from that
//!    commit on the readers ([`for_agent`], [`agents`]) take its staged shifts over the
//!    ones they overlap;
//! 3. [`apply_through`]: batches moved from the staging table into `imported_shifts`,
//!    replacing the shifts they overlap, until none is left ([`complete`]).
//!
//! An import that fails or is abandoned before step 2 is in force for nobody; its staged
//! shifts are removed by [`clear_failed_batch`].

use crate::store::{AsConn, Pool, execute, fetch, fetch_scalar};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;

use super::{from_ms, to_ms};
use crate::domain::{BreakWindow, TitledSpan};

/// The longest imported shift: the reader of an import's overlaps looks this far back.
pub const MAX_SHIFT: TimeDelta = TimeDelta::hours(24);

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

impl ImportedShift {
    fn overlaps(&self, other: &ImportedShift) -> bool {
        self.start < other.end && other.start < self.end
    }
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

/// The `breaks` and `activities` columns of `shift`.
fn encode(shift: &ImportedShift) -> (String, String) {
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
    (
        serde_json::to_string(&breaks).expect("breaks serialize"),
        serde_json::to_string(&activities).expect("activities serialize"),
    )
}

fn decode(
    agent_id: &str,
    (start, end, timezone, breaks, activities): (i64, i64, Option<String>, String, String),
) -> ImportedShift {
    let breaks: Vec<BreakJson> = serde_json::from_str(&breaks).unwrap_or_default();
    let activities: Vec<ActivityJson> = serde_json::from_str(&activities).unwrap_or_default();
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
}

/// An import as `schedule_imports` holds it (times in ms).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ImportRow {
    pub id: String,
    pub actor: String,
    pub sha256: String,
    pub lines: i64,
    pub shifts: i64,
    pub agents: i64,
    /// `storing`, `applying`, `completed` or `failed`.
    pub state: String,
    pub stored: i64,
    pub applied: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub heartbeat_at: i64,
    pub in_force_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A new import, before any of its shifts is stored.
#[derive(Debug, Clone)]
pub struct NewImport<'a> {
    pub id: &'a str,
    pub actor: &'a str,
    pub sha256: &'a str,
    pub lines: usize,
    pub shifts: usize,
    pub agents: usize,
}

/// Records `new` as `storing`. Any other import still `storing` was left by a process
/// that stopped, or is given up for this one (see
/// [`crate::engine::imported_schedules`]): it is marked failed with `abandoned`, and its
/// own next step, should it come, finds it so and stops.
pub async fn create(
    conn: &mut impl AsConn,
    new: &NewImport<'_>,
    now: DateTime<Utc>,
    abandoned: &str,
) -> Result<(), sqlx::Error> {
    execute!(
        conn,
        "UPDATE schedule_imports SET state = 'failed', error = $1, finished_at = $2
         WHERE state = 'storing'",
        abandoned,
        to_ms(now)
    )?;
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    execute!(
        conn,
        "INSERT INTO schedule_imports (id, actor, sha256, lines, shifts, agents, state,
             created_at, heartbeat_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'storing', $7, $7)",
        new.id,
        new.actor,
        new.sha256,
        count(new.lines),
        count(new.shifts),
        count(new.agents),
        to_ms(now)
    )
    .map(drop)
}

/// Writes `shifts` of import `id` aside, counting them stored and the import alive at
/// `now`. `false` (and nothing should be committed) when the import is no longer
/// `storing`: another was started in its place.
pub async fn stage(
    conn: &mut impl AsConn,
    id: &str,
    shifts: &[ImportedShift],
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let counted = execute!(
        conn,
        "UPDATE schedule_imports SET stored = stored + $2, heartbeat_at = $3
         WHERE id = $1 AND state = 'storing'",
        id,
        i64::try_from(shifts.len()).unwrap_or(i64::MAX),
        to_ms(now)
    )?;
    if counted.rows_affected() == 0 {
        return Ok(false);
    }
    // One statement per batch, its rows bound as one JSON array (as samples.rs does).
    let rows: Vec<serde_json::Value> = shifts
        .iter()
        .map(|s| {
            let (breaks, activities) = encode(s);
            json!([
                s.agent_id,
                to_ms(s.start),
                to_ms(s.end),
                s.timezone,
                breaks,
                activities
            ])
        })
        .collect();
    // PostgreSQL's own JSON operators parse each row once, where the SQLite-like
    // `json_extract` the schema defines for it parses it again for every field.
    execute!(
        conn,
        (
            "INSERT INTO imported_shifts_staged (import_id, agent_id, shift_start, shift_end,
                 timezone, breaks, activities)
             SELECT $1, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                    json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                    json_extract(value, '$[4]'), json_extract(value, '$[5]')
             FROM json_each($2)",
            "INSERT INTO imported_shifts_staged (import_id, agent_id, shift_start, shift_end,
                 timezone, breaks, activities)
             SELECT $1, e->>0, (e->>1)::BIGINT, (e->>2)::BIGINT, e->>3, e->>4, e->>5
             FROM jsonb_array_elements($2::jsonb) AS e",
        ),
        id,
        serde_json::Value::Array(rows).to_string()
    )?;
    Ok(true)
}

/// Puts import `id` in force at `now`: `applying` from this commit on. `false` (and
/// nothing should be committed) when it is no longer `storing` (another was started in
/// its place), or not all its shifts were stored. The staged shifts of an import are
/// removed only once it is `failed`, so the count [`stage`] kept is theirs.
pub async fn put_in_force(
    conn: &mut impl AsConn,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = execute!(
        conn,
        "UPDATE schedule_imports SET state = 'applying', in_force_at = $2
         WHERE id = $1 AND state = 'storing' AND stored = shifts",
        id,
        to_ms(now)
    )?;
    Ok(done.rows_affected() == 1)
}

/// Marks import `id` failed with `error`, if it is still `storing` (an import in force
/// cannot fail any more).
pub async fn fail(
    conn: &mut impl AsConn,
    id: &str,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    execute!(
        conn,
        "UPDATE schedule_imports SET state = 'failed', error = $2, finished_at = $3
         WHERE id = $1 AND state = 'storing'",
        id,
        error,
        to_ms(now)
    )
    .map(drop)
}

/// The oldest import in force whose shifts are not all in place yet, and when it came in
/// force.
pub async fn oldest_applying(pool: &Pool) -> Result<Option<(String, i64)>, sqlx::Error> {
    let oldest: Option<(String, Option<i64>)> = fetch!(
        pool,
        optional,
        "SELECT id, in_force_at FROM schedule_imports WHERE state = 'applying'
         ORDER BY in_force_at, id LIMIT 1"
    )?;
    Ok(oldest.map(|(id, at)| (id, at.unwrap_or(0))))
}

/// Where the batches of `every` staged shifts of import `id` end, in the primary key's
/// order (agent, start): every `every`-th shift, and the last. Read once per import, so
/// no batch has to count its way past the ones moved before it.
pub async fn batch_ends(
    pool: &Pool,
    id: &str,
    every: u32,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    fetch!(
        pool,
        all,
        "SELECT agent_id, shift_start FROM (
             SELECT agent_id, shift_start,
                 ROW_NUMBER() OVER (ORDER BY agent_id, shift_start) AS n,
                 COUNT(*) OVER () AS total
             FROM imported_shifts_staged WHERE import_id = $1) AS numbered
         WHERE n % $2 = 0 OR n = total
         ORDER BY agent_id, shift_start",
        id,
        i64::from(every.max(1))
    )
}

/// Moves the staged shifts of import `id` up to `end` (in the primary key's order) into
/// `imported_shifts`, each replacing the agent's shifts it overlaps, stamped
/// `imported_at`; returns how many it moved.
///
/// The staged shifts of an import do not overlap one another, so a batch may end inside
/// an agent's shifts: until the rest are moved, readers take them from the staging table
/// over the ones they overlap, as before the batch.
pub async fn apply_through(
    conn: &mut impl AsConn,
    id: &str,
    (agent_to, start_to): (&str, i64),
    imported_at: i64,
) -> Result<u64, sqlx::Error> {
    // PostgreSQL's statistics of both tables lag a whole import behind (they are
    // gathered later, in the background), so it took a batch of a thousand shifts for a
    // handful and joined it to a scan of every shift in place, each batch again. This
    // transaction's statements are all lookups by primary key: let it plan only those.
    if conn.backend() == super::Backend::Postgres {
        execute!(
            conn,
            "SELECT set_config('enable_seqscan', 'off', true),
                    set_config('enable_hashjoin', 'off', true),
                    set_config('enable_mergejoin', 'off', true)"
        )?;
    }
    // Every stored shift is at most MAX_SHIFT long, so one that overlaps a staged shift
    // starts less than MAX_SHIFT before it: the bound keeps the join to the agent's few
    // neighbouring shifts instead of all its history.
    execute!(
        conn,
        "DELETE FROM imported_shifts WHERE (agent_id, shift_start) IN (
             SELECT l.agent_id, l.shift_start
             FROM imported_shifts_staged s
             JOIN imported_shifts l ON l.agent_id = s.agent_id
                 AND l.shift_start < s.shift_end
                 AND l.shift_start > s.shift_start - $4
                 AND l.shift_end > s.shift_start
             WHERE s.import_id = $1 AND (s.agent_id, s.shift_start) <= ($2, $3))",
        id,
        agent_to,
        start_to,
        MAX_SHIFT.num_milliseconds()
    )?;
    execute!(
        conn,
        "INSERT INTO imported_shifts (agent_id, shift_start, shift_end, timezone, breaks,
             imported_at, activities)
         SELECT agent_id, shift_start, shift_end, timezone, breaks, $4, activities
         FROM imported_shifts_staged
         WHERE import_id = $1 AND (agent_id, shift_start) <= ($2, $3)",
        id,
        agent_to,
        start_to,
        imported_at
    )?;
    let moved = execute!(
        conn,
        "DELETE FROM imported_shifts_staged
         WHERE import_id = $1 AND (agent_id, shift_start) <= ($2, $3)",
        id,
        agent_to,
        start_to
    )?
    .rows_affected();
    execute!(
        conn,
        "UPDATE schedule_imports SET applied = applied + $2 WHERE id = $1",
        id,
        i64::try_from(moved).unwrap_or(i64::MAX)
    )?;
    Ok(moved)
}

/// Marks import `id` completed once none of its shifts is left staged; whether it is.
pub async fn complete(
    conn: &mut impl AsConn,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = execute!(
        conn,
        "UPDATE schedule_imports SET state = 'completed', finished_at = $2
         WHERE id = $1 AND state = 'applying'
           AND NOT EXISTS (SELECT 1 FROM imported_shifts_staged WHERE import_id = $1)",
        id,
        to_ms(now)
    )?;
    Ok(done.rows_affected() == 1)
}

/// Removes up to `limit` staged shifts of failed imports; returns how many.
pub async fn clear_failed_batch(conn: &mut impl AsConn, limit: u32) -> Result<u64, sqlx::Error> {
    execute!(
        conn,
        "DELETE FROM imported_shifts_staged WHERE (import_id, agent_id, shift_start) IN (
             SELECT s.import_id, s.agent_id, s.shift_start
             FROM schedule_imports j CROSS JOIN imported_shifts_staged s
             WHERE j.state = 'failed' AND s.import_id = j.id LIMIT $1)",
        i64::from(limit)
    )
    .map(|done| done.rows_affected())
}

/// The import `id`.
pub async fn import(pool: &Pool, id: &str) -> Result<Option<ImportRow>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        "SELECT id, actor, sha256, lines, shifts, agents, state, stored, applied, error,
             created_at, heartbeat_at, in_force_at, finished_at
         FROM schedule_imports WHERE id = $1",
        id
    )
}

/// A shift as the reader of [`for_agent`] gets it: the import in force it is staged for
/// (`None`: in place), when that import came in force, then the shift's columns.
type SourcedRow = (
    Option<String>,
    i64,
    i64,
    i64,
    Option<String>,
    String,
    String,
);

/// The agent's imported shifts ending after `after`, oldest first, those of imports in
/// force but not yet in place included; `None` when the agent has no imported shift at
/// all (then the platform answers for it).
pub async fn for_agent(
    pool: &Pool,
    agent_id: &str,
    after: DateTime<Utc>,
) -> Result<Option<Vec<ImportedShift>>, sqlx::Error> {
    // One statement, so one snapshot: a batch moved in between two reads would show the
    // agent its old shifts, or none. Staged shifts are read whatever their end, as each
    // hides the shifts in place it overlaps. `CROSS JOIN` keeps SQLite's join order (the
    // few imports in force, then each one's staged shifts of the agent by primary key):
    // without statistics it scanned every staged shift instead. PostgreSQL reads it as
    // the inner join it is.
    let rows: Vec<SourcedRow> = fetch!(
        pool,
        all,
        "SELECT NULL AS import_id, 0 AS in_force_at, shift_start, shift_end, timezone, breaks,
             activities
         FROM imported_shifts WHERE agent_id = $1 AND shift_end > $2
         UNION ALL
         SELECT j.id, j.in_force_at, s.shift_start, s.shift_end, s.timezone, s.breaks,
             s.activities
         FROM schedule_imports j CROSS JOIN imported_shifts_staged s
         WHERE j.state = 'applying' AND s.import_id = j.id AND s.agent_id = $1",
        agent_id,
        to_ms(after)
    )?;
    if rows.is_empty() {
        // A BIGINT column, not a literal `1` (an INT4 on PostgreSQL, which i64 refuses).
        let any: Option<i64> = fetch_scalar!(
            pool,
            optional,
            "SELECT shift_start FROM imported_shifts WHERE agent_id = $1 LIMIT 1",
            agent_id
        )?;
        return Ok(any.map(|_| Vec::new()));
    }
    let mut in_place = Vec::new();
    // (in force at, import) -> its staged shifts
    let mut staged: std::collections::BTreeMap<(i64, String), Vec<ImportedShift>> =
        std::collections::BTreeMap::new();
    for (import_id, in_force_at, start, end, timezone, breaks, activities) in rows {
        let shift = decode(agent_id, (start, end, timezone, breaks, activities));
        match import_id {
            None => in_place.push(shift),
            Some(id) => staged.entry((in_force_at, id)).or_default().push(shift),
        }
    }
    // Each import in force replaces what it overlaps, in the order they came in force.
    let mut shifts = in_place;
    for (_, imported) in staged {
        shifts.retain(|s| !imported.iter().any(|i| i.overlaps(s)));
        shifts.extend(imported);
    }
    shifts.retain(|s| s.end > after);
    shifts.sort_by_key(|s| s.start);
    Ok(Some(shifts))
}

/// Every agent with an imported shift, those of imports in force but not yet in place
/// included.
pub async fn agents(pool: &Pool) -> Result<Vec<String>, sqlx::Error> {
    fetch_scalar!(
        pool,
        all,
        "SELECT agent_id FROM imported_shifts
         UNION
         SELECT s.agent_id FROM schedule_imports j CROSS JOIN imported_shifts_staged s
         WHERE j.state = 'applying' AND s.import_id = j.id
         ORDER BY 1"
    )
}

#[cfg(test)]
mod tests {
    use rstest_reuse::apply;

    use super::*;
    use crate::store::testing::{backends, temp_store_on};
    use crate::store::{Backend, Store};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn shift(agent: &str, start: &str, end: &str) -> ImportedShift {
        ImportedShift {
            agent_id: agent.to_owned(),
            start: at(start),
            end: at(end),
            timezone: None,
            breaks: Vec::new(),
            activities: Vec::new(),
        }
    }

    /// The (start, end) hours of the shifts `agent` is answered from on 2030-01-01/02.
    async fn read(store: &Store, agent: &str) -> Vec<(String, String)> {
        for_agent(store.reader(), agent, at("2029-12-31T00:00:00Z"))
            .await
            .unwrap()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s.start.format("%dT%H").to_string(),
                    s.end.format("%H").to_string(),
                )
            })
            .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    /// Records import `id` of `shifts` and stages them all; whether every step held.
    async fn stored(store: &Store, id: &str, shifts: &[ImportedShift]) -> bool {
        let mut tx = store.begin_write().await.unwrap();
        let new = NewImport {
            id,
            actor: "test",
            sha256: "00",
            lines: shifts.len(),
            shifts: shifts.len(),
            agents: 1,
        };
        create(&mut tx, &new, Utc::now(), "given up").await.unwrap();
        tx.commit().await.unwrap();
        stage_all(store, id, shifts).await
    }

    async fn stage_all(store: &Store, id: &str, shifts: &[ImportedShift]) -> bool {
        for one in shifts {
            let mut tx = store.begin_write_unflushed().await.unwrap();
            if !stage(&mut tx, id, std::slice::from_ref(one), Utc::now())
                .await
                .unwrap()
            {
                return false;
            }
            tx.commit().await.unwrap();
        }
        true
    }

    async fn in_force(store: &Store, id: &str) -> bool {
        let mut tx = store.begin_write().await.unwrap();
        let done = put_in_force(&mut tx, id, Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        done
    }

    async fn state(store: &Store, id: &str) -> String {
        import(store.reader(), id).await.unwrap().unwrap().state
    }

    async fn staged_rows(store: &Store) -> i64 {
        fetch_scalar!(
            store.reader(),
            one,
            "SELECT COUNT(*) FROM imported_shifts_staged"
        )
        .unwrap()
    }

    const OLD: [(&str, &str, &str); 2] = [
        ("x", "2030-01-01T09:00:00Z", "2030-01-01T17:00:00Z"),
        ("x", "2030-01-02T09:00:00Z", "2030-01-02T17:00:00Z"),
    ];

    /// Agent x's two old shifts, in place.
    async fn with_old_shifts(backend: Backend) -> (Store, tempfile::TempDir) {
        let (store, dir) = temp_store_on(backend).await;
        let old: Vec<ImportedShift> = OLD.iter().map(|(a, s, e)| shift(a, s, e)).collect();
        assert!(stored(&store, "old", &old).await);
        assert!(in_force(&store, "old").await);
        for end in batch_ends(store.reader(), "old", 1_000).await.unwrap() {
            let mut tx = store.begin_write().await.unwrap();
            apply_through(&mut tx, "old", (&end.0, end.1), 0)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let mut tx = store.begin_write().await.unwrap();
        assert!(complete(&mut tx, "old", Utc::now()).await.unwrap());
        tx.commit().await.unwrap();
        (store, dir)
    }

    #[apply(backends)]
    #[tokio::test]
    async fn staged_shifts_are_read_by_nobody_until_their_import_is_in_force(backend: Backend) {
        let (store, _dir) = with_old_shifts(backend).await;
        let new = [
            shift("x", "2030-01-01T09:00:00Z", "2030-01-01T18:00:00Z"),
            shift("y", "2030-01-01T09:00:00Z", "2030-01-01T18:00:00Z"),
        ];
        assert!(stored(&store, "new", &new).await);
        assert_eq!(
            read(&store, "x").await,
            pairs(&[("01T09", "17"), ("02T09", "17")])
        );
        assert_eq!(
            for_agent(store.reader(), "y", at("2029-12-31T00:00:00Z"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(agents(store.reader()).await.unwrap(), ["x"]);
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_import_in_force_answers_over_what_it_overlaps_before_during_and_after_its_move(
        backend: Backend,
    ) {
        let (store, _dir) = with_old_shifts(backend).await;
        // x's first shift ends later now; its second is left alone; y is new.
        let new = [
            shift("x", "2030-01-01T10:00:00Z", "2030-01-01T18:00:00Z"),
            shift("y", "2030-01-01T09:00:00Z", "2030-01-01T18:00:00Z"),
            shift("y", "2030-01-02T09:00:00Z", "2030-01-02T18:00:00Z"),
        ];
        assert!(stored(&store, "new", &new).await);
        assert!(in_force(&store, "new").await);
        let x = pairs(&[("01T10", "18"), ("02T09", "17")]);
        let y = pairs(&[("01T09", "18"), ("02T09", "18")]);
        assert_eq!(read(&store, "x").await, x, "in force, nothing moved yet");
        assert_eq!(read(&store, "y").await, y);
        assert_eq!(agents(store.reader()).await.unwrap(), ["x", "y"]);

        // Batches of two: the first ends inside y's shifts.
        let ends = batch_ends(store.reader(), "new", 2).await.unwrap();
        assert_eq!(ends.len(), 2, "{ends:?}");
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(
            apply_through(&mut tx, "new", (&ends[0].0, ends[0].1), 7)
                .await
                .unwrap(),
            2
        );
        tx.commit().await.unwrap();
        assert_eq!(read(&store, "x").await, x, "half moved");
        assert_eq!(read(&store, "y").await, y);
        let mut tx = store.begin_write().await.unwrap();
        assert!(
            !complete(&mut tx, "new", Utc::now()).await.unwrap(),
            "one is left"
        );
        assert_eq!(
            apply_through(&mut tx, "new", (&ends[1].0, ends[1].1), 7)
                .await
                .unwrap(),
            1
        );
        assert!(complete(&mut tx, "new", Utc::now()).await.unwrap());
        tx.commit().await.unwrap();
        assert_eq!(read(&store, "x").await, x, "all moved");
        assert_eq!(read(&store, "y").await, y);
        assert_eq!(staged_rows(&store).await, 0);
        let row = import(store.reader(), "new").await.unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.stored, row.applied),
            ("completed", 3, 3)
        );
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_import_given_up_for_another_takes_no_step_and_its_shifts_are_cleared(
        backend: Backend,
    ) {
        let (store, _dir) = with_old_shifts(backend).await;
        let first = [shift("x", "2030-01-01T10:00:00Z", "2030-01-01T18:00:00Z")];
        assert!(stored(&store, "first", &first).await);
        // Another import starts (its process stopped, say): the first is given up.
        assert!(stored(&store, "second", &[]).await);
        assert_eq!(state(&store, "first").await, "failed");
        assert!(!stage_all(&store, "first", &first).await, "no further step");
        assert!(!in_force(&store, "first").await, "never in force");
        assert_eq!(
            read(&store, "x").await,
            pairs(&[("01T09", "17"), ("02T09", "17")])
        );

        let mut tx = store.begin_write_unflushed().await.unwrap();
        assert_eq!(clear_failed_batch(&mut tx, 10).await.unwrap(), 1);
        tx.commit().await.unwrap();
        assert_eq!(staged_rows(&store).await, 0);
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_import_is_not_put_in_force_before_all_its_shifts_are_stored(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let shifts = [
            shift("x", "2030-01-01T09:00:00Z", "2030-01-01T17:00:00Z"),
            shift("x", "2030-01-02T09:00:00Z", "2030-01-02T17:00:00Z"),
        ];
        assert!(stored(&store, "one", &shifts[..1]).await);
        // Recorded with two shifts, one stored: as if its process stopped half-way.
        execute!(
            store.writer(),
            "UPDATE schedule_imports SET shifts = 2 WHERE id = 'one'"
        )
        .unwrap();
        assert!(!in_force(&store, "one").await);
        assert_eq!(state(&store, "one").await, "storing");
    }
}
