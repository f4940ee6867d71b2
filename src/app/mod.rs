//! The daemon: the services of the contact center, its workers and the HTTP API, built
//! from the configuration and run until stopped.

mod schedule_work;
mod services;
mod simulate;

pub use services::{Services, http_client, incontact_settings, platform};
pub use simulate::start_simulator;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::engine::{self, TransitionEngine};
use crate::store::Store;
use crate::{api, cxone, delivery, live, metrics_handle};

/// The live feed's settings: `[live]`, and the managed agents as state sync keeps them.
/// With `live.enabled` off the feed makes no platform call (no roster either).
fn live_settings(config: &Config) -> live::Settings {
    live::Settings {
        service_level_good: config.live.service_level_good,
        service_level_warning: config.live.service_level_warning,
        skill_interval: config.live.skill_interval,
        queue_interval: config.live.queue_interval,
        teams: config.sync.teams.clone(),
        agents: config.sync.agents.clone(),
        roster: config.live.enabled,
        queues_are_skills: config.cxone.dialect == config::Dialect::Incontact,
        max_streams_per_caller: config.live.max_streams_per_caller,
        max_tickets_per_caller: config.live.max_tickets_per_caller,
        ..live::Settings::default()
    }
}

/// The daemon: the HTTP API over the services, ready to run.
pub struct App {
    listener: TcpListener,
    services: Services,
    dispatcher: Option<delivery::Dispatcher>,
    sync: Option<engine::sync::StateSync>,
    rules: engine::rules::RuleScheduler,
    bulk: engine::bulk::BulkJobs,
    analytics: engine::analytics::AnalyticsJobs,
    schedule_work: Option<schedule_work::ScheduleWork>,
    exception_threshold: Duration,
    /// `sync.interval_ms`, for `/readyz`'s view of the sync.
    sync_interval: Duration,
    tokens: api::auth::ApiTokens,
    shutdown_timeout: Duration,
    /// `[server]`'s limits on connections, and on each request.
    serving: api::serve::Settings,
    limits: api::Limits,
    /// The newest skill and queue figures: the metric pollers publish, the live feed
    /// and the API read.
    metric_board: engine::metrics::BoardSender,
    /// The live feed every wallboard reads.
    live: live::Live,
    /// The skill and queue pollers (`[live]`), when enabled.
    metric_pollers: Vec<engine::metrics::MetricPoller>,
    /// Prunes old records and publishes audit checkpoints.
    retention: engine::retention::Retention,
    /// Downloads in progress per caller, and their limits (`[exports]`).
    exports: api::exports::Exports,
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
        let services = Services::start_with_clock(config, clock).await?;
        let tokens = api::auth::ApiTokens::from_config(&config.api_tokens)?;
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
                 promises is the only way in (README \"TLS\")"
            ),
            None => {}
        }
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (server.listen = {configured})"))?;
        let endpoints = delivery::Endpoint::from_config(config);
        let dispatcher = (!endpoints.is_empty()).then(|| {
            delivery::Dispatcher::new(
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
        let schedule_work = schedule_work::ScheduleWork::from_config(config, &services.engine);
        let live = live::Live::new(services.store.clone(), live_settings(config));
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
        Ok(App {
            listener,
            services,
            dispatcher,
            sync,
            rules,
            bulk,
            analytics,
            schedule_work,
            exception_threshold: config.compliance.exception_threshold,
            sync_interval: Duration::from_millis(config.sync.interval_ms),
            tokens,
            shutdown_timeout: config.server.shutdown_timeout,
            serving: api::serve::Settings::from_config(config),
            limits: api::Limits::from_config(&config.server),
            metric_board,
            metric_pollers,
            retention,
            live,
            exports: api::exports::Exports::new(&config.exports),
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

    pub fn engine(&self) -> Arc<TransitionEngine> {
        self.services.engine.clone()
    }

    pub fn store(&self) -> Store {
        self.services.store.clone()
    }

    /// Replaces the rules of the running daemon (SIGHUP).
    pub fn rules(&self) -> engine::rules::RulesHandle {
        self.rules.handle()
    }

    pub fn bulk(&self) -> engine::bulk::BulkJobs {
        self.bulk.clone()
    }

    /// The live feed (snapshot, events, tickets).
    pub fn live(&self) -> live::Live {
        self.live.clone()
    }

    /// The analytics jobs (tests drive them with `run_pending`).
    pub fn analytics(&self) -> engine::analytics::AnalyticsJobs {
        self.analytics.clone()
    }

    /// The newest skill and queue figures, updated by the metric pollers.
    pub fn metric_board(&self) -> engine::metrics::BoardReceiver {
        self.metric_board.subscribe()
    }

    /// Serves (and delivers webhooks, syncs states, fires rules and runs bulk jobs) until
    /// `shutdown` is cancelled, then lets in-flight requests and webhook POSTs finish
    /// (each within `server.shutdown_timeout`) and the agent changes in flight complete,
    /// and closes the database. Rule firings and bulk items not started yet are resumed
    /// at the next start.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let grace = self.shutdown_timeout;
        let delivery = self
            .dispatcher
            .map(|dispatcher| tokio::spawn(dispatcher.run(shutdown.clone(), grace)));
        let state = api::ApiState {
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
            exports: self.exports.clone(),
        };
        let live = Some(tokio::spawn(self.live.clone().run(
            shutdown.clone(),
            self.metric_board.subscribe(),
            Some(self.bulk.clone()),
        )));
        let scheduled = self.schedule_work.map_or_else(Vec::new, |work| {
            let status = self.sync.as_ref().map(|sync| sync.status());
            work.spawn(shutdown.clone(), status)
        });
        let sync = self
            .sync
            .map(|sync| tokio::spawn(sync.run(shutdown.clone())));
        let rules = Some(tokio::spawn(self.rules.run(shutdown.clone())));
        let bulk = Some(tokio::spawn(self.bulk.run(shutdown.clone())));
        let pollers: Vec<_> = self
            .metric_pollers
            .into_iter()
            .map(|poller| ("metric poller", tokio::spawn(poller.run(shutdown.clone()))))
            .collect();
        let retention = Some(tokio::spawn(self.retention.run(shutdown.clone())));
        let analytics = Some(tokio::spawn(self.analytics.run(shutdown.clone())));
        // Changes whose record failed after their platform call are recorded late.
        let intents = Some(tokio::spawn({
            let engine = self.services.engine.clone();
            let shutdown = shutdown.clone();
            async move { engine.settle_intents_until(shutdown).await }
        }));
        let address = self.listener.local_addr()?;
        tracing::info!(%address, "wfmd is serving");
        let router = api::router(state, self.tokens, &self.limits);
        let server = api::serve::serve(self.listener, router, self.serving, shutdown.clone());
        let mut server = std::pin::pin!(server);
        tokio::select! {
            () = &mut server => {}
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(self.shutdown_timeout).await;
            } => {
                tracing::warn!(
                    timeout = ?self.shutdown_timeout,
                    "in-flight requests did not finish in time; stopping anyway"
                );
            }
        }
        let tasks = [
            ("webhook delivery", delivery),
            ("state sync", sync),
            ("rule scheduler", rules),
            ("bulk jobs", bulk),
            ("live feed", live),
            ("retention", retention),
            ("analytics jobs", analytics),
            ("late records", intents),
        ]
        .into_iter()
        .chain(scheduled.into_iter().map(|(name, task)| (name, Some(task))))
        .chain(pollers.into_iter().map(|(name, task)| (name, Some(task))));
        for (name, task) in tasks {
            if let Some(task) = task
                && let Err(e) = task.await
            {
                tracing::error!(error = %e, "{name} ended abnormally");
            }
        }
        self.services.store.close().await;
        tracing::info!("wfmd stopped");
        Ok(())
    }
}
