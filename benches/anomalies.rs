//! Anomaly detection on synthetic contact-center series with planted anomalies:
//! precision and recall of the robust seasonal detector (every analytics job since #34)
//! at its default settings, beside the targets (precision ≥ 0.9, recall 1.0), and the
//! z-score detector of earlier jobs on the same series for comparison.
//!
//! The series (each from a seeded RNG, so the figures are the same on every run), all
//! with noise like counts' (a standard deviation of the square root of the volume), and
//! anomalies planted once the detector judges (a point is judged once its place in the
//! season has `window` earlier values and the level a season's worth: seven weeks and
//! two days with a weekly season, eight days with a daily one). Each planted spike or
//! dip is half the expected value or eight noise deviations from it, whichever is more:
//! - hourly, a year, with a daily and a weekly cycle (weekends at a third), anomalies
//!   from the eighth week on;
//! - daily, three years, with a weekly cycle, anomalies from the tenth week on;
//! - hourly with a daily cycle and two level shifts (volume up by half from a morning
//!   hour, later back down): a flag in the first four points of a shift finds it, flags
//!   in its first twelve hours are about it, later ones are false;
//! - hourly with a daily cycle, a sixth of the buckets missing and a missing week,
//!   anomalies from the third week on;
//! - the series of #34: 8,000 hours of a daily cycle with little noise and two spikes.
//!
//! Precision is flags about planted anomalies over all flags; recall is planted
//! anomalies found over planted. Five seeds per series, counted together.
//!
//! Run: `cargo bench --bench anomalies`; `ANOMALIES_SEED=100` draws other series,
//! `ANOMALIES_Z=5` tries another threshold, `ANOMALIES_VERBOSE=1` lists every false flag
//! and missed anomaly.

mod common;

use std::time::Instant;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wfmd::domain::trend::{self, Detector, Seasonality, TrendPoint, TrendSettings};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const SEEDS: u64 = 5;
/// Points of a level shift's start where a flag finds it.
const SHIFT_POINTS: usize = 4;
/// Points of a level shift's start whose flags are about it.
const SHIFT_SPAN: usize = 12;

/// A series with what was planted in it.
struct Series {
    points: Vec<TrendPoint>,
    bucket_ms: i64,
    planted: Vec<Planted>,
}

/// A planted anomaly: the points where a flag finds it (the spike or dip; the first few
/// of a level shift) and the points whose flags are about it (a level shift's first
/// half day, while the detector takes the new level on).
struct Planted {
    found_by: std::ops::Range<usize>,
    part_of: std::ops::Range<usize>,
}

impl Planted {
    fn point(i: usize) -> Planted {
        Planted {
            found_by: i..i + 1,
            part_of: i..i + 1,
        }
    }
}

/// Normal noise from uniform draws (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Contacts in an hour of a weekday: twenty at night, a morning and an afternoon peak
/// of about three hundred.
fn hour_shape(hour: u32) -> f64 {
    let h = f64::from(hour);
    20.0 + 300.0 * (-((h - 10.5) / 2.5).powi(2)).exp() + 240.0 * (-((h - 15.0) / 2.5).powi(2)).exp()
}

fn weekend(at: DateTime<Utc>) -> bool {
    at.weekday().number_from_monday() >= 6
}

fn start() -> DateTime<Utc> {
    // A Monday.
    Utc.with_ymd_and_hms(2025, 1, 6, 0, 0, 0).unwrap()
}

/// Noise like counts': a standard deviation of the square root of the volume.
fn noisy(rng: &mut StdRng, expected: f64) -> f64 {
    (expected + expected.sqrt() * normal(rng)).max(0.0)
}

/// Plants `count` spikes and `count` dips at random points from `from` on, each at
/// least a day from the others and each clearly an anomaly: half the expected value or
/// eight standard deviations of the noise from it, whichever is more (dips where the
/// expected value leaves room for that: a hundred and more).
fn plant(
    rng: &mut StdRng,
    points: &mut [TrendPoint],
    expected: &[f64],
    from: usize,
    count: usize,
) -> Vec<Planted> {
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < 2 * count {
        let i = rng.random_range(from..points.len());
        let dip = chosen.len() >= count;
        if chosen.iter().all(|&c| c.abs_diff(i) > 24) && (!dip || expected[i] >= 100.0) {
            chosen.push(i);
        }
    }
    // The planted value replaces the noisy one, so every anomaly is as large as said.
    for (n, &i) in chosen.iter().enumerate() {
        let size = (0.5 * expected[i]).max(8.0 * expected[i].sqrt());
        points[i].value = if n < count {
            expected[i] + size
        } else {
            (expected[i] - size).max(0.0)
        };
    }
    chosen.into_iter().map(Planted::point).collect()
}

fn hourly_weekly(seed: u64) -> Series {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = 24 * 365;
    let expected: Vec<f64> = (0..n)
        .map(|h| {
            let at = start() + chrono::Duration::hours(h as i64);
            hour_shape(at.hour()) * if weekend(at) { 0.35 } else { 1.0 }
        })
        .collect();
    let mut points: Vec<TrendPoint> = expected
        .iter()
        .enumerate()
        .map(|(h, &e)| TrendPoint {
            at: start() + chrono::Duration::hours(h as i64),
            value: noisy(&mut rng, e),
        })
        .collect();
    let planted = plant(&mut rng, &mut points, &expected, 24 * 7 * 8, 8);
    Series {
        points,
        bucket_ms: HOUR_MS,
        planted,
    }
}

fn daily_weekly(seed: u64) -> Series {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = 365 * 3;
    let expected: Vec<f64> = (0..n)
        .map(|d| {
            let at = start() + chrono::Duration::days(d as i64);
            // A slow rise over the years, and the weekly cycle.
            (1_400.0 + d as f64 * 0.3) * if weekend(at) { 0.3 } else { 1.0 }
        })
        .collect();
    let mut points: Vec<TrendPoint> = expected
        .iter()
        .enumerate()
        .map(|(d, &e)| TrendPoint {
            at: start() + chrono::Duration::days(d as i64),
            value: noisy(&mut rng, e),
        })
        .collect();
    let planted = plant(&mut rng, &mut points, &expected, 7 * 10, 5);
    Series {
        points,
        bucket_ms: DAY_MS,
        planted,
    }
}

fn level_shifts(seed: u64) -> Series {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = 24 * 120;
    // Up by half from a morning hour, and later back down: a change in proportion is
    // only visible where the volume is, so a shift starting at night is found in the
    // morning instead.
    let up = 24 * 40 + rng.random_range(8..13);
    let down = 24 * 80 + rng.random_range(8..13);
    let mut points = Vec::with_capacity(n);
    for h in 0..n {
        let at = start() + chrono::Duration::hours(h as i64);
        let level = if (up..down).contains(&h) { 1.5 } else { 1.0 };
        let expected = hour_shape(at.hour()) * level;
        points.push(TrendPoint {
            at,
            value: noisy(&mut rng, expected),
        });
    }
    let planted = [up, down]
        .into_iter()
        .map(|s| Planted {
            found_by: s..s + SHIFT_POINTS,
            part_of: s..s + SHIFT_SPAN,
        })
        .collect();
    Series {
        points,
        bucket_ms: HOUR_MS,
        planted,
    }
}

fn missing_buckets(seed: u64) -> Series {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = 24 * 120;
    let expected: Vec<f64> = (0..n).map(|h| hour_shape((h % 24) as u32)).collect();
    let mut points: Vec<TrendPoint> = expected
        .iter()
        .enumerate()
        .map(|(h, &e)| TrendPoint {
            at: start() + chrono::Duration::hours(h as i64),
            value: noisy(&mut rng, e),
        })
        .collect();
    let planted: Vec<usize> = plant(&mut rng, &mut points, &expected, 24 * 14, 6)
        .into_iter()
        .map(|p| p.found_by.start)
        .collect();
    let gap = 24 * 60..24 * 67;
    let mut kept = Vec::new();
    let mut planted_kept = Vec::new();
    for (h, point) in points.into_iter().enumerate() {
        let is_planted = planted.contains(&h);
        if is_planted || (!gap.contains(&h) && rng.random_range(0..6) != 0) {
            if is_planted {
                planted_kept.push(Planted::point(kept.len()));
            }
            kept.push(point);
        }
    }
    Series {
        points: kept,
        bucket_ms: HOUR_MS,
        planted: planted_kept,
    }
}

fn issue_34(seed: u64) -> Series {
    let mut rng = StdRng::seed_from_u64(seed);
    let shape = |hour: u32| {
        let h = f64::from(hour);
        20.0 + 80.0 * (-((h - 13.0) / 4.0).powi(2)).exp()
    };
    let mut points: Vec<TrendPoint> = (0..8_000)
        .map(|h| {
            let at = start() + chrono::Duration::hours(h as i64);
            TrendPoint {
                at,
                value: shape(at.hour()) + 2.0 * normal(&mut rng),
            }
        })
        .collect();
    let spikes = [
        3_000 + rng.random_range(0..500),
        6_000 + rng.random_range(0..500),
    ];
    for &s in &spikes {
        points[s].value += 40.0;
    }
    Series {
        points,
        bucket_ms: HOUR_MS,
        planted: spikes.iter().map(|&s| Planted::point(s)).collect(),
    }
}

/// Makes a series from a seed.
type Generator = fn(u64) -> Series;

/// Counts over the seeds.
#[derive(Default)]
struct Tally {
    points: usize,
    flagged: usize,
    true_flags: usize,
    planted: usize,
    found: usize,
    seconds: f64,
    seasons: Vec<Seasonality>,
}

impl Tally {
    fn add(&mut self, series: &Series, settings: &TrendSettings, verbose: bool) {
        let started = Instant::now();
        let analysis = trend::analyse(&series.points, settings);
        self.seconds += started.elapsed().as_secs_f64();
        let flagged: Vec<usize> = (0..series.points.len())
            .filter(|&i| analysis.points[i].anomaly.is_some())
            .collect();
        let planted: std::collections::HashSet<usize> = series
            .planted
            .iter()
            .flat_map(|p| p.part_of.clone())
            .collect();
        if verbose {
            for &i in flagged.iter().filter(|i| !planted.contains(i)) {
                let f = &analysis.points[i];
                println!(
                    "      false flag at {i} ({}): value {:.1}, baseline {:.1}, spread {:.2}, z {:.2}",
                    series.points[i].at.format("%a %H:%M, day %j"),
                    series.points[i].value,
                    f.baseline.unwrap_or(f64::NAN),
                    f.spread.unwrap_or(f64::NAN),
                    f.z_score.unwrap_or(f64::NAN),
                );
            }
        }
        if verbose {
            for anomaly in &series.planted {
                if !anomaly.found_by.clone().any(|i| flagged.contains(&i)) {
                    let i = anomaly.found_by.start;
                    let f = &analysis.points[i];
                    println!(
                        "      missed at {i} ({}): value {:.1}, baseline {:.1}, spread {:.2}, z {:.2}",
                        series.points[i].at.format("%a %H:%M, day %j"),
                        series.points[i].value,
                        f.baseline.unwrap_or(f64::NAN),
                        f.spread.unwrap_or(f64::NAN),
                        f.z_score.unwrap_or(f64::NAN),
                    );
                }
            }
        }
        self.points += series.points.len();
        self.flagged += flagged.len();
        self.true_flags += flagged.iter().filter(|i| planted.contains(i)).count();
        self.planted += series.planted.len();
        self.found += series
            .planted
            .iter()
            .filter(|anomaly| anomaly.found_by.clone().any(|i| flagged.contains(&i)))
            .count();
        self.seasons.push(analysis.seasonality);
    }

    fn precision(&self) -> f64 {
        if self.flagged == 0 {
            1.0
        } else {
            self.true_flags as f64 / self.flagged as f64
        }
    }

    fn recall(&self) -> f64 {
        self.found as f64 / self.planted.max(1) as f64
    }
}

fn main() {
    // `ANOMALIES_Z=5` tries another threshold; `ANOMALIES_VERBOSE=1` lists false flags
    // and missed anomalies.
    let z = std::env::var("ANOMALIES_Z")
        .ok()
        .and_then(|z| z.parse().ok())
        .unwrap_or(TrendSettings::DEFAULT_Z);
    let verbose = std::env::var_os("ANOMALIES_VERBOSE").is_some();
    // `ANOMALIES_SEED=100` draws other series (seeds 100 to 104).
    let first_seed: u64 = std::env::var("ANOMALIES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    println!(
        "anomaly detection, window {} and |z| > {z}{}, {SEEDS} seeds per series",
        TrendSettings::DEFAULT_WINDOW,
        if z == TrendSettings::DEFAULT_Z {
            " (the defaults)"
        } else {
            ""
        }
    );
    let scenarios: [(&str, Generator); 5] = [
        ("hourly, a year, daily + weekly cycle", hourly_weekly),
        ("daily, three years, weekly cycle", daily_weekly),
        ("hourly, two level shifts", level_shifts),
        (
            "hourly, a sixth of the buckets and a week missing",
            missing_buckets,
        ),
        (
            "#34: 8,000 hours, daily cycle, little noise, two spikes",
            issue_34,
        ),
    ];
    let mut all_met = true;
    for (name, make) in scenarios {
        let mut robust = Tally::default();
        let mut zscore = Tally::default();
        for seed in first_seed..first_seed + SEEDS {
            let series = make(seed);
            let settings = TrendSettings::checked(
                TrendSettings::DEFAULT_WINDOW,
                z,
                Seasonality::Auto,
                series.bucket_ms,
            )
            .expect("default settings");
            robust.add(&series, &settings, verbose);
            let before = TrendSettings {
                window: TrendSettings::DEFAULT_WINDOW,
                z_threshold: TrendSettings::ZSCORE_DEFAULT_Z,
                seasonality: Seasonality::None,
                detector: Detector::Zscore,
                bucket_ms: series.bucket_ms,
            };
            zscore.add(&series, &before, false);
        }
        let met = robust.precision() >= 0.9 && robust.recall() >= 1.0;
        all_met &= met;
        let verdict = if met { "MET" } else { "NOT MET" };
        let mut seasons: Vec<&str> = robust.seasons.iter().map(|s| s.as_str()).collect();
        seasons.dedup();
        println!(
            "{name}: precision {:.3} (target ≥ 0.9), recall {:.3} (target 1.0) {}; \
             {} of {} points flagged ({:.2} %), {} of {} planted found; season {}; {:.1} M points/s",
            robust.precision(),
            robust.recall(),
            verdict,
            robust.flagged,
            robust.points,
            100.0 * robust.flagged as f64 / robust.points as f64,
            robust.found,
            robust.planted,
            seasons.join("/"),
            robust.points as f64 / robust.seconds / 1e6,
        );
        println!(
            "    z-score detector of jobs before #34 (window 7, |z| > 2): precision {:.3}, recall {:.3}; {:.2} % of points flagged",
            zscore.precision(),
            zscore.recall(),
            100.0 * zscore.flagged as f64 / zscore.points as f64,
        );
    }
    println!("all series: {}", if all_met { "MET" } else { "NOT MET" });
}
