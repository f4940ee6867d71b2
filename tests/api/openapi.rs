//! `/openapi.json` against the running API: the document is valid OpenAPI 3.1 by an
//! independent validator, the spec and the routes agree, hostile input gets 4xx problems
//! naming the field or parameter, and a fuzz pass over every route (generated from the
//! spec) gets no 5xx and has every schema-valid request accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{As, CALLERS, addressed_routes, fill_path, spawn_with_roles};
use crate::helpers::{SET_STATE, TestApp, install_when_missing};

/// One operation of the spec.
#[derive(Debug, Clone)]
struct Operation {
    method: String,
    path: String,
    /// The least role it needs (`None`: open).
    role: Option<String>,
    parameters: Vec<Parameter>,
    /// The JSON schema of the body, `$ref`s resolved on use.
    body: Option<Value>,
    /// Whether the body must be sent.
    body_required: bool,
    /// Whether the body is of a type other than JSON (a schedules CSV): the fuzzer makes
    /// none, and `tests/api/without_wfm.rs` sends real ones.
    foreign_body: bool,
    /// Documented statuses.
    statuses: BTreeSet<u16>,
    /// Documented content types of each status that has a body.
    content_types: BTreeMap<u16, BTreeSet<String>>,
    /// One of the console's pages (tag `console`).
    page: bool,
}

/// One parameter of an operation.
#[derive(Debug, Clone)]
struct Parameter {
    name: String,
    /// `path`, `query` or `header`.
    location: String,
    /// Its schema, a top-level `$ref` resolved.
    schema: Value,
    required: bool,
}

/// The document `app` serves, and a file holding it in a fresh folder (kept while the
/// folder is), for the tools that read one.
pub async fn spec_file(app: &TestApp) -> (Value, tempfile::TempDir, PathBuf) {
    let spec = fetch_spec(app).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    (spec, dir, file)
}

pub async fn fetch_spec(app: &TestApp) -> Value {
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

fn operations(spec: &Value) -> Vec<Operation> {
    let mut found = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            // A document served without tokens declares no security: all is open.
            let security = operation["security"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![json!({})]);
            let role = match security.as_slice() {
                [open] if open.as_object().unwrap().is_empty() => None,
                [needs] => Some(needs["bearer"][0].as_str().unwrap().to_owned()),
                _ => panic!("{method} {path}: unexpected security {security:?}"),
            };
            let parameters = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| Parameter {
                    name: p["name"].as_str().unwrap().to_owned(),
                    location: p["in"].as_str().unwrap().to_owned(),
                    schema: resolve(spec, &p["schema"]).clone(),
                    required: p["required"] == true,
                })
                .collect();
            let body = operation["requestBody"]["content"]["application/json"]["schema"].clone();
            let statuses = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|status| status.parse().unwrap())
                .collect();
            let content_types = operation["responses"]
                .as_object()
                .unwrap()
                .iter()
                .filter_map(|(status, response)| {
                    let types: BTreeSet<String> =
                        response["content"].as_object()?.keys().cloned().collect();
                    Some((status.parse().unwrap(), types))
                })
                .collect();
            found.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                role,
                parameters,
                body: (!body.is_null()).then_some(body),
                body_required: operation["requestBody"]["required"] == true,
                foreign_body: operation["requestBody"]["content"]
                    .as_object()
                    .is_some_and(|types| !types.contains_key("application/json")),
                statuses,
                content_types,
                page: operation["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.contains(&json!("console"))),
            });
        }
    }
    found
}

/// The independent validator: Python's openapi-spec-validator (the OpenAPI Initiative's
/// JSON Schema for the document, plus what a schema cannot check: unique operation ids,
/// declared path parameters, resolvable references). Pinned, so its verdicts do not
/// move under us.
const VALIDATOR: &str = "openapi-spec-validator==0.9.0";

/// Runs `command`, failing the test with `what` and the command's output if it fails.
pub fn run(what: &str, command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{what}: {command:?} failed:\n{text}"
    );
    text
}

/// A Python that has [`VALIDATOR`] (and so `jsonschema`). Blocking.
fn openapi_spec_validator() -> PathBuf {
    python_venv(&[VALIDATOR])
}

/// A Python that has `packages` (pinned `name==version`): a virtual environment of its
/// own under the target folder, made on first use (Debian's `python3` and
/// `python3-venv` installed when missing, the packages from PyPI) and kept, so reruns
/// take seconds. Made beside its place and moved there when complete, so a test process
/// that finds it finds it whole. A venv's interpreter finds its packages relative to
/// itself, so it can move; its scripts cannot (their first line names the old place),
/// so tools run as `python -m` or `python <venv>/bin/<tool>`. Blocking.
pub fn python_venv(packages: &[&str]) -> PathBuf {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join(packages.join("+").replace("==", "-"));
    made_once(&home, Path::new("bin/python"), |partial| {
        install_when_missing(
            "python3",
            &["-c", "import venv, ensurepip"],
            &["python3", "python3-venv"],
        );
        run(
            "cannot make a Python virtual environment",
            Command::new("python3").arg("-m").arg("venv").arg(partial),
        );
        run(
            &format!("cannot install {} from PyPI", packages.join(", ")),
            Command::new(partial.join("bin").join("python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(packages),
        );
    })
}

/// `home`'s `made` (a file in it), making `home` first when it is missing: `make`
/// fills a folder beside it, which is then moved into place, so a test process that
/// finds `home` finds it whole (another process that finished first wins). Blocking.
pub fn made_once(home: &Path, made: &Path, make: impl FnOnce(&Path)) -> PathBuf {
    let made = home.join(made);
    if made.exists() {
        return made;
    }
    // Its own per call: tests of one process may make the same folder at once.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut partial = home.as_os_str().to_owned();
    partial.push(format!(".partial-{}-{call}", std::process::id()));
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).unwrap();
    make(&partial);
    if std::fs::rename(&partial, home).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    assert!(made.exists(), "{} was not made", made.display());
    made
}

#[tokio::test]
async fn the_served_document_is_valid_openapi_3_1_with_tokens_and_without() {
    let python = tokio::task::spawn_blocking(openapi_spec_validator)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, app) in [
        ("without-tokens", TestApp::spawn().await),
        ("with-tokens", spawn_with_roles().await),
    ] {
        let spec = fetch_spec(&app).await;
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, spec.to_string()).unwrap();
        files.push(file);
        app.stop().await;
    }
    let verdict = tokio::task::spawn_blocking(move || {
        run(
            "the OpenAPI validator refused /openapi.json",
            Command::new(python)
                .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
                .args(["--validation-errors", "all", "--subschema-errors", "all"])
                .args(&files),
        )
    })
    .await
    .unwrap();
    assert_eq!(verdict.matches(": OK").count(), 2, "{verdict}");
}

#[tokio::test]
async fn the_spec_and_the_role_table_describe_the_same_routes() {
    let app = spawn_with_roles().await;
    let spec = fetch_spec(&app).await;
    assert_eq!(spec["openapi"], "3.1.0");
    let scheme = &spec["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    let in_spec: BTreeMap<(String, String), Option<String>> = operations(&spec)
        .into_iter()
        .map(|op| ((op.method, op.path), op.role))
        .collect();
    let in_table: BTreeMap<(String, String), Option<String>> = addressed_routes()
        .into_iter()
        .map(|(path, row)| ((row.method.to_owned(), path), row.role.map(str::to_owned)))
        .collect();
    for (route, role) in &in_spec {
        match in_table.get(route) {
            None => panic!("{route:?} is in the spec but has no row in tests/api/auth.rs ROUTES"),
            Some(expected) => assert_eq!(role, expected, "{route:?}: the spec's role"),
        }
    }
    for route in in_table.keys() {
        assert!(in_spec.contains_key(route), "{route:?} is not in the spec");
    }

    // Every described operation is routed: as admin, with placeholder parameters and an
    // empty body, nothing answers "no such route" or "method not allowed".
    for (method, path) in in_spec.keys() {
        let url = format!("{}{}", app.address, fill_path(path, "u_001"));
        let response = app
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(As::Admin.token().unwrap())
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        // The live feed never ends: its status says it is routed; its body would be
        // waited for forever.
        let text = if crate::auth::is_event_stream(response.headers()) {
            String::new()
        } else {
            response.text().await.unwrap()
        };
        assert!(
            status != 405 && !text.contains("urn:wfmd:problem:no-such-route"),
            "{method} {path} is described but not routed: {status} {text}"
        );
    }
}

/// A request made of raw bytes, for what HTTP clients refuse to send.
async fn raw_request(app: &TestApp, head: &str, body: &str) -> (u16, String, String) {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{head}\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

/// A hostile request: method, path and query, content type, body, the status it gets,
/// and what its problem names (`("field", "state")`).
type Hostile = (&'static str, String, &'static str, String, u16, Names);
type Names = Option<(&'static str, &'static str)>;

const JSON: &str = "application/json";

fn post(path: &str, content_type: &'static str, body: &str, status: u16, names: Names) -> Hostile {
    (
        "POST",
        path.to_owned(),
        content_type,
        body.to_owned(),
        status,
        names,
    )
}

fn get(path: &str, status: u16, names: Names) -> Hostile {
    ("GET", path.to_owned(), "", String::new(), status, names)
}

fn field(name: &'static str) -> Names {
    Some(("field", name))
}

fn parameter(name: &'static str) -> Names {
    Some(("parameter", name))
}

#[tokio::test]
async fn hostile_input_gets_a_4xx_problem_naming_the_field_or_parameter() {
    let app = TestApp::spawn().await;
    let agent = app.sim.free_agents().remove(0).id;
    let transitions = &format!("/v1/agents/{agent}/transitions");
    let history = &format!("/v1/agents/{agent}/history");
    let long_id = "u".repeat(200);
    let huge = format!(r#"{{"state":"READY","reason":"{}"}}"#, "A".repeat(70_000));
    let ready = r#"{"state":"READY"}"#;
    // One request a line: a table reads better than rustfmt's one argument a line.
    #[rustfmt::skip]
    let cases = vec![
        post(transitions, JSON, "{\"state\": ", 400, None),
        post(transitions, JSON, "", 400, None),
        post(transitions, JSON, &"[".repeat(10_000), 400, None),
        post(transitions, JSON, r#"{"state":"LUNCH"}"#, 422, field("state")),
        post(transitions, JSON, r#"{"state":["READY"]}"#, 422, field("state")),
        post(transitions, JSON, r#"{"state":"READY","colour":1}"#, 422, field("colour")),
        post(transitions, JSON, r#"["READY"]"#, 422, field("body")),
        post(transitions, JSON, r#"{"state":"READY","reason":"\u0000"}"#, 422, field("reason")),
        post(transitions, JSON, r#"{"state":"READY","idempotency_key":""}"#, 422, field("idempotency_key")),
        post(transitions, JSON, &huge, 413, None),
        post(transitions, "text/plain", ready, 415, None),
        post(&format!("/v1/agents/{long_id}/transitions"), JSON, ready, 400, parameter("agent_id")),
        post("/v1/agents/%FF%FE/transitions", JSON, ready, 400, parameter("agent_id")),
        get("/v1/agents/%00/history", 400, parameter("agent_id")),
        get(&format!("{history}?from=yesterday"), 400, parameter("from")),
        get(&format!("{history}?from=2026-02-30"), 400, parameter("from")),
        get(&format!("{history}?from=2020-01-01&to=2026-01-01"), 400, parameter("to")),
        get(&format!("{history}?form=2026-01-01"), 400, parameter("form")),
        get(&format!("{history}?to=2026-01-01&to=2026-01-02"), 400, parameter("to")),
        get(&format!("{history}?from=%FF"), 400, parameter("from")),
        get("/v1/reports/compliance?format=pdf", 400, parameter("format")),
        get("/v1/reports/compliance?tz=Mars/Olympus", 400, parameter("tz")),
        get("/v1/reports/definitions?report=payroll", 400, parameter("report")),
        get("/v1/reports/definitions?format=html", 400, parameter("format")),
        get("/v1/audit?from=2026-01-01&to=1999-01-01", 400, parameter("to")),
        get("/v1/live/series?family=agents&id=s_100", 400, parameter("family")),
        get("/v1/live/series?family=skills", 400, parameter("id")),
        get("/v1/live/series?family=skills&id=", 400, parameter("id")),
        get("/v1/live/series?family=queues&id=q_1&from=yesterday", 400, parameter("from")),
        ("DELETE", history.clone(), "", String::new(), 405, None),
        get("/v1/agents", 404, None),
    ];
    for (method, path, content_type, body, status, names) in cases {
        let mut request = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.address));
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let response = request.body(body.clone()).send().await.unwrap();
        let what = format!("{method} {path} {}", clip(&body, 60));
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert!(response.headers().contains_key("x-request-id"), "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status, "{what}");
        if let Some((key, name)) = names {
            assert_eq!(problem[key], name, "{what}: {problem}");
        }
    }

    // What clients normalise away: a `.` agent would be a path step on the platform.
    let (status, head, body) = raw_request(
        &app,
        "POST /v1/agents/./transitions HTTP/1.1",
        r#"{"state":"READY"}"#,
    )
    .await;
    assert_eq!(status, 400, "{head}\n{body}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert!(head.contains("x-request-id: "), "{head}");
    assert_eq!(app.sim.calls(SET_STATE), 0, "nothing reached the platform");
}

// ---------------------------------------------------------------------------------------
// The fuzz pass.

/// Cases of the pass with tokens and of the one without: enough to reach every route
/// (each tenant's twice: unprefixed and under `/v1/tenants/{tenant}`) with every kind of
/// input, in seconds on a shared 2-core machine.
const FUZZ_CASES_WITH_TOKENS: usize = 12_000;
const FUZZ_CASES_WITHOUT_TOKENS: usize = 7_000;
/// Cases for each of the console's pages (tag `console`), drawn apart from the API's: a
/// page takes no body and answers HTML or a 404, and drawing its cases from the same
/// pool would only thin out the API routes' rare answers.
const FUZZ_CASES_PER_PAGE: usize = 40;
/// Requests in flight at once.
const FUZZ_CONCURRENCY: usize = 4;

/// One generated request.
#[derive(Debug, Clone)]
struct Case {
    operation: usize,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    /// Every part of it is what the document asks for: the operation's method, each
    /// parameter and the body valid by their schemas (required ones present), a
    /// credential the operation takes, a JSON content type with a body, nothing else.
    /// The server must accept it (2xx, or a documented 308, 404, 409 or 429).
    valid: bool,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        for (name, value) in &self.headers {
            write!(f, "\n  {name}: {}", String::from_utf8_lossy(value))?;
        }
        if let Some(body) = &self.body {
            let text = String::from_utf8_lossy(body);
            write!(f, "\n  body: {}", clip(&text, 300))?;
        }
        if self.valid {
            write!(f, "\n  (schema-valid)")?;
        }
        Ok(())
    }
}

/// What a client of the tenant knows besides the document: the tenant's id, the ids of
/// its agents and teams, and its teams' names. A schema cannot list them, and a request
/// naming a tenant, agent or team there is not is rightly refused (404 for a path, 422
/// for a body).
#[derive(Debug, Clone)]
struct Known {
    tenant: String,
    agents: Vec<String>,
    teams: Vec<String>,
}

impl Known {
    fn of(app: &TestApp) -> Known {
        let agents = app.sim.sim.agents();
        let mut teams: Vec<String> = agents
            .iter()
            .flat_map(|a| [a.team_id.clone(), a.team_name.clone()])
            .collect();
        teams.sort();
        teams.dedup();
        Known {
            tenant: "default".to_owned(),
            agents: agents.into_iter().map(|a| a.id).collect(),
            teams,
        }
    }
}

/// The first `chars` characters of `text`.
fn clip(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// Percent-encodes all but unreserved bytes, so any text becomes one path segment.
fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Text that tends to break parsers.
fn hostile_text() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        Just("null".to_owned()),
        Just("-1".to_owned()),
        Just("9999-99-99".to_owned()),
        Just("2026-02-30T25:61:00Z".to_owned()),
        Just("+275760-09-13T00:00:00Z".to_owned()),
        Just("1970-01-01T00:00:00+25:00".to_owned()),
        Just("../../etc/passwd".to_owned()),
        Just("%".to_owned()),
        Just("\u{0}\u{1}\u{7f}".to_owned()),
        Just("\u{202e}\u{fffd}😀".to_owned()),
        "x{200,300}".prop_map(|s| s),
        any::<String>(),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
    .boxed()
}

/// Instants `hours` from now, as the document's `Instant` allows them: an RFC 3339
/// instant in UTC, one with an offset, or the date of the day.
fn instant(hours: std::ops::Range<i64>) -> BoxedStrategy<String> {
    hours
        .prop_flat_map(|h| {
            let at = chrono::Utc::now() + chrono::Duration::hours(h);
            let new_york = chrono::FixedOffset::west_opt(5 * 3600).unwrap();
            prop_oneof![
                Just(wfmd::time::rfc3339(at)),
                Just(
                    at.with_timezone(&new_york)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
                ),
                // A date is its midnight: a future one from the next day's, so it stays
                // in the future (today's midnight is past).
                Just(
                    (at + chrono::Duration::days(i64::from(h > 0)))
                        .format("%Y-%m-%d")
                        .to_string()
                ),
            ]
        })
        .boxed()
}

/// Plausible values of a string the document describes by `schema`, by name where the
/// name says more than a schema can: known agents and teams, and windows that start in
/// the past and end in the future (so `to` always follows `from`, and a missing one's
/// default too); else whatever the schema's pattern and lengths allow.
fn plausible(name: &str, schema: &Value, known: &Known) -> BoxedStrategy<String> {
    let pattern = schema["pattern"].as_str().and_then(|pattern| {
        let pattern = pattern.trim_start_matches('^').trim_end_matches('$');
        proptest::string::string_regex(pattern).ok()
    });
    let agents = proptest::sample::select(known.agents.clone());
    match name {
        // Agents the tenant has, mostly, so changes get past "no such agent"; any id
        // the documented pattern allows now and then (404 is documented for it).
        "agent_id" => match pattern {
            Some(pattern) => prop_oneof![4 => agents, 1 => pattern].boxed(),
            None => agents.boxed(),
        },
        // The tenant served, mostly, so its routes are reached; any id the documented
        // pattern allows now and then (404 is documented for it).
        "tenant" => match pattern {
            Some(pattern) => prop_oneof![4 => Just(known.tenant.clone()), 1 => pattern].boxed(),
            None => Just(known.tenant.clone()).boxed(),
        },
        // A bulk job's list: a job naming an agent the tenant lacks is refused whole.
        "agents" => agents.boxed(),
        "team" => proptest::sample::select(known.teams.clone()).boxed(),
        // A sign-in's token: one the daemon has (when it has any), so a schema-valid
        // sign-in gets past "not a configured token".
        "token" => proptest::sample::select(
            CALLERS
                .iter()
                .filter_map(|who| who.token())
                .filter(|token| *token != As::WrongToken.token().unwrap())
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
        .boxed(),
        "from" => instant(-120..-1),
        "to" => instant(1..72),
        // Unique, so two requests never share a key (a reused key with another body is
        // rightly refused).
        "idempotency_key" => "[A-Za-z0-9]{24}".boxed(),
        _ => {
            let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
            let max = schema["maxLength"]
                .as_u64()
                .map_or(usize::MAX, |m| m as usize);
            pattern
                .map(Strategy::boxed)
                .unwrap_or_else(|| "[A-Za-z0-9_-]{1,16}".boxed())
                .prop_filter("the schema's lengths", move |text| {
                    (min..=max).contains(&text.chars().count())
                })
                .boxed()
        }
    }
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            resolve(spec, &spec["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Any JSON value, small.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        hostile_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// The `required` names of `schema`.
fn required(schema: &Value) -> BTreeSet<String> {
    schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// A value that satisfies `schema`, as far as the keywords of this document go: `$ref`,
/// `const`, `enum`, `oneOf`/`anyOf` (alone, or as alternatives of `required` beside
/// `properties`), types, lengths, patterns, bounds, item counts, `uniqueItems`.
fn valid_json(spec: &Value, schema: &Value, name: &str, known: &Known) -> BoxedStrategy<Value> {
    let schema = resolve(spec, schema);
    if let Some(value) = schema.get("const") {
        return Just(value.clone()).boxed();
    }
    if let Some(values) = schema["enum"].as_array() {
        return proptest::sample::select(values.clone()).boxed();
    }
    for key in ["oneOf", "anyOf"] {
        let Some(options) = schema[key].as_array() else {
            continue;
        };
        let strategies: Vec<_> = if schema.get("properties").is_some() {
            // Alternatives of `required` beside the properties (`agents` or `team`):
            // each option requires its own names, and leaves out those only the other
            // options require, so exactly one option holds.
            options
                .iter()
                .map(|option| {
                    let own = required(option);
                    let others: BTreeSet<String> = options
                        .iter()
                        .flat_map(required)
                        .filter(|name| !own.contains(name))
                        .collect();
                    let mut merged = schema.clone();
                    let object = merged.as_object_mut().unwrap();
                    object.remove(key);
                    let all: BTreeSet<String> = required(schema).union(&own).cloned().collect();
                    object.insert("required".to_owned(), json!(all));
                    if let Some(properties) = object["properties"].as_object_mut() {
                        properties.retain(|name, _| !others.contains(name));
                    }
                    valid_json(spec, &merged, name, known)
                })
                .collect()
        } else {
            options
                .iter()
                .map(|option| valid_json(spec, option, name, known))
                .collect()
        };
        return proptest::strategy::Union::new(strategies).boxed();
    }
    let kind = match &schema["type"] {
        Value::String(kind) => kind.clone(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null")
            .to_owned(),
        _ => "object".to_owned(),
    };
    match kind.as_str() {
        "string" => plausible(name, schema, known).prop_map(Value::from).boxed(),
        "integer" => {
            let low = schema["minimum"].as_i64().unwrap_or(0);
            let high = schema["maximum"]
                .as_i64()
                .unwrap_or(low + 1_000)
                .min(low + 1_000);
            (low..=high).prop_map(Value::from).boxed()
        }
        "number" => {
            let low = schema["exclusiveMinimum"]
                .as_f64()
                .or_else(|| schema["minimum"].as_f64())
                .unwrap_or(0.0);
            (low + 0.25..low + 10.0).prop_map(|n| json!(n)).boxed()
        }
        "boolean" => any::<bool>().prop_map(Value::from).boxed(),
        "null" => Just(Value::Null).boxed(),
        "array" => {
            let min = schema["minItems"].as_u64().unwrap_or(0) as usize;
            let max = schema["maxItems"].as_u64().map_or(min + 3, |m| m as usize);
            let unique = schema["uniqueItems"] == true;
            prop::collection::vec(
                valid_json(spec, &schema["items"], name, known),
                min..=max.min(min + 3),
            )
            .prop_map(move |mut items| {
                if unique {
                    // Dropping repeats keeps at least one of each, so `minItems` (0 or
                    // 1 here) still holds.
                    let mut seen = BTreeSet::new();
                    items.retain(|item| seen.insert(item.to_string()));
                }
                Value::from(items)
            })
            .boxed()
        }
        _ => {
            let required = required(schema);
            let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
            for (field, field_schema) in schema["properties"].as_object().into_iter().flatten() {
                let value = valid_json(spec, field_schema, field, known);
                let field = field.clone();
                fields.push(if required.contains(&field) {
                    value.prop_map(move |v| Some((field.clone(), v))).boxed()
                } else {
                    prop::option::of(value)
                        .prop_map(move |v| v.map(|v| (field.clone(), v)))
                        .boxed()
                });
            }
            fields
                .prop_map(|fields| Value::Object(fields.into_iter().flatten().collect()))
                .boxed()
        }
    }
}

/// A body for `schema`: valid (and then marked so), or mutated in one of the ways
/// clients get it wrong (marked not valid, though a mutation may happen to be).
fn body(spec: &Value, schema: &Value, known: &Known) -> BoxedStrategy<(Vec<u8>, bool)> {
    let valid = valid_json(spec, schema, "body", known);
    let json = |value: Value| serde_json::to_vec(&value).unwrap();
    let invalid = move |bytes: Vec<u8>| (bytes, false);
    prop_oneof![
        4 => valid.clone().prop_map(move |v| (json(v), true)),
        1 => (valid.clone(), any::<prop::sample::Index>()).prop_map(move |(mut v, i)| {
            if let Some(map) = v.as_object_mut() && !map.is_empty() {
                let key = map.keys().nth(i.index(map.len())).unwrap().clone();
                map.remove(&key);
            }
            invalid(json(v))
        }),
        1 => (valid.clone(), "[a-z]{1,10}", any_json()).prop_map(move |(mut v, key, extra)| {
            if let Some(map) = v.as_object_mut() {
                map.insert(key, extra);
            }
            invalid(json(v))
        }),
        2 => (valid.clone(), any::<prop::sample::Index>(), any_json()).prop_map(move |(mut v, i, wrong)| {
            if let Some(map) = v.as_object_mut() && !map.is_empty() {
                let key = map.keys().nth(i.index(map.len())).unwrap().clone();
                map.insert(key, wrong);
            }
            invalid(json(v))
        }),
        1 => any_json().prop_map(move |v| invalid(json(v))),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(invalid),
        1 => (valid.clone(), any::<prop::sample::Index>()).prop_map(move |(v, i)| {
            let bytes = json(v);
            invalid(bytes[..i.index(bytes.len().max(1))].to_vec())
        }),
        1 => (1usize..3).prop_map(move |n| invalid(vec![b'{'; n * 40_000])),
        1 => Just(invalid(format!(r#"{{"state":"READY","reason":"{}"}}"#, "R".repeat(70_000)).into_bytes())),
    ]
    .boxed()
}

/// The value of a header that is not what it should be.
fn hostile_header() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        Just(b"".to_vec()),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        prop::collection::vec(0x80u8..=0xff, 1..8),
    ]
    .boxed()
}

/// What an `Authorization` header proves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Credential {
    /// No header.
    Nothing,
    /// A configured token of this role.
    Role(&'static str),
    /// A header that proves nothing: wrong token, wrong scheme, garbage.
    Other,
}

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 1,
        "supervisor" => 2,
        "admin" => 3,
        other => panic!("unknown role {other}"),
    }
}

impl Credential {
    /// Whether a request with it is one the document allows: without tokens configured
    /// the document declares no security (so none is needed), and open operations need
    /// none.
    fn enough_for(self, role: Option<&str>, tokens: bool) -> bool {
        match (self, role) {
            (Credential::Other, _) => false,
            (_, None) => true,
            (_, Some(_)) if !tokens => true,
            (Credential::Nothing, Some(_)) => false,
            (Credential::Role(has), Some(needs)) => rank(has) >= rank(needs),
        }
    }
}

fn authorization() -> BoxedStrategy<(Option<Vec<u8>>, Credential)> {
    let bearer = |who: As, role: &'static str| {
        (
            Some(format!("Bearer {}", who.token().unwrap()).into_bytes()),
            Credential::Role(role),
        )
    };
    let other = |value: Vec<u8>| (Some(value), Credential::Other);
    prop_oneof![
        2 => Just((None, Credential::Nothing)),
        1 => Just(other(format!("Bearer {}", As::WrongToken.token().unwrap()).into_bytes())),
        2 => Just(bearer(As::Viewer, "viewer")),
        2 => Just(bearer(As::Supervisor, "supervisor")),
        3 => Just(bearer(As::Admin, "admin")),
        1 => Just(other(format!("bearer   {}", As::Admin.token().unwrap()).into_bytes())),
        1 => Just(other(b"Basic YWRtaW46YWRtaW4=".to_vec())),
        1 => hostile_header().prop_map(other),
        1 => hostile_header().prop_map(move |v| other([b"Bearer ".to_vec(), v].concat())),
    ]
    .boxed()
}

/// A `Content-Type` header, and whether it is JSON.
fn content_type() -> BoxedStrategy<(Option<Vec<u8>>, bool)> {
    prop_oneof![
        6 => Just((Some(b"application/json".to_vec()), true)),
        1 => Just((Some(b"application/json; charset=utf-8".to_vec()), true)),
        1 => Just((Some(b"text/plain".to_vec()), false)),
        1 => Just((Some(b"application/x-www-form-urlencoded".to_vec()), false)),
        1 => Just((None, false)),
        1 => hostile_header().prop_map(|v| (Some(v), false)),
    ]
    .boxed()
}

/// A query parameter's name and value, when it is sent.
type QueryPair = Option<(String, String)>;

/// A valid value of a parameter, as its text.
fn parameter_value(spec: &Value, parameter: &Parameter, known: &Known) -> BoxedStrategy<String> {
    valid_json(spec, &parameter.schema, &parameter.name, known)
        .prop_map(|value| match value {
            Value::String(text) => text,
            other => other.to_string(),
        })
        .boxed()
}

/// Cases for one operation; `tokens`: whether the server has tokens configured.
fn case_for(
    spec: &Value,
    index: usize,
    operation: &Operation,
    known: &Known,
    tokens: bool,
) -> BoxedStrategy<Case> {
    let method = prop_oneof![
        12 => Just(operation.method.clone()),
        1 => proptest::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
            .prop_map(str::to_owned),
    ];
    let path_params: Vec<BoxedStrategy<(String, String, bool)>> = operation
        .parameters
        .iter()
        .filter(|p| p.location == "path")
        .map(|p| {
            let name = p.name.clone();
            prop_oneof![
                4 => parameter_value(spec, p, known).prop_map(|v| (encode_segment(&v), true)),
                2 => hostile_text().prop_map(|v| (encode_segment(&v), false)),
                1 => prop::sample::select(vec!["%FF", "%C0%AF", "%00", "%2F", "%2e%2e", "a%20b", "%25"])
                    .prop_map(|v| (v.to_owned(), false)),
            ]
            .prop_map(move |(value, valid)| (name.clone(), value, valid))
            .boxed()
        })
        .collect();
    let query_params: Vec<BoxedStrategy<(QueryPair, bool)>> = operation
        .parameters
        .iter()
        .filter(|p| p.location == "query")
        .map(|p| {
            let (name, required) = (p.name.clone(), p.required);
            prop::option::weighted(
                0.6,
                prop_oneof![
                    3 => parameter_value(spec, p, known).prop_map(|v| (v, true)),
                    1 => hostile_text().prop_map(|v| (v, false)),
                ],
            )
            .prop_map(move |value| match value {
                // A feed ticket is a credential, not data: only one just issued works.
                Some((v, valid)) => (Some((name.clone(), v)), valid && name != "ticket"),
                None => (None, !required),
            })
            .boxed()
        })
        .collect();
    let query_suffix = prop_oneof![
        8 => Just(("", true)),
        1 => prop::sample::select(vec!["&", "&=", "&from", "&unknown=1", "&%FF=%FE", "&to=2026-01-01&to=2026-01-02", ";x=1"])
            .prop_map(|suffix| (suffix, false)),
    ];
    let headers = (
        authorization(),
        content_type(),
        prop::option::weighted(0.2, hostile_header()),
        prop::option::weighted(0.1, hostile_header()),
    );
    let body_required = operation.body_required;
    let body = match &operation.body {
        Some(schema) => prop::option::weighted(0.95, body(spec, schema, known))
            .prop_map(move |body| match body {
                Some((bytes, valid)) => (Some(bytes), valid),
                None => (None, !body_required),
            })
            .boxed(),
        None => prop::option::weighted(
            0.1,
            any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        )
        // A body the document requires in a type other than JSON (a schedules CSV) is
        // none the fuzzer makes, so no request it sends there is a valid one.
        .prop_map(move |body| {
            let valid = body.is_none() && !body_required;
            (body, valid)
        })
        .boxed(),
    };
    let template = operation.path.clone();
    let own_method = operation.method.clone();
    let role = operation.role.clone();
    // A WebSocket handshake takes headers (`Upgrade`, `Sec-WebSocket-Key`) no OpenAPI
    // document describes, so no request generated from it can be a valid one.
    let describable = !operation.statuses.contains(&101);
    (
        method,
        path_params,
        query_params,
        query_suffix,
        headers,
        body,
    )
        .prop_map(
            move |(method, path_params, query, (suffix, plain), headers, (body, body_valid))| {
                let mut valid = describable && method == own_method && plain && body_valid;
                let mut path = template.clone();
                for (name, value, ok) in path_params {
                    path = path.replace(&format!("{{{name}}}"), &value);
                    valid &= ok;
                }
                let mut serializer = form_urlencoded::Serializer::new(String::new());
                for (pair, ok) in query {
                    valid &= ok;
                    if let Some((name, value)) = pair {
                        serializer.append_pair(&name, &value);
                    }
                }
                let query = format!("{}{suffix}", serializer.finish());
                let (
                    (authorization, credential),
                    (content_type, json),
                    request_id,
                    idempotency_key,
                ) = headers;
                valid &= credential.enough_for(role.as_deref(), tokens);
                valid &= if body.is_some() {
                    json
                } else {
                    content_type.is_none() || json
                };
                // Headers the document does not offer, with values nobody should send.
                valid &= request_id.is_none() && idempotency_key.is_none();
                let headers = [
                    ("authorization", authorization),
                    ("content-type", content_type),
                    ("x-request-id", request_id),
                    ("idempotency-key", idempotency_key),
                ]
                .into_iter()
                .filter_map(|(name, value)| Some((name.to_owned(), value?)))
                .collect();
                Case {
                    operation: index,
                    method,
                    path,
                    query,
                    headers,
                    body,
                    valid,
                }
            },
        )
        .boxed()
}

/// Sends `case` on a connection of its own; `None` when the client cannot express it
/// (an invalid header value).
///
/// A fresh connection per case, because a server may rightly close a connection after
/// answering before the whole body arrived (413, 401), and a client that reused it would
/// report the next case as unanswered.
async fn send(
    http: &reqwest::Client,
    address: &str,
    case: &Case,
) -> Option<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
    let mut url = format!("{address}{}", case.path);
    if !case.query.is_empty() {
        url = format!("{url}?{}", case.query);
    }
    let mut request = http.request(case.method.parse().ok()?, url);
    for (name, value) in &case.headers {
        let value = reqwest::header::HeaderValue::from_bytes(value).ok()?;
        request = request.header(name, value);
    }
    if let Some(body) = &case.body {
        request = request.body(body.clone());
    }
    let response = request
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("no answer to\n{case}\n{e:?}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // The live feed never ends; its status and headers are the answer.
    if crate::auth::is_event_stream(&headers) {
        return Some((status, headers, Vec::new()));
    }
    let body = response.bytes().await.unwrap().to_vec();
    Some((status, headers, body))
}

/// What every answer must be: no 5xx, a request id, problem+json on every 4xx, a
/// status the spec documents for the operation, and for a schema-valid request an
/// acceptance: 2xx, or a documented 308 (`/t/{tenant}` to its page), 404 (no such agent
/// or job), 409 (a refused change, a job in the wrong state) or 429.
fn check(
    case: &Case,
    operation: &Operation,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    let fail = |why: &str| {
        Err(format!(
            "{why}: {status} for\n{case}\n-> {}",
            clip(&text, 500)
        ))
    };
    if status >= 500 {
        return fail("a 5xx");
    }
    if !headers.contains_key("x-request-id") {
        return fail("no x-request-id");
    }
    if case.valid {
        let accepted = (200..300).contains(&status)
            || (matches!(status, 308 | 404 | 409 | 429) && operation.statuses.contains(&status));
        if !accepted {
            return fail("a schema-valid request refused");
        }
    }
    if case.method == "HEAD" {
        return Ok(()); // No body to check.
    }
    if (400..500).contains(&status) {
        if headers
            .get("content-type")
            .is_none_or(|v| v != "application/problem+json")
        {
            return fail("a 4xx that is not problem+json");
        }
        let problem: Value = match serde_json::from_slice(body) {
            Ok(problem) => problem,
            Err(_) => return fail("a problem that is not JSON"),
        };
        if problem["status"] != status
            || !problem["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:wfmd:problem:"))
        {
            return fail("a malformed problem");
        }
    }
    // The spec must document what the operation answers (another method gets 405, an
    // unroutable path 404, both outside the operation).
    // Nor is a path whose parameter is a dot segment (`..`, `%2e%2e`) the operation's:
    // the client resolves it (`/t/..` is `/`).
    let dot_segment = case.path.split('/').any(|segment| {
        let segment = segment.to_ascii_lowercase().replace("%2e", ".");
        segment == "." || segment == ".."
    });
    let same_operation = case.method == operation.method
        && !dot_segment
        && !text.contains("urn:wfmd:problem:no-such-route");
    if same_operation && !operation.statuses.contains(&status) {
        return fail(&format!(
            "undocumented status (documented: {:?})",
            operation.statuses
        ));
    }
    // And the content type it documents for that status.
    if same_operation && let Some(documented) = operation.content_types.get(&status) {
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        let matches = documented
            .iter()
            .any(|d| d == content_type || d.split(';').next().unwrap_or("").trim() == media);
        if !matches {
            return fail(&format!(
                "content type `{content_type}` not documented (documented: {documented:?})"
            ));
        }
    }
    Ok(())
}

/// Statuses seen per operation, of every case and of the schema-valid ones.
struct Seen {
    all: BTreeMap<String, BTreeSet<u16>>,
    valid: BTreeMap<String, BTreeSet<u16>>,
}

async fn fuzz(app: &TestApp, seed: u8, count: usize, tokens: bool) -> Seen {
    let spec = fetch_spec(app).await;
    let operations = operations(&spec);
    let known = Known::of(app);
    // Operations with a body have more ways to go wrong, so they get more cases; so do
    // those with more required parameters, each of which a case may get wrong.
    let strategies: Vec<_> = operations
        .iter()
        .enumerate()
        .map(|(i, op)| {
            (
                if op.body.is_some() {
                    4
                } else {
                    1 + op.parameters.iter().filter(|p| p.required).count() as u32
                },
                case_for(&spec, i, op, &known, tokens),
            )
        })
        .collect();
    let (pages, api): (Vec<_>, Vec<_>) = strategies
        .into_iter()
        .enumerate()
        .partition(|(i, _)| operations[*i].page);
    let strip = |pool: Vec<(usize, _)>| pool.into_iter().map(|(_, s)| s).collect::<Vec<_>>();
    let mut cases: Vec<Case> = Vec::new();
    for (pool, count) in [
        (strip(api), count),
        (
            strip(pages),
            FUZZ_CASES_PER_PAGE * operations.iter().filter(|o| o.page).count(),
        ),
    ] {
        if pool.is_empty() {
            continue;
        }
        let any_case = proptest::strategy::Union::new_weighted(pool);
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
        );
        cases.extend((0..count).map(|_| any_case.new_tree(&mut runner).unwrap().current()));
    }
    crate::helpers::http_client();
    // A redirect is the operation's answer (`/t/{tenant}` documents its 308), not the
    // page it points at.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let results: Vec<_> = futures::stream::iter(cases)
        .map(|case| {
            let (http, address) = (&http, &app.address);
            async move {
                let answer = send(http, address, &case).await;
                (case, answer)
            }
        })
        .buffer_unordered(FUZZ_CONCURRENCY)
        .collect()
        .await;
    let mut failures = Vec::new();
    let mut seen = Seen {
        all: BTreeMap::new(),
        valid: BTreeMap::new(),
    };
    for (case, answer) in &results {
        let Some((status, headers, body)) = answer else {
            continue;
        };
        let operation = &operations[case.operation];
        let name = format!("{} {}", operation.method, operation.path);
        seen.all.entry(name.clone()).or_default().insert(*status);
        if case.valid {
            seen.valid.entry(name).or_default().insert(*status);
        }
        if let Err(failure) = check(case, operation, *status, headers, body) {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n\n")
    );
    eprintln!(
        "fuzz pass, seed {seed}: statuses by operation: {:#?}\nof schema-valid requests: {:#?}",
        seen.all, seen.valid
    );
    for operation in &operations {
        let name = format!("{} {}", operation.method, operation.path);
        // Every operation was reached, and not only refused.
        let statuses = &seen.all[&name];
        assert!(
            statuses.iter().any(|s| !matches!(s, 401 | 403 | 405)),
            "{name} was never let in: {statuses:?}"
        );
        // And sent schema-valid requests, so the acceptance check covered it.
        assert!(
            operation.statuses.contains(&101)
                || operation.foreign_body
                || seen.valid.contains_key(&name),
            "{name} never got a schema-valid request"
        );
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_every_route_from_the_spec_gets_no_5xx_and_accepts_every_schema_valid_request() {
    let app = spawn_with_roles().await;
    let seen = fuzz(&app, 7, FUZZ_CASES_WITH_TOKENS, true).await;
    // What an operation answered at both its addresses (unprefixed and under its
    // tenant): one handler, and a schema-valid case is rare enough (a known agent, a
    // settable state, every header right) that the pass's share of one address depends
    // on how many routes there are to share the cases with.
    let at_both = |statuses: &BTreeMap<String, BTreeSet<u16>>, method: &str, path: &str| {
        let in_tenant = format!("{method} /v1/tenants/{{tenant}}{}", &path[3..]);
        [format!("{method} {path}"), in_tenant]
            .iter()
            .filter_map(|name| statuses.get(name))
            .flatten()
            .copied()
            .collect::<BTreeSet<u16>>()
    };
    // The pass reached the handlers' own answers, not only the gate's.
    let transitions = at_both(&seen.all, "POST", "/v1/agents/{agent_id}/transitions");
    for status in [200, 400, 401, 403, 404, 409, 413, 415, 422] {
        assert!(
            transitions.contains(&status),
            "{status} never seen: {transitions:?}"
        );
    }
    // Schema-valid jobs and queries were taken, not only answered.
    for (operation, status) in [
        ("/v1/bulk-transitions", 202),
        ("/v1/analytics/queries", 202),
        ("/v1/agents/{agent_id}/transitions", 200),
    ] {
        let valid = at_both(&seen.valid, "POST", operation);
        assert!(
            valid.contains(&status),
            "POST {operation}: no schema-valid request got {status}: {valid:?}"
        );
    }
    let verified = wfmd::store::audit::verify(app.store.reader())
        .await
        .unwrap();
    assert!(
        verified.is_intact(),
        "the fuzzed changes kept the audit chain intact"
    );
    app.stop().await;

    // Without tokens every request reaches its handler.
    let app = TestApp::spawn().await;
    fuzz(&app, 11, FUZZ_CASES_WITHOUT_TOKENS, false).await;
}

#[tokio::test]
async fn without_tokens_the_document_declares_no_security_and_with_tokens_it_does() {
    let open = TestApp::spawn().await;
    let spec = fetch_spec(&open).await;
    assert!(
        spec["components"]["securitySchemes"].is_null(),
        "{}",
        spec["components"]
    );
    let text = spec["paths"].to_string();
    assert!(
        !text.contains("\"security\""),
        "an operation still declares security"
    );
    for operation in operations(&spec) {
        assert!(
            !operation.statuses.contains(&401) && !operation.statuses.contains(&403),
            "{} {} documents 401/403 without tokens",
            operation.method,
            operation.path
        );
    }

    let secured = spawn_with_roles().await;
    let spec = fetch_spec(&secured).await;
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let transitions = &spec["paths"]["/v1/agents/{agent_id}/transitions"]["post"];
    assert_eq!(transitions["security"], json!([{"bearer": ["supervisor"]}]));
    assert!(transitions["responses"]["401"].is_object());
}

#[tokio::test]
async fn a_request_without_a_token_gets_401_before_its_parameters_or_body_are_read() {
    let app = spawn_with_roles().await;
    let spec = fetch_spec(&app).await;
    let mut checked = 0;
    for operation in operations(&spec).iter().filter(|o| o.role.is_some()) {
        // Every parameter malformed, an unknown one besides, and a body that is not JSON.
        let path = operation
            .path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "%FF%FE"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let response = app
            .http
            .request(
                operation.method.parse().unwrap(),
                format!("{}{path}?from=yesterday&format=xml&unknown=1", app.address),
            )
            .header("content-type", "text/plain")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            401,
            "{} {} answered a stranger about its input",
            operation.method,
            operation.path
        );
        checked += 1;
    }
    assert!(checked >= 6, "{checked}");
}

#[tokio::test]
async fn an_idempotency_key_is_as_long_as_the_document_counts_it_in_characters() {
    let app = TestApp::spawn().await;
    let spec = fetch_spec(&app).await;
    let key = &spec["components"]["schemas"]["TransitionBody"]["properties"]["idempotency_key"];
    assert_eq!(key["maxLength"], 255);
    let agent = app.sim.free_agents().remove(0).id;
    // JSON Schema counts characters; each of these is two bytes in UTF-8.
    let longest = "é".repeat(255);
    let response = app
        .transition(
            &agent,
            json!({"state": "READY", "idempotency_key": longest}),
        )
        .await;
    let status = response.status();
    assert_eq!(status, 200, "{}", response.text().await.unwrap());
    let response = app
        .transition(
            &agent,
            json!({"state": "READY", "idempotency_key": "é".repeat(256)}),
        )
        .await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "idempotency_key", "{problem}");
    // A header key that cannot be read is refused rather than dropped, which would
    // make the change without the at-most-once its caller asked for.
    let response = app
        .http
        .post(format!("{}/v1/agents/{agent}/transitions", app.address))
        .header("content-type", "application/json")
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"cl\xe9").unwrap(),
        )
        .body(r#"{"state":"READY"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["parameter"], "idempotency-key", "{problem}");
}

#[tokio::test]
async fn request_bodies_offer_only_settable_states_and_every_one_is_accepted() {
    let app = spawn_with_roles().await;
    let spec = fetch_spec(&app).await;
    let body = &spec["paths"]["/v1/agents/{agent_id}/transitions"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    let schema = resolve(&spec, body);
    let state = resolve(&spec, &schema["properties"]["state"]);
    let offered: Vec<&str> = state["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        ["READY", "NOT_READY", "PAUSED", "IDLE", "LOGGED_OUT"]
    );
    // Responses still describe observed states.
    assert!(
        spec["components"]["schemas"]["AgentState"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("ACW"))
    );
    let agent_id = resolve(
        &spec,
        &spec["paths"]["/v1/agents/{agent_id}/transitions"]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "agent_id")
            .unwrap()["schema"],
    );
    // Bulk jobs take the same ids.
    assert_eq!(
        spec["components"]["schemas"]["BulkBody"]["properties"]["agents"]["items"],
        json!({"$ref": "#/components/schemas/AgentId"})
    );
    // Every id the documented pattern allows is one the server takes: 1-128 printable
    // ASCII characters, not `.` or `..`.
    let pattern = agent_id["pattern"].as_str().unwrap();
    assert!(
        pattern.starts_with('^') && pattern.ends_with('$'),
        "{pattern}"
    );
    let ids = proptest::string::string_regex(&pattern[1..pattern.len() - 1]).unwrap();
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[3; 32]),
    );
    let mut short = 0;
    for _ in 0..3_000 {
        let id = ids.new_tree(&mut runner).unwrap().current();
        assert!(
            !id.is_empty()
                && id.len() <= 128
                && id.chars().all(|c| c.is_ascii_graphic())
                && id != "."
                && id != "..",
            "the pattern allows `{id}`"
        );
        short += usize::from(id.len() <= 2);
    }
    assert!(
        short > 0,
        "the pattern's short alternatives were never taken"
    );
    assert_eq!(agent_id["maxLength"], 128);

    // Schema-valid requests are not refused as invalid (400/422).
    let agent = app.sim.free_agents().remove(0).id;
    for state in offered {
        let response = app
            .http
            .post(format!("{}/v1/agents/{agent}/transitions", app.address))
            .bearer_auth(As::Admin.token().unwrap())
            .json(&json!({"state": state}))
            .send()
            .await
            .unwrap();
        assert!(
            !matches!(response.status().as_u16(), 400 | 422),
            "{state}: {}",
            response.text().await.unwrap()
        );
    }
}

// ---------------------------------------------------------------------------------------
// What schemathesis found, pinned; then schemathesis itself.

#[tokio::test]
async fn a_defer_for_outside_its_documented_pattern_is_refused_naming_it() {
    let app = TestApp::spawn().await;
    let spec = fetch_spec(&app).await;
    let pattern =
        spec["components"]["schemas"]["TransitionBody"]["properties"]["defer_for"]["pattern"]
            .as_str()
            .unwrap()
            .to_owned();
    assert_eq!(
        spec["components"]["schemas"]["BulkBody"]["properties"]["defer_for"]["pattern"],
        pattern.as_str()
    );
    let agent = app.sim.free_agents().remove(0).id;
    // Durations humantime reads, the pattern does not allow: each refused before any
    // platform call.
    for wait in ["10 m", "1h 1s", "10min", "1h30m", "010m", "25h", "0s"] {
        let response = app
            .transition(
                &agent,
                json!({"state": "READY", "when_busy": "defer", "defer_for": wait}),
            )
            .await;
        assert_eq!(response.status(), 422, "{wait}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], "defer_for", "{wait}: {problem}");
    }
    assert_eq!(
        app.sim.calls(SET_STATE),
        0,
        "a refused wait reached the platform"
    );
    // The pattern's own examples are taken.
    for wait in ["90s", "10m", "24h"] {
        let response = app
            .transition(
                &agent,
                json!({"state": "READY", "when_busy": "defer", "defer_for": wait}),
            )
            .await;
        let status = response.status();
        assert!(
            status.is_success(),
            "{wait}: {status} {}",
            response.text().await.unwrap()
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_last_event_id_the_document_does_not_allow_is_refused_naming_it() {
    let app = TestApp::spawn().await;
    let spec = fetch_spec(&app).await;
    let declared = spec["paths"]["/v1/events"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "last_event_id")
        .unwrap()["schema"]
        .clone();
    assert_eq!(declared["pattern"], "^[!-~]*$");
    assert_eq!(declared["maxLength"], 64);
    let long = "e".repeat(65);
    let refused: [(&str, &str, &[u8]); 5] = [
        ("?last_event_id=%C3%A9vt_1", "last_event_id", b""),
        ("?last_event_id=evt%201", "last_event_id", b""),
        (&format!("?last_event_id={long}"), "last_event_id", b""),
        ("", "Last-Event-ID", "évt_1".as_bytes()),
        ("", "Last-Event-ID", b"evt 1"),
    ];
    for (query, parameter, header) in refused {
        let mut request = app.http.get(format!("{}/v1/events{query}", app.address));
        if !header.is_empty() {
            request = request.header(
                "last-event-id",
                reqwest::header::HeaderValue::from_bytes(header).unwrap(),
            );
        }
        let response = request.send().await.unwrap();
        let what = format!("{query} {}", String::from_utf8_lossy(header));
        assert_eq!(response.status(), 400, "{what}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["parameter"], parameter, "{what}: {problem}");
    }
    // One the pattern allows, known or not, opens the feed.
    let feed = crate::live::Sse::open(&app.address, "/v1/events?last_event_id=evt_0", &[]).await;
    drop(feed);
    app.stop().await;
}

#[tokio::test]
async fn an_authorisation_takes_as_many_agents_as_its_schema_allows_and_no_more() {
    let app = TestApp::spawn().await;
    let spec = fetch_spec(&app).await;
    let agents = &spec["components"]["schemas"]["AuthoriseBody"]["properties"]["agents"];
    let most = agents["maxItems"].as_u64().unwrap() as usize;
    // An agent listed twice counts once (tests/api/authorisations.rs), so the schema
    // does not call such a list invalid.
    assert!(agents.get("uniqueItems").is_none(), "{agents}");
    let longest = spec["components"]["schemas"]["AgentId"]["maxLength"]
        .as_u64()
        .unwrap() as usize;
    let url = format!("{}/v1/adherence/authorisations", app.address);
    let now = chrono::Utc::now();
    let body = |agents: Vec<String>| {
        json!({
            "agents": agents,
            "from": wfmd::time::rfc3339(now),
            "to": wfmd::time::rfc3339(now + chrono::Duration::hours(1)),
            "reason": "training day",
        })
    };
    // As many agents as the schema allows, each as long as an id may be: taken, not 413.
    let ids: Vec<String> = (0..most).map(|i| format!("{i:0>longest$}")).collect();
    let response = app
        .http
        .post(&url)
        .json(&body(ids.clone()))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(status, 201, "{}", response.text().await.unwrap());
    // One more is refused naming the field, even when it repeats one (the list is
    // counted as sent, as `maxItems` counts it).
    for extra in ["u_extra", ids[0].as_str()] {
        let mut over = ids.clone();
        over.push(extra.to_owned());
        let response = app.http.post(&url).json(&body(over)).send().await.unwrap();
        assert_eq!(response.status(), 422, "{extra}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], "agents", "{problem}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_the_live_feed_matches_the_schema_the_document_declares() {
    let python = tokio::task::spawn_blocking(openapi_spec_validator);
    let app = TestApp::spawn().await;
    let spec = fetch_spec(&app).await;
    let declared = &spec["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
    assert_eq!(declared["$ref"], "#/components/schemas/FeedEvent");
    // A fresh feed: the snapshot, then a change's event; a resumed one: metrics first,
    // then the events after the id.
    let mut events = Vec::new();
    let mut feed = crate::live::Sse::open(&app.address, "/v1/events", &[]).await;
    let snapshot = feed.next_of("snapshot").await;
    let agent = app.sim.free_agents().remove(0).id;
    let response = app.transition(&agent, json!({"state": "NOT_READY"})).await;
    assert_eq!(response.status(), 200);
    let changed = feed.next_of("agent.state_changed").await;
    let resume = changed.id.clone().unwrap();
    // The agent's row of real-time adherence follows its state.
    let row = feed.next_of("adherence.changed").await;
    assert_eq!(row.data["data"]["id"], agent.as_str());
    events.extend([snapshot, changed, row]);
    let response = app.transition(&agent, json!({"state": "READY"})).await;
    assert_eq!(response.status(), 200);
    let mut resumed = crate::live::Sse::open(
        &app.address,
        "/v1/events",
        &[("last-event-id", resume.as_str())],
    )
    .await;
    events.push(resumed.next_of("metrics").await);
    events.push(resumed.next_of("agent.state_changed").await);
    // As an `EventSource` (and schemathesis) reads them: `data` is the JSON text.
    let read: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut event = json!({"event": e.event, "data": e.data.to_string()});
            if let Some(id) = &e.id {
                event["id"] = json!(id);
            }
            event
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (spec_file, events_file) = (dir.path().join("spec.json"), dir.path().join("events.json"));
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    std::fs::write(&events_file, Value::from(read).to_string()).unwrap();
    let python = python.await.unwrap();
    let verdict = tokio::task::spawn_blocking(move || {
        run(
            "an event of the feed does not match the declared schema",
            Command::new(python)
                .args(["-c", VALIDATE_EVENTS])
                .args([&spec_file, &events_file]),
        )
    })
    .await
    .unwrap();
    assert_eq!(verdict.trim(), "5 events valid", "{verdict}");
    app.stop().await;
}

/// Validates each event of the file `argv[2]` against the `FeedEvent` schema of the
/// document `argv[1]`, and its `data` against `FeedMessage` (JSON Schema treats
/// `contentSchema` as a note, so it is applied here, as schemathesis applies it).
const VALIDATE_EVENTS: &str = r##"
import json, sys
from jsonschema import Draft202012Validator
spec = json.load(open(sys.argv[1]))
events = json.load(open(sys.argv[2]))
def validator(name):
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": spec["components"]})
event, message = validator("FeedEvent"), validator("FeedMessage")
errors = []
for e in events:
    errors += [f"{e['event']}: {x.message}" for x in event.iter_errors(e)]
    errors += [f"{e['event']} data: {x.message[:300]}" for x in message.iter_errors(json.loads(e["data"]))]
if errors:
    sys.exit("\n".join(errors))
print(f"{len(events)} events valid")
"##;

/// schemathesis, pinned (its checks and generators change between versions).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Examples per operation, which bounds the run: about 1,850 requests over the main
/// routes (each tenant's copy of a route is the same handler), 50 s alone on a 2-core
/// machine, 3.5 minutes beside the fuzz pass with the cores otherwise busy.
const SCHEMATHESIS_EXAMPLES: &str = "25";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_with_every_check_finds_no_failure_on_the_main_routes() {
    let python = tokio::task::spawn_blocking(|| python_venv(&[SCHEMATHESIS]));
    let app = spawn_with_roles().await;
    let (_, dir, spec_file) = spec_file(&app).await;
    let known = Known::of(&app);
    let here = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("api");
    let python = python.await.unwrap();
    let schemathesis = python.with_file_name("schemathesis");
    let reports = dir.path().join("reports");
    let mut command = Command::new(&python);
    command
        .arg(&schemathesis)
        .args(["--config-file"])
        .arg(here.join("schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", app.address)])
        .args(["--checks", "all", "--max-examples", SCHEMATHESIS_EXAMPLES])
        // One worker: Python 3.11's `ast.parse`, which Hypothesis calls to describe its
        // strategies, fails now and then when two threads parse at once ("AST constructor
        // recursion depth mismatch", CPython gh-106905), and schemathesis' workers are
        // threads.
        .args(["--seed", "53", "--workers", "1"])
        // Hang detectors, not speed targets (`--checks all` would fail a response
        // slower than 10 s, which a loaded 2-core CI machine may give).
        .args(["--request-timeout", "30", "--max-response-time", "60"])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", As::Admin.token().unwrap()),
        ])
        // The WebSocket feed is no request and answer a document can describe, and a
        // schedules import is a CSV file no schema describes (tests/api/without_wfm.rs
        // sends real ones); each tenant's copy of a route is the same handler.
        .args([
            "--exclude-path-regex",
            r"^/v1/tenants/\{tenant\}/|/ws$|/schedules/imports$",
        ])
        .args(["--report", "json", "--report-dir"])
        .arg(&reports)
        .args(["--output-truncate", "true", "--no-color"])
        // Its caches (and Hypothesis's) go to the test's folder, not the work tree.
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", &here)
        .env("WFMD_SPEC", &spec_file)
        .env("WFMD_AGENTS", known.agents.join(","))
        .env("WFMD_TEAMS", known.teams.join(","));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("schemathesis runs");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let report = std::fs::read_dir(&reports)
        .unwrap_or_else(|e| panic!("no report ({e}):\n{said}"))
        .filter_map(Result::ok)
        .find(|f| f.file_name().to_string_lossy().ends_with(".json"))
        .unwrap_or_else(|| panic!("no JSON report:\n{said}"));
    let report: Value = serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    let tail: String = said
        .chars()
        .skip(said.chars().count().saturating_sub(20_000))
        .collect();
    assert_eq!(
        report["failures"],
        json!([]),
        "schemathesis failures:\n{tail}"
    );
    assert_eq!(report["errors"], json!([]), "schemathesis errors:\n{tail}");
    assert!(output.status.success(), "{tail}");
    // It reached the handlers: jobs were taken and changes made.
    assert!(
        report["operations"]["tested"].as_u64().unwrap() >= 25,
        "{report}"
    );
    eprintln!(
        "schemathesis: {} cases, {} refusals for documented cross-field rules",
        report["test_cases"]["generated"], report["filtered"]
    );
    app.stop().await;
}
