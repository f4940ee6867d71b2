//! The retry executor: exponential backoff with full jitter, honouring `Retry-After`.
//!
//! Only errors that [`CxoneError::is_retryable`] says may succeed later are retried
//! (429, 5xx, timeouts, connection failures). Before retry `n` (0-based) the executor
//! waits a uniform random time in `[0, min(max_delay, base_delay·2ⁿ)]`, and never less
//! than the platform's `Retry-After`. A `Retry-After` longer than `max_delay` is not
//! waited out: the error is returned at once, so a caller is never parked for longer
//! than it agreed to.
//!
//! Built on the `backoff` crate, which stays private to this file (it is unmaintained;
//! keeping it here makes it a one-file swap).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::CxoneError;

/// How often and how patiently a platform call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt: at most `max_retries + 1` attempts in all.
    pub max_retries: u32,
    /// The jitter cap before the first retry; it doubles for each later one.
    pub base_delay: Duration,
    /// The largest jitter cap, and the longest `Retry-After` worth waiting for.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails with a non-retryable error, or the policy is
    /// exhausted; returns the last error in the latter two cases.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, CxoneError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CxoneError>>,
    {
        // `backoff` skips `next_backoff()` for errors that carry their own retry-after,
        // which would let Retry-After retries escape the retry count. So every retryable
        // error is handed over as plain transient, and its Retry-After travels to the
        // schedule through this slot instead.
        let retry_after = Arc::new(Mutex::new(None));
        let schedule = Schedule {
            policy: *self,
            retries: 0,
            retry_after: Arc::clone(&retry_after),
        };
        let mut attempt = 0u32;
        let operation = || {
            let future = op();
            let retry_after = Arc::clone(&retry_after);
            async move {
                future.await.map_err(|err| {
                    if err.is_retryable() {
                        *retry_after.lock().unwrap_or_else(|e| e.into_inner()) = err.retry_after();
                        backoff::Error::transient(err)
                    } else {
                        backoff::Error::permanent(err)
                    }
                })
            }
        };
        let notify = |err: CxoneError, delay: Duration| {
            attempt += 1;
            tracing::warn!(
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %err,
                "platform call failed; retrying"
            );
        };
        backoff::future::retry_notify(schedule, operation, notify).await
    }

    /// The jitter cap before retry `n` (0-based): `min(max_delay, base_delay·2ⁿ)`.
    fn cap(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_delay)
    }

    /// The wait before retry `n`, given a uniform sample in `[0, 1)` and the server's
    /// Retry-After; `None` means give up now.
    fn delay(&self, n: u32, unit: f64, retry_after: Option<Duration>) -> Option<Duration> {
        if n >= self.max_retries {
            return None;
        }
        let jittered = self.cap(n).mul_f64(unit.clamp(0.0, 1.0));
        match retry_after {
            Some(wait) if wait > self.max_delay => None,
            Some(wait) => Some(wait.max(jittered)),
            None => Some(jittered),
        }
    }
}

/// The backoff schedule of one `run`: counts every retry, Retry-After ones included.
struct Schedule {
    policy: RetryPolicy,
    retries: u32,
    retry_after: Arc<Mutex<Option<Duration>>>,
}

impl backoff::backoff::Backoff for Schedule {
    fn reset(&mut self) {
        self.retries = 0;
    }

    fn next_backoff(&mut self) -> Option<Duration> {
        let retry_after = self
            .retry_after
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let delay = self
            .policy
            .delay(self.retries, rand::random::<f64>(), retry_after);
        match delay {
            Some(_) => self.retries += 1,
            None if self.retries < self.policy.max_retries => tracing::warn!(
                retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                max_delay_ms = self.policy.max_delay.as_millis() as u64,
                "platform asked to wait longer than the retry policy allows; giving up"
            ),
            None => {}
        }
        delay
    }
}

/// Reads a `Retry-After` value: delta-seconds, or an HTTP-date (then the time left until
/// it, zero when it has passed). `None` when it is neither.
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // Not in RFC 9110, but some servers send fractions; reading them beats ignoring them.
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is a valid RFC 2822 date.
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::time::Instant;

    use super::*;

    fn policy(max_retries: u32, base_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base_delay: Duration::from_millis(base_ms),
            max_delay: Duration::from_millis(max_ms),
        }
    }

    fn server_error() -> CxoneError {
        CxoneError::Server {
            status: 503,
            message: String::new(),
            retry_after: None,
        }
    }

    /// An operation that fails with `errors` in order, then succeeds; counts attempts.
    fn scripted(
        errors: Vec<CxoneError>,
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> std::future::Ready<Result<u32, CxoneError>>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&calls);
        let op = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(match errors.get(n as usize) {
                Some(err) => Err(err.clone()),
                None => Ok(n),
            })
        };
        (calls, op)
    }

    #[test]
    fn caps_double_from_base_and_stop_at_max() {
        let p = policy(10, 100, 1_000);
        let caps: Vec<_> = (0..6).map(|n| p.cap(n).as_millis()).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(p.cap(200), Duration::from_millis(1_000));
    }

    #[test]
    fn delay_spans_zero_to_cap() {
        let p = policy(10, 100, 1_000);
        assert_eq!(p.delay(2, 0.0, None), Some(Duration::ZERO));
        assert_eq!(p.delay(2, 0.5, None), Some(Duration::from_millis(200)));
        assert_eq!(p.delay(2, 1.0, None), Some(Duration::from_millis(400)));
    }

    #[test]
    fn full_jitter_stays_within_the_cap_and_uses_its_range() {
        let p = policy(10, 100, 1_000);
        for n in 0..5 {
            let cap = p.cap(n);
            let samples: Vec<Duration> = (0..2_000)
                .map(|_| p.delay(n, rand::random::<f64>(), None).unwrap())
                .collect();
            assert!(
                samples.iter().all(|d| *d <= cap),
                "retry {n} beyond {cap:?}"
            );
            assert!(
                samples.iter().any(|d| *d < cap / 4),
                "retry {n}: no short waits"
            );
            assert!(
                samples.iter().any(|d| *d > cap * 3 / 4),
                "retry {n}: no long waits"
            );
        }
    }

    #[test]
    fn retry_after_is_a_floor_and_too_long_ones_give_up() {
        let p = policy(10, 100, 1_000);
        let ra = Some(Duration::from_millis(700));
        assert_eq!(p.delay(0, 0.0, ra), Some(Duration::from_millis(700)));
        assert_eq!(p.delay(4, 1.0, ra), Some(Duration::from_millis(1_000)));
        assert_eq!(p.delay(0, 0.5, Some(Duration::from_millis(1_001))), None);
        assert_eq!(
            p.delay(0, 0.5, Some(Duration::from_millis(1_000))),
            Some(Duration::from_millis(1_000))
        );
    }

    #[test]
    fn no_delay_once_retries_are_used_up() {
        let p = policy(2, 100, 1_000);
        assert!(p.delay(1, 0.5, None).is_some());
        assert_eq!(p.delay(2, 0.5, None), None);
        assert_eq!(policy(0, 100, 1_000).delay(0, 0.5, None), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now: DateTime<Utc> = "2026-11-20T14:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Fri, 20 Nov 2026 14:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Fri, 20 Nov 2026 13:59:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_retried_until_success() {
        let (calls, op) = scripted(vec![server_error(), CxoneError::Timeout]);
        let result = policy(3, 100, 1_000).run(op).await;
        assert_eq!(result, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_stay_within_the_jitter_caps() {
        let start = Instant::now();
        let (calls, op) = scripted(vec![server_error(); 3]);
        let result = policy(3, 100, 1_000).run(op).await;
        assert_eq!(result, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Caps 100 + 200 + 400 ms.
        assert!(
            start.elapsed() <= Duration::from_millis(700),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_retries_bounds_the_attempts() {
        let (calls, op) = scripted(vec![server_error(); 10]);
        let result = policy(2, 10, 100).run(op).await;
        assert_eq!(result, Err(server_error()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_errors_return_after_one_attempt() {
        for err in [
            CxoneError::BadRequest {
                message: "bad".into(),
            },
            CxoneError::Unauthorized,
            CxoneError::NotFound {
                message: String::new(),
            },
            CxoneError::Conflict {
                message: String::new(),
            },
            CxoneError::Decode("x".into()),
            CxoneError::CircuitOpen {
                remaining: Duration::from_secs(3),
            },
        ] {
            let start = Instant::now();
            let (calls, op) = scripted(vec![err.clone()]);
            assert_eq!(policy(5, 100, 1_000).run(op).await, Err(err));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_never_undercut() {
        let start = Instant::now();
        let limited = CxoneError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
        };
        let (calls, op) = scripted(vec![limited]);
        let result = policy(3, 10, 5_000).run(op).await;
        assert_eq!(result, Ok(1));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(
            start.elapsed() < Duration::from_millis(2_100),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn server_retry_after_is_honoured_too() {
        let start = Instant::now();
        let unavailable = CxoneError::Server {
            status: 503,
            message: String::new(),
            retry_after: Some(Duration::from_secs(1)),
        };
        let (_, op) = scripted(vec![unavailable]);
        assert_eq!(policy(3, 10, 5_000).run(op).await, Ok(1));
        assert!(start.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_beyond_max_delay_gives_up_at_once() {
        let start = Instant::now();
        let limited = CxoneError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
        };
        let (calls, op) = scripted(vec![limited.clone()]);
        assert_eq!(policy(3, 10, 5_000).run(op).await, Err(limited));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_retries_count_toward_max_retries() {
        let limited = CxoneError::RateLimited {
            retry_after: Some(Duration::from_millis(100)),
        };
        let (calls, op) = scripted(vec![limited.clone(); 10]);
        assert_eq!(policy(2, 10, 5_000).run(op).await, Err(limited));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_retries_means_one_attempt() {
        let (calls, op) = scripted(vec![server_error()]);
        assert_eq!(policy(0, 10, 100).run(op).await, Err(server_error()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
