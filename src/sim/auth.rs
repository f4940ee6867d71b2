//! The OAuth2 client-credentials token endpoint and the server-side token store.
//!
//! Tokens are opaque random strings remembered with the instant they stop working, so the
//! simulator can revoke them all at once or make them expire earlier than the
//! `expires_in` it advertised: the two ways a real platform surprises a token cache.

use std::collections::HashMap;
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeDelta, Utc};
use secrecy::ExposeSecret;
use serde_json::json;

use super::Simulator;
use super::wire::ApiError;

/// Issued tokens and the instant each stops being accepted.
#[derive(Default)]
pub(crate) struct TokenStore {
    valid_until: HashMap<String, DateTime<Utc>>,
}

impl TokenStore {
    pub fn issue(&mut self, now: DateTime<Utc>, validity: Duration) -> String {
        // Forget dead tokens here so a long benchmark does not grow the map forever.
        self.valid_until.retain(|_, until| *until > now);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let validity = TimeDelta::from_std(validity).unwrap_or(TimeDelta::MAX);
        let until = now
            .checked_add_signed(validity)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.valid_until.insert(token.clone(), until);
        token
    }

    pub fn is_valid(&self, token: &str, now: DateTime<Utc>) -> bool {
        self.valid_until
            .get(token)
            .is_some_and(|until| now < *until)
    }

    /// Makes every token issued so far invalid.
    pub fn revoke_all(&mut self) {
        self.valid_until.clear();
    }
}

/// `POST /oauth2/token` (client-credentials grant; form fields or HTTP Basic).
pub(crate) async fn token(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    sim.lock().stats.token_requests += 1;
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        );
    };
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            );
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
    }

    let (client_id, client_secret) = match basic_credentials(&headers) {
        Some(pair) => pair,
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if client_id != sim.config().client_id
        || client_secret.as_str() != sim.client_secret().expose_secret()
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }

    let now = sim.clock().now();
    let lifetime = sim.config().token_lifetime;
    let access_token = {
        let mut st = sim.lock();
        let validity = st.token_validity.unwrap_or(lifetime);
        st.tokens.issue(now, validity)
    };
    let mut body = json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": lifetime.as_secs(),
    });
    if let Some(cluster) = sim.cluster() {
        let origin = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => format!("http://{host}"),
            None => sim.bound_origin(),
        };
        body["resource_server_base_uri"] = json!(format!("{origin}/{cluster}/"));
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// The id/secret pair of an `Authorization: Basic …` header, if one was sent.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn oauth_error(status: StatusCode, error: &'static str, message: &str) -> Response {
    ApiError::new(status, error, message).into_response()
}
