//! `GET /v1/audit?from&to` (the entries of a window as JSON lines, streamed) and
//! `GET /v1/audit/verify` (walk the hash chain). Admin only: the audit log names who
//! did what to whom.

use std::io;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tracing::Instrument;

use super::agents::{WindowQuery, window_from_query};
use super::error::Problem;
use super::extract::QueryParams;
use super::openapi::ADMIN;
use super::{ApiState, Routes};
use crate::store::audit::{self, ExportedEntry, Verification};
use crate::store::retention::{self, Kind};

/// Bytes of JSON lines gathered before they are sent on.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the database reader and the client.
const CHANNEL_CHUNKS: usize = 4;

pub fn routes() -> Routes {
    vec![utoipa_axum::routes!(export), utoipa_axum::routes!(verify)]
}

/// The audit entries written in a window, oldest first, one JSON object per line.
///
/// Streamed: the database is read as the client reads, so a year of entries takes no
/// more memory than a minute of them. A database failure before the first entry is a
/// 500 problem; one later ends the transfer with an error, never a truncated 200.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    security(("bearer" = [ADMIN])),
    params(WindowQuery),
    responses((status = 200, description = "JSON lines, one entry each", body = ExportedEntry,
               content_type = "application/x-ndjson"))
)]
pub async fn export(
    State(state): State<ApiState>,
    QueryParams(query): QueryParams<WindowQuery>,
) -> Result<Response, Problem> {
    let window = window_from_query(query.from.as_deref(), query.to.as_deref(), Utc::now())?;
    check_kept(&state.store, &[Kind::Audit], window.from).await?;
    let pool = state.store.reader().clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    tokio::spawn(
        async move {
            let mut rows = std::pin::pin!(audit::stream_between(&pool, window.from, window.to));
            let mut buf = Vec::with_capacity(CHUNK_BYTES + 4096);
            loop {
                match rows.try_next().await {
                    Ok(Some(row)) => {
                        serde_json::to_writer(&mut buf, &row.exported())
                            .expect("audit entries serialize");
                        buf.push(b'\n');
                        if buf.len() >= CHUNK_BYTES {
                            let chunk =
                                std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES + 4096));
                            if tx.send(Ok(chunk.into())).await.is_err() {
                                return; // The client went away.
                            }
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Ok(buf.into())).await;
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "audit export stopped before its end");
                        let _ = tx.send(Err(io::Error::other(error.to_string()))).await;
                        return;
                    }
                }
            }
        }
        .in_current_span(),
    );
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(error)) => return Err(Problem::internal(&error)),
        None => {
            return Err(Problem::internal(
                &"the audit export ended without an answer",
            ));
        }
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let body = futures::stream::iter([Ok(first)]).chain(rest);
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    let filename = format!(
        "attachment; filename=\"audit-{}-{}.jsonl\"",
        window.from.format("%Y%m%dT%H%M%SZ"),
        window.to.format("%Y%m%dT%H%M%SZ"),
    );
    if let Ok(value) = HeaderValue::from_str(&filename) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The result of walking the audit log's hash chain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyView {
    /// True when no entry was edited, deleted or inserted out of band.
    pub intact: bool,
    #[serde(flatten)]
    pub verification: Verification,
}

/// Walks the hash chain from the oldest kept checkpoint (or the first entry), as `wfmd
/// audit verify` does, and names the first entry that was edited, deleted or inserted
/// out of band. A broken chain is still a 200: the
/// check worked, and `intact` says what it found.
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    tag = "audit",
    security(("bearer" = [ADMIN])),
    responses((status = 200, description = "What the walk found", body = VerifyView))
)]
pub async fn verify(State(state): State<ApiState>) -> Result<axum::Json<VerifyView>, Problem> {
    let verification = audit::verify_with(state.store.reader(), state.store.audit_key()).await?;
    // For the `WfmdAuditChainBroken` alert of deploy/prometheus.
    metrics::gauge!("wfmd_audit_verify_intact").set(if verification.is_intact() {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("wfmd_audit_verify_last_run_timestamp_seconds")
        .set(chrono::Utc::now().timestamp() as f64);
    Ok(axum::Json(VerifyView {
        intact: verification.is_intact(),
        verification,
    }))
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
