//! The daemon's vocabulary and pure rules: agent states, compliance, idle time, adherence.
//!
//! Nothing here performs I/O, awaits, or reads the clock: every function takes the
//! instant it reasons about. That keeps the rules unit- and property-testable, and keeps
//! `domain` at the bottom of the dependency arrows (it imports nothing of ours).

pub mod adherence;
pub mod adherence_rules;
pub mod busy;
pub mod cron;
pub mod deviation;
pub mod events;
pub mod idle;
pub mod metrics;
pub mod policy;
pub mod rule;
pub mod state;
pub mod tenant;
pub mod trend;

pub use policy::{BreakStatus, BreakWindow, Schedule, ScheduleStatus, TitledSpan, Violation};
pub use state::{AgentState, Origin, UnknownValue};
