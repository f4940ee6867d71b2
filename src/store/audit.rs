//! The append-only, hash-chained audit log.
//!
//! Triggers refuse UPDATE and DELETE, so wfmd cannot rewrite history by mistake. Someone
//! with the file can drop the triggers, so each entry also stores
//! `hash = sha256(prev_hash "\n" canonical_entry)`, where the canonical entry is a JSON
//! object of every other column in a fixed order, including its sequence number.
//! [`verify`] walks the chain: an edited row no longer matches its hash, a deleted row
//! leaves a gap in the sequence and a broken link, and a row inserted out of band does
//! not chain to the one before it.

use std::fmt;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{FromRow, SqliteConnection, SqlitePool};

use super::{from_ms, to_ms};

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub at: DateTime<Utc>,
    /// Who did it: `cli:alice`, `api`, `rule:care-lunch`, …
    pub actor: &'a str,
    /// What happened, e.g. `transition.succeeded`.
    pub action: &'a str,
    pub agent_id: Option<&'a str>,
    /// The id of the record the entry is about (a transition attempt).
    pub subject_id: Option<&'a str>,
    pub detail: serde_json::Value,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct EntryRow {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub agent_id: Option<String>,
    pub subject_id: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed form of an entry: every column but the hashes, in a fixed order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    at: i64,
    actor: &'a str,
    action: &'a str,
    agent_id: Option<&'a str>,
    subject_id: Option<&'a str>,
    detail: &'a str,
}

fn chain_hash(prev_hash: &str, entry: &Canonical<'_>) -> String {
    let canonical = serde_json::to_string(entry).expect("canonical entries always serialize");
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

impl EntryRow {
    fn expected_hash(&self) -> String {
        chain_hash(
            &self.prev_hash,
            &Canonical {
                seq: self.seq,
                at: self.at,
                actor: &self.actor,
                action: &self.action,
                agent_id: self.agent_id.as_deref(),
                subject_id: self.subject_id.as_deref(),
                detail: &self.detail,
            },
        )
    }

    pub fn at(&self) -> DateTime<Utc> {
        from_ms(self.at)
    }

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
    /// `sha256(prev_hash "\n" canonical entry)`, hex.
    pub hash: &'a str,
}

/// Appends an entry in the caller's write transaction; returns its sequence number.
///
/// The caller's transaction must hold the write lock (`BEGIN IMMEDIATE`), which
/// serialises appends so two entries never chain to the same predecessor.
pub async fn append(conn: &mut SqliteConnection, entry: &NewEntry<'_>) -> Result<i64, sqlx::Error> {
    append_all(conn, std::slice::from_ref(entry)).await
}

/// Appends entries in order, chained, in one statement whatever their number; returns
/// the sequence number of the last (0 when there are none).
pub async fn append_all(
    conn: &mut SqliteConnection,
    entries: &[NewEntry<'_>],
) -> Result<i64, sqlx::Error> {
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let (mut seq, mut prev_hash) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
    if entries.is_empty() {
        return Ok(seq);
    }
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        seq += 1;
        let detail = entry.detail.to_string();
        let at = to_ms(entry.at);
        let hash = chain_hash(
            &prev_hash,
            &Canonical {
                seq,
                at,
                actor: entry.actor,
                action: entry.action,
                agent_id: entry.agent_id,
                subject_id: entry.subject_id,
                detail: &detail,
            },
        );
        rows.push(serde_json::json!([
            seq,
            at,
            entry.actor,
            entry.action,
            entry.agent_id,
            entry.subject_id,
            detail,
            prev_hash,
            hash
        ]));
        prev_hash = hash;
    }
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, agent_id, subject_id, detail, prev_hash, hash)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                json_extract(value, '$[6]'), json_extract(value, '$[7]'),
                json_extract(value, '$[8]')
         FROM json_each(?)",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(&mut *conn)
    .await?;
    Ok(seq)
}

/// What is wrong with the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Break {
    /// The row's contents do not match its hash: it was edited.
    Edited { seq: i64 },
    /// The sequence skips numbers: entries were deleted.
    Missing { expected_seq: i64, found_seq: i64 },
    /// The row does not chain to the entry before it: inserted or replaced out of band.
    Unlinked { seq: i64 },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Edited { seq } => write!(
                f,
                "audit entry {seq} does not match its hash: it was edited, or written outside wfmd"
            ),
            Break::Missing {
                expected_seq,
                found_seq,
            } => write!(
                f,
                "audit entry {expected_seq} is missing (the next entry is {found_seq}): entries were deleted"
            ),
            Break::Unlinked { seq } => write!(
                f,
                "audit entry {seq} does not chain to the entry before it: it was inserted or replaced out of band"
            ),
        }
    }
}

/// The result of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verification {
    /// Entries checked before the first break (or all of them).
    pub entries: u64,
    pub first_break: Option<Break>,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Walks the chain from the first entry and reports the first break, streaming rows so
/// a large log verifies in constant memory.
pub async fn verify(pool: &SqlitePool) -> Result<Verification, sqlx::Error> {
    let mut rows = sqlx::query_as::<_, EntryRow>(
        "SELECT seq, at, actor, action, agent_id, subject_id, detail, prev_hash, hash
         FROM audit_log ORDER BY seq",
    )
    .fetch(pool);
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut entries = 0;
    while let Some(row) = rows.try_next().await? {
        let first_break = if row.seq != expected_seq {
            Some(Break::Missing {
                expected_seq,
                found_seq: row.seq,
            })
        } else if row.hash != row.expected_hash() {
            Some(Break::Edited { seq: row.seq })
        } else if row.prev_hash != prev_hash {
            Some(Break::Unlinked { seq: row.seq })
        } else {
            None
        };
        if first_break.is_some() {
            return Ok(Verification {
                entries,
                first_break,
            });
        }
        entries += 1;
        expected_seq += 1;
        prev_hash = row.hash;
    }
    Ok(Verification {
        entries,
        first_break: None,
    })
}

/// Entries written in `[from, to)`, oldest first.
pub async fn between(
    pool: &SqlitePool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    stream_between(pool, from, to).try_collect().await
}

/// Entries written in `[from, to)`, oldest first, one at a time: a year of entries
/// exports in constant memory.
pub fn stream_between(
    pool: &SqlitePool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> impl futures::Stream<Item = Result<EntryRow, sqlx::Error>> + Send + '_ {
    sqlx::query_as(
        "SELECT seq, at, actor, action, agent_id, subject_id, detail, prev_hash, hash
         FROM audit_log WHERE at >= ? AND at < ? ORDER BY seq",
    )
    .bind(to_ms(from))
    .bind(to_ms(to))
    .fetch(pool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::testing::temp_store;
    use serde_json::json;

    async fn write_entries(store: &Store, count: usize) {
        for i in 0..count {
            let mut tx = store.begin_write().await.unwrap();
            append(
                &mut tx,
                &NewEntry {
                    at: from_ms(1_790_000_000_000 + i as i64),
                    actor: "api",
                    action: "transition.succeeded",
                    agent_id: Some("u_001"),
                    subject_id: Some(&format!("attempt-{i}")),
                    detail: json!({"to": "READY", "n": i}),
                },
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    }

    async fn drop_triggers(store: &Store) {
        let mut tx = store.begin_write().await.unwrap();
        for trigger in ["audit_log_refuses_update", "audit_log_refuses_delete"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {trigger}")))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }

    async fn tamper(store: &Store, sql: &'static str) {
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn an_untouched_chain_verifies() {
        let (store, _dir) = temp_store().await;
        write_entries(&store, 5).await;
        let result = verify(store.reader()).await.unwrap();
        assert_eq!(
            result,
            Verification {
                entries: 5,
                first_break: None
            }
        );
    }

    #[tokio::test]
    async fn triggers_refuse_update_and_delete() {
        let (store, _dir) = temp_store().await;
        write_entries(&store, 1).await;
        let mut tx = store.begin_write().await.unwrap();
        let update = sqlx::query("UPDATE audit_log SET actor = 'mallory'")
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(update.to_string().contains("append-only"), "{update}");
        let delete = sqlx::query("DELETE FROM audit_log")
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(delete.to_string().contains("append-only"), "{delete}");
    }

    #[tokio::test]
    async fn an_edited_entry_is_named() {
        let (store, _dir) = temp_store().await;
        write_entries(&store, 5).await;
        drop_triggers(&store).await;
        tamper(
            &store,
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3",
        )
        .await;
        let result = verify(store.reader()).await.unwrap();
        assert_eq!(result.first_break, Some(Break::Edited { seq: 3 }));
        assert_eq!(result.entries, 2);
    }

    #[tokio::test]
    async fn a_deleted_entry_is_named() {
        let (store, _dir) = temp_store().await;
        write_entries(&store, 5).await;
        drop_triggers(&store).await;
        tamper(&store, "DELETE FROM audit_log WHERE seq = 2").await;
        let result = verify(store.reader()).await.unwrap();
        assert_eq!(
            result.first_break,
            Some(Break::Missing {
                expected_seq: 2,
                found_seq: 3
            })
        );
    }

    #[tokio::test]
    async fn a_replaced_entry_with_a_self_consistent_hash_is_caught_by_the_link() {
        let (store, _dir) = temp_store().await;
        write_entries(&store, 3).await;
        drop_triggers(&store).await;
        // A forger deletes entry 2 and inserts their own, hashing it correctly over a
        // made-up predecessor hash: it verifies on its own but not as part of the chain.
        tamper(&store, "DELETE FROM audit_log WHERE seq = 2").await;
        let forged = EntryRow {
            seq: 2,
            at: 1_790_000_000_001,
            actor: "mallory".into(),
            action: "transition.succeeded".into(),
            agent_id: Some("u_001".into()),
            subject_id: None,
            detail: "{}".into(),
            prev_hash: "f".repeat(64),
            hash: String::new(),
        };
        let hash = forged.expected_hash();
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, agent_id, subject_id, detail, prev_hash, hash)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(forged.seq)
        .bind(forged.at)
        .bind(&forged.actor)
        .bind(&forged.action)
        .bind(&forged.agent_id)
        .bind(&forged.subject_id)
        .bind(&forged.detail)
        .bind(&forged.prev_hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let result = verify(store.reader()).await.unwrap();
        assert_eq!(result.first_break, Some(Break::Unlinked { seq: 2 }));
    }

    #[tokio::test]
    async fn an_entry_inserted_at_the_end_out_of_band_is_caught() {
        let (store, _dir) = temp_store().await;
        write_entries(&store, 2).await;
        tamper(
            &store,
            "INSERT INTO audit_log (seq, at, actor, action, detail, prev_hash, hash)
             SELECT 3, at, 'mallory', action, detail, hash, hash FROM audit_log WHERE seq = 2",
        )
        .await;
        let result = verify(store.reader()).await.unwrap();
        assert_eq!(result.first_break, Some(Break::Edited { seq: 3 }));
    }
}
