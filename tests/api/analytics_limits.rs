//! Analytics jobs are bounded: unfinished jobs per caller, and finished jobs (with their
//! results) pruned past `retention.analytics_jobs` while their audit hash stays.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wfmd::engine::analytics;
use wfmd::engine::retention::Retention;
use wfmd::sim::SimConfig;
use wfmd::store::retention::Kind;

use crate::analytics::until_finished;
use crate::auth::entry;
use crate::helpers::{TestApp, TestSim, accepted_job_id, count};

async fn submit(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/analytics/queries", app.address))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_caller_with_max_jobs_per_caller_unfinished_gets_429_and_another_caller_does_not() {
    let sim = TestSim::start(SimConfig {
        agents: 10,
        ..SimConfig::default()
    })
    .await;
    // The platform works on each query far longer than the test: the jobs stay running.
    sim.sim.set_aggregation_duration(Duration::from_secs(600));
    let app = TestApp::spawn_with(sim, |config| {
        config.api_tokens = vec![
            entry("desk", "wfmd_desk", "supervisor"),
            entry("floor", "wfmd_floor", "supervisor"),
        ];
        config.analytics.max_jobs_per_caller = 2;
    })
    .await;
    let at = |hours: i64| wfmd::time::rfc3339(Utc::now() - chrono::Duration::hours(hours));
    let query = json!({"source": "platform", "metrics": ["count:sum"], "bucket": "hour",
                       "from": at(48), "to": at(24)});
    for _ in 0..2 {
        assert_eq!(submit(&app, "wfmd_desk", &query).await.status(), 202);
    }
    let refused = submit(&app, "wfmd_desk", &query).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["limit"], 2, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("analytics.max_jobs_per_caller"),
        "{problem}"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM analytics_jobs").await,
        2,
        "the refused job was not stored"
    );
    assert_eq!(
        submit(&app, "wfmd_floor", &query).await.status(),
        202,
        "the limit is per caller"
    );
}

#[tokio::test]
async fn finished_jobs_past_their_age_go_with_their_results_and_their_csv_still_verifies() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0).id;
    let (status, _) = app.set_state(&agent, "NOT_READY").await;
    assert_eq!(status, 200);
    let now = Utc::now();
    let response = app
        .http
        .post(format!("{}/v1/analytics/queries", app.address))
        .json(&json!({"source": "history", "metrics": ["transitions:sum"],
                      "dimensions": ["agent"], "bucket": "hour",
                      "from": wfmd::time::rfc3339(now - chrono::Duration::hours(2)),
                      "to": wfmd::time::rfc3339(now + chrono::Duration::hours(1))}))
        .send()
        .await
        .unwrap();
    let job_id = accepted_job_id(response).await;
    assert_eq!(until_finished(&app, &job_id).await["status"], "completed");
    let csv = app
        .get(&format!("/v1/analytics/queries/{job_id}/results"))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(count(&app.store, "SELECT COUNT(*) FROM analytics_results").await > 0);

    let config = wfmd::config::Config::default();
    assert_eq!(
        config.retention.analytics_jobs,
        Some(Duration::from_secs(30 * 86_400))
    );
    let retention = Retention::new(app.store.clone(), &config.retention, &config.audit);
    let report = retention
        .prune(now + chrono::Duration::days(29), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        report.removed(Kind::AnalyticsJobs),
        0,
        "younger than 30 days"
    );
    assert_eq!(
        app.get(&format!("/v1/analytics/queries/{job_id}"))
            .await
            .status(),
        200
    );

    // With batches of one row, the results go over several batches, then the job.
    let mut small = config.retention.clone();
    small.batch_size = 1;
    let retention = Retention::new(app.store.clone(), &small, &config.audit);
    let report = retention
        .prune(now + chrono::Duration::days(31), &CancellationToken::new())
        .await
        .unwrap();
    assert!(report.removed(Kind::AnalyticsJobs) >= 2, "{report:?}");
    assert_eq!(
        count(&app.store, "SELECT COUNT(*) FROM analytics_jobs").await,
        0
    );
    assert_eq!(
        count(&app.store, "SELECT COUNT(*) FROM analytics_results").await,
        0
    );
    assert_eq!(
        app.get(&format!("/v1/analytics/queries/{job_id}"))
            .await
            .status(),
        404
    );

    // The audit log is append-only: the job's completion entry, with its SHA-256, stays.
    assert!(
        analytics::verify_file(&app.store, &job_id, &csv)
            .await
            .unwrap(),
        "the downloaded results still verify"
    );
    let intact: Value = app.get("/v1/audit/verify").await.json().await.unwrap();
    assert_eq!(intact["intact"], true, "{intact}");
}
