//! Path and query extractors whose errors are problem+json naming the parameter.
//!
//! axum's own `Path` and `Query` answer bad input with plain text (`Invalid URL:
//! Cannot parse ...`). These wrap the same parsing and answer 400 with
//! `"parameter": NAME`, the way the JSON body extractor names the field.

use axum::extract::FromRequestParts;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::Problem;

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
