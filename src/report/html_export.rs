//! The HTML export: one self-contained page (inline CSS and SVG, no scripts, no external
//! assets): a summary of the whole window, a bar chart of idle time and violations, then
//! one section per team, and the definitions. Durations read as h:mm:ss. The title and
//! heading name the window in the report's time zone.
//!
//! Supervisors read the page by team, 200 agents at a time: links at the top lead to
//! each team's section (teams by name, agents without a known team last) and to the
//! definitions. A team's section has its own two tables, the main figures (adherence,
//! rejections, idle time) and the time in each state, each team's worst adherence first
//! and agents without an adherence figure last, and then its agents' days drawn as
//! schedule against actual (see [`super::day_view`]); the chart follows the same order.
//! Each agent shows by name, with the id beneath.
//!
//! On a 1366 px screen nothing needs scrolling sideways and no word breaks inside: the
//! columns take the width their header's longest word needs (long names wrap
//! anywhere, headers only between words), and a table's header row stays in view while
//! its rows scroll by.
//!
//! The page ends with its footnotes: a "Definitions" section saying how each figure is
//! computed, in which unit and zone, and by which adherence rules (see
//! [`super::definitions`]).
//!
//! Agent ids, names and teams come from the platform and from API callers, so every
//! value is escaped before it reaches the page.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Write;

use html_escape::encode_quoted_attribute as escape;

use super::{AgentSummary, Chunked, Report, ReportError, Sink, day_view};

/// Height of one agent's row in the chart, in pixels.
const ROW: usize = 22;
/// Width of the label column and of each bar's full length.
const LABEL: usize = 160;
const BAR: usize = 300;
/// The characters of a name that fit the label column at the chart's font size.
const LABEL_CHARS: usize = 22;

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
    let authorised = sum_f(|a| a.authorised_seconds);
    let neutral = sum_f(|a| a.neutral_seconds);
    let judged = scheduled - unobserved - authorised - neutral;
    let overall = (judged > 0.0)
        .then(|| format!("{:.1}%", sum_f(|a| a.in_adherence_seconds) * 100.0 / judged));
    let exceptions: u32 = agents.iter().filter_map(|a| a.adherence_exceptions).sum();
    let rows: [(&str, String); 12] = [
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
        (
            "Authorised time (supervisor-excused) and neutral time (by a rule)",
            format!("{} and {}", hms(authorised), hms(neutral)),
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
unobserved time (before wfmd first saw an agent, or still to come), time a supervisor \
authorised, and time an adherence rule counts as neutral are left out and shown on their \
own.</p>",
    );
    Ok(())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.6em}\
table{border-collapse:collapse;font-size:13px}\
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}\
th:first-child,td:first-child{text-align:left}\
th{background:#f3f3f3}\
table.agents{width:100%;margin-bottom:1em}\
table.agents td{overflow-wrap:anywhere}\
table.agents th{overflow-wrap:normal;word-break:normal;hyphens:manual;font-size:12px}\
table.agents thead th{position:sticky;top:0;z-index:1;box-shadow:0 1px 0 #ccc}\
table.agents col.agent{width:16%}\
nav.top{margin:1em 0;line-height:1.8}\
nav.top a{margin-right:.8em;white-space:nowrap}\
section.team h3{background:#e2e8f0;padding:4px 6px;font-size:15px;margin:1.5em 0 .4em}\
.legend b{font-weight:600}\
.id{color:#666;font-size:11px}\
svg{max-width:100%;height:auto}\
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}\
caption.hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}\
section.definitions{font-size:13px}\
section.definitions dt{margin-top:.6em;font-weight:600}\
section.definitions dd{margin:.2em 0 0 1.5em}\
section.definitions .unit{font-weight:normal;color:#666}";

/// The main figures' columns, after the agent's.
const MAIN: [&str; 14] = [
    "Adherence %",
    "Scheduled",
    "In adherence",
    "Unobserved",
    "Authorised",
    "Neutral",
    "Adherence exceptions",
    "Transitions",
    "Succeeded",
    "Rejections",
    "Failed",
    "Violation frequency",
    "Latency p95 (ms)",
    "Idle",
];

/// The second table's columns, after the agent's.
const DETAIL: [&str; 11] = [
    "Ready",
    "Not ready",
    "Paused",
    "Idle state",
    "Logged out",
    "On contact",
    "ACW",
    "Rejected: not scheduled",
    "Rejected: mandatory break",
    "Rejected: state conflict",
    "Latency mean (ms)",
];

/// One team's agents, in the order the page lists them.
struct Team<'a> {
    id: Option<&'a str>,
    name: Option<&'a str>,
    agents: Vec<&'a AgentSummary>,
}

/// Compares two optional texts, known ones first, case-insensitively.
fn known_first(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.to_lowercase().cmp(&b.to_lowercase()).then(a.cmp(b)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Worst adherence first, agents without a figure last; then by name and id.
fn worst_first(a: &AgentSummary, b: &AgentSummary) -> Ordering {
    let adherence = match (a.adherence_pct, b.adherence_pct) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    adherence
        .then_with(|| known_first(a.name.as_deref(), b.name.as_deref()))
        .then_with(|| a.agent_id.cmp(&b.agent_id))
}

/// The agents by team (teams by name, then id; agents without a team last), each team
/// worst adherence first.
fn by_team(agents: &[AgentSummary]) -> Vec<Team<'_>> {
    let mut teams: BTreeMap<(Option<&str>, Option<&str>), Vec<&AgentSummary>> = BTreeMap::new();
    for agent in agents {
        teams
            .entry((agent.team_id.as_deref(), agent.team.as_deref()))
            .or_default()
            .push(agent);
    }
    let mut teams: Vec<Team<'_>> = teams
        .into_iter()
        .map(|((id, name), mut agents)| {
            agents.sort_by(|a, b| worst_first(a, b));
            Team { id, name, agents }
        })
        .collect();
    teams.sort_by(|a, b| {
        let unknown = |t: &Team<'_>| t.id.is_none() && t.name.is_none();
        unknown(a)
            .cmp(&unknown(b))
            .then_with(|| known_first(a.name, b.name))
            .then_with(|| known_first(a.id, b.id))
    });
    teams
}

/// How the page names an agent: the name when known, else the id.
fn label(agent: &AgentSummary) -> &str {
    agent
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&agent.agent_id)
}

pub(super) async fn write<S: Sink>(
    report: &Report,
    out: &mut Chunked<'_, S>,
) -> Result<(), ReportError> {
    let teams = by_team(&report.agents);
    let title = format!("Compliance report {}", report.window_label());
    write!(
        out.buf,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body id=\"top\">\
<h1>{title}</h1><p>Window: {from} to {to} (end exclusive). Generated {generated}. \
Agents: {count}.</p>",
        title = escape(&title),
        from = escape(&report.time(report.window.from)),
        to = escape(&report.time(report.window.to)),
        generated = escape(&report.time(report.generated_at)),
        count = report.agents.len(),
    )?;

    nav(report, &teams, &mut out.buf)?;
    summary(report, &mut out.buf)?;
    chart(report, &teams, out).await?;

    out.buf.extend_from_slice(
        b"<h2>Per agent</h2><p>By team; in each team the lowest adherence first, agents \
without an adherence figure (no stored shift) last.</p>",
    );
    let drawn = report.agents.iter().any(|a| !a.day.is_empty());
    if drawn {
        out.buf
            .extend_from_slice(day_view::patterns_svg().as_bytes());
    }
    for (i, team) in teams.iter().enumerate() {
        team_heading(&mut out.buf, team, i)?;
        table(out, team, "Main figures", &MAIN, main_cells).await?;
        table(
            out,
            team,
            "Time in each state and rejections",
            &DETAIL,
            detail_cells,
        )
        .await?;
        if drawn {
            day_views(report, team, out).await?;
        }
        out.buf.extend_from_slice(b"</section>");
    }
    out.buf
        .extend_from_slice(report.definitions.to_html().as_bytes());
    out.buf.extend_from_slice(b"</body></html>\n");
    Ok(())
}

/// The links at the top: to the definitions, and to each team's section with its
/// number of agents.
fn nav(report: &Report, teams: &[Team<'_>], buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.extend_from_slice(
        b"<nav class=\"top\" aria-label=\"Report\"><a href=\"#definitions\">Definitions \
(what each figure means)</a><br>",
    );
    if let Some((team, _)) = &report.team {
        write!(buf, "Only team {}: ", escape(team))?;
    } else {
        buf.extend_from_slice(b"Teams: ");
    }
    for (i, team) in teams.iter().enumerate() {
        write!(
            buf,
            "<a href=\"#team-{i}\">{name}</a> ({count}) ",
            name = escape(team_name(team)),
            count = team.agents.len(),
        )?;
    }
    buf.extend_from_slice(b"</nav>");
    Ok(())
}

/// One team's days drawn as schedule against actual (see [`super::day_view`]). Only
/// for windows of a day or less ([`super::MAX_DAY_VIEW`]).
async fn day_views<S: Sink>(
    report: &Report,
    team: &Team<'_>,
    out: &mut Chunked<'_, S>,
) -> Result<(), ReportError> {
    if !team.agents.iter().any(|a| !a.day.is_empty()) {
        return Ok(());
    }
    out.buf
        .extend_from_slice(b"<h4>Schedule against actual</h4>");
    out.buf
        .extend_from_slice(day_view::legend_html().as_bytes());
    for agent in team.agents.iter().filter(|a| !a.day.is_empty()) {
        write!(
            out.buf,
            "<figure class=\"day\" data-agent=\"{id}\"><figcaption>{label}</figcaption>{svg}\
</figure>",
            id = escape(&agent.agent_id),
            label = escape(label(agent)),
            svg = day_view::svg(label(agent), &agent.day, report.window, report.zone, false),
        )?;
        out.maybe_flush().await?;
    }
    Ok(())
}

/// One team's per-agent table: a header row that stays in view, then its agents' `cells`.
async fn table<S: Sink>(
    out: &mut Chunked<'_, S>,
    team: &Team<'_>,
    caption: &str,
    columns: &[&str],
    cells: fn(&AgentSummary) -> Vec<String>,
) -> Result<(), ReportError> {
    write!(
        out.buf,
        "<table class=\"agents\"><caption class=\"hidden\">{caption}: {team}</caption>\
<colgroup><col class=\"agent\">",
        caption = escape(caption),
        team = escape(team_name(team)),
    )?;
    for _ in columns {
        out.buf.extend_from_slice(b"<col>");
    }
    out.buf
        .extend_from_slice(b"</colgroup><thead><tr><th scope=\"col\">Agent</th>");
    for column in columns {
        write!(out.buf, "<th scope=\"col\">{}</th>", escape(column))?;
    }
    out.buf.extend_from_slice(b"</tr></thead><tbody>");
    for agent in &team.agents {
        write!(
            out.buf,
            "<tr class=\"agent\" data-agent=\"{id}\"><td>{label}",
            id = escape(&agent.agent_id),
            label = escape(label(agent)),
        )?;
        if label(agent) != agent.agent_id {
            write!(
                out.buf,
                "<br><span class=\"id\">{}</span>",
                escape(&agent.agent_id)
            )?;
        }
        out.buf.extend_from_slice(b"</td>");
        let cells = cells(agent);
        debug_assert_eq!(cells.len(), columns.len(), "a cell for every column");
        for cell in cells {
            write!(out.buf, "<td>{}</td>", escape(&cell))?;
        }
        out.buf.extend_from_slice(b"</tr>");
        out.maybe_flush().await?;
    }
    out.buf.extend_from_slice(b"</tbody></table>");
    Ok(())
}

/// How the page names a team: its name, else its id.
fn team_name<'a>(team: &Team<'a>) -> &'a str {
    match (team.name, team.id) {
        (Some(name), _) => name,
        (None, Some(id)) => id,
        (None, None) => "No team known",
    }
}

/// Opens team `index`'s section with its heading: name, id, agents, mean adherence.
fn team_heading(buf: &mut Vec<u8>, team: &Team<'_>, index: usize) -> std::io::Result<()> {
    let known: Vec<f64> = team.agents.iter().filter_map(|a| a.adherence_pct).collect();
    let mean = (!known.is_empty()).then(|| {
        format!(
            " · mean adherence {:.1}%",
            known.iter().sum::<f64>() / known.len() as f64
        )
    });
    write!(
        buf,
        "<section class=\"team\" id=\"team-{index}\"><h3>{name}",
        name = escape(team_name(team)),
    )?;
    if let (Some(_), Some(id)) = (team.name, team.id) {
        write!(buf, " <span class=\"id\">{}</span>", escape(id))?;
    }
    let count = team.agents.len();
    write!(
        buf,
        " · {count} agent{s}{mean} <a href=\"#top\">top</a></h3>",
        s = if count == 1 { "" } else { "s" },
        mean = escape(&mean.unwrap_or_default()),
    )
}

fn main_cells(a: &AgentSummary) -> Vec<String> {
    let frequency = a.violation_frequency.map(|f| format!("{:.1}%", f * 100.0));
    let pct = a.adherence_pct.map(|p| format!("{p:.1}"));
    vec![
        optional(pct),
        optional(a.scheduled_seconds.map(hms)),
        optional(a.in_adherence_seconds.map(hms)),
        optional(a.unobserved_seconds.map(hms)),
        optional(a.authorised_seconds.map(hms)),
        optional(a.neutral_seconds.map(hms)),
        optional(a.adherence_exceptions),
        a.transitions.to_string(),
        a.succeeded.to_string(),
        a.rejections.to_string(),
        a.failed.to_string(),
        optional(frequency),
        optional(a.latency_p95_ms),
        hms(a.idle_seconds),
    ]
}

fn detail_cells(a: &AgentSummary) -> Vec<String> {
    let mean = a.latency_mean_ms.map(|m| format!("{m:.1}"));
    let rejections = [
        a.rejections_agent_not_scheduled.to_string(),
        a.rejections_mandatory_break_violation.to_string(),
        a.rejections_state_conflict.to_string(),
        optional(mean),
    ];
    a.seconds_by_state()
        .map(hms)
        .into_iter()
        .chain(rejections)
        .collect()
}

/// One group per agent: a bar for idle time and one for rejections, each scaled to the
/// largest value in the report so the longest bar spans the full width.
async fn chart<S: Sink>(
    report: &Report,
    teams: &[Team<'_>],
    out: &mut Chunked<'_, S>,
) -> Result<(), ReportError> {
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
    let agents: Vec<&AgentSummary> = teams.iter().flat_map(|t| t.agents.clone()).collect();
    for (i, agent) in agents.into_iter().enumerate() {
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
        let full = match label(agent) {
            id if id == agent.agent_id => id.to_owned(),
            name => format!("{name} ({})", agent.agent_id),
        };
        write!(
            out.buf,
            "<g class=\"agent\"><title>{full}: {idle} idle, {rejections} rejections</title>\
<text x=\"0\" y=\"{ty}\">{short}</text>\
<rect class=\"idle\" x=\"{LABEL}\" y=\"{y}\" width=\"{idle_width:.1}\" height=\"{h}\" fill=\"#4a90d9\"/>\
<rect class=\"violations\" x=\"{vx}\" y=\"{y}\" width=\"{rejection_width:.1}\" height=\"{h}\" fill=\"#d9534f\"/></g>",
            full = escape(&full),
            short = escape(&shortened(label(agent))),
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

/// A chart label that fits the label column: at most [`LABEL_CHARS`] characters, the
/// last of a longer one an ellipsis (the bar's tooltip has the whole name).
fn shortened(label: &str) -> Cow<'_, str> {
    if label.chars().count() <= LABEL_CHARS {
        return Cow::Borrowed(label);
    }
    let kept: String = label.chars().take(LABEL_CHARS - 1).collect();
    Cow::Owned(format!("{kept}…"))
}

#[cfg(test)]
mod tests {
    use super::{AgentSummary, DETAIL, MAIN, detail_cells, main_cells};

    #[test]
    fn each_detail_column_holds_its_figure() {
        let agent = AgentSummary {
            rejections_state_conflict: 8,
            latency_mean_ms: Some(9.25),
            ..AgentSummary::timed_apart()
        };
        let cells = detail_cells(&agent);
        let shown: Vec<(&str, &str)> = DETAIL
            .into_iter()
            .zip(cells.iter().map(String::as_str))
            .collect();
        assert_eq!(cells.len(), DETAIL.len(), "a cell for every column");
        assert_eq!(
            shown,
            [
                ("Ready", "0:00:01"),
                ("Not ready", "0:00:02"),
                ("Paused", "0:00:03"),
                ("Idle state", "0:00:04"),
                ("Logged out", "0:00:05"),
                ("On contact", "0:00:06"),
                ("ACW", "0:00:07"),
                ("Rejected: not scheduled", "0"),
                ("Rejected: mandatory break", "0"),
                ("Rejected: state conflict", "8"),
                ("Latency mean (ms)", "9.2"),
            ]
        );
        assert_eq!(
            main_cells(&agent).len(),
            MAIN.len(),
            "a cell for every column"
        );
    }
}
