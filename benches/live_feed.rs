//! Live feed benchmarks (#11): the real `wfmd serve` binary against the in-process
//! simulator (2,000 agents, 250 queues; 40 skills polled), no API tokens (loopback), with
//! its clients in this process.
//!
//! - `GET /v1/live`: the snapshot of 2,000 agents, 40 skill and 250 queue tiles, asked
//!   one request after another on a kept-alive connection, warm (after 100 untimed
//!   requests), no feed client connected. Target: median and p95 < 20 ms.
//! - Platform calls a minute with 0, 1 and 1,000 feed clients connected, each counted by
//!   the simulator over a 30 s window that starts 5 s after a sync poll, after one such
//!   window that lets the start settle (no change is made meanwhile; sync, skill and
//!   queue polls run, their periods 10 s and 15 s dividing the window). Target:
//!   identical, route by route (clients never cause a call). Sync polls the simulator
//!   refused as too early and wfmd sent again (a busy machine delays one poll more
//!   than the next, with no client too) are shown and left out.
//! - Fan-out: 1,000 SSE and 100 WebSocket clients, 50 changes a second through
//!   `POST /v1/agents/{id}/transitions` for 30 s. Commit-to-client latency of each
//!   `agent.state_changed` the changes committed: from the event's `timestamp` (taken
//!   by the engine just before its write transaction, so the figure includes the commit
//!   itself) to its arrival at the client, on the same clock. Target: p99 < 250 ms; no
//!   lost event (each client receives every outbox event after its snapshot, in order,
//!   as the outbox holds them after the daemon stopped; a resync snapshot counts as a
//!   loss); resident memory of wfmd (`/proc/PID/status`) grows < 30 MB from before the
//!   first client connected to the end of the run. Beside it, on stderr, where the time
//!   goes: the answer time of the changes, the latency to the first client each event
//!   reached, and the same changes for 10 s with one SSE client (before the others).
//!
//! Run: `cargo bench --bench live_feed` (about five minutes). Linux only (reads /proc).
//! Each process holds over 1,100 sockets: `ulimit -n` must allow 2,048 (checked first;
//! the daemon inherits the limit). The bench process plays every client on the same two
//! cores as the daemon, so the latency figure is pessimistic.

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wfmd::on;

use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_util::sync::CancellationToken;
use wfmd::sim::SimConfig;

const AGENTS: usize = 2_000;
const SKILLS: usize = 40;
const QUEUES: usize = 250;
const SSE_CLIENTS: usize = 1_000;
const WS_CLIENTS: usize = 100;
const CHANGES_PER_SECOND: u64 = 50;
const RUN: Duration = Duration::from_secs(30);
const SINGLE_RUN: Duration = Duration::from_secs(10);
const WINDOW: Duration = Duration::from_secs(30);
const SNAPSHOT_REQUESTS: usize = 1_000;
const CONNECTING_AT_ONCE: usize = 25;
const CHANGED_AGENTS: usize = 250;
const TARGET_SNAPSHOT_MS: f64 = 20.0;
const TARGET_P99_MS: f64 = 250.0;
const TARGET_GROWTH_MB: f64 = 30.0;
const FILES_NEEDED: u64 = 2_048;
const DEADLINE: Duration = Duration::from_secs(120);

fn main() {
    check_open_files();
    common::runtime().block_on(run());
}

async fn run() {
    let platform = common::SimulatedPlatform::start(SimConfig {
        agents: AGENTS,
        queues: QUEUES,
        // The tenant's limit out of the way: what is counted is what wfmd asks.
        requests_per_minute: 0,
        ..SimConfig::default()
    })
    .await;
    let skills: Vec<String> = platform
        .sim
        .skills()
        .into_iter()
        .take(SKILLS)
        .map(|s| s.id)
        .collect();
    let mut daemon = Daemon::spawn(&platform, &skills).await;
    let http = wfmd::http_client().unwrap();
    daemon.wait_for_board(&http).await;

    // 1. The snapshot, warm, nobody connected.
    let (median_ms, p95_ms, bytes) = snapshot_latency(&http, &daemon.address).await;

    // 2. The same changes with a single client, for comparison: what the commit path
    // and the feed cost without the fan-out.
    let agents = movable_agents(&platform.sim);
    let (leave, stays) = (CancellationToken::new(), CancellationToken::new());
    let received = Arc::new(AtomicU64::new(0));
    let mut single = JoinSet::new();
    connect(&leave, &mut single, &http, &daemon.address, 1, 0, &received).await;
    let single_responses = drive_changes(&http, &daemon.address, &agents, SINGLE_RUN).await;
    settle(&received).await;
    leave.cancel();
    let single_log = single.join_next().await.unwrap().unwrap();
    let mut single_ms: Vec<i64> = single_log.latencies_ms.iter().map(|(_, ms)| *ms).collect();
    single_ms.sort_unstable();

    // 3. Platform calls with 0, 1 and 1,000 clients.
    let rss_idle = daemon.resident_mb();
    let mut clients = JoinSet::new();
    // A first window settles the start (the sync's first polls of 2,000 agents); its
    // count is shown, not compared.
    let settling = calls_in_window(&platform.sim).await;
    let calls_none = calls_in_window(&platform.sim).await;
    connect(
        &stays,
        &mut clients,
        &http,
        &daemon.address,
        1,
        0,
        &received,
    )
    .await;
    let calls_one = calls_in_window(&platform.sim).await;
    connect(
        &stays,
        &mut clients,
        &http,
        &daemon.address,
        SSE_CLIENTS - 1,
        0,
        &received,
    )
    .await;
    let calls_many = calls_in_window(&platform.sim).await;
    let rss_sse = daemon.resident_mb();

    // 4. Fan-out: 100 WebSocket clients more, then 50 changes a second.
    connect(
        &stays,
        &mut clients,
        &http,
        &daemon.address,
        0,
        WS_CLIENTS,
        &received,
    )
    .await;
    let rss_connected = daemon.resident_mb();
    let responses = drive_changes(&http, &daemon.address, &agents, RUN).await;
    settle(&received).await;
    let rss_end = daemon.resident_mb();
    daemon.stop();
    let mut logs = Vec::new();
    while let Some(log) = clients.join_next().await {
        logs.push(log.unwrap());
    }
    let outbox = outbox_ids(&daemon.database).await;
    let fanout = judge(&logs, &outbox);

    println!(
        "GET /v1/live, {AGENTS} agents, {SKILLS} skills, {QUEUES} queues ({:.0} KB), \
         {SNAPSHOT_REQUESTS} warm requests: median {median_ms:.2} ms, p95 {p95_ms:.2} ms \
         (target < {TARGET_SNAPSHOT_MS} ms) {}",
        bytes as f64 / 1024.0,
        common::verdict(p95_ms < TARGET_SNAPSHOT_MS && median_ms < TARGET_SNAPSHOT_MS)
    );
    let per_minute =
        |calls: &Calls| calls.accepted().values().sum::<u64>() as f64 * 60.0 / WINDOW.as_secs_f64();
    println!(
        "platform calls a minute with 0 / 1 / {SSE_CLIENTS} feed clients: {:.0} / {:.0} / {:.0} \
         (target identical) {}",
        per_minute(&calls_none),
        per_minute(&calls_one),
        per_minute(&calls_many),
        common::verdict(
            calls_none.accepted() == calls_one.accepted()
                && calls_one.accepted() == calls_many.accepted()
        )
    );
    for (name, calls) in [
        ("0 (settling, not compared)", &settling),
        ("0", &calls_none),
        ("1", &calls_one),
        ("1000", &calls_many),
    ] {
        eprintln!(
            "  calls in {WINDOW:?} with {name} clients: {:?}; sync polls refused as too \
             early (sent again, not compared): {}",
            calls.by_route, calls.too_early
        );
    }
    let pct = |v: &[u64], q: usize| v[(v.len() * q).div_ceil(100) - 1];
    eprintln!(
        "with one SSE client, {CHANGES_PER_SECOND} changes/s for {SINGLE_RUN:?}: {} answered \
         200 (others {:?}), answer p50 {} ms, p99 {} ms; commit-to-client p50 {} ms, p99 {} ms",
        single_responses.ok,
        single_responses.other,
        pct(&single_responses.answer_ms, 50),
        pct(&single_responses.answer_ms, 99),
        single_ms.get(single_ms.len() / 2).copied().unwrap_or(-1),
        single_ms
            .get((single_ms.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(-1),
    );
    let answer = &responses.answer_ms;
    eprintln!(
        "changes: {} answered 200, others {:?}; answer p50 {} ms, p99 {} ms; \
         commit-to-first-client p99 {} ms",
        responses.ok,
        responses.other,
        answer[answer.len() / 2],
        answer[(answer.len() * 99).div_ceil(100) - 1],
        fanout.first_p99_ms,
    );
    println!(
        "fan-out to {SSE_CLIENTS} SSE + {WS_CLIENTS} WebSocket clients, {CHANGES_PER_SECOND} \
         changes/s for {RUN:?}: commit-to-client p99 {} ms, median {} ms, worst {} ms over {} \
         deliveries (target p99 < {TARGET_P99_MS} ms) {}",
        fanout.p99_ms,
        fanout.median_ms,
        fanout.worst_ms,
        fanout.deliveries,
        common::verdict((fanout.p99_ms as f64) < TARGET_P99_MS && fanout.deliveries > 0)
    );
    println!(
        "lost events: {} of {} deliveries owed ({} clients, each every outbox event after \
         its snapshot) missing, extra or out of order; {} resync snapshots, {} clients \
         closed early (target 0) {}",
        fanout.lost,
        fanout.owed,
        logs.len(),
        fanout.resyncs,
        fanout.closed_early,
        common::verdict(
            fanout.lost == 0
                && fanout.resyncs == 0
                && fanout.closed_early == 0
                && logs.len() == SSE_CLIENTS + WS_CLIENTS
        )
    );
    println!(
        "wfmd resident memory: {rss_idle:.1} MB before any client, {rss_sse:.1} MB with \
         {SSE_CLIENTS} SSE clients, {rss_connected:.1} MB with {} connected, {rss_end:.1} MB \
         after the run: growth {:+.1} MB (target < \
         {TARGET_GROWTH_MB} MB) {}",
        SSE_CLIENTS + WS_CLIENTS,
        rss_end - rss_idle,
        common::verdict(rss_end - rss_idle < TARGET_GROWTH_MB)
    );
}

/// Fails early, and clearly, when this process may not hold every client's socket.
fn check_open_files() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft: u64 = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        soft >= FILES_NEEDED,
        "the open-file limit is {soft}; {} clients need at least {FILES_NEEDED}: run \
         `ulimit -n {FILES_NEEDED}` (or more) first",
        SSE_CLIENTS + WS_CLIENTS
    );
}

/// `wfmd serve` on a free loopback port, against the simulator.
struct Daemon {
    child: Child,
    address: String,
    database: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    async fn spawn(platform: &common::SimulatedPlatform, skills: &[String]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("wfmd.db");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = &platform.config.cxone;
        let secret = c.client_secret.expose_secret().to_owned();
        let child = Command::new(env!("CARGO_BIN_EXE_wfmd"))
            .arg("serve")
            .current_dir(dir.path())
            .env("WFMD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "WFMD_DATABASE__URL",
                format!("sqlite://{}", database.display()),
            )
            .env("WFMD_CXONE__BASE_URL", &c.base_url)
            .env("WFMD_CXONE__TOKEN_URL", &c.token_url)
            .env("WFMD_CXONE__CLIENT_ID", &c.client_id)
            .env("WFMD_CXONE__CLIENT_SECRET", secret)
            // The most wfmd accepts: 50 changes a second (3,000 a minute) and the polls
            // fit inside it.
            .env("WFMD_CXONE__REQUESTS_PER_MINUTE", "6000")
            .env("WFMD_LIVE__SKILLS", serde_json::to_string(skills).unwrap())
            .env("WFMD_LIVE__SKILL_INTERVAL", "15s")
            .env("WFMD_LIVE__QUEUE_INTERVAL", "15s")
            // The schedule book spreads its refreshes over the hour: calls that are
            // not periodic within a window would blur the comparison of windows.
            .env("WFMD_COMPLIANCE__ENABLED", "false")
            .env("WFMD_LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Daemon {
            child,
            address: format!("127.0.0.1:{port}"),
            database,
            _dir: dir,
        }
    }

    /// Waits until the snapshot holds every agent by name and every tile sampled.
    async fn wait_for_board(&mut self, http: &reqwest::Client) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("wfmd exited: {status}");
            }
            let ready = match http
                .get(format!("http://{}/v1/live", self.address))
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => {
                    let board: serde_json::Value = response.json().await.unwrap();
                    let named = board["agents"].as_array().is_some_and(|a| {
                        a.len() == AGENTS && a.iter().all(|a| a["name"].is_string())
                    });
                    named
                        && board["skills"].as_array().map(Vec::len) == Some(SKILLS)
                        && board["queues"].as_array().map(Vec::len) == Some(QUEUES)
                        && board["skills_polled_at"].is_string()
                        && board["queues_polled_at"].is_string()
                }
                _ => false,
            };
            if ready {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "wfmd did not show {AGENTS} agents, {SKILLS} skills and {QUEUES} queues"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn resident_mb(&self) -> f64 {
        common::resident_mb(self.child.id())
    }

    /// SIGTERM, then waits: the feeds end, so every client's stream ends.
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

async fn snapshot_latency(http: &reqwest::Client, address: &str) -> (f64, f64, usize) {
    let url = format!("http://{address}/v1/live");
    let mut bytes = 0;
    let mut times = Vec::with_capacity(SNAPSHOT_REQUESTS);
    for i in 0..100 + SNAPSHOT_REQUESTS {
        let started = Instant::now();
        let response = http.get(&url).send().await.unwrap();
        assert!(response.status().is_success());
        bytes = response.bytes().await.unwrap().len();
        if i >= 100 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    let p95 = times[(times.len() * 95).div_ceil(100) - 1];
    (common::median(times), p95, bytes)
}

/// Platform calls counted by the simulator in one window.
struct Calls {
    by_route: BTreeMap<String, u64>,
    /// Sync polls the simulator refused as sooner than the interval: it measures from
    /// a poll's arrival, wfmd from its sending, so a poll that reaches it later than
    /// the next one does on a busy machine is refused and sent again (with no client
    /// too). They are shown, and left out of the comparison.
    too_early: u64,
}

impl Calls {
    /// The calls by route, without the polls refused as too early.
    fn accepted(&self) -> BTreeMap<String, u64> {
        let mut routes = self.by_route.clone();
        if let Some(polls) = routes.get_mut(SYNC_POLL) {
            *polls -= self.too_early;
        }
        routes
    }
}

/// The state sync's poll, every 10 s.
const SYNC_POLL: &str = "GET /api/v2/analytics/realtime/subscription/{subscriptionId}";

/// Counts the calls of one [`WINDOW`] that starts half a sync period after a sync poll:
/// a poll a loaded machine runs late then still falls on the same side of each end of
/// the window (a window started anywhere saw 3 or 4 polls, whatever the clients).
async fn calls_in_window(sim: &wfmd::sim::Simulator) -> Calls {
    let polls = || sim.stats().by_route.get(SYNC_POLL).copied().unwrap_or(0);
    let last = polls();
    let started = Instant::now();
    while polls() == last {
        assert!(started.elapsed() < DEADLINE, "the state sync does not poll");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = sim.stats();
    tokio::time::sleep(WINDOW).await;
    let after = sim.stats();
    let by_route = after
        .by_route
        .iter()
        .map(|(route, n)| (route.clone(), n - before.by_route.get(route).unwrap_or(&0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    Calls {
        by_route,
        too_early: after.polls_too_early - before.polls_too_early,
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    /// Whether the first snapshot came.
    started: bool,
    /// The id the first snapshot was current to (`None`: the outbox was empty).
    start: Option<u128>,
    /// Durable event ids after the snapshot, in arrival order.
    ids: Vec<u128>,
    /// Commit-to-arrival of each `agent.state_changed` made through the API.
    latencies_ms: Vec<(u128, i64)>,
    /// Snapshots after the first: the client fell behind.
    resyncs: u32,
    /// The daemon closed the feed before it stopped (a `close` message or an error).
    closed_early: bool,
}

/// The head of a feed message; `data` is read only for the change's origin.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    id: Option<&'a str>,
    timestamp: Option<&'a str>,
    #[serde(borrow)]
    data: Option<Data<'a>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    origin: Option<&'a str>,
}

fn event_id(id: &str) -> u128 {
    let hex = id.strip_prefix("evt_").expect("an outbox id starts evt_");
    u128::from_str_radix(hex, 16).expect("an outbox id is hex")
}

impl ClientLog {
    /// Takes one message's JSON (the SSE `data:` or the WebSocket frame) that arrived at
    /// `arrived` (Unix ms); `false` when the feed was closed.
    fn take(&mut self, json: &str, arrived: i64, received: &AtomicU64) -> bool {
        let head: Head = serde_json::from_str(json).expect("a feed message is JSON");
        match head.kind {
            "snapshot" if !self.started => {
                self.started = true;
                self.start = head.id.map(event_id);
            }
            "snapshot" => self.resyncs += 1,
            "close" => {
                self.closed_early = true;
                return false;
            }
            _ => {
                let Some(id) = head.id else { return true };
                self.ids.push(event_id(id));
                received.fetch_add(1, Ordering::Relaxed);
                let from_api = head.data.and_then(|d| d.origin) == Some("api");
                if head.kind == "agent.state_changed"
                    && from_api
                    && let Some(at) = head.timestamp
                {
                    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
                    let id = *self.ids.last().expect("just pushed");
                    self.latencies_ms
                        .push((id, arrived - at.timestamp_millis()));
                }
            }
        }
        true
    }
}

/// Opens `sse` SSE and `ws` WebSocket clients, [`CONNECTING_AT_ONCE`] at a time, each
/// counted once its snapshot has arrived.
async fn connect(
    leave: &CancellationToken,
    clients: &mut JoinSet<ClientLog>,
    http: &reqwest::Client,
    address: &str,
    sse: usize,
    ws: usize,
    received: &Arc<AtomicU64>,
) {
    let kinds: Vec<bool> = std::iter::repeat_n(true, sse)
        .chain(std::iter::repeat_n(false, ws))
        .collect();
    for batch in kinds.chunks(CONNECTING_AT_ONCE) {
        let mut ready = Vec::new();
        for &is_sse in batch {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (address, received) = (address.to_owned(), received.clone());
            if is_sse {
                clients.spawn(sse_client(
                    leave.clone(),
                    http.clone(),
                    address,
                    received,
                    tx,
                ));
            } else {
                clients.spawn(ws_client(address, received, tx));
            }
            ready.push(rx);
        }
        for rx in ready {
            tokio::time::timeout(DEADLINE, rx)
                .await
                .expect("a client got its snapshot in time")
                .expect("a client connected");
        }
    }
}

async fn sse_client(
    leave: CancellationToken,
    http: reqwest::Client,
    address: String,
    received: Arc<AtomicU64>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut ready = Some(ready);
    let mut response = http
        .get(format!("http://{address}/v1/events"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let mut buffer: Vec<u8> = Vec::new();
    let mut scanned: usize = 0;
    loop {
        let chunk = tokio::select! {
            () = leave.cancelled() => return log,
            chunk = response.chunk() => match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return log,
                Err(_) => {
                    log.closed_early = true;
                    return log;
                }
            },
        };
        let arrived = chrono::Utc::now().timestamp_millis();
        buffer.extend_from_slice(&chunk);
        // Events end with a blank line; comments (`: heartbeat`) carry no data.
        while let Some(end) = buffer[scanned.saturating_sub(1)..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|at| at + scanned.saturating_sub(1))
        {
            let event = std::str::from_utf8(&buffer[..end]).unwrap();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    if !log.take(data.trim_start_matches(' '), arrived, &received) {
                        return log;
                    }
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
            }
            buffer.drain(..end + 2);
            scanned = 0;
        }
        scanned = buffer.len();
    }
}

async fn ws_client(
    address: String,
    received: Arc<AtomicU64>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut ready = Some(ready);
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/v1/ws"))
        .await
        .unwrap();
    while let Some(frame) = socket.next().await {
        let arrived = chrono::Utc::now().timestamp_millis();
        match frame {
            Ok(Frame::Text(text)) => {
                if !log.take(text.as_str(), arrived, &received) {
                    return log;
                }
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Ok(Frame::Close(frame)) => {
                // 1001: wfmd is stopping, the end of the run.
                log.closed_early = frame.is_some_and(|f| u16::from(f.code) != 1001);
                return log;
            }
            Ok(_) => {}
            Err(_) => {
                log.closed_early = true;
                return log;
            }
        }
    }
    log
}

/// Agents any change may be made to for the next minutes: on shift, logged in, not on
/// a contact.
fn movable_agents(sim: &wfmd::sim::Simulator) -> Vec<String> {
    let soon = chrono::Utc::now() + chrono::Duration::minutes(5);
    let agents: Vec<String> = sim
        .agents()
        .into_iter()
        .filter(|a| a.on_shift_at(soon) && a.state != "ON_CONTACT" && a.state != "LOGGED_OUT")
        .map(|a| a.id)
        .take(CHANGED_AGENTS)
        .collect();
    assert!(agents.len() >= 50, "only {} movable agents", agents.len());
    agents
}

#[derive(Default)]
struct Responses {
    /// How long each change took to answer, sorted (ms).
    answer_ms: Vec<u64>,
    ok: u64,
    other: BTreeMap<u16, u64>,
}

/// `CHANGES_PER_SECOND` changes for `run`, each on its own task so a slow answer never
/// slows the rate. Alternates NOT_READY and PAUSED so each one changes the agent.
async fn drive_changes(
    http: &reqwest::Client,
    address: &str,
    agents: &[String],
    run: Duration,
) -> Responses {
    let mut ticks = tokio::time::interval(Duration::from_millis(1_000 / CHANGES_PER_SECOND));
    let total = CHANGES_PER_SECOND * run.as_secs();
    let mut calls = JoinSet::new();
    for i in 0..total as usize {
        ticks.tick().await;
        let agent = &agents[i % agents.len()];
        let state = if (i / agents.len()).is_multiple_of(2) {
            "PAUSED"
        } else {
            "NOT_READY"
        };
        let request = http
            .post(format!("http://{address}/v1/agents/{agent}/transitions"))
            .json(&serde_json::json!({ "state": state }));
        calls.spawn(async move {
            let sent = Instant::now();
            let status = request.send().await.map(|r| r.status().as_u16());
            (status, sent.elapsed().as_millis() as u64)
        });
    }
    let mut responses = Responses::default();
    while let Some(answered) = calls.join_next().await {
        let (status, ms) = answered.unwrap();
        responses.answer_ms.push(ms);
        match status {
            Ok(200) => responses.ok += 1,
            Ok(other) => *responses.other.entry(other).or_default() += 1,
            Err(_) => *responses.other.entry(0).or_default() += 1,
        }
    }
    responses.answer_ms.sort_unstable();
    responses
}

/// Waits until the clients have taken nothing more for two seconds.
async fn settle(received: &AtomicU64) {
    let started = Instant::now();
    let mut last = received.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(2) && started.elapsed() < DEADLINE {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = received.load(Ordering::Relaxed);
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
    }
}

/// Every outbox event id in commit order, read from the stopped daemon's database.
async fn outbox_ids(db: &std::path::Path) -> Vec<u128> {
    let store = wfmd::store::Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let ids: Vec<String> = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT id FROM outbox_events ORDER BY seq"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    store.close().await;
    ids.iter().map(|id| event_id(id)).collect()
}

struct Fanout {
    /// p99 over events of the latency to the first client each reached.
    first_p99_ms: i64,
    p99_ms: i64,
    median_ms: i64,
    worst_ms: i64,
    deliveries: usize,
    owed: usize,
    lost: usize,
    resyncs: u32,
    closed_early: usize,
}

/// Each client's events against the outbox after its snapshot; the latencies of all.
fn judge(logs: &[ClientLog], outbox: &[u128]) -> Fanout {
    let (mut lost, mut owed) = (0, 0);
    for log in logs {
        let from = match log.start {
            None => 0,
            Some(id) => {
                outbox
                    .iter()
                    .position(|e| *e == id)
                    .expect("a snapshot's id is in the outbox")
                    + 1
            }
        };
        let expected = &outbox[from..];
        owed += expected.len();
        // Missing, extra or reordered: each position that differs is one lost event.
        lost += expected
            .iter()
            .zip(&log.ids)
            .filter(|(want, got)| want != got)
            .count()
            + expected.len().abs_diff(log.ids.len());
    }
    let mut latencies: Vec<i64> = logs
        .iter()
        .flat_map(|l| l.latencies_ms.iter().map(|(_, ms)| *ms))
        .collect();
    // Where the time goes: to the first client an event reaches (commit and the
    // feed's read of the outbox) or from there to the others (the fan-out itself).
    let mut first: std::collections::HashMap<u128, i64> = std::collections::HashMap::new();
    for (id, ms) in logs.iter().flat_map(|l| l.latencies_ms.iter()) {
        let at = first.entry(*id).or_insert(*ms);
        *at = (*at).min(*ms);
    }
    let mut firsts: Vec<i64> = first.into_values().collect();
    firsts.sort_unstable();
    let first_p99 = firsts
        .get((firsts.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(i64::MAX);
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(i64::MAX)
    };
    Fanout {
        first_p99_ms: first_p99,
        p99_ms: at(0.99),
        median_ms: at(0.5),
        worst_ms: latencies.last().copied().unwrap_or(i64::MAX),
        deliveries: latencies.len(),
        owed,
        lost,
        resyncs: logs.iter().map(|l| l.resyncs).sum(),
        closed_early: logs.iter().filter(|l| l.closed_early).count(),
    }
}
