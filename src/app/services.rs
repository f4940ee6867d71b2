//! The services every command needs: the process's HTTP client, the platform client the
//! configuration describes, the store and the transition engine.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::{self, Config};
use crate::cxone::{self, Budget, ClientSettings, ContactCenter, RetryPolicy, V2Client};
use crate::engine::{self, TransitionEngine};
use crate::store::{self, Store};

/// How long a connection to the platform or a receiver is kept unused. The pool hands
/// out its most recently used connection first, so a tenant's polls (every 10 s by
/// default) keep theirs open, and the connections a burst opened close half a minute
/// after it. A start opens about ten a tenant (50 tenants on one platform host: 450 to
/// 510), each holding some 45 KB of buffers; with reqwest's default of 90 s they were
/// still open when the daemon had been at rest for a minute.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);

/// The one HTTP client of the process: connection pools and TLS sessions are shared by
/// every platform call and every webhook delivery.
///
/// It follows no redirect: a receiver or a token endpoint that answers 3xx could send a
/// signed event, or the client secret, to any address it names. A 3xx is an answer like
/// any other non-2xx, which each caller reports as a failure.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    cxone::install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("wfmd/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(IDLE_CONNECTION)
        .build()
        .context("cannot build the HTTP client")
}

/// The platform client the configuration describes, under a request budget.
pub fn platform(
    config: &Config,
    http: reqwest::Client,
    budget: Arc<Budget>,
) -> Arc<dyn ContactCenter> {
    let c = &config.cxone;
    if c.dialect == config::Dialect::Incontact {
        return Arc::new(cxone::IncontactClient::new(
            http,
            incontact_settings(config),
            budget,
        ));
    }
    let settings = ClientSettings {
        base_url: c.base_url.clone(),
        token_url: c.token_url.clone(),
        client_id: c.client_id.clone(),
        client_secret: c.client_secret.clone(),
        request_timeout: config.request_timeout(),
        retry: RetryPolicy {
            max_retries: config.retry.max_retries,
            base_delay: Duration::from_millis(config.retry.base_delay_ms),
            max_delay: Duration::from_millis(config.retry.max_delay_ms),
        },
    };
    Arc::new(V2Client::new(http, settings, budget))
}

/// The `incontact` client settings the configuration describes.
pub fn incontact_settings(config: &Config) -> cxone::IncontactSettings {
    let c = &config.cxone;
    let non_empty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    cxone::IncontactSettings {
        auth_base: c.auth_base.clone(),
        access_key_id: c.access_key_id.clone(),
        access_key_secret: c.access_key_secret.clone(),
        client_id: c.client_id.clone(),
        client_secret: c.client_secret.clone(),
        tenant_id: non_empty(&c.tenant_id),
        base_url: non_empty(&c.base_url),
        api_version: c.api_version.clone(),
        reason_codes: config::cxone_incontact::reason_codes(&c.reason_codes),
        mandatory_breaks: c.break_activities.mandatory.clone(),
        request_timeout: config.request_timeout(),
        retry: RetryPolicy {
            max_retries: config.retry.max_retries,
            base_delay: Duration::from_millis(config.retry.base_delay_ms),
            max_delay: Duration::from_millis(config.retry.max_delay_ms),
        },
        logout_confirm: config::cxone_incontact::LOGOUT_CONFIRM,
    }
}

/// The services a command needs: store, platform and transition engine.
pub struct Services {
    pub store: Store,
    pub engine: Arc<TransitionEngine>,
    pub http: reqwest::Client,
    /// The request budget every platform call of this process waits for.
    pub budget: Arc<Budget>,
}

impl Services {
    pub async fn start(config: &Config) -> anyhow::Result<Services> {
        Services::start_with_clock(config, engine::Clock::Wall).await
    }

    /// [`Services::start`] with an engine reading `clock` (a simulator's scaled time).
    pub async fn start_with_clock(
        config: &Config,
        clock: engine::Clock,
    ) -> anyhow::Result<Services> {
        Services::start_in(
            config,
            clock,
            &store::SharedPools::private(),
            &http_client()?,
        )
        .await
    }

    /// [`Services::start_with_clock`] for a tenant of an instance, whose PostgreSQL
    /// connections are the instance's `pools` and whose HTTP client is the instance's
    /// `http`: one client for every tenant, so that the TLS roots and configuration are
    /// held once and tenants on the same platform host share its idle connections. It
    /// holds nothing of a tenant's: each tenant's platform client keeps its own
    /// credentials and token, and sends them with each of its requests.
    pub async fn start_in(
        config: &Config,
        clock: engine::Clock,
        pools: &store::SharedPools,
        http: &reqwest::Client,
    ) -> anyhow::Result<Services> {
        let audit_key = config.audit.key().map(store::audit::AuditKey::new);
        let store = Store::open_in(&config.database.url, audit_key, pools).await?;
        let budget = Arc::new(
            Budget::per_minute(config.call_budget_per_minute())
                .with_background_share(config.cxone.background_share)
                .with_interactive_reserve(config.cxone.interactive_reserve),
        );
        let http = http.clone();
        let platform = platform(config, http.clone(), budget.clone());
        // Schedules imported from a file answer for the agents they cover, also the ones
        // imported while the daemon runs.
        let imports = engine::imported_schedules::Imports::load(&store).await?;
        let platform: Arc<dyn ContactCenter> = Arc::new(
            engine::imported_schedules::ImportedSchedules::new(platform, imports.clone()),
        );
        let engine = Arc::new(
            TransitionEngine::new(store.clone(), platform, config.schedule_cache_ttl())
                .with_book_max_age(config.schedules.max_age)
                .with_clock(clock)
                .with_without_schedule(config.compliance.without_schedule)
                .with_imports(imports),
        );
        Ok(Services {
            store,
            engine,
            http,
            budget,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::cxone::AgentFilter;

    /// Two tenants of an instance on one platform host: their platform calls, token
    /// requests included, go over one connection, which the second tenant finds idle
    /// in the instance's pool. With a client of their own, each opened its own.
    #[tokio::test]
    async fn tenants_of_an_instance_share_its_http_client() {
        let stop = CancellationToken::new();
        let mut platform_config = Config::default();
        let sim = crate::sim::SimConfig {
            requests_per_minute: 0,
            ..crate::sim::SimConfig::default()
        };
        super::super::start_simulator(&mut platform_config, sim, stop.clone())
            .await
            .unwrap();
        let simulator = platform_config.cxone.base_url.clone();
        let simulator_address = simulator
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        // In front of the simulator: counts the connections the tenants open.
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxied = format!("http://{}", proxy.local_addr().unwrap());
        let opened = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&opened);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = proxy.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let address = simulator_address.clone();
                tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(address).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });

        let dir = tempfile::tempdir().unwrap();
        let http = http_client().unwrap();
        let mut tenants = Vec::new();
        for name in ["alpha", "beta"] {
            let mut config = platform_config.clone();
            config.cxone.base_url = config.cxone.base_url.replace(&simulator, &proxied);
            config.cxone.token_url = config.cxone.token_url.replace(&simulator, &proxied);
            config.database.url = format!("sqlite://{}", dir.path().join(name).display());
            let services = Services::start_in(
                &config,
                engine::Clock::Wall,
                &store::SharedPools::private(),
                &http,
            )
            .await
            .unwrap();
            let agents = services
                .engine
                .platform()
                .list_agents(&AgentFilter::default())
                .await
                .unwrap();
            assert!(!agents.is_empty());
            tenants.push(services);
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1, "connections opened");
        stop.cancel();
    }
}
