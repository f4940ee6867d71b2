//! Opening the store: the SQLite file (created private, its pools: one writer, one
//! housekeeping writer that gives way, readers, downloads; at rest only the writer and
//! one reader stay open: see [`sqlite_idle`]) or the PostgreSQL pools,
//! with the audit chain's key held by every SQLite connection that writes and by
//! every PostgreSQL write transaction.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx_sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use super::shared::{ShareKind, SharedPools};
use super::{
    BUSY_TIMEOUT, Backend, Db, EXPORT_CONNECTIONS, PREEMPTION_CHECK_OPS, Pool, Preemption,
    READ_CONNECTIONS, Store, audit, postgres, sqlite_idle,
};

impl Store {
    /// Opens (creating when missing) the database at `url` and applies pending migrations.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        let store = Self::open_without_migrating(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the database like [`Store::open`], keying the audit chain with `audit_key`
    /// (`audit.key`) from the first entry written with it on.
    pub async fn open_keyed(
        url: &str,
        audit_key: Option<audit::AuditKey>,
    ) -> anyhow::Result<Store> {
        Self::open_in(url, audit_key, &SharedPools::private()).await
    }

    /// [`Store::open_keyed`] for a tenant of an instance: on PostgreSQL, the store
    /// works through the instance's pool of the database (see [`super::shared`]).
    pub async fn open_in(
        url: &str,
        audit_key: Option<audit::AuditKey>,
        pools: &SharedPools,
    ) -> anyhow::Result<Store> {
        let store = Self::connect(url, audit_key, pools).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the database without touching its schema (for `wfmd migrate` to report on).
    pub async fn open_without_migrating(url: &str) -> anyhow::Result<Store> {
        Self::connect(url, None, &SharedPools::private()).await
    }

    /// [`Store::open_without_migrating`] with the audit chain's key.
    pub async fn open_keyed_without_migrating(
        url: &str,
        audit_key: Option<audit::AuditKey>,
    ) -> anyhow::Result<Store> {
        Self::connect(url, audit_key, &SharedPools::private()).await
    }

    /// Boxed as `Send` where its lifetimes are known, for the reason of
    /// [`run_migrations`](super::run_migrations) (the pools' connect hooks).
    fn connect<'a>(
        url: &'a str,
        audit_key: Option<audit::AuditKey>,
        pools: &'a SharedPools,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<Store>> {
        Box::pin(Self::connect_unboxed(url, audit_key, pools))
    }

    async fn connect_unboxed(
        url: &str,
        audit_key: Option<audit::AuditKey>,
        pools: &SharedPools,
    ) -> anyhow::Result<Store> {
        match Backend::of_url(url) {
            Backend::Sqlite => Self::connect_sqlite(url, audit_key).await,
            Backend::Postgres => Self::connect_postgres(url, audit_key, pools).await,
        }
    }

    async fn connect_sqlite(
        url: &str,
        audit_key: Option<audit::AuditKey>,
    ) -> anyhow::Result<Store> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("database.url `{url}` is not a valid SQLite URL"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // The audit key's TEMP table stays in memory, never in a temporary file.
            .pragma("temp_store", "memory");
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the database folder {}", dir.display()))?;
        }
        if !url.contains("mode=memory") {
            create_private(&options)?;
        }
        let preemption = Arc::<Preemption>::default();
        // Pruned pages can be handed back to the file system in small steps (`PRAGMA
        // incremental_vacuum`); applies to new files, older ones are converted once (see
        // `retention::convert_to_incremental`). Set by the writer only, which opens
        // first: the pragma takes a write, so a reader opened with it while the disk
        // is full would fail to open, and reads must go on then.
        let write = single_writer(audit_key.clone(), None, "FULL")
            .connect_with(
                options
                    .clone()
                    .auto_vacuum(SqliteAutoVacuum::Incremental)
                    .pragma("cache_size", sqlite_idle::CACHE_PAGES.to_string())
                    // Negative: in KiB, as SQLite's own default size.
                    .pragma("cache_spill", format!("-{}", sqlite_idle::SPILL_KIB)),
            )
            .await
            .with_context(|| format!("cannot open the database {}", display_path(&options)))?;
        // Its commits are not flushed one by one; SQLite still syncs around checkpoints in
        // this mode, so the file stays consistent. Nor do they checkpoint in the write turn:
        // [`Housekeeping::finish`] does, after giving the turn back.
        let housekeeping =
            single_writer(audit_key.clone(), Some(Arc::clone(&preemption)), "NORMAL")
                .idle_timeout(sqlite_idle::RARELY_USED_IDLE)
                .connect_lazy_with(
                    options
                        .clone()
                        .synchronous(SqliteSynchronous::Normal)
                        .pragma("wal_autocheckpoint", "0"),
                );
        // Lazily: the writer above has just shown that the file opens.
        let read = sqlite_idle::readers(READ_CONNECTIONS).connect_lazy_with(
            options
                .clone()
                .statement_cache_capacity(sqlite_idle::READER_STATEMENTS)
                .pragma("cache_size", sqlite_idle::CACHE_PAGES.to_string()),
        );
        let exports = SqlitePoolOptions::new()
            .max_connections(EXPORT_CONNECTIONS)
            .idle_timeout(sqlite_idle::RARELY_USED_IDLE)
            .connect_lazy_with(options.clone());
        Ok(Store {
            write: Pool(Db::Sqlite(write)),
            read: Pool(Db::Sqlite(read)),
            exports: Pool(Db::Sqlite(exports)),
            housekeeping: Pool(Db::Sqlite(housekeeping)),
            write_lock: postgres::WriteLock::new(0),
            outbox: Arc::default(),
            outbox_commits: Arc::new(tokio::sync::watch::Sender::new(0)),
            audit_key,
            writes_begun: Arc::default(),
            preemption,
            health: Arc::default(),
            size_measured: Arc::default(),
            shares: None,
        })
    }

    /// Connects to PostgreSQL. The URL's `search_path` (`?options[search_path]=…`)
    /// names the schema of the tenant's tables, made here when missing; without one,
    /// PostgreSQL's default schema (`public`).
    async fn connect_postgres(
        url: &str,
        audit_key: Option<audit::AuditKey>,
        pools: &SharedPools,
    ) -> anyhow::Result<Store> {
        let options = postgres::options_of(url)?;
        let shown = postgres::describe(&options);
        let schema = postgres::schema(&options);
        // What PostgreSQL says below a warning is chatter ("schema … already exists,
        // skipping" from every start but the first, and the same of sqlx's migrations
        // table), which sqlx logs at INFO into every command's output.
        let options = options.options([("client_min_messages", "warning")]);
        let pool = pools.of(&options);
        if let Some(schema) = &schema {
            pool.create_schema(schema)
                .await
                .with_context(|| format!("cannot create the schema `{schema}` in {shown}"))?;
        }
        let shares = pool.tenant(schema.as_deref().unwrap_or("\"$user\", public"));
        let share = |kind| Pool(Db::Postgres(shares.share(kind)));
        let store = Store {
            housekeeping: share(ShareKind::Housekeeping),
            write: share(ShareKind::Write),
            read: share(ShareKind::Read),
            exports: share(ShareKind::Export),
            write_lock: postgres::WriteLock::of_schema(
                schema.as_deref().unwrap_or("public"),
                audit_key.clone(),
            ),
            outbox: Arc::default(),
            outbox_commits: Arc::new(tokio::sync::watch::Sender::new(0)),
            audit_key,
            writes_begun: Arc::default(),
            preemption: Arc::default(),
            health: Arc::default(),
            size_measured: Arc::default(),
            shares: Some(shares),
        };
        // The first connection proves the database is there, as opening pools did.
        if let Err(error) = store.ping().await {
            store.close().await;
            return Err(error).with_context(|| format!("cannot open the database {shown}"));
        }
        Ok(store)
    }
}

/// A pool of the one connection that writes, holding the audit chain's key; with
/// `preemption`, its statements can be interrupted (housekeeping's).
///
/// `synchronous` is the connection's flush setting, put back whenever it returns to the
/// pool (see [`Store::begin_write_unflushed`]).
fn single_writer(
    audit_key: Option<audit::AuditKey>,
    preemption: Option<Arc<Preemption>>,
    synchronous: &'static str,
) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(60))
        // A COMMIT that fails (a full disk) can leave SQLite without the transaction
        // while sqlx still counts it open; the ROLLBACK of the dropped transaction then
        // fails too, and every later BEGIN is refused ("non-zero transaction depth")
        // until restart. Such a connection is closed instead of reused: the pool opens
        // a fresh one, so writes work again as soon as the disk does. The statement runs
        // after the dropped transaction's queued ROLLBACK, so the check sees how that
        // ended; it also restores the flush setting an unflushed write lowered.
        .after_release(move |conn, _| {
            Box::pin(async move {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "PRAGMA synchronous = {synchronous}"
                )))
                .execute(&mut *conn)
                .await?;
                Ok(!sqlx::Connection::is_in_transaction(conn))
            })
        })
        .before_acquire(|conn, _| {
            Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
        })
        .after_connect(move |conn, _| {
            let key = audit_key.clone();
            let preemption = preemption.clone();
            Box::pin(async move {
                audit::hold_key(conn, key.as_ref()).await?;
                if let Some(preemption) = preemption {
                    // Returning false interrupts the statement (SQLITE_INTERRUPT).
                    conn.lock_handle()
                        .await?
                        .set_progress_handler(PREEMPTION_CHECK_OPS, move || {
                            !preemption.gives_way()
                        });
                }
                Ok(())
            })
        })
}

/// Creates the database file, when missing, readable and writable by its owner only
/// (0600). SQLite would create it with 0644 less the umask; its journal, WAL and
/// shared-memory files take the mode of the database file, so these are private too.
/// Done here rather than through the process umask, which would also change the mode
/// of every other file the process writes (reports written with `--out`) and cannot be
/// set safely once threads run.
fn create_private(options: &SqliteConnectOptions) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    let path = options.get_filename();
    if path.as_os_str().is_empty() || path == Path::new(":memory:") || path.exists() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // An empty file is an empty database to SQLite.
        Ok(_) => Ok(()),
        // Another process made it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create the database {}", path.display())),
    }
}

fn display_path(options: &SqliteConnectOptions) -> String {
    let path: &Path = options.get_filename();
    path.display().to_string()
}
