//! The schedule-driven services wired from the configuration: the schedule book, the
//! automations and the compliance sweep, each a worker of its own.
//!
//! The book runs when the automations or the sweep do. The sweep needs state sync: it
//! judges the recorded states, which only the sync keeps current.

use std::sync::Arc;
use std::time::Duration;

use super::settings::sweep_settings;
use super::worker::Worker;
use crate::config::Config;
use crate::engine::TransitionEngine;
use crate::engine::automation::Automations;
use crate::engine::compliance::{ComplianceSweep, JudgingHandle};
use crate::engine::schedules::{BookSettings, ScheduleBook};
use crate::engine::sync::SyncStatus;

/// The services, ready to spawn.
pub struct ScheduleWork {
    pub book: Arc<ScheduleBook>,
    pub automations: Option<Arc<Automations>>,
    pub sweep: Option<Arc<ComplianceSweep>>,
    sync_interval: Duration,
}

impl ScheduleWork {
    /// What `config` asks for; `None` when neither automations nor the sweep run.
    /// The sweep judges with `judging`, the tenant's adherence rules.
    pub fn from_config(
        config: &Config,
        engine: &Arc<TransitionEngine>,
        judging: &JudgingHandle,
    ) -> Option<ScheduleWork> {
        let sweep_wanted = config.compliance.enabled && config.sync.enabled;
        if config.compliance.enabled && !config.sync.enabled {
            tracing::info!(
                "compliance.enabled needs sync.enabled (the sweep judges the recorded \
                 states, which only state sync keeps current); the sweep does not run"
            );
        }
        if !sweep_wanted && !config.automation.enabled {
            return None;
        }
        let book = Arc::new(
            ScheduleBook::new(
                engine.store().clone(),
                engine.platform().clone(),
                BookSettings {
                    refresh_interval: config.schedules.refresh_interval,
                    agents: (&config.sync).into(),
                },
            )
            .with_clock(engine.clock())
            .with_max_age(config.schedules.max_age)
            .with_wanted(engine.wanted_agents())
            .with_newest(engine.newest_shifts())
            .with_lookups(engine.lookups()),
        );
        let automations = config.automation.enabled.then(|| {
            Arc::new(Automations::new(
                book.clone(),
                engine.clone(),
                (&config.automation).into(),
            ))
        });
        let sweep = sweep_wanted.then(|| {
            Arc::new(ComplianceSweep::new(
                book.clone(),
                engine.clone(),
                sweep_settings(&config.compliance, judging),
            ))
        });
        Some(ScheduleWork {
            book,
            automations,
            sweep,
            sync_interval: Duration::from_millis(config.sync.interval_ms),
        })
    }

    /// Each service as a worker; `sync` is the state sync's status when it runs.
    pub fn workers(self, sync: Option<Arc<SyncStatus>>) -> Vec<Worker> {
        let book = self.book;
        let mut workers = vec![Worker::new("schedule book", move |stop| book.run(stop))];
        if let Some(automations) = self.automations {
            let sync = sync.clone();
            workers.push(Worker::new("schedule automations", move |stop| {
                automations.run(stop, sync)
            }));
        }
        if let Some(sweep) = self.sweep {
            let sync = sync.map(|status| (status, self.sync_interval));
            workers.push(Worker::new("compliance sweep", move |stop| {
                sweep.run(stop, sync)
            }));
        }
        workers
    }
}
