//! Browser sessions: a token given once becomes an HttpOnly, SameSite=Strict cookie that
//! acts as the token (name, role, audit) until it is signed out, expires or its token
//! changes at a SIGHUP; a bearer header wins over it, and a page elsewhere cannot use it.

use serde_json::{Value, json};
use wfmd::on;

use crate::auth::{As, entry, role_entries, sha256_hex};
use crate::helpers::{Daemon, SET_STATE, TestApp, TestDb, TestSim, eventually, http_client};

/// The `wfmd_session` value of a `Set-Cookie` answer, and the whole header.
fn session_cookie(response: &reqwest::Response) -> (String, String) {
    let header = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let value = header
        .strip_prefix("wfmd_session=")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("not the session cookie: {header}"))
        .to_owned();
    (value, header)
}

async fn sign_in(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/session", app.address))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
}

/// A `transition` of `agent` to a state it is not in, sent with `cookie` (and `bearer`).
async fn change(
    app: &TestApp,
    agent: &wfmd::sim::SimAgent,
    cookie: &str,
    bearer: Option<&str>,
) -> reqwest::Response {
    let target = if agent.state == "PAUSED" {
        "IDLE"
    } else {
        "PAUSED"
    };
    let mut request = app
        .http
        .post(format!(
            "{}/v1/agents/{}/transitions",
            app.address, agent.id
        ))
        .header("cookie", format!("theme=dark; wfmd_session={cookie}"))
        .json(&json!({ "state": target }));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_token_becomes_a_session_cookie_that_acts_as_the_token_until_signed_out() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.api_tokens = role_entries();
        config
            .api_tokens
            .push(entry("desk-7", "wfmd_desk-7", "supervisor"));
    })
    .await;
    let agents = app.sim.free_agents();

    let response = sign_in(&app, "wfmd_desk-7").await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let (desk, header) = session_cookie(&response);
    assert_eq!(desk.len(), 64, "32 random bytes in hex: {header}");
    assert_eq!(
        header,
        format!("wfmd_session={desk}; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800"),
        "no Secure over plain HTTP without a proxy saying otherwise"
    );
    let response = sign_in(&app, "wfmd_desk-7").await;
    assert_ne!(session_cookie(&response).0, desk, "each sign-in its own");

    // The cookie reads and changes as its token, and the change is audited with its name.
    let live = app
        .http
        .get(format!("{}/v1/live", app.address))
        .header("cookie", format!("wfmd_session={desk}"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let response = change(&app, &agents[0], &desk, None).await;
    assert_eq!(response.status(), 200);
    let made: Value = response.json().await.unwrap();
    assert_eq!(made["actor"], "desk-7");
    let actors: Vec<(String, String)> = on!(app.store.reader(), |c| sqlx::query_as(
        "SELECT actor, action FROM audit_log"
    )
    .fetch_all(c)
    .await)
    .unwrap();
    assert_eq!(actors, [("desk-7".into(), "transition.succeeded".into())]);

    // A viewer's session may read only; a bearer header wins over a cookie.
    let (viewer, _) = session_cookie(&sign_in(&app, As::Viewer.token().unwrap()).await);
    let refused = change(&app, &agents[1], &viewer, None).await;
    assert_eq!(refused.status(), 403);
    let refused = change(&app, &agents[1], &desk, As::Viewer.token()).await;
    assert_eq!(
        refused.status(),
        403,
        "the viewer's bearer token, not the cookie"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["role"], "viewer");

    // A tenant's address signs in too (the session is the token's, for every tenant).
    let response = app
        .http
        .post(format!("{}/v1/tenants/default/session", app.address))
        .json(&json!({ "token": "wfmd_desk-7" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let (prefixed, _) = session_cookie(&response);

    // A token that is not configured signs nobody in.
    let response = sign_in(&app, "wfmd_desk-8").await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("set-cookie").is_none());
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:wfmd:problem:unauthorized");
    // Nor does a made-up cookie.
    let forged = change(&app, &agents[1], &"0".repeat(64), None).await;
    assert_eq!(forged.status(), 401);

    // Signed out: the cookie is cleared, and the session is gone server-side too.
    let response = app
        .http
        .delete(format!("{}/v1/session", app.address))
        .header("cookie", format!("wfmd_session={desk}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let (cleared, header) = session_cookie(&response);
    assert!(
        cleared.is_empty() && header.contains("Max-Age=0"),
        "{header}"
    );
    let after = change(&app, &agents[1], &desk, None).await;
    assert_eq!(after.status(), 401);
    let problem: Value = after.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("sign in again"),
        "{problem}"
    );
    // Other sessions of the token go on.
    let live = app
        .http
        .get(format!("{}/v1/tenants/default/live", app.address))
        .header("cookie", format!("wfmd_session={prefixed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(app.sim.calls(SET_STATE), 1, "only the desk's one change");
}

#[tokio::test]
async fn a_cross_site_request_carrying_the_session_cookie_is_refused() {
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.api_tokens = role_entries();
    })
    .await;
    let agent = app.sim.free_agents().remove(0);
    let (admin, _) = session_cookie(&sign_in(&app, As::Admin.token().unwrap()).await);
    let from = |origin: &'static str| {
        app.http
            .post(format!(
                "{}/v1/agents/{}/transitions",
                app.address, agent.id
            ))
            .header("cookie", format!("wfmd_session={admin}"))
            .header("origin", origin)
            .json(&json!({ "state": "PAUSED", "reason": "CSRF" }))
            .send()
    };
    let refused = from("http://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:wfmd:problem:cross-origin");
    // Nor may a page elsewhere sign a browser in (or out).
    let sign_in_there = app
        .http
        .post(format!("{}/v1/session", app.address))
        .header("origin", "http://evil.example")
        .json(&json!({ "token": As::Admin.token().unwrap() }))
        .send()
        .await
        .unwrap();
    assert_eq!(sign_in_there.status(), 403);
    assert!(sign_in_there.headers().get("set-cookie").is_none());
    assert_eq!(app.sim.calls(SET_STATE), 0, "nothing was changed");
}

#[tokio::test]
async fn the_cookie_is_secure_only_when_a_configured_proxy_says_the_browser_came_over_https() {
    for (proxies, secure) in [(vec![], false), (vec!["127.0.0.1".parse().unwrap()], true)] {
        let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
            config.api_tokens = role_entries();
            config.server.proxies = proxies;
            config.server.session_ttl = std::time::Duration::from_secs(3600);
        })
        .await;
        let response = app
            .http
            .post(format!("{}/v1/session", app.address))
            .header("x-forwarded-proto", "https")
            .json(&json!({ "token": As::Viewer.token().unwrap() }))
            .send()
            .await
            .unwrap();
        let (_, header) = session_cookie(&response);
        assert!(
            header.contains("; Max-Age=3600"),
            "server.session_ttl: {header}"
        );
        assert_eq!(header.ends_with("; Secure"), secure, "{header}");
        let response = app
            .http
            .delete(format!("{}/v1/session", app.address))
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let (_, header) = session_cookie(&response);
        assert_eq!(header.ends_with("; Secure"), secure, "{header}");
    }
}

#[tokio::test]
async fn without_tokens_signing_in_answers_204_without_a_cookie() {
    let app = TestApp::spawn().await;
    let response = sign_in(&app, "anything").await;
    assert_eq!(response.status(), 204);
    assert!(response.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn a_sighup_ends_the_sessions_of_a_changed_or_removed_token_and_keeps_the_others() {
    let db = TestDb::new();
    let file = db.dir.path().join("wfmd.toml");
    let write_config = |tokens: &[(&str, &str, &str)]| {
        let mut text = format!("[database]\nurl = \"{}\"\n", db.url());
        for (name, token, role) in tokens {
            text.push_str(&format!(
                "[[api_tokens]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nrole = \"{role}\"\n",
                sha256_hex(token)
            ));
        }
        std::fs::write(&file, text).unwrap();
    };
    write_config(&[
        ("desk", "wfmd_desk", "supervisor"),
        ("wall", "wfmd_wall", "viewer"),
        ("lead", "wfmd_lead", "admin"),
    ]);
    let config = file.display().to_string();
    let daemon = Daemon::spawn_with(
        &["--config", &config, "serve", "--simulate", "--agents", "5"],
        &[],
        None,
    )
    .await;
    let http = http_client();
    let open = async |token: &str| {
        let response = http
            .post(format!("{}/v1/session", daemon.address))
            .json(&json!({ "token": token }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        session_cookie(&response).0
    };
    let status_with = async |cookie: &str| {
        http.get(format!("{}/v1/live", daemon.address))
            .header("cookie", format!("wfmd_session={cookie}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let (desk, wall, lead) = (
        open("wfmd_desk").await,
        open("wfmd_wall").await,
        open("wfmd_lead").await,
    );
    for cookie in [&desk, &wall, &lead] {
        assert_eq!(status_with(cookie).await, 200);
    }
    // desk as it was; wall's token replaced; lead removed.
    write_config(&[
        ("desk", "wfmd_desk", "supervisor"),
        ("wall", "wfmd_wall-2", "viewer"),
    ]);
    daemon.signal("HUP");
    eventually(
        "the SIGHUP did not end the changed tokens' sessions",
        async || {
            let statuses = (
                status_with(&desk).await,
                status_with(&wall).await,
                status_with(&lead).await,
            );
            if statuses == (200, 401, 401) {
                Ok(())
            } else {
                Err(format!("{statuses:?}"))
            }
        },
    )
    .await;
    // The new token signs in; the removed one no more.
    assert_eq!(status_with(&open("wfmd_wall-2").await).await, 200);
    let refused = http
        .post(format!("{}/v1/session", daemon.address))
        .json(&json!({ "token": "wfmd_lead" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn among_several_tenants_a_session_holds_the_tenants_its_token_holds() {
    use crate::tenants::{Served, change_for, two_sims, two_tenants};

    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let desk = entry("alpha-desk", "wfmd_alpha-desk", "supervisor");
    let extra = format!(
        "[[api_tokens]]\nname = \"{}\"\ntoken_sha256 = \"{}\"\nrole = \"{}\"\n\
         tenants = [\"alpha\"]\n",
        desk.name, desk.token_sha256, desk.role
    );
    let served = Served::start(&two_tenants(&db, &alpha, &beta, &extra)).await;
    let http = http_client();
    // The unprefixed address signs in (a session is every tenant's alike), where other
    // /v1 routes would ask which tenant.
    let response = http
        .post(format!("{}/v1/session", served.address))
        .json(&json!({ "token": "wfmd_alpha-desk" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let (cookie, _) = session_cookie(&response);
    let change = |tenant: &str, sim: &TestSim| {
        let (agent, target) = change_for(sim);
        http.post(format!(
            "{}/v1/tenants/{tenant}/agents/{agent}/transitions",
            served.address
        ))
        .header("cookie", format!("wfmd_session={cookie}"))
        .json(&json!({ "state": target }))
        .send()
    };
    let own = change("alpha", &alpha).await.unwrap();
    assert_eq!(own.status(), 200, "{}", own.text().await.unwrap());
    let other = change("beta", &beta).await.unwrap();
    assert_eq!(
        other.status(),
        404,
        "as the token would be: beta is not its"
    );
}
