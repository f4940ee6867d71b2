//! Many tenants on SQLite in one `wfmd serve` (#56): at rest each keeps two SQLite
//! connections open (its writer and a reader), each with its thread, not the five it
//! kept before; and the process runs without glibc's per-thread malloc caches, which
//! each of those threads would fill. The daemon is a child process, so its threads and
//! its environment are its own.

use std::time::Duration;

use crate::helpers::{Daemon, TestSim, eventually_within, http_client, try_get_json};

/// The `GLIBC_TUNABLES` a running process has (its environment as `/proc` shows it,
/// which is what it was started, or started again, with). Of one naming several
/// tunables, glibc 2.36's loader leaves the first only, so each case names one.
fn tunables_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|&byte| byte == 0)
        .find_map(|entry| entry.strip_prefix(b"GLIBC_TUNABLES="))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

#[tokio::test]
async fn serve_runs_without_glibcs_thread_caches_and_keeps_an_operators_tunables() {
    let folder = tempfile::tempdir().unwrap();
    let cases = [
        (None, "glibc.malloc.tcache_count=0"),
        (
            Some("glibc.malloc.tcache_count=3"),
            "glibc.malloc.tcache_count=3",
        ),
    ];
    for (given, expected) in cases {
        let env: Vec<(String, String)> = given
            .map(|value| ("GLIBC_TUNABLES".to_owned(), value.to_owned()))
            .into_iter()
            .collect();
        let daemon = Daemon::spawn_with(&["serve", "--simulate"], &env, Some(folder.path())).await;
        let pid = daemon.child.id();
        assert_eq!(
            tunables_of(pid).as_deref(),
            Some(expected),
            "started with {given:?}"
        );
        // Under its own name, as `ps` and `top` show it, not "exe".
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(name.trim_end(), "wfmd");
    }
}

/// Enough tenants that the connections' threads outweigh everything else the process
/// runs, few enough to start quickly in a debug build.
const TENANTS: usize = 60;

/// Two connections' threads a tenant at rest, a further reader or the housekeeping
/// writer caught at work now and then, and the process's own (the runtime's workers
/// and blocking threads, the main thread): 158 for 60 tenants. Before #56, 5 a tenant
/// (303 threads for 60 tenants).
const BOUND: usize = 2 * TENANTS + TENANTS / 10 + 32;

/// The start's housekeeping writers close after 30 s unused, checked every 30 s.
const AT_REST_WITHIN: Duration = Duration::from_secs(120);

/// How long the threads must stay at or under the bound.
const CALM: Duration = Duration::from_secs(10);

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_tenants_on_sqlite_keep_two_connection_threads_each_at_rest() {
    let sim = TestSim::default_tenant().await;
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (1..=TENANTS).map(|n| format!("t{n}")).collect();
    let listed: Vec<(&str, &TestSim)> = ids.iter().map(|id| (id.as_str(), &sim)).collect();
    let url = format!("sqlite://{}", dir.path().join("wfmd.db").display());
    // State sync on: its polls read every tenant's database all the time.
    let (file, env) = crate::tenants::tenants_file_in(dir.path(), &url, &listed, "");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("[sync]\nenabled = false", "[sync]\nenabled = true"),
    )
    .unwrap();
    let daemon =
        Daemon::spawn_with(&["--config", file.to_str().unwrap(), "serve"], &env, None).await;
    let http = http_client();
    eventually_within(
        AT_REST_WITHIN,
        "the tenants are not all ready",
        async || {
            let listed = try_get_json(&http, &format!("{}/v1/tenants", daemon.address)).await?;
            let ready = listed
                .as_array()
                .map_or(0, |l| l.iter().filter(|t| t["ready"] == true).count());
            (ready == TENANTS)
                .then_some(())
                .ok_or_else(|| format!("{ready} ready"))
        },
    )
    .await;

    // At rest: at or under the bound over ten seconds of the tenants' sync reading and
    // writing, sampled every 20 ms (the start's work done first).
    let pid = daemon.child.id();
    let mut calm_since = None;
    eventually_within(
        AT_REST_WITHIN,
        &format!("{TENANTS} tenants at rest stay above {BOUND} threads"),
        async || {
            let threads = threads_of(pid);
            let now = tokio::time::Instant::now();
            if threads > BOUND {
                calm_since = None;
                return Err(format!("{threads} threads"));
            }
            match now - *calm_since.get_or_insert(now) >= CALM {
                true => Ok(()),
                false => Err(format!("{threads} threads, not yet for {CALM:?}")),
            }
        },
    )
    .await;
}
