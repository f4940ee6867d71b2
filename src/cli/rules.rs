//! `wfmd rules list|check|dry-run`: look at WFM rules without waiting for them to fire.
//!
//! `list` and `check` need neither the platform nor the database; `dry-run` needs both:
//! the platform to resolve the selector and run the compliance check, the database for
//! the agents' recorded states.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;

use super::Failure;
use crate::Services;
use crate::config::Config;
use crate::config::rules::RulesFile;
use crate::domain::rule::Rule;
use crate::engine::rules::{FiringVerdict, RuleFirer};
use crate::time::rfc3339;

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Each rule with its selector, action and conditions, and its next three firings
    /// in its own time zone and in UTC.
    List,
    /// Validate rules without starting anything: those of FILE (a file of `[[rules]]`
    /// tables, like config/rules.example.toml), or without FILE those of the
    /// configuration. Exit 2 naming the rule and the field of each problem.
    Check {
        /// A rules file.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Which agents a firing of rule NAME now would move, and which it would leave
    /// alone and why: a condition not met, on a contact, or refused by compliance
    /// (AGENT_NOT_SCHEDULED, MANDATORY_BREAK_VIOLATION). Changes nothing. Needs the
    /// platform and the database.
    DryRun {
        /// The rule's name.
        name: String,
    },
}

/// Whether the command talks to the platform (its credentials are required then).
pub fn needs_platform(command: &RulesCommand) -> bool {
    matches!(command, RulesCommand::DryRun { .. })
}

/// `wfmd rules check FILE`, which reads nothing but the file.
pub fn check_file(path: &Path) -> Result<ExitCode, Failure> {
    let rules = RulesFile::load(path)
        .and_then(|file| file.validate(path))
        .map_err(Failure::usage)?;
    println!("{}", valid(&rules, &path.display().to_string()));
    Ok(ExitCode::SUCCESS)
}

fn valid(rules: &[Rule], source: &str) -> String {
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    format!(
        "{} rule(s) in {source} are valid: {}",
        rules.len(),
        names.join(", ")
    )
}

pub async fn run(config: &Config, command: RulesCommand) -> Result<ExitCode, Failure> {
    // The configuration was validated when it was loaded, rules included.
    let rules = config.rules().map_err(|p| Failure::usage(p.join("\n")))?;
    match command {
        RulesCommand::Check { file: Some(path) } => check_file(&path),
        RulesCommand::Check { file: None } => {
            println!("{}", valid(&rules, "the configuration"));
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::List => {
            let mut out = std::io::stdout().lock();
            list(&rules, &mut out).map_err(Failure::action)?;
            if rules.is_empty() {
                eprintln!("no rules are configured");
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::DryRun { name } => {
            let Some(rule) = rules.iter().find(|r| r.name == name) else {
                let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
                return Err(Failure::usage(format!(
                    "no rule named `{name}`; the rules are: {}",
                    if names.is_empty() {
                        "(none)".to_owned()
                    } else {
                        names.join(", ")
                    }
                )));
            };
            dry_run(config, rule).await
        }
    }
}

/// Prints each rule and its next three firings.
pub fn list(rules: &[Rule], out: &mut impl Write) -> std::io::Result<()> {
    let now = Utc::now();
    for rule in rules {
        let zone = rule.slots.zone();
        writeln!(
            out,
            "{}: {}, {}, {}; catch_up {}",
            rule.name,
            rule.selector,
            rule.action,
            rule.conditions,
            humantime::format_duration(rule.catch_up)
        )?;
        writeln!(
            out,
            "  cron \"{}\" in {}",
            rule.slots.pattern(),
            zone.name()
        )?;
        for (i, slot) in rule.slots.upcoming(now, 3).into_iter().enumerate() {
            let label = if i == 0 { "  next:" } else { "       " };
            writeln!(
                out,
                "{label} {}  ({})",
                slot.with_timezone(&zone).format("%a %F %T %Z"),
                rfc3339(slot)
            )?;
        }
    }
    Ok(())
}

async fn dry_run(config: &Config, rule: &Rule) -> Result<ExitCode, Failure> {
    let services = Services::start(config).await.map_err(Failure::action)?;
    let firer = RuleFirer::new(
        services.store.clone(),
        services.engine.clone(),
        config.scheduler.concurrency,
        services.budget.per_minute_rate(),
    );
    let verdicts = firer.dry_run(rule).await;
    services.store.close().await;
    let verdicts = verdicts.map_err(Failure::action)?;
    let moved = verdicts
        .iter()
        .filter(|v| matches!(v.verdict, FiringVerdict::Move | FiringVerdict::Unknown(_)))
        .count();
    let mut out = std::io::stdout().lock();
    let mut write = || -> std::io::Result<()> {
        writeln!(
            out,
            "rule {} ({}, {}): a firing now would move {moved} of {} agents",
            rule.name,
            rule.selector,
            rule.action,
            verdicts.len()
        )?;
        for v in &verdicts {
            let state = v.state.map_or("(no state)", |s| s.as_str());
            let verdict = match &v.verdict {
                FiringVerdict::Move => format!("move to {}", rule.action.target()),
                FiringVerdict::Skip(skip) => format!("skip: {skip}"),
                FiringVerdict::Reject(violation) => {
                    format!("skip: compliance would reject it: {violation}")
                }
                FiringVerdict::Unknown(error) => {
                    format!("move (compliance unknown: {error})")
                }
            };
            writeln!(out, "  {:<12} {state:<12} {verdict}", v.agent_id)?;
        }
        Ok(())
    };
    write().map_err(Failure::action)?;
    Ok(ExitCode::SUCCESS)
}
