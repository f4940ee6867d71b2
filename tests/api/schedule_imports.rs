//! Schedules imports of the largest size into a running daemon (#53): stored as a job,
//! whole or not at all, with the tenant's changes answered meanwhile; a refused file is
//! answered small, each problem naming its line.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use wfmd::store::Store;
use wfmd::store::imported;

use crate::helpers::{
    Daemon, TestApp, TestDb, TestSim, count, eventually_within, get_json, http_client,
    on_both_backends, wait_until_every,
};

/// How long a large import may take in a debug build on a busy machine.
const IMPORT_DEADLINE: Duration = Duration::from_secs(180);

const HEADER: &str =
    "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone\n";

/// A schedules file of `shifts` shifts of one row each (with a mandatory lunch), 28 per
/// agent (`imp_00000`, `imp_00001`, …) on the first days of 2030, each ending at
/// `end_hour`.
pub(crate) fn schedules_file(shifts: usize, end_hour: u32) -> String {
    let mut csv = String::from(HEADER);
    for n in 0..shifts {
        let (agent, day) = (n / 28, n % 28 + 1);
        csv.push_str(&format!(
            "imp_{agent:05},2030-01-{day:02}T09:00:00Z,2030-01-{day:02}T{end_hour}:00:00Z,\
             2030-01-{day:02}T12:00:00Z,2030-01-{day:02}T12:30:00Z,LUNCH,true,Europe/London\n"
        ));
    }
    csv
}

/// Posts `body` as a schedules import: the status, the body and `Location`.
pub(crate) async fn post_import(
    address: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value, Option<String>) {
    let response = http_client()
        .post(format!("{address}/v1/schedules/imports"))
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), location)
}

/// The import at `location` once it has finished.
pub(crate) async fn until_finished(address: &str, location: &str) -> Value {
    eventually_within(IMPORT_DEADLINE, "the import did not finish", async || {
        let job = get_json(&format!("{address}{location}")).await;
        match job["state"].as_str() {
            Some("completed" | "failed") => Ok(job),
            _ => Err(job.to_string()),
        }
    })
    .await
}

/// Posts `csv` as a schedules import: the status and the body as it came.
async fn post_raw(address: &str, csv: String) -> (u16, Vec<u8>) {
    let response = http_client()
        .post(format!("{address}/v1/schedules/imports"))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// Imports `csv` into the daemon at `address` and waits until it is completed.
pub(crate) async fn import_whole(address: &str, csv: String) -> Value {
    let (status, body, location) = post_import(address, csv).await;
    assert_eq!(status, 202, "{body}");
    let job = until_finished(address, &location.unwrap()).await;
    assert_eq!(job["state"], "completed", "{job}");
    job
}

/// The imported shifts `agent_id` is answered from, as (start, end) pairs.
async fn shifts_of(store: &Store, agent_id: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let after = "2029-12-31T00:00:00Z".parse().unwrap();
    imported::for_agent(store.reader(), agent_id, after)
        .await
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.start, s.end))
        .collect()
}

fn ending_at(shifts: &[(DateTime<Utc>, DateTime<Utc>)], hour: u32) -> bool {
    use chrono::Timelike;
    !shifts.is_empty() && shifts.iter().all(|(_, end)| end.hour() == hour)
}

on_both_backends!(
    a_file_of_many_batches_is_stored_whole_as_a_job_and_replaces_what_it_overlaps,
    a_bad_line_deep_inside_a_large_file_stores_nothing_and_names_the_line,
    a_change_on_the_tenant_is_answered_while_a_large_import_is_stored,
    kill_9_while_an_import_is_stored_or_put_in_place_leaves_the_old_schedules_or_the_new,
);

async fn a_file_of_many_batches_is_stored_whole_as_a_job_and_replaces_what_it_overlaps(db: TestDb) {
    let app = TestApp::spawn_in(db).await;
    // Three batches of shifts written aside, three moved into place.
    let shifts = 2 * wfmd::engine::imported_schedules::STAGE_BATCH + 600;
    let (status, accepted, location) = post_import(&app.address, schedules_file(shifts, 17)).await;
    assert_eq!(status, 202, "{accepted}");
    let location = location.expect("a Location");
    let id = accepted["job_id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/schedules/imports/{id}"));
    assert_eq!(accepted["state"], "storing");
    assert_eq!(accepted["shifts"], shifts);
    assert_eq!(accepted["lines"], shifts);
    assert_eq!(accepted["in_force"], false);

    let job = until_finished(&app.address, &location).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["in_force"], true);
    assert_eq!(
        (&job["stored"], &job["applied"]),
        (&json!(shifts), &json!(shifts))
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM imported_shifts").await,
        shifts as i64
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM imported_shifts_staged")
            .await,
        0
    );
    let audited: String = wfmd::on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT json_extract(detail, '$.import') FROM audit_log
         WHERE action = 'schedules.imported'"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(audited, id);
    assert!(ending_at(&shifts_of(&app.store, "imp_00000").await, 17));

    // The same shifts ending later: each replaces the one it overlaps.
    import_whole(&app.address, schedules_file(shifts, 18)).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM imported_shifts").await,
        shifts as i64
    );
    let last = format!("imp_{:05}", (shifts - 1) / 28);
    for agent in ["imp_00000", last.as_str()] {
        assert!(
            ending_at(&shifts_of(&app.store, agent).await, 18),
            "{agent}"
        );
    }
}

async fn a_bad_line_deep_inside_a_large_file_stores_nothing_and_names_the_line(db: TestDb) {
    let app = TestApp::spawn_in(db).await;
    let mut lines: Vec<String> = schedules_file(3_000, 17)
        .lines()
        .map(str::to_owned)
        .collect();
    // The file's line 2,501: its shift ends before it starts.
    lines[2_500] = "imp_09999,2030-01-02T09:00:00Z,2030-01-02T08:00:00Z,,,,,".to_owned();
    let (status, problem, _) = post_import(&app.address, lines.join("\n")).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["type"], "urn:wfmd:problem:invalid-schedules");
    assert_eq!(
        problem["problems"],
        json!(["line 2501: shift_end is not after shift_start"])
    );
    assert_eq!(problem["problem_count"], 1);
    assert_eq!(
        problem["detail"],
        "line 2501: shift_end is not after shift_start"
    );
    for table in [
        "imported_shifts",
        "imported_shifts_staged",
        "schedule_imports",
    ] {
        let sql = match table {
            "imported_shifts" => "SELECT COUNT(*) FROM imported_shifts",
            "imported_shifts_staged" => "SELECT COUNT(*) FROM imported_shifts_staged",
            _ => "SELECT COUNT(*) FROM schedule_imports",
        };
        assert_eq!(app.count(sql).await, 0, "{table}: checked before any write");
    }
}

#[tokio::test]
async fn an_agent_id_of_8_mib_is_refused_naming_its_line_in_a_small_answer() {
    let app = TestApp::spawn().await;
    let huge = "a".repeat(8 * 1024 * 1024);
    let csv = format!(
        "{}{huge},2030-01-02T09:00:00Z,2030-01-02T17:00:00Z,,,,,\n",
        schedules_file(10, 17)
    );
    let (status, body) = post_raw(&app.address, csv).await;
    assert_eq!(status, 422);
    assert!(body.len() < 4 * 1024, "{} bytes", body.len());
    let problem: Value = serde_json::from_slice(&body).unwrap();
    let first = problem["problems"][0].as_str().unwrap();
    assert!(
        first.starts_with(&format!(
            "line 12: agent `{}…` (8388608 characters) is not an agent id: 1 to 128 \
             printable ASCII characters",
            "a".repeat(40)
        )),
        "{first}"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM imported_shifts").await, 0);
}

#[tokio::test]
async fn the_422_of_a_15_mb_file_of_bad_lines_is_small_and_counts_them_all() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(7 * 1024 * 1024);
    let mut csv = format!(
        "{HEADER}u_1,2030-01-02 09:00,2030-01-02 17:00,,,,,{long}\n\
         u_2,{long},2030-01-02T17:00:00Z,,,,,\n"
    );
    for n in 0..10_000 {
        csv.push_str(&format!("u_{n},not a time,2030-01-02T17:00:00Z,,,,,\n"));
    }
    assert!(csv.len() > 14_000_000);
    let (status, body) = post_raw(&app.address, csv).await;
    assert_eq!(status, 422);
    assert!(body.len() < 64 * 1024, "{} bytes", body.len());
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["problem_count"], 10_002);
    let listed = problem["problems"].as_array().unwrap();
    assert_eq!(listed.len(), 100);
    assert!(
        listed[0]
            .as_str()
            .unwrap()
            .starts_with("line 2: timezone `xxxx"),
        "{}",
        listed[0]
    );
    assert!(
        listed[1]
            .as_str()
            .unwrap()
            .starts_with("line 3: shift_start `xxxx"),
        "{}",
        listed[1]
    );
    assert!(
        listed[99]
            .as_str()
            .unwrap()
            .starts_with("line 101: shift_start `not a time`"),
        "{}",
        listed[99]
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .ends_with("(and 10001 more: see `problems`)"),
        "{}",
        problem["detail"]
    );
}

async fn a_change_on_the_tenant_is_answered_while_a_large_import_is_stored(db: TestDb) {
    let app = TestApp::spawn_in(db).await;
    let agent = app.sim.free_agents().remove(0);
    // About the largest file taken (16 MiB): 14 MB.
    let (status, accepted, location) = post_import(&app.address, schedules_file(120_000, 17)).await;
    assert_eq!(status, 202, "{accepted}");
    let location = location.unwrap();
    let progress = async || get_json(&format!("{}{location}", app.address)).await;
    // Part of it is written; the rest is still to come.
    wait_until_every(
        Duration::from_millis(5),
        "the import stored nothing",
        async || {
            let job = progress().await;
            assert_eq!(
                job["state"], "storing",
                "finished before a change was made: {job}"
            );
            job["stored"].as_u64() > Some(0)
        },
    )
    .await;

    let (status, body) = app.set_state(&agent.id, "NOT_READY").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.set_state(&agent.id, "PAUSED").await;
    assert_eq!(status, 200, "{body}");

    let job = progress().await;
    assert!(
        matches!(job["state"].as_str(), Some("storing" | "applying")),
        "the changes were answered only once the import had finished: {job}"
    );
    let job = until_finished(&app.address, &location).await;
    assert_eq!(job["state"], "completed", "{job}");
}

async fn kill_9_while_an_import_is_stored_or_put_in_place_leaves_the_old_schedules_or_the_new(
    db: TestDb,
) {
    let sim = TestSim::default_tenant().await;
    let env = sim.env(&db.url());
    let daemon = Daemon::spawn(&env).await;
    // The old schedules: ten agents' shifts ending at 17:00.
    import_whole(&daemon.address, schedules_file(280, 17)).await;
    // 2,858 agents' 28 shifts each.
    const LARGE: usize = 80_024;
    let large = schedules_file(LARGE, 18);
    let last_agent = format!("imp_{:05}", LARGE / 28 - 1);

    // Killed while the new file is written aside: the old schedules, whole.
    let (status, _, location) = post_import(&daemon.address, large.clone()).await;
    assert_eq!(status, 202);
    let first = location.unwrap();
    let job_at =
        async |address: &str, location: &str| get_json(&format!("{address}{location}")).await;
    wait_until_every(
        Duration::from_millis(2),
        "the import stored nothing",
        async || {
            let job = job_at(&daemon.address, &first).await;
            assert_eq!(job["state"], "storing", "{job}");
            job["stored"].as_u64() > Some(0)
        },
    )
    .await;
    daemon.signal("KILL");
    assert!(!daemon.wait().await.success());
    let store = Store::open(&db.url()).await.unwrap();
    assert!(count(&store, "SELECT COUNT(*) FROM imported_shifts_staged").await > 0);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM imported_shifts").await,
        280
    );
    assert_eq!(imported::agents(store.reader()).await.unwrap().len(), 10);
    assert!(ending_at(&shifts_of(&store, "imp_00000").await, 17));
    assert!(shifts_of(&store, &last_agent).await.is_empty());
    store.close().await;

    // Started again: the next import gives the abandoned one up and removes its shifts.
    let daemon = Daemon::spawn(&env).await;
    let (status, _, location) = post_import(&daemon.address, large).await;
    assert_eq!(status, 202);
    let second = location.unwrap();
    let abandoned = job_at(&daemon.address, &first).await;
    assert_eq!(abandoned["state"], "failed", "{abandoned}");
    assert_eq!(abandoned["in_force"], false);

    // Killed while it is put in place: the new schedules, whole.
    wait_until_every(
        Duration::from_millis(2),
        "the import was not put in force",
        async || {
            let job = job_at(&daemon.address, &second).await;
            assert_ne!(job["state"], "completed", "{job}");
            job["state"] == "applying"
        },
    )
    .await;
    daemon.signal("KILL");
    assert!(!daemon.wait().await.success());
    let store = Store::open(&db.url()).await.unwrap();
    assert!(
        count(&store, "SELECT COUNT(*) FROM imported_shifts").await < LARGE as i64,
        "killed before every shift was in place"
    );
    for agent in ["imp_00000", "imp_00009", "imp_01500", last_agent.as_str()] {
        let shifts = shifts_of(&store, agent).await;
        assert_eq!(shifts.len(), 28, "{agent}");
        assert!(ending_at(&shifts, 18), "{agent}: {shifts:?}");
    }
    assert_eq!(
        imported::agents(store.reader()).await.unwrap().len(),
        LARGE / 28
    );
    store.close().await;

    // Started again: the next import first puts the rest in place.
    let daemon = Daemon::spawn(&env).await;
    import_whole(&daemon.address, schedules_file(28, 18)).await;
    let finished = job_at(&daemon.address, &second).await;
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(finished["applied"], LARGE);
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
    let store = Store::open(&db.url()).await.unwrap();
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM imported_shifts").await,
        LARGE as i64
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM imported_shifts_staged").await,
        0
    );
    store.close().await;
}
