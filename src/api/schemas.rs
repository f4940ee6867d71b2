//! Names of the component schemas the served OpenAPI document adds, their patterns, and
//! `$ref`s to them, and the helpers that edit the document as JSON and state the events'
//! bodies: shared by `openapi` and the route modules that describe their own JSON.

use crate::domain::events::{self, EventType};

/// Name of the schema of the states a request may set.
pub const SETTABLE_STATE: &str = "SettableState";
/// Name of the schema of an agent id as the server takes it, in a path or a body.
pub const AGENT_ID: &str = "AgentId";
/// Name of the schema of an instant as `time::parse_instant` takes it.
pub const INSTANT: &str = "Instant";
/// Name of the schema of an IANA time zone name.
pub const TIME_ZONE: &str = "TimeZone";

/// What `check_agent_id` accepts: 1 to 128 printable ASCII characters, not `.` or `..`
/// (written without look-ahead, so generators that know only plain regexes can use it).
pub const AGENT_ID_PATTERN: &str = r"^(?:[!-~]{3,128}|[!-\-/-~]|[!-\-/-~][!-~]|\.[!-\-/-~])$";

/// A date (midnight UTC) or an RFC 3339 instant, as `time::parse_instant` takes them.
/// Narrower than the parser on purpose, so that everything it allows parses: years
/// 1970-2099, days that exist in every year (so not February 29), ASCII digits only.
pub const INSTANT_PATTERN: &str = concat!(
    "^(?:19[7-9][0-9]|20[0-9][0-9])-",
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    "(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?",
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]))?$",
);

/// A reason code as `check_reason` takes it: 1 to 64 letters, digits, `_` or `-`.
pub const REASON_PATTERN: &str = r"^[A-Za-z0-9_-]{1,64}$";

/// A `defer_for` as `validate::parse_wait` takes it: a number and one unit, 1s to 24h.
pub const DEFER_FOR_PATTERN: &str = "^([1-9][0-9]{0,3}s|[1-9][0-9]{0,2}m|([1-9]|1[0-9]|2[0-4])h)$";

/// An `Idempotency-Key` header as the server takes it: 1 to 255 visible ASCII
/// characters, spaces only inside (HTTP trims a header value's ends).
pub const HEADER_KEY_PATTERN: &str = r"^[!-~](?:[ -~]{0,253}[!-~])?$";

pub(super) fn schema_ref(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

/// `{"$ref": …}` to the named component schema.
pub fn reference(name: &str) -> serde_json::Value {
    serde_json::json!({ "$ref": schema_ref(name) })
}

/// The members of `value` at `keys`, each an object member, or `None` where one is
/// missing. Never inserts anything: indexing a `Value` mutably (`doc["a"]["b"]`) adds
/// `null` for every missing key, which is how `"parameters": null` once got into the
/// served document.
pub fn member<'a>(
    value: &'a mut serde_json::Value,
    keys: &[&str],
) -> Option<&'a mut serde_json::Value> {
    keys.iter()
        .try_fold(value, |value, key| value.as_object_mut()?.get_mut(*key))
}

/// Every operation of the document (`paths.*.METHOD`), mutably.
pub(super) fn operations_json(
    doc: &mut serde_json::Value,
) -> impl Iterator<Item = &mut serde_json::Map<String, serde_json::Value>> {
    member(doc, &["paths"])
        .and_then(serde_json::Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
}

/// The payload schema of each event type, named by the type every producer builds.
fn payload_schema(event: EventType) -> std::borrow::Cow<'static, str> {
    use utoipa::ToSchema;
    match event {
        EventType::AgentStateChanged => events::StateChanged::name(),
        EventType::TransitionRejected => events::TransitionRejected::name(),
        EventType::BulkCompleted => events::BulkCompleted::name(),
        EventType::AdherenceException => events::AdherenceException::name(),
        EventType::AuditCheckpoint => events::AuditCheckpoint::name(),
        EventType::ReportReady => events::ReportReady::name(),
        EventType::TransitionDeferred => events::TransitionDeferred::name(),
        EventType::TransitionExpired => events::TransitionExpired::name(),
        EventType::TransitionCancelled => events::TransitionCancelled::name(),
        EventType::AdherenceExceptionReviewed => events::ExceptionReviewed::name(),
    }
}

/// The body of a durable event of type `event`: a webhook's body, and the message of
/// the live feed that carries the event.
pub(super) fn event_body(event: EventType) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "required": ["type", "tenant", "id", "timestamp", "data"],
        "properties": {
            "type": { "const": event.as_str() },
            "tenant": {
                "type": "string",
                "description": "The tenant whose event it is (`default` without `[[tenants]]`)",
            },
            "id": { "type": "string", "description": "The event id, the same on every retry (`webhook-id`)" },
            "timestamp": { "type": "string", "format": "date-time" },
            "data": reference(&payload_schema(event)),
        },
    })
}
