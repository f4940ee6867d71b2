//! The `wfmd` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use wfmd::cli::{Cli, Command, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread: the runtime's, and the SQLite connections'. Only the daemon
    // runs threads by the hundred; a one-off command is not worth starting again.
    if matches!(cli.command, Command::Serve(_)) {
        wfmd::restart_without_thread_caches();
    }
    wfmd::limit_malloc_arenas();
    wfmd::store::sqlite_without_lookaside();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wfmd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}
