//! Resident memory of `wfmd serve --simulate --agents 2000` through an hour of simulated
//! activity, 30× fast: the hour takes two minutes of wall time, in which the sync polls
//! (every 10 s of wall time) 12 times. The daemon keeps 2,000 agents in step with the
//! in-process simulator, whose agents take contacts, breaks and log off on their own; the
//! simulator keeps only each agent's latest ground-truth entry under `--simulate`.
//!
//! Target: < 60 MB resident, and no growth between the 10th and the 60th simulated
//! minute beyond noise (≤ 10%).
//!
//! Run: `cargo bench --bench memory` (about two minutes). Linux only: reads /proc.

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wfmd::on;

const SCALE: f64 = 30.0;
const AGENTS: &str = "2000";

fn main() {
    let folder = tempfile::tempdir().unwrap();
    let mut wfmd = Command::new(env!("CARGO_BIN_EXE_wfmd"))
        .args(["serve", "--simulate", "--agents", AGENTS])
        .args(["--time-scale", &SCALE.to_string()])
        .current_dir(folder.path())
        .env("WFMD_SERVER__LISTEN", "127.0.0.1:0")
        .env("WFMD_LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let sample_at = |sim_minutes: f64| Duration::from_secs_f64(sim_minutes * 60.0 / SCALE);
    let mut samples = Vec::new();
    for minute in [10.0, 20.0, 30.0, 40.0, 50.0, 60.0] {
        if let Some(wait) = sample_at(minute).checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        assert!(wfmd.try_wait().unwrap().is_none(), "wfmd exited early");
        samples.push((minute, common::resident_mb(wfmd.id())));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &wfmd.id().to_string()])
        .status();
    let _ = wfmd.wait();
    let intervals = observed_intervals(&folder.path().join("data/wfmd.db"));

    for (minute, mb) in &samples {
        println!("simulated minute {minute:>4}: {mb:5.1} MB");
    }
    println!("observed intervals recorded: {intervals}");
    let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let growth = samples.last().unwrap().1 / samples[0].1 - 1.0;
    println!(
        "wfmd serve --simulate --agents {AGENTS}, simulated hour: peak {peak:.1} MB (target < 60 MB) {}; \
         growth from minute 10 to 60 {:+.1}% (target flat, <= 10%) {}",
        common::verdict(peak < 60.0),
        growth * 100.0,
        common::verdict(growth <= 0.10)
    );
}

/// How many observed changes the sync recorded, to show the hour was a busy one.
fn observed_intervals(db: &std::path::Path) -> i64 {
    common::runtime().block_on(async {
        let store = wfmd::store::Store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let count = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM state_intervals WHERE origin = 'observed'"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        store.close().await;
        count
    })
}
