//! A finished job's results, rendered: every series' values with their moving average,
//! direction, z-score and anomaly, as CSV (the canonical form whose SHA-256 the audit
//! log keeps) or JSON.
//!
//! Result rows are read by series, then bucket, and one series at a time is analysed
//! and written, so memory holds one series, never the whole result.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::spec::QuerySpec;
use crate::domain::trend::{self, Point};
use crate::report::Sink;
use crate::store::analytics as stored;
use crate::store::{Store, from_ms};

/// Bytes gathered before they go to the sink.
const CHUNK: usize = 64 * 1024;

/// One series' stored buckets: start (ms) and the values of each metric.
type Buckets = Vec<(i64, Vec<Option<f64>>)>;

/// The output formats of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// A sink that only hashes: the canonical SHA-256 of a result set.
#[derive(Default)]
pub struct HashSink {
    pub hasher: Sha256,
    pub bytes: u64,
}

impl Sink for HashSink {
    async fn send(&mut self, chunk: Vec<u8>) -> std::io::Result<()> {
        self.bytes += chunk.len() as u64;
        self.hasher.update(&chunk);
        Ok(())
    }
}

impl HashSink {
    pub fn hex(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

fn number(value: Option<f64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// CSV field quoting: only when the value needs it.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Writes the results of job `id` (queried with `spec`) to `sink`. Returns the number of
/// value rows written.
pub async fn write(
    store: &Store,
    id: &str,
    spec: &QuerySpec,
    format: Format,
    sink: &mut impl Sink,
) -> anyhow::Result<u64> {
    let mut out: Vec<u8> = Vec::with_capacity(CHUNK + 4096);
    let settings = spec.trend();
    let metrics: Vec<String> = spec.metrics.iter().map(ToString::to_string).collect();
    match format {
        Format::Csv => {
            let mut header = vec!["bucket".to_owned()];
            header.extend(spec.dimensions.iter().map(|d| field(d)));
            header.extend(
                [
                    "metric",
                    "value",
                    "moving_average",
                    "direction",
                    "z_score",
                    "anomaly",
                ]
                .map(str::to_owned),
            );
            out.extend(header.join(",").as_bytes());
            out.extend(b"\n");
        }
        Format::Json => {
            out.extend(
                format!(
                    "{{\"job_id\":{},\"query\":{},\"series\":[",
                    json!(id),
                    serde_json::to_string(spec)?
                )
                .as_bytes(),
            );
        }
    }
    let mut rows = stored::results(store.reader(), id);
    let mut written = 0u64;
    let mut first_series = true;
    let mut current: Option<(String, Buckets)> = None;
    loop {
        let row = rows.try_next().await?;
        let same = matches!((&current, &row), (Some((s, _)), Some(r)) if *s == r.series);
        if !same && let Some((series, buckets)) = current.take() {
            let dims: BTreeMap<String, String> = serde_json::from_str(&series)?;
            for (m, metric) in metrics.iter().enumerate() {
                let points: Vec<Point> = buckets
                    .iter()
                    .map(|(bucket, values)| Point {
                        at: from_ms(*bucket),
                        value: values.get(m).copied().flatten().unwrap_or(f64::NAN),
                    })
                    .collect();
                let analysis = trend::analyse(&points, &settings);
                match format {
                    Format::Csv => {
                        let dim_fields: Vec<String> = spec
                            .dimensions
                            .iter()
                            .map(|d| field(dims.get(d).map_or("", String::as_str)))
                            .collect();
                        for (point, figures) in points.iter().zip(&analysis.points) {
                            let mut line = vec![crate::time::rfc3339(point.at)];
                            line.extend(dim_fields.iter().cloned());
                            line.push(field(metric));
                            line.push(number(point.value.is_finite().then_some(point.value)));
                            line.push(number(figures.moving_average));
                            line.push(
                                figures
                                    .direction
                                    .map(|d| d.as_str())
                                    .unwrap_or("")
                                    .to_owned(),
                            );
                            line.push(number(figures.z_score));
                            line.push(figures.anomaly.map(|a| a.as_str()).unwrap_or("").to_owned());
                            out.extend(line.join(",").as_bytes());
                            out.extend(b"\n");
                            written += 1;
                        }
                    }
                    Format::Json => {
                        let points_json: Vec<_> = points
                            .iter()
                            .zip(&analysis.points)
                            .map(|(p, f)| {
                                json!({
                                    "bucket": crate::time::rfc3339(p.at),
                                    "value": p.value.is_finite().then_some(p.value),
                                    "moving_average": f.moving_average,
                                    "direction": f.direction.map(|d| d.as_str()),
                                    "z_score": f.z_score,
                                    "anomaly": f.anomaly.map(|a| a.as_str()),
                                })
                            })
                            .collect();
                        let anomalies: Vec<_> = points
                            .iter()
                            .zip(&analysis.points)
                            .filter_map(|(p, f)| {
                                f.anomaly.map(|kind| {
                                    json!({
                                        "bucket": crate::time::rfc3339(p.at),
                                        "value": p.value,
                                        "z_score": f.z_score,
                                        "kind": kind.as_str(),
                                    })
                                })
                            })
                            .collect();
                        if !first_series {
                            out.push(b',');
                        }
                        first_series = false;
                        written += points.len() as u64;
                        out.extend(
                            json!({
                                "dimensions": dims,
                                "metric": metric,
                                "direction": analysis.direction.map(|d| d.as_str()),
                                "points": points_json,
                                "anomalies": anomalies,
                            })
                            .to_string()
                            .as_bytes(),
                        );
                    }
                }
                if out.len() >= CHUNK {
                    sink.send(std::mem::replace(
                        &mut out,
                        Vec::with_capacity(CHUNK + 4096),
                    ))
                    .await?;
                }
            }
        }
        let Some(row) = row else { break };
        let values: Vec<Option<f64>> = serde_json::from_str(&row.vals)?;
        match &mut current {
            Some((_, buckets)) => buckets.push((row.bucket, values)),
            None => current = Some((row.series, vec![(row.bucket, values)])),
        }
    }
    if format == Format::Json {
        out.extend(b"]}\n");
    }
    if !out.is_empty() {
        sink.send(out).await?;
    }
    Ok(written)
}
