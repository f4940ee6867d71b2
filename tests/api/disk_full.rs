//! A full disk under the database: nothing reaches the platform that wfmd cannot
//! record, `/readyz` says the database does not take writes, and writes work again as
//! soon as space comes back, without a restart. The database sits on a small tmpfs the
//! test fills and frees ([`SmallDisk`](crate::helpers::SmallDisk)).

use serde_json::json;
use wfmd::on;
use wfmd::store::Store;

use crate::helpers::{DEADLINE, SET_STATE, TestApp, TestDb, TestSim};

/// Room for the database and its log, with little to spare.
const DISK_BYTES: u64 = 8 << 20;

/// One small write transaction of the kind every writer makes.
async fn write_one(store: &Store) -> Result<(), sqlx::Error> {
    let mut tx = store.begin_write().await?;
    on!(tx, |c| sqlx::query(
        "INSERT INTO write_probe (id, at) VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET at = at + 1",
    )
    .execute(c)
    .await
    .map(wfmd::store::Done::from))?;
    // A page's worth of new rows, so the commit needs room in the log.
    on!(tx, |c| sqlx::query(
        "CREATE TABLE IF NOT EXISTS ballast (x BLOB)"
    )
    .execute(c)
    .await
    .map(wfmd::store::Done::from))?;
    on!(tx, |c| sqlx::query(
        "INSERT INTO ballast VALUES (randomblob(16000))"
    )
    .execute(c)
    .await
    .map(wfmd::store::Done::from))?;
    tx.commit().await
}

/// Polls `write_one` until it succeeds, failing the test after the deadline.
async fn writes_again(store: &Store) {
    crate::helpers::eventually("writes did not recover after space came back", || async {
        write_one(store).await.map_err(|error| error.to_string())
    })
    .await;
}

#[tokio::test]
async fn a_write_that_failed_on_a_full_disk_does_not_stop_the_writes_after_it() {
    let db = TestDb::on_small_disk(DISK_BYTES);
    let store = Store::open(&db.url()).await.unwrap();
    write_one(&store).await.unwrap();

    db.small_disk().fill();
    let error = write_one(&store).await.expect_err("the disk is full");
    assert!(
        error.to_string().contains("full"),
        "the failure says why: {error}"
    );
    assert!(
        store.check_writable().await.is_err(),
        "and the probe agrees"
    );

    db.small_disk().free();
    writes_again(&store).await;
    store.check_writable().await.expect("the probe sees it too");
}

/// wfmd on a database on a small disk, against the default simulated tenant.
async fn app_on_small_disk() -> TestApp {
    let db = TestDb::on_small_disk(DISK_BYTES);
    TestApp::spawn_on_db(TestSim::default_tenant().await, db, |_| {}).await
}

#[tokio::test]
async fn a_change_the_database_cannot_record_is_never_sent_and_works_once_space_is_back() {
    let app = app_on_small_disk().await;
    let agent = app.sim.free_agents().remove(0);
    let before = app.sim.sim.agent(&agent.id).unwrap().state;
    let target = if before == "NOT_READY" {
        "READY"
    } else {
        "NOT_READY"
    };
    app.readiness_becomes(200).await;

    app.db.small_disk().fill();
    let (status, body) = app.set_state(&agent.id, target).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["type"], "urn:wfmd:problem:database-unavailable",
        "{body}"
    );
    assert_eq!(app.sim.changes(), 0, "nothing went to the platform");
    assert_eq!(app.sim.sim.agent(&agent.id).unwrap().state, before);
    let ready = app.readiness_becomes(503).await;
    let database = ready["database"].as_str().unwrap();
    assert!(
        database.starts_with("unavailable") && database.contains("full"),
        "{ready}"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wfmd_store_write_errors_total{tenant=\"default\"} "))
        .expect("the write errors are counted");
    assert!(errors.parse::<f64>().unwrap() >= 1.0, "{errors}");

    app.db.small_disk().free();
    app.readiness_becomes(200).await;
    let (status, body) = app.set_state(&agent.id, target).await;
    assert_eq!(status, 200, "writes work again without a restart: {body}");
    assert_eq!(app.sim.sim.agent(&agent.id).unwrap().state, target);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_attempts WHERE outcome = 'succeeded'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_change_whose_record_fails_after_the_call_is_recorded_late_never_lost() {
    let db = TestDb::on_small_disk(DISK_BYTES);
    // The held call must not time out, and be sent again, while the disk fills.
    let app = TestApp::spawn_on_db(TestSim::default_tenant().await, db, |config| {
        config.cxone.request_timeout_ms = DEADLINE.as_millis() as u64;
    })
    .await;
    let agent = app.sim.free_agents().remove(0);
    let target = if agent.state == "NOT_READY" {
        "READY"
    } else {
        "NOT_READY"
    };
    // The platform holds the change, so the disk fills while the call is under way.
    let held = app.sim.sim.hold_next_on(SET_STATE);
    let change = tokio::spawn({
        let (http, address, agent) = (app.http.clone(), app.address.clone(), agent.id.clone());
        async move {
            http.post(format!("{address}/v1/agents/{agent}/transitions"))
                .json(&json!({ "state": target }))
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::timeout(DEADLINE, held.arrived())
        .await
        .expect("the change reaches the platform");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_intents").await,
        1,
        "the intent is written before the call"
    );
    app.db.small_disk().fill();
    held.release();
    let response = change.await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        app.sim.sim.agent(&agent.id).unwrap().state,
        target,
        "the platform made the change"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_attempts").await,
        0,
        "whose record failed"
    );

    app.db.small_disk().free();
    let settled = app.engine.settle_intents().await.unwrap();
    assert_eq!(settled, 1);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM transition_attempts a JOIN state_intervals i
             ON i.attempt_id = a.id WHERE a.outcome = 'succeeded'"
        )
        .await,
        1,
        "recorded as succeeded, with its interval"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.succeeded'
             AND json_extract(detail, '$.recordedLate') = 1"
        )
        .await,
        1,
        "and marked as recorded late in the audit log"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox_events WHERE event_type = 'agent.state_changed'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_intents").await,
        0
    );
    assert_eq!(
        app.engine.settle_intents().await.unwrap(),
        0,
        "settled once"
    );
}
