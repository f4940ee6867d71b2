//! Many tenants on SQLite in one process (#56, item 4): `wfmd serve` as a child process
//! with 200 tenants (`WFMD_BENCH_SQLITE_TENANTS`) of 20 agents each, every tenant on
//! one simulated platform in this process (agents quiet), state sync and the live
//! pollers on, each tenant its own SQLite file. After every tenant is ready and the
//! start-up work has settled, it reads the daemon's threads (by name) and resident
//! memory over a quiet window, and compares with a daemon serving one tenant alone.
//! Both are scraped (`/metrics`) every 15 s meanwhile, as by Prometheus.
//!
//! A bench of its own rather than a part of `benches/fleet.rs`: that one runs
//! PostgreSQL instances that lead and hand over tenants, and takes minutes before its
//! first figure; this one needs neither a database server nor a second instance.
//!
//! Why threads: sqlx's SQLite driver runs every open connection on a thread of its own,
//! so a tenant costs a thread per connection it keeps open. Before #56 a tenant kept
//! five at rest: its writer, and the readers and housekeeping writer its start had
//! opened (the pool hands out its idle connections oldest first, so a steady trickle
//! of reads kept every reader in use now and then, none idle for its ten minutes). A
//! tenant needs two at rest: the writer (every write goes through it, several a minute
//! at rest with the pollers on) and one reader (its pollers read every second or two).
//! Exports, housekeeping and further readers open when needed and close once not. A
//! second reader was kept until 2026-11-29: with one, 50 tenants had reopened 14
//! connections a second, two pollers' reads meeting; the bench now counts the
//! connections opened at rest, to see that one reader does not cost that again.
//!
//! Targets:
//! - threads with 200 tenants at rest: at most 2.1 per tenant beyond one tenant's
//!   daemon: two connections' threads, and a tenth for a further reader or the
//!   housekeeping writer caught at work;
//! - resident memory per tenant beyond the first: < 1 MB, the figure #56 sets for a
//!   tenant at rest on PostgreSQL: an instance that holds a thousand tenants at rest
//!   in a gigabyte leaves the machine's memory to the work. SQLite gets no looser
//!   target: its tenants pay for their connections, but nothing else of a tenant at
//!   rest depends on the backend. Measured with heaptrack before #56's memory work
//!   (2.6 MB a tenant): its three connections held about 0.84 MB (parsed schema,
//!   prepared statements, the first block of the page cache and lookaside memory,
//!   about 0.28 MB each), its own HTTP client about 0.3 MB, its API routes 0.17 MB,
//!   its workers 0.2 MB, its lookup caches 0.13 MB, the live feed's ring 0.15 MB,
//!   and the rest (about 0.5 MB) was the threads' stacks and freed memory glibc's
//!   malloc arenas kept; docs/tenants-and-instances.md has the figures since;
//! - CPU at rest, and the SQLite connections opened over the window: reported (the
//!   tenants' pollers and sync), to see that fewer connections kept do not cost CPU in
//!   reopening.
//!
//! Run: `cargo bench --bench sqlite_tenants`; about five minutes on a 2-core machine.
//! Linux only: reads /proc.

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wfmd::sim::SimConfig;

const DEFAULT_TENANTS: usize = 200;
const AGENTS: usize = 20;
/// After every tenant is ready: the first polls are made, the schedule books fill,
/// the start's housekeeping ends and its connections close.
const SETTLE: Duration = Duration::from_secs(60);
/// Memory and CPU at rest are measured over this window.
const QUIET: Duration = Duration::from_secs(30);
const RSS_SAMPLES: u32 = 6;
/// The daemon's threads are listed this often over the window, to count the SQLite
/// connections opened in it (each runs on a new thread). A connection open for less
/// than this may be missed: the count is a floor.
const WATCH_EVERY: Duration = Duration::from_millis(20);
/// `/metrics` is scraped this often from the rest's start, as by Prometheus at its
/// usual interval: what a scrape costs is part of a tenant at rest.
const SCRAPE_EVERY: Duration = Duration::from_secs(15);
/// A daemon not ready after this long is a failed run.
const READY_WITHIN: Duration = Duration::from_secs(600);
const CLIENT_ID: &str = "bench-sqlite";
const CLIENT_SECRET: &str = "bench-sqlite-secret";

const TARGET_THREADS_PER_TENANT: f64 = 2.1;
const TARGET_MB_PER_TENANT: f64 = 1.0;

fn main() {
    let tenants: usize = std::env::var("WFMD_BENCH_SQLITE_TENANTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_TENANTS);
    common::runtime().block_on(bench(tenants));
}

async fn bench(count: usize) {
    let platform = common::SimulatedPlatform::start(SimConfig {
        agents: AGENTS,
        activity: false,
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        ..SimConfig::default()
    })
    .await;
    let http = wfmd::http_client().unwrap();

    let alone = Daemon::start(1, &platform, &http).await;
    let alone_rest = alone.at_rest().await;
    drop(alone);

    let started = Instant::now();
    let fleet = Daemon::start(count, &platform, &http).await;
    let ready_after = started.elapsed();
    let fleet_rest = fleet.at_rest().await;
    drop(fleet);

    let beyond = (count - 1).max(1) as f64;
    let threads_per_tenant = (fleet_rest.threads as f64 - alone_rest.threads as f64) / beyond;
    let mb_per_tenant = (fleet_rest.rss_mb - alone_rest.rss_mb) / beyond;
    println!(
        "\n{count} tenants of {AGENTS} agents on SQLite, state sync and live pollers on, \
         platform quiet; all ready {:.0} s after the start",
        ready_after.as_secs_f64()
    );
    println!(
        "threads at rest: {} with {count} tenants, {} with one: {threads_per_tenant:.2} per \
         further tenant — target <= {TARGET_THREADS_PER_TENANT}: {}",
        fleet_rest.threads,
        alone_rest.threads,
        common::verdict(threads_per_tenant <= TARGET_THREADS_PER_TENANT)
    );
    println!("  by name: {}", by_name(&fleet_rest.by_name));
    println!(
        "resident memory at rest: {:.1} MB with {count} tenants, {:.1} MB with one: \
         {mb_per_tenant:.2} MB per further tenant — target < {TARGET_MB_PER_TENANT} MB: {}",
        fleet_rest.rss_mb,
        alone_rest.rss_mb,
        common::verdict(mb_per_tenant < TARGET_MB_PER_TENANT)
    );
    println!(
        "CPU at rest over {} s: {:.2} % of one core with {count} tenants, {:.2} % with one \
         (reported)",
        QUIET.as_secs(),
        fleet_rest.cpu_percent,
        alone_rest.cpu_percent
    );
    println!(
        "  SQLite connections opened at rest: {:.2} a second with {count} tenants, {:.2} \
         with one (reported; threads seen over the window, listed every {} ms)",
        fleet_rest.sqlite_opened_per_second,
        alone_rest.sqlite_opened_per_second,
        WATCH_EVERY.as_millis()
    );
    println!(
        "  both scraped every {} s from the rest's start; the slowest scrape {:.2} s with \
         {count} tenants, {:.2} s with one",
        SCRAPE_EVERY.as_secs(),
        fleet_rest.slowest_scrape.as_secs_f64(),
        alone_rest.slowest_scrape.as_secs_f64()
    );
}

fn by_name(threads: &BTreeMap<String, usize>) -> String {
    threads
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `wfmd serve` of `tenants` tenants (`t1` … `tN`, all on the one simulator), a child
/// process over a fresh folder.
struct Daemon {
    child: Child,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A daemon at rest.
struct Rest {
    threads: usize,
    by_name: BTreeMap<String, usize>,
    /// The median of the window's samples.
    rss_mb: f64,
    cpu_percent: f64,
    /// SQLite connections opened a second over the window (at least).
    sqlite_opened_per_second: f64,
    slowest_scrape: Duration,
}

impl Daemon {
    async fn start(
        tenants: usize,
        platform: &common::SimulatedPlatform,
        http: &reqwest::Client,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let file = config_file(dir.path(), port, tenants, platform);
        let log = std::fs::File::create(dir.path().join("wfmd.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_wfmd"));
        for (key, _) in std::env::vars() {
            if key.starts_with("WFMD_") {
                command.env_remove(key);
            }
        }
        for n in 1..=tenants {
            command.env(
                format!("WFMD_TENANTS__T{n}__CXONE__CLIENT_SECRET"),
                CLIENT_SECRET,
            );
        }
        let child = command
            .args(["--config", file.to_str().unwrap(), "serve"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let log = dir.path().join("wfmd.log");
        let mut daemon = Daemon {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: http.clone(),
            _dir: dir,
        };
        let url = daemon.url.clone();
        common::wait_tenants_ready(&mut daemon.child, &log, http, &url, tenants, READY_WITHIN)
            .await;
        daemon
    }

    /// Threads, memory and CPU after [`SETTLE`], over [`QUIET`].
    async fn at_rest(&self) -> Rest {
        let pid = self.child.id();
        let slowest_scrape = std::cell::Cell::new(Duration::ZERO);
        let measuring = async {
            tokio::time::sleep(SETTLE).await;
            let cpu_before = common::cpu_seconds(pid);
            let started = Instant::now();
            let mut threads = Threads::default();
            threads.look(pid);
            let at_start = threads.sqlite();
            let mut rss = Vec::new();
            let mut watch = tokio::time::interval(WATCH_EVERY);
            while rss.len() < RSS_SAMPLES as usize {
                watch.tick().await;
                threads.look(pid);
                if started.elapsed() >= QUIET * (rss.len() as u32 + 1) / RSS_SAMPLES {
                    rss.push(common::resident_mb(pid));
                }
            }
            let cpu = common::cpu_seconds(pid) - cpu_before;
            let elapsed = started.elapsed().as_secs_f64();
            (
                rss,
                cpu / elapsed * 100.0,
                (threads.sqlite() - at_start) as f64 / elapsed,
            )
        };
        let scraping = async {
            loop {
                let asked = Instant::now();
                let (_, took, _) = common::scrape(&self.http, &self.url).await;
                slowest_scrape.set(slowest_scrape.get().max(took));
                tokio::time::sleep_until((asked + SCRAPE_EVERY).into()).await;
            }
        };
        let (rss, cpu_percent, sqlite_opened_per_second) = tokio::select! {
            measured = measuring => measured,
            () = scraping => unreachable!("it scrapes until the measuring ends"),
        };
        let by_name = thread_names(pid);
        Rest {
            threads: by_name.values().sum(),
            by_name,
            rss_mb: common::median(rss),
            cpu_percent,
            sqlite_opened_per_second,
            slowest_scrape: slowest_scrape.get(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_file(
    dir: &Path,
    port: u16,
    tenants: usize,
    platform: &common::SimulatedPlatform,
) -> std::path::PathBuf {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_timeout = \"5s\"\n\
         [database]\nurl = \"sqlite://{}\"\n\
         [sync]\nenabled = true\n[live]\nenabled = true\n[log]\nlevel = \"warn\"\n",
        dir.join("wfmd.db").display()
    );
    for n in 1..=tenants {
        text.push_str(&format!(
            "[[tenants]]\nid = \"t{n}\"\n[tenants.cxone]\n\
             base_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             requests_per_minute = 6000\n",
            platform.config.cxone.base_url, platform.config.cxone.token_url
        ));
    }
    let file = dir.join("wfmd.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The threads of a process seen so far, by thread id: each thread's name is read once.
#[derive(Default)]
struct Threads(HashMap<String, bool>);

impl Threads {
    /// Notes the threads `pid` has now.
    fn look(&mut self, pid: u32) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return;
        };
        for task in tasks.flatten() {
            let tid = task.file_name().to_string_lossy().into_owned();
            self.0.entry(tid).or_insert_with(|| {
                // A thread gone before its name is read counts as not SQLite's.
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|name| name.starts_with(SQLITE_THREAD))
            });
        }
    }

    /// How many of the threads seen were SQLite connections'.
    fn sqlite(&self) -> usize {
        self.0.values().filter(|&&sqlite| sqlite).count()
    }
}

/// The name (as `/proc` shortens it) of the thread sqlx runs a SQLite connection on.
const SQLITE_THREAD: &str = "sqlx-sqlite-wor";

/// The threads of `pid` by name, numbered pool threads under one name.
fn thread_names(pid: u32) -> BTreeMap<String, usize> {
    let mut by_name = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        let name = name
            .trim_end()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        *by_name.entry(name.to_owned()).or_insert(0) += 1;
    }
    by_name
}
