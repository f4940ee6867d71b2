//! Schedule automations and the compliance sweep, with the real App (HTTP server,
//! engine, SQLite file) against the simulator.
//!
//! The simulator's clock stands still and the test steps it; each step is one cycle of
//! the daemon's schedule work at the simulator's instant: a state sync poll, a schedule
//! book refresh, the due automations, a compliance sweep. The simulated day is placed
//! two days in the past: the transition engine checks mandatory breaks against the wall
//! clock, which then lies after every simulated break, while the platform decides
//! whether an agent is scheduled at its own (stepped) instant. Agents hold still
//! (no activity of their own) unless a test moves them with `force_state`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use wfmd::on;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wfmd::App;
use wfmd::config::Config;
use wfmd::cxone::{Budget, IncontactClient};
use wfmd::engine::TransitionEngine;
use wfmd::engine::automation::{Automations, RunReport};
use wfmd::engine::compliance::{ComplianceSweep, JudgingHandle, SweepReport, SweepSettings};
use wfmd::engine::imported_schedules::import;
use wfmd::engine::schedules::{BookSettings, ScheduleBook};
use wfmd::engine::sync::StateSync;
use wfmd::sim::{SimAgent, SimConfig};
use wfmd::store::Store;
use wfmd::telemetry::names::{
    ADHERENCE_EXCEPTIONS_OPEN, ADHERENCE_EXCEPTIONS_TOTAL, ADHERENCE_SWEEP_DURATION_SECONDS,
    SCHEDULE_REFRESHES_TOTAL,
};

use crate::helpers::{Dialect, TestApp, TestDb, TestSim, count, on_both_dialects, wait_until};

/// One cycle of simulated time.
const STEP: Duration = Duration::from_secs(30);

/// wfmd with its schedule work stepped by the test.
struct Scene {
    sim: TestSim,
    db: TestDb,
    config: Config,
    store: Store,
    stop: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
    sync: StateSync,
    book: Arc<ScheduleBook>,
    automations: Automations,
    sweep: ComplianceSweep,
}

impl Scene {
    /// 30 still agents, the simulated day two days ago, wfmd speaking `dialect`;
    /// `adjust` sets the automation and compliance settings the stepped services use.
    async fn start(dialect: Dialect, adjust: impl FnOnce(&mut Config)) -> Scene {
        let sim = TestSim::start(SimConfig {
            agents: 30,
            time_scale: 0.0,
            start_at: Some(Utc::now() - TimeDelta::days(2)),
            ..SimConfig::default()
        })
        .await
        .on(dialect);
        let db = TestDb::new();
        let mut config = sim.config(&db.url());
        // Every compliance check asks the platform at its current (stepped) instant.
        config.cxone.schedule_cache_ttl_ms = 0;
        adjust(&mut config);
        let mut scene = Scene::boot(sim, db, config).await;
        scene.cycle().await;
        scene
    }

    /// Starts the App on the scene's database and builds the stepped services. The
    /// App itself runs none of them: its sync is off, so is its copy of the automations.
    async fn boot(sim: TestSim, db: TestDb, config: Config) -> Scene {
        let mut app_config = config.clone();
        app_config.automation.enabled = false;
        let app = App::build(&app_config).await.unwrap();
        let store = app.store();
        let engine: Arc<TransitionEngine> = match sim.dialect {
            Dialect::V2 => app.engine(),
            // incontact judges WFM shifts at the client's clock: make it the simulator's.
            Dialect::Incontact => {
                let clock = sim.sim.clone();
                let client = IncontactClient::new(
                    wfmd::http_client().unwrap(),
                    wfmd::incontact_settings(&config),
                    Arc::new(Budget::unlimited()),
                )
                .with_clock(move || clock.clock().now());
                Arc::new(
                    TransitionEngine::new(
                        store.clone(),
                        Arc::new(client),
                        config.schedule_cache_ttl(),
                    )
                    .with_book_max_age(config.schedules.max_age),
                )
            }
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(stop.clone()));
        let platform = engine.platform().clone();
        let sync = StateSync::new(store.clone(), platform.clone(), (&config.sync).into())
            .with_in_flight(engine.agents_in_flight());
        let book = Arc::new(ScheduleBook::new(
            store.clone(),
            platform,
            BookSettings {
                refresh_interval: config.schedules.refresh_interval,
                agents: (&config.sync).into(),
            },
        ));
        book.load().await.unwrap();
        let automations =
            Automations::new(book.clone(), engine.clone(), (&config.automation).into());
        let settings = SweepSettings {
            interval: config.compliance.sweep_interval,
            judging: JudgingHandle::new(config.compliance.judging().unwrap()),
            auto_correct: config.compliance.auto_correct,
        };
        let sweep = ComplianceSweep::new(book.clone(), engine, settings);
        Scene {
            sim,
            db,
            config,
            store,
            stop,
            server,
            sync,
            book,
            automations,
            sweep,
        }
    }

    /// Stops wfmd and starts it again on the same database: nothing in memory survives.
    async fn restart(self) -> Scene {
        self.stop.cancel();
        self.server.await.unwrap().unwrap();
        Scene::boot(self.sim, self.db, self.config).await
    }

    fn now(&self) -> DateTime<Utc> {
        self.sim.sim.clock().now()
    }

    fn agent(&self, id: &str) -> SimAgent {
        self.sim.sim.agent(id).unwrap()
    }

    fn force(&self, id: &str, state: &str) {
        assert!(self.sim.sim.force_state(id, state, ""));
    }

    /// One cycle of the daemon's schedule work at the simulator's instant.
    async fn cycle(&mut self) -> (RunReport, SweepReport) {
        let now = self.now();
        self.sync.poll_once().await.unwrap();
        self.book.refresh_due(now).await.unwrap();
        let run = self.automations.run_due(now).await.unwrap();
        let sweep = self.sweep.sweep_at(now).await.unwrap();
        (run, sweep)
    }

    async fn advance(&mut self, by: Duration) -> (RunReport, SweepReport) {
        self.sim.sim.clock().advance(by);
        self.cycle().await
    }

    /// Steps until the next step would pass `t`.
    async fn run_until(&mut self, t: DateTime<Utc>) {
        while self.now() + STEP <= t {
            self.advance(STEP).await;
        }
    }

    /// (agent, actor, target, outcome) of every recorded attempt.
    async fn attempts(&self) -> BTreeSet<(String, String, String, String)> {
        on!(self.store.reader(), |c| sqlx::query_as(
            "SELECT agent_id, actor, target_state, outcome FROM transition_attempts"
        )
        .fetch_all(c)
        .await)
        .unwrap()
        .into_iter()
        .collect()
    }

    async fn attempts_of(&self, agent: &str) -> usize {
        self.attempts()
            .await
            .iter()
            .filter(|(a, ..)| a == agent)
            .count()
    }

    /// (kind, open) of the agent's exceptions, oldest first.
    async fn exceptions_of(&self, agent: &str) -> Vec<(String, bool)> {
        on!(self.store.reader(), |c| sqlx::query_as::<_, (String, Option<i64>)>(
            "SELECT kind, closed_at FROM adherence_exceptions WHERE agent_id = $1 ORDER BY opened_at",
        )
        .bind(agent)
        .fetch_all(c)
        .await)
        .unwrap()
        .into_iter()
        .map(|(kind, closed)| (kind, closed.is_none()))
        .collect()
    }

    /// The `status` of the agent's `adherence.exception` webhooks, in order.
    async fn events_of(&self, agent: &str) -> Vec<String> {
        on!(self.store.reader(), |c| sqlx::query_scalar(
            "SELECT json_extract(payload, '$.data.status') FROM outbox_events
             WHERE event_type = 'adherence.exception' AND agent_id = $1 ORDER BY seq",
        )
        .bind(agent)
        .fetch_all(c)
        .await)
        .unwrap()
    }
}

/// Agents on shift at `at` in one of `states`.
fn on_shift_in<'a>(
    agents: &'a [SimAgent],
    at: DateTime<Utc>,
    states: &[&str],
) -> Vec<&'a SimAgent> {
    agents
        .iter()
        .filter(|a| a.on_shift_at(at) && states.contains(&a.state.as_str()))
        .collect()
}

fn attempt(agent: &str, actor: &str, target: &str) -> (String, String, String, String) {
    (
        agent.into(),
        actor.into(),
        target.into(),
        "succeeded".into(),
    )
}

/// When the agent's ground-truth log says it entered `state` after `after`.
fn entered(agent: &SimAgent, state: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    agent
        .state_log
        .iter()
        .find(|c| c.at > after && c.state == state)
        .map(|c| c.at)
}

on_both_dialects!(break_automations_move_exactly_the_agents_whose_schedule_says_so);
async fn break_automations_move_exactly_the_agents_whose_schedule_says_so(dialect: Dialect) {
    let mut scene = Scene::start(dialect, |c| {
        c.automation.enabled = true;
        c.automation.logout_after_shift_end = None;
    })
    .await;
    let t0 = scene.now();
    let end = t0 + TimeDelta::hours(3);
    let agents = scene.sim.sim.agents();
    // One working agent takes a call just before its lunch and ends it two minutes in.
    let caller = on_shift_in(&agents, t0, &["READY", "IDLE", "PAUSED"])
        .into_iter()
        .filter(|a| !a.in_mandatory_break_at(t0))
        .min_by_key(|a| a.breaks.iter().find(|b| b.mandatory).unwrap().start)
        .unwrap()
        .clone();
    let lunch = caller.breaks.iter().find(|b| b.mandatory).unwrap().clone();
    scene.force(&caller.id, "ON_CONTACT");

    // What the schedules say, from each agent's generated state: a mandatory break
    // starting in the run moves agents that are not already NOT_READY or logged out; its
    // end moves them back. Agents on a call all along are never moved.
    let mut expected = BTreeSet::new();
    for a in agents.iter().filter(|a| a.state != "ON_CONTACT") {
        for b in a.breaks.iter().filter(|b| b.mandatory) {
            if t0 < b.start
                && b.start <= end
                && !["NOT_READY", "LOGGED_OUT"].contains(&a.state.as_str())
            {
                expected.insert(attempt(&a.id, "automation:break_start", "NOT_READY"));
            }
            if t0 < b.end && b.end <= end && a.on_shift_at(b.end) && a.state != "LOGGED_OUT" {
                expected.insert(attempt(&a.id, "automation:break_end", "READY"));
            }
        }
    }
    assert!(expected.len() >= 20, "the run proves little: {expected:?}");

    scene.run_until(lunch.start + TimeDelta::minutes(2)).await;
    assert_eq!(
        scene.attempts_of(&caller.id).await,
        0,
        "not while on a call"
    );
    assert_eq!(scene.agent(&caller.id).state, "ON_CONTACT");
    scene.force(&caller.id, "READY");
    let call_ended = scene.now();
    scene.run_until(end).await;

    assert_eq!(scene.attempts().await, expected);
    let after_call = entered(&scene.agent(&caller.id), "NOT_READY", call_ended).unwrap();
    assert!(
        after_call <= call_ended + STEP,
        "caught up at the next tick"
    );
    // The others moved at their own boundaries, within a step.
    for a in scene.sim.sim.agents().iter().filter(|a| a.id != caller.id) {
        for b in a
            .breaks
            .iter()
            .filter(|b| b.mandatory && t0 < b.start && b.end <= end)
        {
            if let Some(at) = entered(a, "NOT_READY", t0) {
                assert!(b.start <= at && at < b.start + STEP, "{} at {at}", a.id);
            }
            if let Some(at) = entered(a, "READY", b.start) {
                assert!(b.end <= at && at < b.end + STEP, "{} back at {at}", a.id);
            }
        }
    }
    let reasons: Vec<String> = on!(scene.store.reader(), |c| {
        sqlx::query_scalar(
        "SELECT DISTINCT reason FROM transition_attempts WHERE actor = 'automation:break_start'",
    )
    .fetch_all(c)
    .await
    })
    .unwrap();
    assert_eq!(reasons, ["BREAK"]);
    let origins: Vec<String> = on!(scene.store.reader(), |c| sqlx::query_scalar(
        "SELECT DISTINCT origin FROM transition_attempts"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert_eq!(origins, ["rule"]);
}

on_both_dialects!(logout_after_shift_end_happens_once_even_across_a_restart);
async fn logout_after_shift_end_happens_once_even_across_a_restart(dialect: Dialect) {
    let mut scene = Scene::start(dialect, |c| {
        c.automation.enabled = true;
        c.automation.break_start = false;
        c.automation.break_end = false;
        c.automation.logout_after_shift_end = Some(Duration::from_secs(600));
    })
    .await;
    let t0 = scene.now();
    let agents = scene.sim.sim.agents();
    let working = on_shift_in(&agents, t0, &["READY", "NOT_READY", "IDLE", "PAUSED"]);
    // One agent logs off early by itself: nothing to do for it.
    let early = working[0].id.clone();
    scene.force(&early, "LOGGED_OUT");
    let first = working
        .iter()
        .skip(1)
        .min_by_key(|a| a.shift_end)
        .unwrap()
        .to_owned()
        .clone();
    let end = working.iter().map(|a| a.shift_end).max().unwrap() + TimeDelta::minutes(16);
    let expected: BTreeSet<_> = working
        .iter()
        .filter(|a| a.id != early)
        .map(|a| attempt(&a.id, "automation:logout", "LOGGED_OUT"))
        .collect();

    let due = first.shift_end + TimeDelta::minutes(10);
    scene.run_until(due - TimeDelta::seconds(1)).await;
    assert_eq!(
        scene.agent(&first.id).state,
        first.state,
        "not before ten minutes"
    );
    scene.run_until(due + STEP).await;
    let out = entered(&scene.agent(&first.id), "LOGGED_OUT", t0).unwrap();
    assert!(due <= out && out < due + STEP, "{out}");

    // The agent logs in again; wfmd restarts (nothing in memory) while the logout is
    // still due: the stored attempt is replayed, not repeated.
    scene.force(&first.id, "READY");
    scene.advance(STEP).await;
    let posts = scene.sim.changes();
    let mut scene = scene.restart().await;
    let (run, _) = scene.advance(STEP).await;
    assert!(run.settled >= 1, "{run:?}");
    assert_eq!(run.moved, 0);
    assert_eq!(scene.sim.changes(), posts, "no second logout");
    assert_eq!(scene.agent(&first.id).state, "READY");

    scene.run_until(end).await;
    assert_eq!(scene.attempts().await, expected);
    assert_eq!(
        scene.agent(&early).state_log.len(),
        2,
        "generated, then its own log-off"
    );
    assert!(
        scene
            .sim
            .sim
            .agents()
            .iter()
            .filter(|a| a.state == "ON_CONTACT")
            .count()
            >= 3,
        "agents on a call are never logged out"
    );
}

on_both_dialects!(the_sweep_opens_after_the_threshold_closes_corrects_and_never_touches_a_call);
async fn the_sweep_opens_after_the_threshold_closes_corrects_and_never_touches_a_call(
    dialect: Dialect,
) {
    let mut scene = Scene::start(dialect, |c| {
        c.compliance.exception_threshold = Duration::from_secs(120);
        c.compliance.auto_correct.working_in_mandatory_break = true;
    })
    .await;
    let t0 = scene.now();
    let agents = scene.sim.sim.agents();
    let in_break: Vec<&SimAgent> = agents
        .iter()
        .filter(|a| a.in_mandatory_break_at(t0))
        .collect();
    let (ready, caller) = (in_break[0].id.clone(), in_break[1].id.clone());
    // Exceptions already open at the first sweep: agents NOT_READY, IDLE or PAUSED at
    // work for longer than the threshold. Not a kind to correct.
    let opened_at_start = scene.count_open().await;
    scene.force(&ready, "READY");
    scene.force(&caller, "ON_CONTACT");

    for _ in 0..3 {
        scene.advance(STEP).await;
        assert!(scene.exceptions_of(&ready).await.is_empty());
        assert!(scene.exceptions_of(&caller).await.is_empty());
    }
    let (_, sweep) = scene.advance(STEP).await;
    assert_eq!((sweep.opened, sweep.corrected), (2, 1), "at two minutes");
    assert_eq!(scene.agent(&ready).state, "NOT_READY");
    assert_eq!(scene.agent(&ready).reason, "BREAK");
    assert_eq!(scene.agent(&caller).state, "ON_CONTACT");
    let corrections: Vec<(String, String)> = on!(scene.store.reader(), |c| sqlx::query_as(
        "SELECT agent_id, actor FROM transition_attempts WHERE outcome = 'succeeded'",
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert_eq!(
        corrections,
        [(ready.clone(), "compliance:auto_correct".into())]
    );

    let (_, sweep) = scene.advance(STEP).await;
    assert_eq!(sweep.closed, 1);
    let kind = "working_in_mandatory_break".to_owned();
    assert_eq!(scene.exceptions_of(&ready).await, [(kind.clone(), false)]);
    assert_eq!(scene.exceptions_of(&caller).await, [(kind.clone(), true)]);

    // A restart finds the open exception and does not open a second one.
    let mut scene = scene.restart().await;
    let (_, sweep) = scene.advance(STEP).await;
    assert_eq!(sweep.opened, 0);
    assert_eq!(scene.exceptions_of(&caller).await, [(kind.clone(), true)]);

    scene.force(&caller, "NOT_READY");
    let (_, sweep) = scene.advance(STEP).await;
    assert_eq!(sweep.closed, 1);
    assert_eq!(scene.exceptions_of(&caller).await, [(kind, false)]);
    assert_eq!(scene.attempts_of(&caller).await, 0, "never moved");
    assert_eq!(scene.events_of(&ready).await, ["open", "closed"]);
    assert_eq!(scene.events_of(&caller).await, ["open", "closed"]);
    assert!(opened_at_start > 0);
    assert_eq!(
        count(
            &scene.store,
            "SELECT COUNT(*) FROM transition_attempts WHERE actor != 'compliance:auto_correct'"
        )
        .await,
        0,
        "other kinds are not corrected"
    );
    let verified = wfmd::store::audit::verify(scene.store.reader())
        .await
        .unwrap();
    assert!(verified.is_intact());
}

on_both_dialects!(a_rule_opens_after_its_grace_and_turns_the_exception_severe);
async fn a_rule_opens_after_its_grace_and_turns_the_exception_severe(dialect: Dialect) {
    let rules: wfmd::config::ComplianceConfig = toml::from_str(
        r#"
        [[rules]]
        activity = "mandatory_break"
        states = ["READY"]
        verdict = "out"
        grace = "5m"
        severe_after = "8m"
        "#,
    )
    .unwrap();
    let mut scene = Scene::start(dialect, |c| {
        c.compliance.exception_threshold = Duration::from_secs(120);
        c.compliance.rules = rules.rules.clone();
    })
    .await;
    let t0 = scene.now();
    let agents = scene.sim.sim.agents();
    // In a mandatory break now and still ten minutes on.
    let ready = agents
        .iter()
        .find(|a| {
            a.in_mandatory_break_at(t0) && a.in_mandatory_break_at(t0 + Duration::from_secs(600))
        })
        .expect("an agent in a long mandatory break")
        .id
        .clone();
    scene.force(&ready, "READY");
    // The built-in threshold (two minutes) passes; the rule's grace (five) has not.
    for _ in 0..9 {
        scene.advance(STEP).await;
        assert!(scene.exceptions_of(&ready).await.is_empty());
    }
    scene.advance(STEP).await;
    let kind = "working_in_mandatory_break".to_owned();
    assert_eq!(
        scene.exceptions_of(&ready).await,
        [(kind, true)],
        "at five minutes"
    );
    for _ in 0..5 {
        scene.advance(STEP).await;
    }
    assert_eq!(scene.events_of(&ready).await, ["open"]);
    scene.advance(STEP).await;
    assert_eq!(
        scene.events_of(&ready).await,
        ["open", "open"],
        "turned severe at eight"
    );
    let events: Vec<String> = on!(scene.store.reader(), |c| sqlx::query_scalar(
        "SELECT payload FROM outbox_events
         WHERE event_type = 'adherence.exception' AND agent_id = $1 ORDER BY seq",
    )
    .bind(&ready)
    .fetch_all(c)
    .await)
    .unwrap();
    let data: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap()["data"].clone())
        .collect();
    let version = scene.config.compliance.judging().unwrap().version.unwrap();
    for event in &data {
        assert_eq!(event["rule"], 0, "{event}");
        assert_eq!(event["rulesVersion"], version.as_str(), "{event}");
    }
    assert_eq!(
        (data[0]["severity"].as_str(), data[1]["severity"].as_str()),
        (Some("normal"), Some("severe"))
    );
    let severe: i64 = count(
        &scene.store,
        "SELECT COUNT(*) FROM adherence_exceptions WHERE severe_at IS NOT NULL AND rule = 0",
    )
    .await;
    assert_eq!(severe, 1);
}

impl Scene {
    async fn count_open(&self) -> i64 {
        count(
            &self.store,
            "SELECT COUNT(*) FROM adherence_exceptions WHERE closed_at IS NULL",
        )
        .await
    }
}

on_both_dialects!(serve_runs_the_book_and_the_sweep_and_reports_adherence);
async fn serve_runs_the_book_and_the_sweep_and_reports_adherence(dialect: Dialect) {
    // The simulator at wall-clock time and the daemon's own loops: sync, book, sweep.
    let app = TestApp::spawn_with(TestSim::default_tenant().await.on(dialect), |c| {
        c.sync.enabled = true;
        c.compliance.sweep_interval = Duration::from_secs(1);
    })
    .await;
    app.wait_for_count(
        "SELECT COUNT(DISTINCT agent_id) FROM agent_shifts",
        60,
        "every managed agent's shift is stored",
    )
    .await;
    // Agents NOT_READY, IDLE or PAUSED at work since minutes ago are exceptions.
    app.wait_for_count(
        "SELECT COUNT(*) FROM adherence_exceptions WHERE closed_at IS NULL",
        1,
        "the sweep opened no exception",
    )
    .await;
    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'adherence.exception'",
        1,
        "no adherence.exception event",
    )
    .await;

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for name in [
        ADHERENCE_EXCEPTIONS_OPEN,
        ADHERENCE_EXCEPTIONS_TOTAL,
        ADHERENCE_SWEEP_DURATION_SECONDS,
        SCHEDULE_REFRESHES_TOTAL,
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    let from = wfmd::time::rfc3339(Utc::now() - TimeDelta::hours(1));
    let to = wfmd::time::rfc3339(Utc::now() + TimeDelta::hours(1));
    let csv = app
        .http
        .get(format!("{}/v1/reports/compliance", app.address))
        .query(&[("from", &from), ("to", &to)])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let column = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "adherence_pct")
        .unwrap();
    let pct: Vec<f64> = reader
        .records()
        .filter_map(|r| r.unwrap()[column].parse().ok())
        .collect();
    assert!(pct.len() >= 30, "{csv}");
    assert!(pct.iter().all(|p| (0.0..=100.0).contains(p)), "{pct:?}");
    assert!(
        pct.iter().any(|p| *p < 100.0),
        "the deviating agents: {pct:?}"
    );
    let json: Value = app
        .http
        .get(format!("{}/v1/reports/compliance", app.address))
        .query(&[
            ("from", from.as_str()),
            ("to", to.as_str()),
            ("format", "json"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        json["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["adherence_exceptions"].as_u64() >= Some(1))
    );
    app.stop().await;
}

on_both_dialects!(a_rule_on_a_titled_work_activity_decides_what_the_sweep_opens);
/// `activity = "Team meeting"`, NOT_READY:MEETING in: the agents the simulator has in a
/// team meeting (from half an hour before the start to half an hour after). The incontact
/// WFM export names the meeting, so the book keeps it and the rule holds their exceptions
/// back until it ends; the v2 schedule names no work activities (docs/platform-api.md), so
/// there the rule matches nothing and the built-in kind opens at once.
async fn a_rule_on_a_titled_work_activity_decides_what_the_sweep_opens(dialect: Dialect) {
    let mut scene = Scene::start(dialect, |c| {
        c.compliance.exception_threshold = Duration::from_secs(120);
        c.compliance.rules = vec![
            serde_json::from_value(serde_json::json!({
                "activity": "Team meeting",
                "states": ["NOT_READY:MEETING"],
                "verdict": "in",
            }))
            .unwrap(),
        ];
    })
    .await;
    let t0 = scene.now();
    let in_meeting: Vec<SimAgent> = scene
        .sim
        .sim
        .agents()
        .into_iter()
        .filter(|a| a.activities.iter().any(|t| t.title == "Team meeting"))
        .collect();
    assert!(!in_meeting.is_empty(), "the simulator schedules a meeting");
    let meeting_end = in_meeting[0].activities[0].end;
    for agent in &in_meeting {
        assert_eq!(
            (agent.state.as_str(), agent.reason.as_str()),
            ("NOT_READY", "MEETING")
        );
        assert!(agent.changed_at < t0 - TimeDelta::seconds(59));
    }
    // Three minutes on: past the threshold for every one of them.
    scene.run_until(t0 + TimeDelta::minutes(3)).await;
    let not_working = || vec![("not_working_in_shift".to_owned(), true)];
    for agent in &in_meeting {
        let stored: String = on!(scene.store.reader(), |c| sqlx::query_scalar(
            "SELECT activities FROM agent_shifts WHERE agent_id = $1"
        )
        .bind(&agent.id)
        .fetch_one(c)
        .await)
        .unwrap();
        let exceptions = scene.exceptions_of(&agent.id).await;
        match dialect {
            Dialect::Incontact => {
                assert!(
                    stored.contains("\"Team meeting\""),
                    "{}: {stored}",
                    agent.id
                );
                assert!(exceptions.is_empty(), "{} is in its meeting", agent.id);
            }
            Dialect::V2 => {
                assert!(!stored.contains("Team meeting"), "{}: {stored}", agent.id);
                assert_eq!(exceptions, not_working(), "{}", agent.id);
            }
        }
    }
    if dialect == Dialect::V2 {
        return;
    }
    // The meeting over, the rule no longer covers them: the built-in kind opens after the
    // threshold counted from the meeting's end, not before.
    scene.run_until(meeting_end + TimeDelta::seconds(90)).await;
    for agent in &in_meeting {
        assert!(
            scene.exceptions_of(&agent.id).await.is_empty(),
            "{}",
            agent.id
        );
    }
    scene.run_until(meeting_end + TimeDelta::minutes(3)).await;
    for agent in &in_meeting {
        assert_eq!(
            scene.exceptions_of(&agent.id).await,
            not_working(),
            "{}",
            agent.id
        );
        let started: i64 = on!(scene.store.reader(), |c| sqlx::query_scalar(
            "SELECT started_at FROM adherence_exceptions WHERE agent_id = $1"
        )
        .bind(&agent.id)
        .fetch_one(c)
        .await)
        .unwrap();
        assert_eq!(started, meeting_end.timestamp_millis(), "{}", agent.id);
    }
}

on_both_dialects!(an_imported_titled_activity_is_judged_by_its_rule_on_either_dialect);
/// The schedules CSV's activity columns give a titled work activity on either dialect
/// (v2's schedule cannot name one). The daemon's own loops (sync, book, sweep) run at
/// the simulator's (still) time, with the rule `activity = "Coaching"`, NOT_READY in:
/// of two agents NOT_READY at work for over a minute, imported with the same shift, the
/// one whose shift has a Coaching now has no exception; the other one has the built-in
/// one.
async fn an_imported_titled_activity_is_judged_by_its_rule_on_either_dialect(dialect: Dialect) {
    let sim = TestSim::start(SimConfig {
        agents: 30,
        time_scale: 0.0,
        ..SimConfig::default()
    })
    .await
    .on(dialect);
    let now = sim.sim.clock().now();
    let mut idle = sim.sim.agents().into_iter().filter(|a| {
        a.state == "NOT_READY"
            && a.on_shift_at(now)
            && !a.in_mandatory_break_at(now)
            && a.changed_at < now - TimeDelta::seconds(59)
    });
    let (coached, control) = (idle.next().unwrap(), idle.next().unwrap());
    let time = wfmd::time::rfc3339;
    let row = |agent: &SimAgent, activity: &str| {
        format!(
            "{},{},{},,,,,,{activity}\n",
            agent.id,
            time(agent.shift_start),
            time(agent.shift_end)
        )
    };
    let coaching = format!(
        "Coaching,{},{}",
        time(now - TimeDelta::minutes(10)),
        time(now + TimeDelta::minutes(20))
    );
    let csv = format!(
        "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone,\
         activity,activity_start,activity_end\n{}{}",
        row(&coached, &coaching),
        row(&control, ",,")
    );
    // Imported before the daemon starts, so the book's first fetch has it.
    let db = TestDb::new();
    let store = Store::open(&db.url()).await.unwrap();
    import(&store, &csv, "test").await.unwrap();
    store.close().await;
    let app = TestApp::spawn_on_db(sim, db, |c| {
        c.sync.enabled = true;
        c.compliance.sweep_interval = Duration::from_secs(1);
        c.compliance.exception_threshold = Duration::from_secs(30);
        c.compliance.rules = vec![
            serde_json::from_value(serde_json::json!({
                "activity": "Coaching",
                "states": ["NOT_READY"],
                "verdict": "in",
            }))
            .unwrap(),
        ];
    })
    .await;
    let exceptions_of = async |agent: &str| -> Vec<String> {
        on!(app.store.reader(), |c| sqlx::query_scalar(
            "SELECT kind FROM adherence_exceptions WHERE agent_id = $1 AND closed_at IS NULL"
        )
        .bind(agent)
        .fetch_all(c)
        .await)
        .unwrap()
    };
    let stored = async |agent: &str| -> Option<String> {
        on!(app.store.reader(), |c| sqlx::query_scalar(
            "SELECT activities FROM agent_shifts WHERE agent_id = $1"
        )
        .bind(agent)
        .fetch_optional(c)
        .await)
        .unwrap()
    };
    wait_until("the control agent's exception opens", async || {
        exceptions_of(&control.id).await == ["not_working_in_shift"]
    })
    .await;
    let kept = stored(&coached.id).await.unwrap();
    assert!(kept.contains("\"Coaching\""), "{kept}");
    assert_eq!(stored(&control.id).await.as_deref(), Some("[]"));
    // Both agents deviate alike but for the rule, each for longer than the threshold,
    // and a sweep stores what it opens in one transaction: the sweep that opened the
    // control's exception judged the coached agent too, by the rule.
    assert_eq!(exceptions_of(&coached.id).await, Vec::<String>::new());
    app.stop().await;
}

/// `wfmd serve` as deployed (a configuration file, SIGHUP, its own process) applies
/// edited adherence rules at once: the first rule makes the agent's NOT_READY in its
/// shift neutral, so no exception opens however many sweeps run, while the built-in kind
/// would open one after a second; rewritten to `out` and re-read on SIGHUP, the next
/// sweeps open the exception, recording that rule and the new rule set's version; an
/// invalid edit is refused naming its key, and the rules in force stay in force.
#[tokio::test]
async fn sighup_applies_edited_adherence_rules_and_refuses_an_invalid_edit() {
    use crate::helpers::{Daemon, eventually, get_json, get_text};
    use wfmd::config::ConfigSource;

    // The platform's time stands still: the agent stays where the test found it.
    let sim = TestSim::start(SimConfig {
        agents: 60,
        time_scale: 0.0,
        ..SimConfig::default()
    })
    .await;
    let now = sim.sim.clock().now();
    // NOT_READY at work now and for the next ten minutes, clear of every break: the
    // built-in not_working_in_shift, unless a rule says otherwise.
    let until = now + TimeDelta::minutes(10);
    let agent = sim
        .sim
        .agents()
        .into_iter()
        .find(|a| {
            a.state == "NOT_READY"
                && a.on_shift_at(now)
                && a.on_shift_at(until)
                && a.breaks.iter().all(|b| b.end <= now || b.start >= until)
        })
        .expect("the simulated tenant has an agent NOT_READY at work, clear of breaks");

    let db = TestDb::new();
    let file = db.dir.path().join("wfmd.toml");
    let log = db.dir.path().join("wfmd.log");
    let env = vec![(
        "WFMD_CXONE__CLIENT_SECRET".to_owned(),
        sim.client_secret.clone(),
    )];
    let write_config = |rules: &str| {
        let text = format!(
            "[server]\nshutdown_timeout = \"5s\"\n[database]\nurl = \"{}\"\n\
             [cxone]\nbase_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\n\
             requests_per_minute = 6000\nrequest_timeout_ms = 2000\n\
             [retry]\nbase_delay_ms = 10\nmax_delay_ms = 2000\n\
             [sync]\nenabled = true\n[live]\nenabled = false\n\
             [compliance]\nsweep_interval = \"1s\"\nexception_threshold = \"1s\"\n{rules}",
            db.url(),
            sim.base_url,
            sim.token_url,
            sim.client_id
        );
        std::fs::write(&file, text).unwrap();
        // The version the daemon should judge by, from the same file.
        let source = ConfigSource {
            file: Some(file.clone()),
            simulate: false,
        };
        Config::load_with_env(&source, env.clone())
            .map(|config| config.compliance.judging().unwrap().version.unwrap())
    };
    let rule = |states: &str, verdict: &str, grace: &str| {
        format!(
            "[[compliance.rules]]\nactivity = \"shift\"\nstates = {states}\n\
             verdict = \"{verdict}\"\n{grace}"
        )
    };
    let neutral = write_config(&rule(r#"["NOT_READY"]"#, "neutral", "")).unwrap();
    let config = file.display().to_string();
    let daemon = Daemon::spawn_with_log(&["--config", &config, "serve"], &env, &log).await;
    let store = Store::open(&db.url()).await.unwrap();

    let sweeps = async || -> u64 {
        get_text(&format!("{}/metrics", daemon.address))
            .await
            .lines()
            .filter(|line| line.starts_with(&format!("{ADHERENCE_SWEEP_DURATION_SECONDS}_count")))
            .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    };
    // Three sweeps from now: each judges every agent of the book.
    let three_more_sweeps = async |what: &str| {
        let from = sweeps().await;
        wait_until(what, async || sweeps().await >= from + 3).await;
    };
    let version_in_force = async || -> Value {
        get_json(&format!("{}/v1/reports/definitions", daemon.address)).await["adherence_rules"]
            ["version"]
            .clone()
    };
    let exceptions = async || -> Vec<(String, Option<i64>, Option<String>, bool)> {
        on!(store.reader(), |c| sqlx::query_as::<
            _,
            (String, Option<i64>, Option<String>, Option<i64>),
        >(
            "SELECT kind, rule, rules_version, closed_at FROM adherence_exceptions
             WHERE agent_id = $1 ORDER BY opened_at",
        )
        .bind(&agent.id)
        .fetch_all(c)
        .await)
        .unwrap()
        .into_iter()
        .map(|(kind, rule, version, closed)| (kind, rule, version, closed.is_none()))
        .collect()
    };

    let rows_of_agent = async |sql: &'static str| -> i64 {
        on!(store.reader(), |c| sqlx::query_scalar(sql)
            .bind(&agent.id)
            .fetch_one(c)
            .await)
        .unwrap()
    };

    // 1. Neutral: the daemon knows the agent's shift and state, sweeps judge it, and
    //    nothing opens.
    wait_until("the agent's shift and state are not stored", async || {
        rows_of_agent("SELECT COUNT(*) FROM agent_shifts WHERE agent_id = $1").await > 0
            && rows_of_agent(
                "SELECT COUNT(*) FROM state_intervals WHERE agent_id = $1 AND ended_at IS NULL",
            )
            .await
                > 0
    })
    .await;
    three_more_sweeps("the sweep does not run").await;
    assert_eq!(exceptions().await, [], "NOT_READY at work is neutral");
    assert_eq!(version_in_force().await, neutral.as_str());

    // 2. The same rule, now `out` with a short grace, re-read on SIGHUP.
    let out = write_config(&rule(r#"["NOT_READY"]"#, "out", "grace = \"2s\"\n")).unwrap();
    assert_ne!(out, neutral, "an edited rule set is a new version");
    daemon.signal("HUP");
    let opened = eventually(
        "no exception opened under the edited rule",
        async || match exceptions().await.as_slice() {
            [] => Err("none yet".to_owned()),
            [one] => Ok(one.clone()),
            more => Err(format!("{more:?}")),
        },
    )
    .await;
    assert_eq!(
        opened,
        (
            "not_working_in_shift".to_owned(),
            Some(0),
            Some(out.clone()),
            true
        ),
        "opened by compliance.rules[0] of the new version"
    );
    assert_eq!(version_in_force().await, out.as_str());

    // 3. An invalid edit, which would make the time neutral again (and so close the
    //    exception) were any of it applied: refused, naming the key, the rules in force
    //    staying so.
    let refused = write_config(&rule(r#"["NOT_READY", "SLEEPING"]"#, "neutral", ""));
    assert!(refused.is_err(), "{refused:?}");
    daemon.signal("HUP");
    wait_until("the invalid edit was not refused in the log", async || {
        let text = std::fs::read_to_string(&log).unwrap();
        text.contains("SIGHUP: the new configuration is refused")
            && text.contains("compliance.rules[0].states[1]")
    })
    .await;
    three_more_sweeps("the sweep stopped after the refused edit").await;
    assert_eq!(
        exceptions().await,
        [opened],
        "still open, under the same rule"
    );
    assert_eq!(version_in_force().await, out.as_str());

    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
    store.close().await;
}
