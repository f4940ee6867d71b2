//! The JSON export: `{"from","to","generated_at","time_zone","definitions",
//! "agents":[…],"attempts":[…]}`; `definitions` says what each figure means (see
//! [`super::definitions`]).
//!
//! The envelope is written by hand so the attempt log can be streamed between its
//! brackets, one attempt at a time from a database cursor.

use futures::TryStreamExt;
use serde::Serialize;

use super::{Chunked, Report, ReportError, Sink};
use crate::store::attempts::AttemptRow;
use crate::store::{Pool, from_ms, on, to_ms};

const ATTEMPTS: &str = "SELECT id, idempotency_key, agent_id, from_state, target_state, reason,
        origin, actor, outcome, violation, error, latency_ms, requested_at, completed_at
    FROM transition_attempts
    WHERE requested_at >= $1 AND requested_at < $2
    ORDER BY requested_at, id";

/// One line of the attempt log, times in the report's zone.
#[derive(Serialize)]
struct AttemptView<'a> {
    id: &'a str,
    agent_id: &'a str,
    from_state: Option<&'a str>,
    target_state: &'a str,
    reason: &'a str,
    origin: &'a str,
    actor: &'a str,
    outcome: &'a str,
    violation: Option<&'a str>,
    error: Option<&'a str>,
    latency_ms: i64,
    requested_at: String,
    completed_at: String,
    idempotency_key: Option<&'a str>,
}

fn json_error(error: serde_json::Error) -> ReportError {
    ReportError::Io(error.into())
}

pub(super) async fn write<S: Sink>(
    report: &Report,
    pool: &Pool,
    out: &mut Chunked<'_, S>,
) -> Result<(), ReportError> {
    let head = serde_json::json!({
        "from": report.time(report.window.from),
        "to": report.time(report.window.to),
        "generated_at": report.time(report.generated_at),
        "time_zone": report.zone.map_or("UTC", |z| z.name()),
        "definitions": report.definitions.to_json(),
    });
    let head = serde_json::to_string(&head).map_err(json_error)?;
    // Reopen the object to append the arrays after its fields.
    out.buf
        .extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.buf.extend_from_slice(b",\"agents\":[");
    for (i, agent) in report.agents.iter().enumerate() {
        if i > 0 {
            out.buf.push(b',');
        }
        serde_json::to_writer(&mut out.buf, agent).map_err(json_error)?;
        out.maybe_flush().await?;
    }
    out.buf.extend_from_slice(b"],\"attempts\":[");

    let mut rows = on!(pool, |c| sqlx::query_as::<_, AttemptRow>(ATTEMPTS)
        .bind(to_ms(report.window.from))
        .bind(to_ms(report.window.to))
        .fetch(c));
    let mut first = true;
    while let Some(row) = rows.try_next().await? {
        if !report.includes(&row.agent_id) {
            continue;
        }
        if !first {
            out.buf.push(b',');
        }
        first = false;
        let view = AttemptView {
            id: &row.id,
            agent_id: &row.agent_id,
            from_state: row.from_state.as_deref(),
            target_state: &row.target_state,
            reason: &row.reason,
            origin: &row.origin,
            actor: &row.actor,
            outcome: &row.outcome,
            violation: row.violation.as_deref(),
            error: row.error.as_deref(),
            latency_ms: row.latency_ms,
            requested_at: report.time(from_ms(row.requested_at)),
            completed_at: report.time(from_ms(row.completed_at)),
            idempotency_key: row.idempotency_key.as_deref(),
        };
        serde_json::to_writer(&mut out.buf, &view).map_err(json_error)?;
        out.maybe_flush().await?;
    }
    out.buf.extend_from_slice(b"]}");
    Ok(())
}
