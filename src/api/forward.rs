//! A follower hands the tenant's changes to its leader (`[ha]`): a request that changes
//! something (anything but GET, HEAD and OPTIONS; a live-feed ticket, which is this
//! instance's own, excepted) reaching an instance that does not lead the tenant is sent
//! on, as it came and after its caller was let in, to the leader's `advertise_url`, and
//! the leader's answer is given back as it came. The caller sees the same answer from
//! any instance, at the cost of one hop on the local network, and no queue of the
//! database's stands between them.
//!
//! A request is handed on once: one that arrives handed on (the header
//! [`FORWARDED_BY`]) at an instance that does not lead either (the leader changed in
//! between) is answered 503 with `Retry-After`, as is one for a tenant nobody leads
//! right now, or whose leader gave no `advertise_url`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::Problem;
use crate::domain::tenant::TenantId;
use crate::store::Role;

/// Names the instance that handed a request on.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-wfmd-forwarded-by");

/// The most a handed-on request may carry: the largest body any route takes (a
/// schedules import).
const BODY_LIMIT: usize = super::schedules::IMPORT_LIMIT_BYTES;

/// How long the leader may take to answer: a change waits for its turn at the
/// platform's request budget, as it would on the leader itself.
const TIMEOUT: Duration = Duration::from_secs(120);

/// What a tenant's routes need to hand requests to its leader.
#[derive(Clone)]
pub struct Forwarding {
    pub tenant: TenantId,
    /// This instance's `ha.instance_id`.
    pub instance: Arc<str>,
    pub http: reqwest::Client,
}

/// The middleware (see the module's doc).
pub async fn to_leader(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(forwarding) = &state.forwarding else {
        return next.run(request).await;
    };
    let own = request.method().is_safe() || request.uri().path() == "/v1/live/tickets";
    if own || state.store.role() != Role::Follower {
        return next.run(request).await;
    }
    if let Some(from) = request.headers().get(FORWARDED_BY) {
        let from = from.to_str().unwrap_or("another instance").to_owned();
        return unavailable(format!(
            "{from} handed this on to this instance, which does not lead the tenant either \
             (its leader changed in between)"
        ));
    }
    let leader = match crate::cluster::lease::leader(&state.store).await {
        Ok(Some(leader)) => leader,
        Ok(None) => return unavailable("no instance leads the tenant right now".into()),
        Err(error) => {
            tracing::warn!(%error, "cannot read which instance leads the tenant");
            return unavailable("cannot tell which instance leads the tenant".into());
        }
    };
    let Some(url) = leader.advertise_url else {
        return unavailable(format!(
            "the tenant's leader {} gave no ha.advertise_url to reach it by",
            leader.holder
        ));
    };
    match hand_on(forwarding, &url, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(leader = %leader.holder, %error, "cannot hand a request to the tenant's leader");
            unavailable(format!(
                "the tenant's leader {} did not answer: {error}",
                leader.holder
            ))
        }
    }
}

/// Sends `request` to the leader at `base` and gives back its answer.
async fn hand_on(
    forwarding: &Forwarding,
    base: &str,
    request: Request,
) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    // The tenant's own path, which every instance serves whatever else it serves.
    let path = path_and_query.strip_prefix("/v1").unwrap_or(path_and_query);
    let url = format!(
        "{}/v1/tenants/{}{path}",
        base.trim_end_matches('/'),
        forwarding.tenant
    );
    let body = axum::body::to_bytes(body, BODY_LIMIT).await?;
    let mut headers = end_to_end(&parts.headers);
    headers.insert(FORWARDED_BY, forwarding.instance.parse()?);
    let answer = forwarding
        .http
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .timeout(TIMEOUT)
        .send()
        .await?;
    let status = answer.status();
    let headers = end_to_end(answer.headers());
    let body = answer.bytes().await?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The headers that travel on with a message: all but the connection's own, and the
/// length and host, which the next hop sets for itself.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in [
        header::CONNECTION,
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
    ] {
        kept.remove(name);
    }
    kept
}

fn unavailable(detail: String) -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-leader",
        "The tenant's leader cannot be reached",
        detail,
    )
    .retry_after(1)
    .into_response()
}
