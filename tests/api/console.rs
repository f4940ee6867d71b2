//! The supervisor console's pages: served at every address with their own content
//! policy and the caller's role, and in a real browser (headless Chromium through
//! chromedriver, as `wallboard.rs` drives it) against wfmd serving the simulator:
//! signing in, the real-time adherence list, changing a state from the page now or when
//! the call ends and cancelling the waiting change, bulk jobs created, cancelled and
//! reverted from `/jobs`, an exception excused from `/exceptions` and then counted as
//! authorised by the compliance report, a past range authorised from the agent page
//! (listed, withdrawn) and a team's from `/exceptions`, and axe-core finding no serious
//! or critical violation on any page. The RTA test writes `target/rta.png` (the README's `docs/rta.png`).

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::auth::{As, role_entries, spawn_with_roles};
use crate::helpers::{TestApp, TestDb, TestSim, get_json, http_client};
use crate::live::Served;
use crate::wallboard::{Chromedriver, SLOW, artifact, eventually, quiet_agents, run, set_state};

/// axe-core, as vendored under `tests/support/axe-core/` (see its README).
const AXE: &str = include_str!("../support/axe-core/axe.min.js");
const AXE_VERSION: &str = "4.14.1";

/// Every page of the console at its single-tenant address.
const PAGES: [&str; 9] = [
    "/",
    "/rta",
    "/agents/u_001",
    "/jobs",
    "/exceptions",
    "/reports",
    "/sign-in",
    "/sign-out",
    "/t/default/rta",
];

/// The attribute `name` of the page's `<body>`.
fn body_attribute(page: &str, name: &str) -> String {
    let body = &page[page.find("<body").expect("a body")..];
    let body = &body[..body.find('>').unwrap()];
    let start = body
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + name.len()
        + 2;
    body[start..][..body[start..].find('"').unwrap()].to_owned()
}

async fn page_as(app: &TestApp, path: &str, who: As) -> (reqwest::header::HeaderMap, String) {
    let mut request = app.http.get(format!("{}{path}", app.address));
    if let Some(token) = who.token() {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let headers = response.headers().clone();
    (headers, response.text().await.unwrap())
}

#[tokio::test]
async fn every_page_is_served_with_its_own_policy_and_the_role_its_request_proves() {
    let open = TestApp::spawn().await;
    let mut policies = std::collections::BTreeSet::new();
    for path in PAGES {
        let (headers, page) = page_as(&open, path, As::Nobody).await;
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'sha256-"), "{path}: {policy}");
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        policies.insert(policy.to_owned());
        // Without tokens every caller is the local admin, and nobody signs in.
        assert_eq!(body_attribute(&page, "data-role"), "admin", "{path}");
        assert_eq!(body_attribute(&page, "data-auth"), "open", "{path}");
        let tenant = body_attribute(&page, "data-tenant");
        let root = body_attribute(&page, "data-root");
        if path.starts_with("/t/") {
            assert_eq!((tenant.as_str(), root.as_str()), ("default", "/t/default"));
            assert!(page.contains("href=\"/t/default/jobs\""), "{path}");
        } else {
            assert_eq!((tenant.as_str(), root.as_str()), ("", ""));
            assert!(page.contains("href=\"/jobs\""), "{path}");
        }
    }
    // /rta and /t/default/rta are the same page; sign-in and sign-out too.
    assert_eq!(policies.len(), PAGES.len() - 2, "{policies:#?}");
    open.stop().await;

    // With tokens the page says the role of the caller its request proves, and none
    // for a caller it does not know (whom the page sends to sign in).
    let app = spawn_with_roles().await;
    for path in PAGES {
        for (who, role) in [
            (As::Nobody, ""),
            (As::WrongToken, ""),
            (As::Viewer, "viewer"),
            (As::Supervisor, "supervisor"),
            (As::Admin, "admin"),
        ] {
            let (_, page) = page_as(&app, path, who).await;
            assert_eq!(body_attribute(&page, "data-role"), role, "{path} {who:?}");
            assert_eq!(body_attribute(&page, "data-auth"), "tokens", "{path}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn an_agent_page_for_an_id_no_agent_could_have_is_not_served() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(200);
    for path in [
        "/agents/a%20b".to_owned(),
        format!("/agents/{long}"),
        "/t/default/agents/a%20b".to_owned(),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 404, "{path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:wfmd:problem:no-such-route", "{path}");
    }
    app.stop().await;
}

/// A browser on wfmd serving the simulator as `serve --simulate` does (state sync and
/// the live figures on).
pub(crate) struct Floor {
    pub(crate) sim: TestSim,
    served: Served,
    pub(crate) address: String,
    pub(crate) browser: Client,
    /// Kept until the test ends: the browser's process and wfmd's database.
    _driver: Chromedriver,
    _db: TestDb,
}

impl Floor {
    /// wfmd on `sim` (prepared by the test), its configuration `adjust`ed first, and a
    /// browser.
    pub(crate) async fn start(
        sim: TestSim,
        adjust: impl FnOnce(&mut wfmd::config::Config),
    ) -> Floor {
        Floor::start_on(sim, TestDb::new(), adjust).await
    }

    /// As [`Floor::start`], on `db` (which the test may have filled first).
    pub(crate) async fn start_on(
        sim: TestSim,
        db: TestDb,
        adjust: impl FnOnce(&mut wfmd::config::Config),
    ) -> Floor {
        let mut config = sim.config(&db.url());
        config.live.enabled = true;
        config.sync.enabled = true;
        adjust(&mut config);
        let served = Served::start(&config).await;
        let driver = Chromedriver::start().await;
        let browser = driver.browser().await;
        Floor {
            sim,
            address: served.address.clone(),
            served,
            browser,
            _driver: driver,
            _db: db,
        }
    }

    /// A [`Floor`] where one agent that nothing else moves is on a call (so a change
    /// now is refused, and one for when the call ends waits): that agent.
    async fn with_one_on_a_call() -> (Floor, wfmd::sim::SimAgent) {
        let sim = TestSim::default_tenant().await;
        let agent = quiet_agents(&sim).remove(0);
        assert!(sim.sim.force_state(&agent.id, "ON_CONTACT", ""));
        (Floor::start(sim, |_| {}).await, agent)
    }

    pub(crate) async fn stop(self) {
        self.browser.close().await.unwrap();
        self.served.stop().await;
    }
}

/// Where a picture the README shows is written by the test run: `target/{name}`, as the
/// wallboard's; copied into `docs/` by hand when the pages change (a test that wrote
/// into `docs/` would change tracked files at every run).
pub(crate) fn docs_picture(name: &str) -> std::path::PathBuf {
    crate::wallboard::artifact(name)
}

/// Opens `url` and waits until its page has drawn what it first loaded.
pub(crate) async fn open(browser: &Client, url: &str) {
    browser.goto(url).await.unwrap();
    drawn(browser, url).await;
}

/// Waits until the page shown (`what`) has drawn what it first loaded.
async fn drawn(browser: &Client, what: &str) {
    eventually(SLOW, &format!("{what} is drawn"), async || {
        // Asked while a navigation may still be under way: until the new document has
        // a body, it is not drawn yet.
        let ready = run(
            browser,
            "return (document.body && document.body.dataset.ready) || null;",
            Value::Null,
        )
        .await;
        (ready == "1").then_some(())
    })
    .await;
}

/// The serious and critical violations axe-core finds in the page shown, each as
/// `rule: help` with the elements concerned.
async fn accessibility_violations(browser: &Client) -> Vec<String> {
    let version = run(
        browser,
        &format!("{AXE}\n;return axe.version;"),
        Value::Null,
    )
    .await;
    assert_eq!(version, AXE_VERSION);
    let found = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] })
               .then((r) => done(r.violations
                 .filter((v) => v.impact === 'serious' || v.impact === 'critical')
                 .map((v) => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
                   v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ' [' + n.failureSummary + ']').join('; '))))
               .catch((e) => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .expect("axe runs");
    serde_json::from_value(found).unwrap()
}

/// Asserts that axe-core finds no serious or critical violation in the page shown.
pub(crate) async fn assert_accessible(browser: &Client, what: &str) {
    let violations = accessibility_violations(browser).await;
    assert!(
        violations.is_empty(),
        "{what}: axe-core finds {} serious or critical violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_of_the_console_is_accessible_by_axe_core() {
    let sim = TestSim::default_tenant().await;
    let floor = Floor::start(sim, |_| {}).await;
    let (browser, address) = (&floor.browser, &floor.address);
    let sim = &floor.sim;
    let agent = &sim.free_agents()[0];
    for path in [
        "/".to_owned(),
        "/rta".to_owned(),
        format!("/agents/{}", agent.id),
        "/jobs".to_owned(),
        "/exceptions".to_owned(),
        "/reports".to_owned(),
        "/sign-in".to_owned(),
    ] {
        open(browser, &format!("{address}{path}")).await;
        assert_accessible(browser, &path).await;
    }
    floor.stop().await;
}

/// The path and query the browser shows.
async fn location(browser: &Client) -> String {
    let url = browser.current_url().await.unwrap();
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Waits until the browser shows `path_and_query` (and the page there is drawn).
async fn arrives(browser: &Client, path_and_query: &str) {
    eventually(
        SLOW,
        &format!("the browser arrives at {path_and_query}"),
        async || (location(browser).await == path_and_query).then_some(()),
    )
    .await;
    drawn(browser, path_and_query).await;
}

/// Types `text` into the field `id` (emptied first).
pub(crate) async fn type_into(browser: &Client, id: &str, text: &str) {
    let field = browser.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

pub(crate) async fn click(browser: &Client, css: &str) {
    eventually(SLOW, &format!("click {css}"), async || {
        let element = browser.find(Locator::Css(css)).await.ok()?;
        element.click().await.ok()
    })
    .await;
}

/// The text of the element `id`.
async fn text_of(browser: &Client, id: &str) -> String {
    let shown = run(
        browser,
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : null;",
        json!(id),
    )
    .await;
    shown.as_str().unwrap_or_default().to_owned()
}

/// Waits until the element `id` says `words` (among others).
pub(crate) async fn says(browser: &Client, id: &str, words: &str) {
    eventually(SLOW, &format!("#{id} says {words}"), async || {
        text_of(browser, id).await.contains(words).then_some(())
    })
    .await;
}

/// Picks `value` in the select `id`.
async fn select(browser: &Client, id: &str, value: &str) {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

/// Clicks the Cancel of the waiting change `css` names, and waits for the message
/// element `id` to say it is cancelled.
async fn cancel_waiting(browser: &Client, css: &str, id: &str) {
    click(browser, css).await;
    eventually(
        SLOW,
        "the page says the waiting change is cancelled",
        async || {
            text_of(browser, id)
                .await
                .contains("cancelled")
                .then_some(())
        },
    )
    .await;
}

/// The status of GET …/agents/{agent}/deferred: 200 while a change waits, 404 when none.
async fn deferred_status(address: &str, agent: &str) -> u16 {
    http_client()
        .get(format!("{address}/v1/agents/{agent}/deferred"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Signs in on the sign-in page shown with `token`.
async fn sign_in(browser: &Client, token: &str) {
    type_into(browser, "token", token).await;
    click(browser, "#sign-in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_sign_in_page_says_nobody_signs_in_and_leads_on() {
    let sim = TestSim::default_tenant().await;
    let floor = Floor::start(sim, |_| {}).await;
    let (browser, address) = (&floor.browser, &floor.address);
    open(browser, &format!("{address}/sign-in?next=%2Fjobs")).await;
    let shown = run(
        browser,
        "return [document.getElementById('no-sign-in').hidden,
                 document.getElementById('signing-in').hidden,
                 document.getElementById('go-on').getAttribute('href')];",
        Value::Null,
    )
    .await;
    assert_eq!(shown, json!([false, true, "/jobs"]));
    // A `next` off this site is not followed.
    for next in [
        "https%3A%2F%2Fevil.example%2F",
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
    ] {
        open(browser, &format!("{address}/sign-in?next={next}")).await;
        let href = run(
            browser,
            "return document.getElementById('go-on').getAttribute('href');",
            Value::Null,
        )
        .await;
        assert_eq!(href, "/", "next={next}");
    }
    floor.stop().await;
}

// needs h/capi: POST and DELETE /v1/session, and sessions recognised on every route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_a_page_goes_to_sign_in_and_back_keeps_no_token_and_a_viewer_sees_no_action() {
    let sim = TestSim::default_tenant().await;
    let floor = Floor::start(sim, |config| config.api_tokens = role_entries()).await;
    let (browser, address) = (&floor.browser, &floor.address);

    // Not signed in: the page sends the browser to sign in, saying where it was.
    browser
        .goto(&format!("{address}/jobs?job=job_x"))
        .await
        .unwrap();
    arrives(browser, "/sign-in?next=%2Fjobs%3Fjob%3Djob_x").await;
    assert_accessible(browser, "/sign-in").await;

    // A wrong token is refused in the page, which stays.
    sign_in(browser, "wfmd_not-a-configured-token").await;
    says(browser, "sign-in-message", "not accepted").await;
    let left = run(
        browser,
        "return document.getElementById('token').value;",
        Value::Null,
    )
    .await;
    assert_eq!(left, "", "the field is emptied");

    // The supervisor's token: back to the page, as a supervisor, with the session in
    // an HttpOnly, SameSite=Strict cookie and the token nowhere in the page.
    let token = As::Supervisor.token().unwrap();
    sign_in(browser, token).await;
    arrives(browser, "/jobs?job=job_x").await;
    let role = run(browser, "return document.body.dataset.role;", Value::Null).await;
    assert_eq!(role, "supervisor");
    let cookie = browser.get_named_cookie("wfmd_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()),
        Some("Strict".to_owned()),
        "{cookie}"
    );
    let kept = run(
        browser,
        "return [localStorage.length, sessionStorage.length, document.cookie.includes('wfmd_session'),
                 document.documentElement.outerHTML.includes(arguments[0])];",
        json!(token),
    )
    .await;
    assert_eq!(kept, json!([0, 0, false, false]));
    let actions_shown = async || {
        run(
            browser,
            "return [...document.querySelectorAll('.action')].some((e) => e.offsetParent !== null);",
            Value::Null,
        )
        .await
    };
    assert_eq!(
        actions_shown().await,
        true,
        "a supervisor's page offers actions"
    );

    // The session ends on the server (as when it expires): the page's next request
    // goes to sign in, and back.
    let session = format!("wfmd_session={}", cookie.value());
    let ended = http_client()
        .delete(format!("{address}/v1/session"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
    browser.goto(&format!("{address}/rta")).await.unwrap();
    arrives(browser, "/sign-in?next=%2Frta").await;
    sign_in(browser, As::Viewer.token().unwrap()).await;
    arrives(browser, "/rta").await;
    assert_eq!(
        run(browser, "return document.body.dataset.role;", Value::Null).await,
        "viewer"
    );
    assert_eq!(
        actions_shown().await,
        false,
        "a viewer's page offers no action"
    );

    // Signing out ends the session: the next page goes to sign in again.
    click(browser, "#sign-out").await;
    arrives(browser, "/sign-out").await;
    says(browser, "signed-out-message", "signed out").await;
    browser.goto(&format!("{address}/rta")).await.unwrap();
    arrives(browser, "/sign-in?next=%2Frta").await;
    floor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_a_page_without_a_session_goes_to_sign_in_saying_where_it_was() {
    let sim = TestSim::default_tenant().await;
    let floor = Floor::start(sim, |config| config.api_tokens = role_entries()).await;
    let (browser, address) = (&floor.browser, &floor.address);
    for (page, back) in [
        ("/?kiosk=1", "%2F%3Fkiosk%3D1"),
        ("/t/default/", "%2Ft%2Fdefault%2F"),
    ] {
        browser.goto(&format!("{address}{page}")).await.unwrap();
        let sign_in = if page.starts_with("/t/") {
            "/t/default/sign-in"
        } else {
            "/sign-in"
        };
        arrives(browser, &format!("{sign_in}?next={back}")).await;
        let shown = run(
            browser,
            "return [document.getElementById('signing-in').hidden,
                     document.body.dataset.role, document.activeElement.id];",
            Value::Null,
        )
        .await;
        assert_eq!(shown, json!([false, "", "token"]), "{page}");
    }
    floor.stop().await;
}

/// The agents the RTA list shows, top to bottom (hidden rows left out).
async fn rta_order(browser: &Client) -> Vec<String> {
    let ids = run(
        browser,
        "return [...document.querySelectorAll('#rows .rta-row')].filter((tr) => !tr.hidden)
                .map((tr) => tr.dataset.agent);",
        Value::Null,
    )
    .await;
    serde_json::from_value(ids).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rta_list_draws_2000_rows_out_first_and_moves_only_the_row_that_changes() {
    let sim = TestSim::default_tenant().await;
    let floor = Floor::start(sim, |_| {}).await;
    let (browser, address) = (&floor.browser, &floor.address);
    open(browser, &format!("{address}/rta")).await;

    // 2,000 rows as GET …/adherence/now gives them: ten out of adherence (a0005 the
    // longest), one of them severe, the rest in.
    let drawn = run(
        browser,
        "const now = Date.now();
         const rows = [];
         for (let i = 0; i < 2000; i++) {
           const id = 'a' + String(i).padStart(4, '0');
           const out = i % 200 === 5;
           rows.push({ id, name: 'Agent ' + String(1999 - i).padStart(4, '0'), team_id: 't_' + (i % 3),
             team: 'Team ' + (i % 3), state: out ? 'NOT_READY' : 'READY', reason: null,
             since: new Date(now - 600000).toISOString(), scheduled: 'Work',
             verdict: out ? 'out' : 'in', out_since: out ? new Date(now - 60000 * (5 + i / 200)).toISOString() : null,
             severe: i === 1805, exception_id: null, adherence_pct_today: 90 });
         }
         R.rows = new Map(rows.map((r) => [r.id, r]));
         drawAll();
         return document.querySelectorAll('#rows .rta-row').length;",
        Value::Null,
    )
    .await;
    // How fast they are drawn is benches/console.rs's figure, not a test's.
    assert_eq!(drawn, 2000);

    // Out of adherence first, longest out first; then by name.
    let out: Vec<String> = (0..10)
        .rev()
        .map(|k| format!("a{:04}", k * 200 + 5))
        .collect();
    let order = rta_order(browser).await;
    assert_eq!(order[..10], out[..], "out first, longest out first");
    assert_eq!(order[10], "a1999", "then by name: Agent 0000 is a1999");
    let severe = run(
        browser,
        "return document.querySelector('#rows .rta-row[data-agent=\"a1805\"] .severe-mark').textContent;",
        Value::Null,
    )
    .await;
    assert_eq!(severe, "SEVERE", "severe is written, not only coloured");

    // An agent goes out, longer than anyone: its row moves to the top, the rest stay,
    // and only that row is touched (the others keep their elements).
    let moved = run(
        browser,
        "for (const tr of document.querySelectorAll('#rows .rta-row')) tr.dataset.mark = '1';
         const row = Object.assign({}, R.rows.get('a0100'), { verdict: 'out', state: 'PAUSED',
           out_since: new Date(Date.now() - 3600000).toISOString() });
         handle({ type: 'adherence.changed', data: row });
         const trs = [...document.querySelectorAll('#rows .rta-row')];
         return [trs.length, trs.filter((tr) => tr.dataset.mark !== '1').length,
                 trs[0].dataset.agent, trs[0].querySelector('.num').textContent,
                 trs[0].classList.contains('out')];",
        Value::Null,
    )
    .await;
    assert_eq!(moved, json!([2000, 0, "a0100", "1:00:00", true]), "{moved}");
    let order = rta_order(browser).await;
    assert_eq!(order[1..11], out[..], "{:?}", &order[..12]);
    // Back in adherence: it leaves the top for its place by name.
    run(
        browser,
        "handle({ type: 'adherence.changed', data: Object.assign({}, R.rows.get('a0100'),
           { verdict: 'in', out_since: null }) });",
        Value::Null,
    )
    .await;
    let order = rta_order(browser).await;
    assert_eq!(order[..10], out[..]);
    let at = order.iter().position(|id| id == "a0100").unwrap();
    assert_eq!(
        order[at - 1],
        "a0101",
        "by name: Agent 1898 before Agent 1899"
    );

    // The filters hide rows and live in the URL.
    select(browser, "verdict", "out").await;
    assert_eq!(rta_order(browser).await, out);
    assert_accessible(browser, "/rta, ten rows out of adherence").await;
    let png = browser.screenshot().await.unwrap();
    std::fs::write(artifact("console-rta-filtered.png"), png).unwrap();
    type_into(browser, "q", "agent 19").await;
    let shown = rta_order(browser).await;
    assert_eq!(shown, ["a0005"], "out and named Agent 19..");
    assert_eq!(location(browser).await, "/rta?verdict=out&q=agent+19");
    // A shared link opens with its filters set; an unknown verdict says so.
    open(
        browser,
        &format!("{address}/rta?team=t_2&verdict=severe&q=x"),
    )
    .await;
    let controls = run(
        browser,
        "return ['team', 'verdict', 'q'].map((id) => document.getElementById(id).value);",
        Value::Null,
    )
    .await;
    assert_eq!(controls, json!(["t_2", "severe", "x"]));
    open(browser, &format!("{address}/rta?verdict=sideways")).await;
    let said = text_of(browser, "filter-message").await;
    assert!(said.contains("Unknown verdict filter"), "{said}");
    floor.stop().await;
}

/// The out-of-adherence agents GET /v1/adherence/now lists, longest out first.
async fn out_by_the_api(address: &str) -> Vec<String> {
    let now = get_json(&format!("{address}/v1/adherence/now")).await;
    let mut out: Vec<(String, String, String)> = now["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["verdict"] == "out")
        .map(|a| {
            (
                a["out_since"].as_str().unwrap_or_default().to_owned(),
                a["name"].as_str().unwrap_or_default().to_owned(),
                a["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, _, id)| id).collect()
}

/// The agents the RTA page marks out of adherence, top to bottom.
async fn out_on_page(browser: &Client) -> Vec<String> {
    let ids = run(
        browser,
        "return [...document.querySelectorAll('#rows .rta-row.out')].map((r) => r.dataset.agent);",
        Value::Null,
    )
    .await;
    serde_json::from_value(ids).unwrap()
}

// needs h/capi: GET /v1/adherence/now and /v1/adherence/summary, `adherence.changed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rta_page_lists_out_of_adherence_first_as_the_api_judges_and_follows_the_feed() {
    let sim = TestSim::default_tenant().await;
    // Agents nothing but the test moves: NOT_READY at work, so out of adherence.
    let quiet = quiet_agents(&sim);
    assert!(quiet.len() >= 2, "quiet agents: {}", quiet.len());
    for agent in &quiet[..2] {
        assert!(sim.sim.force_state(&agent.id, "NOT_READY", "TRAINING"));
    }
    let floor = Floor::start(sim, |config| {
        config.compliance.sweep_interval = Duration::from_secs(1);
        config.compliance.exception_threshold = Duration::from_secs(1);
    })
    .await;
    let (browser, address) = (&floor.browser, &floor.address);
    open(browser, &format!("{address}/rta")).await;

    // The page's out-of-adherence rows are the API's, longest out first.
    let mut last = (Vec::new(), Vec::new());
    eventually(
        SLOW,
        "the page lists who is out as the API does",
        async || {
            let (api, page) = (out_by_the_api(address).await, out_on_page(browser).await);
            last = (api.clone(), page.clone());
            (api.len() >= 2 && api == page).then_some(())
        },
    )
    .await;
    let (mover, _) = (&quiet[0], &quiet[1]);
    assert!(last.0.contains(&mover.id), "{last:?}");
    // The summary's four periods.
    let periods = run(
        browser,
        "return [...document.querySelectorAll('#summary .widget')].map((w) => w.dataset.period);",
        Value::Null,
    )
    .await;
    assert_eq!(
        periods,
        json!(["today", "yesterday", "week_to_date", "month_to_date"])
    );
    // The README's picture of the page, out of adherence first.
    browser.set_window_size(1600, 900).await.unwrap();
    let png = browser.screenshot().await.unwrap();
    std::fs::write(docs_picture("rta.png"), png).unwrap();

    // Back to work: its row leaves the out group, live, without a reload.
    set_state(address, &mover.id, "READY").await;
    eventually(SLOW, "the agent's row leaves the out group", async || {
        (!out_on_page(browser).await.contains(&mover.id)).then_some(())
    })
    .await;
    // Out again: it is the newest out, so the last of them.
    set_state(address, &mover.id, "PAUSED").await;
    eventually(
        SLOW,
        "the agent is out again, last of the out",
        async || (out_on_page(browser).await.last() == Some(&mover.id)).then_some(()),
    )
    .await;

    // The verdict filter shows exactly those out; the team filter only its team.
    select(browser, "verdict", "out").await;
    let shown = rta_order(browser).await;
    assert_eq!(shown, out_on_page(browser).await);
    assert_accessible(browser, "/rta, out of adherence").await;
    let team = mover.team_id.clone();
    select(browser, "team", &team).await;
    assert_eq!(
        location(browser).await,
        format!("/rta?team={team}&verdict=out")
    );
    let teams = run(
        browser,
        "return [...document.querySelectorAll('#rows .rta-row')].filter((r) => !r.hidden)
           .map((r) => R.rows.get(r.dataset.agent).team_id);",
        Value::Null,
    )
    .await;
    assert!(
        teams.as_array().unwrap().iter().all(|t| *t == json!(team)),
        "{teams}"
    );
    floor.stop().await;
}

/// What the act dialog answered, once it answered.
async fn act_answer(browser: &Client) -> String {
    eventually(SLOW, "the dialog shows the answer", async || {
        let text = text_of(browser, "act-answer").await;
        (!text.is_empty() && text != "sending…").then_some(text)
    })
    .await
}

/// The computed background colours of the legend's swatches of `class`.
async fn swatch_colours(browser: &Client, class: &str) -> Vec<String> {
    let colours = run(
        browser,
        "return [...document.querySelectorAll('#legend .swatch.' + arguments[0])]
                .map((s) => getComputedStyle(s).backgroundColor);",
        json!(class),
    )
    .await;
    serde_json::from_value(colours).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_page_draws_the_day_and_defers_a_change_until_the_call_ends_and_cancels_it() {
    // On a call: a change now is refused, one for when the call ends waits.
    let (floor, agent) = Floor::with_one_on_a_call().await;
    let (browser, address, agent) = (&floor.browser, &floor.address, &agent);
    let sim = &floor.sim;
    let page = format!("{address}/agents/{}", agent.id);
    open(browser, &page).await;
    eventually(SLOW, "the page shows the agent on a call", async || {
        let state = text_of(browser, "agent-state").await;
        (state == "ON_CONTACT").then_some(())
    })
    .await;
    assert_eq!(text_of(browser, "agent-name").await, agent.name);

    // Today, full width, with a now marker, three labelled lanes, the figures.
    eventually(SLOW, "the day is drawn with a now marker", async || {
        let drawn = run(
            browser,
            "const t = document.getElementById('timeline');
             return [t.querySelectorAll('.lane').length, !!document.getElementById('now-marker'),
                     t.getBoundingClientRect().width / document.documentElement.clientWidth,
                     [...t.querySelectorAll('.lane-label')].map((l) => l.textContent),
                     document.querySelectorAll('#figures dt').length];",
            Value::Null,
        )
        .await;
        (drawn[0] == 3 && drawn[1] == true).then_some(drawn)
    })
    .await;
    let drawn = run(
        browser,
        "const t = document.getElementById('timeline');
         return [t.getBoundingClientRect().width / document.documentElement.clientWidth,
                 [...t.querySelectorAll('.lane-label')].map((l) => l.textContent),
                 document.querySelector('#figures dt').textContent,
                 t.querySelectorAll('.bar.fill-state').length];",
        Value::Null,
    )
    .await;
    assert!(drawn[0].as_f64().unwrap() > 0.9, "full width: {drawn}");
    assert_eq!(drawn[1], json!(["Schedule", "State", "Adherence"]));
    assert_eq!(drawn[2], "Adherence");
    assert!(drawn[3].as_u64().unwrap() >= 1, "a recorded state: {drawn}");
    // States and verdicts never share a colour.
    let states = swatch_colours(browser, "fill-state").await;
    let verdicts = swatch_colours(browser, "fill-verdict").await;
    assert_eq!(states.len(), 7);
    assert_eq!(verdicts.len(), 5);
    for colour in &states {
        assert!(
            !verdicts.contains(colour),
            "{colour}: {states:?} / {verdicts:?}"
        );
    }
    assert_accessible(browser, "the agent page").await;
    let png = browser.screenshot().await.unwrap();
    std::fs::write(artifact("console-agent.png"), png).unwrap();

    // A change now, from the keyboard: refused, and said why in words.
    let change = browser.find(Locator::Id("change")).await.unwrap();
    change.send_keys("\u{E007}").await.unwrap();
    eventually(SLOW, "the dialog opens", async || {
        let open = run(
            browser,
            "return !!document.getElementById('act') && document.getElementById('act').open;",
            Value::Null,
        )
        .await;
        (open == true).then_some(())
    })
    .await;
    select(browser, "act-state", "NOT_READY").await;
    type_into(browser, "act-reason", "MEETING\u{E007}").await;
    let refused = act_answer(browser).await;
    assert!(
        refused.starts_with("Refused:") && refused.contains("STATE_CONFLICT"),
        "{refused}"
    );
    // A bad reason is said, and nothing is sent.
    let attempts = sim.calls(crate::helpers::SET_STATE);
    type_into(browser, "act-reason", "no spaces\u{E007}").await;
    says(browser, "act-answer", "nothing was changed").await;
    assert_eq!(sim.calls(crate::helpers::SET_STATE), attempts);

    // When the call ends: Tab to the choice, arrow to "When the call ends", Enter.
    type_into(browser, "act-reason", "MEETING").await;
    let reason = browser.find(Locator::Id("act-reason")).await.unwrap();
    reason.send_keys("\u{E004}").await.unwrap();
    let focused = browser.active_element().await.unwrap();
    focused.send_keys("\u{E015}").await.unwrap();
    let focused = browser.active_element().await.unwrap();
    focused.send_keys("\u{E007}").await.unwrap();
    let waits = act_answer(browser).await;
    assert!(
        waits.contains("waits for the call to end: NOT_READY (MEETING)"),
        "{waits}"
    );
    assert_accessible(browser, "the change dialog").await;
    let deferred = get_json(&format!("{address}/v1/agents/{}/deferred", agent.id)).await;
    assert_eq!(deferred["to"], "NOT_READY", "{deferred}");
    assert_eq!(deferred["reason"], "MEETING", "{deferred}");
    run(
        browser,
        "document.getElementById('act').close();",
        Value::Null,
    )
    .await;

    // The page shows the waiting change; its Cancel cancels it.
    says(browser, "waiting", "NOT_READY (MEETING)").await;
    cancel_waiting(browser, "#waiting .cancel-deferred", "act-message").await;
    assert_eq!(
        deferred_status(address, &agent.id).await,
        404,
        "nothing waits any more"
    );
    eventually(SLOW, "the waiting change is off the page", async || {
        text_of(browser, "waiting").await.is_empty().then_some(())
    })
    .await;

    // A day too far back is refused in the page, and the day shown stays.
    let shown = run(
        browser,
        "return document.getElementById('timeline').innerHTML.length;",
        Value::Null,
    )
    .await;
    run(
        browser,
        "const d = document.getElementById('day');
         const far = new Date(); far.setDate(far.getDate() - 40);
         d.value = far.toISOString().slice(0, 10);
         d.dispatchEvent(new Event('change'));",
        Value::Null,
    )
    .await;
    let said = text_of(browser, "day-message").await;
    assert!(said.contains("more than 31 days back"), "{said}");
    assert_eq!(
        run(
            browser,
            "return document.getElementById('timeline').innerHTML.length;",
            Value::Null
        )
        .await,
        shown
    );
    // The day before: in the URL, and drawn.
    click(browser, "#day-prev").await;
    eventually(SLOW, "the day before is asked for", async || {
        location(browser).await.contains("?day=").then_some(())
    })
    .await;

    // An agent wfmd does not know: said, and nothing else asked.
    open(browser, &format!("{address}/agents/u_999")).await;
    let said = text_of(browser, "message").await;
    assert!(said.contains("keeps no agent u_999"), "{said}");
    floor.stop().await;
}

/// Starts a bulk job through the API; its id.
async fn start_job(address: &str, body: Value) -> String {
    let answer: Value = http_client()
        .post(format!("{address}/v1/bulk-transitions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["job_id"].as_str().unwrap().to_owned()
}

/// The job shown below the list: its id, status, and each item's agent and outcome.
async fn job_shown(browser: &Client) -> Value {
    run(
        browser,
        "return [document.getElementById('job-id').textContent,
                 document.getElementById('job-status').textContent,
                 [...document.querySelectorAll('#item-rows tr')].map((r) => [r.dataset.agent, r.dataset.outcome])];",
        Value::Null,
    )
    .await
}

/// Waits until the job shown has `status` and every item one of `outcomes`.
async fn job_settles(browser: &Client, status: &str, outcomes: &[&str]) -> Value {
    eventually(SLOW, &format!("the job shown is {status}"), async || {
        let shown = job_shown(browser).await;
        let items = shown[2].as_array()?;
        (shown[1] == status
            && !items.is_empty()
            && items
                .iter()
                .all(|i| outcomes.contains(&i[1].as_str().unwrap_or_default())))
        .then_some(shown)
    })
    .await
}

/// Chooses `agents` on the new job form, finding each by name.
async fn choose(browser: &Client, agents: &[wfmd::sim::SimAgent]) {
    for agent in agents {
        type_into(browser, "pick-q", &agent.name).await;
        click(
            browser,
            &format!("#pick-list label[data-agent=\"{}\"] input", agent.id),
        )
        .await;
    }
    type_into(browser, "pick-q", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_job_is_created_reverted_and_another_cancelled_from_the_jobs_page() {
    let sim = TestSim::default_tenant().await;
    let quiet = quiet_agents(&sim);
    assert!(quiet.len() >= 5, "quiet agents: {}", quiet.len());
    for agent in &quiet[..3] {
        assert!(sim.sim.force_state(&agent.id, "NOT_READY", "TRAINING"));
    }
    // On calls: a job told to wait for the calls to end keeps running until cancelled.
    for agent in &quiet[3..5] {
        assert!(sim.sim.force_state(&agent.id, "ON_CONTACT", ""));
    }
    let floor = Floor::start(sim, |_| {}).await;
    let (browser, address) = (&floor.browser, &floor.address);
    let sim = &floor.sim;
    open(browser, &format!("{address}/jobs")).await;
    assert_accessible(browser, "/jobs").await;

    // Bad input is said, and starts nothing.
    click(browser, "#start").await;
    let said = text_of(browser, "new-message").await;
    assert!(said.contains("Choose a team"), "{said}");

    // Three agents chosen by name: PAUSED (MEETING).
    let chosen = &quiet[..3];
    eventually(SLOW, "the agents to choose from are listed", async || {
        let n = run(
            browser,
            "return document.querySelectorAll('#pick-list label').length;",
            Value::Null,
        )
        .await;
        (n.as_u64()? > 0).then_some(())
    })
    .await;
    choose(browser, chosen).await;
    assert_eq!(text_of(browser, "picked").await, "3 chosen");
    select(browser, "new-state", "PAUSED").await;
    type_into(browser, "new-reason", "MEETING").await;
    click(browser, "#start").await;
    let shown = job_settles(browser, "completed", &["succeeded"]).await;
    let job_id = shown[0].as_str().unwrap().to_owned();
    // The whole id, as the API has it, and the job is the API's.
    let job = get_json(&format!("{address}/v1/bulk-transitions/{job_id}")).await;
    assert_eq!(job["job_id"], job_id.as_str());
    assert_eq!(job["total"], 3, "{job}");
    assert_eq!(location(browser).await, format!("/jobs?job={job_id}"));
    for agent in chosen {
        let now = sim.sim.agent(&agent.id).unwrap();
        assert_eq!(
            (now.state.as_str(), now.reason.as_str()),
            ("PAUSED", "MEETING")
        );
    }
    assert_accessible(browser, "/jobs with a job shown").await;

    // Revert: a new job puts them back as they were.
    click(browser, "#revert").await;
    let reverted = eventually(SLOW, "the revert job is shown", async || {
        let shown = job_shown(browser).await;
        (shown[0] != job_id.as_str()).then_some(shown[0].as_str()?.to_owned())
    })
    .await;
    job_settles(browser, "completed", &["succeeded"]).await;
    let job = get_json(&format!("{address}/v1/bulk-transitions/{reverted}")).await;
    assert_eq!(job["reverts_job_id"], job_id.as_str(), "{job}");
    // (The state as wfmd recorded it; the reason the platform does not report.)
    for agent in chosen {
        assert_eq!(sim.sim.agent(&agent.id).unwrap().state, "NOT_READY");
    }

    // Two agents on calls, told to wait: the job runs until cancelled from the page.
    let busy = &quiet[3..5];
    choose(browser, busy).await;
    click(browser, "input[name=when][value=defer]").await;
    select(browser, "new-wait", "30m").await;
    click(browser, "#start").await;
    let waiting = job_settles(browser, "running", &["deferred"]).await;
    let waiting_id = waiting[0].as_str().unwrap().to_owned();
    for agent in busy {
        let deferred = get_json(&format!("{address}/v1/agents/{}/deferred", agent.id)).await;
        assert_eq!(deferred["bulk_job_id"], waiting_id.as_str(), "{deferred}");
    }
    click(browser, "#cancel").await;
    job_settles(browser, "cancelled", &["cancelled"]).await;
    let job = get_json(&format!("{address}/v1/bulk-transitions/{waiting_id}")).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    for agent in busy {
        let status = deferred_status(address, &agent.id).await;
        assert_eq!(status, 404, "{}'s waiting change is gone", agent.id);
    }
    // A job started elsewhere shows up in the list as it runs, with its whole id.
    let elsewhere = start_job(
        address,
        json!({"agents": [quiet[0].id], "state": "NOT_READY", "reason": "TRAINING"}),
    )
    .await;
    eventually(
        SLOW,
        "the job started elsewhere is listed, completed",
        async || {
            let status = run(
            browser,
            "const r = document.querySelector('#job-rows tr[data-job=\"' + arguments[0] + '\"]');
             return r && [r.dataset.status, r.querySelector('a').textContent];",
            json!(elsewhere),
        )
        .await;
            (status == json!(["completed", elsewhere])).then_some(())
        },
    )
    .await;
    let png = browser.screenshot().await.unwrap();
    std::fs::write(artifact("console-jobs.png"), png).unwrap();
    floor.stop().await;
}

// needs h/capi: GET /v1/bulk-transitions (the list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_page_lists_every_job_newest_first_and_filters_by_status() {
    let sim = TestSim::default_tenant().await;
    let quiet = quiet_agents(&sim);
    let floor = Floor::start(sim, |_| {}).await;
    let (browser, address) = (&floor.browser, &floor.address);
    let mut started = Vec::new();
    for (agent, state) in quiet.iter().zip(["NOT_READY", "PAUSED", "NOT_READY"]) {
        started.push(start_job(address, json!({"agents": [agent.id], "state": state})).await);
    }
    open(browser, &format!("{address}/jobs")).await;
    let listed = async || -> Vec<String> {
        let ids = run(
            browser,
            "return [...document.querySelectorAll('#job-rows tr')].map((r) => r.dataset.job);",
            Value::Null,
        )
        .await;
        serde_json::from_value(ids).unwrap()
    };
    started.reverse();
    assert_eq!(listed().await, started, "newest first, whole ids");
    select(browser, "status", "cancelled").await;
    eventually(SLOW, "no job is cancelled", async || {
        listed().await.is_empty().then_some(())
    })
    .await;
    floor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallboards_agent_dialog_defers_a_change_and_cancels_it() {
    let (floor, agent) = Floor::with_one_on_a_call().await;
    let (browser, address, agent) = (&floor.browser, &floor.address, &agent);
    open(browser, &format!("{address}/")).await;
    let card = format!(".card[data-agent=\"{}\"]", agent.id);
    click(browser, &card).await;
    let link = eventually(SLOW, "the day dialog links the agent's page", async || {
        let href = run(
            browser,
            "const d = document.getElementById('day');
             return d.open ? document.getElementById('day-agent-page').getAttribute('href') : null;",
            Value::Null,
        )
        .await;
        href.as_str().map(str::to_owned)
    })
    .await;
    assert_eq!(link, format!("/agents/{}", agent.id));
    click(browser, "#day-change").await;
    select(browser, "act-state", "NOT_READY").await;
    type_into(browser, "act-reason", "MEETING").await;
    click(browser, "input[name=act-when][value=defer]").await;
    click(browser, "#act button[type=submit]").await;
    let waits = act_answer(browser).await;
    assert!(waits.contains("waits for the call to end"), "{waits}");
    run(
        browser,
        "document.getElementById('act').close();",
        Value::Null,
    )
    .await;
    // The day dialog shows the waiting change, and the card its badge.
    eventually(
        SLOW,
        "the dialog and the card show the waiting change",
        async || {
            let shown = run(
                browser,
                "const c = document.querySelector(arguments[0] + ' .deferred');
             return [document.getElementById('day-waiting').textContent, c && c.textContent];",
                json!(card),
            )
            .await;
            (shown[0].as_str()?.contains("NOT_READY (MEETING)") && shown[1] == "next: NOT_READY")
                .then_some(())
        },
    )
    .await;
    cancel_waiting(browser, "#day-waiting .cancel-deferred", "day-answer").await;
    assert_eq!(deferred_status(address, &agent.id).await, 404);
    floor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_root_of_several_tenants_a_page_offers_itself_for_each() {
    let (alpha, beta) = crate::tenants::two_sims().await;
    let db = TestDb::new();
    let served =
        crate::tenants::Served::start(&crate::tenants::two_tenants(&db, &alpha, &beta, "")).await;
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    for page in ["rta", "jobs", "agents/u_001"] {
        open(&browser, &format!("{}/{page}", served.address)).await;
        let offered = run(
            &browser,
            "return [...document.querySelectorAll('.chooser a')].map((a) => a.getAttribute('href'));",
            Value::Null,
        )
        .await;
        assert_eq!(
            offered,
            json!([format!("/t/alpha/{page}"), format!("/t/beta/{page}")]),
            "{page}"
        );
    }
    click(&browser, ".chooser a[href=\"/t/beta/agents/u_001\"]").await;
    arrives(&browser, "/t/beta/agents/u_001").await;
    let nav = run(
        &browser,
        "return document.querySelector('.console-nav a[data-nav=\"jobs\"]').getAttribute('href');",
        Value::Null,
    )
    .await;
    assert_eq!(nav, "/t/beta/jobs");
    browser.close().await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_page_offers_the_compliance_report_of_a_window_in_each_format() {
    let floor = Floor::start(TestSim::default_tenant().await, |_| {}).await;
    let (browser, address) = (&floor.browser, &floor.address);
    open(browser, &format!("{address}/reports")).await;
    assert_accessible(browser, "/reports").await;
    let links = async || -> Vec<(String, String)> {
        let links = run(
            browser,
            "return [...document.querySelectorAll('#downloads a')]
                    .map((a) => [a.dataset.format, a.getAttribute('href')]);",
            Value::Null,
        )
        .await;
        serde_json::from_value(links).unwrap()
    };
    // The last seven days by default; each link is the report, in its format.
    let offered = links().await;
    assert_eq!(
        offered.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        ["csv", "json", "html"]
    );
    for (format, href) in &offered {
        assert!(href.starts_with("/v1/reports/compliance?from="), "{href}");
        let response = http_client()
            .get(format!("{address}{href}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{href}");
        let media = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(media.contains(format.as_str()), "{format}: {media}");
    }
    // A window that ends before it starts is said, and the links stay.
    run(
        browser,
        "document.getElementById('from').value = '2026-11-20';
         document.getElementById('to').value = '2026-11-10';",
        Value::Null,
    )
    .await;
    click(browser, "#window button[type=submit]").await;
    says(browser, "message", "before the first").await;
    assert_eq!(links().await, offered);
    floor.stop().await;
}

/// The seconds the compliance report (JSON) counts for `agent` over `from`..`to` as
/// authorised, and as out of adherence.
async fn authorised_and_out(
    address: &str,
    agent: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> (f64, f64) {
    let report = http_client()
        .get(format!("{address}/v1/reports/compliance"))
        .query(&[
            ("from", wfmd::time::rfc3339(from)),
            ("to", wfmd::time::rfc3339(to)),
            ("format", "json".into()),
        ])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let row = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == agent)
        .unwrap_or_else(|| panic!("{agent} in {report}"))
        .clone();
    let figure = |name: &str| row[name].as_f64().unwrap_or(0.0);
    let out = figure("scheduled_seconds")
        - figure("unobserved_seconds")
        - figure("authorised_seconds")
        - figure("neutral_seconds")
        - figure("in_adherence_seconds");
    (figure("authorised_seconds"), out)
}

/// The review the exceptions page shows for the exception `id` ("pending" before any).
async fn review_shown(browser: &Client, id: &str) -> String {
    run(
        browser,
        "const row = document.querySelector('#rows tr[data-exception=\"' + arguments[0] + '\"]');
         return row ? row.dataset.review : null;",
        json!(id),
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_excused_from_the_page_counts_as_authorised_and_reviews_show_live() {
    use chrono::{Duration as Span, DurationRound, Utc};
    use wfmd::domain::AgentState;
    use wfmd::store::{Store, exceptions, schedules};

    use crate::exception_reviews::{exception, record, shift};

    let sim = TestSim::default_tenant().await;
    let free = sim.free_agents();
    let (first, second) = (free[0].id.clone(), free[1].id.clone());
    let now = Utc::now().duration_trunc(Span::seconds(1)).unwrap();
    let midnight = now.duration_trunc(Span::days(1)).unwrap();
    let (yesterday, noon) = (midnight - Span::days(1), midnight - Span::hours(12));
    // Yesterday both agents were NOT_READY 12:00-13:00 of a shift 11:00-20:00: an
    // exception each.
    let excused = exception(
        "0190c1a4-0000-7000-8000-0000000000c1",
        &first,
        noon,
        Some(noon + Span::hours(1)),
    );
    let upheld = exception(
        "0190c1a4-0000-7000-8000-0000000000c2",
        &second,
        noon,
        Some(noon + Span::hours(1)),
    );
    let db = TestDb::new();
    {
        let store = Store::open(&db.url()).await.unwrap();
        for agent in [&first, &second] {
            record(&store, &[(agent, AgentState::NotReady, noon)]).await;
            record(&store, &[(agent, AgentState::Ready, noon + Span::hours(1))]).await;
            record(
                &store,
                &[(agent, AgentState::LoggedOut, noon + Span::hours(8))],
            )
            .await;
        }
        let mut tx = store.begin_write().await.unwrap();
        schedules::save(
            &mut tx,
            &[
                shift(&first, noon - Span::hours(1), noon + Span::hours(8)),
                shift(&second, noon - Span::hours(1), noon + Span::hours(8)),
            ],
        )
        .await
        .unwrap();
        exceptions::insert_all(&mut tx, &[excused.clone(), upheld.clone()])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        store.close().await;
    }
    let floor = Floor::start_on(sim, db, |_| {}).await;
    let (browser, address) = (&floor.browser, floor.address.clone());
    let before = authorised_and_out(&address, &first, yesterday, midnight).await;
    assert_eq!(before.0, 0.0, "{before:?}");
    assert!(before.1 > 0.0, "the NOT_READY hour is out: {before:?}");

    let day = yesterday.format("%Y-%m-%d");
    open(
        browser,
        &format!("{address}/exceptions?state=closed&from={day}&to={day}"),
    )
    .await;
    assert_eq!(review_shown(browser, &excused.id).await, "pending");
    assert_accessible(browser, "/exceptions with exceptions listed").await;

    // A note over its limit is refused in the page, and nothing is sent.
    click(
        browser,
        &format!("button.review[data-exception=\"{}\"]", excused.id),
    )
    .await;
    says(browser, "review-count", "0 of 1,000 characters").await;
    run(
        browser,
        "const note = document.getElementById('review-note');
         note.value = 'x'.repeat(1001);
         note.dispatchEvent(new Event('input'));
         return null;",
        Value::Null,
    )
    .await;
    says(browser, "review-count", "1 too many").await;
    click(browser, "#review-send").await;
    says(
        browser,
        "review-answer",
        "over its limit of 1,000; nothing was sent",
    )
    .await;
    let listed = get_json(&format!(
        "{address}/v1/adherence/exceptions?state=all&from={day}"
    ))
    .await;
    assert!(
        listed["exceptions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["review"].is_null()),
        "{listed}"
    );

    // Excused with a note from the page: the report counts that hour as authorised.
    type_into(browser, "review-note", "fire drill").await;
    click(browser, "#review-send").await;
    says(browser, "review-answer", "Excused").await;
    eventually(SLOW, "the row says excused", async || {
        (review_shown(browser, &excused.id).await == "excused").then_some(())
    })
    .await;
    let after = authorised_and_out(&address, &first, yesterday, midnight).await;
    assert!(after.0 >= 3600.0, "{before:?} then {after:?}");
    assert!(after.1 <= before.1 - 3600.0, "{before:?} then {after:?}");
    click(browser, "#review-close").await;

    // A review made elsewhere shows without reloading the page.
    let answer = http_client()
        .post(format!(
            "{address}/v1/adherence/exceptions/{}/review",
            upheld.id
        ))
        .json(&json!({"decision": "upheld", "note": "no reason given"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    eventually(SLOW, "the other review shows live", async || {
        (review_shown(browser, &upheld.id).await == "upheld").then_some(())
    })
    .await;

    // Reviewed already: the page offers to replace the review, and only then does.
    click(
        browser,
        &format!("button.review[data-exception=\"{}\"]", upheld.id),
    )
    .await;
    click(browser, "#review-send").await;
    says(browser, "review-answer", "Reviewed already: upheld").await;
    assert_eq!(review_shown(browser, &upheld.id).await, "upheld");
    click(browser, "#review-replace").await;
    says(browser, "review-answer", "Excused").await;
    eventually(SLOW, "the replaced review shows", async || {
        (review_shown(browser, &upheld.id).await == "excused").then_some(())
    })
    .await;
    floor.stop().await;
}

/// Sets the datetime-local fields `auth-from` and `auth-to` to the instants `from` and
/// `to`, in the browser's own zone.
async fn authorise_range(browser: &Client, from: &str, to: &str) {
    run(
        browser,
        "const local = (at) => { const d = new Date(at);
           return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16); };
         document.getElementById('auth-from').value = local(arguments[0][0]);
         document.getElementById('auth-to').value = local(arguments[0][1]);
         return null;",
        json!([from, to]),
    )
    .await;
}

/// The authorisations GET /v1/adherence/authorisations lists over the last two days.
async fn authorisations_listed(address: &str) -> Vec<Value> {
    let from = wfmd::time::rfc3339(chrono::Utc::now() - chrono::Duration::days(2));
    let list = http_client()
        .get(format!("{address}/v1/adherence/authorisations"))
        .query(&[("from", from)])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    list["authorisations"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_range_is_authorised_from_the_agent_page_listed_and_withdrawn_and_a_teams_from_exceptions()
 {
    use chrono::{Duration as Span, DurationRound, Utc};

    let sim = TestSim::default_tenant().await;
    let agent = sim.free_agents().remove(0);
    let floor = Floor::start(sim, |_| {}).await;
    let (browser, address) = (&floor.browser, floor.address.clone());
    let hour = Utc::now().duration_trunc(Span::hours(1)).unwrap() - Span::hours(26);
    let (from, to) = (
        wfmd::time::rfc3339(hour),
        wfmd::time::rfc3339(hour + Span::hours(1)),
    );
    open(browser, &format!("{address}/agents/{}", agent.id)).await;

    // A range that ends before it begins is said, and nothing is sent.
    authorise_range(browser, &to, &from).await;
    type_into(browser, "auth-reason", "training").await;
    click(browser, "#auth-send").await;
    says(browser, "auth-message", "before it begins").await;
    assert_eq!(authorisations_listed(&address).await, Vec::<Value>::new());

    // The past hour, authorised from the page: stored as given, and listed on the page
    // (which shows the range's day).
    authorise_range(browser, &from, &to).await;
    click(browser, "#auth-send").await;
    says(browser, "auth-message", "Authorised 1 agent(s)").await;
    let stored = authorisations_listed(&address).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["agents"], json!([agent.id]));
    assert_eq!(stored[0]["reason"], "training");
    let (stored_from, stored_to) = (
        chrono::DateTime::parse_from_rfc3339(stored[0]["from"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(stored[0]["to"].as_str().unwrap()).unwrap(),
    );
    assert_eq!(
        (stored_from, stored_to),
        (hour.into(), (hour + Span::hours(1)).into())
    );
    let id = stored[0]["id"].as_str().unwrap().to_owned();
    let row = format!("#authorisations tr[data-authorisation=\"{id}\"]");
    eventually(SLOW, "the authorisation is listed", async || {
        browser.find(Locator::Css(&row)).await.ok().map(|_| ())
    })
    .await;
    assert_accessible(browser, "the agent page with an authorisation").await;

    // Withdrawn from the page.
    click(browser, &format!("{row} button.withdraw")).await;
    says(browser, "auth-message", "Withdrawn").await;
    let after = authorisations_listed(&address).await;
    assert!(after[0]["withdrawn_at"].is_string(), "{after:?}");
    eventually(SLOW, "the authorisation shows withdrawn", async || {
        let class = run(
            browser,
            "const row = document.querySelector(arguments[0]); return row ? row.className : null;",
            json!(row),
        )
        .await;
        (class == "withdrawn").then_some(())
    })
    .await;

    // A team's past hour, authorised from /exceptions, which lists it in its window.
    let day = hour.format("%Y-%m-%d");
    open(
        browser,
        &format!("{address}/exceptions?from={day}&to={day}"),
    )
    .await;
    click(browser, "#auth-send").await;
    says(browser, "auth-message", "Choose the team").await;
    select(browser, "auth-team", &agent.team_id).await;
    authorise_range(browser, &from, &to).await;
    type_into(browser, "auth-reason", "floor meeting").await;
    click(browser, "#auth-send").await;
    says(browser, "auth-message", "Authorised").await;
    let stored = authorisations_listed(&address).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    let team = stored
        .iter()
        .find(|a| a["reason"] == "floor meeting")
        .unwrap();
    assert_eq!(team["team"], json!(agent.team_id), "{team}");
    assert!(
        team["agents"]
            .as_array()
            .unwrap()
            .contains(&json!(agent.id)),
        "{team}"
    );
    let row = format!(
        "#authorisations tr[data-authorisation=\"{}\"]",
        team["id"].as_str().unwrap()
    );
    eventually(SLOW, "the team's authorisation is listed", async || {
        browser.find(Locator::Css(&row)).await.ok().map(|_| ())
    })
    .await;
    assert_accessible(browser, "/exceptions with an authorisation").await;
    floor.stop().await;
}
