//! The two database backends behind one seam: SQLite (one file, the default) and
//! PostgreSQL.
//!
//! Both run the same SQL wherever their dialects agree (`$1` placeholders, `ON
//! CONFLICT`, `RETURNING`, `COUNT(*) FILTER (WHERE …)`), and a statement that must differ
//! carries its two texts side by side. [`on!`](crate::store::on) runs one block of query
//! code on whichever backend a pool or a connection belongs to;
//! [`execute!`](crate::store::execute), [`fetch!`](crate::store::fetch) and
//! [`fetch_scalar!`](crate::store::fetch_scalar) are its short forms for the usual block,
//! one statement with its arguments bound in order. The block is compiled
//! once per backend, so each decodes with its own driver's types. sqlx's `Any` driver
//! would instead decode both through a common set of types that SQLite's dynamically
//! typed values do not always fit (an integer where a float is asked for), and it would
//! hide the SQLite handle the housekeeping connection needs.

use sqlx::Transaction;
use sqlx::pool::PoolConnection;
use sqlx_postgres::{PgConnection, Postgres};
use sqlx_sqlite::{Sqlite, SqliteConnection, SqlitePool};

use super::shared::{Checkout, Share, Turns};

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

/// A pool of connections on either backend; cheap to clone. On PostgreSQL it is a
/// tenant's share of its instance's pool (see [`super::shared`]).
#[derive(Debug, Clone)]
pub struct Pool(pub(super) Db<SqlitePool, Share>);

impl Pool {
    /// The pool of its backend, for [`on!`](crate::store::on).
    pub fn db(&self) -> Db<&SqlitePool, &Share> {
        match &self.0 {
            Db::Sqlite(pool) => Db::Sqlite(pool),
            Db::Postgres(pool) => Db::Postgres(pool),
        }
    }

    pub fn backend(&self) -> Backend {
        self.0.backend()
    }

    /// The same pool for work that holds up to `connections` of its connections at
    /// once (two result streams read together, say): on PostgreSQL it takes its turns
    /// for all of them at its first checkout, so two such works never each hold one
    /// connection waiting for another (see `shared::Share::grouped`).
    pub fn grouped(&self, connections: u32) -> Pool {
        match &self.0 {
            Db::Sqlite(pool) => Pool(Db::Sqlite(pool.clone())),
            Db::Postgres(share) => Pool(Db::Postgres(share.grouped(connections))),
        }
    }

    /// One connection of the pool, held until it drops.
    pub async fn acquire(&self) -> Result<PoolConn, sqlx::Error> {
        Ok(PoolConn(match &self.0 {
            Db::Sqlite(pool) => Db::Sqlite(pool.acquire().await?),
            Db::Postgres(share) => Db::Postgres(share.acquire().await?),
        }))
    }

    /// A transaction on one of the pool's connections (reads that must see one
    /// snapshot).
    pub async fn begin(&self) -> Result<Tx<'static>, sqlx::Error> {
        Ok(match &self.0 {
            Db::Sqlite(pool) => Tx(Db::Sqlite(pool.begin().await?), None),
            Db::Postgres(share) => {
                let (tx, turns) = share.begin().await?;
                Tx(Db::Postgres(tx), Some(turns))
            }
        })
    }

    /// Idle connections right now (on PostgreSQL, of the instance's pool).
    #[cfg(test)]
    pub(super) fn num_idle(&self) -> usize {
        match &self.0 {
            Db::Sqlite(pool) => pool.num_idle(),
            Db::Postgres(share) => share.pool().connections().idle as usize,
        }
    }

    /// A SQLite pool's connections now; `None` on PostgreSQL, whose pool is the
    /// instance's (see [`super::connections_of`]).
    pub(super) fn sqlite_connections(&self) -> Option<super::ConnectionCounts> {
        let Db::Sqlite(pool) = &self.0 else {
            return None;
        };
        Some(super::ConnectionCounts::of_pool(
            pool.size(),
            pool.num_idle(),
            0,
        ))
    }

    /// Closes a SQLite pool, waiting for its connections to come back (a PostgreSQL
    /// store closes its shares: [`super::Store::close`]).
    pub async fn close(&self) {
        if let Db::Sqlite(pool) = &self.0 {
            pool.close().await;
        }
    }
}

/// A connection taken from a [`Pool`].
pub struct PoolConn(Db<PoolConnection<Sqlite>, Checkout>);

impl PoolConn {
    /// Closes the connection when it drops, instead of giving it back to its pool: for
    /// one left in a state the next borrower must not inherit.
    pub(crate) fn close_on_drop(&mut self) {
        match &mut self.0 {
            Db::Sqlite(conn) => conn.close_on_drop(),
            Db::Postgres(conn) => conn.close_on_drop(),
        }
    }
}

/// A transaction on either backend; rolled back when dropped uncommitted. On
/// PostgreSQL it holds its share's turns (see [`super::shared`]) until it ends.
pub struct Tx<'c>(
    pub(super) Db<Transaction<'c, Sqlite>, Transaction<'c, Postgres>>,
    #[allow(dead_code, reason = "held, not read")] pub(super) Option<Turns>,
);

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

/// Runs query code on the backend of a [`Pool`] or of anything
/// [`AsConn`]:
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

// The short forms below are the `on!` bodies nearly every store function is made of:
// one statement, its arguments bound in order, run once. Each expands to exactly the
// chain it names, so a call site reads as its SQL and its arguments.

/// Runs one statement on the backend of a [`Pool`] or of anything
/// [`AsConn`], its arguments bound in order, and says what it did
/// (`Result<Done, sqlx::Error>`):
/// `execute!(conn, "UPDATE bulk_items SET started_at = $1 WHERE job_id = $2", at, job_id)`
/// is `on!(conn, |c| sqlx::query("…").bind(at).bind(job_id).execute(c).await.map(Done::from))`.
///
/// The statement is any expression sqlx takes as SQL (a literal, a `concat!`, an
/// `sqlx::AssertSqlSafe(format!(…))`). With the statement's two texts,
/// `execute!(conn, (SQLITE, POSTGRES), args…)` runs the text of the backend, as the
/// dialect form of [`on!`](crate::store::on) does.
#[macro_export]
macro_rules! execute {
    ($db:expr, $($statement_and_args:tt)+) => {
        $crate::__store_statement!(
            $db, query, execute, [.map($crate::store::Done::from)], $($statement_and_args)+
        )
    };
}

/// Runs one query on the backend of a [`Pool`] or of anything
/// [`AsConn`], its arguments bound in order, and decodes its rows
/// with `sqlx::query_as` (into tuples or `FromRow` types): `all` rows (`fetch_all`), an
/// `optional` one (`fetch_optional`) or exactly `one` (`fetch_one`):
/// `fetch!(conn, optional, "SELECT … FROM bulk_jobs WHERE id = $1", id)` is
/// `on!(conn, |c| sqlx::query_as("…").bind(id).fetch_optional(c).await)`.
///
/// The statement is any expression sqlx takes as SQL; with its two texts,
/// `fetch!(conn, all, (SQLITE, POSTGRES), args…)` runs the text of the backend.
#[macro_export]
macro_rules! fetch {
    ($db:expr, all, $($statement_and_args:tt)+) => {
        $crate::__store_statement!($db, query_as, fetch_all, [], $($statement_and_args)+)
    };
    ($db:expr, optional, $($statement_and_args:tt)+) => {
        $crate::__store_statement!($db, query_as, fetch_optional, [], $($statement_and_args)+)
    };
    ($db:expr, one, $($statement_and_args:tt)+) => {
        $crate::__store_statement!($db, query_as, fetch_one, [], $($statement_and_args)+)
    };
}

/// [`fetch!`](crate::store::fetch) for rows of one column, decoded with
/// `sqlx::query_scalar` into the column's value:
/// `fetch_scalar!(conn, one, "SELECT COUNT(*) FROM bulk_items WHERE job_id = $1", id)` is
/// `on!(conn, |c| sqlx::query_scalar("…").bind(id).fetch_one(c).await)`.
#[macro_export]
macro_rules! fetch_scalar {
    ($db:expr, all, $($statement_and_args:tt)+) => {
        $crate::__store_statement!($db, query_scalar, fetch_all, [], $($statement_and_args)+)
    };
    ($db:expr, optional, $($statement_and_args:tt)+) => {
        $crate::__store_statement!($db, query_scalar, fetch_optional, [], $($statement_and_args)+)
    };
    ($db:expr, one, $($statement_and_args:tt)+) => {
        $crate::__store_statement!($db, query_scalar, fetch_one, [], $($statement_and_args)+)
    };
}

/// The one chain behind [`execute!`](crate::store::execute),
/// [`fetch!`](crate::store::fetch) and [`fetch_scalar!`](crate::store::fetch_scalar):
/// `sqlx::$query(SQL)`, each argument `.bind`ed in order, `.$run(c).await`, then
/// `$then`; the statement is one text or a `(SQLITE, POSTGRES)` pair of `&'static str`.
#[doc(hidden)]
#[macro_export]
// `c` and `sql` are this macro's own names (hygiene): a statement or an argument that
// names a `c` of its own (a closure building the SQL) keeps it.
macro_rules! __store_statement {
    (
        $db:expr, $query:ident, $run:ident, [$($then:tt)*],
        ($sqlite:expr, $postgres:expr $(,)?) $(, $arg:expr)* $(,)?
    ) => {
        $crate::store::on!($db, ($sqlite, $postgres), |c, sql| ::sqlx::$query(sql)
            $(.bind($arg))*
            .$run(c)
            .await
            $($then)*)
    };
    ($db:expr, $query:ident, $run:ident, [$($then:tt)*], $sql:expr $(, $arg:expr)* $(,)?) => {
        $crate::store::on!($db, |c| ::sqlx::$query($sql)
            $(.bind($arg))*
            .$run(c)
            .await
            $($then)*)
    };
}

pub use crate::{execute, fetch, fetch_scalar};

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

impl From<sqlx_sqlite::SqliteQueryResult> for Done {
    fn from(result: sqlx_sqlite::SqliteQueryResult) -> Done {
        Done {
            rows_affected: result.rows_affected(),
        }
    }
}

impl From<sqlx_postgres::PgQueryResult> for Done {
    fn from(result: sqlx_postgres::PgQueryResult) -> Done {
        Done {
            rows_affected: result.rows_affected(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Backend;
    use crate::store::testing::{backends, temp_store_on};
    use rstest_reuse::apply;

    #[apply(backends)]
    #[tokio::test]
    async fn the_short_forms_bind_their_arguments_in_order_and_run_their_backends_text(
        backend: Backend,
    ) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        execute!(
            &mut tx,
            "CREATE TEMP TABLE pairs (name TEXT NOT NULL, n BIGINT NOT NULL)"
        )
        .unwrap();
        let inserted = execute!(
            &mut tx,
            "INSERT INTO pairs (name, n) VALUES ($1, $2), ($3, $4)",
            "a",
            1_i64,
            "b",
            2_i64,
        )
        .unwrap();
        assert_eq!(inserted.rows_affected(), 2);

        let all: Vec<(String, i64)> =
            fetch!(&mut tx, all, "SELECT name, n FROM pairs ORDER BY n").unwrap();
        assert_eq!(all, [("a".to_owned(), 1), ("b".to_owned(), 2)]);
        let second: Option<(String, i64)> = fetch!(
            &mut tx,
            optional,
            "SELECT name, n FROM pairs WHERE name = $1 AND n = $2",
            "b",
            2_i64
        )
        .unwrap();
        assert_eq!(second, Some(("b".to_owned(), 2)));
        let swapped: (i64, String) = fetch!(&mut tx, one, "SELECT $2, $1", "first", 2_i64).unwrap();
        assert_eq!(swapped, (2, "first".to_owned()));

        let names: Vec<String> = fetch_scalar!(
            &mut tx,
            all,
            "SELECT name FROM pairs WHERE n >= $1 ORDER BY n",
            1_i64
        )
        .unwrap();
        assert_eq!(names, ["a", "b"]);
        let missing: Option<String> = fetch_scalar!(
            &mut tx,
            optional,
            "SELECT name FROM pairs WHERE n = $1",
            3_i64,
        )
        .unwrap();
        assert_eq!(missing, None);
        let n: i64 =
            fetch_scalar!(&mut tx, one, "SELECT n FROM pairs WHERE name = $1", "b").unwrap();
        assert_eq!(n, 2);

        let ran: String = fetch_scalar!(
            &mut tx,
            one,
            ("SELECT $1 || ' on SQLite'", "SELECT $1 || ' on PostgreSQL'"),
            "ran",
        )
        .unwrap();
        assert_eq!(ran, format!("ran on {}", backend.as_str()));
        let deleted = execute!(
            &mut tx,
            (
                "DELETE FROM temp.pairs WHERE name = $1 AND n = $2",
                "DELETE FROM pg_temp.pairs WHERE name = $1 AND n = $2",
            ),
            "a",
            1_i64
        )
        .unwrap();
        assert_eq!(deleted.rows_affected(), 1);
        let left: Vec<(String, i64)> = fetch!(
            &mut tx,
            all,
            (
                "SELECT name, n FROM temp.pairs",
                "SELECT name, n FROM pg_temp.pairs"
            )
        )
        .unwrap();
        assert_eq!(left, [("b".to_owned(), 2)]);
        tx.rollback().await.unwrap();
    }
}
