//! `GET /v1/audit` and `GET /v1/audit/verify`: the audit log over HTTP.

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use wfmd::store::audit::{self, NewEntry};

use crate::helpers::{TestApp, wfmd};

fn instant(at: chrono::DateTime<Utc>) -> String {
    wfmd::time::rfc3339(at)
}

async fn export(app: &TestApp, from: &str, to: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/v1/audit", app.address))
        .query(&[("from", from), ("to", to)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_audit_window_exports_as_the_cli_does_and_verify_finds_an_edit() {
    let app = TestApp::spawn().await;
    for agent in app.sim.free_agents().iter().take(3) {
        let (status, body) = app.set_state(&agent.id, "NOT_READY").await;
        assert_eq!(status, 200, "{body}");
    }
    let from = instant(Utc::now() - Duration::hours(1));
    let to = instant(Utc::now() + Duration::hours(1));

    let response = export(&app, &from, &to).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let entries: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(entries.len(), 3, "{text}");
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["seq"], i as i64 + 1);
        assert_eq!(entry["actor"], "local");
        assert_eq!(entry["action"], "transition.succeeded");
        assert!(entry["detail"].is_object(), "{entry}");
        if i > 0 {
            assert_eq!(entry["prev_hash"], entries[i - 1]["hash"]);
        }
    }

    let url = app.db.url();
    let cli = tokio::task::spawn_blocking(move || {
        wfmd()
            .env("WFMD_DATABASE__URL", url)
            .args(["audit", "export", "--from", &from, "--to", &to])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(cli.status.success());
    assert_eq!(String::from_utf8(cli.stdout).unwrap(), text, "same lines");

    let later = export(
        &app,
        &instant(Utc::now() + Duration::hours(1)),
        &instant(Utc::now() + Duration::hours(2)),
    )
    .await;
    assert_eq!(later.status(), 200);
    assert_eq!(later.text().await.unwrap(), "");
    let backwards = export(&app, "2026-11-20", "2026-11-19").await;
    assert_eq!(backwards.status(), 400);
    let problem: Value = backwards.json().await.unwrap();
    assert_eq!(problem["parameter"], "to");

    let verify: Value = app.get("/v1/audit/verify").await.json().await.unwrap();
    assert_eq!(
        verify,
        json!({"intact": true, "entries": 3, "first_break": null})
    );
    let mut tx = app.store.begin_write().await.unwrap();
    sqlx::query("DROP TRIGGER audit_log_refuses_update")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let verify = app.get("/v1/audit/verify").await;
    assert_eq!(verify.status(), 200, "the check worked; the chain did not");
    let verify: Value = verify.json().await.unwrap();
    assert_eq!(
        verify,
        json!({"intact": false, "entries": 1, "first_break": {"kind": "edited", "seq": 2}})
    );
}

#[tokio::test]
async fn a_large_audit_window_streams_every_entry() {
    let app = TestApp::spawn().await;
    let count = 20_000;
    let start = Utc::now() - Duration::minutes(30);
    let subjects: Vec<String> = (0..count).map(|i| format!("attempt-{i}")).collect();
    let entries: Vec<NewEntry<'_>> = subjects
        .iter()
        .enumerate()
        .map(|(i, subject)| NewEntry {
            at: start + Duration::milliseconds(i as i64),
            actor: "bulk-loader",
            action: "transition.succeeded",
            agent_id: Some("u_001"),
            subject_id: Some(subject),
            detail: json!({"to": "READY", "n": i}),
        })
        .collect();
    let mut tx = app.store.begin_write().await.unwrap();
    audit::append_all(&mut tx, &entries).await.unwrap();
    tx.commit().await.unwrap();

    let response = export(&app, &instant(start), &instant(start + Duration::hours(1))).await;
    assert_eq!(response.status(), 200);
    assert!(
        !response.headers().contains_key("content-length"),
        "streamed, not assembled first"
    );
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), count);
    let last: Value = serde_json::from_str(lines[count - 1]).unwrap();
    assert_eq!(last["seq"], count as i64);
    assert_eq!(last["subject_id"], format!("attempt-{}", count - 1));
}
