//! Retention: each kind of record is pruned past its age and the rest kept; reports and
//! history refuse windows before what is kept instead of answering with less.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wfmd::engine::retention::Retention;
use wfmd::on;
use wfmd::store::Store;
use wfmd::store::retention::Kind;

use crate::helpers::{TestApp, TestDb, TestSim, count, on_both_backends};

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

async fn exec(store: &Store, sql: &str, binds: &[i64]) {
    let mut tx = store.begin_write().await.unwrap();
    on!(tx, |c| {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for bind in binds {
            query = query.bind(*bind);
        }
        query.execute(c).await.map(wfmd::store::Done::from)
    })
    .unwrap();
    tx.commit().await.unwrap();
}

/// One record of every kind at `at`, tagged `tag` (`old` or `new`).
async fn records_at(store: &Store, tag: &str, at: DateTime<Utc>) {
    let t = ms(at);
    let agent = format!("u_{tag}");
    exec(
        store,
        &format!(
            "INSERT INTO state_intervals (agent_id, state, origin, started_at, ended_at)
             VALUES ('{agent}', 'READY', 'api', $1 - 1000, $1)"
        ),
        &[t],
    )
    .await;
    exec(
        store,
        &format!(
            "INSERT INTO transition_attempts (id, agent_id, target_state, reason, origin, actor,
                 outcome, latency_ms, requested_at, completed_at)
             VALUES ('att-{tag}', '{agent}', 'READY', 'WORKING', 'api', 'api', 'succeeded', 5,
                     $1, $1)"
        ),
        &[t],
    )
    .await;
    // Two events: one every endpoint received, one an endpoint gave up on.
    for (n, status) in [(1, "delivered"), (2, "dead")] {
        exec(
            store,
            &format!(
                "INSERT INTO outbox_events (id, event_type, agent_id, payload, created_at)
                 VALUES ('evt-{tag}-{n}', 'agent.state_changed', '{agent}', '{{}}', $1)"
            ),
            &[t],
        )
        .await;
        exec(
            store,
            &format!(
                "INSERT INTO webhook_deliveries (event_seq, endpoint, event_type, agent_id,
                     status, next_attempt_at, created_at)
                 SELECT seq, 'http://hooks.test/a', event_type, agent_id, '{status}', $1, $1
                 FROM outbox_events WHERE id = 'evt-{tag}-{n}'"
            ),
            &[t],
        )
        .await;
        exec(
            store,
            &format!(
                "INSERT INTO webhook_attempts (delivery_id, attempted_at, duration_ms)
                 SELECT d.id, $1, 3 FROM webhook_deliveries d JOIN outbox_events e
                 ON e.seq = d.event_seq WHERE e.id = 'evt-{tag}-{n}'"
            ),
            &[t],
        )
        .await;
    }
    exec(
        store,
        "UPDATE webhook_cursor SET last_event_seq = (SELECT MAX(seq) FROM outbox_events)",
        &[],
    )
    .await;
    exec(
        store,
        &format!(
            "INSERT INTO bulk_jobs (id, request_hash, target_state, actor, status, created_at,
                 finished_at)
             VALUES ('job-{tag}', 'h', 'READY', 'api', 'completed', $1, $1)"
        ),
        &[t],
    )
    .await;
    exec(
        store,
        &format!(
            "INSERT INTO bulk_items (job_id, seq, agent_id, target_state, outcome)
             VALUES ('job-{tag}', 0, '{agent}', 'READY', 'succeeded')"
        ),
        &[],
    )
    .await;
    // A rule with two firings: the older can go, the rule's latest always stays.
    for (n, slot) in [(1, t - 60_000), (2, t)] {
        exec(
            store,
            &format!(
                "INSERT INTO rule_firings (rule, slot_at, outcome, definition, started_at)
                 VALUES ('rule-{tag}', $1, 'completed', '{{}}', $1)"
            ),
            &[slot],
        )
        .await;
        exec(
            store,
            &format!(
                "INSERT INTO rule_firing_agents (firing_id, agent_id, outcome)
                 SELECT id, '{agent}-{n}', 'changed' FROM rule_firings
                 WHERE rule = 'rule-{tag}' AND slot_at = $1"
            ),
            &[slot],
        )
        .await;
    }
    exec(
        store,
        &format!(
            "INSERT INTO metric_samples (family, entity_id, sampled_at, name, queued,
                 agents_available, agents_staffed, agents_busy, polled_at)
             VALUES ('skills', 'skill-{tag}', $1, '', 0, 0, 0, 0, $1)"
        ),
        &[t],
    )
    .await;
}

async fn counts(store: &Store) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for (name, sql) in [
        ("intervals", "SELECT COUNT(*) FROM state_intervals"),
        ("attempts", "SELECT COUNT(*) FROM transition_attempts"),
        ("events", "SELECT COUNT(*) FROM outbox_events"),
        ("deliveries", "SELECT COUNT(*) FROM webhook_deliveries"),
        ("webhook_attempts", "SELECT COUNT(*) FROM webhook_attempts"),
        ("bulk_jobs", "SELECT COUNT(*) FROM bulk_jobs"),
        ("bulk_items", "SELECT COUNT(*) FROM bulk_items"),
        ("firings", "SELECT COUNT(*) FROM rule_firings"),
        ("firing_agents", "SELECT COUNT(*) FROM rule_firing_agents"),
        ("samples", "SELECT COUNT(*) FROM metric_samples"),
    ] {
        out.push((name, count(store, sql).await));
    }
    out
}

on_both_backends!(retention_prunes_each_kind_past_its_age_and_keeps_the_rest);
async fn retention_prunes_each_kind_past_its_age_and_keeps_the_rest(db: TestDb) {
    let app = TestApp::spawn_in(db).await;
    let store = app.store.clone();
    let now = Utc::now();
    // Ages: outbox_delivered 30d < webhook_attempts 30d < outbox_dead 90d = bulk 90d …
    // `old` is older than every age, `mid` only than the 30-day ones, `new` than none.
    records_at(&store, "old", now - Duration::days(500)).await;
    records_at(&store, "mid", now - Duration::days(45)).await;
    records_at(&store, "new", now - Duration::days(1)).await;
    let before = counts(&store).await;
    assert!(before.iter().all(|(_, n)| *n >= 3), "{before:?}");

    let config = wfmd::config::Config::default();
    let retention = Retention::new(store.clone(), &config.retention, &config.audit);
    let report = retention
        .prune(now, &CancellationToken::new())
        .await
        .unwrap();

    // 400 days: only `old` goes.
    assert_eq!(report.removed(Kind::Intervals), 1);
    assert_eq!(report.removed(Kind::Attempts), 1);
    // 30 days for delivered events: `old` and `mid`; 90 days for dead ones: `old`.
    assert_eq!(report.removed(Kind::OutboxDelivered), 2);
    assert_eq!(report.removed(Kind::OutboxDead), 1);
    // 90 days: `old`'s job and its older firing (its latest stays).
    assert_eq!(report.removed(Kind::BulkJobs), 1);
    assert_eq!(report.removed(Kind::RuleFirings), 1);
    assert_eq!(report.removed(Kind::Samples), 1);
    let after = counts(&store).await;
    let expected = [
        ("intervals", 2),
        ("attempts", 2),
        // new: both events; mid: the dead one.
        ("events", 3),
        ("deliveries", 3),
        // The dead `mid` delivery's attempt is 45 days old: past webhook_attempts' 30.
        ("webhook_attempts", 2),
        ("bulk_jobs", 2),
        ("bulk_items", 2),
        // old's latest, mid's two, new's two.
        ("firings", 5),
        ("firing_agents", 5),
        ("samples", 2),
    ];
    assert_eq!(after, expected);
    for kept in ["att-mid", "att-new"] {
        let n: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM transition_attempts WHERE id = $1"
        )
        .bind(kept)
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(n, 1, "{kept} kept");
    }
    // A second pass finds nothing more.
    let again = retention
        .prune(now, &CancellationToken::new())
        .await
        .unwrap();
    assert!(again.removed.is_empty(), "{again:?}");

    // The compliance report and history refuse a window reaching before the horizon…
    let kept_from = wfmd::time::rfc3339(now - Duration::days(400));
    let old_window = [
        ("from", wfmd::time::rfc3339(now - Duration::days(450))),
        ("to", wfmd::time::rfc3339(now - Duration::days(440))),
    ];
    for path in ["/v1/reports/compliance", "/v1/agents/u_old/history"] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .query(&old_window)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["parameter"], "from");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("are not kept before"),
            "{problem}"
        );
        // Within a millisecond or so of the pass's cutoff.
        assert_eq!(
            problem["kept_from"].as_str().unwrap()[..16],
            kept_from[..16]
        );
    }
    // So do history analytics computed from the raw records, and the day curve of
    // samples (kept 90 days).
    let response = app
        .http
        .post(format!("{}/v1/analytics/queries", app.address))
        .json(
            &serde_json::json!({"source": "history", "metrics": ["transitions:sum"],
            "dimensions": ["agent"], "from": old_window[0].1, "to": old_window[1].1,
            "bucket": "hour"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "from", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("are not kept before")
    );
    let response = app
        .http
        .get(format!("{}/v1/live/series", app.address))
        .query(&[
            ("family", "skills"),
            ("id", "s_old"),
            ("from", &wfmd::time::rfc3339(now - Duration::days(100))),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["parameter"], "from", "{problem}");
    assert_eq!(
        problem["kept_from"].as_str().unwrap()[..16],
        wfmd::time::rfc3339(now - Duration::days(90))[..16]
    );
    // …and answer for a window after it.
    let recent = [
        ("from", wfmd::time::rfc3339(now - Duration::days(2))),
        ("to", wfmd::time::rfc3339(now)),
    ];
    let response = app
        .http
        .get(format!("{}/v1/reports/compliance", app.address))
        .query(&recent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let csv = response.text().await.unwrap();
    assert!(csv.contains("u_new"), "{csv}");
}

#[tokio::test]
async fn kinds_kept_forever_are_never_pruned() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.retention.intervals = None;
    })
    .await;
    exec(
        &app.store,
        "INSERT INTO state_intervals (agent_id, state, origin, started_at, ended_at)
         VALUES ('u_001', 'READY', 'api', 0, 1000)",
        &[],
    )
    .await;
    let config = wfmd::config::Config {
        retention: wfmd::config::retention::RetentionConfig {
            intervals: None,
            ..Default::default()
        },
        ..Default::default()
    };
    let retention = Retention::new(app.store.clone(), &config.retention, &config.audit);
    retention
        .prune(Utc::now(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM state_intervals").await, 1);
}
