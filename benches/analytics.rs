//! Analytics benchmarks.
//!
//! - trend + anomaly detection ([`wfmd::domain::trend::analyse`]) over 1,000,000 points:
//!   the z-score detector of jobs before #34 with consecutive and with weekday-aligned
//!   baselines (target ≥ 5 M points/s), and the robust seasonal detector of jobs since
//!   at its defaults (target ≥ 0.2 M points/s: results are analysed again on every
//!   download, so a 100,000-point result takes well under a second).
//!
//! - history query "adherence % per agent per day" over 2,000 agents × 90 days of
//!   state intervals (≈ 20 M rows) with their shifts, answered from the daily rollups.
//!   Target < 2 s. The one-time cost of computing the rollups is printed for context.
//!
//! - a 100,000-row platform result (80 series × 1,250 hours from the simulator, pages
//!   of 500) extracted into the store by a platform analytics job and streamed to CSV:
//!   peak memory growth above idle (VmHWM after, minus the resident size before, with
//!   the peak reset through /proc/self/clear_refs). Target < 50 MB. The simulator runs
//!   in the same process, so its share counts against the figure too.
//!
//! Run: `cargo bench --bench analytics` (`-- trend`, `-- history` or `-- platform` for
//! one part). Figures are medians of several runs (the
//! platform result: one run).

mod common;

use std::time::Instant;
use wfmd::on;

use chrono::{TimeZone, Utc};
use wfmd::domain::trend::{self, Detector, Seasonality, TrendPoint, TrendSettings};

const POINTS: usize = 1_000_000;
const RUNS: usize = 5;

/// An hourly series with a daily and weekly rhythm, deterministic noise and a spike every
/// few thousand points.
fn series() -> Vec<TrendPoint> {
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
            TrendPoint {
                at: start + chrono::Duration::hours(n as i64),
                value: base + jitter + spike,
            }
        })
        .collect()
}

fn main() {
    // `cargo bench --bench analytics -- platform` runs only the parts named so.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    if wanted("trend") {
        trend_bench();
    }
    if wanted("history") {
        history_bench();
    }
    if wanted("platform") {
        platform_csv_bench();
    }
}

/// Kilobytes of a `/proc/self/status` line; 0 where unreadable.
fn status_kb(key: &str) -> u64 {
    common::status_kb("self", key).unwrap_or(0)
}

fn platform_csv_bench() {
    use wfmd::engine::analytics::render::{self, AnalyticsFormat, CsvFormat, HashSink};
    use wfmd::engine::analytics::spec::{AnalyticsSource, Bucket, QuerySpec};

    let runtime = common::runtime();
    runtime.block_on(async {
        // 80 agents: 8 teams and 10 skills, so group.id × skill.id is 80 series.
        let platform = common::SimulatedPlatform::start(wfmd::sim::SimConfig {
            agents: 80,
            requests_per_minute: 0,
            ..wfmd::sim::SimConfig::default()
        })
        .await;
        platform
            .sim
            .set_aggregation_duration(std::time::Duration::from_millis(200));
        let settings = wfmd::config::analytics::AnalyticsConfig {
            poll_interval: std::time::Duration::from_millis(50),
            ..Default::default()
        };
        let jobs = wfmd::engine::analytics::AnalyticsJobs::new(
            platform.store.clone(),
            wfmd::engine::compliance::JudgingHandle::new(two_minutes()),
        )
        .with_platform(wfmd::cxone::Aggregations::new(
            platform.client(wfmd::cxone::Budget::unlimited()),
            settings.extraction(),
        ));
        let from = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let spec = QuerySpec {
            source: AnalyticsSource::Platform,
            metrics: vec!["duration:avg".parse().unwrap(), "count:sum".parse().unwrap()],
            dimensions: vec!["group.id".into(), "skill.id".into()],
            filters: vec![],
            from,
            to: from + chrono::Duration::hours(1_250),
            bucket: Bucket::Hour,
            window: 24,
            z: 2.0,
            seasonality: Seasonality::None,
            detector: Detector::Robust,
        };
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let idle = status_kb("VmRSS:");
        let started = Instant::now();
        let id = jobs.submit(&spec, "bench").await.unwrap();
        jobs.run_pending().await.unwrap();
        let job = jobs.job(&id).await.unwrap().unwrap();
        assert_eq!(job.status, "completed", "{:?}", job.error);
        let extracted = started.elapsed().as_secs_f64();
        let mut sink = HashSink::default();
        let rows = render::write(&platform.store, &id, &spec, AnalyticsFormat::Csv(CsvFormat::CURRENT), None, &render::SeriesNames::default(), &mut sink)
            .await
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let growth = status_kb("VmHWM:").saturating_sub(idle) as f64 / 1024.0;
        if !reset {
            println!("note: /proc/self/clear_refs unavailable; the peak may include the setup's");
        }
        println!(
            "platform result of {} rows ({rows} CSV rows, {:.1} MB) extracted in {extracted:.1} s, \
             streamed to CSV by {seconds:.1} s: peak memory {growth:.1} MB above idle (target < 50 MB) {}",
            job.received,
            sink.bytes as f64 / 1e6,
            common::verdict(growth < 50.0),
        );
    });
}

const AGENTS: i64 = 2_000;
const DAYS: i64 = 90;
/// Intervals per agent and day: one state change every 13 minutes.
const PER_DAY: i64 = 111;

fn history_bench() {
    use wfmd::engine::analytics::history::{self, Path};
    use wfmd::engine::analytics::spec::{AnalyticsSource, Bucket, QuerySpec};

    let runtime = common::runtime();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("history.db").display());
        let store = wfmd::store::Store::open(&url).await.unwrap();
        let start = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
        let start_ms = start.timestamp_millis();
        let step = 86_400_000 / PER_DAY;
        let seeding = Instant::now();
        let mut tx = store.begin_write().await.unwrap();
        // Back-to-back intervals: agent a's n-th interval starts at n·step (+ a second
        // per agent so agents differ), in a state cycling through the seven.
        on!(tx, |c| sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
             INSERT INTO state_intervals (agent_id, state, origin, started_at, ended_at)
             SELECT printf('u_%05d', i / $2),
                    CASE (i % $2 + i / $2) % 7 WHEN 0 THEN 'READY' WHEN 1 THEN 'ON_CONTACT'
                        WHEN 2 THEN 'ACW' WHEN 3 THEN 'NOT_READY' WHEN 4 THEN 'IDLE'
                        WHEN 5 THEN 'READY' ELSE 'PAUSED' END,
                    'observed',
                    $3 + (i % $2) * $4 + (i / $2) * 1000,
                    $3 + (i % $2 + 1) * $4 + (i / $2) * 1000
             FROM n",
        )
        .bind(AGENTS * DAYS * PER_DAY)
        .bind(DAYS * PER_DAY)
        .bind(start_ms)
        .bind(step)
        .execute(c)
        .await.map(wfmd::store::Done::from))
        .unwrap();
        on!(tx, |c| sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
             INSERT INTO agent_shifts (agent_id, shift_start, shift_end, breaks, breaks_from, fetched_at)
             SELECT printf('u_%05d', i / $2), $3 + (i % $2) * 86400000 + 8 * 3600000,
                    $3 + (i % $2) * 86400000 + 16 * 3600000,
                    json_array(json_object('start', strftime('%Y-%m-%dT%H:%M:%SZ', ($3 + (i % $2) * 86400000 + 12 * 3600000) / 1000, 'unixepoch'),
                                           'end', strftime('%Y-%m-%dT%H:%M:%SZ', ($3 + (i % $2) * 86400000 + 12 * 3600000 + 1800000) / 1000, 'unixepoch'),
                                           'kind', 'LUNCH', 'mandatory', json('true'))),
                    'schedule', $3
             FROM n",
        )
        .bind(AGENTS * DAYS)
        .bind(DAYS)
        .bind(start_ms)
        .execute(c)
        .await.map(wfmd::store::Done::from))
        .unwrap();
        tx.commit().await.unwrap();
        println!(
            "seeded {} intervals and {} shifts in {:.1} s",
            AGENTS * DAYS * PER_DAY,
            AGENTS * DAYS,
            seeding.elapsed().as_secs_f64()
        );

        let spec = QuerySpec {
            source: AnalyticsSource::History,
            metrics: vec!["adherence_pct:avg".parse().unwrap()],
            dimensions: vec!["agent".into()],
            filters: vec![],
            from: start,
            to: start + chrono::Duration::days(DAYS),
            bucket: Bucket::Day,
            window: 7,
            z: 2.0,
            seasonality: Seasonality::None,
            detector: Detector::Robust,
        };
        spec.check().unwrap();
        let now = start + chrono::Duration::days(DAYS + 1);
        let judging = two_minutes();
        let rolling = Instant::now();
        let days = history::ensure_rollups(
            &store,
            start_ms,
            (start + chrono::Duration::days(DAYS)).timestamp_millis(),
            now,
            &judging,
        )
        .await
        .unwrap();
        println!(
            "computed {days} daily rollups once in {:.1} s (kept; not part of the figure below)",
            rolling.elapsed().as_secs_f64()
        );
        let mut times = Vec::new();
        let mut rows = 0usize;
        for _ in 0..RUNS {
            let started = Instant::now();
            rows = 0;
            history::run(&store, &spec, now, &judging, Path::Rollups, &mut rows)
                .await
                .unwrap();
            times.push(started.elapsed().as_secs_f64());
        }
        let seconds = common::median(times);
        println!(
            "history adherence_pct:avg per agent per day, {AGENTS} agents × {DAYS} days: {seconds:.2} s for {rows} rows (target < 2 s) {}",
            common::verdict(seconds < 2.0),
        );
    });
}

fn trend_bench() {
    let points = series();
    let zscore = |window, seasonality| TrendSettings {
        window,
        z_threshold: TrendSettings::ZSCORE_DEFAULT_Z,
        seasonality,
        detector: Detector::Zscore,
        bucket_ms: 3_600_000,
    };
    let robust = TrendSettings::checked(
        TrendSettings::DEFAULT_WINDOW,
        TrendSettings::DEFAULT_Z,
        Seasonality::Auto,
        3_600_000,
    )
    .expect("default settings");
    // Results are analysed again on every download, so 100,000 points (a platform
    // result of 80 series over 52 days of hours) must take well under a second.
    for (label, settings, target) in [
        (
            "z-score, consecutive, window 24",
            zscore(24, Seasonality::None),
            5e6,
        ),
        (
            "z-score, weekday-aligned, window 4",
            zscore(4, Seasonality::Weekly),
            5e6,
        ),
        ("robust seasonal, defaults", robust, 0.2e6),
    ] {
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
            "trend + anomaly over {POINTS} points ({label}): {:.2} M points/s (target ≥ {} M points/s) {}; {anomalies} anomalies",
            rate / 1e6,
            target / 1e6,
            common::verdict(rate >= target),
        );
    }
}

/// The built-in adherence kinds with the default two-minute threshold.
fn two_minutes() -> wfmd::domain::adherence_rules::Judging {
    wfmd::domain::adherence_rules::Judging::builtin(chrono::TimeDelta::minutes(2))
}
