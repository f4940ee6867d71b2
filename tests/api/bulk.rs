//! Bulk jobs over HTTP against the simulator: per-agent outcomes from its ground
//! truth, cancel, kill -9 and resume, revert, validation, `wfmd bulk`, the webhook.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wfmd::on;

use chrono::Utc;
use serde_json::{Value, json};
use wfmd::config::WebhookConfig;
use wfmd::cxone::Budget;
use wfmd::engine::sync::{StateSync, SyncSettings};
use wfmd::sim::{Faults, SimAgent, SimConfig};
use wfmd::telemetry::names::BULK_ITEMS_TOTAL;

use crate::helpers::{
    DEADLINE, Daemon, Dialect, SET_STATE, TestApp, TestDb, TestSim, http_client, on_both_dialects,
    on_both_dialects_and_backends, wfmd,
};
use crate::receiver::{Receiver, SECRET, verify_with_standardwebhooks};

/// POSTs a job to `address`; the status and the JSON answer.
async fn submit(http: &reqwest::Client, address: &str, body: &Value) -> (u16, Value) {
    let response = http
        .post(format!("{address}/v1/bulk-transitions"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn job(http: &reqwest::Client, address: &str, job_id: &str) -> Value {
    let response = http
        .get(format!("{address}/v1/bulk-transitions/{job_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls the job until `done` says so, failing the test after the deadline.
async fn wait_job(
    http: &reqwest::Client,
    address: &str,
    job_id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    crate::helpers::eventually(what, || async {
        let view = job(http, address, job_id).await;
        if done(&view) {
            Ok(view)
        } else {
            Err(view.to_string())
        }
    })
    .await
}

fn finished(view: &Value) -> bool {
    matches!(view["status"].as_str(), Some("completed" | "cancelled"))
}

/// Submits a job that must be accepted and waits for its end.
pub(crate) async fn run_job(app: &TestApp, body: Value) -> Value {
    let (status, accepted) = submit(&app.http, &app.address, &body).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap().to_owned();
    wait_job(
        &app.http,
        &app.address,
        &id,
        "the job did not finish",
        finished,
    )
    .await
}

fn items_by_agent(view: &Value) -> HashMap<String, Value> {
    view["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["agent"].as_str().unwrap().to_owned(), item.clone()))
        .collect()
}

fn ids(agents: &[SimAgent]) -> Vec<String> {
    agents.iter().map(|a| a.id.clone()).collect()
}

/// State changes the platform made for `agent` since the test began (the agents hold
/// still, so every entry after the first is a change someone asked for).
fn changes(sim: &TestSim, agent: &str) -> Vec<(String, String)> {
    sim.sim
        .agent(agent)
        .unwrap()
        .state_log
        .into_iter()
        .skip(1)
        .map(|c| (c.state, c.reason))
        .collect()
}

on_both_dialects!(bulk_of_200_agents_gets_each_agent_the_outcome_its_shift_and_breaks_call_for);
async fn bulk_of_200_agents_gets_each_agent_the_outcome_its_shift_and_breaks_call_for(
    dialect: Dialect,
) {
    let sim = TestSim::start(SimConfig {
        agents: 200,
        ..SimConfig::default()
    })
    .await
    .on(dialect);
    let app = TestApp::spawn_with(sim, |_| {}).await;
    let now = Utc::now();
    let agents = app.sim.sim.agents();
    // The simulator's ground truth says what compliance must make of each agent.
    let expected: HashMap<String, (&str, Option<&str>)> = agents
        .iter()
        .map(|a| {
            let want = if !a.on_shift_at(now) {
                ("rejected", Some("AGENT_NOT_SCHEDULED"))
            } else if a.in_mandatory_break_at(now) {
                ("rejected", Some("MANDATORY_BREAK_VIOLATION"))
            } else if a.state == "ON_CONTACT" {
                ("rejected", Some("STATE_CONFLICT"))
            } else {
                ("succeeded", None)
            };
            (a.id.clone(), want)
        })
        .collect();
    let tally = |outcome: &str, violation: Option<&str>| {
        expected
            .values()
            .filter(|(o, v)| *o == outcome && (violation.is_none() || *v == violation))
            .count()
    };
    for violation in [
        "AGENT_NOT_SCHEDULED",
        "MANDATORY_BREAK_VIOLATION",
        "STATE_CONFLICT",
    ] {
        assert!(tally("rejected", Some(violation)) >= 10, "{violation}");
    }

    let view = run_job(&app, json!({"agents": ids(&agents), "state": "READY"})).await;

    assert_eq!(view["status"], "completed");
    assert_eq!(view["total"], 200);
    assert_eq!(view["succeeded"], tally("succeeded", None));
    assert_eq!(view["rejected"], tally("rejected", None));
    assert_eq!(view["failed"], 0);
    let items = items_by_agent(&view);
    for agent in &agents {
        let item = &items[&agent.id];
        let (outcome, violation) = expected[&agent.id];
        assert_eq!(item["outcome"], outcome, "{}: {item}", agent.id);
        assert_eq!(
            item["violation"].as_str(),
            violation,
            "{}: {item}",
            agent.id
        );
        let made = changes(&app.sim, &agent.id);
        if outcome == "succeeded" {
            assert_eq!(
                made,
                [("READY".to_owned(), "WORKING".to_owned())],
                "{}",
                agent.id
            );
        } else {
            assert!(made.is_empty(), "{} was changed: {made:?}", agent.id);
        }
    }
    assert_eq!(
        app.sim.changes() as usize,
        tally("succeeded", None) + tally("rejected", Some("STATE_CONFLICT")),
        "one call per allowed agent; compliance rejections never reach the platform"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_attempts WHERE origin = 'bulk'")
            .await,
        200
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "{BULK_ITEMS_TOTAL}{{outcome=\"rejected\",tenant=\"default\"}}"
        )),
        "{metrics}"
    );
}

on_both_dialects!(cancel_midway_stops_the_rest_and_leaves_cancelled_agents_untouched);
async fn cancel_midway_stops_the_rest_and_leaves_cancelled_agents_untouched(dialect: Dialect) {
    let sim = TestSim::start(SimConfig {
        agents: 200,
        ..SimConfig::default()
    })
    .await
    .on(dialect);
    let app = TestApp::spawn_with(sim, |config| config.bulk.concurrency = 2).await;
    // Slow calls, so the job is far from its end when the cancel comes.
    app.sim.sim.set_faults(Faults {
        latency: Duration::from_millis(40),
        ..Faults::default()
    });
    let free = ids(&app.sim.free_agents());
    let (status, accepted) = submit(
        &app.http,
        &app.address,
        &json!({"agents": free, "state": "NOT_READY", "reason": "MEETING"}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap();
    wait_job(&app.http, &app.address, id, "no item settled", |v| {
        v["succeeded"].as_i64().unwrap() >= 3
    })
    .await;

    let response = app
        .http
        .delete(format!("{}/v1/bulk-transitions/{id}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["cancel_requested"], true);

    let view = wait_job(&app.http, &app.address, id, "not cancelled", finished).await;
    assert_eq!(view["status"], "cancelled");
    let cancelled = view["cancelled"].as_i64().unwrap();
    let succeeded = view["succeeded"].as_i64().unwrap();
    assert!(cancelled > 0 && succeeded >= 3, "{view}");
    assert_eq!(
        succeeded
            + view["rejected"].as_i64().unwrap()
            + view["failed"].as_i64().unwrap()
            + cancelled,
        free.len() as i64
    );
    for (agent, item) in items_by_agent(&view) {
        let made = changes(&app.sim, &agent);
        match item["outcome"].as_str().unwrap() {
            "cancelled" => assert!(made.is_empty(), "cancelled {agent} was changed: {made:?}"),
            "succeeded" => assert_eq!(made.len(), 1, "{agent}"),
            _ => {}
        }
    }
    assert_eq!(
        app.sim.changes() as i64,
        free.len() as i64 - cancelled,
        "no cancelled agent reached the platform"
    );
    let again = app
        .http
        .delete(format!("{}/v1/bulk-transitions/{id}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        200,
        "cancelling a cancelled job changes nothing"
    );
}

on_both_dialects_and_backends!(bulk_change_resumes_after_kill_9_and_changes_no_agent_twice);
async fn bulk_change_resumes_after_kill_9_and_changes_no_agent_twice(dialect: Dialect, db: TestDb) {
    let sim = TestSim::start(SimConfig {
        agents: 200,
        ..SimConfig::default()
    })
    .await
    .on(dialect);
    sim.sim.set_faults(Faults {
        latency: Duration::from_millis(15),
        ..Faults::default()
    });
    let mut env = sim.env(&db.url());
    env.push(("WFMD_BULK__CONCURRENCY".into(), "8".into()));
    let daemon = Daemon::spawn(&env).await;
    let http = http_client();
    let free = ids(&sim.free_agents());
    let (status, accepted) = submit(
        &http,
        &daemon.address,
        &json!({"agents": free, "state": "NOT_READY", "reason": "MEETING"}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap().to_owned();
    let before = wait_job(&http, &daemon.address, &id, "no progress", |v| {
        v["succeeded"].as_i64().unwrap() >= 20
    })
    .await;
    daemon.signal("KILL");
    assert!(!daemon.wait().await.success());
    let store = wfmd::store::Store::open(&db.url()).await.unwrap();
    let pending: i64 = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM bulk_items WHERE outcome = 'pending'"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    store.close().await;
    assert!(pending > 0, "killed midway: {before}");

    let daemon = Daemon::spawn(&env).await;
    let view = wait_job(&http, &daemon.address, &id, "did not resume", finished).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["succeeded"], free.len(), "{view}");
    for agent in &free {
        assert_eq!(
            changes(&sim, agent),
            [("NOT_READY".to_owned(), "MEETING".to_owned())],
            "{agent} changed once"
        );
    }
    // Calls the kill cut off were counted by the simulator but never applied (their
    // agents' logs above show one change each); at most one per item in flight.
    let calls = sim.changes() as usize;
    assert!(
        (free.len()..=free.len() + 8).contains(&calls),
        "{calls} set-state calls for {} agents",
        free.len()
    );
    let bulk_completed = {
        daemon.signal("TERM");
        assert!(daemon.wait().await.success());
        let store = wfmd::store::Store::open(&db.url()).await.unwrap();
        let n: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'bulk.completed'",
        )
        .fetch_one(c)
        .await)
        .unwrap();
        let intact = wfmd::store::audit::verify(store.reader()).await.unwrap();
        assert!(intact.is_intact());
        n
    };
    assert_eq!(bulk_completed, 1);
}

/// Records the platform's current states as state sync would (one poll).
async fn sync_once(app: &TestApp) {
    let config = app.sim.config("sqlite::memory:");
    let platform = wfmd::platform(&config, http_client(), Arc::new(Budget::unlimited()));
    let settings = SyncSettings {
        interval: Duration::from_secs(10),
        renew_after: Duration::from_secs(3_600),
        teams: Vec::new(),
        agents: Vec::new(),
        unfiltered: false,
    };
    let mut sync = StateSync::new(app.store.clone(), platform, settings);
    sync.poll_once().await.unwrap();
}

#[tokio::test]
async fn a_revert_with_a_json_null_body_is_a_revert_without_options() {
    let app = TestApp::spawn().await;
    let agents = ids(&app.sim.free_agents()[..1]);
    let done = run_job(
        &app,
        json!({"agents": agents, "state": "NOT_READY", "reason": "MEETING"}),
    )
    .await;
    let job = done["job_id"].as_str().unwrap();
    // The document offers `RevertBody` or `null`; a client generated from it sends
    // `null` for "no options".
    let response = app
        .http
        .post(format!("{}/v1/bulk-transitions/{job}/revert", app.address))
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{accepted}");
    let view = wait_job(
        &app.http,
        &app.address,
        accepted["job_id"].as_str().unwrap(),
        "revert job",
        finished,
    )
    .await;
    assert_eq!(view["reverts_job_id"], job, "{view}");
}

#[tokio::test]
async fn revert_puts_agents_back_to_their_state_and_reason_and_compliance_applies() {
    // A call the platform holds (below) must not time out and be sent again meanwhile.
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.cxone.request_timeout_ms = DEADLINE.as_millis() as u64;
    })
    .await;
    let free = app.sim.free_agents();
    let trained = ids(&free[..3]);
    let first = run_job(
        &app,
        json!({"agents": trained, "state": "PAUSED", "reason": "TRAINING"}),
    )
    .await;
    assert_eq!(first["succeeded"], 3, "{first}");
    // One agent owing a mandatory break made itself READY; another is in after-call
    // work. State sync records both.
    let in_break = app.sim.agent_in_break(true).id;
    let wrapping_up = free[3].id.clone();
    assert!(app.sim.sim.force_state(&in_break, "READY", "WORKING"));
    assert!(app.sim.sim.force_state(&wrapping_up, "ACW", ""));
    sync_once(&app).await;

    let mut moved = trained.clone();
    moved.extend([in_break.clone(), wrapping_up.clone()]);
    let (status, accepted) = submit(
        &app.http,
        &app.address,
        &json!({"agents": moved, "state": "NOT_READY", "reason": "MEETING"}),
    )
    .await;
    assert_eq!(status, 202);
    let meeting = accepted["job_id"].as_str().unwrap().to_owned();
    let revert_url = format!("{}/v1/bulk-transitions/{meeting}/revert", app.address);
    let view = wait_job(&app.http, &app.address, &meeting, "meeting job", finished).await;
    assert_eq!(view["succeeded"], 5, "{view}");

    let response = app.http.post(&revert_url).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let revert = accepted["job_id"].as_str().unwrap().to_owned();
    let view = wait_job(&app.http, &app.address, &revert, "revert job", finished).await;
    assert_eq!(view["reverts_job_id"], meeting.as_str());
    let items = items_by_agent(&view);
    for agent in &trained {
        assert_eq!(items[agent]["outcome"], "succeeded", "{}", items[agent]);
        let platform = app.sim.sim.agent(agent).unwrap();
        assert_eq!(
            (platform.state.as_str(), platform.reason.as_str()),
            ("PAUSED", "TRAINING"),
            "{agent} is back"
        );
    }
    assert_eq!(items[&in_break]["state"], "READY");
    assert_eq!(items[&in_break]["outcome"], "rejected");
    assert_eq!(items[&in_break]["violation"], "MANDATORY_BREAK_VIOLATION");
    assert_eq!(app.sim.sim.agent(&in_break).unwrap().state, "NOT_READY");
    assert_eq!(items[&wrapping_up]["outcome"], "failed");
    let why = items[&wrapping_up]["error"].as_str().unwrap();
    assert!(why.contains("ACW") && why.contains("cannot"), "{why}");
    assert_eq!(app.sim.sim.agent(&wrapping_up).unwrap().state, "NOT_READY");
    assert_eq!(
        (
            view["succeeded"].as_i64(),
            view["rejected"].as_i64(),
            view["failed"].as_i64()
        ),
        (Some(3), Some(1), Some(1))
    );

    let again: Value = app
        .http
        .post(&revert_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["job_id"], revert.as_str(), "one revert per job");
    assert_eq!(again["replayed"], true);

    // A job still running cannot be reverted: its outcome is not known yet. The platform
    // holds its change until the revert has been refused.
    let held = app.sim.sim.hold_next_on(SET_STATE);
    let (_, accepted) = submit(
        &app.http,
        &app.address,
        &json!({"agents": [free[4].id.clone()], "state": "IDLE"}),
    )
    .await;
    let running = accepted["job_id"].as_str().unwrap().to_owned();
    let response = app
        .http
        .post(format!(
            "{}/v1/bulk-transitions/{running}/revert",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:wfmd:problem:job-conflict");
    held.release();
    wait_job(&app.http, &app.address, &running, "idle job", finished).await;
}

#[tokio::test]
async fn invalid_jobs_get_problems_naming_the_field_and_store_nothing() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0).id;
    let too_many: Vec<String> = (1..=10_001).map(|i| format!("u_{i:05}")).collect();
    // Body, status, the field named, and a list the problem must carry.
    type Case<'a> = (Value, u16, &'a str, Option<(&'a str, Value)>);
    let cases: Vec<Case> = vec![
        (json!({"agents": [], "state": "READY"}), 422, "agents", None),
        (
            json!({"agents": too_many, "state": "READY"}),
            422,
            "agents",
            None,
        ),
        (json!({"state": "READY"}), 422, "agents", None),
        (
            json!({"agents": [agent], "team": "t_1", "state": "READY"}),
            422,
            "team",
            None,
        ),
        (
            json!({"agents": [agent, "u_nobody", agent], "state": "READY"}),
            422,
            "agents",
            Some(("duplicate_agents", json!([agent]))),
        ),
        (
            json!({"agents": [agent, "u_nobody"], "state": "READY"}),
            422,
            "agents",
            Some(("unknown_agents", json!(["u_nobody"]))),
        ),
        (
            json!({"team": "t_nowhere", "state": "READY"}),
            422,
            "team",
            None,
        ),
        (
            json!({"agents": [agent], "state": "LUNCH"}),
            422,
            "state",
            None,
        ),
        (
            json!({"agents": [agent], "state": "ON_CONTACT"}),
            422,
            "state",
            None,
        ),
        (
            json!({"agents": [agent], "reason": "BREAK"}),
            422,
            "state",
            None,
        ),
        (
            json!({"agents": [agent, ""], "state": "READY"}),
            422,
            "agents[1]",
            None,
        ),
        (
            json!({"agents": agent, "state": "READY"}),
            422,
            "agents",
            None,
        ),
        (
            json!({"agents": [agent], "state": "READY", "reason": "has space"}),
            422,
            "reason",
            None,
        ),
        (
            json!({"agents": [agent], "state": "READY", "idempotency_key": ""}),
            422,
            "idempotency_key",
            None,
        ),
    ];
    for (body, status, field, values) in cases {
        let shown: String = body.to_string().chars().take(80).collect();
        let (got, problem) = submit(&app.http, &app.address, &body).await;
        assert_eq!(got, status, "{shown} -> {problem}");
        assert_eq!(problem["field"], field, "{shown} -> {problem}");
        assert_eq!(problem["status"], status);
        if let Some((name, want)) = values {
            assert_eq!(problem[name], want, "{shown} -> {problem}");
        }
    }

    let post_raw = |body: String| {
        app.http
            .post(format!("{}/v1/bulk-transitions", app.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let huge = post_raw(format!(
        "{{\"state\":\"READY\",\"agents\":[\"{}\"]}}",
        "u".repeat(3 * 1024 * 1024)
    ))
    .await
    .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(huge.headers()["content-type"], "application/problem+json");
    let problem: Value = huge.json().await.unwrap();
    assert_eq!(problem["type"], "urn:wfmd:problem:body-too-large");
    let broken = post_raw("{\"state\": ".into()).await.unwrap();
    assert_eq!(broken.status(), 400);

    for (method, path, status) in [
        ("GET", "/v1/bulk-transitions/job_nope", 404),
        ("DELETE", "/v1/bulk-transitions/job_nope", 404),
        ("POST", "/v1/bulk-transitions/job_nope/revert", 404),
        ("GET", "/v1/bulk-transitions/job_nope?items=maybe", 400),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM bulk_jobs").await, 0);
    assert_eq!(app.sim.calls(SET_STATE), 0);
}

#[tokio::test]
async fn wfmd_bulk_prints_a_summary_and_exits_1_when_an_agent_was_rejected() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::new();
    let daemon = Daemon::spawn(&sim.env(&db.url())).await;
    let free = ids(&sim.free_agents());
    let off = sim.off_shift_agent().id;
    let run = |args: Vec<String>| {
        let address = daemon.address.clone();
        tokio::task::spawn_blocking(move || {
            let output = wfmd()
                .env("WFMD_TOKEN", "tok-not-for-printing")
                .args(["bulk", "--server", &address])
                .args(&args)
                .output()
                .unwrap();
            (
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        })
    };

    let agents = format!("{},{},{off}", free[0], free[1]);
    let (code, stdout, stderr) = run(vec!["--agents".into(), agents, "READY".into()])
        .await
        .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("completed"), "{stdout}");
    assert!(stdout.contains("succeeded        2"), "{stdout}");
    assert!(stdout.contains("rejected         1"), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with(&off)).unwrap_or("");
    assert!(line.contains("AGENT_NOT_SCHEDULED"), "{stdout}");
    assert!(
        !stdout.contains(&free[0]),
        "only agents that did not change are listed"
    );
    assert!(!format!("{stdout}{stderr}").contains("tok-not-for-printing"));
    assert_eq!(sim.sim.agent(&free[0]).unwrap().state, "READY");

    let (code, stdout, stderr) = run(vec![
        "--agents".into(),
        free[0].clone(),
        "NOT_READY".into(),
        "--json".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    let job: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(job["succeeded"], 1);
    let revert = job["job_id"].as_str().unwrap().to_owned();

    let (code, stdout, _) = run(vec!["revert".into(), revert, "--json".into()])
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}");
    let reverted: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(reverted["items"][0]["state"], "READY");
    assert_eq!(sim.sim.agent(&free[0]).unwrap().state, "READY");

    let (code, _, stderr) = run(vec!["--agents".into(), "u_nobody".into(), "READY".into()])
        .await
        .unwrap();
    assert_eq!(code, 2, "a refused request is bad usage: {stderr}");
    assert!(
        stderr.contains("u_nobody") && stderr.contains("field agents"),
        "{stderr}"
    );
}

#[tokio::test]
async fn wfmd_bulk_sends_its_token_and_the_job_is_done_in_the_tokens_name() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::new();
    let config = db.dir.path().join("wfmd.toml");
    let entry = |name: &str, token: &str, role: &str| {
        let entry = crate::auth::entry(name, token, role);
        format!(
            "[[api_tokens]]\nname = \"{}\"\ntoken_sha256 = \"{}\"\nrole = \"{}\"\n",
            entry.name, entry.token_sha256, entry.role
        )
    };
    std::fs::write(
        &config,
        entry("ops-desk", "wfmd_supervisor-secret", "supervisor")
            + &entry("wallboard", "wfmd_viewer-secret", "viewer"),
    )
    .unwrap();
    let config = config.display().to_string();
    let daemon =
        Daemon::spawn_with(&["serve", "--config", &config], &sim.env(&db.url()), None).await;
    let agent = ids(&sim.free_agents()).remove(0);
    let run = |token: &'static str| {
        let (address, config, agent) = (daemon.address.clone(), config.clone(), agent.clone());
        tokio::task::spawn_blocking(move || {
            let output = wfmd()
                .env("WFMD_TOKEN", token)
                .args(["bulk", "--config", &config, "--server", &address])
                .args(["--agents", &agent, "PAUSED", "--json"])
                .output()
                .unwrap();
            (
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        })
    };

    let (code, stdout, stderr) = run("wfmd_viewer-secret").await.unwrap();
    assert_eq!(code, 2, "a viewer may not start a job: {stdout}{stderr}");
    assert!(
        stderr.contains("supervisor"),
        "names the role needed: {stderr}"
    );
    assert!(!stderr.contains("wfmd_viewer-secret"), "{stderr}");

    let (code, stdout, stderr) = run("wfmd_supervisor-secret").await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    let job: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(job["actor"], "ops-desk");
    assert_eq!(sim.sim.agent(&agent).unwrap().state, "PAUSED");
    let store = wfmd::store::Store::open(&db.url()).await.unwrap();
    let actors: Vec<String> = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT actor FROM transition_attempts WHERE origin = 'bulk'
         UNION SELECT actor FROM audit_log WHERE action LIKE 'bulk.%'",
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert_eq!(actors, ["ops-desk"], "every record names the token");
    store.close().await;
}

#[tokio::test]
async fn bulk_completed_webhook_is_delivered_signed_with_the_counts() {
    let receiver = Receiver::start().await;
    let sim = TestSim::default_tenant().await;
    let app = TestApp::spawn_with(sim, |config| {
        config.webhooks = vec![WebhookConfig {
            url: receiver.url(),
            secret: vec![SECRET.to_owned().into()],
            events: Some(vec!["bulk.completed".into()]),
        }];
    })
    .await;
    let mut agents = ids(&app.sim.free_agents()[..2]);
    agents.push(app.sim.off_shift_agent().id);
    let view = run_job(&app, json!({"agents": agents, "state": "READY"})).await;

    receiver.wait_for(1, DEADLINE).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1, "only the job's end was subscribed to");
    let event = &received[0].json;
    assert_eq!(event["type"], "bulk.completed");
    assert_eq!(event["data"]["jobId"], view["job_id"]);
    assert_eq!(event["data"]["status"], "completed");
    assert_eq!(event["data"]["total"], 3);
    assert_eq!(event["data"]["succeeded"], 2);
    assert_eq!(event["data"]["rejected"], 1);
    assert_eq!(event["data"]["state"], "READY");
    assert_eq!(verify_with_standardwebhooks(&received), Ok(1));
}
