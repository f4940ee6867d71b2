//! wfmd: agent-state automation for NICE CXone contact centers.
//!
//! wfmd changes agent states on WFM rules and on supervisors' request, refuses changes
//! that break shift or break compliance, records every state in SQLite or PostgreSQL,
//! serves several tenants from one process (and one tenant from several processes),
//! and reports through webhooks, a hash-chained audit log and compliance exports.
//!
//! # Layout
//! - [`domain`]: the vocabulary and pure rules (states, compliance, adherence and its
//!   rules, idle time, trends and anomalies, what a change does when its agent is busy),
//!   and [`domain::events`], the typed events every producer builds and the webhooks
//!   and live feed carry. No I/O.
//! - [`cxone`]: the platform client behind the [`cxone::ContactCenter`] trait: one HTTP
//!   core (`cxone::core`: calls, the token cache, status classification, the circuit
//!   breaker, paging) under two dialects (`v2`, `incontact`) that add paths, wire types
//!   and mappings; retries with jitter; the shared request budget with its lanes.
//! - [`store`]: SQLite or PostgreSQL behind one seam ([`store::Db`], whose statements
//!   are run through `on!` and its short forms `execute!`, `fetch!`): opening and the
//!   write turn, state history, attempts, intents, the audit log with its checkpoints
//!   and verification, the outbox and webhook deliveries, jobs, schedules, adherence
//!   exceptions and authorisations, deferred changes, the agent roster, retention, and
//!   `wfmd database copy`.
//! - [`cluster`]: several instances on one PostgreSQL database: the tenants' leases in
//!   a schema they share, kept by one statement per look of each instance, its liveness
//!   session (whose end frees its tenants at once), each tenant's fenced term, and the
//!   tenants' spreading over the instances.
//! - [`engine`]: the work: [`engine::TransitionEngine`] validates, executes and records
//!   one change, and the records of a change that waits for a busy agent
//!   ([`engine::transition::deferral`]); [`engine::lookups`] shares its schedule
//!   lookups with [`engine::schedules`], which keeps the agents' schedules that drive
//!   [`engine::automation`] and the [`engine::compliance`] sweep; [`engine::sync`]
//!   records the changes agents make themselves; [`engine::rules`] fires WFM rules at
//!   their cron slots; [`engine::bulk`] runs supervisors' bulk jobs through the engine,
//!   and [`engine::jobs`] records them, below it and the deferred changes, which both
//!   settle items; [`engine::deferred`]'s worker carries waiting changes out;
//!   [`engine::metrics`] polls skill and queue figures for the wallboard;
//!   [`engine::analytics`] runs analytics jobs; [`engine::retention`] prunes.
//! - [`delivery`]: the outbox dispatcher: signed webhooks, retries, dead letters.
//! - [`live`]: the live feed: outbox-backed events and the in-memory snapshot, fanned
//!   out to any number of clients, one job per file (view, encoding, hub, loops, feed,
//!   browser tickets); [`web`]: the supervisor console's pages (the wallboard, real-time
//!   adherence, an agent's day, bulk jobs, sign-in) that show it and act through the API.
//! - [`report`]: compliance reports (CSV, JSON, HTML), streamed, the definitions that
//!   go with every number, and one agent's schedule against actual.
//! - [`tasks`]: the tenant a task works for, and the one way to spawn a task (keeping
//!   it); [`telemetry`]: the metrics, labelled with that tenant, and their names
//!   ([`telemetry::names`], which imports nothing, so every layer records by them).
//! - [`redact`]: URLs and transport errors without the credentials they may carry, for
//!   the database, logs and messages; [`caller_slots`]: the places each caller may hold
//!   at once (downloads in progress, live-feed streams).
//! - [`api`]: the HTTP API (axum): bearer tokens with roles, browser sessions that
//!   stand for them, `/openapi.json` generated from the routes, problem+json errors.
//! - `sim`: the built-in platform simulator, written from the platform contract
//!   without importing any of the above.
//! - [`config`], [`cli`]: configuration and the command line; `main.rs` only dispatches.
//! - `app`: the wiring, in one place: one tenant's services built from the
//!   configuration as one value (`Tenant`), every background worker under one contract
//!   (a name and a run until cancelled), and [`App`], which serves the API over them.
//!
//! Arrows point one way, in layers: `domain` ← `cxone` ← `store` ← `cluster`,
//! `config`, `report` ← `engine`, `delivery` ← `live` ← `api` ← `app` (a module imports
//! only from layers before its own); no module imports one that imports it, and no
//! folder one that imports it (a test checks both).
//!
//! `docs/architecture.md` draws this map in full: a change and a tenant step by step, the
//! invariants, and where to add a route, a query, a column or an event.

// One module-file style: a module with submodules is a folder with its `mod.rs`, never
// `name.rs` beside a `name/` folder, so a module's file is found the same way everywhere.
#![warn(clippy::self_named_module_files)]
// Unit tests spawn plainly: they run outside any tenant's scope (see `clippy.toml`).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod api;
mod app;
pub mod caller_slots;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod cxone;
pub mod delivery;
pub mod domain;
pub mod engine;
pub mod live;
pub mod redact;
pub mod report;
pub mod sim;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod time;
pub mod web;

#[cfg(test)]
mod import_cycles;
#[cfg(test)]
mod type_names;

pub use app::{
    App, Reload, Services, http_client, incontact_settings, limit_malloc_arenas, platform,
    restart_without_thread_caches, start_simulator,
};

pub use telemetry::metrics_handle;
