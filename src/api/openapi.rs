//! The OpenAPI description of the HTTP API, served at `GET /openapi.json`.
//!
//! The description is not written by hand: every handler carries a `#[utoipa::path]`
//! attribute, and `utoipa_axum::routes!` registers the handler at that path and adds
//! the attribute to the document in one step, so a route cannot be served without being
//! described, or described without being served. The attribute's `security` is also
//! what the server enforces (see [`super::auth`]): a route's role is declared once.
//!
//! [`complete`] then adds what every operation has in common, so handlers list only
//! their own answers, and of their errors only status and meaning: the bearer scheme,
//! 401 and 403 on routes with a role, 400 on routes with parameters, 400/413/415/422 on
//! routes with a body, 500 on `/v1`, the problem+json body of every error answer, and
//! the `x-request-id` header on every response. Last, it gives every tenant's `/v1`
//! route its own path, `/v1/tenants/{tenant}/…`, as a copy of the unprefixed one with a
//! `tenant` path parameter (see `address_by_tenant`).
//!
//! [`served`] then states, on the JSON, the constraints the server enforces that the
//! Rust types do not say, generically so every route gets them: a request body's
//! `AgentState` is a `SETTABLE_STATE` (ON_CONTACT and ACW are refused), its `reason` a
//! reason code and its `idempotency_key` as long as the header's, and an `agent_id` path
//! parameter has its length and characters. Without tokens configured the served
//! document declares no security at all (no scheme, no 401/403), since the server asks
//! for none.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{HeaderBuilder, Object, PathItem, Paths, RefOr, Responses, Type};

use super::Routes;
use super::error::{PROBLEM_JSON, ProblemDetails, problem_body, problem_response};
use super::roles::{BEARER, requirement};
use super::schemas::{
    AGENT_ID, AGENT_ID_PATTERN, DEFER_FOR_PATTERN, HEADER_KEY_PATTERN, INSTANT, INSTANT_PATTERN,
    REASON_PATTERN, SETTABLE_STATE, TIME_ZONE, event_body, member, operations_json, reference,
    schema_ref,
};
use super::tenancy::{tenant_parameter, tenant_path};
use crate::domain::events::{self, EventType};

/// The document's frame; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wfmd",
        description = "Agent-state automation for NICE CXone contact centers.\n\n\
Errors are `application/problem+json` (RFC 9457) with a stable `type` \
(`urn:wfmd:problem:...`) and, where it applies, the offending body `field` (422) or \
request `parameter` (400). Every response carries `x-request-id` (the caller's, or a \
fresh one).\n\n\
Once any `[[api_tokens]]` are configured, every `/v1` route needs \
`Authorization: Bearer <token>`; a route's `security` scope names the least role it \
needs (viewer < supervisor < admin). `/healthz`, `/readyz`, `/metrics` and this \
document stay open: probes and scrapers carry no tokens, and none of them shows agent \
data. With no tokens configured, wfmd listens on loopback only and every caller may \
do everything.\n\n\
Several tenants: each `/v1` route is served for every tenant under \
`/v1/tenants/{tenant}/...` (the same operation, its id ending in `_in_tenant`, with the \
`tenant` path parameter); the unprefixed `/v1/...` addresses the only tenant, and while \
several are served it answers 400 `tenant-required`, naming them. `GET /v1/tenants` \
lists the tenants the token holds (`[[api_tokens]]` `tenants`); it and `GET /v1/cluster` \
(the instances and each tenant's leader) are the process's, with no copy per tenant. A tenant that is not \
configured, or that the token does not hold, is answered 404 `no-such-route`, as a path \
no route has. Jobs, feed tickets and idempotency keys belong to the tenant they were made \
in: another tenant's path does not find them."
    ),
    components(schemas(
        ProblemDetails,
        events::StateChanged,
        events::TransitionRejected,
        events::BulkCompleted,
        events::AdherenceException,
        events::AuditCheckpoint,
        events::ReportReady,
        events::TransitionDeferred,
        events::TransitionExpired,
        events::TransitionCancelled,
        events::ExceptionReviewed,
    )),
    tags(
        (name = "agents", description = "Agent state changes and history"),
        (name = "bulk", description = "Supervisors' bulk state changes: progress, cancel, revert"),
        (name = "adherence", description = "Adherence: real-time rows and the summary, time supervisors authorise, exceptions they review"),
        (name = "reports", description = "Compliance exports"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "live", description = "The wallboard's live figures and their stored samples"),
        (name = "console", description = "The supervisor console's pages (HTML; the wallboard is under live)"),
        (name = "analytics", description = "Analytics jobs: aggregates with trends and anomalies"),
        (name = "schedules", description = "Schedules imported from a file (a third-party WFM, or a tenant without WFM access)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "session", description = "Browser sign-in: a token becomes a session cookie"),
    )
)]
pub struct ApiDoc;

/// The document, serialized once, as `/openapi.json` serves it.
#[derive(Clone)]
pub struct SpecJson(pub Arc<Bytes>);

pub fn routes() -> Routes {
    vec![utoipa_axum::routes!(openapi_json)]
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 description of this API",
               body = Object, content_type = "application/json"))
)]
pub async fn openapi_json(Extension(spec): Extension<SpecJson>) -> Response {
    let mut response = Bytes::clone(&spec.0).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Adds what every operation has in common (see the module docs).
pub fn complete(spec: &mut utoipa::openapi::OpenApi) {
    let components = spec.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER.to_owned(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A token made by `wfmd token new NAME --role ROLE`; the configuration \
                     holds its SHA-256. An operation's scope is the least role it needs: \
                     viewer < supervisor < admin.",
                ))
                .build(),
        )),
    );
    for (path, item) in spec.paths.paths.iter_mut() {
        for operation in operations_mut(item) {
            let secured = operation
                .security
                .iter()
                .flatten()
                .any(|r| requirement(r).contains_key(BEARER));
            let responses = &mut operation.responses.responses;
            // Every error is problem+json: a route lists its errors' statuses and meanings.
            for (status, response) in responses.iter_mut() {
                if let RefOr::T(response) = response
                    && response.content.is_empty()
                    && status.starts_with(['4', '5'])
                {
                    response
                        .content
                        .insert(PROBLEM_JSON.to_owned(), RefOr::T(problem_body()));
                }
            }
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::T(problem_response(description)));
            };
            if secured {
                add(
                    "401",
                    "No bearer token, or not a configured one (with `WWW-Authenticate: Bearer`)",
                );
                add("403", "The token's role is weaker than the route needs");
            }
            if operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                add(
                    "400",
                    "A path or query parameter is malformed, unknown or out of range",
                );
            }
            // Every body is inline (`request_body = ...` makes no `$ref`).
            if let Some(RefOr::T(body)) = &operation.request_body {
                if body.content.contains_key("application/json") {
                    add("400", "The body is not valid JSON");
                    add(
                        "422",
                        "A body field is missing, unknown, of the wrong type or invalid",
                    );
                } else {
                    add("400", "The body could not be read");
                }
                add("413", &too_large(super::BODY_LIMIT_BYTES));
                let types: Vec<String> = body.content.keys().map(|t| format!("`{t}`")).collect();
                add(
                    "415",
                    &format!("The body is not sent as {}", types.join(" or ")),
                );
            }
            if path.starts_with("/v1/") {
                add(
                    "500",
                    "wfmd failed; the cause is in its log under the request id",
                );
            }
        }
    }
    address_by_tenant(spec);
    for item in spec.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response
                        .headers
                        .entry("x-request-id".to_owned())
                        .or_insert_with(|| {
                            RefOr::T(
                                HeaderBuilder::new()
                                    .schema(Some(Object::with_type(Type::String)))
                                    .description(Some(
                                        "The request's id: the caller's `x-request-id`, or a \
                                         fresh UUID. Every log line of the request has it.",
                                    ))
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

/// Documents, on every operation of `paths`, the 413 of a body over `bytes` (a route
/// with a limit of its own, see [`super::with_body_limit`]).
pub(super) fn document_body_limit(paths: &mut Paths, bytes: usize) {
    for item in paths.paths.values_mut() {
        for operation in operations_mut(item) {
            operation.responses.responses.insert(
                "413".to_owned(),
                RefOr::T(problem_response(&too_large(bytes))),
            );
        }
    }
}

/// The meaning of a 413 on a route that takes bodies of up to `bytes`.
fn too_large(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    let size = if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    };
    format!("The body is larger than {size}")
}

/// Name of the schema of a tenant id in a path.
const TENANT_ID: &str = "TenantId";

/// Adds, beside each tenant's `/v1` route, its copy under `/v1/tenants/{tenant}/…`,
/// with the `tenant` path parameter, its own operation id and the 404 of a tenant not
/// served or not held; and to the unprefixed route, its 400 `tenant-required`.
///
/// A copy per path rather than a `servers` entry with a `{tenant}` variable: client
/// generators make one plain function per operation with the tenant an ordinary
/// argument, while many ignore server variables (or the servers altogether), and the
/// paths' own `/v1` would sit under a server base `/v1/tenants/{tenant}` twice.
fn address_by_tenant(spec: &mut utoipa::openapi::OpenApi) {
    let mut copies = Vec::new();
    for (path, item) in spec.paths.paths.iter_mut() {
        let Some(tenant_path) = tenant_path(path) else {
            continue;
        };
        let mut copy = item.clone();
        for operation in operations_mut(&mut copy) {
            if let Some(id) = &mut operation.operation_id {
                id.push_str("_in_tenant");
            }
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .insert(0, RefOr::T(tenant_parameter()));
            note(
                &mut operation.responses,
                "404",
                "No tenant has this id, or the token does not hold it (`no-such-route`, \
                 as for a path no route has)",
            );
        }
        for operation in operations_mut(item) {
            note(
                &mut operation.responses,
                "400",
                "Several tenants are served and the path names none (`tenant-required`; \
                 its `tenants` lists them): use `/v1/tenants/{tenant}/…`",
            );
        }
        copies.push((tenant_path, copy));
    }
    spec.paths.paths.extend(copies);
}

/// Documents `status` as answering `description` too: appended to the answer's own
/// description when it has one (the body is a problem either way), else as a problem.
fn note(responses: &mut Responses, status: &str, description: &str) {
    match responses.responses.get_mut(status) {
        Some(RefOr::T(response)) => {
            let own = response.description.trim_end_matches('.');
            response.description = format!("{own}; or: {description}");
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            responses
                .responses
                .insert(status.to_owned(), RefOr::T(problem_response(description)));
        }
    }
}

/// The document as `/openapi.json` serves it: `spec` with the enforced constraints
/// stated, and with no security when `open` (no tokens configured).
pub fn served(spec: &utoipa::openapi::OpenApi, open: bool) -> serde_json::Value {
    let mut doc = serde_json::to_value(spec).expect("the OpenAPI document serializes");
    constrain(&mut doc);
    doc["webhooks"] = webhooks();
    if open {
        strip_security(&mut doc);
    }
    doc
}

/// OpenAPI 3.1 `webhooks`: the POST wfmd makes to each `[[webhooks]]` endpoint, one per
/// event type, its body's `data` the event's payload schema.
fn webhooks() -> serde_json::Value {
    let hooks: serde_json::Map<String, serde_json::Value> = EventType::ALL
        .into_iter()
        .map(|event| {
            let body = event_body(event);
            let post = serde_json::json!({
                "post": {
                    "summary": format!("`{}`", event.as_str()),
                    "description": "Signed per the Standard Webhooks spec: `webhook-id`, \
                        `webhook-timestamp` and `webhook-signature` (`v1,` and the base64 \
                        HMAC-SHA256 of `{id}.{timestamp}.{body}` under the endpoint's \
                        `whsec_` secret).",
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": body } },
                    },
                    "responses": {
                        "2XX": { "description": "Delivered" },
                        "default": { "description": "Not delivered: retried on the delivery schedule, then dead" },
                    },
                },
            });
            (event.as_str().to_owned(), post)
        })
        .collect();
    serde_json::Value::Object(hooks)
}

fn constrain(doc: &mut serde_json::Value) {
    use serde_json::json;
    let settable: Vec<&str> = crate::domain::AgentState::ALL
        .into_iter()
        .filter(|s| s.is_settable())
        .map(|s| s.as_str())
        .collect();
    let Some(schemas) =
        member(doc, &["components", "schemas"]).and_then(serde_json::Value::as_object_mut)
    else {
        panic!("the OpenAPI document has component schemas");
    };
    schemas.insert(
        SETTABLE_STATE.to_owned(),
        json!({
            "type": "string",
            "enum": settable,
            "description": "A state a request may set; ON_CONTACT and ACW are observed only.",
        }),
    );
    schemas.insert(
        AGENT_ID.to_owned(),
        json!({
            "type": "string",
            "minLength": 1,
            "maxLength": crate::api::validate::MAX_ID_LEN,
            "pattern": AGENT_ID_PATTERN,
            "description": "A platform user id: 1 to 128 printable ASCII characters, not `.` or `..`.",
        }),
    );
    schemas.insert(
        INSTANT.to_owned(),
        json!({
            "type": "string",
            "pattern": INSTANT_PATTERN,
            "description": "A date (2026-11-20, midnight UTC) or an RFC 3339 instant \
                            (2026-11-20T09:00:00-05:00).",
        }),
    );
    schemas.insert(
        TENANT_ID.to_owned(),
        json!({
            "type": "string",
            "pattern": format!("^[a-z0-9-]{{1,{}}}$", crate::domain::tenant::MAX_LEN),
            "description": "A tenant's id: `a-z`, `0-9` and `-`, as configured in `[[tenants]]`.",
        }),
    );
    schemas.insert(
        TIME_ZONE.to_owned(),
        json!({
            "type": "string",
            "pattern": zone_pattern(),
            "example": "America/New_York",
            "description": "An IANA time zone name, e.g. America/New_York, exactly as the \
                            tz database spells it; the pattern lists every one wfmd knows, \
                            and another is refused (400 naming the parameter).",
        }),
    );
    super::bulk::describe(schemas);
    super::bulk::describe_agents_or_team(schemas, "AuthoriseBody", false);
    super::analytics::describe(schemas);
    let flattened = flatten_tagged(schemas);
    super::live::describe(doc);
    // A union folded into its only user is no longer a schema of its own.
    let text = doc.to_string();
    if let Some(schemas) = member(doc, &["components", "schemas"]).and_then(|s| s.as_object_mut()) {
        for name in flattened {
            if !text.contains(&format!("\"{}\"", schema_ref(&name))) {
                schemas.remove(&name);
            }
        }
    }

    // Schemas reachable from request bodies: there, an agent state is a settable one.
    let mut pending: Vec<String> = Vec::new();
    for operation in operations_json(doc) {
        for content in operation
            .get_mut("requestBody")
            .and_then(|body| member(body, &["content"]))
            .and_then(serde_json::Value::as_object_mut)
            .into_iter()
            .flat_map(|content| content.values_mut())
        {
            if let Some(schema) = member(content, &["schema"]) {
                settable_states(schema, &mut pending);
                constrain_fields(schema);
            }
        }
        for parameter in operation
            .get_mut("parameters")
            .and_then(serde_json::Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            constrain_parameter(parameter);
        }
    }
    let mut done = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !done.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = member(doc, &["components", "schemas", &name]) {
            settable_states(schema, &mut pending);
            constrain_fields(schema);
        }
    }
}

/// Makes each schema that is `allOf` a tagged union and an object (what serde's
/// `flatten` of an internally tagged enum, such as a `Transition`'s `Outcome`, gives
/// utoipa) one plain object: the tag an `enum` of every variant's value, each variant's
/// other fields optional, the description saying when each is present. Generators type
/// a plain object; an `allOf` with a `oneOf` in it, many cannot (openapi-python-client
/// drops the schema, so a client could not read the answer). The names of the unions
/// folded in.
fn flatten_tagged(schemas: &mut serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    use serde_json::{Value, json};
    let mut flattened = Vec::new();
    let names: Vec<String> = schemas.keys().cloned().collect();
    for name in names {
        let Some([Value::Object(union_ref), Value::Object(own)]) = schemas[&name]
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        else {
            continue;
        };
        let Some(union) = union_ref
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
        else {
            continue;
        };
        let Some(variants) = schemas.get(union).and_then(|u| u["oneOf"].as_array()) else {
            continue;
        };
        // The tag: the one property each variant requires and fixes to one value.
        let fixed = |variant: &Value| -> Vec<(String, Value)> {
            variant["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(
                    |(field, schema)| match schema["enum"].as_array()?.as_slice() {
                        [value] => Some((field.clone(), value.clone())),
                        _ => None,
                    },
                )
                .collect()
        };
        let Some((tag, _)) = variants.first().and_then(|v| fixed(v).into_iter().next()) else {
            continue;
        };
        let mut values = Vec::new();
        let mut fields = serde_json::Map::new();
        let mut present = Vec::new();
        for variant in variants {
            let Some((_, value)) = fixed(variant).into_iter().find(|(f, _)| *f == tag) else {
                continue;
            };
            let own_fields: Vec<String> = variant["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(field, _)| **field != tag)
                .map(|(field, schema)| {
                    fields
                        .entry(field.clone())
                        .or_insert_with(|| schema.clone());
                    format!("`{field}`")
                })
                .collect();
            if !own_fields.is_empty() {
                present.push(format!(
                    "{} when it is `{}`",
                    own_fields.join(" and "),
                    value.as_str().unwrap_or_default()
                ));
            }
            values.push(value);
        }
        let mut properties = own["properties"].as_object().cloned().unwrap_or_default();
        let described = schemas[union]["description"].as_str().unwrap_or_default();
        let mut tag_description = described.trim_end_matches('.').to_owned();
        if !present.is_empty() {
            tag_description.push_str(&format!(". Present besides: {}.", present.join("; ")));
        }
        properties.insert(
            tag.clone(),
            json!({"type": "string", "enum": values, "description": tag_description}),
        );
        properties.extend(fields);
        let mut required = own["required"].as_array().cloned().unwrap_or_default();
        required.push(json!(tag));
        let mut object = json!({
            "type": "object",
            "properties": properties,
            "required": required,
        });
        if let Some(description) = schemas[&name].get("description") {
            object["description"] = description.clone();
        }
        flattened.push(union.to_owned());
        schemas.insert(name, object);
    }
    flattened
}

/// A pattern that matches exactly the IANA zone names wfmd knows, grouped by their
/// area (`America/(?:New_York|…)`) to stay short. A pattern rather than an `enum`: 597
/// names as an enum make client generators emit an identifier per name, and some
/// collide (`GMT+0`, `GMT-0` and `GMT0` are all `GMT0` to openapi-python-client).
fn zone_pattern() -> String {
    // Each area: whether it is a zone itself, and the names under it.
    let mut areas: std::collections::BTreeMap<&str, (bool, Vec<&str>)> = Default::default();
    for zone in chrono_tz::TZ_VARIANTS.iter().map(|zone| zone.name()) {
        match zone.split_once('/') {
            Some((area, rest)) => areas.entry(area).or_default().1.push(rest),
            None => areas.entry(zone).or_default().0 = true,
        }
    }
    let escape = |name: &str| name.replace('+', "\\+");
    let alternatives: Vec<String> = areas
        .into_iter()
        .map(|(area, (itself, rests))| {
            if rests.is_empty() {
                return escape(area);
            }
            let rests: Vec<String> = rests.iter().map(|r| escape(r)).collect();
            let under = format!("/(?:{})", rests.join("|"));
            let optional = if itself { "?" } else { "" };
            format!("{}(?:{under}){optional}", escape(area))
        })
        .collect();
    format!("^(?:{})$", alternatives.join("|"))
}

/// States, on one parameter, what the server checks of it (by name, so every route
/// with such a parameter gets it).
fn constrain_parameter(parameter: &mut serde_json::Value) {
    use serde_json::json;
    let place = parameter["in"].as_str().unwrap_or_default().to_owned();
    let name = parameter["name"].as_str().unwrap_or_default().to_owned();
    let schema = match (place.as_str(), name.as_str()) {
        ("path", "agent_id") => reference(AGENT_ID),
        ("path", "tenant") => reference(TENANT_ID),
        ("query", "from" | "to") => reference(INSTANT),
        ("query", "tz") => reference(TIME_ZONE),
        ("header", "idempotency-key") => json!({
            "type": "string",
            "minLength": 1,
            "maxLength": crate::api::validate::MAX_KEY_LEN,
            "pattern": HEADER_KEY_PATTERN,
        }),
        // An event id of ours is `evt_` and 32 hex digits; anything up to 64 visible
        // ASCII characters is taken (an unknown one starts from a fresh snapshot), and
        // anything else refused.
        ("header", "Last-Event-ID") | ("query", "last_event_id") => json!({
            "type": "string",
            "maxLength": super::live::MAX_EVENT_ID_LEN,
            "pattern": "^[!-~]*$",
        }),
        // A path segment is never empty: `/v1/bulk-transitions/` is another route.
        ("path", _) => {
            if let Some(schema) = member(parameter, &["schema"]).and_then(|s| s.as_object_mut()) {
                schema.entry("minLength").or_insert(json!(1));
            }
            return;
        }
        _ => return,
    };
    if let Some(object) = parameter.as_object_mut() {
        object.insert("schema".to_owned(), schema);
    }
}

/// States, on the fields of a request body's `schema`, what the server checks of them
/// (by name, as [`constrain_parameter`] does for parameters): a `reason` is a reason
/// code unless its field says otherwise (an authorisation's is free text), an
/// `idempotency_key` as long as the header's, a `defer_for` a number and a unit.
fn constrain_fields(schema: &mut serde_json::Value) {
    use serde_json::{Value, json};
    let Some(properties) = member(schema, &["properties"]).and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(Value::Object(reason)) = properties.get_mut("reason") {
        reason
            .entry("pattern")
            .or_insert_with(|| json!(REASON_PATTERN));
    }
    if let Some(Value::Object(wait)) = properties.get_mut("defer_for") {
        wait.insert("pattern".to_owned(), json!(DEFER_FOR_PATTERN));
    }
    if let Some(Value::Object(key)) = properties.get_mut("idempotency_key") {
        key.insert("minLength".to_owned(), json!(1));
        key.insert(
            "maxLength".to_owned(),
            json!(crate::api::validate::MAX_KEY_LEN),
        );
    }
}

/// Points `AgentState` references in `schema` at [`SETTABLE_STATE`], and queues the
/// other schemas it references.
fn settable_states(schema: &mut serde_json::Value, pending: &mut Vec<String>) {
    use serde_json::Value;
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref") {
                if *reference == schema_ref("AgentState") {
                    *reference = schema_ref(SETTABLE_STATE);
                } else if let Some(name) = reference.strip_prefix("#/components/schemas/") {
                    pending.push(name.to_owned());
                }
            }
            for value in map.values_mut() {
                settable_states(value, pending);
            }
        }
        Value::Array(items) => {
            for item in items {
                settable_states(item, pending);
            }
        }
        _ => {}
    }
}

/// Removes every trace of authentication: the scheme, each operation's `security`, and
/// the 401/403 answers an open API never gives.
fn strip_security(doc: &mut serde_json::Value) {
    if let Some(components) = member(doc, &["components"]).and_then(|c| c.as_object_mut()) {
        components.remove("securitySchemes");
    }
    for operation in operations_json(doc) {
        operation.remove("security");
        if let Some(responses) = operation
            .get_mut("responses")
            .and_then(|r| r.as_object_mut())
        {
            responses.remove("401");
            responses.remove("403");
        }
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::roles::operations;

    #[test]
    fn a_route_with_a_body_limit_of_its_own_documents_that_limit_in_its_413() {
        let doc = served(&super::super::openapi_document(), false);
        let too_large = |path: &str| {
            doc["paths"][path]["post"]["responses"]["413"]["description"]
                .as_str()
                .unwrap_or_else(|| panic!("{path} documents a 413"))
                .to_owned()
        };
        assert_eq!(
            too_large("/v1/bulk-transitions"),
            format!(
                "The body is larger than {} bytes",
                super::super::bulk::BODY_LIMIT_BYTES
            )
        );
        assert_eq!(
            too_large("/v1/schedules/imports"),
            "The body is larger than 16 MiB"
        );
        assert_eq!(
            too_large("/v1/agents/{agent_id}/transitions"),
            "The body is larger than 64 KiB"
        );
    }

    #[test]
    fn each_event_type_is_a_documented_webhook_whose_data_schema_fits_its_payload() {
        let doc = served(&super::super::openapi_document(), false);
        let hooks = doc["webhooks"].as_object().unwrap();
        assert_eq!(hooks.len(), EventType::ALL.len());
        for (data, event) in events::examples::all() {
            let name = event.event_type().as_str();
            let body = &hooks[name]["post"]["requestBody"]["content"]["application/json"]["schema"];
            assert_eq!(body["properties"]["type"]["const"], name);
            assert!(
                body["required"]
                    .as_array()
                    .unwrap()
                    .contains(&"tenant".into()),
                "{name}: every body names its tenant"
            );
            let reference = body["properties"]["data"]["$ref"].as_str().unwrap();
            let schema_name = reference.strip_prefix("#/components/schemas/").unwrap();
            let schema = &doc["components"]["schemas"][schema_name];
            let properties = schema["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{name}: no schema {schema_name} in the components"));
            for key in data.as_object().unwrap().keys() {
                assert!(
                    properties.contains_key(key),
                    "{name}: `{key}` is not documented"
                );
            }
            for required in schema["required"].as_array().into_iter().flatten() {
                let required = required.as_str().unwrap();
                assert!(
                    data.get(required).is_some(),
                    "{name}: `{required}` is required but the payload lacks it"
                );
            }
        }
    }

    #[test]
    fn every_operation_documents_the_shared_answers_and_the_request_id() {
        let spec = super::super::openapi_document();
        let schemes = &spec.components.as_ref().unwrap().security_schemes;
        assert!(schemes.contains_key(BEARER));
        let mut count = 0;
        for (path, item) in &spec.paths.paths {
            for (method, operation) in operations(item) {
                count += 1;
                let route = format!("{method} {path}");
                let responses = &operation.responses.responses;
                let has = |status: &str| responses.contains_key(status);
                // A WebSocket route succeeds by switching protocols, an address
                // without its canonical slash by redirecting.
                assert!(
                    responses.keys().any(|status| status.starts_with('2')
                        || status == "101"
                        || status == "308"),
                    "{route} documents no success"
                );
                if path.starts_with("/v1/") {
                    assert!(has("500"), "{route} lacks 500");
                }
                // Every /v1 route needs a role, but a browser's sign-in and sign-out.
                if path.starts_with("/v1/") && !super::super::sessions::is_session_path(path) {
                    for status in ["401", "403"] {
                        assert!(has(status), "{route} lacks {status}");
                    }
                }
                if operation.request_body.is_some() {
                    for status in ["400", "413", "415", "422"] {
                        assert!(has(status), "{route} lacks {status}");
                    }
                }
                for (status, response) in responses {
                    let RefOr::T(response) = response else {
                        panic!("{route} {status} is a reference");
                    };
                    assert!(
                        response.headers.contains_key("x-request-id"),
                        "{route} {status}"
                    );
                }
            }
        }
        assert!(count >= 6, "{count}");
    }

    #[test]
    fn every_tenant_route_is_described_under_its_tenant_as_well() {
        let doc = served(&super::super::openapi_document(), false);
        let paths = doc["paths"].as_object().unwrap();
        let mut copies = 0;
        for (path, item) in paths {
            let Some(rest) = path.strip_prefix("/v1/") else {
                continue;
            };
            if crate::api::tenancy::PROCESS_PATHS.contains(&path.as_str())
                || rest.starts_with("tenants/{tenant}/")
            {
                continue;
            }
            let copy = &paths[&format!("/v1/tenants/{{tenant}}/{rest}")];
            for (method, operation) in item.as_object().unwrap() {
                let route = format!("{method} {path}");
                let in_tenant = &copy[method];
                copies += 1;
                assert_eq!(
                    in_tenant["operationId"],
                    format!("{}_in_tenant", operation["operationId"].as_str().unwrap()),
                    "{route}"
                );
                let tenant = &in_tenant["parameters"][0];
                assert_eq!(
                    (&tenant["name"], &tenant["in"]),
                    (&"tenant".into(), &"path".into())
                );
                assert_eq!(tenant["schema"]["$ref"], schema_ref(TENANT_ID), "{route}");
                assert_eq!(in_tenant["security"], operation["security"], "{route}");
                let said = |op: &serde_json::Value, status: &str| {
                    op["responses"][status]["description"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                };
                assert!(said(in_tenant, "404").contains("no-such-route"), "{route}");
                assert!(
                    said(operation, "400").contains("tenant-required"),
                    "{route}"
                );
                assert!(
                    !said(in_tenant, "400").contains("tenant-required"),
                    "{route}"
                );
            }
        }
        assert!(copies >= 15, "{copies}");
        assert!(!paths.contains_key("/v1/tenants/{tenant}/tenants"));
        assert!(!paths.contains_key("/v1/tenants/{tenant}/cluster"));
        assert!(!paths["/v1/tenants"]["get"]["responses"]["400"].is_object());
        assert!(!paths["/v1/cluster"]["get"]["responses"]["400"].is_object());
    }

    /// The `null`s of `value`, by JSON pointer, outside the keywords whose values are
    /// data (`enum`, `const`, `default`, `example(s)`).
    fn nulls(value: &serde_json::Value, at: &str, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Null => found.push(at.to_owned()),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    nulls(item, &format!("{at}/{i}"), found);
                }
            }
            serde_json::Value::Object(members) => {
                for (key, member) in members {
                    if !matches!(
                        key.as_str(),
                        "enum" | "const" | "default" | "example" | "examples"
                    ) {
                        nulls(member, &format!("{at}/{key}"), found);
                    }
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_time_zone_pattern_allows_only_zone_names_and_a_transition_is_one_object() {
        use proptest::strategy::{Strategy, ValueTree};
        let doc = served(&super::super::openapi_document(), false);
        let schemas = &doc["components"]["schemas"];
        let pattern = schemas[TIME_ZONE]["pattern"].as_str().unwrap();
        assert!(schemas[TIME_ZONE].get("enum").is_none());
        let names = proptest::string::string_regex(&pattern[1..pattern.len() - 1]).unwrap();
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..5_000 {
            let name = names.new_tree(&mut runner).unwrap().current();
            assert!(name.parse::<chrono_tz::Tz>().is_ok(), "`{name}` is no zone");
            seen.insert(name);
        }
        assert!(seen.len() > 300, "the pattern reached {} zones", seen.len());
        assert!(seen.contains("UTC") || seen.iter().any(|z| z.contains('+')));

        let transition = &schemas["Transition"];
        assert_eq!(transition["type"], "object");
        assert!(transition.get("allOf").is_none());
        assert_eq!(
            transition["properties"]["outcome"]["enum"],
            serde_json::json!(["succeeded", "rejected", "failed"])
        );
        let required = transition["required"].as_array().unwrap();
        assert!(required.contains(&"outcome".into()));
        for optional in ["violation", "kind", "error"] {
            assert!(transition["properties"][optional].is_object(), "{optional}");
            assert!(!required.contains(&optional.into()), "{optional}");
        }
        assert!(
            schemas.get("Outcome").is_none(),
            "the folded union is left over"
        );
    }

    #[test]
    fn the_served_document_has_no_null_members_and_unique_operation_ids() {
        let spec = super::super::openapi_document();
        for open in [false, true] {
            let doc = served(&spec, open);
            let mut found = Vec::new();
            nulls(&doc, "", &mut found);
            assert!(found.is_empty(), "null at {found:?}");
            let mut ids = std::collections::BTreeSet::new();
            for item in doc["paths"].as_object().unwrap().values() {
                for operation in item.as_object().unwrap().values() {
                    let id = operation["operationId"].as_str().unwrap();
                    assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                }
            }
        }
    }
}
