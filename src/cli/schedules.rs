//! `wfmd schedules import FILE`: shifts, breaks and titled work activities from a CSV
//! (a third-party WFM, or a tenant whose WFM the platform cannot export), with either
//! dialect. The format and how imported schedules answer compliance are in
//! `engine::imported_schedules`.
//!
//! Where the file goes: while `wfmd serve` runs on the configured database (it holds the
//! database's lock, see [`super::backup::DaemonLock`]), to that daemon over HTTP
//! (`POST /v1/schedules/imports`, or `/v1/tenants/{id}/schedules/imports` with
//! `--tenant`, at `--server`, default `server.listen`, with an admin token from
//! `--token` or `WFMD_TOKEN`), which checks it whole, then stores it as a job that this
//! command follows with a progress bar until it is in force (a file of the largest size
//! takes longer to store than one request may last); a daemon that cannot be reached
//! gets nothing, and nothing is stored. Otherwise straight into the database, holding
//! its lock meanwhile so no daemon starts half-way; a daemon started later reads it.
//! `--server` always sends to the daemon it names.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::Value;

use super::backup::{DaemonLock, database_path};
use super::daemon::Client;
use super::{DaemonApi, Failure};
use crate::config::Config;
use crate::engine::imported_schedules::{self, ImportError, ImportJobView, ImportState};
use crate::store::Store;
use crate::store::audit::AuditKey;

/// How long the daemon may take to check a file (it answers before storing it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a followed import's progress is asked for.
const POLL_EVERY: Duration = Duration::from_millis(250);

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
    /// database the file goes to it, which stores it in the background while this
    /// follows it with a progress bar (in force for the next change once stored; with
    /// tokens configured it needs an admin token); otherwise into the database directly.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Send the file to the daemon at this URL. Default, when `wfmd serve` runs on
        /// the configured database: http:// and the configuration's server.listen.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Admin API token for the daemon, sent as `Authorization: Bearer`. Prefer the
        /// WFMD_TOKEN environment variable, which keeps it out of the shell history.
        #[arg(long, env = "WFMD_TOKEN", hide_env_values = true, value_parser = super::daemon::parse_secret)]
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
    // Bytes: the check names the line of any that is not UTF-8.
    let text = std::fs::read(&file)
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
    let result = imported_schedules::import(&store, text, &actor).await;
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
    text: Vec<u8>,
    running: Option<String>,
) -> Result<ExitCode, Failure> {
    let client = Client::at(config, daemon.api, daemon.url, daemon.token)?;
    let base = client.base();
    let request = client
        .request(Method::POST, "/schedules/imports")
        .header(reqwest::header::CONTENT_TYPE, "text/csv")
        .timeout(REQUEST_TIMEOUT)
        .body(text);
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
    let detail = answer["detail"]
        .as_str()
        .map_or_else(|| status.to_string(), str::to_owned);
    let refused = |detail: &str| format!("the running wfmd at {base} refused the import: {detail}");
    match status.as_u16() {
        202 => {}
        422 => {
            let problems: Vec<&str> = answer["problems"]
                .as_array()
                .map(|p| p.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let more = answer["problem_count"]
                .as_u64()
                .and_then(|n| n.checked_sub(problems.len() as u64))
                .filter(|more| *more > 0)
                .map(|more| format!("\n… and {more} more"))
                .unwrap_or_default();
            let listed = if problems.is_empty() {
                detail
            } else {
                problems.join("\n")
            };
            return Err(Failure::usage(format!(
                "{} is not a valid schedules file:\n{listed}{more}",
                file.display()
            )));
        }
        401 | 403 => {
            return Err(Failure::usage(format!(
                "{} (it takes an admin token: --token or WFMD_TOKEN)",
                refused(&detail)
            )));
        }
        _ => return Err(Failure::action(anyhow::anyhow!(refused(&detail)))),
    }
    let job: ImportJobView = serde_json::from_value(answer).map_err(|e| {
        Failure::action(anyhow::anyhow!(
            "the running wfmd at {base} answered an import this wfmd cannot read: {e}"
        ))
    })?;
    eprintln!(
        "schedules import {} of {}: {} shifts of {} agents, stored by the daemon",
        job.job_id,
        file.display(),
        job.shifts,
        job.agents
    );
    let job = follow(&client, job).await?;
    if job.state == ImportState::Failed {
        return Err(Failure::action(anyhow::anyhow!(
            "the running wfmd at {base} could not store {} (import {}): {}",
            file.display(),
            job.job_id,
            job.error.as_deref().unwrap_or("no reason given")
        )));
    }
    println!(
        "imported {} shifts of {} agents from {} into the running wfmd at {base}: in \
         force from the next change",
        job.shifts,
        job.agents,
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Follows `job` on the daemon with a progress bar until it is finished.
async fn follow(client: &Client, mut job: ImportJobView) -> Result<ImportJobView, Failure> {
    let route = format!("/schedules/imports/{}", job.job_id);
    let url = client.url(&route);
    let bar = ProgressBar::new(job.shifts * 2);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .expect("a valid template"),
    );
    let interrupted = tokio::signal::ctrl_c();
    let mut interrupted = std::pin::pin!(interrupted);
    while !job.is_finished() {
        bar.set_position(job.stored + job.applied);
        bar.set_message(format!(
            "{}: {} of {} shifts stored, {} in place",
            job.state, job.stored, job.shifts, job.applied
        ));
        tokio::select! {
            () = tokio::time::sleep(POLL_EVERY) => {}
            _ = &mut interrupted => {
                bar.abandon();
                return Err(Failure::action(anyhow::anyhow!(
                    "stopped following; the import goes on in the daemon: GET {url}"
                )));
            }
        }
        let request = client.request(Method::GET, &route).timeout(REQUEST_TIMEOUT);
        let lost = |e: &dyn std::fmt::Display| {
            Failure::action(anyhow::anyhow!(
                "lost the daemon while following the import ({e}); it may still finish: GET {url}"
            ))
        };
        let response = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| lost(&e.without_url()))?;
        job = response.json().await.map_err(|e| lost(&e.without_url()))?;
    }
    bar.finish_and_clear();
    Ok(job)
}
