//! Compliance sweep benchmark: one sweep over 5,000 agents whose schedules are in
//! memory, with their recorded states in a SQLite file.
//!
//! - a quiet sweep (nothing opens or closes: one read of the open intervals, then
//!   in-memory work): target < 50 ms;
//! - for context, the first sweep, which opens an exception for every agent already
//!   out of adherence (one transaction with their audit entries and events);
//! - adherence rules (#39): quiet sweeps of 2,000 of the agents judged by the built-in
//!   kinds, then by 50 `[[compliance.rules]]`, printed side by side: target, the rules'
//!   median within 1.2 times the built-in one. Most of the 50 name activities and
//!   reasons these schedules never have, and the few that match come last, so each
//!   judgement walks the whole list (the worst case for the rule order).
//!
//! The schedules come from the in-process simulator through the real client (one call
//! per agent, unlimited budget) and the states from one state sync poll, as the daemon
//! gets them. Run: `cargo bench --bench sweep`. Figures are medians of several sweeps.
//!
//! Measured on the 2-core build machine (release, shared with other builds): quiet
//! sweep 21.9, 31.7 and 30.5 ms in three runs (median 30.5 ms); the first sweep, opening
//! 2,500 exceptions, 104–130 ms. With adherence rules (2026-11-26, three runs): 2,000
//! agents' quiet sweep 11.5, 11.1 and 11.3 ms by the built-in kinds, 11.3, 11.4 and
//! 12.8 ms by 50 rules, ratios 0.98, 1.02 and 1.13 (median 1.02x, target <= 1.2x); the
//! 5,000-agent quiet sweep 30.5, 29.9 and 28.0 ms.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use wfmd::config::AutoCorrect;
use wfmd::cxone::Budget;
use wfmd::domain::adherence_rules::Judging;
use wfmd::engine::TransitionEngine;
use wfmd::engine::compliance::{ComplianceSweep, JudgingHandle, SweepSettings};
use wfmd::engine::schedules::{BookSettings, ScheduleBook};
use wfmd::engine::sync::{StateSync, SyncSettings};

const AGENTS: usize = 5_000;
const RULED_AGENTS: usize = 2_000;
const RUNS: usize = 9;

fn builtin() -> Judging {
    Judging::builtin(TimeDelta::minutes(2))
}

fn settings(judging: Judging) -> SweepSettings {
    SweepSettings {
        interval: Duration::from_secs(30),
        judging: JudgingHandle::new(judging),
        auto_correct: AutoCorrect::default(),
    }
}

/// 50 rules as an analyst might write them for a larger center: 45 for activities and
/// reasons these schedules never have, then five that match every day's states.
fn fifty_rules() -> Judging {
    let mut toml = String::new();
    for n in 0..45 {
        let verdict = ["in", "neutral", "out"][n % 3];
        toml.push_str(&format!(
            "[[rules]]\nactivity = \"Training {n}\"\nstates = [\"NOT_READY:TRAINING{n}\", \
             \"PAUSED\", \"IDLE:COACHING{n}\"]\nverdict = \"{verdict}\"\n"
        ));
        if verdict == "out" {
            toml.push_str(&format!("grace = \"{}m\"\n", 1 + n % 5));
        }
        toml.push('\n');
    }
    toml.push_str(
        r#"
[[rules]]
activity = "shift"
states = ["NOT_READY:MEETING", "NOT_READY:TRAINING"]
verdict = "neutral"

[[rules]]
activity = "mandatory_break"
states = ["READY", "ON_CONTACT"]
verdict = "out"
grace = "3m"
severe_after = "15m"

[[rules]]
activity = "break"
states = ["NOT_READY", "PAUSED", "IDLE"]
verdict = "in"

[[rules]]
activity = "off_shift"
states = ["READY", "NOT_READY", "IDLE"]
verdict = "out"
grace = "10m"

[[rules]]
activity = "shift"
states = ["IDLE", "PAUSED"]
verdict = "out"
grace = "5m"
severe_after = "30m"
"#,
    );
    let config: wfmd::config::ComplianceConfig = toml::from_str(&toml).unwrap();
    let judging = config.judging().unwrap();
    assert_eq!(judging.rules.len(), 50);
    judging
}

/// Quiet sweeps (nothing to record) of `agents` agents, one a second after `from`; the
/// time of each in ms.
async fn quiet_sweeps(sweep: &ComplianceSweep, from: DateTime<Utc>, agents: usize) -> Vec<f64> {
    let mut quiet = Vec::new();
    for run in 0..RUNS {
        let at = from + TimeDelta::seconds(1 + run as i64);
        let started = Instant::now();
        let report = sweep.sweep_at(at).await.unwrap();
        quiet.push(started.elapsed().as_secs_f64() * 1_000.0);
        assert_eq!(report.agents, agents);
        assert_eq!((report.opened, report.closed), (0, 0), "a quiet sweep");
    }
    quiet
}

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
        let mut sync = StateSync::new(store.clone(), platform.clone(), agents.clone());
        assert_eq!(sync.poll_once().await.unwrap().recorded, AGENTS);
        println!(
            "setup: {AGENTS} schedules fetched and stored, {AGENTS} states recorded in {:.1} s",
            setup.elapsed().as_secs_f64()
        );

        let engine = Arc::new(TransitionEngine::new(
            store.clone(),
            platform.clone(),
            Duration::ZERO,
        ));
        let sweep = ComplianceSweep::new(book, engine.clone(), settings(builtin()));
        // Three minutes on, every deviation present at the poll has passed the threshold.
        let now = t0 + TimeDelta::minutes(3);
        let started = Instant::now();
        let first = sweep.sweep_at(now).await.unwrap();
        let first_ms = started.elapsed().as_secs_f64() * 1_000.0;
        assert!(first.opened > 0);
        let quiet = quiet_sweeps(&sweep, now, AGENTS).await;
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

        // 2,000 of the agents, by the built-in kinds and by 50 rules; each sweep's first
        // run settles the exceptions its judging sees, the quiet ones are measured.
        let some: Vec<String> = sim
            .agents()
            .iter()
            .take(RULED_AGENTS)
            .map(|a| a.id.clone())
            .collect();
        let book = Arc::new(ScheduleBook::new(
            store.clone(),
            platform,
            BookSettings {
                refresh_interval: Duration::from_secs(3_600),
                agents: SyncSettings {
                    agents: some,
                    ..agents
                },
            },
        ));
        assert_eq!(book.refresh_due(t0).await.unwrap().fetched, RULED_AGENTS);
        let mut medians = Vec::new();
        for (name, judging) in [("built-in kinds", builtin()), ("50 rules", fifty_rules())] {
            let sweep = ComplianceSweep::new(book.clone(), engine.clone(), settings(judging));
            let later = now + TimeDelta::minutes(10 * (medians.len() as i64 + 1));
            sweep.sweep_at(later).await.unwrap();
            let quiet = quiet_sweeps(&sweep, later, RULED_AGENTS).await;
            let median = common::median(quiet.clone());
            println!(
                "compliance sweep, {RULED_AGENTS} agents, {name}: median {median:.1} ms over \
                 {RUNS} sweeps {quiet:.1?}"
            );
            medians.push(median);
        }
        let ratio = medians[1] / medians[0];
        println!(
            "50 rules against the built-in kinds, {RULED_AGENTS} agents: {ratio:.2}x \
             (target <= 1.2x) {}",
            common::verdict(ratio <= 1.2)
        );
        store.close().await;
    });
}
