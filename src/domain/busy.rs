//! What a change does when its agent is busy (on a contact or in after-contact work),
//! and how long a change that waits may wait: the words the API, the configuration and
//! the rules share with the engine that carries deferred changes out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a deferred change waits unless told otherwise (`[deferred] defer_for`).
pub const DEFAULT_DEFER_FOR: Duration = Duration::from_secs(15 * 60);

/// The shortest and longest wait a change may be given.
pub const MIN_DEFER_FOR: Duration = Duration::from_secs(1);
pub const MAX_DEFER_FOR: Duration = Duration::from_secs(24 * 3_600);

/// What a change does when its agent is busy (on a contact or in after-contact work).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenBusy {
    /// Refused `STATE_CONFLICT`, as the platform answers.
    #[default]
    Reject,
    /// Waits until the agent is free, for `defer_for` at most.
    Defer,
}
