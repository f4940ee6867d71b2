//! The HTTP pipeline every platform call goes through, whatever the dialect.

use std::sync::Once;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{DATE, RETRY_AFTER};
use reqwest::{Method, Response};

use super::classify::{error_for_status, transport_error};
use crate::cxone::CxoneError;
use crate::cxone::retry::parse_retry_after;

/// Installs rustls' `ring` provider as the process default, once.
///
/// reqwest is built without a provider of its own (`rustls-no-provider`), so this must
/// run before the process builds its `reqwest::Client`. Calling it again, or after some
/// other provider was installed, changes nothing.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means a provider is already the default, which is all that is needed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One logical platform call, as sent on every attempt.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    /// The path as documented (`/api/v2/users/{userId}/state`), for spans.
    pub(crate) template: &'static str,
    /// The path to send, relative to the base, segments already percent-encoded.
    pub(crate) path: String,
    pub(crate) agent_id: Option<&'a str>,
    pub(crate) query: Vec<(&'static str, &'a str)>,
    pub(crate) body: Option<Vec<u8>>,
    /// Sent once and without a budget permit: the caller paces it (subscription polls).
    pub(crate) paced_by_caller: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn get(template: &'static str, path: String) -> Call<'a> {
        Call {
            method: Method::GET,
            template,
            path,
            agent_id: None,
            query: Vec::new(),
            body: None,
            paced_by_caller: false,
        }
    }

    pub(crate) fn for_agent(mut self, agent_id: &'a str) -> Call<'a> {
        self.agent_id = Some(agent_id);
        self
    }
}

/// Percent-encodes one path segment (agent ids come from users, and may hold `/`, `?`,
/// spaces…). Only RFC 3986 unreserved characters pass through unchanged.
pub(crate) fn path_segment(value: &str) -> Result<String, CxoneError> {
    // URL parsing treats `.` and `..` (encoded or not) as directory steps, so they
    // would silently address another resource; no platform user is called that.
    if matches!(value, "" | "." | "..") {
        return Err(CxoneError::BadRequest {
            message: format!("`{value}` is not a usable agent id"),
        });
    }
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(encoded)
}

/// A 2xx answer's body and the platform's time it carries in `Date`, if any.
pub(crate) struct Answer {
    pub(crate) body: Vec<u8>,
    pub(crate) date: Option<DateTime<Utc>>,
    /// A `Retry-After` on a 2xx answer: when the platform wants to be asked again (an
    /// aggregation query still working).
    pub(crate) retry_after: Option<Duration>,
}

impl Answer {
    /// The answer's `Date`, else now (a server that sends none leaves only our clock).
    pub(crate) fn time(&self) -> DateTime<Utc> {
        self.date.unwrap_or_else(Utc::now)
    }
}

/// [`read`], keeping the `Date` header (RFC 9110's IMF-fixdate, which RFC 2822 parsing
/// reads; an unreadable date is treated as none).
pub(crate) async fn read_dated(response: Response) -> Result<Answer, CxoneError> {
    let date = response
        .headers()
        .get(DATE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| DateTime::parse_from_rfc2822(value).ok())
        .map(|at| at.with_timezone(&Utc));
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, Utc::now()));
    let body = read(response).await?;
    Ok(Answer {
        body,
        date,
        retry_after,
    })
}

/// The body of a 2xx answer, or the typed error of any other.
async fn read(response: Response) -> Result<Vec<u8>, CxoneError> {
    let status = response.status();
    if status.is_success() {
        return response
            .bytes()
            .await
            .map(|body| body.to_vec())
            .map_err(transport_error);
    }
    let headers = response.headers().clone();
    // The status alone decides what happens next; an unreadable error body only costs
    // the message.
    let body = response.bytes().await.unwrap_or_default();
    Err(error_for_status(status, &headers, &body))
}
