//! `wfmd database copy` of a SQLite database holding 1,000,000 recorded changes into
//! PostgreSQL. A change is what the engine records for an accepted transition: a state
//! interval (the agent's previous one closed), a transition attempt and a keyed audit
//! entry, so the copy moves 3,000,000 rows and verifies a chain of 1,000,000 entries.
//! Target: report the time (there is no threshold yet).
//!
//! The source is built fast rather than through the engine: intervals and attempts with
//! one recursive INSERT each, the audit entries with `audit::append_all` in batches of
//! 10,000 (the engine's own append, so the chain verifies on the target). The target is
//! a PostgreSQL server of the bench's own with fsync on, as a real one has it.
//!
//! Run: `cargo bench --bench database_copy`. The figure is the median of 3 runs, each
//! into a fresh database, or the one run when it takes over 60 s. Set
//! `WFMD_BENCH_CHANGES` for a smaller source while trying things out.

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use serde_json::json;
use wfmd::store::audit::{self, AuditKey, NewEntry};
use wfmd::store::{Done, Store, on};

const CHANGES: usize = 1_000_000;
const AGENTS: usize = 1_000;
const RUNS: usize = 3;
/// Past this, one run is the figure: three would take minutes more to say the same.
const ONE_RUN_PAST: Duration = Duration::from_secs(60);
const AUDIT_BATCH: usize = 10_000;
/// 2026-11-20T00:00:00Z; change i of an agent starts a minute after its change i - 1.
const START_MS: i64 = 1_795_132_800_000;

fn key() -> AuditKey {
    AuditKey::new(&"bench-audit-key-0123456789abcdef".to_owned().into())
}

/// The attempt id of change `i`, UUID-shaped as the engine's v7 ids are.
fn attempt_id(i: usize) -> String {
    format!("01900000-0000-7000-8000-{i:012}")
}

/// Builds the source at `url`: `changes` changes over [`AGENTS`] agents, one a minute
/// each, the last interval of each agent open.
async fn build_source(url: &str, changes: usize) {
    let store = Store::open_keyed(url, Some(key())).await.unwrap();
    let per_agent = (changes / AGENTS) as i64;
    let mut tx = store.begin_write().await.unwrap();
    on!(tx, |c| sqlx::query(
        "INSERT INTO state_intervals (agent_id, state, reason, origin, started_at, ended_at,
                                      attempt_id)
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
         SELECT printf('u_%04d', i % $2),
                CASE i % 3 WHEN 0 THEN 'READY' WHEN 1 THEN 'NOT_READY' ELSE 'PAUSED' END,
                CASE i % 3 WHEN 0 THEN 'WORKING' WHEN 1 THEN 'BREAK' ELSE 'ADHOC' END,
                'api', $3 + (i / $2) * 60000,
                CASE WHEN i / $2 = $4 - 1 THEN NULL ELSE $3 + (i / $2 + 1) * 60000 END,
                printf('01900000-0000-7000-8000-%012d', i)
         FROM n",
    )
    .bind(changes as i64)
    .bind(AGENTS as i64)
    .bind(START_MS)
    .bind(per_agent)
    .execute(c)
    .await
    .map(Done::from))
    .unwrap();
    on!(tx, |c| sqlx::query(
        "INSERT INTO transition_attempts (id, idempotency_key, agent_id, from_state,
             target_state, reason, origin, actor, outcome, violation, error, latency_ms,
             requested_at, completed_at, schedule_source, schedule_age_ms,
             compliance_unchecked)
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
         SELECT printf('01900000-0000-7000-8000-%012d', i), NULL, printf('u_%04d', i % $2),
                CASE (i + 2) % 3 WHEN 0 THEN 'READY' WHEN 1 THEN 'NOT_READY' ELSE 'PAUSED' END,
                CASE i % 3 WHEN 0 THEN 'READY' WHEN 1 THEN 'NOT_READY' ELSE 'PAUSED' END,
                CASE i % 3 WHEN 0 THEN 'WORKING' WHEN 1 THEN 'BREAK' ELSE 'ADHOC' END,
                'api', 'api', 'succeeded', NULL, NULL, 150 + i % 200,
                $3 + (i / $2) * 60000 - 180, $3 + (i / $2) * 60000, 'book', 2000 + i % 5000, NULL
         FROM n",
    )
    .bind(changes as i64)
    .bind(AGENTS as i64)
    .bind(START_MS)
    .execute(c)
    .await
    .map(Done::from))
    .unwrap();
    tx.commit().await.unwrap();
    let states = ["READY", "NOT_READY", "PAUSED"];
    let reasons = ["WORKING", "BREAK", "ADHOC"];
    let mut i = 0;
    while i < changes {
        let batch: Vec<(String, String, String, serde_json::Value, i64)> = (i..(i + AUDIT_BATCH)
            .min(changes))
            .map(|n| {
                let id = attempt_id(n);
                let detail = json!({
                    "attemptId": id,
                    "from": states[(n + 2) % 3],
                    "to": states[n % 3],
                    "reasonCode": reasons[n % 3],
                    "origin": "api",
                    "latencyMs": 150 + n % 200,
                    "idempotencyKey": null,
                    "outcome": "succeeded",
                    "scheduleSource": "book",
                    "scheduleAgeMs": 2000 + n % 5000,
                });
                let at = START_MS + (n / AGENTS) as i64 * 60_000;
                (
                    format!("u_{:04}", n % AGENTS),
                    id,
                    "api".to_owned(),
                    detail,
                    at,
                )
            })
            .collect();
        let entries: Vec<NewEntry<'_>> = batch
            .iter()
            .map(|(agent, id, actor, detail, at)| NewEntry {
                at: Utc.timestamp_millis_opt(*at).unwrap(),
                actor,
                action: "transition.succeeded",
                agent_id: Some(agent),
                subject_id: Some(id),
                detail: detail.clone(),
            })
            .collect();
        let mut tx = store.begin_write().await.unwrap();
        audit::append_all(&mut tx, &entries).await.unwrap();
        tx.commit().await.unwrap();
        i += AUDIT_BATCH;
    }
    store.close().await;
}

fn main() {
    let changes = std::env::var("WFMD_BENCH_CHANGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CHANGES);
    let server = throwaway_postgres::start(throwaway_postgres::Options {
        durable: true,
        ..Default::default()
    });
    let runtime = common::runtime();
    runtime.block_on(async {
        let folder = tempfile::tempdir().unwrap();
        let source = format!("sqlite://{}", folder.path().join("source.db").display());
        let built = Instant::now();
        build_source(&source, changes).await;
        let size = std::fs::metadata(folder.path().join("source.db")).map_or(0, |m| m.len());
        eprintln!(
            "source: {changes} changes, {:.0} MB, built in {:.1} s",
            size as f64 / 1e6,
            built.elapsed().as_secs_f64()
        );
        let mut times = Vec::new();
        let mut rows = 0;
        for run in 1..=RUNS {
            let target = server.fresh_database();
            let started = Instant::now();
            let copied = wfmd::store::copy::copy(&source, &target, Some(key()), |_| {})
                .await
                .unwrap();
            let took = started.elapsed();
            rows = copied.tables.iter().map(|t| t.rows).sum::<u64>();
            assert!(copied.audit.is_intact());
            assert_eq!(
                copied.audit.head.as_ref().map(|h| h.seq),
                Some(changes as i64 + 1)
            );
            eprintln!("run {run}: {:.1} s", took.as_secs_f64());
            times.push(took.as_secs_f64());
            if run == 1 && took > ONE_RUN_PAST {
                break;
            }
        }
        let figure = common::median(times.clone());
        let how = if times.len() == 1 {
            "1 run (over 60 s, so not repeated)".to_owned()
        } else {
            format!("median of {} runs {times:.1?}", times.len())
        };
        let peak = common::status_kb("self", "VmHWM:")
            .map_or("?".to_owned(), |kb| format!("{:.0} MB", kb as f64 / 1024.0));
        println!(
            "database copy SQLite -> PostgreSQL of {changes} changes ({rows} rows, the \
             audit chain verified): {figure:.1} s, {how}; {:.0} rows/s; peak memory of \
             the process {peak}  (target: report)",
            rows as f64 / figure
        );
    });
}
