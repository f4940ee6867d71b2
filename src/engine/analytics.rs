//! Analytics: aggregation queries over the platform's data and over wfmd's own history,
//! with trends and anomalies, run as durable jobs.
//!
//! - [`spec`]: the query and its checks;
//! - [`history`]: wfmd's own store as a data source (daily rollups kept);

pub mod history;
pub mod spec;
