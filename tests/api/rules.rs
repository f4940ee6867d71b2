//! WFM rules against the simulator with a real SQLite file: exactly once per slot across
//! restarts, missed slots and catch_up, a firing resumed after `kill -9`, fan-out under
//! the request budget, SIGHUP reloads and the `wfmd rules` commands.
//!
//! The scheduler tests call `start` and `step` with the instant they choose (the
//! transition engine still checks compliance against the simulator's real clock); the
//! process tests run the real binary and watch its SQLite file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wfmd::on;

use chrono::{DateTime, Datelike, SubsecRound, Timelike, Utc};
use tokio_util::sync::CancellationToken;
use wfmd::Services;
use wfmd::config::Config;
use wfmd::domain::AgentState;
use wfmd::domain::cron::Slots;
use wfmd::domain::rule::{Action, Conditions, Rule, RuleSelector};
use wfmd::engine::rules::{Decision, RuleFirer, RuleScheduler, idempotency_key};
use wfmd::sim::{Faults, SimConfig};
use wfmd::store::{Store, firings};
use wfmd::telemetry::names::RULE_FIRINGS_TOTAL;

use crate::helpers::{
    Backend, Daemon, Dialect, SET_STATE, TestDb, TestSim, count, on_both_dialects,
    on_both_dialects_and_backends, wait_until, wfmd,
};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Weekdays at noon, New York time: 16:00Z or 17:00Z.
fn weekday_noon(name: &str, selector: RuleSelector, catch_up: Duration) -> Rule {
    Rule {
        name: name.into(),
        slots: Slots::parse("0 0 12 * * Mon-Fri", "America/New_York").unwrap(),
        selector,
        action: Action::Set {
            state: AgentState::Paused,
            reason: Some("COACHING".into()),
        },
        conditions: Conditions::default(),
        catch_up,
        when_busy: Default::default(),
    }
}

/// wfmd's configuration for `sim`. The `incontact` tenant has no COACHING code, so it
/// is mapped as an operator would in `[cxone.reason_codes]` (onto a code no other
/// reason of these tests is named after: a code reads back as the reason mapped to it).
fn config_for(sim: &TestSim, db: &TestDb) -> Config {
    let mut config = sim.config(&db.url());
    if sim.dialect == Dialect::Incontact {
        config
            .cxone
            .reason_codes
            .insert("COACHING".into(), "Meeting".into());
    }
    config
}

fn firer(services: &Services, config: &Config) -> RuleFirer {
    RuleFirer::new(
        services.store.clone(),
        services.engine.clone(),
        config.scheduler.concurrency,
        services.budget.per_minute_rate(),
    )
}

fn scheduler(services: &Services, config: &Config, rules: Vec<Rule>) -> RuleScheduler {
    RuleScheduler::new(rules, Arc::new(firer(services, config)))
}

fn agent_ids(sim: &TestSim, n: usize) -> Vec<String> {
    sim.free_agents()
        .into_iter()
        .take(n)
        .map(|a| a.id)
        .collect()
}

async fn firings_of(store: &Store, rule: &str) -> Vec<(String, String)> {
    firings::of_rule(store.reader(), rule)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (wfmd::time::rfc3339(f.slot()), f.outcome))
        .collect()
}

on_both_dialects_and_backends!(a_slot_that_fired_does_not_fire_again_after_a_restart);
async fn a_slot_that_fired_does_not_fire_again_after_a_restart(dialect: Dialect, db: TestDb) {
    let sim = TestSim::default_tenant().await.on(dialect);
    let config = config_for(&sim, &db);
    let agents = agent_ids(&sim, 3);
    // Metrics are process-wide: one rule name per dialect and backend keeps the counts
    // apart.
    let name = match (dialect, db.backend()) {
        (Dialect::V2, Backend::Sqlite) => "coaching",
        (Dialect::Incontact, Backend::Sqlite) => "coaching-incontact",
        (Dialect::V2, Backend::Postgres) => "coaching-postgres",
        (Dialect::Incontact, Backend::Postgres) => "coaching-incontact-postgres",
    };
    // catch_up is an hour, so only the record of the firing keeps the slot from firing
    // again at the restart 20 minutes later.
    let rule = || {
        weekday_noon(
            name,
            RuleSelector::Agents(agents.clone()),
            Duration::from_secs(3_600),
        )
    };
    let slot = utc("2026-03-09T16:00:00Z");

    let metrics = wfmd::metrics_handle();
    let services = Services::start(&config).await.unwrap();
    let mut first = scheduler(&services, &config, vec![rule()]);
    assert_eq!(first.start(utc("2026-03-09T15:59:00Z")).await, []);
    assert_eq!(
        first.step(slot).await,
        [Decision::Fire {
            rule: name.into(),
            slot,
            late: Duration::ZERO
        }]
    );
    first.settle().await;
    let store = services.store.clone();
    assert_eq!(
        firings_of(&store, name).await,
        [(
            "2026-03-09T16:00:00.000Z".to_owned(),
            "completed".to_owned()
        )]
    );
    let changes = sim.changes();
    assert_eq!(changes, 3);
    let shown = metrics.render();
    assert!(
        shown.contains(&format!(
            r#"{RULE_FIRINGS_TOTAL}{{rule="{name}",outcome="completed"}} 1"#
        )),
        "{shown}"
    );
    drop(first);
    services.store.close().await;

    // wfmd restarts on the same file.
    let services = Services::start(&config).await.unwrap();
    let mut second = scheduler(&services, &config, vec![rule()]);
    let decisions = second.start(utc("2026-03-09T16:20:00Z")).await;
    second.settle().await;
    assert_eq!(decisions, [], "the slot is recorded as fired");
    assert_eq!(second.step(utc("2026-03-09T16:30:00Z")).await, []);
    // Even asked directly, the firing finds its slot claimed.
    let again = firer(&services, &config)
        .fire_slot(&rule(), slot, None, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(sim.changes(), changes, "no agent was changed again");
    assert_eq!(
        count(&services.store, "SELECT COUNT(*) FROM rule_firings").await,
        1
    );
    let moved: i64 = on!(services.store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM transition_attempts
         WHERE origin = 'rule' AND actor = $1 AND outcome = 'succeeded'",
    )
    .bind(format!("rule:{name}"))
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(moved, 3);
    services.store.close().await;
}

on_both_dialects!(
    a_missed_slot_fires_at_start_within_catch_up_and_is_recorded_as_skipped_beyond_it
);
async fn a_missed_slot_fires_at_start_within_catch_up_and_is_recorded_as_skipped_beyond_it(
    dialect: Dialect,
) {
    let sim = TestSim::default_tenant().await.on(dialect);
    let db = TestDb::new();
    let config = config_for(&sim, &db);
    let agents = agent_ids(&sim, 2);
    let rules = || {
        vec![
            weekday_noon(
                "tolerant",
                RuleSelector::Agents(vec![agents[0].clone()]),
                Duration::from_secs(30 * 60),
            ),
            weekday_noon(
                "strict",
                RuleSelector::Agents(vec![agents[1].clone()]),
                Duration::ZERO,
            ),
        ]
    };

    // Monday's slot fires for both.
    let services = Services::start(&config).await.unwrap();
    let mut running = scheduler(&services, &config, rules());
    running.start(utc("2026-03-09T15:00:00Z")).await;
    assert_eq!(running.step(utc("2026-03-09T16:00:00Z")).await.len(), 2);
    running.settle().await;
    drop(running);
    services.store.close().await;
    assert_eq!(sim.changes(), 2);

    // wfmd was down over Tuesday's slot and starts 20 minutes after it.
    let services = Services::start(&config).await.unwrap();
    let mut restarted = scheduler(&services, &config, rules());
    let slot = utc("2026-03-10T16:00:00Z");
    let late = Duration::from_secs(20 * 60);
    let decisions = restarted.start(utc("2026-03-10T16:20:00Z")).await;
    restarted.settle().await;
    assert_eq!(
        decisions,
        [
            Decision::Fire {
                rule: "tolerant".into(),
                slot,
                late
            },
            Decision::Skip {
                rule: "strict".into(),
                slot,
                late
            },
        ]
    );
    let store = services.store.clone();
    assert_eq!(
        firings_of(&store, "tolerant").await,
        [
            (
                "2026-03-09T16:00:00.000Z".to_owned(),
                "completed".to_owned()
            ),
            (
                "2026-03-10T16:00:00.000Z".to_owned(),
                "completed".to_owned()
            ),
        ]
    );
    assert_eq!(
        firings_of(&store, "strict").await,
        [
            (
                "2026-03-09T16:00:00.000Z".to_owned(),
                "completed".to_owned()
            ),
            ("2026-03-10T16:00:00.000Z".to_owned(), "skipped".to_owned()),
        ]
    );
    let note: String = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT note FROM rule_firings WHERE outcome = 'skipped'"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert!(note.contains("20m late, past catch_up"), "{note}");
    assert_eq!(sim.changes(), 3, "only the tolerant rule's agent moved");
    let key = idempotency_key("strict", slot, &agents[1]);
    assert!(
        wfmd::store::attempts::by_idempotency_key(store.reader(), &key)
            .await
            .unwrap()
            .is_none()
    );
    drop(restarted);
    store.close().await;

    // Down from Tuesday to Thursday afternoon: Wednesday's and Thursday's slots passed,
    // and only Thursday's, the latest, fires. Never a backlog.
    let services = Services::start(&config).await.unwrap();
    let mut later = scheduler(&services, &config, rules());
    let decisions = later.start(utc("2026-03-12T16:10:00Z")).await;
    later.settle().await;
    let fired: Vec<_> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Fire { rule, slot, .. } => Some((rule.as_str(), *slot)),
            _ => None,
        })
        .collect();
    assert_eq!(fired, [("tolerant", utc("2026-03-12T16:00:00Z"))]);
    assert_eq!(firings_of(&services.store, "tolerant").await.len(), 3);
    services.store.close().await;
}

on_both_dialects!(a_firing_fans_out_under_the_request_budget_without_429s);
async fn a_firing_fans_out_under_the_request_budget_without_429s(dialect: Dialect) {
    // The simulated tenant allows 1,200 requests a minute with a burst of 40; wfmd's
    // budget is the same rate with a burst of 20. The firing over all 60 agents needs
    // about 90 requests: eight changes at a time, unpaced, would be refused within the
    // first second.
    let sim = TestSim::start(SimConfig {
        agents: 60,
        requests_per_minute: 1_200,
        ..SimConfig::default()
    })
    .await
    .on(dialect);
    let db = TestDb::new();
    let mut config = config_for(&sim, &db);
    config.cxone.requests_per_minute = 1_200;
    let members = 60;
    let rule = weekday_noon("all-coaching", RuleSelector::All, Duration::ZERO);
    let services = Services::start(&config).await.unwrap();
    let row = firer(&services, &config)
        .fire_slot(
            &rule,
            utc("2026-03-09T16:00:00Z"),
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.targets, members as i64);
    assert_eq!(
        row.changed + row.rejected,
        members as i64,
        "every member was moved or refused by compliance: {row:?}"
    );
    assert_eq!(row.failed, 0);
    assert_eq!(sim.sim.stats().rate_limited, 0);
    let recorded = firings::agents(services.store.reader(), row.id)
        .await
        .unwrap();
    assert_eq!(recorded.len(), members);
    services.store.close().await;
}

/// A 6-field cron that matches `at` (to the second) once a year, in UTC.
fn cron_at(at: DateTime<Utc>) -> String {
    format!(
        "{} {} {} {} {} *",
        at.second(),
        at.minute(),
        at.hour(),
        at.day(),
        at.month()
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

async fn scalar(store: &Store, sql: &str, rule: &str) -> i64 {
    on!(store.reader(), |c| sqlx::query_scalar(sqlx::AssertSqlSafe(
        sql.to_owned()
    ))
    .bind(rule)
    .fetch_one(c)
    .await)
    .unwrap()
}

on_both_dialects_and_backends!(kill_9_during_a_firing_resumes_it_without_changing_any_agent_twice);
async fn kill_9_during_a_firing_resumes_it_without_changing_any_agent_twice(
    dialect: Dialect,
    db: TestDb,
) {
    let sim = TestSim::default_tenant().await.on(dialect);
    let rules_file = db.dir.path().join("rules.toml");
    write(&rules_file, "");
    let mut env = sim.env(&db.url());
    env.push((
        "WFMD_SCHEDULER__RULES_FILE".into(),
        rules_file.display().to_string(),
    ));
    env.push(("WFMD_SCHEDULER__CONCURRENCY".into(), "2".into()));
    let daemon = Daemon::spawn(&env).await;

    // Every platform call takes a while, so the firing is in full swing when killed.
    sim.sim.set_faults(Faults {
        latency: Duration::from_millis(150),
        ..Default::default()
    });
    let slot = (Utc::now() + chrono::TimeDelta::seconds(3)).trunc_subsecs(0);
    write(
        &rules_file,
        &format!(
            "[[rules]]\nname = \"meeting\"\ncron = \"{}\"\ntimezone = \"UTC\"\nall = true\n\
             set = \"NOT_READY\"\nreason = \"MEETING\"\n",
            cron_at(slot)
        ),
    );
    daemon.signal("HUP");

    let store = Store::open(&db.url()).await.unwrap();
    const HANDLED: &str = "SELECT COUNT(*) FROM rule_firing_agents a JOIN rule_firings f \
                           ON f.id = a.firing_id WHERE f.rule = $1";
    wait_until("the firing did not get going", || async {
        scalar(&store, HANDLED, "meeting").await >= 6
    })
    .await;
    daemon.signal("KILL");
    assert!(!daemon.wait().await.success());
    let before = scalar(&store, HANDLED, "meeting").await;
    assert!(before < 60, "the firing was cut short: {before} handled");
    assert_eq!(
        firings_of(&store, "meeting").await,
        [(wfmd::time::rfc3339(slot), "running".to_owned())]
    );

    // The next start resumes the firing (its slot is long past by then).
    sim.sim.set_faults(Faults::default());
    let daemon = Daemon::spawn(&env).await;
    wait_until("the firing was not resumed to its end", || async {
        scalar(
            &store,
            "SELECT COUNT(*) FROM rule_firings WHERE rule = $1 AND outcome <> 'running'",
            "meeting",
        )
        .await
            == 1
    })
    .await;
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());

    let row = &firings::of_rule(store.reader(), "meeting").await.unwrap()[0];
    assert_eq!(row.targets, 60);
    assert_eq!(
        row.changed + row.rejected + row.failed + row.skipped_condition + row.skipped_on_contact,
        60,
        "{row:?}"
    );
    assert_eq!(row.failed, 0, "{row:?}");
    let agents = firings::agents(store.reader(), row.id).await.unwrap();
    assert_eq!(agents.len(), 60);
    // Each agent has exactly the one attempt of its key, and the platform was asked to
    // change each moved agent once, plus at most the changes in flight at the kill (two
    // at a time), which were sent but never recorded.
    for agent in &agents {
        let key = idempotency_key("meeting", slot, &agent.agent_id);
        let attempt = wfmd::store::attempts::by_idempotency_key(store.reader(), &key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no attempt for {}", agent.agent_id));
        assert_eq!(Some(&attempt.id), agent.attempt_id.as_ref());
    }
    let sent: i64 = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM transition_attempts
         WHERE outcome = 'succeeded' OR violation = 'STATE_CONFLICT'",
    )
    .fetch_one(c)
    .await)
    .unwrap();
    let calls = sim.changes() as i64;
    assert!(
        (sent..=sent + 2).contains(&calls),
        "{calls} state changes sent for {sent} recorded"
    );
    // The platform's own record: no agent was put in the meeting twice (a change made
    // just before the kill but never recorded is found on the platform at the resume).
    for agent in sim.sim.agents() {
        // The first entry is the state the agent started in.
        let meetings = agent.state_log[1..]
            .iter()
            .filter(|change| change.reason == "MEETING")
            .count();
        assert!(meetings <= 1, "{} was changed {meetings} times", agent.id);
    }
    let verified = wfmd::store::audit::verify(store.reader()).await.unwrap();
    assert!(verified.is_intact(), "{:?}", verified.first_break);
    store.close().await;
}

#[tokio::test]
async fn sighup_with_a_bad_rules_file_keeps_the_old_rules_and_a_good_one_swaps_them() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::new();
    let rules_file = db.dir.path().join("rules.toml");
    let log = db.dir.path().join("wfmd.log");
    // Every second; the agent has no recorded state, so it is only ever skipped: the
    // firings are recorded without a platform call.
    let tick = |name: &str, zone: &str| {
        format!(
            "[[rules]]\nname = \"{name}\"\ncron = \"*/1 * * * * *\"\ntimezone = \"{zone}\"\n\
             agents = [\"u_010\"]\nset = \"PAUSED\"\nonly_if_state = [\"READY\"]\n"
        )
    };
    write(&rules_file, &tick("tick-a", "UTC"));
    let mut env = sim.env(&db.url());
    env.push((
        "WFMD_SCHEDULER__RULES_FILE".into(),
        rules_file.display().to_string(),
    ));
    let daemon = Daemon::spawn_logging_to(&env, &log).await;
    let store = Store::open(&db.url()).await.unwrap();
    const FIRINGS: &str = "SELECT COUNT(*) FROM rule_firings WHERE rule = ?";
    wait_until("tick-a did not fire", || async {
        scalar(&store, FIRINGS, "tick-a").await >= 2
    })
    .await;

    write(
        &rules_file,
        &format!(
            "{}{}",
            tick("tick-a", "America/NewYork"),
            tick("tick-c", "UTC")
        ),
    );
    daemon.signal("HUP");
    wait_until("the bad file was not refused in the log", || async {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains(r#"rules[tick-a].timezone: unknown time zone "America/NewYork""#)
    })
    .await;
    let fired = scalar(&store, FIRINGS, "tick-a").await;
    wait_until("tick-a stopped after the refused reload", || async {
        scalar(&store, FIRINGS, "tick-a").await >= fired + 2
    })
    .await;
    assert_eq!(scalar(&store, FIRINGS, "tick-c").await, 0);

    write(&rules_file, &tick("tick-b", "UTC"));
    daemon.signal("HUP");
    wait_until("tick-b did not start", || async {
        scalar(&store, FIRINGS, "tick-b").await >= 2
    })
    .await;
    const LAST: &str = "SELECT MAX(slot_at) FROM rule_firings WHERE rule = ?";
    const FIRST: &str = "SELECT MIN(slot_at) FROM rule_firings WHERE rule = ?";
    assert!(
        scalar(&store, LAST, "tick-a").await < scalar(&store, FIRST, "tick-b").await,
        "tick-a stopped when tick-b took over"
    );
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
    let skipped_agents: i64 = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM rule_firing_agents WHERE outcome = 'skipped' AND reason = 'condition'",
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert!(skipped_agents >= 4);
    assert_eq!(sim.calls(SET_STATE), 0);
    store.close().await;
}

fn run(command: &mut std::process::Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_invalid_rules_file_is_refused_by_check_and_serve_naming_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    write(
        &file,
        "[[rules]]\nname = \"care-lunch\"\ncron = \"0 0 12 * * Mon-Fri\"\n\
         timezone = \"America/New_York\"\nteam = \"t_1\"\nset = \"NOT_READY\"\n\
         [[rules]]\nname = \"late\"\ncron = \"0 61 * * *\"\ntimezone = \"America/NewYork\"\n\
         agents = []\nset = \"ON_CONTACT\"\n",
    );
    let expected = [
        "rules[late].cron: `0 61 * * *` is not a valid cron pattern",
        r#"rules[late].timezone: unknown time zone "America/NewYork""#,
        "rules[late].agents: is empty",
        "rules[late].set: ON_CONTACT is observed only",
    ];
    let (code, _, stderr) = run(wfmd().args(["rules", "check"]).arg(&file));
    assert_eq!(code, 2, "{stderr}");
    for problem in expected {
        assert!(
            stderr.contains(problem),
            "{problem}\nmissing from:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("care-lunch"),
        "a valid rule is not named: {stderr}"
    );

    let (code, _, stderr) = run(wfmd()
        .env("WFMD_SCHEDULER__RULES_FILE", &file)
        .env(
            "WFMD_DATABASE__URL",
            format!("sqlite://{}", dir.path().join("w.db").display()),
        )
        .args(["serve", "--simulate"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(expected[1]), "{stderr}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules.example.toml");
    let (code, stdout, stderr) = run(wfmd().args(["rules", "check", example]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("are valid: care-lunch"), "{stdout}");
}

#[test]
fn rules_list_prints_the_next_three_firings_in_the_rules_zone_and_in_utc() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wfmd.toml");
    write(
        &config,
        "[[rules]]\nname = \"care-lunch\"\ncron = \"0 0 12 * * Mon-Fri\"\n\
         timezone = \"America/New_York\"\nteam = \"t_1\"\nset = \"NOT_READY\"\nreason = \"LUNCH\"\n\
         only_if_state = [\"READY\"]\nskip_on_contact = true\n",
    );
    let (code, stdout, stderr) = run(wfmd().arg("--config").arg(&config).args(["rules", "list"]));
    assert_eq!(code, 0, "{stderr}");
    let expected = Slots::parse("0 0 12 * * Mon-Fri", "America/New_York")
        .unwrap()
        .upcoming(Utc::now(), 3);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "care-lunch: team t_1, set NOT_READY (LUNCH), only if READY, not on a contact; catch_up 0s"
    );
    assert_eq!(lines.len(), 5, "{stdout}");
    for (line, slot) in lines[2..].iter().zip(expected) {
        assert!(line.contains(" 12:00:00 E"), "noon EST or EDT: {line}");
        assert!(
            line.ends_with(&format!("({})", wfmd::time::rfc3339(slot))),
            "{line}"
        );
    }
}

on_both_dialects!(
    dry_run_shows_who_would_move_and_who_compliance_would_refuse_without_changing_anyone
);
async fn dry_run_shows_who_would_move_and_who_compliance_would_refuse_without_changing_anyone(
    dialect: Dialect,
) {
    let sim = TestSim::default_tenant().await.on(dialect);
    let db = TestDb::new();
    let free = sim.free_agents().remove(0);
    let off = sim.off_shift_agent();
    let config = db.dir.path().join("wfmd.toml");
    write(
        &config,
        &format!(
            "[[rules]]\nname = \"two\"\ncron = \"0 9 * * *\"\ntimezone = \"UTC\"\n\
             agents = [\"{}\", \"{}\"]\nset = \"IDLE\"\n",
            free.id, off.id
        ),
    );
    let env = sim.env(&db.url());
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(wfmd()
            .envs(env)
            .arg("--config")
            .arg(&config)
            .args(["rules", "dry-run", "two"]))
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("would move 1 of 2 agents"), "{stdout}");
    let line = |id: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(id))
            .unwrap_or_else(|| panic!("{id} missing: {stdout}"))
            .to_owned()
    };
    assert!(line(&free.id).ends_with("move to IDLE"), "{stdout}");
    assert!(
        line(&off.id).contains("compliance would reject it: AGENT_NOT_SCHEDULED"),
        "{stdout}"
    );
    assert_eq!(sim.changes(), 0);
    let store = Store::open(&db.url()).await.unwrap();
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM transition_attempts").await,
        0
    );
    store.close().await;
}

#[tokio::test]
async fn a_rule_leaves_agents_state_sync_saw_in_its_state_alone_without_a_call_and_audits_them() {
    // The platform's clock runs a minute behind ours, so the sync's poll comes well after
    // the first firing's changes by both clocks.
    let sim = TestSim::start(SimConfig {
        agents: 20,
        start_at: Some(Utc::now() - chrono::TimeDelta::minutes(1)),
        ..SimConfig::default()
    })
    .await;
    let db = TestDb::new();
    let config = sim.config(&db.url());
    let services = Services::start(&config).await.unwrap();
    let now = sim.sim.clock().now();
    let agents: Vec<String> = sim
        .agents_where(|a| {
            a.on_shift_at(now)
                && a.on_shift_at(now + chrono::TimeDelta::minutes(10))
                && a.state != "ON_CONTACT"
        })
        .into_iter()
        .take(4)
        .map(|a| a.id)
        .collect();
    assert_eq!(agents.len(), 4, "the simulated tenant has agents on shift");
    let rule = Rule {
        action: Action::Set {
            state: AgentState::NotReady,
            reason: Some("MEETING".into()),
        },
        ..weekday_noon(
            "meeting",
            RuleSelector::Agents(agents.clone()),
            Duration::ZERO,
        )
    };
    let stop = CancellationToken::new();
    let first = firer(&services, &config)
        .fire_slot(&rule, utc("2026-03-09T16:00:00Z"), None, &stop)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.changed, 4, "{first:?}");

    // The sync watches three of the four.
    let (watched, unwatched) = (&agents[..3], &agents[3]);
    let mut sync = wfmd::engine::sync::StateSync::new(
        services.store.clone(),
        services.engine.platform().clone(),
        wfmd::engine::sync::SyncSettings {
            interval: Duration::from_secs(10),
            renew_after: Duration::from_secs(3_600),
            teams: Vec::new(),
            agents: watched.to_vec(),
            unfiltered: false,
        },
    )
    .with_in_flight(services.engine.agents_in_flight());
    sync.poll_once().await.unwrap();
    let witness = wfmd::engine::SyncWitness::new(sync.status(), Duration::from_secs(10));
    let posts = sim.calls(SET_STATE);

    let second = firer(&services, &config)
        .with_sync(witness)
        .fire_slot(&rule, utc("2026-03-10T16:00:00Z"), None, &stop)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.outcome.as_str(), second.changed), ("completed", 1));
    assert_eq!(
        sim.calls(SET_STATE),
        posts + 1,
        "only the agent the sync does not watch is sent again"
    );
    let results = firings::agents(services.store.reader(), second.id)
        .await
        .unwrap();
    for result in &results {
        let want = if &result.agent_id == unwatched {
            ("changed", None)
        } else {
            ("skipped", Some("unchanged"))
        };
        assert_eq!(
            (result.outcome.as_str(), result.reason.as_deref()),
            want,
            "{}",
            result.agent_id
        );
    }
    let audited: Vec<String> = on!(services.store.reader(), |c| {
        sqlx::query_scalar(
        "SELECT agent_id FROM audit_log WHERE action = 'transition.unchanged' ORDER BY agent_id",
    )
    .fetch_all(c)
    .await
    })
    .unwrap();
    let mut want = watched.to_vec();
    want.sort();
    assert_eq!(audited, want);
    services.store.close().await;
}
