//! wfmd: agent-state automation for NICE CXone contact centers.

pub mod cxone;
pub mod domain;
