//! Integration tests: wfmd against the built-in simulator over real HTTP, with a real
//! SQLite file. One test binary, so the crate links once.

mod adherence;
mod analytics;
mod analytics_limits;
mod analytics_platform;
mod audit;
mod auth;
mod backup;
mod bulk;
mod cli;
mod crash;
mod deploy;
mod disk_full;
mod downloads;
mod faults;
mod helpers;
mod hostile;
mod incontact;
mod live;
mod metrics;
mod openapi;
mod receiver;
mod reports;
mod retention;
mod rough_edges;
mod rules;
mod sync;
mod tenant_cli;
mod tenant_live;
mod tenants;
mod transitions;
mod wallboard;
mod webhooks;
mod without_wfm;
