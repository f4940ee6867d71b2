//! Connections held open and answers cut off: a kept-alive connection is closed once it
//! has been idle for `server.idle_timeout`, idle connections make room for new clients
//! when `server.max_connections` (or a client's share) is reached, and an answer given
//! before the request's body was read still reaches the client (a lingering close).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wfmd::telemetry::names::{
    HTTP_CONNECTIONS_CLOSED_IDLE_TOTAL, HTTP_CONNECTIONS_TIMED_OUT_TOTAL,
};

use crate::auth::As;
use crate::helpers::{DEADLINE, TestApp, TestSim};
use crate::hostile::{closed_by_server, connect_from, counter, socket_address};

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";

/// Reads one complete answer (head and `content-length` body) from `stream`, leaving
/// the connection open; its head.
async fn read_answer(stream: &mut TcpStream, what: &str) -> String {
    let mut read = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&read[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or_else(|| panic!("{what}: an answer without a length: {head}"));
            if read.len() >= end + 4 + length {
                return head;
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => panic!("{what}: no complete answer after {DEADLINE:?}"),
            Ok(Ok(0)) => panic!(
                "{what}: closed before a complete answer: {}",
                String::from_utf8_lossy(&read)
            ),
            Ok(Err(error)) => panic!(
                "{what}: {error} before a complete answer: {}",
                String::from_utf8_lossy(&read)
            ),
            Ok(Ok(n)) => read.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `n` connections from the loopback address `from`, each of which asked `/healthz`
/// once, was answered, and now sits idle; the first has been idle longest.
async fn idle_kept_alive(app: &TestApp, from: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let mut stream = connect_from(from, socket_address(app)).await;
        stream.write_all(HEALTHZ).await.unwrap();
        let head = read_answer(&mut stream, &format!("kept-alive connection {i}")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(stream);
    }
    held
}

/// What a client that asks `/healthz` on a fresh connection from `from` and then closes
/// is answered (empty when the connection was closed unanswered).
async fn healthz_from(app: &TestApp, from: &str) -> String {
    let mut stream = connect_from(from, socket_address(app)).await;
    // A connection closed as it was accepted may refuse the write.
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await;
    closed_by_server(&mut stream, "a fresh client's connection").await
}

#[tokio::test]
async fn a_kept_alive_connection_that_asked_once_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.server.idle_timeout = Duration::from_secs(1);
        // Far past the test's deadline: the head timer, set at connecting, must not be
        // what wakes the connection up and closes it.
        config.server.header_read_timeout = Duration::from_secs(600);
    })
    .await;
    let series = format!("{HTTP_CONNECTIONS_TIMED_OUT_TOTAL}{{timeout=\"idle_timeout\"}}");
    let before = counter(&app, &series).await;

    let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
    stream.write_all(HEALTHZ).await.unwrap();
    let head = read_answer(&mut stream, "the one request").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "kept alive: {head}");
    let rest = closed_by_server(
        &mut stream,
        "a kept-alive connection idle past idle_timeout",
    )
    .await;
    assert_eq!(rest, "", "nothing more was sent");

    let after = counter(&app, &series).await;
    assert!(
        after > before,
        "the idle timeout is counted: {before} -> {after}"
    );
}

/// With `n` idle kept-alive connections from 127.0.0.2 holding every place a new
/// connection from `fresh` may take: that client is answered, the connection idle
/// longest was closed in its place, and `limit`'s count of such closings went up.
async fn the_longest_idle_makes_room(app: &TestApp, n: usize, fresh: &str, limit: &str) {
    let series = format!("{HTTP_CONNECTIONS_CLOSED_IDLE_TOTAL}{{limit=\"{limit}\"}}");
    let before = counter(app, &series).await;
    let mut held = idle_kept_alive(app, "127.0.0.2", n).await;

    let answer = healthz_from(app, fresh).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let longest_idle = closed_by_server(&mut held[0], "the longest idle connection").await;
    assert_eq!(longest_idle, "", "closed without a word");

    let after = counter(app, &series).await;
    assert!(
        after > before,
        "the closing is counted: {before} -> {after}"
    );
}

#[tokio::test]
async fn a_new_client_is_served_when_idle_kept_alive_connections_hold_every_place() {
    const MAX: usize = 8;
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.server.max_connections = MAX;
        config.server.max_connections_per_client = MAX;
    })
    .await;
    the_longest_idle_makes_room(&app, MAX, "127.0.0.3", "max_connections").await;
}

#[tokio::test]
async fn a_client_past_its_share_has_its_longest_idle_connection_closed_instead_of_the_new_one_refused()
 {
    const SHARE: usize = 4;
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.server.max_connections_per_client = SHARE;
    })
    .await;
    the_longest_idle_makes_room(&app, SHARE, "127.0.0.2", "max_connections_per_client").await;
}

/// Sends a change with a 3 MB body (`token`'s, if any) and then reads the answer: the
/// answer, and whether the whole body could be written.
async fn answer_to_a_large_body(app: &TestApp, token: Option<&str>) -> (String, bool) {
    const LENGTH: usize = 3_000_000;
    let agent = app.sim.free_agents().remove(0);
    // A small send buffer, as over a real network: the body is still on its way when
    // the answer comes (on loopback the kernel's buffers would take it all at once).
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(32 * 1024).unwrap();
    let mut stream = socket.connect(socket_address(app)).await.unwrap();
    let authorization = token.map_or(String::new(), |token| {
        format!("authorization: Bearer {token}\r\n")
    });
    let head = format!(
        "POST /v1/agents/{}/transitions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         content-type: application/json\r\ncontent-length: {LENGTH}\r\n{authorization}\r\n",
        agent.id
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // As Python's urllib does: the whole body first, the answer after.
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    let mut written = true;
    while sent < LENGTH {
        let n = chunk.len().min(LENGTH - sent);
        if stream.write_all(&chunk[..n]).await.is_err() {
            written = false;
            break;
        }
        sent += n;
    }
    let answer = closed_by_server(&mut stream, "a connection answered early").await;
    let complete = answer.split_once("\r\n\r\n").is_some_and(|(head, body)| {
        head.lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .and_then(|length| length.trim().parse::<usize>().ok())
            == Some(body.len())
    });
    assert!(complete, "a complete answer, not {answer:?}");
    (answer, written)
}

#[tokio::test]
async fn an_answer_given_before_a_large_body_was_read_reaches_the_client() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.api_tokens = crate::auth::role_entries();
    })
    .await;
    // Past the body limit: 413 before the body is read.
    let (answer, written) = answer_to_a_large_body(&app, As::Supervisor.token()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(written, "the body was taken while the answer waited");
    // Without a token: 401 before the body is read.
    let (answer, written) = answer_to_a_large_body(&app, None).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(written, "the body was taken while the answer waited");
}
