//! State sync against the simulator, whose agents take contacts, breaks and log off on
//! their own. The simulator's clock stands still and is stepped by the test, so every
//! poll sees a known instant of the simulator's ground truth.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use wfmd::cxone::Budget;
use wfmd::engine::sync::{StateSync, SyncSettings};
use wfmd::sim::{SimConfig, Simulator};
use wfmd::store::{Store, from_ms, history};

use crate::helpers::{TestDb, TestSim};

const INTERVAL: Duration = Duration::from_secs(10);

async fn busy_tenant() -> TestSim {
    TestSim::start(SimConfig {
        agents: 30,
        activity: true,
        time_scale: 0.0,
        ..SimConfig::default()
    })
    .await
}

fn state_sync(sim: &TestSim, store: &Store) -> StateSync {
    let config = sim.config("sqlite::memory:");
    let platform = wfmd::platform(
        &config,
        crate::helpers::http_client(),
        Arc::new(Budget::unlimited()),
    );
    let settings = SyncSettings {
        interval: INTERVAL,
        renew_after: Duration::from_secs(23 * 3_600),
        teams: Vec::new(),
        agents: Vec::new(),
        unfiltered: false,
    };
    StateSync::new(store.clone(), platform, settings)
}

/// Steps the simulator one interval and polls; returns the simulated poll instant.
async fn step(sim: &Simulator, sync: &mut StateSync) -> DateTime<Utc> {
    sim.clock().advance(INTERVAL);
    let at = sim.clock().now();
    sync.poll_once().await.unwrap();
    at
}

/// How a dialect reads a ground-truth state and reason.
pub(crate) type Projection = fn(&str, &str) -> String;

/// The v2 dialect reads the ground truth's states as they are.
fn as_is(state: &str, _reason: &str) -> String {
    state.to_owned()
}

/// What a poller at exactly `polls` must have recorded: for each agent, the distinct
/// ground-truth states in effect at those instants (as `project` reads them), with the
/// instant each began.
pub(crate) fn expected(
    sim: &Simulator,
    polls: &[DateTime<Utc>],
    project: Projection,
) -> Vec<(String, Vec<(String, i64)>)> {
    sim.agents()
        .into_iter()
        .map(|agent| {
            let mut seen: Vec<(String, i64)> = Vec::new();
            for poll in polls {
                let current = agent
                    .state_log
                    .iter()
                    .rev()
                    .find(|change| change.at <= *poll)
                    .expect("every agent has an initial state");
                let entry = (
                    project(&current.state, &current.reason),
                    current.at.timestamp_millis(),
                );
                // The sync sees a change when the state or its start moves.
                if seen.last() != Some(&entry) {
                    seen.push(entry);
                }
            }
            (agent.id, seen)
        })
        .collect()
}

pub(crate) async fn recorded(store: &Store, agent: &str) -> Vec<(String, i64)> {
    let far = Utc::now() + chrono::Duration::days(3_650);
    history::overlapping(store.reader(), agent, from_ms(0), far)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.state, row.started_at))
        .collect()
}

/// Every agent's recorded history is what a poller at `polls` must have recorded.
pub(crate) async fn assert_history_matches(
    sim: &Simulator,
    store: &Store,
    polls: &[DateTime<Utc>],
    project: Projection,
) {
    let mut changes = 0;
    for (agent, want) in expected(sim, polls, project) {
        // Beyond the state each agent was in at the first poll.
        changes += want.len() - 1;
        assert_eq!(recorded(store, &agent).await, want, "history of {agent}");
    }
    assert!(
        changes >= 20,
        "the agents barely moved ({changes}); the test proves little"
    );
}

#[tokio::test]
async fn history_matches_the_simulators_record_across_a_restart() {
    let sim = busy_tenant().await;
    let db = TestDb::new();
    let store = Store::open(&db.url()).await.unwrap();
    let mut polls = Vec::new();

    let mut sync = state_sync(&sim, &store);
    for _ in 0..40 {
        polls.push(step(&sim.sim, &mut sync).await);
    }
    // wfmd stops; agents carry on for five minutes; wfmd starts again.
    drop(sync);
    sim.sim.clock().advance(Duration::from_secs(300));
    let mut sync = state_sync(&sim, &store);
    for _ in 0..40 {
        polls.push(step(&sim.sim, &mut sync).await);
    }

    assert_history_matches(&sim.sim, &store, &polls, as_is).await;
    let verified = wfmd::store::audit::verify(store.reader()).await.unwrap();
    assert!(verified.is_intact());
}

#[tokio::test]
async fn an_expired_subscription_mid_run_loses_no_cycle_and_no_change() {
    let sim = busy_tenant().await;
    let db = TestDb::new();
    let store = Store::open(&db.url()).await.unwrap();
    let mut sync = state_sync(&sim, &store);
    let mut polls = Vec::new();
    for cycle in 0..60 {
        if cycle == 30 {
            sim.sim.expire_subscriptions();
        }
        polls.push(step(&sim.sim, &mut sync).await);
    }
    let subscriptions = sim.sim.subscriptions();
    assert_eq!(subscriptions.len(), 2, "recreated once");
    let polled: u64 = subscriptions.iter().map(|s| s.polls).sum();
    assert_eq!(polled, 60, "every cycle polled");
    assert_history_matches(&sim.sim, &store, &polls, as_is).await;
}
