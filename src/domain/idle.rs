//! Idle time and time in each state over a window, from recorded state intervals.
//!
//! An interval that is still open (the agent is in that state now) counts up to `now`.
//! Every interval is clipped to the window, so a report for 09:00–10:00 counts only the
//! part of a 08:30–09:15 break that falls inside it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::state::AgentState;

/// One stretch of time an agent spent in one state. `end` is `None` while it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub state: AgentState,
    /// The reason code of the state, when it has one (adherence rules may name it).
    pub reason: Option<String>,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

/// A half-open time window `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// The widest window a report or history request may span.
    pub const MAX_DAYS: i64 = 366;

    /// A window users asked for: `to` after `from`, at most [`Window::MAX_DAYS`] long.
    /// The error says which rule was broken, with both instants.
    pub fn checked(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Window, String> {
        if to <= from {
            return Err(format!(
                "to ({}) must be after from ({})",
                to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ));
        }
        if to - from > chrono::Duration::days(Window::MAX_DAYS) {
            return Err(format!(
                "the window may span at most {} days",
                Window::MAX_DAYS
            ));
        }
        Ok(Window { from, to })
    }
}

/// Milliseconds per state, and their idle sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TimeInState {
    pub per_state_ms: BTreeMap<AgentState, i64>,
    pub idle_ms: i64,
}

impl TimeInState {
    pub fn ms_in(&self, state: AgentState) -> i64 {
        self.per_state_ms.get(&state).copied().unwrap_or(0)
    }
}

/// How long `interval` overlaps `window`, counting an open interval up to `now`.
pub fn overlap_ms(interval: &Interval, window: Window, now: DateTime<Utc>) -> i64 {
    let end = interval.end.unwrap_or(now);
    let start = interval.start.max(window.from);
    let end = end.min(window.to);
    (end - start).num_milliseconds().max(0)
}

/// Time in each state and idle time (IDLE, PAUSED, NOT_READY) inside `window`.
pub fn time_in_state<'a>(
    intervals: impl IntoIterator<Item = &'a Interval>,
    window: Window,
    now: DateTime<Utc>,
) -> TimeInState {
    let mut totals = TimeInState::default();
    for interval in intervals {
        let ms = overlap_ms(interval, window, now);
        if ms == 0 {
            continue;
        }
        *totals.per_state_ms.entry(interval.state).or_default() += ms;
        if interval.state.is_idle() {
            totals.idle_ms += ms;
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_790_000_000_000 + ms).unwrap()
    }

    fn window(from: i64, to: i64) -> Window {
        Window {
            from: t(from),
            to: t(to),
        }
    }

    #[test]
    fn closed_and_open_intervals_are_clipped_to_the_window() {
        let intervals = [
            Interval {
                reason: None,
                state: AgentState::NotReady,
                start: t(0),
                end: Some(t(1_000)),
            },
            Interval {
                reason: None,
                state: AgentState::Ready,
                start: t(1_000),
                end: Some(t(3_000)),
            },
            Interval {
                reason: None,
                state: AgentState::Paused,
                start: t(3_000),
                end: None,
            },
        ];
        let totals = time_in_state(&intervals, window(500, 10_000), t(4_500));
        assert_eq!(totals.ms_in(AgentState::NotReady), 500);
        assert_eq!(totals.ms_in(AgentState::Ready), 2_000);
        assert_eq!(totals.ms_in(AgentState::Paused), 1_500, "open until now");
        assert_eq!(totals.idle_ms, 2_000);
    }

    #[test]
    fn open_interval_stops_at_the_window_end_not_now() {
        let open = Interval {
            reason: None,
            state: AgentState::Idle,
            start: t(0),
            end: None,
        };
        let totals = time_in_state([&open], window(0, 60_000), t(3_600_000));
        assert_eq!(totals.idle_ms, 60_000);
    }

    #[test]
    fn interval_outside_the_window_counts_nothing() {
        let before = Interval {
            reason: None,
            state: AgentState::Idle,
            start: t(0),
            end: Some(t(10)),
        };
        let totals = time_in_state([&before], window(10, 20), t(100));
        assert_eq!(totals, TimeInState::default());
    }

    fn arb_state() -> impl Strategy<Value = AgentState> {
        proptest::sample::select(AgentState::ALL.to_vec())
    }

    /// Back-to-back intervals as the store keeps them: each starts where the last ended,
    /// and only the last may be open.
    fn arb_history() -> impl Strategy<Value = (Vec<Interval>, i64)> {
        (
            prop::collection::vec((arb_state(), 0i64..400), 0..12),
            any::<bool>(),
            0i64..300,
        )
            .prop_map(|(steps, last_open, start)| {
                let mut at = start;
                let mut intervals = Vec::new();
                let count = steps.len();
                for (i, (state, length)) in steps.into_iter().enumerate() {
                    let end = (i + 1 < count || !last_open).then_some(at + length);
                    intervals.push(Interval {
                        state,
                        reason: None,
                        start: t(at),
                        end: end.map(t),
                    });
                    at += length;
                }
                (intervals, at)
            })
    }

    proptest! {
        /// Counts every millisecond of the window one by one and compares.
        #[test]
        fn matches_a_millisecond_by_millisecond_model(
            (intervals, history_end) in arb_history(),
            from in 0i64..600,
            length in 0i64..600,
            now_after_end in 0i64..300,
        ) {
            let now = history_end + now_after_end;
            let w = window(from, from + length);
            let fast = time_in_state(&intervals, w, t(now));

            let mut model = TimeInState::default();
            for ms in from..from + length {
                let instant = t(ms);
                for interval in &intervals {
                    let end = interval.end.unwrap_or(t(now));
                    if interval.start <= instant && instant < end {
                        *model.per_state_ms.entry(interval.state).or_default() += 1;
                        if interval.state.is_idle() {
                            model.idle_ms += 1;
                        }
                    }
                }
            }
            prop_assert_eq!(fast, model);
        }

        #[test]
        fn splitting_a_window_in_two_adds_up(
            (intervals, history_end) in arb_history(),
            from in 0i64..600,
            first in 0i64..400,
            second in 0i64..400,
        ) {
            let now = t(history_end);
            let whole = time_in_state(&intervals, window(from, from + first + second), now);
            let a = time_in_state(&intervals, window(from, from + first), now);
            let b = time_in_state(&intervals, window(from + first, from + first + second), now);
            prop_assert_eq!(whole.idle_ms, a.idle_ms + b.idle_ms);
            for state in AgentState::ALL {
                prop_assert_eq!(whole.ms_in(state), a.ms_in(state) + b.ms_in(state));
            }
        }
    }

    #[test]
    fn a_long_day_sums_to_the_shift() {
        let day = Duration::hours(8).num_milliseconds();
        let open = Interval {
            reason: None,
            state: AgentState::Ready,
            start: t(0),
            end: None,
        };
        let totals = time_in_state([&open], window(0, day), t(day));
        assert_eq!(totals.ms_in(AgentState::Ready), day);
        assert_eq!(totals.idle_ms, 0);
    }
}
