//! `wfmd serve` (the daemon, on the platform or the built-in simulator) and `wfmd sim`
//! (the simulator alone), and the signal handling both stop on.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{DialectArg, Failure, ServeArgs, SimArgs, backup};
use crate::App;
use crate::config::tenants::{TenantId, TenantSpec, tenant_database_url};
use crate::config::{Config, Source};

/// Ground-truth entries per agent the simulator of `serve --simulate` keeps
/// (`/_sim/agents` shows each agent's latest change).
const SIMULATED_STATE_LOG_LIMIT: usize = 1;

pub(super) async fn serve(
    config: Config,
    args: ServeArgs,
    source: Source,
) -> Result<ExitCode, Failure> {
    // The simulators outlive the daemon's drain, so in-flight changes can finish.
    let stop_simulator = CancellationToken::new();
    let mut tenants = match args.tenants {
        Some(_) if !config.tenants.is_empty() => {
            return Err(Failure::usage(
                "--tenants simulates tenants of its own; the configuration has [[tenants]] \
                 already (leave out one or the other)",
            ));
        }
        Some(n) => simulated_tenants(&config, n),
        None => config.tenants(),
    };
    let mut clock = crate::engine::Clock::Wall;
    if args.simulate {
        for (i, tenant) in tenants.iter_mut().enumerate() {
            if let Some(dialect) = args.dialect {
                tenant.config.cxone.dialect = dialect.into();
            }
            let running = crate::start_simulator(
                &mut tenant.config,
                crate::sim::SimConfig {
                    agents: args.agents as usize,
                    // Each tenant its own agents: names, teams, states, activity.
                    seed: args.seed + i as u64,
                    time_scale: args.time_scale,
                    // Nobody audits the in-process simulator's ground truth, and keeping
                    // all of it would grow the daemon's memory with every simulated change.
                    state_log_limit: Some(SIMULATED_STATE_LOG_LIMIT),
                    ..crate::sim::SimConfig::default()
                },
                stop_simulator.clone(),
            )
            .await
            .map_err(Failure::action)?;
            announce_tenant(Some(&tenant.id), &running);
            // Simulated shifts, breaks and state stamps run at --time-scale: wfmd's
            // verdicts about them (sweep, automations, rules, compliance checks) must too.
            if args.time_scale != 1.0 && i == 0 {
                clock = crate::engine::Clock::scaled(running.sim.clock().now(), args.time_scale);
            }
        }
    }
    // While it runs, the daemon holds each tenant's database's lock: a restore refuses to
    // replace the file under it, and a second daemon refuses to start on it.
    let _locks = tenants
        .iter()
        .filter_map(|tenant| backup::database_path(&tenant.config.database.url))
        .map(|path| backup::DaemonLock::acquire(&path, "start"))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(Failure::action)?;
    let app = App::build_tenants(&config, tenants, clock)
        .await
        .map_err(Failure::action)?;
    let shutdown = CancellationToken::new();
    crate::tasks::spawn(cancel_on_signal(shutdown.clone()));
    crate::tasks::spawn(crate::engine::rules::reload_on_sighup(
        source,
        app.rules(),
        shutdown.clone(),
    ));
    let result = app.run_until_stopped(shutdown).await;
    stop_simulator.cancel();
    result.map_err(Failure::action)?;
    Ok(ExitCode::SUCCESS)
}

/// `--tenants N`: tenants `sim-1` … `sim-N` on the top-level sections, each with its
/// database beside `database.url`.
fn simulated_tenants(config: &Config, n: u32) -> Vec<TenantSpec> {
    (1..=n)
        .map(|i| {
            let id: TenantId = format!("sim-{i}")
                .parse()
                .expect("sim-N is a valid tenant id");
            let mut tenant_config = config.clone();
            tenant_config.database.url = tenant_database_url(&config.database.url, &id);
            TenantSpec {
                name: format!("Simulated tenant {i}"),
                id,
                config: tenant_config,
            }
        })
        .collect()
}

/// Logs where the simulated tenant is and a few agents worth trying.
fn announce_tenant(tenant: Option<&TenantId>, running: &crate::sim::RunningSim) {
    let now = chrono::Utc::now();
    let agents = running.sim.agents();
    let first = |pick: &dyn Fn(&crate::sim::SimAgent) -> bool| {
        agents
            .iter()
            .find(|a| pick(a))
            .map_or("none", |a| a.id.as_str())
            .to_owned()
    };
    tracing::info!(
        tenant = tenant.map(tracing::field::display),
        base_url = %running.base_url,
        agents = agents.len(),
        on_shift = %first(&|a| a.on_shift_at(now) && !a.in_mandatory_break_at(now) && a.state != "ON_CONTACT"),
        off_shift = %first(&|a| !a.on_shift_at(now)),
        in_mandatory_break = %first(&|a| a.in_mandatory_break_at(now)),
        on_contact = %first(&|a| a.state == "ON_CONTACT"),
        "simulated platform started; agents to try"
    );
}

pub(super) async fn simulator(args: SimArgs) -> Result<ExitCode, Failure> {
    let config = crate::sim::SimConfig {
        agents: args.agents as usize,
        seed: args.seed,
        requests_per_minute: args.requests_per_minute,
        time_scale: args.time_scale,
        activity: !args.still,
        ..crate::sim::SimConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on --listen {}: {e}", args.listen)))?;
    let stop = CancellationToken::new();
    let running = crate::sim::Simulator::start(config.clone(), listener, stop.clone())
        .await
        .map_err(Failure::action)?;
    println!(
        "simulator serving {} agents; point wfmd at it with:",
        args.agents
    );
    if args.dialect == DialectArg::Incontact {
        println!("  WFMD_CXONE__DIALECT=incontact");
        println!("  WFMD_CXONE__AUTH_BASE={}", running.base_url);
        println!(
            "  WFMD_CXONE__ACCESS_KEY_ID={}",
            crate::sim::incontact::ACCESS_KEY_ID
        );
        println!(
            "  WFMD_CXONE__ACCESS_KEY_SECRET={}",
            crate::sim::incontact::ACCESS_KEY_SECRET
        );
    } else {
        println!("  WFMD_CXONE__BASE_URL={}", running.base_url);
        println!("  WFMD_CXONE__TOKEN_URL={}", running.token_url);
    }
    println!("  WFMD_CXONE__CLIENT_ID={}", config.client_id);
    println!("  WFMD_CXONE__CLIENT_SECRET={}", config.client_secret);
    println!(
        "ground truth: {}/_sim/agents, counters: {}/_sim/stats",
        running.base_url, running.base_url
    );
    announce_tenant(None, &running);
    cancel_on_signal(stop).await;
    running.task.await.map_err(Failure::action)?;
    Ok(ExitCode::SUCCESS)
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("stop requested; draining");
    token.cancel();
}
