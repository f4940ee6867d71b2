//! Compliance reports: per-agent transitions, rejections, latency, idle time, time in
//! each state and schedule adherence over a window, exported as CSV, JSON or one
//! self-contained HTML page. Agents are named, with their teams, from the store's agent
//! roster (the platform's last listing), so a report makes no platform call.
//!
//! A report is built in two steps so a caller (the HTTP handler) can fail cleanly
//! before the first byte goes out: [`Report::build`] aggregates in SQL (one row per
//! agent, never one per attempt), then [`Report::write`] renders to a [`Sink`] chunk by
//! chunk. The JSON attempt log is read with a streaming cursor and written row by row,
//! so 200,000 attempts cost the same memory as 200.

mod csv_export;
pub mod day_view;
pub mod definitions;
mod html_export;
mod json_export;
mod summary;

use crate::store::Pool;
use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

pub use csv_export::text_cell;
pub use definitions::{Definitions, Subject};
/// HTML escaping as every page of wfmd writes it (tests compare pages' text with it).
pub use summary::{AgentDay, AgentSummary, MAX_DAY_VIEW, agent_day, summarize};

use crate::domain::adherence_rules::Judging;
use crate::domain::idle::Window;

/// Bytes gathered before they are handed to the sink: large enough that a sink call per
/// chunk costs nothing, small enough that memory stays flat.
const CHUNK_BYTES: usize = 64 * 1024;

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportFormat {
    #[default]
    Csv,
    Json,
    Html,
}

impl ReportFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Csv => "text/csv; charset=utf-8",
            ReportFormat::Json => "application/json",
            ReportFormat::Html => "text/html; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::Csv => "csv",
            ReportFormat::Json => "json",
            ReportFormat::Html => "html",
        }
    }
}

impl FromStr for ReportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(ReportFormat::Csv),
            "json" => Ok(ReportFormat::Json),
            "html" => Ok(ReportFormat::Html),
            _ => Err(format!(
                "unknown report format `{s}`; expected one of: csv, json, html"
            )),
        }
    }
}

/// Parses an IANA zone name (`America/New_York`).
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("unknown time zone `{name}`; expected an IANA name such as America/New_York")
    })
}

/// Where a report's bytes go, one chunk at a time.
pub trait Sink: Send {
    fn send(&mut self, chunk: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send;
}

/// A blocking writer as a sink: a file or stdout for the CLI, `io::sink()` for benches.
pub struct WriteSink<W>(pub W);

impl<W: io::Write + Send> Sink for WriteSink<W> {
    async fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.0.write_all(&chunk)
    }
}

/// A buffer in front of a sink that passes bytes on in [`CHUNK_BYTES`] pieces.
pub(crate) struct Chunked<'a, S: Sink> {
    pub buf: Vec<u8>,
    sink: &'a mut S,
}

impl<'a, S: Sink> Chunked<'a, S> {
    fn new(sink: &'a mut S) -> Self {
        Chunked {
            buf: Vec::with_capacity(CHUNK_BYTES + 4096),
            sink,
        }
    }

    /// Hands the buffer on once it is full enough.
    pub async fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 4096));
            self.sink.send(chunk).await?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read the report's data: {0}")]
    Store(#[from] sqlx::Error),
    #[error("cannot write the report: {0}")]
    Io(#[from] io::Error),
    #[error("cannot write the CSV report: {0}")]
    Csv(#[from] csv::Error),
}

/// A compliance report's aggregates, ready to render.
#[derive(Debug, Clone)]
pub struct Report {
    pub window: Window,
    pub generated_at: DateTime<Utc>,
    /// Zone times are printed in; UTC when `None`.
    pub zone: Option<Tz>,
    /// One summary per agent with an attempt or an interval in the window, by agent id,
    /// named from the store's agent roster (no platform call).
    pub agents: Vec<AgentSummary>,
    /// What each figure means, with the adherence rules that judged them and the zone;
    /// every format carries them (see [`definitions`]).
    pub definitions: Definitions,
    /// The team asked for and its members, when the report is one team's: the JSON
    /// attempt log keeps to them too, and the HTML page names the team.
    pub team: Option<(String, HashSet<String>)>,
}

impl Report {
    /// Aggregates the window; `now` ends intervals that are still open, and `judging`
    /// (the adherence rules and their grace) judges adherence.
    pub async fn build(
        pool: &Pool,
        window: Window,
        now: DateTime<Utc>,
        zone: Option<Tz>,
        judging: &Judging,
    ) -> Result<Report, ReportError> {
        let mut agents = summarize(pool, window, now, judging).await?;
        let roster = crate::store::roster::all(pool).await?;
        for agent in &mut agents {
            agent.set_names(&roster);
        }
        Ok(Report {
            window,
            generated_at: now,
            zone,
            agents,
            definitions: Definitions::compliance(judging, zone),
            team: None,
        })
    }

    /// Narrows the report to `members`, the agents of `team` (as asked for).
    pub fn keep_only(&mut self, team: &str, members: HashSet<String>) {
        self.agents.retain(|a| members.contains(&a.agent_id));
        self.team = Some((team.to_owned(), members));
    }

    /// Whether `agent` belongs in the report (every agent unless it is one team's).
    pub fn includes(&self, agent: &str) -> bool {
        self.team
            .as_ref()
            .is_none_or(|(_, members)| members.contains(agent))
    }

    /// Renders the report to `sink`; JSON also streams the attempt log from `pool`.
    pub async fn write(
        &self,
        format: ReportFormat,
        pool: &Pool,
        sink: &mut impl Sink,
    ) -> Result<(), ReportError> {
        let mut out = Chunked::new(sink);
        match format {
            ReportFormat::Csv => csv_export::write(self, &mut out).await?,
            ReportFormat::Json => json_export::write(self, pool, &mut out).await?,
            ReportFormat::Html => html_export::write(self, &mut out).await?,
        }
        out.flush().await?;
        Ok(())
    }

    /// The window for a title: `2026-11-02 00:00 – 2026-11-09 00:00 (Europe/Berlin)`,
    /// local times in the report's zone (UTC without one), seconds only where either
    /// end has them.
    pub fn window_label(&self) -> String {
        let (from, to) = (self.window.from, self.window.to);
        let format = if from.timestamp_subsec_nanos() == 0
            && to.timestamp_subsec_nanos() == 0
            && from.timestamp() % 60 == 0
            && to.timestamp() % 60 == 0
        {
            "%Y-%m-%d %H:%M"
        } else {
            "%Y-%m-%d %H:%M:%S"
        };
        let (zone, from, to) = match self.zone {
            None => (
                "UTC",
                from.format(format).to_string(),
                to.format(format).to_string(),
            ),
            Some(zone) => (
                zone.name(),
                from.with_timezone(&zone).format(format).to_string(),
                to.with_timezone(&zone).format(format).to_string(),
            ),
        };
        format!("{from} – {to} ({zone})")
    }

    /// An instant as RFC 3339 with milliseconds, in the report's zone.
    pub fn time(&self, at: DateTime<Utc>) -> String {
        time_in(self.zone, at)
    }
}

/// An instant as RFC 3339 with milliseconds, in `zone` (UTC without one).
pub fn time_in(zone: Option<Tz>, at: DateTime<Utc>) -> String {
    match zone {
        None => crate::time::rfc3339(at),
        Some(zone) => at
            .with_timezone(&zone)
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

#[cfg(test)]
mod tests;
