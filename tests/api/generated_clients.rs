//! Clients generated from `/openapi.json` by the common generators, with their defaults,
//! work: openapi-python-client makes a client through which a script changes a state
//! (reading the outcome from the parsed answer), reads the agent's history and makes
//! and reads a bulk job; openapi-typescript types the main answers. Both pinned and
//! installed by the tests themselves (kept under the target folder, so reruns are fast).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::auth::{As, spawn_with_roles};
use crate::helpers::install_when_missing;
use crate::openapi::{made_once, python_venv, run, spec_file};

/// The Python generator, pinned: what it makes of a document changes between versions.
const PYTHON_GENERATOR: &str = "openapi-python-client==0.29.1";

/// The TypeScript generator, pinned likewise.
const TYPESCRIPT_GENERATOR: &str = "openapi-typescript@7.13.0";

/// Through the generated client: a change, the agent's history, a bulk job made and
/// read until it completes. Every answer is read from the client's parsed models (a
/// `None` there is a schema the generator could not type); prints what it read.
const SCRIPT: &str = r#"
import json, sys, time
from wfmd_client import AuthenticatedClient
from wfmd_client.api.agents import create_transition, history
from wfmd_client.api.bulk import create_bulk_job, show_bulk_job
from wfmd_client.models import (
    AcceptedView, BulkJob, HistoryView, SettableState, Transition, TransitionBody,
    TransitionOutcome,
)

base_url, token, agent, others = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)

answer = create_transition.sync_detailed(
    agent, client=client, body=TransitionBody(state=SettableState.NOT_READY, reason="BREAK"))
change = answer.parsed
assert answer.status_code == 200, (answer.status_code, answer.content)
assert isinstance(change, Transition), f"the change's answer is not parsed: {change!r}"
assert change.outcome == TransitionOutcome.SUCCEEDED, change.outcome

past = history.sync(agent, client=client)
assert isinstance(past, HistoryView), f"the history is not parsed: {past!r}"

accepted = create_bulk_job.sync(client=client, body={"agents": others, "state": "READY"})
assert isinstance(accepted, AcceptedView), f"the job's answer is not parsed: {accepted!r}"
deadline = time.monotonic() + 30
while True:
    job = show_bulk_job.sync(accepted.job_id, client=client)
    assert isinstance(job, BulkJob), f"the job is not parsed: {job!r}"
    if job.status == "completed" or time.monotonic() > deadline:
        break
    time.sleep(0.05)

print(json.dumps({
    "outcome": change.outcome.value,
    "to": str(change.to),
    "attempt_id": change.attempt_id,
    "intervals": [[i.state, i.reason] for i in past.intervals],
    "job": {"id": job.job_id, "status": job.status, "total": job.total,
            "succeeded": job.succeeded, "items": [i.agent for i in job.items or []]},
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_generated_with_the_defaults_changes_a_state_and_reads_a_history_and_a_bulk_job()
 {
    let python = tokio::task::spawn_blocking(|| python_venv(&[PYTHON_GENERATOR]));
    let app = spawn_with_roles().await;
    let (_, dir, spec_file) = spec_file(&app).await;
    let python = python.await.unwrap();
    let out = dir.path().join("client");
    let generated = {
        let (python, spec_file, out) = (python.clone(), spec_file.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            run(
                "openapi-python-client could not generate a client from /openapi.json",
                Command::new(python)
                    .args(["-m", "openapi_python_client", "generate", "--path"])
                    .arg(spec_file)
                    .arg("--output-path")
                    .arg(out),
            )
        })
        .await
        .unwrap()
    };
    // What it leaves out it says: no schema, and nothing of the main routes' tags.
    for dropped in ["Unable to process schema", "within agents", "within bulk"] {
        assert!(
            !generated.contains(dropped),
            "the generator left something out (`{dropped}`):\n{generated}"
        );
    }
    let mut agents = app.sim.free_agents().into_iter().map(|a| a.id);
    let agent = agents.next().unwrap();
    let others: Vec<String> = agents.take(3).collect();
    let said = {
        let (address, agent, others) = (app.address.clone(), agent.clone(), others.join(","));
        tokio::task::spawn_blocking(move || {
            run(
                "the script through the generated client failed",
                Command::new(python)
                    .args(["-c", SCRIPT, &address])
                    .arg(As::Supervisor.token().unwrap())
                    .args([&agent, &others])
                    .env("PYTHONPATH", &out),
            )
        })
        .await
        .unwrap()
    };
    let read: Value = serde_json::from_str(said.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {said}"));
    assert_eq!(read["outcome"], "succeeded", "{read}");
    assert_eq!(read["to"], "NOT_READY", "{read}");
    assert!(
        read["intervals"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["NOT_READY", "BREAK"])),
        "the history read through the client lacks the change: {read}"
    );
    let job = &read["job"];
    assert_eq!(job["status"], "completed", "{read}");
    assert_eq!(job["total"], others.len(), "{read}");
    assert_eq!(job["succeeded"], others.len(), "{read}");
    let mut items: Vec<String> = job["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    items.sort();
    assert_eq!(items, others, "{read}");
    app.stop().await;
}

/// A folder with [`TYPESCRIPT_GENERATOR`] installed from npm (Debian's `npm` installed
/// when missing), made on first use under the target folder and kept; made beside its
/// place and moved there when complete, as the Python environments are. Blocking.
fn openapi_typescript() -> PathBuf {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join(TYPESCRIPT_GENERATOR.replace('@', "-"));
    let cli = Path::new("node_modules/openapi-typescript/bin/cli.js");
    made_once(&home, cli, |partial| {
        install_when_missing("npm", &["--version"], &["npm"]);
        run(
            &format!("cannot install {TYPESCRIPT_GENERATOR} from npm"),
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                .arg(partial)
                .arg(TYPESCRIPT_GENERATOR),
        );
    })
}

#[tokio::test]
async fn openapi_typescript_generates_types_for_the_main_answers() {
    let cli = tokio::task::spawn_blocking(openapi_typescript);
    let app = spawn_with_roles().await;
    let (_, dir, spec_file) = spec_file(&app).await;
    app.stop().await;
    let types = dir.path().join("wfmd.d.ts");
    let cli = cli.await.unwrap();
    let output = types.clone();
    tokio::task::spawn_blocking(move || {
        run(
            "openapi-typescript could not generate types from /openapi.json",
            Command::new("node")
                .arg(cli)
                .arg(spec_file)
                .arg("-o")
                .arg(output),
        )
    })
    .await
    .unwrap();
    let types = std::fs::read_to_string(types).unwrap();
    // A change's answer is an object with its outcome typed, the others beside it.
    let transition = declaration(&types, "Transition");
    for field in [
        r#"outcome: "succeeded" | "rejected" | "failed";"#,
        r#"violation?: components["schemas"]["Violation"];"#,
        r#"to: components["schemas"]["AgentState"];"#,
        "attempt_id: string;",
    ] {
        assert!(
            transition.contains(field),
            "Transition lacks `{field}`:\n{transition}"
        );
    }
    for (schema, field) in [
        ("BulkJob", "job_id: string;"),
        ("AcceptedView", "job_id: string;"),
        ("JobStarted", "job_id: string;"),
        (
            "HistoryView",
            r#"intervals: components["schemas"]["IntervalView"][];"#,
        ),
        ("FeedMessage", "snapshot"),
    ] {
        let declared = declaration(&types, schema);
        assert!(
            declared.contains(field),
            "{schema} lacks `{field}`:\n{declared}"
        );
    }
    let create = declaration(&types, "create_transition");
    assert!(
        create.contains(r#""application/json": components["schemas"]["Transition"];"#),
        "the change's 200 is not typed:\n{create}"
    );
    let analytics = declaration(&types, "create_analytics_job");
    assert!(
        analytics.contains(r#""application/json": components["schemas"]["JobStarted"];"#),
        "an analytics job's 202 is not typed:\n{analytics}"
    );
}

/// The declaration `name: {…}` in `types`, to its closing brace at the same indent.
fn declaration<'a>(types: &'a str, name: &str) -> &'a str {
    let start = types
        .find(&format!("        {name}: {{\n"))
        .or_else(|| types.find(&format!("    {name}: {{\n")))
        .unwrap_or_else(|| panic!("no `{name}` in the generated types"));
    let indent = types[start..].len() - types[start..].trim_start().len();
    let close = format!("\n{}}};", " ".repeat(indent));
    let end = types[start..]
        .find(&close)
        .map_or(types.len(), |end| start + end + close.len());
    &types[start..end]
}
