//! End-to-end tests of the simulator over real HTTP on 127.0.0.1:0.
//!
//! They pin the contract (paths, field names, status codes) as a client sees it, and the
//! fault injection a client's retry logic will be tested against.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;

mod aggregation;
mod metrics;
mod realtime;

/// A simulator on an ephemeral port, shut down when dropped.
struct Harness {
    running: RunningSim,
    shutdown: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn http_client(timeout: Option<Duration>) -> reqwest::Client {
    // reqwest is built without a default TLS provider; plain HTTP never uses it, but the
    // builder still wants one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder();
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().expect("client")
}

async fn harness(config: SimConfig) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let running = Simulator::start(config, listener, shutdown.clone())
        .await
        .unwrap();
    Harness {
        running,
        shutdown,
        http: http_client(None),
    }
}

async fn default_harness() -> Harness {
    harness(SimConfig::default()).await
}

fn unlimited() -> SimConfig {
    SimConfig {
        requests_per_minute: 0,
        ..SimConfig::default()
    }
}

impl Harness {
    fn sim(&self) -> &Simulator {
        &self.running.sim
    }

    fn root(&self, path: &str) -> String {
        format!("{}{path}", self.running.base_url)
    }

    /// An API URL under the tenant's base (the cluster path when there is one).
    fn api(&self, path: &str) -> String {
        match self.sim().cluster() {
            Some(c) => format!("{}/{c}{path}", self.running.base_url),
            None => self.root(path),
        }
    }

    async fn token_response(&self) -> Value {
        let res = self
            .http
            .post(&self.running.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "wfmd-sim"),
                ("client_secret", "wfmd-sim-secret"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    async fn token(&self) -> String {
        self.token_response().await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn get_with(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.api(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, token: &str, path: &str) -> Value {
        let res = self.get_with(token, path).await;
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        res.json().await.unwrap()
    }

    async fn post_state(&self, token: &str, user: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.api(&format!("/api/v2/users/{user}/state")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

async fn error_body(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    (status, res.json().await.unwrap())
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

/// Polls `check` until it holds or two seconds pass.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------- authentication

#[tokio::test]
async fn token_by_form_is_a_bearer_token_with_the_cluster_base_uri() {
    let h = default_harness().await;
    let body = h.token_response().await;
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["access_token"].as_str().unwrap().len() >= 32);
    assert_eq!(
        body["resource_server_base_uri"],
        format!("{}/c9/", h.running.base_url)
    );
    assert_eq!(
        h.running.token_url,
        format!("{}/oauth2/token", h.running.base_url)
    );
    assert!(h.running.base_url.starts_with("http://127.0.0.1:"));
    // Every token is fresh.
    assert_ne!(h.token().await, h.token().await);
    assert_eq!(h.sim().stats().token_requests, 3);
}

#[tokio::test]
async fn token_by_basic_auth_is_accepted() {
    let h = default_harness().await;
    let res = h
        .http
        .post(&h.running.token_url)
        .basic_auth("wfmd-sim", Some("wfmd-sim-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    h.get_json(token, "/api/v2/users").await;
}

#[tokio::test]
async fn bad_secret_is_401_and_issues_no_token() {
    let h = default_harness().await;
    for res in [
        h.http
            .post(&h.running.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "wfmd-sim"),
                ("client_secret", "guessed"),
            ])
            .send()
            .await
            .unwrap(),
        h.http
            .post(&h.running.token_url)
            .basic_auth("wfmd-sim", Some("guessed"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap(),
        h.http
            .post(&h.running.token_url)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap(),
    ] {
        let (status, body) = error_body(res).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "invalid_client");
        assert!(body.get("access_token").is_none());
        assert!(!body.to_string().contains("wfmd-sim-secret"));
    }
    assert_eq!(h.sim().stats().token_requests, 3);
}

#[tokio::test]
async fn missing_or_unsupported_grant_is_400() {
    let h = default_harness().await;
    let no_grant = h
        .http
        .post(&h.running.token_url)
        .form(&[
            ("client_id", "wfmd-sim"),
            ("client_secret", "wfmd-sim-secret"),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = error_body(no_grant).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");

    let password = h
        .http
        .post(&h.running.token_url)
        .form(&[
            ("grant_type", "password"),
            ("client_id", "wfmd-sim"),
            ("client_secret", "wfmd-sim-secret"),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = error_body(password).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unsupported_grant_type");

    let json_body = h
        .http
        .post(&h.running.token_url)
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn api_without_a_valid_token_is_401_json() {
    let h = default_harness().await;
    let none = h.http.get(h.api("/api/v2/users")).send().await.unwrap();
    let (status, body) = error_body(none).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");

    let made_up = h.get_with("not-a-token", "/api/v2/users").await;
    assert_eq!(made_up.status(), StatusCode::UNAUTHORIZED);
    let stats = h.sim().stats();
    assert_eq!((stats.api_requests, stats.unauthorized), (2, 2));
}

#[tokio::test]
async fn revoked_tokens_are_401_and_new_ones_work() {
    let h = default_harness().await;
    let old = h.token().await;
    h.get_json(&old, "/api/v2/users").await;
    h.sim().revoke_tokens();
    let res = h.get_with(&old, "/api/v2/users").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let fresh = h.token().await;
    h.get_json(&fresh, "/api/v2/users").await;
}

#[tokio::test]
async fn early_expiry_cuts_tokens_short_while_advertising_the_lifetime() {
    let h = default_harness().await;
    let long_lived = h.token().await;
    h.sim().set_token_validity(Some(Duration::from_secs(60)));
    let body = h.token_response().await;
    assert_eq!(body["expires_in"], 3600, "still advertises the lifetime");
    let short_lived = body["access_token"].as_str().unwrap().to_owned();
    h.get_json(&short_lived, "/api/v2/users").await;

    h.sim().clock().advance(Duration::from_secs(61));
    let res = h.get_with(&short_lived, "/api/v2/users").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Issued before the change: keeps its full hour.
    h.get_json(&long_lived, "/api/v2/users").await;

    // Tokens also die at the end of their advertised lifetime.
    h.sim().set_token_validity(None);
    let hour = h.token().await;
    h.sim().clock().advance(Duration::from_secs(3600));
    assert_eq!(
        h.get_with(&hour, "/api/v2/users").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn root_api_path_is_401_when_the_tenant_lives_on_a_cluster() {
    let h = default_harness().await;
    let token = h.token().await;
    let wrong = h
        .http
        .get(h.root("/api/v2/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, body) = error_body(wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["message"].as_str().unwrap().contains("/c9/"));
    let state = h
        .http
        .post(h.root("/api/v2/users/u_004/state"))
        .bearer_auth(&token)
        .json(&json!({"state": "READY"}))
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.sim().agent("u_004").unwrap().state_log.len(), 1);

    let right = h.get_json(&token, "/api/v2/users").await;
    assert_eq!(right["users"].as_array().unwrap().len(), 50);
}

#[tokio::test]
async fn without_a_cluster_path_the_api_is_at_the_root_and_no_base_uri_is_given() {
    let h = harness(SimConfig {
        cluster_path: None,
        ..SimConfig::default()
    })
    .await;
    let body = h.token_response().await;
    assert!(body.get("resource_server_base_uri").is_none());
    let token = body["access_token"].as_str().unwrap();
    let res = h
        .http
        .get(h.root("/api/v2/users"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let stats = h.sim().stats();
    assert_eq!(stats.by_route.get("GET /api/v2/users"), Some(&1));
}

#[tokio::test]
async fn unknown_api_paths_need_a_token_then_answer_404_json() {
    let h = default_harness().await;
    let res = h.http.get(h.api("/api/v2/nope")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let token = h.token().await;
    let (status, body) = error_body(h.get_with(&token, "/api/v2/nope").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    let elsewhere = h.http.get(h.root("/nothing")).send().await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------- users and state

#[tokio::test]
async fn users_are_listed_with_contract_fields_and_filtered() {
    let h = default_harness().await;
    let token = h.token().await;
    let all = h.get_json(&token, "/api/v2/users").await;
    let users = all["users"].as_array().unwrap();
    assert_eq!(users.len(), 50);
    let first = &users[0];
    let truth = h.sim().agent("u_001").unwrap();
    assert_eq!(first["userId"], "u_001");
    assert_eq!(first["userName"], truth.name);
    assert_eq!(first["teamId"], truth.team_id);
    assert_eq!(first["teamName"], truth.team_name);
    assert_eq!(first["skills"], json!(truth.skills));

    let team = h.get_json(&token, "/api/v2/users?teamId=t_2").await;
    let team = team["users"].as_array().unwrap();
    let expected = h
        .sim()
        .agents()
        .iter()
        .filter(|a| a.team_id == "t_2")
        .count();
    assert_eq!(team.len(), expected);
    assert!(!team.is_empty() && team.iter().all(|u| u["teamId"] == "t_2"));

    let skill = h.get_json(&token, "/api/v2/users?skillId=s_100").await;
    let skill = skill["users"].as_array().unwrap();
    assert!(!skill.is_empty());
    assert!(
        skill
            .iter()
            .all(|u| u["skills"].as_array().unwrap().contains(&json!("s_100")))
    );

    let both = h
        .get_json(&token, "/api/v2/users?teamId=t_2&skillId=s_100")
        .await;
    let both = both["users"].as_array().unwrap();
    assert!(both.len() <= team.len().min(skill.len()));
    let none = h.get_json(&token, "/api/v2/users?teamId=t_99").await;
    assert_eq!(none["users"], json!([]));
}

#[tokio::test]
async fn state_get_shows_ground_truth() {
    let h = default_harness().await;
    let token = h.token().await;
    let body = h.get_json(&token, "/api/v2/users/u_004/state").await;
    let truth = h.sim().agent("u_004").unwrap();
    assert_eq!(body["userId"], "u_004");
    assert_eq!(body["agentState"], truth.state);
    assert_eq!(body["reasonCode"], truth.reason);
    assert_eq!(time(&body["statusChangedTimestamp"]), truth.changed_at);
    let (status, body) = error_body(h.get_with(&token, "/api/v2/users/u_999/state").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "not_found", "message": "unknown user u_999"})
    );
}

#[tokio::test]
async fn state_post_refuses_observed_only_unknown_and_malformed_states() {
    let h = default_harness().await;
    let token = h.token().await;
    for body in [
        json!({"state": "ON_CONTACT"}),
        json!({"state": "ACW"}),
        json!({"state": "LUNCH"}),
        json!({"reasonCode": "BREAK"}),
        json!("READY"),
    ] {
        let (status, err) = error_body(h.post_state(&token, "u_004", body.clone()).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(err["error"], "bad_request");
        assert!(!err["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(h.sim().agent("u_004").unwrap().state_log.len(), 1);
}

#[tokio::test]
async fn state_post_to_an_unknown_user_is_404() {
    let h = default_harness().await;
    let token = h.token().await;
    let (status, body) = error_body(
        h.post_state(&token, "u_999", json!({"state": "READY"}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "not_found", "message": "unknown user u_999"})
    );
}

#[tokio::test]
async fn state_post_conflicts_while_the_agent_is_on_a_contact() {
    let h = default_harness().await;
    let token = h.token().await;
    let on_contact = h.sim().agent("u_003").unwrap();
    assert_eq!(on_contact.state, "ON_CONTACT");
    let (status, body) = error_body(
        h.post_state(&token, "u_003", json!({"state": "NOT_READY"}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "conflict");
    assert_eq!(h.sim().agent("u_003").unwrap().state, "ON_CONTACT");

    // Once the call ends (the agent's doing), changes go through again.
    assert!(h.sim().force_state("u_003", "ACW", ""));
    let res = h
        .post_state(&token, "u_003", json!({"state": "READY"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn state_post_sets_default_reason_stamps_the_clock_and_logs_ground_truth() {
    let h = default_harness().await;
    let token = h.token().await;
    let before = h.sim().clock().now();
    let res = h
        .post_state(&token, "u_004", json!({"state": "NOT_READY"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["userId"], "u_004");
    assert_eq!(body["agentState"], "NOT_READY");
    assert_eq!(body["reasonCode"], "BREAK");
    let stamped = time(&body["statusChangedTimestamp"]);
    assert!(stamped >= before && stamped <= h.sim().clock().now());

    let res = h
        .post_state(
            &token,
            "u_004",
            json!({"state": "READY", "reasonCode": "BACK"}),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["reasonCode"], "BACK");

    let truth = h.sim().agent("u_004").unwrap();
    assert_eq!(
        (truth.state.as_str(), truth.reason.as_str()),
        ("READY", "BACK")
    );
    let log: Vec<(&str, &str)> = truth
        .state_log
        .iter()
        .map(|c| (c.state.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(log[1..], [("NOT_READY", "BREAK"), ("READY", "BACK")]);
    assert_eq!(truth.state_log[1].at, stamped);
    // GET answers what POST answered.
    let got = h.get_json(&token, "/api/v2/users/u_004/state").await;
    assert_eq!(got, body);

    for (state, reason) in [
        ("PAUSED", "ADHOC"),
        ("IDLE", "SYSTEM_IDLE"),
        ("LOGGED_OUT", "GENERAL"),
    ] {
        let res = h.post_state(&token, "u_004", json!({"state": state})).await;
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["reasonCode"], reason, "{state}");
    }
}

#[tokio::test]
async fn the_simulator_does_not_enforce_compliance() {
    let h = default_harness().await;
    let token = h.token().await;
    // u_001 is off shift and u_002 is in a mandatory break: the platform lets both go
    // READY; refusing is wfmd's job.
    for user in ["u_001", "u_002"] {
        let res = h.post_state(&token, user, json!({"state": "READY"})).await;
        assert_eq!(res.status(), StatusCode::OK, "{user}");
    }
}

#[tokio::test]
async fn force_state_acts_like_the_agent_and_rejects_unknowns() {
    let h = default_harness().await;
    assert!(h.sim().force_state("u_004", "ON_CONTACT", ""));
    let truth = h.sim().agent("u_004").unwrap();
    assert_eq!(
        (truth.state.as_str(), truth.reason.as_str()),
        ("ON_CONTACT", "GENERAL")
    );
    assert_eq!(truth.state_log.len(), 2);
    assert!(!h.sim().force_state("u_999", "READY", ""));
    assert!(!h.sim().force_state("u_004", "LUNCH", ""));
    let token = h.token().await;
    let res = h
        .post_state(&token, "u_004", json!({"state": "READY"}))
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
}

// ---------------------------------------------------------------- schedules and breaks

#[tokio::test]
async fn schedule_status_is_computed_from_the_clock() {
    let h = default_harness().await;
    let token = h.token().await;
    let off = h.sim().agent("u_001").unwrap();
    let body = h.get_json(&token, "/api/v2/schedules/users/u_001").await;
    assert_eq!(body["userId"], "u_001");
    assert_eq!(body["status"], "INACTIVE");
    assert_eq!(body["timezone"], off.timezone);
    assert_eq!(time(&body["shiftStart"]), off.shift_start);
    assert_eq!(time(&body["shiftEnd"]), off.shift_end);

    let until_start = (off.shift_start - h.sim().clock().now()).to_std().unwrap();
    h.sim().clock().advance(until_start);
    // Hours may pass: tokens expire on the simulated clock too.
    let token = h.token().await;
    let body = h.get_json(&token, "/api/v2/schedules/users/u_001").await;
    assert_eq!(body["status"], "ACTIVE");

    let until_end = (off.shift_end - h.sim().clock().now()).to_std().unwrap();
    h.sim().clock().advance(until_end);
    let token = h.token().await;
    let body = h.get_json(&token, "/api/v2/schedules/users/u_001").await;
    assert_eq!(body["status"], "INACTIVE");
}

#[tokio::test]
async fn agents_in_a_meeting_or_training_have_it_in_their_shift_which_the_v2_schedule_cannot_say() {
    // Still: nobody changes state on their own.
    let h = harness(SimConfig {
        time_scale: 0.0,
        ..SimConfig::default()
    })
    .await;
    let token = h.token().await;
    let now = h.sim().clock().now();
    let agents = h.sim().agents();
    let titled: Vec<&SimAgent> = agents.iter().filter(|a| !a.activities.is_empty()).collect();
    assert!(!titled.is_empty());
    for agent in &titled {
        let title = match agent.reason.as_str() {
            "MEETING" => "Team meeting",
            "TRAINING" => "Training",
            other => panic!("{}: {other} in {:?}", agent.id, agent.activities),
        };
        let activity = &agent.activities[0];
        assert_eq!(activity.title, title);
        assert!(agent.state == "NOT_READY" && activity.start <= now && now < activity.end);
        assert!(agent.on_shift_at(activity.start) && agent.on_shift_at(activity.end));
        assert!(
            agent
                .breaks
                .iter()
                .all(|b| b.end <= activity.start || activity.end <= b.start)
        );
        // The v2 schedule has breaks and nothing else to name work by.
        let body = h
            .get_json(&token, &format!("/api/v2/schedules/users/{}", agent.id))
            .await;
        assert!(!body.to_string().contains(title), "{body}");
    }
    assert!(
        agents
            .iter()
            .filter(|a| a.state == "NOT_READY"
                && a.on_shift_at(now)
                && !a.in_mandatory_break_at(now))
            .all(|a| !a.activities.is_empty()),
        "every agent in a meeting or a training at work has it scheduled"
    );
}

#[tokio::test]
async fn schedule_lists_breaks_for_most_agents_and_omits_them_for_some() {
    let h = default_harness().await;
    let token = h.token().await;
    let working = h.sim().agent("u_004").unwrap();
    assert!(working.breaks_in_schedule);
    let body = h.get_json(&token, "/api/v2/schedules/users/u_004").await;
    assert_eq!(body["status"], "ACTIVE");
    let breaks = body["breaks"].as_array().unwrap();
    assert_eq!(breaks.len(), working.breaks.len());
    for (wire, truth) in breaks.iter().zip(&working.breaks) {
        assert_eq!(time(&wire["start"]), truth.start);
        assert_eq!(time(&wire["end"]), truth.end);
        assert_eq!(wire["type"], truth.kind);
        assert_eq!(wire["mandatory"], truth.mandatory);
    }

    let omitted: Vec<SimAgent> = h
        .sim()
        .agents()
        .into_iter()
        .filter(|a| !a.breaks_in_schedule)
        .collect();
    assert!(
        (8..=18).contains(&omitted.len()),
        "about a quarter: {}",
        omitted.len()
    );
    for agent in &omitted {
        let body = h
            .get_json(&token, &format!("/api/v2/schedules/users/{}", agent.id))
            .await;
        assert!(body.get("breaks").is_none(), "{}: {body}", agent.id);
        assert!(body.get("status").is_some());
    }
    let (status, _) = error_body(h.get_with(&token, "/api/v2/schedules/users/u_999").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn break_status_is_computed_from_the_clock() {
    let h = default_harness().await;
    let token = h.token().await;

    // u_002 is inside a mandatory break, and its schedule hides the breaks.
    let in_break = h.sim().agent("u_002").unwrap();
    assert!(!in_break.breaks_in_schedule);
    let body = h
        .get_json(&token, "/api/v2/breaks/users/u_002/status")
        .await;
    assert_eq!(body["userId"], "u_002");
    assert_eq!(body["mandatoryBreakRequired"], true);
    let now = h.sim().clock().now();
    let start = time(&body["breakStart"]);
    let end = time(&body["breakEnd"]);
    assert!(start <= now && now < end);
    assert_eq!(end - start, TimeDelta::minutes(60));

    // A working agent: nothing required now, lunch announced, then required during it.
    let body = h
        .get_json(&token, "/api/v2/breaks/users/u_004/status")
        .await;
    assert_eq!(body["mandatoryBreakRequired"], false);
    let lunch_start = time(&body["breakStart"]);
    let lunch = h.sim().agent("u_004").unwrap().breaks[0].clone();
    assert!(lunch.mandatory);
    assert_eq!(lunch_start, lunch.start);
    h.sim()
        .clock()
        .advance((lunch.start - h.sim().clock().now()).to_std().unwrap());
    let token = h.token().await;
    let body = h
        .get_json(&token, "/api/v2/breaks/users/u_004/status")
        .await;
    assert_eq!(body["mandatoryBreakRequired"], true);

    // After the last mandatory break there is nothing to announce.
    h.sim()
        .clock()
        .advance((lunch.end - h.sim().clock().now()).to_std().unwrap());
    let token = h.token().await;
    let body = h
        .get_json(&token, "/api/v2/breaks/users/u_004/status")
        .await;
    assert_eq!(body["mandatoryBreakRequired"], false);
    assert!(body.get("breakStart").is_none() && body.get("breakEnd").is_none());

    let (status, _) = error_body(
        h.get_with(&token, "/api/v2/breaks/users/u_999/status")
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_kind_is_visible_through_the_api_at_ten_agents() {
    let h = harness(SimConfig {
        agents: 10,
        seed: 77,
        ..SimConfig::default()
    })
    .await;
    let token = h.token().await;
    let users = h.get_json(&token, "/api/v2/users").await;
    let ids: Vec<String> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 10);
    let mut off_shift = 0;
    let mut in_break = 0;
    let mut on_contact = 0;
    let mut working = std::collections::BTreeSet::new();
    let mut hidden_breaks = 0;
    for id in &ids {
        let sched = h
            .get_json(&token, &format!("/api/v2/schedules/users/{id}"))
            .await;
        let brk = h
            .get_json(&token, &format!("/api/v2/breaks/users/{id}/status"))
            .await;
        let state = h
            .get_json(&token, &format!("/api/v2/users/{id}/state"))
            .await;
        let state = state["agentState"].as_str().unwrap().to_owned();
        hidden_breaks += usize::from(sched.get("breaks").is_none());
        if sched["status"] == "INACTIVE" {
            assert_eq!(state, "LOGGED_OUT");
            off_shift += 1;
        } else if brk["mandatoryBreakRequired"] == true {
            assert_eq!(state, "NOT_READY");
            in_break += 1;
        } else if state == "ON_CONTACT" {
            on_contact += 1;
        } else {
            working.insert(state);
        }
    }
    assert_eq!((off_shift, in_break, on_contact), (1, 1, 1));
    let expected: std::collections::BTreeSet<String> = ["IDLE", "NOT_READY", "PAUSED", "READY"]
        .map(String::from)
        .into();
    assert_eq!(working, expected);
    assert!((2..=4).contains(&hidden_breaks));
}

#[tokio::test]
async fn same_seed_gives_the_same_tenant_and_another_seed_a_different_one() {
    let shape = |sim: &Simulator| -> Vec<String> {
        sim.agents()
            .into_iter()
            .map(|a| {
                let skills = a.skills.join(",");
                format!(
                    "{} {} {} {skills} {} {}",
                    a.id, a.name, a.team_name, a.timezone, a.state
                )
            })
            .collect()
    };
    let cfg = |seed| SimConfig {
        seed,
        ..SimConfig::default()
    };
    let a = Simulator::new(cfg(11));
    let b = Simulator::new(cfg(11));
    let c = Simulator::new(cfg(12));
    assert_eq!(shape(&a), shape(&b));
    assert_ne!(shape(&a), shape(&c));
    assert_eq!(a.agents().len(), 50);
    assert!(a.agents().windows(2).all(|w| w[0].id < w[1].id));
}

// ---------------------------------------------------------------- rate limit and faults

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let h = harness(SimConfig {
        requests_per_minute: 60,
        ..SimConfig::default()
    })
    .await;
    let token = h.token().await;
    // Burst of max(1, 60 / 30) = 2.
    h.get_json(&token, "/api/v2/users").await;
    h.get_json(&token, "/api/v2/users").await;
    let res = h.get_with(&token, "/api/v2/users").await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let (status, body) = error_body(res).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "rate_limited");
    // Token calls are outside the budget.
    h.token().await;
    let stats = h.sim().stats();
    assert_eq!((stats.api_requests, stats.rate_limited), (3, 1));
}

#[tokio::test]
async fn unauthenticated_calls_do_not_spend_the_budget() {
    let h = harness(SimConfig {
        requests_per_minute: 30, // burst 1
        ..SimConfig::default()
    })
    .await;
    for _ in 0..3 {
        let res = h.get_with("bogus", "/api/v2/users").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let token = h.token().await;
    h.get_json(&token, "/api/v2/users").await;
}

const LIST_USERS: &str = "GET /api/v2/users";
const LIST_SKILLS: &str = "GET /api/v2/skills";

#[tokio::test]
async fn fail_next_on_answers_the_scripted_status_then_recovers() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    h.sim().fail_next_on(LIST_USERS, 2, 503, Some(7));
    h.sim().fail_next_on(LIST_USERS, 1, 429, None);
    for _ in 0..2 {
        let res = h.get_with(&token, "/api/v2/users").await;
        assert_eq!(res.headers()["retry-after"], "7");
        let (status, body) = error_body(res).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "service_unavailable");
    }
    let res = h.get_with(&token, "/api/v2/users").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("retry-after").is_none());
    h.get_json(&token, "/api/v2/users").await;
    let stats = h.sim().stats();
    assert_eq!((stats.injected_faults, stats.rate_limited), (3, 0));
}

#[tokio::test]
async fn a_scripted_fault_is_met_only_by_a_call_to_its_route() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    h.sim().fail_next_on(LIST_SKILLS, 1, 503, None);
    h.sim().fail_next_on(LIST_USERS, 1, 429, None);
    h.sim().fail_next_on(LIST_SKILLS, 1, 500, None);
    // Other routes pass, however many calls come first, and leave the faults queued.
    for _ in 0..3 {
        h.get_json(&token, "/api/v2/queues").await;
    }
    assert_eq!(h.sim().scripted_pending(), 3);
    // Each route meets its own entries, in the order scripted for it.
    let res = h.get_with(&token, "/api/v2/skills").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let res = h.get_with(&token, "/api/v2/users").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    h.get_json(&token, "/api/v2/users").await;
    let res = h.get_with(&token, "/api/v2/skills").await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    h.get_json(&token, "/api/v2/skills").await;
    assert_eq!(h.sim().stats().injected_faults, 3);
}

#[tokio::test]
async fn a_route_key_names_the_template_not_the_path_called() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    h.sim()
        .fail_next_on("GET /api/v2/users/{userId}/state", 1, 503, None);
    let res = h.get_with(&token, "/api/v2/users/u_002/state").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    h.get_json(&token, "/api/v2/users/u_002/state").await;
}

#[test]
#[should_panic(expected = "is not a route key")]
fn a_fault_for_a_bare_path_is_refused_rather_than_never_met() {
    Simulator::new(unlimited()).fail_next_on("/api/v2/users", 1, 503, None);
}

#[test]
#[should_panic(expected = "is not a route key")]
fn a_hang_for_a_path_with_a_query_is_refused_rather_than_never_met() {
    Simulator::new(unlimited()).hang_next_on("GET /api/v2/users?top=1", 1);
}

#[tokio::test]
async fn scripted_faults_come_after_auth() {
    let h = harness(unlimited()).await;
    h.sim().fail_next_on(LIST_USERS, 1, 500, None);
    let res = h.get_with("bogus", "/api/v2/users").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let token = h.token().await;
    let res = h.get_with(&token, "/api/v2/users").await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn hang_next_on_holds_calls_to_its_route_until_the_client_times_out() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    h.sim().hang_next_on(LIST_USERS, 1);
    let impatient = http_client(Some(Duration::from_millis(150)));
    // Another route is answered while the hang waits for its own.
    let res = impatient
        .get(h.api("/api/v2/skills"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let err = impatient
        .get(h.api("/api/v2/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let res = impatient
        .get(h.api("/api/v2/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(h.sim().stats().injected_faults, 1);
}

#[tokio::test]
async fn a_held_call_waits_for_its_release_then_is_served_as_usual() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let hold = h.sim().hold_next_on(LIST_USERS);
    let call = tokio::spawn({
        let (http, url, token) = (h.http.clone(), h.api("/api/v2/users"), token.clone());
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    });
    tokio::time::timeout(Duration::from_secs(10), hold.arrived())
        .await
        .expect("the call reaches the simulator");
    // Held, while other routes are answered.
    h.get_json(&token, "/api/v2/skills").await;
    assert!(!call.is_finished());
    hold.release();
    let res = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("released")
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Only the next call was held.
    h.get_json(&token, "/api/v2/users").await;
    assert_eq!(h.sim().stats().injected_faults, 0);
}

#[tokio::test]
async fn a_held_call_is_answered_503_when_the_simulator_shuts_down() {
    let mut h = harness(unlimited()).await;
    let token = h.token().await;
    let hold = h.sim().hold_next_on(LIST_USERS);
    let call = tokio::spawn({
        let (http, url) = (h.http.clone(), h.api("/api/v2/users"));
        async move { http.get(url).bearer_auth(token).send().await }
    });
    tokio::time::timeout(Duration::from_secs(10), hold.arrived())
        .await
        .expect("the call reaches the simulator");
    h.shutdown.cancel();
    let res = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("let go at shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::timeout(Duration::from_secs(5), &mut h.running.task)
        .await
        .expect("server task ends")
        .unwrap();
    drop(hold);
}

#[tokio::test]
async fn hanging_calls_are_released_when_the_simulator_shuts_down() {
    let mut h = harness(unlimited()).await;
    let token = h.token().await;
    h.sim().hang_next_on(LIST_USERS, 1);
    let call = tokio::spawn({
        let http = h.http.clone();
        let url = h.api("/api/v2/users");
        async move { http.get(url).bearer_auth(token).send().await }
    });
    let sim = h.sim().clone();
    eventually("the hanging call to arrive", || {
        sim.stats().injected_faults == 1
    })
    .await;
    h.shutdown.cancel();
    let res = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("released")
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::timeout(Duration::from_secs(5), &mut h.running.task)
        .await
        .expect("server task ends")
        .unwrap();
}

#[tokio::test]
async fn random_faults_follow_the_configured_ratios() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    h.sim().set_faults(Faults {
        error_ratio: 1.0,
        ..Faults::default()
    });
    let res = h.get_with(&token, "/api/v2/users").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    h.sim().set_faults(Faults {
        error_ratio: 0.5,
        ..Faults::default()
    });
    let mut failed = 0;
    for _ in 0..100 {
        let res = h.get_with(&token, "/api/v2/users/u_004/state").await;
        failed += usize::from(res.status() == StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!((25..=75).contains(&failed), "{failed} of 100 failed");

    h.sim().set_faults(Faults {
        timeout_ratio: 1.0,
        ..Faults::default()
    });
    let impatient = http_client(Some(Duration::from_millis(150)));
    let err = impatient
        .get(h.api("/api/v2/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());

    h.sim().set_faults(Faults::default());
    h.get_json(&token, "/api/v2/users").await;
    assert_eq!(h.sim().stats().injected_faults, 1 + failed as u64 + 1);
}

#[tokio::test]
async fn latency_delays_every_api_call() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    h.sim().set_faults(Faults {
        latency: Duration::from_millis(80),
        ..Faults::default()
    });
    let started = Instant::now();
    h.get_json(&token, "/api/v2/users").await;
    assert!(started.elapsed() >= Duration::from_millis(80));
    assert_eq!(h.sim().faults().latency, Duration::from_millis(80));
}

#[tokio::test]
async fn stats_count_every_api_call_per_route() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    h.get_json(&token, "/api/v2/users").await;
    h.get_json(&token, "/api/v2/users?teamId=t_1").await;
    h.get_json(&token, "/api/v2/users/u_004/state").await;
    h.post_state(&token, "u_004", json!({"state": "READY"}))
        .await;
    h.post_state(&token, "u_999", json!({"state": "READY"}))
        .await;
    h.get_json(&token, "/api/v2/schedules/users/u_004").await;
    h.get_json(&token, "/api/v2/breaks/users/u_004/status")
        .await;
    h.get_with("bogus", "/api/v2/breaks/users/u_004/status")
        .await;

    let stats = h.sim().stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.api_requests, 8);
    assert_eq!(stats.unauthorized, 1);
    let expected: BTreeMap<String, u64> = [
        ("GET /api/v2/users", 2),
        ("GET /api/v2/users/{userId}/state", 1),
        ("POST /api/v2/users/{userId}/state", 2),
        ("GET /api/v2/schedules/users/{userId}", 1),
        ("GET /api/v2/breaks/users/{userId}/status", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(stats.by_route, expected);

    h.sim().reset_stats();
    assert_eq!(h.sim().stats(), SimStats::default());
}

// ---------------------------------------------------------------- control endpoints

#[tokio::test]
async fn control_endpoints_expose_ground_truth_and_stats_without_counting() {
    let h = default_harness().await;
    let token = h.token().await;
    h.get_json(&token, "/api/v2/users").await;

    let agents: Value = h
        .http
        .get(h.root("/_sim/agents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agents = agents.as_array().unwrap();
    assert_eq!(agents.len(), 50);
    assert_eq!(agents[0]["id"], "u_001");
    assert_eq!(agents[1]["breaks_in_schedule"], false);
    assert_eq!(agents[1]["state_log"].as_array().unwrap().len(), 1);
    assert!(agents[3]["breaks"][0]["mandatory"].is_boolean());

    let stats: Value = h
        .http
        .get(h.root("/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["api_requests"], 1);
    assert_eq!(stats["token_requests"], 1);
    assert_eq!(stats["by_route"]["GET /api/v2/users"], 1);

    let res = h
        .http
        .post(h.root("/_sim/reset-stats"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(h.sim().stats(), SimStats::default());
}

#[tokio::test]
async fn control_faults_endpoint_steers_the_simulator() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let faults = h.root("/_sim/faults");

    let res = h
        .http
        .post(&faults)
        .json(&json!({"fail_next": {"route": LIST_USERS, "count": 1, "status": 503, "retry_after": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = h.get_with(&token, "/api/v2/users").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "3");
    h.get_json(&token, "/api/v2/users").await;

    h.http
        .post(&faults)
        .json(&json!({"hang_next": {"route": LIST_USERS, "count": 1}}))
        .send()
        .await
        .unwrap();
    let impatient = http_client(Some(Duration::from_millis(150)));
    let err = impatient
        .get(h.api("/api/v2/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());

    let answer: Value = h
        .http
        .post(&faults)
        .json(&json!({"error_ratio": 1.0, "latency_ms": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["error_ratio"], 1.0);
    assert_eq!(answer["latency_ms"], 5);
    assert_eq!(h.sim().faults().latency, Duration::from_millis(5));
    let res = h.get_with(&token, "/api/v2/users").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Absent fields keep their value.
    h.http
        .post(&faults)
        .json(&json!({"error_ratio": 0.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(h.sim().faults().latency, Duration::from_millis(5));
    h.get_json(&token, "/api/v2/users").await;

    h.http
        .post(&faults)
        .json(&json!({"revoke_tokens": true}))
        .send()
        .await
        .unwrap();
    let res = h.get_with(&token, "/api/v2/users").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    for bad in [
        json!({"error_ratio": 2.0}),
        json!({"fail_next": {"route": LIST_USERS, "count": 1, "status": 200}}),
        json!({"fail_next": {"count": 1, "status": 503}}),
        json!({"fail_next": {"route": "/api/v2/users", "count": 1, "status": 503}}),
        json!({"hang_next": 1}),
        json!({"hang_next": {"route": "users", "count": 1}}),
        json!({"typo": 1}),
    ] {
        let res = h.http.post(&faults).json(&bad).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // None of the control calls counted as API calls.
    assert_eq!(h.sim().stats().api_requests, 6);
}

#[test]
fn config_debug_never_shows_the_secret() {
    let config = SimConfig::default();
    let printed = format!("{config:?}");
    assert!(printed.contains("wfmd-sim"));
    assert!(!printed.contains("wfmd-sim-secret"));
    let sim = Simulator::new(config);
    assert!(!format!("{sim:?}").contains("wfmd-sim-secret"));
}
