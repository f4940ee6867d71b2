//! How glibc's malloc is set up for a process of many threads (glibc on Linux only).
//!
//! wfmd runs a thread per open SQLite connection (sqlx's driver), two for every tenant
//! at rest, so a process of 200 tenants has 400 threads that each allocate now and
//! then. Two of glibc's defaults cost such a process memory that buys it nothing:
//!
//! - **Arenas.** glibc gives a thread that finds the arenas in use an arena of its own,
//!   up to eight per core, each holding its own freed but unreturned memory: 0.19 MB a
//!   tenant with 200 tenants on SQLite (`benches/sqlite_tenants.rs`). Those threads
//!   spend their time waiting on the disk and the runtime, not on malloc, so two arenas
//!   serve them as fast ([`limit_malloc_arenas`]).
//! - **Per-thread caches** (tcache): every thread keeps up to seven freed blocks of
//!   each small size for its next allocations, about 115 KB a SQLite thread at rest:
//!   0.23 MB a tenant (1.25 → 1.02 MB with 200 tenants). Without them the transitions
//!   bench ran as fast on SQLite. glibc reads this setting only from the environment
//!   (`GLIBC_TUNABLES`) as the process starts, so `wfmd serve` starts itself again
//!   with it, once, before anything else ([`restart_without_thread_caches`]).
//!
//! An operator's own setting of either is kept (`MALLOC_ARENA_MAX`;
//! `glibc.malloc.tcache_count` in `GLIBC_TUNABLES`).

/// The arenas a process gets unless `MALLOC_ARENA_MAX` says otherwise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Caps the malloc arenas at two; call before any thread starts. An operator's
/// `MALLOC_ARENA_MAX` is kept: glibc has read it already, and it is not overridden.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt changes a setting of the allocator, which glibc reads under
        // its own lock; no memory is handed over.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

/// The tunable of glibc's per-thread caches: how many blocks of a size each keeps.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TCACHE_COUNT: &str = "glibc.malloc.tcache_count";

/// Set in the environment of the process started again, so that it never starts
/// itself again: glibc's loader may rewrite `GLIBC_TUNABLES` as it reads it (2.36
/// splits one that names several tunables at the first), so the tunable itself is no
/// proof. Not `WFMD_`: those are configuration keys.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const RESTARTED: &str = "_WFMD_RESTARTED_WITHOUT_TCACHE";

/// Starts this program again, same process, arguments and environment, with glibc's
/// per-thread caches off, unless `GLIBC_TUNABLES` already sets them or this process
/// is the one started again. Call first thing in `main`, before any thread
/// starts. When the restart fails (the program's file replaced or gone since it
/// started), it says so on stderr and returns: the process goes on with the caches.
pub fn restart_without_thread_caches() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;

        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if tunables.contains(TCACHE_COUNT) || std::env::var_os(RESTARTED).is_some() {
            return;
        }
        let with_ours = if tunables.is_empty() {
            format!("{TCACHE_COUNT}=0")
        } else {
            format!("{tunables}:{TCACHE_COUNT}=0")
        };
        // The program's own path rather than `/proc/self/exe`, whose name ("exe") the
        // process would then go by in `ps` and `top`.
        let program = match std::env::current_exe() {
            Ok(program) => program,
            Err(error) => return not_again(&error),
        };
        let mut args = std::env::args_os();
        let mut again = std::process::Command::new(program);
        if let Some(name) = args.next() {
            again.arg0(name);
        }
        // `exec` returns only if the program could not be started again.
        let error = again
            .args(args)
            .env("GLIBC_TUNABLES", with_ours)
            .env(RESTARTED, "1")
            .exec();
        not_again(&error);
    }
}

/// Says that the process goes on with glibc's per-thread caches, and why.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn not_again(error: &std::io::Error) {
    eprintln!(
        "wfmd: could not start again without glibc's per-thread malloc caches ({error}); \
         going on with them"
    );
}
