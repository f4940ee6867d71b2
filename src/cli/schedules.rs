//! `wfmd schedules import FILE`: shifts, breaks and titled work activities from a CSV
//! (a third-party WFM, or a tenant whose WFM the platform cannot export), with either
//! dialect. The format and how imported schedules answer compliance are in
//! `engine::imported_schedules`.
//!
//! Where the file goes: while `wfmd serve` runs on the configured database (it holds the
//! database's lock, see [`super::backup::DaemonLock`]), to that daemon over HTTP
//! (`POST /v1/schedules/imports`, or `/v1/tenants/{id}/schedules/imports` with
//! `--tenant`, at `--server`, default `server.listen`, with an admin token from
//! `--token` or `WFMD_TOKEN`), which puts it in force for the next change; a daemon
//! that cannot be reached gets nothing, and nothing is stored. Otherwise straight
//! into the database, holding its lock meanwhile so no daemon starts half-way; a daemon
//! started later reads it. `--server` always sends to the daemon it names.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::backup::{DaemonLock, database_path};
use super::{DaemonApi, Failure};
use crate::config::Config;
use crate::engine::imported_schedules::{self, ImportError};
use crate::store::Store;
use crate::store::audit::AuditKey;

/// How long the daemon may take to store a file.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Load shifts and breaks from a CSV with the header
    /// agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone
    /// (one row per break; times RFC 3339 or local in the row's timezone), and
    /// optionally activity,activity_start,activity_end (all three or none): a titled
    /// work activity of the row's shift, e.g. a Team meeting, which adherence rules
    /// judge by its title. Nothing is
    /// stored unless every line is valid. Agents with imported shifts take their
    /// schedule and break status from them. While `wfmd serve` runs on the configured
    /// database the file goes to it (in force for the next change; with tokens
    /// configured it needs an admin token); otherwise into the database directly.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Send the file to the daemon at this URL. Default, when `wfmd serve` runs on
        /// the configured database: http:// and the configuration's server.listen.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Admin API token for the daemon, sent as `Authorization: Bearer`. Prefer the
        /// WFMD_TOKEN environment variable, which keeps it out of the shell history.
        #[arg(long, env = "WFMD_TOKEN", hide_env_values = true, value_parser = super::bulk::parse_secret)]
        token: Option<SecretString>,
    },
}

pub async fn run(
    config: &Config,
    api: &DaemonApi,
    command: SchedulesCommand,
) -> Result<ExitCode, Failure> {
    let SchedulesCommand::Import {
        file,
        server,
        token,
    } = command;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    if server.is_some() {
        let daemon = Daemon {
            url: server.as_deref(),
            api,
            token,
        };
        return through_daemon(config, daemon, &file, text, None).await;
    }
    let _lock = match database_path(&config.database.url) {
        Some(path) => match DaemonLock::try_acquire(&path).map_err(Failure::action)? {
            Ok(lock) => Some(lock),
            Err(holder) => {
                let running = format!("{holder} runs on {}", path.display());
                let daemon = Daemon {
                    url: None,
                    api,
                    token,
                };
                return through_daemon(config, daemon, &file, text, Some(running)).await;
            }
        },
        None => None,
    };
    let key = config.audit.key().map(AuditKey::new);
    let store = Store::open_keyed(&config.database.url, key)
        .await
        .map_err(Failure::action)?;
    let actor = std::env::var("USER")
        .map(|user| format!("cli:{user}"))
        .unwrap_or_else(|_| "cli".to_owned());
    let result = imported_schedules::import(&store, &text, &actor).await;
    store.close().await;
    match result {
        Ok(summary) => {
            println!(
                "imported {} shifts of {} agents from {} (wfmd serve answers from them from \
                 its start)",
                summary.shifts,
                summary.agents,
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ImportError::Invalid(errors)) => Err(Failure::usage(format!(
            "{} is not a valid schedules file:\n{errors}",
            file.display()
        ))),
        Err(other) => Err(Failure::action(other)),
    }
}

/// The daemon a file goes to: `--server` (or none: the configuration's), the tenant's
/// routes, the token.
struct Daemon<'a> {
    url: Option<&'a str>,
    api: &'a DaemonApi,
    token: Option<SecretString>,
}

/// Sends the file to a running daemon; `running` says which one holds the database.
async fn through_daemon(
    config: &Config,
    daemon: Daemon<'_>,
    file: &Path,
    text: String,
    running: Option<String>,
) -> Result<ExitCode, Failure> {
    let base = super::bulk::daemon_url(config, daemon.url)?;
    let http = crate::http_client().map_err(Failure::action)?;
    let mut request = http
        .post(format!("{base}{}", daemon.api.path("/schedules/imports")))
        .header(reqwest::header::CONTENT_TYPE, "text/csv")
        .timeout(REQUEST_TIMEOUT)
        .body(text);
    if let Some(token) = &daemon.token {
        request = request.bearer_auth(token.expose_secret());
    }
    let response = request.send().await.map_err(|e| {
        let running = running
            .as_deref()
            .map(|r| format!("{r}, but "))
            .unwrap_or_default();
        Failure::action(anyhow::anyhow!(
            "{running}wfmd cannot be reached at {base} ({}); nothing was imported. Name the \
             daemon with --server, or stop it to import into the database directly",
            e.without_url()
        ))
    })?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        println!(
            "imported {} shifts of {} agents from {} into the running wfmd at {base}: in \
             force from the next change",
            answer["shifts"],
            answer["agents"],
            file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let detail = answer["detail"]
        .as_str()
        .map_or_else(|| status.to_string(), str::to_owned);
    Err(match status.as_u16() {
        422 => Failure::usage(format!(
            "{} is not a valid schedules file:\n{detail}",
            file.display()
        )),
        401 | 403 => Failure::usage(format!(
            "the running wfmd at {base} refused the import: {detail} (it takes an admin \
             token: --token or WFMD_TOKEN)"
        )),
        _ => Failure::action(anyhow::anyhow!(
            "the running wfmd at {base} refused the import: {detail}"
        )),
    })
}
