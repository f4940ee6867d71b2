//! A tenant whose API user may not read schedules (no WFM permission): what a change
//! says, `[compliance] without_schedule = "allow"`, imports into a running daemon (over
//! the API and through `wfmd schedules import`), and what `wfmd doctor` says.

use serde_json::{Value, json};
use wfmd::config::Dialect;
use wfmd::domain::policy::WithoutSchedule;
use wfmd::on;
use wfmd::sim::SCHEDULES_SCOPE;

use crate::helpers::{Daemon, TestApp, TestDb, TestSim, count, on_both_dialects, wfmd};
use crate::incontact::schedules_csv;
use crate::schedule_imports::import_whole;

/// The default tenant on `dialect`, refusing schedule lookups.
async fn refusing_tenant(dialect: Dialect) -> TestSim {
    let sim = TestSim::default_tenant().await.on(dialect);
    sim.sim.deny_scope(SCHEDULES_SCOPE);
    sim
}

fn run(command: &mut std::process::Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The words that tell an operator both ways out.
const THE_FIX: [&str; 3] = [
    "the platform refuses schedule lookups for this API user",
    "import schedules with `wfmd schedules import FILE`",
    "or set `[compliance] without_schedule = \"allow\"`",
];

on_both_dialects!(
    a_change_on_a_tenant_refusing_schedule_lookups_fails_naming_the_fix,
    allowed_without_schedule_the_change_is_made_and_recorded_unchecked,
    an_import_into_the_running_daemon_answers_the_next_change_without_a_restart,
);

async fn a_change_on_a_tenant_refusing_schedule_lookups_fails_naming_the_fix(dialect: Dialect) {
    let app = TestApp::spawn_with(refusing_tenant(dialect).await, |_| {}).await;
    let agent = app.sim.free_agents().remove(0);

    let response = app
        .transition(&agent.id, json!({"state": "NOT_READY"}))
        .await;
    assert_eq!(response.status(), 502);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:wfmd:problem:schedule-lookup-refused",
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap();
    for words in THE_FIX {
        assert!(detail.contains(words), "{words:?} missing from: {detail}");
    }
    assert_eq!(problem["transition"]["kind"], "schedule_refused");
    assert_eq!(
        app.sim.changes(),
        0,
        "nothing unchecked reaches the platform"
    );
    let recorded: (String, String) = on!(app.store.reader(), |c| sqlx::query_as(
        "SELECT outcome, error FROM transition_attempts"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(recorded.0, "failed");
    assert!(recorded.1.contains(THE_FIX[1]), "{}", recorded.1);
}

async fn allowed_without_schedule_the_change_is_made_and_recorded_unchecked(dialect: Dialect) {
    let app = TestApp::spawn_with(refusing_tenant(dialect).await, |config| {
        config.compliance.without_schedule = WithoutSchedule::Allow;
    })
    .await;
    let agent = app.sim.free_agents().remove(0);

    let (status, body) = app.set_state(&agent.id, "NOT_READY").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "succeeded");
    assert_eq!(app.sim.changes(), 1);
    assert_eq!(app.sim.sim.agent(&agent.id).unwrap().state, "NOT_READY");

    let attempt: (Option<String>, Option<String>) = on!(app.store.reader(), |c| sqlx::query_as(
        "SELECT compliance_unchecked, schedule_source FROM transition_attempts WHERE id = $1",
    )
    .bind(body["attempt_id"].as_str().unwrap())
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(attempt, (Some("schedule".into()), None));
    let audited: (String, Option<String>) = on!(app.store.reader(), |c| sqlx::query_as(
        "SELECT json_extract(detail, '$.unchecked'), json_extract(detail, '$.scheduleSource')
         FROM audit_log WHERE action = 'transition.succeeded'",
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(audited, ("schedule".into(), None));
}

async fn an_import_into_the_running_daemon_answers_the_next_change_without_a_restart(
    dialect: Dialect,
) {
    let app = TestApp::spawn_with(refusing_tenant(dialect).await, |_| {}).await;
    let on_shift = app.sim.free_agents().remove(0);
    let off_shift = app.sim.off_shift_agent();
    let (status, _) = app.set_state(&on_shift.id, "NOT_READY").await;
    assert_eq!(status, 502, "refused before the import");

    let import = |body: String| {
        app.http
            .post(format!("{}/v1/schedules/imports", app.address))
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    // A file with a bad line stores nothing and names the line.
    let bad = format!(
        "{}{},2026-11-23 09:00,2026-11-23 08:00,,,,,Europe/London\n",
        schedules_csv(&app.sim.sim, &[&on_shift.id]),
        off_shift.id
    );
    let refused = import(bad).await.unwrap();
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:wfmd:problem:invalid-schedules");
    assert!(
        problem["problems"][0]
            .as_str()
            .unwrap()
            .contains("shift_end is not after shift_start"),
        "{problem}"
    );
    assert_eq!(
        count(&app.store, "SELECT COUNT(*) FROM imported_shifts").await,
        0
    );

    let csv = schedules_csv(&app.sim.sim, &[&on_shift.id, &off_shift.id]);
    let imported = import_whole(&app.address, csv).await;
    assert_eq!(imported["agents"], 2, "{imported}");

    // The next changes are checked against the file, with no restart.
    let (status, body) = app.set_state(&on_shift.id, "NOT_READY").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.set_state(&off_shift.id, "NOT_READY").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["violation"], "AGENT_NOT_SCHEDULED");
    assert_eq!(app.sim.changes(), 1);
    let actor: String = on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT actor FROM audit_log WHERE action = 'schedules.imported'"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(actor, "local");
}

#[tokio::test]
async fn schedules_import_goes_to_the_daemon_running_on_the_database() {
    let sim = refusing_tenant(Dialect::V2).await;
    let db = TestDb::new();
    let env = sim.env(&db.url());
    let daemon = Daemon::spawn(&env).await;
    let listen = daemon.address.trim_start_matches("http://").to_owned();
    let agent = sim.free_agents().remove(0);
    let http = crate::helpers::http_client();
    let change = || {
        http.post(format!(
            "{}/v1/agents/{}/transitions",
            daemon.address, agent.id
        ))
        .json(&json!({"state": "NOT_READY"}))
        .send()
    };
    assert_eq!(change().await.unwrap().status(), 502);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedules.csv");
    std::fs::write(&file, schedules_csv(&sim.sim, &[&agent.id])).unwrap();
    // The operator's configuration: the same database and server.listen, no --server.
    let mut cli_env = env.clone();
    cli_env.push(("WFMD_SERVER__LISTEN".into(), listen.clone()));
    let import = |file: std::path::PathBuf, env: Vec<(String, String)>| {
        tokio::task::spawn_blocking(move || {
            run(wfmd().envs(env).args(["schedules", "import"]).arg(file))
        })
    };
    let (code, stdout, stderr) = import(file.clone(), cli_env.clone()).await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("into the running wfmd at http://{listen}")),
        "{stdout}"
    );
    assert_eq!(change().await.unwrap().status(), 200, "in force at once");

    std::fs::write(
        &file,
        "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone\n\
         u_001,2026-11-23 09:00,2026-11-23 08:00,,,,,Europe/London\n",
    )
    .unwrap();
    let (code, _, stderr) = import(file, cli_env).await.unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("line 2: shift_end is not after shift_start"),
        "{stderr}"
    );
}

#[tokio::test]
async fn doctor_says_changes_will_be_refused_until_schedules_are_imported() {
    let sim = TestSim::start(wfmd::sim::SimConfig {
        agents: 10,
        ..wfmd::sim::SimConfig::default()
    })
    .await;
    let db = TestDb::new();
    let env = sim.env(&db.url());
    let doctor = |env: Vec<(String, String)>| {
        tokio::task::spawn_blocking(move || run(wfmd().envs(env).arg("doctor")))
    };
    let (code, stdout, stderr) = doctor(env.clone()).await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("WFM schedules    readable"), "{stdout}");
    assert!(stdout.contains("break status     readable"), "{stdout}");
    assert!(!stdout.contains("missing: schedules"), "{stdout}");

    sim.sim.deny_scope(SCHEDULES_SCOPE);
    let (code, stdout, _) = doctor(env.clone()).await.unwrap();
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("WFM schedules    REFUSED: the platform denied access (403)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("imported         0 of 10 agents have imported schedules"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "missing: schedules: the platform refuses schedule lookups for this API user, so \
             changes will be refused until schedules are imported (`wfmd schedules import \
             FILE`) or `[compliance] without_schedule = \"allow\"` (10 of 10 agents have no \
             imported schedule)"
        ),
        "{stdout}"
    );

    // Three agents imported (no daemon runs: straight into the database).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedules.csv");
    std::fs::write(&file, schedules_csv(&sim.sim, &["u_001", "u_002", "u_003"])).unwrap();
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let env = env.clone();
        move || run(wfmd().envs(env).args(["schedules", "import"]).arg(file))
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mut allowing = env.clone();
    allowing.push(("WFMD_COMPLIANCE__WITHOUT_SCHEDULE".into(), "allow".into()));
    let (code, stdout, _) = doctor(allowing).await.unwrap();
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("imported         3 of 10 agents have imported schedules"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "with `[compliance] without_schedule = \"allow\"` changes go ahead unchecked (no \
             shift or mandatory-break check) for agents without imported schedules (7 of 10 \
             agents have no imported schedule)"
        ),
        "{stdout}"
    );
}
