//! A JSON body extractor whose errors name the offending field.
//!
//! axum's own `Json` answers a wrong type with text that mentions a line and column;
//! users want `state: unknown variant ...`. Deserializing through
//! `serde_path_to_error` gives the path of the field that failed.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::error::Problem;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(Problem::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "The request body must be JSON",
                "send the body with content-type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            Problem::new(
                e.status(),
                "unreadable-body",
                "The request body could not be read",
                e.body_text(),
            )
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses `bytes`, naming the field on a type or value error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Problem::malformed_body(inner.to_string())
        } else if path == "." {
            // A missing field is reported at the object level, with the name in the text.
            Problem::invalid_field(
                &missing_field(&inner).unwrap_or_default(),
                inner.to_string(),
            )
        } else {
            Problem::invalid_field(&path, format!("{path}: {inner}"))
        }
    })
}

fn missing_field(error: &serde_json::Error) -> Option<String> {
    let text = error.to_string();
    let rest = text.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}
