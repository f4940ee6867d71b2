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

/// The recorded states in the state lane's legend, in the console's order.
const STATES: [&str; 7] = [
    "READY",
    "ON_CONTACT",
    "ACW",
    "NOT_READY",
    "PAUSED",
    "IDLE",
    "LOGGED_OUT",
];

/// The patterns laid over a verdict's colour, so out and authorised read without
/// colour: `out` hatched, `authorised` striped (as the agent page draws them). Defined
/// once per page; every drawing refers to them by id.
const PATTERNS: &str = "<defs>\
<pattern id=\"wfmd-hatch\" width=\"8\" height=\"8\" patternUnits=\"userSpaceOnUse\" \
patternTransform=\"rotate(45)\"><rect width=\"3\" height=\"8\" fill=\"#000\" fill-opacity=\".35\"/></pattern>\
<pattern id=\"wfmd-stripe\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\">\
<rect width=\"2\" height=\"6\" fill=\"#000\" fill-opacity=\".25\"/></pattern></defs>";

/// The patterns as a hidden drawing of their own, written once before a page's
/// drawings (see [`svg`] with `standalone` false).
pub fn patterns_svg() -> String {
    format!(
        "<svg width=\"0\" height=\"0\" aria-hidden=\"true\" focusable=\"false\" style=\"position:absolute\">{PATTERNS}</svg>"
    )
}

/// What the lanes' colours and patterns mean, as the HTML paragraph the report shows
/// once above its drawings: the states in their colours, the verdicts in theirs.
pub fn legend_html() -> String {
    let mut out = String::from(
        "<p class=\"legend\">Per agent: the schedule (outlined; breaks dashed), the \
         recorded state (its own colours, named on the bar where it fits) and how each \
         stretch was judged (other colours; out hatched, authorised striped).</p>\
         <p class=\"legend\"><b>States:</b>",
    );
    for state in STATES {
        let _ = write!(
            out,
            " <span style=\"background:{}\"></span>{}",
            state_colour(Some(state)),
            state
        );
    }
    out.push_str("</p><p class=\"legend\"><b>Verdicts:</b>");
    for judged in KEY {
        let _ = write!(
            out,
            " <span class=\"v-{}\" style=\"background:{}\"></span>{}",
            judged.as_str(),
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

/// The schedule lane's outline: work solid, breaks dashed, off shift none.
fn schedule_stroke(expected: Expected) -> (&'static str, &'static str) {
    match expected {
        Expected::Work => ("#5b7aa6", ""),
        Expected::MandatoryBreak => ("#8e44ad", " stroke-dasharray=\"4 2\""),
        Expected::OptionalBreak => ("#b08a2e", " stroke-dasharray=\"2 2\""),
        Expected::OffShift => ("none", ""),
    }
}

/// The states' colours: the console's (teal, amber, orange, pink, brown, olive),
/// none of them a verdict's.
fn state_colour(state: Option<&str>) -> &'static str {
    match state {
        Some("READY") => "#1fb5b5",
        Some("ON_CONTACT") => "#e3b12f",
        Some("ACW") => "#ec8a3a",
        Some("NOT_READY") => "#dc67a8",
        Some("PAUSED") => "#c18a55",
        Some("IDLE") => "#a8a838",
        Some(_) => "#7a8494",
        None => "#ffffff",
    }
}

/// The verdicts' colours (green, red, grey, purple, light grey, pink), none of them a
/// state's.
fn judged_colour(judged: Judged) -> &'static str {
    match judged {
        Judged::In => "#3aa866",
        Judged::Out => "#e05555",
        Judged::Neutral => "#8a94a3",
        Judged::Authorised => "#9b86e6",
        Judged::Unobserved => "#e0e0e0",
        Judged::OffShift => "#ffffff",
        Judged::OutOffShift => "#f4b6c2",
    }
}

/// The pattern laid over a verdict's colour, if it has one.
fn judged_pattern(judged: Judged) -> Option<&'static str> {
    match judged {
        Judged::Out | Judged::OutOffShift => Some("wfmd-hatch"),
        Judged::Authorised => Some("wfmd-stripe"),
        _ => None,
    }
}

/// The drawing of `spans` over `window` for the agent called `label`, times in `zone`.
/// `standalone` (a drawing shown on its own, as the wallboard shows it) carries its
/// own patterns and a row beneath saying what the adherence lane's colours mean; a
/// page of many drawings writes [`patterns_svg`] and [`legend_html`] once instead.
pub fn svg(
    label: &str,
    spans: &[DaySpan],
    window: Window,
    zone: Option<Tz>,
    standalone: bool,
) -> String {
    let legend = standalone;
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
    if standalone {
        out.push_str(PATTERNS);
    }
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
        let (stroke, dashes) = schedule_stroke(span.expected);
        let state = span.state.map(|s| s.as_str());
        let _ = write!(
            out,
            "<g data-from=\"{from}\" data-to=\"{to}\" data-judged=\"{judged}\">\
<title>{tip}</title>\
<rect x=\"{sx:.1}\" y=\"1\" width=\"{sw:.1}\" height=\"{sh}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"2\"{dashes}/>\
<rect x=\"{left:.1}\" y=\"{LANE}\" width=\"{width:.1}\" height=\"{h}\" fill=\"{state_fill}\"/>\
<rect x=\"{left:.1}\" y=\"{y3}\" width=\"{width:.1}\" height=\"{h}\" fill=\"{colour}\"/>",
            from = crate::time::rfc3339(span.start),
            to = crate::time::rfc3339(span.end),
            tip = escape(&tip),
            sx = left + 1.0,
            sw = (width - 2.0).max(0.5),
            sh = LANE - 4,
            h = LANE - 2,
            y3 = 2 * LANE,
            state_fill = state_colour(state),
            colour = judged_colour(span.judged),
        );
        if let Some(pattern) = judged_pattern(span.judged) {
            let _ = write!(
                out,
                "<rect x=\"{left:.1}\" y=\"{y3}\" width=\"{width:.1}\" height=\"{h}\" fill=\"url(#{pattern})\"/>",
                y3 = 2 * LANE,
                h = LANE - 2,
            );
        }
        // The state's name on its bar where it fits, so the lane reads without colour.
        if let Some(name) = state.filter(|n| width >= 7.0 * n.len() as f64) {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" fill=\"#0b0f14\">{name}</text>",
                left + 2.0,
                LANE + 11,
            );
        }
        out.push_str("</g>");
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
            let pattern = judged_pattern(judged)
                .map(|p| format!("<rect x=\"{left}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"url(#{p})\"/>"))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<rect x=\"{left}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{}\" \
stroke=\"#999\"/>{pattern}<text x=\"{}\" y=\"{}\">{}</text>",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_state_is_drawn_in_a_verdicts_colour_and_out_and_authorised_carry_a_pattern() {
        let verdicts: Vec<&str> = KEY.iter().map(|&j| judged_colour(j)).collect();
        for state in STATES {
            let colour = state_colour(Some(state));
            assert!(
                !verdicts.contains(&colour),
                "{state} is drawn in a verdict's colour {colour}"
            );
        }
        for judged in [Judged::Out, Judged::Authorised] {
            assert!(judged_pattern(judged).is_some(), "{judged:?}");
        }
        let legend = legend_html();
        assert!(STATES.iter().all(|s| legend.contains(s)), "{legend}");
    }
}
