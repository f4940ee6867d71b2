//! `--simulate`: the built-in simulator, started in-process, as the platform.

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::sim;

/// Starts the built-in simulator on a free loopback port with `sim_config` (its agents
/// always act on their own, as state sync expects) and points `config`'s platform
/// settings at it. The simulator serves until `stop` is cancelled.
pub async fn start_simulator(
    config: &mut Config,
    sim_config: sim::SimConfig,
    stop: CancellationToken,
) -> anyhow::Result<sim::RunningSim> {
    let sim_config = sim::SimConfig {
        activity: true,
        ..sim_config
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a port for the simulator")?;
    let running = sim::Simulator::start(sim_config.clone(), listener, stop)
        .await
        .context("cannot start the simulator")?;
    config.cxone.base_url = running.base_url.clone();
    config.cxone.token_url = running.token_url.clone();
    config.cxone.client_id = sim_config.client_id;
    config.cxone.client_secret = sim_config.client_secret.into();
    // The same tenant in the incontact dialect: discovery at the simulator's root.
    config.cxone.auth_base = running.base_url.clone();
    config.cxone.access_key_id = sim::incontact::ACCESS_KEY_ID.to_owned();
    config.cxone.access_key_secret = sim::incontact::ACCESS_KEY_SECRET.to_owned().into();
    if config.cxone.dialect == config::Dialect::Incontact {
        // Discovery names the API host.
        config.cxone.base_url = String::new();
    }
    Ok(running)
}
