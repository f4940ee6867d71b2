//! `wfmd schedules import FILE`: shifts and breaks from a CSV (a third-party WFM, or a
//! tenant whose WFM the platform cannot export), with either dialect. The format and
//! how imported schedules answer compliance are in `engine::imported_schedules`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::Failure;
use crate::config::Config;
use crate::engine::imported_schedules::{self, ImportErrors};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Load shifts and breaks from a CSV with the header
    /// agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone
    /// (one row per break; times RFC 3339 or local in the row's timezone). Nothing is
    /// stored unless every line is valid. Agents with imported shifts take their
    /// schedule and break status from them (the daemon picks up the first import at
    /// its next start).
    Import {
        /// The CSV file.
        file: PathBuf,
    },
}

pub async fn run(config: &Config, command: SchedulesCommand) -> Result<ExitCode, Failure> {
    let SchedulesCommand::Import { file } = command;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    let store = Store::open(&config.database.url)
        .await
        .map_err(Failure::action)?;
    match imported_schedules::import(&store, &text).await {
        Ok(summary) => {
            println!(
                "imported {} shifts of {} agents from {}",
                summary.shifts,
                summary.agents,
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast::<ImportErrors>() {
            Ok(errors) => Err(Failure::usage(format!(
                "{} is not a valid schedules file:\n{errors}",
                file.display()
            ))),
            Err(other) => Err(Failure::action(other)),
        },
    }
}
