//! Where the engine reads "now": one injectable source for the transition engine, the
//! rule scheduler, the schedule book, the automations, the compliance sweep and the
//! stamps state sync records.
//!
//! The daemon reads the wall clock. `serve --simulate --time-scale F` gives them a clock
//! that runs F times as fast from the simulator's start, so the simulated tenant's
//! shifts, breaks and state stamps and wfmd's verdicts about them share one time line.
//! Tests use a clock that moves with tokio's (paused) clock.
//!
//! Operational timing stays on real time whatever the clock: webhook retries, the
//! request budget, state sync's pacing and staleness, metrics.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The shortest period [`Clock::period`] gives a fast clock, so a loop does not spin.
const MIN_PERIOD: Duration = Duration::from_millis(50);

/// Where the time is read.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    /// The system's UTC clock.
    #[default]
    Wall,
    /// `base` at tokio instant `at`, then `scale` times as fast as tokio's clock (which
    /// tests pause).
    Tokio {
        base: DateTime<Utc>,
        at: tokio::time::Instant,
        scale: f64,
    },
}

impl Clock {
    /// A clock that reads `base` now and moves with `tokio::time`.
    pub fn starting_at(base: DateTime<Utc>) -> Clock {
        Clock::scaled(base, 1.0)
    }

    /// A clock that reads `base` now and runs `scale` times as fast as `tokio::time`
    /// (60: a real second is a minute).
    ///
    /// # Panics
    /// If `scale` is not a positive finite number.
    pub fn scaled(base: DateTime<Utc>, scale: f64) -> Clock {
        assert!(
            scale.is_finite() && scale > 0.0,
            "a clock's scale must be positive and finite, got {scale}"
        );
        Clock::Tokio {
            base,
            at: tokio::time::Instant::now(),
            scale,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::Wall => Utc::now(),
            Clock::Tokio { base, at, scale } => {
                let elapsed = at.elapsed();
                let run = if *scale == 1.0 {
                    TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX)
                } else {
                    TimeDelta::nanoseconds((elapsed.as_nanos() as f64 * scale) as i64)
                };
                *base + run
            }
        }
    }

    /// How many of this clock's seconds pass per real second.
    pub fn scale(&self) -> f64 {
        match self {
            Clock::Wall => 1.0,
            Clock::Tokio { scale, .. } => *scale,
        }
    }

    /// How long to sleep (real time) for `span` of this clock's time to pass; zero for a
    /// span that is not ahead.
    pub fn real(&self, span: TimeDelta) -> Duration {
        let span = span.to_std().unwrap_or_default();
        match self.scale() {
            1.0 => span,
            scale => span.div_f64(scale),
        }
    }

    /// The real period of a loop meant to run every `every` of this clock's time; a fast
    /// clock's loop runs at most every 50 ms.
    pub fn period(&self, every: Duration) -> Duration {
        match self.scale() {
            1.0 => every,
            scale => every.div_f64(scale).max(MIN_PERIOD),
        }
    }

    /// How much of this clock's time passes in `real` time.
    pub fn span(&self, real: Duration) -> TimeDelta {
        let span = match self.scale() {
            1.0 => real,
            scale => real.mul_f64(scale),
        };
        TimeDelta::from_std(span).unwrap_or(TimeDelta::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> DateTime<Utc> {
        "2026-11-20T09:00:00Z".parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_scaled_clock_runs_that_many_times_as_fast_as_tokio_time() {
        let clock = Clock::scaled(base(), 60.0);
        assert_eq!(clock.now(), base());
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), base() + TimeDelta::minutes(90));
        assert_eq!(clock.real(TimeDelta::hours(1)), Duration::from_secs(60));
        assert_eq!(clock.span(Duration::from_secs(2)), TimeDelta::minutes(2));
        assert_eq!(clock.real(TimeDelta::minutes(-5)), Duration::ZERO);
        assert_eq!(
            clock.period(Duration::from_secs(30)),
            Duration::from_millis(500)
        );
        assert_eq!(
            clock.period(Duration::from_secs(1)),
            Duration::from_millis(50),
            "not spinning"
        );

        let plain = Clock::starting_at(base());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(plain.now(), base() + TimeDelta::seconds(30));
        assert_eq!(plain.real(TimeDelta::seconds(7)), Duration::from_secs(7));
    }

    #[test]
    fn the_wall_clock_is_utc_now() {
        let before = Utc::now();
        let now = Clock::Wall.now();
        assert!(before <= now && now <= Utc::now());
        assert_eq!(Clock::default().scale(), 1.0);
    }

    #[test]
    #[should_panic(expected = "positive and finite")]
    fn a_clock_does_not_stand_still() {
        let _ = Clock::scaled(base(), 0.0);
    }
}
