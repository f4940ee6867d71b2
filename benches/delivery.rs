//! Webhook delivery benchmarks against a local receiver that answers 204 at once.
//!
//! - throughput: 10,000 events (2,000 agents × 5) from the outbox to one endpoint.
//!   Target ≥ 2,000 deliveries/s.
//! - latency: events committed at 50 per second, from commit to arrival.
//!   Target p99 < 100 ms.
//!
//! Run: `cargo bench --bench delivery`. Figures are medians of several runs.

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio_util::sync::CancellationToken;
use wfmd::config::{DeliveryConfig, webhook_key};
use wfmd::delivery::{Dispatcher, Endpoint, Signer};
use wfmd::domain::events::{Event, StateChanged};
use wfmd::domain::{AgentState, Origin};
use wfmd::store::Store;
use wfmd::store::outbox;

const RUNS: usize = 3;
const EVENTS: usize = 10_000;
const AGENTS: usize = 2_000;
const RATE_PER_SECOND: u64 = 50;
const LATENCY_EVENTS: usize = 500;

/// Arrival instants by webhook id.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver() -> (String, Arc<AtomicUsize>, Arrivals) {
    let count = Arc::new(AtomicUsize::new(0));
    let arrivals: Arrivals = Arc::default();
    let app = Router::new().route(
        "/hooks",
        post({
            let (count, arrivals) = (count.clone(), arrivals.clone());
            move |headers: HeaderMap| async move {
                let id = headers["webhook-id"].to_str().unwrap().to_owned();
                arrivals
                    .lock()
                    .unwrap()
                    .entry(id)
                    .or_insert_with(Instant::now);
                count.fetch_add(1, Ordering::SeqCst);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, count, arrivals)
}

async fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(&format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ))
    .await
    .unwrap()
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

async fn throughput() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    for chunk in 0..EVENTS / 1_000 {
        enqueue(&store, chunk * 1_000, 1_000).await;
    }
    let (url, count, _) = receiver().await;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(dispatcher(&store, &url).run(stop.clone(), Duration::from_secs(5)));
    while count.load(Ordering::SeqCst) < EVENTS {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    run.await.unwrap();
    EVENTS as f64 / elapsed.as_secs_f64()
}

async fn latency_p99() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let (url, _, arrivals) = receiver().await;
    let stop = CancellationToken::new();
    let run = tokio::spawn(dispatcher(&store, &url).run(stop.clone(), Duration::from_secs(5)));
    let mut committed = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1_000 / RATE_PER_SECOND));
    for i in 0..LATENCY_EVENTS {
        tick.tick().await;
        let id = enqueue(&store, i, 1).await.remove(0);
        committed.insert(id, Instant::now());
    }
    while arrivals.lock().unwrap().len() < LATENCY_EVENTS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    run.await.unwrap();
    let arrivals = arrivals.lock().unwrap();
    let mut latencies: Vec<f64> = committed
        .iter()
        .map(|(id, at)| arrivals[id].saturating_duration_since(*at).as_secs_f64() * 1_000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    latencies[latencies.len() * 99 / 100]
}

fn main() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let mut rates = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..RUNS {
            rates.push(throughput().await);
            p99s.push(latency_p99().await);
        }
        let rate = common::median(rates.clone());
        let p99 = common::median(p99s.clone());
        println!(
            "webhook deliveries/s, {EVENTS} events to a 204 receiver: median {rate:.0} over {RUNS} runs \
             {rates:.0?} (target >= 2000) {}",
            common::verdict(rate >= 2_000.0)
        );
        println!(
            "commit-to-delivery p99 at {RATE_PER_SECOND} events/s: median {p99:.1} ms over {RUNS} runs \
             {p99s:.1?} (target < 100 ms) {}",
            common::verdict(p99 < 100.0)
        );
    });
}
