//! Several instances on one PostgreSQL (#38): what losing the leader costs. Two
//! `wfmd serve` with `[ha]` at the default `lease_ttl` (10 s) run as child processes on a
//! PostgreSQL server of the bench's own (fsync on), a simulated tenant in this process.
//! Each of 5 runs has a fresh database and simulator, and goes:
//! 1. instance a starts and leads the tenant, b starts and follows;
//! 2. single changes one after another, alternately to the leader and to the follower
//!    (which hands them to the leader), timed by the client;
//! 3. a steady stream of changes, one every 50 ms, round-robin over 24 agents, each sent
//!    to the next of the instances alive, the platform now taking 100 ms a call so that
//!    changes are under way when the leader stops. a (the leader) is killed with
//!    SIGKILL; once b carries changes out, a is started again and follows; then b, the
//!    leader now, is stopped with SIGTERM and a takes over. What a stop costs depends on
//!    where it falls in the leader's renewals (every third of `lease_ttl`) and the
//!    follower's tries (every second), so the runs' stops are spread evenly over both;
//! 4. the stream stops, and what its clients and the timed ones were answered is compared
//!    with the database and with the simulated platform's record of state changes.
//!
//! Targets:
//! - failover after `kill -9` of the leader, from the kill to the first change asked of the
//!   survivor after it and answered 200: ≤ `lease_ttl` + 2 s (12 s), median of 5 runs;
//! - hand-over after SIGTERM of the leader, from the signal to the first change asked of
//!   the survivor after it and answered 200: ≤ 2 s, median of 5 runs;
//! - changes lost or doubled over all runs: 0. Every change carries an idempotency key,
//!   and a client whose change was not answered for good (connection refused or cut, a
//!   503 while no instance leads) asks again with the same key, as a client of a cluster
//!   should, until it is. Counted: a change answered 200 with no succeeded attempt
//!   recorded, or with more than one; a succeeded attempt recorded for a change that was
//!   answered otherwise, or for none; and, agent by agent and state by state, the
//!   difference between how often the platform was set to the state and how many
//!   succeeded attempts say so (a change made twice, or made and never recorded); and
//!   a change's intent left unsettled at the end;
//! - interactive change p95 through the follower less the p95 through the leader:
//!   ≤ +50 ms (100 changes each way per run, alternated over the same agents; 500 each).
//!
//! State sync and the metric pollers are off, as in the integration tests, so the only
//! changes of the platform's agents are the bench's.
//!
//! Run: `cargo bench --bench failover`; about 2 minutes on a 2-core machine. Linux only
//! (signals, /proc); PostgreSQL comes from tests/support/throwaway-postgres (Debian's,
//! installed with apt-get when missing).

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wfmd::sim::{Faults, SimConfig, Simulator};

const RUNS: usize = 5;
/// The agents the stream and the timed changes go round.
const AGENTS: usize = 24;
/// The stream's pace: 20 changes a second over both instances.
const BETWEEN_CHANGES: Duration = Duration::from_millis(50);
/// How long the stream runs before each stop of a leader, and on after it.
const STEADY: Duration = Duration::from_secs(3);
/// How long the platform takes over each call while the stream runs, as a real one
/// does: so a stop finds changes under way, their intents written and the call not
/// answered yet. The timed changes have the platform answer at once, so what they
/// compare is wfmd's own part.
const PLATFORM_LATENCY: Duration = Duration::from_millis(100);
/// Timed changes per run through each of the leader and the follower.
const TIMED_CHANGES: usize = 100;
/// The hand-over target after SIGTERM; after `kill -9` the target is the lease's TTL and
/// this margin.
const TARGET_HANDOVER: Duration = Duration::from_secs(2);
const FAILOVER_MARGIN: Duration = Duration::from_secs(2);
const TARGET_FOLLOWER_EXTRA_MS: f64 = 50.0;
/// Anything that should happen in the course of a run (an instance starting, a failover
/// and the retries after it) fails the bench when it has not happened in this long.
const WITHIN: Duration = Duration::from_secs(60);
/// One request's answer: a change takes milliseconds, and a dead peer is seen at once.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

/// The states the changes alternate between: both allowed on shift, in a mandatory
/// break or not, so no change is refused whatever the schedule says by then.
const STATES: [&str; 2] = ["PAUSED", "IDLE"];

fn main() {
    let server = throwaway_postgres::start(throwaway_postgres::Options {
        durable: true,
        ..Default::default()
    });
    let runtime = common::runtime();
    runtime.block_on(bench(&server));
}

async fn bench(server: &throwaway_postgres::Server) {
    let http = wfmd::http_client().unwrap();
    let lease_ttl = wfmd::config::ha::HaConfig::default().lease_ttl;
    let machine_before = common::CpuTimes::now();
    let started = Instant::now();
    let mut runs = Vec::new();
    for run in 1..=RUNS {
        let figures = run_once(server, &http, run, lease_ttl).await;
        eprintln!(
            "run {run}: failover {:.2} s, hand-over {:.2} s, lost or doubled {}, p95 leader \
             {:.1} ms follower {:.1} ms ({:.0} s so far)",
            figures.failover.as_secs_f64(),
            figures.handover.as_secs_f64(),
            figures.audit.lost_or_doubled(),
            p95_ms(&figures.via_leader),
            p95_ms(&figures.via_follower),
            started.elapsed().as_secs_f64()
        );
        runs.push(figures);
    }
    let steal = match (machine_before, common::CpuTimes::now()) {
        (Some(before), Some(after)) => before.steal_since(after),
        _ => 0.0,
    };
    report(&runs, lease_ttl);
    println!(
        "whole bench {:.0} s; machine: {:.1} % of its CPU time stolen by the host",
        started.elapsed().as_secs_f64(),
        steal * 100.0
    );
}

/// What one run measured.
struct Run {
    failover: Duration,
    handover: Duration,
    /// Seconds each timed change took, through the leader and through the follower.
    via_leader: Vec<f64>,
    via_follower: Vec<f64>,
    /// Timed changes not answered 200 (asked again later, untimed).
    timed_not_ok: usize,
    audit: Audit,
}

async fn run_once(
    server: &throwaway_postgres::Server,
    http: &reqwest::Client,
    run: usize,
    lease_ttl: Duration,
) -> Run {
    // Where this run's stops fall in the renewal and the follower's cycles (see the
    // module's doc): without it every run would stop the leader at the same point.
    let phase = (run - 1) as f64 / RUNS as f64;
    let platform = Platform::start().await;
    let database = server.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let env = platform.env(&database);

    let mut a = Instance::start("wfmd-a", &env, dir.path(), http).await;
    a.leads(http, true).await;
    let mut b = Instance::start("wfmd-b", &env, dir.path(), http).await;
    b.leads(http, false).await;
    let ledger = Ledger::shared(platform.agents());

    let (via_leader, via_follower, timed_not_ok) = timed(&ledger, http, &a.url, &b.url).await;
    platform.sim.set_faults(Faults {
        latency: PLATFORM_LATENCY,
        ..Faults::default()
    });

    let alive = Arc::new(Mutex::new(vec![a.url.clone(), b.url.clone()]));
    let stop = CancellationToken::new();
    let stream = tokio::spawn(stream(
        Arc::clone(&ledger),
        http.clone(),
        Arc::clone(&alive),
        stop.clone(),
    ));
    tokio::time::sleep(STEADY + (lease_ttl / 3).mul_f64(phase)).await;

    // kill -9 of the leader: b is the only one asked from now on.
    *lock(&alive) = vec![b.url.clone()];
    let killed = Instant::now();
    a.signal(Signal::KILL);
    let failover = carried_out(&ledger, server, &database, &b, 2, killed).await;
    a.exited().await;
    tokio::time::sleep(STEADY).await;

    // a again, as a follower; then SIGTERM of b, the leader now.
    let mut a_again = Instance::start("wfmd-a", &env, dir.path(), http).await;
    a_again.leads(http, false).await;
    *lock(&alive) = vec![a_again.url.clone(), b.url.clone()];
    tokio::time::sleep(STEADY + Duration::from_secs(1).mul_f64(phase)).await;
    *lock(&alive) = vec![a_again.url.clone()];
    let signalled = Instant::now();
    b.signal(Signal::TERM);
    let handover = carried_out(&ledger, server, &database, &a_again, 3, signalled).await;
    tokio::time::sleep(STEADY).await;
    stop.cancel();
    stream.await.unwrap();
    let stopped = b.exited().await;
    assert!(stopped.success(), "b stopped by SIGTERM exited {stopped}");

    settle(&ledger, http, &a_again.url).await;
    let audit = audit(server, &database, &platform, &ledger).await;
    a_again.signal(Signal::TERM);
    a_again.exited().await;
    Run {
        failover,
        handover,
        via_leader,
        via_follower,
        timed_not_ok,
        audit,
    }
}

/// The simulated tenant of a run: 60 agents who hold still (no activity of their own),
/// so every state change the platform records is one wfmd made.
struct Platform {
    sim: Simulator,
    base_url: String,
    token_url: String,
    stop: CancellationToken,
}

const CLIENT_ID: &str = "bench-failover";
const CLIENT_SECRET: &str = "bench-failover-secret";

impl Platform {
    async fn start() -> Platform {
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = Simulator::start(
            SimConfig {
                agents: 60,
                activity: false,
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                ..SimConfig::default()
            },
            listener,
            stop.clone(),
        )
        .await
        .unwrap();
        Platform {
            sim: running.sim,
            base_url: running.base_url,
            token_url: running.token_url,
            stop,
        }
    }

    /// The configuration every instance shares, as `WFMD_…` variables.
    fn env(&self, database: &str) -> Vec<(String, String)> {
        [
            ("WFMD_DATABASE__URL", database),
            ("WFMD_CXONE__BASE_URL", &self.base_url),
            ("WFMD_CXONE__TOKEN_URL", &self.token_url),
            ("WFMD_CXONE__CLIENT_ID", CLIENT_ID),
            ("WFMD_CXONE__CLIENT_SECRET", CLIENT_SECRET),
            ("WFMD_CXONE__REQUESTS_PER_MINUTE", "6000"),
            ("WFMD_SYNC__ENABLED", "false"),
            ("WFMD_LIVE__ENABLED", "false"),
            ("WFMD_LOG__LEVEL", "warn"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Agents every change may be made to for the whole run: on shift for another hour
    /// at least, not on a contact.
    fn agents(&self) -> Vec<String> {
        let until = chrono::Utc::now() + chrono::Duration::hours(1);
        let agents: Vec<String> = self
            .sim
            .agents()
            .into_iter()
            .filter(|a| a.on_shift_at(chrono::Utc::now()) && a.on_shift_at(until))
            .filter(|a| a.state != "ON_CONTACT")
            .map(|a| a.id)
            .take(AGENTS)
            .collect();
        assert_eq!(
            agents.len(),
            AGENTS,
            "the simulated tenant has too few agents"
        );
        agents
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One `wfmd serve` of the cluster, a child process with its log in a file.
struct Instance {
    id: String,
    child: Child,
    url: String,
    log: PathBuf,
}

impl Instance {
    /// Starts instance `id` with `env` and waits until it answers `/healthz`.
    async fn start(
        id: &str,
        env: &[(String, String)],
        dir: &Path,
        http: &reqwest::Client,
    ) -> Instance {
        // A port taken between choosing and binding it (another process's connection)
        // makes the child exit: it is started again on another.
        for attempt in 1.. {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let url = format!("http://127.0.0.1:{port}");
            let log = dir.join(format!("{id}-{port}.log"));
            let mut command = Command::new(env!("CARGO_BIN_EXE_wfmd"));
            for (key, _) in std::env::vars() {
                if key.starts_with("WFMD_") {
                    command.env_remove(key);
                }
            }
            let child = command
                .arg("serve")
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("WFMD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
                // No ha.lease_ttl: the default's, at which the targets are stated.
                .env("WFMD_HA__INSTANCE_ID", id)
                .env("WFMD_HA__ADVERTISE_URL", &url)
                .env(
                    "WFMD_HA__CLUSTER_KEY",
                    "bench-cluster-key-0123456789abcdef012345",
                )
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut instance = Instance {
                id: id.to_owned(),
                child,
                url,
                log,
            };
            if instance.comes_up(http).await {
                return instance;
            }
            assert!(attempt < 5, "{id} did not start: {}", instance.said());
        }
        unreachable!()
    }

    /// Whether it answers `/healthz` before exiting.
    async fn comes_up(&mut self, http: &reqwest::Client) -> bool {
        let deadline = Instant::now() + WITHIN;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            let answer = http.get(format!("{}/healthz", self.url)).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "wfmd did not come up: {}",
                self.said()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `/readyz` answers 200 saying the instance leads the tenant, or not.
    async fn leads(&self, http: &reqwest::Client, leads: bool) {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Ok(answer) = http.get(format!("{}/readyz", self.url)).send().await
                && answer.status() == 200
                && let Ok(body) = answer.json::<Value>().await
                && body["leads"] == json!(leads)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become ready with leads = {leads}: {}",
                self.url,
                self.said()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn signal(&self, signal: Signal) {
        kill_process(Pid::from_child(&self.child), signal).unwrap();
    }

    /// Waits until the process has exited.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.url);
            tokio::time::sleep(POLL).await;
        }
    }

    /// What it logged, for a failure's message.
    fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // A panicking bench leaves no daemon behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every change asked in a run and every answer, shared by the clients.
struct Ledger {
    agents: Vec<Slot>,
    changes: Vec<Change>,
    answers: Vec<Answer>,
    /// Where the round-robin over the agents goes on.
    turn: usize,
}

/// An agent as its clients see it.
struct Slot {
    id: String,
    /// The state of its last change answered 200.
    last_set: Option<&'static str>,
    /// A change not answered for good yet, asked again before any new one.
    pending: Option<usize>,
    /// A request for it is under way.
    busy: bool,
}

struct Change {
    agent: usize,
    target: &'static str,
    key: String,
    /// The answer for good: 200, or a refusal (4xx); `None` while pending.
    status: Option<u16>,
}

struct Answer {
    to: String,
    sent: Instant,
    answered: Instant,
    /// When it was answered by the system clock, in Unix milliseconds: the clock the
    /// database gives the lease's times by (the same machine's).
    answered_ms: i64,
    /// `None`: no answer (refused or cut connection, timeout).
    status: Option<u16>,
}

type Shared = Arc<Mutex<Ledger>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap()
}

impl Ledger {
    fn shared(agents: Vec<String>) -> Shared {
        Arc::new(Mutex::new(Ledger {
            agents: agents
                .into_iter()
                .map(|id| Slot {
                    id,
                    last_set: None,
                    pending: None,
                    busy: false,
                })
                .collect(),
            changes: Vec::new(),
            answers: Vec::new(),
            turn: 0,
        }))
    }

    /// The next agent in turn with no request under way.
    fn next_free(&mut self) -> Option<usize> {
        let n = self.agents.len();
        let found = (0..n)
            .map(|i| (self.turn + i) % n)
            .find(|&i| !self.agents[i].busy)?;
        self.turn = found + 1;
        Some(found)
    }

    /// The change to ask for `agent` now: its pending one, or a new one to the other
    /// state. Marks the agent busy.
    fn take(&mut self, agent: usize) -> usize {
        let slot = &mut self.agents[agent];
        slot.busy = true;
        if let Some(pending) = slot.pending {
            return pending;
        }
        let target = if slot.last_set == Some(STATES[0]) {
            STATES[1]
        } else {
            STATES[0]
        };
        let index = self.changes.len();
        self.changes.push(Change {
            agent,
            target,
            key: format!("bench-{index}"),
            status: None,
        });
        slot.pending = Some(index);
        index
    }

    /// Notes how `change` was answered: for good (2xx, 4xx) or to be asked again.
    fn note(&mut self, change: usize, answer: Answer) {
        let status = answer.status;
        self.answers.push(answer);
        let Change { agent, target, .. } = self.changes[change];
        let slot = &mut self.agents[agent];
        slot.busy = false;
        match status {
            Some(status) if status < 500 => {
                self.changes[change].status = Some(status);
                slot.pending = None;
                if status == 200 {
                    slot.last_set = Some(target);
                }
            }
            _ => {}
        }
    }

    fn pending(&self) -> Vec<usize> {
        (0..self.agents.len())
            .filter(|&i| self.agents[i].pending.is_some())
            .collect()
    }
}

/// Asks `url` for `agent`'s next change (or its pending one) and notes the answer; the
/// answer's status, `None` when none came.
async fn ask(ledger: &Shared, http: &reqwest::Client, url: &str, agent: usize) -> Option<u16> {
    let (change, agent_id, target, key) = {
        let mut ledger = lock(ledger);
        let change = ledger.take(agent);
        let c = &ledger.changes[change];
        (
            change,
            ledger.agents[agent].id.clone(),
            c.target,
            c.key.clone(),
        )
    };
    let sent = Instant::now();
    let transitions = format!("{url}/v1/agents/{agent_id}/transitions");
    let status = common::post_transition(http, &transitions, target, &key, ANSWER_WITHIN).await;
    let answer = Answer {
        to: url.to_owned(),
        sent,
        answered: Instant::now(),
        answered_ms: chrono::Utc::now().timestamp_millis(),
        status,
    };
    lock(ledger).note(change, answer);
    status
}

/// Single changes one after another, alternately to `leader` and to `follower`, over
/// the same agents: the seconds each took through each, and how many were not answered
/// 200.
async fn timed(
    ledger: &Shared,
    http: &reqwest::Client,
    leader: &str,
    follower: &str,
) -> (Vec<f64>, Vec<f64>, usize) {
    let (mut via_leader, mut via_follower, mut not_ok) = (Vec::new(), Vec::new(), 0);
    for _ in 0..TIMED_CHANGES {
        for (url, took) in [(leader, &mut via_leader), (follower, &mut via_follower)] {
            let agent = lock(ledger).next_free().unwrap();
            let started = Instant::now();
            let status = ask(ledger, http, url, agent).await;
            took.push(started.elapsed().as_secs_f64());
            if status != Some(200) {
                not_ok += 1;
            }
        }
    }
    (via_leader, via_follower, not_ok)
}

/// A change every [`BETWEEN_CHANGES`] to the next free agent, sent to the next of the
/// instances `alive` says, until `stop`; then waits for the requests under way.
async fn stream(
    ledger: Shared,
    http: reqwest::Client,
    alive: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(BETWEEN_CHANGES);
    let mut under_way = tokio::task::JoinSet::new();
    let mut turn = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let urls = lock(&alive).clone();
        let Some(agent) = lock(&ledger).next_free() else {
            continue;
        };
        let url = urls[turn % urls.len()].clone();
        turn += 1;
        let (ledger, http) = (Arc::clone(&ledger), http.clone());
        under_way.spawn(async move { ask(&ledger, &http, &url, agent).await });
        while under_way.try_join_next().is_some() {}
    }
    while under_way.join_next().await.is_some() {}
}

/// How long after `since` `survivor` carried out a change asked of it after `since`:
/// answered it 200 once leading in `term` (a change answered before, while another
/// instance still led, was carried out by that one).
async fn carried_out(
    ledger: &Shared,
    server: &throwaway_postgres::Server,
    database: &str,
    survivor: &Instance,
    term: u64,
    since: Instant,
) -> Duration {
    let deadline = since + WITHIN;
    loop {
        let answered: Vec<(Instant, i64)> = lock(ledger)
            .answers
            .iter()
            .filter(|a| a.to == survivor.url && a.sent >= since && a.status == Some(200))
            .map(|a| (a.answered, a.answered_ms))
            .collect();
        // Only once it answers 200 may it lead: no psql for every poll before.
        if !answered.is_empty() {
            let lease = psql(
                server,
                database,
                "SELECT holder || ' ' || term || ' ' || acquired_at FROM cluster_lease",
            );
            let fields: Vec<&str> = lease.split(' ').collect();
            if let [holder, leading, acquired_at] = fields[..]
                && holder == survivor.id
                && leading == term.to_string()
            {
                let acquired_at: i64 = acquired_at.parse().unwrap();
                if let Some(first) = answered
                    .iter()
                    .filter(|(_, ms)| *ms >= acquired_at)
                    .map(|(at, _)| *at)
                    .min()
                {
                    return first - since;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} carried no change out in term {term} within {WITHIN:?}",
            survivor.id
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Asks each change not answered for good again, with its key, until every one is.
async fn settle(ledger: &Shared, http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let pending = lock(ledger).pending();
        if pending.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} changes still not answered for good",
            pending.len()
        );
        let asked = pending
            .into_iter()
            .map(|agent| ask(ledger, http, url, agent));
        futures::future::join_all(asked).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the clients were answered against what was recorded and what the platform did.
#[derive(Default)]
struct Audit {
    changes: usize,
    answered_ok: usize,
    /// Refusals for good, by status.
    refused: BTreeMap<u16, usize>,
    /// Requests made, and those not answered for good (asked again).
    requests: usize,
    retried: usize,
    /// Of those, requests that got no answer at all: under way at the leader's kill (or
    /// timed out).
    unanswered: usize,
    /// Answered 200, no succeeded attempt.
    missing: usize,
    /// Succeeded attempts beyond the first for one change.
    doubled: usize,
    /// Succeeded attempts for a change answered otherwise, or for no change asked.
    unexplained: usize,
    /// Agent by agent and state by state: platform changes less succeeded attempts.
    platform_only: usize,
    records_only: usize,
    intents_left: usize,
}

impl Audit {
    fn lost_or_doubled(&self) -> usize {
        self.missing
            + self.doubled
            + self.unexplained
            + self.platform_only
            + self.records_only
            + self.intents_left
    }
}

async fn audit(
    server: &throwaway_postgres::Server,
    database: &str,
    platform: &Platform,
    ledger: &Shared,
) -> Audit {
    // A change's intent is deleted by the transaction recording it: once every change is
    // answered for good, none should be left (the new leader settles a dead one's).
    let deadline = Instant::now() + WITHIN;
    let intents_left = loop {
        let left: usize = psql(server, database, "SELECT COUNT(*) FROM transition_intents")
            .parse()
            .unwrap();
        if left == 0 || Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ledger = lock(ledger);
    let mut audit = Audit {
        changes: ledger.changes.len(),
        requests: ledger.answers.len(),
        retried: ledger
            .answers
            .iter()
            .filter(|a| a.status.is_none_or(|s| s >= 500))
            .count(),
        unanswered: ledger.answers.iter().filter(|a| a.status.is_none()).count(),
        intents_left,
        ..Audit::default()
    };
    // Keys are stored scoped to the caller (`api:local:KEY`).
    let mut recorded: BTreeMap<String, usize> = BTreeMap::new();
    let rows = psql(
        server,
        database,
        "SELECT COALESCE(idempotency_key, '') FROM transition_attempts
         WHERE outcome = 'succeeded'",
    );
    for key in rows.lines() {
        let key = key.rsplit(':').next().unwrap_or_default().to_owned();
        *recorded.entry(key).or_default() += 1;
    }
    for change in &ledger.changes {
        let times = recorded.remove(&change.key).unwrap_or(0);
        match change.status {
            Some(200) => {
                audit.answered_ok += 1;
                if times == 0 {
                    audit.missing += 1;
                }
                audit.doubled += times.saturating_sub(1);
            }
            Some(status) => {
                *audit.refused.entry(status).or_default() += 1;
                audit.unexplained += times;
            }
            None => unreachable!("every change was answered for good"),
        }
    }
    audit.unexplained += recorded.values().sum::<usize>();

    let mut by_state: BTreeMap<(String, String), i64> = BTreeMap::new();
    for agent in platform.sim.agents() {
        // The first entry is the agent's state when the simulator began.
        for change in agent.state_log.iter().skip(1) {
            *by_state
                .entry((agent.id.clone(), change.state.clone()))
                .or_default() += 1;
        }
    }
    let rows = psql(
        server,
        database,
        "SELECT agent_id || ' ' || target_state || ' ' || COUNT(*) FROM transition_attempts
         WHERE outcome = 'succeeded' GROUP BY agent_id, target_state",
    );
    for row in rows.lines() {
        let fields: Vec<&str> = row.split(' ').collect();
        let [agent, state, count] = fields[..] else {
            panic!("unexpected row {row:?}");
        };
        *by_state
            .entry((agent.to_owned(), state.to_owned()))
            .or_default() -= count.parse::<i64>().unwrap();
    }
    for difference in by_state.values() {
        if *difference > 0 {
            audit.platform_only += *difference as usize;
        } else {
            audit.records_only += difference.unsigned_abs() as usize;
        }
    }
    audit
}

/// `sql`'s output on the run's database, rows unaligned.
fn psql(server: &throwaway_postgres::Server, database_url: &str, sql: &str) -> String {
    let database = database_url.rsplit('/').next().unwrap();
    tokio::task::block_in_place(|| server.psql(database, sql))
        .unwrap_or_else(|why| panic!("psql `{sql}` failed: {why}"))
}

fn p95_ms(seconds: &[f64]) -> f64 {
    common::p95(seconds) * 1000.0
}

fn seconds(durations: impl Iterator<Item = Duration>) -> Vec<f64> {
    durations.map(|d| d.as_secs_f64()).collect()
}

fn report(runs: &[Run], lease_ttl: Duration) {
    let target = lease_ttl + FAILOVER_MARGIN;
    let failovers = seconds(runs.iter().map(|r| r.failover));
    let failover = common::median(failovers.clone());
    println!(
        "\nfailover after kill -9 of the leader (lease_ttl {} s), kill to the survivor's first \
         change answered 200: median {failover:.2} s of {} runs {failovers:.2?} — target \
         ≤ {} s: {}",
        lease_ttl.as_secs(),
        runs.len(),
        target.as_secs(),
        common::verdict(failover <= target.as_secs_f64())
    );
    let handovers = seconds(runs.iter().map(|r| r.handover));
    let handover = common::median(handovers.clone());
    println!(
        "hand-over after SIGTERM of the leader, signal to the survivor's first change \
         answered 200: median {handover:.2} s of {} runs {handovers:.2?} — target ≤ {} s: {}",
        runs.len(),
        TARGET_HANDOVER.as_secs(),
        common::verdict(handover <= TARGET_HANDOVER.as_secs_f64())
    );

    let sum = |f: fn(&Audit) -> usize| runs.iter().map(|r| f(&r.audit)).sum::<usize>();
    let lost_or_doubled = sum(Audit::lost_or_doubled);
    let mut refused: BTreeMap<u16, usize> = BTreeMap::new();
    for run in runs {
        for (status, n) in &run.audit.refused {
            *refused.entry(*status).or_default() += n;
        }
    }
    println!(
        "changes lost or doubled through both stops, over {} runs: {lost_or_doubled} — \
         target 0: {}",
        runs.len(),
        common::verdict(lost_or_doubled == 0)
    );
    println!(
        "  {} changes ({} requests, {} of them not answered for good and asked again with \
         their key, {} of which got no answer at all): {} answered 200, refused \
         {refused:?}; answered 200 but not recorded {}, recorded twice {}, recorded but \
         answered otherwise {}; platform changes not recorded {}, recorded changes the \
         platform did not make {}; intents left {}",
        sum(|a| a.changes),
        sum(|a| a.requests),
        sum(|a| a.retried),
        sum(|a| a.unanswered),
        sum(|a| a.answered_ok),
        sum(|a| a.missing),
        sum(|a| a.doubled),
        sum(|a| a.unexplained),
        sum(|a| a.platform_only),
        sum(|a| a.records_only),
        sum(|a| a.intents_left),
    );

    let all = |f: fn(&Run) -> &Vec<f64>| runs.iter().flat_map(f).copied().collect::<Vec<_>>();
    let (leader, follower) = (all(|r| &r.via_leader), all(|r| &r.via_follower));
    let (leader_p95, follower_p95) = (p95_ms(&leader), p95_ms(&follower));
    let extra = follower_p95 - leader_p95;
    let per_run: Vec<f64> = runs
        .iter()
        .map(|r| p95_ms(&r.via_follower) - p95_ms(&r.via_leader))
        .collect();
    println!(
        "interactive change p95, {} changes each way alternated over {AGENTS} agents: \
         through the leader {leader_p95:.1} ms, through the follower {follower_p95:.1} ms, \
         difference {extra:+.1} ms (per run {per_run:+.1?}; {} not answered 200) — target \
         ≤ +{TARGET_FOLLOWER_EXTRA_MS} ms: {}",
        leader.len(),
        runs.iter().map(|r| r.timed_not_ok).sum::<usize>(),
        common::verdict(extra <= TARGET_FOLLOWER_EXTRA_MS)
    );
    println!(
        "  medians: through the leader {:.1} ms, through the follower {:.1} ms",
        common::median(leader) * 1000.0,
        common::median(follower) * 1000.0
    );
}
