//! A full disk under the database: nothing reaches the platform that wfmd cannot
//! record, `/readyz` says the database does not take writes, and writes work again as
//! soon as space comes back, without a restart. The database sits on a small tmpfs the
//! test fills and frees ([`SmallDisk`](crate::helpers::SmallDisk)).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wfmd::on;
use wfmd::store::{Backend, Store};
use wfmd::telemetry::names::STORE_WRITE_ERRORS_TOTAL;

use crate::helpers::{DEADLINE, SET_STATE, TestApp, TestDb, TestSim};

/// Declares a test on both backends: `NAME::on_sqlite` and `NAME::on_postgres` run
/// `async fn NAME(backend: Backend)`, which makes its own database on a small disk.
macro_rules! on_both_small_disks {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn on_sqlite() {
                super::$test(wfmd::store::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn on_postgres() {
                super::$test(wfmd::store::Backend::Postgres).await;
            }
        }
    )+};
}

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

#[tokio::test]
async fn reads_go_on_while_the_disk_is_full_on_readers_opened_meanwhile() {
    let db = TestDb::on_small_disk(DISK_BYTES);
    let store = Store::open(&db.url()).await.unwrap();
    write_one(&store).await.unwrap();

    db.small_disk().fill();
    // More readers at once than a SQLite tenant keeps open at rest, each holding its
    // connection until all have one: some are opened now, on the full disk.
    const READS: usize = 4;
    let all_in = tokio::sync::Barrier::new(READS);
    let reads = (0..READS).map(|_| async {
        let conn = store.reader().acquire().await;
        // Waits whether or not it got one, so a refused reader fails the test.
        all_in.wait().await;
        let mut conn = conn?;
        on!(conn, |c| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM write_probe"
        )
        .fetch_one(c)
        .await)
    });
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.expect("a read on a full disk"), 1);
    }
    db.small_disk().free();
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
        .find_map(|l| {
            l.strip_prefix(&format!(
                "{STORE_WRITE_ERRORS_TOTAL}{{tenant=\"default\"}} "
            ))
        })
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

/// The record of a change in the audit log marked as recorded late.
const RECORDED_LATE: &str = "SELECT COUNT(*) FROM audit_log WHERE action = 'transition.succeeded'
     AND detail LIKE '%\"recordedLate\":true%'";

/// The other of READY and NOT_READY.
fn other_than(state: &str) -> &'static str {
    if state == "NOT_READY" {
        "READY"
    } else {
        "NOT_READY"
    }
}

on_both_small_disks!(a_change_made_as_the_disk_fills_is_answered_made_and_recorded_late_in_order);
async fn a_change_made_as_the_disk_fills_is_answered_made_and_recorded_late_in_order(
    backend: Backend,
) {
    let db = TestDb::on_small_disk_of(backend, disk_bytes(backend));
    let app = spawn_holding_calls(db).await;
    // The platform holds the change, so the disk fills while the call is under way.
    let HeldChange {
        agent,
        target,
        held,
        change,
    } = held_change(&app).await;
    app.db.small_disk().fill();
    held.release();
    let response = change.await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (status.as_u16(), body["outcome"].as_str()),
        (200, Some("succeeded")),
        "the platform made the change, and the answer says so: {body}"
    );
    assert_eq!(app.sim.sim.agent(&agent.id).unwrap().state, target);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_attempts").await,
        0,
        "its record waits for room"
    );

    // Nothing more goes out for the agent until that record is written: the next
    // change would be recorded from the wrong state.
    let sent = app.sim.changes();
    let (status, refused) = app.set_state(&agent.id, other_than(target)).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["type"], "urn:wfmd:problem:database-unavailable");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("last change was made") && detail.contains(&agent.id),
        "the refusal says why without claiming the last change was not made: {detail}"
    );
    assert_eq!(app.sim.changes(), sent, "nothing was sent for it");

    // Room again: the daemon writes the record on its own, as the platform answered it.
    app.db.small_disk().free();
    app.wait_for_count(
        "SELECT COUNT(*) FROM transition_attempts a JOIN state_intervals i
         ON i.attempt_id = a.id WHERE a.outcome = 'succeeded'",
        1,
        "the change is recorded as succeeded, with its interval, once there is room",
    )
    .await;
    assert_eq!(app.count(RECORDED_LATE).await, 1, "marked recorded late");
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
        "recorded once"
    );

    // And the agent's next change leaves the state the late record entered.
    let (status, next) = app.set_state(&agent.id, other_than(target)).await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["from"], target, "{next}");
}

/// The answers to one agent's changes, in order: status and body.
type Answers = Vec<(u16, Value)>;

/// A pass over the left-over intents that finds the intent of a change still in flight
/// leaves it to the change instead of waiting for it. Were the change's record refused
/// (a full disk), the record would be kept in memory holding the change's locks until a
/// pass writes it: a pass waiting for those locks waited for itself, and the record was
/// never written, which the test above met now and then under load.
#[tokio::test]
async fn a_pass_over_left_over_intents_leaves_a_change_in_flight_to_itself() {
    let app = spawn_holding_calls(TestDb::new()).await;
    let HeldChange { held, change, .. } = held_change(&app).await;
    let settled = tokio::time::timeout(Duration::from_secs(10), app.engine.settle_intents())
        .await
        .expect("the pass waited for the change in flight")
        .unwrap();
    assert_eq!(settled, 0, "the change in flight is left to itself");
    held.release();
    assert_eq!(change.await.unwrap().status(), 200);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_attempts").await,
        1,
        "recorded once, by the change"
    );
    assert_eq!(app.engine.settle_intents().await.unwrap(), 0);
}

on_both_small_disks!(
    a_burst_across_a_full_disk_records_every_change_the_platform_made_and_no_other
);
async fn a_burst_across_a_full_disk_records_every_change_the_platform_made_and_no_other(
    backend: Backend,
) {
    const AGENTS: usize = 8;
    let db = TestDb::on_small_disk_of(backend, disk_bytes(backend));
    let app = TestApp::spawn_on_db(TestSim::default_tenant().await, db, |config| {
        config.cxone.request_timeout_ms = DEADLINE.as_millis() as u64;
    })
    .await;
    let agents: Vec<_> = app.sim.free_agents().into_iter().take(AGENTS).collect();
    assert_eq!(agents.len(), AGENTS);
    let before = app.sim.changes();
    let refusals = Arc::new(AtomicUsize::new(0));
    // Each agent changes back and forth until the test has seen the disk fill and free.
    let going = CancellationToken::new();
    let burst: Vec<_> = agents
        .iter()
        .map(|agent| {
            let (http, address) = (app.http.clone(), app.address.clone());
            let (id, mut state) = (agent.id.clone(), agent.state.clone());
            let (refusals, going) = (refusals.clone(), going.clone());
            tokio::spawn(async move {
                let mut answers = Answers::new();
                while !going.is_cancelled() {
                    let target = other_than(&state);
                    let (status, body) = set_state_at_with(&http, &address, &id, target).await;
                    match status {
                        200 => state = target.to_owned(),
                        503 => {
                            refusals.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => panic!("an answer that is neither made nor refused: {status} {body}"),
                    }
                    answers.push((status, body));
                }
                answers
            })
        })
        .collect();

    // Mid-burst, the disk fills while a change is at the platform.
    app.wait_for_count(
        "SELECT COUNT(*) FROM transition_attempts WHERE outcome = 'succeeded'",
        (AGENTS * 2) as i64,
        "the burst gets going",
    )
    .await;
    let held = app.sim.sim.hold_next_on(SET_STATE);
    tokio::time::timeout(DEADLINE, held.arrived())
        .await
        .expect("a change reaches the platform");
    app.db.small_disk().fill();
    held.release();
    crate::helpers::wait_until("changes are refused while the disk is full", || async {
        refusals.load(Ordering::SeqCst) >= AGENTS
    })
    .await;
    let recorded = app
        .count("SELECT COUNT(*) FROM transition_attempts WHERE outcome = 'succeeded'")
        .await;
    app.db.small_disk().free();
    // And on for a while once there is room again.
    app.wait_for_count(
        "SELECT COUNT(*) FROM transition_attempts WHERE outcome = 'succeeded'",
        recorded + (AGENTS * 2) as i64,
        "changes are made again once there is room",
    )
    .await;
    going.cancel();

    let mut made = 0;
    for task in burst {
        for (status, body) in task.await.unwrap() {
            if status == 200 {
                made += 1;
                assert_eq!(body["outcome"], "succeeded", "{body}");
            } else {
                assert_eq!(
                    body["type"], "urn:wfmd:problem:database-unavailable",
                    "{body}"
                );
            }
        }
    }
    app.wait_for_count(
        "SELECT COUNT(*) FROM transition_attempts WHERE outcome = 'succeeded'",
        made,
        "every change answered as made is recorded",
    )
    .await;
    crate::helpers::wait_until("no intent is left", || async {
        app.count("SELECT COUNT(*) FROM transition_intents").await == 0
    })
    .await;

    let sent = (app.sim.changes() - before) as i64;
    assert!(
        refusals.load(Ordering::SeqCst) >= AGENTS,
        "the disk was full for part of the burst"
    );
    assert_eq!(
        made, sent,
        "every change the platform made was answered as made, and no refusal hid one"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_attempts WHERE outcome = 'succeeded'")
            .await,
        sent,
        "every change the platform made is recorded as made, and no other"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM transition_attempts WHERE outcome <> 'succeeded'")
            .await,
        0,
        "none is recorded as failed"
    );
    assert!(
        app.count(RECORDED_LATE).await >= 1,
        "the change at the platform when the disk filled was recorded late"
    );
    every_change_leaves_the_state_before_it(&app.store).await;
}

/// A daemon that stopped (an operator's restart, a deploy) while the disk was full,
/// after the platform made a change whose record it kept for room; then room again.
struct StoppedWithAChangeKept {
    // Held for the next daemon: the small disk under the database, and the platform.
    _db: TestDb,
    _sim: TestSim,
    config: wfmd::config::Config,
    agent: String,
    /// The state the platform put the agent in.
    made: &'static str,
}

impl StoppedWithAChangeKept {
    async fn on(backend: Backend) -> StoppedWithAChangeKept {
        let db = TestDb::on_small_disk_of(backend, disk_bytes(backend));
        let sim = TestSim::default_tenant().await;
        let mut config = sim.config(&db.url());
        config.cxone.request_timeout_ms = DEADLINE.as_millis() as u64;
        let agent = sim.free_agents().remove(0);
        let made = other_than(&agent.state);
        let first = Serving::start(&config).await;
        let held = sim.sim.hold_next_on(SET_STATE);
        let change = tokio::spawn({
            let (address, agent) = (first.address.clone(), agent.id.clone());
            async move {
                set_state_at_with(&crate::helpers::http_client(), &address, &agent, made).await
            }
        });
        tokio::time::timeout(DEADLINE, held.arrived())
            .await
            .expect("the change reaches the platform");
        db.small_disk().fill();
        held.release();
        let (status, body) = change.await.unwrap();
        assert_eq!(
            (status, body["outcome"].as_str()),
            (200, Some("succeeded")),
            "{body}"
        );
        first.stop().await;
        db.small_disk().free();
        StoppedWithAChangeKept {
            _db: db,
            _sim: sim,
            config,
            agent: agent.id,
            made,
        }
    }
}

/// What a daemon recorded is what the platform did: every change succeeded, one of them
/// recorded late, no intent left, and each change leaves the state before it.
async fn recorded_as_made(store: &Store) {
    assert_eq!(
        crate::helpers::count(store, RECORDED_LATE).await,
        1,
        "the change made before the stop is recorded late, as made"
    );
    assert_eq!(
        crate::helpers::count(
            store,
            "SELECT COUNT(*) FROM transition_attempts WHERE outcome <> 'succeeded'"
        )
        .await,
        0,
        "none is recorded as failed"
    );
    assert_eq!(
        crate::helpers::count(store, "SELECT COUNT(*) FROM transition_intents").await,
        0
    );
    every_change_leaves_the_state_before_it(store).await;
}

on_both_small_disks!(
    a_change_kept_for_room_when_the_daemon_stopped_is_recorded_before_the_agent_s_next_change
);
async fn a_change_kept_for_room_when_the_daemon_stopped_is_recorded_before_the_agent_s_next_change(
    backend: Backend,
) {
    let stopped = StoppedWithAChangeKept::on(backend).await;
    let next = Serving::start(&stopped.config).await;
    let (status, body) = set_state_at_with(
        &crate::helpers::http_client(),
        &next.address,
        &stopped.agent,
        other_than(stopped.made),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["from"], stopped.made,
        "the next change leaves the state the platform was put in: {body}"
    );
    recorded_as_made(&next.store).await;
    next.stop().await;
}

on_both_small_disks!(
    a_change_kept_for_room_when_the_daemon_stopped_is_recorded_within_seconds_of_the_next_start
);
async fn a_change_kept_for_room_when_the_daemon_stopped_is_recorded_within_seconds_of_the_next_start(
    backend: Backend,
) {
    let stopped = StoppedWithAChangeKept::on(backend).await;
    let next = Serving::start(&stopped.config).await;
    crate::helpers::wait_until("the change made before the stop is recorded", || async {
        crate::helpers::count(&next.store, "SELECT COUNT(*) FROM transition_intents").await == 0
    })
    .await;
    recorded_as_made(&next.store).await;
    next.stop().await;
}

/// wfmd as `wfmd serve` runs it, holding its database's lock, in this process.
struct Serving {
    address: String,
    store: Store,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Serving {
    async fn start(config: &wfmd::config::Config) -> Serving {
        let app = wfmd::App::build_locked(config, config.tenants(), wfmd::engine::Clock::Wall)
            .await
            .unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        let store = app.store();
        let stop = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(stop.clone()));
        Serving {
            address,
            store,
            stop,
            server,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.server.await.unwrap().unwrap();
    }
}

/// An interval as stored: agent, state, start, end, the attempt that opened it.
type IntervalRow = (String, String, i64, Option<i64>, Option<String>);

/// Each recorded change's `from` is the state of the agent's interval it closed, and
/// each agent's intervals follow one another without a gap or an overlap.
async fn every_change_leaves_the_state_before_it(store: &Store) {
    let intervals: Vec<IntervalRow> = on!(store.reader(), |c| sqlx::query_as(
        "SELECT agent_id, state, started_at, ended_at, attempt_id FROM state_intervals
             ORDER BY agent_id, started_at, id"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    let attempts: std::collections::HashMap<String, Option<String>> =
        on!(store.reader(), |c| sqlx::query_as::<
            _,
            (String, Option<String>),
        >(
            "SELECT id, from_state FROM transition_attempts"
        )
        .fetch_all(c)
        .await)
        .unwrap()
        .into_iter()
        .collect();
    for pair in intervals.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if before.0 != after.0 {
            continue;
        }
        assert_eq!(
            before.3,
            Some(after.2),
            "the agent's interval ends where the next begins: {before:?} then {after:?}"
        );
        if let Some(attempt) = &after.4 {
            assert_eq!(
                attempts[attempt].as_deref(),
                Some(before.1.as_str()),
                "the change {attempt} left the state recorded before it: {before:?} then {after:?}"
            );
        }
    }
}

/// A change of `agent` to `state` through the daemon at `address`: status and body.
async fn set_state_at_with(
    http: &reqwest::Client,
    address: &str,
    agent: &str,
    state: &str,
) -> (u16, Value) {
    let response = http
        .post(format!("{address}/v1/agents/{agent}/transitions"))
        .json(&json!({ "state": state }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Room for the database and its log, with little to spare: a new PostgreSQL database's
/// own catalogs take about 8 MB of it.
fn disk_bytes(backend: Backend) -> u64 {
    match backend {
        Backend::Sqlite => DISK_BYTES,
        Backend::Postgres => 32 << 20,
    }
}

/// wfmd on `db`, its calls to the platform never timing out: a call the platform holds
/// stays under way, and is not sent again, until the test releases it.
async fn spawn_holding_calls(db: TestDb) -> TestApp {
    TestApp::spawn_on_db(TestSim::default_tenant().await, db, |config| {
        config.cxone.request_timeout_ms = DEADLINE.as_millis() as u64;
    })
    .await
}

/// A change sent through the API whose call the platform holds: its agent, its target,
/// the hold, and the request in flight.
struct HeldChange {
    agent: wfmd::sim::SimAgent,
    target: &'static str,
    held: wfmd::sim::Hold,
    change: tokio::task::JoinHandle<reqwest::Response>,
}

/// Sends a change of a free agent and waits until its call reaches the platform, which
/// holds it; its intent is written by then.
async fn held_change(app: &TestApp) -> HeldChange {
    let agent = app.sim.free_agents().remove(0);
    let target = other_than(&agent.state);
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
    HeldChange {
        agent,
        target,
        held,
        change,
    }
}
