//! Lanes benchmark (#13): how long a person waits for a single change while a 2,000-agent
//! schedule book fills (background lane) and a 500-agent bulk job runs (automation lane),
//! all at 100 requests a minute against the in-process simulator. Target: interactive p95
//! < 0.7 s (one permit interval, 0.6 s, plus the call).
//!
//! Real time, not scaled: the waits measured are the budget's own, so the run takes about
//! a minute of wall time. The single changes are made to a few agents whose schedules the
//! engine has cached (a warm-up change each, untimed), so each costs one request, as a
//! change of an agent in the warm schedule book does. Beside the figure: the share of the
//! permits the background lane got while the others waited (target <=
//! `cxone.background_share`, 0.3), from the budget's own `wfmd_budget_permits_total`.
//!
//! Run: `cargo bench --bench lanes_under_load`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wfmd::cxone::{Budget, Lane, in_lane};
use wfmd::domain::{AgentState, Origin};
use wfmd::engine::bulk::{BulkJobs, BulkSettings, JobRequest, Selector};
use wfmd::engine::schedules::{BookSettings, ScheduleBook};
use wfmd::engine::{Outcome, TransitionEngine, TransitionRequest};
use wfmd::sim::SimConfig;

const PER_MINUTE: u32 = 100;
const SINGLES: usize = 20;
const BETWEEN_SINGLES: Duration = Duration::from_millis(2_500);
const TARGET_P95_S: f64 = 0.7;
const SHARE: f64 = 0.3;

/// Permits granted per lane so far, read from the process's metrics.
fn permits() -> [f64; 3] {
    let text = wfmd::metrics_handle().render();
    Lane::ALL.map(|lane| {
        let prefix = format!("wfmd_budget_permits_total{{lane=\"{}\"}} ", lane.as_str());
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0.0)
    })
}

fn main() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let platform = common::SimulatedPlatform::start(SimConfig {
            agents: 2_000,
            // The tenant's own limit well above wfmd's budget: what is measured is the
            // budget, not 429s.
            requests_per_minute: 1_000,
            ..SimConfig::default()
        })
        .await;
        let _ = wfmd::metrics_handle();
        let budget = Arc::new(Budget::per_minute(PER_MINUTE).with_background_share(SHARE));
        let client = wfmd::platform(&platform.config, wfmd::http_client().unwrap(), budget);
        let engine = Arc::new(TransitionEngine::new(
            platform.store.clone(),
            client.clone(),
            Duration::from_secs(3_600),
        ));
        let movable = platform.movable_agents();
        let (people, bulk_agents) = (&movable[..5], &movable[5..505]);

        // Warm-up (untimed): one change each caches the five agents' schedules.
        for agent in people {
            let request = single(agent, "TRAINING");
            in_lane(Lane::Interactive, None, engine.transition(request))
                .await
                .unwrap();
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
            .with_max_age(platform.config.schedules.max_age),
        );
        let book_task = tokio::spawn(book.run(stop.clone()));
        let bulk = BulkJobs::new(engine.clone(), BulkSettings::from(&platform.config.bulk));
        let job = bulk
            .submit(JobRequest {
                selector: Selector::Agents(bulk_agents.to_vec()),
                target: AgentState::NotReady,
                reason: Some("MEETING".into()),
                actor: "bench".into(),
                idempotency_key: None,
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
            let agent = &people[i % people.len()];
            let reason = if (i / people.len()) % 2 == 0 {
                "MEETING"
            } else {
                "TRAINING"
            };
            let started = Instant::now();
            let made = in_lane(
                Lane::Interactive,
                None,
                engine.transition(single(agent, reason)),
            )
            .await
            .unwrap();
            waits.push(started.elapsed().as_secs_f64());
            assert!(matches!(made.outcome, Outcome::Succeeded), "{made:?}");
            tokio::time::sleep(BETWEEN_SINGLES).await;
        }
        let after = permits();
        stop.cancel();
        let _ = book_task.await;
        let _ = bulk_task.await;

        let granted: Vec<f64> = (0..3).map(|i| after[i] - before[i]).collect();
        let others = granted[1] + granted[2];
        let background_share = if others > 0.0 {
            granted[2] / others
        } else {
            0.0
        };
        waits.sort_by(f64::total_cmp);
        let p95 = waits[(waits.len() * 95).div_ceil(100) - 1];
        let median = common::median(waits.clone());
        eprintln!(
            "permits in the window: interactive {}, automation {}, background {}",
            granted[0], granted[1], granted[2]
        );
        println!(
            "interactive change while a 2,000-agent book fills and a 500-agent bulk job runs at \
             {PER_MINUTE}/min: p95 {p95:.3} s (median {median:.3} s, worst {:.3} s, {SINGLES} \
             changes) — target < {TARGET_P95_S} s: {}",
            waits.last().unwrap(),
            common::verdict(p95 < TARGET_P95_S)
        );
        println!(
            "background share of the automation + background permits meanwhile: \
             {background_share:.2} — target <= {SHARE}: {}",
            common::verdict(background_share <= SHARE + 0.02)
        );
    });
}

fn single(agent: &str, reason: &str) -> TransitionRequest {
    TransitionRequest {
        agent_id: agent.to_owned(),
        target: AgentState::NotReady,
        reason: Some(reason.to_owned()),
        origin: Origin::Api,
        actor: "bench".into(),
        idempotency_key: None,
    }
}
