//! End-to-end transition benchmarks against the in-process simulator.
//!
//! - throughput: transitions per second with 32 in flight, no platform latency and no
//!   request budget, every change fsync-durable, on SQLite (`synchronous=FULL`) and on
//!   PostgreSQL (a throwaway server of its own with `fsync` and `synchronous_commit` on,
//!   on the same disk). Targets (#57): SQLite ≥ 1,100/s, what the tree before a change's
//!   intent was committed apart did; PostgreSQL ≥ SQLite in the same run.
//! - platform calls per transition over 500 changes with a warm schedule cache.
//!   Target ≤ 1.05.
//!
//! Run: `cargo bench --bench transitions`. Each figure is the median of several runs,
//! printed beside its target.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use wfmd::cxone::Budget;
use wfmd::domain::AgentState;
use wfmd::engine::{Outcome, TransitionEngine};
use wfmd::sim::SimConfig;

const RUNS: usize = 5;
/// Changes a second on SQLite.
const TARGET_SQLITE: f64 = 1_100.0;
const IN_FLIGHT: usize = 32;
const CHANGES_PER_RUN: usize = 1_000;
const CALL_COUNT_CHANGES: usize = 500;

struct Rig {
    platform: common::SimulatedPlatform,
    engine: Arc<TransitionEngine>,
    agents: Vec<String>,
}

async fn rig(database_url: Option<String>) -> Rig {
    let platform = common::SimulatedPlatform::start_on(
        SimConfig {
            agents: 300,
            requests_per_minute: 0,
            ..SimConfig::default()
        },
        database_url,
    )
    .await;
    let engine = platform.engine(Budget::unlimited());
    let agents = platform.movable_agents();
    Rig {
        platform,
        engine,
        agents,
    }
}

/// Runs `count` changes with `IN_FLIGHT` at a time; returns how long they took.
async fn burst(rig: &Rig, count: usize, round: usize) -> Duration {
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..count)
        .map(|i| {
            let engine = rig.engine.clone();
            let agent = rig.agents[i % rig.agents.len()].clone();
            // Alternate so every change really changes something.
            let target = if (i / rig.agents.len() + round).is_multiple_of(2) {
                AgentState::NotReady
            } else {
                AgentState::Paused
            };
            async move { common::api_change(&engine, agent, target).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|t| t.outcome == Outcome::Succeeded));
    elapsed
}

/// Transitions per second of each run on the database `database_url` gives (a fresh one
/// per run), and the platform calls per transition of each run.
async fn runs(database_url: impl Fn() -> Option<String>) -> (Vec<f64>, Vec<f64>) {
    let mut rates = Vec::new();
    let mut calls = Vec::new();
    for round in 0..RUNS {
        let rig = rig(database_url()).await;
        // Warm the token and the schedule cache once per agent.
        burst(&rig, rig.agents.len(), round).await;

        let elapsed = burst(&rig, CHANGES_PER_RUN, round + 1).await;
        rates.push(CHANGES_PER_RUN as f64 / elapsed.as_secs_f64());

        let before = rig.platform.sim.stats().api_requests;
        burst(&rig, CALL_COUNT_CHANGES, round).await;
        let made = rig.platform.sim.stats().api_requests - before;
        calls.push(made as f64 / CALL_COUNT_CHANGES as f64);
    }
    (rates, calls)
}

/// The machine's load average over the last minute, printed with each figure: the
/// machine is shared, and the rates follow its load.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|all| all.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn main() {
    let postgres = throwaway_postgres::start(throwaway_postgres::Options {
        durable: true,
        ..throwaway_postgres::Options::default()
    });
    let runtime = common::runtime();
    runtime.block_on(async {
        let (rates, calls) = runs(|| None).await;
        let rate = common::median(rates.clone());
        let per_change = common::median(calls);
        println!(
            "transitions/s on SQLite, {IN_FLIGHT} in flight, fsync-durable: median {rate:.0} \
             over {RUNS} runs {rates:.0?}  (target >= {TARGET_SQLITE}) {}, load {}",
            common::verdict(rate >= TARGET_SQLITE),
            load()
        );
        println!(
            "platform calls per transition, warm cache: median {per_change:.3} over {RUNS} runs \
             (target <= 1.05) {}",
            common::verdict(per_change <= 1.05)
        );
        let (pg_rates, _) = runs(|| Some(postgres.fresh_database())).await;
        let pg_rate = common::median(pg_rates.clone());
        println!(
            "transitions/s on PostgreSQL, {IN_FLIGHT} in flight, fsync-durable: median \
             {pg_rate:.0} over {RUNS} runs {pg_rates:.0?}  (target >= SQLite's {rate:.0}) {}, \
             load {}",
            common::verdict(pg_rate >= rate),
            load()
        );
    });
}
