//! Verifying the audit chain from the genesis or from a checkpoint (with the parent's
//! [`Walker`]): the first break found (an edited, missing or foreign entry), the
//! chain's head, and finding where an anchored hash stands.

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::FromRow;

use super::checkpoints;
use super::{AuditKey, Break, EntryRow, Walker};
use crate::store::{Pool, fetch, fetch_scalar, from_ms, on};

/// Where a verification started when it did not start at the first entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StartCheckpoint {
    /// The last pruned entry, which the checkpoint records.
    pub seq: i64,
    pub hash: String,
    /// When that entry was written (RFC 3339).
    pub entry_at: String,
    /// Whether the checkpoint's signature was checked with `audit.key`.
    pub signature_checked: bool,
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verification {
    /// Entries checked before the first break (or all of them).
    pub entries: u64,
    pub first_break: Option<Break>,
    /// The checkpoint the walk started from (older entries were pruned); `null` when it
    /// started at the first entry.
    pub from_checkpoint: Option<StartCheckpoint>,
    /// The first entry whose hash is keyed with `audit.key`, if any.
    pub keyed_from: Option<i64>,
    /// The last entry verified: sequence number and hash.
    pub head: Option<Head>,
}

/// An entry's position and hash: what `audit.checkpoint` publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, FromRow)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }

    /// One line for people: what was verified from where, or what broke.
    pub fn describe(&self) -> String {
        match &self.first_break {
            None => format!("audit log intact: {}", self.account()),
            Some(_) => format!("audit log BROKEN: {}", self.account()),
        }
    }

    /// [`Verification::describe`] for one of several chains, led by its tenant:
    /// `alpha: ok, 3 entries verified …` or `beta: BROKEN: audit entry 2 …`.
    pub fn describe_for(&self, tenant: &str) -> String {
        match &self.first_break {
            None => format!("{tenant}: ok, {}", self.account()),
            Some(_) => format!("{tenant}: BROKEN: {}", self.account()),
        }
    }

    /// What was verified from where, or what broke.
    fn account(&self) -> String {
        let from = match &self.from_checkpoint {
            None => "from the first entry".to_owned(),
            Some(c) => format!(
                "from the checkpoint of entry {} ({}; older entries were pruned{})",
                c.seq,
                c.entry_at,
                if c.signature_checked {
                    ", signature checked"
                } else {
                    ", signature not checked: no audit.key"
                }
            ),
        };
        let keyed = match self.keyed_from {
            Some(seq) => format!(", keyed from entry {seq}"),
            None => ", not keyed".to_owned(),
        };
        match &self.first_break {
            None => format!("{} entries verified {from}{keyed}", self.entries),
            Some(broken) => format!(
                "{broken} ({} entries before it verified {from})",
                self.entries
            ),
        }
    }
}

/// Walks the chain without a key: the whole log when it was never keyed (see
/// [`verify_with`]).
pub async fn verify(pool: &Pool) -> Result<Verification, sqlx::Error> {
    verify_with(pool, None).await
}

/// Walks the chain from the oldest kept checkpoint (or the first entry) to the end and
/// reports the first break, streaming rows so a large log verifies in constant memory.
///
/// With `key`, keyed entries are checked with it and the starting checkpoint's
/// signature must verify; without it, keyed entries are reported as [`Break::KeyNeeded`].
pub async fn verify_with(pool: &Pool, key: Option<&AuditKey>) -> Result<Verification, sqlx::Error> {
    let first: Option<i64> = fetch_scalar!(pool, one, "SELECT MIN(seq) FROM audit_log")?;
    let newest_checkpoint: Option<i64> =
        fetch_scalar!(pool, one, "SELECT MAX(seq) FROM audit_checkpoints")?;
    // The walk starts after the checkpoint just before the first kept entry; a log
    // pruned to its end starts after its newest checkpoint.
    let start_seq = match (first, newest_checkpoint) {
        (Some(first), _) => first - 1,
        (None, Some(newest)) => newest,
        (None, None) => 0,
    };
    let mut outcome = Verification {
        entries: 0,
        first_break: None,
        from_checkpoint: None,
        keyed_from: None,
        head: None,
    };
    let mut walker = if start_seq == 0 {
        Walker::from_genesis(key)
    } else {
        let Some(start) = checkpoints::at(pool, start_seq).await? else {
            outcome.first_break = Some(Break::Uncovered {
                first_seq: start_seq + 1,
            });
            return Ok(outcome);
        };
        let signature_checked = key.is_some();
        outcome.from_checkpoint = Some(StartCheckpoint {
            seq: start.seq,
            hash: start.hash.clone(),
            entry_at: crate::time::rfc3339(from_ms(start.entry_at)),
            signature_checked,
        });
        outcome.head = Some(Head {
            seq: start.seq,
            hash: start.hash.clone(),
        });
        if let Some(key) = key
            && !start.signed_by(key)
        {
            outcome.first_break = Some(
                if start.key_id.is_some() && start.key_id != Some(key.id()) {
                    Break::WrongKey { seq: start.seq }
                } else {
                    Break::Checkpoint { seq: start.seq }
                },
            );
            return Ok(outcome);
        }
        Walker::from_checkpoint(key, &start)
    };
    walker.checkpoints = checkpoints::hashes_from(pool, start_seq + 1).await?;
    let mut rows = on!(pool, |c| sqlx::query_as::<_, EntryRow>(
        "SELECT seq, at, actor, action, agent_id, subject_id, detail, prev_hash, hash
         FROM audit_log ORDER BY seq",
    )
    .fetch(c));
    while let Some(row) = rows.try_next().await? {
        if let Some(broken) = walker.step(&row) {
            outcome.first_break = Some(broken);
            break;
        }
        outcome.head = Some(Head {
            seq: row.seq,
            hash: row.hash,
        });
    }
    outcome.entries = walker.entries;
    outcome.keyed_from = walker.keyed_from;
    if outcome.first_break.is_none()
        && let Some(newest) = newest_checkpoint
        && newest >= walker.expected_seq()
    {
        outcome.first_break = Some(Break::Truncated {
            last_seq: walker.expected_seq() - 1,
            checkpoint_seq: newest,
        });
    }
    Ok(outcome)
}

/// Whether the log still holds an anchor (a published hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// Entry `seq` has this hash and is kept.
    Kept { seq: i64 },
    /// The checkpoint verification starts from records this hash: its entry was
    /// pruned, and the kept chain provably continues from it.
    StartCheckpoint { seq: i64 },
    /// A checkpoint of entry `seq` recorded this hash, but entries up to `kept_from - 1`
    /// were pruned since: the log can no longer prove it.
    Pruned { seq: i64, first_kept: i64 },
    /// No kept entry or recorded checkpoint has this hash.
    Unknown { first_kept: Option<i64> },
}

/// Looks `hash` up among the kept entries and the recorded checkpoints.
pub async fn find_anchor(pool: &Pool, hash: &str) -> Result<Anchor, sqlx::Error> {
    let first: Option<i64> = fetch_scalar!(pool, one, "SELECT MIN(seq) FROM audit_log")?;
    let checkpoint: Option<i64> = fetch_scalar!(
        pool,
        optional,
        "SELECT seq FROM audit_checkpoints WHERE hash = $1",
        hash
    )?;
    if let Some(seq) = checkpoint {
        return Ok(match first {
            Some(first) if seq >= first => Anchor::Kept { seq },
            Some(first) if seq == first - 1 => Anchor::StartCheckpoint { seq },
            Some(first) => Anchor::Pruned {
                seq,
                first_kept: first,
            },
            None => {
                let newest: Option<i64> =
                    fetch_scalar!(pool, one, "SELECT MAX(seq) FROM audit_checkpoints")?;
                if newest == Some(seq) {
                    Anchor::StartCheckpoint { seq }
                } else {
                    Anchor::Pruned {
                        seq,
                        first_kept: newest.unwrap_or(seq) + 1,
                    }
                }
            }
        });
    }
    let seq: Option<i64> = fetch_scalar!(
        pool,
        optional,
        "SELECT seq FROM audit_log WHERE hash = $1",
        hash
    )?;
    Ok(match seq {
        Some(seq) => Anchor::Kept { seq },
        None => Anchor::Unknown { first_kept: first },
    })
}

/// The newest entry: what a checkpoint would record now.
pub async fn head(pool: &Pool) -> Result<Option<(Head, i64)>, sqlx::Error> {
    let row: Option<(i64, String, i64)> = fetch!(
        pool,
        optional,
        "SELECT seq, hash, at FROM audit_log ORDER BY seq DESC LIMIT 1"
    )?;
    Ok(row.map(|(seq, hash, at)| (Head { seq, hash }, at)))
}
