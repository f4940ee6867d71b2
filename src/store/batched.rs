//! Writes to several tables that go to PostgreSQL as one statement.
//!
//! A change's record inserts into four tables and deletes from a fifth, each write one
//! statement whatever the number of rows (its rows as one JSON list). Under the
//! tenant's write lock each statement is a round trip, and sqlx sends one statement per
//! round trip, so on PostgreSQL the writes that need nothing of each other are sent
//! together: each becomes a data-modifying `WITH` of one statement, which PostgreSQL
//! runs whole or not at all, as the separate statements were within their transaction.
//! SQLite has no such `WITH` and no round trips to save: there each write runs as its
//! own statement, in order.
//!
//! The writes of one statement see the table as it was before that statement: none may
//! read what another writes (the record's do not: a delete of intents, inserts of
//! attempts, audit entries and events).
//!
//! On PostgreSQL each list is parsed once into `jsonb` rows and a row's columns are read
//! with the `#>>` operator, rather than with the `json_each` and `json_extract`
//! functions the text names for SQLite (`for_postgres`): the functions are dear to
//! plan, and a fleet's statements are planned again nearly every time they run; and
//! `json_each` gave each row back as text, parsed again by every column read.

use crate::store::{AsConn, Backend, Db, execute};

/// The parameter every write's text names once: its rows, as a JSON list.
const ROWS: &str = "json_each($1)";

/// One write of many rows: a statement whose one parameter, `$1`, is its rows as a JSON
/// list read with `json_each($1)`.
#[derive(Debug)]
pub struct TableWrite {
    sql: String,
    rows: String,
}

impl TableWrite {
    /// The write `sql` of `rows`. `sql` names its parameter once, as `json_each($1)`,
    /// and takes no other.
    pub(crate) fn new(sql: String, rows: String) -> TableWrite {
        debug_assert_eq!(sql.matches(ROWS).count(), 1, "{sql}");
        debug_assert_eq!(sql.matches('$').count(), sql.matches("'$").count() + 1);
        TableWrite { sql, rows }
    }

    /// Runs the write alone.
    pub async fn run(self, conn: &mut impl AsConn) -> Result<(), sqlx::Error> {
        let sql = for_backend(conn, self.sql);
        execute!(conn, sqlx::AssertSqlSafe(sql), self.rows).map(drop)
    }

    /// The write as one PostgreSQL statement that then selects `then` (text of our own
    /// code, which may name parameters from `$2` on), and the rows to bind as `$1`. What
    /// `then` does is part of the write's statement, so of its transaction: for a write
    /// that runs as a statement of its own, outside a transaction block.
    pub(crate) fn on_postgres_then(self, then: &str) -> (String, String) {
        let sql = format!("WITH w0 AS ({}) SELECT {then}", for_postgres(&self.sql));
        (sql, self.rows)
    }
}

/// `sql` (a text for both backends) as `conn`'s backend runs it best: on PostgreSQL,
/// [`for_postgres`].
pub(crate) fn for_backend(conn: &mut impl AsConn, sql: String) -> String {
    match conn.backend() {
        Backend::Sqlite => sql,
        Backend::Postgres => for_postgres(&sql),
    }
}

/// `sql` as PostgreSQL runs it best: each list of rows `json_each($N)` read as `jsonb`
/// once, and each `json_extract(NAME, '$[N]')` (column `N` of a row) read with the
/// `#>>` operator. What each gives is what the migration's `json_each` and
/// `json_extract` functions (SQLite's, for the texts both backends share) give. Anything
/// else is left as it is.
///
/// Why, twice over:
/// - PostgreSQL inlines those functions into each statement that calls them when it
///   plans the statement, parsing each function's body and working out the path once
///   per call. A statement runs on a connection whose plan is usually another tenant's
///   in a fleet (PostgreSQL plans it again whenever `search_path` changed), so the
///   planning is paid at nearly every run: a change's record (31 calls) took 2.0 ms to
///   plan with them, 0.6 ms without.
/// - The function `json_each` gives each row back as text, and each column read parsed
///   that text again: a change's attempt row (17 columns) was parsed 17 times. Read as
///   `jsonb`, the list is parsed once and each column read from the parsed row.
pub(crate) fn for_postgres(sql: &str) -> String {
    let lists = lists_read(sql);
    // A list that cannot be read as `jsonb` here (its alias is not where it is looked
    // for) leaves the whole statement's rows as text, so that every `value` is one thing.
    let as_jsonb = !lists.is_empty() && lists.iter().all(|list| list.follows.is_some());
    let sql = columns_read(sql, as_jsonb);
    if !as_jsonb {
        return sql;
    }
    // The rows' text is made only where the statement still reads it (a list of ids).
    let text_read = has_word(&sql, "value");
    let mut out = String::with_capacity(sql.len() + 160 * lists.len());
    let mut rest = sql.as_str();
    for list in &lists {
        // The column reads before it did not touch the calls.
        let at = rest.find(&list.call).expect("the call is in the text");
        out.push_str(&rest[..at]);
        out.push_str("(SELECT r.o - 1 AS key, ");
        if text_read {
            out.push_str("r.e #>> '{}' AS value, ");
        }
        out.push_str(&format!(
            "r.e AS value_jsonb FROM jsonb_array_elements(CAST({} AS jsonb)) \
             WITH ORDINALITY AS r(e, o) ORDER BY r.o)",
            list.parameter
        ));
        if list.follows == Some(Follows::Clause) {
            // What PostgreSQL names a function read without an alias.
            out.push_str(" AS json_each");
        }
        rest = &rest[at + list.call.len()..];
    }
    out.push_str(rest);
    out
}

/// A `json_each($N)` call of a statement.
struct ListRead {
    /// The call's text.
    call: String,
    /// `$N`.
    parameter: String,
    /// What comes after it, when it is something a subquery may stand before.
    follows: Option<Follows>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follows {
    /// `AS alias`.
    Alias,
    /// The end of the `FROM` item (a clause, a closing bracket, the end).
    Clause,
}

/// The `json_each($N)` calls of `sql`, in order.
fn lists_read(sql: &str) -> Vec<ListRead> {
    const CALL: &str = "json_each($";
    const CLAUSES: [&str; 15] = [
        "WHERE",
        "ON",
        "ORDER",
        "GROUP",
        "LIMIT",
        "OFFSET",
        "JOIN",
        "LEFT",
        "INNER",
        "CROSS",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "RETURNING",
        "HAVING",
    ];
    let mut lists = Vec::new();
    let mut from = 0;
    while let Some(found) = sql[from..].find(CALL) {
        let at = from + found;
        let digits = &sql[at + CALL.len()..];
        let n = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
        from = at + CALL.len();
        if n == 0 || !digits[n..].starts_with(')') {
            continue;
        }
        let call = &sql[at..at + CALL.len() + n + 1];
        let after = sql[at + call.len()..].trim_start();
        let word: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_ascii_uppercase();
        let follows = if word == "AS" {
            Some(Follows::Alias)
        } else if after.is_empty()
            || after.starts_with([')', ',', ';'])
            || CLAUSES.contains(&word.as_str())
        {
            Some(Follows::Clause)
        } else {
            None
        };
        lists.push(ListRead {
            call: call.to_owned(),
            parameter: call["json_each(".len()..call.len() - 1].to_owned(),
            follows,
        });
    }
    lists
}

/// Whether `word` stands in `sql` as a name of its own (not part of a longer one).
fn has_word(sql: &str, word: &str) -> bool {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    sql.match_indices(word).any(|(at, _)| {
        !sql[..at].ends_with(name_char) && !sql[at + word.len()..].starts_with(name_char)
    })
}

/// `sql` with each `json_extract(NAME, '$[N]')` written as `(NAME::jsonb #>> '{N}')`,
/// or, with `as_jsonb` and NAME a list's row (`value`, `e.value`), as
/// `(NAME_jsonb #>> '{N}')`.
fn columns_read(sql: &str, as_jsonb: bool) -> String {
    const CALL: &str = "json_extract(";
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find(CALL) {
        out.push_str(&rest[..at]);
        let call = &rest[at..];
        match column_read(&call[CALL.len()..]) {
            Some((name, index, len)) => {
                let row = name == "value" || name.ends_with(".value");
                if as_jsonb && row {
                    out.push_str(&format!("({name}_jsonb #>> '{{{index}}}')"));
                } else {
                    out.push_str(&format!("({name}::jsonb #>> '{{{index}}}')"));
                }
                rest = &call[CALL.len() + len..];
            }
            None => {
                out.push_str(CALL);
                rest = &call[CALL.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `NAME, '$[N]')` at the start of `args`: the name, the index and the length read.
fn column_read(args: &str) -> Option<(&str, &str, usize)> {
    let name_len = args
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter(|&n| n > 0)?;
    let (name, after) = args.split_at(name_len);
    let after_path = after.strip_prefix(", '$[")?;
    let digits = after_path
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&n| n > 0)?;
    let (index, tail) = after_path.split_at(digits);
    tail.strip_prefix("]')")?;
    Some((name, index, args.len() - tail.len() + "]')".len()))
}

/// Runs `writes`: on PostgreSQL in one statement, on SQLite one after the other.
pub async fn run_all(conn: &mut impl AsConn, writes: Vec<TableWrite>) -> Result<(), sqlx::Error> {
    if writes.len() < 2 {
        for write in writes {
            write.run(conn).await?;
        }
        return Ok(());
    }
    match conn.db() {
        Db::Sqlite(_) => {
            for write in writes {
                write.run(conn).await?;
            }
            Ok(())
        }
        Db::Postgres(c) => {
            let parts: Vec<String> = writes
                .iter()
                .enumerate()
                .map(|(i, write)| {
                    let rows = format!("json_each(${})", i + 1);
                    format!(
                        "w{i} AS ({})",
                        for_postgres(&write.sql.replace(ROWS, &rows))
                    )
                })
                .collect();
            let sql = format!("WITH {} SELECT 1", parts.join(",\n"));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for write in writes {
                query = query.bind(write.rows);
            }
            query.execute(c).await.map(drop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{backends, temp_store_on};
    use crate::store::{fetch, fetch_scalar};
    use rstest_reuse::apply;

    /// Intents of attempts `ids` (their primary key), the rest of each row alike.
    fn intents(ids: &[&str]) -> TableWrite {
        TableWrite::new(
            "INSERT INTO transition_intents
                 (attempt_id, agent_id, target_state, reason, origin, actor, requested_at, owner)
             SELECT value, 'u_001', 'READY', 'WORKING', 'api', 'desk', 1, 'p1'
             FROM json_each($1)"
                .to_owned(),
            serde_json::json!(ids).to_string(),
        )
    }

    /// Every write of a batch takes effect, and one that fails fails them all.
    #[apply(backends)]
    #[tokio::test]
    async fn writes_run_together_take_effect_whole_or_not_at_all(backend: Backend) {
        let (store, _dir) = temp_store_on(backend).await;
        let mut tx = store.begin_write().await.unwrap();
        run_all(&mut tx, vec![intents(&["a", "b"]), intents(&["c"])])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let count = || async {
            let n: i64 = fetch_scalar!(
                store.reader(),
                one,
                "SELECT COUNT(*) FROM transition_intents"
            )
            .unwrap();
            n
        };
        assert_eq!(count().await, 3);

        let mut tx = store.begin_write().await.unwrap();
        // The second write's row is there already.
        let failed = run_all(&mut tx, vec![intents(&["d"]), intents(&["a"])]).await;
        assert!(failed.is_err());
        drop(tx);
        assert_eq!(count().await, 3, "nothing of the failed batch");
    }

    /// A row's columns are read with the operator; the function stays where its
    /// argument is not a column of a row.
    #[test]
    fn postgres_reads_a_rows_columns_without_the_function() {
        let sql = "SELECT CAST(json_extract(value, '$[12]') AS BIGINT), json_extract(e.value, '$[0]'),
                   json_extract(detail, '$.reason'), json_extract(value, '$[x]'), json_extract(value,'$[1]')
                   FROM json_each($1) AS e";
        assert_eq!(
            for_postgres(sql),
            "SELECT CAST((value_jsonb #>> '{12}') AS BIGINT), (e.value_jsonb #>> '{0}'),
                   json_extract(detail, '$.reason'), json_extract(value, '$[x]'), json_extract(value,'$[1]')
                   FROM (SELECT r.o - 1 AS key, r.e #>> '{}' AS value, r.e AS value_jsonb \
                   FROM jsonb_array_elements(CAST($1 AS jsonb)) WITH ORDINALITY AS r(e, o) \
                   ORDER BY r.o) AS e"
        );
    }

    /// A list is read as `jsonb` once, named as the function would be, and its rows'
    /// text is made only where something reads it; a list whose alias is not where it
    /// is looked for leaves the statement's rows as text.
    #[test]
    fn postgres_reads_each_list_once_and_its_rows_text_only_when_read() {
        let list = |n: u8, text: bool| {
            format!(
                "(SELECT r.o - 1 AS key, {}r.e AS value_jsonb FROM \
                 jsonb_array_elements(CAST(${n} AS jsonb)) WITH ORDINALITY AS r(e, o) \
                 ORDER BY r.o)",
                if text { "r.e #>> '{}' AS value, " } else { "" }
            )
        };
        assert_eq!(
            for_postgres("INSERT INTO t (a) SELECT json_extract(value, '$[0]') FROM json_each($2)"),
            format!(
                "INSERT INTO t (a) SELECT (value_jsonb #>> '{{0}}') FROM {} AS json_each",
                list(2, false)
            )
        );
        assert_eq!(
            for_postgres("DELETE FROM t WHERE id IN (SELECT value FROM json_each($1))"),
            format!(
                "DELETE FROM t WHERE id IN (SELECT value FROM {} AS json_each)",
                list(1, true)
            )
        );
        assert_eq!(
            for_postgres("SELECT 1 FROM json_each($1) WHERE true"),
            format!("SELECT 1 FROM {} AS json_each WHERE true", list(1, false))
        );
        let aliased = "SELECT json_extract(value, '$[0]') FROM json_each($1) j";
        assert_eq!(
            for_postgres(aliased),
            "SELECT (value::jsonb #>> '{0}') FROM json_each($1) j"
        );
        // A `value` that no list gave stays what it is.
        assert_eq!(
            for_postgres("SELECT json_extract(value, '$[0]') FROM t"),
            "SELECT (value::jsonb #>> '{0}') FROM t"
        );
    }

    /// What PostgreSQL reads with the operator is what its `json_extract` function
    /// gives, column by column: text, numbers, JSON nulls, booleans, nested values,
    /// quotes and columns past the row's end.
    #[tokio::test]
    async fn postgres_reads_every_kind_of_column_as_its_json_extract_function_does() {
        let (store, _dir) = temp_store_on(Backend::Postgres).await;
        let rows = serde_json::json!([
            ["u_001", 1_764_000_000_123_i64, null, "it's \"quoted\"", true, 1.5],
            [{"a": [1, 2]}, [3, "x"], "", -7, false, "{\"not\": \"parsed\"}"],
        ])
        .to_string();
        let columns: Vec<String> = (0..7)
            .map(|i| format!("json_extract(value, '$[{i}]')"))
            .collect();
        let sql = format!(
            "SELECT CAST(key AS BIGINT), {} FROM json_each($1) ORDER BY key",
            columns.join(", ")
        );
        type Row = (
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let read = |sql: String| {
            let (store, rows) = (&store, rows.clone());
            async move {
                let read: Vec<Row> =
                    fetch!(store.reader(), all, sqlx::AssertSqlSafe(sql), rows).unwrap();
                read
            }
        };
        let translated = for_postgres(&sql);
        assert!(!translated.contains("json_extract"), "{translated}");
        let by_function = read(sql).await;
        assert_eq!(by_function.len(), 2);
        assert_eq!(
            by_function[0].1.as_deref(),
            Some("u_001"),
            "{by_function:?}"
        );
        assert_eq!(read(translated).await, by_function);
    }
}
