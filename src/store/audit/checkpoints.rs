//! Audit checkpoints: signed records of (last entry, its chain hash, count, time).
//!
//! A checkpoint is made only over entries that verify (the segment since the previous
//! checkpoint is walked first), so a signature never vouches for forged rows. Two kinds:
//! - published: every `audit.checkpoint_interval`, the head is recorded and sent as an
//!   `audit.checkpoint` webhook, so a system outside holds an anchor
//!   (`wfmd audit verify --anchor HASH`); kept for good (one row an hour);
//! - retention's: before removing a batch of old entries, the last of them is recorded,
//!   so verification can start there; replaced by the next batch's.
//!
//! With `audit.key`, each checkpoint carries HMAC-SHA-256 over its fields, so one made
//! up by someone holding the file but not the key does not verify.

use crate::store::{AsConn, Pool, execute, fetch, fetch_scalar, on};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::FromRow;

use super::{self as audit, AuditKey, Break, EntryRow, Walker};
use crate::domain::events::{AuditCheckpoint, Event};
use crate::store::outbox;
use crate::store::{Store, to_ms};

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct CheckpointRow {
    /// The last entry covered.
    pub seq: i64,
    /// That entry's chain hash.
    pub hash: String,
    /// Entries from the first through `seq`.
    pub count: i64,
    /// When that entry was written (Unix ms).
    pub entry_at: i64,
    /// When the checkpoint was made (Unix ms).
    pub at: i64,
    /// The first keyed entry at or before `seq`, if any.
    pub keyed_from: Option<i64>,
    pub key_id: Option<String>,
    pub signature: Option<String>,
    pub published: bool,
}

/// `published` is stored as 0/1 (PostgreSQL's column is a BIGINT like SQLite's) and read
/// back as a boolean, which both decode as `bool`.
const COLUMNS: &str =
    "seq, hash, count, entry_at, at, keyed_from, key_id, signature, published <> 0 AS published";

impl CheckpointRow {
    /// The signed bytes: every field that says what the checkpoint vouches for.
    fn message(&self) -> Vec<u8> {
        format!(
            "wfmd audit checkpoint\n{}\n{}\n{}\n{}\n{}\n{}",
            self.seq,
            self.hash,
            self.count,
            self.entry_at,
            self.at,
            self.keyed_from
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
        )
        .into_bytes()
    }

    /// Whether `key` signed this checkpoint as it stands.
    pub fn signed_by(&self, key: &AuditKey) -> bool {
        self.key_id.as_deref() == Some(key.id().as_str())
            && self
                .signature
                .as_deref()
                .is_some_and(|signature| key.verify(&self.message(), signature))
    }

    fn sign(&mut self, key: &AuditKey) {
        self.key_id = Some(key.id());
        self.signature = Some(key.sign(&self.message()));
    }
}

/// Why no checkpoint could be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    /// The entries since the previous checkpoint do not verify: signing them would vouch
    /// for a broken chain.
    #[error("no checkpoint made: {0}")]
    Broken(Break),
}

/// The checkpoint of entry `seq`, if one was recorded.
pub async fn at(pool: &Pool, seq: i64) -> Result<Option<CheckpointRow>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_checkpoints WHERE seq = $1"
        )),
        seq
    )
}

/// Every checkpoint's hash from entry `seq` on, by entry.
pub async fn hashes_from(pool: &Pool, seq: i64) -> Result<HashMap<i64, String>, sqlx::Error> {
    let rows: Vec<(i64, String)> = fetch!(
        pool,
        all,
        "SELECT seq, hash FROM audit_checkpoints WHERE seq >= $1",
        seq
    )?;
    Ok(rows.into_iter().collect())
}

/// The newest published checkpoint.
pub async fn latest_published(pool: &Pool) -> Result<Option<CheckpointRow>, sqlx::Error> {
    fetch!(
        pool,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_checkpoints WHERE published = 1 ORDER BY seq DESC LIMIT 1"
        ))
    )
}

/// Signs the checkpoints made before the chain was keyed (called when it becomes so).
pub(super) async fn sign_unsigned(
    conn: &mut impl AsConn,
    key: &AuditKey,
) -> Result<(), sqlx::Error> {
    let rows: Vec<CheckpointRow> = fetch!(
        conn,
        all,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_checkpoints WHERE signature IS NULL"
        ))
    )?;
    for mut row in rows {
        row.sign(key);
        execute!(
            conn,
            "UPDATE audit_checkpoints SET key_id = $1, signature = $2 WHERE seq = $3",
            &row.key_id,
            &row.signature,
            row.seq
        )?;
    }
    Ok(())
}

/// Where a walk up to entry `seq` starts: the newest checkpoint below it that the kept
/// entries continue from (checked against `key`), or the first entry (`None`).
async fn start_below(
    conn: &mut impl AsConn,
    key: Option<&AuditKey>,
    seq: i64,
) -> Result<Option<CheckpointRow>, CheckpointError> {
    let first: Option<i64> = fetch_scalar!(conn, one, "SELECT MIN(seq) FROM audit_log")?;
    let first = first.unwrap_or(seq);
    let start: Option<CheckpointRow> = fetch!(
        conn,
        optional,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_checkpoints WHERE seq < $1 AND seq >= $2
         ORDER BY seq DESC LIMIT 1"
        )),
        seq,
        first - 1
    )?;
    match start {
        Some(start) => {
            if let Some(key) = key
                && !start.signed_by(key)
            {
                return Err(CheckpointError::Broken(Break::Checkpoint {
                    seq: start.seq,
                }));
            }
            Ok(Some(start))
        }
        None if first <= 1 => Ok(None),
        None => Err(CheckpointError::Broken(Break::Uncovered {
            first_seq: first,
        })),
    }
}

/// Records a checkpoint of entry `seq` in the caller's write transaction, after
/// verifying the entries since the previous checkpoint with the connection's key.
/// Returns `None` when that entry already has one (or does not exist).
pub async fn record(
    conn: &mut impl AsConn,
    seq: i64,
    now: DateTime<Utc>,
    published: bool,
) -> Result<Option<CheckpointRow>, CheckpointError> {
    let key = audit::connection_key(conn).await?;
    let exists: Option<i64> = fetch_scalar!(
        conn,
        optional,
        "SELECT seq FROM audit_checkpoints WHERE seq = $1",
        seq
    )?;
    if exists.is_some() {
        if published {
            execute!(
                conn,
                "UPDATE audit_checkpoints SET published = 1 WHERE seq = $1",
                seq
            )?;
        }
        return Ok(None);
    }
    let start = start_below(conn, key.as_ref(), seq).await?;
    let from = start.as_ref().map_or(0, |start| start.seq);
    let mut walker = match &start {
        Some(start) => Walker::from_checkpoint(key.as_ref(), start),
        None => Walker::from_genesis(key.as_ref()),
    };
    let mut last: Option<EntryRow> = None;
    {
        let mut rows = on!(conn, |c| sqlx::query_as::<_, EntryRow>(
            "SELECT seq, at, actor, action, agent_id, subject_id, detail, prev_hash, hash
             FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq",
        )
        .bind(from)
        .bind(seq)
        .fetch(c));
        while let Some(row) = rows.try_next().await? {
            if let Some(broken) = walker.step(&row) {
                return Err(CheckpointError::Broken(broken));
            }
            last = Some(row);
        }
    }
    let Some(last) = last.filter(|row| row.seq == seq) else {
        return Ok(None);
    };
    let mut row = CheckpointRow {
        seq,
        hash: last.hash,
        count: seq,
        entry_at: last.at,
        at: to_ms(now),
        keyed_from: walker.keyed_from(),
        key_id: None,
        signature: None,
        published,
    };
    if let Some(key) = &key {
        row.sign(key);
    }
    execute!(
        conn,
        "INSERT INTO audit_checkpoints
             (seq, hash, count, entry_at, at, keyed_from, key_id, signature, published)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        row.seq,
        &row.hash,
        row.count,
        row.entry_at,
        row.at,
        row.keyed_from,
        &row.key_id,
        &row.signature,
        i64::from(row.published)
    )?;
    Ok(Some(row))
}

/// Records the chain's head as a published checkpoint and enqueues its
/// `audit.checkpoint` event, in one transaction. `None` when nothing was appended
/// since the last checkpoint.
pub async fn publish(
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Option<CheckpointRow>, CheckpointError> {
    let mut tx = store.begin_write().await?;
    let head: Option<i64> = fetch_scalar!(tx, one, "SELECT MAX(seq) FROM audit_log")?;
    let Some(head) = head else {
        return Ok(None);
    };
    let Some(row) = record(&mut tx, head, now, true).await? else {
        return Ok(None);
    };
    let checkpoint = AuditCheckpoint {
        entry_id: row.seq,
        hash: row.hash.clone(),
        count: row.count,
    };
    outbox::enqueue(&mut tx, None, now, Event::AuditCheckpoint(checkpoint)).await?;
    tx.commit().await?;
    store.notify_outbox();
    Ok(Some(row))
}

#[cfg(test)]
mod tests {
    use crate::store::Backend;
    use crate::store::Done;
    use crate::store::testing::backends;
    use rstest_reuse::apply;
    use serde_json::json;

    use super::*;
    use crate::store::audit::NewEntry;
    use crate::store::testing::{temp_store_keyed_on, temp_store_on};

    async fn write(store: &Store, count: usize) {
        for i in 0..count {
            let mut tx = store.begin_write().await.unwrap();
            audit::append(
                &mut tx,
                &NewEntry {
                    at: crate::store::from_ms(1_790_000_000_000 + i as i64),
                    actor: "api",
                    action: "transition.succeeded",
                    agent_id: Some("u_001"),
                    subject_id: None,
                    detail: json!({ "n": i }),
                },
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn publishing_records_the_head_once_and_enqueues_its_event(backend: Backend) {
        let (store, _dir) = temp_store_keyed_on(backend).await;
        write(&store, 3).await;
        let now = Utc::now();
        let first = publish(&store, now).await.unwrap().unwrap();
        // The keyed marker is entry 1, then the three entries.
        assert_eq!((first.seq, first.count), (4, 4));
        assert!(first.signed_by(store.audit_key().unwrap()));
        assert!(publish(&store, now).await.unwrap().is_none(), "nothing new");
        let events = outbox::after(store.reader(), 0, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        let body: serde_json::Value = serde_json::from_str(&events[0].payload).unwrap();
        assert_eq!(body["type"], "audit.checkpoint");
        assert_eq!(
            body["data"],
            json!({"entry_id": 4, "hash": first.hash, "count": 4})
        );
        write(&store, 1).await;
        assert_eq!(publish(&store, now).await.unwrap().unwrap().seq, 5);
    }

    #[apply(backends)]
    #[tokio::test]
    async fn no_checkpoint_vouches_for_an_edited_entry(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        write(&store, 3).await;
        crate::store::testing::drop_audit_triggers(&store).await;
        let mut tx = store.begin_write().await.unwrap();
        on!(tx, |c| sqlx::query(
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"
        )
        .execute(c)
        .await
        .map(Done::from))
        .unwrap();
        tx.commit().await.unwrap();
        let err = publish(&store, Utc::now()).await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::Broken(Break::Edited { seq: 2 })),
            "{err}"
        );
    }
}
