//! Integration tests: wfmd against the built-in simulator over real HTTP, with a real
//! SQLite file, and for the durability tests a real PostgreSQL database too (the
//! throwaway server of `tests/support/`). One test binary, so the crate links once.

// Tests drive the daemon from outside, in no tenant's scope: they spawn plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod adherence;
mod analytics;
mod analytics_limits;
mod analytics_platform;
mod audit;
mod auth;
mod authorisations;
mod backup;
mod boards;
mod bulk;
mod bulk_list;
mod cli;
mod cluster;
mod cluster_api;
mod connections;
mod console;
mod crash;
mod cross_origin;
mod database_copy;
mod deferred;
mod deploy;
mod disk_full;
mod downloads;
mod exception_reviews;
mod failover;
mod faults;
mod fleet;
mod generated_clients;
mod helpers;
mod hostile;
mod incontact;
mod live;
mod metrics;
mod openapi;
mod receiver;
mod reports;
mod reports_page;
mod retention;
mod rough_edges;
mod rta;
mod rules;
mod schedule_imports;
mod schema_parity;
mod schemas_apart;
mod sessions;
mod sqlite_tenants;
mod strangers;
mod sync;
mod tenant_api;
mod tenant_cli;
mod tenant_live;
mod tenant_metrics;
mod tenants;
mod transitions;
mod wallboard;
mod webhooks;
mod without_wfm;
