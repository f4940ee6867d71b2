//! What a platform answer means: the status of an answer, or a request that got none,
//! as the typed [`CxoneError`] the rest of wfmd decides on.

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};

use crate::cxone::CxoneError;
use crate::cxone::retry::parse_retry_after;
use crate::cxone::wire::ErrorDetails;

/// Classifies a non-2xx answer.
pub(crate) fn error_for_status(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> CxoneError {
    if let Some(redirected) = CxoneError::redirected(status, headers) {
        return redirected;
    }
    let details = ErrorDetails::from_body(body);
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, Utc::now()));
    let message = details.message;
    match status.as_u16() {
        400 => CxoneError::BadRequest { message },
        401 => CxoneError::Unauthorized,
        403 => CxoneError::Forbidden {
            scope: details.scope.or_else(|| scope_in_challenge(headers)),
            message,
        },
        404 => CxoneError::NotFound { message },
        409 => CxoneError::Conflict { message },
        429 => CxoneError::RateLimited { retry_after },
        500..=599 => CxoneError::Server {
            status: status.as_u16(),
            message,
            retry_after,
        },
        other => CxoneError::Decode(format!(
            "unexpected HTTP status {other}{}",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        )),
    }
}

/// The `scope` of an RFC 6750 challenge:
/// `WWW-Authenticate: Bearer error="insufficient_scope", scope="users:state:write"`.
fn scope_in_challenge(headers: &HeaderMap) -> Option<String> {
    let challenge = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    let start = challenge.find("scope=\"")? + "scope=\"".len();
    let rest = &challenge[start..];
    let scope = &rest[..rest.find('"')?];
    (!scope.is_empty()).then(|| scope.to_owned())
}

/// Classifies a request that got no answer.
pub(crate) fn transport_error(err: reqwest::Error) -> CxoneError {
    if err.is_timeout() {
        CxoneError::Timeout
    } else if err.is_builder() {
        CxoneError::BadRequest {
            message: format!(
                "cannot build the request: {}",
                crate::redact::error_chain(&err)
            ),
        }
    } else {
        // Refused or reset connections, DNS and TLS failures, bodies cut short: all are
        // network trouble that may pass, so all are retried like 5xx.
        CxoneError::Connect(crate::redact::error_chain(&err))
    }
}
