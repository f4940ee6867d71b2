//! Analytics: aggregation queries over wfmd's own history (and, later, the platform's
//! data), with trends and anomalies, run as durable jobs.
//!
//! - [`spec`]: the query and its checks;
//! - [`history`]: wfmd's own store as a data source (daily rollups kept);
//! - [`render`]: results with moving average and anomalies, as CSV (canonical) or JSON.
//!
//! A job is stored when it is accepted and runs in the background, one at a time. A
//! history job recomputes from the beginning after a restart (its earlier rows are
//! dropped first), so `kill -9` at any point costs time, never correctness. Completion
//! is one transaction: the job's row count and the SHA-256 of its canonical CSV, one
//! audit entry holding that hash, and one `report.ready` event — written only by the
//! run that moves the job from running to completed, so each job announces itself once.

pub mod history;
pub mod render;
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::analytics::{self as stored, JobRow, NewResult};
use crate::store::audit::{self, NewEntry};
use crate::store::outbox::{self, EventType};
use crate::store::{Store, from_ms, to_ms};
use spec::{QuerySpec, Source, SpecError};

/// The audit action of a completed analytics job; its `detail.sha256` is the hash
/// `wfmd analytics verify` checks files against.
pub const AUDIT_COMPLETED: &str = "analytics.completed";

/// Runs analytics jobs. Cheap to clone.
#[derive(Clone)]
pub struct AnalyticsJobs {
    store: Store,
    threshold: TimeDelta,
    wake: Arc<Notify>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
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

impl From<&JobRow> for JobView {
    fn from(job: &JobRow) -> JobView {
        let time = |ms: i64| crate::time::rfc3339(from_ms(ms));
        JobView {
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
    #[error("cannot store the job: {0}")]
    Store(#[from] sqlx::Error),
}

impl AnalyticsJobs {
    /// Jobs over `store`; deviations longer than `exception_threshold` count as
    /// adherence exceptions in history figures.
    pub fn new(store: Store, exception_threshold: Duration) -> AnalyticsJobs {
        AnalyticsJobs {
            store,
            threshold: TimeDelta::from_std(exception_threshold).unwrap_or(TimeDelta::MAX),
            wake: Arc::default(),
        }
    }

    /// Checks and stores a query; it runs in the background. Returns the job id.
    pub async fn submit(&self, spec: &QuerySpec, actor: &str) -> Result<String, SubmitError> {
        spec.check()?;
        if spec.source == Source::Platform {
            return Err(SpecError::new(
                "source",
                "platform aggregation queries are not available in this build yet; use history",
            )
            .into());
        }
        let id = format!("aq_{}", uuid::Uuid::now_v7().simple());
        let text = serde_json::to_string(spec).expect("a query serializes");
        let mut tx = self.store.begin_write().await?;
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

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
        stored::job(self.store.reader(), id).await
    }

    pub async fn list(&self, limit: i64) -> Result<Vec<JobRow>, sqlx::Error> {
        stored::jobs(self.store.reader(), limit).await
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs every unfinished job (those a crash interrupted too), oldest first; returns
    /// how many were run. Tests call this as the service's step.
    pub async fn run_pending(&self) -> anyhow::Result<usize> {
        let ids = stored::unfinished(self.store.reader()).await?;
        for id in &ids {
            self.run_job(id).await?;
        }
        Ok(ids.len())
    }

    /// Runs jobs as they come until `cancel`; an interrupted job is resumed at the next
    /// start.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let ran = tokio::select! {
                ran = self.run_pending() => ran,
                () = cancel.cancelled() => return,
            };
            if let Err(e) = ran {
                tracing::error!(error = %format!("{e:#}"), "analytics jobs failed to run");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                // A failed store write is tried again later rather than forgotten.
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
                () = cancel.cancelled() => return,
            }
        }
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
        {
            let mut tx = self.store.begin_write().await?;
            stored::mark_running(&mut tx, id, to_ms(Utc::now())).await?;
            stored::clear_results(&mut tx, id).await?;
            tx.commit().await?;
        }
        let outcome = match spec.source {
            Source::History => self.run_history(id, &spec).await,
            Source::Platform => Err(anyhow::anyhow!(
                "platform aggregation queries are not available in this build"
            )),
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
            self.threshold,
            history::Path::Rollups,
            &mut sink,
        )
        .await
    }

    async fn complete(&self, id: &str, spec: &QuerySpec) -> anyhow::Result<()> {
        let mut hash = render::HashSink::default();
        let rows = render::write(&self.store, id, spec, render::Format::Csv, &mut hash).await?;
        let sha256 = hash.hex();
        let now = Utc::now();
        let mut tx = self.store.begin_write().await?;
        if !stored::complete(&mut tx, id, rows as i64, &sha256, to_ms(now)).await? {
            return Ok(());
        }
        let job = stored::job_on(&mut tx, id)
            .await?
            .expect("the job was just updated");
        let data = json!({"job_id": id, "rows": rows, "sha256": sha256});
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
        outbox::enqueue(&mut tx, EventType::ReportReady, None, now, data).await?;
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

/// The SHA-256 the audit log holds for job `id`'s results, if it completed.
pub async fn audited_sha256(store: &Store, id: &str) -> anyhow::Result<Option<String>> {
    let detail: Option<String> = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = ?1 AND subject_id = ?2 ORDER BY seq LIMIT 1",
    )
    .bind(AUDIT_COMPLETED)
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
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
