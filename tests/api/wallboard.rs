//! The wallboard in a real browser: headless Chromium, driven through chromedriver with
//! fantoccini, against wfmd serving the simulator over real HTTP with a real SQLite
//! file. Chromium and chromedriver are installed with apt-get where they are missing.
//!
//! One test walks what a supervisor sees: the tiles carry the platform's figures, a
//! change made elsewhere shows at once, a restart shows as "reconnecting" and loses
//! nothing, a click on a card shows the agent's schedule against actual, a change
//! waiting for a contact to end shows on the card, "?" shows wfmd's definitions, a bulk
//! change and an authorisation started from the page reach wfmd, and without a
//! WebSocket the page keeps up over Server-Sent Events. It saves screenshots to
//! `target/wallboard.png` and `target/wallboard-day.png`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::TimeDelta;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::helpers::{
    TestDb, TestSim, eventually_within, free_port, http_client, install_when_missing, set_state_at,
    wfmd,
};
use crate::live::Served;

pub(crate) use crate::helpers::SLOW;

/// What the issue asks of a change made through the API: on the page within 2 s.
const PROMPT: Duration = Duration::from_secs(2);

/// chromedriver on a free port, in its own process group so that the browsers it starts
/// go with it (the compliance report's page is measured in it too).
pub(crate) struct Chromedriver {
    child: Child,
    url: String,
    /// The browser's profile, thrown away afterwards.
    profile: tempfile::TempDir,
}

impl Chromedriver {
    pub(crate) async fn start() -> Chromedriver {
        tokio::task::spawn_blocking(|| {
            install_when_missing("chromium", &["--version"], &["chromium"]);
            install_when_missing("chromedriver", &["--version"], &["chromium-driver"]);
        })
        .await
        .unwrap();
        let port = free_port();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts")
        };
        // Owned before the first await, so a failure below still stops it.
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: tempfile::tempdir().unwrap(),
        };
        let http = http_client();
        eventually(SLOW, "chromedriver answers /status", async || {
            let response = http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .ok()?;
            let status: Value = response.json().await.ok()?;
            (status["value"]["ready"] == true).then_some(())
        })
        .await;
        driver
    }

    /// A new headless browser session.
    pub(crate) async fn browser(&self) -> Client {
        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({"args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--window-size=1600,1400",
                format!("--user-data-dir={}", self.profile.path().display()),
            ]}),
        );
        // chromedriver listens on loopback: plain HTTP, no TLS stack to build.
        let browser = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session");
        // A script (axe-core over a page of 2,000 rows) may take longer than WebDriver's
        // 30 s on a loaded machine; it is a bound for a hung page, not a measure.
        browser
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(SLOW),
                Some(SLOW),
                None,
            ))
            .await
            .expect("the session's timeouts are set");
        browser
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser it left running.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// Calls `probe` until it gives a value, failing the test with `what` after `within`:
/// [`eventually_within`] for a probe that has nothing to tell when it fails.
pub(crate) async fn eventually<T>(
    within: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let what = format!("not within {within:?}: {what}");
    eventually_within(within, &what, async || {
        probe().await.ok_or_else(String::new)
    })
    .await
}

/// Runs `script` in the page; `arguments[0]` is `arg`.
pub(crate) async fn run(browser: &Client, script: &str, arg: Value) -> Value {
    browser
        .execute(script, vec![arg])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// The connection indicator: its state (`live`, `reconnecting`, `stale`) and text.
pub(crate) async fn connection(browser: &Client) -> (String, String) {
    let shown = run(
        browser,
        "const c = document.getElementById('conn'); return [c.dataset.state, c.textContent];",
        Value::Null,
    )
    .await;
    (
        shown[0].as_str().unwrap_or_default().to_owned(),
        shown[1].as_str().unwrap_or_default().to_owned(),
    )
}

/// The state an agent's card shows, `None` without a card.
pub(crate) async fn card_state(browser: &Client, agent: &str) -> Option<(String, String)> {
    let shown = run(
        browser,
        "const c = document.querySelector('.card[data-agent=\"' + arguments[0] + '\"]');
         return c && [c.querySelector('.state').textContent, c.querySelector('.reason').textContent];",
        json!(agent),
    )
    .await;
    Some((
        shown.get(0)?.as_str()?.to_owned(),
        shown.get(1)?.as_str()?.to_owned(),
    ))
}

/// Waits until the agent's card shows `state` (and `reason`, when given).
pub(crate) async fn card_shows(
    browser: &Client,
    within: Duration,
    agent: &str,
    state: &str,
    reason: &str,
) {
    let what = format!("not within {within:?}: {agent}'s card shows {state} {reason}");
    eventually_within(within, &what, async || {
        let shown = card_state(browser, agent).await;
        if let Some((shown, shown_reason)) = &shown
            && shown == state
            && (reason.is_empty() || shown_reason == reason)
        {
            return Ok(());
        }
        Err(format!("it shows {shown:?}"))
    })
    .await;
}

/// The page's tiles, as `{id: [big figure, small figures…]}` per family.
async fn tiles_on_page(browser: &Client) -> Value {
    run(
        browser,
        "const read = (sel, key) => Object.fromEntries([...document.querySelectorAll(sel)].map(
           (t) => [t.dataset[key], [t.querySelector('.sl').textContent,
                   ...[...t.querySelectorAll('.figures b')].map((b) => b.textContent)]]));
         return {skills: read('#skills .tile', 'skill'), queues: read('#queues .tile', 'queue')};",
        Value::Null,
    )
    .await
}

/// `m:ss` (or `h:mm:ss`), as the page writes durations.
fn mss(secs: f64) -> String {
    let secs = secs.max(0.0).floor() as u64;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

fn pct(service_level: &Value) -> String {
    service_level
        .as_f64()
        .map_or("–".to_owned(), |sl| format!("{}%", (sl * 100.0).round()))
}

/// The tiles `/v1/live` describes, in the page's words.
fn tiles_expected(snapshot: &Value) -> Value {
    let n = |v: &Value| v.as_u64().unwrap().to_string();
    let mut skills = serde_json::Map::new();
    for s in snapshot["skills"].as_array().unwrap() {
        skills.insert(
            s["skill_id"].as_str().unwrap().to_owned(),
            json!([
                pct(&s["service_level"]),
                n(&s["contacts_queued"]),
                mss(s["longest_wait_secs"].as_f64().unwrap()),
                format!("{}/{}", n(&s["agents_available"]), n(&s["agents_staffed"])),
            ]),
        );
    }
    let mut queues = serde_json::Map::new();
    for q in snapshot["queues"].as_array().unwrap() {
        let wait = q["average_wait_ms"]
            .as_f64()
            .map_or("–".to_owned(), |ms| mss(ms / 1000.0));
        queues.insert(
            q["queue_id"].as_str().unwrap().to_owned(),
            json!([
                n(&q["contacts_waiting"]),
                wait,
                pct(&q["service_level"]),
                format!(
                    "{}/{}",
                    n(&q["agents_available"]),
                    n(&q["agents_logged_on"])
                ),
            ]),
        );
    }
    json!({"skills": skills, "queues": queues})
}

/// Agents that keep a state set from outside for the next quarter hour: on shift
/// throughout, with no break coming. (A READY agent may be given a contact at any
/// moment; the test keeps its agents out of READY.)
pub(crate) fn quiet_agents(sim: &TestSim) -> Vec<wfmd::sim::SimAgent> {
    let now = sim.sim.clock().now();
    let later = now + TimeDelta::minutes(15);
    sim.agents_where(|a| {
        a.on_shift_at(now)
            && a.on_shift_at(later)
            && a.breaks.iter().all(|b| b.end <= now || b.start >= later)
            && a.state != "ON_CONTACT"
            && a.state != "ACW"
    })
}

/// Puts `agent` in `state` through the API.
pub(crate) async fn set_state(address: &str, agent: &str, state: &str) {
    let (status, body) = set_state_at(address, agent, state).await;
    assert_eq!(status, 200, "{body}");
}

async fn click(browser: &Client, css: &str) {
    // A card is drawn again on every event; a click that lands on one replaced in the
    // meantime is tried again.
    eventually(SLOW, &format!("click {css}"), async || {
        let element = browser.find(Locator::Css(css)).await.ok()?;
        element.click().await.ok()
    })
    .await;
}

/// Waits for the day dialog to show a drawing; returns what it shows: the agent, the
/// heading, the first span's start, each span's judgement and the figures' labels.
async fn open_day(browser: &Client) -> Value {
    eventually(SLOW, "the day dialog shows the drawing", async || {
        let shown = run(
            browser,
            "const d = document.getElementById('day');
             const spans = [...d.querySelectorAll('#day-body svg g[data-judged]')];
             const figures = [...d.querySelectorAll('#day-figures dt')];
             return d.open && spans.length && figures.length ? {
               agent: d.dataset.agent,
               heading: document.getElementById('h-day').textContent,
               from: spans[0].dataset.from,
               judged: spans.map((g) => g.dataset.judged),
               figures: figures.map((dt) => dt.textContent),
             } : null;",
            Value::Null,
        )
        .await;
        (!shown.is_null()).then_some(shown)
    })
    .await
}

async fn close_day(browser: &Client) {
    click(browser, "#day button[type=\"submit\"]").await;
    eventually(SLOW, "the day dialog closes", async || {
        let open = run(
            browser,
            "return document.getElementById('day').open;",
            Value::Null,
        )
        .await;
        (open == false).then_some(())
    })
    .await;
}

pub(crate) fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&target).unwrap();
    target.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallboard_in_a_real_browser_shows_the_floor_live_survives_a_restart_and_starts_bulk_jobs()
 {
    let sim = TestSim::default_tenant().await;
    // Seven agents that nothing but the test will move: NOT_READY on the platform before
    // wfmd starts (no contact reaches them), with no break or shift end coming.
    let quiet = quiet_agents(&sim);
    assert!(quiet.len() >= 7, "quiet agents: {}", quiet.len());
    let quiet = &quiet[..7];
    for agent in quiet {
        assert!(sim.sim.force_state(&agent.id, "NOT_READY", "TRAINING"));
    }
    let db = TestDb::new();
    let mut config = sim.config(&db.url());
    // As `serve --simulate` runs: the pollers fill the tiles, state sync the cards.
    config.live.enabled = true;
    config.live.skill_interval = Duration::from_secs(15);
    config.live.queue_interval = Duration::from_secs(15);
    config.sync.enabled = true;
    // A fixed port, so the page finds wfmd again where it was after the restart.
    config.server.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let first = Served::start(&config).await;
    let address = first.address.clone();
    let api = http_client();
    let live = async || -> Value {
        api.get(format!("{address}/v1/live"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("{address}/")).await.unwrap();
    eventually(SLOW, "the page says live", async || {
        (connection(&browser).await.0 == "live").then_some(())
    })
    .await;

    // The tiles carry the figures wfmd has from the platform (compared again until a
    // new sample does not fall between the two reads).
    let mut last = (Value::Null, Value::Null);
    let tiles = eventually(SLOW, "the tiles show /v1/live's figures", async || {
        let expected = tiles_expected(&live().await);
        let shown = tiles_on_page(&browser).await;
        last = (expected.clone(), shown.clone());
        let filled = !expected["skills"].as_object()?.is_empty()
            && !expected["queues"].as_object()?.is_empty();
        (filled && shown == expected).then_some(shown)
    })
    .await;
    assert!(
        tiles["skills"]
            .as_object()
            .unwrap()
            .values()
            .any(|t| t[3] != "0/0"),
        "some skill is staffed: {tiles} (last reads {last:?})"
    );

    // State sync's view of the platform is on the cards; a change made through the API
    // shows at once.
    let (moved, while_down, after_restart) = (&quiet[0], &quiet[1], &quiet[2]);
    card_shows(&browser, SLOW, &moved.id, "NOT_READY", "").await;
    set_state(&address, &moved.id, "PAUSED").await;
    card_shows(&browser, PROMPT, &moved.id, "PAUSED", "").await;

    // wfmd stops: the page says so, and tries again.
    first.stop().await;
    let (_, text) = eventually(SLOW, "the page says reconnecting", async || {
        let shown = connection(&browser).await;
        (shown.0 == "reconnecting").then_some(shown)
    })
    .await;
    assert!(text.contains("reconnecting"), "{text}");
    // A change made while it is down (by the CLI, into the same database)…
    let env = sim.env(&db.url());
    let id = while_down.id.clone();
    let output = tokio::task::spawn_blocking(move || {
        wfmd()
            .envs(env)
            .args(["transition", &id, "PAUSED"])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        output.status.success(),
        "wfmd transition: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // …and one just after the restart, likely before the page is back.
    let second = Served::start(&config).await;
    assert_eq!(second.address, address);
    set_state(&address, &after_restart.id, "PAUSED").await;
    // Backoff waits at most 30 s between tries: the page is back well within SLOW.
    eventually(SLOW, "the page is live again", async || {
        (connection(&browser).await.0 == "live").then_some(())
    })
    .await;
    card_shows(&browser, SLOW, &while_down.id, "PAUSED", "").await;
    card_shows(&browser, SLOW, &after_restart.id, "PAUSED", "").await;
    card_shows(&browser, PROMPT, &moved.id, "PAUSED", "").await;

    // A click on a card opens the agent's day: wfmd's drawing of the schedule against
    // the recorded states from the browser's midnight on, and the figures beside it.
    eventually(SLOW, "the book stores the agent's shift", async || {
        let url = format!("{address}/v1/agents/{}/adherence", moved.id);
        (api.get(url).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
    click(&browser, &format!(".card[data-agent=\"{}\"]", moved.id)).await;
    let day = open_day(&browser).await;
    let midnight = run(
        &browser,
        "const d = new Date(); d.setHours(0, 0, 0, 0); return d.toISOString();",
        Value::Null,
    )
    .await;
    assert_eq!(day["from"], midnight, "{day}");
    assert_eq!(day["agent"], moved.id.as_str());
    assert!(
        day["heading"].as_str().unwrap().ends_with(&moved.name),
        "{day}"
    );
    assert_eq!(day["figures"][0], "Adherence", "{day}");
    let png = browser.screenshot().await.unwrap();
    std::fs::write(artifact("wallboard-day.png"), png).unwrap();
    close_day(&browser).await;

    // A change asked to wait for a busy agent shows on the card until it is made.
    let busy = &quiet[6];
    assert!(sim.sim.force_state(&busy.id, "ON_CONTACT", ""));
    card_shows(&browser, SLOW, &busy.id, "ON_CONTACT", "").await;
    let response = api
        .post(format!("{address}/v1/agents/{}/transitions", busy.id))
        .json(&json!({"state": "NOT_READY", "reason": "MEETING", "when_busy": "defer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let waiting = async || {
        run(
            &browser,
            "const c = document.querySelector('.card[data-agent=\"' + arguments[0] + '\"]');
             const d = c && c.querySelector('.deferred');
             return d && d.textContent;",
            json!(busy.id),
        )
        .await
    };
    eventually(PROMPT, "the card shows the waiting change", async || {
        (waiting().await == "next: NOT_READY").then_some(())
    })
    .await;
    assert!(sim.sim.force_state(&busy.id, "READY", "TEST_END"));
    card_shows(&browser, SLOW, &busy.id, "NOT_READY", "MEETING").await;
    eventually(PROMPT, "the made change's badge goes", async || {
        waiting().await.is_null().then_some(())
    })
    .await;

    // "?" says what the numbers mean, in wfmd's words: every term and every skill tile.
    let definitions: Value = api
        .get(format!("{address}/v1/reports/definitions?report=wallboard"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    click(&browser, "#definitions-toggle").await;
    let shown = eventually(SLOW, "the definitions dialog is filled", async || {
        let shown = run(
            &browser,
            "const d = document.getElementById('definitions');
             const terms = [...d.querySelectorAll('dt')].map((t) => t.firstChild.textContent);
             const skills = [...d.querySelectorAll('tr[data-skill]')].map((r) => r.dataset.skill);
             return d.open && terms.length ? {terms, skills} : null;",
            Value::Null,
        )
        .await;
        (!shown.is_null()).then_some(shown)
    })
    .await;
    let mut terms: Vec<&str> = definitions["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    terms.extend(["Adherence rules", "Time zone"]);
    assert_eq!(shown["terms"], json!(terms));
    let skills: Vec<&str> = definitions["service_levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["skill_id"].as_str().unwrap())
        .collect();
    assert!(!skills.is_empty(), "{definitions}");
    let on_page: Vec<&str> = shown["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(on_page, skills, "in wfmd's order: by skill name");
    click(&browser, "#definitions button[type=\"submit\"]").await;

    // Supervisor mode: select three agents, pick a state and reason, start.
    let chosen = &quiet[3..6];
    click(&browser, "#supervisor-toggle").await;
    for agent in chosen {
        click(&browser, &format!(".card[data-agent=\"{}\"]", agent.id)).await;
    }
    let selection = browser
        .find(Locator::Id("selection"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(selection, "3 selected");
    browser
        .find(Locator::Id("bulk-state"))
        .await
        .unwrap()
        .select_by_label("PAUSED")
        .await
        .unwrap();
    browser
        .find(Locator::Id("bulk-reason"))
        .await
        .unwrap()
        .send_keys("MEETING")
        .await
        .unwrap();
    click(&browser, "#bulk-start").await;
    // The simulator's agents move…
    eventually(
        SLOW,
        "the bulk job moves the simulator's agents",
        async || {
            chosen
                .iter()
                .all(|a| {
                    let now = sim.sim.agent(&a.id).unwrap();
                    now.state == "PAUSED" && now.reason == "MEETING"
                })
                .then_some(())
        },
    )
    .await;
    // …the job is wfmd's, done, and its progress reached the page.
    let job_id = eventually(SLOW, "the page shows the job completed", async || {
        let shown = run(
            &browser,
            "const j = document.querySelector('.job[data-status=\"completed\"]');
             return j && [j.dataset.job, j.querySelector('.job-figures').textContent];",
            Value::Null,
        )
        .await;
        let figures = shown.get(1)?.as_str()?;
        figures
            .contains("3/3 · ok 3")
            .then(|| shown[0].as_str().unwrap().to_owned())
    })
    .await;
    let job: Value = api
        .get(format!("{address}/v1/bulk-transitions/{job_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["total"], 3, "{job}");
    for agent in chosen {
        card_shows(&browser, SLOW, &agent.id, "PAUSED", "MEETING").await;
    }

    // Authorise two of them for 45 minutes from now, with a reason.
    for agent in &chosen[..2] {
        click(&browser, &format!(".card[data-agent=\"{}\"]", agent.id)).await;
    }
    let minutes = browser.find(Locator::Id("auth-minutes")).await.unwrap();
    minutes.clear().await.unwrap();
    minutes.send_keys("45").await.unwrap();
    browser
        .find(Locator::Id("auth-reason"))
        .await
        .unwrap()
        .send_keys("coaching session")
        .await
        .unwrap();
    click(&browser, "#auth-start").await;
    eventually(
        SLOW,
        "the page says the agents are authorised",
        async || {
            let shown = run(
                &browser,
                "return document.getElementById('auth-result').textContent;",
                Value::Null,
            )
            .await;
            shown
                .as_str()?
                .starts_with("authorised 2 agent(s) until")
                .then_some(())
        },
    )
    .await;
    let listed: Value = api
        .get(format!("{address}/v1/adherence/authorisations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let authorisation = &listed["authorisations"][0];
    let mut expected: Vec<&str> = chosen[..2].iter().map(|a| a.id.as_str()).collect();
    expected.sort();
    assert_eq!(authorisation["agents"], json!(expected), "{listed}");
    assert_eq!(authorisation["reason"], "coaching session");
    let span = wfmd::time::parse_instant(authorisation["to"].as_str().unwrap()).unwrap()
        - wfmd::time::parse_instant(authorisation["from"].as_str().unwrap()).unwrap();
    assert_eq!(span.num_minutes(), 45, "{authorisation}");
    // In supervisor mode a click selects; the card's "day" button opens the day, where
    // the time authorised since shows as such, and the selection stays as it was.
    let selected = run(&browser, "return S.selected.size;", Value::Null).await;
    click(
        &browser,
        &format!(".card[data-agent=\"{}\"] .day-open", chosen[0].id),
    )
    .await;
    let day = open_day(&browser).await;
    assert_eq!(day["agent"], chosen[0].id.as_str());
    assert!(
        day["judged"]
            .as_array()
            .unwrap()
            .contains(&json!("authorised")),
        "{day}"
    );
    close_day(&browser).await;
    assert_eq!(
        run(&browser, "return S.selected.size;", Value::Null).await,
        selected
    );

    // Where no WebSocket can be opened (a proxy in the way), the page falls back to
    // Server-Sent Events and stays just as current.
    run(
        &browser,
        "window.WebSocket = function () { throw new Error('no WebSocket here'); };
         S.socket.close();",
        Value::Null,
    )
    .await;
    eventually(SLOW, "the page is live over Server-Sent Events", async || {
        let shown = run(
            &browser,
            "return [document.getElementById('conn').dataset.state, S.sse !== null, S.socket === null];",
            Value::Null,
        )
        .await;
        (shown == json!(["live", true, true])).then_some(())
    })
    .await;
    set_state(&address, &moved.id, "NOT_READY").await;
    card_shows(&browser, PROMPT, &moved.id, "NOT_READY", "").await;

    // The top of the board (the clicks scrolled down to the cards).
    run(&browser, "window.scrollTo(0, 0);", Value::Null).await;
    let png = browser.screenshot().await.unwrap();
    std::fs::write(artifact("wallboard.png"), png).unwrap();

    // Kiosk mode: the same board without the controls.
    browser.goto(&format!("{address}/?kiosk=1")).await.unwrap();
    eventually(SLOW, "the kiosk page says live", async || {
        (connection(&browser).await.0 == "live").then_some(())
    })
    .await;
    let toggle = browser
        .find(Locator::Id("supervisor-toggle"))
        .await
        .unwrap();
    assert!(
        !toggle.is_displayed().await.unwrap(),
        "kiosk mode hides the controls"
    );

    browser.close().await.unwrap();
    second.stop().await;
}
