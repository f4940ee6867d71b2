//! The state sync on the `incontact` dialect: a delta cursor over `/agents/states`
//! against the simulator's busy tenant, its clock stepped by the test, compared with the
//! simulator's ground truth.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wfmd::on;

use chrono::Utc;
use rand::{Rng, SeedableRng};
use wfmd::cxone::{Budget, ContactCenter, IncontactClient, IncontactSettings, RetryPolicy};
use wfmd::engine::sync::{StateSync, SyncSettings};
use wfmd::engine::{Change, Changed};
use wfmd::sim::incontact::{ACCESS_KEY_ID, ACCESS_KEY_SECRET, IncontactKnobs, UnchangedAnswer};
use wfmd::sim::{SimConfig, Simulator};
use wfmd::store::Store;

use crate::helpers::{TestDb, TestSim};
use crate::sync::{assert_history_matches, expected, recorded};

const INTERVAL: Duration = Duration::from_secs(5);
const AGENT_STATES: &str = "GET /inContactAPI/services/{version}/agents/states";

async fn busy_tenant(agents: usize) -> TestSim {
    TestSim::start(SimConfig {
        agents,
        activity: true,
        time_scale: 0.0,
        requests_per_minute: 0,
        ..SimConfig::default()
    })
    .await
}

pub fn incontact_client(sim: &TestSim) -> Arc<dyn ContactCenter> {
    Arc::new(IncontactClient::new(
        crate::helpers::http_client(),
        IncontactSettings {
            auth_base: sim.base_url.clone(),
            access_key_id: ACCESS_KEY_ID.into(),
            access_key_secret: ACCESS_KEY_SECRET.to_owned().into(),
            client_id: sim.client_id.clone(),
            client_secret: sim.client_secret.clone().into(),
            tenant_id: None,
            base_url: None,
            api_version: "34.0".into(),
            reason_codes: BTreeMap::new(),
            mandatory_breaks: vec!["Lunch".into(), "Break".into()],
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_retries: 2,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(50),
            },
            logout_confirm: Duration::from_secs(5),
        },
        Arc::new(Budget::unlimited()),
    ))
}

fn state_sync(sim: &TestSim, store: &Store) -> StateSync {
    let settings = SyncSettings {
        interval: INTERVAL,
        renew_after: Duration::from_secs(23 * 3_600),
        teams: Vec::new(),
        agents: Vec::new(),
        unfiltered: false,
    };
    StateSync::new(store.clone(), incontact_client(sim), settings)
}

/// The state wfmd reads for a ground-truth entry on this dialect: Unavailable is
/// PAUSED or IDLE only for their default reasons' codes, else NOT_READY.
fn projected(state: &str, reason: &str) -> String {
    match state {
        "NOT_READY" | "PAUSED" | "IDLE" => match reason {
            "ADHOC" => "PAUSED",
            "SYSTEM_IDLE" => "IDLE",
            _ => "NOT_READY",
        }
        .to_owned(),
        other => other.to_owned(),
    }
}

#[tokio::test]
async fn delta_sync_over_a_thousand_polls_matches_the_simulators_ground_truth() {
    let sim = busy_tenant(30).await;
    let db = TestDb::new();
    let store = Store::open(&db.url()).await.unwrap();
    let mut sync = state_sync(&sim, &store);
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let answers = [
        UnchangedAnswer::EmptyList,
        UnchangedAnswer::NoContent,
        UnchangedAnswer::NotModified,
    ];
    let mut polls = Vec::new();
    let mut full = 0;
    for cycle in 0..1_000 {
        if cycle % 100 == 0 {
            sim.sim.set_incontact_knobs(IncontactKnobs {
                unchanged_answer: answers[cycle / 100 % 3],
                ..IncontactKnobs::default()
            });
        }
        // Random activity from outside on top of the agents' own, between polls (a
        // change stamped exactly at a poll instant would be after that poll's answer).
        sim.sim.clock().advance(Duration::from_secs(2));
        if rng.random_bool(0.2) {
            let agent = format!("u_{:03}", rng.random_range(1..=30));
            let state = ["READY", "NOT_READY", "PAUSED", "IDLE"][rng.random_range(0..4)];
            sim.sim.force_state(&agent, state, "");
        }
        sim.sim.clock().advance(INTERVAL - Duration::from_secs(2));
        polls.push(sim.sim.clock().now());
        let report = sync.poll_once().await.unwrap();
        if report.agents == 30 {
            full += 1;
        }
    }
    assert!(full >= 1, "the first poll is a full snapshot");
    assert!(full < 100, "later polls are deltas ({full} full ones)");
    assert_history_matches(&sim.sim, &store, &polls, projected).await;
    assert!(
        wfmd::store::audit::verify(store.reader())
            .await
            .unwrap()
            .is_intact()
    );
}

#[tokio::test]
async fn an_outage_mid_stream_resyncs_from_the_epoch_without_recording_a_change_twice() {
    let sim = busy_tenant(30).await;
    let db = TestDb::new();
    let store = Store::open(&db.url()).await.unwrap();
    let mut sync = state_sync(&sim, &store);
    let mut polls = Vec::new();
    let mut failed = 0;
    for cycle in 0..120 {
        if cycle == 60 {
            sim.sim.fail_next_on(AGENT_STATES, 1, 503, None);
        }
        sim.sim.clock().advance(INTERVAL);
        match sync.poll_once().await {
            Ok(_) => polls.push(sim.sim.clock().now()),
            Err(_) => failed += 1,
        }
    }
    assert_eq!(failed, 1);
    let full_reads = sim
        .sim
        .stats()
        .by_route
        .get(AGENT_STATES)
        .copied()
        .unwrap_or_default();
    assert_eq!(full_reads, 120, "one call per cycle");
    // The poll after the outage read everyone again; nothing was recorded twice.
    assert_history_matches(&sim.sim, &store, &polls, projected).await;
    let events: i64 = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox_events"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    let mut changes = 0;
    for (agent, _) in expected(&sim.sim, &polls, projected) {
        changes += recorded(&store, &agent).await.len() as i64;
    }
    assert_eq!(events, changes, "one event per recorded interval");
}

#[tokio::test]
async fn a_logged_out_agent_on_shift_is_rejected_as_agent_logged_out_without_a_failure() {
    use wfmd::domain::{AgentState, Origin, Violation};
    use wfmd::engine::{Outcome, TransitionEngine, TransitionRequest};
    let sim = TestSim::start(SimConfig {
        agents: 20,
        time_scale: 0.0,
        requests_per_minute: 0,
        ..SimConfig::default()
    })
    .await;
    let db = TestDb::new();
    let store = Store::open(&db.url()).await.unwrap();
    let engine = TransitionEngine::new(store, incontact_client(&sim), Duration::ZERO);
    // u_004 is on shift and working; it logs itself out on the phone.
    assert!(sim.sim.force_state("u_004", "LOGGED_OUT", ""));
    let request = |target| TransitionRequest {
        agent_id: "u_004".into(),
        target,
        reason: None,
        origin: Origin::Api,
        actor: "test".into(),
        idempotency_key: None,
    };
    let transition = engine
        .change(Change::from(request(AgentState::Ready)))
        .await
        .map(Changed::made)
        .unwrap();
    assert_eq!(
        transition.outcome,
        Outcome::Rejected {
            violation: Violation::AgentLoggedOut
        }
    );
    assert_eq!(sim.sim.agent("u_004").unwrap().state, "LOGGED_OUT");

    // Logging in is the agent's to do; then the change goes through.
    assert!(sim.sim.force_state("u_004", "NOT_READY", "BREAK"));
    let transition = engine
        .change(Change::from(request(AgentState::Ready)))
        .await
        .map(Changed::made)
        .unwrap();
    assert_eq!(transition.outcome, Outcome::Succeeded);
    assert_eq!(sim.sim.agent("u_004").unwrap().state, "READY");
}

fn run(command: &mut std::process::Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn incontact_env(sim: &TestSim, db: &TestDb, secret: &str) -> Vec<(String, String)> {
    [
        ("WFMD_DATABASE__URL", db.url()),
        ("WFMD_CXONE__DIALECT", "incontact".into()),
        ("WFMD_CXONE__AUTH_BASE", sim.base_url.clone()),
        ("WFMD_CXONE__ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
        ("WFMD_CXONE__ACCESS_KEY_SECRET", secret.into()),
        ("WFMD_CXONE__CLIENT_ID", sim.client_id.clone()),
        ("WFMD_CXONE__CLIENT_SECRET", sim.client_secret.clone()),
        ("WFMD_RETRY__BASE_DELAY_MS", "10".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[tokio::test]
async fn doctor_shows_the_api_host_teams_codes_and_names_what_is_missing() {
    let sim = busy_tenant(20).await;
    let db = TestDb::new();
    let env = incontact_env(&sim, &db, ACCESS_KEY_SECRET);
    let doctor = |env: Vec<(String, String)>| {
        tokio::task::spawn_blocking(move || run(crate::helpers::wfmd().envs(env).arg("doctor")))
    };
    let (code, stdout, stderr) = doctor(env.clone()).await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("/c9/inContactAPI/services/v34.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("agents           20 in 2 teams"),
        "{stdout}"
    );
    assert!(stdout.contains("Lunch (2)"), "{stdout}");
    assert!(stdout.contains("WFM schedules    readable"), "{stdout}");
    assert!(stdout.contains("skill activity   readable"), "{stdout}");
    assert!(
        stdout.contains("missing: [cxone.break_activities]"),
        "{stdout}"
    );

    sim.sim.set_incontact_knobs(IncontactKnobs {
        wfm: false,
        ..IncontactKnobs::default()
    });
    let (code, stdout, _) = doctor(env).await.unwrap();
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("WFM schedules    REFUSED: the platform denied access (403)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "so changes will be refused until schedules are imported (`wfmd schedules import \
             FILE`) or `[compliance] without_schedule = \"allow\"` (20 of 20 agents have no \
             imported schedule)"
        ),
        "{stdout}"
    );

    let (code, stdout, stderr) = doctor(incontact_env(&sim, &db, "wrong")).await.unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("access key {ACCESS_KEY_ID}")),
        "{stdout}"
    );
    assert!(!stdout.contains("wrong") && !stderr.contains("wrong"));
}

/// A schedules CSV of the simulator's ground truth for `agents`.
pub(crate) fn schedules_csv(sim: &Simulator, agents: &[&str]) -> String {
    let mut csv = String::from(
        "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone\n",
    );
    for id in agents {
        let a = sim.agent(id).unwrap();
        let shift = format!(
            "{id},{},{}",
            a.shift_start.to_rfc3339(),
            a.shift_end.to_rfc3339()
        );
        if a.breaks.is_empty() {
            csv.push_str(&format!("{shift},,,,,{}\n", a.timezone));
        }
        for b in &a.breaks {
            csv.push_str(&format!(
                "{shift},{},{},{},{},{}\n",
                b.start.to_rfc3339(),
                b.end.to_rfc3339(),
                b.kind,
                b.mandatory,
                a.timezone
            ));
        }
    }
    csv
}

#[tokio::test]
async fn schedules_from_the_wfm_export_and_from_a_csv_file_give_the_same_verdicts() {
    use chrono::SubsecRound;
    use wfmd::domain::{AgentState, Origin};
    use wfmd::engine::imported_schedules::{ImportedSchedules, import};
    use wfmd::engine::{Outcome, TransitionEngine, TransitionRequest};
    // Two identical tenants: one exports its WFM schedules, one has no WFM access.
    let start = Utc::now().trunc_subsecs(0);
    let tenant = || {
        TestSim::start(SimConfig {
            agents: 20,
            time_scale: 0.0,
            start_at: Some(start),
            requests_per_minute: 0,
            ..SimConfig::default()
        })
    };
    let (exporting, importing) = (tenant().await, tenant().await);
    importing.sim.set_incontact_knobs(IncontactKnobs {
        wfm: false,
        ..IncontactKnobs::default()
    });
    let agents: Vec<String> = (1..=20).map(|i| format!("u_{i:03}")).collect();
    let verdicts = |engine: TransitionEngine| {
        let agents = agents.clone();
        async move {
            let mut out = Vec::new();
            for agent in agents {
                let t = engine
                    .change(Change::from(TransitionRequest {
                        agent_id: agent.clone(),
                        target: AgentState::Ready,
                        reason: None,
                        origin: Origin::Api,
                        actor: "test".into(),
                        idempotency_key: None,
                    }))
                    .await
                    .unwrap()
                    .made();
                out.push(match t.outcome {
                    Outcome::Succeeded => "succeeded".to_owned(),
                    Outcome::Rejected { violation } => violation.to_string(),
                    Outcome::Failed { error, .. } => format!("failed: {error}"),
                });
            }
            out
        }
    };

    let db = TestDb::new();
    let store = Store::open(&db.url()).await.unwrap();
    let from_export = verdicts(TransitionEngine::new(
        store,
        incontact_client(&exporting),
        Duration::ZERO,
    ))
    .await;

    let db = TestDb::new();
    let store = Store::open(&db.url()).await.unwrap();
    let ids: Vec<&str> = agents.iter().map(String::as_str).collect();
    let summary = import(&store, &schedules_csv(&importing.sim, &ids), "test")
        .await
        .unwrap();
    assert_eq!(summary.agents, 20);
    let platform = ImportedSchedules::wrap(incontact_client(&importing), &store)
        .await
        .unwrap();
    let from_file = verdicts(TransitionEngine::new(store, platform, Duration::ZERO)).await;

    assert_eq!(from_export, from_file);
    for expected in [
        "succeeded",
        "AGENT_NOT_SCHEDULED",
        "MANDATORY_BREAK_VIOLATION",
        "STATE_CONFLICT",
    ] {
        assert!(
            from_file.iter().any(|v| v == expected),
            "{expected} in {from_file:?}"
        );
    }
    let exports = |sim: &TestSim| {
        sim.sim
            .stats()
            .by_route
            .get("POST /inContactAPI/services/{version}/schedules/export")
            .copied()
            .unwrap_or_default()
    };
    assert!(exports(&exporting) > 0);
    assert_eq!(
        exports(&importing),
        0,
        "the file answered, not the platform"
    );
}

#[tokio::test]
async fn schedules_import_names_the_bad_lines_and_stores_nothing() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedules.csv");
    std::fs::write(
        &file,
        "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone\n\
         u_001,2026-11-23 09:00,2026-11-23 17:00,,,,,Europe/London\n\
         u_002,2026-11-23 09:00,2026-11-23 08:00,,,,,Europe/London\n",
    )
    .unwrap();
    let env = vec![("WFMD_DATABASE__URL".to_owned(), db.url())];
    let import = |env: Vec<(String, String)>, file: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            run(crate::helpers::wfmd()
                .envs(env)
                .arg("schedules")
                .arg("import")
                .arg(file))
        })
    };
    let (code, stdout, stderr) = import(env.clone(), file.clone()).await.unwrap();
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("line 3: shift_end is not after shift_start"),
        "{stderr}"
    );
    let store = Store::open(&db.url()).await.unwrap();
    let rows: i64 = on!(store.reader(), |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM imported_shifts"
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(rows, 0);

    std::fs::write(
        &file,
        "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone\n\
         u_001,2026-11-23 09:00,2026-11-23 17:00,2026-11-23 12:00,2026-11-23 12:30,LUNCH,true,Europe/London\n",
    )
    .unwrap();
    let (code, stdout, stderr) = import(env, file).await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("imported 1 shifts of 1 agents"), "{stdout}");
}

#[tokio::test]
async fn what_a_dialect_cannot_offer_is_one_error_naming_the_feature_and_the_dialect() {
    use wfmd::cxone::SubscriptionRequest;
    let sim = TestSim::start(SimConfig {
        agents: 10,
        time_scale: 0.0,
        requests_per_minute: 0,
        ..SimConfig::default()
    })
    .await;
    let v2 = wfmd::platform(
        &sim.config("sqlite::memory:"),
        crate::helpers::http_client(),
        Arc::new(Budget::unlimited()),
    );
    let incontact = incontact_client(&sim);
    let request = SubscriptionRequest {
        name: "wfmd".into(),
        interval: Duration::from_secs(10),
        agent_ids: None,
    };

    let errors = [
        v2.schedules(&["u_001".into()]).await.unwrap_err(),
        incontact
            .list_agents(&wfmd::cxone::AgentFilter {
                skill_id: Some("s_1".into()),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        incontact.create_subscription(&request).await.unwrap_err(),
    ];
    let said: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        said,
        [
            "bulk schedule export is not offered by this platform (v2 dialect)",
            "listing agents by skill is not offered by this platform (incontact dialect)",
            "real-time subscriptions is not offered by this platform (incontact dialect)",
        ]
    );
    assert!(errors.iter().all(|e| !e.is_retryable()));
    assert_eq!(
        sim.sim.stats().api_requests,
        0,
        "nothing was asked of the platform"
    );
}
