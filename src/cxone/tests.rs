//! What both dialects share, tested once for both.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};

use super::CxoneError;
use super::core::classify::{ReadDetails, error_for_status};

/// Each dialect's reading of error answers, as its client plugs it into the core.
const DIALECTS: [(&str, ReadDetails); 2] = [
    ("v2", super::v2::wire::error_details),
    ("incontact", super::incontact::error_details),
];

#[test]
fn every_status_classifies_the_same_in_both_dialects() {
    let elsewhere = "https://elsewhere.example/api";
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    headers.insert(LOCATION, HeaderValue::from_static(elsewhere));
    let body = br#"{"message":"nope"}"#;
    let nope = || "nope".to_owned();
    let later = Some(Duration::from_secs(7));
    let table: Vec<(u16, CxoneError)> = vec![
        (400, CxoneError::BadRequest { message: nope() }),
        (401, CxoneError::Unauthorized),
        (
            403,
            CxoneError::Forbidden {
                message: nope(),
                scope: None,
            },
        ),
        (404, CxoneError::NotFound { message: nope() }),
        (409, CxoneError::Conflict { message: nope() }),
        (429, CxoneError::RateLimited { retry_after: later }),
        (
            500,
            CxoneError::Server {
                status: 500,
                message: nope(),
                retry_after: later,
            },
        ),
        (
            503,
            CxoneError::Server {
                status: 503,
                message: nope(),
                retry_after: later,
            },
        ),
        (
            302,
            CxoneError::Redirected {
                status: 302,
                location: crate::redact::location(Some(elsewhere)),
            },
        ),
        // A refusal the contract does not list is still a refusal of our request...
        (
            422,
            CxoneError::BadRequest {
                message: "unexpected HTTP status 422: nope".into(),
            },
        ),
        (
            418,
            CxoneError::BadRequest {
                message: "unexpected HTTP status 418: nope".into(),
            },
        ),
        // ...while any other status is an answer wfmd cannot read.
        (
            600,
            CxoneError::Decode("unexpected HTTP status 600: nope".into()),
        ),
    ];
    for (dialect, details) in DIALECTS {
        for (status, expected) in &table {
            let status = StatusCode::from_u16(*status).unwrap();
            let got = error_for_status(status, &headers, body, details);
            assert_eq!(&got, expected, "{dialect} {status}");
            let retryable = status.as_u16() == 429 || status.is_server_error();
            assert_eq!(got.is_retryable(), retryable, "{dialect} {status}");
        }
    }
}
