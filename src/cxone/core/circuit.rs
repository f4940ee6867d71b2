//! The 401 circuit breaker shared by both dialects.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::cxone::CxoneError;

/// Pauses platform calls after consecutive 401 answers.
///
/// A 401 counts once per token: when a token is revoked, every request in flight with
/// it comes back 401 at about the same time, and those are one event (which the
/// refresh fixes), not a run of failures. Counting each of them would open the circuit
/// on every revocation and defeat the single refresh. Three 401s with three different
/// tokens in a row, with no other answer between them, mean the credentials or the
/// tenant are wrong: then calls pause.
pub struct CircuitBreaker {
    threshold: u32,
    pause: Duration,
    state: Mutex<CircuitState>,
}

#[derive(Default)]
struct CircuitState {
    consecutive: u32,
    /// Newest token generation already counted.
    last_counted: Option<u64>,
    open_until: Option<Instant>,
}

impl CircuitBreaker {
    /// The platform contract's breaker: three 401s in a row pause calls for 30 s.
    pub(crate) fn new() -> CircuitBreaker {
        CircuitBreaker::with_pause(Duration::from_secs(30))
    }

    pub(crate) fn with_pause(pause: Duration) -> CircuitBreaker {
        CircuitBreaker {
            threshold: 3,
            pause,
            state: Mutex::new(CircuitState::default()),
        }
    }

    /// Fails at once while the circuit is open.
    pub(crate) fn check(&self) -> Result<(), CxoneError> {
        let mut state = self.lock();
        if let Some(until) = state.open_until {
            let now = Instant::now();
            if now < until {
                return Err(CxoneError::CircuitOpen {
                    remaining: until - now,
                });
            }
            state.open_until = None;
            tracing::info!("401 pause is over; calling the platform again");
        }
        Ok(())
    }

    /// A 401 answer to a request made with token `generation`.
    pub(crate) fn record_unauthorized(&self, generation: u64) {
        let mut state = self.lock();
        if state
            .last_counted
            .is_some_and(|counted| generation <= counted)
        {
            return;
        }
        state.last_counted = Some(generation);
        state.consecutive += 1;
        if state.consecutive >= self.threshold {
            state.consecutive = 0;
            state.open_until = Some(Instant::now() + self.pause);
            tracing::error!(
                pause_s = self.pause.as_secs_f64(),
                "{} consecutive 401 answers; pausing platform calls",
                self.threshold
            );
        }
    }

    /// Any answer other than 401.
    pub(crate) fn record_answer(&self) {
        self.lock().consecutive = 0;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CircuitState> {
        // The state stays consistent under a panic (plain counters), so poison is moot.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("threshold", &self.threshold)
            .field("pause", &self.pause)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn third_401_in_a_row_opens_the_circuit_for_the_pause() {
        let breaker = CircuitBreaker::with_pause(Duration::from_secs(30));
        breaker.record_unauthorized(1);
        breaker.record_unauthorized(2);
        assert_eq!(breaker.check(), Ok(()));
        breaker.record_unauthorized(3);
        match breaker.check() {
            Err(CxoneError::CircuitOpen { remaining }) => {
                assert_eq!(remaining, Duration::from_secs(30))
            }
            other => panic!("expected an open circuit, got {other:?}"),
        }
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(matches!(
            breaker.check(),
            Err(CxoneError::CircuitOpen { remaining }) if remaining == Duration::from_secs(1)
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.check(), Ok(()));
        // The count started over: two more 401s do not reopen it.
        breaker.record_unauthorized(4);
        breaker.record_unauthorized(5);
        assert_eq!(breaker.check(), Ok(()));
    }

    #[test]
    fn any_other_answer_resets_the_401_count() {
        let breaker = CircuitBreaker::new();
        assert_eq!(breaker.pause, Duration::from_secs(30));
        breaker.record_unauthorized(1);
        breaker.record_unauthorized(2);
        breaker.record_answer();
        breaker.record_unauthorized(3);
        breaker.record_unauthorized(4);
        assert_eq!(breaker.check(), Ok(()));
        breaker.record_unauthorized(5);
        assert!(breaker.check().is_err());
    }

    #[test]
    fn many_401s_with_one_token_count_once() {
        let breaker = CircuitBreaker::new();
        for _ in 0..200 {
            breaker.record_unauthorized(7);
        }
        breaker.record_unauthorized(8);
        assert_eq!(breaker.check(), Ok(()));
        breaker.record_unauthorized(9);
        assert!(breaker.check().is_err());
    }
}
