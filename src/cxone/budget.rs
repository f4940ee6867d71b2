//! The tenant's request budget: a token bucket shared by every caller in the process.
//!
//! The platform allows about 100 requests per minute per tenant and answers 429 past
//! that. wfmd keeps itself under a configured budget instead of learning the limit from
//! 429s: every API request (each attempt, each repeat after a token refresh; token calls
//! excepted) takes one permit before it is sent.
//!
//! The bucket reads `tokio::time::Instant`, so waiting for a permit follows the runtime's
//! clock: under `tokio::time::pause` a test can see the budget's pacing without waiting.
//!
//! Every request declares its [`Lane`]: the caller runs its platform work inside
//! [`in_lane`], and the budget reads the lane of the task it is asked from. A task that
//! declared nothing is in [`Lane::Automation`]. The lane travels with the task, not as
//! a parameter, so the `ContactCenter` trait and its dialects stay free of it.
//!
//! A request several callers wait for (one lookup of an agent's schedule, shared by a
//! change and the schedule book) runs in a [`SharedLane`]: each caller that joins raises
//! it to its own lane, so a person who joins a background fetch still waiting for its
//! permit is served as a person, never queued behind the background.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::telemetry::names::{BUDGET_PERMITS_TOTAL, BUDGET_WAIT_SECONDS};

/// Who is waiting for a platform request, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// A person waits for the answer: API and CLI single changes, wallboard actions,
    /// `/readyz`.
    Interactive,
    /// Work nobody watches live but that moves agents: rule firings, schedule
    /// automations, auto-corrections, bulk jobs.
    Automation,
    /// Work that can wait: schedule refresh, metric pollers, analytics.
    Background,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Interactive, Lane::Automation, Lane::Background];

    fn from_index(index: u8) -> Lane {
        Lane::ALL[usize::from(index).min(Lane::ALL.len() - 1)]
    }

    fn index(self) -> u8 {
        self as u8
    }

    /// The lane's name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Interactive => "interactive",
            Lane::Automation => "automation",
            Lane::Background => "background",
        }
    }
}

/// The lane of the running task and, within it, the party it works for (a bulk job, a
/// rule firing), so parties of one lane can be served in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub lane: Lane,
    /// `None`: the lane's anonymous party.
    pub party: Option<Arc<str>>,
}

/// The lane of a request several callers wait for: the most urgent of theirs, raised
/// as they join (see the module's doc).
#[derive(Debug, Clone)]
pub struct SharedLane(Arc<SharedLaneState>);

#[derive(Debug)]
struct SharedLaneState {
    lane: AtomicU8,
    /// Wakes the request while it waits for a permit, to be queued by its new lane.
    raised: Notify,
}

impl SharedLane {
    pub fn new(lane: Lane) -> SharedLane {
        SharedLane(Arc::new(SharedLaneState {
            lane: AtomicU8::new(lane.index()),
            raised: Notify::new(),
        }))
    }

    pub fn lane(&self) -> Lane {
        Lane::from_index(self.0.lane.load(Ordering::Acquire))
    }

    /// Raises the lane to `lane` when that is more urgent.
    pub fn raise(&self, lane: Lane) {
        let before = self.0.lane.fetch_min(lane.index(), Ordering::AcqRel);
        if lane.index() < before {
            // A permit is kept if the request is not waiting this instant: at worst it
            // looks at the queue once more for nothing.
            self.0.raised.notify_one();
        }
    }
}

/// A task's lane as declared: fixed, or shared with other callers.
#[derive(Debug, Clone)]
enum DeclaredLane {
    Fixed(Lane),
    Shared(SharedLane),
}

impl DeclaredLane {
    fn now(&self) -> Lane {
        match self {
            DeclaredLane::Fixed(lane) => *lane,
            DeclaredLane::Shared(shared) => shared.lane(),
        }
    }

    /// Resolves when the lane is raised (never, for a fixed one).
    async fn raised(&self) {
        match self {
            DeclaredLane::Fixed(_) => std::future::pending().await,
            DeclaredLane::Shared(shared) => shared.0.raised.notified().await,
        }
    }
}

/// What a task declared: its lane and party.
#[derive(Debug, Clone)]
struct Declared {
    lane: DeclaredLane,
    party: Option<Arc<str>>,
}

tokio::task_local! {
    static CALL_CONTEXT: Declared;
}

/// Runs `work` with its platform requests in `lane`, on behalf of `party` (a job or
/// firing id for fairness within the lane; `None` when there is only one of a kind).
pub async fn in_lane<F: Future>(lane: Lane, party: Option<&str>, work: F) -> F::Output {
    let declared = Declared {
        lane: DeclaredLane::Fixed(lane),
        party: party.map(Arc::from),
    };
    CALL_CONTEXT.scope(declared, work).await
}

/// [`in_lane`] for work several callers wait for, in `lane` as they raise it.
pub async fn in_shared_lane<F: Future>(
    lane: SharedLane,
    party: Option<Arc<str>>,
    work: F,
) -> F::Output {
    let declared = Declared {
        lane: DeclaredLane::Shared(lane),
        party,
    };
    CALL_CONTEXT.scope(declared, work).await
}

fn declared() -> Declared {
    CALL_CONTEXT.try_with(Declared::clone).unwrap_or(Declared {
        lane: DeclaredLane::Fixed(Lane::Automation),
        party: None,
    })
}

/// The lane and party declared by the running task ([`Lane::Automation`] when none was).
pub fn current_context() -> CallContext {
    let declared = declared();
    CallContext {
        lane: declared.lane.now(),
        party: declared.party,
    }
}

/// The share of permits background work keeps while other lanes wait, unless configured.
pub const DEFAULT_BACKGROUND_SHARE: f64 = 0.3;

/// The permits only the interactive lane may spend, unless configured: a change for an
/// agent the schedule book lacks costs three requests (schedule and break status
/// together, then the change), and none of them should wait behind the other lanes.
pub const DEFAULT_INTERACTIVE_RESERVE: u32 = 3;

/// The request budget. Share one per tenant as `Arc<Budget>`.
///
/// The `Bucket` sets the rate; the queue in front of it decides who gets the next
/// permit:
/// - a waiting [`Lane::Interactive`] request always goes first (oldest first), and may
///   spend the bucket's interactive reserve, which the other lanes leave alone;
/// - otherwise automation and background share the permits by stride scheduling:
///   background gets `background_share` of them while automation waits, and all of
///   them when nothing else waits;
/// - within automation, parties (bulk jobs, rule firings) take turns, so a small job
///   is not queued behind every item of a big one.
pub struct Budget {
    /// `None`: unlimited.
    bucket: Option<Bucket>,
    /// Kept for `Debug` and logs: what the budget was configured as.
    per_minute: Option<u32>,
    queue: Mutex<Queue>,
}

/// The rate: a token bucket kept as the generic cell rate algorithm (one instant, when
/// the bucket is full again), whose depth depends on the lane.
///
/// governor, which the budget used before, gives every caller the same depth; the
/// interactive reserve needs the other lanes to stop `reserve` permits short of empty.
/// Every permit still costs the same `every`, so the long-run rate is unchanged and a
/// minute sees at most `burst + reserve` permits beyond it.
struct Bucket {
    /// Time between permits.
    every: Duration,
    /// Permits a full bucket holds for the automation and background lanes.
    burst: u32,
    /// Permits a full bucket holds on top, for the interactive lane alone.
    reserve: u32,
    /// When the bucket is full again (in the past while it is full).
    full_at: Mutex<Instant>,
}

impl Bucket {
    fn new(every: Duration, burst: u32) -> Bucket {
        Bucket {
            every,
            burst: burst.max(1),
            reserve: 0,
            full_at: Mutex::new(Instant::now()),
        }
    }

    /// Takes a permit for `lane` at `now`, or says how long until there is one for it.
    fn take(&self, lane: Lane, now: Instant) -> Result<(), Duration> {
        let depth = match lane {
            Lane::Interactive => self.burst + self.reserve,
            Lane::Automation | Lane::Background => self.burst,
        };
        let mut full_at = lock(&self.full_at);
        // Taking is allowed while the bucket lacks at most `depth - 1` permits.
        let lacking = full_at.saturating_duration_since(now);
        let allowed = self.every * (depth - 1);
        if lacking > allowed {
            return Err(lacking - allowed);
        }
        *full_at = (*full_at).max(now) + self.every;
        Ok(())
    }
}

/// The requests waiting for a permit, and what fairness remembers between grants.
struct Queue {
    next_id: u64,
    waiters: Vec<Waiter>,
    /// Stride scheduling between automation and background: a grant advances the
    /// lane's pass by its stride (the inverse of its share); the lane with the lower
    /// pass goes next.
    automation_pass: f64,
    background_pass: f64,
    automation_stride: f64,
    background_stride: f64,
    /// Round-robin within automation: the grant count at each party's last permit.
    /// The party served longest ago goes next; a new party joins at the front.
    party_served: HashMap<Option<Arc<str>>, u64>,
    grants: u64,
}

struct Waiter {
    id: u64,
    lane: DeclaredLane,
    party: Option<Arc<str>>,
    wake: Arc<Notify>,
}

impl Waiter {
    fn lane(&self) -> Lane {
        self.lane.now()
    }
}

impl Queue {
    fn new(background_share: f64) -> Queue {
        let share = background_share.clamp(0.01, 0.99);
        Queue {
            next_id: 0,
            waiters: Vec::new(),
            automation_pass: 0.0,
            background_pass: 0.0,
            automation_stride: 1.0 / (1.0 - share),
            background_stride: 1.0 / share,
            party_served: HashMap::new(),
            grants: 0,
        }
    }

    /// The waiter the next permit belongs to.
    fn chosen(&self) -> Option<&Waiter> {
        if let Some(first) = self.waiters.iter().find(|w| w.lane() == Lane::Interactive) {
            return Some(first);
        }
        let automation = self
            .waiters
            .iter()
            .filter(|w| w.lane() == Lane::Automation)
            // Stable: among one party's waiters the oldest wins.
            .min_by_key(|w| self.party_served.get(&w.party).copied().unwrap_or(0));
        let background = self.waiters.iter().find(|w| w.lane() == Lane::Background);
        match (automation, background) {
            (Some(a), Some(b)) => Some(if self.background_pass < self.automation_pass {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        }
    }

    fn enqueue(&mut self, declared: &Declared) -> (u64, Arc<Notify>) {
        // A lane that had nobody waiting joins at the current pass of the other one, so
        // idle time is not banked as credit for a later burst.
        let waiting = |lane| self.waiters.iter().any(|w| w.lane() == lane);
        match declared.lane.now() {
            Lane::Automation if !waiting(Lane::Automation) => {
                self.automation_pass = self.automation_pass.max(self.background_pass);
            }
            Lane::Background if !waiting(Lane::Background) => {
                self.background_pass = self.background_pass.max(self.automation_pass);
            }
            _ => {}
        }
        let id = self.next_id;
        self.next_id += 1;
        let wake = Arc::new(Notify::new());
        self.waiters.push(Waiter {
            id,
            lane: declared.lane.clone(),
            party: declared.party.clone(),
            wake: wake.clone(),
        });
        (id, wake)
    }

    /// Removes waiter `id` (granted or given up) and wakes whoever is chosen now.
    fn remove(&mut self, id: u64) {
        self.waiters.retain(|w| w.id != id);
        self.wake_chosen();
    }

    fn granted(&mut self, id: u64) {
        let Some(waiter) = self.waiters.iter().find(|w| w.id == id) else {
            return;
        };
        self.grants += 1;
        match waiter.lane() {
            Lane::Interactive => {}
            Lane::Automation => {
                self.automation_pass += self.automation_stride;
                let party = waiter.party.clone();
                self.party_served.insert(party, self.grants);
            }
            Lane::Background => self.background_pass += self.background_stride,
        }
        // Parties of finished jobs are forgotten once they pile up.
        if self.party_served.len() > 4_096 {
            let waiting: Vec<_> = self.waiters.iter().map(|w| w.party.clone()).collect();
            self.party_served.retain(|party, _| waiting.contains(party));
        }
        self.remove(id);
    }

    fn wake_chosen(&self) {
        if let Some(waiter) = self.chosen() {
            waiter.wake.notify_one();
        }
    }
}

/// Takes the waiter out of the queue if its `acquire` is dropped before the permit.
struct Registration<'a> {
    queue: &'a Mutex<Queue>,
    id: u64,
    done: bool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(self.queue).remove(self.id);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Neither the queue nor the bucket holds an invariant a panic elsewhere could break
    // half-way.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Budget {
    /// At most about `n` requests per minute.
    ///
    /// The burst is `max(1, n / 60)`: a full bucket lets only a second's worth of requests
    /// through at once, so no 60-second window sees much more than `n`. `n = 0` is
    /// treated as 1 (the slowest budget there is) rather than as "unlimited": a budget
    /// that silently stopped limiting would be learned from 429s after all.
    pub fn per_minute(n: u32) -> Budget {
        let rate = n.max(1);
        Budget {
            bucket: Some(Bucket::new(Duration::from_secs(60) / rate, rate / 60)),
            per_minute: Some(rate),
            queue: Mutex::new(Queue::new(DEFAULT_BACKGROUND_SHARE)),
        }
    }

    /// No limit at all (tests, and platforms that enforce nothing).
    pub fn unlimited() -> Budget {
        Budget {
            bucket: None,
            per_minute: None,
            queue: Mutex::new(Queue::new(DEFAULT_BACKGROUND_SHARE)),
        }
    }

    /// The same budget with background work held to `share` (0 < share < 1) of the
    /// permits while other lanes wait (`cxone.background_share`).
    pub fn with_background_share(self, share: f64) -> Budget {
        Budget {
            queue: Mutex::new(Queue::new(share)),
            ..self
        }
    }

    /// The same budget with `reserve` permits of its bucket kept for the interactive
    /// lane (`cxone.interactive_reserve`): the other lanes take a permit only while more
    /// than that many are left, so a person's first requests never wait for a permit
    /// interval, however busy the other lanes are. The reserve refills at the budget's
    /// rate before the other lanes get permits again.
    pub fn with_interactive_reserve(self, reserve: u32) -> Budget {
        Budget {
            bucket: self.bucket.map(|bucket| Bucket { reserve, ..bucket }),
            ..self
        }
    }

    /// Waits until a request of the running task's lane may be sent (see [`in_lane`]).
    ///
    /// Cancel-safe: dropping the future leaves the queue and takes no permit.
    pub async fn acquire(&self) {
        let declared = declared();
        let Some(bucket) = &self.bucket else {
            metrics::counter!(BUDGET_PERMITS_TOTAL, "lane" => declared.lane.now().as_str())
                .increment(1);
            return;
        };
        let started = Instant::now();
        let (id, wake) = lock(&self.queue).enqueue(&declared);
        let mut registration = Registration {
            queue: &self.queue,
            id,
            done: false,
        };
        loop {
            let wait = {
                let mut queue = lock(&self.queue);
                if queue.chosen().map(|w| w.id) == Some(id) {
                    match bucket.take(declared.lane.now(), Instant::now()) {
                        Ok(()) => {
                            queue.granted(id);
                            registration.done = true;
                            break;
                        }
                        Err(wait) => Some(wait),
                    }
                } else {
                    None
                }
            };
            match wait {
                // Chosen: sleep until the bucket refills, unless someone more urgent
                // arrives (then they are chosen and this waiter looks again).
                Some(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = wake.notified() => {}
                        () = declared.lane.raised() => {}
                    }
                }
                // Raised: perhaps chosen now.
                None => {
                    tokio::select! {
                        () = wake.notified() => {}
                        () = declared.lane.raised() => {}
                    }
                }
            }
        }
        let lane = declared.lane.now().as_str();
        metrics::counter!(BUDGET_PERMITS_TOTAL, "lane" => lane).increment(1);
        metrics::histogram!(BUDGET_WAIT_SECONDS, "lane" => lane)
            .record(started.elapsed().as_secs_f64());
    }

    /// The configured rate in requests per minute; `None` when unlimited (or a test
    /// quota). Firings use it to say how long they will take.
    pub fn per_minute_rate(&self) -> Option<u32> {
        self.per_minute
    }

    /// Takes a permit if one is available now and nobody is queued for it, without
    /// waiting.
    pub fn try_acquire(&self) -> bool {
        let Some(bucket) = &self.bucket else {
            return true;
        };
        let queue = lock(&self.queue);
        queue.waiters.is_empty() && bucket.take(current_context().lane, Instant::now()).is_ok()
    }

    /// A budget of `burst` permits that come back one per `every`, for tests that need a
    /// bucket which does not refill within the test.
    #[cfg(test)]
    pub(crate) fn with_bucket(every: Duration, burst: u32) -> Budget {
        Budget {
            bucket: Some(Bucket::new(every, burst)),
            per_minute: None,
            queue: Mutex::new(Queue::new(DEFAULT_BACKGROUND_SHARE)),
        }
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.bucket, self.per_minute) {
            (None, _) => f.write_str("Budget(unlimited)"),
            (Some(_), Some(n)) => write!(f, "Budget({n}/min)"),
            (Some(_), None) => f.write_str("Budget(custom quota)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sixty_per_minute_gives_one_permit_then_none() {
        let budget = Budget::per_minute(60);
        assert!(budget.try_acquire());
        assert!(!budget.try_acquire());
    }

    #[test]
    fn burst_is_a_sixtieth_of_the_minute_budget() {
        let budget = Budget::per_minute(600);
        let granted = (0..50).filter(|_| budget.try_acquire()).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn zero_per_minute_is_the_slowest_budget_not_unlimited() {
        let budget = Budget::per_minute(0);
        assert!(budget.try_acquire());
        assert!(!budget.try_acquire());
    }

    #[test]
    fn unlimited_budget_never_refuses() {
        let budget = Budget::unlimited();
        assert!((0..10_000).all(|_| budget.try_acquire()));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_the_next_permit_under_paused_time() {
        let budget = Budget::per_minute(60);
        let start = tokio::time::Instant::now();
        budget.acquire().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        budget.acquire().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
            "second permit after {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_minute_of_acquires_stays_within_the_budget() {
        let budget = Budget::per_minute(120);
        let start = tokio::time::Instant::now();
        let mut granted = 0;
        while start.elapsed() < Duration::from_secs(60) {
            budget.acquire().await;
            if start.elapsed() < Duration::from_secs(60) {
                granted += 1;
            }
        }
        // Burst of 2 plus one permit every 0.5 s.
        assert!(
            (120..=122).contains(&granted),
            "granted {granted} in a minute"
        );
    }

    #[tokio::test]
    async fn the_lane_travels_with_the_task_and_defaults_to_automation() {
        assert_eq!(current_context().lane, Lane::Automation);
        let inner = in_lane(Lane::Interactive, Some("job-1"), async {
            current_context()
        })
        .await;
        assert_eq!(inner.lane, Lane::Interactive);
        assert_eq!(inner.party.as_deref(), Some("job-1"));
        assert_eq!(current_context().lane, Lane::Automation);
    }

    /// Spawns `tasks` loops acquiring in `lane` for `party` until the test ends, each
    /// grant counted in the returned counter.
    fn saturate(
        budget: &Arc<Budget>,
        lane: Lane,
        party: Option<&'static str>,
        tasks: usize,
    ) -> Arc<std::sync::atomic::AtomicU64> {
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for _ in 0..tasks {
            let (budget, count) = (budget.clone(), count.clone());
            tokio::spawn(in_lane(lane, party, async move {
                loop {
                    budget.acquire().await;
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        count
    }

    fn read(count: &std::sync::atomic::AtomicU64) -> u64 {
        count.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn an_interactive_request_waits_at_most_one_permit_interval_behind_saturated_lanes() {
        let budget = Arc::new(Budget::per_minute(60));
        saturate(&budget, Lane::Automation, Some("job-1"), 20);
        saturate(&budget, Lane::Automation, Some("job-2"), 20);
        saturate(&budget, Lane::Background, None, 20);
        tokio::time::sleep(Duration::from_millis(10_300)).await;
        for _ in 0..5 {
            let start = tokio::time::Instant::now();
            in_lane(Lane::Interactive, None, budget.acquire()).await;
            let waited = start.elapsed();
            assert!(waited <= Duration::from_secs(1), "waited {waited:?}");
            tokio::time::sleep(Duration::from_millis(2_500)).await;
        }
    }

    #[tokio::test]
    async fn the_other_lanes_leave_the_interactive_reserve_alone() {
        let budget = Budget::per_minute(60).with_interactive_reserve(3);
        let try_in = |lane| in_lane(lane, None, async { budget.try_acquire() });
        assert!(try_in(Lane::Background).await, "the bucket's own permit");
        assert!(!try_in(Lane::Background).await);
        assert!(!try_in(Lane::Automation).await);
        for _ in 0..3 {
            assert!(try_in(Lane::Interactive).await, "a reserved permit");
        }
        assert!(!try_in(Lane::Interactive).await, "the reserve is spent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_person_spends_the_reserve_at_once_behind_saturated_lanes_and_it_refills_first() {
        let budget = Arc::new(Budget::per_minute(60).with_interactive_reserve(3));
        let automation = saturate(&budget, Lane::Automation, Some("job-1"), 20);
        let background = saturate(&budget, Lane::Background, None, 20);
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        let others = || read(&automation) + read(&background);
        let before = others();
        // A change for an agent the book lacks: two lookups together, then the change.
        let start = tokio::time::Instant::now();
        let lookup = || in_lane(Lane::Interactive, None, budget.acquire());
        tokio::join!(lookup(), lookup());
        lookup().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "no permit was waited for");
        // The next three permits refill the reserve; then the others go on.
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        assert_eq!(
            others(),
            before,
            "the others waited while the reserve refilled"
        );
        tokio::time::sleep(Duration::from_millis(57_000)).await;
        // 60 s at one a second: the 3 reserved and 57 for the others, give or take the
        // permit under way at either end.
        let granted = others() - before;
        assert!(
            (56..=58).contains(&granted),
            "the others got {granted} in the minute"
        );
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            lookup().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the reserve was full again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_request_raised_by_a_person_is_served_as_a_persons_at_once() {
        let budget = Arc::new(Budget::per_minute(60).with_interactive_reserve(3));
        let _automation = saturate(&budget, Lane::Automation, Some("job-1"), 20);
        let _background = saturate(&budget, Lane::Background, None, 20);
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        // A background lookup waits behind the saturated lanes...
        let shared = SharedLane::new(Lane::Background);
        let lookup = tokio::spawn({
            let (budget, shared) = (budget.clone(), shared.clone());
            async move {
                in_shared_lane(shared, None, budget.acquire()).await;
                tokio::time::Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!lookup.is_finished(), "background waits its turn");
        // ...until a person joins it: then it spends the person's reserve at once.
        let joined = tokio::time::Instant::now();
        shared.raise(Lane::Interactive);
        assert_eq!(
            lookup.await.unwrap(),
            joined,
            "served the moment a person joined"
        );
        assert_eq!(shared.lane(), Lane::Interactive);
        shared.raise(Lane::Background);
        assert_eq!(shared.lane(), Lane::Interactive, "a lane is never lowered");
    }

    #[tokio::test(start_paused = true)]
    async fn background_keeps_to_its_share_while_automation_waits() {
        let budget = Arc::new(Budget::per_minute(600).with_background_share(0.3));
        let automation = saturate(&budget, Lane::Automation, None, 10);
        let background = saturate(&budget, Lane::Background, None, 10);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let (a, b) = (read(&automation), read(&background));
        let share = b as f64 / (a + b) as f64;
        assert!(
            (590..=612).contains(&(a + b)),
            "{a} + {b} permits in a minute"
        );
        assert!((0.27..=0.33).contains(&share), "background took {share:.3}");
    }

    #[tokio::test(start_paused = true)]
    async fn background_takes_the_whole_budget_when_nobody_else_waits() {
        let budget = Arc::new(Budget::per_minute(600).with_background_share(0.3));
        let background = saturate(&budget, Lane::Background, None, 10);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let b = read(&background);
        assert!((590..=612).contains(&b), "background alone got {b} permits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_party_is_served_in_turn_with_a_big_one() {
        let budget = Arc::new(Budget::per_minute(60));
        // The big job has its whole concurrency waiting before the small one arrives.
        let big = saturate(&budget, Lane::Automation, Some("big"), 8);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let small = tokio::spawn(in_lane(Lane::Automation, Some("small"), {
            let budget = budget.clone();
            async move {
                for _ in 0..10 {
                    budget.acquire().await;
                }
            }
        }));
        small.await.unwrap();
        let big_done = read(&big);
        assert!(
            big_done <= 12,
            "the big job got {big_done} permits while the small one got 10"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_neither_wedges_the_queue_nor_keeps_a_permit() {
        let budget = Arc::new(Budget::per_minute(60));
        budget.acquire().await;
        // The chosen waiter gives up while sleeping for the next permit…
        let gave_up = tokio::time::timeout(
            Duration::from_millis(500),
            in_lane(Lane::Interactive, None, budget.acquire()),
        )
        .await;
        assert!(gave_up.is_err());
        // …so the waiter behind it gets that permit when it comes, not later.
        let start = tokio::time::Instant::now();
        budget.acquire().await;
        assert!(
            start.elapsed() <= Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        assert!(lock(&budget.queue).waiters.is_empty());
    }

    #[test]
    fn debug_names_the_budget() {
        assert_eq!(format!("{:?}", Budget::per_minute(100)), "Budget(100/min)");
        assert_eq!(format!("{:?}", Budget::unlimited()), "Budget(unlimited)");
        assert_eq!(Budget::per_minute(100).per_minute_rate(), Some(100));
        assert_eq!(Budget::unlimited().per_minute_rate(), None);
    }
}
