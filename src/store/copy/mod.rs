//! `wfmd database copy`: one database's records, every table of them, into another
//! that is empty — SQLite → PostgreSQL being the move a growing deployment makes;
//! PostgreSQL → SQLite and SQLite → SQLite work the same way.
//!
//! - The source is only read, in one read transaction, so the copy is one consistent
//!   snapshot even while a daemon writes to it (what it writes later is not copied).
//!   It must be at this wfmd's migrations already: the copy never migrates it.
//! - The target is opened as the daemon opens it (created and migrated), then written
//!   in one write transaction: a copy that fails part-way leaves it as empty as it was.
//!   A target holding any record is refused; the rows its migrations put in a new
//!   database (the webhook cursor's) do not count, and are replaced by the source's.
//! - The tables come from the source's own catalogue (see `catalogue`), each must
//!   exist in the target, and they are copied in foreign-key order, column by name,
//!   each value as the target's column holds it, in batches (`rows`): memory stays
//!   bounded whatever the size.
//! - Afterwards each sequence-numbered key is moved past the largest value copied (and
//!   past the source's own high-water mark, so an id the source handed out is never
//!   handed out again), the row counts are compared table by table before the commit,
//!   and the target's audit chain is verified with the tenant's key after it.

mod catalogue;
mod rows;

use std::collections::BTreeMap;

use anyhow::{Context, anyhow, bail};
use futures::TryStreamExt;

use catalogue::{Table, quoted};
use rows::{Sink, Value};

use super::audit::{self, AuditKey, Verification};
use super::lock::{DaemonLock, database_path};
use super::{AsConn, Backend, Db, Store, execute, fetch_scalar};

/// One table copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopied {
    pub table: String,
    /// Rows in the source's snapshot, and in the target after the copy.
    pub rows: u64,
}

/// What a copy did.
#[derive(Debug, Clone)]
pub struct Copied {
    /// Every table, in the order copied.
    pub tables: Vec<TableCopied>,
    /// The target's audit chain, verified with the key.
    pub audit: Verification,
}

impl Copied {
    /// `audit chain ok (N entries, head SEQ HASH)`, as the command prints it.
    pub fn audit_line(&self) -> String {
        let head = match &self.audit.head {
            Some(head) => format!("head {} {}", head.seq, head.hash),
            None => "no entries yet".to_owned(),
        };
        let from = match &self.audit.from_checkpoint {
            Some(c) => format!(", from the checkpoint of entry {}", c.seq),
            None => String::new(),
        };
        format!(
            "audit chain ok ({} entries{from}, {head})",
            self.audit.entries
        )
    }
}

/// Copies the database at `source_url` into the empty one at `target_url`, the audit
/// chain keyed with `key` (the tenant's `audit.key`). `started` is told each table and
/// its rows as its copy begins.
pub async fn copy(
    source_url: &str,
    target_url: &str,
    key: Option<AuditKey>,
    mut started: impl FnMut(&TableCopied) + Send,
) -> anyhow::Result<Copied> {
    let shown_source = super::postgres::redacted(source_url);
    let shown_target = super::postgres::redacted(target_url);
    if Backend::of_url(source_url) == Backend::Sqlite {
        match database_path(source_url) {
            Some(path) if path.is_file() => {}
            _ => bail!("there is no database at {shown_source} to copy"),
        }
    }
    // A daemon starting on a SQLite target part-way through would write beside the copy.
    let _lock = match Backend::of_url(target_url) {
        Backend::Sqlite => match database_path(target_url) {
            Some(path) => Some(DaemonLock::acquire(
                &path,
                "copy into a database a daemon serves",
            )?),
            None => None,
        },
        Backend::Postgres => None,
    };
    let source = Store::open_keyed_without_migrating(source_url, key.clone())
        .await
        .with_context(|| format!("cannot open the source {shown_source}"))?;
    let copied = async {
        check_migrated(&source, &shown_source).await?;
        let target = Store::open_keyed(target_url, key)
            .await
            .with_context(|| format!("cannot open the target {shown_target}"))?;
        let copied = copy_between(&source, &target, &shown_target, &mut started).await;
        let verified = match copied {
            Ok(tables) => verify(&source, &target, &shown_target)
                .await
                .map(|audit| Copied { tables, audit }),
            Err(e) => Err(e),
        };
        target.close().await;
        verified
    }
    .await;
    source.close().await;
    copied
}

/// Refuses a source that is not at this wfmd's migrations: its tables would not be
/// the target's.
async fn check_migrated(source: &Store, shown: &str) -> anyhow::Result<()> {
    let ours = match source.backend() {
        Backend::Sqlite => super::MIGRATOR.iter().count(),
        Backend::Postgres => super::PG_MIGRATOR.iter().count(),
    };
    let applied = source.applied_migrations().await?;
    if applied < ours {
        bail!(
            "the source {shown} is at migration {applied} of this wfmd's {ours}: run `wfmd \
             migrate` on it first (or start this wfmd's `serve` on it once); the copy only \
             reads it"
        );
    }
    if applied > ours {
        bail!(
            "the source {shown} has {applied} migrations applied, more than this wfmd's \
             {ours}: it was made by a newer wfmd; copy it with that one"
        );
    }
    Ok(())
}

async fn copy_between(
    source: &Store,
    target: &Store,
    shown_target: &str,
    started: &mut (impl FnMut(&TableCopied) + Send),
) -> anyhow::Result<Vec<TableCopied>> {
    let seeded = fresh_rows().await?;
    let mut snapshot = source.reader().begin().await?;
    if let Db::Postgres(c) = snapshot.db() {
        // One snapshot for every statement of the transaction, not one each.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(c)
            .await?;
    }
    let from = catalogue::tables(&mut snapshot).await?;
    let mut tx = target.begin_write().await?;
    let to = catalogue::tables(&mut tx).await?;
    let columns = matching_columns(&from, &to, shown_target)?;
    let replaced = refuse_data(&mut tx, &to, &seeded, shown_target).await?;
    for table in &replaced {
        execute!(
            tx,
            sqlx::AssertSqlSafe(format!("DELETE FROM {}", quoted(table)))
        )?;
    }
    let names: Vec<String> = from.keys().cloned().collect();
    let mut copied = Vec::with_capacity(names.len());
    for name in catalogue::in_key_order(&to, &names)? {
        let began = std::time::Instant::now();
        let rows = copy_table(
            &mut snapshot,
            &mut tx,
            &from[&name],
            &to[&name],
            &columns[&name],
            started,
        )
        .await
        .with_context(|| format!("cannot copy table {name}"))?;
        tracing::debug!(table = %name, rows, took = ?began.elapsed(), "copied a table");
        copied.push(TableCopied { table: name, rows });
    }
    let marks = high_water_marks(&mut snapshot, &from).await?;
    move_sequences(&mut tx, &to, &marks).await?;
    tx.commit()
        .await
        .with_context(|| format!("cannot commit the copy into {shown_target}"))?;
    snapshot.rollback().await.ok();
    Ok(copied)
}

/// The columns of each source table, refusing a table or column the target lacks.
fn matching_columns(
    from: &BTreeMap<String, Table>,
    to: &BTreeMap<String, Table>,
    shown_target: &str,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut missing = Vec::new();
    let mut columns = BTreeMap::new();
    for (name, table) in from {
        let Some(theirs) = to.get(name) else {
            missing.push(format!("table {name}"));
            continue;
        };
        for column in &table.columns {
            if theirs.column(&column.name).is_none() {
                missing.push(format!("column {name}.{}", column.name));
            }
        }
        columns.insert(
            name.clone(),
            table.columns.iter().map(|c| c.name.clone()).collect(),
        );
    }
    if !missing.is_empty() {
        bail!(
            "the target {shown_target} lacks {} that the source has: its schema is not \
             this wfmd's",
            missing.join(", ")
        );
    }
    Ok(columns)
}

/// The rows of a table in a new database: its columns, and the rows' values in that
/// order, sorted.
#[derive(Debug, PartialEq)]
struct Seeded {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// `rows` in an order of their own, so two databases' can be compared whatever order
/// each reads them in.
fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_cached_key(|row| format!("{row:?}"));
    rows
}

/// The rows the migrations leave in a new database, by table (the webhook cursor's):
/// those of a database made for the purpose, as [`Store::open`] makes one.
async fn fresh_rows() -> anyhow::Result<BTreeMap<String, Seeded>> {
    let folder = tempfile::tempdir().context("cannot make a temporary folder")?;
    let url = format!("sqlite://{}", folder.path().join("fresh.db").display());
    let fresh = Store::open(&url).await?;
    let found = async {
        let mut conn = fresh.reader().acquire().await?;
        let mut found = BTreeMap::new();
        for (name, table) in catalogue::tables(&mut conn).await? {
            let rows = rows::all(&mut conn, select(&table, None)).await?;
            if !rows.is_empty() {
                let columns = table.columns.iter().map(|c| c.name.clone()).collect();
                found.insert(
                    name,
                    Seeded {
                        columns,
                        rows: sorted(rows),
                    },
                );
            }
        }
        anyhow::Ok(found)
    }
    .await;
    fresh.close().await;
    found
}

/// `SELECT` of `table`'s columns (or of `columns`), in its reading order.
fn select(table: &Table, columns: Option<&[String]>) -> String {
    let list = match columns {
        Some(columns) => columns.iter().map(|c| quoted(c)).collect::<Vec<_>>(),
        None => table.columns.iter().map(|c| quoted(&c.name)).collect(),
    };
    let order = table
        .order
        .as_ref()
        .map_or(String::new(), |order| format!(" ORDER BY {order}"));
    format!(
        "SELECT {} FROM {}{order}",
        list.join(", "),
        quoted(&table.name)
    )
}

async fn count(conn: &mut impl AsConn, table: &str) -> anyhow::Result<u64> {
    let rows: i64 = fetch_scalar!(
        conn,
        one,
        sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", quoted(table)))
    )?;
    Ok(u64::try_from(rows).unwrap_or(0))
}

/// Refuses a target holding any row a new database does not; returns the tables whose
/// rows are a new database's (to be replaced by the source's).
async fn refuse_data(
    tx: &mut impl AsConn,
    tables: &BTreeMap<String, Table>,
    seeded: &BTreeMap<String, Seeded>,
    shown_target: &str,
) -> anyhow::Result<Vec<String>> {
    let mut holding = Vec::new();
    let mut replaced = Vec::new();
    for (name, table) in tables {
        let rows = count(tx, name).await?;
        if rows == 0 {
            continue;
        }
        // Compared column by name: the two backends may order them differently.
        let as_made = match seeded.get(name) {
            Some(fresh) if fresh.rows.len() as u64 == rows => {
                sorted(rows::all(tx, select(table, Some(&fresh.columns))).await?) == fresh.rows
            }
            _ => false,
        };
        if as_made {
            replaced.push(name.clone());
        } else {
            holding.push(format!("{name}: {rows} rows"));
        }
    }
    if !holding.is_empty() {
        bail!(
            "the target {shown_target} already holds data ({}); wfmd database copy copies \
             only into an empty database, and left it as it was",
            holding.join(", ")
        );
    }
    Ok(replaced)
}

async fn copy_table(
    snapshot: &mut impl AsConn,
    tx: &mut impl AsConn,
    from: &Table,
    to: &Table,
    columns: &[String],
    started: &mut (impl FnMut(&TableCopied) + Send),
) -> anyhow::Result<u64> {
    let name = &from.name;
    let expected = count(snapshot, name).await?;
    started(&TableCopied {
        table: name.clone(),
        rows: expected,
    });
    let kinds: Vec<_> = columns
        .iter()
        .map(|c| to.column(c).expect("matched").kind)
        .collect();
    let mut read = 0u64;
    // An empty table costs no COPY (a round trip or two each, for most of the tables).
    let taken = if expected == 0 {
        None
    } else {
        let mut source = rows::stream(snapshot.db(), select(from, Some(columns)));
        let mut sink = Sink::open(tx.db(), name, columns).await?;
        while let Some(row) = source.try_next().await? {
            let mut fitted = Vec::with_capacity(row.len());
            for ((value, kind), column) in row.into_iter().zip(&kinds).zip(columns) {
                fitted.push(
                    value
                        .into_kind(*kind)
                        .map_err(|value| rows::misfit(name, column, &value, *kind))?,
                );
            }
            sink.push(fitted).await?;
            read += 1;
        }
        sink.finish().await?
    };
    let written = count(tx, name).await?;
    if read != expected || written != expected || taken.is_some_and(|t| t != expected) {
        bail!(
            "row counts differ: the source's snapshot holds {expected}, {read} were read, \
             the target holds {written}{}",
            taken.map_or(String::new(), |t| format!(" (its COPY took {t})"))
        );
    }
    Ok(expected)
}

/// The highest value the source's sequences have handed out, by table, where it keeps
/// one apart from its rows (SQLite's AUTOINCREMENT, PostgreSQL's sequences): pruned
/// rows can have taken the largest values with them.
async fn high_water_marks(
    snapshot: &mut impl AsConn,
    tables: &BTreeMap<String, Table>,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut marks = BTreeMap::new();
    match snapshot.db() {
        Db::Sqlite(c) => {
            let kept: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')",
            )
            .fetch_one(&mut *c)
            .await?;
            if kept {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT name, seq FROM sqlite_sequence")
                        .fetch_all(&mut *c)
                        .await?;
                marks.extend(rows.into_iter().filter(|(t, _)| tables.contains_key(t)));
            }
        }
        Db::Postgres(c) => {
            for table in tables.values() {
                let Some(sequence) = table.numbered.as_ref().and_then(|n| n.sequence.as_ref())
                else {
                    continue;
                };
                let last: Option<i64> =
                    sqlx::query_scalar("SELECT pg_sequence_last_value($1::regclass)")
                        .bind(sequence)
                        .fetch_one(&mut *c)
                        .await?;
                if let Some(last) = last {
                    marks.insert(table.name.clone(), last);
                }
            }
        }
    }
    Ok(marks)
}

/// Moves each sequence of the target past the largest key copied and the source's
/// high-water mark, so the next row the daemon inserts takes a new number.
async fn move_sequences(
    tx: &mut impl AsConn,
    tables: &BTreeMap<String, Table>,
    marks: &BTreeMap<String, i64>,
) -> anyhow::Result<()> {
    for table in tables.values() {
        let Some(numbered) = &table.numbered else {
            continue;
        };
        let mark = marks.get(&table.name).copied();
        match tx.db() {
            Db::Postgres(c) => {
                let Some(sequence) = &numbered.sequence else {
                    continue;
                };
                // GREATEST passes over NULLs; an empty table and no mark leave the
                // sequence at its start.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT setval($1::regclass, v) FROM (
                         SELECT GREATEST(MAX({column}), $2) AS v FROM {table}
                     ) s WHERE v IS NOT NULL",
                    column = quoted(&numbered.column),
                    table = quoted(&table.name),
                )))
                .bind(sequence)
                .bind(mark)
                .fetch_all(&mut *c)
                .await
                .with_context(|| format!("cannot move the sequence of {}", table.name))?;
            }
            Db::Sqlite(c) => {
                // Without AUTOINCREMENT, SQLite numbers from the largest key, which the
                // rows copied already set; with it, from its own mark, which inserts
                // raise but only to the largest key copied.
                let (true, Some(mark)) = (numbered.autoincrement, mark) else {
                    continue;
                };
                let raised =
                    sqlx::query("UPDATE sqlite_sequence SET seq = MAX(seq, $2) WHERE name = $1")
                        .bind(&table.name)
                        .bind(mark)
                        .execute(&mut *c)
                        .await?;
                if raised.rows_affected() == 0 {
                    sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)")
                        .bind(&table.name)
                        .bind(mark)
                        .execute(&mut *c)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// Verifies the target's audit chain, as `wfmd audit verify` does; when it is broken,
/// says whether the source's is too (the copy is faithful to a broken chain).
async fn verify(
    source: &Store,
    target: &Store,
    shown_target: &str,
) -> anyhow::Result<Verification> {
    let verified = audit::verify_with(target.reader(), target.audit_key())
        .await
        .context("cannot verify the target's audit chain")?;
    if verified.is_intact() {
        return Ok(verified);
    }
    let source_too = match audit::verify_with(source.reader(), source.audit_key()).await {
        Ok(theirs) if !theirs.is_intact() => format!(
            "; the source's chain is broken as well: {}",
            theirs.describe()
        ),
        Ok(_) => "; the source's chain verifies".to_owned(),
        Err(e) => format!("; the source's chain cannot be verified: {e}"),
    };
    Err(anyhow!(
        "the copy in {shown_target} was committed, but its audit chain does not verify: \
         {}{source_too}",
        verified.describe()
    ))
}

#[cfg(test)]
mod tests {
    use crate::store::on;
    use rstest_reuse::apply;

    use super::*;
    use crate::store::testing::{backends, temp_url_on};

    /// A migrated database on `backend`: its URL, and the folder a SQLite one lives in.
    async fn database_on(backend: Backend) -> (String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = temp_url_on(backend, &dir);
        Store::open(&url).await.unwrap().close().await;
        (url, dir)
    }

    /// The other backend: each case copies across, both directions between them.
    fn other(backend: Backend) -> Backend {
        match backend {
            Backend::Sqlite => Backend::Postgres,
            Backend::Postgres => Backend::Sqlite,
        }
    }

    async fn write(url: &str, sql: &'static str) -> Option<i64> {
        let store = Store::open_without_migrating(url).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let returned: Option<i64> = on!(tx, |c| sqlx::query_scalar(sql).fetch_optional(c).await)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        tx.commit().await.unwrap();
        store.close().await;
        returned
    }

    const NEW_EVENT: &str = "INSERT INTO outbox_events (id, event_type, agent_id, payload,
                                 created_at)
                             VALUES ('evt_' || CAST(random() AS TEXT), 'bulk.completed', NULL,
                                 '{}', 1)
                             RETURNING seq";

    /// Each case copies from the other backend into `backend`.
    #[apply(backends)]
    #[tokio::test]
    async fn a_key_pruned_from_the_top_is_never_handed_out_again(backend: Backend) {
        let (source, _s) = database_on(other(backend)).await;
        for _ in 0..3 {
            write(&source, NEW_EVENT).await;
        }
        // The newest event pruned: the source's sequence remembers it, its rows do not.
        write(&source, "DELETE FROM outbox_events WHERE seq = 3").await;
        let (target, _t) = database_on(backend).await;
        let copied = copy(&source, &target, None, |_| {}).await.unwrap();
        assert!(
            copied.tables.contains(&TableCopied {
                table: "outbox_events".into(),
                rows: 2
            }),
            "{:?}",
            copied.tables
        );
        assert_eq!(write(&target, NEW_EVENT).await, Some(4));
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_value_its_target_column_cannot_hold_fails_the_copy_by_name_and_leaves_the_target_empty(
        backend: Backend,
    ) {
        let (source, _s) = database_on(Backend::Sqlite).await;
        // wfmd's tables are STRICT; one that is not keeps text that does not read as a
        // number in an INTEGER column.
        write(&source, "CREATE TABLE notes (n INTEGER)").await;
        write(&source, "INSERT INTO notes (n) VALUES ('soon')").await;
        // Copied before `notes`, and rolled back with it.
        write(
            &source,
            "INSERT INTO agent_roster (agent_id, updated_at) VALUES ('u_001', 1)",
        )
        .await;
        let (target, _t) = database_on(backend).await;
        write(&target, "CREATE TABLE notes (n BIGINT)").await;
        let failed = copy(&source, &target, None, |_| {}).await.unwrap_err();
        let message = format!("{failed:#}");
        assert!(message.contains("notes.n holds text"), "{message}");
        assert_eq!(
            write(&target, "SELECT COUNT(*) FROM agent_roster").await,
            Some(0)
        );

        write(&source, "UPDATE notes SET n = 1").await;
        let copied = copy(&source, &target, None, |_| {}).await;
        assert!(copied.is_ok(), "copied again: {copied:?}");
    }

    #[apply(backends)]
    #[tokio::test]
    async fn a_table_the_target_lacks_fails_the_copy_naming_it(backend: Backend) {
        let (source, _s) = database_on(other(backend)).await;
        write(&source, "CREATE TABLE kept_elsewhere (x BIGINT)").await;
        let (target, _t) = database_on(backend).await;
        let failed = copy(&source, &target, None, |_| {}).await.unwrap_err();
        assert!(
            format!("{failed:#}").contains("lacks table kept_elsewhere"),
            "{failed:#}"
        );
    }

    #[tokio::test]
    async fn a_source_behind_this_wfmds_migrations_is_refused_and_left_unmigrated() {
        let dir = tempfile::tempdir().unwrap();
        let source = temp_url_on(Backend::Sqlite, &dir);
        let store = Store::open_without_migrating(&source).await.unwrap();
        let mut conn = store.writer().acquire().await.unwrap();
        let Db::Sqlite(c) = conn.db() else {
            unreachable!("a SQLite store")
        };
        let second = super::super::MIGRATOR.iter().nth(1).unwrap().version;
        super::super::run_migrations(&super::super::MIGRATOR, c, Some(second))
            .await
            .unwrap();
        drop(conn);
        store.close().await;
        let (target, _t) = database_on(Backend::Sqlite).await;
        let failed = copy(&source, &target, None, |_| {}).await.unwrap_err();
        assert!(
            format!("{failed:#}").contains("is at migration 2 of this wfmd's"),
            "{failed:#}"
        );
        let store = Store::open_without_migrating(&source).await.unwrap();
        assert_eq!(store.applied_migrations().await.unwrap(), 2);
        store.close().await;
    }
}
