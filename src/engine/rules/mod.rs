//! The rule scheduler: fires each WFM rule at its slots, each slot at most once.
//!
//! Every rule has a cursor: all its slots up to the cursor have been dealt with. The loop
//! sleeps until the earliest next slot of any rule, then [`RuleScheduler::step`] fires,
//! for each rule, the latest slot that has come (a firing is its own task, so a long
//! fan-out never delays another rule) and moves the cursors to now. What a firing does
//! is the [`Firer`]'s business; the daemon's is [`RuleFirer`], which claims the slot in
//! SQLite before touching any agent, so a slot fires once even across restarts.
//!
//! - **Start** ([`RuleScheduler::start`]): firings left `running` by a crash or a
//!   shutdown are resumed (when their rule is still configured as it was). A rule that
//!   has fired before and whose latest slot passed while wfmd was down fires it when it
//!   is no later than the rule's `catch_up`, and otherwise records it as skipped; a
//!   backlog of several missed slots never fires. A rule that never fired has missed
//!   nothing.
//! - **Late in the loop**: a slot reached later than `max(catch_up, 1 min)` (the machine
//!   was suspended) is skipped the same way.
//! - **Reload** ([`RulesHandle::replace`], on SIGHUP): the new rules replace the old at
//!   once; a rule that is unchanged keeps its cursor, a new or changed one starts from
//!   now. History is keyed by name, so an unchanged rule keeps its firings.
//!
//! Time: the loop reads "now" from a [`Clock`] (the engine's) and sleeps with
//! `tokio::time`. The daemon's clock is the wall clock (re-read at least every minute, so
//! a clock step or a suspend is noticed), or the simulator's scaled time under
//! `--time-scale`; tests use [`Clock::starting_at`], a UTC instant plus tokio's elapsed
//! time, so under `tokio::time::pause` days of slots pass in milliseconds.
//!
//! Not tokio-cron-scheduler, which the first design named (docs/architecture.md): it polls
//! `Utc::now()` every 500 ms, so it cannot be driven by paused time, and keeps jobs in
//! memory only. Slots are computed by croner (the parser it uses) in `domain::cron`.

mod firing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::domain::rule::Rule;
use crate::time::rfc3339;

pub use firing::{AgentVerdict, FiringVerdict, RuleFirer, estimate, idempotency_key};

/// How late the running loop may reach a slot and still fire it, whatever `catch_up`.
pub const LATE_GRACE: Duration = Duration::from_secs(60);

/// The longest the loop sleeps before reading the clock again.
const MAX_NAP: Duration = Duration::from_secs(60);

/// Where the scheduler reads the time: the engine's clock ([`super::clock`]).
pub use super::clock::Clock;

type RuleList = Arc<[Arc<Rule>]>;

/// Swaps the rules a running scheduler uses (cheap to clone).
#[derive(Clone)]
pub struct RulesHandle {
    sender: Arc<watch::Sender<RuleList>>,
}

impl RulesHandle {
    /// A handle holding `rules`, for schedulers to come ([`RuleScheduler::with_handle`]):
    /// a tenant's leader builds one each time it starts to lead, and the rules a SIGHUP
    /// gave the last one stay.
    pub fn new(rules: Vec<Rule>) -> RulesHandle {
        let list: RuleList = rules.into_iter().map(Arc::new).collect();
        RulesHandle {
            sender: Arc::new(watch::channel(list).0),
        }
    }

    /// Replaces every rule at once; the scheduler picks them up immediately.
    pub fn replace(&self, rules: Vec<Rule>) {
        self.sender
            .send_replace(rules.into_iter().map(Arc::new).collect());
    }

    pub fn current(&self) -> Vec<Arc<Rule>> {
        self.sender.borrow().to_vec()
    }
}

/// A firing a previous run left unfinished.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    pub id: i64,
    pub rule: String,
    pub slot: DateTime<Utc>,
    /// The rule's definition when it started ([`Rule::definition`]).
    pub definition: serde_json::Value,
}

/// A slot to fire: `slot` of `rule`, as a new firing (`resume` is `None`; it is claimed
/// first) or carrying on with the unfinished firing `resume`.
#[derive(Debug, Clone)]
pub struct Firing {
    pub rule: Arc<Rule>,
    pub slot: DateTime<Utc>,
    pub resume: Option<i64>,
}

/// What the scheduler does with the slots it finds; the daemon's is [`RuleFirer`].
#[async_trait]
pub trait Firer: Send + Sync + 'static {
    /// The latest slot of `rule` recorded in any way (fired, running or skipped).
    async fn last_slot(&self, rule: &str) -> anyhow::Result<Option<DateTime<Utc>>>;

    /// Firings left running by an earlier process.
    async fn unfinished(&self) -> anyhow::Result<Vec<Unfinished>>;

    /// Fires the slot (unless it was claimed already), or carries on with the unfinished
    /// firing. Stops starting agent changes once `stop` is cancelled.
    async fn fire(&self, firing: Firing, stop: CancellationToken);

    /// Records that `slot` of `rule` was reached `late` and will not fire.
    async fn skip(&self, rule: &Rule, slot: DateTime<Utc>, late: Duration) -> anyhow::Result<()>;

    /// Ends an unfinished firing that cannot be resumed.
    async fn abandon(&self, firing: &Unfinished, why: &str) -> anyhow::Result<()>;
}

/// What the scheduler decided about a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A firing was started, `late` after the slot.
    Fire {
        rule: String,
        slot: DateTime<Utc>,
        late: Duration,
    },
    /// An unfinished firing is carried on.
    Resume { rule: String, slot: DateTime<Utc> },
    /// The slot was reached too late and was recorded as skipped.
    Skip {
        rule: String,
        slot: DateTime<Utc>,
        late: Duration,
    },
    /// An unfinished firing whose rule changed or went away was ended.
    Abandon { rule: String, slot: DateTime<Utc> },
}

/// A rule and the instant up to which its slots have been dealt with.
struct Armed {
    rule: Arc<Rule>,
    cursor: DateTime<Utc>,
}

/// Fires rules at their slots. [`RuleScheduler::run`] in the daemon; tests call
/// [`RuleScheduler::start`] and [`RuleScheduler::step`] with the instant they choose.
pub struct RuleScheduler {
    firer: Arc<dyn Firer>,
    handle: RulesHandle,
    rules: watch::Receiver<RuleList>,
    clock: Clock,
    armed: Vec<Armed>,
    firings: JoinSet<()>,
    stop_firings: CancellationToken,
}

impl RuleScheduler {
    pub fn new(rules: Vec<Rule>, firer: Arc<dyn Firer>) -> RuleScheduler {
        RuleScheduler::with_handle(RulesHandle::new(rules), firer)
    }

    /// A scheduler firing the rules `handle` holds, now and as it replaces them.
    pub fn with_handle(handle: RulesHandle, firer: Arc<dyn Firer>) -> RuleScheduler {
        RuleScheduler {
            firer,
            rules: handle.sender.subscribe(),
            handle,
            clock: Clock::Wall,
            armed: Vec::new(),
            firings: JoinSet::new(),
            stop_firings: CancellationToken::new(),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> RuleScheduler {
        self.clock = clock;
        self
    }

    /// The handle that replaces the rules (SIGHUP uses it).
    pub fn handle(&self) -> RulesHandle {
        self.handle.clone()
    }

    /// Resumes unfinished firings and fires or skips each rule's missed slot, as of `now`.
    pub async fn start(&mut self, now: DateTime<Utc>) -> Vec<Decision> {
        let rules = self.rules.borrow_and_update().clone();
        let mut decisions = Vec::new();
        match self.firer.unfinished().await {
            Ok(unfinished) => {
                for firing in unfinished {
                    let rule = rules.iter().find(|r| r.name == firing.rule);
                    match rule {
                        Some(rule) if rule.definition() == firing.definition => {
                            tracing::info!(rule = %rule.name, slot = %rfc3339(firing.slot), "resuming an interrupted firing");
                            self.spawn_firing(Firing {
                                rule: rule.clone(),
                                slot: firing.slot,
                                resume: Some(firing.id),
                            });
                            decisions.push(Decision::Resume {
                                rule: firing.rule,
                                slot: firing.slot,
                            });
                        }
                        _ => {
                            let why = "the rule was removed or changed before the interrupted \
                                       firing could be resumed";
                            if let Err(e) = self.firer.abandon(&firing, why).await {
                                tracing::error!(error = %e, rule = %firing.rule, "cannot end an unfinished firing");
                            }
                            decisions.push(Decision::Abandon {
                                rule: firing.rule,
                                slot: firing.slot,
                            });
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot look for unfinished rule firings"),
        }
        self.armed.clear();
        for rule in rules.iter() {
            match self.firer.last_slot(&rule.name).await {
                Ok(Some(last)) => {
                    if let Some(slot) = rule.slots.latest_between(last, now) {
                        let late = (now - slot).to_std().unwrap_or_default();
                        let decision = self.fire_or_skip(rule, slot, late, rule.catch_up).await;
                        decisions.push(decision);
                    }
                }
                // A rule that never fired has missed nothing.
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, rule = %rule.name, "cannot read the rule's last firing; its missed slot, if any, is not caught up");
                }
            }
            self.armed.push(Armed {
                rule: rule.clone(),
                cursor: now,
            });
        }
        decisions
    }

    /// Fires (or, when reached too late, skips) the latest slot of each rule that has
    /// come since the last step, and moves every cursor to `now`.
    pub async fn step(&mut self, now: DateTime<Utc>) -> Vec<Decision> {
        let mut due = Vec::new();
        for armed in &mut self.armed {
            if let Some(slot) = armed.rule.slots.latest_between(armed.cursor, now) {
                due.push((armed.rule.clone(), slot));
            }
            armed.cursor = armed.cursor.max(now);
        }
        let mut decisions = Vec::new();
        for (rule, slot) in due {
            let late = (now - slot).to_std().unwrap_or_default();
            let allowed = rule.catch_up.max(LATE_GRACE);
            decisions.push(self.fire_or_skip(&rule, slot, late, allowed).await);
        }
        decisions
    }

    async fn fire_or_skip(
        &mut self,
        rule: &Arc<Rule>,
        slot: DateTime<Utc>,
        late: Duration,
        allowed: Duration,
    ) -> Decision {
        let name = rule.name.clone();
        if late <= allowed {
            self.spawn_firing(Firing {
                rule: rule.clone(),
                slot,
                resume: None,
            });
            return Decision::Fire {
                rule: name,
                slot,
                late,
            };
        }
        if let Err(e) = self.firer.skip(rule, slot, late).await {
            tracing::error!(error = %e, rule = %name, "cannot record a skipped slot");
        }
        Decision::Skip {
            rule: name,
            slot,
            late,
        }
    }

    fn spawn_firing(&mut self, firing: Firing) {
        let firer = self.firer.clone();
        let stop = self.stop_firings.clone();
        crate::tasks::spawn_in(
            &mut self.firings,
            async move { firer.fire(firing, stop).await },
        );
    }

    /// Takes the rules the handle holds now: unchanged rules keep their cursors, new and
    /// changed ones start at `now`.
    pub fn reload(&mut self, now: DateTime<Utc>) {
        let rules = self.rules.borrow_and_update().clone();
        let old: HashMap<String, Armed> = self
            .armed
            .drain(..)
            .map(|armed| (armed.rule.name.clone(), armed))
            .collect();
        let (mut added, mut changed, mut kept) = (Vec::new(), Vec::new(), 0);
        for rule in rules.iter() {
            let cursor = match old.get(&rule.name) {
                Some(armed) if armed.rule == *rule => {
                    kept += 1;
                    armed.cursor
                }
                Some(_) => {
                    changed.push(rule.name.as_str());
                    now
                }
                None => {
                    added.push(rule.name.as_str());
                    now
                }
            };
            self.armed.push(Armed {
                rule: rule.clone(),
                cursor,
            });
        }
        let removed: Vec<&str> = old
            .keys()
            .filter(|name| !rules.iter().any(|r| &r.name == *name))
            .map(String::as_str)
            .collect();
        tracing::info!(
            rules = rules.len(),
            unchanged = kept,
            added = ?added,
            changed = ?changed,
            removed = ?removed,
            "rules reloaded"
        );
    }

    /// The earliest next slot of any rule.
    pub fn next_slot(&self) -> Option<DateTime<Utc>> {
        self.armed
            .iter()
            .filter_map(|armed| armed.rule.slots.next_after(armed.cursor))
            .min()
    }

    /// Waits for every firing in flight to end (tests; shutdown).
    pub async fn settle(&mut self) {
        while let Some(joined) = self.firings.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "a rule firing ended abnormally");
            }
        }
    }

    /// Fires rules until `stop` is cancelled; then lets the agent changes in flight
    /// finish, leaving unfinished firings to be resumed at the next start.
    pub async fn run(mut self, stop: CancellationToken) {
        let start = self.clock.now();
        self.start(start).await;
        tracing::info!(rules = self.armed.len(), "rule scheduler started");
        loop {
            let now = self.clock.now();
            let nap = self
                .next_slot()
                .map_or(MAX_NAP, |at| self.clock.real(at - now))
                .min(MAX_NAP);
            tokio::select! {
                () = stop.cancelled() => break,
                changed = self.rules.changed() => {
                    if changed.is_ok() {
                        let now = self.clock.now();
                        self.reload(now);
                    }
                    continue;
                }
                Some(joined) = self.firings.join_next(), if !self.firings.is_empty() => {
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "a rule firing ended abnormally");
                    }
                    continue;
                }
                () = tokio::time::sleep(nap) => {}
            }
            let now = self.clock.now();
            self.step(now).await;
        }
        self.stop_firings.cancel();
        self.settle().await;
        tracing::info!("rule scheduler stopped");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::domain::AgentState;
    use crate::domain::cron::Slots;
    use crate::domain::rule::{Action, Conditions, RuleSelector};

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn rule(name: &str, cron: &str, catch_up: Duration) -> Rule {
        Rule {
            name: name.into(),
            slots: Slots::parse(cron, "America/New_York").unwrap(),
            selector: RuleSelector::Team("t_1".into()),
            action: Action::Set {
                state: AgentState::NotReady,
                reason: Some("LUNCH".into()),
            },
            conditions: Conditions::default(),
            catch_up,
            when_busy: Default::default(),
        }
    }

    /// A firing asked for: rule, slot, and when by the scheduler's clock.
    type Fired = (String, DateTime<Utc>, DateTime<Utc>);

    /// Records what the scheduler asks for.
    struct Recorder {
        clock: Clock,
        history: Mutex<HashMap<String, DateTime<Utc>>>,
        unfinished: Mutex<Vec<Unfinished>>,
        fired: Mutex<Vec<Fired>>,
        skipped: Mutex<Vec<(String, DateTime<Utc>)>>,
        abandoned: Mutex<Vec<i64>>,
    }

    impl Recorder {
        fn new(clock: Clock) -> Arc<Recorder> {
            Arc::new(Recorder {
                clock,
                history: Mutex::default(),
                unfinished: Mutex::default(),
                fired: Mutex::default(),
                skipped: Mutex::default(),
                abandoned: Mutex::default(),
            })
        }

        fn fired(&self, rule: &str) -> Vec<String> {
            let fired = self.fired.lock().unwrap();
            fired
                .iter()
                .filter(|(name, _, _)| name == rule)
                .map(|(_, slot, _)| slot.format("%a %FT%TZ").to_string())
                .collect()
        }
    }

    #[async_trait]
    impl Firer for Recorder {
        async fn last_slot(&self, rule: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
            Ok(self.history.lock().unwrap().get(rule).copied())
        }
        async fn unfinished(&self) -> anyhow::Result<Vec<Unfinished>> {
            Ok(self.unfinished.lock().unwrap().clone())
        }
        async fn fire(&self, firing: Firing, _: CancellationToken) {
            let Firing { rule, slot, .. } = firing;
            self.history.lock().unwrap().insert(rule.name.clone(), slot);
            let now = self.clock.now();
            self.fired
                .lock()
                .unwrap()
                .push((rule.name.clone(), slot, now));
        }
        async fn skip(&self, rule: &Rule, slot: DateTime<Utc>, _: Duration) -> anyhow::Result<()> {
            self.history.lock().unwrap().insert(rule.name.clone(), slot);
            self.skipped.lock().unwrap().push((rule.name.clone(), slot));
            Ok(())
        }
        async fn abandon(&self, firing: &Unfinished, _: &str) -> anyhow::Result<()> {
            self.abandoned.lock().unwrap().push(firing.id);
            Ok(())
        }
    }

    /// Runs the scheduler loop over `[from, to)` of paused tokio time.
    async fn run_between(rules: Vec<Rule>, from: &str, to: &str) -> Arc<Recorder> {
        let (from, to) = (utc(from), utc(to));
        let clock = Clock::starting_at(from);
        let recorder = Recorder::new(clock);
        let scheduler = RuleScheduler::new(rules, recorder.clone()).with_clock(clock);
        let stop = CancellationToken::new();
        let task = tokio::spawn(scheduler.run(stop.clone()));
        // Time is paused: this returns once tokio's clock has been advanced, timer by
        // timer, to `to`, which takes no real time.
        tokio::time::sleep((to - from).to_std().unwrap()).await;
        stop.cancel();
        task.await.unwrap();
        for (rule, slot, at) in recorder.fired.lock().unwrap().iter() {
            let late = *at - *slot;
            assert!(
                late >= chrono::TimeDelta::zero() && late < chrono::TimeDelta::seconds(1),
                "{rule} slot {slot} fired at {at}"
            );
        }
        recorder
    }

    #[tokio::test(start_paused = true)]
    async fn weekday_noon_in_new_york_fires_once_a_weekday_at_the_right_utc_instant_across_dst() {
        let rules = || {
            vec![
                rule("lunch", "0 0 12 * * Mon-Fri", Duration::ZERO),
                rule("gap", "0 30 2 * * *", Duration::ZERO),
                rule("repeated", "0 30 1 * * *", Duration::ZERO),
            ]
        };
        let march = run_between(rules(), "2026-03-05T00:00:00Z", "2026-03-11T00:00:00Z").await;
        assert_eq!(
            march.fired("lunch"),
            [
                "Thu 2026-03-05T17:00:00Z",
                "Fri 2026-03-06T17:00:00Z",
                "Mon 2026-03-09T16:00:00Z",
                "Tue 2026-03-10T16:00:00Z",
            ]
        );
        // 02:30 does not exist on 2026-03-08: that day fires at 03:00 EDT.
        assert_eq!(
            march.fired("gap"),
            [
                "Thu 2026-03-05T07:30:00Z",
                "Fri 2026-03-06T07:30:00Z",
                "Sat 2026-03-07T07:30:00Z",
                "Sun 2026-03-08T07:00:00Z",
                "Mon 2026-03-09T06:30:00Z",
                "Tue 2026-03-10T06:30:00Z",
            ]
        );

        let november = run_between(rules(), "2026-10-29T00:00:00Z", "2026-11-04T00:00:00Z").await;
        assert_eq!(
            november.fired("lunch"),
            [
                "Thu 2026-10-29T16:00:00Z",
                "Fri 2026-10-30T16:00:00Z",
                "Mon 2026-11-02T17:00:00Z",
                "Tue 2026-11-03T17:00:00Z",
            ]
        );
        // 01:30 happens twice on 2026-11-01: it fires once, at the first.
        assert_eq!(
            november.fired("repeated"),
            [
                "Thu 2026-10-29T05:30:00Z",
                "Fri 2026-10-30T05:30:00Z",
                "Sat 2026-10-31T05:30:00Z",
                "Sun 2026-11-01T05:30:00Z",
                "Mon 2026-11-02T06:30:00Z",
                "Tue 2026-11-03T06:30:00Z",
            ]
        );
        assert!(november.skipped.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn at_start_only_the_latest_missed_slot_fires_within_catch_up_else_it_is_skipped() {
        let clock = Clock::Wall;
        let recorder = Recorder::new(clock);
        let hourly = |name: &str, catch_up| rule(name, "0 0 * * * *", catch_up);
        for name in ["tolerant", "strict"] {
            recorder
                .history
                .lock()
                .unwrap()
                .insert(name.into(), utc("2026-06-01T10:00:00Z"));
        }
        let rules = vec![
            hourly("tolerant", Duration::from_secs(3_600)),
            hourly("strict", Duration::ZERO),
            hourly("brand-new", Duration::from_secs(3_600)),
        ];
        let mut scheduler = RuleScheduler::new(rules, recorder.clone());
        // Down from 10:00 to 13:20: 11:00, 12:00 and 13:00 passed.
        let decisions = scheduler.start(utc("2026-06-01T13:20:00Z")).await;
        scheduler.settle().await;
        let twenty_minutes = Duration::from_secs(20 * 60);
        assert_eq!(
            decisions,
            [
                Decision::Fire {
                    rule: "tolerant".into(),
                    slot: utc("2026-06-01T13:00:00Z"),
                    late: twenty_minutes
                },
                Decision::Skip {
                    rule: "strict".into(),
                    slot: utc("2026-06-01T13:00:00Z"),
                    late: twenty_minutes
                },
            ],
            "one slot each, never the backlog; a new rule missed nothing"
        );
        assert_eq!(recorder.fired("tolerant").len(), 1);

        // Running on: the next slot fires for all three.
        let decisions = scheduler.step(utc("2026-06-01T14:00:00Z")).await;
        assert_eq!(decisions.len(), 3);
        assert!(
            decisions
                .iter()
                .all(|d| matches!(d, Decision::Fire { late, .. } if late.is_zero()))
        );
        assert!(scheduler.step(utc("2026-06-01T14:30:00Z")).await.is_empty());
        // A slot the loop reaches more than a minute late (a suspended machine) is
        // skipped unless catch_up allows it.
        let decisions = scheduler.step(utc("2026-06-01T15:05:00Z")).await;
        let skipped: Vec<&str> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Skip { rule, .. } => Some(rule.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(skipped, ["strict"]);
    }

    #[tokio::test]
    async fn unfinished_firings_resume_when_their_rule_is_unchanged_and_end_otherwise() {
        let recorder = Recorder::new(Clock::Wall);
        let lunch = rule("lunch", "0 0 12 * * *", Duration::ZERO);
        let slot = utc("2026-06-01T16:00:00Z");
        let mut changed = rule("meeting", "0 0 9 * * *", Duration::ZERO).definition();
        changed["action"]["reason"] = "OLD".into();
        *recorder.unfinished.lock().unwrap() = vec![
            Unfinished {
                id: 1,
                rule: "lunch".into(),
                slot,
                definition: lunch.definition(),
            },
            Unfinished {
                id: 2,
                rule: "meeting".into(),
                slot,
                definition: changed,
            },
            Unfinished {
                id: 3,
                rule: "gone".into(),
                slot,
                definition: serde_json::json!({}),
            },
        ];
        let rules = vec![lunch, rule("meeting", "0 0 9 * * *", Duration::ZERO)];
        let mut scheduler = RuleScheduler::new(rules, recorder.clone());
        let decisions = scheduler.start(utc("2026-06-01T16:00:05Z")).await;
        scheduler.settle().await;
        assert_eq!(
            decisions[0],
            Decision::Resume {
                rule: "lunch".into(),
                slot
            }
        );
        assert_eq!(*recorder.abandoned.lock().unwrap(), [2, 3]);
        assert_eq!(recorder.fired("lunch").len(), 1);
    }

    #[tokio::test]
    async fn a_reload_keeps_unchanged_rules_and_starts_new_or_changed_ones_from_now() {
        let recorder = Recorder::new(Clock::Wall);
        let every_minute = |name: &str, cron: &str| rule(name, cron, Duration::ZERO);
        let mut scheduler = RuleScheduler::new(
            vec![
                every_minute("kept", "0 * * * * *"),
                every_minute("changed", "0 * * * * *"),
                every_minute("removed", "0 * * * * *"),
            ],
            recorder.clone(),
        );
        let handle = scheduler.handle();
        scheduler.start(utc("2026-06-01T12:00:30Z")).await;
        handle.replace(vec![
            every_minute("kept", "0 * * * * *"),
            every_minute("changed", "30 * * * * *"),
            every_minute("added", "0 * * * * *"),
        ]);
        scheduler.reload(utc("2026-06-01T12:01:00Z"));
        assert_eq!(handle.current().len(), 3);
        scheduler.step(utc("2026-06-01T12:01:40Z")).await;
        scheduler.settle().await;
        // `kept` still had 12:01:00 to deal with; the others start after the reload.
        assert_eq!(recorder.fired("kept"), ["Mon 2026-06-01T12:01:00Z"]);
        assert_eq!(recorder.fired("changed"), ["Mon 2026-06-01T12:01:30Z"]);
        assert!(recorder.fired("added").is_empty());
        assert!(recorder.fired("removed").is_empty());
        assert_eq!(scheduler.next_slot(), Some(utc("2026-06-01T12:02:00Z")));
    }
}
