//! The HTML export: one self-contained page (inline CSS and SVG, no scripts, no external
//! assets): a summary of the whole window, a bar chart of idle time and violations, and
//! the agents' table. Durations read as h:mm:ss.
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

/// A duration in seconds as h:mm:ss (hours unbounded, rounded to the second).
pub fn hms(seconds: f64) -> String {
    let total = seconds.max(0.0).round() as u64;
    format!(
        "{}:{:02}:{:02}",
        total / 3_600,
        total % 3_600 / 60,
        total % 60
    )
}

/// The window's figures over every agent, shown above the table.
fn summary(report: &Report, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let agents = &report.agents;
    let sum = |f: fn(&AgentSummary) -> i64| agents.iter().map(f).sum::<i64>();
    let sum_f = |f: fn(&AgentSummary) -> Option<f64>| agents.iter().filter_map(f).sum::<f64>();
    let transitions = sum(|a| a.transitions);
    let rejections = sum(|a| a.rejections);
    let frequency = (transitions > 0)
        .then(|| format!("{:.1}%", rejections as f64 * 100.0 / transitions as f64));
    let known: Vec<f64> = agents.iter().filter_map(|a| a.adherence_pct).collect();
    let mean = (!known.is_empty()).then(|| {
        format!(
            "{:.1}% (over {} agents)",
            known.iter().sum::<f64>() / known.len() as f64,
            known.len()
        )
    });
    let scheduled = sum_f(|a| a.scheduled_seconds);
    let unobserved = sum_f(|a| a.unobserved_seconds);
    let observed = scheduled - unobserved;
    let overall = (observed > 0.0).then(|| {
        format!(
            "{:.1}%",
            sum_f(|a| a.in_adherence_seconds) * 100.0 / observed
        )
    });
    let exceptions: u32 = agents.iter().filter_map(|a| a.adherence_exceptions).sum();
    let rows: [(&str, String); 11] = [
        ("Agents", agents.len().to_string()),
        ("Transitions", transitions.to_string()),
        ("Succeeded", sum(|a| a.succeeded).to_string()),
        ("Rejected", rejections.to_string()),
        ("Failed", sum(|a| a.failed).to_string()),
        (
            "Violation frequency (rejections per transition)",
            optional(frequency),
        ),
        (
            "Idle time",
            hms(agents.iter().map(|a| a.idle_seconds).sum()),
        ),
        ("Mean adherence (per agent)", optional(mean)),
        (
            "Adherence over all observed scheduled time",
            optional(overall),
        ),
        (
            "Scheduled time (of which unobserved)",
            format!("{} ({})", hms(scheduled), hms(unobserved)),
        ),
        ("Adherence exceptions", exceptions.to_string()),
    ];
    buf.extend_from_slice(b"<h2>Summary</h2><table class=\"summary\"><tbody>");
    for (label, value) in rows {
        write!(
            buf,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(label),
            escape(&value)
        )?;
    }
    buf.extend_from_slice(
        b"</tbody></table><p>Adherence counts only scheduled time with a recorded state; \
unobserved time (before wfmd first saw an agent, or still to come) is left out and shown \
on its own.</p>",
    );
    Ok(())
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

    summary(report, &mut out.buf)?;
    chart(report, out).await?;

    out.buf.extend_from_slice(
        b"<h2>Per agent</h2><table><thead><tr><th>Agent</th><th>Transitions</th>\
<th>Succeeded</th><th>Rejections</th><th>Failed</th><th>Not scheduled</th>\
<th>Mandatory break</th><th>State conflict</th><th>Violation frequency</th>\
<th>Latency mean (ms)</th><th>Latency p95 (ms)</th><th>Idle</th><th>Ready</th>\
<th>Not ready</th><th>Paused</th><th>Idle state</th><th>Logged out</th>\
<th>On contact</th><th>ACW</th><th>Adherence %</th><th>Scheduled</th>\
<th>In adherence</th><th>Unobserved</th><th>Adherence exceptions</th></tr></thead><tbody>",
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
    let cells: [String; 23] = [
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
        hms(a.idle_seconds),
        hms(a.seconds_ready),
        hms(a.seconds_not_ready),
        hms(a.seconds_paused),
        hms(a.seconds_idle),
        hms(a.seconds_logged_out),
        hms(a.seconds_on_contact),
        hms(a.seconds_acw),
        optional(pct),
        optional(a.scheduled_seconds.map(hms)),
        optional(a.in_adherence_seconds.map(hms)),
        optional(a.unobserved_seconds.map(hms)),
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
<span style=\"background:#4a90d9\"></span>idle time (longest: {longest})\
<span style=\"background:#d9534f\"></span>rejections (most: {max_rejections})</p>\
<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Idle time and rejections per agent\" \
font-family=\"system-ui,sans-serif\" font-size=\"12\">\
<text x=\"{LABEL}\" y=\"14\">idle time</text><text x=\"{vx}\" y=\"14\">rejections</text>",
        vx = LABEL + BAR + 20,
        longest = hms(max_idle),
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
            "<g class=\"agent\"><title>{id}: {idle} idle, {rejections} rejections</title>\
<text x=\"0\" y=\"{ty}\">{id}</text>\
<rect class=\"idle\" x=\"{LABEL}\" y=\"{y}\" width=\"{idle_width:.1}\" height=\"{h}\" fill=\"#4a90d9\"/>\
<rect class=\"violations\" x=\"{vx}\" y=\"{y}\" width=\"{rejection_width:.1}\" height=\"{h}\" fill=\"#d9534f\"/></g>",
            idle = hms(agent.idle_seconds),
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
