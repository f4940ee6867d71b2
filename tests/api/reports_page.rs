//! The `/reports` page in a real browser (headless Chromium, set up as `console.rs`
//! sets it up) against wfmd serving the simulator: one team's compliance report shown in
//! the page and downloaded in each format, an analytics query started from the page
//! whose chart names its series, bad input said without asking anything, and axe-core
//! finding no serious or critical violation.

use serde_json::{Value, json};

use crate::console::{Floor, assert_accessible, click, open, says, type_into};
use crate::helpers::{TestSim, http_client};
use crate::wallboard::{SLOW, eventually, run, set_state};

/// The hrefs of the page's download links, by format.
async fn downloads(browser: &fantoccini::Client) -> Vec<(String, String)> {
    let links = run(
        browser,
        "return [...document.querySelectorAll('#downloads a')]
                .map((a) => [a.dataset.format, a.getAttribute('href')]);",
        Value::Null,
    )
    .await;
    serde_json::from_value(links).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_report_is_shown_and_downloaded_and_an_analytics_query_is_charted_with_names() {
    let sim = TestSim::default_tenant().await;
    let floor = Floor::start(sim, |_| {}).await;
    let (browser, address) = (&floor.browser, &floor.address);
    let moved: Vec<_> = floor.sim.free_agents().into_iter().take(8).collect();
    for agent in &moved {
        let target = if agent.state == "PAUSED" {
            "IDLE"
        } else {
            "PAUSED"
        };
        set_state(address, &agent.id, target).await;
    }
    let (team_id, team_name) = (moved[0].team_id.clone(), moved[0].team_name.clone());
    let members: Vec<String> = floor
        .sim
        .sim
        .agents()
        .into_iter()
        .filter(|a| a.team_id == team_id)
        .map(|a| a.id)
        .collect();
    // The roster (names and teams) is stored once the platform's agents were listed.
    let http = http_client();
    eventually(SLOW, "the team's report names the agent", async || {
        let text = http
            .get(format!("{address}/v1/reports/compliance"))
            .query(&[("team", team_name.as_str())])
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains(&moved[0].id).then_some(())
    })
    .await;

    let page = format!(
        "{address}/reports?team={}&tz=Europe/Berlin",
        team_name.replace(' ', "%20")
    );
    open(browser, &page).await;
    assert_accessible(browser, "/reports with a team's report").await;
    says(browser, "message", &format!("for team {team_name}")).await;

    // In the page: the team's table only, worst adherence first, each agent linked.
    let shown = run(
        browser,
        "return [...document.querySelectorAll('#report-tables .team-report')].map((s) => ({
           team: s.dataset.team,
           agents: [...s.querySelectorAll('tbody tr')].map((r) => r.dataset.agent),
           links: [...s.querySelectorAll('tbody tr a')].map((a) => a.getAttribute('href')),
           sorted: s.querySelector('th[aria-sort]').dataset.key + ' ' +
                   s.querySelector('th[aria-sort]').getAttribute('aria-sort'),
         }));",
        Value::Null,
    )
    .await;
    let sections = shown.as_array().unwrap();
    assert_eq!(sections.len(), 1, "one team: {shown}");
    assert_eq!(sections[0]["team"], team_id.as_str());
    assert_eq!(sections[0]["sorted"], "adherence_pct ascending");
    let agents: Vec<String> = serde_json::from_value(sections[0]["agents"].clone()).unwrap();
    assert!(agents.contains(&moved[0].id), "{shown}");
    assert!(agents.iter().all(|a| members.contains(a)), "{shown}");
    assert_eq!(
        sections[0]["links"][0],
        format!("/agents/{}", agents[0]).as_str()
    );

    // Downloaded in each format, for the team and the zone.
    let offered = downloads(browser).await;
    assert_eq!(offered.len(), 3);
    for (format, href) in &offered {
        assert!(href.contains("tz=Europe%2FBerlin"), "{href}");
        assert!(href.contains("team="), "{href}");
        let response = http.get(format!("{address}{href}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{href}");
        let media = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let expected = match format.as_str() {
            "csv" => "text/csv",
            "json" => "application/json",
            _ => "text/html",
        };
        assert!(media.starts_with(expected), "{format}: {media}");
        let body = response.text().await.unwrap();
        assert!(
            body.contains(moved[0].id.as_str()),
            "{format}: a row of the agent"
        );
        let other = floor
            .sim
            .sim
            .agents()
            .into_iter()
            .find(|a| a.team_id != team_id && moved.iter().any(|m| m.id == a.id));
        if let Some(other) = other {
            assert!(
                !body.contains(&format!("\"{}\"", other.id))
                    && !body.contains(&format!("{},", other.id)),
                "{format}: no row of another team's agent"
            );
        }
    }

    // Bad input is said, and nothing is asked: the downloads stay.
    type_into(browser, "tz", "Mars/Olympus").await;
    click(browser, "#window button[type=submit]").await;
    says(browser, "message", "no time zone Mars/Olympus").await;
    assert_eq!(downloads(browser).await, offered);
    type_into(browser, "tz", "Europe/Berlin").await;
    run(
        browser,
        "document.getElementById('q-from').value = '2026-11-20';
         document.getElementById('q-to').value = '2026-11-10';",
        Value::Null,
    )
    .await;
    click(browser, "#new-query button[type=submit]").await;
    says(browser, "q-message", "before the first").await;
    let jobs: Value = http
        .get(format!("{address}/v1/analytics/queries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs, json!([]), "no query was started");

    // A query started from the page: listed, followed, and charted with names.
    run(
        browser,
        "const day = (d) => d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' +
           String(d.getDate()).padStart(2, '0');
         const now = new Date();
         document.getElementById('q-from').value = day(new Date(now - 86400000));
         document.getElementById('q-to').value = day(now);
         document.getElementById('q-bucket').value = 'hour';",
        Value::Null,
    )
    .await;
    type_into(browser, "q-metric", "transitions:sum").await;
    type_into(browser, "q-dimension", "team").await;
    click(browser, "#new-query button[type=submit]").await;
    says(browser, "q-message", "completed").await;
    let titles = eventually(SLOW, "the chart is drawn", async || {
        let titles = run(
            browser,
            "return [...document.querySelectorAll('#chart svg g.series')].map((g) => g.dataset.title);",
            Value::Null,
        )
        .await;
        let titles: Vec<String> = serde_json::from_value(titles).ok()?;
        (!titles.is_empty()).then_some(titles)
    })
    .await;
    assert!(
        titles.contains(&format!("team {team_name} · transitions:sum")),
        "{titles:?}"
    );
    assert!(
        titles
            .iter()
            .all(|t| !t.contains(&format!("team {team_id} "))),
        "no series by id: {titles:?}"
    );
    let listed = run(
        browser,
        "return [...document.querySelectorAll('#jobs-body tr')].map((r) =>
           [r.dataset.status, [...r.querySelectorAll('a')].map((a) => a.dataset.format)]);",
        Value::Null,
    )
    .await;
    assert_eq!(listed, json!([["completed", ["csv", "json", "html"]]]));
    assert_accessible(browser, "/reports with a chart").await;
    floor.stop().await;
}
