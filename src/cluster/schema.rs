//! The `wfmd_cluster` schema: what the instances serving one PostgreSQL database share
//! across its tenants (the leases and the instances, see [`super::lease`]), made and
//! migrated once per database by its own small set of migrations
//! (`migrations/cluster/`), apart from every tenant's.
//!
//! Its statements name their tables with the schema (`wfmd_cluster.leases`), so they
//! run on any connection to the database, whichever tenant's schema it searches; none
//! of them touches a tenant's schema. Its migrations keep their record in
//! `wfmd_cluster._sqlx_migrations`, and take the same lock as the tenants' (sqlx's, on
//! the database), so instances starting together make it once.

use std::sync::LazyLock;

use std::str::FromStr;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx_postgres::{PgConnectOptions, PgConnection};

use crate::store::{AsConn, Db, Store};

/// The schema's name.
pub const SCHEMA: &str = "wfmd_cluster";

/// The migrations of the schema, recorded in the schema itself.
static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations/cluster");
    migrator.dangerous_set_table_name("wfmd_cluster._sqlx_migrations");
    migrator.create_schema(SCHEMA);
    migrator
});

/// Makes the schema when missing and applies its pending migrations, on `conn`. A
/// database a newer wfmd migrated is refused (a migration this one does not know).
/// Boxed as `Send` for the reason of `store::run_migrations`; leaves none of its
/// statements prepared on `conn` (see `store::forget_statements`).
pub fn migrate(
    conn: &mut PgConnection,
) -> futures::future::BoxFuture<'_, Result<(), MigrateError>> {
    Box::pin(async move {
        MIGRATOR.run_direct(None, &mut *conn, false).await?;
        crate::store::forget_statements(conn).await
    })
}

/// [`migrate`] on a connection of its own to `url`, the tenants' database: an instance
/// with `[ha]` starting, which a database a newer wfmd migrated refuses.
pub async fn prepare(url: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use sqlx::Connection;
    let options = PgConnectOptions::from_str(url)
        .context("database.url is not a valid PostgreSQL URL")?
        .options([("client_min_messages", "warning")]);
    let mut conn = PgConnection::connect_with(&options)
        .await
        .context("cannot open the database for the instances' shared schema")?;
    let migrated = migrate(&mut conn).await;
    conn.close().await.ok();
    migrated
        .with_context(|| format!("cannot make or migrate the schema {SCHEMA} the instances share"))
}

/// [`migrate`] on a connection of `store`'s, unless the schema is there already (one
/// quick look): for what acts on one tenant's lease by itself ([`super::lease::take`]).
pub async fn ensure(store: &Store) -> Result<(), sqlx::Error> {
    let present: bool = crate::store::fetch_scalar!(
        store.reader(),
        one,
        "SELECT to_regclass('wfmd_cluster.leases') IS NOT NULL"
    )?;
    if present {
        return Ok(());
    }
    let mut conn = store.writer().acquire().await?;
    match conn.db() {
        Db::Postgres(conn) => migrate(conn)
            .await
            .map_err(|error| sqlx::Error::Migrate(Box::new(error))),
        Db::Sqlite(_) => Err(sqlx::Error::Configuration(
            "several instances need PostgreSQL".into(),
        )),
    }
}
