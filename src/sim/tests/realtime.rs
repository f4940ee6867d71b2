//! The real-time side: subscriptions over HTTP (create, poll, delete, interval, spacing,
//! expiry, metrics, filters), the time-scaled clock, and the agents' own activity
//! (contacts, breaks, shifts, determinism, cost at 2,000 agents).

use std::collections::BTreeSet;

use super::*;

const SUBSCRIPTION: &str = "/api/v2/analytics/realtime/subscription";

const ALL_METRICS: [&str; 7] = [
    "userId",
    "userName",
    "agentState",
    "queueName",
    "wrapUpCode",
    "statusChangedTimestamp",
    "teamName",
];

fn subscription_body(interval: u64, metrics: &[&str], users: Option<&[&str]>) -> Value {
    let mut view = json!({"id": "users", "metrics": metrics});
    if let Some(users) = users {
        view["filter"] = json!({ "userId": users });
    }
    json!({"name": "wfmd", "interval": interval, "view": view})
}

impl Harness {
    async fn subscribe_with(&self, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.api(SUBSCRIPTION))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a subscription and returns its id.
    async fn subscribe(&self, token: &str, body: &Value) -> String {
        let res = self.subscribe_with(token, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        body["subscriptionId"].as_str().unwrap().to_owned()
    }

    async fn poll(&self, token: &str, id: &str) -> reqwest::Response {
        self.get_with(token, &format!("{SUBSCRIPTION}/{id}")).await
    }

    async fn poll_json(&self, token: &str, id: &str) -> Value {
        self.get_json(token, &format!("{SUBSCRIPTION}/{id}")).await
    }

    async fn unsubscribe(&self, token: &str, id: &str) -> reqwest::Response {
        self.http
            .delete(self.api(&format!("{SUBSCRIPTION}/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

fn user_ids(poll: &Value) -> Vec<String> {
    poll["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["userId"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------- subscriptions

#[tokio::test]
async fn subscription_is_created_polled_and_deleted() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let before = h.sim().clock().now();
    let res = h
        .subscribe_with(
            &token,
            &subscription_body(15_000, &ALL_METRICS, Some(&["u_004", "u_003"])),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let id = created["subscriptionId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sub_"), "{id}");
    assert_eq!(created["status"], "active");
    assert_eq!(created["interval"], 15_000);
    let expires = time(&created["expiresAt"]);
    assert!(expires >= before + TimeDelta::hours(24));
    assert!(expires <= h.sim().clock().now() + TimeDelta::hours(24));

    let poll = h.poll_json(&token, &id).await;
    assert_eq!(poll["subscriptionId"], id.as_str());
    assert_eq!(poll["status"], "active");
    let updated = time(&poll["lastUpdatedTimestamp"]);
    assert!(updated >= before && updated <= h.sim().clock().now());
    // Sorted by userId whatever the filter's order.
    assert_eq!(user_ids(&poll), ["u_003", "u_004"]);
    let truth = h.sim().agent("u_004").unwrap();
    let row = &poll["data"][1];
    assert_eq!(row["userName"], truth.name.as_str());
    assert_eq!(row["agentState"], truth.state.as_str());
    assert_eq!(row["teamName"], truth.team_name.as_str());
    assert_eq!(time(&row["statusChangedTimestamp"]), truth.changed_at);
    assert!(row["queueName"].is_null() && row["wrapUpCode"].is_null());
    // u_003 is on a contact from the start: it has a queue, and no wrap-up yet.
    let on_contact = &poll["data"][0];
    assert_eq!(on_contact["agentState"], "ON_CONTACT");
    assert!(on_contact["queueName"].is_string());
    assert!(on_contact["wrapUpCode"].is_null());

    let res = h.unsubscribe(&token, &id).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, body) = error_body(h.poll(&token, &id).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    let res = h.unsubscribe(&token, &id).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let subs = h.sim().subscriptions();
    assert_eq!(subs.len(), 1);
    let sub = &subs[0];
    assert_eq!(sub.id, id);
    assert_eq!(sub.name, "wfmd");
    assert_eq!(sub.interval, Duration::from_secs(15));
    assert_eq!(sub.expires_at, expires);
    assert_eq!(sub.expires_at - sub.created_at, TimeDelta::hours(24));
    assert_eq!(sub.polls, 1);
    assert!(sub.deleted);
    assert_eq!(
        sub.user_filter.as_deref(),
        Some(&["u_003".to_owned(), "u_004".to_owned()][..])
    );
}

#[tokio::test]
async fn subscription_routes_are_counted_per_route_and_need_a_token() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let id = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    h.poll_json(&token, &id).await;
    assert_eq!(h.poll(&token, &id).await.status(), 429);
    assert_eq!(h.poll("bogus", &id).await.status(), 401);
    assert_eq!(h.unsubscribe(&token, &id).await.status(), 204);
    let res = h
        .subscribe_with("bogus", &subscription_body(10_000, &["agentState"], None))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let stats = h.sim().stats();
    assert_eq!(stats.api_requests, 6);
    assert_eq!(stats.unauthorized, 2);
    let route = |k: &str| stats.by_route.get(k).copied().unwrap_or(0);
    assert_eq!(route("POST /api/v2/analytics/realtime/subscription"), 2);
    assert_eq!(
        route("GET /api/v2/analytics/realtime/subscription/{subscriptionId}"),
        3
    );
    assert_eq!(
        route("DELETE /api/v2/analytics/realtime/subscription/{subscriptionId}"),
        1
    );
    // Only the successful poll counts as a poll of the subscription.
    assert_eq!(h.sim().subscriptions()[0].polls, 1);
}

#[tokio::test]
async fn subscription_polls_spend_the_tenant_budget() {
    let h = harness(SimConfig {
        requests_per_minute: 60,
        ..SimConfig::default()
    })
    .await;
    let token = h.token().await;
    let id = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    h.poll_json(&token, &id).await;
    // The burst of two is spent: the next call is refused by the budget, not the spacing.
    h.sim().clock().advance(Duration::from_secs(10));
    let res = h.poll(&token, &id).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h.sim().stats().rate_limited, 1);
}

#[tokio::test]
async fn interval_below_ten_seconds_is_400_naming_interval() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let res = h
        .subscribe_with(&token, &subscription_body(9_999, &["agentState"], None))
        .await;
    let (status, body) = error_body(res).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["message"].as_str().unwrap().contains("interval"),
        "{body}"
    );

    for bad in [
        json!({"name": "x", "view": {"id": "users", "metrics": ["userId"]}}),
        json!({"name": "x", "interval": "10000", "view": {"id": "users", "metrics": ["userId"]}}),
        json!({"name": "x", "interval": -5, "view": {"id": "users", "metrics": ["userId"]}}),
    ] {
        let (status, body) = error_body(h.subscribe_with(&token, &bad).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            body["message"].as_str().unwrap().contains("interval"),
            "{body}"
        );
    }
    for bad in [
        json!({"interval": 10000}),
        json!({"interval": 10000, "view": {"id": "queues", "metrics": ["userId"]}}),
        json!({"interval": 10000, "view": {"id": "users"}}),
        json!({"interval": 10000, "view": {"id": "users", "metrics": ["mood"]}}),
    ] {
        let res = h.subscribe_with(&token, &bad).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let res = h
        .http
        .post(h.api(SUBSCRIPTION))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(h.sim().subscriptions().is_empty());
    // Exactly the minimum is fine.
    h.subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
}

#[tokio::test]
async fn filter_selects_agents_and_absent_filter_means_everyone() {
    let h = harness(SimConfig {
        agents: 30,
        ..unlimited()
    })
    .await;
    let token = h.token().await;
    let everyone = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    let poll = h.poll_json(&token, &everyone).await;
    let all: Vec<String> = h.sim().agents().into_iter().map(|a| a.id).collect();
    assert_eq!(all.len(), 30);
    assert_eq!(user_ids(&poll), all);

    let some = h
        .subscribe(
            &token,
            &subscription_body(
                10_000,
                &["agentState"],
                Some(&["u_012", "u_999", "u_002", "u_012", "nobody"]),
            ),
        )
        .await;
    let poll = h.poll_json(&token, &some).await;
    // Unknown ids are ignored, duplicates collapse.
    assert_eq!(user_ids(&poll), ["u_002", "u_012"]);

    let none = h
        .subscribe(
            &token,
            &subscription_body(10_000, &["agentState"], Some(&[])),
        )
        .await;
    let poll = h.poll_json(&token, &none).await;
    assert!(poll["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn only_the_requested_metrics_are_present_and_user_id_always() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let keys =
        |row: &Value| -> BTreeSet<String> { row.as_object().unwrap().keys().cloned().collect() };
    let id = h
        .subscribe(
            &token,
            &subscription_body(10_000, &["agentState", "queueName"], Some(&["u_003"])),
        )
        .await;
    let poll = h.poll_json(&token, &id).await;
    assert_eq!(
        keys(&poll["data"][0]),
        BTreeSet::from(["userId", "agentState", "queueName"].map(String::from))
    );

    let id = h
        .subscribe(
            &token,
            &subscription_body(10_000, &ALL_METRICS, Some(&["u_003"])),
        )
        .await;
    let poll = h.poll_json(&token, &id).await;
    assert_eq!(
        keys(&poll["data"][0]),
        BTreeSet::from(ALL_METRICS.map(String::from))
    );

    let id = h
        .subscribe(&token, &subscription_body(10_000, &[], Some(&["u_003"])))
        .await;
    let poll = h.poll_json(&token, &id).await;
    assert_eq!(
        keys(&poll["data"][0]),
        BTreeSet::from(["userId".to_owned()])
    );
}

#[tokio::test]
async fn polling_faster_than_the_interval_is_429_until_the_clock_moves() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let id = h
        .subscribe(&token, &subscription_body(12_500, &["agentState"], None))
        .await;
    // The first poll may come at once.
    h.poll_json(&token, &id).await;
    let res = h.poll(&token, &id).await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // 12.5 s minus the few milliseconds the calls took, rounded up.
    assert_eq!(retry_after, 13);
    let (status, body) = error_body(res).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["message"].as_str().unwrap().contains("interval"));

    h.sim().clock().advance(Duration::from_secs(12));
    let res = h.poll(&token, &id).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "1");

    h.sim().clock().advance(Duration::from_millis(500));
    h.poll_json(&token, &id).await;
    // Spacing counts from the last successful poll, not from refused ones.
    let res = h.poll(&token, &id).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h.sim().subscriptions()[0].polls, 2);
    assert_eq!(
        h.sim().stats().polls_too_early,
        3,
        "each refusal is counted"
    );

    // Each subscription keeps its own spacing.
    let other = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    h.poll_json(&token, &other).await;
}

#[tokio::test]
async fn subscription_expires_after_24_hours_of_sim_time() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let id = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    let created = h.sim().subscriptions()[0].created_at;
    h.sim().clock().advance(Duration::from_secs(23 * 3600));
    // Tokens live an hour of sim time: a client renews its token too.
    let token = h.token().await;
    h.poll_json(&token, &id).await;

    let left = (created + TimeDelta::hours(24) - h.sim().clock().now())
        .to_std()
        .unwrap();
    h.sim().clock().advance(left);
    let token = h.token().await;
    let (status, _) = error_body(h.poll(&token, &id).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.unsubscribe(&token, &id).await.status(), 404);
    let sub = &h.sim().subscriptions()[0];
    assert!(!sub.deleted);
    assert_eq!(sub.polls, 1);
    // A new subscription works as before.
    let renewed = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    h.poll_json(&token, &renewed).await;
}

#[tokio::test]
async fn expire_subscriptions_makes_every_live_one_404() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let a = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    let b = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    h.poll_json(&token, &a).await;
    h.sim().expire_subscriptions();
    for id in [&a, &b] {
        assert_eq!(h.poll(&token, id).await.status(), StatusCode::NOT_FOUND);
    }
    let now = h.sim().clock().now();
    assert!(h.sim().subscriptions().iter().all(|s| s.expires_at <= now));
    let c = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    h.poll_json(&token, &c).await;
}

#[tokio::test]
async fn control_endpoints_list_and_expire_subscriptions_without_counting() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let id = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    let listed: Value = h
        .http
        .get(h.root("/_sim/subscriptions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["deleted"], false);
    let res = h
        .http
        .post(h.root("/_sim/expire-subscriptions"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.poll(&token, &id).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(h.sim().stats().api_requests, 2);
}

#[tokio::test]
async fn unknown_subscription_is_404() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let (status, body) = error_body(h.poll(&token, "sub_nope").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["message"].as_str().unwrap().contains("sub_nope"));
    assert_eq!(h.unsubscribe(&token, "sub_nope").await.status(), 404);
}

#[tokio::test]
async fn subscription_shows_state_changes_with_queue_and_wrap_up() {
    let h = harness(unlimited()).await;
    let token = h.token().await;
    let id = h
        .subscribe(
            &token,
            &subscription_body(10_000, &ALL_METRICS, Some(&["u_004"])),
        )
        .await;
    assert!(h.sim().force_state("u_004", "ON_CONTACT", ""));
    let row = h.poll_json(&token, &id).await["data"][0].clone();
    assert_eq!(row["agentState"], "ON_CONTACT");
    let queue = row["queueName"].as_str().unwrap().to_owned();
    assert!(row["wrapUpCode"].is_null());

    assert!(h.sim().force_state("u_004", "ACW", ""));
    h.sim().clock().advance(Duration::from_secs(10));
    let row = h.poll_json(&token, &id).await["data"][0].clone();
    assert_eq!(row["agentState"], "ACW");
    assert_eq!(row["queueName"], queue.as_str(), "wrap-up keeps the queue");
    assert!(row["wrapUpCode"].is_string());
    let truth = h.sim().agent("u_004").unwrap();
    assert_eq!(truth.wrap_up_code.as_deref(), row["wrapUpCode"].as_str());
    assert_eq!(
        truth.state_log.last().unwrap().queue.as_deref(),
        Some(queue.as_str())
    );

    let res = h
        .post_state(&token, "u_004", json!({"state": "READY"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    h.sim().clock().advance(Duration::from_secs(10));
    let row = h.poll_json(&token, &id).await["data"][0].clone();
    assert_eq!(row["agentState"], "READY");
    assert!(row["queueName"].is_null() && row["wrapUpCode"].is_null());
}

// ---------------------------------------------------------------- time scale

#[tokio::test]
async fn time_scale_runs_tokens_schedules_and_poll_spacing_faster() {
    // Ten simulated hours per real second.
    let h = harness(SimConfig {
        time_scale: 36_000.0,
        ..unlimited()
    })
    .await;
    let wall = Instant::now();
    let deadline = Duration::from_secs(5);

    // A token lives an hour of simulated time: a tenth of a real second.
    let token = h.token().await;
    while h
        .get_with(&token, "/api/v2/users/u_001/state")
        .await
        .status()
        != 401
    {
        assert!(wall.elapsed() < deadline, "token never expired");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // u_001 starts its shift one to four simulated hours from creation.
    let off = h.sim().agent("u_001").unwrap();
    loop {
        let token = h.token().await;
        let body = h.get_json(&token, "/api/v2/schedules/users/u_001").await;
        if body["status"] == "ACTIVE" {
            break;
        }
        assert!(wall.elapsed() < deadline, "shift never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h.sim().clock().now() >= off.shift_start);

    // Poll spacing is simulated too, and Retry-After is in real seconds.
    let token = h.token().await;
    let id = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    let mut polls = 0;
    while polls < 3 {
        let token = h.token().await;
        let res = h.poll(&token, &id).await;
        match res.status() {
            StatusCode::OK => polls += 1,
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(res.headers()["retry-after"], "1"),
            other => panic!("poll answered {other}"),
        }
        assert!(wall.elapsed() < deadline, "polls stayed refused");
    }
    assert!(h.sim().clock().time_scale() == 36_000.0);
}

#[tokio::test]
async fn frozen_clock_starts_where_told_and_moves_only_when_advanced() {
    let start: DateTime<Utc> = "2026-11-20T14:30:00Z".parse().unwrap();
    let h = harness(SimConfig {
        time_scale: 0.0,
        start_at: Some(start),
        ..unlimited()
    })
    .await;
    let token = h.token().await;
    let id = h
        .subscribe(&token, &subscription_body(10_000, &["agentState"], None))
        .await;
    let poll = h.poll_json(&token, &id).await;
    assert_eq!(time(&poll["lastUpdatedTimestamp"]), start);
    let res = h.poll(&token, &id).await;
    assert_eq!(res.headers()["retry-after"], "10");
    h.sim().clock().advance(Duration::from_secs(10));
    let poll = h.poll_json(&token, &id).await;
    assert_eq!(
        time(&poll["lastUpdatedTimestamp"]),
        start + TimeDelta::seconds(10)
    );
    assert_eq!(
        h.sim().subscriptions()[0].expires_at,
        start + TimeDelta::hours(24)
    );
}

// ---------------------------------------------------------------- agent activity

fn start() -> DateTime<Utc> {
    "2026-11-20T14:30:00Z".parse().unwrap()
}

/// A tenant whose agents act on their own, on a clock that moves only when advanced.
fn lively(agents: usize, seed: u64) -> SimConfig {
    SimConfig {
        agents,
        seed,
        activity: true,
        time_scale: 0.0,
        start_at: Some(start()),
        ..unlimited()
    }
}

fn minutes(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

fn within(d: TimeDelta, lo: TimeDelta, hi: TimeDelta) -> bool {
    lo <= d && d <= hi
}

/// Moves the clock to `t` (which must not be in the past).
fn advance_to(sim: &Simulator, t: DateTime<Utc>) {
    sim.clock()
        .advance((t - sim.clock().now()).to_std().expect("t is ahead"));
}

fn states(log: &[SimStateChange]) -> Vec<&str> {
    log.iter().map(|c| c.state.as_str()).collect()
}

#[tokio::test]
async fn ready_agents_take_contacts_with_queue_and_wrap_up_over_sim_time() {
    let h = harness(lively(10, 1)).await;
    let token = h.token().await;
    let id = h
        .subscribe(
            &token,
            &subscription_body(10_000, &ALL_METRICS, Some(&["u_004"])),
        )
        .await;
    let initial = h.sim().agent("u_004").unwrap();
    assert_eq!(initial.state, "READY");

    // Step ten seconds at a time until the subscription shows u_004 on a contact.
    let mut seen = None;
    for _ in 0..40 {
        h.sim().clock().advance(Duration::from_secs(10));
        let row = h.poll_json(&token, &id).await["data"][0].clone();
        if row["agentState"] == "ON_CONTACT" {
            seen = Some(row);
            break;
        }
    }
    let row = seen.expect("a READY agent gets a contact within five minutes");
    let queue = row["queueName"].as_str().unwrap();
    assert!(
        ["Support-T1", "Support-T2", "Billing", "Sales", "Retention"].contains(&queue),
        "{queue}"
    );
    assert!(row["wrapUpCode"].is_null());
    let truth = h.sim().agent("u_004").unwrap();
    assert_eq!(time(&row["statusChangedTimestamp"]), truth.changed_at);
    assert_eq!(truth.queue.as_deref(), Some(queue));
    // The platform's own rule applies to contacts the simulator started.
    let res = h
        .post_state(&token, "u_004", json!({"state": "NOT_READY"}))
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let state = h.get_json(&token, "/api/v2/users/u_004/state").await;
    assert_eq!(state["agentState"], "ON_CONTACT");

    // Half an hour on, the whole cycle is in the ground truth with realistic timings.
    h.sim().clock().advance(Duration::from_secs(30 * 60));
    let log = h.sim().agent("u_004").unwrap().state_log;
    assert!(log.len() >= 4, "{:?}", states(&log));
    assert_eq!(states(&log[..4]), ["READY", "ON_CONTACT", "ACW", "READY"]);
    for pair in log.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let took = b.at - a.at;
        match (a.state.as_str(), b.state.as_str()) {
            // The first READY began before the tenant was created.
            ("READY", "ON_CONTACT") => {
                let waited = b.at - a.at.max(start());
                assert!(
                    within(waited, TimeDelta::seconds(30), minutes(5)),
                    "{waited}"
                );
            }
            ("ON_CONTACT", "ACW") => {
                assert!(within(took, minutes(2), minutes(8)), "{took}");
                assert_eq!(a.queue, b.queue, "wrap-up keeps the contact's queue");
                assert!(b.queue.is_some());
            }
            ("ACW", "READY") => {
                assert!(within(took, TimeDelta::seconds(30), TimeDelta::seconds(90)));
                assert!(a.wrap_up_code.is_some());
                assert!(b.queue.is_none() && b.wrap_up_code.is_none());
            }
            other => panic!("unexpected change {other:?} in {:?}", states(&log)),
        }
        assert!(a.at <= b.at, "the log is in time order");
    }
    let codes: Vec<&str> = log
        .iter()
        .filter_map(|c| c.wrap_up_code.as_deref())
        .collect();
    assert!(
        codes
            .iter()
            .all(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
    );
}

#[test]
fn breaks_and_shift_boundaries_change_states_on_schedule() {
    let sim = Simulator::new(lively(20, 3));
    let before = sim.agents();
    let t0 = start();

    // u_001 is off shift: logged in exactly at shift start.
    let off = &before[0];
    assert_eq!(off.state, "LOGGED_OUT");
    // u_002 sits in a mandatory break: back READY exactly at its end.
    let in_break = &before[1];
    let brk = in_break
        .current_or_next_mandatory_break(t0)
        .unwrap()
        .clone();
    // u_004 works with a lunch ahead.
    let worker = &before[3];
    let lunch = worker
        .breaks
        .iter()
        .find(|b| b.kind == "LUNCH")
        .unwrap()
        .clone();

    let end = worker.shift_end.max(off.shift_start) + minutes(15);
    advance_to(&sim, end);
    let after = sim.agents();

    let logged_in = after[0]
        .state_log
        .iter()
        .find(|c| c.at > t0)
        .expect("logs in");
    assert_eq!(
        (
            logged_in.at,
            logged_in.state.as_str(),
            logged_in.reason.as_str()
        ),
        (off.shift_start, "READY", "WORKING")
    );
    let back = &after[1].state_log[1];
    assert_eq!((back.at, back.state.as_str()), (brk.end, "READY"));

    let log = &after[3].state_log;
    let went = log
        .iter()
        .position(|c| c.state == "NOT_READY" && c.reason == "LUNCH")
        .expect("goes to lunch");
    // On time, or as soon as the contact in progress is wrapped up.
    assert!(log[went].at >= lunch.start);
    if log[went].at > lunch.start {
        assert_eq!(log[went - 1].state, "ACW", "{:?}", states(log));
        assert!(log[went].at - lunch.start <= minutes(8) + TimeDelta::seconds(90));
    }
    let returned = &log[went + 1];
    assert_eq!(
        (returned.at, returned.state.as_str()),
        (lunch.end, "READY"),
        "no contact during lunch, READY at its end"
    );
    let last = log.last().unwrap();
    assert_eq!(last.state, "LOGGED_OUT");
    assert!(last.at >= worker.shift_end);
    assert!(last.at - worker.shift_end <= minutes(8) + TimeDelta::seconds(90));
    assert!(log.iter().all(|c| c.at <= last.at));
    // Nothing happens after the shift.
    let settled = log.len();
    advance_to(&sim, end + TimeDelta::hours(6));
    assert_eq!(sim.agent("u_004").unwrap().state_log.len(), settled);
}

#[tokio::test]
async fn posted_not_ready_agent_gets_no_contact_until_its_next_scheduled_activity() {
    let h = harness(lively(10, 1)).await;
    let token = h.token().await;
    let worker = h.sim().agent("u_004").unwrap();
    assert_eq!(worker.state, "READY");
    let first_break = worker.breaks.iter().map(|b| b.start).min().unwrap();
    let res = h
        .post_state(
            &token,
            "u_004",
            json!({"state": "NOT_READY", "reasonCode": "MEETING"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    advance_to(h.sim(), first_break - TimeDelta::seconds(1));
    let token = h.token().await;
    let state = h.get_json(&token, "/api/v2/users/u_004/state").await;
    assert_eq!(state["agentState"], "NOT_READY");
    assert_eq!(state["reasonCode"], "MEETING");
    let log = h.sim().agent("u_004").unwrap().state_log;
    assert_eq!(states(&log), ["READY", "NOT_READY"]);

    // The break is the next scheduled activity; its end brings contacts back.
    let brk = worker
        .breaks
        .iter()
        .find(|b| b.start == first_break)
        .unwrap();
    advance_to(h.sim(), brk.end + minutes(20));
    let log = h.sim().agent("u_004").unwrap().state_log;
    assert_eq!(log[2].at, brk.start);
    assert_eq!(
        (log[2].state.as_str(), log[2].reason.as_str()),
        ("NOT_READY", brk.kind.as_str())
    );
    assert_eq!((log[3].at, log[3].state.as_str()), (brk.end, "READY"));
    assert_eq!(log[4].state, "ON_CONTACT", "{:?}", states(&log));

    // Moved READY by a caller, an idle agent starts receiving contacts.
    let idle = h.sim().agent("u_006").unwrap();
    assert_eq!(idle.state, "IDLE");
    let token = h.token().await;
    h.post_state(&token, "u_006", json!({"state": "READY"}))
        .await;
    h.sim().clock().advance(Duration::from_secs(5 * 60));
    let log = h.sim().agent("u_006").unwrap().state_log;
    assert_eq!(states(&log)[1..3], ["READY", "ON_CONTACT"]);
}

/// Every agent's log, the part the seed and the clock decide.
fn all_logs(sim: &Simulator) -> Vec<(String, Vec<SimStateChange>)> {
    sim.agents()
        .into_iter()
        .map(|a| (a.id, a.state_log))
        .collect()
}

#[test]
fn same_seed_and_same_advances_give_identical_state_logs_however_often_read() {
    let a = Simulator::new(lively(60, 7));
    let b = Simulator::new(lively(60, 7));
    let c = Simulator::new(lively(60, 8));
    // `a` is read every 7 s, `b` only at the changes from outside, `c` at the end.
    let mut t = start();
    let end = start() + TimeDelta::hours(3);
    while t < end {
        t += TimeDelta::seconds(7);
        a.clock().advance(Duration::from_secs(7));
        b.clock().advance(Duration::from_secs(7));
        c.clock().advance(Duration::from_secs(7));
        a.agents();
        if t == start() + TimeDelta::seconds(7 * 300) {
            for sim in [&a, &b, &c] {
                sim.force_state("u_005", "NOT_READY", "MEETING");
                sim.force_state("u_016", "READY", "");
            }
        }
    }
    let (la, lb, lc) = (all_logs(&a), all_logs(&b), all_logs(&c));
    assert_eq!(la, lb);
    assert_ne!(la, lc);
    let changes: usize = la.iter().map(|(_, log)| log.len() - 1).sum();
    assert!(
        changes > 300,
        "{changes} changes in three hours of 60 agents"
    );
    assert_eq!(a.activities_applied(), b.activities_applied());
}

#[test]
fn a_state_log_limit_keeps_only_the_newest_entries_and_changes_nothing_else() {
    let full = Simulator::new(lively(30, 3));
    let capped = Simulator::new(SimConfig {
        state_log_limit: Some(2),
        ..lively(30, 3)
    });
    let end = start() + TimeDelta::hours(3);
    for sim in [&full, &capped] {
        advance_to(sim, end);
        sim.force_state("u_004", "NOT_READY", "MEETING");
    }
    let (full, capped) = (all_logs(&full), all_logs(&capped));
    assert!(
        full.iter().any(|(_, log)| log.len() > 2),
        "three hours of activity log more than two changes for someone"
    );
    for ((id, whole), (_, kept)) in full.iter().zip(&capped) {
        let newest = &whole[whole.len().saturating_sub(2)..];
        assert_eq!(kept.as_slice(), newest, "{id}");
    }
}

#[test]
fn run_until_applies_everything_due_without_moving_the_clock() {
    let a = Simulator::new(lively(40, 11));
    let b = Simulator::new(lively(40, 11));
    let target = start() + TimeDelta::minutes(90);
    a.run_until(target);
    assert_eq!(a.clock().now(), start());
    advance_to(&b, target);
    b.run_until(target);
    assert_eq!(a.activities_applied(), b.activities_applied());
    assert!(a.activities_applied() > 0);
}

#[test]
fn without_activity_nothing_changes_on_its_own() {
    let sim = Simulator::new(SimConfig {
        activity: false,
        ..lively(50, 1)
    });
    advance_to(&sim, start() + TimeDelta::hours(12));
    assert!(sim.agents().iter().all(|a| a.state_log.len() == 1));
    assert_eq!(sim.activities_applied(), 0);
    assert!(!SimConfig::default().activity);
}

#[tokio::test]
async fn two_thousand_agents_for_a_simulated_hour_stay_cheap() {
    let started = Instant::now();
    let h = harness(lively(2000, 5)).await;
    let sim = h.sim();
    let built = started.elapsed();
    let mut checkpoints = Vec::new();
    // Ten-second steps, as a poller with the shortest interval would see the world.
    let hour = Instant::now();
    for _ in 0..360 {
        sim.clock().advance(Duration::from_secs(10));
        let step = Instant::now();
        sim.run_until(sim.clock().now());
        checkpoints.push(step.elapsed());
    }
    let total = hour.elapsed();
    let worst = checkpoints.iter().max().unwrap();
    let applied = sim.activities_applied();
    println!(
        "2000 agents: built in {built:?}; one simulated hour in 10 s steps: {applied} \
         activities in {total:?} (worst step {worst:?})"
    );
    assert!(applied > 5_000, "{applied}");
    let on_contact = sim
        .agents()
        .iter()
        .filter(|a| a.state == "ON_CONTACT")
        .count();
    assert!(on_contact > 200, "{on_contact} on a contact");

    // What a poller of the whole tenant costs: one unfiltered poll over HTTP.
    let token = h.token().await;
    let id = h
        .subscribe(&token, &subscription_body(10_000, &ALL_METRICS, None))
        .await;
    let poll_started = Instant::now();
    let poll = h.poll_json(&token, &id).await;
    let polled = poll_started.elapsed();
    assert_eq!(poll["data"].as_array().unwrap().len(), 2000);
    println!("2000 agents: one unfiltered subscription poll over HTTP in {polled:?}");
}
