//! How few SQLite connections a tenant keeps open at rest, so that hundreds of tenants
//! fit in one process (#56): sqlx runs every SQLite connection on a thread of its own,
//! with its own page cache, prepared statements and parsed schema.
//!
//! At rest a tenant keeps its writer and two readers. Its pollers write several times
//! a minute and read every second or two, two of them at once every other second
//! (their timers meet), so reopening a reader or the writer each time would cost more
//! CPU than keeping them costs memory: with one reader kept, 50 tenants at rest opened
//! 14 connections a second. Further readers open for a burst of concurrent reads and
//! close as they come back while two already wait. An idle timeout cannot do that: the
//! pool hands out its idle connections oldest first, so a steady trickle of reads
//! keeps every reader it ever opened in use now and then, never idle for long. The
//! housekeeping writer and the exports' pool, used now and then, close once idle for
//! [`RARELY_USED_IDLE`].
//!
//! A reader's page cache is small ([`READER_CACHE_PAGES`]). SQLite sets aside the first
//! pages of a connection's cache in one block when it first reads, and keeps that
//! block as long as the connection, so a reader at rest holds 20 pages (about 86 KB)
//! with the default size. A reader gains little from more: in WAL mode its cache is
//! emptied whenever another connection has committed since its last read, which the
//! writer does several times a minute at rest, and a page it misses is read again
//! from the file system's cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::sqlite::SqlitePoolOptions;

/// How many readers wait idle between reads.
const IDLE_READERS: u32 = 2;

/// The page cache of a reader, in pages (`PRAGMA cache_size`; SQLite's default is
/// 2 MB's worth). Pages a statement holds are kept beyond it, so a read of many pages
/// still works, only reading again what it drops.
pub(super) const READER_CACHE_PAGES: u32 = 8;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Readers keep a small page cache; the writer keeps SQLite's default.
    #[tokio::test]
    async fn readers_keep_a_small_page_cache_and_the_writer_the_default() {
        let (store, _dir) = crate::store::testing::temp_store().await;
        let pages: i64 = crate::on!(store.reader(), |c| sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(c)
            .await)
        .unwrap();
        assert_eq!(pages, i64::from(READER_CACHE_PAGES));
        let mut tx = store.begin_write().await.unwrap();
        let writer: i64 = crate::on!(tx, |c| sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(c)
            .await)
        .unwrap();
        assert_eq!(writer, -2000, "SQLite's default: 2,000 KiB");
        tx.rollback().await.unwrap();
    }

    /// A burst of reads opens readers beside each other; once it is over two stay, and
    /// two stay after reads one after another.
    #[tokio::test]
    async fn a_burst_of_reads_leaves_two_readers_open() {
        let dir = tempfile::tempdir().unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
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
