//! Downloads never hold up the engine: stalled report downloads, the per-caller limit.

use std::time::Duration;
use wfmd::on;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::entry;
use crate::helpers::{TestApp, TestSim};

/// Transition attempts in the report window: their JSON (about 300 bytes each) is far
/// more than the socket buffers of a client that reads nothing.
const ATTEMPTS: i64 = 15_000;

/// wfmd with a viewer `wall`, a viewer `board` and a supervisor `desk`, and
/// [`ATTEMPTS`] attempts from the last minutes in the store.
async fn app_with_attempts() -> TestApp {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.api_tokens = vec![
            entry("wall", "wfmd_wall", "viewer"),
            entry("board", "wfmd_board", "viewer"),
            entry("desk", "wfmd_desk", "supervisor"),
        ];
        config.exports.per_caller = 2;
    })
    .await;
    let since = Utc::now().timestamp_millis() - 600_000;
    let mut tx = app.store.begin_write().await.unwrap();
    on!(tx, |c| sqlx::query(
        "INSERT INTO transition_attempts (id, agent_id, target_state, reason, origin, actor,
             outcome, latency_ms, requested_at, completed_at)
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         SELECT printf('att-%06d', i), printf('u_%03d', i % 50), 'NOT_READY', 'BREAK',
                'bulk', 'test', 'succeeded', 100, $2 + i, $2 + i + 100 FROM n",
    )
    .bind(ATTEMPTS)
    .bind(since)
    .execute(c)
    .await
    .map(wfmd::store::Done::from))
    .unwrap();
    tx.commit().await.unwrap();
    app
}

fn report_query() -> String {
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let now = Utc::now();
    format!(
        "format=json&from={}&to={}",
        at(now - chrono::Duration::hours(1)),
        at(now + chrono::Duration::hours(1))
    )
    .replace('+', "%2B")
}

/// A client that sends `GET path` as `token` and then reads nothing but the status
/// line, with a receive buffer as small as the system allows; returns the status and
/// the connection, kept open by the caller.
async fn stalled_download(app: &TestApp, path: &str, token: &str) -> (u16, TcpStream) {
    let address = app.address.trim_start_matches("http://");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stream = socket.connect(address.parse().unwrap()).await.unwrap();
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("the download answers")
            .unwrap();
        assert_eq!(read, 1, "the server closed the connection");
        head.push(byte[0]);
    }
    let line = String::from_utf8(head).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, stream)
}

#[tokio::test]
async fn stalled_report_downloads_neither_slow_a_supervisors_change_nor_lock_out_another_caller() {
    let app = app_with_attempts().await;
    let path = format!("/v1/reports/compliance?{}", report_query());
    // Four downloads that never read, from two viewers, and one more that is refused.
    let mut stalled = Vec::new();
    for token in [
        "wfmd_wall",
        "wfmd_wall",
        "wfmd_wall",
        "wfmd_board",
        "wfmd_board",
    ] {
        stalled.push(stalled_download(&app, &path, token).await);
    }
    let statuses: Vec<u16> = stalled.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses,
        [200, 200, 429, 200, 200],
        "two downloads per caller (exports.per_caller), then a clean refusal"
    );

    let free = app.sim.free_agents().remove(0);
    let target = if free.state == "PAUSED" {
        "IDLE"
    } else {
        "PAUSED"
    };
    let change = app
        .http
        .post(format!("{}/v1/agents/{}/transitions", app.address, free.id))
        .bearer_auth("wfmd_desk")
        .json(&json!({ "state": target }))
        .send();
    let response = tokio::time::timeout(Duration::from_secs(10), change)
        .await
        .expect("the supervisor's change does not wait for the stalled downloads")
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let report = app
        .http
        .get(format!("{}{path}", app.address))
        .bearer_auth("wfmd_desk")
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200, "another caller's download goes ahead");
    let report: Value = report.json().await.unwrap();
    assert_eq!(
        report["attempts"].as_array().unwrap().len() as i64,
        ATTEMPTS + 1,
        "whole: every stored attempt and the change just made"
    );

    let refused = app
        .http
        .get(format!("{}{path}", app.address))
        .bearer_auth("wfmd_wall")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["limit"], 2, "{problem}");
    drop(stalled);
}

#[tokio::test]
async fn a_caller_gets_its_slot_back_once_a_download_is_read_to_its_end_or_abandoned() {
    let app = app_with_attempts().await;
    let path = format!("/v1/reports/compliance?{}", report_query());
    let (status, abandoned) = stalled_download(&app, &path, "wfmd_wall").await;
    assert_eq!(status, 200);
    let get = || {
        app.http
            .get(format!("{}{path}", app.address))
            .bearer_auth("wfmd_wall")
            .send()
    };
    let read = get().await.unwrap();
    assert_eq!(read.status(), 200);
    read.bytes().await.unwrap();
    drop(abandoned);
    // Both slots come back: the body read to its end, and the one whose client left.
    let mut kept = Vec::new();
    crate::helpers::eventually(
        "the abandoned download's slot never came back",
        async || {
            let response = get().await.unwrap();
            if response.status() == 200 {
                kept.push(response);
            } else {
                assert_eq!(response.status(), 429);
            }
            if kept.len() < 2 {
                Err(format!("{} of 2 slots", kept.len()))
            } else {
                Ok(())
            }
        },
    )
    .await;
}
