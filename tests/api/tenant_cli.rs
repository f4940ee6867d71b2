//! The command line with several tenants: each tenant's audit chain keyed and verified
//! on its own, and the commands that act on one tenant (its platform, its database, the
//! daemon's routes for it) acting on the one `--tenant` names.

use std::path::{Path, PathBuf};
use wfmd::on;

use serde_json::json;
use wfmd::config::tenants::tenant_database_url;
use wfmd::store::Store;

use crate::helpers::{TestDb, TestSim, eventually, http_client, wfmd};
use crate::receiver::{Mode, Receiver, SECRET};
use crate::tenants::{Served, change_for, two_sims, two_tenants, two_tenants_file};

/// `audit.key` of the deployment; each tenant's chain is keyed with a key derived from it.
const KEY: &str = "0123456789abcdef0123456789abcdef-tenants";

/// `wfmd --config file ARGS` with `env`: its exit code, stdout and stderr.
async fn cli(file: &Path, env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let mut command = wfmd();
    command.envs(env.iter().cloned()).arg("--config").arg(file);
    command.args(args);
    tokio::task::spawn_blocking(move || {
        let output = command.output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The two-tenant configuration file with `audit.key` set, and its environment.
fn keyed_two_tenants(
    db: &TestDb,
    alpha: &TestSim,
    beta: &TestSim,
) -> (PathBuf, Vec<(String, String)>) {
    let (file, mut env) = two_tenants_file(db, alpha, beta, "");
    env.push(("WFMD_AUDIT__KEY".into(), KEY.into()));
    (file, env)
}

/// One state change on each tenant's platform, through the CLI.
async fn change_each(file: &Path, env: &[(String, String)], tenants: [(&str, &TestSim); 2]) {
    for (id, sim) in tenants {
        let (agent, target) = change_for(sim);
        let (code, stdout, stderr) =
            cli(file, env, &["transition", &agent, target, "--tenant", id]).await;
        assert_eq!(code, 0, "{id}: {stdout}{stderr}");
    }
}

/// The database file of tenant `id`.
fn database_of(db: &TestDb, id: &str) -> PathBuf {
    let url = tenant_database_url(&db.url(), &id.parse().unwrap());
    PathBuf::from(url.strip_prefix("sqlite://").unwrap())
}

/// Every audit row of tenant `id`'s database, as stored.
async fn audit_rows(db: &TestDb, id: &str) -> Vec<(i64, String, String)> {
    let url = tenant_database_url(&db.url(), &id.parse().unwrap());
    let store = Store::open(&url).await.unwrap();
    let rows = on!(store.reader(), |c| sqlx::query_as(
        "SELECT seq, detail, hash FROM audit_log ORDER BY seq"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    store.close().await;
    rows
}

#[tokio::test]
async fn audit_verify_checks_every_tenants_chain_and_finds_a_forged_entry_in_one_only() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let (file, env) = keyed_two_tenants(&db, &alpha, &beta);
    change_each(&file, &env, [("alpha", &alpha), ("beta", &beta)]).await;

    let (code, stdout, stderr) = cli(&file, &env, &["audit", "verify"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "alpha: ok, 2 entries verified from the first entry, keyed from entry 1",
            "beta: ok, 2 entries verified from the first entry, keyed from entry 1",
        ],
        "{stdout}"
    );

    // Someone with beta's file rewrites the payload of its transition entry.
    let alpha_before = audit_rows(&db, "alpha").await;
    let beta_url = tenant_database_url(&db.url(), &"beta".parse().unwrap());
    let store = Store::open(&beta_url).await.unwrap();
    let mut tx = store.begin_write().await.unwrap();
    on!(tx, |c| sqlx::query("DROP TRIGGER audit_log_refuses_update")
        .execute(c)
        .await
        .map(wfmd::store::Done::from))
    .unwrap();
    on!(tx, |c| sqlx::query(
        "UPDATE audit_log SET detail = '{\"forged\":true}' WHERE seq = 2"
    )
    .execute(c)
    .await
    .map(wfmd::store::Done::from))
    .unwrap();
    tx.commit().await.unwrap();
    store.close().await;

    let (code, stdout, stderr) = cli(&file, &env, &["audit", "verify"]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line per tenant: {stdout}");
    assert_eq!(
        lines[0],
        "alpha: ok, 2 entries verified from the first entry, keyed from entry 1"
    );
    assert!(
        lines[1].starts_with("beta: BROKEN: audit entry 2 does not match its hash"),
        "{stdout}"
    );
    assert_eq!(
        audit_rows(&db, "alpha").await,
        alpha_before,
        "alpha's chain is untouched"
    );

    // Named, each tenant's chain is verified alone, as with one tenant.
    let (code, stdout, _) = cli(&file, &env, &["audit", "verify", "--tenant", "alpha"]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with("audit log intact: 2 entries"),
        "{stdout}"
    );
    let (code, stdout, _) = cli(&file, &env, &["audit", "verify", "--tenant", "beta"]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.starts_with("audit log BROKEN: audit entry 2"),
        "{stdout}"
    );
}

#[tokio::test]
async fn one_tenants_database_in_place_of_anothers_is_refused_by_restore_and_found_by_verify() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let (file, env) = keyed_two_tenants(&db, &alpha, &beta);
    change_each(&file, &env, [("alpha", &alpha), ("beta", &beta)]).await;

    let backup = db.dir.path().join("alpha-backup.db");
    let backup_arg = backup.to_str().unwrap();
    let (code, stdout, stderr) =
        cli(&file, &env, &["backup", backup_arg, "--tenant", "alpha"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");

    // Alpha's chain is keyed with alpha's key: it is no backup of beta's.
    let beta_before = audit_rows(&db, "beta").await;
    let (code, stdout, stderr) =
        cli(&file, &env, &["restore", backup_arg, "--tenant", "beta"]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("its audit chain does not verify"),
        "{stderr}"
    );
    assert!(
        stdout.contains("audit entries from 1 on are keyed with another key"),
        "the refusal says why: {stdout}"
    );
    assert_eq!(
        audit_rows(&db, "beta").await,
        beta_before,
        "beta's database stays"
    );

    // Copied over beta's file by hand, it is found at the next verification.
    let beta_file = database_of(&db, "beta");
    for suffix in ["-wal", "-shm"] {
        let mut side = beta_file.clone().into_os_string();
        side.push(suffix);
        let _ = std::fs::remove_file(side);
    }
    std::fs::copy(&backup, &beta_file).unwrap();
    let (code, stdout, stderr) = cli(&file, &env, &["audit", "verify"]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("alpha: ok, 2 entries"), "{stdout}");
    assert!(
        lines[1].starts_with("beta: BROKEN: audit entries from 1 on are keyed with another key"),
        "{stdout}"
    );
}

#[tokio::test]
async fn bulk_with_tenant_runs_on_that_tenants_platform_only() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let served = Served::start(&two_tenants(&db, &alpha, &beta, "")).await;
    let (file, env) = two_tenants_file(&db, &alpha, &beta, "");
    let (agent, target) = change_for(&beta);
    let server = served.address.clone();

    let (code, stdout, stderr) = cli(
        &file,
        &env,
        &["bulk", "--agents", &agent, target, "--server", &server],
    )
    .await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("--tenant (alpha, beta)"), "{stderr}");

    let (code, stdout, stderr) = cli(
        &file,
        &env,
        &[
            "bulk", "--tenant", "beta", "--agents", &agent, target, "--server", &server,
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("succeeded        1"), "{stdout}");
    assert_eq!((alpha.changes(), beta.changes()), (0, 1));
    assert_eq!(beta.sim.agent(&agent).unwrap().state, target);
    served.stop().await;
}

#[tokio::test]
async fn doctor_checks_the_named_tenants_platform_and_asks_which_with_several() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let (file, env) = two_tenants_file(&db, &alpha, &beta, "");
    let calls = |sim: &TestSim| sim.sim.stats().by_route.values().sum::<u64>();

    let (code, stdout, stderr) = cli(&file, &env, &["doctor"]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("--tenant (alpha, beta)"), "{stderr}");
    assert_eq!(calls(&alpha) + calls(&beta), 0);

    let (code, stdout, stderr) = cli(&file, &env, &["doctor", "--tenant", "beta"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("tenant           beta\n"), "{stdout}");
    assert!(stdout.contains("agents           30 in "), "{stdout}");
    assert!(calls(&beta) > 0, "beta's platform was asked");
    assert_eq!(calls(&alpha), 0, "alpha's was not");
}

#[tokio::test]
async fn outbox_list_with_tenant_lists_that_tenants_deliveries_only() {
    let (alpha, beta) = two_sims().await;
    let receiver = Receiver::start().await;
    receiver.set_mode(Mode::Fail(500));
    let db = TestDb::new();
    let webhook = format!(
        "[[webhooks]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        receiver.url()
    );
    let served = Served::start(&two_tenants(&db, &alpha, &beta, &webhook)).await;
    let http = http_client();
    for (id, sim) in [("alpha", &alpha), ("beta", &beta)] {
        let (agent, target) = change_for(sim);
        let response = http
            .post(format!(
                "{}/v1/tenants/{id}/agents/{agent}/transitions",
                served.address
            ))
            .json(&json!({"state": target}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{id}");
    }
    let event_of = async |id: &str| -> String {
        let store = served.store(id);
        eventually(&format!("{id}'s delivery is queued"), async || {
            on!(store.reader(), |c| sqlx::query_scalar(
                "SELECT e.id FROM webhook_deliveries d JOIN outbox_events e ON e.seq = d.event_seq",
            )
            .fetch_optional(c)
            .await)
            .unwrap()
            .ok_or_else(String::new)
        })
        .await
    };
    let (alpha_event, beta_event) = (event_of("alpha").await, event_of("beta").await);
    let (file, env) = two_tenants_file(&db, &alpha, &beta, &webhook);

    let (code, stdout, stderr) = cli(&file, &env, &["outbox", "list"]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("--tenant (alpha, beta)"), "{stderr}");

    let (code, stdout, stderr) = cli(&file, &env, &["outbox", "list", "--tenant", "alpha"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&alpha_event), "{stdout}");
    assert!(!stdout.contains(&beta_event), "{stdout}");
    served.stop().await;
}

#[tokio::test]
async fn migrate_without_tenant_migrates_every_tenants_database() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let (file, env) = two_tenants_file(&db, &alpha, &beta, "");
    let (code, stdout, stderr) = cli(&file, &env, &["migrate"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    for id in ["alpha", "beta"] {
        let url = tenant_database_url(&db.url(), &id.parse().unwrap());
        assert!(
            stdout.contains(&format!("{id}: applied ")) && stdout.contains(&url),
            "{stdout}"
        );
        assert!(database_of(&db, id).is_file(), "{id}'s database");
    }
}

#[tokio::test]
async fn schedules_import_through_the_daemon_goes_to_the_named_tenant() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let served = Served::start(&two_tenants(&db, &alpha, &beta, "")).await;
    let (file, env) = two_tenants_file(&db, &alpha, &beta, "");
    let csv = db.dir.path().join("schedules.csv");
    std::fs::write(
        &csv,
        crate::incontact::schedules_csv(&beta.sim, &["u_031", "u_032"]),
    )
    .unwrap();
    let csv = csv.to_str().unwrap();
    let server = served.address.clone();

    let (code, stdout, stderr) = cli(
        &file,
        &env,
        &[
            "schedules",
            "import",
            csv,
            "--tenant",
            "beta",
            "--server",
            &server,
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let shifts = "SELECT COUNT(*) FROM imported_shifts";
    assert!(crate::tenants::count(served.store("beta"), shifts).await > 0);
    assert_eq!(
        crate::tenants::count(served.store("alpha"), shifts).await,
        0
    );
    served.stop().await;
}
