//! Supervisors' bulk jobs: one state change for many agents, resumable after a crash.
//!
//! **Accepting** a job checks it (agents or a team, at most [`MAX_AGENTS`], every agent
//! known to the platform: its agent list is fetched once and reused for
//! `bulk.agent_list_ttl_ms`), then writes the job, all its items and the audit entry in
//! one transaction before the caller is answered. A job's idempotency key returns the
//! job it first created.
//!
//! **Running** ([`BulkJobs::run`], started by `App`) sends every item through
//! [`TransitionEngine::change`] with origin `bulk`, at most `bulk.concurrency` items
//! in flight over all jobs; the platform client paces the calls under the shared
//! request budget. Compliance applies per agent: a refused agent is a rejected item, not
//! a failed job. Each item's change carries the idempotency key `bulk:{job}:{agent}`, so
//! after a `kill -9` the unfinished jobs resume where they stood: an agent whose change
//! was recorded but whose item was not is answered from the stored attempt, and an item
//! that was in flight (the platform may have changed the agent, the record may be lost)
//! is resumed ([`Change::resuming`]): a change the platform already shows is recorded
//! without a second call. No agent is changed twice.
//!
//! An item whose agent state sync saw in the target state and reason at its last poll,
//! with nothing commanded since, is settled `unchanged` without a platform call (see
//! [`Change::witnessed_by`]); an item resumed after a crash
//! always asks the platform.
//!
//! **Cancelling** marks the items not taken yet as cancelled; those in flight finish.
//! The job's final status (`completed`, or `cancelled` when cancelling was asked for),
//! its audit entry and its `bulk.completed` event are written in the transaction that
//! settles its last item.
//!
//! **Reverting** a finished job is a new job that puts every agent the job moved back
//! to the state and reason it had before, as recorded: the state the change left (its
//! attempt) and the reason of the interval it closed (an observed state has none; the
//! state's default reason is sent). An agent whose earlier state is unknown, or was
//! observed-only (`ON_CONTACT`, `ACW`), is an item that failed from the start, saying
//! why. The revert goes through the engine like any change, so compliance applies.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use super::deferred::{BulkItem, Defer};
use super::jobs::{BulkJobView, finish_if_done, view};
use super::{
    Change, Changed, EngineError, Outcome, SyncWitness, TransitionEngine, TransitionRequest,
};
use crate::cxone::{Agent, AgentFilter, CxoneError, Lane, in_lane};
use crate::domain::{AgentState, Origin};
use crate::store::audit::{self, NewEntry};
use crate::store::jobs::{self, BulkJobRow, ItemRow, NewItem, NewJob, Settlement};
use crate::store::roster::{self, RosterEntry};
use crate::store::{Store, from_ms, to_ms};

mod cancel;
mod revert;
mod runner;
mod settle;
mod submit;

use settle::Settled;
use submit::{new_job_id, request_hash};

/// The most agents one job may have.
pub const MAX_AGENTS: usize = 10_000;

/// How often the runner looks again while a job is unfinished (items of it may wait
/// for busy agents).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// How often it looks when no job is unfinished. Jobs are announced by
/// [`BulkJobs::submit`] in the same process (a job asked of another instance is
/// forwarded to the tenant's leader, which submits it), so this only bounds a lost
/// wake-up; at rest a short poll was a read a tenant made every few seconds for
/// nothing, thousands a minute across a fleet.
const QUIET_POLL: Duration = Duration::from_secs(60);

/// How long the runner waits after a database failure before trying again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// How the runner is set up (from `[bulk]`).
#[derive(Debug, Clone)]
pub struct BulkSettings {
    pub concurrency: usize,
    pub agent_list_ttl: Duration,
}

/// Which agents a job is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkSelector {
    Agents(Vec<String>),
    /// A team id (`t_1`) or team name (`Billing`, any letter case).
    Team(String),
}

/// A job someone asked for.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub selector: BulkSelector,
    pub target: AgentState,
    /// The reason code to send; the target state's default when `None`.
    pub reason: Option<String>,
    /// Who asked, for the audit log and every item's change.
    pub actor: String,
    pub idempotency_key: Option<String>,
    /// `when_busy = "defer"`: how long an item's change waits for a busy agent (see
    /// [`super::deferred`]); `None`: `reject`.
    pub defer_for: Option<Duration>,
}

/// A job that exists after the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub job_id: String,
    /// False when an earlier job with the same idempotency key is being returned.
    pub created: bool,
    pub total: usize,
}

/// Why a job was not accepted (or not found, cancelled or reverted).
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("{detail}")]
    Invalid {
        field: &'static str,
        detail: String,
        /// The offending values under a name (`unknown_agents`, `duplicate_agents`),
        /// when there are several.
        values: Option<(&'static str, Vec<String>)>,
    },
    #[error("no bulk job `{0}`")]
    NotFound(String),
    #[error("bulk job `{id}` is {status}")]
    Conflict { id: String, status: String },
    #[error("bulk job `{0}` moved no agent, so there is nothing to revert")]
    NothingToRevert(String),
    #[error("idempotency key `{0}` was already used for a different bulk job request")]
    IdempotencyKeyReused(String),
    #[error("cannot list the platform's agents: {0}")]
    Platform(#[from] CxoneError),
    #[error("the database failed: {0}")]
    Store(#[from] sqlx::Error),
}

impl BulkError {
    fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        BulkError::Invalid {
            field,
            detail: detail.into(),
            values: None,
        }
    }
}

/// What a revert item stores as the target of an agent whose earlier state is unknown
/// (the item is settled as failed at once and never runs).
const UNKNOWN_STATE: &str = "UNKNOWN";

/// Accepts, runs, cancels and reverts bulk jobs. Cheap to clone.
#[derive(Clone)]
pub struct BulkJobs {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    engine: Arc<TransitionEngine>,
    /// Items in flight over every job.
    permits: Semaphore,
    concurrency: usize,
    /// The platform's agent list and when it was fetched. A cell rather than a cache
    /// (such as the lookups' moka cache): one value, and a cache's own bookkeeping
    /// weighs about 65 KB a tenant. Its lock is held through a fetch, so callers at
    /// once share one.
    directory: tokio::sync::Mutex<Option<(tokio::time::Instant, Arc<Vec<Agent>>)>>,
    agent_list_ttl: Duration,
    /// Pinged when a job is accepted, so the runner starts it at once.
    wake: Notify,
    /// State sync, when it runs: items it saw done already need no call.
    witness: Option<SyncWitness>,
}

impl BulkJobs {
    pub fn new(engine: Arc<TransitionEngine>, settings: BulkSettings) -> BulkJobs {
        BulkJobs {
            inner: Arc::new(Inner {
                store: engine.store().clone(),
                engine,
                permits: Semaphore::new(settings.concurrency.max(1)),
                concurrency: settings.concurrency.max(1),
                directory: tokio::sync::Mutex::default(),
                agent_list_ttl: settings.agent_list_ttl,
                wake: Notify::new(),
                witness: None,
            }),
        }
    }

    /// Settles items `unchanged`, without a call, for agents state sync (`witness`)
    /// saw in the target state and reason at its last poll. Call before cloning.
    pub fn with_sync(mut self, witness: SyncWitness) -> BulkJobs {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.witness = Some(witness);
        }
        self
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Now, by the engine's clock: item stamps are compared with the platform's when an
    /// interrupted job resumes.
    fn now(&self) -> DateTime<Utc> {
        self.inner.engine.now()
    }

    /// The platform's agents, fetched once per `agent_list_ttl` however many jobs ask
    /// (and the wallboard's roster refresh). Each fetch is also kept in the store's agent
    /// roster, so reports name agents without asking the platform.
    pub async fn agents(&self) -> Result<Arc<Vec<Agent>>, CxoneError> {
        let fetch = async {
            let agents = self
                .inner
                .engine
                .platform()
                .list_agents(&AgentFilter::default())
                .await?;
            self.remember(&agents).await;
            Ok(Arc::new(agents))
        };
        let ttl = self.inner.agent_list_ttl;
        if ttl.is_zero() {
            return fetch.await;
        }
        let mut kept = self.inner.directory.lock().await;
        if let Some((at, agents)) = &*kept
            && at.elapsed() < ttl
        {
            return Ok(agents.clone());
        }
        let agents = fetch.await?;
        *kept = Some((tokio::time::Instant::now(), agents.clone()));
        Ok(agents)
    }

    /// Stores the listed agents' names and teams. A failure costs only names in later
    /// reports until the next listing, so it is logged and the listing still answers.
    async fn remember(&self, agents: &[Agent]) {
        let entries: Vec<RosterEntry> = agents.iter().map(RosterEntry::from).collect();
        let now = to_ms(self.now());
        let stored = async {
            // Names are no record that must survive a power cut, only a crash.
            let mut tx = self.store().begin_write_unflushed().await?;
            roster::remember(&mut tx, &entries, now).await?;
            tx.commit().await
        };
        if let Err(error) = stored.await {
            tracing::warn!(%error, agents = agents.len(), "cannot store the agent roster");
        }
    }

    /// Jobs without their items, newest first: of `status` when given, created before
    /// the job `before` when given, at most `limit`.
    pub async fn jobs(
        &self,
        status: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<BulkJobView>, sqlx::Error> {
        // One read transaction, as for one job: statuses and counts agree.
        let mut tx = self.store().reader().begin().await?;
        let rows = jobs::recent(&mut tx, status, before, limit).await?;
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        let mut counts = jobs::counts_of(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let counts = counts.remove(&row.id).unwrap_or_default();
                view(row, counts, None)
            })
            .collect())
    }

    /// The job's progress and counts, with every item when `with_items`.
    pub async fn job(
        &self,
        job_id: &str,
        with_items: bool,
    ) -> Result<Option<BulkJobView>, sqlx::Error> {
        // One read transaction: the status, counts and items agree with each other
        // even while the runner settles items.
        let mut tx = self.store().reader().begin().await?;
        let Some(row) = jobs::get_on(&mut tx, job_id).await? else {
            return Ok(None);
        };
        let counts = jobs::counts(&mut tx, job_id).await?;
        let items = if with_items {
            Some(jobs::items(&mut tx, job_id).await?)
        } else {
            None
        };
        tx.commit().await?;
        Ok(Some(view(row, counts, items)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::cxone::{Budget, StateChange};
    use crate::sim::{SimConfig, Simulator};
    use crate::store::on;
    use crate::store::testing::temp_store;

    /// A bulk service over a real engine and store, against the simulator on a free
    /// port (its agents hold still).
    struct Rig {
        sim: Simulator,
        bulk: BulkJobs,
        store: Store,
        _dir: tempfile::TempDir,
        _stop: CancellationToken,
    }

    async fn rig() -> Rig {
        rig_with(20, Budget::unlimited()).await
    }

    async fn rig_with(agents: usize, budget: Budget) -> Rig {
        rig_on(agents, budget, None).await
    }

    /// A rig whose platform clock starts at `start_at`.
    async fn rig_started(agents: usize, start_at: Option<DateTime<Utc>>) -> Rig {
        rig_on(agents, Budget::unlimited(), start_at).await
    }

    async fn rig_on(agents: usize, budget: Budget, start_at: Option<DateTime<Utc>>) -> Rig {
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim_config = SimConfig {
            agents,
            start_at,
            ..SimConfig::default()
        };
        let running = Simulator::start(sim_config.clone(), listener, stop.clone())
            .await
            .unwrap();
        let mut config = Config::default();
        config.cxone.base_url = running.base_url.clone();
        config.cxone.token_url = running.token_url.clone();
        config.cxone.client_id = sim_config.client_id;
        config.cxone.client_secret = sim_config.client_secret.into();
        let (store, dir) = temp_store().await;
        let platform = crate::platform(&config, crate::http_client().unwrap(), Arc::new(budget));
        let engine = Arc::new(TransitionEngine::new(
            store.clone(),
            platform,
            Duration::from_secs(30),
        ));
        let settings = BulkSettings {
            concurrency: 4,
            agent_list_ttl: Duration::from_secs(60),
        };
        Rig {
            sim: running.sim,
            bulk: BulkJobs::new(engine, settings),
            store,
            _dir: dir,
            _stop: stop,
        }
    }

    impl Rig {
        fn pick(&self, kind: &str) -> Vec<String> {
            let now = self.sim.clock().now();
            self.sim
                .agents()
                .into_iter()
                .filter(|a| match kind {
                    "free" => {
                        a.on_shift_at(now)
                            && !a.in_mandatory_break_at(now)
                            && a.state != "ON_CONTACT"
                    }
                    "off" => !a.on_shift_at(now),
                    "contact" => a.state == "ON_CONTACT",
                    _ => unreachable!(),
                })
                .map(|a| a.id)
                .collect()
        }

        /// How many times the platform set `agent` to `state` with `reason` (the log's
        /// first entry is the state the agent started in; the agents hold still, so
        /// every later one is a change someone asked for).
        fn changes(&self, agent: &str, state: &str, reason: &str) -> usize {
            let log = self.sim.agent(agent).unwrap().state_log;
            log.iter()
                .skip(1)
                .filter(|c| c.state == state && c.reason == reason)
                .count()
        }

        async fn count(&self, sql: &'static str) -> i64 {
            on!(self.store.reader(), |c| sqlx::query_scalar(sql)
                .fetch_one(c)
                .await)
            .unwrap()
        }
    }

    fn meeting(agents: &[String], key: Option<&str>) -> JobRequest {
        JobRequest {
            selector: BulkSelector::Agents(agents.to_vec()),
            target: AgentState::NotReady,
            reason: Some("MEETING".into()),
            actor: "test".into(),
            idempotency_key: key.map(Into::into),
            defer_for: None,
        }
    }

    #[tokio::test]
    async fn a_ten_agent_job_finishes_before_a_two_thousand_agent_job_submitted_with_it() {
        // 100 requests a second: the big job alone would need well over 20 s.
        let rig = rig_with(2_000, Budget::per_minute(6_000)).await;
        let everyone: Vec<String> = rig.sim.agents().into_iter().map(|a| a.id).collect();
        let big = rig.bulk.submit(meeting(&everyone, None)).await.unwrap();
        let small = rig
            .bulk
            .submit(meeting(&rig.pick("free")[..10], None))
            .await
            .unwrap();
        assert_eq!((big.total, small.total), (2_000, 10));

        let stop_big = CancellationToken::new();
        let big_run = tokio::spawn({
            let (bulk, id, stop) = (rig.bulk.clone(), big.job_id.clone(), stop_big.clone());
            async move { bulk.run_job(&id, &stop).await }
        });
        rig.bulk
            .run_job(&small.job_id, &CancellationToken::new())
            .await
            .unwrap();

        let small_job = rig.bulk.job(&small.job_id, false).await.unwrap().unwrap();
        let big_job = rig.bulk.job(&big.job_id, false).await.unwrap().unwrap();
        assert_eq!(small_job.status, "completed");
        assert_ne!(big_job.status, "completed");
        assert!(
            big_job.pending > 1_500,
            "the big job settled {} items before the small one finished",
            2_000 - big_job.pending
        );
        stop_big.cancel();
        big_run.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn items_state_sync_saw_done_already_are_unchanged_make_no_call_and_are_audited() {
        // The platform's clock runs a minute behind ours, so the sync's poll comes well
        // after the first job's changes by both clocks.
        let rig = rig_started(20, Some(Utc::now() - chrono::TimeDelta::minutes(1))).await;
        let free = rig.pick("free");
        let (first, others) = (free[..3].to_vec(), free[3..5].to_vec());
        let engine = rig.bulk.inner.engine.clone();
        rig.bulk.submit(meeting(&first, None)).await.unwrap();
        rig.bulk.run_pending().await.unwrap();

        let mut sync = crate::engine::sync::StateSync::new(
            rig.store.clone(),
            engine.platform().clone(),
            crate::engine::sync::SyncSettings {
                interval: Duration::from_secs(10),
                renew_after: Duration::from_secs(3_600),
                teams: Vec::new(),
                // The sync does not watch `first[2]`: no one vouches for it.
                agents: free.iter().filter(|a| **a != first[2]).cloned().collect(),
                unfiltered: false,
            },
        )
        .with_in_flight(engine.agents_in_flight());
        sync.poll_once().await.unwrap();
        let witness = SyncWitness::new(sync.status(), Duration::from_secs(10));
        let bulk = BulkJobs::new(
            engine,
            BulkSettings {
                concurrency: 4,
                agent_list_ttl: Duration::from_secs(60),
            },
        )
        .with_sync(witness);

        let again = bulk
            .submit(meeting(&[first.clone(), others.clone()].concat(), None))
            .await
            .unwrap();
        bulk.run_pending().await.unwrap();
        let job = bulk.job(&again.job_id, true).await.unwrap().unwrap();
        assert_eq!(
            (job.status.as_str(), job.succeeded, job.unchanged),
            ("completed", 3, 2)
        );
        let watched = &first[..2];
        for item in job.items.unwrap() {
            let want = if watched.contains(&item.agent) {
                "unchanged"
            } else {
                "succeeded"
            };
            assert_eq!(item.outcome, want, "{}", item.agent);
            assert_eq!(
                item.attempt_id.is_some(),
                want == "succeeded",
                "{}",
                item.agent
            );
        }
        for agent in watched {
            assert_eq!(
                rig.changes(agent, "NOT_READY", "MEETING"),
                1,
                "one call, the first job's"
            );
        }
        assert_eq!(
            rig.changes(&first[2], "NOT_READY", "MEETING"),
            2,
            "an agent the sync does not watch is changed again"
        );
        for agent in &others {
            assert_eq!(rig.changes(agent, "NOT_READY", "MEETING"), 1);
        }
        let audited: Vec<String> = on!(rig.store.reader(), |c| sqlx::query_scalar(
            "SELECT agent_id FROM audit_log WHERE action = 'transition.unchanged' ORDER BY agent_id",
        )
        .fetch_all(c)
        .await)
        .unwrap();
        let mut want = watched.to_vec();
        want.sort();
        assert_eq!(audited, want);
        let payload: String = on!(rig.store.reader(), |c| sqlx::query_scalar(
            "SELECT payload FROM outbox_events WHERE event_type = 'bulk.completed' \
             ORDER BY seq DESC LIMIT 1",
        )
        .fetch_one(c)
        .await)
        .unwrap();
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(payload["data"]["unchanged"], 2);
        assert_eq!(payload["data"]["succeeded"], 3);
    }

    #[tokio::test]
    async fn the_listed_agents_names_and_teams_are_kept_in_the_store() {
        let rig = rig().await;
        let free = rig.pick("free");
        rig.bulk.submit(meeting(&free[..1], None)).await.unwrap();
        let roster = crate::store::roster::all(rig.store.reader()).await.unwrap();
        let agents = rig.sim.agents();
        assert_eq!(roster.len(), agents.len());
        for agent in agents {
            let entry = &roster[&agent.id];
            assert_eq!(entry.name.as_deref(), Some(agent.name.as_str()));
            assert_eq!(entry.team_id.as_deref(), Some(agent.team_id.as_str()));
            assert_eq!(entry.team_name.as_deref(), Some(agent.team_name.as_str()));
        }
    }

    #[tokio::test]
    async fn each_agent_gets_its_own_outcome_and_the_job_ends_with_one_event() {
        let rig = rig().await;
        let free = rig.pick("free");
        let off = rig.pick("off");
        let contact = rig.pick("contact");
        let agents = [&free[..3], &off[..1], &contact[..1]].concat();

        let accepted = rig.bulk.submit(meeting(&agents, None)).await.unwrap();
        assert_eq!(accepted.total, 5);
        let queued = rig.bulk.job(&accepted.job_id, true).await.unwrap().unwrap();
        assert_eq!((queued.status.as_str(), queued.pending), ("queued", 5));
        assert_eq!(rig.bulk.run_pending().await.unwrap(), 1);

        let job = rig.bulk.job(&accepted.job_id, true).await.unwrap().unwrap();
        assert_eq!(job.status, "completed");
        assert_eq!((job.succeeded, job.rejected, job.failed), (3, 2, 0));
        let items = job.items.unwrap();
        let outcome = |agent: &str| {
            let item = items.iter().find(|i| i.agent == agent).unwrap();
            (item.outcome.clone(), item.violation.clone())
        };
        for agent in &free[..3] {
            assert_eq!(outcome(agent), ("succeeded".into(), None));
            assert_eq!(rig.changes(agent, "NOT_READY", "MEETING"), 1);
        }
        assert_eq!(
            outcome(&off[0]),
            ("rejected".into(), Some("AGENT_NOT_SCHEDULED".into()))
        );
        assert_eq!(
            outcome(&contact[0]),
            ("rejected".into(), Some("STATE_CONFLICT".into()))
        );
        assert_eq!(
            rig.count("SELECT COUNT(*) FROM transition_attempts WHERE origin = 'bulk'")
                .await,
            5
        );
        let payload: String = on!(rig.store.reader(), |c| sqlx::query_scalar(
            "SELECT payload FROM outbox_events WHERE event_type = 'bulk.completed'",
        )
        .fetch_one(c)
        .await)
        .unwrap();
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(payload["data"]["jobId"], accepted.job_id.as_str());
        assert_eq!(payload["data"]["succeeded"], 3);
        assert_eq!(payload["data"]["rejected"], 2);
        assert_eq!(payload["data"]["status"], "completed");
        for action in ["bulk.accepted", "bulk.completed"] {
            let n: i64 = on!(rig.store.reader(), |c| sqlx::query_scalar(
                "SELECT COUNT(*) FROM audit_log WHERE action = $1"
            )
            .bind(action)
            .fetch_one(c)
            .await)
            .unwrap();
            assert_eq!(n, 1, "{action}");
        }
        assert_eq!(rig.bulk.run_pending().await.unwrap(), 0, "nothing left");
    }

    #[tokio::test]
    async fn bad_lists_and_teams_are_refused_naming_the_field_and_nothing_is_stored() {
        let rig = rig().await;
        let free = rig.pick("free");
        let too_many: Vec<String> = (0..=MAX_AGENTS).map(|i| format!("u_{i}")).collect();
        let cases: Vec<(JobRequest, &str, Option<&str>)> = vec![
            (meeting(&[], None), "agents", None),
            (meeting(&too_many, None), "agents", None),
            (
                meeting(&[free[0].clone(), free[1].clone(), free[0].clone()], None),
                "agents",
                Some("duplicate_agents"),
            ),
            (
                meeting(&[free[0].clone(), "u_nobody".into()], None),
                "agents",
                Some("unknown_agents"),
            ),
            (
                JobRequest {
                    selector: BulkSelector::Team("t_nowhere".into()),
                    ..meeting(&[], None)
                },
                "team",
                None,
            ),
            (
                JobRequest {
                    target: AgentState::Acw,
                    ..meeting(&free, None)
                },
                "state",
                None,
            ),
        ];
        for (request, want_field, want_values) in cases {
            let selector = format!("{:?}", request.selector)
                .chars()
                .take(60)
                .collect::<String>();
            match rig.bulk.submit(request).await {
                Err(BulkError::Invalid { field, values, .. }) => {
                    assert_eq!(field, want_field, "{selector}");
                    assert_eq!(values.map(|(name, _)| name), want_values, "{selector}");
                }
                other => panic!("{selector}: {other:?}"),
            }
        }
        let unknown = rig
            .bulk
            .submit(meeting(&[free[0].clone(), "u_nobody".into()], None))
            .await;
        let Err(BulkError::Invalid {
            values: Some((_, unknown)),
            ..
        }) = unknown
        else {
            panic!("{unknown:?}")
        };
        assert_eq!(unknown, ["u_nobody"]);
        assert_eq!(rig.count("SELECT COUNT(*) FROM bulk_jobs").await, 0);
        assert_eq!(
            rig.sim.stats().by_route.get("GET /api/v2/users"),
            Some(&1),
            "the agent list is fetched once and reused"
        );
    }

    #[tokio::test]
    async fn callers_at_once_share_one_fetch_of_the_agent_list() {
        let rig = rig().await;
        let (a, b, c) = tokio::join!(rig.bulk.agents(), rig.bulk.agents(), rig.bulk.agents());
        assert_eq!(a.unwrap().len(), rig.sim.agents().len());
        assert!(b.is_ok() && c.is_ok());
        assert_eq!(rig.sim.stats().by_route.get("GET /api/v2/users"), Some(&1));
    }

    #[tokio::test]
    async fn a_team_is_found_by_id_or_by_name() {
        let rig = rig().await;
        let member = rig.sim.agents().remove(0);
        let team: Vec<String> = rig
            .sim
            .agents()
            .into_iter()
            .filter(|a| a.team_id == member.team_id)
            .map(|a| a.id)
            .collect();
        for selector in [member.team_id.clone(), member.team_name.to_uppercase()] {
            let accepted = rig
                .bulk
                .submit(JobRequest {
                    selector: BulkSelector::Team(selector.clone()),
                    ..meeting(&[], None)
                })
                .await
                .unwrap();
            let job = rig.bulk.job(&accepted.job_id, true).await.unwrap().unwrap();
            let agents: Vec<String> = job.items.unwrap().into_iter().map(|i| i.agent).collect();
            assert_eq!(agents, team, "{selector}");
            assert_eq!(job.team.as_deref(), Some(selector.as_str()));
        }
    }

    #[tokio::test]
    async fn an_idempotency_key_returns_the_first_job_and_refuses_another_request() {
        let rig = rig().await;
        let free = rig.pick("free");
        let first = rig
            .bulk
            .submit(meeting(&free[..2], Some("desk-7")))
            .await
            .unwrap();
        let again = rig
            .bulk
            .submit(meeting(&free[..2], Some("desk-7")))
            .await
            .unwrap();
        assert!(first.created && !again.created);
        assert_eq!(first.job_id, again.job_id);
        let other = rig.bulk.submit(meeting(&free[..3], Some("desk-7"))).await;
        assert!(matches!(other, Err(BulkError::IdempotencyKeyReused(_))));
        assert_eq!(rig.count("SELECT COUNT(*) FROM bulk_jobs").await, 1);
    }

    #[tokio::test]
    async fn cancelling_before_anything_ran_cancels_every_item_and_ends_the_job() {
        let rig = rig().await;
        let free = rig.pick("free");
        let accepted = rig.bulk.submit(meeting(&free[..4], None)).await.unwrap();
        let job = rig.bulk.cancel(&accepted.job_id, "test").await.unwrap();
        assert_eq!((job.status.as_str(), job.cancelled), ("cancelled", 4));
        assert!(job.cancel_requested);
        rig.bulk.run_pending().await.unwrap();
        for agent in &free[..4] {
            assert_eq!(rig.changes(agent, "NOT_READY", "MEETING"), 0);
        }
        let again = rig.bulk.cancel(&accepted.job_id, "test").await.unwrap();
        assert_eq!(again, job, "cancelling twice changes nothing");
        assert_eq!(
            rig.count("SELECT COUNT(*) FROM outbox_events WHERE event_type = 'bulk.completed'")
                .await,
            1
        );
        assert!(matches!(
            rig.bulk.cancel("job_nope", "test").await,
            Err(BulkError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_revert_reports_agents_whose_earlier_state_was_never_recorded() {
        let rig = rig().await;
        let free = rig.pick("free");
        let accepted = rig.bulk.submit(meeting(&free[..2], None)).await.unwrap();
        let early = rig.bulk.revert(&accepted.job_id, "test", None).await;
        assert!(
            matches!(early, Err(BulkError::Conflict { .. })),
            "{early:?}"
        );
        rig.bulk.run_pending().await.unwrap();

        let revert = rig
            .bulk
            .revert(&accepted.job_id, "test", None)
            .await
            .unwrap();
        rig.bulk.run_pending().await.unwrap();
        let job = rig.bulk.job(&revert.job_id, true).await.unwrap().unwrap();
        assert_eq!((job.status.as_str(), job.failed), ("completed", 2));
        assert_eq!(
            job.reverts_job_id.as_deref(),
            Some(accepted.job_id.as_str())
        );
        for item in job.items.unwrap() {
            assert_eq!(item.state, None);
            assert!(item.error.unwrap().contains("no record"));
            let log = rig.sim.agent(&item.agent).unwrap().state_log;
            assert_eq!(log.len(), 2, "only the job's own change");
        }
        let again = rig
            .bulk
            .revert(&accepted.job_id, "test", None)
            .await
            .unwrap();
        assert_eq!((again.job_id, again.created), (revert.job_id, false));

        let off = rig.pick("off");
        let refused = rig.bulk.submit(meeting(&off[..1], None)).await.unwrap();
        rig.bulk.run_pending().await.unwrap();
        assert!(matches!(
            rig.bulk.revert(&refused.job_id, "test", None).await,
            Err(BulkError::NothingToRevert(_))
        ));
    }

    #[tokio::test]
    async fn a_job_interrupted_mid_item_resumes_without_changing_anyone_twice() {
        let rig = rig().await;
        let free = rig.pick("free");
        let agents = free[..4].to_vec();
        let accepted = rig.bulk.submit(meeting(&agents, None)).await.unwrap();
        let job_id = accepted.job_id.clone();
        // A run that died: it had taken the first three items. The first was changed and
        // recorded, the second changed on the platform only, the third not yet sent.
        let mut tx = rig.store.begin_write().await.unwrap();
        for seq in 0..3 {
            assert!(
                jobs::take(&mut tx, &job_id, seq, to_ms(Utc::now()))
                    .await
                    .unwrap()
            );
        }
        tx.commit().await.unwrap();
        let engine = rig.bulk.inner.engine.clone();
        let recorded = engine
            .change(Change::from(TransitionRequest {
                agent_id: agents[0].clone(),
                target: AgentState::NotReady,
                reason: Some("MEETING".into()),
                origin: Origin::Bulk,
                actor: "test".into(),
                idempotency_key: Some(format!("bulk:{job_id}:{}", agents[0])),
            }))
            .await
            .map(Changed::made)
            .unwrap();
        assert_eq!(recorded.outcome, Outcome::Succeeded);
        engine
            .platform()
            .set_agent_state(StateChange::new(
                &agents[1],
                AgentState::NotReady,
                "MEETING",
            ))
            .await
            .unwrap();

        rig.bulk.run_pending().await.unwrap();

        let job = rig.bulk.job(&job_id, true).await.unwrap().unwrap();
        assert_eq!((job.status.as_str(), job.succeeded), ("completed", 4));
        for agent in &agents {
            assert_eq!(rig.changes(agent, "NOT_READY", "MEETING"), 1, "{agent}");
        }
        let items = job.items.unwrap();
        assert_eq!(
            items[0].attempt_id.as_deref(),
            Some(recorded.attempt_id.as_str())
        );
        assert_eq!(
            rig.count("SELECT COUNT(*) FROM transition_attempts").await,
            4,
            "one attempt per agent"
        );
        assert_eq!(
            rig.count("SELECT COUNT(*) FROM state_intervals WHERE reason = 'MEETING'")
                .await,
            4
        );
    }
}
