//! Bearer tokens and roles: every role against every route, the actor of changes, the
//! loopback rule without tokens, and `wfmd token new` end to end.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use wfmd::on;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wfmd::config::api_tokens::ApiTokenConfig;
use wfmd::telemetry::names::API_REFUSALS_TOTAL;

use crate::helpers::{DEADLINE, Daemon, TestApp, TestSim, http_client, wfmd};

/// Who calls, in the order of each row's expected statuses.
#[derive(Debug, Clone, Copy)]
pub enum As {
    Nobody,
    WrongToken,
    Viewer,
    Supervisor,
    Admin,
}

pub const CALLERS: [As; 5] = [
    As::Nobody,
    As::WrongToken,
    As::Viewer,
    As::Supervisor,
    As::Admin,
];

impl As {
    /// The bearer token this caller sends (see [`spawn_with_roles`]).
    pub fn token(self) -> Option<&'static str> {
        match self {
            As::Nobody => None,
            As::WrongToken => Some("wfmd_not-a-configured-token"),
            As::Viewer => Some("wfmd_viewer-token"),
            As::Supervisor => Some("wfmd_supervisor-token"),
            As::Admin => Some("wfmd_admin-token"),
        }
    }
}

/// One route: the least role it needs (`None`: open), a request to make, and the status
/// each of [`CALLERS`] gets. Path parameters are filled in by [`fill_path`]: `{agent_id}`
/// is an off-shift agent, so an allowed change is refused by compliance (409) and
/// changes nothing; `{tenant}` is the only tenant, `default`; any other parameter is an
/// id that does not exist.
pub struct Row {
    pub method: &'static str,
    pub path: &'static str,
    pub role: Option<&'static str>,
    pub query: &'static str,
    pub body: Option<&'static str>,
    pub statuses: [u16; 5],
}

/// Every route of the API. A route added to the API without a row here fails
/// `the_spec_and_the_role_table_describe_the_same_routes` in `openapi.rs`.
pub const ROUTES: &[Row] = &[
    Row {
        method: "GET",
        path: "/healthz",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/readyz",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/metrics",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/openapi.json",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/agents/{agent_id}/history",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/agents/{agent_id}/adherence",
        role: Some("viewer"),
        // A day no shift is stored for: past the role check, nothing to draw.
        query: "from=2020-01-01&to=2020-01-02",
        body: None,
        statuses: [401, 401, 404, 404, 404],
    },
    Row {
        method: "GET",
        path: "/v1/adherence/now",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/adherence/exceptions",
        role: Some("viewer"),
        query: "state=open",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "POST",
        path: "/v1/adherence/exceptions/{id}/review",
        role: Some("supervisor"),
        query: "",
        // No such exception: refused after the role check, so nothing is reviewed.
        body: Some(r#"{"decision": "excused", "note": "covering"}"#),
        statuses: [401, 401, 403, 404, 404],
    },
    Row {
        method: "GET",
        path: "/v1/adherence/summary",
        role: Some("viewer"),
        query: "tz=Europe/Paris",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/agents/{agent_id}/deferred",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 404, 404, 404],
    },
    Row {
        method: "DELETE",
        path: "/v1/agents/{agent_id}/deferred",
        role: Some("supervisor"),
        query: "",
        body: None,
        statuses: [401, 401, 403, 404, 404],
    },
    Row {
        method: "POST",
        path: "/v1/agents/{agent_id}/transitions",
        role: Some("supervisor"),
        query: "",
        body: Some(r#"{"state":"READY"}"#),
        statuses: [401, 401, 403, 409, 409],
    },
    Row {
        method: "POST",
        path: "/v1/adherence/authorisations",
        role: Some("supervisor"),
        query: "",
        // Ending before it starts: refused after the role check, so nothing is stored.
        body: Some(
            r#"{"agents":["u_001"],"from":"2026-01-02T00:00:00Z","to":"2026-01-01T00:00:00Z","reason":"coaching"}"#,
        ),
        statuses: [401, 401, 403, 422, 422],
    },
    Row {
        method: "GET",
        path: "/v1/adherence/authorisations",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "DELETE",
        path: "/v1/adherence/authorisations/{id}",
        role: Some("supervisor"),
        query: "",
        body: None,
        statuses: [401, 401, 403, 404, 404],
    },
    Row {
        method: "GET",
        path: "/v1/bulk-transitions",
        role: Some("viewer"),
        query: "status=completed&limit=10",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "POST",
        path: "/v1/bulk-transitions",
        role: Some("supervisor"),
        query: "",
        // No such team: refused after the role check, so nothing changes.
        body: Some(r#"{"team":"no-such-team","state":"NOT_READY"}"#),
        statuses: [401, 401, 403, 422, 422],
    },
    Row {
        method: "GET",
        path: "/v1/bulk-transitions/{job_id}",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 404, 404, 404],
    },
    Row {
        method: "DELETE",
        path: "/v1/bulk-transitions/{job_id}",
        role: Some("supervisor"),
        query: "",
        body: None,
        statuses: [401, 401, 403, 404, 404],
    },
    Row {
        method: "POST",
        path: "/v1/bulk-transitions/{job_id}/revert",
        role: Some("supervisor"),
        query: "",
        body: None,
        statuses: [401, 401, 403, 404, 404],
    },
    Row {
        method: "POST",
        path: "/v1/analytics/queries",
        role: Some("supervisor"),
        query: "",
        // An unknown metric: refused after the role check, so no job is stored.
        body: Some(
            r#"{"source":"history","metrics":["nope:avg"],"from":"2026-11-01","to":"2026-11-02","bucket":"day"}"#,
        ),
        statuses: [401, 401, 403, 422, 422],
    },
    Row {
        method: "GET",
        path: "/v1/analytics/queries",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/analytics/queries/{job_id}",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 404, 404, 404],
    },
    Row {
        method: "GET",
        path: "/v1/analytics/queries/{job_id}/results",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 404, 404, 404],
    },
    Row {
        method: "GET",
        path: "/v1/reports/compliance",
        role: Some("viewer"),
        query: "format=json",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/reports/definitions",
        role: Some("viewer"),
        query: "report=wallboard&format=csv",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/live/series",
        role: Some("viewer"),
        query: "family=skills&id=s_100",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/tenants",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/cluster",
        role: Some("admin"),
        query: "",
        body: None,
        statuses: [401, 401, 403, 403, 200],
    },
    Row {
        method: "POST",
        path: "/v1/schedules/imports",
        role: Some("admin"),
        query: "",
        // Not sent as CSV: refused after the role check, and nothing is imported.
        body: None,
        statuses: [401, 401, 403, 403, 415],
    },
    Row {
        method: "GET",
        path: "/v1/schedules/imports/{job_id}",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 404, 404, 404],
    },
    Row {
        method: "GET",
        path: "/v1/audit",
        role: Some("admin"),
        query: "",
        body: None,
        statuses: [401, 401, 403, 403, 200],
    },
    Row {
        method: "GET",
        path: "/v1/audit/verify",
        role: Some("admin"),
        query: "",
        body: None,
        statuses: [401, 401, 403, 403, 200],
    },
    Row {
        method: "GET",
        path: "/",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/t/{tenant}/",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    // Redirected to the one above, and followed.
    Row {
        method: "GET",
        path: "/t/{tenant}",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    // The console's other pages, open as the wallboard is.
    Row {
        method: "GET",
        path: "/rta",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/t/{tenant}/rta",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/agents/{agent_id}",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/t/{tenant}/agents/{agent_id}",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/jobs",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/t/{tenant}/jobs",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/exceptions",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/t/{tenant}/exceptions",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/reports",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/t/{tenant}/reports",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/sign-in",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/t/{tenant}/sign-in",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/sign-out",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/t/{tenant}/sign-out",
        role: None,
        query: "",
        body: None,
        statuses: [200, 200, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/live",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/events",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 200, 200, 200],
    },
    Row {
        method: "GET",
        path: "/v1/ws",
        role: Some("viewer"),
        query: "",
        body: None,
        // Not an upgrade request: refused after the role check.
        statuses: [401, 401, 400, 400, 400],
    },
    Row {
        method: "POST",
        path: "/v1/live/tickets",
        role: Some("viewer"),
        query: "",
        body: None,
        statuses: [401, 401, 201, 201, 201],
    },
    // Open: the body's token is what signs in, whoever sends it.
    Row {
        method: "POST",
        path: "/v1/session",
        role: None,
        query: "",
        body: Some(r#"{"token": "wfmd_viewer-token"}"#),
        statuses: [204, 204, 204, 204, 204],
    },
    Row {
        method: "DELETE",
        path: "/v1/session",
        role: None,
        query: "",
        body: None,
        statuses: [204, 204, 204, 204, 204],
    },
];

/// Every route of [`ROUTES`] at each address it has: a tenant's `/v1` route also under
/// `/v1/tenants/{tenant}/…` (the list of tenants and the cluster are the process's,
/// and have no copy).
pub fn addressed_routes() -> Vec<(String, &'static Row)> {
    ROUTES
        .iter()
        .flat_map(|row| {
            let copy = row
                .path
                .strip_prefix("/v1/")
                .filter(|_| !wfmd::api::tenancy::PROCESS_PATHS.contains(&row.path))
                .map(|rest| (format!("/v1/tenants/{{tenant}}/{rest}"), row));
            std::iter::once((row.path.to_owned(), row)).chain(copy)
        })
        .collect()
}

pub fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An `[[api_tokens]]` entry for `token`.
pub fn entry(name: &str, token: &str, role: &str) -> ApiTokenConfig {
    ApiTokenConfig {
        name: name.into(),
        token_sha256: sha256_hex(token),
        role: role.into(),
        tenants: None,
    }
}

/// wfmd with one token per role, named after the role (`viewer`, `supervisor`,
/// `admin`); the tokens are [`As::token`]'s.
pub async fn spawn_with_roles() -> TestApp {
    TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.api_tokens = role_entries();
    })
    .await
}

/// The tokens of [`spawn_with_roles`].
pub fn role_entries() -> Vec<ApiTokenConfig> {
    [As::Viewer, As::Supervisor, As::Admin]
        .into_iter()
        .zip(["viewer", "supervisor", "admin"])
        .map(|(who, name)| entry(name, who.token().unwrap(), name))
        .collect()
}

/// `template` with `{agent_id}` set to `agent_id` and any other `{parameter}` to an id
/// nothing has.
pub fn fill_path(template: &str, agent_id: &str) -> String {
    let mut path = template
        .replace("{agent_id}", agent_id)
        .replace("{tenant}", "default");
    while let (Some(start), Some(end)) = (path.find('{'), path.find('}')) {
        path.replace_range(start..=end, "00000000-0000-0000-0000-000000000000");
    }
    path
}

/// The request id `row`'s request at `path` as `who` carries: the route (a tenant's
/// prefix shortened to `t`, to stay within a request id's 64 characters), in the
/// characters a request id may have.
pub fn request_id(who: As, row: &Row, path: &str) -> String {
    let path: String = path
        .replacen("/tenants/{tenant}/", "/t/", 1)
        .chars()
        .filter_map(|c| match c {
            '/' => Some('.'),
            '{' | '}' => None,
            c => Some(c),
        })
        .collect();
    format!("{who:?}-{}{path}", row.method)
}

/// Sends `row`'s request to its route template `template` as `who`.
pub async fn send(
    app: &TestApp,
    row: &Row,
    template: &str,
    agent_id: &str,
    who: As,
) -> reqwest::Response {
    let path = fill_path(template, agent_id);
    let url = if row.query.is_empty() {
        format!("{}{path}", app.address)
    } else {
        format!("{}{path}?{}", app.address, row.query)
    };
    let mut request = app
        .http
        .request(row.method.parse().unwrap(), url)
        .header("x-request-id", request_id(who, row, template));
    if let Some(token) = who.token() {
        request = request.bearer_auth(token);
    }
    if let Some(body) = row.body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    request.send().await.unwrap()
}

/// Whether an answer is the (endless) live feed.
pub fn is_event_stream(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("content-type")
        .is_some_and(|v| v == "text/event-stream")
}

#[tokio::test]
async fn every_role_against_every_route() {
    let app = spawn_with_roles().await;
    let agent = app.sim.off_shift_agent();
    let mut failures = Vec::new();
    for (path, row) in addressed_routes() {
        for (who, expected) in CALLERS.into_iter().zip(row.statuses) {
            let response = send(&app, row, &path, &agent.id, who).await;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            // The live feed never ends; its headers are the answer.
            let body = if is_event_stream(&headers) {
                String::new()
            } else {
                response.text().await.unwrap()
            };
            let what = format!("{who:?} {} {path}", row.method);
            if status != expected {
                failures.push(format!("{what}: {status}, expected {expected}: {body}"));
                continue;
            }
            assert_eq!(
                headers["x-request-id"],
                request_id(who, row, &path),
                "{what}"
            );
            if matches!(status, 401 | 403) {
                assert_eq!(
                    headers["content-type"], "application/problem+json",
                    "{what}"
                );
                let challenge = headers["www-authenticate"].to_str().unwrap();
                assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
                let problem: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(problem["status"], status, "{what}");
                if status == 403 {
                    assert_eq!(problem["required_role"], row.role.unwrap(), "{what}");
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for reason in ["missing", "invalid", "forbidden"] {
        let line = format!("{API_REFUSALS_TOTAL}{{reason=\"{reason}\",tenant=\"default\"}}");
        assert!(metrics.contains(&line), "{line} missing from {metrics}");
    }
    assert_eq!(
        app.sim.calls(crate::helpers::SET_STATE),
        0,
        "nothing was changed"
    );
}

#[tokio::test]
async fn every_v1_path_needs_a_token_even_without_a_route_or_with_the_wrong_method() {
    let app = spawn_with_roles().await;
    for (method, path) in [
        ("GET", "/v1/nothing-here"),
        ("DELETE", "/v1/agents/u_001/history"),
        ("PUT", "/v1/reports/compliance"),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
    }
    let with_token = |method: &str, path: &str| {
        app.http
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .bearer_auth(As::Viewer.token().unwrap())
            .send()
    };
    let missing = with_token("GET", "/v1/nothing-here").await.unwrap();
    assert_eq!(missing.status(), 404);
    let problem: Value = missing.json().await.unwrap();
    assert_eq!(problem["type"], "urn:wfmd:problem:no-such-route");
    let wrong_method = with_token("DELETE", "/v1/agents/u_001/history")
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    // HEAD is served by GET, and needs GET's role.
    let head = app
        .http
        .head(format!("{}/v1/agents/u_001/history", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 401);
}

#[tokio::test]
async fn the_token_name_is_the_actor_of_the_change_in_the_audit_log_and_the_attempt() {
    let sim = TestSim::default_tenant().await;
    let app = TestApp::spawn_with(sim, |config| {
        config.api_tokens = vec![entry("desk-7", "wfmd_desk-7", "supervisor")];
    })
    .await;
    let agent = app.sim.free_agents().remove(0);
    let target = if agent.state == "PAUSED" {
        "IDLE"
    } else {
        "PAUSED"
    };
    let response = app
        .http
        .post(format!(
            "{}/v1/agents/{}/transitions",
            app.address, agent.id
        ))
        .bearer_auth("wfmd_desk-7")
        .json(&json!({ "state": target }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let transition: Value = response.json().await.unwrap();
    assert_eq!(transition["actor"], "desk-7");

    let audit: Vec<String> = on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT actor FROM audit_log"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert_eq!(audit, ["desk-7"]);
    let attempts: Vec<String> = on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT actor FROM transition_attempts"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert_eq!(attempts, ["desk-7"]);
}

#[tokio::test]
async fn without_tokens_every_caller_is_the_local_admin() {
    let app = TestApp::spawn().await;
    let agent = app.sim.off_shift_agent();
    let (status, problem) = app.set_state(&agent.id, "READY").await;
    assert_eq!(
        status, 409,
        "allowed, then refused by compliance: {problem}"
    );
    assert_eq!(problem["transition"]["actor"], "local");
    let actors: Vec<String> = on!(app.store.reader(), |c| sqlx::query_scalar(
        "SELECT actor FROM audit_log"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert_eq!(actors, ["local"]);
}

#[tokio::test]
async fn without_tokens_a_public_listen_address_is_bound_to_loopback_only() {
    let sim = TestSim::default_tenant().await;
    let db = crate::helpers::TestDb::new();
    let mut config = sim.config(&db.url());
    config.server.listen = "0.0.0.0:0".parse().unwrap();
    let app = wfmd::App::build(&config).await.unwrap();
    assert!(app.local_addr().ip().is_loopback(), "{}", app.local_addr());
    drop(app);

    config.api_tokens = vec![entry("desk", "wfmd_desk", "viewer")];
    let refused = wfmd::App::build(&config)
        .await
        .err()
        .expect("plain HTTP with tokens");
    assert!(
        refused
            .to_string()
            .starts_with("server.listen = 0.0.0.0:0 is not a loopback"),
        "{refused}"
    );
    // A TLS proxy on another host is in front.
    config.server.plain_http_ok = true;
    let app = wfmd::App::build(&config).await.unwrap();
    assert!(
        app.local_addr().ip().is_unspecified(),
        "with tokens the configured address is used: {}",
        app.local_addr()
    );
}

/// `text` without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Lines of a child's stderr, read on a thread.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first of `lines` that contains `text`, failing the test after the deadline.
async fn first_line_with(lines: std::sync::mpsc::Receiver<String>, text: &'static str) -> String {
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with `{text}` in the log: {e}"),
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn serve_with_tokens_on_a_public_plain_http_address_refuses_to_start_unless_told_of_a_proxy()
{
    let folder = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let tokens = format!(
        "[{{name = \"desk\", token_sha256 = \"{}\", role = \"viewer\"}}]",
        sha256_hex("wfmd_desk")
    );
    let serve = || {
        let mut command = wfmd();
        command
            .args(["serve", "--simulate"])
            .current_dir(folder.path())
            .env("WFMD_LOG__LEVEL", "warn")
            .env("WFMD_API_TOKENS", &tokens)
            .env("WFMD_SERVER__LISTEN", format!("0.0.0.0:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let log = folder.path().join("refused.log");
    let refused = Daemon {
        child: serve()
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        address: String::new(),
    };
    let status = refused.wait().await;
    assert_eq!(status.code(), Some(2), "a configuration error");
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        message.contains(&format!(
            "server.listen = 0.0.0.0:{port} is not a loopback address"
        )),
        "{message}"
    );
    assert!(message.contains("server.plain_http_ok"), "{message}");

    let mut told = serve();
    told.env("WFMD_SERVER__PLAIN_HTTP_OK", "true");
    let mut child = told.spawn().unwrap();
    let lines = stderr_lines(&mut child);
    let daemon = Daemon {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    let warning = first_line_with(lines, "PLAIN HTTP").await;
    assert!(warning.contains("WARN"), "{warning}");
    crate::helpers::healthz_answers(&daemon.address, "no answer").await;
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
}

#[tokio::test]
async fn serve_without_tokens_warns_and_listens_on_loopback_instead_of_a_public_address() {
    let folder = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = wfmd()
        .args(["serve", "--simulate"])
        .current_dir(folder.path())
        .env("WFMD_LOG__LEVEL", "warn")
        .env("WFMD_SERVER__LISTEN", format!("0.0.0.0:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let daemon = Daemon {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    let warning = first_line_with(lines, "no [[api_tokens]]").await;
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&format!("0.0.0.0:{port}")), "{warning}");
    assert!(warning.contains(&format!("127.0.0.1:{port}")), "{warning}");

    crate::helpers::healthz_answers(&daemon.address, "no answer on loopback").await;
    daemon.signal("TERM");
    assert!(daemon.wait().await.success());
}

#[tokio::test]
async fn a_refused_request_is_logged_with_its_request_id_and_answered_with_it() {
    let sim = TestSim::default_tenant().await;
    let db = crate::helpers::TestDb::new();
    let config = db.dir.path().join("wfmd.toml");
    std::fs::write(
        &config,
        format!(
            "[[api_tokens]]\nname = \"desk\"\ntoken_sha256 = \"{}\"\nrole = \"viewer\"\n",
            sha256_hex("wfmd_desk")
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = wfmd()
        .args(["serve", "--config", config.to_str().unwrap()])
        .envs(sim.env(&db.url()))
        .env("WFMD_LOG__LEVEL", "warn")
        .env("WFMD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let daemon = Daemon {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    let http = http_client();
    let response = crate::helpers::eventually("wfmd did not come up", || async {
        http.post(format!("{}/v1/agents/u_001/transitions", daemon.address))
            .bearer_auth("wfmd_desk")
            .header("x-request-id", "trace-me-4711")
            .json(&json!({"state": "READY"}))
            .send()
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(response.status(), 403, "a viewer may not change states");
    assert_eq!(response.headers()["x-request-id"], "trace-me-4711");

    let line = first_line_with(lines, "role too weak").await;
    let line = strip_ansi(&line);
    for part in [
        "request_id=trace-me-4711",
        "caller=desk",
        "route=/v1/agents/{agent_id}/transitions",
        "required=supervisor",
    ] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
    drop(daemon);
}

#[test]
fn a_bad_token_entry_stops_wfmd_with_exit_2_naming_the_entry_and_field() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut file,
        b"[[api_tokens]]\nname = \"desk\"\ntoken_sha256 = \"wfmd_pasted-the-token-itself\"\nrole = \"viewer\"\n\
          [[api_tokens]]\nname = \"ops\"\ntoken_sha256 = \"00\"\nrole = \"root\"\n",
    )
    .unwrap();
    let output = wfmd()
        .arg("--config")
        .arg(file.path())
        .args(["config", "check", "--simulate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "api_tokens[0] (\"desk\").token_sha256 must be the 64 hex digits",
        "api_tokens[1] (\"ops\").token_sha256 must be the 64 hex digits",
        "api_tokens[1] (\"ops\").role must be viewer, supervisor or admin, got `root`",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected} missing from:\n{stderr}"
        );
    }
    assert!(!stderr.contains("pasted-the-token"), "{stderr}");
}

/// What `wfmd token new` printed: the token and the configuration entry.
fn parse_announcement(stdout: &str) -> (String, String) {
    let token = stdout
        .lines()
        .find_map(|line| line.strip_prefix("    "))
        .expect("the token on an indented line")
        .to_owned();
    let entry = stdout
        .split_once("[[api_tokens]]")
        .map(|(_, rest)| rest.split("\n\n").next().unwrap())
        .expect("an [[api_tokens]] entry");
    (token, format!("[[api_tokens]]{entry}\n"))
}

#[tokio::test]
async fn a_token_from_token_new_is_accepted_by_a_daemon_configured_with_its_lines() {
    let output = wfmd()
        .args(["token", "new", "night-desk", "--role", "supervisor"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (token, entry) = parse_announcement(&stdout);
    assert!(token.starts_with("wfmd_") && token.len() >= 40, "{token}");
    let parsed: toml::Table = toml::from_str(&entry).unwrap();
    let entries = parsed["api_tokens"].as_array().unwrap();
    assert_eq!(entries[0]["name"].as_str(), Some("night-desk"));
    assert_eq!(entries[0]["role"].as_str(), Some("supervisor"));
    assert_eq!(
        entries[0]["token_sha256"].as_str(),
        Some(sha256_hex(&token).as_str())
    );

    let sim = TestSim::default_tenant().await;
    let db = crate::helpers::TestDb::new();
    let config = db.dir.path().join("wfmd.toml");
    std::fs::write(&config, &entry).unwrap();
    let daemon = Daemon::spawn_with(
        &["serve", "--config", config.to_str().unwrap()],
        &sim.env(&db.url()),
        None,
    )
    .await;
    let http = http_client();
    let off = sim.off_shift_agent();
    let post = |token: Option<&str>| {
        let request = http
            .post(format!(
                "{}/v1/agents/{}/transitions",
                daemon.address, off.id
            ))
            .json(&json!({"state": "READY"}));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("wfmd_guess")).await.unwrap().status(), 401);
    let refused: Value = post(Some(&token)).await.unwrap().json().await.unwrap();
    assert_eq!(refused["violation"], "AGENT_NOT_SCHEDULED", "{refused}");
    assert_eq!(refused["transition"]["actor"], "night-desk");
}
