//! `wfmd database copy --to URL`: moving a deployment's records to another database
//! (SQLite → PostgreSQL, most often), each tenant's into its place at URL (its schema,
//! or its file), checked table by table and by the audit chain (see
//! [`crate::store::copy`]).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Subcommand;

use super::Failure;
use crate::config::tenants::{TenantSpec, tenant_database_url};
use crate::store::audit::AuditKey;
use crate::store::copy;

#[derive(Debug, Subcommand)]
pub enum DatabaseCommand {
    /// Copy the configured database (database.url) into an empty one at URL, e.g.
    /// SQLite into PostgreSQL, and check the copy: every table's row count, and the audit
    /// chain verified on the target with the tenant's audit.key. Prints each table's
    /// rows and the chain's head; exit 0 only when all of it matches.
    ///
    /// With several tenants, each tenant's database goes where a daemon configured with
    /// `database.url = URL` looks for it (on PostgreSQL a schema per tenant in that
    /// database, on SQLite a file per tenant beside it); --tenant copies only that one.
    /// A target holding any record is refused and left as it was; a copy that fails
    /// part-way leaves it empty.
    ///
    /// The source is only read, in one snapshot, so the daemon may keep running on it,
    /// but what it records after the copy started is not in the copy: stop it first to
    /// move for good, then point database.url at URL and start it there. The source must
    /// be at this wfmd's migrations (run `wfmd migrate` first otherwise).
    Copy {
        /// The database to copy into: postgres://USER:PASSWORD@HOST/DB (a schema of its
        /// own with `?options[search_path]=NAME`) or sqlite://FILE. Created and migrated
        /// as `wfmd serve` would; it must hold no records.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

/// Runs `command` for `tenants` (every configured one, or the one --tenant named);
/// `several` when the configuration has more than one, so each line names its tenant.
pub async fn run(
    tenants: &[TenantSpec],
    several: bool,
    command: DatabaseCommand,
) -> Result<ExitCode, Failure> {
    let DatabaseCommand::Copy { to } = command;
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if !known.iter().any(|scheme| to.starts_with(scheme)) {
        return Err(Failure::usage(format!(
            "--to `{}` is neither a sqlite:// nor a postgres:// URL",
            crate::store::postgres::redacted(&to)
        )));
    }
    let mut code = ExitCode::SUCCESS;
    for tenant in tenants {
        let lead = if several {
            format!("{}: ", tenant.id)
        } else {
            String::new()
        };
        let target = tenant_database_url(&to, &tenant.id);
        let source = &tenant.config.database.url;
        if *source == target {
            return Err(Failure::usage(format!(
                "{lead}--to names the configured database itself ({})",
                crate::store::postgres::redacted(source)
            )));
        }
        match copy_one(source, &target, &tenant.config, &lead).await {
            Ok(()) => {}
            Err(error) if several => {
                eprintln!("wfmd: {lead}{error:#}");
                code = ExitCode::FAILURE;
            }
            Err(error) => return Err(Failure::action(error)),
        }
    }
    Ok(code)
}

async fn copy_one(
    source: &str,
    target: &str,
    config: &crate::config::Config,
    lead: &str,
) -> anyhow::Result<()> {
    let key = config.audit.key().map(AuditKey::new);
    // Progress for a person watching; the summary below is what scripts read.
    let watching = std::io::stderr().is_terminal();
    let copied = copy::copy(source, target, key, |table| {
        if watching {
            eprintln!("{lead}copying {} ({} rows)", table.table, table.rows);
        }
    })
    .await?;
    println!(
        "{lead}copied {} to {}",
        crate::store::postgres::redacted(source),
        crate::store::postgres::redacted(target)
    );
    let width = copied
        .tables
        .iter()
        .map(|t| t.table.len())
        .max()
        .unwrap_or(0);
    for table in &copied.tables {
        let unit = if table.rows == 1 { "row" } else { "rows" };
        println!("{lead}  {:<width$}  {:>10} {unit}", table.table, table.rows);
    }
    println!("{lead}{}", copied.audit_line());
    Ok(())
}
