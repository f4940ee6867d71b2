//! The running daemon's HTTP API as the CLI's commands ask it: where it is (`--server`,
//! else `server.listen`), the token (`--token` or `WFMD_TOKEN`), the tenant's routes, and
//! how its answers become results and exit codes.

use std::time::Duration;

use clap::Args;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::Failure;
use crate::config::Config;
use crate::config::tenants::TenantId;

/// Timeout of one request to the daemon.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a command finds the running daemon's API for its tenant.
#[derive(Debug, Clone)]
pub struct DaemonApi {
    /// The tenant named with `--tenant`; `None` uses the unprefixed routes, which a
    /// daemon serving one tenant answers for it.
    pub tenant: Option<TenantId>,
}

impl DaemonApi {
    /// The path of API route `route` (`/bulk-transitions`, after `/v1`) for the tenant.
    pub fn path(&self, route: &str) -> String {
        match &self.tenant {
            Some(id) => format!("/v1/tenants/{id}{route}"),
            None => format!("/v1{route}"),
        }
    }
}

/// How to reach the running daemon: for every command that asks it.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// URL of the running daemon. Default: http:// and the configuration's
    /// server.listen (loopback when it listens on every address).
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// API token, sent as `Authorization: Bearer`. Prefer the WFMD_TOKEN environment
    /// variable, which keeps it out of the shell history.
    #[arg(long, global = true, env = "WFMD_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub token: Option<SecretString>,
}

pub(super) fn parse_secret(text: &str) -> Result<SecretString, String> {
    if text.is_empty() {
        Err("the token is empty".to_owned())
    } else {
        Ok(SecretString::from(text))
    }
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Failure> {
    serde_json::from_value(value).map_err(|e| {
        Failure::action(anyhow::anyhow!(
            "unexpected answer from the daemon (is --server a wfmd?): {e}"
        ))
    })
}

/// The running daemon's API for the tenant, as the CLI's commands ask it.
pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    api: DaemonApi,
    token: Option<SecretString>,
}

/// The running daemon's URL: `--server`, else http:// and `server.listen` (loopback when
/// it listens on every address).
pub(super) fn daemon_url(config: &Config, server: Option<&str>) -> Result<String, Failure> {
    Ok(match server {
        Some(url) => {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| Failure::usage(format!("--server `{url}` is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Failure::usage(format!(
                    "--server must be an http(s) URL, got `{url}`"
                )));
            }
            url.trim_end_matches('/').to_owned()
        }
        None => {
            let mut listen = config.server.listen;
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{listen}")
        }
    })
}

impl Client {
    pub(super) fn new(
        config: &Config,
        api: &DaemonApi,
        args: &DaemonArgs,
    ) -> Result<Client, Failure> {
        Client::at(config, api, args.server.as_deref(), args.token.clone())
    }

    /// The daemon at `server` (see [`daemon_url`]), for a command whose `--server` and
    /// `--token` say more than [`DaemonArgs`] does.
    pub(super) fn at(
        config: &Config,
        api: &DaemonApi,
        server: Option<&str>,
        token: Option<SecretString>,
    ) -> Result<Client, Failure> {
        Ok(Client {
            http: crate::http_client().map_err(Failure::action)?,
            base: daemon_url(config, server)?,
            api: api.clone(),
            token,
        })
    }

    /// The daemon's URL, for messages.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `route` (the path after `/v1`), tenant prefix included.
    pub(super) fn url(&self, route: &str) -> String {
        format!("{}{}", self.base, self.api.path(route))
    }

    /// A request to `route` (the path after `/v1`) carrying the token, without a
    /// timeout: for what [`Client::call`] does not send (a CSV body, an answer that is a
    /// file of any size).
    pub(super) fn request(&self, method: Method, route: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(route));
        match &self.token {
            Some(token) => request.bearer_auth(token.expose_secret()),
            None => request,
        }
    }

    /// Sends one request to `route` (the path after `/v1`); a problem answer becomes a
    /// failure showing its detail (exit 2 when the daemon refused the request as
    /// invalid, else 1).
    pub(super) async fn call(
        &self,
        method: Method,
        route: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut request = self.request(method, route).timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            Failure::action(anyhow::anyhow!(
                "cannot reach wfmd at {} ({}); is `wfmd serve` running there? (--server)",
                self.base,
                e.without_url()
            ))
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let detail = value["detail"]
            .as_str()
            .map_or_else(|| format!("{status}"), str::to_owned);
        let field = value["field"]
            .as_str()
            .map(|f| format!(" (field {f})"))
            .unwrap_or_default();
        let message = format!("the daemon refused: {detail}{field}");
        let invalid = status.is_client_error()
            && !matches!(status, StatusCode::NOT_FOUND | StatusCode::CONFLICT);
        Err(if invalid {
            Failure::usage(message)
        } else {
            Failure::action(anyhow::anyhow!(message))
        })
    }
}
