//! The supervisor console under load (#55): wfmd in this process on the simulator with
//! 2,000 agents (state sync and the live figures on, as `serve --simulate` runs), and
//! the real-time adherence page's side of it.
//!
//! - Fan-out to open RTA pages: 100 feed clients (WebSocket, as the page opens it) that
//!   parse every message as the page does and keep the rows of `adherence.changed` by
//!   agent; no Chromium tab here (100 browsers do not fit two cores; the browser's side
//!   is the two figures below). `CHANGES` state changes through the API, a few a
//!   second; for each, the time from wfmd recording it (the `agent.state_changed`
//!   event's `timestamp`) to each client holding the agent's new row. Target: p95 < 1 s
//!   over every (change, client) pair, and 0 extra platform calls: the simulator's calls
//!   by route over a window with no client and over one with the 100 (no change in
//!   either) are the same, route by route, each window `CYCLES` whole poll cycles
//!   (every poll runs each 15 s); the schedule book's per-agent refreshes, spread
//!   over the hour whoever watches, are shown and left out of the comparison.
//! - First render of `/rta` with 2,000 agents in headless Chromium (chromedriver on the
//!   PATH): from the start of navigation to the page saying it is drawn
//!   (`data-ready-ms`). Target < 1 s; the median of `RENDERS` loads.
//! - JS heap of an `/rta` page kept open while agents change state: `performance.memory`
//!   every minute, as the page used it and after a full collection (`gc()`, exposed by
//!   `--js-flags=--expose-gc`). Target: under 150 MB as used, and no growth after the
//!   first 10 minutes (after collection, the last sample within 5 % of the one at
//!   10 min). The hour is shortened to `WFMD_BENCH_HEAP_MINUTES` (default 12) of
//!   changes through the API, one after another with `HEAP_CHANGES_PER_SECOND` as their
//!   most (the simulated agents make none of their own; the rate reached is printed
//!   beside the figure); under 11 minutes the growth is judged from the middle of the
//!   run instead of from 10 min.
//!
//! Run: `cargo bench --bench console` (about 15 minutes by default). Prints each figure
//! beside its target; asserts no timing.

// A bench drives the browser from outside, in no tenant's scope: it spawns plainly.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fantoccini::{Client, ClientBuilder};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_util::sync::CancellationToken;
use wfmd::App;
use wfmd::sim::SimConfig;

const AGENTS: usize = 2_000;
const CLIENTS: usize = 100;
const CHANGES: usize = 100;
const CHANGES_PER_SECOND: u64 = 5;
/// Whole poll cycles in each of the two call windows (a minute at `POLL_EVERY`).
const CYCLES: u32 = 4;
const RENDERS: usize = 5;
const HEAP_CHANGES_PER_SECOND: u64 = 5;
const TARGET_P95: Duration = Duration::from_secs(1);
const TARGET_RENDER_MS: f64 = 1_000.0;
const TARGET_HEAP_MB: f64 = 150.0;
const STATES: [&str; 3] = ["NOT_READY", "PAUSED", "READY"];
/// The periodic polls (skills, queues, state sync), every 15 s here: a window of whole
/// cycles holds as many of each, whatever the clients do.
const POLL_EVERY: Duration = Duration::from_secs(15);
/// Not a route: the subscription polls refused as too early, shown beside the routes.
const TOO_EARLY: &str = "(of which refused as too early) subscription polls";
/// The schedule book's refreshes, per agent and spread over the hour whoever watches:
/// shown, not compared (no window holds the same number of them).
const SPREAD: [&str; 2] = [
    "GET /api/v2/schedules/users/{userId}",
    "GET /api/v2/breaks/users/{userId}/status",
];

fn main() {
    common::runtime().block_on(run());
}

async fn run() {
    let platform = common::SimulatedPlatform::start(SimConfig {
        agents: AGENTS,
        requests_per_minute: 0,
        ..SimConfig::default()
    })
    .await;
    let mut config = platform.config.clone();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.live.enabled = true;
    config.live.skill_interval = POLL_EVERY;
    config.live.queue_interval = POLL_EVERY;
    config.sync.enabled = true;
    // State sync polls at the figures' cadence too, so that a window of whole skill
    // poll cycles holds as many sync polls (at 10 s, a minute's window held 5 or 6,
    // depending on where the sync's cycle fell against it).
    config.sync.interval_ms = POLL_EVERY.as_millis() as u64;
    // A budget that never binds: at the default 100 a minute the schedule book's first
    // reading of 2,000 agents takes the budget for many minutes, and the polls wait
    // their turn behind it by however much, so no window held a steady count of them.
    config.cxone.requests_per_minute = 6_000;
    config.log.level = "warn".into();
    let app = App::build(&config).await.unwrap();
    let address = format!("127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let served = tokio::spawn(app.run_until_stopped(stop.clone()));
    let http = wfmd::http_client().unwrap();
    wait_for_rows(&http, &address).await;
    let agents = platform.movable_agents();

    // Platform calls with no client, then with the 100 (the first window settles).
    let _ = calls_in_window(&platform.sim).await;
    let alone = calls_in_window(&platform.sim).await;
    let rows: Rows = Arc::default();
    let leave = CancellationToken::new();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        clients.push(tokio::spawn(page_client(
            client,
            address.clone(),
            rows.clone(),
            leave.clone(),
        )));
    }
    let watched = calls_in_window(&platform.sim).await;

    // The changes, and when each client held the agent's new row.
    let mut latencies = Vec::new();
    let mut missing = 0;
    let pace = Duration::from_millis(1_000 / CHANGES_PER_SECOND);
    for i in 0..CHANGES {
        let agent = &agents[i % agents.len()];
        // Another state than the agent's, so that the change records something.
        let now_in = platform
            .sim
            .agents()
            .into_iter()
            .find(|a| &a.id == agent)
            .map(|a| a.state)
            .unwrap_or_default();
        let state = STATES
            .iter()
            .cycle()
            .skip(i)
            .find(|s| **s != now_in)
            .unwrap();
        if !change(&http, &address, agent, state).await {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut reached = vec![None; CLIENTS];
        let mut recorded = None;
        while Instant::now() < deadline
            && (recorded.is_none() || reached.iter().any(Option::is_none))
        {
            let held = rows.lock().await;
            if let Some((to, at)) = held.recorded.get(agent)
                && to == state
            {
                recorded = Some(*at);
            }
            for (client, slot) in reached.iter_mut().enumerate() {
                if slot.is_none()
                    && let Some((shown, at)) = held.rows.get(&(client, agent.clone()))
                    && shown == state
                {
                    *slot = Some(*at);
                }
            }
            drop(held);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let Some(recorded) = recorded else {
            missing += CLIENTS;
            continue;
        };
        // The instant wfmd recorded the change, on this process's clock.
        let now_wall = Utc::now();
        let now_mono = Instant::now();
        let recorded_mono = now_mono
            .checked_sub((now_wall - recorded).to_std().unwrap_or_default())
            .unwrap_or(now_mono);
        for at in reached {
            match at {
                Some(at) => latencies.push(at.saturating_duration_since(recorded_mono)),
                None => missing += 1,
            }
        }
        tokio::time::sleep(pace).await;
    }
    leave.cancel();
    for client in clients {
        let _ = client.await;
    }
    latencies.sort_unstable();
    let p95 = latencies
        .get((latencies.len() * 95).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(Duration::MAX);
    println!(
        "a state change reaching {CLIENTS} RTA feed clients ({AGENTS} agents, {} (change, client) pairs, {missing} never reached): \
         median {:.0} ms, p95 {:.0} ms (target p95 < {} ms) {}",
        latencies.len(),
        latencies
            .get(latencies.len() / 2)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        p95.as_secs_f64() * 1e3,
        TARGET_P95.as_millis(),
        common::verdict(p95 < TARGET_P95 && missing == 0)
    );
    let compared = |calls: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        calls
            .iter()
            .filter(|(route, _)| !SPREAD.contains(&route.as_str()) && *route != TOO_EARLY)
            .map(|(route, n)| (route.clone(), *n))
            .collect()
    };
    let (alone_periodic, watched_periodic) = (compared(&alone), compared(&watched));
    println!(
        "platform calls in {CYCLES} poll cycles of {POLL_EVERY:?} with 0 / {CLIENTS} feed \
         clients, the schedule book's per-agent refreshes left out: {} / {} (target \
         identical, route by route) {}",
        alone_periodic.values().sum::<u64>(),
        watched_periodic.values().sum::<u64>(),
        common::verdict(alone_periodic == watched_periodic)
    );
    eprintln!("  by route, without clients: {alone:?}");
    eprintln!("  by route, with {CLIENTS} clients: {watched:?}");

    // The browser's side.
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    let mut renders = Vec::new();
    for _ in 0..RENDERS {
        browser
            .goto(&format!("http://{address}/rta"))
            .await
            .unwrap();
        renders.push(ready_ms(&browser).await);
    }
    let render = common::median(renders.clone());
    println!(
        "first render of /rta, {AGENTS} agents: median {render:.0} ms of {RENDERS} loads \
         (target < {TARGET_RENDER_MS} ms) {}",
        common::verdict(render < TARGET_RENDER_MS)
    );
    eprintln!("  each load: {renders:?} ms");

    let minutes: u64 = std::env::var("WFMD_BENCH_HEAP_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(12);
    let churn = CancellationToken::new();
    let changer = tokio::spawn(keep_changing(
        http.clone(),
        address.clone(),
        agents.clone(),
        churn.clone(),
    ));
    // Each minute, the heap as the page left it (its peak is the figure) and what a full
    // collection leaves of it (what growth is judged on: the heap as used swings by a
    // third between collections, which no leak's few percent would show through).
    let mut used = Vec::new();
    let mut kept = Vec::new();
    for minute in 0..=minutes {
        if minute > 0 {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        let sample = browser
            .execute(
                "const used = performance.memory.usedJSHeapSize; gc(); \
                 return [used, performance.memory.usedJSHeapSize];",
                vec![],
            )
            .await
            .expect("performance.memory and gc() (--js-flags=--expose-gc)");
        let mb = |i: usize| sample[i].as_f64().unwrap_or(f64::NAN) / 1_048_576.0;
        used.push(mb(0));
        kept.push(mb(1));
    }
    churn.cancel();
    let changes = changer.await.unwrap();
    let peak = used.iter().copied().fold(0.0, f64::max);
    let from = if minutes > 10 { 10 } else { minutes / 2 };
    let at_from = kept[from as usize];
    let last = *kept.last().unwrap();
    let flat = last <= at_from * 1.05;
    println!(
        "JS heap of /rta open {minutes} min through {changes} changes ({:.1} a second; \
         shortened from 1 h): peak {peak:.1} MB (target < {TARGET_HEAP_MB} MB); after a \
         full collection {at_from:.2} MB at {from} min, {last:.2} MB at the end (target: \
         no growth after 10 min, within 5 %) {}",
        changes as f64 / (minutes.max(1) * 60) as f64,
        common::verdict(peak < TARGET_HEAP_MB && flat)
    );
    eprintln!("  each minute, as used: {used:.1?} MB");
    eprintln!("  each minute, after a full collection: {kept:.2?} MB");
    browser.close().await.unwrap();
    drop(driver);
    stop.cancel();
    let _ = served.await;
}

/// Waits until GET /v1/adherence/now lists every agent.
async fn wait_for_rows(http: &reqwest::Client, address: &str) {
    let started = Instant::now();
    loop {
        let now: Option<Value> = async {
            http.get(format!("http://{address}/v1/adherence/now"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        if now.is_some_and(|n| n["agents"].as_array().is_some_and(|a| a.len() == AGENTS)) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "no rows");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The simulator's calls by route over `CYCLES` whole poll cycles, from the point of the
/// cycle farthest from every periodic poll. Every periodic poll runs each `POLL_EVERY`,
/// so such a window holds exactly `CYCLES` of each, none near its edges (a window
/// started just after the skill poll now and then held one call more or less of a
/// poll whose own cycle fell near its edge).
async fn calls_in_window(sim: &wfmd::sim::Simulator) -> BTreeMap<String, u64> {
    quietest_point_of_the_cycle(sim).await;
    let before = sim.stats();
    tokio::time::sleep(POLL_EVERY * CYCLES).await;
    let after = sim.stats();
    let mut calls: BTreeMap<String, u64> = after
        .by_route
        .iter()
        .map(|(route, n)| (route.clone(), n - before.by_route.get(route).unwrap_or(&0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    // Of the sync's polls, those the platform refused for coming sooner than the
    // subscription's interval after the last it accepted (each sent again).
    let too_early = after.polls_too_early - before.polls_too_early;
    if too_early > 0 {
        calls.insert(TOO_EARLY.to_owned(), too_early);
    }
    calls
}

/// Watches one poll cycle for the instants the periodic calls come (the simulator's
/// counts every 20 ms, the book's spread refreshes left out), and returns a cycle later
/// in the middle of the widest quiet gap between them.
async fn quietest_point_of_the_cycle(sim: &wfmd::sim::Simulator) {
    let periodic = || -> u64 {
        sim.stats()
            .by_route
            .iter()
            .filter(|(route, _)| !SPREAD.contains(&route.as_str()))
            .map(|(_, n)| n)
            .sum()
    };
    let started = tokio::time::Instant::now();
    let mut last = periodic();
    let mut calls = Vec::new();
    while started.elapsed() < POLL_EVERY {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = periodic();
        if now != last {
            calls.push(started.elapsed());
            last = now;
        }
    }
    assert!(!calls.is_empty(), "no periodic poll in {POLL_EVERY:?}");
    // The gap after each call to the next, the last one's wrapping round the cycle.
    let next_calls = calls.iter().skip(1).copied().chain([calls[0] + POLL_EVERY]);
    let (from, gap) = calls
        .iter()
        .copied()
        .zip(next_calls)
        .map(|(call, next)| (call, next - call))
        .max_by_key(|&(_, gap)| gap)
        .unwrap();
    tokio::time::sleep_until(started + POLL_EVERY + from + gap / 2).await;
}

/// What the feed clients heard.
#[derive(Default)]
struct Seen {
    /// (client, agent) -> the agent's state in the last row the client got, and when.
    rows: HashMap<(usize, String), (String, Instant)>,
    /// agent -> the state of its last `agent.state_changed` and when wfmd recorded it.
    recorded: HashMap<String, (String, DateTime<Utc>)>,
}

type Rows = Arc<Mutex<Seen>>;

/// One open RTA page's feed: every message parsed, `adherence.changed` rows kept by
/// agent with the instant each arrived.
async fn page_client(client: usize, address: String, rows: Rows, leave: CancellationToken) {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/v1/ws"))
        .await
        .expect("the feed opens");
    loop {
        let frame = tokio::select! {
            () = leave.cancelled() => return,
            frame = socket.next() => frame,
        };
        let Some(Ok(Frame::Text(text))) = frame else {
            if frame.is_none() {
                return;
            }
            continue;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["type"] == "adherence.changed" {
            let row = &message["data"];
            let key = (client, row["id"].as_str().unwrap_or_default().to_owned());
            let state = row["state"].as_str().unwrap_or_default().to_owned();
            rows.lock().await.rows.insert(key, (state, Instant::now()));
        } else if message["type"] == "agent.state_changed" && client == 0 {
            let data = &message["data"];
            let at = message["timestamp"].as_str().and_then(|t| t.parse().ok());
            if let (Some(agent), Some(to), Some(at)) =
                (data["agentId"].as_str(), data["to"].as_str(), at)
            {
                rows.lock()
                    .await
                    .recorded
                    .insert(agent.to_owned(), (to.to_owned(), at));
            }
        }
    }
}

/// Changes `agent` to `state` through the API; whether it was changed.
async fn change(http: &reqwest::Client, address: &str, agent: &str, state: &str) -> bool {
    let response = http
        .post(format!("http://{address}/v1/agents/{agent}/transitions"))
        .json(&json!({"state": state}))
        .send()
        .await;
    response.is_ok_and(|r| r.status() == 200)
}

/// Changes agents until `stop`; how many changes were made.
async fn keep_changing(
    http: reqwest::Client,
    address: String,
    agents: Vec<String>,
    stop: CancellationToken,
) -> usize {
    let mut made = 0;
    let pace = Duration::from_millis(1_000 / HEAP_CHANGES_PER_SECOND);
    while !stop.is_cancelled() {
        let agent = &agents[made % agents.len()];
        let _ = change(&http, &address, agent, STATES[made % STATES.len()]).await;
        made += 1;
        tokio::time::sleep(pace).await;
    }
    made
}

/// Milliseconds from navigation to the page saying it is drawn.
async fn ready_ms(browser: &Client) -> f64 {
    let started = Instant::now();
    loop {
        let ready = browser
            .execute(
                "return document.body && document.body.dataset.ready === '1' ? Number(document.body.dataset.readyMs) : null;",
                vec![],
            )
            .await
            .unwrap_or(Value::Null);
        if let Some(ms) = ready.as_f64() {
            return ms;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "/rta never drawn"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// chromedriver on a free port, its browser headless, as the browser tests run it.
struct Chromedriver {
    child: std::process::Child,
    url: String,
    profile: tempfile::TempDir,
}

impl Chromedriver {
    async fn start() -> Chromedriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver on the PATH")
        };
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: tempfile::tempdir().unwrap(),
        };
        let http = wfmd::http_client().unwrap();
        let started = Instant::now();
        while http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .is_err()
        {
            assert!(started.elapsed() < Duration::from_secs(30), "chromedriver");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    async fn browser(&self) -> Client {
        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({"args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--enable-precise-memory-info",
                "--js-flags=--expose-gc",
                "--window-size=1600,1000",
                format!("--user-data-dir={}", self.profile.path().display()),
            ]}),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}
