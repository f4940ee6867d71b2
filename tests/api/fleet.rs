//! Many tenants on several `wfmd serve` processes (`[ha]`) and one PostgreSQL server of
//! these tests' own (`pg_stat_statements` loaded, room for many connections). Which
//! instance leads a tenant is what the instances' `/metrics` say (`wfmd_tenant_leader`),
//! with the term from the tenant's own schema (the fence's), so the tests hold however
//! the leases are kept. The leases of all an instance's tenants move in one statement per look; the tenants
//! spread over the instances and are handed over when one joins or leaves, none of
//! them long without a leader; an instance killed with `kill -9` loses its tenants to
//! the other within seconds, though its leases would last a minute, and its terms are
//! refused from then on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
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

/// A server of PostgreSQL's default size (100 connections), where the 60
/// tenants on two instances did not start while each tenant had pools of its own.
fn default_sized_server() -> &'static throwaway_postgres::Server {
    static SERVER: OnceLock<throwaway_postgres::Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        throwaway_postgres::start(throwaway_postgres::Options {
            max_connections: 100,
            ..Default::default()
        })
    })
}

/// A database of the server, a simulator and a configuration of `tenants` tenants
/// (`t1` … `tN`, all on the one simulator), for instances to be started on, and the
/// instances serving now.
struct Fleet {
    server: &'static throwaway_postgres::Server,
    database: String,
    tenants: Vec<String>,
    file: PathBuf,
    env: Vec<(String, String)>,
    serving: Serving,
    _sim: TestSim,
    _dir: tempfile::TempDir,
}

/// The instances serving: their ids and addresses.
type Serving = Arc<Mutex<Vec<(String, String)>>>;

/// The admin token the configuration holds.
const TOKEN: &str = "wfmd_fleet_ops";

impl Fleet {
    async fn new(tenants: usize) -> Fleet {
        Fleet::new_on(server(), tenants).await
    }

    async fn new_on(server: &'static throwaway_postgres::Server, tenants: usize) -> Fleet {
        let sim = TestSim::default_tenant().await;
        let url = tokio::task::spawn_blocking(|| server.fresh_database())
            .await
            .unwrap();
        let database = url.rsplit('/').next().unwrap().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let tenants: Vec<String> = (1..=tenants).map(|n| format!("t{n}")).collect();
        let listed: Vec<(&str, &TestSim)> = tenants.iter().map(|id| (id.as_str(), &sim)).collect();
        let token = crate::auth::sha256_hex(TOKEN);
        let (file, mut env) = crate::tenants::tenants_file_in(
            dir.path(),
            &url,
            &listed,
            &format!(
                "[[api_tokens]]\nname = \"ops\"\ntoken_sha256 = \"{token}\"\nrole = \"admin\"\n"
            ),
        );
        env.push(("WFMD_HA__CLUSTER_KEY".into(), CLUSTER_KEY.into()));
        Fleet {
            server,
            database,
            tenants,
            file,
            env,
            serving: Serving::default(),
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
        let daemon = Daemon::spawn_with(&args, &env, None).await;
        let mut serving = self.serving.lock().unwrap();
        serving.push((id.to_owned(), daemon.address.clone()));
        daemon
    }

    /// Instance `id` is gone (stopped or killed): no longer asked.
    fn gone(&self, id: &str) {
        self.serving
            .lock()
            .unwrap()
            .retain(|(serving, _)| serving != id);
    }

    fn psql(&self, sql: &str) -> String {
        self.server
            .psql(&self.database, sql)
            .unwrap_or_else(|why| panic!("psql `{sql}` failed: {why}"))
    }

    /// Each tenant's leader now, as the instances serving say (see [`leaders`]), with
    /// the tenant's term.
    async fn leaders(&self) -> BTreeMap<String, (String, i64)> {
        let led = leaders(&self.serving).await;
        let terms = self.terms();
        led.into_iter()
            .map(|(tenant, holder)| {
                let term = terms.get(&tenant).map_or(0, |(_, term)| *term);
                (tenant, (holder, term))
            })
            .collect()
    }

    /// Each tenant's term as its own schema holds it (the fence's), and its holder.
    fn terms(&self) -> BTreeMap<String, (String, i64)> {
        let terms: Vec<String> = self
            .tenants
            .iter()
            .map(|id| {
                format!("SELECT '{id}' || ' ' || holder || ' ' || term FROM {id}.cluster_lease")
            })
            .collect();
        let Ok(rows) = self.server.psql(&self.database, &terms.join(" UNION ALL ")) else {
            return BTreeMap::new();
        };
        rows.lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                let tenant = parts.next()?.to_owned();
                let holder = parts.next()?.to_owned();
                Some((tenant, (holder, parts.next()?.parse().ok()?)))
            })
            .collect()
    }

    /// How many tenants each instance leads now.
    async fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (holder, _) in self.leaders().await.into_values() {
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
            let counts = self.counts().await;
            let led: usize = counts.values().sum();
            match led == self.tenants.len() && settled(&counts) {
                true => Ok(counts),
                false => Err(format!("{counts:?}")),
            }
        })
        .await
    }
}

/// Each tenant some instance of `serving` leads, as its `/metrics` says
/// (`wfmd_tenant_leader` 1, set once its term has started), and that instance. An
/// instance that does not answer (killed) leads nothing.
async fn leaders(serving: &Serving) -> BTreeMap<String, String> {
    let asked = serving.lock().unwrap().clone();
    let mut led = BTreeMap::new();
    for (id, address) in asked {
        let Ok(response) = http_client().get(format!("{address}/metrics")).send().await else {
            continue;
        };
        let Ok(scrape) = response.text().await else {
            continue;
        };
        for line in scrape.lines() {
            let tenant = line
                .strip_prefix("wfmd_tenant_leader{tenant=\"")
                .and_then(|rest| rest.strip_suffix("\"} 1"));
            if let Some(tenant) = tenant {
                led.insert(tenant.to_owned(), id.clone());
            }
        }
    }
    led
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
        let (tenants, serving) = (fleet.tenants.clone(), fleet.serving.clone());
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut without: BTreeMap<String, Instant> = BTreeMap::new();
                let mut longest = Duration::ZERO;
                while !stop.is_cancelled() {
                    let led = leaders(&serving).await;
                    let now = Instant::now();
                    for tenant in &tenants {
                        match (led.contains_key(tenant), without.get(tenant)) {
                            (false, None) => {
                                without.insert(tenant.clone(), now);
                            }
                            (true, Some(since)) => {
                                longest = longest.max(now - *since);
                                without.remove(tenant);
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
    let before = fleet.leaders().await;

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
    assert_eq!(fleet.leaders().await, before, "no tenant changed hands");
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

    // A second instance: six each (ceil(12 / 2)). The moves pass through other
    // counts (a tenant handed over is led by nobody for a moment), so the spread is
    // waited for, not read at the first count within bounds.
    let b = fleet.start("wfmd-b", "2s").await;
    fleet
        .settled("the tenants never spread over two, six each", |c| {
            c.len() == 2 && c.values().all(|n| *n == 6)
        })
        .await;

    // A third: four each.
    let c = fleet.start("wfmd-c", "2s").await;
    fleet
        .settled("the tenants never spread over three, four each", |c| {
            c.len() == 3 && c.values().all(|n| *n == 4)
        })
        .await;

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
        .await
        .into_iter()
        .map(|(id, n)| (id, n as u64))
        .collect();
    assert_eq!(led, expected, "{seen}");

    // Settled, they stay: two leases' lengths later, the same leaders in the same terms.
    let settled = fleet.leaders().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        fleet.leaders().await,
        settled,
        "a tenant changed hands once settled"
    );

    // The third stops (SIGTERM) and the first is killed: the survivor takes everything.
    c.signal("TERM");
    assert!(c.wait().await.success());
    fleet.gone("wfmd-c");
    let back = fleet
        .settled("the tenants never gathered on two", |c| {
            c.len() == 2 && c.values().all(|n| *n <= 7)
        })
        .await;
    assert!(back.values().all(|n| *n == 6), "{back:?}");
    a.signal("KILL");
    a.wait().await;
    fleet.gone("wfmd-a");
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
async fn terms_of(fleet: &Fleet, instance: &str) -> BTreeMap<String, i64> {
    fleet
        .leaders()
        .await
        .into_iter()
        .filter(|(_, (holder, _))| holder == instance)
        .map(|(tenant, (_, term))| (tenant, term))
        .collect()
}

/// `tenants` tenants on wfmd-a, then on wfmd-b besides, their leases lasting a
/// minute: the two, once they lead half each, and the terms of wfmd-b's half.
async fn two_sharing(tenants: usize) -> (Fleet, Daemon, Daemon, BTreeMap<String, i64>) {
    let fleet = Fleet::new(tenants).await;
    let a = fleet.start("wfmd-a", "60s").await;
    fleet
        .settled("wfmd-a never led every tenant", |c| {
            c.get("wfmd-a") == Some(&tenants)
        })
        .await;
    let b = fleet.start("wfmd-b", "60s").await;
    fleet
        .settled("the tenants never spread", |c| {
            c.values().all(|n| *n == tenants / 2)
        })
        .await;
    let held = terms_of(&fleet, "wfmd-b").await;
    assert_eq!(held.len(), tenants / 2);
    (fleet, a, b, held)
}

#[tokio::test]
async fn kill_9_of_an_instance_moves_its_tenants_within_seconds_though_its_leases_last_a_minute() {
    let (fleet, a, b, held) = two_sharing(6).await;

    let killed_at = Instant::now();
    b.signal("KILL");
    b.wait().await;
    fleet.gone("wfmd-b");
    let moved = eventually_within(
        Duration::from_secs(5),
        "wfmd-b's tenants never moved",
        async || match terms_of(&fleet, "wfmd-a").await {
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
    let (fleet, a, b, held) = two_sharing(4).await;

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
            let now = fleet.leaders().await;
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

/// The failing case: 60 tenants on two instances and a PostgreSQL of 100
/// connections. Both start and lead their halves, and while every tenant is asked for
/// changes through both instances at once, neither instance ever holds more than its
/// `[database] max_connections` (16), as PostgreSQL's own sessions say.
#[tokio::test]
async fn sixty_tenants_on_two_instances_fit_postgresqls_default_100_connections_each_within_max_connections()
 {
    let fleet = Fleet::new_on(default_sized_server(), 60).await;
    let a = fleet.start("wfmd-a", "10s").await;
    let b = fleet.start("wfmd-b", "10s").await;
    fleet
        .settled("the 60 tenants were never all led", |c| c.len() == 2)
        .await;

    // The most connections each instance held at once, sampled from pg_stat_activity.
    let stop = tokio_util::sync::CancellationToken::new();
    let sampling = tokio::task::spawn_blocking({
        let (stop, database) = (stop.clone(), fleet.database.clone());
        move || {
            let mut most: BTreeMap<String, usize> = BTreeMap::new();
            let mut samples = 0;
            while !stop.is_cancelled() || samples < 3 {
                let rows = default_sized_server()
                    .psql(
                        &database,
                        "SELECT instance || ' ' || COUNT(*)
                         FROM (SELECT split_part(application_name, ' ', 2) AS instance
                               FROM pg_stat_activity
                               WHERE application_name LIKE 'wfmd wfmd-%') AS s
                         GROUP BY instance",
                    )
                    .unwrap();
                for line in rows.lines() {
                    let (instance, count) = line.split_once(' ').unwrap();
                    let count: usize = count.parse().unwrap();
                    let held = most.entry(instance.to_owned()).or_default();
                    *held = (*held).max(count);
                }
                samples += 1;
            }
            most
        }
    });
    let agent = fleet._sim.free_agents().remove(0).id;
    let asks = fleet.tenants.iter().enumerate().map(|(n, tenant)| {
        let through = if n % 2 == 0 { &a.address } else { &b.address };
        let target = if n % 4 < 2 { "PAUSED" } else { "IDLE" };
        let url = format!("{through}/v1/tenants/{tenant}/agents/{agent}/transitions");
        async move {
            http_client()
                .post(url)
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"state": target}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let answers = futures::future::join_all(asks).await;
    stop.cancel();
    let most = sampling.await.unwrap();
    assert!(
        answers.iter().all(|status| *status < 500),
        "a change failed on the server's side: {answers:?}"
    );
    assert_eq!(
        most.keys().collect::<Vec<_>>(),
        ["wfmd-a", "wfmd-b"],
        "{most:?}"
    );
    for (instance, held) in &most {
        assert!(*held <= 16, "{instance} held {held} connections at once");
    }
}
