//! A follower hands the tenant's changes to its leader (`[ha]`): a request that changes
//! something (anything but GET, HEAD and OPTIONS; a live-feed ticket, which is this
//! instance's own, excepted) reaching an instance that does not lead the tenant is sent
//! on, as it came and after its caller was let in, to the leader's `advertise_url`, and
//! the leader's answer is given back as it came. The caller sees the same answer from
//! any instance, at the cost of one hop on the local network, and no queue of the
//! database's stands between them.
//!
//! The body is handed on as it arrives, held to its route's own limit (see
//! [`super::BodyLimits`]): one announced larger is answered 413 at once, one that grows
//! larger is cut off there and answered 413, so a follower never holds more than a
//! chunk of it.
//!
//! A request is handed on once: one that arrives handed on (the header
//! [`FORWARDED_BY`]) at an instance that does not lead either (the leader changed in
//! between) is answered 503 with `Retry-After`, as is one for a tenant nobody leads
//! right now, or whose leader gave no `advertise_url`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};

use super::ApiState;
use super::error::Problem;
use crate::domain::tenant::TenantId;
use crate::store::Role;

/// Names the instance that handed a request on.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-wfmd-forwarded-by");

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
    // The route's own limit, before anything is read or the leader looked up: what
    // arrives past it is never held, let alone handed on.
    let limit = body_limit(&request);
    if content_length(&request).is_some_and(|length| length > limit as u64) {
        return too_large(limit);
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
    let read = Arc::new(BodyRead::default());
    let capped = |body| Capped {
        body: Mutex::new(body),
        left: limit,
        read: read.clone(),
    };
    match hand_on(forwarding, &url, request, capped).await {
        Ok(response) => response,
        Err(_) if read.over.load(Ordering::Acquire) => too_large(limit),
        Err(error) => {
            if let Some(why) = read.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                // The client's body broke off, not the leader.
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable-body",
                    "The request body could not be read",
                    why,
                )
                .into_response();
            }
            tracing::warn!(leader = %leader.holder, %error, "cannot hand a request to the tenant's leader");
            unavailable(format!(
                "the tenant's leader {} did not answer: {error}",
                leader.holder
            ))
        }
    }
}

/// The most the request's route takes (see [`super::BodyLimits`]).
fn body_limit(request: &Request) -> usize {
    let limits = request.extensions().get::<Arc<super::BodyLimits>>();
    let route = request.extensions().get::<MatchedPath>();
    match (limits, route) {
        (Some(limits), Some(route)) => limits.of(request.method(), route.as_str()),
        _ => super::BODY_LIMIT_BYTES,
    }
}

/// The length the request's head announces, if it announces one.
fn content_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The 413 of a body over its route's limit, as the route gives it, answered before
/// anything is handed on.
fn too_large(limit: usize) -> Response {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "The request body is too large",
        format!("this route takes a body of at most {limit} bytes"),
    )
    .with("limit_bytes", limit)
    .into_response()
}

/// How the reading of a handed-on body ended, when it ended early.
#[derive(Default)]
struct BodyRead {
    /// It went past the route's limit.
    over: AtomicBool,
    /// The client's body failed (cut off, too slow): why.
    failed: Mutex<Option<String>>,
}

/// A request body handed on as it arrives, never more than the route's limit of it: a
/// follower holds no more of a body in memory than the chunk in hand.
struct Capped {
    /// In a `Mutex` only to be `Sync`, as the HTTP client wants; only ever reached
    /// through `&mut self`, so never locked.
    body: Mutex<Body>,
    left: usize,
    read: Arc<BodyRead>,
}

impl HttpBody for Capped {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        let body = this.body.get_mut().unwrap_or_else(|p| p.into_inner());
        match ready!(Pin::new(body).poll_frame(cx)) {
            Some(Ok(frame)) => {
                let size = frame.data_ref().map_or(0, Bytes::len);
                if size > this.left {
                    this.read.over.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err("the body is over its route's limit".into())));
                }
                this.left -= size;
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                *this.read.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(error.to_string());
                Poll::Ready(Some(Err(error.into())))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .size_hint()
    }
}

/// Sends `request` to the leader at `base`, its body through `capped`, and gives back
/// its answer.
async fn hand_on(
    forwarding: &Forwarding,
    base: &str,
    request: Request,
    capped: impl FnOnce(Body) -> Capped,
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
    let body = reqwest::Body::wrap(capped(body));
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
