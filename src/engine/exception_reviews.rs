//! Supervisors' reviews of adherence exceptions: excuse one (its span then counts as
//! authorised in every report, see [`crate::store::authorisations::counted`]) or
//! uphold it, with a note. A review is stored with its audit entry
//! (`adherence.exception_reviewed`, the reviewer as actor) and its
//! `adherence.exception_reviewed` event in one transaction; an exception reviewed
//! already is reviewed again only when asked to replace the review.

use chrono::{DateTime, Utc};

use crate::domain::events::{Event, ExceptionReviewed, ReviewDecision};
use crate::store::audit::{self, NewEntry};
use crate::store::exceptions::{self, Review, ReviewedRow};
use crate::store::outbox::{self, NewEvent};
use crate::store::{Store, from_ms, to_ms};
use crate::time::rfc3339;

/// The longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 1000;

/// The audit action, and the event type, of a review.
const ACTION: &str = "adherence.exception_reviewed";

/// A review asked for.
#[derive(Debug, Clone)]
pub struct ReviewRequest {
    pub exception_id: String,
    pub decision: ReviewDecision,
    pub note: Option<String>,
    /// Who reviews (the caller's token name).
    pub by: String,
    /// Whether a review the exception has already is to be replaced.
    pub replace: bool,
}

/// Why a review was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("note: a note is at most {MAX_NOTE_CHARS} characters, got {0}")]
    NoteTooLong(usize),
    #[error("no adherence exception `{0}`")]
    NotFound(String),
    /// Reviewed already, and not asked to replace the review: the review it has.
    #[error("adherence exception `{}` was {} already", .0.exception.id, .0.review_decision.as_deref().unwrap_or("reviewed"))]
    Reviewed(Box<ReviewedRow>),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Stores `request` at `now` with its audit entry and event: the exception as reviewed.
pub async fn review(
    store: &Store,
    request: ReviewRequest,
    now: DateTime<Utc>,
) -> Result<ReviewedRow, ReviewError> {
    let note = request
        .note
        .as_deref()
        .map(str::trim)
        .filter(|note| !note.is_empty());
    if let Some(note) = note {
        let chars = note.chars().count();
        if chars > MAX_NOTE_CHARS {
            return Err(ReviewError::NoteTooLong(chars));
        }
    }
    let id = request.exception_id.as_str();
    let Some(before) = exceptions::get(store.reader(), id).await? else {
        return Err(ReviewError::NotFound(id.to_owned()));
    };
    let review = Review {
        decision: request.decision.as_str(),
        note,
        by: &request.by,
        at: to_ms(now),
    };
    let mut tx = store.begin_write().await?;
    let Some(reviewed) = exceptions::review(&mut tx, id, &review, request.replace).await? else {
        tx.rollback().await?;
        // Reviewed meanwhile, or before: what it has now.
        let current = exceptions::get(store.reader(), id).await?.unwrap_or(before);
        return Err(ReviewError::Reviewed(Box::new(current)));
    };
    let replaced = before
        .review_decision
        .as_deref()
        .and_then(|decision| decision.parse().ok());
    let event = event_of(&reviewed, request.decision, replaced)?;
    let detail = serde_json::to_value(&event).expect("a review serializes");
    audit::append_all(
        &mut tx,
        &[NewEntry {
            at: now,
            actor: &request.by,
            action: ACTION,
            agent_id: Some(&reviewed.exception.agent_id),
            subject_id: Some(id),
            detail,
        }],
    )
    .await?;
    outbox::enqueue_all(
        &mut tx,
        &[NewEvent {
            agent_id: Some(&reviewed.exception.agent_id),
            at: now,
            event: Event::AdherenceExceptionReviewed(event),
        }],
    )
    .await?;
    tx.commit().await?;
    store.notify_outbox();
    metrics::counter!(crate::telemetry::names::ADHERENCE_REVIEWS_TOTAL, "decision" => request.decision.as_str())
        .increment(1);
    Ok(reviewed)
}

/// The event of `row`'s review.
fn event_of(
    row: &ReviewedRow,
    decision: ReviewDecision,
    replaced: Option<ReviewDecision>,
) -> Result<ExceptionReviewed, sqlx::Error> {
    let exception = &row.exception;
    let kind = exception
        .kind
        .parse()
        .map_err(|e: crate::domain::UnknownValue| sqlx::Error::Decode(e.to_string().into()))?;
    Ok(ExceptionReviewed {
        exception_id: exception.id.clone(),
        agent_id: exception.agent_id.clone(),
        kind,
        decision,
        note: row.review_note.clone(),
        by: row.reviewed_by.clone().unwrap_or_default(),
        reviewed_at: row
            .reviewed_at
            .map(|at| rfc3339(from_ms(at)))
            .unwrap_or_default(),
        started_at: rfc3339(from_ms(exception.started_at)),
        closed_at: exception.closed_at.map(|at| rfc3339(from_ms(at))),
        replaced,
    })
}
