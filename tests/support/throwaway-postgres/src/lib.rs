//! A throwaway PostgreSQL server for wfmd's tests and benches.
//!
//! [`shared`] is the process's one server, started on first use and tuned for speed;
//! [`start`] starts a server of one's own (a bench measuring durability wants `fsync`
//! on). A server lives in a fresh folder under /tmp, listens on 127.0.0.1 on a free port
//! with trust authentication for the `postgres` user, and hands out empty databases
//! ([`Server::fresh_database`]).
//!
//! It does not outlive the process, however the process ends: a watchdog process started
//! beside it waits on a pipe whose writing end only this process holds; the kernel closes
//! that end when the process exits or is killed, and the watchdog then stops the server
//! and removes its folder. Dropping a [`start`]ed server does the same at once.
//!
//! The binaries are Debian's (`/usr/lib/postgresql/*/bin`), installed with apt-get when
//! missing. `initdb` and `pg_ctl` refuse to run as root, so as root they run as the
//! `postgres` user, whose files the folder under /tmp is given to. Whatever fails panics
//! with what failed: a test that cannot get its database fails; nothing is skipped.

mod install;

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub use install::install_when_missing;

/// Where Debian's `postgresql-NN` packages put the server binaries, one folder a version.
const DEBIAN_VERSIONS: &str = "/usr/lib/postgresql";

/// How many ports a server tries before giving up: between finding a free port and the
/// server binding it, another process (another test binary starting its own server) may
/// take it.
const START_ATTEMPTS: u32 = 5;

/// How a server is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Whether commits survive a power loss (`fsync`, `synchronous_commit` and
    /// `full_page_writes` on, PostgreSQL's defaults). Off by default: tests do not need
    /// it and run much faster without it; a bench that measures durable writes does.
    pub durable: bool,
    /// `max_connections`: tests open many pools, each several connections.
    pub max_connections: u32,
    /// Further `postgresql.conf` settings, each a name and a value written as that file
    /// wants it (strings in single quotes: `("log_statement", "'all'")`).
    pub settings: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durable: false,
            max_connections: 300,
            settings: Vec::new(),
        }
    }
}

/// A running PostgreSQL server. One from [`start`] is stopped, and its folder removed,
/// when dropped; the [`shared`] one when the process ends.
#[derive(Debug)]
pub struct Server {
    port: u16,
    folder: PathBuf,
    bin: PathBuf,
    databases: AtomicU64,
    // Last: the other fields name what the watchdog removes.
    _watchdog: Watchdog,
}

/// The process's one server, started on the first call with [`Options::default`].
///
/// # Panics
/// When the server cannot be had (PostgreSQL cannot be installed, `initdb` or the start
/// fails), with what failed; every later call panics with the same message.
pub fn shared() -> &'static Server {
    static SHARED: OnceLock<Result<Server, String>> = OnceLock::new();
    match SHARED.get_or_init(|| launch(&Options::default())) {
        Ok(server) => server,
        Err(why) => panic!("throwaway-postgres: the shared server is not available: {why}"),
    }
}

/// A server of its own, stopped (and its folder removed) when dropped.
///
/// # Panics
/// When the server cannot be had, with what failed.
pub fn start(options: Options) -> Server {
    launch(&options).unwrap_or_else(|why| panic!("throwaway-postgres: {why}"))
}

impl Server {
    /// Creates a new, empty database with a name no other call gives and returns its
    /// URL (see [`Server::url`]).
    ///
    /// # Panics
    /// When the database cannot be created, with PostgreSQL's reason.
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "test_{}",
            self.databases.fetch_add(1, Ordering::Relaxed) + 1
        );
        // template0: nobody can be connected to it, which CREATE DATABASE would refuse.
        if let Err(why) = self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE template0"),
        ) {
            panic!("throwaway-postgres: cannot create database {name}: {why}");
        }
        self.url(&name)
    }

    /// [`Server::fresh_database`] whose tables live in `location`, an empty folder the
    /// `postgres` user owns (a tablespace of its own): a test that puts `location` on a
    /// small file system of its own sees the database's disk fill while the server's
    /// write-ahead log, and every other database, go on.
    ///
    /// # Panics
    /// When the tablespace or the database cannot be created, with PostgreSQL's reason.
    pub fn fresh_database_on(&self, location: &Path) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed) + 1;
        let space = format!("space_{n}");
        let location = location.display().to_string().replace('\'', "''");
        if let Err(why) = self.psql(
            "postgres",
            &format!("CREATE TABLESPACE {space} LOCATION '{location}'"),
        ) {
            panic!("throwaway-postgres: cannot create tablespace {space}: {why}");
        }
        let name = format!("test_{n}");
        if let Err(why) = self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE template0 TABLESPACE {space}"),
        ) {
            panic!("throwaway-postgres: cannot create database {name}: {why}");
        }
        self.url(&name)
    }

    /// Drops a database of [`Server::fresh_database_on`] and its tablespace, closing
    /// its connections; what PostgreSQL said when it could not.
    pub fn drop_database_on(&self, url: &str) -> Result<(), String> {
        let name = url.rsplit('/').next().unwrap_or_default();
        let n = name.trim_start_matches("test_");
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        self.psql("postgres", &format!("DROP TABLESPACE IF EXISTS space_{n}"))
            .map(drop)
    }

    /// The URL of `database` on this server, for the `postgres` user (no password).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder under /tmp that holds the server's data (`data/`) and log (`log`).
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// The server's postmaster process, from its `postmaster.pid` (the parent of every
    /// backend): for a bench that measures the server's CPU.
    ///
    /// # Panics
    /// When the file is missing or unreadable (the server is not running).
    pub fn postmaster_pid(&self) -> u32 {
        let file = self.folder.join("data").join("postmaster.pid");
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("throwaway-postgres: no pid in {}", file.display()))
    }

    /// Runs `sql` on `database` with `psql` and returns its output, rows unaligned
    /// without headers (`SELECT 1` gives `1`), or psql's complaint. Several statements
    /// run as one transaction.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only"])
            .args([
                "--set",
                "ON_ERROR_STOP=1",
                "--host",
                "127.0.0.1",
                "--username",
            ])
            .arg("postgres")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dbname")
            .arg(database)
            .arg("--command")
            .arg(sql)
            .output()
            .map_err(|e| format!("psql cannot run: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_owned())
        }
    }
}

/// Finds (or installs) the binaries, makes the folder and its watchdog, creates the
/// cluster and starts the server. Any failure leaves nothing behind: the watchdog, when
/// dropped, removes the folder.
fn launch(options: &Options) -> Result<Server, String> {
    let bin = binaries()?;
    let folder = tempfile::Builder::new()
        .prefix("throwaway-postgres-")
        // Not $TMPDIR: the `postgres` user must be able to reach the folder.
        .tempdir_in("/tmp")
        .map_err(|e| format!("cannot make a folder under /tmp: {e}"))?
        .keep();
    // The folder is ours, so its owner says who we are.
    let as_root = folder.metadata().is_ok_and(|meta| meta.uid() == 0);
    let watchdog = Watchdog::start(&bin, &folder, as_root)?;
    if as_root {
        run(Command::new("chown").arg("postgres").arg(&folder), "chown")?;
    }
    let data = folder.join("data");
    run(
        as_owner(as_root, &bin.join("initdb"), &folder)
            .arg("--pgdata")
            .arg(&data)
            .args(["--auth=trust", "--username=postgres", "--no-sync"])
            .args(["--encoding=UTF8", "--locale=C.UTF-8"]),
        "initdb",
    )?;
    configure(&data, options)?;
    let log = folder.join("log");
    for attempt in 1..=START_ATTEMPTS {
        let port = free_port()?;
        let logged_before = std::fs::metadata(&log).map_or(0, |meta| meta.len());
        let started = run(
            as_owner(as_root, &bin.join("pg_ctl"), &folder)
                .arg("--pgdata")
                .arg(&data)
                .arg("--log")
                .arg(&log)
                .args(["--wait", "--timeout=60", "--options"])
                .arg(format!("-p {port}"))
                .arg("start"),
            "pg_ctl start",
        );
        let Err(why) = started else {
            return Ok(Server {
                port,
                folder,
                bin,
                databases: AtomicU64::new(0),
                _watchdog: watchdog,
            });
        };
        let logged = std::fs::read(&log).unwrap_or_default();
        let logged = String::from_utf8_lossy(logged.get(logged_before as usize..).unwrap_or(&[]));
        if !(logged.contains("Address already in use") && attempt < START_ATTEMPTS) {
            return Err(format!("{why}\nThe server's log:\n{logged}"));
        }
    }
    unreachable!("the last attempt returns")
}

/// The newest version's binary folder under /usr/lib/postgresql, installing Debian's
/// `postgresql` package when there is none.
fn binaries() -> Result<PathBuf, String> {
    let newest = || {
        std::fs::read_dir(DEBIAN_VERSIONS)
            .ok()?
            .flatten()
            .filter_map(|version| {
                let major: u32 = version.file_name().to_str()?.parse().ok()?;
                let bin = version.path().join("bin");
                ["initdb", "pg_ctl", "psql"]
                    .iter()
                    .all(|program| bin.join(program).is_file())
                    .then_some((major, bin))
            })
            .max_by_key(|(major, _)| *major)
            .map(|(_, bin)| bin)
    };
    if let Some(bin) = newest() {
        return Ok(bin);
    }
    install::apt_install("initdb", &["postgresql"])?;
    newest().ok_or_else(|| {
        format!(
            "`postgresql` is installed, yet no {DEBIAN_VERSIONS}/*/bin has initdb, pg_ctl and psql"
        )
    })
}

/// `program` run as the `postgres` user when we are root (it refuses to run as root),
/// from the server's folder (the `postgres` user may not be able to enter ours).
fn as_owner(as_root: bool, program: &Path, folder: &Path) -> Command {
    let mut command = if as_root {
        let mut runuser = Command::new("runuser");
        runuser.args(["-u", "postgres", "--"]).arg(program);
        runuser
    } else {
        Command::new(program)
    };
    command.current_dir(folder);
    command
}

/// Appends the settings to the new cluster's `postgresql.conf` (later lines win).
fn configure(data: &Path, options: &Options) -> Result<(), String> {
    let durable = if options.durable { "on" } else { "off" };
    let mut lines = format!(
        "\n# throwaway-postgres\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = ''\n\
         max_connections = {}\n\
         fsync = {durable}\n\
         synchronous_commit = {durable}\n\
         full_page_writes = {durable}\n",
        options.max_connections
    );
    for (name, value) in &options.settings {
        lines.push_str(&format!("{name} = {value}\n"));
    }
    let conf = data.join("postgresql.conf");
    OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut file| file.write_all(lines.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))
}

/// A port nothing listens on right now (it may be taken before the server binds it;
/// [`launch`] then tries another).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

/// Runs `command` to completion; its stderr (and stdout) when it fails.
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what} cannot run: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The `sh` process that stops the server and removes its folder once this process is
/// gone: it reads a pipe nothing ever writes to, so the read returns only when the
/// writing end closes, which the kernel does when this process ends, however it ends
/// (or when [`Watchdog`] is dropped). The pipe is close-on-exec, so no other child of
/// ours (the server included) holds it open.
#[derive(Debug)]
struct Watchdog {
    process: Child,
    lifeline: Option<ChildStdin>,
}

/// `$1` pg_ctl, `$2` the data folder, `$3` the server's folder, `$4` non-empty as root.
/// Hang-ups and interrupts meant for the test run must not stop the watchdog before the
/// test process, and a server not (yet) running makes `pg_ctl stop` fail harmlessly.
const WATCHDOG: &str = r#"
trap '' HUP INT TERM
read -r _
if [ -n "$4" ]; then runuser -u postgres -- "$1" stop -m immediate -D "$2"; else "$1" stop -m immediate -D "$2"; fi >/dev/null 2>&1
rm -rf "$3"
"#;

impl Watchdog {
    fn start(bin: &Path, folder: &Path, as_root: bool) -> Result<Watchdog, String> {
        let mut process = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("throwaway-postgres-watchdog")
            .arg(bin.join("pg_ctl"))
            .arg(folder.join("data"))
            .arg(folder)
            .arg(if as_root { "root" } else { "" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: Ctrl-C at the terminal reaches the test process,
            // whose end the watchdog must see, not the watchdog.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(folder);
                format!("cannot start the watchdog (sh): {e}")
            })?;
        let lifeline = process.stdin.take();
        Ok(Watchdog { process, lifeline })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.lifeline.take());
        let _ = self.process.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    fn database_name(url: &str) -> &str {
        url.rsplit('/').next().unwrap()
    }

    #[test]
    fn a_fresh_database_can_be_reached() {
        let server = shared();
        let url = server.fresh_database();
        assert!(
            url.starts_with(&format!("postgres://postgres@127.0.0.1:{}/", server.port())),
            "{url}"
        );
        assert_eq!(server.psql(database_name(&url), "SELECT 1").unwrap(), "1");
    }

    #[test]
    fn two_fresh_databases_are_different_and_empty() {
        let server = shared();
        let first = server.fresh_database();
        let second = server.fresh_database();
        assert_ne!(first, second);
        let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
        server
            .psql(database_name(&first), "CREATE TABLE t (x BIGINT)")
            .unwrap();
        assert_eq!(server.psql(database_name(&first), tables).unwrap(), "1");
        assert_eq!(server.psql(database_name(&second), tables).unwrap(), "0");
    }

    #[test]
    fn the_shared_server_trades_durability_for_speed_and_takes_many_connections() {
        let server = shared();
        let show = |setting: &str| server.psql("postgres", &format!("SHOW {setting}")).unwrap();
        assert_eq!(show("fsync"), "off");
        assert_eq!(show("synchronous_commit"), "off");
        assert_eq!(show("full_page_writes"), "off");
        assert_eq!(show("max_connections"), "300");
        assert_eq!(show("listen_addresses"), "127.0.0.1");
    }

    #[test]
    fn a_started_server_keeps_its_options_and_is_gone_once_dropped() {
        let server = start(Options {
            durable: true,
            settings: vec![("work_mem".into(), "'8MB'".into())],
            ..Options::default()
        });
        assert_ne!(server.port(), shared().port());
        let show = |setting: &str| server.psql("postgres", &format!("SHOW {setting}")).unwrap();
        assert_eq!(show("fsync"), "on");
        assert_eq!(show("synchronous_commit"), "on");
        assert_eq!(show("work_mem"), "8MB");
        let (port, folder) = (server.port(), server.folder().to_owned());
        assert!(folder.join("data").is_dir());

        drop(server);
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the server still accepts connections on {port}"
        );
        assert!(!folder.exists(), "{} is still there", folder.display());
    }
}
