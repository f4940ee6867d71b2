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

pub mod names;
mod recorder;

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::domain::tenant::TenantId;
use names::*;

/// The process's metrics: the HTTP server's connections and timeouts, which no tenant
/// owns. Never labelled with a tenant.
pub const PROCESS: [&str; 7] = [
    DATABASE_CONNECTIONS,
    HTTP_CONNECTIONS,
    HTTP_CONNECTIONS_REFUSED_TOTAL,
    HTTP_CONNECTIONS_CLOSED_IDLE_TOTAL,
    HTTP_CONNECTIONS_TIMED_OUT_TOTAL,
    HTTP_REQUESTS_TIMED_OUT_TOTAL,
    HTTP_ACCEPT_ERRORS_TOTAL,
];

/// Metrics with series of both kinds. `wfmd_api_refusals_total`: a refusal by a
/// tenant's routes (`/v1/tenants/{id}/…`, or `/v1/…` with one tenant: a missing,
/// malformed or invalid token, a role too weak, a bad ticket) carries that tenant; one
/// before a tenant is known (a foreign `Host` or `Origin`, a bad token or a weak role
/// on the process's `/v1/tenants` and `/v1/cluster`) carries none.
pub const MIXED: [&str; 1] = [API_REFUSALS_TOTAL];

/// The upper bounds, in seconds, of the buckets of every distribution wfmd records
/// (they are all durations): `/metrics` shows each as a Prometheus histogram. 1 s and
/// 10 s are the alerts' thresholds (`deploy/prometheus`).
///
/// Not summaries, the exporter's default: a summary keeps, per series, a rolling
/// sketch of 0.01 % accuracy (up to 32,768 bins in each of three buckets) and merges
/// them at every scrape. Measured: on a daemon of 200 tenants on SQLite at rest, the
/// first two scrapes raised its resident memory by 147 MB (0.73 MB a tenant, about half
/// of what a tenant costs), and at 1,000 tenants a scrape took 3 s. A histogram is its
/// buckets' counters, rendered as they stand, and adds up across instances and
/// tenants.
pub const HISTOGRAM_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A Prometheus recorder as wfmd's `/metrics` renders: every distribution a histogram
/// of [`HISTOGRAM_BUCKETS`].
pub fn prometheus() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(&HISTOGRAM_BUCKETS)
        .expect("the buckets are not empty")
}

/// The process-wide metrics recorder, installed on first use (tests build many apps in
/// one process; a recorder can be installed only once): Prometheus's, behind the one
/// that adds the `tenant` label.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = prometheus().build_recorder();
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
        STORE_WRITE_ERRORS_TOTAL,
        "Database write transactions that failed to begin or to commit (a full disk, an I/O error).",
    ),
    (WEBHOOK_DELIVERED_TOTAL, "Webhook deliveries answered 2xx."),
    (
        WEBHOOK_FAILED_ATTEMPTS_TOTAL,
        "Webhook attempts that did not get a 2xx (each retry counts).",
    ),
    (
        WEBHOOK_DEAD_TOTAL,
        "Webhook deliveries given up on after the last retry (`wfmd outbox replay --dead`).",
    ),
    (SYNC_POLLS_TOTAL, "State sync polls answered."),
    (SYNC_DELTAS_TOTAL, "Agent changes state sync recorded."),
    (
        SYNC_RENEWALS_TOTAL,
        "State sync subscriptions created or renewed.",
    ),
    (
        SCHEDULE_REFRESHES_TOTAL,
        "Agent schedules fetched into the schedule book.",
    ),
    (
        LEADERSHIP_CHANGES_TOTAL,
        "Times this instance started or stopped leading the tenant (several instances on PostgreSQL).",
    ),
];

/// Gauges without labels, registered at zero for each tenant.
const GAUGES: [(&str, &str); 6] = [
    (
        WEBHOOK_QUEUE_DEPTH,
        "Webhook deliveries pending (due or waiting for a retry).",
    ),
    (
        WEBHOOK_OLDEST_PENDING_AGE_SECONDS,
        "Age of the oldest pending webhook delivery's event.",
    ),
    (ADHERENCE_EXCEPTIONS_OPEN, "Adherence exceptions open now."),
    (
        ADHERENCE_EXCEPTIONS_SEVERE,
        "Adherence exceptions open now that have turned severe (their rule's severe_after).",
    ),
    (
        SCHEDULE_BOOK_AGENTS,
        "Agents whose schedule the schedule book holds.",
    ),
    (
        DATABASE_SIZE_BYTES,
        "Size of the tenant's database (SQLite: the file's pages in use and free; \
         PostgreSQL: its schema's tables and indexes), measured at a scrape at most every \
         5 minutes, at most 25 tenants a scrape.",
    ),
];

/// Describes the metrics and registers the process's label-free ones, and those whose
/// labels are a closed set, at zero (so `increase()` also counts their first event).
/// Idempotent.
fn register() {
    describe();
    for reason in ["host", "origin"] {
        metrics::counter!(API_REFUSALS_TOTAL, "reason" => reason).increment(0);
    }
    for limit in ["max_connections", "max_connections_per_client"] {
        metrics::counter!(HTTP_CONNECTIONS_REFUSED_TOTAL, "limit" => limit).increment(0);
        metrics::counter!(HTTP_CONNECTIONS_CLOSED_IDLE_TOTAL, "limit" => limit).increment(0);
    }
    for timeout in ["header_read_timeout", "idle_timeout"] {
        metrics::counter!(HTTP_CONNECTIONS_TIMED_OUT_TOTAL, "timeout" => timeout).increment(0);
    }
    metrics::counter!(HTTP_REQUESTS_TIMED_OUT_TOTAL).increment(0);
    metrics::counter!(HTTP_ACCEPT_ERRORS_TOTAL).increment(0);
    metrics::gauge!(HTTP_CONNECTIONS).increment(0.0);
}

/// [`register`] for one tenant's metrics; run in the tenant's scope, which labels them.
fn register_per_tenant() {
    for outcome in ["succeeded", "unchanged", "rejected", "failed"] {
        metrics::counter!(TRANSITIONS_TOTAL, "outcome" => outcome).increment(0);
    }
    for outcome in [
        "succeeded",
        "unchanged",
        "rejected",
        "failed",
        "cancelled",
        "deferred",
    ] {
        metrics::counter!(BULK_ITEMS_TOTAL, "outcome" => outcome).increment(0);
    }
    for outcome in crate::engine::deferred::OUTCOMES {
        metrics::counter!(DEFERRED_TOTAL, "outcome" => outcome).increment(0);
    }
    metrics::gauge!(DEFERRED_CHANGES).increment(0.0);
    for lane in crate::cxone::Lane::ALL {
        metrics::counter!(BUDGET_PERMITS_TOTAL, "lane" => lane.as_str()).increment(0);
    }
    // The refusals of the tenant's routes (see [`MIXED`]).
    for reason in ["missing", "malformed", "invalid", "forbidden", "ticket"] {
        metrics::counter!(API_REFUSALS_TOTAL, "reason" => reason).increment(0);
    }
    for kind in crate::domain::adherence::DeviationKind::ALL {
        metrics::counter!(ADHERENCE_EXCEPTIONS_TOTAL, "kind" => kind.as_str()).increment(0);
        metrics::counter!(ADHERENCE_SEVERE_TOTAL, "kind" => kind.as_str()).increment(0);
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
        metrics::counter!(SYNC_ERRORS_TOTAL, "kind" => kind).increment(0);
    }
    for outcome in ["succeeded", "replayed", "rejected", "failed"] {
        metrics::counter!(ADHERENCE_CORRECTIONS_TOTAL, "outcome" => outcome).increment(0);
    }
    for action in ["authorised", "withdrawn"] {
        metrics::counter!(ADHERENCE_AUTHORISATIONS_TOTAL, "action" => action).increment(0);
    }
    for decision in ["excused", "upheld"] {
        metrics::counter!(ADHERENCE_REVIEWS_TOTAL, "decision" => decision).increment(0);
    }
    for (name, _) in LIVE_COUNTERS {
        metrics::counter!(name).increment(0);
    }
    for outcome in ["replayed", "snapshot"] {
        metrics::counter!(LIVE_RESUMES_TOTAL, "outcome" => outcome).increment(0);
    }
    // The live feed's limits are the tenant's (`[live]`, per tenant).
    for kind in ["too-many-tickets", "too-many-streams"] {
        metrics::counter!(LIVE_REFUSALS_TOTAL, "kind" => kind).increment(0);
    }
    metrics::gauge!(LIVE_CLIENTS).increment(0.0);
    for family in crate::domain::metrics::MetricFamily::ALL {
        let family = family.as_str();
        for outcome in ["ok", "failed", "unavailable"] {
            metrics::counter!(METRIC_POLLS_TOTAL, "family" => family, "outcome" => outcome)
                .increment(0);
        }
        metrics::counter!(METRIC_SAMPLES_TOTAL, "family" => family).increment(0);
    }
    for (name, _) in COUNTERS {
        metrics::counter!(name).increment(0);
    }
    for (name, _) in GAUGES {
        metrics::gauge!(name).increment(0.0);
    }
    // Present, empty, from the start: an alert on failovers finds it on every instance.
    let _ = metrics::histogram!(FAILOVER_SECONDS);
}

/// A recorder of a test's own, labelling as the daemon's does (in front of a
/// Prometheus recorder), and the handle that renders what it holds as `/metrics`
/// would: set it as the thread's (`metrics::set_default_local_recorder`) in a
/// current-thread runtime to see what async work records.
#[cfg(test)]
pub(crate) fn test_recorder() -> (impl metrics::Recorder, PrometheusHandle) {
    let prometheus = prometheus().build_recorder();
    let handle = prometheus.handle();
    (recorder::TenantLabels::new(prometheus), handle)
}

/// The live feed's counters without labels (`crate::live`).
const LIVE_COUNTERS: [(&str, &str); 3] = [
    (
        LIVE_EVENTS_TOTAL,
        "Durable events the live feed published from the outbox.",
    ),
    (
        LIVE_RESYNCS_TOTAL,
        "Live clients that fell behind their buffer and were sent a fresh snapshot.",
    ),
    (
        LIVE_CLIENTS_DROPPED_TOTAL,
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
        LIVE_RESUMES_TOTAL,
        "Live clients that resumed with Last-Event-ID: replayed, or sent a snapshot (id unknown or too old)."
    );
    // Not registered at zero: a sole instance reports 1 at each scrape (`/metrics`),
    // one among several 0 from the start of its leadership (`cluster::leadership`).
    describe_gauge!(
        TENANT_LEADER,
        "1 while this instance leads the tenant (calls its platform, writes its records), else 0."
    );
    describe_counter!(
        DEFERRED_TOTAL,
        "Deferred changes by what became of them: deferred (stored to wait), succeeded, \
         rejected, failed (carried out), expired, cancelled, replaced."
    );
    describe_gauge!(
        DEFERRED_CHANGES,
        "Deferred changes waiting for their agent to be free (set by the leader's deferred worker)."
    );
    describe_gauge!(
        LIVE_CLIENTS,
        "Live feed clients connected now (SSE and WebSocket)."
    );
    describe_counter!(
        METRIC_POLLS_TOTAL,
        "Skill and queue metric polls, by family and outcome (ok, failed, unavailable)."
    );
    describe_counter!(
        METRIC_SAMPLES_TOTAL,
        "Skill and queue samples stored, by family."
    );
    describe_gauge!(
        SYNC_LAST_SUCCESS_AGE_SECONDS,
        Unit::Seconds,
        "Time since state sync's last successful poll (present once sync has polled)."
    );
    describe_gauge!(
        WEBHOOK_ENDPOINT_STATUS,
        "1 for a webhook endpoint's current status (up, failing, disabled), else 0."
    );
    describe_gauge!(
        WEBHOOK_ENDPOINT_STATUS_SINCE_SECONDS,
        "Unix time at which a webhook endpoint entered its current status."
    );
    describe_gauge!(
        AUDIT_VERIFY_INTACT,
        "Result of the last audit chain verification by GET /v1/audit/verify: 1 intact, 0 broken."
    );
    describe_gauge!(
        AUDIT_VERIFY_LAST_RUN_TIMESTAMP_SECONDS,
        "Unix time of the last audit chain verification by GET /v1/audit/verify."
    );
    describe_gauge!(
        DATABASE_CONNECTIONS,
        "The instance's open database connections, all its tenants' together, by state: \
         in_use (checked out) or idle (waiting in their pool); set at each scrape."
    );
    describe_histogram!(
        FAILOVER_SECONDS,
        Unit::Seconds,
        "How long the tenant was without a leader when this instance began leading it: from \
         the former lease's end (its expiry, its release, or its holder last seen alive when \
         that instance's session ended) to the new term (several instances on PostgreSQL)."
    );
    describe_histogram!(
        BUDGET_WAIT_SECONDS,
        Unit::Seconds,
        "How long platform requests waited for a permit of the request budget, by lane."
    );
    describe_histogram!(
        TRANSITION_LATENCY_SECONDS,
        Unit::Seconds,
        "From a change's request to its commit."
    );
    describe_histogram!(
        WEBHOOK_DELIVERY_LATENCY_SECONDS,
        Unit::Seconds,
        "From an event's commit to its delivery."
    );
}
