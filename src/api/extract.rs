//! Path and query extractors whose errors are problem+json naming the parameter.
//!
//! axum's own `Path` and `Query` answer bad input with plain text (`Invalid URL:
//! Cannot parse ...`). These wrap the same parsing and answer 400 with
//! `"parameter": NAME`, the way the JSON body extractor names the field.

use axum::extract::FromRequestParts;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::http::request::Parts;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::Problem;
use crate::domain::idle::Window;
use crate::store::retention::{self, Kind};
use crate::time::parse_instant;

/// Path parameters, e.g. `PathParams(agent_id): PathParams<String>`.
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParams(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => {
                let detail = error.body_text();
                let parameter = match error.into_kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::DeserializeError { key, .. } => key,
                    _ => "path".to_owned(),
                };
                Err(Problem::invalid_parameter(&parameter, detail))
            }
            Err(other) => Err(Problem::internal(&other.body_text())),
        }
    }
}

/// Query parameters; unknown and repeated parameters are refused, so a typo (`?form=`)
/// is an error instead of a silently ignored filter.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or("")).map(QueryParams)
    }
}

/// Parses a query string into `T`, naming the parameter on error.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        let parameter = if path == "." {
            // Unknown, repeated and missing parameters are reported at the top level,
            // with the name in backticks.
            inner
                .split('`')
                .nth(1)
                .map_or_else(|| "query".to_owned(), str::to_owned)
        } else {
            path
        };
        Problem::invalid_parameter(&parameter, format!("{parameter}: {inner}"))
    })
}

/// A `[from, to)` window; at most 366 days.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Start: a date (2026-11-20, midnight UTC) or an RFC 3339 instant; default `to`
    /// minus 24 hours.
    pub(super) from: Option<String>,
    /// End (exclusive), a date or an RFC 3339 instant, after `from` and at most 366 days
    /// later; default now.
    pub(super) to: Option<String>,
}

/// A validated `[from, to)` window from query parameters; the last 24 hours by default.
pub fn window_from_query(
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Window, Problem> {
    let parse = |name: &str, value: Option<&str>| {
        value
            .map(|v| {
                parse_instant(v)
                    .map_err(|e| Problem::invalid_parameter(name, format!("{name}: {e}")))
            })
            .transpose()
    };
    let to_at = parse("to", to)?.unwrap_or(now);
    let from_at = parse("from", from)?.unwrap_or(to_at - Duration::hours(24));
    Window::checked(from_at, to_at).map_err(|e| Problem::invalid_parameter("to", e))
}

/// The `tz` query parameter of a download: the IANA zone its times are shown in.
pub(super) fn zone_from_query(tz: Option<&str>) -> Result<Option<chrono_tz::Tz>, Problem> {
    tz.map(|name| {
        crate::report::parse_zone(name)
            .map_err(|e| Problem::invalid_parameter("tz", format!("tz: {e}")))
    })
    .transpose()
}

/// A 400 naming `from` when the window reaches back before what retention kept of
/// `kinds`: an answer would silently count less than happened.
pub(super) async fn check_kept(
    store: &crate::store::Store,
    kinds: &[Kind],
    from: chrono::DateTime<Utc>,
) -> Result<(), Problem> {
    match retention::check_window(store.reader(), kinds, from).await? {
        Ok(()) => Ok(()),
        Err(not_kept) => Err(Problem::invalid_parameter("from", not_kept.to_string())
            .with("kept_from", crate::time::rfc3339(not_kept.kept_from))),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Window {
        from: Option<String>,
        to: Option<String>,
    }

    fn parameter(problem: &Problem) -> &str {
        problem.extensions["parameter"].as_str().unwrap()
    }

    #[test]
    fn query_parameters_parse_and_errors_name_the_parameter() {
        let window: Window = parse_query("from=2026-11-20&to=2026-11-21%2B01").unwrap();
        assert_eq!(window.to.as_deref(), Some("2026-11-21+01"));
        let empty: Window = parse_query("").unwrap();
        assert_eq!(
            empty,
            Window {
                from: None,
                to: None
            }
        );

        for (query, name) in [("form=2026-11-20", "form"), ("from=a&from=b", "from")] {
            let problem = parse_query::<Window>(query).unwrap_err();
            assert_eq!(problem.status, 400);
            assert_eq!(parameter(&problem), name, "{query}: {}", problem.detail);
        }
    }
}
