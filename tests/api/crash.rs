//! Crash safety and shutdown of a real `wfmd serve` process.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use wfmd::on;

use serde_json::{Value, json};
use wfmd::sim::SimConfig;
use wfmd::store::Store;

use crate::helpers::{
    Daemon, TestDb, TestSim, on_both_backends, wait_until, wait_until_every, wfmd,
};

/// Checks that every recorded change is complete: each attempt has exactly its audit
/// entry, a succeeded one its interval and `agent.state_changed` event, a rejected one
/// its `transition.rejected` event; nothing exists without its attempt; the chain holds.
async fn assert_all_or_nothing(store: &Store) -> usize {
    let attempts: Vec<(String, String, String)> = on!(store.reader(), |c| sqlx::query_as(
        "SELECT id, agent_id, outcome FROM transition_attempts"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    let audit: Vec<String> = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT subject_id FROM audit_log"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    let intervals: Vec<String> = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT attempt_id FROM state_intervals WHERE attempt_id IS NOT NULL"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    let events: Vec<(String, String)> = on!(store.reader(), |c| sqlx::query_as(
        "SELECT event_type, json_extract(payload, '$.data.attemptId') FROM outbox_events",
    )
    .fetch_all(c)
    .await)
    .unwrap();

    let ids: HashSet<&str> = attempts.iter().map(|(id, _, _)| id.as_str()).collect();
    let tally = |items: &mut dyn Iterator<Item = &str>| {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for item in items {
            *counts.entry(item.to_owned()).or_default() += 1;
        }
        counts
    };
    let audit_counts = tally(&mut audit.iter().map(String::as_str));
    let interval_counts = tally(&mut intervals.iter().map(String::as_str));
    let event_counts = tally(&mut events.iter().map(|(_, id)| id.as_str()));
    for (id, agent, outcome) in &attempts {
        assert_eq!(
            audit_counts.get(id),
            Some(&1),
            "audit entry of {id} ({agent})"
        );
        let (want_interval, want_event) = match outcome.as_str() {
            "succeeded" => (1, 1),
            "rejected" => (0, 1),
            _ => (0, 0),
        };
        assert_eq!(
            interval_counts.get(id).copied().unwrap_or(0),
            want_interval,
            "{id}"
        );
        assert_eq!(
            event_counts.get(id).copied().unwrap_or(0),
            want_event,
            "{id}"
        );
    }
    for id in audit
        .iter()
        .chain(&intervals)
        .chain(events.iter().map(|(_, id)| id))
    {
        assert!(ids.contains(id.as_str()), "{id} has no attempt");
    }
    let open_per_agent: Vec<(String, i64)> = on!(store.reader(), |c| sqlx::query_as(
        "SELECT agent_id, COUNT(*) FROM state_intervals WHERE ended_at IS NULL GROUP BY agent_id HAVING COUNT(*) > 1",
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert!(open_per_agent.is_empty(), "{open_per_agent:?}");
    let verified = wfmd::store::audit::verify(store.reader()).await.unwrap();
    assert!(verified.is_intact(), "{:?}", verified.first_break);
    assert_eq!(verified.entries as usize, attempts.len());
    attempts.len()
}

/// The intents no record has settled yet: changes sent whose outcome is not recorded.
async fn intents_left(store: &Store) -> i64 {
    on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM transition_intents"
    )
    .fetch_one(c)
    .await)
    .unwrap()
}

on_both_backends!(kill_9_during_a_burst_leaves_every_change_whole_or_absent);
async fn kill_9_during_a_burst_leaves_every_change_whole_or_absent(db: TestDb) {
    let sim = TestSim::start(SimConfig {
        agents: 250,
        ..SimConfig::default()
    })
    .await;
    let env = sim.env(&db.url());
    let daemon = Daemon::spawn(&env).await;
    let agents: Vec<String> = sim.sim.agents().into_iter().map(|a| a.id).collect();

    let http = crate::helpers::http_client();
    let answered = Arc::new(AtomicUsize::new(0));
    let burst: Vec<_> = agents
        .iter()
        .cycle()
        .take(200)
        .enumerate()
        .map(|(i, agent)| {
            let (http, answered) = (http.clone(), answered.clone());
            let url = format!("{}/v1/agents/{agent}/transitions", daemon.address);
            let state = ["NOT_READY", "PAUSED", "READY", "LOGGED_OUT"][i % 4];
            tokio::spawn(async move {
                let result = http.post(url).json(&json!({ "state": state })).send().await;
                if result.is_ok() {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Kill once part of the burst is through, while the rest is in flight.
    wait_until_every(
        std::time::Duration::from_millis(2),
        "the burst stalled",
        || async { answered.load(Ordering::SeqCst) >= 40 },
    )
    .await;
    daemon.signal("KILL");
    let status = daemon.wait().await;
    assert!(!status.success());
    for request in burst {
        request.await.unwrap();
    }

    let store = Store::open(&db.url()).await.unwrap();
    let recorded = assert_all_or_nothing(&store).await;
    // Changes the kill caught between the platform's answer and their record: each
    // left its intent, which the next start settles (records) within seconds.
    let left = intents_left(&store).await;
    eprintln!("recorded before kill: {recorded}, intents left: {left}");
    assert!(recorded >= 40, "only {recorded} recorded");
    assert!(recorded < 200 + 1);
    store.close().await;

    // The daemon starts again on the same database and carries on.
    let daemon = Daemon::spawn(&env).await;
    let free = sim.free_agents().remove(0);
    let response = http
        .post(format!(
            "{}/v1/agents/{}/transitions",
            daemon.address, free.id
        ))
        .json(&json!({"state": "IDLE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
    let store = Store::open(&db.url()).await.unwrap();
    let after = assert_all_or_nothing(&store).await;
    // The new change, and any left intent the restarted daemon settled before it stopped
    // (one it had not reached is still there for the next start).
    let settled = after - (recorded + 1);
    let still_left = intents_left(&store).await;
    assert_eq!(
        settled as i64 + still_left,
        left,
        "recorded {after} after the restart, {recorded} before"
    );

    let url = db.url();
    let output = tokio::task::spawn_blocking(move || {
        wfmd()
            .env("WFMD_DATABASE__URL", url)
            .args(["audit", "verify"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success());
}

#[tokio::test]
async fn sigterm_lets_in_flight_changes_finish_and_exits_0() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::new();
    let daemon = Daemon::spawn(&sim.env(&db.url())).await;
    let agent = sim.free_agents().remove(0);
    // Each platform call takes a while, so the change is in flight when SIGTERM comes.
    sim.sim.set_faults(wfmd::sim::Faults {
        latency: std::time::Duration::from_millis(400),
        ..Default::default()
    });
    let request = tokio::spawn({
        let url = format!("{}/v1/agents/{}/transitions", daemon.address, agent.id);
        async move {
            crate::helpers::http_client()
                .post(url)
                .json(&json!({"state": "NOT_READY"}))
                .send()
                .await
        }
    });
    wait_until("the change never reached the platform", || async {
        sim.sim.stats().api_requests > 0
    })
    .await;
    daemon.signal("TERM");

    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["outcome"], "succeeded");
    let status = daemon.wait().await;
    assert!(status.success(), "{status:?}");
}
