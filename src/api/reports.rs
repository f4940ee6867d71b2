//! `GET /v1/reports/compliance?from&to&format=csv|json|html&tz=ZONE`: the compliance
//! report, streamed.
//!
//! The aggregates are computed before the response starts, so a bad database answers a
//! problem+json 500 instead of a truncated 200; rendering (and the JSON attempt log)
//! then streams through a small channel, so a slow client holds back the database
//! cursor rather than piling the report up in memory.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::Instrument;

use super::agents::window_from_query;
use super::error::Problem;
use super::extract::QueryParams;
use super::openapi::VIEWER;
use super::{ApiState, Routes};
use crate::report::{ChannelSink, Format, Report, parse_zone};

/// Chunks in flight between the renderer and the client.
const CHANNEL_CHUNKS: usize = 4;

pub fn routes() -> Routes {
    vec![utoipa_axum::routes!(compliance)]
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Start: a date (2026-11-20, midnight UTC) or an RFC 3339 instant; default `to`
    /// minus 24 hours.
    from: Option<String>,
    /// End (exclusive), after `from` and at most 366 days later; default now.
    to: Option<String>,
    /// `csv` (default; one row per agent), `json` (agents and every attempt) or `html`
    /// (one self-contained page with a chart).
    #[param(pattern = "^(csv|json|html)$")]
    format: Option<String>,
    /// IANA time zone for the times in the report (e.g. America/New_York); default UTC.
    tz: Option<String>,
}

/// The compliance report of a window: per agent, transitions, rejections by violation,
/// latency (mean, p95), idle time and time in each state; streamed.
#[utoipa::path(
    get,
    path = "/v1/reports/compliance",
    tag = "reports",
    security(("bearer" = [VIEWER])),
    params(ReportQuery),
    responses((status = 200, description = "The report in the requested format", content(
        (String = "text/csv; charset=utf-8"),
        (Object = "application/json"),
        (String = "text/html; charset=utf-8"),
    )))
)]
pub async fn compliance(
    State(state): State<ApiState>,
    QueryParams(query): QueryParams<ReportQuery>,
) -> Result<Response, Problem> {
    let now = state.engine.now();
    let window = window_from_query(query.from.as_deref(), query.to.as_deref(), now)?;
    let format = match query.format.as_deref() {
        None => Format::Csv,
        Some(text) => text
            .parse::<Format>()
            .map_err(|e| Problem::invalid_parameter("format", format!("format: {e}")))?,
    };
    let zone = query
        .tz
        .as_deref()
        .map(|name| {
            parse_zone(name).map_err(|e| Problem::invalid_parameter("tz", format!("tz: {e}")))
        })
        .transpose()?;
    super::audit::check_kept(
        &state.store,
        &[
            crate::store::retention::Kind::Intervals,
            crate::store::retention::Kind::Attempts,
        ],
        window.from,
    )
    .await?;
    let pool = state.store.reader().clone();
    let report = Report::build(&pool, window, now, zone, state.exception_threshold)
        .await
        .map_err(|e| Problem::internal(&e))?;

    let (tx, mut rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    // In the request's span, so its log lines keep the request id.
    tokio::spawn(
        async move {
            let mut sink = ChannelSink(tx.clone());
            if let Err(error) = report.write(format, &pool, &mut sink).await {
                tracing::warn!(%error, "compliance report stopped before its end");
                // Ends the body with an error, so the client sees a broken transfer
                // rather than a report that looks complete.
                let _ = tx.send(Err(std::io::Error::other(error.to_string()))).await;
            }
        }
        .in_current_span(),
    );
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(|result| result.map(Bytes::from)))
    }));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    let filename = format!(
        "attachment; filename=\"compliance-{}-{}.{}\"",
        window.from.format("%Y%m%dT%H%M%SZ"),
        window.to.format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    if format != Format::Html
        && let Ok(value) = HeaderValue::from_str(&filename)
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
