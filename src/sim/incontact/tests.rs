//! The `incontact` dialect of the simulator over real HTTP: the contract's paths, fields
//! and statuses as a client sees them, and each knob.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::sim::{RunningSim, SimConfig};

const TEAMS: &str = "GET /inContactAPI/services/{version}/teams";

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

async fn harness(config: SimConfig) -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let running = Simulator::start(config, listener, shutdown.clone())
        .await
        .unwrap();
    Harness {
        running,
        shutdown,
        http: reqwest::Client::new(),
    }
}

fn still() -> SimConfig {
    SimConfig {
        agents: 20,
        requests_per_minute: 0,
        time_scale: 0.0,
        ..SimConfig::default()
    }
}

impl Harness {
    fn sim(&self) -> &Simulator {
        &self.running.sim
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.unwrap()
    }

    async fn token_with(&self, key: &str, secret: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/auth/token", self.running.base_url))
            .basic_auth("wfmd-sim", Some("wfmd-sim-secret"))
            .form(&[
                ("grant_type", "password"),
                ("username", key),
                ("password", secret),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Discovery all the way: the token and the API base.
    async fn login(&self) -> (String, String) {
        let answer: Value = self
            .token_with(ACCESS_KEY_ID, ACCESS_KEY_SECRET)
            .await
            .json()
            .await
            .unwrap();
        let token = answer["access_token"].as_str().unwrap().to_owned();
        let claims = answer["id_token"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        let tenant = claims["tenantId"].as_str().unwrap();
        let config: Value = self
            .get(&format!(
                "{}/.well-known/cxone-configuration?tenantId={tenant}",
                self.running.base_url
            ))
            .await
            .json()
            .await
            .unwrap();
        let base = format!(
            "{}/inContactAPI/services/v34.0",
            config["api_endpoint"].as_str().unwrap()
        );
        (token, base)
    }

    async fn call(&self, method: reqwest::Method, token: &str, url: &str) -> reqwest::Response {
        self.http
            .request(method, url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[tokio::test]
async fn discovery_leads_from_the_access_key_to_the_api_host() {
    let h = harness(still()).await;
    let openid: Value = h
        .get(&format!(
            "{}/.well-known/openid-configuration",
            h.running.base_url
        ))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        openid["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/auth/token")
    );
    let (token, base) = h.login().await;
    assert!(base.contains("/c9/inContactAPI/"), "{base}");
    let agents = h
        .call(reqwest::Method::GET, &token, &format!("{base}/agents"))
        .await;
    assert_eq!(agents.status(), StatusCode::OK);
    // The API at the root (discovery ignored) refuses the same token.
    let root = format!("{}/inContactAPI/services/v34.0/agents", h.running.base_url);
    assert_eq!(
        h.call(reqwest::Method::GET, &token, &root).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let unknown = h
        .get(&format!(
            "{}/.well-known/cxone-configuration?tenantId=nope",
            h.running.base_url
        ))
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_version_segment_the_platform_does_not_serve_is_its_404_on_every_route() {
    let h = harness(still()).await;
    let (token, base) = h.login().await;
    let api = base.trim_end_matches("/v34.0");
    let state = |agent: SimAgent| (agent.state, agent.reason);
    let before = state(h.sim().agent("u_004").unwrap());
    for (method, path) in [
        (reqwest::Method::GET, "/agents"),
        (reqwest::Method::GET, "/teams/t_1/agents"),
        (
            reqwest::Method::POST,
            "/agents/u_004/state?state=Unavailable&outStateId=2",
        ),
        (reqwest::Method::POST, "/schedules/export"),
    ] {
        for version in ["v34", "34.0", "v.0", "vX.0"] {
            let url = format!("{api}/{version}{path}");
            let res = h.call(method.clone(), &token, &url).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{url}");
            assert_eq!(
                res.headers()["icStatusDescription"],
                format!("no API version {version}").as_str(),
                "{url}"
            );
        }
    }
    let older = h
        .call(reqwest::Method::GET, &token, &format!("{api}/v2.0/agents"))
        .await;
    assert_eq!(older.status(), StatusCode::OK);
    assert_eq!(
        state(h.sim().agent("u_004").unwrap()),
        before,
        "nothing changed"
    );
}

#[tokio::test]
async fn a_wrong_access_key_answers_the_configured_failure_status() {
    let h = harness(still()).await;
    for status in [401u16, 400] {
        h.sim().set_incontact_knobs(IncontactKnobs {
            token_failure_status: status,
            ..IncontactKnobs::default()
        });
        let res = h.token_with(ACCESS_KEY_ID, "wrong").await;
        assert_eq!(res.status().as_u16(), status);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
    }
}

#[tokio::test]
async fn agents_page_by_top_and_skip_and_an_empty_page_is_204() {
    let h = harness(still()).await;
    let (token, base) = h.login().await;
    let first: Value = h
        .call(
            reqwest::Method::GET,
            &token,
            &format!("{base}/agents?top=8"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["totalRecords"], 20);
    assert_eq!(first["agents"].as_array().unwrap().len(), 8);
    let next = first["_links"]["next"].as_str().unwrap();
    assert!(next.contains("skip=8"), "{next}");
    let empty = h
        .call(
            reqwest::Method::GET,
            &token,
            &format!("{base}/agents?skip=20"),
        )
        .await;
    assert_eq!(empty.status(), StatusCode::NO_CONTENT);
    let agent = &first["agents"][0];
    assert_eq!(
        agent["userID"].as_str().unwrap(),
        Simulator::wfm_user_id(agent["agentId"].as_str().unwrap())
    );
}

#[tokio::test]
async fn unavailable_codes_come_in_either_casing() {
    let h = harness(still()).await;
    let (token, base) = h.login().await;
    let url = format!("{base}/teams/t_2/unavailable-codes?activeOnly=true");
    let v34: Value = h
        .call(reqwest::Method::GET, &token, &url)
        .await
        .json()
        .await
        .unwrap();
    let code = &v34["unavailableCodes"][0];
    assert_eq!(code["outstateId"], 1);
    assert_eq!(code["outstateName"], "Break");
    let names: Vec<&str> = v34["unavailableCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outstateName"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"Training") && !names.contains(&"Old Break"));

    h.sim().set_incontact_knobs(IncontactKnobs {
        legacy_casing: true,
        ..IncontactKnobs::default()
    });
    let old: Value = h
        .call(reqwest::Method::GET, &token, &url)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["unavailableCodes"][0]["outStateId"], "1");
    assert_eq!(old["unavailableCodes"][0]["isActive"], "True");
}

#[tokio::test]
async fn state_changes_answer_200_404_for_a_logged_out_agent_and_409_on_a_contact() {
    let h = harness(still()).await;
    let (token, base) = h.login().await;
    let post = |agent: &str, query: &str| format!("{base}/agents/{agent}/state?{query}");
    // u_004 is working (index 3), u_001 logged out (index 0), u_003 on a contact.
    let ok = h
        .call(
            reqwest::Method::POST,
            &token,
            &post("u_004", "state=Unavailable&outStateId=2"),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let agent = h.sim().agent("u_004").unwrap();
    assert_eq!(
        (agent.state.as_str(), agent.reason.as_str()),
        ("NOT_READY", "LUNCH")
    );

    let out = h
        .call(
            reqwest::Method::POST,
            &token,
            &post("u_001", "state=Available"),
        )
        .await;
    assert_eq!(out.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        out.headers()["icStatusDescription"],
        "Agent session not started"
    );
    let busy = h
        .call(
            reqwest::Method::POST,
            &token,
            &post("u_003", "state=Available"),
        )
        .await;
    assert_eq!(busy.status(), StatusCode::CONFLICT);
    let bad_code = h
        .call(
            reqwest::Method::POST,
            &token,
            &post("u_004", "state=Unavailable&outStateId=99"),
        )
        .await;
    assert_eq!(bad_code.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn logout_is_accepted_and_happens_after_the_delay() {
    let h = harness(still()).await;
    h.sim().set_incontact_knobs(IncontactKnobs {
        logout_delay_ms: 2_000,
        ..IncontactKnobs::default()
    });
    let (token, base) = h.login().await;
    let res = h
        .call(
            reqwest::Method::POST,
            &token,
            &format!("{base}/agents/u_004/logout"),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_ne!(h.sim().agent("u_004").unwrap().state, "LOGGED_OUT");
    h.sim().clock().advance(Duration::from_secs(2));
    let states: Value = h
        .call(
            reqwest::Method::GET,
            &token,
            &format!("{base}/agents/states"),
        )
        .await
        .json()
        .await
        .unwrap();
    let u4 = states["agentStates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["agentId"] == "u_004")
        .unwrap()
        .clone();
    assert_eq!(u4["agentStateName"], "LoggedOut");
}

#[tokio::test]
async fn delta_polls_answer_changes_once_and_unchanged_polls_as_configured() {
    let h = harness(still()).await;
    let (token, base) = h.login().await;
    let states = |since: Option<&str>| {
        let url = match since {
            Some(s) => format!("{base}/agents/states?updatedSince={s}"),
            None => format!("{base}/agents/states"),
        };
        let h = &h;
        let token = token.clone();
        async move { h.call(reqwest::Method::GET, &token, &url).await }
    };
    let full: Value = states(None).await.json().await.unwrap();
    assert_eq!(full["agentStates"].as_array().unwrap().len(), 20);
    let mut cursor = full["lastPollTime"].as_str().unwrap().to_owned();

    h.sim().clock().advance(Duration::from_secs(5));
    assert!(h.sim().force_state("u_004", "IDLE", ""));
    h.sim().clock().advance(Duration::from_secs(5));
    let delta: Value = states(Some(&cursor)).await.json().await.unwrap();
    let changed: Vec<&str> = delta["agentStates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["agentId"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["u_004"]);
    assert_eq!(
        delta["agentStates"][0]["outStateDescription"],
        "System Idle"
    );
    cursor = delta["lastPollTime"].as_str().unwrap().to_owned();

    for (answer, status) in [
        (UnchangedAnswer::EmptyList, StatusCode::OK),
        (UnchangedAnswer::NoContent, StatusCode::NO_CONTENT),
        (UnchangedAnswer::NotModified, StatusCode::NOT_MODIFIED),
    ] {
        h.sim().set_incontact_knobs(IncontactKnobs {
            unchanged_answer: answer,
            ..IncontactKnobs::default()
        });
        h.sim().clock().advance(Duration::from_secs(5));
        let res = states(Some(&cursor)).await;
        assert_eq!(res.status(), status, "{answer:?}");
        if status == StatusCode::OK {
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["agentStates"].as_array().unwrap().len(), 0);
        }
    }
}

#[tokio::test]
async fn a_change_shows_in_the_states_only_after_the_lag() {
    let h = harness(still()).await;
    h.sim().set_incontact_knobs(IncontactKnobs {
        lag_ms: 3_000,
        ..IncontactKnobs::default()
    });
    let (token, base) = h.login().await;
    h.sim().clock().advance(Duration::from_secs(10));
    assert!(h.sim().force_state("u_004", "IDLE", ""));
    let look = || async {
        let all: Value = h
            .call(
                reqwest::Method::GET,
                &token,
                &format!("{base}/agents/states"),
            )
            .await
            .json()
            .await
            .unwrap();
        all["agentStates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["agentId"] == "u_004")
            .unwrap()["outStateDescription"]
            .clone()
    };
    assert_ne!(look().await, "System Idle");
    h.sim().clock().advance(Duration::from_secs(3));
    assert_eq!(look().await, "System Idle");
}

#[tokio::test]
async fn rate_limits_carry_retry_after_unless_switched_off_and_faults_use_the_header() {
    let h = harness(still()).await;
    let (token, base) = h.login().await;
    let url = format!("{base}/teams");
    h.sim().fail_next_on(TEAMS, 1, 429, Some(7));
    let limited = h.call(reqwest::Method::GET, &token, &url).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "7");
    h.sim().set_incontact_knobs(IncontactKnobs {
        retry_after: false,
        ..IncontactKnobs::default()
    });
    h.sim().fail_next_on(TEAMS, 1, 429, Some(7));
    let bare = h.call(reqwest::Method::GET, &token, &url).await;
    assert_eq!(bare.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(bare.headers().get("retry-after").is_none());
    h.sim().fail_next_on(TEAMS, 1, 503, None);
    let down = h.call(reqwest::Method::GET, &token, &url).await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(down.headers().contains_key("icStatusDescription"));
    assert!(down.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_schedule_export_gives_work_and_break_intervals_or_403_without_wfm() {
    let h = harness(still()).await;
    let (token, base) = h.login().await;
    let agent = h.sim().agent("u_004").unwrap();
    let day = agent.shift_start.date_naive();
    let body = serde_json::json!({
        "startDate": day.to_string(),
        "endDate": (day + chrono::TimeDelta::days(1)).to_string(),
        "userID": Simulator::wfm_user_id("u_004"),
    });
    let export = |body: Value| {
        let h = &h;
        let token = token.clone();
        let url = format!("{base}/schedules/export");
        async move {
            h.http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let answer: Value = export(body.clone()).await.json().await.unwrap();
    let shift = &answer["agentSchedules"][0]["shifts"][0];
    let intervals = shift["activityIntervals"].as_array().unwrap();
    let breaks: Vec<&str> = intervals
        .iter()
        .filter(|i| i["work"] == false)
        .map(|i| i["activityCode"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(breaks, ["Lunch", "Short Break"]);

    // An agent in a meeting or a training has it as a titled work interval.
    let titled = h
        .sim()
        .agents()
        .into_iter()
        .find(|a| !a.activities.is_empty())
        .unwrap();
    let titled_body = serde_json::json!({
        "startDate": titled.shift_start.date_naive().to_string(),
        "endDate": (titled.shift_start.date_naive() + chrono::TimeDelta::days(1)).to_string(),
        "userID": Simulator::wfm_user_id(&titled.id),
    });
    let answer: Value = export(titled_body).await.json().await.unwrap();
    let titled_intervals = answer["agentSchedules"][0]["shifts"][0]["activityIntervals"]
        .as_array()
        .unwrap()
        .clone();
    let work: Vec<&str> = titled_intervals
        .iter()
        .filter(|i| i["work"] == true)
        .map(|i| i["activityCode"]["title"].as_str().unwrap())
        .collect();
    let title = titled.activities[0].title.as_str();
    assert_eq!(work.iter().filter(|t| **t == title).count(), 1, "{work:?}");
    assert!(work.iter().all(|t| *t == title || *t == "Open"), "{work:?}");
    // Back to back from the shift's start to its end.
    for pair in titled_intervals.windows(2) {
        assert_eq!(pair[0]["end"], pair[1]["start"]);
    }

    let mut long = body.clone();
    long["endDate"] = Value::from((day + chrono::TimeDelta::days(7)).to_string());
    assert_eq!(export(long).await.status(), StatusCode::BAD_REQUEST);
    h.sim().set_incontact_knobs(IncontactKnobs {
        wfm: false,
        ..IncontactKnobs::default()
    });
    let refused = export(body).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let err: Value = refused.json().await.unwrap();
    assert_eq!(err["errorCode"], "Forbidden");
}
