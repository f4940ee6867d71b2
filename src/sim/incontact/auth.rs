//! Discovery and the password grant of the `incontact` dialect.
//!
//! `openid-configuration` names the token endpoint; the token answer's `id_token` (a JWT
//! signed with nothing worth checking) carries the tenant id; `cxone-configuration`
//! turns the tenant id into the API host. Tokens go into the simulator's one token store,
//! so revocation and early expiry work as for v2.

use std::collections::HashMap;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::ExposeSecret;
use serde_json::json;

use super::{ACCESS_KEY_ID, ACCESS_KEY_SECRET, IcError, TENANT_ID};
use crate::sim::Simulator;

/// The origin the caller used (its `Host`), else the bound one.
pub(crate) fn origin(sim: &Simulator, headers: &HeaderMap) -> String {
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => sim.bound_origin(),
    }
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn openid_configuration(
    State(sim): State<Simulator>,
    headers: HeaderMap,
) -> Response {
    let origin = origin(&sim, &headers);
    axum::Json(json!({
        "issuer": origin,
        "token_endpoint": format!("{origin}/auth/token"),
        "authorization_endpoint": format!("{origin}/auth/authorize"),
        "jwks_uri": format!("{origin}/auth/jwks"),
        "grant_types_supported": ["password", "refresh_token", "authorization_code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "response_types_supported": ["code"],
    }))
    .into_response()
}

/// `GET /.well-known/cxone-configuration?tenantId=…`.
pub(crate) async fn cxone_configuration(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.get("tenantId").map(String::as_str) != Some(TENANT_ID) {
        return IcError::newer(StatusCode::NOT_FOUND, "TenantNotFound", "unknown tenant")
            .into_response();
    }
    let origin = origin(&sim, &headers);
    let api_endpoint = match sim.cluster() {
        Some(cluster) => format!("{origin}/{cluster}"),
        None => origin.clone(),
    };
    axum::Json(json!({
        "private": false,
        "area": "na1",
        "cluster": "C9",
        "domain": "niceincontact.com",
        "acdDomain": "nice-incontact.com",
        "uhDomain": "nice-incontact.com",
        "api_endpoint": api_endpoint,
        "ui_endpoint": origin,
        "auth_endpoint": origin,
    }))
    .into_response()
}

/// `POST /auth/token`: the password grant (access key as username/password, the
/// application's client id and secret as HTTP Basic or in the form), or the refresh
/// grant with a refresh token issued here.
pub(crate) async fn token(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let failure_status = {
        let mut st = sim.lock();
        st.stats.token_requests += 1;
        StatusCode::from_u16(st.incontact.knobs.token_failure_status)
            .unwrap_or(StatusCode::UNAUTHORIZED)
    };
    let Ok(Form(form)) = form else {
        return IcError::acd(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        )
        .into_response();
    };
    let (client_id, client_secret) = basic_credentials(&headers).unwrap_or_else(|| {
        (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        )
    });
    if client_id != sim.config().client_id
        || client_secret.as_str() != sim.client_secret().expose_secret()
    {
        return IcError::acd(
            failure_status,
            "invalid_client",
            "client authentication failed",
        )
        .into_response();
    }
    match form.get("grant_type").map(String::as_str) {
        Some("password") => {
            let user = form.get("username").map(String::as_str);
            let password = form.get("password").map(String::as_str);
            if user != Some(ACCESS_KEY_ID) || password != Some(ACCESS_KEY_SECRET) {
                return IcError::acd(
                    failure_status,
                    "invalid_grant",
                    "invalid access key id or secret",
                )
                .into_response();
            }
        }
        Some("refresh_token") => {
            let known = form
                .get("refresh_token")
                .is_some_and(|t| sim.lock().incontact.refresh_tokens.contains(t));
            if !known {
                return IcError::acd(failure_status, "invalid_grant", "unknown refresh token")
                    .into_response();
            }
        }
        _ => {
            return IcError::acd(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be password or refresh_token",
            )
            .into_response();
        }
    }

    let now = sim.clock().now();
    let lifetime = sim.config().token_lifetime;
    let (access_token, refresh_token) = {
        let mut st = sim.lock();
        let validity = st.token_validity.unwrap_or(lifetime);
        let access = st.tokens.issue(now, validity);
        let refresh = uuid::Uuid::new_v4().simple().to_string();
        let kept = &mut st.incontact.refresh_tokens;
        // A few are enough: a client only ever uses its newest.
        if kept.len() >= 16 {
            kept.remove(0);
        }
        kept.push(refresh.clone());
        (access, refresh)
    };
    let claims = json!({
        "iss": origin(&sim, &headers),
        "sub": "user:11ee0000-0000-4000-8000-00000000a9e1",
        "aud": client_id,
        "iat": now.timestamp(),
        "exp": now.timestamp() + lifetime.as_secs() as i64,
        "name": "wfmd API user",
        "tenantId": TENANT_ID,
        "icBUId": 4_600_001,
        "icClusterId": "C9",
        "icAgentId": 900_001,
        "icSPId": 9,
    });
    let id_token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(b"not-a-real-signature"),
    );
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
            "refresh_token": refresh_token,
            "id_token": id_token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        })),
    )
        .into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}
