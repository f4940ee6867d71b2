//! The HTTP API (axum): health, metrics, agent transitions and history.
//!
//! Every response carries an `x-request-id` (the caller's, or a fresh UUID), and every
//! log line of a request is inside a span with that id and the matched route (see
//! [`layers`]). Errors are problem+json (see [`error`]), whoever produced them: input
//! goes through [`extract`] and [`json`], whose errors name the parameter or field.

mod agents;
pub mod error;
pub mod extract;
mod health;
mod json;
mod layers;
mod reports;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;

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
}

/// The complete router with its middleware.
pub fn router(state: ApiState) -> Router {
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/v1/agents/{agent_id}/transitions",
            post(agents::create_transition),
        )
        .route("/v1/agents/{agent_id}/history", get(agents::history))
        .route("/v1/reports/compliance", get(reports::compliance))
        .fallback(|| async {
            error::Problem::new(
                axum::http::StatusCode::NOT_FOUND,
                "no-such-route",
                "No such route",
                "no route has this path; see the README for the API",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(state);
    layers::around(router)
}
