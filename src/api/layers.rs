//! The middleware every request passes: request id, tracing span, problem+json for every
//! error, and a last line of defence against panics.
//!
//! Order, outermost first:
//! 1. `x-request-id` is taken from the request or made (a UUID);
//! 2. a `request` span with the id, method, route and (once known) the caller wraps
//!    every log line of the request, including the handler's and the engine's;
//! 3. the id is copied onto the response, whatever produced it;
//! 4. an error answer that is not JSON (axum's own 405, a rejection of a layer) is
//!    turned into problem+json, keeping its status and headers;
//! 5. a panic becomes a logged 500 problem instead of a dropped connection.

use std::any::Any;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::error::Problem;
use super::json::is_json;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How much of a non-problem error body is kept as the problem's `detail`.
const DETAIL_LIMIT_BYTES: usize = 2 * 1024;

/// `router` with the layers above around each of its routes and its fallback.
pub fn around(router: Router) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(middleware::from_fn(problem_for_every_error))
            .layer(CatchPanicLayer::custom(panic_response)),
    )
}

fn request_span(request: &Request) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
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
        route = %route,
        request_id = %id,
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
                .route("/panic", get(panics)),
        )
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
