//! Webhook endpoints: each one's health (up, failing since, disabled since) as the
//! attempts' verdicts move it, bringing forward the retries of one that has recovered;
//! the health rows of the configured endpoints; and the one-time rewrite of endpoints
//! stored before they were masked.

use serde::Serialize;
use serde_json::json;
use sqlx::FromRow;

use super::{Attempt, DeliveryVerdict, HealthChange, Probing};
use crate::store::{Pool, Store, execute, fetch, fetch_scalar};

/// One endpoint's row of `webhook_endpoints`.
#[derive(Debug, Clone, FromRow)]
struct HealthRow {
    status: String,
    since: i64,
    next_probe_at: Option<i64>,
    recovered_at: Option<i64>,
}

/// Applies the batch's attempts to each endpoint's health, in the order they were
/// made, and brings forward the retries of an endpoint that has recovered.
pub(super) async fn record_health(
    tx: &mut impl crate::store::AsConn,
    attempts: &[Attempt],
    probing: Probing,
    now_ms: i64,
) -> Result<Vec<HealthChange>, sqlx::Error> {
    let mut by_endpoint: std::collections::BTreeMap<&str, Vec<&Attempt>> = Default::default();
    for a in attempts {
        by_endpoint.entry(&a.endpoint).or_default().push(a);
    }
    let mut changes = Vec::new();
    for (endpoint, mut batch) in by_endpoint {
        batch.sort_by_key(|a| a.attempted_at);
        let first = batch[0].attempted_at;
        let mut row: HealthRow = fetch!(
            tx,
            optional,
            "SELECT status, since, next_probe_at, recovered_at FROM webhook_endpoints
             WHERE endpoint = $1",
            endpoint
        )?
        .unwrap_or(HealthRow {
            status: "up".into(),
            since: first,
            next_probe_at: None,
            recovered_at: None,
        });
        let before = (row.status.clone(), row.since);
        let mut recovered = false;
        let mut delivered = 0i64;
        let mut last_error = None;
        for a in &batch {
            match a.verdict {
                DeliveryVerdict::Delivered => {
                    delivered += 1;
                    if row.status == "failing" {
                        // A blip (one refused event among accepted ones) is no outage:
                        // only after failing for a probe wait are retries brought forward.
                        if a.attempted_at - row.since >= probing.min_ms {
                            row.recovered_at = Some(a.attempted_at);
                            recovered = true;
                        }
                    }
                    if row.status != "up" {
                        row.status = "up".into();
                        row.since = a.attempted_at;
                    }
                    row.next_probe_at = None;
                }
                DeliveryVerdict::Gone => {
                    if row.status != "disabled" {
                        row.status = "disabled".into();
                        row.since = a.attempted_at;
                    }
                    row.next_probe_at = None;
                }
                DeliveryVerdict::RetryAt(_) | DeliveryVerdict::Dead => {
                    if row.status != "failing" {
                        row.status = "failing".into();
                        row.since = a.attempted_at;
                    }
                    // A failure in the middle of a recovery ends it: the rest wait for
                    // the next one.
                    row.recovered_at = None;
                    row.next_probe_at = Some(probing.next_probe(row.since, a.attempted_at));
                    last_error = a.error.clone();
                }
            }
        }
        let last_attempt_at = batch.last().map(|a| a.attempted_at);
        if row.status == "up" && delivered > 0 && row.recovered_at.is_some() {
            let hastened = execute!(
                tx,
                (hasten_recovered!(sqlite), hasten_recovered!(postgres)),
                now_ms,
                endpoint,
                row.recovered_at,
                delivered * 2
            )?
            .rows_affected();
            if hastened == 0 {
                row.recovered_at = None;
            }
        }
        execute!(
            tx,
            "INSERT INTO webhook_endpoints
                 (endpoint, status, since, last_attempt_at, last_error, next_probe_at,
                  recovered_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (endpoint) DO UPDATE SET
                 status = $2, since = $3, last_attempt_at = $4,
                 last_error = COALESCE($5, webhook_endpoints.last_error), next_probe_at = $6,
                 recovered_at = $7",
            endpoint,
            &row.status,
            row.since,
            last_attempt_at,
            last_error,
            row.next_probe_at,
            row.recovered_at
        )?;
        if row.status != before.0 {
            changes.push(HealthChange {
                endpoint: endpoint.to_owned(),
                status: match row.status.as_str() {
                    "up" => "up",
                    "failing" => "failing",
                    _ => "disabled",
                },
                after_ms: (last_attempt_at.unwrap_or(now_ms) - before.1).max(0),
                recovered,
            });
        }
    }
    Ok(changes)
}

/// Makes sure every configured endpoint has a health row (`up` until a delivery to it
/// fails), so it shows in `/metrics` and `wfmd outbox list` before its first event.
pub async fn register(store: &Store, endpoints: &[&str], now_ms: i64) -> Result<(), sqlx::Error> {
    if endpoints.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin_write().await?;
    execute!(
        tx,
        "INSERT INTO webhook_endpoints (endpoint, status, since)
         SELECT value, 'up', $1 FROM json_each($2) WHERE true
         ON CONFLICT (endpoint) DO NOTHING",
        now_ms,
        json!(endpoints).to_string()
    )?;
    tx.commit().await
}

/// An endpoint's health as shown by `/metrics` and `wfmd outbox list`.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct EndpointHealth {
    pub endpoint: String,
    /// `up`, `failing` or `disabled` (the last answer was 410 Gone).
    pub status: String,
    /// When it entered that status.
    pub since: i64,
    pub last_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub pending: i64,
    pub dead: i64,
    /// Event types no longer sent to it because it answered 410, comma-separated.
    pub disabled_events: Option<String>,
}

/// Every endpoint's health, by URL.
pub async fn health(pool: &Pool) -> Result<Vec<EndpointHealth>, sqlx::Error> {
    fetch!(
        pool,
        all,
        "SELECT h.endpoint, h.status, h.since, h.last_attempt_at, h.last_error,
                (SELECT COUNT(*) FROM webhook_deliveries d
                 WHERE d.status = 'pending' AND d.endpoint = h.endpoint) AS pending,
                (SELECT COUNT(*) FROM webhook_deliveries d
                 WHERE d.status = 'dead' AND d.endpoint = h.endpoint) AS dead,
                (SELECT group_concat(event_type, ',') FROM webhook_disabled w
                 WHERE w.endpoint = h.endpoint) AS disabled_events
         FROM webhook_endpoints h ORDER BY h.endpoint"
    )
}

/// Rewrites the endpoints stored before issue #33 (whole URLs, credentials and all) into
/// their masked form ([`crate::redact::url`]), in every table that names them and in
/// the error texts that quote them (the HTTP client's messages named the URL). Runs
/// after the migrations, once: migration `…_webhook_endpoint_redaction` leaves a marker
/// that this removes in the same transaction.
///
/// Two old URLs that differ only in what is masked are kept apart with a
/// `#legacy-N` fragment; since the configuration may no longer hold two such endpoints,
/// their pending deliveries wait, like those of any endpoint no longer configured,
/// until the endpoint is configured again under that name.
pub async fn redact_stored_endpoints(store: &Store) -> Result<(), sqlx::Error> {
    let mut tx = store.begin_write().await?;
    let pending: Option<i64> =
        fetch_scalar!(tx, optional, "SELECT id FROM webhook_redaction_pending")?;
    if pending.is_none() {
        return Ok(());
    }
    let stored: Vec<String> = fetch_scalar!(
        tx,
        all,
        "SELECT endpoint FROM webhook_endpoints
         UNION SELECT endpoint FROM webhook_disabled
         UNION SELECT endpoint FROM webhook_deliveries
         ORDER BY endpoint"
    )?;
    let masked = |url: &str| crate::redact::url(url);
    let mut taken: std::collections::HashSet<String> = stored
        .iter()
        .filter(|e| masked(e) == **e)
        .cloned()
        .collect();
    let mut rewritten = 0;
    for old in stored.iter().filter(|e| masked(e) != **e) {
        let mut new = masked(old);
        let mut n = 2;
        while taken.contains(&new) {
            new = format!("{}#legacy-{n}", masked(old));
            n += 1;
        }
        taken.insert(new.clone());
        for statement in [
            "UPDATE webhook_deliveries SET endpoint = $2 WHERE endpoint = $1",
            "UPDATE webhook_endpoints SET endpoint = $2 WHERE endpoint = $1",
            "UPDATE webhook_disabled SET endpoint = $2 WHERE endpoint = $1",
        ] {
            execute!(tx, statement, old, &new)?;
        }
        // As configured, and as the HTTP client printed it (normalised).
        let mut quoted = vec![old.clone()];
        if let Ok(url) = reqwest::Url::parse(old) {
            quoted.push(url.to_string());
        }
        quoted.dedup();
        for text in &quoted {
            for statement in [
                "UPDATE webhook_attempts SET error = replace(error, $1, $2)
                 WHERE error <> replace(error, $1, $2)",
                "UPDATE webhook_deliveries SET last_error = replace(last_error, $1, $2)
                 WHERE last_error <> replace(last_error, $1, $2)",
                "UPDATE webhook_endpoints SET last_error = replace(last_error, $1, $2)
                 WHERE last_error <> replace(last_error, $1, $2)",
            ] {
                execute!(tx, statement, text, &new)?;
            }
        }
        rewritten += 1;
    }
    execute!(tx, "DELETE FROM webhook_redaction_pending")?;
    tx.commit().await?;
    if rewritten > 0 {
        tracing::info!(
            endpoints = rewritten,
            "webhook endpoints stored with their credentials were rewritten masked"
        );
    }
    Ok(())
}
