//! Webhook delivery from the outbox: signatures, order, retries, 410, dead letters,
//! crashes and shutdown.

use std::collections::HashMap;
use std::time::Duration;
use wfmd::on;

use serde_json::json;
use wfmd::config::{Config, WebhookConfig};
use wfmd::domain::events::{Event, StateChanged};
use wfmd::domain::{AgentState, Origin};
use wfmd::sim::SimConfig;
use wfmd::store::Store;
use wfmd::telemetry::names::{
    WEBHOOK_DEAD_TOTAL, WEBHOOK_DELIVERED_TOTAL, WEBHOOK_DELIVERY_LATENCY_SECONDS,
    WEBHOOK_ENDPOINT_STATUS, WEBHOOK_FAILED_ATTEMPTS_TOTAL, WEBHOOK_OLDEST_PENDING_AGE_SECONDS,
    WEBHOOK_QUEUE_DEPTH,
};

use crate::helpers::{
    DEADLINE, Daemon, TestApp, TestDb, TestSim, free_port, http_client, on_both_backends, wfmd,
};
use crate::receiver::{
    Mode, REDIRECT_TOKEN, REDIRECT_USER, Received, Receiver, SECRET, verify_with_standardwebhooks,
};

/// Points `config` at `receiver` with fast retries: 50 ms, 100 ms, 200 ms, then dead.
fn deliver_to(config: &mut Config, receiver: &Receiver) {
    config.webhooks = vec![WebhookConfig {
        url: receiver.url(),
        secret: vec![SECRET.to_owned().into()],
        events: None,
    }];
    config.delivery.timeout_ms = 300;
    config.delivery.lease_ms = 2_000;
    config.delivery.retry_schedule = [50, 100, 200]
        .map(|ms| Duration::from_millis(ms).into())
        .to_vec();
}

/// Waits until `count` deliveries are recorded as delivered.
async fn wait_delivered(app: &TestApp, count: i64) {
    app.wait_for_count(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'",
        count,
        "not delivered",
    )
    .await;
}

async fn app_delivering_to(receiver: &Receiver) -> TestApp {
    app_on_db_delivering_to(TestDb::new(), receiver).await
}

/// [`app_delivering_to`] on the database `db`.
async fn app_on_db_delivering_to(db: TestDb, receiver: &Receiver) -> TestApp {
    let sim = TestSim::default_tenant().await;
    TestApp::spawn_on_db(sim, db, |config| deliver_to(config, receiver)).await
}

/// Event ids of `agent` in commit order.
async fn committed_ids(store: &Store, agent: &str) -> Vec<String> {
    on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT id FROM outbox_events WHERE agent_id = $1 ORDER BY seq"
    )
    .bind(agent)
    .fetch_all(c)
    .await)
    .unwrap()
}

/// Each agent's events arrived in the order they were committed.
pub async fn assert_in_commit_order_per_agent(
    received: &[Received],
    store: &Store,
    agents: &[String],
) {
    for agent in agents {
        let arrival: Vec<String> = received
            .iter()
            .filter(|r| r.json["data"]["agentId"] == agent.as_str())
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(
            arrival,
            committed_ids(store, agent).await,
            "order of {agent}"
        );
    }
}
on_both_backends!(hundred_events_arrive_signed_and_in_commit_order_per_agent);
async fn hundred_events_arrive_signed_and_in_commit_order_per_agent(db: TestDb) {
    let receiver = Receiver::start().await;
    let app = app_on_db_delivering_to(db, &receiver).await;
    let agents: Vec<String> = app
        .sim
        .free_agents()
        .into_iter()
        .take(10)
        .map(|a| a.id)
        .collect();

    // Ten agents change ten times each: in order per agent, agents side by side.
    let changes = agents.iter().map(|agent| {
        let app = &app;
        async move {
            for i in 0..10 {
                let state = if i % 2 == 0 { "NOT_READY" } else { "PAUSED" };
                assert_eq!(app.set_state(agent, state).await.0, 200);
            }
        }
    });
    futures::future::join_all(changes).await;

    receiver.wait_for(100, DEADLINE).await;
    let received = receiver.received();
    assert_eq!(received.len(), 100, "each exactly once");
    assert_in_commit_order_per_agent(&received, &app.store, &agents).await;
    let first = &received[0];
    assert_eq!(first.json["type"], "agent.state_changed");
    assert_eq!(first.json["id"], first.id.as_str());
    assert!(
        received.iter().all(|r| r.json["tenant"] == "default"),
        "a configuration without [[tenants]] is the tenant `default`: {}",
        first.body
    );
    assert_eq!(verify_with_standardwebhooks(&received), Ok(100));
    let mut forged = received[0].clone();
    forged.body = forged.body.replace("NOT_READY", "READY");
    assert!(
        verify_with_standardwebhooks(&[forged]).is_err(),
        "the verifier checks"
    );

    wait_delivered(&app, 100).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for name in [
        WEBHOOK_DELIVERED_TOTAL,
        WEBHOOK_FAILED_ATTEMPTS_TOTAL,
        WEBHOOK_DEAD_TOTAL,
        WEBHOOK_QUEUE_DEPTH,
        WEBHOOK_OLDEST_PENDING_AGE_SECONDS,
        WEBHOOK_DELIVERY_LATENCY_SECONDS,
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_everything_once_when_it_comes_back() {
    let receiver = Receiver::start().await;
    receiver.go_down();
    let sim = TestSim::default_tenant().await;
    let app = TestApp::spawn_with(sim, |config| {
        deliver_to(config, &receiver);
        config.delivery.retry_schedule = vec![Duration::from_millis(100).into(); 50];
    })
    .await;
    let agents: Vec<String> = app
        .sim
        .free_agents()
        .into_iter()
        .take(5)
        .map(|a| a.id)
        .collect();
    for agent in &agents {
        for state in ["NOT_READY", "PAUSED"] {
            assert_eq!(app.set_state(agent, state).await.0, 200);
        }
    }
    // Each agent's first event fails while the receiver is away; its second waits
    // behind it, unattempted, because per agent the order is kept.
    app.wait_for_count(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE attempts >= 2",
        5,
        "deliveries were not retried",
    )
    .await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM webhook_deliveries WHERE attempts = 0")
            .await,
        5,
        "the later events wait for the earlier ones"
    );
    receiver.come_back();
    receiver.wait_for(10, DEADLINE).await;
    assert!(
        receiver.copies().values().all(|&n| n == 1),
        "{:?}",
        receiver.copies()
    );
    assert_in_commit_order_per_agent(&receiver.received(), &app.store, &agents).await;
}

/// The `wfmd_webhook_endpoint_status` sample of `receiver` for `status`, if exported.
async fn endpoint_status(app: &TestApp, receiver: &Receiver, status: &str) -> Option<f64> {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let labels = format!("endpoint=\"{}\"", receiver.url());
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{WEBHOOK_ENDPOINT_STATUS}{{")))
        .filter(|line| line.contains(&labels) && line.contains(&format!("status=\"{status}\"")))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Waits until /metrics reports `receiver` in `status`.
async fn wait_endpoint_status(app: &TestApp, receiver: &Receiver, status: &str) {
    crate::helpers::wait_until(
        &format!("the endpoint never showed as {status} in /metrics"),
        || async { endpoint_status(app, receiver, status).await == Some(1.0) },
    )
    .await;
}

#[tokio::test]
async fn an_eight_second_outage_is_caught_up_within_seconds_not_at_the_five_minute_retry() {
    let receiver = Receiver::start().await;
    let sim = TestSim::default_tenant().await;
    let app = TestApp::spawn_with(sim, |config| {
        deliver_to(config, &receiver);
        config.delivery.timeout_ms = 2_000;
        config.delivery.lease_ms = 10_000;
        // A quick first retry, so every event is on the 5-minute step well before the
        // receiver is back; the probe settings are the shipped defaults.
        config.delivery.retry_schedule = [Duration::from_millis(100), Duration::from_secs(300)]
            .map(Into::into)
            .to_vec();
    })
    .await;
    receiver.go_down();
    let down_since = tokio::time::Instant::now();
    let agents: Vec<String> = app
        .sim
        .free_agents()
        .into_iter()
        .take(5)
        .map(|a| a.id)
        .collect();
    for agent in &agents {
        for state in ["NOT_READY", "PAUSED", "NOT_READY"] {
            assert_eq!(app.set_state(agent, state).await.0, 200);
        }
    }
    app.wait_for_count(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE attempts >= 2",
        5,
        "the first events were not retried",
    )
    .await;
    wait_endpoint_status(&app, &receiver, "failing").await;
    // Back eight seconds into the outage, and never before the test has seen the above
    // (on a slow machine that can take longer).
    let recovery = (down_since + Duration::from_secs(8)).max(tokio::time::Instant::now());
    receiver.go_down_until(recovery);
    receiver.come_back();

    // All fifteen arrive within 15 s of the receiver's return, not 5 minutes later.
    receiver
        .wait_until(15, recovery + Duration::from_secs(15))
        .await;
    assert!(receiver.received().iter().all(|r| r.at >= recovery));
    assert!(
        receiver.copies().values().all(|&n| n == 1),
        "{:?}",
        receiver.copies()
    );
    assert_in_commit_order_per_agent(&receiver.received(), &app.store, &agents).await;
    wait_delivered(&app, 15).await;
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_deliveries
             WHERE status = 'delivered' AND next_attempt_at - delivered_at > 180000"
        )
        .await,
        5,
        "each agent's first event was delivered minutes before its scheduled retry"
    );
    assert_eq!(
        app.count("SELECT MAX(attempts) FROM webhook_deliveries")
            .await,
        3,
        "probes that failed used up no scheduled retry"
    );
    wait_endpoint_status(&app, &receiver, "up").await;
    assert_eq!(endpoint_status(&app, &receiver, "failing").await, Some(0.0));
}

#[tokio::test]
async fn a_stalled_receiver_is_timed_out_and_retried() {
    let receiver = Receiver::start().await;
    receiver.script(&[Mode::Stall(Duration::from_secs(3))]);
    let app = app_delivering_to(&receiver).await;
    let agent = app.sim.free_agents().remove(0);
    assert_eq!(app.set_state(&agent.id, "NOT_READY").await.0, 200);

    receiver.wait_for(1, DEADLINE).await;
    wait_delivered(&app, 1).await;
    let errors: Vec<Option<String>> = on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT error FROM webhook_attempts ORDER BY id"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert!(errors.len() >= 2, "{errors:?}");
    assert!(
        errors[0].as_deref().unwrap_or("").contains("timed out"),
        "{errors:?}"
    );
    assert_eq!(*errors.last().unwrap(), None);
}

#[tokio::test]
async fn gone_stops_that_event_type_to_that_endpoint_only() {
    let receiver = Receiver::start().await;
    receiver.set_mode(Mode::GoneFor("agent.state_changed"));
    let app = app_delivering_to(&receiver).await;
    let free = app.sim.free_agents();
    assert_eq!(app.set_state(&free[0].id, "NOT_READY").await.0, 200);
    app.wait_for_count(
        "SELECT COUNT(*) FROM webhook_disabled",
        1,
        "410 was not recorded",
    )
    .await;

    assert_eq!(app.set_state(&free[1].id, "NOT_READY").await.0, 200);
    let off = app.sim.off_shift_agent();
    assert_eq!(app.set_state(&off.id, "READY").await.0, 409);

    receiver.wait_for(1, DEADLINE).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].json["type"], "transition.rejected");
    let state_changes_sent = app
        .count("SELECT COUNT(*) FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.event_type = 'agent.state_changed'")
        .await;
    assert_eq!(state_changes_sent, 1, "nothing after the 410");
}

#[tokio::test]
async fn retry_after_of_a_429_is_waited_out() {
    let receiver = Receiver::start().await;
    receiver.script(&[Mode::RateLimited(1)]);
    let app = app_delivering_to(&receiver).await;
    let agent = app.sim.free_agents().remove(0);
    assert_eq!(app.set_state(&agent.id, "NOT_READY").await.0, 200);
    receiver.wait_for(1, DEADLINE).await;
    wait_delivered(&app, 1).await;
    let times: Vec<i64> = on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT attempted_at FROM webhook_attempts ORDER BY id"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert_eq!(times.len(), 2);
    assert!(
        times[1] - times[0] >= 1_000,
        "retried after {} ms",
        times[1] - times[0]
    );
}

fn run_wfmd(args: &[&str], database_url: &str) -> (i32, String) {
    let output = wfmd()
        .env("WFMD_DATABASE__URL", database_url)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn dead_deliveries_are_listed_and_replayed() {
    let receiver = Receiver::start().await;
    receiver.set_mode(Mode::Fail(500));
    let app = app_delivering_to(&receiver).await;
    let agent = app.sim.free_agents().remove(0);
    assert_eq!(app.set_state(&agent.id, "NOT_READY").await.0, 200);
    app.wait_for_count(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'dead'",
        1,
        "never died",
    )
    .await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM webhook_attempts").await,
        4,
        "1 + 3 retries"
    );

    let url = app.db.url();
    let (code, listed) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run_wfmd(&["outbox", "list", "--dead"], &url)
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert!(
        listed.contains("agent.state_changed") && listed.contains("dead"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("endpoint {}  failing since ", receiver.url()))
            && listed.contains("dead=1  last=receiver answered 500"),
        "endpoint health is listed: {listed}"
    );

    receiver.set_mode(Mode::Ok);
    let (code, replayed) =
        tokio::task::spawn_blocking(move || run_wfmd(&["outbox", "replay", "--dead"], &url))
            .await
            .unwrap();
    assert_eq!(code, 0);
    assert!(replayed.contains("re-queued 1"), "{replayed}");
    receiver.wait_for(1, DEADLINE).await;
    wait_delivered(&app, 1).await;
}

#[tokio::test]
async fn a_redirecting_receiver_is_a_failed_attempt_and_its_target_gets_nothing() {
    let target = Receiver::start().await;
    let receiver = Receiver::start().await;
    receiver.set_mode(Mode::RedirectTo(307, target.address));
    let app = app_delivering_to(&receiver).await;
    let agent = app.sim.free_agents().remove(0);
    assert_eq!(app.set_state(&agent.id, "NOT_READY").await.0, 200);

    app.wait_for_count(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'dead'",
        1,
        "a redirected delivery was never given up",
    )
    .await;
    assert!(
        target.received().is_empty(),
        "the redirect's target got the signed event"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'")
            .await,
        0
    );
    let attempts: Vec<(Option<i64>, Option<String>)> = on!(app.store.reader(), |c| sqlx::query_as(
        "SELECT status_code, error FROM webhook_attempts ORDER BY id"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert_eq!(attempts.len(), 4, "1 + 3 retries, each a failure");
    let to = format!("a redirect to http://{}/hooks;", target.address);
    for (status, error) in attempts {
        assert_eq!(status, Some(307));
        let error = error.expect("a failed attempt says why");
        assert!(
            error.contains("307")
                && error.contains(&to)
                && error.contains("does not follow redirects"),
            "{error}"
        );
        assert!(
            !error.contains(REDIRECT_USER) && !error.contains(REDIRECT_TOKEN),
            "the location's credentials are shown: {error}"
        );
    }
}

#[tokio::test]
async fn credentials_in_webhook_urls_reach_no_output_log_error_or_database_file() {
    const USER: &str = "hook-user";
    const PASSWORD: &str = "hook-pa55word";
    const TOKEN: &str = "tok-s3cret-123";
    let with_credentials =
        |address: String| format!("http://{USER}:{PASSWORD}@{address}/hooks?token={TOKEN}");
    let sim = TestSim::start(SimConfig::default()).await;
    let db = TestDb::new();
    let receiver = Receiver::start().await;
    receiver.set_mode(Mode::Fail(500));
    // One receiver refuses, the other is not there at all (a transport error).
    let refusing = with_credentials(receiver.address.to_string());
    let absent = with_credentials(format!("127.0.0.1:{}", free_port()));
    let mut env = sim.env(&db.url());
    env.retain(|(k, _)| k != "WFMD_LOG__LEVEL");
    let hooks = json!([{"url": refusing, "secret": SECRET}, {"url": absent, "secret": SECRET}]);
    for (k, v) in [
        ("WFMD_LOG__LEVEL", "debug"),
        ("WFMD_WEBHOOKS", &hooks.to_string()),
        ("WFMD_DELIVERY__TIMEOUT_MS", "1000"),
        ("WFMD_DELIVERY__LEASE_MS", "1500"),
        ("WFMD_DELIVERY__RETRY_SCHEDULE", "[\"50ms\", \"100ms\"]"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    let shows_a_secret = |text: &str| [USER, PASSWORD, TOKEN].iter().any(|s| text.contains(s));

    let checked = wfmd()
        .args(["config", "check"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&checked.stdout).into_owned()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{shown}");
    assert!(!shows_a_secret(&shown), "config check: {shown}");
    let masked = format!("http://***@{}/hooks?token=***", receiver.address);
    assert!(shown.contains(&masked), "{shown}");

    let log = db.dir.path().join("wfmd.log");
    let daemon = Daemon::spawn_logging_to(&env, &log).await;
    let agent = sim.free_agents().remove(0);
    let changed = http_client()
        .post(format!(
            "{}/v1/agents/{}/transitions",
            daemon.address, agent.id
        ))
        .json(&json!({"state": "NOT_READY"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let store = Store::open(&db.url()).await.unwrap();
    crate::helpers::wait_until("never died", || async {
        crate::helpers::count(
            &store,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'dead'",
        )
        .await
            >= 2
    })
    .await;
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());

    let errors: Vec<String> = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT error FROM webhook_attempts"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert!(
        errors.iter().any(|e| e.contains("receiver answered 500")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with("request failed")),
        "{errors:?}"
    );
    for error in &errors {
        assert!(!shows_a_secret(error), "attempt error: {error}");
    }
    let (code, listed) = run_wfmd(&["outbox", "list", "--dead"], &db.url());
    assert_eq!(code, 0);
    assert!(!shows_a_secret(&listed), "outbox list: {listed}");
    assert!(listed.contains(&masked), "{listed}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!shows_a_secret(&logged), "log: {logged}");
    store.close().await;
    // Every byte SQLite keeps: the database, its write-ahead log and shared memory.
    for file in ["wfmd.db", "wfmd.db-wal", "wfmd.db-shm"] {
        let Ok(bytes) = std::fs::read(db.dir.path().join(file)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(!shows_a_secret(&text), "{file} holds a secret");
    }
}

/// A `wfmd.toml` delivering to `receiver`.
pub fn config_file(dir: &std::path::Path, receiver: &Receiver) -> std::path::PathBuf {
    let path = dir.join("wfmd.toml");
    std::fs::write(
        &path,
        format!(
            "[delivery]\ntimeout_ms = 1000\nlease_ms = 1500\nconcurrency = 16\n\
             retry_schedule = [\"50ms\", \"100ms\", \"200ms\", \"400ms\"]\n\n\
             [[webhooks]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
            receiver.url()
        ),
    )
    .unwrap();
    path
}

/// Writes `count` events for 50 agents straight into the outbox, as the engine would.
async fn enqueue_events(store: &Store, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in 0..count.div_ceil(100) {
        let mut tx = store.begin_write().await.unwrap();
        for i in chunk * 100..((chunk + 1) * 100).min(count) {
            let agent = format!("u_{:03}", i % 50 + 1);
            ids.push(
                wfmd::store::outbox::enqueue(
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
    }
    ids
}

on_both_backends!(kill_9_while_delivering_a_thousand_loses_none_and_keeps_each_agents_order);
async fn kill_9_while_delivering_a_thousand_loses_none_and_keeps_each_agents_order(db: TestDb) {
    let sim = TestSim::start(SimConfig::default()).await;
    let store = Store::open(&db.url()).await.unwrap();
    let expected = enqueue_events(&store, 1_000).await;
    store.close().await;

    let receiver = Receiver::start().await;
    // The first 200 are taken; the rest stall beyond the delivery timeout, so the kill
    // lands mid-way however long the test takes to send it.
    receiver.script(&[Mode::Ok; 200]);
    receiver.set_mode(Mode::Stall(Duration::from_secs(3600)));
    let config = config_file(db.dir.path(), &receiver);
    let args = ["--config", config.to_str().unwrap(), "serve"];
    let env = sim.env(&db.url());
    let daemon = Daemon::spawn_with(&args, &env, None).await;
    receiver.wait_for(200, DEADLINE).await;
    daemon.signal("KILL");
    assert!(!daemon.wait().await.success());
    let before_restart = receiver.distinct().len();
    assert!(
        before_restart < 1_000,
        "the kill came too late to test anything"
    );

    receiver.set_mode(Mode::Ok);
    let daemon = Daemon::spawn_with(&args, &env, None).await;
    receiver.wait_for(1_000, DEADLINE).await;
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());

    let distinct = receiver.distinct();
    assert_eq!(distinct.len(), 1_000);
    assert!(expected.iter().all(|id| distinct.contains(id)));
    // A duplicate is the same event again: same id, same body.
    let mut bodies: HashMap<String, String> = HashMap::new();
    for r in receiver.received() {
        let first = bodies.entry(r.id.clone()).or_insert_with(|| r.body.clone());
        assert_eq!(*first, r.body, "{} was sent with another body", r.id);
    }
    // Each agent's events first arrived in its commit order, across the kill (a delivery
    // whose lease the kill left behind is sent again: its copy arrives later).
    let mut seen = std::collections::HashSet::new();
    let first_copies: Vec<Received> = receiver
        .received()
        .into_iter()
        .filter(|r| seen.insert(r.id.clone()))
        .collect();
    let agents: Vec<String> = (1..=50).map(|i| format!("u_{i:03}")).collect();
    let store = Store::open(&db.url()).await.unwrap();
    assert_in_commit_order_per_agent(&first_copies, &store, &agents).await;
    store.close().await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_posts_and_releases_the_rest() {
    let sim = TestSim::start(SimConfig::default()).await;
    let db = TestDb::new();
    let store = Store::open(&db.url()).await.unwrap();
    enqueue_events(&store, 200).await;

    let receiver = Receiver::start().await;
    receiver.set_mode(Mode::Stall(Duration::from_millis(300)));
    let config = config_file(db.dir.path(), &receiver);
    let args = ["--config", config.to_str().unwrap(), "serve"];
    let daemon = Daemon::spawn_with(&args, &sim.env(&db.url()), None).await;
    receiver.wait_for(1, DEADLINE).await;
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());

    let leased: i64 = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE lease_until IS NOT NULL"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(leased, 0, "every unfinished lease was given back");
    let delivered: i64 = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(
        delivered as usize,
        receiver.distinct().len(),
        "what the receiver accepted is recorded as delivered"
    );
    assert!(delivered < 200);
}
