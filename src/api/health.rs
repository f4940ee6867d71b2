//! Liveness, readiness and Prometheus metrics, and the tenants list with each one's
//! readiness.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::cxone::{Lane, in_lane};
use crate::engine::transition::ADOPT_CLOCK_SKEW;
use crate::telemetry::names::{DATABASE_CONNECTIONS, DATABASE_SIZE_BYTES, TENANT_LEADER};

use super::auth::{Caller, MetricsToken};
use super::roles::VIEWER;
use super::tenancy::{Directory, ServedTenant, TenantState};
use super::{ApiState, READINESS_TIMEOUT, Routes};

pub fn routes() -> Routes {
    vec![
        utoipa_axum::routes!(healthz),
        utoipa_axum::routes!(readyz),
        utoipa_axum::routes!(metrics),
        utoipa_axum::routes!(list_tenants),
    ]
}

/// The process is up and serving.
///
/// Open (no token) like `/readyz` and, unless `server.metrics_token` is set,
/// `/metrics`: orchestrators' probes and metric scrapers carry no API tokens, and none
/// of the three shows agent data.
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

/// The database takes writes and the platform accepts our credentials.
///
/// Ready only when every tenant is. A caller without a token (where tokens are
/// configured) learns that alone: `{"status"}`. A token's holder sees the details of
/// the tenants it holds: which of the two checks failed and its error text (which may
/// name hosts or database paths; it goes to the log too), how the state sync is doing,
/// and each metric family's health (`metrics.skills`, `metrics.queues`: `status`
/// pending, ok, failing or unavailable, with the `reason`, and when it last answered).
/// With one tenant the body is that tenant's; with several `{"status", "tenants": {id:
/// that tenant's body}}`, for the tenants held. With `[ha]`, `leads` says whether this
/// instance leads the tenant; a follower's readiness is its database's (`platform` is
/// then `leader's`, and no sync is shown: the leader runs both). Without tokens every
/// caller is the local admin, and sees everything.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready: the database takes writes and the platform works", body = Object),
        (status = 503, description = "Not ready; to a token's holder, `database` or `platform` says which, with the error, for the tenants it holds", body = Object),
    )
)]
pub async fn readyz(
    Extension(directory): Extension<super::tenancy::Directory>,
    caller: Option<Extension<Caller>>,
) -> impl IntoResponse {
    let holds = |tenant: &ServedTenant| caller.as_ref().is_some_and(|c| c.holds(&tenant.id));
    // Each tenant on its own: one that is not ready is named, with why, to its holders.
    let checks = directory.0.iter().map(|tenant| async move {
        let shown = holds(tenant);
        let (ready, body) = tenant_readiness(tenant, shown).await;
        (tenant, ready, shown.then_some(body))
    });
    let checked = futures::future::join_all(checks).await;
    let ready = checked.iter().all(|(_, ready, _)| *ready);
    let status = if ready { "ready" } else { "unavailable" };
    let body = match checked.as_slice() {
        _ if caller.is_none() => json!({"status": status}),
        [(_, _, Some(body))] => body.clone(),
        [_] => json!({"status": status}),
        several => {
            let tenants: serde_json::Map<_, _> = several
                .iter()
                .filter_map(|(tenant, _, body)| Some((tenant.id.to_string(), body.clone()?)))
                .collect();
            json!({"status": status, "tenants": tenants})
        }
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Whether the tenant's database takes writes and its platform works, and the first
/// failure.
pub async fn readiness(tenant: &ServedTenant) -> Result<(), String> {
    let (database, platform) = checks(tenant).await;
    database.and(platform)
}

/// The tenant's database and platform checks, in the tenant's scope: they are its work
/// (a failed write counts in its metrics; see [`crate::tasks`]).
async fn checks(tenant: &ServedTenant) -> (Result<(), String>, Result<(), String>) {
    let state = &tenant.state;
    crate::tasks::in_tenant(&tenant.id, async {
        // A follower calls nothing of the tenant's platform, nor runs its sync: the
        // leader does, and answers for them ([ha]).
        let platform = async {
            match state.store.role() {
                crate::store::InstanceRole::Follower => Ok(()),
                _ => platform_readiness(state).await,
            }
        };
        futures::join!(database_readiness(state), platform)
    })
    .await
}

async fn database_readiness(state: &ApiState) -> Result<(), String> {
    // Writable, not only readable: a full disk leaves reads working.
    match tokio::time::timeout(READINESS_TIMEOUT, state.store.check_writable()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the database takes no writes: {e}")),
        Err(_) => Err("the database took no write in time".to_owned()),
    }
}

/// One tenant's readiness and `/readyz` body: error texts only when `detailed`.
async fn tenant_readiness(tenant: &ServedTenant, detailed: bool) -> (bool, serde_json::Value) {
    let state = &tenant.state;
    let (database, platform) = checks(tenant).await;
    for (check, result) in [("database", &database), ("platform", &platform)] {
        if let Err(error) = result {
            tracing::warn!(check, %error, "not ready");
        }
    }
    let show = |result: &Result<(), String>| match result {
        Ok(()) => "ok".to_owned(),
        Err(error) if detailed => format!("unavailable: {error}"),
        Err(_) => "unavailable".to_owned(),
    };
    let ready = database.is_ok() && platform.is_ok();
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": show(&database),
        "platform": show(&platform),
    });
    let role = state.store.role();
    if role != crate::store::InstanceRole::Sole {
        body["leads"] = json!(matches!(role, crate::store::InstanceRole::Leader { .. }));
    }
    if role == crate::store::InstanceRole::Follower {
        // What the platform and the sync are, the tenant's leader says.
        body["platform"] = json!("leader's");
    } else if let Some(sync) = &state.sync {
        // A stale sync does not make wfmd unready: changes still work, only the
        // recorded view of what agents did themselves lags.
        let (last_poll, error) = sync.snapshot();
        body["sync"] = json!({
            "last_poll": last_poll.map(crate::time::rfc3339),
            "stale": error.is_some() || last_poll.is_none(),
            "error": if detailed { error } else { error.map(|_| "unavailable".to_owned()) },
        });
    }
    // Like the sync, a metric family that fails or is refused does not make wfmd
    // unready: only the wallboard's tiles of that family are missing. A follower's
    // board is the leader's, read only as often as somebody looks while nobody watches.
    if role == crate::store::InstanceRole::Follower {
        state.live.catch_up_board().await;
    }
    let board = state.board.borrow().clone();
    let family = |health: &crate::engine::metrics::FamilyHealth,
                  polled_at: Option<chrono::DateTime<chrono::Utc>>| {
        let mut value = json!(health);
        if !detailed && value.get("reason").is_some() {
            value["reason"] = json!("unavailable");
        }
        value["polled_at"] = json!(polled_at.map(crate::time::rfc3339));
        value
    };
    body["metrics"] = json!({
        "skills": family(&board.skills_health, board.skills_polled_at),
        "queues": family(&board.queues_health, board.queues_polled_at),
    });
    (ready, body)
}

/// The platform as wfmd last saw it, at no cost in calls while things work: not paused
/// by the 401 circuit, state sync's polls current (once one succeeded, none older than
/// two intervals; a sync that never succeeded and failed is not ready), and a token (the
/// cached one; fetched only when there is none).
async fn platform_readiness(state: &ApiState) -> Result<(), String> {
    let platform = state.engine.platform();
    platform.paused().map_err(|e| e.to_string())?;
    if let Some(sync) = &state.sync {
        let (last_sent, error) = sync.sent_snapshot();
        let stale_after = chrono::TimeDelta::from_std(state.sync_interval * 2)
            .unwrap_or(chrono::TimeDelta::MAX)
            .checked_add(&ADOPT_CLOCK_SKEW)
            .unwrap_or(chrono::TimeDelta::MAX);
        match (last_sent, error) {
            (None, Some(error)) => {
                return Err(format!("state sync has not polled successfully: {error}"));
            }
            (Some(at), error) if chrono::Utc::now() - at > stale_after => {
                let since = crate::time::rfc3339(at);
                return Err(match error {
                    Some(error) => format!("state sync has not polled since {since}: {error}"),
                    None => format!("state sync has not polled since {since}"),
                });
            }
            _ => {}
        }
    }
    match tokio::time::timeout(
        READINESS_TIMEOUT,
        in_lane(Lane::Interactive, None, platform.check_access()),
    )
    .await
    {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("no answer in time".to_owned()),
    }
}

/// Prometheus metrics (text format 0.0.4).
///
/// Open, unless `server.metrics_token` is set: then only for
/// `Authorization: Bearer <server.metrics_token>` (the API's tokens do not open it).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "`server.metrics_token` is set, and the request does not present it"),
    )
)]
pub async fn metrics(
    TenantState(state): TenantState,
    Extension(directory): Extension<super::tenancy::Directory>,
    Extension(token): Extension<Option<MetricsToken>>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = token
        && let Err(refused) = token.check(&headers)
    {
        return refused;
    }
    // Each tenant's database in the tenant's scope, which labels its series: its size
    // measured at the scrape when due (see `sizes_due`), kept from the last
    // measurement otherwise.
    let due = sizes_due(
        directory
            .0
            .iter()
            .map(|tenant| tenant.state.store.size_measured_at()),
        std::time::Instant::now(),
    );
    let measures = directory.0.iter().zip(due).map(|(tenant, due)| {
        crate::tasks::in_tenant(&tenant.id, async move {
            if due && let Ok(bytes) = tenant.state.store.size_bytes().await {
                metrics::gauge!(DATABASE_SIZE_BYTES).set(bytes as f64);
            }
            // A sole instance (SQLite, or no [ha]) leads its tenants without a lease:
            // said here, so "no leader for a tenant" reads alike on every backend. One
            // among several says it from its leadership (`cluster::leadership`).
            if tenant.state.store.role() == crate::store::InstanceRole::Sole {
                metrics::gauge!(TENANT_LEADER).set(1.0);
            }
        })
    });
    futures::future::join_all(measures).await;
    // The instance's, outside any tenant's scope: one series per state, unlabelled by
    // tenant.
    let connections =
        crate::store::connections_of(directory.0.iter().map(|tenant| &tenant.state.store));
    metrics::gauge!(DATABASE_CONNECTIONS, "state" => "in_use").set(connections.in_use);
    metrics::gauge!(DATABASE_CONNECTIONS, "state" => "idle").set(connections.idle);
    metrics::gauge!(DATABASE_CONNECTIONS, "state" => "waiting").set(connections.waiting);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// How long a tenant's measured database size stands before a scrape measures it again.
const SIZE_STANDS_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// The most tenants one scrape measures the database size of.
const SIZES_PER_SCRAPE: usize = 25;

/// Which of the tenants, measured last at `measured` (in the directory's order), a
/// scrape at `now` measures the database size of: those never measured, then those
/// measured longest ago, of those not measured within [`SIZE_STANDS_FOR`], at most
/// [`SIZES_PER_SCRAPE`]. A measurement on PostgreSQL asks the file size of every table
/// and index of the tenant's schema: on an instance of a thousand tenants (one that
/// had just taken 332 over), measuring every one took a scrape 29 s, where Prometheus
/// waits 10 s by default. With a scrape every 15 s, 25 a scrape measure 500 tenants in
/// five minutes, a thousand in ten.
fn sizes_due(
    measured: impl Iterator<Item = Option<std::time::Instant>>,
    now: std::time::Instant,
) -> Vec<bool> {
    let measured: Vec<_> = measured.collect();
    let mut stale: Vec<usize> = (0..measured.len())
        .filter(|&n| measured[n].is_none_or(|at| now.duration_since(at) >= SIZE_STANDS_FOR))
        .collect();
    // `None` sorts first: never measured before measured long ago.
    stale.sort_by_key(|&n| measured[n]);
    let mut due = vec![false; measured.len()];
    for n in stale.into_iter().take(SIZES_PER_SCRAPE) {
        due[n] = true;
    }
    due
}

/// A tenant as `GET /v1/tenants` shows it.
#[derive(Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    /// The platform dialect: `v2` or `incontact`.
    pub dialect: &'static str,
    /// Whether the tenant is ready (as `/readyz` judges it).
    pub ready: bool,
    /// Why not, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The tenants the caller may see, in configuration order, and whether each is ready.
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "operations",
    security(("bearer" = [VIEWER])),
    responses((status = 200, description = "The tenants the caller's token holds", body = [TenantView]))
)]
pub async fn list_tenants(
    Extension(directory): Extension<Directory>,
    caller: Caller,
) -> Json<Vec<TenantView>> {
    let visible = directory.0.iter().filter(|t| caller.holds(&t.id));
    let checks = visible.map(|tenant| async move {
        let readiness = readiness(tenant).await;
        TenantView {
            id: tenant.id.to_string(),
            name: tenant.name.clone(),
            dialect: tenant.dialect,
            ready: readiness.is_ok(),
            reason: readiness.err(),
        }
    });
    Json(futures::future::join_all(checks).await)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{SIZE_STANDS_FOR, SIZES_PER_SCRAPE, sizes_due};

    #[test]
    fn a_scrape_measures_the_stalest_few_database_sizes_never_measured_first() {
        let now = Instant::now() + SIZE_STANDS_FOR * 4;
        let ago = |d: Duration| Some(now - d);
        let fresh = ago(SIZE_STANDS_FOR / 2);
        // A thousand tenants: one measured just now, then one long ago, then the rest
        // never.
        let mut measured = vec![fresh, ago(SIZE_STANDS_FOR * 3)];
        measured.extend(std::iter::repeat_n(None, 998));
        let due = sizes_due(measured.into_iter(), now);
        assert_eq!(due.iter().filter(|due| **due).count(), SIZES_PER_SCRAPE);
        assert!(!due[0], "measured within the period: kept");
        assert!(!due[1], "never measured comes before measured long ago");
        assert!(due[2..2 + SIZES_PER_SCRAPE].iter().all(|due| *due));

        // Once every tenant was measured, the oldest go first.
        let measured = [ago(SIZE_STANDS_FOR), fresh, ago(SIZE_STANDS_FOR * 2)];
        assert_eq!(sizes_due(measured.into_iter(), now), [true, false, true]);
    }
}
