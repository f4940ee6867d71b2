//! The simulator's single source of "now".
//!
//! Every time value the simulator serves or compares (shift windows, break status, token
//! expiry, state stamps, subscription expiry and poll spacing, the agents' own activity) is
//! read through [`SimClock`]. Simulated time runs at `time_scale` times the wall clock
//! (60.0: a real second is a simulated minute; 0.0: frozen) and tests move it forward with
//! [`SimClock::advance`] instead of sleeping. The tenant's request budget is the exception:
//! it protects a real client in real time, so it stays on the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

/// A simulated instant that moves with the (monotonic) wall clock times a speed factor,
/// plus an offset that only ever grows.
#[derive(Debug)]
pub struct SimClock {
    /// The simulated instant at `origin`.
    start: DateTime<Utc>,
    origin: Instant,
    scale: f64,
    offset_ms: AtomicI64,
}

impl Default for SimClock {
    /// Starts at the wall clock's now and runs at its speed.
    fn default() -> Self {
        SimClock::new(None, 1.0)
    }
}

impl SimClock {
    /// A clock that reads `start` (the wall clock's now when `None`) at this instant and
    /// then runs `scale` times as fast as the wall clock.
    ///
    /// # Panics
    /// If `scale` is negative, NaN or infinite.
    pub fn new(start: Option<DateTime<Utc>>, scale: f64) -> Self {
        assert!(
            scale.is_finite() && scale >= 0.0,
            "time_scale must be a finite number >= 0, got {scale}"
        );
        SimClock {
            start: start.unwrap_or_else(Utc::now),
            origin: Instant::now(),
            scale,
            offset_ms: AtomicI64::new(0),
        }
    }

    /// How many simulated seconds pass per wall-clock second.
    pub fn time_scale(&self) -> f64 {
        self.scale
    }

    /// The current simulated instant, truncated to milliseconds so that what the API
    /// serves and what the ground truth holds compare equal after an RFC 3339 round trip.
    pub fn now(&self) -> DateTime<Utc> {
        let wall = self.origin.elapsed();
        let run = if self.scale == 1.0 {
            TimeDelta::from_std(wall).unwrap_or(TimeDelta::MAX)
        } else {
            // f64 nanoseconds stay exact to well under a millisecond for months of run.
            TimeDelta::nanoseconds((wall.as_nanos() as f64 * self.scale) as i64)
        };
        let offset = TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        (self.start + run + offset).trunc_subsecs(3)
    }

    /// How many whole wall-clock seconds (rounded up, at least 1) cover `sim` of
    /// simulated time: what a `Retry-After` must say so that a client honouring it comes
    /// back late enough. A frozen clock counts simulated seconds, since only
    /// [`SimClock::advance`] moves it.
    pub fn wall_secs_ceil(&self, sim: TimeDelta) -> u64 {
        let ms = u64::try_from(sim.num_milliseconds()).unwrap_or(0);
        let wall_ms = if self.scale > 0.0 && self.scale != 1.0 {
            (ms as f64 / self.scale).ceil() as u64
        } else {
            ms
        };
        wall_ms.div_ceil(1000).max(1)
    }

    /// Moves simulated time forward by `by` (whole milliseconds).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_now_forward_by_at_least_the_amount() {
        let clock = SimClock::default();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        let after = clock.now();
        assert!(after - before >= TimeDelta::hours(1));
        assert!(after - before < TimeDelta::hours(1) + TimeDelta::minutes(1));
    }

    #[test]
    fn now_has_millisecond_precision() {
        let now = SimClock::default().now();
        assert_eq!(now.timestamp_subsec_nanos() % 1_000_000, 0);
    }

    #[test]
    fn default_clock_follows_the_wall_clock() {
        let clock = SimClock::default();
        let drift = (clock.now() - Utc::now()).abs();
        assert!(drift < TimeDelta::seconds(1), "{drift}");
        assert_eq!(clock.time_scale(), 1.0);
    }

    #[test]
    fn scaled_clock_runs_faster_than_the_wall_clock() {
        let clock = SimClock::new(None, 600.0);
        let (wall, sim) = (Instant::now(), clock.now());
        // Ten simulated seconds take about 17 real milliseconds at this speed.
        while clock.now() - sim < TimeDelta::seconds(10) {
            assert!(wall.elapsed() < Duration::from_secs(2), "clock too slow");
            std::hint::spin_loop();
        }
        let real = wall.elapsed();
        assert!(real < Duration::from_secs(1), "{real:?} for 10 sim seconds");
    }

    #[test]
    fn frozen_clock_moves_only_when_advanced_and_starts_where_told() {
        let start: DateTime<Utc> = "2026-11-20T14:30:00Z".parse().unwrap();
        let clock = SimClock::new(Some(start), 0.0);
        assert_eq!(clock.now(), start);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), start + TimeDelta::milliseconds(1500));
    }

    #[test]
    fn retry_after_is_in_wall_seconds_rounded_up() {
        let normal = SimClock::default();
        assert_eq!(normal.wall_secs_ceil(TimeDelta::milliseconds(9_001)), 10);
        assert_eq!(normal.wall_secs_ceil(TimeDelta::milliseconds(1)), 1);
        assert_eq!(normal.wall_secs_ceil(TimeDelta::zero()), 1);
        // A minute of simulated time per real second: 90 simulated seconds is 2 real ones.
        let fast = SimClock::new(None, 60.0);
        assert_eq!(fast.wall_secs_ceil(TimeDelta::seconds(90)), 2);
        assert_eq!(fast.wall_secs_ceil(TimeDelta::seconds(10)), 1);
        let frozen = SimClock::new(None, 0.0);
        assert_eq!(frozen.wall_secs_ceil(TimeDelta::seconds(7)), 7);
    }

    #[test]
    #[should_panic(expected = "time_scale")]
    fn negative_scale_is_refused() {
        SimClock::new(None, -1.0);
    }
}
