//! The client against the simulator's `incontact` dialect over real HTTP, one knob at a
//! time, plus the pure mappings.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::cxone::{StateChange, install_crypto_provider};
use crate::domain::ScheduleStatus;
use crate::sim::incontact::{ACCESS_KEY_ID, ACCESS_KEY_SECRET, IncontactKnobs, UnchangedAnswer};
use crate::sim::{RunningSim, SimConfig, Simulator};

const AGENT_STATES: &str = "GET /inContactAPI/services/{version}/agents/states";
const LIST_SKILLS: &str = "GET /inContactAPI/services/{version}/skills";

struct Tenant {
    running: RunningSim,
    stop: CancellationToken,
}

impl Drop for Tenant {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Tenant {
    fn sim(&self) -> &Simulator {
        &self.running.sim
    }

    fn settings(&self) -> IncontactSettings {
        IncontactSettings {
            auth_base: self.running.base_url.clone(),
            access_key_id: ACCESS_KEY_ID.to_owned(),
            access_key_secret: ACCESS_KEY_SECRET.to_owned().into(),
            client_id: "wfmd-sim".to_owned(),
            client_secret: "wfmd-sim-secret".to_owned().into(),
            tenant_id: None,
            base_url: None,
            api_version: DEFAULT_API_VERSION.to_owned(),
            reason_codes: BTreeMap::from([("COFFEE".to_owned(), "Break".to_owned())]),
            mandatory_breaks: vec!["Lunch".to_owned(), "Break".to_owned()],
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_retries: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(200),
            },
            logout_confirm: Duration::from_secs(5),
        }
    }

    fn client_with(&self, settings: IncontactSettings) -> IncontactClient {
        IncontactClient::new(
            reqwest::Client::new(),
            settings,
            Arc::new(Budget::unlimited()),
        )
    }

    fn client(&self) -> IncontactClient {
        self.client_with(self.settings())
    }

    fn knobs(&self, knobs: IncontactKnobs) {
        self.sim().set_incontact_knobs(knobs);
    }

    fn state_calls(&self) -> u64 {
        self.sim()
            .stats()
            .by_route
            .iter()
            .filter(|(route, _)| route.starts_with("POST") && route.ends_with("/state"))
            .map(|(_, n)| n)
            .sum()
    }
}

async fn tenant(time_scale: f64) -> Tenant {
    install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let running = Simulator::start(
        SimConfig {
            agents: 20,
            requests_per_minute: 0,
            time_scale,
            ..SimConfig::default()
        },
        listener,
        stop.clone(),
    )
    .await
    .unwrap();
    Tenant { running, stop }
}

#[tokio::test]
async fn discovery_leads_to_the_api_host_and_the_agents() {
    let t = tenant(0.0).await;
    let client = t.client();
    let base = client.api_base().await.unwrap();
    assert_eq!(
        base,
        format!("{}/c9/inContactAPI/services/v34.0", t.running.base_url)
    );
    let agents = client.list_agents(&AgentFilter::default()).await.unwrap();
    assert_eq!(agents.len(), 20);
    assert!(
        agents
            .iter()
            .all(|a| a.team_id.is_some() && !a.name.is_empty())
    );
    let team = client
        .list_agents(&AgentFilter {
            team_id: Some("t_1".into()),
            skill_id: None,
        })
        .await
        .unwrap();
    assert!(!team.is_empty() && team.iter().all(|a| a.team_id.as_deref() == Some("t_1")));
}

#[tokio::test]
async fn a_configured_base_url_overrides_discovery() {
    let t = tenant(0.0).await;
    let mut settings = t.settings();
    settings.base_url = Some(format!("{}/c9", t.running.base_url));
    settings.api_version = "33".into();
    let client = t.client_with(settings);
    assert!(
        client
            .api_base()
            .await
            .unwrap()
            .ends_with("/c9/inContactAPI/services/v33.0")
    );
    client.list_agents(&AgentFilter::default()).await.unwrap();
}

#[tokio::test]
async fn a_wrong_access_key_is_a_clear_error_naming_the_key_id_without_retries() {
    let t = tenant(0.0).await;
    for status in [400u16, 401] {
        t.knobs(IncontactKnobs {
            token_failure_status: status,
            ..IncontactKnobs::default()
        });
        t.sim().reset_stats();
        let mut settings = t.settings();
        settings.access_key_secret = "wrong".to_owned().into();
        let client = t.client_with(settings);
        let err = client
            .list_agents(&AgentFilter::default())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            CxoneError::BadCredentials {
                client_id: format!("access key {ACCESS_KEY_ID}"),
                status,
            }
        );
        assert!(err.to_string().contains(ACCESS_KEY_ID));
        assert!(!err.to_string().contains("wrong"));
        assert_eq!(t.sim().stats().token_requests, 1, "no retry storm");
        assert_eq!(t.sim().stats().api_requests, 0);
    }
    // A wrong application secret names the client id instead.
    let mut settings = t.settings();
    settings.client_secret = "nope".to_owned().into();
    let err = t.client_with(settings).check_access().await.unwrap_err();
    assert!(
        matches!(err, CxoneError::BadCredentials { ref client_id, .. } if client_id == "wfmd-sim")
    );
}

#[tokio::test]
async fn two_hundred_waiting_callers_cause_one_token_call_at_start_renewal_and_revocation() {
    let t = tenant(0.0).await;
    let client = Arc::new(t.client());
    let calls = (0..200).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.check_access().await })
    });
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(t.sim().stats().token_requests, 1);

    // Within a minute of its expiry: the 200 callers waiting renew it once, before it
    // expires (the platform never sees the old token refused).
    client.core.tokens.due_for_renewal().await;
    let calls = (0..200).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.core.tokens.token().await.map(|t| t.generation()) })
    });
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 2);
    }
    assert_eq!(t.sim().stats().token_requests, 2);

    // Revoked: the 200 callers refused with the same token renew it once.
    t.sim().revoke_tokens();
    let calls = (0..200).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.list_skills().await })
    });
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(t.sim().stats().token_requests, 3);
}

#[tokio::test]
async fn a_reason_becomes_the_teams_code_and_an_unknown_one_is_refused_with_the_list() {
    let t = tenant(0.0).await;
    let client = t.client();
    // u_004 is working (READY).
    client
        .set_agent_state(StateChange::new("u_004", AgentState::NotReady, "LUNCH"))
        .await
        .unwrap();
    let agent = t.sim().agent("u_004").unwrap();
    assert_eq!(
        (agent.state.as_str(), agent.reason.as_str()),
        ("NOT_READY", "LUNCH")
    );
    // Configured: COFFEE -> Break.
    client
        .set_agent_state(StateChange::new("u_004", AgentState::NotReady, "COFFEE"))
        .await
        .unwrap();
    assert_eq!(t.sim().agent("u_004").unwrap().reason, "BREAK");
    // The default reason of IDLE names the `System Idle` code.
    client
        .set_agent_state(StateChange::new("u_004", AgentState::Idle, ""))
        .await
        .unwrap();
    assert_eq!(t.sim().agent("u_004").unwrap().reason, "SYSTEM_IDLE");

    let before = t.state_calls();
    let err = client
        .set_agent_state(StateChange::new("u_004", AgentState::NotReady, "KARAOKE"))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("KARAOKE") && message.contains("Lunch, "),
        "{message}"
    );
    assert_eq!(t.state_calls(), before, "refused before any state call");
}

#[tokio::test]
async fn both_casings_of_unavailable_codes_work() {
    let t = tenant(0.0).await;
    for legacy_casing in [false, true] {
        t.knobs(IncontactKnobs {
            legacy_casing,
            ..IncontactKnobs::default()
        });
        let client = t.client();
        client
            .set_agent_state(StateChange::new("u_004", AgentState::NotReady, "meeting"))
            .await
            .unwrap();
        assert_eq!(t.sim().agent("u_004").unwrap().reason, "MEETING");
        let codes = client.unavailable_codes("t_1").await.unwrap();
        assert!(
            codes
                .iter()
                .any(|c| c.id == "2" && c.name == "Lunch" && c.active)
        );
    }
}

#[tokio::test]
async fn a_logged_out_agent_is_refused_as_logged_out_and_a_contact_as_a_conflict() {
    let t = tenant(0.0).await;
    let client = t.client();
    let err = client
        .set_agent_state(StateChange::new("u_001", AgentState::Ready, ""))
        .await
        .unwrap_err();
    assert!(err.is_agent_logged_out(), "{err:?}");
    let err = client
        .set_agent_state(StateChange::new("u_003", AgentState::Ready, ""))
        .await
        .unwrap_err();
    assert!(matches!(err, CxoneError::Conflict { .. }), "{err:?}");
}

#[tokio::test]
async fn a_logout_is_confirmed_by_the_state_once_the_platform_shows_it() {
    let t = tenant(1.0).await;
    t.knobs(IncontactKnobs {
        logout_delay_ms: 1_200,
        ..IncontactKnobs::default()
    });
    let client = t.client();
    let snapshot = client
        .set_agent_state(StateChange::new("u_004", AgentState::LoggedOut, ""))
        .await
        .unwrap();
    assert_eq!(snapshot.state, AgentState::LoggedOut);
    assert_eq!(t.sim().agent("u_004").unwrap().state, "LOGGED_OUT");

    // Never shown within the wait: failed, saying why.
    t.knobs(IncontactKnobs {
        logout_delay_ms: 600_000,
        ..IncontactKnobs::default()
    });
    let mut settings = t.settings();
    settings.logout_confirm = Duration::from_millis(700);
    let err = t
        .client_with(settings)
        .set_agent_state(StateChange::new("u_005", AgentState::LoggedOut, ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("(202)"), "{err}");
    assert!(!err.is_retryable());
}

/// Polls `feed` once.
async fn poll(client: &IncontactClient, feed: &mut ChangeFeed) -> FeedPoll {
    client.poll_feed(feed).await.unwrap()
}

#[tokio::test]
async fn each_unchanged_poll_answer_is_an_empty_delta_that_keeps_the_cursor() {
    let t = tenant(0.0).await;
    let client = t.client();
    for answer in [
        UnchangedAnswer::EmptyList,
        UnchangedAnswer::NoContent,
        UnchangedAnswer::NotModified,
    ] {
        t.knobs(IncontactKnobs {
            unchanged_answer: answer,
            ..IncontactKnobs::default()
        });
        let request = SubscriptionRequest {
            name: "wfmd".into(),
            interval: Duration::from_secs(5),
            agent_ids: None,
        };
        let mut feed = client.open_feed(&request).await.unwrap();
        let full = poll(&client, &mut feed).await;
        assert!(full.snapshot);
        assert_eq!(full.agents.len(), 20);
        t.sim().clock().advance(Duration::from_secs(5));
        let quiet = poll(&client, &mut feed).await;
        assert!(!quiet.snapshot && quiet.agents.is_empty(), "{answer:?}");
        assert!(feed.cursor.is_some(), "{answer:?} keeps the cursor");
        t.sim().clock().advance(Duration::from_secs(5));
        assert!(t.sim().force_state("u_006", "PAUSED", ""));
        t.sim().clock().advance(Duration::from_secs(5));
        let delta = poll(&client, &mut feed).await;
        let ids: Vec<(&str, AgentState)> = delta
            .agents
            .iter()
            .map(|a| (a.agent_id.as_str(), a.state))
            .collect();
        assert_eq!(ids, [("u_006", AgentState::Paused)], "{answer:?}");
        assert!(t.sim().force_state("u_006", "READY", ""));
        // Past the restore: a change stamped exactly at a poll time is answered again.
        t.sim().clock().advance(Duration::from_secs(1));
    }
}

#[tokio::test]
async fn a_change_reaches_the_feed_after_the_propagation_lag() {
    let t = tenant(0.0).await;
    t.knobs(IncontactKnobs {
        lag_ms: 3_000,
        ..IncontactKnobs::default()
    });
    let client = t.client();
    let request = SubscriptionRequest {
        name: "wfmd".into(),
        interval: Duration::from_secs(5),
        agent_ids: Some(vec!["u_004".into()]),
    };
    let mut feed = client.open_feed(&request).await.unwrap();
    assert_eq!(
        poll(&client, &mut feed).await.agents.len(),
        1,
        "only the watched agent"
    );
    t.sim().clock().advance(Duration::from_secs(5));
    assert!(t.sim().force_state("u_004", "NOT_READY", "LUNCH"));
    t.sim().clock().advance(Duration::from_secs(1));
    assert!(
        poll(&client, &mut feed).await.agents.is_empty(),
        "not visible yet"
    );
    t.sim().clock().advance(Duration::from_secs(3));
    let seen = poll(&client, &mut feed).await.agents;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].state, AgentState::NotReady);
    assert_eq!(seen[0].wrap_up_code.as_deref(), Some("LUNCH"));
}

#[tokio::test]
async fn an_error_mid_stream_restarts_the_feed_from_a_full_snapshot() {
    let t = tenant(0.0).await;
    let client = t.client();
    let request = SubscriptionRequest {
        name: "wfmd".into(),
        interval: Duration::from_secs(5),
        agent_ids: None,
    };
    let mut feed = client.open_feed(&request).await.unwrap();
    poll(&client, &mut feed).await;
    t.sim().fail_next_on(AGENT_STATES, 1, 503, None);
    t.sim().clock().advance(Duration::from_secs(5));
    let err = client.poll_feed(&mut feed).await.unwrap_err();
    assert!(
        matches!(err, CxoneError::Server { status: 503, ref message, .. } if message == "Service Unavailable")
    );
    assert!(feed.cursor.is_none());
    let again = poll(&client, &mut feed).await;
    assert!(again.snapshot && again.agents.len() == 20);
}

#[tokio::test]
async fn rate_limits_and_outages_are_retried_with_or_without_retry_after() {
    let t = tenant(0.0).await;
    let client = t.client();
    client.check_access().await.unwrap();
    t.knobs(IncontactKnobs {
        retry_after: false,
        ..IncontactKnobs::default()
    });
    t.sim().fail_next_on(LIST_SKILLS, 1, 429, Some(1));
    t.sim().fail_next_on(LIST_SKILLS, 1, 503, None);
    assert!(!client.list_skills().await.unwrap().is_empty());
    assert_eq!(t.sim().stats().injected_faults, 2);
}

#[tokio::test]
async fn schedules_come_from_the_wfm_export_with_mandatory_breaks_by_title() {
    let t = tenant(0.0).await;
    let client = t.client();
    let truth = t.sim().agent("u_004").unwrap();
    let schedule = client.schedule("u_004").await.unwrap();
    assert!(schedule.is_active());
    assert_eq!(schedule.shift_start, Some(truth.shift_start));
    assert_eq!(schedule.shift_end, Some(truth.shift_end));
    let breaks = schedule.breaks.clone().unwrap();
    let want: Vec<(DateTime<Utc>, bool)> = truth
        .breaks
        .iter()
        .map(|b| (b.start, b.mandatory))
        .collect();
    let got: Vec<(DateTime<Utc>, bool)> = breaks.iter().map(|b| (b.start, b.mandatory)).collect();
    assert_eq!(got, want);
    // u_002 is in a mandatory break now.
    let status = client.break_status("u_002").await.unwrap();
    assert!(status.mandatory_break_required);

    t.knobs(IncontactKnobs {
        wfm: false,
        ..IncontactKnobs::default()
    });
    let err = client.schedule("u_004").await.unwrap_err();
    assert!(matches!(err, CxoneError::Forbidden { .. }), "{err:?}");
}

#[tokio::test]
async fn skill_tiles_come_from_skill_activity() {
    let t = tenant(0.0).await;
    let client = t.client();
    let skills = client.list_skills().await.unwrap();
    let tiles = client.skill_activity(&[]).await.unwrap();
    assert_eq!(tiles.len(), skills.len());
    let staffed: u32 = tiles.iter().map(|t| t.agents_staffed).sum();
    assert!(staffed > 0);
    assert!(
        tiles
            .iter()
            .all(|t| t.service_level.is_some_and(|s| s <= 1.0))
    );
    // Each skill's own threshold and goal (a percentage on the wire, a share here).
    for tile in &tiles {
        let target = crate::sim::incontact::service_level_target(&tile.skill_id);
        assert_eq!(
            tile.service_level_threshold_secs,
            Some(target.threshold_secs),
            "{}",
            tile.skill_id
        );
        let goal = tile.service_level_goal.unwrap();
        assert!(
            (goal - f64::from(target.goal_percent) / 100.0).abs() < 1e-9,
            "{}: {goal}",
            tile.skill_id
        );
    }
}

#[tokio::test]
async fn queue_tiles_are_the_skills_activity_without_an_average_wait() {
    let t = tenant(0.0).await;
    let client = t.client();
    let queues = client.list_queues().await.unwrap();
    let ids: Vec<String> = queues.iter().map(|q| q.id.clone()).collect();
    let skills = client.skill_activity(&ids).await.unwrap();
    let tiles = client.queue_stats(&ids).await.unwrap();
    assert_eq!(tiles.len(), skills.len());
    assert!(!tiles.is_empty());
    for (tile, skill) in tiles.iter().zip(&skills) {
        assert_eq!(tile.queue_id, skill.skill_id);
        assert_eq!(tile.name, skill.skill_name);
        assert_eq!(tile.contacts_waiting, skill.contacts_queued);
        assert_eq!(tile.agents_logged_on, skill.agents_staffed);
        assert_eq!(tile.agents_available, skill.agents_available);
        assert_eq!(tile.agents_busy, skill.agents_on_contact + skill.agents_acw);
        assert_eq!(tile.service_level, skill.service_level);
        assert_eq!(tile.average_wait_ms, None, "the platform gives none");
    }
    let one = client.queue_stats(&ids[..1]).await.unwrap();
    assert_eq!(one.len(), 1, "only the queues asked for");
    assert_eq!(one[0].queue_id, ids[0]);
}

#[test]
fn unavailable_states_map_back_to_reasons_and_states() {
    let configured = BTreeMap::from([("LUNCH_BREAK".to_owned(), "12".to_owned())]);
    assert_eq!(
        reason_for_code("System Idle", Some("6"), &configured),
        "SYSTEM_IDLE"
    );
    assert_eq!(
        reason_for_code("Lunch", Some("12"), &configured),
        "LUNCH_BREAK"
    );
    let codes = vec![
        UnavailableCode {
            id: "1".into(),
            name: "Break".into(),
            active: true,
            acw: false,
        },
        UnavailableCode {
            id: "12".into(),
            name: "Lunch".into(),
            active: true,
            acw: false,
        },
        UnavailableCode {
            id: "8".into(),
            name: "Old".into(),
            active: false,
            acw: false,
        },
    ];
    assert_eq!(resolve_code(&codes, "break", &configured).unwrap().id, "1");
    assert_eq!(
        resolve_code(&codes, "LUNCH_BREAK", &configured).unwrap().id,
        "12"
    );
    assert!(resolve_code(&codes, "OLD", &configured).is_none());
    // `Lunch` is LUNCH_BREAK's code alone: LUNCH may not take it by name, or a LUNCH
    // change would read back as LUNCH_BREAK.
    assert!(resolve_code(&codes, "LUNCH", &configured).is_none());
}

#[tokio::test]
async fn a_mapped_reason_reads_back_as_itself_and_the_codes_own_name_is_refused() {
    let t = tenant(0.0).await;
    let mut settings = t.settings();
    settings.reason_codes = BTreeMap::from([("COACHING".to_owned(), "Lunch".to_owned())]);
    let client = t.client_with(settings);
    client
        .set_agent_state(StateChange::new("u_004", AgentState::NotReady, "COACHING"))
        .await
        .unwrap();
    let read = client.agent_state("u_004").await.unwrap();
    assert_eq!(
        (read.state, read.reason.as_deref()),
        (AgentState::NotReady, Some("COACHING"))
    );
    let before = t.state_calls();
    let err = client
        .set_agent_state(StateChange::new("u_004", AgentState::NotReady, "LUNCH"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("LUNCH"), "{err}");
    assert_eq!(t.state_calls(), before, "refused before any state call");
}

#[tokio::test]
async fn repeated_401s_open_the_breaker_and_calls_pause() {
    let t = tenant(0.0).await;
    // Every token the platform issues is refused at once.
    t.sim().set_token_validity(Some(Duration::ZERO));
    let client = t.client();
    assert_eq!(
        client.list_skills().await.unwrap_err(),
        CxoneError::Unauthorized,
        "renewed once, refused again"
    );
    let second = client.list_skills().await.unwrap_err();
    assert!(
        matches!(second, CxoneError::CircuitOpen { .. }),
        "{second:?}"
    );
    let before = t.sim().stats();
    let third = client.list_skills().await.unwrap_err();
    assert!(matches!(third, CxoneError::CircuitOpen { .. }), "{third:?}");
    let after = t.sim().stats();
    assert_eq!(
        after.api_requests, before.api_requests,
        "no call while paused"
    );
    assert_eq!(after.token_requests, before.token_requests);
}

#[tokio::test]
async fn schedules_keep_the_titles_of_the_work_intervals_as_activities() {
    let t = tenant(0.0).await;
    let client = t.client();
    // An agent NOT_READY for a meeting or a training has one in its shift now.
    let truth = t
        .sim()
        .agents()
        .into_iter()
        .find(|a| !a.activities.is_empty())
        .expect("the simulator schedules a meeting or a training");
    let schedule = client.schedule(&truth.id).await.unwrap();
    let titled: Vec<(DateTime<Utc>, DateTime<Utc>, &str)> = schedule
        .activities
        .iter()
        .filter(|a| a.title != "Open")
        .map(|a| (a.start, a.end, a.title.as_str()))
        .collect();
    let want: Vec<(DateTime<Utc>, DateTime<Utc>, &str)> = truth
        .activities
        .iter()
        .map(|a| (a.start, a.end, a.title.as_str()))
        .collect();
    assert_eq!(titled, want);
    assert!(["Team meeting", "Training"].contains(&want[0].2));
    // The open work around it is titled too, as the export names it; the breaks stay
    // breaks, never activities.
    let open = schedule.activities.iter().filter(|a| a.title == "Open");
    assert!(open.count() >= 2, "{:?}", schedule.activities);
    let breaks = schedule.breaks.clone().unwrap();
    assert_eq!(breaks.len(), truth.breaks.len());
    assert!(
        schedule
            .activities
            .iter()
            .all(|a| breaks.iter().all(|b| a.end <= b.start || b.end <= a.start))
    );
}

#[test]
fn work_intervals_with_a_title_are_activities_and_untitled_ones_are_not() {
    let shift: wire::ShiftJson = serde_json::from_value(serde_json::json!({
        "start": "2026-11-23T09:00:00Z", "end": "2026-11-23T17:00:00Z",
        "activityIntervals": [
            {"start": "2026-11-23T09:00:00Z", "end": "2026-11-23T10:00:00Z", "work": true,
             "activityCode": {"title": " Team meeting ", "id": 7}},
            {"start": "2026-11-23T10:00:00Z", "end": "2026-11-23T12:00:00Z", "work": true,
             "activityCode": {}},
            {"start": "2026-11-23T12:00:00Z", "end": "2026-11-23T12:30:00Z", "work": false,
             "activityCode": {"title": "Lunch"}},
            {"start": "2026-11-23T12:30:00Z", "end": "2026-11-23T12:30:00Z", "work": true,
             "activityCode": {"title": "Empty"}},
            {"start": "2026-11-23T12:30:00Z", "end": "2026-11-23T17:00:00Z", "work": "true",
             "activityCode": {"title": "Phones"}}
        ]
    }))
    .unwrap();
    let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().to_utc();
    let s = schedule_from(
        &[shift],
        None,
        &["Lunch".into()],
        at("2026-11-23T11:00:00Z"),
    );
    let activities: Vec<_> = s
        .activities
        .iter()
        .map(|a| (a.start, a.end, a.title.as_str()))
        .collect();
    assert_eq!(
        activities,
        [
            (
                at("2026-11-23T09:00:00Z"),
                at("2026-11-23T10:00:00Z"),
                "Team meeting"
            ),
            (
                at("2026-11-23T12:30:00Z"),
                at("2026-11-23T17:00:00Z"),
                "Phones"
            ),
        ]
    );
    let breaks = s.breaks.unwrap();
    assert_eq!(breaks.len(), 1);
    assert_eq!(
        (breaks[0].kind.as_str(), breaks[0].mandatory),
        ("Lunch", true)
    );
}

#[test]
fn between_shifts_the_schedule_is_the_nearer_of_the_last_and_the_next_shift() {
    let shift = |start: &str, end: &str| -> wire::ShiftJson {
        serde_json::from_value(serde_json::json!({"start": start, "end": end})).unwrap()
    };
    let shifts = [
        shift("2026-11-23T09:00:00Z", "2026-11-23T17:00:00Z"),
        shift("2026-11-24T09:00:00Z", "2026-11-24T17:00:00Z"),
    ];
    let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().to_utc();
    let judged = |now: &str| {
        let s = schedule_from(&shifts, None, &[], at(now));
        (s.status, s.shift_start, s.shift_end)
    };
    assert_eq!(
        judged("2026-11-23T12:00:00Z"),
        (
            ScheduleStatus::Active,
            Some(at("2026-11-23T09:00:00Z")),
            Some(at("2026-11-23T17:00:00Z"))
        )
    );
    // Ten minutes after the end: the ended shift (logout after shift end needs it).
    assert_eq!(
        judged("2026-11-23T17:10:00Z"),
        (
            ScheduleStatus::Inactive,
            Some(at("2026-11-23T09:00:00Z")),
            Some(at("2026-11-23T17:00:00Z"))
        )
    );
    // Early next morning: the shift ahead.
    assert_eq!(
        judged("2026-11-24T06:00:00Z").1,
        Some(at("2026-11-24T09:00:00Z"))
    );
    // After the last shift there is only the last one.
    assert_eq!(
        judged("2026-11-26T06:00:00Z"),
        (
            ScheduleStatus::Inactive,
            Some(at("2026-11-24T09:00:00Z")),
            Some(at("2026-11-24T17:00:00Z"))
        )
    );
}

/// The shared classification with this dialect's reading of error answers.
fn error_for_status(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CxoneError {
    crate::cxone::core::classify::error_for_status(status, headers, body, error_details)
}

#[test]
fn both_error_shapes_and_the_status_header_become_typed_errors() {
    use reqwest::header::HeaderValue;
    let none = HeaderMap::new();
    let mut described = HeaderMap::new();
    described.insert(
        "icStatusDescription",
        HeaderValue::from_static("Agent session not started"),
    );
    let acd = br#"{"error":"invalid_request","error_description":"Invalid outStateId 99"}"#;
    let newer = br#"{"errorCode":"Forbidden","errorMessage":"the tenant has no WFM access"}"#;

    assert_eq!(
        error_for_status(StatusCode::BAD_REQUEST, &none, acd),
        CxoneError::BadRequest {
            message: "Invalid outStateId 99".into()
        }
    );
    assert_eq!(
        error_for_status(StatusCode::FORBIDDEN, &none, newer),
        CxoneError::Forbidden {
            scope: None,
            message: "the tenant has no WFM access".into()
        }
    );
    // A plain-text body is the message; markup is not.
    assert_eq!(
        error_for_status(
            StatusCode::CONFLICT,
            &none,
            b"Agent is on a contact\r\nref 7"
        ),
        CxoneError::Conflict {
            message: "Agent is on a contact".into()
        }
    );
    assert_eq!(
        error_for_status(
            StatusCode::BAD_REQUEST,
            &none,
            b"<html><body>Bad</body></html>"
        ),
        CxoneError::BadRequest {
            message: String::new()
        }
    );
    // Only the header says what happened: still the logged-out rejection.
    let logged_out = error_for_status(StatusCode::NOT_FOUND, &described, b"");
    assert!(logged_out.is_agent_logged_out(), "{logged_out:?}");
    let mut later = HeaderMap::new();
    later.insert(RETRY_AFTER, HeaderValue::from_static("2"));
    assert_eq!(
        error_for_status(StatusCode::SERVICE_UNAVAILABLE, &later, b"").retry_after(),
        Some(Duration::from_secs(2))
    );
    assert!(error_for_status(StatusCode::TOO_MANY_REQUESTS, &none, b"").is_retryable());
}

#[tokio::test]
async fn listings_follow_links_next_across_pages() {
    let t = tenant(0.0).await;
    t.knobs(IncontactKnobs {
        max_page: 7,
        ..IncontactKnobs::default()
    });
    let client = t.client();
    let agents = client.list_agents(&AgentFilter::default()).await.unwrap();
    let mut ids: Vec<String> = agents.into_iter().map(|a| a.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every agent once");
    let calls = |route: &str| t.sim().stats().by_route.get(route).copied().unwrap_or(0);
    assert_eq!(calls("GET /inContactAPI/services/{version}/agents"), 3);
}

#[tokio::test]
async fn a_redirecting_token_endpoint_fails_and_its_target_never_sees_the_secrets() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let t = tenant(0.0).await;
    let target = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "tok-stolen", "token_type": "bearer", "expires_in": 3600
        })))
        .mount(&target)
        .await;
    let auth = MockServer::start().await;
    Mock::given(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "token_endpoint": format!("{}/auth/token", auth.uri())
        })))
        .mount(&auth)
        .await;
    Mock::given(method("POST"))
        .and(path("/auth/token"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/steal?key=k-123", target.uri())),
        )
        .mount(&auth)
        .await;
    let mut settings = t.settings();
    settings.auth_base = auth.uri();
    settings.base_url = Some(format!("{}/c9", t.running.base_url));
    let client = IncontactClient::new(
        crate::http_client().unwrap(),
        settings,
        Arc::new(Budget::unlimited()),
    );

    let err = client.check_access().await.unwrap_err();
    assert!(
        target.received_requests().await.unwrap().is_empty(),
        "the redirect was followed"
    );
    assert!(
        matches!(err, CxoneError::Redirected { status: 307, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("{}/steal", target.uri()))
            && message.contains("does not follow redirects"),
        "{message}"
    );
    for hidden in [ACCESS_KEY_SECRET, "wfmd-sim-secret", "k-123"] {
        assert!(!message.contains(hidden), "{message}");
    }
}
