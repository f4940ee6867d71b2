//! Every statement wfmd sends to PostgreSQL stays inside one tenant's schema (#56): what
//! keeps a sharded PostgreSQL possible, where each tenant's schema may live on another
//! server (Citus schema-based sharding, see docs/tenants-and-instances.md, "Past one
//! PostgreSQL").
//!
//! Three tenants on one `wfmd serve` with `[ha]` and state sync do a realistic day's
//! work (changes, a bulk job, reads of history, reports and the audit chain, the
//! leadership's looks) on a PostgreSQL server of this test's own that logs every
//! statement with `auto_explain`'s plan. The plan names the schema of every table the
//! statement read or wrote as PostgreSQL resolved it, whatever the connection's
//! `search_path` and however it was set (a connection's start-up options or a
//! `set_config` at checkout), so unqualified statements are judged by where they ran,
//! and nested statements (functions, triggers, foreign-key checks) by their own plans.
//! A plan may touch one tenant's schema, or `wfmd_cluster`, not both; a transaction one
//! tenant's schema. Statements that are not planned (DDL, `SET`, advisory locks) are
//! judged by their text.
//! The catalog is also read for what would tie schemas together without a statement
//! naming two: foreign keys, triggers and views from one schema onto another.
//!
//! What this cannot see: code paths the workload does not take (a statement sent only
//! by a command-line tool or a rare error path).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Daemon, TestSim, eventually, eventually_within, http_client, try_get_json};

/// The server of this test: statements and plans logged as JSON lines under
/// `data/pglog`.
fn server() -> &'static throwaway_postgres::Server {
    static SERVER: OnceLock<throwaway_postgres::Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let settings = [
            ("shared_preload_libraries", "'auto_explain'"),
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_verbose", "on"),
            ("auto_explain.log_nested_statements", "on"),
            ("auto_explain.log_format", "'json'"),
            ("log_statement", "'all'"),
            ("logging_collector", "on"),
            ("log_destination", "'jsonlog'"),
            ("log_directory", "'pglog'"),
            ("log_rotation_size", "0"),
        ];
        throwaway_postgres::start(throwaway_postgres::Options {
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        })
    })
}

/// Ids with a `-`, so their schemas (`-` as `_`) are told apart from the ids that
/// `wfmd_cluster`'s rows hold as values.
const TENANTS: [&str; 3] = ["alpha-co", "beta-co", "gamma-co"];

/// The schema every instance shares (the leases), which stays on the coordinator.
const CLUSTER: &str = "wfmd_cluster";

fn schema_of(id: &str) -> String {
    id.replace('-', "_")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_touches_two_tenants_schemas() {
    let url = tokio::task::spawn_blocking(|| server().fresh_database())
        .await
        .unwrap();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let mut sims = Vec::new();
    for (i, _) in TENANTS.iter().enumerate() {
        sims.push(crate::tenants::tenant_sim(10, 1 + 10 * i, 7 + i as u64).await);
    }
    let listed: Vec<(&str, &TestSim)> = TENANTS.iter().copied().zip(&sims).collect();
    let dir = tempfile::tempdir().unwrap();
    let (file, mut env) = crate::tenants::tenants_file_in(dir.path(), &url, &listed, "");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("[sync]\nenabled = false", "[sync]\nenabled = true"),
    )
    .unwrap();
    env.push(("WFMD_HA__INSTANCE_ID".into(), "wfmd-a".into()));
    let args = ["--config", file.to_str().unwrap(), "serve"];
    let daemon = Daemon::spawn_with(&args, &env, None).await;

    for (id, sim) in TENANTS.iter().zip(&sims) {
        workload(&daemon.address, id, sim).await;
    }
    daemon.signal("TERM");
    let status = daemon.wait().await;
    assert!(status.success(), "wfmd serve ended with {status}");

    let schemas: BTreeSet<String> = TENANTS.iter().map(|id| schema_of(id)).collect();
    let log = server().folder().join("data").join("pglog");
    let seen = eventually_within(
        Duration::from_secs(60),
        "the server's log shows plans on every tenant's schema",
        async || {
            let seen = Seen::read(&log, &database, &schemas);
            match schemas.iter().all(|s| seen.planned_on.contains(s)) {
                true => Ok(seen),
                false => Err(format!("plans seen on {:?}", seen.planned_on)),
            }
        },
    )
    .await;
    assert!(
        seen.plans > 100 && seen.statements > 100,
        "too little seen to judge: {} plans, {} statements",
        seen.plans,
        seen.statements
    );
    assert!(
        seen.written_on.len() == schemas.len(),
        "writes seen only on {:?}",
        seen.written_on
    );
    assert!(
        seen.crossing.is_empty(),
        "statements touching two tenants' schemas, or one and {CLUSTER}:\n{}",
        seen.crossing.join("\n")
    );
    let spanning: Vec<_> = seen
        .transactions
        .iter()
        .filter(|(_, schemas)| schemas.len() > 1)
        .collect();
    assert!(
        spanning.is_empty(),
        "transactions touching two tenants' schemas: {spanning:?}"
    );
    let ties = catalog_ties(&database, &schemas);
    assert!(
        ties.is_empty(),
        "tables of one schema tied to another's:\n{}",
        ties.join("\n")
    );
}

/// What a tenant does in a working day, in little: changes, a bulk job over its agents,
/// and the reads of its history, reports, audit chain and jobs.
async fn workload(address: &str, id: &str, sim: &TestSim) {
    let http = http_client();
    let base = format!("{address}/v1/tenants/{id}");
    eventually(&format!("{id} takes a change"), async || {
        let (agent, target) = crate::tenants::change_for(sim);
        let response = http
            .post(format!("{base}/agents/{agent}/transitions"))
            .json(&json!({ "state": target }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(format!(
                "{status}: {}",
                response.text().await.unwrap_or_default()
            )),
        }
    })
    .await;
    let agents: Vec<String> = sim.free_agents().into_iter().map(|a| a.id).collect();
    let job: Value = http
        .post(format!("{base}/bulk-transitions"))
        .json(&json!({ "agents": agents, "state": "NOT_READY", "reason": "MEETING" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    eventually(&format!("{id}'s bulk job completes"), async || {
        let view = try_get_json(&http, &format!("{base}/bulk-transitions/{job_id}")).await?;
        (view["status"] == "completed")
            .then_some(())
            .ok_or_else(|| view["status"].to_string())
    })
    .await;
    let agent = &agents[0];
    for path in [
        format!("/agents/{agent}/history"),
        "/reports/compliance?format=json".to_owned(),
        "/audit/verify".to_owned(),
        "/bulk-transitions".to_owned(),
        "/adherence/now".to_owned(),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "GET {path} of {id}: {}",
            response.status()
        );
    }
}

/// What the server's log says of one database's statements.
#[derive(Debug, Default)]
struct Seen {
    plans: usize,
    statements: usize,
    /// The tenant schemas some plan read or wrote.
    planned_on: BTreeSet<String>,
    /// The tenant schemas some plan wrote (a `ModifyTable` node).
    written_on: BTreeSet<String>,
    /// Each statement found touching two tenant schemas, or one and `wfmd_cluster`,
    /// with what it touched.
    crossing: Vec<String>,
    /// The tenant schemas each transaction's plans touched, by session and
    /// transaction (`vxid`).
    transactions: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Seen {
    fn read(folder: &Path, database: &str, schemas: &BTreeSet<String>) -> Seen {
        let mut seen = Seen::default();
        for file in std::fs::read_dir(folder).unwrap().flatten() {
            let text = std::fs::read_to_string(file.path()).unwrap_or_default();
            for line in text.lines() {
                let Ok(entry) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                if entry["dbname"] != database {
                    continue;
                }
                seen.judge(&entry, schemas);
            }
        }
        seen
    }

    fn judge(&mut self, entry: &Value, schemas: &BTreeSet<String>) {
        let message = entry["message"].as_str().unwrap_or_default();
        if let Some((_, plan)) = message.split_once("plan:")
            && let Ok(plan) = serde_json::from_str::<Value>(plan.trim())
        {
            self.plans += 1;
            let mut touched = BTreeMap::new();
            plan_schemas(&plan["Plan"], &mut touched);
            let tenants: BTreeSet<&String> =
                touched.keys().filter(|s| schemas.contains(*s)).collect();
            for schema in &tenants {
                self.planned_on.insert((*schema).clone());
                if touched[*schema] {
                    self.written_on.insert((*schema).clone());
                }
            }
            if tenants.len() > 1 || (!tenants.is_empty() && touched.contains_key(CLUSTER)) {
                self.crossing.push(format!(
                    "{:?}: {}",
                    touched.keys().collect::<Vec<_>>(),
                    plan["Query Text"].as_str().unwrap_or_default()
                ));
            }
            if let (Some(session), Some(vxid)) =
                (entry["session_id"].as_str(), entry["vxid"].as_str())
            {
                self.transactions
                    .entry((session.to_owned(), vxid.to_owned()))
                    .or_default()
                    .extend(tenants.into_iter().cloned());
            }
        } else if message.starts_with("statement:") || message.starts_with("execute") {
            self.statements += 1;
            let named: BTreeSet<&String> = schemas
                .iter()
                .filter(|schema| names_identifier(message, schema))
                .collect();
            if named.len() > 1 {
                self.crossing.push(format!("{named:?}: {message}"));
            }
        }
    }
}

/// Every schema a plan's nodes name, and whether a node wrote to it.
fn plan_schemas(node: &Value, touched: &mut BTreeMap<String, bool>) {
    if let Some(schema) = node["Schema"].as_str() {
        let writes = node["Node Type"] == "ModifyTable";
        *touched.entry(schema.to_owned()).or_default() |= writes;
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        plan_schemas(child, touched);
    }
}

/// Whether `text` holds `name` as a whole identifier (not inside a longer word).
fn names_identifier(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// Foreign keys, triggers and views of a table in one schema onto another schema's.
fn catalog_ties(database: &str, schemas: &BTreeSet<String>) -> Vec<String> {
    let listed = schemas
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT 'foreign key ' || c.conname || ' of ' || c.conrelid::regclass || ' onto ' \
             || c.confrelid::regclass \
           FROM pg_constraint c \
           JOIN pg_class a ON a.oid = c.conrelid JOIN pg_class b ON b.oid = c.confrelid \
          WHERE c.contype = 'f' AND a.relnamespace <> b.relnamespace \
            AND (a.relnamespace::regnamespace::text IN ({listed}) \
                 OR b.relnamespace::regnamespace::text IN ({listed})) \
         UNION ALL \
         SELECT 'trigger ' || t.tgname || ' of ' || t.tgrelid::regclass || ' runs ' \
             || t.tgfoid::regproc \
           FROM pg_trigger t JOIN pg_class a ON a.oid = t.tgrelid \
           JOIN pg_proc p ON p.oid = t.tgfoid \
          WHERE NOT t.tgisinternal AND p.pronamespace <> a.relnamespace \
            AND p.pronamespace <> 'pg_catalog'::regnamespace \
            AND a.relnamespace::regnamespace::text IN ({listed}) \
         UNION ALL \
         SELECT DISTINCT 'view ' || v.oid::regclass || ' reads ' || t.oid::regclass \
           FROM pg_rewrite r JOIN pg_class v ON v.oid = r.ev_class \
           JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass \
           JOIN pg_class t ON t.oid = d.refobjid AND d.refclassid = 'pg_class'::regclass \
          WHERE v.relnamespace <> t.relnamespace \
            AND (v.relnamespace::regnamespace::text IN ({listed}) \
                 OR t.relnamespace::regnamespace::text IN ({listed}))"
    );
    let rows = server()
        .psql(database, &sql)
        .unwrap_or_else(|why| panic!("the catalog cannot be read: {why}"));
    rows.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_identifier_is_found_whole_only() {
    assert!(names_identifier(
        "SELECT * FROM alpha_co.events",
        "alpha_co"
    ));
    assert!(names_identifier(
        "SET search_path = \"alpha_co\"",
        "alpha_co"
    ));
    assert!(!names_identifier("SELECT 1 FROM xalpha_co.e", "alpha_co"));
    assert!(!names_identifier("SELECT alpha_co2", "alpha_co"));
}
