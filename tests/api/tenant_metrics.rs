//! `/metrics` of a daemon with two tenants: every series of a tenant's metric names
//! its tenant, each tenant's counts are its own, and the process's series name none.
//!
//! The daemon runs as a child process: the metrics recorder is process-wide, and the
//! other tests' daemons in this process would add their series to the scrape.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use wfmd::telemetry::names::{
    ADHERENCE_EXCEPTIONS_OPEN, API_REFUSALS_TOTAL, BULK_ITEMS_TOTAL, DATABASE_CONNECTIONS,
    DATABASE_SIZE_BYTES, HTTP_CONNECTIONS, LIVE_CLIENTS, LIVE_RESUMES_TOTAL,
    STORE_WRITE_ERRORS_TOTAL, SYNC_POLLS_TOTAL, TRANSITIONS_TOTAL, WEBHOOK_DEAD_TOTAL,
    WEBHOOK_DELIVERED_TOTAL,
};
use wfmd::telemetry::{MIXED, PROCESS};

use crate::helpers::{Daemon, TestDb, TestSim, get_text, http_client};
use crate::live::Sse;
use crate::receiver::{Receiver, SECRET};
use crate::tenants::{two_sims, two_tenants_file};

const TOKEN: &str = "wfmd_ops";
const TENANTS: [&str; 2] = ["alpha", "beta"];

/// One sample of a scrape: its name and labels.
#[derive(Debug)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Series {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// The metric's name: a histogram's `_bucket`, `_sum` and `_count` are its own.
    fn family(&self) -> &str {
        let name = self.name.as_str();
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name)
    }
}

/// The `wfmd_…` samples of a Prometheus text scrape.
fn parse(scrape: &str) -> Vec<Series> {
    scrape
        .lines()
        .filter(|line| line.starts_with("wfmd_"))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.strip_suffix('}').unwrap()),
                None => (series, ""),
            };
            Series {
                name: name.to_owned(),
                labels: parse_labels(labels),
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

/// `a="x",b="y"` (no value here holds a quote).
fn parse_labels(mut text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while let Some((key, rest)) = text.split_once("=\"") {
        let (value, rest) = rest.split_once('"').unwrap();
        labels.insert(key.to_owned(), value.to_owned());
        text = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

/// The value of `name` with exactly `labels`, if exported.
fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    series
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

/// The value of `name` with `labels` and `tenant`'s label, if exported.
fn of(series: &[Series], name: &str, labels: &[(&str, &str)], tenant: &str) -> Option<f64> {
    let mut labels = labels.to_vec();
    labels.push(("tenant", tenant));
    value(series, name, &labels)
}

/// `count` free agents of `sim`, and a state each may be changed to.
fn changes_for(sim: &TestSim, count: usize) -> Vec<(String, &'static str)> {
    sim.free_agents()
        .into_iter()
        .take(count)
        .map(|agent| {
            let target = if agent.state == "PAUSED" {
                "IDLE"
            } else {
                "PAUSED"
            };
            (agent.id, target)
        })
        .collect()
}

struct Client {
    http: reqwest::Client,
    address: String,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn scrape(&self) -> Vec<Series> {
        parse(&get_text(&format!("{}/metrics", self.address)).await)
    }

    /// Makes all but the last of `changes` in `tenant` one by one, then the last as a
    /// bulk job.
    async fn work(&self, tenant: &str, changes: &[(String, &'static str)]) {
        let (bulk, direct) = changes.split_last().unwrap();
        for (agent, state) in direct {
            let path = format!("/v1/tenants/{tenant}/agents/{agent}/transitions");
            let done = self
                .send(reqwest::Method::POST, &path, Some(json!({"state": state})))
                .await;
            assert_eq!(done["to"], *state, "{done}");
        }
        let (agent, state) = bulk;
        let path = format!("/v1/tenants/{tenant}/bulk-transitions");
        let job = self
            .send(
                reqwest::Method::POST,
                &path,
                Some(json!({"agents": [agent], "state": state})),
            )
            .await;
        let job = format!("{path}/{}", job["job_id"].as_str().unwrap());
        crate::helpers::eventually("the bulk job completes", || async {
            let shown = self.send(reqwest::Method::GET, &job, None).await;
            if shown["status"] == "completed" && shown["succeeded"] == 1 {
                Ok(())
            } else {
                Err(shown.to_string())
            }
        })
        .await;
    }
}

#[tokio::test]
async fn each_tenants_series_carry_its_tenant_and_count_its_own_work_only() {
    let (alpha, beta) = two_sims().await;
    let receiver = Receiver::start().await;
    let db = TestDb::new();
    let token = crate::auth::entry("ops", TOKEN, "admin");
    let extra = format!(
        "[[webhooks]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         [[api_tokens]]\nname = \"{}\"\ntoken_sha256 = \"{}\"\nrole = \"admin\"\n",
        receiver.url(),
        token.name,
        token.token_sha256
    );
    let (file, env) = two_tenants_file(&db, &alpha, &beta, &extra);
    let file = file.to_str().unwrap().to_owned();
    let daemon = Daemon::spawn_with(&["serve", "--config", &file], &env, None).await;
    let client = Client {
        http: http_client(),
        address: daemon.address.clone(),
    };

    // Different amounts of work, so one tenant's count cannot pass for the other's.
    client.work("alpha", &changes_for(&alpha, 3)).await;
    client.work("beta", &changes_for(&beta, 2)).await;
    assert_eq!((alpha.changes(), beta.changes()), (3, 2));
    // Each tenant's feed with a client on it; alpha's leaves again.
    let feed = |tenant: &str, resume: bool| {
        let mut headers = vec![("authorization", "Bearer wfmd_ops")];
        if resume {
            headers.push(("last-event-id", "evt_00000000000000000000000000000000"));
        }
        let path = format!("/v1/tenants/{tenant}/events");
        let address = daemon.address.clone();
        async move {
            let mut feed = Sse::open(&address, &path, &headers).await;
            assert_eq!(feed.next().await.event, "snapshot");
            feed
        }
    };
    let alpha_feed = feed("alpha", false).await;
    let _beta_feed = feed("beta", true).await;
    // Refused: on beta's routes, and on the process's before any tenant is known.
    for path in ["/v1/tenants/beta/live", "/v1/tenants"] {
        let status = client
            .http
            .get(format!("{}{path}", daemon.address))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{path}");
    }

    let delivered = |series: &[Series], tenant: &str| {
        value(series, WEBHOOK_DELIVERED_TOTAL, &[("tenant", tenant)]).unwrap_or(0.0)
    };
    let series = crate::helpers::eventually("both tenants' webhooks delivered", || async {
        // Read first: a delivery is counted after the receiver has it.
        let received = receiver.received().len() as f64;
        let series = client.scrape().await;
        let (alpha_sent, beta_sent) = (delivered(&series, "alpha"), delivered(&series, "beta"));
        let alpha_live = value(&series, LIVE_CLIENTS, &[("tenant", "alpha")]);
        if alpha_sent > 0.0
            && beta_sent > 0.0
            && alpha_sent + beta_sent == received
            && alpha_live == Some(1.0)
        {
            Ok(series)
        } else {
            Err(format!("{series:?}"))
        }
    })
    .await;

    for s in &series {
        let tenant = s.label("tenant");
        let family = s.family();
        if PROCESS.contains(&family) {
            assert_eq!(tenant, None, "the process's: {s:?}");
        } else if MIXED.contains(&family) {
            if let Some(tenant) = tenant {
                assert!(TENANTS.contains(&tenant), "{s:?}");
            }
        } else {
            assert!(
                tenant.is_some_and(|t| TENANTS.contains(&t)),
                "a tenant's metric without its tenant: {s:?}"
            );
        }
    }
    let of_each = |name: &str, labels: &[(&str, &str)]| {
        (
            of(&series, name, labels, "alpha"),
            of(&series, name, labels, "beta"),
        )
    };
    let succeeded = [("outcome", "succeeded")];
    let changes = of_each(TRANSITIONS_TOTAL, &succeeded);
    assert_eq!(changes, (Some(3.0), Some(2.0)));
    let items = of_each(BULK_ITEMS_TOTAL, &succeeded);
    assert_eq!(items, (Some(1.0), Some(1.0)));
    let resumed = of_each(LIVE_RESUMES_TOTAL, &[("outcome", "snapshot")]);
    assert_eq!(resumed, (Some(0.0), Some(1.0)));
    // Registered at zero for each tenant, with no unlabelled twin.
    for tenant in TENANTS {
        for name in [
            STORE_WRITE_ERRORS_TOTAL,
            WEBHOOK_DEAD_TOTAL,
            SYNC_POLLS_TOTAL,
            ADHERENCE_EXCEPTIONS_OPEN,
        ] {
            assert_eq!(of(&series, name, &[], tenant), Some(0.0), "{name}");
        }
        assert!(of(&series, DATABASE_SIZE_BYTES, &[], tenant) > Some(0.0));
    }
    let refused = |tenant: Option<&str>| {
        let mut labels = vec![("reason", "missing")];
        labels.extend(tenant.map(|t| ("tenant", t)));
        value(&series, API_REFUSALS_TOTAL, &labels)
    };
    assert_eq!(
        (refused(Some("beta")), refused(Some("alpha")), refused(None)),
        (Some(1.0), Some(0.0), Some(1.0)),
        "beta's routes refused one, the tenant list one"
    );
    assert!(value(&series, HTTP_CONNECTIONS, &[]) >= Some(1.0));
    // The instance's database connections, both tenants' together and named by neither:
    // each tenant's writer and a reader at least.
    let connections = |state: &str| value(&series, DATABASE_CONNECTIONS, &[("state", state)]);
    let open = connections("in_use").unwrap_or(0.0) + connections("idle").unwrap_or(0.0);
    assert!(
        open >= 4.0,
        "{:?}",
        (connections("in_use"), connections("idle"))
    );

    // The feed's client is counted off where it was counted on: in alpha's series,
    // although the server drops the stream outside the request that opened it.
    drop(alpha_feed);
    crate::helpers::eventually("alpha's feed client is gone", || async {
        let series = client.scrape().await;
        let clients: Vec<(Option<&str>, f64)> = series
            .iter()
            .filter(|s| s.name == LIVE_CLIENTS)
            .map(|s| (s.label("tenant"), s.value))
            .collect();
        if clients.contains(&(Some("alpha"), 0.0)) && clients.contains(&(Some("beta"), 1.0)) {
            assert_eq!(clients.len(), 2, "{clients:?}");
            Ok(())
        } else {
            Err(format!("{clients:?}"))
        }
    })
    .await;
}
