//! A feed message rendered once, as JSON and as an SSE block, for every client.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::domain::events::with_tenant;
use crate::domain::tenant::TenantId;
use crate::store::outbox;
use crate::time::rfc3339;

/// One message of the feed, rendered once for every transport and shared by every
/// client: a client's send is a reference-counted clone of these bytes, never a copy
/// or a serialization of its own.
#[derive(Debug, Clone)]
pub struct Message {
    /// The feed's own order: every published message has a larger one than the last.
    pub version: u64,
    /// The outbox sequence of a durable event.
    pub seq: Option<i64>,
    /// `snapshot`, `agent.state_changed`, `transition.rejected`, `adherence.exception`,
    /// `bulk.completed`, `bulk.progress`, `adherence.changed`, `metrics`, `heartbeat` or
    /// `close`.
    pub kind: Arc<str>,
    /// The outbox id of a durable event (also given to a snapshot: the id it is current
    /// to, so a browser's resume point is right after it).
    pub id: Option<Arc<str>>,
    /// `{"type","tenant","id"?,"timestamp"?,"data"}`: for durable events, the webhook
    /// body. Also the WebSocket text frame, as it is.
    pub json: Utf8Bytes,
    /// The Server-Sent Events block: `event:`, `id:` and `data:` lines (a heartbeat is a
    /// comment line).
    pub sse: Bytes,
}

impl Message {
    pub(super) fn new(
        version: u64,
        seq: Option<i64>,
        kind: &str,
        id: Option<&str>,
        json: String,
    ) -> Message {
        let sse = if kind == HEARTBEAT {
            Bytes::from_static(b": heartbeat\n\n")
        } else {
            sse_block(kind, id, &json)
        };
        Message {
            version,
            seq,
            kind: kind.into(),
            id: id.map(Arc::from),
            json: json.into(),
            sse,
        }
    }

    pub(super) fn transient(
        version: u64,
        tenant: &TenantId,
        kind: &str,
        data: impl Serialize,
    ) -> Message {
        let json = json!({
            "type": kind,
            "tenant": tenant.as_str(),
            "timestamp": rfc3339(Utc::now()),
            "data": data,
        });
        Message::new(version, None, kind, None, json.to_string())
    }

    pub(super) fn durable(version: u64, tenant: &TenantId, row: &outbox::EventRow) -> Message {
        Message::new(
            version,
            Some(row.seq),
            row.event_type.as_str(),
            Some(&row.id),
            with_tenant(&row.payload, tenant),
        )
    }

    /// The heartbeat: an SSE comment, or a WebSocket ping and a `heartbeat` frame (a
    /// page's script cannot see pings).
    pub(super) fn heartbeat(version: u64, tenant: &TenantId) -> Message {
        Message::transient(version, tenant, HEARTBEAT, Value::Null)
    }

    /// Whether this is the heartbeat.
    pub fn is_heartbeat(&self) -> bool {
        &*self.kind == HEARTBEAT
    }

    /// The last message of a client that is closed, with the reason.
    pub(super) fn close(tenant: &TenantId, reason: &str) -> Message {
        Message::transient(0, tenant, CLOSE, json!({ "reason": reason }))
    }

    /// The reason of a `close` message (`None` for any other).
    pub fn close_reason(&self) -> Option<String> {
        if &*self.kind != CLOSE {
            return None;
        }
        let body: Value = serde_json::from_str(&self.json).ok()?;
        Some(body["data"]["reason"].as_str()?.to_owned())
    }
}

const HEARTBEAT: &str = "heartbeat";
const CLOSE: &str = "close";

/// One Server-Sent Events block. axum's `Event` renders per client, and the feed's
/// point is that a message is rendered once; the format is three line kinds. JSON
/// written by serde has no raw line breaks, but a `data:` line per line keeps any
/// payload intact.
fn sse_block(kind: &str, id: Option<&str>, json: &str) -> Bytes {
    let mut block = String::with_capacity(json.len() + kind.len() + 64);
    block.push_str("event: ");
    block.push_str(kind);
    block.push('\n');
    if let Some(id) = id {
        block.push_str("id: ");
        block.push_str(id);
        block.push('\n');
    }
    for line in json.split('\n') {
        block.push_str("data: ");
        block.push_str(line.strip_suffix('\r').unwrap_or(line));
        block.push('\n');
    }
    block.push('\n');
    Bytes::from(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sse_block_keeps_every_line_of_a_payload_as_a_data_line() {
        let block = sse_block("bulk.completed", Some("evt_1"), "{\"a\":1,\n\"b\":2}\r\n");
        assert_eq!(
            std::str::from_utf8(&block).unwrap(),
            "event: bulk.completed\nid: evt_1\ndata: {\"a\":1,\ndata: \"b\":2}\ndata: \n\n"
        );
    }
}
