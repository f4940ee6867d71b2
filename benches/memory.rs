//! Resident memory of `wfmd serve --simulate --agents 2000` through an hour of simulated
//! activity (the simulator runs 60× fast, so the hour takes a minute): state sync
//! records what 2,000 agents do, and the process must stay small and flat.
//!
//! Target: < 60 MB resident, and no growth between the 10th and the 60th simulated
//! minute beyond noise (≤ 10%).
//!
//! Run: `cargo bench --bench memory` (about 70 s). Linux only: reads /proc.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCALE: f64 = 60.0;

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

fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let folder = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wfmd"))
        .args([
            "serve",
            "--simulate",
            "--agents",
            "2000",
            "--time-scale",
            "60",
        ])
        .current_dir(folder.path())
        .env("WFMD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("WFMD_LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    let sample_at = |sim_minutes: f64| Duration::from_secs_f64(sim_minutes * 60.0 / SCALE);
    let mut samples = Vec::new();
    for minute in [10.0, 20.0, 30.0, 40.0, 50.0, 60.0] {
        let due = sample_at(minute);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        assert!(child.try_wait().unwrap().is_none(), "wfmd exited early");
        samples.push((minute, resident_mb(pid)));
    }
    let db = folder.path().join("data/wfmd.db");
    let intervals = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT COUNT(*) FROM state_intervals WHERE origin = 'observed'")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();

    let peak = samples.iter().map(|(_, mb)| *mb).fold(0.0, f64::max);
    let growth = samples.last().unwrap().1 / samples[0].1 - 1.0;
    println!(
        "resident memory by simulated minute: {samples:.1?}; observed intervals recorded: {intervals}"
    );
    println!(
        "serve --simulate --agents 2000, simulated hour: peak {peak:.1} MB (target < 60 MB) {}; \
         growth from minute 10 to 60 {:+.1}% (target flat, <= 10%) {}",
        common::verdict(peak < 60.0),
        growth * 100.0,
        common::verdict(growth <= 0.10)
    );
}
