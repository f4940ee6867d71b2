//! Discovery and the access-key password grant, with a single-flight token cache.
//!
//! The first token request discovers the token endpoint (`openid-configuration`), gets a
//! token with the access key as username and password (the application's client id and
//! secret as HTTP Basic), and, unless `base_url` is configured, reads the tenant id from
//! the `id_token` and asks `cxone-configuration` for the API host. The API base is kept
//! for the life of the client; tokens are renewed by repeating the grant 60 s before they
//! expire. The shared [`TokenCache`](crate::cxone::core::token::TokenCache) keeps the
//! token: at most one token request is in flight however many callers wait, and a
//! refused token (401) is dropped by its generation only, so a crowd refused with one
//! revoked token causes one renewal.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret, SecretString};

use super::wire::{self, CxoneConfiguration, ErrorBody, OpenIdConfiguration, TokenAnswer};
use super::{IncontactSettings, error_details};
use crate::cxone::CxoneError;
use crate::cxone::core::classify::{error_for_status, transport_error};
use crate::cxone::core::token::{Fetched, TokenSource};

/// What discovery found, kept for the life of the client.
#[derive(Default)]
struct Discovered {
    token_endpoint: Option<String>,
    api_base: Option<Arc<str>>,
}

/// The access key's grant, behind discovery.
pub(crate) struct AccessKey {
    http: reqwest::Client,
    settings: IncontactSettings,
    /// Never held across a request: the token cache sends one token request at a time.
    discovered: Mutex<Discovered>,
}

impl AccessKey {
    pub fn new(http: reqwest::Client, settings: IncontactSettings) -> AccessKey {
        let api_base = settings
            .base_url
            .as_deref()
            .filter(|b| !b.trim().is_empty())
            .map(|b| api_base(b, &settings.api_version).into());
        AccessKey {
            http,
            settings,
            discovered: Mutex::new(Discovered {
                token_endpoint: None,
                api_base,
            }),
        }
    }

    fn discovered(&self) -> std::sync::MutexGuard<'_, Discovered> {
        // Two optional strings stay consistent under a panic, so poison is moot.
        self.discovered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl TokenSource for AccessKey {
    #[tracing::instrument(name = "cxone.token", skip_all, fields(access_key_id = %self.settings.access_key_id))]
    async fn fetch(&self) -> Result<Fetched, CxoneError> {
        let known = self.discovered().token_endpoint.clone();
        let endpoint = match known {
            Some(e) => e,
            None => {
                let e = self.discover_token_endpoint().await?;
                self.discovered().token_endpoint = Some(e.clone());
                e
            }
        };
        let answer = self.password_grant(&endpoint).await?;
        let known = self.discovered().api_base.clone();
        let api_base = match known {
            Some(base) => base,
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
                let base: Arc<str> = api_base(&endpoint, &self.settings.api_version).into();
                tracing::info!(api_base = %base, tenant_id = %tenant, "discovered the API host");
                self.discovered().api_base = Some(base.clone());
                base
            }
        };
        let lifetime = wire::number(&answer.expires_in)
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64);
        Ok(Fetched {
            secret: SecretString::from(answer.access_token),
            lifetime,
            base_url: Some(api_base),
        })
    }
}

impl AccessKey {
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
            return Err(error_for_status(status, &headers, &body, error_details));
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

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("auth_base", &self.settings.auth_base)
            .field("access_key_id", &self.settings.access_key_id)
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}
