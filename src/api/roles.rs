//! The role names of the HTTP API, as handlers write them in `security(...)` and the
//! access table reads them back from the document.

use axum::http::Method;
use utoipa::openapi::PathItem;
use utoipa::openapi::path::Operation;

/// Name of the security scheme in the document; handlers write
/// `security(("bearer" = [VIEWER]))`.
pub const BEARER: &str = "bearer";
/// The role names, as handlers write them in `security(...)`: each is the least role
/// the operation needs.
pub const VIEWER: &str = "viewer";
pub const SUPERVISOR: &str = "supervisor";
pub const ADMIN: &str = "admin";

/// The operations of a path item, with their methods.
pub fn operations(item: &PathItem) -> impl Iterator<Item = (Method, &Operation)> {
    [
        (Method::GET, &item.get),
        (Method::PUT, &item.put),
        (Method::POST, &item.post),
        (Method::DELETE, &item.delete),
        (Method::OPTIONS, &item.options),
        (Method::HEAD, &item.head),
        (Method::PATCH, &item.patch),
        (Method::TRACE, &item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation.as_ref()?)))
}

/// [`operations`], to change.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
}

/// A security requirement as scheme name → scopes (its map is private; its JSON is not).
pub fn requirement(
    requirement: &utoipa::openapi::security::SecurityRequirement,
) -> std::collections::BTreeMap<String, Vec<String>> {
    serde_json::to_value(requirement)
        .ok()
        .and_then(|value| serde_json::from_value(value).ok())
        .unwrap_or_default()
}
