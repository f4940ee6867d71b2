//! The compliance report over HTTP and from the CLI, after real transitions.

use chrono::{Duration, SecondsFormat, Utc};
use serde_json::Value;

use crate::helpers::{Dialect, TestApp, on_both_dialects, wfmd};

fn instant(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One accepted change and one rejected (off shift) change; returns their agents.
async fn two_transitions(app: &TestApp) -> (String, String) {
    let free = app.sim.free_agents().remove(0);
    let target = if free.state == "PAUSED" {
        "IDLE"
    } else {
        "PAUSED"
    };
    let (status, body) = app.set_state(&free.id, target).await;
    assert_eq!(status, 200, "{body}");
    let off = app.sim.off_shift_agent();
    let (status, body) = app.set_state(&off.id, "READY").await;
    assert_eq!(status, 409, "{body}");
    (free.id, off.id)
}

async fn fetch(app: &TestApp, params: &[(&str, &str)]) -> reqwest::Response {
    app.http
        .get(format!("{}/v1/reports/compliance", app.address))
        .query(params)
        .send()
        .await
        .unwrap()
}

on_both_dialects!(the_report_counts_real_transitions_in_all_three_formats);
async fn the_report_counts_real_transitions_in_all_three_formats(dialect: Dialect) {
    let app = TestApp::spawn_on(dialect).await;
    let (accepted, rejected) = two_transitions(&app).await;
    let from = instant(Utc::now() - Duration::hours(1));
    let to = instant(Utc::now() + Duration::hours(1));

    let response = fetch(&app, &[("from", &from), ("to", &to)]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let field = |agent: &str, name: &str| {
        let row = rows.iter().find(|r| &r[0] == agent).unwrap();
        row[headers.iter().position(|h| h == name).unwrap()].to_owned()
    };
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(field(&accepted, "transitions"), "1");
    assert_eq!(field(&accepted, "succeeded"), "1");
    assert_eq!(field(&accepted, "rejections"), "0");
    assert_eq!(field(&rejected, "rejections"), "1");
    assert_eq!(field(&rejected, "rejections_agent_not_scheduled"), "1");
    assert_eq!(field(&rejected, "violation_frequency"), "1");
    assert!(!field(&rejected, "latency_p95_ms").is_empty());
    assert_eq!(field(&accepted, "adherence_pct"), "");

    let response = fetch(&app, &[("from", &from), ("to", &to), ("format", "json")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["agents"].as_array().unwrap().len(), 2);
    let attempts = json["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .iter()
            .any(|a| a["agent_id"] == rejected.as_str() && a["violation"] == "AGENT_NOT_SCHEDULED")
    );

    let response = fetch(
        &app,
        &[
            ("from", &from),
            ("to", &to),
            ("format", "html"),
            ("tz", "Europe/Berlin"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("<svg"));
    assert_eq!(html.matches("<g class=\"agent\">").count(), 2);
    assert!(html.contains(&accepted));
    assert!(
        html.contains("+01:00") || html.contains("+02:00"),
        "times in Berlin time"
    );
}

#[tokio::test]
async fn bad_parameters_are_400_problems_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("from", "yesterday")], "from"),
        (&[("from", "2026-11-20"), ("to", "2026-11-19")], "to"),
        (&[("from", "2025-01-01"), ("to", "2026-11-19")], "to"),
        (&[("format", "xml")], "format"),
        (&[("tz", "Mars/Olympus")], "tz"),
    ];
    for (params, parameter) in cases {
        let response = fetch(&app, params).await;
        assert_eq!(response.status(), 400, "{params:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["parameter"], parameter, "{problem}");
    }
}

#[tokio::test]
async fn the_cli_writes_the_report_to_the_out_file() {
    let app = TestApp::spawn().await;
    let (accepted, _) = two_transitions(&app).await;
    let env = app.sim.env(&app.db.url());
    let dir = tempfile::tempdir().unwrap();
    let from = instant(Utc::now() - Duration::hours(1));
    let to = instant(Utc::now() + Duration::hours(1));
    for format in ["csv", "json", "html"] {
        let path = dir.path().join(format!("report.{format}"));
        let output = tokio::task::spawn_blocking({
            let (env, from, to, path) = (env.clone(), from.clone(), to.clone(), path.clone());
            move || {
                wfmd()
                    .envs(env)
                    .args(["report", "compliance", "--from", &from, "--to", &to])
                    .args(["--format", format, "--out"])
                    .arg(&path)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert!(output.stdout.is_empty(), "the report goes to the file only");
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(content.contains(&accepted), "{format}: {content}");
        if format == "json" {
            let json: Value = serde_json::from_str(&content).unwrap();
            assert_eq!(json["attempts"].as_array().unwrap().len(), 2);
        }
    }

    let output = tokio::task::spawn_blocking(move || {
        wfmd()
            .envs(env)
            .args([
                "report",
                "compliance",
                "--from",
                "2026-11-20",
                "--to",
                "2026-11-21",
            ])
            .args(["--tz", "Mars/Olympus"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tz"), "{stderr}");
}
