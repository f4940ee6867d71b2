//! What a platform answer means: the status of an answer, or a request that got none,
//! as the typed [`CxoneError`] the rest of wfmd decides on.

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};

use crate::cxone::CxoneError;
use crate::cxone::retry::parse_retry_after;

/// What an error answer says, as far as the dialect can read it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorDetails {
    /// The server's explanation, truncated; empty when there is none.
    pub message: String,
    /// The OAuth scope the server says is missing (403 answers).
    pub scope: Option<String>,
}

/// How a dialect reads an error answer's headers and body.
pub(crate) type ReadDetails = fn(&HeaderMap, &[u8]) -> ErrorDetails;

/// Classifies an answer that is neither a success nor 304 (see
/// [`read`](super::http::HttpCore::read)), the same for both dialects; only what the error body
/// says is read by the dialect (`details`).
///
/// A status the contract does not list is `BadRequest` when it is a 4xx (the platform
/// refused our request, as a 400 does: do not retry) and `Decode` otherwise (an answer
/// wfmd cannot read).
pub(crate) fn error_for_status(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    details: ReadDetails,
) -> CxoneError {
    if let Some(redirected) = CxoneError::redirected(status, headers) {
        return redirected;
    }
    let ErrorDetails { message, scope } = details(headers, body);
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, Utc::now()));
    match status.as_u16() {
        400 => CxoneError::BadRequest { message },
        401 => CxoneError::Unauthorized,
        403 => CxoneError::Forbidden { scope, message },
        404 => CxoneError::NotFound { message },
        409 => CxoneError::Conflict { message },
        429 => CxoneError::RateLimited { retry_after },
        500..=599 => CxoneError::Server {
            status: status.as_u16(),
            message,
            retry_after,
        },
        other @ 400..=499 => CxoneError::BadRequest {
            message: unexpected(other, &message),
        },
        other => CxoneError::Decode(unexpected(other, &message)),
    }
}

fn unexpected(status: u16, message: &str) -> String {
    if message.is_empty() {
        format!("unexpected HTTP status {status}")
    } else {
        format!("unexpected HTTP status {status}: {message}")
    }
}

/// The `scope` of an RFC 6750 challenge:
/// `WWW-Authenticate: Bearer error="insufficient_scope", scope="users:state:write"`.
pub(crate) fn scope_in_challenge(headers: &HeaderMap) -> Option<String> {
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
