//! A fleet (#56), its leadership part: many tenants on two, then three `wfmd serve` with
//! `[ha]` at the default `lease_ttl` (10 s), child processes on a PostgreSQL server of
//! the bench's own (fsync on), every tenant on one simulated platform in this process.
//! It goes:
//! 1. instance a starts and leads every tenant; b starts, and they share them;
//! 2. a quiet window: the lease statements each instance sends (`pg_stat_statements`);
//! 3. b is killed (`kill -9`): for each tenant b led, the time from the kill to the
//!    start of its new term under a (the term's `acquired_at`, by the database's clock,
//!    less the database's clock read just before the signal);
//! 4. b starts again and takes its share back; then c joins: the time from its start
//!    until every instance is within its share, and the longest any tenant went
//!    without a leader meanwhile (sampled from the database every 100 ms, and as the
//!    instances that took tenants over counted it: `wfmd_failover_seconds`).
//!
//! Targets (#56):
//! - kill -9: every tenant the dead instance led is led by the other within 1 s (p100
//!   over those tenants);
//! - a third instance joining takes its share (every instance within
//!   `ceil(tenants / instances)`, none below `floor(tenants / instances) - 1`) within
//!   60 s, with no tenant leaderless for more than 1 s during the moves;
//! - one lease statement per look of each instance (four a second), whatever the
//!   number of tenants.
//!
//! The connections PostgreSQL holds for the instances are printed too, without a
//! target: every tenant opens pools of its own until one pool per instance is built
//! (#56's first item), so the bench's server takes `max_connections` = 3,000.
//!
//! Tenants: 100 by default (`WFMD_BENCH_FLEET_TENANTS`); 1,000 needs about ten times
//! the connections, more than this machine's PostgreSQL can hold before the pool work.
//!
//! Run: `cargo bench --bench fleet`; a few minutes on a 2-core machine. Linux only
//! (signals); PostgreSQL comes from tests/support/throwaway-postgres.

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use wfmd::sim::SimConfig;

const DEFAULT_TENANTS: usize = 100;
const TARGET_FAILOVER: Duration = Duration::from_secs(1);
const TARGET_JOIN: Duration = Duration::from_secs(60);
const TARGET_LEADERLESS: Duration = Duration::from_secs(1);
/// The quiet window over which the lease statements are counted.
const QUIET: Duration = Duration::from_secs(10);
/// How often an instance looks at the leases (`cluster::leadership::LOOK_EVERY`).
const LOOKS_PER_SECOND: f64 = 4.0;
/// Anything that should happen (an instance starting, tenants moving) fails the bench
/// when it has not in this long.
const WITHIN: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(100);
const CLIENT_ID: &str = "bench-fleet";
const CLIENT_SECRET: &str = "bench-fleet-secret";

fn main() {
    let tenants: usize = std::env::var("WFMD_BENCH_FLEET_TENANTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_TENANTS);
    // For the whole run: the leadership's watcher holds it in a task of its own.
    let server: &'static throwaway_postgres::Server = Box::leak(Box::new(
        throwaway_postgres::start(throwaway_postgres::Options {
            durable: true,
            max_connections: 3_000,
            settings: vec![(
                "shared_preload_libraries".into(),
                "'pg_stat_statements'".into(),
            )],
        }),
    ));
    common::runtime().block_on(bench(server, tenants));
}

async fn bench(server: &'static throwaway_postgres::Server, count: usize) {
    let started = Instant::now();
    let platform = common::SimulatedPlatform::start(SimConfig {
        agents: 20,
        activity: false,
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        ..SimConfig::default()
    })
    .await;
    let url = server.fresh_database();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let tenants: Vec<String> = (1..=count).map(|n| format!("t{n}")).collect();
    let (config, secrets) = config_file(dir.path(), &url, &tenants, &platform);
    let db = Db {
        server,
        database: database.clone(),
        tenants: tenants.clone(),
    };
    db.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");

    // 1. a alone, then a and b.
    let mut a = Instance::start("wfmd-a", &config, &secrets, dir.path());
    db.until("wfmd-a leads every tenant", &mut [&mut a], |c| {
        c.get("wfmd-a") == Some(&count)
    })
    .await;
    eprintln!(
        "a leads all {count} tenants ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let mut b = Instance::start("wfmd-b", &config, &secrets, dir.path());
    db.until("a and b share the tenants", &mut [&mut a, &mut b], |c| {
        within_shares(c, count, 2)
    })
    .await;
    eprintln!(
        "a and b share them ({:.0} s); {} connections",
        started.elapsed().as_secs_f64(),
        db.connections()
    );

    // 2. A quiet window.
    db.psql("SELECT pg_stat_statements_reset()");
    tokio::time::sleep(QUIET).await;
    let (lease_calls, per_tenant_calls) = db.lease_statements();
    let per_look = lease_calls as f64 / (2.0 * QUIET.as_secs_f64() * LOOKS_PER_SECOND);
    let connections = db.connections();

    // 3. kill -9 of b.
    let held = db.leaders_of("wfmd-b");
    let mut clock = sqlx::PgConnection::connect(&url).await.unwrap();
    let killed_at: i64 =
        sqlx::query_scalar("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)")
            .fetch_one(&mut clock)
            .await
            .unwrap();
    b.signal(Signal::KILL);
    // Where the time goes: when the database sees b's liveness session gone.
    let seen_gone: i64 = loop {
        let gone: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)
             FROM wfmd_cluster.instance_sessions WHERE instance_id = 'wfmd-b' AND gone",
        )
        .fetch_optional(&mut clock)
        .await
        .unwrap();
        if let Some(at) = gone {
            break at;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    b.exited().await;
    db.until("a leads every tenant again", &mut [&mut a], |c| {
        c.get("wfmd-a") == Some(&count)
    })
    .await;
    let claimed: Vec<i64> = sqlx::query_scalar(
        "SELECT acquired_at FROM wfmd_cluster.leases WHERE tenant = ANY($1) ORDER BY 1",
    )
    .bind(held.keys().cloned().collect::<Vec<_>>())
    .fetch_all(&mut clock)
    .await
    .unwrap();
    let since_kill = |at: i64| (at - killed_at) as f64 / 1000.0;
    eprintln!(
        "kill -9: b's session seen gone after {:.3} s; its leases taken after {:.3} to {:.3} s",
        since_kill(seen_gone),
        since_kill(claimed[0]),
        since_kill(*claimed.last().unwrap())
    );
    let taken = db.terms_began();
    let mut failovers: Vec<f64> = held
        .keys()
        .map(|tenant| (taken[tenant].1 - killed_at) as f64 / 1000.0)
        .collect();
    failovers.sort_by(f64::total_cmp);
    let failover_p100 = failovers.last().copied().unwrap_or(0.0);
    let failover_p50 = common::median(failovers.clone());

    // 4. b again, then c joins.
    let mut b = Instance::start("wfmd-b", &config, &secrets, dir.path());
    db.until("b takes its share back", &mut [&mut a, &mut b], |c| {
        within_shares(c, count, 2)
    })
    .await;
    eprintln!("b is back ({:.0} s)", started.elapsed().as_secs_f64());
    let watching = CancellationToken::new();
    let watch = tokio::spawn(watch_leaderless(
        Db {
            server,
            database: database.clone(),
            tenants: tenants.clone(),
        },
        watching.clone(),
    ));
    let joined = Instant::now();
    let mut c = Instance::start("wfmd-c", &config, &secrets, dir.path());
    let spread = db
        .until("c takes its share", &mut [&mut a, &mut b, &mut c], |c| {
            within_shares(c, count, 3)
        })
        .await;
    let join = joined.elapsed();
    // A moment more: a tenant handed over last is seen taken.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watching.cancel();
    let leaderless = watch.await.unwrap();
    let counted = failover_seconds(&c.url).await;

    for instance in [&mut a, &mut b, &mut c] {
        instance.signal(Signal::TERM);
        instance.exited().await;
    }
    drop(platform);

    println!("fleet: {count} tenants, lease_ttl 10 s (the default), PostgreSQL fsync on");
    println!(
        "kill -9: {} tenants moved; p50 {failover_p50:.3} s, p100 {failover_p100:.3} s \
         (target p100 <= {:.1} s: {})",
        failovers.len(),
        TARGET_FAILOVER.as_secs_f64(),
        common::verdict(failover_p100 <= TARGET_FAILOVER.as_secs_f64())
    );
    println!(
        "a third joins: every instance within its share in {:.1} s (target <= {:.0} s: {}); \
         {spread:?}",
        join.as_secs_f64(),
        TARGET_JOIN.as_secs_f64(),
        common::verdict(join <= TARGET_JOIN)
    );
    println!(
        "  longest without a leader during the moves: {:.2} s sampled every {} ms, {:.3} s as \
         wfmd-c counted its take-overs ({} of them) (target <= {:.1} s: {})",
        leaderless.as_secs_f64(),
        POLL.as_millis(),
        counted.1,
        counted.0,
        TARGET_LEADERLESS.as_secs_f64(),
        common::verdict(
            leaderless <= TARGET_LEADERLESS + POLL && counted.1 <= TARGET_LEADERLESS.as_secs_f64()
        )
    );
    println!(
        "lease statements over a quiet {:.0} s: {lease_calls} on the shared leases, \
         {per_tenant_calls} on any tenant's own; {per_look:.2} per look of each instance \
         (target 1, whatever the tenants: {})",
        QUIET.as_secs_f64(),
        common::verdict(per_look <= 1.05 && per_tenant_calls == 0)
    );
    println!(
        "connections PostgreSQL held for the two instances: {connections} \
         (no target here: one pool per instance is #56's first item)"
    );
    println!("whole bench {:.0} s", started.elapsed().as_secs_f64());
}

/// Whether `counts` (tenants led per instance) has every tenant led by `instances`
/// instances, each within its share and none far below it.
fn within_shares(counts: &BTreeMap<String, usize>, tenants: usize, instances: usize) -> bool {
    let (ceil, floor) = (tenants.div_ceil(instances), tenants / instances);
    counts.len() == instances
        && counts.values().sum::<usize>() == tenants
        && counts.values().all(|n| *n <= ceil && *n + 1 >= floor)
}

/// The bench's database, and its tenants.
struct Db<'s> {
    server: &'s throwaway_postgres::Server,
    database: String,
    tenants: Vec<String>,
}

impl Db<'_> {
    fn psql(&self, sql: &str) -> String {
        self.server
            .psql(&self.database, sql)
            .unwrap_or_else(|why| panic!("psql `{sql}` failed: {why}"))
    }

    /// Each tenant's term as started in its schema: its holder, and when it began.
    fn terms_began(&self) -> BTreeMap<String, (String, i64)> {
        let terms: Vec<String> = self
            .tenants
            .iter()
            .map(|id| {
                format!(
                    "SELECT '{id}' || ' ' || holder || ' ' || acquired_at FROM {id}.cluster_lease"
                )
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

    /// Each led tenant's leader: its lease current, its holder alive, its term started.
    fn leaders(&self) -> BTreeMap<String, String> {
        let terms: Vec<String> = self
            .tenants
            .iter()
            .map(|id| format!("SELECT '{id}' AS tenant, holder, term FROM {id}.cluster_lease"))
            .collect();
        let sql = format!(
            "WITH terms AS ({}) SELECT l.tenant || ' ' || l.holder FROM wfmd_cluster.leases AS l
             JOIN terms AS t ON t.tenant = l.tenant AND t.holder = l.holder AND t.term = l.term
             LEFT JOIN wfmd_cluster.instance_sessions AS s ON s.instance_id = l.holder
             WHERE NOT COALESCE(s.gone, FALSE)
               AND l.expires_at > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            terms.join(" UNION ALL ")
        );
        let Ok(rows) = self.server.psql(&self.database, &sql) else {
            return BTreeMap::new();
        };
        rows.lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(tenant, holder)| (tenant.to_owned(), holder.to_owned()))
            .collect()
    }

    fn leaders_of(&self, instance: &str) -> BTreeMap<String, String> {
        let mut led = self.leaders();
        led.retain(|_, holder| holder == instance);
        led
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for holder in self.leaders().into_values() {
            *counts.entry(holder).or_default() += 1;
        }
        counts
    }

    /// Waits until `done` holds of the tenants each instance leads: those counts. Fails
    /// with what `running` logged when one of them exits meanwhile, or at the deadline.
    async fn until(
        &self,
        what: &str,
        running: &mut [&mut Instance],
        done: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> BTreeMap<String, usize> {
        let deadline = Instant::now() + WITHIN;
        loop {
            let counts = self.counts();
            if done(&counts) {
                return counts;
            }
            for instance in running.iter_mut() {
                if let Some(status) = instance.child.try_wait().unwrap() {
                    panic!(
                        "{what}: {} exited {status}:\n{}",
                        instance.url,
                        instance.said()
                    );
                }
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = running.iter().map(|i| i.said()).collect();
                panic!(
                    "{what}: never ({counts:?}); the instances said:\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Calls since the last reset of the statements naming the shared leases, and of
    /// those naming a tenant's own lease row.
    fn lease_statements(&self) -> (u64, u64) {
        let count = |pattern: &str| -> u64 {
            self.psql(&format!(
                "SELECT COALESCE(SUM(calls), 0) FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND query LIKE '%{pattern}%'"
            ))
            .parse()
            .unwrap()
        };
        (count("wfmd_cluster.leases"), count("cluster_lease "))
    }

    /// The database's connections (every instance's, and the bench's psql).
    fn connections(&self) -> String {
        self.psql("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()")
    }
}

/// Samples which tenants are led every [`POLL`] until `stop`: the longest any went
/// without a leader.
async fn watch_leaderless(db: Db<'static>, stop: CancellationToken) -> Duration {
    let mut without: BTreeMap<String, Instant> = BTreeMap::new();
    let mut longest = Duration::ZERO;
    while !stop.is_cancelled() {
        let led = db.leaders();
        let now = Instant::now();
        for tenant in &db.tenants {
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
        tokio::time::sleep(POLL).await;
    }
    let now = Instant::now();
    without
        .values()
        .map(|since| now - *since)
        .fold(longest, Duration::max)
}

/// What `url`'s `/metrics` says of `wfmd_failover_seconds`: how many take-overs it
/// counted, and the longest (over the last minute).
async fn failover_seconds(url: &str) -> (u64, f64) {
    let http = wfmd::http_client().unwrap();
    let scrape = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (mut count, mut longest) = (0, 0.0f64);
    for line in scrape.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if series.starts_with("wfmd_failover_seconds_count{") {
            count += value.parse::<u64>().unwrap_or(0);
        } else if series.starts_with("wfmd_failover_seconds{") && series.contains("quantile=\"1\"")
        {
            longest = longest.max(value.parse().unwrap_or(0.0));
        }
    }
    (count, longest)
}

/// The configuration every instance shares: the tenants, each on the one platform.
/// The secrets come from the environment (`WFMD_TENANTS__{ID}__CXONE__CLIENT_SECRET`),
/// as an operator's would.
fn config_file(
    dir: &Path,
    url: &str,
    tenants: &[String],
    platform: &common::SimulatedPlatform,
) -> (PathBuf, Vec<(String, String)>) {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\
         [database]\nurl = \"{url}\"\n\
         [sync]\nenabled = false\n[live]\nenabled = false\n[log]\nlevel = \"warn\"\n"
    );
    for id in tenants {
        text.push_str(&format!(
            "[[tenants]]\nid = \"{id}\"\nname = \"Tenant {id}\"\n[tenants.cxone]\n\
             base_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             requests_per_minute = 6000\n",
            platform.config.cxone.base_url, platform.config.cxone.token_url
        ));
    }
    let file = dir.join("wfmd.toml");
    std::fs::write(&file, text).unwrap();
    let secrets = tenants
        .iter()
        .map(|id| {
            let key = format!("WFMD_TENANTS__{}__CXONE__CLIENT_SECRET", id.to_uppercase());
            (key, CLIENT_SECRET.to_owned())
        })
        .collect();
    (file, secrets)
}

/// One `wfmd serve` of the fleet, a child process with its log in a file.
struct Instance {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Instance {
    /// Starts instance `id`; it comes up (answers `/healthz`) while its tenants are
    /// taken, which [`Db::until`] waits for.
    fn start(id: &str, config: &Path, secrets: &[(String, String)], dir: &Path) -> Instance {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let log = dir.join(format!("{id}-{port}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_wfmd"));
        for (key, _) in std::env::vars() {
            if key.starts_with("WFMD_") {
                command.env_remove(key);
            }
        }
        let child = command
            .args(["--config", config.to_str().unwrap(), "serve"])
            .envs(secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("WFMD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("WFMD_HA__INSTANCE_ID", id)
            .env("WFMD_HA__ADVERTISE_URL", &url)
            .env(
                "WFMD_HA__CLUSTER_KEY",
                "bench-cluster-key-0123456789abcdef012345",
            )
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Instance { child, url, log }
    }

    fn signal(&self, signal: Signal) {
        kill_process(Pid::from_child(&self.child), signal).unwrap();
    }

    /// What it logged (its last lines), for a failure's message.
    fn said(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the process has exited.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit: {}",
                self.url,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}
