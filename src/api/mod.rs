//! The HTTP API (axum): health, metrics, agent transitions and history, bulk jobs,
//! reports, audit, schedule imports, the live feed, the console's pages, browser sign-in
//! (`/v1/session`), and the tenants and instances served (`/v1/tenants`, `/v1/cluster`).
//!
//! Every route is a handler with a `#[utoipa::path]` attribute, registered through
//! `utoipa_axum::routes!` by its module's `routes()`: that one step serves it, describes
//! it in `/openapi.json` and, through the attribute's `security`, decides who may call
//! it (see [`auth`]). [`router`] adds the middleware of `layers`: request ids, the
//! request span, problem+json for every error. Errors are problem+json (see [`error`]).
//!
//! # Adding a route
//! 1. Write the handler with `#[utoipa::path(METHOD, path = "/v1/...", tag = "...",
//!    security(("bearer" = [VIEWER | SUPERVISOR | ADMIN])), params(...),
//!    request_body = ..., responses(...))]` (an error answer needs only its status and
//!    description: [`openapi::complete`] gives it the problem+json body, and adds the
//!    errors every route shares); take [`auth::Caller`] when the handler changes
//!    something (its name is the actor), [`tenancy::TenantState`] for the tenant's
//!    services (one set of routes serves every tenant, so there is no axum `State`),
//!    and [`extract::PathParams`], [`extract::QueryParams`], `json::JsonBody` for input.
//! 2. List it in the module's `routes()` with `routes!(handler)` (handlers sharing a
//!    path go in one `routes!`), and the module's `routes()` in [`router`].
//! 3. Add its row to the role table of `tests/api/auth.rs`.
//!
//! A route without `security` stops [`router`] with a message naming it; a route
//! missing from the role table fails the OpenAPI agreement test.

mod adherence;
mod agents;
mod analytics;
mod audit;
pub mod auth;
mod bulk;
pub mod cluster;
pub mod deferrals;
pub mod error;
mod exceptions;
pub mod exports;
pub mod extract;
pub mod forward;
mod health;
mod hosts;
mod jobs;
mod json;
mod layers;
mod live;
pub mod openapi;
mod pages;
mod reports;
mod roles;
mod rta;
mod schedules;
mod schemas;
mod series;
pub mod serve;
mod sessions;
mod sign_in;
mod spool;
pub mod tenancy;
mod validate;

pub use hosts::AllowedHosts;
pub use layers::Limits;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::engine::TransitionEngine;
use crate::store::Store;

/// The largest request body accepted; transition requests are a few hundred bytes.
const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// How long `/readyz` waits for the platform before calling it unreachable.
const READINESS_TIMEOUT: Duration = Duration::from_secs(5);

/// A client that takes none of what wfmd sends for this long is disconnected.
pub const STALLED_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Has the kernel drop a connection whose sent data stays unacknowledged (a client
/// that stopped reading, or vanished) for `timeout` (`TCP_USER_TIMEOUT`). A feed client
/// that stops reading is otherwise never noticed: the server stops polling the stream
/// while the socket is full, so nothing in wfmd runs for it. Idle connections, which
/// have nothing unacknowledged, are not affected. Linux only; elsewhere a no-op.
pub fn disconnect_when_stalled(connection: &tokio::net::TcpStream, timeout: Duration) {
    #[cfg(target_os = "linux")]
    if let Err(error) = socket2::SockRef::from(connection).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT on a connection");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (connection, timeout);
}

/// What the handlers of one tenant share (see [`tenancy::TenantState`]).
#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<TransitionEngine>,
    pub store: Store,
    pub metrics: PrometheusHandle,
    /// The state sync's status, when it runs.
    pub sync: Option<Arc<crate::engine::sync::SyncStatus>>,
    /// `sync.interval_ms`: how often the sync polls.
    pub sync_interval: Duration,
    pub bulk: crate::engine::bulk::BulkJobs,
    /// The adherence rules in force, for the adherence figures of reports.
    pub judging: crate::engine::compliance::JudgingHandle,
    /// The tenant's deferred changes (`when_busy = "defer"`).
    pub deferred: crate::engine::deferred::DeferredChanges,
    /// The bound on each caller's deferred changes (`deferred.max_waiting_per_caller`).
    pub deferrals: deferrals::DeferralLimit,
    /// The live feed: snapshot, events, tickets.
    pub live: crate::live::Live,
    /// The newest skill and queue figures and each family's health.
    pub board: crate::engine::metrics::BoardReceiver,
    /// Analytics jobs.
    pub analytics: crate::engine::analytics::AnalyticsJobs,
    /// Downloads in progress per caller (see [`exports`]).
    pub exports: exports::Exports,
    /// With `[ha]`: how a follower hands the tenant's changes to its leader.
    pub forwarding: Option<forward::Forwarding>,
}

/// A module's routes: only `routes!(...)` entries, so nothing is served undescribed.
/// Their handlers take the tenant's state as [`tenancy::TenantState`].
pub type Routes = Vec<UtoipaMethodRouter>;

/// `route` (a `routes!(...)` entry) taking bodies of up to `bytes` instead of
/// [`BODY_LIMIT_BYTES`], its documented 413 saying so.
fn with_body_limit(route: UtoipaMethodRouter, bytes: usize) -> UtoipaMethodRouter {
    let (schemas, mut paths, router) = route;
    openapi::document_body_limit(&mut paths, bytes);
    for item in paths.paths.values_mut() {
        for (_, operation) in roles::operations_mut(item) {
            operation
                .extensions
                .get_or_insert_default()
                .insert(BODY_LIMIT_MARK.to_owned(), bytes.into());
        }
    }
    (schemas, paths, router.layer(DefaultBodyLimit::max(bytes)))
}

/// What [`with_body_limit`] marks a route's operations with, for [`described_routes`]
/// to read into [`BodyLimits`] and take off again: it is never served.
const BODY_LIMIT_MARK: &str = "x-wfmd-body-limit";

/// Each route's body limit, by method and route template: what a follower holds a
/// request to before handing it on ([`forward`]), as the route itself would.
#[derive(Debug, Default)]
pub struct BodyLimits(std::collections::HashMap<(axum::http::Method, String), usize>);

impl BodyLimits {
    /// The most `method` on the route template `route` takes.
    pub fn of(&self, method: &axum::http::Method, route: &str) -> usize {
        self.0
            .get(&(method.clone(), route.to_owned()))
            .copied()
            .unwrap_or(BODY_LIMIT_BYTES)
    }

    /// The limits [`with_body_limit`] marked in `spec`, the marks taken off.
    fn take_from(spec: &mut utoipa::openapi::OpenApi) -> BodyLimits {
        let mut limits = BodyLimits::default();
        for (path, item) in spec.paths.paths.iter_mut() {
            for (method, operation) in roles::operations_mut(item) {
                let Some(extensions) = &mut operation.extensions else {
                    continue;
                };
                if let Some(bytes) = extensions.remove(BODY_LIMIT_MARK) {
                    let bytes = bytes.as_u64().expect("a body limit is a number") as usize;
                    limits.0.insert((method, path.clone()), bytes);
                }
                if extensions.is_empty() {
                    operation.extensions = None;
                }
            }
        }
        limits
    }
}

/// Runs `change` on a task of its own and waits for its end: a request cut off by
/// `server.request_timeout`, or a client that leaves, must not cut a change off between
/// its first write (or the platform call) and its record.
async fn to_the_end<T: Send + 'static>(
    change: impl Future<Output = T> + Send + 'static,
) -> Result<T, error::Problem> {
    crate::tasks::spawn(change.in_current_span())
        .await
        .map_err(|e| error::Problem::internal(&e))
}

/// The routes, their OpenAPI document and their body limits, before middleware.
fn described_routes() -> (Router, utoipa::openapi::OpenApi, BodyLimits) {
    let mut api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi());
    for route in [
        health::routes(),
        openapi::routes(),
        agents::routes(),
        adherence::routes(),
        rta::routes(),
        exceptions::routes(),
        reports::routes(),
        audit::routes(),
        bulk::routes(),
        live::routes(),
        pages::routes(),
        series::routes(),
        analytics::routes(),
        schedules::routes(),
        cluster::routes(),
        sign_in::routes(),
    ]
    .into_iter()
    .flatten()
    {
        api = api.routes(route);
    }
    let (router, mut spec) = api.split_for_parts();
    let body_limits = BodyLimits::take_from(&mut spec);
    openapi::complete(&mut spec);
    (router, spec, body_limits)
}

/// The OpenAPI document of the API, as `/openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    described_routes().1
}

/// The complete router with its middleware over every tenant's routes (see
/// [`tenancy`]), and the [`tenancy::Routing`] that changes which tenants it serves;
/// `credentials` are the configured bearer tokens (none: every caller is the local
/// admin) and the browser sessions opened with them,
/// `limits` the per-request ones of `[server]`, `instance` this instance (what
/// `GET /v1/cluster` calls it). The routes and their middleware are built here once,
/// for every tenant and every set of tenants a reload brings.
///
/// # Panics
/// When a route declares no access (or a wrong one) in its `#[utoipa::path]`: routes are
/// fixed at compile time, so every test that starts the API finds it. And when
/// `tenants` is empty: a daemon serves at least one.
pub fn router(
    tenants: &[tenancy::ServedTenant],
    credentials: Arc<auth::Credentials>,
    limits: &Limits,
    instance: cluster::ThisInstance,
) -> (Router, tenancy::Routing) {
    let (routes, spec, body_limits) = described_routes();
    let access = Arc::new(auth::AccessTable::from_spec(&spec).unwrap_or_else(|e| panic!("{e}")));
    let spec_json = serde_json::to_vec(&openapi::served(&spec, credentials.is_open()))
        .expect("the OpenAPI document serializes");
    let tickets = live::TicketGate {
        tokens_configured: !credentials.is_open(),
    };
    let gate = Arc::new(auth::Gate {
        credentials: credentials.clone(),
        access,
    });
    let routes = routes
        .fallback(|| async { error::no_such_route() })
        // Inside the bearer check, so a follower lets the caller in before handing a
        // tenant's request to the leader.
        .layer(axum::middleware::from_fn(forward::to_leader))
        .layer(axum::middleware::from_fn_with_state(gate, auth::authorize))
        // Outside the bearer check, so a feed ticket is redeemed before it runs.
        .layer(axum::middleware::from_fn_with_state(
            tickets,
            live::ticket_gate,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(Extension(openapi::SpecJson(Arc::new(spec_json.into()))))
        .layer(Extension(instance))
        .layer(Extension(Arc::new(body_limits)))
        // What a follower signs the requests it hands on with.
        .layer(Extension(limits.cluster.clone()))
        .layer(Extension(limits.metrics_token.clone()))
        .layer(Extension(pages::SignInNeeded(!credentials.is_open())))
        .layer(Extension(credentials))
        .layer(Extension(limits.boards.clone()))
        // Outside everything, the ticket's redemption included; here rather than in
        // front of the dispatcher, so a tenant's `/v1/tenants/{tenant}/ws` is judged
        // as the `/v1/ws` it is.
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(limits.hosts.clone()),
            hosts::same_origin,
        ));
    let routing = tenancy::Routing::new(routes, tenants);
    let router = Router::new()
        .fallback(tenancy::dispatch)
        .with_state(routing.clone());
    (layers::around(router, limits), routing)
}

#[cfg(test)]
mod body_limit_tests {
    use axum::http::Method;

    use super::*;

    #[test]
    fn each_routes_body_limit_is_read_from_its_declaration_and_never_served() {
        let (_, spec, limits) = described_routes();
        assert_eq!(
            limits.of(&Method::POST, "/v1/bulk-transitions"),
            bulk::BODY_LIMIT_BYTES
        );
        assert_eq!(
            limits.of(&Method::POST, "/v1/agents/{agent_id}/transitions"),
            BODY_LIMIT_BYTES
        );
        let served = serde_json::to_string(&spec).unwrap();
        assert!(!served.contains(BODY_LIMIT_MARK), "{served}");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_client_that_stops_reading_is_disconnected_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Connected, and never read from.
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        disconnect_when_stalled(&server, Duration::from_secs(1));
        let chunk = vec![b'x'; 64 * 1024];
        let writing = async {
            loop {
                if let Err(error) = server.write_all(&chunk).await {
                    return error;
                }
            }
        };
        let error = tokio::time::timeout(Duration::from_secs(60), writing)
            .await
            .expect("the kernel drops the stalled connection");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
    }
}
