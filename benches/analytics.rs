//! Analytics benchmarks.
//!
//! - trend + anomaly detection ([`wfmd::domain::trend::analyse`]) over 1,000,000 points,
//!   with consecutive and with weekday-aligned baselines. Target ≥ 5 M points/s.
//!
//! Run: `cargo bench --bench analytics`. Figures are medians of several runs.

mod common;

use std::time::Instant;

use chrono::{TimeZone, Utc};
use wfmd::domain::trend::{self, Point, Seasonality, Settings};

const POINTS: usize = 1_000_000;
const RUNS: usize = 5;

/// An hourly series with a daily and weekly rhythm, deterministic noise and a spike every
/// few thousand points.
fn series() -> Vec<Point> {
    let start = Utc.with_ymd_and_hms(2020, 1, 6, 0, 0, 0).unwrap();
    let mut noise: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..POINTS)
        .map(|n| {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            let hour = (n % 24) as f64;
            let weekday = (n / 24) % 7;
            let base = 100.0 + 40.0 * (hour / 24.0 * std::f64::consts::TAU).sin()
                - if weekday >= 5 { 50.0 } else { 0.0 };
            let jitter = (noise % 1_000) as f64 / 100.0;
            let spike = if n % 4_999 == 0 { 300.0 } else { 0.0 };
            Point {
                at: start + chrono::Duration::hours(n as i64),
                value: base + jitter + spike,
            }
        })
        .collect()
}

fn main() {
    let points = series();
    for (label, seasonality, window) in [
        ("consecutive, window 24", Seasonality::None, 24),
        ("weekday-aligned, window 4", Seasonality::Weekly, 4),
    ] {
        let settings = Settings {
            window,
            z_threshold: 2.0,
            seasonality,
        };
        let mut rates = Vec::new();
        let mut anomalies = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            let analysis = trend::analyse(&points, &settings);
            let seconds = started.elapsed().as_secs_f64();
            anomalies = analysis
                .points
                .iter()
                .filter(|p| p.anomaly.is_some())
                .count();
            std::hint::black_box(&analysis);
            rates.push(POINTS as f64 / seconds);
        }
        let rate = common::median(rates);
        println!(
            "trend + anomaly over {POINTS} points ({label}): {:.1} M points/s (target ≥ 5 M points/s) {}; {anomalies} anomalies",
            rate / 1e6,
            common::verdict(rate >= 5e6),
        );
    }
}
