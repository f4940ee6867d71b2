//! The API's promises between tenants: jobs, the audit log, downloads and idempotency
//! keys belong to the tenant they were made in. Another tenant's path does not find
//! them, and a token that does not hold their tenant gets the 404 of a path no route
//! has.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestDb, TestSim, eventually, http_client};
use crate::tenants::{Served, change_for, two_sims, two_tenants};

/// Admin tokens: one per tenant, and one for both.
const ALPHA: &str = "wfmd_alpha-admin";
const BETA: &str = "wfmd_beta-admin";
const BOTH: &str = "wfmd_both-admin";
/// A viewer of beta's.
const BETA_VIEWER: &str = "wfmd_beta-viewer";

/// alpha and beta on their simulators, with [`ALPHA`], [`BETA`], [`BOTH`] and
/// [`BETA_VIEWER`].
async fn served(alpha: &TestSim, beta: &TestSim, db: &TestDb) -> Served {
    let mut extra = String::new();
    for (name, token, role, tenants) in [
        ("alpha-admin", ALPHA, "admin", "tenants = [\"alpha\"]"),
        ("beta-admin", BETA, "admin", "tenants = [\"beta\"]"),
        ("both-admin", BOTH, "admin", ""),
        ("beta-viewer", BETA_VIEWER, "viewer", "tenants = [\"beta\"]"),
    ] {
        let entry = crate::auth::entry(name, token, role);
        extra.push_str(&format!(
            "[[api_tokens]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nrole = \"{role}\"\n{tenants}\n",
            entry.token_sha256
        ));
    }
    Served::start(&two_tenants(db, alpha, beta, &extra)).await
}

/// `method path` as `token` (none: without a token): the status and the body's text.
async fn call(
    served: &Served,
    method: Method,
    path: &str,
    token: impl Into<Option<&str>>,
) -> (u16, String) {
    let mut request = http_client().request(method, format!("{}{path}", served.address));
    if let Some(token) = token.into() {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// What a problem says, without what differs per request (its instance).
fn said(body: &str) -> Value {
    let problem: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
    json!([
        problem["type"],
        problem["title"],
        problem["status"],
        problem["detail"]
    ])
}

/// The body of a 404 for a path no route has, as `token` gets it on its own tenant.
async fn unknown_route(served: &Served, tenant: &str, token: &str) -> Value {
    let (status, body) = call(
        served,
        Method::GET,
        &format!("/v1/tenants/{tenant}/nothing-here"),
        token,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    said(&body)
}

/// POSTs `body` to alpha's `route` as [`BOTH`]; the job id of the 202.
async fn job_on_alpha(served: &Served, route: &str, body: Value) -> String {
    let response = http_client()
        .post(format!("{}/v1/tenants/alpha/{route}", served.address))
        .bearer_auth(BOTH)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let job: Value = response.json().await.unwrap();
    job["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn jobs_audit_and_downloads_of_one_tenant_are_not_found_through_another() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let served = served(&alpha, &beta, &db).await;
    let agents: Vec<String> = alpha
        .free_agents()
        .into_iter()
        .take(2)
        .map(|a| a.id)
        .collect();
    let bulk = job_on_alpha(
        &served,
        "bulk-transitions",
        json!({"agents": agents, "state": "NOT_READY", "reason": "MEETING"}),
    )
    .await;
    let now = chrono::Utc::now();
    let query = job_on_alpha(
        &served,
        "analytics/queries",
        json!({"source": "history", "metrics": ["transitions:sum"],
               "from": wfmd::time::rfc3339(now - chrono::Duration::hours(2)),
               "to": wfmd::time::rfc3339(now + chrono::Duration::hours(1)),
               "bucket": "hour"}),
    )
    .await;
    let results = format!("analytics/queries/{query}/results");
    eventually("alpha's analytics job completes", || async {
        match call(
            &served,
            Method::GET,
            &format!("/v1/tenants/alpha/{results}"),
            BOTH,
        )
        .await
        {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let routes = [
        (Method::GET, format!("bulk-transitions/{bulk}")),
        (Method::DELETE, format!("bulk-transitions/{bulk}")),
        (Method::POST, format!("bulk-transitions/{bulk}/revert")),
        (Method::GET, format!("analytics/queries/{query}")),
        (Method::GET, results.clone()),
    ];
    // The same ids on beta's routes, by a token that holds both: beta has no such job.
    for (method, route) in &routes {
        let (status, body) = call(
            &served,
            method.clone(),
            &format!("/v1/tenants/beta/{route}"),
            BOTH,
        )
        .await;
        assert_eq!(status, 404, "{method} beta's {route}: {body}");
        assert!(body.contains("urn:wfmd:problem:"), "{body}");
    }
    let (_, listed) = call(
        &served,
        Method::GET,
        "/v1/tenants/beta/analytics/queries",
        BOTH,
    )
    .await;
    assert!(!listed.contains(&query), "beta lists alpha's job: {listed}");

    // alpha's routes for beta's token: no job, no audit log, no download, only the
    // answer of a path that does not exist.
    let unknown = unknown_route(&served, "beta", BETA).await;
    let alpha_routes = routes
        .iter()
        .cloned()
        .chain([
            (Method::GET, "audit".to_owned()),
            (Method::GET, "audit/verify".to_owned()),
        ])
        .collect::<Vec<_>>();
    for (method, route) in &alpha_routes {
        let (status, body) = call(
            &served,
            method.clone(),
            &format!("/v1/tenants/alpha/{route}"),
            BETA,
        )
        .await;
        assert_eq!(status, 404, "{method} alpha's {route} as beta: {body}");
        assert_eq!(said(&body), unknown, "{method} alpha's {route} as beta");
    }
    // Nor do they tell a tenant not held from one that is not there.
    assert_eq!(unknown_route(&served, "alpha", BETA).await, unknown);
    assert_eq!(unknown_route(&served, "gamma", BETA).await, unknown);

    // Each tenant's audit export is its own: alpha's names its job, beta's does not.
    let (status, alpha_audit) = call(&served, Method::GET, "/v1/tenants/alpha/audit", ALPHA).await;
    assert_eq!(status, 200, "{alpha_audit}");
    assert!(alpha_audit.contains(&query), "{alpha_audit}");
    let (status, beta_audit) = call(&served, Method::GET, "/v1/tenants/beta/audit", BETA).await;
    assert_eq!(status, 200, "{beta_audit}");
    assert!(
        !beta_audit.contains(&query) && !beta_audit.contains(&bulk),
        "{beta_audit}"
    );
    // alpha's own token still finds all of it.
    for (method, route) in [
        (Method::GET, format!("bulk-transitions/{bulk}")),
        (Method::GET, results),
    ] {
        let (status, body) = call(
            &served,
            method.clone(),
            &format!("/v1/tenants/alpha/{route}"),
            ALPHA,
        )
        .await;
        assert_eq!(status, 200, "{method} alpha's {route}: {body}");
    }
    assert_eq!(beta.changes(), 0, "nothing reached beta's platform");
    served.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_its_tenant() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let served = served(&alpha, &beta, &db).await;
    let change = |tenant: &'static str, (agent, state): (String, &'static str)| {
        let request = http_client()
            .post(format!(
                "{}/v1/tenants/{tenant}/agents/{agent}/transitions",
                served.address
            ))
            .bearer_auth(BOTH)
            .header("idempotency-key", "desk-42")
            .json(&json!({"state": state}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 200, "{tenant}: {body}");
            body
        }
    };
    let on_alpha = change_for(&alpha);
    let first = change("alpha", on_alpha.clone()).await;
    // Another agent under the same key: on one tenant a reused key (422); on another
    // tenant, a key of its own.
    let on_beta = change("beta", change_for(&beta)).await;
    assert_eq!(on_beta["replayed"], false, "{on_beta}");
    assert_eq!((alpha.changes(), beta.changes()), (1, 1));

    let replay = change("alpha", on_alpha).await;
    assert_eq!(replay["replayed"], true, "{replay}");
    assert_eq!(replay["attempt_id"], first["attempt_id"], "{replay}");
    assert_eq!(
        (alpha.changes(), beta.changes()),
        (1, 1),
        "the replay made no call"
    );
    served.stop().await;
}

#[tokio::test]
async fn a_tenant_not_held_answers_as_one_not_served_whoever_asks() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let served = served(&alpha, &beta, &db).await;
    let (agent, _) = change_for(&alpha);
    // An admin route, a supervisor's change and a viewer's read, each asked of alpha
    // (served, not held by these callers) and of gamma (not served).
    let routes = [
        (Method::GET, "audit".to_owned()),
        (Method::POST, format!("agents/{agent}/transitions")),
        (Method::GET, format!("agents/{agent}/history")),
    ];
    for token in [
        None,
        Some("wfmd_not-a-token"),
        Some(BETA_VIEWER),
        Some(BETA),
    ] {
        for (method, route) in &routes {
            let answer = async |tenant: &str| {
                let path = format!("/v1/tenants/{tenant}/{route}");
                let (status, body) = call(&served, method.clone(), &path, token).await;
                (status, said(&body))
            };
            let (held_elsewhere, nowhere) = (answer("alpha").await, answer("gamma").await);
            assert_eq!(
                held_elsewhere, nowhere,
                "{method} {route} as {token:?}: alpha is told apart from gamma"
            );
            let expected = if token.is_some_and(|t| t.starts_with("wfmd_beta")) {
                404
            } else {
                401
            };
            assert_eq!(nowhere.0, expected, "{method} {route} as {token:?}");
        }
    }
    assert_eq!(alpha.changes(), 0);
    served.stop().await;
}
