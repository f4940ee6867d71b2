//! The live feed: snapshot then events in commit order, resume across a restart,
//! a stalled client beside a live one, tickets, and no platform call per client.

use std::time::Duration;
use wfmd::on;

use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use wfmd::App;
use wfmd::config::Config;
use wfmd::domain::events::{Event, StateChanged};
use wfmd::domain::{AgentState, Origin};
use wfmd::store::outbox;
use wfmd::telemetry::names::LIVE_RESYNCS_TOTAL;

use crate::auth::{As, spawn_with_roles};
use crate::helpers::{
    DEADLINE, Dialect, TestApp, TestDb, TestSim, accepted_job_id, eventually, http_client,
    on_both_backends, on_both_dialects, set_state_at,
};

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// A minimal SSE reader over a streamed reqwest response.
pub struct Sse {
    response: reqwest::Response,
    buffer: String,
    pub comments: usize,
}

impl Sse {
    /// Opens `path` (with its query) on `address`, sending `headers`.
    pub async fn open(address: &str, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut request = http_client().get(format!("{address}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Sse {
            response,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event, failing the test after the deadline.
    pub async fn next(&mut self) -> SseEvent {
        tokio::time::timeout(DEADLINE, self.next_event())
            .await
            .expect("an event within the deadline")
    }

    async fn next_event(&mut self) -> SseEvent {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, Vec::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data.join("\n")).unwrap();
                    return SseEvent { event, id, data };
                }
            }
            let chunk = self
                .response
                .chunk()
                .await
                .unwrap()
                .expect("the stream goes on");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event of type `event`, skipping others (metrics, bulk progress),
    /// failing the test when none comes within the deadline. The failure lists what
    /// came instead: a `snapshot` there, after the first, means the client fell behind
    /// the ring and was resynced, which sends the state again but not the events it
    /// missed.
    pub async fn next_of(&mut self, event: &str) -> SseEvent {
        let mut skipped = Vec::new();
        let found = tokio::time::timeout(DEADLINE, async {
            loop {
                let next = self.next_event().await;
                if next.event == event {
                    return next;
                }
                skipped.push(next.event);
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!("no `{event}` event within the deadline; the feed sent instead: {skipped:?}")
        })
    }
}

/// A WebSocket client of the feed.
pub struct Ws(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

impl Ws {
    /// Opens `/v1/ws` with `query` (`""`, or `?ticket=…`) on `address`.
    pub async fn open(address: &str, query: &str) -> Ws {
        let url = format!("{}/v1/ws{query}", address.replace("http://", "ws://"));
        Ws(tokio_tungstenite::connect_async(url).await.unwrap().0)
    }

    /// The next message's text, failing the test after the deadline or on a frame that
    /// is not text; pings and pongs are skipped.
    pub async fn next_text(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.0.next())
                .await
                .expect("a frame within the deadline")
                .expect("the socket stays open")
                .unwrap();
            if frame.is_ping() || frame.is_pong() {
                continue;
            }
            return frame.into_text().expect("a text frame").to_string();
        }
    }

    /// The next message, parsed.
    pub async fn next(&mut self) -> Value {
        serde_json::from_str(&self.next_text().await).unwrap()
    }
}

/// Outbox ids in commit order.
async fn outbox_ids(store: &wfmd::store::Store) -> Vec<String> {
    on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT id FROM outbox_events ORDER BY seq"
    )
    .fetch_all(c)
    .await)
    .unwrap()
}

/// wfmd with `live.enabled`, which the harness turns off: the roster (names, teams,
/// skills) is read from the platform, and the metric pollers run.
async fn spawn_with_roster() -> TestApp {
    TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.live.enabled = true;
    })
    .await
}

/// Waits until the snapshot has the roster's names (read from the platform once).
async fn wait_for_roster(address: &str, token: Option<&str>) -> Value {
    eventually("no roster", async || {
        let mut request = http_client().get(format!("{address}/v1/live"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let snapshot: Value = request.send().await.unwrap().json().await.unwrap();
        let agents = snapshot["agents"].as_array().unwrap();
        if !agents.is_empty() && agents.iter().all(|a| a["name"].is_string()) {
            Ok(snapshot)
        } else {
            Err(snapshot.to_string())
        }
    })
    .await
}

/// Agents free to change that are READY or NOT_READY (a logged-out agent's change
/// would be refused).
fn movable(sim: &TestSim) -> Vec<wfmd::sim::SimAgent> {
    sim.free_agents()
        .into_iter()
        .filter(|a| a.state == "READY" || a.state == "NOT_READY")
        .collect()
}

/// A state the agent is not in, that any free agent may be put in.
fn other_state(state: &str) -> &'static str {
    if state == "READY" {
        "NOT_READY"
    } else {
        "READY"
    }
}

#[tokio::test]
async fn the_feed_sends_the_snapshot_then_every_event_in_commit_order() {
    let app = spawn_with_roster().await;
    let snapshot = wait_for_roster(&app.address, None).await;
    assert_eq!(snapshot["agents"].as_array().unwrap().len(), 60);
    assert_eq!(
        snapshot["service_level"],
        json!({"good": 0.8, "warning": 0.7})
    );
    // The pollers run (their figures are the metrics tests' business): not failing.
    let health = snapshot["skills_health"]["status"].as_str().unwrap();
    assert!(matches!(health, "pending" | "ok"), "{snapshot}");
    let mut feed = Sse::open(&app.address, "/v1/events", &[]).await;
    let first = feed.next().await;
    assert_eq!(first.event, "snapshot");
    assert_eq!(first.data["type"], "snapshot");
    assert_eq!(first.data["tenant"], "default");
    let agents = movable(&app.sim);
    let changes: Vec<_> = agents.iter().take(4).collect();
    for agent in &changes {
        let (status, _) = app.set_state(&agent.id, other_state(&agent.state)).await;
        assert!(status == 200 || status == 409, "{status}");
    }
    let mut got = Vec::new();
    while got.len() < changes.len() {
        let event = feed.next().await;
        // New figures, the board sent again after the startup load, or an agent's row
        // of real-time adherence: none is an event of the outbox, and none moves the
        // client's place in it.
        if ["metrics", "snapshot", "adherence.changed"].contains(&event.event.as_str()) {
            continue;
        }
        assert_eq!(
            event.data["id"].as_str(),
            event.id.as_deref(),
            "id: is the event id"
        );
        assert_eq!(event.data["tenant"], "default", "{}", event.data);
        got.push(event.id.unwrap());
    }
    assert_eq!(
        got,
        outbox_ids(&app.store).await,
        "every event, in commit order"
    );
    // The snapshot follows the events.
    let after: Value = app.get("/v1/live").await.json().await.unwrap();
    assert_eq!(
        after["last_event_id"].as_str(),
        got.last().map(String::as_str)
    );
    let first = &changes[0];
    let card = after["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == first.id.as_str())
        .unwrap();
    let recorded: String = on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT state FROM state_intervals WHERE agent_id = $1 AND ended_at IS NULL",
    )
    .bind(&first.id)
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(card["state"], recorded.as_str());
}

/// wfmd serving `config` until stopped (restartable on the same address when
/// `config.server.listen` names a port).
pub struct Served {
    pub address: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Served {
    pub async fn start(config: &Config) -> Served {
        let app = App::build(config).await.unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(stop.clone()));
        Served {
            address,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn transition(address: &str, agent: &str, state: &str) -> u16 {
    set_state_at(address, agent, state).await.0
}

on_both_backends!(a_resume_with_last_event_id_loses_nothing_across_a_restart);
async fn a_resume_with_last_event_id_loses_nothing_across_a_restart(db: TestDb) {
    let sim = TestSim::default_tenant().await;
    let config = sim.config(&db.url());
    let agents = movable(&sim);
    let first = Served::start(&config).await;
    let mut feed = Sse::open(&first.address, "/v1/events", &[]).await;
    assert_eq!(feed.next().await.event, "snapshot");
    transition(&first.address, &agents[0].id, other_state(&agents[0].state)).await;
    let seen = feed.next_of("agent.state_changed").await;
    let seen_id = seen.id.unwrap();
    // The stream ends when the server stops.
    first.stop().await;
    let second = Served::start(&config).await;
    for agent in &agents[1..4] {
        transition(&second.address, &agent.id, other_state(&agent.state)).await;
    }
    let mut resumed = Sse::open(
        &second.address,
        "/v1/events",
        &[("Last-Event-ID", &seen_id)],
    )
    .await;
    let board = resumed.next().await;
    assert_eq!(
        board.event, "metrics",
        "a resume starts with the current board"
    );
    let store = wfmd::store::Store::open(&db.url()).await.unwrap();
    let all = outbox_ids(&store).await;
    let missed: Vec<String> = all
        .iter()
        .skip_while(|id| **id != seen_id)
        .skip(1)
        .cloned()
        .collect();
    assert_eq!(missed.len(), 3);
    let mut replayed = Vec::new();
    while replayed.len() < missed.len() {
        let event = resumed.next().await;
        assert_ne!(event.event, "snapshot", "the id is known: no snapshot");
        if let Some(id) = event.id {
            replayed.push(id);
        }
    }
    assert_eq!(replayed, missed, "exactly what was missed, in order");
    // An id wfmd never issued (or pruned) gets a fresh snapshot.
    let mut unknown = Sse::open(
        &second.address,
        "/v1/events?last_event_id=evt_00000000000000000000000000000000",
        &[],
    )
    .await;
    let snapshot = unknown.next().await;
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.id.as_ref(), all.last());
    second.stop().await;
}

/// Commits `count` events with `padding` bytes each straight to the outbox, the way
/// the engine does (one transaction, then the commit watch).
async fn flood(store: &wfmd::store::Store, count: usize, padding: usize) {
    let pad = "x".repeat(padding);
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let mut tx = store.begin_write().await.unwrap();
        let events: Vec<outbox::NewEvent<'_>> = chunk
            .iter()
            .map(|i| outbox::NewEvent {
                agent_id: Some("u_flood"),
                at: Utc::now(),
                event: Event::AgentStateChanged(StateChanged {
                    agent_id: "u_flood".into(),
                    from: None,
                    to: AgentState::Ready,
                    reason_code: Some(pad.clone()),
                    origin: Origin::Api,
                    idle_ms: 0,
                    latency_ms: None,
                    attempt_id: Some(format!("n{i}")),
                    queue: None,
                    changed_at: None,
                    deferred_id: None,
                }),
            })
            .collect();
        outbox::enqueue_all(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();
        store.notify_outbox();
    }
}

#[tokio::test]
async fn a_stalled_client_does_not_delay_another_and_is_resynced_not_given_a_gap() {
    let app = spawn_with_roster().await;
    // The roster's arrival is sent to every client as a snapshot: let it come first,
    // so a snapshot below can only mean a client fell behind.
    wait_for_roster(&app.address, None).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    // A client that sends its request and then never reads a byte.
    let mut stalled = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    stalled
        .write_all(b"GET /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut live = Sse::open(&app.address, "/v1/events", &[]).await;
    assert_eq!(live.next().await.event, "snapshot");
    // Far more than the per-client ring (1,024) and the socket buffers hold, in
    // bursts the reading client keeps up with.
    let (count, burst) = (3000, 100);
    let mut got = Vec::with_capacity(count);
    for _ in 0..count / burst {
        flood(&app.store, burst, 4096).await;
        let target = got.len() + burst;
        while got.len() < target {
            let event = live.next().await;
            assert_ne!(event.event, "snapshot", "the reading client never lagged");
            if let Some(id) = event.id {
                got.push(id);
            }
        }
    }
    let ids = outbox_ids(&app.store).await;
    assert_eq!(got, ids, "the reading client got every event in order");
    // The stalled client, read at last: a fresh snapshot where it fell behind, then
    // events after it, never a silent gap.
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let text = loop {
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout_at(deadline, stalled.read(&mut chunk))
            .await
            .expect("the stalled client is sent the rest")
            .unwrap();
        buffer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if text.matches("event: snapshot").count() >= 2 && text.contains(ids.last().unwrap()) {
            break text;
        }
    };
    let last_snapshot = text.rfind("event: snapshot").unwrap();
    let snapshot_ids: Vec<&str> = text[..last_snapshot]
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert!(
        snapshot_ids.len() < count,
        "it fell behind and was resynced ({} events before the snapshot)",
        snapshot_ids.len()
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(LIVE_RESYNCS_TOTAL), "{metrics}");
}

#[tokio::test]
async fn a_ticket_opens_the_feed_once_and_a_viewer_may_watch_but_not_act() {
    let app = spawn_with_roles().await;
    let viewer = As::Viewer.token().unwrap();
    let ask = || async {
        let response = app
            .http
            .post(format!("{}/v1/live/tickets", app.address))
            .bearer_auth(viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["expires_in"], 60);
        body["ticket"].as_str().unwrap().to_owned()
    };
    let ticket = ask().await;
    let mut feed = Sse::open(&app.address, &format!("/v1/events?ticket={ticket}"), &[]).await;
    assert_eq!(feed.next().await.event, "snapshot");
    let again = app
        .http
        .get(format!("{}/v1/events?ticket={ticket}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401, "single use");
    assert!(
        again.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    for refused in [
        "/v1/events".to_owned(),
        "/v1/events?ticket=tkt_made-up".to_owned(),
        format!("/v1/live?ticket={}", ask().await),
    ] {
        let status = app.get(&refused).await.status();
        assert_eq!(status, 401, "{refused}");
    }
    // The WebSocket takes a ticket the same way.
    let mut socket = Ws::open(&app.address, &format!("?ticket={}", ask().await)).await;
    assert_eq!(socket.next().await["type"], "snapshot");
    socket.0.close(None).await.unwrap();
    // A viewer watches but does not act.
    let agent = app.sim.free_agents().remove(0);
    for (path, body) in [
        (
            format!("/v1/agents/{}/transitions", agent.id),
            json!({"state": "NOT_READY"}),
        ),
        (
            "/v1/bulk-transitions".to_owned(),
            json!({"agents": [agent.id], "state": "NOT_READY"}),
        ),
    ] {
        let response = app
            .http
            .post(format!("{}{path}", app.address))
            .bearer_auth(viewer)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }
    assert_eq!(app.sim.calls(crate::helpers::SET_STATE), 0);
}

#[tokio::test]
async fn the_websocket_carries_the_same_messages_as_json_frames() {
    let app = spawn_with_roster().await;
    wait_for_roster(&app.address, None).await;
    let mut socket = Ws::open(&app.address, "").await;
    let snapshot = socket.next().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["data"]["agents"].as_array().unwrap().len(), 60);
    let agent = movable(&app.sim).remove(0);
    let target = other_state(&agent.state);
    let (status, _) = app.set_state(&agent.id, target).await;
    assert_eq!(status, 200);
    let event = loop {
        let message = socket.next().await;
        if message["type"] == "agent.state_changed" {
            break message;
        }
    };
    assert_eq!(event["data"]["agentId"], agent.id.as_str());
    assert_eq!(event["data"]["to"], target);
    assert_eq!(event["id"], outbox_ids(&app.store).await[0].as_str());
}

#[tokio::test]
async fn a_snapshot_longer_than_a_websocket_fragment_arrives_as_one_message() {
    // 400 agents make a snapshot of about 80 KB, sent in 16 KB fragments.
    let sim = TestSim::start(wfmd::sim::SimConfig {
        agents: 400,
        ..wfmd::sim::SimConfig::default()
    })
    .await;
    let app = TestApp::spawn_with(sim, |config| config.live.enabled = true).await;
    let served = wait_for_roster(&app.address, None).await;
    let text = Ws::open(&app.address, "").await.next_text().await;
    assert!(text.len() > 64 * 1024, "a {} byte snapshot", text.len());
    let snapshot: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["data"]["agents"], served["agents"]);
}

#[tokio::test]
async fn watching_clients_cause_no_platform_call() {
    // The pollers' next round an hour away, so no call of theirs can fall in the watch
    // however slowly it goes.
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.live.enabled = true;
        config.live.skill_interval = Duration::from_secs(3600);
        config.live.queue_interval = Duration::from_secs(3600);
    })
    .await;
    wait_for_roster(&app.address, None).await;
    // The pollers' first round is done.
    eventually("the pollers' first round did not end", async || {
        let snapshot: Value = app.get("/v1/live").await.json().await.unwrap();
        if snapshot["skills_polled_at"].is_string() && snapshot["queues_polled_at"].is_string() {
            Ok(())
        } else {
            Err(snapshot.to_string())
        }
    })
    .await;
    let before = app.sim.sim.stats().api_requests;
    let mut feeds = Vec::new();
    for _ in 0..20 {
        let mut feed = Sse::open(&app.address, "/v1/events", &[]).await;
        assert_eq!(feed.next().await.event, "snapshot");
        feeds.push(feed);
    }
    for _ in 0..50 {
        assert_eq!(app.get("/v1/live").await.status(), 200);
    }
    let ticket: Value = app
        .http
        .post(format!("{}/v1/live/tickets", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ticket["ticket"].is_string());
    assert_eq!(app.sim.sim.stats().api_requests, before);
}

#[tokio::test]
async fn the_wallboard_page_is_served_self_contained() {
    let app = TestApp::spawn().await;
    let response = app.get("/?kiosk=1").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("id=\"conn\""));
    assert!(!page.contains("https://"), "nothing from outside");
}

#[tokio::test]
async fn without_tokens_the_feed_needs_no_ticket_and_ignores_a_stale_one() {
    // Every caller is the local admin: a ticket proves nothing more, so a used or
    // made-up one must not lock a page out (as a stray bearer header does not).
    let app = TestApp::spawn().await;
    let mut feed = Sse::open(&app.address, "/v1/events?ticket=tkt_made-up", &[]).await;
    assert_eq!(feed.next().await.event, "snapshot");
    let mut socket = Ws::open(&app.address, "?ticket=tkt_made-up").await;
    assert_eq!(socket.next().await["type"], "snapshot");
}

/// The page says that a platform without queue objects shows its skills as queues.
async fn the_snapshot_says_whether_the_queue_tiles_are_the_platforms_skills(dialect: Dialect) {
    let app = TestApp::spawn_with(TestSim::default_tenant().await.on(dialect), |_| {}).await;
    let snapshot: Value = app.get("/v1/live").await.json().await.unwrap();
    assert_eq!(
        snapshot["queues_are_skills"],
        dialect == Dialect::Incontact,
        "{dialect:?}"
    );
    app.stop().await;
}
on_both_dialects!(the_snapshot_says_whether_the_queue_tiles_are_the_platforms_skills);

on_both_dialects!(the_wallboard_definitions_name_each_skills_threshold_as_the_platform_sends_it);
/// The wallboard's "?" reads `GET /v1/reports/definitions?report=wallboard`: on the
/// incontact dialect each skill tile's row names the threshold (and goal) the platform's
/// skill activity sends for that skill, which the simulator varies from skill to skill;
/// the v2 dialect's skill data carries none, and the definitions say it is not reported.
async fn the_wallboard_definitions_name_each_skills_threshold_as_the_platform_sends_it(
    dialect: Dialect,
) {
    let app = TestApp::spawn_with(TestSim::default_tenant().await.on(dialect), |config| {
        config.live.enabled = true;
    })
    .await;
    let definitions = eventually("no skill tile in the definitions", async || {
        let json: Value = app
            .get("/v1/reports/definitions?report=wallboard&format=json")
            .await
            .json()
            .await
            .unwrap();
        match json["service_levels"].as_array() {
            Some(skills) if !skills.is_empty() => Ok(json),
            _ => Err(json.to_string()),
        }
    })
    .await;
    assert_eq!(definitions["of"], "wallboard");
    let skills = definitions["service_levels"].as_array().unwrap();
    let csv = app
        .get("/v1/reports/definitions?report=wallboard&format=csv")
        .await
        .text()
        .await
        .unwrap();
    let mut thresholds = std::collections::BTreeSet::new();
    for skill in skills {
        let id = skill["skill_id"].as_str().unwrap();
        let row = csv
            .lines()
            .find(|line| line.starts_with(&format!("service_level[{id}],")))
            .unwrap_or_else(|| panic!("no CSV row for {id}: {csv}"));
        match dialect {
            Dialect::Incontact => {
                let sent = wfmd::sim::incontact::service_level_target(id);
                assert_eq!(skill["threshold_seconds"], sent.threshold_secs, "{skill}");
                let goal = skill["goal"].as_f64().unwrap();
                assert!(
                    (goal - f64::from(sent.goal_percent) / 100.0).abs() < 1e-9,
                    "{skill}"
                );
                let phrase = format!(
                    "answered within {} s (goal {} %)",
                    sent.threshold_secs, sent.goal_percent
                );
                assert!(row.contains(&phrase), "{phrase} missing from {row}");
                thresholds.insert(sent.threshold_secs);
            }
            Dialect::V2 => {
                assert!(skill["threshold_seconds"].is_null(), "{skill}");
                assert!(skill["goal"].is_null(), "{skill}");
                assert!(
                    row.contains("which the platform's skill data does not report"),
                    "{row}"
                );
            }
        }
    }
    if dialect == Dialect::Incontact {
        assert!(
            thresholds.len() > 1,
            "each skill its own threshold, not one for all: {thresholds:?}"
        );
    }
    app.stop().await;
}

/// A job whose one item waits for its busy agent does not move: once the client that
/// saw its progress left, the next client to come after nobody watched is sent it when
/// it connects, not when the job next moves (never, here).
#[tokio::test]
async fn a_client_connecting_mid_job_is_sent_its_progress_at_once() {
    use crate::deferred::{quiet, recorded_as, with_sync};

    let sim = TestSim::default_tenant().await.on(Dialect::Incontact);
    let busy = quiet(&sim)[0].clone();
    let app = TestApp::spawn_with(sim, |c| with_sync(c, Dialect::Incontact, None)).await;
    assert!(app.sim.sim.force_state(&busy, "ON_CONTACT", ""));
    recorded_as(&app.address, &busy, "ON_CONTACT").await;
    let response = app
        .http
        .post(format!("{}/v1/bulk-transitions", app.address))
        .json(&json!({"agents": [busy], "state": "NOT_READY", "when_busy": "defer"}))
        .send()
        .await
        .unwrap();
    let job_id = accepted_job_id(response).await;
    eventually("the item never waited", async || {
        let view: Value = app
            .get(&format!("/v1/bulk-transitions/{job_id}"))
            .await
            .json()
            .await
            .unwrap();
        match view["deferred"].as_i64() {
            Some(1) => Ok(()),
            _ => Err(view.to_string()),
        }
    })
    .await;
    let mut first = Ws::open(&app.address, "").await;
    loop {
        let message = first.next().await;
        if message["type"] == "bulk.progress" && message["data"]["deferred"] == 1 {
            break;
        }
    }
    first.0.close(None).await.unwrap();
    eventually("the first client never left", async || {
        let text = app.get("/metrics").await.text().await.unwrap();
        let open: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("wfmd_live_clients"))
            .collect();
        match open.iter().all(|line| line.ends_with(" 0")) {
            true if !open.is_empty() => Ok(()),
            _ => Err(open.join("\n")),
        }
    })
    .await;
    let mut feed = Sse::open(&app.address, "/v1/events", &[]).await;
    let progress = feed.next_of("bulk.progress").await;
    assert_eq!(
        progress.data["data"]["job_id"],
        job_id.as_str(),
        "{progress:?}"
    );
    assert_eq!(progress.data["data"]["status"], "running", "{progress:?}");
    app.stop().await;
}
