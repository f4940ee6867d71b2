//! `/openapi.json` against the running API: the spec and the routes agree, hostile
//! input gets 4xx problems naming the field or parameter, and a fuzz pass over every
//! route (generated from the spec) gets no 5xx.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{As, ROUTES, fill_path, spawn_with_roles};
use crate::helpers::{SET_STATE, TestApp};

/// One operation of the spec.
#[derive(Debug, Clone)]
struct Operation {
    method: String,
    path: String,
    /// The least role it needs (`None`: open).
    role: Option<String>,
    /// (name, in, schema) of each parameter.
    parameters: Vec<(String, String, Value)>,
    /// The JSON schema of the body, `$ref`s resolved on use.
    body: Option<Value>,
    /// Documented statuses.
    statuses: BTreeSet<u16>,
    /// Documented content types of each status that has a body.
    content_types: BTreeMap<u16, BTreeSet<String>>,
}

async fn fetch_spec(app: &TestApp) -> Value {
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
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_owned(),
                        p["in"].as_str().unwrap().to_owned(),
                        p["schema"].clone(),
                    )
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
                statuses,
                content_types,
            });
        }
    }
    found
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
    let in_table: BTreeMap<(String, String), Option<String>> = ROUTES
        .iter()
        .map(|row| {
            (
                (row.method.to_owned(), row.path.to_owned()),
                row.role.map(str::to_owned),
            )
        })
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
/// with every kind of input, in seconds on a shared 2-core machine.
const FUZZ_CASES_WITH_TOKENS: usize = 4_000;
const FUZZ_CASES_WITHOUT_TOKENS: usize = 1_500;
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
        Ok(())
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

/// Plausible values for the parameters wfmd has, by name.
fn plausible(name: &str, schema: &Value) -> BoxedStrategy<String> {
    let from_pattern = schema["pattern"].as_str().and_then(|pattern| {
        let pattern = pattern.trim_start_matches('^').trim_end_matches('$');
        proptest::string::string_regex(pattern).ok()
    });
    // Agents the simulator has, mostly, so changes get past "no such agent"; any id the
    // documented pattern allows now and then.
    if name == "agent_id" {
        let known = (1..=70u32).prop_map(|n| format!("u_{n:03}"));
        return match from_pattern {
            Some(pattern) => prop_oneof![4 => known, 1 => pattern].boxed(),
            None => known.boxed(),
        };
    }
    if let Some(strategy) = from_pattern {
        return strategy.boxed();
    }
    match name {
        "agent_id" => (1..=70u32).prop_map(|n| format!("u_{n:03}")).boxed(),
        "from" | "to" => prop_oneof![
            Just("2026-11-20".to_owned()),
            (-72i64..72)
                .prop_map(|h| wfmd::time::rfc3339(chrono::Utc::now() + chrono::Duration::hours(h))),
            Just("2026-11-20T09:00:00-05:00".to_owned()),
        ]
        .boxed(),
        "tz" => prop_oneof![
            Just("UTC".to_owned()),
            Just("America/New_York".to_owned()),
            Just("Asia/Kolkata".to_owned()),
        ]
        .boxed(),
        _ => "[A-Za-z0-9_-]{1,16}".boxed(),
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

/// A value that satisfies `schema` (as far as the schemas here go).
fn valid_json(spec: &Value, schema: &Value, name: &str) -> BoxedStrategy<Value> {
    let schema = resolve(spec, schema);
    if let Some(values) = schema["enum"].as_array() {
        return proptest::sample::select(values.clone()).boxed();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let options: Vec<_> = options
                .iter()
                .map(|option| valid_json(spec, option, name))
                .collect();
            return proptest::strategy::Union::new(options).boxed();
        }
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
        "string" => plausible(name, schema).prop_map(Value::from).boxed(),
        "integer" => (0i64..1000).prop_map(Value::from).boxed(),
        "boolean" => any::<bool>().prop_map(Value::from).boxed(),
        "null" => Just(Value::Null).boxed(),
        "array" => prop::collection::vec(valid_json(spec, &schema["items"], name), 0..3)
            .prop_map(Value::from)
            .boxed(),
        _ => {
            let required: BTreeSet<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
            for (field, field_schema) in schema["properties"].as_object().into_iter().flatten() {
                let value = valid_json(spec, field_schema, field);
                let field = field.clone();
                fields.push(if required.contains(field.as_str()) {
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

/// A body for `schema`: valid, or mutated in one of the ways clients get it wrong.
fn body(spec: &Value, schema: &Value) -> BoxedStrategy<Vec<u8>> {
    let valid = valid_json(spec, schema, "body");
    let json = |value: Value| serde_json::to_vec(&value).unwrap();
    prop_oneof![
        4 => valid.clone().prop_map(json),
        1 => (valid.clone(), any::<prop::sample::Index>()).prop_map(move |(mut v, i)| {
            if let Some(map) = v.as_object_mut() && !map.is_empty() {
                let key = map.keys().nth(i.index(map.len())).unwrap().clone();
                map.remove(&key);
            }
            json(v)
        }),
        1 => (valid.clone(), "[a-z]{1,10}", any_json()).prop_map(move |(mut v, key, extra)| {
            if let Some(map) = v.as_object_mut() {
                map.insert(key, extra);
            }
            json(v)
        }),
        2 => (valid.clone(), any::<prop::sample::Index>(), any_json()).prop_map(move |(mut v, i, wrong)| {
            if let Some(map) = v.as_object_mut() && !map.is_empty() {
                let key = map.keys().nth(i.index(map.len())).unwrap().clone();
                map.insert(key, wrong);
            }
            json(v)
        }),
        1 => any_json().prop_map(json),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (valid.clone(), any::<prop::sample::Index>()).prop_map(move |(v, i)| {
            let bytes = json(v);
            bytes[..i.index(bytes.len().max(1))].to_vec()
        }),
        1 => (1usize..3).prop_map(|n| vec![b'{'; n * 40_000]),
        1 => Just(format!(r#"{{"state":"READY","reason":"{}"}}"#, "R".repeat(70_000)).into_bytes()),
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

fn authorization() -> BoxedStrategy<Option<Vec<u8>>> {
    let bearer = |token: &str| Some(format!("Bearer {token}").into_bytes());
    prop_oneof![
        2 => Just(None),
        1 => Just(bearer(As::WrongToken.token().unwrap())),
        2 => Just(bearer(As::Viewer.token().unwrap())),
        2 => Just(bearer(As::Supervisor.token().unwrap())),
        3 => Just(bearer(As::Admin.token().unwrap())),
        1 => Just(Some(format!("bearer   {}", As::Admin.token().unwrap()).into_bytes())),
        1 => Just(Some(b"Basic YWRtaW46YWRtaW4=".to_vec())),
        1 => hostile_header().prop_map(Some),
        1 => hostile_header().prop_map(|v| Some([b"Bearer ".to_vec(), v].concat())),
    ]
    .boxed()
}

fn content_type() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        6 => Just(Some(b"application/json".to_vec())),
        1 => Just(Some(b"application/json; charset=utf-8".to_vec())),
        1 => Just(Some(b"text/plain".to_vec())),
        1 => Just(Some(b"application/x-www-form-urlencoded".to_vec())),
        1 => Just(None),
        1 => hostile_header().prop_map(Some),
    ]
    .boxed()
}

fn case_for(spec: &Value, index: usize, operation: &Operation) -> BoxedStrategy<Case> {
    let method = prop_oneof![
        12 => Just(operation.method.clone()),
        1 => proptest::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
            .prop_map(str::to_owned),
    ];
    let path_params: Vec<BoxedStrategy<(String, String)>> = operation
        .parameters
        .iter()
        .filter(|(_, location, _)| location == "path")
        .map(|(name, _, schema)| {
            let name = name.clone();
            prop_oneof![
                4 => plausible(&name, schema).prop_map(|v| encode_segment(&v)),
                2 => hostile_text().prop_map(|v| encode_segment(&v)),
                1 => prop::sample::select(vec!["%FF", "%C0%AF", "%00", "%2F", "%2e%2e", "a%20b", "%25"])
                    .prop_map(str::to_owned),
            ]
            .prop_map(move |value| (name.clone(), value))
            .boxed()
        })
        .collect();
    let query_params: Vec<BoxedStrategy<Option<(String, String)>>> = operation
        .parameters
        .iter()
        .filter(|(_, location, _)| location == "query")
        .map(|(name, _, schema)| {
            let name = name.clone();
            prop::option::weighted(
                0.6,
                prop_oneof![3 => plausible(&name, schema), 1 => hostile_text()],
            )
            .prop_map(move |value| value.map(|v| (name.clone(), v)))
            .boxed()
        })
        .collect();
    let query_suffix = prop_oneof![
        8 => Just(""),
        1 => prop::sample::select(vec!["&", "&=", "&from", "&unknown=1", "&%FF=%FE", "&to=2026-01-01&to=2026-01-02", ";x=1"]),
    ];
    let headers = (
        authorization(),
        content_type(),
        prop::option::weighted(0.2, hostile_header()),
        prop::option::weighted(0.1, hostile_header()),
    );
    let body = match &operation.body {
        Some(schema) => prop::option::weighted(0.95, body(spec, schema)).boxed(),
        None => prop::option::weighted(
            0.1,
            any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        )
        .boxed(),
    };
    let template = operation.path.clone();
    (
        method,
        path_params,
        query_params,
        query_suffix,
        headers,
        body,
    )
        .prop_map(move |(method, path_params, query, suffix, headers, body)| {
            let mut path = template.clone();
            for (name, value) in path_params {
                path = path.replace(&format!("{{{name}}}"), &value);
            }
            let mut serializer = form_urlencoded::Serializer::new(String::new());
            for (name, value) in query.into_iter().flatten() {
                serializer.append_pair(&name, &value);
            }
            let query = format!("{}{suffix}", serializer.finish());
            let (authorization, content_type, request_id, idempotency_key) = headers;
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
            }
        })
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

/// What every answer must be: no 5xx, a request id, problem+json on every 4xx, and a
/// status the spec documents for the operation.
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
    let same_operation =
        case.method == operation.method && !text.contains("urn:wfmd:problem:no-such-route");
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

async fn fuzz(app: &TestApp, seed: u8, count: usize) -> BTreeMap<String, BTreeSet<u16>> {
    let spec = fetch_spec(app).await;
    let operations = operations(&spec);
    // Operations with a body have more ways to go wrong, so they get more cases.
    let strategies: Vec<_> = operations
        .iter()
        .enumerate()
        .map(|(i, op)| {
            (
                if op.body.is_some() { 4 } else { 1 },
                case_for(&spec, i, op),
            )
        })
        .collect();
    let any_case = proptest::strategy::Union::new_weighted(strategies);
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    );
    let cases: Vec<Case> = (0..count)
        .map(|_| any_case.new_tree(&mut runner).unwrap().current())
        .collect();
    crate::helpers::http_client();
    let http = reqwest::Client::builder()
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
    let mut seen: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (case, answer) in &results {
        let Some((status, headers, body)) = answer else {
            continue;
        };
        let operation = &operations[case.operation];
        seen.entry(format!("{} {}", operation.method, operation.path))
            .or_default()
            .insert(*status);
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
    eprintln!("fuzz pass, seed {seed}: statuses by operation: {seen:#?}");
    // Every operation was reached, and not only refused.
    for operation in &operations {
        let statuses = &seen[&format!("{} {}", operation.method, operation.path)];
        assert!(
            statuses.iter().any(|s| !matches!(s, 401 | 403 | 405)),
            "{} {} was never let in: {statuses:?}",
            operation.method,
            operation.path
        );
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_every_route_from_the_spec_gets_no_5xx_and_problems_on_every_4xx() {
    let app = spawn_with_roles().await;
    let seen = fuzz(&app, 7, FUZZ_CASES_WITH_TOKENS).await;
    // The pass reached the handlers' own answers, not only the gate's.
    let transitions = &seen["POST /v1/agents/{agent_id}/transitions"];
    for status in [200, 400, 401, 403, 404, 409, 413, 415, 422] {
        assert!(
            transitions.contains(&status),
            "{status} never seen: {transitions:?}"
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
    fuzz(&app, 11, FUZZ_CASES_WITHOUT_TOKENS).await;
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
    let agent_id = &spec["paths"]["/v1/agents/{agent_id}/transitions"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "agent_id")
        .unwrap()["schema"];
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
