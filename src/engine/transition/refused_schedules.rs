//! Unit tests of schedule lookups the platform refuses (a tenant whose API user has no
//! WFM permission), under both `[compliance] without_schedule` policies, and of imports
//! taking over from what the engine cached or booked.

use crate::store::on;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};

use super::tests::{book, request};
use super::*;
use crate::cxone::fake::FakePlatform;
use crate::engine::imported_schedules::{ImportedSchedules, Imports};
use crate::store::testing::temp_store;

fn refusal() -> CxoneError {
    CxoneError::Forbidden {
        message: "insufficient_scope".into(),
        scope: Some("wfm:schedule:view".into()),
    }
}

fn schedule(status: ScheduleStatus, breaks: Option<Vec<crate::domain::BreakWindow>>) -> Schedule {
    let now = Utc::now();
    Schedule {
        status,
        timezone: None,
        shift_start: Some(now - TimeDelta::hours(2)),
        shift_end: Some(now + TimeDelta::hours(6)),
        breaks,
        activities: Vec::new(),
    }
}

/// An agent the platform knows (READY), whose schedule lookup answers `answer`.
fn agent(platform: &FakePlatform, id: &str, answer: Result<Schedule, CxoneError>) {
    platform.add_agent(id, schedule(ScheduleStatus::Active, Some(vec![])));
    platform.schedules.lock().unwrap().insert(id.into(), answer);
}

async fn engine(
    platform: Arc<FakePlatform>,
    policy: WithoutSchedule,
) -> (TransitionEngine, tempfile::TempDir) {
    let (store, dir) = temp_store().await;
    let engine = TransitionEngine::new(store, platform, Duration::from_secs(30))
        .with_without_schedule(policy);
    (engine, dir)
}

/// `agent`'s change to `to` through `engine`, asked for as the API does.
async fn change(engine: &TransitionEngine, agent: &str, to: AgentState) -> Transition {
    engine
        .change(Change::from(request(agent, to)))
        .await
        .map(Changed::made)
        .unwrap()
}

/// The attempt's `schedule_source` and `compliance_unchecked`, and its audit entry's
/// `scheduleSource` and `unchecked`.
async fn recorded(store: &Store, attempt_id: &str) -> [Option<String>; 4] {
    let (source, unchecked): (Option<String>, Option<String>) =
        on!(store.reader(), |c| sqlx::query_as(
            "SELECT schedule_source, compliance_unchecked FROM transition_attempts WHERE id = $1",
        )
        .bind(attempt_id)
        .fetch_one(c)
        .await)
        .unwrap();
    let (audited_source, audited_unchecked): (Option<String>, Option<String>) =
        on!(store.reader(), |c| sqlx::query_as(
            "SELECT json_extract(detail, '$.scheduleSource'), json_extract(detail, '$.unchecked')
         FROM audit_log WHERE subject_id = $1",
        )
        .bind(attempt_id)
        .fetch_one(c)
        .await)
        .unwrap();
    [source, unchecked, audited_source, audited_unchecked]
}

#[tokio::test]
async fn a_refused_schedule_lookup_fails_naming_the_fix_and_sends_nothing() {
    let platform = Arc::new(FakePlatform::default());
    agent(&platform, "u_001", Err(refusal()));
    let (engine, _dir) = engine(platform.clone(), WithoutSchedule::Refuse).await;

    let made = change(&engine, "u_001", AgentState::NotReady).await;
    let Outcome::Failed { kind, error } = &made.outcome else {
        panic!("{made:?}");
    };
    assert_eq!(*kind, FailureKind::ScheduleRefused);
    for words in [
        "the platform refuses schedule lookups for this API user",
        "missing scope `wfm:schedule:view`",
        "import schedules with `wfmd schedules import FILE`",
        "or set `[compliance] without_schedule = \"allow\"`",
    ] {
        assert!(error.contains(words), "{words:?} missing from: {error}");
    }
    assert_eq!(platform.calls("set"), 0, "nothing was sent");
    assert_eq!(
        recorded(engine.store(), &made.attempt_id).await,
        [None, None, None, None]
    );
    // The dry run of rules says the same.
    assert!(matches!(
        engine.preflight("u_001", AgentState::NotReady).await,
        Err(CheckError::ScheduleRefused(_))
    ));
}

#[tokio::test]
async fn allowed_without_schedule_a_refused_lookup_goes_ahead_recorded_as_unchecked() {
    let platform = Arc::new(FakePlatform::default());
    agent(&platform, "u_001", Err(refusal()));
    let (engine, _dir) = engine(platform.clone(), WithoutSchedule::Allow).await;

    let made = change(&engine, "u_001", AgentState::Ready).await;
    assert_eq!(made.outcome, Outcome::Succeeded);
    assert_eq!(platform.calls("set u_001 READY"), 1);
    assert_eq!(
        recorded(engine.store(), &made.attempt_id).await,
        [None, Some("schedule".into()), None, Some("schedule".into())]
    );
}

#[tokio::test]
async fn allowed_without_schedule_a_refused_break_lookup_checks_the_shift_and_leaves_the_break_unchecked()
 {
    let platform = Arc::new(FakePlatform::default());
    // Schedules without break windows: READY asks for break status, which is refused.
    agent(
        &platform,
        "u_001",
        Ok(schedule(ScheduleStatus::Active, None)),
    );
    agent(
        &platform,
        "u_002",
        Ok(schedule(ScheduleStatus::Inactive, None)),
    );
    *platform.fail_breaks_with.lock().unwrap() = Some(refusal());
    let (engine, _dir) = engine(platform.clone(), WithoutSchedule::Allow).await;

    let made = change(&engine, "u_001", AgentState::Ready).await;
    assert_eq!(made.outcome, Outcome::Succeeded);
    assert_eq!(
        recorded(engine.store(), &made.attempt_id).await,
        [
            Some("platform".into()),
            Some("mandatory_break".into()),
            Some("platform".into()),
            Some("mandatory_break".into())
        ]
    );
    // The shift is still checked.
    let off = change(&engine, "u_002", AgentState::Ready).await;
    assert_eq!(
        off.outcome,
        Outcome::Rejected {
            violation: Violation::AgentNotScheduled
        }
    );

    let (refusing, _dir) = engine_refusing(platform.clone()).await;
    let failed = change(&refusing, "u_001", AgentState::Ready).await;
    assert!(
        matches!(
            failed.outcome,
            Outcome::Failed {
                kind: FailureKind::ScheduleRefused,
                ..
            }
        ),
        "{failed:?}"
    );
    assert_eq!(platform.calls("set"), 1, "only the allowed change was sent");
}

async fn engine_refusing(platform: Arc<FakePlatform>) -> (TransitionEngine, tempfile::TempDir) {
    engine(platform, WithoutSchedule::Refuse).await
}

#[tokio::test]
async fn allow_skips_the_check_only_for_a_refusal_not_for_a_platform_that_is_down_or_says_unscheduled()
 {
    let platform = Arc::new(FakePlatform::default());
    agent(
        &platform,
        "u_001",
        Err(CxoneError::Server {
            status: 503,
            message: "maintenance".into(),
            retry_after: None,
        }),
    );
    agent(
        &platform,
        "u_002",
        Ok(schedule(ScheduleStatus::Inactive, Some(vec![]))),
    );
    let (engine, _dir) = engine(platform.clone(), WithoutSchedule::Allow).await;

    let down = change(&engine, "u_001", AgentState::NotReady).await;
    let Outcome::Failed { kind, error } = &down.outcome else {
        panic!("{down:?}");
    };
    assert_eq!(*kind, FailureKind::PlatformUnavailable);
    assert!(!error.contains("schedules import"), "{error}");
    let unscheduled = change(&engine, "u_002", AgentState::NotReady).await;
    assert_eq!(
        unscheduled.outcome,
        Outcome::Rejected {
            violation: Violation::AgentNotScheduled
        }
    );
    assert_eq!(platform.calls("set"), 0);
}

#[tokio::test]
async fn an_import_overrides_what_the_engine_cached_and_what_the_book_holds() {
    let platform = Arc::new(FakePlatform::default());
    // u_001: the platform says off shift (cached by the first change for 30 s);
    // u_002: the book holds a fresh shift under way.
    agent(
        &platform,
        "u_001",
        Ok(schedule(ScheduleStatus::Inactive, Some(vec![]))),
    );
    agent(
        &platform,
        "u_002",
        Ok(schedule(ScheduleStatus::Active, Some(vec![]))),
    );
    let (store, _dir) = temp_store().await;
    let imports = Imports::load(&store).await.unwrap();
    let wrapped = Arc::new(ImportedSchedules::new(platform.clone(), imports.clone()));
    let engine = TransitionEngine::new(store.clone(), wrapped, Duration::from_secs(30))
        .with_book_max_age(Duration::from_secs(15 * 60))
        .with_imports(imports);
    let now = Utc::now();
    book(&store, "u_002", TimeDelta::minutes(1)).await;

    let before = change(&engine, "u_001", AgentState::NotReady).await;
    assert_eq!(
        before.outcome,
        Outcome::Rejected {
            violation: Violation::AgentNotScheduled
        }
    );
    let booked = change(&engine, "u_002", AgentState::NotReady).await;
    assert_eq!(booked.outcome, Outcome::Succeeded);

    // The file: u_001 is on a shift now; u_002's shift ended an hour ago.
    let rfc = |t: chrono::DateTime<Utc>| t.to_rfc3339();
    let csv = format!(
        "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone\n\
         u_001,{},{},,,,,\n\
         u_002,{},{},,,,,\n",
        rfc(now - TimeDelta::hours(1)),
        rfc(now + TimeDelta::hours(7)),
        rfc(now - TimeDelta::hours(9)),
        rfc(now - TimeDelta::hours(1)),
    );
    let import = engine.import_schedules(&csv, "admin").await.unwrap();
    let summary = import.finished().await.unwrap();
    assert_eq!((summary.shifts, summary.agents), (2, 2));

    let after = change(&engine, "u_001", AgentState::NotReady).await;
    assert_eq!(
        after.outcome,
        Outcome::Succeeded,
        "the cached answer was dropped"
    );
    let ended = change(&engine, "u_002", AgentState::Ready).await;
    assert_eq!(
        ended.outcome,
        Outcome::Rejected {
            violation: Violation::AgentNotScheduled
        },
        "the imported schedule decides, not the book"
    );
    let audited: (String, String) = on!(store.reader(), |c| sqlx::query_as(
        "SELECT actor, json_extract(detail, '$.sha256') FROM audit_log
         WHERE action = 'schedules.imported'",
    )
    .fetch_one(c)
    .await)
    .unwrap();
    assert_eq!(audited, ("admin".into(), summary.sha256));
}
