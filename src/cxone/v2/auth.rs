//! The v2 dialect's tokens: OAuth client credentials, cached by the shared
//! [`TokenCache`](crate::cxone::core::token::TokenCache) (single flight, refresh 60 s before
//! expiry, invalidation by generation).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret, SecretString};

use super::wire::{TokenAnswer, error_details};
use crate::cxone::CxoneError;
use crate::cxone::core::classify::{error_for_status, transport_error};
use crate::cxone::core::token::{Fetched, TokenSource};

/// The client-credentials grant of one client id.
pub(crate) struct ClientCredentials {
    pub http: reqwest::Client,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub timeout: Duration,
}

#[async_trait]
impl TokenSource for ClientCredentials {
    #[tracing::instrument(name = "cxone.token", skip_all, fields(client_id = %self.client_id))]
    async fn fetch(&self) -> Result<Fetched, CxoneError> {
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
            return Err(error_for_status(status, &headers, &body, error_details));
        }
        let answer = TokenAnswer::parse(&body)?;
        if let Some(base) = &answer.resource_server_base_uri {
            reqwest::Url::parse(base).map_err(|e| {
                CxoneError::Decode(format!(
                    "token answer's resource_server_base_uri `{base}` is not a URL: {e}"
                ))
            })?;
        }
        Ok(Fetched {
            secret: answer.access_token,
            lifetime: answer.expires_in.map(Duration::from_secs),
            base_url: answer.resource_server_base_uri.map(Into::into),
        })
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
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
    use crate::cxone::core::token::TokenCache;

    const SECRET: &str = "s3cret-value";

    fn cache(server: &MockServer) -> TokenCache {
        crate::cxone::install_crypto_provider();
        TokenCache::new(ClientCredentials {
            http: reqwest::Client::new(),
            token_url: format!("{}/oauth2/token", server.uri()),
            client_id: "wfmd-client".into(),
            client_secret: SecretString::from(SECRET),
            timeout: Duration::from_secs(5),
        })
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
            let cache = TokenCache::new(ClientCredentials {
                http: crate::http_client().unwrap(),
                token_url: format!("{}/oauth2/token", server.uri()),
                client_id: "wfmd-client".into(),
                client_secret: SecretString::from(SECRET),
                timeout: Duration::from_secs(5),
            });
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
