//! Schedules import benchmark (#53): the real `wfmd serve` binary against the in-process
//! simulator (200 agents holding still), on SQLite and on a durable PostgreSQL, each
//! importing the largest file taken over HTTP (16 MiB: one row per shift with its lunch,
//! about 160,000 shifts, the most a file of that size can hold) three times, the first
//! into an empty table and the others replacing it, while changes are made on the
//! tenant, 20 a second, each on its own connection so a slow answer never slows the
//! rate. The agents changed are in the file too, with a shift around now, so their
//! lookups read the import as it comes in force.
//!
//! Figures, per backend: the import's total time, from sending the file to `completed`
//! (with when it was checked and answered 202, and when it came in force), the median of
//! the three; and the p95 answer time of the changes sent during the imports, pooled.
//! Target: p95 < 0.5 s. Beside it, the p95 of the same changes for 10 s before the
//! imports, for comparison.
//!
//! Run: `cargo bench --bench schedule_import` (about two minutes). Linux only (reads
//! /proc/stat for the share of CPU time the host took).

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wfmd::sim::SimConfig;

/// The largest file `POST /v1/schedules/imports` takes (its body limit).
const FILE_BYTES: usize = 16 * 1024 * 1024;
const AGENTS: usize = 200;
const CHANGES_PER_SECOND: u64 = 20;
/// Imports per backend, the changes made during all of them pooled.
const IMPORTS: usize = 3;
const BASELINE: Duration = Duration::from_secs(10);
const TARGET_P95_S: f64 = 0.5;
const DEADLINE: Duration = Duration::from_secs(600);

fn main() {
    let postgres = throwaway_postgres::start(throwaway_postgres::Options {
        durable: true,
        ..Default::default()
    });
    common::runtime().block_on(async {
        let machine_before = common::CpuTimes::now();
        for backend in ["SQLite", "PostgreSQL"] {
            let database = match backend {
                "SQLite" => None,
                _ => Some(postgres.fresh_database()),
            };
            run(backend, database).await;
        }
        if let (Some(before), Some(after)) = (machine_before, common::CpuTimes::now()) {
            println!(
                "machine: {:.1} % of its CPU time stolen by the host meanwhile",
                before.steal_since(after) * 100.0
            );
        }
    });
}

async fn run(backend: &str, database: Option<String>) {
    let platform = common::SimulatedPlatform::start(SimConfig {
        agents: AGENTS,
        requests_per_minute: 0,
        activity: false,
        ..SimConfig::default()
    })
    .await;
    let agents = platform.movable_agents();
    assert!(agents.len() >= 50, "only {} movable agents", agents.len());
    let mut daemon = Daemon::spawn(&platform, database).await;
    let http = wfmd::http_client().unwrap();
    daemon.wait_until_up(&http).await;
    let file = schedules_file(&agents);
    let rows = file.lines().count() - 1;

    // Each agent changed once first, so no change below is an agent's first lookup.
    for agent in &agents {
        http.post(format!(
            "http://{}/v1/agents/{agent}/transitions",
            daemon.address
        ))
        .json(&serde_json::json!({ "state": "PAUSED" }))
        .send()
        .await
        .unwrap();
    }
    let baseline = Changes::start(&http, &daemon.address, &agents, CHANGES_PER_SECOND);
    tokio::time::sleep(BASELINE).await;
    let baseline = baseline.finish().await;

    let mut rounds = Vec::new();
    let mut during = Timed::default();
    for _ in 0..IMPORTS {
        let changes = Changes::start(&http, &daemon.address, &agents, CHANGES_PER_SECOND);
        let round = import(&http, &daemon.address, file.clone()).await;
        let timed = changes.finish().await;
        during.seconds.extend(timed.seconds);
        during.not_ok += timed.not_ok;
        rounds.push(round);
    }
    daemon.stop();

    let job = &rounds[0].job;
    let median = |of: fn(&Round) -> Duration| {
        common::median(rounds.iter().map(|r| of(r).as_secs_f64()).collect())
    };
    println!(
        "{backend}: import of {:.1} MiB ({rows} rows, {} shifts of {} agents), {IMPORTS} times \
         (the first into an empty table, the others replacing it): total {:.1} s median \
         (checked and answered 202 after {:.1} s, in force after {:.1} s; each: {})",
        FILE_BYTES as f64 / 1024.0 / 1024.0,
        job["shifts"],
        job["agents"],
        median(|r| r.total),
        median(|r| r.checked),
        median(|r| r.in_force),
        rounds
            .iter()
            .map(|r| format!("{:.1} s", r.total.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let p95 = during.p95();
    println!(
        "{backend}: changes on the tenant while they ran: {} ({} not answered 200), p95 \
         {p95:.3} s, slowest {:.3} s (the same changes without an import: p95 {:.3} s) — \
         target p95 < {TARGET_P95_S} s: {}",
        during.seconds.len(),
        during.not_ok,
        during.slowest(),
        baseline.p95(),
        common::verdict(p95 < TARGET_P95_S)
    );
}

/// One import, timed from sending the file.
struct Round {
    checked: Duration,
    in_force: Duration,
    total: Duration,
    job: Value,
}

/// Sends `file` and follows the import until it is completed.
async fn import(http: &reqwest::Client, address: &str, file: String) -> Round {
    let sent = Instant::now();
    let response = http
        .post(format!("http://{address}/v1/schedules/imports"))
        .header("content-type", "text/csv")
        .body(file)
        .timeout(DEADLINE)
        .send()
        .await
        .unwrap();
    let checked = sent.elapsed();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let mut in_force = None;
    loop {
        let job: Value = http
            .get(format!("http://{address}{location}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["in_force"] == true && in_force.is_none() {
            in_force = Some(sent.elapsed());
        }
        if matches!(job["state"].as_str(), Some("completed" | "failed")) {
            assert_eq!(job["state"], "completed", "{job}");
            let total = sent.elapsed();
            return Round {
                checked,
                in_force: in_force.unwrap_or(total),
                total,
                job,
            };
        }
        assert!(
            sent.elapsed() < DEADLINE,
            "the import did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The file: `agents` on a shift around now (no break, so any change is allowed), then
/// as many other agents' shifts as the largest file holds, one row each with its lunch,
/// times local to the row's zone (the shortest rows, so the most of them).
fn schedules_file(agents: &[String]) -> String {
    let mut csv = String::from(
        "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone\n",
    );
    let now = Utc::now();
    for agent in agents {
        csv.push_str(&format!(
            "{agent},{},{},,,,,\n",
            wfmd::time::rfc3339(now - TimeDelta::hours(1)),
            wfmd::time::rfc3339(now + TimeDelta::hours(7))
        ));
    }
    for n in 0.. {
        let (agent, day) = (n / 28, n % 28 + 1);
        let row = format!(
            "imp_{agent:05},2030-01-{day:02} 09:00,2030-01-{day:02} 17:00,2030-01-{day:02} 12:00,\
             2030-01-{day:02} 12:30,LUNCH,true,Europe/London\n"
        );
        if csv.len() + row.len() > FILE_BYTES {
            break;
        }
        csv.push_str(&row);
    }
    csv
}

/// Changes made at a steady rate until finished, each timed.
struct Changes {
    stop: CancellationToken,
    driver: tokio::task::JoinHandle<Timed>,
}

#[derive(Default)]
struct Timed {
    seconds: Vec<f64>,
    not_ok: usize,
}

impl Timed {
    fn p95(&self) -> f64 {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[(sorted.len() * 95).div_ceil(100) - 1]
    }

    fn slowest(&self) -> f64 {
        self.seconds.iter().copied().fold(0.0, f64::max)
    }
}

impl Changes {
    /// `per_second` changes a second, alternating NOT_READY and PAUSED per agent.
    fn start(http: &reqwest::Client, address: &str, agents: &[String], per_second: u64) -> Changes {
        let stop = CancellationToken::new();
        let (http, address, agents) = (http.clone(), address.to_owned(), agents.to_vec());
        let until = stop.clone();
        let driver = tokio::spawn(async move {
            let timed = Arc::new(Mutex::new(Timed::default()));
            let mut ticks = tokio::time::interval(Duration::from_millis(1_000 / per_second));
            let mut calls = JoinSet::new();
            for i in 0.. {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = until.cancelled() => break,
                }
                let agent = &agents[i % agents.len()];
                let state = if (i / agents.len()) % 2 == 0 {
                    "NOT_READY"
                } else {
                    "PAUSED"
                };
                let request = http
                    .post(format!("http://{address}/v1/agents/{agent}/transitions"))
                    .json(&serde_json::json!({ "state": state }))
                    .timeout(DEADLINE);
                let timed = Arc::clone(&timed);
                calls.spawn(async move {
                    let sent = Instant::now();
                    let ok = request.send().await.is_ok_and(|r| r.status() == 200);
                    let mut timed = timed.lock().unwrap();
                    timed.seconds.push(sent.elapsed().as_secs_f64());
                    timed.not_ok += usize::from(!ok);
                });
            }
            while calls.join_next().await.is_some() {}
            std::mem::take(&mut *timed.lock().unwrap())
        });
        Changes { stop, driver }
    }

    /// Stops sending and waits for the answers in flight.
    async fn finish(self) -> Timed {
        self.stop.cancel();
        self.driver.await.unwrap()
    }
}

/// `wfmd serve` on a free loopback port, against the simulator, on `database` (a SQLite
/// file in a fresh folder with `None`).
struct Daemon {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    async fn spawn(platform: &common::SimulatedPlatform, database: Option<String>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let database = database
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("wfmd.db").display()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = &platform.config.cxone;
        let mut command = Command::new(env!("CARGO_BIN_EXE_wfmd"));
        for (key, _) in std::env::vars() {
            if key.starts_with("WFMD_") {
                command.env_remove(key);
            }
        }
        let child = command
            .arg("serve")
            .current_dir(dir.path())
            .env("WFMD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("WFMD_DATABASE__URL", database)
            .env("WFMD_CXONE__BASE_URL", &c.base_url)
            .env("WFMD_CXONE__TOKEN_URL", &c.token_url)
            .env("WFMD_CXONE__CLIENT_ID", &c.client_id)
            .env("WFMD_CXONE__CLIENT_SECRET", c.client_secret.expose_secret())
            // The changes and the background polls fit well inside it.
            .env("WFMD_CXONE__REQUESTS_PER_MINUTE", "6000")
            .env("WFMD_LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Daemon {
            child,
            address: format!("127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn wait_until_up(&mut self, http: &reqwest::Client) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("wfmd exited: {status}");
            }
            let up = http
                .get(format!("http://{}/healthz", self.address))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return;
            }
            assert!(started.elapsed() < DEADLINE, "wfmd did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
