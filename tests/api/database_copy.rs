//! `wfmd database copy --to URL`: a SQLite database holding every kind of record moved
//! into PostgreSQL row for row, its audit chain verifying there and going on under a
//! daemon; a target that holds data refused and left alone; several tenants each
//! copied into a schema of their own with their own chain; and `wfmd backup`/`restore`
//! sending PostgreSQL users to pg_dump.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};
use sqlx::{Column, Row, TypeInfo, ValueRef};
use wfmd::on;
use wfmd::store::{Db, Done, Store};

use crate::helpers::{
    Daemon, TestApp, TestDb, TestSim, eventually, http_client, output_of, wait_until, wfmd,
};
use crate::receiver::{Mode, Receiver, SECRET};

/// `audit.key` of the databases copied here.
const KEY: &str = "0123456789abcdef0123456789abcdef-copy";

/// `wfmd ARGS` on the database at `url`, keyed with [`KEY`].
fn wfmd_on(url: &str, args: &[&str]) -> Command {
    let mut command = wfmd();
    command
        .env("WFMD_DATABASE__URL", url)
        .env("WFMD_AUDIT__KEY", KEY)
        .env("WFMD_LOG__LEVEL", "warn")
        .args(args);
    command
}

/// Every table of the database at `url` (opened without migrating or writing), each
/// row as a JSON object of its columns by name, rows sorted: two databases compare
/// equal whatever their backend, column order or row order. Decoded here on its own,
/// not with the copy's code, so a fault there cannot hide itself.
async fn dump(url: &str) -> BTreeMap<String, Vec<String>> {
    let store = Store::open_without_migrating(url).await.unwrap();
    let tables: Vec<String> = on!(
        store.reader(),
        (
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations'",
            "SELECT table_name::TEXT FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
               AND table_name <> '_sqlx_migrations'",
        ),
        |c, sql| sqlx::query_scalar(sql).fetch_all(c).await
    )
    .unwrap();
    let mut dumped = BTreeMap::new();
    for table in tables {
        let sql = format!("SELECT * FROM \"{table}\"");
        let mut rows: Vec<String> = match store.reader().db() {
            Db::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(sqlite_row)
                .collect(),
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(postgres_row)
                .collect(),
        };
        rows.sort();
        dumped.insert(table, rows);
    }
    store.close().await;
    dumped
}

fn sqlite_row(row: &sqlx_sqlite::SqliteRow) -> String {
    let mut object = serde_json::Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).unwrap();
        let value = if raw.is_null() {
            Value::Null
        } else {
            match raw.type_info().name() {
                "INTEGER" => json!(row.try_get_unchecked::<i64, _>(i).unwrap()),
                "REAL" => json!(row.try_get_unchecked::<f64, _>(i).unwrap()),
                "TEXT" => json!(row.try_get_unchecked::<String, _>(i).unwrap()),
                _ => json!(hex::encode(row.try_get_unchecked::<Vec<u8>, _>(i).unwrap())),
            }
        };
        object.insert(column.name().to_owned(), value);
    }
    Value::Object(object).to_string()
}

fn postgres_row(row: &sqlx_postgres::PgRow) -> String {
    let mut object = serde_json::Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).unwrap();
        let value = if raw.is_null() {
            Value::Null
        } else {
            match column.type_info().name() {
                "INT8" => json!(row.try_get::<i64, _>(i).unwrap()),
                "FLOAT8" => json!(row.try_get::<f64, _>(i).unwrap()),
                "TEXT" => json!(row.try_get::<String, _>(i).unwrap()),
                "BYTEA" => json!(hex::encode(row.try_get::<Vec<u8>, _>(i).unwrap())),
                other => panic!("{}: a column of type {other}", column.name()),
            }
        };
        object.insert(column.name().to_owned(), value);
    }
    Value::Object(object).to_string()
}

/// Runs one statement of SQLite text on the database at `url` (without migrating it).
async fn execute(store: &Store, sql: &'static str) {
    let mut tx = store.begin_write().await.unwrap();
    on!(tx, |c| sqlx::query(sql).execute(c).await.map(Done::from))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx.commit().await.unwrap();
}

async fn scalar(url: &str, sql: &'static str) -> i64 {
    let store = Store::open_without_migrating(url).await.unwrap();
    let value = on!(store.reader(), |c| sqlx::query_scalar(sql)
        .fetch_one(c)
        .await)
    .unwrap();
    store.close().await;
    value
}

/// The per-table lines `database copy` printed: table → rows.
fn printed_counts(stdout: &str) -> BTreeMap<String, usize> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (table, rows, unit) = (words.next()?, words.next()?, words.next()?);
            let rows = rows.parse().ok()?;
            (["row", "rows"].contains(&unit) && words.next().is_none())
                .then(|| (table.to_owned(), rows))
        })
        .collect()
}

/// POSTs `body` to the daemon at `address`, expecting `status`; returns the answer.
async fn post(address: &str, path: &str, body: Value, status: u16) -> Value {
    let response = http_client()
        .post(format!("{address}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), status, "POST {path} {body}");
    response.json().await.unwrap()
}

/// Polls `GET path` until its `status` is `completed`.
async fn until_completed(address: &str, path: &str) {
    let http = http_client();
    eventually(&format!("{path} did not complete"), async || {
        let job: Value = http
            .get(format!("{address}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "completed" {
            Ok(())
        } else {
            Err(job.to_string())
        }
    })
    .await;
}

/// Makes, at `db`, a database holding every kind of record wfmd keeps: a daemon
/// against the simulator changes states (some refused, with idempotency keys), runs a
/// bulk job over a team, fires a rule, delivers webhooks (one endpoint disabling an
/// event type with 410), polls skills and queues, and answers an analytics job; the
/// audit chain is keyed and checkpointed. The records a daemon makes only over days or
/// after a crash (rollups, retention horizons, an unsettled intent, adherence
/// exceptions, imported shifts, the redaction marker of an older database) are written
/// as those would leave them.
async fn every_kind_of_record(sim: &TestSim, db: &TestDb) {
    let receiver = Receiver::start().await;
    receiver.set_mode(Mode::GoneFor("bulk.completed"));
    let file = db.dir.path().join("wfmd.toml");
    std::fs::write(
        &file,
        format!(
            "[delivery]\nretry_schedule = [\"50ms\", \"100ms\"]\n\n\
             [live]\nenabled = true\nskill_interval = \"15s\"\nqueue_interval = \"15s\"\n\n\
             [[rules]]\nname = \"tick\"\ncron = \"*/1 * * * * *\"\ntimezone = \"UTC\"\n\
             agents = [\"u_010\"]\nset = \"PAUSED\"\nonly_if_state = [\"READY\"]\n\n\
             [[webhooks]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
            receiver.url()
        ),
    )
    .unwrap();
    let mut env = sim.env(&db.url());
    env.retain(|(k, _)| k != "WFMD_LIVE__ENABLED");
    env.push(("WFMD_AUDIT__KEY".into(), KEY.into()));
    let file_arg = file.display().to_string();
    let daemon = Daemon::spawn_with(&["serve", "--config", &file_arg], &env, None).await;
    let address = daemon.address.clone();

    let free = sim.free_agents();
    for (i, agent) in free.iter().take(3).enumerate() {
        post(
            &address,
            &format!("/v1/agents/{}/transitions", agent.id),
            json!({"state": "NOT_READY", "reason": "BREAK", "idempotency_key": format!("copy-{i}")}),
            200,
        )
        .await;
    }
    post(
        &address,
        &format!("/v1/agents/{}/transitions", sim.off_shift_agent().id),
        json!({"state": "READY"}),
        409,
    )
    .await;
    let job = post(
        &address,
        "/v1/bulk-transitions",
        json!({"team": free[3].team_id, "state": "PAUSED"}),
        202,
    )
    .await;
    until_completed(
        &address,
        &format!("/v1/bulk-transitions/{}", job["job_id"].as_str().unwrap()),
    )
    .await;
    let now = chrono::Utc::now();
    let query = post(
        &address,
        "/v1/analytics/queries",
        json!({"source": "history", "metrics": ["transitions:sum"], "dimensions": ["agent"],
               "from": wfmd::time::rfc3339(now - chrono::Duration::hours(2)),
               "to": wfmd::time::rfc3339(now + chrono::Duration::hours(1)), "bucket": "hour"}),
        202,
    )
    .await;
    until_completed(
        &address,
        &format!(
            "/v1/analytics/queries/{}",
            query["job_id"].as_str().unwrap()
        ),
    )
    .await;
    let url = db.url();
    wait_until("the daemon's records did not all appear", async || {
        scalar(
            &url,
            "SELECT MIN(n) FROM (
                 SELECT COUNT(*) AS n FROM rule_firing_agents
                 UNION ALL SELECT COUNT(*) FROM webhook_disabled
                 UNION ALL SELECT COUNT(*) FROM webhook_attempts
                 UNION ALL SELECT COUNT(*) FROM metric_samples
                 UNION ALL SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered')",
        )
        .await
            > 0
    })
    .await;
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());

    let (code, stdout, stderr) = output_of(wfmd_on(&url, &["audit", "checkpoint"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");

    // Opened without migrating, which would take the redaction marker away.
    let store = Store::open_keyed_without_migrating(&url, None)
        .await
        .unwrap();
    store.check_writable().await.unwrap();
    for sql in [
        "INSERT INTO transition_intents (attempt_id, agent_id, target_state, reason, origin,
             actor, idempotency_key, requested_at, owner)
         VALUES ('0190a000-0000-7000-8000-000000000001', 'u_020', 'PAUSED', 'ADHOC', 'api',
             'api', NULL, 1764000000000, 'crashed-process')",
        "INSERT INTO webhook_redaction_pending (id) VALUES (1)",
        "INSERT INTO imported_shifts (agent_id, shift_start, shift_end, timezone, breaks,
             imported_at, activities)
         VALUES ('u_030', 1764000000000, 1764028800000, 'Europe/Berlin',
             '[{\"start\":1764014400000,\"end\":1764016200000,\"kind\":\"lunch\",\"mandatory\":true}]',
             1763990000000,
             '[{\"start\":1764003600000,\"end\":1764007200000,\"title\":\"Team meeting\"}]')",
        "INSERT INTO schedule_imports (id, actor, sha256, lines, shifts, agents, state,
             stored, applied, error, created_at, heartbeat_at, in_force_at, finished_at)
         VALUES ('0190a000-0000-7000-8000-000000000004', 'desk',
             'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 2, 1, 1,
             'applying', 1, 0, NULL, 1763990000000, 1763990000500, 1763990001000, NULL)",
        "INSERT INTO imported_shifts_staged (import_id, agent_id, shift_start, shift_end,
             timezone, breaks, activities)
         VALUES ('0190a000-0000-7000-8000-000000000004', 'u_033', 1764000000000,
             1764028800000, NULL, '[]', '[]')",
        "INSERT INTO agent_shifts (agent_id, shift_start, shift_end, timezone, breaks,
             breaks_from, fetched_at, activities)
         VALUES ('u_030', 1764000000000, 1764028800000, NULL, '[]', 'break_status',
             1763990000000,
             '[{\"start\":\"2025-11-24T17:00:00Z\",\"end\":\"2025-11-24T18:00:00Z\",\"title\":\"Training\"}]')",
        "INSERT INTO adherence_exceptions (id, agent_id, kind, state, expected, started_at,
             opened_at, closed_at, rule, rules_version, severe_at)
         VALUES ('0190a000-0000-7000-8000-000000000002', 'u_031', 'out_of_rule',
             'NOT_READY', 'WORK', 1764000000000, 1764000120000, 1764000300000, 2,
             '0a1b2c3d4e5f', 1764000200000)",
        "INSERT INTO analytics_daily (day, agent_id, idle_ms, ready_ms, not_ready_ms,
             paused_ms, idle_state_ms, logged_out_ms, on_contact_ms, acw_ms, scheduled_ms,
             in_adherence_ms, exceptions, transitions, violations, latency_p95_ms)
         VALUES (1763942400000, 'u_031', 3600000, 7200000, 1800000, 1200000, 600000, 0,
             9000000, 600000, 28800000, 27000000, 1, 12, 2, NULL)",
        "INSERT INTO analytics_rollup_days (day, agents, computed_at)
         VALUES (1763942400000, 1, 1764028800500)",
        "INSERT INTO retention_horizons (kind, kept_from, pruned_rows, updated_at)
         VALUES ('samples', 1760000000000, 4242, 1764028800000)",
        "INSERT INTO cluster_lease (id, holder, term, acquired_at, expires_at)
         VALUES (1, 'wfmd-a', 3, 1764028800000, 1764028810000)",
        "INSERT INTO cluster_instances (instance_id, advertise_url, started_at, last_seen)
         VALUES ('wfmd-a', 'http://10.0.0.5:8080', 1764028700000, 1764028800000)",
        r#"INSERT INTO live_shared (name, body, published_at)
         VALUES ('roster', '[{"id":"u_031","name":"Ada","team_id":null,"team_name":null,"skills":[]}]',
             1764028800000)"#,
        "INSERT INTO live_tickets (digest, holder, role, expires_at)
         VALUES ('9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08', 'desk',
             'viewer', 1764028860000)",
        r#"INSERT INTO adherence_authorisations (id, agents, team, from_at, to_at, reason,
             created_by, created_at, withdrawn_at, withdrawn_by)
         VALUES ('0190a000-0000-7000-8000-000000000003', '["u_031"]', 't_1', 1764000000000,
             1764001800000, 'coaching', 'desk', 1764000100000, 1764000200000, 'lead')"#,
        "INSERT INTO deferred_changes (agent_id, id, target_state, reason, origin, actor,
             idempotency_key, bulk_job_id, bulk_seq, busy_since, requested_at, expires_at)
         VALUES ('u_032', '0190a000-0000-7000-8000-000000000002', 'NOT_READY', 'LUNCH', 'api',
             'desk', 'api:desk:lunch-1', NULL, NULL, 1764028700000, 1764028800000,
             1764029700000)",
    ] {
        execute(&store, sql).await;
    }
    store.close().await;
}

#[tokio::test]
async fn database_copy_moves_every_kind_of_record_from_sqlite_to_postgres_and_the_chain_verifies() {
    let sim = TestSim::default_tenant().await;
    let source = TestDb::new();
    every_kind_of_record(&sim, &source).await;
    let before = dump(&source.url()).await;
    let empty: Vec<&String> = before
        .iter()
        .filter(|(_, rows)| rows.is_empty())
        .map(|(table, _)| table)
        .collect();
    // A table a new migration adds fails here until the records above cover it.
    assert!(
        empty.is_empty(),
        "tables without a record to copy: {empty:?}"
    );

    let target = throwaway_postgres::shared().fresh_database();
    let (code, stdout, stderr) = output_of(wfmd_on(
        &source.url(),
        &["database", "copy", "--to", &target],
    ))
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let printed = printed_counts(&stdout);
    for (table, rows) in &before {
        assert_eq!(printed.get(table), Some(&rows.len()), "{table}: {stdout}");
    }
    let head: i64 = scalar(&source.url(), "SELECT MAX(seq) FROM audit_log").await;
    assert!(
        stdout.contains(&format!("audit chain ok ({head} entries, head {head} ")),
        "{stdout}"
    );

    let after = dump(&target).await;
    for (table, rows) in &before {
        assert_eq!(after.get(table), Some(rows), "table {table} differs");
    }
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    let (code, stdout, stderr) = output_of(wfmd_on(&target, &["audit", "verify"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("audit log intact"), "{stdout}");

    // The daemon on the copy: a change gets new numbers and its entry chains on.
    let intervals = scalar(&target, "SELECT MAX(id) FROM state_intervals").await;
    let events = scalar(&target, "SELECT MAX(seq) FROM outbox_events").await;
    let mut env = sim.env(&target);
    env.push(("WFMD_AUDIT__KEY".into(), KEY.into()));
    let daemon = Daemon::spawn(&env).await;
    let agent = sim.free_agents().pop().unwrap();
    let changed = post(
        &daemon.address,
        &format!("/v1/agents/{}/transitions", agent.id),
        json!({"state": "PAUSED", "reason": "ADHOC"}),
        200,
    )
    .await;
    let attempt = changed["attempt_id"].as_str().unwrap().to_owned();
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
    let store = Store::open_without_migrating(&target).await.unwrap();
    let (interval, event, entry): (i64, i64, i64) = on!(store.reader(), |c| sqlx::query_as(
        "SELECT (SELECT id FROM state_intervals WHERE attempt_id = $1),
                (SELECT MAX(seq) FROM outbox_events),
                (SELECT seq FROM audit_log WHERE subject_id = $1)",
    )
    .bind(&attempt)
    .fetch_one(c)
    .await)
    .unwrap();
    store.close().await;
    assert!(
        interval > intervals,
        "interval {interval} after {intervals}"
    );
    assert!(event > events, "event {event} after {events}");
    assert!(entry > head, "entry {entry} after {head}");
    let (code, stdout, stderr) = output_of(wfmd_on(&target, &["audit", "verify"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} entries verified",
            scalar(&target, "SELECT MAX(seq) FROM audit_log").await
        )),
        "{stdout}"
    );
}

#[tokio::test]
async fn database_copy_refuses_a_target_that_holds_data() {
    // Copied from while its daemon runs, which the copy allows (it reads one snapshot).
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.audit.key = Some(KEY.into());
    })
    .await;
    for agent in app.sim.free_agents().iter().take(2) {
        let (status, body) = app.set_state(&agent.id, "NOT_READY").await;
        assert_eq!(status, 200, "{body}");
    }
    let url = app.db.url();
    // A password in the URL, which the server (trusting local connections) ignores and
    // no message may show.
    let target = throwaway_postgres::shared()
        .fresh_database()
        .replace("postgres@", "postgres:s3cret-pw@");
    let (code, stdout, stderr) =
        output_of(wfmd_on(&url, &["database", "copy", "--to", &target])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("s3cret-pw"), "{stdout}");
    let held = dump(&target).await;
    assert!(!held["audit_log"].is_empty());

    let (code, stdout, stderr) =
        output_of(wfmd_on(&url, &["database", "copy", "--to", &target])).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("already holds data"), "{stderr}");
    assert!(
        stderr.contains("audit_log: "),
        "names what it holds: {stderr}"
    );
    assert!(
        stderr.contains(&target.replace("s3cret-pw", "********")),
        "names the target: {stderr}"
    );
    assert!(!format!("{stdout}{stderr}").contains("s3cret-pw"));
    assert_eq!(
        dump(&target).await,
        held,
        "the target keeps its data as it was"
    );
    app.stop().await;
}

#[tokio::test]
async fn database_copy_with_several_tenants_copies_each_tenants_chain() {
    use crate::tenants::{change_for, two_sims, two_tenants_file};
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let (file, mut env) = two_tenants_file(&db, &alpha, &beta, "");
    env.push(("WFMD_AUDIT__KEY".into(), KEY.into()));
    let cli = |args: &[&str], database: Option<&str>| {
        let mut command = wfmd();
        command
            .envs(env.iter().cloned())
            .arg("--config")
            .arg(&file)
            .args(args);
        if let Some(url) = database {
            command.env("WFMD_DATABASE__URL", url);
        }
        output_of(command)
    };
    for (id, sim) in [("alpha", &alpha), ("beta", &beta)] {
        let (agent, state) = change_for(sim);
        let (code, stdout, stderr) =
            cli(&["transition", &agent, state, "--tenant", id], None).await;
        assert_eq!(code, 0, "{id}: {stdout}{stderr}");
    }
    // Into PostgreSQL, where each tenant's tables go in a schema of its own.
    let server = throwaway_postgres::shared();
    let to = server.fresh_database();
    let (code, stdout, stderr) = cli(&["database", "copy", "--to", &to], None).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    for id in ["alpha", "beta"] {
        assert!(
            stdout.contains(&format!("{id}: audit chain ok (")),
            "{id}: {stdout}"
        );
        let from = wfmd::config::tenants::tenant_database_url(&db.url(), &id.parse().unwrap());
        let into = wfmd::config::tenants::tenant_database_url(&to, &id.parse().unwrap());
        let (source, copied) = (dump(&from).await, dump(&into).await);
        assert!(!source["audit_log"].is_empty(), "{id}");
        assert_eq!(source, copied, "{id}");
    }
    // Each chain is keyed with its tenant's own key, which verification on the new
    // database uses as well.
    let (code, stdout, stderr) = cli(&["audit", "verify"], Some(&to)).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("alpha: ok") && stdout.contains("beta: ok"),
        "{stdout}"
    );

    // --tenant copies that tenant's database only.
    let to_one = server.fresh_database();
    let (code, stdout, stderr) = cli(
        &["database", "copy", "--to", &to_one, "--tenant", "beta"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("beta: audit chain ok ("), "{stdout}");
    assert!(!stdout.contains("alpha:"), "{stdout}");
    let database = to_one.rsplit('/').next().unwrap();
    let schemas = server
        .psql(
            database,
            "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace
             WHERE nspname IN ('alpha', 'beta')",
        )
        .unwrap();
    assert_eq!(schemas, "beta");
}

#[tokio::test]
async fn backup_on_postgres_says_to_use_pg_dump_and_exits_2() {
    let url = "postgres://wfmd:s3cret-pw@127.0.0.1:1/wfmd";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    let file = file.to_str().unwrap();
    let (code, stdout, stderr) = output_of(wfmd_on(url, &["backup", file])).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("use pg_dump / pg_restore; wfmd backup writes SQLite files"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    assert!(!std::path::Path::new(file).exists(), "no file written");

    std::fs::write(file, b"not a database").unwrap();
    let (code, stdout, stderr) = output_of(wfmd_on(url, &["restore", file])).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("use pg_dump / pg_restore"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    assert_eq!(std::fs::read(file).unwrap(), b"not a database");
}
