//! The daemon: each tenant's services ([`tenant::Tenant`]), their workers
//! ([`worker::Worker`]) and the HTTP API over them, built from the configuration and
//! run until stopped.

mod fleet;
mod leading;
mod malloc;
mod schedule_work;
mod services;
mod settings;
mod simulate;
mod tenant;
mod worker;

pub use malloc::{limit_malloc_arenas, restart_without_thread_caches};
pub use services::{Services, http_client, incontact_settings, platform};
pub use simulate::start_simulator;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::tenants::TenantSpec;
use crate::domain::tenant::TenantId;
use crate::engine::{self, TransitionEngine};
use crate::store::Store;
use crate::{api, live};
use fleet::Fleet;
use tenant::Tenant;

/// Tenants built at once at start. Each build is a chain of database round trips
/// (migrations checked, daemon lock, stored credentials masked): one after another,
/// a thousand PostgreSQL tenants took minutes, longer than a joining instance may take
/// to get its share. Eight keep the database busy without queueing in the pool.
const BUILD_AT_ONCE: usize = 8;

/// The daemon: the HTTP API over the tenants' services, ready to run.
pub struct App {
    listener: TcpListener,
    /// In configuration order; at least one.
    tenants: Vec<Tenant>,
    /// The API's tokens and browser sessions; a reload replaces the tokens.
    credentials: Arc<api::auth::Credentials>,
    shutdown_timeout: Duration,
    /// `[server]`'s limits on connections, and on each request.
    serving: api::serve::ServeSettings,
    limits: api::Limits,
    /// Downloads in progress per caller, and their limits (`[exports]`).
    exports: api::exports::Exports,
    /// What tenants started on a reload read the time from.
    clock: engine::Clock,
    /// Whether each tenant holds its database's daemon lock.
    lock_databases: bool,
    /// The instance's PostgreSQL pools, shared by its tenants (`[database]
    /// max_connections`), tenants added on a reload too.
    pools: crate::store::SharedPools,
    /// The instance's HTTP client, shared by its tenants (see [`Services::start_in`]).
    http: reqwest::Client,
    /// This instance among several (`[ha]`); `None`: the sole instance.
    ha: Option<crate::cluster::leadership::LeadershipSettings>,
    /// This instance, among several or alone: its id (computed once, it holds the
    /// pid by default) is the one `ha` leads with and `GET /v1/cluster` shows.
    instance: api::cluster::ThisInstance,
}

impl App {
    /// Opens the database (applying migrations), connects the platform client and binds
    /// `server.listen` (port 0 picks a free port; see [`App::port`]).
    pub async fn build(config: &Config) -> anyhow::Result<App> {
        App::build_with_clock(config, engine::Clock::Wall).await
    }

    /// [`App::build`] with every part that judges or stamps time (engine, rules,
    /// schedule book, automations, sweep, state sync's stamps) reading `clock`.
    pub async fn build_with_clock(config: &Config, clock: engine::Clock) -> anyhow::Result<App> {
        App::build_tenants(config, config.tenants(), clock).await
    }

    /// [`App::build_with_clock`] serving `tenants` (the configuration's, or simulated
    /// ones) under the process-wide sections of `config`.
    pub async fn build_tenants(
        config: &Config,
        specs: Vec<TenantSpec>,
        clock: engine::Clock,
    ) -> anyhow::Result<App> {
        App::build_all(config, specs, clock, false).await
    }

    /// [`App::build_tenants`] as `wfmd serve` runs it: each tenant first takes its
    /// database's daemon lock, so a second daemon on the same database, or a restore
    /// under a running one, is refused.
    pub async fn build_locked(
        config: &Config,
        specs: Vec<TenantSpec>,
        clock: engine::Clock,
    ) -> anyhow::Result<App> {
        App::build_all(config, specs, clock, true).await
    }

    async fn build_all(
        config: &Config,
        specs: Vec<TenantSpec>,
        clock: engine::Clock,
        lock_databases: bool,
    ) -> anyhow::Result<App> {
        let instance = api::cluster::ThisInstance::from_config(config.ha.as_ref());
        let pools = crate::store::SharedPools::new(
            config.database.max_connections,
            Some(&instance.id),
            config.ha.is_some(),
        );
        let http = http_client()?;
        let (pools_ref, http_ref) = (&pools, &http);
        let tenants: Vec<Tenant> = futures::stream::iter(specs)
            .map(|spec| async move {
                Tenant::build(&spec, clock, lock_databases, pools_ref, http_ref)
                    .await
                    .with_context(|| format!("tenant {}", spec.id))
            })
            .buffered(BUILD_AT_ONCE)
            .try_collect()
            .await?;
        if config.ha.is_some() {
            crate::cluster::schema::prepare(&config.database.url).await?;
        }
        let tokens = api::auth::ApiTokens::from_config(&config.api_tokens)?;
        let listener = bind(config, &tokens).await?;
        let credentials =
            api::auth::Credentials::new(tokens, config.server.session_ttl, &config.server.proxies);
        Ok(App {
            listener,
            tenants,
            credentials: Arc::new(credentials),
            shutdown_timeout: config.server.shutdown_timeout,
            serving: api::serve::ServeSettings::from_config(config),
            limits: api::Limits::from_config(config),
            exports: api::exports::Exports::new(&config.exports),
            clock,
            lock_databases,
            pools,
            http,
            ha: config
                .ha
                .as_ref()
                .map(|ha| crate::cluster::leadership::LeadershipSettings {
                    instance: instance.id.clone(),
                    advertise_url: ha.advertise_url.clone(),
                    lease_ttl: ha.lease_ttl,
                    database_url: config.database.url.clone(),
                }),
            instance,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The tenants' ids, in configuration order.
    pub fn tenant_ids(&self) -> Vec<TenantId> {
        self.tenants.iter().map(|t| t.id.clone()).collect()
    }

    /// The first tenant (the only one of a configuration without `[[tenants]]`): the
    /// one the accessors below read.
    fn tenant(&self) -> &Tenant {
        &self.tenants[0]
    }

    pub fn engine(&self) -> Arc<TransitionEngine> {
        self.tenant().engine().clone()
    }

    pub fn store(&self) -> Store {
        self.tenant().services.store.clone()
    }

    /// The store of tenant `id`, when it is served.
    pub fn store_of(&self, id: &str) -> Option<Store> {
        self.tenants
            .iter()
            .find(|t| t.id.as_str() == id)
            .map(|t| t.services.store.clone())
    }

    pub fn bulk(&self) -> engine::bulk::BulkJobs {
        self.tenant().bulk.clone()
    }

    /// The live feed (snapshot, events, tickets).
    pub fn live(&self) -> live::Live {
        self.tenant().live.clone()
    }

    /// The analytics jobs (tests drive them with `run_pending`).
    pub fn analytics(&self) -> engine::analytics::AnalyticsJobs {
        self.tenant().analytics.clone()
    }

    /// The newest skill and queue figures, updated by the metric pollers.
    pub fn metric_board(&self) -> engine::metrics::BoardReceiver {
        self.tenant().metric_board.subscribe()
    }

    /// Serves (and delivers webhooks, syncs states, fires rules and runs bulk jobs) until
    /// `shutdown` is cancelled, then lets in-flight requests and webhook POSTs finish
    /// (each within `server.shutdown_timeout`) and the agent changes in flight complete,
    /// and closes the databases. Rule firings and bulk items not started yet are resumed
    /// at the next start.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // No reloads: the sender is gone at once.
        let (_, reloads) = mpsc::channel(1);
        self.run_reloading(shutdown, reloads).await
    }

    /// [`App::run_until_stopped`], applying each re-read configuration `reloads`
    /// brings: its tenants (see `fleet`) and its API tokens.
    pub async fn run_reloading(
        self,
        shutdown: CancellationToken,
        mut reloads: mpsc::Receiver<Reload>,
    ) -> anyhow::Result<()> {
        let address = self.listener.local_addr()?;
        let grace = self.shutdown_timeout;
        let mut fleet = Fleet::start(
            self.tenants,
            fleet::Launch {
                clock: self.clock,
                lock_databases: self.lock_databases,
                pools: self.pools.clone(),
                http: self.http.clone(),
                grace,
                exports: self.exports,
                shutdown: shutdown.clone(),
                ha: self.ha,
            },
        );
        let credentials = self.credentials;
        let (router, routing) = api::router(
            &fleet.served(),
            credentials.clone(),
            &self.limits,
            self.instance,
        );
        tracing::info!(%address, "wfmd is serving");
        let mut server = crate::tasks::spawn(api::serve::serve(
            self.listener,
            router,
            self.serving,
            shutdown.clone(),
        ));
        let overdue = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        let mut overdue = std::pin::pin!(overdue);
        let mut listening = true;
        loop {
            tokio::select! {
                ended = &mut server => {
                    if let Err(error) = ended {
                        tracing::error!(%error, "the HTTP server ended abnormally");
                    }
                    break;
                }
                () = &mut overdue => {
                    tracing::warn!(
                        timeout = ?grace,
                        "in-flight requests did not finish in time; stopping anyway"
                    );
                    server.abort();
                    break;
                }
                reload = reloads.recv(), if listening && !shutdown.is_cancelled() => match reload {
                    Some(reload) => {
                        reload_tokens(&credentials, &reload.api_tokens);
                        fleet.reload(reload.tenants, routing.clone()).await;
                    }
                    None => listening = false,
                },
            }
        }
        fleet.finish().await;
        tracing::info!("wfmd stopped");
        Ok(())
    }
}

/// What a SIGHUP's re-read configuration brings the running daemon.
pub struct Reload {
    /// The tenants to serve from now on.
    pub tenants: Vec<TenantSpec>,
    /// `[[api_tokens]]`: a changed or removed token's browser sessions end.
    pub api_tokens: Vec<crate::config::api_tokens::ApiTokenConfig>,
}

/// Puts the re-read tokens in force, saying how many sessions that ended; a refusal
/// keeps the tokens in force and says why.
fn reload_tokens(
    credentials: &api::auth::Credentials,
    tokens: &[crate::config::api_tokens::ApiTokenConfig],
) {
    match credentials.reload(tokens) {
        Ok(ended) => tracing::info!(
            tokens = tokens.len(),
            sessions_ended = ended,
            "SIGHUP: API tokens re-read"
        ),
        Err(error) => tracing::error!("SIGHUP: the API tokens are not reloaded: {error:#}"),
    }
}

/// Binds `server.listen`, or loopback when tokens are missing for a network address,
/// saying so; refuses plain HTTP with tokens on a network address unless
/// `server.plain_http_ok` says a TLS proxy is the only way in.
async fn bind(config: &Config, tokens: &api::auth::ApiTokens) -> anyhow::Result<TcpListener> {
    if let Some(problem) = config.server.plain_http_problem(tokens.len()) {
        anyhow::bail!(problem);
    }
    let configured = config.server.listen;
    let (listen, warning) = api::auth::listen_address(configured, tokens.len());
    match warning {
        Some(warning) => tracing::warn!(%configured, bound = %listen, "{warning}"),
        None if tokens.is_empty() => tracing::info!(
            "no [[api_tokens]] are configured: every caller on this host may use the API"
        ),
        None if !configured.ip().is_loopback() => tracing::warn!(
            %configured,
            "PLAIN HTTP on a network address: bearer tokens and agent data cross the \
             network unencrypted unless the TLS proxy that server.plain_http_ok = true \
             promises is the only way in (docs/operations.md, \"TLS\")"
        ),
        None => {}
    }
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen = {configured})"))
}
