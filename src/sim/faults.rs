//! Misbehaviour on demand: the tenant's rate limit, scripted failures and hangs, and
//! persistent random faults and latency.
//!
//! All of it is applied by [`gate_with`], the middleware in front of every API route of
//! both dialects (each words the refusals in its own error shape), in the order the
//! platform would: count the request, check the token (401), spend the tenant budget
//! (429), then scripted `fail_next_on`/`hang_next_on`/`hold_next_on`, then random
//! faults, then latency. Token and `/_sim` control calls never pass through it.
//!
//! A scripted entry names the route it is for, so a test that fails "the next change"
//! cannot have its fault taken by whatever else the daemon asks meanwhile (a poller, the
//! sync, a schedule fetch). A hold keeps one call waiting until the test lets it go, so a
//! test that must act while a call is under way need not guess how long the call takes.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultDirectRateLimiter, Quota};
use rand::Rng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

use super::Simulator;
use super::wire::ApiError;

/// Persistent random faults applied to every API call.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share of API calls answered 503 (0.0–1.0, clamped).
    pub error_ratio: f64,
    /// Share of API calls that never answer (0.0–1.0, clamped).
    pub timeout_ratio: f64,
    /// Added before every API call that reaches its handler.
    pub latency: Duration,
}

/// One scripted misbehaviour for one upcoming call to its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scripted {
    Fail {
        status: StatusCode,
        retry_after: Option<u64>,
    },
    Hang,
}

/// What one scripted entry does to the call that takes it.
#[derive(Debug, Clone)]
pub(crate) enum Script {
    /// Answered with the fault instead of by its handler.
    Fault(Scripted),
    /// Waits until released, then is served as usual.
    Hold(HoldGate),
}

/// The simulator's side of a [`Hold`].
#[derive(Debug, Clone)]
pub(crate) struct HoldGate {
    arrived: CancellationToken,
    release: CancellationToken,
}

impl HoldGate {
    /// Says the call arrived and waits for its release: `None` when the simulator shuts
    /// down first (shutdown must not wait on a test that forgot to release).
    pub(crate) async fn wait(&self, sim: &Simulator) -> Option<()> {
        self.arrived.cancel();
        tokio::select! {
            () = self.release.cancelled() => Some(()),
            () = sim.released() => None,
        }
    }
}

/// One call held at the gate by [`Simulator::hold_next_on`]; dropping it lets the call go
/// as [`Hold::release`] does, so a failing test leaves nothing waiting.
#[derive(Debug)]
pub struct Hold {
    gate: HoldGate,
}

impl Hold {
    pub(crate) fn new() -> (Hold, HoldGate) {
        let gate = HoldGate {
            arrived: CancellationToken::new(),
            release: CancellationToken::new(),
        };
        (Hold { gate: gate.clone() }, gate)
    }

    /// Resolves once the call has reached the simulator and is being held.
    pub async fn arrived(&self) {
        self.gate.arrived.cancelled().await;
    }

    /// Whether the call has reached the simulator.
    pub fn has_arrived(&self) -> bool {
        self.gate.arrived.is_cancelled()
    }

    /// Lets the call through to its handler (or lets the next call to the route
    /// through at once, if none has come yet).
    pub fn release(self) {}
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.gate.release.cancel();
    }
}

/// Fault settings and the queue of scripted misbehaviour, kept in the simulator state.
#[derive(Debug)]
pub(crate) struct FaultState {
    pub faults: Faults,
    /// Route keys (`"GET /api/v2/users"`, as in the stats) with what their calls meet,
    /// one entry per call. A call takes the first entry for its route and leaves the
    /// others queued, so two entries for one route are met in the order scripted.
    pub scripted: VecDeque<(String, Script)>,
    /// Seeded from the tenant seed so a faulty run can be replayed.
    pub rng: StdRng,
}

impl FaultState {
    pub fn new(rng: StdRng) -> Self {
        FaultState {
            faults: Faults::default(),
            scripted: VecDeque::new(),
            rng,
        }
    }

    pub fn set(&mut self, faults: Faults) {
        self.faults = Faults {
            error_ratio: clamp_ratio(faults.error_ratio),
            timeout_ratio: clamp_ratio(faults.timeout_ratio),
            latency: faults.latency,
        };
    }

    pub fn push(&mut self, route: &str, count: u32, what: Script) {
        self.scripted.extend(std::iter::repeat_n(
            (route.to_owned(), what),
            count as usize,
        ));
    }

    /// What a call to `route` meets: its first scripted entry, else a random roll. A call
    /// without a matched route (none reaches the gate today) takes no scripted entry.
    pub(crate) fn next_for(&mut self, route: Option<&str>) -> Option<Script> {
        let scripted = route.and_then(|route| {
            let at = self.scripted.iter().position(|(r, _)| r == route)?;
            self.scripted.remove(at).map(|(_, what)| what)
        });
        scripted.or_else(|| self.roll().map(Script::Fault))
    }

    /// Rolls once per call: below `error_ratio` fails, the next `timeout_ratio` hangs.
    pub(crate) fn roll(&mut self) -> Option<Scripted> {
        let Faults {
            error_ratio,
            timeout_ratio,
            ..
        } = self.faults;
        if error_ratio <= 0.0 && timeout_ratio <= 0.0 {
            return None;
        }
        let r: f64 = self.rng.random();
        if r < error_ratio {
            Some(Scripted::Fail {
                status: StatusCode::SERVICE_UNAVAILABLE,
                retry_after: None,
            })
        } else if r < error_ratio + timeout_ratio {
            Some(Scripted::Hang)
        } else {
            None
        }
    }
}

/// Checks that `route` has the shape of a route key, `"METHOD /path/{param}"` without
/// the cluster path or a query: a fault scripted for anything else would never fire.
pub(crate) fn check_route(route: &str) -> Result<(), String> {
    const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    let shaped = route.split_once(' ').is_some_and(|(method, path)| {
        METHODS.contains(&method) && path.starts_with('/') && !path.contains(['?', ' '])
    });
    if shaped {
        Ok(())
    } else {
        Err(format!(
            "{route:?} is not a route key: write it as the stats do, e.g. \
             \"GET /api/v2/users/{{userId}}/state\""
        ))
    }
}

fn clamp_ratio(r: f64) -> f64 {
    if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) }
}

/// The tenant's request budget: `requests_per_minute` with a burst of two seconds' worth
/// (at least one). `None` when the budget is unlimited (0).
pub(crate) fn rate_limiter(requests_per_minute: u32) -> Option<DefaultDirectRateLimiter> {
    let rpm = NonZeroU32::new(requests_per_minute)?;
    let burst = NonZeroU32::new((requests_per_minute / 30).max(1)).expect("at least 1");
    Some(DefaultDirectRateLimiter::direct(
        Quota::per_minute(rpm).allow_burst(burst),
    ))
}

/// What the gate decided for one API call.
enum Verdict {
    Unauthorized,
    RateLimited(Duration),
    Injected(Scripted),
    Held(HoldGate, Duration),
    Pass(Duration),
}

/// A call the gate answers itself, for the dialect to word in its own error shape.
pub(crate) enum Refusal {
    /// No valid access token.
    Unauthorized,
    /// The tenant budget is spent: come back in this many whole seconds (never 0).
    RateLimited(u64),
    /// A scripted or random failure.
    Injected {
        status: StatusCode,
        retry_after: Option<u64>,
    },
    /// The simulator shut down while the call waited.
    ShuttingDown,
}

/// The v2 dialect's gate: [`gate_with`] answering refusals as v2 errors.
pub(crate) async fn gate(State(sim): State<Simulator>, req: Request, next: Next) -> Response {
    gate_with(&sim, req, next, |refusal| match refusal {
        Refusal::Unauthorized => {
            ApiError::unauthorized("missing, unknown, revoked or expired access token")
                .into_response()
        }
        Refusal::RateLimited(secs) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "tenant request budget exceeded",
        )
        .retry_after(secs)
        .into_response(),
        Refusal::Injected {
            status,
            retry_after,
        } => {
            let mut err = ApiError::new(status, error_code(status), "injected fault");
            if let Some(secs) = retry_after {
                err = err.retry_after(secs);
            }
            err.into_response()
        }
        Refusal::ShuttingDown => shutting_down(),
    })
    .await
}

/// The middleware in front of every API route of either dialect (see the module docs
/// for the order); `refuse` answers the calls it does not let through.
pub(crate) async fn gate_with(
    sim: &Simulator,
    req: Request,
    next: Next,
    refuse: impl FnOnce(Refusal) -> Response,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| sim.route_key(req.method(), p.as_str()));
    let token = bearer_token(&req).map(str::to_owned);
    let now = sim.clock().now();

    let verdict = {
        let mut st = sim.lock();
        st.stats.api_requests += 1;
        if let Some(route) = &route {
            *st.stats.by_route.entry(route.clone()).or_default() += 1;
        }
        if !token.is_some_and(|t| st.tokens.is_valid(&t, now)) {
            st.stats.unauthorized += 1;
            Verdict::Unauthorized
        } else if let Some(wait) = sim.spend_budget() {
            st.stats.rate_limited += 1;
            Verdict::RateLimited(wait)
        } else {
            let latency = st.faults.faults.latency;
            match st.faults.next_for(route.as_deref()) {
                Some(Script::Fault(what)) => {
                    st.stats.injected_faults += 1;
                    Verdict::Injected(what)
                }
                Some(Script::Hold(gate)) => Verdict::Held(gate, latency),
                None => Verdict::Pass(latency),
            }
        }
    };

    match verdict {
        Verdict::Unauthorized => refuse(Refusal::Unauthorized),
        Verdict::RateLimited(wait) => {
            // Whole seconds, rounded up, never 0: a client honouring it must not come back
            // before the bucket has refilled.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            refuse(Refusal::RateLimited(secs.max(1)))
        }
        Verdict::Injected(Scripted::Fail {
            status,
            retry_after,
        }) => refuse(Refusal::Injected {
            status,
            retry_after,
        }),
        Verdict::Injected(Scripted::Hang) => {
            // Hold the call until the client gives up (its future is dropped with the
            // connection) or the simulator shuts down, which must not wait on us.
            sim.released().await;
            refuse(Refusal::ShuttingDown)
        }
        Verdict::Held(gate, latency) => match gate.wait(sim).await {
            Some(()) => pass(latency, req, next).await,
            None => refuse(Refusal::ShuttingDown),
        },
        Verdict::Pass(latency) => pass(latency, req, next).await,
    }
}

/// Serves a call that passed the gate, after the configured latency.
async fn pass(latency: Duration, req: Request, next: Next) -> Response {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    next.run(req).await
}

fn shutting_down() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        "simulator shutting down",
    )
    .into_response()
}

/// The access token of an `Authorization: Bearer …` header.
fn bearer_token(req: &Request) -> Option<&str> {
    let value = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A machine-readable `error` for an injected status.
fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        429 => "rate_limited",
        503 => "service_unavailable",
        500..=599 => "server_error",
        _ => "injected_fault",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::Clock;
    use rand::SeedableRng;

    #[test]
    fn budget_bursts_two_seconds_worth_then_refuses() {
        let limiter = rate_limiter(60).unwrap();
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_ok());
        let refused = limiter.check().unwrap_err();
        let wait = refused.wait_time_from(limiter.clock().now());
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
    }

    #[test]
    fn zero_requests_per_minute_is_unlimited() {
        assert!(rate_limiter(0).is_none());
        let tiny = rate_limiter(1).unwrap();
        assert!(tiny.check().is_ok());
        assert!(tiny.check().is_err());
    }

    #[test]
    fn ratios_are_clamped_and_roll_is_additive() {
        let mut st = FaultState::new(StdRng::seed_from_u64(1));
        st.set(Faults {
            error_ratio: 7.0,
            timeout_ratio: -1.0,
            latency: Duration::ZERO,
        });
        assert_eq!(st.faults.error_ratio, 1.0);
        assert_eq!(st.faults.timeout_ratio, 0.0);
        assert!((0..50).all(|_| matches!(st.roll(), Some(Scripted::Fail { .. }))));
        st.set(Faults {
            error_ratio: 0.0,
            timeout_ratio: 1.0,
            latency: Duration::ZERO,
        });
        assert!((0..50).all(|_| st.roll() == Some(Scripted::Hang)));
        st.set(Faults::default());
        assert!((0..50).all(|_| st.roll().is_none()));
    }

    fn fail(status: u16) -> Scripted {
        Scripted::Fail {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: None,
        }
    }

    /// The fault a call to `route` meets; panics on a hold.
    fn fault_for(st: &mut FaultState, route: Option<&str>) -> Option<Scripted> {
        st.next_for(route).map(|script| match script {
            Script::Fault(what) => what,
            Script::Hold(_) => panic!("a hold, not a fault"),
        })
    }

    #[test]
    fn a_call_takes_the_first_entry_for_its_route_and_leaves_the_others_queued() {
        let mut st = FaultState::new(StdRng::seed_from_u64(1));
        st.push("GET /a", 1, Script::Fault(fail(503)));
        st.push("POST /b", 2, Script::Fault(Scripted::Hang));
        st.push("GET /a", 1, Script::Fault(fail(429)));
        assert_eq!(fault_for(&mut st, Some("GET /c")), None);
        assert_eq!(
            fault_for(&mut st, Some("POST /a")),
            None,
            "the method is part of the key"
        );
        assert_eq!(fault_for(&mut st, None), None);
        assert_eq!(fault_for(&mut st, Some("POST /b")), Some(Scripted::Hang));
        assert_eq!(fault_for(&mut st, Some("GET /a")), Some(fail(503)));
        assert_eq!(fault_for(&mut st, Some("GET /a")), Some(fail(429)));
        assert_eq!(fault_for(&mut st, Some("GET /a")), None);
        let left: Vec<&str> = st.scripted.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(left, ["POST /b"]);
    }

    #[test]
    fn scripted_entries_come_before_random_faults_for_their_route_only() {
        let mut st = FaultState::new(StdRng::seed_from_u64(1));
        st.set(Faults {
            error_ratio: 1.0,
            ..Faults::default()
        });
        st.push("GET /a", 1, Script::Fault(Scripted::Hang));
        assert_eq!(fault_for(&mut st, Some("GET /b")), Some(fail(503)));
        assert_eq!(fault_for(&mut st, Some("GET /a")), Some(Scripted::Hang));
        assert_eq!(fault_for(&mut st, Some("GET /a")), Some(fail(503)));
    }

    #[test]
    fn a_hold_waits_in_line_with_the_faults_of_its_route() {
        let mut st = FaultState::new(StdRng::seed_from_u64(1));
        let (hold, gate) = Hold::new();
        st.push("GET /a", 1, Script::Fault(fail(503)));
        st.push("GET /a", 1, Script::Hold(gate));
        assert!(st.next_for(Some("GET /b")).is_none());
        assert_eq!(fault_for(&mut st, Some("GET /a")), Some(fail(503)));
        assert!(matches!(st.next_for(Some("GET /a")), Some(Script::Hold(_))));
        assert!(st.next_for(Some("GET /a")).is_none());
        assert!(
            !hold.has_arrived(),
            "taken from the queue is not arrived yet"
        );
    }

    #[test]
    fn only_method_space_template_is_a_route_key() {
        for good in [
            "GET /api/v2/users",
            "POST /api/v2/users/{userId}/state",
            "DELETE /api/v2/analytics/realtime/subscription/{subscriptionId}",
        ] {
            assert_eq!(check_route(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/api/v2/users",
            "get /api/v2/users",
            "FETCH /api/v2/users",
            "GET api/v2/users",
            "GET  /api/v2/users",
            "GET /api/v2/users?top=1",
        ] {
            let err = check_route(bad).unwrap_err();
            assert!(err.contains("is not a route key"), "{bad}: {err}");
        }
    }
}
