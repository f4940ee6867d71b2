//! What the engine is asked and answers: requests, outcomes, errors, and what a
//! compliance check was made against.

use super::*;

/// A change someone asked for.
#[derive(Debug, Clone)]
pub struct TransitionRequest {
    pub agent_id: String,
    pub target: AgentState,
    /// The reason code to send; the target state's default when `None`.
    pub reason: Option<String>,
    pub origin: Origin,
    /// Who asked, for the audit log: `cli:alice`, `api`, `rule:care-lunch`, …
    pub actor: String,
    pub idempotency_key: Option<String>,
}

/// Why a change could not be carried out (as opposed to being refused by compliance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The platform does not know the agent.
    UnknownAgent,
    /// The platform refused the request itself (400, 403).
    PlatformRefused,
    /// The platform could not be reached or kept failing (5xx, 429, timeouts, auth).
    PlatformUnavailable,
    /// The platform refuses this API user schedule (WFM) lookups, so compliance could
    /// not be checked: schedules must be imported, or `[compliance] without_schedule`
    /// set to `allow`.
    ScheduleRefused,
}

impl FailureKind {
    pub(super) fn of(error: &CxoneError) -> FailureKind {
        match error {
            CxoneError::NotFound { .. } => FailureKind::UnknownAgent,
            CxoneError::BadRequest { .. }
            | CxoneError::Forbidden { .. }
            | CxoneError::NotOffered { .. } => FailureKind::PlatformRefused,
            _ => FailureKind::PlatformUnavailable,
        }
    }
}

/// Why a compliance check (or the change after it) could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Platform(#[from] CxoneError),
    /// The platform refused the schedule or break-status lookup (403) and
    /// `[compliance] without_schedule` is `refuse`. Retrying changes nothing; the
    /// message names what does.
    #[error(
        "the platform refuses schedule lookups for this API user ({0}); import schedules \
         with `wfmd schedules import FILE`, or set `[compliance] without_schedule = \"allow\"`"
    )]
    ScheduleRefused(CxoneError),
    /// A deferred change the platform answered, whose state read back does not show it.
    #[error(
        "the platform answered the change but its state read back shows {}",
        .shows.map_or("nothing".to_owned(), |s| s.to_string())
    )]
    Unconfirmed { shows: Option<AgentState> },
}

impl CheckError {
    pub(super) fn kind(&self) -> FailureKind {
        match self {
            CheckError::Platform(error) => FailureKind::of(error),
            CheckError::ScheduleRefused(_) => FailureKind::ScheduleRefused,
            CheckError::Unconfirmed { .. } => FailureKind::PlatformUnavailable,
        }
    }
}

/// Whether `error` is the platform refusing this API user a schedule or break-status
/// lookup (no WFM permission), as opposed to failing or not knowing the agent.
pub(super) fn refuses_schedules(error: &CxoneError) -> bool {
    matches!(error, CxoneError::Forbidden { .. })
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Rejected { violation: Violation },
    Failed { kind: FailureKind, error: String },
}

impl Outcome {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// The result of a change, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Transition {
    pub attempt_id: String,
    pub agent_id: String,
    /// The state the change left, when wfmd knew it.
    pub from: Option<AgentState>,
    pub to: AgentState,
    pub reason: String,
    pub origin: Origin,
    pub actor: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub latency_ms: u64,
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    pub requested_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    pub completed_at: DateTime<Utc>,
    /// True when an earlier attempt with the same idempotency key is being returned.
    pub replayed: bool,
}

/// A request the engine will not attempt at all, or a store failure.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0} is observed only and cannot be set")]
    NotSettable(AgentState),
    #[error(
        "idempotency key `{key}` was already used for a different change ({agent_id} to {target})"
    )]
    IdempotencyKeyReused {
        key: String,
        agent_id: String,
        target: String,
    },
    #[error("the database failed: {0}")]
    Store(#[from] sqlx::Error),
    /// The agent's last change was made, and its record waits for the database: nothing
    /// more is sent for the agent until it is written.
    #[error(
        "agent {agent_id}'s last change was made on the platform and its record waits for \
         the database ({error}); nothing more is sent for the agent until it is recorded"
    )]
    Unrecorded {
        agent_id: String,
        error: sqlx::Error,
    },
}

/// Reads when state sync's last successful poll was sent and the error since, if any.
type SyncSnapshot = dyn Fn() -> (Option<DateTime<Utc>>, Option<String>) + Send + Sync;

/// Whether an agent was in state sync's last successful poll.
type SyncSaw = dyn Fn(&str) -> bool + Send + Sync;

/// State sync as a witness of the agents' states: its last successful poll (from when it
/// was sent, so the snapshot is no older), believed for the agents it covered while the
/// sync keeps up (no failure since, and no older than two poll intervals and
/// [`ADOPT_CLOCK_SKEW`]).
#[derive(Clone)]
pub struct SyncWitness {
    snapshot: Arc<SyncSnapshot>,
    saw: Arc<SyncSaw>,
    interval: Duration,
}

impl std::fmt::Debug for SyncWitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncWitness")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl SyncWitness {
    /// The running state sync; `interval` is `sync.interval_ms`.
    pub fn new(status: Arc<SyncStatus>, interval: Duration) -> SyncWitness {
        let saw = Arc::clone(&status);
        SyncWitness {
            snapshot: Arc::new(move || status.sent_snapshot()),
            saw: Arc::new(move |agent| saw.saw(agent)),
            interval,
        }
    }

    /// A witness reading `snapshot` (when the last successful poll was sent, error
    /// since) that covers every agent: tests, and benchmarks that stand in for the sync.
    pub fn from_fn(
        snapshot: impl Fn() -> (Option<DateTime<Utc>>, Option<String>) + Send + Sync + 'static,
        interval: Duration,
    ) -> SyncWitness {
        SyncWitness {
            snapshot: Arc::new(snapshot),
            saw: Arc::new(|_| true),
            interval,
        }
    }

    /// When state sync's last poll that saw `agent` was sent, if the sync is current at
    /// `now` (an agent outside the sync's watch has no witness).
    pub fn last_poll(&self, now: DateTime<Utc>, agent: &str) -> Option<DateTime<Utc>> {
        let (last, error) = (self.snapshot)();
        let last = last.filter(|_| error.is_none())?;
        let lag = chrono::TimeDelta::from_std(self.interval * 2)
            .unwrap_or(chrono::TimeDelta::MAX)
            .checked_add(&ADOPT_CLOCK_SKEW)
            .unwrap_or(chrono::TimeDelta::MAX);
        (now - last <= lag && (self.saw)(agent)).then_some(last)
    }
}

/// A change that needed no platform call: state sync saw the agent in the target state
/// and reason at its last poll, and nothing was commanded since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchanged {
    pub agent_id: String,
    pub state: AgentState,
    pub reason: String,
    /// Since when the agent has been in that state, as recorded.
    pub since: DateTime<Utc>,
    /// The poll of state sync that last saw it so.
    pub polled_at: DateTime<Utc>,
}

/// A change asked of the engine ([`TransitionEngine::change`]): the request, and how to
/// carry it out. `Change::from(request)` asks it plainly; the builders add the rest.
#[derive(Debug, Clone)]
pub struct Change {
    pub request: TransitionRequest,
    /// Wait for a busy agent instead of refusing the change (`when_busy = "defer"`).
    pub defer: Option<Defer>,
    /// State sync as a witness (rules and bulk items): a change it saw made already
    /// needs no call.
    pub witness: Option<SyncWitness>,
    /// A change a crash may have cut short after its platform call: when it began.
    pub resuming_since: Option<DateTime<Utc>>,
}

impl From<TransitionRequest> for Change {
    fn from(request: TransitionRequest) -> Change {
        Change {
            request,
            defer: None,
            witness: None,
            resuming_since: None,
        }
    }
}

impl Change {
    /// Waits for a busy agent as `defer` says (`None`: refused `STATE_CONFLICT`).
    pub fn deferring(mut self, defer: Option<Defer>) -> Change {
        self.defer = defer;
        self
    }

    /// Settled unchanged, without a call, when `witness` saw it made already.
    pub fn witnessed_by(mut self, witness: Option<SyncWitness>) -> Change {
        self.witness = witness;
        self
    }

    /// Resumes a change begun at `since` that a crash may have cut short.
    pub fn resuming(mut self, since: DateTime<Utc>) -> Change {
        self.resuming_since = Some(since);
        self
    }
}

/// How a change ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Carried out, refused or failed: an attempt, recorded (its `outcome` says which),
    /// or an earlier one with the same idempotency key (`replayed`).
    Made(Transition),
    /// Needed no call: state sync saw it made already; audited as
    /// `transition.unchanged`.
    Unchanged(Unchanged),
    /// Waits for its busy agent.
    Deferred(Deferral),
}

impl Changed {
    /// The attempt of a change that could neither wait nor be settled unchanged (asked
    /// without `defer` and `witness`).
    pub fn made(self) -> Transition {
        match self {
            Changed::Made(transition) => transition,
            Changed::Unchanged(_) | Changed::Deferred(_) => {
                unreachable!("a change asked without defer or witness is made")
            }
        }
    }
}

/// Where a compliance decision took the agent's schedule from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleSource {
    /// True: the schedule book; false: the platform (or the engine's short cache of it).
    pub from_book: bool,
    /// How old the schedule was when it decided (zero when just asked for).
    pub age: Duration,
}

impl ScheduleSource {
    pub fn as_str(self) -> &'static str {
        if self.from_book { "book" } else { "platform" }
    }

    pub(super) const ASKED: ScheduleSource = ScheduleSource {
        from_book: false,
        age: Duration::ZERO,
    };
}

/// What a compliance decision was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleCheck {
    /// The agent's schedule decided it.
    Checked(ScheduleSource),
    /// The shift was checked against the schedule; the mandatory break was not: the
    /// platform refused the break-status lookup and `without_schedule` is `allow`.
    BreakUnchecked(ScheduleSource),
    /// Nothing was checked: the platform refused the schedule lookup and
    /// `without_schedule` is `allow`.
    Unchecked,
}

impl ScheduleCheck {
    /// Where the schedule that decided came from, if one did.
    pub fn source(self) -> Option<ScheduleSource> {
        match self {
            ScheduleCheck::Checked(source) | ScheduleCheck::BreakUnchecked(source) => Some(source),
            ScheduleCheck::Unchecked => None,
        }
    }

    /// What was not checked: `schedule` or `mandatory_break`, as recorded.
    pub fn unchecked(self) -> Option<&'static str> {
        match self {
            ScheduleCheck::Checked(_) => None,
            ScheduleCheck::BreakUnchecked(_) => Some("mandatory_break"),
            ScheduleCheck::Unchecked => Some("schedule"),
        }
    }
}

/// A compliance verdict and what it was checked against (`None`: no schedule was
/// needed).
pub(super) type Checked = (Result<(), Violation>, Option<ScheduleCheck>);

impl Transition {
    /// A stored succeeded or rejected attempt (failed ones are never replayed).
    pub(super) fn from_row(row: AttemptRow, replayed: bool) -> Transition {
        let outcome = match row.violation.as_deref() {
            Some(name) => Outcome::Rejected {
                violation: serde_json::from_value(json!(name)).unwrap_or(Violation::StateConflict),
            },
            None => Outcome::Succeeded,
        };
        Transition {
            attempt_id: row.id,
            agent_id: row.agent_id,
            from: row.from_state.and_then(|s| s.parse().ok()),
            to: row.target_state.parse().unwrap_or(AgentState::LoggedOut),
            reason: row.reason,
            origin: row.origin.parse().unwrap_or(Origin::Api),
            actor: row.actor,
            outcome,
            latency_ms: u64::try_from(row.latency_ms).unwrap_or(0),
            requested_at: from_ms(row.requested_at),
            completed_at: from_ms(row.completed_at),
            replayed,
        }
    }
}
