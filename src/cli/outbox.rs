//! `wfmd outbox`: the webhook outbox's deliveries, listed and retried.

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;

use super::Failure;
use crate::config::Config;
use crate::store::Store;
use crate::time::{parse_instant, rfc3339};

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Each webhook endpoint's health (up, failing or disabled, since when), then the
    /// deliveries still to be made (or, with --dead, given up on).
    List {
        /// Dead deliveries instead of pending ones.
        #[arg(long)]
        dead: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Put dead deliveries back in the queue; they are sent again with their original
    /// webhook-id.
    Replay {
        /// Replay dead deliveries (the only kind there is to replay; required for clarity).
        #[arg(long, required = true)]
        dead: bool,
        /// Only deliveries of events committed at or after this date or instant.
        #[arg(long, value_parser = parse_instant)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
}

pub(super) async fn outbox(config: &Config, command: OutboxCommand) -> Result<ExitCode, Failure> {
    use crate::store::deliveries;
    let store = Store::open(&config.database.url)
        .await
        .map_err(Failure::action)?;
    match command {
        OutboxCommand::List { dead, limit } => {
            let rows = deliveries::list(store.reader(), dead, limit)
                .await
                .map_err(Failure::action)?;
            let health = deliveries::health(store.reader())
                .await
                .map_err(Failure::action)?;
            let mut out = std::io::stdout().lock();
            for endpoint in &health {
                writeln!(
                    out,
                    "endpoint {}  {} since {}  pending={}  dead={}{}{}",
                    crate::delivery::endpoint_label(&endpoint.endpoint),
                    endpoint.status,
                    rfc3339(crate::store::from_ms(endpoint.since)),
                    endpoint.pending,
                    endpoint.dead,
                    match (&endpoint.status[..], &endpoint.last_error) {
                        ("failing", Some(error)) => format!("  last={error}"),
                        _ => String::new(),
                    },
                    endpoint
                        .disabled_events
                        .as_ref()
                        .map(|types| format!("  not sent (410): {types}"))
                        .unwrap_or_default(),
                )
                .map_err(Failure::action)?;
            }
            for row in &rows {
                let last = match (&row.last_status, &row.last_error) {
                    (_, Some(error)) => error.clone(),
                    (Some(status), None) => status.to_string(),
                    (None, None) => "-".to_owned(),
                };
                writeln!(
                    out,
                    "{}  {}  {}  {}  {}  attempts={}  next={}  last={}",
                    rfc3339(crate::store::from_ms(row.created_at)),
                    row.event_id,
                    row.event_type,
                    row.endpoint,
                    row.status,
                    row.attempts,
                    rfc3339(crate::store::from_ms(row.next_attempt_at)),
                    last,
                )
                .map_err(Failure::action)?;
            }
            eprintln!(
                "{} {} deliveries",
                rows.len(),
                if dead { "dead" } else { "pending" }
            );
        }
        OutboxCommand::Replay { dead: _, since } => {
            let since = since.map_or(i64::MIN, crate::store::to_ms);
            let replayed =
                deliveries::replay_dead(&store, since, crate::store::to_ms(chrono::Utc::now()))
                    .await
                    .map_err(Failure::action)?;
            println!("re-queued {replayed} dead deliveries; a running wfmd sends them now");
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
