//! Several tenants' wallboards, feeds and webhooks: each tenant's events reach only its
//! own receivers and clients and name it (`"tenant"`), its tickets and event ids mean
//! nothing to another tenant, and its board is at `/t/{tenant}/` with a picker at `/`.

use fantoccini::Locator;
use futures::StreamExt;
use serde_json::{Value, json};
use wfmd::config::{Config, ConfigSource};
use wfmd::on;

use crate::helpers::{DEADLINE, TestDb, TestSim, http_client};
use crate::live::Sse;
use crate::receiver::{Receiver, SECRET, verify_with_standardwebhooks};
use crate::tenants::{Served, two_sims, two_tenants, two_tenants_file};
use crate::wallboard::{Chromedriver, SLOW, card_shows, card_state, connection, eventually, run};

/// [`two_tenants_file`] with `live.enabled` (the roster's names on the boards) when
/// `live`, and `per_tenant(id)` written into the entry of each tenant, loaded.
fn two_tenants_with(
    db: &TestDb,
    (alpha, beta): (&TestSim, &TestSim),
    extra: &str,
    live: bool,
    per_tenant: impl Fn(&str) -> String,
) -> Config {
    let (file, env) = two_tenants_file(db, alpha, beta, extra);
    let mut text = std::fs::read_to_string(&file).unwrap();
    let (off, on) = ("[live]\nenabled = false\n", "[live]\nenabled = true\n");
    assert!(text.contains(off), "{text}");
    if live {
        text = text.replace(off, on);
    }
    // Each entry runs up to the next `[[tenants]]`; beta's is the last.
    let beta_entry = "[[tenants]]\nid = \"beta\"\n";
    assert!(text.contains(beta_entry), "{text}");
    text = text.replace(
        beta_entry,
        &format!("{}\n{beta_entry}", per_tenant("alpha")),
    );
    text.push_str(&per_tenant("beta"));
    std::fs::write(&file, text).unwrap();
    let source = ConfigSource {
        file: Some(file),
        simulate: false,
    };
    Config::load_with_env(&source, env).unwrap()
}

/// Puts `agent` of `tenant` in `state` through its routes.
async fn set_state(served: &Served, tenant: &str, agent: &str, state: &str) {
    let response = http_client()
        .post(format!(
            "{}/v1/tenants/{tenant}/agents/{agent}/transitions",
            served.address
        ))
        .json(&json!({ "state": state }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Free agents of `sim` with a state each may be put in now (as `change_for`).
fn changes(sim: &TestSim) -> Vec<(String, &'static str)> {
    sim.free_agents()
        .into_iter()
        .map(|a| {
            let target = if a.state == "PAUSED" {
                "IDLE"
            } else {
                "PAUSED"
            };
            (a.id, target)
        })
        .collect()
}

/// Changes an agent of `tenant` and returns the id of the event its outbox holds for it.
async fn change(served: &Served, tenant: &str, (agent, state): &(String, &str)) -> String {
    set_state(served, tenant, agent, state).await;
    on!(served.store(tenant).reader(), |c| sqlx::query_scalar(
        "SELECT id FROM outbox_events ORDER BY seq DESC LIMIT 1"
    )
    .fetch_one(c)
    .await)
    .unwrap()
}

#[tokio::test]
async fn each_tenants_webhooks_go_to_its_own_receivers_and_name_it() {
    let (alpha, beta) = two_sims().await;
    let receivers = [Receiver::start().await, Receiver::start().await];
    let db = TestDb::new();
    let config = two_tenants_with(&db, (&alpha, &beta), "", false, |id| {
        let receiver = &receivers[usize::from(id == "beta")];
        format!(
            "[[tenants.webhooks]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
             events = [\"agent.state_changed\"]\n",
            receiver.url()
        )
    });
    let served = Served::start(&config).await;

    let alpha_event = change(&served, "alpha", &changes(&alpha)[0]).await;
    receivers[0].wait_for(1, DEADLINE).await;
    // Beta's change goes out after alpha's arrived: had alpha's gone to beta's receiver
    // too, it would be there by the time beta's own is.
    let beta_event = change(&served, "beta", &changes(&beta)[0]).await;
    receivers[1].wait_for(1, DEADLINE).await;

    for (receiver, tenant, event) in [
        (&receivers[0], "alpha", &alpha_event),
        (&receivers[1], "beta", &beta_event),
    ] {
        let received = receiver.received();
        assert_eq!(received.len(), 1, "{tenant}'s receiver got only its own");
        let body = &received[0];
        assert_eq!(&body.id, event, "{tenant}");
        assert_eq!(body.json["tenant"], tenant, "{}", body.body);
        assert_eq!(body.json["id"], event.as_str(), "{}", body.body);
        assert_eq!(body.json["type"], "agent.state_changed", "{}", body.body);
        // The tenant is in the signed bytes: the signature verifies, and does not once
        // the tenant is changed.
        assert_eq!(verify_with_standardwebhooks(&received), Ok(1), "{tenant}");
        let mut forged = body.clone();
        forged.body = forged
            .body
            .replace(&format!("\"tenant\":\"{tenant}\""), "\"tenant\":\"gamma\"");
        assert_ne!(forged.body, body.body);
        assert!(verify_with_standardwebhooks(&[forged]).is_err(), "{tenant}");
    }
    served.stop().await;
}

/// Opens tenant `tenant`'s feed over a WebSocket.
async fn websocket(
    served: &Served,
    tenant: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!(
        "{}/v1/tenants/{tenant}/ws",
        served.address.replace("http://", "ws://")
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next WebSocket frame of type `kind`, parsed.
async fn next_frame_of(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    kind: &str,
) -> Value {
    let read = async {
        loop {
            let frame = socket.next().await.expect("the socket stays open").unwrap();
            if !frame.is_text() {
                continue;
            }
            let frame: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
            if frame["type"] == kind {
                return frame;
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("no {kind} frame within the deadline"))
}

#[tokio::test]
async fn each_tenants_feed_carries_only_its_events_named_with_it_and_resumes_only_on_its_own_ids() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let config = two_tenants(&db, &alpha, &beta, "");
    let served = Served::start(&config).await;
    let path = |tenant: &str| format!("/v1/tenants/{tenant}/events");
    let mut alpha_feed = Sse::open(&served.address, &path("alpha"), &[]).await;
    let mut beta_feed = Sse::open(&served.address, &path("beta"), &[]).await;
    let mut alpha_socket = websocket(&served, "alpha").await;
    for (feed, tenant) in [(&mut alpha_feed, "alpha"), (&mut beta_feed, "beta")] {
        let snapshot = feed.next().await;
        assert_eq!(snapshot.event, "snapshot");
        assert_eq!(snapshot.data["tenant"], tenant, "{}", snapshot.data);
    }
    let snapshot = next_frame_of(&mut alpha_socket, "snapshot").await;
    assert_eq!(snapshot["tenant"], "alpha", "{snapshot}");

    // Alpha, beta, alpha: beta's event is on beta's feed before alpha's second is made.
    let alpha_changes = changes(&alpha);
    let first = change(&served, "alpha", &alpha_changes[0]).await;
    let between = change(&served, "beta", &changes(&beta)[0]).await;
    let on_beta = beta_feed.next_of("agent.state_changed").await;
    assert_eq!(on_beta.id.as_deref(), Some(between.as_str()));
    assert_eq!(on_beta.data["tenant"], "beta", "{}", on_beta.data);
    let second = change(&served, "alpha", &alpha_changes[1]).await;

    let mut got = Vec::new();
    for _ in 0..2 {
        let event = alpha_feed.next_of("agent.state_changed").await;
        assert_eq!(event.data["tenant"], "alpha", "{}", event.data);
        got.push(event.id.unwrap());
    }
    assert_eq!(
        got,
        [first.clone(), second.clone()],
        "alpha's, and only alpha's"
    );
    for expected in [&first, &second] {
        let frame = next_frame_of(&mut alpha_socket, "agent.state_changed").await;
        assert_eq!(frame["id"], expected.as_str(), "{frame}");
        assert_eq!(frame["tenant"], "alpha", "{frame}");
    }

    // Resuming alpha's feed after alpha's first event replays alpha's second…
    let mut resumed = Sse::open(
        &served.address,
        &path("alpha"),
        &[("last-event-id", &first)],
    )
    .await;
    let board = resumed.next().await;
    assert_eq!(board.event, "metrics", "a resume, not a snapshot");
    assert_eq!(board.data["tenant"], "alpha", "{}", board.data);
    let replayed = resumed.next_of("agent.state_changed").await;
    assert_eq!(replayed.id.as_deref(), Some(second.as_str()));
    assert_eq!(replayed.data["tenant"], "alpha", "{}", replayed.data);
    // …while beta's id is unknown to alpha's outbox: a fresh snapshot of alpha.
    let mut elsewhere = Sse::open(
        &served.address,
        &path("alpha"),
        &[("last-event-id", &between)],
    )
    .await;
    let fresh = elsewhere.next().await;
    assert_eq!(fresh.event, "snapshot");
    assert_eq!(fresh.data["tenant"], "alpha", "{}", fresh.data);
    assert_eq!(fresh.id.as_deref(), Some(second.as_str()), "alpha's head");
    served.stop().await;
}

#[tokio::test]
async fn a_ticket_opens_only_its_own_tenants_feed_and_a_token_of_beta_finds_no_feed_of_alpha() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let mut extra = String::new();
    for (name, token, tenants) in [
        ("beta-desk", "wfmd_beta_desk", "tenants = [\"beta\"]"),
        ("everywhere", "wfmd_everywhere", ""),
    ] {
        let entry = crate::auth::entry(name, token, "viewer");
        extra.push_str(&format!(
            "[[api_tokens]]\nname = \"{}\"\ntoken_sha256 = \"{}\"\nrole = \"viewer\"\n{tenants}\n",
            entry.name, entry.token_sha256
        ));
    }
    let config = two_tenants(&db, &alpha, &beta, &extra);
    let served = Served::start(&config).await;
    let http = http_client();
    let url = |path: &str| format!("{}{path}", served.address);
    let ticket = async |tenant: &str, token: &str| -> (u16, Value) {
        let response = http
            .post(url(&format!("/v1/tenants/{tenant}/live/tickets")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    };
    let events =
        |tenant: &str, ticket: &str| format!("/v1/tenants/{tenant}/events?ticket={ticket}");
    let get = async |path: &str, token: Option<&str>| {
        let mut request = http.get(url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    };

    // Alpha's ticket is refused on beta's feed, as a spent one is…
    let (status, issued) = ticket("alpha", "wfmd_everywhere").await;
    assert_eq!(status, 201, "{issued}");
    let alpha_ticket = issued["ticket"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&events("beta", &alpha_ticket), None).await.status(),
        401
    );
    // …and still opens alpha's, once: beta never knew it.
    let mut feed = Sse::open(&served.address, &events("alpha", &alpha_ticket), &[]).await;
    assert_eq!(feed.next().await.data["tenant"], "alpha");
    assert_eq!(
        get(&events("alpha", &alpha_ticket), None).await.status(),
        401
    );

    // A token bound to beta: alpha's ticket and feed routes are not there for it…
    let beta_desk = Some("wfmd_beta_desk");
    let gamma: Value = get("/v1/tenants/gamma/events", beta_desk)
        .await
        .json()
        .await
        .unwrap();
    let (status, problem) = ticket("alpha", "wfmd_beta_desk").await;
    assert_eq!(
        (status, &problem),
        (404, &gamma),
        "as a tenant that does not exist"
    );
    for path in ["events", "ws", "live", "live/series?family=skills&id=s_1"] {
        let response = get(&format!("/v1/tenants/alpha/{path}"), beta_desk).await;
        assert_eq!(response.status(), 404, "{path}");
    }
    // …while its own tenant's are, and its ticket too opens only beta's feed.
    let (status, issued) = ticket("beta", "wfmd_beta_desk").await;
    assert_eq!(status, 201, "{issued}");
    let beta_ticket = issued["ticket"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&events("alpha", &beta_ticket), None).await.status(),
        401
    );
    let mut feed = Sse::open(&served.address, &events("beta", &beta_ticket), &[]).await;
    assert_eq!(feed.next().await.data["tenant"], "beta");
    served.stop().await;
}

#[tokio::test]
async fn a_tenants_wallboard_is_at_its_path_and_an_unknown_tenant_is_no_route() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let config = two_tenants(&db, &alpha, &beta, "");
    let served = Served::start(&config).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = async |path: &str| {
        http.get(format!("{}{path}", served.address))
            .send()
            .await
            .unwrap()
    };
    let root = get("/").await;
    let policy = root.headers()["content-security-policy"].clone();
    assert!(root.text().await.unwrap().contains(r#"data-tenant="""#));
    for (path, tenant) in [
        ("/t/alpha/", "alpha"),
        ("/t/beta/", "beta"),
        ("/t/beta/?kiosk=1", "beta"),
    ] {
        let response = get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8"
        );
        // The wallboard's own script and style (the policy allows them by hash), named
        // for the tenant whose API it reads.
        assert_eq!(
            response.headers()["content-security-policy"],
            policy,
            "{path}"
        );
        let page = response.text().await.unwrap();
        assert!(
            page.contains(&format!(
                r#"data-page="wallboard" data-root="/t/{tenant}" data-tenant="{tenant}""#
            )),
            "the wallboard of {tenant}: {path}"
        );
    }
    for (path, to) in [
        ("/t/beta", "/t/beta/"),
        ("/t/beta?kiosk=1", "/t/beta/?kiosk=1"),
    ] {
        let response = get(path).await;
        assert_eq!(response.status(), 308, "{path}");
        assert_eq!(response.headers()["location"], to, "{path}");
    }
    let unknown: Value = get("/v1/tenants/gamma/live").await.json().await.unwrap();
    for path in ["/t/gamma/", "/t/gamma", "/t/Alpha/"] {
        let response = get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem, unknown, "{path}");
    }
    served.stop().await;
}

/// The names the board's cards show.
async fn names_on_board(browser: &fantoccini::Client) -> Vec<String> {
    let names = run(
        browser,
        "return [...document.querySelectorAll('.card .who')].map((e) => e.textContent);",
        Value::Null,
    )
    .await;
    serde_json::from_value(names).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_tenants_the_root_is_a_picker_and_each_board_shows_only_its_tenant_live() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let config = two_tenants_with(&db, (&alpha, &beta), "", true, |_| String::new());
    let served = Served::start(&config).await;
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;

    // The root lists both boards.
    browser.goto(&format!("{}/", served.address)).await.unwrap();
    let listed = eventually(SLOW, "the picker lists both tenants", async || {
        let listed = run(
            &browser,
            "return [...document.querySelectorAll('#tenants li[data-tenant]')].map((li) =>
               [li.dataset.tenant, li.querySelector('a').getAttribute('href'),
                li.querySelector('a').textContent]);",
            Value::Null,
        )
        .await;
        (listed.as_array()?.len() == 2).then_some(listed)
    })
    .await;
    assert_eq!(
        listed,
        json!([
            ["alpha", "/t/alpha/", "Tenant alpha"],
            ["beta", "/t/beta/", "Tenant beta"],
        ])
    );
    let board_shown = run(
        &browser,
        "return !document.getElementById('picker').hidden &&
                getComputedStyle(document.querySelector('main')).display !== 'none';",
        Value::Null,
    )
    .await;
    assert_eq!(board_shown, false, "a picker, not an empty board");

    // Beta's board: beta's agents by name, none of alpha's.
    browser
        .find(Locator::Css("#tenants li[data-tenant=\"beta\"] a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually(SLOW, "beta's board says live", async || {
        (connection(&browser).await.0 == "live").then_some(())
    })
    .await;
    let path = run(&browser, "return location.pathname;", Value::Null).await;
    assert_eq!(path, "/t/beta/");
    let names = |sim: &TestSim| -> std::collections::BTreeSet<String> {
        sim.sim.agents().into_iter().map(|a| a.name).collect()
    };
    let (alpha_names, beta_names) = (names(&alpha), names(&beta));
    assert!(
        alpha_names.difference(&beta_names).count() > 0,
        "the simulators' names differ"
    );
    eventually(SLOW, "beta's board shows beta's roster", async || {
        let shown: std::collections::BTreeSet<String> =
            names_on_board(&browser).await.into_iter().collect();
        (shown == beta_names).then_some(())
    })
    .await;
    let title = run(
        &browser,
        "return document.getElementById('tenant-name').textContent;",
        Value::Null,
    )
    .await;
    assert_eq!(title, "Tenant beta");

    // A change in alpha, seen on alpha's feed, then one in beta: beta's board shows its
    // own, and has no card for alpha's agent (the simulators number their agents
    // apart: alpha u_001…, beta u_031…).
    let alpha_change = &changes(&alpha)[0];
    let beta_change = changes(&beta)
        .into_iter()
        .find(|(id, _)| *id != alpha_change.0)
        .unwrap();
    let mut alpha_feed = Sse::open(&served.address, "/v1/tenants/alpha/events", &[]).await;
    let alpha_event = change(&served, "alpha", alpha_change).await;
    loop {
        let event = alpha_feed.next_of("agent.state_changed").await;
        if event.id.as_deref() == Some(alpha_event.as_str()) {
            break;
        }
    }
    set_state(&served, "beta", &beta_change.0, beta_change.1).await;
    card_shows(&browser, DEADLINE, &beta_change.0, beta_change.1, "").await;
    let untouched = card_state(&browser, &alpha_change.0).await;
    assert_eq!(
        untouched, None,
        "alpha's agent {} is not on beta's board",
        alpha_change.0
    );

    // Kiosk mode works on a tenant's board as on the root.
    browser
        .goto(&format!("{}/t/beta?kiosk=1", served.address))
        .await
        .unwrap();
    eventually(SLOW, "beta's kiosk board says live", async || {
        (connection(&browser).await.0 == "live").then_some(())
    })
    .await;
    let kiosk = run(
        &browser,
        "return [location.pathname, document.body.classList.contains('kiosk')];",
        Value::Null,
    )
    .await;
    assert_eq!(kiosk, json!(["/t/beta/", true]));
    browser.close().await.unwrap();
    served.stop().await;
}
