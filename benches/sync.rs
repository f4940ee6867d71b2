//! State-sync benchmark: one poll of a 2,000-agent subscription, end to end (HTTP from
//! the in-process simulator, JSON parsing, the diff, and the durable recording).
//!
//! - every agent changed since the last poll: target < 300 ms;
//! - nothing changed: target < 30 ms.
//!
//! Run: `cargo bench --bench sync`. Figures are medians of several polls.

mod common;

use std::time::{Duration, Instant};

use wfmd::cxone::Budget;
use wfmd::engine::sync::{StateSync, SyncSettings};

const AGENTS: usize = 2_000;
const RUNS: usize = 7;
const INTERVAL: Duration = Duration::from_secs(10);

fn main() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let simulated = common::SimulatedPlatform::frozen(AGENTS).await;
        let sim = simulated.sim.clone();
        let store = simulated.store.clone();
        let platform = simulated.client(Budget::unlimited());
        let mut sync = StateSync::new(
            store.clone(),
            platform,
            SyncSettings {
                interval: INTERVAL,
                renew_after: Duration::from_secs(23 * 3_600),
                teams: Vec::new(),
                agents: Vec::new(),
                unfiltered: false,
            },
        );
        // Subscribe and record everyone once.
        sync.poll_once().await.unwrap();

        let ids: Vec<String> = sim.agents().into_iter().map(|a| a.id).collect();
        let mut all_changed = Vec::new();
        let mut unchanged = Vec::new();
        for run in 0..RUNS {
            let (state, reason) = if run % 2 == 0 {
                ("PAUSED", "ADHOC")
            } else {
                ("IDLE", "SYSTEM_IDLE")
            };
            for id in &ids {
                sim.force_state(id, state, reason);
            }
            sim.clock().advance(INTERVAL);
            let started = Instant::now();
            let report = sync.poll_once().await.unwrap();
            all_changed.push(started.elapsed().as_secs_f64() * 1_000.0);
            assert_eq!(report.recorded, AGENTS, "every agent changed");

            sim.clock().advance(INTERVAL);
            let started = Instant::now();
            let report = sync.poll_once().await.unwrap();
            unchanged.push(started.elapsed().as_secs_f64() * 1_000.0);
            assert_eq!(report.recorded, 0);
        }
        let changed = common::median(all_changed.clone());
        let still = common::median(unchanged.clone());
        println!(
            "sync poll, {AGENTS} agents all changed (fetch, parse, diff, durable record): \
             median {changed:.0} ms over {RUNS} polls {all_changed:.0?} (target < 300 ms) {}",
            common::verdict(changed < 300.0)
        );
        println!(
            "sync poll, {AGENTS} agents none changed: median {still:.1} ms over {RUNS} polls \
             {unchanged:.1?} (target < 30 ms) {}",
            common::verdict(still < 30.0)
        );
    });
}
