//! The `incontact` dialect's two figures.
//!
//! - Delta sync against v2's full snapshot: 2,000 agents, 5 % of them changing between
//!   polls. For each dialect, the bytes of one poll's answer and the time of one sync
//!   poll end to end (fetch, parse, diff, durable record). Target: the delta answer is at
//!   most a fifth of the full snapshot's bytes, and its poll takes no longer than v2's.
//! - Platform calls per change with warm caches (token, agents, the teams' unavailable
//!   codes, schedules), over 500 changes. Target <= 1.05, as on v2.
//!
//! Run: `cargo bench --bench incontact_sync`. Figures are medians of several runs.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use wfmd::cxone::Budget;
use wfmd::domain::AgentState;
use wfmd::engine::Outcome;
use wfmd::engine::sync::{StateSync, SyncSettings};
use wfmd::sim::SimConfig;
use wfmd::sim::incontact::{ACCESS_KEY_ID, ACCESS_KEY_SECRET};

const AGENTS: usize = 2_000;
const CHANGED: usize = AGENTS / 20;
const RUNS: usize = 9;
const INTERVAL: Duration = Duration::from_secs(10);

fn settings() -> SyncSettings {
    SyncSettings {
        interval: INTERVAL,
        renew_after: Duration::from_secs(23 * 3_600),
        teams: Vec::new(),
        agents: Vec::new(),
        unfiltered: false,
    }
}

fn tenant() -> SimConfig {
    SimConfig {
        agents: AGENTS,
        time_scale: 0.0,
        requests_per_minute: 0,
        ..SimConfig::default()
    }
}

/// The raw answers of both dialects' polls, read over HTTP as a client would.
struct Raw {
    http: reqwest::Client,
    root: String,
    v2_token: String,
    v2_subscription: String,
    ic_token: String,
    cursor: String,
}

impl Raw {
    async fn new(root: &str) -> Raw {
        let http = reqwest::Client::new();
        let v2: Value = http
            .post(format!("{root}/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "wfmd-sim"),
                ("client_secret", "wfmd-sim-secret"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let v2_token = v2["access_token"].as_str().unwrap().to_owned();
        let subscription: Value = http
            .post(format!("{root}/c9/api/v2/analytics/realtime/subscription"))
            .bearer_auth(&v2_token)
            .json(
                &json!({"name": "bench", "interval": 10000, "view": {"id": "users",
                "metrics": ["userId", "agentState", "statusChangedTimestamp"]}}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ic: Value = http
            .post(format!("{root}/auth/token"))
            .basic_auth("wfmd-sim", Some("wfmd-sim-secret"))
            .form(&[
                ("grant_type", "password"),
                ("username", ACCESS_KEY_ID),
                ("password", ACCESS_KEY_SECRET),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut raw = Raw {
            http,
            root: root.to_owned(),
            v2_token,
            v2_subscription: subscription["subscriptionId"].as_str().unwrap().to_owned(),
            ic_token: ic["access_token"].as_str().unwrap().to_owned(),
            cursor: String::new(),
        };
        raw.delta_bytes().await;
        raw
    }

    /// Bytes of a v2 subscription poll (every agent of the view).
    async fn full_bytes(&self) -> usize {
        let url = format!(
            "{}/c9/api/v2/analytics/realtime/subscription/{}",
            self.root, self.v2_subscription
        );
        let body = self
            .http
            .get(url)
            .bearer_auth(&self.v2_token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        body.len()
    }

    /// Bytes of an incontact delta poll since the last one (the first reads everyone).
    async fn delta_bytes(&mut self) -> usize {
        let mut url = format!("{}/c9/inContactAPI/services/v34.0/agents/states", self.root);
        if !self.cursor.is_empty() {
            url.push_str(&format!("?updatedSince={}", self.cursor));
        }
        let body = self
            .http
            .get(url)
            .bearer_auth(&self.ic_token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        if let Ok(answer) = serde_json::from_slice::<Value>(&body)
            && let Some(cursor) = answer["lastPollTime"].as_str()
        {
            self.cursor = cursor.to_owned();
        }
        body.len()
    }
}

/// `platform` reconfigured to speak `incontact` to its simulator (discovery at the
/// root); returns the root.
fn speak_incontact(platform: &mut common::SimulatedPlatform) -> String {
    let c = &mut platform.config.cxone;
    let root = c.base_url.clone();
    c.dialect = wfmd::config::Dialect::Incontact;
    c.auth_base = root.clone();
    c.base_url = String::new();
    c.access_key_id = ACCESS_KEY_ID.into();
    c.access_key_secret = ACCESS_KEY_SECRET.to_owned().into();
    c.break_activities.mandatory = vec!["Lunch".into(), "Break".into()];
    root
}

const CALL_COUNT_CHANGES: usize = 500;
const CALL_COUNT_RUNS: usize = 3;

/// Platform calls per change on `incontact`, the caches warmed by one change per agent
/// first (as a running daemon's are).
async fn calls_per_change() -> f64 {
    let mut platform = common::SimulatedPlatform::start(SimConfig {
        agents: 300,
        requests_per_minute: 0,
        ..SimConfig::default()
    })
    .await;
    speak_incontact(&mut platform);
    let engine = platform.engine(Budget::unlimited());
    let agents = platform.movable_agents();
    let burst = |count: usize, round: usize| {
        let engine = engine.clone();
        let agents = agents.clone();
        async move {
            let results: Vec<_> = futures::stream::iter(0..count)
                .map(|i| {
                    let engine = engine.clone();
                    let agent = agents[i % agents.len()].clone();
                    // Alternate per round, so every change is a real one.
                    let target = if (i / agents.len() + round).is_multiple_of(2) {
                        AgentState::Idle
                    } else {
                        AgentState::Paused
                    };
                    async move { common::api_change(&engine, agent, target).await }
                })
                .buffer_unordered(16)
                .collect()
                .await;
            assert!(results.iter().all(|t| t.outcome == Outcome::Succeeded));
        }
    };
    burst(agents.len(), 0).await;
    let before = platform.sim.stats().api_requests;
    burst(CALL_COUNT_CHANGES, 1).await;
    let made = platform.sim.stats().api_requests - before;
    made as f64 / CALL_COUNT_CHANGES as f64
}

fn main() {
    let runtime = common::runtime();
    runtime.block_on(async {
        wfmd::cxone::install_crypto_provider();
        let v2 = common::SimulatedPlatform::start(tenant()).await;
        let mut ic = common::SimulatedPlatform::start(tenant()).await;
        let root = speak_incontact(&mut ic);

        let mut v2_sync =
            StateSync::new(v2.store.clone(), v2.client(Budget::unlimited()), settings());
        let mut ic_sync =
            StateSync::new(ic.store.clone(), ic.client(Budget::unlimited()), settings());
        // Record everyone once.
        v2_sync.poll_once().await.unwrap();
        ic_sync.poll_once().await.unwrap();
        let mut raw = Raw::new(&root).await;

        let ids: Vec<String> = ic.sim.agents().into_iter().map(|a| a.id).collect();
        let (mut v2_ms, mut ic_ms, mut v2_bytes, mut ic_bytes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for run in 0..RUNS {
            let state = if run % 2 == 0 { "PAUSED" } else { "IDLE" };
            for id in ids.iter().skip(run * CHANGED % AGENTS).take(CHANGED) {
                v2.sim.force_state(id, state, "");
                ic.sim.force_state(id, state, "");
            }
            v2.sim.clock().advance(INTERVAL);
            ic.sim.clock().advance(INTERVAL);

            let started = Instant::now();
            let report = v2_sync.poll_once().await.unwrap();
            v2_ms.push(started.elapsed().as_secs_f64() * 1_000.0);
            assert_eq!(report.agents, AGENTS);

            let started = Instant::now();
            let report = ic_sync.poll_once().await.unwrap();
            ic_ms.push(started.elapsed().as_secs_f64() * 1_000.0);
            assert!(report.agents >= CHANGED && report.agents < AGENTS / 4);

            v2_bytes.push(raw.full_bytes().await as f64);
            ic_bytes.push(raw.delta_bytes().await as f64);
        }
        let (v2_t, ic_t) = (common::median(v2_ms), common::median(ic_ms));
        let (v2_b, ic_b) = (common::median(v2_bytes), common::median(ic_bytes));
        println!(
            "poll answer, {AGENTS} agents, {CHANGED} changed: v2 full snapshot {:.0} KiB, \
             incontact delta {:.0} KiB ({:.1} %) (target <= 20 %) {}",
            v2_b / 1024.0,
            ic_b / 1024.0,
            ic_b / v2_b * 100.0,
            common::verdict(ic_b <= v2_b / 5.0)
        );
        println!(
            "sync poll end to end, {AGENTS} agents, {CHANGED} changed: v2 median {v2_t:.1} ms, \
             incontact median {ic_t:.1} ms over {RUNS} polls (target: incontact <= v2) {}",
            common::verdict(ic_t <= v2_t)
        );

        let mut runs = Vec::new();
        for _ in 0..CALL_COUNT_RUNS {
            runs.push(calls_per_change().await);
        }
        let per_change = common::median(runs.clone());
        println!(
            "incontact platform calls per change, warm caches: median {per_change:.3} over \
             {CALL_COUNT_RUNS} runs of {CALL_COUNT_CHANGES} {runs:.3?} (target <= 1.05) {}",
            common::verdict(per_change <= 1.05)
        );
    });
}
