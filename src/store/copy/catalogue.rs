//! What a database's own catalogue says about wfmd's tables, on either backend: their
//! columns and what each holds, the foreign keys between them, and the key a sequence
//! numbers. The copy takes its list of tables from here, never from a list of its own,
//! so a table a new migration adds is copied (or the copy fails naming it) instead of
//! being left behind without a word.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};

use crate::store::{AsConn, Db};

/// What a column holds, as far as the copy is concerned: SQLite's storage classes,
/// which PostgreSQL's BIGINT, DOUBLE PRECISION, TEXT and BYTEA hold as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Integer,
    Real,
    Text,
    Blob,
    /// A SQLite column of NUMERIC affinity: it keeps whatever it is given.
    Any,
}

#[derive(Debug, Clone)]
pub(super) struct Column {
    pub name: String,
    pub kind: Kind,
}

/// The key of a table that a sequence numbers when an insert leaves it out.
#[derive(Debug, Clone)]
pub(super) struct Numbered {
    pub column: String,
    /// PostgreSQL: the sequence behind the identity (or serial) column.
    pub sequence: Option<String>,
    /// SQLite: the table is AUTOINCREMENT, so its high-water mark is kept in
    /// `sqlite_sequence` and never goes back, even when the top rows are deleted.
    pub autoincrement: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// The other tables its foreign keys point at.
    pub references: BTreeSet<String>,
    pub numbered: Option<Numbered>,
    /// The order to read rows in (an `ORDER BY` list), so that a row that points at
    /// another row of the same table (a revert's bulk job) comes after it: on SQLite
    /// the order they were inserted in, on PostgreSQL the primary key's.
    pub order: Option<String>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// `name` quoted as an SQL identifier (both dialects use double quotes).
pub(super) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// wfmd's tables in the database `conn` is on (its schema, on PostgreSQL), by name;
/// the backend's own tables and sqlx's migration bookkeeping left out.
pub(super) async fn tables(conn: &mut impl AsConn) -> anyhow::Result<BTreeMap<String, Table>> {
    let mut found = BTreeMap::new();
    for name in table_names(conn).await? {
        let table = match conn.db() {
            Db::Sqlite(c) => sqlite_table(c, name).await,
            Db::Postgres(c) => postgres_table(c, name).await,
        }?;
        found.insert(table.name.clone(), table);
    }
    Ok(found)
}

async fn table_names(conn: &mut impl AsConn) -> anyhow::Result<Vec<String>> {
    let names = crate::fetch_scalar!(
        conn,
        all,
        (
            "SELECT name FROM sqlite_master
             WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
               AND name <> '_sqlx_migrations'
             ORDER BY name",
            "SELECT c.relname::TEXT FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'
               AND c.relname <> '_sqlx_migrations'
             ORDER BY 1",
        )
    )
    .context("cannot list the database's tables")?;
    Ok(names)
}

/// The storage a SQLite column's declared type gives it (its affinity, by SQLite's
/// rules: INT, then CHAR/CLOB/TEXT, then BLOB or nothing, then REAL/FLOA/DOUB).
fn sqlite_kind(declared: &str) -> Kind {
    let declared = declared.to_ascii_uppercase();
    if declared.contains("INT") {
        Kind::Integer
    } else if ["CHAR", "CLOB", "TEXT"]
        .iter()
        .any(|t| declared.contains(t))
    {
        Kind::Text
    } else if declared.contains("BLOB") || declared.is_empty() {
        Kind::Blob
    } else if ["REAL", "FLOA", "DOUB"]
        .iter()
        .any(|t| declared.contains(t))
    {
        Kind::Real
    } else {
        Kind::Any
    }
}

async fn sqlite_table(
    conn: &mut sqlx_sqlite::SqliteConnection,
    name: String,
) -> anyhow::Result<Table> {
    let context = || format!("cannot read the definition of table {name}");
    let (sql, without_rowid): (String, bool) = sqlx::query_as(
        "SELECT m.sql, l.wr FROM sqlite_master m
         JOIN pragma_table_list l ON l.name = m.name AND l.schema = 'main'
         WHERE m.type = 'table' AND m.name = $1",
    )
    .bind(&name)
    .fetch_one(&mut *conn)
    .await
    .with_context(context)?;
    // (name, declared type, position in the primary key: 0 when not in it)
    let columns: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT name, type, pk FROM pragma_table_info($1) ORDER BY cid")
            .bind(&name)
            .fetch_all(&mut *conn)
            .await
            .with_context(context)?;
    let references: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list($1)")
            .bind(&name)
            .fetch_all(&mut *conn)
            .await
            .with_context(context)?;
    let mut key: Vec<&(String, String, i64)> = columns.iter().filter(|c| c.2 > 0).collect();
    key.sort_by_key(|c| c.2);
    // An INTEGER PRIMARY KEY of a rowid table is the rowid, which SQLite numbers.
    let numbered = match key.as_slice() {
        [(column, declared, _)] if !without_rowid && declared.eq_ignore_ascii_case("INTEGER") => {
            Some(Numbered {
                column: column.clone(),
                sequence: None,
                autoincrement: sql.to_ascii_uppercase().contains("AUTOINCREMENT"),
            })
        }
        _ => None,
    };
    // A WITHOUT ROWID table is stored in its key's order, which a plain scan follows.
    let order = (!without_rowid).then(|| "rowid".to_owned());
    Ok(Table {
        columns: columns
            .iter()
            .map(|(column, declared, _)| Column {
                name: column.clone(),
                kind: sqlite_kind(declared),
            })
            .collect(),
        references: references.into_iter().filter(|r| *r != name).collect(),
        numbered,
        order,
        name,
    })
}

/// The storage of a PostgreSQL type (as `format_type` names it), or `None` for one
/// wfmd's schema does not use.
fn postgres_kind(type_name: &str) -> Option<Kind> {
    Some(match type_name {
        "bigint" | "integer" | "smallint" | "boolean" => Kind::Integer,
        "double precision" | "real" => Kind::Real,
        "text" => Kind::Text,
        t if t.starts_with("character") => Kind::Text,
        "bytea" => Kind::Blob,
        _ => return None,
    })
}

async fn postgres_table(
    conn: &mut sqlx_postgres::PgConnection,
    name: String,
) -> anyhow::Result<Table> {
    let context = || format!("cannot read the definition of table {name}");
    // (name, type, the sequence numbering it)
    let columns: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT a.attname::TEXT, format_type(a.atttypid, a.atttypmod),
                pg_get_serial_sequence(quote_ident($1), a.attname)
         FROM pg_attribute a
         WHERE a.attrelid = quote_ident($1)::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
    )
    .bind(&name)
    .fetch_all(&mut *conn)
    .await
    .with_context(context)?;
    let references: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT r.relname::TEXT FROM pg_constraint k
         JOIN pg_class r ON r.oid = k.confrelid
         WHERE k.contype = 'f' AND k.conrelid = quote_ident($1)::regclass",
    )
    .bind(&name)
    .fetch_all(&mut *conn)
    .await
    .with_context(context)?;
    let key: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::TEXT FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = quote_ident($1)::regclass AND i.indisprimary
         ORDER BY array_position(i.indkey::SMALLINT[], a.attnum)",
    )
    .bind(&name)
    .fetch_all(&mut *conn)
    .await
    .with_context(context)?;
    let mut kinds = Vec::with_capacity(columns.len());
    for (column, type_name, _) in &columns {
        let Some(kind) = postgres_kind(type_name) else {
            bail!("column {name}.{column} is of type {type_name}, which the copy does not know");
        };
        kinds.push(Column {
            name: column.clone(),
            kind,
        });
    }
    let numbered = columns.iter().find_map(|(column, _, sequence)| {
        sequence.as_ref().map(|sequence| Numbered {
            column: column.clone(),
            sequence: Some(sequence.clone()),
            autoincrement: false,
        })
    });
    let order =
        (!key.is_empty()).then(|| key.iter().map(|c| quoted(c)).collect::<Vec<_>>().join(", "));
    Ok(Table {
        columns: kinds,
        references: references.into_iter().filter(|r| *r != name).collect(),
        numbered,
        order,
        name,
    })
}

/// `names` in an order where every table comes after the tables its foreign keys point
/// at (among `names`; alphabetical where nothing else decides).
pub(super) fn in_key_order(
    tables: &BTreeMap<String, Table>,
    names: &[String],
) -> anyhow::Result<Vec<String>> {
    let wanted: BTreeSet<&String> = names.iter().collect();
    let mut placed: Vec<String> = Vec::with_capacity(names.len());
    let mut left: BTreeSet<&String> = wanted.clone();
    while !left.is_empty() {
        let ready: Vec<&String> = left
            .iter()
            .copied()
            .filter(|name| {
                tables[*name]
                    .references
                    .iter()
                    .all(|r| !wanted.contains(r) || placed.contains(r))
            })
            .collect();
        if ready.is_empty() {
            bail!(
                "the foreign keys of tables {} point at each other in a circle: no order \
                 copies them",
                left.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for name in ready {
            left.remove(name);
            placed.push(name.clone());
        }
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_declared_types_map_to_their_affinity() {
        assert_eq!(sqlite_kind("INTEGER"), Kind::Integer);
        assert_eq!(sqlite_kind("bigint"), Kind::Integer);
        assert_eq!(sqlite_kind("TEXT"), Kind::Text);
        assert_eq!(sqlite_kind("VARCHAR(20)"), Kind::Text);
        assert_eq!(sqlite_kind("BLOB"), Kind::Blob);
        assert_eq!(sqlite_kind(""), Kind::Blob);
        assert_eq!(sqlite_kind("REAL"), Kind::Real);
        assert_eq!(sqlite_kind("DOUBLE PRECISION"), Kind::Real);
        assert_eq!(sqlite_kind("NUMERIC"), Kind::Any);
    }

    fn table(name: &str, references: &[&str]) -> (String, Table) {
        (
            name.to_owned(),
            Table {
                name: name.to_owned(),
                columns: Vec::new(),
                references: references.iter().map(|r| (*r).to_owned()).collect(),
                numbered: None,
                order: None,
            },
        )
    }

    #[test]
    fn tables_come_after_the_tables_their_keys_point_at() {
        let tables: BTreeMap<String, Table> = [
            table("a_attempts", &["deliveries"]),
            table("deliveries", &["events"]),
            table("events", &[]),
            table("z_alone", &[]),
        ]
        .into_iter()
        .collect();
        let names: Vec<String> = tables.keys().cloned().collect();
        assert_eq!(
            in_key_order(&tables, &names).unwrap(),
            ["events", "z_alone", "deliveries", "a_attempts"]
        );
    }

    #[test]
    fn keys_in_a_circle_are_refused_by_name() {
        let tables: BTreeMap<String, Table> = [table("a", &["b"]), table("b", &["a"])]
            .into_iter()
            .collect();
        let names: Vec<String> = tables.keys().cloned().collect();
        let refused = in_key_order(&tables, &names).unwrap_err().to_string();
        assert!(refused.contains("a, b"), "{refused}");
    }
}
