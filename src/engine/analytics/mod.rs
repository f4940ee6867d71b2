//! Analytics: aggregation queries over wfmd's own history (and, later, the platform's
//! data), with trends and anomalies, run as durable jobs.
//!
//! - [`spec`]: the query and its checks;
//! - [`history`]: wfmd's own store as a data source (daily rollups kept);
//! - [`render`]: results with moving average and anomalies, as CSV (canonical) or JSON.
//!
//! A job is stored when it is accepted and runs in the background: history jobs one at
//! a time, platform jobs side by side (at most `analytics.max_concurrent` queries in
//! flight on the platform; the others wait queued in [`Aggregations`]). A history job
//! recomputes from the beginning after a restart (its earlier rows are dropped first),
//! so `kill -9` at any point costs time, never correctness. A platform job stores the
//! platform's query id as soon as the query is accepted, and each page with the count
//! of rows received in one transaction: after a restart it is *resumed* (polled, then
//! paged from the rows it had) while the platform still knows the query, and
//! *resubmitted* from scratch when the platform answers 404 for it. A platform job
//! completes only when the rows received equal the platform's `total` and no series
//! misses or repeats a bucket; otherwise it fails saying so. Completion
//! is one transaction: the job's row count and the SHA-256 of its canonical CSV, one
//! audit entry holding that hash, and one `report.ready` event — written only by the
//! run that moves the job from running to completed, so each job announces itself once.

pub mod history;
pub mod render;
pub mod spec;

use crate::store::on;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cxone::aggregation::{AggregationRow, ExtractionSink, QueryStatus, Resume};
use crate::cxone::{Aggregations, CxoneError, Lane, in_lane};
use crate::domain::events::{Event, ReportReady};
use crate::engine::compliance::JudgingHandle;
use crate::store::analytics::{self as stored, AnalyticsJobRow, NewResult};
use crate::store::audit::{self, NewEntry};
use crate::store::outbox;
use crate::store::{Store, from_ms, to_ms};
use spec::{AnalyticsSource, QuerySpec, SpecError};

/// The audit action of a completed analytics job; its `detail.sha256` is the hash
/// `wfmd analytics verify` checks files against.
pub const AUDIT_COMPLETED: &str = "analytics.completed";

/// Runs analytics jobs. Cheap to clone.
#[derive(Clone)]
pub struct AnalyticsJobs {
    store: Store,
    judging: JudgingHandle,
    wake: Arc<Notify>,
    /// The platform's aggregation queries; `None` where no platform client is built
    /// (CLI reads).
    platform: Option<Aggregations>,
    /// Jobs running in this process, so none is started twice.
    active: Arc<Mutex<HashSet<String>>>,
    /// History jobs take turns: each reads much of the store.
    history_turn: Arc<tokio::sync::Mutex<()>>,
    /// `analytics.max_jobs_per_caller`: unfinished jobs one actor may have.
    max_per_actor: usize,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
// Published as `AnalyticsJob`, for the same reason as `BulkJobView`'s name.
#[schema(as = AnalyticsJob)]
pub struct AnalyticsJobView {
    pub job_id: String,
    pub source: String,
    /// queued, running, completed or failed.
    pub status: String,
    /// Result rows stored so far, and (platform jobs) the total the platform reported.
    pub received: i64,
    pub total: Option<i64>,
    /// The platform's own status of the query, while it works.
    pub platform_status: Option<String>,
    /// Once completed: result rows and the SHA-256 of the canonical CSV.
    pub rows: Option<i64>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub query: serde_json::Value,
    pub actor: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<&AnalyticsJobRow> for AnalyticsJobView {
    fn from(job: &AnalyticsJobRow) -> AnalyticsJobView {
        let time = |ms: i64| crate::time::rfc3339(from_ms(ms));
        AnalyticsJobView {
            job_id: job.id.clone(),
            source: job.source.clone(),
            status: job.status.clone(),
            received: job.received,
            total: job.total,
            platform_status: job.platform_status.clone(),
            rows: job.rows,
            sha256: job.sha256.clone(),
            error: job.error.clone(),
            query: serde_json::from_str(&job.spec).unwrap_or(serde_json::Value::Null),
            actor: job.actor.clone(),
            created_at: time(job.created_at),
            started_at: job.started_at.map(time),
            finished_at: job.finished_at.map(time),
        }
    }
}

/// Why a query was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// The platform (its dialect) has no aggregation queries.
    #[error(transparent)]
    NotOffered(CxoneError),
    /// The actor already has `limit` jobs queued or running.
    #[error(
        "`{actor}` has {limit} analytics jobs queued or running, the most \
         analytics.max_jobs_per_caller allows; submit more once one has finished"
    )]
    TooMany { actor: String, limit: usize },
    #[error("cannot store the job: {0}")]
    Store(#[from] sqlx::Error),
}

impl AnalyticsJobs {
    /// Jobs over `store`; `judging` (the tenant's adherence rules) judges adherence in
    /// history figures.
    pub fn new(store: Store, judging: JudgingHandle) -> AnalyticsJobs {
        AnalyticsJobs {
            store,
            judging,
            wake: Arc::default(),
            platform: None,
            active: Arc::default(),
            history_turn: Arc::default(),
            max_per_actor: crate::config::analytics::AnalyticsConfig::default().max_jobs_per_caller,
        }
    }

    /// At most `limit` unfinished (queued or running) jobs per actor
    /// (`analytics.max_jobs_per_caller`): each is stored and later run, so without a cap
    /// one caller could queue work without end.
    pub fn with_max_per_actor(mut self, limit: usize) -> AnalyticsJobs {
        self.max_per_actor = limit.max(1);
        self
    }

    /// Jobs with source `platform` run through `aggregations`.
    pub fn with_platform(mut self, aggregations: Aggregations) -> AnalyticsJobs {
        self.platform = Some(aggregations);
        self
    }

    /// Checks and stores a query; it runs in the background. Returns the job id.
    pub async fn submit(&self, spec: &QuerySpec, actor: &str) -> Result<String, SubmitError> {
        spec.check()?;
        if spec.source == AnalyticsSource::Platform {
            match &self.platform {
                Some(platform) => platform.offered().map_err(SubmitError::NotOffered)?,
                None => {
                    return Err(SubmitError::NotOffered(CxoneError::NotOffered {
                        feature: crate::cxone::aggregation::FEATURE,
                        dialect: "none",
                    }));
                }
            }
        }
        if spec.source == AnalyticsSource::History
            && let Err(not_kept) = history::check_kept(&self.store, spec).await?
        {
            return Err(SpecError::new("from", not_kept.to_string()).into());
        }
        let id = format!("aq_{}", uuid::Uuid::now_v7().simple());
        let text = serde_json::to_string(spec).expect("a query serializes");
        let mut tx = self.store.begin_write().await?;
        // Counted in the write transaction, so concurrent submits cannot both pass.
        let unfinished = stored::unfinished_of(&mut tx, actor).await?;
        if usize::try_from(unfinished).unwrap_or(usize::MAX) >= self.max_per_actor {
            return Err(SubmitError::TooMany {
                actor: actor.to_owned(),
                limit: self.max_per_actor,
            });
        }
        stored::insert_job(
            &mut tx,
            &id,
            spec.source.as_str(),
            &text,
            actor,
            to_ms(Utc::now()),
        )
        .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(id)
    }

    pub async fn job(&self, id: &str) -> Result<Option<AnalyticsJobRow>, sqlx::Error> {
        stored::job(self.store.reader(), id).await
    }

    pub async fn list(&self, limit: i64) -> Result<Vec<AnalyticsJobRow>, sqlx::Error> {
        stored::jobs(self.store.reader(), limit).await
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs every unfinished job (those a crash interrupted too) not already running in
    /// this process, side by side, until each finishes; returns how many were run.
    /// Tests call this as the service's step.
    pub async fn run_pending(&self) -> anyhow::Result<usize> {
        let ids = stored::unfinished(self.store.reader()).await?;
        let claims: Vec<Claim> = ids.into_iter().filter_map(|id| self.claim(id)).collect();
        let count = claims.len();
        let runs = claims.into_iter().map(|claim| self.run_claimed(claim));
        for result in futures::future::join_all(runs).await {
            result?;
        }
        Ok(count)
    }

    /// Runs jobs as they come until `cancel`; an interrupted job is resumed at the next
    /// start.
    pub async fn run(self, cancel: CancellationToken) {
        let mut running = tokio::task::JoinSet::new();
        loop {
            match stored::unfinished(self.store.reader()).await {
                Ok(ids) => {
                    for claim in ids.into_iter().filter_map(|id| self.claim(id)) {
                        let jobs = self.clone();
                        crate::tasks::spawn_in(&mut running, async move {
                            if let Err(e) = jobs.run_claimed(claim).await {
                                tracing::error!(error = %format!("{e:#}"), "an analytics job failed to run");
                            }
                        });
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot list the analytics jobs to run"),
            }
            // Finished runs are reaped without a new look at the jobs: a job whose run
            // failed on a store error waits for the minute below, not a tight loop.
            let sleep = tokio::time::sleep(Duration::from_secs(60));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = self.wake.notified() => break,
                    // A failed store write is tried again later rather than forgotten.
                    () = &mut sleep => break,
                    Some(_) = running.join_next() => {}
                    () = cancel.cancelled() => {
                        // Whatever was in flight is stored as it stood and resumed at
                        // the next start.
                        running.shutdown().await;
                        return;
                    }
                }
            }
        }
    }

    /// Marks `id` running in this process; `None` when it already is.
    fn claim(&self, id: String) -> Option<Claim> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.insert(id.clone()).then(|| Claim {
            id,
            active: self.active.clone(),
        })
    }

    async fn run_claimed(&self, claim: Claim) -> anyhow::Result<()> {
        self.run_job(&claim.id).await
    }

    #[tracing::instrument(name = "analytics.job", skip(self))]
    async fn run_job(&self, id: &str) -> anyhow::Result<()> {
        let Some(job) = self.job(id).await? else {
            return Ok(());
        };
        let spec: QuerySpec = match serde_json::from_str(&job.spec) {
            Ok(spec) => spec,
            Err(e) => {
                return self
                    .fail(id, &format!("the stored query cannot be read: {e}"))
                    .await;
            }
        };
        let outcome = match spec.source {
            AnalyticsSource::History => {
                let _turn = self.history_turn.lock().await;
                let mut tx = self.store.begin_write().await?;
                stored::mark_running(&mut tx, id, to_ms(Utc::now())).await?;
                stored::clear_results(&mut tx, id).await?;
                tx.commit().await?;
                self.run_history(id, &spec).await
            }
            AnalyticsSource::Platform => self.run_platform(&job, &spec).await,
        };
        match outcome {
            Ok(()) => self.complete(id, &spec).await,
            Err(e) => self.fail(id, &format!("{e:#}")).await,
        }
    }

    async fn run_history(&self, id: &str, spec: &QuerySpec) -> anyhow::Result<()> {
        let mut sink = JobRows {
            store: self.store.clone(),
            id: id.to_owned(),
        };
        history::run(
            &self.store,
            spec,
            Utc::now(),
            &self.judging.current(),
            history::Path::Rollups,
            &mut sink,
        )
        .await
    }

    async fn run_platform(&self, job: &AnalyticsJobRow, spec: &QuerySpec) -> anyhow::Result<()> {
        let Some(platform) = &self.platform else {
            anyhow::bail!("no platform client is configured for aggregation queries");
        };
        let query = spec.platform_query()?;
        let resume = match &job.platform_query_id {
            Some(query_id) => Some(Resume {
                query_id: query_id.clone(),
                received: u64::try_from(job.received).unwrap_or(0),
            }),
            None => {
                // Rows without a query id cannot be resumed (none should exist).
                let mut tx = self.store.begin_write().await?;
                stored::clear_results(&mut tx, &job.id).await?;
                tx.commit().await?;
                None
            }
        };
        let mut sink = PlatformRows {
            store: self.store.clone(),
            id: job.id.clone(),
            metrics: spec
                .metrics
                .iter()
                .map(|m| (m.name.clone(), m.aggregation.clone()))
                .collect(),
        };
        // A long extraction nobody waits on live: it must never hold back a person's
        // change or a rule moving agents, so it takes the background share of the
        // budget while others wait (and all of it while nobody does).
        let rows = in_lane(
            Lane::Background,
            Some(&job.id),
            platform.extract(&query, resume, &mut sink),
        )
        .await?;
        self.check_buckets(&job.id, spec).await?;
        tracing::info!(job = %job.id, rows, "platform extraction complete");
        Ok(())
    }

    /// Every series' buckets must lie in the range and follow each other without a gap
    /// (duplicates are refused as they arrive).
    async fn check_buckets(&self, id: &str, spec: &QuerySpec) -> anyhow::Result<()> {
        let mut conn = self.store.reader().acquire().await?;
        let extents = stored::series_extents(&mut conn, id).await?;
        let step = spec.bucket.ms();
        let (from, to) = (
            spec.bucket.floor(spec.from.timestamp_millis()),
            spec.to.timestamp_millis(),
        );
        for (series, count, first, last) in extents {
            if first < from || last >= to {
                anyhow::bail!(
                    "series {series}: a bucket lies outside the query's range ({} .. {})",
                    crate::time::rfc3339(from_ms(first)),
                    crate::time::rfc3339(from_ms(last))
                );
            }
            let expected = (last - first) / step + 1;
            if (last - first) % step != 0 || count != expected {
                anyhow::bail!(
                    "series {series}: {count} buckets from {} to {}, expected {expected}: \
                     a bucket is missing or misaligned",
                    crate::time::rfc3339(from_ms(first)),
                    crate::time::rfc3339(from_ms(last))
                );
            }
        }
        Ok(())
    }

    async fn complete(&self, id: &str, spec: &QuerySpec) -> anyhow::Result<()> {
        let mut hash = render::HashSink::default();
        let csv = render::CsvFormat::CURRENT;
        let rows = render::write(
            &self.store,
            id,
            spec,
            render::AnalyticsFormat::Csv(csv),
            None,
            &render::SeriesNames::default(),
            &mut hash,
        )
        .await?;
        let sha256 = hash.hex();
        let now = Utc::now();
        let mut tx = self.store.begin_write().await?;
        if !stored::complete(&mut tx, id, rows as i64, &sha256, csv.version(), to_ms(now)).await? {
            return Ok(());
        }
        let job = stored::job_on(&mut tx, id)
            .await?
            .expect("the job was just updated");
        audit::append(
            &mut tx,
            &NewEntry {
                at: now,
                actor: &job.actor,
                action: AUDIT_COMPLETED,
                agent_id: None,
                subject_id: Some(id),
                detail: json!({"job_id": id, "rows": rows, "sha256": sha256,
                               "source": job.source, "query": spec}),
            },
        )
        .await?;
        let ready = ReportReady {
            job_id: id.to_owned(),
            rows,
            sha256: sha256.clone(),
        };
        outbox::enqueue(&mut tx, None, now, Event::ReportReady(ready)).await?;
        tx.commit().await?;
        self.store.notify_outbox();
        tracing::info!(job = %id, rows, %sha256, "analytics job completed");
        Ok(())
    }

    async fn fail(&self, id: &str, error: &str) -> anyhow::Result<()> {
        let mut tx = self.store.begin_write().await?;
        stored::fail(&mut tx, id, error, to_ms(Utc::now())).await?;
        tx.commit().await?;
        tracing::warn!(job = %id, %error, "analytics job failed");
        Ok(())
    }
}

/// Stores a job's rows as they come, one transaction per bucket.
struct JobRows {
    store: Store,
    id: String,
}

impl history::RowSink for JobRows {
    async fn rows(&mut self, rows: Vec<history::Row>) -> anyhow::Result<()> {
        let page: Vec<NewResult> = rows
            .into_iter()
            .map(|row| NewResult {
                series: serde_json::to_string(&row.series).expect("series serialize"),
                bucket: row.bucket,
                vals: serde_json::to_string(&row.values).expect("values serialize"),
            })
            .collect();
        let mut tx = self.store.begin_write().await?;
        if let Some(d) = stored::store_page(&mut tx, &self.id, &page).await? {
            anyhow::bail!("bucket {} of series {} came twice", d.bucket, d.series);
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A job id marked running in this process until dropped.
struct Claim {
    id: String,
    active: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Stores a platform job's progress: each step in its own transaction, so a restart
/// knows the query id and exactly which rows are stored.
struct PlatformRows {
    store: Store,
    id: String,
    /// The query's (metric, aggregation) pairs, in the order values are stored.
    metrics: Vec<(String, String)>,
}

impl ExtractionSink for PlatformRows {
    async fn started(&mut self) -> anyhow::Result<()> {
        let mut tx = self.store.begin_write().await?;
        stored::mark_running(&mut tx, &self.id, to_ms(Utc::now())).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn submitted(&mut self, query_id: &str) -> anyhow::Result<()> {
        let mut tx = self.store.begin_write().await?;
        stored::set_platform_query(&mut tx, &self.id, Some(query_id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn progress(&mut self, status: QueryStatus, total: Option<u64>) -> anyhow::Result<()> {
        let mut tx = self.store.begin_write().await?;
        stored::set_platform_status(
            &mut tx,
            &self.id,
            status.as_str(),
            total.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn page(&mut self, offset: u64, rows: Vec<AggregationRow>) -> anyhow::Result<()> {
        let page: Vec<NewResult> = rows
            .into_iter()
            .map(|row| {
                let values: Vec<Option<f64>> = self
                    .metrics
                    .iter()
                    .map(|(name, aggregation)| {
                        row.metrics
                            .iter()
                            .find(|m| {
                                m.name == *name && m.aggregation.eq_ignore_ascii_case(aggregation)
                            })
                            .and_then(|m| m.value)
                    })
                    .collect();
                NewResult {
                    series: serde_json::to_string(&row.dimensions).expect("series serialize"),
                    bucket: row.bucket.timestamp_millis(),
                    vals: serde_json::to_string(&values).expect("values serialize"),
                }
            })
            .collect();
        let mut tx = self.store.begin_write().await?;
        if let Some(d) = stored::store_page(&mut tx, &self.id, &page).await? {
            anyhow::bail!(
                "the platform sent bucket {} of series {} twice (page at offset {offset})",
                crate::time::rfc3339(from_ms(d.bucket)),
                d.series
            );
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The SHA-256 the audit log holds for job `id`'s results, if it completed.
pub async fn audited_sha256(store: &Store, id: &str) -> anyhow::Result<Option<String>> {
    let detail: Option<String> = on!(store.reader(), |c| {
        sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = $1 AND subject_id = $2 ORDER BY seq LIMIT 1",
    )
    .bind(AUDIT_COMPLETED)
    .bind(id)
    .fetch_optional(c)
    .await
    })?;
    Ok(match detail {
        Some(text) => serde_json::from_str::<serde_json::Value>(&text)?["sha256"]
            .as_str()
            .map(str::to_owned),
        None => None,
    })
}

/// Whether `file` (a downloaded CSV of job `id`'s results) is exactly what the audit
/// log vouches for: `Ok(true)` when its SHA-256 matches.
pub async fn verify_file(store: &Store, id: &str, file: &[u8]) -> anyhow::Result<bool> {
    let Some(expected) = audited_sha256(store, id).await? else {
        anyhow::bail!(
            "job {id} has no completion entry in the audit log (unknown or not completed)"
        );
    };
    Ok(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(file)) == expected)
}
