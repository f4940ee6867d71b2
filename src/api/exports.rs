//! Downloads — compliance reports, the audit export, analytics results — and what keeps
//! them from holding up anything else.
//!
//! A viewer whose download never reads must not stall a supervisor's change: before
//! this, four such downloads held the four read connections the engine shares, and a
//! transition waited 27 s for one. Now a download
//! - reads on connections of its own ([`crate::store::Store::for_exports`]), never the
//!   engine's, the sync's or delivery's;
//! - reads as fast as the database gives its rows, into a `spool` (memory, then an
//!   unnamed temporary file), so a slow client keeps no connection busy, only disk, up to
//!   `exports.spool_mib`;
//! - keeps its connection at most `exports.max_read_time` (reading, or waiting for a
//!   client behind by a whole spool), then is broken off with an error;
//! - counts against its caller's `exports.per_caller` from its start until its body is
//!   gone (sent whole, or the client disconnected); one more is answered 429 with
//!   `Retry-After`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use utoipa::openapi::RefOr;

use super::auth::Caller;
use super::error::{Problem, problem_answers};
use super::spool::{self, SpoolWriter};
use crate::caller_slots::{CallerSlot, CallerSlots};
use crate::config::exports::ExportsConfig;
use crate::domain::idle::Window;

/// What a refused download is told to wait before trying again: downloads read at
/// database speed, so a slot is usually free within seconds.
const RETRY_AFTER_SECONDS: u64 = 5;

/// The 429 of [`Exports::admit`], for a download route's `responses(...)`.
pub struct TooManyDownloads;

impl utoipa::IntoResponses for TooManyDownloads {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        problem_answers(&[(
            429,
            "The caller has `exports.per_caller` downloads in progress; `Retry-After` says \
             when to try again",
        )])
    }
}

/// The downloads in progress per caller, and their limits. Cheap to clone.
#[derive(Clone)]
pub struct Exports {
    inner: Arc<Inner>,
}

struct Inner {
    max_read_time: Duration,
    spool_bytes: u64,
    /// `exports.per_caller` places per caller.
    in_progress: CallerSlots,
}

impl Exports {
    pub fn new(config: &ExportsConfig) -> Exports {
        Exports {
            inner: Arc::new(Inner {
                max_read_time: config.max_read_time,
                spool_bytes: config.spool_bytes(),
                in_progress: CallerSlots::new(config.per_caller.max(1)),
            }),
        }
    }

    /// Takes one of `caller`'s download slots, or answers why not (429 problem+json with
    /// `Retry-After`, naming `exports.per_caller`).
    #[allow(clippy::result_large_err)]
    pub fn admit(&self, caller: &Caller) -> Result<CallerSlot, Response> {
        let in_progress = &self.inner.in_progress;
        in_progress.take(&caller.name).ok_or_else(|| {
            let limit = in_progress.per_caller();
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-downloads",
                "Too many downloads in progress",
                format!(
                    "`{}` has {limit} downloads in progress, the most exports.per_caller \
                     allows; try again once one has finished",
                    caller.name
                ),
            )
            .with("limit", limit)
            .retry_after(RETRY_AFTER_SECONDS)
        })
    }

    /// Runs `produce` in the background (in the request's span) with the spool's
    /// writing end, within `exports.max_read_time`, and answers the body that streams
    /// what it writes, holding `permit` until both are done.
    ///
    /// Waits for the first chunk, so a download that fails before writing anything is
    /// a 500 problem; one that fails later ends the transfer with an error, never a
    /// truncated 200.
    pub async fn stream<F, Fut>(&self, permit: CallerSlot, produce: F) -> Result<Body, Problem>
    where
        F: FnOnce(SpoolWriter) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let permit = Arc::new(permit);
        let (writer, mut reader) = spool::spool(self.inner.spool_bytes);
        let end = writer.handle();
        let producing = produce(writer);
        let limit = self.inner.max_read_time;
        let held = Arc::clone(&permit);
        crate::tasks::spawn(
            async move {
                let _held = held;
                let outcome = match tokio::time::timeout(limit, producing).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!(
                        "the download was stopped after exports.max_read_time ({}); ask \
                         for a shorter window",
                        humantime::format_duration(limit)
                    )),
                };
                if let Err(error) = &outcome {
                    tracing::warn!(%error, "a download stopped before its end");
                }
                end.end(outcome);
            }
            .in_current_span(),
        );
        let first = match reader.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => return Err(Problem::internal(&error)),
            None => Bytes::new(),
        };
        let rest = futures::stream::unfold((reader, permit), |(mut reader, permit)| async move {
            reader.next().await.map(|chunk| (chunk, (reader, permit)))
        });
        let body = futures::StreamExt::chain(futures::stream::iter([Ok(first)]), rest);
        Ok(Body::from_stream(body))
    }
}

/// A download's answer: `body` as `content_type` and, given a `file_name`, offered to be
/// saved under it (`Content-Disposition: attachment`).
pub(super) fn answer(body: Body, content_type: &'static str, file_name: Option<&str>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(name) = file_name
        && let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The file name of a download of `window`: `STEM-FROM-TO.EXTENSION`, the instants in
/// UTC to the second.
pub(super) fn file_name(stem: &str, window: Window, extension: &str) -> String {
    format!(
        "{stem}-{}-{}.{extension}",
        window.from.format("%Y%m%dT%H%M%SZ"),
        window.to.format("%Y%m%dT%H%M%SZ"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::api_tokens::Role;
    use crate::report::Sink;
    use axum::http::header;

    fn caller(name: &str) -> Caller {
        Caller {
            name: name.into(),
            role: Role::Viewer,
            tenants: None,
        }
    }

    fn exports(per_caller: usize, max_read_time: Duration) -> Exports {
        Exports::new(&ExportsConfig {
            per_caller,
            max_read_time,
            spool_mib: 1,
        })
    }

    #[tokio::test]
    async fn a_caller_over_its_limit_gets_429_with_retry_after_and_others_do_not() {
        let exports = exports(2, Duration::from_secs(60));
        let first = exports.admit(&caller("wall")).unwrap();
        let _second = exports.admit(&caller("wall")).unwrap();
        let refused = exports.admit(&caller("wall")).unwrap_err();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "5");
        let body = axum::body::to_bytes(refused.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["limit"], 2);
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("exports.per_caller"),
            "{body}"
        );
        exports.admit(&caller("desk")).unwrap();
        drop(first);
        exports.admit(&caller("wall")).unwrap();
    }

    #[tokio::test]
    async fn the_slot_is_held_until_the_body_is_gone() {
        let exports = exports(1, Duration::from_secs(60));
        let permit = exports.admit(&caller("wall")).unwrap();
        let body = exports
            .stream(permit, |mut sink| async move {
                sink.send(b"x".to_vec()).await.map_err(|e| e.to_string())
            })
            .await
            .unwrap();
        assert!(
            exports.admit(&caller("wall")).is_err(),
            "the body still lives"
        );
        drop(body);
        // The writing task may still be finishing its end.
        crate::store::testing::eventually("the slot came back", async || {
            exports.admit(&caller("wall")).is_ok()
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_that_reads_past_max_read_time_is_broken_off() {
        let exports = exports(1, Duration::from_secs(30));
        let permit = exports.admit(&caller("wall")).unwrap();
        let body = exports
            .stream(permit, |mut sink| async move {
                sink.send(b"head".to_vec())
                    .await
                    .map_err(|e| e.to_string())?;
                std::future::pending::<()>().await;
                Ok(())
            })
            .await
            .unwrap();
        let error = axum::body::to_bytes(body, 1 << 16).await.unwrap_err();
        assert!(
            format!("{error:?}").contains("exports.max_read_time"),
            "{error:?}"
        );
    }
}
