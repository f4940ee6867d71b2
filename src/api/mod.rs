//! The HTTP API (axum): health, metrics, agent transitions and history, bulk jobs,
//! reports.
//!
//! Every response carries an `x-request-id` (the caller's, or a fresh UUID), and every
//! log line of a request is inside a span with that id and the matched route. Errors
//! are problem+json (see [`error`]).

mod agents;
mod bulk;
pub mod error;
mod health;
mod json;
mod reports;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::engine::TransitionEngine;
use crate::store::Store;

/// The largest request body accepted; transition requests are a few hundred bytes.
const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// How long `/readyz` waits for the platform before calling it unreachable.
const READINESS_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<TransitionEngine>,
    pub store: Store,
    pub metrics: PrometheusHandle,
    /// The state sync's status, when it runs.
    pub sync: Option<Arc<crate::engine::sync::SyncStatus>>,
    pub bulk: crate::engine::bulk::BulkJobs,
    /// `compliance.exception_threshold`, for the adherence figures of reports.
    pub exception_threshold: Duration,
}

/// The complete router with its middleware.
pub fn router(state: ApiState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/v1/agents/{agent_id}/transitions",
            post(agents::create_transition),
        )
        .route("/v1/agents/{agent_id}/history", get(agents::history))
        .route("/v1/reports/compliance", get(reports::compliance))
        .merge(bulk::routes())
        .fallback(|| async {
            error::Problem::not_found("no such route; see the README for the API")
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %request.method(), route, request_id = id)
                }))
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
}
