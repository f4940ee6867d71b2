//! The operations kit in `deploy/`: the Prometheus alert rules pass `promtool check
//! rules` and their unit tests, and every metric the rules and the Grafana dashboard
//! query is one a running wfmd exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestSim, install_when_missing};
use crate::receiver::{Receiver, SECRET};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// Ids of running processes whose name starts with `prometheus`.
fn prometheus_processes() -> BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|name| name.starts_with("prometheus"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `promtool`, installed from the distribution's `prometheus` package when missing.
/// The package may start a Prometheus server; any that the installation started is
/// stopped again, by its process id.
fn promtool() -> Command {
    let before = prometheus_processes();
    if install_when_missing("promtool", &["--version"], &["prometheus"]) {
        for pid in prometheus_processes().difference(&before) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
    Command::new("promtool")
}

fn run(mut command: Command) -> String {
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[tokio::test]
async fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (checked, tested) = tokio::task::spawn_blocking(|| {
        let mut check = promtool();
        check
            .args(["check", "rules"])
            .arg(deploy("prometheus/wfmd-alerts.yml"));
        let mut test = promtool();
        test.args(["test", "rules", "wfmd-alerts.test.yml"])
            .current_dir(deploy("prometheus"));
        (run(check), run(test))
    })
    .await
    .unwrap();
    assert!(checked.contains("SUCCESS: 13 rules found"), "{checked}");
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every `wfmd_…` metric name in `text` (PromQL, YAML or JSON).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("wfmd_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The queries of the rules file (its `expr`s) and of the dashboard (its targets).
fn queried_metrics() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(deploy("prometheus/wfmd-alerts.yml")).unwrap();
    let exprs: String = rules
        .split("expr:")
        .skip(1)
        .map(|part| part.split("labels:").next().unwrap())
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/wfmd-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut names = metric_names(&exprs);
    let mut targets = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            targets.push_str(target["expr"].as_str().unwrap());
            targets.push('\n');
        }
    }
    targets.push_str(&dashboard["templating"].to_string());
    names.extend(metric_names(&targets));
    names
}

/// Metric families in a Prometheus text scrape (a summary's `_sum`/`_count` included).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .flat_map(|name| {
            let family = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            [name.to_owned(), family.to_owned()]
        })
        .collect()
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_query_is_exported_by_a_running_wfmd() {
    let queried = queried_metrics();
    assert!(queried.len() >= 25, "too few names found: {queried:?}");

    let receiver = Receiver::start().await;
    let sim = TestSim::default_tenant().await;
    let agent = sim.free_agents().remove(0).id;
    let rule_agent = sim.free_agents().remove(1).id;
    let app = TestApp::spawn_with(sim, |config| {
        config.webhooks = vec![wfmd::config::WebhookConfig {
            url: receiver.url(),
            secret: vec![SECRET.to_owned().into()],
            events: None,
        }];
        config.sync.enabled = true;
        config.compliance.sweep_interval = Duration::from_secs(1);
        config.api_tokens = vec![crate::auth::entry("ops", "wfmd_ops", "admin")];
        config.rules = vec![
            toml::from_str(&format!(
                "name = \"tick\"\ncron = \"* * * * * *\"\ntimezone = \"UTC\"\n\
                 agents = [\"{rule_agent}\"]\nset = \"PAUSED\"\n"
            ))
            .unwrap(),
        ];
    })
    .await;
    // What an ordinary day does: a change, a bulk job, a refused caller, a verify.
    let send = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = app
            .http
            .request(method, format!("{}{path}", app.address))
            .bearer_auth("wfmd_ops");
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let changed = send(
        reqwest::Method::POST,
        &format!("/v1/agents/{agent}/transitions"),
        Some(json!({"state": "NOT_READY"})),
    )
    .await
    .unwrap();
    assert_eq!(changed.status(), 200);
    let bulk = send(
        reqwest::Method::POST,
        "/v1/bulk-transitions",
        Some(json!({"agents": [agent], "state": "PAUSED"})),
    )
    .await
    .unwrap();
    assert_eq!(bulk.status(), 202);
    let verify = send(reqwest::Method::GET, "/v1/audit/verify", None)
        .await
        .unwrap();
    assert_eq!(verify.status(), 200);
    assert_eq!(app.get("/v1/audit/verify").await.status(), 401);

    crate::helpers::eventually("queried in deploy/ but not exported", || async {
        let scrape = app.get("/metrics").await.text().await.unwrap();
        let exported = exported(&scrape);
        let missing: Vec<&String> = queried.difference(&exported).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("{missing:?}"))
        }
    })
    .await;
}
