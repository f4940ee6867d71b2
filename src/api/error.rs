//! Errors at the HTTP edge, answered as `application/problem+json` (RFC 9457).
//!
//! Every problem carries a stable `type`, a human `title` and `detail`, and where it
//! applies the offending `field` or the `violation`, so clients can branch on data
//! rather than parse sentences. Internal errors are logged with their cause and answered
//! without it.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::{
    Content, ContentBuilder, Ref, RefOr, Response as ApiResponse, ResponseBuilder,
};

use crate::domain::Violation;

/// A problem+json answer.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    /// Short kebab-case name of the problem kind, e.g. `invalid-field`.
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A request body that could not be read (too large, cut off, …): the status and
    /// the words axum's rejection gives.
    pub fn unreadable_body(rejection: &axum::extract::rejection::BytesRejection) -> Problem {
        Problem::new(
            rejection.status(),
            "unreadable-body",
            "The request body could not be read",
            rejection.body_text(),
        )
    }

    /// A body over its route's limit of `limit` bytes: the 413 says the limit.
    pub fn body_too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "The request body is too large",
            format!("this route takes a body of at most {limit} bytes"),
        )
        .with("limit_bytes", limit)
    }

    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extensions.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// A request field that is missing, malformed or out of range (422).
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "A request field is invalid",
            detail,
        )
        .with("field", field)
    }

    /// A query parameter that is malformed or out of range (400).
    pub fn invalid_parameter(parameter: &str, detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "A query parameter is invalid",
            detail,
        )
        .with("parameter", parameter)
    }

    /// The body is not JSON at all (400).
    pub fn malformed_body(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-body",
            "The request body is not valid JSON",
            detail,
        )
    }

    pub fn violation(violation: Violation) -> Self {
        Problem::new(
            StatusCode::CONFLICT,
            "compliance-violation",
            "The change breaks shift or break compliance",
            violation.describe(),
        )
        .with("violation", violation)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// The problem as the answer to a caller who is to try again later: with
    /// `Retry-After: seconds`.
    pub fn retry_after(self, seconds: u64) -> Response {
        let mut response = self.into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        response
    }

    /// Something failed on our side; the cause is logged, not shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "wfmd failed to handle the request; the cause is in its log",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            Value::String(format!("urn:wfmd:problem:{}", self.kind)),
        );
        body.insert("title".into(), Value::String(self.title.into()));
        body.insert("status".into(), Value::from(self.status.as_u16()));
        body.insert("detail".into(), Value::String(self.detail));
        body.extend(self.extensions);
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        Problem::internal(&error)
    }
}

/// Content type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem+json body (RFC 9457), as every error answer has it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the JSON that `error::Problem` writes; never built.
pub struct ProblemDetails {
    /// `urn:wfmd:problem:KIND`, stable; branch on this.
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    /// What went wrong, for people.
    detail: String,
    /// The body field at fault (422).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// The path or query parameter at fault (400).
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<String>,
    /// The compliance violation (409 of a refused change).
    #[serde(skip_serializing_if = "Option::is_none")]
    violation: Option<crate::domain::Violation>,
    /// The role the route needs (403).
    #[serde(skip_serializing_if = "Option::is_none")]
    required_role: Option<String>,
}

/// The documented answers `(status, meaning)`, each with a [`ProblemDetails`] body: what
/// the `IntoResponses` of error answers several routes share returns.
pub(super) fn problem_answers(answers: &[(u16, &str)]) -> BTreeMap<String, RefOr<ApiResponse>> {
    answers
        .iter()
        .map(|(status, description)| (status.to_string(), RefOr::T(problem_response(description))))
        .collect()
}

/// A documented answer meaning `description`, with a [`ProblemDetails`] body.
pub(super) fn problem_response(description: &str) -> ApiResponse {
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, problem_body())
        .build()
}

/// The documented body of every error answer: a [`ProblemDetails`] (as [`PROBLEM_JSON`]).
pub(super) fn problem_body() -> Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ProblemDetails")))
        .build()
}

/// The 404 of a path nothing answers: no route has it, or it names a tenant that is
/// not configured or that the caller does not hold. One answer for all three, so a
/// token learns nothing of tenants it may not see.
pub(super) fn no_such_route() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-such-route",
        "No such route",
        "no route has this path; /openapi.json lists them, GET /v1/tenants the tenants",
    )
}

/// `no_such_route`, for a tenant that is not configured or not held.
pub fn no_such_tenant() -> Response {
    no_such_route().into_response()
}
