//! The tenant's request budget: a token bucket shared by every caller in the process.
//!
//! The platform allows about 100 requests per minute per tenant and answers 429 past
//! that. wfmd keeps itself under a configured budget instead of learning the limit from
//! 429s: every API request (each attempt, each repeat after a token refresh; token calls
//! excepted) takes one permit before it is sent.
//!
//! The bucket reads `tokio::time::Instant`, so waiting for a permit follows the runtime's
//! clock: under `tokio::time::pause` a test can see the budget's pacing without waiting.
//!
//! Every request declares its [`Lane`]: the caller runs its platform work inside
//! [`in_lane`], and the budget reads the lane of the task it is asked from. A task that
//! declared nothing is in [`Lane::Automation`]. The lane travels with the task, not as
//! a parameter, so the `ContactCenter` trait and its dialects stay free of it.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Who is waiting for a platform request, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// A person waits for the answer: API and CLI single changes, wallboard actions,
    /// `/readyz`.
    Interactive,
    /// Work nobody watches live but that moves agents: rule firings, schedule
    /// automations, auto-corrections, bulk jobs.
    Automation,
    /// Work that can wait: schedule refresh, metric pollers, analytics.
    Background,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Interactive, Lane::Automation, Lane::Background];

    /// The lane's name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Interactive => "interactive",
            Lane::Automation => "automation",
            Lane::Background => "background",
        }
    }
}

/// The lane of the running task and, within it, the party it works for (a bulk job, a
/// rule firing), so parties of one lane can be served in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub lane: Lane,
    /// `None`: the lane's anonymous party.
    pub party: Option<Arc<str>>,
}

tokio::task_local! {
    static CALL_CONTEXT: CallContext;
}

/// Runs `work` with its platform requests in `lane`, on behalf of `party` (a job or
/// firing id for fairness within the lane; `None` when there is only one of a kind).
pub async fn in_lane<F: Future>(lane: Lane, party: Option<&str>, work: F) -> F::Output {
    let context = CallContext {
        lane,
        party: party.map(Arc::from),
    };
    CALL_CONTEXT.scope(context, work).await
}

/// The lane and party declared by the running task ([`Lane::Automation`] when none was).
pub fn current_context() -> CallContext {
    CALL_CONTEXT
        .try_with(CallContext::clone)
        .unwrap_or(CallContext {
            lane: Lane::Automation,
            party: None,
        })
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// The request budget. Share one per tenant as `Arc<Budget>`.
pub struct Budget {
    limiter: Option<Limiter>,
    /// Kept for `Debug` and logs: what the budget was configured as.
    per_minute: Option<u32>,
}

impl Budget {
    /// At most about `n` requests per minute.
    ///
    /// The burst is `max(1, n / 60)`: a full bucket lets only a second's worth of requests
    /// through at once, so no 60-second window sees much more than `n`. `n = 0` is
    /// treated as 1 (the slowest budget there is) rather than as "unlimited": a budget
    /// that silently stopped limiting would be learned from 429s after all.
    pub fn per_minute(n: u32) -> Budget {
        let rate = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(rate.get() / 60).unwrap_or(NonZeroU32::MIN);
        Budget {
            limiter: Some(Budget::limiter(Quota::per_minute(rate).allow_burst(burst))),
            per_minute: Some(rate.get()),
        }
    }

    /// No limit at all (tests, and platforms that enforce nothing).
    pub fn unlimited() -> Budget {
        Budget {
            limiter: None,
            per_minute: None,
        }
    }

    /// Waits until a request may be sent. Cancel-safe: dropping the future takes nothing.
    pub async fn acquire(&self) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        loop {
            match limiter.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(limiter.clock().now());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The configured rate in requests per minute; `None` when unlimited (or a test
    /// quota). Firings use it to say how long they will take.
    pub fn per_minute_rate(&self) -> Option<u32> {
        self.per_minute
    }

    /// Takes a permit if one is available now, without waiting.
    pub fn try_acquire(&self) -> bool {
        self.limiter
            .as_ref()
            .is_none_or(|limiter| limiter.check().is_ok())
    }

    fn limiter(quota: Quota) -> Limiter {
        let clock = TokioClock {
            origin: tokio::time::Instant::now(),
        };
        RateLimiter::direct_with_clock(quota, clock)
    }

    /// A budget with any quota, for tests that need a bucket which does not refill.
    #[cfg(test)]
    pub(crate) fn with_quota(quota: Quota) -> Budget {
        Budget {
            limiter: Some(Budget::limiter(quota)),
            per_minute: None,
        }
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.limiter, self.per_minute) {
            (None, _) => f.write_str("Budget(unlimited)"),
            (Some(_), Some(n)) => write!(f, "Budget({n}/min)"),
            (Some(_), None) => f.write_str("Budget(custom quota)"),
        }
    }
}

/// governor's view of `tokio::time`: nanoseconds since the limiter was made.
///
/// Each limiter keeps its own origin, taken from the runtime it was made under, so a
/// paused test runtime and the real clock never mix in one bucket.
#[derive(Debug, Clone, Copy)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(tokio::time::Instant::now().saturating_duration_since(self.origin))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sixty_per_minute_gives_one_permit_then_none() {
        let budget = Budget::per_minute(60);
        assert!(budget.try_acquire());
        assert!(!budget.try_acquire());
    }

    #[test]
    fn burst_is_a_sixtieth_of_the_minute_budget() {
        let budget = Budget::per_minute(600);
        let granted = (0..50).filter(|_| budget.try_acquire()).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn zero_per_minute_is_the_slowest_budget_not_unlimited() {
        let budget = Budget::per_minute(0);
        assert!(budget.try_acquire());
        assert!(!budget.try_acquire());
    }

    #[test]
    fn unlimited_budget_never_refuses() {
        let budget = Budget::unlimited();
        assert!((0..10_000).all(|_| budget.try_acquire()));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_the_next_permit_under_paused_time() {
        let budget = Budget::per_minute(60);
        let start = tokio::time::Instant::now();
        budget.acquire().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        budget.acquire().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
            "second permit after {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_minute_of_acquires_stays_within_the_budget() {
        let budget = Budget::per_minute(120);
        let start = tokio::time::Instant::now();
        let mut granted = 0;
        while start.elapsed() < Duration::from_secs(60) {
            budget.acquire().await;
            if start.elapsed() < Duration::from_secs(60) {
                granted += 1;
            }
        }
        // Burst of 2 plus one permit every 0.5 s.
        assert!(
            (120..=122).contains(&granted),
            "granted {granted} in a minute"
        );
    }

    #[tokio::test]
    async fn the_lane_travels_with_the_task_and_defaults_to_automation() {
        assert_eq!(current_context().lane, Lane::Automation);
        let inner = in_lane(Lane::Interactive, Some("job-1"), async {
            current_context()
        })
        .await;
        assert_eq!(inner.lane, Lane::Interactive);
        assert_eq!(inner.party.as_deref(), Some("job-1"));
        assert_eq!(current_context().lane, Lane::Automation);
    }

    #[test]
    fn debug_names_the_budget() {
        assert_eq!(format!("{:?}", Budget::per_minute(100)), "Budget(100/min)");
        assert_eq!(format!("{:?}", Budget::unlimited()), "Budget(unlimited)");
        assert_eq!(Budget::per_minute(100).per_minute_rate(), Some(100));
        assert_eq!(Budget::unlimited().per_minute_rate(), None);
    }
}
