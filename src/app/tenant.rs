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

/// This instance among several (`[ha]`): its settings and its keeper of leases.
pub type Ha<'a> = (
    &'a crate::cluster::leadership::LeadershipSettings,
    &'a crate::cluster::leadership::LeaseKeeper,
);

/// One tenant's services, built from the configuration; nothing runs until its workers
/// are started. What every instance serving the tenant runs ([`Tenant::every_instance`])
/// lives as long as the tenant; the work of its leader ([`Tenant::leader_work`]) is
/// built afresh each time the instance starts to lead, from the configuration and what
/// the tenant keeps across terms: the rules a SIGHUP gave, the sync's status, the bulk
/// and analytics jobs the API hands work to.
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// `v2` or `incontact`.
    pub dialect: &'static str,
    pub services: Services,
    /// The tenant's resolved configuration, which the leader's work is built from.
    config: Arc<Config>,
    clock: engine::Clock,
    rules: engine::rules::RulesHandle,
    /// What state sync last reported, when it runs (`sync.enabled`).
    sync_status: Option<Arc<engine::sync::SyncStatus>>,
    pub bulk: engine::bulk::BulkJobs,
    /// Changes waiting for busy agents: the API cancels them, the leader's worker
    /// carries them out.
    pub deferred: engine::deferred::DeferredChanges,
    pub analytics: engine::analytics::AnalyticsJobs,
    /// The adherence rules in force: the sweep, reports, analytics and rollups judge
    /// with them, and a SIGHUP replaces them.
    judging: engine::compliance::JudgingHandle,
    /// `sync.interval_ms`, for `/readyz`'s view of the sync.
    sync_interval: Duration,
    /// The newest skill and queue figures: the metric pollers publish, the live feed
    /// and the API read.
    pub metric_board: engine::metrics::BoardSender,
    /// The live feed every wallboard reads.
    pub live: live::Live,
    /// The daemon lock of the tenant's database, when it took one.
    pub(super) lock: Option<crate::store::lock::DaemonLock>,
}

impl Tenant {
    /// Opens the tenant's database (applying migrations), connects its platform client
    /// and builds every service its configuration asks for, each reading `clock` where
    /// it judges or stamps time; registers the tenant's metrics. With `lock`, first takes
    /// the database's daemon lock (refused while another daemon serves it), held as long
    /// as the tenant. On PostgreSQL the tenant works through the instance's `pools`; its
    /// platform calls and webhooks go through the instance's `http` client.
    /// Works in the tenant's scope, like everything the tenant does (see
    /// [`crate::tasks`]).
    pub async fn build(
        spec: &TenantSpec,
        clock: engine::Clock,
        lock: bool,
        pools: &crate::store::SharedPools,
        http: &reqwest::Client,
    ) -> anyhow::Result<Tenant> {
        crate::telemetry::register_tenant(&spec.id);
        crate::tasks::in_tenant(
            &spec.id,
            Tenant::build_in_scope(spec, clock, lock, pools, http),
        )
        .await
    }

    async fn build_in_scope(
        spec: &TenantSpec,
        clock: engine::Clock,
        lock: bool,
        pools: &crate::store::SharedPools,
        http: &reqwest::Client,
    ) -> anyhow::Result<Tenant> {
        let config: &Config = &spec.config;
        let url = &config.database.url;
        let lock = match crate::store::lock::database_path(url) {
            Some(path) if lock => Some(crate::store::lock::DaemonLock::acquire(&path, "start")?),
            None if lock
                && crate::store::Backend::of_url(url) == crate::store::Backend::Postgres =>
            {
                Some(
                    crate::store::lock::DaemonLock::serve_postgres(pools, url, config.ha.is_some())
                        .await?,
                )
            }
            _ => None,
        };
        let services = Services::start_in(config, clock, pools, http).await?;
        if lock.is_some() && config.ha.is_none() {
            // No other daemon serves the database while this one holds its lock.
            services.engine.serve_alone().await?;
        }
        // The scheduler runs even without rules, so a SIGHUP can add some.
        let rules = config
            .rules()
            .map_err(|problems| anyhow::anyhow!("invalid rules: {}", problems.join("; ")))?;
        let judging = engine::compliance::JudgingHandle::new(config.compliance.judging().map_err(
            |problems| anyhow::anyhow!("invalid adherence rules: {}", problems.join("; ")),
        )?);
        let sync_status = config.sync.enabled.then(Arc::default);
        let mut bulk = engine::bulk::BulkJobs::new(services.engine.clone(), (&config.bulk).into());
        if let Some(witness) = witness(config, &sync_status) {
            bulk = bulk.with_sync(witness);
        }
        let deferred = engine::deferred::DeferredChanges::new(
            services.engine.clone(),
            config.deferred.defer_for,
        );
        let live = live::Live::new(
            spec.id.clone(),
            services.store.clone(),
            live_settings(config),
        );
        let (metric_board, _) = engine::metrics::board_channel();
        let analytics =
            engine::analytics::AnalyticsJobs::new(services.store.clone(), judging.clone())
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
            config: Arc::new(config.clone()),
            clock,
            rules: engine::rules::RulesHandle::new(rules),
            sync_status,
            bulk,
            deferred,
            analytics,
            judging,
            sync_interval: Duration::from_millis(config.sync.interval_ms),
            metric_board,
            live,
            lock,
        })
    }

    pub fn engine(&self) -> &Arc<TransitionEngine> {
        &self.services.engine
    }

    /// Replaces the rules of the running daemon (SIGHUP).
    pub fn rules(&self) -> engine::rules::RulesHandle {
        self.rules.clone()
    }

    /// Replaces the adherence rules of the running daemon (SIGHUP).
    pub fn judging(&self) -> engine::compliance::JudgingHandle {
        self.judging.clone()
    }

    /// What the HTTP API reads and drives of this tenant; `exports` are the process's
    /// downloads in progress, `ha` this instance among several and its keeper of leases
    /// (its followers hand the tenant's changes to its leader).
    pub fn served(
        &self,
        exports: api::exports::Exports,
        ha: Option<Ha<'_>>,
    ) -> api::tenancy::ServedTenant {
        api::tenancy::ServedTenant {
            id: self.id.clone(),
            name: self.name.clone(),
            dialect: self.dialect,
            state: self.api_state(exports, ha),
            requests: tokio_util::task::TaskTracker::new(),
        }
    }

    fn api_state(&self, exports: api::exports::Exports, ha: Option<Ha<'_>>) -> api::ApiState {
        api::ApiState {
            engine: self.services.engine.clone(),
            store: self.services.store.clone(),
            metrics: metrics_handle(),
            sync: self.sync_status.clone(),
            sync_interval: self.sync_interval,
            bulk: self.bulk.clone(),
            judging: self.judging.clone(),
            deferred: self.deferred.clone(),
            deferrals: api::deferrals::DeferralLimit::new(
                self.config.deferred.max_waiting_per_caller,
            ),
            live: self.live.clone(),
            board: self.metric_board.subscribe(),
            analytics: self.analytics.clone(),
            exports,
            forwarding: ha.map(|(ha, keeper)| api::forward::Forwarding {
                tenant: self.id.clone(),
                instance: ha.instance.clone(),
                http: self.services.http.clone(),
                leader: Arc::new(keeper.known_leader()),
            }),
        }
    }

    /// Every background worker of the tenant's sole instance (the leader's work and
    /// what every instance runs), each working in the tenant's scope; webhook delivery
    /// lets POSTs in flight finish within `grace` once stopped.
    pub fn workers(self, grace: Duration) -> Vec<Worker> {
        let mut workers = self.every_instance();
        workers.extend(self.leader_work(grace));
        workers
    }

    /// What every instance serving the tenant runs, leader or not: the live feed, read
    /// from the outbox (each in the tenant's scope).
    pub fn every_instance(&self) -> Vec<Worker> {
        let (live, board, bulk) = (
            self.live.clone(),
            self.metric_board.clone(),
            self.bulk.clone(),
        );
        let adherence = live::AdherenceJudge {
            judging: self.judging.clone(),
            clock: self.clock,
        };
        self.scoped(vec![Worker::new("live feed", move |stop| {
            live.run(stop, board, Some(bulk), Some(adherence))
        })])
    }

    /// The work of the tenant's leader, built afresh (each in the tenant's scope): every
    /// worker that calls the platform or writes the tenant's records.
    pub fn leader_work(&self, grace: Duration) -> Vec<Worker> {
        let config = &*self.config;
        let services = &self.services;
        let mut workers = Vec::new();
        let endpoints = delivery::Endpoint::from_config(config);
        if !endpoints.is_empty() {
            let dispatcher = delivery::Dispatcher::new(
                self.id.clone(),
                services.store.clone(),
                services.http.clone(),
                endpoints,
                config.delivery.clone(),
            );
            workers.push(Worker::new("webhook delivery", move |stop| {
                dispatcher.run(stop, grace)
            }));
        }
        if let Some(work) = ScheduleWork::from_config(config, &services.engine, &self.judging) {
            workers.extend(work.workers(self.sync_status.clone()));
        }
        if let Some(status) = &self.sync_status {
            let sync = engine::sync::StateSync::new(
                services.store.clone(),
                services.engine.platform().clone(),
                (&config.sync).into(),
            )
            .with_status(status.clone())
            .with_in_flight(services.engine.agents_in_flight())
            .with_engine_clock(self.clock);
            workers.push(Worker::new("state sync", move |stop| sync.run(stop)));
        }
        // Rules and bulk items leave agents state sync saw done already alone.
        let mut firer = engine::rules::RuleFirer::new(
            services.store.clone(),
            services.engine.clone(),
            config.scheduler.concurrency,
            services.budget.per_minute_rate(),
        )
        .with_defer_for(config.deferred.defer_for);
        if let Some(witness) = witness(config, &self.sync_status) {
            firer = firer.with_sync(witness);
        }
        let rules = engine::rules::RuleScheduler::with_handle(self.rules.clone(), Arc::new(firer))
            .with_clock(self.clock);
        workers.push(Worker::new("rule scheduler", move |stop| rules.run(stop)));
        let bulk = self.bulk.clone();
        workers.push(Worker::new("bulk jobs", move |stop| bulk.run(stop)));
        // Changes waiting for busy agents: carried out once state sync records them free.
        let deferred = self.deferred.clone();
        workers.push(Worker::new("deferred changes", move |stop| {
            deferred.run(stop)
        }));
        if config.live.enabled {
            let pollers: Vec<_> = engine::metrics::MetricPoller::both(
                services.engine.platform(),
                &services.store,
                &self.metric_board,
                &(&config.live).into(),
            )
            .into();
            for poller in pollers {
                workers.push(Worker::new("metric poller", move |stop| poller.run(stop)));
            }
        }
        let retention = engine::retention::Retention::new(
            services.store.clone(),
            &config.retention,
            &config.audit,
        )
        .with_rollups(self.judging.clone());
        workers.push(Worker::new("retention", move |stop| retention.run(stop)));
        let analytics = self.analytics.clone();
        workers.push(Worker::new("analytics jobs", move |stop| {
            analytics.run(stop)
        }));
        // Changes whose record failed after their platform call are recorded late.
        let engine = services.engine.clone();
        workers.push(Worker::new("late records", move |stop| async move {
            engine.settle_intents_until(stop).await
        }));
        self.scoped(workers)
    }

    fn scoped(&self, workers: Vec<Worker>) -> Vec<Worker> {
        workers
            .into_iter()
            .map(|worker| worker.in_tenant(&self.id))
            .collect()
    }
}

/// What rules and bulk items consult to leave alone agents state sync saw done already,
/// when the sync runs.
fn witness(
    config: &Config,
    status: &Option<Arc<engine::sync::SyncStatus>>,
) -> Option<engine::SyncWitness> {
    status.as_ref().map(|status| {
        engine::SyncWitness::new(
            status.clone(),
            Duration::from_millis(config.sync.interval_ms),
        )
    })
}
