//! [`V2Client`]: the [`ContactCenter`] of the v2 dialect of `cxone-api.md`.
//!
//! Every call is the retry policy around one attempt, and an attempt is: circuit check,
//! budget permit, token, send, classify. A 401 answer invalidates the token that was
//! refused, gets a new one and repeats the request once (with its own budget permit); a
//! second 401 is [`CxoneError::Unauthorized`]. Answers are classified into the typed
//! [`CxoneError`]s the rest of wfmd decides on.
//!
//! Subscription polls are the exception: one attempt, no budget permit. Their pace is
//! the subscription's interval, which the platform measures between the polls it
//! accepts, so only the caller can keep it: a poll held back by the budget or retried
//! here would leave the next one too early (429), cycle after cycle. The state sync's
//! share of the budget is set aside instead (`Config::call_budget_per_minute`).

use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::{ACCEPT, CONTENT_TYPE, DATE, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use super::aggregation::{self, AggregationPage, AggregationQuery};
use super::auth::{AccessToken, CircuitBreaker, TokenCache};
use super::retry::parse_retry_after;
use super::wire::{self, ErrorDetails};
use super::{
    Agent, AgentFilter, AgentSnapshot, Budget, ClientSettings, ContactCenter, CxoneError,
    MAX_QUEUES_PER_CALL, ObservedAgent, Queue, RetryPolicy, Skill, Subscription,
    SubscriptionRequest,
};
use crate::domain::metrics::{QueueTile, SkillTile};
use crate::domain::{AgentState, BreakStatus, Schedule};

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

/// The v2 platform client of one tenant.
pub struct V2Client {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
    retry: RetryPolicy,
    budget: Arc<Budget>,
    tokens: TokenCache,
    circuit: CircuitBreaker,
}

impl V2Client {
    /// `http` is the process's one `reqwest::Client`; `budget` is shared by every client
    /// of the tenant.
    pub fn new(http: reqwest::Client, settings: ClientSettings, budget: Arc<Budget>) -> V2Client {
        install_crypto_provider();
        let ClientSettings {
            base_url,
            token_url,
            client_id,
            client_secret,
            request_timeout,
            retry,
        } = settings;
        let tokens = TokenCache::new(
            http.clone(),
            token_url,
            client_id,
            client_secret,
            request_timeout,
        );
        V2Client {
            http,
            base_url,
            timeout: request_timeout,
            retry,
            budget,
            tokens,
            circuit: CircuitBreaker::new(),
        }
    }

    /// Changes how long calls pause after three 401s in a row (30 s by default); for
    /// tests that need to see the pause end.
    pub fn with_circuit_pause(mut self, pause: Duration) -> V2Client {
        self.circuit = CircuitBreaker::with_pause(pause);
        self
    }

    #[tracing::instrument(
        name = "cxone.call",
        skip_all,
        fields(method = %call.method, path = call.template, agent_id = call.agent_id)
    )]
    async fn execute(&self, call: &Call<'_>) -> Result<Vec<u8>, CxoneError> {
        self.execute_dated(call).await.map(|answer| answer.body)
    }

    /// [`V2Client::execute`], keeping the answer's `Date` as well: the platform's clock,
    /// which is when its real-time figures were produced.
    async fn execute_dated(&self, call: &Call<'_>) -> Result<Answer, CxoneError> {
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
            return read_dated(response).await;
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
        read_dated(response).await
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
        // The token answer may move us to another cluster; either base may or may not
        // end in a slash.
        let base = token.base_url().unwrap_or(&self.base_url);
        let url = format!("{}/{}", base.trim_end_matches('/'), call.path);
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
        }
        request.send().await.map_err(transport_error)
    }
}

impl fmt::Debug for V2Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V2Client")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("budget", &self.budget)
            .field("tokens", &self.tokens)
            .field("circuit", &self.circuit)
            .finish_non_exhaustive()
    }
}

/// One logical platform call, as sent on every attempt.
struct Call<'a> {
    method: Method,
    /// The path as documented (`/api/v2/users/{userId}/state`), for spans.
    template: &'static str,
    /// The path to send, relative to the base, segments already percent-encoded.
    path: String,
    agent_id: Option<&'a str>,
    query: Vec<(&'static str, &'a str)>,
    body: Option<Vec<u8>>,
    /// Sent once and without a budget permit: the caller paces it (subscription polls).
    paced_by_caller: bool,
}

impl<'a> Call<'a> {
    fn get(template: &'static str, path: String) -> Call<'a> {
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

    fn for_agent(mut self, agent_id: &'a str) -> Call<'a> {
        self.agent_id = Some(agent_id);
        self
    }
}

#[async_trait]
impl ContactCenter for V2Client {
    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, CxoneError> {
        let mut call = Call::get("/api/v2/users", "api/v2/users".to_owned());
        if let Some(team) = &filter.team_id {
            call.query.push(("teamId", team));
        }
        if let Some(skill) = &filter.skill_id {
            call.query.push(("skillId", skill));
        }
        let body = self.execute(&call).await?;
        let answer: wire::UsersAnswer = wire::parse("users", &body)?;
        Ok(answer.users.into_iter().map(Agent::from).collect())
    }

    async fn agent_state(&self, agent_id: &str) -> Result<AgentSnapshot, CxoneError> {
        let path = format!("api/v2/users/{}/state", path_segment(agent_id)?);
        let call = Call::get("/api/v2/users/{userId}/state", path).for_agent(agent_id);
        let body = self.execute(&call).await?;
        let answer: wire::StateAnswer = wire::parse("agent state", &body)?;
        answer.into_snapshot(agent_id)
    }

    async fn set_agent_state(
        &self,
        agent_id: &str,
        state: AgentState,
        reason: &str,
    ) -> Result<AgentSnapshot, CxoneError> {
        if !state.is_settable() {
            // The platform would answer 400; saying so here spares a budget permit.
            return Err(CxoneError::BadRequest {
                message: format!("{state} is observed only and cannot be set"),
            });
        }
        let reason = if reason.is_empty() {
            state.default_reason()
        } else {
            reason
        };
        let body = serde_json::to_vec(&wire::SetStateBody {
            state: state.as_str(),
            reason_code: reason,
        })
        .map_err(|e| CxoneError::Decode(format!("cannot encode the state change: {e}")))?;
        let path = format!("api/v2/users/{}/state", path_segment(agent_id)?);
        let mut call = Call::get("/api/v2/users/{userId}/state", path).for_agent(agent_id);
        call.method = Method::POST;
        call.body = Some(body);
        let body = self.execute(&call).await?;
        let answer: wire::StateAnswer = wire::parse("agent state", &body)?;
        answer.into_snapshot(agent_id)
    }

    async fn schedule(&self, agent_id: &str) -> Result<Schedule, CxoneError> {
        let path = format!("api/v2/schedules/users/{}", path_segment(agent_id)?);
        let call = Call::get("/api/v2/schedules/users/{userId}", path).for_agent(agent_id);
        let body = self.execute(&call).await?;
        let answer: wire::ScheduleAnswer = wire::parse("schedule", &body)?;
        Schedule::try_from(answer)
    }

    async fn break_status(&self, agent_id: &str) -> Result<BreakStatus, CxoneError> {
        let path = format!("api/v2/breaks/users/{}/status", path_segment(agent_id)?);
        let call = Call::get("/api/v2/breaks/users/{userId}/status", path).for_agent(agent_id);
        let body = self.execute(&call).await?;
        let answer: wire::BreakStatusAnswer = wire::parse("break status", &body)?;
        Ok(BreakStatus::from(answer))
    }

    async fn create_subscription(
        &self,
        request: &SubscriptionRequest,
    ) -> Result<Subscription, CxoneError> {
        self.create_subscription_call(request).await
    }

    async fn poll_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<Vec<ObservedAgent>, CxoneError> {
        let mut call = self.subscription_call(Method::GET, subscription_id)?;
        call.paced_by_caller = true;
        let body = self.execute(&call).await?;
        let answer: wire::SnapshotAnswer = wire::parse("subscription poll", &body)?;
        Ok(answer
            .data
            .into_iter()
            .filter_map(wire::ObservedJson::into_observed)
            .collect())
    }

    async fn delete_subscription(&self, subscription_id: &str) -> Result<(), CxoneError> {
        let call = self.subscription_call(Method::DELETE, subscription_id)?;
        self.execute(&call).await.map(drop)
    }

    async fn list_skills(&self) -> Result<Vec<Skill>, CxoneError> {
        let call = Call::get("/api/v2/skills", "api/v2/skills".to_owned());
        let body = self.execute(&call).await?;
        let answer: wire::SkillsAnswer = wire::parse("skills", &body)?;
        Ok(answer.skills.into_iter().map(Skill::from).collect())
    }

    async fn list_queues(&self) -> Result<Vec<Queue>, CxoneError> {
        let call = Call::get("/api/v2/queues", "api/v2/queues".to_owned());
        let body = self.execute(&call).await?;
        let answer: wire::QueuesAnswer = wire::parse("queues", &body)?;
        Ok(answer.queues.into_iter().map(Queue::from).collect())
    }

    async fn skill_activity(&self, skill_ids: &[String]) -> Result<Vec<SkillTile>, CxoneError> {
        if skill_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = skill_ids.join(",");
        let mut call = Call::get(SKILL_DATA, SKILL_DATA[1..].to_owned());
        call.query.push(("skillId", &ids));
        let answer = self.execute_dated(&call).await?;
        let at = answer.time();
        let parsed: wire::SkillDataAnswer = wire::parse("skill data", &answer.body)?;
        Ok(parsed
            .skill_data
            .into_iter()
            .map(|skill| skill.into_tile(at))
            .collect())
    }

    async fn queue_stats(&self, queue_ids: &[String]) -> Result<Vec<QueueTile>, CxoneError> {
        if queue_ids.is_empty() {
            return Ok(Vec::new());
        }
        if queue_ids.len() > MAX_QUEUES_PER_CALL {
            // The platform would answer 400; saying so here spares a budget permit.
            return Err(CxoneError::BadRequest {
                message: format!(
                    "at most {MAX_QUEUES_PER_CALL} queue ids a call, got {}",
                    queue_ids.len()
                ),
            });
        }
        let body = serde_json::to_vec(&wire::QueueStatsBody { queue_ids })
            .map_err(|e| CxoneError::Decode(format!("cannot encode the queue ids: {e}")))?;
        let mut call = Call::get(QUEUE_STATS, QUEUE_STATS[1..].to_owned());
        call.method = Method::POST;
        call.body = Some(body);
        let answer = self.execute_dated(&call).await?;
        let at = answer.time();
        let parsed: wire::QueueStatsAnswer = wire::parse("queue stats", &answer.body)?;
        Ok(parsed
            .queues
            .into_iter()
            .map(|queue| queue.into_tile(at))
            .collect())
    }

    fn aggregation_offered(&self) -> Result<(), CxoneError> {
        Ok(())
    }

    async fn submit_aggregation(&self, query: &AggregationQuery) -> Result<String, CxoneError> {
        // The caller checked it; checking again costs nothing and spares a 400.
        query.validate().map_err(|e| CxoneError::BadRequest {
            message: e.to_string(),
        })?;
        let body = serde_json::to_vec(&query.body())
            .map_err(|e| CxoneError::Decode(format!("cannot encode the query: {e}")))?;
        let mut call = Call::get(AGGREGATION_QUERY, AGGREGATION_QUERY[1..].to_owned());
        call.method = Method::POST;
        call.body = Some(body);
        let body = self.execute(&call).await?;
        let answer: aggregation::SubmitAnswer = wire::parse("aggregation query", &body)?;
        Ok(answer.id)
    }

    async fn aggregation_page(
        &self,
        query_id: &str,
        limit: u32,
        offset: u64,
    ) -> Result<AggregationPage, CxoneError> {
        let path = format!("api/v2/analytics/query/{}", path_segment(query_id)?);
        let (limit, offset) = (limit.to_string(), offset.to_string());
        let mut call = Call::get("/api/v2/analytics/query/{id}", path);
        call.query.push(("limit", &limit));
        call.query.push(("offset", &offset));
        let answer = self.execute_dated(&call).await?;
        let parsed: aggregation::QueryAnswer = wire::parse("aggregation query", &answer.body)?;
        parsed.into_page(answer.retry_after)
    }

    fn paused(&self) -> Result<(), CxoneError> {
        self.circuit.check()
    }

    #[tracing::instrument(name = "cxone.check_access", skip_all)]
    async fn check_access(&self) -> Result<(), CxoneError> {
        // A paused circuit means calls would fail now, so access is not proven.
        self.retry
            .run(|| async {
                self.circuit.check()?;
                self.tokens.token().await.map(drop)
            })
            .await
    }
}

const SUBSCRIPTIONS: &str = "/api/v2/analytics/realtime/subscription";
const AGGREGATION_QUERY: &str = "/api/v2/analytics/query";
const SKILL_DATA: &str = "/inContactAPI/services/v18.0/real-time-data/skill-data";
const QUEUE_STATS: &str = "/api/v2/reporting/queues/realtime";
const SUBSCRIPTION: &str = "/api/v2/analytics/realtime/subscription/{subscriptionId}";

impl V2Client {
    fn subscription_call<'a>(
        &self,
        method: Method,
        subscription_id: &str,
    ) -> Result<Call<'a>, CxoneError> {
        let path = format!(
            "api/v2/analytics/realtime/subscription/{}",
            path_segment(subscription_id)?
        );
        let mut call = Call::get(SUBSCRIPTION, path);
        call.method = method;
        Ok(call)
    }

    pub(crate) async fn create_subscription_call(
        &self,
        request: &SubscriptionRequest,
    ) -> Result<Subscription, CxoneError> {
        let interval_ms = u64::try_from(request.interval.as_millis()).unwrap_or(u64::MAX);
        let body = serde_json::to_vec(&wire::SubscriptionBody {
            name: &request.name,
            interval: interval_ms,
            view: wire::ViewBody {
                id: "users",
                metrics: &wire::SUBSCRIPTION_METRICS,
                filter: request
                    .agent_ids
                    .as_deref()
                    .map(|ids| wire::FilterBody { user_id: ids }),
            },
        })
        .map_err(|e| CxoneError::Decode(format!("cannot encode the subscription: {e}")))?;
        let mut call = Call::get(SUBSCRIPTIONS, SUBSCRIPTIONS[1..].to_owned());
        call.method = Method::POST;
        call.body = Some(body);
        let body = self.execute(&call).await?;
        let answer: wire::SubscriptionAnswer = wire::parse("subscription", &body)?;
        Ok(Subscription {
            id: answer.subscription_id,
            interval: answer
                .interval
                .map_or(request.interval, Duration::from_millis),
            expires_at: answer.expires_at,
        })
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
struct Answer {
    body: Vec<u8>,
    date: Option<DateTime<Utc>>,
    /// A `Retry-After` on a 2xx answer: when the platform wants to be asked again (an
    /// aggregation query still working).
    retry_after: Option<Duration>,
}

impl Answer {
    /// The answer's `Date`, else now (a server that sends none leaves only our clock).
    fn time(&self) -> DateTime<Utc> {
        self.date.unwrap_or_else(Utc::now)
    }
}

/// [`read`], keeping the `Date` header (RFC 9110's IMF-fixdate, which RFC 2822 parsing
/// reads; an unreadable date is treated as none).
async fn read_dated(response: Response) -> Result<Answer, CxoneError> {
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use futures::future::join_all;
    use wiremock::matchers::{body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    use super::*;
    use secrecy::SecretString;

    const SECRET: &str = "client-s3cret";
    const CLIENT_ID: &str = "wfmd-test";

    fn retry(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(2),
        }
    }

    fn settings(base_url: String, token_url: String, retry: RetryPolicy) -> ClientSettings {
        ClientSettings {
            base_url,
            token_url,
            client_id: CLIENT_ID.into(),
            client_secret: SecretString::from(SECRET),
            request_timeout: Duration::from_secs(5),
            retry,
        }
    }

    fn client_with(settings: ClientSettings, budget: Budget) -> V2Client {
        install_crypto_provider();
        V2Client::new(reqwest::Client::new(), settings, Arc::new(budget))
    }

    /// A client whose API base and token endpoint are both on `server`.
    fn client(server: &MockServer, retry: RetryPolicy) -> V2Client {
        client_with(
            settings(server.uri(), token_url(server), retry),
            Budget::unlimited(),
        )
    }

    fn token_url(server: &MockServer) -> String {
        format!("{}/oauth2/token", server.uri())
    }

    fn token_answer(token: &str) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": token, "token_type": "bearer", "expires_in": 3600
        }))
    }

    async fn mount_token(server: &MockServer, token: &str) {
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(token_answer(token))
            .mount(server)
            .await;
    }

    fn state_json(state: &str) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "userId": "u_001", "agentState": state, "reasonCode": "WORKING",
            "statusChangedTimestamp": "2026-11-20T14:31:55Z"
        }))
    }

    fn error_json(status: u16, error: &str, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(status)
            .set_body_json(serde_json::json!({"error": error, "message": message}))
    }

    async fn requests(server: &MockServer, path_prefix: &str) -> Vec<Request> {
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path().starts_with(path_prefix))
            .collect()
    }

    async fn token_requests(server: &MockServer) -> usize {
        requests(server, "/oauth2/token").await.len()
    }

    async fn api_requests(server: &MockServer) -> usize {
        requests(server, "/api/").await.len()
    }

    #[tokio::test]
    async fn many_calls_share_one_token() {
        let server = MockServer::start().await;
        mount_token(&server, "tok-1").await;
        Mock::given(method("GET"))
            .and(path("/api/v2/users/u_001/state"))
            .and(header("authorization", "Bearer tok-1"))
            .respond_with(state_json("READY"))
            .mount(&server)
            .await;
        let client = client(&server, retry(0));
        for _ in 0..5 {
            let snapshot = client.agent_state("u_001").await.unwrap();
            assert_eq!(snapshot.state, AgentState::Ready);
        }
        assert_eq!(token_requests(&server).await, 1);
        assert_eq!(api_requests(&server).await, 5);
    }

    #[tokio::test]
    async fn revoked_token_is_refreshed_once_and_the_call_repeated() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(token_answer("tok-1"))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        mount_token(&server, "tok-2").await;
        Mock::given(header("authorization", "Bearer tok-1"))
            .respond_with(error_json(401, "invalid_token", "token revoked"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v2/users/u_001/state"))
            .and(header("authorization", "Bearer tok-2"))
            .respond_with(state_json("READY"))
            .mount(&server)
            .await;
        let client = client(&server, retry(3));
        assert_eq!(
            client.agent_state("u_001").await.unwrap().state,
            AgentState::Ready
        );
        assert_eq!(token_requests(&server).await, 2);
        assert_eq!(api_requests(&server).await, 2);
    }

    #[tokio::test]
    async fn second_401_is_unauthorized() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/users"))
            .respond_with(ResponseTemplate::new(401))
            .mount(&server)
            .await;
        let client = client(&server, retry(3));
        let err = client.list_agents(&AgentFilter::default()).await;
        assert_eq!(err, Err(CxoneError::Unauthorized));
        assert_eq!(api_requests(&server).await, 2);
        assert_eq!(token_requests(&server).await, 2);
    }

    #[tokio::test]
    async fn three_401s_in_a_row_pause_calls_until_the_circuit_closes() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/users"))
            .respond_with(ResponseTemplate::new(401))
            .mount(&server)
            .await;
        let pause = Duration::from_millis(300);
        let client = client(&server, retry(3)).with_circuit_pause(pause);
        let all = AgentFilter::default();
        assert_eq!(
            client.list_agents(&all).await,
            Err(CxoneError::Unauthorized)
        );
        // The third 401 opens the circuit, so this call's repeat is not sent.
        assert!(matches!(
            client.list_agents(&all).await,
            Err(CxoneError::CircuitOpen { .. })
        ));
        assert_eq!(api_requests(&server).await, 3);
        let sent_tokens = token_requests(&server).await;

        let err = client.list_agents(&all).await.unwrap_err();
        assert!(
            matches!(err, CxoneError::CircuitOpen { remaining } if remaining <= pause),
            "{err:?}"
        );
        assert!(matches!(
            client.check_access().await,
            Err(CxoneError::CircuitOpen { .. })
        ));
        assert_eq!(api_requests(&server).await, 3, "nothing sent while open");
        assert_eq!(token_requests(&server).await, sent_tokens);

        // After the pause, calls go out again.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match client.list_agents(&all).await {
                Err(CxoneError::CircuitOpen { .. }) if Instant::now() < deadline => {
                    tokio::task::yield_now().await
                }
                other => {
                    assert_eq!(other, Err(CxoneError::Unauthorized));
                    break;
                }
            }
        }
        assert_eq!(api_requests(&server).await, 5);
    }

    #[tokio::test]
    async fn concurrent_401s_on_one_revoked_token_cause_one_refresh() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(token_answer("tok-1"))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(token_answer("tok-2").set_delay(Duration::from_millis(50)))
            .mount(&server)
            .await;
        Mock::given(header("authorization", "Bearer tok-1"))
            .respond_with(ResponseTemplate::new(401).set_delay(Duration::from_millis(50)))
            .mount(&server)
            .await;
        Mock::given(header("authorization", "Bearer tok-2"))
            .respond_with(state_json("PAUSED"))
            .mount(&server)
            .await;
        let client = Arc::new(client(&server, retry(0)));
        client.check_access().await.unwrap();
        let calls = (0..50).map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.agent_state("u_001").await })
        });
        for outcome in join_all(calls).await {
            assert_eq!(outcome.unwrap().unwrap().state, AgentState::Paused);
        }
        assert_eq!(token_requests(&server).await, 2);
        assert_eq!(api_requests(&server).await, 100);
    }

    #[tokio::test]
    async fn resource_server_base_uri_replaces_the_configured_base() {
        for advertised in ["c9/", "c9"] {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path("/oauth2/token"))
                .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "access_token": "tok", "token_type": "bearer", "expires_in": 3600,
                    "resource_server_base_uri": format!("{}/{advertised}", server.uri())
                })))
                .mount(&server)
                .await;
            Mock::given(method("GET"))
                .and(path("/c9/api/v2/users"))
                .respond_with(ResponseTemplate::new(200).set_body_json(
                    serde_json::json!({"users": [{"userId": "u_001", "userName": "Ada"}]}),
                ))
                .mount(&server)
                .await;
            // Nothing listens on the configured base: using it would fail.
            let client = client_with(
                settings(closed_port_url(), token_url(&server), retry(0)),
                Budget::unlimited(),
            );
            let agents = client.list_agents(&AgentFilter::default()).await.unwrap();
            assert_eq!(agents.len(), 1, "advertised base {advertised}");
            assert_eq!(agents[0].name, "Ada");
        }
    }

    #[tokio::test]
    async fn configured_base_with_or_without_trailing_slash_reaches_the_api() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(method("GET"))
            .and(path("/api/v2/users"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"users": []})),
            )
            .mount(&server)
            .await;
        for base in [server.uri(), format!("{}/", server.uri())] {
            let client = client_with(
                settings(base, token_url(&server), retry(0)),
                Budget::unlimited(),
            );
            assert_eq!(
                client.list_agents(&AgentFilter::default()).await,
                Ok(vec![])
            );
        }
    }

    fn closed_port_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn rejected_credentials_fail_fast_naming_only_the_client_id() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(error_json(401, "invalid_client", "bad secret"))
            .mount(&server)
            .await;
        let client = client(&server, retry(5));
        let err = client
            .list_agents(&AgentFilter::default())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            CxoneError::BadCredentials {
                client_id: CLIENT_ID.into(),
                status: 401
            }
        );
        let message = err.to_string();
        assert!(message.contains(CLIENT_ID), "{message}");
        assert!(!message.contains(SECRET), "{message}");
        assert_eq!(token_requests(&server).await, 1);
        assert_eq!(api_requests(&server).await, 0);
        assert!(matches!(
            client.check_access().await,
            Err(CxoneError::BadCredentials { .. })
        ));
    }

    #[tokio::test]
    async fn token_endpoint_outage_is_retried() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        mount_token(&server, "tok").await;
        let client = client(&server, retry(2));
        assert_eq!(client.check_access().await, Ok(()));
        assert_eq!(token_requests(&server).await, 2);
    }

    #[tokio::test]
    async fn rate_limited_call_waits_for_retry_after() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/users/u_001/state"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(path("/api/v2/users/u_001/state"))
            .respond_with(state_json("READY"))
            .mount(&server)
            .await;
        let client = client(&server, retry(3));
        let start = Instant::now();
        assert!(client.agent_state("u_001").await.is_ok());
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(api_requests(&server).await, 2);
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_success() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/users/u_001/state"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(path("/api/v2/users/u_001/state"))
            .respond_with(state_json("IDLE"))
            .mount(&server)
            .await;
        let client = client(&server, retry(3));
        assert_eq!(
            client.agent_state("u_001").await.unwrap().state,
            AgentState::Idle
        );
        assert_eq!(api_requests(&server).await, 3);
    }

    #[tokio::test]
    async fn server_errors_beyond_max_retries_surface() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/users/u_001/state"))
            .respond_with(error_json(500, "internal", "database on fire"))
            .mount(&server)
            .await;
        let client = client(&server, retry(2));
        assert_eq!(
            client.agent_state("u_001").await,
            Err(CxoneError::Server {
                status: 500,
                message: "database on fire".into(),
                retry_after: None,
            })
        );
        assert_eq!(api_requests(&server).await, 3);
    }

    #[tokio::test]
    async fn client_errors_are_not_retried_and_keep_the_server_message() {
        let cases = [
            (
                error_json(400, "bad_request", "unknown state LUNCH"),
                CxoneError::BadRequest {
                    message: "unknown state LUNCH".into(),
                },
            ),
            (
                error_json(403, "insufficient_scope", "missing scope users:state:write"),
                CxoneError::Forbidden {
                    message: "missing scope users:state:write".into(),
                    scope: Some("users:state:write".into()),
                },
            ),
            (
                ResponseTemplate::new(403).insert_header(
                    "WWW-Authenticate",
                    r#"Bearer error="insufficient_scope", scope="users:state:write""#,
                ),
                CxoneError::Forbidden {
                    message: String::new(),
                    scope: Some("users:state:write".into()),
                },
            ),
            (
                error_json(404, "not_found", "unknown user u_001"),
                CxoneError::NotFound {
                    message: "unknown user u_001".into(),
                },
            ),
            (
                error_json(409, "conflict", "agent is ON_CONTACT"),
                CxoneError::Conflict {
                    message: "agent is ON_CONTACT".into(),
                },
            ),
        ];
        for (answer, expected) in cases {
            let server = MockServer::start().await;
            mount_token(&server, "tok").await;
            Mock::given(method("POST"))
                .and(path("/api/v2/users/u_001/state"))
                .respond_with(answer)
                .mount(&server)
                .await;
            let client = client(&server, retry(3));
            let outcome = client
                .set_agent_state("u_001", AgentState::NotReady, "BREAK")
                .await;
            assert_eq!(outcome, Err(expected));
            assert_eq!(api_requests(&server).await, 1);
        }
    }

    #[tokio::test]
    async fn forbidden_message_names_the_missing_scope() {
        let err = CxoneError::Forbidden {
            message: String::new(),
            scope: Some("breaks:view".into()),
        };
        assert!(err.to_string().contains("breaks:view"), "{err}");
    }

    #[tokio::test]
    async fn hanging_request_times_out_and_is_retried() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/users/u_001/state"))
            .respond_with(state_json("READY").set_delay(Duration::from_millis(800)))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(path("/api/v2/users/u_001/state"))
            .respond_with(state_json("READY"))
            .mount(&server)
            .await;
        let mut settings = settings(server.uri(), token_url(&server), retry(2));
        settings.request_timeout = Duration::from_millis(100);
        let client = client_with(settings, Budget::unlimited());
        assert!(client.agent_state("u_001").await.is_ok());
        assert_eq!(api_requests(&server).await, 2);
    }

    #[tokio::test]
    async fn requests_that_keep_hanging_end_in_timeout() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/users/u_001/state"))
            .respond_with(state_json("READY").set_delay(Duration::from_millis(800)))
            .mount(&server)
            .await;
        let mut settings = settings(server.uri(), token_url(&server), retry(1));
        settings.request_timeout = Duration::from_millis(100);
        let client = client_with(settings, Budget::unlimited());
        assert_eq!(client.agent_state("u_001").await, Err(CxoneError::Timeout));
        assert_eq!(api_requests(&server).await, 2);
    }

    #[tokio::test]
    async fn unreachable_platform_is_a_retryable_connect_error() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        let client = client_with(
            settings(closed_port_url(), token_url(&server), retry(1)),
            Budget::unlimited(),
        );
        let err = client.agent_state("u_001").await.unwrap_err();
        assert!(matches!(err, CxoneError::Connect(_)), "{err:?}");
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn set_agent_state_posts_state_and_reason() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(method("POST"))
            .and(path("/api/v2/users/u_001/state"))
            .and(body_json(
                serde_json::json!({"state": "NOT_READY", "reasonCode": "MEETING"}),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "userId": "u_001", "agentState": "NOT_READY", "reasonCode": "MEETING",
                "statusChangedTimestamp": "2026-11-20T14:40:00Z"
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/api/v2/users/u_001/state"))
            .and(body_json(
                serde_json::json!({"state": "IDLE", "reasonCode": "SYSTEM_IDLE"}),
            ))
            .respond_with(state_json("IDLE"))
            .expect(1)
            .mount(&server)
            .await;
        let client = client(&server, retry(0));
        let snapshot = client
            .set_agent_state("u_001", AgentState::NotReady, "MEETING")
            .await
            .unwrap();
        assert_eq!(
            snapshot,
            AgentSnapshot {
                agent_id: "u_001".into(),
                state: AgentState::NotReady,
                reason: Some("MEETING".into()),
                changed_at: Some("2026-11-20T14:40:00Z".parse().unwrap()),
            }
        );
        // No reason given: the contract's default for the state is sent.
        let snapshot = client
            .set_agent_state("u_001", AgentState::Idle, "")
            .await
            .unwrap();
        assert_eq!(snapshot.state, AgentState::Idle);
    }

    #[tokio::test]
    async fn observed_only_states_are_refused_without_a_request() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        let client = client(&server, retry(0));
        for state in [AgentState::OnContact, AgentState::Acw] {
            let err = client
                .set_agent_state("u_001", state, "")
                .await
                .unwrap_err();
            assert!(matches!(err, CxoneError::BadRequest { .. }), "{err:?}");
        }
        assert_eq!(api_requests(&server).await, 0);
    }

    #[tokio::test]
    async fn list_agents_sends_only_the_given_filters() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(method("GET"))
            .and(path("/api/v2/users"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "users": [{"userId": "u_001", "userName": "Ada Park", "teamId": "t_1",
                           "teamName": "Care", "skills": ["s_100"]}]
            })))
            .mount(&server)
            .await;
        let client = client(&server, retry(0));
        let agents = client.list_agents(&AgentFilter::default()).await.unwrap();
        assert_eq!(
            agents,
            [Agent {
                id: "u_001".into(),
                name: "Ada Park".into(),
                team_id: Some("t_1".into()),
                team_name: Some("Care".into()),
                skills: vec!["s_100".into()],
            }]
        );
        let filter = AgentFilter {
            team_id: Some("t 1&x".into()),
            skill_id: Some("s_100".into()),
        };
        client.list_agents(&filter).await.unwrap();
        let sent = requests(&server, "/api/v2/users").await;
        assert_eq!(sent[0].url.query(), None);
        let query: Vec<(String, String)> = sent[1].url.query_pairs().into_owned().collect();
        assert_eq!(
            query,
            [
                ("teamId".to_owned(), "t 1&x".to_owned()),
                ("skillId".to_owned(), "s_100".to_owned())
            ]
        );
        // A single filter alone.
        Mock::given(query_param("skillId", "s_200"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"users": []})),
            )
            .expect(1)
            .with_priority(1)
            .mount(&server)
            .await;
        let skill_only = AgentFilter {
            team_id: None,
            skill_id: Some("s_200".into()),
        };
        assert_eq!(client.list_agents(&skill_only).await, Ok(vec![]));
    }

    #[tokio::test]
    async fn agent_ids_are_percent_encoded_as_one_segment() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/users/a%2Fb%20c%3F/state"))
            .respond_with(state_json("READY"))
            .expect(1)
            .mount(&server)
            .await;
        let client = client(&server, retry(0));
        assert!(client.agent_state("a/b c?").await.is_ok());
        for unusable in ["", ".", ".."] {
            assert!(matches!(
                client.agent_state(unusable).await,
                Err(CxoneError::BadRequest { .. })
            ));
        }
    }

    #[tokio::test]
    async fn schedule_and_break_status_parse_sparse_answers() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/schedules/users/u_001"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"userId": "u_001", "status": "ACTIVE"})),
            )
            .mount(&server)
            .await;
        Mock::given(path("/api/v2/breaks/users/u_001/status"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"userId": "u_001", "mandatoryBreakRequired": true}),
            ))
            .mount(&server)
            .await;
        let client = client(&server, retry(0));
        let schedule = client.schedule("u_001").await.unwrap();
        assert!(schedule.is_active());
        assert_eq!(schedule.breaks, None);
        let status = client.break_status("u_001").await.unwrap();
        assert!(status.mandatory_break_required);
        assert_eq!(status.break_start, None);
    }

    #[tokio::test]
    async fn a_redirecting_platform_route_is_a_redirect_error_not_followed_nor_retried() {
        let target = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(state_json("READY"))
            .mount(&target)
            .await;
        let server = MockServer::start().await;
        mount_token(&server, "tok-1").await;
        Mock::given(path("/api/v2/users/u_001/state"))
            .respond_with(ResponseTemplate::new(301).insert_header(
                "location",
                format!("{}/api/v2/users/u_001/state?sig=s-123", target.uri()),
            ))
            .mount(&server)
            .await;
        install_crypto_provider();
        let client = V2Client::new(
            crate::http_client().unwrap(),
            settings(server.uri(), token_url(&server), retry(3)),
            Arc::new(Budget::unlimited()),
        );

        let err = client.agent_state("u_001").await.unwrap_err();
        assert_eq!(
            err,
            CxoneError::Redirected {
                status: 301,
                location: format!("{}/api/v2/users/u_001/state", target.uri()),
            }
        );
        assert!(
            target.received_requests().await.unwrap().is_empty(),
            "followed"
        );
        assert_eq!(api_requests(&server).await, 1, "a redirect is not retried");
        let message = err.to_string();
        assert!(
            message.contains("the platform answered 301") && !message.contains("s-123"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn unknown_agent_state_from_the_platform_is_a_decode_error() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/users/u_001/state"))
            .respond_with(state_json("SLEEPING"))
            .mount(&server)
            .await;
        let client = client(&server, retry(3));
        match client.agent_state("u_001").await {
            Err(CxoneError::Decode(message)) => assert!(message.contains("SLEEPING")),
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert_eq!(api_requests(&server).await, 1);
    }

    #[tokio::test]
    async fn check_access_gets_a_token_once() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        let client = client(&server, retry(0));
        assert_eq!(client.check_access().await, Ok(()));
        assert_eq!(client.check_access().await, Ok(()));
        assert_eq!(token_requests(&server).await, 1);
        assert_eq!(api_requests(&server).await, 0);
    }

    #[tokio::test]
    async fn every_api_request_takes_a_permit_and_token_calls_none() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(token_answer("tok-1"))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        mount_token(&server, "tok-2").await;
        Mock::given(header("authorization", "Bearer tok-1"))
            .respond_with(ResponseTemplate::new(401))
            .mount(&server)
            .await;
        Mock::given(header("authorization", "Bearer tok-2"))
            .respond_with(state_json("READY"))
            .mount(&server)
            .await;
        // Three permits that do not come back within the test.
        let budget = Arc::new(Budget::with_bucket(Duration::from_secs(3_600), 3));
        install_crypto_provider();
        let client = V2Client::new(
            reqwest::Client::new(),
            settings(server.uri(), token_url(&server), retry(0)),
            Arc::clone(&budget),
        );
        client.agent_state("u_001").await.unwrap();
        assert_eq!(token_requests(&server).await, 2);
        // The refused request and its repeat took two permits; one is left.
        assert!(budget.try_acquire());
        assert!(!budget.try_acquire());
    }

    #[tokio::test]
    async fn a_subscription_poll_takes_no_permit_and_leaves_a_429_to_its_caller() {
        let server = MockServer::start().await;
        mount_token(&server, "tok-1").await;
        let poll = "/api/v2/analytics/realtime/subscription/sub_1";
        Mock::given(method("GET"))
            .and(path(poll))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3"))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(poll))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "subscriptionId": "sub_1", "status": "active", "data": []
            })))
            .mount(&server)
            .await;
        // A budget with nothing left: any call that waited for it would hang the test.
        let budget = Arc::new(Budget::with_bucket(Duration::from_secs(3_600), 1));
        assert!(budget.try_acquire());
        install_crypto_provider();
        let client = V2Client::new(
            reqwest::Client::new(),
            settings(server.uri(), token_url(&server), retry(3)),
            budget,
        );

        let refused = client.poll_subscription("sub_1").await;
        assert_eq!(
            refused,
            Err(CxoneError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }),
            "sent once, not retried"
        );
        assert_eq!(client.poll_subscription("sub_1").await, Ok(Vec::new()));
        let polls = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() == poll)
            .count();
        assert_eq!(polls, 2);
    }

    #[tokio::test]
    async fn debug_output_shows_neither_secret_nor_token() {
        let server = MockServer::start().await;
        mount_token(&server, "tok-never-printed").await;
        let settings = settings(server.uri(), token_url(&server), retry(0));
        let settings_debug = format!("{settings:?}");
        assert!(!settings_debug.contains(SECRET), "{settings_debug}");
        let client = client_with(settings, Budget::per_minute(100));
        client.check_access().await.unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains("tok-never-printed"), "{debug}");
        assert!(debug.contains(CLIENT_ID), "{debug}");
    }

    #[test]
    fn unexpected_status_is_a_non_retryable_decode_error() {
        let err = error_for_status(
            StatusCode::IM_A_TEAPOT,
            &HeaderMap::new(),
            br#"{"message":"short and stout"}"#,
        );
        assert!(matches!(&err, CxoneError::Decode(m) if m.contains("418") && m.contains("stout")));
        assert!(!err.is_retryable());
    }

    #[test]
    fn server_retry_after_is_kept_on_5xx() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            error_for_status(StatusCode::SERVICE_UNAVAILABLE, &headers, b""),
            CxoneError::Server {
                status: 503,
                message: String::new(),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
        assert_eq!(
            error_for_status(StatusCode::TOO_MANY_REQUESTS, &headers, b""),
            CxoneError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[tokio::test]
    async fn skill_activity_asks_for_the_ids_and_stamps_tiles_with_the_platforms_date() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(method("GET"))
            .and(path(SKILL_DATA))
            .and(query_param("skillId", "1234,s_5"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("date", "Fri, 20 Nov 2026 14:31:30 GMT")
                    .set_body_json(serde_json::json!({"skillData": [
                        {"skillId": 1234, "skillName": "Tier 1 Voice", "contactsQueued": 3}
                    ]})),
            )
            .mount(&server)
            .await;
        let client = client(&server, retry(0));
        let tiles = client
            .skill_activity(&["1234".to_owned(), "s_5".to_owned()])
            .await
            .unwrap();
        assert_eq!(tiles.len(), 1, "the platform left s_5 out");
        assert_eq!(tiles[0].skill_id, "1234");
        assert_eq!(tiles[0].contacts_queued, 3);
        assert_eq!(
            tiles[0].sampled_at,
            "2026-11-20T14:31:30Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(client.skill_activity(&[]).await.unwrap().is_empty());
        assert_eq!(
            api_requests_to(&server, SKILL_DATA).await,
            1,
            "none for no ids"
        );
    }

    #[tokio::test]
    async fn queue_stats_post_the_ids_and_refuse_more_than_100_without_a_call() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(method("POST"))
            .and(path(QUEUE_STATS))
            .and(body_json(serde_json::json!({"queueIds": ["q_1", "q_2"]})))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "queues": [{"queueId": "q_1", "name": "Billing", "callsWaiting": 4,
                            "averageWaitTime": 42000, "serviceLevel": 0.91}]
            })))
            .mount(&server)
            .await;
        let client = client(&server, retry(0));
        let tiles = client
            .queue_stats(&["q_1".to_owned(), "q_2".to_owned()])
            .await
            .unwrap();
        assert_eq!(tiles[0].contacts_waiting, 4);
        assert_eq!(tiles[0].average_wait_ms, Some(42_000));
        // The mock server's own Date header (whole seconds) stamps the tile.
        assert_eq!(tiles[0].sampled_at.timestamp_subsec_nanos(), 0);

        let many: Vec<String> = (0..101).map(|n| format!("q_{n}")).collect();
        let err = client.queue_stats(&many).await.unwrap_err();
        assert!(matches!(&err, CxoneError::BadRequest { message } if message.contains("101")));
        assert_eq!(api_requests_to(&server, QUEUE_STATS).await, 1);
    }

    #[tokio::test]
    async fn a_missing_scope_on_queue_stats_is_forbidden_naming_it_and_not_retried() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path(QUEUE_STATS))
            .respond_with(error_json(
                403,
                "insufficient_scope",
                "missing scope reporting:queue:view",
            ))
            .mount(&server)
            .await;
        let client = client(&server, retry(3));
        let err = client.queue_stats(&["q_1".to_owned()]).await.unwrap_err();
        assert!(
            matches!(&err, CxoneError::Forbidden { scope: Some(s), .. } if s == "reporting:queue:view"),
            "{err:?}"
        );
        assert_eq!(api_requests_to(&server, QUEUE_STATS).await, 1);
    }

    #[tokio::test]
    async fn listings_accept_numeric_ids() {
        let server = MockServer::start().await;
        mount_token(&server, "tok").await;
        Mock::given(path("/api/v2/skills"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "skills": [{"skillId": 1234, "skillName": "Tier 1 Voice", "mediaType": "voice"}]
            })))
            .mount(&server)
            .await;
        Mock::given(path("/api/v2/queues"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "queues": [{"queueId": "q_1", "name": "Billing"}]
            })))
            .mount(&server)
            .await;
        let client = client(&server, retry(0));
        assert_eq!(
            client.list_skills().await.unwrap(),
            [Skill {
                id: "1234".into(),
                name: "Tier 1 Voice".into()
            }]
        );
        assert_eq!(
            client.list_queues().await.unwrap(),
            [Queue {
                id: "q_1".into(),
                name: "Billing".into()
            }]
        );
    }

    async fn api_requests_to(server: &MockServer, route: &str) -> usize {
        requests(server, route).await.len()
    }

    #[tokio::test]
    async fn aggregation_queries_speak_the_contract_and_keep_retry_after() {
        let server = MockServer::start().await;
        mount_token(&server, "tok-1").await;
        let query = AggregationQuery {
            metrics: vec![aggregation::AggMetric {
                name: "duration".into(),
                aggregation: "avg".into(),
            }],
            dimensions: vec!["group.id".into()],
            filter: None,
            bucket_size: "DAY".into(),
            start: "2026-10-01T00:00:00Z".into(),
            end: "2026-10-31T23:59:59Z".into(),
        };
        Mock::given(method("POST"))
            .and(path("/api/v2/analytics/query"))
            .and(body_json(query.body()))
            .respond_with(
                ResponseTemplate::new(202)
                    .set_body_json(serde_json::json!({"id": "qry_1", "status": "PENDING"})),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v2/analytics/query/qry_1"))
            .and(query_param("limit", "500"))
            .and(query_param("offset", "1000"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("Retry-After", "3")
                    .set_body_json(serde_json::json!({
                        "status": "RUNNING", "error": null, "total": null, "results": []})),
            )
            .mount(&server)
            .await;
        let client = client(&server, retry(0));
        assert_eq!(client.submit_aggregation(&query).await.unwrap(), "qry_1");
        let page = client.aggregation_page("qry_1", 500, 1000).await.unwrap();
        assert_eq!(page.status, aggregation::QueryStatus::Running);
        assert_eq!(page.retry_after, Some(Duration::from_secs(3)));
        assert!(page.rows.is_empty() && page.total.is_none());
    }
}
