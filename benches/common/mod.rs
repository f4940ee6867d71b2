//! What every benchmark shares: the runtime, medians, the verdict beside a target, and a
//! simulated platform to run against.

#![allow(dead_code)] // each benchmark uses its own subset

/// A multi-threaded tokio runtime, as `wfmd serve` runs.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The median of several runs (the machines are noisy).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The 95th percentile of `values` (nearest rank).
pub fn p95(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() * 95).div_ceil(100).max(1) - 1]
}

/// CPU seconds process `pid` has used so far (utime + stime, in Linux's clock ticks of
/// 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(pid).expect("/proc/PID/stat");
    ticks(&fields[11..13]) / 100.0
}

/// The fields of `/proc/{pid}/stat` after the process's name (which is in parentheses
/// and may hold spaces): the state is the first. `None` once the process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

fn ticks(fields: &[String]) -> f64 {
    fields.iter().map(|f| f.parse::<f64>().unwrap_or(0.0)).sum()
}

/// CPU seconds used so far by process `root` and its children: its own, that of its
/// children it has reaped, and that of those alive now (a PostgreSQL server: the
/// postmaster and its backends). A child that ended between two readings without
/// being reaped yet is missed.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    let mut total = stat_fields(root).map_or(0.0, |f| ticks(&f[11..15]));
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(fields) = stat_fields(pid)
            && fields[1] == root.to_string()
        {
            total += ticks(&fields[11..13]);
        }
    }
    total / 100.0
}

/// CPU seconds the whole machine has spent busy so far, over all its cores
/// (`/proc/stat`: every state but idle and waiting for I/O).
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice: the guests' time
    // is counted in user and nice already.
    let busy: f64 = cpu
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4 | 8 | 9))
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}

/// Kilobytes on a line of `/proc/{process}/status` (`VmRSS:`, `VmHWM:`), `process`
/// being a pid or `self`; `None` where it cannot be read (not Linux).
pub fn status_kb(process: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The resident memory of process `pid`, in MB (Linux only).
pub fn resident_mb(pid: u32) -> f64 {
    let kb = status_kb(&pid.to_string(), "VmRSS:").expect("/proc/PID/status has VmRSS");
    kb as f64 / 1024.0
}

/// The machine's CPU time so far, from `/proc/stat`: all of it, and the part the
/// hypervisor gave to other machines (steal). `None` where it cannot be read.
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    pub fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is in user's).
        Some(CpuTimes {
            total: fields.iter().take(8).sum(),
            steal: *fields.get(7)?,
        })
    }

    /// The share of CPU time stolen between `self` and `later`: a figure measured while
    /// a large share was stolen says more about the host than about wfmd.
    pub fn steal_since(self, later: CpuTimes) -> f64 {
        let total = later.total.saturating_sub(self.total).max(1);
        later.steal.saturating_sub(self.steal) as f64 / total as f64
    }
}

/// Waits until `GET {url}/v1/tenants` of the daemon `child` lists `tenants` tenants,
/// every one ready; panics with the daemon's log (`log`) if it exits first, or after
/// `within`.
pub async fn wait_tenants_ready(
    child: &mut std::process::Child,
    log: &std::path::Path,
    http: &reqwest::Client,
    url: &str,
    tenants: usize,
    within: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(log);
            panic!("wfmd exited ({status}) before it was ready: {log:?}");
        }
        if let Ok(response) = http.get(format!("{url}/v1/tenants")).send().await
            && let Ok(serde_json::Value::Array(listed)) = response.json::<serde_json::Value>().await
            && listed.len() == tenants
            && listed.iter().all(|t| t["ready"] == true)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tenants were not all ready within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `MET` or `MISSED`, printed beside each figure.
pub fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

/// One change of `agent_id` to `target` through the engine, as an API request makes it.
pub async fn api_change(
    engine: &wfmd::engine::TransitionEngine,
    agent_id: String,
    target: wfmd::domain::AgentState,
) -> wfmd::engine::Transition {
    engine
        .change(wfmd::engine::Change::from(
            wfmd::engine::TransitionRequest {
                agent_id,
                target,
                reason: None,
                origin: wfmd::domain::Origin::Api,
                actor: "bench".into(),
                idempotency_key: None,
            },
        ))
        .await
        .map(wfmd::engine::Changed::made)
        .unwrap()
}

/// Waits until the daemon at `url` answers `/healthz`; panics after `within`.
pub async fn wait_healthy(http: &reqwest::Client, url: &str, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(answer) = http.get(format!("{url}/healthz")).send().await
            && answer.status().is_success()
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} did not come up within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `url`'s `/metrics` page, how long it took from the first ask, and in how many asks.
///
/// A daemon busy starting its tenants may answer the scrape otherwise than 200 (or not
/// at all) for a while: asked again until it does, within half a minute.
pub async fn scrape(http: &reqwest::Client, url: &str) -> (String, std::time::Duration, u32) {
    use std::time::{Duration, Instant};
    let asked = Instant::now();
    let deadline = asked + Duration::from_secs(30);
    let mut asks = 0;
    loop {
        asks += 1;
        let answer = http.get(format!("{url}/metrics")).send().await;
        let last = match answer {
            Ok(answer) if answer.status().is_success() => {
                return (answer.text().await.unwrap(), asked.elapsed(), asks);
            }
            Ok(answer) => format!("answered {}", answer.status()),
            Err(error) => error.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{url}/metrics did not answer 200 within 30 s: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asks for one change at `transitions` (an agent's `.../transitions` route) with an
/// idempotency key: the answer's status once its whole body has come (a change is
/// carried out then), `None` when none came within `within`.
pub async fn post_transition(
    http: &reqwest::Client,
    transitions: &str,
    state: &str,
    key: &str,
    within: std::time::Duration,
) -> Option<u16> {
    let answer = http
        .post(transitions)
        .json(&serde_json::json!({"state": state, "idempotency_key": key}))
        .timeout(within)
        .send()
        .await
        .ok()?;
    let status = answer.status().as_u16();
    answer.bytes().await.ok().map(|_| status)
}

/// The simulator on a free loopback port, and a wfmd configuration and store in a fresh
/// temporary folder pointing at it: what every benchmark of the platform side starts from.
pub struct SimulatedPlatform {
    pub sim: wfmd::sim::Simulator,
    /// Platform settings point at the simulator; adjust the rest before [`Self::client`].
    pub config: wfmd::config::Config,
    pub store: wfmd::store::Store,
    _dir: tempfile::TempDir,
    stop: tokio_util::sync::CancellationToken,
}

impl SimulatedPlatform {
    pub async fn start(sim_config: wfmd::sim::SimConfig) -> SimulatedPlatform {
        Self::start_on(sim_config, None).await
    }

    /// [`Self::start`] with its database at `database_url` (a SQLite file in a fresh
    /// folder with `None`).
    pub async fn start_on(
        sim_config: wfmd::sim::SimConfig,
        database_url: Option<String>,
    ) -> SimulatedPlatform {
        let stop = tokio_util::sync::CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = wfmd::sim::Simulator::start(sim_config.clone(), listener, stop.clone())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = wfmd::config::Config::default();
        config.database.url = database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
        config.cxone.base_url = running.base_url.clone();
        config.cxone.token_url = running.token_url.clone();
        config.cxone.client_id = sim_config.client_id;
        config.cxone.client_secret = sim_config.client_secret.into();
        let store = wfmd::store::Store::open(&config.database.url)
            .await
            .unwrap();
        SimulatedPlatform {
            sim: running.sim,
            config,
            store,
            _dir: dir,
            stop,
        }
    }

    /// A tenant of `agents` whose clock stands still (the bench steps it) and whose
    /// request budget is unlimited.
    pub async fn frozen(agents: usize) -> SimulatedPlatform {
        Self::start(wfmd::sim::SimConfig {
            agents,
            time_scale: 0.0,
            requests_per_minute: 0,
            ..wfmd::sim::SimConfig::default()
        })
        .await
    }

    /// A platform client of the configuration, under `budget`.
    pub fn client(
        &self,
        budget: wfmd::cxone::Budget,
    ) -> std::sync::Arc<dyn wfmd::cxone::ContactCenter> {
        wfmd::platform(
            &self.config,
            wfmd::http_client().unwrap(),
            std::sync::Arc::new(budget),
        )
    }

    /// A transition engine over the store and a client under `budget`.
    pub fn engine(
        &self,
        budget: wfmd::cxone::Budget,
    ) -> std::sync::Arc<wfmd::engine::TransitionEngine> {
        std::sync::Arc::new(wfmd::engine::TransitionEngine::new(
            self.store.clone(),
            self.client(budget),
            self.config.schedule_cache_ttl(),
        ))
    }

    /// Agents any change may be made to now: on shift and not on a contact (a mandatory
    /// break only forbids READY).
    pub fn movable_agents(&self) -> Vec<String> {
        let now = chrono::Utc::now();
        self.sim
            .agents()
            .into_iter()
            .filter(|a| a.on_shift_at(now) && a.state != "ON_CONTACT")
            .map(|a| a.id)
            .collect()
    }
}

impl Drop for SimulatedPlatform {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
