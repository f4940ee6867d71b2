//! What the migrations promise about a database's schema, held against the file itself.
//!
//! The audit log is append-only because two triggers refuse UPDATE and DELETE; a file
//! edited outside wfmd can lack them (or carry changed ones) and still open, migrate and
//! verify. So the schema a database should have is made afresh — this binary's
//! migrations, as far as the file has applied them, run on an in-memory database — and
//! the file's `sqlite_master` is compared with it: every table, index, view and trigger
//! with the same definition, nothing more.
//!
//! - `wfmd restore` refuses a backup with any difference ([`check`]), naming each;
//! - every start, after the migrations, puts back triggers that are missing or altered
//!   ([`restore_triggers`]) with a warning, so the daemon never runs without them. On
//!   PostgreSQL, where the catalogue keeps no statement text to compare, it makes them
//!   again from the migrations' statements each time and compares the catalogue's
//!   account of them (definition, enabled, function) before and after.

use crate::store::{AsConn, execute, fetch, fetch_scalar};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::migrate::Migrator;
use sqlx_sqlite::SqliteConnectOptions;

use super::{MIGRATOR, Store};

/// One object of `sqlite_master` that the migrations made; keyed by (type, name).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct Object {
    #[sqlx(rename = "type")]
    kind: String,
    name: String,
    /// `CREATE …` as written (SQLite keeps the text; NULL for automatic indexes).
    sql: Option<String>,
}

type Objects = BTreeMap<(String, String), Object>;

/// Every object but SQLite's own (`sqlite_…`) and sqlx's migrations table, whose
/// definition belongs to the sqlx version that made it.
async fn objects(conn: &mut impl AsConn) -> Result<Objects, sqlx::Error> {
    let rows: Vec<Object> = fetch!(
        conn,
        all,
        "SELECT type, name, sql FROM sqlite_master
         WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations'"
    )?;
    Ok(rows
        .into_iter()
        .map(|o| ((o.kind.clone(), o.name.clone()), o))
        .collect())
}

/// The objects this binary's migrations up to `version` (all of them: `None`) make.
async fn expected(version: Option<i64>) -> anyhow::Result<Objects> {
    let mut conn = SqliteConnectOptions::from_str("sqlite::memory:")?
        .connect()
        .await?;
    let migrator = Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
    super::run_migrations(&migrator, &mut conn, version).await?;
    Ok(objects(&mut conn).await?)
}

/// How a database's schema departs from what its migrations promise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Departures(pub Vec<String>);

impl Departures {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Departures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// Holds the database on `conn` against this binary's migrations: each one it applied
/// must be this binary's (same checksum, finished), in order from the first; then every
/// table, index, view and trigger those make must be there as they make it, and no
/// other. Returns each departure found (none: the schema is as promised).
///
/// On PostgreSQL it finds nothing: the comparison reads SQLite's catalogue, and its one
/// user, `wfmd restore`, restores SQLite files only.
pub async fn check(conn: &mut impl AsConn) -> anyhow::Result<Departures> {
    if conn.backend() == super::Backend::Postgres {
        return Ok(Departures::default());
    }
    let mut found = Vec::new();
    let has_table: bool = fetch_scalar!(
        conn,
        one,
        "SELECT EXISTS (SELECT 1 FROM sqlite_master
                        WHERE type = 'table' AND name = '_sqlx_migrations')"
    )?;
    if !has_table {
        return Ok(Departures(vec![
            "it has no migrations table (_sqlx_migrations): not a wfmd database".into(),
        ]));
    }
    let applied: Vec<(i64, Vec<u8>, bool)> = fetch!(
        conn,
        all,
        "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version"
    )?;
    let ours: Vec<_> = MIGRATOR.iter().collect();
    for (i, (version, checksum, success)) in applied.iter().enumerate() {
        match ours.iter().find(|m| m.version == *version) {
            None => found.push(format!(
                "migration {version} is not one of this wfmd's (made by a newer version?)"
            )),
            Some(m) if *m.checksum != checksum[..] => found.push(format!(
                "migration {version} ({}) differs from this wfmd's",
                m.description
            )),
            Some(m) if !success => found.push(format!(
                "migration {version} ({}) did not finish",
                m.description
            )),
            Some(_) => {}
        }
        if ours.get(i).is_some_and(|m| m.version != *version) {
            found.push(format!(
                "migration {} ({}) is missing before migration {version}",
                ours[i].version, ours[i].description
            ));
        }
    }
    if !found.is_empty() {
        // The schema to expect is unknown when the migrations themselves are not ours.
        return Ok(Departures(found));
    }
    let reference = match applied.last() {
        Some((version, _, _)) => expected(Some(*version)).await?,
        None => Objects::new(),
    };
    let actual = objects(conn).await?;
    for ((kind, name), object) in &reference {
        match actual.get(&(kind.clone(), name.clone())) {
            None => found.push(format!("{kind} {name} is missing")),
            Some(present) if present.sql != object.sql => found.push(format!(
                "{kind} {name} differs from what the migrations create"
            )),
            Some(_) => {}
        }
    }
    for (kind, name) in actual.keys() {
        if !reference.contains_key(&(kind.clone(), name.clone())) {
            found.push(format!("{kind} {name} is not one the migrations create"));
        }
    }
    Ok(Departures(found))
}

/// Puts back every trigger of this binary's migrations that the database lacks or has
/// altered (the audit log's append-only triggers), logging a warning for each, and
/// warns of triggers the migrations do not make. Call after migrating. Returns the
/// names of the triggers it put back.
///
/// On PostgreSQL the triggers and their functions are made again from this binary's
/// migrations every time (`restore_pg_triggers`).
pub async fn restore_triggers(store: &Store) -> anyhow::Result<Vec<String>> {
    if store.backend() == super::Backend::Postgres {
        return restore_pg_triggers(store).await;
    }
    let reference = expected(None).await?;
    let mut tx = store.begin_write().await?;
    // Looked at in the write transaction: another process starting at the same moment
    // either finds them restored or waits for this one.
    let actual = objects(&mut tx).await?;
    let mut restored = Vec::new();
    for ((kind, name), object) in &reference {
        let Some(sql) = object.sql.as_deref().filter(|_| kind == "trigger") else {
            continue;
        };
        let present = actual.get(&(kind.clone(), name.clone()));
        if present.is_some_and(|p| p.sql == object.sql) {
            continue;
        }
        if present.is_some() {
            tracing::warn!(
                trigger = %name,
                "a trigger of the audit log differs from what the migrations create; \
                 it is replaced"
            );
            execute!(tx, sqlx::AssertSqlSafe(format!("DROP TRIGGER \"{name}\"")))?;
        } else {
            tracing::warn!(
                trigger = %name,
                "a trigger of the audit log was missing (dropped outside wfmd); it is \
                 re-created"
            );
        }
        execute!(tx, sqlx::AssertSqlSafe(sql.to_owned()))?;
        restored.push(name.clone());
    }
    for (kind, name) in actual.keys() {
        if kind == "trigger" && !reference.contains_key(&(kind.clone(), name.clone())) {
            tracing::warn!(
                trigger = %name,
                "the database has a trigger the migrations do not create; it was added \
                 outside wfmd"
            );
        }
    }
    tx.commit().await?;
    Ok(restored)
}

/// The statements of `sql` (a migration), without its comments: split at each `;`
/// outside a `$$` body.
fn pg_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut in_body = false;
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("$$") {
            in_body = !in_body;
            current.push_str("$$");
            rest = &rest[2..];
        } else if !in_body && rest.starts_with("--") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if !in_body && c == ';' {
            statements.push(std::mem::take(&mut current).trim().to_owned());
            rest = &rest[1..];
        } else {
            current.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    statements.retain(|s| !s.is_empty());
    statements
}

/// What makes the audit log's triggers on PostgreSQL, from this binary's migrations
/// (the newest statement of each name): the functions, then the triggers, each as
/// `CREATE OR REPLACE`. Returns them and the triggers' names.
fn pg_trigger_statements() -> (Vec<String>, Vec<String>) {
    let mut functions = BTreeMap::new();
    let mut triggers = BTreeMap::new();
    for migration in super::PG_MIGRATOR.iter() {
        for statement in pg_statements(migration.sql.as_str()) {
            let replacing = statement
                .strip_prefix("CREATE OR REPLACE ")
                .or_else(|| statement.strip_prefix("CREATE "));
            let Some(made) = replacing else { continue };
            let (kind, rest) = made.split_once(' ').unwrap_or((made, ""));
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.starts_with("audit_log_") {
                continue;
            }
            let text = format!("CREATE OR REPLACE {made}");
            match kind {
                "FUNCTION" => functions.insert(name, text),
                "TRIGGER" => triggers.insert(name, text),
                _ => None,
            };
        }
    }
    let names = triggers.keys().cloned().collect();
    (
        functions
            .into_values()
            .chain(triggers.into_values())
            .collect(),
        names,
    )
}

/// Each trigger of `audit_log` in the connection's schema: its definition, whether it is
/// enabled (`D`: disabled) and the function it runs, by name.
async fn pg_triggers(
    conn: &mut impl AsConn,
) -> Result<BTreeMap<String, (String, String, String)>, sqlx::Error> {
    let rows: Vec<(String, String, String, String)> = fetch!(
        conn,
        all,
        "SELECT CAST(t.tgname AS TEXT), pg_get_triggerdef(t.oid), CAST(t.tgenabled AS TEXT),
                pg_get_functiondef(t.tgfoid)
         FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
         WHERE r.relname = 'audit_log' AND r.relnamespace = CAST(current_schema() AS regnamespace)
           AND NOT t.tgisinternal"
    )?;
    Ok(rows
        .into_iter()
        .map(|(name, definition, enabled, function)| (name, (definition, enabled, function)))
        .collect())
}

/// [`restore_triggers`] on PostgreSQL: makes the audit log's triggers and their
/// functions again (`CREATE OR REPLACE`, cheap when they are as they should be) and
/// enables any disabled; the names of those that were missing, disabled or different
/// before are returned, each with a warning.
async fn restore_pg_triggers(store: &Store) -> anyhow::Result<Vec<String>> {
    let (statements, names) = pg_trigger_statements();
    let mut tx = store.begin_write().await?;
    let before = pg_triggers(&mut tx).await?;
    for statement in statements {
        execute!(tx, sqlx::AssertSqlSafe(statement))?;
    }
    for name in &names {
        if before
            .get(name)
            .is_some_and(|(_, enabled, _)| enabled == "D")
        {
            execute!(
                tx,
                sqlx::AssertSqlSafe(format!("ALTER TABLE audit_log ENABLE TRIGGER \"{name}\""))
            )?;
        }
    }
    let after = pg_triggers(&mut tx).await?;
    tx.commit().await?;
    let mut restored = Vec::new();
    for name in &names {
        match before.get(name) {
            None => tracing::warn!(
                trigger = %name,
                "a trigger of the audit log was missing (dropped outside wfmd); it is \
                 re-created"
            ),
            Some(was) if Some(was) != after.get(name) => tracing::warn!(
                trigger = %name,
                "a trigger of the audit log was disabled or differed from what the \
                 migrations create; it is replaced"
            ),
            Some(_) => continue,
        }
        restored.push(name.clone());
    }
    for name in before.keys().filter(|name| !names.contains(name)) {
        tracing::warn!(
            trigger = %name,
            "the database has a trigger the migrations do not create; it was added \
             outside wfmd"
        );
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::testing::{backends, temp_store};
    use crate::store::{Done, on};
    use rstest_reuse::apply;

    async fn exec(store: &Store, sql: &'static str) {
        let mut tx = store.begin_write().await.unwrap();
        on!(tx, |c| sqlx::query(sql).execute(c).await.map(Done::from)).unwrap();
        tx.commit().await.unwrap();
    }

    async fn departures(store: &Store) -> Vec<String> {
        let mut conn = store.reader().acquire().await.unwrap();
        check(&mut conn).await.unwrap().0
    }

    #[tokio::test]
    async fn a_migrated_database_is_as_promised() {
        let (store, _dir) = temp_store().await;
        assert_eq!(departures(&store).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn dropped_altered_and_added_objects_are_each_named() {
        let (store, _dir) = temp_store().await;
        exec(&store, "DROP TRIGGER audit_log_refuses_update").await;
        exec(&store, "DROP TRIGGER audit_log_refuses_delete").await;
        exec(
            &store,
            "CREATE TRIGGER audit_log_refuses_delete BEFORE DELETE ON audit_log
             WHEN 0 BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
        )
        .await;
        exec(&store, "DROP INDEX audit_log_at").await;
        exec(&store, "CREATE INDEX sneaky ON audit_log (actor)").await;
        assert_eq!(
            departures(&store).await,
            [
                "index audit_log_at is missing",
                "trigger audit_log_refuses_delete differs from what the migrations create",
                "trigger audit_log_refuses_update is missing",
                "index sneaky is not one the migrations create",
            ]
        );
    }

    #[tokio::test]
    async fn migrations_that_are_not_this_binarys_are_named() {
        let (store, _dir) = temp_store().await;
        exec(
            &store,
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 20261122000002",
        )
        .await;
        exec(
            &store,
            "INSERT INTO _sqlx_migrations (version, description, success, checksum,
                 execution_time)
             VALUES (29990101000001, 'from the future', 1, x'00', 0)",
        )
        .await;
        let found = departures(&store).await;
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("migration 20261122000002 (webhook delivery) differs"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("migration 29990101000001 is not one of this wfmd's"),
            "{found:?}"
        );
    }

    #[test]
    fn the_postgres_trigger_statements_are_the_migrations_three_and_their_functions() {
        let (statements, names) = pg_trigger_statements();
        assert_eq!(
            names,
            [
                "audit_log_refuses_delete",
                "audit_log_refuses_truncate",
                "audit_log_refuses_update"
            ]
        );
        assert_eq!(statements.len(), 5, "{statements:#?}");
        assert!(statements[0].starts_with("CREATE OR REPLACE FUNCTION audit_log_refuses_delete()"));
        assert!(
            statements[0].ends_with("$$"),
            "the body kept whole: {}",
            statements[0]
        );
        assert!(
            statements.iter().all(|s| !s.contains("--")),
            "comments dropped"
        );
    }

    #[apply(backends)]
    #[tokio::test]
    async fn missing_triggers_come_back_at_the_next_start_and_refuse_updates_again(
        backend: Backend,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::store::testing::temp_url_on(backend, &dir);
        let store = Store::open(&url).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        crate::store::audit::append(
            &mut tx,
            &crate::store::audit::NewEntry {
                actor: "test",
                action: "test.entry",
                agent_id: None,
                subject_id: None,
                detail: serde_json::json!({}),
                at: chrono::Utc::now(),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        crate::store::testing::drop_audit_triggers(&store).await;
        exec(&store, "UPDATE audit_log SET actor = 'forged'").await;
        store.close().await;

        let store = Store::open(&url).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let refused = on!(tx, |c| sqlx::query("UPDATE audit_log SET actor = 'again'")
            .execute(c)
            .await
            .map(Done::from))
        .unwrap_err();
        assert!(
            refused.to_string().contains("audit_log is append-only"),
            "{refused}"
        );
        drop(tx);
        if backend == Backend::Sqlite {
            assert_eq!(departures(&store).await, Vec::<String>::new());
        }
        assert_eq!(
            restore_triggers(&store).await.unwrap(),
            Vec::<String>::new(),
            "nothing to put back a second time"
        );
    }

    /// On PostgreSQL a trigger can also be disabled, or its function replaced by one that
    /// lets everything through; both are put right at the next start.
    #[tokio::test]
    async fn a_disabled_trigger_or_a_replaced_function_is_put_right_on_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::store::testing::temp_url_on(Backend::Postgres, &dir);
        let store = Store::open(&url).await.unwrap();
        exec(
            &store,
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_refuses_truncate",
        )
        .await;
        exec(
            &store,
            "CREATE OR REPLACE FUNCTION audit_log_refuses_update() RETURNS trigger
             LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END; $$",
        )
        .await;
        let mut restored = restore_triggers(&store).await.unwrap();
        restored.sort();
        assert_eq!(
            restored,
            ["audit_log_refuses_truncate", "audit_log_refuses_update"],
            "the truncate trigger runs the update trigger's function too"
        );
        assert_eq!(
            restore_triggers(&store).await.unwrap(),
            Vec::<String>::new()
        );
    }
}
