//! Schedule refresh benchmark (#13): platform requests per hour to keep 2,000 agents'
//! schedules fresh, against the in-process simulator (a quarter of whose schedules omit
//! break windows, so break status is asked for as well). Target: <= 2,000 an hour (each
//! schedule at most once an hour).
//!
//! Time is stepped, not waited for: the book's paced refresh
//! ([`ScheduleBook::refresh_step`]) is driven with explicit instants, each step taking as
//! long as it asks, over five simulated hours. The first holds the fill; the figure is
//! the requests of the steps after it over the time those steps took (a single clock
//! hour may hold one request more than the pace, as a step of two requests straddles
//! its edge). The share of the budget it may take while others wait
//! (`cxone.background_share`) is the budget's business: see `lanes_under_load`, which
//! measures it.
//!
//! Run: `cargo bench --bench schedule_refresh`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use wfmd::cxone::Budget;
use wfmd::engine::schedules::{BookSettings, ScheduleBook};
use wfmd::sim::SimConfig;

const AGENTS: usize = 2_000;
const TARGET_PER_HOUR: u64 = 2_000;
const HOURS: usize = 5;

fn main() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let platform = common::SimulatedPlatform::start(SimConfig {
            agents: AGENTS,
            requests_per_minute: 1_000_000,
            ..SimConfig::default()
        })
        .await;
        let client = wfmd::platform(
            &platform.config,
            wfmd::http_client().unwrap(),
            Arc::new(Budget::unlimited()),
        );
        let book = ScheduleBook::new(
            platform.store.clone(),
            client,
            BookSettings {
                refresh_interval: platform.config.schedules.refresh_interval,
                agents: (&platform.config.sync).into(),
            },
        )
        .with_max_age(platform.config.schedules.max_age);

        let t0 = platform.sim.clock().now();
        let mut now = t0;
        let mut hours = [0u64; HOURS];
        let mut busiest_minute = 0;
        let mut minute = (0i64, 0u64);
        while now < t0 + TimeDelta::hours(HOURS as i64) {
            let step = book.refresh_step(now).await.unwrap();
            let hour = usize::try_from((now - t0).num_hours()).unwrap_or(0);
            hours[hour] += step.requests as u64;
            if hour > 0 {
                let m = (now - t0).num_minutes();
                if m != minute.0 {
                    minute = (m, 0);
                }
                minute.1 += step.requests as u64;
                busiest_minute = busiest_minute.max(minute.1);
            }
            now += TimeDelta::from_std(step.wait.max(Duration::from_millis(1))).unwrap();
        }
        eprintln!("requests per simulated hour (the first is the fill): {hours:?}");
        let steady = &hours[1..];
        // Over the time the steps took (the last one's wait may run past the end).
        let span_h = (now - (t0 + TimeDelta::hours(1))).num_milliseconds() as f64 / 3_600_000.0;
        let per_hour = steady.iter().sum::<u64>() as f64 / span_h;
        println!(
            "platform requests per hour to keep {AGENTS} schedules fresh: {per_hour:.0} \
             (simulated hours 2-{HOURS}; most in one clock hour {}, busiest minute \
             {busiest_minute}) — target <= {TARGET_PER_HOUR}: {}",
            steady.iter().max().unwrap(),
            common::verdict(per_hour <= TARGET_PER_HOUR as f64)
        );
    });
}
