//! How many malloc arenas the process's threads share (glibc only).
//!
//! glibc gives a thread that finds the arenas in use an arena of its own, up to eight
//! per core. wfmd runs a thread per open SQLite connection (sqlx's driver), three for
//! every tenant at rest, so a process of many tenants ends up with every arena it may
//! have, each holding its own freed but unreturned memory: 0.19 MB a tenant with
//! 200 tenants on SQLite (`benches/sqlite_tenants.rs`). Those threads spend their time
//! waiting on the disk and the runtime, not on malloc, so a couple of arenas serve them
//! as fast.

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
