//! `wfmd backup` during a burst of changes, `wfmd restore`, and the refusal to restore
//! over a running daemon's database.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wfmd::store::Store;

use crate::helpers::{DEADLINE, Daemon, TestApp, TestDb, TestSim, http_client, wfmd};

const KEY: &str = "0123456789abcdef0123456789abcdef-backup";

async fn run(command: std::process::Command) -> (i32, String, String) {
    let mut command = command;
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn wfmd_on(url: &str, args: &[&str]) -> std::process::Command {
    let mut command = wfmd();
    command
        .env("WFMD_DATABASE__URL", url)
        .env("WFMD_AUDIT__KEY", KEY)
        .args(args);
    command
}

#[tokio::test]
async fn a_backup_taken_mid_burst_restores_every_committed_change_with_a_verifying_chain() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.audit.key = Some(KEY.into());
    })
    .await;
    let agents: Vec<String> = app
        .sim
        .free_agents()
        .into_iter()
        .take(8)
        .map(|a| a.id)
        .collect();
    // The burst: each task flips its agent back and forth, noting each committed change.
    let committed: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for agent in agents {
        let (http, address) = (app.http.clone(), app.address.clone());
        let (committed, stop) = (committed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut state = "NOT_READY";
            while !stop.load(Ordering::Relaxed) {
                let response = http
                    .post(format!("{address}/v1/agents/{agent}/transitions"))
                    .json(&json!({ "state": state }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.unwrap();
                committed
                    .lock()
                    .unwrap()
                    .push(body["attempt_id"].as_str().unwrap().to_owned());
                state = if state == "READY" {
                    "NOT_READY"
                } else {
                    "READY"
                };
            }
        }));
    }
    let wait_for = |n: usize| {
        let committed = committed.clone();
        async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while committed.lock().unwrap().len() < n {
                assert!(tokio::time::Instant::now() < deadline, "the burst stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(40).await;
    // A backup while changes are committed. A quick one can fall between two commits on
    // a busy machine; then another is taken, until one ran while changes were committed.
    let backups = tempfile::tempdir().unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut taken = 0;
    let (before, file) = loop {
        taken += 1;
        // Every change answered before the backup starts is committed, so must be in it.
        let before: Vec<String> = committed.lock().unwrap().clone();
        let file = backups.path().join(format!("backup-{taken}.db"));
        let (code, stdout, stderr) =
            run(wfmd_on(&app.db.url(), &["backup", file.to_str().unwrap()])).await;
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("backup written to"), "{stdout}");
        assert!(stdout.contains("audit head entry"), "{stdout}");
        if committed.lock().unwrap().len() > before.len() {
            break (before, file);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no change was committed while any of {taken} backups ran"
        );
    };
    let during = committed.lock().unwrap().len();
    wait_for(during + 20).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    app.stop().await;

    // Restore it as the database of a fresh installation.
    let target = TestDb::new();
    let url = target.url();
    let (code, stdout, stderr) = run(wfmd_on(&url, &["restore", file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");
    assert!(stdout.contains("audit log intact"), "{stdout}");

    let restored = Store::open(&url).await.unwrap();
    for id in &before {
        let (attempts, entries): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM transition_attempts WHERE id = ?1),
                    (SELECT COUNT(*) FROM audit_log WHERE subject_id = ?1)",
        )
        .bind(id)
        .fetch_one(restored.reader())
        .await
        .unwrap();
        assert_eq!((attempts, entries), (1, 1), "change {id} is in the backup");
    }
    // One snapshot: every change in it has its audit entry, and none is half there.
    let orphans: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM transition_attempts a
         WHERE NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.subject_id = a.id)",
    )
    .fetch_one(restored.reader())
    .await
    .unwrap();
    assert_eq!(orphans, 0);
    restored.close().await;
    let (code, stdout, _) = run(wfmd_on(&url, &["audit", "verify"])).await;
    assert_eq!(code, 0, "{stdout}");
}

#[tokio::test]
async fn restore_is_refused_over_a_running_daemons_database() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::new();
    let daemon = Daemon::spawn(&sim.env(&db.url())).await;
    let agent = sim.free_agents().remove(0);
    let response = http_client()
        .post(format!(
            "{}/v1/agents/{}/transitions",
            daemon.address, agent.id
        ))
        .json(&json!({ "state": "NOT_READY" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let file = db.dir.path().join("copy.db");
    let (code, stdout, stderr) = run(wfmd_on(&db.url(), &["backup", file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, stderr) = run(wfmd_on(&db.url(), &["backup", file.to_str().unwrap()])).await;
    assert_eq!(code, 2, "a backup never overwrites: {stderr}");

    let (code, stdout, stderr) =
        run(wfmd_on(&db.url(), &["restore", file.to_str().unwrap()])).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot restore over a running daemon"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", daemon.child.id())),
        "{stderr}"
    );
    // A second daemon on the same database is refused the same way.
    let (code, _, stderr) = run({
        let mut command = wfmd();
        command.envs(sim.env(&db.url())).args(["serve"]);
        command.env("WFMD_SERVER__LISTEN", "127.0.0.1:0");
        command
    })
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot start"), "{stderr}");

    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
    let (code, stdout, stderr) =
        run(wfmd_on(&db.url(), &["restore", file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("the database it replaced is kept as"),
        "{stdout}"
    );
}
