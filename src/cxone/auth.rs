//! Access tokens and the 401 circuit breaker.
//!
//! [`TokenCache`] gets OAuth client-credentials tokens and reuses each until 60 s before
//! it expires. However many callers want a token at once, at most one token request is
//! in flight; callers that queued behind it take its outcome. Tokens carry a
//! generation, so a caller whose request was refused (401) invalidates exactly the token
//! it used: 200 callers refused with the same revoked token cause one refresh.
//!
//! [`CircuitBreaker`] pauses platform calls after repeated 401s, so a tenant whose
//! credentials stopped working is not hammered.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::CxoneError;
use super::core::classify::{error_for_status, transport_error};
use super::wire::TokenAnswer;

/// How long before its expiry a token is replaced.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Assumed lifetime when the token answer has no `expires_in` (OAuth only recommends
/// it): short enough that a token the server meant to be short-lived is not held long;
/// a revoked one is caught by the 401 refresh anyway.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// A bearer token as handed to one API call.
#[derive(Clone)]
pub(crate) struct AccessToken {
    secret: SecretString,
    generation: u64,
    /// `resource_server_base_uri` of the answer that issued this token.
    base_url: Option<String>,
}

impl AccessToken {
    /// The value to put after `Bearer `. Call only where the header is built.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// Which token this is; pass it to [`TokenCache::invalidate`] after a 401.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The API base URL this token is meant for, when the token answer named one.
    pub fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("generation", &self.generation)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// A token with its expiry bookkeeping.
struct Cached {
    token: AccessToken,
    /// From here on the token is replaced before use.
    refresh_at: Instant,
    /// From here on the server no longer accepts it.
    expires_at: Instant,
}

impl Cached {
    /// `requested_at` is when the token request was sent: the lifetime counts from the
    /// server's clock, which started no earlier than that.
    fn new(token: AccessToken, requested_at: Instant, lifetime: Duration) -> Cached {
        Cached {
            token,
            refresh_at: requested_at + lifetime.saturating_sub(REFRESH_MARGIN),
            expires_at: requested_at + lifetime,
        }
    }

    fn fresh_at(&self, now: Instant) -> bool {
        now < self.refresh_at
    }

    fn valid_at(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

struct CacheState {
    current: Option<Cached>,
    /// Generation of the last token issued; the next one gets `generation + 1`.
    generation: u64,
    /// The error of the last token request, if it failed.
    last_failure: Option<CxoneError>,
}

/// The token cache of one client id.
pub struct TokenCache {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: SecretString,
    timeout: Duration,
    /// Held across the token request: that is what makes it single-flight.
    state: tokio::sync::Mutex<CacheState>,
    /// Counts finished token requests, so a caller can tell whether one finished while
    /// it waited for the lock (and then take that outcome instead of sending another).
    requests_done: AtomicU64,
}

impl TokenCache {
    pub(crate) fn new(
        http: reqwest::Client,
        token_url: String,
        client_id: String,
        client_secret: SecretString,
        timeout: Duration,
    ) -> TokenCache {
        TokenCache {
            http,
            token_url,
            client_id,
            client_secret,
            timeout,
            state: tokio::sync::Mutex::new(CacheState {
                current: None,
                generation: 0,
                last_failure: None,
            }),
            requests_done: AtomicU64::new(0),
        }
    }

    /// A token fit for use now: the cached one, or a fresh one.
    pub(crate) async fn token(&self) -> Result<AccessToken, CxoneError> {
        let seen = self.requests_done.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(cached) = &state.current
            && cached.fresh_at(now)
        {
            return Ok(cached.token.clone());
        }
        if self.requests_done.load(Ordering::Acquire) != seen {
            // A token request finished while we queued for the lock. Its outcome is as
            // new as one we would get: share it, so a crowd of callers never turns
            // into a crowd of token requests, whether that request failed or brought
            // a token that is already inside the refresh margin (short lifetimes).
            if let Some(err) = &state.last_failure {
                return Err(err.clone());
            }
            if let Some(cached) = &state.current
                && cached.valid_at(now)
            {
                return Ok(cached.token.clone());
            }
        }
        let requested_at = Instant::now();
        let outcome = self.request().await;
        self.requests_done.fetch_add(1, Ordering::AcqRel);
        match outcome {
            Ok(answer) => {
                state.generation += 1;
                let lifetime = answer
                    .expires_in
                    .map_or(DEFAULT_LIFETIME, Duration::from_secs);
                let token = AccessToken {
                    secret: answer.access_token,
                    generation: state.generation,
                    base_url: answer.resource_server_base_uri,
                };
                tracing::debug!(
                    client_id = %self.client_id,
                    generation = token.generation,
                    lifetime_s = lifetime.as_secs(),
                    "got an access token"
                );
                state.current = Some(Cached::new(token.clone(), requested_at, lifetime));
                state.last_failure = None;
                Ok(token)
            }
            Err(err) => {
                state.last_failure = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Drops the cached token if it is still `generation`: the platform refused it.
    /// A newer token (someone else already refreshed) is kept.
    pub(crate) async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|cached| cached.token.generation == generation)
        {
            tracing::debug!(generation, "dropping the refused access token");
            state.current = None;
        }
    }

    #[tracing::instrument(name = "cxone.token", skip_all, fields(client_id = %self.client_id))]
    async fn request(&self) -> Result<TokenAnswer, CxoneError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
        ];
        let response = self
            .http
            .post(&self.token_url)
            .timeout(self.timeout)
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if matches!(status.as_u16(), 400 | 401) {
            tracing::error!(
                client_id = %self.client_id,
                status = status.as_u16(),
                "the token endpoint rejected the client credentials"
            );
            return Err(CxoneError::BadCredentials {
                client_id: self.client_id.clone(),
                status: status.as_u16(),
            });
        }
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport_error)?;
        if !status.is_success() {
            return Err(error_for_status(status, &headers, &body));
        }
        let answer = TokenAnswer::parse(&body)?;
        if let Some(base) = &answer.resource_server_base_uri {
            reqwest::Url::parse(base).map_err(|e| {
                CxoneError::Decode(format!(
                    "token answer's resource_server_base_uri `{base}` is not a URL: {e}"
                ))
            })?;
        }
        Ok(answer)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::join_all;
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    const SECRET: &str = "s3cret-value";

    fn cache(server: &MockServer) -> TokenCache {
        super::super::install_crypto_provider();
        TokenCache::new(
            reqwest::Client::new(),
            format!("{}/oauth2/token", server.uri()),
            "wfmd-client".into(),
            SecretString::from(SECRET),
            Duration::from_secs(5),
        )
    }

    fn token_answer(token: &str, expires_in: u64) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": token, "token_type": "bearer", "expires_in": expires_in
        }))
    }

    async fn token_requests(server: &MockServer) -> usize {
        server.received_requests().await.unwrap_or_default().len()
    }

    #[tokio::test]
    async fn token_request_is_client_credentials_form() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .and(body_string_contains("grant_type=client_credentials"))
            .and(body_string_contains("client_id=wfmd-client"))
            .and(body_string_contains(format!("client_secret={SECRET}")))
            .respond_with(token_answer("tok-1", 3600))
            .expect(1)
            .mount(&server)
            .await;
        let token = cache(&server).token().await.unwrap();
        assert_eq!(token.expose(), "tok-1");
        assert_eq!(token.generation(), 1);
    }

    #[tokio::test]
    async fn long_lived_token_is_fetched_once() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(token_answer("tok", 3600))
            .mount(&server)
            .await;
        let cache = cache(&server);
        for _ in 0..5 {
            assert_eq!(cache.token().await.unwrap().generation(), 1);
        }
        assert_eq!(token_requests(&server).await, 1);
    }

    #[tokio::test]
    async fn token_inside_the_refresh_margin_is_refreshed_every_call() {
        for lifetime in [60, 30] {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(token_answer("tok", lifetime))
                .mount(&server)
                .await;
            let cache = cache(&server);
            for expected in 1..=3 {
                assert_eq!(cache.token().await.unwrap().generation(), expected);
            }
            assert_eq!(token_requests(&server).await, 3, "expires_in {lifetime}");
        }
    }

    #[test]
    fn token_is_replaced_sixty_seconds_before_expiry() {
        // Expiry arithmetic only: a paused runtime cannot drive real HTTP requests
        // (it would jump to their timeouts), so the bookkeeping is tested on its own.
        let start = Instant::now();
        let token = AccessToken {
            secret: SecretString::from("t"),
            generation: 1,
            base_url: None,
        };
        let cached = Cached::new(token.clone(), start, Duration::from_secs(3600));
        assert!(cached.fresh_at(start + Duration::from_secs(3539)));
        assert!(!cached.fresh_at(start + Duration::from_secs(3540)));
        assert!(cached.valid_at(start + Duration::from_secs(3599)));
        assert!(!cached.valid_at(start + Duration::from_secs(3600)));
        let short = Cached::new(token, start, Duration::from_secs(60));
        assert!(!short.fresh_at(start));
    }

    #[tokio::test]
    async fn cold_cache_under_200_concurrent_callers_makes_one_token_request() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(token_answer("tok", 3600).set_delay(Duration::from_millis(200)))
            .mount(&server)
            .await;
        let cache = Arc::new(cache(&server));
        let callers = (0..200).map(|_| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.token().await })
        });
        for outcome in join_all(callers).await {
            assert_eq!(outcome.unwrap().unwrap().generation(), 1);
        }
        assert_eq!(token_requests(&server).await, 1);
    }

    #[tokio::test]
    async fn callers_queued_behind_a_failed_token_request_share_its_error() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(200)))
            .mount(&server)
            .await;
        let cache = Arc::new(cache(&server));
        let callers = (0..20).map(|_| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.token().await })
        });
        for outcome in join_all(callers).await {
            let err = outcome.unwrap().unwrap_err();
            assert!(
                matches!(err, CxoneError::Server { status: 503, .. }),
                "{err:?}"
            );
            assert!(err.is_retryable());
        }
        assert_eq!(token_requests(&server).await, 1);
        // A later caller, who did not queue behind the failure, tries again.
        assert!(cache.token().await.is_err());
        assert_eq!(token_requests(&server).await, 2);
    }

    #[tokio::test]
    async fn invalidating_the_current_generation_forces_a_refresh() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(token_answer("tok", 3600))
            .mount(&server)
            .await;
        let cache = cache(&server);
        let first = cache.token().await.unwrap();
        cache.invalidate(first.generation()).await;
        let second = cache.token().await.unwrap();
        assert_eq!(second.generation(), 2);
        // A late invalidation of the old generation leaves the new token alone.
        cache.invalidate(first.generation()).await;
        assert_eq!(cache.token().await.unwrap().generation(), 2);
        assert_eq!(token_requests(&server).await, 2);
    }

    #[tokio::test]
    async fn rejected_credentials_are_fatal_and_never_name_the_secret() {
        for status in [400, 401] {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(status).set_body_json(
                    serde_json::json!({"error": "invalid_client", "message": SECRET}),
                ))
                .mount(&server)
                .await;
            let err = cache(&server).token().await.unwrap_err();
            assert_eq!(
                err,
                CxoneError::BadCredentials {
                    client_id: "wfmd-client".into(),
                    status,
                }
            );
            assert!(!err.is_retryable());
            let message = err.to_string();
            assert!(message.contains("wfmd-client"), "{message}");
            assert!(!message.contains(SECRET), "{message}");
        }
    }

    #[tokio::test]
    async fn a_redirecting_token_endpoint_fails_and_its_target_never_sees_the_secret() {
        for status in [302, 307] {
            let target = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(token_answer("tok-stolen", 3600))
                .mount(&target)
                .await;
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(status).insert_header(
                    "location",
                    format!("{}/steal?key=k-123", target.uri()).replace("://", "://u:pw@"),
                ))
                .mount(&server)
                .await;
            let cache = TokenCache::new(
                crate::http_client().unwrap(),
                format!("{}/oauth2/token", server.uri()),
                "wfmd-client".into(),
                SecretString::from(SECRET),
                Duration::from_secs(5),
            );
            let err = cache.token().await.unwrap_err();
            assert_eq!(token_requests(&target).await, 0, "{status}: followed");
            assert!(
                matches!(err, CxoneError::Redirected { status: s, .. } if s == status),
                "{err:?}"
            );
            assert!(!err.is_retryable());
            let message = err.to_string();
            assert!(
                message.contains(&format!("{}/steal", target.uri()))
                    && message.contains("does not follow redirects"),
                "{message}"
            );
            for hidden in [SECRET, "pw@", "k-123"] {
                assert!(!message.contains(hidden), "{message}");
            }
        }
    }

    #[tokio::test]
    async fn unusable_base_uri_in_token_answer_is_a_decode_error() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "tok", "expires_in": 3600, "resource_server_base_uri": "not a url"
            })))
            .mount(&server)
            .await;
        let err = cache(&server).token().await.unwrap_err();
        assert!(matches!(err, CxoneError::Decode(_)), "{err:?}");
        assert!(!err.to_string().contains("tok\""), "{err}");
    }

    #[tokio::test]
    async fn debug_shows_neither_secret_nor_token() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(token_answer("tok-visible-nowhere", 3600))
            .mount(&server)
            .await;
        let cache = cache(&server);
        let token = cache.token().await.unwrap();
        for debug in [format!("{cache:?}"), format!("{token:?}")] {
            assert!(!debug.contains(SECRET), "{debug}");
            assert!(!debug.contains("tok-visible-nowhere"), "{debug}");
        }
        assert!(format!("{cache:?}").contains("wfmd-client"));
    }
}
