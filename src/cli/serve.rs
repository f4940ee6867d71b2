//! `wfmd serve` (the daemon, on the platform or the built-in simulator) and `wfmd sim`
//! (the simulator alone), and the signal handling both stop on; `--simulate`'s tenants,
//! which `transition` and `doctor` start the same way.

use std::collections::HashMap;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{DialectArg, Failure, ServeArgs, SimArgs, SimulateArgs};
use crate::App;
use crate::config::tenants::{TenantId, TenantSpec};
use crate::config::{Config, ConfigSource, CxoneConfig};

/// Ground-truth entries per agent the simulator of `serve --simulate` keeps
/// (`/_sim/agents` shows each agent's latest change).
const SIMULATED_STATE_LOG_LIMIT: usize = 1;

pub(super) async fn serve(
    config: Config,
    args: ServeArgs,
    source: ConfigSource,
) -> Result<ExitCode, Failure> {
    let mut tenants = tenants_of(&config, &args).map_err(Failure::usage)?;
    // The simulators outlive the daemon's drain, so in-flight changes can finish.
    let stop_simulator = CancellationToken::new();
    let mut simulators = args.simulated.simulate.then(|| Simulators {
        args: args.simulated.clone(),
        started: HashMap::new(),
        stop: stop_simulator.clone(),
    });
    let clock = match &mut simulators {
        Some(simulators) => simulators
            .prepare(&mut tenants)
            .await
            .map_err(Failure::action)?,
        None => crate::engine::Clock::Wall,
    };
    // While it runs, the daemon holds each tenant's database's lock: a restore refuses to
    // replace the file under it, and a second daemon refuses to start on it.
    let app = App::build_locked(&config, tenants, clock)
        .await
        .map_err(Failure::action)?;
    let shutdown = CancellationToken::new();
    crate::tasks::spawn(cancel_on_signal(shutdown.clone()));
    let (reloads, reloaded) = tokio::sync::mpsc::channel(1);
    crate::tasks::spawn(reload_on_sighup(
        source,
        args,
        simulators,
        reloads,
        shutdown.clone(),
    ));
    let result = app.run_reloading(shutdown, reloaded).await;
    stop_simulator.cancel();
    result.map_err(Failure::action)?;
    Ok(ExitCode::SUCCESS)
}

/// The tenants `config` has `serve` run: its own, or `--tenants N` simulated ones.
fn tenants_of(config: &Config, args: &ServeArgs) -> Result<Vec<TenantSpec>, String> {
    match args.tenants {
        Some(_) if !config.tenants.is_empty() => Err(
            "--tenants simulates tenants of its own; the configuration has [[tenants]] \
             already (leave out one or the other)"
                .to_owned(),
        ),
        Some(n) => Ok(simulated_tenants(config, n)),
        None => Ok(config.tenants()),
    }
}

/// `--simulate`: a simulator per tenant, started the first time the tenant is, and
/// reused for it on a reload.
struct Simulators {
    args: SimulateArgs,
    /// Each simulated tenant's `[cxone]`, pointing at its simulator.
    started: HashMap<TenantId, CxoneConfig>,
    stop: CancellationToken,
}

impl Simulators {
    /// Points each tenant at its simulator, starting those not started yet. Returns the
    /// clock wfmd reads: the first simulator's, at `--time-scale`.
    async fn prepare(
        &mut self,
        tenants: &mut [TenantSpec],
    ) -> anyhow::Result<crate::engine::Clock> {
        let mut clock = crate::engine::Clock::Wall;
        for tenant in tenants.iter_mut() {
            if let Some(cxone) = self.started.get(&tenant.id) {
                tenant.config.cxone = cxone.clone();
                continue;
            }
            let index = self.started.len();
            let tenant_clock = simulate_tenant(
                &self.args,
                index,
                Some(&tenant.id),
                &mut tenant.config,
                self.stop.clone(),
            )
            .await?;
            if index == 0 {
                clock = tenant_clock;
            }
            self.started
                .insert(tenant.id.clone(), tenant.config.cxone.clone());
        }
        Ok(clock)
    }
}

/// Starts the simulator of the `index`th simulated tenant (its agents numbered from
/// `index × --agents + 1`, its seed `--seed + index`) and points `config`'s platform
/// settings at it; returns the clock wfmd reads for it. It serves until `stop` is
/// cancelled.
pub(super) async fn simulate_tenant(
    args: &SimulateArgs,
    index: usize,
    tenant: Option<&TenantId>,
    config: &mut Config,
    stop: CancellationToken,
) -> anyhow::Result<crate::engine::Clock> {
    if let Some(dialect) = args.dialect {
        config.cxone.dialect = dialect.into();
    }
    let running = crate::start_simulator(
        config,
        crate::sim::SimConfig {
            agents: args.agents as usize,
            // Each tenant its own agents: ids, names, teams, states, activity.
            first_agent: index * args.agents as usize + 1,
            seed: args.seed + index as u64,
            time_scale: args.time_scale,
            // Nobody audits the in-process simulator's ground truth, and keeping all of
            // it would grow the daemon's memory with every simulated change.
            state_log_limit: Some(SIMULATED_STATE_LOG_LIMIT),
            ..crate::sim::SimConfig::default()
        },
        stop,
    )
    .await?;
    announce_tenant(tenant, &running);
    // Simulated shifts, breaks and state stamps run at --time-scale: wfmd's verdicts
    // about them (sweep, automations, rules, compliance checks) must too.
    Ok(if args.time_scale == 1.0 {
        crate::engine::Clock::Wall
    } else {
        crate::engine::Clock::scaled(running.sim.clock().now(), args.time_scale)
    })
}

/// Re-reads the configuration from `source` on each SIGHUP and hands its tenants and
/// API tokens to the running daemon, which starts the new tenants, stops the removed
/// ones, gives the others their new rules (see `app::fleet`), and ends the browser
/// sessions of changed or removed tokens. A configuration with problems is refused
/// with an error naming each (the tenant's key path included); the tenants already
/// running carry on.
///
/// The signal handler is installed when this is called, not when the future is first
/// polled, so a SIGHUP sent once the daemon answers never meets the default action
/// (which ends the process).
fn reload_on_sighup(
    source: ConfigSource,
    args: ServeArgs,
    mut simulators: Option<Simulators>,
    reloads: tokio::sync::mpsc::Sender<crate::Reload>,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let mut hangups = match hangups {
                Ok(hangups) => hangups,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading needs a restart");
                    return;
                }
            };
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    received = hangups.recv() => if received.is_none() { return },
                }
                let loaded = Config::reload(&source)
                    .map_err(|e| e.to_string())
                    .and_then(|config| Ok((tenants_of(&config, &args)?, config.api_tokens)));
                let (mut tenants, api_tokens) = match loaded {
                    Ok(loaded) => loaded,
                    Err(problems) => {
                        tracing::error!(
                            "SIGHUP: the new configuration is refused and the tenants already \
                             running carry on: {problems}"
                        );
                        continue;
                    }
                };
                if let Some(simulators) = &mut simulators
                    && let Err(error) = simulators.prepare(&mut tenants).await
                {
                    tracing::error!("SIGHUP: cannot simulate the new tenants: {error:#}");
                    continue;
                }
                tracing::info!(tenants = tenants.len(), "SIGHUP: configuration re-read");
                if reloads
                    .send(crate::Reload {
                        tenants,
                        api_tokens,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (source, args, simulators, reloads);
            stop.cancelled().await;
        }
    }
}

/// `--tenants N`: tenants `sim-1` … `sim-N` on the top-level sections, each with its
/// database beside `database.url`.
fn simulated_tenants(config: &Config, n: u32) -> Vec<TenantSpec> {
    (1..=n)
        .map(|i| {
            let id: TenantId = format!("sim-{i}")
                .parse()
                .expect("sim-N is a valid tenant id");
            TenantSpec {
                name: format!("Simulated tenant {i}"),
                config: config.clone().own_to_tenant(&id),
                id,
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

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn simulated_tenants_have_their_own_database_and_audit_key() {
        let mut config = Config::default();
        config.audit.key = Some("s".repeat(40).into());
        let tenants = simulated_tenants(&config, 2);
        let key = |i: usize| tenants[i].config.audit.key().unwrap().expose_secret();
        assert_ne!(key(0), key(1));
        assert_ne!(key(0), "s".repeat(40));
        assert_ne!(
            tenants[0].config.database.url,
            tenants[1].config.database.url
        );
    }
}
