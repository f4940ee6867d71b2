//! Compliance report benchmark: 200,000 attempts of 2,000 agents (plus 5 state
//! intervals each) in a temporary store, then the CSV export to a sink.
//!
//! - throughput: attempts processed per second by build + CSV export.
//!   Target ≥ 100,000 attempts/s.
//! - memory: peak RSS growth during the export (VmHWM after, minus VmHWM before with
//!   the peak reset through /proc/self/clear_refs). Target < 50 MB.
//!
//! The JSON export, which streams every attempt, is measured the same way for
//! comparison. Run: `cargo bench --bench report`. Figures are medians of 3 runs.
//!
//! Measured on the 2-core build machine (release), 2026-11-22: CSV 360,000 attempts/s
//! with 8.6 MB peak growth; JSON (64 MB of output) 124,000 attempts/s with 3.6 MB.
//!
//! Again on 2026-11-26, medians of two runs each: CSV 281,000–343,000 attempts/s with
//! 0.8 MB; JSON 73,000–79,000 with under 1 MB, below the 100,000 it is shown beside. The
//! tree of 2026-11-22 measured 342,000 (CSV) and 81,000 (JSON) that same day: most of
//! the fall is the machine's. A profile of the JSON export puts about 45% of its
//! time in thread wake-ups: sqlx hands each SQLite row from its worker thread to the
//! task over a channel, one wake per row of the attempt log.

mod common;

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use wfmd::domain::idle::Window;
use wfmd::domain::{AgentState, Origin};
use wfmd::report::{Report, ReportFormat, WriteSink};
use wfmd::store::attempts::{self, AttemptRow};
use wfmd::store::history::{self, NewInterval};
use wfmd::store::{Store, to_ms};

const RUNS: usize = 3;
const ATTEMPTS: usize = 200_000;
const AGENTS: usize = 2_000;
const INTERVALS_PER_AGENT: usize = 5;

/// Kilobytes of a `/proc/self/status` line; 0 where unreadable.
fn status_kb(key: &str) -> u64 {
    common::status_kb("self", key).unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs), so the peak of one
/// run is not hidden by the setup's.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

async fn populate(store: &Store, window: Window) {
    let span_ms = (window.to - window.from).num_milliseconds();
    let mut tx = store.begin_write().await.unwrap();
    for i in 0..ATTEMPTS {
        let agent = format!("u_{:04}", i % AGENTS);
        let requested = to_ms(window.from) + (i as i64 * span_ms / ATTEMPTS as i64);
        let (outcome, violation) = match i % 10 {
            0 => ("rejected", Some("AGENT_NOT_SCHEDULED")),
            1 => ("rejected", Some("MANDATORY_BREAK_VIOLATION")),
            2 => ("failed", None),
            _ => ("succeeded", None),
        };
        let latency = 50 + (i as i64 * 7919) % 400;
        let row = AttemptRow {
            id: format!("att-{i:07}"),
            idempotency_key: None,
            agent_id: agent,
            from_state: Some("READY".into()),
            target_state: "NOT_READY".into(),
            reason: "BREAK".into(),
            origin: "bulk".into(),
            actor: "bench".into(),
            outcome: outcome.into(),
            violation: violation.map(Into::into),
            error: None,
            latency_ms: latency,
            requested_at: requested,
            completed_at: requested + latency,
        };
        attempts::insert(&mut tx, &row).await.unwrap();
    }
    let states = [
        AgentState::Ready,
        AgentState::NotReady,
        AgentState::OnContact,
        AgentState::Idle,
        AgentState::Paused,
    ];
    for agent in 0..AGENTS {
        let agent_id = format!("u_{agent:04}");
        for (k, state) in states.iter().enumerate().take(INTERVALS_PER_AGENT) {
            let at = window.from - Duration::minutes(30) + Duration::minutes(90 * k as i64);
            history::switch_state(
                &mut tx,
                &NewInterval {
                    agent_id: &agent_id,
                    state: *state,
                    reason: None,
                    origin: Origin::Observed,
                    at,
                    attempt_id: None,
                },
            )
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// One export; returns (seconds, peak growth in MB, bytes written).
async fn export(store: &Store, window: Window, format: ReportFormat) -> (f64, f64, u64) {
    let reset = reset_peak();
    let before = if reset {
        status_kb("VmHWM:")
    } else {
        status_kb("VmRSS:")
    };
    let started = Instant::now();
    let judging = wfmd::domain::adherence_rules::Judging::builtin(chrono::TimeDelta::minutes(2));
    let report = Report::build(store.reader(), window, window.to, None, &judging)
        .await
        .unwrap();
    let mut counter = Counter::default();
    let mut sink = WriteSink(&mut counter);
    report
        .write(format, store.reader(), &mut sink)
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let after = status_kb("VmHWM:");
    assert_eq!(report.agents.len(), AGENTS);
    (
        seconds,
        after.saturating_sub(before) as f64 / 1024.0,
        counter.0,
    )
}

/// A sink that counts bytes and keeps none.
#[derive(Default)]
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = Store::open(&url).await.unwrap();
        let from = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
        let window = Window {
            from,
            to: from + Duration::hours(8),
        };
        let setup = Instant::now();
        populate(&store, window).await;
        println!(
            "setup: {ATTEMPTS} attempts, {AGENTS} agents, {} intervals in {:.1} s",
            AGENTS * INTERVALS_PER_AGENT,
            setup.elapsed().as_secs_f64()
        );
        if !reset_peak() {
            println!("note: /proc/self/clear_refs unavailable; growth is VmHWM minus VmRSS");
        }
        for (name, format) in [("csv", ReportFormat::Csv), ("json", ReportFormat::Json)] {
            let mut rates = Vec::new();
            let mut growths = Vec::new();
            let mut bytes = 0;
            for _ in 0..RUNS {
                let (seconds, growth, written) = export(&store, window, format).await;
                rates.push(ATTEMPTS as f64 / seconds);
                growths.push(growth);
                bytes = written;
            }
            let (rate, growth) = (common::median(rates.clone()), common::median(growths));
            println!(
                "{name}: {rate:.0} attempts/s (target >= 100000) {}, peak memory growth \
                 {growth:.1} MB (target < 50) {}, {bytes} bytes; medians of {RUNS} runs; \
                 rates {:?}",
                common::verdict(rate >= 100_000.0),
                common::verdict(growth < 50.0),
                rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
            );
        }
        store.close().await;
    });
}
