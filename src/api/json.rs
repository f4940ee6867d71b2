//! A JSON body extractor whose errors name the offending field.
//!
//! axum's own `Json` answers a wrong type with text that mentions a line and column;
//! users want `state: unknown variant ...`. Deserializing through
//! `serde_path_to_error` gives the path of the field that failed.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::Problem;

pub struct JsonBody<T>(pub T);

/// Whether `headers` declare a JSON body: `application/json` or any `+json` type such as
/// `application/problem+json`, parameters aside.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime == "application/json" || mime.ends_with("+json")
        })
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(Problem::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "The request body must be JSON",
                "send the body with content-type: application/json",
            ));
        }
        let limit = super::forward::body_limit(&request);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| match e.status() {
                axum::http::StatusCode::PAYLOAD_TOO_LARGE => Problem::body_too_large(limit),
                _ => Problem::unreadable_body(&e),
            })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` as a JSON object, naming the field on a type or value error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // Syntax first, so a broken body is a 400 whatever its shape.
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(Problem::malformed_body(error.to_string()));
    }
    // serde also fills a struct from an array (`["READY"]`); every body here is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::invalid_field(
            "body",
            "the body must be a JSON object",
        ));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            // Missing, unknown and repeated fields are reported at the object level, with the name
            // in the text; anything else there is about the body as a whole.
            Problem::invalid_field(
                &named_field(&inner).unwrap_or_else(|| "body".to_owned()),
                inner.to_string(),
            )
        } else if inner.is_syntax() {
            // The JSON is well formed (checked above): serde says "expected value" when
            // an enum field gets an array or object.
            Problem::invalid_field(&path, format!("{path}: wrong type ({inner})"))
        } else {
            Problem::invalid_field(&path, format!("{path}: {inner}"))
        }
    })
}

/// `deserialize_with` for an optional body field whose schema does not allow `null`
/// (`agents` or `team`: the body gives one of them, and `null` is neither): absent is
/// `None` (with `#[serde(default)]`), `null` is refused like any other wrong type.
pub fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// `deserialize_with` for an optional count: JSON Schema calls `5.0` an integer, as
/// JavaScript does, so a client may well send one; serde takes only `5` as a `usize`.
pub fn whole_number<'de, D>(deserializer: D) -> Result<Option<usize>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(whole) = number.as_u64() {
        return usize::try_from(whole)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{number} is too large")));
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&f) => Ok(Some(f as usize)),
        _ => Err(D::Error::custom(format!(
            "invalid value: {number}, expected a whole number of 0 or more"
        ))),
    }
}

fn named_field(error: &serde_json::Error) -> Option<String> {
    let text = error.to_string();
    let rest = text
        .strip_prefix("missing field `")
        .or_else(|| text.strip_prefix("unknown field `"))
        .or_else(|| text.strip_prefix("duplicate field `"))?;
    Some(rest.split('`').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        state: String,
        reason: Option<String>,
    }

    fn field(json: &str) -> (u16, String) {
        let problem = parse::<Body>(json.as_bytes()).unwrap_err();
        let field = problem
            .extensions
            .get("field")
            .and_then(|f| f.as_str())
            .unwrap_or("-")
            .to_owned();
        (problem.status.as_u16(), field)
    }

    #[test]
    fn body_errors_name_the_field_or_the_body() {
        let cases = [
            (r#"{"reason": "X"}"#, (422, "state")),
            (r#"{"state": "READY", "colour": "red"}"#, (422, "colour")),
            (r#"{"state": 7}"#, (422, "state")),
            (r#"{"state": ["READY"]}"#, (422, "state")),
            (r#"{"state": "A", "state": "B"}"#, (422, "state")),
            (r#"[1, 2]"#, (422, "body")),
            (r#"["READY"]"#, (422, "body")),
            ("null", (422, "body")),
            (r#"{"state": "#, (400, "-")),
            ("", (400, "-")),
        ];
        for (json, (status, name)) in cases {
            assert_eq!(field(json), (status, name.to_owned()), "{json}");
        }
        let deep = "[".repeat(10_000);
        assert_eq!(field(&deep).0, 400, "recursion limit");
    }
}
