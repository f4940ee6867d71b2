//! `GET /v1/audit?from&to` (the entries of a window as JSON lines, streamed) and
//! `GET /v1/audit/verify` (walk the hash chain). Admin only: the audit log names who
//! did what to whom.

use axum::response::Response;
use chrono::Utc;
use futures::TryStreamExt;
use serde::Serialize;

use super::Routes;
use super::auth::Caller;
use super::error::Problem;
use super::exports::{self, TooManyDownloads};
use super::extract::{QueryParams, WindowQuery, check_kept, window_from_query};
use super::roles::ADMIN;
use super::tenancy::TenantState;
use crate::report::Sink;
use crate::store::audit::{self, ExportedEntry, Verification};
use crate::store::retention::Kind;
use crate::telemetry::names::{AUDIT_VERIFY_INTACT, AUDIT_VERIFY_LAST_RUN_TIMESTAMP_SECONDS};

/// Bytes of JSON lines gathered before they are sent on.
const CHUNK_BYTES: usize = 64 * 1024;

pub fn routes() -> Routes {
    vec![utoipa_axum::routes!(export), utoipa_axum::routes!(verify)]
}

/// The audit entries written in a window, oldest first, one JSON object per line.
///
/// Streamed: the entries are read on the download connections as fast as the database
/// gives them and held for the client in its spool (see [`super::exports`]), so a year
/// of entries takes no more memory than a minute of them. A database failure before the
/// first entry is a 500 problem; one later ends the transfer with an error, never a
/// truncated 200.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    security(("bearer" = [ADMIN])),
    params(WindowQuery),
    responses(
        (status = 200, description = "JSON lines, one entry each", body = ExportedEntry,
         content_type = "application/x-ndjson"),
        TooManyDownloads,
    )
)]
pub async fn export(
    TenantState(state): TenantState,
    caller: Caller,
    QueryParams(query): QueryParams<WindowQuery>,
) -> Result<Response, Problem> {
    let window = window_from_query(query.from.as_deref(), query.to.as_deref(), Utc::now())?;
    check_kept(&state.store, &[Kind::Audit], window.from).await?;
    let permit = match state.exports.admit(&caller) {
        Ok(permit) => permit,
        Err(refused) => return Ok(refused),
    };
    let pool = state.store.for_exports().reader().clone();
    let body = state
        .exports
        .stream(permit, |mut sink| async move {
            let mut rows = std::pin::pin!(audit::stream_between(&pool, window.from, window.to));
            let mut buf = Vec::with_capacity(CHUNK_BYTES + 4096);
            while let Some(row) = rows.try_next().await.map_err(|e| e.to_string())? {
                serde_json::to_writer(&mut buf, &row.exported()).expect("audit entries serialize");
                buf.push(b'\n');
                if buf.len() >= CHUNK_BYTES {
                    let chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES + 4096));
                    sink.send(chunk).await.map_err(|e| e.to_string())?;
                }
            }
            sink.send(buf).await.map_err(|e| e.to_string())
        })
        .await?;
    let name = exports::file_name("audit", window, "jsonl");
    Ok(exports::answer(body, "application/x-ndjson", Some(&name)))
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
pub async fn verify(TenantState(state): TenantState) -> Result<axum::Json<VerifyView>, Problem> {
    // A walk of the whole chain is a long read a client asked for: on the download
    // connections, not the engine's.
    let store = state.store.for_exports();
    let verification = audit::verify_with(store.reader(), store.audit_key()).await?;
    // For the `WfmdAuditChainBroken` alert of deploy/prometheus.
    metrics::gauge!(AUDIT_VERIFY_INTACT).set(if verification.is_intact() { 1.0 } else { 0.0 });
    metrics::gauge!(AUDIT_VERIFY_LAST_RUN_TIMESTAMP_SECONDS)
        .set(chrono::Utc::now().timestamp() as f64);
    Ok(axum::Json(VerifyView {
        intact: verification.is_intact(),
        verification,
    }))
}
