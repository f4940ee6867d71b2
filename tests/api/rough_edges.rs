//! The rough edges an operator meets in the first week (#14): idempotency keys scoped to
//! their caller, `/readyz` saying nothing but its status to strangers, logs fit for
//! files and shippers.

use serde_json::{Value, json};
use wfmd::on;

use crate::auth::entry;
use crate::helpers::{Daemon, TestApp, TestDb, TestSim, eventually};

async fn transition_as(app: &TestApp, token: &str, agent: &str, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}/v1/agents/{agent}/transitions", app.address))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn an_idempotency_key_is_the_callers_own_and_never_returns_another_callers_result() {
    let sim = TestSim::default_tenant().await;
    let app = TestApp::spawn_with(sim, |config| {
        config.api_tokens = vec![
            entry("desk-a", "wfmd_desk-a", "supervisor"),
            entry("desk-b", "wfmd_desk-b", "supervisor"),
        ];
    })
    .await;
    let free = app.sim.free_agents();
    let (first, second) = (&free[0].id, &free[1].id);
    let key = "shift-change-0800";

    let (status, a) = transition_as(
        &app,
        "wfmd_desk-a",
        first,
        json!({"state": "NOT_READY", "idempotency_key": key}),
    )
    .await;
    assert_eq!(status, 200, "{a}");
    // The same caller gets its first result back.
    let (_, again) = transition_as(
        &app,
        "wfmd_desk-a",
        first,
        json!({"state": "NOT_READY", "idempotency_key": key}),
    )
    .await;
    assert_eq!(again["attempt_id"], a["attempt_id"]);
    assert_eq!(again["replayed"], true);

    // Another caller with the same key and the same request makes its own change…
    let (status, b) = transition_as(
        &app,
        "wfmd_desk-b",
        first,
        json!({"state": "NOT_READY", "idempotency_key": key}),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert_ne!(b["attempt_id"], a["attempt_id"], "not desk-a's result");
    assert_eq!(b["replayed"], false);
    assert_eq!(b["actor"], "desk-b");
    // A key one caller used for one change is free for another caller's other change:
    // no 422, which would tell desk-b that the key is taken and what for.
    let (status, _) = transition_as(
        &app,
        "wfmd_desk-a",
        first,
        json!({"state": "PAUSED", "idempotency_key": "break-1"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, other) = transition_as(
        &app,
        "wfmd_desk-b",
        second,
        json!({"state": "PAUSED", "idempotency_key": "break-1"}),
    )
    .await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["agent_id"], second.as_str());
    let keys: Vec<String> = on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT idempotency_key FROM transition_attempts WHERE idempotency_key IS NOT NULL
         ORDER BY idempotency_key",
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert_eq!(
        keys,
        [
            "api:desk-a:break-1",
            "api:desk-a:shift-change-0800",
            "api:desk-b:break-1",
            "api:desk-b:shift-change-0800"
        ]
    );
}

#[tokio::test]
async fn readiness_tells_a_stranger_only_that_it_is_not_ready_and_a_token_holder_why() {
    let sim = TestSim::default_tenant().await;
    let app = TestApp::spawn_with(sim, |config| {
        config.cxone.client_secret = "wrong-secret".to_owned().into();
        config.api_tokens = vec![entry("watch", "wfmd_watch", "viewer")];
    })
    .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body, json!({"status": "unavailable"}));

    let known = app
        .http
        .get(format!("{}/readyz", app.address))
        .bearer_auth("wfmd_watch")
        .send()
        .await
        .unwrap();
    assert_eq!(known.status(), 503);
    let body: Value = known.json().await.unwrap();
    assert_eq!(body["database"], "ok", "{body}");
    let platform = body["platform"].as_str().unwrap();
    assert!(platform.starts_with("unavailable: "), "{platform}");
    assert!(
        platform.contains("wfmd-sim"),
        "the platform's words: {platform}"
    );

    let wrong = app
        .http
        .get(format!("{}/readyz", app.address))
        .bearer_auth("wfmd_not-a-token")
        .send()
        .await
        .unwrap();
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "unavailable"}),
        "a wrong token is nobody"
    );
}

/// Starts `wfmd serve` (one API token configured) with its log in a file, sends it one
/// request with a wrong token once it serves, and returns the log after a clean stop.
async fn daemon_log(extra: &[(&str, &str)]) -> String {
    let sim = TestSim::start(wfmd::sim::SimConfig::default()).await;
    let db = TestDb::new();
    let mut env = sim.env(&db.url());
    env.push(("WFMD_LOG__LEVEL".into(), "info".into()));
    let tokens = serde_json::to_string(&[entry("desk", "wfmd_desk", "viewer")]).unwrap();
    env.push(("WFMD_API_TOKENS".into(), tokens));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let log = db.dir.path().join("wfmd.log");
    let daemon = Daemon::spawn_logging_to(&env, &log).await;
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut asked = false;
    eventually("no log line", async || {
        let text = read();
        if text.contains("refused: bad bearer token") {
            return Ok(());
        }
        if !asked && text.contains("wfmd is serving") {
            let refused = reqwest::Client::new()
                .get(format!("{}/v1/audit/verify", daemon.address))
                .bearer_auth("wfmd_not-a-token")
                .header("x-request-id", "req-log-7")
                .send()
                .await
                .unwrap();
            assert_eq!(refused.status(), 401);
            asked = true;
        }
        Err(text)
    })
    .await;
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
    read()
}

#[tokio::test]
async fn a_log_in_a_file_has_no_colour_codes_and_json_gives_one_object_a_line_with_its_request_span()
 {
    let text = daemon_log(&[]).await;
    assert!(text.contains(" INFO "), "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI escapes in a file: {text:?}");
    assert!(
        text.lines()
            .any(|l| l.contains("request_id=req-log-7") && l.contains("refused: bad bearer token")),
        "the refusal inside its request span: {text}"
    );

    let json = daemon_log(&[("WFMD_LOG__FORMAT", "json")]).await;
    let mut objects = Vec::new();
    for line in json.lines().filter(|l| !l.trim().is_empty()) {
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line}"));
        assert!(
            object["level"].is_string()
                && object["timestamp"].is_string()
                && object["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("wfmd")),
            "{line}"
        );
        objects.push(object);
    }
    assert!(
        objects
            .iter()
            .any(|o| o["fields"]["message"] == "wfmd is serving"),
        "{json}"
    );
    let refusal = objects
        .iter()
        .find(|o| o["fields"]["message"] == "refused: bad bearer token")
        .unwrap_or_else(|| panic!("no refusal: {json}"));
    assert_eq!(refusal["level"], "WARN");
    assert_eq!(refusal["fields"]["reason"], "invalid");
    assert_eq!(refusal["span"]["name"], "request", "{refusal}");
    assert_eq!(refusal["span"]["request_id"], "req-log-7");
    assert_eq!(refusal["span"]["route"], "/v1/audit/verify");
    assert!(!json.contains('\u{1b}'));
}

/// A body over its route's limit is refused 413 naming the limit, on a route that
/// reads JSON as on the others, rather than with "Failed to buffer the request body".
#[tokio::test]
async fn a_body_over_the_routes_limit_is_refused_naming_the_limit() {
    let app = TestApp::spawn().await;
    let agent = &app.sim.free_agents()[0].id;
    let (status, problem) = transition_as(
        &app,
        "unused",
        agent,
        json!({"state": "NOT_READY", "reason": "x".repeat(100 * 1024)}),
    )
    .await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["type"], "urn:wfmd:problem:body-too-large");
    assert_eq!(problem["limit_bytes"], 64 * 1024);
    assert_eq!(
        problem["detail"],
        "this route takes a body of at most 65536 bytes"
    );
}
