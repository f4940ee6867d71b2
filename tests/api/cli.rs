//! The `wfmd` binary: exit codes, result lines, configuration errors, audit verify.

use std::io::Write;
use wfmd::on;

use serde_json::{Value, json};

use crate::helpers::{Daemon, TestApp, TestDb, TestSim, http_client, wfmd};

fn run(command: &mut std::process::Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn transition_prints_one_result_line_and_exits_by_outcome() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::new();
    let env = sim.env(&db.url());
    let free = sim.free_agents().remove(0);

    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let (env, id) = (env.clone(), free.id.clone());
        move || {
            run(wfmd()
                .envs(env)
                .args(["transition", &id, "not_ready", "--reason", "TRAINING"]))
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains(&format!("{}: ", free.id)), "{stdout}");
    assert!(stdout.contains("NOT_READY (TRAINING)"), "{stdout}");
    assert_eq!(sim.sim.agent(&free.id).unwrap().reason, "TRAINING");

    let off = sim.off_shift_agent();
    let (code, stdout, _) = tokio::task::spawn_blocking({
        let (env, id) = (env.clone(), off.id.clone());
        move || run(wfmd().envs(env).args(["transition", &id, "READY"]))
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("AGENT_NOT_SCHEDULED"), "{stdout}");

    let (code, _, stderr) = tokio::task::spawn_blocking({
        let env = env.clone();
        move || run(wfmd().envs(env).args(["transition", "u_001", "ON_CONTACT"]))
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "observed-only state is bad usage: {stderr}");
    assert!(stderr.contains("observed only"), "{stderr}");

    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || run(wfmd().envs(env).args(["audit", "verify"])))
            .await
            .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 entries verified"), "{stdout}");
}

#[test]
fn transition_simulate_changes_an_agent_of_the_built_in_simulator() {
    // A fresh folder: no config file, no credentials, no database yet.
    let folder = tempfile::tempdir().unwrap();
    let transition = |state: &str| {
        run(wfmd()
            .current_dir(folder.path())
            .args(["transition", "u_001", state, "--simulate"]))
    };
    // The seeded tenant of `serve --simulate`: u_001 is off shift.
    let (code, stdout, stderr) = transition("READY");
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("u_001: READY rejected: AGENT_NOT_SCHEDULED"),
        "{stdout}"
    );
    let (code, stdout, stderr) = transition("LOGGED_OUT");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("u_001: ") && stdout.contains("-> LOGGED_OUT"),
        "{stdout}"
    );

    let (code, stdout, stderr) = run(wfmd().current_dir(folder.path()).args(["audit", "verify"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 entries verified"), "{stdout}");
}

#[test]
fn doctor_simulate_checks_the_built_in_simulator_in_either_dialect() {
    let folder = tempfile::tempdir().unwrap();
    let doctor = |more: &[&str]| {
        run(wfmd()
            .current_dir(folder.path())
            .args(["doctor", "--simulate"])
            .args(more))
    };
    let (code, stdout, stderr) = doctor(&[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("dialect          v2"), "{stdout}");
    assert!(
        stdout.contains("agents           50 in 5 teams"),
        "{stdout}"
    );
    assert!(
        stdout.contains("wfmd can work with this tenant"),
        "{stdout}"
    );

    let (code, stdout, stderr) = doctor(&["--dialect", "incontact", "--agents", "20"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("dialect          incontact"), "{stdout}");
    assert!(stdout.contains("API host"), "{stdout}");
    assert!(stdout.contains("agents           20 in "), "{stdout}");
}

#[test]
fn a_bad_config_key_exits_2_naming_the_key() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "[cxone]\nrequests_per_minute = 0\n").unwrap();
    let (code, _, stderr) =
        run(wfmd()
            .arg("--config")
            .arg(file.path())
            .args(["config", "check", "--simulate"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cxone.requests_per_minute must be between 1 and 6000, got 0"),
        "{stderr}"
    );

    let (code, _, stderr) =
        run(wfmd()
            .env("WFMD_RETRY__MAX_RETRIS", "2")
            .args(["config", "check", "--simulate"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("max_retris"), "{stderr}");
}

#[test]
fn config_check_refuses_a_config_serve_refuses_with_the_same_message() {
    let folder = tempfile::tempdir().unwrap();
    // The application's keys, but not the API user's access key incontact needs.
    let env = [
        ("WFMD_CXONE__DIALECT", "incontact"),
        ("WFMD_CXONE__CLIENT_ID", "app"),
        ("WFMD_CXONE__CLIENT_SECRET", "app-secret"),
    ];
    let with = |args: &[&str]| run(wfmd().current_dir(folder.path()).envs(env).args(args));

    let (code, stdout, checked) = with(&["config", "check"]);
    assert_eq!(code, 2, "{stdout}{checked}");
    assert!(
        checked.contains("cxone.access_key_id must be set"),
        "{checked}"
    );
    assert!(
        checked.contains("cxone.access_key_secret must be set"),
        "{checked}"
    );
    let (code, _, served) = with(&["serve"]);
    assert_eq!(code, 2, "{served}");
    assert_eq!(checked, served);

    let (code, _, stderr) = with(&["config", "check", "--simulate"]);
    assert_eq!(
        code, 0,
        "the simulator brings its own credentials: {stderr}"
    );
}

#[test]
fn config_check_masks_the_client_secret() {
    let (code, stdout, stderr) = run(wfmd()
        .env("WFMD_CXONE__CLIENT_SECRET", "s3cr3t-value")
        .args(["config", "check", "--simulate"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("client_secret = \"********\""), "{stdout}");
    assert!(!stdout.contains("s3cr3t-value") && !stderr.contains("s3cr3t-value"));
}

#[tokio::test]
async fn audit_verify_exits_1_naming_the_entry_edited_out_of_band() {
    let app = TestApp::spawn().await;
    for agent in app.sim.free_agents().iter().take(3) {
        assert_eq!(app.set_state(&agent.id, "NOT_READY").await.0, 200);
    }
    let url = app.db.url();
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

    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(wfmd()
            .env("WFMD_DATABASE__URL", url)
            .args(["audit", "verify"]))
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("audit entry 2"), "{stdout}");
}

#[test]
fn migrate_applies_the_schema_once() {
    let db = TestDb::new();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    let (code, stdout, stderr) = run(wfmd().env("WFMD_DATABASE__URL", db.url()).arg("migrate"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("applied {migrations} migration(s)")),
        "{stdout}"
    );
    let (code, stdout, _) = run(wfmd().env("WFMD_DATABASE__URL", db.url()).arg("migrate"));
    assert_eq!(code, 0);
    assert!(stdout.starts_with("applied 0 migration(s)"), "{stdout}");
}

#[test]
fn migrate_on_postgres_prints_no_notice() {
    let db = TestDb::postgres();
    // In a schema of its own as well: from the second run on, both its `CREATE SCHEMA IF
    // NOT EXISTS` and sqlx's `CREATE TABLE IF NOT EXISTS _sqlx_migrations` draw a NOTICE.
    let url = format!("{}?options[search_path]=tenant_a", db.url());
    for _ in 0..2 {
        let (code, stdout, stderr) = run(wfmd()
            .env_remove("RUST_LOG")
            .env("WFMD_LOG__LEVEL", "info")
            .env("WFMD_DATABASE__URL", &url)
            .arg("migrate"));
        assert_eq!(code, 0, "{stdout}{stderr}");
        let printed = format!("{stdout}{stderr}");
        assert!(printed.contains("migration(s)"), "{printed}");
        assert!(
            !printed.to_lowercase().contains("notice") && !printed.contains("already exists"),
            "{printed}"
        );
    }
}

#[test]
fn help_explains_every_command() {
    let (code, stdout, _) = run(wfmd().arg("--help"));
    assert_eq!(code, 0);
    for command in [
        "serve",
        "transition",
        "audit",
        "config",
        "migrate",
        "sim",
        "rules",
    ] {
        assert!(
            stdout.contains(command),
            "{command} missing from:\n{stdout}"
        );
    }
    let (code, _, stderr) = run(wfmd().arg("frobnicate"));
    assert_eq!(code, 2, "{stderr}");
}

#[tokio::test]
async fn serve_simulate_runs_with_no_configuration_at_all() {
    // A fresh folder: no config file, no credentials, no database yet.
    let folder = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn_with(&["serve", "--simulate"], &[], Some(folder.path())).await;
    let http = http_client();
    let ready = http
        .get(format!("{}/readyz", daemon.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // The seeded tenant: u_001 is off shift (agents now act on their own, so an on-shift
    // one might be on a call).
    let post = |agent: &str, state: &str| {
        http.post(format!("{}/v1/agents/{agent}/transitions", daemon.address))
            .json(&json!({ "state": state }))
            .send()
    };
    let refused: Value = post("u_001", "READY").await.unwrap().json().await.unwrap();
    assert_eq!(refused["violation"], "AGENT_NOT_SCHEDULED");
    let done = post("u_001", "LOGGED_OUT").await.unwrap();
    assert_eq!(done.status(), 200);

    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
    assert!(
        folder.path().join("data/wfmd.db").exists(),
        "the embedded database"
    );
}
