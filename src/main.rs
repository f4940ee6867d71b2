//! The `wfmd` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use wfmd::cli::{Cli, run};

fn main() -> ExitCode {
    // Before any thread: the runtime's, and the SQLite connections'.
    wfmd::limit_malloc_arenas();
    wfmd::store::sqlite_without_lookaside();
    let cli = Cli::parse();
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
