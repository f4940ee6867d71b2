//! Schedules from a file, for tenants whose WFM the platform cannot export (no WFM
//! access, or a third-party WFM such as Verint, Calabrio or IEX), on either dialect.
//!
//! `wfmd schedules import FILE` reads a CSV, one row per break (a shift without breaks
//! is one row with the break columns empty):
//!
//! ```csv
//! agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone
//! u_004,2026-11-23 09:00,2026-11-23 17:30,2026-11-23 12:00,2026-11-23 12:30,LUNCH,true,America/New_York
//! ```
//!
//! Three optional columns, `activity,activity_start,activity_end` (all or none of them),
//! give a row a titled work activity of its shift as well (a `Team meeting` 10:00–11:00),
//! which adherence rules judge by title (`activity = "Team meeting"`); a row may carry a
//! break, an activity, both or neither.
//!
//! Times are RFC 3339, or local times (`2026-11-23 09:00`) in the row's `timezone`. An
//! agent id is what the API takes (1 to 128 printable ASCII characters, not `.` or `..`),
//! a `break_type` at most 64 characters, an activity title at most 128. Every problem is
//! reported with its line number, quoting at most a short excerpt of the field, and
//! nothing is stored unless the whole file is valid. An import replaces the agent's
//! imported shifts it overlaps.
//!
//! [`ImportedSchedules`] sits in front of the platform client: for an agent with
//! imported shifts it answers schedule and break status from them (break status is the
//! mandatory break the imported windows place now or next); everything else goes to the
//! platform. Which agents have imported shifts is kept in memory ([`Imports`]), so the
//! others cost no database read.
//!
//! An import is audited (`schedules.imported`, with the file's SHA-256). Into a running
//! daemon it goes through [`Imports::start`] (the route `POST /v1/schedules/imports`,
//! which `wfmd schedules import` uses while a daemon runs), which puts it in force for
//! the next change once stored; the transition engine then forgets what it cached for
//! those agents.
//!
//! # An import of the largest file, beside the tenant's changes
//!
//! Measured before imports were jobs, with a 16 MiB file of 160,000 rows (53,000 shifts;
//! debug build, the machine shared): the file was parsed on the async runtime (1.0–1.5 s),
//! then stored with two statements per shift (a delete of the shifts it overlaps, an
//! insert), 1.3–4.8 s on SQLite and 2.9 s on PostgreSQL, all in one write transaction.
//! Every change of the tenant waited for the whole of it, and on a busy machine the
//! request ran past `server.request_timeout` and stored nothing. The file's SHA-256
//! (10 ms), the audit entry and the in-memory set of agents cost nothing beside those.
//!
//! So an import is:
//! 1. checked whole off the async runtime ([`check`], on a blocking thread) before
//!    anything is written; a file with a bad line is refused with its problems, the first
//!    [`MAX_LISTED_PROBLEMS`] listed and the rest counted;
//! 2. a job (`schedule_imports`, see [`crate::store::imported`]) that writes the shifts
//!    aside in batches of [`STAGE_BATCH`], a short transaction each, committed without a
//!    flush to disk and, on PostgreSQL, without the tenant's write lock: staged shifts
//!    are read by nobody, so they need no place in the tenant's order;
//! 3. put in force by one short transaction: the job's state and the audit entry;
//! 4. moved into `imported_shifts` in batches of [`APPLY_BATCH`], a short transaction
//!    each, while readers take the shifts not moved yet from the staging table.
//!
//! A change of the tenant waits for one batch at most, never for the import. The same
//! file, stored so (debug build, the machine shared): 5.4–7.4 s on SQLite in all, the
//! file's check included, while another writer's longest wait was 28–68 ms; 9.7–13 s on
//! PostgreSQL, 74–94 ms. `cargo bench --bench schedule_import` measures a release build
//! through the API, with changes made meanwhile.
//!
//! A crash at any moment (`kill -9`, a power cut) leaves the old schedules or the new
//! ones, never half. Before step 3 commits, the import is in force for nobody: its staged
//! shifts are never read, and the next import removes them. From that commit on it is in
//! force whole: a reader takes the staged shifts over the ones in place they overlap, in
//! one statement (so one snapshot), and the next import first finishes moving them. A
//! step 3 commit that did reach the disk needed every staged shift before it there:
//! each database writes its log in order, and the flushed commit flushes what came
//! before it.
//!
//! One import is stored at a time per tenant: a daemon refuses another (`Busy`) while one
//! of its own is being stored or put in place. Only one process stores imports of a tenant: on SQLite the
//! one holding the database's lock (`wfmd serve`, or `wfmd schedules import` writing the
//! database itself), with several instances on PostgreSQL its leader (the others hand
//! the request on), whose predecessor's writes are refused. So an import `storing` that
//! is not this process's own was left by a process that stopped or crashed: starting an
//! import marks it failed (nothing of it was in force), and the tidying removes its staged
//! shifts. (`wfmd schedules import` writing a PostgreSQL database itself while a daemon
//! stores another import gives that one up the same way, cleanly.) Until then, `GET`
//! shows an import with no step for [`STALE`] as failed.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::clock::Clock;
use crate::cxone::incontact::break_status_from;
use crate::cxone::{
    Agent, AgentFilter, AgentSnapshot, ChangeFeed, ContactCenter, CxoneError, FeedPoll,
    ObservedAgent, Queue, Skill, StateChange, Subscription, SubscriptionRequest,
};
use crate::domain::metrics::{QueueTile, SkillTile};
use crate::domain::{BreakStatus, BreakWindow, Schedule, ScheduleStatus, TitledSpan};
use crate::store::Store;
use crate::store::audit::{self, NewEntry};
use crate::store::imported::{self, ImportRow, ImportedShift, NewImport};
use crate::time::rfc3339;

/// Shifts written aside per transaction: a few milliseconds of the writer's time.
pub const STAGE_BATCH: usize = 1_000;

/// Shifts moved into place per transaction.
pub const APPLY_BATCH: u32 = 1_000;

/// Staged shifts of failed imports removed per transaction.
const CLEAR_BATCH: u32 = 5_000;

/// A `storing` import with no step for this long is shown as failed: its steps come
/// every few milliseconds while it lives, and a writer that waited this long would have
/// failed it already.
pub const STALE: Duration = Duration::from_secs(60);

/// Why an abandoned import failed.
const ABANDONED: &str = "abandoned: the process storing it stopped before it was in force \
                         (or another import was started in its place); none of its shifts \
                         are in force";

/// At most this many of a file's problems are listed; the rest are counted.
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// The longest part of a field a problem quotes.
const EXCERPT_CHARS: usize = 40;

/// The longest agent id: the API's (`api::validate::MAX_ID_LEN`), by the same rule as its
/// agent routes, so no imported id is one no route could name.
const MAX_AGENT_ID_LEN: usize = 128;

/// The longest `break_type`.
const MAX_BREAK_TYPE_LEN: usize = 64;

/// The longest activity title.
const MAX_TITLE_LEN: usize = 128;

/// What an import stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Shifts stored (each replaces the agent's imported shifts it overlaps).
    pub shifts: usize,
    /// Agents those shifts belong to; their schedule and break status come from the
    /// imported shifts from now on.
    pub agents: usize,
    /// Hex SHA-256 of the file as received, also in the `schedules.imported` audit entry.
    pub sha256: String,
}

/// Where an import stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportState {
    /// Its shifts are being written aside; in force for nobody yet.
    Storing,
    /// In force: its agents are answered from it while its shifts are moved into place.
    Applying,
    /// In force, and every shift in place.
    Completed,
    /// Nothing of it is in force (`error` says why).
    Failed,
}

impl std::fmt::Display for ImportState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImportState::Storing => "storing",
            ImportState::Applying => "applying",
            ImportState::Completed => "completed",
            ImportState::Failed => "failed",
        })
    }
}

/// An import as clients follow it (`GET /v1/schedules/imports/{job_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Clients generated from the document know the import's answer by this name.
#[schema(as = ImportView)]
pub struct ImportJobView {
    pub job_id: String,
    pub state: ImportState,
    /// Whether its shifts answer for its agents (from `applying` on).
    pub in_force: bool,
    /// The file's lines after the header.
    pub lines: u64,
    /// Shifts in the file (each replaces the agent's imported shifts it overlaps).
    pub shifts: u64,
    /// Agents those shifts belong to.
    pub agents: u64,
    /// Hex SHA-256 of the file as received, also in the `schedules.imported` audit entry.
    pub sha256: String,
    /// Shifts written aside so far, of `shifts`.
    pub stored: u64,
    /// Shifts moved into place so far, of `shifts`.
    pub applied: u64,
    /// Who imported it (the token's name).
    pub actor: String,
    pub created_at: String,
    /// When it came in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_force_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImportJobView {
    /// Whether it will change no more.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, ImportState::Completed | ImportState::Failed)
    }

    /// `row` as clients see it at `now`: a `storing` import with no step for [`STALE`]
    /// is failed (the next import marks it so).
    fn of(row: ImportRow, now: DateTime<Utc>) -> ImportJobView {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let at = |ms: i64| rfc3339(crate::store::from_ms(ms));
        let stale = crate::store::to_ms(now) - row.heartbeat_at > STALE.as_millis() as i64;
        let (state, error) = match row.state.as_str() {
            "storing" if stale => (ImportState::Failed, Some(ABANDONED.to_owned())),
            "storing" => (ImportState::Storing, None),
            "applying" => (ImportState::Applying, None),
            "completed" => (ImportState::Completed, None),
            _ => (ImportState::Failed, row.error),
        };
        ImportJobView {
            job_id: row.id,
            state,
            in_force: matches!(state, ImportState::Applying | ImportState::Completed),
            lines: count(row.lines),
            shifts: count(row.shifts),
            agents: count(row.agents),
            sha256: row.sha256,
            stored: count(row.stored),
            applied: count(row.applied),
            actor: row.actor,
            created_at: at(row.created_at),
            in_force_at: row.in_force_at.map(at),
            finished_at: row.finished_at.map(at),
            error,
        }
    }
}

/// The import `id` as it stands; `None` when there is none.
pub async fn job(store: &Store, id: &str) -> Result<Option<ImportJobView>, sqlx::Error> {
    Ok(imported::import(store.reader(), id)
        .await?
        .map(|row| ImportJobView::of(row, Utc::now())))
}

/// The file's problems, each with its line: the first [`MAX_LISTED_PROBLEMS`] of them,
/// and how many there are in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ImportErrors {
    pub problems: Vec<String>,
    pub total: usize,
}

impl std::fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.problems.join("\n"))?;
        match self.total - self.problems.len() {
            0 => Ok(()),
            more => write!(f, "\n… and {more} more"),
        }
    }
}

impl ImportErrors {
    fn one(problem: String) -> ImportErrors {
        let mut errors = ImportErrors::default();
        errors.push(problem);
        errors
    }

    fn push(&mut self, problem: String) {
        self.total += 1;
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(problem);
        }
    }
}

/// Why an import stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(#[from] ImportErrors),
    /// Another import (this id) is being stored.
    #[error(
        "another schedules import ({0}) is being stored or put in place; send this one once \
         it has finished"
    )]
    Busy(String),
    /// Another import was started in this one's place while it was stored.
    #[error("{ABANDONED}")]
    Abandoned,
    #[error("the database failed: {0}")]
    Store(#[from] sqlx::Error),
    /// The engine was built without imported schedules in front of its platform client.
    #[error("this transition engine does not read imported schedules")]
    NotRead,
}

const COLUMNS: [&str; 8] = [
    "agent",
    "shift_start",
    "shift_end",
    "break_start",
    "break_end",
    "break_type",
    "mandatory",
    "timezone",
];

/// The optional columns of a titled work activity: all of them, or none.
const ACTIVITY_COLUMNS: [&str; 3] = ["activity", "activity_start", "activity_end"];

/// `text` quoted for a problem: whole when short, else its start and its length, so no
/// problem echoes a large field.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => format!("`{}`", text.escape_debug()),
        Some((cut, _)) => format!(
            "`{}…` ({} characters)",
            text[..cut].escape_debug(),
            text.chars().count()
        ),
    }
}

/// Parses and validates a schedules CSV; every problem names its line.
pub fn parse_csv(text: &str) -> Result<Vec<ImportedShift>, ImportErrors> {
    parse(text).map(|(shifts, _)| shifts)
}

/// [`parse_csv`], with the number of lines after the header.
fn parse(text: &str) -> Result<(Vec<ImportedShift>, usize), ImportErrors> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut problems = ImportErrors::default();
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|c| c.to_ascii_lowercase()).collect(),
        Err(e) => return Err(ImportErrors::one(format!("line 1: {e}"))),
    };
    let index: BTreeMap<&str, usize> = COLUMNS
        .iter()
        .chain(&ACTIVITY_COLUMNS)
        .filter_map(|c| Some((*c, headers.iter().position(|h| h == c)?)))
        .collect();
    let missing: Vec<&str> = COLUMNS
        .iter()
        .filter(|c| !index.contains_key(*c))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(ImportErrors::one(format!(
            "line 1: the header lacks {} (expected {})",
            missing.join(", "),
            COLUMNS.join(",")
        )));
    }
    let activity_columns = ACTIVITY_COLUMNS
        .iter()
        .filter(|c| index.contains_key(*c))
        .count();
    if activity_columns % ACTIVITY_COLUMNS.len() != 0 {
        return Err(ImportErrors::one(format!(
            "line 1: the header has some of the activity columns: give all of {} or none",
            ACTIVITY_COLUMNS.join(",")
        )));
    }
    // (agent, start) -> shift, with the line that defined it.
    let mut shifts: BTreeMap<(String, DateTime<Utc>), (ImportedShift, u64)> = BTreeMap::new();
    let mut lines = 0;
    for record in reader.records() {
        lines += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!(
                    "line {}: {e}",
                    e.position().map_or(0, |p| p.line())
                ));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        let field = |name: &str| {
            index
                .get(name)
                .and_then(|at| record.get(*at))
                .unwrap_or("")
                .to_owned()
        };
        match parse_row(&field) {
            Ok((shift, brk, activity)) => {
                let key = (shift.agent_id.clone(), shift.start);
                let entry = shifts.entry(key).or_insert_with(|| (shift.clone(), line));
                if entry.0.end != shift.end || entry.0.timezone != shift.timezone {
                    problems.push(format!(
                        "line {line}: shift of {} starting {} differs from line {}",
                        shift.agent_id, shift.start, entry.1
                    ));
                    continue;
                }
                let outside = |start, end| start < shift.start || end > shift.end;
                if let Some(brk) = brk {
                    if outside(brk.start, brk.end) {
                        problems.push(format!("line {line}: the break lies outside the shift"));
                        continue;
                    }
                    entry.0.breaks.push(brk);
                }
                if let Some(activity) = activity {
                    if outside(activity.start, activity.end) {
                        problems.push(format!("line {line}: the activity lies outside the shift"));
                        continue;
                    }
                    entry.0.activities.push(activity);
                }
            }
            Err(problem) => problems.push(format!("line {line}: {problem}")),
        }
    }
    // One agent's shifts must not overlap.
    let mut list: Vec<(ImportedShift, u64)> = shifts.into_values().collect();
    list.sort_by(|a, b| (&a.0.agent_id, a.0.start).cmp(&(&b.0.agent_id, b.0.start)));
    for pair in list.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.0.agent_id == b.0.agent_id && b.0.start < a.0.end {
            problems.push(format!(
                "line {}: this shift of {} overlaps the one of line {}",
                b.1, b.0.agent_id, a.1
            ));
        }
    }
    if list.is_empty() && problems.total == 0 {
        problems.push("the file has no schedule rows".into());
    }
    if problems.total > 0 {
        return Err(problems);
    }
    let shifts = list
        .into_iter()
        .map(|(mut shift, _)| {
            shift.breaks.sort_by_key(|b| b.start);
            shift.activities.sort_by_key(|a| a.start);
            shift
        })
        .collect();
    Ok((shifts, lines))
}

/// A row: its shift, and the break and the titled activity it gives, if any.
type Row = (ImportedShift, Option<BreakWindow>, Option<TitledSpan>);

fn parse_row(field: &dyn Fn(&str) -> String) -> Result<Row, String> {
    let agent = field("agent");
    if agent.is_empty() {
        return Err("agent is empty".into());
    }
    if matches!(agent.as_str(), "." | "..")
        || agent.len() > MAX_AGENT_ID_LEN
        || !agent.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(format!(
            "agent {} is not an agent id: 1 to {MAX_AGENT_ID_LEN} printable ASCII \
             characters, not `.` or `..`",
            quoted(&agent)
        ));
    }
    let zone_text = field("timezone");
    let zone: Option<Tz> = if zone_text.is_empty() {
        None
    } else {
        Some(
            zone_text
                .parse()
                .map_err(|_| format!("timezone {} is not an IANA time zone", quoted(&zone_text)))?,
        )
    };
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, String> {
        let text = field(name);
        if text.is_empty() {
            return Ok(None);
        }
        parse_time(&text, zone)
            .map(Some)
            .map_err(|e| format!("{name} {e}"))
    };
    let start = time("shift_start")?.ok_or("shift_start is empty")?;
    let end = time("shift_end")?.ok_or("shift_end is empty")?;
    if end <= start {
        return Err("shift_end is not after shift_start".into());
    }
    if end - start > imported::MAX_SHIFT {
        return Err("the shift is longer than 24 hours".into());
    }
    let shift = ImportedShift {
        agent_id: agent,
        start,
        end,
        timezone: zone.map(|z| z.name().to_owned()),
        breaks: Vec::new(),
        activities: Vec::new(),
    };
    let (break_start, break_end) = (time("break_start")?, time("break_end")?);
    let kind = field("break_type");
    if kind.chars().count() > MAX_BREAK_TYPE_LEN {
        return Err(format!(
            "break_type {} is longer than {MAX_BREAK_TYPE_LEN} characters",
            quoted(&kind)
        ));
    }
    let mandatory_text = field("mandatory");
    let brk = match (break_start, break_end) {
        (None, None) if kind.is_empty() && mandatory_text.is_empty() => None,
        (Some(s), Some(e)) if e > s => Some(BreakWindow {
            start: s,
            end: e,
            kind: if kind.is_empty() {
                "BREAK".to_owned()
            } else {
                kind.to_uppercase()
            },
            mandatory: match mandatory_text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "y" => true,
                "false" | "no" | "0" | "n" | "" => false,
                _ => {
                    return Err(format!(
                        "mandatory {} is not true or false",
                        quoted(&mandatory_text)
                    ));
                }
            },
        }),
        (Some(_), Some(_)) => return Err("break_end is not after break_start".into()),
        _ => return Err("a break needs both break_start and break_end".into()),
    };
    let title = field("activity");
    if title.chars().count() > MAX_TITLE_LEN {
        return Err(format!(
            "activity {} is longer than {MAX_TITLE_LEN} characters",
            quoted(&title)
        ));
    }
    let activity = match (time("activity_start")?, time("activity_end")?) {
        (None, None) if title.is_empty() => None,
        _ if title.is_empty() => {
            return Err("activity_start and activity_end need an activity title".into());
        }
        (Some(start), Some(end)) if end > start => Some(TitledSpan { start, end, title }),
        (Some(_), Some(_)) => return Err("activity_end is not after activity_start".into()),
        _ => {
            return Err(format!(
                "activity {} needs both activity_start and activity_end",
                quoted(&title)
            ));
        }
    };
    Ok((shift, brk, activity))
}

/// RFC 3339, or a local time in `zone`.
fn parse_time(text: &str, zone: Option<Tz>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .ok_or_else(|| {
        format!(
            "{} is not a time (2026-11-23 09:00 or RFC 3339)",
            quoted(text)
        )
    })?;
    let zone = zone.ok_or_else(|| {
        format!(
            "{} has no offset and the row names no timezone",
            quoted(text)
        )
    })?;
    zone.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            format!(
                "{} does not exist in {} (a clock change)",
                quoted(text),
                zone.name()
            )
        })
}

/// A schedules file as received, not yet checked (not even as UTF-8).
#[derive(Debug, Clone)]
pub struct ImportFile(Bytes);

impl From<Bytes> for ImportFile {
    fn from(bytes: Bytes) -> ImportFile {
        ImportFile(bytes)
    }
}

impl From<String> for ImportFile {
    fn from(text: String) -> ImportFile {
        ImportFile(Bytes::from(text))
    }
}

impl From<&String> for ImportFile {
    fn from(text: &String) -> ImportFile {
        ImportFile(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<Vec<u8>> for ImportFile {
    fn from(bytes: Vec<u8>) -> ImportFile {
        ImportFile(Bytes::from(bytes))
    }
}

impl From<&str> for ImportFile {
    fn from(text: &str) -> ImportFile {
        ImportFile(Bytes::copy_from_slice(text.as_bytes()))
    }
}

/// A valid schedules file, ready to store.
#[derive(Debug, Clone)]
pub struct CheckedFile {
    shifts: Vec<ImportedShift>,
    /// Its agents, sorted.
    agent_ids: Vec<String>,
    lines: usize,
    sha256: String,
}

impl CheckedFile {
    pub fn summary(&self) -> ImportSummary {
        ImportSummary {
            shifts: self.shifts.len(),
            agents: self.agent_ids.len(),
            sha256: self.sha256.clone(),
        }
    }
}

/// Checks a whole file on a blocking thread (a file of the largest size takes the best
/// part of a second of CPU, which would hold up every task of its runtime thread).
pub async fn check(file: impl Into<ImportFile>) -> Result<CheckedFile, ImportErrors> {
    let ImportFile(bytes) = file.into();
    crate::tasks::spawn_blocking(move || check_now(&bytes))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn check_now(bytes: &[u8]) -> Result<CheckedFile, ImportErrors> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = 1 + good.iter().filter(|b| **b == b'\n').count();
        let column = 1 + good.len() - good.iter().rposition(|b| *b == b'\n').map_or(0, |n| n + 1);
        ImportErrors::one(format!(
            "line {line}: byte {column} of the line is not UTF-8 text (the file must be UTF-8)"
        ))
    })?;
    let (shifts, lines) = parse(text)?;
    let mut agent_ids: Vec<String> = shifts.iter().map(|s| s.agent_id.clone()).collect();
    agent_ids.dedup();
    Ok(CheckedFile {
        shifts,
        agent_ids,
        lines,
        sha256: hex::encode(Sha256::digest(bytes)),
    })
}

/// What to do once an import is in force, with the agents it covers (the transition
/// engine forgets what it cached for them).
pub type InForce = Box<dyn FnOnce(Vec<String>) -> BoxFuture<'static, ()> + Send>;

/// An import started by [`Imports::start`]: stored in a task of its own, which goes on
/// whether or not this is kept.
#[derive(Debug)]
pub struct ImportJob {
    view: ImportJobView,
    task: tokio::task::JoinHandle<Result<ImportSummary, ImportError>>,
}

impl ImportJob {
    /// The import as it was started (`storing`).
    pub fn view(&self) -> &ImportJobView {
        &self.view
    }

    /// Waits until the import is in force and in place, or failed.
    pub async fn finished(self) -> Result<ImportSummary, ImportError> {
        self.task
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// Checks and stores a CSV to the end, as [`Imports::start`] does (`actor` did it). A
/// running daemon does not see it until it starts again: import through its [`Imports`]
/// instead (what `POST /v1/schedules/imports` does).
pub async fn import(
    store: &Store,
    file: impl Into<ImportFile>,
    actor: &str,
) -> Result<ImportSummary, ImportError> {
    let file = check(file).await?;
    let view = begin(store, &file, actor).await?;
    run(
        store,
        &view.job_id,
        &file,
        actor,
        Clock::Wall,
        Box::new(|_| Box::pin(async {})),
    )
    .await
}

/// Records the import of `file` as `storing`, giving up any other still `storing` (see
/// the module's doc).
async fn begin(
    store: &Store,
    file: &CheckedFile,
    actor: &str,
) -> Result<ImportJobView, ImportError> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = Utc::now();
    let new = NewImport {
        id: &id,
        actor,
        sha256: &file.sha256,
        lines: file.lines,
        shifts: file.shifts.len(),
        agents: file.agent_ids.len(),
    };
    let mut tx = store.begin_write().await?;
    imported::create(&mut tx, &new, now, ABANDONED).await?;
    tx.commit().await?;
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let row = ImportRow {
        id,
        actor: actor.to_owned(),
        sha256: file.sha256.clone(),
        lines: count(file.lines),
        shifts: count(file.shifts.len()),
        agents: count(file.agent_ids.len()),
        state: "storing".to_owned(),
        stored: 0,
        applied: 0,
        error: None,
        created_at: crate::store::to_ms(now),
        heartbeat_at: crate::store::to_ms(now),
        in_force_at: None,
        finished_at: None,
    };
    Ok(ImportJobView::of(row, now))
}

/// Stores the import `id` of `file` (recorded by [`begin`]) and puts it in force; a
/// failure before it is in force marks it failed.
async fn run(
    store: &Store,
    id: &str,
    file: &CheckedFile,
    actor: &str,
    clock: Clock,
    in_force: InForce,
) -> Result<ImportSummary, ImportError> {
    if let Err(error) = store_in_force(store, id, file, actor, clock).await {
        tracing::warn!(import = id, %error, "a schedules import failed; none of it is in force");
        let failed = async {
            let mut tx = store.begin_write().await?;
            imported::fail(&mut tx, id, &error.to_string(), Utc::now()).await?;
            tx.commit().await
        };
        if let Err(e) = failed.await {
            tracing::warn!(import = id, error = %e, "cannot mark the import failed; the next one will");
        }
        return Err(error);
    }
    in_force(file.agent_ids.clone()).await;
    let summary = file.summary();
    tracing::info!(
        shifts = summary.shifts,
        agents = summary.agents,
        "schedules imported"
    );
    // In force already: what is left only tidies, and the next import finishes it.
    if let Err(error) = tidy(store).await {
        tracing::warn!(import = id, %error, "an import in force is not all in place yet; the next import moves the rest");
    }
    Ok(summary)
}

/// Steps 2 and 3 of the module's doc.
async fn store_in_force(
    store: &Store,
    id: &str,
    file: &CheckedFile,
    actor: &str,
    clock: Clock,
) -> Result<(), ImportError> {
    tidy(store).await?;
    for batch in file.shifts.chunks(STAGE_BATCH) {
        let mut tx = store.begin_write_unflushed().await?;
        if !imported::stage(&mut tx, id, batch, Utc::now()).await? {
            return Err(ImportError::Abandoned);
        }
        tx.commit().await?;
    }
    let summary = file.summary();
    let mut tx = store.begin_write().await?;
    if !imported::put_in_force(&mut tx, id, Utc::now()).await? {
        return Err(ImportError::Abandoned);
    }
    audit::append(
        &mut tx,
        &NewEntry {
            at: clock.now(),
            actor,
            action: "schedules.imported",
            agent_id: None,
            subject_id: None,
            detail: json!({
                "import": id,
                "shifts": summary.shifts,
                "agents": summary.agents,
                "sha256": summary.sha256,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Finishes what earlier imports left: moves the shifts of imports in force into place,
/// oldest first, and removes those of failed ones; a short transaction per batch.
async fn tidy(store: &Store) -> Result<(), sqlx::Error> {
    while let Some((id, in_force_at)) = imported::oldest_applying(store.reader()).await? {
        for end in imported::batch_ends(store.reader(), &id, APPLY_BATCH).await? {
            let mut tx = store.begin_write().await?;
            imported::apply_through(&mut tx, &id, (&end.0, end.1), in_force_at).await?;
            tx.commit().await?;
        }
        let mut tx = store.begin_write().await?;
        imported::complete(&mut tx, &id, Utc::now()).await?;
        tx.commit().await?;
    }
    loop {
        let mut tx = store.begin_write_unflushed().await?;
        let cleared = imported::clear_failed_batch(&mut tx, CLEAR_BATCH).await?;
        tx.commit().await?;
        if cleared == 0 {
            return Ok(());
        }
    }
}

/// The agents with imported shifts, in memory, and the way in for new imports. Clones
/// share one set.
#[derive(Clone)]
pub struct Imports {
    store: Store,
    covered: Arc<RwLock<HashSet<String>>>,
    /// Held while an import is started, so two cannot both find none `storing`.
    starting: Arc<tokio::sync::Mutex<()>>,
    /// The id of this process's import being stored, if any.
    storing: Arc<Mutex<Option<String>>>,
}

/// Clears [`Imports::storing`] when its import's task ends, however it ends.
struct Storing(Arc<Mutex<Option<String>>>);

impl Drop for Storing {
    fn drop(&mut self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

impl std::fmt::Debug for Imports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imports")
            .field("agents", &self.agents())
            .finish_non_exhaustive()
    }
}

impl Imports {
    /// The imports the database holds (those in force but not all in place included).
    pub async fn load(store: &Store) -> Result<Imports, sqlx::Error> {
        let covered = imported::agents(store.reader()).await?;
        if !covered.is_empty() {
            tracing::info!(
                agents = covered.len(),
                "imported schedules answer for the agents they cover"
            );
        }
        Ok(Imports {
            store: store.clone(),
            covered: Arc::new(RwLock::new(covered.into_iter().collect())),
            starting: Arc::default(),
            storing: Arc::default(),
        })
    }

    /// Whether `agent_id` has imported shifts (then they, not the platform, answer).
    pub fn covers(&self, agent_id: &str) -> bool {
        self.covered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(agent_id)
    }

    /// How many agents have imported shifts.
    pub fn agents(&self) -> usize {
        self.covered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Starts storing `file` in a task of its own (see the module's doc) and returns
    /// once the import is recorded; `Busy` while another of this process's imports is
    /// being stored or put in place. Once in force, the agents it names are answered
    /// from it, then `in_force` runs.
    pub async fn start(
        &self,
        file: CheckedFile,
        actor: &str,
        clock: Clock,
        in_force: InForce,
    ) -> Result<ImportJob, ImportError> {
        let turn = self.starting.lock().await;
        let storing = self
            .storing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(running) = storing {
            return Err(ImportError::Busy(running));
        }
        let view = begin(&self.store, &file, actor).await?;
        *self
            .storing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(view.job_id.clone());
        let storing = Storing(Arc::clone(&self.storing));
        drop(turn);
        let (store, covered) = (self.store.clone(), Arc::clone(&self.covered));
        let (id, actor) = (view.job_id.clone(), actor.to_owned());
        let in_force: InForce = Box::new(move |agents| {
            Box::pin(async move {
                covered
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(agents.iter().cloned());
                in_force(agents).await;
            })
        });
        let task = crate::tasks::spawn(async move {
            let _storing = storing;
            run(&store, &id, &file, &actor, clock, in_force).await
        });
        Ok(ImportJob { view, task })
    }
}

/// The schedule at `now` from imported shifts: ACTIVE inside one, else INACTIVE with
/// the next; the break windows of every shift given.
pub fn schedule_at(shifts: &[ImportedShift], now: DateTime<Utc>) -> Schedule {
    let current = shifts.iter().find(|s| s.start <= now && now < s.end);
    let next = shifts
        .iter()
        .filter(|s| s.start > now)
        .min_by_key(|s| s.start);
    let (status, shift) = match current {
        Some(c) => (ScheduleStatus::Active, Some(c)),
        None => (ScheduleStatus::Inactive, next),
    };
    Schedule {
        status,
        timezone: shift.and_then(|s| s.timezone.clone()),
        shift_start: shift.map(|s| s.start),
        shift_end: shift.map(|s| s.end),
        breaks: Some(shifts.iter().flat_map(|s| s.breaks.clone()).collect()),
        activities: shifts.iter().flat_map(|s| s.activities.clone()).collect(),
    }
}

/// The platform client with imported schedules in front (see the module docs).
///
/// Every other operation is passed through. A method of [`ContactCenter`] not written
/// here would answer its default (`NotOffered`) even where the platform offers it, so
/// the test `the_wrapper_implements_every_method_of_the_platform_trait` reads both
/// sources and fails until a method added to the trait is written here too.
pub struct ImportedSchedules {
    inner: Arc<dyn ContactCenter>,
    imports: Imports,
}

impl ImportedSchedules {
    pub fn new(inner: Arc<dyn ContactCenter>, imports: Imports) -> ImportedSchedules {
        ImportedSchedules { inner, imports }
    }

    /// `inner` with the imported schedules `store` holds in front.
    pub async fn wrap(
        inner: Arc<dyn ContactCenter>,
        store: &Store,
    ) -> Result<Arc<dyn ContactCenter>, sqlx::Error> {
        let imports = Imports::load(store).await?;
        Ok(Arc::new(ImportedSchedules::new(inner, imports)))
    }

    async fn imported(&self, agent_id: &str) -> Result<Option<Schedule>, CxoneError> {
        if !self.imports.covers(agent_id) {
            return Ok(None);
        }
        let now = Utc::now();
        let shifts = imported::for_agent(
            self.imports.store.reader(),
            agent_id,
            now - TimeDelta::days(1),
        )
        .await
        .map_err(|e| CxoneError::Decode(format!("cannot read imported schedules: {e}")))?;
        Ok(shifts.map(|s| schedule_at(&s, now)))
    }
}

#[async_trait]
impl ContactCenter for ImportedSchedules {
    async fn schedule(&self, agent_id: &str) -> Result<Schedule, CxoneError> {
        match self.imported(agent_id).await? {
            Some(schedule) => Ok(schedule),
            None => self.inner.schedule(agent_id).await,
        }
    }

    async fn break_status(&self, agent_id: &str) -> Result<BreakStatus, CxoneError> {
        match self.imported(agent_id).await? {
            Some(schedule) => Ok(break_status_from(&schedule, Utc::now())),
            None => self.inner.break_status(agent_id).await,
        }
    }

    async fn schedules(&self, agent_ids: &[String]) -> Result<Vec<(String, Schedule)>, CxoneError> {
        // The book falls back on `schedule` per agent, which answers imported ones.
        let mut own = Vec::new();
        let mut rest = Vec::new();
        for id in agent_ids {
            match self.imported(id).await? {
                Some(s) => own.push((id.clone(), s)),
                None => rest.push(id.clone()),
            }
        }
        if rest.is_empty() {
            return Ok(own);
        }
        let mut answer = self.inner.schedules(&rest).await?;
        answer.extend(own);
        Ok(answer)
    }

    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, CxoneError> {
        self.inner.list_agents(filter).await
    }

    async fn agent_state(&self, agent_id: &str) -> Result<AgentSnapshot, CxoneError> {
        self.inner.agent_state(agent_id).await
    }

    async fn set_agent_state(&self, change: StateChange<'_>) -> Result<AgentSnapshot, CxoneError> {
        self.inner.set_agent_state(change).await
    }

    async fn check_access(&self) -> Result<(), CxoneError> {
        self.inner.check_access().await
    }

    fn paused(&self) -> Result<(), CxoneError> {
        self.inner.paused()
    }

    async fn open_feed(&self, request: &SubscriptionRequest) -> Result<ChangeFeed, CxoneError> {
        self.inner.open_feed(request).await
    }

    async fn poll_feed(&self, feed: &mut ChangeFeed) -> Result<FeedPoll, CxoneError> {
        self.inner.poll_feed(feed).await
    }

    async fn close_feed(&self, feed: &ChangeFeed) -> Result<(), CxoneError> {
        self.inner.close_feed(feed).await
    }

    async fn create_subscription(
        &self,
        request: &SubscriptionRequest,
    ) -> Result<Subscription, CxoneError> {
        self.inner.create_subscription(request).await
    }

    async fn poll_subscription(&self, id: &str) -> Result<Vec<ObservedAgent>, CxoneError> {
        self.inner.poll_subscription(id).await
    }

    async fn delete_subscription(&self, id: &str) -> Result<(), CxoneError> {
        self.inner.delete_subscription(id).await
    }

    async fn list_skills(&self) -> Result<Vec<Skill>, CxoneError> {
        self.inner.list_skills().await
    }

    async fn list_queues(&self) -> Result<Vec<Queue>, CxoneError> {
        self.inner.list_queues().await
    }

    async fn skill_activity(&self, skill_ids: &[String]) -> Result<Vec<SkillTile>, CxoneError> {
        self.inner.skill_activity(skill_ids).await
    }

    async fn queue_stats(&self, queue_ids: &[String]) -> Result<Vec<QueueTile>, CxoneError> {
        self.inner.queue_stats(queue_ids).await
    }

    fn aggregation_offered(&self) -> Result<(), CxoneError> {
        self.inner.aggregation_offered()
    }

    async fn submit_aggregation(
        &self,
        query: &crate::cxone::AggregationQuery,
    ) -> Result<String, CxoneError> {
        self.inner.submit_aggregation(query).await
    }

    async fn aggregation_page(
        &self,
        query_id: &str,
        limit: u32,
        offset: u64,
    ) -> Result<crate::cxone::AggregationPage, CxoneError> {
        self.inner.aggregation_page(query_id, limit, offset).await
    }

    fn dialect(&self) -> &'static str {
        self.inner.dialect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rstest_reuse::apply;

    use super::*;
    use crate::store::Backend;
    use crate::store::testing::{backends, temp_store_on};

    /// The source from `start` to the end of its block (a `}` at the start of a line).
    fn block<'a>(source: &'a str, start: &str) -> &'a str {
        let from = source.find(start).unwrap_or_else(|| panic!("no `{start}`"));
        let rest = &source[from..];
        &rest[..rest.find("\n}\n").expect("the block ends")]
    }

    /// The names of the functions a trait or impl block declares.
    fn fn_names(block: &str) -> BTreeSet<&str> {
        block
            .lines()
            .filter_map(|line| {
                let line = line.trim_start();
                let line = line.strip_prefix("async ").unwrap_or(line);
                let rest = line.strip_prefix("fn ")?;
                rest.split(['(', '<']).next()
            })
            .collect()
    }

    #[test]
    fn the_wrapper_implements_every_method_of_the_platform_trait() {
        let platform = fn_names(block(
            include_str!("../cxone/mod.rs"),
            "pub trait ContactCenter",
        ));
        let wrapper = fn_names(block(
            include_str!("imported_schedules.rs"),
            "impl ContactCenter for ImportedSchedules",
        ));
        assert!(platform.len() > 20, "read the trait: {platform:?}");
        // `not_offered` builds an error from `dialect`, which is passed through.
        let missing: Vec<&&str> = platform
            .difference(&wrapper)
            .filter(|name| **name != "not_offered")
            .collect();
        assert!(
            missing.is_empty(),
            "ImportedSchedules does not pass {missing:?} through to the platform"
        );
    }

    const HEADER: &str =
        "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone\n";

    #[test]
    fn rows_group_into_shifts_with_local_times_in_the_rows_zone() {
        let csv = format!(
            "{HEADER}\
             u_1,2026-11-23 09:00,2026-11-23 17:30,2026-11-23 12:00,2026-11-23 12:30,lunch,true,America/New_York\n\
             u_1,2026-11-23 09:00,2026-11-23 17:30,2026-11-23 15:00,2026-11-23 15:15,BREAK,no,America/New_York\n\
             u_2,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,,,,,\n"
        );
        let shifts = parse_csv(&csv).unwrap();
        assert_eq!(shifts.len(), 2);
        let u1 = &shifts[0];
        assert_eq!(u1.start.to_rfc3339(), "2026-11-23T14:00:00+00:00");
        assert_eq!(u1.breaks.len(), 2);
        assert!(u1.breaks[0].mandatory && u1.breaks[0].kind == "LUNCH");
        assert!(!u1.breaks[1].mandatory);
        assert!(shifts[1].breaks.is_empty());
    }

    #[test]
    fn every_bad_row_is_named_by_its_line() {
        let csv = format!(
            "{HEADER}\
             u_1,2026-11-23 09:00,2026-11-23 08:00,,,,,America/New_York\n\
             ,2026-11-23 09:00,2026-11-23 17:00,,,,,America/New_York\n\
             u_3,2026-11-23 09:00,2026-11-23 17:00,,,,,Mars/Olympus\n\
             u_4,2026-11-23 09:00,2026-11-23 17:00,,,,,\n\
             u_5,2026-11-23 09:00,2026-11-23 17:00,2026-11-23 18:00,2026-11-23 18:30,LUNCH,true,Europe/London\n\
             u_6,2026-11-23 09:00,2026-11-23 17:00,2026-11-23 12:00,2026-11-23 12:30,LUNCH,perhaps,Europe/London\n"
        );
        let err = parse_csv(&csv).unwrap_err().problems;
        assert_eq!(err.len(), 6, "{err:?}");
        assert!(
            err[0].starts_with("line 2: shift_end is not after"),
            "{err:?}"
        );
        assert!(err[1].starts_with("line 3: agent is empty"));
        assert!(err[2].starts_with("line 4: timezone `Mars/Olympus`"));
        assert!(err[3].starts_with("line 5: shift_start") && err[3].contains("no timezone"));
        assert!(err[4].starts_with("line 6: the break lies outside"));
        assert!(err[5].starts_with("line 7: mandatory `perhaps`"));
        let header = parse_csv("agent,start\nu_1,x\n").unwrap_err().problems;
        assert!(
            header[0].starts_with("line 1: the header lacks shift_start"),
            "{header:?}"
        );
    }

    const WITH_ACTIVITIES: &str = "agent,shift_start,shift_end,break_start,break_end,\
        break_type,mandatory,timezone,activity,activity_start,activity_end\n";

    #[test]
    fn the_activity_columns_give_titled_work_which_the_schedule_carries() {
        let csv = format!(
            "{WITH_ACTIVITIES}\
             u_1,2026-11-23 09:00,2026-11-23 17:30,2026-11-23 12:00,2026-11-23 12:30,LUNCH,true,Europe/London,,,\n\
             u_1,2026-11-23 09:00,2026-11-23 17:30,,,,,Europe/London,Training,2026-11-23 14:00,2026-11-23 15:00\n\
             u_1,2026-11-23 09:00,2026-11-23 17:30,2026-11-23 15:00,2026-11-23 15:15,BREAK,no,Europe/London, Team meeting ,2026-11-23 10:00,2026-11-23 11:00\n\
             u_2,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,,,,,,,,\n"
        );
        let shifts = parse_csv(&csv).unwrap();
        let u1 = &shifts[0];
        assert_eq!(u1.breaks.len(), 2);
        let titled: Vec<_> = u1
            .activities
            .iter()
            .map(|a| (a.start.to_rfc3339(), a.end.to_rfc3339(), a.title.as_str()))
            .collect();
        assert_eq!(
            titled,
            [
                (
                    "2026-11-23T10:00:00+00:00".to_owned(),
                    "2026-11-23T11:00:00+00:00".to_owned(),
                    "Team meeting"
                ),
                (
                    "2026-11-23T14:00:00+00:00".to_owned(),
                    "2026-11-23T15:00:00+00:00".to_owned(),
                    "Training"
                ),
            ]
        );
        assert!(shifts[1].activities.is_empty());
        let at_ten = "2026-11-23T10:30:00Z".parse().unwrap();
        let schedule = schedule_at(&shifts[..1], at_ten);
        assert_eq!(schedule.activities, u1.activities);
        // The old header, without the columns, still reads: no activities.
        let old = format!("{HEADER}u_2,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,,,,,\n");
        assert!(parse_csv(&old).unwrap()[0].activities.is_empty());
    }

    #[test]
    fn a_malformed_activity_is_refused_naming_its_line() {
        let row = |activity: &str| {
            format!("u_1,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,,,,,,{activity}\n")
        };
        let csv = [
            WITH_ACTIVITIES.to_owned(),
            row("Training,2026-11-23T09:00:00Z,"),
            row(",2026-11-23T09:00:00Z,2026-11-23T10:00:00Z"),
            row("Training,2026-11-23T10:00:00Z,2026-11-23T09:00:00Z"),
            row("Training,2026-11-23T15:00:00Z,2026-11-23T17:00:00Z"),
            row("Training,at nine,2026-11-23T10:00:00Z"),
        ]
        .concat();
        let err = parse_csv(&csv).unwrap_err().problems;
        assert_eq!(err.len(), 5, "{err:?}");
        assert!(
            err[0].starts_with("line 2: activity `Training` needs both"),
            "{err:?}"
        );
        assert!(
            err[1].starts_with("line 3: activity_start and activity_end need an activity title")
        );
        assert!(err[2].starts_with("line 4: activity_end is not after"));
        assert!(err[3].starts_with("line 5: the activity lies outside the shift"));
        assert!(
            err[4].starts_with("line 6: activity_start `at nine`"),
            "{err:?}"
        );
        let partial = "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,\
                       timezone,activity\nu_1,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,,,,,,x\n";
        let header = parse_csv(partial).unwrap_err().problems;
        assert!(
            header[0].starts_with("line 1: the header has some of the activity columns"),
            "{header:?}"
        );
    }

    #[apply(backends)]
    #[tokio::test]
    async fn imported_activities_are_stored_and_read_back(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let csv = format!(
            "{WITH_ACTIVITIES}\
             u_1,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,,,,,,Team meeting,2026-11-23T09:00:00Z,2026-11-23T10:00:00Z\n"
        );
        import(&store, &csv, "test").await.unwrap();
        let after = "2026-11-23T00:00:00Z".parse().unwrap();
        let read = imported::for_agent(store.reader(), "u_1", after)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, parse_csv(&csv).unwrap());
        assert_eq!(read[0].activities[0].title, "Team meeting");
    }

    #[test]
    fn overlapping_shifts_of_one_agent_are_refused() {
        let csv = format!(
            "{HEADER}\
             u_1,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,,,,,\n\
             u_1,2026-11-23T15:00:00Z,2026-11-23T20:00:00Z,,,,,\n"
        );
        let err = parse_csv(&csv).unwrap_err().problems;
        assert_eq!(
            err,
            ["line 3: this shift of u_1 overlaps the one of line 2"]
        );
    }

    fn row(agent: &str, tail: &str) -> String {
        format!("{agent},2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,{tail}\n")
    }

    #[test]
    fn an_agent_id_the_api_would_refuse_is_a_line_error() {
        let longest = "a".repeat(128);
        let csv = [
            HEADER.to_owned(),
            row(&longest, ",,,,,"),
            row(&"a".repeat(129), ",,,,,"),
            row("u 1", ",,,,,"),
            row(".", ",,,,,"),
            row("..", ",,,,,"),
            row("ü_1", ",,,,,"),
        ]
        .concat();
        let err = parse_csv(&csv).unwrap_err();
        let lines: Vec<&str> = err
            .problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            lines,
            ["line 3", "line 4", "line 5", "line 6", "line 7"],
            "{err}"
        );
        assert!(
            err.problems[0]
                .contains("(129 characters) is not an agent id: 1 to 128 printable ASCII"),
            "{err}"
        );
        assert!(
            err.problems[1].starts_with("line 4: agent `u 1` is not an agent id"),
            "{err}"
        );
    }

    #[test]
    fn a_problem_quotes_at_most_an_excerpt_of_its_field() {
        let long = "Mars/".repeat(200_000);
        let csv = format!(
            "{HEADER}{}{}",
            row("u_1", &format!(",,,,{long}")),
            row("u_2", ",,,,\"Mars\nOlympus\"")
        );
        let err = parse_csv(&csv).unwrap_err();
        let first = &err.problems[0];
        assert!(
            first.starts_with(&format!(
                "line 2: timezone `{}…` (1000000 characters) is not an IANA time zone",
                &long[..40]
            )),
            "{first}"
        );
        assert!(first.len() < 200, "{} bytes", first.len());
        // A control character is shown escaped, not written to the terminal.
        assert_eq!(
            err.problems[1],
            "line 3: timezone `Mars\\nOlympus` is not an IANA time zone"
        );
    }

    #[test]
    fn the_first_hundred_problems_are_listed_and_all_are_counted() {
        let csv = format!("{HEADER}{}", row("u_1", ",,,perhaps,").repeat(250));
        let err = parse_csv(&csv).unwrap_err();
        assert_eq!((err.problems.len(), err.total), (MAX_LISTED_PROBLEMS, 250));
        assert!(
            err.problems[99].starts_with("line 101: "),
            "{}",
            err.problems[99]
        );
        assert!(err.to_string().ends_with("\n… and 150 more"), "{err}");
    }

    #[test]
    fn break_types_and_activity_titles_longer_than_their_limits_are_line_errors() {
        let csv = format!(
            "{WITH_ACTIVITIES}\
             u_1,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,2026-11-23T12:00:00Z,2026-11-23T12:30:00Z,{},true,,,,\n\
             u_2,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,,,,,,{},2026-11-23T09:00:00Z,2026-11-23T10:00:00Z\n\
             u_3,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,2026-11-23T12:00:00Z,2026-11-23T12:30:00Z,{},true,,{},2026-11-23T09:00:00Z,2026-11-23T10:00:00Z\n",
            "B".repeat(65),
            "T".repeat(129),
            "B".repeat(64),
            "T".repeat(128),
        );
        let err = parse_csv(&csv).unwrap_err();
        assert_eq!(err.total, 2, "{err}");
        assert!(
            err.problems[0].starts_with("line 2: break_type `BBB"),
            "{err}"
        );
        assert!(
            err.problems[0].ends_with("is longer than 64 characters"),
            "{err}"
        );
        assert!(
            err.problems[1].starts_with("line 3: activity `TTT"),
            "{err}"
        );
        assert!(
            err.problems[1].ends_with("is longer than 128 characters"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_file_that_is_not_utf8_is_refused_naming_the_line_and_byte() {
        let mut bytes = format!("{HEADER}{}", row("u_1", ",,,,")).into_bytes();
        bytes.extend_from_slice(b"u_\xff2,2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,,,,,\n");
        let err = check(ImportFile(Bytes::from(bytes))).await.unwrap_err();
        assert_eq!(
            err.problems,
            ["line 3: byte 3 of the line is not UTF-8 text (the file must be UTF-8)"]
        );
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_second_import_is_refused_while_one_is_stored_and_taken_once_it_is_done(
        backend: Backend,
    ) {
        let (store, _dir) = temp_store_on(backend).await;
        let imports = Imports::load(&store).await.unwrap();
        let file = |agent: &str| {
            format!("{HEADER}{agent},2026-11-23T08:00:00Z,2026-11-23T16:00:00Z,,,,,\n")
        };
        let nothing = || -> InForce { Box::new(|_| Box::pin(async {})) };
        let first = imports
            .start(
                check(file("u_1")).await.unwrap(),
                "a",
                Clock::Wall,
                nothing(),
            )
            .await
            .unwrap();
        let second = imports
            .start(
                check(file("u_2")).await.unwrap(),
                "b",
                Clock::Wall,
                nothing(),
            )
            .await;
        assert!(
            matches!(&second, Err(ImportError::Busy(id)) if *id == first.view().job_id),
            "{second:?}"
        );
        first.finished().await.unwrap();
        assert!(imports.covers("u_1") && !imports.covers("u_2"));
        let third = imports
            .start(
                check(file("u_2")).await.unwrap(),
                "b",
                Clock::Wall,
                nothing(),
            )
            .await
            .unwrap();
        let id = third.view().job_id.clone();
        third.finished().await.unwrap();
        assert!(imports.covers("u_2"));
        let done = job(&store, &id).await.unwrap().unwrap();
        assert_eq!(
            (done.state, done.in_force, done.applied),
            (ImportState::Completed, true, 1)
        );
    }
}
