//! Skill and queue metrics for the wallboard: the board the pollers keep current and
//! the live feed reads.
//!
//! The pollers (one per metric family) write every sample to the store and publish the
//! newest board through a `watch` channel; the live feed and `/v1/live` only read it, so
//! the number of watching clients never changes how often the platform is asked.

use std::sync::Arc;

pub use crate::domain::metrics::{FamilyHealth, MetricBoard, MetricFamily, QueueTile, SkillTile};

/// Where the pollers publish the board.
pub type BoardSender = tokio::sync::watch::Sender<Arc<MetricBoard>>;
/// What the live feed and the API read the board from.
pub type BoardReceiver = tokio::sync::watch::Receiver<Arc<MetricBoard>>;

/// A fresh, empty board channel.
pub fn board_channel() -> (BoardSender, BoardReceiver) {
    tokio::sync::watch::channel(Arc::new(MetricBoard::default()))
}
