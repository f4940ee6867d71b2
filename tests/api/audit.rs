//! `GET /v1/audit` and `GET /v1/audit/verify`: the audit log over HTTP.

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use wfmd::on;
use wfmd::store::audit::{self, NewEntry};

use crate::helpers::{TestApp, TestDb, TestSim, on_both_backends, output_of, wfmd};
use crate::reports::attachment;

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
    assert_eq!(
        response.headers()["content-disposition"],
        attachment("audit", &from, &to, "jsonl").as_str()
    );
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
    assert_eq!(verify["intact"], true, "{verify}");
    assert_eq!(verify["entries"], 3);
    assert_eq!(verify["first_break"], Value::Null);
    assert_eq!(verify["from_checkpoint"], Value::Null, "nothing was pruned");
    assert_eq!(verify["keyed_from"], Value::Null, "no audit.key");
    assert_eq!(verify["head"]["seq"], 3);
    assert_eq!(verify["head"]["hash"], entries[2]["hash"]);
    let mut tx = app.store.begin_write().await.unwrap();
    on!(tx, |c| sqlx::query("DROP TRIGGER audit_log_refuses_update")
        .execute(c)
        .await
        .map(wfmd::store::Done::from))
    .unwrap();
    on!(tx, |c| sqlx::query(
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"
    )
    .execute(c)
    .await
    .map(wfmd::store::Done::from))
    .unwrap();
    tx.commit().await.unwrap();
    let verify = app.get("/v1/audit/verify").await;
    assert_eq!(verify.status(), 200, "the check worked; the chain did not");
    let verify: Value = verify.json().await.unwrap();
    assert_eq!(verify["intact"], false);
    assert_eq!(verify["entries"], 1);
    assert_eq!(verify["first_break"], json!({"kind": "edited", "seq": 2}));
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

/// An audit key of the accepted length.
const KEY: &str = "0123456789abcdef0123456789abcdef-audit";

/// wfmd with `audit.key`, on the database `db`.
async fn spawn_keyed(db: TestDb) -> TestApp {
    TestApp::spawn_on_db(TestSim::default_tenant().await, db, |config| {
        config.audit.key = Some(KEY.into());
    })
    .await
}

/// The canonical form wfmd hashes, field order included.
#[derive(serde::Serialize)]
struct Canonical<'a> {
    seq: i64,
    at: i64,
    actor: &'a str,
    action: &'a str,
    agent_id: Option<&'a str>,
    subject_id: Option<&'a str>,
    detail: &'a str,
}

/// Appends a row as someone holding the file but not the key would: chained to the last
/// entry with a correct SHA-256. Returns its sequence number.
async fn forge_append(app: &TestApp) -> i64 {
    use sha2::Digest;
    let (seq, at, prev): (i64, i64, String) = on!(app.store.reader(), |c| sqlx::query_as(
        "SELECT seq, at, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    let entry = Canonical {
        seq: seq + 1,
        at: at + 1,
        actor: "mallory",
        action: "transition.succeeded",
        agent_id: Some("u_001"),
        subject_id: None,
        detail: "{}",
    };
    let mut hasher = sha2::Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(b"\n");
    hasher.update(serde_json::to_string(&entry).unwrap().as_bytes());
    let hash = hex::encode(hasher.finalize());
    let mut tx = app.store.begin_write().await.unwrap();
    on!(tx, |c| sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, agent_id, subject_id, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8)",
    )
    .bind(entry.seq)
    .bind(entry.at)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.agent_id)
    .bind(entry.detail)
    .bind(&prev)
    .bind(&hash)
    .execute(c)
    .await.map(wfmd::store::Done::from))
    .unwrap();
    tx.commit().await.unwrap();
    entry.seq
}

async fn change_some_agents(app: &TestApp, n: usize, state: &str) {
    for agent in app.sim.free_agents().iter().take(n) {
        let (status, body) = app.set_state(&agent.id, state).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Runs `wfmd ARGS` on the app's database, with `key` as WFMD_AUDIT__KEY when given.
async fn cli(app: &TestApp, key: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = wfmd();
    command.env("WFMD_DATABASE__URL", app.db.url()).args(args);
    if let Some(key) = key {
        command.env("WFMD_AUDIT__KEY", key);
    }
    output_of(command).await
}

/// [`cli`] that must succeed (its stderr shown when it does not); its stdout.
async fn cli_ok(app: &TestApp, key: Option<&str>, args: &[&str]) -> String {
    let (code, stdout, stderr) = cli(app, key, args).await;
    assert_eq!(code, 0, "wfmd {}: {stdout}{stderr}", args.join(" "));
    stdout
}

on_both_backends!(a_forged_append_with_a_correct_sha256_is_detected_with_the_audit_key);
async fn a_forged_append_with_a_correct_sha256_is_detected_with_the_audit_key(db: TestDb) {
    let keyed_db = TestDb::on(db.backend());
    // Without a key, a row chained with a correct SHA-256 is indistinguishable from
    // wfmd's own: the gap the key closes.
    let plain = TestApp::spawn_in(db).await;
    change_some_agents(&plain, 2, "NOT_READY").await;
    forge_append(&plain).await;
    let verify: Value = plain.get("/v1/audit/verify").await.json().await.unwrap();
    assert_eq!(verify["intact"], true, "{verify}");

    let app = spawn_keyed(keyed_db).await;
    change_some_agents(&app, 2, "NOT_READY").await;
    let verify: Value = app.get("/v1/audit/verify").await.json().await.unwrap();
    assert_eq!(verify["intact"], true, "{verify}");
    assert_eq!(
        verify["keyed_from"], 1,
        "the key applies from its marker entry"
    );
    let marker: (String, String) = on!(app.store.reader(), |c| sqlx::query_as(
        "SELECT action, detail FROM audit_log WHERE seq = 1"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(marker.0, "audit.keyed");
    assert!(
        !marker.1.contains(KEY),
        "the marker names a fingerprint only"
    );

    let forged = forge_append(&app).await;
    let verify: Value = app.get("/v1/audit/verify").await.json().await.unwrap();
    assert_eq!(verify["intact"], false, "{verify}");
    assert_eq!(
        verify["first_break"],
        json!({"kind": "edited", "seq": forged})
    );
    let (code, stdout, _) = cli(&app, Some(KEY), &["audit", "verify"]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&format!("audit entry {forged} does not match its hash")),
        "{stdout}"
    );
    // Without the key the keyed entries cannot be checked at all, which is said.
    let (code, stdout, _) = cli(&app, None, &["audit", "verify"]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("set audit.key"), "{stdout}");
}

on_both_backends!(a_database_keyed_later_keeps_verifying_its_unkeyed_entries);
async fn a_database_keyed_later_keeps_verifying_its_unkeyed_entries(db: TestDb) {
    let plain = TestApp::spawn_in(db).await;
    change_some_agents(&plain, 2, "NOT_READY").await;
    let url = plain.db.url();
    cli_ok(&plain, Some(KEY), &["audit", "checkpoint"]).await;
    // The key applies from the next entry written with it.
    let config = {
        let mut config = plain.sim.config(&url);
        config.audit.key = Some(KEY.into());
        config
    };
    let services = wfmd::Services::start(&config).await.unwrap();
    let mut tx = services.store.begin_write().await.unwrap();
    audit::append(
        &mut tx,
        &NewEntry {
            at: Utc::now(),
            actor: "test",
            action: "transition.succeeded",
            agent_id: Some("u_001"),
            subject_id: None,
            detail: json!({}),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let stdout = cli_ok(&plain, Some(KEY), &["audit", "verify"]).await;
    assert!(stdout.contains("4 entries verified"), "{stdout}");
    assert!(stdout.contains("keyed from entry 3"), "{stdout}");
    // The unkeyed daemon can no longer write to the keyed log, and says why.
    let (status, body) = plain
        .set_state(&plain.sim.free_agents()[3].id, "NOT_READY")
        .await;
    assert_eq!(status, 500, "{body}");
    services.store.close().await;
}

on_both_backends!(verify_starts_from_the_checkpoint_retention_pruned_to_and_anchors_are_checked);
async fn verify_starts_from_the_checkpoint_retention_pruned_to_and_anchors_are_checked(db: TestDb) {
    let app = spawn_keyed(db).await;
    change_some_agents(&app, 3, "NOT_READY").await;
    let first = cli_ok(&app, Some(KEY), &["audit", "checkpoint"]).await;
    let first: Value = serde_json::from_str(&first).unwrap();
    change_some_agents(&app, 2, "READY").await;
    let second = cli_ok(&app, Some(KEY), &["audit", "checkpoint"]).await;
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["entry_id"], 6, "marker, 3 and 2 changes: {second}");
    assert_eq!(second["count"], 6);
    let events = app
        .count("SELECT COUNT(*) FROM outbox_events WHERE event_type = 'audit.checkpoint'")
        .await;
    assert_eq!(events, 2, "each checkpoint is published as a webhook event");

    // A year and a half on, every entry is past retention.audit (400 days); pruning
    // stops at the newest published checkpoint.
    let config = wfmd::config::Config::default();
    let retention = wfmd::engine::retention::Retention::new(
        app.store.clone(),
        &config.retention,
        &config.audit,
    );
    let later = Utc::now() + Duration::days(500);
    let report = retention
        .prune(later, &tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.removed(wfmd::store::retention::Kind::Audit), 6);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_log").await, 0);
    // New entries continue the chain from the checkpoint.
    let again = &app.sim.free_agents()[5];
    let (status, body) = app.set_state(&again.id, "NOT_READY").await;
    assert_eq!(status, 200, "{body}");

    let stdout = cli_ok(&app, Some(KEY), &["audit", "verify"]).await;
    assert!(
        stdout.contains("1 entries verified from the checkpoint of entry 6"),
        "{stdout}"
    );
    assert!(stdout.contains("signature checked"), "{stdout}");
    // The checkpoint verification starts from is still provable…
    let hash = |v: &Value| v["hash"].as_str().unwrap().to_owned();
    cli_ok(
        &app,
        Some(KEY),
        &["audit", "verify", "--anchor", &hash(&second)],
    )
    .await;
    // …the older one was pruned away…
    let (code, _, stderr) = cli(
        &app,
        Some(KEY),
        &["audit", "verify", "--anchor", &hash(&first)],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains("retention pruned"), "{stderr}");
    // …an unknown hash is refused…
    let unknown = "ab".repeat(32);
    let (code, _, stderr) = cli(&app, Some(KEY), &["audit", "verify", "--anchor", &unknown]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no kept entry or recorded checkpoint"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(&app, Some(KEY), &["audit", "verify", "--anchor", "abc"]).await;
    assert_eq!(code, 2, "{stderr}");
    // …and a kept entry's hash is proved.
    let third = cli_ok(&app, Some(KEY), &["audit", "checkpoint"]).await;
    let third: Value = serde_json::from_str(&third).unwrap();
    assert_eq!(third["entry_id"], 7);
    let stdout = cli_ok(
        &app,
        Some(KEY),
        &["audit", "verify", "--anchor", &hash(&third)],
    )
    .await;
    assert!(stdout.contains("the log still contains it"), "{stdout}");

    // The export of the pruned window says what is no longer kept.
    let response = export(
        &app,
        &instant(Utc::now() - Duration::hours(1)),
        &instant(Utc::now() + Duration::hours(1)),
    )
    .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("audit entries are not kept before"),
        "{problem}"
    );
}
