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

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

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
    /// Opens a session with `options` and takes a lock of its own.
    pub async fn open(options: &PgConnectOptions, instance: &str) -> Result<Liveness, sqlx::Error> {
        let options = options
            .clone()
            .application_name(&format!("wfmd {instance} liveness"));
        let mut conn = PgConnection::connect_with(&options).await?;
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
