//! How few SQLite connections a tenant keeps open at rest, so that hundreds of tenants
//! fit in one process (#56): sqlx runs every SQLite connection on a thread of its own,
//! with its own page cache, prepared statements and parsed schema.
//!
//! At rest a tenant keeps its writer and one reader. Its pollers write several times a
//! minute and read every second or two, so reopening the writer or the one reader each
//! time would cost more CPU than keeping them costs memory. Further readers open for a
//! burst of concurrent reads (two pollers whose timers meet) and close as they come
//! back while one already waits. An idle timeout cannot do that: the pool hands out
//! its idle connections oldest first, so a steady trickle of reads keeps every reader
//! it ever opened in use now and then, never idle for long. The housekeeping writer and
//! the exports' pool, used now and then, close once idle for [`RARELY_USED_IDLE`].
//! A reader keeps none of its statements prepared ([`READER_STATEMENTS`]).
//!
//! The writer's and the readers' page caches are small ([`CACHE_PAGES`]). A cache keeps
//! every page a connection has read, up to its size (SQLite's default: 2 MB's worth),
//! for as long as the connection: a tenant's writer at rest held about 90 pages
//! (0.39 MB), read by its start and its pollers' writes and not needed again soon. A
//! connection gains little from more: in WAL mode a reader's cache is emptied whenever
//! another connection has committed since its last read, which the writer does several
//! times a minute at rest; a page a connection misses is read again from the file
//! system's cache, microseconds against the flush of every commit. The size bounds the
//! pages a cache keeps clean, not those a transaction changes: the writer keeps every
//! page it changes in memory until the commit, up to [`SPILL_KIB`] as with SQLite's
//! default cache. Only the writer needs that bound set, being the one connection with
//! a small cache that writes.
//!
//! SQLite's lookaside (a block of small-allocation slots each connection sets aside at
//! open, 48 KB) is off in the daemon ([`sqlite_without_lookaside`]): a tenant's three
//! connections of then held 0.14 MB in it, and the transitions bench showed no loss
//! without it.
//! docs/tenants-and-instances.md has the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx_sqlite::SqlitePoolOptions;

/// How many readers wait idle between reads.
const IDLE_READERS: u32 = 1;

/// How many statements a reader keeps prepared: none. A reader at rest runs a few
/// reads a minute, and what it kept was mostly what a tenant's start had read once
/// (47 to 92 KB a reader); preparing a read again costs microseconds against the
/// second or more between them. The writer keeps its own (sqlx's default, 100): its
/// writes come several a minute, always the same few.
pub(super) const READER_STATEMENTS: usize = 0;

/// The page cache of the writer and of a reader, in pages (`PRAGMA cache_size`;
/// SQLite's default is 2 MB's worth). Pages a statement holds are kept beyond it, so a
/// read of many pages still works, only reading again what it drops.
pub(super) const CACHE_PAGES: u32 = 8;

/// How much a write transaction may change, in KiB, before SQLite writes some of its
/// pages to the WAL ahead of its commit (`PRAGMA cache_spill`): SQLite's default cache
/// size, where the writer spilled before its cache was made small. Without it a
/// transaction that changes more than [`CACHE_PAGES`] pages would spill.
pub(super) const SPILL_KIB: u32 = 2000;

/// How long a connection of the housekeeping writer or of the exports stays open
/// unused.
pub(super) const RARELY_USED_IDLE: Duration = Duration::from_secs(30);

/// The read pool: up to `max` readers, of which at most [`IDLE_READERS`] stay open
/// idle.
pub(super) fn readers(max: u32) -> SqlitePoolOptions {
    // The readers in the pool's idle queue. Counted by the hooks only, so nothing may
    // take a connection out of that queue without them: no idle timeout or lifetime
    // (sqlx's reaper would close one unseen), no ping before handing one out (a failed
    // ping closes it before `before_acquire` is asked).
    let idle = Arc::new(AtomicU32::new(0));
    let taken = Arc::clone(&idle);
    SqlitePoolOptions::new()
        .max_connections(max)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .before_acquire(move |_, _| {
            let _ = taken.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
            Box::pin(async { Ok(true) })
        })
        .after_release(move |conn, _| {
            let keep = !sqlx::Connection::is_in_transaction(conn)
                && idle
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < IDLE_READERS).then_some(n + 1)
                    })
                    .is_ok();
            Box::pin(async move { Ok(keep) })
        })
}

/// Turns SQLite's lookaside off for every connection the process opens after it. Call it
/// before any thread starts and before SQLite is used: SQLite reads the setting when
/// it initialises and may not be configured while another thread uses it. Called
/// later, it changes nothing.
pub fn sqlite_without_lookaside() {
    // SAFETY: `sqlite3_config` takes the option's arguments as C ints; the caller
    // guarantees no other thread uses SQLite meanwhile. Once SQLite has initialised it
    // refuses (SQLITE_MISUSE) without changing anything, which leaves the default.
    unsafe {
        libsqlite3_sys::sqlite3_config(
            libsqlite3_sys::SQLITE_CONFIG_LOOKASIDE,
            0 as std::ffi::c_int,
            0 as std::ffi::c_int,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer and the readers keep a small page cache.
    #[tokio::test]
    async fn the_writer_and_the_readers_keep_a_small_page_cache() {
        let (store, _dir) = crate::store::testing::temp_store().await;
        let pages: i64 = crate::on!(store.reader(), |c| sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(c)
            .await)
        .unwrap();
        assert_eq!(pages, i64::from(CACHE_PAGES));
        let mut tx = store.begin_write().await.unwrap();
        let writer: i64 = crate::on!(tx, |c| sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(c)
            .await)
        .unwrap();
        assert_eq!(writer, i64::from(CACHE_PAGES));
        tx.rollback().await.unwrap();
    }

    /// A start's migrations leave none of their statements prepared on the writer, which
    /// keeps what it prepares for as long as it is open.
    #[tokio::test]
    async fn the_writer_keeps_none_of_the_migrations_statements() {
        let (store, _dir) = crate::store::testing::temp_store().await;
        let crate::store::Db::Sqlite(pool) = store.writer().db() else {
            unreachable!("a temporary store is SQLite");
        };
        let mut conn = pool.acquire().await.unwrap();
        let ours = "SELECT COUNT(*) FROM audit_log";
        sqlx::query(ours).execute(&mut *conn).await.unwrap();
        let kept = prepared(&mut conn).await;
        assert!(kept.iter().any(|sql| sql == ours), "{kept:?}");
        let of_migrations: Vec<_> = kept
            .iter()
            .filter(|sql| {
                sql.contains("FROM _sqlx_migrations")
                    || sql.contains("INTO _sqlx_migrations")
                    || sql.contains("UPDATE _sqlx_migrations")
                    || sql.contains("CREATE TABLE")
                    || sql.contains("ALTER TABLE")
            })
            .collect();
        assert!(of_migrations.is_empty(), "{of_migrations:?}");
    }

    /// A reader lets go of each statement once the next one runs: it keeps none of the
    /// reads it has made.
    #[tokio::test]
    async fn a_reader_keeps_no_statement_prepared() {
        let (store, _dir) = crate::store::testing::temp_store().await;
        let crate::store::Db::Sqlite(pool) = store.reader().db() else {
            unreachable!("a temporary store is SQLite");
        };
        let mut conn = pool.acquire().await.unwrap();
        let reads = [
            "SELECT COUNT(*) FROM audit_log",
            "SELECT COUNT(*) FROM outbox_events",
            "SELECT 1",
        ];
        for read in reads {
            sqlx::query(read).execute(&mut *conn).await.unwrap();
        }
        let kept = prepared(&mut conn).await;
        assert!(
            !kept.iter().any(|sql| reads[..2].contains(&sql.as_str())),
            "{kept:?}"
        );
        assert!(kept.len() <= 1, "at most the last read: {kept:?}");
    }

    /// The SQL of each statement `conn` has prepared.
    async fn prepared(conn: &mut sqlx_sqlite::SqliteConnection) -> Vec<String> {
        use libsqlite3_sys::{sqlite3_next_stmt, sqlite3_sql};
        let mut handle = conn.lock_handle().await.unwrap();
        let db = handle.as_raw_handle().as_ptr();
        let mut texts = Vec::new();
        // SAFETY: the connection is locked for this call, so no other thread uses its
        // statements; each `sqlite3_sql` is a NUL-terminated string SQLite owns for the
        // statement's life, copied before the next step.
        unsafe {
            let mut statement = sqlite3_next_stmt(db, std::ptr::null_mut());
            while !statement.is_null() {
                let sql = std::ffi::CStr::from_ptr(sqlite3_sql(statement));
                texts.push(sql.to_string_lossy().into_owned());
                statement = sqlite3_next_stmt(db, statement);
            }
        }
        texts
    }

    /// A write that changes far more pages than the writer's cache holds writes none of
    /// them to the WAL before its commit, as with SQLite's default cache.
    #[tokio::test]
    async fn a_large_write_keeps_its_pages_in_memory_until_its_commit() {
        let (store, dir) = crate::store::testing::temp_store().await;
        let wal = dir.path().join("wfmd.db-wal");
        let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        let (busy, _, _): (i64, i64, i64) = crate::on!(store.writer(), |c| sqlx::query_as(
            "PRAGMA wal_checkpoint(TRUNCATE)"
        )
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(busy, 0, "the checkpoint must empty the WAL");
        assert_eq!(wal_size(), 0);

        // About 250 pages of 4 KB: 30 times the writer's cache, half SQLite's default.
        let body = "x".repeat(1 << 20);
        let mut tx = store.begin_write().await.unwrap();
        crate::on!(tx, |c| sqlx::query(
            "INSERT INTO live_shared (name, body, published_at) VALUES ('board', ?, 0)"
        )
        .bind(&body)
        .execute(c)
        .await
        .map(drop))
        .unwrap();
        assert_eq!(wal_size(), 0, "no page may reach the WAL before the commit");
        tx.commit().await.unwrap();
        assert!(
            wal_size() > 1 << 20,
            "the commit writes them: {} bytes",
            wal_size()
        );
    }

    /// A burst of reads opens readers beside each other; once it is over one stays, and
    /// one stays after reads one after another.
    #[tokio::test]
    async fn a_burst_of_reads_leaves_one_reader_open() {
        let dir = tempfile::tempdir().unwrap();
        let options = sqlx_sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("r.db"))
            .create_if_missing(true);
        let pool = readers(4).connect_lazy_with(options);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.acquire().await.unwrap());
        }
        assert_eq!(pool.size(), 4);
        drop(held);
        // Connections go back to the pool (or are closed) in tasks of their own.
        // The assertions after it judge what is open, all given back or not.
        let settled = async || {
            let _ = crate::store::testing::holds_within(Duration::from_secs(10), async || {
                pool.size() == pool.num_idle() as u32
            })
            .await;
        };
        settled().await;
        assert_eq!(
            pool.size(),
            IDLE_READERS,
            "readers left open after the burst"
        );

        for _ in 0..20 {
            let n: i64 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
        settled().await;
        assert_eq!(pool.size(), IDLE_READERS);
    }
}
