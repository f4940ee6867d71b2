//! Skill and queue metrics for the wallboard: the pollers, and the board they keep
//! current and the live feed reads.
//!
//! The pollers (one per metric family, [`MetricPoller`]) write every sample to the store
//! and publish the newest board through a `watch` channel; the live feed and `/v1/live`
//! only read it, so the number of watching clients never changes how often the platform
//! is asked. A family the platform refuses for good (403, 404, not offered) is marked
//! [`FamilyHealth::Unavailable`] and no longer polled; the other goes on. Transient
//! failures (after the client's own retries) mark it [`FamilyHealth::Failing`] until the
//! next interval's poll succeeds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cxone::{ContactCenter, CxoneError, Lane, MAX_QUEUES_PER_CALL, in_lane};
use crate::store::Store;
use crate::store::samples::{self, Sample};

pub use crate::domain::metrics::{FamilyHealth, MetricBoard, MetricFamily, QueueTile, SkillTile};
use crate::telemetry::names::{METRIC_POLLS_TOTAL, METRIC_SAMPLES_TOTAL};

/// Where the pollers publish the board.
pub type BoardSender = tokio::sync::watch::Sender<Arc<MetricBoard>>;
/// What the live feed and the API read the board from.
pub type BoardReceiver = tokio::sync::watch::Receiver<Arc<MetricBoard>>;

/// A fresh, empty board channel.
pub fn board_channel() -> (BoardSender, BoardReceiver) {
    tokio::sync::watch::channel(Arc::new(MetricBoard::default()))
}

/// Skill ids asked per skill-data call. The contract sets no limit, but a URL with every
/// skill of a large tenant is not something to send; queues have the platform's 100.
pub const MAX_SKILLS_PER_CALL: usize = 100;

/// How long a discovered skill or queue list is used before the platform is asked again.
pub const LISTING_REFRESH: Duration = Duration::from_secs(15 * 60);

/// How the pollers run (from `[live]`).
#[derive(Debug, Clone)]
pub struct PollerSettings {
    /// Skill ids; empty = every skill the platform lists.
    pub skills: Vec<String>,
    /// Queue ids; empty = every queue the platform lists.
    pub queues: Vec<String>,
    pub skill_interval: Duration,
    pub queue_interval: Duration,
    pub listing_refresh: Duration,
}

/// Why one poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Platform(#[from] CxoneError),
    #[error("cannot store the samples: {0}")]
    Store(#[from] sqlx::Error),
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricPollReport {
    /// Skills or queues published, those the platform left out (shown as zeros)
    /// included.
    pub tiles: usize,
    /// Of those, how many the platform left out.
    pub missing: usize,
    /// Samples added to the store (one already stored for the same platform time is not).
    pub stored: u64,
}

/// The poller of one metric family: lists the tenant's skills or queues when none are
/// configured, asks for their figures every interval in the background lane, stores
/// every sample and publishes the family's tiles and health on the board.
pub struct MetricPoller {
    family: MetricFamily,
    platform: Arc<dyn ContactCenter>,
    store: Store,
    board: BoardSender,
    /// The configured ids, without repeats; empty = discover.
    configured: Vec<String>,
    interval: Duration,
    listing_refresh: Duration,
    /// The discovered (id, name) list and when it was listed.
    listing: Option<(Vec<(String, String)>, Instant)>,
    /// The last name seen for each id, for the ones the platform leaves out.
    names: HashMap<String, String>,
}

impl MetricPoller {
    pub fn new(
        family: MetricFamily,
        platform: Arc<dyn ContactCenter>,
        store: Store,
        board: BoardSender,
        settings: &PollerSettings,
    ) -> MetricPoller {
        let (ids, interval) = match family {
            MetricFamily::Skills => (&settings.skills, settings.skill_interval),
            MetricFamily::Queues => (&settings.queues, settings.queue_interval),
        };
        let mut seen = HashSet::new();
        let configured = ids.iter().filter(|id| seen.insert(*id)).cloned().collect();
        MetricPoller {
            family,
            platform,
            store,
            board,
            configured,
            interval,
            listing_refresh: settings.listing_refresh,
            listing: None,
            names: HashMap::new(),
        }
    }

    /// Both pollers, ready to spawn.
    pub fn both(
        platform: &Arc<dyn ContactCenter>,
        store: &Store,
        board: &BoardSender,
        settings: &PollerSettings,
    ) -> [MetricPoller; 2] {
        [MetricFamily::Skills, MetricFamily::Queues].map(|family| {
            MetricPoller::new(
                family,
                platform.clone(),
                store.clone(),
                board.clone(),
                settings,
            )
        })
    }

    /// What the family is called in health reasons and logs.
    fn label(&self) -> &'static str {
        match self.family {
            MetricFamily::Skills => "skill activity",
            MetricFamily::Queues => "queue stats",
        }
    }

    /// Polls every interval until `stop` is cancelled, or until the platform refuses
    /// the family for good (403, 404, not offered): then the family is reported
    /// unavailable and no longer asked for, while the other family keeps going.
    pub async fn run(mut self, stop: CancellationToken) {
        let family = self.family.as_str();
        tracing::info!(family, interval = ?self.interval, "metric poller started");
        let mut next = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = stop.cancelled() => break,
            }
            // Each cycle is due an interval after the last one began, not ended, so the
            // figures keep their spacing whatever a poll costs.
            next = Instant::now() + self.interval;
            let outcome = tokio::select! {
                outcome = in_lane(Lane::Background, None, self.poll_once()) => outcome,
                () = stop.cancelled() => break,
            };
            if !self.settle(outcome) {
                break;
            }
        }
        tracing::info!(family, "metric poller stopped");
    }

    /// Publishes the health an outcome means; false when the family is to stop.
    fn settle(&self, outcome: Result<MetricPollReport, PollError>) -> bool {
        let family = self.family.as_str();
        match outcome {
            Ok(report) => {
                tracing::debug!(family, ?report, "metric poll");
                ::metrics::counter!(METRIC_POLLS_TOTAL, "family" => family, "outcome" => "ok")
                    .increment(1);
                true
            }
            Err(PollError::Platform(e)) if refuses_for_good(&e) => {
                let reason = format!("{} unavailable: {}", self.label(), describe(&e));
                tracing::warn!(family, %reason, "the platform refuses this metric family; it is no longer polled");
                ::metrics::counter!(METRIC_POLLS_TOTAL, "family" => family, "outcome" => "unavailable")
                    .increment(1);
                self.publish_health(FamilyHealth::Unavailable { reason }, true);
                false
            }
            Err(e) => {
                let reason = format!("{}: {e}", self.label());
                tracing::warn!(family, error = %e, "metric poll failed; trying again next interval");
                ::metrics::counter!(METRIC_POLLS_TOTAL, "family" => family, "outcome" => "failed")
                    .increment(1);
                self.publish_health(FamilyHealth::Failing { reason }, false);
                true
            }
        }
    }

    /// One poll: (re)lists when needed, asks for the figures, stores and publishes them.
    /// Runs in the caller's lane; [`MetricPoller::run`] puts it in the background lane.
    pub async fn poll_once(&mut self) -> Result<MetricPollReport, PollError> {
        let ids = self.ids().await?;
        let started = Utc::now();
        let (samples, report) = match self.family {
            MetricFamily::Skills => {
                let tiles = self.skill_tiles(&ids, started).await?;
                let samples: Vec<Sample> = tiles.0.iter().map(Sample::from).collect();
                let report = (tiles.0.len(), tiles.1);
                self.publish(|board| {
                    board.skills = tiles
                        .0
                        .into_iter()
                        .map(|t| (t.skill_id.clone(), t))
                        .collect();
                });
                (samples, report)
            }
            MetricFamily::Queues => {
                let tiles = self.queue_tiles(&ids, started).await?;
                let samples: Vec<Sample> = tiles.0.iter().map(Sample::from).collect();
                let report = (tiles.0.len(), tiles.1);
                self.publish(|board| {
                    board.queues = tiles
                        .0
                        .into_iter()
                        .map(|t| (t.queue_id.clone(), t))
                        .collect();
                });
                (samples, report)
            }
        };
        let mut tx = self.store.begin_write().await?;
        let stored = samples::insert(&mut tx, &samples, Utc::now()).await?;
        tx.commit().await?;
        ::metrics::counter!(METRIC_SAMPLES_TOTAL, "family" => self.family.as_str())
            .increment(stored);
        Ok(MetricPollReport {
            tiles: report.0,
            missing: report.1,
            stored,
        })
    }

    /// The ids to ask for: the configured ones, else the platform's listing (listed
    /// again after `listing_refresh`; a failed refresh keeps the list it had, unless
    /// the platform refuses the family for good).
    async fn ids(&mut self) -> Result<Vec<String>, CxoneError> {
        if !self.configured.is_empty() {
            return Ok(self.configured.clone());
        }
        let fresh = self
            .listing
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < self.listing_refresh);
        if !fresh {
            let listed = match self.family {
                MetricFamily::Skills => self
                    .platform
                    .list_skills()
                    .await
                    .map(|l| l.into_iter().map(|s| (s.id, s.name)).collect::<Vec<_>>()),
                MetricFamily::Queues => self
                    .platform
                    .list_queues()
                    .await
                    .map(|l| l.into_iter().map(|q| (q.id, q.name)).collect::<Vec<_>>()),
            };
            match listed {
                Ok(mut list) => {
                    let mut seen = HashSet::new();
                    list.retain(|(id, _)| seen.insert(id.clone()));
                    for (id, name) in &list {
                        if !name.is_empty() {
                            self.names.insert(id.clone(), name.clone());
                        }
                    }
                    self.listing = Some((list, Instant::now()));
                }
                Err(e) if self.listing.is_some() && !refuses_for_good(&e) => {
                    tracing::warn!(family = self.family.as_str(), error = %e,
                        "cannot list again; polling the ones listed before");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self
            .listing
            .as_ref()
            .map(|(list, _)| list.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default())
    }

    /// Every skill of `ids`, in that order, the ones left out as zeros; and how many
    /// were left out.
    async fn skill_tiles(
        &mut self,
        ids: &[String],
        started: DateTime<Utc>,
    ) -> Result<(Vec<SkillTile>, usize), CxoneError> {
        let mut answered = Vec::new();
        for chunk in ids.chunks(MAX_SKILLS_PER_CALL) {
            answered.push((chunk, self.platform.skill_activity(chunk).await?));
        }
        Ok(complete(ids, answered, started, &mut self.names))
    }

    /// Every queue of `ids`, at most [`MAX_QUEUES_PER_CALL`] a call, in order, the ones
    /// left out as zeros; and how many were left out.
    async fn queue_tiles(
        &mut self,
        ids: &[String],
        started: DateTime<Utc>,
    ) -> Result<(Vec<QueueTile>, usize), CxoneError> {
        let mut answered = Vec::new();
        for chunk in ids.chunks(MAX_QUEUES_PER_CALL) {
            answered.push((chunk, self.platform.queue_stats(chunk).await?));
        }
        Ok(complete(ids, answered, started, &mut self.names))
    }

    /// Puts this poll's tiles on the board with health Ok.
    fn publish(&self, update: impl FnOnce(&mut MetricBoard)) {
        let now = Utc::now();
        let family = self.family;
        self.board.send_modify(|board| {
            let board = Arc::make_mut(board);
            update(board);
            match family {
                MetricFamily::Skills => {
                    board.skills_health = FamilyHealth::Ok;
                    board.skills_polled_at = Some(now);
                }
                MetricFamily::Queues => {
                    board.queues_health = FamilyHealth::Ok;
                    board.queues_polled_at = Some(now);
                }
            }
        });
    }

    /// Sets the family's health; `clear` drops its tiles (figures of a family that is
    /// no longer polled would only grow stale).
    fn publish_health(&self, health: FamilyHealth, clear: bool) {
        let family = self.family;
        self.board.send_modify(|board| {
            let board = Arc::make_mut(board);
            match family {
                MetricFamily::Skills => {
                    board.skills_health = health;
                    if clear {
                        board.skills.clear();
                    }
                }
                MetricFamily::Queues => {
                    board.queues_health = health;
                    if clear {
                        board.queues.clear();
                    }
                }
            }
        });
    }
}

/// Whether the platform refuses the family for good: no scope (403), no such resource
/// (404), or no such operation in this dialect. Asking again would not help.
fn refuses_for_good(e: &CxoneError) -> bool {
    matches!(
        e,
        CxoneError::Forbidden { .. } | CxoneError::NotFound { .. } | CxoneError::NotOffered { .. }
    )
}

/// The error in a health reason: a missing scope is said plainly.
fn describe(e: &CxoneError) -> String {
    match e {
        CxoneError::Forbidden {
            scope: Some(scope), ..
        } => format!("missing scope {scope} (403)"),
        other => other.to_string(),
    }
}

/// What the pollers need of a skill or queue tile to complete an answer.
trait Tile: Sized {
    fn id(&self) -> &str;
    fn name_mut(&mut self) -> &mut String;
    fn sampled_at(&self) -> DateTime<Utc>;
    /// The tile of one the platform left out: nothing waiting, nobody there.
    fn zero(id: &str, name: String, at: DateTime<Utc>) -> Self;
}

impl Tile for SkillTile {
    fn id(&self) -> &str {
        &self.skill_id
    }
    fn name_mut(&mut self) -> &mut String {
        &mut self.skill_name
    }
    fn sampled_at(&self) -> DateTime<Utc> {
        self.sampled_at
    }
    fn zero(id: &str, name: String, at: DateTime<Utc>) -> Self {
        SkillTile {
            skill_id: id.to_owned(),
            skill_name: name,
            contacts_queued: 0,
            contacts_active: 0,
            longest_wait_secs: 0,
            // No contacts, so no service level: 0 % would paint the tile red.
            service_level: None,
            service_level_threshold_secs: None,
            service_level_goal: None,
            agents_available: 0,
            agents_staffed: 0,
            agents_on_contact: 0,
            agents_acw: 0,
            estimated_wait_secs: Some(0),
            sampled_at: at,
        }
    }
}

impl Tile for QueueTile {
    fn id(&self) -> &str {
        &self.queue_id
    }
    fn name_mut(&mut self) -> &mut String {
        &mut self.name
    }
    fn sampled_at(&self) -> DateTime<Utc> {
        self.sampled_at
    }
    fn zero(id: &str, name: String, at: DateTime<Utc>) -> Self {
        QueueTile {
            queue_id: id.to_owned(),
            name,
            agents_logged_on: 0,
            agents_available: 0,
            agents_busy: 0,
            contacts_waiting: 0,
            average_wait_ms: Some(0),
            service_level: None,
            sampled_at: at,
        }
    }
}

/// The tiles of `ids` in that order from the answers to each chunk of them: only what
/// a chunk asked for counts (a platform that answers more is not news), names are
/// remembered for answers that leave them out, and an id left out becomes a zero tile
/// at the answer's time (`started` when nothing came back). Also returns how many were
/// left out.
fn complete<T: Tile>(
    ids: &[String],
    answers: Vec<(&[String], Vec<T>)>,
    started: DateTime<Utc>,
    names: &mut HashMap<String, String>,
) -> (Vec<T>, usize) {
    let mut answered: HashMap<String, T> = HashMap::new();
    for (chunk, tiles) in answers {
        for tile in tiles {
            if chunk.iter().any(|id| id == tile.id()) {
                answered.insert(tile.id().to_owned(), tile);
            }
        }
    }
    let at = answered
        .values()
        .map(Tile::sampled_at)
        .max()
        .unwrap_or(started);
    let mut missing = 0;
    let tiles = ids
        .iter()
        .map(|id| match answered.remove(id) {
            Some(mut tile) => {
                let name = tile.name_mut();
                if name.is_empty() {
                    *name = names.get(id).cloned().unwrap_or_default();
                } else {
                    names.insert(id.clone(), name.clone());
                }
                tile
            }
            None => {
                missing += 1;
                T::zero(id, names.get(id).cloned().unwrap_or_default(), at)
            }
        })
        .collect();
    (tiles, missing)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::cxone::budget::current_context;
    use crate::cxone::{
        Agent, AgentFilter, AgentSnapshot, ObservedAgent, Queue, Skill, StateChange, Subscription,
        SubscriptionRequest,
    };
    use crate::domain::{BreakStatus, Schedule};
    use crate::store::on;
    use crate::store::testing::temp_store;

    /// A platform that answers every skill and queue it is asked for except the ones in
    /// `silent`, records each call's ids, lane and (tokio) instant, and answers scripted
    /// errors first.
    #[derive(Default)]
    struct MetricPlatform {
        listed: Vec<String>,
        silent: Vec<String>,
        calls: Mutex<Vec<(Vec<String>, Lane, Instant)>>,
        listings: Mutex<u32>,
        /// Errors answered, in order, before any figures.
        errors: Mutex<VecDeque<CxoneError>>,
        /// Errors the listing answers, in order, before the list.
        listing_errors: Mutex<VecDeque<CxoneError>>,
        /// When set, every skill-data call after the first waits for a permit.
        gate: Option<tokio::sync::Semaphore>,
    }

    fn at() -> DateTime<Utc> {
        "2026-11-20T14:31:30Z".parse().unwrap()
    }

    fn unsupported() -> CxoneError {
        CxoneError::BadRequest {
            message: "not scripted".into(),
        }
    }

    impl MetricPlatform {
        fn answer(&self, ids: &[String]) -> Result<Vec<String>, CxoneError> {
            self.calls
                .lock()
                .unwrap()
                .push((ids.to_vec(), current_context().lane, Instant::now()));
            if let Some(e) = self.errors.lock().unwrap().pop_front() {
                return Err(e);
            }
            Ok(ids
                .iter()
                .filter(|id| !self.silent.contains(id))
                .cloned()
                .collect())
        }

        fn list(&self) -> Result<Vec<(String, String)>, CxoneError> {
            *self.listings.lock().unwrap() += 1;
            if let Some(e) = self.listing_errors.lock().unwrap().pop_front() {
                return Err(e);
            }
            Ok(self
                .listed
                .iter()
                .map(|id| (id.clone(), format!("name of {id}")))
                .collect())
        }

        fn call_sizes(&self) -> Vec<usize> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .map(|c| c.0.len())
                .collect()
        }
    }

    #[async_trait]
    impl ContactCenter for MetricPlatform {
        async fn list_agents(&self, _: &AgentFilter) -> Result<Vec<Agent>, CxoneError> {
            Ok(Vec::new())
        }
        async fn agent_state(&self, _: &str) -> Result<AgentSnapshot, CxoneError> {
            Err(unsupported())
        }
        async fn set_agent_state(&self, _: StateChange<'_>) -> Result<AgentSnapshot, CxoneError> {
            Err(unsupported())
        }
        async fn schedule(&self, _: &str) -> Result<Schedule, CxoneError> {
            Err(unsupported())
        }
        async fn break_status(&self, _: &str) -> Result<BreakStatus, CxoneError> {
            Err(unsupported())
        }
        async fn check_access(&self) -> Result<(), CxoneError> {
            Ok(())
        }
        async fn create_subscription(
            &self,
            _: &SubscriptionRequest,
        ) -> Result<Subscription, CxoneError> {
            Err(unsupported())
        }
        async fn poll_subscription(&self, _: &str) -> Result<Vec<ObservedAgent>, CxoneError> {
            Err(unsupported())
        }
        async fn delete_subscription(&self, _: &str) -> Result<(), CxoneError> {
            Err(unsupported())
        }
        async fn list_skills(&self) -> Result<Vec<Skill>, CxoneError> {
            Ok(self
                .list()?
                .into_iter()
                .map(|(id, name)| Skill { id, name })
                .collect())
        }
        async fn list_queues(&self) -> Result<Vec<Queue>, CxoneError> {
            Ok(self
                .list()?
                .into_iter()
                .map(|(id, name)| Queue { id, name })
                .collect())
        }
        async fn skill_activity(&self, ids: &[String]) -> Result<Vec<SkillTile>, CxoneError> {
            let first = self.calls.lock().unwrap().is_empty();
            if let Some(gate) = self.gate.as_ref().filter(|_| !first) {
                gate.acquire().await.unwrap().forget();
            }
            Ok(self
                .answer(ids)?
                .into_iter()
                .map(|id| SkillTile {
                    skill_name: String::new(),
                    contacts_queued: 4,
                    contacts_active: 2,
                    longest_wait_secs: 30,
                    service_level: Some(0.9),
                    service_level_threshold_secs: None,
                    service_level_goal: None,
                    agents_available: 1,
                    agents_staffed: 3,
                    agents_on_contact: 2,
                    agents_acw: 0,
                    estimated_wait_secs: None,
                    sampled_at: at(),
                    skill_id: id,
                })
                .collect())
        }
        async fn queue_stats(&self, ids: &[String]) -> Result<Vec<QueueTile>, CxoneError> {
            assert!(ids.len() <= MAX_QUEUES_PER_CALL, "{} ids", ids.len());
            Ok(self
                .answer(ids)?
                .into_iter()
                .map(|id| QueueTile {
                    name: format!("queue {id}"),
                    agents_logged_on: 3,
                    agents_available: 1,
                    agents_busy: 2,
                    contacts_waiting: 5,
                    average_wait_ms: Some(42_000),
                    service_level: Some(0.8),
                    sampled_at: at(),
                    queue_id: id,
                })
                .collect())
        }
    }

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|k| format!("{prefix}{k}")).collect()
    }

    fn settings(skills: Vec<String>, queues: Vec<String>) -> PollerSettings {
        PollerSettings {
            skills,
            queues,
            skill_interval: Duration::from_secs(30),
            queue_interval: Duration::from_secs(30),
            listing_refresh: LISTING_REFRESH,
        }
    }

    fn poller(
        family: MetricFamily,
        platform: &Arc<MetricPlatform>,
        store: &Store,
        settings: &PollerSettings,
    ) -> (MetricPoller, BoardReceiver) {
        let (board, watch) = board_channel();
        let platform: Arc<dyn ContactCenter> = platform.clone();
        let poller = MetricPoller::new(family, platform, store.clone(), board, settings);
        (poller, watch)
    }

    #[tokio::test]
    async fn more_than_100_ids_are_split_into_calls_of_at_most_100_and_left_out_ones_are_zeros() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(MetricPlatform {
            silent: vec!["s_7".into(), "q_249".into()],
            ..MetricPlatform::default()
        });
        // Repeats in the configuration are asked for once.
        let mut skills = ids("s_", 250);
        skills.push("s_3".into());
        let settings = settings(skills, ids("q_", 250));

        let (mut skill_poller, skill_board) =
            poller(MetricFamily::Skills, &platform, &store, &settings);
        let report = skill_poller.poll_once().await.unwrap();
        assert_eq!(
            report,
            MetricPollReport {
                tiles: 250,
                missing: 1,
                stored: 250
            }
        );
        assert_eq!(platform.call_sizes(), [100, 100, 50]);
        let board = skill_board.borrow().clone();
        assert_eq!(board.skills.len(), 250);
        assert_eq!(board.skills_health, FamilyHealth::Ok);
        let zeros = &board.skills["s_7"];
        assert_eq!(
            (
                zeros.contacts_queued,
                zeros.agents_staffed,
                zeros.service_level
            ),
            (0, 0, None)
        );
        assert_eq!(zeros.sampled_at, at(), "the answer's time, not ours");
        assert_eq!(board.skills["s_8"].contacts_queued, 4);

        platform.calls.lock().unwrap().clear();
        let (mut queue_poller, queue_board) =
            poller(MetricFamily::Queues, &platform, &store, &settings);
        let report = queue_poller.poll_once().await.unwrap();
        assert_eq!((report.tiles, report.missing), (250, 1));
        assert_eq!(platform.call_sizes(), [100, 100, 50]);
        let board = queue_board.borrow().clone();
        assert_eq!(board.queues["q_249"].contacts_waiting, 0);
        assert_eq!(board.queues["q_0"].contacts_waiting, 5);
        assert_eq!(
            *platform.listings.lock().unwrap(),
            0,
            "configured, not listed"
        );

        let stored: i64 = on!(store.reader(), |c| sqlx::query_scalar(
            "SELECT COUNT(*) FROM metric_samples WHERE sampled_at = $1"
        )
        .bind(crate::store::to_ms(at()))
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(stored, 500);
    }

    #[tokio::test]
    async fn without_configured_ids_the_listing_is_polled_and_asked_again_only_when_old() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(MetricPlatform {
            listed: vec!["s_1".into(), "s_2".into(), "s_1".into()],
            silent: vec!["s_2".into()],
            ..MetricPlatform::default()
        });
        let (mut skills, board) = poller(
            MetricFamily::Skills,
            &platform,
            &store,
            &settings(vec![], vec![]),
        );
        skills.poll_once().await.unwrap();
        skills.poll_once().await.unwrap();
        assert_eq!(*platform.listings.lock().unwrap(), 1);
        assert_eq!(
            platform.calls.lock().unwrap()[1].0,
            ["s_1", "s_2"],
            "each listed skill once"
        );
        // A skill left out keeps the listed name; one answered without a name too.
        assert_eq!(board.borrow().skills["s_2"].skill_name, "name of s_2");
        assert_eq!(board.borrow().skills["s_1"].skill_name, "name of s_1");

        // An old listing is asked for again; when that fails for a passing reason the
        // ids listed before are polled, when the family is refused the poll fails.
        skills.listing_refresh = Duration::ZERO;
        platform
            .listing_errors
            .lock()
            .unwrap()
            .push_back(CxoneError::Timeout);
        let report = skills.poll_once().await.unwrap();
        assert_eq!(report.tiles, 2);
        platform
            .listing_errors
            .lock()
            .unwrap()
            .push_back(CxoneError::Forbidden {
                message: String::new(),
                scope: Some("reporting:skill:view".into()),
            });
        let err = skills.poll_once().await.unwrap_err();
        assert!(
            matches!(err, PollError::Platform(CxoneError::Forbidden { .. })),
            "{err}"
        );
        assert_eq!(*platform.listings.lock().unwrap(), 3);
        assert_eq!(platform.calls.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_failing_family_is_ok_again_with_fresh_tiles_once_a_poll_succeeds() {
        let (store, _dir) = temp_store().await;
        let platform = Arc::new(MetricPlatform {
            gate: Some(tokio::sync::Semaphore::new(0)),
            ..MetricPlatform::default()
        });
        platform
            .errors
            .lock()
            .unwrap()
            .push_back(CxoneError::Timeout);
        let mut settings = settings(vec!["s_1".into()], vec![]);
        settings.skill_interval = Duration::from_millis(10);
        let (skills, mut board) = poller(MetricFamily::Skills, &platform, &store, &settings);
        let stop = CancellationToken::new();
        let task = tokio::spawn(skills.run(stop.clone()));

        // The second poll waits at the gate, so the failing health is there to see.
        let within = Duration::from_secs(30);
        let failing = tokio::time::timeout(
            within,
            board.wait_for(|b| b.skills_health != FamilyHealth::Pending),
        )
        .await
        .expect("the first poll ends")
        .unwrap()
        .clone();
        assert_eq!(
            failing.skills_health,
            FamilyHealth::Failing {
                reason: "skill activity: the platform did not answer within the request timeout"
                    .into()
            }
        );
        assert!(failing.skills.is_empty() && failing.skills_polled_at.is_none());
        platform.gate.as_ref().unwrap().add_permits(1);
        let recovered = tokio::time::timeout(
            within,
            board.wait_for(|b| b.skills_health == FamilyHealth::Ok),
        )
        .await
        .expect("the family recovers")
        .unwrap()
        .clone();
        stop.cancel();
        task.await.unwrap();
        assert_eq!(recovered.skills["s_1"].contacts_queued, 4);
        assert!(recovered.skills_polled_at.is_some());
        assert_eq!(
            platform.calls.lock().unwrap().len(),
            2,
            "the third waits at the gate"
        );
    }

    #[tokio::test]
    async fn a_refused_family_stops_while_a_passing_failure_is_retried_next_interval() {
        let (store, _dir) = temp_store().await;
        // Paused once the database is open (its pool's timeouts would fire at once);
        // the failing polls write nothing, so the loop never waits on the database.
        tokio::time::pause();
        let platform = Arc::new(MetricPlatform::default());
        platform.errors.lock().unwrap().extend([
            CxoneError::Server {
                status: 503,
                message: "outage".into(),
                retry_after: None,
            },
            CxoneError::Timeout,
            CxoneError::Forbidden {
                message: "no".into(),
                scope: Some("reporting:queue:view".into()),
            },
        ]);
        let (queues, board) = poller(
            MetricFamily::Queues,
            &platform,
            &store,
            &settings(vec![], vec!["q_1".into()]),
        );
        let stop = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(queues.run(stop.clone()));

        // Time is paused: each sleep lets the poller run exactly to that instant.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let health = board.borrow().queues_health.clone();
        assert_eq!(
            health,
            FamilyHealth::Failing {
                reason: "queue stats: the platform failed with 503: outage".into()
            }
        );
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(task.is_finished(), "a refused family is no longer polled");
        task.await.unwrap();

        let calls = platform.calls.lock().unwrap();
        let seconds: Vec<u64> = calls
            .iter()
            .map(|(_, _, at)| (*at - started).as_secs())
            .collect();
        assert_eq!(seconds, [0, 30, 60]);
        assert!(calls.iter().all(|(_, lane, _)| *lane == Lane::Background));
        let board = board.borrow().clone();
        assert_eq!(
            board.queues_health,
            FamilyHealth::Unavailable {
                reason: "queue stats unavailable: missing scope reporting:queue:view (403)".into()
            }
        );
        assert_eq!(
            board.skills_health,
            FamilyHealth::Pending,
            "the other family is untouched"
        );
    }
}
