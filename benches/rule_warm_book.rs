//! Rule benchmark (#13): a WFM rule moving 500 agents with a warm schedule book, against
//! the in-process simulator. Target at 100 requests a minute: <= 5.25 min (one request
//! per change: 500 at 100/min = 5 min, plus 5 %) and zero 429s.
//!
//! Time is scaled, not waited for: wfmd's budget and the simulator's limit both run at
//! 60 x 100 = 6,000 requests a minute, so one wall second stands for one minute at
//! 100/min, and the figure printed is the wall time times 60. Everything here is bound by
//! the budget (calls are a millisecond or two on loopback against 10 ms per permit), so
//! the scaled figure is what 100/min would take, give or take that latency.
//!
//! The book is filled first (its schedule calls drain the budget's bucket, so the rule
//! starts without saved-up permits), then the rule fires once, timed.
//!
//! Run: `cargo bench --bench rule_warm_book`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wfmd::cxone::Budget;
use wfmd::domain::AgentState;
use wfmd::domain::cron::Slots;
use wfmd::domain::rule::{Action, Conditions, Rule, RuleSelector};
use wfmd::engine::TransitionEngine;
use wfmd::engine::rules::RuleFirer;
use wfmd::engine::schedules::{BookSettings, ScheduleBook};
use wfmd::sim::SimConfig;

const AGENTS: usize = 500;
const SCALE: u32 = 60;
const PER_MINUTE: u32 = 100 * SCALE;
const TARGET_MIN: f64 = 5.25;

fn main() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let mut platform = common::SimulatedPlatform::start(SimConfig {
            agents: 800,
            requests_per_minute: PER_MINUTE,
            ..SimConfig::default()
        })
        .await;
        platform.config.cxone.requests_per_minute = PER_MINUTE;
        let max_age = platform.config.schedules.max_age;
        let client = wfmd::platform(
            &platform.config,
            wfmd::http_client().unwrap(),
            Arc::new(Budget::per_minute(PER_MINUTE)),
        );
        let engine = Arc::new(
            TransitionEngine::new(platform.store.clone(), client.clone(), Duration::ZERO)
                .with_book_max_age(max_age),
        );
        let book = ScheduleBook::new(
            platform.store.clone(),
            client,
            BookSettings {
                refresh_interval: platform.config.schedules.refresh_interval,
                agents: (&platform.config.sync).into(),
            },
        )
        .with_max_age(max_age);
        let filled = book.refresh_due(chrono::Utc::now()).await.unwrap();
        let agents: Vec<String> = platform.movable_agents().into_iter().take(AGENTS).collect();
        assert_eq!(agents.len(), AGENTS, "the tenant has enough movable agents");
        eprintln!("book filled: {} agents", filled.fetched);

        let rule = Rule {
            name: "bench-meeting".into(),
            slots: Slots::parse("0 0 12 * * *", "UTC").unwrap(),
            selector: RuleSelector::Agents(agents),
            action: Action::Set {
                state: AgentState::NotReady,
                reason: Some("MEETING".into()),
            },
            conditions: Conditions::default(),
            catch_up: Duration::ZERO,
            when_busy: Default::default(),
        };
        let firer = RuleFirer::new(
            platform.store.clone(),
            engine,
            platform.config.scheduler.concurrency,
            Some(PER_MINUTE),
        );
        let before = platform.sim.stats();
        let started = Instant::now();
        let row = firer
            .fire_slot(&rule, chrono::Utc::now(), None, &CancellationToken::new())
            .await
            .unwrap()
            .unwrap();
        let wall = started.elapsed().as_secs_f64();
        let after = platform.sim.stats();
        let calls = after.api_requests - before.api_requests;
        let rate_limited = after.rate_limited - before.rate_limited;
        assert_eq!(row.changed as usize, AGENTS, "{row:?}");

        let minutes = wall * f64::from(SCALE) / 60.0;
        let met = minutes <= TARGET_MIN && rate_limited == 0;
        println!(
            "rule of {AGENTS} agents, warm book, at 100/min (scaled x{SCALE}): {minutes:.2} min \
             ({wall:.2} s wall, {calls} platform calls, {rate_limited} 429s) \
             — target <= {TARGET_MIN} min and zero 429s: {}",
            common::verdict(met)
        );
    });
}
