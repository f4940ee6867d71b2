//! The transactional outbox: webhook events written in the same transaction as the
//! change they report, so an event exists exactly when its change does.
//!
//! Delivery (claiming, signing, retrying) reads these rows in `seq` order, which is
//! commit order.

use crate::store::batched::TableWrite;
use crate::store::{AsConn, Pool, fetch, fetch_scalar};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use sqlx::FromRow;

use super::to_ms;
pub use crate::domain::events::{Event, EventType};

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub agent_id: Option<String>,
    pub payload: String,
    pub created_at: i64,
}

/// A fresh event id (`evt_` + UUID v7, so ids sort by creation time).
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// An event to write.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub agent_id: Option<&'a str>,
    pub at: DateTime<Utc>,
    pub event: Event,
}

/// Writes an event in the caller's transaction; returns its id. The stored payload is
/// the webhook body: `{"type","id","timestamp","data"}`.
pub async fn enqueue(
    conn: &mut impl AsConn,
    agent_id: Option<&str>,
    at: DateTime<Utc>,
    event: Event,
) -> Result<String, sqlx::Error> {
    let event = NewEvent {
        agent_id,
        at,
        event,
    };
    let mut ids = enqueue_all(conn, &[event]).await?;
    Ok(ids.remove(0))
}

/// Writes events in order, in one statement whatever their number; returns their ids.
pub async fn enqueue_all(
    conn: &mut impl AsConn,
    events: &[NewEvent<'_>],
) -> Result<Vec<String>, sqlx::Error> {
    let (write, ids) = enqueuing_all(events);
    write.run(conn).await?;
    Ok(ids)
}

/// [`enqueue_all`] as a write to send with others (see [`crate::store::batched`]), and
/// the events' ids.
pub fn enqueuing_all(events: &[NewEvent<'_>]) -> (TableWrite, Vec<String>) {
    let mut ids = Vec::with_capacity(events.len());
    let rows: Vec<_> = events
        .iter()
        .map(|event| {
            let id = new_event_id();
            let event_type = event.event.event_type();
            let payload = json!({
                "type": event_type.as_str(),
                "id": id,
                "timestamp": event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "data": event.event.data(),
            });
            let row = json!([
                id,
                event_type.as_str(),
                event.agent_id,
                payload.to_string(),
                to_ms(event.at)
            ]);
            ids.push(id);
            row
        })
        .collect();
    let write = TableWrite::new(
        "INSERT INTO outbox_events (id, event_type, agent_id, payload, created_at)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                CAST(json_extract(value, '$[4]') AS BIGINT)
         FROM json_each($1)"
            .to_owned(),
        serde_json::Value::Array(rows).to_string(),
    );
    (write, ids)
}

/// Events after `after_seq` in commit order, at most `limit`.
pub async fn after(pool: &Pool, after_seq: i64, limit: i64) -> Result<Vec<EventRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        "SELECT seq, id, event_type, agent_id, payload, created_at FROM outbox_events
         WHERE seq > $1 ORDER BY seq LIMIT $2",
        after_seq,
        limit
    )
}

/// The newest event: its sequence and id.
pub async fn head(pool: &Pool) -> Result<Option<(i64, String)>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        "SELECT seq, id FROM outbox_events ORDER BY seq DESC LIMIT 1"
    )
}

/// The sequence of the event `id`, if it is still stored.
pub async fn seq_of(pool: &Pool, id: &str) -> Result<Option<i64>, sqlx::Error> {
    fetch_scalar!(
        pool,
        optional,
        "SELECT seq FROM outbox_events WHERE id = $1",
        id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::StateChanged;
    use crate::domain::{AgentState, Origin};
    use crate::store::testing::backends;
    use crate::store::testing::temp_store_on;
    use crate::store::{Backend, Store};
    use rstest_reuse::apply;

    fn state_changed(agent: &str) -> Event {
        Event::AgentStateChanged(StateChanged {
            agent_id: agent.to_owned(),
            from: None,
            to: AgentState::Ready,
            reason_code: None,
            origin: Origin::Api,
            idle_ms: 0,
            latency_ms: None,
            attempt_id: None,
            queue: None,
            changed_at: None,
            deferred_id: None,
        })
    }

    #[apply(backends)]
    #[tokio::test]
    async fn events_keep_commit_order_and_carry_the_webhook_body(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let at = crate::store::from_ms(1_790_000_000_000);
        let mut ids = Vec::new();
        for agent in ["u_002", "u_001", "u_003"] {
            let mut tx = store.begin_write().await.unwrap();
            ids.push(
                enqueue(&mut tx, Some(agent), at, state_changed(agent))
                    .await
                    .unwrap(),
            );
            tx.commit().await.unwrap();
        }
        let rows = after(store.reader(), 0, 10).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| &r.id).collect::<Vec<_>>(),
            ids.iter().collect::<Vec<_>>()
        );
        let body: serde_json::Value = serde_json::from_str(&rows[0].payload).unwrap();
        assert_eq!(body["type"], "agent.state_changed");
        assert_eq!(body["id"], ids[0].as_str());
        assert_eq!(body["timestamp"], "2026-09-21T14:13:20.000Z");
        assert_eq!(body["data"]["agentId"], "u_002");
        assert!(ids[0].starts_with("evt_"));
    }

    /// Reads every event after `cursor` into `seen`, moving the cursor past them, as the
    /// live feed and the webhook fan-out do.
    async fn read_on(store: &Store, cursor: &mut i64, seen: &mut Vec<String>) {
        for row in after(store.reader(), *cursor, 100).await.unwrap() {
            *cursor = row.seq;
            seen.push(row.id);
        }
    }

    /// Whether a write transaction waits for the write lock: SQLite's one write
    /// connection, or on PostgreSQL the tenant's write turn (see `store::shared`), and
    /// behind it the tenant's advisory lock.
    async fn waits_for_the_write_lock(store: &Store) -> bool {
        match store.backend() {
            Backend::Sqlite => store.writes_waiting() > 0,
            Backend::Postgres => {
                store.writes_waiting() > 0
                    || crate::store::testing::waits_for_an_advisory_lock(store).await
            }
        }
    }

    /// On PostgreSQL an event's `seq` is drawn before its transaction commits: a reader
    /// that met a later event committed first would move its cursor past the earlier one
    /// and never see it. Every write transaction holds the tenant's write lock from its
    /// start to its commit, so the second writer waits and the events become visible in
    /// the order of their `seq`.
    #[apply(backends)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_committed_late_is_still_read_after_the_cursor(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let at = crate::store::from_ms(1_790_000_000_000);
        let mut held = store.begin_write().await.unwrap();
        let first = enqueue(&mut held, Some("u_001"), at, state_changed("u_001"))
            .await
            .unwrap();
        let writer = crate::tasks::spawn({
            let store = store.clone();
            async move {
                let mut tx = store.begin_write().await.unwrap();
                let id = enqueue(&mut tx, Some("u_002"), at, state_changed("u_002"))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                id
            }
        });
        // Until the second writer is held back, or (were it not) has committed.
        crate::store::testing::eventually(
            "the second writer neither waited nor finished",
            async || writer.is_finished() || waits_for_the_write_lock(&store).await,
        )
        .await;
        let (mut cursor, mut seen) = (0, Vec::new());
        read_on(&store, &mut cursor, &mut seen).await;
        assert_eq!(seen, Vec::<String>::new(), "nothing is committed yet");
        held.commit().await.unwrap();
        let second = writer.await.unwrap();
        read_on(&store, &mut cursor, &mut seen).await;
        assert_eq!(seen, [first, second]);
    }
}
