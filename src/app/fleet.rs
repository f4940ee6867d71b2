//! The tenants at work: each started under a stop token of its own (a child of the
//! daemon's), so a reload can stop one tenant, or start a new one, while the others
//! and the HTTP API carry on.
//!
//! A reload is the re-read configuration's tenants, applied in three steps, each
//! tenant on its own:
//! - a tenant still configured keeps running and takes its new rules and adherence
//!   rules (other settings of a running tenant need a restart, as before several
//!   tenants);
//! - a tenant new to the configuration is built (database opened and migrated, platform
//!   client made) and started; one that cannot be is logged, and the others go on;
//! - a tenant gone from the configuration is first taken out of the API's routes, then
//!   stopped as the daemon stops (its webhook POSTs and agent changes in flight finish)
//!   and its database closed. Its data stays where it was.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::tenant::Tenant;
use super::worker::Running;
use crate::api;
use crate::cluster::leadership::LeaseKeeper;
use crate::config::tenants::TenantSpec;
use crate::domain::tenant::TenantId;
use crate::engine::compliance::JudgingHandle;
use crate::engine::{self, rules::RulesHandle};
use crate::store::Store;

/// What starting a tenant needs besides its configuration.
pub(super) struct Launch {
    pub clock: engine::Clock,
    /// Whether each tenant takes its database's daemon lock (`wfmd serve` does; tests
    /// that build the daemon in-process need not).
    pub lock_databases: bool,
    /// The instance's PostgreSQL pools, which a tenant added on a reload joins.
    pub pools: crate::store::SharedPools,
    /// The instance's HTTP client, which a tenant added on a reload shares.
    pub http: reqwest::Client,
    /// How long webhook POSTs in flight may take to finish when a tenant stops.
    pub grace: Duration,
    /// The process's downloads in progress.
    pub exports: api::exports::Exports,
    /// The daemon's stop token; each tenant's is a child of it.
    pub shutdown: CancellationToken,
    /// This instance among several (`[ha]`): each tenant's leader work runs only while
    /// it leads the tenant (see [`super::leading`]). `None`: the sole instance.
    pub ha: Option<crate::cluster::leadership::LeadershipSettings>,
}

/// The keeper of this instance's leases (`[ha]`), and its task.
struct Keeping {
    keeper: LeaseKeeper,
    running: tokio::task::JoinHandle<()>,
}

/// One tenant, started.
struct Started {
    id: TenantId,
    served: api::tenancy::ServedTenant,
    rules: RulesHandle,
    judging: JudgingHandle,
    store: Store,
    stop: CancellationToken,
    running: Running,
    /// Held until the tenant's database is closed.
    _lock: Option<crate::store::lock::DaemonLock>,
}

impl Started {
    fn start(mut tenant: Tenant, launch: &Launch, keeping: Option<&Keeping>) -> Started {
        let stop = launch.shutdown.child_token();
        let lock = tenant.lock.take();
        if launch.ha.is_some() {
            // A follower until its lease says otherwise, before anything can write: a
            // sole instance's writes prove no term.
            tenant
                .services
                .store
                .set_role(crate::store::InstanceRole::Follower);
        }
        let ha = launch.ha.as_ref().zip(keeping.map(|k| &k.keeper));
        let served = tenant.served(launch.exports.clone(), ha);
        let (id, rules, judging, store) = (
            tenant.id.clone(),
            tenant.rules(),
            tenant.judging(),
            tenant.services.store.clone(),
        );
        let workers = match keeping {
            None => tenant.workers(launch.grace),
            Some(keeping) => {
                let mut workers = tenant.every_instance();
                workers.push(super::leading::leading(
                    std::sync::Arc::new(tenant),
                    keeping.keeper.clone(),
                    launch.grace,
                ));
                workers
            }
        };
        let running = Running::start(workers, &stop);
        Started {
            id,
            served,
            rules,
            judging,
            store,
            running,
            stop,
            _lock: lock,
        }
    }

    /// Stops the tenant's workers and waits for its requests under way (each within
    /// `grace`), then closes its database.
    async fn finish(self, grace: Duration) {
        self.stop.cancel();
        self.running.join(grace).await;
        // Its requests under way finish first (a feed's stream ended with the feed,
        // above): a change answered after its database closed would go unrecorded.
        let requests = &self.served.requests;
        requests.close();
        if !requests.is_empty() {
            tracing::info!(
                tenant = %self.id,
                requests = requests.len(),
                "waiting for the tenant's requests under way"
            );
        }
        if tokio::time::timeout(grace, requests.wait()).await.is_err() {
            tracing::warn!(
                tenant = %self.id,
                ?grace,
                "requests still under way when the tenant's database closes"
            );
        }
        self.store.close().await;
    }
}

/// Every tenant the daemon runs, in configuration order.
pub(super) struct Fleet {
    started: Vec<Started>,
    launch: Launch,
    keeping: Option<Keeping>,
}

impl Fleet {
    /// Starts every tenant's workers.
    pub fn start(tenants: Vec<Tenant>, launch: Launch) -> Fleet {
        // One keeper of leases for every tenant, told as soon as the daemon stops.
        let keeping = launch.ha.clone().map(|ha| {
            let (keeper, running) = LeaseKeeper::start(ha, launch.shutdown.clone());
            Keeping { keeper, running }
        });
        Fleet {
            started: tenants
                .into_iter()
                .map(|tenant| Started::start(tenant, &launch, keeping.as_ref()))
                .collect(),
            launch,
            keeping,
        }
    }

    /// What the API serves of each tenant.
    pub fn served(&self) -> Vec<api::tenancy::ServedTenant> {
        self.started.iter().map(|t| t.served.clone()).collect()
    }

    /// Applies a re-read configuration's `specs` (see the module's doc), then serves
    /// the new set of tenants through `routing`.
    pub async fn reload(&mut self, specs: Vec<TenantSpec>, routing: api::tenancy::Routing) {
        let mut rules = Vec::new();
        for spec in &specs {
            let judging = spec.config.compliance.judging();
            match spec.config.rules().and_then(|new| Ok((new, judging?))) {
                Ok(new) => rules.push(new),
                Err(problems) => {
                    tracing::error!(
                        tenant = %spec.id,
                        "reload: the new configuration is refused and the tenants already \
                         running carry on: {}",
                        problems.join("; ")
                    );
                    return;
                }
            }
        }
        let mut previous: Vec<Started> = std::mem::take(&mut self.started);
        for (spec, (new_rules, judging)) in specs.into_iter().zip(rules) {
            if let Some(at) = previous.iter().position(|t| t.id == spec.id) {
                let kept = previous.remove(at);
                tracing::info!(
                    tenant = %spec.id,
                    rules = new_rules.len(),
                    adherence_rules = judging.rules.len(),
                    adherence_version = judging.version.as_deref().unwrap_or("none"),
                    "reload: rules re-read"
                );
                kept.rules.replace(new_rules);
                kept.judging.replace(judging);
                self.started.push(kept);
                continue;
            }
            let built = Tenant::build(
                &spec,
                self.launch.clock,
                self.launch.lock_databases,
                &self.launch.pools,
                &self.launch.http,
            )
            .await;
            match built {
                Ok(tenant) => {
                    tracing::info!(tenant = %spec.id, "reload: tenant added and started");
                    let started = Started::start(tenant, &self.launch, self.keeping.as_ref());
                    self.started.push(started);
                }
                Err(error) => tracing::error!(
                    tenant = %spec.id,
                    "reload: the new tenant cannot start, the others carry on: {error:#}"
                ),
            }
        }
        if self.started.is_empty() {
            tracing::error!(
                "reload: no tenant of the new configuration could start; the running ones \
                 carry on"
            );
            self.started = previous;
            return;
        }
        // Out of the routes before its workers stop: no new request reaches a stopping
        // tenant (one under way finishes on the state it holds before the database closes).
        routing.serve(&self.served());
        for removed in previous {
            let id = removed.id.clone();
            removed.finish(self.launch.grace).await;
            tracing::info!(tenant = %id, "reload: tenant removed and stopped; its data stays");
        }
    }

    /// Waits for every tenant's workers to end (after the daemon's stop token was
    /// cancelled) and closes their databases.
    pub async fn finish(self) {
        // Together, so the grace is the slowest tenant's, not the sum of all.
        let grace = self.launch.grace;
        futures::future::join_all(self.started.into_iter().map(|t| t.finish(grace))).await;
        // Every tenant has left it: it gives up what is left and ends its session.
        if let Some(Keeping { keeper, running }) = self.keeping {
            drop(keeper);
            if tokio::time::timeout(grace, running).await.is_err() {
                tracing::warn!("the keeper of leases did not end in time");
            }
        }
    }
}
