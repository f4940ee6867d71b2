//! The audit log as `wfmd audit export` and `GET /v1/audit` give it: entries of a window,
//! streamed, each as one JSON object.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::EntryRow;
use crate::store::{Pool, on, to_ms};

impl EntryRow {
    /// The entry as `wfmd audit export` and `GET /v1/audit` print it: one JSON object,
    /// the time as RFC 3339 and the detail as JSON.
    pub fn exported(&self) -> ExportedEntry<'_> {
        ExportedEntry {
            seq: self.seq,
            at: crate::time::rfc3339(self.at()),
            actor: &self.actor,
            action: &self.action,
            agent_id: self.agent_id.as_deref(),
            subject_id: self.subject_id.as_deref(),
            detail: serde_json::from_str(&self.detail)
                .unwrap_or_else(|_| serde_json::Value::String(self.detail.clone())),
            prev_hash: &self.prev_hash,
            hash: &self.hash,
        }
    }
}

/// An audit entry as exported (one JSON line each).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportedEntry<'a> {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When it was written (RFC 3339, UTC).
    pub at: String,
    /// Who did it: a token name, `local`, `cli:alice`, `rule:care-lunch`, `sync`, …
    pub actor: &'a str,
    /// What happened, e.g. `transition.succeeded`.
    pub action: &'a str,
    pub agent_id: Option<&'a str>,
    /// The record the entry is about (a transition attempt).
    pub subject_id: Option<&'a str>,
    pub detail: serde_json::Value,
    pub prev_hash: &'a str,
    /// `sha256(prev_hash "\n" canonical entry)`, hex; HMAC-SHA-256 with `audit.key`
    /// from the `audit.keyed` entry on.
    pub hash: &'a str,
}

/// Entries written in `[from, to)`, oldest first, one at a time: a year of entries
/// exports in constant memory.
pub fn stream_between(
    pool: &Pool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> impl futures::Stream<Item = Result<EntryRow, sqlx::Error>> + Send + '_ {
    on!(pool, |c| sqlx::query_as(
        "SELECT seq, at, actor, action, agent_id, subject_id, detail, prev_hash, hash
         FROM audit_log WHERE at >= $1 AND at < $2 ORDER BY seq",
    )
    .bind(to_ms(from))
    .bind(to_ms(to))
    .fetch(c))
}
