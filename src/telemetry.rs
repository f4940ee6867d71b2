//! The metrics wfmd exports that operations depend on: described (so `/metrics` has a
//! `# HELP` line for them) and, for those without labels, present from the start at
//! zero, so an alert or a dashboard panel never finds them missing on a quiet daemon.
//! `deploy/prometheus` and `deploy/grafana` query these names; a test checks that every
//! name they use is in a running daemon's `/metrics`.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Counters without labels, registered at zero.
const COUNTERS: [(&str, &str); 8] = [
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
];

/// Gauges without labels, registered at zero.
const GAUGES: [(&str, &str); 5] = [
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
        "wfmd_schedule_book_agents",
        "Agents whose schedule the schedule book holds.",
    ),
    (
        "wfmd_database_size_bytes",
        "Size of the SQLite database (pages in use and free), measured at each scrape.",
    ),
];

/// Describes the metrics and registers the label-free ones, and those whose labels
/// are a closed set, at zero (so `increase()` also counts their first event).
/// Idempotent.
pub fn register() {
    for outcome in ["succeeded", "unchanged", "rejected", "failed"] {
        metrics::counter!("wfmd_transitions_total", "outcome" => outcome).increment(0);
    }
    for outcome in ["succeeded", "unchanged", "rejected", "failed", "cancelled"] {
        metrics::counter!("wfmd_bulk_items_total", "outcome" => outcome).increment(0);
    }
    for lane in crate::cxone::Lane::ALL {
        metrics::counter!("wfmd_budget_permits_total", "lane" => lane.as_str()).increment(0);
    }
    for reason in [
        "missing",
        "malformed",
        "invalid",
        "forbidden",
        "host",
        "origin",
    ] {
        metrics::counter!("wfmd_api_refusals_total", "reason" => reason).increment(0);
    }
    for kind in crate::domain::adherence::DeviationKind::ALL {
        metrics::counter!("wfmd_adherence_exceptions_total", "kind" => kind.as_str()).increment(0);
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
    // The live feed (`crate::live`).
    for (name, help) in [
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
    ] {
        describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    for outcome in ["replayed", "snapshot"] {
        metrics::counter!("wfmd_live_resumes_total", "outcome" => outcome).increment(0);
    }
    describe_counter!(
        "wfmd_live_resumes_total",
        "Live clients that resumed with Last-Event-ID: replayed, or sent a snapshot (id unknown or too old)."
    );
    metrics::counter!("wfmd_api_refusals_total", "reason" => "ticket").increment(0);
    // The HTTP server's refusals (`crate::api::serve`, `crate::api::live`).
    for limit in ["max_connections", "max_connections_per_client"] {
        metrics::counter!("wfmd_http_connections_refused_total", "limit" => limit).increment(0);
    }
    for timeout in ["header_read_timeout", "idle_timeout"] {
        metrics::counter!("wfmd_http_connections_timed_out_total", "timeout" => timeout)
            .increment(0);
    }
    for kind in ["too-many-tickets", "too-many-streams"] {
        metrics::counter!("wfmd_live_refusals_total", "kind" => kind).increment(0);
    }
    metrics::counter!("wfmd_http_requests_timed_out_total").increment(0);
    metrics::counter!("wfmd_http_accept_errors_total").increment(0);
    metrics::gauge!("wfmd_http_connections").increment(0.0);
    describe_gauge!(
        "wfmd_live_clients",
        "Live feed clients connected now (SSE and WebSocket)."
    );
    metrics::gauge!("wfmd_live_clients").increment(0.0);
    for family in crate::domain::metrics::MetricFamily::ALL {
        let family = family.as_str();
        for outcome in ["ok", "failed", "unavailable"] {
            metrics::counter!("wfmd_metric_polls_total", "family" => family, "outcome" => outcome)
                .increment(0);
        }
        metrics::counter!("wfmd_metric_samples_total", "family" => family).increment(0);
    }
    describe_counter!(
        "wfmd_metric_polls_total",
        "Skill and queue metric polls, by family and outcome (ok, failed, unavailable)."
    );
    describe_counter!(
        "wfmd_metric_samples_total",
        "Skill and queue samples stored, by family."
    );
    for (name, help) in COUNTERS {
        describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    for (name, help) in GAUGES {
        describe_gauge!(name, help);
        metrics::gauge!(name).increment(0.0);
    }
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
