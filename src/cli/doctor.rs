//! `wfmd doctor`: what an operator runs first against a new tenant. It connects with the
//! configured credentials, and prints what it found (the agents; whether schedules are
//! readable and how many agents have imported ones; on the `incontact` dialect also the
//! API host from discovery, the teams, each team's unavailable codes and whether skill
//! activity is readable) and names anything missing: a reason wfmd uses that no team
//! code or `[cxone.reason_codes]` entry covers, an empty `[cxone.break_activities]`, a
//! tenant that refuses schedule lookups (with what that means for changes under
//! `[compliance] without_schedule`, and how many agents imported schedules cover).
//!
//! With several `[[tenants]]`, `--tenant ID` names the one to check. With `--simulate`
//! the command line starts the built-in simulator first and points the configuration at
//! it, so this checks that: what a report on a working tenant looks like.
//!
//! Exit 0 when wfmd can work with the tenant (token and agent list), 1 otherwise; the
//! missing pieces are printed as `missing:` lines either way.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use super::Failure;
use crate::config::tenants::TenantId;
use crate::config::{Config, Dialect};
use crate::cxone::incontact::resolve_code;
use crate::cxone::{Agent, AgentFilter, Budget, ContactCenter, CxoneError, IncontactClient};
use crate::domain::AgentState;
use crate::domain::policy::WithoutSchedule;
use crate::store::Store;

/// The reasons wfmd sends without being told: the settable states' defaults.
const DEFAULT_REASONS: [AgentState; 3] =
    [AgentState::NotReady, AgentState::Paused, AgentState::Idle];

/// Checks the platform of `config` (one tenant's); `tenant`, when named with
/// `--tenant`, leads the report.
pub async fn run(config: &Config, tenant: Option<&TenantId>) -> Result<ExitCode, Failure> {
    let http = crate::http_client().map_err(Failure::action)?;
    let budget = Arc::new(Budget::per_minute(config.call_budget_per_minute()));
    let mut report = Report::default();
    if let Some(tenant) = tenant {
        report.line("tenant", tenant.as_str());
    }
    report.line("dialect", config.cxone.dialect.as_str());
    let usable = match config.cxone.dialect {
        Dialect::V2 => {
            let platform = crate::platform(config, http, budget);
            generic(&mut report, config, platform.as_ref()).await
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

/// What every dialect can say: access, the agents and their schedules. True when
/// access and the agent list work.
async fn generic(report: &mut Report, config: &Config, platform: &dyn ContactCenter) -> bool {
    if let Err(e) = platform.check_access().await {
        report.line("access", format!("FAILED: {e}"));
        report.missing("working credentials");
        return false;
    }
    report.line("access", "ok");
    let Some(agents) = agents(report, platform).await else {
        return false;
    };
    schedules(report, config, platform, &agents).await;
    true
}

/// Lists the agents, or `None` when the list failed.
async fn agents(report: &mut Report, platform: &dyn ContactCenter) -> Option<Vec<Agent>> {
    match platform.list_agents(&AgentFilter::default()).await {
        Ok(agents) => {
            let teams = team_sizes(&agents);
            report.line(
                "agents",
                format!("{} in {} teams", agents.len(), teams.len()),
            );
            if agents.is_empty() {
                report.missing("agents: the API user sees none (check its role's permissions)");
            }
            Some(agents)
        }
        Err(e) => {
            report.line("agents", format!("FAILED: {e}"));
            report.missing("permission to list agents");
            None
        }
    }
}

/// The agents' count per team id.
fn team_sizes(agents: &[Agent]) -> BTreeMap<String, usize> {
    let mut teams: BTreeMap<String, usize> = BTreeMap::new();
    for a in agents {
        *teams
            .entry(a.team_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    teams
}

/// Whether the platform answers one agent's schedule (and, on v2, break-status) lookup,
/// and how many agents imported schedules cover; when the platform refuses the lookups,
/// what changes will do under `[compliance] without_schedule`.
async fn schedules(
    report: &mut Report,
    config: &Config,
    platform: &dyn ContactCenter,
    agents: &[Agent],
) {
    let Some(sample) = agents.first() else {
        report.line("WFM schedules", "no agent to try");
        return;
    };
    let mut refused = false;
    match platform.schedule(&sample.id).await {
        Ok(s) => report.line(
            "WFM schedules",
            format!(
                "readable ({}: {} break windows)",
                sample.id,
                s.breaks.map_or(0, |b| b.len())
            ),
        ),
        Err(e @ CxoneError::Forbidden { .. }) => {
            report.line("WFM schedules", format!("REFUSED: {e}"));
            refused = true;
        }
        Err(e) => {
            report.line("WFM schedules", format!("FAILED: {e}"));
            report.missing("a schedule lookup that works (see the error above)");
        }
    }
    // On v2 break status is a call of its own, which a grant may lack on its own; on
    // incontact it comes from the same export.
    if config.cxone.dialect == Dialect::V2 && !refused {
        match platform.break_status(&sample.id).await {
            Ok(_) => report.line("break status", "readable"),
            Err(e @ CxoneError::Forbidden { .. }) => {
                report.line("break status", format!("REFUSED: {e}"));
                refused = true;
            }
            Err(e) => report.line("break status", format!("FAILED: {e}")),
        }
    }
    let covered = match imported_agents(config).await {
        Ok(imported) => {
            let covered = agents.iter().filter(|a| imported.contains(&a.id)).count();
            report.line(
                "imported",
                format!(
                    "{covered} of {} agents have imported schedules{}",
                    agents.len(),
                    if covered > 0 {
                        " (they answer for those agents instead of the platform)"
                    } else {
                        ""
                    }
                ),
            );
            Some(covered)
        }
        Err(e) => {
            report.line("imported", format!("cannot read the database: {e:#}"));
            None
        }
    };
    if !refused {
        return;
    }
    let uncovered = covered.map_or(agents.len(), |c| agents.len() - c);
    if uncovered == 0 {
        return;
    }
    let which = format!(
        "{uncovered} of {} agents have no imported schedule",
        agents.len()
    );
    report.missing(match config.compliance.without_schedule {
        WithoutSchedule::Refuse => format!(
            "schedules: the platform refuses schedule lookups for this API user, so changes \
             will be refused until schedules are imported (`wfmd schedules import FILE`) or \
             `[compliance] without_schedule = \"allow\"` ({which})"
        ),
        WithoutSchedule::Allow => format!(
            "schedules: the platform refuses schedule lookups for this API user; with \
             `[compliance] without_schedule = \"allow\"` changes go ahead unchecked (no shift \
             or mandatory-break check) for agents without imported schedules ({which}); \
             import them with `wfmd schedules import FILE`"
        ),
    });
}

/// The agents with imported schedules in the configured database; none when it does not
/// exist yet (doctor creates nothing).
async fn imported_agents(config: &Config) -> anyhow::Result<std::collections::HashSet<String>> {
    let exists = super::backup::database_path(&config.database.url).is_some_and(|p| p.is_file());
    if !exists {
        return Ok(Default::default());
    }
    let store = Store::open_without_migrating(&config.database.url).await?;
    let agents = crate::store::imported::agents(store.reader()).await;
    store.close().await;
    // A database from before imports existed has none.
    Ok(agents.unwrap_or_default().into_iter().collect())
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
    let Some(listed) = agents(report, &client).await else {
        return false;
    };
    let sizes = team_sizes(&listed);
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
    schedules(report, config, &client, &listed).await;
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
