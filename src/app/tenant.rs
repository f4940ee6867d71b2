//! One contact-center tenant's services, as one value: its store and transition engine
//! (with the platform client, token cache and request budget inside), state sync, rules,
//! bulk jobs, analytics jobs, schedule book with automations and sweep, metric pollers,
//! live feed, webhook delivery and retention. [`Tenant::workers`] hands out its
//! background work under the one [`Worker`] contract.

use std::sync::Arc;
use std::time::Duration;

use super::schedule_work::ScheduleWork;
use super::services::Services;
use super::settings::live_settings;
use super::worker::Worker;
use crate::config::Config;
use crate::config::tenants::{TenantId, TenantSpec};
use crate::engine::{self, TransitionEngine};
use crate::{api, cxone, delivery, live, metrics_handle};

/// One tenant's services, built from the configuration; nothing runs until
/// [`Tenant::workers`] are started.
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// `v2` or `incontact`.
    pub dialect: &'static str,
    pub services: Services,
    dispatcher: Option<delivery::Dispatcher>,
    sync: Option<engine::sync::StateSync>,
    rules: engine::rules::RuleScheduler,
    pub bulk: engine::bulk::BulkJobs,
    pub analytics: engine::analytics::AnalyticsJobs,
    schedule_work: Option<ScheduleWork>,
    exception_threshold: Duration,
    /// `sync.interval_ms`, for `/readyz`'s view of the sync.
    sync_interval: Duration,
    /// The newest skill and queue figures: the metric pollers publish, the live feed
    /// and the API read.
    pub metric_board: engine::metrics::BoardSender,
    /// The live feed every wallboard reads.
    pub live: live::Live,
    /// The skill and queue pollers (`[live]`), when enabled.
    metric_pollers: Vec<engine::metrics::MetricPoller>,
    /// Prunes old records and publishes audit checkpoints.
    retention: engine::retention::Retention,
    /// The daemon lock of the tenant's database, when it took one.
    pub(super) lock: Option<crate::store::lock::DaemonLock>,
}

impl Tenant {
    /// Opens the tenant's database (applying migrations), connects its platform client
    /// and builds every service its configuration asks for, each reading `clock` where
    /// it judges or stamps time; registers the tenant's metrics. With `lock`, first takes
    /// the database's daemon lock (refused while another daemon serves it), held as long
    /// as the tenant. Works in the tenant's scope, like everything the tenant does (see
    /// [`crate::tasks`]).
    pub async fn build(
        spec: &TenantSpec,
        clock: engine::Clock,
        lock: bool,
    ) -> anyhow::Result<Tenant> {
        crate::telemetry::register_tenant(&spec.id);
        crate::tasks::in_tenant(&spec.id, Tenant::build_in_scope(spec, clock, lock)).await
    }

    async fn build_in_scope(
        spec: &TenantSpec,
        clock: engine::Clock,
        lock: bool,
    ) -> anyhow::Result<Tenant> {
        let config: &Config = &spec.config;
        let lock = match crate::store::lock::database_path(&config.database.url) {
            Some(path) if lock => Some(crate::store::lock::DaemonLock::acquire(&path, "start")?),
            _ => None,
        };
        let services = Services::start_with_clock(config, clock).await?;
        let endpoints = delivery::Endpoint::from_config(config);
        let dispatcher = (!endpoints.is_empty()).then(|| {
            delivery::Dispatcher::new(
                spec.id.clone(),
                services.store.clone(),
                services.http.clone(),
                endpoints,
                config.delivery.clone(),
            )
        });
        let sync = config.sync.enabled.then(|| {
            engine::sync::StateSync::new(
                services.store.clone(),
                services.engine.platform().clone(),
                (&config.sync).into(),
            )
            .with_in_flight(services.engine.agents_in_flight())
            .with_engine_clock(clock)
        });
        // The scheduler runs even without rules, so a SIGHUP can add some.
        let rules = config
            .rules()
            .map_err(|problems| anyhow::anyhow!("invalid rules: {}", problems.join("; ")))?;
        // Rules and bulk items leave agents state sync saw done already alone.
        let witness = sync.as_ref().map(|sync| {
            engine::SyncWitness::new(
                sync.status(),
                Duration::from_millis(config.sync.interval_ms),
            )
        });
        let mut firer = engine::rules::RuleFirer::new(
            services.store.clone(),
            services.engine.clone(),
            config.scheduler.concurrency,
            services.budget.per_minute_rate(),
        );
        if let Some(witness) = &witness {
            firer = firer.with_sync(witness.clone());
        }
        let rules = engine::rules::RuleScheduler::new(rules, Arc::new(firer)).with_clock(clock);
        let mut bulk = engine::bulk::BulkJobs::new(services.engine.clone(), (&config.bulk).into());
        if let Some(witness) = witness {
            bulk = bulk.with_sync(witness);
        }
        let schedule_work = ScheduleWork::from_config(config, &services.engine);
        let live = live::Live::new(
            spec.id.clone(),
            services.store.clone(),
            live_settings(config),
        );
        let (metric_board, _) = engine::metrics::board_channel();
        let metric_pollers = if config.live.enabled {
            engine::metrics::MetricPoller::both(
                services.engine.platform(),
                &services.store,
                &metric_board,
                &(&config.live).into(),
            )
            .into()
        } else {
            Vec::new()
        };
        let retention = engine::retention::Retention::new(
            services.store.clone(),
            &config.retention,
            &config.audit,
        )
        .with_rollups(config.compliance.exception_threshold);
        let analytics = engine::analytics::AnalyticsJobs::new(
            services.store.clone(),
            config.compliance.exception_threshold,
        )
        .with_max_per_actor(config.analytics.max_jobs_per_caller)
        .with_platform(cxone::Aggregations::new(
            services.engine.platform().clone(),
            config.analytics.extraction(),
        ));
        Ok(Tenant {
            id: spec.id.clone(),
            name: spec.name.clone(),
            dialect: config.cxone.dialect.as_str(),
            services,
            dispatcher,
            sync,
            rules,
            bulk,
            analytics,
            schedule_work,
            exception_threshold: config.compliance.exception_threshold,
            sync_interval: Duration::from_millis(config.sync.interval_ms),
            metric_board,
            live,
            metric_pollers,
            retention,
            lock,
        })
    }

    pub fn engine(&self) -> &Arc<TransitionEngine> {
        &self.services.engine
    }

    /// Replaces the rules of the running daemon (SIGHUP).
    pub fn rules(&self) -> engine::rules::RulesHandle {
        self.rules.handle()
    }

    /// What the HTTP API reads and drives of this tenant; `exports` are the process's
    /// downloads in progress.
    pub fn served(&self, exports: api::exports::Exports) -> api::tenancy::ServedTenant {
        api::tenancy::ServedTenant {
            id: self.id.clone(),
            name: self.name.clone(),
            dialect: self.dialect,
            state: self.api_state(exports),
            requests: tokio_util::task::TaskTracker::new(),
        }
    }

    fn api_state(&self, exports: api::exports::Exports) -> api::ApiState {
        api::ApiState {
            engine: self.services.engine.clone(),
            store: self.services.store.clone(),
            metrics: metrics_handle(),
            sync: self.sync.as_ref().map(|sync| sync.status()),
            sync_interval: self.sync_interval,
            bulk: self.bulk.clone(),
            exception_threshold: self.exception_threshold,
            live: self.live.clone(),
            board: self.metric_board.subscribe(),
            analytics: self.analytics.clone(),
            exports,
        }
    }

    /// Every background worker of the tenant, each working in the tenant's scope;
    /// webhook delivery lets POSTs in flight finish within `grace` once stopped.
    pub fn workers(self, grace: Duration) -> Vec<Worker> {
        let id = self.id.clone();
        self.unscoped_workers(grace)
            .into_iter()
            .map(|worker| worker.in_tenant(&id))
            .collect()
    }

    fn unscoped_workers(self, grace: Duration) -> Vec<Worker> {
        let mut workers = Vec::new();
        if let Some(dispatcher) = self.dispatcher {
            workers.push(Worker::new("webhook delivery", move |stop| {
                dispatcher.run(stop, grace)
            }));
        }
        let (live, board, bulk) = (self.live, self.metric_board.subscribe(), self.bulk.clone());
        workers.push(Worker::new("live feed", move |stop| {
            live.run(stop, board, Some(bulk))
        }));
        let sync_status = self.sync.as_ref().map(|sync| sync.status());
        if let Some(work) = self.schedule_work {
            workers.extend(work.workers(sync_status));
        }
        if let Some(sync) = self.sync {
            workers.push(Worker::new("state sync", move |stop| sync.run(stop)));
        }
        let rules = self.rules;
        workers.push(Worker::new("rule scheduler", move |stop| rules.run(stop)));
        let bulk = self.bulk;
        workers.push(Worker::new("bulk jobs", move |stop| bulk.run(stop)));
        for poller in self.metric_pollers {
            workers.push(Worker::new("metric poller", move |stop| poller.run(stop)));
        }
        let retention = self.retention;
        workers.push(Worker::new("retention", move |stop| retention.run(stop)));
        let analytics = self.analytics;
        workers.push(Worker::new("analytics jobs", move |stop| {
            analytics.run(stop)
        }));
        // Changes whose record failed after their platform call are recorded late.
        let engine = self.services.engine;
        workers.push(Worker::new("late records", move |stop| async move {
            engine.settle_intents_until(stop).await
        }));
        workers
    }
}
