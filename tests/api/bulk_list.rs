//! The list of bulk jobs: newest first, without items, filtered by status, a page at a
//! time with `before`, bad parameters refused naming them.

use serde_json::{Value, json};

use crate::bulk::run_job;
use crate::helpers::{TestApp, TestDb, on_both_backends};

async fn ids(app: &TestApp, path: &str) -> Vec<String> {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    let body: Value = response.json().await.unwrap();
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["job_id"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(the_jobs_are_listed_newest_first_a_page_at_a_time_and_by_status);
async fn the_jobs_are_listed_newest_first_a_page_at_a_time_and_by_status(db: TestDb) {
    let app = TestApp::spawn_in(db).await;
    let free = app.sim.free_agents();
    let mut made = Vec::new();
    for agents in [&free[0..2], &free[2..3], &free[3..6]] {
        let agents: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
        let job = run_job(&app, json!({"agents": agents, "state": "LOGGED_OUT"})).await;
        made.push(job);
    }
    let [first, second, third] = [0, 1, 2].map(|i| made[i]["job_id"].as_str().unwrap().to_owned());

    let listed: Value = app.get("/v1/bulk-transitions").await.json().await.unwrap();
    let jobs = listed["jobs"].as_array().unwrap();
    let order: Vec<&str> = jobs.iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    assert_eq!(order, [&third, &second, &first], "newest first");
    // Each as GET /v1/bulk-transitions/{id}?items=false has it: counts, no items.
    for (listed, made) in jobs.iter().zip(made.iter().rev()) {
        let mut without_items = made.clone();
        without_items.as_object_mut().unwrap().remove("items");
        assert_eq!(listed, &without_items);
    }
    assert_eq!(jobs[0]["total"], 3);

    // A page at a time: `before` the last job of a page.
    assert_eq!(
        ids(&app, "/v1/bulk-transitions?limit=2").await,
        [third.as_str(), second.as_str()]
    );
    assert_eq!(
        ids(
            &app,
            &format!("/v1/bulk-transitions?limit=2&before={second}")
        )
        .await,
        [first.as_str()]
    );
    assert!(
        ids(&app, &format!("/v1/bulk-transitions?before={first}"))
            .await
            .is_empty()
    );
    assert_eq!(
        ids(&app, "/v1/bulk-transitions?status=completed")
            .await
            .len(),
        3
    );
    assert!(
        ids(&app, "/v1/bulk-transitions?status=running")
            .await
            .is_empty()
    );
    assert_eq!(
        ids(&app, "/v1/tenants/default/bulk-transitions?limit=1").await,
        [third.as_str()],
        "at the tenant's address too"
    );

    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("status=done", "status"),
        ("before=yesterday", "before"),
    ] {
        let response = app.get(&format!("/v1/bulk-transitions?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["parameter"], parameter, "{query}: {problem}");
    }
    app.stop().await;
}
