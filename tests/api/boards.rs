//! Wall displays' boards (`[[boards]]`) in a real browser at 1920x1080 against wfmd on
//! the simulator's 200 agents: every screen of a board fits without scrolling, and
//! within one rotation every skill, queue and agent has been on screen; a board scoped
//! to a team shows only that team; an unknown board is said on the page. The first
//! screen is saved as `target/kiosk-board.png` (the README's `docs/kiosk-board.png`).

use std::collections::BTreeSet;
use std::time::Duration;

use fantoccini::Client;
use serde_json::{Value, json};
use wfmd::config::boards::BoardConfig;
use wfmd::sim::SimConfig;

use crate::console::docs_picture;
use crate::console::{Floor, assert_accessible, open};
use crate::helpers::{TestSim, get_json};
use crate::wallboard::{SLOW, eventually, run};

/// What the board shows now: its screen (`i/n`), the ids of its skills, queues and
/// agents, the state counts, and whether the document is taller or wider than the
/// window.
async fn on_screen(browser: &Client) -> Value {
    run(
        browser,
        "const ids = (attr) => [...document.querySelectorAll('#board-screen [data-' + attr + ']')]
           .map((e) => e.dataset[attr]);
         const page = document.documentElement;
         return { screen: document.body.dataset.boardScreen || null,
                  skills: ids('skill'), queues: ids('queue'), agents: ids('agent'),
                  counts: ids('count'), title: document.getElementById('board-title').textContent,
                  height: page.scrollHeight, width: page.scrollWidth,
                  viewport: [window.innerWidth, window.innerHeight] };",
        Value::Null,
    )
    .await
}

fn ids(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Makes the page's viewport 1920x1080 (the window's frame, if any, added).
async fn full_hd(browser: &Client) {
    browser.set_window_size(1920, 1080).await.unwrap();
    let inner = run(
        browser,
        "return [window.innerWidth, window.innerHeight];",
        Value::Null,
    )
    .await;
    let (w, h) = (inner[0].as_u64().unwrap(), inner[1].as_u64().unwrap());
    if (w, h) != (1920, 1080) {
        browser
            .set_window_size(1920 + (1920 - w as u32), 1080 + (1080 - h as u32))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_board_fits_each_screen_of_1920x1080_and_shows_everything_within_one_rotation() {
    // As `serve --simulate` runs it: 200 agents, 5 queues.
    let sim = TestSim::start(SimConfig {
        agents: 200,
        ..SimConfig::default()
    })
    .await;
    let team = sim.sim.agents()[0].team_name.clone();
    let floor = Floor::start(sim, |config| {
        config.boards = vec![
            BoardConfig {
                name: "floor".into(),
                rotate: Duration::from_secs(2),
                ..BoardConfig::default()
            },
            BoardConfig {
                name: "one-team".into(),
                teams: vec![team.to_lowercase()],
                pages: vec!["agents".into()],
                ..BoardConfig::default()
            },
        ];
    })
    .await;
    let (browser, address) = (&floor.browser, floor.address.clone());
    full_hd(browser).await;
    let live = eventually(SLOW, "wfmd has every figure", async || {
        let live = get_json(&format!("{address}/v1/live")).await;
        (!live["skills"].as_array()?.is_empty() && !live["queues"].as_array()?.is_empty())
            .then_some(live)
    })
    .await;
    let every = |list: &str, id: &str| -> BTreeSet<String> {
        live[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[id].as_str().unwrap().to_owned())
            .collect()
    };
    let (skills, queues, agents) = (
        every("skills", "skill_id"),
        every("queues", "queue_id"),
        every("agents", "id"),
    );
    assert!(
        skills.len() >= 7 && queues.len() == 5 && agents.len() == 200,
        "{} skills, {} queues, {} agents",
        skills.len(),
        queues.len(),
        agents.len()
    );

    open(browser, &format!("{address}/?kiosk=1&board=floor")).await;
    // Every screen of one rotation, each one measured.
    let mut seen = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut screens = BTreeSet::new();
    let mut total = 0;
    let mut too_big = Vec::new();
    let mut pictured = false;
    eventually(SLOW, "a whole rotation is seen", async || {
        let shown = on_screen(browser).await;
        let screen = shown["screen"].as_str()?.to_owned();
        let (index, of) = screen.split_once('/')?;
        total = of.parse::<usize>().ok()?;
        if shown["height"].as_u64()? > 1080 || shown["width"].as_u64()? > 1920 {
            too_big.push(shown.clone());
        }
        screens.insert(index.to_owned());
        if !pictured && index == "1" && !shown["skills"].as_array()?.is_empty() {
            let png = browser.screenshot().await.ok()?;
            std::fs::write(docs_picture("kiosk-board.png"), png).unwrap();
            pictured = true;
        }
        seen.0.extend(ids(&shown["skills"]));
        seen.1.extend(ids(&shown["queues"]));
        seen.2.extend(ids(&shown["agents"]));
        (screens.len() == total && seen.0 == skills && seen.1 == queues && seen.2 == agents)
            .then_some(())
    })
    .await;
    assert!(too_big.is_empty(), "screens that scroll: {too_big:#?}");
    // Skills, queues, agents (more than one screen of them) and adherence.
    assert!(total >= 4, "{total} screens");
    assert_accessible(browser, "a kiosk board").await;

    // A board of one team's agents: the team's alone, with the state counts.
    open(browser, &format!("{address}/?kiosk=1&board=one-team")).await;
    let theirs: BTreeSet<String> = live["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["team"] == json!(team))
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    eventually(SLOW, "the team's board shows its agents", async || {
        let shown = on_screen(browser).await;
        (ids(&shown["agents"]) == theirs && !ids(&shown["counts"]).is_empty()).then_some(())
    })
    .await;

    // An unknown board is said.
    open(browser, &format!("{address}/?kiosk=1&board=nowhere")).await;
    eventually(SLOW, "the page says there is no such board", async || {
        let shown = on_screen(browser).await;
        shown["title"]
            .as_str()?
            .contains("No board \"nowhere\"")
            .then_some(())
    })
    .await;
    floor.stop().await;
}
