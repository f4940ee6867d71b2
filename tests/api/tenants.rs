//! Several tenants in one daemon: each its own platform, database and routes, and a
//! token bound to one tenant finds nothing of another.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wfmd::App;
use wfmd::config::{Config, ConfigSource};

use crate::helpers::{Backend, Daemon, TestDb, TestSim, http_client, on_both_backends, wait_until};
use wfmd::sim::SimConfig;

/// A tenant's simulator: `agents` agents numbered from `first_agent` (so no two
/// tenants of a test share an agent id), drawn from `seed`.
pub(crate) async fn tenant_sim(agents: usize, first_agent: usize, seed: u64) -> TestSim {
    TestSim::start(SimConfig {
        agents,
        first_agent,
        seed,
        ..SimConfig::default()
    })
    .await
}

/// Two tenants' simulators, each with agents of its own (`u_001`… and `u_031`…).
pub(crate) async fn two_sims() -> (TestSim, TestSim) {
    (tenant_sim(30, 1, 11).await, tenant_sim(30, 31, 22).await)
}

/// The configuration of a daemon serving `alpha` and `beta` on their simulators, as a
/// deployment writes it: a file with `[[tenants]]`, and the secrets' variables.
pub(crate) fn two_tenants_file(
    db: &TestDb,
    alpha: &TestSim,
    beta: &TestSim,
    extra: &str,
) -> (std::path::PathBuf, Vec<(String, String)>) {
    tenants_file(db, &[("alpha", alpha), ("beta", beta)], extra)
}

/// [`two_tenants_file`] for any `tenants` (id, simulator); written again, it replaces
/// the file.
pub(crate) fn tenants_file(
    db: &TestDb,
    tenants: &[(&str, &TestSim)],
    extra: &str,
) -> (std::path::PathBuf, Vec<(String, String)>) {
    tenants_file_in(db.dir.path(), &db.url(), tenants, extra)
}

/// [`tenants_file`] in `dir`, for the database of `url`.
pub(crate) fn tenants_file_in(
    dir: &std::path::Path,
    url: &str,
    tenants: &[(&str, &TestSim)],
    extra: &str,
) -> (std::path::PathBuf, Vec<(String, String)>) {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\
         [database]\nurl = \"{}\"\n\
         [retry]\nbase_delay_ms = 10\nmax_delay_ms = 2000\n\
         [sync]\nenabled = false\n[live]\nenabled = false\n{extra}\n",
        url
    );
    let mut env = Vec::new();
    for (id, sim) in tenants {
        text.push_str(&format!(
            "[[tenants]]\nid = \"{id}\"\nname = \"Tenant {id}\"\n[tenants.cxone]\n\
             base_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\n\
             requests_per_minute = 6000\nrequest_timeout_ms = 2000\n",
            sim.base_url, sim.token_url, sim.client_id
        ));
        env.push((
            format!(
                "WFMD_TENANTS__{}__CXONE__CLIENT_SECRET",
                id.to_uppercase().replace('-', "_")
            ),
            sim.client_secret.clone(),
        ));
    }
    let file = dir.join("wfmd.toml");
    std::fs::write(&file, text).unwrap();
    (file, env)
}

/// [`two_tenants_file`], loaded.
pub(crate) fn two_tenants(db: &TestDb, alpha: &TestSim, beta: &TestSim, extra: &str) -> Config {
    let (file, env) = two_tenants_file(db, alpha, beta, extra);
    let source = ConfigSource {
        file: Some(file),
        simulate: false,
    };
    Config::load_with_env(&source, env).unwrap()
}

/// A running daemon and what the tests look at.
pub(crate) struct Served {
    pub(crate) address: String,
    pub(crate) app_stores: Vec<(String, wfmd::store::Store)>,
    pub(crate) stop: CancellationToken,
    pub(crate) server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Served {
    pub(crate) async fn start(config: &Config) -> Served {
        let app = App::build(config).await.unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        let app_stores = app
            .tenant_ids()
            .into_iter()
            .map(|id| (id.to_string(), app.store_of(id.as_str()).unwrap()))
            .collect();
        let stop = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(stop.clone()));
        Served {
            address,
            app_stores,
            stop,
            server,
        }
    }

    /// The JSON body of `GET path`, without a token.
    pub(crate) async fn get_json(&self, path: &str) -> Value {
        crate::helpers::get_json(&format!("{}{path}", self.address)).await
    }

    pub(crate) fn store(&self, id: &str) -> &wfmd::store::Store {
        &self.app_stores.iter().find(|(t, _)| t == id).unwrap().1
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.server.await.unwrap().unwrap();
    }
}

pub(crate) async fn count(store: &wfmd::store::Store, sql: &'static str) -> i64 {
    crate::helpers::count(store, sql).await
}

/// A change the agent may make now: PAUSED, or IDLE for one paused already.
pub(crate) fn change_for(sim: &TestSim) -> (String, &'static str) {
    let agent = sim.free_agents().remove(0);
    let target = if agent.state == "PAUSED" {
        "IDLE"
    } else {
        "PAUSED"
    };
    (agent.id, target)
}

on_both_backends!(each_tenant_changes_only_its_own_platform_and_records_in_its_own_database);
async fn each_tenant_changes_only_its_own_platform_and_records_in_its_own_database(db: TestDb) {
    let (alpha, beta) = two_sims().await;
    let config = two_tenants(&db, &alpha, &beta, "");
    let served = Served::start(&config).await;
    let http = http_client();

    let (agent, target) = change_for(&alpha);
    let response = http
        .post(format!(
            "{}/v1/tenants/alpha/agents/{agent}/transitions",
            served.address
        ))
        .json(&json!({"state": target}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(alpha.changes(), 1, "alpha's platform was changed");
    assert_eq!(beta.changes(), 0, "beta's platform was not");
    assert_eq!(alpha.sim.agent(&agent).unwrap().state, target);

    let intervals = "SELECT COUNT(*) FROM state_intervals";
    assert_eq!(count(served.store("alpha"), intervals).await, 1);
    assert_eq!(count(served.store("beta"), intervals).await, 0);
    let audit = "SELECT COUNT(*) FROM audit_log";
    assert_eq!(count(served.store("alpha"), audit).await, 1);
    assert_eq!(count(served.store("beta"), audit).await, 0);
    match db.backend() {
        Backend::Sqlite => assert!(
            db.dir.path().join("wfmd-alpha.db").is_file()
                && db.dir.path().join("wfmd-beta.db").is_file(),
            "each tenant's database sits beside database.url"
        ),
        // One database; each tenant's tables in the schema named after it, and none
        // in the one `database.url` names (a tenant `default`'s, configured or not).
        Backend::Postgres => {
            assert_eq!(
                db.psql(
                    "SELECT table_schema FROM information_schema.tables \
                     WHERE table_name = 'audit_log' ORDER BY 1"
                ),
                "alpha\nbeta",
            );
            assert_eq!(db.psql("SELECT COUNT(*) FROM alpha.state_intervals"), "1");
            assert_eq!(db.psql("SELECT COUNT(*) FROM beta.state_intervals"), "0");
        }
    }

    // Its history is alpha's, and beta has none of it.
    let history = |tenant: &str| {
        http.get(format!(
            "{}/v1/tenants/{tenant}/agents/{agent}/history",
            served.address
        ))
        .send()
    };
    let alpha_history: Value = history("alpha").await.unwrap().json().await.unwrap();
    assert!(
        alpha_history.to_string().contains(target),
        "{alpha_history}"
    );
    let beta_history: Value = history("beta").await.unwrap().json().await.unwrap();
    assert!(!beta_history.to_string().contains(target), "{beta_history}");

    // Unprefixed, with two tenants: which one is meant is asked, not guessed.
    let response = http
        .post(format!("{}/v1/agents/{agent}/transitions", served.address))
        .json(&json!({"state": target}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["tenants"], json!(["alpha", "beta"]), "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains(&format!(
            "/v1/tenants/{{tenant}}/agents/{agent}/transitions"
        )),
        "{problem}"
    );
    assert_eq!(alpha.changes() + beta.changes(), 1);

    let listed = served.get_json("/v1/tenants").await;
    assert_eq!(
        listed,
        json!([
            {"id": "alpha", "name": "Tenant alpha", "dialect": "v2", "ready": true},
            {"id": "beta", "name": "Tenant beta", "dialect": "v2", "ready": true},
        ])
    );
    for id in ["alpha", "beta"] {
        let verified = wfmd::store::audit::verify(served.store(id).reader())
            .await
            .unwrap();
        assert!(verified.is_intact(), "{id}'s chain");
    }
    served.stop().await;
}

#[tokio::test]
async fn a_token_bound_to_one_tenant_finds_nothing_of_another() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let tokens = [
        crate::auth::entry("alpha-desk", "wfmd_alpha_desk", "supervisor"),
        crate::auth::entry("everywhere", "wfmd_everywhere", "viewer"),
    ];
    let mut extra = String::new();
    for (token, tenants) in tokens.iter().zip(["tenants = [\"alpha\"]", ""]) {
        extra.push_str(&format!(
            "[[api_tokens]]\nname = \"{}\"\ntoken_sha256 = \"{}\"\nrole = \"{}\"\n{tenants}\n",
            token.name, token.token_sha256, token.role
        ));
    }
    let config = two_tenants(&db, &alpha, &beta, &extra);
    let served = Served::start(&config).await;
    let http = http_client();
    let get = |path: String, token: &'static str| {
        http.get(format!("{}{path}", served.address))
            .bearer_auth(token)
            .send()
    };
    let (agent, target) = change_for(&beta);

    // On its own tenant the token works; on the other it is as if nothing were there.
    let own = get(
        format!("/v1/tenants/alpha/agents/{agent}/history"),
        "wfmd_alpha_desk",
    )
    .await
    .unwrap();
    assert_eq!(own.status(), 200);
    let other = get(
        format!("/v1/tenants/beta/agents/{agent}/history"),
        "wfmd_alpha_desk",
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 404);
    let other: Value = other.json().await.unwrap();
    let missing: Value = get(
        format!("/v1/tenants/gamma/agents/{agent}/history"),
        "wfmd_alpha_desk",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        other, missing,
        "a tenant not held looks like one that does not exist"
    );
    // Routes that exist (on alpha the token reaches them: an answer, or its role's
    // 403), and on beta are not there for it.
    for path in ["/audit", "/live", "/analytics/queries"] {
        let own = get(format!("/v1/tenants/alpha{path}"), "wfmd_alpha_desk")
            .await
            .unwrap();
        let status = own.status();
        assert_ne!(
            status,
            404,
            "{path} on alpha: {}",
            own.text().await.unwrap()
        );
        let response = get(format!("/v1/tenants/beta{path}"), "wfmd_alpha_desk")
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path} on beta");
    }
    let response = http
        .post(format!(
            "{}/v1/tenants/beta/agents/{agent}/transitions",
            served.address
        ))
        .bearer_auth("wfmd_alpha_desk")
        .json(&json!({"state": target}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(beta.changes(), 0, "nothing reached beta's platform");

    // A token for every tenant sees both.
    let both = get(
        format!("/v1/tenants/beta/agents/{agent}/history"),
        "wfmd_everywhere",
    )
    .await
    .unwrap();
    assert_eq!(both.status(), 200);

    let ids = |listed: Value| -> Vec<String> {
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = get("/v1/tenants".into(), "wfmd_alpha_desk")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(listed), ["alpha"]);
    let listed = get("/v1/tenants".into(), "wfmd_everywhere")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(listed), ["alpha", "beta"]);
    served.stop().await;
}

#[tokio::test]
async fn one_tenant_platform_down_leaves_the_other_working_and_readyz_names_it() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let config = two_tenants(&db, &alpha, &beta, "");
    let served = Served::start(&config).await;
    let http = http_client();
    drop(beta);

    let (agent, target) = change_for(&alpha);
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        http.post(format!(
            "{}/v1/tenants/alpha/agents/{agent}/transitions",
            served.address
        ))
        .json(&json!({"state": target}))
        .send(),
    )
    .await
    .expect("alpha answers while beta's platform is down")
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(alpha.changes(), 1);

    let response = http
        .get(format!("{}/readyz", served.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tenants"]["alpha"]["status"], "ready", "{body}");
    assert_eq!(body["tenants"]["beta"]["status"], "unavailable", "{body}");
    assert!(
        body["tenants"]["beta"]["platform"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{body}"
    );
    let listed = served.get_json("/v1/tenants").await;
    assert_eq!(listed[0]["ready"], true, "{listed}");
    assert_eq!(listed[1]["ready"], false, "{listed}");
    assert!(listed[1]["reason"].is_string(), "{listed}");
    served.stop().await;
}

#[tokio::test]
async fn the_cli_acts_on_the_tenant_named_with_tenant_and_asks_when_none_is() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let (file, env) = two_tenants_file(&db, &alpha, &beta, "");
    let (agent, target) = change_for(&beta);
    let run = move |args: String| {
        let (file, env) = (file.clone(), env.clone());
        tokio::task::spawn_blocking(move || {
            let output = crate::helpers::wfmd()
                .envs(env)
                .arg("--config")
                .arg(file)
                .args(args.split(' '))
                .output()
                .unwrap();
            (
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned()
                    + &String::from_utf8_lossy(&output.stderr),
            )
        })
    };

    let (code, output) = run(format!("transition {agent} {target}")).await.unwrap();
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("--tenant (alpha, beta)"), "{output}");
    let (code, output) = run(format!("transition {agent} {target} --tenant gamma"))
        .await
        .unwrap();
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("no tenant `gamma`"), "{output}");
    assert_eq!(alpha.changes() + beta.changes(), 0);

    let (code, output) = run(format!("transition {agent} {target} --tenant beta"))
        .await
        .unwrap();
    assert_eq!(code, 0, "{output}");
    assert_eq!((alpha.changes(), beta.changes()), (0, 1));
    let (code, beta_chain) = run("audit verify --tenant beta".into()).await.unwrap();
    assert_eq!(code, 0, "{beta_chain}");
    let (code, alpha_chain) = run("audit verify --tenant alpha".into()).await.unwrap();
    assert_eq!(code, 0, "{alpha_chain}");
    assert!(beta_chain.contains("intact: 1 entries"), "{beta_chain}");
    assert!(
        alpha_chain.contains("intact: 0 entries"),
        "alpha's chain has none of beta's change: {alpha_chain}"
    );
}

#[tokio::test]
async fn sighup_starts_an_added_tenant_stops_a_removed_one_and_refuses_an_invalid_one() {
    let (alpha, beta) = two_sims().await;
    let gamma = tenant_sim(30, 61, 33).await;
    let db = TestDb::new();
    let log = db.dir.path().join("wfmd.log");
    let (file, env) = two_tenants_file(&db, &alpha, &beta, "");
    let config = file.display().to_string();
    let daemon = Daemon::spawn_with_log(&["--config", &config, "serve"], &env, &log).await;
    let http = http_client();
    let change = |tenant: &'static str, sim: &TestSim| {
        let (agent, target) = change_for(sim);
        let url = format!(
            "{}/v1/tenants/{tenant}/agents/{agent}/transitions",
            daemon.address
        );
        let http = http.clone();
        async move {
            http.post(url)
                .json(&json!({"state": target}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let tenants = || async {
        let listed = crate::helpers::get_json(&format!("{}/v1/tenants", daemon.address)).await;
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(change("beta", &beta).await, 200);

    // beta out, gamma in. A tenant added while the daemon runs cannot have variables
    // of its own (the environment is the start's): its secret is in the file.
    let (_, _) = tenants_file(&db, &[("alpha", &alpha), ("gamma", &gamma)], "");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        &format!("client_id = \"{}\"\n", gamma.client_id),
        &format!(
            "client_id = \"{}\"\nclient_secret = \"{}\"\n",
            gamma.client_id, gamma.client_secret
        ),
    );
    let gamma_section = text.rfind("[[tenants]]").unwrap();
    assert!(text[gamma_section..].contains("client_secret"));
    std::fs::write(&file, &text).unwrap();
    daemon.signal("HUP");
    wait_until("gamma did not replace beta", || async {
        tenants().await == ["alpha", "gamma"]
    })
    .await;
    assert_eq!(change("gamma", &gamma).await, 200);
    assert_eq!(gamma.changes(), 1, "gamma's own platform was changed");
    assert_eq!(change("beta", &beta).await, 404, "beta is no longer served");
    assert_eq!(beta.changes(), 1);
    assert_eq!(
        change("alpha", &alpha).await,
        200,
        "alpha ran on throughout"
    );

    // beta stopped cleanly: its database closed and unlocked, its data kept.
    let beta_db = db.dir.path().join("wfmd-beta.db");
    wait_until("beta's database is still held", || async {
        matches!(
            wfmd::store::lock::DaemonLock::try_acquire(&beta_db),
            Ok(Ok(_))
        )
    })
    .await;
    let beta_store = wfmd::store::Store::open(&format!("sqlite://{}", beta_db.display()))
        .await
        .unwrap();
    assert_eq!(
        count(&beta_store, "SELECT COUNT(*) FROM state_intervals").await,
        1
    );
    let verified = wfmd::store::audit::verify(beta_store.reader())
        .await
        .unwrap();
    assert!(
        verified.is_intact() && verified.entries == 1,
        "{verified:?}"
    );
    beta_store.close().await;

    // A new tenant with a bad value: the whole reload is refused, naming the tenant and
    // the key, and the tenants running carry on.
    std::fs::write(
        &file,
        format!(
            "{text}[[tenants]]\nid = \"delta\"\n[tenants.cxone]\nbase_url = \"{}\"\n\
             token_url = \"{}\"\nclient_id = \"x\"\nclient_secret = \"y\"\n\
             requests_per_minute = 0\n",
            gamma.base_url, gamma.token_url
        ),
    )
    .unwrap();
    daemon.signal("HUP");
    wait_until("the invalid tenant was not refused in the log", || async {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("tenants[delta].cxone.requests_per_minute")
    })
    .await;
    assert_eq!(tenants().await, ["alpha", "gamma"]);
    assert_eq!(change("gamma", &gamma).await, 200);

    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
}

/// A database written by the release before several tenants (see tests/fixtures).
const BEFORE_TENANTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/wfmd-before-tenants.db"
);
/// The audit key it was written with (a test value).
const BEFORE_TENANTS_KEY: &str = "fixture-audit-key-of-the-release-before-tenants";

#[tokio::test]
async fn a_database_written_before_tenants_opens_migrates_in_place_and_keeps_its_chain() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::new();
    std::fs::copy(BEFORE_TENANTS, db.path()).unwrap();
    let chain = |store: wfmd::store::Store| async move {
        let verified = wfmd::store::audit::verify_with(store.reader(), store.audit_key())
            .await
            .unwrap();
        assert!(verified.is_intact(), "{:?}", verified.first_break);
        assert_eq!(verified.keyed_from, Some(1), "keyed from its first entry");
        verified.entries
    };

    // As the deployment ran it: no [[tenants]], so the tenant `default` on database.url.
    let mut config = sim.config(&db.url());
    config.audit.key = Some(BEFORE_TENANTS_KEY.to_owned().into());
    let served = Served::start(&config).await;
    let store = served.store("default").clone();
    assert_eq!(chain(store.clone()).await, 41, "the release's 41 entries");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM transition_attempts").await,
        20
    );
    let history = served.get_json("/v1/agents/u_002/history").await;
    assert!(history.to_string().contains("PAUSED"), "{history}");
    let (agent, target) = change_for(&sim);
    let response = http_client()
        .post(format!("{}/v1/agents/{agent}/transitions", served.address))
        .json(&json!({"state": target}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let after_change = chain(store).await;
    assert!(
        after_change > 41,
        "the change is chained on: {after_change}"
    );
    served.stop().await;

    // Then beside a new tenant: the deployment lists itself as `default`, which keeps
    // database.url and audit.key, so its chain verifies on under the same key.
    let beta = tenant_sim(30, 101, 22).await;
    let (file, env) = tenants_file(
        &db,
        &[("default", &sim), ("beta", &beta)],
        &format!("[audit]\nkey = \"{BEFORE_TENANTS_KEY}\"\n"),
    );
    let source = ConfigSource {
        file: Some(file.clone()),
        simulate: false,
    };
    let served = Served::start(&Config::load_with_env(&source, env.clone()).unwrap()).await;
    assert_eq!(chain(served.store("default").clone()).await, after_change);
    served.stop().await;
    let output = crate::helpers::wfmd()
        .envs(env)
        .arg("--config")
        .arg(&file)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("default: ok"), "{stdout}");
    assert!(stdout.contains("beta: ok"), "{stdout}");
}

#[tokio::test]
async fn one_tenant_saturating_its_budget_leaves_another_tenants_changes_unhindered() {
    let alpha = tenant_sim(200, 1, 11).await;
    let beta = tenant_sim(30, 201, 22).await;
    let db = TestDb::new();
    let (file, env) = tenants_file(&db, &[("alpha", &alpha), ("beta", &beta)], "");
    // alpha at 100 requests a minute; beta keeps its 6,000.
    let text = std::fs::read_to_string(&file).unwrap().replacen(
        "requests_per_minute = 6000",
        "requests_per_minute = 100",
        1,
    );
    std::fs::write(&file, text).unwrap();
    let source = ConfigSource {
        file: Some(file),
        simulate: false,
    };
    let served = Served::start(&Config::load_with_env(&source, env).unwrap()).await;
    let http = http_client();

    // A change for each of alpha's 200 agents: minutes of work at 100 requests a minute.
    let agents: Vec<String> = alpha.sim.agents().into_iter().map(|a| a.id).collect();
    let accepted: Value = http
        .post(format!(
            "{}/v1/tenants/alpha/bulk-transitions",
            served.address
        ))
        .json(&json!({"agents": agents, "state": "NOT_READY", "reason": "MEETING"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["job_id"].as_str().unwrap().to_owned();
    let job = format!("/v1/tenants/alpha/bulk-transitions/{id}");
    let view = || served.get_json(&job);
    wait_until("alpha's job did not start", || async {
        let job = view().await;
        job["succeeded"].as_i64().unwrap() + job["rejected"].as_i64().unwrap() > 0
    })
    .await;

    // beta's people meanwhile: each change answered, each on beta's own platform. Had
    // they queued behind alpha's budget, each would wait minutes (the request timeout
    // below is a liveness bound, not a speed target).
    let free = beta.free_agents();
    assert!(free.len() >= 5, "beta has {} free agents", free.len());
    for agent in &free[..5] {
        let target = if agent.state == "PAUSED" {
            "IDLE"
        } else {
            "PAUSED"
        };
        let response = http
            .post(format!(
                "{}/v1/tenants/beta/agents/{}/transitions",
                served.address, agent.id
            ))
            .timeout(Duration::from_secs(10))
            .json(&json!({"state": target}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    assert_eq!(beta.changes(), 5);
    // And alpha was still at its budget's pace when beta was done.
    let during = view().await;
    assert!(
        during["pending"].as_i64().unwrap() > 100,
        "alpha's job was not saturating its budget: {during}"
    );
    assert!(alpha.changes() < 100, "{}", alpha.changes());
    served.stop().await;
}

#[tokio::test]
async fn one_tenants_revoked_credentials_leave_the_other_working_and_readyz_says_why() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let (file, mut env) = two_tenants_file(&db, &alpha, &beta, "");
    // beta's secret was revoked on the platform: every token call is refused.
    env.retain(|(var, _)| !var.starts_with("WFMD_TENANTS__BETA__"));
    env.push((
        "WFMD_TENANTS__BETA__CXONE__CLIENT_SECRET".into(),
        "revoked-secret".into(),
    ));
    let source = ConfigSource {
        file: Some(file),
        simulate: false,
    };
    let served = Served::start(&Config::load_with_env(&source, env).unwrap()).await;
    let http = http_client();
    let post = |tenant: &str, (agent, target): (String, &str)| {
        http.post(format!(
            "{}/v1/tenants/{tenant}/agents/{agent}/transitions",
            served.address
        ))
        .timeout(Duration::from_secs(10))
        .json(&json!({"state": target}))
        .send()
    };

    let refused = post("beta", change_for(&beta)).await.unwrap();
    assert!(refused.status().is_server_error(), "{}", refused.status());
    assert_eq!(beta.changes(), 0);
    let made = post("alpha", change_for(&alpha)).await.unwrap();
    assert_eq!(made.status(), 200, "alpha works on while beta is refused");
    assert_eq!(alpha.changes(), 1);

    let body = served.get_json("/readyz").await;
    assert_eq!(body["tenants"]["alpha"]["status"], "ready", "{body}");
    assert_eq!(body["tenants"]["beta"]["status"], "unavailable", "{body}");
    let listed = served.get_json("/v1/tenants").await;
    assert_eq!(listed[0]["ready"], true, "{listed}");
    let reason = listed[1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("401") || reason.to_lowercase().contains("credential"),
        "beta's reason names the refused credentials: {listed}"
    );
    served.stop().await;
}

#[tokio::test]
async fn a_change_under_way_when_its_tenant_is_removed_is_answered_and_recorded() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let log = db.dir.path().join("wfmd.log");
    let (file, mut env) = two_tenants_file(&db, &alpha, &beta, "");
    env.push(("WFMD_LOG__LEVEL".into(), "info".into()));
    let config = file.display().to_string();
    let daemon = Daemon::spawn_with_log(&["--config", &config, "serve"], &env, &log).await;
    let logged = |text: &'static str| {
        let log = log.clone();
        move || {
            let log = log.clone();
            async move { std::fs::read_to_string(&log).unwrap().contains(text) }
        }
    };

    // beta's change reaches its platform, and is held there.
    let held = beta.sim.hold_next_on(crate::helpers::SET_STATE);
    let (agent, target) = change_for(&beta);
    let change = tokio::spawn(
        http_client()
            .post(format!(
                "{}/v1/tenants/beta/agents/{agent}/transitions",
                daemon.address
            ))
            .json(&json!({"state": target}))
            .send(),
    );
    tokio::time::timeout(Duration::from_secs(10), held.arrived())
        .await
        .expect("beta's change reached its platform");
    // Meanwhile beta is removed: its workers stop, and its database waits for the change.
    tenants_file(&db, &[("alpha", &alpha)], "");
    daemon.signal("HUP");
    wait_until(
        "the removed tenant did not wait for its request under way",
        logged("waiting for the tenant's requests under way"),
    )
    .await;
    held.release();
    let response = change.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(beta.changes(), 1);
    wait_until(
        "beta did not stop",
        logged("reload: tenant removed and stopped"),
    )
    .await;

    // Recorded in beta's database, which closed only after the answer.
    let beta_db = db.dir.path().join("wfmd-beta.db");
    let store = wfmd::store::Store::open(&format!("sqlite://{}", beta_db.display()))
        .await
        .unwrap();
    let succeeded = "SELECT COUNT(*) FROM transition_attempts WHERE outcome = 'succeeded'";
    assert_eq!(count(&store, succeeded).await, 1);
    store.close().await;
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
}
