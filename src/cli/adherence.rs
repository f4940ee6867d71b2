//! `wfmd adherence …`: authorised exceptions through the running daemon's API
//! (`/v1/adherence/authorisations`): authorise agents or a team for a time range,
//! list the authorisations, withdraw one.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::bulk::Selection;
use super::daemon::{Client, DaemonArgs};
use super::{DaemonApi, Failure};
use crate::config::Config;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
wfmd adherence authorise --agents u_001,u_002 --from 2026-11-26T14:00:00Z \
--to 2026-11-26T15:00:00Z --reason \"coaching session\"\n  \
wfmd adherence authorise --team Billing --from 2026-11-27T09:00:00+01:00 \
--to 2026-11-27T12:00:00+01:00 --reason \"system outage\"\n  \
wfmd adherence authorisations --from 2026-11-20T00:00:00Z\n  \
wfmd adherence withdraw 0193…\n\n\
Authorised time is neither in nor out of adherence: reports show it on its own \
(authorised_seconds) and leave it out of adherence_pct, and the compliance sweep opens no \
exception for it. A withdrawn authorisation counts no more, for the past too. Both are \
audited with the caller's token name.\n\n\
Exit codes: 0 done, 1 the daemon could not be reached or answered an error, 2 bad usage \
or a request the daemon refused.")]
pub struct AdherenceArgs {
    #[command(subcommand)]
    pub command: AdherenceCommand,
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Print the daemon's JSON answer instead of lines.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdherenceCommand {
    /// Excuse agents, or every agent of a team, from adherence for a time range.
    Authorise {
        #[command(flatten)]
        who: Selection,
        /// Start, RFC 3339 (2026-11-26T14:00:00Z).
        #[arg(long, value_name = "TIME")]
        from: String,
        /// End (exclusive), after --from and at most 31 days later.
        #[arg(long, value_name = "TIME")]
        to: String,
        /// Why (1 to 500 characters); it goes into the audit log.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// List the authorisations overlapping a window (withdrawn ones too), newest first.
    Authorisations {
        /// Start of the window, RFC 3339; default 7 days before --to.
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// End of the window; default 31 days from now.
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
    },
    /// Withdraw an authorisation: its time is judged again.
    Withdraw {
        /// The id `authorise` printed.
        id: String,
    },
}

/// Runs `wfmd adherence …`.
pub async fn run(
    config: &Config,
    api: &DaemonApi,
    args: AdherenceArgs,
) -> Result<ExitCode, Failure> {
    let client = Client::new(config, api, &args.daemon)?;
    let route = "/adherence/authorisations";
    let answer = match args.command {
        AdherenceCommand::Authorise {
            who,
            from,
            to,
            reason,
        } => {
            let mut body = json!({"from": from, "to": to, "reason": reason});
            who.into_body(&mut body);
            client.call(Method::POST, route, Some(body)).await?
        }
        AdherenceCommand::Authorisations { from, to } => {
            // The URL type encodes the query as a browser would.
            let mut url = reqwest::Url::parse("http://wfmd/").expect("a URL");
            for (name, value) in [("from", from), ("to", to)] {
                if let Some(value) = value {
                    url.query_pairs_mut().append_pair(name, &value);
                }
            }
            let route = match url.query() {
                Some(query) => format!("{route}?{query}"),
                None => route.to_owned(),
            };
            client.call(Method::GET, &route, None).await?
        }
        AdherenceCommand::Withdraw { id } => {
            let mut url = reqwest::Url::parse("http://wfmd/").expect("a URL");
            url.path_segments_mut().expect("a base").push(&id);
            let id = url.path().trim_start_matches('/').to_owned();
            client
                .call(Method::DELETE, &format!("{route}/{id}"), None)
                .await?
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else {
        match answer["authorisations"].as_array() {
            Some(list) => list.iter().for_each(|a| println!("{}", line(a))),
            None => println!("{}", line(&answer)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One authorisation on a line: id, range, agents (or team), reason, and its withdrawal.
fn line(authorisation: &Value) -> String {
    let text = |key: &str| authorisation[key].as_str().unwrap_or("").to_owned();
    let agents = authorisation["agents"].as_array().map_or(0, Vec::len);
    let who = match authorisation["team"].as_str() {
        Some(team) => format!("team {team} ({agents} agents)"),
        None if agents == 1 => authorisation["agents"][0].as_str().unwrap_or("").to_owned(),
        None => format!("{agents} agents"),
    };
    let mut line = format!(
        "{}  {} – {}  {who}  {:?}  by {}",
        text("id"),
        text("from"),
        text("to"),
        text("reason"),
        text("created_by"),
    );
    if let Some(at) = authorisation["withdrawn_at"].as_str() {
        line.push_str(&format!("  (withdrawn {at} by {})", text("withdrawn_by")));
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<AdherenceArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["wfmd", "adherence"], args].concat())?;
        match cli.command {
            Command::Adherence(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn authorise_takes_agents_or_a_team_a_range_and_a_reason() {
        let args = parse(&[
            "authorise",
            "--agents",
            "u_1,u_2",
            "--from",
            "2026-11-26T14:00:00Z",
            "--to",
            "2026-11-26T15:00:00Z",
            "--reason",
            "coaching",
        ])
        .unwrap();
        match args.command {
            AdherenceCommand::Authorise { who, .. } => {
                assert_eq!(
                    (who.agents, who.team),
                    (vec!["u_1".into(), "u_2".into()], None)
                );
            }
            other => panic!("{other:?}"),
        }
        let both = parse(&[
            "authorise",
            "--agents",
            "u_1",
            "--team",
            "t_1",
            "--from",
            "a",
            "--to",
            "b",
            "--reason",
            "x",
        ]);
        assert!(both.is_err(), "agents or a team, not both");
        let neither = parse(&["authorise", "--from", "a", "--to", "b", "--reason", "x"]);
        assert!(neither.is_err());
        let no_reason = parse(&["authorise", "--team", "t_1", "--from", "a", "--to", "b"]);
        assert!(no_reason.unwrap_err().to_string().contains("--reason"));
    }

    #[test]
    fn a_line_names_the_range_the_agents_the_reason_and_a_withdrawal() {
        let shown = line(&json!({
            "id": "a1", "agents": ["u_1", "u_2"], "team": "Billing",
            "from": "2026-11-27T09:00:00.000Z", "to": "2026-11-27T12:00:00.000Z",
            "reason": "outage", "created_by": "desk",
            "withdrawn_at": "2026-11-27T10:00:00.000Z", "withdrawn_by": "lead"
        }));
        assert_eq!(
            shown,
            "a1  2026-11-27T09:00:00.000Z – 2026-11-27T12:00:00.000Z  team Billing (2 agents)  \
             \"outage\"  by desk  (withdrawn 2026-11-27T10:00:00.000Z by lead)"
        );
    }
}
