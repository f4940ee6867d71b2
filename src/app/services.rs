//! The services every command needs: the process's HTTP client, the platform client the
//! configuration describes, the store and the transition engine.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::{self, Config};
use crate::cxone::{self, Budget, ClientSettings, ContactCenter, RetryPolicy, V2Client};
use crate::engine::{self, TransitionEngine};
use crate::store::{self, Store};

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
        .pool_idle_timeout(Duration::from_secs(90))
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
        Services::start_in(config, clock, &store::SharedPools::private()).await
    }

    /// [`Services::start_with_clock`] for a tenant of an instance, whose PostgreSQL
    /// connections are the instance's `pools`.
    pub async fn start_in(
        config: &Config,
        clock: engine::Clock,
        pools: &store::SharedPools,
    ) -> anyhow::Result<Services> {
        let audit_key = config.audit.key().map(store::audit::AuditKey::new);
        let store = Store::open_in(&config.database.url, audit_key, pools).await?;
        let budget = Arc::new(
            Budget::per_minute(config.call_budget_per_minute())
                .with_background_share(config.cxone.background_share)
                .with_interactive_reserve(config.cxone.interactive_reserve),
        );
        let http = http_client()?;
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
