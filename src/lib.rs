//! wfmd: agent-state automation for NICE CXone contact centers.

pub mod domain;
pub mod sim;
