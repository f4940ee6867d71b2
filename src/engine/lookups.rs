//! An agent's schedule and break status as the platform gives them, asked for once
//! however many want them at once.
//!
//! A change's compliance check and the schedule book's fill ask about the same agents,
//! often at the same moment (a burst of changes on a fresh daemon, while the book fills
//! itself): both go through one [`Lookups`], so one request per agent is in flight and
//! its answer serves both, and an answer is reused for `cxone.schedule_cache_ttl_ms`.
//!
//! Every tenant's answers of both kinds are kept in one cache for the process
//! (`KEPT`), each under its tenant's lookups, its kind and its agent, and each for
//! its tenant's TTL: a cache's own bookkeeping (its channels of reads and writes) takes
//! about 65 KB whatever it holds, where a tenant of 20 agents keeps far less than that
//! in it; a cache per tenant cost 2,000 tenants 130 MB.
//!
//! A lookup runs in a [`SharedLane`]: whoever joins it raises it to their own lane, so a
//! person whose change joins the book's background lookup, still waiting for its permit,
//! is served as a person, never queued behind the background.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use crate::cxone::budget::current_context;
use crate::cxone::{ContactCenter, CxoneError, SharedLane, in_shared_lane};
use crate::domain::{BreakStatus, Schedule};

/// How many answers the process keeps at most, all tenants together: a thousand
/// tenants of 500 agents, both kinds. Each lives for its tenant's TTL, so a cache
/// usually holds far fewer: the agents asked about within it.
const CAPACITY: u64 = 1_000_000;

/// Every tenant's answers. The values carry their TTL (`cxone.schedule_cache_ttl_ms`
/// is a tenant's setting), which [`TheirOwnTtl`] reads.
static KEPT: LazyLock<Kept> = LazyLock::new(|| {
    Cache::builder()
        .max_capacity(CAPACITY)
        .expire_after(TheirOwnTtl)
        .build()
});

/// Tells one [`Lookups`]'s answers from another's in [`KEPT`].
static NEXT_OWNER: AtomicU64 = AtomicU64::new(0);

/// Schedule and break-status lookups, shared by the transition engine and the schedule
/// book of a tenant.
pub struct Lookups {
    platform: Arc<dyn ContactCenter>,
    schedules: Answers<Schedule>,
    breaks: Answers<BreakStatus>,
}

impl Lookups {
    /// Answers are reused for `ttl`; zero reuses none and shares nothing.
    pub fn new(platform: Arc<dyn ContactCenter>, ttl: Duration) -> Lookups {
        let kept = (!ttl.is_zero()).then(|| Shelf {
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            ttl,
        });
        Lookups {
            platform,
            schedules: Answers::new(kept),
            breaks: Answers::new(kept),
        }
    }

    /// The agent's schedule.
    pub async fn schedule(&self, agent_id: &str) -> Result<Arc<Schedule>, CxoneError> {
        self.schedules
            .get(agent_id, self.platform.schedule(agent_id))
            .await
    }

    /// The agent's break status.
    pub async fn break_status(&self, agent_id: &str) -> Result<Arc<BreakStatus>, CxoneError> {
        self.breaks
            .get(agent_id, self.platform.break_status(agent_id))
            .await
    }

    /// Forgets what is kept of the agent: its schedule changed (an import).
    pub async fn forget(&self, agent_id: &str) {
        self.schedules.forget(agent_id).await;
        self.breaks.forget(agent_id).await;
    }
}

/// The answers kept, of every kind.
type Kept = Cache<Key, KeptAnswer>;

/// Where an answer is kept: its owner ([`Shelf::owner`]), its type and its agent.
type Key = (u64, TypeId, String);

/// An answer kept, with the time it is kept for.
type KeptAnswer = (Duration, Arc<dyn Any + Send + Sync>);

/// Each answer is kept for the TTL it was stored with.
struct TheirOwnTtl;

impl Expiry<Key, KeptAnswer> for TheirOwnTtl {
    fn expire_after_create(&self, _: &Key, (ttl, _): &KeptAnswer, _: Instant) -> Option<Duration> {
        Some(*ttl)
    }
}

/// Where one [`Lookups`] keeps its answers in [`KEPT`], and for how long.
#[derive(Clone, Copy)]
struct Shelf {
    owner: u64,
    ttl: Duration,
}

/// One kind of answer: those kept, and the lanes of the lookups in flight.
struct Answers<T> {
    /// `None`: nothing is kept or shared.
    kept: Option<Shelf>,
    lanes: Arc<Mutex<HashMap<String, SharedLane>>>,
    kind: PhantomData<T>,
}

impl<T: Send + Sync + 'static> Answers<T> {
    fn new(kept: Option<Shelf>) -> Answers<T> {
        Answers {
            kept,
            lanes: Arc::default(),
            kind: PhantomData,
        }
    }

    fn key(shelf: Shelf, agent_id: &str) -> Key {
        (shelf.owner, TypeId::of::<T>(), agent_id.to_owned())
    }

    /// The answer kept for `agent_id`, else the one in flight, else `fetch`'s.
    async fn get(
        &self,
        agent_id: &str,
        fetch: impl Future<Output = Result<T, CxoneError>>,
    ) -> Result<Arc<T>, CxoneError> {
        let Some(shelf) = self.kept else {
            return fetch.await.map(Arc::new);
        };
        let asker = current_context();
        // A lookup in flight serves this caller too, at this caller's lane if it is more
        // urgent.
        if let Some(lane) = lock(&self.lanes).get(agent_id) {
            lane.raise(asker.lane);
        }
        let lookup = async {
            let lane = SharedLane::new(asker.lane);
            let _flying = Flying::new(&self.lanes, agent_id, lane.clone());
            in_shared_lane(lane, asker.party.clone(), fetch)
                .await
                .map(|answer| (shelf.ttl, Arc::new(answer) as Arc<dyn Any + Send + Sync>))
        };
        let (_, answer) = KEPT
            .try_get_with(Self::key(shelf, agent_id), lookup)
            .await
            .map_err(|error| (*error).clone())?;
        Ok(answer
            .downcast()
            .unwrap_or_else(|_| unreachable!("an answer is kept under its own type")))
    }

    async fn forget(&self, agent_id: &str) {
        if let Some(shelf) = self.kept {
            KEPT.invalidate(&Self::key(shelf, agent_id)).await;
        }
    }
}

/// A lookup's lane, listed while the lookup is in flight (however it ends).
struct Flying<'a> {
    lanes: &'a Mutex<HashMap<String, SharedLane>>,
    agent_id: &'a str,
}

impl<'a> Flying<'a> {
    fn new(
        lanes: &'a Mutex<HashMap<String, SharedLane>>,
        agent_id: &'a str,
        lane: SharedLane,
    ) -> Flying<'a> {
        lock(lanes).insert(agent_id.to_owned(), lane);
        Flying { lanes, agent_id }
    }
}

impl Drop for Flying<'_> {
    fn drop(&mut self) {
        lock(self.lanes).remove(self.agent_id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::cxone::fake::FakePlatform;
    use crate::cxone::{Lane, in_lane};
    use crate::domain::ScheduleStatus;

    fn platform() -> Arc<FakePlatform> {
        let platform = Arc::new(FakePlatform::default());
        let on_shift = || {
            let now = chrono::Utc::now();
            Schedule {
                status: ScheduleStatus::Active,
                timezone: None,
                shift_start: Some(now - chrono::TimeDelta::hours(1)),
                shift_end: Some(now + chrono::TimeDelta::hours(7)),
                breaks: Some(Vec::new()),
                activities: Vec::new(),
            }
        };
        platform.add_agent("u_1", on_shift());
        platform.add_agent("u_2", on_shift());
        platform
    }

    #[tokio::test]
    async fn callers_at_once_share_one_lookup_and_reuse_its_answer() {
        let platform = platform();
        let lookups = Lookups::new(platform.clone(), Duration::from_secs(30));
        let (a, b, c) = tokio::join!(
            lookups.schedule("u_1"),
            lookups.schedule("u_1"),
            lookups.schedule("u_2")
        );
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        lookups.schedule("u_1").await.unwrap();
        assert_eq!(platform.calls("schedule "), 2, "one per agent");
        lookups.forget("u_1").await;
        lookups.schedule("u_1").await.unwrap();
        assert_eq!(platform.calls("schedule "), 3, "asked again once forgotten");
    }

    #[tokio::test]
    async fn both_kinds_of_answer_are_kept_apart_in_one_cache() {
        let platform = platform();
        let lookups = Lookups::new(platform.clone(), Duration::from_secs(30));
        for _ in 0..2 {
            let schedule = lookups.schedule("u_1").await.unwrap();
            assert_eq!(schedule.status, ScheduleStatus::Active);
            lookups.break_status("u_1").await.unwrap();
        }
        assert_eq!(platform.calls("schedule "), 1);
        assert_eq!(platform.calls("breaks "), 1);
        let owner = lookups.schedules.kept.unwrap().owner;
        let kept = || KEPT.iter().filter(|(key, _)| key.0 == owner).count();
        assert_eq!(kept(), 2, "the schedule and the break status");
        lookups.forget("u_1").await;
        assert_eq!(kept(), 0);
    }

    #[tokio::test]
    async fn tenants_keep_their_answers_apart_each_for_its_own_ttl() {
        let platform = platform();
        let brief = Lookups::new(platform.clone(), Duration::from_millis(1));
        let long = Lookups::new(platform.clone(), Duration::from_secs(30));
        brief.schedule("u_1").await.unwrap();
        long.schedule("u_1").await.unwrap();
        assert_eq!(
            platform.calls("schedule "),
            2,
            "one tenant's answer is not another's"
        );
        // moka's clock: an answer past its TTL is not handed out, whether or not it
        // has been removed yet.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while platform.calls("schedule ") < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the brief answer never expired"
            );
            brief.schedule("u_1").await.unwrap();
        }
        for _ in 0..3 {
            long.schedule("u_1").await.unwrap();
        }
        assert_eq!(
            platform.calls("schedule "),
            3,
            "the long answer is still kept"
        );
    }

    #[tokio::test]
    async fn without_a_ttl_every_caller_asks() {
        let platform = platform();
        let lookups = Lookups::new(platform.clone(), Duration::ZERO);
        let (a, b) = tokio::join!(lookups.schedule("u_1"), lookups.schedule("u_1"));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(platform.calls("schedule "), 2);
    }

    /// The lane of the lookup of `agent` in flight, once it is `lane`.
    async fn flying_in(lookups: &Lookups, agent: &str, lane: Lane) {
        for _ in 0..1_000 {
            if lock(&lookups.schedules.lanes)
                .get(agent)
                .map(SharedLane::lane)
                == Some(lane)
            {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the lookup of {agent} is not in flight in {lane:?}");
    }

    #[tokio::test]
    async fn a_person_joining_a_background_lookup_raises_it_to_their_lane() {
        let platform = platform();
        // The schedule lookup is answered only once break status has been asked for.
        platform
            .schedule_awaits_breaks
            .store(true, Ordering::Relaxed);
        let lookups = Arc::new(Lookups::new(platform.clone(), Duration::from_secs(30)));
        let ask = |lane| {
            let lookups = lookups.clone();
            tokio::spawn(in_lane(lane, None, async move {
                lookups.schedule("u_1").await.map(drop)
            }))
        };
        let background = ask(Lane::Background);
        flying_in(&lookups, "u_1", Lane::Background).await;
        let person = ask(Lane::Interactive);
        flying_in(&lookups, "u_1", Lane::Interactive).await;
        platform.break_status("u_1").await.unwrap();
        assert!(background.await.unwrap().is_ok() && person.await.unwrap().is_ok());
        assert_eq!(platform.calls("schedule "), 1, "one lookup served both");
        assert!(lock(&lookups.schedules.lanes).is_empty(), "none in flight");
    }
}
