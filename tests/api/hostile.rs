//! The HTTP edge under hostile input: floods of idle and half-open connections, foreign
//! `Host` and `Origin` (DNS rebinding), one caller hoarding the live feed, forged
//! request ids, pages without a content policy, and answers that never come.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wfmd::telemetry::names::{
    HTTP_CONNECTIONS_CLOSED_IDLE_TOTAL, HTTP_CONNECTIONS_REFUSED_TOTAL,
    HTTP_CONNECTIONS_TIMED_OUT_TOTAL,
};

use crate::auth::As;
use crate::helpers::{DEADLINE, Daemon, TestApp, TestDb, TestSim, http_client};
use crate::live::Sse;

/// The port of `app`.
pub(crate) fn socket_address(app: &TestApp) -> SocketAddr {
    app.address.trim_start_matches("http://").parse().unwrap()
}

/// A connection to `to` from the loopback address `from` (all of 127.0.0.0/8 is this
/// host), so one test can play two clients.
pub(crate) async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes `stream` (end of stream or reset), failing the test
/// after the deadline; what was read.
pub(crate) async fn closed_by_server(stream: &mut TcpStream, what: &str) -> String {
    let mut read = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => panic!("{what} is still open after {DEADLINE:?}"),
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&read).into_owned(),
            Ok(Ok(n)) => read.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A client that opens a connection per request: with an idle timeout of a second, a
/// pooled connection may be closed by wfmd just as the client sends on it again.
pub(crate) fn unpooled() -> reqwest::Client {
    http_client();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The text of `/metrics`.
pub(crate) async fn metrics(app: &TestApp) -> String {
    unpooled()
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the counter `name{label}` in `/metrics` (0 when absent).
pub(crate) async fn counter(app: &TestApp, series: &str) -> f64 {
    let text = metrics(app).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_flood_of_idle_and_half_open_connections_is_capped_and_timed_out_while_healthz_answers() {
    const PER_CLIENT: usize = 12;
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        let s = &mut config.server;
        s.max_connections_per_client = PER_CLIENT;
        s.header_read_timeout = Duration::from_millis(600);
        s.body_timeout = Duration::from_millis(600);
        s.idle_timeout = Duration::from_millis(900);
    })
    .await;
    let to = socket_address(&app);
    let per_client = "{limit=\"max_connections_per_client\"}";
    let refused_series = format!("{HTTP_CONNECTIONS_REFUSED_TOTAL}{per_client}");
    let closed_series = format!("{HTTP_CONNECTIONS_CLOSED_IDLE_TOTAL}{per_client}");
    let refused_before = counter(&app, &refused_series).await;
    let closed_before = counter(&app, &closed_series).await;

    // The flood, from 127.0.0.2: idle sockets, heads cut short, bodies that stall, and
    // a kept-alive connection that asks once and then sits. Beyond its share.
    let mut flood = Vec::new();
    for i in 0..PER_CLIENT + 8 {
        let mut stream = connect_from("127.0.0.2", to).await;
        let start: &[u8] = match i % 4 {
            0 => b"",
            1 => b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ",
            2 => {
                b"POST /v1/agents/u_001/transitions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                    content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"sta"
            }
            _ => b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
        };
        // A refused connection may already be closed: writing to it may fail.
        let _ = stream.write_all(start).await;
        flood.push((i % 4, stream));
    }

    // A client within its own share is served all along.
    let healthz = tokio::time::timeout(
        DEADLINE,
        unpooled().get(format!("{}/healthz", app.address)).send(),
    )
    .await
    .expect("/healthz answers during the flood")
    .unwrap();
    assert_eq!(healthz.status(), 200);

    // Every flood connection is closed: those past the share at once or, while the
    // flood has idle ones of its own, its longest idle ones in their place; the others
    // after their timeout. The kept-alive one was answered first.
    for (kind, mut stream) in flood {
        let what = [
            "an idle socket",
            "a half-sent head",
            "a stalled body",
            "an idle keep-alive",
        ][kind];
        let read = closed_by_server(&mut stream, what).await;
        if kind == 3 && !read.is_empty() {
            assert!(read.starts_with("HTTP/1.1 200"), "{read}");
        }
        assert!(
            !read.contains("HTTP/1.1 2") || kind == 3,
            "{what} was answered as if complete: {read}"
        );
    }
    let refused = counter(&app, &refused_series).await - refused_before;
    let closed = counter(&app, &closed_series).await - closed_before;
    assert!(
        refused + closed >= 8.0,
        "the connections past the share were refused ({refused}) or made room ({closed})"
    );

    // Their places came back.
    let mut again = connect_from("127.0.0.2", to).await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_by_server(&mut again, "a request with connection: close").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let timed_out = metrics(&app).await;
    for timeout in ["header_read_timeout", "idle_timeout"] {
        assert!(
            timed_out.contains(&format!(
                "{HTTP_CONNECTIONS_TIMED_OUT_TOTAL}{{timeout=\"{timeout}\"}}"
            )),
            "{timeout} is counted"
        );
    }
}

#[tokio::test]
async fn a_kept_alive_connection_serves_requests_until_its_limit_then_closes() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.server.max_requests_per_connection = 3;
    })
    .await;
    let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
    for _ in 0..3 {
        stream.write_all(request).await.unwrap();
    }
    let answers = closed_by_server(&mut stream, "a connection past its requests").await;
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 3, "{answers}");
    assert_eq!(
        answers.matches("connection: close").count(),
        1,
        "the last answer says so: {answers}"
    );
}

#[tokio::test]
async fn a_foreign_host_is_misdirected_and_a_foreign_origin_may_not_act_or_open_the_feed() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0);
    let own = app.address.clone();

    // DNS rebinding: a page under another name that resolves to this host.
    for host in [
        "attacker.example",
        "attacker.example:8080",
        "localhost.attacker.example",
    ] {
        let response = app
            .http
            .get(format!("{own}/v1/live"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 421, "{host}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:wfmd:problem:misdirected-request");
    }
    for host in ["localhost", "127.0.0.1", "[::1]:80"] {
        let response = app
            .http
            .get(format!("{own}/v1/live"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }

    // A page elsewhere may not change anything, nor open the feed.
    let post = |origin: &'static str| {
        app.http
            .post(format!("{own}/v1/agents/{}/transitions", agent.id))
            .header("origin", origin)
            .json(&json!({"state": "NOT_READY"}))
            .send()
    };
    for origin in ["http://attacker.example", "http://127.0.0.1:1", "null"] {
        let response = post(origin).await.unwrap();
        assert_eq!(response.status(), 403, "{origin}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:wfmd:problem:cross-origin");
    }
    assert_eq!(app.sim.changes(), 0, "nothing reached the platform");
    let events = app
        .http
        .get(format!("{own}/v1/events"))
        .header("origin", "http://attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 403);
    ws_refused(ws_request(&own, "/v1/ws", "http://attacker.example")).await;

    // The page wfmd served (same origin) may, and so may callers sending no Origin.
    let mut sse = Sse::open(&own, "/v1/events", &[("origin", own.as_str())]).await;
    assert_eq!(sse.next().await.event, "snapshot");
    ws_opens_with_a_snapshot(ws_request(&own, "/v1/ws", &own)).await;
    let same_origin = app
        .http
        .post(format!("{own}/v1/agents/{}/transitions", agent.id))
        .header("origin", own.as_str())
        .json(&json!({"state": "NOT_READY"}))
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), 200);
    assert_eq!(
        app.set_state(&agent.id, "READY").await.0,
        200,
        "no Origin: a script"
    );
}

type WsRequest = tokio_tungstenite::tungstenite::handshake::client::Request;

/// A WebSocket request for the feed at `path` on `address`, from the page at `origin`.
pub fn ws_request(address: &str, path: &str, origin: &str) -> WsRequest {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{path}", address.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    request
}

/// Fails the test unless the WebSocket `request` asks for is refused 403.
pub async fn ws_refused(request: WsRequest) {
    let what = request.uri().to_string();
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403, "{what}")
        }
        other => panic!("a foreign page opened {what}: {:?}", other.map(|r| r.1)),
    }
}

/// Fails the test unless the WebSocket `request` asks for opens, the snapshot first.
pub async fn ws_opens_with_a_snapshot(request: WsRequest) {
    let what = request.uri().to_string();
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("{what} did not open: {e}"));
    let first = tokio::time::timeout(DEADLINE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        first.into_text().unwrap().contains("\"snapshot\""),
        "{what}"
    );
}

#[tokio::test]
async fn an_allowed_host_name_is_served_and_its_pages_may_act() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.server.allowed_hosts = vec!["wfm.example.com".into()];
    })
    .await;
    // Behind a TLS proxy that keeps the name.
    let response = app
        .http
        .post(format!("{}/v1/live/tickets", app.address))
        .header("host", "wfm.example.com")
        .header("origin", "https://wfm.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// Asks `n` tickets as `who`, returning each answer's status (and the last answer).
async fn tickets(app: &TestApp, who: As, n: usize) -> (Vec<u16>, reqwest::Response) {
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..n {
        let response = app
            .http
            .post(format!("{}/v1/live/tickets", app.address))
            .bearer_auth(who.token().unwrap())
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        last = Some(response);
    }
    (statuses, last.unwrap())
}

async fn refusal(response: reqwest::Response, limit: &str, max: u64) {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["limit"], limit, "{problem}");
    assert_eq!(problem["max"], max, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains(limit),
        "{problem}"
    );
}

#[tokio::test]
async fn one_caller_using_up_its_tickets_and_streams_does_not_lock_out_another() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.api_tokens = crate::auth::role_entries();
        config.live.max_tickets_per_caller = 4;
        config.live.max_streams_per_caller = 2;
    })
    .await;

    let (statuses, refused) = tickets(&app, As::Viewer, 5).await;
    assert_eq!(statuses, [201, 201, 201, 201, 429]);
    refusal(refused, "live.max_tickets_per_caller", 4).await;
    let (statuses, admin_ticket) = tickets(&app, As::Admin, 1).await;
    assert_eq!(statuses, [201], "the admin still gets a ticket");
    let admin_ticket: Value = admin_ticket.json().await.unwrap();

    let viewer = format!("Bearer {}", As::Viewer.token().unwrap());
    let auth = [("authorization", viewer.as_str())];
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut sse = Sse::open(&app.address, "/v1/events", &auth).await;
        assert_eq!(sse.next().await.event, "snapshot");
        open.push(sse);
    }
    let third = app
        .http
        .get(format!("{}/v1/events", app.address))
        .header("authorization", viewer.as_str())
        .send()
        .await
        .unwrap();
    refusal(third, "live.max_streams_per_caller", 2).await;

    // Another caller is not held to the viewer's share.
    let mut admin = Sse::open(
        &app.address,
        &format!(
            "/v1/events?ticket={}",
            admin_ticket["ticket"].as_str().unwrap()
        ),
        &[],
    )
    .await;
    assert_eq!(admin.next().await.event, "snapshot");

    // A stream that ends gives its place back.
    drop(open.pop());
    crate::helpers::wait_until("the closed stream's place never came back", || async {
        let response = app
            .http
            .get(format!("{}/v1/events", app.address))
            .header("authorization", viewer.as_str())
            .send()
            .await
            .unwrap();
        if response.status() != 200 {
            assert_eq!(response.status(), 429);
        }
        response.status() == 200
    })
    .await;
}

/// The daemon's log so far.
fn log_text(path: &std::path::Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Waits until the daemon's log at `path` contains `needle`; returns the log.
async fn logged(path: &std::path::Path, needle: &str) -> String {
    crate::helpers::eventually(&format!("`{needle}` never reached the log"), || async {
        let text = log_text(path);
        if text.contains(needle) {
            Ok(text)
        } else {
            Err(String::new())
        }
    })
    .await
}

#[tokio::test]
async fn a_long_or_forged_request_id_is_neither_logged_nor_echoed() {
    // A child process with its own log: a subscriber set for this test's thread would
    // miss events whose interest other tests' threads settled first.
    let sim = TestSim::default_tenant().await;
    let db = TestDb::new();
    let log = db.dir.path().join("wfmd.log");
    let mut env = sim.env(&db.url());
    env.push(("WFMD_LOG__LEVEL".to_owned(), "debug".to_owned()));
    let daemon = Daemon::spawn_logging_to(&env, &log).await;
    let http = http_client();

    let long = "A".repeat(60 * 1024);
    for (id, what) in [
        (long.as_str(), "forged"),
        ("x request_id=forged route=/v1/audit", "request_id=forged"),
        ("x\tcaller=forged", "caller=forged"),
        ("<script>", "<script>"),
    ] {
        let response = http
            .get(format!("{}/healthz", daemon.address))
            .header("x-request-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            uuid::Uuid::parse_str(&echoed).is_ok(),
            "a fresh id, not {echoed:.80}"
        );
        let text = logged(&log, &echoed).await;
        assert!(
            text.contains(&format!("request_id={echoed}")),
            "the fresh id is logged as the request's id"
        );
        let marker = if what == "forged" { &long[..200] } else { what };
        assert!(
            !text.contains(marker),
            "the client's id reached the log: {marker:.80}"
        );
    }
    let plain = "req-7f3a.b_c:9";
    let response = http
        .get(format!("{}/healthz", daemon.address))
        .header("x-request-id", plain)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-request-id"],
        plain,
        "a plain id is kept"
    );
    let text = logged(&log, plain).await;
    assert!(
        text.contains(&format!("request_id={plain}")),
        "{text:.2000}"
    );
}

#[tokio::test]
async fn the_wallboard_and_html_reports_carry_a_content_policy_nosniff_and_no_framing() {
    let app = TestApp::spawn().await;
    for path in ["/", "/?kiosk=1"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'sha256-"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
    }
    let from = wfmd::time::rfc3339(Utc::now() - chrono::TimeDelta::hours(1));
    let report = app
        .http
        .get(format!("{}/v1/reports/compliance", app.address))
        .query(&[("from", from.as_str()), ("format", "html")])
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200);
    assert!(
        report.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = report.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    assert!(!policy.contains("script-src"), "no script at all: {policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(report.headers()["x-content-type-options"], "nosniff");
    assert_eq!(report.headers()["x-frame-options"], "DENY");
    let json = app.get("/healthz").await;
    assert_eq!(json.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_request_past_the_request_timeout_is_a_503_while_a_stream_that_began_goes_on() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.server.request_timeout = Duration::from_millis(300);
    })
    .await;
    let free = app.sim.free_agents();
    let (stuck, later) = (&free[0], &free[1]);
    let mut feed = Sse::open(&app.address, "/v1/events", &[]).await;
    assert_eq!(feed.next().await.event, "snapshot");

    // The platform stops answering.
    app.sim.sim.set_faults(wfmd::sim::Faults {
        timeout_ratio: 1.0,
        ..wfmd::sim::Faults::default()
    });
    let response = tokio::time::timeout(
        DEADLINE,
        app.transition(&stuck.id, json!({"state": "NOT_READY"})),
    )
    .await
    .expect("an answer, however slow the platform");
    assert_eq!(response.status(), 503);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:wfmd:problem:request-timeout",
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("server.request_timeout"),
        "{problem}"
    );
    app.sim.sim.set_faults(wfmd::sim::Faults::default());

    // The change that was cut off is still carried out and recorded.
    app.wait_for_count(
        "SELECT count(*) FROM transition_attempts",
        1,
        "the timed-out change is recorded",
    )
    .await;
    // The feed, opened long before the timeout, still streams.
    assert_eq!(app.set_state(&later.id, "NOT_READY").await.0, 200);
    loop {
        let event = feed.next_of("agent.state_changed").await;
        if event.data["data"]["agentId"] == later.id.as_str() {
            break;
        }
    }
}

#[tokio::test]
async fn the_systemd_unit_allows_the_descriptors_the_default_connection_cap_needs() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/wfmd.service"),
    )
    .unwrap();
    let limit: usize = unit
        .lines()
        .find_map(|line| line.strip_prefix("LimitNOFILE="))
        .expect("the unit sets LimitNOFILE")
        .trim()
        .parse()
        .unwrap();
    let defaults = wfmd::config::Config::default();
    assert!(
        limit >= defaults.server.max_connections + 256 + defaults.delivery.concurrency,
        "LimitNOFILE={limit}"
    );
}

/// A `wfmd serve --simulate` under a soft open-file limit of `soft` (and a hard one of
/// `hard`, if given), with its log; the soft limit it runs with, once it serves.
async fn served_under_file_limit(soft: u64, hard: Option<u64>) -> (u64, String) {
    let folder = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let limits = match hard {
        // The soft one first: it may not be above the hard one at any point.
        Some(hard) => format!("ulimit -S -n {soft} && ulimit -H -n {hard}"),
        None => format!("ulimit -S -n {soft}"),
    };
    let log = folder.path().join("wfmd.log");
    // The configuration environment `wfmd()` cleans, cleaned here too.
    let clean = crate::helpers::wfmd();
    let mut command = std::process::Command::new("sh");
    for (key, value) in clean.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let child = command
        .arg("-c")
        .arg(format!(
            "exec 2>\"$1\"; {limits} && exec \"$0\" serve --simulate"
        ))
        .arg(clean.get_program())
        .arg(&log)
        .current_dir(folder.path())
        .env("WFMD_LOG__LEVEL", "info")
        .env("WFMD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed when dropped, however the test ends.
    let daemon = crate::helpers::Daemon {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    crate::helpers::healthz_answers(&daemon.address, "wfmd did not come up").await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.child.id())).unwrap();
    drop(daemon);
    let soft = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    (soft, std::fs::read_to_string(&log).unwrap())
}

#[tokio::test]
async fn a_low_open_file_limit_is_raised_for_the_connection_cap_or_the_cap_lowered() {
    let defaults = wfmd::config::Config::default();
    let needed = (defaults.server.max_connections + 256 + defaults.delivery.concurrency) as u64;
    let (soft, log) = served_under_file_limit(256, None).await;
    let hard: u64 = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert_eq!(soft, needed.min(hard), "{log}");
    assert!(log.contains("raised the open-file limit"), "{log}");

    // A hard limit below the cap's needs: served, with a cap that fits and a warning.
    let (soft, log) = served_under_file_limit(1024, Some(1024)).await;
    assert_eq!(soft, 1024);
    assert!(log.contains("serving at most 736 connections"), "{log}");
    assert!(log.contains("LimitNOFILE"), "{log}");
}
