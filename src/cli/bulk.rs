//! `wfmd bulk`: submits a bulk job to the running daemon over HTTP, follows it with a
//! progress bar and ends with a summary table; `wfmd bulk status ID` and
//! `wfmd bulk revert ID` follow an existing job or undo a finished one. With `--tenant`
//! it calls that tenant's routes (`/v1/tenants/{id}/bulk-transitions`).
//!
//! The token (`--token` or `WFMD_TOKEN`) is a `SecretString`: it is sent as
//! `Authorization: Bearer` and never printed. Problems the daemon answers are shown as
//! their `detail` (and field). Exit codes: 0 every agent changed (or was in the state
//! already: `unchanged`), 1 any item was rejected, failed or cancelled (or the daemon could not be reached), 2 bad usage,
//! including a request the daemon refused as invalid.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use super::daemon::{Client, DaemonArgs, decode};
use super::{DaemonApi, Failure, parse_state};
use crate::config::Config;
use crate::domain::AgentState;
use crate::engine::jobs::BulkJobView;

/// How often a followed job's progress is asked for.
const POLL_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Args)]
#[command(
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  wfmd bulk --team Billing NOT_READY --reason MEETING\n  \
wfmd bulk --agents u_001,u_002 READY\n  wfmd bulk status job_0193…\n  \
wfmd bulk revert job_0193…\n\n\
Exit codes: 0 every agent changed (or was in the state already: unchanged), 1 an agent was \
rejected, failed or cancelled (or the daemon could not be reached), 2 bad usage or a \
request the daemon refused.\n\n\
With several tenants, name one with --tenant ID: the job runs on that tenant's platform \
(the daemon's /v1/tenants/ID/… routes)."
)]
pub struct BulkArgs {
    #[command(subcommand)]
    pub command: Option<BulkCommand>,
    #[command(flatten)]
    pub who: Selection,
    /// Target state: READY, NOT_READY, PAUSED, IDLE or LOGGED_OUT.
    #[arg(value_parser = parse_state, required = true)]
    pub state: Option<AgentState>,
    /// Reason code; default READY→WORKING, NOT_READY→BREAK, PAUSED→ADHOC,
    /// IDLE→SYSTEM_IDLE, others→GENERAL.
    #[arg(long, value_name = "CODE")]
    pub reason: Option<String>,
    /// Submitting again with the same key returns the same job instead of a new one.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// For an agent on a contact or in after-contact work: `reject` (refused
    /// STATE_CONFLICT; the default) or `defer` (the item waits, `deferred`, and the change
    /// is made once the agent is free, compliance checked again then).
    #[arg(long, value_name = "WHAT", value_parser = ["reject", "defer"])]
    pub when_busy: Option<String>,
    /// With `--when-busy defer`: how long an item waits at most, e.g. 90s, 10m, 2h (1s to
    /// 24h); default the daemon's `[deferred] defer_for`.
    #[arg(long, value_name = "DURATION", requires = "when_busy")]
    pub defer_for: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Whom a command acts on: listed agents, or a team's members as the platform lists
/// them (`wfmd bulk`, `wfmd adherence authorise`).
#[derive(Debug, Args)]
pub struct Selection {
    /// The agents, comma-separated (u_001,u_002,…); at most 10,000.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "A,B,…",
        required_unless_present = "team",
        conflicts_with = "team"
    )]
    pub agents: Vec<String>,
    /// Every agent of this team as the platform lists them now, by id (t_1) or name
    /// (Billing).
    #[arg(long, value_name = "TEAM")]
    pub team: Option<String>,
}

impl Selection {
    /// Puts the selection into a request body: `team`, or else `agents`.
    pub(super) fn into_body(self, body: &mut Value) {
        match self.team {
            Some(team) => body["team"] = json!(team),
            None => body["agents"] = json!(self.agents),
        }
    }
}

/// How to reach the daemon and what to print; accepted by every `bulk` form.
#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Print the finished job as JSON (every item) instead of the summary table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print the job id and return without following the job.
    #[arg(long, global = true)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum BulkCommand {
    /// Follow a job (or, with --no-wait, show where it stands) and print its results.
    Status {
        /// The job id that submitting printed (job_…).
        job_id: String,
    },
    /// Start a job putting every agent a finished job changed back to the state and
    /// reason it had before, and follow it. Repeating it returns the same revert job.
    Revert {
        /// The finished job to undo (job_…).
        job_id: String,
        /// Use this idempotency key instead of the default (one revert per job).
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Cancel the agents of a running job not started yet and print what remains.
    Cancel {
        /// The running job (job_…).
        job_id: String,
    },
}

/// Runs `wfmd bulk …`.
pub async fn run(config: &Config, api: &DaemonApi, args: BulkArgs) -> Result<ExitCode, Failure> {
    let submits = !args.who.agents.is_empty()
        || args.who.team.is_some()
        || args.state.is_some()
        || args.reason.is_some()
        || args.idempotency_key.is_some()
        || args.when_busy.is_some();
    if args.command.is_some() && submits {
        return Err(Failure::usage(
            "bulk status|revert|cancel take a job id; --agents, --team, STATE, --reason and \
             --when-busy belong to submitting a job",
        ));
    }
    let client = Client::new(config, api, &args.client.daemon)?;
    let job_id = match args.command {
        Some(BulkCommand::Status { job_id }) => job_id,
        Some(BulkCommand::Cancel { job_id }) => {
            let path = format!("/bulk-transitions/{job_id}");
            let job: BulkJobView = decode(client.call(Method::DELETE, &path, None).await?)?;
            return Ok(report(&job, args.client.json));
        }
        Some(BulkCommand::Revert {
            job_id,
            idempotency_key,
        }) => {
            let body = idempotency_key.map(|key| json!({ "idempotency_key": key }));
            let path = format!("/bulk-transitions/{job_id}/revert");
            let accepted = client.call(Method::POST, &path, body).await?;
            announce(&accepted, &format!("reverting {job_id}"))?
        }
        None => {
            let mut body = json!({ "state": args.state });
            args.who.into_body(&mut body);
            if let Some(reason) = &args.reason {
                body["reason"] = json!(reason);
            }
            if let Some(key) = &args.idempotency_key {
                body["idempotency_key"] = json!(key);
            }
            if let Some(when_busy) = &args.when_busy {
                body["when_busy"] = json!(when_busy);
            }
            if let Some(wait) = &args.defer_for {
                body["defer_for"] = json!(wait);
            }
            let accepted = client
                .call(Method::POST, "/bulk-transitions", Some(body))
                .await?;
            announce(&accepted, "accepted")?
        }
    };
    if args.client.no_wait {
        let path = format!("/bulk-transitions/{job_id}");
        let job: BulkJobView = decode(client.call(Method::GET, &path, None).await?)?;
        if !job.is_finished() {
            if args.client.json {
                println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
            } else {
                println!("{job_id}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        return Ok(report(&job, args.client.json));
    }
    let job = follow(&client, &job_id).await?;
    Ok(report(&job, args.client.json))
}

/// Prints what the daemon accepted; returns the job id.
fn announce(accepted: &Value, what: &str) -> Result<String, Failure> {
    let job_id = accepted["job_id"]
        .as_str()
        .ok_or_else(|| Failure::action(anyhow::anyhow!("the daemon answered without a job id")))?
        .to_owned();
    let again = if accepted["replayed"] == true {
        " (submitted before with this idempotency key)"
    } else {
        ""
    };
    eprintln!(
        "bulk job {job_id} {what}: {} agents{again}",
        accepted["total"]
    );
    Ok(job_id)
}

/// Polls the job with a progress bar until it is finished; returns it with its items.
async fn follow(client: &Client, job_id: &str) -> Result<BulkJobView, Failure> {
    let progress_path = format!("/bulk-transitions/{job_id}?items=false");
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} agents  {msg}",
        )
        .expect("a valid template"),
    );
    let interrupted = tokio::signal::ctrl_c();
    let mut interrupted = std::pin::pin!(interrupted);
    loop {
        let job: BulkJobView = decode(client.call(Method::GET, &progress_path, None).await?)?;
        bar.set_length(u64::try_from(job.total).unwrap_or(0));
        bar.set_position(u64::try_from(job.total - job.pending).unwrap_or(0));
        bar.set_message(format!(
            "{}: {} succeeded, {} unchanged, {} rejected, {} failed, {} cancelled",
            job.status, job.succeeded, job.unchanged, job.rejected, job.failed, job.cancelled
        ));
        if job.is_finished() {
            bar.finish_and_clear();
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_EVERY) => {}
            _ = &mut interrupted => {
                bar.abandon();
                return Err(Failure::action(anyhow::anyhow!(
                    "stopped following; the job goes on in the daemon: wfmd bulk status {job_id} \
                     (or wfmd bulk cancel {job_id})"
                )));
            }
        }
    }
    let path = format!("/bulk-transitions/{job_id}");
    decode(client.call(Method::GET, &path, None).await?)
}

/// Prints the job (a table, or JSON) and returns the exit code its outcome calls for.
fn report(job: &BulkJobView, as_json: bool) -> ExitCode {
    if as_json {
        println!("{}", serde_json::to_string_pretty(job).unwrap_or_default());
    } else {
        print!("{}", summary(job));
    }
    if job.is_finished() && job.succeeded + job.unchanged == job.total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The summary table: counts per outcome, then every agent that did not succeed.
pub fn summary(job: &BulkJobView) -> String {
    let mut out = String::new();
    let what = match (&job.state, &job.reverts_job_id) {
        (Some(state), _) => format!(
            "{state}/{}",
            job.reason.clone().unwrap_or_else(|| state
                .parse::<AgentState>()
                .map_or("GENERAL", AgentState::default_reason)
                .to_owned())
        ),
        (None, Some(original)) => format!("revert of {original}"),
        (None, None) => "bulk change".to_owned(),
    };
    let team = job
        .team
        .as_ref()
        .map(|t| format!(", team {t}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "job {}  {}  {what}{team}, {} agents\n\n",
        job.job_id, job.status, job.total
    ));
    out.push_str(&format!("{:<10} {:>7}\n", "outcome", "agents"));
    for (name, n) in [
        ("succeeded", job.succeeded),
        ("unchanged", job.unchanged),
        ("rejected", job.rejected),
        ("failed", job.failed),
        ("cancelled", job.cancelled),
        ("pending", job.pending),
        ("deferred", job.deferred),
    ] {
        // Items still waiting are listed only while there are some.
        if !matches!(name, "pending" | "deferred") || n > 0 {
            out.push_str(&format!("{name:<10} {n:>7}\n"));
        }
    }
    let problems: Vec<_> = job
        .items
        .iter()
        .flatten()
        .filter(|i| matches!(i.outcome.as_str(), "rejected" | "failed"))
        .collect();
    if !problems.is_empty() {
        let width = problems
            .iter()
            .map(|i| i.agent.len())
            .max()
            .unwrap_or(5)
            .max(5);
        out.push_str(&format!("\n{:<width$}  {:<9}  why\n", "agent", "outcome"));
        for item in problems {
            let why = item
                .violation
                .as_deref()
                .or(item.error.as_deref())
                .unwrap_or("-");
            out.push_str(&format!(
                "{:<width$}  {:<9}  {why}\n",
                item.agent, item.outcome
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::engine::jobs::ItemView;

    fn parse(args: &[&str]) -> Result<BulkArgs, clap::Error> {
        let cli = Cli::try_parse_from(["wfmd", "bulk"].iter().chain(args))?;
        match cli.command {
            Command::Bulk(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn agents_or_team_with_a_state_and_the_token_never_shows() {
        let args = parse(&["--agents", "u_001,u_002", "not_ready", "--token", "s3cret"]).unwrap();
        assert_eq!(args.who.agents, ["u_001", "u_002"]);
        assert_eq!(args.state, Some(AgentState::NotReady));
        assert!(!format!("{args:?}").contains("s3cret"));
        let args = parse(&["--team", "Billing", "PAUSED", "--reason", "MEETING"]).unwrap();
        assert_eq!(args.who.team.as_deref(), Some("Billing"));

        for bad in [
            &["READY"][..],
            &["--agents", "u_1", "--team", "t_1", "READY"],
            &["--agents", "u_1"],
            &["--agents", "u_1", "ON_CONTACT"],
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn status_revert_and_cancel_take_a_job_id_and_the_client_flags() {
        let args = parse(&[
            "status",
            "job_1",
            "--server",
            "http://127.0.0.1:9",
            "--json",
        ])
        .unwrap();
        assert!(
            matches!(args.command, Some(BulkCommand::Status { ref job_id }) if job_id == "job_1")
        );
        assert!(args.client.json);
        assert_eq!(
            args.client.daemon.server.as_deref(),
            Some("http://127.0.0.1:9")
        );
        let args = parse(&[
            "--server",
            "http://127.0.0.1:9",
            "revert",
            "job_1",
            "--no-wait",
        ])
        .unwrap();
        assert!(matches!(args.command, Some(BulkCommand::Revert { .. })));
        assert!(args.client.no_wait);
        assert!(parse(&["cancel", "job_1"]).is_ok());
    }

    #[test]
    fn the_summary_counts_outcomes_and_lists_every_agent_that_did_not_change() {
        let item =
            |agent: &str, outcome: &str, violation: Option<&str>, error: Option<&str>| ItemView {
                agent: agent.into(),
                outcome: outcome.into(),
                violation: violation.map(Into::into),
                error: error.map(Into::into),
                state: Some("NOT_READY".into()),
                reason: Some("MEETING".into()),
                attempt_id: None,
            };
        let job = BulkJobView {
            job_id: "job_1".into(),
            status: "completed".into(),
            total: 4,
            succeeded: 1,
            unchanged: 1,
            rejected: 1,
            failed: 1,
            cancelled: 0,
            pending: 0,
            deferred: 0,
            state: Some("NOT_READY".into()),
            reason: Some("MEETING".into()),
            team: None,
            reverts_job_id: None,
            actor: "api".into(),
            cancel_requested: false,
            created_at: "2026-11-22T10:00:00.000Z".into(),
            started_at: None,
            finished_at: None,
            items: Some(vec![
                item("u_001", "succeeded", None, None),
                item("u_004", "unchanged", None, None),
                item("u_002", "rejected", Some("AGENT_NOT_SCHEDULED"), None),
                item(
                    "u_003",
                    "failed",
                    None,
                    Some("the platform failed with 503"),
                ),
            ]),
        };
        let text = summary(&job);
        assert!(text.contains("NOT_READY/MEETING, 4 agents"), "{text}");
        assert!(text.contains("succeeded        1"), "{text}");
        assert!(text.contains("unchanged        1"), "{text}");
        assert!(
            text.contains("u_002  rejected   AGENT_NOT_SCHEDULED"),
            "{text}"
        );
        assert!(
            text.contains("u_003  failed     the platform failed with 503"),
            "{text}"
        );
        assert!(!text.contains("u_001") && !text.contains("u_004"), "{text}");
        assert_eq!(report(&job, false), ExitCode::FAILURE);
    }

    #[test]
    fn a_job_whose_agents_all_changed_or_were_unchanged_exits_zero() {
        let job = BulkJobView {
            job_id: "job_1".into(),
            status: "completed".into(),
            total: 3,
            succeeded: 2,
            unchanged: 1,
            rejected: 0,
            failed: 0,
            cancelled: 0,
            pending: 0,
            deferred: 0,
            state: Some("NOT_READY".into()),
            reason: None,
            team: None,
            reverts_job_id: None,
            actor: "api".into(),
            cancel_requested: false,
            created_at: "2026-11-22T10:00:00.000Z".into(),
            started_at: None,
            finished_at: None,
            items: None,
        };
        assert_eq!(report(&job, false), ExitCode::SUCCESS);
        assert_eq!(
            report(
                &BulkJobView {
                    unchanged: 0,
                    failed: 1,
                    ..job
                },
                false
            ),
            ExitCode::FAILURE
        );
    }
}
