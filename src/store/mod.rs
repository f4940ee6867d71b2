//! The store: one file per table family, behind narrow functions, on SQLite (the
//! default) or PostgreSQL (see [`db`] for how one body of queries serves both).
//!
//! On SQLite, writes go through a single-connection pool and start with `BEGIN IMMEDIATE`, so a
//! transaction takes the write lock up front instead of failing half-way when another
//! process (a `wfmd transition` next to the daemon) writes too; `busy_timeout` makes the
//! other side wait. Reads use their own pool and, thanks to WAL, never wait for writes.
//! `synchronous=FULL` makes every commit durable: a committed audit row or outbox event
//! must survive power loss, not only a crash.
//!
//! On PostgreSQL, every write transaction takes its tenant's write lock (a transaction
//! advisory lock on the schema) first, so writes are serialised as on SQLite: the audit
//! chain's head and the outbox's order stay those of the commits. Unflushed writes
//! (intents, names), which touch neither, go without it.
//!
//! The functions that write take a connection ([`AsConn`]) so a caller can compose them
//! into one transaction (an accepted change writes interval, attempt, audit entry and
//! outbox event together, or nothing).
//!
//! Housekeeping (retention's batches and vacuum steps) writes on a connection of its own
//! without a flush per commit, taking its turn at the write connection like any other
//! write: see [`Store::housekeeping`]. A step it marks preemptible gives way as soon as
//! an engine write waits for the turn (see [`Housekeeping::preemptible`]).

pub mod analytics;
pub mod attempts;
pub mod audit;
pub mod authorisations;
pub mod batched;
pub mod copy;
pub mod db;
pub mod deferred;
pub mod deliveries;
pub mod exceptions;
pub mod firings;
pub mod history;
pub mod imported;
pub mod intents;
pub mod jobs;
pub mod keys;
pub mod live_shared;
pub mod lock;
mod open;
pub mod outbox;
pub mod postgres;
pub mod retention;
pub mod roster;
pub mod samples;
pub mod schedules;
pub mod schema;
pub mod shared;
mod sqlite_idle;
pub mod tickets;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use sqlx_sqlite::SqliteConnection;

pub use db::{AsConn, Backend, Db, Done, Pool, PoolConn, Tx};
pub use db::{execute, fetch, fetch_scalar, on};
pub use postgres::InstanceRole;
pub use shared::SharedPools;
pub use sqlite_idle::sqlite_without_lookaside;

use crate::telemetry::names::STORE_WRITE_ERRORS_TOTAL;

/// The embedded SQLite migrations (`migrations/sqlite/`), applied at start and by `wfmd migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded PostgreSQL migrations (`migrations/postgres/`).
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Runs `migrator` on `conn`, up to `target` (every migration with `None`). The
/// future is boxed as `Send` here, where its lifetimes are known: sqlx's migration
/// futures are `Send` for one lifetime only (its `Acquire<'a>` bounds), so awaiting an
/// unboxed one makes any task that opens a store (a tenant added on reload) impossible
/// to spawn.
pub(crate) fn run_migrations<'a>(
    migrator: &'a sqlx::migrate::Migrator,
    conn: &'a mut sqlx_sqlite::SqliteConnection,
    target: Option<i64>,
) -> futures::future::BoxFuture<'a, Result<(), sqlx::migrate::MigrateError>> {
    // `run_direct` is what `run` and `run_to` call once they hold a connection; sqlx
    // keeps it public for this (a caller that has one already).
    Box::pin(async move {
        migrator.run_direct(target, &mut *conn, false).await?;
        forget_statements(conn).await
    })
}

/// Closes the statements a migration run left prepared on `conn`. sqlx keeps each
/// statement a connection runs prepared for as long as the connection is open, and a
/// migration's (its DDL, the migrator's bookkeeping) run once in a database's life: on
/// the connection that goes on to be a SQLite tenant's writer they were about 50 KB of
/// its memory for good. Every migration run ends with it (the shared schema's too).
pub(crate) async fn forget_statements<C>(conn: &mut C) -> Result<(), sqlx::migrate::MigrateError>
where
    C: sqlx::Connection,
    C::Database: sqlx::database::HasStatementCache,
{
    conn.clear_cached_statements().await.map_err(Into::into)
}

/// [`run_migrations`] on PostgreSQL, where the migrator locks (an advisory lock), so
/// two instances starting together cannot both migrate.
fn run_pg_migrations<'a>(
    migrator: &'a sqlx::migrate::Migrator,
    conn: &'a mut sqlx_postgres::PgConnection,
) -> futures::future::BoxFuture<'a, Result<(), sqlx::migrate::MigrateError>> {
    Box::pin(async move {
        // One tenant's schema at a time in this process: the migrator's advisory lock
        // is one for the whole database, so tenants built side by side at start would
        // only queue on it, waking each other in turn.
        let _alone = PG_MIGRATING.lock().await;
        // `false`: apply them (`true` would only mark them applied).
        migrator.run_direct(None, &mut *conn, false).await?;
        forget_statements(conn).await
    })
}

/// Held while this process migrates a PostgreSQL schema (see [`run_pg_migrations`]).
static PG_MIGRATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite connections for concurrent reads (the engine's lookups, history, the CLI's
/// reads) beside the one writer.
const READ_CONNECTIONS: u32 = 4;

/// How long a write may have been the last good one before [`Store::check_writable`]
/// proves the database still takes writes with a write of its own.
const WRITTEN_RECENTLY: Duration = Duration::from_secs(10);

/// SQLite connections for downloads (reports, the audit export, analytics results),
/// apart from the read pool: see [`Store::for_exports`].
const EXPORT_CONNECTIONS: u32 = 4;

/// How many SQLite virtual-machine instructions run between two looks of the
/// housekeeping connection's progress handler at [`Preemption`]. An incremental-vacuum
/// step spends about three of them per page it moves, so a waiting engine write
/// interrupts it within a page or two; the look itself is two atomic loads.
const PREEMPTION_CHECK_OPS: i32 = 4;

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    write: Pool,
    read: Pool,
    /// Downloads' reads (see [`Store::for_exports`]), opened on first use.
    exports: Pool,
    /// On SQLite, one connection for housekeeping, opened on first use (see
    /// [`Store::housekeeping`]); on PostgreSQL, its own turn of the instance's pool.
    housekeeping: Pool,
    /// On PostgreSQL, the tenant's write lock and what this instance is to the tenant
    /// (see [`Store::begin_write`]).
    write_lock: postgres::WriteLock,
    /// Pinged after a commit that wrote outbox events, so delivery starts at once
    /// instead of at its next poll.
    outbox: Arc<tokio::sync::Notify>,
    /// Bumped with the same commits, for any number of other readers of the outbox
    /// (the live feed): a `watch` wakes every receiver, where `Notify` wakes one.
    outbox_commits: Arc<tokio::sync::watch::Sender<u64>>,
    /// `audit.key`, also held by each write connection (see [`audit`]).
    audit_key: Option<audit::AuditKey>,
    /// Write transactions begun through [`Store::begin_write`], so housekeeping can tell
    /// whether the engine is writing (see [`Store::writes_begun`]).
    writes_begun: Arc<AtomicU64>,
    /// Engine writes waiting for the turn, and whether housekeeping's statement in
    /// progress gives way to them (see [`Housekeeping::preemptible`]).
    preemption: Arc<Preemption>,
    /// How the last write transaction ended (see [`Store::check_writable`]).
    health: Arc<WriteHealth>,
    /// When [`Store::size_bytes`] was last asked (see [`Store::size_measured_at`]).
    size_measured: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// On PostgreSQL, the tenant's shares of its instance's pool, which closing the
    /// store gives back.
    shares: Option<Arc<shared::TenantShares>>,
}

/// An instance's open database connections ([`connections_of`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Checked out: running a statement or a transaction, or held by a task.
    pub in_use: u32,
    /// Open and waiting in their pool for work.
    pub idle: u32,
    /// Checkouts queued for a connection: on a tenant's share or on the instance's
    /// PostgreSQL pool (always 0 on SQLite, whose writes queue by design).
    pub waiting: u32,
}

impl ConnectionCounts {
    /// The counts of a sqlx pool of `size` connections, `num_idle` of them idle as sqlx
    /// counts them, and `waiting` checkouts queued. sqlx (0.9.0) counts a connection
    /// given back as idle only after putting it in its queue, where another checkout
    /// may already have taken it and counted it out: for that moment its count is one
    /// below zero, wrapped to `usize::MAX`. No more connections are idle than open, so
    /// a count above the size is that moment, read as none idle.
    pub(super) fn of_pool(size: u32, num_idle: usize, waiting: u32) -> ConnectionCounts {
        let idle = u32::try_from(num_idle)
            .ok()
            .filter(|&idle| idle <= size)
            .unwrap_or(0);
        ConnectionCounts {
            in_use: size - idle,
            idle,
            waiting,
        }
    }
}

impl std::ops::Add for ConnectionCounts {
    type Output = ConnectionCounts;

    fn add(self, other: ConnectionCounts) -> ConnectionCounts {
        ConnectionCounts {
            in_use: self.in_use.saturating_add(other.in_use),
            idle: self.idle.saturating_add(other.idle),
            waiting: self.waiting.saturating_add(other.waiting),
        }
    }
}

/// The connections `stores` hold open and the checkouts they queue (the
/// `wfmd_database_connections` gauge): SQLite stores' own, and each instance pool their
/// PostgreSQL stores share counted once.
pub fn connections_of<'a>(stores: impl IntoIterator<Item = &'a Store>) -> ConnectionCounts {
    let mut seen = std::collections::HashSet::new();
    stores
        .into_iter()
        .filter(|store| match &store.shares {
            Some(shares) => seen.insert(Arc::as_ptr(shares.pool())),
            None => true,
        })
        .map(Store::connections)
        .fold(ConnectionCounts::default(), std::ops::Add::add)
}

/// How the write transactions begun through [`Store::begin_write`] have been ending.
#[derive(Debug, Default)]
struct WriteHealth {
    /// Whether the last one to end failed (to begin or to commit).
    failing: AtomicBool,
    /// When one last committed.
    last_ok: std::sync::Mutex<Option<Instant>>,
}

impl WriteHealth {
    fn record<T>(&self, result: &Result<T, sqlx::Error>) {
        match result {
            Ok(_) => {
                self.failing.store(false, Ordering::Relaxed);
                *self.last_ok.lock().expect("not poisoned") = Some(Instant::now());
            }
            Err(error) => {
                self.failing.store(true, Ordering::Relaxed);
                metrics::counter!(STORE_WRITE_ERRORS_TOTAL).increment(1);
                tracing::error!(%error, "a database write failed");
            }
        }
    }

    /// Whether the last write committed, within [`WRITTEN_RECENTLY`].
    fn recently_ok(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
            && self
                .last_ok
                .lock()
                .expect("not poisoned")
                .is_some_and(|at| at.elapsed() < WRITTEN_RECENTLY)
    }
}

/// The connection a writer of unflushed writes keeps between two of them (see
/// [`Store::write_unflushed_on`]); empty to begin with, and on SQLite always. Dropping
/// it gives the connection back.
#[derive(Debug, Default)]
pub struct Unflushed(Option<shared::Checkout>);

/// A write transaction begun by [`Store::begin_write`]; it derefs to the connection, so
/// the store's functions take it as `&mut tx`. Rolled back when dropped uncommitted.
/// Its commit tells the store how it went, for `/readyz` and
/// `wfmd_store_write_errors_total`.
pub struct WriteTx {
    tx: Tx<'static>,
    health: Arc<WriteHealth>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let result = self.tx.commit().await;
        self.health.record(&result);
        result
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl AsConn for WriteTx {
    fn db(&mut self) -> Db<&mut SqliteConnection, &mut sqlx_postgres::PgConnection> {
        self.tx.db()
    }
}

/// What the housekeeping connection's progress handler looks at.
#[derive(Debug, Default)]
struct Preemption {
    /// Calls of [`Store::begin_write`] that have not got the write connection yet.
    waiting: AtomicUsize,
    /// Set while housekeeping runs a statement that may be interrupted.
    armed: AtomicBool,
}

impl Preemption {
    fn gives_way(&self) -> bool {
        self.armed.load(Ordering::Relaxed) && self.waiting.load(Ordering::Relaxed) > 0
    }
}

/// Counts one engine write as waiting for the turn until it drops (also when the
/// waiting future is cancelled).
struct Waiting<'a>(&'a Preemption);

impl<'a> Waiting<'a> {
    fn new(preemption: &'a Preemption) -> Waiting<'a> {
        preemption.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(preemption)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Store {
    /// The audit chain's key (`audit.key`), when the store was opened with one.
    pub fn audit_key(&self) -> Option<&audit::AuditKey> {
        self.audit_key.as_ref()
    }

    /// The pool of the one write connection, for statements that must run outside a
    /// transaction with the engine's settings (the one-time `VACUUM` conversion).
    pub(crate) fn writer(&self) -> &Pool {
        &self.write
    }

    /// What this instance is to the tenant (see [`crate::cluster`]); [`InstanceRole::Sole`]
    /// unless the tenant's leadership says otherwise.
    pub fn role(&self) -> InstanceRole {
        self.write_lock.role()
    }

    /// The term this instance leads the tenant in (`[ha]`); `None` when it is the sole
    /// instance or a follower.
    pub fn term(&self) -> Option<i64> {
        match self.role() {
            InstanceRole::Leader { term, .. } => Some(term),
            InstanceRole::Sole | InstanceRole::Follower => None,
        }
    }

    /// Makes this instance the tenant's leader in a term, a follower, or its sole
    /// instance, for every clone of the store: from the next write transaction on, a
    /// leader's prove the term current, a follower's are refused.
    pub fn set_role(&self, role: InstanceRole) {
        self.write_lock.set_role(role);
    }

    /// On PostgreSQL, the schema of the tenant's tables (`public` when the URL names
    /// none), which also names the tenant among the database's in what instances share
    /// (see [`crate::cluster`]); `None` on SQLite.
    pub fn schema(&self) -> Option<&str> {
        self.write_lock.schema()
    }

    /// Which backend the store is on.
    pub fn backend(&self) -> Backend {
        self.read.backend()
    }

    /// Applies pending migrations, then puts back any trigger of theirs (the audit
    /// log's append-only ones) that the file lost or had altered, with a warning (see
    /// [`schema::restore_triggers`]); returns how many migrations were applied.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        let before = self.applied_migrations().await.unwrap_or(0);
        self.refuse_newer_schema().await?;
        let mut conn = self.write.acquire().await?;
        match conn.db() {
            Db::Sqlite(conn) => run_migrations(&MIGRATOR, conn, None).await,
            Db::Postgres(conn) => run_pg_migrations(&PG_MIGRATOR, conn).await,
        }
        .context("cannot apply database migrations")?;
        drop(conn);
        schema::restore_triggers(self)
            .await
            .context("cannot restore the audit log's triggers")?;
        deliveries::redact_stored_endpoints(self)
            .await
            .context("cannot mask the credentials of stored webhook endpoints")?;
        Ok(self.applied_migrations().await?.saturating_sub(before))
    }

    /// Refuses a database a newer wfmd migrated: this one does not know its tables.
    /// Instances are upgraded one at a time; the first of the new version migrates, and
    /// one of the old version that restarts meanwhile stops here, saying why.
    async fn refuse_newer_schema(&self) -> anyhow::Result<()> {
        let ours = match self.backend() {
            Backend::Sqlite => &MIGRATOR,
            Backend::Postgres => &PG_MIGRATOR,
        };
        let known = ours.iter().map(|m| m.version).max().unwrap_or(0);
        if self.applied_migrations().await? == 0 {
            return Ok(());
        }
        let newest: Option<i64> = fetch_scalar!(
            &self.read,
            one,
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success"
        )?;
        match newest {
            Some(newest) if newest > known => anyhow::bail!(
                "the database was migrated by a newer wfmd (its newest migration is \
                 {newest}, this wfmd's {known}): start the newer version instead; when \
                 upgrading several instances, upgrade each in turn"
            ),
            _ => Ok(()),
        }
    }

    /// How many migrations the database has applied.
    pub async fn applied_migrations(&self) -> anyhow::Result<usize> {
        let exists: Option<String> = fetch_scalar!(
            &self.read,
            optional,
            (
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
            )
        )?;
        if exists.is_none() {
            return Ok(0);
        }
        let count: i64 = fetch_scalar!(
            &self.read,
            one,
            "SELECT COUNT(*) FROM _sqlx_migrations WHERE success"
        )?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Starts a write transaction holding the database's write lock (`BEGIN IMMEDIATE`).
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        self.begin("BEGIN IMMEDIATE").await
    }

    /// [`Store::begin_write`] for the change path's records. On PostgreSQL it takes a
    /// turn of its own kind, of which a tenant has two: the engine begins its next batch
    /// of records while the last one commits, so that the begin's round trip, and its
    /// wait for the write lock the last one holds, are over when that commit is. On
    /// SQLite, with its one write connection, it is [`Store::begin_write`].
    pub(crate) async fn begin_records_write(&self) -> Result<WriteTx, sqlx::Error> {
        self.begin_as("BEGIN IMMEDIATE", None, Some(shared::ShareKind::Records))
            .await
    }

    /// [`Store::begin_write`] for a commit that need not survive a power cut, only a
    /// crash: it is not flushed to disk (`synchronous=NORMAL` until the connection goes
    /// back to the pool). It still needs room on the disk, and the next flushed commit
    /// flushes it too. For a change's intent, whose loss in a power cut costs no more
    /// than the same cut a moment later, and spares every change a second flush.
    ///
    /// Only for writes that touch neither the audit log nor the outbox: on PostgreSQL
    /// such a transaction does not take the tenant's write lock (see
    /// `postgres::WriteLock::begin`), which orders those two.
    pub async fn begin_write_unflushed(&self) -> Result<WriteTx, sqlx::Error> {
        // One statement string, so the setting and the BEGIN go to the connection
        // together.
        self.begin("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE")
            .await
    }

    /// Runs `write` as the one write of an unflushed transaction (see
    /// [`Store::begin_write_unflushed`]). On PostgreSQL it goes as one statement of its
    /// own, in two round trips rather than a transaction's three or four (see
    /// `postgres::WriteLock::write_unflushed`). A change's intents, which every change
    /// waits for before it is sent, go through [`Store::write_unflushed_on`], which may
    /// spare one of the two.
    pub async fn write_unflushed(&self, write: batched::TableWrite) -> Result<(), sqlx::Error> {
        self.write_unflushed_on(&mut Unflushed::default(), write)
            .await
    }

    /// [`Store::write_unflushed`] for a writer with more to write right after (the
    /// engine's intents): on PostgreSQL the statement goes to the connection `held`
    /// kept from the last one, which already searches the tenant's schema, so it takes
    /// one round trip instead of two. The connection is kept in `held` after a write
    /// that succeeded, unless other work of the instance is waiting for one: dropping
    /// `held` gives it back. On SQLite `held` stays empty.
    pub async fn write_unflushed_on(
        &self,
        held: &mut Unflushed,
        write: batched::TableWrite,
    ) -> Result<(), sqlx::Error> {
        let Db::Postgres(share) = self.write.db() else {
            let mut tx = self.begin_write_unflushed().await?;
            write.run(&mut tx).await?;
            return tx.commit().await;
        };
        self.writes_begun.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting::new(&self.preemption);
        let conn = match held.0.take() {
            Some(conn) => Ok(conn),
            None => share.of_kind(shared::ShareKind::Unflushed).acquire().await,
        };
        let written = match conn {
            Ok(mut conn) => {
                let written = self.write_lock.write_unflushed(&mut conn, write).await;
                if written.is_ok() && !share.pool().has_waiting() {
                    held.0 = Some(conn);
                }
                written
            }
            Err(error) => Err(error),
        };
        self.health.record(&written);
        written
    }

    /// [`Store::begin_write`] whatever this instance's role, proving no term, as
    /// [`Store::begin_term`] does: for the readiness probe, which asks whether the
    /// database takes writes, not whose; and for live-feed tickets, which any instance
    /// issues and redeems.
    pub(crate) async fn begin_write_unfenced(&self) -> Result<WriteTx, sqlx::Error> {
        self.begin_as("BEGIN IMMEDIATE", Some(InstanceRole::Sole), None)
            .await
    }

    /// [`Store::begin_write`] whatever this instance's role, proving no term, for
    /// starting a term of the tenant's lease (taking it over changes the term every
    /// leader's write proves, so it holds the same lock; see [`crate::cluster::lease`]).
    /// On PostgreSQL it goes to a connection before the instance's other work waiting
    /// for one (see [`shared`]): none of the tenant's leader work can begin before it.
    pub(crate) async fn begin_term(&self) -> Result<WriteTx, sqlx::Error> {
        let term = Some(shared::ShareKind::Term);
        self.begin_as("BEGIN IMMEDIATE", Some(InstanceRole::Sole), term)
            .await
    }

    async fn begin(&self, sqlite_statement: &'static str) -> Result<WriteTx, sqlx::Error> {
        self.begin_as(sqlite_statement, None, None).await
    }

    /// A write transaction, as `role` (the store's own by default) and through the
    /// write share of `kind` (the one the statement calls for by default).
    async fn begin_as(
        &self,
        sqlite_statement: &'static str,
        role: Option<InstanceRole>,
        kind: Option<shared::ShareKind>,
    ) -> Result<WriteTx, sqlx::Error> {
        self.writes_begun.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting::new(&self.preemption);
        let tx = match self.write.db() {
            Db::Sqlite(pool) => pool
                .begin_with(sqlite_statement)
                .await
                .map(|tx| Tx(Db::Sqlite(tx), None)),
            Db::Postgres(share) => {
                let flushed = !sqlite_statement.contains("NORMAL");
                let role = role.unwrap_or_else(|| self.write_lock.role());
                // An unflushed write takes no write lock: its own turn lets it commit
                // beside a flushed one instead of queueing behind it and its flush.
                let share = match kind {
                    Some(kind) => share.of_kind(kind),
                    None if flushed => share.clone(),
                    None => share.of_kind(shared::ShareKind::Unflushed),
                };
                self.write_lock
                    .begin(&share, flushed, role)
                    .await
                    .map(|(tx, turns)| Tx(Db::Postgres(tx), Some(turns)))
            }
        };
        if tx.is_err() {
            self.health.record(&tx);
        }
        Ok(WriteTx {
            tx: tx?,
            health: Arc::clone(&self.health),
        })
    }

    /// Proves the database takes writes (for `/readyz`): free when a write committed
    /// within the last seconds and none failed since; otherwise one small write of its own.
    pub async fn check_writable(&self) -> Result<(), sqlx::Error> {
        if self.health.recently_ok() {
            return Ok(());
        }
        let mut tx = self.begin_write_unfenced().await?;
        execute!(
            &mut tx,
            "INSERT INTO write_probe (id, at) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            to_ms(Utc::now())
        )?;
        tx.commit().await
    }

    /// Engine writes waiting for the write turn right now.
    #[cfg(test)]
    pub(crate) fn writes_waiting(&self) -> usize {
        self.preemption.waiting.load(Ordering::Relaxed)
    }

    /// How many write transactions [`Store::begin_write`] has begun so far: housekeeping
    /// compares two readings to learn whether the engine wrote in between.
    pub fn writes_begun(&self) -> u64 {
        self.writes_begun.load(Ordering::Relaxed)
    }

    /// Takes the write connection's turn and hands out the housekeeping connection, for
    /// maintenance writes whose loss in a power cut costs nothing: the rows a lost
    /// retention batch removed come back and go again in the next pass.
    ///
    /// Its commits skip the flush to disk (`synchronous=NORMAL`) that each engine commit
    /// pays (`FULL`). That flush is a part of a batch's hold no batch size takes away, and
    /// on a busy disk it grows to tens of milliseconds, which the engine's commits queue
    /// behind. Nothing committed by anyone else becomes less durable: an engine commit
    /// flushes the write-ahead log with every frame before its own, and checkpoints sync
    /// in both modes.
    ///
    /// The write connection is held unused meanwhile, so the daemon's writes wait for
    /// this one in the pool's queue as for any other, never in SQLite's busy handler.
    /// The turn is taken last: the housekeeping connection may still be on its way back
    /// from the last step (its checkpoint, or the pool's check on return), and the
    /// engine's writes must not wait for that.
    ///
    /// On PostgreSQL it is a connection of the instance's pool, in the tenant's
    /// housekeeping turn; each transaction it begins takes the write lock like the
    /// engine's.
    pub async fn housekeeping(&self) -> Result<Housekeeping, sqlx::Error> {
        let conn = self.housekeeping.acquire().await?;
        let write_turn = match self.write.backend() {
            Backend::Sqlite => Some(self.write.acquire().await?),
            Backend::Postgres => None,
        };
        Ok(Housekeeping {
            conn,
            write_turn,
            write_lock: self.write_lock.clone(),
            preemption: Arc::clone(&self.preemption),
            beginning: false,
        })
    }

    /// Wakes whoever waits on [`Store::outbox_signal`]; call after committing events.
    pub fn notify_outbox(&self) {
        self.outbox.notify_one();
        self.outbox_commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Among several instances (PostgreSQL): relays outbox commits between them until
    /// `stop`, so the live feed of a follower wakes when the leader commits events, as
    /// the leader's does (`postgres::relay_outbox_commits`); `me` names this
    /// instance. Returns at once on SQLite.
    pub async fn relay_outbox_commits(&self, me: &str, stop: tokio_util::sync::CancellationToken) {
        let Db::Postgres(share) = &self.read.0 else {
            return;
        };
        let commits = self.outbox_commits();
        let wake = || self.notify_outbox();
        let channel = self.write_lock.outbox_channel();
        let role = || self.role();
        postgres::relay_outbox_commits(share, &channel, me, role, commits, wake, stop).await;
    }

    /// Changes after every commit that wrote outbox events; any number of readers may
    /// hold one (each sees the latest change, never a backlog).
    pub fn outbox_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outbox_commits.subscribe()
    }

    /// What the outbox dispatcher waits on for new events.
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.outbox)
    }

    /// The pool for reads.
    pub fn reader(&self) -> &Pool {
        &self.read
    }

    /// The same store with its reads on the download connections (reports, the audit
    /// export, analytics results; see `api::exports`): however many clients download,
    /// and however slowly, they never hold a connection the engine, the sync or
    /// delivery waits for.
    pub fn for_exports(&self) -> Store {
        // On PostgreSQL each download is one turn of the tenant's and the instance's
        // (see `shared::TenantShares::download`).
        let read = match &self.shares {
            Some(shares) => Pool(Db::Postgres(shares.download())),
            None => self.exports.clone(),
        };
        Store {
            read,
            ..self.clone()
        }
    }

    /// On SQLite, the connections the store's pools hold open now; on PostgreSQL,
    /// those of its instance's pool, which its other tenants share (see
    /// [`connections_of`], which counts each pool once).
    fn connections(&self) -> ConnectionCounts {
        if let Some(shares) = &self.shares {
            return shares.pool().connections();
        }
        [&self.write, &self.read, &self.exports, &self.housekeeping]
            .into_iter()
            .filter_map(Pool::sqlite_connections)
            .fold(ConnectionCounts::default(), std::ops::Add::add)
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        execute!(&self.read, "SELECT 1").map(drop)
    }

    /// The database's size in bytes: on SQLite the file's pages in use and free (the
    /// WAL not counted), on PostgreSQL the tables and indexes of the store's schema.
    ///
    /// On PostgreSQL it asks the file size of every table and index of the schema: on
    /// an instance of a thousand tenants, measuring them all took a `/metrics` scrape
    /// 29 s. So a scrape measures only the stalest few (see [`Store::size_measured_at`]).
    pub async fn size_bytes(&self) -> Result<i64, sqlx::Error> {
        // Noted as asked whatever the answer: a database that fails to answer waits its
        // turn again rather than being first in line at every scrape.
        *self
            .size_measured
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(std::time::Instant::now());
        fetch_scalar!(
            &self.read,
            one,
            (
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relkind = 'r'",
            )
        )
    }

    /// When [`Store::size_bytes`] was last asked, if ever.
    pub fn size_measured_at(&self) -> Option<std::time::Instant> {
        *self
            .size_measured
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes the pools, waiting for connections to be returned. On PostgreSQL the
    /// store gives its shares back, and the instance's pool closes with its last
    /// tenant.
    pub async fn close(&self) {
        self.housekeeping.close().await;
        self.write.close().await;
        self.read.close().await;
        self.exports.close().await;
        if let Some(shares) = &self.shares {
            shares.close().await;
        }
    }
}

/// The housekeeping connection, with the write connection's turn (see
/// [`Store::housekeeping`]); both are given back when it drops.
pub struct Housekeeping {
    conn: PoolConn,
    /// On SQLite, the write connection held unused; `None` once
    /// [`Housekeeping::finish`] gave it back, and on PostgreSQL.
    write_turn: Option<PoolConn>,
    write_lock: postgres::WriteLock,
    preemption: Arc<Preemption>,
    /// A PostgreSQL `BEGIN` went out and its answer was not read: its caller was
    /// dropped meanwhile (see [`Housekeeping::begin`]).
    beginning: bool,
}

impl Drop for Housekeeping {
    fn drop(&mut self) {
        // The session may be inside a transaction nobody will end: never pooled again.
        if self.beginning {
            self.conn.close_on_drop();
        }
    }
}

impl Housekeeping {
    /// Starts a write transaction on the housekeeping connection.
    pub async fn begin(&mut self) -> Result<Tx<'_>, sqlx::Error> {
        // The connection holds the turns: the transaction borrows it.
        Ok(Tx(
            match self.conn.db() {
                Db::Sqlite(conn) => {
                    Db::Sqlite(sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?)
                }
                Db::Postgres(conn) => {
                    // sqlx's begin (0.9.0), dropped between sending BEGIN and reading
                    // the answer, leaves the session in a transaction it does not know
                    // of (see `shared::Share::begin_then`, which runs its begins on a
                    // task of their own; this one borrows its connection). So that is
                    // noted: the next begin ends such a transaction first, and the
                    // connection is closed rather than pooled if none comes.
                    if self.beginning {
                        sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
                    }
                    self.beginning = true;
                    let mut tx = sqlx::Connection::begin(conn).await?;
                    self.beginning = false;
                    self.write_lock.take(&mut tx).await?;
                    Db::Postgres(tx)
                }
            },
            None,
        ))
    }

    /// Lets the statements run until the returned guard drops be interrupted as soon as
    /// an engine write waits for the turn: they fail with SQLITE_INTERRUPT
    /// ([`is_interrupt`]), undone, and the write goes ahead instead of waiting for the
    /// rest of them. Only for single statements outside an explicit transaction: SQLite
    /// rolls an interrupted one back whole, where inside a transaction it would end the
    /// transaction under sqlx's feet.
    pub fn preemptible(&self) -> Preemptible {
        self.preemption.armed.store(true, Ordering::Relaxed);
        Preemptible(Arc::clone(&self.preemption))
    }

    /// Gives the write turn back, then copies what the log holds into the database file
    /// (a passive checkpoint), beside the engine's commits rather than in front of them.
    ///
    /// The connection never checkpoints by itself (`wal_autocheckpoint=0`): a step of
    /// deletes or vacuum leaves hundreds of pages in the log, and SQLite's automatic
    /// checkpoint runs in whichever commit takes the log past 1,000 pages, holding the
    /// write lock while it writes them back and syncs the file. Measured with 32 writers
    /// (`cargo bench --bench retention`), that put waits of 100 ms and more on the
    /// engine's commits during the vacuum. A checkpoint needs no write lock: here the
    /// engine's commits append to the log meanwhile, and once it has caught up the next
    /// one starts the log over.
    ///
    /// It runs after every step, however small. Once every 16 vacuum steps instead did
    /// no better in the one run that compared them (a throwaway harness alternating
    /// 45 s vacuum windows of each beside the same writers, the host stealing 6 %): a
    /// p99 commit of 26.0 ms against 205.3 ms, the latter from two of its four windows
    /// (72 and 329 ms; the other two 15.5 and 8.2 ms).
    ///
    /// Returns what it wrote back: the log frames it copied (the step's pages and the
    /// engine commits' since the last checkpoint) and how long that took.
    ///
    /// On PostgreSQL, which writes back by itself, it only gives the connection back.
    pub async fn finish(mut self) -> Result<WriteBack, sqlx::Error> {
        drop(self.write_turn.take());
        let started = Instant::now();
        let Db::Sqlite(conn) = self.conn.db() else {
            return Ok(WriteBack::default());
        };
        // (busy, frames in the log, frames checkpointed)
        let (_, _, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(conn)
            .await?;
        Ok(WriteBack {
            frames: u64::try_from(copied).unwrap_or(0),
            took: started.elapsed(),
        })
    }
}

/// What [`Housekeeping::finish`] wrote back into the database file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBack {
    /// Log frames copied into the file (a page each).
    pub frames: u64,
    /// How long the checkpoint took, its sync of the file included.
    pub took: Duration,
}

/// While it lives, housekeeping's statements give way to waiting engine writes (see
/// [`Housekeeping::preemptible`]).
#[must_use = "the statements are preemptible only while it lives"]
pub struct Preemptible(Arc<Preemption>);

impl Drop for Preemptible {
    fn drop(&mut self) {
        self.0.armed.store(false, Ordering::Relaxed);
    }
}

/// Whether `error` says the database cannot take writes now, as opposed to refusing
/// this one: a full disk (SQLITE_FULL), an I/O error, a read-only or unopenable file,
/// a lock held too long, no connection in time, or this instance not (or no longer)
/// the tenant's leader ([`is_not_leader`]).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e)
            if e.try_downcast_ref::<sqlx_postgres::PgDatabaseError>()
                .is_some() =>
        {
            postgres::is_unavailable(e.code().as_deref().unwrap_or(""))
        }
        sqlx::Error::Database(e) => {
            // The primary result code is the low byte of an extended one.
            let code = e.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
            // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN
            matches!(code, 5 | 6 | 8 | 10 | 13 | 14)
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        _ => is_not_leader(error),
    }
}

/// Whether `error` refused a write because this instance does not lead the tenant, or
/// no longer does (its term is over).
pub fn is_not_leader(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Configuration(e) => e.is::<postgres::NotLeader>(),
        sqlx::Error::Database(e) => e.code().as_deref() == Some(postgres::STALE_TERM),
        _ => false,
    }
}

/// Whether `error` is a statement interrupted to let an engine write go first (see
/// [`Housekeeping::preemptible`]).
pub fn is_interrupt(error: &sqlx::Error) -> bool {
    // SQLITE_INTERRUPT
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("9"))
}

impl AsConn for Housekeeping {
    fn db(&mut self) -> Db<&mut SqliteConnection, &mut sqlx_postgres::PgConnection> {
        self.conn.db()
    }
}

/// Unix milliseconds, the store's representation of an instant.
pub fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The instant of a stored Unix-millisecond value.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// What the store's tests share. The store's conformance suite is every test marked
/// `#[apply(backends)]`: each runs once on SQLite and once on PostgreSQL (the tests'
/// throwaway server), with the backend as its argument. A test left unmarked pins one
/// backend's own mechanics (SQLite's write turn, its file, its vacuum) and runs on SQLite.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Backend, Done, Store, on};

    /// The backends a conformance test runs on; its cases are named after them
    /// (`…::case_1_sqlite`, `…::case_2_postgres`).
    #[rstest_reuse::template]
    #[rstest::rstest]
    #[case::sqlite(crate::store::Backend::Sqlite)]
    #[case::postgres(crate::store::Backend::Postgres)]
    pub fn backends(#[case] backend: crate::store::Backend) {}

    /// Stores `shifts` as the schedule book does, in a write transaction of their own.
    pub async fn save_shifts(store: &Store, shifts: &[super::schedules::StoredShift]) {
        let mut tx = store.begin_write().await.unwrap();
        super::schedules::save(&mut tx, shifts).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// A migrated SQLite store in a fresh temporary folder, removed when the guard drops.
    pub async fn temp_store() -> (Store, tempfile::TempDir) {
        temp_store_on(Backend::Sqlite).await
    }

    /// A migrated store on `backend`: a SQLite file in a fresh temporary folder, or a
    /// fresh database of the tests' PostgreSQL server.
    pub async fn temp_store_on(backend: Backend) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&temp_url_on(backend, &dir)).await.unwrap();
        (store, dir)
    }

    /// Waits until `check` holds, asking again every 20 ms, for ten seconds at most;
    /// past that the test fails with `what`.
    pub async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
        eventually_within(what, std::time::Duration::from_secs(10), check).await;
    }

    /// [`eventually`] for a test whose wait needs longer (or should take less) than ten
    /// seconds.
    pub async fn eventually_within(
        what: &str,
        within: std::time::Duration,
        check: impl AsyncFnMut() -> bool,
    ) {
        assert!(holds_within(within, check).await, "{what}");
    }

    /// Asks `check` every 20 ms until it holds or `within` has passed, and says whether
    /// it held. For a test whose failure shows what the check saw last (kept in a
    /// variable the check updates), or that judges what it saw by assertions of its own.
    /// Tokio's clock times it, which a paused test's sleeps move on.
    #[must_use]
    pub async fn holds_within(
        within: std::time::Duration,
        mut check: impl AsyncFnMut() -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if check().await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Counts the warnings logged by modules under a target (`wfmd::live`, …): a loop
    /// whose read fails logs one.
    #[derive(Clone, Default)]
    pub struct Warnings {
        target: &'static str,
        count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if *event.metadata().level() == tracing::Level::WARN
                && event.metadata().target().starts_with(self.target)
            {
                self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    impl Warnings {
        pub fn count(&self) -> usize {
            self.count.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// From now on every read of `store` fails at once and logs a warning, which the
    /// returned [`Warnings`] count (of modules under `target`) while the guard lives;
    /// and time is paused. So a loop's read is seen without waiting for the disk, in
    /// paused time.
    pub async fn reads_failing_in_paused_time(
        store: &Store,
        target: &'static str,
    ) -> (Warnings, tracing::subscriber::DefaultGuard) {
        store.reader().close().await;
        let warnings = Warnings {
            target,
            ..Warnings::default()
        };
        let logging =
            tracing::subscriber::set_default(tracing_subscriber::layer::SubscriberExt::with(
                tracing_subscriber::registry(),
                warnings.clone(),
            ));
        tokio::time::pause();
        (warnings, logging)
    }

    /// Advances paused time by `by` and lets the tasks it wakes run.
    pub async fn advance(by: std::time::Duration) {
        tokio::time::advance(by).await;
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    /// A fresh database's URL on `backend` (a file in `dir` for SQLite).
    pub fn temp_url_on(backend: Backend, dir: &tempfile::TempDir) -> String {
        match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("wfmd.db").display()),
            Backend::Postgres => throwaway_postgres::shared().fresh_database(),
        }
    }

    /// The key [`temp_store_keyed_on`] uses.
    pub fn test_key() -> super::audit::AuditKey {
        super::audit::AuditKey::new(&"k".repeat(40).into())
    }

    /// [`temp_store_on`] with an audit key.
    pub async fn temp_store_keyed_on(backend: Backend) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_keyed(&temp_url_on(backend, &dir), Some(test_key()))
            .await
            .unwrap();
        (store, dir)
    }

    /// Drops the audit log's triggers that refuse UPDATE and DELETE, as someone editing
    /// the database outside wfmd would.
    pub async fn drop_audit_triggers(store: &Store) {
        let mut tx = store.begin_write().await.unwrap();
        for trigger in ["audit_log_refuses_update", "audit_log_refuses_delete"] {
            let on_table = match store.backend() {
                Backend::Sqlite => "",
                Backend::Postgres => " ON audit_log",
            };
            on!(tx, |c| sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP TRIGGER {trigger}{on_table}"
            )))
            .execute(c)
            .await
            .map(Done::from))
            .unwrap();
        }
        tx.commit().await.unwrap();
    }

    /// Whether a transaction on the PostgreSQL database of `store` waits for an
    /// advisory lock (a tenant's write lock) right now.
    pub async fn waits_for_an_advisory_lock(store: &Store) -> bool {
        on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks
                            WHERE locktype = 'advisory' AND NOT granted
                              AND database = (SELECT oid FROM pg_database
                                              WHERE datname = current_database()))"
        )
        .fetch_one(c)
        .await)
        .unwrap()
    }

    /// Creates the table `filler` and writes `rows` rows of about a page (4 KiB) each,
    /// for tests that need many pages in the log or on the freelist.
    pub async fn fill_pages(conn: &mut impl crate::store::AsConn, rows: u32) {
        on!(conn, |c| sqlx::query("CREATE TABLE filler (x BLOB)")
            .execute(c)
            .await
            .map(Done::from))
        .unwrap();
        on!(conn, |c| sqlx::query(
            "INSERT INTO filler
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
             SELECT randomblob(3500) FROM n",
        )
        .bind(i64::from(rows))
        .execute(c)
        .await
        .map(Done::from))
        .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest_reuse::apply;
    use testing::backends;

    /// A pool's idle count read at the moment sqlx has it one below zero (wrapped)
    /// counts as none idle, and the pools' counts add up without overflowing: the
    /// gauge's scrape panicked once (`/metrics` answered 500 to the API's fuzzing).
    #[test]
    fn a_pools_idle_count_read_below_zero_counts_none_idle() {
        assert_eq!(
            ConnectionCounts::of_pool(4, 1, 2),
            ConnectionCounts {
                in_use: 3,
                idle: 1,
                waiting: 2
            }
        );
        let wrapped = ConnectionCounts::of_pool(4, usize::MAX, 0);
        assert_eq!((wrapped.in_use, wrapped.idle), (4, 0));
        let total = [wrapped, ConnectionCounts::of_pool(2, 2, 0)]
            .into_iter()
            .fold(ConnectionCounts::default(), std::ops::Add::add);
        assert_eq!((total.in_use, total.idle), (4, 2));
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_database_a_newer_wfmd_migrated_is_refused_saying_so(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let url = testing::temp_url_on(backend, &dir);
        let store = Store::open(&url).await.unwrap();
        Store::open(&url).await.expect("this wfmd's own migrations");
        // What a newer wfmd leaves: a migration this one does not know.
        on!(store.writer(), |c| sqlx::query(
            "INSERT INTO _sqlx_migrations
                 (version, description, success, checksum, execution_time)
             VALUES (29991231000001, 'from a newer wfmd', TRUE, $1, 0)"
        )
        .bind(vec![0u8; 48])
        .execute(c)
        .await
        .map(Done::from))
        .unwrap();
        let refused = format!("{:#}", Store::open(&url).await.err().unwrap());
        assert!(
            refused.contains("migrated by a newer wfmd") && refused.contains("29991231000001"),
            "{refused}"
        );
    }

    /// The tests' wait gives up once its time is up by tokio's clock, not before, and
    /// stops asking as soon as its check holds.
    #[tokio::test(start_paused = true)]
    async fn a_test_waits_until_its_check_holds_or_its_time_is_up() {
        let started = tokio::time::Instant::now();
        assert!(!testing::holds_within(Duration::from_secs(30), async || false).await);
        let waited = started.elapsed();
        assert!(
            (Duration::from_secs(30)..Duration::from_millis(30_020)).contains(&waited),
            "{waited:?}"
        );
        let mut asked = 0;
        testing::eventually("never held", async || {
            asked += 1;
            asked == 3
        })
        .await;
        assert_eq!(asked, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "the check never held")]
    async fn a_wait_whose_time_is_up_fails_the_test_with_its_message() {
        testing::eventually_within("the check never held", Duration::from_secs(1), async || {
            false
        })
        .await;
    }

    #[apply(backends)]
    #[tokio::test]
    async fn connections_counts_the_open_connections_and_those_checked_out(backend: Backend) {
        let (store, _dir) = testing::temp_store_on(backend).await;
        // A connection given back after opening may still be on its way to the pool.
        // The assertions below judge the counts last seen, settled or not.
        let mut at_rest = ConnectionCounts::default();
        let _ = testing::holds_within(Duration::from_secs(5), async || {
            at_rest = store.connections();
            at_rest.in_use == 0
        })
        .await;
        assert_eq!(at_rest.in_use, 0, "{at_rest:?}");
        // The writer's and a reader's, opened with the store (on PostgreSQL the
        // instance's pool, where one connection may have served both).
        assert!(at_rest.idle >= 1, "{at_rest:?}");
        let held = store.reader().acquire().await.unwrap();
        let holding = store.connections();
        assert_eq!(holding.in_use, 1, "{holding:?}");
        assert_eq!(holding.in_use + holding.idle, at_rest.idle, "{holding:?}");
        drop(held);
    }

    /// Two instances starting together on a new PostgreSQL database (and schema): one
    /// creates the schema and migrates, the other finds it done; neither fails.
    #[tokio::test]
    async fn two_instances_opening_one_new_postgres_schema_together_migrate_it_once() {
        let url = format!(
            "{}?options[search_path]=tenant_x",
            throwaway_postgres::shared().fresh_database()
        );
        let (a, b) = tokio::join!(Store::open(&url), Store::open(&url));
        let (a, b) = (a.unwrap(), b.unwrap());
        for store in [&a, &b] {
            assert_eq!(
                store.applied_migrations().await.unwrap(),
                PG_MIGRATOR.iter().count()
            );
        }
        let schemas: Vec<String> = on!(a.reader(), |c| sqlx::query_scalar(
            "SELECT CAST(table_schema AS TEXT) FROM information_schema.tables
             WHERE table_name = '_sqlx_migrations'"
        )
        .fetch_all(c)
        .await)
        .unwrap();
        assert_eq!(
            schemas,
            ["tenant_x"],
            "its tables are in the URL's schema only"
        );
    }

    #[tokio::test]
    async fn open_creates_the_file_and_folder_and_applies_migrations_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/wfmd.db");
        let url = format!("sqlite://{}", path.display());
        let store = Store::open(&url).await.unwrap();
        assert!(path.exists());
        let applied = store.applied_migrations().await.unwrap();
        assert_eq!(applied, MIGRATOR.iter().count());
        assert_eq!(
            store.migrate().await.unwrap(),
            0,
            "second run applies nothing"
        );
    }

    #[tokio::test]
    async fn a_new_database_and_its_log_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;

        let (store, dir) = testing::temp_store().await;
        // Written, so the log and shared-memory files exist.
        store.begin_write().await.unwrap().commit().await.unwrap();
        for name in ["wfmd.db", "wfmd.db-wal", "wfmd.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
        }
    }

    #[tokio::test]
    async fn connections_use_wal_full_sync_and_a_busy_timeout() {
        let (store, _dir) = testing::temp_store().await;
        let mode: String = on!(store.reader(), |c| sqlx::query_scalar(
            "PRAGMA journal_mode"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(mode, "wal");
        let mut tx = store.begin_write().await.unwrap();
        let sync: i64 = on!(tx, |c| sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(c)
            .await)
        .unwrap();
        assert_eq!(sync, 2, "FULL");
        let timeout: i64 = on!(tx, |c| sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(c)
            .await)
        .unwrap();
        assert_eq!(timeout, BUSY_TIMEOUT.as_millis() as i64);
        tx.rollback().await.unwrap();
    }

    async fn synchronous(tx: &mut WriteTx) -> Result<i64, sqlx::Error> {
        on!(tx, |c| sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(c)
            .await)
    }

    #[tokio::test]
    async fn an_unflushed_write_leaves_the_next_write_flushed() {
        let (store, _dir) = testing::temp_store().await;
        let mut tx = store.begin_write_unflushed().await.unwrap();
        assert_eq!(synchronous(&mut tx).await.unwrap(), 1, "NORMAL");
        tx.commit().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(synchronous(&mut tx).await.unwrap(), 2, "FULL again");
        tx.rollback().await.unwrap();
        // Also when the unflushed one is dropped without a commit.
        drop(store.begin_write_unflushed().await.unwrap());
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(synchronous(&mut tx).await.unwrap(), 2, "FULL again");
        tx.rollback().await.unwrap();
    }

    /// A TCP proxy to `target` on a free loopback port: what the server sends back waits
    /// `delay` on its way while `slow` is set.
    async fn delaying_proxy(
        target: std::net::SocketAddr,
        slow: Arc<AtomicBool>,
        delay: Duration,
    ) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        crate::tasks::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(target).await.unwrap();
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                crate::tasks::spawn(async move {
                    let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                });
                let slow = Arc::clone(&slow);
                crate::tasks::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    while let Ok(read) = from_server.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        if slow.load(Ordering::SeqCst) {
                            tokio::time::sleep(delay).await;
                        }
                        if to_client.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    /// Begins on `housekeeping` with the server's answers held back (`slow`), polls the
    /// begin once (its BEGIN goes out, and it waits for the answer), then drops it.
    async fn begin_dropped_half_way(housekeeping: &mut Housekeeping, slow: &AtomicBool) {
        slow.store(true, Ordering::SeqCst);
        let mut begin = Box::pin(housekeeping.begin());
        assert!(
            futures::poll!(&mut begin).is_pending(),
            "the begin ended at its first poll"
        );
        drop(begin);
        slow.store(false, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn a_housekeeping_begin_dropped_half_way_leaves_no_transaction_open_in_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let direct = testing::temp_url_on(Backend::Postgres, &dir);
        let mut url = reqwest::Url::parse(&direct).unwrap();
        let server = (url.host_str().unwrap().to_owned(), url.port().unwrap());
        let server = tokio::net::lookup_host(server)
            .await
            .unwrap()
            .next()
            .unwrap();
        let slow = Arc::new(AtomicBool::new(false));
        let proxy = delaying_proxy(server, Arc::clone(&slow), Duration::from_millis(300)).await;
        url.set_port(Some(proxy.port())).unwrap();
        let store = Store::open(url.as_str()).await.unwrap();
        let mut watcher = <sqlx_postgres::PgConnection as sqlx::Connection>::connect(&direct)
            .await
            .unwrap();
        let mut open_transactions = async move || -> i64 {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            )
            .fetch_one(&mut watcher)
            .await
            .unwrap()
        };
        let mut housekeeping = store.housekeeping().await.unwrap();
        // Dropped once its BEGIN went out, before the answer came back: the session is
        // left in a transaction.
        begin_dropped_half_way(&mut housekeeping, &slow).await;
        testing::eventually("the BEGIN never ran", async || {
            open_transactions().await == 1
        })
        .await;
        // The housekeeping goes on, in a transaction of its own.
        housekeeping.begin().await.unwrap().commit().await.unwrap();
        testing::eventually("the transaction left open was not ended", async || {
            open_transactions().await == 0
        })
        .await;
        // Dropped so again, and then given up: the connection is closed, not pooled
        // with the transaction open.
        begin_dropped_half_way(&mut housekeeping, &slow).await;
        testing::eventually("the BEGIN never ran", async || {
            open_transactions().await == 1
        })
        .await;
        drop(housekeeping);
        testing::eventually(
            "a connection went back to the pool inside a transaction",
            async || open_transactions().await == 0,
        )
        .await;
        store.close().await;
    }

    #[tokio::test]
    async fn writes_begun_counts_engine_transactions_and_not_housekeeping() {
        let (store, _dir) = testing::temp_store().await;
        let at_start = store.writes_begun();
        store.begin_write().await.unwrap().rollback().await.unwrap();
        store.begin_write().await.unwrap().commit().await.unwrap();
        assert_eq!(store.writes_begun(), at_start + 2);
        let mut housekeeping = store.housekeeping().await.unwrap();
        housekeeping.begin().await.unwrap().commit().await.unwrap();
        housekeeping.finish().await.unwrap();
        assert_eq!(
            store.writes_begun(),
            at_start + 2,
            "housekeeping must not read as the engine writing"
        );
    }

    #[tokio::test]
    async fn housekeeping_holds_the_write_turn_and_only_its_own_commits_skip_the_flush() {
        let (store, _dir) = testing::temp_store().await;
        let mut housekeeping = store.housekeeping().await.unwrap();
        assert_eq!(
            store.write.num_idle(),
            0,
            "the engine's writes queue for the turn, not in SQLite's busy handler"
        );
        let sync: i64 = on!(housekeeping, |c| sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(c)
            .await)
        .unwrap();
        assert_eq!(sync, 1, "NORMAL");
        let mut tx = housekeeping.begin().await.unwrap();
        on!(tx, |c| sqlx::query(
            "INSERT INTO retention_horizons (kind, kept_from, pruned_rows, updated_at)
             VALUES ('samples', 1, 1, 1)",
        )
        .execute(c)
        .await
        .map(Done::from))
        .unwrap();
        tx.commit().await.unwrap();
        drop(housekeeping);

        let mut tx = tokio::time::timeout(Duration::from_secs(10), store.begin_write())
            .await
            .expect("the turn is given back")
            .unwrap();
        let sync: i64 = on!(tx, |c| sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(c)
            .await)
        .unwrap();
        assert_eq!(sync, 2, "the engine's commits stay FULL");
        let pruned: i64 = on!(tx, |c| sqlx::query_scalar(
            "SELECT pruned_rows FROM retention_horizons"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(
            pruned, 1,
            "the engine writes on what housekeeping committed"
        );
        tx.rollback().await.unwrap();
    }

    #[tokio::test]
    async fn housekeeping_waits_for_its_own_connection_without_holding_the_write_turn() {
        let (store, _dir) = testing::temp_store().await;
        // The housekeeping connection still busy, as while the last step checkpoints.
        let busy = store.housekeeping.acquire().await.unwrap();
        let next = store.housekeeping();
        tokio::pin!(next);
        assert!(futures::poll!(next.as_mut()).is_pending());

        let tx = tokio::time::timeout(Duration::from_secs(10), store.begin_write())
            .await
            .expect("an engine write goes ahead while housekeeping waits for its connection")
            .unwrap();
        tx.rollback().await.unwrap();
        drop(busy);
        let housekeeping = tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("housekeeping gets its connection back")
            .unwrap();
        assert_eq!(store.write.num_idle(), 0, "and then holds the write turn");
        housekeeping.finish().await.unwrap();
    }

    #[tokio::test]
    async fn housekeeping_checkpoints_its_pages_only_after_giving_the_write_turn_back() {
        let (store, dir) = testing::temp_store().await;
        // The page count in the database file's own header (bytes 28..32): what the
        // checkpoints have written back, whatever the log holds beyond.
        let file_pages = || {
            let header = std::fs::read(dir.path().join("wfmd.db")).unwrap();
            u32::from_be_bytes(header[28..32].try_into().unwrap())
        };
        let mut housekeeping = store.housekeeping().await.unwrap();
        let mut tx = housekeeping.begin().await.unwrap();
        // About 1,500 pages: past the 1,000 at which SQLite checkpoints by default.
        testing::fill_pages(&mut tx, 1500).await;
        tx.commit().await.unwrap();
        let pages: i64 = on!(housekeeping, |c| sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(c)
            .await)
        .unwrap();
        assert!(pages > 1_500, "{pages} pages");
        assert!(
            i64::from(file_pages()) < pages,
            "its commit left the checkpoint to finish, outside the write turn"
        );

        let wrote_back = housekeeping.finish().await.unwrap();
        assert_eq!(
            i64::from(file_pages()),
            pages,
            "finish wrote the log back into the file"
        );
        assert!(
            wrote_back.frames >= 1_500,
            "and says how many log frames it copied: {wrote_back:?}"
        );
        let tx = tokio::time::timeout(Duration::from_secs(10), store.begin_write())
            .await
            .expect("the turn is given back")
            .unwrap();
        tx.rollback().await.unwrap();
    }

    #[test]
    fn milliseconds_round_trip() {
        let at = Utc.with_ymd_and_hms(2026, 11, 20, 14, 31, 55).unwrap();
        assert_eq!(from_ms(to_ms(at)), at);
    }
}
