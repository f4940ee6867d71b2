//! What an analytics query asks for, checked before any work starts: the source, metrics
//! with their aggregation, dimensions, filters, range, bucket size and the trend knobs.
//!
//! Every error names the field it is about (`metrics`, `dimensions`, `filters`, `from`,
//! `to`, `bucket`, `window`, `z`), so the API answers 422 with that field and the CLI
//! prints it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cxone::AggregationQuery;
use crate::cxone::aggregation::{AggFilter, AggMetric};
use crate::domain::AgentState;
use crate::domain::trend::{Detector, Seasonality, TrendSettings};

/// Where the numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
// Published as `Source`, the schema name that clients generated from the document
// already use.
#[schema(as = Source)]
pub enum AnalyticsSource {
    /// The platform's aggregation queries.
    Platform,
    /// wfmd's own store (no platform call).
    History,
}

impl AnalyticsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AnalyticsSource::Platform => "platform",
            AnalyticsSource::History => "history",
        }
    }
}

/// The bucket size of the time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
    /// Weeks start on Monday 00:00 UTC.
    Week,
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;
/// 1970-01-05, the first Monday after the Unix epoch (a Thursday).
const FIRST_MONDAY_MS: i64 = 4 * DAY_MS;

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Week => "week",
        }
    }

    pub fn ms(self) -> i64 {
        match self {
            Bucket::Hour => HOUR_MS,
            Bucket::Day => DAY_MS,
            Bucket::Week => WEEK_MS,
        }
    }

    /// The start of the bucket holding `at_ms`.
    pub fn floor(self, at_ms: i64) -> i64 {
        match self {
            Bucket::Week => {
                (at_ms - FIRST_MONDAY_MS).div_euclid(WEEK_MS) * WEEK_MS + FIRST_MONDAY_MS
            }
            _ => at_ms.div_euclid(self.ms()) * self.ms(),
        }
    }

    /// The starts of every bucket overlapping `[from_ms, to_ms)`.
    pub fn starts(self, from_ms: i64, to_ms: i64) -> impl Iterator<Item = i64> {
        let step = self.ms();
        let first = self.floor(from_ms);
        (0..)
            .map(move |n| first + n * step)
            .take_while(move |&start| start < to_ms)
    }
}

impl FromStr for Bucket {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hour" => Ok(Bucket::Hour),
            "day" => Ok(Bucket::Day),
            "week" => Ok(Bucket::Week),
            _ => Err(format!(
                "unknown bucket `{s}`; expected one of: hour, day, week"
            )),
        }
    }
}

/// How the values of one bucket are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

impl Agg {
    pub const ALL: [Agg; 5] = [Agg::Sum, Agg::Avg, Agg::Min, Agg::Max, Agg::Count];

    pub fn as_str(self) -> &'static str {
        match self {
            Agg::Sum => "sum",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Count => "count",
        }
    }

    /// Combines `values`; `None` when there is none (except `count`, which is 0).
    pub fn apply(self, values: &[f64]) -> Option<f64> {
        if self == Agg::Count {
            return Some(values.len() as f64);
        }
        if values.is_empty() {
            return None;
        }
        Some(match self {
            Agg::Sum => values.iter().sum(),
            Agg::Avg => values.iter().sum::<f64>() / values.len() as f64,
            Agg::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Agg::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Agg::Count => unreachable!("handled above"),
        })
    }
}

impl FromStr for Agg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Agg::ALL
            .into_iter()
            .find(|agg| agg.as_str() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!("unknown aggregation `{s}`; expected one of: sum, avg, min, max, count")
            })
    }
}

/// The metrics of wfmd's own history.
pub const HISTORY_METRICS: [&str; 7] = [
    "idle_seconds",
    "state_seconds",
    "adherence_pct",
    "exceptions",
    "violations",
    "transitions",
    "latency_p95_ms",
];

/// The dimensions of wfmd's own history.
pub const HISTORY_DIMENSIONS: [&str; 2] = ["agent", "team"];

/// The filter fields of wfmd's own history.
pub const HISTORY_FILTERS: [&str; 3] = ["agent", "team", "state"];

/// The most days an hourly history query may span (each hour is computed from the raw
/// intervals; days and weeks come from the daily rollups).
pub const HISTORY_HOURLY_MAX_DAYS: i64 = 31;

/// The widest range of a history query.
pub const HISTORY_MAX_DAYS: i64 = 366;

/// A metric and its aggregation: `NAME:AGG`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricSpec {
    pub name: String,
    pub aggregation: String,
}

impl fmt::Display for MetricSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.aggregation)
    }
}

impl FromStr for MetricSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((name, agg)) if !name.trim().is_empty() && !agg.trim().is_empty() => {
                Ok(MetricSpec {
                    name: name.trim().to_owned(),
                    aggregation: agg.trim().to_ascii_lowercase(),
                })
            }
            _ => Err(format!(
                "metric `{s}` is not NAME:AGG (e.g. adherence_pct:avg)"
            )),
        }
    }
}

/// A filter: `FIELD=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterSpec {
    pub field: String,
    pub value: String,
}

impl FromStr for FilterSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((field, value)) if !field.trim().is_empty() => Ok(FilterSpec {
                field: field.trim().to_owned(),
                value: value.trim().to_owned(),
            }),
            _ => Err(format!("filter `{s}` is not FIELD=VALUE (e.g. team=t_1)")),
        }
    }
}

/// A checked analytics query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuerySpec {
    pub source: AnalyticsSource,
    pub metrics: Vec<MetricSpec>,
    pub dimensions: Vec<String>,
    pub filters: Vec<FilterSpec>,
    #[serde(with = "rfc3339")]
    pub from: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub to: DateTime<Utc>,
    pub bucket: Bucket,
    pub window: usize,
    pub z: f64,
    pub seasonality: Seasonality,
    /// The detector of the job's anomalies. Queries stored before it was recorded had
    /// the z-score one, and keep it, so their results (whose CSV hash the audit log
    /// holds) render as they always did.
    #[serde(default = "zscore_detector")]
    pub detector: Detector,
}

fn zscore_detector() -> Detector {
    Detector::Zscore
}

/// An instant as the platform's examples write it: UTC with `Z`, fractions only when
/// there are any.
fn wire_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::time::rfc3339(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        crate::time::parse_instant(&text).map_err(serde::de::Error::custom)
    }
}

/// A query that cannot run, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

impl SpecError {
    pub fn new(field: &'static str, message: impl Into<String>) -> SpecError {
        SpecError {
            field,
            message: message.into(),
        }
    }
}

impl QuerySpec {
    /// The trend settings of the query.
    pub fn trend(&self) -> TrendSettings {
        TrendSettings {
            window: self.window,
            z_threshold: self.z,
            seasonality: self.seasonality,
            detector: self.detector,
            bucket_ms: self.bucket.ms(),
        }
    }

    /// Checks what every source needs; the platform's own limits are checked by the
    /// platform client before anything is sent.
    pub fn check(&self) -> Result<(), SpecError> {
        if self.metrics.is_empty() {
            return Err(SpecError::new("metrics", "at least one metric is needed"));
        }
        if self.to <= self.from {
            return Err(SpecError::new(
                "to",
                format!(
                    "to ({}) must be after from ({})",
                    crate::time::rfc3339(self.to),
                    crate::time::rfc3339(self.from)
                ),
            ));
        }
        TrendSettings::checked(self.window, self.z, self.seasonality, self.bucket.ms()).map_err(
            |message| {
                let field = if message.starts_with("window") {
                    "window"
                } else {
                    "z"
                };
                SpecError::new(field, message)
            },
        )?;
        let mut seen = std::collections::HashSet::new();
        for metric in &self.metrics {
            if !seen.insert((metric.name.as_str(), metric.aggregation.as_str())) {
                return Err(SpecError::new(
                    "metrics",
                    format!("{metric} is listed twice"),
                ));
            }
        }
        if let Some(d) = self
            .dimensions
            .iter()
            .enumerate()
            .find(|(n, d)| self.dimensions[..*n].contains(d))
        {
            return Err(SpecError::new(
                "dimensions",
                format!("`{}` is listed twice", d.1),
            ));
        }
        match self.source {
            AnalyticsSource::History => self.check_history(),
            AnalyticsSource::Platform => self.platform_query().map(drop),
        }
    }

    /// The platform's aggregation query for this spec, checked against the platform's
    /// limits (nothing is sent for a query that fails them); errors name the spec's
    /// field (`metrics`, `dimensions`, `filters`, `bucket`, `from`, `to`).
    pub fn platform_query(&self) -> Result<AggregationQuery, SpecError> {
        if self.filters.len() > 1 {
            return Err(SpecError::new(
                "filters",
                format!(
                    "the platform takes one filter (FIELD=VALUE, equals), got {}",
                    self.filters.len()
                ),
            ));
        }
        let query = AggregationQuery {
            metrics: self
                .metrics
                .iter()
                .map(|m| AggMetric {
                    name: m.name.clone(),
                    aggregation: m.aggregation.clone(),
                })
                .collect(),
            dimensions: self.dimensions.clone(),
            filter: self.filters.first().map(|f| AggFilter {
                field: f.field.clone(),
                value: f.value.clone(),
            }),
            bucket_size: self.bucket.as_str().to_ascii_uppercase(),
            start: wire_time(self.from),
            // The platform's end is the last instant included; `to` is exclusive.
            end: wire_time(self.to - chrono::Duration::seconds(1)),
        };
        query.validate().map_err(|e| {
            let field = match e.field {
                "dimensions" => "dimensions",
                "filter" => "filters",
                "timeSeries.bucketSize" => "bucket",
                "timeSeries.start" => "from",
                "timeSeries.end" => "to",
                _ => "metrics",
            };
            SpecError::new(field, e.message)
        })?;
        Ok(query)
    }

    fn check_history(&self) -> Result<(), SpecError> {
        for metric in &self.metrics {
            if !HISTORY_METRICS.contains(&metric.name.as_str()) {
                return Err(SpecError::new(
                    "metrics",
                    format!(
                        "unknown history metric `{}`; expected one of: {}",
                        metric.name,
                        HISTORY_METRICS.join(", ")
                    ),
                ));
            }
            metric
                .aggregation
                .parse::<Agg>()
                .map_err(|e| SpecError::new("metrics", format!("{metric}: {e}")))?;
        }
        for dimension in &self.dimensions {
            if !HISTORY_DIMENSIONS.contains(&dimension.as_str()) {
                return Err(SpecError::new(
                    "dimensions",
                    format!(
                        "unknown history dimension `{dimension}`; expected one of: {}",
                        HISTORY_DIMENSIONS.join(", ")
                    ),
                ));
            }
        }
        for filter in &self.filters {
            if !HISTORY_FILTERS.contains(&filter.field.as_str()) {
                return Err(SpecError::new(
                    "filters",
                    format!(
                        "unknown history filter field `{}`; expected one of: {}",
                        filter.field,
                        HISTORY_FILTERS.join(", ")
                    ),
                ));
            }
            if filter.field == "state" {
                filter
                    .value
                    .parse::<AgentState>()
                    .map_err(|e| SpecError::new("filters", e.to_string()))?;
            }
        }
        let days = (self.to - self.from).num_milliseconds() as f64 / DAY_MS as f64;
        if days > HISTORY_MAX_DAYS as f64 {
            return Err(SpecError::new(
                "to",
                format!("a history query may span at most {HISTORY_MAX_DAYS} days"),
            ));
        }
        if self.bucket == Bucket::Hour && days > HISTORY_HOURLY_MAX_DAYS as f64 {
            return Err(SpecError::new(
                "bucket",
                format!(
                    "hourly history buckets may span at most {HISTORY_HOURLY_MAX_DAYS} days; use day or week"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> QuerySpec {
        QuerySpec {
            source: AnalyticsSource::History,
            metrics: vec!["adherence_pct:avg".parse().unwrap()],
            dimensions: vec!["agent".into()],
            filters: vec![],
            from: crate::time::parse_instant("2026-10-01").unwrap(),
            to: crate::time::parse_instant("2026-11-01").unwrap(),
            bucket: Bucket::Day,
            window: 7,
            z: 2.0,
            seasonality: Seasonality::None,
            detector: Detector::Robust,
        }
    }

    #[test]
    fn weeks_start_on_monday_utc() {
        // 2026-11-19 is a Thursday; its week began on Monday 2026-11-16.
        let thursday = crate::time::parse_instant("2026-11-19T15:00:00Z").unwrap();
        let monday = crate::time::parse_instant("2026-11-16").unwrap();
        assert_eq!(
            Bucket::Week.floor(thursday.timestamp_millis()),
            monday.timestamp_millis()
        );
        assert_eq!(
            Bucket::Week.floor(monday.timestamp_millis()),
            monday.timestamp_millis()
        );
    }

    #[test]
    fn every_history_error_names_its_field() {
        type Breaker = fn(&mut QuerySpec);
        let cases: [(&str, Breaker); 8] = [
            ("metrics", |s| {
                s.metrics = vec!["handle_time:avg".parse().unwrap()]
            }),
            ("metrics", |s| {
                s.metrics = vec!["idle_seconds:median".parse().unwrap()]
            }),
            ("metrics", |s| s.metrics.clear()),
            ("dimensions", |s| s.dimensions = vec!["skill".into()]),
            ("filters", |s| {
                s.filters = vec!["state=DANCING".parse().unwrap()]
            }),
            ("to", |s| s.to = s.from),
            ("window", |s| s.window = 1),
            ("bucket", |s| {
                s.bucket = Bucket::Hour;
                s.to = s.from + chrono::Duration::days(40);
            }),
        ];
        for (field, break_it) in cases {
            let mut s = spec();
            break_it(&mut s);
            assert_eq!(s.check().unwrap_err().field, field);
        }
        assert!(spec().check().is_ok());
    }

    #[test]
    fn every_platform_limit_is_refused_naming_the_spec_field() {
        type Breaker = fn(&mut QuerySpec);
        let cases: [(&str, Breaker); 5] = [
            ("metrics", |s| {
                s.metrics = (0..11)
                    .map(|n| format!("m{n}:sum").parse().unwrap())
                    .collect()
            }),
            ("dimensions", |s| {
                s.dimensions = (0..6).map(|n| format!("d{n}")).collect()
            }),
            ("filters", |s| {
                s.filters = vec!["a=1".parse().unwrap(), "b=2".parse().unwrap()]
            }),
            ("to", |s| s.to = s.from + chrono::Duration::days(366)),
            ("metrics", |s| s.metrics.clear()),
        ];
        for (field, break_it) in cases {
            let mut s = spec();
            s.source = AnalyticsSource::Platform;
            s.metrics = vec!["duration:avg".parse().unwrap()];
            s.dimensions = vec!["group.id".into()];
            break_it(&mut s);
            assert_eq!(s.check().unwrap_err().field, field, "{field}");
        }
        let mut year = spec();
        year.source = AnalyticsSource::Platform;
        year.to = year.from + chrono::Duration::days(365);
        let query = year.platform_query().unwrap();
        assert_eq!(
            (
                query.bucket_size.as_str(),
                query.start.as_str(),
                query.end.as_str()
            ),
            ("DAY", "2026-10-01T00:00:00Z", "2027-09-30T23:59:59Z")
        );
    }

    #[test]
    fn aggregations_skip_missing_values() {
        assert_eq!(Agg::Avg.apply(&[1.0, 3.0]), Some(2.0));
        assert_eq!(Agg::Min.apply(&[]), None);
        assert_eq!(Agg::Count.apply(&[]), Some(0.0));
        assert_eq!(Agg::Max.apply(&[1.0, 3.0]), Some(3.0));
    }
}
