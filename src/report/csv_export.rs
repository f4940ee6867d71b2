//! The CSV export (RFC 4180): a header row, then one row per agent.
//!
//! Unknown values (no attempts, no adherence yet) are empty fields, not zeros, so a
//! spreadsheet average does not count them. Every row repeats the window, so rows stay
//! meaningful when files from several windows are concatenated. Text that came from
//! elsewhere (the agent id, name and team) goes through [`text_cell`], so opening the
//! file in a spreadsheet never runs a formula someone put into a name.
//!
//! The agent's name and team come last, after the window: columns are added only at the
//! end, so a spreadsheet or script that reads an older report's columns by position
//! still finds each of them where it was.

use std::borrow::Cow;

use super::{AgentSummary, Chunked, Report, ReportError, Sink};

/// A CSV cell for text that wfmd did not make itself (agent ids and names, teams,
/// reasons, dimension values…): one that a spreadsheet would take for a formula, because
/// it starts with `=`, `+`, `-`, `@`, a tab or a carriage return, gets a leading `'`
/// (OWASP's rule for CSV injection), which spreadsheets show as text. Every CSV writer
/// uses this for such cells; numbers wfmd computes are written as they are, so a negative
/// figure stays a number.
pub fn text_cell(text: &str) -> Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The columns, in order. New columns go at the end (see the module doc).
pub const COLUMNS: [&str; 28] = [
    "agent_id",
    "transitions",
    "succeeded",
    "rejections",
    "failed",
    "rejections_agent_not_scheduled",
    "rejections_mandatory_break_violation",
    "rejections_state_conflict",
    "violation_frequency",
    "latency_mean_ms",
    "latency_p95_ms",
    "idle_seconds",
    "seconds_ready",
    "seconds_not_ready",
    "seconds_paused",
    "seconds_idle",
    "seconds_logged_out",
    "seconds_on_contact",
    "seconds_acw",
    "adherence_pct",
    "unobserved_seconds",
    "from",
    "to",
    "name",
    "team_id",
    "team",
    "neutral_seconds",
    "authorised_seconds",
];

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn optional_text(value: Option<&str>) -> String {
    value.map(|v| text_cell(v).into_owned()).unwrap_or_default()
}

/// The cells of `agent`'s record, one per [`COLUMNS`] entry.
fn record(agent: &AgentSummary, from: &str, to: &str) -> Vec<String> {
    let head = [
        text_cell(&agent.agent_id).into_owned(),
        agent.transitions.to_string(),
        agent.succeeded.to_string(),
        agent.rejections.to_string(),
        agent.failed.to_string(),
        agent.rejections_agent_not_scheduled.to_string(),
        agent.rejections_mandatory_break_violation.to_string(),
        agent.rejections_state_conflict.to_string(),
        optional(agent.violation_frequency),
        optional(agent.latency_mean_ms),
        optional(agent.latency_p95_ms),
        agent.idle_seconds.to_string(),
    ];
    let by_state = agent.seconds_by_state().map(|s| s.to_string());
    let tail = [
        optional(agent.adherence_pct),
        optional(agent.unobserved_seconds),
        from.to_owned(),
        to.to_owned(),
        optional_text(agent.name.as_deref()),
        optional_text(agent.team_id.as_deref()),
        optional_text(agent.team.as_deref()),
        optional(agent.neutral_seconds),
        optional(agent.authorised_seconds),
    ];
    head.into_iter().chain(by_state).chain(tail).collect()
}

/// Appends one CSV record to `buf`. The csv writer owns its output until `into_inner`,
/// so each record gets a small writer of its own; that keeps `buf` free to hand to the
/// sink between records.
fn append(buf: &mut Vec<u8>, fields: &[impl AsRef<[u8]>]) -> Result<(), ReportError> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .buffer_capacity(1024)
        .from_writer(std::mem::take(buf));
    writer.write_record(fields)?;
    *buf = writer
        .into_inner()
        .map_err(|e| ReportError::Io(e.into_error()))?;
    Ok(())
}

pub(super) async fn write<S: Sink>(
    report: &Report,
    out: &mut Chunked<'_, S>,
) -> Result<(), ReportError> {
    append(&mut out.buf, &COLUMNS)?;
    let from = report.time(report.window.from);
    let to = report.time(report.window.to);
    for agent in &report.agents {
        append(&mut out.buf, &record(agent, &from, &to))?;
        out.maybe_flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{AgentSummary, COLUMNS, record};

    #[test]
    fn each_state_column_holds_that_states_time() {
        let agent = AgentSummary::timed_apart();
        let cells = record(&agent, "from", "to");
        assert_eq!(cells.len(), COLUMNS.len(), "a cell for every column");
        let cell = |name: &str| &cells[COLUMNS.iter().position(|c| *c == name).unwrap()];
        let states = [
            "ready",
            "not_ready",
            "paused",
            "idle",
            "logged_out",
            "on_contact",
            "acw",
        ];
        for (seconds, state) in (1..).zip(states) {
            assert_eq!(cell(&format!("seconds_{state}")), &seconds.to_string());
        }
        assert_eq!(cell("from"), "from");
        assert_eq!(cell("authorised_seconds"), "", "the last column");
    }
}
