//! `GET /v1/live/series`: a skill's or queue's stored samples since an instant, for the
//! wallboard's day curves.

use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Routes;
use super::error::Problem;
use super::extract::QueryParams;
use super::roles::VIEWER;
use super::tenancy::TenantState;
use super::validate::MAX_ID_LEN;
use crate::domain::metrics::MetricFamily;
use crate::store::retention::{self, Kind};
use crate::store::samples;
use crate::time::{parse_instant, serialize_rfc3339};

/// The most points one answer holds; more samples are thinned evenly.
pub const MAX_POINTS: u32 = 5_000;

pub fn routes() -> Routes {
    vec![utoipa_axum::routes!(series)]
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// `skills` or `queues`.
    #[param(pattern = "^(skills|queues)$")]
    family: String,
    /// The skill or queue id (1-128 printable ASCII characters).
    #[param(pattern = "^[!-~]{1,128}$")]
    id: String,
    /// Start: an RFC 3339 instant or a date (midnight UTC); default the start of today
    /// (UTC).
    from: Option<String>,
}

/// One stored sample.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesPoint {
    /// The platform's time of the sample (RFC 3339).
    #[serde(serialize_with = "serialize_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    t: DateTime<Utc>,
    /// 0.0-1.0; null when the platform gave none (e.g. no contacts).
    service_level: Option<f64>,
    /// Contacts queued (skills) or calls waiting (queues).
    queued: u32,
}

/// A skill's or queue's samples since `from`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesView {
    family: MetricFamily,
    id: String,
    /// Oldest first, at most one per sample and 5,000 in all (evenly thinned when
    /// there are more).
    points: Vec<SeriesPoint>,
}

/// A skill's or queue's stored samples since `from`, for a day curve.
///
/// Every poll of the metric pollers is stored with the platform's time; an id never
/// polled has no points (200 with an empty list).
#[utoipa::path(
    get,
    path = "/v1/live/series",
    tag = "live",
    security(("bearer" = [VIEWER])),
    params(SeriesQuery),
    responses((status = 200, description = "The samples, oldest first", body = SeriesView))
)]
pub async fn series(
    TenantState(state): TenantState,
    QueryParams(query): QueryParams<SeriesQuery>,
) -> Result<Json<SeriesView>, Problem> {
    let family = match query.family.as_str() {
        "skills" => MetricFamily::Skills,
        "queues" => MetricFamily::Queues,
        other => {
            return Err(Problem::invalid_parameter(
                "family",
                format!("family must be `skills` or `queues`, got `{other}`"),
            ));
        }
    };
    let id = query.id;
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Problem::invalid_parameter(
            "id",
            format!("id must be 1 to {MAX_ID_LEN} printable ASCII characters"),
        ));
    }
    let from = match query.from.as_deref() {
        Some(text) => {
            let from = parse_instant(text)
                .map_err(|e| Problem::invalid_parameter("from", format!("from: {e}")))?;
            super::extract::check_kept(&state.store, &[Kind::Samples], from).await?;
            from
        }
        // Today's curve; with samples kept for less than a day, what is kept of it.
        None => {
            let midnight = Utc::now()
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc();
            match retention::check_window(state.store.reader(), &[Kind::Samples], midnight).await? {
                Ok(()) => midnight,
                Err(not_kept) => not_kept.kept_from,
            }
        }
    };
    let points = samples::series(state.store.reader(), family, &id, from, MAX_POINTS).await?;
    Ok(Json(SeriesView {
        family,
        id,
        points: points
            .into_iter()
            .map(|p| SeriesPoint {
                t: p.sampled_at,
                service_level: p.service_level,
                queued: p.queued,
            })
            .collect(),
    }))
}
