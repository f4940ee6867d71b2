//! State changes through the HTTP API: allowed, rejected, replayed, malformed.

use serde_json::{Value, json};
use wfmd::telemetry::names::TRANSITIONS_TOTAL;

use crate::helpers::{
    Dialect, GET_BREAKS, GET_SCHEDULE, SET_STATE, TestApp, TestDb, TestSim, on_both_backends,
    on_both_dialects, on_both_dialects_and_backends,
};

/// wfmd speaking `dialect` to the default tenant, on the database `db`.
async fn spawn(dialect: Dialect, db: TestDb) -> TestApp {
    TestApp::spawn_on_db(TestSim::default_tenant().await.on(dialect), db, |_| {}).await
}

on_both_dialects_and_backends!(allowed_change_reaches_the_platform_and_is_recorded_once);
async fn allowed_change_reaches_the_platform_and_is_recorded_once(dialect: Dialect, db: TestDb) {
    let app = spawn(dialect, db).await;
    let agent = app.sim.free_agents().remove(0);
    let target = if agent.state == "PAUSED" {
        "IDLE"
    } else {
        "PAUSED"
    };

    let (status, body) = app.set_state(&agent.id, target).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "succeeded");
    assert_eq!(body["to"], target);
    let default_reason = if target == "PAUSED" {
        "ADHOC"
    } else {
        "SYSTEM_IDLE"
    };
    assert_eq!(body["reason"], default_reason);
    let platform = app.sim.sim.agent(&agent.id).unwrap();
    // incontact has only Unavailable and a code for every not-ready state.
    let platform_state = match dialect {
        Dialect::V2 => target,
        Dialect::Incontact => "NOT_READY",
    };
    assert_eq!(
        (platform.state.as_str(), platform.reason.as_str()),
        (platform_state, default_reason)
    );
    assert_eq!(app.sim.changes(), 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM state_intervals WHERE ended_at IS NULL")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox_events").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_log").await, 1);
    let verified = wfmd::store::audit::verify(app.store.reader())
        .await
        .unwrap();
    assert!(verified.is_intact());
    assert_eq!(verified.entries, 1);
}

async fn assert_rejected(app: &TestApp, agent_id: &str, state: &str, violation: &str) {
    let before = app.sim.sim.agent(agent_id).unwrap();
    let posts_before = app.sim.changes();

    let response = app.transition(agent_id, json!({ "state": state })).await;

    assert_eq!(response.status(), 409);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["violation"], violation, "{problem}");
    assert_eq!(problem["status"], 409);
    assert!(problem["attempt_id"].is_string());
    let after = app.sim.sim.agent(agent_id).unwrap();
    assert_eq!(after.state, before.state, "the platform is untouched");
    assert_eq!(after.state_log.len(), before.state_log.len());
    assert_eq!(app.sim.changes(), posts_before, "nothing was sent");
}

on_both_dialects_and_backends!(unscheduled_agent_is_rejected_audited_and_announced);
async fn unscheduled_agent_is_rejected_audited_and_announced(dialect: Dialect, db: TestDb) {
    let app = spawn(dialect, db).await;
    let agent = app.sim.off_shift_agent();

    assert_rejected(&app, &agent.id, "READY", "AGENT_NOT_SCHEDULED").await;

    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_log WHERE action = 'transition.rejected'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_events WHERE event_type = 'transition.rejected'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM state_intervals").await, 0);
}

#[tokio::test]
async fn ready_in_a_mandatory_break_is_rejected_from_schedule_windows_or_the_break_endpoint() {
    let app = TestApp::spawn().await;
    let with_windows = app.sim.agent_in_break(true);
    assert_rejected(&app, &with_windows.id, "READY", "MANDATORY_BREAK_VIOLATION").await;
    assert_eq!(
        app.sim.calls(GET_BREAKS),
        0,
        "windows in the schedule answer it"
    );

    let without_windows = app.sim.agent_in_break(false);
    assert_rejected(
        &app,
        &without_windows.id,
        "READY",
        "MANDATORY_BREAK_VIOLATION",
    )
    .await;
    assert_eq!(app.sim.calls(GET_BREAKS), 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_events WHERE event_type = 'transition.rejected'")
            .await,
        2
    );
}

on_both_dialects!(agent_on_a_contact_is_refused_by_the_platform_as_a_conflict);
async fn agent_on_a_contact_is_refused_by_the_platform_as_a_conflict(dialect: Dialect) {
    let app = TestApp::spawn_on(dialect).await;
    let agent = app.sim.agent_on_contact();
    let (status, problem) = app.set_state(&agent.id, "NOT_READY").await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["violation"], "STATE_CONFLICT");
    assert_eq!(app.sim.sim.agent(&agent.id).unwrap().state, "ON_CONTACT");
}

on_both_dialects!(unknown_agent_is_404);
async fn unknown_agent_is_404(dialect: Dialect) {
    let app = TestApp::spawn_on(dialect).await;
    let (status, problem) = app.set_state("u_nobody", "NOT_READY").await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["type"], "urn:wfmd:problem:not-found");
}

#[tokio::test]
async fn repeated_changes_reuse_the_schedule_and_cost_one_call_each() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0);
    for state in ["NOT_READY", "READY", "PAUSED", "READY", "IDLE"] {
        let (status, body) = app.set_state(&agent.id, state).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(app.sim.calls(SET_STATE), 5);
    assert_eq!(app.sim.calls(GET_SCHEDULE), 1);
    assert!(app.sim.calls(GET_BREAKS) <= 1);
}

on_both_backends!(same_idempotency_key_twice_changes_the_agent_once);
async fn same_idempotency_key_twice_changes_the_agent_once(db: TestDb) {
    let app = TestApp::spawn_in(db).await;
    let agent = app.sim.free_agents().remove(0);
    let body = json!({"state": "NOT_READY", "reason": "MEETING", "idempotency_key": "desk-42"});

    let first: Value = app
        .transition(&agent.id, body.clone())
        .await
        .json()
        .await
        .unwrap();
    let second = app.transition(&agent.id, body).await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();

    assert_eq!(first["attempt_id"], second["attempt_id"]);
    assert_eq!(first["replayed"], false);
    assert_eq!(second["replayed"], true);
    assert_eq!(app.sim.calls(SET_STATE), 1);
    let log = app.sim.sim.agent(&agent.id).unwrap().state_log;
    assert_eq!(log.iter().filter(|c| c.reason == "MEETING").count(), 1);

    let reused = app
        .transition(
            &agent.id,
            json!({"state": "READY", "idempotency_key": "desk-42"}),
        )
        .await;
    assert_eq!(reused.status(), 422);
}

#[tokio::test]
async fn malformed_requests_get_problems_that_name_the_field() {
    let app = TestApp::spawn().await;
    let cases: [(&str, Value, u16, &str); 5] = [
        ("u_001", json!({"state": "LUNCH"}), 422, "state"),
        ("u_001", json!({"state": "ON_CONTACT"}), 422, "state"),
        ("u_001", json!({"reason": "BREAK"}), 422, "state"),
        (
            "u_001",
            json!({"state": "READY", "reason": 7}),
            422,
            "reason",
        ),
        (
            "u_001",
            json!({"state": "READY", "reason": "has space"}),
            422,
            "reason",
        ),
    ];
    for (agent, body, status, field) in cases {
        let response = app.transition(agent, body.clone()).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], field, "{body} -> {problem}");
    }
    let not_json = app
        .http
        .post(format!("{}/v1/agents/u_001/transitions", app.address))
        .header("content-type", "application/json")
        .body("{\"state\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let huge = app
        .http
        .post(format!("{}/v1/agents/u_001/transitions", app.address))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"state\":\"READY\",\"reason\":\"{}\"}}",
            "A".repeat(100_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(app.sim.calls(SET_STATE), 0);
}

#[tokio::test]
async fn history_shows_intervals_and_idle_time() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0);
    for state in ["NOT_READY", "READY"] {
        assert_eq!(app.set_state(&agent.id, state).await.0, 200);
    }
    let response = app.get(&format!("/v1/agents/{}/history", agent.id)).await;
    assert_eq!(response.status(), 200);
    let history: Value = response.json().await.unwrap();
    let states: Vec<&str> = history["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["NOT_READY", "READY"]);
    assert!(history["intervals"][1]["ended_at"].is_null());
    assert!(history["idle_ms"].as_i64().unwrap() >= 0);
    assert_eq!(
        history["idle_ms"], history["time_in_state_ms"]["NOT_READY"],
        "the only idle state so far"
    );

    let bad = app
        .get(&format!(
            "/v1/agents/{}/history?from=2026-11-20&to=2026-11-19",
            agent.id
        ))
        .await;
    assert_eq!(bad.status(), 400);
    let problem: Value = bad.json().await.unwrap();
    assert_eq!(problem["parameter"], "to");
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = TestApp::spawn().await;
    let health: Value = app.get("/healthz").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let agent = app.sim.free_agents().remove(0);
    app.set_state(&agent.id, "NOT_READY").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(TRANSITIONS_TOTAL), "{metrics}");
    let response = app.get("/v1/nothing-here").await;
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
    app.stop().await;
}

#[tokio::test]
async fn readiness_fails_when_the_platform_rejects_our_credentials() {
    let sim = crate::helpers::TestSim::default_tenant().await;
    let app = TestApp::spawn_with(sim, |config| {
        config.cxone.client_secret = "wrong-secret".to_owned().into();
    })
    .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    let platform = body["platform"].as_str().unwrap();
    assert!(platform.contains("wfmd-sim"), "{platform}");
    assert!(!platform.contains("wrong-secret"), "{platform}");
}

#[tokio::test]
async fn a_burst_on_a_fresh_daemon_fetches_each_agents_schedule_once() {
    const AGENTS: usize = 20;
    const CHANGES: usize = 10;
    let sim = TestSim::default_tenant().await;
    let agents: Vec<_> = sim.free_agents().into_iter().take(AGENTS).collect();
    assert_eq!(agents.len(), AGENTS);
    // State sync and the schedule book run, as in a deployment, over these agents: the
    // book fills itself while the changes come.
    let ids: Vec<String> = agents.iter().map(|agent| agent.id.clone()).collect();
    let app = TestApp::spawn_with(sim, |config| {
        config.sync.enabled = true;
        config.sync.agents = ids;
        config.compliance.enabled = true;
    })
    .await;
    let burst: Vec<_> = agents
        .iter()
        .map(|agent| {
            let (address, id, mut state) =
                (app.address.clone(), agent.id.clone(), agent.state.clone());
            tokio::spawn(async move {
                for _ in 0..CHANGES {
                    let target = if state == "READY" {
                        "NOT_READY"
                    } else {
                        "READY"
                    };
                    let (status, body) = crate::helpers::set_state_at(&address, &id, target).await;
                    assert_eq!(status, 200, "{body}");
                    state = target.to_owned();
                }
            })
        })
        .collect();
    for task in burst {
        task.await.unwrap();
    }
    let stats = app.sim.sim.stats();
    let schedule_calls: u64 = stats
        .by_route
        .iter()
        .filter(|(route, _)| route.contains("schedule"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(app.sim.calls(SET_STATE), (AGENTS * CHANGES) as u64);
    assert_eq!(
        schedule_calls, AGENTS as u64,
        "one schedule fetch per agent, shared by the change and the book: {:?}",
        stats.by_route
    );
    assert!(
        app.sim.calls(GET_BREAKS) <= AGENTS as u64,
        "at most one break-status call per agent: {:?}",
        stats.by_route
    );
}
