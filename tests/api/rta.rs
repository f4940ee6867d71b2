//! Real-time adherence: `GET /v1/adherence/now` judges each managed agent's recorded
//! state against its stored schedule as the sweep and the reports do, lists those out of
//! adherence first, and costs no platform call; the feed's `adherence.changed` carries
//! a row when it changes. `GET /v1/adherence/summary` says what the compliance report
//! says of the same windows.

use chrono::{DateTime, Datelike, Duration, DurationRound, Utc};
use serde_json::{Value, json};
use wfmd::domain::adherence::Shift;
use wfmd::domain::{AgentState, BreakWindow, Origin};
use wfmd::store::exceptions::{self, ExceptionRow};
use wfmd::store::history::{self, NewInterval};
use wfmd::store::schedules::{self, BreakSource, StoredShift};
use wfmd::store::{Store, to_ms};

use crate::helpers::{TestApp, TestDb, TestSim, eventually, on_both_backends};
use crate::live::Sse;

/// Every platform call the simulator has answered.
fn platform_calls(sim: &TestSim) -> u64 {
    sim.sim.stats().by_route.values().sum()
}

/// A shift from `now` − 4 h to `now` + 4 h, with a mandatory lunch when asked.
fn shift(
    agent: &str,
    now: DateTime<Utc>,
    lunch: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> StoredShift {
    StoredShift {
        agent_id: agent.into(),
        shift: Shift {
            start: now - Duration::hours(4),
            end: now + Duration::hours(4),
            breaks: lunch
                .map(|(start, end)| BreakWindow {
                    start,
                    end,
                    kind: "LUNCH".into(),
                    mandatory: true,
                })
                .into_iter()
                .collect(),
            activities: vec![],
        },
        timezone: Some("Europe/Berlin".into()),
        breaks_from: BreakSource::Schedule,
        fetched_at: now - Duration::hours(5),
    }
}

/// Stores what wfmd would know of each agent: `(agent, state since, shift)`, and
/// `exceptions`.
async fn seed(
    store: &Store,
    agents: &[(&str, AgentState, DateTime<Utc>, Option<StoredShift>)],
    exceptions: &[ExceptionRow],
) {
    let mut tx = store.begin_write().await.unwrap();
    for (agent, state, since, shift) in agents {
        let next = NewInterval {
            agent_id: agent,
            state: *state,
            reason: None,
            origin: Origin::Observed,
            at: *since,
            attempt_id: None,
        };
        history::switch_state(&mut tx, &next).await.unwrap();
        if let Some(shift) = shift {
            schedules::save(&mut tx, std::slice::from_ref(shift))
                .await
                .unwrap();
        }
    }
    exceptions::insert_all(&mut tx, exceptions).await.unwrap();
    tx.commit().await.unwrap();
}

fn row<'a>(rows: &'a Value, agent: &str) -> &'a Value {
    rows["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == agent)
        .unwrap_or_else(|| panic!("{agent} is not in {rows}"))
}

on_both_backends!(
    adherence_now_judges_each_agent_lists_the_longest_out_first_and_the_feed_sends_what_changes
);
async fn adherence_now_judges_each_agent_lists_the_longest_out_first_and_the_feed_sends_what_changes(
    db: TestDb,
) {
    let sim = TestSim::default_tenant().await;
    let free = sim.free_agents();
    let (long_out, short_out, inside, unscheduled) =
        (&free[0].id, &free[1].id, &free[2].id, &free[3].id);
    // Whole seconds, so what the store keeps (milliseconds) prints as seeded.
    let now = Utc::now().duration_trunc(Duration::seconds(1)).unwrap();
    let lunch = (now - Duration::minutes(20), now + Duration::minutes(40));
    let severe = ExceptionRow {
        id: "0190c1a4-7b7e-7c3d-9f00-000000000001".into(),
        agent_id: long_out.clone(),
        kind: "working_in_mandatory_break".into(),
        state: "READY".into(),
        expected: "MANDATORY_BREAK".into(),
        started_at: to_ms(lunch.0),
        opened_at: to_ms(lunch.0 + Duration::minutes(2)),
        closed_at: None,
        rule: None,
        rules_version: None,
        severe_at: Some(to_ms(lunch.0 + Duration::minutes(10))),
    };
    {
        // Before the daemon starts: its feed reads the recorded states as it starts.
        let store = Store::open(&db.url()).await.unwrap();
        use AgentState::{NotReady, Ready};
        seed(
            &store,
            &[
                // READY into the lunch that began 20 minutes ago: out since it began.
                (
                    long_out,
                    Ready,
                    now - Duration::minutes(30),
                    Some(shift(long_out, now, Some(lunch))),
                ),
                // NOT_READY at work for 5 minutes: out since then, no exception yet.
                (
                    short_out,
                    NotReady,
                    now - Duration::minutes(5),
                    Some(shift(short_out, now, None)),
                ),
                (
                    inside,
                    Ready,
                    now - Duration::minutes(30),
                    Some(shift(inside, now, None)),
                ),
                // Logged in without a stored shift: nothing asked of the agent.
                (unscheduled, Ready, now - Duration::minutes(30), None),
            ],
            std::slice::from_ref(&severe),
        )
        .await;
        store.close().await;
    }
    let app = TestApp::spawn_on_db(sim, db, |_| {}).await;

    // Once the feed has read the recorded states.
    let rows: Value = eventually("the feed did not load the agents", async || {
        let rows: Value = app.get("/v1/adherence/now").await.json().await.unwrap();
        match rows["agents"].as_array().unwrap().len() {
            4 => Ok(rows),
            _ => Err(rows.to_string()),
        }
    })
    .await;
    let order: Vec<&str> = rows["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(order.len(), 4, "{rows}");
    assert_eq!(
        &order[..2],
        [long_out, short_out],
        "out first, longest out first"
    );
    let at = |minutes: i64| wfmd::time::rfc3339(now - Duration::minutes(minutes));
    let long = row(&rows, long_out);
    assert_eq!(
        (
            &long["verdict"],
            &long["scheduled"],
            &long["state"],
            &long["out_since"],
            &long["exception_id"],
            &long["severe"]
        ),
        (
            &json!("out"),
            &json!("LUNCH"),
            &json!("READY"),
            &json!(at(20)),
            &json!(severe.id),
            &json!(true)
        ),
        "{long}"
    );
    assert_eq!(long["since"], at(30));
    let short = row(&rows, short_out);
    assert_eq!(
        (&short["verdict"], &short["scheduled"], &short["out_since"]),
        (&json!("out"), &json!("WORK"), &json!(at(5)))
    );
    assert_eq!(
        (&short["exception_id"], &short["severe"]),
        (&Value::Null, &json!(false)),
        "within its grace: no exception yet"
    );
    let inside_row = row(&rows, inside);
    assert_eq!(
        (&inside_row["verdict"], &inside_row["out_since"]),
        (&json!("in"), &Value::Null)
    );
    let none = row(&rows, unscheduled);
    assert_eq!(
        (&none["verdict"], &none["scheduled"]),
        (&json!("unscheduled"), &Value::Null)
    );
    // Today's figure is the compliance report's for today so far.
    let midnight = now.duration_trunc(Duration::days(1)).unwrap();
    if now - midnight > Duration::minutes(1) {
        let report = compliance_report(&app, midnight, Utc::now()).await;
        let reported = report["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent_id"] == long_out.as_str())
            .unwrap()["adherence_pct"]
            .as_f64()
            .unwrap();
        let today = long["adherence_pct_today"].as_f64().unwrap();
        assert!((today - reported).abs() < 0.5, "{today} against {reported}");
        assert!(today < 100.0, "{today}");
    }

    // However often it is asked, the platform is not.
    let calls = platform_calls(&app.sim);
    for _ in 0..20 {
        assert_eq!(app.get("/v1/adherence/now").await.status(), 200);
    }
    assert_eq!(platform_calls(&app.sim), calls, "no platform call");

    // Logged out in the lunch: back in adherence, and the feed says so in one row.
    let mut feed = Sse::open(&app.address, "/v1/events", &[]).await;
    feed.next_of("snapshot").await;
    let response = app
        .transition(long_out, json!({"state": "LOGGED_OUT"}))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let changed = eventually("no adherence.changed for the agent", async || {
        let event = feed.next_of("adherence.changed").await;
        if event.data["data"]["id"] == long_out.as_str() {
            Ok(event)
        } else {
            Err(event.data.to_string())
        }
    })
    .await;
    assert_eq!(changed.id, None, "not an outbox event");
    let data = &changed.data["data"];
    assert_eq!(
        (
            &data["verdict"],
            &data["state"],
            &data["out_since"],
            &data["exception_id"]
        ),
        (
            &json!("in"),
            &json!("LOGGED_OUT"),
            &Value::Null,
            &Value::Null
        ),
        "{data}"
    );
    assert_eq!(data["scheduled"], "LUNCH");
    // The row the feed sent is the row the route answers (today's figure moves on).
    let answered: Value = app.get("/v1/adherence/now").await.json().await.unwrap();
    let mut answered = row(&answered, long_out).clone();
    let mut sent = data.clone();
    for row in [&mut answered, &mut sent] {
        row["adherence_pct_today"] = Value::Null;
    }
    assert_eq!(answered, sent);
    app.stop().await;
}

#[tokio::test]
async fn adherence_now_keeps_the_team_or_skill_asked_for() {
    let sim = TestSim::default_tenant().await;
    let agents = sim.sim.agents();
    let one = agents[0].clone();
    let skill = one.skills[0].clone();
    let app = TestApp::spawn_with(sim, |config| {
        // The roster names the agents and their teams and skills.
        config.live.enabled = true;
    })
    .await;
    eventually("the roster was not read", async || {
        let live: Value = app.get("/v1/live").await.json().await.unwrap();
        match live["agents"][0]["name"].is_string() {
            true => Ok(()),
            false => Err(live["agents"][0].to_string()),
        }
    })
    .await;
    let ids = async |query: &str| -> Vec<String> {
        let rows: Value = app
            .get(&format!("/v1/adherence/now{query}"))
            .await
            .json()
            .await
            .unwrap();
        let mut ids: Vec<String> = rows["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let expected = |keep: &dyn Fn(&wfmd::sim::SimAgent) -> bool| {
        let mut ids: Vec<String> = agents
            .iter()
            .filter(|a| keep(a))
            .map(|a| a.id.clone())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids("").await.len(), agents.len());
    let team = expected(&|a| a.team_id == one.team_id);
    assert_eq!(ids(&format!("?team={}", one.team_id)).await, team);
    let by_name = format!("?team={}", one.team_name.to_uppercase().replace(' ', "%20"));
    assert_eq!(ids(&by_name).await, team, "a team by its name, any case");
    assert_eq!(
        ids(&format!("?skill={skill}")).await,
        expected(&|a| a.skills.contains(&skill))
    );
    assert!(ids("?team=no-such-team").await.is_empty());
    for parameter in ["team", "skill"] {
        let response = app.get(&format!("/v1/adherence/now?{parameter}=%20")).await;
        assert_eq!(response.status(), 400);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["parameter"], parameter, "{problem}");
    }
}

/// The compliance report over `[from, to)`, as JSON.
async fn compliance_report(app: &TestApp, from: DateTime<Utc>, to: DateTime<Utc>) -> Value {
    app.http
        .get(format!("{}/v1/reports/compliance", app.address))
        .query(&[
            ("from", wfmd::time::rfc3339(from)),
            ("to", wfmd::time::rfc3339(to)),
            ("format", "json".into()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The compliance report's per-agent adherence over `[from, to)` (JSON), summed over
/// `agents` as the summary sums it: `[scheduled, in, out, authorised, neutral]` seconds.
async fn report_sums(
    app: &TestApp,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    agents: &[&str],
) -> [f64; 5] {
    let report = compliance_report(app, from, to).await;
    let mut sums = [0.0; 5];
    for agent in report["agents"].as_array().unwrap() {
        if !agents.contains(&agent["agent_id"].as_str().unwrap()) {
            continue;
        }
        let field = |name: &str| agent[name].as_f64().unwrap_or(0.0);
        let scheduled = field("scheduled_seconds");
        let inside = field("in_adherence_seconds");
        let (authorised, neutral) = (field("authorised_seconds"), field("neutral_seconds"));
        let out = scheduled - field("unobserved_seconds") - authorised - neutral - inside;
        for (sum, value) in sums
            .iter_mut()
            .zip([scheduled, inside, out, authorised, neutral])
        {
            *sum += value;
        }
    }
    sums
}

/// A period of the summary as the report's sums are: `[scheduled, in, out, authorised,
/// neutral]` seconds.
fn period_sums(period: &Value) -> [f64; 5] {
    [
        "scheduled_seconds",
        "in_seconds",
        "out_seconds",
        "authorised_seconds",
        "neutral_seconds",
    ]
    .map(|field| period[field].as_f64().unwrap())
}

fn assert_same(summary: [f64; 5], report: [f64; 5], what: &str) {
    for (got, expected) in summary.iter().zip(report) {
        assert!(
            (got - expected).abs() < 0.001,
            "{what}: {summary:?} against the report's {report:?}"
        );
    }
}

on_both_backends!(the_summary_of_each_period_is_what_the_compliance_report_says_of_it);
async fn the_summary_of_each_period_is_what_the_compliance_report_says_of_it(db: TestDb) {
    let app = TestApp::spawn_in(db).await;
    let agents = app.sim.sim.agents();
    let (care, billing) = (
        &agents[0],
        agents
            .iter()
            .find(|a| a.team_id != agents[0].team_id)
            .unwrap(),
    );
    let now = Utc::now();
    let midnight = now.duration_trunc(Duration::days(1)).unwrap();
    let yesterday = midnight - Duration::days(1);
    // Yesterday from 08:00 to 16:00 UTC: care NOT_READY for two hours, then READY; billing
    // READY all day. Both logged out at 16:00, and nothing since.
    let day_shift = |agent: &str| StoredShift {
        agent_id: agent.into(),
        shift: Shift {
            start: yesterday + Duration::hours(8),
            end: yesterday + Duration::hours(16),
            breaks: vec![],
            activities: vec![],
        },
        timezone: None,
        breaks_from: BreakSource::Schedule,
        fetched_at: yesterday,
    };
    let mut tx = app.store.begin_write().await.unwrap();
    let changes = [
        (care.id.as_str(), AgentState::NotReady, 8),
        (care.id.as_str(), AgentState::Ready, 10),
        (care.id.as_str(), AgentState::LoggedOut, 16),
        (billing.id.as_str(), AgentState::Ready, 8),
        (billing.id.as_str(), AgentState::LoggedOut, 16),
    ];
    for (agent, state, hour) in changes {
        let next = NewInterval {
            agent_id: agent,
            state,
            reason: None,
            origin: Origin::Observed,
            at: yesterday + Duration::hours(hour),
            attempt_id: None,
        };
        history::switch_state(&mut tx, &next).await.unwrap();
    }
    schedules::save(&mut tx, &[day_shift(&care.id), day_shift(&billing.id)])
        .await
        .unwrap();
    let roster: Vec<wfmd::store::roster::RosterEntry> = [care, billing]
        .iter()
        .map(|a| wfmd::store::roster::RosterEntry {
            agent_id: a.id.clone(),
            name: Some(a.name.clone()),
            team_id: Some(a.team_id.clone()),
            team_name: Some(a.team_name.clone()),
        })
        .collect();
    wfmd::store::roster::remember(&mut tx, &roster, to_ms(now))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let both = [care.id.as_str(), billing.id.as_str()];

    let summary = async |query: &str| -> Value {
        let response = app.get(&format!("/v1/adherence/summary{query}")).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    };
    let all = summary("").await;
    let periods = &all["periods"];
    let yesterday_sums = period_sums(&periods["yesterday"]);
    assert_eq!(
        yesterday_sums,
        [57_600.0, 50_400.0, 7_200.0, 0.0, 0.0],
        "{all}"
    );
    let pct = periods["yesterday"]["adherence_pct"].as_f64().unwrap();
    assert!((pct - 87.5).abs() < 1e-9, "{pct}");
    assert_same(
        yesterday_sums,
        report_sums(&app, yesterday, midnight, &both).await,
        "yesterday",
    );
    assert_eq!(period_sums(&periods["today"]), [0.0; 5]);
    assert_eq!(
        periods["today"]["adherence_pct"],
        Value::Null,
        "nothing judged today"
    );
    // The week and the month to date, as the report over them says (yesterday may open
    // neither: a Monday, the 1st).
    let monday = midnight - Duration::days(i64::from(now.weekday().num_days_from_monday()));
    let first = midnight - Duration::days(i64::from(now.day0()));
    for (name, from) in [("week_to_date", monday), ("month_to_date", first)] {
        assert_same(
            period_sums(&periods[name]),
            report_sums(&app, from, Utc::now(), &both).await,
            name,
        );
    }

    // One team's; by its name in any case.
    let by_name = format!(
        "?team={}",
        care.team_name.to_lowercase().replace(' ', "%20")
    );
    let team = summary(&by_name).await;
    assert_same(
        period_sums(&team["periods"]["yesterday"]),
        report_sums(&app, yesterday, midnight, &[care.id.as_str()]).await,
        "the team's yesterday",
    );
    assert_eq!(team["periods"]["yesterday"]["adherence_pct"], 75.0);

    // Days in another zone start at its midnight.
    let zone: chrono_tz::Tz = "Asia/Tokyo".parse().unwrap();
    let tokyo = summary("?tz=Asia/Tokyo").await;
    let local_midnight = now
        .with_timezone(&zone)
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_local_timezone(zone)
        .unwrap()
        .with_timezone(&Utc);
    assert_same(
        period_sums(&tokyo["periods"]["yesterday"]),
        report_sums(
            &app,
            local_midnight - Duration::days(1),
            local_midnight,
            &both,
        )
        .await,
        "Tokyo's yesterday",
    );
    let response = app.get("/v1/adherence/summary?tz=Mars/Olympus").await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["parameter"], "tz");
    app.stop().await;
}
