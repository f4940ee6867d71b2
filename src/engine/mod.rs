//! The daemon's work. Each part is a service the triggers (API, CLI, rules, bulk jobs)
//! call into; long-running parts have a `run(cancel)` loop.

pub mod automation;
pub mod bulk;
pub mod compliance;
mod keyed_lock;
pub mod metrics;
pub mod retention;
pub mod rules;
mod schedule_work;
pub mod schedules;
pub mod sync;
pub mod transition;

pub use keyed_lock::KeyedLock;
pub use schedule_work::ScheduleWork;

pub use transition::{
    EngineError, FailureKind, Outcome, Transition, TransitionEngine, TransitionRequest,
};
