//! Compliance sweep benchmark: one sweep over 5,000 agents whose schedules are in
//! memory, with their recorded states in a SQLite file.
//!
//! - a quiet sweep (nothing opens or closes: one read of the open intervals, then
//!   in-memory work): target < 50 ms;
//! - for context, the first sweep, which opens an exception for every agent already
//!   out of adherence (one transaction with their audit entries and events).
//!
//! The schedules come from the in-process simulator through the real client (one call
//! per agent, unlimited budget) and the states from one state sync poll, as the daemon
//! gets them. Run: `cargo bench --bench sweep`. Figures are medians of several sweeps.
//!
//! Measured on the 2-core build machine (release, shared with other builds): quiet
//! sweep 21.9, 31.7 and 30.5 ms in three runs (median 30.5 ms); the first sweep, opening
//! 2,500 exceptions, 104–130 ms.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use wfmd::config::AutoCorrect;
use wfmd::cxone::Budget;
use wfmd::domain::adherence_rules::Judging;
use wfmd::engine::TransitionEngine;
use wfmd::engine::compliance::{ComplianceSweep, JudgingHandle, SweepSettings};
use wfmd::engine::schedules::{BookSettings, ScheduleBook};
use wfmd::engine::sync::{StateSync, SyncSettings};

const AGENTS: usize = 5_000;
const RUNS: usize = 9;

fn main() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let simulated = common::SimulatedPlatform::frozen(AGENTS).await;
        let sim = simulated.sim.clone();
        let store = simulated.store.clone();
        let platform = simulated.client(Budget::unlimited());
        let agents = SyncSettings {
            interval: Duration::from_secs(10),
            renew_after: Duration::from_secs(23 * 3_600),
            teams: Vec::new(),
            agents: Vec::new(),
            unfiltered: false,
        };

        let setup = Instant::now();
        let book = Arc::new(ScheduleBook::new(
            store.clone(),
            platform.clone(),
            BookSettings {
                refresh_interval: Duration::from_secs(3_600),
                agents: agents.clone(),
            },
        ));
        let t0 = sim.clock().now();
        let refreshed = book.refresh_due(t0).await.unwrap();
        assert_eq!(refreshed.fetched, AGENTS);
        let mut sync = StateSync::new(store.clone(), platform.clone(), agents);
        assert_eq!(sync.poll_once().await.unwrap().recorded, AGENTS);
        println!(
            "setup: {AGENTS} schedules fetched and stored, {AGENTS} states recorded in {:.1} s",
            setup.elapsed().as_secs_f64()
        );

        let engine = Arc::new(TransitionEngine::new(
            store.clone(),
            platform,
            Duration::ZERO,
        ));
        let sweep = ComplianceSweep::new(
            book,
            engine,
            SweepSettings {
                interval: Duration::from_secs(30),
                judging: JudgingHandle::new(Judging::builtin(TimeDelta::minutes(2))),
                auto_correct: AutoCorrect::default(),
            },
        );
        // Three minutes on, every deviation present at the poll has passed the threshold.
        let now = t0 + TimeDelta::minutes(3);
        let started = Instant::now();
        let first = sweep.sweep_at(now).await.unwrap();
        let first_ms = started.elapsed().as_secs_f64() * 1_000.0;
        assert!(first.opened > 0);

        let mut quiet = Vec::new();
        for run in 0..RUNS {
            let at = now + TimeDelta::seconds(1 + run as i64);
            let started = Instant::now();
            let report = sweep.sweep_at(at).await.unwrap();
            quiet.push(started.elapsed().as_secs_f64() * 1_000.0);
            assert_eq!(report.agents, AGENTS);
            assert_eq!((report.opened, report.closed), (0, 0), "a quiet sweep");
        }
        let median = common::median(quiet.clone());
        println!(
            "compliance sweep, {AGENTS} agents with schedules in memory, nothing to record: \
             median {median:.1} ms over {RUNS} sweeps {quiet:.1?} (target < 50 ms) {}",
            common::verdict(median < 50.0)
        );
        println!(
            "first sweep, opening {} exceptions ({} agents deviating): {first_ms:.0} ms",
            first.opened, first.deviating
        );
        store.close().await;
    });
}
