//! The HTML export: one self-contained page (inline CSS and SVG, no scripts, no external
//! assets) with the agents' table and a bar chart of idle time and violations.
//!
//! Agent ids come from the platform and from API callers, so every value is escaped
//! before it reaches the page.

use std::borrow::Cow;
use std::io::Write;

use super::{AgentSummary, Chunked, Report, ReportError, Sink};

/// Height of one agent's row in the chart, in pixels.
const ROW: usize = 22;
/// Width of the label column and of each bar's full length.
const LABEL: usize = 160;
const BAR: usize = 300;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;font-size:13px}\
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}\
th:first-child,td:first-child{text-align:left}\
th{background:#f3f3f3}\
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}";

pub(super) async fn write<S: Sink>(
    report: &Report,
    out: &mut Chunked<'_, S>,
) -> Result<(), ReportError> {
    let from = report.time(report.window.from);
    let to = report.time(report.window.to);
    write!(
        out.buf,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Compliance report {from} – {to}</title><style>{STYLE}</style></head><body>\
<h1>Compliance report</h1><p>Window: {from} to {to} (end exclusive). Generated {generated}. \
Agents: {count}.</p>",
        from = escape(&from),
        to = escape(&to),
        generated = escape(&report.time(report.generated_at)),
        count = report.agents.len(),
    )?;

    chart(report, out).await?;

    out.buf.extend_from_slice(
        b"<h2>Per agent</h2><table><thead><tr><th>Agent</th><th>Transitions</th>\
<th>Succeeded</th><th>Rejections</th><th>Failed</th><th>Not scheduled</th>\
<th>Mandatory break</th><th>State conflict</th><th>Violation frequency</th>\
<th>Latency mean (ms)</th><th>Latency p95 (ms)</th><th>Idle (s)</th><th>Ready (s)</th>\
<th>Not ready (s)</th><th>Paused (s)</th><th>Idle state (s)</th><th>Logged out (s)</th>\
<th>On contact (s)</th><th>ACW (s)</th><th>Adherence %</th><th>Scheduled (s)</th>\
<th>In adherence (s)</th><th>Adherence exceptions</th></tr></thead><tbody>",
    );
    for agent in &report.agents {
        row(&mut out.buf, agent)?;
        out.maybe_flush().await?;
    }
    out.buf
        .extend_from_slice(b"</tbody></table></body></html>\n");
    Ok(())
}

fn row(buf: &mut Vec<u8>, a: &AgentSummary) -> std::io::Result<()> {
    let frequency = a.violation_frequency.map(|f| format!("{:.1}%", f * 100.0));
    let mean = a.latency_mean_ms.map(|m| format!("{m:.1}"));
    let pct = a.adherence_pct.map(|p| format!("{p:.1}"));
    let cells: [String; 22] = [
        a.transitions.to_string(),
        a.succeeded.to_string(),
        a.rejections.to_string(),
        a.failed.to_string(),
        a.rejections_agent_not_scheduled.to_string(),
        a.rejections_mandatory_break_violation.to_string(),
        a.rejections_state_conflict.to_string(),
        optional(frequency),
        optional(mean),
        optional(a.latency_p95_ms),
        a.idle_seconds.to_string(),
        a.seconds_ready.to_string(),
        a.seconds_not_ready.to_string(),
        a.seconds_paused.to_string(),
        a.seconds_idle.to_string(),
        a.seconds_logged_out.to_string(),
        a.seconds_on_contact.to_string(),
        a.seconds_acw.to_string(),
        optional(pct),
        optional(a.scheduled_seconds),
        optional(a.in_adherence_seconds),
        optional(a.adherence_exceptions),
    ];
    write!(buf, "<tr><td>{}</td>", escape(&a.agent_id))?;
    for cell in cells {
        write!(buf, "<td>{}</td>", escape(&cell))?;
    }
    buf.extend_from_slice(b"</tr>");
    Ok(())
}

/// One group per agent: a bar for idle time and one for rejections, each scaled to the
/// largest value in the report so the longest bar spans the full width.
async fn chart<S: Sink>(report: &Report, out: &mut Chunked<'_, S>) -> Result<(), ReportError> {
    let max_idle = report
        .agents
        .iter()
        .map(|a| a.idle_seconds)
        .fold(0.0_f64, f64::max);
    let max_rejections = report
        .agents
        .iter()
        .map(|a| a.rejections)
        .max()
        .unwrap_or(0);
    let width = LABEL + 2 * BAR + 40;
    let height = ROW * report.agents.len() + 30;
    write!(
        out.buf,
        "<h2>Idle time and violations per agent</h2><p class=\"legend\">\
<span style=\"background:#4a90d9\"></span>idle time (longest: {max_idle} s)\
<span style=\"background:#d9534f\"></span>rejections (most: {max_rejections})</p>\
<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Idle time and rejections per agent\" \
font-family=\"system-ui,sans-serif\" font-size=\"12\">\
<text x=\"{LABEL}\" y=\"14\">idle time</text><text x=\"{vx}\" y=\"14\">rejections</text>",
        vx = LABEL + BAR + 20,
    )?;
    for (i, agent) in report.agents.iter().enumerate() {
        let y = 20 + i * ROW;
        let idle_width = if max_idle > 0.0 {
            agent.idle_seconds / max_idle * BAR as f64
        } else {
            0.0
        };
        let rejection_width = if max_rejections > 0 {
            agent.rejections as f64 / max_rejections as f64 * BAR as f64
        } else {
            0.0
        };
        let id = escape(&agent.agent_id);
        write!(
            out.buf,
            "<g class=\"agent\"><title>{id}: {idle} s idle, {rejections} rejections</title>\
<text x=\"0\" y=\"{ty}\">{id}</text>\
<rect class=\"idle\" x=\"{LABEL}\" y=\"{y}\" width=\"{idle_width:.1}\" height=\"{h}\" fill=\"#4a90d9\"/>\
<rect class=\"violations\" x=\"{vx}\" y=\"{y}\" width=\"{rejection_width:.1}\" height=\"{h}\" fill=\"#d9534f\"/></g>",
            idle = agent.idle_seconds,
            rejections = agent.rejections,
            ty = y + 13,
            vx = LABEL + BAR + 20,
            h = ROW - 6,
        )?;
        out.maybe_flush().await?;
    }
    out.buf.extend_from_slice(b"</svg>");
    Ok(())
}
