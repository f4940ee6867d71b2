//! Deferred changes (`when_busy = "defer"`): a change for an agent on a contact waits and
//! is made when the contact ends (read back, announced after `transition.deferred`),
//! expires, is replaced by a newer one, is cancelled, survives `kill -9`, and keeps a bulk
//! job's item `deferred` until it settles; a rule's change waits alike; among several
//! instances the follower hands deferring and cancelling to the leader. Without
//! `when_busy` a busy agent's change is still refused (`transitions.rs` pins that).

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wfmd::config::{Config, WebhookConfig};
use wfmd::domain::AgentState;
use wfmd::domain::rule::{Action, Conditions, Rule, RuleSelector, RuleWhenBusy};
use wfmd::engine::rules::RuleFirer;
use wfmd::on;
use wfmd::store::Store;
use wfmd::telemetry::names::DEFERRED_TOTAL;

use crate::cluster::{cluster_env_and, leads};
use crate::helpers::{
    Daemon, Dialect, TestApp, TestDb, TestSim, accepted_job_id, eventually, http_client,
    on_both_dialects, on_both_dialects_and_backends, wait_until,
};
use crate::receiver::{Receiver, SECRET};

/// Agents on shift now and for the next 15 minutes with no break in between, and not
/// busy: with the simulator's own activity off, nothing but the test moves them.
pub fn quiet(sim: &TestSim) -> Vec<String> {
    let now = sim.sim.clock().now();
    let later = now + TimeDelta::minutes(15);
    sim.agents_where(|a| {
        a.on_shift_at(now)
            && a.on_shift_at(later)
            && a.breaks.iter().all(|b| b.end <= now || b.start >= later)
            && a.state != "ON_CONTACT"
            && a.state != "ACW"
    })
    .into_iter()
    .map(|a| a.id)
    .collect()
}

/// `config` with state sync on (every 200 ms where the dialect allows it; v2
/// subscriptions take 10 s at least) and, given a receiver, webhooks to it.
pub fn with_sync(config: &mut Config, dialect: Dialect, receiver: Option<&Receiver>) {
    config.sync.enabled = true;
    if dialect == Dialect::Incontact {
        config.sync.interval_ms = 200;
    }
    if let Some(receiver) = receiver {
        config.webhooks = vec![WebhookConfig {
            url: receiver.url(),
            secret: vec![SECRET.to_owned().into()],
            events: None,
        }];
        config.delivery.retry_schedule = [50, 100, 200]
            .map(|ms| Duration::from_millis(ms).into())
            .to_vec();
    }
}

/// The state wfmd has recorded for `agent` (its open interval), through the API.
async fn recorded(address: &str, agent: &str) -> Option<String> {
    let history: Value = http_client()
        .get(format!("{address}/v1/agents/{agent}/history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    history["intervals"]
        .as_array()?
        .iter()
        .rev()
        .find(|i| i["ended_at"].is_null())
        .and_then(|i| i["state"].as_str().map(str::to_owned))
}

/// Waits until wfmd has recorded `agent` in `state` (state sync saw it).
pub async fn recorded_as(address: &str, agent: &str, state: &str) {
    eventually(
        &format!("{agent} never recorded {state}"),
        async || match recorded(address, agent).await {
            Some(now) if now == state => Ok(()),
            now => Err(format!("recorded {now:?}")),
        },
    )
    .await;
}

/// Asks `address` to change `agent` with `body`: the status and answer.
async fn ask(address: &str, agent: &str, body: Value) -> (u16, Value) {
    let response = http_client()
        .post(format!("{address}/v1/agents/{agent}/transitions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// `GET /v1/agents/{agent}/deferred`: the status and answer.
async fn waiting(address: &str, agent: &str) -> (u16, Value) {
    let response = http_client()
        .get(format!("{address}/v1/agents/{agent}/deferred"))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Waits until nothing waits for `agent` any more.
async fn settled(address: &str, agent: &str) {
    eventually(
        &format!("the change for {agent} still waits"),
        async || match waiting(address, agent).await {
            (404, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        },
    )
    .await;
}

/// Waits until the platform shows `agent` in `state`.
async fn platform_shows(sim: &TestSim, agent: &str, state: &str) {
    eventually(
        &format!("the platform never showed {agent} {state}"),
        async || {
            let now = sim.sim.agent(agent).unwrap().state;
            if now == state { Ok(()) } else { Err(now) }
        },
    )
    .await;
}

/// The states wfmd set on the platform for `agent` since the test began: the simulator's
/// log after the test's own forced states (`ON_CONTACT`, the contact's end) are left out.
fn set_by_wfmd(sim: &TestSim, agent: &str) -> Vec<(String, String)> {
    sim.sim
        .agent(agent)
        .unwrap()
        .state_log
        .into_iter()
        .skip(1)
        .filter(|c| c.state != "ON_CONTACT" && c.reason != "TEST_END")
        .map(|c| (c.state, c.reason))
        .collect()
}

/// Ends `agent`'s contact on the platform: READY again, with a reason only the test
/// uses, so the log tells it apart from wfmd's changes.
fn end_contact(sim: &TestSim, agent: &str) {
    assert!(sim.sim.force_state(agent, "READY", "TEST_END"));
}

async fn count_of(store: &Store, sql: &str, bind: &str) -> i64 {
    on!(store.reader(), |c| sqlx::query_scalar(sqlx::AssertSqlSafe(
        sql.to_owned()
    ))
    .bind(bind.to_owned())
    .fetch_one(c)
    .await)
    .unwrap()
}

/// The event types the receiver got about `agent`, in the order they came, with the
/// deferred change each names (`deferredId`), if any.
fn received_for(receiver: &Receiver, agent: &str) -> Vec<(String, Option<String>, Value)> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.json["data"]["agentId"] == agent)
        .map(|r| {
            (
                r.json["type"].as_str().unwrap().to_owned(),
                r.json["data"]["deferredId"].as_str().map(str::to_owned),
                r.json["data"].clone(),
            )
        })
        .collect()
}

on_both_dialects_and_backends!(a_deferred_change_is_made_when_the_contact_ends);
async fn a_deferred_change_is_made_when_the_contact_ends(dialect: Dialect, db: TestDb) {
    let receiver = Receiver::start().await;
    let sim = TestSim::default_tenant().await.on(dialect);
    let agent = quiet(&sim).remove(0);
    let app = TestApp::spawn_on_db(sim, db, |c| with_sync(c, dialect, Some(&receiver))).await;
    assert!(app.sim.sim.force_state(&agent, "ON_CONTACT", ""));
    recorded_as(&app.address, &agent, "ON_CONTACT").await;

    let (status, deferral) = ask(
        &app.address,
        &agent,
        json!({"state": "NOT_READY", "reason": "MEETING", "when_busy": "defer"}),
    )
    .await;
    assert_eq!(status, 202, "{deferral}");
    assert_eq!(deferral["outcome"], "deferred");
    assert_eq!(deferral["to"], "NOT_READY");
    assert_eq!(deferral["reason"], "MEETING");
    let id = deferral["deferred_id"].as_str().unwrap().to_owned();
    let expires = chrono::DateTime::parse_from_rfc3339(deferral["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let fifteen = expires - Utc::now();
    assert!(
        (TimeDelta::minutes(14)..=TimeDelta::minutes(15)).contains(&fifteen),
        "[deferred] defer_for by default: {deferral}"
    );
    assert_eq!(
        app.sim.changes(),
        0,
        "nothing is sent while the agent is busy"
    );
    let (status, shown) = waiting(&app.address, &agent).await;
    assert_eq!((status, &shown["deferred_id"]), (200, &json!(id)));

    end_contact(&app.sim, &agent);
    platform_shows(&app.sim, &agent, "NOT_READY").await;
    settled(&app.address, &agent).await;
    assert_eq!(
        set_by_wfmd(&app.sim, &agent),
        [("NOT_READY".to_owned(), "MEETING".to_owned())],
        "made once"
    );
    recorded_as(&app.address, &agent, "NOT_READY").await;
    let succeeded = count_of(
        &app.store,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.succeeded' AND agent_id = $1",
        &agent,
    )
    .await;
    assert_eq!(succeeded, 1);
    assert_eq!(
        count_of(
            &app.store,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.deferred' AND subject_id = $1",
            &id,
        )
        .await,
        1
    );

    // The webhooks: transition.deferred, then the change with the same deferredId.
    wait_until("the change's webhook never came", async || {
        received_for(&receiver, &agent)
            .iter()
            .any(|(kind, of, _)| kind == "agent.state_changed" && of.as_deref() == Some(&id))
    })
    .await;
    let events = received_for(&receiver, &agent);
    let deferred_at = events
        .iter()
        .position(|(kind, of, _)| kind == "transition.deferred" && of.as_deref() == Some(&id))
        .unwrap_or_else(|| panic!("no transition.deferred: {events:?}"));
    let changed_at = events
        .iter()
        .position(|(kind, of, _)| kind == "agent.state_changed" && of.as_deref() == Some(&id))
        .unwrap();
    assert!(deferred_at < changed_at, "{events:?}");
    assert_eq!(events[deferred_at].2["from"], "ON_CONTACT", "{events:?}");
    assert_eq!(events[changed_at].2["to"], "NOT_READY");
    assert_eq!(events[changed_at].2["origin"], "api");
}

on_both_dialects!(a_deferred_change_expires_after_defer_for_and_is_never_made);
async fn a_deferred_change_expires_after_defer_for_and_is_never_made(dialect: Dialect) {
    let sim = TestSim::default_tenant().await.on(dialect);
    let agent = quiet(&sim).remove(0);
    // The simulator has the agent on a contact from the start.
    assert!(sim.sim.force_state(&agent, "ON_CONTACT", ""));
    let app = TestApp::spawn_with(sim, |c| with_sync(c, dialect, None)).await;

    // State sync may not have polled yet: then the platform's conflict defers it.
    let (status, deferral) = ask(
        &app.address,
        &agent,
        json!({"state": "NOT_READY", "when_busy": "defer", "defer_for": "2s"}),
    )
    .await;
    assert_eq!(status, 202, "{deferral}");
    let id = deferral["deferred_id"].as_str().unwrap().to_owned();
    settled(&app.address, &agent).await;
    assert_eq!(
        count_of(
            &app.store,
            "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'transition.expired'
             AND payload LIKE '%' || $1 || '%'",
            &id,
        )
        .await,
        1
    );
    assert_eq!(
        count_of(
            &app.store,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.expired' AND subject_id = $1",
            &id,
        )
        .await,
        1
    );
    assert_eq!(app.sim.sim.agent(&agent).unwrap().state, "ON_CONTACT");
    assert!(set_by_wfmd(&app.sim, &agent).is_empty());
    // Other tests of this process count into the same series: at least this one.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let expired = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!(
                "{DEFERRED_TOTAL}{{outcome=\"expired\",tenant=\"default\"}} "
            ))
        })
        .and_then(|n| n.parse::<f64>().ok());
    assert!(expired.is_some_and(|n| n >= 1.0), "{metrics}");

    // Refused as before without `when_busy`; a wait that is no duration of 1s to 24h is
    // a mistake.
    let (status, refused) = ask(&app.address, &agent, json!({"state": "NOT_READY"})).await;
    assert_eq!(
        (status, &refused["violation"]),
        (409, &json!("STATE_CONFLICT"))
    );
    for wait in ["forever", "0s", "25h"] {
        let (status, refused) = ask(
            &app.address,
            &agent,
            json!({"state": "NOT_READY", "when_busy": "defer", "defer_for": wait}),
        )
        .await;
        assert_eq!(
            (status, &refused["field"]),
            (422, &json!("defer_for")),
            "{wait}"
        );
    }
}

#[tokio::test]
async fn a_newer_deferred_change_replaces_the_older_one_and_only_it_is_made() {
    let dialect = Dialect::Incontact;
    let sim = TestSim::default_tenant().await.on(dialect);
    let agent = quiet(&sim).remove(0);
    let app = TestApp::spawn_with(sim, |c| with_sync(c, dialect, None)).await;
    assert!(app.sim.sim.force_state(&agent, "ON_CONTACT", ""));
    recorded_as(&app.address, &agent, "ON_CONTACT").await;

    let body = |reason: &str| json!({"state": "NOT_READY", "reason": reason, "when_busy": "defer"});
    let (status, older) = ask(&app.address, &agent, body("MEETING")).await;
    assert_eq!(status, 202, "{older}");
    let (status, newer) = ask(&app.address, &agent, body("LUNCH")).await;
    assert_eq!(status, 202, "{newer}");
    let (older, newer) = (
        older["deferred_id"].as_str().unwrap().to_owned(),
        newer["deferred_id"].as_str().unwrap().to_owned(),
    );
    assert_ne!(older, newer);
    let (_, shown) = waiting(&app.address, &agent).await;
    assert_eq!(shown["deferred_id"], newer.as_str());
    assert_eq!(
        count_of(
            &app.store,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.replaced' AND subject_id = $1",
            &older,
        )
        .await,
        1,
        "the replacement is audited"
    );
    assert_eq!(
        count_of(
            &app.store,
            "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'transition.cancelled'
             AND payload LIKE '%' || $1 || '%'",
            &older,
        )
        .await,
        1,
        "the older one's requester learns it"
    );

    end_contact(&app.sim, &agent);
    platform_shows(&app.sim, &agent, "NOT_READY").await;
    settled(&app.address, &agent).await;
    assert_eq!(
        set_by_wfmd(&app.sim, &agent),
        [("NOT_READY".to_owned(), "LUNCH".to_owned())],
        "only the newer one is made"
    );
}

/// Without tokens callers are told apart by address: two programs on this host, one
/// binding 127.0.0.2.
#[tokio::test]
async fn a_caller_replacing_deferred_changes_past_its_bound_is_answered_429_and_another_caller_is_not()
 {
    let dialect = Dialect::Incontact;
    let sim = TestSim::default_tenant().await.on(dialect);
    let agent = quiet(&sim).remove(0);
    let app = TestApp::spawn_with(sim, |c| {
        with_sync(c, dialect, None);
        c.deferred.max_waiting_per_caller = 3;
    })
    .await;
    assert!(app.sim.sim.force_state(&agent, "ON_CONTACT", ""));
    recorded_as(&app.address, &agent, "ON_CONTACT").await;
    let from = |address: [u8; 4]| {
        http_client();
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(address))
            .build()
            .unwrap()
    };
    let (one, another) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    let defer = |client: &reqwest::Client, reason: &str| {
        client
            .post(format!("{}/v1/agents/{agent}/transitions", app.address))
            .json(&json!({"state": "NOT_READY", "reason": reason, "when_busy": "defer"}))
            .send()
    };

    // Each replaces the one before: one change waits, but each is an event or two.
    for reason in ["MEETING", "LUNCH", "TRAINING"] {
        let response = defer(&one, reason).await.unwrap();
        assert_eq!(response.status(), 202, "{reason}");
    }
    let refused = defer(&one, "COACHING").await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:wfmd:problem:too-many-deferred");
    assert_eq!(problem["limit"], 3);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("deferred.max_waiting_per_caller") && detail.contains("127.0.0.1"),
        "{detail}"
    );
    let (_, shown) = waiting(&app.address, &agent).await;
    assert_eq!(
        shown["reason"], "TRAINING",
        "the refused one replaced nothing"
    );

    let response = defer(&another, "COACHING").await.unwrap();
    assert_eq!(
        response.status(),
        202,
        "another caller has a share of its own"
    );
    assert_eq!(
        count_of(
            &app.store,
            "SELECT COUNT(*) FROM outbox_events WHERE event_type = $1",
            "transition.deferred",
        )
        .await,
        4
    );
}

#[tokio::test]
async fn a_cancelled_deferred_change_is_never_made() {
    let dialect = Dialect::Incontact;
    let sim = TestSim::default_tenant().await.on(dialect);
    let quiet = quiet(&sim);
    let (cancelled, witness) = (quiet[0].clone(), quiet[1].clone());
    let app = TestApp::spawn_with(sim, |c| with_sync(c, dialect, None)).await;
    for agent in [&cancelled, &witness] {
        assert!(app.sim.sim.force_state(agent, "ON_CONTACT", ""));
        recorded_as(&app.address, agent, "ON_CONTACT").await;
        let (status, body) = ask(
            &app.address,
            agent,
            json!({"state": "NOT_READY", "when_busy": "defer"}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let delete = async || {
        app.http
            .delete(format!("{}/v1/agents/{cancelled}/deferred", app.address))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(delete().await, 204);
    assert_eq!(delete().await, 404, "nothing waits any more");
    assert_eq!(waiting(&app.address, &cancelled).await.0, 404);
    assert_eq!(
        count_of(
            &app.store,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.cancelled' AND agent_id = $1",
            &cancelled,
        )
        .await,
        1
    );

    // Both contacts end together: the witness's change is made, the cancelled one is not.
    end_contact(&app.sim, &cancelled);
    end_contact(&app.sim, &witness);
    platform_shows(&app.sim, &witness, "NOT_READY").await;
    recorded_as(&app.address, &cancelled, "READY").await;
    settled(&app.address, &witness).await;
    assert!(set_by_wfmd(&app.sim, &cancelled).is_empty());
    assert_eq!(app.sim.sim.agent(&cancelled).unwrap().state, "READY");
}

#[tokio::test]
async fn a_deferred_change_waits_through_kill_9_and_one_that_expired_meanwhile_is_never_made() {
    let dialect = Dialect::Incontact;
    let sim = TestSim::default_tenant().await.on(dialect);
    let quiet = quiet(&sim);
    let (lasting, expiring) = (quiet[0].clone(), quiet[1].clone());
    let db = TestDb::new();
    let mut env = sim.env(&db.url());
    env.retain(|(k, _)| k != "WFMD_SYNC__ENABLED");
    env.push(("WFMD_SYNC__ENABLED".into(), "true".into()));
    // The shortest poll a configuration file or the environment may give.
    env.push(("WFMD_SYNC__INTERVAL_MS".into(), "5000".into()));
    let daemon = Daemon::spawn(&env).await;
    let mut expires_at = None;
    for (agent, wait) in [(&lasting, "10m"), (&expiring, "3s")] {
        assert!(sim.sim.force_state(agent, "ON_CONTACT", ""));
        recorded_as(&daemon.address, agent, "ON_CONTACT").await;
        let (status, body) = ask(
            &daemon.address,
            agent,
            json!({"state": "NOT_READY", "when_busy": "defer", "defer_for": wait}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        expires_at = Some(body["expires_at"].as_str().unwrap().to_owned());
    }
    daemon.signal("KILL");
    assert!(!daemon.wait().await.success());

    // Both contacts end while wfmd is down, and the short one's time runs out.
    end_contact(&sim, &lasting);
    end_contact(&sim, &expiring);
    let expires_at = chrono::DateTime::parse_from_rfc3339(&expires_at.unwrap()).unwrap();
    wait_until("the short wait never ran out", async || {
        Utc::now() > expires_at + TimeDelta::milliseconds(100)
    })
    .await;

    let daemon = Daemon::spawn(&env).await;
    platform_shows(&sim, &lasting, "NOT_READY").await;
    settled(&daemon.address, &lasting).await;
    settled(&daemon.address, &expiring).await;
    recorded_as(&daemon.address, &expiring, "READY").await;
    assert_eq!(
        set_by_wfmd(&sim, &lasting),
        [("NOT_READY".to_owned(), "BREAK".to_owned())],
        "carried out once, after the restart"
    );
    assert!(set_by_wfmd(&sim, &expiring).is_empty(), "never made late");
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
    let store = Store::open(&db.url()).await.unwrap();
    assert_eq!(
        count_of(
            &store,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.expired' AND agent_id = $1",
            &expiring,
        )
        .await,
        1
    );
    assert_eq!(
        count_of(
            &store,
            "SELECT COUNT(*) FROM deferred_changes WHERE agent_id <> $1",
            ""
        )
        .await,
        0
    );
    store.close().await;
}

on_both_dialects!(a_bulk_item_waits_deferred_for_its_busy_agent_and_the_job_completes_after);
async fn a_bulk_item_waits_deferred_for_its_busy_agent_and_the_job_completes_after(
    dialect: Dialect,
) {
    let sim = TestSim::default_tenant().await.on(dialect);
    let quiet = quiet(&sim);
    let (free, busy) = (quiet[0].clone(), quiet[1].clone());
    let app = TestApp::spawn_with(sim, |c| with_sync(c, dialect, None)).await;
    assert!(app.sim.sim.force_state(&busy, "ON_CONTACT", ""));
    recorded_as(&app.address, &busy, "ON_CONTACT").await;

    let response = app
        .http
        .post(format!("{}/v1/bulk-transitions", app.address))
        .json(
            &json!({"agents": [free, busy], "state": "NOT_READY", "reason": "MEETING",
                      "when_busy": "defer"}),
        )
        .send()
        .await
        .unwrap();
    let job_id = accepted_job_id(response).await;
    let job = async || -> Value {
        app.get(&format!("/v1/bulk-transitions/{job_id}"))
            .await
            .json()
            .await
            .unwrap()
    };
    let outcome = |view: &Value, agent: &str| {
        view["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["agent"] == agent)
            .unwrap()["outcome"]
            .clone()
    };
    let view = eventually("the free agent's item never settled", async || {
        let view = job().await;
        if outcome(&view, &free) == "succeeded" && outcome(&view, &busy) == "deferred" {
            Ok(view)
        } else {
            Err(view.to_string())
        }
    })
    .await;
    assert_eq!(
        view["status"], "running",
        "not completed while an item waits: {view}"
    );
    assert_eq!(view["deferred"], 1);
    let (_, shown) = waiting(&app.address, &busy).await;
    assert_eq!(shown["bulk_job_id"], job_id.as_str());
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_events WHERE event_type = 'bulk.completed'")
            .await,
        0
    );

    end_contact(&app.sim, &busy);
    let view = eventually("the job never completed", async || {
        let view = job().await;
        if view["status"] == "completed" {
            Ok(view)
        } else {
            Err(view.to_string())
        }
    })
    .await;
    assert_eq!(outcome(&view, &busy), "succeeded", "{view}");
    assert_eq!(
        (&view["succeeded"], &view["deferred"]),
        (&json!(2), &json!(0))
    );
    assert_eq!(
        set_by_wfmd(&app.sim, &busy),
        [("NOT_READY".to_owned(), "MEETING".to_owned())]
    );
    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'bulk.completed'",
        1,
        "no bulk.completed",
    )
    .await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_events WHERE event_type = 'bulk.completed'")
            .await,
        1
    );
}

#[tokio::test]
async fn wfmd_bulk_when_busy_defer_leaves_the_busy_agents_item_deferred_until_it_is_free() {
    let sim = TestSim::default_tenant().await;
    let busy = quiet(&sim)[0].clone();
    let app = TestApp::spawn_with(sim, |c| with_sync(c, Dialect::V2, None)).await;
    assert!(app.sim.sim.force_state(&busy, "ON_CONTACT", ""));
    recorded_as(&app.address, &busy, "ON_CONTACT").await;
    let bulk = |args: Vec<String>| {
        let address = app.address.clone();
        tokio::task::spawn_blocking(move || {
            let output = crate::helpers::wfmd()
                .args(["bulk", "--server", &address, "--json"])
                .args(&args)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
            serde_json::from_str::<Value>(&stdout).unwrap()
        })
    };

    let before = Utc::now();
    let job = bulk(
        [
            "--agents",
            &busy,
            "--when-busy",
            "defer",
            "--defer-for",
            "90s",
            "--no-wait",
            "NOT_READY",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await
    .unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let (status, waits) = eventually("the change never waited", async || {
        match waiting(&app.address, &busy).await {
            (200, body) => Ok((200, body)),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(waits["bulk_job_id"], job_id.as_str(), "{waits}");
    // --defer-for reached the daemon: it expires 90 s after it was asked, not 15 min.
    let expires = wfmd::time::parse_instant(waits["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        expires >= before + TimeDelta::seconds(90)
            && expires <= Utc::now() + TimeDelta::seconds(90),
        "{waits}"
    );

    end_contact(&app.sim, &busy);
    platform_shows(&app.sim, &busy, "NOT_READY").await;
    let job = bulk(vec!["status".into(), job_id]).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        (&job["succeeded"], &job["deferred"]),
        (&json!(1), &json!(0))
    );
}

on_both_dialects!(a_rule_with_when_busy_defer_makes_its_change_when_the_contact_ends);
async fn a_rule_with_when_busy_defer_makes_its_change_when_the_contact_ends(dialect: Dialect) {
    let sim = TestSim::default_tenant().await.on(dialect);
    let quiet = quiet(&sim);
    let (free, busy) = (quiet[0].clone(), quiet[1].clone());
    let app = TestApp::spawn_with(sim, |c| with_sync(c, dialect, None)).await;
    assert!(app.sim.sim.force_state(&busy, "ON_CONTACT", ""));
    recorded_as(&app.address, &busy, "ON_CONTACT").await;

    let rule = Rule {
        name: "meeting".into(),
        slots: wfmd::domain::cron::Slots::parse("0 0 12 * * *", "UTC").unwrap(),
        selector: RuleSelector::Agents(vec![free.clone(), busy.clone()]),
        action: Action::Set {
            state: AgentState::NotReady,
            reason: Some("MEETING".into()),
        },
        conditions: Conditions::default(),
        catch_up: Duration::ZERO,
        when_busy: RuleWhenBusy::Defer {
            defer_for: Some(Duration::from_secs(600)),
        },
    };
    // The firing made as the daemon's scheduler makes it; the daemon's own worker
    // carries the waiting change out.
    let firer = RuleFirer::new(app.store.clone(), app.engine.clone(), 4, None);
    let slot = Utc::now();
    let firing = firer
        .fire_slot(&rule, slot, None, &CancellationToken::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(firing.changed, 1, "{firing:?}");
    let recorded: Vec<(String, String, Option<String>)> = on!(app.store.reader(), |c| {
        sqlx::query_as("SELECT agent_id, outcome, reason FROM rule_firing_agents ORDER BY agent_id")
            .fetch_all(c)
            .await
    })
    .unwrap();
    assert!(
        recorded.contains(&(busy.clone(), "skipped".into(), Some("deferred".into()))),
        "{recorded:?}"
    );
    let (status, shown) = waiting(&app.address, &busy).await;
    assert_eq!((status, &shown["origin"]), (200, &json!("rule")), "{shown}");
    assert_eq!(shown["actor"], "rule:meeting");

    end_contact(&app.sim, &busy);
    platform_shows(&app.sim, &busy, "NOT_READY").await;
    settled(&app.address, &busy).await;
    assert_eq!(
        set_by_wfmd(&app.sim, &busy),
        [("NOT_READY".to_owned(), "MEETING".to_owned())]
    );
}

#[tokio::test]
async fn a_follower_hands_deferring_and_cancelling_to_the_leader_which_alone_makes_the_change() {
    let sim = TestSim::default_tenant().await.on(Dialect::Incontact);
    let db = TestDb::postgres();
    let sync = [
        ("WFMD_SYNC__ENABLED", "true"),
        ("WFMD_SYNC__INTERVAL_MS", "5000"),
    ];
    let leader = Daemon::spawn(&cluster_env_and(&sim, &db, "wfmd-a", &sync)).await;
    leads(&db, "wfmd-a").await;
    let follower = Daemon::spawn(&cluster_env_and(&sim, &db, "wfmd-b", &sync)).await;
    let quiet = quiet(&sim);
    let (cancelled, made) = (quiet[0].clone(), quiet[1].clone());
    for agent in [&cancelled, &made] {
        assert!(sim.sim.force_state(agent, "ON_CONTACT", ""));
        recorded_as(&follower.address, agent, "ON_CONTACT").await;
        let (status, body) = ask(
            &follower.address,
            agent,
            json!({"state": "NOT_READY", "when_busy": "defer"}),
        )
        .await;
        assert_eq!(status, 202, "handed to the leader: {body}");
    }
    let (status, shown) = waiting(&follower.address, &cancelled).await;
    assert_eq!(status, 200, "{shown}");
    let delete = async || {
        http_client()
            .delete(format!(
                "{}/v1/agents/{cancelled}/deferred",
                follower.address
            ))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(delete().await, 204, "handed to the leader");
    assert_eq!(delete().await, 404);
    assert_eq!(waiting(&leader.address, &cancelled).await.0, 404);

    end_contact(&sim, &cancelled);
    end_contact(&sim, &made);
    platform_shows(&sim, &made, "NOT_READY").await;
    settled(&follower.address, &made).await;
    recorded_as(&follower.address, &cancelled, "READY").await;
    assert_eq!(
        set_by_wfmd(&sim, &made),
        [("NOT_READY".to_owned(), "BREAK".to_owned())],
        "made once, by the leader"
    );
    assert!(set_by_wfmd(&sim, &cancelled).is_empty());
}
