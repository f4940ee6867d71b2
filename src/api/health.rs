//! Liveness, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::cxone::{Lane, in_lane};

use super::{ApiState, READINESS_TIMEOUT, Routes};

pub fn routes() -> Routes {
    vec![
        utoipa_axum::routes!(healthz),
        utoipa_axum::routes!(readyz),
        utoipa_axum::routes!(metrics),
    ]
}

/// The process is up and serving.
///
/// Open (no token) like `/readyz` and `/metrics`: orchestrators' probes and metric
/// scrapers carry no bearer tokens, and none of the three shows agent data.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "`{\"status\":\"ok\"}`", body = Object))
)]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// The database answers and the platform accepts our credentials.
///
/// The body says which of the two failed, how the state sync is doing, and each metric
/// family's health (`metrics.skills`, `metrics.queues`: `status` pending, ok, failing
/// or unavailable, with the `reason`, and when it last answered).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready: database and platform work", body = Object),
        (status = 503, description = "Not ready; `database` or `platform` says why", body = Object),
    )
)]
pub async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    let database = match state.store.ping().await {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("unavailable: {e}"),
    };
    let platform = match tokio::time::timeout(
        READINESS_TIMEOUT,
        in_lane(
            Lane::Interactive,
            None,
            state.engine.platform().check_access(),
        ),
    )
    .await
    {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("unavailable: {e}"),
        Err(_) => "unavailable: no answer in time".to_owned(),
    };
    let ready = database == "ok" && platform == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": database,
        "platform": platform,
    });
    if let Some(sync) = &state.sync {
        // A stale sync does not make wfmd unready: changes still work, only the
        // recorded view of what agents did themselves lags.
        let (last_poll, error) = sync.snapshot();
        body["sync"] = json!({
            "last_poll": last_poll.map(crate::time::rfc3339),
            "stale": error.is_some() || last_poll.is_none(),
            "error": error,
        });
    }
    // Like the sync, a metric family that fails or is refused does not make wfmd
    // unready: only the wallboard's tiles of that family are missing.
    let board = state.board.borrow().clone();
    let family = |health: &crate::engine::metrics::FamilyHealth,
                  polled_at: Option<chrono::DateTime<chrono::Utc>>| {
        let mut value = json!(health);
        value["polled_at"] = json!(polled_at.map(crate::time::rfc3339));
        value
    };
    body["metrics"] = json!({
        "skills": family(&board.skills_health, board.skills_polled_at),
        "queues": family(&board.queues_health, board.queues_polled_at),
    });
    (status, Json(body))
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
