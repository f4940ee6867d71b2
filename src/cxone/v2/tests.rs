//! The v2 client against a mock platform.

use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::*;
use crate::cxone::core::http::install_crypto_provider;
use crate::cxone::{RetryPolicy, StateChange};
use crate::domain::AgentState;
use secrecy::SecretString;

const SECRET: &str = "client-s3cret";
const CLIENT_ID: &str = "wfmd-test";

fn retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_secs(2),
    }
}

fn settings(base_url: String, token_url: String, retry: RetryPolicy) -> ClientSettings {
    ClientSettings {
        base_url,
        token_url,
        client_id: CLIENT_ID.into(),
        client_secret: SecretString::from(SECRET),
        request_timeout: Duration::from_secs(5),
        retry,
    }
}

fn client_with(settings: ClientSettings, budget: Budget) -> V2Client {
    install_crypto_provider();
    V2Client::new(reqwest::Client::new(), settings, Arc::new(budget))
}

/// A client whose API base and token endpoint are both on `server`.
fn client(server: &MockServer, retry: RetryPolicy) -> V2Client {
    client_with(
        settings(server.uri(), token_url(server), retry),
        Budget::unlimited(),
    )
}

fn token_url(server: &MockServer) -> String {
    format!("{}/oauth2/token", server.uri())
}

fn token_answer(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "access_token": token, "token_type": "bearer", "expires_in": 3600
    }))
}

async fn mount_token(server: &MockServer, token: &str) {
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(token_answer(token))
        .mount(server)
        .await;
}

fn state_json(state: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "userId": "u_001", "agentState": state, "reasonCode": "WORKING",
        "statusChangedTimestamp": "2026-11-20T14:31:55Z"
    }))
}

fn error_json(status: u16, error: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(serde_json::json!({"error": error, "message": message}))
}

async fn requests(server: &MockServer, path_prefix: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().starts_with(path_prefix))
        .collect()
}

async fn token_requests(server: &MockServer) -> usize {
    requests(server, "/oauth2/token").await.len()
}

async fn api_requests(server: &MockServer) -> usize {
    requests(server, "/api/").await.len()
}

#[tokio::test]
async fn many_calls_share_one_token() {
    let server = MockServer::start().await;
    mount_token(&server, "tok-1").await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/u_001/state"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(state_json("READY"))
        .mount(&server)
        .await;
    let client = client(&server, retry(0));
    for _ in 0..5 {
        let snapshot = client.agent_state("u_001").await.unwrap();
        assert_eq!(snapshot.state, AgentState::Ready);
    }
    assert_eq!(token_requests(&server).await, 1);
    assert_eq!(api_requests(&server).await, 5);
}

#[tokio::test]
async fn revoked_token_is_refreshed_once_and_the_call_repeated() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(token_answer("tok-1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_token(&server, "tok-2").await;
    Mock::given(header("authorization", "Bearer tok-1"))
        .respond_with(error_json(401, "invalid_token", "token revoked"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users/u_001/state"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(state_json("READY"))
        .mount(&server)
        .await;
    let client = client(&server, retry(3));
    assert_eq!(
        client.agent_state("u_001").await.unwrap().state,
        AgentState::Ready
    );
    assert_eq!(token_requests(&server).await, 2);
    assert_eq!(api_requests(&server).await, 2);
}

#[tokio::test]
async fn second_401_is_unauthorized() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/users"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let client = client(&server, retry(3));
    let err = client.list_agents(&AgentFilter::default()).await;
    assert_eq!(err, Err(CxoneError::Unauthorized));
    assert_eq!(api_requests(&server).await, 2);
    assert_eq!(token_requests(&server).await, 2);
}

#[tokio::test]
async fn three_401s_in_a_row_pause_calls_until_the_circuit_closes() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/users"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let pause = Duration::from_millis(300);
    let client = client(&server, retry(3)).with_circuit_pause(pause);
    let all = AgentFilter::default();
    assert_eq!(
        client.list_agents(&all).await,
        Err(CxoneError::Unauthorized)
    );
    // The third 401 opens the circuit, so this call's repeat is not sent.
    assert!(matches!(
        client.list_agents(&all).await,
        Err(CxoneError::CircuitOpen { .. })
    ));
    assert_eq!(api_requests(&server).await, 3);
    let sent_tokens = token_requests(&server).await;

    let err = client.list_agents(&all).await.unwrap_err();
    assert!(
        matches!(err, CxoneError::CircuitOpen { remaining } if remaining <= pause),
        "{err:?}"
    );
    assert!(matches!(
        client.check_access().await,
        Err(CxoneError::CircuitOpen { .. })
    ));
    assert_eq!(api_requests(&server).await, 3, "nothing sent while open");
    assert_eq!(token_requests(&server).await, sent_tokens);

    // After the pause, calls go out again.
    // Past the deadline the answer still open is judged below, as any other.
    let mut answer = None;
    let _ = crate::store::testing::holds_within(Duration::from_secs(5), async || {
        answer = Some(client.list_agents(&all).await);
        !matches!(answer, Some(Err(CxoneError::CircuitOpen { .. })))
    })
    .await;
    assert_eq!(answer.unwrap(), Err(CxoneError::Unauthorized));
    assert_eq!(api_requests(&server).await, 5);
}

#[tokio::test]
async fn concurrent_401s_on_one_revoked_token_cause_one_refresh() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(token_answer("tok-1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(token_answer("tok-2").set_delay(Duration::from_millis(50)))
        .mount(&server)
        .await;
    Mock::given(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(401).set_delay(Duration::from_millis(50)))
        .mount(&server)
        .await;
    Mock::given(header("authorization", "Bearer tok-2"))
        .respond_with(state_json("PAUSED"))
        .mount(&server)
        .await;
    let client = Arc::new(client(&server, retry(0)));
    client.check_access().await.unwrap();
    let calls = (0..50).map(|_| {
        let client = Arc::clone(&client);
        tokio::spawn(async move { client.agent_state("u_001").await })
    });
    for outcome in join_all(calls).await {
        assert_eq!(outcome.unwrap().unwrap().state, AgentState::Paused);
    }
    assert_eq!(token_requests(&server).await, 2);
    assert_eq!(api_requests(&server).await, 100);
}

#[tokio::test]
async fn resource_server_base_uri_replaces_the_configured_base() {
    for advertised in ["c9/", "c9"] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "tok", "token_type": "bearer", "expires_in": 3600,
                "resource_server_base_uri": format!("{}/{advertised}", server.uri())
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/c9/api/v2/users"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"users": [{"userId": "u_001", "userName": "Ada"}]}),
            ))
            .mount(&server)
            .await;
        // Nothing listens on the configured base: using it would fail.
        let client = client_with(
            settings(closed_port_url(), token_url(&server), retry(0)),
            Budget::unlimited(),
        );
        let agents = client.list_agents(&AgentFilter::default()).await.unwrap();
        assert_eq!(agents.len(), 1, "advertised base {advertised}");
        assert_eq!(agents[0].name, "Ada");
    }
}

#[tokio::test]
async fn configured_base_with_or_without_trailing_slash_reaches_the_api() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"users": []})))
        .mount(&server)
        .await;
    for base in [server.uri(), format!("{}/", server.uri())] {
        let client = client_with(
            settings(base, token_url(&server), retry(0)),
            Budget::unlimited(),
        );
        assert_eq!(
            client.list_agents(&AgentFilter::default()).await,
            Ok(vec![])
        );
    }
}

fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn rejected_credentials_fail_fast_naming_only_the_client_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(error_json(401, "invalid_client", "bad secret"))
        .mount(&server)
        .await;
    let client = client(&server, retry(5));
    let err = client
        .list_agents(&AgentFilter::default())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CxoneError::BadCredentials {
            client_id: CLIENT_ID.into(),
            status: 401
        }
    );
    let message = err.to_string();
    assert!(message.contains(CLIENT_ID), "{message}");
    assert!(!message.contains(SECRET), "{message}");
    assert_eq!(token_requests(&server).await, 1);
    assert_eq!(api_requests(&server).await, 0);
    assert!(matches!(
        client.check_access().await,
        Err(CxoneError::BadCredentials { .. })
    ));
}

#[tokio::test]
async fn token_endpoint_outage_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_token(&server, "tok").await;
    let client = client(&server, retry(2));
    assert_eq!(client.check_access().await, Ok(()));
    assert_eq!(token_requests(&server).await, 2);
}

#[tokio::test]
async fn rate_limited_call_waits_for_retry_after() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/users/u_001/state"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/users/u_001/state"))
        .respond_with(state_json("READY"))
        .mount(&server)
        .await;
    let client = client(&server, retry(3));
    let start = Instant::now();
    assert!(client.agent_state("u_001").await.is_ok());
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(api_requests(&server).await, 2);
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/users/u_001/state"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/users/u_001/state"))
        .respond_with(state_json("IDLE"))
        .mount(&server)
        .await;
    let client = client(&server, retry(3));
    assert_eq!(
        client.agent_state("u_001").await.unwrap().state,
        AgentState::Idle
    );
    assert_eq!(api_requests(&server).await, 3);
}

#[tokio::test]
async fn server_errors_beyond_max_retries_surface() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/users/u_001/state"))
        .respond_with(error_json(500, "internal", "database on fire"))
        .mount(&server)
        .await;
    let client = client(&server, retry(2));
    assert_eq!(
        client.agent_state("u_001").await,
        Err(CxoneError::Server {
            status: 500,
            message: "database on fire".into(),
            retry_after: None,
        })
    );
    assert_eq!(api_requests(&server).await, 3);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_keep_the_server_message() {
    let cases = [
        (
            error_json(400, "bad_request", "unknown state LUNCH"),
            CxoneError::BadRequest {
                message: "unknown state LUNCH".into(),
            },
        ),
        (
            error_json(403, "insufficient_scope", "missing scope users:state:write"),
            CxoneError::Forbidden {
                message: "missing scope users:state:write".into(),
                scope: Some("users:state:write".into()),
            },
        ),
        (
            ResponseTemplate::new(403).insert_header(
                "WWW-Authenticate",
                r#"Bearer error="insufficient_scope", scope="users:state:write""#,
            ),
            CxoneError::Forbidden {
                message: String::new(),
                scope: Some("users:state:write".into()),
            },
        ),
        (
            error_json(404, "not_found", "unknown user u_001"),
            CxoneError::NotFound {
                message: "unknown user u_001".into(),
            },
        ),
        (
            error_json(409, "conflict", "agent is ON_CONTACT"),
            CxoneError::Conflict {
                message: "agent is ON_CONTACT".into(),
            },
        ),
    ];
    for (answer, expected) in cases {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(method("POST"))
            .and(path("/api/v2/users/u_001/state"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let client = client(&server, retry(3));
        let outcome = client
            .set_agent_state(StateChange::new("u_001", AgentState::NotReady, "BREAK"))
            .await;
        assert_eq!(outcome, Err(expected));
        assert_eq!(api_requests(&server).await, 1);
    }
}

#[tokio::test]
async fn forbidden_message_names_the_missing_scope() {
    let err = CxoneError::Forbidden {
        message: String::new(),
        scope: Some("breaks:view".into()),
    };
    assert!(err.to_string().contains("breaks:view"), "{err}");
}

#[tokio::test]
async fn hanging_request_times_out_and_is_retried() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/users/u_001/state"))
        .respond_with(state_json("READY").set_delay(Duration::from_millis(800)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/users/u_001/state"))
        .respond_with(state_json("READY"))
        .mount(&server)
        .await;
    let mut settings = settings(server.uri(), token_url(&server), retry(2));
    settings.request_timeout = Duration::from_millis(100);
    let client = client_with(settings, Budget::unlimited());
    assert!(client.agent_state("u_001").await.is_ok());
    assert_eq!(api_requests(&server).await, 2);
}

#[tokio::test]
async fn requests_that_keep_hanging_end_in_timeout() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/users/u_001/state"))
        .respond_with(state_json("READY").set_delay(Duration::from_millis(800)))
        .mount(&server)
        .await;
    let mut settings = settings(server.uri(), token_url(&server), retry(1));
    settings.request_timeout = Duration::from_millis(100);
    let client = client_with(settings, Budget::unlimited());
    assert_eq!(client.agent_state("u_001").await, Err(CxoneError::Timeout));
    assert_eq!(api_requests(&server).await, 2);
}

#[tokio::test]
async fn unreachable_platform_is_a_retryable_connect_error() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    let client = client_with(
        settings(closed_port_url(), token_url(&server), retry(1)),
        Budget::unlimited(),
    );
    let err = client.agent_state("u_001").await.unwrap_err();
    assert!(matches!(err, CxoneError::Connect(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn set_agent_state_posts_state_and_reason() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users/u_001/state"))
        .and(body_json(
            serde_json::json!({"state": "NOT_READY", "reasonCode": "MEETING"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "userId": "u_001", "agentState": "NOT_READY", "reasonCode": "MEETING",
            "statusChangedTimestamp": "2026-11-20T14:40:00Z"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users/u_001/state"))
        .and(body_json(
            serde_json::json!({"state": "IDLE", "reasonCode": "SYSTEM_IDLE"}),
        ))
        .respond_with(state_json("IDLE"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server, retry(0));
    let snapshot = client
        .set_agent_state(StateChange::new("u_001", AgentState::NotReady, "MEETING"))
        .await
        .unwrap();
    assert_eq!(
        snapshot,
        AgentSnapshot {
            agent_id: "u_001".into(),
            state: AgentState::NotReady,
            reason: Some("MEETING".into()),
            changed_at: Some("2026-11-20T14:40:00Z".parse().unwrap()),
        }
    );
    // No reason given: the contract's default for the state is sent.
    let snapshot = client
        .set_agent_state(StateChange::new("u_001", AgentState::Idle, ""))
        .await
        .unwrap();
    assert_eq!(snapshot.state, AgentState::Idle);
}

#[tokio::test]
async fn observed_only_states_are_refused_without_a_request() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    let client = client(&server, retry(0));
    for state in [AgentState::OnContact, AgentState::Acw] {
        let err = client
            .set_agent_state(StateChange::new("u_001", state, ""))
            .await
            .unwrap_err();
        assert!(matches!(err, CxoneError::BadRequest { .. }), "{err:?}");
    }
    assert_eq!(api_requests(&server).await, 0);
}

#[tokio::test]
async fn list_agents_sends_only_the_given_filters() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(method("GET"))
        .and(path("/api/v2/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "users": [{"userId": "u_001", "userName": "Ada Park", "teamId": "t_1",
                       "teamName": "Care", "skills": ["s_100"]}]
        })))
        .mount(&server)
        .await;
    let client = client(&server, retry(0));
    let agents = client.list_agents(&AgentFilter::default()).await.unwrap();
    assert_eq!(
        agents,
        [Agent {
            id: "u_001".into(),
            name: "Ada Park".into(),
            team_id: Some("t_1".into()),
            team_name: Some("Care".into()),
            skills: vec!["s_100".into()],
        }]
    );
    let filter = AgentFilter {
        team_id: Some("t 1&x".into()),
        skill_id: Some("s_100".into()),
    };
    client.list_agents(&filter).await.unwrap();
    let sent = requests(&server, "/api/v2/users").await;
    assert_eq!(sent[0].url.query(), None);
    let query: Vec<(String, String)> = sent[1].url.query_pairs().into_owned().collect();
    assert_eq!(
        query,
        [
            ("teamId".to_owned(), "t 1&x".to_owned()),
            ("skillId".to_owned(), "s_100".to_owned())
        ]
    );
    // A single filter alone.
    Mock::given(query_param("skillId", "s_200"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"users": []})))
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let skill_only = AgentFilter {
        team_id: None,
        skill_id: Some("s_200".into()),
    };
    assert_eq!(client.list_agents(&skill_only).await, Ok(vec![]));
}

#[tokio::test]
async fn agent_ids_are_percent_encoded_as_one_segment() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/users/a%2Fb%20c%3F/state"))
        .respond_with(state_json("READY"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server, retry(0));
    assert!(client.agent_state("a/b c?").await.is_ok());
    for unusable in ["", ".", ".."] {
        assert!(matches!(
            client.agent_state(unusable).await,
            Err(CxoneError::BadRequest { .. })
        ));
    }
}

#[tokio::test]
async fn schedule_and_break_status_parse_sparse_answers() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/schedules/users/u_001"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"userId": "u_001", "status": "ACTIVE"})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/breaks/users/u_001/status"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"userId": "u_001", "mandatoryBreakRequired": true}),
            ),
        )
        .mount(&server)
        .await;
    let client = client(&server, retry(0));
    let schedule = client.schedule("u_001").await.unwrap();
    assert!(schedule.is_active());
    assert_eq!(schedule.breaks, None);
    let status = client.break_status("u_001").await.unwrap();
    assert!(status.mandatory_break_required);
    assert_eq!(status.break_start, None);
}

#[tokio::test]
async fn a_redirecting_platform_route_is_a_redirect_error_not_followed_nor_retried() {
    let target = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(state_json("READY"))
        .mount(&target)
        .await;
    let server = MockServer::start().await;
    mount_token(&server, "tok-1").await;
    Mock::given(path("/api/v2/users/u_001/state"))
        .respond_with(ResponseTemplate::new(301).insert_header(
            "location",
            format!("{}/api/v2/users/u_001/state?sig=s-123", target.uri()),
        ))
        .mount(&server)
        .await;
    install_crypto_provider();
    let client = V2Client::new(
        crate::http_client().unwrap(),
        settings(server.uri(), token_url(&server), retry(3)),
        Arc::new(Budget::unlimited()),
    );

    let err = client.agent_state("u_001").await.unwrap_err();
    assert_eq!(
        err,
        CxoneError::Redirected {
            status: 301,
            location: format!("{}/api/v2/users/u_001/state", target.uri()),
        }
    );
    assert!(
        target.received_requests().await.unwrap().is_empty(),
        "followed"
    );
    assert_eq!(api_requests(&server).await, 1, "a redirect is not retried");
    let message = err.to_string();
    assert!(
        message.contains("the platform answered 301") && !message.contains("s-123"),
        "{message}"
    );
}

#[tokio::test]
async fn unknown_agent_state_from_the_platform_is_a_decode_error() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/users/u_001/state"))
        .respond_with(state_json("SLEEPING"))
        .mount(&server)
        .await;
    let client = client(&server, retry(3));
    match client.agent_state("u_001").await {
        Err(CxoneError::Decode(message)) => assert!(message.contains("SLEEPING")),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(api_requests(&server).await, 1);
}

#[tokio::test]
async fn check_access_gets_a_token_once() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    let client = client(&server, retry(0));
    assert_eq!(client.check_access().await, Ok(()));
    assert_eq!(client.check_access().await, Ok(()));
    assert_eq!(token_requests(&server).await, 1);
    assert_eq!(api_requests(&server).await, 0);
}

#[tokio::test]
async fn every_api_request_takes_a_permit_and_token_calls_none() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(token_answer("tok-1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_token(&server, "tok-2").await;
    Mock::given(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(header("authorization", "Bearer tok-2"))
        .respond_with(state_json("READY"))
        .mount(&server)
        .await;
    // Three permits that do not come back within the test.
    let budget = Arc::new(Budget::with_bucket(Duration::from_secs(3_600), 3));
    install_crypto_provider();
    let client = V2Client::new(
        reqwest::Client::new(),
        settings(server.uri(), token_url(&server), retry(0)),
        Arc::clone(&budget),
    );
    client.agent_state("u_001").await.unwrap();
    assert_eq!(token_requests(&server).await, 2);
    // The refused request and its repeat took two permits; one is left.
    assert!(budget.try_acquire());
    assert!(!budget.try_acquire());
}

#[tokio::test]
async fn a_subscription_poll_takes_no_permit_and_leaves_a_429_to_its_caller() {
    let server = MockServer::start().await;
    mount_token(&server, "tok-1").await;
    let poll = "/api/v2/analytics/realtime/subscription/sub_1";
    Mock::given(method("GET"))
        .and(path(poll))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(poll))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "subscriptionId": "sub_1", "status": "active", "data": []
        })))
        .mount(&server)
        .await;
    // A budget with nothing left: any call that waited for it would hang the test.
    let budget = Arc::new(Budget::with_bucket(Duration::from_secs(3_600), 1));
    assert!(budget.try_acquire());
    install_crypto_provider();
    let client = V2Client::new(
        reqwest::Client::new(),
        settings(server.uri(), token_url(&server), retry(3)),
        budget,
    );

    let refused = client.poll_subscription("sub_1").await;
    assert_eq!(
        refused,
        Err(CxoneError::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        }),
        "sent once, not retried"
    );
    assert_eq!(client.poll_subscription("sub_1").await, Ok(Vec::new()));
    let polls = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == poll)
        .count();
    assert_eq!(polls, 2);
}

#[tokio::test]
async fn debug_output_shows_neither_secret_nor_token() {
    let server = MockServer::start().await;
    mount_token(&server, "tok-never-printed").await;
    let settings = settings(server.uri(), token_url(&server), retry(0));
    let settings_debug = format!("{settings:?}");
    assert!(!settings_debug.contains(SECRET), "{settings_debug}");
    let client = client_with(settings, Budget::per_minute(100));
    client.check_access().await.unwrap();
    let debug = format!("{client:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(!debug.contains("tok-never-printed"), "{debug}");
    assert!(debug.contains(CLIENT_ID), "{debug}");
}

#[tokio::test]
async fn skill_activity_asks_for_the_ids_and_stamps_tiles_with_the_platforms_date() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(method("GET"))
        .and(path(SKILL_DATA))
        .and(query_param("skillId", "1234,s_5"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("date", "Fri, 20 Nov 2026 14:31:30 GMT")
                .set_body_json(serde_json::json!({"skillData": [
                    {"skillId": 1234, "skillName": "Tier 1 Voice", "contactsQueued": 3}
                ]})),
        )
        .mount(&server)
        .await;
    let client = client(&server, retry(0));
    let tiles = client
        .skill_activity(&["1234".to_owned(), "s_5".to_owned()])
        .await
        .unwrap();
    assert_eq!(tiles.len(), 1, "the platform left s_5 out");
    assert_eq!(tiles[0].skill_id, "1234");
    assert_eq!(tiles[0].contacts_queued, 3);
    assert_eq!(
        tiles[0].sampled_at,
        "2026-11-20T14:31:30Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert!(client.skill_activity(&[]).await.unwrap().is_empty());
    assert_eq!(
        api_requests_to(&server, SKILL_DATA).await,
        1,
        "none for no ids"
    );
}

#[tokio::test]
async fn queue_stats_post_the_ids_and_refuse_more_than_100_without_a_call() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(method("POST"))
        .and(path(QUEUE_STATS))
        .and(body_json(serde_json::json!({"queueIds": ["q_1", "q_2"]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "queues": [{"queueId": "q_1", "name": "Billing", "callsWaiting": 4,
                        "averageWaitTime": 42000, "serviceLevel": 0.91}]
        })))
        .mount(&server)
        .await;
    let client = client(&server, retry(0));
    let tiles = client
        .queue_stats(&["q_1".to_owned(), "q_2".to_owned()])
        .await
        .unwrap();
    assert_eq!(tiles[0].contacts_waiting, 4);
    assert_eq!(tiles[0].average_wait_ms, Some(42_000));
    // The mock server's own Date header (whole seconds) stamps the tile.
    assert_eq!(tiles[0].sampled_at.timestamp_subsec_nanos(), 0);

    let many: Vec<String> = (0..101).map(|n| format!("q_{n}")).collect();
    let err = client.queue_stats(&many).await.unwrap_err();
    assert!(matches!(&err, CxoneError::BadRequest { message } if message.contains("101")));
    assert_eq!(api_requests_to(&server, QUEUE_STATS).await, 1);
}

#[tokio::test]
async fn a_missing_scope_on_queue_stats_is_forbidden_naming_it_and_not_retried() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path(QUEUE_STATS))
        .respond_with(error_json(
            403,
            "insufficient_scope",
            "missing scope reporting:queue:view",
        ))
        .mount(&server)
        .await;
    let client = client(&server, retry(3));
    let err = client.queue_stats(&["q_1".to_owned()]).await.unwrap_err();
    assert!(
        matches!(&err, CxoneError::Forbidden { scope: Some(s), .. } if s == "reporting:queue:view"),
        "{err:?}"
    );
    assert_eq!(api_requests_to(&server, QUEUE_STATS).await, 1);
}

#[tokio::test]
async fn listings_accept_numeric_ids() {
    let server = MockServer::start().await;
    mount_token(&server, "tok").await;
    Mock::given(path("/api/v2/skills"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "skills": [{"skillId": 1234, "skillName": "Tier 1 Voice", "mediaType": "voice"}]
        })))
        .mount(&server)
        .await;
    Mock::given(path("/api/v2/queues"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "queues": [{"queueId": "q_1", "name": "Billing"}]
        })))
        .mount(&server)
        .await;
    let client = client(&server, retry(0));
    assert_eq!(
        client.list_skills().await.unwrap(),
        [Skill {
            id: "1234".into(),
            name: "Tier 1 Voice".into()
        }]
    );
    assert_eq!(
        client.list_queues().await.unwrap(),
        [Queue {
            id: "q_1".into(),
            name: "Billing".into()
        }]
    );
}

async fn api_requests_to(server: &MockServer, route: &str) -> usize {
    requests(server, route).await.len()
}

#[tokio::test]
async fn aggregation_queries_speak_the_contract_and_keep_retry_after() {
    let server = MockServer::start().await;
    mount_token(&server, "tok-1").await;
    let query = AggregationQuery {
        metrics: vec![aggregation::AggMetric {
            name: "duration".into(),
            aggregation: "avg".into(),
        }],
        dimensions: vec!["group.id".into()],
        filter: None,
        bucket_size: "DAY".into(),
        start: "2026-10-01T00:00:00Z".into(),
        end: "2026-10-31T23:59:59Z".into(),
    };
    Mock::given(method("POST"))
        .and(path("/api/v2/analytics/query"))
        .and(body_json(query.body()))
        .respond_with(
            ResponseTemplate::new(202)
                .set_body_json(serde_json::json!({"id": "qry_1", "status": "PENDING"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/analytics/query/qry_1"))
        .and(query_param("limit", "500"))
        .and(query_param("offset", "1000"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Retry-After", "3")
                .set_body_json(serde_json::json!({
                    "status": "RUNNING", "error": null, "total": null, "results": []})),
        )
        .mount(&server)
        .await;
    let client = client(&server, retry(0));
    assert_eq!(client.submit_aggregation(&query).await.unwrap(), "qry_1");
    let page = client.aggregation_page("qry_1", 500, 1000).await.unwrap();
    assert_eq!(page.status, aggregation::QueryStatus::Running);
    assert_eq!(page.retry_after, Some(Duration::from_secs(3)));
    assert!(page.rows.is_empty() && page.total.is_none());
}
