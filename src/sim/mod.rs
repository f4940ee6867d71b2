//! The built-in NICE CXone simulator: an axum app that plays the platform (the v2 dialect
//! of docs/platform-api.md) for wfmd's tests, benchmarks and `wfmd serve --simulate`.
//!
//! It imports nothing from the rest of wfmd: every JSON body is written from the contract
//! itself, so a wrong field name in the client shows up as a failing test instead of being
//! mirrored here. Besides the API it keeps ground truth (every agent's state log), counts
//! what it was asked, and misbehaves on demand (rate limit, scripted and random faults,
//! hangs, revoked or early-expiring tokens), through the Rust [`Simulator`] handle and over
//! HTTP under `/_sim` for a standalone process.
//!
//! Layout: `tenant` generates and holds the agents, `activity` is what the agents do on
//! their own, `auth` issues and checks tokens, `faults` is the middleware in front of every
//! API call, `routes` the API handlers, `subscriptions` the real-time subscription API,
//! `aggregation` the aggregation queries, `control` the `/_sim` endpoints, and `clock` the single source of simulated time.
//! `incontact` serves the same tenant in the `incontact` dialect (the API NICE
//! publishes) next to the v2 API, so one simulator answers both.
//! State sits behind one `std::sync::Mutex` that is never held across an await; whoever
//! takes it through `Simulator::sync` first brings the agents' activity up to the clock,
//! so no background task is needed and the outcome does not depend on who looks when.

// The simulator is no tenant's work, and imports nothing of ours: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod activity;
mod aggregation;
mod auth;
mod clock;
mod control;
mod faults;
pub mod incontact;
mod metrics;
mod routes;
mod subscriptions;
mod tenant;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use chrono::{DateTime, SubsecRound, Utc};
use governor::DefaultDirectRateLimiter;
use governor::clock::Clock;
use rand::SeedableRng;
use rand::rngs::StdRng;
use secrecy::SecretString;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use aggregation::{SimAggRow, SimAggregationStats, SimPoll, SimQuery};
pub use clock::SimClock;
pub use faults::{Faults, Hold};
pub use metrics::{QUEUES_SCOPE, SCHEDULES_SCOPE, SKILLS_SCOPE, SimQueue, SimSkill};
pub use subscriptions::SimSubscription;
pub use tenant::{SimActivity, SimAgent, SimBreak, SimStateChange};

use activity::Activity;
use auth::TokenStore;
use faults::{FaultState, Script, Scripted};
use metrics::Lines;
use subscriptions::Subscriptions;
use tenant::{Tenant, default_reason, is_known_state};
use wire::ApiError;

/// How the simulated tenant looks and behaves.
#[derive(Clone)]
pub struct SimConfig {
    /// Number of generated agents (`u_001`, `u_002`, …).
    pub agents: usize,
    /// The number of the first agent's id (1: `u_001`). Simulated tenants of one process
    /// number theirs apart (`u_051`… after a first tenant's 50), so an agent id never
    /// means agents of two tenants.
    pub first_agent: usize,
    /// Seed of everything random: names, teams, skills, zones, initial states, faults,
    /// and the agents' own activity (each agent its own stream).
    pub seed: u64,
    pub client_id: String,
    pub client_secret: String,
    /// Tenant request budget over all API calls; 0 means unlimited.
    pub requests_per_minute: u32,
    /// The `expires_in` advertised with every token (and, unless
    /// [`Simulator::set_token_validity`] says otherwise, how long a token works).
    pub token_lifetime: Duration,
    /// The cluster the tenant lives on: API routes are served under `/{cluster_path}/` and
    /// the token answer names it in `resource_server_base_uri`. `None`: served at the root.
    pub cluster_path: Option<String>,
    /// Simulated seconds per wall-clock second (60.0: a real second is a simulated
    /// minute; 0.0: time moves only by [`SimClock::advance`]). Must be finite and >= 0.
    pub time_scale: f64,
    /// The simulated instant at creation; `None` is the wall clock's now. Pinning it (with
    /// a frozen or fast clock) makes two runs agree to the millisecond.
    pub start_at: Option<DateTime<Utc>>,
    /// Whether agents change state on their own (contacts, breaks, shift start and end);
    /// off, the tenant holds still and only callers change it.
    pub activity: bool,
    /// How many entries of each agent's ground-truth state log to keep, newest last;
    /// `None` keeps them all (tests compare against the whole log). A long-running
    /// simulator that nobody audits, such as `serve --simulate`, keeps only a few so its
    /// memory stays flat.
    pub state_log_limit: Option<usize>,
    /// Number of queues (`q_1`, `q_2`, …) the queue listing and queue stats serve.
    pub queues: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            agents: 50,
            first_agent: 1,
            seed: 1,
            client_id: "wfmd-sim".to_owned(),
            client_secret: "wfmd-sim-secret".to_owned(),
            requests_per_minute: 6000,
            token_lifetime: Duration::from_secs(3600),
            cluster_path: Some("c9".to_owned()),
            time_scale: 1.0,
            start_at: None,
            activity: false,
            state_log_limit: None,
            queues: 5,
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("agents", &self.agents)
            .field("seed", &self.seed)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("requests_per_minute", &self.requests_per_minute)
            .field("token_lifetime", &self.token_lifetime)
            .field("cluster_path", &self.cluster_path)
            .field("time_scale", &self.time_scale)
            .field("start_at", &self.start_at)
            .field("activity", &self.activity)
            .field("state_log_limit", &self.state_log_limit)
            .field("queues", &self.queues)
            .finish()
    }
}

/// What the simulator was asked, since start or the last [`Simulator::reset_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Calls to the token endpoint, successful or not.
    pub token_requests: u64,
    /// API calls, whatever they were answered (token and `/_sim` calls excluded).
    pub api_requests: u64,
    /// API calls answered 429 by the tenant budget (injected 429s count as faults).
    pub rate_limited: u64,
    /// API calls answered 401 (no, unknown, revoked or expired token, or wrong base).
    pub unauthorized: u64,
    /// API calls answered by `fail_next_on`, `hang_next_on` or random faults (calls held
    /// by `hold_next_on` are answered by their handler and not counted here).
    pub injected_faults: u64,
    /// API calls per route, e.g. `"GET /api/v2/users"` (without the cluster path).
    pub by_route: BTreeMap<String, u64>,
    /// Subscription polls answered 429 for coming sooner than the interval after the
    /// last accepted one (as the platform measures it: by arrival).
    pub polls_too_early: u64,
}

/// Everything mutable, behind one lock.
pub(crate) struct SimState {
    pub tenant: Tenant,
    pub activity: Activity,
    pub subscriptions: Subscriptions,
    pub tokens: TokenStore,
    pub stats: SimStats,
    pub faults: FaultState,
    /// Skills and queues with their waiting contacts, and the scopes denied.
    pub lines: Lines,
    /// Server-side validity of tokens issued from now on; `None` = the advertised lifetime.
    pub token_validity: Option<Duration>,
    /// The `incontact` dialect's switches and pending logouts.
    pub incontact: incontact::IncontactState,
    /// Aggregation queries and their switches.
    pub aggregation: aggregation::AggregationState,
}

struct Inner {
    /// The configuration with `client_secret` emptied: the secret lives in `secret`.
    config: SimConfig,
    secret: SecretString,
    cluster: Option<String>,
    clock: SimClock,
    state: Mutex<SimState>,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Cancelled at shutdown to let hanging calls go, so graceful shutdown can finish.
    release: CancellationToken,
    bound: OnceLock<SocketAddr>,
}

/// A handle on one simulated tenant; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A simulator serving on a TCP listener (see [`Simulator::start`]).
#[derive(Debug)]
pub struct RunningSim {
    pub sim: Simulator,
    /// `http://127.0.0.1:PORT`, without the cluster path: what a user configures as
    /// `cxone.base_url`.
    pub base_url: String,
    /// `{base_url}/oauth2/token`.
    pub token_url: String,
    /// The server task; it ends once the shutdown token is cancelled and calls drain.
    pub task: tokio::task::JoinHandle<()>,
}

impl Simulator {
    /// Generates the tenant (relative to the simulated instant of this call).
    ///
    /// # Panics
    /// If `config.time_scale` is negative, NaN or infinite.
    pub fn new(mut config: SimConfig) -> Self {
        let secret = SecretString::from(std::mem::take(&mut config.client_secret));
        let cluster = config
            .cluster_path
            .as_deref()
            .map(|c| c.trim_matches('/').to_owned())
            .filter(|c| !c.is_empty());
        let clock = SimClock::new(config.start_at, config.time_scale);
        let t0 = clock.now().trunc_subsecs(0);
        let mut tenant = Tenant::generate(config.agents, config.first_agent, config.seed, t0);
        let activity = Activity::new(
            config.seed,
            &mut tenant,
            t0,
            config.activity,
            config.state_log_limit,
        );
        // A different stream than the tenant's, so enabling faults does not depend on, or
        // disturb, how the tenant was drawn.
        let fault_rng = StdRng::seed_from_u64(config.seed ^ 0x5eed_fa17_5eed_fa17);
        let lines = Lines::new(
            config.seed,
            tenant::skill_pool(config.agents),
            config.queues,
            t0,
        );
        let state = SimState {
            tenant,
            activity,
            subscriptions: Subscriptions::default(),
            tokens: TokenStore::default(),
            stats: SimStats::default(),
            faults: FaultState::new(fault_rng),
            lines,
            token_validity: None,
            incontact: incontact::IncontactState::default(),
            aggregation: aggregation::AggregationState::default(),
        };
        Simulator {
            inner: Arc::new(Inner {
                limiter: faults::rate_limiter(config.requests_per_minute),
                config,
                secret,
                cluster,
                clock,
                state: Mutex::new(state),
                release: CancellationToken::new(),
                bound: OnceLock::new(),
            }),
        }
    }

    /// The whole app: `/oauth2/token`, the API under the cluster path, and `/_sim`.
    pub fn router(&self) -> Router {
        let api = routes::api_router()
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                faults::gate,
            ))
            // The `incontact` dialect of the same tenant, behind its own gate.
            .merge(incontact::api_router(self));
        let app = Router::new()
            .route("/oauth2/token", post(auth::token))
            .merge(control::control_router())
            .merge(incontact::root_router(self.cluster().is_some()));
        let app = match &self.inner.cluster {
            Some(cluster) => app
                .nest(&format!("/{cluster}"), api)
                .route("/api/{*rest}", any(wrong_base)),
            None => app.merge(api),
        };
        app.fallback(not_found).with_state(self.clone())
    }

    /// Builds a simulator and serves it on `listener` until `shutdown` is cancelled.
    pub async fn start(
        config: SimConfig,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<RunningSim> {
        let addr = listener.local_addr()?;
        let sim = Simulator::new(config);
        let _ = sim.inner.bound.set(addr);
        let app = sim.router();
        let release = sim.inner.release.clone();
        let base_url = sim.bound_origin();
        tracing::info!(%base_url, agents = sim.inner.config.agents, "CXone simulator listening");
        let task = tokio::spawn(async move {
            let signal = async move {
                shutdown.cancelled().await;
                release.cancel();
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::error!(%error, "CXone simulator stopped with an error");
            }
        });
        Ok(RunningSim {
            sim,
            token_url: format!("{base_url}/oauth2/token"),
            base_url,
            task,
        })
    }

    /// Ground truth about every agent, sorted by id, as of the clock's `now()`.
    pub fn agents(&self) -> Vec<SimAgent> {
        self.sync().0.tenant.agents.values().cloned().collect()
    }

    /// Ground truth about one agent, as of the clock's `now()`.
    pub fn agent(&self, id: &str) -> Option<SimAgent> {
        self.sync().0.tenant.agents.get(id).cloned()
    }

    /// Applies, in time order, every activity of the agents due at or before `t` (a no-op
    /// for what was applied already). Every read does this up to the clock's `now()`; call
    /// it directly to measure the work, or to look at an instant without racing the clock.
    /// Going beyond `now()` moves the agents ahead of the clock, so later changes from
    /// callers would be stamped before activity already logged: advance the clock instead.
    pub fn run_until(&self, t: DateTime<Utc>) {
        self.lock().run_until(t);
    }

    /// How many activities the agents have carried out since creation.
    pub fn activities_applied(&self) -> u64 {
        self.lock().activity.applied()
    }

    /// Every real-time subscription created so far (deleted and expired ones included),
    /// in creation order.
    pub fn subscriptions(&self) -> Vec<SimSubscription> {
        self.lock().subscriptions.list()
    }

    /// Every live subscription expires now: polls answer 404 and a client must renew.
    pub fn expire_subscriptions(&self) {
        let (mut st, now) = self.sync();
        st.subscriptions.expire_all(now);
    }

    /// Changes an agent's state as if the agent did it on the phone: any of the seven
    /// states (observed-only ones included), no 409 rules. An empty `reason` takes the
    /// contract's default. False for an unknown agent or state.
    pub fn force_state(&self, id: &str, state: &str, reason: &str) -> bool {
        if !is_known_state(state) {
            return false;
        }
        let reason = if reason.is_empty() {
            default_reason(state)
        } else {
            reason
        };
        let (mut st, now) = self.sync();
        st.change_state(id, state, reason, now).is_some()
    }

    /// Gives an agent another name, as an administrator would on the platform (names
    /// are free text there: tests give hostile ones). False for an unknown agent.
    pub fn rename_agent(&self, id: &str, name: &str) -> bool {
        match self.lock().tenant.agents.get_mut(id) {
            Some(agent) => {
                agent.name = name.to_owned();
                true
            }
            None => false,
        }
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    pub fn reset_stats(&self) {
        self.lock().stats = SimStats::default();
    }

    /// Replaces the persistent random faults (ratios are clamped to 0.0–1.0).
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults.set(faults);
    }

    /// The persistent random faults in force.
    pub fn faults(&self) -> Faults {
        self.lock().faults.faults.clone()
    }

    /// The next `count` calls to `route` (after any already scripted for it) answer
    /// `status`, with `Retry-After` when given; calls to other routes pass. `route` is
    /// a key as in [`SimStats::by_route`]: `"POST /api/v2/users/{userId}/state"`.
    ///
    /// # Panics
    /// If `route` is not shaped like a route key, or `status` is not a valid HTTP status
    /// code (100–999).
    pub fn fail_next_on(
        &self,
        route: &str,
        count: u32,
        status: u16,
        retry_after_secs: Option<u64>,
    ) {
        faults::check_route(route).unwrap_or_else(|e| panic!("fail_next_on: {e}"));
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("fail_next_on: {status} is not an HTTP status"));
        self.lock().faults.push(
            route,
            count,
            Script::Fault(Scripted::Fail {
                status,
                retry_after: retry_after_secs,
            }),
        );
    }

    /// The next `count` calls to `route` (after any already scripted for it) never
    /// answer: they hold until the client gives up or the simulator shuts down. `route`
    /// as for [`Simulator::fail_next_on`].
    ///
    /// # Panics
    /// If `route` is not shaped like a route key.
    pub fn hang_next_on(&self, route: &str, count: u32) {
        faults::check_route(route).unwrap_or_else(|e| panic!("hang_next_on: {e}"));
        self.lock()
            .faults
            .push(route, count, Script::Fault(Scripted::Hang));
    }

    /// The next call to `route` (after any already scripted for it) waits, once its token
    /// and budget are checked, until the returned [`Hold`] is released or dropped, and is
    /// then served as usual. For a test that must act while a call is under way (fill a
    /// disk, cancel a job) without guessing how long the call takes. `route` as for
    /// [`Simulator::fail_next_on`]; a held call is not an injected fault.
    ///
    /// # Panics
    /// If `route` is not shaped like a route key.
    pub fn hold_next_on(&self, route: &str) -> Hold {
        faults::check_route(route).unwrap_or_else(|e| panic!("hold_next_on: {e}"));
        let (hold, gate) = Hold::new();
        self.lock().faults.push(route, 1, Script::Hold(gate));
        hold
    }

    /// Every token issued so far answers 401 from now on.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.revoke_all();
    }

    /// Tokens issued from now on stop working after `validity` (server side), while the
    /// answer still advertises the configured lifetime. `None` restores the lifetime.
    pub fn set_token_validity(&self, validity: Option<Duration>) {
        self.lock().token_validity = validity;
    }

    /// The tenant's skills, as the skill listing serves them.
    pub fn skills(&self) -> Vec<SimSkill> {
        self.lock().lines.skills.clone()
    }

    /// The tenant's queues, as the queue listing serves them.
    pub fn queues(&self) -> Vec<SimQueue> {
        self.lock().lines.queues.clone()
    }

    /// Calls needing `scope` ([`SKILLS_SCOPE`], [`QUEUES_SCOPE`], [`SCHEDULES_SCOPE`])
    /// answer 403 naming it from now on, as for a client whose grant lacks the scope.
    pub fn deny_scope(&self, scope: &str) {
        self.lock().lines.denied_scopes.insert(scope.to_owned());
    }

    /// Undoes [`Simulator::deny_scope`].
    pub fn allow_scope(&self, scope: &str) {
        self.lock().lines.denied_scopes.remove(scope);
    }

    /// Denies exactly `scopes` (see [`Simulator::deny_scope`]).
    pub fn set_denied_scopes(&self, scopes: impl IntoIterator<Item = String>) {
        self.lock().lines.denied_scopes = scopes.into_iter().collect();
    }

    /// The simulator's clock; tests move it forward instead of sleeping.
    pub fn clock(&self) -> &SimClock {
        &self.inner.clock
    }

    /// Takes the lock and reads the clock under it, so that changes land in the log in the
    /// order of their stamps even when calls race.
    pub(crate) fn sync(&self) -> (MutexGuard<'_, SimState>, DateTime<Utc>) {
        let mut st = self.lock();
        let now = self.clock().now();
        st.run_until(now);
        (st, now)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain data behind, still worth serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    pub(crate) fn client_secret(&self) -> &SecretString {
        &self.inner.secret
    }

    pub(crate) fn cluster(&self) -> Option<&str> {
        self.inner.cluster.as_deref()
    }

    /// `http://ADDR` of the bound listener (loopback when bound to every interface).
    pub(crate) fn bound_origin(&self) -> String {
        match self.inner.bound.get() {
            Some(addr) => {
                let ip = match addr.ip() {
                    IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ip => ip,
                };
                format!("http://{}", SocketAddr::new(ip, addr.port()))
            }
            None => "http://localhost".to_owned(),
        }
    }

    /// The stats key of a matched route: method and path without the cluster prefix.
    pub(crate) fn route_key(&self, method: &Method, matched: &str) -> String {
        let path = self
            .cluster()
            .and_then(|c| matched.strip_prefix('/')?.strip_prefix(c))
            .unwrap_or(matched);
        format!("{method} {path}")
    }

    /// Spends one unit of the tenant budget; the wait until the next one when exhausted.
    pub(crate) fn spend_budget(&self) -> Option<Duration> {
        let limiter = self.inner.limiter.as_ref()?;
        limiter
            .check()
            .err()
            .map(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// Resolves when the simulator shuts down.
    pub(crate) async fn released(&self) {
        self.inner.release.cancelled().await;
    }

    /// Scripted faults not consumed yet.
    pub(crate) fn scripted_pending(&self) -> usize {
        self.lock().faults.scripted.len()
    }
}

impl SimState {
    fn run_until(&mut self, t: DateTime<Utc>) {
        // The waiting lines step at fixed instants, each seeing the agents as they are
        // at that instant, so their figures do not depend on when anyone looked.
        while let Some(at) = self.lines.due(t) {
            self.activity.run_until(at, &mut self.tenant);
            self.lines.step(at, &self.tenant);
        }
        self.activity.run_until(t, &mut self.tenant);
    }

    /// Changes an agent's state from outside (the API or [`Simulator::force_state`]);
    /// the changed agent, or `None` when unknown.
    pub fn change_state(
        &mut self,
        id: &str,
        state: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Option<&SimAgent> {
        if !self
            .activity
            .change(&mut self.tenant, id, state, reason, at)
        {
            return None;
        }
        self.tenant.agents.get(id)
    }
}

/// The API paths at the root while the tenant lives on a cluster: the platform answers
/// 401 there even with a valid token, which is how a client learns it ignored
/// `resource_server_base_uri`.
async fn wrong_base(axum::extract::State(sim): axum::extract::State<Simulator>) -> ApiError {
    {
        let mut st = sim.lock();
        st.stats.api_requests += 1;
        st.stats.unauthorized += 1;
    }
    let cluster = sim.cluster().unwrap_or_default();
    ApiError::unauthorized(format!(
        "this tenant is served under /{cluster}/: use resource_server_base_uri"
    ))
}

async fn not_found() -> impl IntoResponse {
    ApiError::not_found("no such endpoint")
}
