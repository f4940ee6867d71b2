//! `wfmd audit verify [--anchor HASH]` and `wfmd audit checkpoint`: proving the audit
//! log from where it is kept, and handing out anchors to hold outside.

use std::process::ExitCode;

use chrono::Utc;

use super::Failure;
use crate::config::Config;
use crate::config::tenants::TenantSpec;
use crate::store::Store;
use crate::store::audit::checkpoints;
use crate::store::audit::{self, Anchor, AuditKey};

/// The database of `config` (one tenant's), with its audit chain's key.
pub async fn open(config: &Config) -> anyhow::Result<Store> {
    let key = config.audit.key().map(AuditKey::new);
    Store::open_keyed(&config.database.url, key).await
}

/// Verifies every tenant's chain, each with its own key, and prints one line per
/// tenant; exit 1 when any chain is broken or cannot be read. The others are verified
/// whatever one of them shows.
pub async fn verify_each(tenants: &[TenantSpec]) -> Result<ExitCode, Failure> {
    let mut code = ExitCode::SUCCESS;
    for tenant in tenants {
        let verified = async {
            let store = open(&tenant.config).await?;
            let result = audit::verify_with(store.reader(), store.audit_key()).await;
            store.close().await;
            anyhow::Ok(result?)
        }
        .await;
        match verified {
            Ok(result) => {
                if !result.is_intact() {
                    code = ExitCode::FAILURE;
                }
                println!("{}", result.describe_for(tenant.id.as_str()));
            }
            Err(error) => {
                code = ExitCode::FAILURE;
                println!("{}: FAILED: cannot verify: {error:#}", tenant.id);
            }
        }
    }
    Ok(code)
}

/// Walks the chain from the oldest kept checkpoint (or the first entry), printing where
/// it started; with `anchor`, also proves the log still holds that hash.
pub async fn verify(store: &Store, anchor: Option<&str>) -> Result<ExitCode, Failure> {
    let anchor = anchor.map(parse_hash).transpose()?;
    let result = audit::verify_with(store.reader(), store.audit_key())
        .await
        .map_err(Failure::action)?;
    println!("{}", result.describe());
    if !result.is_intact() {
        return Ok(ExitCode::FAILURE);
    }
    let Some(anchor) = anchor else {
        return Ok(ExitCode::SUCCESS);
    };
    let found = audit::find_anchor(store.reader(), &anchor)
        .await
        .map_err(Failure::action)?;
    let head = result
        .head
        .as_ref()
        .map_or_else(|| "its start".to_owned(), |h| format!("entry {}", h.seq));
    match found {
        Anchor::Kept { seq } => {
            println!(
                "anchor {anchor} is entry {seq}: the log still contains it, and the chain verifies from it through {head}"
            );
            Ok(ExitCode::SUCCESS)
        }
        Anchor::StartCheckpoint { seq } => {
            println!(
                "anchor {anchor} is the checkpoint of entry {seq}, which verification starts \
                 from: the entries up to it were pruned, and the kept chain continues from \
                 it through {head}"
            );
            Ok(ExitCode::SUCCESS)
        }
        Anchor::Pruned { seq, first_kept } => Err(Failure::action(anyhow::anyhow!(
            "anchor {anchor} refused: it is entry {seq}, which retention pruned (the log \
             keeps entries from {first_kept} on), so this log can no longer prove it; check \
             it against a backup taken before the pruning"
        ))),
        Anchor::Unknown { first_kept } => {
            let pruned = match first_kept {
                Some(first) if first > 1 => format!(
                    " (entries before {first} were pruned: an anchor older than them cannot be \
                     proved any more)"
                ),
                _ => String::new(),
            };
            Err(Failure::action(anyhow::anyhow!(
                "anchor {anchor} refused: no kept entry or recorded checkpoint of this audit \
                 log has that hash{pruned}"
            )))
        }
    }
}

/// A hex SHA-256/HMAC-SHA-256 as `audit checkpoint` prints it.
fn parse_hash(text: &str) -> Result<String, Failure> {
    let hash = text.trim().to_ascii_lowercase();
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash)
    } else {
        Err(Failure::usage(format!(
            "--anchor must be a 64-digit hex hash as `wfmd audit checkpoint` prints it, got `{text}`"
        )))
    }
}

/// Checkpoints and publishes the chain's head (as the daemon does every
/// `audit.checkpoint_interval`) and prints it as one JSON line to keep outside.
pub async fn checkpoint(store: &Store) -> Result<ExitCode, Failure> {
    let now = Utc::now();
    checkpoints::publish(store, now)
        .await
        .map_err(Failure::action)?;
    let Some((head, at)) = audit::head(store.reader()).await.map_err(Failure::action)? else {
        match checkpoints::latest_published(store.reader())
            .await
            .map_err(Failure::action)?
        {
            Some(row) => print_head(row.seq, &row.hash, row.entry_at),
            None => eprintln!("the audit log is empty: nothing to anchor yet"),
        }
        return Ok(ExitCode::SUCCESS);
    };
    print_head(head.seq, &head.hash, at);
    Ok(ExitCode::SUCCESS)
}

fn print_head(seq: i64, hash: &str, at_ms: i64) {
    let line = serde_json::json!({
        "entry_id": seq,
        "hash": hash,
        "count": seq,
        "at": crate::time::rfc3339(crate::store::from_ms(at_ms)),
    });
    println!("{line}");
}
