//! The operations kit in `deploy/`: the Prometheus alert rules pass `promtool check
//! rules` and their unit tests, every metric the rules and the Grafana dashboard query
//! is one a running wfmd exports, and the two-instance compose example gives each
//! instance a configuration wfmd takes (every variable a real key, secrets from the
//! environment) with which the two share the postgres service and reach each other.

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
    assert!(checked.contains("SUCCESS: 15 rules found"), "{checked}");
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

/// Metric families in a Prometheus text scrape (a histogram's `_bucket`, `_sum` and
/// `_count` included).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .flat_map(|name| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
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

/// deploy/compose.ha.yaml as JSON, as PyYAML reads it (Debian's `python3-yaml`,
/// installed when missing).
fn compose_ha() -> Value {
    install_when_missing(
        "python3",
        &["-c", "import yaml"],
        &["python3", "python3-yaml"],
    );
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(deploy("compose.ha.yaml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "deploy/compose.ha.yaml is not YAML: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `text` with compose's `${NAME…}` references (`${NAME:?message}` and the like)
/// replaced by `value(NAME)`.
fn interpolate(text: &str, value: impl Fn(&str) -> &'static str) -> String {
    let mut done = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        done.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').expect("a ${…} is closed");
        let name = rest[start + 2..end].split([':', '-', '?']).next().unwrap();
        done.push_str(value(name));
        rest = &rest[end + 1..];
    }
    done.push_str(rest);
    done
}

/// What the example's reader exports before `docker compose up` (its header says which).
fn exported_secret(name: &str) -> &'static str {
    match name {
        "WFMD_DB_PASSWORD" => "db-password",
        "WFMD_CXONE__CLIENT_SECRET" => "client-secret",
        "WFMD_AUDIT__KEY" => "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "WFMD_HA__CLUSTER_KEY" => {
            "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
        }
        other => panic!(
            "deploy/compose.ha.yaml asks for ${{{other}}}: say so in its header's `export` line, \
             and give it a value here"
        ),
    }
}

#[test]
fn the_two_instance_compose_example_configures_two_instances_of_one_postgresql_that_reach_each_other()
 {
    let compose = compose_ha();
    let services = compose["services"].as_object().unwrap();
    let instances: Vec<&String> = services.keys().filter(|s| s.starts_with("wfmd")).collect();
    assert_eq!(instances, ["wfmd-a", "wfmd-b"]);
    let postgres = &services["postgres"]["environment"];
    assert!(
        postgres["POSTGRES_PASSWORD"]
            .as_str()
            .unwrap()
            .starts_with("${")
    );

    // The configuration file both mount, as its reader writes it from the example: with
    // an API token, which lets wfmd listen beyond loopback.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wfmd.toml");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wfmd.example.toml"),
    )
    .unwrap();
    std::fs::write(
        &file,
        format!(
            "{example}\n[[api_tokens]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\nrole = \"admin\"\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let source = wfmd::config::ConfigSource {
        file: Some(file),
        simulate: false,
    };

    for name in instances {
        let service = &services[name.as_str()];
        assert_eq!(
            service["depends_on"]["postgres"]["condition"], "service_healthy",
            "{name}"
        );
        let env: Vec<(String, String)> = service["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(key, value)| (key.clone(), value.as_str().unwrap().to_owned()))
            .collect();
        // Secrets come from the environment the example is started in, never the file.
        for (key, value) in &env {
            if ["SECRET", "KEY", "PASSWORD", "DATABASE__URL"]
                .iter()
                .any(|secret| key.contains(secret))
            {
                assert!(value.contains("${"), "{name}: {key} is written out");
            }
        }
        // Every key is one wfmd knows: an unknown one is refused.
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(key, value)| (key, interpolate(&value, exported_secret)))
            .collect();
        let config = wfmd::config::Config::load_with_env(&source, env)
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        let ha = config
            .ha
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no [ha]"));
        assert_eq!(ha.instance_id.as_deref(), Some(name.as_str()));
        assert_eq!(ha.lease_ttl, Duration::from_secs(10), "the default, said");
        // The other instance reaches it by its service name, where it listens, and it
        // answers to that name.
        let listen = config.server.listen;
        assert!(listen.ip().is_unspecified(), "{name} listens on {listen}");
        assert_eq!(
            ha.advertise_url.as_deref(),
            Some(format!("http://{name}:{}", listen.port()).as_str())
        );
        for instance in services.keys().filter(|s| s.starts_with("wfmd")) {
            assert!(
                config.server.allowed_hosts.contains(instance),
                "{name} refuses requests naming {instance}"
            );
        }
        let published = service["ports"][0].as_str().unwrap();
        assert!(
            published.starts_with("127.0.0.1:")
                && published.ends_with(&format!(":{}", listen.port())),
            "{name} publishes {published}"
        );
        // Its database is the postgres service's.
        let url = reqwest::Url::parse(&config.database.url).unwrap();
        assert_eq!(
            (url.scheme(), url.host_str(), url.username(), url.path()),
            ("postgres", Some("postgres"), "wfmd", "/wfmd"),
            "{name}"
        );
        assert_eq!(
            (&postgres["POSTGRES_USER"], &postgres["POSTGRES_DB"]),
            (&json!("wfmd"), &json!("wfmd"))
        );
    }
}
