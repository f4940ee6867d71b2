//! Platform aggregation queries (docs/platform-api.md, "Aggregation queries"): the
//! payload and its checks, the answers, and [`Aggregations`], which drives one
//! extraction from submit to the last page.
//!
//! The platform's limits (at most 10 metrics, 5 dimensions, a 365-day range, ISO dates,
//! a known bucket size) are checked before anything is sent, each failure naming the
//! payload field. An extraction then:
//! - waits for one of `max_concurrent` slots (the platform runs at most 5 queries per
//!   tenant and answers 429 past that): a query that would exceed the limit is queued
//!   here, never sent;
//! - submits (202 + id), and hands the id to its sink before polling, so a restart
//!   resumes the same query instead of paying for a new one;
//! - polls while PENDING/RUNNING, the wait doubling from `poll_interval` up to
//!   `poll_max_interval` and never shorter than a `Retry-After` the answer carries;
//! - pages with limit/offset until a short page, each page handed to the sink;
//! - checks completeness: the rows received must be the `total` the platform reported.
//!
//! Every request goes through the client, so through the shared budget (in the caller's
//! lane), the retry executor, and the token cache: the token is asked for on every
//! request and renewed when it expires or is revoked, never held across the loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::{ContactCenter, CxoneError};

/// The most metrics one query may ask for.
pub const MAX_METRICS: usize = 10;
/// The most dimensions one query may group by.
pub const MAX_DIMENSIONS: usize = 5;
/// The widest range of one query, in days.
pub const MAX_RANGE_DAYS: i64 = 365;
/// The bucket sizes the platform knows.
pub const BUCKET_SIZES: [&str; 3] = ["HOUR", "DAY", "WEEK"];
/// The most queries the platform runs at once per tenant (more are answered 429).
pub const PLATFORM_MAX_CONCURRENT: usize = 5;
/// What [`ContactCenter`] calls the feature, for "not offered" errors.
pub const FEATURE: &str = "platform analytics (aggregation queries)";

/// A metric and how it is aggregated: `{"name":"duration","aggregation":"avg"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggMetric {
    pub name: String,
    pub aggregation: String,
}

/// `{"type":"equals","field":"group.id","value":"grp_001"}`: the one filter the contract
/// describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AggFilter {
    pub field: String,
    pub value: String,
}

/// An aggregation query as it will be sent. Dates stay text until checked, so a
/// malformed one is refused by [`AggregationQuery::validate`] naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregationQuery {
    pub metrics: Vec<AggMetric>,
    pub dimensions: Vec<String>,
    pub filter: Option<AggFilter>,
    /// `HOUR`, `DAY` or `WEEK`.
    pub bucket_size: String,
    /// RFC 3339 (ISO 8601) instants; `end` is the last instant included.
    pub start: String,
    pub end: String,
}

/// A payload the platform would refuse, naming the payload field at fault
/// (`metrics`, `dimensions`, `filter`, `timeSeries.bucketSize`, `timeSeries.start`,
/// `timeSeries.end`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidQuery {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidQuery {
    InvalidQuery {
        field,
        message: message.into(),
    }
}

impl AggregationQuery {
    /// Checks the platform's limits; nothing is sent for a query that fails them.
    pub fn validate(&self) -> Result<(), InvalidQuery> {
        if self.metrics.is_empty() {
            return Err(invalid("metrics", "at least one metric is needed"));
        }
        if self.metrics.len() > MAX_METRICS {
            return Err(invalid(
                "metrics",
                format!(
                    "the platform takes at most {MAX_METRICS} metrics a query, got {}",
                    self.metrics.len()
                ),
            ));
        }
        if let Some(m) = self
            .metrics
            .iter()
            .find(|m| m.name.trim().is_empty() || m.aggregation.trim().is_empty())
        {
            return Err(invalid(
                "metrics",
                format!(
                    "a metric needs a name and an aggregation, got `{}:{}`",
                    m.name, m.aggregation
                ),
            ));
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            return Err(invalid(
                "dimensions",
                format!(
                    "the platform takes at most {MAX_DIMENSIONS} dimensions a query, got {}",
                    self.dimensions.len()
                ),
            ));
        }
        if self.dimensions.iter().any(|d| d.trim().is_empty()) {
            return Err(invalid("dimensions", "a dimension name is empty"));
        }
        if let Some(filter) = &self.filter
            && filter.field.trim().is_empty()
        {
            return Err(invalid("filter", "the filter's field is empty"));
        }
        if !BUCKET_SIZES.contains(&self.bucket_size.as_str()) {
            return Err(invalid(
                "timeSeries.bucketSize",
                format!(
                    "unknown bucket size `{}`; expected one of: {}",
                    self.bucket_size,
                    BUCKET_SIZES.join(", ")
                ),
            ));
        }
        let start = iso_instant("timeSeries.start", &self.start)?;
        let end = iso_instant("timeSeries.end", &self.end)?;
        if end <= start {
            return Err(invalid(
                "timeSeries.end",
                format!("end ({}) must be after start ({})", self.end, self.start),
            ));
        }
        if end - start > chrono::Duration::days(MAX_RANGE_DAYS) {
            return Err(invalid(
                "timeSeries.end",
                format!(
                    "the range spans more than {MAX_RANGE_DAYS} days ({} to {}); the platform \
                     takes at most {MAX_RANGE_DAYS}",
                    self.start, self.end
                ),
            ));
        }
        Ok(())
    }

    /// The JSON body of `POST /api/v2/analytics/query` (without limit and offset, which
    /// belong to the result pages).
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "metrics": self.metrics,
            "dimensions": self.dimensions.iter()
                .map(|name| serde_json::json!({"name": name}))
                .collect::<Vec<_>>(),
            "timeSeries": {"bucketSize": self.bucket_size, "start": self.start,
                           "end": self.end},
        });
        if let Some(filter) = &self.filter {
            body["filter"] = serde_json::json!({"type": "equals", "field": filter.field,
                                                "value": filter.value});
        }
        body
    }
}

fn iso_instant(field: &'static str, text: &str) -> Result<DateTime<Utc>, InvalidQuery> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| {
            invalid(
                field,
                format!("`{text}` is not an ISO 8601 date-time such as 2026-10-01T00:00:00Z ({e})"),
            )
        })
}

/// Where a query stands on the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

impl QueryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryStatus::Pending => "PENDING",
            QueryStatus::Running => "RUNNING",
            QueryStatus::Completed => "COMPLETED",
            QueryStatus::Failed => "FAILED",
        }
    }
}

/// One metric value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    pub name: String,
    pub aggregation: String,
    pub value: Option<f64>,
}

/// One result row: a bucket of one combination of dimension values.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregationRow {
    pub bucket: DateTime<Utc>,
    pub dimensions: BTreeMap<String, String>,
    pub metrics: Vec<MetricValue>,
}

/// One answer of `GET /api/v2/analytics/query/{id}?limit&offset`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregationPage {
    pub status: QueryStatus,
    /// The platform's error of a FAILED query.
    pub error: Option<String>,
    /// Result rows in all, once the platform knows.
    pub total: Option<u64>,
    pub rows: Vec<AggregationRow>,
    /// The answer's `Retry-After`: the earliest the next poll should come.
    pub retry_after: Option<Duration>,
}

// ---- Wire types (field names exactly as docs/platform-api.md writes them). ----

#[derive(Deserialize)]
pub(crate) struct SubmitAnswer {
    pub id: String,
}

#[derive(Deserialize)]
pub(crate) struct QueryAnswer {
    status: String,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    total: Option<serde_json::Value>,
    #[serde(default)]
    results: Vec<RowJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RowJson {
    time_series: String,
    #[serde(default)]
    dimensions: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    metrics: Vec<MetricJson>,
}

#[derive(Deserialize)]
struct MetricJson {
    name: String,
    #[serde(default)]
    aggregation: String,
    #[serde(default)]
    value: Option<serde_json::Value>,
}

/// A JSON scalar as text: ids may be numbers on some tenants.
fn scalar_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A number that may arrive as a string.
fn number(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl QueryAnswer {
    pub(crate) fn into_page(
        self,
        retry_after: Option<Duration>,
    ) -> Result<AggregationPage, CxoneError> {
        let status = match self.status.to_ascii_uppercase().as_str() {
            "PENDING" => QueryStatus::Pending,
            "RUNNING" => QueryStatus::Running,
            "COMPLETED" => QueryStatus::Completed,
            "FAILED" => QueryStatus::Failed,
            other => {
                return Err(CxoneError::Decode(format!(
                    "unknown aggregation query status `{other}`"
                )));
            }
        };
        let total = match &self.total {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(
                number(value)
                    .filter(|n| *n >= 0.0 && n.fract() == 0.0)
                    .ok_or_else(|| {
                        CxoneError::Decode(format!("aggregation total `{value}` is not a count"))
                    })? as u64,
            ),
        };
        let error = match self.error {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        };
        let rows = self
            .results
            .into_iter()
            .map(|row| {
                let bucket = DateTime::parse_from_rfc3339(&row.time_series)
                    .map_err(|e| {
                        CxoneError::Decode(format!(
                            "result timeSeries `{}` is not a date-time: {e}",
                            row.time_series
                        ))
                    })?
                    .with_timezone(&Utc);
                Ok(AggregationRow {
                    bucket,
                    dimensions: row
                        .dimensions
                        .iter()
                        .map(|(k, v)| (k.clone(), scalar_text(v)))
                        .collect(),
                    metrics: row
                        .metrics
                        .into_iter()
                        .map(|m| MetricValue {
                            value: m.value.as_ref().and_then(number),
                            name: m.name,
                            aggregation: m.aggregation,
                        })
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, CxoneError>>()?;
        Ok(AggregationPage {
            status,
            error,
            total,
            rows,
            retry_after,
        })
    }
}

// ---- The extraction driver. ----

/// How extractions are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractionSettings {
    /// Queries in flight at once per tenant (from submit to the last page).
    pub max_concurrent: usize,
    /// Result rows asked for per page (`limit`).
    pub page_size: u32,
    /// The first wait between polls; it doubles up to `poll_max_interval`.
    pub poll_interval: Duration,
    pub poll_max_interval: Duration,
}

impl Default for ExtractionSettings {
    fn default() -> Self {
        ExtractionSettings {
            max_concurrent: PLATFORM_MAX_CONCURRENT,
            page_size: 500,
            poll_interval: Duration::from_secs(1),
            poll_max_interval: Duration::from_secs(30),
        }
    }
}

/// Where an extraction's progress goes; the analytics job stores each step durably.
pub trait ExtractionSink {
    /// A slot was free: the extraction starts (it may have waited queued until now).
    fn started(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// The platform accepted a new query under `query_id` (rows of any earlier one
    /// are void).
    fn submitted(&mut self, query_id: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// The platform's status and total as last seen.
    fn progress(
        &mut self,
        status: QueryStatus,
        total: Option<u64>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// A page of rows, starting at `offset` of the result.
    fn page(
        &mut self,
        offset: u64,
        rows: Vec<AggregationRow>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A query submitted before (a restart): its id and the rows already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub query_id: String,
    pub received: u64,
}

/// Why an extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractionError {
    #[error(transparent)]
    Invalid(#[from] InvalidQuery),
    #[error(transparent)]
    Platform(#[from] CxoneError),
    #[error("the platform failed the aggregation query: {0}")]
    Failed(String),
    #[error(
        "incomplete result: the platform reported a total of {total} rows but {received} were received"
    )]
    Incomplete { received: u64, total: u64 },
    #[error(
        "the platform completed the query without reporting a total, so its completeness cannot be checked ({received} rows received)"
    )]
    NoTotal { received: u64 },
    #[error(transparent)]
    Sink(anyhow::Error),
}

/// Runs aggregation extractions against one tenant, at most `max_concurrent` at once.
/// Cheap to clone; share one per tenant.
#[derive(Clone)]
pub struct Aggregations {
    platform: Arc<dyn ContactCenter>,
    slots: Arc<Semaphore>,
    settings: ExtractionSettings,
}

impl Aggregations {
    pub fn new(platform: Arc<dyn ContactCenter>, settings: ExtractionSettings) -> Aggregations {
        Aggregations {
            platform,
            slots: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
            settings,
        }
    }

    /// Whether the platform offers aggregation queries at all (`NotOffered` when not).
    pub fn offered(&self) -> Result<(), CxoneError> {
        self.platform.aggregation_offered()
    }

    /// Runs `query` to its last page (or resumes `resume`), handing every step to
    /// `sink`; returns the number of rows of the result.
    pub async fn extract(
        &self,
        query: &AggregationQuery,
        resume: Option<Resume>,
        sink: &mut impl ExtractionSink,
    ) -> Result<u64, ExtractionError> {
        query.validate()?;
        self.platform.aggregation_offered()?;
        // Held until the last page: the platform counts a query until it is done.
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the slots are never closed");
        sink.started().await.map_err(ExtractionError::Sink)?;
        let limit = self.settings.page_size.max(1);
        let (query_id, mut offset, mut page) = match resume {
            Some(resume) => {
                match self
                    .platform
                    .aggregation_page(&resume.query_id, limit, resume.received)
                    .await
                {
                    Ok(page) => (resume.query_id, resume.received, page),
                    // The platform forgot the query (expired): ask again from scratch.
                    Err(CxoneError::NotFound { .. }) => {
                        tracing::info!(
                            query_id = %resume.query_id,
                            "the platform no longer knows the aggregation query; resubmitting"
                        );
                        self.submit(query, sink, limit).await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => self.submit(query, sink, limit).await?,
        };
        let mut wait = self.settings.poll_interval;
        loop {
            sink.progress(page.status, page.total)
                .await
                .map_err(ExtractionError::Sink)?;
            match page.status {
                QueryStatus::Completed => break,
                QueryStatus::Failed => {
                    return Err(ExtractionError::Failed(
                        page.error.unwrap_or_else(|| "no error given".to_owned()),
                    ));
                }
                QueryStatus::Pending | QueryStatus::Running => {
                    tokio::time::sleep(wait.max(page.retry_after.unwrap_or_default())).await;
                    wait = (wait * 2).min(self.settings.poll_max_interval.max(wait));
                    page = self
                        .platform
                        .aggregation_page(&query_id, limit, offset)
                        .await?;
                }
            }
        }
        let total = page.total;
        loop {
            let n = page.rows.len() as u64;
            if let Some(total) = total
                && offset + n > total
            {
                return Err(ExtractionError::Incomplete {
                    received: offset + n,
                    total,
                });
            }
            if n > 0 {
                sink.page(offset, std::mem::take(&mut page.rows))
                    .await
                    .map_err(ExtractionError::Sink)?;
            }
            offset += n;
            if n < u64::from(limit) {
                break;
            }
            page = self
                .platform
                .aggregation_page(&query_id, limit, offset)
                .await?;
        }
        match total {
            Some(total) if total == offset => Ok(offset),
            Some(total) => Err(ExtractionError::Incomplete {
                received: offset,
                total,
            }),
            None => Err(ExtractionError::NoTotal { received: offset }),
        }
    }

    async fn submit(
        &self,
        query: &AggregationQuery,
        sink: &mut impl ExtractionSink,
        limit: u32,
    ) -> Result<(String, u64, AggregationPage), ExtractionError> {
        let id = self.platform.submit_aggregation(query).await?;
        sink.submitted(&id).await.map_err(ExtractionError::Sink)?;
        tokio::time::sleep(self.settings.poll_interval).await;
        let page = self.platform.aggregation_page(&id, limit, 0).await?;
        Ok((id, 0, page))
    }
}

impl std::fmt::Debug for Aggregations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregations")
            .field("settings", &self.settings)
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::cxone::{Agent, AgentFilter, AgentSnapshot, StateChange};
    use crate::domain::{BreakStatus, Schedule};

    fn query() -> AggregationQuery {
        AggregationQuery {
            metrics: vec![AggMetric {
                name: "duration".into(),
                aggregation: "avg".into(),
            }],
            dimensions: vec!["group.id".into()],
            filter: None,
            bucket_size: "DAY".into(),
            start: "2026-10-01T00:00:00Z".into(),
            end: "2026-10-31T23:59:59Z".into(),
        }
    }

    #[test]
    fn every_platform_limit_is_refused_naming_its_field() {
        type Breaker = fn(&mut AggregationQuery);
        let metric = |n: usize| AggMetric {
            name: format!("m{n}"),
            aggregation: "sum".into(),
        };
        let cases: [(&str, Breaker); 10] = [
            ("metrics", |q| q.metrics.clear()),
            ("metrics", |q| {
                q.metrics = (0..11)
                    .map(|n| AggMetric {
                        name: format!("m{n}"),
                        aggregation: "sum".into(),
                    })
                    .collect()
            }),
            ("metrics", |q| q.metrics[0].aggregation = " ".into()),
            ("dimensions", |q| {
                q.dimensions = (0..6).map(|n| format!("d{n}")).collect()
            }),
            ("filter", |q| {
                q.filter = Some(AggFilter {
                    field: String::new(),
                    value: "x".into(),
                })
            }),
            ("timeSeries.bucketSize", |q| q.bucket_size = "MONTH".into()),
            ("timeSeries.start", |q| q.start = "01/10/2026".into()),
            ("timeSeries.end", |q| q.end = "2026-13-01T00:00:00Z".into()),
            ("timeSeries.end", |q| q.end = q.start.clone()),
            ("timeSeries.end", |q| {
                q.start = "2025-01-01T00:00:00Z".into();
                q.end = "2026-01-01T00:00:01Z".into();
            }),
        ];
        for (field, break_it) in cases {
            let mut q = query();
            break_it(&mut q);
            let error = q.validate().unwrap_err();
            assert_eq!(error.field, field, "{error}");
            assert!(error.to_string().starts_with(field));
        }
        // The limits themselves are allowed.
        let mut at_limits = query();
        at_limits.metrics = (0..MAX_METRICS).map(metric).collect();
        at_limits.dimensions = (0..MAX_DIMENSIONS).map(|n| format!("d{n}")).collect();
        at_limits.start = "2025-01-01T00:00:00Z".into();
        at_limits.end = "2026-01-01T00:00:00Z".into();
        assert_eq!(at_limits.validate(), Ok(()));
    }

    #[test]
    fn the_body_is_the_contracts() {
        let mut q = query();
        q.filter = Some(AggFilter {
            field: "group.id".into(),
            value: "grp_001".into(),
        });
        assert_eq!(
            q.body(),
            serde_json::json!({
                "metrics": [{"name": "duration", "aggregation": "avg"}],
                "dimensions": [{"name": "group.id"}],
                "filter": {"type": "equals", "field": "group.id", "value": "grp_001"},
                "timeSeries": {"bucketSize": "DAY", "start": "2026-10-01T00:00:00Z",
                               "end": "2026-10-31T23:59:59Z"}
            })
        );
    }

    #[test]
    fn answers_accept_numbers_as_strings_and_ids_as_numbers() {
        let answer: QueryAnswer = serde_json::from_value(serde_json::json!({
            "status": "COMPLETED", "error": null, "total": "2", "extra": 1,
            "results": [
                {"timeSeries": "2026-10-01T00:00:00Z", "dimensions": {"group.id": 7},
                 "metrics": [{"name": "duration", "aggregation": "avg", "value": "312.5"}]},
                {"timeSeries": "2026-10-02T00:00:00Z", "dimensions": {"group.id": "g"},
                 "metrics": [{"name": "duration", "aggregation": "avg", "value": null}]}
            ]
        }))
        .unwrap();
        let page = answer.into_page(None).unwrap();
        assert_eq!(page.status, QueryStatus::Completed);
        assert_eq!(page.total, Some(2));
        assert_eq!(page.rows[0].dimensions["group.id"], "7");
        assert_eq!(page.rows[0].metrics[0].value, Some(312.5));
        assert_eq!(page.rows[1].metrics[0].value, None);
    }

    /// A platform whose queries answer from a script: each query is PENDING for
    /// `polls` polls, then serves `rows` rows (reporting `total`).
    struct Scripted {
        polls: u32,
        rows: u64,
        total: u64,
        retry_after: Option<Duration>,
        state: Mutex<ScriptState>,
    }

    #[derive(Default)]
    struct ScriptState {
        next_id: u32,
        /// Per query: polls answered so far, and whether its last page was served.
        queries: Vec<(u32, bool)>,
        open: usize,
        max_open: usize,
        /// (instant, offset) of every page request.
        requests: Vec<(tokio::time::Instant, u64)>,
        failures: VecDeque<CxoneError>,
    }

    impl Scripted {
        fn new(polls: u32, rows: u64, total: u64) -> Scripted {
            Scripted {
                polls,
                rows,
                total,
                retry_after: None,
                state: Mutex::default(),
            }
        }
    }

    fn row(n: u64) -> AggregationRow {
        AggregationRow {
            bucket: DateTime::from_timestamp(n as i64 * 3600, 0).unwrap(),
            dimensions: BTreeMap::new(),
            metrics: vec![MetricValue {
                name: "duration".into(),
                aggregation: "avg".into(),
                value: Some(n as f64),
            }],
        }
    }

    #[async_trait]
    impl ContactCenter for Scripted {
        async fn list_agents(&self, _: &AgentFilter) -> Result<Vec<Agent>, CxoneError> {
            unimplemented!()
        }
        async fn agent_state(&self, _: &str) -> Result<AgentSnapshot, CxoneError> {
            unimplemented!()
        }
        async fn set_agent_state(&self, _: StateChange<'_>) -> Result<AgentSnapshot, CxoneError> {
            unimplemented!()
        }
        async fn schedule(&self, _: &str) -> Result<Schedule, CxoneError> {
            unimplemented!()
        }
        async fn break_status(&self, _: &str) -> Result<BreakStatus, CxoneError> {
            unimplemented!()
        }
        async fn check_access(&self) -> Result<(), CxoneError> {
            Ok(())
        }
        fn aggregation_offered(&self) -> Result<(), CxoneError> {
            Ok(())
        }
        async fn submit_aggregation(&self, q: &AggregationQuery) -> Result<String, CxoneError> {
            q.validate().expect("only valid queries are sent");
            let mut st = self.state.lock().unwrap();
            let id = st.next_id;
            st.next_id += 1;
            st.queries.push((0, false));
            st.open += 1;
            st.max_open = st.max_open.max(st.open);
            Ok(id.to_string())
        }
        async fn aggregation_page(
            &self,
            id: &str,
            limit: u32,
            offset: u64,
        ) -> Result<AggregationPage, CxoneError> {
            // Let other extractions run between calls, as a network would.
            tokio::task::yield_now().await;
            let mut st = self.state.lock().unwrap();
            st.requests.push((tokio::time::Instant::now(), offset));
            if let Some(e) = st.failures.pop_front() {
                return Err(e);
            }
            let q: usize = id.parse().unwrap();
            let (polls, _) = st.queries[q];
            if polls < self.polls {
                st.queries[q].0 += 1;
                return Ok(AggregationPage {
                    status: QueryStatus::Pending,
                    error: None,
                    total: None,
                    rows: vec![],
                    retry_after: self.retry_after,
                });
            }
            let end = (offset + u64::from(limit)).min(self.rows);
            if end - offset < u64::from(limit) && !st.queries[q].1 {
                st.queries[q].1 = true;
                st.open -= 1;
            }
            Ok(AggregationPage {
                status: QueryStatus::Completed,
                error: None,
                total: Some(self.total),
                rows: (offset..end).map(row).collect(),
                retry_after: None,
            })
        }
    }

    #[derive(Default)]
    struct Collected {
        started: bool,
        ids: Vec<String>,
        statuses: Vec<QueryStatus>,
        rows: Vec<(u64, usize)>,
    }

    impl ExtractionSink for Collected {
        async fn started(&mut self) -> anyhow::Result<()> {
            self.started = true;
            Ok(())
        }
        async fn submitted(&mut self, id: &str) -> anyhow::Result<()> {
            self.ids.push(id.to_owned());
            Ok(())
        }
        async fn progress(&mut self, s: QueryStatus, _: Option<u64>) -> anyhow::Result<()> {
            self.statuses.push(s);
            Ok(())
        }
        async fn page(&mut self, offset: u64, rows: Vec<AggregationRow>) -> anyhow::Result<()> {
            self.rows.push((offset, rows.len()));
            Ok(())
        }
    }

    fn settings(page_size: u32) -> ExtractionSettings {
        ExtractionSettings {
            max_concurrent: 5,
            page_size,
            poll_interval: Duration::from_millis(100),
            poll_max_interval: Duration::from_millis(800),
        }
    }

    fn driver(platform: Scripted, page_size: u32) -> (Aggregations, Arc<Scripted>) {
        let platform = Arc::new(platform);
        (
            Aggregations::new(platform.clone(), settings(page_size)),
            platform,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn pages_follow_each_other_until_a_short_page() {
        let (aggregations, platform) = driver(Scripted::new(2, 1_234, 1_234), 500);
        let mut sink = Collected::default();
        let rows = aggregations
            .extract(&query(), None, &mut sink)
            .await
            .unwrap();
        assert_eq!(rows, 1_234);
        assert!(sink.started);
        assert_eq!(sink.ids, ["0"]);
        assert_eq!(sink.rows, [(0, 500), (500, 500), (1_000, 234)]);
        let offsets: Vec<u64> = platform
            .state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|r| r.1)
            .collect();
        // Two PENDING polls, then the first page comes with COMPLETED, then two more.
        assert_eq!(offsets, [0, 0, 0, 500, 1_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_of_whole_pages_ends_with_an_empty_page() {
        let (aggregations, _) = driver(Scripted::new(0, 1_000, 1_000), 500);
        let mut sink = Collected::default();
        assert_eq!(
            aggregations
                .extract(&query(), None, &mut sink)
                .await
                .unwrap(),
            1_000
        );
        assert_eq!(sink.rows, [(0, 500), (500, 500)]);
    }

    #[tokio::test(start_paused = true)]
    async fn polls_back_off_and_never_come_before_retry_after() {
        let mut platform = Scripted::new(5, 10, 10);
        platform.retry_after = Some(Duration::from_millis(300));
        let (aggregations, platform) = driver(platform, 500);
        let started = tokio::time::Instant::now();
        aggregations
            .extract(&query(), None, &mut Collected::default())
            .await
            .unwrap();
        let st = platform.state.lock().unwrap();
        let gaps: Vec<u128> = std::iter::once(started)
            .chain(st.requests.iter().map(|r| r.0))
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        // 100 ms before the first poll, then max(backoff 100·2ⁿ capped at 800, 300).
        assert_eq!(gaps, [100, 300, 300, 400, 800, 800]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_total_the_rows_disagree_with_fails_naming_both_numbers() {
        let (aggregations, _) = driver(Scripted::new(0, 1_200, 1_210), 500);
        let error = aggregations
            .extract(&query(), None, &mut Collected::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                ExtractionError::Incomplete {
                    received: 1_200,
                    total: 1_210
                }
            ),
            "{error}"
        );
        let text = error.to_string();
        assert!(text.contains("1210") && text.contains("1200"), "{text}");
        let (aggregations, _) = driver(Scripted::new(0, 1_200, 1_100), 500);
        let error = aggregations
            .extract(&query(), None, &mut Collected::default())
            .await
            .unwrap_err();
        assert!(
            matches!(error, ExtractionError::Incomplete { total: 1_100, .. }),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_query_sends_nothing() {
        let (aggregations, platform) = driver(Scripted::new(0, 1, 1), 500);
        let mut q = query();
        q.dimensions = (0..6).map(|n| format!("d{n}")).collect();
        let mut sink = Collected::default();
        let error = aggregations.extract(&q, None, &mut sink).await.unwrap_err();
        assert!(matches!(&error, ExtractionError::Invalid(e) if e.field == "dimensions"));
        assert!(!sink.started);
        let st = platform.state.lock().unwrap();
        assert_eq!((st.next_id, st.requests.len()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumed_extraction_pages_on_from_the_rows_it_had() {
        let (aggregations, platform) = driver(Scripted::new(0, 1_234, 1_234), 500);
        {
            // Query 0 was submitted before the restart.
            let mut st = platform.state.lock().unwrap();
            st.queries.push((0, false));
            st.next_id = 1;
            st.open = 1;
        }
        let mut sink = Collected::default();
        let resume = Resume {
            query_id: "0".into(),
            received: 500,
        };
        assert_eq!(
            aggregations
                .extract(&query(), Some(resume), &mut sink)
                .await
                .unwrap(),
            1_234
        );
        assert!(sink.ids.is_empty(), "nothing resubmitted");
        assert_eq!(sink.rows, [(500, 500), (1_000, 234)]);
        // A query the platform forgot is submitted again from the start.
        let mut sink = Collected::default();
        platform
            .state
            .lock()
            .unwrap()
            .failures
            .push_back(CxoneError::NotFound {
                message: "unknown query".into(),
            });
        let resume = Resume {
            query_id: "0".into(),
            received: 500,
        };
        aggregations
            .extract(&query(), Some(resume), &mut sink)
            .await
            .unwrap();
        assert_eq!(sink.ids, ["1"]);
        assert_eq!(sink.rows[0], (0, 500));
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_max_concurrent_queries_are_in_flight() {
        let (aggregations, platform) = driver(Scripted::new(3, 700, 700), 500);
        let runs = (0..7).map(|_| {
            let aggregations = aggregations.clone();
            async move {
                aggregations
                    .extract(&query(), None, &mut Collected::default())
                    .await
            }
        });
        for result in futures::future::join_all(runs).await {
            assert_eq!(result.unwrap(), 700);
        }
        let st = platform.state.lock().unwrap();
        assert_eq!(st.next_id, 7);
        assert_eq!(st.max_open, 5, "five at once, the other two queued");
    }
}
