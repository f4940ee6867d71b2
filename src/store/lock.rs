//! The lock a daemon holds on each database it runs on: an exclusive lock on
//! `<database>.serve.lock`, taken before the database is opened and dropped by the
//! operating system when the process ends, however it ends (kill -9 included). A restore
//! or a schedule import takes the same lock, so neither runs under a daemon, and a second
//! daemon refuses to start on a database the first still serves.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The database file of a `sqlite:` URL (`None` for an in-memory database, and for a
/// PostgreSQL one, which has no file: SQLite's parser would take its URL for a path).
pub fn database_path(url: &str) -> Option<PathBuf> {
    use std::str::FromStr;
    if url.contains(":memory:")
        || url.contains("mode=memory")
        || super::Backend::of_url(url) == super::Backend::Postgres
    {
        return None;
    }
    let options = sqlx_sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (!path.as_os_str().is_empty() && path != Path::new(":memory:")).then(|| path.to_owned())
}

/// The exclusive lock of a database's daemon; released when dropped or the process ends.
#[derive(Debug)]
pub struct DaemonLock {
    _held: Held,
}

#[derive(Debug)]
enum Held {
    File(#[allow(dead_code, reason = "held, not read")] File),
    /// The advisory lock on the instance's session (see [`DaemonLock::serve_postgres`]).
    Postgres(#[allow(dead_code, reason = "held, not read")] SessionLock),
}

/// A daemon lock held by the session of an instance's pool, given back when dropped.
#[derive(Debug)]
struct SessionLock {
    pool: std::sync::Arc<super::shared::SharedPool>,
    key: i64,
    shared: bool,
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        self.pool.unlock_daemon(self.key, self.shared);
    }
}

impl DaemonLock {
    /// The lock file of `database`.
    pub fn path_for(database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push(".serve.lock");
        PathBuf::from(name)
    }

    /// The lock of a daemon serving the PostgreSQL database (and schema) of `url`: a
    /// session advisory lock, held by the session of the instance's pool of that
    /// database (`pools`, see [`super::shared`]) for as long as the lock is. One
    /// without `[ha]` (`among_several` false) holds it alone, so a second daemon, with
    /// `[ha]` or without, is refused, as on SQLite; instances with `[ha]` share it, and
    /// refuse to start beside one without. It only guards against a mistaken start: the
    /// lease, not this lock, decides which instance leads (a lost session drops it
    /// silently).
    pub async fn serve_postgres(
        pools: &super::SharedPools,
        url: &str,
        among_several: bool,
    ) -> anyhow::Result<DaemonLock> {
        let options = super::postgres::options_of(url)?;
        let shown = super::postgres::describe(&options);
        let key = super::postgres::daemon_lock_key(
            super::postgres::schema(&options)
                .as_deref()
                .unwrap_or("public"),
        );
        let pool = pools.of(&options);
        // A daemon killed a moment ago holds it until the server notices its connection
        // closed: moments, which a restart must not be refused for.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let held = pool
                .lock_daemon(key, among_several)
                .await
                .with_context(|| format!("cannot lock {shown}"))?;
            if held {
                return Ok(DaemonLock {
                    _held: Held::Postgres(SessionLock {
                        pool,
                        key,
                        shared: among_several,
                    }),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if among_several {
            anyhow::bail!(
                "cannot start: a wfmd without [ha] serves {shown}, and must be its only \
                 instance; stop it, or give it [ha] too"
            )
        }
        anyhow::bail!(
            "cannot start: another wfmd serves {shown}; without [ha] a wfmd must be its \
             only instance (give every instance [ha] to run several)"
        )
    }

    /// Takes the lock of `database`, or says who holds it. `purpose` completes "cannot
    /// …" in the message.
    pub fn acquire(database: &Path, purpose: &str) -> anyhow::Result<DaemonLock> {
        match Self::try_acquire(database)? {
            Ok(lock) => Ok(lock),
            Err(who) => {
                anyhow::bail!(
                    "cannot {purpose}: {who} is using {} (it holds {})",
                    database.display(),
                    Self::path_for(database).display()
                )
            }
        }
    }

    /// Takes the lock of `database`; `Ok(Err(who))` when another process holds it
    /// (`wfmd (pid N)`), as a running daemon does.
    pub fn try_acquire(database: &Path) -> anyhow::Result<Result<DaemonLock, String>> {
        let path = Self::path_for(database);
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another wfmd process".to_owned()
                } else {
                    format!("wfmd (pid {holder})")
                };
                return Ok(Err(who));
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // The holder's pid, for the message of whoever finds the lock taken.
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(Ok(DaemonLock {
            _held: Held::File(file),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_database_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wfmd.db");
        let held = DaemonLock::acquire(&db, "start").unwrap();
        let refused = DaemonLock::acquire(&db, "restore").unwrap_err().to_string();
        assert!(
            refused.contains(&format!("wfmd (pid {})", std::process::id())),
            "{refused}"
        );
        assert!(refused.starts_with("cannot restore"), "{refused}");
        drop(held);
        DaemonLock::acquire(&db, "start").unwrap();
    }

    #[test]
    fn database_paths_come_from_the_url() {
        assert_eq!(
            database_path("sqlite://data/wfmd.db"),
            Some(PathBuf::from("data/wfmd.db"))
        );
        assert_eq!(database_path("sqlite::memory:"), None);
        assert_eq!(database_path("postgres://wfmd@db.example/wfmd"), None);
    }
}
