//! The test harness: wfmd and the platform simulator on port 0, over real HTTP, with a
//! fresh database per test: a SQLite file, or for the tests declared on both backends
//! ([`on_both_backends`]) an empty PostgreSQL database too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wfmd::on;

use chrono::Utc;
use serde_json::{Value, json};
pub use throwaway_postgres::install_when_missing;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wfmd::App;
use wfmd::config::Config;
pub use wfmd::config::Dialect;
use wfmd::engine::TransitionEngine;
use wfmd::sim::incontact::{ACCESS_KEY_ID, ACCESS_KEY_SECRET};
use wfmd::sim::{RunningSim, SimAgent, SimConfig, Simulator};
pub use wfmd::store::Backend;
use wfmd::store::Store;

/// The `ha.cluster_key` of the tests' instances.
pub const CLUSTER_KEY: &str = "test-cluster-key-0123456789abcdef0123456789";

/// How long a test waits for something that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A slow start of the browser or of wfmd on a loaded machine: a bound for a hung
/// process, not a measure (a daemon with sixty tenants starts within it while the whole
/// suite runs on two cores).
pub const SLOW: Duration = Duration::from_secs(90);

/// A running simulator with the settings that point wfmd at it. One simulator answers
/// both dialects; `dialect` says which one wfmd is configured to speak.
pub struct TestSim {
    pub sim: Simulator,
    pub dialect: Dialect,
    pub base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    stop: CancellationToken,
}

impl TestSim {
    pub async fn start(config: SimConfig) -> TestSim {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let client_id = config.client_id.clone();
        let client_secret = config.client_secret.clone();
        let RunningSim {
            sim,
            base_url,
            token_url,
            ..
        } = Simulator::start(config, listener, stop.clone())
            .await
            .unwrap();
        TestSim {
            sim,
            dialect: Dialect::V2,
            base_url,
            token_url,
            client_id,
            client_secret,
            stop,
        }
    }

    /// The same simulator, with wfmd configured to speak `dialect` to it.
    pub fn on(mut self, dialect: Dialect) -> TestSim {
        self.dialect = dialect;
        self
    }

    /// The default test tenant: 60 agents, no rate limit to speak of.
    pub async fn default_tenant() -> TestSim {
        Self::start(SimConfig {
            agents: 60,
            ..SimConfig::default()
        })
        .await
    }

    /// Configuration pointing wfmd at this simulator, with fast retries.
    pub fn config(&self, database_url: &str) -> Config {
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.shutdown_timeout = Duration::from_secs(5);
        config.database.url = database_url.to_owned();
        config.cxone.base_url = self.base_url.clone();
        config.cxone.token_url = self.token_url.clone();
        config.cxone.client_id = self.client_id.clone();
        config.cxone.client_secret = self.client_secret.clone().into();
        config.cxone.requests_per_minute = 6_000;
        config.cxone.request_timeout_ms = 2_000;
        config.retry.base_delay_ms = 10;
        config.retry.max_delay_ms = 5_000;
        // Tests that count platform calls must not see the sync's; sync tests opt in.
        config.sync.enabled = false;
        // Nor the metric pollers'; metric tests opt in.
        config.live.enabled = false;
        if self.dialect == Dialect::Incontact {
            let c = &mut config.cxone;
            c.dialect = Dialect::Incontact;
            // Discovery from the simulator's root names the API host.
            c.auth_base = self.base_url.clone();
            c.base_url = String::new();
            c.token_url = String::new();
            c.access_key_id = ACCESS_KEY_ID.into();
            c.access_key_secret = ACCESS_KEY_SECRET.to_owned().into();
            c.break_activities.mandatory = INCONTACT_MANDATORY_BREAKS.map(String::from).to_vec();
        }
        config.validate(false).unwrap();
        config
    }

    /// The same settings as `WFMD_…` variables, for a wfmd child process.
    pub fn env(&self, database_url: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("WFMD_DATABASE__URL", database_url),
            ("WFMD_CXONE__BASE_URL", &self.base_url),
            ("WFMD_CXONE__TOKEN_URL", &self.token_url),
            ("WFMD_CXONE__CLIENT_ID", &self.client_id),
            ("WFMD_CXONE__CLIENT_SECRET", &self.client_secret),
            ("WFMD_CXONE__REQUESTS_PER_MINUTE", "6000"),
            ("WFMD_RETRY__BASE_DELAY_MS", "10"),
            ("WFMD_RETRY__MAX_DELAY_MS", "2000"),
            ("WFMD_LOG__LEVEL", "warn"),
            ("WFMD_SYNC__ENABLED", "false"),
            ("WFMD_LIVE__ENABLED", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if self.dialect == Dialect::Incontact {
            let breaks = format!("{INCONTACT_MANDATORY_BREAKS:?}");
            env.retain(|(k, _)| k != "WFMD_CXONE__BASE_URL" && k != "WFMD_CXONE__TOKEN_URL");
            for (k, v) in [
                ("WFMD_CXONE__DIALECT", "incontact"),
                ("WFMD_CXONE__AUTH_BASE", &self.base_url),
                ("WFMD_CXONE__ACCESS_KEY_ID", ACCESS_KEY_ID),
                ("WFMD_CXONE__ACCESS_KEY_SECRET", ACCESS_KEY_SECRET),
                ("WFMD_CXONE__BREAK_ACTIVITIES__MANDATORY", &breaks),
            ] {
                env.push((k.to_owned(), v.to_owned()));
            }
        }
        env
    }

    /// Agents matching `pick`, in id order.
    pub fn agents_where(&self, pick: impl Fn(&SimAgent) -> bool) -> Vec<SimAgent> {
        self.sim.agents().into_iter().filter(|a| pick(a)).collect()
    }

    /// Agents any change may be made to: on shift, not in a mandatory break, not on a
    /// contact.
    pub fn free_agents(&self) -> Vec<SimAgent> {
        let now = Utc::now();
        self.agents_where(|a| {
            a.on_shift_at(now) && !a.in_mandatory_break_at(now) && a.state != "ON_CONTACT"
        })
    }

    pub fn off_shift_agent(&self) -> SimAgent {
        let now = Utc::now();
        self.agents_where(|a| !a.on_shift_at(now)).remove(0)
    }

    /// An agent in a mandatory break now whose schedule does (or does not) carry the
    /// break windows.
    pub fn agent_in_break(&self, windows_in_schedule: bool) -> SimAgent {
        let now = Utc::now();
        self.agents_where(|a| {
            a.on_shift_at(now)
                && a.in_mandatory_break_at(now)
                && a.breaks_in_schedule == windows_in_schedule
        })
        .remove(0)
    }

    pub fn agent_on_contact(&self) -> SimAgent {
        self.agents_where(|a| a.state == "ON_CONTACT").remove(0)
    }

    pub fn calls(&self, route: &str) -> u64 {
        self.sim.stats().by_route.get(route).copied().unwrap_or(0)
    }

    /// Platform calls that change an agent's state, in either dialect (on `incontact`
    /// a logout is its own call).
    pub fn changes(&self) -> u64 {
        self.calls(SET_STATE) + self.calls(IC_SET_STATE) + self.calls(IC_LOGOUT)
    }
}

impl Drop for TestSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub const SET_STATE: &str = "POST /api/v2/users/{userId}/state";
pub const GET_SCHEDULE: &str = "GET /api/v2/schedules/users/{userId}";
pub const GET_BREAKS: &str = "GET /api/v2/breaks/users/{userId}/status";
pub const IC_SET_STATE: &str = "POST /inContactAPI/services/{version}/agents/{agentId}/state";
pub const IC_LOGOUT: &str = "POST /inContactAPI/services/{version}/agents/{agentId}/logout";

/// On `incontact`, the WFM activity titles of the simulated tenant's mandatory breaks.
pub const INCONTACT_MANDATORY_BREAKS: [&str; 2] = ["Lunch", "Break"];

/// Declares a platform-facing test on both dialects: `NAME::v2` and `NAME::incontact`
/// each run `async fn NAME(dialect: Dialect)` (a module and a function may share a
/// name).
macro_rules! on_both_dialects {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn v2() {
                super::$test($crate::helpers::Dialect::V2).await;
            }

            #[tokio::test]
            async fn incontact() {
                super::$test($crate::helpers::Dialect::Incontact).await;
            }
        }
    )+};
}
pub(crate) use on_both_dialects;

/// Declares a test on both database backends: `NAME::on_sqlite` and `NAME::on_postgres`
/// each run `async fn NAME(db: TestDb)` with a fresh database of theirs.
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn on_sqlite() {
                super::$test($crate::helpers::TestDb::new()).await;
            }

            #[tokio::test]
            async fn on_postgres() {
                super::$test($crate::helpers::TestDb::postgres()).await;
            }
        }
    )+};
}
pub(crate) use on_both_backends;

/// [`on_both_dialects`] on SQLite, and the `v2` dialect on PostgreSQL: `NAME::v2`,
/// `NAME::incontact` and `NAME::v2_on_postgres` run `async fn NAME(dialect: Dialect,
/// db: TestDb)`. The dialect is the platform's side and the backend the store's; nothing
/// of one depends on the other, so the fourth pairing would only repeat a slow test.
macro_rules! on_both_dialects_and_backends {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            use $crate::helpers::{Dialect, TestDb};

            #[tokio::test]
            async fn v2() {
                super::$test(Dialect::V2, TestDb::new()).await;
            }

            #[tokio::test]
            async fn incontact() {
                super::$test(Dialect::Incontact, TestDb::new()).await;
            }

            #[tokio::test]
            async fn v2_on_postgres() {
                super::$test(Dialect::V2, TestDb::postgres()).await;
            }
        }
    )+};
}
pub(crate) use on_both_dialects_and_backends;

/// A fresh database of the test's own: a SQLite file in a folder of its own
/// ([`TestDb::new`]), or an empty PostgreSQL database on the tests' throwaway server
/// ([`TestDb::postgres`]), which gets a folder too, for what a test writes beside its
/// database (a configuration file, a log).
pub struct TestDb {
    /// The small file system the folder is, for disk-full tests; unmounted first.
    pub disk: Option<SmallDisk>,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database's URL; `None` on SQLite.
    postgres: Option<String>,
}

impl TestDb {
    pub fn new() -> TestDb {
        TestDb {
            disk: None,
            dir: tempfile::tempdir().unwrap(),
            postgres: None,
        }
    }

    /// A fresh, empty database on the shared throwaway PostgreSQL server (started, and
    /// PostgreSQL installed, on first use; a test that cannot have it fails saying why).
    /// Blocks while it does that: before anything of the test's runs on its runtime.
    pub fn postgres() -> TestDb {
        TestDb {
            disk: None,
            dir: tempfile::tempdir().unwrap(),
            postgres: Some(throwaway_postgres::shared().fresh_database()),
        }
    }

    /// A fresh database on `backend`.
    pub fn on(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::new(),
            Backend::Postgres => TestDb::postgres(),
        }
    }

    /// A SQLite database on a file system of its own of `bytes` (see [`SmallDisk`]).
    pub fn on_small_disk(bytes: u64) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        TestDb {
            disk: Some(SmallDisk::mount(dir.path(), bytes, None)),
            dir,
            postgres: None,
        }
    }

    /// A database on `backend` whose data lives on a file system of its own of `bytes`:
    /// the SQLite file, or the PostgreSQL database's tablespace (its catalogs and tables;
    /// the server's write-ahead log stays on the machine's disk, as a data folder on a
    /// disk of its own would have it).
    pub fn on_small_disk_of(backend: Backend, bytes: u64) -> TestDb {
        if backend == Backend::Sqlite {
            return TestDb::on_small_disk(bytes);
        }
        let server = throwaway_postgres::shared();
        // The `postgres` user must reach the disk: a folder under /tmp it may enter.
        let dir = tempfile::Builder::new()
            .prefix("wfmd-small-disk-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let place = dir.path().join("disk");
        std::fs::create_dir(&place).unwrap();
        let disk = SmallDisk::mount(&place, bytes, Some("postgres"));
        let url = server.fresh_database_on(&place);
        TestDb {
            disk: Some(disk),
            dir,
            postgres: Some(url),
        }
    }

    /// The small disk [`TestDb::on_small_disk`] made.
    pub fn small_disk(&self) -> &SmallDisk {
        self.disk.as_ref().expect("a TestDb made on_small_disk")
    }

    pub fn backend(&self) -> Backend {
        match self.postgres {
            Some(_) => Backend::Postgres,
            None => Backend::Sqlite,
        }
    }

    /// The SQLite file.
    ///
    /// # Panics
    /// On PostgreSQL, which has no file: the test needs SQLite's (it opens or copies the
    /// file itself) and cannot run on PostgreSQL as it is written.
    pub fn path(&self) -> PathBuf {
        assert!(
            self.postgres.is_none(),
            "TestDb::path: this test reads the SQLite file itself, and a PostgreSQL \
             TestDb has none; use TestDb::url, or run the test on SQLite only"
        );
        self.dir.path().join("wfmd.db")
    }

    /// The database's URL, as `database.url` takes it.
    pub fn url(&self) -> String {
        match &self.postgres {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.path().display()),
        }
    }

    /// Runs `sql` on the PostgreSQL database with `psql`, for what a test checks
    /// outside wfmd (the schemas there); its output, rows unaligned.
    ///
    /// # Panics
    /// On SQLite, or when psql fails.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|why| panic!("psql `{sql}` failed: {why}"))
    }

    /// Like [`TestDb::psql`], for a statement that may fail: why it did.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        throwaway_postgres::shared().psql(self.database(), sql)
    }

    /// The PostgreSQL database's name.
    ///
    /// # Panics
    /// On SQLite.
    pub fn database(&self) -> &str {
        let url = self
            .postgres
            .as_deref()
            .expect("TestDb::database on PostgreSQL");
        url.rsplit('/').next().expect("a database in the URL")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A tablespace on a small disk goes before its disk does, so the server never
        // looks for its files again.
        if let (Some(_), Some(url)) = (&self.disk, &self.postgres)
            && let Err(why) = throwaway_postgres::shared().drop_database_on(url)
        {
            eprintln!("cannot drop the small disk's database {url}: {why}");
        }
    }
}

/// A tmpfs of a few megabytes mounted on a test's folder, so a test can fill the disk
/// under a database and free it again without filling the machine's. Needs root (as
/// CI runs); without it the test fails saying so.
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts it on `path`, owned by `user` (by name) when given, else by us.
    fn mount(path: &std::path::Path, bytes: u64, user: Option<&str>) -> SmallDisk {
        let mut options = format!("size={bytes},mode=0700");
        if let Some(user) = user {
            let id = Command::new("id")
                .args(["-u", user])
                .output()
                .unwrap_or_else(|e| panic!("cannot run `id` for user {user}: {e}"));
            assert!(id.status.success(), "no user {user} to own the small disk");
            options.push_str(&format!(
                ",uid={}",
                String::from_utf8_lossy(&id.stdout).trim()
            ));
        }
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `mount` for a small file system: {e}"));
        assert!(
            output.status.success(),
            "cannot mount a {bytes}-byte tmpfs for the disk-full tests (they need root): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        SmallDisk {
            path: path.to_owned(),
        }
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Takes every byte left on the disk.
    pub fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .unwrap();
        for chunk in [64 * 1024, 512] {
            let bytes = vec![0u8; chunk];
            loop {
                match file.write_all(&bytes) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => panic!("cannot fill the small disk: {e}"),
                }
            }
        }
    }

    /// Gives back what [`SmallDisk::fill`] took.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a database connection still open in a task that has not ended yet.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// wfmd serving on a free port against a simulator, in this process.
pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub sim: TestSim,
    pub db: TestDb,
    pub store: Store,
    pub engine: std::sync::Arc<TransitionEngine>,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(TestSim::default_tenant().await, |_| {}).await
    }

    /// wfmd speaking `dialect` to the default tenant.
    pub async fn spawn_on(dialect: Dialect) -> TestApp {
        Self::spawn_with(TestSim::default_tenant().await.on(dialect), |_| {}).await
    }

    /// wfmd on the database `db` (either backend), against the default tenant.
    pub async fn spawn_in(db: TestDb) -> TestApp {
        Self::spawn_on_db(TestSim::default_tenant().await, db, |_| {}).await
    }

    /// Starts wfmd against `sim` in its dialect, letting the test adjust the
    /// configuration first.
    pub async fn spawn_with(sim: TestSim, adjust: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_on_db(sim, TestDb::new(), adjust).await
    }

    /// [`TestApp::spawn_with`] on the database `db`.
    pub async fn spawn_on_db(
        sim: TestSim,
        db: TestDb,
        adjust: impl FnOnce(&mut Config),
    ) -> TestApp {
        let mut config = sim.config(&db.url());
        adjust(&mut config);
        let app = App::build(&config).await.unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        let store = app.store();
        assert_eq!(
            store.backend(),
            db.backend(),
            "wfmd runs on the test's database"
        );
        let engine = app.engine();
        let stop = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(stop.clone()));
        TestApp {
            address,
            http: http_client(),
            sim,
            db,
            store,
            engine,
            stop,
            server: Some(server),
        }
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    pub async fn transition(&self, agent_id: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/agents/{agent_id}/transitions", self.address))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn set_state(&self, agent_id: &str, state: &str) -> (u16, Value) {
        let response = self.transition(agent_id, json!({ "state": state })).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        count(&self.store, sql).await
    }

    /// Waits until the count `sql` selects reaches `at_least`, failing the test with
    /// `what` after the deadline.
    pub async fn wait_for_count(&self, sql: &'static str, at_least: i64, what: &str) {
        wait_until(what, || async { self.count(sql).await >= at_least }).await;
    }

    /// Waits until `/readyz` answers `status`, failing the test after the deadline;
    /// returns the body.
    pub async fn readiness_becomes(&self, status: u16) -> Value {
        eventually(&format!("/readyz did not become {status}"), || async {
            let response = self.get("/readyz").await;
            let now = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            if now == status {
                Ok(body)
            } else {
                Err(body.to_string())
            }
        })
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How often the pollers below look again, unless told otherwise.
const POLL: Duration = Duration::from_millis(20);

/// The `job_id` of a job the daemon accepted: `response` must be its 202.
pub async fn accepted_job_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 202);
    response.json::<serde_json::Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls `check` until it gives a value, failing the test after the deadline with `what`
/// and what `check` last saw (its `Err`).
pub async fn eventually<T>(what: &str, check: impl AsyncFnMut() -> Result<T, String>) -> T {
    eventually_within(DEADLINE, what, check).await
}

/// [`eventually`] with a deadline of its own, for work known to take longer.
pub async fn eventually_within<T>(
    within: Duration,
    what: &str,
    check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    poll(within, POLL, what, check).await
}

/// The one polling loop under the helpers: `check` every `every` until it gives a
/// value, failing the test with `what` once `within` has passed.
async fn poll<T>(
    within: Duration,
    every: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() >= deadline && seen.is_empty() => {
                panic!("{what}")
            }
            Err(seen) => assert!(tokio::time::Instant::now() < deadline, "{what}: {seen}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until wfmd at `address` answers `/healthz`, failing the test with `what` after
/// the deadline.
pub async fn healthz_answers(address: &str, what: &str) {
    let http = http_client();
    wait_until(what, || async {
        http.get(format!("{address}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
}

/// Polls `check` until it holds, failing the test with `what` after the deadline.
pub async fn wait_until(what: &str, check: impl AsyncFnMut() -> bool) {
    wait_until_every(POLL, what, check).await;
}

/// [`wait_until`] looking again every `every`, for a moment that passes quickly (a
/// process to be killed part-way through its work).
pub async fn wait_until_every(every: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    poll(DEADLINE, every, what, async || {
        if check().await {
            Ok(())
        } else {
            Err(String::new())
        }
    })
    .await;
}

pub async fn count(store: &Store, sql: &'static str) -> i64 {
    on!(store.reader(), |c| sqlx::query_scalar(sql)
        .fetch_one(c)
        .await)
    .unwrap()
}

/// An HTTP client for tests. reqwest is built without a default TLS provider, so the
/// one wfmd uses is installed first, whichever test runs first.
pub fn http_client() -> reqwest::Client {
    wfmd::cxone::install_crypto_provider();
    reqwest::Client::new()
}

/// The JSON body of `GET url`, without a token.
pub async fn get_json(url: &str) -> serde_json::Value {
    http_client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The JSON body of `GET url`, or why there is none (yet): for [`eventually`].
pub async fn try_get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
    response.json().await.map_err(|e| e.to_string())
}

/// The body of `GET url`, as text.
pub async fn get_text(url: &str) -> String {
    let response = http_client().get(url).send().await.unwrap();
    response.text().await.unwrap()
}

/// The `wfmd` binary with a clean configuration environment.
pub fn wfmd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wfmd"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WFMD_") {
            command.env_remove(key);
        }
    }
    command.stdin(Stdio::null());
    command
}

/// Asks the wfmd at `address` to change `agent` to `state`: the answer's status and
/// body.
pub async fn set_state_at(address: &str, agent: &str, state: &str) -> (u16, Value) {
    let response = http_client()
        .post(format!("{address}/v1/agents/{agent}/transitions"))
        .json(&json!({ "state": state }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Runs `command` to its end: its exit code, stdout and stderr.
pub async fn output_of(mut command: Command) -> (i32, String, String) {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A `wfmd serve` child process on a free port.
pub struct Daemon {
    pub child: Child,
    pub address: String,
}

impl Daemon {
    /// Spawns `wfmd serve` with `env` and waits until `/healthz` answers.
    pub async fn spawn(env: &[(String, String)]) -> Daemon {
        Self::spawn_with(&["serve"], env, None).await
    }

    /// Spawns `wfmd ARGS` (a serving command) in `cwd` with `env`, on a free port.
    pub async fn spawn_with(
        args: &[&str],
        env: &[(String, String)],
        cwd: Option<&std::path::Path>,
    ) -> Daemon {
        Self::spawn_inner(args, env, cwd, Stdio::inherit).await
    }

    /// Like [`Daemon::spawn`], writing the daemon's log (stderr) to `log`.
    pub async fn spawn_logging_to(env: &[(String, String)], log: &std::path::Path) -> Daemon {
        Self::spawn_with_log(&["serve"], env, log).await
    }

    /// Like [`Daemon::spawn_with`] (in this directory), writing the log to `log`.
    pub async fn spawn_with_log(
        args: &[&str],
        env: &[(String, String)],
        log: &std::path::Path,
    ) -> Daemon {
        let stderr = || Stdio::from(std::fs::File::create(log).unwrap());
        Self::spawn_inner(args, env, None, stderr).await
    }

    async fn spawn_inner(
        args: &[&str],
        env: &[(String, String)],
        cwd: Option<&std::path::Path>,
        stderr: impl Fn() -> Stdio,
    ) -> Daemon {
        let deadline = tokio::time::Instant::now() + SLOW;
        loop {
            let port = free_port();
            let mut command = wfmd();
            if let Some(dir) = cwd {
                command.current_dir(dir);
            }
            let address = format!("http://127.0.0.1:{port}");
            // An instance among several is reached by the others where it listens, and
            // shares their key (unless the test gives its own).
            if env.iter().any(|(key, _)| key.starts_with("WFMD_HA__")) {
                command
                    .env("WFMD_HA__ADVERTISE_URL", &address)
                    .env("WFMD_HA__CLUSTER_KEY", CLUSTER_KEY);
            }
            let child = command
                .args(args)
                .env("WFMD_LOG__LEVEL", "warn")
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("WFMD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(stderr())
                .spawn()
                .unwrap();
            // Owned before the first await, so a failure below still kills the child.
            let mut daemon = Daemon { child, address };
            if daemon.comes_up_on(port, deadline).await {
                return daemon;
            }
            // Another process took the port before the child could bind it (a test's
            // own listener on port 0, say): this one is killed, the next gets another.
        }
    }

    /// Waits until the child answers `/healthz` on `port`: true then, false when it
    /// cannot be the child that answers (it exited, or another process listens there,
    /// whose answers would be taken for the child's).
    async fn comes_up_on(&mut self, port: u16, deadline: tokio::time::Instant) -> bool {
        let http = http_client();
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        eventually_within(within, "wfmd serve did not come up", async || {
            if let Ok(response) = http.get(format!("{}/healthz", self.address)).send().await
                && response.status().is_success()
            {
                return Ok(listens_on(self.child.id(), port));
            }
            if self.child.try_wait().unwrap().is_some() {
                return Ok(false);
            }
            Err(String::new())
        })
        .await
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, failing the test after the deadline.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        eventually("wfmd did not exit", async || {
            self.child.try_wait().unwrap().ok_or_else(String::new)
        })
        .await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`: the socket's
/// inode, from `/proc/net/tcp`, among the process's descriptors.
fn listens_on(pid: u32, port: u16) -> bool {
    const LISTEN: &str = "0A";
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    let Some(inode) = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&LISTEN))
            .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
            .flatten()
    }) else {
        return false;
    };
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to.as_os_str() == inode.as_str()))
}

/// A port nothing listens on right now, below the kernel's ephemeral range where it can:
/// no listener on port 0 and no outgoing connection is given such a port, so it is
/// still free when whoever it is for binds it (or binds it again after a restart).
pub fn free_port() -> u16 {
    use rand::Rng;
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let below = 10_000..ephemeral_from;
    if !below.is_empty() {
        let mut rng = rand::rng();
        for _ in 0..100 {
            let port = rng.random_range(below.clone());
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_listening_port_is_told_apart_by_the_process_holding_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(listens_on(std::process::id(), port));
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    let held_by_other = listens_on(other.id(), port);
    other.kill().unwrap();
    other.wait().unwrap();
    assert!(!held_by_other, "a process without the socket");
    drop(listener);
    assert!(
        !listens_on(std::process::id(), port),
        "nothing listens any more"
    );
}
