//! HTTP control endpoints under `/_sim`, so a standalone `wfmd sim` process can be steered
//! and inspected from outside (scripts, other test processes).
//!
//! They mirror the Rust handle: ground truth, stats, faults, subscriptions. They need no
//! token and are not counted as API calls, so steering a run does not disturb what it
//! measures.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::Simulator;
use super::faults::{Faults, check_route};
use super::wire::ApiError;

pub(crate) fn control_router() -> Router<Simulator> {
    Router::new()
        .route("/_sim/agents", get(agents))
        .route("/_sim/stats", get(stats))
        .route("/_sim/faults", post(faults))
        .route("/_sim/reset-stats", post(reset_stats))
        .route("/_sim/subscriptions", get(subscriptions))
        .route("/_sim/expire-subscriptions", post(expire_subscriptions))
}

async fn subscriptions(State(sim): State<Simulator>) -> Response {
    axum::Json(sim.subscriptions()).into_response()
}

async fn expire_subscriptions(State(sim): State<Simulator>) -> StatusCode {
    sim.expire_subscriptions();
    StatusCode::NO_CONTENT
}

async fn agents(State(sim): State<Simulator>) -> Response {
    axum::Json(sim.agents()).into_response()
}

async fn stats(State(sim): State<Simulator>) -> Response {
    axum::Json(sim.stats()).into_response()
}

async fn reset_stats(State(sim): State<Simulator>) -> StatusCode {
    sim.reset_stats();
    StatusCode::NO_CONTENT
}

/// Body of `POST /_sim/faults`; every field is optional and absent ones keep their value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsUpdate {
    error_ratio: Option<f64>,
    timeout_ratio: Option<f64>,
    latency_ms: Option<u64>,
    fail_next: Option<FailNext>,
    hang_next: Option<HangNext>,
    #[serde(default)]
    revoke_tokens: bool,
    /// Scopes to deny (403) from now on, replacing those denied before; `[]` allows all.
    deny_scopes: Option<Vec<String>>,
}

/// The next `count` calls to `route` (a stats key, `"GET /api/v2/users"`) fail.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailNext {
    route: String,
    count: u32,
    status: u16,
    retry_after: Option<u64>,
}

/// The next `count` calls to `route` hang.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HangNext {
    route: String,
    count: u32,
}

async fn faults(State(sim): State<Simulator>, body: Bytes) -> Result<Response, ApiError> {
    let update: FaultsUpdate = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid faults body: {e}")))?;
    for (name, ratio) in [
        ("error_ratio", update.error_ratio),
        ("timeout_ratio", update.timeout_ratio),
    ] {
        if ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            return Err(ApiError::bad_request(format!(
                "{name} must be between 0 and 1"
            )));
        }
    }
    if let Some(f) = &update.fail_next
        && !(400..=599).contains(&f.status)
    {
        return Err(ApiError::bad_request(
            "fail_next.status must be an error status (400-599)",
        ));
    }
    // Checked here so a bad route is a 400, not the panic of the Rust handle.
    let routes = [
        (
            "fail_next.route",
            update.fail_next.as_ref().map(|f| &f.route),
        ),
        (
            "hang_next.route",
            update.hang_next.as_ref().map(|h| &h.route),
        ),
    ];
    for (name, route) in routes {
        if let Some(route) = route {
            check_route(route).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))?;
        }
    }

    let current = sim.faults();
    sim.set_faults(Faults {
        error_ratio: update.error_ratio.unwrap_or(current.error_ratio),
        timeout_ratio: update.timeout_ratio.unwrap_or(current.timeout_ratio),
        latency: update
            .latency_ms
            .map_or(current.latency, Duration::from_millis),
    });
    if let Some(f) = update.fail_next {
        sim.fail_next_on(&f.route, f.count, f.status, f.retry_after);
    }
    if let Some(h) = update.hang_next {
        sim.hang_next_on(&h.route, h.count);
    }
    if update.revoke_tokens {
        sim.revoke_tokens();
    }
    if let Some(scopes) = update.deny_scopes {
        sim.set_denied_scopes(scopes);
    }

    let now = sim.faults();
    Ok(axum::Json(json!({
        "error_ratio": now.error_ratio,
        "timeout_ratio": now.timeout_ratio,
        "latency_ms": u64::try_from(now.latency.as_millis()).unwrap_or(u64::MAX),
        "scripted_pending": sim.scripted_pending(),
    }))
    .into_response())
}
