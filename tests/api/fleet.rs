//! Many tenants on several `wfmd serve` processes (`[ha]`) and one PostgreSQL server of
//! these tests' own (`pg_stat_statements` loaded, room for many connections): the
//! leases of all an instance's tenants move in one statement per look; the tenants
//! spread over the instances and are handed over when one joins or leaves, none of
//! them long without a leader; an instance killed with `kill -9` loses its tenants to
//! the other within seconds, though its leases would last a minute, and its terms are
//! refused from then on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::helpers::*;

/// The server of these tests.
fn server() -> &'static throwaway_postgres::Server {
    static SERVER: OnceLock<throwaway_postgres::Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        throwaway_postgres::start(throwaway_postgres::Options {
            max_connections: 1_000,
            settings: vec![(
                "shared_preload_libraries".into(),
                "'pg_stat_statements'".into(),
            )],
            ..Default::default()
        })
    })
}

/// A database of the server, a simulator and a configuration of `tenants` tenants
/// (`t1` … `tN`, all on the one simulator), for instances to be started on.
struct Fleet {
    database: String,
    tenants: Vec<String>,
    file: PathBuf,
    env: Vec<(String, String)>,
    _sim: TestSim,
    _dir: tempfile::TempDir,
}

/// The admin token the configuration holds.
const TOKEN: &str = "wfmd_fleet_ops";

impl Fleet {
    async fn new(tenants: usize) -> Fleet {
        let sim = TestSim::default_tenant().await;
        let url = tokio::task::spawn_blocking(|| server().fresh_database())
            .await
            .unwrap();
        let database = url.rsplit('/').next().unwrap().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let tenants: Vec<String> = (1..=tenants).map(|n| format!("t{n}")).collect();
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\
             [database]\nurl = \"{url}\"\n\
             [retry]\nbase_delay_ms = 10\nmax_delay_ms = 2000\n\
             [sync]\nenabled = false\n[live]\nenabled = false\n\
             [[api_tokens]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\nrole = \"admin\"\n",
            crate::auth::sha256_hex(TOKEN)
        );
        let mut env = Vec::new();
        for id in &tenants {
            text.push_str(&format!(
                "[[tenants]]\nid = \"{id}\"\nname = \"Tenant {id}\"\n[tenants.cxone]\n\
                 base_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\n\
                 requests_per_minute = 6000\nrequest_timeout_ms = 2000\n",
                sim.base_url, sim.token_url, sim.client_id
            ));
            env.push((
                format!("WFMD_TENANTS__{}__CXONE__CLIENT_SECRET", id.to_uppercase()),
                sim.client_secret.clone(),
            ));
        }
        let file = dir.path().join("wfmd.toml");
        std::fs::write(&file, text).unwrap();
        env.push(("WFMD_HA__CLUSTER_KEY".into(), CLUSTER_KEY.into()));
        Fleet {
            database,
            tenants,
            file,
            env,
            _sim: sim,
            _dir: dir,
        }
    }

    /// `wfmd serve` as instance `id`, its leases lasting `ttl`.
    async fn start(&self, id: &str, ttl: &str) -> Daemon {
        let mut env = self.env.clone();
        env.push(("WFMD_HA__INSTANCE_ID".into(), id.into()));
        env.push(("WFMD_HA__LEASE_TTL".into(), ttl.into()));
        let args = ["--config", self.file.to_str().unwrap(), "serve"];
        Daemon::spawn_with(&args, &env, None).await
    }

    fn psql(&self, sql: &str) -> String {
        server()
            .psql(&self.database, sql)
            .unwrap_or_else(|why| panic!("psql `{sql}` failed: {why}"))
    }

    /// Each tenant's leader now (see [`leaders_sql`]) and its term; tenants without one
    /// are missing.
    fn leaders(&self) -> BTreeMap<String, (String, i64)> {
        leaders(&self.database, &self.tenants)
    }

    /// How many tenants each instance leads now.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (holder, _) in self.leaders().into_values() {
            *counts.entry(holder).or_default() += 1;
        }
        counts
    }

    /// Waits until every tenant is led and `settled` holds of the counts: the counts.
    async fn settled(
        &self,
        what: &str,
        settled: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> BTreeMap<String, usize> {
        eventually(what, async || {
            let counts = self.counts();
            let led: usize = counts.values().sum();
            match led == self.tenants.len() && settled(&counts) {
                true => Ok(counts),
                false => Err(format!("{counts:?}")),
            }
        })
        .await
    }
}

/// Watches every tenant's leader, four times a second, while instances come and go:
/// the longest any tenant went without one.
struct Watch {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Duration>,
}

impl Watch {
    fn start(fleet: &Fleet) -> Watch {
        let stop = tokio_util::sync::CancellationToken::new();
        let (tenants, database) = (fleet.tenants.clone(), fleet.database.clone());
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut without: BTreeMap<String, Instant> = BTreeMap::new();
                let mut longest = Duration::ZERO;
                while !stop.is_cancelled() {
                    let led = tokio::task::spawn_blocking({
                        let (tenants, database) = (tenants.clone(), database.clone());
                        move || {
                            let led = leaders(&database, &tenants);
                            tenants
                                .into_iter()
                                .map(|t| {
                                    let is_led = led.contains_key(&t);
                                    (t, is_led)
                                })
                                .collect::<Vec<_>>()
                        }
                    })
                    .await
                    .unwrap();
                    let now = Instant::now();
                    for (tenant, is_led) in led {
                        match (is_led, without.get(&tenant)) {
                            (false, None) => {
                                without.insert(tenant, now);
                            }
                            (true, Some(since)) => {
                                longest = longest.max(now - *since);
                                without.remove(&tenant);
                            }
                            _ => {}
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                let now = Instant::now();
                without
                    .values()
                    .map(|since| now - *since)
                    .fold(longest, Duration::max)
            }
        });
        Watch { stop, task }
    }

    async fn finish(self) -> Duration {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// Each tenant's leader in `database`: the instance whose lease is current and whose
/// term is the tenant's (started in its schema), with that term. Nothing before an
/// instance made the shared schema.
fn leaders(database: &str, tenants: &[String]) -> BTreeMap<String, (String, i64)> {
    // The tenants' own terms, each from its schema (a test may read across them).
    let terms: Vec<String> = tenants
        .iter()
        .map(|id| format!("SELECT '{id}' AS tenant, holder, term FROM {id}.cluster_lease"))
        .collect();
    let sql = format!(
        "WITH terms AS ({}) SELECT l.tenant || ' ' || l.holder || ' ' || l.term
         FROM wfmd_cluster.leases AS l
         JOIN terms AS t ON t.tenant = l.tenant AND t.holder = l.holder AND t.term = l.term
         LEFT JOIN wfmd_cluster.instance_sessions AS s ON s.instance_id = l.holder
         WHERE NOT COALESCE(s.gone, FALSE)
           AND l.expires_at > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        terms.join(" UNION ALL ")
    );
    let Ok(rows) = server().psql(database, &sql) else {
        return BTreeMap::new();
    };
    rows.lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let (tenant, holder, term) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            (
                tenant.to_owned(),
                (holder.to_owned(), term.parse().unwrap()),
            )
        })
        .collect()
}

/// The statements of the test's database that name a lease table, and how often each
/// ran since the counts were last reset.
fn lease_statements(fleet: &Fleet) -> Vec<(String, u64)> {
    fleet
        .psql(
            "SELECT calls || ' ' || regexp_replace(query, '\\s+', ' ', 'g')
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND (query LIKE '%cluster_lease%' OR query LIKE '%wfmd_cluster.leases%')",
        )
        .lines()
        .map(|line| {
            let (calls, query) = line.split_once(' ').unwrap();
            (query.to_owned(), calls.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn one_statement_per_look_keeps_every_lease_of_an_instance_whatever_its_tenants() {
    let fleet = Fleet::new(12).await;
    fleet.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    let _a = fleet.start("wfmd-a", "2s").await;
    let _b = fleet.start("wfmd-b", "2s").await;
    let counts = fleet
        .settled("the tenants never spread", |c| c.values().all(|n| *n == 6))
        .await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    let before = fleet.leaders();

    // Four seconds of quiet: six renewals of each lease (every third of 2 s), sixteen
    // looks of each instance.
    fleet.psql("SELECT pg_stat_statements_reset()");
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let ran = lease_statements(&fleet);

    // No tenant's own lease row was read or written: its term started once, and stays.
    let per_tenant: Vec<&(String, u64)> = ran
        .iter()
        .filter(|(query, _)| query.contains("cluster_lease"))
        .collect();
    assert!(per_tenant.is_empty(), "{per_tenant:#?}");
    // One statement per look of each instance, however many tenants it leads: at most
    // 16 looks each in the window (a few more for a look under way as it opened and
    // closed), where a statement per tenant would be ten times as many.
    let looks = 2 * (window.as_millis() / 250) as u64;
    let calls: u64 = ran.iter().map(|(_, calls)| calls).sum();
    assert!(
        calls <= looks + 4 && calls >= looks / 2,
        "{calls} lease statements for {looks} looks: {ran:#?}"
    );
    // Meanwhile every lease was renewed, by its holder, in its term.
    let renewed = fleet.psql(
        "SELECT COUNT(*) FROM wfmd_cluster.leases
         WHERE expires_at > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    );
    assert_eq!(renewed, "12");
    assert_eq!(fleet.leaders(), before, "no tenant changed hands");
}

#[tokio::test]
async fn tenants_spread_over_two_then_three_instances_and_back_none_long_without_a_leader() {
    let fleet = Fleet::new(12).await;
    let a = fleet.start("wfmd-a", "2s").await;
    fleet
        .settled("wfmd-a never led every tenant", |c| {
            c.get("wfmd-a") == Some(&12)
        })
        .await;
    let watch = Watch::start(&fleet);

    // A second instance: six each (ceil(12 / 2), and never more than one over it).
    let b = fleet.start("wfmd-b", "2s").await;
    let two = fleet
        .settled("the tenants never spread over two", |c| {
            c.len() == 2 && c.values().all(|n| *n <= 7)
        })
        .await;
    assert!(two.values().all(|n| *n == 6), "{two:?}");

    // A third: four each.
    let c = fleet.start("wfmd-c", "2s").await;
    let three = fleet
        .settled("the tenants never spread over three", |c| {
            c.len() == 3 && c.values().all(|n| *n <= 5)
        })
        .await;
    assert!(three.values().all(|n| *n == 4), "{three:?}");

    // GET /v1/cluster on any instance says so.
    let seen = http_client()
        .get(format!("{}/v1/cluster", b.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let led: BTreeMap<String, u64> = seen["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let id = i["instance_id"].as_str().unwrap().to_owned();
            (id, i["tenants_led"].as_u64().unwrap())
        })
        .collect();
    let expected: BTreeMap<String, u64> = fleet
        .counts()
        .into_iter()
        .map(|(id, n)| (id, n as u64))
        .collect();
    assert_eq!(led, expected, "{seen}");

    // Settled, they stay: two leases' lengths later, the same leaders in the same terms.
    let settled = fleet.leaders();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        fleet.leaders(),
        settled,
        "a tenant changed hands once settled"
    );

    // The third stops (SIGTERM) and the first is killed: the survivor takes everything.
    c.signal("TERM");
    assert!(c.wait().await.success());
    let back = fleet
        .settled("the tenants never gathered on two", |c| {
            c.len() == 2 && c.values().all(|n| *n <= 7)
        })
        .await;
    assert!(back.values().all(|n| *n == 6), "{back:?}");
    a.signal("KILL");
    a.wait().await;
    fleet
        .settled("the survivor never led every tenant", |c| {
            c.get("wfmd-b") == Some(&12)
        })
        .await;

    let longest = watch.finish().await;
    assert!(
        longest <= Duration::from_secs(2),
        "a tenant went {longest:?} without a leader"
    );
    drop(b);
}

/// The term of each tenant `instance` leads now.
fn terms_of(fleet: &Fleet, instance: &str) -> BTreeMap<String, i64> {
    fleet
        .leaders()
        .into_iter()
        .filter(|(_, (holder, _))| holder == instance)
        .map(|(tenant, (_, term))| (tenant, term))
        .collect()
}

#[tokio::test]
async fn kill_9_of_an_instance_moves_its_tenants_within_seconds_though_its_leases_last_a_minute() {
    let fleet = Fleet::new(6).await;
    let a = fleet.start("wfmd-a", "60s").await;
    fleet
        .settled("wfmd-a never led every tenant", |c| {
            c.get("wfmd-a") == Some(&6)
        })
        .await;
    let b = fleet.start("wfmd-b", "60s").await;
    fleet
        .settled("the tenants never spread", |c| c.values().all(|n| *n == 3))
        .await;
    let held = terms_of(&fleet, "wfmd-b");
    assert_eq!(held.len(), 3);

    let killed_at = Instant::now();
    b.signal("KILL");
    b.wait().await;
    let moved = eventually_within(
        Duration::from_secs(5),
        "wfmd-b's tenants never moved",
        async || match terms_of(&fleet, "wfmd-a") {
            led if led.len() == 6 => Ok(led),
            led => Err(format!("{led:?}")),
        },
    )
    .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    for (tenant, term) in &held {
        assert!(moved[tenant] > *term, "{tenant}: {moved:?}");
        // The fence: whatever the dead instance would still write in its term is
        // refused, in the tenant's own schema.
        for statement in [
            format!("SET search_path TO {tenant}; SELECT wfmd_prove_term('wfmd-b', {term})"),
            format!(
                "SET search_path TO {tenant}; SELECT wfmd_leader_write_lock(1, 'wfmd-b', {term})"
            ),
        ] {
            let refused = server()
                .psql(&fleet.database, &statement)
                .expect_err("the dead leader's term is over");
            assert!(refused.contains("no longer leads"), "{refused}");
        }
    }
    // The survivor counted each of those tenants' time without a leader.
    let scrape = get_text(&format!("{}/metrics", a.address)).await;
    for tenant in held.keys() {
        let count = format!("wfmd_failover_seconds_count{{tenant=\"{tenant}\"}} 1");
        assert!(scrape.contains(&count), "no {count} in\n{scrape}");
    }
}

#[tokio::test]
async fn an_instance_that_loses_its_liveness_session_stops_leading_at_once() {
    let fleet = Fleet::new(4).await;
    let a = fleet.start("wfmd-a", "60s").await;
    fleet
        .settled("wfmd-a never led every tenant", |c| {
            c.get("wfmd-a") == Some(&4)
        })
        .await;
    let b = fleet.start("wfmd-b", "60s").await;
    fleet
        .settled("the tenants never spread", |c| c.values().all(|n| *n == 2))
        .await;
    let held = terms_of(&fleet, "wfmd-b");

    let changes_of = async |tenant: &str| -> f64 {
        let scrape = get_text(&format!("{}/metrics", b.address)).await;
        let series = format!("wfmd_leadership_changes_total{{tenant=\"{tenant}\"}} ");
        scrape
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0.0, |value| value.parse().unwrap())
    };
    for tenant in held.keys() {
        assert_eq!(changes_of(tenant).await, 1.0, "{tenant}: led once");
    }

    // The server ends wfmd-b's liveness session, as it would after a network cut:
    // wfmd-b, alive, stops leading its tenants at once (it cannot prove to the others
    // that it is alive), long before its leases of a minute would run out. Each of its
    // tenants is led again in a new term, by wfmd-a, or by wfmd-b once it has a new
    // session: the old terms are over.
    fleet.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'wfmd wfmd-b liveness' AND datname = current_database()",
    );
    eventually_within(
        Duration::from_secs(3),
        "wfmd-b never stopped leading",
        async || {
            for tenant in held.keys() {
                let changes = changes_of(tenant).await;
                if changes < 2.0 {
                    return Err(format!("{tenant}: {changes} changes"));
                }
            }
            Ok(())
        },
    )
    .await;
    eventually_within(
        Duration::from_secs(5),
        "wfmd-b's tenants were never led again",
        async || {
            let now = fleet.leaders();
            let again = held
                .iter()
                .all(|(tenant, term)| now.get(tenant).is_some_and(|(_, t)| t > term));
            match again {
                true => Ok(()),
                false => Err(format!("{now:?}")),
            }
        },
    )
    .await;
    for (tenant, term) in &held {
        let refused = server()
            .psql(
                &fleet.database,
                &format!("SET search_path TO {tenant}; SELECT wfmd_prove_term('wfmd-b', {term})"),
            )
            .expect_err("wfmd-b's old term is over");
        assert!(refused.contains("no longer leads"), "{refused}");
    }
    drop(a);
}
