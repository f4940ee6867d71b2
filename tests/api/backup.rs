//! `wfmd backup` during a burst of changes, `wfmd restore`, and the refusal to restore
//! over a running daemon's database.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wfmd::on;

use serde_json::{Value, json};
use wfmd::store::Store;

use crate::helpers::{
    Daemon, TestApp, TestDb, TestSim, eventually, http_client, output_of, wait_until,
    wait_until_every, wfmd,
};

const KEY: &str = "0123456789abcdef0123456789abcdef-backup";

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
    let wait_for = async |n: usize| {
        wait_until("the burst stalled", async || {
            committed.lock().unwrap().len() >= n
        })
        .await;
    };
    wait_for(40).await;
    // A backup while changes are committed. A quick one can fall between two commits on
    // a busy machine; then another is taken, until one ran while changes were committed.
    let backups = tempfile::tempdir().unwrap();
    let mut taken = 0;
    let (before, file) = eventually("no change was committed while a backup ran", async || {
        taken += 1;
        // Every change answered before the backup starts is committed, so must be in it.
        let before: Vec<String> = committed.lock().unwrap().clone();
        let file = backups.path().join(format!("backup-{taken}.db"));
        let (code, stdout, stderr) =
            output_of(wfmd_on(&app.db.url(), &["backup", file.to_str().unwrap()])).await;
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("backup written to"), "{stdout}");
        assert!(stdout.contains("audit head entry"), "{stdout}");
        if committed.lock().unwrap().len() > before.len() {
            Ok((before, file))
        } else {
            Err(format!("not while any of {taken} backups ran"))
        }
    })
    .await;
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
    let (code, stdout, stderr) =
        output_of(wfmd_on(&url, &["restore", file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");
    assert!(stdout.contains("audit log intact"), "{stdout}");

    let restored = Store::open(&url).await.unwrap();
    for id in &before {
        let (attempts, entries): (i64, i64) = on!(restored.reader(), |c| sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM transition_attempts WHERE id = $1),
                    (SELECT COUNT(*) FROM audit_log WHERE subject_id = $1)",
        )
        .bind(id)
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!((attempts, entries), (1, 1), "change {id} is in the backup");
    }
    // One snapshot: every change in it has its audit entry, and none is half there.
    let orphans: i64 = on!(restored.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM transition_attempts a
         WHERE NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.subject_id = a.id)",
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(orphans, 0);
    restored.close().await;
    let (code, stdout, _) = output_of(wfmd_on(&url, &["audit", "verify"])).await;
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
    let (code, stdout, stderr) =
        output_of(wfmd_on(&db.url(), &["backup", file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, stderr) =
        output_of(wfmd_on(&db.url(), &["backup", file.to_str().unwrap()])).await;
    assert_eq!(code, 2, "a backup never overwrites: {stderr}");

    let (code, stdout, stderr) =
        output_of(wfmd_on(&db.url(), &["restore", file.to_str().unwrap()])).await;
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
    let (code, _, stderr) = output_of({
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
        output_of(wfmd_on(&db.url(), &["restore", file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("the database it replaced is kept as"),
        "{stdout}"
    );
}

#[tokio::test]
async fn restore_refuses_a_backup_whose_append_only_triggers_were_dropped() {
    // A backup someone edited: the audit log's triggers dropped, so its rows could be
    // changed at will once restored.
    let tampered = TestDb::new();
    let store = Store::open(&tampered.url()).await.unwrap();
    let mut tx = store.begin_write().await.unwrap();
    for sql in [
        "DROP TRIGGER audit_log_refuses_update",
        "DROP TRIGGER audit_log_refuses_delete",
    ] {
        on!(tx, |c| sqlx::query(sql)
            .execute(c)
            .await
            .map(wfmd::store::Done::from))
        .unwrap();
    }
    tx.commit().await.unwrap();
    store.close().await;

    let target = TestDb::new();
    Store::open(&target.url()).await.unwrap().close().await;
    let before = std::fs::read(target.path()).unwrap();
    let (code, stdout, stderr) = output_of(wfmd_on(
        &target.url(),
        &["restore", tampered.path().to_str().unwrap()],
    ))
    .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    for named in [
        "refusing to restore",
        "trigger audit_log_refuses_update is missing",
        "trigger audit_log_refuses_delete is missing",
    ] {
        assert!(stderr.contains(named), "{named}: {stderr}");
    }
    assert_eq!(
        std::fs::read(target.path()).unwrap(),
        before,
        "the database is untouched"
    );
    let left: Vec<String> = std::fs::read_dir(target.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("restoring") || name.contains("replaced"))
        .collect();
    assert!(left.is_empty(), "nothing staged is left behind: {left:?}");
}

/// The temporaries a backup to `file` has left in its folder.
fn partials(file: &std::path::Path) -> Vec<std::path::PathBuf> {
    let prefix = format!(".{}.", file.file_name().unwrap().to_string_lossy());
    std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".wfmd-backup-partial")
        })
        .collect()
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Whether `path` is a whole database: SQLite's integrity check passes on every page,
/// and its audit chain verifies.
async fn is_whole_backup(path: &std::path::Path) -> bool {
    use sqlx::ConnectOptions;
    let Ok(mut conn) = sqlx_sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
    else {
        return false;
    };
    let integrity: Result<String, _> =
        on!(&mut conn, |c| sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(c)
            .await);
    drop(conn);
    if integrity.ok().as_deref() != Some("ok") {
        return false;
    }
    let (code, _, _) = output_of(wfmd_on(
        &format!("sqlite://{}", path.display()),
        &["audit", "verify"],
    ))
    .await;
    code == 0
}

#[tokio::test]
async fn a_backup_is_readable_by_its_owner_only() {
    let db = TestDb::new();
    Store::open(&db.url()).await.unwrap().close().await;
    assert_eq!(mode(&db.path()), 0o600, "the database, as created");
    let file = db.dir.path().join("backup.db");
    let (code, stdout, stderr) =
        output_of(wfmd_on(&db.url(), &["backup", file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(mode(&file), 0o600);
    assert!(partials(&file).is_empty(), "no temporary is left");
}

#[tokio::test]
async fn a_killed_backups_temporary_neither_blocks_the_next_nor_stays_while_a_live_one_is_kept() {
    let db = TestDb::new();
    Store::open(&db.url()).await.unwrap().close().await;
    let file = db.dir.path().join("backup.db");
    // Half a database, as `kill -9` leaves it; nobody holds it any more.
    let abandoned = db.dir.path().join(".backup.db.k1ll3d.wfmd-backup-partial");
    std::fs::write(&abandoned, &std::fs::read(db.path()).unwrap()[..1000]).unwrap();
    // One that a backup running right now still writes: it holds the file's lock.
    let live = db.dir.path().join(".backup.db.l1v3.wfmd-backup-partial");
    let held = std::fs::File::create(&live).unwrap();
    held.try_lock().unwrap();

    let (code, stdout, stderr) =
        output_of(wfmd_on(&db.url(), &["backup", file.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(is_whole_backup(&file).await);
    assert!(
        !abandoned.exists(),
        "the killed backup's temporary is removed"
    );
    assert!(live.exists(), "a running backup's temporary is left alone");
    drop(held);
}

#[tokio::test]
async fn kill_9_during_a_backup_leaves_no_file_or_a_whole_one_and_the_next_backup_works() {
    let db = TestDb::new();
    let store = Store::open(&db.url()).await.unwrap();
    // About 80 MB, so the copy takes long enough to be killed half-way.
    let mut tx = store.begin_write().await.unwrap();
    on!(tx, |c| sqlx::query(
        "INSERT INTO transition_attempts (id, agent_id, target_state, reason, origin, actor,
             outcome, error, latency_ms, requested_at, completed_at)
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         SELECT printf('att-%06d', i), 'u_001', 'READY', 'WORKING', 'api', 'api',
                'failed', hex(randomblob(2000)), 5, i, i FROM n",
    )
    .execute(c)
    .await
    .map(wfmd::store::Done::from))
    .unwrap();
    tx.commit().await.unwrap();
    store.close().await;

    let file = db.dir.path().join("backup.db");
    let mut child = wfmd_on(&db.url(), &["backup", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed as soon as its copy has begun (its temporary has bytes).
    wait_until_every(
        Duration::from_millis(1),
        "the copy never began",
        async || {
            let begun = partials(&file)
                .iter()
                .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
            assert!(
                begun || child.try_wait().unwrap().is_none(),
                "the backup ended before it could be killed"
            );
            begun
        },
    )
    .await;
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status}");

    if file.exists() {
        assert!(is_whole_backup(&file).await, "FILE exists only whole");
        std::fs::remove_file(&file).unwrap();
    }
    assert!(!partials(&file).is_empty(), "the kill left its temporary");
    let (code, stdout, stderr) =
        output_of(wfmd_on(&db.url(), &["backup", file.to_str().unwrap()])).await;
    assert_eq!(
        code, 0,
        "the temporary does not block the next: {stdout}{stderr}"
    );
    assert!(is_whole_backup(&file).await);
    assert!(partials(&file).is_empty(), "and is removed by it");
}
