//! A webhook receiver for tests: a real HTTP server that records every request and can
//! be told to fail, stall, answer 410 or 429, redirect elsewhere, or go away entirely.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tokio::net::TcpListener;

/// A Standard Webhooks secret for tests (the spec's example).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Ok,
    Fail(u16),
    /// Wait this long before answering 204.
    Stall(Duration),
    /// 410 Gone for events of this type, 204 for others.
    GoneFor(&'static str),
    /// 429 with `Retry-After: N`.
    RateLimited(u64),
    /// This status with `Location:` the `/hooks` of that address, with a user part and a
    /// query token in it ([`REDIRECT_USER`], [`REDIRECT_TOKEN`]).
    RedirectTo(u16, SocketAddr),
}

/// The user part of a [`Mode::RedirectTo`] location, which must never be shown.
pub const REDIRECT_USER: &str = "admin:redirect-pw";
/// The query token of a [`Mode::RedirectTo`] location, which must never be shown.
pub const REDIRECT_TOKEN: &str = "redirect-token-123";

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub json: Value,
    /// When it was accepted.
    pub at: tokio::time::Instant,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Modes for the next requests, used up in order before `mode`.
    script: Vec<Mode>,
    mode: Option<Mode>,
    /// Every request before this instant gets 503 (a timed outage).
    down_until: Option<tokio::time::Instant>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    pub address: SocketAddr,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            inner: Arc::default(),
            address: listener.local_addr().unwrap(),
        };
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(receiver.inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.address)
    }

    /// The receiver's backend goes away: every request gets 503 (as from a load
    /// balancer) until [`Receiver::come_back`]. The port stays bound: a freed port can be
    /// taken by another connection's source port before it could be bound again.
    pub fn go_down(&self) {
        self.set_mode(Mode::Fail(503));
    }

    /// The backend is away until `until`: 503 to every request before it, whatever
    /// the mode.
    pub fn go_down_until(&self, until: tokio::time::Instant) {
        self.inner.lock().unwrap().down_until = Some(until);
    }

    pub fn come_back(&self) {
        self.set_mode(Mode::Ok);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = Some(mode);
    }

    /// The next requests are answered with `modes`, in order.
    pub fn script(&self, modes: &[Mode]) {
        self.inner.lock().unwrap().script = modes.iter().rev().copied().collect();
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Distinct webhook ids received.
    pub fn distinct(&self) -> HashSet<String> {
        self.received().into_iter().map(|r| r.id).collect()
    }

    /// Waits until `count` distinct events have arrived, failing after `deadline`.
    pub async fn wait_for(&self, count: usize, deadline: Duration) {
        self.wait_until(count, tokio::time::Instant::now() + deadline)
            .await;
    }

    /// Waits until `count` distinct events have arrived, failing at `until`.
    pub async fn wait_until(&self, count: usize, until: tokio::time::Instant) {
        let within = until.saturating_duration_since(tokio::time::Instant::now());
        let what = format!("{count} webhooks did not arrive");
        crate::helpers::eventually_within(within, &what, async || {
            let got = self.distinct().len();
            if got >= count {
                Ok(())
            } else {
                Err(format!("only {got} arrived"))
            }
        })
        .await;
    }

    /// Times each id was received.
    pub fn copies(&self) -> HashMap<String, usize> {
        let mut copies = HashMap::new();
        for r in self.received() {
            *copies.entry(r.id).or_default() += 1;
        }
        copies
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let body = String::from_utf8(body.to_vec()).unwrap();
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mode = {
        let mut inner = inner.lock().unwrap();
        if inner
            .down_until
            .is_some_and(|until| tokio::time::Instant::now() < until)
        {
            Mode::Fail(503)
        } else {
            inner.script.pop().or(inner.mode).unwrap_or(Mode::Ok)
        }
    };
    // A stalled answer counts only once given: a client that gave up first never
    // learned it was accepted.
    if let Mode::Stall(wait) = mode {
        tokio::time::sleep(wait).await;
    }
    {
        let mut inner = inner.lock().unwrap();
        let accepted = match mode {
            Mode::Ok | Mode::Stall(_) => true,
            Mode::GoneFor(kind) => json["type"] != kind,
            _ => false,
        };
        // Only what the receiver accepted counts as received.
        if accepted {
            inner.received.push(Received {
                id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signature: header("webhook-signature"),
                body: body.clone(),
                json: json.clone(),
                at: tokio::time::Instant::now(),
            });
        }
    }
    match mode {
        Mode::Ok => StatusCode::NO_CONTENT.into_response(),
        Mode::Fail(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Mode::Stall(_) => StatusCode::NO_CONTENT.into_response(),
        Mode::GoneFor(kind) if json["type"] == kind => StatusCode::GONE.into_response(),
        Mode::GoneFor(_) => StatusCode::NO_CONTENT.into_response(),
        Mode::RateLimited(seconds) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", seconds.to_string())],
        )
            .into_response(),
        Mode::RedirectTo(status, to) => (
            StatusCode::from_u16(status).unwrap(),
            [(
                "location",
                format!("http://{REDIRECT_USER}@{to}/hooks?token={REDIRECT_TOKEN}"),
            )],
        )
            .into_response(),
    }
}

/// Verifies every received request with the Standard Webhooks project's own Rust
/// library (an implementation independent of wfmd's signing code). Returns how many
/// verified, or names the first that does not.
pub fn verify_with_standardwebhooks(received: &[Received]) -> Result<usize, String> {
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    for r in received {
        let mut headers = axum::http::HeaderMap::new();
        for (name, value) in [
            ("webhook-id", &r.id),
            ("webhook-timestamp", &r.timestamp),
            ("webhook-signature", &r.signature),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        verifier
            .verify(r.body.as_bytes(), &headers)
            .map_err(|e| format!("delivery {} does not verify: {e:?}", r.id))?;
    }
    Ok(received.len())
}
