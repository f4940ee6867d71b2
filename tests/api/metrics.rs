//! The skill and queue pollers against the simulator: zeros for a skill the platform
//! leaves out, queue ids batched 100 a call, Retry-After honoured, one refused family
//! leaving the other running (and showing on /readyz), samples stored with the
//! platform's time, and the series route over them.

use std::time::{Duration, Instant};
use wfmd::on;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use wfmd::config::Config;
use wfmd::domain::metrics::SkillTile;
use wfmd::sim::{QUEUES_SCOPE, SimConfig};
use wfmd::store::samples::{self, Sample};
use wfmd::telemetry::names::{METRIC_POLLS_TOTAL, METRIC_SAMPLES_TOTAL};

use crate::helpers::{TestApp, TestSim};

const SKILL_DATA: &str = "GET /inContactAPI/services/v18.0/real-time-data/skill-data";
const QUEUE_STATS: &str = "POST /api/v2/reporting/queues/realtime";
const LIST_SKILLS: &str = "GET /api/v2/skills";
const LIST_QUEUES: &str = "GET /api/v2/queues";

/// Pollers on, for the given skills and queues, each polled once an hour: a test sees
/// exactly one cycle unless it shortens an interval.
fn pollers(config: &mut Config, skills: &[&str], queues: &[&str]) {
    config.live.enabled = true;
    config.live.skills = skills.iter().map(|s| s.to_string()).collect();
    config.live.queues = queues.iter().map(|s| s.to_string()).collect();
    config.live.skill_interval = Duration::from_secs(3600);
    config.live.queue_interval = Duration::from_secs(3600);
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app.get("/readyz").await;
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Waits until `check` holds for the /readyz body.
async fn wait_for_readyz(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    crate::helpers::eventually(what, || async {
        let (_, body) = readyz(app).await;
        if check(&body) {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await
}

async fn wait_for_calls(app: &TestApp, route: &str, at_least: u64) {
    crate::helpers::eventually(&format!("{route}: waited for {at_least} calls"), || async {
        let calls = app.sim.calls(route);
        if calls >= at_least {
            Ok(())
        } else {
            Err(format!("{calls} calls"))
        }
    })
    .await;
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Row {
    entity_id: String,
    sampled_at: i64,
    service_level: Option<f64>,
    queued: i64,
    agents_available: i64,
    agents_staffed: i64,
    polled_at: i64,
}

async fn rows(app: &TestApp, family: &str) -> Vec<Row> {
    on!(app.store.reader(), |c| sqlx::query_as(
        "SELECT entity_id, sampled_at, service_level, queued, agents_available,
                agents_staffed, polled_at
         FROM metric_samples WHERE family = $1 ORDER BY entity_id, sampled_at",
    )
    .bind(family)
    .fetch_all(c)
    .await)
    .unwrap()
}

#[tokio::test]
async fn a_configured_skill_the_platform_leaves_out_is_stored_and_shown_as_zeros() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |c| {
        pollers(c, &["s_100", "s_999"], &["q_1"])
    })
    .await;
    app.wait_for_count(
        "SELECT COUNT(*) FROM metric_samples WHERE family = 'skills'",
        2,
        "both configured skills are sampled",
    )
    .await;

    let skills = rows(&app, "skills").await;
    let missing = &skills[1];
    assert_eq!(missing.entity_id, "s_999");
    assert_eq!(
        (
            missing.queued,
            missing.agents_available,
            missing.agents_staffed
        ),
        (0, 0, 0)
    );
    assert_eq!(missing.service_level, None, "no contacts, no service level");
    assert_eq!(
        missing.sampled_at, skills[0].sampled_at,
        "the answer's time"
    );
    let staffed = app
        .sim
        .agents_where(|a| a.state != "LOGGED_OUT" && a.skills.iter().any(|s| s == "s_100"))
        .len() as i64;
    assert_eq!(
        skills[0].agents_staffed, staffed,
        "s_100 as the platform gave it"
    );

    let body = wait_for_readyz(&app, "skills ok", |b| {
        b["metrics"]["skills"]["status"] == "ok"
    })
    .await;
    assert!(body["metrics"]["skills"]["polled_at"].is_string(), "{body}");
    assert_eq!(app.sim.calls(SKILL_DATA), 1);
    assert_eq!(
        app.sim.calls(LIST_SKILLS),
        0,
        "configured skills are not listed"
    );
}

#[tokio::test]
async fn two_hundred_fifty_queues_are_asked_for_in_exactly_three_calls_a_cycle() {
    let sim = TestSim::start(SimConfig {
        agents: 60,
        queues: 250,
        ..SimConfig::default()
    })
    .await;
    // No queues configured: every queue of the tenant, from the listing.
    let app = TestApp::spawn_with(sim, |c| pollers(c, &["s_100"], &[])).await;
    app.wait_for_count(
        "SELECT COUNT(*) FROM metric_samples WHERE family = 'queues'",
        250,
        "every queue is sampled",
    )
    .await;
    assert_eq!(app.sim.calls(QUEUE_STATS), 3, "100 + 100 + 50 ids");
    assert_eq!(app.sim.calls(LIST_QUEUES), 1);
    let queues = rows(&app, "queues").await;
    let mut ids: Vec<&str> = queues.iter().map(|r| r.entity_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 250);
    wait_for_readyz(&app, "queues ok", |b| {
        b["metrics"]["queues"]["status"] == "ok"
    })
    .await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured_before_the_poll_is_repeated() {
    let sim = TestSim::default_tenant().await;
    sim.sim.fail_next_on(SKILL_DATA, 1, 429, Some(2));
    let started = Instant::now();
    let app = TestApp::spawn_with(sim, |c| pollers(c, &["s_100"], &["q_1"])).await;
    app.wait_for_count(
        "SELECT COUNT(*) FROM metric_samples",
        2,
        "both families are sampled in their first cycle",
    )
    .await;
    // With an hour between cycles, the sample of the refused poll can only come from
    // its retry, which waited out the Retry-After.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retried after {:?}, before Retry-After",
        started.elapsed()
    );
    assert_eq!(
        (app.sim.calls(SKILL_DATA), app.sim.calls(QUEUE_STATS)),
        (2, 1),
        "the refused skill poll and its retry, one queue poll"
    );
    assert_eq!(app.sim.sim.stats().injected_faults, 1);
}

#[tokio::test]
async fn a_missing_scope_stops_queue_stats_only_and_shows_on_readyz() {
    let sim = TestSim::default_tenant().await;
    sim.sim.deny_scope(QUEUES_SCOPE);
    let app = TestApp::spawn_with(sim, |c| {
        pollers(c, &["s_100"], &["q_1"]);
        // Below the configurable floor, so the test sees several skill cycles quickly.
        c.live.skill_interval = Duration::from_millis(100);
        c.live.queue_interval = Duration::from_millis(100);
    })
    .await;

    let body = wait_for_readyz(&app, "queues unavailable", |b| {
        b["metrics"]["queues"]["status"] == "unavailable"
    })
    .await;
    assert_eq!(
        body["metrics"]["queues"]["reason"],
        "queue stats unavailable: missing scope reporting:queue:view (403)"
    );
    // The skills keep being polled, the refused family is not asked again.
    wait_for_calls(&app, SKILL_DATA, 5).await;
    assert_eq!(app.sim.calls(QUEUE_STATS), 1);
    let (status, body) = readyz(&app).await;
    assert_eq!(
        status, 200,
        "a refused family does not make wfmd unready: {body}"
    );
    assert_eq!(body["metrics"]["skills"]["status"], "ok");
    assert_eq!(body["metrics"]["queues"]["status"], "unavailable");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM metric_samples WHERE family = 'queues'")
            .await,
        0
    );

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with(METRIC_POLLS_TOTAL)
            && l.contains("family=\"queues\"")
            && l.contains("outcome=\"unavailable\"")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(METRIC_SAMPLES_TOTAL) && l.contains("family=\"skills\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unknown_configured_queue_stops_queue_stats_naming_it_while_skills_go_on() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |c| {
        pollers(c, &["s_100"], &["q_1", "q_nope"]);
        // Below the configurable floor, so the test sees several skill cycles quickly.
        c.live.skill_interval = Duration::from_millis(100);
        c.live.queue_interval = Duration::from_millis(100);
    })
    .await;
    let body = wait_for_readyz(&app, "queues unavailable", |b| {
        b["metrics"]["queues"]["status"] == "unavailable"
    })
    .await;
    let reason = body["metrics"]["queues"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("queue stats unavailable: not found on the platform (404)")
            && reason.contains("q_nope"),
        "{reason}"
    );
    wait_for_calls(&app, SKILL_DATA, 3).await;
    assert_eq!(app.sim.calls(QUEUE_STATS), 1, "not asked again");
}

#[tokio::test]
async fn a_poll_that_fails_after_its_retries_shows_as_failing_without_making_wfmd_unready() {
    let sim = TestSim::default_tenant().await;
    // The first poll of each family fails, with no retry left.
    sim.sim.fail_next_on(SKILL_DATA, 1, 503, None);
    sim.sim.fail_next_on(QUEUE_STATS, 1, 503, None);
    let app = TestApp::spawn_with(sim, |c| {
        pollers(c, &["s_100"], &["q_1"]);
        c.retry.max_retries = 0;
    })
    .await;
    let body = wait_for_readyz(&app, "both failing", |b| {
        b["metrics"]["skills"]["status"] == "failing"
            && b["metrics"]["queues"]["status"] == "failing"
    })
    .await;
    assert_eq!(
        body["metrics"]["skills"]["reason"],
        "skill activity: the platform failed with 503: injected fault"
    );
    assert_eq!(body["metrics"]["queues"]["polled_at"], Value::Null);
    let (status, _) = readyz(&app).await;
    assert_eq!(status, 200);
    assert_eq!(app.count("SELECT COUNT(*) FROM metric_samples").await, 0);
}

#[tokio::test]
async fn samples_are_stored_with_the_platforms_time_and_served_as_a_series() {
    // A frozen platform clock long before ours, so its time and ours cannot be mixed up.
    let platform_time: DateTime<Utc> = "2025-03-05T14:30:00Z".parse().unwrap();
    let before = Utc::now();
    let sim = TestSim::start(SimConfig {
        agents: 60,
        time_scale: 0.0,
        start_at: Some(platform_time),
        ..SimConfig::default()
    })
    .await;
    let app = TestApp::spawn_with(sim, |c| pollers(c, &["s_100"], &["q_1"])).await;
    app.wait_for_count("SELECT COUNT(*) FROM metric_samples", 2, "both sampled")
        .await;
    for family in ["skills", "queues"] {
        let row = rows(&app, family).await.remove(0);
        assert_eq!(row.sampled_at, platform_time.timestamp_millis(), "{family}");
        assert!(
            row.polled_at >= before.timestamp_millis(),
            "stored at wfmd's own time: {row:?}"
        );
    }

    let response = app
        .get("/v1/live/series?family=skills&id=s_100&from=2025-03-05T00:00:00Z")
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["family"], "skills");
    assert_eq!(body["id"], "s_100");
    assert_eq!(body["points"][0]["t"], "2025-03-05T14:30:00.000Z");
    assert_eq!(body["points"].as_array().unwrap().len(), 1);
    // Today's curve (the default start) has nothing from that day.
    let body: Value = app
        .get("/v1/live/series?family=skills&id=s_100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["points"], serde_json::json!([]));
}

fn tile(id: &str, at: DateTime<Utc>, queued: u32, service_level: Option<f64>) -> Sample {
    Sample::from(&SkillTile {
        skill_id: id.into(),
        skill_name: "Tier 1 Voice".into(),
        contacts_queued: queued,
        contacts_active: 0,
        longest_wait_secs: 0,
        service_level,
        service_level_threshold_secs: None,
        service_level_goal: None,
        agents_available: 1,
        agents_staffed: 1,
        agents_on_contact: 0,
        agents_acw: 0,
        estimated_wait_secs: None,
        sampled_at: at,
    })
}

#[tokio::test]
async fn the_series_route_returns_todays_stored_points_in_time_order() {
    let app = TestApp::spawn().await;
    let midnight = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let at = |minutes: i64| midnight + TimeDelta::minutes(minutes);
    let stored = [
        tile("s_1", at(5), 7, Some(0.75)),
        tile("s_1", at(-30), 99, Some(0.1)),
        tile("s_1", at(1), 3, None),
        tile("s_2", at(2), 50, Some(1.0)),
    ];
    let mut tx = app.store.begin_write().await.unwrap();
    samples::insert(&mut tx, &stored, Utc::now()).await.unwrap();
    tx.commit().await.unwrap();

    // By default, from the start of today (UTC): yesterday's point is left out.
    let body: Value = app
        .get("/v1/live/series?family=skills&id=s_1")
        .await
        .json()
        .await
        .unwrap();
    let points = body["points"].as_array().unwrap();
    let t = |m: i64| wfmd::time::rfc3339(at(m));
    assert_eq!(
        points,
        &[
            serde_json::json!({"t": t(1), "service_level": null, "queued": 3}),
            serde_json::json!({"t": t(5), "service_level": 0.75, "queued": 7}),
        ]
    );

    let from = wfmd::time::rfc3339(at(-60));
    let body: Value = app
        .get(&format!("/v1/live/series?family=skills&id=s_1&from={from}"))
        .await
        .json()
        .await
        .unwrap();
    let queued: Vec<u64> = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["queued"].as_u64().unwrap())
        .collect();
    assert_eq!(queued, [99, 3, 7]);

    let body: Value = app
        .get("/v1/live/series?family=queues&id=s_1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["points"],
        serde_json::json!([]),
        "the families are apart"
    );
}
