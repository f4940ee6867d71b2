//! The two database backends behind one seam: SQLite (one file, the default) and
//! PostgreSQL.
//!
//! Both run the same SQL wherever their dialects agree (`$1` placeholders, `ON
//! CONFLICT`, `RETURNING`, `COUNT(*) FILTER (WHERE …)`), and a statement that must differ
//! carries its two texts side by side. [`on!`](crate::store::on) runs one block of query
//! code on whichever backend a pool or a connection belongs to. The block is compiled
//! once per backend, so each decodes with its own driver's types. sqlx's `Any` driver
//! would instead decode both through a common set of types that SQLite's dynamically
//! typed values do not always fit (an integer where a float is asked for), and it would
//! hide the SQLite handle the housekeeping connection needs.

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection, Transaction};

/// One value of either backend; [`on!`](crate::store::on) takes it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db<S, P> {
    Sqlite(S),
    Postgres(P),
}

/// Which backend a store, pool or connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend's name, as users know it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    /// The backend a `database.url` names (`postgres://` or `postgresql://`; anything
    /// else is SQLite's, which reports a bad URL itself).
    pub fn of_url(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

impl<S, P> Db<S, P> {
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }
}

/// A pool of connections on either backend; cheap to clone.
#[derive(Debug, Clone)]
pub struct Pool(pub(super) Db<SqlitePool, PgPool>);

impl Pool {
    /// The pool of its backend, for [`on!`](crate::store::on).
    pub fn db(&self) -> Db<&SqlitePool, &PgPool> {
        match &self.0 {
            Db::Sqlite(pool) => Db::Sqlite(pool),
            Db::Postgres(pool) => Db::Postgres(pool),
        }
    }

    pub fn backend(&self) -> Backend {
        self.0.backend()
    }

    /// One connection of the pool, held until it drops.
    pub async fn acquire(&self) -> Result<PoolConn, sqlx::Error> {
        Ok(PoolConn(match &self.0 {
            Db::Sqlite(pool) => Db::Sqlite(pool.acquire().await?),
            Db::Postgres(pool) => Db::Postgres(pool.acquire().await?),
        }))
    }

    /// A transaction on one of the pool's connections (reads that must see one
    /// snapshot).
    pub async fn begin(&self) -> Result<Tx<'static>, sqlx::Error> {
        Ok(Tx(match &self.0 {
            Db::Sqlite(pool) => Db::Sqlite(pool.begin().await?),
            Db::Postgres(pool) => Db::Postgres(pool.begin().await?),
        }))
    }

    /// Idle connections right now.
    pub fn num_idle(&self) -> usize {
        match &self.0 {
            Db::Sqlite(pool) => pool.num_idle(),
            Db::Postgres(pool) => pool.num_idle(),
        }
    }

    /// Closes the pool, waiting for its connections to come back.
    pub async fn close(&self) {
        match &self.0 {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// A connection taken from a [`Pool`].
pub struct PoolConn(Db<PoolConnection<Sqlite>, PoolConnection<Postgres>>);

/// A transaction on either backend; rolled back when dropped uncommitted.
pub struct Tx<'c>(pub(super) Db<Transaction<'c, Sqlite>, Transaction<'c, Postgres>>);

impl Tx<'_> {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.0 {
            Db::Sqlite(tx) => tx.commit().await,
            Db::Postgres(tx) => tx.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.0 {
            Db::Sqlite(tx) => tx.rollback().await,
            Db::Postgres(tx) => tx.rollback().await,
        }
    }
}

/// A connection of either backend, borrowed for one statement at a time: what the
/// store's functions take, so a caller can hand them a transaction, a pooled connection
/// or one of its own alike.
pub trait AsConn: Send {
    /// The connection of its backend, for [`on!`](crate::store::on).
    fn db(&mut self) -> Db<&mut SqliteConnection, &mut PgConnection>;

    fn backend(&mut self) -> Backend {
        self.db().backend()
    }
}

impl AsConn for SqliteConnection {
    fn db(&mut self) -> Db<&mut SqliteConnection, &mut PgConnection> {
        Db::Sqlite(self)
    }
}

impl AsConn for PgConnection {
    fn db(&mut self) -> Db<&mut SqliteConnection, &mut PgConnection> {
        Db::Postgres(self)
    }
}

impl AsConn for PoolConn {
    fn db(&mut self) -> Db<&mut SqliteConnection, &mut PgConnection> {
        match &mut self.0 {
            Db::Sqlite(conn) => Db::Sqlite(&mut **conn),
            Db::Postgres(conn) => Db::Postgres(&mut **conn),
        }
    }
}

impl AsConn for Tx<'_> {
    fn db(&mut self) -> Db<&mut SqliteConnection, &mut PgConnection> {
        match &mut self.0 {
            Db::Sqlite(tx) => Db::Sqlite(&mut **tx),
            Db::Postgres(tx) => Db::Postgres(&mut **tx),
        }
    }
}

impl AsConn for Db<&mut SqliteConnection, &mut PgConnection> {
    fn db(&mut self) -> Db<&mut SqliteConnection, &mut PgConnection> {
        match self {
            Db::Sqlite(conn) => Db::Sqlite(conn),
            Db::Postgres(conn) => Db::Postgres(conn),
        }
    }
}

/// Runs query code on the backend of a [`Pool`](crate::store::Pool) or of anything
/// [`AsConn`](crate::store::AsConn):
/// `on!(pool, |c| sqlx::query("…").fetch_all(c).await)`. The code is compiled once per
/// backend, with `c` the backend's pool or connection. (It is written as a closure so
/// rustfmt formats it; it is not one, and may `.await`.)
///
/// With the statement's two texts, `on!(pool, (SQLITE, POSTGRES), |c, sql| …)` runs the
/// code with `sql` bound to the text of its backend, for the statements whose dialects
/// differ.
#[macro_export]
macro_rules! on {
    ($db:expr, |$c:ident| $body:expr) => {{
        #[allow(unused_imports)]
        use $crate::store::AsConn as _;
        match $db.db() {
            $crate::store::Db::Sqlite($c) => $body,
            $crate::store::Db::Postgres($c) => $body,
        }
    }};
    ($db:expr, ($sqlite:expr, $postgres:expr $(,)?), |$c:ident, $sql:ident| $body:expr) => {{
        #[allow(unused_imports)]
        use $crate::store::AsConn as _;
        match $db.db() {
            $crate::store::Db::Sqlite($c) => {
                let $sql: &'static str = $sqlite;
                $body
            }
            $crate::store::Db::Postgres($c) => {
                let $sql: &'static str = $postgres;
                $body
            }
        }
    }};
}

pub use crate::on;

/// What a statement run with `execute` did, on either backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Done {
    rows_affected: u64,
}

impl Done {
    pub fn rows_affected(&self) -> u64 {
        self.rows_affected
    }
}

impl From<sqlx::sqlite::SqliteQueryResult> for Done {
    fn from(result: sqlx::sqlite::SqliteQueryResult) -> Done {
        Done {
            rows_affected: result.rows_affected(),
        }
    }
}

impl From<sqlx::postgres::PgQueryResult> for Done {
    fn from(result: sqlx::postgres::PgQueryResult) -> Done {
        Done {
            rows_affected: result.rows_affected(),
        }
    }
}
