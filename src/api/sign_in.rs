//! Browser sign-in: a bearer token, given once, becomes a session cookie, so the
//! console's pages never keep the token in page storage.
//!
//! - `POST /v1/session` `{"token"}` checks the token as the bearer check does (its
//!   SHA-256 against every configured `token_sha256`, in constant time) and answers 204
//!   with `Set-Cookie: wfmd_session=…; HttpOnly; SameSite=Strict; Path=/; Max-Age=…`,
//!   `Secure` when the browser came over HTTPS (through a proxy of `server.proxies` that
//!   says `X-Forwarded-Proto: https`; wfmd itself speaks plain HTTP). A bad token is a
//!   401 problem. Without tokens configured it answers 204 without a cookie: every
//!   caller is the local admin, and the pages need no sign-in.
//! - `DELETE /v1/session` forgets the session and clears the cookie (204, whether or not
//!   the session was still good, so a page can always sign out).
//!
//! A session acts exactly as its token would (name, role, tenants), only while the
//! token's entry is configured unchanged ([`super::auth::Credentials`]), so a SIGHUP
//! that changes or removes the token ends it. What is kept of a session, and for how
//! long: [`super::sessions`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Routes;
use super::auth::{Credentials, invalid_credential};
use super::error::Problem;
use super::json::JsonBody;
use super::sessions::{COOKIE, digest, presented};

/// The longest token `POST /v1/session` takes: far longer than `wfmd token new`'s.
const MAX_TOKEN_LEN: usize = 1024;

pub fn routes() -> Routes {
    vec![utoipa_axum::routes!(sign_in, sign_out)]
}

/// Whether the browser reached wfmd over HTTPS: only through one of `server.proxies`
/// (wfmd speaks plain HTTP), which says so in `X-Forwarded-Proto`.
fn over_tls(credentials: &Credentials, client: Option<SocketAddr>, headers: &HeaderMap) -> bool {
    let Some(client) = client else {
        return false;
    };
    if !credentials.proxies.contains(&client.ip().to_canonical()) {
        return false;
    }
    // A proxy chain lists each hop's protocol; the first is the browser's.
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value of session `id` for `max_age`; an empty id with no age
/// clears the cookie.
fn cookie(id: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&value).expect("a hex id and fixed attributes make a valid header")
}

/// 204 with `cookie`, never stored by a cache.
fn with_cookie(cookie: Option<HeaderValue>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cookie) = cookie {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// A sign-in.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// A bearer token (as `wfmd token new` made it).
    #[schema(min_length = 1, max_length = 1024)]
    token: String,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignIn { token: .. }")
    }
}

/// Signs a browser in: the token becomes a session cookie (`wfmd_session`, HttpOnly,
/// SameSite=Strict, `Secure` behind an HTTPS proxy of `server.proxies`) that acts as the
/// token would for `server.session_ttl`. Without tokens configured: 204 without a
/// cookie (every caller is the local admin).
#[utoipa::path(
    post,
    path = "/v1/session",
    tag = "session",
    security(()),
    request_body = SignIn,
    responses(
        (status = 204, description = "Signed in; `Set-Cookie` carries the session",
         headers(("set-cookie" = String, description = "wfmd_session=…; HttpOnly; SameSite=Strict; Path=/; Max-Age=…"))),
        (status = 401, description = "The token is not one of the configured api_tokens"),
    )
)]
pub async fn sign_in(
    Extension(credentials): Extension<Arc<Credentials>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<JsonBody<SignIn>, Problem>,
) -> Result<Response, Problem> {
    let JsonBody(body) = body?;
    let tokens = credentials.tokens();
    if tokens.is_empty() {
        return Ok(with_cookie(None));
    }
    let token = body.token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Problem::invalid_field(
            "token",
            format!("token must be 1 to {MAX_TOKEN_LEN} characters"),
        ));
    }
    let Some(entry) = tokens.entry(&digest(token)).cloned() else {
        metrics::counter!(crate::telemetry::names::API_REFUSALS_TOTAL, "reason" => "invalid")
            .increment(1);
        tracing::warn!("refused a sign-in: the token is not configured");
        return Ok(invalid_credential(
            "the token is not one of the configured api_tokens",
        ));
    };
    let caller = entry.caller();
    let id = credentials.sessions.open(entry);
    tracing::info!(caller = %caller.name, "a browser signed in");
    let secure = over_tls(&credentials, client.map(|c| c.0.0), &headers);
    Ok(with_cookie(Some(cookie(
        &id,
        credentials.sessions.ttl(),
        secure,
    ))))
}

/// Signs a browser out: its session ends and the cookie is cleared. 204 whether or not
/// the session was still open.
#[utoipa::path(
    delete,
    path = "/v1/session",
    tag = "session",
    security(()),
    responses(
        (status = 204, description = "Signed out; `Set-Cookie` clears the session",
         headers(("set-cookie" = String, description = "wfmd_session=; …; Max-Age=0"))),
    )
)]
pub async fn sign_out(
    Extension(credentials): Extension<Arc<Credentials>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = presented(&headers) {
        credentials.sessions.end(id);
    }
    let secure = over_tls(&credentials, client.map(|c| c.0.0), &headers);
    with_cookie(Some(cookie("", Duration::ZERO, secure)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_only_behind_an_https_proxy() {
        let credentials = Credentials::new(
            super::super::auth::ApiTokens::from_config(&[]).unwrap(),
            Duration::from_secs(8 * 3600),
            &["127.0.0.1".parse().unwrap()],
        );
        let value = cookie("ab12", Duration::from_secs(8 * 3600), false);
        assert_eq!(
            value,
            "wfmd_session=ab12; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800"
        );
        let mut https = HeaderMap::new();
        https.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        let proxy: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let stranger: SocketAddr = "10.0.0.9:50000".parse().unwrap();
        assert!(over_tls(&credentials, Some(proxy), &https));
        assert!(
            !over_tls(&credentials, Some(stranger), &https),
            "only a configured proxy is believed"
        );
        assert!(!over_tls(&credentials, Some(proxy), &HeaderMap::new()));
        assert!(!over_tls(&credentials, None, &https));
    }
}
