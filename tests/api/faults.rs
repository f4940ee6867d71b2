//! Platform faults: rate limits, platform errors, timeouts, revoked and bad credentials.

use std::sync::Arc;
use std::time::{Duration, Instant};
use wfmd::on;

use serde_json::Value;
use wfmd::sim::SimConfig;

use crate::helpers::{Dialect, SET_STATE, TestApp, TestSim};

/// `count` callers asking the platform client for one agent's state at the same time.
async fn concurrent_state_reads(app: &TestApp, agent_id: &str, count: usize) {
    let calls: Vec<_> = (0..count)
        .map(|_| {
            let platform = Arc::clone(app.engine.platform());
            let id = agent_id.to_owned();
            tokio::spawn(async move { platform.agent_state(&id).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn retry_after_is_honoured_before_retrying_a_429() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0);
    // Warm the token and schedule so only the state change meets the 429.
    assert_eq!(app.set_state(&agent.id, "NOT_READY").await.0, 200);
    app.sim.sim.fail_next_on(SET_STATE, 1, 429, Some(2));

    let started = Instant::now();
    let (status, body) = app.set_state(&agent.id, "PAUSED").await;

    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retried after {:?}, before Retry-After",
        started.elapsed()
    );
    assert_eq!(
        app.sim.calls(SET_STATE),
        3,
        "first change, the 429, the retry"
    );
}

#[tokio::test]
async fn two_platform_errors_then_success_is_recorded_once() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0);
    assert_eq!(app.set_state(&agent.id, "NOT_READY").await.0, 200);
    app.sim.sim.fail_next_on(SET_STATE, 2, 503, None);

    let (status, body) = app.set_state(&agent.id, "PAUSED").await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(app.sim.calls(SET_STATE), 4);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_attempts").await,
        2
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM state_intervals").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox_events").await, 2);
}

#[tokio::test]
async fn platform_errors_beyond_max_retries_record_a_failed_attempt_and_change_nothing() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0);
    assert_eq!(app.set_state(&agent.id, "NOT_READY").await.0, 200);
    app.sim.sim.fail_next_on(SET_STATE, 10, 500, None);

    let (status, problem) = app.set_state(&agent.id, "PAUSED").await;

    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["transition"]["outcome"], "failed");
    assert_eq!(
        app.sim.calls(SET_STATE),
        1 + 4,
        "max_retries = 3 → 4 attempts"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_attempts WHERE outcome = 'failed'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_log WHERE action = 'transition.failed'")
            .await,
        1
    );
    let open_state: String = on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT state FROM state_intervals WHERE ended_at IS NULL"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(open_state, "NOT_READY", "the open interval is unchanged");
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox_events").await, 1);
}

#[tokio::test]
async fn a_hanging_request_times_out_and_is_retried() {
    let sim = TestSim::default_tenant().await;
    let app = TestApp::spawn_with(sim, |config| config.cxone.request_timeout_ms = 300).await;
    let agent = app.sim.free_agents().remove(0);
    assert_eq!(app.set_state(&agent.id, "NOT_READY").await.0, 200);
    app.sim.sim.hang_next_on(SET_STATE, 1);

    let (status, body) = app.set_state(&agent.id, "PAUSED").await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(app.sim.sim.agent(&agent.id).unwrap().state, "PAUSED");
}

#[tokio::test]
async fn revoked_token_is_refreshed_once_and_the_call_succeeds() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0);
    assert_eq!(app.set_state(&agent.id, "NOT_READY").await.0, 200);
    assert_eq!(app.sim.sim.stats().token_requests, 1);
    app.sim.sim.revoke_tokens();

    let (status, body) = app.set_state(&agent.id, "PAUSED").await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(app.sim.sim.stats().token_requests, 2);
}

#[tokio::test]
async fn early_token_expiry_is_survived_with_one_refresh() {
    let app = TestApp::spawn().await;
    // The first token dies at once server-side although it claims an hour of life.
    app.sim.sim.set_token_validity(Some(Duration::ZERO));
    app.engine.platform().check_access().await.unwrap();
    app.sim.sim.set_token_validity(None);
    let agent = app.sim.free_agents().remove(0);

    let (status, body) = app.set_state(&agent.id, "NOT_READY").await;

    assert_eq!(status, 200, "{body}");
    let stats = app.sim.sim.stats();
    assert_eq!(stats.token_requests, 2, "{stats:?}");
    assert_eq!(stats.unauthorized, 1, "{stats:?}");
}

#[tokio::test]
async fn bad_client_secret_fails_clearly_without_a_retry_storm() {
    let sim = TestSim::default_tenant().await;
    let app = TestApp::spawn_with(sim, |config| {
        config.cxone.client_secret = "not-the-secret".to_owned().into();
    })
    .await;
    let agent = app.sim.free_agents().remove(0);

    let (status, problem) = app.set_state(&agent.id, "NOT_READY").await;

    assert_eq!(status, 503, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("wfmd-sim"), "names the client id: {detail}");
    assert!(
        !detail.contains("not-the-secret"),
        "never the secret: {detail}"
    );
    assert_eq!(app.sim.sim.stats().token_requests, 1, "no retry storm");
    assert_eq!(app.sim.calls(SET_STATE), 0);
}

#[tokio::test]
async fn two_hundred_concurrent_callers_share_one_token_refresh() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0);
    concurrent_state_reads(&app, &agent.id, 200).await;
    assert_eq!(app.sim.sim.stats().token_requests, 1);

    app.sim.sim.revoke_tokens();
    concurrent_state_reads(&app, &agent.id, 200).await;
    assert_eq!(
        app.sim.sim.stats().token_requests,
        2,
        "one refresh for all 200 callers that met the revoked token"
    );
}

#[tokio::test]
async fn the_budget_keeps_wfmd_under_the_platform_rate_limit() {
    let sim = TestSim::start(SimConfig {
        agents: 60,
        requests_per_minute: 600,
        ..SimConfig::default()
    })
    .await;
    let app = TestApp::spawn_with(sim, |config| config.cxone.requests_per_minute = 600).await;
    let agent = app.sim.free_agents().remove(0);
    concurrent_state_reads(&app, &agent.id, 40).await;
    let stats = app.sim.sim.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.api_requests, 40);
}

#[tokio::test]
async fn resource_server_base_uri_from_the_token_is_used_for_api_calls() {
    // The default simulator serves the API only under the cluster path it advertises;
    // the configured base answers 401. A change succeeding proves the client used it.
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0);
    let (status, body): (u16, Value) = app.set_state(&agent.id, "NOT_READY").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.sim.sim.stats().unauthorized, 0);
}

#[tokio::test]
async fn a_platform_that_stops_answering_makes_wfmd_unready_once_state_sync_falls_behind() {
    // The incontact dialect's delta feed has no platform minimum for the poll interval
    // (v2 subscriptions take 10 s at least), so the test need not wait for two 10 s polls.
    let sim = TestSim::default_tenant().await.on(Dialect::Incontact);
    let app = TestApp::spawn_with(sim, |c| {
        c.sync.enabled = true;
        c.sync.interval_ms = 200;
        c.cxone.request_timeout_ms = 500;
    })
    .await;
    crate::helpers::wait_until("state sync never polled", || async {
        let ready = app.readiness_becomes(200).await;
        assert_eq!(ready["platform"], "ok", "{ready}");
        !ready["sync"]["last_poll"].is_null()
    })
    .await;
    let token_calls = app.sim.sim.stats().token_requests;

    // Every API call hangs from now on; the cached token stays valid.
    app.sim.sim.set_faults(wfmd::sim::Faults {
        timeout_ratio: 1.0,
        ..wfmd::sim::Faults::default()
    });
    let ready = app.readiness_becomes(503).await;
    let platform = ready["platform"].as_str().unwrap();
    assert!(
        platform.contains("state sync has not polled since"),
        "{platform}"
    );
    assert_eq!(
        app.sim.sim.stats().token_requests,
        token_calls,
        "readiness costs the platform no call"
    );

    app.sim.sim.set_faults(wfmd::sim::Faults::default());
    app.readiness_becomes(200).await;
}
