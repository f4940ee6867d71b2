#!/usr/bin/env python3
"""Holds wfmd's PostgreSQL schema against its SQLite one, table by table.

Run: python3 tests/support/compare-schemas.py [--apply] POSTGRES_URL [SQLITE_FILE]
  POSTGRES_URL  an empty database (--apply runs migrations/postgres/*.sql on it first
                with `psql -v ON_ERROR_STOP=1`) or one `wfmd migrate` made; its first
                schema on the search path is compared; `psql` on PATH.
  SQLITE_FILE   a database `wfmd migrate` made; without it, the SQLite migrations
                (migrations/sqlite/*.sql, else migrations/*.sql) run in memory.

`cargo test` runs it on a fresh database of each backend that wfmd's own migrator made
(tests/api/schema_parity.rs).

Compares each table's columns (order, name, type as mapped, nullability, default), its
primary key, unique constraints, foreign keys (with ON DELETE / ON UPDATE) and CHECK
constraints; every index (columns, uniqueness, partial WHERE); every trigger (table,
timing, event, condition, message); and the rows a fresh database holds. Prints what
it compared and each difference; exits 1 when a difference is not one of the few the
PostgreSQL schema makes on purpose (listed in EXPECTED below).
"""

import glob
import json
import os
import re
import sqlite3
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TYPES = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text", "BLOB": "bytea"}

# Differences the PostgreSQL schema makes on purpose, and why.
EXPECTED = {
    "trigger audit_log_refuses_truncate: only on PostgreSQL":
        "TRUNCATE fires no row trigger; SQLite has no TRUNCATE",
    "rows of webhook_redaction_pending: SQLite [[1]], PostgreSQL []":
        "the marker asks wfmd to mask endpoints stored before; a new database has none",
}


def migrations(backend):
    folder = os.path.join(ROOT, "migrations", backend)
    if backend == "sqlite" and not os.path.isdir(folder):
        folder = os.path.join(ROOT, "migrations")
    return sorted(glob.glob(os.path.join(folder, "*.sql")))


def psql(url, *args):
    result = subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, *args],
        capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"psql {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def pg_rows(url, query):
    out = psql(url, "-c", f"SELECT COALESCE(json_agg(q), '[]') FROM ({query}) AS q")
    return json.loads(out)


def norm(sql):
    """An expression's text, comparable across both: PostgreSQL's casts, ANY(ARRAY[..])
    for IN and >= AND <= for BETWEEN undone, then case, spaces and parentheses dropped."""
    if sql is None:
        return None
    s = re.sub(r"::(text|bigint|integer|double precision|numeric)(\[\])?", "", sql)
    s = re.sub(r"=\s*ANY\s*\(\s*ARRAY\[([^\]]*)\]\s*\)", r"IN (\1)", s)
    s = re.sub(r"(\w+)\s+BETWEEN\s+(\S+)\s+AND\s+(\S+)", r"\1 >= \2 AND \1 <= \3", s,
               flags=re.I)
    return re.sub(r"[\s()]", "", s).lower()


def default(value):
    return None if value is None else re.sub(r"::\w+( precision)?$", "", value)


def checks_in(create_sql):
    """The CHECK expressions of a CREATE TABLE text, in order."""
    found = []
    for match in re.finditer(r"\bCHECK\s*\(", create_sql, flags=re.I):
        depth, start = 1, match.end()
        i = start
        while depth:
            depth += {"(": 1, ")": -1}.get(create_sql[i], 0)
            i += 1
        found.append(create_sql[start:i - 1])
    return found


def sqlite_schema(db):
    db.row_factory = sqlite3.Row
    schema = {"tables": {}, "indexes": {}, "triggers": {}, "rows": {}}
    master = db.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master "
        "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations'"
    ).fetchall()
    for obj in (o for o in master if o["type"] == "table"):
        name = obj["name"]
        columns = db.execute(f"PRAGMA table_info('{name}')").fetchall()
        pk = [c["name"] for c in sorted(columns, key=lambda c: c["pk"]) if c["pk"]]
        rowid_alias = len(pk) == 1 and any(
            c["name"] == pk[0] and c["type"].upper() == "INTEGER" for c in columns)
        uniques = []
        for index in db.execute(f"PRAGMA index_list('{name}')").fetchall():
            cols = [r["name"] for r in db.execute(f"PRAGMA index_info('{index['name']}')")]
            if index["origin"] == "u":
                uniques.append(cols)
            elif index["origin"] == "c":
                sql = next(o["sql"] for o in master if o["name"] == index["name"])
                where = re.search(r"\bWHERE\b(.*)$", sql, flags=re.I | re.S)
                schema["indexes"][index["name"]] = {
                    "table": name, "columns": cols, "unique": bool(index["unique"]),
                    "where": norm(where.group(1)) if where else None}
        fks = [{"columns": [f["from"]], "references": f"{f['table']} ({f['to']})",
                "on_delete": f["on_delete"], "on_update": f["on_update"]}
               for f in db.execute(f"PRAGMA foreign_key_list('{name}')")]
        schema["tables"][name] = {
            "columns": [{
                "name": c["name"],
                "type": TYPES.get(c["type"].upper(), c["type"]),
                # Key columns are NOT NULL in a STRICT (or WITHOUT ROWID) table and for
                # an INTEGER PRIMARY KEY, whatever the pragma says was declared.
                "not_null": bool(c["notnull"] or c["pk"]),
                "default": c["dflt_value"],
            } for c in columns],
            "primary_key": pk,
            "rowid_alias": rowid_alias,
            "unique": sorted(uniques),
            "foreign_keys": sorted(fks, key=json.dumps),
            "checks": sorted(norm(c) for c in checks_in(obj["sql"])),
        }
        schema["rows"][name] = [list(r) for r in db.execute(f"SELECT * FROM '{name}'")]
    for obj in (o for o in master if o["type"] == "trigger"):
        head = re.match(r"CREATE TRIGGER \S+ (BEFORE|AFTER|INSTEAD OF) (\w+) ON (\w+)\s*"
                        r"(?:WHEN (.*?))?\s*BEGIN", obj["sql"], flags=re.I | re.S)
        message = re.search(r"RAISE\s*\(\s*\w+\s*,\s*'([^']*)'", obj["sql"], flags=re.I)
        schema["triggers"][obj["name"]] = {
            "table": head.group(3), "timing": head.group(1).upper(),
            "event": head.group(2).upper(), "per": "ROW",
            "when": norm(head.group(4)), "message": message and message.group(1)}
    return schema


def postgres_schema(url):
    schema = {"tables": {}, "indexes": {}, "triggers": {}, "rows": {}}
    # sqlx's own table, as on SQLite, is the migrator's and no part of the schema.
    tables = [t["tablename"] for t in pg_rows(
        url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
             "AND tablename <> '_sqlx_migrations'")]
    columns = pg_rows(url, """
        SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity
        FROM information_schema.columns WHERE table_schema = current_schema()
        ORDER BY table_name, ordinal_position""")
    constraints = pg_rows(url, """
        SELECT c.conrelid::regclass::text AS tbl, c.conname, c.contype,
               pg_get_constraintdef(c.oid) AS def, c.confdeltype, c.confupdtype,
               ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                     ORDER BY k.o) AS cols,
               c.confrelid::regclass::text AS ftbl,
               ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, o)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                     ORDER BY k.o) AS fcols
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = current_schema()""")
    actions = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL",
               "d": "SET DEFAULT"}
    for name in tables:
        cols = [c for c in columns if c["table_name"] == name]
        mine = [c for c in constraints if c["tbl"] == name]
        pk = next((c["cols"] for c in mine if c["contype"] == "p"), [])
        schema["tables"][name] = {
            "columns": [{
                "name": c["column_name"], "type": c["data_type"],
                "not_null": c["is_nullable"] == "NO", "default": default(c["column_default"]),
            } for c in cols],
            "identity": [c["column_name"] for c in cols if c["is_identity"] == "YES"],
            "primary_key": pk,
            "unique": sorted(c["cols"] for c in mine if c["contype"] == "u"),
            "foreign_keys": sorted(({
                "columns": c["cols"], "references": f"{c['ftbl']} ({', '.join(c['fcols'])})",
                "on_delete": actions[c["confdeltype"]], "on_update": actions[c["confupdtype"]],
            } for c in mine if c["contype"] == "f"), key=json.dumps),
            "checks": sorted(norm(re.sub(r"^CHECK\s*", "", c["def"]))
                             for c in mine if c["contype"] == "c"),
        }
        schema["rows"][name] = [list(r.values()) for r in pg_rows(url, f"SELECT * FROM {name}")]
    for index in pg_rows(url, """
            SELECT i.indexrelid::regclass::text AS name, i.indrelid::regclass::text AS tbl,
                   i.indisunique AS uniq, pg_get_expr(i.indpred, i.indrelid) AS pred,
                   ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
                         ORDER BY k.o) AS cols
            FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = current_schema()
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"""):
        schema["indexes"][index["name"]] = {
            "table": index["tbl"], "columns": index["cols"], "unique": index["uniq"],
            "where": norm(index["pred"])}
    for trigger in pg_rows(url, """
            SELECT t.tgname AS name, t.tgrelid::regclass::text AS tbl,
                   pg_get_triggerdef(t.oid) AS def, p.prosrc AS body
            FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
            JOIN pg_class r ON r.oid = t.tgrelid JOIN pg_namespace n ON n.oid = r.relnamespace
            WHERE NOT t.tgisinternal AND n.nspname = current_schema()"""):
        head = re.match(r"CREATE TRIGGER \S+ (BEFORE|AFTER|INSTEAD OF) (\w+) ON \S+ "
                        r"FOR EACH (ROW|STATEMENT)", trigger["def"])
        message = re.search(r"RAISE\s+EXCEPTION\s+'([^']*)'", trigger["body"], flags=re.I)
        condition = re.search(r"\bIF\b(.*?)\bTHEN\b", trigger["body"], flags=re.I | re.S)
        schema["triggers"][trigger["name"]] = {
            "table": trigger["tbl"], "timing": head.group(1), "event": head.group(2),
            "per": head.group(3), "when": norm(condition.group(1)) if condition else None,
            "message": message and message.group(1)}
    return schema


def compare(lite, pg):
    differences, notes = [], []

    def differ(what, a, b):
        if a != b:
            differences.append(f"{what}: SQLite {json.dumps(a)}, PostgreSQL {json.dumps(b)}")

    for name in sorted(set(lite["tables"]) | set(pg["tables"])):
        if name not in pg["tables"] or name not in lite["tables"]:
            side = "SQLite" if name in lite["tables"] else "PostgreSQL"
            differences.append(f"table {name}: only on {side}")
            continue
        a, b = lite["tables"][name], pg["tables"][name]
        differ(f"columns of {name} (in order)", [c["name"] for c in a["columns"]],
               [c["name"] for c in b["columns"]])
        for ca, cb in zip(a["columns"], b["columns"]):
            if ca["name"] == cb["name"]:
                for key in ("type", "not_null", "default"):
                    differ(f"{key} of {name}.{ca['name']}", ca[key], cb[key])
        for key in ("primary_key", "unique", "foreign_keys", "checks"):
            differ(f"{key} of {name}", a[key], b[key])
        if b["identity"]:
            if not (a["rowid_alias"] and b["identity"] == a["primary_key"]):
                differences.append(
                    f"identity of {name}: {b['identity']} is not SQLite's INTEGER PRIMARY KEY")
            notes.append(f"{name}.{b['identity'][0]}: identity (inserts leave it out)")
        elif a["rowid_alias"]:
            notes.append(f"{name}.{a['primary_key'][0]}: INTEGER PRIMARY KEY, supplied")
        differ(f"rows of {name}", lite["rows"][name], pg["rows"][name])
    for kind, one in (("indexes", "index"), ("triggers", "trigger")):
        for name in sorted(set(lite[kind]) | set(pg[kind])):
            if name not in pg[kind] or name not in lite[kind]:
                side = "SQLite" if name in lite[kind] else "PostgreSQL"
                differences.append(f"{one} {name}: only on {side}")
                continue
            for key in lite[kind][name]:
                differ(f"{key} of {one} {name}", lite[kind][name][key], pg[kind][name][key])
    return differences, notes


def main():
    args = [a for a in sys.argv[1:] if a != "--apply"]
    if not 1 <= len(args) <= 2:
        sys.exit(__doc__)
    url = args[0]
    if "--apply" in sys.argv:
        for path in migrations("postgres"):
            psql(url, "-f", path)
    if len(args) == 2:
        lite_db = sqlite3.connect(f"file:{args[1]}?mode=ro", uri=True)
    else:
        lite_db = sqlite3.connect(":memory:")
        for path in migrations("sqlite"):
            with open(path) as sql:
                lite_db.executescript(sql.read())
    lite, pg = sqlite_schema(lite_db), postgres_schema(url)
    differences, notes = compare(lite, pg)
    print(f"compared {len(lite['tables'])} tables "
          f"({sum(len(t['columns']) for t in lite['tables'].values())} columns), "
          f"{len(lite['indexes'])} indexes, {len(lite['triggers'])} triggers "
          f"(SQLite) with {len(pg['tables'])} tables, {len(pg['indexes'])} indexes, "
          f"{len(pg['triggers'])} triggers (PostgreSQL)")
    for note in notes:
        print(f"  {note}")
    unexpected = [d for d in differences if d not in EXPECTED]
    for difference in differences:
        why = EXPECTED.get(difference)
        print(f"{'expected' if why else 'DIFFERENT'}: {difference}" + (f" ({why})" if why else ""))
    print("same schema" if not unexpected else f"{len(unexpected)} unexpected difference(s)")
    sys.exit(1 if unexpected else 0)


if __name__ == "__main__":
    main()
