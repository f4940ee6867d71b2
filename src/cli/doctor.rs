//! `wfmd doctor`: what an operator runs first against a new tenant. It connects with the
//! configured credentials, and prints what it found (on the `incontact` dialect: the API
//! host from discovery, the teams, the agents, each team's unavailable codes, whether
//! WFM schedules and skill activity are readable) and names anything missing: a reason
//! wfmd uses that no team code or `[cxone.reason_codes]` entry covers, an empty
//! `[cxone.break_activities]`, a tenant without WFM access.
//!
//! Exit 0 when wfmd can work with the tenant (token and agent list), 1 otherwise; the
//! missing pieces are printed as `missing:` lines either way.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use super::Failure;
use crate::config::{Config, Dialect};
use crate::cxone::incontact::resolve_code;
use crate::cxone::{AgentFilter, Budget, ContactCenter, CxoneError, IncontactClient};
use crate::domain::AgentState;

/// The reasons wfmd sends without being told: the settable states' defaults.
const DEFAULT_REASONS: [AgentState; 3] =
    [AgentState::NotReady, AgentState::Paused, AgentState::Idle];

pub async fn run(config: &Config) -> Result<ExitCode, Failure> {
    let http = crate::http_client().map_err(Failure::action)?;
    let budget = Arc::new(Budget::per_minute(config.call_budget_per_minute()));
    let mut report = Report::default();
    report.line("dialect", dialect_name(config.cxone.dialect));
    let usable = match config.cxone.dialect {
        Dialect::V2 => {
            let platform = crate::platform(config, http, budget);
            generic(&mut report, platform.as_ref()).await
        }
        Dialect::Incontact => incontact(&mut report, config, http, budget).await,
    };
    for missing in &report.missing {
        println!("missing: {missing}");
    }
    if usable {
        println!("wfmd can work with this tenant");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure {
            code: 1,
            message: "wfmd cannot work with this tenant yet (see above)".into(),
        })
    }
}

fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::V2 => "v2",
        Dialect::Incontact => "incontact",
    }
}

#[derive(Default)]
struct Report {
    missing: Vec<String>,
}

impl Report {
    fn line(&self, what: &str, text: impl AsRef<str>) {
        println!("{what:<16} {}", text.as_ref());
    }

    fn missing(&mut self, text: impl Into<String>) {
        self.missing.push(text.into());
    }
}

/// What every dialect can say: access and the agents. True when both work.
async fn generic(report: &mut Report, platform: &dyn ContactCenter) -> bool {
    if let Err(e) = platform.check_access().await {
        report.line("access", format!("FAILED: {e}"));
        report.missing("working credentials");
        return false;
    }
    report.line("access", "ok");
    agents(report, platform).await.is_some()
}

/// Lists the agents; their count per team, or `None` when the list failed.
async fn agents(
    report: &mut Report,
    platform: &dyn ContactCenter,
) -> Option<BTreeMap<String, usize>> {
    match platform.list_agents(&AgentFilter::default()).await {
        Ok(agents) => {
            let mut teams: BTreeMap<String, usize> = BTreeMap::new();
            for a in &agents {
                *teams
                    .entry(a.team_id.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            report.line(
                "agents",
                format!("{} in {} teams", agents.len(), teams.len()),
            );
            if agents.is_empty() {
                report.missing("agents: the API user sees none (check its role's permissions)");
            }
            Some(teams)
        }
        Err(e) => {
            report.line("agents", format!("FAILED: {e}"));
            report.missing("permission to list agents");
            None
        }
    }
}

async fn incontact(
    report: &mut Report,
    config: &Config,
    http: reqwest::Client,
    budget: Arc<Budget>,
) -> bool {
    let settings = crate::incontact_settings(config);
    report.line("auth base", &settings.auth_base);
    report.line("access key", &settings.access_key_id);
    let client = IncontactClient::new(http, settings.clone(), budget);
    match client.api_base().await {
        Ok(base) => report.line("API host", base),
        Err(e) => {
            report.line("API host", format!("FAILED: {e}"));
            if matches!(e, CxoneError::BadCredentials { .. }) {
                report.missing("valid access key and application credentials");
            } else {
                report.missing(
                    "discovery (check cxone.auth_base, cxone.tenant_id or set cxone.base_url)",
                );
            }
            return false;
        }
    }
    let Some(sizes) = agents(report, &client).await else {
        return false;
    };
    let teams = match client.teams().await {
        Ok(teams) => teams,
        Err(e) => {
            report.line("teams", format!("FAILED: {e}"));
            report.missing("permission to list teams");
            Vec::new()
        }
    };
    report.line(
        "teams",
        teams
            .iter()
            .map(|(id, name)| format!("{id} {name} ({})", sizes.get(id).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    // The reasons wfmd may send: the defaults and every configured one.
    let mut reasons: Vec<String> = DEFAULT_REASONS
        .iter()
        .map(|s| s.default_reason().to_owned())
        .collect();
    reasons.extend(settings.reason_codes.keys().cloned());
    reasons.sort();
    reasons.dedup();
    for (team, _) in teams.iter().filter(|(id, _)| sizes.contains_key(id)) {
        match client.unavailable_codes(team).await {
            Ok(codes) => {
                let listed: Vec<String> = codes
                    .iter()
                    .filter(|c| c.active)
                    .map(|c| format!("{} ({})", c.name, c.id))
                    .collect();
                report.line(&format!("codes {team}"), listed.join(", "));
                let unmapped: Vec<&str> = reasons
                    .iter()
                    .filter(|r| resolve_code(&codes, r, &settings.reason_codes).is_none())
                    .map(String::as_str)
                    .collect();
                if !unmapped.is_empty() {
                    report.missing(format!(
                        "team {team}: no unavailable code for {} (map them in [cxone.reason_codes])",
                        unmapped.join(", ")
                    ));
                }
            }
            Err(e) => {
                report.line(&format!("codes {team}"), format!("FAILED: {e}"));
                report.missing(format!(
                    "permission to read team {team}'s unavailable codes"
                ));
            }
        }
    }
    // One agent's schedule shows whether WFM is readable.
    let sample = client
        .list_agents(&AgentFilter::default())
        .await
        .ok()
        .and_then(|a| a.into_iter().next());
    match sample {
        Some(agent) => match client.schedule(&agent.id).await {
            Ok(s) => report.line(
                "WFM schedules",
                format!(
                    "readable ({}: {} break windows)",
                    agent.id,
                    s.breaks.map_or(0, |b| b.len())
                ),
            ),
            Err(e) => {
                report.line("WFM schedules", format!("NOT readable: {e}"));
                report.missing(
                    "WFM schedule export (load schedules with `wfmd schedules import FILE`)",
                );
            }
        },
        None => report.line("WFM schedules", "no agent to try"),
    }
    if settings.mandatory_breaks.is_empty() {
        report.missing(
            "[cxone.break_activities] mandatory: no WFM activity counts as a mandatory break",
        );
    }
    match client.skill_activity(&[]).await {
        Ok(tiles) => report.line(
            "skill activity",
            format!("readable ({} skills)", tiles.len()),
        ),
        Err(e) => {
            report.line("skill activity", format!("NOT readable: {e}"));
            report.missing("permission to read skill activity (wallboard tiles)");
        }
    }
    true
}
