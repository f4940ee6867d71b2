//! Rows on their way from one database to the other: read as [`Value`]s whatever the
//! backend, made what the target's column holds, and written in batches — PostgreSQL's
//! `COPY … FROM STDIN` (its fastest way in), or multi-row INSERTs on SQLite — so that
//! no more than one batch is ever held in memory, however large the table.

use std::fmt::Write as _;

use anyhow::{Context, anyhow, bail};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use sqlx::{Row, TypeInfo, ValueRef};
use sqlx_postgres::{PgConnection, PgCopyIn, PgRow};
use sqlx_sqlite::{SqliteConnection, SqliteRow};

use super::catalogue::{Kind, quoted};
use crate::store::{AsConn, Db};

/// Bytes of `COPY` text gathered before they are sent to PostgreSQL.
const COPY_CHUNK: usize = 256 * 1024;

/// Rows per SQLite INSERT, at most; fewer for wide tables, to stay under SQLite's 32,766
/// bound parameters per statement.
const INSERT_ROWS: usize = 500;

/// SQLite's limit on a statement's parameters (since 3.32).
const SQLITE_MAX_PARAMETERS: usize = 32_766;

/// One value of a row, as SQLite's storage classes have it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn describe(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "an integer",
            Value::Real(_) => "a real number",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }

    /// The value as a column of `kind` holds it: an integer becomes a real in a REAL
    /// column (as SQLite itself does), a whole real an integer in an INTEGER one; any
    /// other change of kind is refused rather than guessed.
    pub fn into_kind(self, kind: Kind) -> Result<Value, Value> {
        match (self, kind) {
            (value @ Value::Null, _) | (value, Kind::Any) => Ok(value),
            (Value::Integer(i), Kind::Real) => Ok(Value::Real(i as f64)),
            (Value::Real(r), Kind::Integer)
                if r.fract() == 0.0 && r >= i64::MIN as f64 && r < i64::MAX as f64 =>
            {
                Ok(Value::Integer(r as i64))
            }
            (value @ Value::Integer(_), Kind::Integer)
            | (value @ Value::Real(_), Kind::Real)
            | (value @ Value::Text(_), Kind::Text)
            | (value @ Value::Blob(_), Kind::Blob) => Ok(value),
            (value, _) => Err(value),
        }
    }
}

/// The values of a SQLite row, each as it is stored (SQLite types values, not columns).
pub(super) fn sqlite_values(row: &SqliteRow) -> Result<Vec<Value>, sqlx::Error> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let storage = raw.type_info();
            Ok(match storage.name() {
                "INTEGER" => Value::Integer(row.try_get_unchecked(i)?),
                "REAL" => Value::Real(row.try_get_unchecked(i)?),
                "TEXT" => Value::Text(row.try_get_unchecked(i)?),
                _ => Value::Blob(row.try_get_unchecked(i)?),
            })
        })
        .collect()
}

/// The values of a PostgreSQL row, by each column's type.
pub(super) fn postgres_values(row: &PgRow) -> anyhow::Result<Vec<Value>> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let type_info = raw.type_info();
            Ok(match type_info.name() {
                "INT8" => Value::Integer(row.try_get(i)?),
                "INT4" => Value::Integer(row.try_get::<i32, _>(i)?.into()),
                "INT2" => Value::Integer(row.try_get::<i16, _>(i)?.into()),
                "BOOL" => Value::Integer(row.try_get::<bool, _>(i)?.into()),
                "FLOAT8" => Value::Real(row.try_get(i)?),
                "FLOAT4" => Value::Real(row.try_get::<f32, _>(i)?.into()),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::Text(row.try_get(i)?),
                "BYTEA" => Value::Blob(row.try_get(i)?),
                other => bail!("a column of type {other}, which the copy does not know"),
            })
        })
        .collect()
}

/// The rows `SELECT` (`sql`) gives on `conn`, one at a time.
pub(super) fn stream<'c>(
    conn: Db<&'c mut SqliteConnection, &'c mut PgConnection>,
    sql: String,
) -> BoxStream<'c, anyhow::Result<Vec<Value>>> {
    use futures::StreamExt;
    match conn {
        Db::Sqlite(c) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch(c)
            .map(|row| Ok(sqlite_values(&row?)?))
            .boxed(),
        Db::Postgres(c) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch(c)
            .map(|row| postgres_values(&row?))
            .boxed(),
    }
}

/// Every row of `sql` on `conn` (for small tables only).
pub(super) async fn all(conn: &mut impl AsConn, sql: String) -> anyhow::Result<Vec<Vec<Value>>> {
    stream(conn.db(), sql).try_collect().await
}

/// Where a table's rows go on the target, in batches.
pub(super) enum Sink<'c> {
    Postgres {
        copy: PgCopyIn<&'c mut PgConnection>,
        buffer: Vec<u8>,
    },
    Sqlite {
        conn: &'c mut SqliteConnection,
        insert: String,
        columns: usize,
        per_statement: usize,
        rows: Vec<Vec<Value>>,
    },
}

impl<'c> Sink<'c> {
    /// Starts writing `columns` of `table` on `conn`.
    pub async fn open(
        conn: Db<&'c mut SqliteConnection, &'c mut PgConnection>,
        table: &str,
        columns: &[String],
    ) -> anyhow::Result<Sink<'c>> {
        let list = columns
            .iter()
            .map(|c| quoted(c))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(match conn {
            Db::Postgres(c) => Sink::Postgres {
                copy: c
                    .copy_in_raw(&format!("COPY {} ({list}) FROM STDIN", quoted(table)))
                    .await
                    .with_context(|| format!("cannot start copying into {table}"))?,
                buffer: Vec::with_capacity(COPY_CHUNK + 4096),
            },
            Db::Sqlite(c) => Sink::Sqlite {
                conn: c,
                insert: format!("INSERT INTO {} ({list}) VALUES ", quoted(table)),
                columns: columns.len(),
                per_statement: (SQLITE_MAX_PARAMETERS / columns.len().max(1)).clamp(1, INSERT_ROWS),
                rows: Vec::new(),
            },
        })
    }

    /// Adds one row (its values in the order of the columns given to [`Sink::open`]).
    pub async fn push(&mut self, row: Vec<Value>) -> anyhow::Result<()> {
        match self {
            Sink::Postgres { copy, buffer } => {
                copy_line(buffer, &row);
                if buffer.len() >= COPY_CHUNK {
                    copy.send(buffer.as_slice()).await?;
                    buffer.clear();
                }
            }
            Sink::Sqlite {
                rows,
                per_statement,
                ..
            } => {
                rows.push(row);
                if rows.len() >= *per_statement {
                    self.flush_sqlite().await?;
                }
            }
        }
        Ok(())
    }

    /// Writes what is left; returns how many rows PostgreSQL's `COPY` says it took
    /// (`None` on SQLite, whose INSERTs are counted by the caller's check).
    pub async fn finish(mut self) -> anyhow::Result<Option<u64>> {
        match self {
            Sink::Postgres { mut copy, buffer } => {
                if !buffer.is_empty() {
                    copy.send(buffer.as_slice()).await?;
                }
                Ok(Some(copy.finish().await?))
            }
            Sink::Sqlite { .. } => {
                self.flush_sqlite().await?;
                Ok(None)
            }
        }
    }

    async fn flush_sqlite(&mut self) -> anyhow::Result<()> {
        let Sink::Sqlite {
            conn,
            insert,
            columns,
            rows,
            ..
        } = self
        else {
            return Ok(());
        };
        if rows.is_empty() {
            return Ok(());
        }
        let mut sql = insert.clone();
        let one = format!("({})", vec!["?"; *columns].join(", "));
        for i in 0..rows.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&one);
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in rows.drain(..).flatten() {
            query = match value {
                Value::Null => query.bind(None::<i64>),
                Value::Integer(i) => query.bind(i),
                Value::Real(r) => query.bind(r),
                Value::Text(t) => query.bind(t),
                Value::Blob(b) => query.bind(b),
            };
        }
        query.execute(&mut **conn).await?;
        Ok(())
    }
}

/// Appends `row` to `buffer` as a line of `COPY`'s text format: tab-separated, `\N` for
/// NULL, backslash escapes for the characters that separate, bytea as `\\x` and hex.
fn copy_line(buffer: &mut Vec<u8>, row: &[Value]) {
    let mut line = String::new();
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            line.push('\t');
        }
        match value {
            Value::Null => line.push_str("\\N"),
            Value::Integer(n) => {
                let _ = write!(line, "{n}");
            }
            // Rust prints the shortest text that reads back as the same double.
            Value::Real(r) if r.is_finite() => {
                let _ = write!(line, "{r}");
            }
            Value::Real(r) if r.is_nan() => line.push_str("NaN"),
            Value::Real(r) if *r > 0.0 => line.push_str("Infinity"),
            Value::Real(_) => line.push_str("-Infinity"),
            Value::Text(text) => {
                for c in text.chars() {
                    match c {
                        '\\' => line.push_str("\\\\"),
                        '\n' => line.push_str("\\n"),
                        '\r' => line.push_str("\\r"),
                        '\t' => line.push_str("\\t"),
                        c => line.push(c),
                    }
                }
            }
            Value::Blob(bytes) => {
                line.push_str("\\\\x");
                line.push_str(&hex::encode(bytes));
            }
        }
    }
    line.push('\n');
    buffer.extend_from_slice(line.as_bytes());
}

/// Says which value of which column did not fit.
pub(super) fn misfit(table: &str, column: &str, value: &Value, kind: Kind) -> anyhow::Error {
    anyhow!(
        "{table}.{column} holds {} where the target's column holds {kind:?} values",
        value.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(row: &[Value]) -> String {
        let mut buffer = Vec::new();
        copy_line(&mut buffer, row);
        String::from_utf8(buffer).unwrap()
    }

    #[test]
    fn copy_text_escapes_what_separates_fields_and_lines() {
        assert_eq!(
            line(&[
                Value::Integer(-7),
                Value::Null,
                Value::Text("a\tb\nc\\d\re".into()),
                Value::Real(0.1),
            ]),
            "-7\t\\N\ta\\tb\\nc\\\\d\\re\t0.1\n"
        );
        assert_eq!(
            line(&[Value::Blob(vec![0, 0xff]), Value::Text(String::new())]),
            "\\\\x00ff\t\n"
        );
        assert_eq!(
            line(&[
                Value::Real(f64::NAN),
                Value::Real(f64::INFINITY),
                Value::Real(f64::NEG_INFINITY),
                Value::Real(1e300),
            ])
            .split('\t')
            .take(3)
            .collect::<Vec<_>>(),
            ["NaN", "Infinity", "-Infinity"]
        );
    }

    #[test]
    fn a_real_reads_back_as_the_same_double() {
        for r in [0.1, 1.0 / 3.0, 1e-300, 123_456_789.123_456_78, 1e300] {
            let text = line(&[Value::Real(r)]);
            assert_eq!(text.trim_end().parse::<f64>().unwrap(), r);
        }
    }

    #[test]
    fn values_change_kind_only_where_nothing_is_lost() {
        assert_eq!(
            Value::Integer(3).into_kind(Kind::Real),
            Ok(Value::Real(3.0))
        );
        assert_eq!(
            Value::Real(3.0).into_kind(Kind::Integer),
            Ok(Value::Integer(3))
        );
        assert!(Value::Real(3.5).into_kind(Kind::Integer).is_err());
        assert!(Value::Text("3".into()).into_kind(Kind::Integer).is_err());
        assert!(Value::Blob(vec![1]).into_kind(Kind::Text).is_err());
        assert_eq!(Value::Null.into_kind(Kind::Blob), Ok(Value::Null));
        assert_eq!(
            Value::Text("x".into()).into_kind(Kind::Any),
            Ok(Value::Text("x".into()))
        );
    }
}
