//! What a caller without a token learns where tokens are configured: whether wfmd is
//! ready, and nothing of which tenants it serves or why one is not ready; a token's
//! holder, only of the tenants it holds. `/metrics`, once `server.metrics_token` is set,
//! only with it.

use serde_json::{Value, json};
use wfmd::telemetry::names::HTTP_CONNECTIONS;

use crate::auth::entry;
use crate::helpers::{TestApp, TestDb, TestSim, http_client};
use crate::tenants::{Served, two_sims, two_tenants};

/// A token holding alpha alone, one holding beta alone, and one holding both.
const ALPHA: &str = "wfmd_alpha-viewer";
const BETA: &str = "wfmd_beta-viewer";
const BOTH: &str = "wfmd_both-viewer";

/// alpha and beta, with [`ALPHA`], [`BETA`] and [`BOTH`].
async fn served(alpha: &TestSim, beta: &TestSim, db: &TestDb) -> Served {
    let mut config = two_tenants(db, alpha, beta, "");
    config.api_tokens = [
        ("alpha", ALPHA, Some("alpha")),
        ("beta", BETA, Some("beta")),
    ]
    .into_iter()
    .chain([("both", BOTH, None)])
    .map(|(name, token, tenant)| {
        let mut entry = entry(name, token, "viewer");
        entry.tenants = tenant.map(|t| vec![t.parse().unwrap()]);
        entry
    })
    .collect();
    Served::start(&config).await
}

/// `GET path` on `served` as `token` (none: without one): the status and the body.
async fn get(served: &Served, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = http_client().get(format!("{}{path}", served.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_stranger_learns_only_readiness_and_a_token_the_details_of_the_tenants_it_holds() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let served = served(&alpha, &beta, &db).await;
    // beta's platform is gone: wfmd is not ready, and beta's check says why.
    drop(beta);
    let readiness = async |token: Option<&str>| {
        let (status, body) = get(&served, "/readyz", token).await;
        assert_eq!(status, 503, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };

    let nobody = json!({"status": "unavailable"});
    assert_eq!(readiness(None).await, nobody);
    assert_eq!(
        readiness(Some("wfmd_not-a-token")).await,
        nobody,
        "a wrong token is nobody"
    );

    let body = readiness(Some(ALPHA)).await;
    let tenants = body["tenants"].as_object().unwrap();
    assert_eq!(tenants.keys().collect::<Vec<_>>(), ["alpha"], "{body}");
    assert_eq!(tenants["alpha"]["status"], "ready", "{body}");

    let body = readiness(Some(BETA)).await;
    let tenants = body["tenants"].as_object().unwrap();
    assert_eq!(tenants.keys().collect::<Vec<_>>(), ["beta"], "{body}");
    let platform = tenants["beta"]["platform"].as_str().unwrap();
    assert!(platform.starts_with("unavailable: "), "the error: {body}");

    let body = readiness(Some(BOTH)).await;
    let tenants = body["tenants"].as_object().unwrap();
    assert_eq!(
        tenants.keys().collect::<Vec<_>>(),
        ["alpha", "beta"],
        "{body}"
    );
    served.stop().await;
}

#[tokio::test]
async fn with_tokens_a_stranger_gets_the_same_wallboard_page_for_every_tenant_id() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let served = served(&alpha, &beta, &db).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = async |path: &str, token: Option<&str>| {
        let mut request = http.get(format!("{}{path}", served.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        (status, location, response.text().await.unwrap())
    };

    // A browser opening a board sends no token: served or not, the same page (which
    // only writes the id of its own address into its links).
    let (status, _, page) = get("/t/alpha/", None).await;
    assert_eq!(status, 200);
    for (path, tenant) in [
        ("/t/beta/", "beta"),
        ("/t/gamma/", "gamma"),
        ("/t/no-such-tenant/", "no-such-tenant"),
    ] {
        let (status, _, body) = get(path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            body.replace(tenant, "alpha") == page,
            "{path}: another page"
        );
    }
    for (path, to) in [("/t/beta", "/t/beta/"), ("/t/gamma", "/t/gamma/")] {
        let (status, location, _) = get(path, None).await;
        assert_eq!((status, location.as_deref()), (308, Some(to)), "{path}");
    }
    // An id no tenant could have is refused, served tenants or not.
    assert_eq!(get("/t/Alpha/", None).await.0, 404);

    // A token's holder is told what the API would tell it.
    assert_eq!(get("/t/alpha/", Some(ALPHA)).await.0, 200);
    for (path, token) in [("/t/beta/", ALPHA), ("/t/beta", ALPHA), ("/t/gamma/", BOTH)] {
        let (status, _, body) = get(path, Some(token)).await;
        assert_eq!(status, 404, "{path} {token}: {body}");
    }
    served.stop().await;
}

/// The console's pages under a tenant's address, `{}` the tenant.
const CONSOLE_PAGES: [&str; 8] = [
    "/t/{}/rta",
    "/t/{}/agents/u_001",
    "/t/{}/jobs",
    "/t/{}/exceptions",
    "/t/{}/reports",
    "/t/{}/sign-in",
    "/t/{}/sign-out",
    "/t/{}/",
];

#[tokio::test]
async fn with_tokens_a_stranger_gets_the_same_console_pages_for_every_tenant_id() {
    let (alpha, beta) = two_sims().await;
    let db = TestDb::new();
    let served = served(&alpha, &beta, &db).await;
    for page in CONSOLE_PAGES {
        let at = |tenant: &str| page.replace("{}", tenant);
        // A browser not signed in sends no credential: served or not, the same page.
        let (status, first) = get(&served, &at("alpha"), None).await;
        assert_eq!(status, 200, "{page}: {first}");
        for tenant in ["beta", "gamma", "no-such-tenant"] {
            let (status, body) = get(&served, &at(tenant), None).await;
            assert_eq!(status, 200, "{}: {body}", at(tenant));
            // Only the tenant's own name in the page's addresses differs.
            assert_eq!(
                body.replace(tenant, "alpha"),
                first,
                "{}: another page",
                at(tenant)
            );
        }
        assert_eq!(get(&served, &at("Alpha"), None).await.0, 404, "{page}");
        // A caller the API knows is told what the API would tell it.
        assert_eq!(
            get(&served, &at("alpha"), Some(ALPHA)).await.0,
            200,
            "{page}"
        );
        for (tenant, token) in [("beta", ALPHA), ("gamma", BOTH)] {
            let (status, body) = get(&served, &at(tenant), Some(token)).await;
            assert_eq!(status, 404, "{} {token}: {body}", at(tenant));
        }
    }
    served.stop().await;
}

#[tokio::test]
async fn once_a_metrics_token_is_set_metrics_answers_only_a_scraper_presenting_it() {
    const SCRAPER: &str = "scrape-0123456789abcdef";
    let app = TestApp::spawn_with(TestSim::default_tenant().await, |config| {
        config.server.metrics_token = Some(SCRAPER.to_owned().into());
        config.api_tokens = vec![entry("ops", "wfmd_ops", "admin")];
    })
    .await;
    let metrics = async |token: Option<&str>| {
        let mut request = app.http.get(format!("{}/metrics", app.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    };
    for token in [None, Some("scrape-wrong"), Some("wfmd_ops")] {
        let response = metrics(token).await;
        assert_eq!(response.status(), 401, "{token:?}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{token:?}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"], "urn:wfmd:problem:unauthorized",
            "{token:?}"
        );
    }
    let response = metrics(Some(SCRAPER)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains(HTTP_CONNECTIONS), "{text}");
    // The probes stay open.
    assert_eq!(app.get("/healthz").await.status(), 200);
}
