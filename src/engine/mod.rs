//! The daemon's work. Each part is a service the triggers (API, CLI, rules, bulk jobs)
//! call into; long-running parts have a `run(cancel)` loop.

pub mod adherence_now;
pub mod adherence_summary;
pub mod analytics;
pub mod authorisations;
pub mod automation;
pub mod bulk;
pub mod clock;
pub mod compliance;
pub mod deferred;
pub mod exception_reviews;
pub mod imported_schedules;
pub mod jobs;
mod keyed_lock;
pub mod lookups;
pub mod metrics;
pub mod retention;
pub mod rules;
pub mod schedules;
pub mod sync;
pub mod transition;

pub use clock::Clock;
pub use keyed_lock::KeyedLock;

pub use transition::{
    Change, Changed, CheckError, EngineError, FailureKind, Outcome, ScheduleCheck, SyncWitness,
    Transition, TransitionEngine, TransitionRequest, Unchanged,
};
