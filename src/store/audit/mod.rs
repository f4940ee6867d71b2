//! The append-only, hash-chained audit log.
//!
//! Triggers refuse UPDATE and DELETE (a delete only of entries a checkpoint covers, for
//! retention), so wfmd cannot rewrite history by mistake. Someone with the file can drop
//! the triggers, so each entry also stores `hash = H(prev_hash "\n" canonical_entry)`,
//! where the canonical entry is a JSON object of every other column in a fixed order,
//! including its sequence number. [`verify`](fn@verify) walks the chain: an edited row no longer
//! matches its hash, a deleted row leaves a gap in the sequence and a broken link, and
//! a row inserted out of band does not chain to the one before it.
//!
//! `H` is SHA-256 until `audit.key` is set. The first entry written with a key is an
//! `audit.keyed` entry naming the key's fingerprint; from it on `H` is HMAC-SHA-256 with
//! that key, so rows appended by someone holding the file but not the key no longer
//! verify. Entries before it keep verifying as plain SHA-256.
//!
//! The key reaches [`append_all`] through the write connection: [`Store`](super::Store) puts it in a
//! `TEMP` table of each write connection it opens (connection memory, never the
//! database file), so every writer keys its entries without being handed the key.
//!
//! Retention prunes a prefix of the log only up to a checkpoint
//! ([`checkpoints`]): the last pruned entry's sequence number and hash, signed
//! with the key. Verification then starts from that checkpoint instead of the first
//! entry, and says so.

use crate::store::batched::TableWrite;
use crate::store::{AsConn, execute, fetch, fetch_scalar};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::FromRow;

use super::{from_ms, to_ms};

pub mod checkpoints;
mod export;

use checkpoints::CheckpointRow;

pub use export::{ExportedEntry, stream_between};

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The action of the entry from which the chain is keyed.
pub const KEYED_ACTION: &str = "audit.keyed";

/// The chain's HMAC key (`audit.key`). Cheap to clone; never printed.
#[derive(Clone)]
pub struct AuditKey(Arc<SecretString>);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(********)")
    }
}

impl AuditKey {
    pub fn new(secret: &SecretString) -> AuditKey {
        AuditKey(Arc::new(secret.clone()))
    }

    pub(super) fn bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }

    /// The key as written, for PostgreSQL's setting of it (`postgres::WriteLock`).
    pub(in crate::store) fn text(&self) -> &str {
        self.0.expose_secret()
    }

    pub(super) fn from_bytes(bytes: Vec<u8>) -> Option<AuditKey> {
        String::from_utf8(bytes)
            .ok()
            .map(|text| AuditKey(Arc::new(SecretString::from(text))))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.bytes()).expect("HMAC takes keys of any length")
    }

    /// A fingerprint naming the key (not revealing it): the first 8 bytes of
    /// HMAC(key, "wfmd audit key id"), hex.
    pub fn id(&self) -> String {
        let mut mac = self.mac();
        mac.update(b"wfmd audit key id");
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// Hex HMAC-SHA-256 of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `signature` is [`AuditKey::sign`] of `message` (in constant time).
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(message);
        mac.verify_slice(&signature).is_ok()
    }
}

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

fn chain_hash(prev_hash: &str, entry: &Canonical<'_>, key: Option<&AuditKey>) -> String {
    let canonical = serde_json::to_string(entry).expect("canonical entries always serialize");
    match key {
        None => {
            let mut hasher = Sha256::new();
            hasher.update(prev_hash.as_bytes());
            hasher.update(b"\n");
            hasher.update(canonical.as_bytes());
            hex::encode(hasher.finalize())
        }
        Some(key) => {
            let mut mac = key.mac();
            mac.update(prev_hash.as_bytes());
            mac.update(b"\n");
            mac.update(canonical.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
    }
}

impl EntryRow {
    fn expected_hash(&self, key: Option<&AuditKey>) -> String {
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
            key,
        )
    }

    pub fn at(&self) -> DateTime<Utc> {
        from_ms(self.at)
    }

    /// The key fingerprint an `audit.keyed` entry names.
    fn keyed_with(&self) -> Option<String> {
        let detail: serde_json::Value = serde_json::from_str(&self.detail).ok()?;
        detail["key_id"].as_str().map(str::to_owned)
    }
}

/// Why an entry cannot be appended.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error(
        "the audit log is keyed since entry {from_seq}: set audit.key (WFMD_AUDIT__KEY) to \
         write to it"
    )]
    Missing { from_seq: i64 },
    #[error(
        "audit.key is not the key the audit log is keyed with since entry {from_seq} \
         (key id {expected}, this one is {given})"
    )]
    Mismatch {
        from_seq: i64,
        expected: String,
        given: String,
    },
}

/// The writer's key as SQLite reads it: from the connection's TEMP table.
macro_rules! sqlite_key {
    () => {
        "SELECT key FROM temp.wfmd_audit_key LIMIT 1"
    };
}

/// The writer's key as PostgreSQL reads it: the setting the write transaction began
/// with (see [`postgres::AUDIT_KEY_SETTING`](crate::store::postgres)), empty outside one.
macro_rules! postgres_key {
    () => {
        "SELECT convert_to(NULLIF(current_setting('wfmd.audit_key', true), ''), 'UTF8')"
    };
}

/// Puts `key` in a `TEMP` table of a fresh SQLite write connection (connection memory
/// only), where [`append_all`] finds it. A SQLite connection serves one tenant for its
/// life; PostgreSQL's, shared by tenants, get the key per write transaction instead
/// (see `postgres::WriteLock`).
pub(super) async fn hold_key(
    conn: &mut sqlx_sqlite::SqliteConnection,
    key: Option<&AuditKey>,
) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE TEMP TABLE IF NOT EXISTS wfmd_audit_key (key BLOB NOT NULL)")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM temp.wfmd_audit_key")
        .execute(&mut *conn)
        .await?;
    if let Some(key) = key {
        sqlx::query("INSERT INTO temp.wfmd_audit_key (key) VALUES ($1)")
            .bind(key.bytes())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The key of this write connection (SQLite) or write transaction (PostgreSQL), if its
/// store was opened with one.
pub(super) async fn connection_key(
    conn: &mut impl AsConn,
) -> Result<Option<AuditKey>, sqlx::Error> {
    let key: Option<Option<Vec<u8>>> =
        fetch_scalar!(conn, optional, (sqlite_key!(), postgres_key!()))?;
    Ok(key.flatten().and_then(AuditKey::from_bytes))
}

/// What an append reads before it writes: the chain's head, from which entry the chain
/// is keyed and with which key (the writers' hint), and the connection's key. Read by
/// [`read_tip`], or by a statement of the same transaction that reads it along with
/// its own work, as [`POSTGRES_TIP`] (the change path's records: see
/// [`crate::store::history::switch_states_then_tip`]).
#[derive(FromRow)]
pub struct Tip {
    log_seq: Option<i64>,
    log_hash: Option<String>,
    checkpoint_seq: Option<i64>,
    checkpoint_hash: Option<String>,
    keyed_from_seq: Option<i64>,
    keyed_with: Option<String>,
    key: Option<Vec<u8>>,
}

/// The statement that reads a [`Tip`] (`key` reads the writer's key: SQLite's from the
/// connection's TEMP table, PostgreSQL's from the transaction's setting), one statement
/// for all of it, as on PostgreSQL each is a round trip made while the tenant's write
/// lock is held.
macro_rules! tip {
    ($key:expr) => {
        concat!(
            "SELECT l.seq AS log_seq, l.hash AS log_hash,
                    c.seq AS checkpoint_seq, c.hash AS checkpoint_hash,
                    k.from_seq AS keyed_from_seq, k.key_id AS keyed_with,
                    (",
            $key,
            ") AS key
             FROM (SELECT 1 AS one) AS o
             LEFT JOIN (SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS l ON 1 = 1
             LEFT JOIN (SELECT seq, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1) AS c
                 ON 1 = 1
             LEFT JOIN audit_keying AS k ON k.id = 1"
        )
    };
}

/// Appends an entry in the caller's write transaction; returns its sequence number.
///
/// The caller's transaction must hold the write lock (SQLite's `BEGIN IMMEDIATE`, the
/// tenant's advisory lock on PostgreSQL: [`crate::store::Store::begin_write`] takes
/// either), which serialises appends so two entries never chain to the same
/// predecessor. The primary key on `seq` is the fence behind it: a second entry after
/// the same head would take the same `seq`, and its transaction fails whole.
pub async fn append(conn: &mut impl AsConn, entry: &NewEntry<'_>) -> Result<i64, sqlx::Error> {
    append_all(conn, std::slice::from_ref(entry)).await
}

/// Appends entries in order, chained, in one statement whatever their number; returns
/// the sequence number of the last (0 when there are none).
///
/// With a key on the connection and an unkeyed log, an `audit.keyed` entry goes first.
/// A keyed log refuses entries from a connection without its key (or with another):
/// they could never verify.
pub async fn append_all(
    conn: &mut impl AsConn,
    entries: &[NewEntry<'_>],
) -> Result<i64, sqlx::Error> {
    let (write, seq) = appending_all(conn, entries).await?;
    if let Some(write) = write {
        write.run(conn).await?;
    }
    Ok(seq)
}

/// [`append_all`] up to its insert, which it returns as a write to send with others
/// (see [`crate::store::batched`]; `None` when there are no entries), with the sequence
/// number of the last entry. It reads the chain's head (and, the first time a key
/// comes, writes the keying), so the insert must go in the same transaction, before
/// any other append.
pub async fn appending_all(
    conn: &mut impl AsConn,
    entries: &[NewEntry<'_>],
) -> Result<(Option<TableWrite>, i64), sqlx::Error> {
    let tip = read_tip(conn).await?;
    appending_after(conn, tip, entries).await
}

/// The [`Tip`] an append in this transaction starts from, read after the write lock is
/// held.
pub async fn read_tip(conn: &mut impl AsConn) -> Result<Tip, sqlx::Error> {
    fetch!(conn, one, (tip!(sqlite_key!()), tip!(postgres_key!())))
}

/// The statement [`read_tip`] runs on PostgreSQL (one row), for a statement that reads
/// the tip along with its own work: what that statement does must not touch the log.
pub const POSTGRES_TIP: &str = tip!(postgres_key!());

/// [`appending_all`] from `tip`, read in the same transaction after the write lock was
/// taken, and before any other append in it.
pub async fn appending_after(
    conn: &mut impl AsConn,
    tip: Tip,
    entries: &[NewEntry<'_>],
) -> Result<(Option<TableWrite>, i64), sqlx::Error> {
    // A log pruned to its last checkpoint continues from that checkpoint.
    let last = match (tip.log_seq, tip.log_hash) {
        (Some(seq), Some(hash)) => Some((seq, hash)),
        _ => tip.checkpoint_seq.zip(tip.checkpoint_hash),
    };
    let (mut seq, mut prev_hash) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
    if entries.is_empty() {
        return Ok((None, seq));
    }
    let key = tip.key.and_then(AuditKey::from_bytes);
    let keyed_from = tip.keyed_from_seq.zip(tip.keyed_with);
    let mut marker = None;
    match (&keyed_from, &key) {
        (None, None) => {}
        (Some((from_seq, _)), None) => {
            return Err(sqlx::Error::Configuration(Box::new(KeyProblem::Missing {
                from_seq: *from_seq,
            })));
        }
        (Some((from_seq, expected)), Some(key)) if *expected != key.id() => {
            return Err(sqlx::Error::Configuration(Box::new(KeyProblem::Mismatch {
                from_seq: *from_seq,
                expected: expected.clone(),
                given: key.id(),
            })));
        }
        (Some(_), Some(_)) => {}
        (None, Some(key)) => {
            marker = Some(NewEntry {
                at: entries[0].at,
                actor: "wfmd",
                action: KEYED_ACTION,
                agent_id: None,
                subject_id: None,
                detail: serde_json::json!({ "key_id": key.id() }),
            });
            execute!(
                conn,
                "INSERT INTO audit_keying (id, from_seq, key_id) VALUES (1, $1, $2)",
                seq + 1,
                key.id()
            )?;
            // Checkpoints made before the key are trusted as the entries before it are:
            // signing them now lets a keyed verification start from them.
            checkpoints::sign_unsigned(conn, key).await?;
        }
    }
    let mut rows = Vec::with_capacity(entries.len() + 1);
    for entry in marker.iter().chain(entries) {
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
            key.as_ref(),
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
    let write = TableWrite::new(
        "INSERT INTO audit_log (seq, at, actor, action, agent_id, subject_id, detail, prev_hash, hash)
         SELECT CAST(json_extract(value, '$[0]') AS BIGINT), CAST(json_extract(value, '$[1]') AS BIGINT),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                json_extract(value, '$[6]'), json_extract(value, '$[7]'),
                json_extract(value, '$[8]')
         FROM json_each($1)"
            .to_owned(),
        serde_json::Value::Array(rows).to_string(),
    );
    Ok((Some(write), seq))
}

mod verify;

pub use verify::{
    Anchor, Head, StartCheckpoint, Verification, find_anchor, head, verify, verify_with,
};

/// What is wrong with the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Break {
    /// The row's contents do not match its hash: it was edited, or (in the keyed part
    /// of the chain) written without the key.
    Edited { seq: i64 },
    /// The sequence skips numbers: entries were deleted.
    Missing { expected_seq: i64, found_seq: i64 },
    /// The row does not chain to the entry before it: inserted or replaced out of band.
    Unlinked { seq: i64 },
    /// The log starts after entry 1 and no checkpoint covers the entries before it.
    Uncovered { first_seq: i64 },
    /// The checkpoint verification starts from, or one the walk passes, is not what
    /// wfmd recorded: unsigned, signed with another key, or naming another hash.
    Checkpoint { seq: i64 },
    /// A checkpoint records entry `checkpoint_seq`, but the log ends at `last_seq`:
    /// entries were removed from its end.
    Truncated { last_seq: i64, checkpoint_seq: i64 },
    /// Entries from here on are keyed and no `audit.key` was given to check them.
    KeyNeeded { seq: i64 },
    /// The chain is keyed from here on with another key than the one given.
    WrongKey { seq: i64 },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Edited { seq } => write!(
                f,
                "audit entry {seq} does not match its hash: it was edited, or written outside \
                 wfmd (without audit.key, where the chain is keyed)"
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
            Break::Uncovered { first_seq } => write!(
                f,
                "the audit log starts at entry {first_seq} and no checkpoint covers the entries \
                 before it: they were deleted outside retention"
            ),
            Break::Checkpoint { seq } => write!(
                f,
                "the checkpoint of audit entry {seq} is not the one wfmd recorded (unsigned, \
                 signed with another key, or naming another hash)"
            ),
            Break::Truncated {
                last_seq,
                checkpoint_seq,
            } => write!(
                f,
                "the audit log ends at entry {last_seq} but a checkpoint records entry \
                 {checkpoint_seq}: entries were removed from its end"
            ),
            Break::KeyNeeded { seq } => write!(
                f,
                "audit entries from {seq} on are keyed: set audit.key (WFMD_AUDIT__KEY) to verify them"
            ),
            Break::WrongKey { seq } => write!(
                f,
                "audit entries from {seq} on are keyed with another key than audit.key"
            ),
        }
    }
}

/// Walks entries one at a time, remembering what the next must look like.
pub(super) struct Walker<'k> {
    key: Option<&'k AuditKey>,
    expected_seq: i64,
    prev_hash: String,
    keyed_from: Option<i64>,
    /// Recorded checkpoints at or after the start: the walk checks each against the
    /// entry it names.
    checkpoints: HashMap<i64, String>,
    entries: u64,
}

impl<'k> Walker<'k> {
    /// A walk from the first entry.
    pub(super) fn from_genesis(key: Option<&'k AuditKey>) -> Walker<'k> {
        Walker {
            key,
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            keyed_from: None,
            checkpoints: HashMap::new(),
            entries: 0,
        }
    }

    /// A walk from a checkpoint; the caller checked its signature.
    pub(super) fn from_checkpoint(key: Option<&'k AuditKey>, start: &CheckpointRow) -> Walker<'k> {
        Walker {
            key,
            expected_seq: start.seq + 1,
            prev_hash: start.hash.clone(),
            keyed_from: start.keyed_from,
            checkpoints: HashMap::new(),
            entries: 0,
        }
    }

    pub(super) fn keyed_from(&self) -> Option<i64> {
        self.keyed_from
    }

    pub(super) fn expected_seq(&self) -> i64 {
        self.expected_seq
    }

    /// Checks `row`; `Some` names the break.
    pub(super) fn step(&mut self, row: &EntryRow) -> Option<Break> {
        if row.seq != self.expected_seq {
            return Some(Break::Missing {
                expected_seq: self.expected_seq,
                found_seq: row.seq,
            });
        }
        let keyed = self.keyed_from.is_some() || row.action == KEYED_ACTION;
        let key = if keyed {
            let Some(key) = self.key else {
                return Some(Break::KeyNeeded { seq: row.seq });
            };
            if row.action == KEYED_ACTION
                && self.keyed_from.is_none()
                && row.keyed_with().as_deref() != Some(key.id().as_str())
            {
                return Some(Break::WrongKey { seq: row.seq });
            }
            Some(key)
        } else {
            None
        };
        if row.hash != row.expected_hash(key) {
            return Some(Break::Edited { seq: row.seq });
        }
        if row.prev_hash != self.prev_hash {
            return Some(Break::Unlinked { seq: row.seq });
        }
        if let Some(recorded) = self.checkpoints.get(&row.seq)
            && *recorded != row.hash
        {
            return Some(Break::Checkpoint { seq: row.seq });
        }
        if keyed && self.keyed_from.is_none() {
            self.keyed_from = Some(row.seq);
        }
        self.entries += 1;
        self.expected_seq += 1;
        self.prev_hash.clone_from(&row.hash);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::Store;
    use crate::store::testing::backends;
    use crate::store::testing::temp_store_on;
    use crate::store::{Done, on};
    use rstest_reuse::apply;
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
        crate::store::testing::drop_audit_triggers(store).await;
    }

    async fn tamper(store: &Store, sql: &'static str) {
        let mut tx = store.begin_write().await.unwrap();
        on!(tx, |c| sqlx::query(sql).execute(c).await.map(Done::from)).unwrap();
        tx.commit().await.unwrap();
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_untouched_chain_verifies(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        write_entries(&store, 5).await;
        let result = verify(store.reader()).await.unwrap();
        assert_eq!(result.entries, 5);
        assert_eq!(result.first_break, None);
        assert_eq!(result.from_checkpoint, None);
        assert_eq!(result.keyed_from, None);
        assert_eq!(result.head.map(|h| h.seq), Some(5));
    }

    #[apply(backends)]
    #[tokio::test]
    async fn triggers_refuse_update_and_delete(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        write_entries(&store, 1).await;
        let mut tx = store.begin_write().await.unwrap();
        let update = on!(tx, |c| sqlx::query(
            "UPDATE audit_log SET actor = 'mallory'"
        )
        .execute(c)
        .await
        .map(Done::from))
        .unwrap_err();
        assert!(update.to_string().contains("append-only"), "{update}");
        tx.rollback().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let delete = on!(tx, |c| sqlx::query("DELETE FROM audit_log")
            .execute(c)
            .await
            .map(Done::from))
        .unwrap_err();
        assert!(delete.to_string().contains("append-only"), "{delete}");
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_edited_entry_is_named(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
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

    #[apply(backends)]
    #[tokio::test]
    async fn a_deleted_entry_is_named(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
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

    #[apply(backends)]
    #[tokio::test]
    async fn a_replaced_entry_with_a_self_consistent_hash_is_caught_by_the_link(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
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
        let hash = forged.expected_hash(None);
        let mut tx = store.begin_write().await.unwrap();
        on!(tx, |c| sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, agent_id, subject_id, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        .execute(c)
        .await.map(Done::from))
        .unwrap();
        tx.commit().await.unwrap();
        let result = verify(store.reader()).await.unwrap();
        assert_eq!(result.first_break, Some(Break::Unlinked { seq: 2 }));
    }

    #[apply(backends)]
    #[tokio::test]
    async fn an_entry_inserted_at_the_end_out_of_band_is_caught(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
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

    #[apply(backends)]
    #[tokio::test]
    async fn a_keyed_chain_starts_with_its_marker_and_needs_the_key_to_verify(backend: Backend) {
        let (store, _dir) = crate::store::testing::temp_store_keyed_on(backend).await;
        write_entries(&store, 3).await;
        let key = crate::store::testing::test_key();
        let result = verify_with(store.reader(), Some(&key)).await.unwrap();
        assert!(result.is_intact(), "{}", result.describe());
        assert_eq!((result.entries, result.keyed_from), (4, Some(1)));
        let without = verify(store.reader()).await.unwrap();
        assert_eq!(without.first_break, Some(Break::KeyNeeded { seq: 1 }));
        let other = AuditKey::new(&"x".repeat(40).into());
        let wrong = verify_with(store.reader(), Some(&other)).await.unwrap();
        assert_eq!(wrong.first_break, Some(Break::WrongKey { seq: 1 }));
    }

    /// A PostgreSQL connection goes back to the pool holding no key, neither in a table
    /// nor in a setting: the next to check it out, whatever it writes for, cannot append
    /// with this store's key.
    #[tokio::test]
    async fn a_postgres_write_connection_holds_the_key_only_inside_its_transaction() {
        let (store, _dir) = crate::store::testing::temp_store_keyed_on(Backend::Postgres).await;
        write_entries(&store, 1).await;
        let crate::store::Db::Postgres(pool) = store.writer().db() else {
            unreachable!("a PostgreSQL store")
        };
        let mut conn = pool.acquire().await.unwrap();
        let (table, setting): (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT to_regclass('pg_temp.wfmd_audit_key')::TEXT,
                    NULLIF(current_setting('wfmd.audit_key', true), '')",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!((table, setting), (None, None));
        drop(conn);
        // Inside a write transaction, the key is there for the append to read.
        let mut tx = store.begin_write().await.unwrap();
        let key = connection_key(&mut tx).await.unwrap();
        assert_eq!(
            key.map(|k| k.bytes().to_vec()),
            Some(crate::store::testing::test_key().bytes().to_vec())
        );
        tx.rollback().await.unwrap();
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_chain_keyed_for_one_tenant_does_not_verify_with_another_tenants_key(
        _backend: Backend,
    ) {
        let process = crate::config::retention::AuditConfig {
            key: Some("p".repeat(40).into()),
            ..Default::default()
        };
        let key_of = |id: &str| {
            AuditKey::new(
                process
                    .for_tenant(&id.parse().unwrap())
                    .key()
                    .expect("a tenant of a keyed process has a key"),
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("wfmd-alpha.db").display());
        let store = Store::open_keyed(&url, Some(key_of("alpha")))
            .await
            .unwrap();
        write_entries(&store, 3).await;
        let alpha = verify_with(store.reader(), Some(&key_of("alpha")))
            .await
            .unwrap();
        assert!(alpha.is_intact(), "{}", alpha.describe());
        let master = AuditKey::new(process.key().unwrap());
        for other in [key_of("beta"), master] {
            let result = verify_with(store.reader(), Some(&other)).await.unwrap();
            assert_eq!(result.first_break, Some(Break::WrongKey { seq: 1 }));
        }
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_keyed_log_refuses_writers_without_its_key(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::store::testing::temp_url_on(backend, &dir);
        let store = Store::open_keyed(&url, Some(crate::store::testing::test_key()))
            .await
            .unwrap();
        write_entries(&store, 1).await;
        store.close().await;
        for key in [None, Some(AuditKey::new(&"x".repeat(40).into()))] {
            let other = Store::open_keyed(&url, key).await.unwrap();
            let mut tx = other.begin_write().await.unwrap();
            let refused = append(
                &mut tx,
                &NewEntry {
                    at: from_ms(1_790_000_000_000),
                    actor: "api",
                    action: "transition.succeeded",
                    agent_id: None,
                    subject_id: None,
                    detail: json!({}),
                },
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(refused.contains("since entry 1"), "{refused}");
            tx.rollback().await.unwrap();
            other.close().await;
        }
    }

    /// What SQLite's one write connection gives for free, PostgreSQL's concurrent
    /// transactions must be made to give: 32 writers appending at once still make one
    /// chain, every entry on its own predecessor.
    #[apply(backends)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn thirty_two_concurrent_writers_append_one_chain(backend: Backend) {
        const WRITERS: usize = 32;
        const EACH: usize = 10;
        let (store, _dir) = crate::store::testing::temp_store_keyed_on(backend).await;
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let store = store.clone();
                crate::tasks::spawn(async move {
                    for i in 0..EACH {
                        let mut tx = store.begin_write().await.unwrap();
                        let subject = format!("w{writer}-{i}");
                        append(
                            &mut tx,
                            &NewEntry {
                                at: from_ms(1_790_000_000_000),
                                actor: "api",
                                action: "transition.succeeded",
                                agent_id: None,
                                subject_id: Some(&subject),
                                detail: json!({}),
                            },
                        )
                        .await
                        .unwrap();
                        tx.commit().await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let key = crate::store::testing::test_key();
        let result = verify_with(store.reader(), Some(&key)).await.unwrap();
        assert_eq!(result.first_break, None, "{}", result.describe());
        // The keying entry, then every writer's.
        assert_eq!(result.entries as usize, 1 + WRITERS * EACH);
        let parents: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(DISTINCT prev_hash) FROM audit_log"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(
            parents as usize,
            1 + WRITERS * EACH,
            "no entry shares a parent"
        );
    }

    #[test]
    fn the_key_never_prints() {
        let key = AuditKey::new(&"very-secret-key-material-0123456789".into());
        assert_eq!(format!("{key:?}"), "AuditKey(********)");
        assert_eq!(key.id().len(), 16);
        assert!(key.verify(b"m", &key.sign(b"m")));
        assert!(!key.verify(b"n", &key.sign(b"m")));
    }
}
