//! The command line: clap definitions of every subcommand and what each one runs.
//!
//! Exit codes: 0 ok, 1 the action failed or was rejected, 2 bad usage or bad
//! configuration (the message names the key or argument).

mod adherence;
mod analytics;
mod audit_chain;
mod backup;
mod bulk;
mod daemon;
mod database;
mod doctor;
mod outbox;
mod rules;
mod schedules;
mod serve;
mod token;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use crate::Services;
use crate::config::tenants::{TenantId, TenantSpec};
use crate::config::{Config, ConfigSource, LogFormat};
use crate::cxone::{Lane, in_lane};
use crate::domain::{AgentState, Origin};
use crate::engine::{Change, Changed, Outcome, Transition, TransitionRequest};
use crate::store::{Store, audit};
use crate::time::{parse_instant, rfc3339};
pub use daemon::DaemonApi;
pub use outbox::OutboxCommand;
use outbox::outbox;
pub use serve::cancel_on_signal;
use serve::{serve, simulator};

#[derive(Debug, Parser)]
#[command(
    name = "wfmd",
    version,
    about = "Agent-state automation for NICE CXone contact centers",
    long_about = "wfmd changes agent states on request and on WFM rules (cron timetables), \
refuses changes that break shift or break compliance, records every state agents are in (including the ones they choose \
themselves) in SQLite or PostgreSQL, and reports through signed webhooks, a hash-chained audit log and \
compliance exports.\n\n\
Quick start, with no credentials: `wfmd serve --simulate` runs the daemon against a built-in \
platform simulator.",
    after_help = "Exit codes: 0 ok, 1 the action failed or was rejected, 2 bad usage or configuration."
)]
pub struct Cli {
    /// Configuration file. Default: config/wfmd.toml when it exists, else built-in
    /// defaults. Any key can also be set as WFMD_SECTION__KEY in the environment.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The tenant a command acts on: its platform, its database and audit chain, and
    /// the running daemon's routes for it (/v1/tenants/ID/…, for bulk, analytics query
    /// and schedules import). Needed when the configuration has several `[[tenants]]`,
    /// except for `audit verify` (without --anchor), which then verifies every tenant's
    /// chain, `migrate`, which then migrates every tenant's database, and `database
    /// copy`, which then copies every tenant's. `serve` serves them all and `config
    /// check` shows them all.
    #[arg(long, global = true, value_name = "ID")]
    pub tenant: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: the HTTP API, state sync, WFM rules, schedule automations, the
    /// compliance sweep, the skill and queue pollers, bulk jobs, webhook delivery, the
    /// live feed, and the supervisor console's pages (the wallboard at `/`, real-time
    /// adherence at `/rta`, `/agents/{id}`, `/jobs`). SIGHUP re-reads the configuration:
    /// the rules, the adherence rules, the tenants (added ones start, removed ones
    /// stop), and the API tokens (a changed or removed token's browser sessions end).
    Serve(ServeArgs),
    /// Run the platform simulator alone (the v2 API of the platform contract).
    Sim(SimArgs),
    /// Change one agent's state now and print one result line; with --simulate, on the
    /// built-in simulator, started in-process.
    Transition(TransitionArgs),
    /// Change many agents at once through the running daemon (with a progress bar and
    /// a summary); also `bulk status|revert|cancel JOB`.
    Bulk(bulk::BulkArgs),
    /// Authorised exceptions through the running daemon: excuse agents or a team from
    /// adherence for a time range (`authorise`), list them, `withdraw` one.
    Adherence(adherence::AdherenceArgs),
    /// Export compliance reports (CSV, JSON or HTML).
    #[command(subcommand)]
    Report(ReportCommand),
    /// Inspect the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Aggregation queries with trends and anomalies (platform or wfmd's own history):
    /// query, list, show, verify.
    #[command(subcommand)]
    Analytics(analytics::AnalyticsCommand),
    /// Inspect and redeliver webhooks.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List, check and dry-run WFM rules.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Apply database migrations (serve also applies them at start); with several
    /// tenants and no --tenant, to every tenant's database.
    Migrate,
    /// Move the database elsewhere: `database copy --to URL` copies every record into an
    /// empty database (SQLite into PostgreSQL, say) and verifies the copy.
    #[command(subcommand)]
    Database(database::DatabaseCommand),
    /// Make HTTP API bearer tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Connect to the tenant (with several, the one --tenant names) and show what was
    /// found (API host, teams, agents, unavailable codes, WFM schedules, skill activity)
    /// and what is missing; with --simulate, of the built-in simulator, started
    /// in-process.
    Doctor {
        #[command(flatten)]
        simulated: SimulateArgs,
    },
    /// Load schedules from a file (a third-party WFM); also usable with v2.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Copy the database to FILE while the daemon runs (one consistent snapshot), then
    /// verify the copy's audit chain and print its size and audit head. FILE appears
    /// whole or not at all (written beside it under a temporary name, then renamed),
    /// readable by its owner only. SQLite only: a PostgreSQL database is backed up with
    /// pg_dump (exit 2 says so).
    Backup {
        /// The new file (never overwritten).
        file: PathBuf,
    },
    /// Put a backup in place of the database, after verifying its schema and audit
    /// chain; refused while `wfmd serve` runs on the database. The replaced database
    /// is kept beside it. SQLite only: on PostgreSQL use pg_restore (exit 2 says so).
    Restore {
        /// A file `wfmd backup` wrote.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub simulated: SimulateArgs,
    /// With --simulate: serve N simulated tenants (`sim-1` … `sim-N`), each its own
    /// platform with its own agents, budget and faults, and its own database beside
    /// database.url (on PostgreSQL, its own schema of it). Not with `[[tenants]]` in the
    /// configuration.
    #[arg(long, value_name = "N", requires = "simulate", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub tenants: Option<u32>,
}

/// `--simulate` and its settings, for every command that reaches the platform (`serve`,
/// `transition`, `doctor`): the built-in simulator in its place, in-process, for as long
/// as the command runs.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Start the built-in platform simulator in-process on a free port and use it, with
    /// a ready-made tenant: no credentials or other setup needed.
    #[arg(long)]
    pub simulate: bool,
    /// With --simulate: how many agents the simulated tenant has.
    #[arg(long, default_value_t = 50, requires = "simulate", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub agents: u32,
    /// With --simulate: seed of the simulated tenant (same seed, same tenant).
    #[arg(long, default_value_t = 1, requires = "simulate")]
    pub seed: u64,
    /// With --simulate: how fast simulated time runs; 60 makes a real second a
    /// simulated minute (agents' contacts, breaks and shifts speed up, and wfmd's clock
    /// for compliance checks, the sweep, automations and rules with them).
    #[arg(long, default_value_t = 1.0, requires = "simulate", value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// With --simulate: the API dialect to speak (overrides cxone.dialect).
    #[arg(long, value_enum, requires = "simulate")]
    pub dialect: Option<DialectArg>,
}

/// `--dialect`: the platform API spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DialectArg {
    /// The tutorials' v2 API.
    V2,
    /// The API NICE publishes (access key, discovery, delta polling).
    Incontact,
}

impl From<DialectArg> for crate::config::Dialect {
    fn from(d: DialectArg) -> Self {
        match d {
            DialectArg::V2 => crate::config::Dialect::V2,
            DialectArg::Incontact => crate::config::Dialect::Incontact,
        }
    }
}

fn parse_time_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(scale) if scale.is_finite() && (0.001..=10_000.0).contains(&scale) => Ok(scale),
        _ => Err(format!("`{text}` is not a speed between 0.001 and 10000")),
    }
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:9080", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// How many agents the simulated tenant has.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub agents: u32,
    /// Seed of the simulated tenant (same seed, same tenant).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The tenant's rate limit over API calls; 0 for none. Over it: 429 with Retry-After.
    #[arg(long, default_value_t = 6000)]
    pub requests_per_minute: u32,
    /// How fast simulated time runs; 60 makes a real second a simulated minute.
    #[arg(long, default_value_t = 1.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// Agents keep the state they are in instead of taking contacts, breaks and
    /// logging off on their own.
    #[arg(long)]
    pub still: bool,
    /// Which dialect's settings to print (the simulator serves both at once).
    #[arg(long, value_enum, default_value = "v2")]
    pub dialect: DialectArg,
}

#[derive(Debug, Args)]
pub struct TransitionArgs {
    /// The agent (platform user id), e.g. u_001.
    pub agent: String,
    /// Target state: READY, NOT_READY, PAUSED, IDLE or LOGGED_OUT.
    #[arg(value_parser = parse_state)]
    pub state: AgentState,
    /// Reason code; default READY→WORKING, NOT_READY→BREAK, PAUSED→ADHOC,
    /// IDLE→SYSTEM_IDLE, others→GENERAL.
    #[arg(long, value_name = "CODE")]
    pub reason: Option<String>,
    /// Perform the change at most once for this key; repeating the command returns the
    /// first result.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Print the result as JSON instead of a line of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub simulated: SimulateArgs,
}

fn parse_state(text: &str) -> Result<AgentState, String> {
    let state: AgentState = text
        .parse()
        .map_err(|e: crate::domain::UnknownValue| e.to_string())?;
    if state.is_settable() {
        Ok(state)
    } else {
        Err(format!("{state} is observed only and cannot be set"))
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain from the oldest kept checkpoint (or the first entry): exit 0
    /// when intact, 1 naming the first bad entry. With several tenants and no --tenant,
    /// every tenant's chain (each with its own key), one line each (`ID: ok, …` or
    /// `ID: BROKEN: …`): exit 1 when any is broken.
    Verify {
        /// Also prove the log still contains this hash (one `audit checkpoint` printed
        /// or an `audit.checkpoint` webhook carried); refused when it was pruned or is
        /// unknown.
        #[arg(long, value_name = "HASH")]
        anchor: Option<String>,
    },
    /// Checkpoint the chain's head and print it (entry_id, hash, count) as a JSON line
    /// to keep outside as an anchor.
    Checkpoint,
    /// Print entries written in [FROM, TO) as JSON lines.
    Export {
        /// Start, as a date (2026-11-20, midnight UTC) or an RFC 3339 instant.
        #[arg(long, value_parser = parse_instant)]
        from: chrono::DateTime<chrono::Utc>,
        /// End (exclusive), as a date or an RFC 3339 instant.
        #[arg(long, value_parser = parse_instant)]
        to: chrono::DateTime<chrono::Utc>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration as `serve` would (the platform's credentials
    /// included: exit 2 naming each missing or bad key); print it with secrets masked.
    Check {
        /// Validate for `serve --simulate`, where no platform settings are needed.
        #[arg(long)]
        simulate: bool,
    },
}

/// An error that ends the command, with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Bad usage or configuration: exit 2.
    pub fn usage(message: impl ToString) -> Self {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }

    /// The action failed: exit 1.
    pub fn action(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: 1,
            message: format!("{:#}", error.into()),
        }
    }
}

/// Runs the parsed command line; the exit code says how it went.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("wfmd: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let simulate = match &cli.command {
        Command::Serve(args) => args.simulated.simulate,
        Command::Transition(TransitionArgs { simulated, .. }) | Command::Doctor { simulated } => {
            simulated.simulate
        }
        Command::Config(ConfigCommand::Check { simulate }) => *simulate,
        _ => false,
    };
    // Commands that never reach the platform must not demand its credentials. `config
    // check` checks what `serve` will be given, so it asks for them as `serve` does.
    let needs_platform = match &cli.command {
        Command::Serve(_)
        | Command::Config(_)
        | Command::Transition(_)
        | Command::Doctor { .. } => true,
        Command::Rules(command) => rules::needs_platform(command),
        _ => false,
    };
    // A rules file is checked on its own, whatever the configuration says.
    if let Command::Rules(rules::RulesCommand::Check { file: Some(path) }) = &cli.command {
        return rules::check_file(path);
    }
    if let Command::Sim(args) = cli.command {
        init_tracing(&Config::default());
        return simulator(args).await;
    }
    // Making a token needs neither configuration nor database (nor a valid config).
    if let Command::Token(command) = cli.command {
        return token::run(command);
    }
    let source = ConfigSource {
        file: cli.config.clone(),
        simulate: simulate || !needs_platform,
    };
    let config = Config::load(&source).map_err(Failure::usage)?;
    if let Command::Config(ConfigCommand::Check { .. }) = cli.command {
        print!("{}", config.to_masked_toml());
        eprintln!("configuration is valid");
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(&config);
    if let Command::Serve(args) = cli.command {
        if cli.tenant.is_some() {
            return Err(Failure::usage(
                "serve serves every configured tenant; --tenant is for the other commands",
            ));
        }
        return serve(config, args, source).await;
    }
    // With several tenants and none named, these two go over every tenant.
    let tenants = config.tenants();
    if cli.tenant.is_none() && tenants.len() > 1 {
        match &cli.command {
            Command::Audit(AuditCommand::Verify { anchor: None }) => {
                return audit_chain::verify_each(&tenants).await;
            }
            Command::Migrate => return migrate_each(&tenants).await,
            _ => {}
        }
    }
    if let Command::Database(command) = cli.command {
        let chosen = match cli.tenant.as_deref() {
            Some(id) => vec![config.tenant(Some(id)).map_err(Failure::usage)?],
            None => tenants,
        };
        let several = config.tenants().len() > 1;
        return database::run(&chosen, several, command).await;
    }
    // Every other command acts on one tenant: its own platform and database.
    let spec = config
        .tenant(cli.tenant.as_deref())
        .map_err(Failure::usage)?;
    // Its place among the tenants numbers its simulated agents as `serve --simulate`'s.
    let index = tenants.iter().position(|t| t.id == spec.id).unwrap_or(0);
    // A tenant named here is named to the daemon too: its routes `/v1/tenants/{id}/…`.
    let api = DaemonApi {
        tenant: cli.tenant.is_some().then_some(spec.id),
    };
    let mut config = spec.config;
    let simulator = CancellationToken::new();
    let _simulator = simulator.clone().drop_guard();
    let tenant = api.tenant.as_ref();
    let clock = simulate_if_asked(&cli.command, index, tenant, &mut config, simulator).await?;
    match cli.command {
        Command::Transition(args) => transition(&config, clock, args).await,
        Command::Bulk(args) => bulk::run(&config, &api, args).await,
        Command::Adherence(args) => adherence::run(&config, &api, args).await,
        Command::Report(command) => report(&config, command).await,
        Command::Audit(command) => audit(&config, command).await,
        Command::Analytics(command) => analytics::run(&config, &api, command).await,
        Command::Migrate => migrate(&config).await,
        Command::Outbox(command) => outbox(&config, command).await,
        Command::Rules(command) => rules::run(&config, command).await,
        Command::Doctor { .. } => doctor::run(&config, api.tenant.as_ref()).await,
        Command::Schedules(command) => schedules::run(&config, &api, command).await,
        Command::Backup { file } => {
            let key = config.audit.key().map(audit::AuditKey::new);
            backup::backup(&config.database.url, key.as_ref(), &file).await
        }
        Command::Restore { file } => {
            let key = config.audit.key().map(audit::AuditKey::new);
            backup::restore(&config.database.url, key.as_ref(), &file).await
        }
        Command::Serve(_)
        | Command::Config(_)
        | Command::Sim(_)
        | Command::Token(_)
        | Command::Database(_) => {
            unreachable!("handled above")
        }
    }
}

/// `transition` and `doctor` with --simulate: starts the simulator `serve --simulate`
/// would start for the `index`th tenant, until `stop`, and points `config` at it.
/// Returns the clock the command's engine reads.
async fn simulate_if_asked(
    command: &Command,
    index: usize,
    tenant: Option<&TenantId>,
    config: &mut Config,
    stop: CancellationToken,
) -> Result<crate::engine::Clock, Failure> {
    let (Command::Transition(TransitionArgs { simulated, .. }) | Command::Doctor { simulated }) =
        command
    else {
        return Ok(crate::engine::Clock::Wall);
    };
    if !simulated.simulate {
        return Ok(crate::engine::Clock::Wall);
    }
    serve::simulate_tenant(simulated, index, tenant, config, stop)
        .await
        .map_err(Failure::action)
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    // Colour codes only for a person at a terminal: in a file, journald or a log
    // shipper they are noise inside every line.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second initialisation (tests run commands in one process) keeps the first.
    let _ = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `wfmd transition`, its engine reading `clock` (a simulator's scaled time).
async fn transition(
    config: &Config,
    clock: crate::engine::Clock,
    args: TransitionArgs,
) -> Result<ExitCode, Failure> {
    let services = Services::start_with_clock(config, clock)
        .await
        .map_err(Failure::action)?;
    let actor = std::env::var("USER")
        .map(|user| format!("cli:{user}"))
        .unwrap_or_else(|_| "cli".to_owned());
    let change = services.engine.change(Change::from(TransitionRequest {
        agent_id: args.agent,
        target: args.state,
        reason: args.reason,
        origin: Origin::Cli,
        actor,
        idempotency_key: args.idempotency_key,
    }));
    // The person at the terminal goes before the daemon's own queued work.
    let result = in_lane(Lane::Interactive, None, change)
        .await
        .map(Changed::made);
    services.store.close().await;
    let transition = result.map_err(|e| match e {
        crate::engine::EngineError::Store(_) | crate::engine::EngineError::Unrecorded { .. } => {
            Failure::action(e)
        }
        other => Failure::usage(other),
    })?;
    let line = if args.json {
        serde_json::to_string(&transition).expect("transitions serialize")
    } else {
        describe(&transition)
    };
    println!("{line}");
    Ok(match transition.outcome {
        Outcome::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// One line for people: what changed, or why not.
pub fn describe(t: &Transition) -> String {
    let from = t.from.map_or_else(|| "?".to_owned(), |s| s.to_string());
    let replayed = if t.replayed { " (replayed)" } else { "" };
    match &t.outcome {
        Outcome::Succeeded => format!(
            "{}: {from} -> {} ({}) in {} ms, attempt {}{replayed}",
            t.agent_id, t.to, t.reason, t.latency_ms, t.attempt_id
        ),
        Outcome::Rejected { violation } => format!(
            "{}: {} rejected: {violation}: {}, attempt {}{replayed}",
            t.agent_id,
            t.to,
            violation.describe(),
            t.attempt_id
        ),
        Outcome::Failed { error, .. } => format!(
            "{}: {} failed: {error}, attempt {}",
            t.agent_id, t.to, t.attempt_id
        ),
    }
}

async fn audit(config: &Config, command: AuditCommand) -> Result<ExitCode, Failure> {
    let store = audit_chain::open(config).await.map_err(Failure::action)?;
    let code = match command {
        AuditCommand::Verify { anchor } => {
            let code = audit_chain::verify(&store, anchor.as_deref()).await;
            store.close().await;
            return code;
        }
        AuditCommand::Checkpoint => {
            let code = audit_chain::checkpoint(&store).await;
            store.close().await;
            return code;
        }
        AuditCommand::Export { from, to } => {
            if to <= from {
                return Err(Failure::usage(format!(
                    "--to ({}) must be after --from ({})",
                    rfc3339(to),
                    rfc3339(from)
                )));
            }
            crate::store::retention::check_window(
                store.reader(),
                &[crate::store::retention::Kind::Audit],
                from,
            )
            .await
            .map_err(Failure::action)?
            .map_err(|e| Failure::usage(format!("--from: {e}")))?;
            // Row by row, as the HTTP route does: a year of entries in constant memory.
            let mut rows = std::pin::pin!(audit::stream_between(store.reader(), from, to));
            let mut out = std::io::BufWriter::new(std::io::stdout());
            while let Some(entry) = rows.try_next().await.map_err(Failure::action)? {
                serde_json::to_writer(&mut out, &entry.exported()).map_err(Failure::action)?;
                out.write_all(b"\n").map_err(Failure::action)?;
            }
            out.flush().map_err(Failure::action)?;
            ExitCode::SUCCESS
        }
    };
    store.close().await;
    Ok(code)
}

/// `migrate` with several tenants and none named: each tenant's database in turn, every
/// line led by the tenant; one that fails does not stop the others (exit 1 then).
async fn migrate_each(tenants: &[TenantSpec]) -> Result<ExitCode, Failure> {
    let mut code = ExitCode::SUCCESS;
    for tenant in tenants {
        if let Err(failure) = migrate_one(&tenant.config, &format!("{}: ", tenant.id)).await {
            eprintln!("wfmd: {}: {}", tenant.id, failure.message);
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}

async fn migrate(config: &Config) -> Result<ExitCode, Failure> {
    migrate_one(config, "").await?;
    Ok(ExitCode::SUCCESS)
}

/// Migrates one database, printing what it did with each line led by `lead`.
async fn migrate_one(config: &Config, lead: &str) -> Result<(), Failure> {
    let store = Store::open_without_migrating(&config.database.url)
        .await
        .map_err(Failure::action)?;
    let applied = store.migrate().await.map_err(Failure::action)?;
    let total = store.applied_migrations().await.map_err(Failure::action)?;
    println!(
        "{lead}applied {applied} migration(s); {} is at migration {total}",
        crate::store::postgres::redacted(&config.database.url)
    );
    // A database made before retention cannot give pruned space back to the file
    // system until it is rebuilt once; `serve` does that itself only for small files.
    if crate::store::retention::auto_vacuum(&store)
        .await
        .map_err(Failure::action)?
        != 2
    {
        crate::store::retention::convert_to_incremental(&store)
            .await
            .map_err(Failure::action)?;
        println!("{lead}converted the database to incremental vacuum (a one-time rebuild)");
    }
    store.close().await;
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Per-agent transitions, rejections by violation, latency, idle time, time in each
    /// state and schedule adherence for [FROM, TO), each agent with the name and team
    /// the platform last listed (columns name, team_id, team, after the others); with
    /// --format json also every attempt.
    Compliance(ComplianceArgs),
}

#[derive(Debug, Args)]
pub struct ComplianceArgs {
    /// Start, as a date (2026-11-20, midnight UTC) or an RFC 3339 instant.
    #[arg(long, value_parser = parse_instant)]
    pub from: chrono::DateTime<chrono::Utc>,
    /// End (exclusive), as a date or an RFC 3339 instant; at most 366 days after --from.
    #[arg(long, value_parser = parse_instant)]
    pub to: chrono::DateTime<chrono::Utc>,
    /// csv (one row per agent), json (agents and the attempt log) or html (one page
    /// with a chart, agents grouped by team, worst adherence first).
    #[arg(long, default_value = "csv", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<crate::report::ReportFormat>()))]
    pub format: crate::report::ReportFormat,
    /// Write to FILE instead of stdout. With --format csv, what each column means (how
    /// it is computed, its unit, the time zone, the adherence rules' version) goes to
    /// FILE's stem plus `.definitions.csv` beside it (report.csv → report.definitions.csv),
    /// so the report itself stays plain CSV; JSON and HTML carry their definitions inside.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print times in this IANA zone (e.g. America/New_York) instead of UTC.
    #[arg(long, value_name = "ZONE", value_parser = crate::report::parse_zone)]
    pub tz: Option<chrono_tz::Tz>,
}

/// Where `wfmd report --out FILE` puts a CSV report's definitions: beside FILE, its
/// extension replaced by `definitions.csv` (`r.csv` → `r.definitions.csv`; `r` →
/// `r.definitions.csv`).
pub fn definitions_path(out: &std::path::Path) -> PathBuf {
    out.with_extension("definitions.csv")
}

async fn report(config: &Config, command: ReportCommand) -> Result<ExitCode, Failure> {
    use crate::domain::idle::Window;
    use crate::report::{Report, WriteSink};
    let ReportCommand::Compliance(args) = command;
    let window =
        Window::checked(args.from, args.to).map_err(|e| Failure::usage(format!("--to: {e}")))?;
    let store = Store::open(&config.database.url)
        .await
        .map_err(Failure::action)?;
    use crate::store::retention::{Kind, check_window};
    check_window(
        store.reader(),
        &[Kind::Intervals, Kind::Attempts],
        window.from,
    )
    .await
    .map_err(Failure::action)?
    .map_err(|e| Failure::usage(format!("--from: {e}")))?;
    let judging = config
        .compliance
        .judging()
        .map_err(|problems| Failure::usage(problems.join("; ")))?;
    let report = Report::build(
        store.reader(),
        window,
        chrono::Utc::now(),
        args.tz,
        &judging,
    )
    .await
    .map_err(Failure::action)?;
    let result = match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| {
                Failure::action(anyhow::anyhow!(
                    "cannot create --out {}: {e}",
                    path.display()
                ))
            })?;
            let mut sink = WriteSink(std::io::BufWriter::new(file));
            let written = report.write(args.format, store.reader(), &mut sink).await;
            written.and_then(|()| sink.0.flush().map_err(Into::into))
        }
        None => {
            let mut sink = WriteSink(std::io::BufWriter::new(std::io::stdout()));
            let written = report.write(args.format, store.reader(), &mut sink).await;
            written.and_then(|()| sink.0.flush().map_err(Into::into))
        }
    };
    store.close().await;
    result.map_err(Failure::action)?;
    if let Some(path) = &args.out {
        eprintln!(
            "wrote the compliance report for {} agents to {}",
            report.agents.len(),
            path.display()
        );
        if args.format == crate::report::ReportFormat::Csv {
            let companion = definitions_path(path);
            std::fs::write(&companion, report.definitions.to_csv()).map_err(|e| {
                Failure::action(anyhow::anyhow!(
                    "cannot write the definitions to {}: {e}",
                    companion.display()
                ))
            })?;
            eprintln!("wrote what each column means to {}", companion.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
