//! The aggregation query API: limits, the PENDING → RUNNING → COMPLETED course, the
//! running-queries limit, paging, and the data's shape.

use std::collections::BTreeSet;

use chrono::Datelike;

use super::*;

const AGGS: [&str; 4] = ["avg", "sum", "max", "min"];

fn body(metrics: usize, dimensions: &[&str], bucket: &str, start: &str, end: &str) -> Value {
    let metrics: Vec<Value> = (0..metrics)
        .map(|n| {
            json!({"name": super::super::aggregation::METRICS[n % 3],
                        "aggregation": AGGS[n / 3 % 4]})
        })
        .collect();
    let dimensions: Vec<Value> = dimensions.iter().map(|d| json!({"name": d})).collect();
    json!({"metrics": metrics, "dimensions": dimensions,
           "timeSeries": {"bucketSize": bucket, "start": start, "end": end}})
}

fn frozen() -> SimConfig {
    SimConfig {
        time_scale: 0.0,
        start_at: Some("2026-11-02T09:00:00Z".parse().unwrap()),
        ..unlimited()
    }
}

impl Harness {
    async fn submit(&self, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.api("/api/v2/analytics/query"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn the_platform_limits_are_refused_with_the_reason() {
    let h = harness(frozen()).await;
    let token = h.token().await;
    let day = ("2026-10-01T00:00:00Z", "2026-10-31T23:59:59Z");
    for (body, reason) in [
        (body(11, &[], "DAY", day.0, day.1), "metrics"),
        (
            body(
                1,
                &["group.id", "channel", "skill.id", "a", "b", "c"],
                "DAY",
                day.0,
                day.1,
            ),
            "dimensions",
        ),
        (
            body(
                1,
                &[],
                "DAY",
                "2025-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
            ),
            "365",
        ),
        (body(1, &[], "DAY", "2026-10-01", day.1), "ISO 8601"),
        (body(1, &[], "MONTH", day.0, day.1), "bucketSize"),
        (
            body(1, &["agent"], "DAY", day.0, day.1),
            "unknown dimension",
        ),
    ] {
        let res = h.submit(&token, &body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let text = res.text().await.unwrap();
        assert!(text.contains(reason), "{reason}: {text}");
    }
    assert_eq!(h.sim().aggregation_stats().submitted, 0);
}

#[tokio::test]
async fn a_query_runs_its_course_and_a_sixth_waits_for_one_of_five() {
    let h = harness(frozen()).await;
    let sim = h.sim();
    sim.set_aggregation_duration(Duration::from_secs(3));
    sim.set_aggregation_retry_after(Some(2));
    let token = h.token().await;
    let query = body(
        2,
        &["group.id"],
        "DAY",
        "2026-10-01T00:00:00Z",
        "2026-10-31T23:59:59Z",
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        let res = h.submit(&token, &query).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let answer: Value = res.json().await.unwrap();
        assert_eq!(answer["status"], "PENDING");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    let refused = h.submit(&token, &query).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "3");

    let path = format!("/api/v2/analytics/query/{}?limit=100&offset=0", ids[0]);
    let pending = h.get_with(&token, &path).await;
    assert_eq!(pending.headers()["retry-after"], "2");
    assert_eq!(pending.json::<Value>().await.unwrap()["status"], "PENDING");
    sim.clock().advance(Duration::from_secs(1));
    assert_eq!(h.get_json(&token, &path).await["status"], "RUNNING");
    sim.clock().advance(Duration::from_secs(2));
    let done = h.get_with(&token, &path).await;
    assert!(done.headers().get("retry-after").is_none());
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["status"], "COMPLETED");
    let teams = sim
        .agents()
        .iter()
        .map(|a| a.team_id.clone())
        .collect::<BTreeSet<_>>()
        .len();
    assert_eq!(done["total"], json!(31 * teams));
    assert_eq!(done["results"].as_array().unwrap().len(), 100);
    // Pages are slices of one order: the last one is short, and they match the truth.
    let truth = sim.aggregation_rows(&ids[0]).unwrap();
    let last = h
        .get_json(
            &token,
            &format!("/api/v2/analytics/query/{}?limit=100&offset=100", ids[0]),
        )
        .await;
    let rows = last["results"].as_array().unwrap();
    assert_eq!(rows.len(), 31 * teams - 100);
    let first = &truth[100];
    assert_eq!(rows[0]["timeSeries"], wire::ts(first.bucket));
    assert_eq!(
        rows[0]["dimensions"]["group.id"],
        first.dimensions["group.id"]
    );
    assert_eq!(rows[0]["metrics"][1]["value"], json!(first.values[1].2));
    // With the five done, a new query is taken.
    assert_eq!(
        h.submit(&token, &query).await.status(),
        StatusCode::ACCEPTED
    );
    let stats = sim.aggregation_stats();
    assert_eq!((stats.max_running, stats.refused_running), (5, 1));

    sim.set_aggregation_total_skew(-3);
    assert_eq!(
        h.get_json(&token, &path).await["total"],
        json!(31 * teams - 3)
    );
    assert_eq!(
        h.get_with(&token, "/api/v2/analytics/query/qry_999999")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_injected_failure_ends_the_query_failed_with_its_error() {
    let h = harness(frozen()).await;
    h.sim()
        .fail_next_aggregations(1, "aggregation backend unavailable");
    let token = h.token().await;
    let query = body(
        1,
        &[],
        "HOUR",
        "2026-10-01T00:00:00Z",
        "2026-10-01T23:59:59Z",
    );
    let id: Value = h.submit(&token, &query).await.json().await.unwrap();
    h.sim().clock().advance(Duration::from_secs(5));
    let answer = h
        .get_json(
            &token,
            &format!("/api/v2/analytics/query/{}", id["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(answer["status"], "FAILED");
    assert_eq!(answer["error"], "aggregation backend unavailable");
}

#[tokio::test]
async fn the_data_is_seeded_weekly_and_has_a_few_planted_anomalies() {
    let h = harness(frozen()).await;
    let token = h.token().await;
    let query = json!({"metrics": [{"name": "count", "aggregation": "sum"}],
        "dimensions": [{"name": "channel"}],
        "timeSeries": {"bucketSize": "DAY", "start": "2025-11-03T00:00:00Z",
                       "end": "2026-11-01T23:59:59Z"}});
    let id: Value = h.submit(&token, &query).await.json().await.unwrap();
    let id = id["id"].as_str().unwrap();
    let truth = h.sim().aggregation_rows(id).unwrap();
    assert_eq!(truth, h.sim().aggregation_rows(id).unwrap());
    let mean = |weekday: u32| {
        let values: Vec<f64> = truth
            .iter()
            .filter(|r| r.bucket.weekday().num_days_from_monday() == weekday)
            .map(|r| r.values[0].2)
            .collect();
        values.iter().sum::<f64>() / values.len() as f64
    };
    assert!(
        mean(0) > 1.2 * mean(2),
        "Mondays are busier than Wednesdays"
    );
    assert!(mean(5) < 0.7 * mean(2), "Saturdays are quieter");
    // Planted: a value at least twice anything its weekday usually sees.
    let planted = truth
        .iter()
        .filter(|r| r.values[0].2 > 2.0 * mean(r.bucket.weekday().num_days_from_monday()))
        .count();
    assert!(
        (1..=truth.len() / 50).contains(&planted),
        "{planted} planted anomalies"
    );
    // Another tenant seed, other numbers.
    let other = harness(SimConfig {
        seed: 2,
        ..frozen()
    })
    .await;
    let token = other.token().await;
    let id: Value = other.submit(&token, &query).await.json().await.unwrap();
    let theirs = other
        .sim()
        .aggregation_rows(id["id"].as_str().unwrap())
        .unwrap();
    assert_ne!(theirs[0].values, truth[0].values);
}
