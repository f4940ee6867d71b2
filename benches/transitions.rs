//! End-to-end transition benchmarks against the in-process simulator.
//!
//! - throughput: transitions per second with 32 in flight, no platform latency and no
//!   request budget, every change fsync-durable (`synchronous=FULL`). Target ≥ 250/s.
//! - platform calls per transition over 500 changes with a warm schedule cache.
//!   Target ≤ 1.05.
//!
//! Run: `cargo bench --bench transitions`. Each figure is the median of several runs,
//! printed beside its target.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wfmd::config::Config;
use wfmd::cxone::Budget;
use wfmd::domain::{AgentState, Origin};
use wfmd::engine::{Outcome, TransitionEngine, TransitionRequest};
use wfmd::sim::{SimConfig, Simulator};
use wfmd::store::Store;

const RUNS: usize = 5;
const IN_FLIGHT: usize = 32;
const CHANGES_PER_RUN: usize = 1_000;
const CALL_COUNT_CHANGES: usize = 500;

struct Rig {
    sim: Simulator,
    engine: Arc<TransitionEngine>,
    agents: Vec<String>,
    _dir: tempfile::TempDir,
    _stop: CancellationToken,
}

async fn rig() -> Rig {
    let stop = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = Simulator::start(
        SimConfig {
            agents: 300,
            requests_per_minute: 0,
            ..SimConfig::default()
        },
        listener,
        stop.clone(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("bench.db").display());
    config.cxone.base_url = running.base_url.clone();
    config.cxone.token_url = running.token_url.clone();
    config.cxone.client_id = SimConfig::default().client_id;
    config.cxone.client_secret = SimConfig::default().client_secret.into();
    let store = Store::open(&config.database.url).await.unwrap();
    let platform = wfmd::platform(
        &config,
        wfmd::http_client().unwrap(),
        Arc::new(Budget::unlimited()),
    );
    let engine = Arc::new(TransitionEngine::new(
        store,
        platform,
        config.schedule_cache_ttl(),
    ));
    let now = chrono::Utc::now();
    let agents = running
        .sim
        .agents()
        .into_iter()
        .filter(|a| a.on_shift_at(now) && a.state != "ON_CONTACT")
        .map(|a| a.id)
        .collect();
    Rig {
        sim: running.sim,
        engine,
        agents,
        _dir: dir,
        _stop: stop,
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
            async move {
                engine
                    .transition(TransitionRequest {
                        agent_id: agent,
                        target,
                        reason: None,
                        origin: Origin::Api,
                        actor: "bench".into(),
                        idempotency_key: None,
                    })
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|t| t.outcome == Outcome::Succeeded));
    elapsed
}

fn main() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let mut rates = Vec::new();
        let mut calls = Vec::new();
        for round in 0..RUNS {
            let rig = rig().await;
            // Warm the token and the schedule cache once per agent.
            burst(&rig, rig.agents.len(), round).await;

            let elapsed = burst(&rig, CHANGES_PER_RUN, round + 1).await;
            rates.push(CHANGES_PER_RUN as f64 / elapsed.as_secs_f64());

            let before = rig.sim.stats().api_requests;
            burst(&rig, CALL_COUNT_CHANGES, round).await;
            let made = rig.sim.stats().api_requests - before;
            calls.push(made as f64 / CALL_COUNT_CHANGES as f64);
        }
        let rate = common::median(rates.clone());
        let per_change = common::median(calls.clone());
        println!(
            "transitions/s, {IN_FLIGHT} in flight, fsync-durable: median {rate:.0} over {RUNS} runs \
             {rates:.0?}  (target >= 250) {}",
            common::verdict(rate >= 250.0)
        );
        println!(
            "platform calls per transition, warm cache: median {per_change:.3} over {RUNS} runs \
             (target <= 1.05) {}",
            common::verdict(per_change <= 1.05)
        );
    });
}
