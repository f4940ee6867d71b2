//! The schedule against the recorded states of one agent over a day, drawn as one inline
//! SVG of three lanes on one time axis: what the schedule expected, the state the agent
//! was in, and how each stretch was judged (in, out, neutral, authorised, unobserved).
//!
//! The HTML compliance report draws one per agent, and the wallboard shows the same
//! drawing when an agent's card is clicked (`GET /v1/agents/{id}/adherence?format=svg`),
//! so analysts read the same picture in both places. Every span carries its times,
//! activity, state and judgement as a tooltip and in `data-` attributes, for people and
//! for tests. Titles and reasons come from the platform, so all text is escaped.

use std::fmt::Write;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use html_escape::encode_quoted_attribute as escape;

use super::{MAX_DAY_VIEW, time_in};
use crate::domain::adherence::{DaySpan, Expected, Judged};
use crate::domain::idle::Window;

/// The width of the time axis, the lane names' column, and a lane's height.
const WIDTH: usize = 960;
const NAMES: usize = 70;
const LANE: usize = 16;

/// The adherence lane's colours and what they mean, in the legend's order.
const KEY: [Judged; 6] = [
    Judged::In,
    Judged::Out,
    Judged::Neutral,
    Judged::Authorised,
    Judged::Unobserved,
    Judged::OutOffShift,
];

/// What the adherence lane's colours mean, as the HTML paragraph the report shows once
/// above its drawings.
pub fn legend_html() -> String {
    let mut out = String::from(
        "<p class=\"legend\">Per agent: the schedule, the recorded states and how each \
         stretch was judged.",
    );
    for judged in KEY {
        let _ = write!(
            out,
            " <span style=\"background:{}\"></span>{}",
            judged_colour(judged),
            meaning(judged)
        );
    }
    out.push_str("</p>");
    out
}

fn meaning(judged: Judged) -> &'static str {
    match judged {
        Judged::OutOffShift => "logged in off shift",
        Judged::OffShift => "off shift",
        other => other.as_str(),
    }
}

fn schedule_colour(expected: Expected) -> &'static str {
    match expected {
        Expected::Work => "#b0c4de",
        Expected::MandatoryBreak => "#8e44ad",
        Expected::OptionalBreak => "#c39bd3",
        Expected::OffShift => "#f5f5f5",
    }
}

fn state_colour(span: &DaySpan) -> &'static str {
    match span.state.map(|s| s.as_str()) {
        Some("READY") => "#2e8b57",
        Some("ON_CONTACT") => "#1f6fb2",
        Some("ACW") => "#5dade2",
        Some("NOT_READY") | Some("PAUSED") => "#e0a800",
        Some("IDLE") => "#b0b0b0",
        Some(_) => "#d0d0d0",
        None => "#ffffff",
    }
}

fn judged_colour(judged: Judged) -> &'static str {
    match judged {
        Judged::In => "#2e8b57",
        Judged::Out => "#d9534f",
        Judged::Neutral => "#9e9e9e",
        Judged::Authorised => "#4a90d9",
        Judged::Unobserved => "#e0e0e0",
        Judged::OffShift => "#ffffff",
        Judged::OutOffShift => "#f4b6c2",
    }
}

/// The drawing of `spans` over `window` for the agent called `label`, times in `zone`;
/// with `legend`, a row beneath says what the adherence lane's colours mean (for a
/// drawing shown on its own, as the wallboard shows it).
pub fn svg(
    label: &str,
    spans: &[DaySpan],
    window: Window,
    zone: Option<Tz>,
    legend: bool,
) -> String {
    let (from, to) = (window.from, window.to);
    let total = (to - from).num_milliseconds().max(1) as f64;
    let x = |at: DateTime<Utc>| -> f64 {
        NAMES as f64 + (at - from).num_milliseconds() as f64 * WIDTH as f64 / total
    };
    let height = 3 * LANE + 22 + if legend { LANE + 6 } else { 0 };
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" \
viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"Schedule against actual of {label}\" \
font-family=\"system-ui,sans-serif\" font-size=\"10\">",
        w = WIDTH + NAMES,
        label = escape(label),
    );
    for (lane, name) in ["schedule", "state", "adherence"].iter().enumerate() {
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\">{name}</text>",
            lane * LANE + 12
        );
    }
    for span in spans {
        let (left, right) = (x(span.start), x(span.end));
        let width = (right - left).max(0.5);
        let judged = span.judged.as_str();
        let tip = format!(
            "{} – {}: {}{}{}; {}{}; {}",
            time_in(zone, span.start),
            time_in(zone, span.end),
            span.expected.as_str(),
            span.title
                .as_deref()
                .map(|t| format!(" \u{201c}{t}\u{201d}"))
                .unwrap_or_default(),
            if span.authorised { ", authorised" } else { "" },
            span.state.map_or("no recorded state", |s| s.as_str()),
            span.reason
                .as_deref()
                .map(|r| format!("/{r}"))
                .unwrap_or_default(),
            judged,
        );
        let _ = write!(
            out,
            "<g data-from=\"{from}\" data-to=\"{to}\" data-judged=\"{judged}\">\
<title>{tip}</title>\
<rect x=\"{left:.1}\" y=\"0\" width=\"{width:.1}\" height=\"{h}\" fill=\"{scheduled}\"/>\
<rect x=\"{left:.1}\" y=\"{LANE}\" width=\"{width:.1}\" height=\"{h}\" fill=\"{state}\"/>\
<rect x=\"{left:.1}\" y=\"{y3}\" width=\"{width:.1}\" height=\"{h}\" fill=\"{colour}\"/></g>",
            from = crate::time::rfc3339(span.start),
            to = crate::time::rfc3339(span.end),
            tip = escape(&tip),
            h = LANE - 2,
            y3 = 2 * LANE,
            scheduled = schedule_colour(span.expected),
            state = state_colour(span),
            colour = judged_colour(span.judged),
        );
    }
    // Ticks in the zone: hours over a day (at most 25 ticks), dates and hours over
    // longer windows (at most 13, as the labels are wider).
    let hours = (to - from).num_hours();
    let (step, dated) = if to - from <= MAX_DAY_VIEW {
        ((hours / 24).max(1), false)
    } else {
        ((hours + 11) / 12, true)
    };
    let mut tick = from;
    while tick <= to {
        let label = time_in(zone, tick);
        // RFC 3339: the month and day at 5..10, the hour and minute at 11..16.
        let short = match (dated, label.get(5..10), label.get(11..16)) {
            (true, Some(date), Some(time)) => format!("{date} {time}"),
            (false, _, Some(time)) => time.to_owned(),
            _ => label.clone(),
        };
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\">{}</text>",
            x(tick),
            3 * LANE + 14,
            escape(&short)
        );
        tick += TimeDelta::hours(step);
    }
    if legend {
        let y = 4 * LANE + 10;
        let mut left = NAMES;
        for judged in KEY {
            let _ = write!(
                out,
                "<rect x=\"{left}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{}\" \
stroke=\"#999\"/><text x=\"{}\" y=\"{}\">{}</text>",
                judged_colour(judged),
                left + 14,
                y + 9,
                meaning(judged)
            );
            left += 30 + 6 * meaning(judged).len();
        }
    }
    out.push_str("</svg>");
    out
}
