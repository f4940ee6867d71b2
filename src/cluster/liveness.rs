//! This instance's liveness session: one connection to the database, kept open for as
//! long as the instance leads anything, holding a session advisory lock that names it.
//! PostgreSQL drops the lock the moment the session ends (the process killed, crashed,
//! out of memory: the kernel closes its socket), so the other instances see at their
//! next look that the instance is gone and take its tenants at once, instead of when
//! its leases expire (`wfmd_cluster.instance_sessions`). Only when the session outlives
//! the process, the host gone or the network cut, does the server hold it until TCP
//! gives up on it, and the leases' expiry is the bound again.
//!
//! The instance's own look at the leases runs on this connection too, so when it is
//! lost the instance learns at its next look that the others may take its tenants, and
//! stops leading them at once (see [`super::leadership`]).
//!
//! The lock's key is the pair of [`NAMESPACE`] and a number each session takes afresh
//! from a sequence of the shared schema, so no two sessions ever hold the same one.

use sqlx::Connection;
use sqlx_postgres::{PgConnectOptions, PgConnection};

/// The first half of every liveness lock's key (`pg_advisory_lock(int, int)`), "wfmd"
/// in ASCII; `wfmd_cluster.instance_sessions` looks for it.
pub const NAMESPACE: i32 = 0x7766_6d64;

/// An open liveness session.
#[derive(Debug)]
pub struct Liveness {
    conn: PgConnection,
    key: i32,
}

impl Liveness {
    /// Opens a session with `options`, makes or migrates the shared schema on it, and
    /// takes a lock of its own.
    pub async fn open(options: &PgConnectOptions, instance: &str) -> Result<Liveness, sqlx::Error> {
        // Its looks commit without waiting for the disk: a look must come back within
        // a few seconds or the instance lets every lease go, and a flush can stall for
        // longer while the server writes much (an instance starting a thousand tenants).
        // Losing a look's changes with the server itself is safe: a renewal lost makes
        // a lease end sooner, which the tenant's own term fences (a term starts in the
        // tenant's schema, flushed, which flushes every look before it); a lease taken
        // or given up and lost is as if the look had not happened.
        let options = options
            .clone()
            .application_name(&format!("wfmd {instance} liveness"))
            .options([("synchronous_commit", "off")]);
        let mut conn = PgConnection::connect_with(&options).await?;
        // On this session rather than on a connection of its own, which the instance
        // held beside its pool at every (re)open: the lock's key comes from the shared
        // schema's sequence, so the schema comes first. Unflushed like the looks, which
        // is as safe: the first term the instance starts is flushed, and flushes the
        // migration before it; a migration lost with the server is made again.
        super::schema::migrate(&mut conn)
            .await
            .map_err(|error| sqlx::Error::Migrate(Box::new(error)))?;
        let key: i32 = sqlx::query_scalar("SELECT nextval('wfmd_cluster.liveness_keys')::integer")
            .fetch_one(&mut conn)
            .await?;
        // Free by construction, unless the sequence went round while a session held
        // its number for all that time: then the next open takes another.
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(NAMESPACE)
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if !held {
            return Err(sqlx::Error::Protocol(format!(
                "liveness lock {key} is held by another session"
            )));
        }
        Ok(Liveness { conn, key })
    }

    /// The number naming this session's lock (`instances.liveness_key`).
    pub fn key(&self) -> i32 {
        self.key
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Ends the session, which frees the lock.
    pub async fn close(self) {
        if let Err(error) = self.conn.close().await {
            tracing::debug!(%error, "the liveness session did not close cleanly");
        }
    }
}

/// Whether `error` says the session itself is lost (rather than one statement refused):
/// the connection broke, or the server ended it.
pub fn lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // connection_exception, admin_shutdown, crash_shutdown, cannot_connect_now,
            // idle_session_timeout
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "57P05")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::store::Backend;
    use crate::store::testing::{eventually, temp_url_on};

    /// Notes `instance` as holding the liveness lock `key`, as its looks do.
    async fn note(conn: &mut PgConnection, instance: &str, key: i32) {
        sqlx::query(
            "INSERT INTO wfmd_cluster.instances
                 (instance_id, started_at, last_seen, liveness_key, serving)
             VALUES ($1, 0, 0, $2, 1)
             ON CONFLICT (instance_id) DO UPDATE SET liveness_key = excluded.liveness_key",
        )
        .bind(instance)
        .bind(key)
        .execute(conn)
        .await
        .unwrap();
    }

    async fn gone(conn: &mut PgConnection, instance: &str) -> bool {
        sqlx::query_scalar("SELECT gone FROM wfmd_cluster.instance_sessions WHERE instance_id = $1")
            .bind(instance)
            .fetch_one(conn)
            .await
            .unwrap()
    }

    /// `synchronous_commit` on `conn`, and where its value comes from.
    async fn flushing(conn: &mut PgConnection) -> (String, String) {
        sqlx::query_as("SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_session_on_a_fresh_database_makes_the_shared_schema_itself() {
        let dir = tempfile::tempdir().unwrap();
        let options = PgConnectOptions::from_str(&temp_url_on(Backend::Postgres, &dir)).unwrap();
        let mut live = Liveness::open(&options, "a").await.unwrap();
        let made: bool =
            sqlx::query_scalar("SELECT to_regclass('wfmd_cluster.leases') IS NOT NULL")
                .fetch_one(live.conn())
                .await
                .unwrap();
        assert!(made, "the shared schema is made on the session");
        assert!(live.key() > 0, "a key from the schema's sequence");
        live.close().await;
    }

    #[tokio::test]
    async fn the_looks_commit_without_waiting_for_the_disk_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let options = PgConnectOptions::from_str(&temp_url_on(Backend::Postgres, &dir)).unwrap();
        let mut other = PgConnection::connect_with(&options).await.unwrap();
        crate::cluster::schema::migrate(&mut other).await.unwrap();
        let mut live = Liveness::open(&options, "a").await.unwrap();
        // The liveness session sets it for itself (the tests' server has it off for
        // every session, so where the value comes from is what tells).
        assert_eq!(flushing(live.conn()).await, ("off".into(), "client".into()));
        let (_, elsewhere) = flushing(&mut other).await;
        assert_ne!(elsewhere, "client", "another connection keeps the server's");
        live.close().await;
    }

    #[tokio::test]
    async fn an_instance_is_gone_to_every_other_session_once_its_session_ends_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let options = PgConnectOptions::from_str(&temp_url_on(Backend::Postgres, &dir)).unwrap();
        let mut other = PgConnection::connect_with(&options).await.unwrap();
        crate::cluster::schema::migrate(&mut other).await.unwrap();

        let a = Liveness::open(&options, "a").await.unwrap();
        let mut b = Liveness::open(&options, "b").await.unwrap();
        note(&mut other, "a", a.key()).await;
        note(&mut other, "b", b.key()).await;
        assert!(!gone(&mut other, "a").await, "a's session is open");
        assert!(
            !gone(b.conn(), "a").await,
            "a's session is open, seen from b's"
        );

        // Another session, in a transaction it keeps open, sees a alive, and then gone
        // once a's session ends: what it took to ask holds nothing in a's way.
        let mut tx = other.begin().await.unwrap();
        assert!(!gone(&mut tx, "a").await);
        a.close().await;
        // The server lets go of a's lock as its backend exits, just after the close.
        eventually("a's session ended", async || gone(&mut tx, "a").await).await;
        assert!(
            gone(b.conn(), "a").await,
            "a's session ended, seen from b's"
        );

        // a comes back with a session of its own, while that transaction still holds
        // what it took of a's former lock: a is alive again, to everyone.
        let a = Liveness::open(&options, "a").await.unwrap();
        note(b.conn(), "a", a.key()).await;
        assert!(!gone(&mut tx, "a").await, "a's new session is open");
        assert!(!gone(b.conn(), "a").await);
        tx.commit().await.unwrap();
        assert!(!gone(&mut other, "b").await, "b never left");
        a.close().await;
        b.close().await;
    }
}
