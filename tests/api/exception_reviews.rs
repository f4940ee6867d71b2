//! Reviews of adherence exceptions: the list and its filters, excusing or upholding one
//! (once, unless replaced; audited with the token's name; announced on the feed and by
//! webhook), and an excused exception's span counted as authorised in every report from
//! then on.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{Value, json};
use wfmd::config::WebhookConfig;
use wfmd::domain::adherence::Shift;
use wfmd::domain::{AgentState, Origin};
use wfmd::on;
use wfmd::store::exceptions::{self, ExceptionRow};
use wfmd::store::history::{self, NewInterval};
use wfmd::store::roster::{self, RosterEntry};
use wfmd::store::schedules::{self, BreakSource, StoredShift};
use wfmd::store::{Store, to_ms};

use crate::auth::entry;
use crate::helpers::{DEADLINE, TestApp, TestDb, TestSim, eventually, on_both_backends};
use crate::live::Sse;
use crate::receiver::{Receiver, SECRET};

const DESK: &str = "wfmd_desk-7";
const WALL: &str = "wfmd_wall";

pub(crate) fn exception(
    id: &str,
    agent: &str,
    started: DateTime<Utc>,
    closed: Option<DateTime<Utc>>,
) -> ExceptionRow {
    ExceptionRow {
        id: id.into(),
        agent_id: agent.into(),
        kind: "not_working_in_shift".into(),
        state: "NOT_READY".into(),
        expected: "WORK".into(),
        started_at: to_ms(started),
        opened_at: to_ms(started + Duration::minutes(2)),
        closed_at: closed.map(to_ms),
        rule: None,
        rules_version: None,
        severe_at: None,
    }
}

pub(crate) fn shift(agent: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> StoredShift {
    StoredShift {
        agent_id: agent.into(),
        shift: Shift {
            start,
            end,
            breaks: vec![],
            activities: vec![],
        },
        timezone: None,
        breaks_from: BreakSource::Schedule,
        fetched_at: start - Duration::hours(1),
    }
}

/// `(agent, state, since)` as recorded.
pub(crate) async fn record(store: &Store, changes: &[(&str, AgentState, DateTime<Utc>)]) {
    let mut tx = store.begin_write().await.unwrap();
    for (agent, state, at) in changes {
        let next = NewInterval {
            agent_id: agent,
            state: *state,
            reason: None,
            origin: Origin::Observed,
            at: *at,
            attempt_id: None,
        };
        history::switch_state(&mut tx, &next).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// `GET path` with `query` as the viewer: the status and the JSON answer.
async fn as_wall(app: &TestApp, path: &str, query: &[(&str, String)]) -> (u16, Value) {
    let response = app
        .http
        .get(format!("{}{path}", app.address))
        .bearer_auth(WALL)
        .query(query)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn review(app: &TestApp, id: &str, body: Value, token: &str) -> (u16, Value) {
    let response = app
        .http
        .post(format!(
            "{}/v1/adherence/exceptions/{id}/review",
            app.address
        ))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn listed(app: &TestApp, query: &str) -> Vec<String> {
    let (status, body) = as_wall(app, &format!("/v1/adherence/exceptions{query}"), &[]).await;
    assert_eq!(status, 200, "{query}");
    body["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(exceptions_are_listed_reviewed_once_unless_replaced_audited_and_announced);
async fn exceptions_are_listed_reviewed_once_unless_replaced_audited_and_announced(db: TestDb) {
    let receiver = Receiver::start().await;
    let sim = TestSim::default_tenant().await;
    let agents = sim.sim.agents();
    let care = &agents[0];
    let billing = agents.iter().find(|a| a.team_id != care.team_id).unwrap();
    let now = Utc::now().duration_trunc(Duration::seconds(1)).unwrap();
    // Oldest first: e1 closed, e2 closed (billing), e3 open and severe.
    let e1 = exception(
        "0190c1a4-0000-7000-8000-000000000001",
        &care.id,
        now - Duration::days(3),
        Some(now - Duration::days(3) + Duration::hours(1)),
    );
    let e2 = exception(
        "0190c1a4-0000-7000-8000-000000000002",
        &billing.id,
        now - Duration::hours(5),
        Some(now - Duration::hours(4)),
    );
    let e3 = ExceptionRow {
        severe_at: Some(to_ms(now - Duration::minutes(5))),
        ..exception(
            "0190c1a4-0000-7000-8000-000000000003",
            &care.id,
            now - Duration::minutes(30),
            None,
        )
    };
    let app = TestApp::spawn_on_db(sim, db, |config| {
        config.api_tokens = vec![
            entry("desk-7", DESK, "supervisor"),
            entry("wall", WALL, "viewer"),
        ];
        config.webhooks = vec![WebhookConfig {
            url: receiver.url(),
            secret: vec![SECRET.to_owned().into()],
            events: Some(vec!["adherence.exception_reviewed".into()]),
        }];
    })
    .await;
    let mut tx = app.store.begin_write().await.unwrap();
    exceptions::insert_all(&mut tx, &[e1.clone(), e2.clone(), e3.clone()])
        .await
        .unwrap();
    let roster: Vec<RosterEntry> = [care, billing]
        .iter()
        .map(|a| RosterEntry {
            agent_id: a.id.clone(),
            name: Some(a.name.clone()),
            team_id: Some(a.team_id.clone()),
            team_name: Some(a.team_name.clone()),
        })
        .collect();
    roster::remember(&mut tx, &roster, to_ms(now))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let [e1, e2, e3] = [&e1.id, &e2.id, &e3.id].map(|id| id.as_str().to_owned());
    let (e1, e2, e3) = (e1.as_str(), e2.as_str(), e3.as_str());

    // Newest first; the default window is the week before now.
    assert_eq!(listed(&app, "").await, [e3, e2, e1]);
    assert_eq!(listed(&app, "?state=open").await, [e3]);
    assert_eq!(listed(&app, "?state=severe").await, [e3]);
    assert_eq!(listed(&app, "?state=closed").await, [e2, e1]);
    let team = format!(
        "?team={}",
        care.team_name.to_uppercase().replace(' ', "%20")
    );
    assert_eq!(
        listed(&app, &team).await,
        [e3, e1],
        "the team's, by its name"
    );
    let window = format!(
        "?from={}&to={}",
        wfmd::time::rfc3339(now - Duration::hours(6)),
        wfmd::time::rfc3339(now - Duration::hours(3))
    );
    assert_eq!(
        listed(&app, &window).await,
        [e2],
        "those overlapping the window"
    );
    for (query, parameter) in [
        ("?state=shut", "state"),
        ("?review=maybe", "review"),
        ("?from=2026-11-20&to=2026-11-19", "to"),
    ] {
        let (status, problem) =
            as_wall(&app, &format!("/v1/adherence/exceptions{query}"), &[]).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(problem["parameter"], parameter, "{query}");
    }

    let mut feed = Sse::open(
        &app.address,
        "/v1/events",
        &[("authorization", &format!("Bearer {WALL}"))],
    )
    .await;
    feed.next_of("snapshot").await;
    // A viewer may not review.
    let (status, _) = review(&app, e2, json!({"decision": "excused"}), WALL).await;
    assert_eq!(status, 403);
    let (status, reviewed) = review(
        &app,
        e2,
        json!({"decision": "excused", "note": "  covering the queue "}),
        DESK,
    )
    .await;
    assert_eq!(status, 200, "{reviewed}");
    assert_eq!(reviewed["id"], e2);
    assert_eq!(reviewed["agent_id"], billing.id.as_str());
    let at = reviewed["review"]["at"].clone();
    assert_eq!(
        reviewed["review"],
        json!({"decision": "excused", "note": "covering the queue", "by": "desk-7", "at": at})
    );
    assert_eq!(
        reviewed["started_at"],
        wfmd::time::rfc3339(now - Duration::hours(5))
    );
    // Once, unless replaced.
    let (status, problem) = review(&app, e2, json!({"decision": "upheld"}), DESK).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "urn:wfmd:problem:reviewed-already");
    assert_eq!(problem["exception"]["review"]["decision"], "excused");
    let (status, replaced) = review(
        &app,
        e2,
        json!({"decision": "upheld", "note": "no cover was asked for", "replace": true}),
        DESK,
    )
    .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["review"]["decision"], "upheld");
    // A note over its limit, and an exception that does not exist.
    let (status, problem) = review(
        &app,
        e1,
        json!({"decision": "excused", "note": "x".repeat(1001)}),
        DESK,
    )
    .await;
    assert_eq!(
        (status, &problem["field"]),
        (422, &json!("note")),
        "{problem}"
    );
    let (status, _) = review(
        &app,
        "no-such-exception",
        json!({"decision": "excused"}),
        DESK,
    )
    .await;
    assert_eq!(status, 404);
    let (status, problem) = review(&app, e1, json!({"decision": "forgiven"}), DESK).await;
    assert_eq!(
        (status, &problem["field"]),
        (422, &json!("decision")),
        "{problem}"
    );

    assert_eq!(listed(&app, "?review=upheld").await, [e2]);
    assert_eq!(listed(&app, "?review=pending").await, [e3, e1]);
    assert!(listed(&app, "?review=excused").await.is_empty());

    // Audited with the token's name, each review.
    let audited: Vec<(String, String, Option<String>, Option<String>)> =
        on!(app.store.reader(), |c| sqlx::query_as(
            "SELECT action, actor, agent_id, subject_id FROM audit_log ORDER BY seq"
        )
        .fetch_all(c)
        .await)
        .unwrap();
    let expected = (
        "adherence.exception_reviewed".to_owned(),
        "desk-7".to_owned(),
        Some(billing.id.clone()),
        Some(e2.to_owned()),
    );
    assert_eq!(audited, [expected.clone(), expected]);
    // On the feed and by webhook, in the order made.
    let first = feed.next_of("adherence.exception_reviewed").await;
    let data = &first.data["data"];
    assert_eq!(
        (
            &data["exceptionId"],
            &data["agentId"],
            &data["decision"],
            &data["by"],
            &data["note"]
        ),
        (
            &json!(e2),
            &json!(billing.id),
            &json!("excused"),
            &json!("desk-7"),
            &json!("covering the queue")
        )
    );
    let second = feed.next_of("adherence.exception_reviewed").await;
    assert_eq!(
        (
            &second.data["data"]["decision"],
            &second.data["data"]["replaced"]
        ),
        (&json!("upheld"), &json!("excused"))
    );
    receiver.wait_for(2, DEADLINE).await;
    let hooks: Vec<Value> = receiver.received().into_iter().map(|r| r.json).collect();
    assert_eq!(hooks[0]["type"], "adherence.exception_reviewed");
    assert_eq!(
        hooks[0]["id"],
        first.id.clone().unwrap().as_str(),
        "the same event"
    );
    assert_eq!(hooks[1]["data"]["decision"], "upheld");
    app.stop().await;
}

/// Yesterday's adherence of `agent` in the compliance report (JSON), the summary and the
/// agent's day: `(authorised, out, adherence_pct)` of each.
async fn reported(
    app: &TestApp,
    agent: &str,
    zone: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(f64, f64, f64)> {
    let window = [
        ("from", wfmd::time::rfc3339(from)),
        ("to", wfmd::time::rfc3339(to)),
    ];
    let get = async |path: &str, query: &[(&str, String)]| as_wall(app, path, query).await.1;
    let mut json_query = window.to_vec();
    json_query.push(("format", "json".into()));
    let report = get("/v1/reports/compliance", &json_query).await;
    let row = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == agent)
        .unwrap()
        .clone();
    let figure = |v: &Value| v.as_f64().unwrap();
    let out = |v: &Value, inside: &str| {
        figure(&v["scheduled_seconds"])
            - figure(&v["unobserved_seconds"])
            - figure(&v["authorised_seconds"])
            - figure(&v["neutral_seconds"])
            - figure(&v[inside])
    };
    let summary = get("/v1/adherence/summary", &[("tz", zone.to_owned())]).await;
    let yesterday = &summary["periods"]["yesterday"];
    let day = get(&format!("/v1/agents/{agent}/adherence"), &window).await;
    let figures = &day["figures"];
    vec![
        (
            figure(&row["authorised_seconds"]),
            out(&row, "in_adherence_seconds"),
            figure(&row["adherence_pct"]),
        ),
        (
            figure(&yesterday["authorised_seconds"]),
            figure(&yesterday["out_seconds"]),
            figure(&yesterday["adherence_pct"]),
        ),
        (
            figure(&figures["authorised_seconds"]),
            figure(&figures["out_of_adherence_seconds"]),
            figure(&figures["adherence_pct"]),
        ),
    ]
}

/// A whole-hour zone in which it is between 12:00 and 13:00 at `now`, and the instant
/// its day began. The summary's "yesterday" is taken from the daemon's clock, so a test
/// of it near midnight would see the day change under it, and the other agent's last
/// minutes fall into yesterday; in this zone both midnights are hours away.
fn zone_at_noon(now: DateTime<Utc>) -> (String, DateTime<Utc>) {
    use chrono::Timelike;
    let ahead = 12 - i64::from(now.hour());
    // POSIX signs: Etc/GMT-12 is twelve hours ahead of UTC.
    let zone = match ahead {
        0 => "Etc/GMT".to_owned(),
        h if h > 0 => format!("Etc/GMT-{h}"),
        h => format!("Etc/GMT+{}", -h),
    };
    let local_midnight = (now + Duration::hours(ahead))
        .duration_trunc(Duration::days(1))
        .unwrap();
    (zone, local_midnight - Duration::hours(ahead))
}

/// The `authorised_seconds` of `agent` in the compliance report as CSV, and the HTML
/// report's line of authorised and neutral time.
async fn reported_as_files(
    app: &TestApp,
    agent: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (String, String) {
    let text = |format: &'static str| {
        let request = app
            .http
            .get(format!("{}/v1/reports/compliance", app.address))
            .bearer_auth(WALL)
            .query(&[
                ("from", wfmd::time::rfc3339(from)),
                ("to", wfmd::time::rfc3339(to)),
                ("format", format.into()),
            ]);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let csv = text("csv").await;
    let mut lines = csv.lines().filter(|l| !l.starts_with('#'));
    // The last column.
    assert!(
        lines.next().unwrap().ends_with(",authorised_seconds"),
        "{csv}"
    );
    let row = lines.find(|l| l.starts_with(agent)).unwrap();
    let row = row.rsplit(',').next().unwrap().to_owned();
    let html = text("html").await;
    let label = "Authorised time (supervisor-excused) and neutral time (by a rule)";
    let rest = &html[html.find(label).unwrap() + label.len()..];
    let value = rest
        .split("<td>")
        .nth(1)
        .unwrap()
        .split("</td>")
        .next()
        .unwrap()
        .to_owned();
    (row, value)
}

on_both_backends!(an_excused_exception_counts_as_authorised_in_every_report_from_then_on);
async fn an_excused_exception_counts_as_authorised_in_every_report_from_then_on(db: TestDb) {
    let sim = TestSim::default_tenant().await;
    let free = sim.free_agents();
    let (past, now_out) = (free[0].id.clone(), free[1].id.clone());
    let now = Utc::now().duration_trunc(Duration::seconds(1)).unwrap();
    let (zone, midnight) = zone_at_noon(now);
    assert!(now - midnight >= Duration::hours(12), "{zone}: {midnight}");
    let (yesterday, noon) = (midnight - Duration::days(1), midnight - Duration::hours(12));
    // Yesterday (in `zone`): a shift 11:00-20:00; NOT_READY 12:00-13:00 (an exception),
    // then READY until logged out at 20:00.
    let closed = exception(
        "0190c1a4-0000-7000-8000-00000000000a",
        &past,
        noon,
        Some(noon + Duration::hours(1)),
    );
    // Now: NOT_READY for ten minutes in a shift, its exception open.
    let open = exception(
        "0190c1a4-0000-7000-8000-00000000000b",
        &now_out,
        now - Duration::minutes(10),
        None,
    );
    {
        let store = Store::open(&db.url()).await.unwrap();
        record(
            &store,
            &[
                (&past, AgentState::NotReady, noon),
                (&now_out, AgentState::NotReady, now - Duration::minutes(10)),
            ],
        )
        .await;
        record(
            &store,
            &[(&past, AgentState::Ready, noon + Duration::hours(1))],
        )
        .await;
        record(
            &store,
            &[(&past, AgentState::LoggedOut, noon + Duration::hours(8))],
        )
        .await;
        let mut tx = store.begin_write().await.unwrap();
        schedules::save(
            &mut tx,
            &[
                shift(&past, noon - Duration::hours(1), noon + Duration::hours(8)),
                shift(&now_out, now - Duration::hours(2), now + Duration::hours(2)),
            ],
        )
        .await
        .unwrap();
        exceptions::insert_all(&mut tx, &[closed.clone(), open.clone()])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        store.close().await;
    }
    let app = TestApp::spawn_on_db(sim, db, |config| {
        config.api_tokens = vec![
            entry("desk-7", DESK, "supervisor"),
            entry("wall", WALL, "viewer"),
        ];
    })
    .await;

    // Before: the NOT_READY hour is out of adherence everywhere (7 of 8 hours in).
    let before = reported(&app, &past, &zone, yesterday, midnight).await;
    for (i, figures) in before.iter().enumerate() {
        assert_eq!(figures.0, 0.0, "#{i}: {before:?}");
        assert_eq!(figures.1, 3600.0, "#{i}: {before:?}");
        assert!((figures.2 - 87.5).abs() < 1e-9, "#{i}: {before:?}");
    }
    assert_eq!(
        reported_as_files(&app, &past, yesterday, midnight).await,
        ("0".to_owned(), "0:00:00 and 0:00:00".to_owned())
    );

    let (status, body) = review(
        &app,
        &closed.id,
        json!({"decision": "excused", "note": "fire drill"}),
        DESK,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // After: that hour is authorised everywhere, and left out of the percentage.
    let after = reported(&app, &past, &zone, yesterday, midnight).await;
    for (i, figures) in after.iter().enumerate() {
        assert_eq!(
            (figures.0, figures.1, figures.2),
            (3600.0, 0.0, 100.0),
            "#{i}: {after:?}"
        );
    }
    assert_eq!(
        reported_as_files(&app, &past, yesterday, midnight).await,
        ("3600".to_owned(), "1:00:00 and 0:00:00".to_owned())
    );
    // Upheld again, it counts as out again.
    let (status, _) = review(
        &app,
        &closed.id,
        json!({"decision": "upheld", "replace": true}),
        DESK,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        reported(&app, &past, &zone, yesterday, midnight).await,
        before
    );

    // The definitions say so.
    let text = as_wall(&app, "/v1/reports/definitions", &[])
        .await
        .1
        .to_string();
    assert!(text.contains("excused"), "{text}");
    assert!(
        text.contains("/v1/adherence/exceptions/{id}/review"),
        "{text}"
    );

    // An open exception excused: the agent's time counts as authorised now.
    let verdict = async || -> Value {
        let (_, rows) = as_wall(&app, "/v1/adherence/now", &[]).await;
        rows["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == now_out.as_str())
            .map_or(Value::Null, |r| r["verdict"].clone())
    };
    eventually(
        "the agent is not out of adherence",
        async || match verdict().await {
            v if v == "out" => Ok(()),
            v => Err(v.to_string()),
        },
    )
    .await;
    let (status, _) = review(&app, &open.id, json!({"decision": "excused"}), DESK).await;
    assert_eq!(status, 200);
    assert_eq!(verdict().await, "authorised");
    app.stop().await;
}
