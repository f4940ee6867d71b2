//! Discovery and the access-key password grant, with a single-flight token cache.
//!
//! The first token request discovers the token endpoint (`openid-configuration`), gets a
//! token with the access key as username and password (the application's client id and
//! secret as HTTP Basic), and, unless `base_url` is configured, reads the tenant id from
//! the `id_token` and asks `cxone-configuration` for the API host. The API base is kept
//! for the life of the client; tokens are renewed by repeating the grant 60 s before they
//! expire. As in the v2 token cache, at most one token request is in flight however many
//! callers wait, and a refused token (401) is dropped by its generation only, so a crowd
//! refused with one revoked token causes one renewal.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::IncontactSettings;
use super::wire::{self, CxoneConfiguration, ErrorBody, OpenIdConfiguration, TokenAnswer};
use crate::cxone::CxoneError;
use crate::cxone::core::classify::transport_error;

/// How long before its expiry a token is replaced.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Assumed lifetime when the answer has no usable `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// A bearer token and the API base it is for.
#[derive(Clone)]
pub(crate) struct Token {
    secret: SecretString,
    generation: u64,
    api_base: std::sync::Arc<str>,
}

impl Token {
    /// The value after `Bearer `; call only where the header is built.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// `{api_endpoint}/inContactAPI/services/v{NN}.0`, without a trailing slash.
    pub fn api_base(&self) -> &str {
        &self.api_base
    }
}

struct Cached {
    token: Token,
    refresh_at: Instant,
    expires_at: Instant,
}

struct State {
    current: Option<Cached>,
    generation: u64,
    last_failure: Option<CxoneError>,
    token_endpoint: Option<String>,
    api_base: Option<std::sync::Arc<str>>,
}

/// The session of one access key.
pub(crate) struct Session {
    http: reqwest::Client,
    settings: IncontactSettings,
    state: tokio::sync::Mutex<State>,
    requests_done: AtomicU64,
}

impl Session {
    pub fn new(http: reqwest::Client, settings: IncontactSettings) -> Session {
        let api_base = settings
            .base_url
            .as_deref()
            .filter(|b| !b.trim().is_empty())
            .map(|b| api_base(b, &settings.api_version).into());
        Session {
            http,
            settings,
            state: tokio::sync::Mutex::new(State {
                current: None,
                generation: 0,
                last_failure: None,
                token_endpoint: None,
                api_base,
            }),
            requests_done: AtomicU64::new(0),
        }
    }

    /// A token fit for use now: the cached one, or a fresh one (one request for all
    /// callers waiting at the same time).
    pub async fn token(&self) -> Result<Token, CxoneError> {
        let seen = self.requests_done.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(cached) = &state.current
            && now < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        if self.requests_done.load(Ordering::Acquire) != seen {
            // A request finished while we queued: share its outcome.
            if let Some(err) = &state.last_failure {
                return Err(err.clone());
            }
            if let Some(cached) = &state.current
                && now < cached.expires_at
            {
                return Ok(cached.token.clone());
            }
        }
        let requested_at = Instant::now();
        let outcome = self.renew(&mut state).await;
        self.requests_done.fetch_add(1, Ordering::AcqRel);
        match outcome {
            Ok((token, lifetime)) => {
                state.current = Some(Cached {
                    token: token.clone(),
                    refresh_at: requested_at + lifetime.saturating_sub(REFRESH_MARGIN),
                    expires_at: requested_at + lifetime,
                });
                state.last_failure = None;
                Ok(token)
            }
            Err(err) => {
                state.last_failure = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Brings the cached token's renewal time to now, as if its lifetime had run down to
    /// the refresh margin; it stays valid until its expiry (tests).
    #[cfg(test)]
    pub async fn due_for_renewal(&self) {
        if let Some(cached) = &mut self.state.lock().await.current {
            cached.refresh_at = Instant::now();
        }
    }

    /// Drops the cached token if it is still `generation` (the platform refused it).
    pub async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|c| c.token.generation == generation)
        {
            state.current = None;
        }
    }

    #[tracing::instrument(name = "cxone.token", skip_all, fields(access_key_id = %self.settings.access_key_id))]
    async fn renew(&self, state: &mut State) -> Result<(Token, Duration), CxoneError> {
        let endpoint = match &state.token_endpoint {
            Some(e) => e.clone(),
            None => {
                let e = self.discover_token_endpoint().await?;
                state.token_endpoint = Some(e.clone());
                e
            }
        };
        let answer = self.password_grant(&endpoint).await?;
        let api_base = match &state.api_base {
            Some(base) => base.clone(),
            None => {
                let tenant = self
                    .settings
                    .tenant_id
                    .clone()
                    .filter(|t| !t.trim().is_empty())
                    .or_else(|| answer.id_token.as_deref().and_then(wire::id_token_tenant))
                    .ok_or_else(|| {
                        CxoneError::Decode(
                            "the token answer's id_token names no tenantId; set cxone.tenant_id \
                             or cxone.base_url"
                                .into(),
                        )
                    })?;
                let endpoint = self.discover_api_endpoint(&tenant).await?;
                let base: std::sync::Arc<str> =
                    api_base(&endpoint, &self.settings.api_version).into();
                tracing::info!(api_base = %base, tenant_id = %tenant, "discovered the API host");
                state.api_base = Some(base.clone());
                base
            }
        };
        state.generation += 1;
        let lifetime = wire::number(&answer.expires_in)
            .filter(|s| *s > 0.0)
            .map_or(DEFAULT_LIFETIME, Duration::from_secs_f64);
        Ok((
            Token {
                secret: SecretString::from(answer.access_token),
                generation: state.generation,
                api_base,
            },
            lifetime,
        ))
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<(StatusCode, Vec<u8>), CxoneError> {
        let response = self
            .http
            .get(url)
            .timeout(self.settings.request_timeout)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if let Some(redirected) = CxoneError::redirected(status, response.headers()) {
            return Err(redirected);
        }
        let body = response.bytes().await.map_err(transport_error)?;
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(CxoneError::Server {
                status: status.as_u16(),
                message: format!("{what} failed"),
                retry_after: None,
            });
        }
        Ok((status, body.to_vec()))
    }

    async fn discover_token_endpoint(&self) -> Result<String, CxoneError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.auth_base.trim_end_matches('/')
        );
        let (status, body) = self.get_json(&url, "discovery").await?;
        if !status.is_success() {
            return Err(CxoneError::Decode(format!(
                "discovery at {url} answered {status}; check cxone.auth_base"
            )));
        }
        let config: OpenIdConfiguration = wire::parse("openid-configuration", &body)?;
        config
            .token_endpoint
            .filter(|e| reqwest::Url::parse(e).is_ok())
            .ok_or_else(|| CxoneError::Decode(format!("{url} names no usable token_endpoint")))
    }

    async fn discover_api_endpoint(&self, tenant: &str) -> Result<String, CxoneError> {
        let mut url = reqwest::Url::parse(&format!(
            "{}/.well-known/cxone-configuration",
            self.settings.auth_base.trim_end_matches('/')
        ))
        .map_err(|e| CxoneError::Decode(format!("cxone.auth_base is not a URL: {e}")))?;
        url.query_pairs_mut().append_pair("tenantId", tenant);
        let (status, body) = self.get_json(url.as_str(), "tenant discovery").await?;
        if status == StatusCode::NOT_FOUND {
            return Err(CxoneError::NotFound {
                message: format!("the platform knows no tenant `{tenant}` (cxone-configuration)"),
            });
        }
        if !status.is_success() {
            return Err(CxoneError::Decode(format!(
                "tenant discovery answered {status}"
            )));
        }
        let config: CxoneConfiguration = wire::parse("cxone-configuration", &body)?;
        config
            .api_endpoint
            .filter(|e| reqwest::Url::parse(e).is_ok())
            .ok_or_else(|| {
                CxoneError::Decode("cxone-configuration names no usable api_endpoint".into())
            })
    }

    async fn password_grant(&self, endpoint: &str) -> Result<TokenAnswer, CxoneError> {
        let s = &self.settings;
        let form = [
            ("grant_type", "password"),
            ("username", s.access_key_id.as_str()),
            ("password", s.access_key_secret.expose_secret()),
        ];
        let response = self
            .http
            .post(endpoint)
            .timeout(s.request_timeout)
            .header(ACCEPT, "application/json")
            .basic_auth(&s.client_id, Some(s.client_secret.expose_secret()))
            .form(&form)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport_error)?;
        if matches!(status.as_u16(), 400 | 401) {
            let error = ErrorBody::from_body(&body);
            // `invalid_client` is the application's id and secret; anything else (in
            // practice `invalid_grant`) the access key.
            let client = error.error.as_deref() == Some("invalid_client");
            let who = if client {
                s.client_id.clone()
            } else {
                format!("access key {}", s.access_key_id)
            };
            tracing::error!(
                status = status.as_u16(),
                error = error.error.as_deref().unwrap_or(""),
                credentials = %who,
                "the token endpoint rejected the credentials"
            );
            return Err(CxoneError::BadCredentials {
                client_id: who,
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(super::error_for_status(status, &headers, &body));
        }
        wire::parse("token", &body)
    }
}

/// `{endpoint}/inContactAPI/services/v{version}`; `version` may be given as `34.0`,
/// `v34.0` or `34`.
pub(crate) fn api_base(endpoint: &str, version: &str) -> String {
    let version = version.trim().trim_start_matches(['v', 'V']);
    let version = if version.contains('.') {
        version.to_owned()
    } else {
        format!("{version}.0")
    };
    format!(
        "{}/inContactAPI/services/v{version}",
        endpoint.trim_end_matches('/')
    )
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("auth_base", &self.settings.auth_base)
            .field("access_key_id", &self.settings.access_key_id)
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}
