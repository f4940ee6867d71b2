//! wfmd: agent-state automation for NICE CXone contact centers.

pub mod config;
pub mod cxone;
pub mod domain;
pub mod engine;
pub mod store;
