//! Analytics jobs over the platform's aggregation queries, against the simulator over
//! real HTTP: rows, polling, paging, completeness, the running-queries limit, token
//! renewal, a restart after `kill -9`, and the dialect that has no such queries.

use std::time::Duration;
use wfmd::on;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use wfmd::engine::analytics;
use wfmd::sim::SimConfig;

use crate::analytics::{finished_after_kill_and_restart, until_finished};
use crate::helpers::{
    DEADLINE, Daemon, Dialect, TestApp, TestDb, TestSim, accepted_job_id, eventually, http_client,
    wfmd,
};

/// Hour-aligned, in the past: the simulator computes any range.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

fn query(metrics: &[&str], dimensions: &[&str], bucket: &str, hours: i64) -> Value {
    json!({"source": "platform", "metrics": metrics, "dimensions": dimensions,
           "bucket": bucket, "from": wfmd::time::rfc3339(t0()),
           "to": wfmd::time::rfc3339(t0() + chrono::Duration::hours(hours))})
}

/// wfmd against a 50-agent tenant (5 teams), polling fast.
async fn app_with(
    query_duration: Duration,
    adjust: impl FnOnce(&mut wfmd::config::Config),
) -> TestApp {
    let sim = TestSim::start(SimConfig {
        agents: 50,
        ..SimConfig::default()
    })
    .await;
    sim.sim.set_aggregation_duration(query_duration);
    TestApp::spawn_with(sim, |config| {
        config.analytics.poll_interval = Duration::from_millis(20);
        config.analytics.poll_max_interval = Duration::from_millis(200);
        adjust(config);
    })
    .await
}

async fn submit(app: &TestApp, body: &Value) -> String {
    let response = app
        .http
        .post(format!("{}/v1/analytics/queries", app.address))
        .json(body)
        .send()
        .await
        .unwrap();
    accepted_job_id(response).await
}

async fn report_ready_events(store: &wfmd::store::Store, job_id: &str) -> i64 {
    on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'report.ready'
         AND json_extract(payload, '$.data.job_id') = $1",
    )
    .bind(job_id)
    .fetch_one(c)
    .await)
    .unwrap()
}

#[tokio::test]
async fn a_12345_row_platform_result_is_fetched_in_pages_and_matches_the_simulators_truth() {
    let app = app_with(Duration::from_millis(300), |_| {}).await;
    // 5 teams × 2,469 hours.
    let job_id = submit(
        &app,
        &query(&["duration:avg", "count:sum"], &["group.id"], "hour", 2_469),
    )
    .await;
    let job = until_finished(&app, &job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["total"], 12_345);
    assert_eq!(job["received"], 12_345);
    assert_eq!(job["platform_status"], "COMPLETED");
    assert_eq!(
        job["rows"],
        2 * 12_345,
        "one CSV row per metric and result row"
    );

    let queries = app.sim.sim.aggregation_queries();
    assert_eq!(queries.len(), 1);
    let pages: Vec<u64> = queries[0]
        .polls
        .iter()
        .filter(|p| p.status == "COMPLETED")
        .map(|p| p.offset)
        .collect();
    assert_eq!(pages, (0..25).map(|n| n * 500).collect::<Vec<u64>>());

    let csv = app
        .get(&format!("/v1/analytics/queries/{job_id}/results"))
        .await
        .bytes()
        .await
        .unwrap();
    let text = String::from_utf8(csv.to_vec()).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "bucket,group.id,metric,value,moving_average,direction,z_score,anomaly,baseline,spread"
    );
    let mut ours: Vec<(String, String, String, f64)> = lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f[2].to_owned(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    let mut truth: Vec<(String, String, String, f64)> = app
        .sim
        .sim
        .aggregation_rows(&queries[0].id)
        .unwrap()
        .into_iter()
        .flat_map(|row| {
            row.values.into_iter().map(move |(name, agg, value)| {
                (
                    wfmd::time::rfc3339(row.bucket),
                    row.dimensions["group.id"].clone(),
                    format!("{name}:{agg}"),
                    value,
                )
            })
        })
        .collect();
    ours.sort_by(|a, b| a.partial_cmp(b).unwrap());
    truth.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(ours.len(), 24_690);
    assert!(ours == truth, "the rows are the simulator's, exactly");

    assert_eq!(report_ready_events(&app.store, &job_id).await, 1);
    assert!(
        analytics::verify_file(&app.store, &job_id, &csv)
            .await
            .unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn polls_come_no_sooner_than_the_platforms_retry_after() {
    // The query works until three polls have come, however long they take, and ends
    // when the platform's clock is moved past it: the polls compared are never cut
    // short by the query ending first.
    let runs_for = Duration::from_secs(600);
    let app = app_with(runs_for, |_| {}).await;
    app.sim.sim.set_aggregation_retry_after(Some(1));
    let job_id = submit(&app, &query(&["duration:avg"], &[], "day", 24 * 3)).await;
    eventually("the query was never polled three times", || async {
        let queries = app.sim.sim.aggregation_queries();
        if queries.first().is_some_and(|q| q.polls.len() >= 3) {
            Ok(())
        } else {
            Err(format!("{queries:?}"))
        }
    })
    .await;
    app.sim.sim.clock().advance(runs_for);
    assert_eq!(until_finished(&app, &job_id).await["status"], "completed");
    let polls = &app.sim.sim.aggregation_queries()[0].polls;
    let working: Vec<_> = polls
        .iter()
        .take_while(|p| p.status != "COMPLETED")
        .collect();
    assert!(working.len() >= 2, "{polls:?}");
    for pair in polls.windows(2).take(working.len()) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= chrono::Duration::milliseconds(990),
            "a poll came {gap} after one that said Retry-After: 1"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn paging_stops_at_the_first_short_page() {
    let app = app_with(Duration::from_millis(100), |config| {
        config.analytics.page_size = 100;
    })
    .await;
    // 5 teams × 50 hours = 250 rows: pages of 100, 100 and 50.
    let job_id = submit(&app, &query(&["count:sum"], &["group.id"], "hour", 50)).await;
    assert_eq!(until_finished(&app, &job_id).await["received"], 250);
    let pages: Vec<(u64, u64)> = app.sim.sim.aggregation_queries()[0]
        .polls
        .iter()
        .filter(|p| p.status == "COMPLETED")
        .map(|p| (p.offset, p.rows))
        .collect();
    assert_eq!(pages, [(0, 100), (100, 100), (200, 50)]);
    app.stop().await;
}

#[tokio::test]
async fn pages_lost_to_503_are_asked_again_and_the_result_is_complete() {
    let app = app_with(Duration::ZERO, |config| {
        config.analytics.page_size = 50;
    })
    .await;
    // One call in five answers 503 (seeded: the job is the only caller, so every run
    // fails the same calls).
    app.sim.sim.set_faults(wfmd::sim::Faults {
        error_ratio: 0.2,
        ..Default::default()
    });
    // 5 teams × 100 hours = 500 rows: ten pages of 50, and the empty one after them.
    let job_id = submit(&app, &query(&["count:sum"], &["group.id"], "hour", 100)).await;
    let job = until_finished(&app, &job_id).await;
    app.sim.sim.set_faults(wfmd::sim::Faults::default());
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        (job["total"].as_u64(), job["received"].as_u64()),
        (Some(500), Some(500))
    );

    let query = &app.sim.sim.aggregation_queries()[0];
    let answered: Vec<u64> = query
        .polls
        .iter()
        .filter(|p| p.status == "COMPLETED")
        .map(|p| p.offset)
        .collect();
    assert_eq!(answered, (0..=10).map(|n| n * 50).collect::<Vec<u64>>());
    let asked = app.sim.sim.stats().by_route["GET /api/v2/analytics/query/{id}"];
    assert!(
        asked > query.polls.len() as u64,
        "some page requests were answered 503 and asked again: {asked} asked, {} answered",
        query.polls.len()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_total_that_disagrees_with_the_rows_fails_the_job_naming_both_numbers() {
    let app = app_with(Duration::from_millis(100), |_| {}).await;
    app.sim.sim.set_aggregation_total_skew(7);
    let job_id = submit(&app, &query(&["count:sum"], &["group.id"], "hour", 50)).await;
    let job = until_finished(&app, &job_id).await;
    assert_eq!(job["status"], "failed");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("total of 257") && error.contains("250 were received"),
        "{error}"
    );
    assert_eq!(report_ready_events(&app.store, &job_id).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_platform_query_fails_the_job_with_the_platforms_error() {
    let app = app_with(Duration::from_millis(100), |_| {}).await;
    app.sim
        .sim
        .fail_next_aggregations(1, "aggregation backend unavailable");
    let job_id = submit(&app, &query(&["count:sum"], &[], "day", 48)).await;
    let job = until_finished(&app, &job_id).await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("aggregation backend unavailable"),
        "{job}"
    );
    app.stop().await;
}

/// Waits until the platform has accepted `count` queries.
async fn submitted_reaches(app: &TestApp, count: u64) {
    eventually(&format!("{count} queries were never sent"), || async {
        let stats = app.sim.sim.aggregation_stats();
        if stats.submitted >= count {
            Ok(())
        } else {
            Err(format!("{stats:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_sixth_query_waits_for_a_slot_instead_of_collecting_a_429() {
    // Each query works until the platform's clock is moved past it, so the five slots
    // fill up however slowly the queries are sent.
    let runs_for = Duration::from_secs(600);
    let app = app_with(runs_for, |_| {}).await;
    let mut jobs = Vec::new();
    for _ in 0..7 {
        jobs.push(submit(&app, &query(&["count:sum"], &["group.id"], "day", 24 * 10)).await);
    }
    // The first five end, and the two that waited get their slots.
    submitted_reaches(&app, 5).await;
    app.sim.sim.clock().advance(runs_for);
    submitted_reaches(&app, 7).await;
    app.sim.sim.clock().advance(runs_for);
    for job_id in &jobs {
        assert_eq!(until_finished(&app, job_id).await["status"], "completed");
    }
    let stats = app.sim.sim.aggregation_stats();
    assert_eq!(stats.submitted, 7);
    assert_eq!(stats.refused_running, 0, "none was sent to collect a 429");
    assert_eq!(stats.max_running, 5, "five at once, the rest queued");
    app.stop().await;
}

#[tokio::test]
async fn a_token_expiring_mid_extraction_is_renewed_and_the_job_completes() {
    let app = app_with(Duration::from_millis(1_500), |_| {}).await;
    // Tokens stop working long before they say they would.
    app.sim
        .sim
        .set_token_validity(Some(Duration::from_millis(300)));
    app.sim.sim.reset_stats();
    let job_id = submit(&app, &query(&["count:sum"], &["group.id"], "hour", 200)).await;
    let job = until_finished(&app, &job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let stats = app.sim.sim.stats();
    assert!(stats.unauthorized >= 1, "{stats:?}");
    assert!(stats.token_requests >= 2, "{stats:?}");
    app.stop().await;
}

#[tokio::test]
async fn incontact_says_platform_analytics_is_not_offered_in_the_api_and_the_cli() {
    let app = TestApp::spawn_on(Dialect::Incontact).await;
    let response = app
        .http
        .post(format!("{}/v1/analytics/queries", app.address))
        .json(&query(&["duration:avg"], &[], "day", 48))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:wfmd:problem:not-offered");
    assert_eq!(problem["field"], "source");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not offered by this platform (incontact dialect)"),
        "{problem}"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM analytics_jobs").await, 0);

    let mut cli = wfmd();
    cli.args([
        "analytics",
        "query",
        "--platform",
        "--metric",
        "duration:avg",
        "--from",
        "2026-06-01",
        "--to",
        "2026-06-03",
        "--server",
        &app.address,
    ]);
    // Off the test's runtime thread, which serves the daemon the CLI talks to.
    let output = tokio::task::spawn_blocking(move || cli.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not offered by this platform"), "{stderr}");
    app.stop().await;
}

#[tokio::test]
async fn a_platform_job_killed_mid_query_is_resumed_after_restart_and_announced_once() {
    let sim = TestSim::start(SimConfig {
        agents: 50,
        ..SimConfig::default()
    })
    .await;
    sim.sim.set_aggregation_duration(Duration::from_secs(3));
    let db = TestDb::new();
    let mut env = sim.env(&db.url());
    env.push(("WFMD_ANALYTICS__POLL_INTERVAL".into(), "50ms".into()));
    env.push(("WFMD_ANALYTICS__POLL_MAX_INTERVAL".into(), "200ms".into()));
    let http = http_client();
    let daemon = Daemon::spawn(&env).await;
    let response = http
        .post(format!("{}/v1/analytics/queries", daemon.address))
        .json(&query(
            &["count:sum", "duration:avg"],
            &["group.id"],
            "hour",
            300,
        ))
        .send()
        .await
        .unwrap();
    let job_id = accepted_job_id(response).await;
    // Kill it once the platform has the query and wfmd has stored its id.
    eventually("never polled", || async {
        let job: Value = http
            .get(format!("{}/v1/analytics/queries/{job_id}", daemon.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["platform_status"].is_string() {
            Ok(())
        } else {
            Err(job.to_string())
        }
    })
    .await;
    let (daemon, job) = finished_after_kill_and_restart(daemon, &env, &job_id, DEADLINE).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["received"], 5 * 300);
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
    assert_eq!(
        sim.sim.aggregation_stats().submitted,
        1,
        "the query was resumed, not submitted again"
    );
    let store = wfmd::store::Store::open(&db.url()).await.unwrap();
    assert_eq!(report_ready_events(&store, &job_id).await, 1);
    store.close().await;
}

/// A CSV result's rows of one metric: (bucket, series, value, anomaly).
fn flagged_rows(csv: &str) -> Vec<(String, String, f64, String)> {
    csv.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f[3].parse().unwrap(),
                f[7].to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_planted_anomalies_are_found_and_weekly_windows_do_not_flag_monday_peaks() {
    let app = app_with(Duration::ZERO, |_| {}).await;
    let from = t0() - chrono::Duration::days(280);
    let mut results = Vec::new();
    for seasonality in ["weekly", "none", "auto"] {
        let job_id = submit(
            &app,
            &json!({"source": "platform", "metrics": ["count:sum"], "dimensions": ["channel"],
                    "bucket": "day", "from": wfmd::time::rfc3339(from),
                    "to": wfmd::time::rfc3339(t0()), "window": 4,
                    "seasonality": seasonality}),
        )
        .await;
        assert_eq!(until_finished(&app, &job_id).await["status"], "completed");
        let csv = app
            .get(&format!(
                "/v1/analytics/queries/{job_id}/results?format=csv"
            ))
            .await
            .text()
            .await
            .unwrap();
        results.push(flagged_rows(&csv));
        if seasonality == "auto" {
            // Each anomaly is shown with the baseline it was judged against and its
            // spread, and the series says which season it followed.
            for line in csv
                .lines()
                .skip(1)
                .filter(|l| l.contains(",SPIKE,") || l.contains(",DROP,"))
            {
                let f: Vec<&str> = line.split(',').collect();
                let (baseline, spread): (f64, f64) = (f[8].parse().unwrap(), f[9].parse().unwrap());
                assert!(
                    spread > 0.0 && (f[3].parse::<f64>().unwrap() - baseline).abs() > spread,
                    "{line}"
                );
            }
            let json: Value = app
                .get(&format!(
                    "/v1/analytics/queries/{job_id}/results?format=json"
                ))
                .await
                .json()
                .await
                .unwrap();
            for series in json["series"].as_array().unwrap() {
                assert_eq!(series["seasonality"], "weekly", "chosen from the data");
                for anomaly in series["anomalies"].as_array().unwrap() {
                    assert!(
                        anomaly["baseline"].is_number() && anomaly["spread"].is_number(),
                        "{anomaly}"
                    );
                }
            }
        }
    }
    let (weekly, plain) = (&results[0], &results[1]);
    // Chosen from the data, the season is the week.
    assert_eq!(&results[2], weekly);

    // Planted, by the simulator's own truth: at least twice its weekday's mean.
    let mean = |series: &str, weekday: chrono::Weekday| {
        let values: Vec<f64> = weekly
            .iter()
            .filter(|r| r.1 == series && bucket_weekday(&r.0) == weekday)
            .map(|r| r.2)
            .collect();
        values.iter().sum::<f64>() / values.len() as f64
    };
    let planted = |r: &(String, String, f64, String)| r.2 > 2.0 * mean(&r.1, bucket_weekday(&r.0));
    // A planted point with four ordinary same-weekday points before it stands out.
    let mut judged = 0;
    for (i, point) in weekly.iter().enumerate().filter(|(_, r)| planted(r)) {
        let earlier: Vec<_> = weekly[..i]
            .iter()
            .filter(|r| r.1 == point.1 && bucket_weekday(&r.0) == bucket_weekday(&point.0))
            .collect();
        if earlier.len() >= 4 && !earlier[earlier.len() - 4..].iter().any(|r| planted(r)) {
            assert_eq!(point.3, "SPIKE", "planted {point:?}");
            judged += 1;
        }
    }
    assert!(judged >= 1, "the range holds planted points to judge");

    // Ordinary Mondays are no anomaly against earlier Mondays: with weekly windows no
    // more of them are flagged than the noise's share of any day. Compared with the
    // days right before instead, a Monday meets the weekend before it, and that swing
    // is all the spreads see, so planted points go unnoticed: weekly windows find more.
    let flags = |rows: &[(String, String, f64, String)], monday_only: bool| {
        rows.iter()
            .filter(|r| !monday_only || bucket_weekday(&r.0) == chrono::Weekday::Mon)
            .filter(|r| !planted(r) && !r.3.is_empty())
            .count()
    };
    let (aligned, any_day) = (flags(weekly, true), flags(weekly, false));
    assert!(
        aligned as f64 <= 1.5 * any_day as f64 / 7.0,
        "Mondays flagged {aligned} times of {any_day} with weekly windows"
    );
    let found = |rows: &[(String, String, f64, String)]| {
        rows.iter()
            .filter(|r| planted(r) && !r.3.is_empty())
            .count()
    };
    assert!(
        found(weekly) > found(plain),
        "planted points found: {} with weekly windows, {} without",
        found(weekly),
        found(plain)
    );
    app.stop().await;
}

fn bucket_weekday(bucket: &str) -> chrono::Weekday {
    use chrono::Datelike;
    wfmd::time::parse_instant(bucket).unwrap().weekday()
}

/// Issue #34's case: an hourly platform query over most of a year (8,000 points) of a
/// metric with a daily cycle (and the simulator's weekly one) and a little noise, with
/// two real spikes. With default settings the detector before #34 flagged 42 % of such
/// a series; now the two spikes are flagged, each with the baseline it was judged
/// against, and under 1 % of the points in all.
#[tokio::test]
async fn an_hourly_year_with_two_spikes_flags_the_spikes_with_their_baselines_and_little_else() {
    let app = app_with(Duration::ZERO, |_| {}).await;
    let from = t0() - chrono::Duration::hours(8_000);
    // A busy afternoon hour and a quiet night hour, well after the baselines settle.
    let spikes = [
        from + chrono::Duration::hours(3_000),
        from + chrono::Duration::hours(6_500) + chrono::Duration::hours(10),
    ];
    app.sim.sim.set_aggregation_anomalies(Some(spikes.to_vec()));
    let job_id = submit(
        &app,
        &json!({"source": "platform", "metrics": ["count:sum"], "bucket": "hour",
                "from": wfmd::time::rfc3339(from), "to": wfmd::time::rfc3339(t0())}),
    )
    .await;
    let job = until_finished(&app, &job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["rows"], 8_000);

    let csv = app
        .get(&format!(
            "/v1/analytics/queries/{job_id}/results?format=csv"
        ))
        .await
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (bucket, value, anomaly, baseline, spread) = (
        column("bucket"),
        column("value"),
        column("anomaly"),
        column("baseline"),
        column("spread"),
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 8_000);
    let flagged: Vec<&csv::StringRecord> =
        rows.iter().filter(|row| !row[anomaly].is_empty()).collect();
    assert!(
        flagged.len() < 80,
        "{} of 8,000 points flagged: {:?}",
        flagged.len(),
        flagged.iter().map(|row| &row[bucket]).collect::<Vec<_>>()
    );
    for spike in spikes {
        let at = wfmd::time::rfc3339(spike);
        let row = flagged
            .iter()
            .find(|row| row[bucket] == at)
            .unwrap_or_else(|| panic!("the spike at {at} is not flagged"));
        assert_eq!(&row[anomaly], "SPIKE");
        // The simulator plants three times the usual value: the baseline is the usual
        // one, within the simulator's ±10 % noise and a little more.
        let (value, baseline): (f64, f64) =
            (row[value].parse().unwrap(), row[baseline].parse().unwrap());
        assert!(
            (baseline / (value / 3.0) - 1.0).abs() < 0.25,
            "spike {value} at {at} against baseline {baseline}"
        );
        assert!(row[spread].parse::<f64>().unwrap() > 0.0);
    }

    // JSON lists each anomaly with its baseline and spread too.
    let json: Value = app
        .get(&format!(
            "/v1/analytics/queries/{job_id}/results?format=json"
        ))
        .await
        .json()
        .await
        .unwrap();
    let anomalies = json["series"][0]["anomalies"].as_array().unwrap();
    for spike in spikes {
        let at = wfmd::time::rfc3339(spike);
        let listed = anomalies
            .iter()
            .find(|a| a["bucket"] == at.as_str())
            .unwrap_or_else(|| panic!("{at} not among {anomalies:?}"));
        assert!(listed["baseline"].is_number() && listed["spread"].is_number());
    }
    app.stop().await;
}
