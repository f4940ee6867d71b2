//! `wfmd analytics`: run an analytics query through the running daemon (with a progress
//! bar while it works), list and show jobs, and verify a downloaded result file against
//! the hash the audit log keeps.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use super::daemon::{Client, DaemonArgs};
use super::{DaemonApi, Failure};
use crate::config::Config;
use crate::domain::trend::TrendSettings;
use crate::engine::analytics::{self, AnalyticsJobView};
use crate::engine::compliance::JudgingHandle;
use crate::store::Store;

const POLL_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Run an aggregation query with trend and anomalies through the running daemon
    /// (with --tenant, on that tenant's routes /v1/tenants/ID/…), then write its results
    /// (stdout, or --out).
    Query(Box<QueryArgs>),
    /// The newest analytics jobs.
    List,
    /// One job: status, progress, rows and the SHA-256 of its results.
    Show {
        /// The job id (aq_…).
        job_id: String,
    },
    /// Check a downloaded CSV of a job's results against the SHA-256 the audit log
    /// keeps for it: exit 0 unaltered, 1 altered.
    Verify {
        /// The downloaded file.
        file: PathBuf,
        /// The job id (aq_…).
        job_id: String,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["platform", "history"])))]
pub struct QueryArgs {
    /// Query the platform's aggregation API (v2 dialect; at most 10 metrics, 5
    /// dimensions, one filter, 365 days).
    #[arg(long)]
    pub platform: bool,
    /// Query wfmd's own history (no platform call).
    #[arg(long)]
    pub history: bool,
    /// NAME:AGG, repeatable. History: idle_seconds, state_seconds, adherence_pct,
    /// exceptions, violations, transitions, latency_p95_ms; AGG sum|avg|min|max|count.
    /// Platform: the platform's metric names, e.g. duration:avg, count:sum.
    #[arg(long = "metric", value_name = "NAME:AGG", required = true)]
    pub metrics: Vec<String>,
    /// Group by (history: agent, team; platform: e.g. group.id, channel); repeatable.
    #[arg(long = "dimension", value_name = "NAME")]
    pub dimensions: Vec<String>,
    /// FIELD=VALUE, repeatable (history: agent, team, state; platform: one, equals).
    #[arg(long = "filter", value_name = "FIELD=VALUE")]
    pub filters: Vec<String>,
    /// Start: a date (2026-11-01) or an RFC 3339 instant.
    #[arg(long)]
    pub from: String,
    /// End (exclusive).
    #[arg(long)]
    pub to: String,
    /// hour, day or week.
    #[arg(long, default_value = "day")]
    pub bucket: String,
    /// Earlier comparable values in each point's baseline (the same hour on N earlier
    /// days, say) and points in the moving average.
    #[arg(long, default_value_t = TrendSettings::DEFAULT_WINDOW)]
    pub window: usize,
    /// Anomaly threshold: how many robust spreads (scaled median absolute deviations)
    /// from its baseline a point must be.
    #[arg(long, default_value_t = TrendSettings::DEFAULT_Z)]
    pub z: f64,
    /// What each point is compared with: auto (chosen from the bucket and the data),
    /// none (the points right before), daily (the same hour on earlier days), weekly
    /// (the same weekday and time).
    #[arg(long, default_value = "auto", value_parser = ["auto", "none", "daily", "weekly"])]
    pub seasonality: String,
    /// The same as --seasonality weekly.
    #[arg(long, conflicts_with = "seasonality")]
    pub weekly: bool,
    /// csv (the canonical form `verify` checks), json, or html (one self-contained page
    /// with a chart per series).
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// IANA time zone of the HTML page's time labels.
    #[arg(long, default_value = "UTC", value_name = "ZONE")]
    pub tz: String,
    /// Write the results here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

pub async fn run(
    config: &Config,
    api: &DaemonApi,
    command: AnalyticsCommand,
) -> Result<ExitCode, Failure> {
    match command {
        AnalyticsCommand::Query(args) => query(config, api, *args).await,
        AnalyticsCommand::List => {
            let store = open(config).await?;
            let jobs = analytics::AnalyticsJobs::new(store, judging(config)?);
            for job in jobs.list(100).await.map_err(Failure::action)? {
                println!(
                    "{}  {:<8} {:<9} rows {:>8}  {}",
                    job.id,
                    job.source,
                    job.status,
                    job.rows.unwrap_or(job.received),
                    job.error.as_deref().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AnalyticsCommand::Show { job_id } => {
            let store = open(config).await?;
            let jobs = analytics::AnalyticsJobs::new(store, judging(config)?);
            match jobs.job(&job_id).await.map_err(Failure::action)? {
                Some(job) => {
                    let view = AnalyticsJobView::from(&job);
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&view).unwrap_or_default()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(Failure::action(anyhow::anyhow!(
                    "no analytics job `{job_id}`"
                ))),
            }
        }
        AnalyticsCommand::Verify { file, job_id } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
            let store = open(config).await?;
            if analytics::verify_file(&store, &job_id, &bytes)
                .await
                .map_err(Failure::action)?
            {
                println!("{}: unaltered results of {job_id}", file.display());
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "{}: ALTERED: its SHA-256 is not the one the audit log keeps for {job_id}",
                    file.display()
                );
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// The configuration's adherence rules, for the jobs' history figures.
fn judging(config: &Config) -> Result<JudgingHandle, Failure> {
    let judging = config
        .compliance
        .judging()
        .map_err(|problems| Failure::usage(problems.join("; ")))?;
    Ok(JudgingHandle::new(judging))
}

async fn open(config: &Config) -> Result<Store, Failure> {
    Store::open(&config.database.url)
        .await
        .map_err(Failure::action)
}

async fn query(config: &Config, api: &DaemonApi, args: QueryArgs) -> Result<ExitCode, Failure> {
    if !matches!(args.format.as_str(), "csv" | "json" | "html") {
        return Err(Failure::usage(format!(
            "--format `{}`: expected csv, json or html",
            args.format
        )));
    }
    crate::report::parse_zone(&args.tz).map_err(|e| Failure::usage(format!("--tz: {e}")))?;
    let client = Client::new(config, api, &args.daemon)?;
    let body = json!({
        "source": if args.platform { "platform" } else { "history" },
        "metrics": args.metrics,
        "dimensions": args.dimensions,
        "filters": args.filters,
        "from": args.from,
        "to": args.to,
        "bucket": args.bucket,
        "window": args.window,
        "z": args.z,
        "seasonality": if args.weekly { "weekly" } else { args.seasonality.as_str() },
    });
    let answer = client
        .call(Method::POST, "/analytics/queries", Some(body))
        .await?;
    let job_id = answer["job_id"].as_str().unwrap_or_default().to_owned();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("a valid template"),
    );
    let job = loop {
        let job = client
            .call(Method::GET, &format!("/analytics/queries/{job_id}"), None)
            .await?;
        let status = job["status"].as_str().unwrap_or("").to_owned();
        bar.set_message(format!(
            "{job_id}: {status}{} — {} rows{}",
            job["platform_status"]
                .as_str()
                .map(|s| format!(" (platform {s})"))
                .unwrap_or_default(),
            job["received"],
            job["total"]
                .as_i64()
                .map(|t| format!(" of {t}"))
                .unwrap_or_default()
        ));
        bar.tick();
        if matches!(status.as_str(), "completed" | "failed") {
            bar.finish_and_clear();
            break job;
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    if job["status"] == "failed" {
        return Err(Failure::action(anyhow::anyhow!(
            "analytics job {job_id} failed: {}",
            job["error"].as_str().unwrap_or("unknown error")
        )));
    }
    let response = client
        .request(
            Method::GET,
            &format!(
                "/analytics/queries/{job_id}/results?format={}&tz={}",
                args.format, args.tz
            ),
        )
        .send()
        .await
        .map_err(|e| Failure::action(anyhow::anyhow!("cannot fetch the results: {e}")))?;
    if !response.status().is_success() {
        let status = response.status();
        let problem: Value = response.json().await.unwrap_or(Value::Null);
        return Err(Failure::action(anyhow::anyhow!(
            "cannot fetch the results ({status}): {}",
            problem["detail"].as_str().unwrap_or("")
        )));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Failure::action(anyhow::anyhow!("cannot fetch the results: {e}")))?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, &bytes).map_err(|e| {
                Failure::action(anyhow::anyhow!("cannot write {}: {e}", path.display()))
            })?;
            eprintln!(
                "{job_id}: {} rows, sha256 {} → {}",
                job["rows"],
                job["sha256"].as_str().unwrap_or(""),
                path.display()
            );
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| Failure::action(anyhow::anyhow!("cannot write the results: {e}")))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
