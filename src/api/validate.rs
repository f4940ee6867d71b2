//! The checks of what requests carry, shared by the routes that take it: agent ids,
//! reason codes, idempotency keys (the body's or the `Idempotency-Key` header's) and a
//! deferred change's wait. Each refusal is a problem naming the field or parameter, in
//! the words of the document's schema for it (see [`super::schemas`]).

use axum::http::HeaderMap;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::{Object, Required, Type};

use super::auth::Caller;
use super::error::Problem;
use crate::engine::deferred::{MAX_DEFER_FOR, MIN_DEFER_FOR, WhenBusy};

/// Longest accepted agent id, reason code and idempotency key.
pub(crate) const MAX_ID_LEN: usize = 128;
const MAX_REASON_LEN: usize = 64;
pub(crate) const MAX_KEY_LEN: usize = 255;

/// The wait a request asks for: `None` for `reject`, else its `defer_for` (checked) or
/// `None` inside for the configured one. A `defer_for` beside `reject` is checked and
/// has nothing to say: the document cannot tie one field's presence to another's value,
/// so a request it calls valid is not refused for it.
pub(super) fn asked_wait(
    when_busy: WhenBusy,
    defer_for: Option<&str>,
) -> Result<Option<Option<std::time::Duration>>, Problem> {
    let wait = defer_for
        .map(|text| {
            parse_wait(text)
                .filter(|d| (MIN_DEFER_FOR..=MAX_DEFER_FOR).contains(d))
                .ok_or_else(|| {
                    Problem::invalid_field(
                        "defer_for",
                        format!(
                            "defer_for must be a number and one unit, from 1s to 24h, such as \
                             `90s`, `10m` or `2h`, got `{text}`"
                        ),
                    )
                })
        })
        .transpose()?;
    Ok(match when_busy {
        WhenBusy::Defer => Some(wait),
        WhenBusy::Reject => None,
    })
}

/// A `defer_for` as [`super::schemas::DEFER_FOR_PATTERN`] has it: a number without leading zeros and
/// one unit, up to 9999s, 999m or 24h. Stricter than `humantime`, which also takes
/// `10 m`, `1h 1s` or `10min`: the document promises exactly this form, so a client
/// that checks its requests against it and one that does not get the same answers.
fn parse_wait(text: &str) -> Option<std::time::Duration> {
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    let (seconds, most_digits) = match unit {
        "s" => (1, 4),
        "m" => (60, 3),
        "h" => (3600, 2),
        _ => return None,
    };
    if digits.is_empty()
        || digits.len() > most_digits
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let count: u64 = digits.parse().ok()?;
    (unit != "h" || count <= 24).then(|| std::time::Duration::from_secs(count * seconds))
}

/// Whether `agent_id` is one the platform could have: 1 to [`MAX_ID_LEN`] printable
/// ASCII characters, not `.` or `..` (which would be path steps in the platform's URL,
/// addressing no user). The document's `AgentId` schema says the same.
pub(super) fn valid_agent_id(agent_id: &str) -> bool {
    !matches!(agent_id, "" | "." | "..")
        && agent_id.len() <= MAX_ID_LEN
        && agent_id.chars().all(|c| c.is_ascii_graphic())
}

/// Checks the `agent_id` path parameter.
pub fn check_agent_id(agent_id: &str) -> Result<(), Problem> {
    if valid_agent_id(agent_id) {
        Ok(())
    } else {
        Err(Problem::invalid_parameter(
            "agent_id",
            format!(
                "agent id must be 1 to {MAX_ID_LEN} printable ASCII characters, not `.` or `..`"
            ),
        ))
    }
}

/// A request's idempotency key: the body's, else the conventional `Idempotency-Key`
/// header's; 1 to [`MAX_KEY_LEN`] characters. Stored scoped to the caller
/// (`api:{token name}:{key}`; names cannot contain `:`), so two callers choosing the
/// same key never share, collide with or see each other's result, and no API key can
/// pass for one of the daemon's own (`rule:…`, `bulk:…`).
pub(super) fn idempotency_key(
    body: Option<String>,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<Option<String>, Problem> {
    Ok(client_key(body, headers)?.map(|key| format!("api:{}:{key}", caller.name)))
}

/// The `Idempotency-Key` header [`idempotency_key`] reads, for a change route's
/// `params(...)`.
pub(super) struct IdempotencyKeyHeader;

impl utoipa::IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("idempotency-key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Alternative to the body's idempotency_key; a key used before for \
                     another request is refused (422 `idempotency-key-reused`)",
                ))
                .schema(Some(Object::with_type(SchemaType::from_iter([
                    Type::String,
                    Type::Null,
                ]))))
                .build(),
        ]
    }
}

fn client_key(body: Option<String>, headers: &HeaderMap) -> Result<Option<String>, Problem> {
    // A header key that cannot be read is refused, whether or not the body has one:
    // doing the change without it would give up the at-most-once the caller asked for,
    // and the document allows the header only in its pattern.
    let header = headers
        .get("idempotency-key")
        .map(|v| {
            let key = v.as_bytes();
            let readable = matches!(key, [first, .., last] if *first != b' ' && *last != b' ')
                || matches!(key, [only] if *only != b' ');
            if readable && key.len() <= MAX_KEY_LEN && key.iter().all(|b| (b' '..=b'~').contains(b))
            {
                Ok(String::from_utf8_lossy(key).into_owned())
            } else {
                Err(Problem::invalid_parameter(
                    "idempotency-key",
                    format!(
                        "the Idempotency-Key header must be 1 to {MAX_KEY_LEN} visible ASCII \
                         characters, spaces only inside"
                    ),
                ))
            }
        })
        .transpose()?;
    let key = body.or(header);
    // Characters, as the document's `maxLength` counts them, not bytes.
    match key {
        Some(key) if key.is_empty() || key.chars().count() > MAX_KEY_LEN => {
            Err(Problem::invalid_field(
                "idempotency_key",
                format!("idempotency_key must be 1 to {MAX_KEY_LEN} characters"),
            ))
        }
        key => Ok(key),
    }
}

pub(super) fn check_reason(reason: &str) -> Result<(), Problem> {
    let valid = !reason.is_empty()
        && reason.len() <= MAX_REASON_LEN
        && reason
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(Problem::invalid_field(
            "reason",
            format!(
                "reason must be 1 to {MAX_REASON_LEN} letters, digits, `_` or `-`, got `{reason}`"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    use super::*;
    use crate::api::schemas::DEFER_FOR_PATTERN;

    #[test]
    fn a_wait_is_taken_exactly_in_the_form_the_document_gives() {
        let pattern = DEFER_FOR_PATTERN
            .trim_start_matches('^')
            .trim_end_matches('$');
        let waits = proptest::string::string_regex(pattern).unwrap();
        let mut runner = TestRunner::deterministic();
        for _ in 0..2_000 {
            let text = waits.new_tree(&mut runner).unwrap().current();
            let wait = parse_wait(&text).unwrap_or_else(|| panic!("`{text}` is refused"));
            assert!((MIN_DEFER_FOR..=MAX_DEFER_FOR).contains(&wait), "{text}");
        }
        assert_eq!(parse_wait("90s"), Some(std::time::Duration::from_secs(90)));
        assert_eq!(
            parse_wait("24h"),
            Some(std::time::Duration::from_secs(86_400))
        );
        // What humantime takes and the pattern does not.
        for text in [
            "10 m", "1h 1s", "10min", "1h30m", "0s", "010m", "25h", "10000s", "1000m", "10M",
            "+5s", "5", "s", "", "1d", "٣s",
        ] {
            assert_eq!(parse_wait(text), None, "`{text}` is taken");
        }
    }
}
