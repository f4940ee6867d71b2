//! The middleware every request passes: request id, tracing span, security headers,
//! problem+json for every error, the request's time limits, the `Host` check,
//! and a last line of defence against panics.
//!
//! Order, outermost first:
//! 1. `x-request-id` is taken from the request when it is short and plain (at most
//!    [`MAX_REQUEST_ID_LEN`] of `A-Z a-z 0-9 . _ : -`), else made (a UUID): a client's id
//!    goes into every log line and onto the response, so it must not be able to forge
//!    log fields or fill the log;
//! 2. a `request` span with the id, method, route and (once known) the caller wraps
//!    every log line of the request, including the handler's and the engine's;
//! 3. the id is copied onto the response, whatever produced it;
//! 4. every response gets `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`
//!    and, unless the handler set its own (the console's pages), a `Content-Security-Policy`
//!    that lets nothing load or run and nothing frame the page ([`DEFAULT_CSP`]);
//! 5. an error answer that is not JSON (axum's own 405, a rejection of a layer) is
//!    turned into problem+json, keeping its status and headers;
//! 6. a request naming a foreign `Host` is refused ([`super::hosts`]; one coming from a
//!    foreign `Origin` is refused on the routes the dispatcher hands it to, once a
//!    tenant's prefix is resolved); one proven handed on by another instance is taken
//!    as its client's instead ([`super::forward`]);
//! 7. a request whose answer has not begun within `server.request_timeout` is answered
//!    503 (streams go on once begun); its body must have arrived within
//!    `server.body_timeout`;
//! 8. a panic becomes a logged 500 problem instead of a dropped connection.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyDeadlineLayer;
use tower_http::trace::TraceLayer;

use super::error::Problem;
use super::forward::ClusterKey;
use super::hosts::{self, AllowedHosts};
use super::json::is_json;
use crate::telemetry::names::HTTP_REQUESTS_TIMED_OUT_TOTAL;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id a client may choose (a UUID is 36 characters).
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// What every response but the console's pages is allowed: nothing to load, run or frame
/// it. Inline styles stay allowed for the HTML reports, which are single files.
pub const DEFAULT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// How much of a non-problem error body is kept as the problem's `detail`.
const DETAIL_LIMIT_BYTES: usize = 2 * 1024;

/// The per-request limits of `around`, from `[server]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The answer must have begun this long after the request's head.
    pub request_timeout: Duration,
    /// The body must have arrived this long after the request's head.
    pub body_timeout: Duration,
    /// The host names besides loopback and addresses.
    pub hosts: AllowedHosts,
    /// `ha.cluster_key`: what proves a request was handed on by another instance.
    pub cluster: Option<ClusterKey>,
    /// `server.metrics_token`: what `/metrics` asks of a scraper, when set.
    pub metrics_token: Option<super::auth::MetricsToken>,
    /// Not a limit, but from the configuration like them: `[[boards]]`, which the
    /// wallboard page is served with.
    pub boards: super::pages::Boards,
}

impl Limits {
    pub fn from_config(config: &crate::config::Config) -> Limits {
        let server = &config.server;
        Limits {
            request_timeout: server.request_timeout,
            body_timeout: server.body_timeout,
            hosts: AllowedHosts::new(&server.allowed_hosts),
            cluster: config
                .ha
                .as_ref()
                .and_then(|ha| ha.cluster_key.clone())
                .map(ClusterKey::new),
            metrics_token: server.metrics_token().map(super::auth::MetricsToken::new),
            boards: super::pages::Boards(
                crate::config::boards::page_definitions(&config.boards).into(),
            ),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from_config(&crate::config::Config::default())
    }
}

/// `router` with the layers above around each of its routes and its fallback.
pub fn around(router: Router, limits: &Limits) -> Router {
    let request_timeout = limits.request_timeout;
    router
        .layer(RequestBodyDeadlineLayer::new(limits.body_timeout))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |error| {
                    std::future::ready(timed_out(error, request_timeout))
                }))
                .timeout(request_timeout),
        )
        .layer(middleware::from_fn_with_state(
            Arc::new(hosts::Edge {
                hosts: limits.hosts.clone(),
                cluster: limits.cluster.clone(),
            }),
            hosts::check,
        ))
        .layer(
            ServiceBuilder::new()
                .map_request(plain_request_id)
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(SetResponseHeaderLayer::overriding(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::overriding(
                    header::X_FRAME_OPTIONS,
                    HeaderValue::from_static("DENY"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(DEFAULT_CSP),
                ))
                .layer(middleware::from_fn(problem_for_every_error))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
}

/// Removes a client's request id that is too long, repeated, or has anything but
/// `A-Z a-z 0-9 . _ : -` in it, so that one is made instead.
fn plain_request_id(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut ids = headers.get_all(&REQUEST_ID).iter();
    let plain = match (ids.next(), ids.next()) {
        (Some(id), None) => is_plain_id(id.as_bytes()),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !plain {
        headers.remove(&REQUEST_ID);
    }
    request
}

fn is_plain_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The answer to a request that ran past `server.request_timeout` (or, never in
/// practice, to another error of the timeout layer).
fn timed_out(error: tower::BoxError, limit: Duration) -> Response {
    if !error.is::<tower::timeout::error::Elapsed>() {
        return Problem::internal(&error).into_response();
    }
    metrics::counter!(HTTP_REQUESTS_TIMED_OUT_TOTAL).increment(1);
    tracing::warn!(
        ?limit,
        "a request ran past server.request_timeout; answered 503"
    );
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "request-timeout",
        "The request took too long",
        format!(
            "wfmd could not answer within server.request_timeout ({}); a change it had \
             begun is still carried out and recorded: look at the agent's history, or \
             repeat the request with the same idempotency key",
            humantime::format_duration(limit)
        ),
    )
    .into_response()
}

/// The request's span. Its `route` (the route's template, or the path where no route
/// matched) and `tenant` are recorded by the routes the dispatcher hands the request to,
/// in [`super::auth::authorize`].
fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // At ERROR level so the span exists whenever anything is logged: a span below the
    // configured level is dropped, and with it the request id of the lines inside.
    tracing::error_span!(
        "request",
        method = %request.method(),
        route = tracing::field::Empty,
        request_id = %id,
        tenant = tracing::field::Empty,
        caller = tracing::field::Empty,
    )
}

async fn problem_for_every_error(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    // JSON error bodies are answers by design (problem+json, or `/readyz`'s 503); the
    // text ones come from axum and tower layers.
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, DETAIL_LIMIT_BYTES)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("Error");
    let detail = if text.is_empty() {
        reason.to_owned()
    } else {
        text
    };
    let kind = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
        StatusCode::NOT_FOUND => "not-found",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let mut problem = Problem::new(status, kind, reason, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().append(name, value.clone());
        }
    }
    problem
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    Problem::internal(&format!("a handler panicked: {message}")).into_response()
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn call(router: Router, method: &str, uri: &str, id: Option<&str>) -> Response {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(id) = id {
            request = request.header(REQUEST_ID, id);
        }
        router
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn problem(response: Response) -> serde_json::Value {
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    async fn panics() -> &'static str {
        panic!("boom")
    }

    fn app() -> Router {
        around(
            Router::new()
                .route(
                    "/text",
                    get(|| async { (StatusCode::BAD_REQUEST, "plain words") }),
                )
                .route(
                    "/json",
                    get(|| async {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({"status": "unavailable"})),
                        )
                    }),
                )
                .route("/panic", get(panics))
                .route("/slow", get(never_answers))
                .route("/stream", get(streams_slowly)),
            &Limits {
                request_timeout: Duration::from_secs(30),
                ..Limits::default()
            },
        )
    }

    async fn never_answers() -> &'static str {
        std::future::pending().await
    }

    /// A head at once, then a chunk a minute.
    async fn streams_slowly() -> Body {
        let chunks = futures::stream::unfold(0, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            (n < 3).then(|| {
                (
                    Ok::<_, std::convert::Infallible>(format!("chunk {n}\n")),
                    n + 1,
                )
            })
        });
        Body::from_stream(chunks)
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_not_begun_within_the_request_timeout_is_a_503_problem() {
        let response = call(app(), "GET", "/slow", Some("req-3")).await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[REQUEST_ID], "req-3");
        let body = problem(response).await;
        assert_eq!(body["type"], "urn:wfmd:problem:request-timeout");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("server.request_timeout (30s)"),
            "{body}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_has_begun_is_not_cut_by_the_request_timeout() {
        let response = call(app(), "GET", "/stream", None).await;
        assert_eq!(response.status(), 200);
        // Three minutes of paused time pass while the body is read.
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\n");
    }

    #[tokio::test]
    async fn a_long_or_unsafe_request_id_is_replaced_and_a_plain_one_kept() {
        for kept in ["req-1", "0190c1a4-7b7e-7c3d-9f00-1a2b3c4d5e6f", "a.b_c:d"] {
            let response = call(app(), "GET", "/text", Some(kept)).await;
            assert_eq!(response.headers()[REQUEST_ID], kept);
        }
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        for replaced in [long.as_str(), "a b", "id\tforged=1", "x\"y", ""] {
            let response = call(app(), "GET", "/text", Some(replaced)).await;
            let id = response.headers()[REQUEST_ID].to_str().unwrap();
            assert_ne!(id, replaced);
            assert!(uuid::Uuid::parse_str(id).is_ok(), "a fresh id: {id}");
        }
    }

    #[tokio::test]
    async fn every_answer_says_nosniff_and_no_framing_and_keeps_a_handlers_own_policy() {
        let own = Router::new().route(
            "/page",
            get(|| async {
                (
                    [(header::CONTENT_SECURITY_POLICY, "script-src 'self'")],
                    axum::response::Html("<p>hi</p>"),
                )
            }),
        );
        let app = around(own, &Limits::default());
        let response = call(app.clone(), "GET", "/page", None).await;
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            "script-src 'self'"
        );
        let response = call(app, "GET", "/nothing-here", None).await;
        assert_eq!(response.status(), 404);
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            DEFAULT_CSP
        );
    }

    #[tokio::test]
    async fn text_errors_become_problems_keeping_status_and_headers() {
        let response = call(app(), "GET", "/text", Some("req-1")).await;
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()[REQUEST_ID], "req-1");
        let body = problem(response).await;
        assert_eq!(body["detail"], "plain words");
        assert_eq!(body["status"], 400);

        let response = call(app(), "DELETE", "/text", None).await;
        assert_eq!(response.status(), 405);
        assert!(response.headers().contains_key(header::ALLOW));
        assert!(response.headers().contains_key(REQUEST_ID), "a fresh id");
        assert_eq!(
            problem(response).await["type"],
            "urn:wfmd:problem:method-not-allowed"
        );
    }

    #[tokio::test]
    async fn json_error_answers_are_left_as_they_are() {
        let response = call(app(), "GET", "/json", None).await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_500_problem_with_the_request_id() {
        let response = call(app(), "GET", "/panic", Some("req-2")).await;
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()[REQUEST_ID], "req-2");
        assert_eq!(problem(response).await["type"], "urn:wfmd:problem:internal");
    }
}
