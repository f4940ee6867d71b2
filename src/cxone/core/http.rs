//! The HTTP pipeline every platform call goes through, whatever the dialect.
//!
//! Every call is the retry policy around one attempt, and an attempt is: circuit check,
//! budget permit, token, send, classify. A 401 answer invalidates the token that was
//! refused, gets a new one and repeats the request once (with its own budget permit); a
//! second 401 is [`CxoneError::Unauthorized`]. Answers are classified by
//! [`error_for_status`], the same for both dialects.
//!
//! Calls paced by their caller (subscription and delta-feed polls) are the exception:
//! one attempt, no budget permit. Their pace is the platform's to judge between the polls
//! it accepts, so only the caller can keep it: a poll held back by the budget or retried
//! here would come too early (429), cycle after cycle. The state sync's share of the
//! budget is set aside instead (`Config::call_budget_per_minute`).

use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, DATE, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

use super::circuit::CircuitBreaker;
use super::classify::{ReadDetails, error_for_status, transport_error};
use super::token::{AccessToken, TokenCache};
use crate::cxone::retry::parse_retry_after;
use crate::cxone::{Budget, CxoneError, RetryPolicy};

/// Pages followed at most in one listing (a safety stop against a `next` loop).
pub(crate) const MAX_PAGES: usize = 1_000;

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
    /// The path to send, relative to the API base with segments already
    /// percent-encoded, or an absolute URL (a listing's `_links.next`).
    pub(crate) path: String,
    pub(crate) agent_id: Option<&'a str>,
    pub(crate) query: Vec<(&'static str, String)>,
    pub(crate) body: Option<Vec<u8>>,
    /// Sent once and without a budget permit: the caller paces it (feed polls).
    pub(crate) paced_by_caller: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn new(method: Method, template: &'static str, path: impl Into<String>) -> Call<'a> {
        Call {
            method,
            template,
            path: path.into(),
            agent_id: None,
            query: Vec::new(),
            body: None,
            paced_by_caller: false,
        }
    }

    pub(crate) fn get(template: &'static str, path: impl Into<String>) -> Call<'a> {
        Call::new(Method::GET, template, path)
    }

    pub(crate) fn for_agent(mut self, agent_id: &'a str) -> Call<'a> {
        self.agent_id = Some(agent_id);
        self
    }
}

/// A success (or 304) answer: its body and what its headers say of time.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Vec<u8>,
    /// The `Date` header: the platform's clock, which is when its real-time figures
    /// were produced.
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

    /// The body, or `None` for 204, 304 or a body of blanks: nothing to read.
    pub(crate) fn content(self) -> Option<Vec<u8>> {
        let empty = matches!(
            self.status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        ) || self.body.iter().all(u8::is_ascii_whitespace);
        (!empty).then_some(self.body)
    }
}

/// The transport, tokens, circuit breaker and budget of one tenant's client.
pub(crate) struct HttpCore {
    http: reqwest::Client,
    /// The API base for a token whose source names none.
    base_url: String,
    timeout: Duration,
    retry: RetryPolicy,
    budget: Arc<Budget>,
    pub(crate) tokens: TokenCache,
    circuit: CircuitBreaker,
    /// How the dialect's error answers read.
    details: ReadDetails,
}

impl HttpCore {
    /// `http` is the process's one `reqwest::Client`; `budget` is shared by every client
    /// of the tenant.
    pub(crate) fn new(
        http: reqwest::Client,
        base_url: String,
        timeout: Duration,
        retry: RetryPolicy,
        budget: Arc<Budget>,
        tokens: TokenCache,
        details: ReadDetails,
    ) -> HttpCore {
        install_crypto_provider();
        HttpCore {
            http,
            base_url,
            timeout,
            retry,
            budget,
            tokens,
            circuit: CircuitBreaker::new(),
            details,
        }
    }

    /// Changes how long calls pause after three 401s in a row (30 s by default).
    pub(crate) fn with_circuit_pause(mut self, pause: Duration) -> HttpCore {
        self.circuit = CircuitBreaker::with_pause(pause);
        self
    }

    #[tracing::instrument(
        name = "cxone.call",
        skip_all,
        fields(method = %call.method, path = call.template, agent_id = call.agent_id)
    )]
    pub(crate) async fn execute(&self, call: &Call<'_>) -> Result<Answer, CxoneError> {
        if call.paced_by_caller {
            return self.attempt(call).await;
        }
        self.retry.run(|| self.attempt(call)).await
    }

    async fn attempt(&self, call: &Call<'_>) -> Result<Answer, CxoneError> {
        self.circuit.check()?;
        self.take_permit(call).await;
        let token = self.tokens.token().await?;
        let response = self.send(call, &token).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            self.circuit.record_answer();
            return self.read(response).await;
        }

        self.refused(&token).await;
        tracing::info!(
            generation = token.generation(),
            "access token refused (401); refreshing it and repeating the request once"
        );
        self.circuit.check()?;
        self.take_permit(call).await;
        let token = self.tokens.token().await?;
        let response = self.send(call, &token).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.refused(&token).await;
            return Err(CxoneError::Unauthorized);
        }
        self.circuit.record_answer();
        self.read(response).await
    }

    async fn take_permit(&self, call: &Call<'_>) {
        if !call.paced_by_caller {
            self.budget.acquire().await;
        }
    }

    async fn refused(&self, token: &AccessToken) {
        self.circuit.record_unauthorized(token.generation());
        self.tokens.invalidate(token.generation()).await;
    }

    async fn send(&self, call: &Call<'_>, token: &AccessToken) -> Result<Response, CxoneError> {
        let url = if call.path.starts_with("http://") || call.path.starts_with("https://") {
            call.path.clone()
        } else {
            // The token answer may move us to another cluster; either base may or may
            // not end in a slash.
            let base = token.base_url().unwrap_or(&self.base_url);
            format!(
                "{}/{}",
                base.trim_end_matches('/'),
                call.path.trim_start_matches('/')
            )
        };
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .timeout(self.timeout)
            .bearer_auth(token.expose())
            .header(ACCEPT, "application/json");
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(body) = &call.body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        } else if call.method == Method::POST {
            // Some gateways refuse a bodiless POST without a length.
            request = request.header(CONTENT_LENGTH, "0");
        }
        request.send().await.map_err(transport_error)
    }

    /// The answer of a 2xx or 304 (which answers a conditional request: nothing new),
    /// keeping `Date` (RFC 9110's IMF-fixdate, which RFC 2822 parsing reads; an
    /// unreadable date is treated as none) and `Retry-After`; the typed error of any
    /// other status.
    async fn read(&self, response: Response) -> Result<Answer, CxoneError> {
        let status = response.status();
        if !status.is_success() && status != StatusCode::NOT_MODIFIED {
            let headers = response.headers().clone();
            // The status alone decides what happens next; an unreadable error body only
            // costs the message.
            let body = response.bytes().await.unwrap_or_default();
            return Err(error_for_status(status, &headers, &body, self.details));
        }
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
        let body = response.bytes().await.map_err(transport_error)?.to_vec();
        Ok(Answer {
            status,
            body,
            date,
            retry_after,
        })
    }

    /// Every page of a listing: `first` as given, then each page's `next` link (an
    /// absolute URL, or a path) until a page names none, an empty answer, or
    /// [`MAX_PAGES`]. `items` reads one page into `out` and returns its `next`.
    pub(crate) async fn all_pages<T>(
        &self,
        first: Call<'_>,
        mut items: impl FnMut(&[u8], &mut Vec<T>) -> Result<Value, CxoneError>,
    ) -> Result<Vec<T>, CxoneError> {
        let mut out = Vec::new();
        let mut call = first;
        for _ in 0..MAX_PAGES {
            let Some(body) = self.execute(&call).await?.content() else {
                break;
            };
            let next = items(&body, &mut out)?;
            match next.as_str().filter(|n| !n.is_empty()) {
                Some(next) => call = Call::get(call.template, next.to_owned()),
                None => break,
            }
        }
        Ok(out)
    }

    /// Proves the credentials get a token (`wfmd doctor`); a paused circuit means calls
    /// would fail now, so access is not proven.
    pub(crate) async fn check_access(&self) -> Result<(), CxoneError> {
        self.retry
            .run(|| async {
                self.circuit.check()?;
                self.tokens.token().await.map(drop)
            })
            .await
    }

    /// Whether calls are held back now (the 401 circuit is open).
    pub(crate) fn paused(&self) -> Result<(), CxoneError> {
        self.circuit.check()
    }
}

impl fmt::Debug for HttpCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCore")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("budget", &self.budget)
            .field("tokens", &self.tokens)
            .field("circuit", &self.circuit)
            .finish_non_exhaustive()
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
