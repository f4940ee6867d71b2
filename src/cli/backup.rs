//! `wfmd backup FILE` and `wfmd restore FILE`.
//!
//! A backup is `VACUUM INTO`: SQLite copies one consistent snapshot (a read transaction,
//! so the daemon's writers carry on) into a new, compact file. The copy's audit chain is
//! then verified, so a backup is known good when it is made.
//!
//! A restore refuses a file whose schema departs from what this wfmd's migrations make
//! (the audit log's append-only triggers dropped, say; see [`schema::check`]) or whose
//! audit chain does not verify.
//!
//! On PostgreSQL both are refused with a pointer to pg_dump / pg_restore.
//!
//! A restore takes the database's daemon lock ([`DaemonLock`]), so it never replaces a
//! database a daemon serves, and no daemon starts half-way through it either.

use crate::store::{Done, on};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::Failure;
use crate::store::audit::{self, AuditKey, Verification};
pub use crate::store::lock::{DaemonLock, database_path};
use crate::store::schema;
use crate::store::{Backend, Store};

/// Verifies the audit chain of the database at `path` (with `key`), opened on its own;
/// with `schema`, first that its schema is what its migrations promise (see
/// [`schema::check`]), failing with every departure named.
async fn verify_file(
    path: &Path,
    key: Option<&AuditKey>,
    schema: bool,
) -> anyhow::Result<(Verification, bool)> {
    let url = format!("sqlite://{}", path.display());
    let store = Store::open_keyed_without_migrating(&url, key.cloned()).await?;
    let result = async {
        let integrity: String = on!(store.reader(), |c| sqlx::query_scalar(
            "PRAGMA integrity_check"
        )
        .fetch_one(c)
        .await)?;
        if integrity != "ok" {
            anyhow::bail!("{} is damaged: {integrity}", path.display());
        }
        let tables: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'
             AND name IN ('audit_log', '_sqlx_migrations')",
        )
        .fetch_one(c)
        .await)?;
        if tables != 2 {
            anyhow::bail!("{} is not a wfmd database", path.display());
        }
        if schema {
            let mut conn = store.reader().acquire().await?;
            let departures = schema::check(&mut conn).await?;
            if !departures.is_empty() {
                anyhow::bail!(
                    "the schema of {} is not what this wfmd's migrations make: {departures}",
                    path.display()
                );
            }
        }
        let verification = audit::verify_with(store.reader(), key).await?;
        let intact = verification.is_intact();
        Ok((verification, intact))
    }
    .await;
    store.close().await;
    result
}

/// Refuses a PostgreSQL database (exit 2): its operators back it up with its own tools,
/// which know its files, roles and point-in-time recovery; these commands copy SQLite
/// files.
fn sqlite_only(database_url: &str) -> Result<(), Failure> {
    if Backend::of_url(database_url) == Backend::Postgres {
        return Err(Failure::usage(format!(
            "database.url is a PostgreSQL database ({}): use pg_dump / pg_restore; wfmd \
             backup writes SQLite files and wfmd restore puts one in place (`wfmd database \
             copy --to sqlite://FILE` makes a SQLite copy of it)",
            crate::store::postgres::redacted(database_url)
        )));
    }
    Ok(())
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn head_text(verification: &Verification) -> String {
    verification.head.as_ref().map_or_else(
        || "empty audit log".to_owned(),
        |head| format!("audit head entry {} hash {}", head.seq, head.hash),
    )
}

/// `wfmd backup FILE`: a consistent copy of the running (or stopped) daemon's database.
///
/// The copy is written to a temporary file beside FILE (mode 0600, locked while it is
/// written), synced, then renamed to FILE (never over an existing file) and the folder
/// synced: however the command ends, `kill -9` included, FILE is either absent or a
/// whole backup. Temporaries that a killed backup left are removed by the next one.
pub async fn backup(
    database_url: &str,
    key: Option<&AuditKey>,
    target: &Path,
) -> Result<ExitCode, Failure> {
    sqlite_only(database_url)?;
    let source = database_path(database_url).ok_or_else(|| {
        Failure::usage(format!(
            "database.url `{database_url}` is not a database file"
        ))
    })?;
    if !source.is_file() {
        return Err(Failure::action(anyhow::anyhow!(
            "there is no database at {} (database.url) to back up",
            source.display()
        )));
    }
    if target.exists() {
        return Err(Failure::usage(format!(
            "{} already exists: a backup never overwrites a file",
            target.display()
        )));
    }
    let (folder, name) = match (target.parent(), target.file_name()) {
        (Some(folder), Some(name)) => (
            if folder.as_os_str().is_empty() {
                Path::new(".")
            } else {
                folder
            },
            name.to_string_lossy().into_owned(),
        ),
        _ => {
            return Err(Failure::usage(format!(
                "{} is not a file name to back up to",
                target.display()
            )));
        }
    };
    remove_abandoned_temporaries(folder, &name);
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(PARTIAL_SUFFIX)
        .tempfile_in(folder)
        .with_context(|| format!("cannot create a temporary file in {}", folder.display()))
        .map_err(Failure::action)?;
    // Tells a later backup that this temporary is still being written.
    partial
        .as_file()
        .try_lock()
        .with_context(|| format!("cannot lock {}", partial.path().display()))
        .map_err(Failure::action)?;
    let store = Store::open_keyed_without_migrating(database_url, key.cloned())
        .await
        .map_err(Failure::action)?;
    // Into the empty file made above, which keeps its mode (0600).
    let copied = on!(store.reader(), |c| sqlx::query("VACUUM INTO $1")
        .bind(partial.path().to_string_lossy().into_owned())
        .execute(c)
        .await
        .map(Done::from))
    .with_context(|| format!("cannot write the backup to {}", partial.path().display()));
    store.close().await;
    copied.map_err(Failure::action)?;
    // VACUUM INTO leaves the copy to the page cache; a backup is only one once on disk.
    partial
        .as_file()
        .sync_all()
        .with_context(|| format!("cannot sync the backup {}", partial.path().display()))
        .map_err(Failure::action)?;
    let written = match partial.persist_noclobber(target) {
        Ok(file) => file,
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Failure::usage(format!(
                "{} already exists: a backup never overwrites a file",
                target.display()
            )));
        }
        Err(e) => {
            return Err(Failure::action(anyhow::Error::new(e.error).context(
                format!("cannot move the backup into place as {}", target.display()),
            )));
        }
    };
    // The rename is durable only once the folder's entry is.
    File::open(folder)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync the folder {}", folder.display()))
        .map_err(Failure::action)?;
    drop(written);
    let (verification, intact) = verify_file(target, key, false)
        .await
        .map_err(Failure::action)?;
    let size = file_size(target);
    if !intact {
        println!("{}", verification.describe());
        return Err(Failure::action(anyhow::anyhow!(
            "the backup {} was written ({size} bytes) but its audit chain does not verify",
            target.display()
        )));
    }
    println!(
        "backup written to {} ({size} bytes); {}; {}",
        target.display(),
        head_text(&verification),
        verification.describe()
    );
    Ok(ExitCode::SUCCESS)
}

/// `wfmd restore FILE`: puts a verified backup in place of the database, refusing while
/// a daemon runs on it. The database it replaces is kept beside it.
pub async fn restore(
    database_url: &str,
    key: Option<&AuditKey>,
    backup: &Path,
) -> Result<ExitCode, Failure> {
    sqlite_only(database_url)?;
    let target = database_path(database_url).ok_or_else(|| {
        Failure::usage(format!(
            "database.url `{database_url}` is not a database file"
        ))
    })?;
    if !backup.is_file() {
        return Err(Failure::usage(format!(
            "{} is not a file to restore from",
            backup.display()
        )));
    }
    let _lock = DaemonLock::acquire(
        &target,
        "restore over a running daemon's database; stop it first",
    )
    .map_err(Failure::action)?;
    // The backup is verified as a copy next to the database, so that neither the
    // original backup file is touched nor a half-copied file ever becomes the database.
    let staged = with_suffix(&target, ".restoring");
    remove_database_files(&staged).map_err(Failure::action)?;
    // Owner-only whatever the backup's own mode: it becomes the database.
    std::fs::copy(backup, &staged)
        .and_then(|_| std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)))
        .and_then(|()| File::open(&staged)?.sync_all())
        .with_context(|| format!("cannot copy {} to {}", backup.display(), staged.display()))
        .map_err(Failure::action)?;
    let checked = verify_file(&staged, key, true).await;
    let (verification, intact) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            let _ = remove_database_files(&staged);
            return Err(Failure::action(
                error.context(format!("refusing to restore {}", backup.display())),
            ));
        }
    };
    if !intact {
        let _ = remove_database_files(&staged);
        println!("{}", verification.describe());
        return Err(Failure::action(anyhow::anyhow!(
            "refusing to restore {}: its audit chain does not verify",
            backup.display()
        )));
    }
    let kept = if target.exists() {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let kept = with_suffix(&target, &format!(".replaced-{stamp}"));
        for suffix in ["", "-wal", "-shm"] {
            let from = with_suffix(&target, suffix);
            if from.exists() {
                std::fs::rename(&from, with_suffix(&kept, suffix))
                    .with_context(|| format!("cannot move {} aside", from.display()))
                    .map_err(Failure::action)?;
            }
        }
        Some(kept)
    } else {
        None
    };
    std::fs::rename(&staged, &target)
        .with_context(|| format!("cannot move {} into place", staged.display()))
        .map_err(Failure::action)?;
    println!(
        "restored {} to {}; {}",
        backup.display(),
        target.display(),
        verification.describe()
    );
    if let Some(kept) = kept {
        println!("the database it replaced is kept as {}", kept.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The end of a backup's temporary name: `.<FILE name>.<random><PARTIAL_SUFFIX>`.
const PARTIAL_SUFFIX: &str = ".wfmd-backup-partial";

/// Removes the temporaries of backups to `name` in `folder` that nobody writes any more
/// (their writer was killed: the lock it held went with it). One still being written is
/// left alone; what cannot be removed is only logged, as it never blocks a backup.
fn remove_abandoned_temporaries(folder: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if !(file_name.starts_with(&prefix) && file_name.ends_with(PARTIAL_SUFFIX)) {
            continue;
        }
        let path = entry.path();
        let abandoned = OpenOptions::new()
            .write(true)
            .open(&path)
            .is_ok_and(|file| file.try_lock().is_ok());
        if abandoned && let Err(error) = remove_database_files(&path) {
            tracing::warn!(%error, "cannot remove a killed backup's temporary file");
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes a database file and its journal, WAL and shared-memory files, where present.
fn remove_database_files(path: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let file = with_suffix(path, suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", file.display())),
        }
    }
    Ok(())
}
