//! `GET /v1/cluster`: the instances serving the tenants and each tenant's leader, for
//! admins only, and `/metrics`' `wfmd_tenant_leader` and
//! `wfmd_leadership_changes_total` beside it. On SQLite this instance alone, sole
//! leader of every tenant; on PostgreSQL what the tenants' lease rows and the
//! instances' notes say: with `[ha]` the tenant this instance leads and the one another
//! instance does, without it a lease left behind by a former instance.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use wfmd::cluster::lease;
use wfmd::config::{Config, ConfigSource};
use wfmd::domain::tenant::TenantId;
use wfmd::store::Store;
use wfmd::telemetry::names::{LEADERSHIP_CHANGES_TOTAL, TENANT_LEADER};

use crate::auth::entry;
use crate::helpers::{TestDb, eventually, get_text, http_client};
use crate::tenants::{Served, tenants_file, two_sims, two_tenants};

/// Long enough that no lease a test takes runs out while it looks.
const LONG: Duration = Duration::from_secs(600);

/// The tokens the tests call with: an admin of every tenant (`wfmd_ops`), an admin of
/// tenant `only` alone (`wfmd_one_ops`), and a supervisor (`wfmd_desk`).
fn with_tokens(config: &mut Config, only: &str) {
    let mut one_admin = entry("one-ops", "wfmd_one_ops", "admin");
    one_admin.tenants = Some(vec![only.parse().unwrap()]);
    config.api_tokens = vec![
        entry("ops", "wfmd_ops", "admin"),
        one_admin,
        entry("desk", "wfmd_desk", "supervisor"),
    ];
}

/// `GET path` with `token` (none: no `Authorization`): its status and JSON body.
async fn get(served: &Served, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http_client().get(format!("{}{path}", served.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Unix ms as the API prints instants.
fn instant(ms: i64) -> String {
    wfmd::time::rfc3339(DateTime::from_timestamp_millis(ms).unwrap())
}

/// An instant the API printed.
fn parsed(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not an instant: {value}"));
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Tenant `id`'s store on `db`, opened by the test as another instance would.
async fn store_of(db: &TestDb, id: &str) -> Store {
    let id: TenantId = id.parse().unwrap();
    Store::open(&wfmd::config::tenants::tenant_database_url(&db.url(), &id))
        .await
        .unwrap()
}

/// The lines of `served`'s `/metrics` that start with one of `series`, each expected
/// once (the registry is the process's, shared by every test: a test looks only at
/// series of tenants of its own, or at a series' presence).
/// The series of `metric` for `tenant`, as `/metrics` writes it.
fn of_tenant(metric: &str, tenant: &str) -> String {
    format!("{metric}{{tenant=\"{tenant}\"}}")
}

async fn scraped(served: &Served, series: &[String]) -> Vec<String> {
    let scrape = get_text(&format!("{}/metrics", served.address)).await;
    series
        .iter()
        .map(|series| {
            scrape
                .lines()
                .find(|line| line.starts_with(series))
                .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
                .to_owned()
        })
        .collect()
}

/// When `instance` last noted itself in `store`'s tenant.
async fn last_seen(store: &Store, instance: &str) -> i64 {
    lease::instances(store)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.instance_id == instance)
        .unwrap_or_else(|| panic!("{instance} never noted itself"))
        .last_seen
}

#[tokio::test]
async fn on_sqlite_an_admin_sees_this_instance_alone_leading_every_tenant_without_a_lease() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let mut config = two_tenants(&db, &alpha, &beta, "");
    with_tokens(&mut config, "alpha");
    let served = Served::start(&config).await;
    // Without [ha] the instance is named after the host and this process.
    let this = wfmd::config::ha::HaConfig::default().instance_id();

    // A process route: answered with several tenants served, not 400 tenant-required.
    let (status, body) = get(&served, "/v1/cluster", Some("wfmd_ops")).await;
    assert_eq!(status, 200, "{body}");
    let sole = |id: &str| {
        json!({"id": id, "leader": this, "term": null, "lease_expires_at": null,
               "lease_current": true})
    };
    assert_eq!(
        body,
        json!({
            "instance_id": this,
            "instances": [{"instance_id": this, "advertise_url": null, "last_seen_at": null,
                           "tenants_led": 2}],
            "tenants": [sole("alpha"), sole("beta")],
        })
    );

    // An admin of alpha alone sees alpha alone.
    let (status, body) = get(&served, "/v1/cluster", Some("wfmd_one_ops")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenants"], json!([sole("alpha")]));

    let (status, body) = get(&served, "/v1/cluster", Some("wfmd_desk")).await;
    assert_eq!(status, 403, "a supervisor is not an admin: {body}");
    assert_eq!(body["type"], "urn:wfmd:problem:forbidden", "{body}");
    let (status, _) = get(&served, "/v1/cluster", None).await;
    assert_eq!(status, 401);

    // And so says /metrics, where the alert for a tenant without a leader looks.
    let lines = scraped(
        &served,
        &[
            of_tenant(TENANT_LEADER, "alpha"),
            of_tenant(TENANT_LEADER, "beta"),
            of_tenant(LEADERSHIP_CHANGES_TOTAL, "alpha"),
            of_tenant(LEADERSHIP_CHANGES_TOTAL, "beta"),
        ],
    )
    .await;
    assert!(
        lines[0].ends_with(" 1") && lines[1].ends_with(" 1"),
        "{lines:?}"
    );

    // The process's routes, so no tenant has a copy of them.
    for path in ["/v1/tenants/alpha/cluster", "/v1/tenants/alpha/tenants"] {
        let (status, body) = get(&served, path, Some("wfmd_ops")).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["type"], "urn:wfmd:problem:no-such-route", "{body}");
    }
    served.stop().await;
}

/// wfmd-b holds east's lease (for ten minutes) before wfmd-a, the daemon under test,
/// starts: wfmd-a follows on east and takes west, whose lease nobody holds.
#[tokio::test]
async fn on_postgresql_an_instance_shows_the_tenant_it_leads_and_the_one_another_instance_leads() {
    let (east_sim, west_sim) = two_sims().await;
    let db = TestDb::postgres();
    let (file, env) = tenants_file(
        &db,
        &[("east", &east_sim), ("west", &west_sim)],
        &format!(
            "[ha]\ninstance_id = \"wfmd-a\"\nadvertise_url = \"http://10.0.0.5:8080\"\n\
             lease_ttl = \"2s\"\ncluster_key = \"{}\"\n",
            crate::helpers::CLUSTER_KEY
        ),
    );
    let source = ConfigSource {
        file: Some(file),
        simulate: false,
    };
    let mut config = Config::load_with_env(&source, env).unwrap();
    with_tokens(&mut config, "east");
    let east = store_of(&db, "east").await;
    assert_eq!(
        lease::take(&east, "wfmd-b", None, LONG).await.unwrap(),
        Some(1)
    );
    lease::heartbeat(&east, "wfmd-b", Some("http://10.0.0.6:8080"))
        .await
        .unwrap();
    let served = Served::start(&config).await;

    let body = eventually("wfmd-a never showed itself leading west", async || {
        let (status, body) = get(&served, "/v1/cluster", Some("wfmd_ops")).await;
        let west = &body["tenants"][1];
        // Each tenant's leadership notes the instance in its own time.
        let noted = body["instances"][0]["last_seen_at"].is_string();
        if status == 200 && west["leader"] == "wfmd-a" && west["lease_current"] == true && noted {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    assert_eq!(body["instance_id"], "wfmd-a", "{body}");

    let instances = body["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{body}");
    assert_eq!(
        (&instances[0]["instance_id"], &instances[0]["advertise_url"]),
        (&json!("wfmd-a"), &json!("http://10.0.0.5:8080")),
        "{body}"
    );
    assert_eq!(instances[0]["tenants_led"], 1, "{body}");
    assert_eq!(
        instances[1],
        json!({"instance_id": "wfmd-b", "advertise_url": "http://10.0.0.6:8080",
               "last_seen_at": instant(last_seen(&east, "wfmd-b").await), "tenants_led": 1}),
        "{body}"
    );

    let east_lease = lease::leadership(&east).await.unwrap().unwrap();
    assert_eq!(
        body["tenants"][0],
        json!({"id": "east", "leader": "wfmd-b", "term": 1,
               "lease_expires_at": instant(east_lease.expires_at), "lease_current": true}),
        "{body}"
    );
    let west = &body["tenants"][1];
    assert_eq!(west["term"], 1, "{body}");
    // Renewed while current: it runs out after wfmd-a last noted itself, within a TTL.
    let (expires, seen) = (
        parsed(&west["lease_expires_at"]),
        parsed(&instances[0]["last_seen_at"]),
    );
    assert!(
        expires > seen && expires <= seen + chrono::TimeDelta::seconds(2),
        "{body}"
    );

    // Its metrics agree: it leads west (since it took the lease, once), not east.
    let lines = scraped(
        &served,
        &[
            of_tenant(TENANT_LEADER, "west"),
            of_tenant(TENANT_LEADER, "east"),
            of_tenant(LEADERSHIP_CHANGES_TOTAL, "west"),
            of_tenant(LEADERSHIP_CHANGES_TOTAL, "east"),
        ],
    )
    .await;
    assert_eq!(
        lines,
        [
            format!("{} 1", of_tenant(TENANT_LEADER, "west")),
            format!("{} 0", of_tenant(TENANT_LEADER, "east")),
            format!("{} 1", of_tenant(LEADERSHIP_CHANGES_TOTAL, "west")),
            format!("{} 0", of_tenant(LEADERSHIP_CHANGES_TOTAL, "east")),
        ]
    );

    let (status, _) = get(&served, "/v1/cluster", Some("wfmd_desk")).await;
    assert_eq!(status, 403);
    let (status, body) = get(&served, "/v1/cluster", Some("wfmd_one_ops")).await;
    assert_eq!(status, 200);
    assert_eq!(body["tenants"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["tenants"][0]["id"], "east", "{body}");
    served.stop().await;
}

/// A PostgreSQL database that several instances used, now served by one without
/// `[ha]` (the sole instance): what they left is shown as it is.
#[tokio::test]
async fn on_postgresql_a_lease_left_behind_shows_its_last_holder_and_an_unreadable_one_its_error() {
    let (alpha_sim, beta_sim) = two_sims().await;
    let db = TestDb::postgres();
    let mut config = two_tenants(&db, &alpha_sim, &beta_sim, "");
    with_tokens(&mut config, "alpha");
    // wfmd-c led alpha until its lease ran out, and served both tenants.
    let (alpha, beta) = (store_of(&db, "alpha").await, store_of(&db, "beta").await);
    assert_eq!(
        lease::take(&alpha, "wfmd-c", None, Duration::ZERO)
            .await
            .unwrap(),
        Some(1)
    );
    for store in [&alpha, &beta] {
        lease::heartbeat(store, "wfmd-c", Some("http://10.0.0.7:8080"))
            .await
            .unwrap();
    }
    let served = Served::start(&config).await;
    let this = wfmd::config::ha::HaConfig::default().instance_id();

    let (status, body) = get(&served, "/v1/cluster", Some("wfmd_ops")).await;
    assert_eq!(status, 200, "{body}");
    // The instances' notes are the database's, whichever tenant's store reads them:
    // wfmd-c once, as last seen.
    let c_seen = last_seen(&alpha, "wfmd-c").await;
    assert_eq!(c_seen, last_seen(&beta, "wfmd-c").await);
    let mut instances = vec![
        json!({"instance_id": this, "advertise_url": null, "last_seen_at": null,
               "tenants_led": 1}),
        json!({"instance_id": "wfmd-c", "advertise_url": "http://10.0.0.7:8080",
               "last_seen_at": instant(c_seen), "tenants_led": 0}),
    ];
    instances.sort_by_key(|i| i["instance_id"].as_str().unwrap().to_owned());
    assert_eq!(body["instances"], json!(instances), "{body}");
    let alpha_lease = lease::leadership(&alpha).await.unwrap().unwrap();
    assert_eq!(
        body["tenants"],
        json!([
            {"id": "alpha", "leader": "wfmd-c", "term": 1,
             "lease_expires_at": instant(alpha_lease.expires_at), "lease_current": false},
            {"id": "beta", "leader": this, "term": null, "lease_expires_at": null,
             "lease_current": true},
        ]),
        "{body}"
    );

    // The leases cannot be read any more (they are read together, for every tenant):
    // each tenant says so, and this instance is still listed.
    db.psql("ALTER TABLE wfmd_cluster.leases RENAME COLUMN holder TO former_holder");
    let (status, body) = get(&served, "/v1/cluster", Some("wfmd_ops")).await;
    assert_eq!(status, 200, "{body}");
    for (tenant, id) in body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["alpha", "beta"])
    {
        assert_eq!(
            (&tenant["id"], &tenant["leader"], &tenant["lease_current"]),
            (&json!(id), &Value::Null, &json!(false)),
            "{body}"
        );
        assert!(
            tenant["error"]
                .as_str()
                .is_some_and(|e| e.contains("could not be read")),
            "{body}"
        );
    }
    let listed = body["instances"].as_array().unwrap();
    assert!(listed.iter().any(|i| i["instance_id"] == this), "{body}");
    served.stop().await;
}
