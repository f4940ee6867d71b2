//! Lanes benchmark (#13, #34): how long a person waits for a single change while the
//! schedule book fills (background lane) and a bulk job runs (automation lane), all at
//! 100 requests a minute against the in-process simulator. Target: interactive p95
//! < 0.7 s (one permit interval, 0.6 s, plus the call). Two cases, one after the other:
//!
//! - **warm**: a 2,000-agent book fills and a 500-agent bulk job runs; the single changes
//!   go to a few agents whose schedules the engine has cached (a warm-up change each,
//!   untimed), so each costs one request, as a change of an agent in the warm book does.
//!   Beside it: the share of the permits the background lane got while the others
//!   waited (target <= `cxone.background_share`, 0.3), from the budget's own
//!   `wfmd_budget_permits_total`.
//! - **cold**: the book starts empty, fills as after a first start, and a 200-agent bulk
//!   job runs; each single change makes an agent READY whom nobody has looked up yet
//!   (the last the book would fill), so it needs the schedule, the break status where
//!   the tenant's schedules omit breaks, and the change: up to three requests, each
//!   behind the other lanes but for the interactive reserve
//!   (`cxone.interactive_reserve`).
//!
//! Real time, not scaled: the waits measured are the budget's own, so each case takes
//! about a minute of wall time.
//!
//! Run: `cargo bench --bench lanes_under_load`.

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wfmd::cxone::budget::DEFAULT_INTERACTIVE_RESERVE;
use wfmd::cxone::{Budget, Lane, in_lane};
use wfmd::domain::{AgentState, Origin};
use wfmd::engine::bulk::{BulkJobs, BulkSelector, BulkSettings, JobRequest};
use wfmd::engine::schedules::{BookSettings, ScheduleBook};
use wfmd::engine::{Change, Outcome, TransitionEngine, TransitionRequest};
use wfmd::sim::SimConfig;
use wfmd::telemetry::names::BUDGET_PERMITS_TOTAL;

const PER_MINUTE: u32 = 100;
const SINGLES: usize = 20;
const BETWEEN_SINGLES: Duration = Duration::from_millis(2_500);
const TARGET_P95_S: f64 = 0.7;
const SHARE: f64 = 0.3;

/// Permits granted per lane so far, read from the process's metrics.
fn permits() -> [f64; 3] {
    let text = wfmd::metrics_handle().render();
    Lane::ALL.map(|lane| {
        let prefix = format!("{BUDGET_PERMITS_TOTAL}{{lane=\"{}\"}} ", lane.as_str());
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0.0)
    })
}

/// One case's figures.
struct Waits {
    /// Seconds each single change took, sorted.
    sorted: Vec<f64>,
    /// The background lane's share of the automation + background permits meanwhile.
    background_share: f64,
}

impl Waits {
    fn p95(&self) -> f64 {
        self.sorted[(self.sorted.len() * 95).div_ceil(100) - 1]
    }

    fn print(&self, case: &str) {
        let p95 = self.p95();
        println!(
            "interactive change {case} at {PER_MINUTE}/min: p95 {p95:.3} s (median {:.3} s, \
             worst {:.3} s, {SINGLES} changes) — target < {TARGET_P95_S} s: {}",
            common::median(self.sorted.clone()),
            self.sorted.last().unwrap(),
            common::verdict(p95 < TARGET_P95_S)
        );
    }
}

fn main() {
    let runtime = common::runtime();
    let warm = runtime.block_on(case(false));
    let cold = runtime.block_on(case(true));
    warm.print("while a 2,000-agent book fills and a 500-agent bulk job runs (warm)");
    println!(
        "background share of the automation + background permits meanwhile: {:.2} — \
         target <= {SHARE}: {}",
        warm.background_share,
        common::verdict(warm.background_share <= SHARE + 0.02)
    );
    cold.print(
        "for an agent the book does not have yet, while the book fills after a start and a \
         200-agent bulk job runs (cold)",
    );
}

/// Runs one case on a simulator of its own: `cold` as the module doc says.
async fn case(cold: bool) -> Waits {
    let platform = common::SimulatedPlatform::start(SimConfig {
        agents: 2_000,
        // The tenant's own limit well above wfmd's budget: what is measured is the
        // budget, not 429s.
        requests_per_minute: 1_000,
        ..SimConfig::default()
    })
    .await;
    let _ = wfmd::metrics_handle();
    let budget = Arc::new(
        Budget::per_minute(PER_MINUTE)
            .with_background_share(SHARE)
            .with_interactive_reserve(DEFAULT_INTERACTIVE_RESERVE),
    );
    let client = wfmd::platform(&platform.config, wfmd::http_client().unwrap(), budget);
    let mut engine = TransitionEngine::new(
        platform.store.clone(),
        client.clone(),
        Duration::from_secs(3_600),
    );
    if cold {
        // As the daemon runs: compliance from the book where it has the agent.
        engine = engine.with_book_max_age(platform.config.schedules.max_age);
    }
    let engine = Arc::new(engine);
    let (people, bulk_agents) = if cold {
        let now = chrono::Utc::now();
        let bench_end = now + chrono::TimeDelta::minutes(5);
        // Agents READY may be asked of through the run, taken from the end of the id
        // order: the book, filling in id order, comes to them last.
        let mut ready_able: Vec<String> = platform
            .sim
            .agents()
            .into_iter()
            .filter(|a| {
                a.on_shift_at(now)
                    && a.on_shift_at(bench_end)
                    && a.state != "ON_CONTACT"
                    && !a
                        .breaks
                        .iter()
                        .any(|b| b.mandatory && b.start < bench_end && b.end > now)
            })
            .map(|a| a.id)
            .collect();
        ready_able.sort();
        let people = ready_able.split_off(ready_able.len() - SINGLES);
        (people, platform.movable_agents()[..200].to_vec())
    } else {
        let movable = platform.movable_agents();
        (movable[..5].to_vec(), movable[5..505].to_vec())
    };
    if !cold {
        // Warm-up (untimed): one change each caches the five agents' schedules.
        for agent in &people {
            let request = single(agent, AgentState::NotReady, Some("TRAINING"));
            in_lane(
                Lane::Interactive,
                None,
                engine.change(Change::from(request)),
            )
            .await
            .unwrap();
        }
    }

    let stop = CancellationToken::new();
    let book = Arc::new(
        ScheduleBook::new(
            platform.store.clone(),
            client,
            BookSettings {
                refresh_interval: platform.config.schedules.refresh_interval,
                agents: (&platform.config.sync).into(),
            },
        )
        .with_max_age(platform.config.schedules.max_age)
        .with_wanted(engine.wanted_agents()),
    );
    let book_task = tokio::spawn(book.clone().run(stop.clone()));
    let bulk = BulkJobs::new(engine.clone(), BulkSettings::from(&platform.config.bulk));
    let job = bulk
        .submit(JobRequest {
            selector: BulkSelector::Agents(bulk_agents),
            target: AgentState::NotReady,
            reason: Some("MEETING".into()),
            actor: "bench".into(),
            idempotency_key: None,
            defer_for: None,
        })
        .await
        .unwrap();
    let bulk_task = tokio::spawn({
        let (bulk, stop) = (bulk.clone(), stop.clone());
        async move { bulk.run_job(&job.job_id, &stop).await }
    });
    // Let both lanes queue up before the first single change.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let before = permits();
    let mut waits = Vec::new();
    for i in 0..SINGLES {
        let request = if cold {
            let agent = &people[i];
            assert!(book.plan(agent).is_none(), "{agent} is in the book already");
            single(agent, AgentState::Ready, None)
        } else {
            let reason = if (i / people.len()) % 2 == 0 {
                "MEETING"
            } else {
                "TRAINING"
            };
            single(
                &people[i % people.len()],
                AgentState::NotReady,
                Some(reason),
            )
        };
        let started = Instant::now();
        let made = in_lane(
            Lane::Interactive,
            None,
            engine.change(Change::from(request)),
        )
        .await
        .unwrap()
        .made();
        waits.push(started.elapsed().as_secs_f64());
        assert!(matches!(made.outcome, Outcome::Succeeded), "{made:?}");
        tokio::time::sleep(BETWEEN_SINGLES).await;
    }
    let after = permits();
    stop.cancel();
    let _ = book_task.await;
    let _ = bulk_task.await;

    let granted: Vec<f64> = (0..3).map(|i| after[i] - before[i]).collect();
    eprintln!(
        "{}: permits in the window: interactive {}, automation {}, background {}",
        if cold { "cold" } else { "warm" },
        granted[0],
        granted[1],
        granted[2]
    );
    let others = granted[1] + granted[2];
    waits.sort_by(f64::total_cmp);
    Waits {
        sorted: waits,
        background_share: if others > 0.0 {
            granted[2] / others
        } else {
            0.0
        },
    }
}

fn single(agent: &str, target: AgentState, reason: Option<&str>) -> TransitionRequest {
    TransitionRequest {
        agent_id: agent.to_owned(),
        target,
        reason: reason.map(str::to_owned),
        origin: Origin::Api,
        actor: "bench".into(),
        idempotency_key: None,
    }
}
