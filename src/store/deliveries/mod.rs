//! Webhook deliveries: one row per (outbox event, endpoint), claimed with a lease.
//!
//! - [`fan_out`] turns new outbox events into deliveries for the endpoints that want
//!   them, moving a cursor in the same transaction, so every event is fanned out once.
//! - [`claim`] reserves due deliveries with an `UPDATE … RETURNING` lease. A delivery is
//!   only claimable when no earlier delivery of the same agent to the same endpoint is
//!   still pending: per (endpoint, agent), events go out in commit order, while other
//!   agents and endpoints never wait.
//! - [`settle`] records a batch of attempts and their verdicts in one transaction, and
//!   with them each endpoint's health (up, failing since, disabled since).
//! - Recovery: while an endpoint fails, [`claim`] tries one of its queued deliveries
//!   ahead of schedule now and then (a probe, paced by how long it has been failing).
//!   When a delivery succeeds after the endpoint failed for at least the shortest probe
//!   wait, the retries that failed during the outage are brought forward, twice as many
//!   as just succeeded each round, so a receiver that is back gets its backlog in
//!   seconds without being flooded. An attempt made ahead of schedule that fails does
//!   not use up a scheduled retry.
//! - A crash leaves leases behind; they expire and the deliveries are claimed again
//!   (at-least-once, with the same event id).
//! - Endpoints are stored by their URL with credentials masked, never the URL itself;
//!   [`redact_stored_endpoints`] rewrites what older versions stored.

use crate::store::{AsConn, Db, Pool, execute, fetch, fetch_scalar};
use serde::Serialize;
use serde_json::json;
use sqlx::FromRow;

use super::Store;

/// An endpoint and the event types it wants (`None`: all).
#[derive(Debug, Clone)]
pub struct Subscriber<'a> {
    /// The endpoint as stored: its URL with credentials masked.
    pub endpoint: &'a str,
    pub events: Option<&'a [String]>,
}

/// How many outbox events one fan-out transaction takes at most.
const FAN_OUT_BATCH: i64 = 5_000;

/// Fans out outbox events after the cursor; returns how many events it took.
pub async fn fan_out(
    store: &Store,
    subscribers: &[Subscriber<'_>],
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let mut tx = store.begin_write().await?;
    let cursor: i64 = fetch_scalar!(
        tx,
        one,
        "SELECT last_event_seq FROM webhook_cursor WHERE id = 1"
    )?;
    let last: Option<i64> = fetch_scalar!(
        tx,
        one,
        "SELECT MAX(seq) FROM (SELECT seq FROM outbox_events WHERE seq > $1 ORDER BY seq LIMIT $2) AS page",
        cursor,
        FAN_OUT_BATCH
    )?;
    let Some(last) = last else {
        return Ok(0);
    };
    for subscriber in subscribers {
        let wanted = subscriber.events.map(|events| json!(events).to_string());
        execute!(
            tx,
            "INSERT INTO webhook_deliveries
                 (event_seq, endpoint, event_type, agent_id, next_attempt_at, created_at)
             SELECT seq, $1, event_type, agent_id, $2, created_at FROM outbox_events
             WHERE seq > $3 AND seq <= $4
               AND ($5 IS NULL OR event_type IN (SELECT value FROM json_each($5)))
               AND event_type NOT IN
                   (SELECT event_type FROM webhook_disabled WHERE endpoint = $1)
             ON CONFLICT (event_seq, endpoint) DO NOTHING",
            subscriber.endpoint,
            now_ms,
            cursor,
            last,
            wanted
        )?;
    }
    execute!(
        tx,
        "UPDATE webhook_cursor SET last_event_seq = $1 WHERE id = 1",
        last
    )?;
    tx.commit().await?;
    Ok(u64::try_from(last - cursor).unwrap_or(0))
}

/// A claimed delivery with what is needed to send it.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: i64,
    pub endpoint: String,
    pub event_type: String,
    /// The event id: the `webhook-id`, the same on every attempt.
    pub event_id: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: i64,
    /// Claimed ahead of its schedule (a probe or a recovery); a failure costs no retry.
    pub early: bool,
}

/// How fast a failing endpoint is probed: every half of the time it has been failing,
/// within these bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probing {
    pub min_ms: i64,
    pub max_ms: i64,
}

impl Probing {
    /// When to probe next after a failure at `at` of an endpoint failing since `since`.
    fn next_probe(self, since: i64, at: i64) -> i64 {
        at + ((at - since) / 2).clamp(self.min_ms, self.max_ms.max(self.min_ms))
    }
}

/// Only the first pending delivery `d` of an agent to an endpoint may go out: per
/// (endpoint, agent) the order is the commit order. A macro, so the statements that
/// use it stay `&'static str`; they come in each dialect's text (`sqlite` or
/// `postgres`), as SQLite is told the index that answers it (without `INDEXED BY` its
/// planner walks another, and the claim's cost grows with the backlog) and PostgreSQL
/// has no such clause. PostgreSQL is kept to one look-up per candidate instead: its
/// `OFFSET 0` keeps the test a subquery of its own, run on each candidate as it comes,
/// which the planner would otherwise turn into a join that reads every pending
/// delivery (see [`claim`]).
macro_rules! first_of_its_agent {
    (sqlite) => {
        first_of_its_agent!(@ "INDEXED BY webhook_deliveries_order", "")
    };
    (postgres) => {
        first_of_its_agent!(@ "", " OFFSET 0")
    };
    (@ $index:literal, $fence:literal) => {
        concat!(
            "NOT EXISTS (
            SELECT 1 FROM webhook_deliveries e ",
            $index,
            "
            WHERE e.status = 'pending' AND e.endpoint = d.endpoint
              AND e.agent_id = d.agent_id AND e.event_seq < d.event_seq",
            $fence,
            ")"
        )
    };
}

/// Which pending deliveries `d` the statements that bring deliveries forward (`hasten_at
/// = $1`) may pick: waiting for a later retry, not hastened or leased already, and the
/// first of their agent ([`first_of_its_agent`]).
macro_rules! hastenable {
    ($dialect:ident) => {
        concat!(
            "d.status = 'pending' AND d.hasten_at IS NULL AND d.next_attempt_at > $1
                       AND (d.lease_until IS NULL OR d.lease_until <= $1)
                       AND ",
            first_of_its_agent!($dialect)
        )
    };
}

/// Makes the probe of each failing endpoint whose probe is due: one delivery due now.
macro_rules! hasten_probes {
    ($dialect:ident) => {
        concat!(
            "UPDATE webhook_deliveries SET hasten_at = $1
         WHERE id IN (
             SELECT (SELECT d.id FROM webhook_deliveries d
                     WHERE d.endpoint = h.endpoint AND ",
            hastenable!($dialect),
            "
                     ORDER BY COALESCE(d.last_attempt_at, 0), d.event_seq LIMIT 1)
             FROM webhook_endpoints h
             WHERE h.status = 'failing' AND h.next_probe_at <= $1
               AND h.endpoint IN (SELECT value FROM json_each($2)))"
        )
    };
}

/// Leases the due deliveries, returning their ids. PostgreSQL reads its lists as
/// arrays (`= ANY (ARRAY(…))`, each made once): a set-returning function counts as a
/// thousand rows to its planner, and a join with one is planned as reading every due
/// delivery, or the whole table, to match them (see [`claim`]).
macro_rules! lease_due {
    (sqlite) => {
        lease_due!(@ sqlite, "IN (", ")")
    };
    (postgres) => {
        lease_due!(@ postgres, "= ANY (ARRAY(", "))")
    };
    (@ $dialect:ident, $in:literal, $end:literal) => {
        concat!(
            "UPDATE webhook_deliveries SET lease_until = $1 + $2
         WHERE id ",
            $in,
            "
             SELECT d.id FROM webhook_deliveries d
             WHERE d.status = 'pending' AND (d.next_attempt_at <= $1 OR d.hasten_at <= $1)
               AND (d.lease_until IS NULL OR d.lease_until <= $1)
               AND d.endpoint ",
            $in,
            "SELECT value FROM json_each($3)",
            $end,
            "
               AND ",
            first_of_its_agent!($dialect),
            "
             ORDER BY d.event_seq LIMIT $4",
            $end,
            "
         RETURNING id"
        )
    };
}

/// The claimed deliveries (ids as a JSON array in `$1`) with their events; PostgreSQL
/// reads the ids as an array, for the reason of [`lease_due`].
macro_rules! claimed {
    (sqlite) => {
        claimed!(@ "IN (", ")")
    };
    (postgres) => {
        claimed!(@ "= ANY (ARRAY(", "))")
    };
    (@ $in:literal, $end:literal) => {
        concat!(
            "SELECT d.id, d.endpoint, d.event_type, e.id AS event_id, e.payload, d.attempts,
                d.created_at, d.next_attempt_at > $2 AS early
         FROM webhook_deliveries d JOIN outbox_events e ON e.seq = d.event_seq
         WHERE d.id ",
            $in,
            "SELECT CAST(value AS BIGINT) FROM json_each($1)",
            $end,
            " ORDER BY d.event_seq"
        )
    };
}

/// Brings forward the retries that failed during an endpoint's outage.
macro_rules! hasten_recovered {
    ($dialect:ident) => {
        concat!(
            "UPDATE webhook_deliveries SET hasten_at = $1
                 WHERE id IN (
                     SELECT d.id FROM webhook_deliveries d
                     WHERE d.endpoint = $2 AND d.last_attempt_at <= $3 AND ",
            hastenable!($dialect),
            "
                     ORDER BY d.event_seq LIMIT $4)"
        )
    };
}

/// Claims up to `limit` due deliveries to `endpoints` until `now_ms + lease_ms`. First,
/// each failing endpoint whose probe is due gets one delivery made due now (the one
/// tried least recently, so one event the receiver keeps refusing does not hide that
/// it is back).
pub async fn claim(
    store: &Store,
    endpoints: &[&str],
    now_ms: i64,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<Claimed>, sqlx::Error> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let endpoints = json!(endpoints).to_string();
    let mut tx = store.begin_write().await?;
    execute!(
        tx,
        (hasten_probes!(sqlite), hasten_probes!(postgres)),
        now_ms,
        &endpoints
    )?;
    // The probe's attempt sets the next one; until then (or its lease ends) no other.
    execute!(
        tx,
        "UPDATE webhook_endpoints SET next_probe_at = $1 + $2
         WHERE status = 'failing' AND next_probe_at <= $1
           AND endpoint IN (SELECT value FROM json_each($3))",
        now_ms,
        lease_ms,
        &endpoints
    )?;
    // PostgreSQL's planner, seeing few pending deliveries (a young table without
    // statistics, or statistics taken while nearly all were delivered), gathers every
    // due delivery and sorts them to pick the first few: a claim then costs 30 to 50 ms
    // at 10,000 pending instead of 1 ms. Without sorting, only the walk of the pending
    // index in `event_seq` order, stopping at the limit, is left; for this statement
    // only, as the others sort what no index orders.
    on_postgres(&mut tx, WALK_IN_ORDER).await?;
    let claimed_ids: Vec<i64> = fetch_scalar!(
        tx,
        all,
        (lease_due!(sqlite), lease_due!(postgres)),
        now_ms,
        lease_ms,
        &endpoints,
        i64::try_from(limit).unwrap_or(i64::MAX)
    )?;
    on_postgres(&mut tx, SORT_AGAIN).await?;
    let claimed = fetch!(
        tx,
        all,
        (claimed!(sqlite), claimed!(postgres)),
        json!(claimed_ids).to_string(),
        now_ms
    )?;
    tx.commit().await?;
    Ok(claimed)
}

/// Leaves PostgreSQL's planner no plan for the lease but the walk (see [`claim`]).
const WALK_IN_ORDER: &str = "SET LOCAL enable_sort = off";

/// Gives PostgreSQL's planner its sorts back.
const SORT_AGAIN: &str = "SET LOCAL enable_sort = DEFAULT";

/// Runs `statement` on PostgreSQL only.
async fn on_postgres(conn: &mut impl AsConn, statement: &'static str) -> Result<(), sqlx::Error> {
    if let Db::Postgres(c) = conn.db() {
        sqlx::query(statement).execute(c).await?;
    }
    Ok(())
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryVerdict {
    Delivered,
    RetryAt(i64),
    Dead,
    /// 410 Gone: this endpoint wants no more events of this type.
    Gone,
}

/// One finished attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: i64,
    pub endpoint: String,
    pub event_type: String,
    pub attempted_at: i64,
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub verdict: DeliveryVerdict,
    /// Made ahead of the delivery's schedule (see [`Claimed::early`]).
    pub early: bool,
}

/// An endpoint whose health changed in a [`settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub endpoint: String,
    pub status: &'static str,
    /// How long it had been in its previous status.
    pub after_ms: i64,
    /// Retries brought forward because it recovered.
    pub recovered: bool,
}

/// The settled attempts, one JSON object each in `$1` (see [`settled_row`]), as rows
/// named `a`: SQLite reads them with `json_each`, PostgreSQL as typed records. One
/// statement takes the whole batch, as on PostgreSQL each statement is a round trip
/// made while the tenant's write lock is held.
macro_rules! settled_rows {
    (sqlite) => {
        "(SELECT json_extract(value, '$.delivery_id') AS delivery_id,
                 json_extract(value, '$.attempted_at') AS attempted_at,
                 json_extract(value, '$.status_code') AS status_code,
                 json_extract(value, '$.duration_ms') AS duration_ms,
                 json_extract(value, '$.error') AS error,
                 json_extract(value, '$.response_body') AS response_body,
                 json_extract(value, '$.status') AS status,
                 json_extract(value, '$.counted') AS counted,
                 json_extract(value, '$.next_attempt_at') AS next_attempt_at,
                 json_extract(value, '$.delivered_at') AS delivered_at
          FROM json_each($1)) AS a"
    };
    (postgres) => {
        "jsonb_to_recordset(CAST($1 AS JSONB)) AS a (
             delivery_id BIGINT, attempted_at BIGINT, status_code BIGINT, duration_ms BIGINT,
             error TEXT, response_body TEXT, status TEXT, counted BIGINT,
             next_attempt_at BIGINT, delivered_at BIGINT)"
    };
}

/// Records every attempt of the batch, in the batch's order.
macro_rules! record_attempts {
    ($dialect:ident) => {
        concat!(
            "INSERT INTO webhook_attempts
                 (delivery_id, attempted_at, status_code, duration_ms, error, response_body)
             SELECT a.delivery_id, a.attempted_at, a.status_code, a.duration_ms, a.error,
                    a.response_body
             FROM ",
            settled_rows!($dialect)
        )
    };
}

/// Applies each attempt to its delivery. One that counts ends the lease and moves the
/// delivery on (delivered, a retry at `next_attempt_at`, dead or disabled); one that
/// does not (a failure ahead of schedule) only ends the lease and records the answer.
/// PostgreSQL finds the deliveries by an array of their ids: joined with the records
/// (a hundred rows to its planner), it would read the whole table.
macro_rules! apply_verdicts {
    (sqlite) => {
        concat!(
            apply_verdicts!(@set),
            " FROM ",
            settled_rows!(sqlite),
            " WHERE webhook_deliveries.id = a.delivery_id"
        )
    };
    (postgres) => {
        concat!(
            "WITH a AS (SELECT * FROM ",
            settled_rows!(postgres),
            ") ",
            apply_verdicts!(@set),
            " FROM a WHERE webhook_deliveries.id = a.delivery_id
                 AND webhook_deliveries.id = ANY (ARRAY(SELECT delivery_id FROM a))"
        )
    };
    (@set) => {
        "UPDATE webhook_deliveries
         SET status = COALESCE(a.status, webhook_deliveries.status),
             attempts = webhook_deliveries.attempts + a.counted,
             lease_until = NULL, hasten_at = NULL,
             next_attempt_at = COALESCE(a.next_attempt_at, webhook_deliveries.next_attempt_at),
             last_attempt_at = a.attempted_at, last_status = a.status_code, last_error = a.error,
             delivered_at = CASE WHEN a.counted = 1 THEN a.delivered_at
                                 ELSE webhook_deliveries.delivered_at END"
    };
}

/// One attempt as a row of [`settled_rows`]. An attempt made ahead of schedule that
/// failed does not count: the delivery keeps its attempt count and its next scheduled
/// retry, so probing a dead receiver never kills an event sooner.
fn settled_row(a: &Attempt) -> serde_json::Value {
    let failed = matches!(
        a.verdict,
        DeliveryVerdict::RetryAt(_) | DeliveryVerdict::Dead
    );
    let counted = !(a.early && failed);
    let (status, next_attempt_at, delivered_at) = match a.verdict {
        _ if !counted => (None, None, None),
        DeliveryVerdict::Delivered => (Some("delivered"), None, Some(a.attempted_at)),
        DeliveryVerdict::RetryAt(at) => (Some("pending"), Some(at), None),
        DeliveryVerdict::Dead => (Some("dead"), None, None),
        DeliveryVerdict::Gone => (Some("disabled"), None, None),
    };
    json!({
        "delivery_id": a.delivery_id,
        "attempted_at": a.attempted_at,
        "status_code": a.status_code,
        "duration_ms": a.duration_ms,
        "error": a.error,
        "response_body": a.response_body,
        "status": status,
        "counted": i64::from(counted),
        "next_attempt_at": next_attempt_at,
        "delivered_at": delivered_at,
    })
}

/// Records attempts and applies their verdicts, all in one transaction, with the health
/// of the endpoints they went to; brings forward the retries of endpoints that are
/// back. Returns the endpoints whose health changed.
pub async fn settle(
    store: &Store,
    attempts: &[Attempt],
    probing: Probing,
    now_ms: i64,
) -> Result<Vec<HealthChange>, sqlx::Error> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let rows = json!(attempts.iter().map(settled_row).collect::<Vec<_>>()).to_string();
    let mut tx = store.begin_write().await?;
    execute!(
        tx,
        (record_attempts!(sqlite), record_attempts!(postgres)),
        &rows
    )?;
    execute!(
        tx,
        (apply_verdicts!(sqlite), apply_verdicts!(postgres)),
        &rows
    )?;
    for a in attempts
        .iter()
        .filter(|a| a.verdict == DeliveryVerdict::Gone)
    {
        execute!(
            tx,
            "INSERT INTO webhook_disabled (endpoint, event_type, reason, disabled_at)
             VALUES ($1, $2, 'the receiver answered 410 Gone', $3)
             ON CONFLICT DO NOTHING",
            &a.endpoint,
            &a.event_type,
            a.attempted_at
        )?;
        execute!(
            tx,
            "UPDATE webhook_deliveries SET status = 'disabled', lease_until = NULL
             WHERE status = 'pending' AND endpoint = $1 AND event_type = $2",
            &a.endpoint,
            &a.event_type
        )?;
    }
    let changes = record_health(&mut tx, attempts, probing, now_ms).await?;
    tx.commit().await?;
    Ok(changes)
}

/// Gives claimed deliveries back (shutdown): they may be claimed again at once.
pub async fn release(store: &Store, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin_write().await?;
    execute!(
        tx,
        "UPDATE webhook_deliveries SET lease_until = NULL
         WHERE status = 'pending' AND id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))",
        json!(ids).to_string()
    )?;
    tx.commit().await
}

/// A delivery as listed by `wfmd outbox list`.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub agent_id: Option<String>,
    pub endpoint: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
}

/// Pending deliveries, or dead ones, oldest first.
pub async fn list(pool: &Pool, dead: bool, limit: i64) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    fetch!(
        pool,
        all,
        "SELECT d.id, e.id AS event_id, d.event_type, d.agent_id, d.endpoint, d.status,
                d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at
         FROM webhook_deliveries d JOIN outbox_events e ON e.seq = d.event_seq
         WHERE d.status = $1 ORDER BY d.event_seq LIMIT $2",
        if dead { "dead" } else { "pending" },
        limit
    )
}

/// Puts dead deliveries of events committed at or after `since_ms` back in the queue,
/// due now, with a fresh attempt count; returns how many.
pub async fn replay_dead(store: &Store, since_ms: i64, now_ms: i64) -> Result<u64, sqlx::Error> {
    let mut tx = store.begin_write().await?;
    let done = execute!(
        tx,
        "UPDATE webhook_deliveries
         SET status = 'pending', attempts = 0, next_attempt_at = $1, lease_until = NULL
         WHERE status = 'dead' AND created_at >= $2",
        now_ms,
        since_ms
    )?
    .rows_affected();
    tx.commit().await?;
    Ok(done)
}

/// Pending deliveries and when the oldest of their events was committed.
pub async fn backlog(pool: &Pool) -> Result<(i64, Option<i64>), sqlx::Error> {
    fetch!(
        pool,
        one,
        "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE status = 'pending'"
    )
}

/// When the earliest pending delivery (or a failing endpoint's probe) falls due, if any.
pub async fn next_due(pool: &Pool) -> Result<Option<i64>, sqlx::Error> {
    fetch_scalar!(
        pool,
        one,
        "SELECT MIN(due) FROM (
             SELECT MIN(CASE WHEN lease_until > attempt_at THEN lease_until ELSE attempt_at END) AS due
             FROM (SELECT lease_until,
                          CASE WHEN hasten_at < next_attempt_at THEN hasten_at
                               ELSE next_attempt_at END AS attempt_at
                   FROM webhook_deliveries WHERE status = 'pending') AS pending
             UNION ALL
             SELECT MIN(next_probe_at) FROM webhook_endpoints WHERE status = 'failing') AS candidates"
    )
}

// After the SQL macros, which it uses too.
mod endpoints;

use endpoints::record_health;
pub use endpoints::{EndpointHealth, health, redact_stored_endpoints, register};

#[cfg(test)]
mod tests {
    use crate::store::Backend;
    use crate::store::testing::backends;
    use crate::store::{Done, on};
    use chrono::Utc;
    use rstest_reuse::apply;
    use sqlx::{Column, Row};

    use super::*;
    use crate::store::outbox::{self, EventType};
    use crate::store::testing::temp_store_on;

    const HOOK: &str = "http://127.0.0.1:9/hook";
    const OTHER: &str = "http://127.0.0.1:9/other";

    /// Commits one state change of each agent (`None`: a bulk job's end, of no agent),
    /// in order, and fans them out to `HOOK` and `OTHER`, due at 1,000.
    async fn fanned_out(store: &Store, agents: &[Option<&str>]) {
        let (_, bulk_completed) = crate::domain::events::examples::all()
            .into_iter()
            .find(|(_, e)| e.event_type() == EventType::BulkCompleted)
            .unwrap();
        let mut tx = store.begin_write().await.unwrap();
        for agent in agents {
            let event = match agent {
                Some(agent) => crate::domain::events::Event::AgentStateChanged(
                    crate::domain::events::StateChanged {
                        agent_id: (*agent).to_owned(),
                        from: None,
                        to: crate::domain::AgentState::Ready,
                        reason_code: None,
                        origin: crate::domain::Origin::Api,
                        idle_ms: 0,
                        latency_ms: None,
                        attempt_id: None,
                        queue: None,
                        changed_at: None,
                        deferred_id: None,
                    },
                ),
                None => bulk_completed.clone(),
            };
            outbox::enqueue(&mut tx, *agent, Utc::now(), event)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let subscribers = [HOOK, OTHER].map(|endpoint| Subscriber {
            endpoint,
            events: None,
        });
        fan_out(store, &subscribers, 1_000).await.unwrap();
    }

    /// [`fanned_out`] of state changes only.
    async fn changes_fanned_out(store: &Store, agents: &[&str]) {
        let agents: Vec<Option<&str>> = agents.iter().copied().map(Some).collect();
        fanned_out(store, &agents).await;
    }

    /// The agents of `claimed`, in the order claimed.
    async fn agents_of(store: &Store, claimed: &[Claimed]) -> Vec<String> {
        let mut agents = Vec::new();
        for delivery in claimed {
            let agent: String = on!(store.reader(), |c| sqlx::query_scalar(
                "SELECT agent_id FROM webhook_deliveries WHERE id = $1"
            )
            .bind(delivery.id)
            .fetch_one(c)
            .await)
            .unwrap();
            agents.push(agent);
        }
        agents
    }

    fn attempt(delivery: &Claimed, verdict: DeliveryVerdict, status: u16, early: bool) -> Attempt {
        Attempt {
            delivery_id: delivery.id,
            endpoint: delivery.endpoint.clone(),
            event_type: delivery.event_type.clone(),
            attempted_at: 5_000,
            status_code: Some(status),
            duration_ms: 3,
            error: (status >= 300).then(|| format!("receiver answered {status}")),
            response_body: Some(format!("body {status}")),
            verdict,
            early,
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_claim_takes_each_agents_first_pending_delivery_in_commit_order_once(
        backend: Backend,
    ) {
        let (store, _dir) = temp_store_on(backend).await;
        changes_fanned_out(&store, &["a", "b", "a", "c", "b", "a"]).await;

        let first = claim(&store, &[HOOK], 2_000, 60_000, 10).await.unwrap();
        assert_eq!(agents_of(&store, &first).await, ["a", "b", "c"]);
        assert!(first.iter().all(|d| d.endpoint == HOOK && !d.early));
        // One fan-out numbers an endpoint's deliveries in commit order.
        let ids: Vec<i64> = first.iter().map(|d| d.id).collect();
        assert!(ids.is_sorted(), "in commit order: {ids:?}");
        assert!(
            claim(&store, &[HOOK], 2_000, 60_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "leased, and each agent's next waits for its first"
        );

        let attempts: Vec<Attempt> = first
            .iter()
            .map(|d| attempt(d, DeliveryVerdict::Delivered, 204, false))
            .collect();
        settle(
            &store,
            &attempts,
            Probing {
                min_ms: 1,
                max_ms: 1,
            },
            5_000,
        )
        .await
        .unwrap();
        let second = claim(&store, &[HOOK], 6_000, 60_000, 1).await.unwrap();
        assert_eq!(agents_of(&store, &second).await, ["a"], "the limit holds");
        let third = claim(&store, &[HOOK], 6_000, 60_000, 10).await.unwrap();
        assert_eq!(agents_of(&store, &third).await, ["b"]);
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_settled_batch_records_every_attempt_and_moves_each_delivery_on(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        fanned_out(&store, &[Some("a"), Some("b"), Some("c"), Some("d"), None]).await;
        let claimed = claim(&store, &[HOOK], 2_000, 60_000, 5).await.unwrap();
        assert_eq!(claimed.len(), 5);
        fanned_out(&store, &[Some("f"), None]).await;
        let attempts = [
            attempt(&claimed[0], DeliveryVerdict::Delivered, 204, false),
            attempt(&claimed[1], DeliveryVerdict::RetryAt(9_000), 500, false),
            attempt(&claimed[2], DeliveryVerdict::Dead, 500, false),
            // Ahead of schedule and failed: costs no attempt, keeps its schedule.
            attempt(&claimed[3], DeliveryVerdict::RetryAt(9_000), 503, true),
            attempt(&claimed[4], DeliveryVerdict::Gone, 410, false),
        ];
        settle(
            &store,
            &attempts,
            Probing {
                min_ms: 1,
                max_ms: 1,
            },
            5_000,
        )
        .await
        .unwrap();

        type Row = (
            String,
            i64,
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<String>,
        );
        let rows: Vec<Row> = on!(store.reader(), |c| sqlx::query_as(
            "SELECT status, attempts, next_attempt_at, delivered_at, lease_until, last_status,
                    last_error
             FROM webhook_deliveries WHERE endpoint = $1 ORDER BY event_seq"
        )
        .bind(HOOK)
        .fetch_all(c)
        .await)
        .unwrap();
        let error = |status: u16| Some(format!("receiver answered {status}"));
        assert_eq!(
            rows,
            [
                (
                    "delivered".into(),
                    1,
                    1_000,
                    Some(5_000),
                    None,
                    Some(204),
                    None
                ),
                (
                    "pending".into(),
                    1,
                    9_000,
                    None,
                    None,
                    Some(500),
                    error(500)
                ),
                ("dead".into(), 1, 1_000, None, None, Some(500), error(500)),
                (
                    "pending".into(),
                    0,
                    1_000,
                    None,
                    None,
                    Some(503),
                    error(503)
                ),
                (
                    "disabled".into(),
                    1,
                    1_000,
                    None,
                    None,
                    Some(410),
                    error(410)
                ),
                // Never tried: another event type goes on, the gone one is disabled.
                ("pending".into(), 0, 1_000, None, None, None, None),
                ("disabled".into(), 0, 1_000, None, None, None, None),
            ]
        );
        let others: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint = $1 AND status = 'pending'"
        )
        .bind(OTHER)
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(others, 7, "another endpoint's deliveries are left alone");

        type Recorded = (i64, i64, Option<i64>, i64, Option<String>, Option<String>);
        let recorded: Vec<Recorded> = on!(store.reader(), |c| sqlx::query_as(
            "SELECT delivery_id, attempted_at, status_code, duration_ms, error, response_body
                 FROM webhook_attempts ORDER BY id"
        )
        .fetch_all(c)
        .await)
        .unwrap();
        let expected: Vec<_> = attempts
            .iter()
            .map(|a| {
                (
                    a.delivery_id,
                    5_000,
                    a.status_code.map(i64::from),
                    3,
                    a.error.clone(),
                    a.response_body.clone(),
                )
            })
            .collect();
        assert_eq!(recorded, expected, "every attempt, in the batch's order");
        let disabled: Vec<(String, String)> = on!(store.reader(), |c| sqlx::query_as(
            "SELECT endpoint, event_type FROM webhook_disabled"
        )
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(disabled, [(HOOK.to_owned(), "bulk.completed".to_owned())]);
    }

    /// The claim's lease statement as PostgreSQL plans it when the claim runs it, on a
    /// young table (no statistics yet) holding a backlog.
    #[tokio::test]
    async fn on_postgres_the_claim_walks_the_pending_deliveries_instead_of_sorting_the_backlog() {
        let (store, _dir) = temp_store_on(Backend::Postgres).await;
        let agents: Vec<String> = (0..2_000).map(|i| format!("u_{i}")).collect();
        let agents: Vec<&str> = agents.iter().map(String::as_str).collect();
        changes_fanned_out(&store, &agents).await;

        let mut tx = store.begin_write().await.unwrap();
        on_postgres(&mut tx, WALK_IN_ORDER).await.unwrap();
        let Db::Postgres(c) = tx.db() else {
            unreachable!("a PostgreSQL store")
        };
        let plan: Vec<String> = sqlx::query_scalar(concat!("EXPLAIN ", lease_due!(postgres)))
            .bind(2_000i64)
            .bind(60_000i64)
            .bind(json!([HOOK]).to_string())
            .bind(32i64)
            .fetch_all(c)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(!plan.contains("Sort"), "sorts the backlog:\n{plan}");
        assert!(
            plan.contains("Index Scan using webhook_deliveries_status"),
            "walks the pending index in event_seq order:\n{plan}"
        );
    }

    /// Every text cell of every table.
    async fn every_text(store: &Store) -> Vec<String> {
        let tables: Vec<String> = on!(
            store.reader(),
            (
                "SELECT name FROM sqlite_master WHERE type = 'table'",
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
                 WHERE table_schema = current_schema()"
            ),
            |c, sql| sqlx::query_scalar(sql).fetch_all(c).await
        )
        .unwrap();
        let mut texts = Vec::new();
        for table in tables {
            let cells: Vec<String> = on!(store.reader(), |c| {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{table}\"")))
                    .fetch_all(c)
                    .await
                    .unwrap();
                rows.iter()
                    .flat_map(|row| {
                        row.columns()
                            .iter()
                            .filter_map(|column| {
                                row.try_get::<Option<String>, _>(column.ordinal())
                                    .ok()
                                    .flatten()
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect()
            });
            texts.extend(cells);
        }
        texts
    }

    #[apply(backends)]
    #[tokio::test]
    async fn endpoints_stored_with_credentials_are_rewritten_masked_once(backend: Backend) {
        const OLD: &str = "http://hookuser:hookpass@127.0.0.1:9/hooks?token=tok123";
        const TWIN: &str = "http://other:otherpass@127.0.0.1:9/hooks?token=tok456";
        const PLAIN: &str = "http://127.0.0.1:9/plain";
        let (store, _dir) = temp_store_on(backend).await;
        // What an older wfmd left behind.
        let mut tx = store.begin_write().await.unwrap();
        let (_, event) = crate::domain::events::examples::all()
            .into_iter()
            .find(|(_, e)| e.event_type() == EventType::BulkCompleted)
            .unwrap();
        outbox::enqueue(&mut tx, None, Utc::now(), event)
            .await
            .unwrap();
        for endpoint in [OLD, TWIN, PLAIN] {
            on!(tx, |c| sqlx::query(
                "INSERT INTO webhook_deliveries
                     (event_seq, endpoint, event_type, next_attempt_at, created_at, last_error)
                 VALUES ((SELECT MAX(seq) FROM outbox_events), $1, 'bulk.completed', 0, 0,
                         'request failed: error sending request for url (' || $1 || ')')",
            )
            .bind(endpoint)
            .execute(c)
            .await
            .map(Done::from))
            .unwrap();
            on!(tx, |c| sqlx::query(
                "INSERT INTO webhook_attempts (delivery_id, attempted_at, duration_ms, error)
                 SELECT id, 0, 1, last_error FROM webhook_deliveries WHERE endpoint = $1",
            )
            .bind(endpoint)
            .execute(c)
            .await
            .map(Done::from))
            .unwrap();
        }
        for endpoint in [OLD, TWIN] {
            on!(tx, |c| sqlx::query(
                "INSERT INTO webhook_endpoints (endpoint, status, since, last_error)
                 VALUES ($1, 'failing', 0, 'request failed: error sending request for url (' || $1 || ')')",
            )
            .bind(endpoint)
            .execute(c)
            .await.map(Done::from))
            .unwrap();
        }
        on!(tx, |c| sqlx::query(
            "INSERT INTO webhook_disabled (endpoint, event_type, reason, disabled_at)
             VALUES ($1, 'audit.checkpoint', 'gone', 0)",
        )
        .bind(OLD)
        .execute(c)
        .await
        .map(Done::from))
        .unwrap();
        on!(tx, |c| sqlx::query(
            "INSERT INTO webhook_redaction_pending (id) VALUES (1)"
        )
        .execute(c)
        .await
        .map(Done::from))
        .unwrap();
        tx.commit().await.unwrap();

        redact_stored_endpoints(&store).await.unwrap();

        let texts = every_text(&store).await;
        for secret in [
            "hookuser",
            "hookpass",
            "tok123",
            "other:",
            "otherpass",
            "tok456",
        ] {
            assert!(
                texts.iter().all(|t| !t.contains(secret)),
                "{secret} is still stored"
            );
        }
        let masked = "http://***@127.0.0.1:9/hooks?token=***";
        let endpoints: Vec<String> = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT endpoint FROM webhook_deliveries ORDER BY id"
        )
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(
            endpoints,
            [masked, &format!("{masked}#legacy-2"), PLAIN],
            "apart as before, the plain one untouched"
        );
        let error: String = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT error FROM webhook_attempts ORDER BY id"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(
            error,
            format!("request failed: error sending request for url ({masked})")
        );
        let disabled: String = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT endpoint FROM webhook_disabled"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(disabled, masked);

        // Done once: the marker is gone, and the next start finds nothing to do.
        let marker: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_redaction_pending"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(marker, 0);
        redact_stored_endpoints(&store).await.unwrap();
        assert_eq!(every_text(&store).await, texts);
    }
}
