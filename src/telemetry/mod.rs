//! The metrics wfmd exports that operations depend on: described (so `/metrics` has a
//! `# HELP` line for them) and, for those without labels or with a closed set of them,
//! present from the start at zero, so an alert or a dashboard panel never finds them
//! missing on a quiet daemon. `deploy/prometheus` and `deploy/grafana` query these
//! names; a test checks that every name they use is in a running daemon's `/metrics`.
//!
//! Per-tenant series carry a `tenant` label, added by the recorder (`recorder`) from
//! the tenant scope the work runs in ([`crate::tasks`]): every metric is a tenant's
//! unless it is named in [`PROCESS`] (never labelled) or [`MIXED`]. Call sites name no
//! tenant; a site that records a tenant's metric outside any scope is logged once.

mod recorder;

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::domain::tenant::TenantId;

/// The process's metrics: the HTTP server's connections and timeouts, which no tenant
/// owns. Never labelled with a tenant.
pub const PROCESS: [&str; 6] = [
    "wfmd_http_connections",
    "wfmd_http_connections_refused_total",
    "wfmd_http_connections_closed_idle_total",
    "wfmd_http_connections_timed_out_total",
    "wfmd_http_requests_timed_out_total",
    "wfmd_http_accept_errors_total",
];

/// Metrics with series of both kinds. `wfmd_api_refusals_total`: a refusal by a
/// tenant's routes (`/v1/tenants/{id}/…`, or `/v1/…` with one tenant: a missing,
/// malformed or invalid token, a role too weak, a bad ticket) carries that tenant; one
/// before a tenant is known (a foreign `Host` or `Origin`, a bad token or a weak role
/// on the process's `/v1/tenants` and `/v1/cluster`) carries none.
pub const MIXED: [&str; 1] = ["wfmd_api_refusals_total"];

/// The process-wide metrics recorder, installed on first use (tests build many apps in
/// one process; a recorder can be installed only once): Prometheus's, behind the one
/// that adds the `tenant` label.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (embedding programs); then our
            // handle simply renders nothing, which must not stop the daemon.
            let _ = metrics::set_global_recorder(recorder::TenantLabels::new(recorder));
            register();
            handle
        })
        .clone()
}

/// Registers the per-tenant metrics of `tenant` at zero (and installs the recorder
/// first if need be). Idempotent.
pub fn register_tenant(tenant: &TenantId) {
    let _ = metrics_handle();
    crate::tasks::sync_in_tenant(tenant, register_per_tenant);
}

/// Counters without labels, registered at zero for each tenant.
const COUNTERS: [(&str, &str); 9] = [
    (
        "wfmd_store_write_errors_total",
        "Database write transactions that failed to begin or to commit (a full disk, an I/O error).",
    ),
    (
        "wfmd_webhook_delivered_total",
        "Webhook deliveries answered 2xx.",
    ),
    (
        "wfmd_webhook_failed_attempts_total",
        "Webhook attempts that did not get a 2xx (each retry counts).",
    ),
    (
        "wfmd_webhook_dead_total",
        "Webhook deliveries given up on after the last retry (`wfmd outbox replay --dead`).",
    ),
    ("wfmd_sync_polls_total", "State sync polls answered."),
    (
        "wfmd_sync_deltas_total",
        "Agent changes state sync recorded.",
    ),
    (
        "wfmd_sync_renewals_total",
        "State sync subscriptions created or renewed.",
    ),
    (
        "wfmd_schedule_refreshes_total",
        "Agent schedules fetched into the schedule book.",
    ),
    (
        "wfmd_leadership_changes_total",
        "Times this instance started or stopped leading the tenant (several instances on PostgreSQL).",
    ),
];

/// Gauges without labels, registered at zero for each tenant.
const GAUGES: [(&str, &str); 6] = [
    (
        "wfmd_webhook_queue_depth",
        "Webhook deliveries pending (due or waiting for a retry).",
    ),
    (
        "wfmd_webhook_oldest_pending_age_seconds",
        "Age of the oldest pending webhook delivery's event.",
    ),
    (
        "wfmd_adherence_exceptions_open",
        "Adherence exceptions open now.",
    ),
    (
        "wfmd_adherence_exceptions_severe",
        "Adherence exceptions open now that have turned severe (their rule's severe_after).",
    ),
    (
        "wfmd_schedule_book_agents",
        "Agents whose schedule the schedule book holds.",
    ),
    (
        "wfmd_database_size_bytes",
        "Size of the tenant's SQLite database (pages in use and free), measured at each scrape.",
    ),
];

/// Describes the metrics and registers the process's label-free ones, and those whose
/// labels are a closed set, at zero (so `increase()` also counts their first event).
/// Idempotent.
fn register() {
    describe();
    for reason in ["host", "origin"] {
        metrics::counter!("wfmd_api_refusals_total", "reason" => reason).increment(0);
    }
    for limit in ["max_connections", "max_connections_per_client"] {
        metrics::counter!("wfmd_http_connections_refused_total", "limit" => limit).increment(0);
        metrics::counter!("wfmd_http_connections_closed_idle_total", "limit" => limit).increment(0);
    }
    for timeout in ["header_read_timeout", "idle_timeout"] {
        metrics::counter!("wfmd_http_connections_timed_out_total", "timeout" => timeout)
            .increment(0);
    }
    metrics::counter!("wfmd_http_requests_timed_out_total").increment(0);
    metrics::counter!("wfmd_http_accept_errors_total").increment(0);
    metrics::gauge!("wfmd_http_connections").increment(0.0);
}

/// [`register`] for one tenant's metrics; run in the tenant's scope, which labels them.
fn register_per_tenant() {
    for outcome in ["succeeded", "unchanged", "rejected", "failed"] {
        metrics::counter!("wfmd_transitions_total", "outcome" => outcome).increment(0);
    }
    for outcome in [
        "succeeded",
        "unchanged",
        "rejected",
        "failed",
        "cancelled",
        "deferred",
    ] {
        metrics::counter!("wfmd_bulk_items_total", "outcome" => outcome).increment(0);
    }
    for outcome in crate::engine::deferred::OUTCOMES {
        metrics::counter!("wfmd_deferred_total", "outcome" => outcome).increment(0);
    }
    metrics::gauge!("wfmd_deferred_changes").increment(0.0);
    for lane in crate::cxone::Lane::ALL {
        metrics::counter!("wfmd_budget_permits_total", "lane" => lane.as_str()).increment(0);
    }
    // The refusals of the tenant's routes (see [`MIXED`]).
    for reason in ["missing", "malformed", "invalid", "forbidden", "ticket"] {
        metrics::counter!("wfmd_api_refusals_total", "reason" => reason).increment(0);
    }
    for kind in crate::domain::adherence::DeviationKind::ALL {
        metrics::counter!("wfmd_adherence_exceptions_total", "kind" => kind.as_str()).increment(0);
        metrics::counter!("wfmd_adherence_severe_total", "kind" => kind.as_str()).increment(0);
    }
    // The kinds of `engine::sync::error_kind`.
    for kind in [
        "rate_limited",
        "server",
        "timeout",
        "connect",
        "unauthorized",
        "circuit_open",
        "not_found",
        "decode",
        "not_offered",
        "refused",
    ] {
        metrics::counter!("wfmd_sync_errors_total", "kind" => kind).increment(0);
    }
    for outcome in ["succeeded", "replayed", "rejected", "failed"] {
        metrics::counter!("wfmd_adherence_corrections_total", "outcome" => outcome).increment(0);
    }
    for action in ["authorised", "withdrawn"] {
        metrics::counter!("wfmd_adherence_authorisations_total", "action" => action).increment(0);
    }
    for (name, _) in LIVE_COUNTERS {
        metrics::counter!(name).increment(0);
    }
    for outcome in ["replayed", "snapshot"] {
        metrics::counter!("wfmd_live_resumes_total", "outcome" => outcome).increment(0);
    }
    // The live feed's limits are the tenant's (`[live]`, per tenant).
    for kind in ["too-many-tickets", "too-many-streams"] {
        metrics::counter!("wfmd_live_refusals_total", "kind" => kind).increment(0);
    }
    metrics::gauge!("wfmd_live_clients").increment(0.0);
    for family in crate::domain::metrics::MetricFamily::ALL {
        let family = family.as_str();
        for outcome in ["ok", "failed", "unavailable"] {
            metrics::counter!("wfmd_metric_polls_total", "family" => family, "outcome" => outcome)
                .increment(0);
        }
        metrics::counter!("wfmd_metric_samples_total", "family" => family).increment(0);
    }
    for (name, _) in COUNTERS {
        metrics::counter!(name).increment(0);
    }
    for (name, _) in GAUGES {
        metrics::gauge!(name).increment(0.0);
    }
    // Present, empty, from the start: an alert on failovers finds it on every instance.
    let _ = metrics::histogram!("wfmd_failover_seconds");
}

/// A recorder of a test's own, labelling as the daemon's does (in front of a
/// Prometheus recorder), and the handle that renders what it holds as `/metrics`
/// would: set it as the thread's (`metrics::set_default_local_recorder`) in a
/// current-thread runtime to see what async work records.
#[cfg(test)]
pub(crate) fn test_recorder() -> (impl metrics::Recorder, PrometheusHandle) {
    let prometheus = PrometheusBuilder::new().build_recorder();
    let handle = prometheus.handle();
    (recorder::TenantLabels::new(prometheus), handle)
}

/// The live feed's counters without labels (`crate::live`).
const LIVE_COUNTERS: [(&str, &str); 3] = [
    (
        "wfmd_live_events_total",
        "Durable events the live feed published from the outbox.",
    ),
    (
        "wfmd_live_resyncs_total",
        "Live clients that fell behind their buffer and were sent a fresh snapshot.",
    ),
    (
        "wfmd_live_clients_dropped_total",
        "Live clients closed for falling behind repeatedly or taking no frame.",
    ),
];

/// The `# HELP` lines.
fn describe() {
    for (name, help) in COUNTERS.into_iter().chain(LIVE_COUNTERS) {
        describe_counter!(name, help);
    }
    for (name, help) in GAUGES {
        describe_gauge!(name, help);
    }
    describe_counter!(
        "wfmd_live_resumes_total",
        "Live clients that resumed with Last-Event-ID: replayed, or sent a snapshot (id unknown or too old)."
    );
    // Not registered at zero: a sole instance reports 1 at each scrape (`/metrics`),
    // one among several 0 from the start of its leadership (`cluster::leadership`).
    describe_gauge!(
        "wfmd_tenant_leader",
        "1 while this instance leads the tenant (calls its platform, writes its records), else 0."
    );
    describe_counter!(
        "wfmd_deferred_total",
        "Deferred changes by what became of them: deferred (stored to wait), succeeded, \
         rejected, failed (carried out), expired, cancelled, replaced."
    );
    describe_gauge!(
        "wfmd_deferred_changes",
        "Deferred changes waiting for their agent to be free (set by the leader's deferred worker)."
    );
    describe_gauge!(
        "wfmd_live_clients",
        "Live feed clients connected now (SSE and WebSocket)."
    );
    describe_counter!(
        "wfmd_metric_polls_total",
        "Skill and queue metric polls, by family and outcome (ok, failed, unavailable)."
    );
    describe_counter!(
        "wfmd_metric_samples_total",
        "Skill and queue samples stored, by family."
    );
    describe_gauge!(
        "wfmd_sync_last_success_age_seconds",
        Unit::Seconds,
        "Time since state sync's last successful poll (present once sync has polled)."
    );
    describe_gauge!(
        "wfmd_webhook_endpoint_status",
        "1 for a webhook endpoint's current status (up, failing, disabled), else 0."
    );
    describe_gauge!(
        "wfmd_webhook_endpoint_status_since_seconds",
        "Unix time at which a webhook endpoint entered its current status."
    );
    describe_gauge!(
        "wfmd_audit_verify_intact",
        "Result of the last audit chain verification by GET /v1/audit/verify: 1 intact, 0 broken."
    );
    describe_gauge!(
        "wfmd_audit_verify_last_run_timestamp_seconds",
        "Unix time of the last audit chain verification by GET /v1/audit/verify."
    );
    describe_histogram!(
        "wfmd_failover_seconds",
        Unit::Seconds,
        "How long the tenant was without a leader when this instance began leading it: from \
         the former lease's end (its expiry, its release, or its holder last seen alive when \
         that instance's session ended) to the new term (several instances on PostgreSQL)."
    );
    describe_histogram!(
        "wfmd_budget_wait_seconds",
        Unit::Seconds,
        "How long platform requests waited for a permit of the request budget, by lane."
    );
    describe_histogram!(
        "wfmd_transition_latency_seconds",
        Unit::Seconds,
        "From a change's request to its commit."
    );
    describe_histogram!(
        "wfmd_webhook_delivery_latency_seconds",
        Unit::Seconds,
        "From an event's commit to its delivery."
    );
}
