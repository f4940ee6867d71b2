//! Several tenants in one process (#36): `wfmd serve` running 50 simulated tenants of 200
//! agents each, state sync and the live pollers on, every tenant at 600 requests a minute.
//! The daemon runs as a child process, so its memory and CPU time are its own; the 50
//! simulators (agents moving on their own, each tenant different) run in this process.
//!
//! Targets:
//! - resident memory: reported, in total and per tenant (the fleet's less a one-tenant
//!   daemon's, divided by the tenants beyond the first); no target;
//! - CPU at rest: < 5 % of one core, over a quiet minute after start-up settles;
//! - interactive p95 < 0.7 s on every other tenant while one tenant runs a 2,000-change
//!   bulk job at its budget (ten jobs over its 200 agents, which take turns at the budget
//!   and keep it saturated for the whole window); one change every 2 s on each of the 49;
//! - platform calls per tenant per minute as when the tenant runs alone (±5 %): the same
//!   simulator counts what one tenant is asked over a quiet window under a one-tenant
//!   daemon, then under the 50-tenant one.
//!
//! The CPU time of the quiet window is also broken down by thread name (tokio workers,
//! SQLite workers, …), to say where CPU at rest goes.
//!
//! Real time: the windows are the constants below; the whole run takes about 5 minutes
//! on a 2-core machine.
//!
//! Run: `cargo bench --bench tenants`. Linux only: reads /proc.

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wfmd::sim::{SimConfig, SimStats, Simulator};

const TENANTS: usize = 50;
const AGENTS: usize = 200;
/// Every tenant's `cxone.requests_per_minute`: the bulk tenant's budget, which ten jobs
/// over its 200 agents saturate for longer than the load window.
const PER_MINUTE: u32 = 600;
const BULK_JOBS: usize = 10;
/// After every tenant is ready: the schedule books fill, the first polls are made.
const SETTLE: Duration = Duration::from_secs(60);
/// Memory, CPU at rest and platform calls are measured over this window.
const QUIET: Duration = Duration::from_secs(60);
const RSS_SAMPLES: u32 = 6;
/// Interactive changes are timed over this window while the bulk jobs run.
const LOAD: Duration = Duration::from_secs(60);
const BETWEEN_CHANGES: Duration = Duration::from_secs(2);
/// A daemon not ready after this long is a failed run.
const READY_WITHIN: Duration = Duration::from_secs(180);

/// The state sync's poll interval (`sync.interval_ms`'s default) and the route it polls:
/// the quiet window starts half an interval after one of the compared tenant's polls, so
/// its edges never meet a poll and both daemons' windows hold the same number of them.
const SYNC_INTERVAL: Duration = Duration::from_secs(10);
const SYNC_POLL: &str = "GET /api/v2/analytics/realtime/subscription/{subscriptionId}";

const TARGET_CPU_PERCENT: f64 = 5.0;
const TARGET_P95_S: f64 = 0.7;
const CALLS_TOLERANCE: f64 = 0.05;

/// The tenant that runs the bulk jobs, and the one whose platform calls are compared
/// with a daemon of its own.
const BULK_TENANT: usize = 0;
const ALONE_TENANT: usize = 1;

/// One simulated tenant, as the daemon's configuration names it.
struct Tenant {
    id: String,
    sim: Simulator,
    base_url: String,
    token_url: String,
    client_id: String,
    secret: String,
}

fn main() {
    let runtime = common::runtime();
    runtime.block_on(run());
}

async fn run() {
    let stop = CancellationToken::new();
    let tenants = start_simulators(&stop).await;
    let http = wfmd::http_client().unwrap();
    let machine_before = common::CpuTimes::now();

    // One tenant alone: the memory baseline and the platform calls to compare with.
    let alone = Daemon::start(&tenants[ALONE_TENANT..=ALONE_TENANT], &http).await;
    tokio::time::sleep(SETTLE).await;
    let alone_quiet = alone
        .quiet_window(
            &tenants[ALONE_TENANT..=ALONE_TENANT],
            &tenants[ALONE_TENANT],
        )
        .await;
    alone.stop();

    let started = Instant::now();
    let fleet = Daemon::start(&tenants, &http).await;
    let ready_after = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let fleet_quiet = fleet.quiet_window(&tenants, &tenants[ALONE_TENANT]).await;
    let load = load_window(&fleet, &tenants, &http).await;
    let peak_mb =
        common::status_kb(&fleet.pid().to_string(), "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    fleet.stop();
    let steal = match (machine_before, common::CpuTimes::now()) {
        (Some(before), Some(after)) => before.steal_since(after),
        _ => 0.0,
    };
    stop.cancel();

    println!(
        "\n{TENANTS} tenants of {AGENTS} agents, sync and live pollers on, {PER_MINUTE}/min each"
    );
    println!(
        "all tenants ready {:.1} s after the start",
        ready_after.as_secs_f64()
    );
    report_memory(&alone_quiet, &fleet_quiet, peak_mb);
    report_cpu(&alone_quiet, &fleet_quiet);
    report_calls(&alone_quiet, &fleet_quiet);
    report_load(&load);
    println!(
        "machine: {:.1} % of its CPU time stolen by the host over the run",
        steal * 100.0
    );
}

/// Starts the simulators on free loopback ports: tenant `i` has agents `i*200+1`… of its
/// own and seed `i`, so the tenants differ.
async fn start_simulators(stop: &CancellationToken) -> Vec<Tenant> {
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let secret = format!("bench-secret-{i}");
        let config = SimConfig {
            agents: AGENTS,
            first_agent: i * AGENTS + 1,
            seed: i as u64,
            activity: true,
            client_id: format!("bench-{i}"),
            client_secret: secret.clone(),
            // Nobody audits the simulators' ground truth here: keep their memory flat.
            state_log_limit: Some(8),
            ..SimConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = Simulator::start(config.clone(), listener, stop.clone())
            .await
            .unwrap();
        tenants.push(Tenant {
            id: format!("t{:02}", i + 1),
            sim: running.sim,
            base_url: running.base_url,
            token_url: running.token_url,
            client_id: config.client_id,
            secret,
        });
    }
    tenants
}

/// `wfmd serve --config FILE` as a child process, over a fresh folder.
struct Daemon {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon of `tenants` and waits until `GET /v1/tenants` says every one is
    /// ready.
    async fn start(tenants: &[Tenant], http: &reqwest::Client) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        // A free port, chosen here so the bench knows it: the daemon binds it at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_timeout = \"5s\"\n\
             [database]\nurl = \"sqlite://{}\"\n\
             [log]\nlevel = \"warn\"\n\
             [sync]\nenabled = true\n[live]\nenabled = true\n",
            dir.path().join("wfmd.db").display()
        );
        let mut command = Command::new(env!("CARGO_BIN_EXE_wfmd"));
        for tenant in tenants {
            text.push_str(&format!(
                "[[tenants]]\nid = \"{}\"\n[tenants.cxone]\nbase_url = \"{}\"\n\
                 token_url = \"{}\"\nclient_id = \"{}\"\nrequests_per_minute = {PER_MINUTE}\n",
                tenant.id, tenant.base_url, tenant.token_url, tenant.client_id
            ));
            command.env(
                format!(
                    "WFMD_TENANTS__{}__CXONE__CLIENT_SECRET",
                    tenant.id.to_uppercase()
                ),
                &tenant.secret,
            );
        }
        let file = dir.path().join("wfmd.toml");
        std::fs::write(&file, text).unwrap();
        let log = std::fs::File::create(dir.path().join("wfmd.log")).unwrap();
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        daemon.wait_ready(http, tenants.len()).await;
        daemon
    }

    async fn wait_ready(&mut self, http: &reqwest::Client, tenants: usize) {
        let log = self._dir.path().join("wfmd.log");
        common::wait_tenants_ready(
            &mut self.child,
            &log,
            http,
            &self.url,
            tenants,
            READY_WITHIN,
        )
        .await;
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, CPU time and the platform calls of `tenants` over [`QUIET`],
    /// from half a sync interval after a poll of `aligned_on`'s.
    async fn quiet_window(&self, tenants: &[Tenant], aligned_on: &Tenant) -> Quiet {
        let polls = || {
            aligned_on
                .sim
                .stats()
                .by_route
                .get(SYNC_POLL)
                .copied()
                .unwrap_or(0)
        };
        let before = polls();
        let deadline = Instant::now() + 3 * SYNC_INTERVAL;
        while polls() == before {
            assert!(Instant::now() < deadline, "{} is not polled", aligned_on.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(SYNC_INTERVAL / 2).await;
        for tenant in tenants {
            tenant.sim.reset_stats();
        }
        let threads_before = thread_cpu(self.pid());
        let cpu_before = process_cpu_seconds(self.pid());
        let started = Instant::now();
        let mut rss = Vec::new();
        for sample in 1..=RSS_SAMPLES {
            let at = QUIET * sample / RSS_SAMPLES;
            tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
            rss.push(common::resident_mb(self.pid()));
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds(self.pid()) - cpu_before;
        let mut threads = thread_cpu(self.pid());
        for (name, before) in threads_before {
            *threads.entry(name).or_default() -= before;
        }
        let calls = tenants
            .iter()
            .map(|t| (t.id.clone(), t.sim.stats()))
            .collect();
        Quiet {
            tenants: tenants.len(),
            rss_mb: common::median(rss),
            // Not kilobytes, but the same kind of line.
            os_threads: common::status_kb(&self.pid().to_string(), "Threads:").unwrap_or(0),
            cpu_percent: cpu / seconds * 100.0,
            threads,
            minutes: seconds / 60.0,
            calls,
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A panicking bench leaves no daemon behind (a stopped one has been waited on).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a daemon did over a quiet window.
struct Quiet {
    tenants: usize,
    /// Median of the samples.
    rss_mb: f64,
    /// The process's threads at the end of the window (each SQLite connection has one).
    os_threads: u64,
    /// Of one core.
    cpu_percent: f64,
    /// CPU seconds by thread name.
    threads: BTreeMap<String, f64>,
    minutes: f64,
    /// What each tenant's simulator was asked, by tenant id.
    calls: Vec<(String, SimStats)>,
}

impl Quiet {
    fn calls_per_minute(&self, id: &str) -> f64 {
        let (_, stats) = self.calls.iter().find(|(t, _)| t == id).unwrap();
        (stats.api_requests + stats.token_requests) as f64 / self.minutes
    }

    fn routes_per_minute(&self, id: &str) -> BTreeMap<String, f64> {
        let (_, stats) = self.calls.iter().find(|(t, _)| t == id).unwrap();
        stats
            .by_route
            .iter()
            .map(|(route, n)| (route.clone(), *n as f64 / self.minutes))
            .collect()
    }
}

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a `/proc/…/stat` line, in seconds; and the thread's name.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The name is in parentheses and may hold spaces: the fields follow the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from 3 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((name, ticks / clock_ticks()))
}

fn process_cpu_seconds(pid: u32) -> f64 {
    stat_cpu(&format!("/proc/{pid}/stat"))
        .expect("/proc/PID/stat is readable")
        .1
}

/// CPU seconds of every live thread of `pid`, summed by thread name (numbered pool
/// threads under one name).
fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path().join("stat");
        if let Some((name, seconds)) = stat_cpu(&path.display().to_string()) {
            let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
            *by_name.entry(name.to_owned()).or_insert(0.0) += seconds;
        }
    }
    by_name
}

/// The interactive changes of the other tenants while the bulk tenant's jobs run.
struct Load {
    /// Seconds each change took, sorted, and the answers that were not 200, by tenant.
    by_tenant: Vec<(String, Vec<f64>, usize)>,
    /// The bulk tenant's platform calls a minute over the window.
    bulk_calls_per_minute: f64,
    bulk_items: usize,
}

async fn load_window(fleet: &Daemon, tenants: &[Tenant], http: &reqwest::Client) -> Load {
    let bulk = &tenants[BULK_TENANT];
    let agents: Vec<String> = bulk.sim.agents().into_iter().map(|a| a.id).collect();
    let mut jobs = Vec::new();
    for job in 0..BULK_JOBS {
        // Each job changes every agent again, the reason alternating, so nothing is left
        // unchanged.
        let reason = if job % 2 == 0 { "MEETING" } else { "TRAINING" };
        let response = http
            .post(format!(
                "{}/v1/tenants/{}/bulk-transitions",
                fleet.url, bulk.id
            ))
            .json(&json!({"agents": agents, "state": "NOT_READY", "reason": reason}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let body: Value = response.json().await.unwrap();
        jobs.push(body["job_id"].as_str().unwrap().to_owned());
    }
    // Let the jobs take the budget before the first change is timed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    bulk.sim.reset_stats();
    let started = Instant::now();
    let until = started + LOAD;
    let others: Vec<&Tenant> = tenants
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != BULK_TENANT)
        .map(|(_, t)| t)
        .collect();
    let offsets = others.len() as u32;
    let runs = others.iter().enumerate().map(|(i, tenant)| {
        // Spread over the interval, so the 49 do not all ask at once.
        let offset = BETWEEN_CHANGES * i as u32 / offsets;
        interactive(http, &fleet.url, tenant, offset, until)
    });
    let by_tenant = futures::future::join_all(runs).await;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let stats = bulk.sim.stats();
    let mut bulk_items = 0;
    for job in &jobs {
        let view: Value = http
            .get(format!(
                "{}/v1/tenants/{}/bulk-transitions/{job}",
                fleet.url, bulk.id
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        bulk_items += ["succeeded", "failed", "rejected", "unchanged"]
            .iter()
            .filter_map(|k| view[k].as_u64())
            .sum::<u64>() as usize;
    }
    Load {
        by_tenant,
        bulk_calls_per_minute: (stats.api_requests + stats.token_requests) as f64 / minutes,
        bulk_items,
    }
}

/// One change every [`BETWEEN_CHANGES`] on `tenant` until `until`, each to an agent who
/// may change now (on shift, not on a contact): PAUSED, or IDLE for one paused already.
async fn interactive(
    http: &reqwest::Client,
    url: &str,
    tenant: &Tenant,
    offset: Duration,
    until: Instant,
) -> (String, Vec<f64>, usize) {
    tokio::time::sleep(offset).await;
    let mut ticker = tokio::time::interval(BETWEEN_CHANGES);
    let mut waits = Vec::new();
    let mut refused = 0;
    let mut turn = 0;
    loop {
        ticker.tick().await;
        if Instant::now() >= until {
            break;
        }
        let now = tenant.sim.clock().now();
        let free: Vec<_> = tenant
            .sim
            .agents()
            .into_iter()
            .filter(|a| a.on_shift_at(now) && !matches!(a.state.as_str(), "ON_CONTACT" | "ACW"))
            .collect();
        let Some(agent) = free.get(turn % free.len().max(1)) else {
            continue;
        };
        turn += 1;
        let target = if agent.state == "PAUSED" {
            "IDLE"
        } else {
            "PAUSED"
        };
        let asked = Instant::now();
        let response = http
            .post(format!(
                "{url}/v1/tenants/{}/agents/{}/transitions",
                tenant.id, agent.id
            ))
            .json(&json!({"state": target}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let _ = response.bytes().await;
        waits.push(asked.elapsed().as_secs_f64());
        if status != 200 {
            refused += 1;
        }
    }
    waits.sort_by(f64::total_cmp);
    (tenant.id.clone(), waits, refused)
}

fn p95(sorted: &[f64]) -> f64 {
    sorted[(sorted.len() * 95).div_ceil(100) - 1]
}

fn report_memory(alone: &Quiet, fleet: &Quiet, peak_mb: f64) {
    let per_tenant = (fleet.rss_mb - alone.rss_mb) / (fleet.tenants - alone.tenants) as f64;
    println!(
        "resident memory at rest: {:.1} MB with {} tenants, {:.1} MB with one: {per_tenant:.2} MB \
         per further tenant (reported, no target); peak through the bulk load {peak_mb:.1} MB; \
         {} threads with {} tenants, {} with one",
        fleet.rss_mb,
        fleet.tenants,
        alone.rss_mb,
        fleet.os_threads,
        fleet.tenants,
        alone.os_threads
    );
}

fn report_cpu(alone: &Quiet, fleet: &Quiet) {
    println!(
        "CPU at rest over {:.0} s: {:.2} % of one core with {} tenants (one tenant alone: \
         {:.2} %) — target < {TARGET_CPU_PERCENT} %: {}",
        fleet.minutes * 60.0,
        fleet.cpu_percent,
        fleet.tenants,
        alone.cpu_percent,
        common::verdict(fleet.cpu_percent < TARGET_CPU_PERCENT)
    );
    let mut threads: Vec<_> = fleet.threads.iter().collect();
    threads.sort_by(|a, b| b.1.total_cmp(a.1));
    let seconds = fleet.minutes * 60.0;
    let shown: Vec<String> = threads
        .iter()
        .take(6)
        .map(|(name, cpu)| format!("{name} {:.2} %", *cpu / seconds * 100.0))
        .collect();
    println!(
        "  by thread (alive through the window): {}",
        shown.join(", ")
    );
}

fn report_calls(alone: &Quiet, fleet: &Quiet) {
    let id = &alone.calls[0].0;
    let (by_itself, among) = (alone.calls_per_minute(id), fleet.calls_per_minute(id));
    let difference = among / by_itself - 1.0;
    println!(
        "platform calls of tenant {id} a minute: {by_itself:.1} alone, {among:.1} among {} \
         ({:+.1} %) — target equal within ±{:.0} %: {}",
        fleet.tenants,
        difference * 100.0,
        CALLS_TOLERANCE * 100.0,
        common::verdict(difference.abs() <= CALLS_TOLERANCE)
    );
    let (alone_routes, fleet_routes) = (alone.routes_per_minute(id), fleet.routes_per_minute(id));
    let mut routes: Vec<&String> = alone_routes.keys().chain(fleet_routes.keys()).collect();
    routes.sort();
    routes.dedup();
    for route in routes {
        let (a, f) = (
            alone_routes.get(route).copied().unwrap_or(0.0),
            fleet_routes.get(route).copied().unwrap_or(0.0),
        );
        println!(
            "  {route}: {a:.1}/min alone, {f:.1}/min among {}",
            fleet.tenants
        );
    }
    let all: Vec<f64> = fleet
        .calls
        .iter()
        .map(|(t, _)| fleet.calls_per_minute(t))
        .collect();
    println!(
        "  every tenant among {}: {:.1} to {:.1} a minute (median {:.1})",
        fleet.tenants,
        all.iter().copied().fold(f64::INFINITY, f64::min),
        all.iter().copied().fold(0.0, f64::max),
        common::median(all.clone())
    );
}

fn report_load(load: &Load) {
    println!(
        "bulk tenant {}: {BULK_JOBS} jobs of {AGENTS} changes; {:.0} platform calls a minute \
         through the window (budget {PER_MINUTE}), {} items settled by its end",
        format_args!("t{:02}", BULK_TENANT + 1),
        load.bulk_calls_per_minute,
        load.bulk_items
    );
    for (id, waits, refused) in &load.by_tenant {
        println!(
            "  {id}: p50 {:.3} s, p95 {:.3} s, max {:.3} s ({} changes, {refused} not 200)",
            common::median(waits.clone()),
            p95(waits),
            waits.last().unwrap(),
            waits.len()
        );
    }
    let worst = load
        .by_tenant
        .iter()
        .map(|(_, waits, _)| p95(waits))
        .fold(0.0, f64::max);
    let mut all: Vec<f64> = load.by_tenant.iter().flat_map(|t| t.1.clone()).collect();
    all.sort_by(f64::total_cmp);
    println!(
        "interactive change on each of the {} other tenants, one every {} s each, while the \
         bulk tenant is saturated: worst tenant's p95 {worst:.3} s (all changes: p95 {:.3} s, \
         max {:.3} s, {} changes) — target < {TARGET_P95_S} s: {}",
        load.by_tenant.len(),
        BETWEEN_CHANGES.as_secs(),
        p95(&all),
        all.last().unwrap(),
        all.len(),
        common::verdict(worst < TARGET_P95_S)
    );
}
