//! The live feed over HTTP (the wallboard and the console's other pages are `pages`'s).
//!
//! - `GET /v1/live`: the snapshot (agents, tiles, counts, the feed's last event id).
//! - `GET /v1/events`: Server-Sent Events: `snapshot` first, then typed events; `id:`
//!   on every durable event, a heartbeat comment every 15 s, `retry:` advice. A
//!   `Last-Event-ID` header (or `?last_event_id=`) resumes instead of a snapshot.
//! - `GET /v1/ws`: the same messages as JSON text frames over a WebSocket, with
//!   ping/pong keepalive and a `heartbeat` frame a browser's script can see.
//! - `POST /v1/live/tickets`: a 60 s single-use ticket; `/v1/events` and `/v1/ws`
//!   take `?ticket=` instead of the bearer header ([`ticket_gate`]), because a
//!   browser's `EventSource` and `WebSocket` cannot send headers, and a long-lived
//!   token in a URL ends up in proxy logs. Nothing else accepts a credential in a URL.
//!
//! Every client reads the one in-memory feed ([`crate::live`]); none causes a
//! platform call.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame as RawFrame};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use utoipa::openapi::{RefOr, Response as ApiResponse};

use super::Routes;
use super::auth::{Caller, CallerKey, Preauthenticated, invalid_credential};
use super::error::{Problem, problem_answers};
use super::extract::QueryParams;
use super::roles::VIEWER;
use super::serve::Connection;
use super::tenancy::{TenantScope, TenantState};
use crate::live::{Crowded, Feed, Message, Snapshot, Start, TICKET_TTL, TicketHolder};
use crate::telemetry::names::{
    API_REFUSALS_TOTAL, LIVE_CLIENTS_DROPPED_TOTAL, LIVE_REFUSALS_TOTAL,
};

/// What the browser is told to wait before reconnecting on its own (the page runs its
/// own backoff; this is for plain `EventSource` clients).
const RETRY_ADVICE: Duration = Duration::from_secs(1);

/// A WebSocket client that has not taken a frame for this long is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A WebSocket text message longer than this (the snapshot: about 460 KB for 2,000
/// agents) goes out in fragments of this size, and frames are written once this much is
/// buffered. The WebSocket library's write buffer keeps the capacity of the largest
/// frame it ever held, so a whole snapshot frame would stay allocated per client.
const WS_FRAGMENT: usize = 16 * 1024;

pub fn routes() -> Routes {
    vec![
        utoipa_axum::routes!(snapshot),
        utoipa_axum::routes!(events),
        utoipa_axum::routes!(websocket),
        utoipa_axum::routes!(ticket),
    ]
}

/// Where the feed starts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// A ticket from `POST /v1/live/tickets`, instead of the `Authorization` header.
    #[serde(default)]
    #[allow(dead_code)] // Redeemed by `ticket_gate` before the handler runs.
    ticket: Option<String>,
    /// Resume after this event id (as the `Last-Event-ID` header does).
    #[serde(default)]
    #[param(max_length = 64)]
    last_event_id: Option<String>,
}

/// Outbox ids are `evt_` and 32 hex digits; anything much longer is no id of ours.
pub(super) const MAX_EVENT_ID_LEN: usize = 64;

/// Where a feed starts: after the event `?last_event_id=` or the `Last-Event-ID` header
/// names, each as the document has it (up to [`MAX_EVENT_ID_LEN`] visible ASCII
/// characters); from a snapshot without either, or with an empty one.
fn start(headers: &HeaderMap, query: &FeedQuery) -> Result<Start, Problem> {
    let header = headers
        .get("last-event-id")
        .map(|v| checked_event_id("Last-Event-ID", v.as_bytes()))
        .transpose()?;
    let query = query
        .last_event_id
        .as_deref()
        .map(|id| checked_event_id("last_event_id", id.as_bytes()))
        .transpose()?;
    match query.or(header) {
        None | Some("") => Ok(Start::Fresh),
        Some(id) => Ok(Start::After(id.to_owned())),
    }
}

/// `id` when it is one the document allows, else a 400 naming `parameter`. Our ids are
/// ASCII, so anything else is no id of ours; refusing it, rather than starting from a
/// snapshot, tells a client that mangled its id.
fn checked_event_id<'a>(parameter: &str, id: &'a [u8]) -> Result<&'a str, Problem> {
    if id.len() > MAX_EVENT_ID_LEN || !id.iter().all(u8::is_ascii_graphic) {
        return Err(Problem::invalid_parameter(
            parameter,
            format!(
                "{parameter}: an event id is at most {MAX_EVENT_ID_LEN} visible ASCII \
                 characters (no spaces)"
            ),
        ));
    }
    Ok(std::str::from_utf8(id).expect("visible ASCII is UTF-8"))
}

/// Name of the schema of one Server-Sent Event of the feed, as an `EventSource` reads it.
const FEED_EVENT: &str = "FeedEvent";
/// Name of the schema of a `close` message's `data`.
const FEED_CLOSE: &str = "FeedClose";
/// Name of the schema of one message of the feed: an SSE event's `data`, a WebSocket
/// text frame.
const FEED_MESSAGE: &str = "FeedMessage";

/// States the feed's messages in the served document (`doc`): [`FEED_MESSAGE`], each
/// kind with its `data`, and [`FEED_EVENT`], the schema of every `text/event-stream`
/// answer. An OpenAPI 3.1 document describes an event stream by one event, so a
/// checker (schemathesis) reads the stream as events and validates each: `event`, `id`
/// and `retry` as sent, `data` a JSON text whose content is a [`FEED_MESSAGE`].
pub(super) fn describe(doc: &mut serde_json::Value) {
    use crate::domain::events::EventType;
    use serde_json::{Value, json};

    use super::schemas::{event_body, member, operations_json, reference};

    // A message that is not an outbox event: no id but a snapshot's, made now.
    let transient = |kind: &str, data: Value, id: Option<Value>| {
        let mut required = vec!["type", "tenant", "timestamp", "data"];
        let mut properties = json!({
            "type": {"const": kind},
            "tenant": {"type": "string", "description": "The tenant whose feed it is"},
            "timestamp": {"type": "string", "format": "date-time"},
            "data": data,
        });
        if let Some(id) = id {
            properties["id"] = id;
            required.push("id");
        }
        json!({"type": "object", "required": required, "properties": properties})
    };
    let mut messages = vec![
        transient(
            "snapshot",
            reference("Snapshot"),
            Some(json!({
                "type": ["string", "null"],
                "description": "The newest event the snapshot includes (null before the first)",
            })),
        ),
        transient("metrics", reference("Tiles"), None),
        transient("bulk.progress", reference("BulkJob"), None),
        transient(
            crate::live::ADHERENCE_CHANGED,
            reference("AdherenceRow"),
            None,
        ),
        transient("close", reference(FEED_CLOSE), None),
        transient("heartbeat", json!({"type": "null"}), None),
    ];
    messages.extend(EventType::ALL.into_iter().map(event_body));
    let kinds: Vec<Value> = messages
        .iter()
        .map(|message| message["properties"]["type"]["const"].clone())
        .filter(|kind| kind != "heartbeat")
        .collect();
    let Some(schemas) = member(doc, &["components", "schemas"]).and_then(Value::as_object_mut)
    else {
        panic!("the OpenAPI document has component schemas");
    };
    // Named, so client generators name its type once.
    schemas.insert(
        FEED_CLOSE.to_owned(),
        json!({
            "type": "object",
            "description": "Why the feed ends (a client that kept falling behind).",
            "required": ["reason"],
            "properties": {"reason": {"type": "string"}},
        }),
    );
    schemas.insert(
        FEED_MESSAGE.to_owned(),
        json!({
            "description": "One message of the live feed: a Server-Sent Event's `data`, a \
                            WebSocket text frame. `type` says which; a durable event (an \
                            outbox event, with its `id`) is its webhook body. `heartbeat` \
                            comes over WebSocket only (SSE sends a comment).",
            "oneOf": messages,
        }),
    );
    schemas.insert(
        FEED_EVENT.to_owned(),
        json!({
            "type": "object",
            "description": "One Server-Sent Event: `event` is its message's `type`, `data` \
                            the message as JSON, `id` the resume point (the outbox id of a \
                            durable event, or the newest event a snapshot includes). The \
                            stream's first block is only `retry:` advice, and a comment \
                            (`: heartbeat`) comes every 15 s; neither is an event.",
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "enum": kinds},
                "id": {"type": "string"},
                "retry": {"type": "integer", "minimum": 0},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": reference(FEED_MESSAGE),
                },
            },
        }),
    );
    for operation in operations_json(doc) {
        for response in operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|responses| responses.values_mut())
        {
            if let Some(stream) = member(response, &["content", "text/event-stream"]) {
                stream["schema"] = reference(FEED_EVENT);
            }
        }
    }
}

/// The wallboard snapshot: every managed agent with its state, every skill and queue
/// tile with its newest sample, counts by state, and the feed's last event id.
///
/// Served from memory: asking costs no platform call however often it is asked.
#[utoipa::path(
    get,
    path = "/v1/live",
    tag = "live",
    security(("bearer" = [VIEWER])),
    responses((status = 200, description = "The snapshot", body = Snapshot))
)]
pub async fn snapshot(TenantState(state): TenantState) -> Response {
    let mut response = Body::from(state.live.snapshot_json().await).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The live feed as Server-Sent Events.
///
/// First a `snapshot` event (its `id` is the last event it includes), then every event
/// as it is committed: `agent.state_changed`, `transition.rejected`,
/// `adherence.exception`, `bulk.completed` (each with `id:`, the webhook id, and the
/// webhook body as `data`), and without ids `bulk.progress`, `adherence.changed` (one
/// agent's row of `GET /v1/adherence/now`, when it changes) and `metrics`. Every
/// `data` is `{"type","tenant","id"?,"timestamp"?,"data"}`: `tenant` is the id of the
/// tenant whose feed it is (`default` without `[[tenants]]`). A heartbeat
/// comment comes every 15 s. With `Last-Event-ID` (or `?last_event_id=`) the feed
/// resumes: the current `metrics`, then exactly the events after that id; a `snapshot`
/// instead when the id is unknown or too far back. A client that falls behind is sent
/// a fresh `snapshot`; one that keeps falling behind gets a `close` event and the end.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "live",
    security(("bearer" = [VIEWER])),
    params(FeedQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream",
         body = String),
        FeedRefusals,
        (status = 503, description = "wfmd is stopping"),
    )
)]
pub async fn events(
    TenantState(state): TenantState,
    CallerKey(caller): CallerKey,
    connection: Option<axum::Extension<std::sync::Arc<Connection>>>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<FeedQuery>,
) -> Result<Response, Problem> {
    let start = start(&headers, &query)?;
    let slot = match state.live.open_stream(&caller) {
        Ok(slot) => slot,
        Err(refused) => return Ok(crowded(refused)),
    };
    let feed = state.live.subscribe(start).await?;
    if let Some(connection) = connection {
        connection.streaming();
    }
    let retry = Bytes::from(format!("retry: {}\n\n", RETRY_ADVICE.as_millis()));
    // Each message's block was rendered once for every client; the heartbeat comes
    // through the feed. hyper asks for the next block while the socket takes them, so
    // the blocks that are ready go out in one write. The stream holds the caller's
    // place until the client leaves.
    let blocks = futures::stream::unfold((feed, slot), |(mut feed, slot)| async move {
        let message = feed.next().await?;
        Some((Ok::<_, Infallible>(message.sse), (feed, slot)))
    });
    let body = futures::stream::once(async { Ok(retry) }).chain(blocks);
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer responses (nginx) would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The live feed over a WebSocket.
///
/// The same messages as `/v1/events`, each a JSON text frame
/// `{"type","tenant","id"?,"timestamp"?,"data"}` (the `FeedMessage` schema);
/// `?last_event_id=` resumes. wfmd pings every
/// 15 s and sends a `{"type":"heartbeat"}` frame (a page's script cannot see pings); a
/// client that falls behind repeatedly is closed with code 1008 and the reason.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "live",
    security(("bearer" = [VIEWER])),
    params(FeedQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request"),
        (status = 426, description = "The connection cannot be upgraded"),
        FeedRefusals,
    )
)]
pub async fn websocket(
    TenantState(state): TenantState,
    CallerKey(caller): CallerKey,
    QueryParams(query): QueryParams<FeedQuery>,
    mut request: Request,
) -> Result<Response, Problem> {
    let accept = accept_key(&request)?;
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return Err(not_a_websocket(
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded (HTTP/1.1 is needed)",
        ));
    };
    let start = start(request.headers(), &query)?;
    let slot = match state.live.open_stream(&caller) {
        Ok(slot) => slot,
        Err(refused) => return Ok(crowded(refused)),
    };
    let feed = state.live.subscribe(start).await?;
    let connection = request
        .extensions()
        .get::<std::sync::Arc<Connection>>()
        .cloned();
    crate::tasks::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        if let Some(connection) = connection {
            connection.streaming();
        }
        // Held until the session ends.
        let _slot = slot;
        let config = WebSocketConfig::default()
            // Clients send nothing but pongs and a close: a small read buffer.
            .read_buffer_size(4 * 1024)
            .max_message_size(Some(64 * 1024))
            .max_frame_size(Some(64 * 1024))
            .write_buffer_size(WS_FRAGMENT);
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        session(socket, feed).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// Checks an RFC 6455 opening handshake and answers its `Sec-WebSocket-Accept`. The
/// upgrade is taken from hyper directly rather than through axum's `WebSocketUpgrade`,
/// whose socket cannot send a message in fragments (see [`WS_FRAGMENT`]).
fn accept_key(request: &Request) -> Result<HeaderValue, Problem> {
    let headers = request.headers();
    let lists = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if request.method() != Method::GET
        || !lists(header::CONNECTION, "upgrade")
        || !lists(header::UPGRADE, "websocket")
    {
        return Err(not_a_websocket(
            StatusCode::BAD_REQUEST,
            "a GET with `Connection: upgrade` and `Upgrade: websocket` is needed",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(not_a_websocket(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Version` must be 13",
        ));
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| {
        not_a_websocket(StatusCode::BAD_REQUEST, "`Sec-WebSocket-Key` is missing")
    })?;
    Ok(
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a header value"),
    )
}

fn not_a_websocket(status: StatusCode, detail: &str) -> Problem {
    Problem::new(
        status,
        "not-a-websocket",
        "Not a WebSocket upgrade",
        format!("{detail}; open this route with a WebSocket client"),
    )
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Sends the feed to one WebSocket client until it ends, the client leaves, or the
/// client takes no frame for [`SEND_TIMEOUT`].
async fn session(socket: Socket, mut feed: Feed) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        let first = tokio::select! {
            message = feed.next() => message,
            gone = client_left(&mut incoming) => {
                if gone {
                    return;
                }
                continue;
            }
        };
        let Some(mut message) = first else {
            let frame = Frame::Close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "wfmd is stopping".into(),
            }));
            let _ = within(sink.send(frame)).await;
            return;
        };
        // Every message that is ready goes into the buffer, then one flush.
        loop {
            let reason = message.close_reason();
            for frame in frames(message) {
                // Buffered, and written out as the buffer fills.
                if within(sink.feed(frame)).await.is_err() {
                    return;
                }
            }
            if let Some(reason) = reason {
                let frame = Frame::Close(Some(CloseFrame {
                    code: CloseCode::Policy,
                    reason: reason.into(),
                }));
                let _ = within(sink.send(frame)).await;
                return;
            }
            match feed.ready() {
                Some(next) => message = next,
                None => break,
            }
        }
        if within(sink.flush()).await.is_err() {
            return;
        }
    }
}

/// Reads one frame from the client: `true` when it closed or the connection broke.
/// Pongs are answered by the library; text from the client means nothing.
async fn client_left(incoming: &mut SplitStream<Socket>) -> bool {
    matches!(
        incoming.next().await,
        Some(Ok(Frame::Close(_))) | None | Some(Err(_))
    )
}

/// A message's frames: the JSON text (in fragments when long); a heartbeat is also
/// a ping.
fn frames(message: Message) -> Vec<Frame> {
    let mut frames = Vec::new();
    if message.is_heartbeat() {
        frames.push(Frame::Ping(Bytes::new()));
    }
    let text = message.json;
    if text.len() <= WS_FRAGMENT {
        frames.push(Frame::Text(text));
        return frames;
    }
    let bytes = Bytes::from(text.clone());
    let mut at = 0;
    while at < text.len() {
        // Fragments end on character boundaries, for clients that check each one.
        let mut end = (at + WS_FRAGMENT).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let opcode = if at == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let fin = end == text.len();
        frames.push(Frame::Frame(RawFrame::message(
            bytes.slice(at..end),
            opcode,
            fin,
        )));
        at = end;
    }
    frames
}

/// Waits for a send, buffer or flush of the socket, closing the client that takes
/// nothing for [`SEND_TIMEOUT`]. The timer is only armed when the socket does not
/// take the frame at once: the common case costs no timer per frame and client.
async fn within<F>(mut send: F) -> Result<(), ()>
where
    F: Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let done = match futures::poll!(&mut send) {
        std::task::Poll::Ready(done) => done,
        std::task::Poll::Pending => match tokio::time::timeout(SEND_TIMEOUT, send).await {
            Ok(done) => done,
            Err(_) => {
                metrics::counter!(LIVE_CLIENTS_DROPPED_TOTAL).increment(1);
                tracing::info!("a WebSocket client took no frame for 30 s; closed");
                return Err(());
            }
        },
    };
    done.map_err(|_| ())
}

/// A ticket for opening the feed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketView {
    /// Pass as `?ticket=` to `/v1/events` or `/v1/ws`, once.
    ticket: String,
    /// Seconds the ticket stays valid (60).
    expires_in: u64,
}

/// A short-lived ticket to open the feed from a browser.
///
/// `EventSource` and `WebSocket` cannot send an `Authorization` header; putting the
/// token in the URL would leave it in proxy logs. A ticket opens `/v1/events` or
/// `/v1/ws` once, within 60 s, with the role of the token that asked for it.
#[utoipa::path(
    post,
    path = "/v1/live/tickets",
    tag = "live",
    security(("bearer" = [VIEWER])),
    responses(
        (status = 201, description = "The ticket", body = TicketView),
        (status = 429, description = "The caller holds `live.max_tickets_per_caller` unused \
         tickets, or too many are outstanding in all; `Retry-After` says when one expires"),
    )
)]
pub async fn ticket(
    TenantState(state): TenantState,
    caller: Caller,
    CallerKey(key): CallerKey,
) -> Result<Response, Problem> {
    let holder = TicketHolder {
        name: caller.name,
        role: caller.role,
    };
    let ticket = match state.live.issue_ticket(holder, &key).await? {
        Ok(ticket) => ticket,
        Err(refused) => return Ok(crowded(refused)),
    };
    let view = TicketView {
        ticket,
        expires_in: TICKET_TTL.as_secs(),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// What the two feed routes refuse alike, for their `responses(...)`: a bad ticket
/// ([`ticket_gate`]) and a caller with all its streams open ([`crowded`]).
pub(super) struct FeedRefusals;

impl utoipa::IntoResponses for FeedRefusals {
    fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
        problem_answers(&[
            (401, "The ticket is unknown, expired or already used"),
            (
                429,
                "The caller has `live.max_streams_per_caller` streams open",
            ),
        ])
    }
}

/// A 429 naming the limit a caller reached, with `Retry-After`.
fn crowded(crowded: Crowded) -> Response {
    let (kind, title) = match crowded {
        Crowded::CallerStreams { .. } => ("too-many-streams", "Too many live-feed streams"),
        Crowded::CallerTickets { .. } | Crowded::AllTickets { .. } => {
            ("too-many-tickets", "Too many tickets")
        }
    };
    metrics::counter!(LIVE_REFUSALS_TOTAL, "kind" => kind).increment(1);
    tracing::warn!(limit = crowded.limit(), "{crowded}");
    let retry_after = crowded.retry_after().as_secs().max(1);
    let mut problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        kind,
        title,
        crowded.to_string(),
    )
    .with("retry_after", retry_after);
    if let Some(limit) = crowded.limit() {
        problem = problem.with("limit", limit);
    }
    if let Crowded::CallerStreams { max } | Crowded::CallerTickets { max, .. } = crowded {
        problem = problem.with("max", max);
    }
    problem.retry_after(retry_after)
}

/// What [`ticket_gate`] needs besides the chosen tenant's feed: whether any bearer
/// tokens are configured.
#[derive(Clone)]
pub struct TicketGate {
    pub tokens_configured: bool,
}

/// Redeems `?ticket=` on the two feed routes, ahead of the bearer check: a good ticket
/// stands in for its holder's token (once); a bad one is a 401. Elsewhere a ticket
/// means nothing and the bearer header is required as always. Without configured
/// tokens every caller is the local admin and needs no ticket, so one is ignored, as a
/// bearer header is.
pub async fn ticket_gate(
    State(gate): State<TicketGate>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !gate.tokens_configured || (path != "/v1/events" && path != "/v1/ws") {
        return next.run(request).await;
    }
    let Some(scope) = TenantScope::of(request.extensions()).cloned() else {
        return Problem::internal(&"a feed ticket reached the routes without a tenant")
            .into_response();
    };
    let live = &scope.state.live;
    let ticket = request.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "ticket")
            .map(|(_, value)| value.into_owned())
    });
    let Some(ticket) = ticket else {
        return next.run(request).await;
    };
    let redeemed = match live.redeem_ticket(&ticket).await {
        Ok(redeemed) => redeemed,
        Err(error) => return Problem::from(error).into_response(),
    };
    match redeemed {
        Some(holder) => {
            request.extensions_mut().insert(Preauthenticated(Caller {
                name: holder.name,
                role: holder.role,
                // Tickets are the tenant's own: redeemed only at the tenant that issued
                // them, to a caller who held it then.
                tenants: None,
            }));
            next.run(request).await
        }
        None => {
            metrics::counter!(API_REFUSALS_TOTAL, "reason" => "ticket").increment(1);
            invalid_credential(
                "the ticket is unknown, expired or already used; \
                 ask POST /v1/live/tickets for a new one",
            )
        }
    }
}
