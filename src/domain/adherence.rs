//! Schedule adherence: what an agent's schedule expects at each instant, whether the
//! state the agent is in meets it, and the adherence figures of a window.
//!
//! Inside a shift an agent is expected to work, except during the shift's breaks;
//! outside every shift the agent is expected to be logged out. [`Timeline`] turns shifts
//! into back-to-back segments of one [`Expected`] activity each. A state that does not
//! meet its segment is a deviation of one [`DeviationKind`]:
//! - READY, ON_CONTACT or ACW inside a mandatory break (a wrap-up is part of the
//!   contact): `working_in_mandatory_break`;
//! - any state but LOGGED_OUT outside every shift: `logged_in_outside_shift`;
//! - NOT_READY, PAUSED, IDLE or LOGGED_OUT in a shift outside its breaks:
//!   `not_working_in_shift` (PAUSED, like NOT_READY and IDLE, takes no contacts).
//!
//! An optional break accepts every state: taking it and working through it both adhere.
//!
//! Adherence rules (`[[compliance.rules]]`, [`super::adherence_rules`]) judge before the
//! built-in kinds: a rule may accept a state, put it out of adherence (a state only a
//! rule refuses is an `out_of_rule` exception) or count it neither way (neutral), and
//! gives its own grace. Everything below judges through one [`Judging`], so the sweep
//! and the figures agree whatever the rules say.
//!
//! A deviation starts at the later of the state's start and the schedule boundary where
//! its kind began (READY since 11:00 in a break from 12:00 deviates from 12:00). An
//! exception opens once a deviation has lasted the threshold and is still going on, so
//! exactly the deviations longer than the threshold open one. It stays open while the
//! agent keeps deviating the same way (NOT_READY, then IDLE, in the shift is one
//! exception) and closes when the kind changes or the agent is back in adherence. The
//! compliance sweep applies this at each sweep; [`figures`] applies it to a window of
//! recorded history, so both count the same exceptions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::adherence_rules::{Judgement, Judging, Scheduled};
pub use super::deviation::{DeviationKind, Expected, deviation_kind};
use super::idle::{Interval, Window};
use super::policy::{BreakWindow, TitledSpan};
use super::state::AgentState;

/// One shift of an agent's schedule, with its breaks and its titled work activities.
/// Break and activity time outside the shift does not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shift {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub breaks: Vec<BreakWindow>,
    /// Titled work time (`Team meeting`, …): still work, but a rule may judge it by its
    /// title. Absent from shifts stored before activities were kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<TitledSpan>,
}

/// A stretch `[start, end)` with one expected activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub expected: Expected,
    /// The schedule's title of the activity, as an index into its timeline's titles
    /// ([`Timeline::scheduled`] resolves it).
    title: Option<u16>,
    /// A supervisor authorised the agent's time here ([`Timeline::authorised`]).
    pub authorised: bool,
}

impl Segment {
    fn ms(&self) -> i64 {
        (self.end - self.start).num_milliseconds()
    }

    /// How long the segment overlaps `window`.
    fn overlap_ms(&self, window: Window) -> i64 {
        let start = self.start.max(window.from);
        let end = self.end.min(window.to);
        (end - start).num_milliseconds().max(0)
    }
}

/// A deviation going on at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deviation {
    pub kind: DeviationKind,
    /// The adherence rule that judged it at that instant; `None`: the built-in kinds.
    pub rule: Option<usize>,
    /// What the schedule expects at that instant.
    pub expected: Expected,
    /// When the deviation began: the later of the state's start and the boundary where
    /// the schedule started to make this state a deviation of this kind.
    pub since: DateTime<Utc>,
}

/// An agent's schedule as back-to-back segments, from the first shift's start to the
/// last shift's end (gaps between shifts are `OffShift` segments). Before and after
/// them the agent is off shift.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    segments: Vec<Segment>,
    /// The distinct activity titles the segments name.
    titles: Vec<String>,
}

impl Timeline {
    /// The timeline of `shifts`, in any order. Overlapping shifts are merged; a
    /// mandatory break wins over an optional one where they overlap. Work time takes the
    /// title of the activity covering it; a break wins over an activity it overlaps.
    pub fn new(shifts: &[Shift]) -> Timeline {
        let mut points = Vec::new();
        for shift in shifts.iter().filter(|s| s.start < s.end) {
            points.extend([shift.start, shift.end]);
            let spans = shift.breaks.iter().map(|b| (b.start, b.end));
            let activities = shift.activities.iter().map(|a| (a.start, a.end));
            for (start, end) in spans.chain(activities) {
                let (start, end) = (start.max(shift.start), end.min(shift.end));
                if start < end {
                    points.extend([start, end]);
                }
            }
        }
        points.sort_unstable();
        points.dedup();
        let mut segments: Vec<Segment> = Vec::new();
        let mut titles: Vec<String> = Vec::new();
        for pair in points.windows(2) {
            let (expected, title) = expected_among(shifts, pair[0]);
            let title = title.map(|title| match titles.iter().position(|t| t == title) {
                Some(at) => at,
                None => {
                    titles.push(title.to_owned());
                    titles.len() - 1
                }
            });
            // A schedule has far fewer than 65,536 distinct titles; past that, untitled.
            let title = title.and_then(|at| u16::try_from(at).ok());
            match segments.last_mut() {
                Some(last) if last.expected == expected && last.title == title => {
                    last.end = pair[1];
                }
                _ => segments.push(Segment {
                    start: pair[0],
                    end: pair[1],
                    expected,
                    title,
                    authorised: false,
                }),
            }
        }
        Timeline { segments, titles }
    }

    /// This timeline with the time in `spans` (`[from, to)` each, any order, overlaps
    /// allowed) authorised: neither in nor out of adherence, whatever the state. Time
    /// off shift may be authorised too (an agent asked to stay on), so the segments
    /// then reach beyond the shifts.
    pub fn authorised(&self, spans: &[(DateTime<Utc>, DateTime<Utc>)]) -> Timeline {
        let spans: Vec<_> = spans.iter().filter(|(from, to)| from < to).collect();
        if spans.is_empty() {
            return self.clone();
        }
        let mut points: Vec<DateTime<Utc>> = self
            .segments
            .iter()
            .flat_map(|s| [s.start, s.end])
            .chain(spans.iter().flat_map(|(from, to)| [*from, *to]))
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut segments: Vec<Segment> = Vec::with_capacity(points.len());
        for pair in points.windows(2) {
            let segment = Segment {
                start: pair[0],
                end: pair[1],
                authorised: spans
                    .iter()
                    .any(|(from, to)| *from <= pair[0] && pair[0] < *to),
                ..self.segment_at(pair[0])
            };
            match segments.last_mut() {
                Some(last)
                    if (last.expected, last.title, last.authorised)
                        == (segment.expected, segment.title, segment.authorised) =>
                {
                    last.end = segment.end;
                }
                _ => segments.push(segment),
            }
        }
        Timeline {
            segments,
            titles: self.titles.clone(),
        }
    }

    /// What the schedule says during `segment` (one of this timeline's), for judging.
    pub fn scheduled(&self, segment: &Segment) -> Scheduled<'_> {
        Scheduled {
            authorised: segment.authorised,
            expected: segment.expected,
            title: segment
                .title
                .and_then(|at| self.titles.get(usize::from(at)))
                .map(String::as_str),
        }
    }

    /// The segment covering `at`; off shift (untitled) outside every shift.
    fn segment_at(&self, at: DateTime<Utc>) -> Segment {
        let after = self.segments.partition_point(|s| s.start <= at);
        match after.checked_sub(1).map(|i| self.segments[i]) {
            Some(segment) if at < segment.end => segment,
            _ => Segment {
                start: at,
                end: at,
                expected: Expected::OffShift,
                title: None,
                authorised: false,
            },
        }
    }

    /// The segments from the first shift's start to the last shift's end.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// What the schedule expects at `at`.
    pub fn expected_at(&self, at: DateTime<Utc>) -> Expected {
        self.segment_at(at).expected
    }

    /// Segments covering exactly `[from, to)`, off-shift stretches included.
    pub fn between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Segment> {
        let mut out = Vec::new();
        if from >= to {
            return out;
        }
        let off = |start, end| Segment {
            start,
            end,
            expected: Expected::OffShift,
            title: None,
            authorised: false,
        };
        let mut at = from;
        let first = self.segments.partition_point(|s| s.end <= from);
        for segment in &self.segments[first..] {
            if segment.start >= to {
                break;
            }
            if segment.start > at {
                out.push(off(at, segment.start));
                at = segment.start;
            }
            let end = segment.end.min(to);
            out.push(Segment {
                start: at,
                end,
                ..*segment
            });
            at = end;
        }
        if at < to {
            out.push(off(at, to));
        }
        out
    }

    /// The deviation of an agent who has been in `state` (with `reason`) since `since`,
    /// at `now`, as `judging` judges it; `None` when the state is not out of adherence at
    /// `now` (in, or neutral).
    pub fn deviation_at(
        &self,
        judging: &Judging,
        (state, reason): (AgentState, Option<&str>),
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Deviation> {
        let segment = self.segment_at(now);
        let judged = judging.judge(self.scheduled(&segment), state, reason);
        let kind = judged.deviation()?;
        let of = |scheduled: Scheduled<'_>| judging.judge(scheduled, state, reason).deviation();
        Some(Deviation {
            kind,
            rule: judged.rule(),
            expected: segment.expected,
            since: self.stretch_start(since, now, |s| of(s) == Some(kind)),
        })
    }

    /// When an agent who has been in `state` (with `reason`) since `since` stopped
    /// deviating as `kind`: the later of the state's start and the boundary where the
    /// schedule stopped making the state that deviation. `None` while it still is one at
    /// `now`.
    pub fn deviation_ended(
        &self,
        judging: &Judging,
        (state, reason): (AgentState, Option<&str>),
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        kind: DeviationKind,
    ) -> Option<DateTime<Utc>> {
        let of = |scheduled: Scheduled<'_>| judging.judge(scheduled, state, reason).deviation();
        if of(self.scheduled(&self.segment_at(now))) == Some(kind) {
            return None;
        }
        Some(self.stretch_start(since, now, |s| of(s) != Some(kind)))
    }

    /// The earliest instant, not before `since`, from which `holds` is true of what the
    /// schedule says all the way to `now` (where it must hold).
    fn stretch_start(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        holds: impl Fn(Scheduled<'_>) -> bool,
    ) -> DateTime<Utc> {
        let off_shift = Scheduled {
            expected: Expected::OffShift,
            title: None,
            authorised: false,
        };
        // Walk back from `now` while it holds; `next` indexes the segment after the
        // stretch reached so far.
        let mut next = self.segments.partition_point(|s| s.start <= now);
        let mut start = match next.checked_sub(1).map(|i| self.segments[i]) {
            // Before the first shift: off shift however far back.
            None => return since,
            Some(segment) if now < segment.end => {
                next -= 1;
                segment.start
            }
            // After the last shift.
            Some(segment) => segment.end,
        };
        while start > since {
            let Some(previous) = next.checked_sub(1).map(|i| self.segments[i]) else {
                return if holds(off_shift) { since } else { start };
            };
            if !holds(self.scheduled(&previous)) {
                break;
            }
            start = previous.start;
            next -= 1;
        }
        start.max(since)
    }
}

/// `title`, unless blank (the schedule named nothing).
fn titled(title: &str) -> Option<&str> {
    Some(title).filter(|title| !title.trim().is_empty())
}

/// What `shifts` expect at `at` (shifts may overlap), and the title the schedule gives
/// it: a break's kind (LUNCH, …), or in work time the title of the first activity
/// covering it (Team meeting, …).
fn expected_among(shifts: &[Shift], at: DateTime<Utc>) -> (Expected, Option<&str>) {
    let mut expected = (Expected::OffShift, None);
    for shift in shifts.iter().filter(|s| s.start <= at && at < s.end) {
        for b in shift.breaks.iter().filter(|b| b.contains(at)) {
            let title = titled(&b.kind);
            if b.mandatory {
                return (Expected::MandatoryBreak, title);
            }
            expected = (Expected::OptionalBreak, title);
        }
        // Work, titled by this shift's activity unless an earlier shift titled it.
        if expected.0 == Expected::OffShift || expected == (Expected::Work, None) {
            let title = shift
                .activities
                .iter()
                .filter(|a| a.start <= at && at < a.end)
                .find_map(|a| titled(&a.title));
            expected = (Expected::Work, title);
        }
    }
    expected
}

/// An agent's adherence over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AdherenceFigures {
    /// Time inside shifts (breaks included).
    pub scheduled_ms: i64,
    /// Scheduled time whose recorded state met the schedule.
    pub in_adherence_ms: i64,
    /// Scheduled time with a recorded state (before wfmd first saw the agent, or
    /// after now, nothing is known).
    pub observed_ms: i64,
    /// Observed scheduled time an adherence rule counts neither way.
    pub neutral_ms: i64,
    /// Observed scheduled time a supervisor authorised: neither in nor out either, and
    /// reported on its own.
    pub authorised_ms: i64,
    /// Exceptions that opened in the window.
    pub exceptions: u32,
}

impl AdherenceFigures {
    /// In-adherence time per judged scheduled time (observed, neither neutral nor
    /// authorised), in percent;
    /// `None` without any. Time nobody saw is not counted against the agent (an agent
    /// first seen at 14:00 is judged on the afternoon, not on a morning wfmd knows
    /// nothing of).
    pub fn adherence_pct(&self) -> Option<f64> {
        let judged = self.observed_ms - self.neutral_ms - self.authorised_ms;
        (judged > 0).then(|| self.in_adherence_ms as f64 * 100.0 / judged as f64)
    }

    /// Observed scheduled time out of adherence.
    pub fn out_of_adherence_ms(&self) -> i64 {
        (self.observed_ms - self.neutral_ms - self.authorised_ms - self.in_adherence_ms).max(0)
    }

    /// Scheduled time with no recorded state.
    pub fn unobserved_ms(&self) -> i64 {
        (self.scheduled_ms - self.observed_ms).max(0)
    }
}

/// The same-kind stretch of deviations an exception covers, while it is being walked.
struct Run {
    kind: DeviationKind,
    end: DateTime<Utc>,
    /// The interval of the current deviation and where that deviation began.
    interval: usize,
    since: DateTime<Utc>,
    opened: bool,
}

/// Adherence figures over `window` from recorded `intervals` (oldest first, back to
/// back as the store keeps them; an open one lasts until `now`) and the `timeline`, as
/// `judging` judges them.
///
/// Scheduled time with no recorded state (before the first interval, or after `now`) is
/// neither in adherence nor observed: it is left out of the percentage and reported as
/// [`AdherenceFigures::unobserved_ms`]; so is time a rule counts as neutral. For the exception
/// count to be exact, pass the intervals from before the window that belong to a
/// deviation still going on at its start (an exception that opened before the window
/// is not counted again).
pub fn figures(
    intervals: &[Interval],
    timeline: &Timeline,
    window: Window,
    now: DateTime<Utc>,
    judging: &Judging,
) -> AdherenceFigures {
    let mut figures = AdherenceFigures {
        scheduled_ms: timeline
            .between(window.from, window.to)
            .iter()
            .filter(|s| s.expected.is_scheduled())
            .map(Segment::ms)
            .sum(),
        ..AdherenceFigures::default()
    };
    let limit = now.min(window.to);
    let mut run: Option<Run> = None;
    for (n, interval) in intervals.iter().enumerate() {
        let end = interval.end.unwrap_or(now).min(limit);
        for segment in timeline.between(interval.start, end) {
            let scheduled = segment.expected.is_scheduled();
            let overlap = if scheduled {
                segment.overlap_ms(window)
            } else {
                0
            };
            figures.observed_ms += overlap;
            let judged = judging.judge(
                timeline.scheduled(&segment),
                interval.state,
                interval.reason.as_deref(),
            );
            let Some(kind) = judged.deviation() else {
                match judged {
                    Judgement::Neutral { .. } => figures.neutral_ms += overlap,
                    Judgement::Authorised => figures.authorised_ms += overlap,
                    Judgement::In { .. } => figures.in_adherence_ms += overlap,
                    Judgement::Out { .. } => unreachable!("out of adherence is a deviation"),
                }
                run = None;
                continue;
            };
            let run = match &mut run {
                Some(r) if r.kind == kind && r.end == segment.start => r,
                slot => slot.insert(Run {
                    kind,
                    end: segment.start,
                    interval: n,
                    since: segment.start,
                    opened: false,
                }),
            };
            if run.interval != n {
                run.interval = n;
                run.since = segment.start;
            }
            run.end = segment.end;
            // The sweep opens it at its first look, in this segment, once the grace of
            // the rule judging there has passed, if the deviation still goes on.
            let opens_at = (run.since + judging.grace(judged.rule())).max(segment.start);
            if !run.opened && opens_at < run.end {
                run.opened = true;
                if window.from <= opens_at && opens_at < window.to {
                    figures.exceptions += 1;
                }
            }
        }
    }
    figures
}

/// How a stretch of an agent's day was judged, for the schedule-against-actual view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    In,
    Out,
    Neutral,
    Authorised,
    /// Scheduled, but no state recorded (before wfmd saw the agent, or still to come).
    Unobserved,
    /// Outside every shift, logged out (or nothing recorded): nothing to judge.
    OffShift,
    /// Outside every shift but logged in: out of adherence, though not scheduled time.
    OutOffShift,
}

impl Judged {
    /// Its name in the API's JSON and the drawing's `data-judged` (`in`,
    /// `out_off_shift`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Judged::In => "in",
            Judged::Out => "out",
            Judged::Neutral => "neutral",
            Judged::Authorised => "authorised",
            Judged::Unobserved => "unobserved",
            Judged::OffShift => "off_shift",
            Judged::OutOffShift => "out_off_shift",
        }
    }
}

/// One stretch `[start, end)` of an agent's day with one schedule activity, one
/// recorded state (if any) and one judgement: the schedule and the recorded states side
/// by side, on one time axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaySpan {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub expected: Expected,
    /// The schedule's title of the activity, when it names one.
    pub title: Option<String>,
    pub authorised: bool,
    /// The recorded state, `None` where nothing is known.
    pub state: Option<AgentState>,
    pub reason: Option<String>,
    pub judged: Judged,
}

/// The schedule against the recorded states over `window`, as back-to-back spans that
/// cover it exactly, each judged as [`figures`] judges: the scheduled ones add up to its
/// in, out, neutral, authorised and unobserved time.
pub fn day_spans(
    intervals: &[Interval],
    timeline: &Timeline,
    window: Window,
    now: DateTime<Utc>,
    judging: &Judging,
) -> Vec<DaySpan> {
    let mut spans: Vec<DaySpan> = Vec::new();
    for segment in timeline.between(window.from, window.to) {
        let scheduled = timeline.scheduled(&segment);
        // Where the recorded state can change inside the segment: each interval's
        // start and (known) end, and `now`, past which nothing is known.
        let mut points: Vec<DateTime<Utc>> = intervals
            .iter()
            .flat_map(|i| [Some(i.start), i.end, Some(now)])
            .flatten()
            .filter(|at| segment.start < *at && *at < segment.end)
            .chain([segment.start, segment.end])
            .collect();
        points.sort_unstable();
        points.dedup();
        for pair in points.windows(2) {
            let (at, end) = (pair[0], pair[1]);
            let covering = (at < now)
                .then(|| {
                    intervals
                        .iter()
                        .find(|i| i.start <= at && i.end.is_none_or(|e| at < e))
                })
                .flatten();
            let judged = match covering {
                None if segment.expected.is_scheduled() => Judged::Unobserved,
                None => Judged::OffShift,
                Some(i) => match judging.judge(scheduled, i.state, i.reason.as_deref()) {
                    Judgement::Authorised => Judged::Authorised,
                    Judgement::Neutral { .. } => Judged::Neutral,
                    Judgement::In { .. } if segment.expected.is_scheduled() => Judged::In,
                    Judgement::In { .. } => Judged::OffShift,
                    Judgement::Out { .. } if segment.expected.is_scheduled() => Judged::Out,
                    Judgement::Out { .. } => Judged::OutOffShift,
                },
            };
            let span = DaySpan {
                start: at,
                end,
                expected: segment.expected,
                title: scheduled.title.map(str::to_owned),
                authorised: segment.authorised,
                state: covering.map(|i| i.state),
                reason: covering.and_then(|i| i.reason.clone()),
                judged,
            };
            match spans.last_mut() {
                // The same in all but its place: one span.
                Some(last)
                    if last.end == span.start
                        && *last
                            == (DaySpan {
                                start: last.start,
                                end: last.end,
                                ..span.clone()
                            }) =>
                {
                    last.end = span.end;
                }
                _ => spans.push(span),
            }
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::adherence_rules::{AdherenceRule, AdherenceVerdict, arb_rule};
    use chrono::{TimeDelta, TimeZone};
    use proptest::prelude::*;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_790_000_000_000 + ms).unwrap()
    }

    fn minutes(m: i64) -> DateTime<Utc> {
        t(m * 60_000)
    }

    /// The built-in kinds, with a two-minute threshold.
    fn builtin() -> Judging {
        Judging::builtin(TimeDelta::minutes(2))
    }

    /// The built-in kinds with `threshold`.
    fn within(threshold: TimeDelta) -> Judging {
        Judging::builtin(threshold)
    }

    fn brk(start: DateTime<Utc>, end: DateTime<Utc>, mandatory: bool) -> BreakWindow {
        BreakWindow {
            start,
            end,
            kind: if mandatory { "LUNCH" } else { "BREAK" }.into(),
            mandatory,
        }
    }

    /// 09:00–17:00 (minutes 0–480) with a mandatory lunch 12:00–12:30 and an optional
    /// break 15:00–15:15.
    fn day() -> Shift {
        Shift {
            start: minutes(0),
            end: minutes(480),
            breaks: vec![
                brk(minutes(180), minutes(210), true),
                brk(minutes(360), minutes(375), false),
            ],
            activities: Vec::new(),
        }
    }

    fn interval(state: AgentState, start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> Interval {
        Interval {
            state,
            reason: None,
            start,
            end,
        }
    }

    #[test]
    fn every_state_and_expectation_has_its_verdict() {
        use AgentState::*;
        use DeviationKind::*;
        use Expected::*;
        for state in AgentState::ALL {
            assert_eq!(deviation_kind(state, OptionalBreak), None, "{state}");
        }
        let kinds = |expected| {
            AgentState::ALL
                .into_iter()
                .filter_map(|s| deviation_kind(s, expected).map(|k| (s, k)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(MandatoryBreak),
            [
                (Ready, WorkingInMandatoryBreak),
                (OnContact, WorkingInMandatoryBreak),
                (Acw, WorkingInMandatoryBreak)
            ]
        );
        assert_eq!(
            kinds(Work),
            [
                (NotReady, NotWorkingInShift),
                (Paused, NotWorkingInShift),
                (Idle, NotWorkingInShift),
                (LoggedOut, NotWorkingInShift)
            ]
        );
        assert_eq!(kinds(OffShift).len(), 6, "all but LOGGED_OUT");
        assert_eq!(deviation_kind(LoggedOut, OffShift), None);
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in DeviationKind::ALL {
            assert_eq!(kind.as_str().parse::<DeviationKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
        let err = "late".parse::<DeviationKind>().unwrap_err().to_string();
        assert!(err.contains("`late`") && err.contains("not_working_in_shift"));
    }

    #[test]
    fn the_timeline_splits_a_shift_at_its_breaks() {
        let timeline = Timeline::new(&[day()]);
        let segments: Vec<_> = timeline
            .segments()
            .iter()
            .map(|s| (s.start, s.end, s.expected))
            .collect();
        assert_eq!(
            segments,
            [
                (minutes(0), minutes(180), Expected::Work),
                (minutes(180), minutes(210), Expected::MandatoryBreak),
                (minutes(210), minutes(360), Expected::Work),
                (minutes(360), minutes(375), Expected::OptionalBreak),
                (minutes(375), minutes(480), Expected::Work),
            ]
        );
        assert_eq!(timeline.expected_at(minutes(-1)), Expected::OffShift);
        assert_eq!(timeline.expected_at(minutes(180)), Expected::MandatoryBreak);
        assert_eq!(timeline.expected_at(minutes(210)), Expected::Work);
        assert_eq!(timeline.expected_at(minutes(480)), Expected::OffShift);
    }

    /// `day()` with a Team meeting 10:00–11:00, a Training 11:50–12:20 that the lunch
    /// (12:00–12:30) cuts short, and an untitled span (the schedule named nothing).
    fn day_with_activities() -> Shift {
        let span = |from, to, title: &str| TitledSpan {
            start: minutes(from),
            end: minutes(to),
            title: title.into(),
        };
        Shift {
            activities: vec![
                span(60, 120, "Team meeting"),
                span(170, 200, "Training"),
                span(400, 420, " "),
            ],
            ..day()
        }
    }

    #[test]
    fn work_time_takes_the_title_of_its_activity_and_a_break_wins_an_overlap() {
        let timeline = Timeline::new(&[day_with_activities()]);
        let segments: Vec<_> = timeline
            .segments()
            .iter()
            .map(|s| {
                let scheduled = timeline.scheduled(s);
                (
                    (s.start - minutes(0)).num_minutes(),
                    (s.end - minutes(0)).num_minutes(),
                    s.expected,
                    scheduled.title,
                )
            })
            .collect();
        use Expected::*;
        assert_eq!(
            segments,
            [
                (0, 60, Work, None),
                (60, 120, Work, Some("Team meeting")),
                (120, 170, Work, None),
                (170, 180, Work, Some("Training")),
                (180, 210, MandatoryBreak, Some("LUNCH")),
                (210, 360, Work, None),
                (360, 375, OptionalBreak, Some("BREAK")),
                // The untitled span is plain work: merged with its neighbours.
                (375, 480, Work, None),
            ]
        );
        // Stored shifts from before activities were kept read as having none.
        let stored = serde_json::json!({
            "start": minutes(0), "end": minutes(480), "breaks": [],
        });
        let shift: Shift = serde_json::from_value(stored).unwrap();
        assert!(shift.activities.is_empty());
        let again: Shift =
            serde_json::from_value(serde_json::to_value(day_with_activities()).unwrap()).unwrap();
        assert_eq!(again, day_with_activities());
    }

    #[test]
    fn a_rule_on_a_titled_work_activity_judges_only_that_activity() {
        let timeline = Timeline::new(&[day_with_activities()]);
        let rule = |activity: &str, state: &str, verdict| AdherenceRule {
            activity: activity.parse().unwrap(),
            states: vec![state.parse().unwrap()],
            verdict,
            grace: None,
            severe_after: None,
        };
        let judging = Judging {
            rules: vec![
                rule("team MEETING", "NOT_READY:MEETING", AdherenceVerdict::In),
                rule("Training", "READY", AdherenceVerdict::Out),
            ],
            version: Some("test".into()),
            threshold: TimeDelta::minutes(2),
        };
        let meeting = (AgentState::NotReady, Some("MEETING"));
        // In the meeting: in adherence, by the first rule.
        assert_eq!(
            timeline.deviation_at(&judging, meeting, minutes(60), minutes(90)),
            None
        );
        // The same state after the meeting is the built-in deviation, from 11:00.
        let after = timeline
            .deviation_at(&judging, meeting, minutes(60), minutes(125))
            .unwrap();
        assert_eq!(
            (after.kind, after.rule, after.since),
            (DeviationKind::NotWorkingInShift, None, minutes(120))
        );
        // READY in Training is out by the second rule; the lunch it overlaps is not
        // Training, so READY there is the built-in kind.
        let ready = (AgentState::Ready, None);
        let training = timeline
            .deviation_at(&judging, ready, minutes(100), minutes(175))
            .unwrap();
        assert_eq!(
            (training.kind, training.rule, training.since),
            (DeviationKind::OutOfRule, Some(1), minutes(170))
        );
        assert_eq!(
            timeline
                .deviation_at(&judging, ready, minutes(100), minutes(185))
                .map(|d| (d.kind, d.rule)),
            Some((DeviationKind::WorkingInMandatoryBreak, None))
        );
        // The figures agree: NOT_READY:MEETING all day is in adherence only in the
        // meeting (and the breaks).
        let intervals = [Interval {
            reason: Some("MEETING".into()),
            ..interval(AgentState::NotReady, minutes(0), None)
        }];
        let window = Window {
            from: minutes(0),
            to: minutes(480),
        };
        let f = figures(&intervals, &timeline, window, minutes(480), &judging);
        assert_eq!(f.in_adherence_ms, (60 + 30 + 15) * 60_000);
        assert_eq!(f.out_of_adherence_ms(), (480 - 60 - 30 - 15) * 60_000);
    }

    #[test]
    fn breaks_are_clipped_to_their_shift_and_mandatory_wins_an_overlap() {
        let shift = Shift {
            start: minutes(0),
            end: minutes(60),
            breaks: vec![
                brk(minutes(-30), minutes(10), true),
                brk(minutes(20), minutes(40), false),
                brk(minutes(30), minutes(50), true),
                brk(minutes(55), minutes(90), false),
            ],
            activities: Vec::new(),
        };
        let timeline = Timeline::new(&[shift]);
        let expected: Vec<_> = timeline
            .between(minutes(-10), minutes(70))
            .iter()
            .map(|s| (s.start, s.expected))
            .collect();
        assert_eq!(
            expected,
            [
                (minutes(-10), Expected::OffShift),
                (minutes(0), Expected::MandatoryBreak),
                (minutes(10), Expected::Work),
                (minutes(20), Expected::OptionalBreak),
                (minutes(30), Expected::MandatoryBreak),
                (minutes(50), Expected::Work),
                (minutes(55), Expected::OptionalBreak),
                (minutes(60), Expected::OffShift),
            ]
        );
    }

    #[test]
    fn a_deviation_starts_at_the_later_of_the_state_and_the_boundary() {
        let timeline = Timeline::new(&[day()]);
        // READY since 11:00; the lunch starts at 12:00.
        let ready = timeline.deviation_at(
            &builtin(),
            (AgentState::Ready, None),
            minutes(120),
            minutes(185),
        );
        assert_eq!(
            ready,
            Some(Deviation {
                kind: DeviationKind::WorkingInMandatoryBreak,
                rule: None,
                expected: Expected::MandatoryBreak,
                since: minutes(180)
            })
        );
        // READY since 12:05, inside the lunch.
        let late = timeline.deviation_at(
            &builtin(),
            (AgentState::Ready, None),
            minutes(185),
            minutes(190),
        );
        assert_eq!(late.unwrap().since, minutes(185));
        // NOT_READY since 11:00 is fine in the lunch, a deviation from its end.
        assert_eq!(
            timeline.deviation_at(
                &builtin(),
                (AgentState::NotReady, None),
                minutes(120),
                minutes(200)
            ),
            None
        );
        let after = timeline.deviation_at(
            &builtin(),
            (AgentState::NotReady, None),
            minutes(120),
            minutes(215),
        );
        assert_eq!(after.unwrap().since, minutes(210));
        assert_eq!(after.unwrap().kind, DeviationKind::NotWorkingInShift);
        // Still logged in after the shift: from its end.
        let evening = timeline.deviation_at(
            &builtin(),
            (AgentState::Ready, None),
            minutes(400),
            minutes(500),
        );
        assert_eq!(evening.unwrap().kind, DeviationKind::LoggedInOutsideShift);
        assert_eq!(evening.unwrap().since, minutes(480));
        // Logged in before the shift, since the night before: from the state's start.
        let early = timeline.deviation_at(
            &builtin(),
            (AgentState::Idle, None),
            minutes(-600),
            minutes(-5),
        );
        assert_eq!(early.unwrap().since, minutes(-600));
        // An agent who skipped the optional break and worked through is fine.
        assert_eq!(
            timeline.deviation_at(
                &builtin(),
                (AgentState::Ready, None),
                minutes(300),
                minutes(370)
            ),
            None
        );
    }

    #[test]
    fn a_deviation_ends_at_the_state_change_or_the_boundary_that_ended_it() {
        let timeline = Timeline::new(&[day()]);
        let kind = DeviationKind::WorkingInMandatoryBreak;
        // READY through the lunch: the deviation ended when the lunch did.
        assert_eq!(
            timeline.deviation_ended(
                &builtin(),
                (AgentState::Ready, None),
                minutes(120),
                minutes(220),
                kind
            ),
            Some(minutes(210))
        );
        assert_eq!(
            timeline.deviation_ended(
                &builtin(),
                (AgentState::Ready, None),
                minutes(120),
                minutes(200),
                kind
            ),
            None,
            "still going on"
        );
        // NOT_READY from 12:20: ended by the agent.
        assert_eq!(
            timeline.deviation_ended(
                &builtin(),
                (AgentState::NotReady, None),
                minutes(200),
                minutes(205),
                kind
            ),
            Some(minutes(200))
        );
        // Still logged in after the shift: no longer "not working in the shift" from
        // its end, though it is another deviation now.
        assert_eq!(
            timeline.deviation_ended(
                &builtin(),
                (AgentState::Idle, None),
                minutes(470),
                minutes(490),
                DeviationKind::NotWorkingInShift
            ),
            Some(minutes(480))
        );
    }

    #[test]
    fn back_to_back_breaks_make_one_deviation() {
        let shift = Shift {
            start: minutes(0),
            end: minutes(120),
            breaks: vec![
                brk(minutes(30), minutes(45), true),
                brk(minutes(45), minutes(60), true),
            ],
            activities: Vec::new(),
        };
        let timeline = Timeline::new(&[shift]);
        let d = timeline.deviation_at(
            &builtin(),
            (AgentState::Ready, None),
            minutes(0),
            minutes(55),
        );
        assert_eq!(d.unwrap().since, minutes(30));
    }

    #[test]
    fn a_worked_example_of_the_figures() {
        // The day above, 09:00–17:00, threshold two minutes:
        // - READY 09:00–12:10: adheres until 12:00, then 10 min in the lunch: exception
        //   (opens 12:02);
        // - NOT_READY 12:10–12:40: adheres until 12:30, then 10 min: exception (12:32);
        // - READY 12:40–16:59;
        // - IDLE 16:59–17:30: one minute in the shift (short), then 30 min logged in
        //   outside it: exception (17:02).
        let intervals = [
            interval(AgentState::Ready, minutes(0), Some(minutes(190))),
            interval(AgentState::NotReady, minutes(190), Some(minutes(220))),
            interval(AgentState::Ready, minutes(220), Some(minutes(479))),
            interval(AgentState::Idle, minutes(479), Some(minutes(510))),
        ];
        let timeline = Timeline::new(&[day()]);
        let threshold = TimeDelta::minutes(2);
        let whole_day = Window {
            from: minutes(-60),
            to: minutes(600),
        };
        let f = figures(
            &intervals,
            &timeline,
            whole_day,
            minutes(700),
            &within(threshold),
        );
        let minute = 60_000;
        assert_eq!(f.scheduled_ms, 480 * minute);
        // 480 scheduled minus 10 (READY in lunch), 10 (NOT_READY after it), 1 (IDLE).
        assert_eq!(f.in_adherence_ms, 459 * minute);
        assert_eq!(f.exceptions, 3);
        assert_eq!(f.adherence_pct(), Some(459.0 * 100.0 / 480.0));

        // 12:00–12:31: the lunch exception opened at 12:02 is in; the 12:32 one is not.
        let lunch = Window {
            from: minutes(180),
            to: minutes(211),
        };
        let f = figures(
            &intervals,
            &timeline,
            lunch,
            minutes(700),
            &within(threshold),
        );
        assert_eq!(f.scheduled_ms, 31 * minute);
        assert_eq!(f.in_adherence_ms, 20 * minute);
        assert_eq!(f.exceptions, 1);
    }

    #[test]
    fn an_agent_first_seen_mid_shift_is_judged_on_the_observed_time_only() {
        // Shift 09:00-17:00; wfmd first saw the agent at 14:00 (READY ever since), and
        // the report is made at 16:00 for the whole day.
        let timeline = Timeline::new(&[day()]);
        let intervals = [interval(AgentState::Ready, minutes(300), None)];
        let day_window = Window {
            from: minutes(-540),
            to: minutes(900),
        };
        let f = figures(
            &intervals,
            &timeline,
            day_window,
            minutes(420),
            &within(TimeDelta::minutes(2)),
        );
        let minute = 60_000;
        assert_eq!(f.scheduled_ms, 480 * minute);
        assert_eq!(f.observed_ms, 120 * minute, "14:00 to now (16:00)");
        assert_eq!(f.unobserved_ms(), 360 * minute);
        // The mandatory lunch (12:00) lies in the unseen morning; READY in the optional
        // 15:00 break adheres, so all of the observed time does.
        assert_eq!(f.in_adherence_ms, 120 * minute);
        assert_eq!(f.adherence_pct(), Some(100.0), "not 25 %");
    }

    #[test]
    fn same_kind_deviations_in_a_row_are_one_exception() {
        let timeline = Timeline::new(&[day()]);
        // NOT_READY 1 min, IDLE 5 min, PAUSED 5 min in the shift: one exception, opened
        // when IDLE reached two minutes.
        let intervals = [
            interval(AgentState::NotReady, minutes(10), Some(minutes(11))),
            interval(AgentState::Idle, minutes(11), Some(minutes(16))),
            interval(AgentState::Paused, minutes(16), Some(minutes(21))),
            interval(AgentState::Ready, minutes(21), None),
        ];
        let window = Window {
            from: minutes(0),
            to: minutes(60),
        };
        let f = figures(
            &intervals,
            &timeline,
            window,
            minutes(60),
            &within(TimeDelta::minutes(2)),
        );
        assert_eq!(f.exceptions, 1);
        // Opened at 09:13: a window from 09:13 counts it, one from 09:14 does not.
        let from = |m| Window {
            from: minutes(m),
            to: minutes(60),
        };
        let count = |w| {
            figures(
                &intervals,
                &timeline,
                w,
                minutes(60),
                &within(TimeDelta::minutes(2)),
            )
        };
        assert_eq!(count(from(13)).exceptions, 1);
        assert_eq!(count(from(14)).exceptions, 0);
    }

    #[test]
    fn no_schedule_means_no_scheduled_time_and_no_percentage() {
        let f = figures(
            &[interval(AgentState::LoggedOut, minutes(0), None)],
            &Timeline::default(),
            Window {
                from: minutes(0),
                to: minutes(60),
            },
            minutes(60),
            &within(TimeDelta::minutes(2)),
        );
        assert_eq!(f, AdherenceFigures::default());
        assert_eq!(f.adherence_pct(), None);
    }

    #[test]
    fn authorised_time_is_neither_in_nor_out_and_ends_a_deviation_at_its_edges() {
        // 11:50–12:10 around the lunch's start, and 17:20–17:40 after the shift.
        let timeline = Timeline::new(&[day()])
            .authorised(&[(minutes(170), minutes(190)), (minutes(500), minutes(520))]);
        let at = |m| {
            let s = timeline.segment_at(minutes(m));
            (s.expected, s.authorised)
        };
        assert_eq!(at(169), (Expected::Work, false));
        assert_eq!(at(175), (Expected::Work, true));
        assert_eq!(at(185), (Expected::MandatoryBreak, true));
        assert_eq!(at(190), (Expected::MandatoryBreak, false));
        assert_eq!(at(490), (Expected::OffShift, false));
        assert_eq!(at(510), (Expected::OffShift, true));
        assert_eq!(at(520), (Expected::OffShift, false));
        let ready = (AgentState::Ready, None);
        assert_eq!(
            timeline.deviation_at(&builtin(), ready, minutes(100), minutes(185)),
            None,
            "READY in an authorised lunch"
        );
        assert_eq!(
            timeline
                .deviation_at(&builtin(), ready, minutes(100), minutes(195))
                .map(|d| d.since),
            Some(minutes(190)),
            "a deviation from the authorisation's end"
        );
        assert_eq!(
            timeline.deviation_ended(
                &builtin(),
                ready,
                minutes(485),
                minutes(505),
                DeviationKind::LoggedInOutsideShift
            ),
            Some(minutes(500)),
            "staying on after the shift, authorised from 17:20"
        );
        let intervals = [interval(AgentState::Ready, minutes(0), None)];
        let window = Window {
            from: minutes(0),
            to: minutes(480),
        };
        let f = figures(&intervals, &timeline, window, minutes(480), &builtin());
        assert_eq!(f.authorised_ms, 20 * 60_000);
        assert_eq!(f.out_of_adherence_ms(), 20 * 60_000, "READY in 12:10–12:30");
        assert_eq!(f.in_adherence_ms, (480 - 20 - 20) * 60_000);
        assert_eq!(f.exceptions, 1);
    }

    // Property tests, in milliseconds around `t(0)`.

    /// Up to three shifts, each with up to two breaks and up to three titled work
    /// activities (which may overlap each other, the breaks and the shift's edges).
    fn arb_shifts() -> impl Strategy<Value = Vec<Shift>> {
        let title = prop::sample::select(vec!["Lunch", "Coaching", ""]);
        let arb_break = (0i64..500, 1i64..150, any::<bool>(), title);
        let activity = prop::sample::select(vec!["Team meeting", "Coaching", "Phones", ""]);
        let arb_activity = (0i64..500, 1i64..200, activity);
        let arb_shift = (
            0i64..600,
            1i64..500,
            prop::collection::vec(arb_break, 0..3),
            prop::collection::vec(arb_activity, 0..4),
        )
            .prop_map(|(start, length, breaks, activities)| Shift {
                start: t(start),
                end: t(start + length),
                breaks: breaks
                    .into_iter()
                    .map(|(offset, length, mandatory, title)| {
                        let start = start - 50 + offset;
                        BreakWindow {
                            kind: title.into(),
                            ..brk(t(start), t(start + length), mandatory)
                        }
                    })
                    .collect(),
                activities: activities
                    .into_iter()
                    .map(|(offset, length, title)| {
                        let start = start - 50 + offset;
                        TitledSpan {
                            start: t(start),
                            end: t(start + length),
                            title: title.into(),
                        }
                    })
                    .collect(),
            });
        prop::collection::vec(arb_shift, 0..3)
    }

    /// The timeline of random shifts with up to two random authorised spans.
    fn arb_timeline() -> impl Strategy<Value = Timeline> {
        let span = (0i64..1_000, 1i64..300).prop_map(|(from, length)| (t(from), t(from + length)));
        (arb_shifts(), prop::collection::vec(span, 0..3))
            .prop_map(|(shifts, spans)| Timeline::new(&shifts).authorised(&spans))
    }

    /// Up to four random rules (none half the time) and a threshold of a few ms.
    fn arb_judging() -> impl Strategy<Value = Judging> {
        let rules = prop_oneof![Just(Vec::new()), prop::collection::vec(arb_rule(), 1..5),];
        (rules, 0i64..100).prop_map(|(rules, threshold)| Judging {
            version: (!rules.is_empty()).then(|| "test".to_owned()),
            rules,
            threshold: TimeDelta::milliseconds(threshold),
        })
    }

    /// Back-to-back intervals, as the store keeps them; only the last may be open.
    fn arb_history() -> impl Strategy<Value = (Vec<Interval>, i64)> {
        (
            prop::collection::vec(
                (
                    proptest::sample::select(AgentState::ALL.to_vec()),
                    1i64..200,
                    prop::option::of(prop::sample::select(vec!["LUNCH", "MEETING"])),
                ),
                1..10,
            ),
            any::<bool>(),
            0i64..200,
        )
            .prop_map(|(steps, last_open, start)| {
                let count = steps.len();
                let mut at = start;
                let mut intervals = Vec::new();
                for (i, (state, length, reason)) in steps.into_iter().enumerate() {
                    let end = (i + 1 < count || !last_open).then_some(at + length);
                    intervals.push(Interval {
                        reason: reason.map(str::to_owned),
                        ..interval(state, t(at), end.map(t))
                    });
                    at += length;
                }
                (intervals, at)
            })
    }

    fn state_at(
        intervals: &[Interval],
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<&Interval> {
        intervals
            .iter()
            .find(|i| i.start <= at && at < i.end.unwrap_or(now))
    }

    proptest! {
        // Rules with their own grace rarely decide an exception's opening in a small
        // random case: enough cases that they do (a milliseconds-long run each).
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn an_authorised_timeline_says_what_the_schedule_says_and_whether_authorised(
            shifts in arb_shifts(),
            spans in prop::collection::vec((0i64..1_000, 0i64..300), 0..4),
            probe in -100i64..1_200,
        ) {
            let spans: Vec<_> = spans.iter().map(|(from, length)| (t(*from), t(from + length))).collect();
            let plain = Timeline::new(&shifts);
            let authorised = plain.authorised(&spans);
            let (before, after) = (plain.segment_at(t(probe)), authorised.segment_at(t(probe)));
            prop_assert_eq!(plain.scheduled(&before).expected, authorised.scheduled(&after).expected);
            prop_assert_eq!(plain.scheduled(&before).title, authorised.scheduled(&after).title);
            let inside = spans.iter().any(|(from, to)| *from <= t(probe) && t(probe) < *to);
            prop_assert_eq!(after.authorised, inside);
        }

        #[test]
        fn in_adherence_fits_in_scheduled_time_which_fits_in_the_window(
            shifts in arb_shifts(),
            (intervals, end) in arb_history(),
            from in 0i64..800,
            length in 1i64..800,
            after in 0i64..200,
            judging in arb_judging(),
        ) {
            let window = Window { from: t(from), to: t(from + length) };
            let f = figures(
                &intervals,
                &Timeline::new(&shifts),
                window,
                t(end + after),
                &judging,
            );
            prop_assert!(0 <= f.in_adherence_ms && 0 <= f.neutral_ms);
            prop_assert!(f.in_adherence_ms + f.neutral_ms <= f.observed_ms);
            prop_assert!(f.observed_ms <= f.scheduled_ms);
            prop_assert!(f.scheduled_ms <= length);
            if let Some(pct) = f.adherence_pct() {
                prop_assert!((0.0..=100.0).contains(&pct));
            }
        }

        #[test]
        fn splitting_a_window_in_two_adds_up(
            shifts in arb_shifts(),
            (intervals, end) in arb_history(),
            from in 0i64..800,
            first in 0i64..400,
            second in 0i64..400,
            after in 0i64..200,
            judging in arb_judging(),
        ) {
            let timeline = Timeline::new(&shifts);
            let now = t(end + after);
            let window = |a: i64, b: i64| Window { from: t(a), to: t(b) };
            let whole = figures(&intervals, &timeline, window(from, from + first + second), now, &judging);
            let a = figures(&intervals, &timeline, window(from, from + first), now, &judging);
            let b = figures(&intervals, &timeline, window(from + first, from + first + second), now, &judging);
            prop_assert_eq!(whole.scheduled_ms, a.scheduled_ms + b.scheduled_ms);
            prop_assert_eq!(whole.in_adherence_ms, a.in_adherence_ms + b.in_adherence_ms);
            prop_assert_eq!(whole.neutral_ms, a.neutral_ms + b.neutral_ms);
            prop_assert_eq!(whole.exceptions, a.exceptions + b.exceptions);
        }

        #[test]
        fn an_agent_who_follows_the_schedule_gets_100_percent_and_no_exception(
            shifts in arb_shifts(),
            from in 0i64..800,
            length in 1i64..800,
            working in proptest::sample::select(vec![AgentState::Ready, AgentState::OnContact, AgentState::Acw]),
            resting in proptest::sample::select(vec![AgentState::NotReady, AgentState::Paused, AgentState::Idle, AgentState::LoggedOut]),
        ) {
            let timeline = Timeline::new(&shifts);
            let window = Window { from: t(from), to: t(from + length) };
            let intervals: Vec<Interval> = timeline
                .between(t(-100), window.to)
                .iter()
                .map(|s| {
                    let state = match s.expected {
                        Expected::Work | Expected::OptionalBreak => working,
                        Expected::MandatoryBreak => resting,
                        Expected::OffShift => AgentState::LoggedOut,
                    };
                    interval(state, s.start, Some(s.end))
                })
                .collect();
            let f = figures(&intervals, &timeline, window, window.to, &within(TimeDelta::zero()));
            prop_assert_eq!(f.in_adherence_ms, f.scheduled_ms);
            prop_assert_eq!(f.exceptions, 0);
            if f.scheduled_ms > 0 {
                prop_assert_eq!(f.adherence_pct(), Some(100.0));
            }
        }

        /// The schedule-against-actual view covers the window exactly, back to back,
        /// and its scheduled spans add up to the figures of the same window (time off
        /// shift may be authorised or out too, but figures are of scheduled time).
        #[test]
        fn the_day_spans_cover_the_window_and_add_up_to_the_figures(
            timeline in arb_timeline(),
            (intervals, end) in arb_history(),
            from in 0i64..800,
            length in 1i64..800,
            after in 0i64..200,
            judging in arb_judging(),
        ) {
            let now = t(end + after);
            let window = Window { from: t(from), to: t(from + length) };
            let spans = day_spans(&intervals, &timeline, window, now, &judging);
            prop_assert_eq!(spans.first().map(|s| s.start), Some(window.from));
            prop_assert_eq!(spans.last().map(|s| s.end), Some(window.to));
            for pair in spans.windows(2) {
                prop_assert_eq!(pair[0].end, pair[1].start);
                prop_assert!(pair[0].start < pair[0].end);
            }
            let ms = |judged: Judged| -> i64 {
                spans
                    .iter()
                    .filter(|s| s.judged == judged && s.expected.is_scheduled())
                    .map(|s| (s.end - s.start).num_milliseconds())
                    .sum()
            };
            let f = figures(&intervals, &timeline, window, now, &judging);
            prop_assert_eq!(ms(Judged::In), f.in_adherence_ms);
            prop_assert_eq!(ms(Judged::Out), f.out_of_adherence_ms());
            prop_assert_eq!(ms(Judged::Neutral), f.neutral_ms);
            prop_assert_eq!(ms(Judged::Authorised), f.authorised_ms);
            prop_assert_eq!(ms(Judged::Unobserved), f.unobserved_ms());
        }

        /// Compares with a model, under random adherence rules and authorised spans:
        /// every scheduled millisecond is judged on its own and is exactly one of in,
        /// out, neutral, authorised or unobserved; and a sweep run every millisecond (with
        /// [`Timeline::deviation_at`], as the compliance sweep uses it, and each rule's
        /// grace) opens and closes exceptions; the figures must count exactly the ones it
        /// opened in the window.
        #[test]
        fn matches_a_sweep_run_every_millisecond(
            timeline in arb_timeline(),
            (intervals, end) in arb_history(),
            from in 0i64..800,
            length in 1i64..800,
            after in 0i64..200,
            judging in arb_judging(),
        ) {
            let now = t(end + after);
            let window = Window { from: t(from), to: t(from + length) };
            let f = figures(&intervals, &timeline, window, now, &judging);

            let (mut scheduled, mut inside, mut out, mut neutral) = (0, 0, 0, 0);
            let (mut authorised, mut unobserved) = (0, 0);
            for ms in from..from + length {
                let segment = timeline.segment_at(t(ms));
                if !segment.expected.is_scheduled() {
                    continue;
                }
                scheduled += 1;
                let observed = state_at(&intervals, t(ms), now).filter(|_| t(ms) < now);
                let Some(observed) = observed else {
                    unobserved += 1;
                    continue;
                };
                let judged = judging.judge(
                    timeline.scheduled(&segment),
                    observed.state,
                    observed.reason.as_deref(),
                );
                match judged {
                    Judgement::In { .. } => inside += 1,
                    Judgement::Neutral { .. } => neutral += 1,
                    Judgement::Out { .. } => out += 1,
                    Judgement::Authorised => authorised += 1,
                }
            }
            prop_assert_eq!(inside + out + neutral + authorised + unobserved, scheduled);
            prop_assert_eq!(f.authorised_ms, authorised);
            prop_assert_eq!(f.scheduled_ms, scheduled);
            prop_assert_eq!(f.in_adherence_ms, inside);
            prop_assert_eq!(f.neutral_ms, neutral);
            prop_assert_eq!(f.out_of_adherence_ms(), out);
            prop_assert_eq!(f.unobserved_ms(), unobserved);

            // At most one exception is open at a time: the current deviation's.
            let mut open: Option<DeviationKind> = None;
            let mut opened_in_window = 0;
            let first = intervals[0].start.timestamp_millis() - t(0).timestamp_millis();
            let limit = (now.min(window.to) - t(0)).num_milliseconds();
            for ms in first..limit {
                let at = t(ms);
                let Some(current) = state_at(&intervals, at, now) else { continue };
                let observed = (current.state, current.reason.as_deref());
                match timeline.deviation_at(&judging, observed, current.start, at) {
                    None => open = None,
                    Some(d) if open != Some(d.kind) => {
                        open = (at - d.since >= judging.grace(d.rule)).then_some(d.kind);
                        if open.is_some() && window.from <= at && at < window.to {
                            opened_in_window += 1;
                        }
                    }
                    Some(_) => {}
                }
            }
            prop_assert_eq!(f.exceptions, opened_in_window);
        }
    }
}
