//! `/v1/analytics/queries`: analytics jobs. A supervisor submits a query (202 with the
//! job id); anyone with a viewer token follows it and downloads its results (rows with
//! moving average, direction, z-score and anomaly), streamed as CSV, JSON or one
//! self-contained HTML page of charts.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Caller;
use super::error::Problem;
use super::exports::{self, TooManyDownloads};
use super::extract::{PathParams, QueryParams, zone_from_query};
use super::jobs::{JobPath, JobStarted, NoSuchJob, accepted, found};
use super::json::{JsonBody, whole_number};
use super::roles::{SUPERVISOR, VIEWER};
use super::tenancy::TenantState;
use super::{ApiState, Routes};
use crate::domain::trend::{Detector, Seasonality, TrendSettings};
use crate::engine::analytics::render::{self, AnalyticsFormat, CsvFormat, SeriesNames};
use crate::engine::analytics::spec::{AnalyticsSource, Bucket, FilterSpec, MetricSpec, QuerySpec};
use crate::engine::analytics::{AnalyticsJobView, SubmitError};
use crate::report::{Definitions, Subject};
use crate::store::analytics::AnalyticsJobRow;

/// What a caller over `analytics.max_jobs_per_caller` is told to wait: jobs take
/// seconds to minutes.
const JOBS_RETRY_AFTER_SECONDS: u64 = 30;

pub fn routes() -> Routes {
    vec![
        utoipa_axum::routes!(create_analytics_job, list_analytics_jobs),
        utoipa_axum::routes!(show_analytics_job),
        utoipa_axum::routes!(analytics_job_results),
    ]
}

/// An analytics query.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// `history` (wfmd's own store) or `platform`.
    source: AnalyticsSource,
    /// `NAME:AGG`, e.g. `adherence_pct:avg`. History metrics: idle_seconds,
    /// state_seconds, adherence_pct, exceptions, violations, transitions,
    /// latency_p95_ms; AGG: sum, avg, min, max, count.
    metrics: Vec<String>,
    /// History: `agent`, `team`; platform: the platform's, e.g. `group.id`,
    /// `channel` (at most 5).
    #[serde(default)]
    dimensions: Vec<String>,
    /// `FIELD=VALUE`; history fields: agent, team (id or name), state (for
    /// state_seconds; default every state but LOGGED_OUT); platform: one `equals`
    /// filter on a dimension.
    #[serde(default)]
    filters: Vec<String>,
    /// A date (2026-11-01, midnight UTC) or an RFC 3339 instant.
    from: String,
    /// End (exclusive), after `from`; a history query spans at most 366 days (with hour
    /// buckets 31 days), a platform query at most 365 days.
    to: String,
    bucket: Bucket,
    /// Earlier comparable values in each point's baseline (the same hour on `window`
    /// earlier days, say) and points in the moving average; default 7.
    #[serde(default, deserialize_with = "whole_number")]
    window: Option<usize>,
    /// Anomaly threshold: how many robust spreads (scaled median absolute deviations)
    /// from its baseline a point must be; default 4.5.
    z: Option<f64>,
    /// What a point is compared with: `auto` (default; chosen from the bucket and the
    /// data), `none` (the points right before), `daily` (the same hour on earlier days),
    /// `weekly` (the same weekday and time); a season no longer than the bucket is none.
    #[schema(value_type = Option<String>)]
    seasonality: Option<Seasonality>,
}

/// States in `schemas` what [`QuerySpec::check`] checks of a query and the Rust type does
/// not say. The two sources take different metrics, dimensions and filters, so the
/// body is one of two schemas (`HistoryQuery`, `PlatformQuery`), told apart by `source`;
/// both say what a window, z and seasonality may be and that nothing is listed twice.
/// What no schema can say is in the descriptions: `to` after `from`, and how long the
/// range may be (history: 366 days, hourly 31; platform: 365).
pub(super) fn describe(schemas: &mut serde_json::Map<String, serde_json::Value>) {
    use crate::cxone::aggregation::{MAX_DIMENSIONS, MAX_METRICS};
    use crate::engine::analytics::spec::{
        Agg, HISTORY_DIMENSIONS, HISTORY_FILTERS, HISTORY_METRICS,
    };
    use serde_json::{Value, json};
    let mut common = schemas
        .remove("QueryBody")
        .expect("QueryBody is in the document");
    let aggregations = Agg::ALL.map(Agg::as_str).join("|");
    let states = crate::domain::AgentState::ALL
        .map(crate::domain::AgentState::as_str)
        .join("|");
    let properties = common["properties"]
        .as_object_mut()
        .expect("QueryBody has properties");
    for instant in ["from", "to"] {
        if let Some(Value::Object(field)) = properties.get_mut(instant) {
            field.insert("pattern".to_owned(), json!(super::schemas::INSTANT_PATTERN));
        }
    }
    properties.insert(
        "window".to_owned(),
        json!({
            "type": ["integer", "null"],
            "minimum": TrendSettings::MIN_WINDOW,
            "maximum": TrendSettings::MAX_WINDOW,
            "description": properties["window"]["description"],
        }),
    );
    properties.insert(
        "z".to_owned(),
        json!({
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "description": properties["z"]["description"],
        }),
    );
    let mut seasonality: Vec<Value> = Seasonality::REQUESTABLE.map(Value::from).to_vec();
    seasonality.push(Value::Null);
    properties.insert(
        "seasonality".to_owned(),
        json!({
            "type": ["string", "null"],
            "enum": seasonality,
            "description": properties["seasonality"]["description"],
        }),
    );
    let variant = |source: &str, metrics: Value, dimensions: Value, filters: Value| {
        let mut schema = common.clone();
        let properties = schema["properties"].as_object_mut().expect("properties");
        properties.insert("source".to_owned(), json!({"const": source}));
        for (name, extra) in [
            ("metrics", metrics),
            ("dimensions", dimensions),
            ("filters", filters),
        ] {
            if let (Some(Value::Object(field)), Value::Object(extra)) =
                (properties.get_mut(name), extra)
            {
                field.insert("uniqueItems".to_owned(), json!(true));
                field.extend(extra);
            }
        }
        schema
    };
    let history = variant(
        "history",
        json!({
            "minItems": 1,
            "items": {"type": "string", "pattern": format!(
                "^(?:{}):(?:{aggregations})$", HISTORY_METRICS.join("|"))},
        }),
        json!({"items": {"type": "string", "enum": HISTORY_DIMENSIONS}}),
        json!({"items": {"type": "string", "pattern": format!(
            "^(?:(?:{})=.*|state=(?:{states}))$",
            HISTORY_FILTERS.iter().filter(|f| **f != "state").copied().collect::<Vec<_>>().join("|"))}}),
    );
    // The platform knows its own names; these are what wfmd passes on unchanged.
    let platform = variant(
        "platform",
        json!({
            "minItems": 1,
            "maxItems": MAX_METRICS,
            "items": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+:[a-z]+$"},
        }),
        json!({
            "maxItems": MAX_DIMENSIONS,
            "items": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
        }),
        json!({
            "maxItems": 1,
            "items": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+=.*$"},
        }),
    );
    schemas.insert("HistoryQuery".to_owned(), history);
    schemas.insert("PlatformQuery".to_owned(), platform);
    schemas.insert(
        "QueryBody".to_owned(),
        json!({
            "description": common["description"],
            "oneOf": [
                super::schemas::reference("HistoryQuery"),
                super::schemas::reference("PlatformQuery"),
            ],
            "discriminator": {
                "propertyName": "source",
                "mapping": {
                    "history": "#/components/schemas/HistoryQuery",
                    "platform": "#/components/schemas/PlatformQuery",
                },
            },
        }),
    );
}

fn spec(body: QueryBody) -> Result<QuerySpec, Problem> {
    let instant = |field: &str, text: &str| {
        crate::time::parse_instant(text)
            .map_err(|e| Problem::invalid_field(field, format!("{field}: {e}")))
    };
    let metrics = body
        .metrics
        .iter()
        .map(|m| m.parse::<MetricSpec>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::invalid_field("metrics", format!("metrics: {e}")))?;
    let filters = body
        .filters
        .iter()
        .map(|f| f.parse::<FilterSpec>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::invalid_field("filters", format!("filters: {e}")))?;
    Ok(QuerySpec {
        source: body.source,
        metrics,
        dimensions: body.dimensions,
        filters,
        from: instant("from", &body.from)?,
        to: instant("to", &body.to)?,
        bucket: body.bucket,
        window: body.window.unwrap_or(TrendSettings::DEFAULT_WINDOW),
        z: body.z.unwrap_or(TrendSettings::DEFAULT_Z),
        seasonality: body.seasonality.unwrap_or(Seasonality::Auto),
        detector: Detector::Robust,
    })
}

/// Starts an analytics job: 202 with its id once it is stored; it runs in the
/// background and announces its end with a `report.ready` webhook.
#[utoipa::path(
    post,
    path = "/v1/analytics/queries",
    tag = "analytics",
    security(("bearer" = [SUPERVISOR])),
    request_body = QueryBody,
    responses(
        (status = 202, description = "The job is stored; `Location` names it", body = JobStarted),
        (status = 422, description = "A field is invalid, or the platform does not offer aggregation queries (`not-offered`, field `source`); `field` names it"),
        (status = 429, description = "The caller has `analytics.max_jobs_per_caller` jobs queued or running (`limit`); `Retry-After` says when to try again"),
    )
)]
pub async fn create_analytics_job(
    TenantState(state): TenantState,
    caller: Caller,
    JsonBody(body): JsonBody<QueryBody>,
) -> Result<Response, Problem> {
    let spec = spec(body)?;
    let id = match state.analytics.submit(&spec, &caller.name).await {
        Ok(id) => id,
        Err(e @ SubmitError::TooMany { limit, .. }) => {
            return Ok(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-jobs",
                "Too many analytics jobs queued or running",
                e.to_string(),
            )
            .with("limit", limit)
            .retry_after(JOBS_RETRY_AFTER_SECONDS));
        }
        Err(SubmitError::Invalid(e)) => return Err(Problem::invalid_field(e.field, e.to_string())),
        Err(SubmitError::NotOffered(e)) => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not-offered",
                "Not offered by this platform",
                format!("source: {e}"),
            )
            .with("field", "source"));
        }
        Err(SubmitError::Store(e)) => return Err(Problem::internal(&e)),
    };
    Ok(accepted(
        &format!("/v1/analytics/queries/{id}"),
        JobStarted { job_id: id },
    ))
}

/// The newest analytics jobs (at most 100), newest first.
#[utoipa::path(
    get,
    path = "/v1/analytics/queries",
    tag = "analytics",
    security(("bearer" = [VIEWER])),
    responses((status = 200, description = "The jobs", body = Vec<AnalyticsJobView>))
)]
pub async fn list_analytics_jobs(TenantState(state): TenantState) -> Result<Response, Problem> {
    let jobs = state
        .analytics
        .list(100)
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(jobs.iter().map(AnalyticsJobView::from).collect::<Vec<_>>()).into_response())
}

/// A job's status and progress.
#[utoipa::path(
    get,
    path = "/v1/analytics/queries/{job_id}",
    tag = "analytics",
    security(("bearer" = [VIEWER])),
    params(JobPath),
    responses(
        (status = 200, description = "The job as it stands", body = AnalyticsJobView),
        NoSuchJob,
    )
)]
pub async fn show_analytics_job(
    TenantState(state): TenantState,
    PathParams(JobPath { job_id }): PathParams<JobPath>,
) -> Result<Response, Problem> {
    let job = find_job(&state, &job_id).await?;
    Ok(Json(AnalyticsJobView::from(&job)).into_response())
}

/// The analytics job `job_id`, or the 404 naming it.
async fn find_job(state: &ApiState, job_id: &str) -> Result<AnalyticsJobRow, Problem> {
    let job = state
        .analytics
        .job(job_id)
        .await
        .map_err(|e| Problem::internal(&e))?;
    found(job, "analytics", job_id)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// `csv` (default; the canonical form whose SHA-256 the audit log keeps), `json`
    /// (series with their points and anomalies) or `html` (a chart per series).
    #[param(pattern = "^(csv|json|html)$")]
    format: Option<String>,
    /// IANA time zone of the HTML page's time labels (default UTC).
    tz: Option<String>,
}

/// A completed job's results, streamed (through the download's spool, see
/// [`super::exports`]): every point with its moving average, direction, z-score and
/// anomaly. JSON carries `definitions` and the page ends with them; the CSV (the audited
/// bytes) links to them (`Link: <…/reports/definitions?report=analytics&format=csv>;
/// rel="describedby"`).
#[utoipa::path(
    get,
    path = "/v1/analytics/queries/{job_id}/results",
    tag = "analytics",
    security(("bearer" = [VIEWER])),
    params(JobPath, ResultsQuery),
    responses(
        (status = 200, description = "The results", content(
            (String = "text/csv; charset=utf-8"),
            (Object = "application/json"),
            (String = "text/html; charset=utf-8"),
        )),
        NoSuchJob,
        (status = 409, description = "The job has not completed"),
        TooManyDownloads,
    )
)]
pub async fn analytics_job_results(
    TenantState(state): TenantState,
    caller: Caller,
    PathParams(JobPath { job_id }): PathParams<JobPath>,
    QueryParams(query): QueryParams<ResultsQuery>,
) -> Result<Response, Problem> {
    let mut format = match query.format.as_deref() {
        None | Some("csv") => AnalyticsFormat::Csv(CsvFormat::CURRENT),
        Some("json") => AnalyticsFormat::Json,
        Some("html") => {
            AnalyticsFormat::Html(zone_from_query(query.tz.as_deref())?.unwrap_or(chrono_tz::UTC))
        }
        Some(other) => {
            return Err(Problem::invalid_parameter(
                "format",
                format!("format: unknown results format `{other}`; expected csv, json or html"),
            ));
        }
    };
    let job = find_job(&state, &job_id).await?;
    if job.status != "completed" {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "job-not-completed",
            "The job has not completed",
            format!("analytics job `{job_id}` is {}", job.status),
        ));
    }
    if let AnalyticsFormat::Csv(_) = format {
        // The format the job was hashed in, so the download verifies.
        format = AnalyticsFormat::Csv(CsvFormat::of_version(job.csv_format).ok_or_else(|| {
            Problem::internal(&format!(
                "analytics job `{job_id}` has CSV format {}, which this wfmd does not know",
                job.csv_format
            ))
        })?);
    }
    let spec: QuerySpec = serde_json::from_str(&job.spec).map_err(|e| Problem::internal(&e))?;
    let permit = match state.exports.admit(&caller) {
        Ok(permit) => permit,
        Err(refused) => return Ok(refused),
    };
    let store = state.analytics.store().for_exports();
    let zone = match format {
        AnalyticsFormat::Html(zone) => Some(zone),
        _ => None,
    };
    let definitions = Definitions::analytics(&state.judging.current(), zone);
    let names = series_names(&state).await?;
    let body = state
        .exports
        .stream(permit, |mut sink| async move {
            render::write(
                &store,
                &job_id,
                &spec,
                format,
                Some(&definitions),
                &names,
                &mut sink,
            )
            .await
            .map(drop)
            .map_err(|e| format!("{e:#}"))
        })
        .await?;
    let mut response = exports::answer(body, format.content_type(), None);
    if let AnalyticsFormat::Csv(_) = format {
        // The CSV is the audited bytes; its definitions are a link away.
        response.headers_mut().insert(
            axum::http::header::LINK,
            super::reports::describedby("../../../reports/definitions", Subject::Analytics, None),
        );
    }
    Ok(response)
}

/// The names of the teams and agents (the store's agent roster, as the platform last
/// listed them) and of the skills (the wallboard's last poll) that series are keyed by.
async fn series_names(state: &ApiState) -> Result<SeriesNames, Problem> {
    let mut names = SeriesNames::default();
    for entry in crate::store::roster::all(state.store.reader())
        .await?
        .values()
    {
        if let Some(name) = &entry.name {
            names.insert("agent", &entry.agent_id, name);
        }
        if let (Some(id), Some(name)) = (&entry.team_id, &entry.team_name) {
            names.insert("team", id, name);
        }
    }
    for (id, skill) in &state.board.borrow().skills {
        names.insert("skill", id, &skill.skill_name);
    }
    Ok(names)
}
