//! The simulator's single source of "now".
//!
//! Every time value the simulator serves or compares (shift windows, break status, token
//! expiry, state stamps) is read through [`SimClock`], so that making simulated time run
//! faster than the wall clock later is a change to this file only. Tests can already move
//! it forward with [`SimClock::advance`] instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

/// The wall clock plus an offset that only ever grows.
#[derive(Debug, Default)]
pub struct SimClock {
    offset_ms: AtomicI64,
}

impl SimClock {
    /// The current simulated instant, truncated to milliseconds so that what the API
    /// serves and what the ground truth holds compare equal after an RFC 3339 round trip.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        (Utc::now() + offset).trunc_subsecs(3)
    }

    /// How many whole wall-clock seconds (rounded up, at least 1) cover `sim` of
    /// simulated time: what a `Retry-After` must say so that a client honouring it comes
    /// back late enough.
    pub fn wall_secs_ceil(&self, sim: TimeDelta) -> u64 {
        let ms = u64::try_from(sim.num_milliseconds()).unwrap_or(0);
        ms.div_ceil(1000).max(1)
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
}
