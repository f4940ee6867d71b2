//! The name of every metric wfmd exports, each written once: the code that records a
//! metric, [`super`]'s descriptions and registrations, and the tests that read
//! `/metrics` all use these constants, so a name cannot drift between them. The names
//! themselves are part of the interface: `deploy/prometheus`, `deploy/grafana` and
//! operators' own alerts query them, so changing one is a breaking change.
//!
//! Grouped by the part of wfmd that records them. This file imports nothing, so any
//! module may use it without an import cycle.

// The HTTP server's connections and timeouts (the process's, see `super::PROCESS`).
pub const HTTP_CONNECTIONS: &str = "wfmd_http_connections";
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "wfmd_http_connections_refused_total";
pub const HTTP_CONNECTIONS_CLOSED_IDLE_TOTAL: &str = "wfmd_http_connections_closed_idle_total";
pub const HTTP_CONNECTIONS_TIMED_OUT_TOTAL: &str = "wfmd_http_connections_timed_out_total";
pub const HTTP_REQUESTS_TIMED_OUT_TOTAL: &str = "wfmd_http_requests_timed_out_total";
pub const HTTP_ACCEPT_ERRORS_TOTAL: &str = "wfmd_http_accept_errors_total";

// The API's refusals (a tenant's, or the process's: see `super::MIXED`).
pub const API_REFUSALS_TOTAL: &str = "wfmd_api_refusals_total";

// Changes of agent states.
pub const TRANSITIONS_TOTAL: &str = "wfmd_transitions_total";
pub const TRANSITION_LATENCY_SECONDS: &str = "wfmd_transition_latency_seconds";
pub const TRANSITIONS_UNRECORDED: &str = "wfmd_transitions_unrecorded";
pub const BULK_ITEMS_TOTAL: &str = "wfmd_bulk_items_total";
pub const DEFERRED_TOTAL: &str = "wfmd_deferred_total";
pub const DEFERRED_CHANGES: &str = "wfmd_deferred_changes";
pub const RULE_FIRINGS_TOTAL: &str = "wfmd_rule_firings_total";
pub const AUTOMATION_TRANSITIONS_TOTAL: &str = "wfmd_automation_transitions_total";

// The platform: the request budget, state sync, schedules, skill and queue figures.
pub const BUDGET_PERMITS_TOTAL: &str = "wfmd_budget_permits_total";
pub const BUDGET_WAIT_SECONDS: &str = "wfmd_budget_wait_seconds";
pub const SYNC_POLLS_TOTAL: &str = "wfmd_sync_polls_total";
pub const SYNC_DELTAS_TOTAL: &str = "wfmd_sync_deltas_total";
pub const SYNC_RENEWALS_TOTAL: &str = "wfmd_sync_renewals_total";
pub const SYNC_ERRORS_TOTAL: &str = "wfmd_sync_errors_total";
pub const SYNC_LAST_SUCCESS_AGE_SECONDS: &str = "wfmd_sync_last_success_age_seconds";
pub const SCHEDULE_REFRESHES_TOTAL: &str = "wfmd_schedule_refreshes_total";
pub const SCHEDULE_REFRESH_ERRORS_TOTAL: &str = "wfmd_schedule_refresh_errors_total";
pub const SCHEDULE_BOOK_AGENTS: &str = "wfmd_schedule_book_agents";
pub const METRIC_POLLS_TOTAL: &str = "wfmd_metric_polls_total";
pub const METRIC_SAMPLES_TOTAL: &str = "wfmd_metric_samples_total";

// Adherence.
pub const ADHERENCE_EXCEPTIONS_OPEN: &str = "wfmd_adherence_exceptions_open";
pub const ADHERENCE_EXCEPTIONS_SEVERE: &str = "wfmd_adherence_exceptions_severe";
pub const ADHERENCE_EXCEPTIONS_TOTAL: &str = "wfmd_adherence_exceptions_total";
pub const ADHERENCE_SEVERE_TOTAL: &str = "wfmd_adherence_severe_total";
pub const ADHERENCE_CORRECTIONS_TOTAL: &str = "wfmd_adherence_corrections_total";
pub const ADHERENCE_AUTHORISATIONS_TOTAL: &str = "wfmd_adherence_authorisations_total";
pub const ADHERENCE_REVIEWS_TOTAL: &str = "wfmd_adherence_reviews_total";
pub const ADHERENCE_SWEEP_DURATION_SECONDS: &str = "wfmd_adherence_sweep_duration_seconds";

// Webhooks.
pub const WEBHOOK_DELIVERED_TOTAL: &str = "wfmd_webhook_delivered_total";
pub const WEBHOOK_FAILED_ATTEMPTS_TOTAL: &str = "wfmd_webhook_failed_attempts_total";
pub const WEBHOOK_DEAD_TOTAL: &str = "wfmd_webhook_dead_total";
pub const WEBHOOK_QUEUE_DEPTH: &str = "wfmd_webhook_queue_depth";
pub const WEBHOOK_OLDEST_PENDING_AGE_SECONDS: &str = "wfmd_webhook_oldest_pending_age_seconds";
pub const WEBHOOK_DELIVERY_LATENCY_SECONDS: &str = "wfmd_webhook_delivery_latency_seconds";
pub const WEBHOOK_ENDPOINT_STATUS: &str = "wfmd_webhook_endpoint_status";
pub const WEBHOOK_ENDPOINT_STATUS_SINCE_SECONDS: &str =
    "wfmd_webhook_endpoint_status_since_seconds";

// The live feed.
pub const LIVE_CLIENTS: &str = "wfmd_live_clients";
pub const LIVE_EVENTS_TOTAL: &str = "wfmd_live_events_total";
pub const LIVE_RESYNCS_TOTAL: &str = "wfmd_live_resyncs_total";
pub const LIVE_CLIENTS_DROPPED_TOTAL: &str = "wfmd_live_clients_dropped_total";
pub const LIVE_RESUMES_TOTAL: &str = "wfmd_live_resumes_total";
pub const LIVE_REFUSALS_TOTAL: &str = "wfmd_live_refusals_total";

// The database: writes, size, retention, the audit log.
pub const STORE_WRITE_ERRORS_TOTAL: &str = "wfmd_store_write_errors_total";
pub const DATABASE_SIZE_BYTES: &str = "wfmd_database_size_bytes";
pub const DATABASE_CONNECTIONS: &str = "wfmd_database_connections";
pub const RETENTION_REMOVED_ROWS_TOTAL: &str = "wfmd_retention_removed_rows_total";
pub const AUDIT_CHECKPOINT_ENTRY: &str = "wfmd_audit_checkpoint_entry";
pub const AUDIT_CHECKPOINT_FAILURES_TOTAL: &str = "wfmd_audit_checkpoint_failures_total";
pub const AUDIT_VERIFY_INTACT: &str = "wfmd_audit_verify_intact";
pub const AUDIT_VERIFY_LAST_RUN_TIMESTAMP_SECONDS: &str =
    "wfmd_audit_verify_last_run_timestamp_seconds";

// Several instances on one database.
pub const TENANT_LEADER: &str = "wfmd_tenant_leader";
pub const LEADERSHIP_CHANGES_TOTAL: &str = "wfmd_leadership_changes_total";
pub const FAILOVER_SECONDS: &str = "wfmd_failover_seconds";
