//! Authorised exceptions over HTTP: a supervisor excuses agents, or a team's members as
//! the platform lists them, from adherence for a time range; the list shows them,
//! withdrawing one works once, and both are audited with the caller.

use serde_json::{Value, json};
use wfmd::store::on;

use crate::helpers::{Dialect, TestApp, TestSim, on_both_dialects, wfmd};

const ROUTE: &str = "/v1/adherence/authorisations";

async fn post(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}{ROUTE}", app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn delete(app: &TestApp, id: &str) -> (u16, Value) {
    let response = app
        .http
        .delete(format!("{}{ROUTE}/{id}", app.address))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

on_both_dialects!(authorisations_for_agents_or_a_team_are_listed_withdrawn_once_and_audited);
async fn authorisations_for_agents_or_a_team_are_listed_withdrawn_once_and_audited(
    dialect: Dialect,
) {
    let app = TestApp::spawn_with(TestSim::default_tenant().await.on(dialect), |_| {}).await;
    let agents = app.sim.sim.agents();
    let one = &agents[0];
    let (status, by_agent) = post(
        &app,
        json!({"agents": [one.id, one.id], "from": "2026-11-26T11:00:00Z",
               "to": "2026-11-26T11:30:00+00:00", "reason": "coaching"}),
    )
    .await;
    assert_eq!(status, 201, "{by_agent}");
    assert_eq!(by_agent["agents"], json!([one.id]), "each agent once");
    assert_eq!(by_agent["from"], "2026-11-26T11:00:00.000Z");
    assert_eq!(by_agent["created_by"], "local");

    // A team by its name, as the platform lists its members now.
    let mut members: Vec<String> = agents
        .iter()
        .filter(|a| a.team_id == one.team_id)
        .map(|a| a.id.clone())
        .collect();
    members.sort();
    let (status, by_team) = post(
        &app,
        json!({"team": one.team_name.to_lowercase(), "from": "2026-11-27T09:00:00Z",
               "to": "2026-11-27T17:00:00Z", "reason": "all-hands"}),
    )
    .await;
    assert_eq!(status, 201, "{by_team}");
    assert_eq!(by_team["agents"], json!(members));
    assert_eq!(by_team["team"], json!(one.team_name.to_lowercase()));

    // Refusals name their field and store nothing.
    for (body, field) in [
        (
            json!({"agents": [one.id], "from": "2026-11-26T12:00:00Z",
                   "to": "2026-11-26T11:00:00Z", "reason": "x"}),
            "to",
        ),
        (
            json!({"team": "no-such-team", "from": "2026-11-26T11:00:00Z",
                   "to": "2026-11-26T12:00:00Z", "reason": "x"}),
            "team",
        ),
        (
            json!({"agents": [one.id], "from": "yesterday",
                   "to": "2026-11-26T12:00:00Z", "reason": "x"}),
            "from",
        ),
        (
            json!({"agents": [one.id], "from": "2026-11-26T11:00:00Z",
                   "to": "2026-11-26T12:00:00Z", "reason": "   "}),
            "reason",
        ),
    ] {
        let (status, problem) = post(&app, body.clone()).await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (422, Some(field)),
            "{body}: {problem}"
        );
    }

    let listed: Value = app
        .get(&format!(
            "{ROUTE}?from=2026-11-26T00:00:00Z&to=2026-11-28T00:00:00Z"
        ))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["authorisations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    let (first, second) = (
        by_agent["id"].as_str().unwrap(),
        by_team["id"].as_str().unwrap(),
    );
    assert_eq!(
        ids,
        [second, first],
        "newest first, the refused ones not stored"
    );

    let (status, withdrawn) = delete(&app, first).await;
    assert_eq!(status, 200, "{withdrawn}");
    assert_eq!(withdrawn["withdrawn_by"], "local");
    assert_eq!(delete(&app, first).await.0, 409, "once");
    assert_eq!(delete(&app, "no-such-id").await.0, 404);

    let audit: Vec<(String, String, Option<String>)> = on!(app.store.reader(), |c| {
        sqlx::query_as(
            "SELECT action, actor, subject_id FROM audit_log
             WHERE action LIKE 'adherence.%' ORDER BY seq",
        )
        .fetch_all(c)
        .await
    })
    .unwrap();
    assert_eq!(
        audit,
        [
            (
                "adherence.authorised".into(),
                "local".into(),
                Some(first.into())
            ),
            (
                "adherence.authorised".into(),
                "local".into(),
                Some(second.into())
            ),
            (
                "adherence.authorisation_withdrawn".into(),
                "local".into(),
                Some(first.into())
            ),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn wfmd_adherence_authorises_lists_and_withdraws_through_the_daemon() {
    let app = TestApp::spawn().await;
    let agent = app.sim.sim.agents()[0].id.clone();
    let run = |args: Vec<String>| {
        let address = app.address.clone();
        tokio::task::spawn_blocking(move || {
            let output = wfmd()
                .args(["adherence", "--server", &address])
                .args(&args)
                .output()
                .unwrap();
            (
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        })
    };
    let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();

    let (code, stdout, stderr) = run(args(&[
        "authorise",
        "--agents",
        &agent,
        "--from",
        "2026-11-26T14:00:00Z",
        "--to",
        "2026-11-26T15:00:00Z",
        "--reason",
        "coaching session",
        "--json",
    ]))
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    let (code, stdout, _) = run(args(&[
        "authorisations",
        "--from",
        "2026-11-26T00:00:00+00:00",
        "--to",
        "2026-11-27T00:00:00Z",
    ]))
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!(
            "{id}  2026-11-26T14:00:00.000Z – 2026-11-26T15:00:00.000Z  {agent}  \
             \"coaching session\"  by local"
        )
    );

    let (code, stdout, _) = run(args(&["withdraw", &id])).await.unwrap();
    assert_eq!(code, 0);
    assert!(stdout.contains("(withdrawn "), "{stdout}");
    let (code, _, stderr) = run(args(&["withdraw", &id])).await.unwrap();
    assert_eq!(code, 1, "withdrawn already: the daemon's 409");
    assert!(stderr.contains("withdrawn already"), "{stderr}");
    let (code, _, stderr) = run(args(&[
        "authorise",
        "--team",
        "t_1",
        "--from",
        "2026-11-26T15:00:00Z",
        "--to",
        "2026-11-26T14:00:00Z",
        "--reason",
        "x",
    ]))
    .await
    .unwrap();
    assert_eq!(code, 2, "a request the daemon refuses as invalid: {stderr}");
    assert!(stderr.contains("field to"), "{stderr}");
    app.stop().await;
}
