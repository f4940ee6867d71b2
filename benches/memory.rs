//! Resident memory of `wfmd serve` keeping 2,000 agents in step through an hour of
//! simulated activity. The simulator runs as its own process (`wfmd sim`, 60× fast, so
//! the hour takes a minute): under `serve --simulate` it would share wfmd's address space,
//! and its ground-truth log of every simulated state change grows by design, which would
//! hide wfmd's own figure.
//!
//! Target: wfmd < 60 MB resident, and no growth between the 10th and the 60th simulated
//! minute beyond noise (≤ 10%). The simulator's own figure is printed for context.
//!
//! Run: `cargo bench --bench memory` (about 70 s). Linux only: reads /proc.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCALE: f64 = 60.0;
const AGENTS: &str = "2000";

fn resident_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Starts `wfmd sim` and returns it with the `WFMD_…=…` settings it prints for wfmd.
fn start_simulator() -> (Child, Vec<(String, String)>) {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_wfmd"))
        .args(["sim", "--listen", "127.0.0.1:0", "--agents", AGENTS])
        .args(["--time-scale", &SCALE.to_string()])
        .args(["--requests-per-minute", "6000"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut settings = Vec::new();
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    while settings.len() < 4 {
        let line = lines.next().expect("the simulator stopped early").unwrap();
        if let Some((key, value)) = line.trim().split_once('=')
            && key.starts_with("WFMD_CXONE__")
        {
            settings.push((key.to_owned(), value.to_owned()));
        }
    }
    // Keep draining the simulator's stdout so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (sim, settings)
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn main() {
    let (mut sim, settings) = start_simulator();
    let folder = tempfile::tempdir().unwrap();
    let mut wfmd = Command::new(env!("CARGO_BIN_EXE_wfmd"))
        .arg("serve")
        .current_dir(folder.path())
        .envs(settings)
        .env("WFMD_SERVER__LISTEN", "127.0.0.1:0")
        .env("WFMD_CXONE__REQUESTS_PER_MINUTE", "6000")
        .env("WFMD_SYNC__ENABLED", "true")
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
        samples.push((minute, resident_mb(wfmd.id()), resident_mb(sim.id())));
    }
    let db = folder.path().join("data/wfmd.db");
    let intervals = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT COUNT(*) FROM state_intervals WHERE origin = 'observed'")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    stop(&mut wfmd);
    stop(&mut sim);

    for (minute, wfmd_mb, sim_mb) in &samples {
        println!("simulated minute {minute:>4}: wfmd {wfmd_mb:5.1} MB, simulator {sim_mb:5.1} MB");
    }
    println!("observed intervals recorded: {intervals}");
    let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let growth = samples.last().unwrap().1 / samples[0].1 - 1.0;
    println!(
        "wfmd serve, {AGENTS} agents in sync, simulated hour: peak {peak:.1} MB (target < 60 MB) {}; \
         growth from minute 10 to 60 {:+.1}% (target flat, <= 10%) {}",
        common::verdict(peak < 60.0),
        growth * 100.0,
        common::verdict(growth <= 0.10)
    );
}
