//! The cross-origin rule at every address of every route: a page elsewhere may read, but
//! may not change anything or open the live feed, whether it names the route as `/v1/…`
//! or as a tenant's `/v1/tenants/{tenant}/…`.

use serde_json::Value;

use crate::auth::{addressed_routes, fill_path, is_event_stream};
use crate::helpers::TestApp;
use crate::hostile::{ws_opens_with_a_snapshot, ws_refused, ws_request};
use crate::live::Sse;

const FOREIGN: &str = "http://evil.example";

/// Whether the document describes `method path` as the live feed: a WebSocket (101) or
/// an event stream.
fn is_feed(spec: &Value, method: &str, path: &str) -> bool {
    let responses = &spec["paths"][path][method.to_ascii_lowercase()]["responses"];
    let responses = responses
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
    responses.iter().any(|(status, response)| {
        status == "101"
            || response["content"]
                .as_object()
                .is_some_and(|content| content.contains_key("text/event-stream"))
    })
}

/// On a single-tenant install without tokens, where nothing but this rule stands
/// between a page elsewhere and the API.
#[tokio::test]
async fn a_foreign_page_may_not_change_anything_or_open_the_feed_at_any_address_of_a_route() {
    let app = TestApp::spawn().await;
    let agent = app.sim.off_shift_agent();
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut failures = Vec::new();
    let mut refused = 0;
    for (template, row) in addressed_routes() {
        let path = fill_path(&template, &agent.id);
        let url = match row.query {
            "" => format!("{}{path}", app.address),
            query => format!("{}{path}?{query}", app.address),
        };
        let mut request = app
            .http
            .request(row.method.parse().unwrap(), url)
            .header("origin", FOREIGN);
        if let Some(body) = row.body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        // The feed never ends; its headers are the answer.
        let body: Value = if is_event_stream(response.headers()) {
            Value::Null
        } else {
            response.json().await.unwrap_or(Value::Null)
        };
        let what = format!("{} {path}", row.method);
        if row.method != "GET" || is_feed(&spec, row.method, row.path) {
            refused += 1;
            if status != 403 || body["type"] != "urn:wfmd:problem:cross-origin" {
                failures.push(format!(
                    "{what}: {status}, expected 403 cross-origin: {body}"
                ));
            }
        } else if status == 403 {
            failures.push(format!("{what}: refused a read: {body}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(refused > 20, "the walk reached the changes and feeds");
    assert_eq!(app.sim.changes(), 0, "nothing reached the platform");

    // A browser's real upgrade, at the tenant's address of the feed.
    let tenant_ws = "/v1/tenants/default/ws";
    ws_refused(ws_request(&app.address, tenant_ws, FOREIGN)).await;
    // The page wfmd served opens either address of either feed.
    let own = app.address.as_str();
    let mut sse = Sse::open(own, "/v1/tenants/default/events", &[("origin", own)]).await;
    assert_eq!(sse.next().await.event, "snapshot");
    ws_opens_with_a_snapshot(ws_request(own, tenant_ws, own)).await;
}
