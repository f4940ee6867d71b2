//! The v2 aggregation query API (docs/platform-api.md, "Aggregation queries"):
//! `POST /api/v2/analytics/query` and `GET /api/v2/analytics/query/{id}?limit&offset`.
//!
//! Results are computed, not stored: row `i` of a query is bucket `i / series` of series
//! `i % series`, and its values are a pure function of the tenant seed, the metric, the
//! series and the bucket, with a weekly rhythm (Mondays busy, weekends quiet), a daily
//! one for hourly buckets, a little noise and a few planted anomalies. So any page of a
//! large result costs only its own rows, and a test can ask for the ground truth.
//!
//! Series are the tenant's own: `group.id` is a team, `channel` a skill's media type,
//! `skill.id` a skill. A query is PENDING for the first third of its duration (default
//! 2 s of simulated time), then RUNNING, then COMPLETED (or FAILED when a failure was
//! injected). The platform's limits are enforced: more than 10 metrics, 5 dimensions or
//! a 365-day range, a malformed date or an unknown bucket size is 400 with the reason,
//! and a sixth query while five run is 429 with `Retry-After`. Switches: the duration,
//! a `Retry-After` on PENDING/RUNNING answers, injected FAILED queries, and a skew added
//! to the reported `total` (for completeness tests). The fault gate in front of every
//! API route (429, 5xx, hangs, latency) applies here too.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Simulator;
use super::wire::{ApiError, ts};

/// The metrics the simulated platform computes.
pub const METRICS: [&str; 3] = ["duration", "count", "first_contact_resolved"];
/// The aggregations it knows.
pub const AGGREGATIONS: [&str; 6] = ["sum", "avg", "min", "max", "count", "pct"];
/// The dimensions it groups by.
pub const DIMENSIONS: [&str; 3] = ["group.id", "channel", "skill.id"];
/// The most queries running at once per tenant.
pub const MAX_RUNNING: usize = 5;
const MAX_METRICS: usize = 10;
const MAX_DIMENSIONS: usize = 5;
const MAX_DAYS: i64 = 365;
const DEFAULT_LIMIT: u64 = 500;
const MAX_LIMIT: u64 = 10_000;

/// One submitted query, as the simulated platform holds it.
#[derive(Debug, Clone, Serialize)]
pub struct SimQuery {
    /// `qry_…`.
    pub id: String,
    pub metrics: Vec<(String, String)>,
    pub dimensions: Vec<String>,
    pub submitted_at: DateTime<Utc>,
    /// When it stops running (COMPLETED or FAILED from then on).
    pub done_at: DateTime<Utc>,
    /// The injected error, when it fails.
    pub error: Option<String>,
    /// The dimension values of each series, in result order.
    pub series: Vec<BTreeMap<String, String>>,
    /// Bucket starts, in result order.
    pub buckets: Vec<DateTime<Utc>>,
    /// Every status/page request it answered, in order.
    pub polls: Vec<SimPoll>,
    /// The buckets whose values are planted anomalies, when set by
    /// [`Simulator::set_aggregation_anomalies`]; else about one in 150 of each series.
    pub anomalies: Option<BTreeSet<DateTime<Utc>>>,
}

/// One answered `GET /api/v2/analytics/query/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimPoll {
    /// Simulated time of the request.
    pub at: DateTime<Utc>,
    pub offset: u64,
    pub limit: u64,
    /// The status answered.
    pub status: &'static str,
    /// Result rows in the answer.
    pub rows: u64,
}

impl SimQuery {
    /// Result rows in all.
    pub fn rows(&self) -> usize {
        self.series.len() * self.buckets.len()
    }

    fn status(&self, now: DateTime<Utc>) -> &'static str {
        let pending_until = self.submitted_at + (self.done_at - self.submitted_at) / 3;
        if now < pending_until {
            "PENDING"
        } else if now < self.done_at {
            "RUNNING"
        } else if self.error.is_some() {
            "FAILED"
        } else {
            "COMPLETED"
        }
    }

    fn running(&self, now: DateTime<Utc>) -> bool {
        now < self.done_at
    }
}

/// One result row of the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimAggRow {
    pub bucket: DateTime<Utc>,
    pub dimensions: BTreeMap<String, String>,
    /// (metric, aggregation, value), in the query's order.
    pub values: Vec<(String, String, f64)>,
}

/// What the aggregation API was asked and how it answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimAggregationStats {
    /// Queries accepted (202).
    pub submitted: u64,
    /// The most queries running at once.
    pub max_running: usize,
    /// Submissions refused with 429 because five were running.
    pub refused_running: u64,
}

/// The aggregation API's state and switches.
#[derive(Debug)]
pub(crate) struct AggregationState {
    queries: BTreeMap<String, SimQuery>,
    next_id: u64,
    duration: TimeDelta,
    retry_after: Option<u64>,
    total_skew: i64,
    fail_next: VecDeque<String>,
    anomalies: Option<BTreeSet<DateTime<Utc>>>,
    pub stats: SimAggregationStats,
}

impl Default for AggregationState {
    fn default() -> Self {
        AggregationState {
            queries: BTreeMap::new(),
            next_id: 1,
            duration: TimeDelta::seconds(2),
            retry_after: None,
            total_skew: 0,
            fail_next: VecDeque::new(),
            anomalies: None,
            stats: SimAggregationStats::default(),
        }
    }
}

impl Simulator {
    /// How long (simulated time) queries submitted from now on work before they
    /// complete: PENDING for the first third, RUNNING for the rest.
    pub fn set_aggregation_duration(&self, duration: std::time::Duration) {
        self.lock().aggregation.duration = TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX);
    }

    /// PENDING and RUNNING answers carry `Retry-After: secs` (`None`: no header).
    pub fn set_aggregation_retry_after(&self, secs: Option<u64>) {
        self.lock().aggregation.retry_after = secs;
    }

    /// The `total` every answer reports is the true row count plus `skew`, so a client
    /// that checks completeness sees a disagreement.
    pub fn set_aggregation_total_skew(&self, skew: i64) {
        self.lock().aggregation.total_skew = skew;
    }

    /// Queries submitted from now on plant their anomalies (three times the usual value)
    /// at exactly these buckets, in every series, instead of about one bucket in 150
    /// (`None`: as before).
    pub fn set_aggregation_anomalies(&self, buckets: Option<Vec<DateTime<Utc>>>) {
        self.lock().aggregation.anomalies = buckets.map(|b| b.into_iter().collect());
    }

    /// The next `count` queries submitted end FAILED with `error` instead of COMPLETED.
    pub fn fail_next_aggregations(&self, count: u32, error: &str) {
        let mut st = self.lock();
        st.aggregation
            .fail_next
            .extend(std::iter::repeat_n(error.to_owned(), count as usize));
    }

    /// Forgets every query, as when the platform expires them: later requests for
    /// them are 404.
    pub fn forget_aggregations(&self) {
        self.lock().aggregation.queries.clear();
    }

    /// Every query still known, in id order.
    pub fn aggregation_queries(&self) -> Vec<SimQuery> {
        self.lock().aggregation.queries.values().cloned().collect()
    }

    pub fn aggregation_stats(&self) -> SimAggregationStats {
        self.lock().aggregation.stats.clone()
    }

    /// The ground truth of query `id`: every row in result order.
    pub fn aggregation_rows(&self, id: &str) -> Option<Vec<SimAggRow>> {
        let seed = self.config().seed;
        let st = self.lock();
        let query = st.aggregation.queries.get(id)?;
        Some((0..query.rows()).map(|i| row(seed, query, i)).collect())
    }
}

pub(crate) fn aggregation_router() -> Router<Simulator> {
    Router::new()
        .route("/api/v2/analytics/query", post(submit))
        .route("/api/v2/analytics/query/{id}", get(page))
}

#[derive(Deserialize)]
struct MetricBody {
    name: String,
    aggregation: String,
}

#[derive(Deserialize)]
struct DimensionBody {
    name: String,
}

#[derive(Deserialize)]
struct FilterBody {
    #[serde(rename = "type")]
    kind: String,
    field: String,
    value: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimeSeriesBody {
    bucket_size: String,
    start: String,
    end: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryBody {
    metrics: Vec<MetricBody>,
    #[serde(default)]
    dimensions: Vec<DimensionBody>,
    #[serde(default)]
    filter: Option<FilterBody>,
    time_series: TimeSeriesBody,
}

fn instant(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_request(format!(
                "timeSeries.{name} `{text}` is not an ISO 8601 date-time"
            ))
        })
}

/// The bucket starts from the one holding `start` through `end` (inclusive).
fn buckets(
    size: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, ApiError> {
    let day = start
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let (first, step) = match size {
        "HOUR" => (
            day + TimeDelta::hours(i64::from(start.hour())),
            TimeDelta::hours(1),
        ),
        "DAY" => (day, TimeDelta::days(1)),
        // Weeks start on Monday.
        "WEEK" => (
            day - TimeDelta::days(i64::from(start.weekday().num_days_from_monday())),
            TimeDelta::weeks(1),
        ),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown timeSeries.bucketSize `{other}`; expected HOUR, DAY or WEEK"
            )));
        }
    };
    let mut out = Vec::new();
    let mut at = first;
    while at <= end {
        out.push(at);
        at += step;
    }
    Ok(out)
}

/// The values of `dimension` in this tenant, sorted.
fn dimension_values(sim: &Simulator, dimension: &str) -> Option<Vec<String>> {
    let st = sim.lock();
    let values: BTreeSet<String> = match dimension {
        "group.id" => st
            .tenant
            .agents
            .values()
            .map(|a| a.team_id.clone())
            .collect(),
        "channel" => st
            .lines
            .skills
            .iter()
            .map(|s| s.media_type.clone())
            .collect(),
        "skill.id" => st.lines.skills.iter().map(|s| s.id.clone()).collect(),
        _ => return None,
    };
    Some(values.into_iter().collect())
}

async fn submit(State(sim): State<Simulator>, body: Bytes) -> Result<Response, ApiError> {
    let body: QueryBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid query body: {e}")))?;
    if body.metrics.is_empty() || body.metrics.len() > MAX_METRICS {
        return Err(ApiError::bad_request(format!(
            "metrics: between 1 and {MAX_METRICS} metrics, got {}",
            body.metrics.len()
        )));
    }
    if body.dimensions.len() > MAX_DIMENSIONS {
        return Err(ApiError::bad_request(format!(
            "dimensions: at most {MAX_DIMENSIONS}, got {}",
            body.dimensions.len()
        )));
    }
    for m in &body.metrics {
        if !METRICS.contains(&m.name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "metrics: unknown metric `{}`; known: {}",
                m.name,
                METRICS.join(", ")
            )));
        }
        if !AGGREGATIONS.contains(&m.aggregation.as_str()) {
            return Err(ApiError::bad_request(format!(
                "metrics: unknown aggregation `{}`; known: {}",
                m.aggregation,
                AGGREGATIONS.join(", ")
            )));
        }
    }
    let start = instant("start", &body.time_series.start)?;
    let end = instant("end", &body.time_series.end)?;
    if end <= start {
        return Err(ApiError::bad_request("timeSeries.end must be after start"));
    }
    if end - start > TimeDelta::days(MAX_DAYS) {
        return Err(ApiError::bad_request(format!(
            "timeSeries: the range may span at most {MAX_DAYS} days"
        )));
    }
    let buckets = buckets(&body.time_series.bucket_size, start, end)?;
    let mut series = vec![BTreeMap::new()];
    let dimensions: Vec<String> = body.dimensions.into_iter().map(|d| d.name).collect();
    for dimension in &dimensions {
        let mut values = dimension_values(&sim, dimension).ok_or_else(|| {
            ApiError::bad_request(format!(
                "dimensions: unknown dimension `{dimension}`; known: {}",
                DIMENSIONS.join(", ")
            ))
        })?;
        if let Some(filter) = &body.filter
            && filter.field == *dimension
        {
            let wanted = match &filter.value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            values.retain(|v| *v == wanted);
        }
        series = series
            .into_iter()
            .flat_map(|s| {
                values.iter().map(move |v| {
                    let mut s = s.clone();
                    s.insert(dimension.clone(), v.clone());
                    s
                })
            })
            .collect();
    }
    if let Some(filter) = &body.filter {
        if filter.kind != "equals" {
            return Err(ApiError::bad_request(format!(
                "filter: unknown type `{}`; expected equals",
                filter.kind
            )));
        }
        if !DIMENSIONS.contains(&filter.field.as_str()) {
            return Err(ApiError::bad_request(format!(
                "filter: unknown field `{}`; known: {}",
                filter.field,
                DIMENSIONS.join(", ")
            )));
        }
    }

    let now = sim.clock().now();
    let mut st = sim.lock();
    let agg = &mut st.aggregation;
    let running: Vec<DateTime<Utc>> = agg
        .queries
        .values()
        .filter(|q| q.running(now))
        .map(|q| q.done_at)
        .collect();
    if running.len() >= MAX_RUNNING {
        agg.stats.refused_running += 1;
        let first_done = running.iter().min().copied().unwrap_or(now);
        let wait = (first_done - now).num_milliseconds().max(0) as u64;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_queries",
            format!("at most {MAX_RUNNING} queries may run at once per tenant"),
        )
        .retry_after(wait.div_ceil(1000).max(1)));
    }
    let id = format!("qry_{:06}", agg.next_id);
    agg.next_id += 1;
    let error = agg.fail_next.pop_front();
    let query = SimQuery {
        id: id.clone(),
        metrics: body
            .metrics
            .into_iter()
            .map(|m| (m.name, m.aggregation))
            .collect(),
        dimensions,
        submitted_at: now,
        done_at: now + agg.duration,
        error,
        series,
        buckets,
        polls: Vec::new(),
        anomalies: agg.anomalies.clone(),
    };
    agg.queries.insert(id.clone(), query);
    agg.stats.submitted += 1;
    agg.stats.max_running = agg.stats.max_running.max(running.len() + 1);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"id": id, "status": "PENDING"})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct PageParams {
    limit: Option<u64>,
    offset: Option<u64>,
}

async fn page(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    params: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let offset = params.offset.unwrap_or(0);
    let now = sim.clock().now();
    let seed = sim.config().seed;
    let mut st = sim.lock();
    let agg = &mut st.aggregation;
    let (skew, retry_after) = (agg.total_skew, agg.retry_after);
    let query = agg
        .queries
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found(format!("unknown query {id}")))?;
    let status = query.status(now);
    let mut poll = SimPoll {
        at: now,
        offset,
        limit,
        status,
        rows: 0,
    };
    let mut body = json!({"status": status, "error": query.error, "total": null,
                          "results": []});
    if status == "COMPLETED" {
        let rows = query.rows() as u64;
        body["total"] = json!((rows as i64 + skew).max(0));
        let end = offset.saturating_add(limit).min(rows);
        let results: Vec<Value> = (offset.min(end)..end)
            .map(|i| {
                let r = row(seed, query, i as usize);
                json!({
                    "timeSeries": ts(r.bucket),
                    "dimensions": r.dimensions,
                    "metrics": r.values.iter()
                        .map(|(name, agg, value)| json!({"name": name, "aggregation": agg,
                                                         "value": value}))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        poll.rows = results.len() as u64;
        body["results"] = Value::Array(results);
    }
    query.polls.push(poll);
    let mut response = axum::Json(body).into_response();
    if let Some(secs) = retry_after
        && matches!(status, "PENDING" | "RUNNING")
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Ok(response)
}

/// A number in [0, 1) from the hash of `parts`: the same inputs, the same number.
fn unit(parts: impl Hash) -> f64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Row `i` of `query`.
fn row(seed: u64, query: &SimQuery, i: usize) -> SimAggRow {
    let series = &query.series[i % query.series.len()];
    let bucket = query.buckets[i / query.series.len()];
    let key: Vec<(&String, &String)> = series.iter().collect();
    // Mondays busy, weekends quiet.
    let weekly =
        [1.35, 1.1, 1.0, 1.0, 0.95, 0.55, 0.45][bucket.weekday().num_days_from_monday() as usize];
    // Hourly buckets follow the working day.
    let daily = if query.buckets.len() > 1
        && (query.buckets[1] - query.buckets[0]) == TimeDelta::hours(1)
    {
        0.3 + (std::f64::consts::PI * (f64::from(bucket.hour()) - 6.0) / 14.0)
            .sin()
            .max(0.0)
    } else {
        1.0
    };
    // A few planted anomalies: about one bucket in 150 of each series is three times
    // its usual value.
    let planted = if match &query.anomalies {
        Some(buckets) => buckets.contains(&bucket),
        None => unit((seed, "anomaly", &key, bucket.timestamp())) < 1.0 / 150.0,
    } {
        3.0
    } else {
        1.0
    };
    let values = query
        .metrics
        .iter()
        .map(|(name, aggregation)| {
            let base = match name.as_str() {
                "duration" => 300.0,
                "count" => 120.0 * weekly * daily,
                _ => 0.75,
            };
            let scale = match aggregation.as_str() {
                "sum" => 40.0,
                "min" => 0.2,
                "max" => 3.0,
                "pct" => 100.0,
                _ => 1.0,
            };
            let noise = 0.9 + 0.2 * unit((seed, name, aggregation, &key, bucket.timestamp()));
            let seasonal = if name == "duration" {
                weekly.sqrt()
            } else {
                1.0
            };
            let value = base * scale * seasonal * noise * planted;
            // Two decimals, as a platform rounds its aggregates.
            (
                name.clone(),
                aggregation.clone(),
                (value * 100.0).round() / 100.0,
            )
        })
        .collect();
    SimAggRow {
        bucket,
        dimensions: series.clone(),
        values,
    }
}
