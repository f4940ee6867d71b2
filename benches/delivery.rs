//! Webhook delivery benchmarks against a local receiver that answers 204 at once, on
//! SQLite and on PostgreSQL in one run.
//!
//! - throughput: 10,000 events (2,000 agents × 5) already in the outbox, fanned out,
//!   claimed, POSTed and settled to one endpoint, from the dispatcher's start to the
//!   last distinct arrival. Target ≥ 2,000 deliveries/s on each backend.
//! - latency: events committed one per transaction at 50 per second, from each commit
//!   to its arrival at the receiver. Target p99 < 100 ms on each backend.
//!
//! Both backends are fsync-durable, as `wfmd serve` runs them: SQLite with
//! `synchronous=FULL`; PostgreSQL a throwaway server of the bench's own with `fsync` and
//! `synchronous_commit` on, on the same disk, and a fresh database for every run.
//!
//! Run: `cargo bench --bench delivery` (the bench profile is release: build once, then
//! rerun). Each figure is the median of several runs, printed beside its target.

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wfmd::config::{DeliveryConfig, webhook_key};
use wfmd::delivery::{Dispatcher, Endpoint, Signer};
use wfmd::domain::events::{Event, StateChanged};
use wfmd::domain::{AgentState, Origin};
use wfmd::store::Store;
use wfmd::store::outbox;

const RUNS: usize = 5;
const EVENTS: usize = 10_000;
const AGENTS: usize = 2_000;
const RATE_PER_SECOND: u64 = 50;
const LATENCY_EVENTS: usize = 500;
const THROUGHPUT_TARGET: f64 = 2_000.0;
const P99_TARGET_MS: f64 = 100.0;

/// How long a run waits for its deliveries before it fails: far beyond any figure that
/// could meet a target, so only a dispatcher that stopped delivering reaches it.
const DEADLINE: Duration = Duration::from_secs(300);

/// The local receiver: where it listens, the first arrival of each webhook id, and how
/// many distinct ids have arrived (a redelivery counts once).
struct Receiver {
    url: String,
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    distinct: watch::Receiver<usize>,
}

impl Receiver {
    async fn start() -> Receiver {
        let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let (distinct_tx, distinct) = watch::channel(0);
        let distinct_tx = Arc::new(distinct_tx);
        let app = Router::new().route(
            "/hooks",
            post({
                let arrivals = arrivals.clone();
                move |headers: HeaderMap| async move {
                    let id = headers["webhook-id"].to_str().unwrap().to_owned();
                    let mut arrivals = arrivals.lock().unwrap();
                    arrivals.entry(id).or_insert_with(Instant::now);
                    distinct_tx.send_replace(arrivals.len());
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url,
            arrivals,
            distinct,
        }
    }

    /// Waits until `count` distinct events have arrived; panics at [`DEADLINE`].
    async fn wait_for(&mut self, count: usize) {
        let timed_out = tokio::time::timeout(DEADLINE, self.distinct.wait_for(|n| *n >= count))
            .await
            .is_err();
        if timed_out {
            panic!(
                "only {} of {count} webhooks arrived within {DEADLINE:?}",
                *self.distinct.borrow()
            );
        }
    }
}

/// A migrated store at `database_url`, or in a SQLite file in `dir` with `None`.
async fn store(database_url: Option<String>, dir: &tempfile::TempDir) -> Store {
    let url = database_url
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    Store::open(&url).await.unwrap()
}

fn dispatcher(store: &Store, url: &str) -> Dispatcher {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned().into();
    Dispatcher::new(
        wfmd::domain::tenant::TenantId::default_tenant(),
        store.clone(),
        wfmd::http_client().unwrap(),
        vec![Endpoint::new(
            url,
            None,
            Signer::new(vec![webhook_key(&secret).unwrap()]),
        )],
        DeliveryConfig::default(),
    )
}

/// Commits `count` state changes, agent `i % AGENTS` for the `i`th, in one transaction
/// and signals the dispatcher, as the engine does; returns their event ids.
async fn enqueue(store: &Store, first: usize, count: usize) -> Vec<String> {
    let mut tx = store.begin_write().await.unwrap();
    let mut ids = Vec::new();
    for i in first..first + count {
        let agent = format!("u_{:04}", i % AGENTS);
        ids.push(
            outbox::enqueue(
                &mut tx,
                Some(&agent),
                chrono::Utc::now(),
                Event::AgentStateChanged(StateChanged {
                    agent_id: agent.clone(),
                    from: None,
                    to: AgentState::Ready,
                    reason_code: None,
                    origin: Origin::Api,
                    idle_ms: 0,
                    latency_ms: None,
                    attempt_id: Some(format!("n{i}")),
                    queue: None,
                    changed_at: None,
                    deferred_id: None,
                }),
            )
            .await
            .unwrap(),
        );
    }
    tx.commit().await.unwrap();
    store.notify_outbox();
    ids
}

/// Deliveries per second of [`EVENTS`] queued before the dispatcher starts.
async fn throughput(database_url: Option<String>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = store(database_url, &dir).await;
    for chunk in 0..EVENTS / 1_000 {
        enqueue(&store, chunk * 1_000, 1_000).await;
    }
    let mut receiver = Receiver::start().await;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run =
        tokio::spawn(dispatcher(&store, &receiver.url).run(stop.clone(), Duration::from_secs(5)));
    receiver.wait_for(EVENTS).await;
    let elapsed = started.elapsed();
    stop.cancel();
    run.await.unwrap();
    store.close().await;
    EVENTS as f64 / elapsed.as_secs_f64()
}

/// The 99th percentile, in ms, of commit-to-arrival over [`LATENCY_EVENTS`] events
/// committed at [`RATE_PER_SECOND`].
async fn latency_p99(database_url: Option<String>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = store(database_url, &dir).await;
    let mut receiver = Receiver::start().await;
    let stop = CancellationToken::new();
    let run =
        tokio::spawn(dispatcher(&store, &receiver.url).run(stop.clone(), Duration::from_secs(5)));
    let mut committed = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1_000 / RATE_PER_SECOND));
    for i in 0..LATENCY_EVENTS {
        tick.tick().await;
        let id = enqueue(&store, i, 1).await.remove(0);
        committed.insert(id, Instant::now());
    }
    receiver.wait_for(LATENCY_EVENTS).await;
    stop.cancel();
    run.await.unwrap();
    store.close().await;
    let arrivals = receiver.arrivals.lock().unwrap();
    let mut latencies: Vec<f64> = committed
        .iter()
        .map(|(id, at)| arrivals[id].saturating_duration_since(*at).as_secs_f64() * 1_000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    latencies[latencies.len() * 99 / 100]
}

/// Runs both figures [`RUNS`] times on the database `database_url` gives (a fresh one
/// per run) and prints their medians beside the targets.
async fn report(backend: &str, database_url: impl Fn() -> Option<String>) {
    let mut rates = Vec::new();
    let mut p99s = Vec::new();
    for _ in 0..RUNS {
        rates.push(throughput(database_url()).await);
        p99s.push(latency_p99(database_url()).await);
    }
    let rate = common::median(rates.clone());
    let p99 = common::median(p99s.clone());
    println!(
        "webhook deliveries/s on {backend}, {EVENTS} events ({AGENTS} agents) to a 204 \
         receiver: median {rate:.0} over {RUNS} runs {rates:.0?} (target >= \
         {THROUGHPUT_TARGET:.0}) {}",
        common::verdict(rate >= THROUGHPUT_TARGET)
    );
    println!(
        "commit-to-delivery p99 on {backend} at {RATE_PER_SECOND} events/s: median {p99:.1} \
         ms over {RUNS} runs {p99s:.1?} (target < {P99_TARGET_MS:.0} ms) {}",
        common::verdict(p99 < P99_TARGET_MS)
    );
}

fn main() {
    let postgres = throwaway_postgres::start(throwaway_postgres::Options {
        durable: true,
        ..throwaway_postgres::Options::default()
    });
    let runtime = common::runtime();
    runtime.block_on(async {
        report("SQLite", || None).await;
        report("PostgreSQL", || Some(postgres.fresh_database())).await;
    });
}
